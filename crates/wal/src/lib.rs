//! PostgreSQL's WAL vocabulary as types.
//!
//! Every quantity walferry reasons about when archiving and restoring write-ahead log is a
//! distinct type here, with PostgreSQL's own text forms and arithmetic that cannot wrap
//! silently:
//!
//! - [`Lsn`]: a position in the WAL (`XLogRecPtr`), written `0/16B3748`.
//! - [`TimelineId`]: a timeline (`TimeLineID`), never 0.
//! - [`WalSegSize`] and [`SegNo`]: the segment size (`wal_segment_size`) and a segment's
//!   number (`XLogSegNo`).
//! - [`SegmentName`] and [`WalFileName`]: the names of the files PostgreSQL archives
//!   (segments, `.partial` segments, `.history` and `.backup` files), parsed strictly enough
//!   to validate `%f` from `restore_command`.
//! - [`TimelineHistory`]: the contents of a `.history` file, and the questions restore planning
//!   asks of it (where did a timeline end, which timeline holds a given segment).
//! - [`SegmentHeader`] and [`PgVersion`]: the long page header that opens every segment, and
//!   the PostgreSQL major version it reveals, for checking that a file is the segment it
//!   claims to be and comes from the expected cluster.
//!
//! The crate does no I/O and has no async code: it works on values, strings and byte slices.
//! Nothing in it panics on bad input; every parser returns an [`Error`] or [`HeaderError`]
//! naming what it rejected. PostgreSQL 13 to 17 are supported; WAL is read as little-endian
//! (see [`header`]).
//!
//! The file formats are specified in the modules that read them: [`name`] for file names,
//! [`history`] for timeline history files and [`header`] for the segment page header.
//!
//! Documentation names the PostgreSQL macro, function or type each item corresponds to, such
//! as "equivalent of `XLogFileName()` in xlog_internal.h", so the two can be compared.
//!
//! # Example
//!
//! ```
//! use walferry_wal::{Lsn, SegNo, SegmentName, WalFileName, WalSegSize};
//!
//! // `%f` as PostgreSQL passes it to restore_command.
//! let name = WalFileName::parse("000000010000000A000000FF")?;
//! let segment = name.segment().expect("a segment name has a segment");
//! let size = WalSegSize::DEFAULT;
//!
//! assert_eq!(segment.segno(size)?, SegNo(0xAFF));
//! assert_eq!(segment.start_lsn(size)?, "A/FF000000".parse::<Lsn>()?);
//!
//! // The segment that holds a given LSN.
//! let lsn: Lsn = "A/FF000028".parse()?;
//! let holder = SegmentName::new(segment.tli(), lsn.segment_number(size), size)?;
//! assert_eq!(&holder, segment);
//! # Ok::<(), walferry_wal::Error>(())
//! ```

#![deny(missing_docs)]

mod error;
pub mod header;
mod hex;
pub mod history;
mod lsn;
pub mod name;
mod segment;
mod timeline;
mod version;

pub use error::{Error, HeaderError, Result};
pub use header::{ExpectedSegment, LONG_HEADER_LEN, SegmentHeader};
pub use history::{HistoryEntry, TimelineHistory};
pub use lsn::Lsn;
pub use name::{SegmentName, WalFileName};
pub use segment::{SegNo, WalSegSize};
pub use timeline::TimelineId;
pub use version::PgVersion;
