//! The codec's error type.

use std::io;

use crate::Summary;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while encoding or decoding a frame.
///
/// Use [`Error::is_corruption`] to tell "the stored object is bad" (retrying the same read returns
/// the same answer) from a local I/O failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input does not start with the header magic `WFZ1`: it is not a walferry frame.
    #[error("not a walferry frame (bad header magic)")]
    BadMagic,

    /// The header names a format version this build cannot read.
    #[error(
        "unsupported frame format version {version} (this build reads versions {} to {}); HINT: \
         the object was written by a newer walferry, or it is damaged",
        crate::OLDEST_FORMAT_VERSION,
        crate::FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// The version byte found in the header.
        version: u8,
    },

    /// The header sets flag bits this build does not know.
    #[error(
        "unsupported frame header flags 0x{flags:02x}; HINT: the object was written by a newer \
         walferry"
    )]
    UnsupportedFlags {
        /// The flags byte found in the header.
        flags: u8,
    },

    /// The header's checksum is correct but its fields break a format rule.
    #[error("malformed frame header: {reason}")]
    MalformedHeader {
        /// Which rule the header breaks.
        reason: &'static str,
    },

    /// The header's own CRC32 does not match its bytes.
    #[error("frame header checksum mismatch (stored {expected:08x}, computed {actual:08x})")]
    BadHeaderChecksum {
        /// The CRC32 stored in the header.
        expected: u32,
        /// The CRC32 computed over the header bytes.
        actual: u32,
    },

    /// The 16 bytes after the compressed body do not end with the trailer magic `WFZE`.
    #[error("bad frame trailer (magic is not \"WFZE\")")]
    BadTrailer,

    /// The input ends before the frame does.
    ///
    /// A damaged length field inside the compressed body can look the same.
    #[error("object is truncated")]
    Truncated,

    /// zstd could not decode the compressed body.
    #[error("compressed body is corrupt: {reason}")]
    Corrupt {
        /// zstd's description of the failure.
        reason: String,
    },

    /// The decoded bytes do not have the CRC32 the frame records.
    #[error(
        "content checksum mismatch: the object records crc32 {expected:08x}, the decoded bytes \
         have {actual:08x}"
    )]
    ChecksumMismatch {
        /// The CRC32 recorded in the frame (trailer or header summary).
        expected: u32,
        /// The CRC32 of the decoded bytes.
        actual: u32,
    },

    /// The decoded bytes do not have the length the frame records.
    #[error(
        "content length mismatch: the object records {expected} bytes, decoding produced {actual}"
    )]
    LengthMismatch {
        /// The length recorded in the frame (trailer or header summary).
        expected: u64,
        /// The number of bytes decoding produced.
        actual: u64,
    },

    /// The input goes on after the trailer.
    #[error("unexpected data after the frame trailer")]
    TrailingData,

    /// The content is, or claims to be, longer than the caller's limit.
    #[error("object content is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit the caller set.
        limit: u64,
    },

    /// [`Encoder::finish`](crate::Encoder::finish): the bytes written are not the ones announced
    /// in [`Encoder::new`](crate::Encoder::new). The output must be discarded.
    #[error("data written ({actual}) does not match the expected summary ({expected})")]
    SummaryMismatch {
        /// The summary given to `Encoder::new`, already written into the header.
        expected: Summary,
        /// The summary of the bytes actually written.
        actual: Summary,
    },

    /// The compression level is outside zstd's range (see [`level_range`](crate::level_range)).
    #[error(
        "compression level {level} is outside zstd's range; HINT: use 1 to 19 (3 is the default)"
    )]
    InvalidLevel {
        /// The level that was asked for.
        level: i32,
    },

    /// The underlying reader or writer failed.
    #[error("i/o error")]
    Io(#[source] io::Error),
}

impl Error {
    /// True when the stored object cannot be accepted as it is: it is damaged, truncated, too
    /// large for the caller's limit, or in a format this build does not read. Retrying the same
    /// read returns the same answer.
    ///
    /// False for local failures: [`Error::Io`], and the encoder-side [`Error::SummaryMismatch`]
    /// and [`Error::InvalidLevel`], which are about the caller's input.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::BadMagic
            | Error::UnsupportedVersion { .. }
            | Error::UnsupportedFlags { .. }
            | Error::MalformedHeader { .. }
            | Error::BadHeaderChecksum { .. }
            | Error::BadTrailer
            | Error::Truncated
            | Error::Corrupt { .. }
            | Error::ChecksumMismatch { .. }
            | Error::LengthMismatch { .. }
            | Error::TrailingData
            | Error::TooLarge { .. } => true,
            Error::SummaryMismatch { .. } | Error::InvalidLevel { .. } | Error::Io(_) => false,
        }
    }

    /// True when the object may be intact but uses a format version or feature this build does
    /// not read. Every such error is also [`is_corruption`](Error::is_corruption).
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            Error::UnsupportedVersion { .. } | Error::UnsupportedFlags { .. }
        )
    }

    /// The codec error carried inside an [`io::Error`], as produced by [`Decoder`]'s `Read`
    /// implementation.
    ///
    /// Returns `None` for an I/O error that did not come from this crate.
    ///
    /// [`Decoder`]: crate::Decoder
    pub fn from_io(error: &io::Error) -> Option<&Error> {
        error.get_ref()?.downcast_ref::<Error>()
    }

    /// An equivalent error, for a decoder that must report the same failure again.
    ///
    /// `io::Error` is not `Clone`; its copy keeps the kind and the message.
    pub(crate) fn replay(&self) -> Error {
        match self {
            Error::BadMagic => Error::BadMagic,
            Error::UnsupportedVersion { version } => {
                Error::UnsupportedVersion { version: *version }
            }
            Error::UnsupportedFlags { flags } => Error::UnsupportedFlags { flags: *flags },
            Error::MalformedHeader { reason } => Error::MalformedHeader { reason },
            Error::BadHeaderChecksum { expected, actual } => Error::BadHeaderChecksum {
                expected: *expected,
                actual: *actual,
            },
            Error::BadTrailer => Error::BadTrailer,
            Error::Truncated => Error::Truncated,
            Error::Corrupt { reason } => Error::Corrupt {
                reason: reason.clone(),
            },
            Error::ChecksumMismatch { expected, actual } => Error::ChecksumMismatch {
                expected: *expected,
                actual: *actual,
            },
            Error::LengthMismatch { expected, actual } => Error::LengthMismatch {
                expected: *expected,
                actual: *actual,
            },
            Error::TrailingData => Error::TrailingData,
            Error::TooLarge { limit } => Error::TooLarge { limit: *limit },
            Error::SummaryMismatch { expected, actual } => Error::SummaryMismatch {
                expected: *expected,
                actual: *actual,
            },
            Error::InvalidLevel { level } => Error::InvalidLevel { level: *level },
            Error::Io(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// Unwraps a codec error carried inside the `io::Error` (see [`Error::from_io`]); any other I/O
/// error becomes [`Error::Io`].
impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        match error.downcast::<Error>() {
            Ok(inner) => inner,
            Err(error) => Error::Io(error),
        }
    }
}

/// Wraps the codec error so that [`Error::from_io`] can recover it.
///
/// The kind is the inner error's kind for [`Error::Io`], `UnexpectedEof` for
/// [`Error::Truncated`], `InvalidInput` for [`Error::InvalidLevel`] and `InvalidData` otherwise.
impl From<Error> for io::Error {
    fn from(error: Error) -> Self {
        let kind = match &error {
            Error::Io(inner) => inner.kind(),
            Error::Truncated => io::ErrorKind::UnexpectedEof,
            Error::InvalidLevel { .. } => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(len: u64) -> Summary {
        Summary { len, crc32: 7 }
    }

    fn every_variant() -> Vec<Error> {
        vec![
            Error::BadMagic,
            Error::UnsupportedVersion { version: 2 },
            Error::UnsupportedFlags { flags: 0x80 },
            Error::MalformedHeader { reason: "why" },
            Error::BadHeaderChecksum {
                expected: 1,
                actual: 2,
            },
            Error::BadTrailer,
            Error::Truncated,
            Error::Corrupt {
                reason: "Unknown frame descriptor".into(),
            },
            Error::ChecksumMismatch {
                expected: 1,
                actual: 2,
            },
            Error::LengthMismatch {
                expected: 1,
                actual: 2,
            },
            Error::TrailingData,
            Error::TooLarge { limit: 9 },
            Error::SummaryMismatch {
                expected: summary(1),
                actual: summary(2),
            },
            Error::InvalidLevel { level: 99 },
            Error::Io(io::Error::new(io::ErrorKind::BrokenPipe, "pipe")),
        ]
    }

    #[test]
    fn classification() {
        // (error, is_corruption, is_unsupported, io kind)
        use io::ErrorKind::*;
        let expected = [
            (true, false, InvalidData),
            (true, true, InvalidData),
            (true, true, InvalidData),
            (true, false, InvalidData),
            (true, false, InvalidData),
            (true, false, InvalidData),
            (true, false, UnexpectedEof),
            (true, false, InvalidData),
            (true, false, InvalidData),
            (true, false, InvalidData),
            (true, false, InvalidData),
            (true, false, InvalidData),
            (false, false, InvalidData),
            (false, false, InvalidInput),
            (false, false, BrokenPipe),
        ];
        let errors = every_variant();
        assert_eq!(errors.len(), expected.len());
        for (error, (corruption, unsupported, kind)) in errors.into_iter().zip(expected) {
            assert_eq!(error.is_corruption(), corruption, "{error:?}");
            assert_eq!(error.is_unsupported(), unsupported, "{error:?}");
            let message = error.to_string();
            assert_eq!(error.replay().to_string(), message);
            let io_error = io::Error::from(error);
            assert_eq!(io_error.kind(), kind, "{message}");
            let inner = Error::from_io(&io_error).expect("codec error inside");
            assert_eq!(inner.to_string(), message);
            assert_eq!(Error::from(io_error).to_string(), message);
        }
    }

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        for error in every_variant() {
            let message = error.to_string();
            let first = message.chars().next().expect("non-empty message");
            assert!(!first.is_uppercase(), "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
    }

    #[test]
    fn foreign_io_errors_stay_io() {
        let io_error = io::Error::new(io::ErrorKind::TimedOut, "slow disk");
        assert!(Error::from_io(&io_error).is_none());
        let error = Error::from(io_error);
        assert!(matches!(&error, Error::Io(e) if e.kind() == io::ErrorKind::TimedOut));
        assert!(!error.is_corruption());
    }
}
