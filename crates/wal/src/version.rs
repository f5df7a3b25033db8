//! PostgreSQL major versions and their WAL page magic numbers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A PostgreSQL major version whose WAL walferry understands.
///
/// WAL carries its version in every page header as `XLOG_PAGE_MAGIC` (xlog_internal.h), a
/// number bumped whenever the WAL format changes, so every major release has its own. The
/// values, from `XLOG_PAGE_MAGIC` on each release branch:
///
/// | version | magic |
/// | --- | --- |
/// | 13 (`REL_13_STABLE`) | `0xD106` |
/// | 14 (`REL_14_STABLE`) | `0xD10D` |
/// | 15 (`REL_15_STABLE`) | `0xD110` |
/// | 16 (`REL_16_STABLE`) | `0xD113` |
/// | 17 (`REL_17_STABLE`) | `0xD116` |
///
/// Development snapshots use values in between; they are not recognised. Displayed as the
/// major number (`15`); serde writes that number and checks it when reading.
///
/// ```
/// use walferry_wal::PgVersion;
///
/// let version = PgVersion::from_page_magic(0xD110).unwrap();
/// assert_eq!(version, PgVersion::V15);
/// assert_eq!(version.major(), 15);
/// assert_eq!(version.to_string(), "15");
/// assert_eq!(PgVersion::from_page_magic(0xD101), None); // PostgreSQL 12
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
#[non_exhaustive]
pub enum PgVersion {
    /// PostgreSQL 13.
    V13,
    /// PostgreSQL 14.
    V14,
    /// PostgreSQL 15.
    V15,
    /// PostgreSQL 16.
    V16,
    /// PostgreSQL 17.
    V17,
}

impl PgVersion {
    /// Every supported version, oldest first.
    pub const ALL: [PgVersion; 5] = [
        PgVersion::V13,
        PgVersion::V14,
        PgVersion::V15,
        PgVersion::V16,
        PgVersion::V17,
    ];

    /// The version whose `XLOG_PAGE_MAGIC` this is, or `None` for an unsupported or unknown
    /// value.
    pub const fn from_page_magic(magic: u16) -> Option<Self> {
        match magic {
            0xD106 => Some(PgVersion::V13),
            0xD10D => Some(PgVersion::V14),
            0xD110 => Some(PgVersion::V15),
            0xD113 => Some(PgVersion::V16),
            0xD116 => Some(PgVersion::V17),
            _ => None,
        }
    }

    /// The version with this major number, or `None` when it is not supported.
    pub const fn from_major(major: u32) -> Option<Self> {
        match major {
            13 => Some(PgVersion::V13),
            14 => Some(PgVersion::V14),
            15 => Some(PgVersion::V15),
            16 => Some(PgVersion::V16),
            17 => Some(PgVersion::V17),
            _ => None,
        }
    }

    /// The major version number, as in `PG_MAJORVERSION_NUM`.
    pub const fn major(self) -> u32 {
        match self {
            PgVersion::V13 => 13,
            PgVersion::V14 => 14,
            PgVersion::V15 => 15,
            PgVersion::V16 => 16,
            PgVersion::V17 => 17,
        }
    }

    /// This version's `XLOG_PAGE_MAGIC` (xlog_internal.h).
    pub const fn page_magic(self) -> u16 {
        match self {
            PgVersion::V13 => 0xD106,
            PgVersion::V14 => 0xD10D,
            PgVersion::V15 => 0xD110,
            PgVersion::V16 => 0xD113,
            PgVersion::V17 => 0xD116,
        }
    }
}

impl TryFrom<u32> for PgVersion {
    type Error = Error;

    fn try_from(major: u32) -> Result<Self, Self::Error> {
        Self::from_major(major).ok_or(Error::UnsupportedPgVersion { major })
    }
}

impl From<PgVersion> for u32 {
    fn from(version: PgVersion) -> Self {
        version.major()
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.major(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            (PgVersion::V13, 13, 0xD106),
            (PgVersion::V14, 14, 0xD10D),
            (PgVersion::V15, 15, 0xD110),
            (PgVersion::V16, 16, 0xD113),
            (PgVersion::V17, 17, 0xD116),
        ];
        assert_eq!(cases.len(), PgVersion::ALL.len());
        for ((version, major, magic), listed) in cases.into_iter().zip(PgVersion::ALL) {
            assert_eq!(version, listed);
            assert_eq!(version.major(), major);
            assert_eq!(version.page_magic(), magic);
            assert_eq!(PgVersion::from_page_magic(magic), Some(version));
            assert_eq!(PgVersion::from_major(major), Some(version));
            assert_eq!(version.to_string(), major.to_string());
        }
    }

    #[test]
    fn unknown_values() {
        // 12's magic, a 17 development snapshot's, and 18's.
        for magic in [0, 0xD101, 0xD114, 0xD118, 0x10D1, u16::MAX] {
            assert_eq!(PgVersion::from_page_magic(magic), None, "{magic:04X}");
        }
        for major in [0, 12, 18, 130] {
            assert_eq!(PgVersion::from_major(major), None);
            assert_eq!(
                PgVersion::try_from(major),
                Err(Error::UnsupportedPgVersion { major })
            );
        }
    }

    #[test]
    fn serde_uses_major_number() {
        assert_eq!(serde_json::to_string(&PgVersion::V16).unwrap(), "16");
        assert_eq!(
            serde_json::from_str::<PgVersion>("16").unwrap(),
            PgVersion::V16
        );
        assert!(serde_json::from_str::<PgVersion>("12").is_err());
        assert!(serde_json::from_str::<PgVersion>("\"16\"").is_err());
    }
}
