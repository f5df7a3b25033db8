//! Restoring base backups: turning the stored form a
//! [`BackupManifest`](walferry_manifest::BackupManifest) describes back into a data directory.
//!
//! - [`run()`]: plans a point-in-time restore, unpacks its backup and configures recovery.
//! - [`server::start`]: starts PostgreSQL on the result and follows its recovery.
//! - [`unpack()`]: downloads a backup's parts in parallel and writes its files, directories
//!   and tablespace links, checking every part and every file against the manifest.

pub mod run;
pub mod server;
pub mod unpack;

pub use run::{RestoreOptions, RestoreOutcome, TargetAction, plan, run, run_planned};
pub use unpack::{ProgressSnapshot, UnpackOptions, UnpackProgress, UnpackStats, unpack};
