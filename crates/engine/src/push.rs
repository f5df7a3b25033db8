//! `push`: archive one WAL file. PostgreSQL's `archive_command`.

use std::fs::File;
use std::io::Read;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};
use walferry_codec as codec;
use walferry_manifest::{ClusterIdentity, RepoDescriptor, io as repo_io, layout};
use walferry_store::{ArchiveStore, CancellationToken, ObjectKey, PutMode, Store};
use walferry_wal::{ExpectedSegment, SegmentHeader, SegmentName, TimelineHistory, WalFileName};

use crate::error::{Error, Result};
use crate::ledger::{Claim, FileId, LEDGER_DIR, Ledger};
use crate::{blocking, store_error};

/// The zstd level WAL is compressed at unless told otherwise. Level 3 is zstd's own default:
/// on pgbench WAL it compresses ~10% smaller than level 1 for ~1.5x the CPU, and decompresses
/// at the same speed (`../benches/README.md` has the figures).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// Uploads the background worker runs at once by default. Eight keep both cores of a small
/// host compressing while earlier objects are still on their way over a 20 ms link; memory is
/// bounded by the byte budget, not by this (`benches/README.md`, "archive").
pub const DEFAULT_PUSH_JOBS: NonZeroUsize = NonZeroUsize::new(8).expect("8 is not zero");

/// Starts a background worker ([`push_worker`]) for a `pg_wal`, unless one runs.
pub type StartWorker = Arc<dyn Fn() + Send + Sync>;

/// How to push.
#[derive(Clone)]
pub struct PushOptions {
    /// The zstd compression level.
    pub compression_level: i32,
    /// Uploads the background worker runs at once; 1: no worker.
    pub jobs: NonZeroUsize,
    /// Called once `%p` is durable, when `%p` is in a `pg_wal` and `jobs` > 1, to start the
    /// worker that uploads the other ready files.
    pub start_worker: Option<StartWorker>,
}

impl std::fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("compression_level", &self.compression_level)
            .field("jobs", &self.jobs)
            .field("start_worker", &self.start_worker.is_some())
            .finish()
    }
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            jobs: DEFAULT_PUSH_JOBS,
            start_worker: None,
        }
    }
}

/// What a successful push did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file is now durable in the repository.
    Stored {
        /// The WAL file name.
        name: String,
        /// Its size.
        original_bytes: u64,
        /// The stored object's size.
        stored_bytes: u64,
    },
    /// The repository already held this file with identical content.
    AlreadyArchived {
        /// The WAL file name.
        name: String,
    },
    /// An earlier push stored this very file (the ledger in `pg_wal/walferry-push/` says so)
    /// and nothing was sent.
    Recorded {
        /// The WAL file name.
        name: String,
    },
}

/// Whether the ledger beside `path` records it as durable in the repository `repo`
/// ([`Store::identity`]) with the file unchanged since; when another process (the background
/// worker) is uploading it right now, after waiting for that upload to end. A handful of
/// system calls and no runtime: `push`'s answer to PostgreSQL for a file uploaded ahead.
pub fn already_recorded(path: &Path, repo: &str) -> bool {
    let Some(ledger) = Ledger::beside(path, repo) else {
        return false;
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if WalFileName::parse(name).is_err() {
        return false;
    }
    let recorded = || FileId::at(path).is_ok_and(|id| ledger.is_durable(name, &id));
    if recorded() {
        return true;
    }
    if ledger.is_claimed(name) {
        if let Ok(Some(claim)) = ledger.claim(name, true) {
            drop(claim);
        }
        return recorded();
    }
    false
}

/// Archives the WAL file at `path`: checks it (name, page header, size, cluster), checks (or
/// creates) the repository descriptor, compresses it and stores it with a create-only put.
/// Returns only once the object is durable, or when the repository already holds identical
/// content under its name.
///
/// When `path` is in a `pg_wal`, the file is claimed in the ledger ([`crate::ledger`]) while
/// it is uploaded and recorded there once durable; a file another process is uploading is
/// waited for. Then, when `jobs` > 1 and `start_worker` is set, `start_worker` is called to
/// start the worker ([`push_worker`]) that uploads the other ready files.
///
/// A different object under the same name is [`Error::Conflict`] and is never replaced;
/// history files are never replaced either.
pub async fn push(
    store: &Store,
    path: &Path,
    options: &PushOptions,
    cancel: &CancellationToken,
) -> Result<PushOutcome> {
    let name = wal_name_of(path)?;
    let name_text = name.to_string();
    let ledger = Ledger::beside(path, store.identity());
    let recorded =
        |ledger: &Ledger| FileId::at(path).is_ok_and(|id| ledger.is_durable(&name_text, &id));
    let recorded_outcome = || PushOutcome::Recorded {
        name: name_text.clone(),
    };
    if ledger.as_ref().is_some_and(recorded) {
        return Ok(recorded_outcome());
    }

    // Everything about the file is checked before anything is written, the ledger included.
    let own = check_file(path.to_owned(), name).await?;
    let repo = store.location().to_owned();
    let Some(descriptor) = load_or_create_descriptor(store, own.identity.as_ref(), cancel).await?
    else {
        return Err(Error::NoIdentity {
            repo,
            name: name_text,
        });
    };
    if let Some(identity) = &own.identity {
        descriptor
            .check(identity)
            .map_err(|mismatch| Error::WrongCluster {
                name: name_text.clone(),
                repo: repo.clone(),
                mismatch,
            })?;
    }

    // Another push may be uploading this very file ahead: wait for it, then look again.
    let claim = match &ledger {
        Some(ledger) => claim(ledger, &name_text, true).await?,
        None => None,
    };
    if ledger.as_ref().is_some_and(recorded) {
        return Ok(recorded_outcome());
    }

    let prepared = compress(own, options.compression_level, &Budget::new()).await?;
    let outcome = store_prepared(store, path, prepared, cancel).await?;
    if let (Some(ledger), Some(claim)) = (&ledger, &claim) {
        record(ledger, claim, &name_text, path).await;
    }
    drop(claim);
    // Only now: a push that fails leaves nothing behind, no worker either.
    if ledger.is_some()
        && options.jobs.get() > 1
        && let Some(start) = &options.start_worker
    {
        start();
    }
    Ok(outcome)
}

/// Claims `name` in the ledger, off the async threads (waiting may take a whole upload).
async fn claim(ledger: &Ledger, name: &str, wait: bool) -> Result<Option<Claim>> {
    let ledger = ledger.clone();
    let name = name.to_owned();
    blocking(move || {
        ledger.claim(&name, wait).map_err(|source| Error::LocalIo {
            action: "lock",
            path: ledger
                .pg_wal()
                .join(LEDGER_DIR)
                .join(format!("{name}.lock")),
            source,
        })
    })
    .await
}

/// Records `name` as durable, unless the file changed since it was read (then the next push
/// simply uploads and compares it again). A failure to record costs only that too.
async fn record(ledger: &Ledger, claim: &Claim, name: &str, path: &Path) {
    if let Err(e) = FileId::at(path).and_then(|id| ledger.record(claim, name, &id)) {
        debug!(file = name, error = %e, "could not record the file as archived");
    }
}

/// Up to `want` files marked ready, not recorded, not `skip`ped, that this process could
/// claim, in the archiver's order.
fn pick_ahead(
    ledger: &Ledger,
    skip: impl Fn(&str) -> bool,
    want: usize,
) -> Vec<(WalFileName, Claim)> {
    let Ok(ready) = ledger.ready_files() else {
        return Vec::new();
    };
    let mut picked = Vec::new();
    for name in ready {
        if picked.len() == want {
            break;
        }
        let text = name.to_string();
        if skip(&text) {
            continue;
        }
        let path = ledger.pg_wal().join(&text);
        let recorded = |ledger: &Ledger| {
            FileId::at(&path)
                .map(|id| ledger.is_durable(&text, &id))
                .unwrap_or(true)
        };
        if recorded(ledger) {
            continue;
        }
        // Claimed by another push: it is that one's to upload.
        let Ok(Some(claim)) = ledger.claim(&text, false) else {
            continue;
        };
        if !recorded(ledger) {
            picked.push((name, claim));
        }
    }
    picked
}

/// Uploads a file marked ready and records it. Its failure is PostgreSQL's own call's to
/// report; here it is only logged at debug level. Returns whether the file is now recorded.
#[allow(clippy::too_many_arguments)]
async fn push_ahead(
    store: &Store,
    ledger: &Ledger,
    name: WalFileName,
    claim: Claim,
    descriptor: &RepoDescriptor,
    level: i32,
    budget: &Budget,
    cancel: &CancellationToken,
) -> bool {
    let text = name.to_string();
    let path = ledger.pg_wal().join(&text);
    let result = async {
        let checked = check_file(path.clone(), name).await?;
        if let Some(identity) = &checked.identity {
            descriptor
                .check(identity)
                .map_err(|mismatch| Error::WrongCluster {
                    name: text.clone(),
                    repo: store.location().to_owned(),
                    mismatch,
                })?;
        }
        let prepared = compress(checked, level, budget).await?;
        store_prepared(store, &path, prepared, cancel).await
    }
    .await;
    match result {
        Ok(outcome) => {
            debug!(file = %text, ?outcome, "archived ahead");
            record(ledger, &claim, &text, &path).await;
            true
        }
        Err(e) => {
            debug!(file = %text, error = %e, "could not archive ahead; PostgreSQL's call will retry");
            false
        }
    }
}

/// How often an idle worker looks for new ready files.
const WORKER_POLL: Duration = Duration::from_millis(50);

/// How long a worker leaves a file alone after failing to upload it.
const WORKER_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What a background worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Files now durable (or found already archived) and recorded.
    pub stored: usize,
    /// Uploads that failed (each left to PostgreSQL's own call, or to a later try).
    pub failed: usize,
}

/// The background worker `push` starts: uploads the files PostgreSQL marks ready in the
/// `pg_wal` holding `wal_path`, as they appear, `jobs` at once, oldest first, and records
/// each once durable, so that PostgreSQL's calls find them recorded. Returns when no file has
/// been ready for `idle`, or at once (`None`) when another worker runs or `wal_path` is not in
/// a `pg_wal`; `None` too when the repository still has no descriptor after `idle` (the push
/// that started the worker writes it).
///
/// Claims keep it and the pushes PostgreSQL runs from uploading a file twice; it never
/// touches `archive_status/`.
pub async fn push_worker(
    store: &Store,
    wal_path: &Path,
    options: &PushOptions,
    idle: Duration,
    cancel: &CancellationToken,
) -> Result<Option<WorkerReport>> {
    let Some(ledger) = Ledger::beside(wal_path, store.identity()) else {
        return Ok(None);
    };
    let lock_path = ledger.pg_wal().join(LEDGER_DIR).join("worker");
    let lock = {
        let ledger = ledger.clone();
        let path = lock_path.clone();
        blocking(move || {
            ledger.lock_worker().map_err(|source| Error::LocalIo {
                action: "lock",
                path,
                source,
            })
        })
        .await?
    };
    let Some(_lock) = lock else {
        return Ok(None);
    };
    // The push that started this worker writes the descriptor of a new repository.
    let waiting = Instant::now();
    let descriptor = loop {
        if let Some(d) = repo_io::load_descriptor(store, cancel)
            .await
            .map_err(|e| manifest_error(e, store.location()))?
        {
            break d;
        }
        if waiting.elapsed() >= idle || cancel.is_cancelled() {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    debug!(pg_wal = %ledger.pg_wal().display(), jobs = options.jobs.get(), "push worker started");
    let level = options.compression_level;
    let budget = Budget::new();
    let mut report = WorkerReport::default();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut resting: std::collections::HashMap<String, Instant> = Default::default();
    let mut stored_here: std::collections::HashSet<String> = Default::default();
    let mut last_work = Instant::now();
    let mut last_sweep: Option<Instant> = None;
    while !cancel.is_cancelled() {
        if in_flight.len() < options.jobs.get() {
            let now = Instant::now();
            resting.retain(|_, until| *until > now);
            let sweep = last_sweep.is_none_or(|at| at.elapsed() > Duration::from_secs(2));
            if sweep {
                last_sweep = Some(now);
            }
            let want = options.jobs.get() - in_flight.len();
            // Files this worker stored stay ready until PostgreSQL's call: no need to read
            // their records again at every pick.
            let mut skip: std::collections::HashSet<String> = resting.keys().cloned().collect();
            skip.extend(stored_here.iter().cloned());
            let ledger_for_pick = ledger.clone();
            let (picked, still_ready) = blocking(move || {
                let still_ready = sweep.then(|| {
                    ledger_for_pick.sweep();
                    ledger_for_pick.ready_files().unwrap_or_default()
                });
                Ok((
                    pick_ahead(&ledger_for_pick, |n| skip.contains(n), want),
                    still_ready,
                ))
            })
            .await?;
            if let Some(ready) = still_ready {
                let ready: std::collections::HashSet<String> =
                    ready.iter().map(ToString::to_string).collect();
                stored_here.retain(|n| ready.contains(n));
            }
            for (name, claim) in picked {
                last_work = Instant::now();
                let text = name.to_string();
                let upload = push_ahead(
                    store,
                    &ledger,
                    name,
                    claim,
                    &descriptor,
                    level,
                    &budget,
                    cancel,
                );
                in_flight.push(async move { (text, upload.await) });
            }
        }
        if in_flight.is_empty() {
            if last_work.elapsed() >= idle {
                break;
            }
            tokio::time::sleep(WORKER_POLL).await;
            continue;
        }
        tokio::select! {
            Some((name, stored)) = futures::StreamExt::next(&mut in_flight) => {
                last_work = Instant::now();
                if stored {
                    report.stored += 1;
                    stored_here.insert(name);
                } else {
                    report.failed += 1;
                    resting.insert(name, Instant::now() + WORKER_RETRY_AFTER);
                }
            }
            () = tokio::time::sleep(WORKER_POLL) => {}
        }
    }
    // Cancelled: let the uploads in flight end (each is bounded by the retry budget).
    while let Some((_, stored)) = futures::StreamExt::next(&mut in_flight).await {
        if stored {
            report.stored += 1;
        } else {
            report.failed += 1;
        }
    }
    debug!(
        stored = report.stored,
        failed = report.failed,
        "push worker stopped"
    );
    Ok(Some(report))
}

/// A WAL file opened and checked, not yet read whole.
struct Checked {
    name: WalFileName,
    path: PathBuf,
    file: File,
    /// The cluster the file says it belongs to, when it says.
    identity: Option<ClusterIdentity>,
    /// The file as it was opened.
    id: FileId,
}

/// Opens the file at `path` and checks what can be checked without reading it whole: its
/// header (or a history file's text), its size, its cluster.
async fn check_file(path: PathBuf, name: WalFileName) -> Result<Checked> {
    blocking(move || {
        let io = |source| Error::LocalIo {
            action: "read",
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let id = FileId::of(&file).map_err(io)?;
        let identity = identify(&name, &file, id.size(), &path)?;
        Ok(Checked {
            name,
            path,
            file,
            identity,
            id,
        })
    })
    .await
}

/// A WAL file read, checked and compressed, ready to upload, with its share of the budget.
struct Prepared {
    name: WalFileName,
    /// The file as it was read.
    id: FileId,
    encoded: Vec<u8>,
    _held: OwnedSemaphorePermit,
}

/// The most bytes of compressed objects one push holds at once, waiting for or in upload, plus
/// [`COMPRESSING_KIB`] for each file being compressed. It bounds `push`'s memory whatever
/// `--jobs` is; 32 MiB keeps eight uploads of ordinary WAL (compressed 3 to 10 times) in
/// flight.
const BUDGET_KIB: u32 = 32 << 10;

/// What a file being compressed holds of the budget until its compressed size is known: a
/// zstd frame's worth of content ([`codec::FRAME_LEN`], 4 MiB) read ahead of the compressor, the
/// compressor's tables, and the start of the output.
const COMPRESSING_KIB: u64 = 5 << 10;

/// Files compressed at once, at most: one per core, up to four.
const MAX_COMPRESSING: usize = 4;

/// The most one object holds of the budget: with every other compression holding its
/// [`COMPRESSING_KIB`], what is left still lets this one have it, so no wait can last for
/// ever (larger objects, of larger segments, count for this much).
const MAX_OBJECT_KIB: usize =
    BUDGET_KIB as usize - (MAX_COMPRESSING - 1) * COMPRESSING_KIB as usize;

/// [`BUDGET_KIB`], shared by the files of one push, and a slot per core for compressing: more
/// compressions at once would not go faster, and each holds its own buffers.
struct Budget {
    /// Kibibytes of [`BUDGET_KIB`].
    kib: Arc<Semaphore>,
    /// Compressions at once.
    compressing: Semaphore,
    /// Encoders not in use, at most one per compression slot: their buffers serve file after
    /// file instead of being allocated and freed for each.
    encoders: std::sync::Mutex<Vec<codec::BatchEncoder>>,
}

impl Budget {
    fn new() -> Budget {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Budget {
            kib: Arc::new(Semaphore::new(BUDGET_KIB as usize)),
            compressing: Semaphore::new(cores.min(MAX_COMPRESSING)),
            encoders: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// An encoder at `level`: a kept one, or a new one.
    fn encoder(&self, level: i32) -> codec::Result<codec::BatchEncoder> {
        let kept = self
            .encoders
            .lock()
            .ok()
            .and_then(|mut kept| kept.pop())
            .filter(|encoder| encoder.level() == level);
        kept.map_or_else(|| codec::BatchEncoder::new(level), Ok)
    }

    /// Keeps `encoder` for the next file.
    fn keep(&self, encoder: codec::BatchEncoder) {
        if let Ok(mut kept) = self.encoders.lock() {
            kept.push(encoder);
        }
    }

    /// Holds `bytes` of the budget (all of it, for a file larger than the budget).
    async fn hold(&self, bytes: u64) -> Result<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, BUDGET_KIB);
        Arc::clone(&self.kib)
            .acquire_many_owned(kib)
            .await
            .map_err(|_| Error::Internal {
                message: "the push budget was closed".into(),
            })
    }
}

/// Reads a checked file a zstd frame's worth at a time and compresses each in one pass, holding
/// its share of the budget while it does and then only the compressed object's. The file must
/// not change while it is read.
///
/// A frame at a time, not whole: a whole 16 MiB segment per file, freed and allocated again, is
/// what the allocator keeps in its per-thread arenas, and a worker's memory grew to 178 MiB that
/// way; 4 MiB at a time stays near the budget (`benches/README.md`, "archive").
async fn compress(checked: Checked, level: i32, budget: &Budget) -> Result<Prepared> {
    // The slot first: only files being compressed hold a compressing share of the budget.
    let core = budget
        .compressing
        .acquire()
        .await
        .map_err(|_| Error::Internal {
            message: "the push's compression slots were closed".into(),
        })?;
    let mut held = budget.hold(COMPRESSING_KIB * 1024).await?;
    let mut encoder = budget.encoder(level).map_err(|source| Error::Encode {
        name: checked.name.to_string(),
        source,
    })?;
    let (encoder, prepared) = blocking(move || {
        let prepared = prepare(checked, &mut encoder);
        Ok((encoder, prepared))
    })
    .await?;
    budget.keep(encoder);
    let (name, id, encoded) = prepared?;
    // Hold what the object needs: give back the spare, or wait for more (a file that hardly
    // compresses; its bytes exist already, but nothing new starts until they fit).
    let need = usize::try_from((encoded.len() as u64).div_ceil(1024))
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_OBJECT_KIB);
    let have = held.num_permits();
    if have > need {
        drop(held.split(have - need));
    } else if need > have {
        held.merge(budget.hold((need - have) as u64 * 1024).await?);
    }
    // Only now: a compression waiting for its share still counts as one.
    drop(core);
    Ok(Prepared {
        name,
        id,
        encoded,
        _held: held,
    })
}

/// Reads and compresses a checked file with `encoder`, and checks that the file did not change
/// meanwhile.
fn prepare(
    checked: Checked,
    encoder: &mut codec::BatchEncoder,
) -> Result<(WalFileName, FileId, Vec<u8>)> {
    let Checked {
        name,
        path,
        file,
        id,
        ..
    } = checked;
    let io = |source| Error::LocalIo {
        action: "read",
        path: path.clone(),
        source,
    };
    let changed = || Error::InvalidWal {
        name: name.to_string(),
        reason: "the file changed while it was being read".into(),
    };
    // One pass: read a frame's worth at a time, checksummed and compressed on the way.
    let encoded = encoder
        .encode_from(std::io::Read::take(&file, id.size()), id.size())
        .map_err(|e| match e {
            codec::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => changed(),
            codec::Error::Io(e) => io(e),
            source => Error::Encode {
                name: name.to_string(),
                source,
            },
        })?;
    if FileId::of(&file).map_err(io)? != id {
        return Err(changed());
    }
    Ok((name, id, encoded))
}

/// The piece size files are read in.
const PIECE: usize = 1 << 20;

/// Calls `f` with the first `len` bytes of `file`, in order, in pieces; a file shorter than
/// `len` is an error.
fn for_each_piece(
    file: &File,
    len: u64,
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; PIECE.min(usize::try_from(len).unwrap_or(PIECE))];
    let mut offset = 0u64;
    while offset < len {
        let n = usize::try_from(len - offset).map_or(buf.len(), |left| left.min(buf.len()));
        file.read_exact_at(&mut buf[..n], offset)?;
        f(&buf[..n])?;
        offset += n as u64;
    }
    Ok(())
}

/// Stores a prepared file with a create-only put; an object already under its name is
/// compared with the file at `path`.
async fn store_prepared(
    store: &Store,
    path: &Path,
    prepared: Prepared,
    cancel: &CancellationToken,
) -> Result<PushOutcome> {
    let key = layout::wal_key(&prepared.name);
    let name = prepared.name.to_string();
    let stored_bytes = prepared.encoded.len() as u64;
    match store
        .put(&key, Bytes::from(prepared.encoded), PutMode::Create, cancel)
        .await
    {
        Ok(()) => Ok(PushOutcome::Stored {
            name,
            original_bytes: prepared.id.size(),
            stored_bytes,
        }),
        Err(e) if e.is_already_exists() => {
            compare_existing(store, &key, &name, path, prepared.id, cancel).await
        }
        Err(source) => Err(store_error("upload", &key, store, source)),
    }
}

/// The archive already has an object under this name: identical content is success, anything
/// else is a conflict. One download decides it; it is decoded and compared piece by piece.
async fn compare_existing(
    store: &Store,
    key: &ObjectKey,
    name: &str,
    path: &Path,
    id: FileId,
    cancel: &CancellationToken,
) -> Result<PushOutcome> {
    let existing = store
        .get(key, None, cancel)
        .await
        .map_err(|source| store_error("download existing", key, store, source))?;
    let k = key.to_string();
    let path = path.to_owned();
    let same = blocking(move || {
        let file = File::open(&path).map_err(|source| Error::LocalIo {
            action: "read",
            path: path.clone(),
            source,
        })?;
        match same_content(&existing.body, &file, id.size()) {
            Ok(same) => Ok(same),
            // Longer than ours: not the same content, whatever else it is.
            Err(codec::Error::TooLarge { .. }) => Ok(false),
            Err(codec::Error::Io(source)) => Err(Error::LocalIo {
                action: "read",
                path,
                source,
            }),
            Err(source) => Err(Error::Corrupt { key: k, source }),
        }
    })
    .await?;
    if same {
        warn!(
            "WAL file '{name}' already exists in the archive with the same content; HINT: this is expected when PostgreSQL archives a file again after a crash"
        );
        Ok(PushOutcome::AlreadyArchived {
            name: name.to_owned(),
        })
    } else {
        Err(Error::Conflict {
            name: name.to_owned(),
            repo: store.location().to_owned(),
        })
    }
}

/// Whether `object` decodes to exactly the first `len` bytes of `file` (which has `len`).
/// Decoding errors of the object are returned; a read error of the file is `Error::Io`.
fn same_content(object: &[u8], file: &File, len: u64) -> codec::Result<bool> {
    let mut decoder = codec::Decoder::with_limit(object, len)?;
    let mut theirs = vec![0u8; PIECE];
    let mut differs = false;
    let read = for_each_piece(file, len, |ours| {
        if differs {
            return Ok(());
        }
        let got = read_up_to(&mut decoder, &mut theirs[..ours.len()])?;
        differs = got != ours.len() || theirs[..got] != *ours;
        Ok(())
    });
    match read {
        Ok(()) => {}
        Err(e) => {
            return Err(match codec::Error::from_io(&e) {
                Some(_) => codec::Error::from(e),
                None => codec::Error::Io(e),
            });
        }
    }
    if differs {
        // Shorter or different: still, a damaged object is reported as such.
        decoder.finish()?;
        return Ok(false);
    }
    let mut one = [0u8; 1];
    if read_up_to(&mut decoder, &mut one)? != 0 {
        return Ok(false);
    }
    decoder.finish()?;
    Ok(true)
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn wal_name_of(path: &Path) -> Result<WalFileName> {
    let not_wal = |reason: String| Error::NotAWalPath {
        path: path.to_owned(),
        reason,
    };
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| not_wal("the path has no file name".into()))?;
    WalFileName::parse(file_name).map_err(|e| not_wal(e.to_string()))
}

/// Which cluster a file belongs to, when that can be known: segments carry it in their first
/// page header; for history and backup history files it is read from a segment beside them in
/// `pg_wal`. Also validates the file's own content: a segment's header, name and size; a
/// history file's text.
fn identify(
    name: &WalFileName,
    file: &File,
    len: u64,
    path: &Path,
) -> Result<Option<ClusterIdentity>> {
    let invalid = |reason: String| Error::InvalidWal {
        name: name.to_string(),
        reason,
    };
    let read_error = |source| Error::LocalIo {
        action: "read",
        path: path.to_owned(),
        source,
    };
    match name {
        WalFileName::Segment(seg) | WalFileName::Partial(seg) => {
            let mut first = [0u8; walferry_wal::LONG_HEADER_LEN];
            let got = usize::try_from(len).map_or(first.len(), |len| len.min(first.len()));
            file.read_exact_at(&mut first[..got], 0)
                .map_err(read_error)?;
            let header = SegmentHeader::parse(&first[..got]).map_err(|e| invalid(e.to_string()))?;
            header
                .check(&ExpectedSegment {
                    name: *seg,
                    system_identifier: None,
                    segment_size: None,
                    pg_version: None,
                })
                .map_err(|e| invalid(e.to_string()))?;
            if len != header.segment_size.bytes() {
                return Err(invalid(format!(
                    "the file is {len} bytes but its header says segments are {} bytes",
                    header.segment_size.bytes()
                )));
            }
            Ok(Some(ClusterIdentity {
                system_identifier: header.system_identifier,
                pg_version: header.pg_version,
                wal_segment_size: header.segment_size,
            }))
        }
        WalFileName::History(tli) => {
            if len > MAX_HISTORY_BYTES {
                return Err(invalid(format!(
                    "a timeline history file of {len} bytes is not one PostgreSQL writes"
                )));
            }
            let mut data = vec![0u8; len as usize];
            file.read_exact_at(&mut data, 0).map_err(read_error)?;
            let text = std::str::from_utf8(&data)
                .map_err(|_| invalid("a timeline history file must be text".into()))?;
            TimelineHistory::parse(*tli, text).map_err(|e| invalid(e.to_string()))?;
            Ok(identity_from_pg_wal(path))
        }
        WalFileName::BackupHistory { .. } => Ok(identity_from_pg_wal(path)),
    }
}

/// The largest timeline history file push accepts: a line per ancestor timeline, a few
/// hundred bytes each.
const MAX_HISTORY_BYTES: u64 = 16 << 20;

/// Reads the identity from the newest segment in the directory holding `path` (PostgreSQL's
/// `pg_wal`). `None` when there is no readable segment there.
fn identity_from_pg_wal(path: &Path) -> Option<ClusterIdentity> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    newest_segment_identity(&dir)
}

fn newest_segment_identity(dir: &Path) -> Option<ClusterIdentity> {
    use std::io::Read;
    let mut segments: Vec<(SegmentName, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            match WalFileName::parse(&name).ok()? {
                WalFileName::Segment(seg) => Some((seg, e.path())),
                _ => None,
            }
        })
        .collect();
    segments.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (_, path) in segments.into_iter().take(4) {
        let mut first = vec![0u8; walferry_wal::LONG_HEADER_LEN];
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        if file.read_exact(&mut first).is_err() {
            continue;
        }
        if let Ok(header) = SegmentHeader::parse(&first) {
            return Some(ClusterIdentity {
                system_identifier: header.system_identifier,
                pg_version: header.pg_version,
                wal_segment_size: header.segment_size,
            });
        }
    }
    None
}

/// The repository's descriptor, created from `identity` with a create-only put when the
/// repository has none yet (the first push or backup). `None` when there is none and no
/// identity to create it from.
pub(crate) async fn load_or_create_descriptor(
    store: &Store,
    identity: Option<&ClusterIdentity>,
    cancel: &CancellationToken,
) -> Result<Option<RepoDescriptor>> {
    let repo = store.location();
    if let Some(d) = repo_io::load_descriptor(store, cancel)
        .await
        .map_err(|e| manifest_error(e, repo))?
    {
        return Ok(Some(d));
    }
    let Some(identity) = identity else {
        return Ok(None);
    };
    let created = repo_io::create_descriptor(store, &RepoDescriptor::new(*identity), cancel)
        .await
        .map_err(|e| match manifest_error(e, repo) {
            Error::Store {
                key, repo, source, ..
            } => Error::Store {
                action: "create descriptor",
                key,
                repo,
                source,
            },
            other => other,
        })?;
    info!(
        repo = %repo,
        system_identifier = created.system_identifier,
        "created repository descriptor"
    );
    Ok(Some(created))
}

/// Maps a failure to load a repository's catalog ([`repo_io::load_catalog`]).
pub(crate) fn catalog_error(e: repo_io::Error, repo: &str) -> Error {
    match e {
        repo_io::Error::NoDescriptor { .. } => Error::NoDescriptor {
            repo: repo.to_owned(),
        },
        repo_io::Error::HistoryCorrupt { key, source } => Error::Corrupt { key, source },
        e @ (repo_io::Error::HistoryInvalid { .. }
        | repo_io::Error::Manifest { .. }
        | repo_io::Error::ManifestLabel { .. }) => Error::BadCatalog {
            repo: repo.to_owned(),
            message: e.to_string(),
        },
        other => manifest_error(other, repo),
    }
}

pub(crate) fn manifest_error(e: repo_io::Error, repo: &str) -> Error {
    match e {
        repo_io::Error::Store(source) => Error::Store {
            action: "read descriptor",
            key: layout::descriptor_key().to_string(),
            repo: repo.to_owned(),
            source: Box::new(source),
        },
        repo_io::Error::Descriptor { source, .. } => Error::BadDescriptor {
            repo: repo.to_owned(),
            source,
        },
        other => Error::Store {
            action: "read descriptor",
            key: layout::descriptor_key().to_string(),
            repo: repo.to_owned(),
            source: Box::new(walferry_store::Error::InvalidConfig {
                message: other.to_string(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use walferry_store::{ArchiveStore, Fault, FaultError, FaultOp, MemoryStore, RetryConfig};

    use super::*;
    use crate::ErrorKind;

    const SEGMENT: &str = "00000001000000000000000C";

    /// Pushes the committed pgbench segment (from a directory that is not a `pg_wal`) into a
    /// memory store with quick retries that holds the descriptor but not the segment, once
    /// `faults` of its puts are injected. Returns the outcome and the store.
    async fn push_under(faults: &[(FaultError, u32, bool)]) -> (Result<PushOutcome>, MemoryStore) {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/wal")
            .join(SEGMENT);
        let path = dir.path().join(SEGMENT);
        std::fs::copy(fixture, &path).unwrap();
        let retry = RetryConfig {
            max_attempts: NonZeroU32::new(4).unwrap(),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            budget: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        };
        let memory = MemoryStore::new();
        let store = Store::memory(memory.clone(), retry);
        let cancel = CancellationToken::new();
        let options = PushOptions::default();
        push(&store, &path, &options, &cancel).await.unwrap();
        memory.delete(&segment_key(), &cancel).await.unwrap();
        for &(error, times, after) in faults {
            memory.inject(Fault {
                op: FaultOp::Put,
                times,
                error,
                after,
            });
        }
        (push(&store, &path, &options, &cancel).await, memory)
    }

    fn segment_key() -> ObjectKey {
        layout::wal_key(&WalFileName::parse(SEGMENT).unwrap())
    }

    #[tokio::test]
    async fn failed_uploads_are_retried() {
        let (outcome, memory) = push_under(&[
            (FaultError::Transient, 1, false),
            (FaultError::Timeout, 1, false),
        ])
        .await;
        let outcome = outcome.unwrap();
        assert!(matches!(outcome, PushOutcome::Stored { .. }), "{outcome:?}");
        assert_eq!(memory.faults_left(), 0);
    }

    /// The object was written, but the answer was lost: the retry finds it, compares it, and
    /// calls it archived.
    #[tokio::test]
    async fn a_write_whose_answer_was_lost_is_recognised() {
        let (outcome, _) = push_under(&[(FaultError::Transient, 1, true)]).await;
        assert_eq!(
            outcome.unwrap(),
            PushOutcome::AlreadyArchived {
                name: SEGMENT.into()
            }
        );
    }

    #[tokio::test]
    async fn a_full_store_or_no_permission_acknowledges_nothing() {
        for error in [FaultError::StorageFull, FaultError::PermissionDenied] {
            let (outcome, memory) = push_under(&[(error, 1, false)]).await;
            let err = outcome.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Storage, "{error:?}: {err}");
            assert!(err.to_string().contains(SEGMENT), "{err}");
            assert!(
                memory
                    .head(&segment_key(), &CancellationToken::new())
                    .await
                    .unwrap_err()
                    .is_not_found(),
                "{error:?}: nothing stored"
            );
        }
    }

    #[tokio::test]
    async fn failures_past_the_retries_give_up() {
        let (outcome, memory) = push_under(&[(FaultError::Transient, 10, false)]).await;
        let err = outcome.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Storage);
        assert!(
            err.to_string().contains("gave up after 4 attempts"),
            "{err}"
        );
        assert_eq!(memory.faults_left(), 6);
    }
}
