//! walferry's repository: where everything lives in the store and what the repository knows
//! about itself.
//!
//! - [`layout`]: the key scheme, defined once.
//! - [`descriptor`]: the repository descriptor (system identifier, PostgreSQL version, segment
//!   size), written by the first push and checked by every later one.
//! - [`backup`]: backup manifests, the JSON document that lists a base backup's parts and
//!   files; [`timestamp`]: the points in time they record and recovery targets name.
//! - [`timelines`]: the timeline graph built from `.history` files.
//! - [`walindex`]: which WAL segments the archive holds, per timeline, with gaps.
//! - [`plan`]: restore planning — a recovery target and target timeline become a backup, a
//!   timeline path and the exact segments PostgreSQL will ask for, or a refusal that says why.
//! - [`io`]: the thin layer over an [`ArchiveStore`]: the descriptor, backup manifests (saved
//!   last, as a backup's commit point), and the whole catalog a restore is planned from.
//!
//! Everything but [`io`] is pure: no I/O, no async, so planning is tested on synthetic
//! catalogs. [`io`] is the thin layer that talks to the store.
//!
//! [`ArchiveStore`]: walferry_store::ArchiveStore

#![deny(missing_docs)]

pub mod backup;
pub mod descriptor;
pub mod io;
pub mod layout;
pub mod plan;
pub mod stats;
pub mod timelines;
pub mod timestamp;
pub mod walindex;

pub use backup::{BackupManifest, BackupSummary, ManifestError};
pub use descriptor::{ClusterIdentity, DescriptorError, IdentityMismatch, RepoDescriptor};
pub use plan::{
    Catalog, PlanEnd, PlanError, RecoveryTarget, RestorePlan, RestoreRequest, TargetTimeline,
};
pub use timelines::{TimelineGraph, TimelinePath};
pub use timestamp::{Timestamp, TimestampError};
pub use walindex::WalIndex;

/// Serde for a `u64` as decimal text: JSON numbers above 2^53 are not read exactly by every
/// reader, and system identifiers are above it.
pub(crate) mod u64_as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
