//! `verify`: check a repository end to end, and say what is wrong and what it breaks.
//!
//! [`verify()`] reads the descriptor, lists `wal/` and `backups/`, then downloads every object
//! and checks it, at most [`VerifyOptions::jobs`] at once:
//!
//! - every WAL file decodes (the frame's size and CRC-32); a segment or `.partial` segment
//!   has the repository's segment size and a first page header that matches the descriptor
//!   (system identifier, segment size, PostgreSQL version) and its name (timeline, address);
//!   a timeline history file parses;
//! - every committed backup's manifest loads and belongs to the repository's cluster, and each
//!   of its parts exists, decodes and has the size and CRC-32 its manifest records.
//!
//! Then [`continuity()`], which is pure, checks that the WAL that verified is enough: for each
//! backup, every segment from its start to its consistency point, and from there, following
//! the timeline graph, every segment to the end of the archived WAL of its timeline and of
//! every timeline reachable from it; and that every timeline with WAL (and every parent a
//! history file names) has its history file.
//!
//! Each finding is a [`Problem`]: the object's key, what is wrong with it, what it breaks and
//! a hint, printed as one line. Only storage failures (and a repository without a
//! descriptor) stop verification; everything else is reported and checking goes on. Each
//! download is decoded as a stream into a checksum, so a job holds one stored object in
//! memory at a time.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::io::{self, Read};
use std::num::NonZeroUsize;

use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinSet;
use tracing::{Instrument as _, debug, info};
use walferry_codec::Decoder;
use walferry_manifest::backup::BackupPart;
use walferry_manifest::io::{self as repo_io, MAX_HISTORY_BYTES};
use walferry_manifest::walindex::SegRange;
use walferry_manifest::{BackupSummary, RepoDescriptor, TimelineGraph, WalIndex, layout};
use walferry_store::{ArchiveStore, CancellationToken, ObjectKey, Store};
use walferry_wal::{
    ExpectedSegment, LONG_HEADER_LEN, Lsn, SegNo, SegmentHeader, SegmentName, TimelineHistory,
    TimelineId, WalFileName, WalSegSize,
};

use crate::error::{Error, Result};
use crate::part_check::scan_part;
use crate::push::manifest_error;
use crate::{MAX_OBJECT_BYTES, blocking, store_error};

/// The default number of objects downloaded and checked at once.
pub const DEFAULT_JOBS: NonZeroUsize = NonZeroUsize::new(4).expect("not zero");

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The most objects downloaded and checked at once.
    pub jobs: NonZeroUsize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { jobs: DEFAULT_JOBS }
    }
}

/// What verification found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// The repository URL.
    pub repository: String,
    /// Objects downloaded and checked (WAL files, backup manifests and parts).
    pub objects: u64,
    /// Their stored size.
    pub bytes: u64,
    /// Committed backups found (with a readable manifest or not).
    pub backups: u64,
    /// Things that are wrong, one per object and what it breaks.
    pub problems: Vec<Problem>,
    /// Things that are odd but break nothing: objects walferry did not write, backups that
    /// were interrupted.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The summary line: `verified N objects, X bytes: K problems`.
    pub fn summary(&self) -> String {
        let plural = |n: usize, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        format!(
            "verified {} objects, {} bytes: {}",
            self.objects,
            self.bytes,
            plural(self.problems.len(), "problem")
        )
    }

    /// The text form: one line per problem and note, then the summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&format!("problem: {p}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }
}

/// One thing wrong with a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The object concerned (for a run of missing segments, the first one).
    pub key: String,
    /// What is wrong with it: `is missing`, `is corrupt: ...`.
    pub problem: String,
    /// What it breaks: which backup cannot be restored, or cannot reach which timeline.
    pub breaks: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}; HINT: {}",
            self.key, self.problem, self.breaks, self.hint
        )
    }
}

const HINT_RECOPY: &str = "restore the object from another copy of the repository if one exists; otherwise take a new base backup";
const HINT_ARCHIVE: &str = "if a server still has the file in pg_wal, archive it with 'walferry-archive push'; otherwise take a new base backup";

/// Verifies the repository in `store`; see the [module documentation](self).
///
/// Returns the report, clean or not. Fails only when verification cannot go on: with
/// [`Error::NoDescriptor`] or [`Error::BadDescriptor`] for a repository without a usable
/// descriptor, [`Error::Store`] when the storage fails (after retries), and
/// [`Error::Cancelled`].
pub async fn verify(
    store: &Store,
    options: &VerifyOptions,
    cancel: &CancellationToken,
) -> Result<VerifyReport> {
    let span = tracing::info_span!("verify", repo = %store.location());
    async {
        let repo = store.location().to_owned();
        let descriptor = repo_io::load_descriptor(store, cancel)
            .await
            .map_err(|e| manifest_error(e, &repo))?
            .ok_or_else(|| Error::NoDescriptor { repo: repo.clone() })?;
        let mut report = VerifyReport {
            repository: repo.clone(),
            ..VerifyReport::default()
        };

        let mut jobs = Vec::new();
        for meta in list(store, layout::WAL_PREFIX, cancel).await? {
            match layout::parse_wal_key(&meta.key) {
                Some(name) => jobs.push(Job::Wal {
                    key: meta.key,
                    name,
                }),
                None => report.notes.push(format!(
                    "{} is not a WAL file walferry stores; nothing depends on it",
                    meta.key
                )),
            }
        }

        let backups = load_backups(store, &descriptor, &mut report, cancel).await?;
        for manifest in &backups {
            for part in &manifest.parts {
                match layout::backup_part_key(&manifest.label, &part.name) {
                    Ok(key) => jobs.push(Job::Part {
                        key,
                        label: manifest.label.clone(),
                        part: part.clone(),
                    }),
                    Err(reason) => report.problems.push(Problem {
                        key: layout::backup_manifest_key(&manifest.label)
                            .map(|k| k.to_string())
                            .unwrap_or_else(|_| manifest.label.clone()),
                        problem: format!("lists part '{}', which {reason}", part.name),
                        breaks: format!("backup {} cannot be restored", manifest.label),
                        hint: "the manifest is damaged; take a new base backup".into(),
                    }),
                }
            }
        }
        info!(objects = jobs.len(), "verifying");

        let outcomes = run_jobs(store, &descriptor, jobs, options.jobs, cancel).await?;
        let mut usable = Vec::new();
        let mut damaged = HashSet::new();
        let mut histories = Vec::new();
        for outcome in outcomes {
            if outcome.downloaded {
                report.objects += 1;
                report.bytes += outcome.stored_bytes;
            }
            if let Some(problem) = outcome.problem {
                report.problems.push(problem);
                if let Some(name) = outcome.wal {
                    damaged.insert(name);
                }
                continue;
            }
            if let Some(history) = outcome.history {
                histories.push(history);
            }
            if let Some(name) = outcome.wal {
                usable.push(name);
            }
        }
        let wal = WalIndex::from_names(descriptor.wal_segment_size, usable);
        let timelines = TimelineGraph::new(histories);
        let summaries: Vec<BackupSummary> = backups.iter().map(|m| m.summary()).collect();
        report.problems.extend(continuity(
            &Archive {
                wal: &wal,
                timelines: &timelines,
                damaged: &damaged,
            },
            &summaries,
        ));
        info!(
            objects = report.objects,
            bytes = report.bytes,
            problems = report.problems.len(),
            "verified"
        );
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Lists `prefix`, or fails with [`Error::Store`].
async fn list(
    store: &Store,
    prefix: &str,
    cancel: &CancellationToken,
) -> Result<Vec<walferry_store::ObjectMeta>> {
    store
        .list(prefix, cancel)
        .await
        .map_err(|source| Error::Store {
            action: "list",
            key: prefix.to_owned(),
            repo: store.location().to_owned(),
            source: Box::new(source),
        })
}

/// Lists `backups/` and loads every manifest; counts them (and their bytes) as verified
/// objects. A manifest that does not load, or belongs to another cluster, is a problem; a
/// backup without one is a note.
async fn load_backups(
    store: &Store,
    descriptor: &RepoDescriptor,
    report: &mut VerifyReport,
    cancel: &CancellationToken,
) -> Result<Vec<walferry_manifest::BackupManifest>> {
    // Label → the manifest's stored size, if the listing holds one.
    let mut labels: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for meta in list(store, layout::BACKUP_PREFIX, cancel).await? {
        if let Some(label) = layout::parse_backup_manifest_key(&meta.key) {
            labels.insert(label.to_owned(), Some(meta.size));
            continue;
        }
        match layout::backup_label_of(&meta.key) {
            Some(label) => {
                labels.entry(label.to_owned()).or_default();
            }
            None => report.notes.push(format!(
                "{} does not belong to a backup; nothing depends on it",
                meta.key
            )),
        }
    }

    let mut backups = Vec::new();
    for (label, size) in labels {
        let Some(size) = size else {
            report.notes.push(format!(
                "backups/{label}/ has no manifest.json: an interrupted or running backup, not a backup; its parts can be deleted once no backup is running"
            ));
            continue;
        };
        let key = format!("backups/{label}/{}", layout::MANIFEST_NAME);
        report.backups += 1;
        match repo_io::load_backup_manifest(store, &label, cancel).await {
            Ok(manifest) => {
                report.objects += 1;
                report.bytes += size;
                if let Err(mismatch) = descriptor.check(&manifest.identity()) {
                    report.problems.push(Problem {
                        key,
                        problem: format!("belongs to another cluster: {mismatch}"),
                        breaks: format!("backup {label} cannot be restored from this repository"),
                        hint: "each cluster needs its own repository; move the backup to the repository of its cluster".into(),
                    });
                    continue;
                }
                backups.push(manifest);
            }
            Err(e) if e.is_not_found() => {
                // Deleted since the listing: no longer a backup.
                report.backups -= 1;
            }
            Err(repo_io::Error::Store(source)) => {
                return Err(Error::Store {
                    action: "download",
                    key,
                    repo: store.location().to_owned(),
                    source: Box::new(source),
                });
            }
            Err(e) => {
                report.objects += 1;
                report.bytes += size;
                report.problems.push(Problem {
                    key,
                    problem: format!("is unreadable: {}", strip_key(&e.to_string(), &label)),
                    breaks: format!("backup {label} cannot be restored"),
                    hint: HINT_RECOPY.into(),
                });
            }
        }
    }
    Ok(backups)
}

/// The manifest errors name the key, which the problem line names already.
fn strip_key(text: &str, label: &str) -> String {
    let prefix = format!("backup manifest 'backups/{label}/manifest.json' ");
    text.strip_prefix(&prefix).unwrap_or(text).to_owned()
}

/// One object to download and check.
#[derive(Debug)]
enum Job {
    Wal {
        key: ObjectKey,
        name: WalFileName,
    },
    Part {
        key: ObjectKey,
        label: String,
        part: BackupPart,
    },
}

/// What checking one object found.
#[derive(Debug)]
struct Outcome {
    /// Whether the object was there to download.
    downloaded: bool,
    stored_bytes: u64,
    /// The WAL file's name, for a WAL object.
    wal: Option<WalFileName>,
    /// A history file that parsed.
    history: Option<TimelineHistory>,
    problem: Option<Problem>,
}

/// Downloads and checks every job, at most `jobs` at once; the outcomes in job order.
async fn run_jobs(
    store: &Store,
    descriptor: &RepoDescriptor,
    work: Vec<Job>,
    jobs: NonZeroUsize,
    cancel: &CancellationToken,
) -> Result<Vec<Outcome>> {
    let mut tasks: JoinSet<(usize, Result<Outcome>)> = JoinSet::new();
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(work.len());
    outcomes.resize_with(work.len(), || None);
    let keep = |(index, result): (usize, Result<Outcome>),
                outcomes: &mut Vec<Option<Outcome>>|
     -> Result<()> {
        if let Some(slot) = outcomes.get_mut(index) {
            *slot = Some(result?);
        }
        Ok(())
    };
    for (index, job) in work.into_iter().enumerate() {
        while tasks.len() >= jobs.get() {
            keep(join_one(&mut tasks).await?, &mut outcomes)?;
        }
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        let (store, descriptor, cancel) = (store.clone(), descriptor.clone(), cancel.clone());
        tasks.spawn(async move { (index, check_object(&store, &descriptor, job, &cancel).await) });
    }
    while !tasks.is_empty() {
        keep(join_one(&mut tasks).await?, &mut outcomes)?;
    }
    Ok(outcomes.into_iter().flatten().collect())
}

async fn join_one<T: 'static>(tasks: &mut JoinSet<T>) -> Result<T> {
    match tasks.join_next().await {
        Some(Ok(r)) => Ok(r),
        Some(Err(join)) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Some(Err(_)) | None => Err(Error::Internal {
            message: "a verify task was cancelled".into(),
        }),
    }
}

fn cancelled() -> Error {
    Error::Cancelled {
        operation: "verify".into(),
    }
}

/// Downloads one object and checks it. A missing or damaged object is a problem in the
/// outcome; a storage failure is an error.
async fn check_object(
    store: &Store,
    descriptor: &RepoDescriptor,
    job: Job,
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let key = match &job {
        Job::Wal { key, .. } | Job::Part { key, .. } => key.clone(),
    };
    let wal = match &job {
        Job::Wal { name, .. } => Some(*name),
        Job::Part { .. } => None,
    };
    let body: Bytes = match store.get(&key, None, cancel).await {
        Ok(got) => got.body,
        Err(e) if e.is_not_found() => {
            let (breaks, hint) = match &job {
                // Listed, then gone: deleted while verifying (expiry), or the store lost it.
                Job::Wal { name, .. } => (impact_of_wal(name), HINT_ARCHIVE.to_owned()),
                Job::Part { label, .. } => (
                    format!("backup {label} cannot be restored"),
                    HINT_RECOPY.to_owned(),
                ),
            };
            return Ok(Outcome {
                downloaded: false,
                stored_bytes: 0,
                wal: None,
                history: None,
                problem: Some(Problem {
                    key: key.to_string(),
                    problem: "is missing".into(),
                    breaks,
                    hint,
                }),
            });
        }
        Err(e) if e.is_cancelled() => return Err(cancelled()),
        Err(source) => return Err(store_error("download", &key, store, source)),
    };
    let stored_bytes = body.len() as u64;
    debug!(%key, bytes = stored_bytes, "checking");
    let descriptor = descriptor.clone();
    let k = key.to_string();
    let (history, problem) = blocking(move || {
        Ok(match &job {
            Job::Wal { name, .. } => match check_wal(name, &body, &descriptor) {
                Ok(history) => (history, None),
                Err(problem) => (
                    None,
                    Some(Problem {
                        key: k.clone(),
                        problem,
                        breaks: impact_of_wal(name),
                        hint: HINT_RECOPY.into(),
                    }),
                ),
            },
            Job::Part { label, part, .. } => match scan_part(&k, part, &body) {
                Ok(()) => (None, None),
                Err(e) => (
                    None,
                    Some(Problem {
                        key: k.clone(),
                        problem: part_problem(&e),
                        breaks: format!("backup {label} cannot be restored"),
                        hint: HINT_RECOPY.into(),
                    }),
                ),
            },
        })
    })
    .await?;
    Ok(Outcome {
        downloaded: true,
        stored_bytes,
        wal,
        history,
        problem,
    })
}

/// The problem text of a part error, without the key and hint the problem line carries.
fn part_problem(e: &Error) -> String {
    match e {
        Error::Corrupt { source, .. } => format!("is corrupt: {source}"),
        Error::PartMismatch { reason, .. } => format!("does not match its manifest: {reason}"),
        other => other.to_string(),
    }
}

/// What a damaged WAL file breaks, before the continuity analysis says which backups.
fn impact_of_wal(name: &WalFileName) -> String {
    match name {
        WalFileName::Segment(seg) => format!(
            "recovery that needs segment {seg} of timeline {} stops there",
            seg.tli()
        ),
        WalFileName::Partial(seg) => format!(
            "the last WAL of timeline {} (after its last complete segment) is lost",
            seg.tli()
        ),
        WalFileName::History(tli) => {
            format!("recovery cannot follow timeline {tli} or the timelines that branch from it")
        }
        WalFileName::BackupHistory { .. } => {
            "nothing: PostgreSQL does not need backup history files to recover".into()
        }
    }
}

/// Checks a WAL object; a parsed history for a history file. The error is the problem text.
fn check_wal(
    name: &WalFileName,
    body: &[u8],
    descriptor: &RepoDescriptor,
) -> std::result::Result<Option<TimelineHistory>, String> {
    let corrupt = |e: walferry_codec::Error| format!("is corrupt: {e}");
    match name {
        WalFileName::Segment(seg) | WalFileName::Partial(seg) => {
            let size = descriptor.wal_segment_size;
            let mut decoder = Decoder::with_limit(body, size.bytes()).map_err(corrupt)?;
            let mut first = [0u8; LONG_HEADER_LEN];
            let got = read_full(&mut decoder, &mut first).map_err(|e| corrupt(e.into()))?;
            io::copy(&mut decoder.by_ref(), &mut io::sink()).map_err(|e| corrupt(e.into()))?;
            let summary = decoder.finish().map_err(corrupt)?;
            if summary.len != size.bytes() {
                return Err(format!(
                    "is {} bytes, the repository's segments are {} bytes",
                    summary.len,
                    size.bytes()
                ));
            }
            let header = SegmentHeader::parse(&first[..got])
                .map_err(|e| format!("does not start with a valid page header: {e}"))?;
            header
                .check(&ExpectedSegment {
                    name: *seg,
                    system_identifier: Some(descriptor.system_identifier),
                    segment_size: Some(size),
                    pg_version: Some(descriptor.pg_version),
                })
                .map_err(|e| format!("does not hold what its name says: {e}"))?;
            Ok(None)
        }
        WalFileName::History(tli) => {
            let data = walferry_codec::decode(body, MAX_HISTORY_BYTES).map_err(corrupt)?;
            let text = std::str::from_utf8(&data)
                .map_err(|_| "is not a valid history file: it is not text".to_owned())?;
            TimelineHistory::parse(*tli, text)
                .map(Some)
                .map_err(|e| format!("is not a valid history file: {e}"))
        }
        WalFileName::BackupHistory { .. } => {
            let mut decoder = Decoder::with_limit(body, MAX_OBJECT_BYTES).map_err(corrupt)?;
            io::copy(&mut decoder.by_ref(), &mut io::sink()).map_err(|e| corrupt(e.into()))?;
            decoder.finish().map_err(corrupt)?;
            Ok(None)
        }
    }
}

/// Reads until `buf` is full or the input ends; the number of bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The WAL that verified, for [`continuity()`].
#[derive(Debug, Clone, Copy)]
pub struct Archive<'a> {
    /// Every WAL file that verified.
    pub wal: &'a WalIndex,
    /// The graph of the history files that verified.
    pub timelines: &'a TimelineGraph,
    /// WAL files that exist but failed verification (reported on their own): they count as
    /// missing, and are named as unusable rather than missing.
    pub damaged: &'a HashSet<WalFileName>,
}

/// Why a backup needs a segment.
#[derive(Debug, Clone, Copy)]
enum Need<'a> {
    /// To reach consistency.
    Consistency(&'a str),
    /// To reach the end of the archived WAL of a timeline.
    EndOf(&'a str, TimelineId),
}

/// What a gap in the WAL breaks, per backup.
#[derive(Debug, Default, PartialEq, Eq)]
struct Impact {
    /// Backups that cannot reach consistency.
    consistency: BTreeSet<String>,
    /// Backups that cannot reach the end of these timelines.
    end_of: BTreeMap<String, BTreeSet<TimelineId>>,
}

/// Checks that the archived WAL is enough for `backups` (see the [module documentation](self))
/// and that every timeline's history file is there. Pure.
///
/// For each backup: every segment from the one holding its start LSN to the one holding its
/// consistency point, on its timeline; then, for each timeline whose path (as recovery
/// towards it follows it) holds the backup's consistency point, every segment recovery reads
/// on that path from there to the last archived segment of that timeline. A segment holding
/// a switch point is read from the new timeline, as PostgreSQL does. One problem per gap,
/// naming its first segment and every backup it cuts off.
pub fn continuity(archive: &Archive<'_>, backups: &[BackupSummary]) -> Vec<Problem> {
    let wal = archive.wal;
    let size = wal.segment_size();
    // Every missing range some backup needs, with what its absence breaks.
    let mut needed: Vec<(TimelineId, SegRange, Need)> = Vec::new();
    for b in backups {
        let tli = b.start_timeline;
        let start = b.start_lsn.segment_number(size);
        let stop = end_segment(b.stop_lsn, size).max(start);
        for gap in wal.gaps(tli, start, stop) {
            needed.push((tli, gap, Need::Consistency(&b.label)));
        }
        for target in archive.timelines.timelines() {
            let Some(path) = archive.timelines.path(target) else {
                continue;
            };
            if !path.contains_end(b.stop_timeline, b.stop_lsn) {
                continue;
            }
            let steps = path.steps();
            let Some(at) = steps.iter().position(|s| s.timeline == b.stop_timeline) else {
                continue;
            };
            for step in &steps[at..] {
                let from = if step.timeline == b.stop_timeline {
                    stop
                } else {
                    step.begin.segment_number(size)
                };
                let to = match step.end {
                    // The segment holding the switch point is read from the next timeline.
                    Some(end) => end.segment_number(size).prev(),
                    None => last_archived(archive, step.timeline),
                };
                let Some(to) = to else { continue };
                for gap in wal.gaps(step.timeline, from, to) {
                    needed.push((step.timeline, gap, Need::EndOf(&b.label, target)));
                }
            }
        }
    }

    // Cut the needed ranges at every range end and around every damaged segment, so that
    // each piece is wholly missing or wholly damaged and needed by the same backups; then
    // join adjacent pieces that are alike. One problem per piece.
    let mut by_timeline: BTreeMap<TimelineId, Vec<(SegRange, Need<'_>)>> = BTreeMap::new();
    for (tli, range, need) in needed {
        by_timeline.entry(tli).or_default().push((range, need));
    }
    let mut problems = Vec::new();
    for (tli, needs) in by_timeline {
        let damaged: BTreeSet<SegNo> = archive
            .damaged
            .iter()
            .filter_map(|name| match name {
                WalFileName::Segment(seg) if seg.tli() == tli => seg.segno(size).ok(),
                _ => None,
            })
            .filter(|segno| needs.iter().any(|(range, _)| range.contains(*segno)))
            .collect();
        let mut cuts: BTreeSet<SegNo> = BTreeSet::new();
        for (range, _) in &needs {
            cuts.insert(range.first());
            cuts.extend(range.last().next());
        }
        for segno in &damaged {
            cuts.insert(*segno);
            cuts.extend(segno.next());
        }
        let cuts: Vec<SegNo> = cuts.into_iter().collect();
        let mut pieces: Vec<(SegRange, bool, Impact)> = Vec::new();
        for (i, first) in cuts.iter().enumerate() {
            let last = match cuts.get(i + 1) {
                Some(next) => next.prev().unwrap_or(*first),
                None => *first,
            };
            let mut impact = Impact::default();
            for (range, need) in &needs {
                if !range.contains(*first) {
                    continue;
                }
                match need {
                    Need::Consistency(label) => {
                        impact.consistency.insert((*label).to_owned());
                    }
                    Need::EndOf(label, target) => {
                        impact
                            .end_of
                            .entry((*label).to_owned())
                            .or_default()
                            .insert(*target);
                    }
                }
            }
            if impact.consistency.is_empty() && impact.end_of.is_empty() {
                continue;
            }
            let bad = damaged.contains(first);
            match pieces.last_mut() {
                Some((run, was_bad, was))
                    if *was_bad == bad && *was == impact && run.last().next() == Some(*first) =>
                {
                    *run = SegRange::new(run.first(), last);
                }
                _ => pieces.push((SegRange::new(*first, last), bad, impact)),
            }
        }
        for (run, bad, impact) in pieces {
            problems.push(gap_problem(archive, tli, run, bad, &impact));
        }
    }
    problems.extend(missing_histories(archive));
    problems
}

/// The last segment of `tli` in the archive, whether it verified or not: a damaged last
/// segment still marks how far the timeline's WAL was archived.
fn last_archived(archive: &Archive<'_>, tli: TimelineId) -> Option<SegNo> {
    let size = archive.wal.segment_size();
    let damaged = archive
        .damaged
        .iter()
        .filter_map(|name| match name {
            WalFileName::Segment(seg) if seg.tli() == tli => seg.segno(size).ok(),
            _ => None,
        })
        .max();
    archive.wal.last(tli).max(damaged)
}

/// The last segment recovery must read to reach `stop`: the one holding the byte before it.
fn end_segment(stop: Lsn, size: WalSegSize) -> SegNo {
    Lsn(stop.0.saturating_sub(1)).segment_number(size)
}

fn segment_name(tli: TimelineId, segno: SegNo, size: WalSegSize) -> Option<WalFileName> {
    SegmentName::new(tli, segno, size)
        .ok()
        .map(WalFileName::Segment)
}

fn gap_problem(
    archive: &Archive<'_>,
    tli: TimelineId,
    gap: SegRange,
    damaged: bool,
    impact: &Impact,
) -> Problem {
    let size = archive.wal.segment_size();
    let first = segment_name(tli, gap.first(), size);
    let key = first.as_ref().map_or_else(
        || format!("segment {} of timeline {tli}", gap.first().0),
        |n| layout::wal_key(n).to_string(),
    );
    let what = if damaged {
        "failed verification (see above)"
    } else {
        "is missing"
    };
    let problem = if gap.len() == 1 {
        what.to_owned()
    } else {
        let last = segment_name(tli, gap.last(), size)
            .map_or_else(|| gap.last().0.to_string(), |n| n.to_string());
        format!(
            "{what}, and so does every segment after it through {last} ({} segments)",
            gap.len()
        )
    };
    let mut breaks = Vec::new();
    for label in &impact.consistency {
        breaks.push(format!("backup {label} cannot reach consistency"));
    }
    for (label, targets) in &impact.end_of {
        if impact.consistency.contains(label) {
            continue;
        }
        let list: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        let noun = if list.len() == 1 {
            "timeline"
        } else {
            "timelines"
        };
        breaks.push(format!(
            "backup {label} cannot reach the end of {noun} {}",
            list.join(", ")
        ));
    }
    Problem {
        key,
        problem,
        breaks: breaks.join(", and "),
        hint: if impact.consistency.is_empty() {
            HINT_ARCHIVE.into()
        } else {
            "if a server still has the file in pg_wal, archive it with 'walferry-archive push'; otherwise the backup is unusable: take a new base backup".into()
        },
    }
}

/// A problem for every timeline with archived WAL but no history file (timelines after 1),
/// and for every parent timeline a history file names without its own history file. A
/// history file that exists but failed verification was reported already.
fn missing_histories(archive: &Archive<'_>) -> Vec<Problem> {
    let size = archive.wal.segment_size();
    // Timeline → why its history is needed.
    let mut missing: BTreeMap<TimelineId, Vec<String>> = BTreeMap::new();
    let known = |tli: TimelineId| {
        tli == TimelineId::FIRST
            || archive.timelines.contains(tli)
            || archive.damaged.contains(&WalFileName::History(tli))
    };
    for tli in archive.wal.timelines() {
        if known(tli) {
            continue;
        }
        let first = archive
            .wal
            .first(tli)
            .or_else(|| {
                archive
                    .wal
                    .timeline(tli)
                    .and_then(|t| t.partials().first().copied())
            })
            .and_then(|segno| SegmentName::new(tli, segno, size).ok());
        let from = first.map(|n| format!(" from {n}")).unwrap_or_default();
        missing.entry(tli).or_default().push(format!(
            "timeline {tli} has archived WAL{from} that recovery cannot follow, so nothing after its branch point can be restored"
        ));
    }
    for tli in archive.timelines.timelines() {
        let Some(history) = archive.timelines.history(tli) else {
            continue;
        };
        for parent in history.ancestors() {
            if !known(parent) {
                missing.entry(parent).or_default().push(format!(
                    "the history of timeline {tli} names timeline {parent} as an ancestor"
                ));
            }
        }
    }
    missing
        .into_iter()
        .map(|(tli, why)| Problem {
            key: layout::wal_key(&WalFileName::History(tli)).to_string(),
            problem: "is missing (missing history file)".into(),
            breaks: why.join(", and "),
            hint: format!(
                "copy pg_wal/{} from the server that created timeline {tli} (or a standby of it) and archive it with 'walferry-archive push'",
                WalFileName::History(tli)
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use walferry_manifest::{ClusterIdentity, Timestamp};
    use walferry_wal::PgVersion;

    use super::*;

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    fn names(list: &[&str]) -> WalIndex {
        WalIndex::from_names(
            WalSegSize::DEFAULT,
            list.iter().map(|n| WalFileName::parse(n).unwrap()),
        )
    }

    /// Segments `from..=to` of timeline `t` as names.
    fn segs(t: u32, from: u32, to: u32) -> Vec<String> {
        (from..=to)
            .map(|s| format!("{t:08X}00000000{s:08X}"))
            .collect()
    }

    fn backup(label: &str, t: u32, start: u64, stop: u64) -> BackupSummary {
        BackupSummary {
            label: label.into(),
            identity: ClusterIdentity {
                system_identifier: 42,
                pg_version: PgVersion::from_major(15).unwrap(),
                wal_segment_size: WalSegSize::DEFAULT,
            },
            start_lsn: Lsn(start),
            start_timeline: tli(t),
            stop_lsn: Lsn(stop),
            stop_timeline: tli(t),
            start_time: Timestamp::parse("2026-11-25T05:00:00Z").unwrap(),
            stop_time: Timestamp::parse("2026-11-25T05:00:07Z").unwrap(),
        }
    }

    fn history(t: u32, text: &str) -> TimelineHistory {
        TimelineHistory::parse(tli(t), text).unwrap()
    }

    fn check(
        wal: &[String],
        histories: Vec<TimelineHistory>,
        damaged: &[&str],
        backups: &[BackupSummary],
    ) -> Vec<String> {
        let refs: Vec<&str> = wal.iter().map(String::as_str).collect();
        let index = names(&refs);
        let graph = TimelineGraph::new(histories);
        let damaged: HashSet<WalFileName> = damaged
            .iter()
            .map(|n| WalFileName::parse(n).unwrap())
            .collect();
        continuity(
            &Archive {
                wal: &index,
                timelines: &graph,
                damaged: &damaged,
            },
            backups,
        )
        .iter()
        .map(Problem::to_string)
        .collect()
    }

    #[test]
    fn a_complete_archive_has_no_problems() {
        let mut wal = segs(1, 1, 6);
        wal.extend(segs(2, 4, 8));
        wal.push("00000002.history".into());
        let problems = check(
            &wal,
            vec![history(2, "1\t0/4800000\tpromoted\n")],
            &[],
            &[backup("b1", 1, 0x100_0028, 0x200_0100)],
        );
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn a_gap_in_a_backup_range_breaks_consistency() {
        let mut wal = segs(1, 1, 1);
        wal.extend(segs(1, 3, 6));
        let problems = check(
            &wal,
            vec![],
            &[],
            &[backup("b1", 1, 0x100_0028, 0x300_0100)],
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "wal/0000000100000000/000000010000000000000002 is missing: backup b1 cannot reach consistency; HINT: "
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn a_gap_after_a_backup_cuts_off_the_end_of_its_timelines() {
        // Timeline 1: 1–3, 5–9; timeline 2 branches at 0/7800000 (segment 7) with 7–9.
        let mut wal = segs(1, 1, 3);
        wal.extend(segs(1, 5, 9));
        wal.extend(segs(2, 7, 9));
        let problems = check(
            &wal,
            vec![history(2, "1\t0/7800000\tpromoted\n")],
            &[],
            &[
                backup("b1", 1, 0x100_0028, 0x200_0100),
                // After the gap: not affected.
                backup("b2", 1, 0x500_0028, 0x500_0100),
            ],
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "wal/0000000100000000/000000010000000000000004 is missing: backup b1 cannot reach the end of timelines 1, 2; HINT: "
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn the_new_timeline_needs_its_copy_of_the_switch_segment() {
        // Timeline 2 branches inside segment 4, but its copy of segment 4 is missing; and
        // timeline 1's segments after the switch do not matter to timeline 2.
        let mut wal = segs(1, 1, 6);
        wal.extend(segs(2, 5, 6));
        let problems = check(
            &wal,
            vec![history(2, "1\t0/4800000\tpromoted\n")],
            &[],
            &[backup("b1", 1, 0x100_0028, 0x200_0100)],
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "wal/0000000200000000/000000020000000000000004 is missing: backup b1 cannot reach the end of timeline 2;"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn damaged_segments_and_runs_are_named() {
        // 3 failed verification, 5 and 6 are missing.
        let mut wal = segs(1, 1, 2);
        wal.extend(segs(1, 4, 4));
        wal.extend(segs(1, 7, 7));
        let problems = check(
            &wal,
            vec![],
            &["000000010000000000000003"],
            &[backup("b1", 1, 0x100_0028, 0x300_0100)],
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "wal/0000000100000000/000000010000000000000003 failed verification (see above): backup b1 cannot reach consistency;"
            ),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with(
                "wal/0000000100000000/000000010000000000000005 is missing, and so does every segment after it through 000000010000000000000006 (2 segments): backup b1 cannot reach the end of timeline 1;"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn a_damaged_last_segment_still_ends_the_timeline() {
        let problems = check(
            &segs(1, 1, 3),
            vec![],
            &["000000010000000000000004"],
            &[backup("b1", 1, 0x100_0028, 0x200_0100)],
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "wal/0000000100000000/000000010000000000000004 failed verification (see above): backup b1 cannot reach the end of timeline 1;"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn missing_history_files_are_problems() {
        // Timeline 2 has WAL but no history; timeline 4's history names 3, which has none.
        let mut wal = segs(1, 1, 3);
        wal.extend(segs(2, 3, 4));
        wal.extend(segs(4, 5, 5));
        let problems = check(
            &wal,
            vec![history(
                4,
                "1\t0/2800000\tpromoted\n3\t0/4800000\tpromoted again\n",
            )],
            &[],
            &[],
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "wal/00000002.history is missing (missing history file): timeline 2 has archived WAL from 000000020000000000000003"
            ),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with(
                "wal/00000003.history is missing (missing history file): the history of timeline 4 names timeline 3 as an ancestor"
            ),
            "{problems:?}"
        );
        assert!(problems[1].contains("HINT: copy pg_wal/00000003.history"));

        // A history file that failed verification is reported on its own, not again here.
        let problems = check(&wal, vec![], &["00000002.history"], &[]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("wal/00000004.history"),
            "{problems:?}"
        );
    }
}

#[cfg(test)]
mod driver_tests {
    use std::num::NonZeroU64;

    use walferry_manifest::backup::Oid;
    use walferry_manifest::{ClusterIdentity, io as repo_io};
    use walferry_store::{MemoryStore, PutMode, RetryConfig};
    use walferry_wal::{PgVersion, header::INFO_LONG_HEADER};

    use super::*;
    use crate::backup::parts::tests::manifest_around;
    use crate::backup::parts::{PartOptions, PartWriter};
    use crate::tar::tests::archive;

    const LABEL: &str = "20261125T050000Z";
    const SYSID: u64 = 7_441_234_567_890_123_456;

    fn key(raw: &str) -> ObjectKey {
        ObjectKey::new(raw).unwrap()
    }

    /// A segment of the default size holding only a valid first page header.
    fn segment(name: &str) -> Vec<u8> {
        let name: SegmentName = name.parse().unwrap();
        let size = WalSegSize::DEFAULT;
        let header = SegmentHeader {
            pg_version: PgVersion::V15,
            info: INFO_LONG_HEADER,
            timeline: name.tli(),
            page_address: name.start_lsn(size).unwrap(),
            system_identifier: SYSID,
            segment_size: size,
            block_size: 8192,
        };
        let mut data = vec![0u8; size.as_usize()];
        data[..LONG_HEADER_LEN].copy_from_slice(&header.to_bytes());
        data
    }

    async fn put(store: &Store, k: &ObjectKey, body: Vec<u8>) {
        store
            .put(
                k,
                Bytes::from(body),
                PutMode::Overwrite,
                &CancellationToken::new(),
            )
            .await
            .unwrap();
    }

    /// Timeline 1 with segments 4–7, and backup LABEL (start and stop in segment 5) in
    /// 1000-byte parts, with a tablespace.
    async fn repository() -> (Store, walferry_manifest::BackupManifest) {
        let store = Store::memory(MemoryStore::new(), RetryConfig::default());
        let cancel = CancellationToken::new();
        let identity = ClusterIdentity {
            system_identifier: SYSID,
            pg_version: PgVersion::V15,
            wal_segment_size: WalSegSize::DEFAULT,
        };
        repo_io::create_descriptor(&store, &RepoDescriptor::new(identity), &cancel)
            .await
            .unwrap();
        for seg in 4..=7 {
            let name = format!("00000001000000000000000{seg}");
            let k = layout::wal_key(&WalFileName::parse(&name).unwrap());
            put(
                &store,
                &k,
                walferry_codec::encode(&segment(&name), 1).unwrap(),
            )
            .await;
        }
        let content: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let base = archive(&[
            ("PG_VERSION", b'0', b"15\n", ""),
            ("big", b'0', &content, ""),
        ]);
        let ts = archive(&[("PG_15_202209061", b'5', b"", "")]);
        let (mut parts, mut files) = (Vec::new(), Vec::new());
        for (tablespace, data) in [(Some(Oid(16385)), &ts), (None, &base)] {
            let options = PartOptions {
                part_size: NonZeroU64::new(1000).unwrap(),
                level: 3,
            };
            let mut writer = PartWriter::new(tablespace, options).unwrap();
            let mut stored = writer.feed(data).unwrap();
            let (last, f, p) = writer.finish().unwrap();
            stored.extend(last);
            for part in stored {
                let k = layout::backup_part_key(LABEL, &part.name).unwrap();
                put(&store, &k, part.body).await;
            }
            parts.extend(p);
            files.extend(f);
        }
        let manifest = manifest_around(LABEL, Oid(16385), ts.len() as u64, parts, files);
        repo_io::save_backup_manifest(&store, &manifest, &cancel)
            .await
            .unwrap();
        (store, manifest)
    }

    async fn run(store: &Store, jobs: usize) -> VerifyReport {
        let options = VerifyOptions {
            jobs: NonZeroUsize::new(jobs).unwrap(),
        };
        verify(store, &options, &CancellationToken::new())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_clean_repository_verifies() {
        let (store, manifest) = repository().await;
        let report = run(&store, 4).await;
        assert!(report.is_clean(), "{}", report.to_text());
        let objects = 4 + manifest.parts.len() as u64 + 1;
        assert_eq!(report.objects, objects);
        assert!(
            report
                .summary()
                .starts_with(&format!("verified {objects} objects, ")),
            "{}",
            report.summary()
        );
        assert!(report.summary().ends_with(": 0 problems"));
        // The sequential path finds the same.
        assert_eq!(run(&store, 1).await.objects, objects);
    }

    #[tokio::test]
    async fn reports_every_damaged_object_and_goes_on() {
        let (store, manifest) = repository().await;
        let cancel = CancellationToken::new();
        // Segment 5 (the backup's) deleted, segment 6 holds segment 7's content.
        let seg5 = key("wal/0000000100000000/000000010000000000000005");
        store.delete(&seg5, &cancel).await.unwrap();
        let seg6 = key("wal/0000000100000000/000000010000000000000006");
        let seven = walferry_codec::encode(&segment("000000010000000000000007"), 1).unwrap();
        put(&store, &seg6, seven).await;
        // A part with a flipped byte, and another part deleted.
        // (A byte of a tiny frame's zstd header may change nothing decoded; 0001 is content.)
        let part = &manifest.parts[3];
        assert_eq!(part.name, "base.tar.0001.zst");
        let part_key = layout::backup_part_key(LABEL, &part.name).unwrap();
        let mut body = store
            .get(&part_key, None, &cancel)
            .await
            .unwrap()
            .body
            .to_vec();
        let middle = body.len() / 2;
        body[middle] ^= 0x5a;
        put(&store, &part_key, body).await;
        let gone = layout::backup_part_key(LABEL, &manifest.parts[2].name).unwrap();
        store.delete(&gone, &cancel).await.unwrap();
        // A history file that is not a frame: load_catalog would stop here, verify goes on.
        put(&store, &key("wal/00000002.history"), b"garbage".to_vec()).await;
        // An interrupted backup and a stray object: notes, not problems.
        put(
            &store,
            &key("backups/other/base.tar.0000.zst"),
            b"x".to_vec(),
        )
        .await;
        put(&store, &key("wal/README"), b"x".to_vec()).await;

        let report = run(&store, 2).await;
        let text = report.to_text();
        let expect = [
            format!("problem: {seg5} is missing: backup {LABEL} cannot reach consistency;"),
            format!("problem: {seg6} does not hold what its name says:"),
            format!("problem: {part_key} is corrupt:"),
            format!("problem: {gone} is missing: backup {LABEL} cannot be restored;"),
            "problem: wal/00000002.history is corrupt:".to_owned(),
        ];
        for line in &expect {
            assert!(text.contains(line.as_str()), "lacks {line:?}:\n{text}");
        }
        assert_eq!(report.problems.len(), expect.len() + 1, "{text}");
        // Segment 6 failed verification, so the backup cannot reach the end of timeline 1.
        assert!(
            text.contains(&format!(
                "problem: {seg6} failed verification (see above): backup {LABEL} cannot reach the end of timeline 1;"
            )),
            "{text}"
        );
        assert!(
            text.contains("note: backups/other/ has no manifest.json"),
            "{text}"
        );
        assert!(
            text.contains("note: wal/README is not a WAL file"),
            "{text}"
        );
        assert!(text.ends_with(": 6 problems\n"), "{text}");
    }
}
