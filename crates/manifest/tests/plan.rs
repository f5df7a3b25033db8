//! Restore planning on synthetic catalogs, through the public API.
//!
//! Segments are 16 MiB, so LSN `0/N000000` is the start of segment N; `at(n, off)` spells it.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use walferry_manifest::plan::{
    Catalog, PlanEnd, PlanError, RecoveryTarget, RejectReason, RestorePlan, RestoreRequest,
    TargetTimeline,
};
use walferry_manifest::{
    BackupSummary, ClusterIdentity, RepoDescriptor, TimelineGraph, Timestamp, WalIndex,
};
use walferry_wal::{
    Lsn, PgVersion, SegNo, SegmentName, TimelineHistory, TimelineId, WalFileName, WalSegSize,
};

const SIZE: WalSegSize = WalSegSize::DEFAULT;

fn tli(id: u32) -> TimelineId {
    TimelineId::new(id).unwrap()
}

/// The LSN `offset` bytes into segment `segno`.
fn at(segno: u64, offset: u64) -> Lsn {
    Lsn(segno * SIZE.bytes() + offset)
}

fn identity() -> ClusterIdentity {
    ClusterIdentity {
        system_identifier: 7_441_234_567_890_123_456,
        pg_version: PgVersion::V15,
        wal_segment_size: SIZE,
    }
}

/// A synthetic repository.
struct Repo {
    descriptor: RepoDescriptor,
    backups: Vec<BackupSummary>,
    histories: Vec<TimelineHistory>,
    wal: Vec<WalFileName>,
}

impl Repo {
    fn new() -> Repo {
        Repo {
            descriptor: RepoDescriptor::new(identity()),
            backups: Vec::new(),
            histories: Vec::new(),
            wal: Vec::new(),
        }
    }

    /// A backup on `timeline` starting 0x28 into segment `segno` and consistent 0x100 later;
    /// its times are `segno` minutes after an epoch, plus a few seconds.
    fn backup(mut self, label: &str, timeline: u32, segno: u64) -> Repo {
        let minute = |s: u64| {
            Timestamp::from_unix_micros(
                1_795_582_800_000_000 + i64::try_from(s).unwrap() * 60_000_000,
            )
            .unwrap()
        };
        self.backups.push(BackupSummary {
            label: label.to_owned(),
            identity: identity(),
            start_lsn: at(segno, 0x28),
            start_timeline: tli(timeline),
            stop_lsn: at(segno, 0x128),
            stop_timeline: tli(timeline),
            start_time: minute(segno),
            stop_time: Timestamp::from_unix_micros(minute(segno).unix_micros() + 5_000_000)
                .unwrap(),
        });
        self
    }

    /// Timeline `timeline`'s history: `(parent, switch point)` pairs, oldest first.
    fn history(mut self, timeline: u32, entries: &[(u32, Lsn)]) -> Repo {
        let text: String = entries
            .iter()
            .map(|(parent, lsn)| format!("{parent}\t{lsn}\tsynthetic\n\n"))
            .collect();
        self.histories
            .push(TimelineHistory::parse(tli(timeline), &text).unwrap());
        self.wal.push(WalFileName::History(tli(timeline)));
        self
    }

    /// Segments `segnos` of `timeline`.
    fn segments(mut self, timeline: u32, segnos: impl IntoIterator<Item = u64>) -> Repo {
        self.wal.extend(segnos.into_iter().map(|n| {
            WalFileName::Segment(SegmentName::new(tli(timeline), SegNo(n), SIZE).unwrap())
        }));
        self
    }

    fn partial(mut self, timeline: u32, segno: u64) -> Repo {
        self.wal.push(WalFileName::Partial(
            SegmentName::new(tli(timeline), SegNo(segno), SIZE).unwrap(),
        ));
        self
    }

    fn plan(&self, request: &RestoreRequest) -> Result<RestorePlan, PlanError> {
        let graph = TimelineGraph::new(self.histories.iter().cloned());
        let wal = WalIndex::from_names(SIZE, self.wal.iter().copied());
        Catalog {
            descriptor: &self.descriptor,
            backups: &self.backups,
            timelines: &graph,
            wal: &wal,
        }
        .plan(request)
    }
}

fn request(target: RecoveryTarget, timeline: TargetTimeline) -> RestoreRequest {
    RestoreRequest {
        timeline,
        ..RestoreRequest::new(target)
    }
}

/// The plan's segments as `(timeline, first, last)` runs.
fn runs(plan: &RestorePlan) -> Vec<(u32, u64, u64)> {
    plan.segments
        .runs()
        .iter()
        .map(|r| (r.timeline.get(), r.segments.first().0, r.segments.last().0))
        .collect()
}

/// The plan's path steps as `(timeline, begin, end)`.
fn steps(plan: &RestorePlan) -> Vec<(u32, Lsn, Option<Lsn>)> {
    plan.steps
        .iter()
        .map(|s| (s.timeline.get(), s.begin, s.end))
        .collect()
}

/// What a planning outcome should be.
enum Expect {
    /// Backup label, target timeline, runs.
    Plan(&'static str, u32, &'static [(u32, u64, u64)]),
    /// A substring of the error message.
    Refused(&'static str),
}

fn check(repo: &Repo, cases: &[(&str, RestoreRequest, Expect)]) {
    for (name, req, expect) in cases {
        let outcome = repo.plan(req);
        match (expect, outcome) {
            (Expect::Plan(label, timeline, expected), Ok(plan)) => {
                assert_eq!(plan.backup.label, *label, "{name}\n{}", plan.explain());
                assert_eq!(plan.timeline, tli(*timeline), "{name}\n{}", plan.explain());
                assert_eq!(runs(&plan), *expected, "{name}\n{}", plan.explain());
                // The iterator agrees with the runs, and every segment is archived.
                let names: Vec<SegmentName> = plan.segments.iter().collect();
                assert_eq!(names.len() as u64, plan.segments.len(), "{name}");
                assert!(
                    names.windows(2).all(
                        |w| w[0].segno(SIZE).unwrap().next() == Some(w[1].segno(SIZE).unwrap())
                    ),
                    "{name}: not consecutive"
                );
                assert!(names.iter().all(|n| plan.segments.contains(n)), "{name}");
                assert_eq!(names.first().copied(), plan.segments.first(), "{name}");
                assert_eq!(names.last().copied(), plan.segments.last(), "{name}");
            }
            (Expect::Refused(text), Err(err)) => {
                assert!(err.to_string().contains(text), "{name}: {err}");
            }
            (Expect::Plan(..), Err(err)) => panic!("{name}: expected a plan, got: {err}"),
            (Expect::Refused(text), Ok(plan)) => {
                panic!(
                    "{name}: expected a refusal with '{text}', got:\n{}",
                    plan.explain()
                )
            }
        }
    }
}

use Expect::{Plan, Refused};
use RecoveryTarget::{EndOfArchive, Immediate, Xid};
use TargetTimeline::{Current, Id, Latest};

fn lsn_target(lsn: Lsn) -> RecoveryTarget {
    RecoveryTarget::Lsn(lsn)
}

#[test]
fn single_timeline() {
    let repo = Repo::new()
        .backup("b2", 1, 2)
        .backup("b6", 1, 6)
        .segments(1, 1..=9);
    let time = |t: &str| RecoveryTarget::Time(Timestamp::parse(t).unwrap());
    check(
        &repo,
        &[
            (
                "lsn, newest backup",
                request(lsn_target(at(7, 0)), Latest),
                Plan("b6", 1, &[(1, 6, 7)]),
            ),
            (
                "lsn, older backup",
                request(lsn_target(at(5, 0)), Latest),
                Plan("b2", 1, &[(1, 2, 5)]),
            ),
            (
                "lsn at consistency",
                request(lsn_target(at(6, 0x128)), Latest),
                Plan("b6", 1, &[(1, 6, 6)]),
            ),
            (
                "immediate",
                request(Immediate, Latest),
                Plan("b6", 1, &[(1, 6, 6)]),
            ),
            (
                "end of archive",
                request(EndOfArchive, Latest),
                Plan("b6", 1, &[(1, 6, 9)]),
            ),
            (
                "xid",
                request(Xid(1234), Current),
                Plan("b6", 1, &[(1, 6, 9)]),
            ),
            (
                "name",
                request(RecoveryTarget::Name("before-upgrade".into()), Latest),
                Plan("b6", 1, &[(1, 6, 9)]),
            ),
            // b6 ends at minute 6 + 5 s; b2 at minute 2 + 5 s.
            (
                "time after b6",
                request(time("2026-11-25 05:07:00+00"), Latest),
                Plan("b6", 1, &[(1, 6, 9)]),
            ),
            (
                "time between",
                request(time("2026-11-25 05:04:00+00"), Latest),
                Plan("b2", 1, &[(1, 2, 9)]),
            ),
            (
                "time during b6",
                request(time("2026-11-25 05:06:01+00"), Latest),
                Plan("b2", 1, &[(1, 2, 9)]),
            ),
            (
                "time before all",
                request(time("2026-11-25 05:02:01+00"), Latest),
                Refused(
                    "backup 'b2': target time 2026-11-25T05:02:01Z is before the backup ended at 2026-11-25T05:02:05Z (and 1 other backup cannot either)",
                ),
            ),
            (
                "lsn before all",
                request(lsn_target(at(2, 0x100)), Latest),
                Refused(
                    "no backup can reach LSN 0/2000100 on timeline latest: backup 'b2': target 0/2000100 on timeline 1 is before the backup's consistency point 0/2000128",
                ),
            ),
            (
                "lsn beyond the archive",
                request(lsn_target(at(10, 0)), Latest),
                Refused("backup 'b6': segment 00000001000000000000000A is missing"),
            ),
            (
                "chosen backup",
                RestoreRequest {
                    backup: Some("b2".into()),
                    ..request(lsn_target(at(7, 0)), Latest)
                },
                Plan("b2", 1, &[(1, 2, 7)]),
            ),
            (
                "unknown backup",
                RestoreRequest {
                    backup: Some("nope".into()),
                    ..request(Immediate, Latest)
                },
                Refused("backup 'nope' is not a usable backup"),
            ),
            (
                "unknown timeline",
                request(Immediate, Id(tli(3))),
                Refused("recovery target timeline 3 has no history file"),
            ),
            (
                "long restore point",
                request(RecoveryTarget::Name("x".repeat(64)), Latest),
                Refused("1 to 63 bytes"),
            ),
        ],
    );

    let plan = repo.plan(&request(lsn_target(at(7, 0)), Latest)).unwrap();
    assert_eq!(
        plan.end,
        PlanEnd::Lsn {
            lsn: at(7, 0),
            inclusive: true
        }
    );
    assert_eq!(steps(&plan), [(1, at(6, 0x28), None)]);
    assert_eq!(plan.history_files, []);
    assert_eq!(plan.end_probes, [tli(2)]);
    assert_eq!(plan.new_timeline, tli(2));
    assert_eq!(plan.postgres_latest, None);
    let text = plan.explain();
    assert!(
        text.contains(
            "backup 'b6': replay starts at 0/6000028 on timeline 1, consistent at 0/6000128"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "WAL: 2 segments from 000000010000000000000006 to 000000010000000000000007 in 1 runs"
        ),
        "{text}"
    );
    assert!(text.contains("recovery_target_timeline = 1"), "{text}");

    let plan = repo.plan(&request(Immediate, Latest)).unwrap();
    assert_eq!(plan.end, PlanEnd::Immediate { lsn: at(6, 0x128) });
    let plan = repo.plan(&request(Xid(5), Latest)).unwrap();
    assert_eq!(plan.end, PlanEnd::AtTarget);

    assert_eq!(
        Repo::new().plan(&request(Immediate, Latest)),
        Err(PlanError::NoBackups)
    );
}

#[test]
fn a_gap() {
    let repo = Repo::new()
        .backup("b2", 1, 2)
        .backup("b7", 1, 7)
        .segments(1, (1..=4).chain(6..=9));
    check(
        &repo,
        &[
            (
                "before the gap",
                request(lsn_target(at(4, 0x10)), Latest),
                Plan("b2", 1, &[(1, 2, 4)]),
            ),
            (
                "across the gap",
                request(lsn_target(at(5, 0x10)), Latest),
                Refused("backup 'b2': segment 000000010000000000000005 is missing"),
            ),
            (
                "after the gap",
                request(lsn_target(at(8, 0)), Latest),
                Plan("b7", 1, &[(1, 7, 8)]),
            ),
            (
                "end of archive",
                request(EndOfArchive, Latest),
                Plan("b7", 1, &[(1, 7, 9)]),
            ),
            (
                "end of archive from b2",
                RestoreRequest {
                    backup: Some("b2".into()),
                    ..request(EndOfArchive, Latest)
                },
                Plan("b2", 1, &[(1, 2, 4)]),
            ),
        ],
    );

    // A backup whose own WAL has a hole is refused; the closest backup is named.
    let repo = Repo::new()
        .backup("b2", 1, 2)
        .backup("b5", 1, 5)
        .segments(1, (1..=4).chain(6..=9))
        .partial(1, 5);
    let err = repo
        .plan(&request(lsn_target(at(6, 0)), Latest))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no backup can reach LSN 0/6000000 on timeline latest: backup 'b5': segment \
         000000010000000000000005 is missing; HINT: only a .partial copy is archived, which \
         PostgreSQL never asks for (and 1 other backup cannot either)"
    );
    assert_eq!(err.rejections().len(), 2);
    assert!(matches!(
        err.rejections()[1].reason,
        RejectReason::MissingSegment { partial: true, .. }
    ));
    // To the end of the archive, b2 does: its WAL just ends at the gap.
    check(
        &repo,
        &[(
            "end of archive",
            request(EndOfArchive, Latest),
            Plan("b2", 1, &[(1, 2, 4)]),
        )],
    );
}

#[test]
fn a_timeline_switch() {
    // Timeline 2 branched from 1 in the middle of segment 5. Timeline 1 went on (the old
    // primary kept archiving) up to segment 8; timeline 2 holds 5 to 9.
    let switch = at(5, 0x80_0000);
    let repo = Repo::new()
        .backup("b2", 1, 2)
        .history(2, &[(1, switch)])
        .segments(1, 1..=8)
        .partial(1, 5)
        .segments(2, 5..=9);
    check(
        &repo,
        &[
            (
                "after the switch",
                request(lsn_target(at(7, 0)), Latest),
                Plan("b2", 2, &[(1, 2, 4), (2, 5, 7)]),
            ),
            (
                "in the switch segment",
                request(lsn_target(at(5, 0x90_0000)), Latest),
                Plan("b2", 2, &[(1, 2, 4), (2, 5, 5)]),
            ),
            (
                "before the switch",
                request(lsn_target(at(4, 0)), Latest),
                Plan("b2", 2, &[(1, 2, 4)]),
            ),
            (
                "end of archive",
                request(EndOfArchive, Latest),
                Plan("b2", 2, &[(1, 2, 4), (2, 5, 9)]),
            ),
            (
                "current",
                request(EndOfArchive, Current),
                Plan("b2", 1, &[(1, 2, 8)]),
            ),
            (
                "stay on 1 after the branch",
                request(lsn_target(at(7, 0)), Id(tli(1))),
                Plan("b2", 1, &[(1, 2, 7)]),
            ),
            (
                "explicit 2",
                request(Immediate, Id(tli(2))),
                Plan("b2", 2, &[(1, 2, 2)]),
            ),
        ],
    );

    let plan = repo.plan(&request(lsn_target(at(7, 0)), Latest)).unwrap();
    assert_eq!(
        steps(&plan),
        [(1, at(2, 0x28), Some(switch)), (2, switch, None)]
    );
    assert_eq!(plan.history_files, [tli(2)]);
    assert_eq!(plan.end_probes, [tli(3)]);
    assert_eq!(plan.new_timeline, tli(3));
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("timeline 1 also continues past its switch point 0/5800000")),
        "{:?}",
        plan.notes
    );
    let plan = repo.plan(&request(lsn_target(at(4, 0)), Latest)).unwrap();
    assert_eq!(steps(&plan), [(1, at(2, 0x28), Some(switch))]);

    // The new timeline's copy of the switch segment is required; timeline 1's is not used.
    let missing_switch_copy = Repo::new()
        .backup("b2", 1, 2)
        .history(2, &[(1, switch)])
        .segments(1, 1..=8)
        .segments(2, 6..=9);
    check(
        &missing_switch_copy,
        &[
            (
                "needs 2's copy",
                request(lsn_target(at(6, 0)), Latest),
                Refused("segment 000000020000000000000005 is missing"),
            ),
            (
                "timeline 1 is fine",
                request(lsn_target(at(6, 0)), Id(tli(1))),
                Plan("b2", 1, &[(1, 2, 6)]),
            ),
            (
                "end of archive would read 1's copy",
                request(EndOfArchive, Latest),
                Refused(
                    "segment 000000020000000000000005 is missing but 000000010000000000000005 is archived",
                ),
            ),
        ],
    );

    // Timeline 1's WAL stops short of the switch: the end of the archive is refused (recovery
    // would end on timeline 1 while timeline 2 was asked for); an xid target may come first.
    let short = Repo::new()
        .backup("b2", 1, 2)
        .history(2, &[(1, switch)])
        .segments(1, 1..=3)
        .segments(2, 5..=9);
    check(
        &short,
        &[
            (
                "end of archive",
                request(EndOfArchive, Latest),
                Refused(
                    "the archive's WAL on timeline 1 ends before segment 000000010000000000000004, before the switch to timeline 2 at 0/5800000",
                ),
            ),
            ("xid", request(Xid(7), Latest), Plan("b2", 2, &[(1, 2, 3)])),
        ],
    );
    let plan = short.plan(&request(Xid(7), Latest)).unwrap();
    assert!(
        plan.explain().contains(
            "note: the archive's WAL on timeline 1 ends before segment 000000010000000000000004"
        ),
        "{}",
        plan.explain()
    );

    // A switch at a segment boundary: segment 5 from 1, 6 on from 2.
    let boundary = Repo::new()
        .backup("b2", 1, 2)
        .history(2, &[(1, at(6, 0))])
        .segments(1, 1..=5)
        .segments(2, 6..=9);
    check(
        &boundary,
        &[(
            "boundary",
            request(EndOfArchive, Latest),
            Plan("b2", 2, &[(1, 2, 5), (2, 6, 9)]),
        )],
    );

    // Backups on the far side of the branch.
    let repo = Repo::new()
        .backup("on2", 2, 7)
        .backup("on1-late", 1, 7)
        .history(2, &[(1, switch)])
        .segments(1, 1..=8)
        .segments(2, 5..=9);
    check(
        &repo,
        &[
            (
                "latest from 2",
                RestoreRequest {
                    backup: Some("on2".into()),
                    ..request(EndOfArchive, Latest)
                },
                Plan("on2", 2, &[(2, 7, 9)]),
            ),
            (
                "timeline 1 from a backup on 2",
                RestoreRequest {
                    backup: Some("on2".into()),
                    ..request(EndOfArchive, Id(tli(1)))
                },
                Refused("backup 'on2': timeline 1 does not descend from timeline 2 of the backup"),
            ),
            (
                "latest from 1 after the branch",
                RestoreRequest {
                    backup: Some("on1-late".into()),
                    ..request(EndOfArchive, Latest)
                },
                Plan("on1-late", 1, &[(1, 7, 8)]),
            ),
            (
                "timeline 2 from 1 after the branch",
                RestoreRequest {
                    backup: Some("on1-late".into()),
                    ..request(EndOfArchive, Id(tli(2)))
                },
                Refused(
                    "backup 'on1-late': timeline 2 leaves timeline 1 at 0/5800000, before the backup's start 0/7000028",
                ),
            ),
        ],
    );
}

#[test]
fn split_brain() {
    // 2 and 3 both branched from 1: 2 at segment 3, 3 at segment 5.
    let repo = Repo::new()
        .backup("on2", 2, 4)
        .history(2, &[(1, at(3, 0x100))])
        .history(3, &[(1, at(5, 0x100))])
        .segments(1, 1..=6)
        .segments(2, 3..=8)
        .segments(3, 5..=9);
    let plan = repo.plan(&request(EndOfArchive, Latest)).unwrap();
    assert_eq!(plan.timeline, tli(2));
    assert_eq!(runs(&plan), [(2, 4, 8)]);
    assert_eq!(plan.postgres_latest, Some(tli(3)));
    // At promotion PostgreSQL probes 3.history (archived) and 4.history (not).
    assert_eq!(plan.end_probes, [tli(3), tli(4)]);
    assert_eq!(plan.new_timeline, tli(4));
    assert!(
        plan.explain()
            .contains("PostgreSQL's 'latest' would choose timeline 3"),
        "{}",
        plan.explain()
    );

    check(
        &repo,
        &[(
            "3 explicitly",
            request(EndOfArchive, Id(tli(3))),
            Refused("timeline 3 does not descend from timeline 2 of the backup"),
        )],
    );

    // A backup on 1 before both branches reaches both; latest is 3, the newest.
    let repo = Repo::new()
        .backup("on1", 1, 1)
        .history(2, &[(1, at(3, 0x100))])
        .history(3, &[(1, at(5, 0x100))])
        .segments(1, 1..=6)
        .segments(2, 3..=8)
        .segments(3, 5..=9);
    check(
        &repo,
        &[
            (
                "latest",
                request(EndOfArchive, Latest),
                Plan("on1", 3, &[(1, 1, 4), (3, 5, 9)]),
            ),
            (
                "2",
                request(EndOfArchive, Id(tli(2))),
                Plan("on1", 2, &[(1, 1, 2), (2, 3, 8)]),
            ),
        ],
    );
}

#[test]
fn many_timelines() {
    // A chain 1 → 2 → … → 50, timeline k beginning at segment 2k; timelines 51 to 60 are
    // siblings branched from 20, which a backup on timeline 30 cannot reach.
    let mut repo = Repo::new().backup("on30", 30, 61).segments(1, 0..=1);
    let mut chain: Vec<(u32, Lsn)> = Vec::new();
    for k in 2..=50u32 {
        chain.push((k - 1, at(2 * u64::from(k), 0x40)));
        repo = repo.history(k, &chain);
        let first = 2 * u64::from(k);
        repo = repo.segments(k, first..=first + 1);
    }
    let up_to_20: Vec<(u32, Lsn)> = chain.iter().copied().take(19).collect();
    for k in 51..=60u32 {
        let mut h = up_to_20.clone();
        h.push((20, at(41, 0)));
        repo = repo.history(k, &h);
    }
    repo = repo.segments(50, 102..=120);

    let plan = repo.plan(&request(EndOfArchive, Latest)).unwrap();
    assert_eq!(plan.timeline, tli(50));
    let expected: Vec<(u32, u64, u64)> = std::iter::once((30, 61, 61))
        .chain((31..50).map(|k| (k, 2 * u64::from(k), 2 * u64::from(k) + 1)))
        .chain(std::iter::once((50, 100, 120)))
        .collect();
    assert_eq!(runs(&plan), expected);
    assert_eq!(plan.steps.len(), 21);
    assert_eq!(plan.postgres_latest, Some(tli(60)));
    assert_eq!(plan.new_timeline, tli(61));
    assert_eq!(plan.history_files, [tli(50)]);

    // Timeline 35 begins 0x40 into segment 70: a target just before that is on 34, but the
    // segment is read from 35.
    let plan = repo.plan(&request(lsn_target(at(70, 0)), Latest)).unwrap();
    let mut mid: Vec<(u32, u64, u64)> = expected[..5].to_vec();
    mid.push((35, 70, 70));
    assert_eq!(runs(&plan), mid);
    assert_eq!(plan.steps.last().map(|s| s.timeline), Some(tli(34)));

    check(
        &repo,
        &[
            (
                "sibling",
                request(EndOfArchive, Id(tli(55))),
                Refused("timeline 55 does not descend from timeline 30 of the backup"),
            ),
            (
                "ancestor",
                request(EndOfArchive, Id(tli(20))),
                Refused("timeline 20 does not descend from timeline 30 of the backup"),
            ),
        ],
    );
}

#[test]
fn a_hundred_thousand_segments() {
    // Timeline 1 holds 0 to 59,999; timeline 2 begins in segment 60,000 and runs to
    // 100,000. Backups every 10,000 segments.
    let mut repo = Repo::new()
        .history(2, &[(1, at(60_000, 0x1234))])
        .segments(1, 0..60_000)
        .segments(2, 60_000..=100_000);
    for n in (10..100_000).step_by(10_000) {
        let t = if n < 60_000 { 1 } else { 2 };
        repo = repo.backup(&format!("b{n}"), t, n);
    }

    let plan = repo.plan(&request(EndOfArchive, Latest)).unwrap();
    assert_eq!(plan.backup.label, "b90010");
    assert_eq!(runs(&plan), [(2, 90_010, 100_000)]);

    let plan = repo
        .plan(&RestoreRequest {
            backup: Some("b10".into()),
            ..request(EndOfArchive, Latest)
        })
        .unwrap();
    assert_eq!(runs(&plan), [(1, 10, 59_999), (2, 60_000, 100_000)]);
    assert_eq!(plan.segments.len(), 99_991);
    assert_eq!(plan.segments.iter().count(), 99_991);
    assert_eq!(
        plan.segments.first().unwrap().to_string(),
        "00000001000000000000000A"
    );
    assert_eq!(
        plan.segments.last().unwrap().to_string(),
        "0000000200000186000000A0"
    );

    let plan = repo
        .plan(&request(lsn_target(at(55_555, 0)), Latest))
        .unwrap();
    assert_eq!(plan.backup.label, "b50010");
    assert_eq!(runs(&plan), [(1, 50_010, 55_555)]);

    // Remove one segment in the middle: plans that need it are refused, naming it.
    let mut holed = Repo::new()
        .backup("b10", 1, 10)
        .history(2, &[(1, at(60_000, 0x1234))])
        .segments(1, (0..60_000).filter(|n| *n != 33_333))
        .segments(2, 60_000..=100_000);
    let err = holed
        .plan(&request(lsn_target(at(70_000, 0)), Latest))
        .unwrap_err();
    let missing = SegmentName::new(tli(1), SegNo(33_333), SIZE).unwrap();
    assert!(
        err.to_string()
            .contains(&format!("segment {missing} is missing")),
        "{err}"
    );
    holed = holed.backup("b40000", 1, 40_000);
    let plan = holed
        .plan(&request(lsn_target(at(70_000, 0)), Latest))
        .unwrap();
    assert_eq!(runs(&plan), [(1, 40_000, 59_999), (2, 60_000, 70_000)]);
}

#[test]
fn other_clusters_and_segment_sizes() {
    let mut repo = Repo::new().backup("b2", 1, 2).segments(1, 1..=5);
    repo.backups[0].identity.system_identifier = 1;
    let err = repo.plan(&request(Immediate, Latest)).unwrap_err();
    assert!(
        err.to_string().contains("belongs to another cluster"),
        "{err}"
    );

    let repo = Repo::new().backup("b2", 1, 2).segments(1, 1..=5);
    let graph = TimelineGraph::new([]);
    let wal = WalIndex::from_names(WalSegSize::new(1 << 20).unwrap(), []);
    let err = Catalog {
        descriptor: &repo.descriptor,
        backups: &repo.backups,
        timelines: &graph,
        wal: &wal,
    }
    .plan(&request(Immediate, Latest))
    .unwrap_err();
    assert!(matches!(err, PlanError::SegmentSize { .. }), "{err}");
}
