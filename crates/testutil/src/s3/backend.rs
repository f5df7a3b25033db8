//! The S3 operations: `s3s_fs::FileSystem` plus fixes 2–4 of the module docs.
//!
//! [`Backend`] delegates every operation `s3s-fs` implements and overrides
//! six of them:
//!
//! - `get_object`: the body is read from the file in 256 KiB `pread`s with
//!   one read ahead, instead of s3s-fs's 4 KiB `ReaderStream`;
//! - `put_object`: serialised per key, and the body digests are verified
//!   while the body streams into s3s-fs's temporary file, so that a bad
//!   digest aborts the write before the rename;
//! - `complete_multipart_upload`: serialised per key, and stale checksums
//!   of an earlier object under the key are dropped;
//! - `copy_object`: serialised per destination key;
//! - `upload_part`: the same digest verification as `put_object`, and a part
//!   that lands after its upload was aborted is removed (`NoSuchUpload`);
//! - `abort_multipart_upload`: serialised per key with the end of each
//!   `upload_part`;
//!
//! and adds `list_multipart_uploads`, which s3s-fs answers with `501`.
//! UploadPart, ListParts, AbortMultipartUpload and CompleteMultipartUpload of
//! an upload that does not exist (any more) get `404 NoSuchUpload`, as from
//! S3, instead of s3s-fs's `403 AccessDenied` or, for ListParts, the part
//! files that happen to be on disk.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, Checksum, ChecksumAlgorithm,
    CompleteMultipartUploadInput, CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput,
    CreateBucketInput, CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput,
    DeleteBucketInput, DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput,
    DeleteObjectsInput, DeleteObjectsOutput, GetBucketLocationInput, GetBucketLocationOutput,
    GetObjectInput, GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput,
    HeadObjectOutput, ListBucketsInput, ListBucketsOutput, ListMultipartUploadsInput,
    ListMultipartUploadsOutput, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input,
    ListObjectsV2Output, ListPartsInput, ListPartsOutput, MultipartUpload, PutObjectInput,
    PutObjectOutput, Range as ByteRange, StreamingBlob, UploadPartCopyInput, UploadPartCopyOutput,
    UploadPartInput, UploadPartOutput,
};
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{S3, S3Error, S3Request, S3Response, S3Result, StdError, TrailingHeaders, s3_error};
use tokio::sync::OwnedMutexGuard;
use tokio::task::JoinHandle;

/// Size of one read of a GET body from the object file.
const GET_CHUNK_SIZE: usize = 256 * 1024;

/// Number of GET body reads kept in flight ahead of the socket.
const GET_READ_AHEAD: usize = 2;

/// Names this module's temporary files apart from each other and from
/// s3s-fs's (which are numbered from 0 per `FileSystem`).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `s3s_fs::FileSystem` with per-key write serialisation, verify-before-rename
/// uploads and large-read GET bodies.
#[derive(Debug)]
pub(crate) struct Backend {
    fs: Arc<s3s_fs::FileSystem>,
    /// The same absolute, canonical root that `fs` resolves keys under.
    root: PathBuf,
    locks: Arc<KeyLocks>,
}

impl Backend {
    /// Serves the S3 data under `root`, which must exist.
    pub(crate) fn new(root: &Path) -> io::Result<Self> {
        let root = root.canonicalize()?;
        let fs = s3s_fs::FileSystem::new(&root)
            .map_err(|e| io::Error::other(format!("open s3s-fs root {}: {e:?}", root.display())))?;
        Ok(Self {
            fs: Arc::new(fs),
            root,
            locks: Arc::default(),
        })
    }

    /// Whether s3s-fs still tracks the multipart upload `upload_id` (its
    /// `<root>/.upload-<uuid>.json`, which complete and abort remove); `None`
    /// when `upload_id` is not a UUID as s3s-fs hands them out, which is left
    /// for s3s-fs to judge.
    async fn upload_exists(&self, upload_id: &str) -> Option<bool> {
        let path = upload_info_path(&self.root, upload_id)?;
        Some(tokio::fs::try_exists(path).await.unwrap_or(true))
    }

    /// Fails with `NoSuchUpload` when the upload `upload_id` does not exist.
    async fn require_upload(&self, upload_id: &str) -> S3Result<()> {
        if self.upload_exists(upload_id).await == Some(false) {
            return Err(no_such_upload());
        }
        Ok(())
    }

    /// The file s3s-fs stores `bucket`/`key` in, when the key maps to a plain
    /// relative path (`<root>/<bucket>/<key>`).
    ///
    /// Returns `None` for keys that s3s-fs resolves in other ways (a leading
    /// `/`, `..`); callers then fall back to s3s-fs's own behaviour.
    fn object_path(&self, bucket: &str, key: &str) -> Option<PathBuf> {
        let mut path = self.root.clone();
        for component in Path::new(bucket).join(key).components() {
            match component {
                Component::Normal(part) => path.push(part),
                Component::CurDir
                | Component::ParentDir
                | Component::RootDir
                | Component::Prefix(_) => {
                    return None;
                }
            }
        }
        Some(path)
    }

    /// Whether `path` exists; `true` when that cannot be determined.
    /// s3s-fs writes an object into a bucket that does not exist by creating its directory;
    /// S3 answers `NoSuchBucket`, and so does this.
    async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        let is_bucket = s3s::path::check_bucket_name(bucket)
            && tokio::fs::metadata(self.root.join(bucket))
                .await
                .is_ok_and(|m| m.is_dir());
        if is_bucket {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }

    async fn exists(path: Option<&Path>) -> bool {
        match path {
            Some(path) => tokio::fs::try_exists(path).await.unwrap_or(true),
            None => true,
        }
    }

    /// Drops the `checksum_*` entries from s3s-fs's internal info of
    /// `bucket`/`key` after a CompleteMultipartUpload.
    ///
    /// s3s-fs 0.14.1 completes an upload by updating the ETag in whatever
    /// internal info the key had, so the checksums of an earlier object under
    /// that key (even a deleted one) survive, and aws-sdk-s3 then fails every
    /// GET of the new object with `ChecksumMismatch`. S3 reports no
    /// full-object checksum for a multipart object either.
    ///
    /// The file is `<root>/.bucket-<b64url(bucket)>.object-<b64url(key)>.internal.json`,
    /// a JSON object; s3s-fs writes it only in PUT, CompleteMultipartUpload and
    /// CopyObject, which the caller's key lock excludes.
    async fn forget_stale_checksums(&self, bucket: &str, key: &str) -> io::Result<()> {
        let encode = |s: &str| base64_simd::URL_SAFE_NO_PAD.encode_to_string(s);
        let name = format!(
            ".bucket-{}.object-{}.internal.json",
            encode(bucket),
            encode(key)
        );
        let path = self.root.join(name);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut info: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)?;
        let before = info.len();
        info.retain(|name, _| !name.starts_with("checksum_"));
        if info.len() == before {
            return Ok(());
        }
        // s3s-fs removes `.tmp.*.internal.part` files left by a crash at start.
        let tmp = self.root.join(format!(
            ".tmp.walferry-{}.internal.part",
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::write(&tmp, serde_json::to_vec(&info)?).await?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        Ok(())
    }

    /// `(key, upload id, initiated)` of every upload to `bucket` under `prefix` that s3s-fs
    /// still tracks.
    ///
    /// s3s-fs 0.14.1 keeps an upload as `<root>/.upload-<uuid>.json` (removed by complete and
    /// abort) and its object attributes as
    /// `<root>/.bucket-<b64url(bucket)>.object-<b64url(key)>.upload-<uuid>.metadata.json`.
    async fn pending_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> io::Result<Vec<(String, String, Option<std::time::SystemTime>)>> {
        let head = format!(
            ".bucket-{}.object-",
            base64_simd::URL_SAFE_NO_PAD.encode_to_string(bucket)
        );
        let mut found = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.root).await?;
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name();
            let Some(rest) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&head))
                .and_then(|n| n.strip_suffix(".metadata.json"))
            else {
                continue;
            };
            let Some((encoded_key, upload_id)) = rest.split_once(".upload-") else {
                continue;
            };
            let Some(key) = base64_simd::URL_SAFE_NO_PAD
                .decode_to_vec(encoded_key)
                .ok()
                .and_then(|k| String::from_utf8(k).ok())
            else {
                continue;
            };
            if !key.starts_with(prefix) {
                continue;
            }
            let info = self.root.join(format!(".upload-{upload_id}.json"));
            let Ok(meta) = tokio::fs::metadata(&info).await else {
                continue;
            };
            found.push((key, upload_id.to_owned(), meta.modified().ok()));
        }
        Ok(found)
    }

    /// Removes the regular file at `path`, if any: the remains of a failed
    /// write to a key that did not exist before it.
    async fn remove_leftover(path: &Path) {
        let is_file = tokio::fs::symlink_metadata(path)
            .await
            .is_ok_and(|m| m.is_file());
        if !is_file {
            return;
        }
        match tokio::fs::remove_file(path).await {
            Ok(()) => {
                tracing::warn!(path = %path.display(), "removed object left behind by a failed put");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot remove object left behind by a failed put");
            }
        }
    }
}

#[async_trait::async_trait]
impl S3 for Backend {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.fs.delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    /// Fix 3 (create-only puts are atomic) and fix 4 (a bad digest leaves
    /// nothing behind).
    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        let _guard = self.locks.lock(&req.input.bucket, &req.input.key).await;
        let path = self.object_path(&req.input.bucket, &req.input.key);
        let existed = Self::exists(path.as_deref()).await;

        let outcome = DigestOutcome::default();
        if let Some(body) = req.input.body.take() {
            let input = &req.input;
            let check = DigestCheck::new(
                input.content_md5.as_deref(),
                input.checksum_algorithm.as_ref(),
                &declared_checksums(
                    &input.checksum_crc32,
                    &input.checksum_crc32c,
                    &input.checksum_sha1,
                    &input.checksum_sha256,
                    &input.checksum_crc64nvme,
                ),
                &req.headers,
                req.trailing_headers.clone(),
            )?;
            req.input.body = Some(StreamingBlob::new(Verified::new(
                body,
                check,
                outcome.clone(),
            )));
        }

        match self.fs.put_object(req).await {
            Ok(resp) => Ok(resp),
            Err(err) => {
                if !existed && let Some(path) = &path {
                    Self::remove_leftover(path).await;
                }
                Err(outcome.take().unwrap_or(err))
            }
        }
    }

    /// Fix 2: the body is streamed in large reads.
    async fn get_object(
        &self,
        mut req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        let Some(path) = self.object_path(&req.input.bucket, &req.input.key) else {
            return self.fs.get_object(req).await;
        };

        // Open the file before s3s-fs does and check afterwards that the key
        // still names the same inode. s3s-fs only ever replaces an object by
        // renaming a new file over it, so an unchanged inode means s3s-fs
        // served headers (length, ETag, checksums) for the file we hold.
        let pinned = PinnedFile::open(path.clone()).await;

        // s3s-fs seeks `length` bytes back from the end for `bytes=-length`,
        // which fails (500) when the object is shorter; S3 serves it whole.
        if let (Some(pinned), Some(ByteRange::Suffix { length })) = (&pinned, req.input.range)
            && length > pinned.len
        {
            req.input.range = Some(ByteRange::Int {
                first: 0,
                last: None,
            });
        }
        let range = req.input.range;

        let mut resp = self.fs.get_object(req).await?;
        let Some(pinned) = pinned else {
            return Ok(resp);
        };
        if !pinned.still_at(path).await {
            return Ok(resp);
        }
        let file_range = match range {
            None => 0..pinned.len,
            Some(range) => range.check(pinned.len)?,
        };
        let expected_len = i64::try_from(file_range.end - file_range.start).ok();
        if resp.output.content_length != expected_len {
            return Ok(resp);
        }
        resp.output.body = Some(StreamingBlob::new(FileChunks::new(pinned.file, file_range)));
        Ok(resp)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        self.fs.head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    /// Serialised with puts to the destination key.
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let _guard = self.locks.lock(&req.input.bucket, &req.input.key).await;
        self.fs.copy_object(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.require_bucket(&req.input.bucket).await?;
        self.fs.list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        self.fs.create_multipart_upload(req).await
    }

    /// Parts are verified like single puts; s3s-fs checks no part digest.
    async fn upload_part(
        &self,
        mut req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let outcome = DigestOutcome::default();
        if let Some(body) = req.input.body.take() {
            let input = &req.input;
            let check = DigestCheck::new(
                input.content_md5.as_deref(),
                input.checksum_algorithm.as_ref(),
                &declared_checksums(
                    &input.checksum_crc32,
                    &input.checksum_crc32c,
                    &input.checksum_sha1,
                    &input.checksum_sha256,
                    &input.checksum_crc64nvme,
                ),
                &req.headers,
                req.trailing_headers.clone(),
            )?;
            req.input.body = Some(StreamingBlob::new(Verified::new(
                body,
                check,
                outcome.clone(),
            )));
        }
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let upload_id = req.input.upload_id.clone();
        let part_path = upload_info_path(&self.root, &upload_id).map(|_| {
            self.root.join(format!(
                ".upload_id-{upload_id}.part-{}",
                req.input.part_number
            ))
        });
        self.require_upload(&upload_id).await?;
        // s3s-fs renames the part into place at its end, on the blocking pool:
        // were this handler dropped there (the client went away), the rename
        // would still happen, unchecked. So the part is received, renamed and
        // checked in a task of its own.
        let fs = Arc::clone(&self.fs);
        let locks = Arc::clone(&self.locks);
        let root = self.root.clone();
        let task = tokio::spawn(async move {
            let upload_gone = || async {
                match upload_info_path(&root, &upload_id) {
                    Some(info) => !tokio::fs::try_exists(info).await.unwrap_or(true),
                    None => false,
                }
            };
            let resp = match fs.upload_part(req).await {
                Ok(resp) => resp,
                // s3s-fs's own check found the upload aborted after ours.
                Err(_) if upload_gone().await => return Err(no_such_upload()),
                Err(err) => return Err(outcome.take().unwrap_or(err)),
            };
            // An abort that ran while the part was being received did not see
            // it; the abort holds the key's lock, so after taking it the
            // upload's existence is settled.
            let _guard = locks.lock(&bucket, &key).await;
            if upload_gone().await {
                if let Some(part) = &part_path
                    && let Err(e) = tokio::fs::remove_file(part).await
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::error!(path = %part.display(), error = %e, "cannot remove a part that landed after its upload was aborted");
                }
                return Err(no_such_upload());
            }
            Ok(resp)
        });
        task.await
            .map_err(|e| s3_error!(InternalError, "upload part task failed: {e}"))?
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.fs.upload_part_copy(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.require_upload(&req.input.upload_id).await?;
        self.fs.list_parts(req).await
    }

    /// Fix 3 for multipart uploads: `If-None-Match: *` is atomic.
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let _guard = self.locks.lock(&req.input.bucket, &req.input.key).await;
        self.require_upload(&req.input.upload_id).await?;
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let resp = self.fs.complete_multipart_upload(req).await?;
        if let Err(e) = self.forget_stale_checksums(&bucket, &key).await {
            tracing::error!(%bucket, %key, error = %e, "cannot drop stale checksums of a completed multipart upload");
        }
        Ok(resp)
    }

    /// Serialised with the check at the end of `upload_part`, so that a part
    /// landing during the abort is removed by one or the other.
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let _guard = self.locks.lock(&req.input.bucket, &req.input.key).await;
        self.require_upload(&req.input.upload_id).await?;
        self.fs.abort_multipart_upload(req).await
    }

    /// The uploads begun and neither completed nor aborted, read from s3s-fs's files, all in
    /// one page, sorted by key and upload id; `delimiter` and the markers are ignored.
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let bucket_dir = self.root.join(&input.bucket);
        if !tokio::fs::metadata(&bucket_dir)
            .await
            .is_ok_and(|m| m.is_dir())
        {
            return Err(s3_error!(NoSuchBucket));
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut uploads = self
            .pending_uploads(&input.bucket, &prefix)
            .await
            .map_err(|e| s3_error!(e, InternalError, "cannot list multipart uploads"))?;
        uploads.sort();
        let uploads = uploads
            .into_iter()
            .map(|(key, upload_id, initiated)| MultipartUpload {
                key: Some(key),
                upload_id: Some(upload_id),
                initiated: initiated.map(Into::into),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

/// `<root>/.upload-<upload_id>.json`, where s3s-fs 0.14.1 records an upload
/// in progress, if `upload_id` is a UUID in the form s3s-fs hands out
/// (lowercase, hyphenated), so that the name is the one s3s-fs uses.
fn upload_info_path(root: &Path, upload_id: &str) -> Option<PathBuf> {
    let canonical = upload_id.len() == 36
        && upload_id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    canonical.then(|| root.join(format!(".upload-{upload_id}.json")))
}

/// S3's answer for an upload id that names no upload in progress.
fn no_such_upload() -> S3Error {
    s3_error!(
        NoSuchUpload,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )
}

// ---------------------------------------------------------------------------
// Per-key locks (fix 3)

/// One async mutex per `(bucket, key)` that has a writer, removed again when
/// the last holder or waiter lets go.
#[derive(Debug, Default)]
struct KeyLocks {
    map: Mutex<HashMap<LockId, Arc<tokio::sync::Mutex<()>>>>,
}

type LockId = (String, String);

impl KeyLocks {
    /// Waits until no other writer holds `bucket`/`key`.
    async fn lock(&self, bucket: &str, key: &str) -> KeyGuard<'_> {
        let id: LockId = (bucket.to_owned(), key.to_owned());
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            match map.entry(id.clone()) {
                Entry::Occupied(e) => Arc::clone(e.get()),
                Entry::Vacant(e) => Arc::clone(e.insert(Arc::default())),
            }
        };
        // If this future is dropped while waiting, `handle` still cleans up.
        let handle = LockHandle {
            locks: self,
            id,
            mutex,
        };
        let guard = Arc::clone(&handle.mutex).lock_owned().await;
        KeyGuard {
            _guard: guard,
            _handle: handle,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Holds a key's lock. Fields drop in order: unlock, then clean up.
struct KeyGuard<'a> {
    _guard: OwnedMutexGuard<()>,
    _handle: LockHandle<'a>,
}

/// A reference to a key's mutex that removes the map entry when it is the
/// last one.
struct LockHandle<'a> {
    locks: &'a KeyLocks,
    id: LockId,
    mutex: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for LockHandle<'_> {
    fn drop(&mut self) {
        let mut map = self
            .locks
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // New references are only made under the map lock, so two (the map's
        // and ours) means nobody else holds or waits for this key.
        if Arc::strong_count(&self.mutex) == 2 {
            map.remove(&self.id);
        }
    }
}

// ---------------------------------------------------------------------------
// Digest verification before the rename (fix 4)

/// The error a [`Verified`] body ended with, for the caller to return
/// instead of the `InternalError` s3s-fs makes of a failed body stream.
#[derive(Debug, Clone, Default)]
struct DigestOutcome(Arc<Mutex<Option<S3Error>>>);

impl DigestOutcome {
    fn set(&self, err: S3Error) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(err);
    }

    fn take(&self) -> Option<S3Error> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The checksum algorithms S3 defines, with their header names.
const ALGORITHMS: [(&str, &str); 5] = [
    (ChecksumAlgorithm::CRC32, "x-amz-checksum-crc32"),
    (ChecksumAlgorithm::CRC32C, "x-amz-checksum-crc32c"),
    (ChecksumAlgorithm::SHA1, "x-amz-checksum-sha1"),
    (ChecksumAlgorithm::SHA256, "x-amz-checksum-sha256"),
    (ChecksumAlgorithm::CRC64NVME, "x-amz-checksum-crc64nvme"),
];

/// The `x-amz-checksum-*` header values of a request, in [`ALGORITHMS`] order.
fn declared_checksums(
    crc32: &Option<String>,
    crc32c: &Option<String>,
    sha1: &Option<String>,
    sha256: &Option<String>,
    crc64nvme: &Option<String>,
) -> [Option<String>; 5] {
    [
        crc32.clone(),
        crc32c.clone(),
        sha1.clone(),
        sha256.clone(),
        crc64nvme.clone(),
    ]
}

/// The digests a request body must match: `Content-MD5` and the
/// `x-amz-checksum-*` values from headers or from aws-chunked trailers.
struct DigestCheck {
    content_md5: Option<[u8; 16]>,
    md5: Option<Md5>,
    hasher: ChecksumHasher,
    declared: [Option<String>; 5],
    trailers: Option<TrailingHeaders>,
}

impl DigestCheck {
    /// Prepares the check for one request body.
    ///
    /// Returns `InvalidDigest` when `Content-MD5` is not the base64 of 16 bytes.
    fn new(
        content_md5: Option<&str>,
        algorithm: Option<&ChecksumAlgorithm>,
        declared: &[Option<String>; 5],
        headers: &http::HeaderMap,
        trailers: Option<TrailingHeaders>,
    ) -> S3Result<Self> {
        let content_md5 = content_md5
            .map(|value| {
                base64_simd::STANDARD
                    .decode_to_vec(value)
                    .ok()
                    .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
                    .ok_or_else(|| {
                        s3_error!(InvalidDigest, "the Content-MD5 you specified was invalid")
                    })
            })
            .transpose()?;

        let announced: Vec<String> = headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .collect();
        let mut hasher = ChecksumHasher::default();
        for (i, (name, header)) in ALGORITHMS.iter().enumerate() {
            let wanted = declared[i].is_some()
                || algorithm.is_some_and(|a| a.as_str().eq_ignore_ascii_case(name))
                || announced.iter().any(|a| a == header);
            if !wanted {
                continue;
            }
            match i {
                0 => hasher.crc32 = Some(Default::default()),
                1 => hasher.crc32c = Some(Default::default()),
                2 => hasher.sha1 = Some(Default::default()),
                3 => hasher.sha256 = Some(Default::default()),
                _ => hasher.crc64nvme = Some(Default::default()),
            }
        }

        Ok(Self {
            md5: content_md5.map(|_| Md5::new()),
            content_md5,
            hasher,
            declared: declared.clone(),
            trailers,
        })
    }

    fn update(&mut self, data: &[u8]) {
        if let Some(md5) = &mut self.md5 {
            md5.update(data);
        }
        self.hasher.update(data);
    }

    /// Compares what the body hashed to with what the client declared.
    ///
    /// A digest with no expected value (an algorithm announced but never
    /// sent) is left for s3s-fs to judge.
    fn finish(self) -> S3Result<()> {
        if let (Some(expected), Some(md5)) = (self.content_md5, self.md5)
            && md5.finalize() != expected
        {
            return Err(s3_error!(
                BadDigest,
                "the Content-MD5 you specified did not match what we received"
            ));
        }
        let Checksum {
            checksum_crc32,
            checksum_crc32c,
            checksum_sha1,
            checksum_sha256,
            checksum_crc64nvme,
            ..
        } = self.hasher.finalize();
        let computed = [
            checksum_crc32,
            checksum_crc32c,
            checksum_sha1,
            checksum_sha256,
            checksum_crc64nvme,
        ];
        for (i, computed) in computed.into_iter().enumerate() {
            let Some(computed) = computed else { continue };
            let (name, header) = ALGORITHMS[i];
            let expected = self.declared[i].clone().or_else(|| {
                self.trailers.as_ref().and_then(|t| {
                    t.read(|h| {
                        h.get(header)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    })
                    .flatten()
                })
            });
            if let Some(expected) = expected
                && expected != computed
            {
                return Err(s3_error!(
                    BadDigest,
                    "the {name} you specified did not match the calculated checksum"
                ));
            }
        }
        Ok(())
    }
}

/// A request body that fails at its end when a [`DigestCheck`] fails, so that
/// s3s-fs drops its temporary file instead of renaming it into place.
struct Verified {
    inner: StreamingBlob,
    check: Option<DigestCheck>,
    outcome: DigestOutcome,
}

impl Verified {
    fn new(inner: StreamingBlob, check: DigestCheck, outcome: DigestOutcome) -> Self {
        Self {
            inner,
            check: Some(check),
            outcome,
        }
    }
}

impl Stream for Verified {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
            Some(Ok(bytes)) => {
                if let Some(check) = &mut this.check {
                    check.update(&bytes);
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Some(Err(e)) => {
                this.check = None;
                Poll::Ready(Some(Err(e)))
            }
            None => match this.check.take().map(DigestCheck::finish) {
                None | Some(Ok(())) => Poll::Ready(None),
                Some(Err(err)) => {
                    let message = err.message().unwrap_or("bad digest").to_owned();
                    this.outcome.set(err);
                    Poll::Ready(Some(Err(Box::new(io::Error::other(message)))))
                }
            },
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ByteStream for Verified {
    fn remaining_length(&self) -> RemainingLength {
        self.inner.remaining_length()
    }
}

// ---------------------------------------------------------------------------
// GET bodies in large reads (fix 2)

/// An object file opened before s3s-fs answers a GET.
struct PinnedFile {
    file: std::fs::File,
    dev: u64,
    ino: u64,
    len: u64,
}

impl PinnedFile {
    /// Opens the file at `path`; `None` if that fails for any reason.
    async fn open(path: PathBuf) -> Option<Self> {
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(path)?;
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Err(io::Error::other("not a regular file"));
            }
            Ok(Self {
                file,
                dev: meta.dev(),
                ino: meta.ino(),
                len: meta.len(),
            })
        })
        .await
        .ok()?
        .ok()
    }

    /// Whether `path` still names this file.
    async fn still_at(&self, path: PathBuf) -> bool {
        tokio::fs::metadata(path)
            .await
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }
}

/// A byte range of a file, read in [`GET_CHUNK_SIZE`] positional reads on the
/// blocking pool with [`GET_READ_AHEAD`] reads in flight.
struct FileChunks {
    file: Arc<std::fs::File>,
    next: u64,
    end: u64,
    remaining: u64,
    in_flight: VecDeque<JoinHandle<io::Result<Bytes>>>,
}

impl FileChunks {
    fn new(file: std::fs::File, range: Range<u64>) -> Self {
        Self {
            file: Arc::new(file),
            next: range.start,
            end: range.end,
            remaining: range.end - range.start,
            in_flight: VecDeque::with_capacity(GET_READ_AHEAD),
        }
    }

    fn start_reads(&mut self) {
        while self.in_flight.len() < GET_READ_AHEAD && self.next < self.end {
            let offset = self.next;
            let len = usize::try_from(self.end - offset)
                .map_or(GET_CHUNK_SIZE, |n| n.min(GET_CHUNK_SIZE));
            self.next += len as u64;
            let file = Arc::clone(&self.file);
            self.in_flight
                .push_back(tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0; len];
                    file.read_exact_at(&mut buf, offset)?;
                    Ok(Bytes::from(buf))
                }));
        }
    }

    fn fail(&mut self, err: io::Error) -> Poll<Option<Result<Bytes, StdError>>> {
        self.next = self.end;
        self.remaining = 0;
        self.in_flight.clear();
        Poll::Ready(Some(Err(Box::new(err))))
    }
}

impl Stream for FileChunks {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.start_reads();
        let Some(read) = this.in_flight.front_mut() else {
            return Poll::Ready(None);
        };
        let result = ready!(Pin::new(read).poll(cx));
        this.in_flight.pop_front();
        match result {
            Ok(Ok(bytes)) => {
                this.remaining -= bytes.len() as u64;
                this.start_reads();
                Poll::Ready(Some(Ok(bytes)))
            }
            Ok(Err(e)) => this.fail(e),
            Err(e) => this.fail(io::Error::other(e)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

impl ByteStream for FileChunks {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(usize::try_from(self.remaining).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use futures::StreamExt;

    fn blob(parts: &[&'static [u8]]) -> StreamingBlob {
        let items: Vec<Result<Bytes, io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        StreamingBlob::wrap(futures::stream::iter(items))
    }

    async fn drain(
        mut stream: impl Stream<Item = Result<Bytes, StdError>> + Unpin,
    ) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            out.extend_from_slice(&item.map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    fn md5_b64(data: &[u8]) -> String {
        base64_simd::STANDARD.encode_to_string(Md5::checksum(data))
    }

    fn check(md5: Option<&str>, declared: [Option<String>; 5]) -> S3Result<DigestCheck> {
        DigestCheck::new(md5, None, &declared, &http::HeaderMap::new(), None)
    }

    #[tokio::test]
    async fn digest_check_table() {
        let crc32_of_hello = {
            let mut h = ChecksumHasher {
                crc32: Some(Default::default()),
                ..Default::default()
            };
            h.update(b"hello");
            h.finalize().checksum_crc32
        };
        type Case = (&'static str, Option<String>, [Option<String>; 5], bool);
        let cases: Vec<Case> = vec![
            ("no digests", None, Default::default(), true),
            (
                "right md5",
                Some(md5_b64(b"hello")),
                Default::default(),
                true,
            ),
            (
                "wrong md5",
                Some(md5_b64(b"other")),
                Default::default(),
                false,
            ),
            (
                "right crc32",
                None,
                [crc32_of_hello.clone(), None, None, None, None],
                true,
            ),
            (
                "wrong crc32",
                None,
                [Some("AAAAAA==".into()), None, None, None, None],
                false,
            ),
        ];
        for (name, md5, declared, ok) in cases {
            let outcome = DigestOutcome::default();
            let stream = Verified::new(
                blob(&[b"he", b"llo"]),
                check(md5.as_deref(), declared).unwrap(),
                outcome.clone(),
            );
            let result = drain(stream).await;
            assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
            let err = outcome.take();
            assert_eq!(err.is_none(), ok, "{name}");
            if let Some(err) = err {
                assert_eq!(err.code().as_str(), "BadDigest", "{name}");
            }
        }
    }

    #[test]
    fn malformed_content_md5_is_invalid_digest() {
        for value in ["", "not base64!", "AAAA"] {
            let err = check(Some(value), Default::default()).err().expect(value);
            assert_eq!(err.code().as_str(), "InvalidDigest", "{value:?}");
        }
    }

    #[test]
    fn object_path_accepts_only_plain_relative_keys() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::new(dir.path()).unwrap();
        let root = dir.path().canonicalize().unwrap();
        let cases = [
            ("a/b/c", Some(root.join("bkt/a/b/c"))),
            ("a//b/./c", Some(root.join("bkt/a/b/c"))),
            ("dir/", Some(root.join("bkt/dir"))),
            ("/abs", None),
            ("../escape", None),
            ("./x", Some(root.join("bkt/x"))),
        ];
        for (key, want) in cases {
            assert_eq!(backend.object_path("bkt", key), want, "{key}");
        }
    }

    #[tokio::test]
    async fn file_chunks_reads_exact_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        let data: Vec<u8> = (0..(GET_CHUNK_SIZE * 3 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let n = data.len() as u64;
        for range in [
            0..n,
            0..0,
            5..6,
            1..n - 1,
            (GET_CHUNK_SIZE as u64 - 1)..(2 * GET_CHUNK_SIZE as u64 + 1),
        ] {
            let file = std::fs::File::open(&path).unwrap();
            let chunks = FileChunks::new(file, range.clone());
            assert_eq!(
                chunks.remaining_length().exact(),
                Some((range.end - range.start) as usize)
            );
            let got = drain(chunks).await.unwrap();
            assert!(
                got == data[range.start as usize..range.end as usize],
                "{range:?}"
            );
        }
    }

    fn request<T>(input: T) -> S3Request<T> {
        S3Request {
            input,
            method: http::Method::PUT,
            uri: http::Uri::from_static("/"),
            headers: http::HeaderMap::new(),
            extensions: http::Extensions::new(),
            credentials: None,
            region: None,
            service: None,
            trailing_headers: None,
        }
    }

    fn part_files(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload_id-"))
            .collect();
        names.sort();
        names
    }

    /// A part still being received when its upload is aborted does not
    /// outlive the abort: it gets `NoSuchUpload` and its file is removed, and
    /// the upload stays gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn part_landing_after_abort_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(Backend::new(dir.path()).unwrap());
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("bkt")).unwrap();
        let created = backend
            .create_multipart_upload(request(
                CreateMultipartUploadInput::builder()
                    .bucket("bkt".into())
                    .key("k".into())
                    .build()
                    .unwrap(),
            ))
            .await
            .unwrap();
        let upload_id = created.output.upload_id.unwrap();

        // The body arrives as the test sends it; `pulled` tells when s3s-fs
        // has read a piece, so past its own check of the upload.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(1);
        let (pulled_tx, mut pulled) = tokio::sync::mpsc::unbounded_channel::<()>();
        let body = StreamingBlob::wrap(futures::stream::unfold(rx, move |mut rx| {
            let pulled_tx = pulled_tx.clone();
            async move {
                let item = rx.recv().await?;
                let _ = pulled_tx.send(());
                Some((item, rx))
            }
        }));
        let part = {
            let backend = Arc::clone(&backend);
            let input = UploadPartInput::builder()
                .bucket("bkt".into())
                .key("k".into())
                .upload_id(upload_id.clone())
                .part_number(1)
                .body(Some(body))
                .build()
                .unwrap();
            tokio::spawn(async move { backend.upload_part(request(input)).await })
        };
        tx.send(Ok(Bytes::from_static(b"first half ")))
            .await
            .unwrap();
        pulled.recv().await.unwrap();

        let abort = |id: String| {
            let backend = Arc::clone(&backend);
            async move {
                backend
                    .abort_multipart_upload(request(
                        AbortMultipartUploadInput::builder()
                            .bucket("bkt".into())
                            .key("k".into())
                            .upload_id(id)
                            .build()
                            .unwrap(),
                    ))
                    .await
            }
        };
        abort(upload_id.clone()).await.unwrap();

        tx.send(Ok(Bytes::from_static(b"second half")))
            .await
            .unwrap();
        drop(tx);
        let err = part
            .await
            .unwrap()
            .expect_err("a part of an aborted upload");
        assert_eq!(err.code().as_str(), "NoSuchUpload");
        assert!(part_files(&root).is_empty(), "{:?}", part_files(&root));

        let err = backend
            .list_parts(request(
                ListPartsInput::builder()
                    .bucket("bkt".into())
                    .key("k".into())
                    .upload_id(upload_id.clone())
                    .build()
                    .unwrap(),
            ))
            .await
            .expect_err("parts of an aborted upload");
        assert_eq!(err.code().as_str(), "NoSuchUpload");
        let err = abort(upload_id).await.expect_err("a second abort");
        assert_eq!(err.code().as_str(), "NoSuchUpload");
        let listed = backend.pending_uploads("bkt", "").await.unwrap();
        assert!(listed.is_empty(), "{listed:?}");
    }

    #[tokio::test]
    async fn key_locks_serialise_and_clean_up() {
        let locks = Arc::new(KeyLocks::default());
        let guard = locks.lock("b", "k").await;
        assert_eq!(locks.len(), 1);

        // Another key is independent.
        drop(locks.lock("b", "other").await);

        // A second writer on the same key waits.
        let waiter = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move {
                let _g = locks.lock("b", "k").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0);

        // A waiter that gives up leaves nothing behind either.
        let guard = locks.lock("b", "k").await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), locks.lock("b", "k")).await;
        assert!(gave_up.is_err());
        drop(guard);
        assert_eq!(locks.len(), 0);
    }
}
