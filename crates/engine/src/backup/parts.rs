//! Cutting one tar stream of a base backup into stored parts, and listing its members.
//!
//! A [`PartWriter`] takes the raw bytes of one archive of `BASE_BACKUP` (`base.tar` or
//! `<oid>.tar`) in whatever chunks they arrive and produces what the backup manifest records
//! for that stream:
//!
//! - *Parts*: consecutive slices of the uncompressed stream, each at most
//!   [`PartOptions::part_size`] bytes, each one `walferry-codec` frame. Part `n` of the stream
//!   is named `<archive>.<n:04>.zst` (`base.tar.0000.zst`, `16385.tar.0003.zst`), its key
//!   relative to the backup's prefix ([`layout::backup_part_key`]). A part is handed back as a
//!   [`FinishedPart`] as soon as it is full, so the caller can store it while feeding goes on;
//!   only one part is open at a time, so memory is bounded by one compressed part.
//! - *Files*: every member, in archive order, as a [`BackupFile`]. A regular file's `offset`
//!   is where its content starts in the uncompressed stream (after its header block), so its
//!   content is `stream[offset..offset + size]`, and `crc32` is the CRC-32 of that content.
//!
//! Parts' `offset`s are the sums of the sizes before them and together they cover the whole
//! stream, trailing zero blocks included, which is what
//! [`BackupManifest::validate`](walferry_manifest::BackupManifest::validate) checks.
//!
//! The writer is pure and synchronous (no I/O); compression is CPU work, so async callers run
//! [`PartWriter::feed`] on the blocking pool.
//!
//! ```
//! use std::num::NonZeroU64;
//! use walferry_engine::backup::parts::{PartOptions, PartWriter};
//!
//! // An empty tar archive: two zero blocks.
//! let archive = vec![0u8; 1024];
//! let options = PartOptions { part_size: NonZeroU64::new(1000).unwrap(), level: 3 };
//! let mut writer = PartWriter::new(None, options)?;
//! let mut stored = writer.feed(&archive)?;
//! let (last, files, parts) = writer.finish()?;
//! stored.extend(last);
//! assert!(files.is_empty());
//! let names: Vec<_> = parts.iter().map(|p| (p.name.as_str(), p.offset)).collect();
//! assert_eq!(names, [("base.tar.0000.zst", 0), ("base.tar.0001.zst", 1000)]);
//! assert_eq!(stored.len(), 2);
//! # Ok::<(), walferry_engine::backup::parts::PartError>(())
//! ```
//!
//! [`layout::backup_part_key`]: walferry_manifest::layout::backup_part_key

use std::io::Write;
use std::num::NonZeroU64;

use walferry_codec::Encoder;
use walferry_manifest::Timestamp;
use walferry_manifest::backup::{BackupFile, BackupPart, Crc32, FileKind, Oid};

use crate::tar::{Entry, EntryKind, TarError, TarReader, TarSink};

/// The default largest uncompressed size of a part: 64 MiB.
pub const DEFAULT_PART_SIZE: NonZeroU64 = NonZeroU64::new(64 << 20).expect("not zero");

/// A tar block; headers and padded contents are whole blocks.
const BLOCK: u64 = 512;

/// `Result` with [`PartError`].
pub type Result<T, E = PartError> = std::result::Result<T, E>;

/// Why a tar stream could not be cut into parts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartError {
    /// The stream is not a valid tar archive, or it ended early.
    #[error("archive '{archive}' is not a valid tar stream: {source}")]
    Tar {
        /// The archive (`base.tar`, `<oid>.tar`).
        archive: String,
        /// What is wrong.
        source: TarError,
    },
    /// A member's path is not one a backup manifest can hold (absolute, empty component, `..`).
    #[error("archive '{archive}' has member '{path}' whose path is not a plain relative path")]
    BadPath {
        /// The archive.
        archive: String,
        /// The member's path.
        path: String,
    },
    /// The compression level is out of range, or compressing a part failed.
    #[error("cannot compress part '{part}': {source}")]
    Codec {
        /// The part's name.
        part: String,
        /// The codec's error.
        source: walferry_codec::Error,
    },
}

/// How a [`PartWriter`] cuts and compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartOptions {
    /// The largest uncompressed size of a part; every part but a stream's last has exactly
    /// this size.
    pub part_size: NonZeroU64,
    /// The zstd level, within [`walferry_codec::level_range`].
    pub level: i32,
}

impl Default for PartOptions {
    fn default() -> Self {
        PartOptions {
            part_size: DEFAULT_PART_SIZE,
            level: walferry_codec::DEFAULT_LEVEL,
        }
    }
}

/// A complete part, ready to store under [`layout::backup_part_key`]`(label, &name)`.
///
/// The writer also records it as a [`BackupPart`], returned by [`PartWriter::finish`].
///
/// [`layout::backup_part_key`]: walferry_manifest::layout::backup_part_key
#[derive(Clone, PartialEq, Eq)]
pub struct FinishedPart {
    /// Its name, e.g. `base.tar.0003.zst`.
    pub name: String,
    /// Where it starts in the uncompressed stream.
    pub offset: u64,
    /// Its uncompressed size.
    pub original_bytes: u64,
    /// CRC-32 of its uncompressed bytes.
    pub crc32: Crc32,
    /// The stored object: one `walferry-codec` frame.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for FinishedPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinishedPart")
            .field("name", &self.name)
            .field("offset", &self.offset)
            .field("original_bytes", &self.original_bytes)
            .field("crc32", &self.crc32)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Cuts one tar stream into parts and lists its members; see the [module docs](self).
#[derive(Debug)]
pub struct PartWriter {
    archive: String,
    tablespace: Option<Oid>,
    options: PartOptions,
    reader: TarReader,
    index: Index,
    open: Option<Encoder<Vec<u8>>>,
    /// Where the open (or next) part starts in the stream.
    part_start: u64,
    parts: Vec<BackupPart>,
}

impl PartWriter {
    /// A writer for the stream of `tablespace` (`None`: the data directory, `base.tar`).
    ///
    /// Fails with [`PartError::Codec`] when `options.level` is out of range.
    pub fn new(tablespace: Option<Oid>, options: PartOptions) -> Result<PartWriter> {
        let archive = match tablespace {
            None => "base.tar".to_owned(),
            Some(oid) => format!("{oid}.tar"),
        };
        let writer = PartWriter {
            index: Index {
                archive: archive.clone(),
                tablespace,
                pos: 0,
                content_end: 0,
                open: None,
                files: Vec::new(),
            },
            archive,
            tablespace,
            options,
            reader: TarReader::new(),
            open: None,
            part_start: 0,
            parts: Vec::new(),
        };
        if !walferry_codec::level_range().contains(&options.level) {
            // Let the codec report the bad level in its own words.
            let source = Encoder::new(Vec::new(), options.level, None)
                .expect_err("the level is out of range");
            return Err(PartError::Codec {
                part: writer.part_name(),
                source,
            });
        }
        Ok(writer)
    }

    /// The archive's name: `base.tar` or `<oid>.tar`.
    pub fn archive(&self) -> &str {
        &self.archive
    }

    /// The number of stream bytes fed so far.
    pub fn stream_len(&self) -> u64 {
        self.index.pos
    }

    /// Takes the next chunk of the stream; returns the parts it completed, in order.
    ///
    /// After an error the writer is unusable: the stream is not a valid archive.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<FinishedPart>> {
        self.parse(chunk)?;
        let mut done = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let part_size = self.options.part_size.get();
            let encoder = match &mut self.open {
                Some(encoder) => encoder,
                None => {
                    let encoder = Encoder::new(Vec::new(), self.options.level, None)
                        .map_err(|source| self.codec_error(source))?;
                    self.open.insert(encoder)
                }
            };
            let room = part_size - encoder.summary().len;
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(rest.len());
            let (piece, tail) = rest.split_at(take);
            let written = encoder.write_all(piece);
            let full = encoder.summary().len == part_size;
            written.map_err(|e| self.codec_error(e.into()))?;
            rest = tail;
            if full {
                done.push(self.finish_part()?);
            }
        }
        Ok(done)
    }

    /// Ends the stream: checks that the archive ended properly, and returns the last part (if
    /// one is open), every member of the stream, and every part of it, in order.
    pub fn finish(mut self) -> Result<(Vec<FinishedPart>, Vec<BackupFile>, Vec<BackupPart>)> {
        self.reader.finish().map_err(|source| PartError::Tar {
            archive: self.archive.clone(),
            source,
        })?;
        let last = match self.open {
            Some(_) => vec![self.finish_part()?],
            None => Vec::new(),
        };
        Ok((last, self.index.files, self.parts))
    }

    /// Passes `chunk` to the tar reader, cut so that every header block ends a piece: then a
    /// member's content starts where the piece that completed its header ends.
    fn parse(&mut self, mut chunk: &[u8]) -> Result<()> {
        while !chunk.is_empty() {
            let pos = self.index.pos;
            let want = if pos < self.index.content_end {
                self.index.content_end - pos
            } else {
                BLOCK - pos % BLOCK
            };
            let take = usize::try_from(want).unwrap_or(usize::MAX).min(chunk.len());
            let (piece, rest) = chunk.split_at(take);
            self.index.pos = pos + take as u64;
            self.reader
                .feed(piece, &mut self.index)
                .map_err(|e| match e {
                    SinkError::Tar(source) => PartError::Tar {
                        archive: self.archive.clone(),
                        source,
                    },
                    SinkError::BadPath(path) => PartError::BadPath {
                        archive: self.archive.clone(),
                        path,
                    },
                })?;
            chunk = rest;
        }
        Ok(())
    }

    fn part_name(&self) -> String {
        format!("{}.{:04}.zst", self.archive, self.parts.len())
    }

    fn codec_error(&self, source: walferry_codec::Error) -> PartError {
        PartError::Codec {
            part: self.part_name(),
            source,
        }
    }

    fn finish_part(&mut self) -> Result<FinishedPart> {
        let encoder = self.open.take().expect("called with a part open");
        let (body, summary) = encoder.finish().map_err(|e| self.codec_error(e))?;
        let part = FinishedPart {
            name: self.part_name(),
            offset: self.part_start,
            original_bytes: summary.len,
            crc32: Crc32(summary.crc32),
            body,
        };
        self.parts.push(BackupPart {
            tablespace: self.tablespace,
            name: part.name.clone(),
            offset: part.offset,
            original_bytes: part.original_bytes,
            compressed_bytes: part.body.len() as u64,
            crc32: part.crc32,
        });
        self.part_start += summary.len;
        Ok(part)
    }
}

/// What the sink can fail with; [`PartWriter::parse`] adds the archive's name.
#[derive(Debug)]
enum SinkError {
    Tar(TarError),
    BadPath(String),
}

impl From<TarError> for SinkError {
    fn from(e: TarError) -> Self {
        SinkError::Tar(e)
    }
}

/// The member list, built from the tar reader's events.
#[derive(Debug)]
struct Index {
    archive: String,
    tablespace: Option<Oid>,
    /// The stream position at the end of the piece being parsed.
    pos: u64,
    /// Where the open file's content ends in the stream.
    content_end: u64,
    open: Option<OpenFile>,
    files: Vec<BackupFile>,
}

#[derive(Debug)]
struct OpenFile {
    path: String,
    mode: u32,
    mtime: Option<Timestamp>,
    offset: u64,
    size: u64,
    hasher: crc32fast::Hasher,
}

impl TarSink for Index {
    type Error = SinkError;

    fn entry(&mut self, entry: &Entry) -> Result<(), SinkError> {
        debug_assert_eq!(
            self.pos % BLOCK,
            0,
            "{}: headers end on blocks",
            self.archive
        );
        let path = &entry.path;
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|c| c.is_empty() || c == "..")
        {
            return Err(SinkError::BadPath(path.clone()));
        }
        // A time outside what a manifest can write is dropped rather than refused.
        let mtime = Timestamp::from_unix_seconds(entry.mtime).ok();
        let kind = match &entry.kind {
            EntryKind::File => {
                self.content_end = self.pos + entry.size;
                self.open = Some(OpenFile {
                    path: path.clone(),
                    mode: entry.mode,
                    mtime,
                    offset: self.pos,
                    size: entry.size,
                    hasher: crc32fast::Hasher::new(),
                });
                return Ok(());
            }
            EntryKind::Directory => FileKind::Dir,
            EntryKind::Symlink { target } => FileKind::Symlink {
                target: target.clone(),
            },
        };
        self.files.push(BackupFile {
            tablespace: self.tablespace,
            path: path.clone(),
            mode: entry.mode,
            mtime,
            kind,
        });
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        if let Some(file) = &mut self.open {
            file.hasher.update(bytes);
        }
        Ok(())
    }

    fn end_entry(&mut self) -> Result<(), SinkError> {
        if let Some(file) = self.open.take() {
            self.files.push(BackupFile {
                tablespace: self.tablespace,
                path: file.path,
                mode: file.mode,
                mtime: file.mtime,
                kind: FileKind::File {
                    size: file.size,
                    crc32: Crc32(file.hasher.finalize()),
                    offset: file.offset,
                },
            });
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tar::tests::archive;
    use walferry_manifest::backup::{FORMAT, Tablespace, Totals};
    use walferry_manifest::{BackupManifest, ManifestError};
    use walferry_wal::{Lsn, PgVersion, TimelineId, WalSegSize};

    fn options(part_size: u64) -> PartOptions {
        PartOptions {
            part_size: NonZeroU64::new(part_size).unwrap(),
            level: 3,
        }
    }

    /// A validated manifest of label `label` around a writer's output, with one tablespace
    /// (`oid` at /srv/ts1, `ts_bytes` long) and plausible positions and times.
    pub(crate) fn manifest_around(
        label: &str,
        oid: Oid,
        ts_bytes: u64,
        parts: Vec<BackupPart>,
        files: Vec<BackupFile>,
    ) -> BackupManifest {
        let mut manifest = BackupManifest {
            format: FORMAT,
            label: label.into(),
            system_identifier: 7_441_234_567_890_123_456,
            pg_version: PgVersion::V15,
            wal_segment_size: WalSegSize::DEFAULT,
            start_lsn: Lsn(0x500_0028),
            start_timeline: TimelineId::new(1).unwrap(),
            stop_lsn: Lsn(0x500_0138),
            stop_timeline: TimelineId::new(1).unwrap(),
            start_time: Timestamp::from_unix_seconds(1_795_582_800).unwrap(),
            stop_time: Timestamp::from_unix_seconds(1_795_582_807).unwrap(),
            tablespaces: vec![Tablespace {
                oid,
                location: "/srv/ts1".into(),
                original_bytes: ts_bytes,
            }],
            parts,
            files,
            totals: Totals::default(),
        };
        manifest.totals = manifest.compute_totals();
        manifest.validate().unwrap();
        manifest
    }

    /// Feeds `data` in chunks cycling through `sizes`; returns everything the writer made.
    fn run(
        tablespace: Option<Oid>,
        data: &[u8],
        sizes: &[usize],
        part_size: u64,
    ) -> Result<(Vec<FinishedPart>, Vec<BackupFile>, Vec<BackupPart>)> {
        let mut writer = PartWriter::new(tablespace, options(part_size))?;
        let mut stored = Vec::new();
        let mut rest = data;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            stored.extend(writer.feed(chunk)?);
            rest = tail;
        }
        assert_eq!(writer.stream_len(), data.len() as u64);
        let (last, files, parts) = writer.finish()?;
        stored.extend(last);
        Ok((stored, files, parts))
    }

    fn sample() -> (Vec<u8>, Vec<u8>) {
        let big: Vec<u8> = (0..5_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let data = archive(&[
            ("PG_VERSION", b'0', b"15\n", ""),
            ("base", b'5', b"", ""),
            ("base/1/1259", b'0', &big, ""),
            ("pg_tblspc/16385", b'2', b"", "/srv/ts1"),
            ("empty", b'0', b"", ""),
            ("global/pg_control", b'0', &big[..1_777], ""),
        ]);
        (data, big)
    }

    #[test]
    fn parts_reassemble_to_the_stream_and_files_check_out() {
        let (data, big) = sample();
        for sizes in [&[1][..], &[7, 333, 1], &[511, 513], &[4096], &[1 << 20]] {
            for part_size in [100, 1000, 1024, 1 << 20] {
                let ctx = format!("chunks {sizes:?} part size {part_size}");
                let (stored, files, parts) = run(None, &data, sizes, part_size).unwrap();

                // Parts: consecutive, named in order, full but the last, and they decode
                // back to the stream.
                assert_eq!(stored.len(), parts.len(), "{ctx}");
                let mut stream = Vec::new();
                for (i, (part, meta)) in stored.iter().zip(&parts).enumerate() {
                    assert_eq!(part.name, format!("base.tar.{i:04}.zst"), "{ctx}");
                    assert_eq!(meta.name, part.name, "{ctx}");
                    assert_eq!(meta.offset, stream.len() as u64, "{ctx}");
                    assert_eq!(meta.compressed_bytes, part.body.len() as u64, "{ctx}");
                    let bytes = walferry_codec::decode(&part.body, part_size).unwrap();
                    assert_eq!(bytes.len() as u64, meta.original_bytes, "{ctx}");
                    assert_eq!(Crc32(crc32fast::hash(&bytes)), meta.crc32, "{ctx}");
                    if i + 1 < parts.len() {
                        assert_eq!(meta.original_bytes, part_size, "{ctx}");
                    }
                    stream.extend(bytes);
                }
                assert_eq!(stream, data, "{ctx}");

                // Files: in archive order, contents found at their offsets.
                let summary: Vec<_> = files
                    .iter()
                    .map(|f| (f.path.as_str(), f.kind.clone()))
                    .collect();
                let file = |content: &[u8], offset| FileKind::File {
                    size: content.len() as u64,
                    crc32: Crc32(crc32fast::hash(content)),
                    offset,
                };
                assert_eq!(
                    summary,
                    [
                        ("PG_VERSION", file(b"15\n", 512)),
                        ("base", FileKind::Dir),
                        ("base/1/1259", file(&big, 4 * 512)),
                        (
                            "pg_tblspc/16385",
                            FileKind::Symlink {
                                target: "/srv/ts1".into()
                            }
                        ),
                        ("empty", file(b"", 16 * 512)),
                        ("global/pg_control", file(&big[..1_777], 17 * 512)),
                    ],
                    "{ctx}"
                );
                for f in &files {
                    assert_eq!(f.mode, 0o600, "{ctx}");
                    assert_eq!(
                        f.mtime,
                        Some(Timestamp::from_unix_seconds(0o14707013200).unwrap())
                    );
                    if let FileKind::File {
                        size,
                        crc32,
                        offset,
                    } = f.kind
                    {
                        let content = &stream[offset as usize..(offset + size) as usize];
                        assert_eq!(Crc32(crc32fast::hash(content)), crc32, "{ctx}");
                    }
                }
            }
        }
    }

    #[test]
    fn output_makes_a_valid_manifest() {
        let (base, _) = sample();
        let ts = archive(&[
            ("PG_15_202209061", b'5', b"", ""),
            ("PG_15_202209061/5/16386", b'0', &[9u8; 2000], ""),
        ]);
        let oid = Oid(16385);
        let (_, ts_files, ts_parts) = run(Some(oid), &ts, &[300], 1000).unwrap();
        let (_, files, parts) = run(None, &base, &[999], 1000).unwrap();
        assert_eq!(ts_parts[0].name, "16385.tar.0000.zst");
        assert!(ts_files.iter().all(|f| f.tablespace == Some(oid)));

        let mut manifest = manifest_around(
            "20261125T050000Z",
            oid,
            ts.len() as u64,
            ts_parts.into_iter().chain(parts).collect(),
            ts_files.into_iter().chain(files).collect(),
        );
        let again = BackupManifest::from_json(&manifest.to_json()).unwrap();
        assert_eq!(again, manifest);
        let pg_control = manifest
            .files
            .iter()
            .find(|f| f.path == "global/pg_control")
            .unwrap();
        // Bytes 8704..10481 of the stream: parts 8, 9 and 10 of 1000 bytes.
        assert_eq!(manifest.parts_for(pg_control).len(), 3);

        // A dropped part is caught.
        manifest.parts.remove(1);
        manifest.totals = manifest.compute_totals();
        assert!(matches!(
            manifest.validate(),
            Err(ManifestError::Inconsistent { .. })
        ));
    }

    #[test]
    fn bad_streams_and_options_are_errors() {
        let (data, _) = sample();
        let cut = &data[..data.len() - 1024 - 100];
        let err = run(None, cut, &[64], 1000).unwrap_err();
        assert!(matches!(err, PartError::Tar { .. }), "{err}");
        assert!(err.to_string().starts_with("archive 'base.tar' "), "{err}");

        let mut garbage = data.clone();
        garbage[0] ^= 1;
        let err = run(Some(Oid(7)), &garbage, &[64], 1000).unwrap_err();
        assert!(err.to_string().starts_with("archive '7.tar' "), "{err}");

        for path in ["../etc/passwd", "/abs", "a//b"] {
            let bad = archive(&[(path, b'0', b"x", "")]);
            let err = run(None, &bad, &[64], 1000).unwrap_err();
            assert!(matches!(err, PartError::BadPath { .. }), "{path}: {err}");
        }

        let err = PartWriter::new(
            None,
            PartOptions {
                level: 99,
                ..PartOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, PartError::Codec { .. }), "{err}");
        assert_eq!(PartOptions::default().part_size.get(), 64 << 20);
    }
}
