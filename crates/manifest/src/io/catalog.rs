//! Loading everything restore planning needs from a repository.

use std::collections::BTreeMap;

use walferry_store::{ArchiveStore, CancellationToken, ObjectKey};
use walferry_wal::{TimelineHistory, TimelineId, WalFileName};

use super::{Error, backups, load_descriptor};
use crate::backup::{BackupManifest, BackupSummary};
use crate::descriptor::RepoDescriptor;
use crate::layout;
use crate::plan::Catalog;
use crate::timelines::TimelineGraph;
use crate::walindex::WalIndex;

/// The largest decoded timeline history file [`load_catalog`] accepts. A history line is
/// well under 100 bytes, so this is room for far more timelines than any cluster makes; it
/// bounds the memory a damaged or hostile object can claim.
pub const MAX_HISTORY_BYTES: u64 = 16 << 20;

/// A repository's catalog as [`load_catalog`] read it: its descriptor, committed backups,
/// timeline graph and WAL index, plus what it found odd but could do without.
///
/// [`LoadedCatalog::catalog`] lends it to the planner.
#[derive(Debug, Clone)]
pub struct LoadedCatalog {
    descriptor: RepoDescriptor,
    backups: Vec<BackupManifest>,
    summaries: Vec<BackupSummary>,
    timelines: TimelineGraph,
    wal: WalIndex,
    problems: Vec<String>,
}

impl LoadedCatalog {
    /// The repository descriptor.
    pub fn descriptor(&self) -> &RepoDescriptor {
        &self.descriptor
    }

    /// The committed backups (those with a readable manifest), ordered by label.
    pub fn backups(&self) -> &[BackupManifest] {
        &self.backups
    }

    /// The timeline graph of every history file under `wal/`.
    pub fn timelines(&self) -> &TimelineGraph {
        &self.timelines
    }

    /// The WAL files under `wal/`.
    pub fn wal(&self) -> &WalIndex {
        &self.wal
    }

    /// One line per thing that was skipped: a backup without a manifest (interrupted or still
    /// running), an unreadable manifest, an object under `wal/` that is not a WAL file.
    /// Lowercase, no trailing period, naming the key.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The catalog for [`Catalog::plan`], borrowing this one.
    pub fn catalog(&self) -> Catalog<'_> {
        Catalog {
            descriptor: &self.descriptor,
            backups: &self.summaries,
            timelines: &self.timelines,
            wal: &self.wal,
        }
    }
}

/// The WAL half of a repository's catalog: the descriptor, the timeline graph and the WAL
/// index.
#[derive(Debug)]
struct WalCatalog {
    descriptor: RepoDescriptor,
    timelines: TimelineGraph,
    wal: WalIndex,
    problems: Vec<String>,
}

/// Reads the WAL half of a repository's catalog: the descriptor, one listing of `wal/`
/// (indexed by name; only the `.history` objects are downloaded). Fails like [`load_catalog`].
async fn load_wal_catalog<S: ArchiveStore>(
    store: &S,
    cancel: &CancellationToken,
) -> Result<WalCatalog, Error> {
    let descriptor = load_descriptor(store, cancel)
        .await?
        .ok_or_else(|| Error::NoDescriptor {
            key: layout::descriptor_key().to_string(),
        })?;
    let mut problems = Vec::new();

    let mut names = Vec::new();
    let mut history_keys = Vec::new();
    for meta in store.list(layout::WAL_PREFIX, cancel).await? {
        match layout::parse_wal_key(&meta.key) {
            Some(name) => {
                if let WalFileName::History(tli) = name {
                    history_keys.push((tli, meta.key));
                }
                names.push(name);
            }
            None => problems.push(format!(
                "object '{}' is not a WAL file walferry stores, skipped",
                meta.key
            )),
        }
    }
    let wal = WalIndex::from_names(descriptor.wal_segment_size, names);
    for name in wal.foreign() {
        problems.push(format!(
            "WAL file '{name}' cannot exist with the repository's segment size {}, skipped",
            descriptor.wal_segment_size
        ));
    }

    let mut histories = Vec::with_capacity(history_keys.len());
    for (tli, key) in history_keys {
        histories.push(load_history(store, tli, &key, cancel).await?);
    }
    let timelines = TimelineGraph::new(histories);
    Ok(WalCatalog {
        descriptor,
        timelines,
        wal,
        problems,
    })
}

/// Reads a repository's catalog: the descriptor, one listing of `wal/` (indexed by name; only
/// the `.history` objects are downloaded) and one of `backups/` (every `manifest.json` is
/// downloaded).
///
/// A backup directory without a manifest is an interrupted or running backup, not a backup:
/// it is left out and noted in [`LoadedCatalog::problems`], as is a manifest that is
/// unreadable, inconsistent or filed under another label. Fails with [`Error::NoDescriptor`]
/// when the repository has no descriptor, and with [`Error::HistoryCorrupt`] or
/// [`Error::HistoryInvalid`] when a history file cannot be read: leaving a timeline out would
/// make `latest` quietly pick an older one.
pub async fn load_catalog<S: ArchiveStore>(
    store: &S,
    cancel: &CancellationToken,
) -> Result<LoadedCatalog, Error> {
    let WalCatalog {
        descriptor,
        timelines,
        wal,
        problems: wal_problems,
    } = load_wal_catalog(store, cancel).await?;
    let mut problems = wal_problems;

    // Label → its manifest key, if the listing holds one.
    let mut labels: BTreeMap<String, Option<ObjectKey>> = BTreeMap::new();
    for meta in store.list(layout::BACKUP_PREFIX, cancel).await? {
        if let Some(label) = layout::parse_backup_manifest_key(&meta.key) {
            labels.insert(label.to_owned(), Some(meta.key));
            continue;
        }
        match layout::backup_label_of(&meta.key) {
            Some(label) => {
                labels.entry(label.to_owned()).or_default();
            }
            None => problems.push(format!(
                "object '{}' does not belong to a backup, skipped",
                meta.key
            )),
        }
    }
    let mut backups = Vec::new();
    for (label, key) in labels {
        let Some(key) = key else {
            problems.push(format!(
                "backup '{label}' has no manifest: it was interrupted or is still running, skipped"
            ));
            continue;
        };
        match backups::load_at(store, &key, &label, cancel).await {
            Ok(manifest) => backups.push(manifest),
            Err(e @ (Error::Manifest { .. } | Error::ManifestLabel { .. })) => {
                problems.push(format!("{e}, skipped"));
            }
            // Deleted since the listing: no longer a backup.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    let summaries = backups.iter().map(BackupManifest::summary).collect();

    Ok(LoadedCatalog {
        descriptor,
        backups,
        summaries,
        timelines,
        wal,
        problems,
    })
}

/// Downloads, decodes and parses the history file of `tli` stored at `key`.
pub(super) async fn load_history<S: ArchiveStore>(
    store: &S,
    tli: TimelineId,
    key: &ObjectKey,
    cancel: &CancellationToken,
) -> Result<TimelineHistory, Error> {
    let got = store.get(key, None, cancel).await?;
    // History files are a few hundred bytes: decoding inline does not hold up the runtime.
    let data = walferry_codec::decode(&got.body, MAX_HISTORY_BYTES).map_err(|source| {
        Error::HistoryCorrupt {
            key: key.to_string(),
            source,
        }
    })?;
    let invalid = |reason: String| Error::HistoryInvalid {
        key: key.to_string(),
        reason,
    };
    let text = std::str::from_utf8(&data).map_err(|_| invalid("it is not text".into()))?;
    TimelineHistory::parse(tli, text).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use walferry_store::{MemoryStore, PutMode};
    use walferry_wal::{Lsn, PgVersion, WalSegSize};

    use super::*;
    use crate::descriptor::ClusterIdentity;
    use crate::io::{backups::tests::manifest, create_descriptor, save_backup_manifest};
    use crate::plan::{PlanEnd, RecoveryTarget, RestoreRequest, TargetTimeline};

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    async fn put(store: &MemoryStore, key: &str, body: &[u8]) {
        let key = ObjectKey::new(key).unwrap();
        store
            .put(
                &key,
                Bytes::copy_from_slice(body),
                PutMode::Create,
                &CancellationToken::new(),
            )
            .await
            .unwrap();
    }

    async fn put_wal(store: &MemoryStore, name: &str, body: &[u8]) {
        let key = layout::wal_key(&WalFileName::parse(name).unwrap());
        put(store, key.as_str(), body).await;
    }

    /// Timeline 1 with segments 1–5, timeline 2 branching at 0/3800000 with segments 3–6;
    /// backup b1 on timeline 1, b2 on timeline 2, b3 interrupted, b4 with a damaged manifest.
    async fn repository() -> MemoryStore {
        let store = MemoryStore::new();
        let cancel = CancellationToken::new();
        let identity = ClusterIdentity {
            system_identifier: 42,
            pg_version: PgVersion::from_major(15).unwrap(),
            wal_segment_size: WalSegSize::DEFAULT,
        };
        create_descriptor(&store, &RepoDescriptor::new(identity), &cancel)
            .await
            .unwrap();
        for seg in 1..=5 {
            put_wal(&store, &format!("0000000100000000{seg:08X}"), b"segment").await;
        }
        for seg in 3..=6 {
            put_wal(&store, &format!("0000000200000000{seg:08X}"), b"segment").await;
        }
        let history =
            walferry_codec::encode(b"1\t0/3800000\tno recovery target specified\n", 3).unwrap();
        put_wal(&store, "00000002.history", &history).await;
        put(&store, "wal/0000000100000000/notes.txt", b"stray").await;

        for m in [
            manifest("b1", 1, 0x100_0028, 0x100_0138),
            manifest("b2", 2, 0x500_0028, 0x500_0138),
        ] {
            save_backup_manifest(&store, &m, &cancel).await.unwrap();
        }
        put(&store, "backups/b3/base.tar.0000.zst", b"part").await;
        put(&store, "backups/b4/base.tar.0000.zst", b"part").await;
        put(&store, "backups/b4/manifest.json", b"{ not json").await;
        store
    }

    #[tokio::test]
    async fn loads_committed_backups_wal_and_timelines_then_plans() {
        let store = repository().await;
        let loaded = load_catalog(&store, &CancellationToken::new())
            .await
            .unwrap();

        let labels: Vec<_> = loaded.backups().iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["b1", "b2"]);
        assert_eq!(loaded.descriptor().system_identifier, 42);
        assert_eq!(loaded.wal().runs(tli(1)).len(), 1);
        assert_eq!(loaded.wal().runs(tli(1))[0].len(), 5);
        assert_eq!(loaded.wal().runs(tli(2))[0].len(), 4);
        assert!(loaded.wal().has_history(tli(2)));
        assert_eq!(
            loaded.timelines().timelines().collect::<Vec<_>>(),
            [tli(1), tli(2)]
        );
        let problems = loaded.problems().join("\n");
        assert_eq!(loaded.problems().len(), 3, "{problems}");
        assert!(
            problems.contains("'wal/0000000100000000/notes.txt'"),
            "{problems}"
        );
        assert!(
            problems.contains("backup 'b3' has no manifest"),
            "{problems}"
        );
        assert!(
            problems.contains("backup manifest 'backups/b4/manifest.json' is unreadable"),
            "{problems}"
        );

        let catalog = loaded.catalog();
        let plan = catalog
            .plan(&RestoreRequest::new(RecoveryTarget::EndOfArchive))
            .unwrap();
        assert_eq!(plan.backup.label, "b2");
        assert_eq!(plan.timeline, tli(2));
        assert_eq!(plan.end, PlanEnd::EndOfArchive);

        // From the older backup, replay crosses from timeline 1 to 2 at the switch point.
        let mut request = RestoreRequest::new(RecoveryTarget::EndOfArchive);
        request.backup = Some("b1".into());
        request.timeline = TargetTimeline::Id(tli(2));
        let plan = catalog.plan(&request).unwrap();
        assert_eq!(plan.backup.label, "b1");
        let steps: Vec<_> = plan.steps.iter().map(|s| (s.timeline, s.end)).collect();
        assert_eq!(steps, [(tli(1), Some(Lsn(0x380_0000))), (tli(2), None)]);
        let segments: Vec<_> = plan.segments.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            segments,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000020000000000000003",
                "000000020000000000000004",
                "000000020000000000000005",
                "000000020000000000000006",
            ]
        );
        assert_eq!(plan.history_files, [tli(2)]);

        // The interrupted backup cannot be chosen.
        request.backup = Some("b3".into());
        assert!(catalog.plan(&request).is_err());
    }

    #[tokio::test]
    async fn refuses_a_repository_without_descriptor_or_with_a_bad_history() {
        let cancel = CancellationToken::new();
        let err = load_catalog(&MemoryStore::new(), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NoDescriptor { .. }), "{err:?}");
        assert!(err.to_string().contains("'walferry.json'"), "{err}");

        let store = repository().await;
        put_wal(&store, "00000003.history", b"not a frame").await;
        let err = load_catalog(&store, &cancel).await.unwrap_err();
        assert!(matches!(err, Error::HistoryCorrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("'wal/00000003.history'"), "{err}");

        let store = repository().await;
        let frame = walferry_codec::encode(b"garbage line\n", 3).unwrap();
        put_wal(&store, "00000003.history", &frame).await;
        let err = load_catalog(&store, &cancel).await.unwrap_err();
        assert!(matches!(err, Error::HistoryInvalid { .. }), "{err:?}");
    }
}
