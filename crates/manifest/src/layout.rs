//! The repository's key layout: the one place that turns WAL file names into object keys.
//!
//! ```text
//! walferry.json                                        repository descriptor (see `descriptor`)
//! wal/<TLI:08X><LOG:08X>/<segment>                     a WAL segment
//! wal/<TLI:08X><LOG:08X>/<segment>.partial             the last, partial segment of a timeline
//! wal/<TLI:08X><LOG:08X>/<segment>.<OFFSET:08X>.backup a backup history file
//! wal/<TLI:08X>.history                                a timeline history file
//! backups/<label>/manifest.json                        a backup's manifest (see `backup`)
//! backups/<label>/<part>                               a part of a backup's tar streams
//! ```
//!
//! Segments are grouped by their first 16 hexadecimal digits (timeline and "log" number), so that
//! one directory or listing holds at most 4096 segments with the default 16 MiB size (4 GiB of
//! WAL). Keys are deterministic — no checksum in the name — so a create-only put can refuse to
//! replace an object. Every object under `wal/` is in walferry's frame format
//! (`walferry-codec`): self-describing, compressed, checksummed.
//!
//! Worked example, a cluster on timeline 2 with 16 MiB segments:
//!
//! ```
//! use walferry_manifest::layout;
//! use walferry_wal::WalFileName;
//!
//! let name: WalFileName = "00000002000000A1000000FE".parse().unwrap();
//! assert_eq!(layout::wal_key(&name).as_str(), "wal/00000002000000A1/00000002000000A1000000FE");
//! let partial: WalFileName = "00000001000000A1000000FE.partial".parse().unwrap();
//! assert_eq!(layout::wal_key(&partial).as_str(), "wal/00000001000000A1/00000001000000A1000000FE.partial");
//! let history: WalFileName = "00000002.history".parse().unwrap();
//! assert_eq!(layout::wal_key(&history).as_str(), "wal/00000002.history");
//! let backup: WalFileName = "000000020000000000000003.00000028.backup".parse().unwrap();
//! assert_eq!(layout::wal_key(&backup).as_str(), "wal/0000000200000000/000000020000000000000003.00000028.backup");
//! assert_eq!(layout::descriptor_key().as_str(), "walferry.json");
//!
//! // Listing `wal/` and reading the names back.
//! assert_eq!(layout::parse_wal_key(&layout::wal_key(&backup)), Some(backup));
//! let stray = walferry_store::ObjectKey::new("wal/0000000100000000/notes.txt").unwrap();
//! assert_eq!(layout::parse_wal_key(&stray), None);
//!
//! assert_eq!(
//!     layout::backup_manifest_key("20261125T050000Z").unwrap().as_str(),
//!     "backups/20261125T050000Z/manifest.json"
//! );
//! ```
//!
//! A backup's manifest is written after all its parts, so a listing of `backups/` may show
//! parts of a backup that has no manifest: an interrupted or running backup, which does not
//! count as a backup.

use walferry_store::ObjectKey;
use walferry_wal::WalFileName;

/// The prefix of every WAL object.
pub const WAL_PREFIX: &str = "wal/";

/// The prefix of every backup object.
pub const BACKUP_PREFIX: &str = "backups/";

/// The file name of a backup's manifest inside its prefix.
pub const MANIFEST_NAME: &str = "manifest.json";

/// The repository descriptor's key.
pub fn descriptor_key() -> ObjectKey {
    ObjectKey::new("walferry.json").expect("a constant, valid key")
}

/// The key of a WAL file of any kind.
pub fn wal_key(name: &WalFileName) -> ObjectKey {
    let raw = match name {
        WalFileName::History(_) => format!("{WAL_PREFIX}{name}"),
        WalFileName::Segment(seg)
        | WalFileName::Partial(seg)
        | WalFileName::BackupHistory { segment: seg, .. } => {
            format!("{WAL_PREFIX}{}/{name}", seg.log_dir())
        }
    };
    // WAL file names are hexadecimal digits and dots, never starting with a dot.
    ObjectKey::new(raw).expect("a WAL file name always makes a valid key")
}

/// The WAL file a key under [`WAL_PREFIX`] stores: the inverse of [`wal_key`].
///
/// `None` for any key [`wal_key`] does not produce, such as a segment filed under another
/// timeline's or log's directory, or an object that is not a WAL file at all; a listing
/// should report those rather than trust them.
pub fn parse_wal_key(key: &ObjectKey) -> Option<WalFileName> {
    let rest = key.as_str().strip_prefix(WAL_PREFIX)?;
    let name = match rest.split_once('/') {
        None => WalFileName::parse(rest)
            .ok()
            .filter(WalFileName::is_history)?,
        Some((dir, file)) => {
            let name = WalFileName::parse(file).ok()?;
            let segment = name.segment()?;
            (segment.log_dir() == dir).then_some(name)?
        }
    };
    Some(name)
}

/// The prefix under which backup `label` stores its parts and manifest, with a trailing
/// `/`; fails when the label is not valid ([`label_problem`](crate::backup::label_problem)).
pub fn backup_prefix(label: &str) -> Result<String, &'static str> {
    match crate::backup::label_problem(label) {
        Some(reason) => Err(reason),
        None => Ok(format!("{BACKUP_PREFIX}{label}/")),
    }
}

/// The key of backup `label`'s manifest.
pub fn backup_manifest_key(label: &str) -> Result<ObjectKey, &'static str> {
    let raw = backup_prefix(label)? + MANIFEST_NAME;
    ObjectKey::new(raw).map_err(|_| "does not make a valid key")
}

/// The key of part `name` of backup `label` (see [`BackupPart::name`]).
///
/// [`BackupPart::name`]: crate::backup::BackupPart::name
pub fn backup_part_key(label: &str, name: &str) -> Result<ObjectKey, &'static str> {
    if name == MANIFEST_NAME || name.contains('/') {
        return Err("is not a part name");
    }
    let raw = backup_prefix(label)? + name;
    ObjectKey::new(raw).map_err(|_| "does not make a valid key")
}

/// The label of the backup whose manifest `key` is, for reading a listing of
/// [`BACKUP_PREFIX`]; `None` for any other key.
pub fn parse_backup_manifest_key(key: &ObjectKey) -> Option<&str> {
    let label = key
        .as_str()
        .strip_prefix(BACKUP_PREFIX)?
        .strip_suffix(MANIFEST_NAME)?
        .strip_suffix('/')?;
    crate::backup::label_problem(label)
        .is_none()
        .then_some(label)
}

/// The label of the backup an object under [`BACKUP_PREFIX`] belongs to (its manifest or one
/// of its parts), for reading a listing; `None` for a key outside any valid label.
pub fn backup_label_of(key: &ObjectKey) -> Option<&str> {
    let (label, _) = key.as_str().strip_prefix(BACKUP_PREFIX)?.split_once('/')?;
    crate::backup::label_problem(label)
        .is_none()
        .then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_name_their_backup() {
        let key = |k: &str| ObjectKey::new(k.to_owned()).unwrap();
        assert_eq!(
            backup_label_of(&key("backups/20261125T050000Z/base.tar.0000.zst")),
            Some("20261125T050000Z")
        );
        assert_eq!(backup_label_of(&key("backups/b/manifest.json")), Some("b"));
        assert_eq!(backup_label_of(&key("backups/stray")), None);
        assert_eq!(backup_label_of(&key("wal/00000002.history")), None);
    }

    #[test]
    fn wal_keys_round_trip_and_strays_are_rejected() {
        for name in [
            "000000010000000000000001",
            "0000000A00000001000000FF",
            "000000020000000000000003.partial",
            "000000020000000000000003.00000028.backup",
            "0000002A.history",
        ] {
            let name = WalFileName::parse(name).unwrap();
            assert_eq!(parse_wal_key(&wal_key(&name)), Some(name), "{name}");
        }
        for key in [
            "wal/0000000100000001/000000010000000000000001",
            "wal/0000000200000000/000000010000000000000001",
            "wal/000000010000000000000001",
            "wal/0000000100000000/00000001.history",
            "wal/0000000100000000/x/000000010000000000000001",
            "walferry.json",
            "wal/notes",
            "backups/x/manifest.json",
        ] {
            let key = ObjectKey::new(key).unwrap();
            assert_eq!(parse_wal_key(&key), None, "{key}");
        }
    }

    #[test]
    fn backup_keys() {
        let key = backup_manifest_key("b1").unwrap();
        assert_eq!(key.as_str(), "backups/b1/manifest.json");
        assert_eq!(parse_backup_manifest_key(&key), Some("b1"));
        assert_eq!(
            backup_part_key("b1", "base.tar.0000.zst").unwrap().as_str(),
            "backups/b1/base.tar.0000.zst"
        );
        assert!(backup_part_key("b1", "manifest.json").is_err());
        assert!(backup_manifest_key("../x").is_err());
        assert!(backup_manifest_key("").is_err());
        let part = backup_part_key("b1", "base.tar.0000.zst").unwrap();
        assert_eq!(parse_backup_manifest_key(&part), None);
    }
}
