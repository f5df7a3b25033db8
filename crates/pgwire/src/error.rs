//! The crate's error type.
//!
//! Every variant that involves a server names it as `host:port` (for a Unix socket, the socket
//! directory and port), so a message read alone in a log says which server failed.

use std::fmt;
use std::io;
use std::time::Duration;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure to configure, connect to or talk to a PostgreSQL server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection string or a `PG*` environment variable is invalid.
    #[error("invalid connection setting {setting}: {reason}")]
    Config {
        /// The setting, for example `port` or `PGPORT`.
        setting: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The settings ask for TLS (`sslmode=require`, `verify-ca`, `verify-full`), which this
    /// client does not speak yet.
    #[error(
        "sslmode '{sslmode}' needs TLS, which walferry does not support yet; HINT: use \
         sslmode=disable or prefer over a trusted network or a Unix socket"
    )]
    TlsNotSupported {
        /// The requested `sslmode`.
        sslmode: String,
    },

    /// The TCP or Unix-socket connection could not be opened.
    #[error("could not connect to server at {host}:{port}: {source}")]
    Connect {
        /// The host name or socket directory.
        host: String,
        /// The port.
        port: u16,
        /// The operating system's error.
        source: io::Error,
    },

    /// Connecting and authenticating took longer than `connect_timeout`.
    #[error("timed out connecting to server at {host}:{port} after {after:?}")]
    Timeout {
        /// The host name or socket directory.
        host: String,
        /// The port.
        port: u16,
        /// The configured timeout.
        after: Duration,
    },

    /// Reading from or writing to an open connection failed, or the server closed it.
    #[error("connection to server at {host}:{port} failed: {source}")]
    Io {
        /// The host name or socket directory.
        host: String,
        /// The port.
        port: u16,
        /// The underlying error (`UnexpectedEof` when the server closed the connection).
        source: io::Error,
    },

    /// Authentication could not proceed on the client side: no password was given, the server
    /// asked for a method this client lacks, or the server's SCRAM proof was wrong.
    #[error("authentication as user '{user}' to server at {host}:{port} failed: {reason}")]
    Auth {
        /// The host name or socket directory.
        host: String,
        /// The port.
        port: u16,
        /// The user name.
        user: String,
        /// What went wrong.
        reason: String,
    },

    /// The server answered with an `ErrorResponse`.
    #[error(
        "server at {host}:{port} reported {severity} {code}: {message}{}{}",
        detail.as_ref().map(|d| format!("; DETAIL: {d}")).unwrap_or_default(),
        hint.as_ref().map(|h| format!("; HINT: {h}")).unwrap_or_default()
    )]
    Server {
        /// The host name or socket directory.
        host: String,
        /// The port.
        port: u16,
        /// How bad it is: `ERROR` ends the command, `FATAL` the session.
        severity: Severity,
        /// The SQLSTATE code, for example `28P01` (invalid password).
        code: SqlState,
        /// The primary message.
        message: String,
        /// The optional detail message.
        detail: Option<String>,
        /// The optional hint.
        hint: Option<String>,
    },

    /// The server sent something this client did not expect at that point of the protocol.
    #[error("protocol violation from server at {host}:{port}: {reason}")]
    Protocol {
        /// The host name or socket directory.
        host: String,
        /// The port.
        port: u16,
        /// What was unexpected.
        reason: String,
    },

    /// The server's version lacks a feature this client needs.
    #[error(
        "server at {host}:{port} runs PostgreSQL {version}, but {what} needs {needed} or later"
    )]
    UnsupportedServer {
        /// The host name or socket directory.
        host: String,
        /// The port.
        port: u16,
        /// The server's `server_version`.
        version: String,
        /// The feature, for example `BASE_BACKUP`.
        what: &'static str,
        /// The oldest major version that has it.
        needed: u32,
    },

    /// The client cannot run a command now: an earlier base backup was abandoned mid-stream,
    /// or a command failed in a way that left the connection out of step with the server.
    #[error("connection to server at {host}:{port} is unusable: {reason}")]
    Unusable {
        /// The host name or socket directory.
        host: String,
        /// The port.
        port: u16,
        /// Why.
        reason: &'static str,
    },
}

impl Error {
    /// The SQLSTATE when the server reported the error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code.as_str()),
            _ => None,
        }
    }

    /// Whether the server rejected the credentials (SQLSTATE class 28: wrong password, no
    /// `pg_hba.conf` entry, role not allowed to log in or replicate) or the client could not
    /// authenticate at all. Retrying does not help; the configuration must change.
    pub fn is_auth_failure(&self) -> bool {
        match self {
            Error::Auth { .. } => true,
            Error::Server { code, .. } => code.class() == "28" || code.as_str() == "42501",
            _ => false,
        }
    }

    /// Whether the error is about the settings rather than the server, so that retrying
    /// cannot help.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config { .. } | Error::TlsNotSupported { .. })
    }

    /// Whether a new attempt might succeed: the server could not be reached, the connection
    /// broke, timed out, or the server is starting up, shutting down or out of connections
    /// (SQLSTATE `57P03`, `57P01`, `53300`).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Timeout { .. } | Error::Io { .. } => true,
            Error::Server { code, .. } => {
                matches!(code.as_str(), "57P01" | "57P03" | "53300")
            }
            _ => false,
        }
    }
}

/// The severity of an error the server reported (the `V` field of `ErrorResponse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// `ERROR`: the command failed; the session goes on.
    Error,
    /// `FATAL`: the session ends.
    Fatal,
    /// `PANIC`: the server restarts.
    Panic,
}

impl Severity {
    /// Reads the non-localized severity; anything unknown counts as `ERROR`.
    pub(crate) fn parse(text: &str) -> Severity {
        match text {
            "FATAL" => Severity::Fatal,
            "PANIC" => Severity::Panic,
            _ => Severity::Error,
        }
    }
}

impl fmt::Display for Severity {
    /// `ERROR`, `FATAL` or `PANIC`, as PostgreSQL writes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Panic => "PANIC",
        })
    }
}

/// A five-character SQLSTATE error code, such as `28P01` (PostgreSQL's errcodes.txt).
///
/// ```
/// use walferry_pgwire::SqlState;
///
/// let code = SqlState::parse("28P01").unwrap();
/// assert_eq!(code.as_str(), "28P01");
/// assert_eq!(code.class(), "28");
/// assert!(SqlState::parse("28P0").is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

impl SqlState {
    /// `XX000` (`internal_error`), used when the server sent no valid code.
    pub const INTERNAL_ERROR: SqlState = SqlState(*b"XX000");

    /// The code, if `text` is five ASCII digits or upper-case letters.
    pub fn parse(text: &str) -> Option<SqlState> {
        let bytes: [u8; 5] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            .then_some(SqlState(bytes))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("parse admits only ASCII")
    }

    /// The class: the first two characters (`28`: invalid authorization specification).
    pub fn class(&self) -> &str {
        &self.as_str()[..2]
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlState({})", self.as_str())
    }
}
