//! `push`: archive one WAL file. PostgreSQL's `archive_command`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::{info, warn};
use walferry_codec as codec;
use walferry_manifest::{ClusterIdentity, RepoDescriptor, io as repo_io, layout};
use walferry_store::{ArchiveStore, CancellationToken, ObjectKey, PutMode, Store};
use walferry_wal::{ExpectedSegment, SegmentHeader, SegmentName, TimelineHistory, WalFileName};

use crate::error::{Error, Result};
use crate::{blocking, store_error};

/// The zstd level WAL is compressed at unless told otherwise. Level 3 is zstd's own default:
/// on pgbench WAL it compresses ~10% smaller than level 1 for ~1.5x the CPU, and decompresses
/// at the same speed (`../benches/README.md` has the figures).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The zstd compression level.
    pub compression_level: i32,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            compression_level: DEFAULT_COMPRESSION_LEVEL,
        }
    }
}

/// What a successful push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file is now durable in the repository.
    Stored {
        /// The WAL file name.
        name: String,
        /// Its size.
        original_bytes: u64,
        /// The stored object's size.
        stored_bytes: u64,
    },
    /// The repository already held this file with identical content.
    AlreadyArchived {
        /// The WAL file name.
        name: String,
    },
}

/// Archives the WAL file at `path`: checks it, checks (or creates) the repository descriptor,
/// compresses it and stores it with a create-only put. Returns only once the object is durable,
/// or when the repository already holds identical content under the same name.
///
/// A different object under the same name is [`Error::Conflict`] and is never replaced;
/// history files are never replaced either.
pub async fn push(
    store: &Store,
    path: &Path,
    options: &PushOptions,
    cancel: &CancellationToken,
) -> Result<PushOutcome> {
    let name = wal_name_of(path)?;
    let name_text = name.to_string();
    let data = tokio::fs::read(path)
        .await
        .map_err(|source| Error::LocalIo {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
    let data = Bytes::from(data);

    let identity = identify(&name, &data, path).await?;
    let repo = store.location().to_owned();
    let Some(descriptor) = load_or_create_descriptor(store, identity.as_ref(), cancel).await?
    else {
        return Err(Error::NoIdentity {
            repo,
            name: name_text,
        });
    };
    if let Some(identity) = &identity {
        descriptor
            .check(identity)
            .map_err(|mismatch| Error::WrongCluster {
                name: name_text.clone(),
                repo: repo.clone(),
                mismatch,
            })?;
    }

    let level = options.compression_level;
    let encoded = {
        let data = data.clone();
        let n = name_text.clone();
        blocking(move || {
            codec::encode(&data, level).map_err(|source| Error::Encode { name: n, source })
        })
        .await?
    };
    let key = layout::wal_key(&name);
    let stored_bytes = encoded.len() as u64;
    match store
        .put(&key, Bytes::from(encoded), PutMode::Create, cancel)
        .await
    {
        Ok(()) => Ok(PushOutcome::Stored {
            name: name_text,
            original_bytes: data.len() as u64,
            stored_bytes,
        }),
        Err(e) if e.is_already_exists() => {
            compare_existing(store, &key, &name_text, data, cancel).await
        }
        Err(source) => Err(store_error("upload", &key, store, source)),
    }
}

/// The archive already has an object under this name: identical content is success, anything
/// else is a conflict. One download decides it.
async fn compare_existing(
    store: &Store,
    key: &ObjectKey,
    name: &str,
    data: Bytes,
    cancel: &CancellationToken,
) -> Result<PushOutcome> {
    let existing = store
        .get(key, None, cancel)
        .await
        .map_err(|source| store_error("download existing", key, store, source))?;
    let k = key.to_string();
    let limit = data.len() as u64;
    let decoded = blocking(move || match codec::decode(&existing.body, limit) {
        Ok(bytes) => Ok(Some(bytes)),
        // Longer than ours: not the same content, whatever else it is.
        Err(codec::Error::TooLarge { .. }) => Ok(None),
        Err(source) => Err(Error::Corrupt { key: k, source }),
    })
    .await?;
    if decoded.as_deref() == Some(&data[..]) {
        warn!(
            "WAL file '{name}' already exists in the archive with the same content; HINT: this is expected when PostgreSQL archives a file again after a crash"
        );
        Ok(PushOutcome::AlreadyArchived {
            name: name.to_owned(),
        })
    } else {
        Err(Error::Conflict {
            name: name.to_owned(),
            repo: store.location().to_owned(),
        })
    }
}

fn wal_name_of(path: &Path) -> Result<WalFileName> {
    let not_wal = |reason: String| Error::NotAWalPath {
        path: path.to_owned(),
        reason,
    };
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| not_wal("the path has no file name".into()))?;
    WalFileName::parse(file_name).map_err(|e| not_wal(e.to_string()))
}

/// Which cluster a file belongs to, when that can be known: segments carry it in their first
/// page header; for history and backup history files it is read from a segment beside them in
/// `pg_wal`. Also validates the file's own content.
async fn identify(
    name: &WalFileName,
    data: &Bytes,
    path: &Path,
) -> Result<Option<ClusterIdentity>> {
    let invalid = |reason: String| Error::InvalidWal {
        name: name.to_string(),
        reason,
    };
    match name {
        WalFileName::Segment(seg) | WalFileName::Partial(seg) => {
            let header = SegmentHeader::parse(data).map_err(|e| invalid(e.to_string()))?;
            header
                .check(&ExpectedSegment {
                    name: *seg,
                    system_identifier: None,
                    segment_size: None,
                    pg_version: None,
                })
                .map_err(|e| invalid(e.to_string()))?;
            if data.len() as u64 != header.segment_size.bytes() {
                return Err(invalid(format!(
                    "the file is {} bytes but its header says segments are {} bytes",
                    data.len(),
                    header.segment_size.bytes()
                )));
            }
            Ok(Some(ClusterIdentity {
                system_identifier: header.system_identifier,
                pg_version: header.pg_version,
                wal_segment_size: header.segment_size,
            }))
        }
        WalFileName::History(tli) => {
            let text = std::str::from_utf8(data)
                .map_err(|_| invalid("a timeline history file must be text".into()))?;
            TimelineHistory::parse(*tli, text).map_err(|e| invalid(e.to_string()))?;
            Ok(identity_from_pg_wal(path).await)
        }
        WalFileName::BackupHistory { .. } => Ok(identity_from_pg_wal(path).await),
    }
}

/// Reads the identity from the newest segment in the directory holding `path` (PostgreSQL's
/// `pg_wal`). `None` when there is no readable segment there.
async fn identity_from_pg_wal(path: &Path) -> Option<ClusterIdentity> {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    blocking(move || Ok::<_, Error>(newest_segment_identity(&dir)))
        .await
        .ok()
        .flatten()
}

fn newest_segment_identity(dir: &Path) -> Option<ClusterIdentity> {
    use std::io::Read;
    let mut segments: Vec<(SegmentName, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            match WalFileName::parse(&name).ok()? {
                WalFileName::Segment(seg) => Some((seg, e.path())),
                _ => None,
            }
        })
        .collect();
    segments.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (_, path) in segments.into_iter().take(4) {
        let mut first = vec![0u8; walferry_wal::LONG_HEADER_LEN];
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        if file.read_exact(&mut first).is_err() {
            continue;
        }
        if let Ok(header) = SegmentHeader::parse(&first) {
            return Some(ClusterIdentity {
                system_identifier: header.system_identifier,
                pg_version: header.pg_version,
                wal_segment_size: header.segment_size,
            });
        }
    }
    None
}

/// The repository's descriptor, created from `identity` with a create-only put when the
/// repository has none yet (the first push or backup). `None` when there is none and no
/// identity to create it from.
pub(crate) async fn load_or_create_descriptor(
    store: &Store,
    identity: Option<&ClusterIdentity>,
    cancel: &CancellationToken,
) -> Result<Option<RepoDescriptor>> {
    let repo = store.location();
    if let Some(d) = repo_io::load_descriptor(store, cancel)
        .await
        .map_err(|e| manifest_error(e, repo))?
    {
        return Ok(Some(d));
    }
    let Some(identity) = identity else {
        return Ok(None);
    };
    let created = repo_io::create_descriptor(store, &RepoDescriptor::new(*identity), cancel)
        .await
        .map_err(|e| match manifest_error(e, repo) {
            Error::Store {
                key, repo, source, ..
            } => Error::Store {
                action: "create descriptor",
                key,
                repo,
                source,
            },
            other => other,
        })?;
    info!(
        repo = %repo,
        system_identifier = created.system_identifier,
        "created repository descriptor"
    );
    Ok(Some(created))
}

/// Maps a failure to load a repository's catalog ([`repo_io::load_catalog`]).
pub(crate) fn catalog_error(e: repo_io::Error, repo: &str) -> Error {
    match e {
        repo_io::Error::NoDescriptor { .. } => Error::NoDescriptor {
            repo: repo.to_owned(),
        },
        repo_io::Error::HistoryCorrupt { key, source } => Error::Corrupt { key, source },
        e @ (repo_io::Error::HistoryInvalid { .. }
        | repo_io::Error::Manifest { .. }
        | repo_io::Error::ManifestLabel { .. }) => Error::BadCatalog {
            repo: repo.to_owned(),
            message: e.to_string(),
        },
        other => manifest_error(other, repo),
    }
}

pub(crate) fn manifest_error(e: repo_io::Error, repo: &str) -> Error {
    match e {
        repo_io::Error::Store(source) => Error::Store {
            action: "read descriptor",
            key: layout::descriptor_key().to_string(),
            repo: repo.to_owned(),
            source: Box::new(source),
        },
        repo_io::Error::Descriptor { source, .. } => Error::BadDescriptor {
            repo: repo.to_owned(),
            source,
        },
        other => Error::Store {
            action: "read descriptor",
            key: layout::descriptor_key().to_string(),
            repo: repo.to_owned(),
            source: Box::new(walferry_store::Error::InvalidConfig {
                message: other.to_string(),
            }),
        },
    }
}
