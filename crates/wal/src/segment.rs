//! Segment sizes and segment numbers.
//!
//! The WAL is cut into files of `wal_segment_size` bytes, fixed when the cluster is created.
//! Segment `n` holds the LSNs from `n * size` up to, but not including, `(n + 1) * size`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Lsn};

// `WalSegSize::as_usize` widens a value of at most 2^30; this keeps that lossless.
const _: () = assert!(
    usize::BITS >= 32,
    "walferry-wal needs a usize of at least 32 bits"
);

/// The size of a WAL segment file, PostgreSQL's `wal_segment_size`.
///
/// Always a power of two from 1 MiB to 1 GiB inclusive, the rule of `IsValidWalSegSize()` in
/// xlog_internal.h, so the value is private and [`WalSegSize::new`] checks it. Serde writes the
/// size in bytes and checks it when reading.
///
/// ```
/// use walferry_wal::WalSegSize;
///
/// let size = WalSegSize::new(64 * 1024 * 1024)?;
/// assert_eq!(size.segments_per_xlog_id(), 64);
/// assert_eq!(size.to_string(), "64 MiB");
/// assert!(WalSegSize::new(3 * 1024 * 1024).is_err());
/// # Ok::<(), walferry_wal::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct WalSegSize(u32);

impl WalSegSize {
    /// The smallest size, 1 MiB. Equivalent of `WalSegMinSize` in xlog_internal.h.
    pub const MIN: WalSegSize = WalSegSize(1 << 20);

    /// The largest size, 1 GiB. Equivalent of `WalSegMaxSize` in xlog_internal.h.
    pub const MAX: WalSegSize = WalSegSize(1 << 30);

    /// The size `initdb` uses unless told otherwise, 16 MiB. Equivalent of
    /// `DEFAULT_XLOG_SEG_SIZE` in pg_config_manual.h.
    pub const DEFAULT: WalSegSize = WalSegSize(16 << 20);

    /// The segment size of `bytes`, or an error unless it is a power of two from 1 MiB to
    /// 1 GiB. Equivalent of `IsValidWalSegSize()` in xlog_internal.h.
    pub fn new(bytes: u64) -> Result<Self, Error> {
        let invalid = || Error::InvalidSegmentSize { size: bytes };
        if !bytes.is_power_of_two() || bytes < Self::MIN.bytes() || bytes > Self::MAX.bytes() {
            return Err(invalid());
        }
        u32::try_from(bytes).map(WalSegSize).map_err(|_| invalid())
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        // Lossless widening, spelled out because `u64::from` is not const.
        self.0 as u64
    }

    /// The size in bytes as PostgreSQL stores it (`xlp_seg_size`, `xlog_seg_size`).
    pub(crate) const fn as_u32(self) -> u32 {
        self.0
    }

    /// The size in bytes, for buffer lengths.
    pub const fn as_usize(self) -> usize {
        // Lossless: the value is at most 2^30 and usize has at least 32 bits (asserted above).
        self.0 as usize
    }

    /// How many segments make up one 4 GiB "logical log file", the unit of the middle eight
    /// digits of a segment name. Equivalent of `XLogSegmentsPerXLogId()` in xlog_internal.h.
    pub const fn segments_per_xlog_id(self) -> u64 {
        0x1_0000_0000 / self.bytes()
    }
}

impl TryFrom<u64> for WalSegSize {
    type Error = Error;

    fn try_from(bytes: u64) -> Result<Self, Self::Error> {
        Self::new(bytes)
    }
}

impl From<WalSegSize> for u64 {
    fn from(size: WalSegSize) -> Self {
        size.bytes()
    }
}

/// Writes the size in binary units, `16 MiB` or `1 GiB`.
impl fmt::Display for WalSegSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every valid size is a whole number of MiB, and only 1 GiB reaches a GiB.
        if self.bytes() >= 1 << 30 {
            write!(f, "{} GiB", self.bytes() >> 30)
        } else {
            write!(f, "{} MiB", self.bytes() >> 20)
        }
    }
}

impl fmt::Debug for WalSegSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalSegSize({self})")
    }
}

/// A segment number, PostgreSQL's `XLogSegNo` (xlogdefs.h): the position of a segment in
/// the WAL, counting from 0.
///
/// The number only means something together with a [`WalSegSize`]. A segment name encodes it
/// split in two; see [`SegmentName`](crate::SegmentName). Written in decimal; serde writes a
/// number.
///
/// ```
/// use walferry_wal::{Lsn, SegNo, WalSegSize};
///
/// let segno = SegNo(0x1AFF);
/// assert_eq!(segno.start_lsn(WalSegSize::DEFAULT), Some(Lsn(0x1A_FF00_0000)));
/// assert_eq!(segno.next(), Some(SegNo(0x1B00)));
/// assert_eq!(SegNo(10).checked_sub(SegNo(4)), Some(6));
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SegNo(pub u64);

impl SegNo {
    /// The following segment, or `None` after `u64::MAX`.
    pub const fn next(self) -> Option<SegNo> {
        self.checked_add(1)
    }

    /// The preceding segment, or `None` before segment 0.
    pub const fn prev(self) -> Option<SegNo> {
        match self.0.checked_sub(1) {
            Some(prev) => Some(SegNo(prev)),
            None => None,
        }
    }

    /// The segment `count` segments later, or `None` on overflow.
    pub const fn checked_add(self, count: u64) -> Option<SegNo> {
        match self.0.checked_add(count) {
            Some(segno) => Some(SegNo(segno)),
            None => None,
        }
    }

    /// The number of segments from `earlier` to `self`, or `None` when `earlier` is later.
    pub const fn checked_sub(self, earlier: SegNo) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }

    /// The LSN of the first byte of this segment, or `None` when it lies beyond the 64-bit
    /// WAL space. Equivalent of `XLogSegNoOffsetToRecPtr()` with offset 0 in xlog_internal.h.
    pub const fn start_lsn(self, segment_size: WalSegSize) -> Option<Lsn> {
        match self.0.checked_mul(segment_size.bytes()) {
            Some(lsn) => Some(Lsn(lsn)),
            None => None,
        }
    }

    /// The LSN just past the last byte of this segment, which is the start of the next one,
    /// or `None` when that lies beyond the 64-bit WAL space.
    pub const fn end_lsn(self, segment_size: WalSegSize) -> Option<Lsn> {
        match self.next() {
            Some(next) => next.start_lsn(segment_size),
            None => None,
        }
    }
}

impl fmt::Display for SegNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u64> for SegNo {
    fn from(value: u64) -> Self {
        SegNo(value)
    }
}

impl From<SegNo> for u64 {
    fn from(segno: SegNo) -> Self {
        segno.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn size_table() {
        let valid = [
            (MIB, 4096, "1 MiB"),
            (2 * MIB, 2048, "2 MiB"),
            (16 * MIB, 256, "16 MiB"),
            (64 * MIB, 64, "64 MiB"),
            (512 * MIB, 8, "512 MiB"),
            (GIB, 4, "1 GiB"),
        ];
        for (bytes, per_id, text) in valid {
            let size = WalSegSize::new(bytes).unwrap();
            assert_eq!(size.bytes(), bytes);
            assert_eq!(size.as_usize(), usize::try_from(bytes).unwrap());
            assert_eq!(size.segments_per_xlog_id(), per_id);
            assert_eq!(size.to_string(), text);
        }
        let invalid = [
            0,
            1,
            MIB / 2,
            MIB - 1,
            MIB + 1,
            3 * MIB,
            2 * GIB,
            u64::MAX,
            1 << 63,
        ];
        for bytes in invalid {
            assert_eq!(
                WalSegSize::new(bytes),
                Err(Error::InvalidSegmentSize { size: bytes }),
                "{bytes}"
            );
        }
        assert_eq!(WalSegSize::DEFAULT.bytes(), 16 * MIB);
        assert_eq!(WalSegSize::MIN.bytes(), MIB);
        assert_eq!(WalSegSize::MAX.bytes(), GIB);
        assert_eq!(
            WalSegSize::new(3 * MIB).unwrap_err().to_string(),
            "invalid WAL segment size 3145728 bytes: expected a power of two from 1 MiB to 1 GiB"
        );
    }

    #[test]
    fn size_serde_uses_bytes_and_validates() {
        let size = WalSegSize::DEFAULT;
        assert_eq!(serde_json::to_string(&size).unwrap(), "16777216");
        assert_eq!(
            serde_json::from_str::<WalSegSize>("16777216").unwrap(),
            size
        );
        assert!(serde_json::from_str::<WalSegSize>("16777215").is_err());
        assert!(serde_json::from_str::<WalSegSize>("0").is_err());
        assert!(serde_json::from_str::<WalSegSize>("\"16 MiB\"").is_err());
    }

    #[test]
    fn segno_table() {
        let sixteen = WalSegSize::DEFAULT;
        let gib = WalSegSize::MAX;
        assert_eq!(SegNo(0).start_lsn(sixteen), Some(Lsn(0)));
        assert_eq!(SegNo(1).start_lsn(sixteen), Some(Lsn(0x100_0000)));
        assert_eq!(SegNo(1).end_lsn(sixteen), Some(Lsn(0x200_0000)));
        // The last segment of the WAL space starts inside it and ends exactly at its end.
        let last = SegNo(u64::MAX >> 30);
        assert_eq!(last.start_lsn(gib), Some(Lsn(u64::MAX - (GIB - 1))));
        assert_eq!(last.end_lsn(gib), None);
        assert_eq!(last.next().unwrap().start_lsn(gib), None);
        assert_eq!(SegNo(u64::MAX).next(), None);
        assert_eq!(SegNo(0).prev(), None);
        assert_eq!(SegNo(5).prev(), Some(SegNo(4)));
        assert_eq!(SegNo(5).checked_add(3), Some(SegNo(8)));
        assert_eq!(SegNo(u64::MAX).checked_add(1), None);
        assert_eq!(SegNo(3).checked_sub(SegNo(5)), None);
        assert_eq!(SegNo(42).to_string(), "42");
        assert_eq!(serde_json::to_string(&SegNo(42)).unwrap(), "42");
        assert_eq!(serde_json::from_str::<SegNo>("42").unwrap(), SegNo(42));
    }

    proptest! {
        #[test]
        fn start_lsn_maps_back(segno: u64, shift in 20u32..=30) {
            let size = WalSegSize::new(1u64 << shift).unwrap();
            if let Some(start) = SegNo(segno).start_lsn(size) {
                prop_assert_eq!(start.segment_number(size), SegNo(segno));
                prop_assert_eq!(start.segment_offset(size), 0);
            } else {
                prop_assert!(segno > u64::MAX >> shift);
            }
        }

        #[test]
        fn size_serde_round_trips(shift in 20u32..=30) {
            let size = WalSegSize::new(1u64 << shift).unwrap();
            let json = serde_json::to_string(&size).unwrap();
            prop_assert_eq!(serde_json::from_str::<WalSegSize>(&json).unwrap(), size);
        }
    }
}
