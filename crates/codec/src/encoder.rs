//! Writing frames.

use std::fmt;
use std::io::{self, Cursor, Write};
use std::ops::RangeInclusive;

use crate::format::{HEADER_LEN, Header, Summary, TRAILER_LEN, to_u64, trailer_bytes};
use crate::{Error, Result};

/// The compression level walferry uses unless told otherwise (zstd's own default).
pub const DEFAULT_LEVEL: i32 = zstd::DEFAULT_COMPRESSION_LEVEL;

/// The compression levels [`Encoder::new`] and [`encode`] accept: zstd's full range, from its
/// fastest negative levels to 22. Level 0 means zstd's default, as in zstd itself.
pub fn level_range() -> RangeInclusive<i32> {
    zstd::compression_level_range()
}

fn check_level(level: i32) -> Result<()> {
    if level_range().contains(&level) {
        Ok(())
    } else {
        Err(Error::InvalidLevel { level })
    }
}

/// Writes one frame to `W`: the header on creation, compressed bytes as they are written, the
/// trailer on [`finish`](Encoder::finish).
///
/// The output is a valid frame only once `finish` has returned `Ok`. An encoder dropped earlier,
/// or whose `finish` failed, leaves a prefix without a trailer, which every decoder rejects as
/// [`Error::Truncated`]; discard it.
///
/// ```
/// use std::io::Write;
/// use walferry_codec::{Encoder, Summary};
///
/// let mut encoder = Encoder::new(Vec::new(), 3, None)?;
/// encoder.write_all(b"streamed ")?;
/// encoder.write_all(b"without knowing the size")?;
/// let (object, summary) = encoder.finish()?;
/// assert_eq!(summary, Summary::of(b"streamed without knowing the size"));
/// assert_eq!(walferry_codec::decode(&object, 1024)?, b"streamed without knowing the size");
/// # Ok::<(), walferry_codec::Error>(())
/// ```
pub struct Encoder<W: Write> {
    inner: zstd::stream::write::Encoder<'static, W>,
    hasher: crc32fast::Hasher,
    len: u64,
    expected: Option<Summary>,
}

impl<W: Write> Encoder<W> {
    /// Starts a frame: checks `level` against [`level_range`] and writes the header to `writer`.
    ///
    /// With `expected: Some(summary)` the header carries that summary, so that a reader learns
    /// the object's length and checksum from its first [`HEADER_LEN`] bytes, and
    /// [`finish`](Encoder::finish) fails with [`Error::SummaryMismatch`] unless exactly those
    /// bytes were written; a write past the summary's length fails at once, with the same
    /// error inside the `io::Error`. With `None` only the trailer carries the summary.
    pub fn new(mut writer: W, level: i32, expected: Option<Summary>) -> Result<Self> {
        check_level(level)?;
        writer.write_all(&Header::new(expected).to_bytes())?;
        let mut inner = zstd::stream::write::Encoder::new(writer, level)?;
        if let Some(summary) = expected {
            // Known up front, the size lets zstd choose its parameters as for a one-shot
            // compression and records it in the frame.
            inner.set_pledged_src_size(Some(summary.len))?;
        }
        Ok(Encoder {
            inner,
            hasher: crc32fast::Hasher::new(),
            len: 0,
            expected,
        })
    }

    /// The summary of the bytes written so far.
    pub fn summary(&self) -> Summary {
        Summary {
            len: self.len,
            crc32: self.hasher.clone().finalize(),
        }
    }

    /// Ends the frame: ends the zstd stream, writes the trailer, flushes `W` and returns it with
    /// the summary of everything written.
    ///
    /// Fails with [`Error::SummaryMismatch`], before writing the trailer, when `Encoder::new` was
    /// given a summary and the bytes written do not match it.
    pub fn finish(self) -> Result<(W, Summary)> {
        let actual = self.summary();
        if let Some(expected) = self.expected
            && expected != actual
        {
            return Err(Error::SummaryMismatch { expected, actual });
        }
        let mut writer = self.inner.finish()?;
        writer.write_all(&trailer_bytes(actual))?;
        writer.flush()?;
        Ok((writer, actual))
    }
}

/// Compresses the bytes; their summary covers exactly what each call reports as written.
impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(expected) = self.expected
            && self.len.saturating_add(to_u64(buf.len())) > expected.len
        {
            // More than the header promises: refused before zstd sees it.
            let mut hasher = self.hasher.clone();
            hasher.update(buf);
            let actual = Summary {
                len: self.len.saturating_add(to_u64(buf.len())),
                crc32: hasher.finalize(),
            };
            return Err(Error::SummaryMismatch { expected, actual }.into());
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len = self.len.saturating_add(to_u64(n));
        Ok(n)
    }

    /// Flushes compressed data written so far down to `W`. Flushing often costs compression
    /// ratio; the frame is complete only after [`finish`](Encoder::finish).
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("written", &self.len)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

/// How much content goes into each zstd frame of the objects [`encode`] and [`encode_from`] write
/// (the last frame may hold less). Each frame is compressed in one pass from a contiguous
/// buffer, which zstd does markedly faster than a long frame streamed through its sliding
/// window; frames of this size cost well under 1 % in size on WAL. A reader needs no
/// knowledge of it.
pub const FRAME_LEN: usize = 4 << 20;

/// Encodes `data` as an object whose header carries its summary.
///
/// ```
/// let object = walferry_codec::encode(b"hello", 3)?;
/// assert_eq!(walferry_codec::decode(&object, 5)?, b"hello");
/// # Ok::<(), walferry_codec::Error>(())
/// ```
pub fn encode(data: &[u8], level: i32) -> Result<Vec<u8>> {
    encode_in_frames(data, level, FRAME_LEN)
}

/// [`encode`] with frames of `frame_len` bytes of content.
pub(crate) fn encode_in_frames(data: &[u8], level: i32, frame_len: usize) -> Result<Vec<u8>> {
    check_level(level)?;
    let summary = Summary::of(data);
    let bound = zstd::zstd_safe::compress_bound(data.len());
    let mut out = Vec::with_capacity(HEADER_LEN + bound + TRAILER_LEN);
    out.extend_from_slice(&Header::new(Some(summary)).to_bytes());
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    if data.is_empty() {
        push_frame(&mut compressor, &mut out, data)?;
    }
    for piece in data.chunks(frame_len) {
        push_frame(&mut compressor, &mut out, piece)?;
    }
    out.extend_from_slice(&trailer_bytes(summary));
    out.shrink_to_fit();
    Ok(out)
}

/// Encodes the `len` bytes `source` yields as an object whose header carries their summary,
/// reading them once, a zstd frame's worth ([`FRAME_LEN`]) at a time. The summary is computed
/// on the way and the header written last, over a placeholder: the output is in memory anyway.
/// Memory: the object, one frame's content and the compressor, not the whole content. The
/// output is the same as [`encode`]'s. [`BatchEncoder`] does the same with buffers kept from
/// one object to the next.
///
/// Fails with [`Error::Io`] (`InvalidData`) when `source` yields more or fewer than `len`
/// bytes.
///
/// ```
/// let object = walferry_codec::encode_from(&b"hello"[..], 5, 3)?;
/// assert_eq!(walferry_codec::decode(&object, 5)?, b"hello");
/// # Ok::<(), walferry_codec::Error>(())
/// ```
pub fn encode_from(source: impl io::Read, len: u64, level: i32) -> Result<Vec<u8>> {
    BatchEncoder::new(level)?.encode_from(source, len)
}

/// Encodes one object after another, as [`encode_from`] does, with the same buffers: a zstd
/// context and room for a frame's content ([`FRAME_LEN`] at most). For a caller that encodes
/// many objects, nothing large is allocated and freed per object but the objects themselves.
///
/// ```
/// let mut encoder = walferry_codec::BatchEncoder::new(3)?;
/// for content in [&b"one"[..], b"two"] {
///     let object = encoder.encode_from(content, content.len() as u64)?;
///     assert_eq!(walferry_codec::decode(&object, 3)?, content);
/// }
/// # Ok::<(), walferry_codec::Error>(())
/// ```
pub struct BatchEncoder {
    level: i32,
    compressor: zstd::bulk::Compressor<'static>,
    piece: Vec<u8>,
    frame_len: usize,
}

impl BatchEncoder {
    /// An encoder compressing at `level` (checked against [`level_range`]).
    pub fn new(level: i32) -> Result<BatchEncoder> {
        Self::with_frame_len(level, FRAME_LEN)
    }

    pub(crate) fn with_frame_len(level: i32, frame_len: usize) -> Result<BatchEncoder> {
        check_level(level)?;
        Ok(BatchEncoder {
            level,
            compressor: zstd::bulk::Compressor::new(level)?,
            piece: Vec::new(),
            frame_len,
        })
    }

    /// The compression level.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Encodes the `len` bytes `source` yields; see [`encode_from`].
    pub fn encode_from(&mut self, mut source: impl io::Read, len: u64) -> Result<Vec<u8>> {
        let want = usize::try_from(len).map_or(self.frame_len, |len| len.clamp(1, self.frame_len));
        if self.piece.len() < want {
            self.piece.resize(want, 0);
        }
        let piece = &mut self.piece[..want];
        let mut out = Vec::new();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        let mut hasher = crc32fast::Hasher::new();
        let mut total = 0u64;
        loop {
            let mut filled = 0;
            while filled < piece.len() {
                match source.read(&mut piece[filled..]) {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.update(&piece[filled..filled + n]);
                        filled += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::Io(e)),
                }
            }
            total = total.saturating_add(to_u64(filled));
            if total > len {
                break;
            }
            if filled > 0 || total == 0 {
                push_frame(&mut self.compressor, &mut out, &piece[..filled])?;
            }
            if filled < piece.len() {
                break;
            }
        }
        if total != len {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the source yielded {total} bytes or more, not the {len} announced"),
            )));
        }
        let summary = Summary {
            len,
            crc32: hasher.finalize(),
        };
        out.extend_from_slice(&trailer_bytes(summary));
        out[..HEADER_LEN].copy_from_slice(&Header::new(Some(summary)).to_bytes());
        // Room was kept for a frame that did not compress; the object keeps only its bytes.
        out.shrink_to_fit();
        Ok(out)
    }
}

impl fmt::Debug for BatchEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchEncoder")
            .field("level", &self.level)
            .field("frame_len", &self.frame_len)
            .finish_non_exhaustive()
    }
}

/// Appends `piece` to `out` as one zstd frame, compressed straight into the output: no
/// intermediate buffer, no zeroing.
fn push_frame(
    compressor: &mut zstd::bulk::Compressor<'static>,
    out: &mut Vec<u8>,
    piece: &[u8],
) -> Result<()> {
    out.reserve(zstd::zstd_safe::compress_bound(piece.len()));
    let at = to_u64(out.len());
    let mut cursor = Cursor::new(std::mem::take(out));
    cursor.set_position(at);
    let result = compressor.compress_to_buffer(piece, &mut cursor);
    *out = cursor.into_inner();
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, parse_trailer};

    #[test]
    fn levels() {
        let range = level_range();
        // (level, accepted)
        let cases = [
            (i32::MIN, false),
            (range.start() - 1, false),
            (*range.start(), true),
            (-1, true),
            (0, true),
            (1, true),
            (DEFAULT_LEVEL, true),
            (19, true),
            (22, true),
            (23, false),
            (i32::MAX, false),
        ];
        assert_eq!(*range.end(), 22);
        for (level, accepted) in cases {
            let one_shot = encode(b"some data", level);
            let streaming = Encoder::new(Vec::new(), level, None);
            assert_eq!(one_shot.is_ok(), accepted, "encode at level {level}");
            assert_eq!(streaming.is_ok(), accepted, "Encoder at level {level}");
            if accepted {
                assert_eq!(decode(&one_shot.unwrap(), 100).unwrap(), b"some data");
            } else {
                let error = one_shot.unwrap_err();
                assert!(matches!(error, Error::InvalidLevel { level: l } if l == level));
                assert!(!error.is_corruption());
            }
        }
    }

    #[test]
    fn a_batch_encoder_reused_writes_what_encode_writes() {
        let mut encoder = BatchEncoder::with_frame_len(3, 5000).unwrap();
        for len in [12_000usize, 0, 5000, 17, 20_001, 4999] {
            let data: Vec<u8> = (0..len).map(|i| (i % 7 + i / 300) as u8).collect();
            let object = encoder.encode_from(&data[..], len as u64).unwrap();
            assert!(
                object == encode_in_frames(&data, 3, 5000).unwrap(),
                "{len} bytes"
            );
            assert_eq!(object.capacity(), object.len(), "{len} bytes");
        }
        assert_eq!(encoder.level(), 3);
        assert!(matches!(
            BatchEncoder::new(23),
            Err(Error::InvalidLevel { level: 23 })
        ));
    }

    #[test]
    fn encode_from_reads_once_and_matches_encode() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let streamed = encode_from(&data[..], data.len() as u64, 3).unwrap();
        assert_eq!(decode(&streamed, data.len() as u64).unwrap(), data);
        let header = Header::parse(&streamed[..HEADER_LEN]).unwrap();
        assert_eq!(header.summary, Some(Summary::of(&data)));
        assert_eq!(parse_trailer(&streamed).unwrap(), Summary::of(&data));
        let empty = encode_from(&b""[..], 0, 3).unwrap();
        assert_eq!(decode(&empty, 0).unwrap(), b"");
        for (announced, what) in [(2_999_999u64, "longer"), (3_000_001, "shorter")] {
            match encode_from(&data[..], announced, 3) {
                Err(Error::Io(e)) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_expected_summary() {
        let data = b"the quick brown fox";
        let right = Summary::of(data);
        // (name, expected summary, bytes written)
        let cases: [(&str, Summary, &[u8]); 4] = [
            ("short", right, &data[..5]),
            ("long", right, b"the quick brown fox jumps"),
            ("same length, other bytes", right, b"the quick brown cat"),
            ("wrong crc", Summary { crc32: 1, ..right }, data),
        ];
        for (name, expected, written) in cases {
            let mut encoder = Encoder::new(Vec::new(), 3, Some(expected)).unwrap();
            let result = match encoder.write_all(written) {
                Ok(()) => encoder.finish().map(|_| ()),
                Err(e) => Err(Error::from(e)),
            };
            match result {
                Err(Error::SummaryMismatch {
                    expected: e,
                    actual,
                }) => {
                    assert_eq!(e, expected, "{name}");
                    assert_eq!(actual, Summary::of(written), "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn streaming_matches_one_shot_summary() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for expected in [None, Some(Summary::of(&data))] {
            let mut encoder = Encoder::new(Vec::new(), 3, expected).unwrap();
            for chunk in data.chunks(7777) {
                encoder.write_all(chunk).unwrap();
            }
            assert_eq!(encoder.summary(), Summary::of(&data));
            let (object, summary) = encoder.finish().unwrap();
            assert_eq!(summary, Summary::of(&data));
            assert_eq!(parse_trailer(&object).unwrap(), summary);
            assert_eq!(
                crate::Header::parse(&object).unwrap().summary,
                expected,
                "header summary"
            );
            assert_eq!(decode(&object, summary.len).unwrap(), data);
        }
    }

    #[test]
    fn writer_errors_surface_as_io() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let error = Encoder::new(Broken, 3, None).unwrap_err();
        assert!(matches!(&error, Error::Io(e) if e.kind() == io::ErrorKind::StorageFull));
        assert!(!error.is_corruption());
    }

    #[test]
    fn encoder_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Encoder<Vec<u8>>>();
    }
}
