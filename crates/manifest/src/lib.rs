//! walferry's repository: where everything lives in the store and what the repository knows
//! about itself.
//!
//! - [`layout`]: the key scheme, defined once.
//! - [`descriptor`]: the repository descriptor (system identifier, PostgreSQL version, segment
//!   size), written by the first push and checked by every later one.
//! - [`io`]: loading and creating the descriptor through an [`ArchiveStore`].
//!
//! The pure parts (layout, descriptor encoding) do no I/O; [`io`] is the thin layer that talks
//! to the store.
//!
//! [`ArchiveStore`]: walferry_store::ArchiveStore

#![deny(missing_docs)]

pub mod descriptor;
pub mod io;
pub mod layout;

pub use descriptor::{ClusterIdentity, DescriptorError, IdentityMismatch, RepoDescriptor};
