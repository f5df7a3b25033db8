//! walferry's object format: every object walferry stores (WAL files now, backup parts later) is
//! one *frame*, a zstd-compressed copy of the original bytes between a fixed-size header and a
//! fixed-size trailer that record the original length and CRC32.
//!
//! The crate is pure and synchronous: it works on byte slices and on std [`Read`](std::io::Read)
//! and [`Write`](std::io::Write), and knows nothing of WAL or object stores.
//!
//! # Contract
//!
//! - Decoding verifies. [`decode`] returns the original bytes only after checking their length
//!   and CRC32 against everything the frame records; [`Decoder`] yields bytes as it decodes them
//!   and reports any mismatch as a read error before it would report end of file. A reader that
//!   reaches end of file without an error holds exactly the bytes that were encoded.
//! - Nothing but one frame. Input that ends early ([`Error::Truncated`]) or goes on after the
//!   trailer ([`Error::TrailingData`]) is rejected.
//! - Bounded memory. [`decode`] and [`Decoder::with_limit`] refuse content longer than the
//!   caller's limit ([`Error::TooLarge`]), whatever a damaged header or trailer claims.
//! - Peeking is cheap. When the writer knew the content up front (a WAL file is read whole before
//!   upload), the header carries the summary, so a ranged read of the first [`HEADER_LEN`] bytes
//!   and [`Header::parse`] give an object's length and checksum. The trailer always carries them
//!   ([`parse_trailer`]). Both are claims until a decode verifies them.
//! - [`Error::is_corruption`] tells "this stored object is bad" from a local I/O failure.
//!
//! # Format (version 2)
//!
//! All integers are little-endian. CRC32 is the IEEE polynomial (zlib's, as `crc32fast`
//! computes it).
//!
//! ```text
//! header, 24 bytes
//!   0..4    magic "WFZ1"
//!   4       format version: 2
//!   5       flags: bit 0 set = bytes 8..20 hold the content summary; other bits must be 0
//!   6..8    reserved, must be 0
//!   8..16   original length, u64 (0 when flag bit 0 is clear)
//!   16..20  CRC32 of the original bytes, u32 (0 when flag bit 0 is clear)
//!   20..24  CRC32 of header bytes 0..20, u32
//! body
//!   one or more zstd frames (RFC 8878), back to back, holding the original bytes in order
//! trailer, 16 bytes
//!   0..8    original length, u64
//!   8..12   CRC32 of the original bytes, u32
//!   12..16  magic "WFZE"
//! ```
//!
//! A reader checks, in order: the magic; the version (every future version keeps the magic and
//! the version byte where they are, so a newer object is reported as
//! [`Error::UnsupportedVersion`]); the header CRC; the flags and reserved bytes. After the zstd
//! frames it checks the trailer magic, the decoded length and CRC32 against the trailer and then
//! against the header summary if there is one, and finally that the input ends there.
//!
//! The header carries no field for the body's compressed length: the trailer is the object's last
//! [`TRAILER_LEN`] bytes, and the zstd frames before it delimit themselves. A frame after the
//! first must start with zstd's magic number; anything else there is data after the content
//! ([`Error::TrailingData`]).
//!
//! The total object size is `HEADER_LEN + body + TRAILER_LEN`.
//!
//! [`encode`] and [`encode_from`] write a zstd frame per [`FRAME_LEN`] (4 MiB) of content, the
//! last holding what is left (one empty frame for empty content); the streaming [`Encoder`]
//! writes a single frame. A reader needs no knowledge of the frame size. zstd compresses 4 MiB
//! held in one contiguous buffer markedly faster than a 16 MiB WAL segment streamed through its
//! 2 MiB window, whose buffer wraps and sends matching down a slower path (figures in
//! `benches/README.md`), and the frames cost well under 1 % in size. The body is still a valid
//! zstd stream: `zstd -d` decodes it.
//!
//! Version 1, which walferry wrote before, differs only in the version byte and in holding
//! exactly one zstd frame; this build reads both.
//!
//! # Worked example
//!
//! The five bytes `hello` (CRC32 `0x3610a686`) encoded by [`encode`] at level 3 make a 54-byte
//! object:
//!
//! ```text
//! offset  bytes                                       meaning
//! header
//!  0      57 46 5a 31                                 magic "WFZ1"
//!  4      02                                          version 2
//!  5      01                                          flags: summary present
//!  6      00 00                                       reserved
//!  8      05 00 00 00 00 00 00 00                     original length 5
//! 16      86 a6 10 36                                 CRC32 of "hello" = 0x3610a686
//! 20      43 9e c3 e5                                 CRC32 of bytes 0..20 = 0xe5c39e43
//! body (a 14-byte zstd frame)
//! 24      28 b5 2f fd                                 zstd magic
//! 28      20 05                                       frame header: single segment, size 5
//! 30      29 00 00                                    block header: last block, raw, 5 bytes
//! 33      68 65 6c 6c 6f                              "hello"
//! trailer
//! 38      05 00 00 00 00 00 00 00                     original length 5
//! 46      86 a6 10 36                                 CRC32 0x3610a686
//! 50      57 46 5a 45                                 magic "WFZE"
//! ```
//!
//! A streaming [`Encoder`] given no summary writes flags `00`, zeros in bytes 8..20 and header
//! CRC `0x54247d46` instead; its zstd frame records no content size (`28 b5 2f fd 00 58 29 00 00
//! 68 65 6c 6c 6f`), and its trailer is the same.
//!
//! ```
//! use walferry_codec::{Header, Summary, HEADER_LEN};
//!
//! let object = walferry_codec::encode(b"hello", 3)?;
//! assert_eq!(
//!     object,
//!     [
//!         &b"WFZ1\x02\x01\0\0"[..],
//!         &[5, 0, 0, 0, 0, 0, 0, 0],
//!         &[0x86, 0xa6, 0x10, 0x36, 0x43, 0x9e, 0xc3, 0xe5],
//!         &[0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05, 0x29, 0x00, 0x00],
//!         b"hello",
//!         &[5, 0, 0, 0, 0, 0, 0, 0],
//!         &[0x86, 0xa6, 0x10, 0x36],
//!         b"WFZE",
//!     ]
//!     .concat()
//! );
//!
//! // Peek at the summary from the first 24 bytes, then decode and verify.
//! let header = Header::parse(&object[..HEADER_LEN])?;
//! assert_eq!(header.summary, Some(Summary { len: 5, crc32: 0x3610_a686 }));
//! assert_eq!(walferry_codec::decode(&object, 16 << 20)?, b"hello");
//!
//! // Damage anywhere is an error, never different bytes.
//! let mut damaged = object.clone();
//! damaged[33] = b'j';
//! let error = walferry_codec::decode(&damaged, 16 << 20).unwrap_err();
//! assert!(error.is_corruption());
//! # Ok::<(), walferry_codec::Error>(())
//! ```
#![deny(missing_docs)]

mod decoder;
mod encoder;
mod error;
mod format;

pub use decoder::{Decoder, decode};
pub use encoder::{
    BatchEncoder, DEFAULT_LEVEL, Encoder, FRAME_LEN, encode, encode_from, level_range,
};
pub use error::{Error, Result};
pub use format::{
    FORMAT_VERSION, HEADER_LEN, Header, OLDEST_FORMAT_VERSION, Summary, TRAILER_LEN, parse_trailer,
};
