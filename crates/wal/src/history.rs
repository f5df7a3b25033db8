//! Timeline history files.
//!
//! When a cluster moves to a new timeline it writes `<TLI>.history` (for example
//! `00000003.history`), listing every timeline switch that led to it, oldest first. Each line
//! is the parent timeline, the LSN where the child branched off it, and a human-readable
//! reason, separated by tabs (shown as `→`):
//!
//! ```text
//! 1→0/3000158→no recovery target specified
//!
//! 2→0/50000A0→before 2024-05-01 12:00:00+00
//! ```
//!
//! This file belongs to timeline 3: timeline 1 ran until `0/3000158`, timeline 2 from there
//! until `0/50000A0`, and timeline 3 from there on. PostgreSQL writes a child's file by copying
//! its parent's file and appending one line, with an empty line before it when the parent had
//! a file (`writeTimeLineHistory()` in timeline.c), hence the blank line above. Timeline 1 has
//! no history file.
//!
//! Reading follows `readTimeLineHistory()` in timeline.c, a little more strictly: empty lines
//! and lines starting with `#` are skipped; fields may be separated by tabs or spaces; parent
//! timelines must increase from line to line and be below the file's timeline; and switch
//! points must not decrease. The reason is the rest of the line, trimmed, and may be empty.
//! Switch points are read in either case with or without padding, so files from PostgreSQL
//! 18, which pads the low half to eight digits, read too.

use std::fmt;

use crate::{Error, Lsn, SegNo, TimelineId, WalSegSize};

/// One line of a timeline history file: where a timeline ended and its child began.
///
/// Equivalent of a `TimeLineHistoryEntry` (timeline.h), which gives the same facts as the
/// parent timeline's range ending at the switch point.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HistoryEntry {
    /// The timeline that ended.
    pub parent: TimelineId,
    /// The first LSN that belongs to the next timeline instead of `parent`.
    pub switch_point: Lsn,
    /// Why the timeline changed, for people, such as `no recovery target specified`. A single
    /// line without leading or trailing whitespace.
    pub reason: String,
}

/// The contents of a timeline's history file: how the timeline descends from timeline 1.
///
/// A valid history lists ancestors in increasing order, all below [`TimelineHistory::timeline`],
/// with non-decreasing switch points and single-line, trimmed reasons; [`TimelineHistory::new`]
/// and [`TimelineHistory::parse`] enforce this, so every value round-trips through
/// [`TimelineHistory::to_text`]. The history of timeline 1, or of any timeline without a
/// history file, has no entries.
///
/// ```
/// use walferry_wal::{Lsn, TimelineHistory, TimelineId};
///
/// let text = "1\t0/3000158\tno recovery target specified\n\n\
///             2\t0/50000A0\tbefore 2024-05-01 12:00:00+00\n";
/// let tli = |id| TimelineId::new(id);
/// let history = TimelineHistory::parse(tli(3)?, text)?;
///
/// assert_eq!(history.ancestors().collect::<Vec<_>>(), [tli(1)?, tli(2)?]);
/// assert_eq!(history.switch_point(tli(1)?), Some(Lsn(0x300_0158)));
/// assert_eq!(history.switch_point(tli(3)?), None);
/// assert_eq!(history.timeline_at(Lsn(0x400_0000)), tli(2)?);
/// assert_eq!(history.to_text(), text);
/// # Ok::<(), walferry_wal::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimelineHistory {
    timeline: TimelineId,
    entries: Vec<HistoryEntry>,
}

impl TimelineHistory {
    /// The history of `timeline` made of `entries`, oldest first.
    ///
    /// Fails, naming the entry, when parent timelines do not increase or are not below
    /// `timeline`, when a switch point is earlier than the one before it, or when a reason
    /// contains a line break or starts or ends with whitespace.
    pub fn new(timeline: TimelineId, entries: Vec<HistoryEntry>) -> Result<Self, Error> {
        let mut previous = None;
        for (index, entry) in entries.iter().enumerate() {
            check_entry(timeline, previous, entry).map_err(|reason| {
                Error::InvalidHistoryEntry {
                    timeline,
                    entry: index + 1,
                    reason,
                }
            })?;
            previous = Some(entry);
        }
        Ok(TimelineHistory { timeline, entries })
    }

    /// Reads the history file of `timeline`. Equivalent of `readTimeLineHistory()` in
    /// timeline.c; see the [module documentation](self) for the rules.
    ///
    /// Errors give the line number, counting from 1, and what is wrong with the line.
    pub fn parse(timeline: TimelineId, text: &str) -> Result<Self, Error> {
        let mut entries: Vec<HistoryEntry> = Vec::new();
        for (index, line) in text.split('\n').enumerate() {
            let invalid = |reason| Error::InvalidHistoryLine {
                timeline,
                line: index + 1,
                reason,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = parse_line(line).map_err(invalid)?;
            check_entry(timeline, entries.last(), &entry).map_err(invalid)?;
            entries.push(entry);
        }
        Ok(TimelineHistory { timeline, entries })
    }

    /// The history file's text, byte for byte as PostgreSQL 13 to 17 write it: one
    /// `parent<TAB>switch point<TAB>reason` line per entry, with an empty line between
    /// entries. Equivalent of the output of `writeTimeLineHistory()` in timeline.c.
    pub fn to_text(&self) -> String {
        self.to_string()
    }

    /// The history a new timeline gets when it branches off this one at `switch_point`: these
    /// entries plus one for this timeline. Equivalent of `writeTimeLineHistory()` in
    /// timeline.c.
    ///
    /// Fails as [`TimelineHistory::new`] does, for instance when `child` is not above this
    /// timeline or `switch_point` is before the last one.
    pub fn branch(
        &self,
        child: TimelineId,
        switch_point: Lsn,
        reason: impl Into<String>,
    ) -> Result<TimelineHistory, Error> {
        let mut entries = self.entries.clone();
        entries.push(HistoryEntry {
            parent: self.timeline,
            switch_point,
            reason: reason.into(),
        });
        TimelineHistory::new(child, entries)
    }

    /// The timeline this is the history of.
    pub const fn timeline(&self) -> TimelineId {
        self.timeline
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[HistoryEntry] {
        &self.entries
    }

    /// The ancestors of the timeline, oldest first, not including the timeline itself.
    pub fn ancestors(&self) -> impl DoubleEndedIterator<Item = TimelineId> + ExactSizeIterator {
        self.entries.iter().map(|entry| entry.parent)
    }

    /// The ancestors of the timeline, oldest first, followed by the timeline itself.
    pub fn timelines(&self) -> impl DoubleEndedIterator<Item = TimelineId> {
        self.ancestors().chain(std::iter::once(self.timeline))
    }

    /// Whether `tli` is the timeline or one of its ancestors. Equivalent of `tliInHistory()` in
    /// timeline.c.
    pub fn contains(&self, tli: TimelineId) -> bool {
        tli == self.timeline || self.ancestors().any(|parent| parent == tli)
    }

    /// Where `tli` ended and the next timeline on the way to this one began, or `None` when
    /// `tli` is the timeline itself (it has not ended) or is not in the history. Equivalent of
    /// `tliSwitchPoint()` in timeline.c.
    pub fn switch_point(&self, tli: TimelineId) -> Option<Lsn> {
        self.entries
            .iter()
            .find(|entry| entry.parent == tli)
            .map(|entry| entry.switch_point)
    }

    /// The timeline that `lsn` belongs to on the way to this timeline: the first whose switch
    /// point is after it, or the timeline itself. Equivalent of `tliOfPointInHistory()` in
    /// timeline.c.
    pub fn timeline_at(&self, lsn: Lsn) -> TimelineId {
        self.entries
            .iter()
            .find(|entry| lsn < entry.switch_point)
            .map_or(self.timeline, |entry| entry.parent)
    }

    /// The timeline whose copy of segment `segno` recovery towards this timeline reads: the
    /// latest timeline that began at or before that segment.
    ///
    /// The segment holding a switch point exists on both timelines, and the child's copy is
    /// the one to read, since it has the parent's WAL up to the switch point and the child's
    /// after it. This is the order in which `XLogFileReadAnyTLI()` in xlogrecovery.c tries
    /// timelines, assuming every file it tries exists.
    pub fn timeline_for_segment(&self, segno: SegNo, segment_size: WalSegSize) -> TimelineId {
        // Each timeline begins where the one before it ended; the first began at the start.
        let mut tli = self.timeline;
        let begins = self.entries.iter().rev().map(|entry| entry.switch_point);
        let parents = self.entries.iter().rev().map(|entry| entry.parent);
        for (begin, parent) in begins.zip(parents) {
            if begin.segment_number(segment_size) <= segno {
                return tli;
            }
            tli = parent;
        }
        tli
    }
}

/// Writes the history file; see [`TimelineHistory::to_text`].
impl fmt::Display for TimelineHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, entry) in self.entries.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            writeln!(
                f,
                "{}\t{}\t{}",
                entry.parent, entry.switch_point, entry.reason
            )?;
        }
        Ok(())
    }
}

/// Splits a trimmed, non-comment line into an entry.
fn parse_line(line: &str) -> Result<HistoryEntry, String> {
    let (parent, rest) = next_field(line);
    let parent = parent.parse::<TimelineId>().map_err(|_| {
        if parent.is_empty() || !parent.bytes().all(|b| b.is_ascii_digit()) {
            format!("expected a numeric parent timeline ID, found '{parent}'")
        } else if parent.bytes().all(|b| b == b'0') {
            "parent timeline 0 does not exist".to_owned()
        } else {
            format!("parent timeline {parent} does not fit in 32 bits")
        }
    })?;
    let (switch_point, rest) = next_field(rest);
    if switch_point.is_empty() {
        return Err(format!(
            "expected a switch point LSN after parent timeline {parent}"
        ));
    }
    let switch_point = switch_point.parse::<Lsn>().map_err(|_| {
        format!("invalid switch point '{switch_point}': expected an LSN such as 0/16B3748")
    })?;
    Ok(HistoryEntry {
        parent,
        switch_point,
        reason: rest.trim().to_owned(),
    })
}

/// The text up to the first tab or space, and the text after the run of tabs and spaces that
/// follows it.
fn next_field(text: &str) -> (&str, &str) {
    match text.split_once([' ', '\t']) {
        Some((field, rest)) => (field, rest.trim_start_matches([' ', '\t'])),
        None => (text, ""),
    }
}

/// Checks `entry` against the history's timeline and the entry before it.
fn check_entry(
    timeline: TimelineId,
    previous: Option<&HistoryEntry>,
    entry: &HistoryEntry,
) -> Result<(), String> {
    if entry.parent >= timeline {
        return Err(format!(
            "parent timeline {} is not below timeline {timeline}: a timeline's ancestors \
             have lower IDs",
            entry.parent
        ));
    }
    if let Some(previous) = previous {
        if entry.parent <= previous.parent {
            return Err(format!(
                "parent timeline {} does not increase on the previous entry's {}",
                entry.parent, previous.parent
            ));
        }
        if entry.switch_point < previous.switch_point {
            return Err(format!(
                "switch point {} is before the previous entry's {}",
                entry.switch_point, previous.switch_point
            ));
        }
    }
    if entry.reason.contains('\n') {
        return Err("the reason contains a line break".to_owned());
    }
    if entry.reason.trim() != entry.reason {
        return Err("the reason starts or ends with whitespace".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tli(id: u32) -> TimelineId {
        TimelineId::new(id).unwrap()
    }

    fn entry(parent: u32, switch_point: u64, reason: &str) -> HistoryEntry {
        HistoryEntry {
            parent: tli(parent),
            switch_point: Lsn(switch_point),
            reason: reason.to_owned(),
        }
    }

    /// Timeline 4, branched 1 → 2 at 0/3000158, 2 → 3 at 0/50000A0, 3 → 4 at 0/50000A0.
    fn sample() -> TimelineHistory {
        TimelineHistory::new(
            tli(4),
            vec![
                entry(1, 0x300_0158, "no recovery target specified"),
                entry(2, 0x500_00A0, "before 2024-05-01 12:00:00+00"),
                entry(3, 0x500_00A0, "at restore point \"x\""),
            ],
        )
        .unwrap()
    }

    #[test]
    fn reads_what_postgres_writes() {
        // Written by PostgreSQL 15 at the end of archive recovery, no parent history file.
        let text = "1\t0/626398\tno recovery target specified\n";
        let history = TimelineHistory::parse(tli(2), text).unwrap();
        assert_eq!(
            history.entries(),
            [entry(1, 0x62_6398, "no recovery target specified")]
        );
        assert_eq!(history.to_text(), text);

        // A grandchild: the parent's file, an empty line, the new line.
        let text = "1\t0/3000158\tno recovery target specified\n\n\
                    2\t0/50000A0\tbefore 2024-05-01 12:00:00+00\n\n\
                    3\t0/50000A0\tat restore point \"x\"\n";
        let history = TimelineHistory::parse(tli(4), text).unwrap();
        assert_eq!(history, sample());
        assert_eq!(history.to_text(), text);
    }

    #[test]
    fn parse_is_lenient_where_postgres_is() {
        let cases = [
            // Spaces instead of tabs, runs of separators, CRLF, comments, blank lines.
            "1 0/3000158 no recovery target specified\n2  \t 0/50000A0\tbefore 2024-05-01 12:00:00+00\n3\t0/50000A0\tat restore point \"x\"",
            "# comment\n\n  # indented comment\n1\t0/3000158\tno recovery target specified\r\n\r\n2\t0/50000a0\tbefore 2024-05-01 12:00:00+00  \r\n   \n3\t00000000/050000A0\tat restore point \"x\"\n\n",
        ];
        for text in cases {
            assert_eq!(
                TimelineHistory::parse(tli(4), text).unwrap(),
                sample(),
                "{text:?}"
            );
        }
        // No reason at all, and an empty file.
        let history = TimelineHistory::parse(tli(2), "1\t0/10\n").unwrap();
        assert_eq!(history.entries(), [entry(1, 0x10, "")]);
        assert_eq!(
            TimelineHistory::parse(history.timeline(), &history.to_text()).unwrap(),
            history
        );
        let empty = TimelineHistory::parse(TimelineId::FIRST, "").unwrap();
        assert!(empty.entries().is_empty());
        assert_eq!(empty.to_text(), "");
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases: &[(u32, &str, usize, &str)] = &[
            (
                2,
                "x\t0/10\treason",
                1,
                "expected a numeric parent timeline ID, found 'x'",
            ),
            (
                2,
                "+1\t0/10\treason",
                1,
                "expected a numeric parent timeline ID, found '+1'",
            ),
            (2, "0\t0/10\treason", 1, "parent timeline 0 does not exist"),
            (
                2,
                "4294967296\t0/10",
                1,
                "parent timeline 4294967296 does not fit in 32 bits",
            ),
            (
                2,
                "\n\n1",
                3,
                "expected a switch point LSN after parent timeline 1",
            ),
            (2, "1\t0x10\treason", 1, "invalid switch point '0x10'"),
            (2, "1\t0/10reason", 1, "invalid switch point '0/10reason'"),
            (
                2,
                "1\t0/10\treason\n1\t0/20\treason",
                2,
                "parent timeline 1 does not increase",
            ),
            (
                3,
                "2\t0/10\tr\n1\t0/20\tr",
                2,
                "parent timeline 1 does not increase",
            ),
            (
                3,
                "1\t0/20\tr\n2\t0/10\tr",
                2,
                "switch point 0/10 is before the previous entry's 0/20",
            ),
            (
                2,
                "2\t0/10\treason",
                1,
                "parent timeline 2 is not below timeline 2",
            ),
            (
                2,
                "# c\n3\t0/10\treason",
                2,
                "parent timeline 3 is not below timeline 2",
            ),
        ];
        for &(timeline, text, line, reason) in cases {
            match TimelineHistory::parse(tli(timeline), text) {
                Err(Error::InvalidHistoryLine {
                    timeline: t,
                    line: l,
                    reason: r,
                }) => {
                    assert_eq!((t, l), (tli(timeline), line), "{text:?}");
                    assert!(r.contains(reason), "{text:?}: {r}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(
            TimelineHistory::parse(tli(2), "1\t0/10\n\nzz")
                .unwrap_err()
                .to_string(),
            "invalid history file for timeline 2, line 3: expected a numeric parent timeline \
             ID, found 'zz'"
        );
    }

    #[test]
    fn new_validates() {
        let cases: &[(u32, Vec<HistoryEntry>, usize, &str)] = &[
            (2, vec![entry(2, 0, "r")], 1, "not below timeline 2"),
            (
                3,
                vec![entry(1, 0, "r"), entry(1, 0, "r")],
                2,
                "does not increase",
            ),
            (
                3,
                vec![entry(1, 9, "r"), entry(2, 8, "r")],
                2,
                "before the previous",
            ),
            (2, vec![entry(1, 0, "a\nb")], 1, "line break"),
            (2, vec![entry(1, 0, " a")], 1, "whitespace"),
            (2, vec![entry(1, 0, "a\t")], 1, "whitespace"),
        ];
        for (timeline, entries, at, reason) in cases {
            match TimelineHistory::new(tli(*timeline), entries.clone()) {
                Err(Error::InvalidHistoryEntry {
                    entry, reason: r, ..
                }) => {
                    assert_eq!(entry, *at);
                    assert!(r.contains(reason), "{r}");
                }
                other => panic!("{entries:?}: {other:?}"),
            }
        }
        assert!(TimelineHistory::new(tli(2), vec![entry(1, 0, "a\rb")]).is_ok());
    }

    #[test]
    fn branch_appends_like_postgres() {
        let first = TimelineHistory::new(TimelineId::FIRST, Vec::new()).unwrap();
        let second = first
            .branch(tli(2), Lsn(0x300_0158), "no recovery target specified")
            .unwrap();
        assert_eq!(
            second.to_text(),
            "1\t0/3000158\tno recovery target specified\n"
        );
        let third = second
            .branch(tli(3), Lsn(0x500_00A0), "before 2024-05-01 12:00:00+00")
            .unwrap();
        assert_eq!(
            third.to_text(),
            format!(
                "{}\n2\t0/50000A0\tbefore 2024-05-01 12:00:00+00\n",
                second.to_text()
            )
        );
        assert!(third.branch(tli(3), Lsn(0x600_0000), "r").is_err());
        assert!(third.branch(tli(4), Lsn(0x400_0000), "r").is_err());
    }

    #[test]
    fn queries() {
        let history = sample();
        let ids =
            |it: &mut dyn Iterator<Item = TimelineId>| it.map(TimelineId::get).collect::<Vec<_>>();
        assert_eq!(ids(&mut history.ancestors()), [1, 2, 3]);
        assert_eq!(ids(&mut history.ancestors().rev()), [3, 2, 1]);
        assert_eq!(ids(&mut history.timelines()), [1, 2, 3, 4]);
        for id in 1..=4 {
            assert!(history.contains(tli(id)));
        }
        assert!(!history.contains(tli(5)));

        assert_eq!(history.switch_point(tli(1)), Some(Lsn(0x300_0158)));
        assert_eq!(history.switch_point(tli(2)), Some(Lsn(0x500_00A0)));
        assert_eq!(history.switch_point(tli(3)), Some(Lsn(0x500_00A0)));
        assert_eq!(history.switch_point(tli(4)), None);
        assert_eq!(history.switch_point(tli(5)), None);

        let at = [
            (0, 1),
            (0x300_0157, 1),
            (0x300_0158, 2),
            (0x500_009F, 2),
            // Timeline 3 ended where it began, so it holds no LSN at all.
            (0x500_00A0, 4),
            (u64::MAX, 4),
        ];
        for (lsn, expected) in at {
            assert_eq!(history.timeline_at(Lsn(lsn)), tli(expected), "{}", Lsn(lsn));
        }

        let size = WalSegSize::DEFAULT;
        // Timeline 2 begins in segment 3, timelines 3 and 4 in segment 5.
        let for_segment = [
            (0, 1),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (6, 4),
            (u64::MAX, 4),
        ];
        for (segno, expected) in for_segment {
            assert_eq!(
                history.timeline_for_segment(SegNo(segno), size),
                tli(expected),
                "segment {segno}"
            );
        }
        let first = TimelineHistory::new(TimelineId::FIRST, Vec::new()).unwrap();
        assert_eq!(
            first.timeline_for_segment(SegNo(7), size),
            TimelineId::FIRST
        );
        assert_eq!(first.timeline_at(Lsn(7)), TimelineId::FIRST);
        assert_eq!(ids(&mut first.timelines()), [1]);
    }

    fn history() -> impl Strategy<Value = TimelineHistory> {
        (
            proptest::collection::btree_set(1u32..u32::MAX - 16, 0..8),
            1u32..16,
            proptest::collection::vec(any::<u64>(), 8),
            proptest::collection::vec("[ -~\t]{0,40}", 8),
        )
            .prop_map(|(parents, above, mut lsns, reasons)| {
                let timeline = parents.last().copied().unwrap_or(0) + above;
                lsns.sort_unstable();
                let entries = parents
                    .into_iter()
                    .zip(lsns)
                    .zip(reasons)
                    .map(|((parent, lsn), reason)| HistoryEntry {
                        parent: tli(parent),
                        switch_point: Lsn(lsn),
                        reason: reason.trim().to_owned(),
                    })
                    .collect();
                TimelineHistory::new(tli(timeline), entries).unwrap()
            })
    }

    proptest! {
        #[test]
        fn text_round_trips(history in history()) {
            let text = history.to_text();
            prop_assert_eq!(TimelineHistory::parse(history.timeline(), &text).unwrap(), history);
        }

        #[test]
        fn parse_never_panics(text in "[0-9A-Fa-f/ \t\n#x]{0,80}", t in 1u32..8) {
            let _ = TimelineHistory::parse(tli(t), &text);
        }

        #[test]
        fn timeline_at_agrees_with_switch_points(history in history(), lsn: u64) {
            let lsn = Lsn(lsn);
            let found = history.timeline_at(lsn);
            prop_assert!(history.contains(found));
            if let Some(end) = history.switch_point(found) {
                prop_assert!(lsn < end);
            }
        }
    }
}
