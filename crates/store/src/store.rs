//! [`Store`]: the backend chosen by configuration, with timeouts, retries and a concurrency
//! limit applied once for all of them.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::{Location, StoreConfig};
use crate::error::Result;
use crate::retry::{RequestPolicy, RetryConfig};
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
    policy: RequestPolicy,
    description: String,
    identity: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.description)
            .field("retry", self.policy.retry_config())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store `config` describes. Sends no request.
    pub async fn open(config: &StoreConfig) -> Result<Store> {
        let (backend, policy) = match &config.location {
            Location::Local(path) => (
                Backend::Local(LocalStore::new(path.clone())?),
                RequestPolicy::new(config.retry.clone(), config.concurrency),
            ),
            Location::S3 { bucket, prefix } => {
                let s3 = S3Store::new(bucket, prefix, config).await?;
                // One limit for both: the S3 store's multipart requests take slots of it.
                let policy = s3.policy().clone();
                (Backend::S3(Box::new(s3)), policy)
            }
        };
        Ok(Store {
            backend,
            policy,
            description: config.location.to_string(),
            identity: config.identity(),
        })
    }

    /// An in-memory store, for tests.
    pub fn memory(memory: MemoryStore, retry: RetryConfig) -> Store {
        Store {
            backend: Backend::Memory(memory),
            policy: RequestPolicy::new(retry, StoreConfig::DEFAULT_CONCURRENCY),
            description: "memory://".to_owned(),
            identity: "memory://".to_owned(),
        }
    }

    /// Where the store is, as a URL, for messages.
    pub fn location(&self) -> &str {
        &self.description
    }

    /// What tells this repository from any other: [`StoreConfig::identity`].
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The retry policy in force.
    pub fn retry_config(&self) -> &RetryConfig {
        self.policy.retry_config()
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
        if let Backend::S3(s3) = &self.backend
            && s3.uses_multipart(body.len())
        {
            // A multipart upload is many requests; each takes its own slot of the limit and is
            // timed out and retried on its own, by the S3 store under this same policy.
            return s3.put(key, body, mode, cancel).await;
        }
        self.policy
            .run("put", key.as_str(), cancel, || {
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
        self.policy
            .run("get", key.as_str(), cancel, || {
                let range = range.clone();
                async move { dispatch!(self, b => b.get(key, range, cancel)) }
            })
            .await
    }

    async fn head(&self, key: &ObjectKey, cancel: &CancellationToken) -> Result<ObjectMeta> {
        self.policy
            .run("head", key.as_str(), cancel, || async move {
                dispatch!(self, b => b.head(key, cancel))
            })
            .await
    }

    async fn list(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<ObjectMeta>> {
        self.policy
            .run("list", prefix, cancel, || async move {
                dispatch!(self, b => b.list(prefix, cancel))
            })
            .await
    }

    async fn delete(&self, key: &ObjectKey, cancel: &CancellationToken) -> Result<()> {
        self.policy
            .run("delete", key.as_str(), cancel, || async move {
                dispatch!(self, b => b.delete(key, cancel))
            })
            .await
    }
}

#[cfg(feature = "testing")]
impl Store {
    /// The keys (relative to the store) of multipart uploads begun under `prefix` and neither
    /// completed nor aborted. Always empty for the backends that have no multipart uploads.
    /// Feature `testing`.
    pub async fn incomplete_uploads(
        &self,
        prefix: &str,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>> {
        match &self.backend {
            Backend::Memory(_) | Backend::Local(_) => Ok(Vec::new()),
            Backend::S3(s3) => {
                self.policy
                    .run("list multipart uploads", prefix, cancel, || {
                        s3.incomplete_uploads(prefix)
                    })
                    .await
            }
        }
    }
}
