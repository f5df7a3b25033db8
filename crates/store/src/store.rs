//! [`Store`]: the backend chosen by configuration, with timeouts, retries and a concurrency
//! limit applied once for all of them.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{Location, StoreConfig};
use crate::error::{Error, Result};
use crate::retry::{RetryConfig, retry};
use crate::{
    ArchiveStore, GetResult, LocalStore, MemoryStore, ObjectKey, ObjectMeta, PutMode, S3Store,
};

#[derive(Debug, Clone)]
enum Backend {
    Memory(MemoryStore),
    Local(LocalStore),
    S3(Box<S3Store>),
}

/// A repository's storage: one of the backends, behind the policy every backend shares.
///
/// Cloning is cheap and clones share the concurrency limit.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    retry: RetryConfig,
    limit: Arc<Semaphore>,
    description: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.description)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store `config` describes. Sends no request.
    pub async fn open(config: &StoreConfig) -> Result<Store> {
        let backend = match &config.location {
            Location::Local(path) => Backend::Local(LocalStore::new(path.clone())?),
            Location::S3 { bucket, prefix } => {
                Backend::S3(Box::new(S3Store::new(bucket, prefix, config).await?))
            }
        };
        Ok(Store {
            backend,
            retry: config.retry.clone(),
            limit: Arc::new(Semaphore::new(config.concurrency.get())),
            description: config.location.to_string(),
        })
    }

    /// An in-memory store, for tests.
    pub fn memory(memory: MemoryStore, retry: RetryConfig) -> Store {
        Store {
            backend: Backend::Memory(memory),
            retry,
            limit: Arc::new(Semaphore::new(StoreConfig::DEFAULT_CONCURRENCY.get())),
            description: "memory://".to_owned(),
        }
    }

    /// Where the store is, as a URL, for messages.
    pub fn location(&self) -> &str {
        &self.description
    }

    /// The retry policy in force.
    pub fn retry_config(&self) -> &RetryConfig {
        &self.retry
    }

    async fn permit(&self, cancel: &CancellationToken) -> Result<tokio::sync::SemaphorePermit<'_>> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::Cancelled),
            permit = self.limit.acquire() => permit.map_err(|_| Error::Cancelled),
        }
    }
}

/// Runs the same call on whichever backend this is.
macro_rules! dispatch {
    ($self:ident, $b:ident => $call:expr) => {
        match &$self.backend {
            Backend::Memory($b) => $call.await,
            Backend::Local($b) => $call.await,
            Backend::S3($b) => $call.await,
        }
    };
}

impl ArchiveStore for Store {
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        mode: PutMode,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let _permit = self.permit(cancel).await?;
        retry(&self.retry, "put", key.as_str(), cancel, || {
            let body = body.clone();
            async move { dispatch!(self, b => b.put(key, body, mode, cancel)) }
        })
        .await
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
        cancel: &CancellationToken,
    ) -> Result<GetResult> {
        let _permit = self.permit(cancel).await?;
        retry(&self.retry, "get", key.as_str(), cancel, || {
            let range = range.clone();
            async move { dispatch!(self, b => b.get(key, range, cancel)) }
        })
        .await
    }

    async fn head(&self, key: &ObjectKey, cancel: &CancellationToken) -> Result<ObjectMeta> {
        let _permit = self.permit(cancel).await?;
        retry(&self.retry, "head", key.as_str(), cancel, || async move {
            dispatch!(self, b => b.head(key, cancel))
        })
        .await
    }

    async fn list(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<ObjectMeta>> {
        let _permit = self.permit(cancel).await?;
        retry(&self.retry, "list", prefix, cancel, || async move {
            dispatch!(self, b => b.list(prefix, cancel))
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey, cancel: &CancellationToken) -> Result<()> {
        let _permit = self.permit(cancel).await?;
        retry(&self.retry, "delete", key.as_str(), cancel, || async move {
            dispatch!(self, b => b.delete(key, cancel))
        })
        .await
    }
}
