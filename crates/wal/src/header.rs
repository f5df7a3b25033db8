//! The page header at the start of every WAL segment.
//!
//! WAL is written in pages (`XLOG_BLCKSZ`, normally 8 kB), each starting with a header. The
//! first page of a segment carries the long form, `XLogLongPageHeaderData` (xlog_internal.h),
//! which identifies the file: which cluster wrote it, with which segment size, for which
//! position. Reading it costs 40 bytes and catches the archive's worst mistakes before they
//! reach PostgreSQL: a file from another cluster, a recycled segment still holding old data
//! under a new name, or a file stored under the wrong name.
//!
//! # Layout
//!
//! Byte offsets in the 40-byte long header, all integers little-endian:
//!
//! | offset | size | field | meaning |
//! | --- | --- | --- | --- |
//! | 0 | 2 | `xlp_magic` | WAL format version, see [`PgVersion`] |
//! | 2 | 2 | `xlp_info` | flag bits; the first page has `XLP_LONG_HEADER` (`0x0002`) |
//! | 4 | 4 | `xlp_tli` | timeline of the first record on the page |
//! | 8 | 8 | `xlp_pageaddr` | LSN of the page |
//! | 16 | 4 | `xlp_rem_len` | bytes of a record continued from the previous page |
//! | 20 | 4 | (padding) | alignment of the next field |
//! | 24 | 8 | `xlp_sysid` | system identifier from `pg_control` |
//! | 32 | 4 | `xlp_seg_size` | segment size in bytes |
//! | 36 | 4 | `xlp_xlog_blcksz` | WAL page size in bytes |
//!
//! For example, the first page of `000000010000000000000006` from a PostgreSQL 15 cluster
//! with 1 MiB segments begins (hexadecimal bytes):
//!
//! ```text
//! 10 d1 07 00 01 00 00 00  00 00 60 00 00 00 00 00   magic D110, info 0007, tli 1, addr 0/600000
//! d9 00 00 00 00 00 00 00  31 ef bc 19 ec 69 06 6b   rem_len 217, padding, sysid 7711967874683563825
//! 00 00 10 00 00 20 00 00                            seg_size 1048576, blcksz 8192
//! ```
//!
//! # Byte order
//!
//! PostgreSQL writes WAL in the byte order of the machine running it. Only little-endian WAL
//! (x86-64, AArch64 and nearly every server today) is supported; a big-endian header is
//! recognised by its byte-swapped magic and rejected with [`HeaderError::BigEndian`].

use crate::error::HeaderError;
use crate::{Lsn, PgVersion, SegmentName, TimelineId, WalSegSize};

/// The length of the long page header at the start of a segment, 40 bytes. Equivalent of
/// `SizeOfXLogLongPHD` in xlog_internal.h.
pub const LONG_HEADER_LEN: usize = 40;

/// `xlp_info` flag: the page starts with the rest of a record begun on the previous page.
/// Equivalent of `XLP_FIRST_IS_CONTRECORD` in xlog_internal.h.
pub const INFO_FIRST_IS_CONTRECORD: u16 = 0x0001;

/// `xlp_info` flag: the page has the long header; set on the first page of every segment.
/// Equivalent of `XLP_LONG_HEADER` in xlog_internal.h.
pub const INFO_LONG_HEADER: u16 = 0x0002;

/// `xlp_info` flag: a missing continuation record was replaced. Equivalent of
/// `XLP_FIRST_IS_OVERWRITE_CONTRECORD` in xlog_internal.h.
pub const INFO_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0004;

/// Every defined `xlp_info` flag. Equivalent of `XLP_ALL_FLAGS` in xlog_internal.h.
pub const INFO_ALL_FLAGS: u16 =
    INFO_FIRST_IS_CONTRECORD | INFO_LONG_HEADER | INFO_FIRST_IS_OVERWRITE_CONTRECORD;

/// The smallest and largest `XLOG_BLCKSZ` PostgreSQL can be built with (`--with-wal-blocksize`).
const MIN_BLOCK_SIZE: u32 = 1 << 10;
const MAX_BLOCK_SIZE: u32 = 1 << 16;

/// The long page header at the start of a WAL segment, `XLogLongPageHeaderData` in
/// xlog_internal.h, as read by [`SegmentHeader::parse`].
///
/// ```
/// use walferry_wal::{ExpectedSegment, Lsn, PgVersion, SegmentHeader, TimelineId, WalSegSize};
///
/// let header = SegmentHeader {
///     pg_version: PgVersion::V16,
///     info: walferry_wal::header::INFO_LONG_HEADER,
///     timeline: TimelineId::FIRST,
///     page_address: Lsn(0x300_0000),
///     system_identifier: 7_311_234_567_890_123_456,
///     segment_size: WalSegSize::DEFAULT,
///     block_size: 8192,
/// };
/// let bytes = header.to_bytes();
/// let parsed = SegmentHeader::parse(&bytes)?;
/// assert_eq!(parsed, header);
///
/// let expected = ExpectedSegment::new("000000010000000000000003".parse()?);
/// parsed.check(&expected)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentHeader {
    /// The PostgreSQL version that wrote the segment, from `xlp_magic`.
    pub pg_version: PgVersion,
    /// The flag bits, `xlp_info`; see the `INFO_*` constants.
    pub info: u16,
    /// The timeline of the first record on the page, `xlp_tli`. This may be earlier than the
    /// timeline in the segment's name; see [`SegmentHeader::check`].
    pub timeline: TimelineId,
    /// The LSN of the page, `xlp_pageaddr`: the start of the segment.
    pub page_address: Lsn,
    /// The cluster's system identifier, `xlp_sysid`, as shown by `pg_controldata`.
    pub system_identifier: u64,
    /// The segment size, `xlp_seg_size`.
    pub segment_size: WalSegSize,
    /// The WAL page size in bytes, `xlp_xlog_blcksz`.
    pub block_size: u32,
}

impl SegmentHeader {
    /// Reads the long page header from the first bytes of a segment file. Bytes after the
    /// first [`LONG_HEADER_LEN`] are ignored.
    ///
    /// Equivalent of the file-independent checks of `XLogReaderValidatePageHeader()` in
    /// xlogreader.c, for the first page of a segment. Fails when the bytes are too short, the
    /// magic is not that of a supported version (or is a big-endian one), undefined flag bits
    /// are set, `XLP_LONG_HEADER` is missing, or the timeline, segment size, block size or page
    /// address is impossible.
    pub fn parse(first_bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let raw: &[u8; LONG_HEADER_LEN] =
            first_bytes.first_chunk().ok_or(HeaderError::TooShort {
                len: first_bytes.len(),
            })?;
        // The layout table in the module documentation, byte by byte.
        #[rustfmt::skip]
        let [
            m0, m1, i0, i1, t0, t1, t2, t3,
            a0, a1, a2, a3, a4, a5, a6, a7,
            _, _, _, _, _, _, _, _, // xlp_rem_len and padding
            s0, s1, s2, s3, s4, s5, s6, s7,
            z0, z1, z2, z3, b0, b1, b2, b3,
        ] = *raw;

        let magic = u16::from_le_bytes([m0, m1]);
        let pg_version = PgVersion::from_page_magic(magic).ok_or_else(|| {
            match PgVersion::from_page_magic(magic.swap_bytes()) {
                Some(version) => HeaderError::BigEndian { magic, version },
                None => HeaderError::UnknownMagic { magic },
            }
        })?;
        let info = u16::from_le_bytes([i0, i1]);
        if info & !INFO_ALL_FLAGS != 0 {
            return Err(HeaderError::InvalidInfoBits { info });
        }
        if info & INFO_LONG_HEADER == 0 {
            return Err(HeaderError::NotLongHeader { info });
        }
        let timeline = TimelineId::new(u32::from_le_bytes([t0, t1, t2, t3]))
            .map_err(|_| HeaderError::InvalidTimeline)?;
        let page_address = Lsn(u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]));
        let system_identifier = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
        let seg_size = u32::from_le_bytes([z0, z1, z2, z3]);
        let segment_size = WalSegSize::new(u64::from(seg_size))
            .map_err(|_| HeaderError::InvalidSegmentSize { size: seg_size })?;
        let block_size = u32::from_le_bytes([b0, b1, b2, b3]);
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(HeaderError::InvalidBlockSize { size: block_size });
        }
        if page_address.segment_offset(segment_size) != 0 {
            return Err(HeaderError::NotSegmentStart {
                page_address,
                segment_size,
            });
        }
        Ok(SegmentHeader {
            pg_version,
            info,
            timeline,
            page_address,
            system_identifier,
            segment_size,
            block_size,
        })
    }

    /// Writes the header as the first [`LONG_HEADER_LEN`] bytes of a segment, with
    /// `xlp_rem_len` and the padding zero. [`SegmentHeader::parse`] reads it back.
    pub fn to_bytes(&self) -> [u8; LONG_HEADER_LEN] {
        let [m0, m1] = self.pg_version.page_magic().to_le_bytes();
        let [i0, i1] = self.info.to_le_bytes();
        let [t0, t1, t2, t3] = self.timeline.get().to_le_bytes();
        let [a0, a1, a2, a3, a4, a5, a6, a7] = self.page_address.0.to_le_bytes();
        let [s0, s1, s2, s3, s4, s5, s6, s7] = self.system_identifier.to_le_bytes();
        let [z0, z1, z2, z3] = self.segment_size.as_u32().to_le_bytes();
        let [b0, b1, b2, b3] = self.block_size.to_le_bytes();
        #[rustfmt::skip]
        let raw = [
            m0, m1, i0, i1, t0, t1, t2, t3,
            a0, a1, a2, a3, a4, a5, a6, a7,
            0, 0, 0, 0, 0, 0, 0, 0, // xlp_rem_len and padding
            s0, s1, s2, s3, s4, s5, s6, s7,
            z0, z1, z2, z3, b0, b1, b2, b3,
        ];
        raw
    }

    /// Checks that this header belongs to the segment `expected` describes.
    ///
    /// In order, and each with its own error: the PostgreSQL version, system identifier and
    /// segment size when `expected` gives them; that the name can exist with the header's
    /// segment size; that the page address is the start of the named segment (a recycled
    /// segment that still holds old WAL fails here); and the timeline.
    ///
    /// # Timelines
    ///
    /// The header's timeline must be no later than the name's, and may be earlier. The
    /// header records the timeline of the first record on the page, not the file's: when
    /// recovery ends part-way through a segment, PostgreSQL starts the new timeline by copying
    /// the old timeline's segment up to the switch point into a file named on the new timeline
    /// (`XLogInitNewTimeline()` in xlog.c), so that file's first page still carries the parent
    /// timeline. A PostgreSQL 15 cluster promoted to timeline 2 in segment 6 writes
    /// `000000020000000000000006` with `xlp_tli` 1. PostgreSQL itself only requires page
    /// timelines never to decrease along the WAL (`XLogReaderValidatePageHeader()` in
    /// xlogreader.c). A page timeline later than the file's cannot happen: a timeline's
    /// records never appear in files named for its ancestors.
    ///
    /// Without the timeline history this cannot tell whether an earlier timeline is actually
    /// an ancestor of the name's; callers that have the history can check
    /// [`TimelineHistory::contains`](crate::TimelineHistory::contains).
    pub fn check(&self, expected: &ExpectedSegment) -> Result<(), HeaderError> {
        let name = expected.name;
        if let Some(version) = expected.pg_version
            && version != self.pg_version
        {
            return Err(HeaderError::PgVersionMismatch {
                name,
                expected: version,
                found: self.pg_version,
            });
        }
        if let Some(system_identifier) = expected.system_identifier
            && system_identifier != self.system_identifier
        {
            return Err(HeaderError::SystemIdentifierMismatch {
                name,
                expected: system_identifier,
                found: self.system_identifier,
            });
        }
        if let Some(segment_size) = expected.segment_size
            && segment_size != self.segment_size
        {
            return Err(HeaderError::SegmentSizeMismatch {
                name,
                expected: segment_size,
                found: self.segment_size,
            });
        }
        let start = name
            .start_lsn(self.segment_size)
            .map_err(|_| HeaderError::NameOutOfRange {
                name,
                segment_size: self.segment_size,
            })?;
        if start != self.page_address {
            return Err(HeaderError::PageAddressMismatch {
                name,
                expected: start,
                found: self.page_address,
            });
        }
        if self.timeline > name.tli() {
            return Err(HeaderError::TimelineMismatch {
                name,
                expected: name.tli(),
                found: self.timeline,
            });
        }
        Ok(())
    }
}

/// What a segment's header should say, for [`SegmentHeader::check`]: the segment's name and,
/// where known, facts about the cluster it must come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExpectedSegment {
    /// The segment the file is stored or requested as.
    pub name: SegmentName,
    /// The cluster's system identifier, when known.
    pub system_identifier: Option<u64>,
    /// The cluster's segment size, when known.
    pub segment_size: Option<WalSegSize>,
    /// The cluster's PostgreSQL version, when known.
    pub pg_version: Option<PgVersion>,
}

impl ExpectedSegment {
    /// Expects the segment `name`, with no facts about the cluster.
    pub const fn new(name: SegmentName) -> Self {
        ExpectedSegment {
            name,
            system_identifier: None,
            segment_size: None,
            pg_version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The first 40 bytes of `000000010000000000000006` from a PostgreSQL 15 cluster made with
    /// `initdb --wal-segsize=1`.
    const PG15_SEGMENT_6: [u8; LONG_HEADER_LEN] = [
        0x10, 0xd1, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0xd9, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x31, 0xef, 0xbc, 0x19, 0xec, 0x69, 0x06, 0x6b, //
        0x00, 0x00, 0x10, 0x00, 0x00, 0x20, 0x00, 0x00, //
    ];
    const PG15_SYSID: u64 = 7_711_967_874_683_563_825;

    fn tli(id: u32) -> TimelineId {
        TimelineId::new(id).unwrap()
    }

    fn name(text: &str) -> SegmentName {
        text.parse().unwrap()
    }

    fn sample() -> SegmentHeader {
        SegmentHeader::parse(&PG15_SEGMENT_6).unwrap()
    }

    /// `PG15_SEGMENT_6` with `bytes` written at `at`.
    fn patched(at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut raw = PG15_SEGMENT_6.to_vec();
        raw[at..at + bytes.len()].copy_from_slice(bytes);
        raw
    }

    #[test]
    fn parses_a_real_header() {
        let header = sample();
        assert_eq!(
            header,
            SegmentHeader {
                pg_version: PgVersion::V15,
                info: INFO_ALL_FLAGS,
                timeline: TimelineId::FIRST,
                page_address: Lsn(0x60_0000),
                system_identifier: PG15_SYSID,
                segment_size: WalSegSize::MIN,
                block_size: 8192,
            }
        );
        // Trailing bytes (the rest of the page) are ignored.
        let mut page = PG15_SEGMENT_6.to_vec();
        page.resize(8192, 0xAA);
        assert_eq!(SegmentHeader::parse(&page).unwrap(), header);
    }

    #[test]
    fn to_bytes_matches_postgres_except_rem_len() {
        let mut expected = PG15_SEGMENT_6;
        expected[16] = 0; // xlp_rem_len is not kept
        assert_eq!(sample().to_bytes(), expected);
    }

    #[test]
    fn parse_errors() {
        let cases: Vec<(Vec<u8>, HeaderError)> = vec![
            (Vec::new(), HeaderError::TooShort { len: 0 }),
            (
                PG15_SEGMENT_6[..39].to_vec(),
                HeaderError::TooShort { len: 39 },
            ),
            (
                patched(0, &[0x01, 0xd1]),
                HeaderError::UnknownMagic { magic: 0xD101 },
            ),
            (
                patched(0, &[0x00, 0x00]),
                HeaderError::UnknownMagic { magic: 0 },
            ),
            (
                patched(0, &[0xd1, 0x10]),
                HeaderError::BigEndian {
                    magic: 0x10D1,
                    version: PgVersion::V15,
                },
            ),
            (
                patched(2, &[0x0a, 0x00]),
                HeaderError::InvalidInfoBits { info: 0x000A },
            ),
            (
                patched(2, &[0x02, 0x01]),
                HeaderError::InvalidInfoBits { info: 0x0102 },
            ),
            (
                patched(2, &[0x01, 0x00]),
                HeaderError::NotLongHeader { info: 0x0001 },
            ),
            (
                patched(2, &[0x00, 0x00]),
                HeaderError::NotLongHeader { info: 0 },
            ),
            (patched(4, &[0, 0, 0, 0]), HeaderError::InvalidTimeline),
            (
                patched(32, &0x0030_0000u32.to_le_bytes()),
                HeaderError::InvalidSegmentSize { size: 0x0030_0000 },
            ),
            (
                patched(32, &0x8000_0000u32.to_le_bytes()),
                HeaderError::InvalidSegmentSize { size: 0x8000_0000 },
            ),
            (
                patched(32, &[0, 0, 0, 0]),
                HeaderError::InvalidSegmentSize { size: 0 },
            ),
            (
                patched(36, &[0, 0, 0, 0]),
                HeaderError::InvalidBlockSize { size: 0 },
            ),
            (
                patched(36, &512u32.to_le_bytes()),
                HeaderError::InvalidBlockSize { size: 512 },
            ),
            (
                patched(36, &(1u32 << 17).to_le_bytes()),
                HeaderError::InvalidBlockSize { size: 1 << 17 },
            ),
            (
                patched(36, &8000u32.to_le_bytes()),
                HeaderError::InvalidBlockSize { size: 8000 },
            ),
            (
                patched(8, &0x60_2000u64.to_le_bytes()),
                HeaderError::NotSegmentStart {
                    page_address: Lsn(0x60_2000),
                    segment_size: WalSegSize::MIN,
                },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                SegmentHeader::parse(&bytes),
                Err(expected.clone()),
                "{expected}"
            );
        }
    }

    #[test]
    fn error_messages() {
        let cases = [
            (
                SegmentHeader::parse(&[0; 10]).unwrap_err(),
                "WAL segment header too short: 10 bytes, expected at least 40",
            ),
            (
                SegmentHeader::parse(&patched(0, &[0x01, 0xd1])).unwrap_err(),
                "unknown WAL page magic 0xD101: not a WAL segment of a supported PostgreSQL \
                 version (13 to 17)",
            ),
            (
                SegmentHeader::parse(&patched(0, &[0xd1, 0x10])).unwrap_err(),
                "WAL page magic 0x10D1 is the byte-swapped magic of PostgreSQL 15: big-endian \
                 WAL is not supported",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn check_accepts_matching_segment() {
        let header = sample();
        let mut expected = ExpectedSegment::new(name("000000010000000000000006"));
        header.check(&expected).unwrap();
        expected.system_identifier = Some(PG15_SYSID);
        expected.segment_size = Some(WalSegSize::MIN);
        expected.pg_version = Some(PgVersion::V15);
        header.check(&expected).unwrap();
    }

    #[test]
    fn check_accepts_parent_timeline_at_a_switch() {
        // After promotion to timeline 2 in segment 6, PostgreSQL 15 wrote
        // 000000020000000000000006 as a copy of timeline 1's segment: its header says tli 1.
        let header = sample();
        for file in ["000000020000000000000006", "000000070000000000000006"] {
            header.check(&ExpectedSegment::new(name(file))).unwrap();
        }
        let later = SegmentHeader {
            timeline: tli(3),
            ..header
        };
        later
            .check(&ExpectedSegment::new(name("000000030000000000000006")))
            .unwrap();
        let err = later
            .check(&ExpectedSegment::new(name("000000020000000000000006")))
            .unwrap_err();
        assert_eq!(
            err,
            HeaderError::TimelineMismatch {
                name: name("000000020000000000000006"),
                expected: tli(2),
                found: tli(3),
            }
        );
        assert_eq!(
            err.to_string(),
            "WAL segment '000000020000000000000006' has page timeline 3, later than timeline 2 \
             in its name"
        );
        assert!(!err.is_wrong_system());
    }

    #[test]
    fn check_mismatches() {
        let header = sample();
        let seg6 = name("000000010000000000000006");
        let with = |f: fn(&mut ExpectedSegment)| {
            let mut expected = ExpectedSegment::new(seg6);
            f(&mut expected);
            header.check(&expected)
        };
        let err = with(|e| e.pg_version = Some(PgVersion::V16)).unwrap_err();
        assert_eq!(
            err,
            HeaderError::PgVersionMismatch {
                name: seg6,
                expected: PgVersion::V16,
                found: PgVersion::V15,
            }
        );
        assert!(err.is_wrong_system());

        let err = with(|e| e.system_identifier = Some(42)).unwrap_err();
        assert_eq!(
            err,
            HeaderError::SystemIdentifierMismatch {
                name: seg6,
                expected: 42,
                found: PG15_SYSID,
            }
        );
        assert!(err.is_wrong_system());
        assert_eq!(
            err.to_string(),
            "WAL segment '000000010000000000000006' is from a different database system: \
             system identifier 7711967874683563825, expected 42"
        );

        let err = with(|e| e.segment_size = Some(WalSegSize::DEFAULT)).unwrap_err();
        assert_eq!(
            err,
            HeaderError::SegmentSizeMismatch {
                name: seg6,
                expected: WalSegSize::DEFAULT,
                found: WalSegSize::MIN,
            }
        );
        assert!(err.is_wrong_system());

        // A recycled segment: the right size and cluster, but an old page address.
        let seg7 = name("000000010000000000000007");
        let err = header.check(&ExpectedSegment::new(seg7)).unwrap_err();
        assert_eq!(
            err,
            HeaderError::PageAddressMismatch {
                name: seg7,
                expected: Lsn(0x70_0000),
                found: Lsn(0x60_0000),
            }
        );
        assert!(!err.is_wrong_system());
        assert_eq!(
            err.to_string(),
            "WAL segment '000000010000000000000007' has page address 0/600000, expected 0/700000"
        );

        // A name that needs more than 4 GiB / 16 MiB segments per log.
        let sixteen = SegmentHeader {
            segment_size: WalSegSize::DEFAULT,
            page_address: Lsn(0),
            ..header
        };
        let big = name("000000010000000000000100");
        assert_eq!(
            sixteen.check(&ExpectedSegment::new(big)),
            Err(HeaderError::NameOutOfRange {
                name: big,
                segment_size: WalSegSize::DEFAULT,
            })
        );
    }

    fn header() -> impl Strategy<Value = SegmentHeader> {
        (
            0..PgVersion::ALL.len(),
            0u16..=INFO_ALL_FLAGS,
            1u32..,
            any::<u64>(),
            any::<u64>(),
            20u32..=30,
            10u32..=16,
        )
            .prop_map(|(v, info, t, addr, sysid, seg_shift, blk_shift)| {
                let segment_size = WalSegSize::new(1 << seg_shift).unwrap();
                SegmentHeader {
                    pg_version: PgVersion::ALL[v],
                    info: info | INFO_LONG_HEADER,
                    timeline: tli(t),
                    page_address: Lsn(addr >> seg_shift << seg_shift),
                    system_identifier: sysid,
                    segment_size,
                    block_size: 1 << blk_shift,
                }
            })
    }

    proptest! {
        #[test]
        fn bytes_round_trip(header in header()) {
            prop_assert_eq!(SegmentHeader::parse(&header.to_bytes()).unwrap(), header);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = SegmentHeader::parse(&bytes);
        }

        #[test]
        fn named_segment_checks(header in header()) {
            let segno = header.page_address.segment_number(header.segment_size);
            let name = SegmentName::new(header.timeline, segno, header.segment_size).unwrap();
            let expected = ExpectedSegment {
                name,
                system_identifier: Some(header.system_identifier),
                segment_size: Some(header.segment_size),
                pg_version: Some(header.pg_version),
            };
            prop_assert_eq!(header.check(&expected), Ok(()));
        }
    }
}
