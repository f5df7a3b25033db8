//! Reading and verifying frames.

use std::fmt;
use std::io::{self, Read};

use crate::format::{HEADER_LEN, Header, Summary, TRAILER_LEN, parse_trailer, to_u64};
use crate::{Error, Result};

/// No zstd frame expands by more than this factor: its densest block (RLE) turns 4 bytes into at
/// most 128 KiB. Taken with margin; used only to avoid reserving memory for absurd claims.
const MAX_EXPANSION: usize = 1 << 16;

/// Reads one frame from `R` and yields the original bytes, verified.
///
/// Contract: a caller that reads until `Ok(0)` without an error has received exactly the bytes
/// that were encoded. Bytes are handed out as they are decoded, so they are verified only once
/// the end is reached: the length and CRC32 in the trailer (and in the header, when present) are
/// checked against what was produced, and `R` must end right after the trailer. Any failure is an
/// [`io::Error`] carrying the codec [`Error`] (recover it with [`Error::from_io`], or with
/// `Error::from`); after a failure every further read fails again, so a careless caller never
/// sees a clean end of file. [`io::ErrorKind::Interrupted`] from `R` is passed through and the
/// read may be retried.
///
/// ```
/// use std::io::Read;
/// use walferry_codec::{Decoder, Summary};
///
/// let object = walferry_codec::encode(b"hello", 3)?;
/// let mut decoder = Decoder::new(&object[..])?;
/// let mut content = Vec::new();
/// decoder.read_to_end(&mut content)?;
/// assert_eq!(content, b"hello");
/// assert_eq!(decoder.finish()?, Summary::of(b"hello"));
/// # Ok::<(), walferry_codec::Error>(())
/// ```
pub struct Decoder<R> {
    header: Header,
    limit: u64,
    hasher: crc32fast::Hasher,
    len: u64,
    state: State<R>,
}

enum State<R> {
    /// Decoding the zstd frames.
    Body(Body<R>),
    /// Trailer checked, end of input reached.
    Done(Summary),
    /// A failure was reported; it is reported again on every call.
    Failed(Error),
}

impl<R: Read> Decoder<R> {
    /// Reads and checks the header (see [`Header::parse`]). No content limit.
    pub fn new(reader: R) -> Result<Self> {
        Self::with_limit(reader, u64::MAX)
    }

    /// Like [`Decoder::new`], and fails with [`Error::TooLarge`] once the content exceeds
    /// `limit` bytes: immediately when the header's summary claims more, otherwise as soon as
    /// decoding produces more.
    pub fn with_limit(mut reader: R, limit: u64) -> Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut reader, &mut header).map_err(Error::Io)?;
        let header = Header::parse(&header[..got])?;
        if let Some(summary) = header.summary
            && summary.len > limit
        {
            return Err(Error::TooLarge { limit });
        }
        let body = Body::new(reader, header.version)?;
        Ok(Decoder {
            header,
            limit,
            hasher: crc32fast::Hasher::new(),
            len: 0,
            state: State::Body(body),
        })
    }

    /// The frame's header, as parsed by [`Decoder::new`].
    pub fn header(&self) -> Header {
        self.header
    }

    /// Reads whatever content is left (discarding it), verifies the frame, and returns the
    /// verified summary of the whole content. After a failed read it returns that failure.
    pub fn finish(mut self) -> Result<Summary> {
        let mut scratch = [0u8; 16 * 1024];
        loop {
            match self.read(&mut scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from(e)),
            }
        }
        match self.state {
            State::Done(summary) => Ok(summary),
            State::Failed(error) => Err(error),
            State::Body(_) => unreachable!("read returned Ok(0) before the end of the frame"),
        }
    }

    /// The body has ended: verify the trailer against the content and the header.
    fn end_of_body(&mut self) -> Result<Summary> {
        let State::Body(body) = &self.state else {
            unreachable!("end_of_body is only called while decoding the body")
        };
        let stored = parse_trailer(body.trailer())?;
        let actual = Summary {
            len: self.len,
            crc32: self.hasher.clone().finalize(),
        };
        verify(stored, actual)?;
        if let Some(claimed) = self.header.summary {
            verify(claimed, actual)?;
        }
        Ok(actual)
    }

    /// Records `error` so that later calls report it again, and returns it for the `Read` caller.
    fn fail(&mut self, error: Error) -> io::Error {
        self.state = State::Failed(error.replay());
        error.into()
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let body = match &mut self.state {
            State::Body(body) => body,
            State::Done(_) => return Ok(0),
            State::Failed(error) => return Err(error.replay().into()),
        };
        if buf.is_empty() {
            return Ok(0);
        }
        match body.read(buf) {
            Ok(0) => match self.end_of_body() {
                Ok(summary) => {
                    self.state = State::Done(summary);
                    Ok(0)
                }
                Err(error) => Err(self.fail(error)),
            },
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.len = self.len.saturating_add(to_u64(n));
                if self.len > self.limit {
                    let limit = self.limit;
                    return Err(self.fail(Error::TooLarge { limit }));
                }
                Ok(n)
            }
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(error) => Err(self.fail(error)),
        }
    }
}

impl<R> fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Body(_) => "decoding",
            State::Done(_) => "done",
            State::Failed(_) => "failed",
        };
        f.debug_struct("Decoder")
            .field("header", &self.header)
            .field("limit", &self.limit)
            .field("produced", &self.len)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// Decodes a whole frame held in memory and returns the verified original bytes.
///
/// Fails with [`Error::TooLarge`] when the content is, or claims to be, longer than `max_len`.
/// Whatever a damaged object claims, at most `max_len` bytes (plus zstd's working memory) are
/// allocated for the content. The output's capacity is reserved once, from the recorded length.
///
/// ```
/// let object = walferry_codec::encode(b"hello", 3)?;
/// assert_eq!(walferry_codec::decode(&object, 5)?, b"hello");
/// let error = walferry_codec::decode(&object, 4).unwrap_err();
/// assert!(matches!(error, walferry_codec::Error::TooLarge { limit: 4 }));
/// # Ok::<(), walferry_codec::Error>(())
/// ```
pub fn decode(data: &[u8], max_len: u64) -> Result<Vec<u8>> {
    let mut decoder = Decoder::with_limit(data, max_len)?;
    // The recorded length is only a claim, so it sizes the buffer but never lets it grow past
    // `max_len`, nor past what the compressed bytes could possibly expand to.
    let recorded = match decoder.header().summary {
        Some(summary) => summary.len,
        None => parse_trailer(data).map_or(0, |summary| summary.len),
    };
    let most = to_u64(data.len().saturating_mul(MAX_EXPANSION));
    let reserve = recorded.min(max_len).min(most);
    let mut content = Vec::with_capacity(usize::try_from(reserve).unwrap_or(usize::MAX));
    // `take` stops at the reserved capacity, so the buffer is never reallocated. For a good
    // object that is exactly the content; `finish` verifies that nothing is left and fails for any
    // other object.
    (&mut decoder).take(reserve).read_to_end(&mut content)?;
    let summary = decoder.finish()?;
    if summary.len != to_u64(content.len()) {
        // Unreachable for a verified frame: the reserve is its recorded length.
        return Err(Error::LengthMismatch {
            expected: summary.len,
            actual: to_u64(content.len()),
        });
    }
    Ok(content)
}

/// Compares the summary a frame records with the one of the bytes decoding produced.
fn verify(recorded: Summary, actual: Summary) -> Result<()> {
    if recorded.len != actual.len {
        Err(Error::LengthMismatch {
            expected: recorded.len,
            actual: actual.len,
        })
    } else if recorded.crc32 != actual.crc32 {
        Err(Error::ChecksumMismatch {
            expected: recorded.crc32,
            actual: actual.crc32,
        })
    } else {
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The first four bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The body: the zstd frames between the header and the trailer, decoded with one zstd context.
///
/// The body's end is found without a length field, however many frames it holds: the last
/// [`TRAILER_LEN`] bytes read so far are held back from zstd until more input arrives, so at the
/// end of the input they are the trailer and everything before them went through zstd.
struct Body<R> {
    source: R,
    buf: Box<[u8]>,
    /// `buf[start..end]` is input read and not yet given to zstd.
    start: usize,
    end: usize,
    /// The source reported the end of its input.
    eof: bool,
    zstd: zstd::stream::raw::Decoder<'static>,
    /// The header's version allows more than one zstd frame (version 2 on).
    many: bool,
    /// A zstd frame has started and not ended.
    in_frame: bool,
    /// zstd frames ended so far.
    frames: u64,
}

impl<R: Read> Body<R> {
    fn new(source: R, version: u8) -> Result<Self> {
        let capacity = zstd::zstd_safe::DCtx::in_size() + TRAILER_LEN;
        Ok(Body {
            source,
            buf: vec![0u8; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            zstd: zstd::stream::raw::Decoder::new()?,
            many: version >= 2,
            in_frame: false,
            frames: 0,
        })
    }

    /// How many bytes at `start` are certainly body: all but the last [`TRAILER_LEN`] read.
    fn ready(&self) -> usize {
        (self.end - self.start).saturating_sub(TRAILER_LEN)
    }

    /// What is left once [`read`](Body::read) has returned `Ok(0)`: the trailer, or fewer bytes
    /// when the input was shorter.
    fn trailer(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more input after what is buffered. [`io::ErrorKind::Interrupted`] leaves the state
    /// as it was, so the call may be retried.
    fn refill(&mut self) -> Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        match self.source.read(&mut self.buf[self.end..]) {
            Ok(0) => self.eof = true,
            Ok(n) => self.end += n,
            Err(e) => return Err(Error::Io(e)),
        }
        Ok(())
    }

    /// Decodes content into `out` (not empty); `Ok(0)` once the last zstd frame has ended and
    /// the input with it, with the trailer left in [`trailer`](Body::trailer).
    fn read(&mut self, out: &mut [u8]) -> Result<usize> {
        loop {
            let ready = self.ready();
            let starting = !self.in_frame && self.frames > 0;
            // A further frame must start with zstd's magic number: have its four bytes at hand.
            let wanted = if starting { ZSTD_MAGIC.len() } else { 1 };
            if ready < wanted && !self.eof {
                self.refill()?;
                continue;
            }
            if ready == 0 {
                return match (self.in_frame, self.frames) {
                    (false, 0) if parse_trailer(self.trailer()).is_ok() => Err(Error::Corrupt {
                        reason: "no zstd frame between the header and the trailer".into(),
                    }),
                    // What is held back is the start of a further frame, cut short.
                    (false, 1..)
                        if self.many
                            && self.trailer().starts_with(&ZSTD_MAGIC)
                            && parse_trailer(self.trailer()).is_err() =>
                    {
                        Err(Error::Truncated)
                    }
                    (false, 1..) => Ok(0),
                    _ => Err(Error::Truncated),
                };
            }
            if starting && (!self.many || !self.buf[self.start..].starts_with(&ZSTD_MAGIC)) {
                return Err(Error::TrailingData);
            }
            self.in_frame = true;
            let mut input = zstd::stream::raw::InBuffer::around(&self.buf[self.start..][..ready]);
            let mut output = zstd::stream::raw::OutBuffer::around(&mut *out);
            let hint = zstd::stream::raw::Operation::run(&mut self.zstd, &mut input, &mut output)
                .map_err(|e| Error::Corrupt {
                reason: e.to_string(),
            })?;
            let (consumed, produced) = (input.pos(), output.pos());
            self.start += consumed;
            if hint == 0 {
                // A frame ended; zstd is ready for the next one.
                self.in_frame = false;
                self.frames += 1;
            }
            if produced > 0 {
                return Ok(produced);
            }
            if consumed == 0 && hint != 0 {
                // zstd took no input and gave no output although it had both: it never does
                // this on valid input.
                return Err(Error::Corrupt {
                    reason: "the zstd decoder made no progress".into(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchEncoder;
    use crate::encoder::encode_in_frames;
    use crate::{Encoder, encode};
    use proptest::prelude::*;
    use std::io::Write;

    /// Deterministic pseudo-random bytes (xorshift64*); `compressible` repeats short runs.
    fn sample(len: usize, seed: u64, compressible: bool) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let word = next().to_le_bytes();
            if compressible {
                let run = (word[0] % 32) as usize + 1;
                out.extend(std::iter::repeat_n(word[1] % 4, run));
            } else {
                out.extend_from_slice(&word);
            }
        }
        out.truncate(len);
        out
    }

    /// Encodes with the streaming encoder, writing in uneven chunks.
    fn encode_streaming(data: &[u8], with_summary: bool) -> Vec<u8> {
        let expected = with_summary.then(|| Summary::of(data));
        let mut encoder = Encoder::new(Vec::new(), 3, expected).unwrap();
        for chunk in data.chunks(10_007) {
            encoder.write_all(chunk).unwrap();
        }
        let (object, summary) = encoder.finish().unwrap();
        assert_eq!(summary, Summary::of(data));
        object
    }

    /// Encodes in zstd frames of `frame_len` bytes of content, with `encode` and `encode_from`
    /// alike, and checks that both wrote the same bytes.
    fn encode_in(data: &[u8], frame_len: usize) -> Vec<u8> {
        let object = encode_in_frames(data, 3, frame_len).unwrap();
        let from = BatchEncoder::with_frame_len(3, frame_len)
            .unwrap()
            .encode_from(data, data.len() as u64)
            .unwrap();
        assert!(object == from, "encode and encode_from disagree");
        object
    }

    /// `object` (written by this build) as a version-1 writer would have labelled it.
    fn as_version_1(object: &[u8]) -> Vec<u8> {
        let mut old = object.to_vec();
        old[4] = 1;
        let crc = crc32fast::hash(&old[..20]);
        old[20..24].copy_from_slice(&crc.to_le_bytes());
        old
    }

    /// Decodes through `Decoder`, reading `step` bytes at a time.
    fn decode_reader(object: &[u8], max_len: u64, step: usize) -> Result<Vec<u8>> {
        let mut decoder = Decoder::with_limit(object, max_len)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            match decoder.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(Error::from(e)),
            }
        }
        assert_eq!(decoder.finish()?, Summary::of(&out));
        Ok(out)
    }

    /// Every way of decoding `object`: all must agree with `decode`.
    fn decode_all_ways(object: &[u8], max_len: u64) -> Vec<(&'static str, Result<Vec<u8>>)> {
        vec![
            ("decode", decode(object, max_len)),
            ("Decoder read_to_end", {
                let mut content = Vec::new();
                Decoder::with_limit(object, max_len).and_then(|mut decoder| {
                    decoder.read_to_end(&mut content)?;
                    Ok(content)
                })
            }),
            ("Decoder step 1", decode_reader(object, max_len, 1)),
            ("Decoder step 64k", decode_reader(object, max_len, 65536)),
        ]
    }

    /// The error of a decode that must fail, without printing the (possibly large) bytes.
    fn expect_error(result: Result<Vec<u8>>, context: &str) -> Error {
        match result {
            Ok(content) => panic!(
                "{context}: decoded {} bytes instead of failing",
                content.len()
            ),
            Err(error) => error,
        }
    }

    fn variant(error: &Error) -> String {
        let debug = format!("{error:?}");
        debug
            .split([' ', '(', '{'])
            .next()
            .unwrap_or_default()
            .to_string()
    }

    const SIZES: [usize; 7] = [0, 1, 24, 40, 4095, 65536, (1 << 20) + 7];

    #[test]
    fn round_trip_sizes() {
        for len in SIZES {
            for compressible in [false, true] {
                let data = sample(len, len as u64, compressible);
                let summary = Summary::of(&data);
                let objects = [
                    ("encode", encode(&data, 3).unwrap(), true),
                    ("Encoder with summary", encode_streaming(&data, true), true),
                    (
                        "Encoder without summary",
                        encode_streaming(&data, false),
                        false,
                    ),
                    ("zstd frames of 1000 bytes", encode_in(&data, 1000), true),
                    ("zstd frames of 4096 bytes", encode_in(&data, 4096), true),
                ];
                for (how, object, has_summary) in objects {
                    let name = format!("{how}, {len} bytes, compressible {compressible}");
                    let header = Header::parse(&object).unwrap();
                    assert_eq!(header.summary.is_some(), has_summary, "{name}");
                    assert_eq!(parse_trailer(&object).unwrap(), summary, "{name}");
                    for (way, result) in decode_all_ways(&object, summary.len) {
                        let decoded = result.unwrap_or_else(|e| panic!("{name}, {way}: {e}"));
                        assert!(decoded == data, "{name}, {way}: wrong bytes");
                    }
                }
            }
        }
    }

    #[test]
    fn decode_reserves_exactly() {
        let data = sample(100_000, 1, true);
        let content = decode(&encode(&data, 3).unwrap(), u64::MAX).unwrap();
        assert_eq!(content.capacity(), data.len());
    }

    #[test]
    fn every_single_byte_corruption_is_caught() {
        let data = sample(200, 7, true);
        let objects = [
            encode_streaming(&data, false),
            encode_streaming(&data, true),
            encode_in(&data, 64),
        ];
        for object in objects {
            for at in 0..object.len() {
                for flip in 1..=255u8 {
                    let mut damaged = object.clone();
                    damaged[at] ^= flip;
                    for (way, result) in decode_all_ways(&damaged, 1 << 20) {
                        match result {
                            Ok(decoded) => assert!(
                                decoded == data,
                                "{way}: byte {at} ^ {flip:#x} decoded to other bytes"
                            ),
                            Err(error) => assert!(
                                error.is_corruption(),
                                "{way}: byte {at} ^ {flip:#x}: {error:?}"
                            ),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn truncation_at_every_length() {
        let data = sample(3000, 3, true);
        let objects = [
            encode(&data, 3).unwrap(),
            encode_streaming(&data, false),
            encode_in(&data, 700),
            as_version_1(&encode(&data, 3).unwrap()),
        ];
        for object in objects {
            for len in 0..object.len() {
                for (way, result) in decode_all_ways(&object[..len], u64::MAX) {
                    let error = expect_error(result, way);
                    assert!(
                        matches!(error, Error::Truncated),
                        "{way}, cut at {len}: {error:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn trailing_data() {
        let data = sample(1000, 4, false);
        for object in [encode(&data, 3).unwrap(), encode_in(&data, 300)] {
            // (name, suffix)
            let cases: [(&str, &[u8]); 4] = [
                ("one zero byte", &[0]),
                ("garbage", b"garbage after the trailer"),
                ("a whole trailer", &object[object.len() - TRAILER_LEN..]),
                ("a second object", &object),
            ];
            for (name, suffix) in cases {
                let mut long = object.clone();
                long.extend_from_slice(suffix);
                for (way, result) in decode_all_ways(&long, u64::MAX) {
                    let error = expect_error(result, name);
                    assert!(
                        matches!(error, Error::TrailingData),
                        "{name}, {way}: {error:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn version_1_objects_hold_exactly_one_zstd_frame() {
        let data = sample(5000, 9, true);
        let single = as_version_1(&encode(&data, 3).unwrap());
        assert_eq!(Header::parse(&single).unwrap().version, 1);
        for (way, result) in decode_all_ways(&single, u64::MAX) {
            let decoded = result.unwrap_or_else(|e| panic!("{way}: {e}"));
            assert!(decoded == data, "{way}: wrong bytes");
        }
        // Several frames are version 2's: in version 1 the second is data after the content.
        let several = as_version_1(&encode_in(&data, 1000));
        for (way, result) in decode_all_ways(&several, u64::MAX) {
            let error = expect_error(result, way);
            assert!(matches!(error, Error::TrailingData), "{way}: {error:?}");
        }
    }

    #[test]
    fn anything_but_a_zstd_frame_between_frames_is_refused() {
        let data = sample(3000, 5, true);
        let object = encode_in(&data, 1000);
        // Where the second frame starts: the first frame is a whole object's body.
        let first = encode_in(&data[..1000], 1000).len() - HEADER_LEN - TRAILER_LEN;
        let at = HEADER_LEN + first;
        assert_eq!(object[at..at + 4], [0x28, 0xb5, 0x2f, 0xfd]);
        // (name, bytes put in at the boundary)
        let cases: [(&str, &[u8]); 3] = [
            ("a zero byte", &[0]),
            ("a trailer", &object[object.len() - TRAILER_LEN..]),
            (
                "a zstd skippable frame",
                &[0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0],
            ),
        ];
        for (name, inserted) in cases {
            let mut damaged = object[..at].to_vec();
            damaged.extend_from_slice(inserted);
            damaged.extend_from_slice(&object[at..]);
            for (way, result) in decode_all_ways(&damaged, u64::MAX) {
                let error = expect_error(result, name);
                assert!(error.is_corruption(), "{name}, {way}: {error:?}");
            }
        }
        // A frame dropped or repeated changes the content, and the summary says so.
        let mut dropped = object[..at].to_vec();
        dropped.extend_from_slice(&object[at + first..]);
        let mut repeated = object[..at].to_vec();
        repeated.extend_from_slice(&object[HEADER_LEN..]);
        for (name, damaged) in [("dropped", dropped), ("repeated", repeated)] {
            for (way, result) in decode_all_ways(&damaged, u64::MAX) {
                let error = expect_error(result, name);
                assert!(error.is_corruption(), "{name}, {way}: {error:?}");
            }
        }
    }

    /// Rebuilds a header that makes a different (well-formed) claim than the trailer.
    fn with_header_claim(object: &[u8], claim: Summary) -> Vec<u8> {
        let mut out = Header::new(Some(claim)).to_bytes().to_vec();
        out.extend_from_slice(&object[HEADER_LEN..]);
        out
    }

    #[test]
    fn header_and_trailer_must_agree_with_content() {
        let data = sample(5000, 5, true);
        let right = Summary::of(&data);
        let object = encode(&data, 3).unwrap();
        let cases = [
            (
                "header length",
                with_header_claim(&object, Summary { len: 4999, ..right }),
                "LengthMismatch",
            ),
            (
                "header crc",
                with_header_claim(
                    &object,
                    Summary {
                        crc32: !right.crc32,
                        ..right
                    },
                ),
                "ChecksumMismatch",
            ),
            (
                "trailer length",
                {
                    let mut o = object.clone();
                    let at = o.len() - TRAILER_LEN;
                    o[at] ^= 1;
                    o
                },
                "LengthMismatch",
            ),
            (
                "trailer crc",
                {
                    let mut o = object.clone();
                    let at = o.len() - TRAILER_LEN + 8;
                    o[at] ^= 1;
                    o
                },
                "ChecksumMismatch",
            ),
        ];
        for (name, damaged, want) in cases {
            for (way, result) in decode_all_ways(&damaged, u64::MAX) {
                let error = expect_error(result, name);
                assert_eq!(variant(&error), want, "{name}, {way}: {error:?}");
            }
        }
    }

    #[test]
    fn size_limit() {
        let data = sample(10_000, 6, true);
        let with_summary = encode(&data, 3).unwrap();
        let without_summary = encode_streaming(&data, false);
        for object in [&with_summary, &without_summary] {
            assert_eq!(decode(object, 10_000).unwrap(), data);
            for (way, result) in decode_all_ways(object, 9_999) {
                let error = expect_error(result, way);
                assert!(
                    matches!(error, Error::TooLarge { limit: 9_999 }),
                    "{way}: {error:?}"
                );
            }
        }
        // The header claim alone is refused before decoding starts.
        let error = Decoder::with_limit(&with_summary[..], 9_999).unwrap_err();
        assert!(matches!(error, Error::TooLarge { limit: 9_999 }));
        // A trailer claiming an absurd size does not make `decode` reserve it.
        let mut huge = without_summary.clone();
        let at = huge.len() - TRAILER_LEN;
        huge[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        let error = decode(&huge, u64::MAX).unwrap_err();
        assert!(matches!(error, Error::LengthMismatch { .. }), "{error:?}");
    }

    #[test]
    fn read_errors_carry_the_codec_error_and_repeat() {
        let object = encode(&sample(1000, 8, false), 3).unwrap();
        let mut damaged = object.clone();
        let at = damaged.len() - 1;
        damaged[at] = b'X';
        let mut decoder = Decoder::new(&damaged[..]).unwrap();
        let mut out = Vec::new();
        let error = decoder.read_to_end(&mut out).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(Error::from_io(&error), Some(Error::BadTrailer)));
        // Reading again must not look like a clean end of file.
        for _ in 0..3 {
            let again = decoder.read(&mut [0u8; 100]).unwrap_err();
            assert!(matches!(Error::from_io(&again), Some(Error::BadTrailer)));
            assert!(decoder.read(&mut []).is_err());
        }
        assert!(matches!(decoder.finish(), Err(Error::BadTrailer)));
    }

    /// A reader that fails in the ways a real one does.
    struct Flaky<'a> {
        data: &'a [u8],
        calls: usize,
        fail_at: Option<usize>,
    }

    impl Read for Flaky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.fail_at.is_some_and(|at| self.data.len() <= at) {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            if self.calls.is_multiple_of(3) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            // Short reads, to exercise every boundary.
            let n = buf.len().min(self.data.len()).min(7);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn interrupted_and_short_reads_are_handled() {
        let data = sample(50_000, 9, false);
        let object = encode(&data, 3).unwrap();
        let reader = Flaky {
            data: &object,
            calls: 0,
            fail_at: None,
        };
        let mut decoder = Decoder::new(reader).unwrap();
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).unwrap();
        assert!(out == data);
        assert_eq!(decoder.finish().unwrap(), Summary::of(&data));
    }

    #[test]
    fn reader_failures_are_io_not_corruption() {
        let data = sample(50_000, 10, false);
        let object = encode(&data, 3).unwrap();
        // Fail while reading the header, the body, the trailer and the end-of-input check.
        for remaining in [object.len() - 10, 20_000, 15, 0] {
            let reader = Flaky {
                data: &object,
                calls: 0,
                fail_at: Some(remaining),
            };
            let result = Decoder::new(reader).and_then(|mut decoder| {
                io::copy(&mut decoder, &mut io::sink())?;
                decoder.finish()
            });
            let error = result.expect_err("reader fails");
            assert!(
                matches!(&error, Error::Io(e) if e.kind() == io::ErrorKind::ConnectionReset),
                "failing with {remaining} left: {error:?}"
            );
            assert!(!error.is_corruption());
        }
    }

    #[test]
    fn empty_body() {
        // Header then trailer, no zstd frame at all.
        let object = encode(b"", 3).unwrap();
        let mut damaged = object[..HEADER_LEN].to_vec();
        damaged.extend_from_slice(&object[object.len() - TRAILER_LEN..]);
        for (way, result) in decode_all_ways(&damaged, u64::MAX) {
            let error = expect_error(result, way);
            assert!(matches!(error, Error::Corrupt { .. }), "{way}: {error:?}");
        }
    }

    #[test]
    fn decoder_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Decoder<&[u8]>>();
        assert_send::<Decoder<std::fs::File>>();
    }

    proptest! {
        #[test]
        fn prop_round_trip(
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            level in 1i32..6,
            with_summary: bool,
            chunk in 1usize..3000,
            step in 1usize..3000,
        ) {
            let expected = with_summary.then(|| Summary::of(&data));
            let mut encoder = Encoder::new(Vec::new(), level, expected).unwrap();
            for piece in data.chunks(chunk) {
                encoder.write_all(piece).unwrap();
            }
            let (object, summary) = encoder.finish().unwrap();
            prop_assert_eq!(summary, Summary::of(&data));
            prop_assert_eq!(&decode(&object, summary.len).unwrap(), &data);
            prop_assert_eq!(&decode_reader(&object, summary.len, step).unwrap(), &data);
            prop_assert_eq!(&decode(&encode(&data, level).unwrap(), summary.len).unwrap(), &data);
            let framed = encode_in_frames(&data, level, chunk).unwrap();
            prop_assert_eq!(&decode_reader(&framed, summary.len, step).unwrap(), &data);
        }

        #[test]
        fn prop_damage_never_yields_other_bytes(
            data in proptest::collection::vec(0u8..4, 0..2000),
            how in 0..3,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        ) {
            let object = match how {
                0 => encode_streaming(&data, false),
                1 => encode_streaming(&data, true),
                _ => encode_in(&data, 300),
            };
            let mut damaged = object.clone();
            for (at, flip) in edits {
                let at = at.index(damaged.len());
                damaged[at] ^= flip;
            }
            for (way, result) in decode_all_ways(&damaged, 1 << 20) {
                match result {
                    Ok(decoded) => prop_assert!(decoded == data, "{}: other bytes", way),
                    Err(error) => prop_assert!(error.is_corruption(), "{}: {:?}", way, error),
                }
            }
        }
    }
}
