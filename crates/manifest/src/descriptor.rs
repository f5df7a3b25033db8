//! The repository descriptor: which cluster a repository belongs to.
//!
//! Written once, by the first push, with a create-only put; read and checked by every later
//! push and fetch, so that WAL from another cluster (another system identifier), another
//! PostgreSQL major version or another segment size is refused instead of mixed in.
//!
//! It is plain JSON at the key `walferry.json`, for example:
//!
//! ```json
//! {
//!   "format": 1,
//!   "system_identifier": "7441234567890123456",
//!   "pg_version": 15,
//!   "wal_segment_size": 16777216,
//!   "created_by": "walferry 0.1.0"
//! }
//! ```
//!
//! The system identifier is a string because it does not fit in a JSON number that every
//! reader parses exactly. Unknown fields are ignored, so later versions can add some.

use serde::{Deserialize, Serialize};
use walferry_wal::{PgVersion, WalSegSize};

/// The format version this code writes and reads.
pub const FORMAT: u32 = 1;

/// Which cluster a repository holds WAL of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// `pg_control`'s system identifier, also in every segment's first page header.
    pub system_identifier: u64,
    /// The PostgreSQL major version, from the WAL page magic.
    pub pg_version: PgVersion,
    /// The WAL segment size.
    pub wal_segment_size: WalSegSize,
}

/// The repository descriptor, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoDescriptor {
    /// Format version; [`FORMAT`] today.
    pub format: u32,
    /// The cluster's system identifier, as decimal text.
    #[serde(with = "crate::u64_as_string")]
    pub system_identifier: u64,
    /// The PostgreSQL major version.
    pub pg_version: PgVersion,
    /// The WAL segment size in bytes.
    pub wal_segment_size: WalSegSize,
    /// The program and version that created the repository.
    pub created_by: String,
}

/// Errors reading a descriptor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The bytes are not a descriptor.
    #[error("repository descriptor is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
    /// Written by a newer walferry.
    #[error(
        "repository descriptor has format {found}, this walferry reads format {FORMAT}; HINT: upgrade walferry"
    )]
    UnsupportedFormat {
        /// The format found.
        found: u32,
    },
}

/// How a cluster differs from a repository's descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityMismatch {
    /// Another cluster.
    #[error("system identifier {found} does not match the repository's {expected}")]
    SystemIdentifier {
        /// The repository's.
        expected: u64,
        /// The cluster's.
        found: u64,
    },
    /// Another major version.
    #[error("PostgreSQL {found} does not match the repository's PostgreSQL {expected}")]
    PgVersion {
        /// The repository's.
        expected: PgVersion,
        /// The cluster's.
        found: PgVersion,
    },
    /// Another segment size.
    #[error("WAL segment size {found} does not match the repository's {expected}")]
    SegmentSize {
        /// The repository's.
        expected: WalSegSize,
        /// The cluster's.
        found: WalSegSize,
    },
}

impl RepoDescriptor {
    /// A descriptor for a new repository of `identity`.
    pub fn new(identity: ClusterIdentity) -> RepoDescriptor {
        RepoDescriptor {
            format: FORMAT,
            system_identifier: identity.system_identifier,
            pg_version: identity.pg_version,
            wal_segment_size: identity.wal_segment_size,
            created_by: concat!("walferry ", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// The identity recorded.
    pub fn identity(&self) -> ClusterIdentity {
        ClusterIdentity {
            system_identifier: self.system_identifier,
            pg_version: self.pg_version,
            wal_segment_size: self.wal_segment_size,
        }
    }

    /// Parses stored bytes.
    pub fn from_json(bytes: &[u8]) -> Result<RepoDescriptor, DescriptorError> {
        #[derive(Deserialize)]
        struct FormatOnly {
            format: u32,
        }
        let FormatOnly { format } = serde_json::from_slice(bytes)?;
        if format != FORMAT {
            return Err(DescriptorError::UnsupportedFormat { found: format });
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a descriptor always serializes");
        out.push(b'\n');
        out
    }

    /// Checks that `identity` is the cluster this repository belongs to.
    pub fn check(&self, identity: &ClusterIdentity) -> Result<(), IdentityMismatch> {
        if identity.system_identifier != self.system_identifier {
            return Err(IdentityMismatch::SystemIdentifier {
                expected: self.system_identifier,
                found: identity.system_identifier,
            });
        }
        if identity.pg_version != self.pg_version {
            return Err(IdentityMismatch::PgVersion {
                expected: self.pg_version,
                found: identity.pg_version,
            });
        }
        if identity.wal_segment_size != self.wal_segment_size {
            return Err(IdentityMismatch::SegmentSize {
                expected: self.wal_segment_size,
                found: identity.wal_segment_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ClusterIdentity {
        ClusterIdentity {
            system_identifier: 7_441_234_567_890_123_456,
            pg_version: PgVersion::from_page_magic(0xD110).unwrap(),
            wal_segment_size: WalSegSize::DEFAULT,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let d = RepoDescriptor::new(identity());
        let text = String::from_utf8(d.to_json()).unwrap();
        assert!(
            text.contains("\"system_identifier\": \"7441234567890123456\""),
            "{text}"
        );
        assert!(text.contains("\"pg_version\": 15"), "{text}");
        assert!(text.contains("\"wal_segment_size\": 16777216"), "{text}");
        assert_eq!(RepoDescriptor::from_json(text.as_bytes()).unwrap(), d);
    }

    #[test]
    fn refuses_other_formats_and_garbage() {
        let err = RepoDescriptor::from_json(br#"{"format": 2}"#).unwrap_err();
        assert!(err.to_string().contains("upgrade walferry"), "{err}");
        assert!(RepoDescriptor::from_json(b"not json").is_err());
        let bad_size = br#"{"format":1,"system_identifier":"1","pg_version":15,"wal_segment_size":1000,"created_by":"x"}"#;
        assert!(RepoDescriptor::from_json(bad_size).is_err());
    }

    #[test]
    fn check_names_the_difference() {
        let d = RepoDescriptor::new(identity());
        assert!(d.check(&identity()).is_ok());
        let mut other = identity();
        other.system_identifier = 1;
        assert!(matches!(
            d.check(&other),
            Err(IdentityMismatch::SystemIdentifier { found: 1, .. })
        ));
        let mut other = identity();
        other.wal_segment_size = WalSegSize::new(1 << 20).unwrap();
        assert!(matches!(
            d.check(&other),
            Err(IdentityMismatch::SegmentSize { .. })
        ));
    }
}
