//! An S3 bucket and prefix, through `aws-sdk-s3`. SDK types stay in this module.
//!
//! - Create-only puts send `If-None-Match: *`; a `412 Precondition Failed` becomes
//!   [`Error::AlreadyExists`]. A `409 ConditionalRequestConflict` (a racing writer) is retryable.
//! - The SDK's own retries are off: [`Store`](crate::Store) retries, once, for every backend.
//! - Uploads carry a CRC32 checksum the server verifies; the payload itself is not signed
//!   (signing costs a SHA-256 pass over every byte), which is safe because the checksum covers
//!   the body and the connection is TLS for real S3.
//! - Plain `http://` endpoints are accepted only on loopback unless explicitly allowed.
//! - A body larger than [`MultipartOptions::threshold`] goes up as a multipart upload:
//!   CreateMultipartUpload, UploadPart for each zero-copy slice of the body
//!   ([`MultipartOptions::concurrency`] in flight), then CompleteMultipartUpload, which carries
//!   `If-None-Match: *` for a create-only put, so the object appears whole or not at all and a
//!   `412` is [`Error::AlreadyExists`] as for a single PUT. Each of these requests takes a slot
//!   of the store's concurrency limit and is timed out and retried on its own under the store's
//!   [`RetryConfig`](crate::RetryConfig) (the one retry loop), so a failed part costs one part.
//!   On any failure or cancellation the upload is aborted, best effort, and ListParts then
//!   checks that it is gone: a part the server was still receiving may land after the abort,
//!   so the abort is repeated, a few times, until it is. A CreateMultipartUpload once sent is
//!   seen through even when the put is cancelled (only its answer names the upload, which the
//!   server may create regardless), and the upload it made is aborted. An upload left behind
//!   (the abort failed, the create timed out, or the put future was dropped) holds storage
//!   until a bucket lifecycle rule (`AbortIncompleteMultipartUpload`) removes it. Parts carry
//!   CRC32 checksums, as single PUTs do.

use std::ops::Range;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use tokio_util::sync::CancellationToken;

use crate::config::{MultipartOptions, S3Options, StoreConfig};
use crate::error::{Error, Result};
use crate::retry::{RequestPolicy, retry};
use crate::{ArchiveStore, GetResult, ObjectKey, ObjectMeta, PutMode};

/// The longest an abort of a failed multipart upload may take, retries included. It runs
/// after the put has already failed (or been cancelled), so it must not hold the caller long.
const ABORT_BUDGET: Duration = Duration::from_secs(10);

/// How many times an upload is aborted at most while ListParts still shows parts after an
/// abort (parts that were in flight during it).
const ABORT_ROUNDS: u32 = 5;

/// The pause before aborting again, for parts in flight to land.
const ABORT_RECHECK_DELAY: Duration = Duration::from_millis(200);

/// A store in an S3 bucket under a key prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Empty, or the prefix followed by `/`.
    prefix: String,
    multipart: MultipartOptions,
    /// The concurrency limit and retries for the requests of multipart uploads; [`Store`]
    /// shares it.
    ///
    /// [`Store`]: crate::Store
    policy: RequestPolicy,
}

impl S3Store {
    /// Builds a client for `bucket` and `prefix` (without leading or trailing `/`). No request
    /// is sent.
    pub async fn new(bucket: &str, prefix: &str, config: &StoreConfig) -> Result<S3Store> {
        let options = &config.s3;
        options.multipart.validate()?;
        if let Some(endpoint) = &options.endpoint {
            check_endpoint(endpoint, options)?;
        }
        let region = options
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".to_owned());
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region));
        match (&options.access_key_id, &options.secret_access_key) {
            (Some(id), Some(secret)) => {
                loader = loader.credentials_provider(Credentials::new(
                    id,
                    secret,
                    options.session_token.clone(),
                    None,
                    "walferry",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(Error::InvalidConfig {
                    message: "an S3 access key id was given without its secret, or the other way round; HINT: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither".into(),
                });
            }
        }
        let sdk = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .build(),
            );
        let custom_endpoint = options.endpoint.is_some() || sdk.endpoint_url().is_some();
        if let Some(endpoint) = &options.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(endpoint) = sdk.endpoint_url() {
            check_endpoint(endpoint, options)?;
        }
        builder = builder.force_path_style(options.path_style.unwrap_or(custom_endpoint));
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            multipart: options.multipart,
            policy: RequestPolicy::new(config.retry.clone(), config.concurrency),
        })
    }

    /// The concurrency limit and retry policy of this store's multipart requests.
    pub(crate) fn policy(&self) -> &RequestPolicy {
        &self.policy
    }

    /// Whether a put of `len` bytes goes up as a multipart upload, whose requests are retried
    /// inside [`ArchiveStore::put`] rather than by the caller.
    pub(crate) fn uses_multipart(&self, len: usize) -> bool {
        self.multipart.applies_to(len as u64)
    }

    fn full_key(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn map_err<E>(&self, op: &'static str, key: &str, err: SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let key = key.to_owned();
        match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = service.err().code().unwrap_or("");
                let message = match service.err().message() {
                    Some(m) => format!("{code} ({status}): {m}"),
                    None if code.is_empty() => format!("HTTP {status}"),
                    None => format!("{code} ({status})"),
                };
                match (status, code) {
                    (_, "NoSuchBucket") => Error::NoSuchBucket {
                        bucket: self.bucket.clone(),
                    },
                    // "Not found" ends a recovery, so only S3's own word for it counts: a 404
                    // from a proxy or a misrouted endpoint is a failure. HEAD responses carry
                    // no body, so their 404 has no code.
                    (_, "NoSuchKey") => Error::NotFound { key },
                    (404, "" | "NotFound") if op == "head" => Error::NotFound { key },
                    (412, _) | (_, "PreconditionFailed") => Error::AlreadyExists { key },
                    (401 | 403, "SignatureDoesNotMatch" | "InvalidAccessKeyId") => {
                        Error::PermissionDenied {
                            key: format!("s3://{}/{}{key}", self.bucket, self.prefix),
                            message: format!(
                                "{message}; HINT: the server does not accept these credentials: check the access key ID and the secret key"
                            ),
                        }
                    }
                    (401 | 403, _) => Error::PermissionDenied {
                        key: format!("s3://{}/{}{key}", self.bucket, self.prefix),
                        message: format!(
                            "{message}; HINT: the credentials need s3:GetObject, s3:PutObject and s3:ListBucket on the repository (without s3:ListBucket, S3 answers 403 for a missing object)"
                        ),
                    },
                    (501, _) | (_, "NotImplemented") => Error::Permanent {
                        op,
                        key,
                        message: format!(
                            "{message}; HINT: the S3 server does not support this request"
                        ),
                    },
                    (408 | 429 | 500..=599, _)
                    | (409, "ConditionalRequestConflict" | "OperationAborted")
                    | (_, "SlowDown" | "RequestTimeout" | "Throttling" | "InternalError") => {
                        Error::Transient { op, key, message }
                    }
                    _ => Error::Permanent { op, key, message },
                }
            }
            SdkError::ConstructionFailure(_) => Error::Permanent {
                op,
                key,
                message: error_chain(&err),
            },
            _ => Error::Transient {
                op,
                key,
                message: error_chain(&err),
            },
        }
    }
}

/// An error and its sources on one line, each link once: the SDK's errors nest several
/// layers (dispatch failure, connector, hyper, io) whose texts would otherwise repeat.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Plain HTTP sends credentials' signatures and data in the clear: only on loopback, or when
/// the operator says so.
fn check_endpoint(endpoint: &str, options: &S3Options) -> Result<()> {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        if endpoint.starts_with("https://") {
            return Ok(());
        }
        return Err(Error::InvalidConfig {
            message: format!("S3 endpoint '{endpoint}' must start with https:// or http://"),
        });
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || options.allow_http {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            message: format!(
                "S3 endpoint '{endpoint}' is plain http on a non-loopback host; HINT: use https, or pass --s3-allow-http if the network is trusted"
            ),
        })
    }
}

/// Multipart uploads, as the module docs describe.
impl S3Store {
    /// Puts `body` as a multipart upload, aborting it on any failure.
    async fn put_multipart(
        &self,
        key: &ObjectKey,
        body: Bytes,
        mode: PutMode,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let full = self.full_key(key);
        // The server may create the upload even if we stop listening, and only its answer
        // names it: so the request, once sent, is seen through, and the upload aborted if the
        // put was cancelled meanwhile.
        let upload_id = self
            .policy
            .run_to_end("create multipart upload", key.as_str(), cancel, || async {
                let out = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .send()
                    .await
                    .map_err(|e| self.map_err("create multipart upload", key.as_str(), e))?;
                match out.upload_id() {
                    Some(id) if !id.is_empty() => Ok(id.to_owned()),
                    _ => Err(Error::Permanent {
                        op: "create multipart upload",
                        key: key.to_string(),
                        message: "the server answered without an upload id".into(),
                    }),
                }
            })
            .await?;
        if cancel.is_cancelled() {
            self.abort_upload(key, &full, &upload_id, &Error::Cancelled)
                .await;
            return Err(Error::Cancelled);
        }
        let result = self
            .upload_parts_and_complete(key, &full, &upload_id, body, mode, cancel)
            .await;
        if let Err(err) = &result {
            self.abort_upload(key, &full, &upload_id, err).await;
        }
        result
    }

    /// Uploads the parts of `body`, then completes the upload: the object exists only after
    /// this returns `Ok`.
    async fn upload_parts_and_complete(
        &self,
        key: &ObjectKey,
        full: &str,
        upload_id: &str,
        body: Bytes,
        mode: PutMode,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let part_size = self.multipart.part_size_for(body.len() as u64);
        let part_size = usize::try_from(part_size).unwrap_or(usize::MAX);
        let ranges: Vec<Range<usize>> = (0..body.len())
            .step_by(part_size)
            .map(|start| start..start.saturating_add(part_size).min(body.len()))
            .collect();
        let total = ranges.len();
        let uploads = ranges.into_iter().enumerate().map(|(i, range)| {
            let chunk = body.slice(range);
            async move {
                let number = i32::try_from(i + 1).map_err(|_| Error::Permanent {
                    op: "upload part",
                    key: key.to_string(),
                    message: format!("part {} is past S3's limit of 10,000 parts", i + 1),
                })?;
                self.upload_part(key, full, upload_id, number, total, chunk, cancel)
                    .await
            }
        });
        // On the first failure the stream is dropped, which cancels the parts in flight.
        let mut parts: Vec<CompletedPart> = futures::stream::iter(uploads)
            .buffer_unordered(self.multipart.concurrency.get())
            .try_collect()
            .await?;
        parts.sort_by_key(|p| p.part_number());
        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        self.policy
            .run("complete multipart upload", key.as_str(), cancel, || {
                let mut request = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .multipart_upload(upload.clone());
                if mode == PutMode::Create {
                    request = request.if_none_match("*");
                }
                async move {
                    request
                        .send()
                        .await
                        .map_err(|e| self.map_err("complete multipart upload", key.as_str(), e))
                }
            })
            .await?;
        Ok(())
    }

    /// Uploads part `number` of `total`, retried on its own.
    #[allow(clippy::too_many_arguments)]
    async fn upload_part(
        &self,
        key: &ObjectKey,
        full: &str,
        upload_id: &str,
        number: i32,
        total: usize,
        chunk: Bytes,
        cancel: &CancellationToken,
    ) -> Result<CompletedPart> {
        let len = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
        self.policy
            .run("upload part", key.as_str(), cancel, || {
                let request = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(len)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(ByteStream::from(chunk.clone()));
                async move {
                    let out = request
                        .customize()
                        .disable_payload_signing()
                        .send()
                        .await
                        .map_err(|e| {
                            with_part(self.map_err("upload part", key.as_str(), e), number, total)
                        })?;
                    let Some(e_tag) = out.e_tag() else {
                        return Err(Error::Permanent {
                            op: "upload part",
                            key: key.to_string(),
                            message: format!(
                                "the server answered part {number} of {total} without an ETag"
                            ),
                        });
                    };
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .e_tag(e_tag)
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                        .build())
                }
            })
            .await
    }

    /// Aborts a failed upload so that its parts stop taking storage. Best effort: a failure is
    /// logged, and the caller reports `why`.
    ///
    /// A part still in flight at the abort (dropped by us, but perhaps still being received by
    /// the server) "might or might not succeed", as S3 puts it, and may have to be aborted
    /// again: so after each abort, ListParts checks that the upload is gone (`NoSuchUpload`,
    /// or no parts), and if not, the abort is repeated after [`ABORT_RECHECK_DELAY`], up to
    /// [`ABORT_ROUNDS`] times, all within [`ABORT_BUDGET`].
    async fn abort_upload(&self, key: &ObjectKey, full: &str, upload_id: &str, why: &Error) {
        match tokio::time::timeout(ABORT_BUDGET, self.abort_until_gone(key, full, upload_id)).await
        {
            Ok(Ok(())) => {
                tracing::debug!(key = %key, upload_id, "aborted multipart upload after: {why}");
            }
            Ok(Err(e)) => tracing::warn!(
                key = %key,
                upload_id,
                "cannot abort multipart upload of '{key}' after: {why}: {e}; HINT: a bucket lifecycle rule with AbortIncompleteMultipartUpload removes it"
            ),
            Err(_) => tracing::warn!(
                key = %key,
                upload_id,
                "abort of multipart upload of '{key}' timed out after {ABORT_BUDGET:?} (it followed: {why}); HINT: a bucket lifecycle rule with AbortIncompleteMultipartUpload removes it"
            ),
        }
    }

    /// Aborts the upload, then checks it is gone, aborting again while parts keep turning up.
    async fn abort_until_gone(&self, key: &ObjectKey, full: &str, upload_id: &str) -> Result<()> {
        // The caller's token may be what cancelled the put; the abort must still go out.
        let cancel = CancellationToken::new();
        let mut round = 1;
        loop {
            retry(
                self.policy.retry_config(),
                "abort multipart upload",
                key.as_str(),
                &cancel,
                || async {
                    match self
                        .client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(full)
                        .upload_id(upload_id)
                        .send()
                        .await
                    {
                        Ok(_) => Ok(()),
                        // Already gone: an earlier attempt whose answer was lost, or an
                        // earlier round.
                        Err(e) if is_no_such_upload(&e) => Ok(()),
                        Err(e) => Err(self.map_err("abort multipart upload", key.as_str(), e)),
                    }
                },
            )
            .await?;
            let parts = retry(
                self.policy.retry_config(),
                "list parts",
                key.as_str(),
                &cancel,
                || async {
                    match self
                        .client
                        .list_parts()
                        .bucket(&self.bucket)
                        .key(full)
                        .upload_id(upload_id)
                        .max_parts(1)
                        .send()
                        .await
                    {
                        Ok(out) => Ok(out.parts().len()),
                        Err(e) if is_no_such_upload(&e) => Ok(0),
                        Err(e) => Err(self.map_err("list parts", key.as_str(), e)),
                    }
                },
            )
            .await;
            let parts = match parts {
                Ok(n) => n,
                Err(e) => {
                    // The abort itself went through; only the check failed (a server without
                    // ListParts, or credentials without s3:ListMultipartUploadParts).
                    tracing::debug!(key = %key, upload_id, "cannot check that the multipart upload is gone after its abort: {e}");
                    return Ok(());
                }
            };
            if parts == 0 {
                return Ok(());
            }
            if round >= ABORT_ROUNDS {
                return Err(Error::Transient {
                    op: "abort multipart upload",
                    key: key.to_string(),
                    message: format!("parts still listed after {round} aborts"),
                });
            }
            tracing::debug!(
                key = %key,
                upload_id,
                "multipart upload still has parts after abort {round}; aborting again"
            );
            round += 1;
            tokio::time::sleep(ABORT_RECHECK_DELAY).await;
        }
    }

    /// Keys (relative to the store) of multipart uploads under `prefix` that were neither
    /// completed nor aborted.
    #[cfg(feature = "testing")]
    pub(crate) async fn incomplete_uploads(&self, prefix: &str) -> Result<Vec<String>> {
        let full_prefix = format!("{}{}", self.prefix, prefix);
        let mut keys = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut upload_id_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .send()
                .await
                .map_err(|e| self.map_err("list multipart uploads", prefix, e))?;
            for upload in out.uploads() {
                // Filtered here too, in case a server ignores the prefix.
                if let Some(rel) = upload
                    .key()
                    .and_then(|k| k.strip_prefix(&self.prefix))
                    .filter(|rel| rel.starts_with(prefix))
                {
                    keys.push(rel.to_owned());
                }
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            upload_id_marker = out.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && upload_id_marker.is_none() {
                break;
            }
        }
        keys.sort();
        Ok(keys)
    }
}

/// Whether S3 answered `NoSuchUpload`: the multipart upload does not exist (any more).
fn is_no_such_upload<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    matches!(err, SdkError::ServiceError(service) if service.err().code() == Some("NoSuchUpload"))
}

/// Names the part in the message of an error from an UploadPart request.
fn with_part(err: Error, number: i32, total: usize) -> Error {
    match err {
        Error::Transient { op, key, message } => Error::Transient {
            op,
            key,
            message: format!("{message} (part {number} of {total})"),
        },
        Error::Permanent { op, key, message } => Error::Permanent {
            op,
            key,
            message: format!("{message} (part {number} of {total})"),
        },
        other => other,
    }
}

impl ArchiveStore for S3Store {
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        mode: PutMode,
        cancel: &CancellationToken,
    ) -> Result<()> {
        if self.uses_multipart(body.len()) {
            return self.put_multipart(key, body, mode, cancel).await;
        }
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_length(i64::try_from(body.len()).unwrap_or(i64::MAX))
            .body(ByteStream::from(body));
        if mode == PutMode::Create {
            request = request.if_none_match("*");
        }
        request
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.map_err("put", key.as_str(), e))?;
        Ok(())
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
        _cancel: &CancellationToken,
    ) -> Result<GetResult> {
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        if let Some(r) = &range {
            if r.start > r.end {
                return Err(Error::Permanent {
                    op: "get",
                    key: key.to_string(),
                    message: format!("range {}..{} is reversed", r.start, r.end),
                });
            }
            if r.start == r.end {
                // HTTP cannot express an empty range; ask for the size only.
                let meta = self.head(key, _cancel).await?;
                return Ok(GetResult {
                    body: Bytes::new(),
                    object_size: meta.size,
                });
            }
            request = request.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = request
            .send()
            .await
            .map_err(|e| self.map_err("get", key.as_str(), e))?;
        let total_from_range = out
            .content_range()
            .and_then(|cr| cr.rsplit('/').next())
            .and_then(|total| total.parse::<u64>().ok());
        let content_length = out.content_length().and_then(|n| u64::try_from(n).ok());
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| Error::Transient {
                op: "get",
                key: key.to_string(),
                message: format!("reading the response body: {e}"),
            })?
            .into_bytes();
        if let Some(expected) = content_length
            && expected != body.len() as u64
        {
            return Err(Error::Transient {
                op: "get",
                key: key.to_string(),
                message: format!(
                    "response body ended after {} of {expected} bytes",
                    body.len()
                ),
            });
        }
        let object_size = total_from_range.unwrap_or(body.len() as u64);
        Ok(GetResult { body, object_size })
    }

    async fn head(&self, key: &ObjectKey, _cancel: &CancellationToken) -> Result<ObjectMeta> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.map_err("head", key.as_str(), e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
        })
    }

    async fn list(&self, prefix: &str, _cancel: &CancellationToken) -> Result<Vec<ObjectMeta>> {
        let full_prefix = format!("{}{}", self.prefix, prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err("list", prefix, e))?;
            for object in page.contents() {
                let Some(full) = object.key() else { continue };
                let Some(rel) = full.strip_prefix(&self.prefix) else {
                    continue;
                };
                // Objects that are not valid keys were not written by us.
                let Ok(key) = ObjectKey::new(rel) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key,
                    size: object
                        .size()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey, _cancel: &CancellationToken) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.map_err("delete", key.as_str(), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_on_loopback_unless_allowed() {
        let strict = S3Options::default();
        let lax = S3Options {
            allow_http: true,
            ..S3Options::default()
        };
        for ok in [
            "https://s3.example.com",
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "http://[::1]:9000",
        ] {
            assert!(check_endpoint(ok, &strict).is_ok(), "{ok}");
        }
        for bad in ["http://10.0.0.1:9000", "http://minio.internal", "ftp://x"] {
            assert!(check_endpoint(bad, &strict).is_err(), "{bad}");
        }
        assert!(check_endpoint("http://minio.internal", &lax).is_ok());
    }
}
