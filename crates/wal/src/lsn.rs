//! Log sequence numbers.
//!
//! An [`Lsn`] is a byte position in the WAL stream. Its text form is PostgreSQL's: two
//! hexadecimal numbers, the high and low 32 bits, separated by a slash (`0/16B3748`,
//! `1A/FF000028`). [`Lsn`] writes upper-case digits without padding, as PostgreSQL 13 to 17 do,
//! and reads either case with or without padding, as the `pg_lsn` type does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hex::{self, Case, HexError};
use crate::{Error, SegNo, WalSegSize};

/// A position in the WAL, also known as an `XLogRecPtr` (xlogdefs.h).
///
/// Every `u64` is a representable position, so the field is public. `0/0` is
/// [`Lsn::INVALID`], PostgreSQL's `InvalidXLogRecPtr`. Ordering is by position.
///
/// Serde writes the text form (`"0/16B3748"`), so JSON stays readable.
///
/// ```
/// use walferry_wal::{Lsn, SegNo, WalSegSize};
///
/// let lsn: Lsn = "1A/FF000028".parse()?;
/// assert_eq!(lsn, Lsn(0x1A_FF00_0028));
/// assert_eq!(lsn.to_string(), "1A/FF000028");
/// assert_eq!(lsn.segment_number(WalSegSize::DEFAULT), SegNo(0x1AFF));
/// assert_eq!(lsn.segment_offset(WalSegSize::DEFAULT), 0x28);
/// # Ok::<(), walferry_wal::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid position `0/0`. Equivalent of `InvalidXLogRecPtr` in xlogdefs.h.
    pub const INVALID: Lsn = Lsn(0);

    /// Whether this is a real position, not [`Lsn::INVALID`]. Equivalent of the negation of
    /// `XLogRecPtrIsInvalid()` in xlogdefs.h.
    pub const fn is_valid(self) -> bool {
        self.0 != Self::INVALID.0
    }

    /// The position `bytes` further on, or `None` past the end of the 64-bit WAL space.
    pub const fn checked_add(self, bytes: u64) -> Option<Lsn> {
        match self.0.checked_add(bytes) {
            Some(lsn) => Some(Lsn(lsn)),
            None => None,
        }
    }

    /// The number of bytes from `earlier` to `self`, or `None` when `earlier` is later.
    pub const fn checked_sub(self, earlier: Lsn) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }

    /// The segment this position falls in. Equivalent of `XLByteToSeg()` in xlog_internal.h.
    ///
    /// A position exactly on a segment boundary belongs to the segment that starts there.
    pub const fn segment_number(self, segment_size: WalSegSize) -> SegNo {
        SegNo(self.0 / segment_size.bytes())
    }

    /// The byte offset of this position within its segment. Equivalent of
    /// `XLogSegmentOffset()` in xlog_internal.h.
    pub const fn segment_offset(self, segment_size: WalSegSize) -> u64 {
        // The size is a power of two, so the mask is the remainder.
        self.0 & (segment_size.bytes() - 1)
    }

    /// The high 32 bits, the part before the slash (`xlogid` in old PostgreSQL releases).
    const fn high(self) -> u32 {
        let [a, b, c, d, _, _, _, _] = self.0.to_be_bytes();
        u32::from_be_bytes([a, b, c, d])
    }

    /// The low 32 bits, the part after the slash (`xrecoff` in old PostgreSQL releases).
    const fn low(self) -> u32 {
        let [_, _, _, _, a, b, c, d] = self.0.to_be_bytes();
        u32::from_be_bytes([a, b, c, d])
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> Self {
        lsn.0
    }
}

/// Writes `%X/%X`, the form of PostgreSQL's `LSN_FORMAT_ARGS()` up to release 17.
impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.high(), self.low())
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

/// Reads `X/X`: one to eight hexadecimal digits of either case on each side of the slash and
/// nothing else, the rule of `pg_lsn_in_internal()` in pg_lsn.c.
impl FromStr for Lsn {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| Error::InvalidLsn {
            input: s.to_owned(),
            reason,
        };
        let (high, low) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected two hexadecimal numbers separated by '/'"))?;
        let part = |digits: &str| {
            hex::parse_u32(digits.as_bytes(), Case::Any).map_err(|e| {
                invalid(match e {
                    HexError::Empty => "a part is empty",
                    HexError::TooLong => "a part has more than 8 hexadecimal digits",
                    HexError::LowerCase | HexError::NotHex => "a part is not hexadecimal",
                })
            })
        };
        let high = part(high)?;
        let low = part(low)?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Lsn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an LSN such as \"0/16B3748\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Lsn, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn display_table() {
        let cases = [
            (0, "0/0"),
            (0x16B_3748, "0/16B3748"),
            (0x1A_FF00_0028, "1A/FF000028"),
            (0x1_0000_0000, "1/0"),
            (u64::MAX, "FFFFFFFF/FFFFFFFF"),
        ];
        for (value, text) in cases {
            assert_eq!(Lsn(value).to_string(), text);
            assert_eq!(text.parse::<Lsn>().unwrap(), Lsn(value), "{text}");
        }
    }

    #[test]
    fn parse_accepts_either_case_and_padding() {
        let cases = [
            ("1a/ff000028", 0x1A_FF00_0028),
            ("1A/ff000028", 0x1A_FF00_0028),
            ("00000000/00000000", 0),
            ("0/00000001", 1),
            ("ffffffff/ffffffff", u64::MAX),
        ];
        for (text, value) in cases {
            assert_eq!(text.parse::<Lsn>().unwrap(), Lsn(value), "{text}");
        }
    }

    #[test]
    fn parse_rejects() {
        let cases = [
            "",
            "/",
            "0",
            "0/",
            "/0",
            "0/0/0",
            "100000000/0",
            "0/100000000",
            "0x1/0",
            "+1/0",
            "-1/0",
            " 0/0",
            "0/0 ",
            "0 /0",
            "g/0",
            "0/é",
            "0\\0",
        ];
        for text in cases {
            let err = text.parse::<Lsn>().unwrap_err();
            assert!(
                matches!(&err, Error::InvalidLsn { input, .. } if input == text),
                "{text:?}: {err:?}"
            );
        }
    }

    #[test]
    fn error_message_names_input() {
        let err = "0/xyz".parse::<Lsn>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid LSN '0/xyz': a part is not hexadecimal"
        );
    }

    #[test]
    fn arithmetic() {
        assert_eq!(Lsn(1).checked_add(2), Some(Lsn(3)));
        assert_eq!(Lsn(u64::MAX).checked_add(1), None);
        assert_eq!(Lsn(5).checked_sub(Lsn(3)), Some(2));
        assert_eq!(Lsn(3).checked_sub(Lsn(5)), None);
        assert!(!Lsn::INVALID.is_valid());
        assert!(Lsn(1).is_valid());
        assert_eq!(Lsn::default(), Lsn::INVALID);
    }

    #[test]
    fn segment_maths() {
        let mib = WalSegSize::new(1 << 20).unwrap();
        let gib = WalSegSize::new(1 << 30).unwrap();
        let sixteen = WalSegSize::DEFAULT;
        let cases = [
            (Lsn(0), sixteen, 0, 0),
            (Lsn(0x16B_3748), sixteen, 1, 0x6B_3748),
            (Lsn(0x100_0000), sixteen, 1, 0),
            (Lsn(0xFF_FFFF), sixteen, 0, 0xFF_FFFF),
            (Lsn(0x1_0000_0000), sixteen, 0x100, 0),
            (Lsn(0x1_0000_0000), mib, 0x1000, 0),
            (Lsn(0x1_4000_0001), gib, 5, 1),
            (Lsn(u64::MAX), gib, u64::MAX >> 30, (1 << 30) - 1),
            (Lsn(u64::MAX), mib, u64::MAX >> 20, (1 << 20) - 1),
        ];
        for (lsn, size, segno, offset) in cases {
            assert_eq!(lsn.segment_number(size), SegNo(segno), "{lsn} {size}");
            assert_eq!(lsn.segment_offset(size), offset, "{lsn} {size}");
        }
    }

    #[test]
    fn serde_uses_text() {
        let lsn = Lsn(0x1A_FF00_0028);
        assert_eq!(serde_json::to_string(&lsn).unwrap(), "\"1A/FF000028\"");
        assert_eq!(serde_json::from_str::<Lsn>("\"1a/ff000028\"").unwrap(), lsn);
        assert!(serde_json::from_str::<Lsn>("\"1A\"").is_err());
        assert!(serde_json::from_str::<Lsn>("42").is_err());
    }

    #[test]
    fn debug_shows_text() {
        assert_eq!(format!("{:?}", Lsn(0x16B_3748)), "Lsn(0/16B3748)");
    }

    proptest! {
        #[test]
        fn text_round_trips(value: u64) {
            let lsn = Lsn(value);
            prop_assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
            prop_assert_eq!(lsn.to_string().to_lowercase().parse::<Lsn>().unwrap(), lsn);
            let padded = format!("{:08X}/{:08X}", value >> 32, value & 0xFFFF_FFFF);
            prop_assert_eq!(padded.parse::<Lsn>().unwrap(), lsn);
        }

        #[test]
        fn serde_round_trips(value: u64) {
            let lsn = Lsn(value);
            let json = serde_json::to_string(&lsn).unwrap();
            prop_assert_eq!(serde_json::from_str::<Lsn>(&json).unwrap(), lsn);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,20}") {
            let _ = text.parse::<Lsn>();
        }

        #[test]
        fn segment_maths_recombine(value: u64, shift in 20u32..=30) {
            let size = WalSegSize::new(1u64 << shift).unwrap();
            let lsn = Lsn(value);
            let start = lsn.segment_number(size).start_lsn(size).unwrap();
            prop_assert_eq!(start.checked_add(lsn.segment_offset(size)), Some(lsn));
        }
    }
}
