//! Reading and writing repository metadata through a store.

use bytes::Bytes;
use walferry_store::{ArchiveStore, CancellationToken, PutMode};

use crate::descriptor::{DescriptorError, RepoDescriptor};
use crate::layout;

/// Errors loading or creating the descriptor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] walferry_store::Error),
    /// The stored descriptor is unreadable.
    #[error("repository descriptor '{key}' is unreadable: {source}")]
    Descriptor {
        /// Its key.
        key: String,
        /// Why.
        source: DescriptorError,
    },
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
pub async fn create_descriptor<S: ArchiveStore>(
    store: &S,
    descriptor: &RepoDescriptor,
    cancel: &CancellationToken,
) -> Result<RepoDescriptor, Error> {
    let key = layout::descriptor_key();
    match store
        .put(
            &key,
            Bytes::from(descriptor.to_json()),
            PutMode::Create,
            cancel,
        )
        .await
    {
        Ok(()) => Ok(descriptor.clone()),
        Err(e) if e.is_already_exists() => match load_descriptor(store, cancel).await? {
            Some(existing) => Ok(existing),
            // Created and removed again between our two requests: someone is deleting the
            // repository under us. Report what the store said.
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}
