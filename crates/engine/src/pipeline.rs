//! The WAL prefetch pipeline: fetches, ahead of PostgreSQL's replay and in parallel, the WAL
//! files recovery will ask for, verifies them, and leaves them in the [spool](crate::spool),
//! so that `fetch` answers each of PostgreSQL's requests with a rename.
//!
//! # What it fetches
//!
//! The work list comes from the repository ([`WalFollower`]): from a first segment, the exact
//! sequence of (timeline, segment) files PostgreSQL will ask for along the target timeline's
//! path, switch points included, to the end of the archive (or to a last segment, for a
//! restore whose end is known). The history file of the target timeline comes first, those
//! PostgreSQL probes at promotion last. The list is made as the pipeline goes, one listing of a
//! `wal/<TLI><LOG>/` prefix at a time, and an item is dropped once it is taken, passed or
//! given up: memory does not grow with the size of the archive.
//!
//! # How
//!
//! One control task keeps at most `jobs` downloads in flight and, counting those, at most
//! `budget` bytes ahead of replay (files published and not yet taken, plus one segment per
//! download in flight). A download is a GET of the whole object, or for an object larger than
//! [`RANGE_BYTES`] concurrent ranged GETs; the object is decoded and verified (frame checksum,
//! size, first page header against the repository descriptor) on the blocking pool while it
//! is written to a temporary file in the spool, then published. While a file is in flight, a
//! `.pending` mark beside it tells `fetch` to wait for it rather than download it again.
//!
//! The control task notices when fetch takes a file (it is gone from the spool), which frees
//! budget and measures replay; a file replay went past without asking is discarded.
//!
//! # When it stops
//!
//! When recovery ends (a signal file it saw is gone), when the server stops (a
//! `postmaster.pid` it saw is gone), when the restore that started it died before configuring
//! recovery, when the data directory is gone, after `idle_timeout` without a file taken, or
//! when cancelled. It then removes its spool generation and, when it measured replay, records
//! the figure in the repository ([`walferry_manifest::stats`]) for `estimate`.
//!
//! A download that fails is given up after its retries: its mark is removed, so a fetch
//! waiting for it downloads it itself and reports any error with PostgreSQL's rules.

use std::collections::{BTreeMap, VecDeque};
use std::fs;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use walferry_manifest::io::{self as repo_io, WalFollower};
use walferry_manifest::stats::{ReplayRecord, save_replay_record};
use walferry_manifest::{RepoDescriptor, Timestamp, layout};
use walferry_store::{ArchiveStore, CancellationToken, Store};
use walferry_wal::{SegmentName, TimelineId, WalFileName};

use crate::error::{Error, Result};
use crate::fetch::decode_into;
use crate::spool::{FileMaker, SpoolFile, SpoolWriter};
use crate::{join_blocking, store_error};

/// Objects larger than this are fetched as concurrent ranges of this size.
pub const RANGE_BYTES: u64 = 8 << 20;

/// The default number of downloads in flight: enough to hide a cloud round trip and a
/// per-connection bandwidth cap behind replay, few enough to bound memory (each download
/// holds one stored object).
pub fn default_jobs() -> NonZeroUsize {
    let cores = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
    NonZeroUsize::new((cores * 4).clamp(4, 8)).unwrap_or(NonZeroUsize::MIN)
}

/// The default byte budget ahead of replay for a spool on a filesystem with `free` bytes
/// available: a quarter of it, at most 1 GiB and at least two segments.
pub fn default_budget(free: u64, segment_size: u64) -> u64 {
    (free / 4).min(1 << 30).max(2 * segment_size)
}

/// How often the control task looks at the spool and the data directory.
const TICK: Duration = Duration::from_millis(10);

/// How often it checks whether recovery or the server ended.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Where the pipeline starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineStart {
    /// With this segment (a restore: the first segment replay needs), and the history files.
    From(SegmentName),
    /// With the segment after this one (a fetch that asked for it and fetches it itself).
    After(SegmentName),
}

/// How to run the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The data directory being recovered; the spool is in its `pg_wal`.
    pub pgdata: PathBuf,
    /// Where to start.
    pub start: PipelineStart,
    /// The timeline recovery follows; `None`: `recovery_target_timeline` from the data
    /// directory's configuration, else the newest timeline whose path holds the first segment.
    pub timeline: Option<TimelineId>,
    /// The last segment to fetch, when the end of recovery is known.
    pub last: Option<SegmentName>,
    /// Downloads in flight.
    pub jobs: NonZeroUsize,
    /// Bytes ahead of replay; `None`: [`default_budget`] of the spool's free space.
    pub budget: Option<u64>,
    /// Stop after this long without PostgreSQL taking a file.
    pub idle_timeout: Duration,
    /// The restore process that started the pipeline before writing the data directory: while
    /// no signal file exists yet, the pipeline stops when that process is gone.
    pub restore_pid: Option<u32>,
}

/// Why the pipeline stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Recovery ended: the signal file is gone.
    RecoveryEnded,
    /// The server stopped before recovery ended.
    ServerStopped,
    /// Nothing was taken for the idle timeout.
    Idle,
    /// The restore that started it died before configuring recovery.
    RestoreGone,
    /// The data directory is gone.
    DataDirectoryGone,
    /// Asked to stop.
    Cancelled,
}

/// What the pipeline did.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    /// WAL files on the work list.
    pub planned: u64,
    /// The last segment on the work list: where the archived WAL on the path ends, or the
    /// restore's last segment.
    pub last_segment: Option<SegmentName>,
    /// Files published into the spool.
    pub published: u64,
    /// Files PostgreSQL took from the spool.
    pub taken: u64,
    /// Segments published after PostgreSQL had taken every earlier one: replay (probably)
    /// waited for them.
    pub stalls: u64,
    /// Files given up on (fetch downloads those itself).
    pub failed: u64,
    /// Stored bytes downloaded.
    pub downloaded_bytes: u64,
    /// Replay as measured from the segments taken; see [`ReplayFigure`].
    pub replay: Option<ReplayFigure>,
    /// Seconds from the server's start to the first segment taken, when both were seen.
    pub startup_seconds: Option<f64>,
    /// Seconds from the last segment taken to the server accepting connections after
    /// recovery ended (replay of the last segment, end-of-recovery checkpoint); measured only
    /// when recovery ended.
    pub end_seconds: Option<f64>,
    /// Why it stopped.
    pub stop: StopReason,
}

/// Replay as the pipeline saw it: original bytes of the segments replayed between the first and
/// the last segment taken in a stretch, the seconds between, and the stalls in the stretch.
///
/// The stretch is the one after the last stall (replay waited for none of its segments, so it
/// measured replay, not the fetch), or the whole recovery when there was none; when the
/// stretch after the last stall holds fewer than half of the segments, the whole recovery,
/// stalls and all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayFigure {
    /// Original bytes of the segments replayed in the stretch.
    pub wal_bytes: u64,
    /// Seconds from the stretch's first segment taken to its last.
    pub seconds: f64,
    /// Stalls within the stretch.
    pub stalls: u64,
}

/// The [`ReplayFigure`] of `taken` segments of `segment_size` bytes, the first and last taken
/// at `first` and `last`, with `stalls` stalls, the last stall's stretch starting at `steady`
/// (the time the first segment after it was taken, and how many had been taken then,
/// counting it).
fn replay_figure(
    segment_size: u64,
    taken: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    steady: Option<(Instant, u64)>,
    stalls: u64,
) -> Option<ReplayFigure> {
    let (first, last) = (first?, last?);
    if taken < 2 {
        return None;
    }
    // The segment taken last is not replayed within the interval.
    let whole = ReplayFigure {
        wal_bytes: (taken - 1) * segment_size,
        seconds: last.saturating_duration_since(first).as_secs_f64(),
        stalls,
    };
    let Some((start, counted)) = steady else {
        return Some(whole);
    };
    let replayed = taken.saturating_sub(counted);
    if replayed == 0 || 2 * replayed < taken - 1 {
        return Some(whole);
    }
    Some(ReplayFigure {
        wal_bytes: replayed * segment_size,
        seconds: last.saturating_duration_since(start).as_secs_f64(),
        stalls: 0,
    })
}

/// Runs the pipeline for `options.pgdata` until it stops; see the [module docs](self).
///
/// Waits for the data directory's `pg_wal` to exist (a restore starts the pipeline before it
/// has written it). Fails with [`Error::SpoolBusy`] when another pipeline runs on the data
/// directory, and with the catalog's errors when the repository cannot be read.
pub async fn run(
    store: &Store,
    options: &PipelineOptions,
    cancel: &CancellationToken,
) -> Result<PipelineReport> {
    let pg_wal = options.pgdata.join("pg_wal");
    let mut watch = Watch::new(options);
    // A restore creates pg_wal once it has checked that the data directory is empty.
    while !pg_wal.is_dir() {
        if let Some(stop) = watch.check() {
            return Ok(PipelineReport::stopped(stop));
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = cancel.cancelled() => return Ok(PipelineReport::stopped(StopReason::Cancelled)),
        }
    }
    let writer = {
        let pg_wal = pg_wal.clone();
        join_blocking(tokio::task::spawn_blocking(move || {
            SpoolWriter::create(&pg_wal)
        }))
        .await??
    };
    info!(generation = writer.generation(), pgdata = %options.pgdata.display(), "WAL prefetch started");
    let mut control = Control::new(store.clone(), options, writer, watch);
    let result = control.run(cancel).await;
    let mut report = control.report(result.as_ref().ok().copied());
    let writer = control.writer;
    if let Err(e) = join_blocking(tokio::task::spawn_blocking(move || writer.remove())).await? {
        warn!("could not remove the spool: {e}");
    }
    let stop = result?;
    if stop == StopReason::RecoveryEnded
        && let Some(last) = control.last_take
        && let Some(ready) = wait_ready(&options.pgdata, cancel).await
    {
        report.end_seconds = Some(ready.saturating_duration_since(last).as_secs_f64());
    }
    info!(
        planned = report.planned,
        last_segment = report.last_segment.map(|s| s.to_string()),
        published = report.published,
        taken = report.taken,
        stalls = report.stalls,
        failed = report.failed,
        downloaded_bytes = report.downloaded_bytes,
        ?stop,
        "WAL prefetch stopped"
    );
    if let Some(figure) = report.replay
        && report.taken >= 4
    {
        record_replay(store, &report, figure, cancel).await;
    }
    Ok(report)
}

impl PipelineReport {
    fn stopped(stop: StopReason) -> PipelineReport {
        PipelineReport {
            planned: 0,
            last_segment: None,
            published: 0,
            taken: 0,
            stalls: 0,
            failed: 0,
            downloaded_bytes: 0,
            replay: None,
            startup_seconds: None,
            end_seconds: None,
            stop,
        }
    }
}

/// Saves the replay figure; a repository that cannot take it is only worth a warning.
async fn record_replay(
    store: &Store,
    report: &PipelineReport,
    figure: ReplayFigure,
    cancel: &CancellationToken,
) {
    let Ok(recorded_at) = Timestamp::from_system_time(std::time::SystemTime::now()) else {
        return;
    };
    let record = ReplayRecord {
        recorded_at,
        wal_bytes: figure.wal_bytes,
        segments: report.taken,
        seconds: figure.seconds,
        stalls: figure.stalls,
        cores: std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .try_into()
            .unwrap_or(u32::MAX),
        startup_seconds: report.startup_seconds,
        end_seconds: report.end_seconds,
    };
    match save_replay_record(store, &record, cancel).await {
        Ok(()) => debug!(?record, "replay figure recorded"),
        Err(e) => warn!("could not record the replay figure in the repository: {e}"),
    }
}

/// How long a pipeline whose recovery ended waits for the server to accept connections, to
/// measure the end of recovery.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// Waits until the postmaster of `pgdata` says it accepts connections (`ready` on the status
/// line of `postmaster.pid`, as `pg_ctl start -w` reads it); `None` when it stops or does
/// not say so within [`READY_TIMEOUT`].
async fn wait_ready(pgdata: &Path, cancel: &CancellationToken) -> Option<Instant> {
    let pid_file = pgdata.join("postmaster.pid");
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline && !cancel.is_cancelled() {
        // The 8th line is the status.
        match fs::read_to_string(&pid_file) {
            Ok(text) => match text.lines().nth(7).map(str::trim) {
                Some("ready") => return Some(Instant::now()),
                Some("stopping") => return None,
                _ => {}
            },
            Err(_) => return None,
        }
        tokio::time::sleep(TICK).await;
    }
    None
}

/// When the postmaster of `pgdata` started, from its process's start time in `/proc`.
fn server_started(pgdata: &Path) -> Option<Instant> {
    let pid_file = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: u32 = pid_file.lines().next()?.trim().parse().ok()?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The 22nd field (start time, in clock ticks since boot), the 20th after the command.
    let ticks: u64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let uptime: f64 = fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let hz = rustix::param::clock_ticks_per_second();
    let age = uptime - ticks as f64 / hz as f64;
    Instant::now().checked_sub(Duration::try_from_secs_f64(age).ok()?)
}

/// Watches the data directory for the end of recovery.
#[derive(Debug)]
struct Watch {
    pgdata: PathBuf,
    restore_pid: Option<u32>,
    idle_timeout: Duration,
    saw_signal: bool,
    saw_postmaster: bool,
    /// When the server started, once seen.
    server_started: Option<Instant>,
    last_activity: Instant,
    last_check: Instant,
}

impl Watch {
    fn new(options: &PipelineOptions) -> Watch {
        let now = Instant::now();
        Watch {
            pgdata: options.pgdata.clone(),
            restore_pid: options.restore_pid,
            idle_timeout: options.idle_timeout,
            saw_signal: false,
            saw_postmaster: false,
            server_started: None,
            last_activity: now,
            last_check: now - CHECK_EVERY,
        }
    }

    /// Something was taken at `at`.
    fn activity(&mut self, at: Instant) {
        self.last_activity = at;
    }

    /// Why to stop now, if so; looks at the disk at most every [`CHECK_EVERY`].
    fn check(&mut self) -> Option<StopReason> {
        if self.last_check.elapsed() < CHECK_EVERY {
            return None;
        }
        self.last_check = Instant::now();
        if !self.pgdata.is_dir() {
            return Some(StopReason::DataDirectoryGone);
        }
        let signal = self.pgdata.join("recovery.signal").exists()
            || self.pgdata.join("standby.signal").exists();
        if signal && !self.saw_signal {
            self.saw_signal = true;
            self.last_activity = Instant::now();
        }
        if self.saw_signal && !signal {
            return Some(StopReason::RecoveryEnded);
        }
        let postmaster = self.pgdata.join("postmaster.pid").exists();
        if postmaster {
            if !self.saw_postmaster {
                self.server_started = server_started(&self.pgdata);
            }
            self.saw_postmaster = true;
        } else if self.saw_postmaster {
            return Some(StopReason::ServerStopped);
        }
        if !self.saw_signal
            && let Some(pid) = self.restore_pid
        {
            if !Path::new("/proc").join(pid.to_string()).exists() {
                return Some(StopReason::RestoreGone);
            }
            // The restore is still writing the data directory: not idle.
            self.last_activity = Instant::now();
        }
        (self.last_activity.elapsed() >= self.idle_timeout).then_some(StopReason::Idle)
    }
}

/// A file on the work list.
#[derive(Debug, Clone, Copy)]
struct Item {
    name: WalFileName,
    /// Its stored size, from the listing.
    stored: u64,
    /// Whether it is a segment (counted against the budget and in replay figures).
    segment: bool,
}

/// A finished download, decoded into a file of the spool not yet published.
#[derive(Debug)]
struct Fetched {
    index: usize,
    file: SpoolFile,
    downloaded: u64,
}

/// The control task's state.
struct Control {
    store: Store,
    options: PipelineOptions,
    descriptor: Arc<RepoDescriptor>,
    writer: SpoolWriter,
    watch: Watch,
    /// The files to fetch by index, in the order PostgreSQL asks for them: made ahead of
    /// `next` as needed, dropped once taken, passed or given up.
    work: BTreeMap<usize, Item>,
    /// How many items were made: the index of the next one.
    made: usize,
    /// Where the items come from, until it runs out.
    source: Option<WorkSource>,
    /// The first item and the latest segment made, for the log and the report.
    first_made: Option<WalFileName>,
    last_segment: Option<SegmentName>,
    /// The next index to start.
    next: usize,
    budget: u64,
    segment_size: u64,
    decoders: Arc<Semaphore>,
    /// Downloads to start again before new ones.
    retry: VecDeque<usize>,
    attempts: BTreeMap<usize, u32>,
    /// Published and not taken, by index.
    held: BTreeMap<usize, WalFileName>,
    /// Segments in flight.
    in_flight_segments: usize,
    taken: u64,
    max_taken: Option<usize>,
    first_take: Option<Instant>,
    last_take: Option<Instant>,
    /// When the first segment after the last stall was taken, and how many segments had been
    /// taken then.
    steady: Option<(Instant, u64)>,
    taken_segments: u64,
    published: u64,
    stalls: u64,
    failed: u64,
    downloaded: u64,
    last_sweep: Instant,
    /// Cancels the downloads when the pipeline stops.
    stop: CancellationToken,
    /// Whether fetch may place segments in pg_wal was decided.
    placing_decided: bool,
}

/// How long a stopping pipeline waits for its downloads to end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a download that failed (after the store's own retries) is started again.
const MAX_ATTEMPTS: u32 = 3;

/// How often files replay went past are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Control {
    fn new(store: Store, options: &PipelineOptions, writer: SpoolWriter, watch: Watch) -> Control {
        Control {
            store,
            options: options.clone(),
            descriptor: Arc::new(RepoDescriptor::new(walferry_manifest::ClusterIdentity {
                system_identifier: 0,
                pg_version: walferry_wal::PgVersion::V15,
                wal_segment_size: walferry_wal::WalSegSize::DEFAULT,
            })),
            writer,
            watch,
            work: BTreeMap::new(),
            made: 0,
            source: None,
            first_made: None,
            last_segment: None,
            next: 0,
            budget: 0,
            segment_size: walferry_wal::WalSegSize::DEFAULT.bytes(),
            decoders: Arc::new(Semaphore::new(decoders())),
            retry: VecDeque::new(),
            attempts: BTreeMap::new(),
            held: BTreeMap::new(),
            in_flight_segments: 0,
            taken: 0,
            max_taken: None,
            first_take: None,
            last_take: None,
            steady: None,
            taken_segments: 0,
            published: 0,
            stalls: 0,
            failed: 0,
            downloaded: 0,
            last_sweep: Instant::now(),
            stop: CancellationToken::new(),
            placing_decided: false,
        }
    }

    fn report(&self, stop: Option<StopReason>) -> PipelineReport {
        let replay = replay_figure(
            self.segment_size,
            self.taken_segments,
            self.first_take,
            self.last_take,
            self.steady,
            self.stalls,
        );
        PipelineReport {
            planned: self.made as u64,
            last_segment: self.last_segment,
            published: self.published,
            taken: self.taken,
            stalls: self.stalls,
            failed: self.failed,
            downloaded_bytes: self.downloaded,
            replay,
            startup_seconds: self
                .watch
                .server_started
                .zip(self.first_take)
                .filter(|(started, first)| started <= first)
                .map(|(started, first)| first.duration_since(started).as_secs_f64()),
            end_seconds: None,
            stop: stop.unwrap_or(StopReason::Cancelled),
        }
    }

    /// Makes items until `want` exist (or the source runs out).
    async fn make_items(&mut self, want: usize, cancel: &CancellationToken) -> Result<()> {
        while self.made < want {
            let Some(source) = self.source.as_mut() else {
                return Ok(());
            };
            let repo = self.store.location().to_owned();
            let item = source
                .next(&self.store, cancel)
                .await
                .map_err(|e| crate::push::catalog_error(e, &repo))?;
            let Some(item) = item else {
                self.source = None;
                return Ok(());
            };
            self.first_made.get_or_insert(item.name);
            if let WalFileName::Segment(segment) = item.name {
                self.last_segment = Some(segment);
            }
            self.work.insert(self.made, item);
            self.made += 1;
        }
        Ok(())
    }

    /// Reads what the work list needs (the descriptor, history files), then fetches until a
    /// reason to stop.
    async fn run(&mut self, cancel: &CancellationToken) -> Result<StopReason> {
        let repo = self.store.location().to_owned();
        let descriptor = repo_io::load_descriptor(&self.store, cancel)
            .await
            .map_err(|e| crate::push::catalog_error(e, &repo))?
            .ok_or_else(|| Error::NoDescriptor { repo: repo.clone() })?;
        self.segment_size = descriptor.wal_segment_size.bytes();
        self.descriptor = Arc::new(descriptor);
        let timeline = self
            .options
            .timeline
            .or_else(|| configured_timeline(&self.options.pgdata));
        let (first, skip) = match self.options.start {
            PipelineStart::From(first) => (first, 0),
            PipelineStart::After(first) => (first, 1),
        };
        let follower = WalFollower::start(&self.store, &self.descriptor, first, timeline, cancel)
            .await
            .map_err(|e| crate::push::catalog_error(e, &repo))?;
        let target = follower.target();
        self.source = Some(WorkSource::new(follower, &self.options, skip));
        self.budget = match self.options.budget {
            Some(budget) => budget.max(self.segment_size),
            None => default_budget(
                free_bytes(&self.options.pgdata.join("pg_wal")).unwrap_or(0),
                self.segment_size,
            ),
        };
        let jobs = self.options.jobs.get();
        self.make_items(jobs + 1, cancel).await?;
        info!(
            timeline = target.get(),
            first = self.first_made.map(|n| n.to_string()),
            jobs,
            budget_bytes = self.budget,
            "WAL prefetch planned"
        );

        let mut tasks: JoinSet<(usize, Result<Fetched>)> = JoinSet::new();
        self.start_downloads(&mut tasks);
        // The first downloads are marked: a fetch of anything else need not wait any more.
        self.writer.mark_planned()?;
        loop {
            self.make_items(self.next + jobs + 1, cancel).await?;
            self.start_downloads(&mut tasks);
            tokio::select! {
                Some(joined) = tasks.join_next() => {
                    let (index, result) = match joined {
                        Ok(done) => done,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(_) => continue,
                    };
                    self.finish_download(index, result)?;
                }
                () = tokio::time::sleep(TICK) => {}
                () = cancel.cancelled() => {
                    self.drain(&mut tasks).await;
                    return Ok(StopReason::Cancelled);
                }
            }
            self.notice_taken()?;
            if let Some(stop) = self.watch.check() {
                self.drain(&mut tasks).await;
                return Ok(stop);
            }
            // Once recovery is configured (the restore that started it has written the
            // configuration), decide how fetch hands segments over.
            if !self.placing_decided && self.watch.saw_signal {
                self.placing_decided = true;
                if placing_allowed(&self.options.pgdata) {
                    self.writer.allow_placing()?;
                } else {
                    info!(
                        "archive_mode is 'always' or unknown: segments are handed over by rename"
                    );
                }
            }
        }
    }

    /// Cancels the downloads in flight and waits (a little) for them to end, so that no
    /// decode is still writing into the generation when it is removed.
    async fn drain(&mut self, tasks: &mut JoinSet<(usize, Result<Fetched>)>) {
        self.stop.cancel();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(joined) = tasks.join_next().await {
                if let Ok((_, Ok(fetched))) = joined {
                    fetched.file.discard();
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!("downloads did not stop within {DRAIN_TIMEOUT:?}; leaving them");
            tasks.abort_all();
        }
    }

    /// Starts downloads while there is room in `jobs` and in the budget.
    fn start_downloads(&mut self, tasks: &mut JoinSet<(usize, Result<Fetched>)>) {
        while tasks.len() < self.options.jobs.get() {
            let held_bytes = self.held.len() as u64 * self.segment_size;
            let in_flight = self.in_flight_segments as u64 * self.segment_size;
            // Over the budget, only when nothing at all is ahead of replay, one download.
            let idle = tasks.is_empty() && self.held.is_empty();
            if held_bytes + in_flight + self.segment_size > self.budget && !idle {
                return;
            }
            let index = match self.retry.pop_front() {
                Some(index) => index,
                None if self.next < self.made => {
                    self.next += 1;
                    self.next - 1
                }
                None => return,
            };
            let Some(&item) = self.work.get(&index) else {
                continue;
            };
            if let Err(e) = self.writer.mark_pending(&item.name) {
                warn!("{e}");
            }
            if item.segment {
                self.in_flight_segments += 1;
            }
            let store = self.store.clone();
            let descriptor = self.descriptor.clone();
            let decoders = self.decoders.clone();
            let files = self.writer.file_maker();
            let stop = self.stop.clone();
            tasks.spawn(async move {
                let result = download(&store, &item, &descriptor, &decoders, files, &stop).await;
                (
                    index,
                    result.map(|(file, downloaded)| Fetched {
                        index,
                        file,
                        downloaded,
                    }),
                )
            });
        }
    }

    /// Publishes a finished download, or schedules it again, or gives up on it.
    fn finish_download(&mut self, index: usize, result: Result<Fetched>) -> Result<()> {
        let Some(&item) = self.work.get(&index) else {
            return Ok(());
        };
        if item.segment {
            self.in_flight_segments -= 1;
        }
        match result {
            Ok(fetched) => {
                self.writer.publish_file(&item.name, fetched.file)?;
                self.downloaded += fetched.downloaded;
                self.published += 1;
                if item.segment {
                    // Everything before it was taken: replay is (about to be) waiting for it.
                    let waiting = self.max_taken.is_some_and(|max| max + 1 >= fetched.index)
                        && self.held.keys().all(|&held| held > fetched.index);
                    if waiting {
                        self.stalls += 1;
                        self.steady = None;
                    }
                }
                self.held.insert(index, item.name);
                debug!(file = %item.name, "prefetched");
            }
            Err(e) => {
                let attempt = self.attempts.entry(index).or_insert(0);
                *attempt += 1;
                let retry = *attempt < MAX_ATTEMPTS
                    && matches!(e.kind(), crate::ErrorKind::Storage)
                    && self.max_taken.is_none_or(|max| max < index);
                if retry {
                    warn!(file = %item.name, attempt = *attempt, "prefetch failed, trying again: {e}");
                    self.retry.push_back(index);
                } else {
                    // Fetch downloads it itself, and reports any error the way PostgreSQL
                    // needs it reported.
                    warn!(file = %item.name, "prefetch gave up; fetch will download it: {e}");
                    self.failed += 1;
                    self.writer.unmark_pending(&item.name)?;
                    self.work.remove(&index);
                    self.attempts.remove(&index);
                }
            }
        }
        Ok(())
    }

    /// Notices files fetch took; discards files replay went past.
    fn notice_taken(&mut self) -> Result<()> {
        let now = Instant::now();
        // Replay takes files in order: look from the oldest held until one is still there.
        while let Some((&index, &name)) = self.held.first_key_value() {
            if !self.writer.taken(&name)? {
                break;
            }
            self.held.remove(&index);
            self.took(index, now);
        }
        if self.last_sweep.elapsed() >= SWEEP_EVERY {
            self.last_sweep = now;
            let held: Vec<(usize, WalFileName)> =
                self.held.iter().map(|(&i, &name)| (i, name)).collect();
            for (index, name) in held {
                if self.writer.taken(&name)? {
                    self.held.remove(&index);
                    self.took(index, now);
                }
            }
            if let Some(max) = self.max_taken {
                let passed: Vec<(usize, WalFileName)> = self
                    .held
                    .range(..max)
                    .map(|(&i, &name)| (i, name))
                    .collect();
                for (index, name) in passed {
                    debug!(file = %name, "replay went past it; discarded");
                    self.writer.discard(&name)?;
                    self.held.remove(&index);
                    self.work.remove(&index);
                    self.attempts.remove(&index);
                }
            }
        }
        Ok(())
    }

    fn took(&mut self, index: usize, at: Instant) {
        self.taken += 1;
        self.max_taken = Some(self.max_taken.map_or(index, |max| max.max(index)));
        self.watch.activity(at);
        let item = self.work.remove(&index);
        self.attempts.remove(&index);
        if item.is_some_and(|item| item.segment) {
            self.taken_segments += 1;
            self.first_take.get_or_insert(at);
            self.last_take = Some(at);
            self.steady.get_or_insert((at, self.taken_segments));
        }
    }
}

/// Downloads `item`, decodes and verifies it into a new file of the spool, synced; returns
/// the file and the stored bytes downloaded.
async fn download(
    store: &Store,
    item: &Item,
    descriptor: &Arc<RepoDescriptor>,
    decoders: &Semaphore,
    files: FileMaker,
    cancel: &CancellationToken,
) -> Result<(SpoolFile, u64)> {
    let key = layout::wal_key(&item.name);
    let parts = if item.stored > RANGE_BYTES {
        let ranges = (0..item.stored)
            .step_by(usize::try_from(RANGE_BYTES).unwrap_or(usize::MAX))
            .map(|start| start..(start + RANGE_BYTES).min(item.stored));
        let gets = ranges.map(|range| store.get(&key, Some(range), cancel));
        let got = futures::future::try_join_all(gets)
            .await
            .map_err(|e| store_error("download", &key, store, e))?;
        // The object may have changed size since the listing; fetch it whole then.
        if got.iter().any(|g| g.object_size != item.stored) {
            vec![whole(store, &key, cancel).await?]
        } else {
            got.into_iter().map(|g| g.body).collect()
        }
    } else {
        vec![whole(store, &key, cancel).await?]
    };
    let downloaded = parts.iter().map(|p| p.len() as u64).sum();
    let _permit = decoders.acquire().await.map_err(|_| Error::Internal {
        message: "the decoder semaphore was closed".into(),
    })?;
    let name = item.name;
    let descriptor = descriptor.clone();
    let repo = store.location().to_owned();
    let k = key.to_string();
    let file = join_blocking(tokio::task::spawn_blocking(move || {
        let mut spool_file = files.create(&name)?;
        let path = PathBuf::from(format!("{}/{name}", crate::spool::SPOOL_DIR));
        let written = decode_into(
            &name,
            &k,
            parts,
            &descriptor,
            &repo,
            spool_file.file(),
            &path,
        )
        // PostgreSQL syncs every file restore_command gives it before using it; synced
        // here, off replay's path, that costs it little.
        .and_then(|_| {
            spool_file
                .file()
                .sync_all()
                .map_err(|source| Error::LocalIo {
                    action: "sync",
                    path: path.clone(),
                    source,
                })
        });
        match written {
            Ok(()) => Ok(spool_file),
            Err(e) => {
                spool_file.discard();
                Err(e)
            }
        }
    }))
    .await??;
    Ok((file, downloaded))
}

async fn whole(
    store: &Store,
    key: &walferry_store::ObjectKey,
    cancel: &CancellationToken,
) -> Result<Bytes> {
    store
        .get(key, None, cancel)
        .await
        .map(|g| g.body)
        .map_err(|e| store_error("download", key, store, e))
}

/// The number of decodes at once: replay needs a core of its own, and one core decodes faster
/// than PostgreSQL replays.
fn decoders() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
    (cores / 2).max(1)
}

/// The bytes available to unprivileged users on the filesystem of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The value of setting `name` in the data directory's configuration, as PostgreSQL reads it:
/// `postgresql.conf` (following `include`, `include_if_exists` and `include_dir`), then
/// `postgresql.auto.conf`, the last setting winning. `Ok(None)` when nothing sets it;
/// `Err(())` when a file that should be read cannot be, so that the value is unknown. A
/// simple reading: a value is what follows `=` up to a `#`, without quotes.
fn configured(pgdata: &Path, name: &str) -> std::result::Result<Option<String>, ()> {
    let mut value = None;
    read_conf(&pgdata.join("postgresql.conf"), name, &mut value, 0)?;
    let auto = pgdata.join("postgresql.auto.conf");
    if auto.exists() {
        read_conf(&auto, name, &mut value, 0)?;
    }
    Ok(value)
}

/// Reads `path` for [`configured`]; `depth` bounds nested includes as PostgreSQL does.
fn read_conf(
    path: &Path,
    name: &str,
    value: &mut Option<String>,
    depth: u32,
) -> std::result::Result<(), ()> {
    if depth > 10 {
        return Err(());
    }
    let text = fs::read_to_string(path).map_err(|_| ())?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let (key, rest) = match line.split_once(|c: char| c == '=' || c.is_whitespace()) {
            Some((key, rest)) => (key.trim(), rest.trim().trim_start_matches('=').trim()),
            None => continue,
        };
        let unquoted = rest.trim_matches('\'').to_owned();
        match key {
            "include" | "include_if_exists" => {
                let included = dir.join(&unquoted);
                if key == "include_if_exists" && !included.exists() {
                    continue;
                }
                read_conf(&included, name, value, depth + 1)?;
            }
            "include_dir" => {
                let included = dir.join(&unquoted);
                let mut files: Vec<PathBuf> = fs::read_dir(&included)
                    .map_err(|_| ())?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension().is_some_and(|e| e == "conf")
                            && !p
                                .file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    })
                    .collect();
                files.sort();
                for file in files {
                    read_conf(&file, name, value, depth + 1)?;
                }
            }
            key if key.eq_ignore_ascii_case(name) => *value = Some(unquoted),
            _ => {}
        }
    }
    Ok(())
}

/// `recovery_target_timeline` as a number; `None` for `latest`, `current`, no setting, or a
/// configuration that cannot be read: the pipeline then follows the newest timeline, a guess
/// that costs only speed when wrong, because fetch downloads whatever the spool lacks.
fn configured_timeline(pgdata: &Path) -> Option<TimelineId> {
    configured(pgdata, "recovery_target_timeline")
        .ok()
        .flatten()?
        .parse::<u32>()
        .ok()
        .and_then(|n| TimelineId::new(n).ok())
}

/// Whether fetch may hand segments over in `pg_wal` itself: the server does not archive the
/// files it restores (`archive_mode` is not `always`). PostgreSQL marks a file it restored
/// archived (`.done`) unless `archive_mode = always`, when it archives it again; a segment
/// read from `pg_wal` is marked `.done` by fetch, so with `always` (or a configuration that
/// cannot be read) segments are handed over by rename.
fn placing_allowed(pgdata: &Path) -> bool {
    match configured(pgdata, "archive_mode") {
        Ok(None) => true,
        Ok(Some(mode)) => matches!(
            mode.to_ascii_lowercase().as_str(),
            "on" | "off" | "true" | "false" | "yes" | "no" | "1" | "0"
        ),
        Err(()) => false,
    }
}

/// Where the work list comes from: for a restore, the history file of the target timeline
/// first; then the segments along the target timeline's path; then the history files
/// PostgreSQL probes at promotion that the archive holds.
#[derive(Debug)]
struct WorkSource {
    head: Option<Item>,
    follower: WalFollower,
    /// Segments to pass over first (the one a fetch took itself).
    skip: usize,
    last: Option<SegmentName>,
    segments_ended: bool,
    tail: VecDeque<Item>,
}

impl WorkSource {
    fn new(follower: WalFollower, options: &PipelineOptions, skip: usize) -> WorkSource {
        let history = |tli| Item {
            name: WalFileName::History(tli),
            // Unknown until downloaded, and small: fetched whole.
            stored: 0,
            segment: false,
        };
        let head = follower
            .target_history()
            .filter(|_| matches!(options.start, PipelineStart::From(_)))
            .map(history);
        let tail = follower
            .later_timelines()
            .iter()
            .copied()
            .map(history)
            .collect();
        WorkSource {
            head,
            follower,
            skip,
            last: options.last,
            segments_ended: false,
            tail,
        }
    }

    /// The next item, or `None` when there are no more.
    async fn next(
        &mut self,
        store: &Store,
        cancel: &CancellationToken,
    ) -> std::result::Result<Option<Item>, walferry_manifest::io::Error> {
        if let Some(head) = self.head.take() {
            return Ok(Some(head));
        }
        while !self.segments_ended {
            let Some((segment, stored)) = self.follower.next(store, cancel).await? else {
                self.segments_ended = true;
                break;
            };
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            if self.last == Some(segment) {
                self.segments_ended = true;
            }
            return Ok(Some(Item {
                name: WalFileName::Segment(segment),
                stored,
                segment: true,
            }));
        }
        Ok(self.tail.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use std::thread::JoinHandle;

    use walferry_manifest::ClusterIdentity;
    use walferry_store::{MemoryStore, PutMode, RetryConfig};
    use walferry_wal::header::INFO_LONG_HEADER;
    use walferry_wal::{
        HistoryEntry, LONG_HEADER_LEN, Lsn, PgVersion, SegmentHeader, TimelineHistory, WalSegSize,
    };

    use super::*;
    use crate::spool::{SPOOL_DIR, SpoolReader, Taken};

    const SYSID: u64 = 7_441_234_567_890_123_456;
    const SEGMENT: u64 = 16 << 20;
    /// How long a test waits for the pipeline before it fails.
    const WAIT: Duration = Duration::from_secs(60);

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    fn wal(name: &str) -> WalFileName {
        WalFileName::parse(name).unwrap()
    }

    /// The name of segment `segno` of timeline `tli`.
    fn seg(tli: u32, segno: u32) -> String {
        format!("{tli:08X}00000000{segno:08X}")
    }

    /// A segment of the default size with a valid first page header (saying `page_tli`, the
    /// timeline the segment's first byte belongs to) and its own name written into its second
    /// page, so that every segment's content is distinct.
    fn segment(name: &str, page_tli: u32) -> Vec<u8> {
        let name: SegmentName = name.parse().unwrap();
        let size = WalSegSize::DEFAULT;
        let header = SegmentHeader {
            pg_version: PgVersion::V15,
            info: INFO_LONG_HEADER,
            timeline: tli(page_tli),
            page_address: name.start_lsn(size).unwrap(),
            system_identifier: SYSID,
            segment_size: size,
            block_size: 8192,
        };
        let mut data = vec![0u8; size.as_usize()];
        data[..LONG_HEADER_LEN].copy_from_slice(&header.to_bytes());
        let marker = name.to_string();
        data[8192..8192 + marker.len()].copy_from_slice(marker.as_bytes());
        data
    }

    /// Runs `future` to completion on a runtime of its own.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// A repository holding the descriptor and, by name, the frames of `objects`.
    fn repository(objects: &[(String, Vec<u8>)]) -> Store {
        let store = Store::memory(MemoryStore::new(), RetryConfig::default());
        block_on(async {
            let cancel = CancellationToken::new();
            let identity = ClusterIdentity {
                system_identifier: SYSID,
                pg_version: PgVersion::V15,
                wal_segment_size: WalSegSize::DEFAULT,
            };
            repo_io::create_descriptor(&store, &RepoDescriptor::new(identity), &cancel)
                .await
                .unwrap();
            for (name, body) in objects {
                store
                    .put(
                        &layout::wal_key(&wal(name)),
                        Bytes::from(body.clone()),
                        PutMode::Create,
                        &cancel,
                    )
                    .await
                    .unwrap();
            }
        });
        store
    }

    /// Segments `segnos` of timeline 1, each a valid frame.
    fn timeline_1(segnos: std::ops::RangeInclusive<u32>) -> Vec<(String, Vec<u8>)> {
        segnos
            .map(|segno| {
                let name = seg(1, segno);
                let frame = walferry_codec::encode(&segment(&name, 1), 1).unwrap();
                (name, frame)
            })
            .collect()
    }

    /// A data directory being recovered: `pg_wal/` and `recovery.signal`.
    fn data_directory() -> tempfile::TempDir {
        let pgdata = tempfile::tempdir().unwrap();
        fs::create_dir(pgdata.path().join("pg_wal")).unwrap();
        fs::create_dir(pgdata.path().join("pg_wal/archive_status")).unwrap();
        fs::write(pgdata.path().join("recovery.signal"), b"").unwrap();
        fs::write(
            pgdata.path().join("postgresql.conf"),
            b"archive_mode = on\n",
        )
        .unwrap();
        pgdata
    }

    fn options(pgdata: &Path, from: &str, jobs: usize, budget_segments: u64) -> PipelineOptions {
        PipelineOptions {
            pgdata: pgdata.to_owned(),
            start: PipelineStart::From(from.parse().unwrap()),
            timeline: None,
            last: None,
            jobs: NonZeroUsize::new(jobs).unwrap(),
            budget: Some(budget_segments * SEGMENT),
            idle_timeout: Duration::from_secs(60),
            restore_pid: None,
        }
    }

    /// A pipeline running on threads of its own, and PostgreSQL's side of the spool.
    struct Running {
        pgdata: PathBuf,
        cancel: CancellationToken,
        handle: Option<JoinHandle<Result<PipelineReport>>>,
        reader: SpoolReader,
        /// Where "PostgreSQL" takes files to: its `%p`.
        dest: PathBuf,
    }

    impl Running {
        fn start(store: &Store, options: PipelineOptions) -> Running {
            let cancel = CancellationToken::new();
            let pgdata = options.pgdata.clone();
            let handle = {
                let (store, cancel) = (store.clone(), cancel.clone());
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(run(&store, &options, &cancel))
                })
            };
            let pg_wal = pgdata.join("pg_wal");
            Running {
                reader: SpoolReader::new(&pg_wal),
                dest: pg_wal.join("RECOVERYXLOG"),
                pgdata,
                cancel,
                handle: Some(handle),
            }
        }

        fn spool(&self) -> PathBuf {
            self.pgdata.join("pg_wal").join(SPOOL_DIR)
        }

        /// The live generation's directory, once the pipeline has created it.
        fn generation(&self) -> PathBuf {
            let current = self.spool().join("current");
            wait_for("the spool generation", || current.exists());
            let id = fs::read_to_string(&current).unwrap();
            self.spool().join(id.trim())
        }

        /// Takes `name` as `fetch` does, waiting until the pipeline has published it; returns
        /// its content.
        fn take(&self, name: &str) -> Vec<u8> {
            let deadline = Instant::now() + WAIT;
            loop {
                let taken = self
                    .reader
                    .take_waiting(&wal(name), &self.dest, WAIT)
                    .unwrap();
                if taken == Taken::Served {
                    return fs::read(&self.dest).unwrap();
                }
                // Placed in pg_wal: fetch answers "not found" and PostgreSQL reads it there.
                if taken == Taken::InPgWal {
                    return fs::read(self.pgdata.join("pg_wal").join(name)).unwrap();
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} was never served: {taken:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        fn is_finished(&self) -> bool {
            self.handle.as_ref().is_none_or(JoinHandle::is_finished)
        }

        /// Waits until the pipeline stops by itself; returns its report.
        fn join(&mut self) -> PipelineReport {
            wait_for("the pipeline to stop", || self.is_finished());
            let handle = self.handle.take().expect("joined once");
            handle.join().unwrap().unwrap()
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.cancel.cancel();
            if let Some(handle) = self.handle.take() {
                let _ = handle.join();
            }
        }
    }

    /// Polls `done` until it holds; panics after [`WAIT`].
    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The WAL files published in the generation at `gen_dir` and not taken yet, sorted.
    fn published(gen_dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(gen_dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|name| WalFileName::parse(name).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn follows_a_timeline_switch_inside_a_segment() {
        // Timeline 1 has segments 1–5; timeline 2 branched off it at 0/3800000, in segment 3,
        // and has segments 3–6. Its copy of segment 3 starts with timeline 1's WAL.
        let history = TimelineHistory::new(
            tli(2),
            vec![HistoryEntry {
                parent: tli(1),
                switch_point: Lsn(0x380_0000),
                reason: "no recovery target specified".into(),
            }],
        )
        .unwrap()
        .to_text();
        let mut objects = timeline_1(1..=5);
        for segno in 3..=6 {
            let name = seg(2, segno);
            let page_tli = if segno == 3 { 1 } else { 2 };
            let frame = walferry_codec::encode(&segment(&name, page_tli), 1).unwrap();
            objects.push((name, frame));
        }
        objects.push((
            "00000002.history".into(),
            walferry_codec::encode(history.as_bytes(), 1).unwrap(),
        ));
        let store = repository(&objects);
        let pgdata = data_directory();
        let mut options = options(pgdata.path(), &seg(1, 1), 2, 2);
        options.timeline = Some(tli(2));
        let mut pipeline = Running::start(&store, options);

        // The order PostgreSQL asks in, recovering from segment 1 towards timeline 2.
        let order = [
            "00000002.history".to_owned(),
            seg(1, 1),
            seg(1, 2),
            seg(2, 3),
            seg(2, 4),
            seg(2, 5),
            seg(2, 6),
        ];
        let gen_dir = pipeline.generation();
        for (i, name) in order.iter().enumerate() {
            // Nothing off the path is ever fetched, nor anything replay is past.
            for held in published(&gen_dir) {
                assert!(order[i..].contains(&held), "{held} published before {name}");
            }
            let content = pipeline.take(name);
            if name.ends_with(".history") {
                assert_eq!(content, history.as_bytes(), "{name}");
            } else {
                let page_tli = if name.starts_with("00000001") || *name == seg(2, 3) {
                    1
                } else {
                    2
                };
                assert!(
                    content == segment(name, page_tli),
                    "{name} has the wrong content"
                );
            }
        }
        // Timeline 1's copies of the switch segment and after were never fetched.
        for name in [seg(1, 3), seg(1, 4), seg(1, 5)] {
            assert_eq!(
                pipeline.reader.take(&wal(&name), &pipeline.dest).unwrap(),
                Taken::Miss,
                "{name}"
            );
        }
        fs::remove_file(pgdata.path().join("recovery.signal")).unwrap();
        let report = pipeline.join();
        assert_eq!(report.planned, 7);
        assert_eq!(report.published, 7);
        assert_eq!(report.taken, 7);
        assert_eq!(report.failed, 0);
    }

    #[test]
    fn holds_no_more_than_the_budget_ahead_of_a_slow_replay() {
        let objects = timeline_1(1..=8);
        let store = repository(&objects);
        let pgdata = data_directory();
        // Four downloads could be in flight, but the budget is three segments.
        let mut pipeline = Running::start(&store, options(pgdata.path(), &seg(1, 1), 4, 3));
        let gen_dir = pipeline.generation();
        let mut most = 0;
        for (i, (name, _)) in objects.iter().enumerate() {
            // The pipeline fills the budget ahead of replay...
            let ahead = (objects.len() - i).min(3);
            wait_for("the budget to fill", || published(&gen_dir).len() >= ahead);
            // ...and stays within it while replay is slow (a segment takes the pipeline some
            // 40 ms here). Only replay removes files, so a listing between two takes never
            // counts a file twice.
            std::thread::sleep(Duration::from_millis(150));
            most = most.max(published(&gen_dir).len());
            let content = pipeline.take(name);
            assert!(content == segment(name, 1), "{name} has the wrong content");
        }
        assert_eq!(most, 3);
        fs::remove_file(pgdata.path().join("recovery.signal")).unwrap();
        let report = pipeline.join();
        assert_eq!((report.published, report.taken), (8, 8));
    }

    #[test]
    fn gives_up_on_a_corrupt_object_and_goes_on() {
        let mut objects = timeline_1(1..=6);
        // Segment 3's frame is cut short.
        let half = objects[2].1.len() / 2;
        objects[2].1.truncate(half);
        let store = repository(&objects);
        let pgdata = data_directory();
        let mut pipeline = Running::start(&store, options(pgdata.path(), &seg(1, 1), 2, 8));
        let gen_dir = pipeline.generation();
        for name in [seg(1, 1), seg(1, 2)] {
            assert!(pipeline.take(&name) == segment(&name, 1), "{name}");
        }
        // Downloads start in order: once segment 4 is published, segment 3 was started.
        wait_for("segment 4", || published(&gen_dir).contains(&seg(1, 4)));
        let corrupt = wal(&seg(1, 3));
        let answer = pipeline
            .reader
            .take_waiting(&corrupt, &pipeline.dest, WAIT)
            .unwrap();
        assert_eq!(answer, Taken::Miss, "fetch downloads it itself");
        assert!(!published(&gen_dir).contains(&seg(1, 3)));
        assert!(fs::symlink_metadata(gen_dir.join(format!("{}.pending", seg(1, 3)))).is_err());
        for name in [seg(1, 4), seg(1, 5), seg(1, 6)] {
            assert!(pipeline.take(&name) == segment(&name, 1), "{name}");
        }
        fs::remove_file(pgdata.path().join("recovery.signal")).unwrap();
        let report = pipeline.join();
        assert_eq!(report.failed, 1);
        assert_eq!((report.published, report.taken), (5, 5));
    }

    #[test]
    fn discards_files_replay_went_past_and_frees_their_budget() {
        let objects = timeline_1(1..=8);
        let store = repository(&objects);
        let pgdata = data_directory();
        let mut pipeline = Running::start(&store, options(pgdata.path(), &seg(1, 1), 2, 3));
        let gen_dir = pipeline.generation();
        for segno in [1, 2] {
            pipeline.take(&seg(1, segno));
        }
        // Replay needs segment 4 and never asks for 3 (it found it in pg_wal, say).
        wait_for("segment 3", || published(&gen_dir).contains(&seg(1, 3)));
        pipeline.take(&seg(1, 4));
        wait_for("segment 3 to be discarded", || {
            !published(&gen_dir).contains(&seg(1, 3))
        });
        assert_eq!(
            pipeline
                .reader
                .take(&wal(&seg(1, 3)), &pipeline.dest)
                .unwrap(),
            Taken::Miss
        );
        // With segment 3 still counted, segments 5 and 6 would fill the budget and 7 would
        // never come.
        for segno in 5..=8 {
            let name = seg(1, segno);
            assert!(pipeline.take(&name) == segment(&name, 1), "{name}");
        }
        fs::remove_file(pgdata.path().join("recovery.signal")).unwrap();
        let report = pipeline.join();
        assert_eq!((report.published, report.taken), (8, 7));
    }

    #[test]
    fn stops_when_recovery_ends_and_removes_its_generation() {
        let objects = timeline_1(1..=12);
        let store = repository(&objects);
        let pgdata = data_directory();
        let mut pipeline = Running::start(&store, options(pgdata.path(), &seg(1, 1), 4, 12));
        let gen_dir = pipeline.generation();
        pipeline.take(&seg(1, 1));
        assert!(gen_dir.is_dir());
        // Recovery reached its target while the pipeline is still fetching further.
        fs::remove_file(pgdata.path().join("recovery.signal")).unwrap();
        let report = pipeline.join();
        assert_eq!(report.stop, StopReason::RecoveryEnded);
        assert_eq!(report.taken, 1);
        assert!(!gen_dir.exists(), "{:?}", published(&gen_dir));
        let left: Vec<_> = fs::read_dir(pipeline.spool()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            pipeline
                .reader
                .take(&wal(&seg(1, 2)), &pipeline.dest)
                .unwrap(),
            Taken::NoPipeline
        );
    }

    #[test]
    fn stops_after_the_idle_timeout_without_a_take() {
        let objects = timeline_1(1..=6);
        let store = repository(&objects);
        let pgdata = data_directory();
        let mut options = options(pgdata.path(), &seg(1, 1), 2, 8);
        // The clock runs from the start: the first file must be taken within it.
        let idle = Duration::from_secs(2);
        options.idle_timeout = idle;
        let mut pipeline = Running::start(&store, options);
        let gen_dir = pipeline.generation();
        // Takes keep it running for longer than the idle timeout...
        let mut first_take = None;
        let mut last_take = Instant::now();
        for (i, (name, _)) in objects.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            assert!(!pipeline.is_finished(), "stopped before {name}");
            // Before the take: the pipeline notices it only after the rename.
            last_take = Instant::now();
            first_take.get_or_insert(last_take);
            pipeline.take(name);
        }
        assert!(first_take.is_some_and(|first| last_take - first > idle));
        // ...and it stops once nothing is taken for that long.
        let report = pipeline.join();
        let stopped = Instant::now();
        assert_eq!(report.stop, StopReason::Idle);
        assert_eq!(report.taken, 6);
        assert!(stopped - last_take >= idle, "{:?}", stopped - last_take);
        assert!(!gen_dir.exists());
    }

    #[test]
    fn reads_settings_as_postgresql_does() {
        let pgdata = tempfile::tempdir().unwrap();
        let dir = pgdata.path();
        // No postgresql.conf: unknown.
        assert_eq!(configured(dir, "archive_mode"), Err(()));
        assert!(!placing_allowed(dir));

        fs::write(
            dir.join("postgresql.conf"),
            "# archive_mode = always\nshared_buffers = 1GB\narchive_mode = on   # on\n\
             include = 'extra.conf'\ninclude_if_exists = 'missing.conf'\ninclude_dir 'conf.d'\n",
        )
        .unwrap();
        fs::write(dir.join("extra.conf"), "recovery_target_timeline = '3'\n").unwrap();
        fs::create_dir(dir.join("conf.d")).unwrap();
        fs::write(dir.join("conf.d/b.conf"), "archive_mode = 'always'\n").unwrap();
        fs::write(dir.join("conf.d/a.conf"), "archive_mode = off\n").unwrap();
        fs::write(dir.join("conf.d/c.txt"), "archive_mode = on\n").unwrap();
        assert_eq!(configured(dir, "archive_mode"), Ok(Some("always".into())));
        assert!(!placing_allowed(dir));
        assert_eq!(configured_timeline(dir).map(TimelineId::get), Some(3));

        // postgresql.auto.conf is read last and wins.
        fs::write(
            dir.join("postgresql.auto.conf"),
            "ARCHIVE_MODE = 'on'\nrecovery_target_timeline = 'latest'\n",
        )
        .unwrap();
        assert_eq!(configured(dir, "archive_mode"), Ok(Some("on".into())));
        assert!(placing_allowed(dir));
        assert_eq!(configured_timeline(dir), None);
        assert_eq!(configured(dir, "wal_level"), Ok(None));

        // An include that cannot be read makes every value unknown.
        fs::write(dir.join("postgresql.conf"), "include = 'nowhere.conf'\n").unwrap();
        assert_eq!(configured(dir, "archive_mode"), Err(()));
        assert!(!placing_allowed(dir));
    }

    #[test]
    fn replay_is_measured_after_the_last_stall() {
        const MIB16: u64 = 16 << 20;
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        // (case, taken, first, last, steady, stalls) -> (bytes, seconds, stalls)
        let cases = [
            (
                "no stall",
                11,
                0.0,
                10.0,
                Some((at(0.0), 1)),
                0,
                Some((10, 10.0, 0)),
            ),
            // Two stalls at the start, then replay of 8 segments in 4 s.
            (
                "stalled at first",
                11,
                0.0,
                6.0,
                Some((at(2.0), 3)),
                2,
                Some((8, 4.0, 0)),
            ),
            // The stretch after the last stall is too short: the whole, stalls and all.
            (
                "stalled late",
                11,
                0.0,
                10.0,
                Some((at(8.0), 9)),
                5,
                Some((10, 10.0, 5)),
            ),
            // A stall after the last segment taken: no stretch at all.
            (
                "stalled at the end",
                11,
                0.0,
                10.0,
                None,
                1,
                Some((10, 10.0, 1)),
            ),
            ("one segment", 1, 0.0, 0.0, Some((at(0.0), 1)), 0, None),
        ];
        for (case, taken, first, last, steady, stalls, expected) in cases {
            let figure = replay_figure(
                MIB16,
                taken,
                Some(at(first)),
                Some(at(last)),
                steady,
                stalls,
            );
            let got = figure.map(|f| {
                (
                    f.wal_bytes / MIB16,
                    (f.seconds * 1000.0).round() / 1000.0,
                    f.stalls,
                )
            });
            assert_eq!(got, expected, "{case}");
        }
        assert_eq!(replay_figure(MIB16, 5, None, None, None, 0), None);
    }
}
