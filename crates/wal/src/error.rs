//! The crate's error types.
//!
//! [`Error`] covers values, file names and timeline history files; [`HeaderError`] covers the
//! page header at the start of a WAL segment, both reading it and checking it against the
//! segment it is supposed to be. Every message names the offending input.

use crate::header::LONG_HEADER_LEN;
use crate::{Lsn, PgVersion, SegNo, SegmentName, TimelineId, WalSegSize};

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An invalid value, file name or timeline history file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not an LSN in PostgreSQL's `X/X` form.
    #[error("invalid LSN '{input}': {reason}")]
    InvalidLsn {
        /// The rejected text.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The value or text is not a timeline ID (a decimal number of at least 1).
    #[error("invalid timeline ID '{input}': {reason}")]
    InvalidTimelineId {
        /// The rejected value or text.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The size is not a valid `wal_segment_size`.
    #[error("invalid WAL segment size {size} bytes: expected a power of two from 1 MiB to 1 GiB")]
    InvalidSegmentSize {
        /// The rejected size in bytes.
        size: u64,
    },

    /// The PostgreSQL major version is not one walferry supports.
    #[error("unsupported PostgreSQL major version {major}: expected 13 to 17")]
    UnsupportedPgVersion {
        /// The rejected major version.
        major: u32,
    },

    /// The text is not a WAL file name of a form PostgreSQL archives.
    #[error("invalid WAL file name '{name}': {reason}")]
    InvalidFileName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The segment name cannot exist with this segment size: its segment part is not below
    /// [`WalSegSize::segments_per_xlog_id`].
    #[error(
        "WAL segment '{name}' cannot exist with {segment_size} segments: \
         its last 8 digits must be below {:08X}",
        segment_size.segments_per_xlog_id()
    )]
    SegmentNameOutOfRange {
        /// The segment name.
        name: SegmentName,
        /// The segment size it was interpreted with.
        segment_size: WalSegSize,
    },

    /// The segment number is too large to be written as a segment name.
    #[error("segment number {segno} is too large for a WAL file name with {segment_size} segments")]
    SegNoOutOfRange {
        /// The segment number.
        segno: SegNo,
        /// The segment size.
        segment_size: WalSegSize,
    },

    /// A line of a timeline history file cannot be read, or breaks the file's rules.
    #[error("invalid history file for timeline {timeline}, line {line}: {reason}")]
    InvalidHistoryLine {
        /// The timeline whose history file this is.
        timeline: TimelineId,
        /// The line number, counting from 1.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },

    /// An entry given to [`TimelineHistory::new`](crate::TimelineHistory::new) breaks the rules
    /// of a timeline history.
    #[error("invalid history for timeline {timeline}, entry {entry}: {reason}")]
    InvalidHistoryEntry {
        /// The timeline whose history this is.
        timeline: TimelineId,
        /// The position of the entry, counting from 1.
        entry: usize,
        /// What is wrong with the entry.
        reason: String,
    },
}

/// A WAL segment's first page header that cannot be read, or that does not belong to the
/// segment it was expected to be.
///
/// Equivalent of the checks in `XLogReaderValidatePageHeader()` in xlogreader.c.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer bytes than a long page header.
    #[error("WAL segment header too short: {len} bytes, expected at least {LONG_HEADER_LEN}")]
    TooShort {
        /// The number of bytes given.
        len: usize,
    },

    /// The magic number is not that of a supported PostgreSQL version.
    #[error(
        "unknown WAL page magic 0x{magic:04X}: not a WAL segment of a supported PostgreSQL \
         version (13 to 17)"
    )]
    UnknownMagic {
        /// The magic number found (`xlp_magic`).
        magic: u16,
    },

    /// The magic number is a supported one with its bytes swapped: the WAL was written by a
    /// big-endian machine.
    #[error(
        "WAL page magic 0x{magic:04X} is the byte-swapped magic of PostgreSQL {version}: \
         big-endian WAL is not supported"
    )]
    BigEndian {
        /// The magic number found, read as little-endian.
        magic: u16,
        /// The version whose magic it is when byte-swapped.
        version: PgVersion,
    },

    /// Flag bits PostgreSQL does not define are set.
    #[error("invalid WAL page info bits 0x{info:04X}: unknown flags are set")]
    InvalidInfoBits {
        /// The flags found (`xlp_info`).
        info: u16,
    },

    /// The `XLP_LONG_HEADER` flag is missing, so this is not the first page of a segment.
    #[error(
        "WAL page info bits 0x{info:04X} lack XLP_LONG_HEADER: not the first page of a segment"
    )]
    NotLongHeader {
        /// The flags found (`xlp_info`).
        info: u16,
    },

    /// The header's timeline ID is 0.
    #[error("invalid timeline ID 0 in WAL page header")]
    InvalidTimeline,

    /// The header's segment size is not a valid `wal_segment_size`.
    #[error(
        "invalid segment size {size} bytes in WAL page header: expected a power of two from \
         1 MiB to 1 GiB"
    )]
    InvalidSegmentSize {
        /// The size found (`xlp_seg_size`).
        size: u32,
    },

    /// The header's WAL block size is not one PostgreSQL can be built with.
    #[error(
        "invalid WAL block size {size} bytes in WAL page header: expected a power of two from \
         1 kB to 64 kB"
    )]
    InvalidBlockSize {
        /// The size found (`xlp_xlog_blcksz`).
        size: u32,
    },

    /// The page address is not at the start of a segment.
    #[error("WAL page address {page_address} is not the start of a {segment_size} segment")]
    NotSegmentStart {
        /// The address found (`xlp_pageaddr`).
        page_address: Lsn,
        /// The segment size from the same header.
        segment_size: WalSegSize,
    },

    /// The segment was written by another PostgreSQL major version.
    #[error("WAL segment '{name}' is from PostgreSQL {found}, expected PostgreSQL {expected}")]
    PgVersionMismatch {
        /// The segment checked.
        name: SegmentName,
        /// The version expected.
        expected: PgVersion,
        /// The version found.
        found: PgVersion,
    },

    /// The segment was written by another database cluster.
    #[error(
        "WAL segment '{name}' is from a different database system: system identifier {found}, \
         expected {expected}"
    )]
    SystemIdentifierMismatch {
        /// The segment checked.
        name: SegmentName,
        /// The system identifier expected.
        expected: u64,
        /// The system identifier found.
        found: u64,
    },

    /// The segment has another segment size.
    #[error("WAL segment '{name}' has segment size {found}, expected {expected}")]
    SegmentSizeMismatch {
        /// The segment checked.
        name: SegmentName,
        /// The size expected.
        expected: WalSegSize,
        /// The size found.
        found: WalSegSize,
    },

    /// The segment's name cannot exist with the segment size in its header.
    #[error("WAL segment '{name}' cannot exist with the {segment_size} segment size in its header")]
    NameOutOfRange {
        /// The segment checked.
        name: SegmentName,
        /// The segment size found in the header.
        segment_size: WalSegSize,
    },

    /// The page address is not the start of the named segment.
    #[error("WAL segment '{name}' has page address {found}, expected {expected}")]
    PageAddressMismatch {
        /// The segment checked.
        name: SegmentName,
        /// The start LSN of the named segment.
        expected: Lsn,
        /// The address found.
        found: Lsn,
    },

    /// The page's timeline is later than the timeline in the segment's name.
    #[error(
        "WAL segment '{name}' has page timeline {found}, later than timeline {expected} in \
         its name"
    )]
    TimelineMismatch {
        /// The segment checked.
        name: SegmentName,
        /// The timeline in the name, the latest the page may carry.
        expected: TimelineId,
        /// The timeline found.
        found: TimelineId,
    },
}

impl HeaderError {
    /// Whether the header is well formed but belongs to another cluster: a different system
    /// identifier, segment size or PostgreSQL version.
    ///
    /// Pushing or restoring such a segment would mix two clusters' WAL, so callers should stop
    /// rather than retry.
    pub fn is_wrong_system(&self) -> bool {
        matches!(
            self,
            Self::PgVersionMismatch { .. }
                | Self::SystemIdentifierMismatch { .. }
                | Self::SegmentSizeMismatch { .. }
        )
    }
}
