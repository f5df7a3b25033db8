//! `estimate`: how long a restore would take, and which stage bounds it.
//!
//! [`estimate()`] plans the restore exactly as `restore` does ([`restore::plan`]), so a target
//! no backup reaches fails the same way, then measures what it can and assumes the rest:
//!
//! - **What to fetch**: the base backup's stored and original bytes (its manifest's totals)
//!   and the planned WAL: the number of segments, their stored size (from a listing of `wal/`)
//!   and their original size (segments × segment size).
//! - **Fetch throughput**, measured: a short probe downloads real objects of the plan (WAL
//!   segments spread over the plan, then backup parts) with [`EstimateOptions::jobs`] requests
//!   in flight, for about [`PROBE_TIME`] or [`PROBE_BYTES`], whichever comes first. Before it,
//!   [`LATENCY_SAMPLES`] one-byte reads time the first byte.
//! - **Decompression rate**, measured: the probed objects are decoded (and verified) one after
//!   the other on one blocking thread, for at most about [`DECODE_TIME`]: original bytes per
//!   second per core.
//! - **PostgreSQL's replay rate**, recorded or assumed: the newest [`REPLAY_RECORDS_USED`]
//!   records earlier restores left in the repository ([`walferry_manifest::stats`]), those
//!   that measured replay where it never waited for a segment first (a pipeline records the
//!   stretch after the last stall), or [`DEFAULT_REPLAY_BYTES_PER_SECOND`].
//! - **Disk write rate**, assumed: [`DEFAULT_DISK_WRITE_BYTES_PER_SECOND`].
//!
//! Then [`model()`], which is pure, turns these into stages:
//!
//! 1. `backup`: download, decode and write the base backup, bound by the slowest of the
//!    network (fetch throughput × the backup's compression ratio), decompression (per-core
//!    rate × `min(jobs, cores)`) and the disk.
//! 2. `wal`: recovery. The pipeline fetches and decodes ahead in parallel while PostgreSQL
//!    replays on one thread, so the WAL's original bytes go at the slowest of replay, the
//!    network (fetch throughput × the WAL's compression ratio) and decompression (per-core rate
//!    × `min(jobs, cores - 1)`, at least one core: replay keeps one core busy).
//! 3. `startup`: PostgreSQL's start-up (until the pipeline serves its first segment) and the
//!    end of recovery (the last segment and the end-of-recovery checkpoint), as the replay
//!    records measured them, or a fixed [`STARTUP_SECONDS`] when none did.
//!
//! The total is their sum, with a range of −20 %/+30 % around it when the replay rate was
//! recorded, −30 %/+50 % when it is the default ([`range_factors`]).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinSet;
use tracing::{debug, info};
use walferry_manifest::io as repo_io;
use walferry_manifest::stats::{self, ReplayRecord};
use walferry_manifest::{PlanEnd, RestorePlan, RestoreRequest, layout};
use walferry_store::{ArchiveStore, CancellationToken, ObjectKey, Store};
use walferry_wal::WalFileName;

use crate::error::{Error, Result};
use crate::{MAX_OBJECT_BYTES, blocking, restore, store_error};

/// The requests in flight during the probe by default: the concurrency the WAL prefetch
/// pipeline is meant to run at.
pub const DEFAULT_JOBS: NonZeroUsize = NonZeroUsize::new(8).expect("not zero");

/// The replay rate assumed when no restore has recorded one, in original WAL bytes per
/// second: 250 MB/s. PostgreSQL 15 replays pgbench WAL at about 300 MB/s on a 2-core cloud
/// machine; this is a sixth below that, because replay slows down on WAL with more full-page
/// images or index changes per byte and on data that does not fit in memory, and a restore
/// that finishes early surprises nobody.
pub const DEFAULT_REPLAY_BYTES_PER_SECOND: f64 = 250e6;

/// The rate the restored files are assumed to be written at, in bytes per second: 250 MB/s,
/// a general-purpose cloud block volume with raised throughput (a gp3 volume's baseline is
/// 125 MiB/s, a local NVMe drive writes several times faster). `estimate` does not write, so
/// it does not measure this.
pub const DEFAULT_DISK_WRITE_BYTES_PER_SECOND: f64 = 250e6;

/// The fixed allowance for PostgreSQL outside replay: about 1 s to start and ask for its
/// first WAL file, and 2 s for the end-of-recovery checkpoint, which writes at most
/// `shared_buffers` of dirty pages (128 MB by default) and syncs them.
pub const STARTUP_SECONDS: f64 = 3.0;

/// How long the probe starts new downloads for.
pub const PROBE_TIME: Duration = Duration::from_millis(1500);

/// The stored bytes after which the probe starts no more downloads.
pub const PROBE_BYTES: u64 = 128 << 20;

/// When the probe cancels the downloads still in flight, once at least one finished.
pub const PROBE_HARD_LIMIT: Duration = Duration::from_secs(10);

/// How long decoding the probed objects may go on, once one is decoded.
pub const DECODE_TIME: Duration = Duration::from_secs(1);

/// The one-byte reads that time the first byte; the median is reported.
pub const LATENCY_SAMPLES: usize = 3;

/// How many of the newest usable replay records make the replay rate.
pub const REPLAY_RECORDS_USED: usize = 5;

/// How many of the newest records are downloaded to find them.
const REPLAY_RECORDS_READ: usize = 4 * REPLAY_RECORDS_USED;

/// The most WAL segments the probe picks from the plan.
const PROBE_SEGMENTS: usize = 64;

/// How to estimate.
#[derive(Debug, Clone)]
pub struct EstimateOptions {
    /// Requests in flight during the probe.
    pub jobs: NonZeroUsize,
    /// How long the probe starts new downloads for.
    pub probe_time: Duration,
    /// The stored bytes after which the probe starts no more downloads.
    pub probe_bytes: u64,
}

impl Default for EstimateOptions {
    fn default() -> Self {
        EstimateOptions {
            jobs: DEFAULT_JOBS,
            probe_time: PROBE_TIME,
            probe_bytes: PROBE_BYTES,
        }
    }
}

/// How long a restore would take, and why. Serialized as `walferry-restore estimate --json`
/// prints it; times in seconds, rates in bytes per second.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// The repository URL.
    pub repository: String,
    /// The restore plan.
    pub plan: PlanSummary,
    /// The expected duration of the whole restore: the sum of the stages.
    pub total_seconds: f64,
    /// The range the duration is expected in: `[low, high]`.
    pub range_seconds: [f64; 2],
    /// The stages, in order: `backup`, `wal`, `startup`.
    pub stages: Vec<Stage>,
    /// The base backup to fetch.
    pub backup: BackupBytes,
    /// The WAL to fetch.
    pub wal: WalBytes,
    /// What the probe measured.
    pub probe: Probe,
    /// Decoding speed in original bytes per second on one core; `null` when nothing was
    /// probed.
    pub decompression_bytes_per_second: Option<f64>,
    /// PostgreSQL's replay rate used.
    pub replay: Replay,
    /// The figures assumed rather than measured.
    pub assumptions: Assumptions,
    /// Remarks on the estimate: what makes it less certain.
    pub notes: Vec<String>,
    /// The plan itself, for the text form.
    #[serde(skip)]
    pub restore_plan: RestorePlan,
}

/// The restore plan, as `estimate --json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanSummary {
    /// The backup restored.
    pub backup: String,
    /// The target.
    pub target: String,
    /// The timeline recovery follows.
    pub timeline: u32,
    /// The segments PostgreSQL will ask for.
    pub segments: u64,
    /// The first of them.
    pub first_segment: Option<String>,
    /// The last of them.
    pub last_segment: Option<String>,
}

/// The base backup to fetch.
#[derive(Debug, Clone, Serialize)]
pub struct BackupBytes {
    /// Its label.
    pub label: String,
    /// Its stored size.
    pub compressed_bytes: u64,
    /// Its size once decoded: what is written.
    pub original_bytes: u64,
}

/// The WAL to fetch.
#[derive(Debug, Clone, Serialize)]
pub struct WalBytes {
    /// The segments PostgreSQL will ask for.
    pub segments: u64,
    /// Their stored size.
    pub compressed_bytes: u64,
    /// Their original size: segments × segment size.
    pub original_bytes: u64,
}

/// What the probe measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Probe {
    /// Requests in flight.
    pub jobs: usize,
    /// Objects downloaded whole.
    pub objects: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// From the first request to the last object received.
    pub seconds: f64,
    /// `bytes / seconds`: stored bytes per second; `null` when nothing was probed.
    pub bytes_per_second: Option<f64>,
    /// The median time to a one-byte read, in milliseconds; `null` when nothing was probed.
    pub first_byte_ms: Option<f64>,
}

/// The replay rate used, and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    /// Original WAL bytes per second.
    pub bytes_per_second: f64,
    /// `recorded` (from earlier restores) or `default`.
    pub source: ReplaySource,
    /// The records it was computed from.
    pub records: usize,
    /// What those records spent outside replaying the segments they took (the server's
    /// start-up before the first, the end of recovery after the last), averaged over those
    /// that measured it; `None` when none did.
    pub overhead_seconds: Option<f64>,
}

/// Where the replay rate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplaySource {
    /// Records earlier restores left in the repository.
    Recorded,
    /// [`DEFAULT_REPLAY_BYTES_PER_SECOND`]: no usable record.
    Default,
}

/// The figures an estimate assumes.
#[derive(Debug, Clone, Serialize)]
pub struct Assumptions {
    /// The parallelism of the restore: downloads and decoders.
    pub jobs: usize,
    /// The available parallelism of this machine.
    pub cores: usize,
    /// [`DEFAULT_DISK_WRITE_BYTES_PER_SECOND`].
    pub disk_write_bytes_per_second: f64,
    /// PostgreSQL's start-up and end of recovery: the replay records' figure, else
    /// [`STARTUP_SECONDS`].
    pub startup_seconds: f64,
    /// The factors the range applies to the total: `[low, high]`.
    pub range_factors: [f64; 2],
}

/// One stage of a restore.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// `backup`, `wal` or `startup`.
    pub name: &'static str,
    /// How long it takes.
    pub seconds: f64,
    /// What bounds it.
    pub bound: Bound,
    /// The original bytes it handles (0 for `startup`).
    pub bytes: u64,
    /// The rate of the bounding resource, in original bytes per second; `null` for `startup`.
    pub bytes_per_second: Option<f64>,
}

/// What bounds a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    /// PostgreSQL's replay, on one thread.
    Replay,
    /// Downloading from the repository.
    Network,
    /// Decoding the downloaded objects.
    Decompression,
    /// Writing the restored files.
    Disk,
    /// A fixed allowance.
    Fixed,
}

impl Bound {
    /// The word `--json` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::Replay => "replay",
            Bound::Network => "network",
            Bound::Decompression => "decompression",
            Bound::Disk => "disk",
            Bound::Fixed => "fixed",
        }
    }
}

/// Everything [`model()`] works from.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInputs {
    /// The backup's stored bytes.
    pub backup_compressed_bytes: u64,
    /// The backup's original bytes.
    pub backup_original_bytes: u64,
    /// The WAL's stored bytes.
    pub wal_compressed_bytes: u64,
    /// The WAL's original bytes.
    pub wal_original_bytes: u64,
    /// Stored bytes per second downloaded at the restore's concurrency; `None` when not
    /// measured (nothing to fetch), which leaves the network out.
    pub fetch_bytes_per_second: Option<f64>,
    /// Original bytes per second decoded on one core; `None` when not measured.
    pub decompression_bytes_per_second: Option<f64>,
    /// PostgreSQL's replay rate, original bytes per second.
    pub replay: Replay,
    /// Bytes per second written to the data directory.
    pub disk_write_bytes_per_second: f64,
    /// Downloads and decoders at once.
    pub jobs: usize,
    /// Cores of the restoring machine.
    pub cores: usize,
    /// The fixed allowance for PostgreSQL's start-up and end of recovery.
    pub startup_seconds: f64,
}

/// What [`model()`] computes.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// `backup`, `wal`, `startup`.
    pub stages: Vec<Stage>,
    /// Their sum.
    pub total_seconds: f64,
    /// `[low, high]`.
    pub range_seconds: [f64; 2],
}

/// The factors the range applies to the total, `[low, high]`, by where the replay rate comes
/// from. Asymmetric, because a restore meets more that slows it than speeds it: the probe is
/// short and runs on a quiet repository and network, replay slows down once the data no longer
/// fits in memory. A default replay rate is a guess, so its range is wider.
pub fn range_factors(source: ReplaySource) -> [f64; 2] {
    match source {
        ReplaySource::Recorded => [0.8, 1.3],
        ReplaySource::Default => [0.7, 1.5],
    }
}

/// The stages of a restore from its inputs; see the [module documentation](self). Seconds are
/// rounded to the millisecond.
pub fn model(inputs: &ModelInputs) -> Model {
    let cores = inputs.cores.max(1);
    let jobs = inputs.jobs.max(1);
    let decoders = |n: usize| {
        inputs
            .decompression_bytes_per_second
            .map(|rate| rate * n as f64)
    };

    let backup_network = inputs
        .fetch_bytes_per_second
        .map(|rate| rate * expansion(inputs.backup_original_bytes, inputs.backup_compressed_bytes));
    let (backup_bound, backup_rate) = slowest(
        (Bound::Disk, inputs.disk_write_bytes_per_second),
        &[
            (Bound::Network, backup_network),
            (Bound::Decompression, decoders(jobs.min(cores))),
        ],
    );

    let wal_network = inputs
        .fetch_bytes_per_second
        .map(|rate| rate * expansion(inputs.wal_original_bytes, inputs.wal_compressed_bytes));
    // Replay keeps one core busy; the decoders share the others (at least one).
    let wal_decoders = jobs.min(cores.saturating_sub(1).max(1));
    let (wal_bound, wal_rate) = slowest(
        (Bound::Replay, inputs.replay.bytes_per_second),
        &[
            (Bound::Network, wal_network),
            (Bound::Decompression, decoders(wal_decoders)),
        ],
    );

    let backup = seconds(inputs.backup_original_bytes, backup_rate);
    let wal = seconds(inputs.wal_original_bytes, wal_rate);
    let startup = inputs.startup_seconds.max(0.0);
    let total = backup + wal + startup;
    let [low, high] = range_factors(inputs.replay.source);
    Model {
        stages: vec![
            Stage {
                name: "backup",
                seconds: millis(backup),
                bound: backup_bound,
                bytes: inputs.backup_original_bytes,
                bytes_per_second: Some(backup_rate),
            },
            Stage {
                name: "wal",
                seconds: millis(wal),
                bound: wal_bound,
                bytes: inputs.wal_original_bytes,
                bytes_per_second: Some(wal_rate),
            },
            Stage {
                name: "startup",
                seconds: millis(startup),
                bound: Bound::Fixed,
                bytes: 0,
                bytes_per_second: None,
            },
        ],
        total_seconds: millis(total),
        range_seconds: [millis(total * low), millis(total * high)],
    }
}

/// The slowest of `first`, which is always known, and the `others` that are; ties go to the
/// earlier one. A rate that is not a positive number counts as unknown.
fn slowest(first: (Bound, f64), others: &[(Bound, Option<f64>)]) -> (Bound, f64) {
    let usable = |rate: f64| rate.is_finite() && rate > 0.0;
    let mut best = first;
    for &(bound, rate) in others {
        if let Some(rate) = rate.filter(|r| usable(*r))
            && (!usable(best.1) || rate < best.1)
        {
            best = (bound, rate);
        }
    }
    best
}

/// Original bytes per stored byte; 1 when either is unknown.
fn expansion(original: u64, compressed: u64) -> f64 {
    if original == 0 || compressed == 0 {
        1.0
    } else {
        original as f64 / compressed as f64
    }
}

/// `bytes` at `rate` per second; 0 for no bytes.
fn seconds(bytes: u64, rate: f64) -> f64 {
    if bytes == 0 || !rate.is_finite() || rate <= 0.0 {
        0.0
    } else {
        bytes as f64 / rate
    }
}

/// Rounded to the millisecond.
fn millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The replay rate from `records` (newest first): the newest [`REPLAY_RECORDS_USED`] with a
/// usable rate and no stall (a recovery that waited for segments measured the fetch, not
/// replay), or, when every one stalled, the newest stalled ones (a rate replay reaches at
/// least); weighted by bytes. [`DEFAULT_REPLAY_BYTES_PER_SECOND`] when none is usable.
pub fn replay_rate(records: &[ReplayRecord]) -> Replay {
    let usable = || records.iter().filter(|r| r.bytes_per_second().is_some());
    let mut chosen: Vec<&ReplayRecord> = usable()
        .filter(|r| r.stalls == 0)
        .take(REPLAY_RECORDS_USED)
        .collect();
    if chosen.is_empty() {
        chosen = usable().take(REPLAY_RECORDS_USED).collect();
    }
    let bytes: f64 = chosen.iter().map(|r| r.wal_bytes as f64).sum();
    let seconds: f64 = chosen.iter().map(|r| r.seconds).sum();
    if chosen.is_empty() || seconds <= 0.0 {
        return Replay {
            bytes_per_second: DEFAULT_REPLAY_BYTES_PER_SECOND,
            source: ReplaySource::Default,
            records: 0,
            overhead_seconds: None,
        };
    }
    let overheads: Vec<f64> = chosen
        .iter()
        .filter_map(|r| Some(r.startup_seconds? + r.end_seconds?))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .collect();
    Replay {
        bytes_per_second: bytes / seconds,
        source: ReplaySource::Recorded,
        records: chosen.len(),
        overhead_seconds: (!overheads.is_empty())
            .then(|| overheads.iter().sum::<f64>() / overheads.len() as f64),
    }
}

/// Plans `request` against the repository in `store` and estimates how long restoring it
/// would take; see the [module documentation](self).
///
/// Fails as [`restore::plan`] does (with [`Error::Unreachable`] when no backup reaches the
/// target), with [`Error::Store`] when the storage fails, and with [`Error::Corrupt`] when a
/// probed object does not decode.
pub async fn estimate(
    store: &Store,
    request: &RestoreRequest,
    options: &EstimateOptions,
    cancel: &CancellationToken,
) -> Result<Estimate> {
    let repo = store.location().to_owned();
    let (loaded, plan) = restore::plan(store, request, cancel).await?;
    let manifest = loaded
        .backups()
        .iter()
        .find(|m| m.label == plan.backup.label)
        .ok_or_else(|| Error::Internal {
            message: format!(
                "the plan chose backup '{}', which the catalog does not hold",
                plan.backup.label
            ),
        })?;
    let mut notes = Vec::new();

    // The stored size of every planned segment, from one listing of `wal/`.
    let sizes: HashMap<ObjectKey, u64> = store
        .list(layout::WAL_PREFIX, cancel)
        .await
        .map_err(|e| store_error("list", &wal_prefix_key(), store, e))?
        .into_iter()
        .map(|meta| (meta.key, meta.size))
        .collect();
    let segment_keys: Vec<ObjectKey> = plan
        .segments
        .iter()
        .map(|segment| layout::wal_key(&WalFileName::Segment(segment)))
        .collect();
    let mut wal_compressed = 0u64;
    let mut unlisted = 0u64;
    for key in &segment_keys {
        match sizes.get(key) {
            Some(size) => wal_compressed = wal_compressed.saturating_add(*size),
            None => unlisted += 1,
        }
    }
    if unlisted > 0 {
        notes.push(format!(
            "{unlisted} planned WAL segments were not in the listing of wal/ (removed since the catalog was read?); their stored size is not counted"
        ));
    }
    let segments = plan.segments.len();
    let wal_original = segments.saturating_mul(loaded.descriptor().wal_segment_size.bytes());
    if matches!(plan.end, PlanEnd::AtTarget) {
        notes.push(
            "the target's position in the WAL is unknown until replay reaches it, so all the WAL to the end of the archive is counted: recovery may stop sooner".to_owned(),
        );
    }

    // Probe: planned segments spread over the plan, then the backup's parts.
    let mut candidates: Vec<(ObjectKey, u64)> = spread(&segment_keys, PROBE_SEGMENTS)
        .into_iter()
        .filter_map(|key| sizes.get(key).map(|size| (key.clone(), *size)))
        .collect();
    for part in &manifest.parts {
        if let Ok(key) = layout::backup_part_key(&manifest.label, &part.name) {
            candidates.push((key, part.compressed_bytes));
        }
    }
    let jobs = options.jobs.get();
    let probed = probe(store, &candidates, options, cancel).await?;
    let decoded = decode_rate(probed.bodies).await?;
    info!(
        objects = probed.probe.objects,
        bytes = probed.probe.bytes,
        seconds = probed.probe.seconds,
        decoded_bytes = decoded.map(|(b, _)| b),
        "probed the repository"
    );
    let decompression = decoded.and_then(|(bytes, seconds)| rate(bytes, seconds));

    let records = stats::load_recent_replay_records(store, REPLAY_RECORDS_READ, cancel)
        .await
        .map_err(|e| stats_error(e, store))?;
    let replay = replay_rate(&records);
    debug!(records = records.len(), rate = replay.bytes_per_second, source = ?replay.source, "replay rate");

    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let inputs = ModelInputs {
        backup_compressed_bytes: manifest.totals.compressed_bytes,
        backup_original_bytes: manifest.totals.original_bytes,
        wal_compressed_bytes: wal_compressed,
        wal_original_bytes: wal_original,
        fetch_bytes_per_second: probed.probe.bytes_per_second,
        decompression_bytes_per_second: decompression,
        replay: replay.clone(),
        disk_write_bytes_per_second: DEFAULT_DISK_WRITE_BYTES_PER_SECOND,
        jobs,
        cores,
        startup_seconds: replay.overhead_seconds.unwrap_or(STARTUP_SECONDS),
    };
    let model = model(&inputs);
    Ok(Estimate {
        repository: repo,
        plan: PlanSummary {
            backup: plan.backup.label.clone(),
            target: plan.target.to_string(),
            timeline: plan.timeline.get(),
            segments,
            first_segment: plan.segments.first().map(|s| s.to_string()),
            last_segment: plan.segments.last().map(|s| s.to_string()),
        },
        total_seconds: model.total_seconds,
        range_seconds: model.range_seconds,
        stages: model.stages,
        backup: BackupBytes {
            label: manifest.label.clone(),
            compressed_bytes: manifest.totals.compressed_bytes,
            original_bytes: manifest.totals.original_bytes,
        },
        wal: WalBytes {
            segments,
            compressed_bytes: wal_compressed,
            original_bytes: wal_original,
        },
        probe: probed.probe,
        decompression_bytes_per_second: decompression,
        replay,
        assumptions: Assumptions {
            jobs,
            cores,
            disk_write_bytes_per_second: DEFAULT_DISK_WRITE_BYTES_PER_SECOND,
            startup_seconds: inputs.startup_seconds,
            range_factors: range_factors(inputs.replay.source),
        },
        notes,
        restore_plan: plan,
    })
}

/// The key [`store_error`] names for a failed listing of `wal/`.
fn wal_prefix_key() -> ObjectKey {
    ObjectKey::new(layout::WAL_PREFIX.trim_end_matches('/')).expect("a constant, valid key")
}

/// Reading the replay records failed.
fn stats_error(e: repo_io::Error, store: &Store) -> Error {
    let repo = store.location().to_owned();
    match e {
        repo_io::Error::Store(source) => Error::Store {
            action: "read replay records",
            key: stats::REPLAY_PREFIX.to_owned(),
            repo,
            source: Box::new(source),
        },
        other => Error::BadCatalog {
            repo,
            message: other.to_string(),
        },
    }
}

/// At most `n` of `items`, evenly spread from the first to the last.
fn spread<T>(items: &[T], n: usize) -> Vec<&T> {
    if items.len() <= n {
        return items.iter().collect();
    }
    (0..n)
        .filter_map(|i| items.get(i * (items.len() - 1) / (n - 1).max(1)))
        .collect()
}

/// `bytes / seconds`, when both make a rate.
fn rate(bytes: u64, seconds: f64) -> Option<f64> {
    (bytes > 0 && seconds.is_finite() && seconds > 0.0).then(|| bytes as f64 / seconds)
}

/// What [`probe`] measured, and the objects it downloaded, to decode.
struct Probed {
    probe: Probe,
    bodies: Vec<(ObjectKey, Bytes)>,
}

/// Times the first byte of the first candidate, then downloads candidates in order with
/// `options.jobs` requests in flight, starting new ones until `options.probe_time` has passed
/// or `options.probe_bytes` are under way, and waits for those in flight (cancelling them after
/// [`PROBE_HARD_LIMIT`] once one has arrived).
async fn probe(
    store: &Store,
    candidates: &[(ObjectKey, u64)],
    options: &EstimateOptions,
    cancel: &CancellationToken,
) -> Result<Probed> {
    let jobs = options.jobs.get();
    let Some((first, _)) = candidates.first() else {
        return Ok(Probed {
            probe: Probe {
                jobs,
                ..Probe::default()
            },
            bodies: Vec::new(),
        });
    };
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        store
            .get(first, Some(0..1), cancel)
            .await
            .map_err(|e| store_error("download", first, store, e))?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let first_byte = latencies
        .get(latencies.len() / 2)
        .map(|d| millis(d.as_secs_f64() * 1000.0));

    let stop = cancel.child_token();
    let started = Instant::now();
    let mut next = candidates.iter();
    let mut in_flight = JoinSet::new();
    let mut requested = 0u64;
    let mut bodies = Vec::new();
    let mut bytes = 0u64;
    let mut finished = started;
    loop {
        while in_flight.len() < jobs
            && started.elapsed() < options.probe_time
            && requested < options.probe_bytes
            && let Some((key, size)) = next.next()
        {
            requested = requested.saturating_add(*size);
            let (store, key, stop) = (store.clone(), key.clone(), stop.clone());
            in_flight.spawn(async move {
                let got = store.get(&key, None, &stop).await;
                (key, got)
            });
        }
        let joined = if bodies.is_empty() {
            in_flight.join_next().await
        } else {
            match tokio::time::timeout_at(
                (started + PROBE_HARD_LIMIT).into(),
                in_flight.join_next(),
            )
            .await
            {
                Ok(joined) => joined,
                Err(_) => {
                    debug!(
                        in_flight = in_flight.len(),
                        "probe: cancelling slow downloads"
                    );
                    stop.cancel();
                    finished = Instant::now();
                    break;
                }
            }
        };
        let Some(joined) = joined else { break };
        let (key, got) = match joined {
            Ok(done) => done,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => {
                return Err(Error::Internal {
                    message: "a probe download was cancelled because the runtime is shutting down"
                        .into(),
                });
            }
        };
        let got = got.map_err(|e| store_error("download", &key, store, e))?;
        bytes = bytes.saturating_add(got.body.len() as u64);
        bodies.push((key, got.body));
        finished = Instant::now();
    }
    in_flight.abort_all();
    let seconds = finished.duration_since(started).as_secs_f64();
    Ok(Probed {
        probe: Probe {
            jobs,
            objects: bodies.len() as u64,
            bytes,
            seconds: millis(seconds),
            bytes_per_second: rate(bytes, seconds),
            first_byte_ms: first_byte,
        },
        bodies,
    })
}

/// Decodes `bodies` one after the other on one blocking thread, until [`DECODE_TIME`] has
/// passed (after the first): the original bytes decoded and the seconds it took, `None` when
/// there was nothing to decode.
async fn decode_rate(bodies: Vec<(ObjectKey, Bytes)>) -> Result<Option<(u64, f64)>> {
    if bodies.is_empty() {
        return Ok(None);
    }
    blocking(move || {
        let started = Instant::now();
        let mut original = 0u64;
        let mut seconds = 0.0;
        for (key, body) in bodies {
            if original > 0 && started.elapsed() >= DECODE_TIME {
                break;
            }
            let t = Instant::now();
            let decoded = walferry_codec::decode(&body, MAX_OBJECT_BYTES).map_err(|source| {
                Error::Corrupt {
                    key: key.to_string(),
                    source,
                }
            })?;
            seconds += t.elapsed().as_secs_f64();
            original = original.saturating_add(decoded.len() as u64);
        }
        Ok(Some((original, seconds)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;

    fn default_replay() -> Replay {
        Replay {
            bytes_per_second: 300.0 * MB,
            source: ReplaySource::Default,
            records: 0,
            overhead_seconds: None,
        }
    }

    /// 1 GB backup stored in 250 MB, 100 segments of 16 MiB stored in 400 MB (ratio ~4.19).
    fn inputs() -> ModelInputs {
        ModelInputs {
            backup_compressed_bytes: 250_000_000,
            backup_original_bytes: 1_000_000_000,
            wal_compressed_bytes: 400_000_000,
            wal_original_bytes: 100 << 24,
            fetch_bytes_per_second: Some(100.0 * MB),
            decompression_bytes_per_second: Some(500.0 * MB),
            replay: default_replay(),
            disk_write_bytes_per_second: 250.0 * MB,
            jobs: 8,
            cores: 2,
            startup_seconds: 3.0,
        }
    }

    fn stage<'a>(m: &'a Model, name: &str) -> &'a Stage {
        m.stages.iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn every_resource_can_bound_each_stage() {
        // (change, backup bound, wal bound)
        type Change = fn(&mut ModelInputs);
        let cases: [(&str, Change, Bound, Bound); 5] = [
            // network: 100 MB/s x 4 = 400 MB/s original for backup; WAL x 4.19 = 419 MB/s.
            ("as is", |_| {}, Bound::Disk, Bound::Replay),
            (
                "slow network",
                |i| i.fetch_bytes_per_second = Some(20.0 * MB),
                Bound::Network,
                Bound::Network,
            ),
            (
                "slow decoder",
                |i| i.decompression_bytes_per_second = Some(100.0 * MB),
                Bound::Decompression,
                Bound::Decompression,
            ),
            (
                "fast disk, fast replay",
                |i| {
                    i.disk_write_bytes_per_second = 10_000.0 * MB;
                    i.replay.bytes_per_second = 10_000.0 * MB;
                },
                Bound::Network,
                Bound::Network,
            ),
            (
                "nothing measured",
                |i| {
                    i.fetch_bytes_per_second = None;
                    i.decompression_bytes_per_second = None;
                },
                Bound::Disk,
                Bound::Replay,
            ),
        ];
        for (name, change, backup, wal) in cases {
            let mut i = inputs();
            change(&mut i);
            let m = model(&i);
            assert_eq!(stage(&m, "backup").bound, backup, "{name}");
            assert_eq!(stage(&m, "wal").bound, wal, "{name}");
            assert_eq!(stage(&m, "startup").bound, Bound::Fixed, "{name}");
        }
    }

    #[test]
    fn stage_seconds_follow_the_bounding_rate() {
        let m = model(&inputs());
        // backup: min(400 network, 500 x 2 decoders, 250 disk) = 250 MB/s → 4 s.
        assert_eq!(stage(&m, "backup").seconds, 4.0);
        assert_eq!(stage(&m, "backup").bytes_per_second, Some(250.0 * MB));
        // WAL: min(300 replay, 419 network, 500 x 1 decoder) → 1677.7216 MB / 300 MB/s.
        assert_eq!(stage(&m, "wal").seconds, 5.592);
        assert_eq!(stage(&m, "startup").seconds, 3.0);
        assert_eq!(m.total_seconds, 12.592);
        // Default replay: -30 % / +50 %.
        assert_eq!(m.range_seconds, [8.815, 18.889]);

        let mut recorded = inputs();
        recorded.replay.source = ReplaySource::Recorded;
        let m = model(&recorded);
        assert_eq!(m.range_seconds, [10.074, 16.37]);
        assert!(m.range_seconds[0] <= m.total_seconds && m.total_seconds <= m.range_seconds[1]);
    }

    #[test]
    fn decoders_are_bounded_by_cores_and_leave_one_to_replay() {
        let mut i = inputs();
        i.decompression_bytes_per_second = Some(100.0 * MB);
        i.disk_write_bytes_per_second = 10_000.0 * MB;
        i.fetch_bytes_per_second = Some(10_000.0 * MB);
        i.replay.bytes_per_second = 10_000.0 * MB;
        for (cores, jobs, backup_rate, wal_rate) in [
            (1, 8, 100.0, 100.0),
            (2, 8, 200.0, 100.0),
            (4, 8, 400.0, 300.0),
            (16, 8, 800.0, 800.0),
            (16, 1, 100.0, 100.0),
        ] {
            i.cores = cores;
            i.jobs = jobs;
            let m = model(&i);
            assert_eq!(
                stage(&m, "backup").bytes_per_second,
                Some(backup_rate * MB),
                "{cores} cores, {jobs} jobs"
            );
            assert_eq!(
                stage(&m, "wal").bytes_per_second,
                Some(wal_rate * MB),
                "{cores} cores, {jobs} jobs"
            );
        }
    }

    #[test]
    fn nothing_to_fetch_takes_only_the_allowance() {
        let mut i = inputs();
        i.backup_compressed_bytes = 0;
        i.backup_original_bytes = 0;
        i.wal_compressed_bytes = 0;
        i.wal_original_bytes = 0;
        i.fetch_bytes_per_second = None;
        i.decompression_bytes_per_second = Some(0.0);
        let m = model(&i);
        assert_eq!(m.total_seconds, 3.0);
        assert_eq!(stage(&m, "wal").seconds, 0.0);
        assert_eq!(stage(&m, "wal").bound, Bound::Replay);
    }

    #[test]
    fn ties_go_to_replay_and_unusable_rates_are_ignored() {
        assert_eq!(
            slowest((Bound::Replay, 5.0), &[(Bound::Network, Some(5.0))]),
            (Bound::Replay, 5.0)
        );
        assert_eq!(
            slowest(
                (Bound::Replay, 5.0),
                &[
                    (Bound::Network, Some(f64::NAN)),
                    (Bound::Decompression, Some(0.0)),
                    (Bound::Disk, None)
                ]
            ),
            (Bound::Replay, 5.0)
        );
        assert_eq!(
            slowest((Bound::Replay, 0.0), &[(Bound::Network, Some(7.0))]),
            (Bound::Network, 7.0)
        );
    }

    fn record(age: i64, wal_bytes: u64, seconds: f64, stalls: u64) -> ReplayRecord {
        ReplayRecord {
            recorded_at: walferry_manifest::Timestamp::from_unix_seconds(2_000_000_000 - age)
                .unwrap(),
            wal_bytes,
            segments: wal_bytes >> 24,
            seconds,
            stalls,
            cores: 2,
            startup_seconds: None,
            end_seconds: None,
        }
    }

    #[test]
    fn replay_rate_prefers_recent_records_without_stalls() {
        assert_eq!(replay_rate(&[]).source, ReplaySource::Default);
        assert_eq!(
            replay_rate(&[]).bytes_per_second,
            DEFAULT_REPLAY_BYTES_PER_SECOND
        );

        // Newest first: a stalled one is skipped while unstalled ones exist.
        let records = [
            record(0, 100, 10.0, 3),
            record(1, 300, 1.0, 0),
            record(2, 100, 1.0, 0),
        ];
        let r = replay_rate(&records);
        assert_eq!(
            r,
            Replay {
                bytes_per_second: 200.0,
                source: ReplaySource::Recorded,
                records: 2,
                overhead_seconds: None,
            }
        );

        // Start-up and end of recovery, from the records that measured both.
        let mut measured = record(1, 300, 1.0, 0);
        measured.startup_seconds = Some(0.5);
        measured.end_seconds = Some(1.0);
        let mut half = record(2, 100, 1.0, 0);
        half.startup_seconds = Some(9.0);
        let r = replay_rate(&[measured, half]);
        assert_eq!(r.overhead_seconds, Some(1.5));

        // Only the newest REPLAY_RECORDS_USED count.
        let mut many: Vec<ReplayRecord> = (0..REPLAY_RECORDS_USED as i64)
            .map(|age| record(age, 1000, 1.0, 0))
            .collect();
        many.push(record(99, 1, 1.0, 0));
        let r = replay_rate(&many);
        assert_eq!(r.bytes_per_second, 1000.0);
        assert_eq!(r.records, REPLAY_RECORDS_USED);

        // Only stalled ones: used, as a lower bound.
        let r = replay_rate(&[record(0, 100, 10.0, 3)]);
        assert_eq!(
            (r.bytes_per_second, r.source),
            (10.0, ReplaySource::Recorded)
        );

        // Unusable figures are not records.
        let r = replay_rate(&[record(0, 0, 1.0, 0), record(1, 5, 0.0, 0)]);
        assert_eq!(r.source, ReplaySource::Default);
    }

    #[test]
    fn spread_keeps_the_ends() {
        let items: Vec<u32> = (0..100).collect();
        let picked = spread(&items, 5);
        assert_eq!(picked, [&0, &24, &49, &74, &99]);
        assert_eq!(spread(&items[..3], 5).len(), 3);
        assert_eq!(spread(&items, 1), [&0]);
        assert!(spread::<u32>(&[], 4).is_empty());
    }
}
