//! WAL file names.
//!
//! PostgreSQL archives four kinds of file, named as follows (`T` timeline, `X` log, `Y`
//! segment, `O` offset; every digit is upper-case hexadecimal):
//!
//! | kind | form | example |
//! | --- | --- | --- |
//! | segment | `TTTTTTTTXXXXXXXXYYYYYYYY` | `000000010000000A000000FF` |
//! | partial segment | `TTTTTTTTXXXXXXXXYYYYYYYY.partial` | `000000020000000000000003.partial` |
//! | timeline history | `TTTTTTTT.history` | `00000002.history` |
//! | backup history | `TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup` | `000000010000000000000002.00000028.backup` |
//!
//! A segment name splits the segment number in two: `X` is the segment number divided by
//! [`WalSegSize::segments_per_xlog_id`] and `Y` the remainder. The text is therefore the same
//! whatever the segment size, but turning it into a [`SegNo`] needs the size, and `Y` must be
//! below the number of segments per log for that size (`000000010000000000000100` exists with
//! 1 MiB segments but not with 16 MiB ones).
//!
//! Parsing is strict, because it validates the `%f` that PostgreSQL passes to
//! `restore_command` and `archive_command`: exactly one of the four forms, upper-case digits
//! only (as `IsXLogFileName()` requires), no directory part, no whitespace, and no timeline 0.
//! Whatever parses is written back byte for byte.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hex::{self, Case, HexError};
use crate::{Error, Lsn, SegNo, TimelineId, WalSegSize};

/// The largest segment part a name can have with any segment size: with 1 MiB segments,
/// the smallest size, there are 4096 segments per log.
const MAX_SEG: u32 = 0xFFF;

const PARTIAL_SUFFIX: &[u8] = b".partial";
const HISTORY_SUFFIX: &[u8] = b".history";
const BACKUP_SUFFIX: &[u8] = b".backup";

/// The name of a WAL segment file, `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, log and segment,
/// eight upper-case hexadecimal digits each.
///
/// The name is independent of the segment size; converting to and from a [`SegNo`] takes
/// one. The segment part is always at most `0xFFF`, the largest any segment size allows.
/// Ordering is by timeline, then log, then segment, which is also the order of the names as
/// text. Serde writes the name as a string.
///
/// ```
/// use walferry_wal::{SegNo, SegmentName, TimelineId, WalSegSize};
///
/// let name: SegmentName = "000000010000000A000000FF".parse()?;
/// assert_eq!(name.segno(WalSegSize::DEFAULT)?, SegNo(0xAFF));
/// assert_eq!(name.log_dir(), "000000010000000A");
///
/// let again = SegmentName::new(TimelineId::FIRST, SegNo(0xAFF), WalSegSize::DEFAULT)?;
/// assert_eq!(again, name);
/// # Ok::<(), walferry_wal::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    // Field order gives the derived ordering: timeline, log, segment.
    tli: TimelineId,
    log: u32,
    seg: u32,
}

impl SegmentName {
    /// The length of a segment name, 24. Equivalent of `XLOG_FNAME_LEN` in xlog_internal.h.
    pub const LEN: usize = 24;

    /// The name of segment `segno` on timeline `tli`. Equivalent of `XLogFileName()` in
    /// xlog_internal.h.
    ///
    /// Fails when the segment number is too large for its log part to fit in eight digits,
    /// which only happens for segments starting beyond the 64-bit WAL space.
    pub fn new(tli: TimelineId, segno: SegNo, segment_size: WalSegSize) -> Result<Self, Error> {
        let per_id = segment_size.segments_per_xlog_id();
        let out_of_range = || Error::SegNoOutOfRange {
            segno,
            segment_size,
        };
        let log = u32::try_from(segno.0 / per_id).map_err(|_| out_of_range())?;
        let seg = u32::try_from(segno.0 % per_id).map_err(|_| out_of_range())?;
        Ok(SegmentName { tli, log, seg })
    }

    /// The name with these three parts. Equivalent of `XLogFileNameById()` in
    /// xlog_internal.h.
    ///
    /// Fails when `seg` is above `0xFFF`, since no segment size has that many segments per
    /// log.
    pub fn from_parts(tli: TimelineId, log: u32, seg: u32) -> Result<Self, Error> {
        if seg > MAX_SEG {
            return Err(Error::InvalidFileName {
                name: format!("{:08X}{log:08X}{seg:08X}", tli.get()),
                reason: seg_too_large(seg),
            });
        }
        Ok(SegmentName { tli, log, seg })
    }

    /// The timeline, the first eight digits.
    pub const fn tli(&self) -> TimelineId {
        self.tli
    }

    /// The log part, the middle eight digits: the segment number divided by
    /// [`WalSegSize::segments_per_xlog_id`].
    pub const fn log(&self) -> u32 {
        self.log
    }

    /// The segment part, the last eight digits: the segment number modulo
    /// [`WalSegSize::segments_per_xlog_id`].
    pub const fn seg(&self) -> u32 {
        self.seg
    }

    /// The segment number this name stands for with `segment_size` segments. Equivalent of
    /// `XLogFromFileName()` in xlog_internal.h.
    ///
    /// Fails when the segment part is not below [`WalSegSize::segments_per_xlog_id`], that
    /// is, when no segment of that size has this name.
    pub fn segno(&self, segment_size: WalSegSize) -> Result<SegNo, Error> {
        let per_id = segment_size.segments_per_xlog_id();
        let seg = u64::from(self.seg);
        if seg >= per_id {
            return Err(Error::SegmentNameOutOfRange {
                name: *self,
                segment_size,
            });
        }
        // log < 2^32 and per_id <= 2^12, so this stays below 2^44.
        Ok(SegNo(u64::from(self.log) * per_id + seg))
    }

    /// The LSN of the first byte of this segment with `segment_size` segments.
    ///
    /// Fails as [`SegmentName::segno`] does; a name that has a segment number always has a
    /// start LSN.
    pub fn start_lsn(&self, segment_size: WalSegSize) -> Result<Lsn, Error> {
        self.segno(segment_size)?
            .start_lsn(segment_size)
            .ok_or(Error::SegmentNameOutOfRange {
                name: *self,
                segment_size,
            })
    }

    /// The same segment on another timeline.
    pub const fn with_timeline(&self, tli: TimelineId) -> Self {
        SegmentName {
            tli,
            log: self.log,
            seg: self.seg,
        }
    }

    /// The first sixteen digits, `TTTTTTTTXXXXXXXX`: timeline and log. Segments sharing it
    /// make up one 4 GiB log of one timeline, a convenient group for archive listings.
    pub fn log_dir(&self) -> String {
        format!("{:08X}{:08X}", self.tli.get(), self.log)
    }

    /// Parses exactly 24 upper-case hexadecimal digits; `name` is the whole text, for errors.
    fn parse_digits(digits: &[u8], name: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidFileName {
            name: name.to_owned(),
            reason,
        };
        if digits.len() != Self::LEN {
            return Err(invalid(format!(
                "expected {} hexadecimal digits",
                Self::LEN
            )));
        }
        let part = |range: Range<usize>| -> Result<u32, Error> {
            // The length was checked above; an empty slice could only fail to parse.
            let digits = digits.get(range).unwrap_or_default();
            hex::parse_u32(digits, Case::Upper).map_err(|e| invalid(hex_reason(e, Self::LEN)))
        };
        let tli = TimelineId::new(part(0..8)?)
            .map_err(|_| invalid("timeline 0 does not exist".to_owned()))?;
        let log = part(8..16)?;
        let seg = part(16..24)?;
        if seg > MAX_SEG {
            return Err(invalid(seg_too_large(seg)));
        }
        Ok(SegmentName { tli, log, seg })
    }
}

fn seg_too_large(seg: u32) -> String {
    format!("segment part {seg:08X} is above {MAX_SEG:08X}, the largest any segment size allows")
}

fn hex_reason(error: HexError, digits: usize) -> String {
    match error {
        HexError::LowerCase => "hexadecimal digits must be upper case".to_owned(),
        HexError::Empty | HexError::TooLong | HexError::NotHex => {
            format!("expected {digits} hexadecimal digits")
        }
    }
}

/// Writes the 24 digits. Equivalent of `XLogFileNameById()` in xlog_internal.h.
impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.tli.get(), self.log, self.seg)
    }
}

impl fmt::Debug for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentName({self})")
    }
}

/// Reads exactly 24 upper-case hexadecimal digits. Equivalent of `IsXLogFileName()` in
/// xlog_internal.h, which additionally rejects timeline 0 and segment parts above `0xFFF`.
impl FromStr for SegmentName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_digits(s.as_bytes(), s)
    }
}

/// The name of a file PostgreSQL archives: a segment, a partial segment, a timeline history
/// file or a backup history file. See the [module documentation](self) for the forms.
///
/// [`WalFileName::parse`] accepts exactly these forms and [`Display`](fmt::Display) writes
/// back the text that was parsed. Serde writes the name as a string.
///
/// ```
/// use walferry_wal::{TimelineId, WalFileName};
///
/// let name = WalFileName::parse("000000020000000000000003.partial")?;
/// assert!(name.is_partial());
/// assert_eq!(name.timeline(), TimelineId::new(2)?);
/// assert_eq!(name.to_string(), "000000020000000000000003.partial");
///
/// assert!(WalFileName::parse("../000000010000000000000001").is_err());
/// assert!(WalFileName::parse("00000001000000000000000a").is_err());
/// # Ok::<(), walferry_wal::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalFileName {
    /// A complete segment, `TTTTTTTTXXXXXXXXYYYYYYYY`.
    Segment(SegmentName),
    /// A segment that was cut short, `TTTTTTTTXXXXXXXXYYYYYYYY.partial`: the last segment of
    /// a timeline archived at promotion, or one written by `pg_receivewal`. Equivalent of
    /// `IsPartialXLogFileName()` in xlog_internal.h.
    Partial(SegmentName),
    /// A timeline history file, `TTTTTTTT.history`. Equivalent of `TLHistoryFileName()` in
    /// xlog_internal.h.
    History(TimelineId),
    /// A backup history file, `TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup`, written when a base
    /// backup ends. Equivalent of `BackupHistoryFileName()` in xlog_internal.h.
    BackupHistory {
        /// The segment in which the backup started.
        segment: SegmentName,
        /// The backup's start position as an offset into that segment.
        offset: u32,
    },
}

impl WalFileName {
    /// Parses one of the four forms, strictly; see the [module documentation](self).
    pub fn parse(name: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidFileName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        let bytes = name.as_bytes();
        if bytes.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if bytes.iter().any(|&b| b == b'/' || b == b'\\') {
            return Err(invalid("expected a bare file name, not a path"));
        }
        if bytes
            .iter()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(invalid(
                "the name contains whitespace or control characters",
            ));
        }

        if bytes.len() == SegmentName::LEN {
            return SegmentName::parse_digits(bytes, name).map(WalFileName::Segment);
        }
        if let Some(digits) = bytes.strip_suffix(PARTIAL_SUFFIX)
            && digits.len() == SegmentName::LEN
        {
            return SegmentName::parse_digits(digits, name).map(WalFileName::Partial);
        }
        if let Some(digits) = bytes.strip_suffix(HISTORY_SUFFIX)
            && digits.len() == 8
        {
            let tli =
                hex::parse_u32(digits, Case::Upper).map_err(|e| invalid(&hex_reason(e, 8)))?;
            let tli = TimelineId::new(tli).map_err(|_| invalid("timeline 0 does not exist"))?;
            return Ok(WalFileName::History(tli));
        }
        if let Some(rest) = bytes.strip_suffix(BACKUP_SUFFIX)
            && let Some((digits, offset)) = rest.split_at_checked(SegmentName::LEN)
            && let Some(offset) = offset.strip_prefix(b".")
            && offset.len() == 8
        {
            let segment = SegmentName::parse_digits(digits, name)?;
            let offset =
                hex::parse_u32(offset, Case::Upper).map_err(|e| invalid(&hex_reason(e, 8)))?;
            return Ok(WalFileName::BackupHistory { segment, offset });
        }
        Err(invalid(
            "expected 24 hexadecimal digits, optionally followed by .partial or \
             .<8 hexadecimal digits>.backup, or 8 hexadecimal digits followed by .history",
        ))
    }

    /// The timeline the file belongs to.
    pub const fn timeline(&self) -> TimelineId {
        match self {
            WalFileName::Segment(segment)
            | WalFileName::Partial(segment)
            | WalFileName::BackupHistory { segment, .. } => segment.tli(),
            WalFileName::History(tli) => *tli,
        }
    }

    /// The segment the file is, or belongs to; `None` for a timeline history file.
    pub const fn segment(&self) -> Option<&SegmentName> {
        match self {
            WalFileName::Segment(segment)
            | WalFileName::Partial(segment)
            | WalFileName::BackupHistory { segment, .. } => Some(segment),
            WalFileName::History(_) => None,
        }
    }

    /// Whether this is a complete segment.
    pub const fn is_segment(&self) -> bool {
        matches!(self, WalFileName::Segment(_))
    }

    /// Whether this is a `.partial` segment.
    pub const fn is_partial(&self) -> bool {
        matches!(self, WalFileName::Partial(_))
    }

    /// Whether this is a timeline history file.
    pub const fn is_history(&self) -> bool {
        matches!(self, WalFileName::History(_))
    }

    /// Whether this is a backup history file.
    pub const fn is_backup_history(&self) -> bool {
        matches!(self, WalFileName::BackupHistory { .. })
    }
}

impl From<SegmentName> for WalFileName {
    fn from(segment: SegmentName) -> Self {
        WalFileName::Segment(segment)
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFileName::Segment(segment) => write!(f, "{segment}"),
            WalFileName::Partial(segment) => write!(f, "{segment}.partial"),
            WalFileName::History(tli) => write!(f, "{:08X}.history", tli.get()),
            WalFileName::BackupHistory { segment, offset } => {
                write!(f, "{segment}.{offset:08X}.backup")
            }
        }
    }
}

impl FromStr for WalFileName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Serializes and deserializes a type through its `Display` and `FromStr`.
macro_rules! serde_as_string {
    ($ty:ty, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;

                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }

                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

serde_as_string!(
    SegmentName,
    "a WAL segment name such as \"000000010000000000000001\""
);
serde_as_string!(
    WalFileName,
    "a WAL file name such as \"000000010000000000000001\""
);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn tli(id: u32) -> TimelineId {
        TimelineId::new(id).unwrap()
    }

    fn size(bytes: u64) -> WalSegSize {
        WalSegSize::new(bytes).unwrap()
    }

    #[test]
    fn segment_name_and_segno_table() {
        // (name, segment size, segment number or None when the name cannot exist)
        let cases: &[(&str, u64, Option<u64>)] = &[
            ("000000010000000000000000", 16 * MIB, Some(0)),
            ("000000010000000000000001", 16 * MIB, Some(1)),
            ("0000000100000000000000FF", 16 * MIB, Some(0xFF)),
            ("000000010000000100000000", 16 * MIB, Some(0x100)),
            ("000000010000000A000000FF", 16 * MIB, Some(0xAFF)),
            ("000000010000000000000100", 16 * MIB, None),
            ("000000010000000000000FFF", MIB, Some(0xFFF)),
            ("000000010000000100000000", MIB, Some(0x1000)),
            ("000000010000000000000003", GIB, Some(3)),
            ("000000010000000000000004", GIB, None),
            ("000000010000000100000003", GIB, Some(7)),
            ("00000001FFFFFFFF00000003", GIB, Some(u64::MAX >> 30)),
            ("00000001FFFFFFFF00000FFF", MIB, Some(u64::MAX >> 20)),
            ("FFFFFFFF0000000000000001", 16 * MIB, Some(1)),
        ];
        for &(text, bytes, segno) in cases {
            let name: SegmentName = text.parse().unwrap();
            assert_eq!(name.to_string(), text);
            let size = size(bytes);
            match segno {
                Some(segno) => {
                    assert_eq!(name.segno(size).unwrap(), SegNo(segno), "{text} {size}");
                    let start = name.start_lsn(size).unwrap();
                    assert_eq!(start, SegNo(segno).start_lsn(size).unwrap());
                    assert_eq!(
                        SegmentName::new(name.tli(), SegNo(segno), size).unwrap(),
                        name
                    );
                }
                None => {
                    assert_eq!(
                        name.segno(size),
                        Err(Error::SegmentNameOutOfRange {
                            name,
                            segment_size: size
                        }),
                        "{text} {size}"
                    );
                    assert!(name.start_lsn(size).is_err());
                }
            }
        }
    }

    #[test]
    fn segno_out_of_range_message() {
        let name: SegmentName = "000000010000000000000100".parse().unwrap();
        assert_eq!(
            name.segno(WalSegSize::DEFAULT).unwrap_err().to_string(),
            "WAL segment '000000010000000000000100' cannot exist with 16 MiB segments: its \
             last 8 digits must be below 00000100"
        );
    }

    #[test]
    fn new_rejects_segno_beyond_names() {
        let segno = SegNo(u64::MAX);
        for bytes in [MIB, 16 * MIB, GIB] {
            let size = size(bytes);
            assert_eq!(
                SegmentName::new(TimelineId::FIRST, segno, size),
                Err(Error::SegNoOutOfRange {
                    segno,
                    segment_size: size
                })
            );
        }
    }

    #[test]
    fn parts_and_helpers() {
        let name: SegmentName = "000000020000001A0000003F".parse().unwrap();
        assert_eq!(name.tli(), tli(2));
        assert_eq!(name.log(), 0x1A);
        assert_eq!(name.seg(), 0x3F);
        assert_eq!(name.log_dir(), "000000020000001A");
        assert_eq!(
            name.with_timeline(tli(3)).to_string(),
            "000000030000001A0000003F"
        );
        assert_eq!(SegmentName::from_parts(tli(2), 0x1A, 0x3F).unwrap(), name);
        assert!(SegmentName::from_parts(tli(2), 0, 0x1000).is_err());
        assert_eq!(format!("{name:?}"), "SegmentName(000000020000001A0000003F)");
    }

    #[test]
    fn ordering_matches_text() {
        let mut names: Vec<SegmentName> = [
            "000000020000000000000001",
            "000000010000000100000000",
            "0000000100000000000000FF",
            "000000010000000000000001",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        names.sort();
        let texts: Vec<String> = names.iter().map(ToString::to_string).collect();
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted);
    }

    #[test]
    fn wal_file_name_accepts() {
        let segment: SegmentName = "000000010000000000000002".parse().unwrap();
        let cases = [
            ("000000010000000000000002", WalFileName::Segment(segment)),
            (
                "000000010000000000000002.partial",
                WalFileName::Partial(segment),
            ),
            ("00000002.history", WalFileName::History(tli(2))),
            ("FFFFFFFF.history", WalFileName::History(tli(u32::MAX))),
            (
                "000000010000000000000002.00000028.backup",
                WalFileName::BackupHistory {
                    segment,
                    offset: 0x28,
                },
            ),
            (
                "000000010000000000000002.FFFFFFFF.backup",
                WalFileName::BackupHistory {
                    segment,
                    offset: u32::MAX,
                },
            ),
        ];
        for (text, expected) in cases {
            let parsed = WalFileName::parse(text).unwrap();
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.to_string(), text);
            assert_eq!(text.parse::<WalFileName>().unwrap(), expected);
        }
    }

    #[test]
    fn wal_file_name_rejects() {
        let cases = [
            ("", "the name is empty"),
            ("foo", "expected 24 hexadecimal digits, optionally"),
            (
                "00000001000000000000000",
                "expected 24 hexadecimal digits, optionally",
            ),
            (
                "0000000100000000000000001",
                "expected 24 hexadecimal digits, optionally",
            ),
            (
                "00000001000000000000000a",
                "hexadecimal digits must be upper case",
            ),
            ("00000001000000000000000G", "expected 24 hexadecimal digits"),
            ("000000000000000000000001", "timeline 0 does not exist"),
            (
                "000000010000000000001000",
                "segment part 00001000 is above 00000FFF",
            ),
            ("../000000010000000000000001", "not a path"),
            ("pg_wal/000000010000000000000001", "not a path"),
            ("..\\000000010000000000000001", "not a path"),
            ("/000000010000000000000001", "not a path"),
            (" 000000010000000000000001", "whitespace"),
            ("000000010000000000000001\n", "whitespace"),
            ("000000010000000000000001\0", "control"),
            (
                "000000010000000000000001.PARTIAL",
                "expected 24 hexadecimal digits, optionally",
            ),
            ("000000010000000000000001.partial.partial", "optionally"),
            ("000000010000000000000001.ready", "optionally"),
            ("000000010000000000000001.done", "optionally"),
            ("0000000a.history", "hexadecimal digits must be upper case"),
            ("00000000.history", "timeline 0 does not exist"),
            ("0000001.history", "optionally"),
            ("000000001.history", "optionally"),
            ("2.history", "optionally"),
            ("00000002.History", "optionally"),
            ("000000010000000000000001.00000028", "optionally"),
            ("000000010000000000000001.0000028.backup", "optionally"),
            ("000000010000000000000001.000000028.backup", "optionally"),
            (
                "000000010000000000000001.0000002a.backup",
                "must be upper case",
            ),
            ("000000010000000000000001-00000028.backup", "optionally"),
            (
                "000000000000000000000001.00000028.backup",
                "timeline 0 does not exist",
            ),
            ("00000001000000000000000é", "optionally"),
            ("0000000100000000000000é", "expected 24 hexadecimal digits"),
        ];
        for (text, reason) in cases {
            let err = WalFileName::parse(text).unwrap_err();
            match &err {
                Error::InvalidFileName { name, reason: got } => {
                    assert_eq!(name, text);
                    assert!(got.contains(reason), "{text:?}: {got}");
                }
                other => panic!("{text:?}: unexpected error {other:?}"),
            }
        }
        assert_eq!(
            "foo".parse::<SegmentName>().unwrap_err().to_string(),
            "invalid WAL file name 'foo': expected 24 hexadecimal digits"
        );
    }

    #[test]
    fn wal_file_name_helpers() {
        let segment = WalFileName::parse("000000030000000000000002").unwrap();
        let partial = WalFileName::parse("000000030000000000000002.partial").unwrap();
        let history = WalFileName::parse("00000003.history").unwrap();
        let backup = WalFileName::parse("000000030000000000000002.00000028.backup").unwrap();
        for name in [segment, partial, history, backup] {
            assert_eq!(name.timeline(), tli(3));
        }
        let seg: SegmentName = "000000030000000000000002".parse().unwrap();
        assert_eq!(segment.segment(), Some(&seg));
        assert_eq!(partial.segment(), Some(&seg));
        assert_eq!(backup.segment(), Some(&seg));
        assert_eq!(history.segment(), None);
        assert!(segment.is_segment() && !segment.is_partial());
        assert!(partial.is_partial() && !partial.is_segment());
        assert!(history.is_history() && !history.is_backup_history());
        assert!(backup.is_backup_history() && !backup.is_history());
        assert_eq!(WalFileName::from(seg), segment);
    }

    #[test]
    fn serde_uses_text() {
        let name = WalFileName::parse("00000002.history").unwrap();
        assert_eq!(
            serde_json::to_string(&name).unwrap(),
            "\"00000002.history\""
        );
        assert_eq!(
            serde_json::from_str::<WalFileName>("\"00000002.history\"").unwrap(),
            name
        );
        assert!(serde_json::from_str::<WalFileName>("\"00000000.history\"").is_err());
        let seg: SegmentName = "000000010000000000000001".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&seg).unwrap(),
            "\"000000010000000000000001\""
        );
        assert_eq!(
            serde_json::from_str::<SegmentName>("\"000000010000000000000001\"").unwrap(),
            seg
        );
    }

    fn segment_name() -> impl Strategy<Value = SegmentName> {
        (1u32.., any::<u32>(), 0u32..=MAX_SEG)
            .prop_map(|(t, log, seg)| SegmentName::from_parts(tli(t), log, seg).unwrap())
    }

    fn wal_file_name() -> impl Strategy<Value = WalFileName> {
        prop_oneof![
            segment_name().prop_map(WalFileName::Segment),
            segment_name().prop_map(WalFileName::Partial),
            (1u32..).prop_map(|t| WalFileName::History(tli(t))),
            (segment_name(), any::<u32>())
                .prop_map(|(segment, offset)| WalFileName::BackupHistory { segment, offset }),
        ]
    }

    proptest! {
        #[test]
        fn segment_name_text_round_trips(name in segment_name()) {
            let text = name.to_string();
            prop_assert_eq!(text.len(), SegmentName::LEN);
            prop_assert_eq!(text.parse::<SegmentName>().unwrap(), name);
        }

        #[test]
        fn segment_name_segno_round_trips(t in 1u32.., segno: u64, shift in 20u32..=30) {
            let size = size(1u64 << shift);
            match SegmentName::new(tli(t), SegNo(segno), size) {
                Ok(name) => {
                    prop_assert_eq!(name.segno(size).unwrap(), SegNo(segno));
                    prop_assert_eq!(name.tli(), tli(t));
                    let reparsed: SegmentName = name.to_string().parse().unwrap();
                    prop_assert_eq!(reparsed.segno(size).unwrap(), SegNo(segno));
                }
                Err(_) => prop_assert!(segno / size.segments_per_xlog_id() > u64::from(u32::MAX)),
            }
        }

        #[test]
        fn wal_file_name_text_round_trips(name in wal_file_name()) {
            let text = name.to_string();
            prop_assert_eq!(WalFileName::parse(&text).unwrap(), name);
            let json = serde_json::to_string(&name).unwrap();
            prop_assert_eq!(serde_json::from_str::<WalFileName>(&json).unwrap(), name);
        }

        #[test]
        fn wal_file_name_display_reproduces_input(text in "[0-9A-Fa-f./a-z]{0,44}") {
            if let Ok(name) = WalFileName::parse(&text) {
                prop_assert_eq!(name.to_string(), text);
            }
        }

        #[test]
        fn wal_file_name_parse_never_panics(text in "\\PC{0,48}") {
            let _ = WalFileName::parse(&text);
        }

        #[test]
        fn lower_case_is_rejected(name in wal_file_name()) {
            let lower = name.to_string().to_lowercase();
            if lower != name.to_string() {
                prop_assert!(WalFileName::parse(&lower).is_err());
            }
        }
    }
}
