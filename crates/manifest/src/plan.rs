//! Restore planning: from a recovery target to a base backup, a timeline path and the exact
//! WAL segments PostgreSQL will ask for — or a refusal that says why, before anything is
//! written.
//!
//! The input is a [`Catalog`] (the repository descriptor, the usable backups, the
//! [`TimelineGraph`] and the [`WalIndex`]) and a [`RestoreRequest`] (a [`RecoveryTarget`], a
//! [`TargetTimeline`], and optionally a backup to use). The output is a [`RestorePlan`].
//! Planning is pure and works on runs of segments, not single segments, so a plan over
//! 100,000 segments costs a few binary searches per timeline.
//!
//! # How a plan follows PostgreSQL (15)
//!
//! - **Target timeline.** `TargetTimeline::Id(t)` is used as given; `Current` is the backup's
//!   start timeline. `Latest` is the newest timeline whose path (see [`crate::timelines`])
//!   holds both the backup's start and its consistency point. PostgreSQL's own `latest`
//!   (`findNewestTimeLine()` in timeline.c) takes the highest timeline whose history file
//!   exists, scanning upwards, which a split brain derails; so restore writes the chosen
//!   number as `recovery_target_timeline` ([`RestorePlan::timeline`]).
//! - **Backup choice.** The newest usable backup (by stop LSN) from which the target is
//!   reachable: its start and its consistency point lie on the target timeline's path; for an
//!   LSN target, it is consistent at or before the target (PostgreSQL stops with "requested
//!   recovery stop point is before consistent recovery point" otherwise); for a time target,
//!   it ended at or before the target time; for a transaction, a restore point or the end of
//!   the archive, where the target lies is unknown, so the newest backup on the path is
//!   taken (a request can name an older backup with [`RestoreRequest::backup`]).
//! - **Segments.** Replay starts in the segment holding the backup's start LSN. For each
//!   segment number, the segment is read from the newest timeline on the path that began at
//!   or before it, the order in which `XLogFileReadAnyTLI()` in xlogrecovery.c tries
//!   timelines: the segment holding a switch point is read from the new timeline, the ones
//!   before it from the old. (When that file is missing PostgreSQL would fall back to an
//!   older timeline's copy, which holds the wrong WAL after the switch point; the planner
//!   counts such a segment as missing.) Every segment up to the consistency point must be
//!   archived, and for an LSN target every segment up to the target's.
//! - **End.** Known in advance for an LSN target ([`PlanEnd::Lsn`]) and for `immediate`
//!   ([`PlanEnd::Immediate`], the consistency point). For a time, transaction or restore
//!   point target the position is unknown ([`PlanEnd::AtTarget`]), so the segments run to the
//!   end of the archive on the path. For the end of the archive ([`PlanEnd::EndOfArchive`])
//!   they run to the first missing segment after the consistency point, which must not fall
//!   before the target timeline begins.
//! - **History files.** PostgreSQL reads the target timeline's history file at start-up (and
//!   again when it writes the next one); at promotion it probes `T+1`, `T+2`, … until a
//!   history file is missing and takes that missing number as the new timeline (one above
//!   `findNewestTimeLine()`). [`RestorePlan::history_files`], [`RestorePlan::end_probes`] and
//!   [`RestorePlan::new_timeline`] list them.
//! - **`inclusive`** is PostgreSQL's `recovery_target_inclusive`; it applies to time, LSN and
//!   transaction targets. A restore point is always stopped at.
//!
//! ```
//! use walferry_manifest::plan::{Catalog, RecoveryTarget, RestoreRequest};
//! use walferry_manifest::{BackupSummary, ClusterIdentity, RepoDescriptor, Timestamp};
//! use walferry_manifest::{TimelineGraph, WalIndex};
//! use walferry_wal::{Lsn, PgVersion, SegNo, SegmentName, TimelineId, WalFileName, WalSegSize};
//!
//! let identity = ClusterIdentity {
//!     system_identifier: 42,
//!     pg_version: PgVersion::V15,
//!     wal_segment_size: WalSegSize::DEFAULT,
//! };
//! let descriptor = RepoDescriptor::new(identity);
//! let backup = BackupSummary {
//!     label: "b1".into(),
//!     identity,
//!     start_lsn: "0/2000028".parse()?,
//!     start_timeline: TimelineId::FIRST,
//!     stop_lsn: "0/2000100".parse()?,
//!     stop_timeline: TimelineId::FIRST,
//!     start_time: Timestamp::parse("2026-11-25 05:00:00+00")?,
//!     stop_time: Timestamp::parse("2026-11-25 05:00:05+00")?,
//! };
//! let wal = WalIndex::from_names(
//!     WalSegSize::DEFAULT,
//!     (1..=9).map(|n| {
//!         WalFileName::Segment(SegmentName::new(TimelineId::FIRST, SegNo(n), WalSegSize::DEFAULT).unwrap())
//!     }),
//! );
//! let timelines = TimelineGraph::new([]);
//! let catalog = Catalog { descriptor: &descriptor, backups: &[backup], timelines: &timelines, wal: &wal };
//!
//! let plan = catalog.plan(&RestoreRequest::new(RecoveryTarget::Lsn("0/5000000".parse()?)))?;
//! let names: Vec<String> = plan.segments.iter().map(|s| s.to_string()).collect();
//! assert_eq!(names, ["000000010000000000000002", "000000010000000000000003",
//!                    "000000010000000000000004", "000000010000000000000005"]);
//!
//! let err = catalog.plan(&RestoreRequest::new(RecoveryTarget::Lsn("0/2000000".parse()?))).unwrap_err();
//! assert!(err.to_string().contains("before the backup's consistency point 0/2000100"), "{err}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::fmt::Write as _;

use walferry_wal::{Lsn, SegNo, SegmentName, TimelineId, WalSegSize};

use crate::backup::BackupSummary;
use crate::descriptor::{IdentityMismatch, RepoDescriptor};
use crate::timelines::{PathStep, TimelineGraph, TimelinePath};
use crate::timestamp::Timestamp;
use crate::walindex::{SegRange, WalIndex};

/// The longest restore point name PostgreSQL accepts, in bytes (`MAXFNAMELEN - 1`).
const MAX_RESTORE_POINT_NAME: usize = 63;

/// Where recovery should stop: PostgreSQL's `recovery_target*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// `recovery_target_time`: the first transaction to commit or abort after (or at, when
    /// not inclusive) this time.
    Time(Timestamp),
    /// `recovery_target_lsn`: the record at this position.
    Lsn(Lsn),
    /// `recovery_target_xid`: the commit or abort of this transaction.
    Xid(u64),
    /// `recovery_target_name`: the restore point made by `pg_create_restore_point()`.
    Name(String),
    /// `recovery_target = 'immediate'`: as soon as the backup is consistent.
    Immediate,
    /// No target: replay all the WAL the archive holds on the path.
    EndOfArchive,
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Time(t) => write!(f, "time {t}"),
            RecoveryTarget::Lsn(lsn) => write!(f, "LSN {lsn}"),
            RecoveryTarget::Xid(xid) => write!(f, "transaction {xid}"),
            RecoveryTarget::Name(name) => write!(f, "restore point '{name}'"),
            RecoveryTarget::Immediate => f.write_str("the backup's consistency point"),
            RecoveryTarget::EndOfArchive => f.write_str("the end of the archive"),
        }
    }
}

/// Which timeline recovery follows: PostgreSQL's `recovery_target_timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetTimeline {
    /// The newest timeline reachable from the backup (see the [module documentation](self)).
    Latest,
    /// The backup's own timeline.
    Current,
    /// This timeline.
    Id(TimelineId),
}

impl fmt::Display for TargetTimeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetTimeline::Latest => f.write_str("latest"),
            TargetTimeline::Current => f.write_str("current"),
            TargetTimeline::Id(tli) => write!(f, "{tli}"),
        }
    }
}

/// What to restore to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRequest {
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// `recovery_target_inclusive`: stop just after the target rather than just before it.
    /// Ignored for restore points, `immediate` and the end of the archive.
    pub inclusive: bool,
    /// Which timeline to follow.
    pub timeline: TargetTimeline,
    /// Use only the backup with this label, instead of choosing the newest usable one.
    pub backup: Option<String>,
}

impl RestoreRequest {
    /// A request for `target` with PostgreSQL's defaults: inclusive, latest timeline, any
    /// backup.
    pub fn new(target: RecoveryTarget) -> RestoreRequest {
        RestoreRequest {
            target,
            inclusive: true,
            timeline: TargetTimeline::Latest,
            backup: None,
        }
    }
}

/// What the planner knows about a repository.
#[derive(Debug, Clone, Copy)]
pub struct Catalog<'a> {
    /// The repository descriptor.
    pub descriptor: &'a RepoDescriptor,
    /// The usable backups (with a manifest and their WAL archived), in any order.
    pub backups: &'a [BackupSummary],
    /// The timelines, from the archived history files.
    pub timelines: &'a TimelineGraph,
    /// The archived WAL.
    pub wal: &'a WalIndex,
}

/// A run of consecutive segments read from one timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentRun {
    /// The timeline the segments are read from.
    pub timeline: TimelineId,
    /// The segment numbers.
    pub segments: SegRange,
}

/// The segments PostgreSQL will ask for, in order, as runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentPlan {
    segment_size: WalSegSize,
    runs: Vec<SegmentRun>,
}

impl SegmentPlan {
    /// The runs, in order; segment numbers increase strictly from run to run.
    pub fn runs(&self) -> &[SegmentRun] {
        &self.runs
    }

    /// The number of segments.
    pub fn len(&self) -> u64 {
        self.runs.iter().map(|run| run.segments.len()).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The first segment.
    pub fn first(&self) -> Option<SegmentName> {
        let run = self.runs.first()?;
        Some(self.name(run.timeline, run.segments.first()))
    }

    /// The last segment.
    pub fn last(&self) -> Option<SegmentName> {
        let run = self.runs.last()?;
        Some(self.name(run.timeline, run.segments.last()))
    }

    /// Whether PostgreSQL is expected to ask for `segment`.
    pub fn contains(&self, segment: &SegmentName) -> bool {
        let Ok(segno) = segment.segno(self.segment_size) else {
            return false;
        };
        let at = self.runs.partition_point(|run| run.segments.last() < segno);
        self.runs
            .get(at)
            .is_some_and(|run| run.timeline == segment.tli() && run.segments.contains(segno))
    }

    /// The segment names, in the order PostgreSQL will ask for them.
    pub fn iter(&self) -> impl Iterator<Item = SegmentName> + '_ {
        self.runs.iter().flat_map(move |run| {
            run.segments
                .iter()
                .map(move |segno| self.name(run.timeline, segno))
        })
    }

    fn name(&self, tli: TimelineId, segno: SegNo) -> SegmentName {
        // Every segment number here comes from an LSN or a segment name, so it has a name.
        SegmentName::new(tli, segno, self.segment_size)
            .expect("a segment number derived from an LSN has a name")
    }
}

/// What ends recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlanEnd {
    /// `immediate`: the backup's consistency point.
    Immediate {
        /// The backup's stop LSN.
        lsn: Lsn,
    },
    /// An LSN target; the last planned segment holds it. When the record there continues
    /// into the next segment, PostgreSQL asks for that one too.
    Lsn {
        /// The target.
        lsn: Lsn,
        /// `recovery_target_inclusive`.
        inclusive: bool,
    },
    /// A time, transaction or restore point target, whose position in the WAL is unknown in
    /// advance: the segments run to the end of the archive on the path, and recovery may stop
    /// anywhere after the consistency point.
    AtTarget,
    /// No target: recovery ends after the last planned segment, where the archive ends.
    EndOfArchive,
}

/// A checked restore: which backup, which timelines, which segments. See the
/// [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    /// The backup to restore.
    pub backup: BackupSummary,
    /// The target, as requested.
    pub target: RecoveryTarget,
    /// `recovery_target_inclusive`, as requested.
    pub inclusive: bool,
    /// The timeline to write as `recovery_target_timeline`.
    pub timeline: TimelineId,
    /// The stretches of timelines replay goes through, oldest first: the first begins at the
    /// backup's start LSN; with a known end, the last is the one holding it.
    pub steps: Vec<PathStep>,
    /// The segments PostgreSQL will ask for, in order.
    pub segments: SegmentPlan,
    /// The history files PostgreSQL reads (the target timeline's, unless it is 1).
    pub history_files: Vec<TimelineId>,
    /// The history files PostgreSQL probes at promotion, in order; all but the last are
    /// archived, and the last, the new timeline's, is not.
    pub end_probes: Vec<TimelineId>,
    /// The timeline the cluster moves to when recovery ends with promotion.
    pub new_timeline: TimelineId,
    /// What ends recovery.
    pub end: PlanEnd,
    /// The timeline PostgreSQL's own `latest` would have chosen, when it differs from
    /// [`RestorePlan::timeline`].
    pub postgres_latest: Option<TimelineId>,
    /// Remarks for the operator, such as a timeline that continues past a switch point the
    /// plan follows.
    pub notes: Vec<String>,
}

impl RestorePlan {
    /// A short human explanation of the plan, a few lines without a final newline.
    pub fn explain(&self) -> String {
        let b = &self.backup;
        let mut out = format!(
            "backup '{}': replay starts at {} on timeline {}, consistent at {}",
            b.label, b.start_lsn, b.start_timeline, b.stop_lsn
        );
        let _ = write!(out, "\ntimelines:");
        for (i, step) in self.steps.iter().enumerate() {
            let sep = if i == 0 { " " } else { " → " };
            let _ = write!(out, "{sep}{} from {}", step.timeline, step.begin);
            if let Some(end) = step.end {
                let _ = write!(out, " to {end}");
            }
        }
        let _ = write!(out, "\ntarget: {}", self.target);
        match self.end {
            PlanEnd::Lsn { inclusive, .. } => {
                let _ = write!(
                    out,
                    " ({})",
                    if inclusive { "inclusive" } else { "exclusive" }
                );
            }
            PlanEnd::AtTarget => {
                let _ = write!(
                    out,
                    " ({}; its position is unknown, so WAL is planned to the end of the archive)",
                    if self.inclusive {
                        "inclusive"
                    } else {
                        "exclusive"
                    }
                );
            }
            PlanEnd::Immediate { .. } | PlanEnd::EndOfArchive => {}
        }
        match (self.segments.first(), self.segments.last()) {
            (Some(first), Some(last)) => {
                let _ = write!(
                    out,
                    "\nWAL: {} segments from {first} to {last} in {} runs",
                    self.segments.len(),
                    self.segments.runs().len()
                );
            }
            _ => {
                let _ = write!(out, "\nWAL: no segments");
            }
        }
        let _ = write!(out, "\nrecovery_target_timeline = {}", self.timeline);
        if let Some(latest) = self.postgres_latest {
            let _ = write!(
                out,
                " (PostgreSQL's 'latest' would choose timeline {latest}, which does not lead from this backup)"
            );
        }
        let _ = write!(
            out,
            "\nat promotion the cluster moves to timeline {}",
            self.new_timeline
        );
        for note in &self.notes {
            let _ = write!(out, "\nnote: {note}");
        }
        out
    }
}

/// Why a backup cannot reach a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The backup belongs to another cluster or segment size than the repository.
    #[error("belongs to another cluster: {0}")]
    OtherCluster(IdentityMismatch),
    /// The timeline has no history file in the archive.
    #[error("timeline {timeline} has no history file in the archive")]
    UnknownTimeline {
        /// The timeline.
        timeline: TimelineId,
    },
    /// The target timeline's history does not include the backup's timeline.
    #[error("timeline {target} does not descend from timeline {backup_timeline} of the backup")]
    NotDescendant {
        /// The target timeline.
        target: TimelineId,
        /// The backup's timeline.
        backup_timeline: TimelineId,
    },
    /// The target timeline branched off the backup's timeline before the backup started or
    /// became consistent.
    #[error(
        "timeline {target} leaves timeline {timeline} at {switch_point}, before the backup's {what} {lsn}"
    )]
    BranchedBefore {
        /// The target timeline.
        target: TimelineId,
        /// The backup's timeline.
        timeline: TimelineId,
        /// Where the target's path leaves it.
        switch_point: Lsn,
        /// `start` or `consistency point`.
        what: &'static str,
        /// The backup's start or stop LSN.
        lsn: Lsn,
    },
    /// An LSN target before the backup is consistent.
    #[error(
        "target {target} on timeline {timeline} is before the backup's consistency point {consistency}"
    )]
    BeforeConsistency {
        /// The target.
        target: Lsn,
        /// The timeline the target lies on along the path.
        timeline: TimelineId,
        /// The backup's stop LSN.
        consistency: Lsn,
    },
    /// A time target before the backup ended.
    #[error("target time {target} is before the backup ended at {stop_time}")]
    TimeBeforeConsistency {
        /// The target.
        target: Timestamp,
        /// When the backup ended.
        stop_time: Timestamp,
    },
    /// A segment recovery needs is not archived.
    #[error("segment {segment} is missing{}", if *partial {
        "; HINT: only a .partial copy is archived, which PostgreSQL never asks for"
    } else { "" })]
    MissingSegment {
        /// The first missing segment.
        segment: SegmentName,
        /// Whether a `.partial` file of it is archived.
        partial: bool,
    },
    /// A segment after the consistency point is missing on the timeline recovery reads it
    /// from, but an older timeline's copy, holding that timeline's WAL past its switch point,
    /// is archived; PostgreSQL would read that copy instead.
    #[error(
        "segment {missing} is missing but {archived} is archived, which PostgreSQL would read instead and so replay timeline {}'s WAL past its switch point; HINT: archive {missing}, or target timeline {} explicitly",
        archived.tli(), archived.tli()
    )]
    WrongTimelineCopy {
        /// The segment recovery should read.
        missing: SegmentName,
        /// The older timeline's copy PostgreSQL would read.
        archived: SegmentName,
    },
    /// Replaying to the end of the archive would stop before the target timeline begins.
    #[error(
        "the archive's WAL on timeline {timeline} ends before segment {missing}, before the switch to timeline {next} at {switch_point}; HINT: choose timeline {timeline} explicitly or archive the missing WAL"
    )]
    EndsBeforeTimeline {
        /// The timeline where the WAL ends.
        timeline: TimelineId,
        /// The first missing segment.
        missing: SegmentName,
        /// The timeline that would follow.
        next: TimelineId,
        /// Where it would begin.
        switch_point: Lsn,
    },
}

impl RejectReason {
    /// How far the backup got: a higher stage is closer to being usable.
    fn stage(&self) -> u8 {
        match self {
            RejectReason::OtherCluster(_) => 0,
            RejectReason::UnknownTimeline { .. }
            | RejectReason::NotDescendant { .. }
            | RejectReason::BranchedBefore { .. } => 1,
            RejectReason::BeforeConsistency { .. } | RejectReason::TimeBeforeConsistency { .. } => {
                2
            }
            RejectReason::MissingSegment { .. }
            | RejectReason::WrongTimelineCopy { .. }
            | RejectReason::EndsBeforeTimeline { .. } => 3,
        }
    }
}

/// A backup that cannot reach the target, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backup '{backup}': {reason}")]
pub struct Rejection {
    /// The backup's label.
    pub backup: String,
    /// Why.
    pub reason: RejectReason,
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The repository has no usable backup.
    #[error("the repository has no usable backup; HINT: take one with walferry-archive backup")]
    NoBackups,
    /// The requested backup is not among the usable ones.
    #[error("backup '{label}' is not a usable backup in the repository")]
    NoSuchBackup {
        /// The label requested.
        label: String,
    },
    /// The requested timeline has no history file.
    #[error("recovery target timeline {timeline} has no history file in the archive")]
    UnknownTimeline {
        /// The timeline requested.
        timeline: TimelineId,
    },
    /// The target itself is invalid.
    #[error("recovery target {target} is not valid: {reason}")]
    InvalidTarget {
        /// The target.
        target: String,
        /// Why.
        reason: &'static str,
    },
    /// The WAL index was built with another segment size than the repository's.
    #[error("the WAL index uses {index} segments but the repository {repository}")]
    SegmentSize {
        /// The index's.
        index: WalSegSize,
        /// The descriptor's.
        repository: WalSegSize,
    },
    /// No backup can reach the target.
    #[error("no backup can reach {target} on timeline {timeline}: {closest}{}", others_text(*others))]
    Unreachable {
        /// The target, described.
        target: RecoveryTarget,
        /// The target timeline, as requested.
        timeline: TargetTimeline,
        /// The backup that came closest, and why it cannot.
        closest: Box<Rejection>,
        /// How many other backups were rejected too.
        others: usize,
        /// Every rejection, newest backup first.
        all: Vec<Rejection>,
    },
}

fn others_text(others: usize) -> String {
    match others {
        0 => String::new(),
        1 => " (and 1 other backup cannot either)".to_owned(),
        n => format!(" (and {n} other backups cannot either)"),
    }
}

impl PlanError {
    /// The rejections of every backup considered, newest first, for
    /// [`PlanError::Unreachable`]; empty otherwise.
    pub fn rejections(&self) -> &[Rejection] {
        match self {
            PlanError::Unreachable { all, .. } => all,
            _ => &[],
        }
    }
}

impl Catalog<'_> {
    /// Plans a restore for `request`; see the [module documentation](self) for the rules.
    ///
    /// Fails with [`PlanError::Unreachable`], naming the backup that came closest and why,
    /// when no backup can reach the target.
    pub fn plan(&self, request: &RestoreRequest) -> Result<RestorePlan, PlanError> {
        let size = self.descriptor.wal_segment_size;
        if self.wal.segment_size() != size {
            return Err(PlanError::SegmentSize {
                index: self.wal.segment_size(),
                repository: size,
            });
        }
        if let RecoveryTarget::Name(name) = &request.target
            && (name.is_empty() || name.len() > MAX_RESTORE_POINT_NAME)
        {
            return Err(PlanError::InvalidTarget {
                target: request.target.to_string(),
                reason: "a restore point name has 1 to 63 bytes",
            });
        }
        if let TargetTimeline::Id(tli) = request.timeline
            && !self.timelines.contains(tli)
        {
            return Err(PlanError::UnknownTimeline { timeline: tli });
        }
        let mut candidates: Vec<&BackupSummary> = self
            .backups
            .iter()
            .filter(|b| {
                request
                    .backup
                    .as_ref()
                    .is_none_or(|label| *label == b.label)
            })
            .collect();
        if candidates.is_empty() {
            return Err(match &request.backup {
                Some(label) => PlanError::NoSuchBackup {
                    label: label.clone(),
                },
                None => PlanError::NoBackups,
            });
        }
        // Newest first.
        candidates.sort_by(|a, b| {
            (b.stop_lsn, b.stop_time, &b.label).cmp(&(a.stop_lsn, a.stop_time, &a.label))
        });
        let mut rejections = Vec::new();
        for backup in candidates {
            match self.plan_from(backup, request) {
                Ok(plan) => return Ok(plan),
                Err(reason) => rejections.push(Rejection {
                    backup: backup.label.clone(),
                    reason,
                }),
            }
        }
        let closest = closest(&rejections).clone();
        Err(PlanError::Unreachable {
            target: request.target.clone(),
            timeline: request.timeline,
            closest: Box::new(closest),
            others: rejections.len() - 1,
            all: rejections,
        })
    }

    /// The plan from `backup`, or why there is none.
    fn plan_from(
        &self,
        backup: &BackupSummary,
        request: &RestoreRequest,
    ) -> Result<RestorePlan, RejectReason> {
        let size = self.descriptor.wal_segment_size;
        self.descriptor
            .check(&backup.identity)
            .map_err(RejectReason::OtherCluster)?;

        // The timeline, and the backup's place on its path.
        let target_tli = match request.timeline {
            TargetTimeline::Id(tli) => tli,
            TargetTimeline::Current => backup.start_timeline,
            TargetTimeline::Latest => self
                .timelines
                .timelines()
                .rev()
                .find(|tli| {
                    self.timelines
                        .path(*tli)
                        .is_some_and(|path| holds_backup(&path, backup))
                })
                .ok_or(RejectReason::UnknownTimeline {
                    timeline: backup.start_timeline,
                })?,
        };
        let path = self
            .timelines
            .path(target_tli)
            .ok_or(RejectReason::UnknownTimeline {
                timeline: target_tli,
            })?;
        check_backup_on_path(&path, backup)?;

        // The target against the backup's consistency point.
        match &request.target {
            RecoveryTarget::Lsn(lsn) if *lsn < backup.stop_lsn => {
                return Err(RejectReason::BeforeConsistency {
                    target: *lsn,
                    timeline: path.timeline_at(*lsn),
                    consistency: backup.stop_lsn,
                });
            }
            RecoveryTarget::Time(time) if *time < backup.stop_time => {
                return Err(RejectReason::TimeBeforeConsistency {
                    target: *time,
                    stop_time: backup.stop_time,
                });
            }
            _ => {}
        }

        // The segments.
        let start = backup.start_lsn.segment_number(size);
        let consistent = end_segment(backup.stop_lsn, size).max(start);
        let (required, open) = match &request.target {
            RecoveryTarget::Lsn(lsn) => (lsn.segment_number(size).max(consistent), false),
            RecoveryTarget::Immediate => (consistent, false),
            RecoveryTarget::Time(_)
            | RecoveryTarget::Xid(_)
            | RecoveryTarget::Name(_)
            | RecoveryTarget::EndOfArchive => (consistent, true),
        };
        let walk = self.walk(&path, start, required, open)?;
        if let (RecoveryTarget::EndOfArchive, Some(stop)) = (&request.target, &walk.stopped) {
            let next = &path.steps()[stop.step + 1];
            return Err(RejectReason::EndsBeforeTimeline {
                timeline: stop.segment.tli(),
                missing: stop.segment,
                next: next.timeline,
                switch_point: next.begin,
            });
        }

        // What ends it, and the stretches of the path replay goes through.
        let end = match &request.target {
            RecoveryTarget::Lsn(lsn) => PlanEnd::Lsn {
                lsn: *lsn,
                inclusive: request.inclusive,
            },
            RecoveryTarget::Immediate => PlanEnd::Immediate {
                lsn: backup.stop_lsn,
            },
            RecoveryTarget::EndOfArchive => PlanEnd::EndOfArchive,
            RecoveryTarget::Time(_) | RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) => {
                PlanEnd::AtTarget
            }
        };
        let end_lsn = match end {
            PlanEnd::Lsn { lsn, .. } => Some(lsn),
            PlanEnd::Immediate { lsn } => Some(lsn),
            PlanEnd::AtTarget | PlanEnd::EndOfArchive => None,
        };
        let steps: Vec<PathStep> = path
            .steps()
            .iter()
            .filter(|step| step.end.is_none_or(|e| e > backup.start_lsn))
            .filter(|step| end_lsn.is_none_or(|lsn| step.begin <= lsn))
            .map(|step| PathStep {
                begin: step.begin.max(backup.start_lsn),
                ..*step
            })
            .collect();

        let mut notes = Vec::new();
        if let Some(stop) = &walk.stopped {
            notes.push(format!(
                "the archive's WAL on timeline {} ends before segment {}, before timeline {} begins; recovery ends there unless the target comes first",
                stop.segment.tli(),
                stop.segment,
                path.steps()[stop.step + 1].timeline,
            ));
        }
        if let Some(lsn) = end_lsn {
            // An ancestor that went on after the switch the path takes: the operator may have
            // meant to stay on it.
            for step in path.steps() {
                if let Some(switch) = step.end
                    && switch <= lsn
                    && switch > backup.start_lsn
                    && self
                        .wal
                        .last(step.timeline)
                        .is_some_and(|last| last > switch.segment_number(size))
                {
                    notes.push(format!(
                        "timeline {} also continues past its switch point {switch}; to stay on it, target timeline {} explicitly",
                        step.timeline, step.timeline
                    ));
                }
            }
        }

        let history_files = if target_tli == TimelineId::FIRST {
            Vec::new()
        } else {
            vec![target_tli]
        };
        let newest = self.timelines.postgres_latest(target_tli);
        let new_timeline = newest.next().unwrap_or(newest);
        let end_probes = (target_tli.get()..=new_timeline.get())
            .skip(1)
            .filter_map(|id| TimelineId::new(id).ok())
            .collect();
        let postgres_latest = Some(self.timelines.postgres_latest(backup.start_timeline))
            .filter(|latest| *latest != target_tli && request.timeline == TargetTimeline::Latest);

        Ok(RestorePlan {
            backup: backup.clone(),
            target: request.target.clone(),
            inclusive: request.inclusive,
            timeline: target_tli,
            steps,
            segments: SegmentPlan {
                segment_size: size,
                runs: walk.runs,
            },
            history_files,
            end_probes,
            new_timeline,
            end,
            postgres_latest,
            notes,
        })
    }

    /// The segments from `start` along `path`: every one through `required` must be archived
    /// on the timeline recovery reads it from; when `open`, the runs go on to the first
    /// missing segment.
    fn walk(
        &self,
        path: &TimelinePath,
        start: SegNo,
        required: SegNo,
        open: bool,
    ) -> Result<Walk, RejectReason> {
        let size = self.descriptor.wal_segment_size;
        let mut runs: Vec<SegmentRun> = Vec::new();
        let mut next = start;
        let steps = path.steps();
        for (index, step) in steps.iter().enumerate() {
            // The segments read from this timeline: from the one holding its beginning to the
            // one before the one holding its end (read from the next timeline).
            let step_last = match step.end {
                Some(end) => match end.segment_number(size).prev() {
                    Some(last) => last,
                    None => continue,
                },
                None => SegNo(u64::MAX),
            };
            if step_last < next {
                continue;
            }
            let wanted_last = if open {
                step_last
            } else {
                step_last.min(required)
            };
            let available_last = self
                .wal
                .run_containing(step.timeline, next)
                .map(|run| run.last().min(wanted_last));
            if let Some(last) = available_last {
                runs.push(SegmentRun {
                    timeline: step.timeline,
                    segments: SegRange::new(next, last),
                });
            }
            let missing = match available_last {
                None => Some(next),
                Some(last) if last < wanted_last => last.next(),
                Some(last) => {
                    next = match last.next() {
                        Some(n) => n,
                        None => break,
                    };
                    if !open && last >= required {
                        break;
                    }
                    None
                }
            };
            if let Some(missing) = missing {
                let segment = SegmentName::new(step.timeline, missing, size)
                    .expect("a segment number derived from an LSN has a name");
                if missing <= required {
                    return Err(RejectReason::MissingSegment {
                        segment,
                        partial: self.wal.contains_partial(step.timeline, missing),
                    });
                }
                // PostgreSQL, not finding the segment, tries the older timelines on the path
                // down to that of the segment before (`XLogFileReadAnyTLI()`). An older
                // copy holds the older timeline's WAL past its switch point: recovery would
                // silently replay the wrong history.
                let floor = runs.last().map(|run| run.timeline);
                if let Some(older) = steps[..index]
                    .iter()
                    .rev()
                    .filter(|older| floor.is_none_or(|floor| older.timeline >= floor))
                    .find(|older| self.wal.contains(older.timeline, missing))
                {
                    return Err(RejectReason::WrongTimelineCopy {
                        missing: segment,
                        archived: segment.with_timeline(older.timeline),
                    });
                }
                // Open-ended: the archive ends here.
                let stopped = (index + 1 < steps.len()).then_some(Stopped {
                    step: index,
                    segment,
                });
                return Ok(Walk { runs, stopped });
            }
        }
        Ok(Walk {
            runs,
            stopped: None,
        })
    }
}

/// The segments a walk found.
struct Walk {
    runs: Vec<SegmentRun>,
    /// Where an open-ended walk ran out of WAL before the path's last timeline.
    stopped: Option<Stopped>,
}

struct Stopped {
    /// The index of the path step where the WAL ends.
    step: usize,
    /// The first missing segment.
    segment: SegmentName,
}

/// Whether `backup` starts and becomes consistent on `path`.
fn holds_backup(path: &TimelinePath, backup: &BackupSummary) -> bool {
    check_backup_on_path(path, backup).is_ok()
}

fn check_backup_on_path(path: &TimelinePath, backup: &BackupSummary) -> Result<(), RejectReason> {
    let target = path.target();
    for (tli, lsn, what, on_path) in [
        (
            backup.start_timeline,
            backup.start_lsn,
            "start",
            path.contains_record(backup.start_timeline, backup.start_lsn),
        ),
        (
            backup.stop_timeline,
            backup.stop_lsn,
            "consistency point",
            path.contains_end(backup.stop_timeline, backup.stop_lsn),
        ),
    ] {
        if on_path {
            continue;
        }
        return Err(match path.step(tli).and_then(|step| step.end) {
            Some(switch_point) => RejectReason::BranchedBefore {
                target,
                timeline: tli,
                switch_point,
                what,
                lsn,
            },
            None => RejectReason::NotDescendant {
                target,
                backup_timeline: tli,
            },
        });
    }
    Ok(())
}

/// The segment holding the last byte before the end position `lsn`.
fn end_segment(lsn: Lsn, size: WalSegSize) -> SegNo {
    Lsn(lsn.0.saturating_sub(1)).segment_number(size)
}

/// The rejection closest to success: the one that got furthest; among those stopped by an
/// early target, the oldest backup (the earliest consistency point), otherwise the newest.
fn closest(rejections: &[Rejection]) -> &Rejection {
    let best = rejections
        .iter()
        .map(|r| r.reason.stage())
        .max()
        .expect("at least one backup was considered");
    let mut at_best = rejections.iter().filter(|r| r.reason.stage() == best);
    let first = at_best.clone().next().expect("the maximum exists");
    if best == 2 {
        at_best.next_back().unwrap_or(first)
    } else {
        first
    }
}
