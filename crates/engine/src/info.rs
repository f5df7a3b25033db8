//! `info`: what a repository holds — its cluster, backups, timelines and WAL — in a form the
//! binaries print as text or JSON.

use serde::Serialize;
use walferry_manifest::io as repo_io;
use walferry_manifest::plan::{RecoveryTarget, RestoreRequest, TargetTimeline};
use walferry_store::{CancellationToken, Store};
use walferry_wal::{SegNo, SegmentName, TimelineId};

use crate::error::{Error, Result};

/// A repository's contents.
#[derive(Debug, Clone, Serialize)]
pub struct RepoInfo {
    /// The repository URL.
    pub repository: String,
    /// The cluster's system identifier, as text.
    pub system_identifier: String,
    /// The PostgreSQL major version.
    pub pg_version: u32,
    /// The WAL segment size in bytes.
    pub wal_segment_size: u64,
    /// Committed backups, oldest (by start LSN) first.
    pub backups: Vec<BackupInfo>,
    /// Timelines with WAL or a history file, in order.
    pub timelines: Vec<TimelineInfo>,
    /// Things that are not right but do not stop a restore: interrupted backups, stray
    /// objects.
    pub problems: Vec<String>,
}

/// One committed backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    /// Its label.
    pub label: String,
    /// Where replay from it starts.
    pub start_lsn: String,
    /// Where it becomes consistent.
    pub stop_lsn: String,
    /// The timeline it was taken on.
    pub timeline: u32,
    /// When it started (RFC 3339).
    pub start_time: String,
    /// When it ended (RFC 3339).
    pub stop_time: String,
    /// Size of the data directory and tablespaces as sent.
    pub original_bytes: u64,
    /// Size stored in the repository.
    pub stored_bytes: u64,
    /// Files, directories and links.
    pub files: u64,
    /// Whether a restore from it can reach consistency: the WAL from its start to its stop is
    /// archived.
    pub usable: bool,
    /// Why it is not usable, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unusable_reason: Option<String>,
}

/// One timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineInfo {
    /// The timeline ID.
    pub timeline: u32,
    /// The timeline it branched from, and where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// The LSN where it branched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_lsn: Option<String>,
    /// Archived WAL as runs of consecutive segments.
    pub wal: Vec<SegmentRange>,
    /// Missing segments between the first and the last archived one.
    pub gaps: Vec<SegmentRange>,
}

/// Segments `first` to `last`, inclusive.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentRange {
    /// The first segment's file name.
    pub first: String,
    /// The last segment's file name.
    pub last: String,
    /// How many segments.
    pub segments: u64,
}

/// Reads the catalog of `store` and describes it.
pub async fn info(store: &Store, cancel: &CancellationToken) -> Result<RepoInfo> {
    let repo = store.location().to_owned();
    let loaded = repo_io::load_catalog(store, cancel)
        .await
        .map_err(|e| crate::push::catalog_error(e, &repo))?;
    let descriptor = loaded.descriptor();
    let size = descriptor.wal_segment_size;
    let name = |tli: TimelineId, segno: SegNo| -> Result<String> {
        SegmentName::new(tli, segno, size)
            .map(|n| n.to_string())
            .map_err(|e| Error::Internal {
                message: e.to_string(),
            })
    };
    let range = |tli, first: SegNo, last: SegNo| -> Result<SegmentRange> {
        Ok(SegmentRange {
            first: name(tli, first)?,
            last: name(tli, last)?,
            segments: last.0.saturating_sub(first.0).saturating_add(1),
        })
    };

    let catalog = loaded.catalog();
    let mut backups = Vec::new();
    let mut manifests: Vec<_> = loaded.backups().iter().collect();
    manifests.sort_by(|a, b| (a.start_lsn, &a.label).cmp(&(b.start_lsn, &b.label)));
    for manifest in manifests {
        let request = RestoreRequest {
            backup: Some(manifest.label.clone()),
            timeline: TargetTimeline::Current,
            ..RestoreRequest::new(RecoveryTarget::Immediate)
        };
        let unusable_reason = catalog.plan(&request).err().map(|e| e.to_string());
        let totals = manifest.compute_totals();
        backups.push(BackupInfo {
            label: manifest.label.clone(),
            start_lsn: manifest.start_lsn.to_string(),
            stop_lsn: manifest.stop_lsn.to_string(),
            timeline: manifest.start_timeline.get(),
            start_time: manifest.start_time.to_string(),
            stop_time: manifest.stop_time.to_string(),
            original_bytes: totals.original_bytes,
            stored_bytes: totals.compressed_bytes,
            files: totals.files,
            usable: unusable_reason.is_none(),
            unusable_reason,
        });
    }

    let wal = loaded.wal();
    let mut tlis: Vec<TimelineId> = wal
        .timelines()
        .chain(loaded.timelines().timelines())
        .collect();
    tlis.sort();
    tlis.dedup();
    let mut timelines = Vec::new();
    for tli in tlis {
        let (parent, branch_lsn) = match loaded
            .timelines()
            .history(tli)
            .and_then(|h| h.entries().last())
        {
            Some(entry) => (
                Some(entry.parent.get()),
                Some(entry.switch_point.to_string()),
            ),
            None => (None, None),
        };
        let runs = wal.runs(tli);
        let mut wal_ranges = Vec::new();
        for run in runs {
            wal_ranges.push(range(tli, run.first(), run.last())?);
        }
        let mut gaps = Vec::new();
        if let (Some(first), Some(last)) = (wal.first(tli), wal.last(tli)) {
            for gap in wal.gaps(tli, first, last) {
                gaps.push(range(tli, gap.first(), gap.last())?);
            }
        }
        timelines.push(TimelineInfo {
            timeline: tli.get(),
            parent,
            branch_lsn,
            wal: wal_ranges,
            gaps,
        });
    }

    Ok(RepoInfo {
        repository: repo,
        system_identifier: descriptor.system_identifier.to_string(),
        pg_version: descriptor.pg_version.major(),
        wal_segment_size: size.bytes(),
        backups,
        timelines,
        problems: loaded.problems().to_vec(),
    })
}

impl RepoInfo {
    /// The human-readable form: a few lines per backup and timeline.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "repository      {}", self.repository);
        let _ = writeln!(
            out,
            "cluster         system identifier {}, PostgreSQL {}, {} MiB segments",
            self.system_identifier,
            self.pg_version,
            self.wal_segment_size >> 20
        );
        let _ = writeln!(out, "backups         {}", self.backups.len());
        for b in &self.backups {
            let _ = writeln!(
                out,
                "  {}  timeline {}  {} .. {}  {} .. {}  {:.1} MiB -> {:.1} MiB  {}",
                b.label,
                b.timeline,
                b.start_lsn,
                b.stop_lsn,
                b.start_time,
                b.stop_time,
                b.original_bytes as f64 / 1048576.0,
                b.stored_bytes as f64 / 1048576.0,
                match &b.unusable_reason {
                    None => "usable".to_owned(),
                    Some(why) => format!("NOT USABLE: {why}"),
                }
            );
        }
        let _ = writeln!(out, "timelines       {}", self.timelines.len());
        for t in &self.timelines {
            let branch = match (&t.parent, &t.branch_lsn) {
                (Some(p), Some(lsn)) => format!(" (from timeline {p} at {lsn})"),
                _ => String::new(),
            };
            let _ = writeln!(out, "  timeline {}{branch}", t.timeline);
            for r in &t.wal {
                let _ = writeln!(
                    out,
                    "    WAL  {} .. {}  {} segments",
                    r.first, r.last, r.segments
                );
            }
            for g in &t.gaps {
                let _ = writeln!(
                    out,
                    "    GAP  {} .. {}  {} segments missing",
                    g.first, g.last, g.segments
                );
            }
        }
        for p in &self.problems {
            let _ = writeln!(out, "problem: {p}");
        }
        out
    }
}
