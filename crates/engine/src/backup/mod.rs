//! Taking base backups: turning the tar streams of PostgreSQL's `BASE_BACKUP` into the stored
//! form a [`BackupManifest`](walferry_manifest::BackupManifest) describes.
//!
//! - [`run()`]: takes a base backup over the replication protocol and commits it.
//! - [`parts`]: cuts one tar stream into compressed parts and lists its members.

pub mod parts;
pub mod run;

pub use run::{BackupOptions, BackupOutcome, ConnectOptions, DEFAULT_JOBS, label_for, run};
