//! `fetch`: restore one WAL file. PostgreSQL's `restore_command`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use bytes::Bytes;
use tracing::debug;
use walferry_codec::{self as codec, Decoder};
use walferry_manifest::{IdentityMismatch, RepoDescriptor, io as repo_io, layout};
use walferry_store::{ArchiveStore, CancellationToken, Store};
use walferry_wal::{ExpectedSegment, LONG_HEADER_LEN, SegmentHeader, WalFileName};

use crate::error::{Error, Result};
use crate::push::manifest_error;
use crate::{MAX_OBJECT_BYTES, blocking, local, store_error};

/// What a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The complete, verified file is at the destination.
    Restored {
        /// Its size.
        bytes: u64,
    },
    /// The archive does not hold this file.
    NotFound,
}

/// Fetches WAL file `name` into `dest`.
///
/// The stored object is downloaded, then decoded and verified (frame checksum; for segments
/// also the size and the first page header against the repository descriptor) as a stream
/// into a temporary file beside `dest`, which is renamed over `dest` only once all of it is
/// verified: `dest` never holds a partial or unverified file. `NotFound` is answered only when the repository is intact and simply does
/// not have the file; a repository without a descriptor is an error, so that a mistyped
/// repository cannot end a recovery early.
///
/// `cluster_system_identifier` is that of the cluster being recovered (from its
/// `pg_control`), when known: a repository of another cluster is refused before anything is
/// handed over, even for file names both clusters have.
pub async fn fetch(
    store: &Store,
    name: &WalFileName,
    dest: &Path,
    cluster_system_identifier: Option<u64>,
    cancel: &CancellationToken,
) -> Result<FetchOutcome> {
    let repo = store.location().to_owned();
    let key = layout::wal_key(name);
    let (descriptor, object) = tokio::join!(
        repo_io::load_descriptor(store, cancel),
        store.get(&key, None, cancel)
    );
    let descriptor = descriptor
        .map_err(|e| manifest_error(e, &repo))?
        .ok_or_else(|| Error::NoDescriptor { repo: repo.clone() })?;
    if let Some(found) = cluster_system_identifier
        && found != descriptor.system_identifier
    {
        return Err(Error::ForeignRepository {
            repo,
            mismatch: IdentityMismatch::SystemIdentifier {
                expected: descriptor.system_identifier,
                found,
            },
        });
    }
    let object = match object {
        Ok(o) => o,
        Err(e) if e.is_not_found() => {
            debug!(file = %name, "not in the archive");
            return Ok(FetchOutcome::NotFound);
        }
        Err(source) => return Err(store_error("download", &key, store, source)),
    };

    let k = key.to_string();
    let body: Bytes = object.body;
    let name = *name;
    let dest = dest.to_owned();
    let bytes = blocking(move || {
        local::write_atomically_with(&dest, |file, path| {
            decode_into(&name, &k, vec![body], &descriptor, &repo, file, path)
        })
    })
    .await?;
    Ok(FetchOutcome::Restored { bytes })
}

/// Decodes the stored object `parts` (consecutive pieces of it) of WAL file `name` into
/// `file` as a stream, verifying it as it goes (frame checksum and length; a segment's size
/// and first page header against `descriptor`); returns the original size. `key` and `path`
/// name the object and the file in errors. The file is not synced.
pub(crate) fn decode_into(
    name: &WalFileName,
    key: &str,
    parts: Vec<Bytes>,
    descriptor: &RepoDescriptor,
    repo: &str,
    file: &mut File,
    path: &Path,
) -> Result<u64> {
    let limit = match name {
        WalFileName::Segment(_) | WalFileName::Partial(_) => descriptor.wal_segment_size.bytes(),
        _ => MAX_OBJECT_BYTES,
    };
    let corrupt = |source| Error::Corrupt {
        key: key.to_owned(),
        source,
    };
    let mut decoder = Decoder::with_limit(Chunks::new(parts), limit).map_err(corrupt)?;
    let mut buf = vec![0u8; DECODE_BUFFER];
    let mut first = Vec::with_capacity(LONG_HEADER_LEN);
    let mut len = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(codec::Error::from(e))),
        };
        if first.len() < LONG_HEADER_LEN {
            let want = (LONG_HEADER_LEN - first.len()).min(n);
            first.extend_from_slice(&buf[..want]);
        }
        len += n as u64;
        file.write_all(&buf[..n]).map_err(|source| Error::LocalIo {
            action: "write",
            path: path.to_owned(),
            source,
        })?;
    }
    decoder.finish().map_err(corrupt)?;
    check_segment(name, &first, len, descriptor, repo)?;
    Ok(len)
}

/// The size of the buffer [`decode_into`] writes from.
const DECODE_BUFFER: usize = 256 << 10;

/// Reads a sequence of byte buffers as one stream.
struct Chunks {
    parts: VecDeque<Bytes>,
}

impl Chunks {
    fn new(parts: Vec<Bytes>) -> Chunks {
        Chunks {
            parts: parts.into(),
        }
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(part) = self.parts.front_mut() {
            if part.is_empty() {
                self.parts.pop_front();
                continue;
            }
            let n = part.len().min(buf.len());
            buf[..n].copy_from_slice(&part[..n]);
            bytes::Buf::advance(part, n);
            return Ok(n);
        }
        Ok(0)
    }
}

/// Checks a decoded WAL file against the repository: a segment (or partial segment) must have
/// the repository's segment size and a first page header of this cluster for its name.
/// `first` is the start of the content (at least the long page header when `len` allows),
/// `len` its whole length. Other WAL files pass.
pub(crate) fn check_segment(
    name: &WalFileName,
    first: &[u8],
    len: u64,
    descriptor: &RepoDescriptor,
    repo: &str,
) -> Result<()> {
    let (WalFileName::Segment(seg) | WalFileName::Partial(seg)) = name else {
        return Ok(());
    };
    let foreign = |reason: String| Error::ForeignSegment {
        name: name.to_string(),
        repo: repo.to_owned(),
        reason,
    };
    if len != descriptor.wal_segment_size.bytes() {
        return Err(foreign(format!(
            "it is {len} bytes, the repository's segments are {} bytes",
            descriptor.wal_segment_size.bytes()
        )));
    }
    let header = SegmentHeader::parse(first).map_err(|e| foreign(e.to_string()))?;
    header
        .check(&ExpectedSegment {
            name: *seg,
            system_identifier: Some(descriptor.system_identifier),
            segment_size: Some(descriptor.wal_segment_size),
            pg_version: Some(descriptor.pg_version),
        })
        .map_err(|e| foreign(e.to_string()))
}
