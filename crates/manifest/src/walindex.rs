//! What WAL the archive holds: per timeline, the segments present as sorted runs, with their
//! gaps, plus partial segments, history files and backup history files.
//!
//! Built from the names of a listing of `wal/` (see [`layout::parse_wal_key`]) and the
//! repository's segment size. Segments are kept as runs of consecutive numbers
//! ([`SegRange`]), so an archive of 100,000 contiguous segments is one run, and every query is
//! a binary search over runs.
//!
//! ```
//! use walferry_manifest::walindex::{SegRange, WalIndex};
//! use walferry_wal::{SegNo, TimelineId, WalFileName, WalSegSize};
//!
//! let names = ["000000010000000000000001", "000000010000000000000002",
//!              "000000010000000000000005", "00000002.history"];
//! let index = WalIndex::from_names(
//!     WalSegSize::DEFAULT,
//!     names.iter().map(|n| WalFileName::parse(n).unwrap()),
//! );
//! let tli1 = TimelineId::FIRST;
//! assert_eq!(index.runs(tli1), [SegRange::new(SegNo(1), SegNo(2)), SegRange::new(SegNo(5), SegNo(5))]);
//! assert!(index.contains(tli1, SegNo(2)));
//! assert_eq!(index.gaps(tli1, SegNo(1), SegNo(5)), [SegRange::new(SegNo(3), SegNo(4))]);
//! assert!(index.has_history(TimelineId::new(2)?));
//! # Ok::<(), walferry_wal::Error>(())
//! ```
//!
//! [`layout::parse_wal_key`]: crate::layout::parse_wal_key

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use walferry_wal::{SegNo, SegmentName, TimelineId, WalFileName, WalSegSize};

/// An inclusive range of segment numbers, `first..=last`, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegRange {
    first: SegNo,
    last: SegNo,
}

impl SegRange {
    /// The segments `first..=last`.
    ///
    /// # Panics
    ///
    /// When `last` is before `first`; use [`SegRange::try_new`] for untrusted values.
    pub fn new(first: SegNo, last: SegNo) -> SegRange {
        Self::try_new(first, last).expect("a segment range's last segment is not before its first")
    }

    /// The segments `first..=last`, or `None` when `last` is before `first`.
    pub fn try_new(first: SegNo, last: SegNo) -> Option<SegRange> {
        (first <= last).then_some(SegRange { first, last })
    }

    /// The first segment.
    pub const fn first(self) -> SegNo {
        self.first
    }

    /// The last segment, included.
    pub const fn last(self) -> SegNo {
        self.last
    }

    /// The number of segments; saturates at `u64::MAX` for the full range.
    pub fn len(self) -> u64 {
        (self.last.0 - self.first.0).saturating_add(1)
    }

    /// Always `false`: a range holds at least one segment.
    pub const fn is_empty(self) -> bool {
        false
    }

    /// Whether `segno` is in the range.
    pub fn contains(self, segno: SegNo) -> bool {
        self.first <= segno && segno <= self.last
    }

    /// The segment numbers, in order.
    pub fn iter(self) -> impl DoubleEndedIterator<Item = SegNo> {
        (self.first.0..=self.last.0).map(SegNo)
    }
}

impl fmt::Display for SegRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}..={}", self.first, self.last)
        }
    }
}

/// The WAL of one timeline in the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimelineWal {
    runs: Vec<SegRange>,
    partials: BTreeSet<SegNo>,
}

impl TimelineWal {
    /// The complete segments present, as sorted, disjoint, non-adjacent runs.
    pub fn runs(&self) -> &[SegRange] {
        &self.runs
    }

    /// The segments present only or also as `.partial` files.
    pub fn partials(&self) -> &BTreeSet<SegNo> {
        &self.partials
    }

    /// The run holding `segno`, if it is present.
    pub fn run_containing(&self, segno: SegNo) -> Option<SegRange> {
        let at = self.runs.partition_point(|run| run.last < segno);
        self.runs.get(at).copied().filter(|run| run.contains(segno))
    }
}

/// What WAL the archive holds. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalIndex {
    segment_size: WalSegSize,
    timelines: BTreeMap<TimelineId, TimelineWal>,
    histories: BTreeSet<TimelineId>,
    backup_histories: Vec<(SegmentName, u32)>,
    foreign: Vec<WalFileName>,
}

impl WalIndex {
    /// Indexes the WAL files `names`, in any order, duplicates allowed.
    ///
    /// A segment name that cannot exist with `segment_size` (its segment part is too large)
    /// is not indexed but kept in [`WalIndex::foreign`], for `verify` to report.
    pub fn from_names(
        segment_size: WalSegSize,
        names: impl IntoIterator<Item = WalFileName>,
    ) -> WalIndex {
        let mut segments: BTreeMap<TimelineId, Vec<SegNo>> = BTreeMap::new();
        let mut partials: BTreeMap<TimelineId, BTreeSet<SegNo>> = BTreeMap::new();
        let mut histories = BTreeSet::new();
        let mut backup_histories = Vec::new();
        let mut foreign = Vec::new();
        for name in names {
            match name {
                WalFileName::History(tli) => {
                    histories.insert(tli);
                }
                WalFileName::BackupHistory { segment, offset } => {
                    backup_histories.push((segment, offset));
                }
                WalFileName::Segment(segment) | WalFileName::Partial(segment) => {
                    let Ok(segno) = segment.segno(segment_size) else {
                        foreign.push(name);
                        continue;
                    };
                    if name.is_partial() {
                        partials.entry(segment.tli()).or_default().insert(segno);
                    } else {
                        segments.entry(segment.tli()).or_default().push(segno);
                    }
                }
            }
        }
        backup_histories.sort_unstable();
        backup_histories.dedup();
        let mut timelines: BTreeMap<TimelineId, TimelineWal> = BTreeMap::new();
        for (tli, mut segnos) in segments {
            segnos.sort_unstable();
            segnos.dedup();
            timelines.entry(tli).or_default().runs = runs_of(&segnos);
        }
        for (tli, set) in partials {
            timelines.entry(tli).or_default().partials = set;
        }
        WalIndex {
            segment_size,
            timelines,
            histories,
            backup_histories,
            foreign,
        }
    }

    /// The segment size the index was built with.
    pub const fn segment_size(&self) -> WalSegSize {
        self.segment_size
    }

    /// The timelines with at least one segment or partial segment, in order.
    pub fn timelines(&self) -> impl Iterator<Item = TimelineId> + '_ {
        self.timelines.keys().copied()
    }

    /// One timeline's WAL, if the archive has any.
    pub fn timeline(&self, tli: TimelineId) -> Option<&TimelineWal> {
        self.timelines.get(&tli)
    }

    /// The runs of complete segments of `tli`, sorted; empty when it has none.
    pub fn runs(&self, tli: TimelineId) -> &[SegRange] {
        self.timelines.get(&tli).map_or(&[], |wal| wal.runs())
    }

    /// Whether complete segment `segno` of `tli` is archived.
    pub fn contains(&self, tli: TimelineId, segno: SegNo) -> bool {
        self.run_containing(tli, segno).is_some()
    }

    /// The run of `tli` holding `segno`, if that segment is archived.
    pub fn run_containing(&self, tli: TimelineId, segno: SegNo) -> Option<SegRange> {
        self.timelines.get(&tli)?.run_containing(segno)
    }

    /// Whether `segno` of `tli` is archived as a `.partial` file.
    pub fn contains_partial(&self, tli: TimelineId, segno: SegNo) -> bool {
        self.timelines
            .get(&tli)
            .is_some_and(|wal| wal.partials.contains(&segno))
    }

    /// The first complete segment of `tli`.
    pub fn first(&self, tli: TimelineId) -> Option<SegNo> {
        self.runs(tli).first().map(|run| run.first)
    }

    /// The last complete segment of `tli`.
    pub fn last(&self, tli: TimelineId) -> Option<SegNo> {
        self.runs(tli).last().map(|run| run.last)
    }

    /// The missing segments of `tli` from `from` to `to` inclusive, as sorted ranges; empty
    /// when all are present or `to` is before `from`.
    pub fn gaps(&self, tli: TimelineId, from: SegNo, to: SegNo) -> Vec<SegRange> {
        let mut gaps = Vec::new();
        let mut next = Some(from);
        let runs = self.runs(tli);
        let start = runs.partition_point(|run| run.last < from);
        for run in &runs[start..] {
            let Some(at) = next.filter(|at| *at <= to) else {
                break;
            };
            if run.first > at {
                let end = run.first.prev().expect("after a segment").min(to);
                gaps.push(SegRange::new(at, end));
            }
            next = run.last.next();
        }
        if let Some(at) = next.filter(|at| *at <= to) {
            gaps.push(SegRange::new(at, to));
        }
        gaps
    }

    /// The first missing segment of `tli` from `from` to `to` inclusive, if any.
    pub fn first_missing(&self, tli: TimelineId, from: SegNo, to: SegNo) -> Option<SegNo> {
        if to < from {
            return None;
        }
        match self.run_containing(tli, from) {
            None => Some(from),
            Some(run) if run.last >= to => None,
            Some(run) => run.last.next(),
        }
    }

    /// The timelines whose history file is archived, in order.
    pub fn histories(&self) -> &BTreeSet<TimelineId> {
        &self.histories
    }

    /// Whether `tli`'s history file is archived.
    pub fn has_history(&self, tli: TimelineId) -> bool {
        self.histories.contains(&tli)
    }

    /// The backup history files, as their segment and offset, sorted.
    pub fn backup_histories(&self) -> &[(SegmentName, u32)] {
        &self.backup_histories
    }

    /// Segment names that cannot exist with the index's segment size.
    pub fn foreign(&self) -> &[WalFileName] {
        &self.foreign
    }
}

/// Sorted, deduplicated segment numbers as runs.
fn runs_of(segnos: &[SegNo]) -> Vec<SegRange> {
    let mut runs: Vec<SegRange> = Vec::new();
    for &segno in segnos {
        match runs.last_mut() {
            Some(run) if run.last.next() == Some(segno) => run.last = segno,
            _ => runs.push(SegRange {
                first: segno,
                last: segno,
            }),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tli(id: u32) -> TimelineId {
        TimelineId::new(id).unwrap()
    }

    fn seg(t: u32, n: u64) -> WalFileName {
        WalFileName::Segment(SegmentName::new(tli(t), SegNo(n), WalSegSize::DEFAULT).unwrap())
    }

    fn r(a: u64, b: u64) -> SegRange {
        SegRange::new(SegNo(a), SegNo(b))
    }

    #[test]
    fn builds_runs_per_timeline() {
        let mut names: Vec<WalFileName> = [1, 2, 3, 7, 8, 3, 10]
            .into_iter()
            .map(|n| seg(1, n))
            .collect();
        names.extend([seg(2, 8), seg(2, 9)]);
        names.push(WalFileName::Partial(
            SegmentName::new(tli(1), SegNo(8), WalSegSize::DEFAULT).unwrap(),
        ));
        names.push(WalFileName::History(tli(2)));
        names.push("000000010000000000000002.00000028.backup".parse().unwrap());
        names.push("000000010000000000000100".parse().unwrap()); // impossible with 16 MiB
        let index = WalIndex::from_names(WalSegSize::DEFAULT, names.into_iter().rev());
        assert_eq!(index.runs(tli(1)), [r(1, 3), r(7, 8), r(10, 10)]);
        assert_eq!(index.runs(tli(2)), [r(8, 9)]);
        assert_eq!(index.runs(tli(3)), []);
        assert_eq!(index.timelines().collect::<Vec<_>>(), [tli(1), tli(2)]);
        assert!(index.contains_partial(tli(1), SegNo(8)));
        assert!(!index.contains_partial(tli(2), SegNo(8)));
        assert_eq!(index.first(tli(1)), Some(SegNo(1)));
        assert_eq!(index.last(tli(1)), Some(SegNo(10)));
        assert_eq!(index.first(tli(3)), None);
        assert!(index.has_history(tli(2)));
        assert_eq!(index.backup_histories().len(), 1);
        assert_eq!(index.foreign().len(), 1);
        for (n, present) in [
            (0, false),
            (1, true),
            (3, true),
            (4, false),
            (8, true),
            (9, false),
            (10, true),
            (11, false),
        ] {
            assert_eq!(index.contains(tli(1), SegNo(n)), present, "{n}");
        }
    }

    #[test]
    fn gaps_and_first_missing() {
        let index = WalIndex::from_names(
            WalSegSize::DEFAULT,
            [1, 2, 3, 7, 8, 10].into_iter().map(|n| seg(1, n)),
        );
        let t = tli(1);
        let cases: &[(u64, u64, &[SegRange], Option<u64>)] = &[
            (1, 3, &[], None),
            (1, 10, &[r(4, 6), r(9, 9)], Some(4)),
            (0, 1, &[r(0, 0)], Some(0)),
            (5, 7, &[r(5, 6)], Some(5)),
            (8, 12, &[r(9, 9), r(11, 12)], Some(9)),
            (11, 12, &[r(11, 12)], Some(11)),
            (3, 2, &[], None),
        ];
        for &(from, to, gaps, missing) in cases {
            assert_eq!(index.gaps(t, SegNo(from), SegNo(to)), gaps, "{from}..={to}");
            assert_eq!(
                index.first_missing(t, SegNo(from), SegNo(to)),
                missing.map(SegNo),
                "{from}..={to}"
            );
        }
        assert_eq!(index.gaps(tli(9), SegNo(1), SegNo(2)), [r(1, 2)]);
    }

    #[test]
    fn a_hundred_thousand_segments_are_one_run() {
        let index = WalIndex::from_names(WalSegSize::DEFAULT, (0..100_000).map(|n| seg(1, n)));
        assert_eq!(index.runs(tli(1)), [r(0, 99_999)]);
        assert_eq!(index.runs(tli(1))[0].len(), 100_000);
        assert_eq!(index.first_missing(tli(1), SegNo(5), SegNo(99_999)), None);
        assert_eq!(
            index.first_missing(tli(1), SegNo(5), SegNo(100_000)),
            Some(SegNo(100_000))
        );
    }
}
