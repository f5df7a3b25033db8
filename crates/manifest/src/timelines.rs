//! The timeline graph: how the timelines in the archive branch from each other.
//!
//! Built from the `.history` files in the archive. Each history file lists its timeline's
//! ancestors and where each one ended (see [`TimelineHistory`]); timeline 1 has none and is
//! always present. The graph answers the questions restore planning asks:
//!
//! - [`TimelineGraph::path`]: the steps recovery towards a timeline replays, from its oldest
//!   ancestor to itself, each with the LSN range it covers. This is what PostgreSQL derives
//!   from the target timeline's history file alone (`expectedTLEs`, read by
//!   `readTimeLineHistory()` in timeline.c), so the graph does too: another timeline's history
//!   file never changes a path.
//! - [`TimelineGraph::is_on_path`]: whether WAL at a position of a timeline is replayed on the
//!   way to a target timeline.
//! - [`TimelineGraph::newest_reachable`]: the newest timeline whose path contains a position.
//!   This is how walferry resolves `recovery_target_timeline = 'latest'`. PostgreSQL instead
//!   takes the highest timeline whose history file exists, probing upwards from the current
//!   one until the first missing file (`findNewestTimeLine()` in timeline.c;
//!   [`TimelineGraph::postgres_latest`]), whether or not it descends from the backup: after a
//!   split brain, where timelines 2 and 3 both branched from timeline 1, recovery of a backup
//!   taken on timeline 2 would head for timeline 3 and fail. walferry writes the timeline it
//!   chose explicitly instead.
//!
//! ```
//! use walferry_manifest::TimelineGraph;
//! use walferry_wal::{Lsn, TimelineHistory, TimelineId};
//!
//! let tli = |id| TimelineId::new(id).unwrap();
//! // Split brain: 2 and 3 both branched from 1.
//! let two = TimelineHistory::parse(tli(2), "1\t0/3000000\tpromoted\n")?;
//! let three = TimelineHistory::parse(tli(3), "1\t0/5000000\tpromoted too\n")?;
//! let graph = TimelineGraph::new([two, three]);
//!
//! assert_eq!(graph.postgres_latest(tli(2)), tli(3));
//! assert_eq!(graph.newest_reachable(tli(2), Lsn(0x400_0000)), Some(tli(2)));
//! assert_eq!(graph.newest_reachable(tli(1), Lsn(0x200_0000)), Some(tli(3)));
//! assert_eq!(graph.newest_reachable(tli(1), Lsn(0x400_0000)), Some(tli(3)));
//! assert_eq!(graph.newest_reachable(tli(1), Lsn(0x600_0000)), Some(tli(1)));
//! assert!(!graph.is_on_path(tli(3), tli(1), Lsn(0x500_0000)));
//! # Ok::<(), walferry_wal::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use walferry_wal::{Lsn, SegNo, TimelineHistory, TimelineId, WalSegSize};

/// The timelines of an archive and how they branch. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineGraph {
    /// Every known timeline's history; timeline 1's is empty.
    histories: BTreeMap<TimelineId, TimelineHistory>,
}

/// One timeline's stretch of a [`TimelinePath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PathStep {
    /// The timeline.
    pub timeline: TimelineId,
    /// Where the timeline's stretch begins: the previous step's switch point, or `0/0` for the
    /// first step.
    pub begin: Lsn,
    /// The switch point where the next step begins, or `None` for the last step, which does
    /// not end.
    pub end: Option<Lsn>,
}

/// The timelines recovery towards a target timeline replays, oldest first; the last step is
/// the target. Together the steps cover every LSN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimelinePath {
    steps: Vec<PathStep>,
}

impl TimelineGraph {
    /// The graph of the history files `histories`, in any order. Timeline 1 is always part of
    /// it. When two histories are given for one timeline, the last wins.
    pub fn new(histories: impl IntoIterator<Item = TimelineHistory>) -> TimelineGraph {
        let mut map = BTreeMap::new();
        map.insert(
            TimelineId::FIRST,
            TimelineHistory::new(TimelineId::FIRST, Vec::new()).expect("an empty history is valid"),
        );
        for history in histories {
            map.insert(history.timeline(), history);
        }
        TimelineGraph { histories: map }
    }

    /// The known timelines, in order: timeline 1 and every timeline with a history file.
    pub fn timelines(&self) -> impl DoubleEndedIterator<Item = TimelineId> + '_ {
        self.histories.keys().copied()
    }

    /// Whether `tli` is known: timeline 1 or a timeline with a history file.
    pub fn contains(&self, tli: TimelineId) -> bool {
        self.histories.contains_key(&tli)
    }

    /// The history of `tli`, if known; empty for timeline 1.
    pub fn history(&self, tli: TimelineId) -> Option<&TimelineHistory> {
        self.histories.get(&tli)
    }

    /// The path recovery towards `target` follows, or `None` when `target` is unknown.
    pub fn path(&self, target: TimelineId) -> Option<TimelinePath> {
        self.history(target).map(TimelinePath::of)
    }

    /// Whether a record of timeline `tli` starting at `lsn` is replayed by recovery towards
    /// `target`: `tli` is on `target`'s path and `lsn` is in its stretch. Equivalent of
    /// `tliOfPointInHistory(lsn, expectedTLEs) == tli` in timeline.c.
    pub fn is_on_path(&self, target: TimelineId, tli: TimelineId, lsn: Lsn) -> bool {
        self.path(target)
            .is_some_and(|path| path.contains_record(tli, lsn))
    }

    /// The newest known timeline on whose path a record of `tli` starting at `lsn` lies, or
    /// `None` when no timeline's path holds it (not even `tli`'s own, because `tli` is
    /// unknown). See the [module documentation](self) for how this differs from PostgreSQL's
    /// `latest`.
    pub fn newest_reachable(&self, tli: TimelineId, lsn: Lsn) -> Option<TimelineId> {
        self.histories
            .values()
            .rev()
            .find(|history| TimelinePath::of(history).contains_record(tli, lsn))
            .map(TimelineHistory::timeline)
    }

    /// The timeline PostgreSQL's `recovery_target_timeline = 'latest'` would choose when
    /// starting from `current`: the highest timeline reached by probing `current + 1`,
    /// `current + 2`, … until a history file is missing. Equivalent of
    /// `findNewestTimeLine()` in timeline.c, which ignores ancestry.
    pub fn postgres_latest(&self, current: TimelineId) -> TimelineId {
        let mut newest = current;
        while let Some(probe) = newest.next().filter(|probe| self.contains(*probe)) {
            newest = probe;
        }
        newest
    }

    /// The timelines whose history file names `tli` as their parent (the last entry), in
    /// order.
    pub fn children(&self, tli: TimelineId) -> impl Iterator<Item = TimelineId> + '_ {
        self.histories
            .values()
            .filter(move |h| h.entries().last().is_some_and(|e| e.parent == tli))
            .map(TimelineHistory::timeline)
    }
}

impl TimelinePath {
    /// The path a history describes.
    pub fn of(history: &TimelineHistory) -> TimelinePath {
        let mut steps = Vec::with_capacity(history.entries().len() + 1);
        let mut begin = Lsn::INVALID;
        for entry in history.entries() {
            steps.push(PathStep {
                timeline: entry.parent,
                begin,
                end: Some(entry.switch_point),
            });
            begin = entry.switch_point;
        }
        steps.push(PathStep {
            timeline: history.timeline(),
            begin,
            end: None,
        });
        TimelinePath { steps }
    }

    /// The steps, oldest first; never empty.
    pub fn steps(&self) -> &[PathStep] {
        &self.steps
    }

    /// The timeline the path leads to.
    pub fn target(&self) -> TimelineId {
        self.last().timeline
    }

    fn last(&self) -> &PathStep {
        self.steps.last().expect("a path has at least its target")
    }

    /// The step of `tli`, if it is on the path.
    pub fn step(&self, tli: TimelineId) -> Option<&PathStep> {
        self.steps.iter().find(|step| step.timeline == tli)
    }

    /// The timeline a record starting at `lsn` belongs to on this path. Equivalent of
    /// `tliOfPointInHistory()` in timeline.c.
    pub fn timeline_at(&self, lsn: Lsn) -> TimelineId {
        self.steps
            .iter()
            .find(|step| step.end.is_none_or(|end| lsn < end))
            .unwrap_or(self.last())
            .timeline
    }

    /// Whether a record of `tli` starting at `lsn` is on the path: `tli` is on it and its
    /// stretch ends after `lsn`.
    pub fn contains_record(&self, tli: TimelineId, lsn: Lsn) -> bool {
        self.step(tli)
            .is_some_and(|step| step.end.is_none_or(|end| lsn < end))
    }

    /// Whether WAL of `tli` up to `lsn` (exclusive: a record ending there) is on the path:
    /// `tli` is on it and its stretch ends at or after `lsn`. The check PostgreSQL makes of
    /// the minimum recovery point ("requested timeline does not contain minimum recovery
    /// point" in xlogrecovery.c).
    pub fn contains_end(&self, tli: TimelineId, lsn: Lsn) -> bool {
        self.step(tli)
            .is_some_and(|step| step.end.is_none_or(|end| lsn <= end))
    }

    /// The timeline whose copy of segment `segno` recovery along this path reads: the newest
    /// timeline that began at or before that segment, so the segment holding a switch point
    /// is read from the new timeline. Equivalent of the order `XLogFileReadAnyTLI()` in
    /// xlogrecovery.c tries timelines, when every file it tries exists.
    pub fn timeline_for_segment(&self, segno: SegNo, segment_size: WalSegSize) -> TimelineId {
        self.steps
            .iter()
            .rev()
            .find(|step| step.begin.segment_number(segment_size) <= segno)
            .unwrap_or(&self.steps[0])
            .timeline
    }
}

/// Writes `1 (to 0/3000000) → 2 (to 0/5000000) → 3`.
impl fmt::Display for TimelinePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(" → ")?;
            }
            write!(f, "{}", step.timeline)?;
            if let Some(end) = step.end {
                write!(f, " (to {end})")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tli(id: u32) -> TimelineId {
        TimelineId::new(id).unwrap()
    }

    fn history(t: u32, entries: &[(u32, u64)]) -> TimelineHistory {
        let text: String = entries
            .iter()
            .map(|(parent, lsn)| format!("{parent}\t{}\tx\n", Lsn(*lsn)))
            .collect();
        TimelineHistory::parse(tli(t), &text).unwrap()
    }

    #[test]
    fn paths_follow_the_target_history() {
        let graph = TimelineGraph::new([
            history(2, &[(1, 0x300_0000)]),
            history(3, &[(1, 0x300_0000), (2, 0x500_0000)]),
        ]);
        let path = graph.path(tli(3)).unwrap();
        assert_eq!(
            path.steps(),
            [
                PathStep {
                    timeline: tli(1),
                    begin: Lsn(0),
                    end: Some(Lsn(0x300_0000))
                },
                PathStep {
                    timeline: tli(2),
                    begin: Lsn(0x300_0000),
                    end: Some(Lsn(0x500_0000))
                },
                PathStep {
                    timeline: tli(3),
                    begin: Lsn(0x500_0000),
                    end: None
                },
            ]
        );
        assert_eq!(path.to_string(), "1 (to 0/3000000) → 2 (to 0/5000000) → 3");
        assert_eq!(graph.path(tli(1)).unwrap().steps().len(), 1);
        assert_eq!(graph.path(tli(4)), None);
        assert_eq!(path.timeline_at(Lsn(0x2FF_FFFF)), tli(1));
        assert_eq!(path.timeline_at(Lsn(0x300_0000)), tli(2));
        assert_eq!(path.timeline_at(Lsn(0x900_0000)), tli(3));
        let size = WalSegSize::DEFAULT;
        assert_eq!(path.timeline_for_segment(SegNo(2), size), tli(1));
        assert_eq!(path.timeline_for_segment(SegNo(3), size), tli(2));
        assert_eq!(path.timeline_for_segment(SegNo(5), size), tli(3));
        assert!(path.contains_record(tli(1), Lsn(0x2FF_FFFF)));
        assert!(!path.contains_record(tli(1), Lsn(0x300_0000)));
        assert!(path.contains_end(tli(1), Lsn(0x300_0000)));
        assert!(!path.contains_end(tli(1), Lsn(0x300_0001)));
        assert!(path.contains_record(tli(3), Lsn(u64::MAX)));
        assert!(!path.contains_record(tli(4), Lsn(0)));
    }

    #[test]
    fn newest_reachable_ignores_split_brain_siblings() {
        // 2 and 3 both from 1; 4 from 2.
        let graph = TimelineGraph::new([
            history(2, &[(1, 0x300_0000)]),
            history(3, &[(1, 0x500_0000)]),
            history(4, &[(1, 0x300_0000), (2, 0x700_0000)]),
        ]);
        let cases = [
            ((1, 0x100_0000), Some(4)),
            ((1, 0x400_0000), Some(3)),
            ((1, 0x600_0000), Some(1)),
            ((2, 0x400_0000), Some(4)),
            ((2, 0x800_0000), Some(2)),
            ((3, 0x600_0000), Some(3)),
            ((4, 0x800_0000), Some(4)),
            ((5, 0x800_0000), None),
        ];
        for ((t, lsn), expected) in cases {
            assert_eq!(
                graph.newest_reachable(tli(t), Lsn(lsn)),
                expected.map(tli),
                "{t} {lsn:X}"
            );
        }
        assert_eq!(graph.postgres_latest(tli(1)), tli(4));
        assert_eq!(graph.postgres_latest(tli(4)), tli(4));
        assert_eq!(graph.children(tli(1)).collect::<Vec<_>>(), [tli(2), tli(3)]);
        assert_eq!(graph.children(tli(2)).collect::<Vec<_>>(), [tli(4)]);
        assert!(graph.is_on_path(tli(4), tli(2), Lsn(0x600_0000)));
        assert!(!graph.is_on_path(tli(3), tli(2), Lsn(0x600_0000)));
    }

    #[test]
    fn postgres_latest_stops_at_the_first_missing_file() {
        let graph = TimelineGraph::new([history(2, &[(1, 1)]), history(4, &[(1, 1), (2, 2)])]);
        assert_eq!(graph.postgres_latest(tli(1)), tli(2));
        assert_eq!(graph.newest_reachable(tli(1), Lsn(0)), Some(tli(4)));
    }
}
