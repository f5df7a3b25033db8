//! The engine's error type and its classification.

use std::io;
use std::path::PathBuf;

use walferry_manifest::IdentityMismatch;

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The class of a failure: what the caller (and, through the exit code, PostgreSQL or the
/// operator) should make of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is not what it must be: a path that is not a WAL file, a malformed file.
    BadInput,
    /// The configuration is unusable.
    Config,
    /// The archive already holds different content under the same name.
    Conflict,
    /// The WAL or the repository belongs to another cluster (system identifier, PostgreSQL
    /// version or segment size).
    WrongCluster,
    /// The storage failed: unreachable after retries, permission denied, bucket missing, full.
    Storage,
    /// An object in the archive is corrupt or truncated, or the repository has no descriptor.
    Corrupt,
    /// A local file could not be read or written.
    LocalIo,
    /// The operation was cancelled.
    Cancelled,
    /// PostgreSQL could not be reached, refused the connection or the command, or sent
    /// something unexpected.
    Postgres,
    /// What was asked for is not in the archive: no backup reaches a restore target.
    Unavailable,
    /// A bug in walferry.
    Internal,
}

/// What went wrong in an engine operation. Messages are one line and name the object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path handed to push does not name a WAL file.
    #[error(
        "'{path}' is not a WAL file PostgreSQL archives: {reason}; HINT: archive_command must pass %p"
    )]
    NotAWalPath {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A WAL file's content is not valid.
    #[error(
        "WAL file '{name}' is not valid: {reason}; HINT: PostgreSQL did not write this file as it is: find out what did, and do not archive it"
    )]
    InvalidWal {
        /// The file name.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// Reading or writing a local file failed.
    #[error(
        "cannot {action} '{path}': {source}; HINT: check that the path is right, that the user running walferry may {action} it, and that its filesystem has space"
    )]
    LocalIo {
        /// What was being done ("read", "write", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The repository has no descriptor and none can be made from this file alone.
    #[error(
        "repository {repo} has no descriptor and '{name}' does not identify its cluster; HINT: archive a WAL segment first, or check that --repo points at the right repository"
    )]
    NoIdentity {
        /// The repository URL.
        repo: String,
        /// The file being pushed.
        name: String,
    },

    /// A fetch from a repository that has no descriptor: nothing was ever archived there.
    #[error(
        "repository {repo} has no descriptor (walferry.json), so it holds no archive; HINT: check that --repo or WALFERRY_REPO points at the repository the cluster archives to"
    )]
    NoDescriptor {
        /// The repository URL.
        repo: String,
    },

    /// The repository's descriptor is unreadable.
    #[error("repository {repo}: {source}")]
    BadDescriptor {
        /// The repository URL.
        repo: String,
        /// Why.
        source: walferry_manifest::DescriptorError,
    },

    /// WAL of another cluster.
    #[error(
        "WAL file '{name}' belongs to another cluster than repository {repo}: {mismatch}; HINT: each cluster needs its own repository (or prefix)"
    )]
    WrongCluster {
        /// The file.
        name: String,
        /// The repository URL.
        repo: String,
        /// How it differs.
        mismatch: IdentityMismatch,
    },

    /// The repository belongs to another cluster than the data directory being recovered.
    #[error(
        "repository {repo} belongs to another cluster than this data directory: {mismatch} (from global/pg_control); HINT: restore_command must use the repository this cluster archived to"
    )]
    ForeignRepository {
        /// The repository URL.
        repo: String,
        /// How it differs.
        mismatch: IdentityMismatch,
    },

    /// Work on a blocking thread did not finish: the runtime is shutting down.
    #[error("internal error: {message}")]
    Internal {
        /// What happened.
        message: String,
    },

    /// A fetched segment does not match what the repository says it should be.
    #[error("archived WAL file '{name}' does not match repository {repo}: {reason}")]
    ForeignSegment {
        /// The file.
        name: String,
        /// The repository URL.
        repo: String,
        /// How it differs.
        reason: String,
    },

    /// The archive holds different content under this name; nothing was replaced.
    #[error(
        "WAL file '{name}' already exists in the archive with different content; HINT: the archive is never overwritten: check whether two clusters archive to {repo}, then move the object away by hand if the local file is the right one"
    )]
    Conflict {
        /// The file.
        name: String,
        /// The repository URL.
        repo: String,
    },

    /// An archived object failed verification.
    #[error(
        "archived object '{key}' is corrupt: {source}; HINT: run verification and restore the object from another copy if one exists"
    )]
    Corrupt {
        /// The object's key.
        key: String,
        /// What the decoder found.
        source: walferry_codec::Error,
    },

    /// The store failed.
    #[error("{action} '{key}' in {repo}: {source}")]
    Store {
        /// What was being done ("upload", "download", ...).
        action: &'static str,
        /// The object's key.
        key: String,
        /// The repository URL.
        repo: String,
        /// The store's error.
        source: Box<walferry_store::Error>,
    },

    /// Talking to PostgreSQL failed (connecting, authenticating, a replication command).
    #[error("{action}: {source}")]
    Postgres {
        /// What was being done ("connect for replication", "run BASE_BACKUP", ...).
        action: &'static str,
        /// The protocol client's error.
        source: walferry_pgwire::Error,
    },

    /// The server is another cluster than the one the repository belongs to.
    #[error(
        "server {server} belongs to another cluster than repository {repo}: {mismatch}; HINT: each cluster needs its own repository (or prefix)"
    )]
    WrongServer {
        /// The server (`host:port`).
        server: String,
        /// The repository URL.
        repo: String,
        /// How it differs.
        mismatch: IdentityMismatch,
    },

    /// The server's base backup is not what walferry can store: an unexpected archive, an
    /// invalid tar stream, a missing end position.
    #[error("base backup '{label}' from {server}: {reason}")]
    BadBackupStream {
        /// The backup's label.
        label: String,
        /// The server (`host:port`).
        server: String,
        /// What is wrong.
        reason: String,
    },

    /// A backup label cannot name a backup.
    #[error("backup label '{label}' {reason}")]
    InvalidLabel {
        /// The label.
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A backup with this label is already committed, or its parts are already stored.
    #[error(
        "backup '{label}' already exists in {repo} ('{key}'); HINT: every backup needs its own label"
    )]
    BackupExists {
        /// The label.
        label: String,
        /// The object found.
        key: String,
        /// The repository URL.
        repo: String,
    },

    /// The operation was cancelled before it completed; nothing was committed.
    #[error("{operation} was cancelled; nothing was committed")]
    Cancelled {
        /// The operation (`base backup '<label>'`).
        operation: String,
    },

    /// Compressing failed; a bug or an invalid compression level.
    #[error("cannot compress '{name}': {source}")]
    Encode {
        /// The file.
        name: String,
        /// The codec's error.
        source: walferry_codec::Error,
    },

    /// A restore target (the data directory or a tablespace directory) already holds files.
    #[error(
        "restore target '{path}' is not empty; HINT: restore into an empty or missing directory"
    )]
    TargetNotEmpty {
        /// The directory.
        path: PathBuf,
    },

    /// A backup's manifest contradicts itself or the restore request.
    #[error("backup '{label}' cannot be restored: {reason}")]
    InvalidBackup {
        /// The backup's label.
        label: String,
        /// What is wrong.
        reason: String,
    },

    /// A stored backup part decoded, but is not the part its manifest lists.
    #[error(
        "backup part '{key}' does not match its manifest: {reason}; HINT: run verification and restore the object from another copy if one exists"
    )]
    PartMismatch {
        /// The part's key.
        key: String,
        /// How it differs.
        reason: String,
    },

    /// The WAL segment holding a backup's end did not reach the repository in time.
    #[error(
        "backup '{label}' is complete on the server, but its last WAL segment {segment} is not in {repo} after {waited_secs} s, so the backup was not committed; HINT: check that archive_mode is on and archive_command pushes to this repository (see the server log), or raise --archive-timeout"
    )]
    EndNotArchived {
        /// The backup's label.
        label: String,
        /// The segment waited for.
        segment: String,
        /// The repository URL.
        repo: String,
        /// How long it waited.
        waited_secs: u64,
    },

    /// The repository's catalog (history files, backup manifests) is damaged.
    #[error(
        "repository {repo}: {message}; HINT: run walferry-restore verify to list every damaged object"
    )]
    BadCatalog {
        /// The repository URL.
        repo: String,
        /// What is damaged.
        message: String,
    },

    /// No backup in the repository can reach the restore target; nothing was written.
    #[error("repository {repo}: {source}; nothing was written")]
    Unreachable {
        /// The repository URL.
        repo: String,
        /// The planner's reason.
        source: walferry_manifest::PlanError,
    },

    /// A restore request that cannot be carried out as given.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong, and what to do.
        message: String,
    },

    /// PostgreSQL, started on a restored data directory, stopped before recovery ended.
    #[error(
        "PostgreSQL stopped during recovery of '{pgdata}': {reason}; HINT: see its log '{log}'"
    )]
    RecoveryFailed {
        /// The data directory.
        pgdata: PathBuf,
        /// The server log.
        log: PathBuf,
        /// What happened, with the last lines of the log.
        reason: String,
    },

    /// Another prefetch pipeline is running on this data directory's spool.
    #[error(
        "spool generation '{path}' is held by another running walferry pipeline; HINT: one prefetch pipeline can run per data directory: stop the other one first"
    )]
    SpoolBusy {
        /// The generation directory whose lock is held.
        path: PathBuf,
    },

    /// A restored file does not have the content its backup manifest records.
    #[error("restored file '{path}' does not match its backup manifest: {reason}")]
    RestoredFileMismatch {
        /// The file.
        path: PathBuf,
        /// How it differs.
        reason: String,
    },
}

impl Error {
    /// The class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotAWalPath { .. } | Error::InvalidWal { .. } => ErrorKind::BadInput,
            Error::LocalIo { .. } => ErrorKind::LocalIo,
            Error::NoIdentity { .. } => ErrorKind::Config,
            Error::NoDescriptor { .. }
            | Error::BadDescriptor { .. }
            | Error::Corrupt { .. }
            | Error::BadCatalog { .. } => ErrorKind::Corrupt,
            Error::WrongCluster { .. }
            | Error::ForeignSegment { .. }
            | Error::ForeignRepository { .. } => ErrorKind::WrongCluster,
            Error::Internal { .. } => ErrorKind::Internal,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Store { source, .. } if source.is_cancelled() => ErrorKind::Cancelled,
            Error::Store { source, .. } => match source.as_ref() {
                walferry_store::Error::InvalidConfig { .. } => ErrorKind::Config,
                _ => ErrorKind::Storage,
            },
            Error::Encode { .. } => ErrorKind::BadInput,
            Error::Postgres { source, .. } if source.is_config() => ErrorKind::Config,
            Error::Postgres { .. } | Error::BadBackupStream { .. } => ErrorKind::Postgres,
            Error::WrongServer { .. } => ErrorKind::WrongCluster,
            Error::InvalidLabel { .. } => ErrorKind::Config,
            Error::BackupExists { .. } => ErrorKind::Conflict,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::TargetNotEmpty { .. }
            | Error::InvalidRequest { .. }
            | Error::SpoolBusy { .. } => ErrorKind::Config,
            Error::Unreachable { source, .. } => match source {
                walferry_manifest::PlanError::InvalidTarget { .. } => ErrorKind::Config,
                _ => ErrorKind::Unavailable,
            },
            Error::RecoveryFailed { .. } | Error::EndNotArchived { .. } => ErrorKind::Postgres,
            Error::InvalidBackup { .. }
            | Error::PartMismatch { .. }
            | Error::RestoredFileMismatch { .. } => ErrorKind::Corrupt,
        }
    }
}
