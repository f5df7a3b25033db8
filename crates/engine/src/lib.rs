//! walferry's operations.
//!
//! - [`push()`]: archive one WAL file (PostgreSQL's `archive_command`).
//! - [`fetch()`]: restore one WAL file (PostgreSQL's `restore_command`).
//! - [`backup::run()`]: take a base backup and store it (`walferry-archive backup`).
//! - [`restore::unpack::unpack()`]: unpack a stored base backup into a data directory.
//! - [`verify::verify()`]: check every object of a repository and the continuity of its WAL
//!   (`walferry-restore verify`).
//!
//! Operations take a [`Store`] and a [`CancellationToken`], return typed [`Error`]s whose
//! [`ErrorKind`] the binaries turn into exit codes, and keep CPU-heavy work (compression,
//! checksums) off the async threads.
//!
//! [`CancellationToken`]: walferry_store::CancellationToken

#![deny(missing_docs)]

pub mod backup;
mod error;
pub mod estimate;
mod fetch;
pub mod info;
pub mod ledger;
mod local;
mod part_check;
pub mod pipeline;
mod push;
pub mod restore;
pub mod spool;
pub mod tar;
pub mod verify;

use walferry_store::{ObjectKey, Store};

pub use error::{Error, ErrorKind, Result};
pub use fetch::{FetchOutcome, fetch};
pub use push::{
    DEFAULT_COMPRESSION_LEVEL, DEFAULT_PUSH_JOBS, PushOptions, PushOutcome, StartWorker,
    WorkerReport, already_recorded, push, push_worker,
};

/// The largest object the engine decodes: the largest WAL segment PostgreSQL allows.
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;

/// Runs CPU-heavy or blocking work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    join_blocking(tokio::task::spawn_blocking(f)).await?
}

/// Waits for work started with `spawn_blocking`; a panic there is resumed here.
pub(crate) async fn join_blocking<T>(handle: tokio::task::JoinHandle<T>) -> Result<T> {
    match handle.await {
        Ok(r) => Ok(r),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(Error::Internal {
            message: "a blocking task was cancelled because the runtime is shutting down".into(),
        }),
    }
}

pub(crate) fn store_error(
    action: &'static str,
    key: &ObjectKey,
    store: &Store,
    source: walferry_store::Error,
) -> Error {
    Error::Store {
        action,
        key: key.to_string(),
        repo: store.location().to_owned(),
        source: Box::new(source),
    }
}
