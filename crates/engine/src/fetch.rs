//! `fetch`: restore one WAL file. PostgreSQL's `restore_command`.

use std::path::Path;

use bytes::Bytes;
use tracing::debug;
use walferry_codec as codec;
use walferry_manifest::{IdentityMismatch, RepoDescriptor, io as repo_io, layout};
use walferry_store::{ArchiveStore, CancellationToken, Store};
use walferry_wal::{ExpectedSegment, SegmentHeader, WalFileName};

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
/// The file is downloaded, decoded and verified (frame checksum; for segments also the size and
/// the first page header against the repository descriptor) in memory, then written to a
/// temporary file beside `dest` and renamed over it: `dest` never holds a partial or
/// unverified file. `NotFound` is answered only when the repository is intact and simply does
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

    let limit = match name {
        WalFileName::Segment(_) | WalFileName::Partial(_) => descriptor.wal_segment_size.bytes(),
        _ => MAX_OBJECT_BYTES,
    };
    let k = key.to_string();
    let body: Bytes = object.body;
    let data = blocking(move || {
        codec::decode(&body, limit).map_err(|source| Error::Corrupt { key: k, source })
    })
    .await?;

    check_segment(name, &data, data.len() as u64, &descriptor, &repo)?;

    let bytes = data.len() as u64;
    let dest = dest.to_owned();
    blocking(move || local::write_atomically(&dest, &data)).await?;
    Ok(FetchOutcome::Restored { bytes })
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
