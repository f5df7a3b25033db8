//! Reading and writing repository metadata through a store.
//!
//! - [`load_descriptor`], [`create_descriptor`]: the repository descriptor.
//! - [`save_backup_manifest`], [`load_backup_manifest`]: backup manifests; saving one is the
//!   commit point of a backup.
//! - [`load_catalog`]: everything restore planning needs, read with one listing of `wal/` and
//!   one of `backups/`, as a [`LoadedCatalog`].
//! - [`WalFollower`]: the WAL a prefetch fetches, from a segment along a timeline's path, one
//!   `wal/<TLI><LOG>/` listing at a time.

use bytes::Bytes;
use walferry_store::{ArchiveStore, CancellationToken, PutMode};

use crate::backup::ManifestError;
use crate::descriptor::{DescriptorError, RepoDescriptor};
use crate::layout;

mod backups;
mod catalog;
mod follow;

pub use backups::{load_backup_manifest, save_backup_manifest};
pub use catalog::{LoadedCatalog, MAX_HISTORY_BYTES, load_catalog};
pub use follow::WalFollower;

/// Errors reading or writing repository metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] walferry_store::Error),
    /// The storage accepted a second create-only put of the same key: it would overwrite
    /// archived WAL instead of refusing.
    #[error(
        "the storage does not honour create-only writes (a second create of '{key}' succeeded); HINT: use an S3 service or server that supports conditional writes (If-None-Match: *)"
    )]
    CreateNotHonoured {
        /// The key written twice.
        key: String,
    },
    /// The stored descriptor is unreadable.
    #[error("repository descriptor '{key}' is unreadable: {source}")]
    Descriptor {
        /// Its key.
        key: String,
        /// Why.
        source: DescriptorError,
    },
    /// The repository has no descriptor: nothing was ever archived to it.
    #[error(
        "repository descriptor '{key}' does not exist; HINT: check the repository location, or archive WAL to it first"
    )]
    NoDescriptor {
        /// The descriptor's key.
        key: String,
    },
    /// A backup label cannot name a backup.
    #[error("backup label '{label}' {reason}")]
    InvalidLabel {
        /// The label.
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A backup manifest already exists: the backup was committed before.
    #[error("backup manifest '{key}' already exists; HINT: every backup needs its own label")]
    BackupExists {
        /// The manifest's key.
        key: String,
    },
    /// A backup manifest is unreadable or inconsistent (also refused before saving).
    #[error("backup manifest '{key}' is unreadable: {source}")]
    Manifest {
        /// The manifest's key.
        key: String,
        /// Why.
        source: ManifestError,
    },
    /// A backup manifest names another backup than the one its key belongs to.
    #[error("backup manifest '{key}' belongs to backup '{found}'")]
    ManifestLabel {
        /// The manifest's key.
        key: String,
        /// The label inside the manifest.
        found: String,
    },
    /// A timeline history object is not a valid walferry frame.
    #[error("timeline history '{key}' is corrupt: {source}")]
    HistoryCorrupt {
        /// The history object's key.
        key: String,
        /// Why.
        source: walferry_codec::Error,
    },
    /// A timeline history file's text is not a valid history.
    #[error("timeline history '{key}' is not valid: {reason}")]
    HistoryInvalid {
        /// The history object's key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Whether the object asked for does not exist, such as the manifest of a backup that was
    /// never committed. Not for a missing descriptor, which is [`Error::NoDescriptor`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_not_found())
    }

    /// Whether the operation stopped because its cancellation token fired.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_cancelled())
    }
}

/// Loads the descriptor; `None` when the repository has none yet.
pub async fn load_descriptor<S: ArchiveStore>(
    store: &S,
    cancel: &CancellationToken,
) -> Result<Option<RepoDescriptor>, Error> {
    let key = layout::descriptor_key();
    match store.get(&key, None, cancel).await {
        Ok(got) => RepoDescriptor::from_json(&got.body)
            .map(Some)
            .map_err(|source| Error::Descriptor {
                key: key.to_string(),
                source,
            }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes `descriptor` unless the repository already has one, and returns the one in force:
/// `descriptor` itself, or the existing one when another writer got there first.
///
/// When it creates the descriptor, it also checks that the storage refuses a second
/// create-only put of it ([`Error::CreateNotHonoured`] otherwise): an S3-compatible server that
/// ignores `If-None-Match: *` would silently overwrite archived WAL.
pub async fn create_descriptor<S: ArchiveStore>(
    store: &S,
    descriptor: &RepoDescriptor,
    cancel: &CancellationToken,
) -> Result<RepoDescriptor, Error> {
    let key = layout::descriptor_key();
    let body = Bytes::from(descriptor.to_json());
    let create = || store.put(&key, body.clone(), PutMode::Create, cancel);
    match create().await {
        Ok(()) => {
            // Everything walferry archives relies on create-only puts refusing to overwrite.
            // Prove it once, when the repository is created: a second create must be refused.
            match create().await {
                Err(e) if e.is_already_exists() => Ok(descriptor.clone()),
                Ok(()) => Err(Error::CreateNotHonoured {
                    key: key.to_string(),
                }),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) if e.is_already_exists() => match load_descriptor(store, cancel).await? {
            Some(existing) => Ok(existing),
            // Created and removed again between our two requests: someone is deleting the
            // repository under us. Report what the store said.
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use walferry_store::{GetResult, MemoryStore, ObjectKey, ObjectMeta};

    use super::*;
    use crate::descriptor::ClusterIdentity;

    /// A store that ignores create-only mode, like an S3 server without conditional writes.
    struct Overwriting(MemoryStore);

    impl ArchiveStore for Overwriting {
        async fn put(
            &self,
            key: &ObjectKey,
            body: Bytes,
            _mode: PutMode,
            cancel: &CancellationToken,
        ) -> walferry_store::Result<()> {
            self.0.put(key, body, PutMode::Overwrite, cancel).await
        }
        async fn get(
            &self,
            key: &ObjectKey,
            range: Option<Range<u64>>,
            cancel: &CancellationToken,
        ) -> walferry_store::Result<GetResult> {
            self.0.get(key, range, cancel).await
        }
        async fn head(
            &self,
            key: &ObjectKey,
            cancel: &CancellationToken,
        ) -> walferry_store::Result<ObjectMeta> {
            self.0.head(key, cancel).await
        }
        async fn list(
            &self,
            prefix: &str,
            cancel: &CancellationToken,
        ) -> walferry_store::Result<Vec<ObjectMeta>> {
            self.0.list(prefix, cancel).await
        }
        async fn delete(
            &self,
            key: &ObjectKey,
            cancel: &CancellationToken,
        ) -> walferry_store::Result<()> {
            self.0.delete(key, cancel).await
        }
    }

    fn descriptor() -> RepoDescriptor {
        RepoDescriptor::new(ClusterIdentity {
            system_identifier: 42,
            pg_version: walferry_wal::PgVersion::from_major(15).unwrap(),
            wal_segment_size: walferry_wal::WalSegSize::DEFAULT,
        })
    }

    #[tokio::test]
    async fn creates_once_and_returns_the_existing_one() {
        let store = MemoryStore::new();
        let cancel = CancellationToken::new();
        assert_eq!(load_descriptor(&store, &cancel).await.unwrap(), None);
        let d = descriptor();
        assert_eq!(create_descriptor(&store, &d, &cancel).await.unwrap(), d);
        let mut other = descriptor();
        other.system_identifier = 7;
        assert_eq!(create_descriptor(&store, &other, &cancel).await.unwrap(), d);
        assert_eq!(load_descriptor(&store, &cancel).await.unwrap(), Some(d));
    }

    #[tokio::test]
    async fn storage_that_overwrites_is_refused() {
        let store = Overwriting(MemoryStore::new());
        let err = create_descriptor(&store, &descriptor(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CreateNotHonoured { .. }), "{err:?}");
        assert!(err.to_string().contains("If-None-Match"), "{err}");
    }
}
