//! A minimal async client for PostgreSQL's physical replication protocol.
//!
//! walferry takes base backups itself instead of running `pg_basebackup`, so that the tar
//! stream can flow straight into compression and upload with bounded memory. This crate is the
//! protocol layer: it connects like libpq ([`ConnectOptions`]), authenticates (trust,
//! cleartext password, MD5, SCRAM-SHA-256), and speaks the few replication commands walferry
//! needs: `IDENTIFY_SYSTEM`, `SHOW` and `BASE_BACKUP` as one stream of [`BackupEvent`]s.
//! Message encoding and decoding and the SCRAM exchange come from the `postgres-protocol`
//! crate.
//!
//! Contracts:
//!
//! - A backup's archive data is handed over in the chunks the server sent, without copying,
//!   and the client reads through one 256 KiB buffer: memory does not grow with the size of
//!   the database (the wire format is described on [`BaseBackup`]).
//! - Errors name the server (`host:port`) and, when the server reported them, carry its
//!   SQLSTATE, message, detail and hint ([`Error::Server`]).
//! - `BASE_BACKUP` needs PostgreSQL 15 or later; older servers are refused with
//!   [`Error::UnsupportedServer`]. TLS is not supported yet ([`Error::TlsNotSupported`]).
//!
//! ```no_run
//! use walferry_pgwire::{BackupEvent, BaseBackupOptions, ConnectOptions, ReplicationClient};
//!
//! # async fn f() -> walferry_pgwire::Result<()> {
//! let opts = ConnectOptions::from_conninfo("host=/var/run/postgresql user=postgres")?;
//! let mut client = ReplicationClient::connect(&opts).await?;
//! let system = client.identify_system().await?;
//! println!("system {} on timeline {}", system.system_identifier, system.timeline);
//!
//! let mut backup = client.base_backup(&BaseBackupOptions::default()).await?;
//! while let Some(event) = backup.next_event().await? {
//!     match event {
//!         BackupEvent::ArchiveStart { name, .. } => println!("archive {name}"),
//!         BackupEvent::Data(chunk) => { /* write the chunk of the current archive */ }
//!         BackupEvent::Finished { end_lsn, .. } => println!("consistent at {end_lsn}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod backup;
mod client;
mod config;
mod conn;
mod error;

pub use backup::{BackupEvent, BaseBackup, BaseBackupOptions, TablespaceInfo};
pub use client::{ReplicationClient, Row, SystemInfo};
pub use config::{ConnectOptions, DEFAULT_PORT, DEFAULT_SOCKET_DIR, Host};
pub use error::{Error, Result, Severity, SqlState};
