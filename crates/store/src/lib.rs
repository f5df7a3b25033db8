//! One narrow object-store interface for walferry's repositories, and its backends.
//!
//! [`ArchiveStore`] has five required operations — [`put`](ArchiveStore::put),
//! [`get`](ArchiveStore::get), [`head`](ArchiveStore::head), [`list`](ArchiveStore::list) and
//! [`delete`](ArchiveStore::delete) — over opaque [`ObjectKey`]s. The store knows nothing of WAL.
//!
//! Backends:
//! - [`LocalStore`]: a directory on a local (or NFS) filesystem, `file:///path`, the embedded
//!   default. Writes go to a temporary file, are fsynced, then linked into place, and the
//!   directory is fsynced: readers never see a partial object and an acknowledged put survives a
//!   crash.
//! - [`S3Store`]: an S3 bucket and prefix, `s3://bucket/prefix`, with a custom endpoint and path
//!   style for S3-compatible servers. Create-only puts send `If-None-Match: *`. Bodies above
//!   [`MultipartOptions::threshold`] go up as multipart uploads.
//! - [`MemoryStore`]: in-process, for unit tests.
//!
//! [`Store`] is the enum the binaries build from configuration ([`StoreConfig`]). It adds what
//! every backend needs once: a per-request timeout, retries with backoff and jitter within a
//! budget ([`RetryConfig`]), and a concurrency limit; for an S3 multipart upload, to each of
//! its requests.
//!
//! Contracts every backend keeps (checked by the `conformance` suite, feature `testing`):
//! - [`PutMode::Create`] never replaces an existing object: it fails with
//!   [`Error::AlreadyExists`], atomically, even when several writers race.
//! - A put that returned `Ok` is durable.
//! - [`Error::NotFound`] means the object does not exist, and nothing else.

#![deny(missing_docs)]

mod config;
mod error;
mod key;
mod local;
mod memory;
mod retry;
mod s3;
mod store;

#[cfg(feature = "testing")]
pub mod conformance;

use std::future::Future;
use std::ops::Range;

use bytes::Bytes;
pub use tokio_util::sync::CancellationToken;

pub use config::{Location, MultipartOptions, S3Options, StoreConfig};
pub use error::{Error, Result};
pub use key::ObjectKey;
pub use local::LocalStore;
pub use memory::{Fault, FaultError, FaultOp, MemoryStore};
pub use retry::RetryConfig;
pub use s3::S3Store;
pub use store::Store;

/// Whether a put may replace an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Create the object or replace it.
    Overwrite,
    /// Create the object only if no object has the key; otherwise fail with
    /// [`Error::AlreadyExists`] and change nothing.
    Create,
}

/// What a listing says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key, relative to the store's root.
    pub key: ObjectKey,
    /// The stored size in bytes.
    pub size: u64,
}

/// The answer to a get.
#[derive(Debug, Clone)]
pub struct GetResult {
    /// The bytes asked for: the whole object, or the requested range clamped to its end.
    pub body: Bytes,
    /// The size of the whole object.
    pub object_size: u64,
}

/// The operations a repository needs from its storage.
///
/// Each method runs one attempt; [`Store`] wraps backends with timeouts and retries. (The one
/// exception, [`S3Store`]'s multipart put, is many requests and applies the store's retry
/// policy to each of them itself.) Every
/// method takes a [`CancellationToken`] and returns promptly with [`Error::Cancelled`] when it
/// fires.
pub trait ArchiveStore: Send + Sync {
    /// Stores `body` under `key`. Returns once the object is durable. With [`PutMode::Create`],
    /// fails with [`Error::AlreadyExists`] if the key exists, replacing nothing.
    fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        mode: PutMode,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Reads an object, or the byte range `range` of it (clamped to the object's end; a range
    /// starting at or past the end of a non-empty object is an error). Fails with
    /// [`Error::NotFound`] when there is no such object.
    fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<GetResult>> + Send;

    /// An object's size, or [`Error::NotFound`].
    fn head(
        &self,
        key: &ObjectKey,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<ObjectMeta>> + Send;

    /// Every object whose key starts with `prefix` (plain text prefix, not only whole
    /// components), sorted by key. An empty prefix lists everything.
    fn list(
        &self,
        prefix: &str,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<Vec<ObjectMeta>>> + Send;

    /// Removes an object. Removing a missing object succeeds.
    fn delete(
        &self,
        key: &ObjectKey,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Checks a range against an object size and clamps it: shared by the backends that slice
/// their own bytes so that they all answer alike.
pub(crate) fn clamp_range(key: &ObjectKey, range: Range<u64>, size: u64) -> Result<Range<u64>> {
    if range.start > range.end || (range.start >= size && size > 0) {
        return Err(Error::Permanent {
            op: "get",
            key: key.to_string(),
            message: format!(
                "range {}..{} is not satisfiable for an object of {size} bytes",
                range.start, range.end
            ),
        });
    }
    Ok(range.start.min(size)..range.end.min(size))
}
