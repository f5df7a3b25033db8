//! Backup manifests: what a base backup holds and where each byte of it is stored.
//!
//! A base backup is the tar streams PostgreSQL's `BASE_BACKUP` sends: one for the data
//! directory (`base.tar`) and one per tablespace (`<oid>.tar`). walferry cuts each stream into
//! *parts*, compresses each part into one object, and lists every file of the stream with the
//! offset of its content in the uncompressed stream, its size and its CRC-32 (IEEE, as
//! `crc32fast` computes it). So restore can check every file it unpacks, and
//! `verify` can check one file by fetching only the parts that hold it
//! ([`BackupManifest::parts_for`]).
//!
//! The manifest is written last, after every part is stored: it is the backup's commit point.
//! A backup without a manifest does not exist for `info` and `restore`.
//!
//! # Format
//!
//! JSON, versioned by `format` ([`FORMAT`]). Unknown fields are ignored, so later versions can
//! add some; a different `format` is refused. For example:
//!
//! ```json
//! {
//!   "format": 1,
//!   "label": "20261125T050000Z",
//!   "system_identifier": "7441234567890123456",
//!   "pg_version": 15,
//!   "wal_segment_size": 16777216,
//!   "start_lsn": "0/5000028",
//!   "start_timeline": 1,
//!   "stop_lsn": "0/5000138",
//!   "stop_timeline": 1,
//!   "start_time": "2026-11-25T05:00:00Z",
//!   "stop_time": "2026-11-25T05:00:07.250000Z",
//!   "tablespaces": [
//!     { "oid": 16385, "location": "/srv/pg/fast", "original_bytes": 1024 }
//!   ],
//!   "parts": [
//!     { "name": "base.tar.0000.zst", "offset": 0, "original_bytes": 3072,
//!       "compressed_bytes": 310, "crc32": "5fd1b2a0" },
//!     { "tablespace": 16385, "name": "16385.tar.0000.zst", "offset": 0,
//!       "original_bytes": 1024, "compressed_bytes": 98, "crc32": "0a1b2c3d" }
//!   ],
//!   "files": [
//!     { "path": "PG_VERSION", "mode": "0600", "mtime": "2026-11-20T09:12:00Z",
//!       "kind": "file", "size": 3, "crc32": "b0d2aa45", "offset": 512 },
//!     { "path": "global", "mode": "0700", "kind": "dir" },
//!     { "path": "pg_tblspc/16385", "mode": "0777", "kind": "symlink",
//!       "target": "/srv/pg/fast" },
//!     { "tablespace": 16385, "path": "PG_15_202209061", "mode": "0700", "kind": "dir" }
//!   ],
//!   "totals": { "files": 1, "original_bytes": 4096, "compressed_bytes": 408 }
//! }
//! ```
//!
//! - `system_identifier` is a string, because it does not fit in a JSON number every reader
//!   parses exactly. Positions are LSN text, times RFC 3339 in UTC (see [`Timestamp`]).
//! - `start_lsn`/`start_timeline` are the backup's checkpoint redo position and its timeline
//!   (`START WAL LOCATION` in `backup_label`); `stop_lsn`/`stop_timeline` the end of the
//!   backup (`pg_backup_stop`), the point where recovery from this backup becomes consistent.
//! - A part or file without `tablespace` belongs to the data directory's stream; with one, to
//!   that tablespace's stream. Parts of one stream are listed in order and together cover it
//!   without gaps: each part's `offset` is the sum of the `original_bytes` before it. A part's
//!   `name` is its key relative to the backup's prefix (see [`layout`](crate::layout)); its
//!   `crc32` is over the uncompressed bytes.
//! - A file's `path` is relative to the root of its stream (the data directory or the
//!   tablespace directory), `/`-separated, as in the tar member. `mode` is the permission bits
//!   in octal. A regular file has `size`, `crc32` (of its content) and `offset`: where its
//!   content starts in the uncompressed stream. Directories and links have no content.
//! - `totals` counts regular files and sums the parts' sizes.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use walferry_wal::{Lsn, PgVersion, TimelineId, WalSegSize};

use crate::descriptor::ClusterIdentity;
use crate::timestamp::Timestamp;

/// The format version this code writes and reads.
pub const FORMAT: u32 = 1;

/// A PostgreSQL object identifier, here a tablespace's (`pg_tablespace.oid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Oid(pub u32);

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A CRC-32 (IEEE polynomial, as `crc32fast` computes). Serde writes eight lower-case
/// hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Crc32(pub u32);

impl fmt::Display for Crc32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for Crc32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Crc32({self})")
    }
}

impl Serialize for Crc32 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Crc32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() != 8 {
            return Err(serde::de::Error::custom(format!(
                "crc32 '{text}' is not eight hexadecimal digits"
            )));
        }
        u32::from_str_radix(&text, 16)
            .map(Crc32)
            .map_err(|_| serde::de::Error::custom(format!("crc32 '{text}' is not hexadecimal")))
    }
}

/// The manifest of one base backup. See the [module documentation](self) for the format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// Format version; [`FORMAT`] today.
    pub format: u32,
    /// The backup's name, unique in the repository; also its key prefix.
    pub label: String,
    /// The cluster's system identifier, as decimal text in JSON.
    #[serde(with = "crate::u64_as_string")]
    pub system_identifier: u64,
    /// The PostgreSQL major version.
    pub pg_version: PgVersion,
    /// The WAL segment size.
    pub wal_segment_size: WalSegSize,
    /// Where replay starts: the redo point of the backup's checkpoint.
    pub start_lsn: Lsn,
    /// The timeline of `start_lsn`.
    pub start_timeline: TimelineId,
    /// Where the backup ended: recovery from it is consistent once replay reaches this point.
    pub stop_lsn: Lsn,
    /// The timeline of `stop_lsn`.
    pub stop_timeline: TimelineId,
    /// When the backup started.
    pub start_time: Timestamp,
    /// When the backup ended.
    pub stop_time: Timestamp,
    /// The tablespaces other than the default ones, in the order their streams were sent.
    #[serde(default)]
    pub tablespaces: Vec<Tablespace>,
    /// The stored parts, each stream's in order.
    pub parts: Vec<BackupPart>,
    /// Every member of every stream.
    pub files: Vec<BackupFile>,
    /// Counts and sizes over the whole backup.
    pub totals: Totals,
}

/// A tablespace in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    /// Its OID, also the name of its link under `pg_tblspc`.
    pub oid: Oid,
    /// Its directory on the backed-up server (`pg_tablespace_location()`).
    pub location: String,
    /// The size of its tar stream.
    pub original_bytes: u64,
}

/// One stored piece of a tar stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPart {
    /// The tablespace whose stream this is part of; `None` for the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace: Option<Oid>,
    /// The object's key relative to the backup's prefix.
    pub name: String,
    /// Where the part starts in its uncompressed stream.
    pub offset: u64,
    /// Its uncompressed size.
    pub original_bytes: u64,
    /// Its stored (compressed) size.
    pub compressed_bytes: u64,
    /// CRC-32 of the uncompressed bytes.
    pub crc32: Crc32,
}

/// One member of a tar stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// The tablespace whose stream holds it; `None` for the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace: Option<Oid>,
    /// Its path relative to the root of its stream, `/`-separated.
    pub path: String,
    /// Permission bits; octal text in JSON.
    #[serde(with = "octal")]
    pub mode: u32,
    /// Modification time, when the tar member has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<Timestamp>,
    /// What it is, with its content's location for a regular file.
    #[serde(flatten)]
    pub kind: FileKind,
}

/// What a [`BackupFile`] is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FileKind {
    /// A regular file.
    File {
        /// Its size in bytes.
        size: u64,
        /// CRC-32 of its content.
        crc32: Crc32,
        /// Where its content starts in the uncompressed stream.
        offset: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink {
        /// Where it points.
        target: String,
    },
}

/// Counts and sizes over a whole backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    /// The number of regular files.
    pub files: u64,
    /// The sum of the parts' uncompressed sizes.
    pub original_bytes: u64,
    /// The sum of the parts' stored sizes.
    pub compressed_bytes: u64,
}

/// The facts about a backup that restore planning needs; see [`BackupManifest::summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The backup's label.
    pub label: String,
    /// The cluster it belongs to.
    pub identity: ClusterIdentity,
    /// Where replay starts.
    pub start_lsn: Lsn,
    /// The timeline of `start_lsn`.
    pub start_timeline: TimelineId,
    /// Where recovery becomes consistent.
    pub stop_lsn: Lsn,
    /// The timeline of `stop_lsn`.
    pub stop_timeline: TimelineId,
    /// When the backup started.
    pub start_time: Timestamp,
    /// When the backup ended.
    pub stop_time: Timestamp,
}

/// Why bytes are not a valid backup manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not JSON of the right shape.
    #[error("backup manifest is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
    /// Written by a newer walferry.
    #[error(
        "backup manifest has format {found}, this walferry reads format {FORMAT}; HINT: upgrade walferry"
    )]
    UnsupportedFormat {
        /// The format found.
        found: u32,
    },
    /// Well-formed JSON whose content contradicts itself.
    #[error("backup manifest '{label}' is inconsistent: {reason}")]
    Inconsistent {
        /// The backup's label.
        label: String,
        /// What is wrong.
        reason: String,
    },
}

impl BackupManifest {
    /// Parses and [validates](BackupManifest::validate) stored bytes.
    pub fn from_json(bytes: &[u8]) -> Result<BackupManifest, ManifestError> {
        #[derive(Deserialize)]
        struct FormatOnly {
            format: u32,
        }
        let FormatOnly { format } = serde_json::from_slice(bytes)?;
        if format != FORMAT {
            return Err(ManifestError::UnsupportedFormat { found: format });
        }
        let manifest: BackupManifest = serde_json::from_slice(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The stored form: pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        out.push(b'\n');
        out
    }

    /// The cluster the backup belongs to.
    pub fn identity(&self) -> ClusterIdentity {
        ClusterIdentity {
            system_identifier: self.system_identifier,
            pg_version: self.pg_version,
            wal_segment_size: self.wal_segment_size,
        }
    }

    /// What restore planning needs to know.
    pub fn summary(&self) -> BackupSummary {
        BackupSummary {
            label: self.label.clone(),
            identity: self.identity(),
            start_lsn: self.start_lsn,
            start_timeline: self.start_timeline,
            stop_lsn: self.stop_lsn,
            stop_timeline: self.stop_timeline,
            start_time: self.start_time,
            stop_time: self.stop_time,
        }
    }

    /// The totals the parts and files add up to, for filling in [`BackupManifest::totals`].
    pub fn compute_totals(&self) -> Totals {
        Totals {
            files: self
                .files
                .iter()
                .filter(|f| matches!(f.kind, FileKind::File { .. }))
                .count() as u64,
            original_bytes: self.parts.iter().map(|p| p.original_bytes).sum(),
            compressed_bytes: self.parts.iter().map(|p| p.compressed_bytes).sum(),
        }
    }

    /// The parts of one stream (`None`: the data directory's), in order.
    pub fn stream_parts(&self, tablespace: Option<Oid>) -> impl Iterator<Item = &BackupPart> {
        self.parts
            .iter()
            .filter(move |part| part.tablespace == tablespace)
    }

    /// The parts holding `file`'s content, in order; empty for a directory, a link or an
    /// empty file.
    pub fn parts_for(&self, file: &BackupFile) -> Vec<&BackupPart> {
        let FileKind::File { size, offset, .. } = file.kind else {
            return Vec::new();
        };
        let end = offset.saturating_add(size);
        self.stream_parts(file.tablespace)
            .filter(|part| {
                let part_end = part.offset.saturating_add(part.original_bytes);
                part.offset < end && offset < part_end
            })
            .collect()
    }

    /// Checks that the manifest is consistent with itself: the label is a valid key
    /// component, the backup ends after it starts, every stream's parts cover it in order,
    /// every file's content lies inside its stream and names a known tablespace, paths are
    /// relative without `..`, and the totals add up. [`BackupManifest::from_json`] calls it.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let fail = |reason: String| ManifestError::Inconsistent {
            label: self.label.clone(),
            reason,
        };
        if let Some(reason) = label_problem(&self.label) {
            return Err(fail(format!("label {reason}")));
        }
        if self.stop_lsn < self.start_lsn {
            return Err(fail(format!(
                "stop LSN {} is before start LSN {}",
                self.stop_lsn, self.start_lsn
            )));
        }
        if self.stop_timeline < self.start_timeline {
            return Err(fail(format!(
                "stop timeline {} is before start timeline {}",
                self.stop_timeline, self.start_timeline
            )));
        }
        if self.stop_time < self.start_time {
            return Err(fail(format!(
                "stop time {} is before start time {}",
                self.stop_time, self.start_time
            )));
        }
        let mut oids = BTreeSet::new();
        for ts in &self.tablespaces {
            if !oids.insert(ts.oid) {
                return Err(fail(format!("tablespace {} is listed twice", ts.oid)));
            }
        }
        let known = |oid: Option<Oid>| oid.is_none_or(|oid| oids.contains(&oid));
        // Each stream's parts, in order, must start at 0 and follow each other.
        let mut stream_len = std::collections::BTreeMap::<Option<Oid>, u64>::new();
        let mut names = BTreeSet::new();
        for part in &self.parts {
            if !known(part.tablespace) {
                return Err(fail(format!(
                    "part '{}' belongs to unknown tablespace {}",
                    part.name,
                    part.tablespace.map_or(0, |o| o.0)
                )));
            }
            if !names.insert(part.name.as_str()) {
                return Err(fail(format!("part '{}' is listed twice", part.name)));
            }
            if let Some(reason) = part_name_problem(&part.name) {
                return Err(fail(format!("part name '{}' {reason}", part.name)));
            }
            let len = stream_len.entry(part.tablespace).or_insert(0);
            if part.offset != *len {
                return Err(fail(format!(
                    "part '{}' starts at {} but the parts before it end at {}",
                    part.name, part.offset, len
                )));
            }
            *len = len
                .checked_add(part.original_bytes)
                .ok_or_else(|| fail(format!("part '{}' overflows", part.name)))?;
        }
        for file in &self.files {
            if !known(file.tablespace) {
                return Err(fail(format!(
                    "file '{}' is in an unknown tablespace",
                    file.path
                )));
            }
            if file.path.is_empty()
                || file.path.starts_with('/')
                || file.path.split('/').any(|c| c.is_empty() || c == "..")
            {
                return Err(fail(format!(
                    "file path '{}' is not a plain relative path",
                    file.path
                )));
            }
            if let FileKind::File { size, offset, .. } = file.kind {
                let len = stream_len.get(&file.tablespace).copied().unwrap_or(0);
                if offset.checked_add(size).is_none_or(|end| end > len) {
                    return Err(fail(format!(
                        "file '{}' ends after its stream's last part",
                        file.path
                    )));
                }
            }
        }
        let totals = self.compute_totals();
        if totals != self.totals {
            return Err(fail(format!(
                "totals {:?} do not match the parts and files, which add up to {totals:?}",
                self.totals
            )));
        }
        Ok(())
    }
}

/// Why `label` cannot name a backup, or `None` when it can: 1 to 64 ASCII letters, digits,
/// `-`, `_` and `.`, not starting with `.`, so it is one valid key component everywhere.
pub fn label_problem(label: &str) -> Option<&'static str> {
    if label.is_empty() || label.len() > 64 {
        return Some("must be 1 to 64 characters");
    }
    if label.starts_with('.') {
        return Some("must not start with '.'");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("may only contain ASCII letters, digits, '-', '_' and '.'");
    }
    None
}

fn part_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 255 {
        return Some("must be 1 to 255 characters");
    }
    if name.starts_with('.') || name.contains('/') || name.contains('\\') {
        return Some("must be one key component not starting with '.'");
    }
    if name.chars().any(char::is_control) {
        return Some("must not contain control characters");
    }
    None
}

mod octal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let text = String::deserialize(d)?;
        u32::from_str_radix(&text, 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)
            .ok_or_else(|| serde::de::Error::custom(format!("mode '{text}' is not octal bits")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The example from the module documentation.
    const EXAMPLE: &str = r#"{
  "format": 1,
  "label": "20261125T050000Z",
  "system_identifier": "7441234567890123456",
  "pg_version": 15,
  "wal_segment_size": 16777216,
  "start_lsn": "0/5000028",
  "start_timeline": 1,
  "stop_lsn": "0/5000138",
  "stop_timeline": 1,
  "start_time": "2026-11-25T05:00:00Z",
  "stop_time": "2026-11-25T05:00:07.250000Z",
  "tablespaces": [
    { "oid": 16385, "location": "/srv/pg/fast", "original_bytes": 1024 }
  ],
  "parts": [
    { "name": "base.tar.0000.zst", "offset": 0, "original_bytes": 3072,
      "compressed_bytes": 310, "crc32": "5fd1b2a0" },
    { "tablespace": 16385, "name": "16385.tar.0000.zst", "offset": 0,
      "original_bytes": 1024, "compressed_bytes": 98, "crc32": "0a1b2c3d" }
  ],
  "files": [
    { "path": "PG_VERSION", "mode": "0600", "mtime": "2026-11-20T09:12:00Z",
      "kind": "file", "size": 3, "crc32": "b0d2aa45", "offset": 512 },
    { "path": "global", "mode": "0700", "kind": "dir" },
    { "path": "pg_tblspc/16385", "mode": "0777", "kind": "symlink",
      "target": "/srv/pg/fast" },
    { "tablespace": 16385, "path": "PG_15_202209061", "mode": "0700", "kind": "dir" }
  ],
  "totals": { "files": 1, "original_bytes": 4096, "compressed_bytes": 408 }
}"#;

    fn example() -> BackupManifest {
        BackupManifest::from_json(EXAMPLE.as_bytes()).unwrap()
    }

    #[test]
    fn reads_the_documented_example() {
        let doc = include_str!("backup.rs");
        let in_docs: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```json"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.strip_prefix("//! ").unwrap_or("").to_owned() + "\n")
            .collect();
        assert_eq!(
            in_docs.trim(),
            EXAMPLE.trim(),
            "module docs and test drifted"
        );

        let m = example();
        assert_eq!(m.system_identifier, 7_441_234_567_890_123_456);
        assert_eq!(m.stop_lsn, Lsn(0x500_0138));
        assert_eq!(m.files[0].mode, 0o600);
        assert_eq!(
            m.files[0].kind,
            FileKind::File {
                size: 3,
                crc32: Crc32(0xb0d2_aa45),
                offset: 512
            }
        );
        assert_eq!(
            m.files[2].kind,
            FileKind::Symlink {
                target: "/srv/pg/fast".into()
            }
        );
        assert_eq!(m.files[3].tablespace, Some(Oid(16385)));
        assert_eq!(m.compute_totals(), m.totals);
        let parts = m.parts_for(&m.files[0]);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].name, "base.tar.0000.zst");
        assert!(m.parts_for(&m.files[1]).is_empty());
    }

    #[test]
    fn round_trips_through_json() {
        let m = example();
        let text = String::from_utf8(m.to_json()).unwrap();
        assert!(
            text.contains("\"system_identifier\": \"7441234567890123456\""),
            "{text}"
        );
        assert!(text.contains("\"mode\": \"0600\""), "{text}");
        assert!(text.contains("\"crc32\": \"0a1b2c3d\""), "{text}");
        assert!(!text.contains("\"tablespace\": null"), "{text}");
        assert_eq!(BackupManifest::from_json(text.as_bytes()).unwrap(), m);
    }

    #[test]
    fn finds_the_parts_a_file_spans() {
        let mut m = example();
        m.parts = (0..4)
            .map(|i| BackupPart {
                tablespace: None,
                name: format!("base.tar.{i:04}.zst"),
                offset: i * 1000,
                original_bytes: 1000,
                compressed_bytes: 10,
                crc32: Crc32(0),
            })
            .chain(std::iter::once(m.parts[1].clone()))
            .collect();
        m.files[0].kind = FileKind::File {
            size: 1500,
            crc32: Crc32(1),
            offset: 900,
        };
        m.totals = m.compute_totals();
        m.validate().unwrap();
        let names: Vec<_> = m
            .parts_for(&m.files[0])
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "base.tar.0000.zst",
                "base.tar.0001.zst",
                "base.tar.0002.zst"
            ]
        );
    }

    #[test]
    fn refuses_inconsistent_manifests() {
        type Edit = fn(&mut BackupManifest);
        let cases: &[(&str, Edit)] = &[
            ("label", |m| m.label = "../x".into()),
            ("stop LSN", |m| m.stop_lsn = Lsn(1)),
            ("stop timeline", |m| {
                m.start_timeline = TimelineId::new(2).unwrap()
            }),
            ("stop time", |m| m.stop_time = Timestamp::MIN),
            ("starts at", |m| m.parts[0].offset = 1),
            ("unknown tablespace", |m| m.tablespaces.clear()),
            ("ends after", |m| {
                m.files[0].kind = FileKind::File {
                    size: 4000,
                    crc32: Crc32(0),
                    offset: 0,
                }
            }),
            ("plain relative", |m| m.files[1].path = "a/../b".into()),
            ("plain relative", |m| m.files[1].path = "/etc".into()),
            ("totals", |m| m.totals.files = 7),
            ("listed twice", |m| {
                let p = m.parts[1].clone();
                m.parts.push(p);
            }),
        ];
        for (expect, edit) in cases {
            let mut m = example();
            edit(&mut m);
            let err = m.validate().unwrap_err();
            assert!(err.to_string().contains(expect), "{expect}: {err}");
            let err = BackupManifest::from_json(&m.to_json()).unwrap_err();
            assert!(matches!(err, ManifestError::Inconsistent { .. }), "{err}");
        }
        let err = BackupManifest::from_json(br#"{"format": 2}"#).unwrap_err();
        assert!(err.to_string().contains("upgrade walferry"), "{err}");
        let bad_crc = EXAMPLE.replace("5fd1b2a0", "5fd1b2");
        assert!(BackupManifest::from_json(bad_crc.as_bytes()).is_err());
        let bad_mode = EXAMPLE.replace("\"0600\"", "\"0800\"");
        assert!(BackupManifest::from_json(bad_mode.as_bytes()).is_err());
    }
}
