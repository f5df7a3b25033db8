//! Taking base backups: turning the tar streams of PostgreSQL's `BASE_BACKUP` into the stored
//! form a [`BackupManifest`](walferry_manifest::BackupManifest) describes.
//!
//! - [`parts`]: cuts one tar stream into compressed parts and lists its members.

pub mod parts;
