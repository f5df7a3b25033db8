//! Figures measured by restores, recorded in the repository for later estimates.
//!
//! At the end of each recovery the WAL prefetch pipeline saves one [`ReplayRecord`]: how much
//! WAL PostgreSQL replayed and how long it took. `walferry-restore estimate` reads the newest
//! records to predict how fast PostgreSQL will replay the next restore on this cluster's WAL.
//!
//! # Layout and format
//!
//! One JSON object per record, written once with a create-only put and never changed:
//!
//! ```text
//! stats/replay/<recorded_at, YYYYMMDDTHHMMSS.ffffffZ>-<16 hexadecimal digits>.json
//! ```
//!
//! The time first, at a fixed width, so that a listing (sorted by key) is in recording order;
//! the random suffix keeps two records of the same microsecond apart. For example
//! `stats/replay/20261125T050000.250000Z-9f3c2a1b7d4e6f80.json` holds
//!
//! ```json
//! {
//!   "recorded_at": "2026-11-25T05:00:00.250000Z",
//!   "wal_bytes": 2147483648,
//!   "segments": 128,
//!   "seconds": 7.42,
//!   "stalls": 0,
//!   "cores": 2,
//!   "startup_seconds": 0.41,
//!   "end_seconds": 0.62
//! }
//! ```
//!
//! `startup_seconds` and `end_seconds` (what recovery spends outside replaying the segments
//! it takes) are absent from records that did not measure them.
//!
//! Unknown fields are ignored, so later versions can add some. Nothing else in the repository
//! depends on these objects: the catalog, `info` and `verify` read only `wal/`, `backups/` and
//! the descriptor, and a repository with no `stats/` at all is complete.
//!
//! ```
//! use walferry_manifest::Timestamp;
//! use walferry_manifest::stats::{ReplayRecord, replay_record_key};
//!
//! let record = ReplayRecord {
//!     recorded_at: Timestamp::parse("2026-11-25T05:00:00.25Z").unwrap(),
//!     wal_bytes: 128 << 24,
//!     segments: 128,
//!     seconds: 7.42,
//!     stalls: 0,
//!     cores: 2,
//!     startup_seconds: Some(0.41),
//!     end_seconds: Some(0.62),
//! };
//! let key = replay_record_key(&record);
//! assert!(key.as_str().starts_with("stats/replay/20261125T050000.250000Z-"));
//! assert!(key.as_str().ends_with(".json"));
//! assert_ne!(key, replay_record_key(&record), "every key is new");
//! assert_eq!(record.bytes_per_second(), Some((128u64 << 24) as f64 / 7.42));
//! ```

use std::hash::{BuildHasher, RandomState};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use walferry_store::{ArchiveStore, CancellationToken, ObjectKey, PutMode};

use crate::io::Error;
use crate::timestamp::Timestamp;

/// The prefix of every replay record.
pub const REPLAY_PREFIX: &str = "stats/replay/";

/// The largest stored record [`load_replay_records`] reads; a record is about 150 bytes, so
/// anything bigger is not one, and is skipped without being downloaded.
pub const MAX_RECORD_BYTES: u64 = 64 << 10;

/// How many keys [`save_replay_record`] tries when the one it drew is taken by another
/// record.
const SAVE_ATTEMPTS: usize = 3;

/// What one recovery measured: the WAL PostgreSQL replayed and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayRecord {
    /// When the recovery ended (UTC).
    pub recorded_at: Timestamp,
    /// Original (uncompressed) bytes of the WAL segments replayed in the stretch measured:
    /// the recovery after its last stall (when that holds at least half of it), else all of it.
    pub wal_bytes: u64,
    /// The number of WAL segments PostgreSQL took in all.
    pub segments: u64,
    /// Seconds from the stretch's first segment taken to its last.
    pub seconds: f64,
    /// Segments PostgreSQL asked for before they were ready, within the stretch: with any,
    /// `seconds` measured the fetch at least in part, not only replay.
    pub stalls: u64,
    /// The available parallelism of the restoring machine.
    pub cores: u32,
    /// Seconds from the server's start to the first segment taken: PostgreSQL's start-up,
    /// the files fetched before it (the backup's first segment, history files). Absent when
    /// not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_seconds: Option<f64>,
    /// Seconds from the last segment taken to the end of recovery: replaying that segment and
    /// the end-of-recovery checkpoint. Absent when not measured (the server stopped or the
    /// pipeline was stopped before recovery ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_seconds: Option<f64>,
}

impl ReplayRecord {
    /// The replay rate this record measured, in original WAL bytes per second; `None` when
    /// its figures cannot give one (no bytes, or a time that is not a positive number).
    pub fn bytes_per_second(&self) -> Option<f64> {
        (self.wal_bytes > 0 && self.seconds.is_finite() && self.seconds > 0.0)
            .then(|| self.wal_bytes as f64 / self.seconds)
    }
}

/// A new key for `record` under [`REPLAY_PREFIX`]: its time, then a random suffix, so that
/// every call returns another key and a create-only put of it does not meet an older record.
pub fn replay_record_key(record: &ReplayRecord) -> ObjectKey {
    // "2026-11-25T05:00:00.25Z" → "20261125T050000.250000Z": fixed width, so keys sort by time.
    let mut time: String = record
        .recorded_at
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    if !time.contains('.') {
        time = time.replace('Z', ".000000Z");
    }
    let raw = format!("{REPLAY_PREFIX}{time}-{:016x}.json", random_u64());
    ObjectKey::new(raw).expect("digits, 'T', '.', 'Z', '-' and hexadecimal make a valid key")
}

/// 64 random bits from the standard library's per-process random hash keys (each
/// [`RandomState`] gets new ones), mixed with the clock and the process id.
fn random_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    RandomState::new().hash_one((nanos, std::process::id()))
}

/// Saves `record` under a new key ([`replay_record_key`]) with a create-only put: it never
/// replaces a record. Returns once the record is durable.
///
/// Fails with [`Error::Store`] when the storage fails after its retries.
pub async fn save_replay_record<S: ArchiveStore>(
    store: &S,
    record: &ReplayRecord,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let body = Bytes::from(
        serde_json::to_vec_pretty(record).expect("a replay record always serializes to JSON"),
    );
    let mut taken = None;
    for _ in 0..SAVE_ATTEMPTS {
        let key = replay_record_key(record);
        match store.put(&key, body.clone(), PutMode::Create, cancel).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_already_exists() => {
                // A retried put whose first attempt landed finds its own bytes: saved.
                match store.get(&key, None, cancel).await {
                    Ok(got) if got.body == body => return Ok(()),
                    Ok(_) => taken = Some(e),
                    Err(get) if get.is_not_found() => taken = Some(e),
                    Err(get) => return Err(get.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    // SAVE_ATTEMPTS random keys all taken: not a thing that happens, but say what the store said.
    Err(taken
        .expect("the loop runs at least once and leaves only through a return or a taken key")
        .into())
}

/// Every replay record in the repository, newest first.
///
/// A record that does not parse (or is too big to be one, [`MAX_RECORD_BYTES`]) is skipped
/// with a warning; one removed between the listing and its download is skipped quietly.
/// Fails with [`Error::Store`] when the storage fails after its retries.
pub async fn load_replay_records<S: ArchiveStore>(
    store: &S,
    cancel: &CancellationToken,
) -> Result<Vec<ReplayRecord>, Error> {
    load_recent_replay_records(store, usize::MAX, cancel).await
}

/// Like [`load_replay_records`], but downloads only until it holds the `limit` newest
/// records that parse (by key, which starts with the recording time).
pub async fn load_recent_replay_records<S: ArchiveStore>(
    store: &S,
    limit: usize,
    cancel: &CancellationToken,
) -> Result<Vec<ReplayRecord>, Error> {
    let mut listing = store.list(REPLAY_PREFIX, cancel).await?;
    listing.reverse();
    let mut records = Vec::new();
    for meta in listing {
        if records.len() >= limit {
            break;
        }
        if meta.size > MAX_RECORD_BYTES {
            tracing::warn!(
                "replay record '{}' is {} bytes, too big to be one, skipped",
                meta.key,
                meta.size
            );
            continue;
        }
        let got = match store.get(&meta.key, None, cancel).await {
            Ok(got) => got,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        match serde_json::from_slice::<ReplayRecord>(&got.body) {
            Ok(record) => records.push(record),
            Err(e) => tracing::warn!("replay record '{}' is unreadable, skipped: {e}", meta.key),
        }
    }
    // Keys sort by recording time already; the records' own times settle it.
    records.sort_by_key(|r| std::cmp::Reverse(r.recorded_at));
    Ok(records)
}

#[cfg(test)]
mod tests {
    use walferry_store::{MemoryStore, RetryConfig, Store};

    use super::*;

    fn record(time: &str, wal_bytes: u64, seconds: f64, stalls: u64) -> ReplayRecord {
        ReplayRecord {
            recorded_at: Timestamp::parse(time).unwrap(),
            wal_bytes,
            segments: wal_bytes >> 24,
            seconds,
            stalls,
            cores: 2,
            startup_seconds: None,
            end_seconds: None,
        }
    }

    #[test]
    fn keys_are_fixed_width_sort_by_time_and_differ() {
        let whole = record("2026-11-25T05:00:00Z", 1 << 24, 1.0, 0);
        let fraction = record("2026-11-25T05:00:00.5Z", 1 << 24, 1.0, 0);
        let (a, b) = (replay_record_key(&whole), replay_record_key(&fraction));
        assert!(
            a.as_str()
                .starts_with("stats/replay/20261125T050000.000000Z-"),
            "{a}"
        );
        assert!(
            b.as_str()
                .starts_with("stats/replay/20261125T050000.500000Z-"),
            "{b}"
        );
        assert_eq!(a.as_str().len(), b.as_str().len());
        assert!(a < b);
        assert_ne!(replay_record_key(&whole), replay_record_key(&whole));
    }

    #[test]
    fn rate_needs_bytes_and_a_positive_time() {
        assert_eq!(
            record("2026-11-25T05:00:00Z", 300, 2.0, 0).bytes_per_second(),
            Some(150.0)
        );
        for seconds in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                record("2026-11-25T05:00:00Z", 300, seconds, 0).bytes_per_second(),
                None
            );
        }
        assert_eq!(
            record("2026-11-25T05:00:00Z", 0, 1.0, 0).bytes_per_second(),
            None
        );
    }

    #[tokio::test]
    async fn saves_and_loads_newest_first_skipping_what_does_not_parse() {
        let store = Store::memory(MemoryStore::new(), RetryConfig::default());
        let cancel = CancellationToken::new();
        assert!(
            load_replay_records(&store, &cancel)
                .await
                .unwrap()
                .is_empty()
        );

        let old = record("2026-11-25T05:00:00Z", 64 << 24, 3.5, 0);
        let new = record("2026-11-26T05:00:00.000001Z", 128 << 24, 7.25, 2);
        let same_time = record("2026-11-26T05:00:00.000001Z", 1 << 24, 0.5, 0);
        save_replay_record(&store, &old, &cancel).await.unwrap();
        save_replay_record(&store, &new, &cancel).await.unwrap();
        save_replay_record(&store, &same_time, &cancel)
            .await
            .unwrap();
        // A record saved twice is two records: each save is a new key.
        save_replay_record(&store, &old, &cancel).await.unwrap();

        // Damage: not JSON, JSON of something else, and an object too big to be a record.
        let put = |name: &str, body: Vec<u8>| {
            let key = ObjectKey::new(format!("{REPLAY_PREFIX}{name}")).unwrap();
            let store = &store;
            let cancel = &cancel;
            async move {
                store
                    .put(&key, Bytes::from(body), PutMode::Create, cancel)
                    .await
                    .unwrap()
            }
        };
        put("20261127T000000.000000Z-x.json", b"{not json".to_vec()).await;
        put(
            "20261127T000000.000000Z-y.json",
            b"{\"seconds\": 1}".to_vec(),
        )
        .await;
        put(
            "20261127T000000.000000Z-z.json",
            vec![b' '; MAX_RECORD_BYTES as usize + 1],
        )
        .await;
        // Outside the prefix: not a record.
        store
            .put(
                &ObjectKey::new("stats/other.json").unwrap(),
                Bytes::from_static(b"{}"),
                PutMode::Create,
                &cancel,
            )
            .await
            .unwrap();

        let loaded = load_replay_records(&store, &cancel).await.unwrap();
        assert_eq!(loaded.len(), 4, "{loaded:?}");
        assert_eq!(loaded[0].recorded_at, new.recorded_at);
        assert!(loaded[..2].contains(&new) && loaded[..2].contains(&same_time));
        assert_eq!(loaded[2..], [old.clone(), old.clone()]);

        let recent = load_recent_replay_records(&store, 1, &cancel)
            .await
            .unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].recorded_at, new.recorded_at);
    }

    #[tokio::test]
    async fn round_trips_through_json_exactly() {
        let store = MemoryStore::new();
        let cancel = CancellationToken::new();
        let r = record("2026-11-25T05:00:00.123456Z", 3 << 24, 0.1 + 0.2, 1);
        save_replay_record(&store, &r, &cancel).await.unwrap();
        let listing = store.list(REPLAY_PREFIX, &cancel).await.unwrap();
        assert_eq!(listing.len(), 1);
        let text = store
            .get(&listing[0].key, None, &cancel)
            .await
            .unwrap()
            .body;
        let text = std::str::from_utf8(&text).unwrap();
        assert!(
            text.contains("\"recorded_at\": \"2026-11-25T05:00:00.123456Z\""),
            "{text}"
        );
        assert_eq!(load_replay_records(&store, &cancel).await.unwrap(), [r]);
    }
}
