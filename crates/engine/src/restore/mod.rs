//! Restoring base backups: turning the stored form a
//! [`BackupManifest`](walferry_manifest::BackupManifest) describes back into a data directory.
//!
//! - [`unpack()`]: downloads a backup's parts in parallel and writes its files, directories
//!   and tablespace links, checking every part and every file against the manifest.

pub mod unpack;

pub use unpack::{UnpackOptions, UnpackStats, unpack};
