//! `backup`: take a base backup over the replication protocol and store it.
//!
//! The stream flows tar → [`PartWriter`] (cut and compress) → create-only uploads, with at
//! most [`BackupOptions::jobs`] uploads in flight, so memory is bounded by about
//! `(jobs + 1) × part size` (compressed parts, plus two 1 MiB batches of stream bytes: one
//! being received while the previous one is compressed) whatever the size of the database.
//! The manifest is saved last, with a create-only put: that is the
//! commit point. A backup interrupted before it leaves parts but no manifest, and the catalog
//! ignores parts without a manifest.
//!
//! A label whose manifest does not exist is free, even when an interrupted run left parts
//! under `backups/<label>/`: once connected to the server and checked against the
//! repository, a new run deletes those leftovers (logging a warning with their number) before
//! it stores anything, since parts are stored with create-only puts and a leftover would
//! otherwise refuse them. Before it saves the manifest, the run lists `backups/<label>/` again
//! and commits only if it finds exactly the parts it stored, with their sizes.
//!
//! Caveat: two runs with the same label must not run at once. The second takes the first's
//! parts for leftovers and deletes them, and their create-only puts and the check before the
//! commit then normally fail both runs. That check narrows the damage but cannot exclude it:
//! a part replaced by the other run's part of the same size, or deleted between the check and
//! the commit, goes unnoticed until a restore or `verify` checks the backup's parts. Labels
//! named after the start time clash only for two runs started in the same second.
//!
//! The repository descriptor: when the repository has one, the server must be its cluster
//! ([`Error::WrongServer`] otherwise); when it has none, it is created from the server's
//! identity (`IDENTIFY_SYSTEM`, `SHOW wal_segment_size` and the server's major version), as
//! the first `push` would.
//!
//! A backup is committed only once the last WAL segment it needs (the one holding its stop
//! LSN) is in the repository, so a committed backup is restorable with the archive alone.
//! `BASE_BACKUP` runs with `NOWAIT` and walferry watches the repository itself, every 100 ms
//! at first: PostgreSQL's own `WAIT` checks the archiver's progress only once a second, a
//! fixed second added to every backup. That needs `archive_mode` on and a working
//! `archive_command` into this repository; after [`BackupOptions::archive_timeout`] the
//! backup fails with [`Error::EndNotArchived`] and commits nothing.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::{Instrument as _, debug, info, warn};
use walferry_manifest::backup::{FORMAT, Oid, Tablespace, label_problem};
use walferry_manifest::{BackupManifest, ClusterIdentity, Timestamp, io as repo_io, layout};
use walferry_pgwire::{BackupEvent, BaseBackupOptions, ReplicationClient};
use walferry_store::{ArchiveStore, CancellationToken, ObjectKey, PutMode, Store};
use walferry_wal::{Lsn, SegmentName, TimelineId, WalFileName, WalSegSize};

pub use walferry_pgwire::ConnectOptions;

use super::parts::{FinishedPart, PartError, PartOptions, PartWriter};
use crate::error::{Error, Result};
use crate::push::load_or_create_descriptor;
use crate::{blocking, join_blocking, store_error};

/// The default number of part uploads in flight.
pub const DEFAULT_JOBS: NonZeroUsize = NonZeroUsize::new(4).expect("not zero");

/// Stream bytes are collected into batches of this size before they are handed to the
/// compressor on the blocking pool: one hop per 1 MiB instead of one per 32 KiB chunk.
const FEED_BATCH: usize = 1 << 20;

/// How to take a backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// How to reach the server.
    pub connect: ConnectOptions,
    /// The backup's label; `None` names it after its start time, `YYYYMMDDTHHMMSSZ` (UTC).
    pub label: Option<String>,
    /// The most part uploads in flight.
    pub jobs: NonZeroUsize,
    /// How parts are cut and compressed.
    pub parts: PartOptions,
    /// How long to wait for the backup's last WAL segment to be archived.
    pub archive_timeout: Duration,
}

/// The default [`BackupOptions::archive_timeout`].
pub const DEFAULT_ARCHIVE_TIMEOUT: Duration = Duration::from_secs(600);

impl BackupOptions {
    /// Defaults for everything but the connection.
    pub fn new(connect: ConnectOptions) -> BackupOptions {
        BackupOptions {
            connect,
            label: None,
            jobs: DEFAULT_JOBS,
            parts: PartOptions::default(),
            archive_timeout: DEFAULT_ARCHIVE_TIMEOUT,
        }
    }
}

/// A committed backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// Its manifest, as saved.
    pub manifest: BackupManifest,
    /// How long it took, connection to commit.
    pub elapsed: Duration,
}

/// The label of a backup started at `time`: `YYYYMMDDTHHMMSSZ`, UTC.
pub fn label_for(time: Timestamp) -> String {
    // Display is RFC 3339 (`2026-11-25T05:00:00[.ffffff]Z`); keep the digits up to seconds.
    let text = time.to_string();
    let seconds = text
        .split('.')
        .next()
        .unwrap_or(&text)
        .trim_end_matches('Z');
    let mut label: String = seconds.chars().filter(|c| *c != '-' && *c != ':').collect();
    label.push('Z');
    label
}

/// Takes a base backup of the server `options.connect` names and stores it in `store`;
/// returns once the manifest, the commit point, is saved. See the [module docs](self).
///
/// A label with parts but no manifest is not taken: an interrupted run left them, and they
/// are deleted before anything is stored (see the [module docs](self) for the caveat).
///
/// Fails with [`Error::BackupExists`] when the label is taken, [`Error::WrongServer`] when the
/// repository belongs to another cluster, [`Error::Postgres`] when the server cannot be reached
/// or refuses, and [`Error::Cancelled`] when `cancel` fires; none of them leaves a manifest.
pub async fn run(
    store: &Store,
    options: &BackupOptions,
    cancel: &CancellationToken,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let start_time = now()?;
    let label = options
        .label
        .clone()
        .unwrap_or_else(|| label_for(start_time));
    if let Some(reason) = label_problem(&label) {
        return Err(Error::InvalidLabel { label, reason });
    }
    let repo = store.location().to_owned();
    let manifest_key =
        layout::backup_manifest_key(&label).map_err(|reason| Error::InvalidLabel {
            label: label.clone(),
            reason,
        })?;
    match store.head(&manifest_key, cancel).await {
        Ok(_) => {
            return Err(Error::BackupExists {
                label,
                key: manifest_key.to_string(),
                repo,
            });
        }
        Err(e) if e.is_not_found() => {}
        Err(source) => return Err(store_error("check", &manifest_key, store, source)),
    }

    let mut client = ReplicationClient::connect(&options.connect)
        .await
        .map_err(|source| Error::Postgres {
            action: "connect for replication",
            source,
        })?;
    let server = format!("{}:{}", client.host(), client.port());
    let identity = server_identity(&mut client, &server).await?;
    check_descriptor(store, &identity, &server, cancel).await?;

    remove_interrupted(store, &label, &manifest_key, cancel).await?;

    info!(%label, %server, "base backup started");
    let streamed = stream(store, &mut client, options, &label, &server, cancel)
        .instrument(tracing::info_span!("backup", %label))
        .await?;
    check_parts_stored(store, &label, &streamed.parts, cancel).await?;
    wait_archived(store, &identity, &streamed, &label, options, cancel).await?;
    // The backup is complete on the server's side; a failure to close cleanly changes nothing.
    if let Err(e) = client.close().await {
        debug!("closing the replication connection: {e}");
    }

    let stop_time = now()?.max(start_time);
    let mut manifest = BackupManifest {
        format: FORMAT,
        label: label.clone(),
        system_identifier: identity.system_identifier,
        pg_version: identity.pg_version,
        wal_segment_size: identity.wal_segment_size,
        start_lsn: streamed.start_lsn,
        start_timeline: streamed.start_timeline,
        stop_lsn: streamed.stop_lsn,
        stop_timeline: streamed.stop_timeline,
        start_time,
        stop_time,
        tablespaces: streamed.tablespaces,
        parts: streamed.parts,
        files: streamed.files,
        totals: Default::default(),
    };
    manifest.totals = manifest.compute_totals();
    repo_io::save_backup_manifest(store, &manifest, cancel)
        .await
        .map_err(|e| match e {
            repo_io::Error::BackupExists { key } => Error::BackupExists {
                label: label.clone(),
                key,
                repo: repo.clone(),
            },
            repo_io::Error::Store(source) => {
                store_error("save manifest", &manifest_key, store, source)
            }
            other => Error::BadBackupStream {
                label: label.clone(),
                server: server.clone(),
                reason: other.to_string(),
            },
        })?;
    info!(
        stop_lsn = %manifest.stop_lsn,
        original_bytes = manifest.totals.original_bytes,
        stored_bytes = manifest.totals.compressed_bytes,
        "base backup committed"
    );
    Ok(BackupOutcome {
        manifest,
        elapsed: started.elapsed(),
    })
}

fn now() -> Result<Timestamp> {
    Timestamp::from_system_time(SystemTime::now()).map_err(|e| Error::Internal {
        message: format!("the system clock is unusable: {e}"),
    })
}

/// The server's cluster: system identifier, major version, segment size.
async fn server_identity(client: &mut ReplicationClient, server: &str) -> Result<ClusterIdentity> {
    let system = client
        .identify_system()
        .await
        .map_err(|source| Error::Postgres {
            action: "run IDENTIFY_SYSTEM",
            source,
        })?;
    let bad = |reason: String| Error::BadBackupStream {
        label: String::new(),
        server: server.to_owned(),
        reason,
    };
    let pg_version = client.pg_version().ok_or_else(|| {
        bad(format!(
            "PostgreSQL '{}' is not a version walferry supports",
            client.server_version()
        ))
    })?;
    let rows = client
        .simple_query("SHOW wal_segment_size")
        .await
        .map_err(|source| Error::Postgres {
            action: "run SHOW wal_segment_size",
            source,
        })?;
    let text = rows.first().and_then(|r| r.get(0)).unwrap_or_default();
    let wal_segment_size = parse_segment_size(text).ok_or_else(|| {
        bad(format!(
            "wal_segment_size '{text}' is not a valid segment size"
        ))
    })?;
    Ok(ClusterIdentity {
        system_identifier: system.system_identifier,
        pg_version,
        wal_segment_size,
    })
}

/// `SHOW wal_segment_size` text (`16MB`, `1GB`, `1048576B`) as a segment size.
fn parse_segment_size(text: &str) -> Option<WalSegSize> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    WalSegSize::new(n.checked_mul(scale)?).ok()
}

/// Checks the repository belongs to the server's cluster; creates the descriptor when the
/// repository has none.
async fn check_descriptor(
    store: &Store,
    identity: &ClusterIdentity,
    server: &str,
    cancel: &CancellationToken,
) -> Result<()> {
    let repo = store.location().to_owned();
    let descriptor = load_or_create_descriptor(store, Some(identity), cancel)
        .await?
        .ok_or_else(|| Error::Internal {
            message: "no descriptor although an identity was given".into(),
        })?;
    descriptor
        .check(identity)
        .map_err(|mismatch| Error::WrongServer {
            server: server.to_owned(),
            repo,
            mismatch,
        })
}

/// Every object under `backups/<label>/`.
async fn list_backup(
    store: &Store,
    label: &str,
    cancel: &CancellationToken,
) -> Result<Vec<walferry_store::ObjectMeta>> {
    let prefix = layout::backup_prefix(label).map_err(|reason| Error::InvalidLabel {
        label: label.to_owned(),
        reason,
    })?;
    store
        .list(&prefix, cancel)
        .await
        .map_err(|source| Error::Store {
            action: "list",
            key: prefix,
            repo: store.location().to_owned(),
            source: Box::new(source),
        })
}

/// Deletes what an interrupted run of backup `label` left under `backups/<label>/`; returns
/// how many objects it deleted. Fails with [`Error::BackupExists`], deleting nothing, when the
/// label's manifest exists (a run with the same label committed meanwhile).
async fn remove_interrupted(
    store: &Store,
    label: &str,
    manifest_key: &ObjectKey,
    cancel: &CancellationToken,
) -> Result<usize> {
    let leftovers = list_backup(store, label, cancel).await?;
    if leftovers.iter().any(|o| o.key == *manifest_key) {
        return Err(Error::BackupExists {
            label: label.to_owned(),
            key: manifest_key.to_string(),
            repo: store.location().to_owned(),
        });
    }
    for object in &leftovers {
        store
            .delete(&object.key, cancel)
            .await
            .map_err(|source| store_error("delete", &object.key, store, source))?;
    }
    if !leftovers.is_empty() {
        warn!(
            "removed {} object(s) an interrupted run of backup '{label}' left under \
             'backups/{label}/' (it has no manifest)",
            leftovers.len()
        );
    }
    Ok(leftovers.len())
}

/// Waits until the segment holding the backup's stop LSN is in the repository.
async fn wait_archived(
    store: &Store,
    identity: &ClusterIdentity,
    streamed: &Streamed,
    label: &str,
    options: &BackupOptions,
    cancel: &CancellationToken,
) -> Result<()> {
    let size = identity.wal_segment_size;
    // The last byte of the backup lies before its stop LSN, as PostgreSQL counts it.
    let last = Lsn(streamed.stop_lsn.0.saturating_sub(1)).segment_number(size);
    let segment =
        SegmentName::new(streamed.stop_timeline, last, size).map_err(|e| Error::Internal {
            message: format!("the backup's stop LSN has no segment name: {e}"),
        })?;
    let key = layout::wal_key(&WalFileName::Segment(segment));
    let started = Instant::now();
    let mut reported = false;
    loop {
        match store.head(&key, cancel).await {
            Ok(_) => {
                debug!(segment = %segment, waited_ms = started.elapsed().as_millis() as u64, "end of the backup archived");
                return Ok(());
            }
            Err(e) if e.is_not_found() => {}
            Err(source) => return Err(store_error("check", &key, store, source)),
        }
        let waited = started.elapsed();
        if waited >= options.archive_timeout {
            return Err(Error::EndNotArchived {
                label: label.to_owned(),
                segment: segment.to_string(),
                repo: store.location().to_owned(),
                waited_secs: waited.as_secs(),
            });
        }
        if !reported && waited >= Duration::from_secs(10) {
            reported = true;
            info!(segment = %segment, "waiting for PostgreSQL to archive {segment}, the end of backup '{label}'");
        }
        let pause = if waited < Duration::from_secs(2) {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => {
                return Err(Error::Cancelled {
                    operation: format!("base backup '{label}'"),
                });
            }
        }
    }
}

/// Checks that `backups/<label>/` holds exactly `parts`, each with its stored size: nothing
/// deleted or added by another run with the same label. Fails with [`Error::BackupExists`]
/// naming the first object that differs.
async fn check_parts_stored(
    store: &Store,
    label: &str,
    parts: &[walferry_manifest::backup::BackupPart],
    cancel: &CancellationToken,
) -> Result<()> {
    let stored = list_backup(store, label, cancel).await?;
    let mut expected = std::collections::BTreeMap::new();
    for part in parts {
        let key =
            layout::backup_part_key(label, &part.name).map_err(|reason| Error::InvalidLabel {
                label: label.to_owned(),
                reason,
            })?;
        expected.insert(key.to_string(), part.compressed_bytes);
    }
    let conflict = |key: String, what: &str| {
        warn!(%label, %key, "'{key}' is {what}: another run with the same label is writing backup '{label}'");
        Error::BackupExists {
            label: label.to_owned(),
            key,
            repo: store.location().to_owned(),
        }
    };
    for object in &stored {
        match expected.remove(object.key.as_str()) {
            Some(size) if size == object.size => {}
            Some(_) => {
                return Err(conflict(
                    object.key.to_string(),
                    "not the part this run stored",
                ));
            }
            None => {
                return Err(conflict(
                    object.key.to_string(),
                    "not a part this run stored",
                ));
            }
        }
    }
    match expected.into_keys().next() {
        Some(missing) => Err(conflict(missing, "missing")),
        None => Ok(()),
    }
}

/// What the stream produced, for the manifest.
struct Streamed {
    start_lsn: Lsn,
    start_timeline: TimelineId,
    stop_lsn: Lsn,
    stop_timeline: TimelineId,
    tablespaces: Vec<Tablespace>,
    parts: Vec<walferry_manifest::backup::BackupPart>,
    files: Vec<walferry_manifest::backup::BackupFile>,
}

/// What a batch's compression hands back: the writer, the emptied batch buffer for reuse,
/// and the parts the batch completed.
type Fed = (
    PartWriter,
    Vec<u8>,
    std::result::Result<Vec<FinishedPart>, PartError>,
);

/// The archive being received.
struct Current {
    /// `None` exactly while `pending` holds it on the blocking pool.
    writer: Option<PartWriter>,
    /// The compression of the previous batch, running while the next one is received.
    pending: Option<tokio::task::JoinHandle<Fed>>,
    location: Option<String>,
    /// Stream bytes received and not yet handed to the writer.
    batch: Vec<u8>,
    /// A buffer for the next batch.
    spare: Vec<u8>,
}

/// Runs `BASE_BACKUP` and stores every part; returns what the manifest needs.
async fn stream(
    store: &Store,
    client: &mut ReplicationClient,
    options: &BackupOptions,
    label: &str,
    server: &str,
    cancel: &CancellationToken,
) -> Result<Streamed> {
    let bad = |reason: String| Error::BadBackupStream {
        label: label.to_owned(),
        server: server.to_owned(),
        reason,
    };
    let request = BaseBackupOptions {
        label: label.to_owned(),
        fast_checkpoint: true,
        wait_for_archive: false,
        manifest: false,
        tablespace_map: true,
        ..BaseBackupOptions::default()
    };
    let mut backup = client
        .base_backup(&request)
        .await
        .map_err(|source| Error::Postgres {
            action: "start BASE_BACKUP",
            source,
        })?;
    let start_lsn = backup.start_lsn();
    let start_timeline = backup.timeline();
    info!(start_lsn = %start_lsn, timeline = %start_timeline, "backup checkpoint done");

    let mut uploads = Uploads::new(store, label, options.jobs, cancel);
    let mut current: Option<Current> = None;
    let mut out = Streamed {
        start_lsn,
        start_timeline,
        stop_lsn: start_lsn,
        stop_timeline: start_timeline,
        tablespaces: Vec::new(),
        parts: Vec::new(),
        files: Vec::new(),
    };
    let mut finished = false;
    loop {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled {
                operation: format!("base backup '{label}'"),
            });
        }
        let event = tokio::select! {
            event = backup.next_event() => event.map_err(|source| Error::Postgres {
                action: "receive BASE_BACKUP",
                source,
            })?,
            failed = uploads.failure() => return Err(failed),
        };
        let Some(event) = event else { break };
        match event {
            BackupEvent::Data(chunk) => {
                let Some(cur) = current.as_mut() else {
                    return Err(bad("archive data arrived before any archive began".into()));
                };
                cur.batch.extend_from_slice(&chunk);
                if cur.batch.len() >= FEED_BATCH {
                    feed(cur, &mut uploads, label, server).await?;
                }
            }
            BackupEvent::ArchiveStart {
                name,
                tablespace_location,
            } => {
                if let Some(done) = current.take() {
                    end_archive(done, &mut uploads, &mut out, label, server).await?;
                }
                let tablespace = archive_tablespace(&name)
                    .ok_or_else(|| bad(format!("unexpected archive '{name}'")))?;
                if tablespace.is_some() && tablespace_location.is_none() {
                    return Err(bad(format!("archive '{name}' has no tablespace location")));
                }
                let writer = PartWriter::new(tablespace, options.parts)
                    .map_err(|e| part_error(e, label, server))?;
                debug!(archive = %name, "archive started");
                current = Some(Current {
                    writer: Some(writer),
                    pending: None,
                    location: tablespace_location,
                    batch: Vec::with_capacity(FEED_BATCH),
                    spare: Vec::with_capacity(FEED_BATCH),
                });
            }
            BackupEvent::ManifestStart | BackupEvent::ManifestData(_) => {
                // Not requested; ignore one if a server sends it anyway.
            }
            BackupEvent::Finished { end_lsn, timeline } => {
                out.stop_lsn = end_lsn;
                out.stop_timeline = timeline;
                finished = true;
            }
            _ => {}
        }
    }
    if !finished {
        return Err(bad("the stream ended without an end position".into()));
    }
    if let Some(done) = current.take() {
        end_archive(done, &mut uploads, &mut out, label, server).await?;
    }
    if !out.parts.iter().any(|p| p.tablespace.is_none()) {
        return Err(bad("the server sent no base.tar".into()));
    }
    uploads.finish().await?;
    Ok(out)
}

/// The tablespace an archive name stands for: `base.tar` is `Some(None)`, `<oid>.tar` is
/// `Some(Some(oid))`, anything else `None`.
fn archive_tablespace(name: &str) -> Option<Option<Oid>> {
    if name == "base.tar" {
        return Some(None);
    }
    let oid = name.strip_suffix(".tar")?;
    if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    oid.parse().ok().map(|oid| Some(Oid(oid)))
}

fn part_error(e: PartError, label: &str, server: &str) -> Error {
    Error::BadBackupStream {
        label: label.to_owned(),
        server: server.to_owned(),
        reason: e.to_string(),
    }
}

/// Hands the batched bytes to the compressor on the blocking pool without waiting for it, so
/// that the next batch is received while this one is compressed; first waits for the previous
/// batch (a writer takes its input in order). Memory: two batches.
async fn feed(
    cur: &mut Current,
    uploads: &mut Uploads<'_>,
    label: &str,
    server: &str,
) -> Result<()> {
    if cur.batch.is_empty() {
        return Ok(());
    }
    settle(cur, uploads, label, server).await?;
    let batch = std::mem::replace(&mut cur.batch, std::mem::take(&mut cur.spare));
    let mut writer = cur
        .writer
        .take()
        .expect("the writer is back once the previous batch is settled");
    cur.pending = Some(tokio::task::spawn_blocking(move || {
        let done = writer.feed(&batch);
        (writer, batch, done)
    }));
    Ok(())
}

/// Waits for the batch being compressed, if any, and queues the parts it completed.
async fn settle(
    cur: &mut Current,
    uploads: &mut Uploads<'_>,
    label: &str,
    server: &str,
) -> Result<()> {
    let Some(task) = cur.pending.take() else {
        return Ok(());
    };
    let (writer, mut batch, done) = join_blocking(task).await?;
    cur.writer = Some(writer);
    batch.clear();
    cur.spare = batch;
    for part in done.map_err(|e| part_error(e, label, server))? {
        uploads.push(part).await?;
    }
    Ok(())
}

/// Ends one archive: feeds what is batched, closes the last part, records parts and files.
async fn end_archive(
    mut cur: Current,
    uploads: &mut Uploads<'_>,
    out: &mut Streamed,
    label: &str,
    server: &str,
) -> Result<()> {
    feed(&mut cur, uploads, label, server).await?;
    settle(&mut cur, uploads, label, server).await?;
    let writer = cur.writer.expect("the writer is back once settled");
    let tablespace_oid = archive_tablespace(writer.archive()).flatten();
    let stream_len = writer.stream_len();
    let (last, files, parts) = blocking(move || Ok(writer.finish()))
        .await?
        .map_err(|e| part_error(e, label, server))?;
    for part in last {
        uploads.push(part).await?;
    }
    if let Some(oid) = tablespace_oid {
        out.tablespaces.push(Tablespace {
            oid,
            location: cur.location.unwrap_or_default(),
            original_bytes: stream_len,
        });
    }
    out.parts.extend(parts);
    out.files.extend(files);
    Ok(())
}

/// Part uploads in flight, at most `jobs` of them.
struct Uploads<'a> {
    store: &'a Store,
    label: &'a str,
    jobs: NonZeroUsize,
    cancel: &'a CancellationToken,
    tasks: JoinSet<Result<u64>>,
}

impl<'a> Uploads<'a> {
    fn new(
        store: &'a Store,
        label: &'a str,
        jobs: NonZeroUsize,
        cancel: &'a CancellationToken,
    ) -> Uploads<'a> {
        Uploads {
            store,
            label,
            jobs,
            cancel,
            tasks: JoinSet::new(),
        }
    }

    /// Starts storing `part`, after waiting for a free slot.
    async fn push(&mut self, part: FinishedPart) -> Result<()> {
        while self.tasks.len() >= self.jobs.get() {
            self.join_one().await?;
        }
        let key = layout::backup_part_key(self.label, &part.name).map_err(|reason| {
            Error::InvalidLabel {
                label: self.label.to_owned(),
                reason,
            }
        })?;
        let store = self.store.clone();
        let cancel = self.cancel.clone();
        let label = self.label.to_owned();
        self.tasks.spawn(async move {
            upload(&store, &key, &label, Bytes::from(part.body), &cancel).await
        });
        Ok(())
    }

    /// Waits for one upload; `Ok` when none is in flight.
    async fn join_one(&mut self) -> Result<()> {
        match self.tasks.join_next().await {
            None => Ok(()),
            Some(Ok(r)) => r.map(drop),
            Some(Err(join)) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Some(Err(_)) => Err(Error::Internal {
                message: "an upload task was cancelled".into(),
            }),
        }
    }

    /// Resolves with the first failed upload; pends forever while they succeed.
    async fn failure(&mut self) -> Error {
        loop {
            if self.tasks.is_empty() {
                return std::future::pending().await;
            }
            if let Err(e) = self.join_one().await {
                return e;
            }
        }
    }

    /// Waits for every upload.
    async fn finish(mut self) -> Result<()> {
        while !self.tasks.is_empty() {
            self.join_one().await?;
        }
        Ok(())
    }
}

/// Stores one part with a create-only put; returns its stored size.
/// Stores one part with a create-only put. An existing object with the very same bytes is
/// success: a retried request whose first attempt had already been stored meets itself (the
/// label's leftovers were removed before the stream began, so nothing else can be there
/// unless another run writes the same label).
async fn upload(
    store: &Store,
    key: &ObjectKey,
    label: &str,
    body: Bytes,
    cancel: &CancellationToken,
) -> Result<u64> {
    let len = body.len() as u64;
    match store.put(key, body.clone(), PutMode::Create, cancel).await {
        Ok(()) => {
            debug!(%key, bytes = len, "part stored");
            Ok(len)
        }
        Err(e) if e.is_already_exists() => {
            let stored = store
                .get(key, None, cancel)
                .await
                .map_err(|source| store_error("read back", key, store, source))?;
            if stored.body == body {
                debug!(%key, "part already stored by an earlier attempt of this upload");
                Ok(len)
            } else {
                Err(Error::BackupExists {
                    label: label.to_owned(),
                    key: key.to_string(),
                    repo: store.location().to_owned(),
                })
            }
        }
        Err(source) => Err(store_error("upload", key, store, source)),
    }
}

#[cfg(test)]
mod tests {
    use walferry_manifest::backup::{BackupPart, Crc32};
    use walferry_store::{MemoryStore, RetryConfig};

    use super::*;

    async fn put(store: &Store, key: &str, body: &'static [u8]) {
        let key = ObjectKey::new(key.to_owned()).unwrap();
        let cancel = CancellationToken::new();
        store
            .put(&key, Bytes::from_static(body), PutMode::Create, &cancel)
            .await
            .unwrap();
    }

    async fn keys(store: &Store) -> Vec<String> {
        let cancel = CancellationToken::new();
        let objects = store.list("", &cancel).await.unwrap();
        objects.into_iter().map(|o| o.key.to_string()).collect()
    }

    fn part(name: &str, compressed_bytes: u64) -> BackupPart {
        BackupPart {
            tablespace: None,
            name: name.to_owned(),
            offset: 0,
            original_bytes: compressed_bytes,
            compressed_bytes,
            crc32: Crc32(0),
        }
    }

    #[tokio::test]
    async fn an_interrupted_run_leaves_nothing_in_the_way() {
        let store = Store::memory(MemoryStore::new(), RetryConfig::default());
        let cancel = CancellationToken::new();
        let manifest = layout::backup_manifest_key("fixed").unwrap();
        put(&store, "backups/fixed/base.tar.0000.zst", b"a").await;
        put(&store, "backups/fixed/16385.tar.0000.zst", b"b").await;
        put(&store, "backups/fixed2/base.tar.0000.zst", b"c").await;
        put(&store, "backups/other/manifest.json", b"{}").await;

        let removed = remove_interrupted(&store, "fixed", &manifest, &cancel)
            .await
            .unwrap();
        assert_eq!(removed, 2);
        // Only the label's own prefix: not `fixed2`, not another backup.
        assert_eq!(
            keys(&store).await,
            [
                "backups/fixed2/base.tar.0000.zst",
                "backups/other/manifest.json"
            ]
        );
        // Nothing left: nothing to do.
        let removed = remove_interrupted(&store, "fixed", &manifest, &cancel)
            .await
            .unwrap();
        assert_eq!(removed, 0);
    }

    #[tokio::test]
    async fn a_committed_label_is_never_cleared() {
        let store = Store::memory(MemoryStore::new(), RetryConfig::default());
        let cancel = CancellationToken::new();
        let manifest = layout::backup_manifest_key("fixed").unwrap();
        put(&store, "backups/fixed/base.tar.0000.zst", b"a").await;
        put(&store, "backups/fixed/manifest.json", b"{}").await;
        let err = remove_interrupted(&store, "fixed", &manifest, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BackupExists { .. }), "{err}");
        assert_eq!(keys(&store).await.len(), 2, "nothing deleted");
    }

    #[tokio::test]
    async fn the_commit_checks_the_parts_are_this_runs() {
        let store = Store::memory(MemoryStore::new(), RetryConfig::default());
        let cancel = CancellationToken::new();
        put(&store, "backups/b/base.tar.0000.zst", b"aaaa").await;
        put(&store, "backups/b/base.tar.0001.zst", b"bb").await;
        let ours = [part("base.tar.0000.zst", 4), part("base.tar.0001.zst", 2)];
        check_parts_stored(&store, "b", &ours, &cancel)
            .await
            .unwrap();

        let table: [(&str, &[BackupPart]); 3] = [
            (
                "an object this run did not store",
                &[part("base.tar.0000.zst", 4)],
            ),
            (
                "a part has another size",
                &[part("base.tar.0000.zst", 4), part("base.tar.0001.zst", 3)],
            ),
            (
                "a part this run stored is gone",
                &[
                    part("base.tar.0000.zst", 4),
                    part("base.tar.0001.zst", 2),
                    part("base.tar.0002.zst", 1),
                ],
            ),
        ];
        for (case, parts) in table {
            let err = check_parts_stored(&store, "b", parts, &cancel)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::BackupExists { .. }), "{case}: {err}");
        }
    }

    #[test]
    fn labels_come_from_the_start_time() {
        for (time, label) in [
            ("2026-11-25T05:00:00Z", "20261125T050000Z"),
            ("2026-01-02T03:04:05.678Z", "20260102T030405Z"),
        ] {
            let label_made = label_for(Timestamp::parse(time).unwrap());
            assert_eq!(label_made, label);
            assert_eq!(label_problem(&label_made), None);
        }
    }

    #[test]
    fn segment_sizes_parse_as_show_prints_them() {
        let table = [
            ("16MB", Some(16 << 20)),
            ("1GB", Some(1 << 30)),
            ("1048576B", Some(1 << 20)),
            ("64MB", Some(64 << 20)),
            ("3MB", None),
            ("16", None),
            ("MB", None),
            ("16TB", None),
        ];
        for (text, want) in table {
            assert_eq!(
                parse_segment_size(text).map(WalSegSize::bytes),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn archive_names_map_to_tablespaces() {
        assert_eq!(archive_tablespace("base.tar"), Some(None));
        assert_eq!(archive_tablespace("16385.tar"), Some(Some(Oid(16385))));
        for bad in [
            "base",
            ".tar",
            "x.tar",
            "16385.tar.gz",
            "-1.tar",
            "99999999999.tar",
        ] {
            assert_eq!(archive_tablespace(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn an_upload_meeting_its_own_earlier_attempt_succeeds() {
        let store = Store::memory(MemoryStore::default(), RetryConfig::ARCHIVE);
        let cancel = CancellationToken::new();
        put(&store, "backups/b/base.tar.0000.zst", b"part").await;
        let key = ObjectKey::new("backups/b/base.tar.0000.zst".to_owned()).unwrap();
        let len = upload(&store, &key, "b", Bytes::from_static(b"part"), &cancel)
            .await
            .unwrap();
        assert_eq!(len, 4);
        let err = upload(&store, &key, "b", Bytes::from_static(b"other"), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BackupExists { .. }), "{err}");
    }
}
