//! Saving and loading backup manifests.

use bytes::Bytes;
use walferry_store::{ArchiveStore, CancellationToken, ObjectKey, PutMode};

use super::Error;
use crate::backup::BackupManifest;
use crate::layout;

/// The manifest key of backup `label`, or [`Error::InvalidLabel`].
fn manifest_key(label: &str) -> Result<ObjectKey, Error> {
    layout::backup_manifest_key(label).map_err(|reason| Error::InvalidLabel {
        label: label.to_owned(),
        reason,
    })
}

/// Commits a backup: writes `manifest` to `backups/<label>/manifest.json`, create-only.
///
/// Call it after every part is stored: until the manifest exists the backup does not count.
/// Fails with [`Error::Manifest`] when `manifest` is inconsistent (nothing is written) and
/// with [`Error::BackupExists`] when the label already has a manifest (nothing is replaced).
pub async fn save_backup_manifest<S: ArchiveStore>(
    store: &S,
    manifest: &BackupManifest,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let key = manifest_key(&manifest.label)?;
    manifest.validate().map_err(|source| Error::Manifest {
        key: key.to_string(),
        source,
    })?;
    match store
        .put(
            &key,
            Bytes::from(manifest.to_json()),
            PutMode::Create,
            cancel,
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.is_already_exists() => Err(Error::BackupExists {
            key: key.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Loads and validates backup `label`'s manifest.
///
/// A backup without a manifest (never committed) fails with an error whose
/// [`Error::is_not_found`] is true.
pub async fn load_backup_manifest<S: ArchiveStore>(
    store: &S,
    label: &str,
    cancel: &CancellationToken,
) -> Result<BackupManifest, Error> {
    let key = manifest_key(label)?;
    load_at(store, &key, label, cancel).await
}

/// Loads the manifest at `key`, which belongs to backup `label`.
pub(super) async fn load_at<S: ArchiveStore>(
    store: &S,
    key: &ObjectKey,
    label: &str,
    cancel: &CancellationToken,
) -> Result<BackupManifest, Error> {
    let got = store.get(key, None, cancel).await?;
    let manifest = BackupManifest::from_json(&got.body).map_err(|source| Error::Manifest {
        key: key.to_string(),
        source,
    })?;
    if manifest.label != label {
        return Err(Error::ManifestLabel {
            key: key.to_string(),
            found: manifest.label,
        });
    }
    Ok(manifest)
}

#[cfg(test)]
pub(super) mod tests {
    use walferry_store::MemoryStore;
    use walferry_wal::{Lsn, PgVersion, TimelineId, WalSegSize};

    use super::*;
    use crate::backup::{FORMAT, Totals};
    use crate::timestamp::Timestamp;

    /// A consistent manifest without parts or files.
    pub(in crate::io) fn manifest(
        label: &str,
        timeline: u32,
        start: u64,
        stop: u64,
    ) -> BackupManifest {
        let tli = TimelineId::new(timeline).unwrap();
        BackupManifest {
            format: FORMAT,
            label: label.into(),
            system_identifier: 42,
            pg_version: PgVersion::from_major(15).unwrap(),
            wal_segment_size: WalSegSize::DEFAULT,
            start_lsn: Lsn(start),
            start_timeline: tli,
            stop_lsn: Lsn(stop),
            stop_timeline: tli,
            start_time: Timestamp::parse("2026-11-25T05:00:00Z").unwrap(),
            stop_time: Timestamp::parse("2026-11-25T05:00:07Z").unwrap(),
            tablespaces: Vec::new(),
            parts: Vec::new(),
            files: Vec::new(),
            totals: Totals::default(),
        }
    }

    #[tokio::test]
    async fn saves_once_and_loads_back() {
        let store = MemoryStore::new();
        let cancel = CancellationToken::new();
        let m = manifest("b1", 1, 0x100_0028, 0x100_0138);

        let err = load_backup_manifest(&store, "b1", &cancel)
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err:?}");

        save_backup_manifest(&store, &m, &cancel).await.unwrap();
        assert_eq!(
            load_backup_manifest(&store, "b1", &cancel).await.unwrap(),
            m
        );

        let err = save_backup_manifest(&store, &m, &cancel).await.unwrap_err();
        assert!(matches!(err, Error::BackupExists { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "backup manifest 'backups/b1/manifest.json' already exists; HINT: every backup needs its own label"
        );
    }

    #[tokio::test]
    async fn refuses_bad_manifests_and_labels() {
        let store = MemoryStore::new();
        let cancel = CancellationToken::new();

        let mut bad = manifest("b1", 1, 0x100_0028, 0x100_0138);
        bad.stop_lsn = Lsn(1);
        let err = save_backup_manifest(&store, &bad, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Manifest { .. }), "{err:?}");
        assert!(store.list("", &cancel).await.unwrap().is_empty());

        let err = load_backup_manifest(&store, "../x", &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidLabel { .. }), "{err:?}");

        // A manifest copied under another label.
        let m = manifest("b1", 1, 0x100_0028, 0x100_0138);
        let key = layout::backup_manifest_key("b2").unwrap();
        store
            .put(&key, Bytes::from(m.to_json()), PutMode::Create, &cancel)
            .await
            .unwrap();
        let err = load_backup_manifest(&store, "b2", &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ManifestLabel { .. }), "{err:?}");
        assert!(
            err.to_string().contains("'backups/b2/manifest.json'"),
            "{err}"
        );
    }
}
