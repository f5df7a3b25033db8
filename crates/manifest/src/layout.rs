//! The repository's key layout: the one place that turns WAL file names into object keys.
//!
//! ```text
//! walferry.json                                        repository descriptor (see `descriptor`)
//! wal/<TLI:08X><LOG:08X>/<segment>                     a WAL segment
//! wal/<TLI:08X><LOG:08X>/<segment>.partial             the last, partial segment of a timeline
//! wal/<TLI:08X><LOG:08X>/<segment>.<OFFSET:08X>.backup a backup history file
//! wal/<TLI:08X>.history                                a timeline history file
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
//! ```

use walferry_store::ObjectKey;
use walferry_wal::WalFileName;

/// The prefix of every WAL object.
pub const WAL_PREFIX: &str = "wal/";

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
