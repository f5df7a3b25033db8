//! The store's error type. Backend and SDK errors are converted at the backend edge and never
//! leak through this type.

use std::io;
use std::time::Duration;

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with a store operation.
///
/// Callers decide what to do through [`Error::is_not_found`], [`Error::is_already_exists`] and
/// [`Error::is_retryable`], never by matching message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist. A normal answer, not a failure.
    #[error("object '{key}' not found")]
    NotFound {
        /// The key that was asked for.
        key: String,
    },

    /// A create-only put found the object already there; nothing was replaced.
    #[error("object '{key}' already exists")]
    AlreadyExists {
        /// The key that was written.
        key: String,
    },

    /// The storage refused the request: wrong credentials, no permission, or a read-only
    /// filesystem.
    #[error("permission denied for '{key}': {message}")]
    PermissionDenied {
        /// The key (or bucket) concerned.
        key: String,
        /// What the storage said.
        message: String,
    },

    /// The S3 bucket does not exist.
    #[error(
        "bucket '{bucket}' does not exist; HINT: create it, or correct the bucket in the repository URL"
    )]
    NoSuchBucket {
        /// The bucket name.
        bucket: String,
    },

    /// The local filesystem holding the repository is full.
    #[error(
        "no space left on the device holding '{key}': {source}; HINT: free space or grow the filesystem; nothing was acknowledged"
    )]
    StorageFull {
        /// The key being written.
        key: String,
        /// The underlying error.
        source: io::Error,
    },

    /// One attempt took longer than the per-request timeout.
    #[error("{op} '{key}' timed out after {after:?}")]
    Timeout {
        /// The operation (`put`, `get`, ...).
        op: &'static str,
        /// The key concerned.
        key: String,
        /// The timeout that expired.
        after: Duration,
    },

    /// A failure that may pass: a connection refused or reset, a 5xx reply, throttling.
    #[error("{op} '{key}' failed: {message}")]
    Transient {
        /// The operation.
        op: &'static str,
        /// The key concerned.
        key: String,
        /// What happened.
        message: String,
    },

    /// A failure that will not pass by retrying, reported by the storage service.
    #[error("{op} '{key}' failed: {message}")]
    Permanent {
        /// The operation.
        op: &'static str,
        /// The key concerned.
        key: String,
        /// What happened.
        message: String,
    },

    /// A local I/O error.
    #[error("{op} '{key}' failed: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The key concerned.
        key: String,
        /// The underlying error.
        source: io::Error,
    },

    /// Retries were exhausted; `last` is the final attempt's error.
    #[error("gave up after {attempts} attempts in {elapsed:.1?}: {last}")]
    GaveUp {
        /// The operation.
        op: &'static str,
        /// The key concerned.
        key: String,
        /// How many attempts were made.
        attempts: u32,
        /// Time spent, including backoff.
        elapsed: Duration,
        /// The last attempt's error.
        last: Box<Error>,
    },

    /// The key is not a valid [`ObjectKey`](crate::ObjectKey).
    #[error("invalid object key '{key}': {reason}")]
    InvalidKey {
        /// The rejected text.
        key: String,
        /// Why.
        reason: &'static str,
    },

    /// The store could not be configured (bad URL, missing setting).
    #[error("{message}")]
    InvalidConfig {
        /// What is wrong and what to do.
        message: String,
    },

    /// The operation was cancelled by the caller.
    #[error("operation cancelled")]
    Cancelled,
}

impl Error {
    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// A create-only put found an existing object.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }

    /// Retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Transient { .. })
    }

    /// The operation was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }

    /// The storage could not be reached or kept failing: a timeout, a transient failure, or
    /// retries given up on one of those.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::GaveUp { last, .. } => last.is_unavailable(),
            other => other.is_retryable(),
        }
    }

    /// Maps a local I/O error for `op` on `key` to the right variant.
    pub(crate) fn from_io(op: &'static str, key: &str, source: io::Error) -> Error {
        let key = key.to_owned();
        match source.kind() {
            io::ErrorKind::NotFound => Error::NotFound { key },
            io::ErrorKind::AlreadyExists => Error::AlreadyExists { key },
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                Error::PermissionDenied {
                    key,
                    message: format!(
                        "{source}; HINT: the user running walferry needs to read and write the repository directory, on a filesystem mounted read-write"
                    ),
                }
            }
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Error::StorageFull { key, source }
            }
            _ => Error::Io { op, key, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_variants() {
        let cases = [
            (io::ErrorKind::NotFound, "not_found"),
            (io::ErrorKind::AlreadyExists, "exists"),
            (io::ErrorKind::PermissionDenied, "denied"),
            (io::ErrorKind::ReadOnlyFilesystem, "denied"),
            (io::ErrorKind::StorageFull, "full"),
            (io::ErrorKind::Other, "io"),
        ];
        for (kind, want) in cases {
            let got = match Error::from_io("put", "k", io::Error::from(kind)) {
                Error::NotFound { .. } => "not_found",
                Error::AlreadyExists { .. } => "exists",
                Error::PermissionDenied { .. } => "denied",
                Error::StorageFull { .. } => "full",
                Error::Io { .. } => "io",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, want, "{kind:?}");
        }
    }

    #[test]
    fn gave_up_on_transient_is_unavailable() {
        let err = Error::GaveUp {
            op: "get",
            key: "k".into(),
            attempts: 3,
            elapsed: Duration::from_secs(1),
            last: Box::new(Error::Transient {
                op: "get",
                key: "k".into(),
                message: "connection refused".into(),
            }),
        };
        assert!(err.is_unavailable());
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "gave up after 3 attempts in 1.0s: get 'k' failed: connection refused"
        );
    }
}
