//! `unpack`: write a stored base backup back out as a data directory.
//!
//! Contract:
//!
//! - The data directory and every tablespace directory must be empty or absent
//!   ([`Error::TargetNotEmpty`] otherwise, before anything is written), unless
//!   [`UnpackOptions::allow_non_empty`] is set; then files the backup holds are overwritten
//!   and other files are left alone.
//! - The data directory is created `0700`, tablespace directories `0700`. A tablespace is
//!   unpacked into its entry in [`UnpackOptions::tablespace_targets`], by default its
//!   original location, and `pg_tblspc/<oid>` links to that directory.
//! - Every part is checked against its manifest entry (size and CRC-32) before a byte of it
//!   is used, and every file is read back and checked (size and CRC-32) after all parts are
//!   written; errors name the part's key or the file's path.
//! - Files and directories get the manifest's modes and files its mtimes; everything is
//!   fsynced before `unpack` returns. Symbolic links are made last, so no write ever goes
//!   through one.
//! - At most [`UnpackOptions::jobs`] parts are downloaded, decoded and written at once, so
//!   memory is bounded by about `jobs × (part size + compressed part size)`.
//!
//! A failed or cancelled unpack leaves a partial directory that is not a usable data
//! directory; unpack again into an empty one.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tracing::{Instrument as _, debug, info};
use walferry_manifest::backup::{BackupPart, Crc32, FileKind, Oid};
use walferry_manifest::{BackupManifest, Timestamp, layout};
use walferry_store::{ArchiveStore, CancellationToken, Store};

use crate::error::{Error, Result};
use crate::{blocking, store_error};

/// The default number of parts in flight.
pub const DEFAULT_JOBS: NonZeroUsize = NonZeroUsize::new(4).expect("not zero");

/// Reads back restored files in pieces of this size.
const READ_CHUNK: usize = 1 << 20;

/// How to unpack a backup.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Where each tablespace goes; a tablespace not listed goes to its original location.
    pub tablespace_targets: HashMap<Oid, PathBuf>,
    /// The most parts downloaded, decoded and written at once.
    pub jobs: NonZeroUsize,
    /// Unpack into directories that already hold files.
    pub allow_non_empty: bool,
    /// Counters the unpack updates as it goes, for a progress display.
    pub progress: Arc<UnpackProgress>,
}

/// How far an unpack has got. Every counter only grows; read them with
/// [`UnpackProgress::snapshot`] from any thread while the unpack runs.
#[derive(Debug, Default)]
pub struct UnpackProgress {
    total_bytes: AtomicU64,
    total_files: AtomicU64,
    written_bytes: AtomicU64,
    written_files: AtomicU64,
    checked_files: AtomicU64,
}

/// The counters of an [`UnpackProgress`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Bytes of file content the backup holds (known once the unpack has started).
    pub total_bytes: u64,
    /// Regular files the backup holds.
    pub total_files: u64,
    /// Bytes of file content written so far.
    pub written_bytes: u64,
    /// Files whose whole content is written.
    pub written_files: u64,
    /// Files read back and checked against the manifest.
    pub checked_files: u64,
}

impl UnpackProgress {
    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            total_bytes: self.total_bytes.load(Ordering::Relaxed),
            total_files: self.total_files.load(Ordering::Relaxed),
            written_bytes: self.written_bytes.load(Ordering::Relaxed),
            written_files: self.written_files.load(Ordering::Relaxed),
            checked_files: self.checked_files.load(Ordering::Relaxed),
        }
    }
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            tablespace_targets: HashMap::new(),
            jobs: DEFAULT_JOBS,
            allow_non_empty: false,
            progress: Arc::default(),
        }
    }
}

/// What an unpack wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Regular files written.
    pub files: u64,
    /// Directories listed in the backup.
    pub directories: u64,
    /// Symbolic links made, tablespace links included.
    pub symlinks: u64,
    /// Parts downloaded.
    pub parts: u64,
    /// Their stored (compressed) size.
    pub downloaded_bytes: u64,
    /// Bytes of file content written.
    pub written_bytes: u64,
}

/// Unpacks the backup `manifest` describes from `store` into the data directory `target`.
/// See the [module docs](self) for the contract.
///
/// Fails with [`Error::TargetNotEmpty`], [`Error::InvalidBackup`] when the manifest is
/// inconsistent or `options` names a tablespace the backup lacks, [`Error::Corrupt`] or
/// [`Error::PartMismatch`] for a bad part, [`Error::RestoredFileMismatch`] for a file that
/// does not read back as recorded, [`Error::Store`], [`Error::LocalIo`] and
/// [`Error::Cancelled`].
pub async fn unpack(
    store: &Store,
    manifest: &BackupManifest,
    target: &Path,
    options: &UnpackOptions,
    cancel: &CancellationToken,
) -> Result<UnpackStats> {
    let span = tracing::info_span!("unpack", backup = %manifest.label);
    async {
        let plan = Arc::new(Plan::new(
            manifest,
            target,
            &options.tablespace_targets,
            options.progress.clone(),
        )?);
        info!(target = %target.display(), files = plan.files.len(), parts = manifest.parts.len(), "unpacking backup");
        let allow = options.allow_non_empty;
        let mut stats = blocking({
            let plan = plan.clone();
            move || plan.prepare(allow)
        })
        .await?;
        let (parts, downloaded_bytes, written_bytes) =
            fetch_parts(store, manifest, &plan, options.jobs, cancel).await?;
        stats.parts = parts;
        stats.downloaded_bytes = downloaded_bytes;
        stats.written_bytes = written_bytes;
        check_files(&plan, options.jobs, cancel).await?;
        stats.symlinks = blocking({
            let plan = plan.clone();
            move || plan.finish(allow)
        })
        .await?;
        info!(?stats, "backup unpacked");
        Ok(stats)
    }
    .instrument(span)
    .await
}

/// A regular file to restore.
#[derive(Debug)]
struct RegularFile {
    path: PathBuf,
    mode: u32,
    mtime: Option<Timestamp>,
    /// Where its content lies in its stream.
    content: Range<u64>,
    crc32: Crc32,
}

/// Where everything goes, worked out before touching the disk.
#[derive(Debug)]
struct Plan {
    label: String,
    /// The data directory, then each tablespace directory.
    roots: Vec<PathBuf>,
    /// Regular files, each stream's sorted by offset.
    files: Vec<RegularFile>,
    /// Per stream, the range of `files` holding its files.
    streams: HashMap<Option<Oid>, Range<usize>>,
    /// Directories and their modes.
    dirs: Vec<(PathBuf, u32)>,
    /// Links and where they point.
    links: Vec<(PathBuf, PathBuf)>,
    /// Per file of `files`, the bytes not written yet.
    remaining: Vec<AtomicU64>,
    progress: Arc<UnpackProgress>,
}

/// The bytes of one part that belong to one file.
#[derive(Debug)]
struct Piece {
    file: usize,
    /// Where in the part.
    in_part: Range<usize>,
    /// Where in the file.
    at: u64,
}

impl Plan {
    fn new(
        manifest: &BackupManifest,
        target: &Path,
        tablespace_targets: &HashMap<Oid, PathBuf>,
        progress: Arc<UnpackProgress>,
    ) -> Result<Plan> {
        let label = manifest.label.clone();
        let invalid = |reason: String| Error::InvalidBackup {
            label: label.clone(),
            reason,
        };
        manifest.validate().map_err(|e| invalid(e.to_string()))?;
        for oid in tablespace_targets.keys() {
            if !manifest.tablespaces.iter().any(|ts| ts.oid == *oid) {
                return Err(invalid(format!(
                    "a target is given for tablespace {oid}, which the backup does not have"
                )));
            }
        }
        let mut roots_by_stream = HashMap::from([(None, target.to_owned())]);
        let mut roots = vec![target.to_owned()];
        let mut links = Vec::new();
        for ts in &manifest.tablespaces {
            let dir = tablespace_targets
                .get(&ts.oid)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(&ts.location));
            // The link must not depend on the working directory.
            let dir = std::path::absolute(&dir).map_err(|source| Error::LocalIo {
                action: "resolve",
                path: dir.clone(),
                source,
            })?;
            links.push((target.join(format!("pg_tblspc/{}", ts.oid)), dir.clone()));
            roots_by_stream.insert(Some(ts.oid), dir.clone());
            roots.push(dir);
        }
        let mut files = Vec::new();
        let mut streams = HashMap::new();
        let mut dirs = Vec::new();
        let stream_ids: Vec<Option<Oid>> = std::iter::once(None)
            .chain(manifest.tablespaces.iter().map(|ts| Some(ts.oid)))
            .collect();
        for stream in stream_ids {
            let root = &roots_by_stream[&stream];
            let start = files.len();
            for file in manifest.files.iter().filter(|f| f.tablespace == stream) {
                let path = root.join(&file.path);
                match &file.kind {
                    FileKind::File {
                        size,
                        crc32,
                        offset,
                    } => files.push(RegularFile {
                        path,
                        mode: file.mode,
                        mtime: file.mtime,
                        content: *offset..offset + size,
                        crc32: *crc32,
                    }),
                    FileKind::Dir => dirs.push((path, file.mode)),
                    FileKind::Symlink { target } => {
                        // Tablespace links are made from the tablespace list, to their new
                        // directories.
                        if !links.iter().any(|(link, _)| *link == path) {
                            links.push((path, PathBuf::from(target)));
                        }
                    }
                }
            }
            files[start..].sort_by_key(|f| f.content.start);
            streams.insert(stream, start..files.len());
        }
        let remaining = files
            .iter()
            .map(|f| AtomicU64::new(f.content.end - f.content.start))
            .collect();
        let total_bytes = files.iter().map(|f| f.content.end - f.content.start).sum();
        progress.total_bytes.store(total_bytes, Ordering::Relaxed);
        progress
            .total_files
            .store(files.len() as u64, Ordering::Relaxed);
        Ok(Plan {
            label,
            roots,
            files,
            streams,
            dirs,
            links,
            remaining,
            progress,
        })
    }

    /// The pieces of `part` that belong to files, in stream order.
    fn pieces(&self, part: &BackupPart) -> Vec<Piece> {
        let range = self.streams.get(&part.tablespace).cloned().unwrap_or(0..0);
        let files = &self.files[range.clone()];
        let part_end = part.offset + part.original_bytes;
        let first = files.partition_point(|f| f.content.end <= part.offset);
        files[first..]
            .iter()
            .enumerate()
            .take_while(|(_, f)| f.content.start < part_end)
            .filter(|(_, f)| !f.content.is_empty())
            .map(|(i, f)| {
                let start = f.content.start.max(part.offset);
                let end = f.content.end.min(part_end);
                let in_part = to_usize(start - part.offset)..to_usize(end - part.offset);
                Piece {
                    file: range.start + first + i,
                    in_part,
                    at: start - f.content.start,
                }
            })
            .collect()
    }

    /// Checks the roots, then makes the directories and the files at their final size.
    fn prepare(&self, allow_non_empty: bool) -> Result<UnpackStats> {
        for root in &self.roots {
            match fs::read_dir(root) {
                Ok(mut entries) => {
                    if entries.next().is_some() && !allow_non_empty {
                        return Err(Error::TargetNotEmpty { path: root.clone() });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(local("read", root, source)),
            }
        }
        for root in &self.roots {
            make_dir(root)?;
            fs::set_permissions(root, Permissions::from_mode(0o700))
                .map_err(|e| local("set the mode of", root, e))?;
        }
        for (dir, _) in &self.dirs {
            make_dir(dir)?;
        }
        for file in &self.files {
            if let Some(parent) = file.path.parent() {
                make_dir(parent)?;
            }
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&file.path)
                .map_err(|e| local("create", &file.path, e))?;
            f.set_len(file.content.end - file.content.start)
                .map_err(|e| local("size", &file.path, e))?;
            if file.content.is_empty() {
                self.progress.written_files.fetch_add(1, Ordering::Relaxed);
            }
        }
        debug!(
            directories = self.dirs.len(),
            files = self.files.len(),
            "tree made"
        );
        Ok(UnpackStats {
            files: self.files.len() as u64,
            directories: self.dirs.len() as u64,
            ..UnpackStats::default()
        })
    }

    /// Decodes one part, checks it, and writes its pieces.
    fn write_part(
        &self,
        key: &str,
        part: &BackupPart,
        body: &[u8],
        pieces: &[Piece],
    ) -> Result<u64> {
        let bytes =
            walferry_codec::decode(body, part.original_bytes).map_err(|source| Error::Corrupt {
                key: key.to_owned(),
                source,
            })?;
        if let Some(reason) =
            crate::part_check::part_mismatch(part, walferry_codec::Summary::of(&bytes))
        {
            return Err(Error::PartMismatch {
                key: key.to_owned(),
                reason,
            });
        }
        let mut written = 0;
        for piece in pieces {
            let path = &self.files[piece.file].path;
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| local("open", path, e))?;
            let data = &bytes[piece.in_part.clone()];
            file.write_all_at(data, piece.at)
                .map_err(|e| local("write", path, e))?;
            let len = data.len() as u64;
            written += len;
            self.progress
                .written_bytes
                .fetch_add(len, Ordering::Relaxed);
            if self.remaining[piece.file].fetch_sub(len, Ordering::Relaxed) == len {
                self.progress.written_files.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(written)
    }

    /// Reads a file back and checks it; then sets its mode and mtime and fsyncs it.
    fn check_file(&self, index: usize) -> Result<()> {
        let file = &self.files[index];
        let path = &file.path;
        let mut f = File::open(path).map_err(|e| local("read", path, e))?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0; READ_CHUNK];
        let mut len = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| local("read", path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        let size = file.content.end - file.content.start;
        let mismatch = |reason| Error::RestoredFileMismatch {
            path: path.clone(),
            reason,
        };
        if len != size {
            return Err(mismatch(format!(
                "it holds {len} bytes, the manifest says {size}"
            )));
        }
        let crc = Crc32(hasher.finalize());
        if crc != file.crc32 {
            return Err(mismatch(format!(
                "its CRC-32 is {crc}, the manifest says {}",
                file.crc32
            )));
        }
        if let Some(time) = file.mtime.and_then(system_time) {
            f.set_modified(time)
                .map_err(|e| local("set the mtime of", path, e))?;
        }
        f.set_permissions(Permissions::from_mode(file.mode))
            .map_err(|e| local("set the mode of", path, e))?;
        f.sync_all().map_err(|e| local("fsync", path, e))?;
        self.progress.checked_files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes the links, sets the directories' modes and fsyncs every directory; returns the
    /// number of links.
    fn finish(&self, allow_non_empty: bool) -> Result<u64> {
        for (link, to) in &self.links {
            if let Some(parent) = link.parent() {
                make_dir(parent)?;
            }
            if allow_non_empty && fs::symlink_metadata(link).is_ok() {
                fs::remove_file(link).map_err(|e| local("replace", link, e))?;
            }
            std::os::unix::fs::symlink(to, link).map_err(|e| local("make link", link, e))?;
        }
        // Every directory that gained an entry, deepest first, so that a directory is
        // fsynced (and given its mode) while its parents are still traversable.
        let mut dirs: BTreeSet<&Path> = BTreeSet::new();
        let entries = self
            .files
            .iter()
            .map(|f| f.path.as_path())
            .chain(self.links.iter().map(|(l, _)| l.as_path()))
            .chain(self.dirs.iter().map(|(d, _)| d.as_path()))
            .chain(self.roots.iter().map(PathBuf::as_path));
        for entry in entries {
            if let Some(parent) = entry.parent().filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(parent);
            }
        }
        dirs.extend(self.dirs.iter().map(|(d, _)| d.as_path()));
        let modes: HashMap<&Path, u32> = self
            .dirs
            .iter()
            .map(|(d, m)| (d.as_path(), *m))
            .chain(self.roots.iter().map(|r| (r.as_path(), 0o700)))
            .collect();
        let mut dirs: Vec<&Path> = dirs.into_iter().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            if let Some(mode) = modes.get(dir) {
                fs::set_permissions(dir, Permissions::from_mode(*mode))
                    .map_err(|e| local("set the mode of", dir, e))?;
            }
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| local("fsync", dir, e))?;
        }
        Ok(self.links.len() as u64)
    }
}

/// Downloads, checks and writes every part, at most `jobs` at once; returns the number of
/// parts, their stored size and the file bytes written.
async fn fetch_parts(
    store: &Store,
    manifest: &BackupManifest,
    plan: &Arc<Plan>,
    jobs: NonZeroUsize,
    cancel: &CancellationToken,
) -> Result<(u64, u64, u64)> {
    let mut tasks: JoinSet<Result<(u64, u64)>> = JoinSet::new();
    let (mut parts, mut downloaded, mut written) = (0, 0, 0);
    let mut add = |(d, w)| {
        parts += 1;
        downloaded += d;
        written += w;
    };
    for part in &manifest.parts {
        while tasks.len() >= jobs.get() {
            add(join_one(&mut tasks).await?);
        }
        if cancel.is_cancelled() {
            return Err(cancelled(&plan.label));
        }
        let key = layout::backup_part_key(&plan.label, &part.name).map_err(|reason| {
            Error::InvalidBackup {
                label: plan.label.clone(),
                reason: format!("part '{}' {reason}", part.name),
            }
        })?;
        let pieces = plan.pieces(part);
        let (store, plan, part, cancel) =
            (store.clone(), plan.clone(), part.clone(), cancel.clone());
        tasks.spawn(async move {
            let body = store
                .get(&key, None, &cancel)
                .await
                .map_err(|source| store_error("download", &key, &store, source))?
                .body;
            let stored = body.len() as u64;
            let written =
                blocking(move || plan.write_part(key.as_str(), &part, &body, &pieces)).await?;
            Ok((stored, written))
        });
    }
    while !tasks.is_empty() {
        add(join_one(&mut tasks).await?);
    }
    Ok((parts, downloaded, written))
}

/// Reads back and checks every file, at most `jobs` at once.
async fn check_files(
    plan: &Arc<Plan>,
    jobs: NonZeroUsize,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    for index in 0..plan.files.len() {
        while tasks.len() >= jobs.get() {
            join_one(&mut tasks).await?;
        }
        if cancel.is_cancelled() {
            return Err(cancelled(&plan.label));
        }
        let plan = plan.clone();
        tasks.spawn(async move { blocking(move || plan.check_file(index)).await });
    }
    while !tasks.is_empty() {
        join_one(&mut tasks).await?;
    }
    Ok(())
}

/// Waits for one task of a non-empty set.
async fn join_one<T: 'static>(tasks: &mut JoinSet<Result<T>>) -> Result<T> {
    match tasks.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(join)) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Some(Err(_)) | None => Err(Error::Internal {
            message: "an unpack task was cancelled".into(),
        }),
    }
}

fn cancelled(label: &str) -> Error {
    Error::Cancelled {
        operation: format!("restore of backup '{label}'"),
    }
}

fn local(action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::LocalIo {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` and its missing parents, `0700`; an existing directory is fine.
fn make_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| local("create directory", dir, e))
}

fn system_time(time: Timestamp) -> Option<SystemTime> {
    let micros = time.unix_micros();
    let offset = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    }
}

/// An offset inside a decoded part, which is in memory, so it fits.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("an offset inside a part held in memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::parts::tests::manifest_around;
    use crate::backup::parts::{PartOptions, PartWriter};
    use crate::tar::tests::header;
    use bytes::Bytes;
    use std::num::NonZeroU64;
    use std::os::unix::fs::MetadataExt;
    use walferry_store::{MemoryStore, PutMode, RetryConfig};

    const LABEL: &str = "20261125T050000Z";
    const OID: Oid = Oid(16385);

    /// One tar member with the given mode.
    fn member(path: &str, flag: u8, content: &[u8], link: &str, mode: u32) -> Vec<u8> {
        let mut h = header(path, flag, content.len() as u64, link);
        h[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h.extend_from_slice(content);
        h.resize(h.len().div_ceil(512) * 512, 0);
        h
    }

    /// (path, flag, content, link, mode) members, with the end-of-archive blocks.
    type Member<'a> = (&'a str, u8, &'a [u8], &'a str, u32);

    fn tar(members: &[Member<'_>]) -> Vec<u8> {
        let mut out: Vec<u8> = members
            .iter()
            .flat_map(|(p, f, c, l, m)| member(p, *f, c, l, *m))
            .collect();
        out.resize(out.len() + 1024, 0);
        out
    }

    fn content(len: u32, seed: u32) -> Vec<u8> {
        (0..len).map(|i| ((i * 7 + seed) % 253) as u8).collect()
    }

    struct Fixture {
        store: Store,
        manifest: BackupManifest,
        base: Vec<(String, Vec<u8>, u32)>,
        ts_file: Vec<u8>,
    }

    /// A backup with a tablespace, in 1000-byte parts; `tamper` may change a stored body.
    async fn fixture(tamper: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> Fixture {
        let big = content(5_000, 0);
        let control = content(1_777, 3);
        let ts_file = content(2_000, 9);
        let base_tar = tar(&[
            ("PG_VERSION", b'0', b"15\n", "", 0o640),
            ("base", b'5', b"", "", 0o750),
            ("base/1", b'5', b"", "", 0o700),
            ("base/1/1259", b'0', &big, "", 0o600),
            ("pg_tblspc", b'5', b"", "", 0o700),
            ("pg_tblspc/16385", b'2', b"", "/srv/ts1", 0o777),
            ("empty", b'0', b"", "", 0o600),
            ("global", b'5', b"", "", 0o700),
            ("global/pg_control", b'0', &control, "", 0o600),
        ]);
        let ts_tar = tar(&[
            ("PG_15_202209061", b'5', b"", "", 0o700),
            ("PG_15_202209061/5", b'5', b"", "", 0o700),
            ("PG_15_202209061/5/16386", b'0', &ts_file, "", 0o600),
        ]);
        let store = Store::memory(MemoryStore::new(), RetryConfig::default());
        let cancel = CancellationToken::new();
        let mut parts = Vec::new();
        let mut files = Vec::new();
        for (tablespace, data) in [(Some(OID), &ts_tar), (None, &base_tar)] {
            let options = PartOptions {
                part_size: NonZeroU64::new(1000).unwrap(),
                level: 3,
            };
            let mut writer = PartWriter::new(tablespace, options).unwrap();
            let mut stored = Vec::new();
            for chunk in data.chunks(777) {
                stored.extend(writer.feed(chunk).unwrap());
            }
            let (last, f, p) = writer.finish().unwrap();
            stored.extend(last);
            for part in stored {
                let key = layout::backup_part_key(LABEL, &part.name).unwrap();
                let body = tamper(&part.name, part.body);
                store
                    .put(&key, Bytes::from(body), PutMode::Create, &cancel)
                    .await
                    .unwrap();
            }
            parts.extend(p);
            files.extend(f);
        }
        let manifest = manifest_around(LABEL, OID, ts_tar.len() as u64, parts, files);
        Fixture {
            store,
            manifest,
            base: vec![
                ("PG_VERSION".into(), b"15\n".to_vec(), 0o640),
                ("base/1/1259".into(), big, 0o600),
                ("empty".into(), Vec::new(), 0o600),
                ("global/pg_control".into(), control, 0o600),
            ],
            ts_file,
        }
    }

    fn options(ts: &Path, jobs: usize) -> UnpackOptions {
        UnpackOptions {
            tablespace_targets: HashMap::from([(OID, ts.to_owned())]),
            jobs: NonZeroUsize::new(jobs).unwrap(),
            ..UnpackOptions::default()
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[tokio::test]
    async fn unpacks_files_directories_and_tablespace_links() {
        let fx = fixture(|_, body| body).await;
        for jobs in [1, 3] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("pgdata");
            let ts = dir.path().join("ts");
            let cancel = CancellationToken::new();
            let options = options(&ts, jobs);
            let stats = unpack(&fx.store, &fx.manifest, &target, &options, &cancel)
                .await
                .unwrap();
            let progress = options.progress.snapshot();
            assert_eq!(progress.total_files, 5);
            assert_eq!(progress.written_files, 5);
            assert_eq!(progress.checked_files, 5);
            assert_eq!(progress.written_bytes, stats.written_bytes);
            assert_eq!(progress.total_bytes, stats.written_bytes);

            assert_eq!(stats.files, 5);
            assert_eq!(stats.directories, 6);
            assert_eq!(stats.symlinks, 1);
            assert_eq!(stats.parts, fx.manifest.parts.len() as u64);
            assert_eq!(stats.downloaded_bytes, fx.manifest.totals.compressed_bytes);
            assert_eq!(stats.written_bytes, 5_000 + 1_777 + 3 + 2_000);

            for (path, bytes, m) in &fx.base {
                let path = target.join(path);
                assert_eq!(&fs::read(&path).unwrap(), bytes, "{}", path.display());
                assert_eq!(mode(&path), *m, "{}", path.display());
                let mtime = fs::metadata(&path).unwrap().mtime();
                assert_eq!(mtime, 0o14707013200, "{}", path.display());
            }
            let ts_file = ts.join("PG_15_202209061/5/16386");
            assert_eq!(fs::read(ts_file).unwrap(), fx.ts_file);
            assert_eq!(mode(&target), 0o700);
            assert_eq!(mode(&ts), 0o700);
            assert_eq!(mode(&target.join("base")), 0o750);
            assert_eq!(mode(&target.join("base/1")), 0o700);
            assert!(target.join("global").is_dir());
            let link = target.join("pg_tblspc/16385");
            assert_eq!(fs::read_link(&link).unwrap(), ts);
            assert!(link.join("PG_15_202209061/5/16386").is_file());
        }
    }

    #[tokio::test]
    async fn refuses_non_empty_targets_unless_allowed() {
        let fx = fixture(|_, body| body).await;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pgdata");
        let ts = dir.path().join("ts");
        let cancel = CancellationToken::new();
        fs::create_dir(&target).unwrap();
        fs::write(target.join("stray"), b"x").unwrap();
        let err = unpack(&fx.store, &fx.manifest, &target, &options(&ts, 2), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TargetNotEmpty { .. }), "{err}");
        assert!(err.to_string().contains("pgdata"), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(!ts.exists(), "nothing is written before the check");

        let mut allow = options(&ts, 2);
        allow.allow_non_empty = true;
        unpack(&fx.store, &fx.manifest, &target, &allow, &cancel)
            .await
            .unwrap();
        // A tablespace directory that holds files is refused too; again over itself is fine.
        fs::remove_file(target.join("stray")).unwrap();
        let err = unpack(&fx.store, &fx.manifest, &target, &options(&ts, 2), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TargetNotEmpty { .. }), "{err}");
        unpack(&fx.store, &fx.manifest, &target, &allow, &cancel)
            .await
            .unwrap();
        assert_eq!(fs::read(target.join("PG_VERSION")).unwrap(), b"15\n");

        // A target for a tablespace the backup lacks is a mistake.
        let mut unknown = options(&ts, 2);
        unknown
            .tablespace_targets
            .insert(Oid(1), dir.path().join("x"));
        let err = unpack(&fx.store, &fx.manifest, &target, &unknown, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidBackup { .. }), "{err}");
    }

    #[tokio::test]
    async fn refuses_corrupt_parts_naming_them() {
        // Another valid frame: decodes, but its CRC-32 is not the manifest's.
        let other = walferry_codec::encode(&[7u8; 1000], 3).unwrap();
        let swapped = fixture(move |name, body| {
            if name == "base.tar.0002.zst" {
                other.clone()
            } else {
                body
            }
        })
        .await;
        // Damaged bytes: the frame itself is refused.
        let damaged = fixture(|name, mut body| {
            if name == "16385.tar.0001.zst" {
                let mid = body.len() / 2;
                body[mid] ^= 0xff;
            }
            body
        })
        .await;
        for (fx, key) in [
            (swapped, "backups/20261125T050000Z/base.tar.0002.zst"),
            (damaged, "backups/20261125T050000Z/16385.tar.0001.zst"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let cancel = CancellationToken::new();
            let err = unpack(
                &fx.store,
                &fx.manifest,
                &dir.path().join("pgdata"),
                &options(&dir.path().join("ts"), 2),
                &cancel,
            )
            .await
            .unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
            assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{err}");
        }
    }

    #[tokio::test]
    async fn stops_when_cancelled() {
        let fx = fixture(|_, body| body).await;
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = unpack(
            &fx.store,
            &fx.manifest,
            &dir.path().join("pgdata"),
            &options(&dir.path().join("ts"), 2),
            &cancel,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Cancelled, "{err}");
    }
}
