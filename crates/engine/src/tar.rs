//! A streaming reader of the tar archives PostgreSQL's `BASE_BACKUP` sends.
//!
//! The base backup arrives as a byte stream cut into arbitrary chunks; [`TarReader::feed`]
//! takes each chunk as it comes and reports entries and their data to a [`TarSink`] without
//! buffering file contents, so memory stays bounded whatever the file sizes.
//!
//! Supported: the ustar format PostgreSQL writes (`tarCreateHeader` in `pgtar.c`) — regular
//! files, directories and symbolic links, octal and base-256 sizes, the ustar `prefix` field —
//! plus pax extended headers (`path`, `linkpath`, `size`) and GNU long names (`L`, `K`) for
//! robustness. Anything else (hard links, devices, FIFOs) is an error naming the entry: a
//! PostgreSQL data directory holds none.

use std::fmt;

/// A block of a tar archive.
const BLOCK: usize = 512;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link to `target` (tablespaces under `pg_tblspc`).
    Symlink {
        /// Where the link points.
        target: String,
    },
}

/// One archive member's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path inside the archive, without a trailing `/`.
    pub path: String,
    /// File, directory or link.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Content size in bytes (0 for directories and links).
    pub size: u64,
}

/// Receives what [`TarReader`] finds, in archive order: `entry`, then the entry's content in
/// one or more `data` calls totalling `entry.size` bytes, then `end_entry`.
pub trait TarSink {
    /// The error the sink may return; it stops the reader.
    type Error: From<TarError>;
    /// A new entry begins.
    fn entry(&mut self, entry: &Entry) -> Result<(), Self::Error>;
    /// A piece of the current entry's content.
    fn data(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
    /// The current entry's content is complete.
    fn end_entry(&mut self) -> Result<(), Self::Error>;
}

/// A malformed archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// A header block is not valid.
    #[error("invalid tar header at byte {offset}: {reason}")]
    BadHeader {
        /// Offset of the header in the archive.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry type a data directory never holds.
    #[error("tar entry '{path}' has unsupported type '{kind}'")]
    Unsupported {
        /// The entry.
        path: String,
        /// Its type flag.
        kind: char,
    },
    /// The stream ended before the archive did.
    #[error("tar archive ends early: {0}")]
    Truncated(String),
    /// Data after the end-of-archive marker that is not zero padding.
    #[error("unexpected data after the end of the tar archive")]
    TrailingData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a header block.
    Header,
    /// Passing `remaining` bytes of a member's body to `target`, then skipping `padding`
    /// bytes to the next block boundary.
    Body {
        remaining: u64,
        padding: usize,
        target: Target,
    },
    /// Saw one zero block.
    OneZeroBlock,
    /// Saw the end-of-archive marker; only zeros may follow.
    Done,
}

/// Where a member's body goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A file's content, to the sink.
    Content,
    /// An extended header (pax `x`/`g`, GNU `L`/`K`, by type flag), collected for the next
    /// entry.
    Extended(u8),
}

/// Extended-header values that apply to the next entry.
#[derive(Debug, Default)]
struct Pending {
    path: Option<String>,
    link: Option<String>,
    size: Option<u64>,
}

/// A streaming tar reader; see the module docs.
pub struct TarReader {
    state: State,
    header: Vec<u8>,
    extended: Vec<u8>,
    pending: Pending,
    offset: u64,
}

impl fmt::Debug for TarReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TarReader")
            .field("state", &self.state)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Default for TarReader {
    fn default() -> Self {
        Self::new()
    }
}

/// Longest extended header accepted (a path or link target), against hostile input.
const MAX_EXTENDED: u64 = 1 << 20;

impl TarReader {
    /// A reader at the start of an archive.
    pub fn new() -> TarReader {
        TarReader {
            state: State::Header,
            header: Vec::with_capacity(BLOCK),
            extended: Vec::new(),
            pending: Pending::default(),
            offset: 0,
        }
    }

    /// Whether the end-of-archive marker has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Processes the next chunk of the archive.
    pub fn feed<S: TarSink>(&mut self, mut chunk: &[u8], sink: &mut S) -> Result<(), S::Error> {
        while !chunk.is_empty() {
            match self.state {
                State::Header | State::OneZeroBlock => {
                    let take = (BLOCK - self.header.len()).min(chunk.len());
                    self.header.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.header.len() == BLOCK {
                        self.on_header_block(sink)?;
                        self.header.clear();
                        self.offset += BLOCK as u64;
                    }
                }
                State::Body {
                    remaining,
                    padding,
                    target,
                } => {
                    if remaining > 0 {
                        let take = usize::try_from(remaining)
                            .unwrap_or(usize::MAX)
                            .min(chunk.len());
                        match target {
                            Target::Content => sink.data(&chunk[..take])?,
                            Target::Extended(_) => self.extended.extend_from_slice(&chunk[..take]),
                        }
                        chunk = &chunk[take..];
                        self.offset += take as u64;
                        let remaining = remaining - take as u64;
                        self.state = State::Body {
                            remaining,
                            padding,
                            target,
                        };
                        if remaining == 0 {
                            self.end_body(target, sink)?;
                        }
                    } else {
                        let take = padding.min(chunk.len());
                        chunk = &chunk[take..];
                        self.offset += take as u64;
                        let padding = padding - take;
                        self.state = if padding == 0 {
                            State::Header
                        } else {
                            State::Body {
                                remaining: 0,
                                padding,
                                target,
                            }
                        };
                    }
                }
                State::Done => {
                    if chunk.iter().any(|&b| b != 0) {
                        return Err(TarError::TrailingData.into());
                    }
                    self.offset += chunk.len() as u64;
                    chunk = &[];
                }
            }
        }
        Ok(())
    }

    /// Checks that the archive ended properly after the last chunk.
    pub fn finish(&self) -> Result<(), TarError> {
        match self.state {
            State::Done => Ok(()),
            // Some writers end with a single zero block; PostgreSQL writes two.
            State::OneZeroBlock if self.header.is_empty() => Ok(()),
            _ => Err(TarError::Truncated(format!(
                "the stream stopped at byte {} inside the archive",
                self.offset
            ))),
        }
    }

    fn bad(&self, reason: impl Into<String>) -> TarError {
        TarError::BadHeader {
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn on_header_block<S: TarSink>(&mut self, sink: &mut S) -> Result<(), S::Error> {
        let block = &self.header;
        if block.iter().all(|&b| b == 0) {
            self.state = match self.state {
                State::OneZeroBlock => State::Done,
                _ => State::OneZeroBlock,
            };
            return Ok(());
        }
        if self.state == State::OneZeroBlock {
            return Err(self.bad("a zero block followed by a header").into());
        }
        check_checksum(block).map_err(|r| self.bad(r))?;
        let size = parse_number(&block[124..136]).map_err(|r| self.bad(format!("size: {r}")))?;
        let flag = block[156];
        let padding = padding_of(size);
        match flag {
            b'x' | b'L' | b'K' => {
                if size > MAX_EXTENDED {
                    return Err(self.bad(format!("extended header of {size} bytes")).into());
                }
                self.start_body(size, padding, Target::Extended(flag), sink)?;
                return Ok(());
            }
            // Global pax headers carry nothing PostgreSQL relies on.
            b'g' => {
                self.start_body(size, padding, Target::Extended(flag), sink)?;
                return Ok(());
            }
            _ => {}
        }
        let pending = std::mem::take(&mut self.pending);
        let path = match pending.path {
            Some(p) => p,
            None => header_path(block),
        };
        let path = path.trim_end_matches('/').to_owned();
        if path.is_empty() {
            return Err(self.bad("empty path").into());
        }
        let mode = u32::try_from(
            parse_number(&block[100..108]).map_err(|r| self.bad(format!("mode: {r}")))?,
        )
        .map_err(|_| self.bad("mode out of range"))?;
        let mtime = i64::try_from(
            parse_number(&block[136..148]).map_err(|r| self.bad(format!("mtime: {r}")))?,
        )
        .map_err(|_| self.bad("mtime out of range"))?;
        let size = pending.size.unwrap_or(size);
        let kind = match flag {
            b'0' | 0 | b'7' => EntryKind::File,
            b'5' => EntryKind::Directory,
            b'2' => EntryKind::Symlink {
                target: pending.link.unwrap_or_else(|| cstr(&block[157..257])),
            },
            other => {
                return Err(TarError::Unsupported {
                    path,
                    kind: char::from(other),
                }
                .into());
            }
        };
        let size = if kind == EntryKind::File { size } else { 0 };
        sink.entry(&Entry {
            path,
            kind,
            mode: mode & 0o7777,
            mtime,
            size,
        })?;
        self.start_body(size, padding_of(size), Target::Content, sink)
    }

    /// Starts a member's body; an empty body ends at once.
    fn start_body<S: TarSink>(
        &mut self,
        size: u64,
        padding: usize,
        target: Target,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        self.extended.clear();
        self.state = State::Body {
            remaining: size,
            padding,
            target,
        };
        if size == 0 {
            self.end_body(target, sink)?;
        }
        Ok(())
    }

    /// A member's body is complete.
    fn end_body<S: TarSink>(&mut self, target: Target, sink: &mut S) -> Result<(), S::Error> {
        match target {
            Target::Content => sink.end_entry(),
            Target::Extended(flag) => Ok(self.apply_extended(flag)?),
        }
    }

    fn apply_extended(&mut self, flag: u8) -> Result<(), TarError> {
        let data = std::mem::take(&mut self.extended);
        match flag {
            b'L' => self.pending.path = Some(cstr(&data)),
            b'K' => self.pending.link = Some(cstr(&data)),
            b'x' => self.parse_pax(&data)?,
            _ => {}
        }
        Ok(())
    }

    /// Pax records: `<length> <key>=<value>\n`, the length counting the whole record.
    fn parse_pax(&mut self, mut data: &[u8]) -> Result<(), TarError> {
        while !data.is_empty() {
            let space = data
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| self.bad("pax record without a length"))?;
            let len: usize = std::str::from_utf8(&data[..space])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.bad("pax record length is not a number"))?;
            if len <= space + 1 || len > data.len() {
                return Err(self.bad("pax record length out of range"));
            }
            let record = &data[space + 1..len];
            let record = record.strip_suffix(b"\n").unwrap_or(record);
            if let Some(eq) = record.iter().position(|&b| b == b'=') {
                let key = &record[..eq];
                let value = String::from_utf8_lossy(&record[eq + 1..]).into_owned();
                match key {
                    b"path" => self.pending.path = Some(value),
                    b"linkpath" => self.pending.link = Some(value),
                    b"size" => {
                        self.pending.size = Some(
                            value
                                .parse()
                                .map_err(|_| self.bad("pax size is not a number"))?,
                        )
                    }
                    _ => {}
                }
            }
            data = &data[len..];
        }
        Ok(())
    }
}

fn padding_of(size: u64) -> usize {
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 { 0 } else { BLOCK - rem }
}

/// A NUL-terminated (or full-width) field as text.
fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The entry path: ustar's `prefix` + `/` + `name` when a prefix is present.
fn header_path(block: &[u8]) -> String {
    let name = cstr(&block[0..100]);
    let is_ustar = &block[257..262] == b"ustar";
    let prefix = if is_ustar {
        cstr(&block[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// A numeric field: octal text (space or NUL padded), or base-256 when the high bit of the
/// first byte is set (GNU, for sizes of 8 GiB and more).
fn parse_number(field: &[u8]) -> Result<u64, String> {
    if let Some((&first, rest)) = field.split_first()
        && first & 0x80 != 0
    {
        let mut value: u64 = u64::from(first & 0x7f);
        for &b in rest {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or("base-256 number too large")?;
        }
        return Ok(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|&b| b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(&text).map_err(|_| "not text".to_owned())?;
    u64::from_str_radix(text, 8).map_err(|_| format!("'{text}' is not an octal number"))
}

fn check_checksum(block: &[u8]) -> Result<(), String> {
    let stored = parse_number(&block[148..156]).map_err(|r| format!("checksum: {r}"))?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum == stored {
        Ok(())
    } else {
        Err(format!(
            "header checksum {stored} does not match the computed {sum}"
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a ustar header block.
    pub(crate) fn header(path: &str, flag: u8, size: u64, link: &str) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..path.len()].copy_from_slice(path.as_bytes());
        h[100..107].copy_from_slice(b"0000600");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"14707013200");
        h[156] = flag;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    /// A whole archive of (path, flag, content, link) members.
    pub(crate) fn archive(members: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, flag, content, link) in members {
            out.extend(header(path, *flag, content.len() as u64, link));
            out.extend_from_slice(content);
            out.resize(out.len() + padding_of(content.len() as u64), 0);
        }
        out.resize(out.len() + 2 * BLOCK, 0);
        out
    }

    #[derive(Debug, Default)]
    struct Collect {
        events: Vec<(Entry, Vec<u8>)>,
        open: bool,
    }

    impl TarSink for Collect {
        type Error = TarError;
        fn entry(&mut self, entry: &Entry) -> Result<(), TarError> {
            assert!(!self.open, "entry inside an entry");
            self.open = true;
            self.events.push((entry.clone(), Vec::new()));
            Ok(())
        }
        fn data(&mut self, bytes: &[u8]) -> Result<(), TarError> {
            assert!(self.open);
            self.events.last_mut().unwrap().1.extend_from_slice(bytes);
            Ok(())
        }
        fn end_entry(&mut self) -> Result<(), TarError> {
            assert!(self.open);
            self.open = false;
            Ok(())
        }
    }

    fn read_in_chunks(data: &[u8], chunk: usize) -> Result<Collect, TarError> {
        let mut reader = TarReader::new();
        let mut sink = Collect::default();
        for piece in data.chunks(chunk) {
            reader.feed(piece, &mut sink)?;
        }
        reader.finish()?;
        Ok(sink)
    }

    #[test]
    fn reads_files_directories_and_links_at_any_chunking() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let data = archive(&[
            ("base", b'5', b"", ""),
            ("PG_VERSION", b'0', b"15\n", ""),
            ("base/1/1259", b'0', &big, ""),
            ("pg_tblspc/16385", b'2', b"", "/srv/ts1"),
            ("empty", b'0', b"", ""),
        ]);
        for chunk in [1, 7, 511, 512, 513, 4096, 1 << 20] {
            let got = read_in_chunks(&data, chunk).unwrap();
            let summary: Vec<_> = got
                .events
                .iter()
                .map(|(e, d)| (e.path.as_str(), e.kind.clone(), d.len()))
                .collect();
            assert_eq!(
                summary,
                vec![
                    ("base", EntryKind::Directory, 0),
                    ("PG_VERSION", EntryKind::File, 3),
                    ("base/1/1259", EntryKind::File, 70_000),
                    (
                        "pg_tblspc/16385",
                        EntryKind::Symlink {
                            target: "/srv/ts1".into()
                        },
                        0
                    ),
                    ("empty", EntryKind::File, 0),
                ],
                "chunk {chunk}"
            );
            assert_eq!(got.events[2].1, big, "chunk {chunk}");
            assert_eq!(got.events[1].0.mode, 0o600);
            assert_eq!(got.events[1].0.mtime, 0o14707013200);
        }
    }

    #[test]
    fn long_names_through_pax_and_gnu_headers() {
        let long = format!("base/{}/file", "d".repeat(150));
        let pax_record = {
            let body = format!("path={long}\n");
            let mut len = body.len() + 2;
            loop {
                let rec = format!("{len} {body}");
                if rec.len() == len {
                    break rec;
                }
                len = rec.len();
            }
        };
        let mut data = archive(&[
            ("pax", b'x', pax_record.as_bytes(), ""),
            ("short", b'0', b"abc", ""),
        ]);
        data.truncate(data.len() - 2 * BLOCK);
        data.extend(archive(&[
            ("././@LongLink", b'L', long.as_bytes(), ""),
            ("trunc", b'0', b"xy", ""),
        ]));
        let got = read_in_chunks(&data, 100).unwrap();
        assert_eq!(got.events.len(), 2);
        assert_eq!(got.events[0].0.path, long);
        assert_eq!(got.events[0].1, b"abc");
        assert_eq!(got.events[1].0.path, long);
        assert_eq!(got.events[1].1, b"xy");
    }

    #[test]
    fn damage_is_reported_not_panicked_on() {
        let data = archive(&[("a", b'0', b"hello", ""), ("b", b'0', b"world", "")]);
        // Every truncation is either fine (only trailing zeros cut) or an error.
        for cut in 0..data.len() {
            let r = read_in_chunks(&data[..cut], 64);
            if cut < 3 * BLOCK + 512 {
                assert!(r.is_err(), "cut {cut}");
            }
        }
        // Every single-byte change of a header is caught by the checksum or parses alike.
        for at in 0..BLOCK {
            let mut bad = data.clone();
            bad[at] ^= 0x55;
            let _ = read_in_chunks(&bad, 64);
        }
        let mut bad = data.clone();
        bad[0] ^= 1;
        assert!(matches!(
            read_in_chunks(&bad, 64),
            Err(TarError::BadHeader { .. })
        ));
        let hard_link = archive(&[("x", b'1', b"", "y")]);
        assert!(matches!(
            read_in_chunks(&hard_link, 64),
            Err(TarError::Unsupported { kind: '1', .. })
        ));
        let mut trailing = data.clone();
        trailing.push(1);
        assert_eq!(
            read_in_chunks(&trailing, 64).unwrap_err(),
            TarError::TrailingData
        );
    }

    #[test]
    fn base_256_sizes() {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[4..].copy_from_slice(&(9u64 << 30).to_be_bytes());
        assert_eq!(parse_number(&field).unwrap(), 9 << 30);
        assert_eq!(parse_number(b"00000001750\0").unwrap(), 0o1750);
        assert!(parse_number(b"0000009\0").is_err());
    }
}
