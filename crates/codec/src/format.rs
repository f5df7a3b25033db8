//! The fixed-size parts of a frame: header, trailer and the content summary they carry.
//!
//! The layout is specified in the [crate documentation](crate).

use std::fmt;

use crate::{Error, Result};

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 24;

/// Length of the frame trailer in bytes.
pub const TRAILER_LEN: usize = 16;

/// The format version this build writes. It reads this one and every earlier one, from
/// [`OLDEST_FORMAT_VERSION`].
pub const FORMAT_VERSION: u8 = 2;

/// The oldest format version this build reads.
pub const OLDEST_FORMAT_VERSION: u8 = 1;

/// First four bytes of every frame.
pub(crate) const HEADER_MAGIC: [u8; 4] = *b"WFZ1";

/// Last four bytes of every frame.
pub(crate) const TRAILER_MAGIC: [u8; 4] = *b"WFZE";

/// Header flag: bytes 8..20 carry the content summary.
const FLAG_SUMMARY: u8 = 0x01;

/// Every flag bit this build understands.
const KNOWN_FLAGS: u8 = FLAG_SUMMARY;

/// Length and CRC32 of an object's original (uncompressed) bytes.
///
/// Every frame records it in its trailer, and in its header when the writer knew it up front.
/// Two objects with equal summaries are, for walferry's purposes, the same content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Summary {
    /// Length of the original bytes.
    pub len: u64,
    /// CRC32 (IEEE polynomial, as computed by `crc32fast`) of the original bytes.
    pub crc32: u32,
}

impl Summary {
    /// The summary of `data`.
    ///
    /// ```
    /// use walferry_codec::Summary;
    ///
    /// let summary = Summary::of(b"hello");
    /// assert_eq!(summary, Summary { len: 5, crc32: 0x3610_a686 });
    /// ```
    pub fn of(data: &[u8]) -> Summary {
        Summary {
            len: to_u64(data.len()),
            crc32: crc32fast::hash(data),
        }
    }
}

/// `5 bytes, crc32 3610a686`.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes, crc32 {:08x}", self.len, self.crc32)
    }
}

/// A parsed, checksum-verified frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header {
    /// Format version: from [`OLDEST_FORMAT_VERSION`] to [`FORMAT_VERSION`] for a header this
    /// build parsed.
    pub version: u8,
    /// The content summary, when the writer knew it before writing the body.
    ///
    /// It is a claim until the body has been decoded: [`Decoder`](crate::Decoder) checks it.
    pub summary: Option<Summary>,
}

impl Header {
    /// The header of a frame in the current version.
    pub(crate) fn new(summary: Option<Summary>) -> Header {
        Header {
            version: FORMAT_VERSION,
            summary,
        }
    }

    /// Parses the header at the start of `bytes`, for example the result of a ranged read of the
    /// first [`HEADER_LEN`] bytes of an object. Bytes after the header are ignored.
    ///
    /// Checks the magic, the version, the header's own CRC32 and the flags, in that order. Returns
    /// [`Error::Truncated`] when fewer than [`HEADER_LEN`] bytes are given (and those present
    /// match the magic so far).
    ///
    /// ```
    /// use walferry_codec::{Header, Summary, HEADER_LEN};
    ///
    /// let object = walferry_codec::encode(b"hello", 3)?;
    /// let header = Header::parse(&object[..HEADER_LEN])?;
    /// assert_eq!(header.summary, Some(Summary::of(b"hello")));
    /// # Ok::<(), walferry_codec::Error>(())
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Header> {
        let present = bytes.len().min(HEADER_MAGIC.len());
        if bytes[..present] != HEADER_MAGIC[..present] {
            return Err(Error::BadMagic);
        }
        let Some(bytes) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(Error::Truncated);
        };
        let version = bytes[4];
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion { version });
        }
        let expected = u32::from_le_bytes(field(bytes, 20));
        let actual = crc32fast::hash(&bytes[..20]);
        if expected != actual {
            return Err(Error::BadHeaderChecksum { expected, actual });
        }
        let flags = bytes[5];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::UnsupportedFlags { flags });
        }
        if bytes[6..8] != [0, 0] {
            return Err(Error::MalformedHeader {
                reason: "reserved bytes 6..8 are not zero",
            });
        }
        let len = u64::from_le_bytes(field(bytes, 8));
        let crc32 = u32::from_le_bytes(field(bytes, 16));
        let summary = if flags & FLAG_SUMMARY != 0 {
            Some(Summary { len, crc32 })
        } else if len != 0 || crc32 != 0 {
            return Err(Error::MalformedHeader {
                reason: "summary fields are set but the summary flag is clear",
            });
        } else {
            None
        };
        Ok(Header { version, summary })
    }

    /// The header's bytes.
    pub(crate) fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..4].copy_from_slice(&HEADER_MAGIC);
        bytes[4] = self.version;
        if let Some(summary) = self.summary {
            bytes[5] = FLAG_SUMMARY;
            bytes[8..16].copy_from_slice(&summary.len.to_le_bytes());
            bytes[16..20].copy_from_slice(&summary.crc32.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes[..20]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        bytes
    }
}

/// Parses the trailer at the end of `bytes`: either the last [`TRAILER_LEN`] bytes of an object
/// fetched by a ranged read, or a whole object.
///
/// The trailer has no checksum of its own: the summary it returns is a claim that only a full
/// decode verifies. Returns [`Error::Truncated`] when fewer than [`TRAILER_LEN`] bytes are given
/// and [`Error::BadTrailer`] when the magic is wrong.
///
/// ```
/// use walferry_codec::{Summary, TRAILER_LEN};
///
/// let object = walferry_codec::encode(b"hello", 3)?;
/// let tail = &object[object.len() - TRAILER_LEN..];
/// assert_eq!(walferry_codec::parse_trailer(tail)?, Summary::of(b"hello"));
/// # Ok::<(), walferry_codec::Error>(())
/// ```
pub fn parse_trailer(bytes: &[u8]) -> Result<Summary> {
    let Some(bytes) = bytes.last_chunk::<TRAILER_LEN>() else {
        return Err(Error::Truncated);
    };
    if field::<TRAILER_LEN, 4>(bytes, 12) != TRAILER_MAGIC {
        return Err(Error::BadTrailer);
    }
    Ok(Summary {
        len: u64::from_le_bytes(field(bytes, 0)),
        crc32: u32::from_le_bytes(field(bytes, 8)),
    })
}

/// The trailer's bytes for content with this summary.
pub(crate) fn trailer_bytes(summary: Summary) -> [u8; TRAILER_LEN] {
    let mut bytes = [0u8; TRAILER_LEN];
    bytes[..8].copy_from_slice(&summary.len.to_le_bytes());
    bytes[8..12].copy_from_slice(&summary.crc32.to_le_bytes());
    bytes[12..].copy_from_slice(&TRAILER_MAGIC);
    bytes
}

/// `N` bytes of a fixed-size block starting at `at`; `at + N <= LEN` holds at every call site.
fn field<const LEN: usize, const N: usize>(bytes: &[u8; LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// A buffer length as a content length. `usize` is at most 64 bits on every supported target.
pub(crate) fn to_u64(len: usize) -> u64 {
    u64::try_from(len).expect("usize fits in u64")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with its CRC recomputed after `edit`, so that only the edited rule is broken.
    fn edited_header(edit: impl FnOnce(&mut [u8; HEADER_LEN])) -> [u8; HEADER_LEN] {
        let mut bytes = Header::new(None).to_bytes();
        edit(&mut bytes);
        let crc = crc32fast::hash(&bytes[..20]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn header_round_trip() {
        let summaries = [
            None,
            Some(Summary { len: 0, crc32: 0 }),
            Some(Summary::of(b"hello")),
            Some(Summary {
                len: u64::MAX,
                crc32: u32::MAX,
            }),
        ];
        for summary in summaries {
            let header = Header::new(summary);
            let bytes = header.to_bytes();
            assert_eq!(Header::parse(&bytes).unwrap(), header);
            // Bytes after the header are ignored.
            let mut longer = bytes.to_vec();
            longer.extend_from_slice(b"body");
            assert_eq!(Header::parse(&longer).unwrap(), header);
        }
    }

    #[test]
    fn header_bytes_are_as_specified() {
        let bytes = Header::new(Some(Summary {
            len: 0x0102_0304_0506_0708,
            crc32: 0xaabb_ccdd,
        }))
        .to_bytes();
        assert_eq!(&bytes[..8], b"WFZ1\x02\x01\x00\x00");
        assert_eq!(&bytes[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[16..20], &[0xdd, 0xcc, 0xbb, 0xaa]);
        assert_eq!(bytes[20..24], crc32fast::hash(&bytes[..20]).to_le_bytes());

        let bytes = Header::new(None).to_bytes();
        assert_eq!(&bytes[..20], b"WFZ1\x02\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    }

    #[test]
    fn header_errors() {
        let good = Header::new(Some(Summary::of(b"x"))).to_bytes();
        let mut bad_crc = good;
        bad_crc[10] ^= 1;
        let mut bad_version_unchecked = good;
        bad_version_unchecked[4] = 3;

        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "Truncated"),
            ("magic prefix", b"WF".to_vec(), "Truncated"),
            ("one short", good[..HEADER_LEN - 1].to_vec(), "Truncated"),
            ("wrong first byte", b"X".to_vec(), "BadMagic"),
            (
                "wrong magic",
                b"WFZ2xxxxxxxxxxxxxxxxxxxxxxx".to_vec(),
                "BadMagic",
            ),
            ("zstd frame", vec![0x28, 0xb5, 0x2f, 0xfd], "BadMagic"),
            (
                "version 3",
                bad_version_unchecked.to_vec(),
                "UnsupportedVersion",
            ),
            (
                "version 0",
                edited_header(|b| b[4] = 0).to_vec(),
                "UnsupportedVersion",
            ),
            ("bit flip in length", bad_crc.to_vec(), "BadHeaderChecksum"),
            (
                "unknown flag",
                edited_header(|b| b[5] = 0x02).to_vec(),
                "UnsupportedFlags",
            ),
            (
                "reserved",
                edited_header(|b| b[7] = 1).to_vec(),
                "MalformedHeader",
            ),
            (
                "length without flag",
                edited_header(|b| b[8] = 1).to_vec(),
                "MalformedHeader",
            ),
            (
                "crc without flag",
                edited_header(|b| b[19] = 1).to_vec(),
                "MalformedHeader",
            ),
        ];
        for (name, bytes, want) in cases {
            let error = Header::parse(&bytes).expect_err(name);
            let got = format!("{error:?}");
            assert!(got.starts_with(want), "{name}: got {got}, want {want}");
            assert!(error.is_corruption(), "{name}");
        }
    }

    #[test]
    fn trailer() {
        let summary = Summary {
            len: 16 << 20,
            crc32: 0x1234_5678,
        };
        let bytes = trailer_bytes(summary);
        assert_eq!(&bytes[..], b"\0\0\0\x01\0\0\0\0\x78\x56\x34\x12WFZE");
        assert_eq!(parse_trailer(&bytes).unwrap(), summary);
        let mut object = b"anything before".to_vec();
        object.extend_from_slice(&bytes);
        assert_eq!(parse_trailer(&object).unwrap(), summary);

        assert!(matches!(parse_trailer(&bytes[1..]), Err(Error::Truncated)));
        let mut bad = bytes;
        bad[15] = b'X';
        assert!(matches!(parse_trailer(&bad), Err(Error::BadTrailer)));
    }

    #[test]
    fn summary_display() {
        assert_eq!(Summary::of(b"hello").to_string(), "5 bytes, crc32 3610a686");
        assert_eq!(Summary::of(b""), Summary { len: 0, crc32: 0 });
    }
}
