//! `restore`: plan a point-in-time restore, unpack its base backup and configure recovery.
//!
//! The order is what makes a restore safe to run in an outage:
//!
//! 1. The catalog is loaded and the request planned ([`walferry_manifest::Catalog::plan`]);
//!    a target no backup can reach is refused here, before anything is written.
//! 2. The backup is unpacked ([`unpack()`](super::unpack())), which refuses a non-empty
//!    data or tablespace directory before writing and checks every part and file.
//! 3. `tablespace_map`, which PostgreSQL reads at startup to recreate `pg_tblspc/<oid>`, is
//!    rewritten to name the directories the tablespaces were restored to.
//! 4. The recovery settings are appended to `postgresql.auto.conf` (read after
//!    `postgresql.conf`, so they win): `restore_command`, the planned
//!    `recovery_target_timeline` as a number, every other `recovery_target*` setting
//!    emptied (so that a setting the backup carried cannot make PostgreSQL see two targets),
//!    then the target. Then `recovery.signal`, or `standby.signal` for a replica
//!    that follows the archive, replaces whichever signal file the backup held.
//!
//! The data directory is ready for `pg_ctl start` when [`run`] returns.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::info;
use walferry_manifest::backup::Oid;
use walferry_manifest::{
    BackupManifest, RecoveryTarget, RestorePlan, RestoreRequest, io as repo_io, io::LoadedCatalog,
};
use walferry_store::{CancellationToken, Store};

use super::unpack::{UnpackOptions, UnpackStats, unpack};
use crate::blocking;
use crate::error::{Error, Result};

/// What PostgreSQL does once it reaches the target: `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetAction {
    /// Pause replay, to inspect the cluster before ending recovery.
    Pause,
    /// End recovery and open for writes on a new timeline.
    #[default]
    Promote,
    /// Stop the server, so that it can be restarted with other targets.
    Shutdown,
}

impl TargetAction {
    /// The value PostgreSQL reads.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The target, timeline and (optionally) backup.
    pub request: RestoreRequest,
    /// `recovery_target_action`; ignored without a target (the end of the archive) and for
    /// a standby.
    pub action: TargetAction,
    /// Write `standby.signal` rather than `recovery.signal`: a replica that keeps fetching
    /// WAL from the archive, with no target.
    pub standby: bool,
    /// The `restore_command` to configure, as PostgreSQL should run it.
    pub restore_command: String,
    /// Tablespaces to restore elsewhere than their original location: original location →
    /// new directory, like `pg_basebackup --tablespace-mapping`.
    pub tablespace_mapping: Vec<(PathBuf, PathBuf)>,
    /// Parallelism, non-empty targets, progress.
    pub unpack: UnpackOptions,
}

/// A finished restore.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// The plan it followed.
    pub plan: RestorePlan,
    /// What the unpack wrote.
    pub stats: UnpackStats,
    /// The settings written to `postgresql.auto.conf`, in order.
    pub settings: Vec<(String, String)>,
    /// The signal file written: `recovery.signal` or `standby.signal`.
    pub signal: &'static str,
    /// How long it took.
    pub elapsed: Duration,
}

/// Loads the catalog of `store` and plans `request` against it, without writing anything.
/// Fails with [`Error::Unreachable`] when no backup reaches the target.
pub async fn plan(
    store: &Store,
    request: &RestoreRequest,
    cancel: &CancellationToken,
) -> Result<(LoadedCatalog, RestorePlan)> {
    let repo = store.location().to_owned();
    let loaded = repo_io::load_catalog(store, cancel)
        .await
        .map_err(|e| crate::push::catalog_error(e, &repo))?;
    let plan = loaded
        .catalog()
        .plan(request)
        .map_err(|source| Error::Unreachable {
            repo: repo.clone(),
            source,
        })?;
    Ok((loaded, plan))
}

/// Restores into the data directory `pgdata`; see the [module docs](self).
pub async fn run(
    store: &Store,
    pgdata: &Path,
    options: &RestoreOptions,
    cancel: &CancellationToken,
) -> Result<RestoreOutcome> {
    let started = Instant::now();
    let (loaded, plan) = plan(store, &options.request, cancel).await?;
    run_planned(store, pgdata, options, &loaded, plan, started, cancel).await
}

/// [`run`] with the catalog already loaded and the restore planned (by [`plan`]); `started` is
/// when the restore began, for [`RestoreOutcome::elapsed`].
pub async fn run_planned(
    store: &Store,
    pgdata: &Path,
    options: &RestoreOptions,
    loaded: &LoadedCatalog,
    plan: RestorePlan,
    started: Instant,
    cancel: &CancellationToken,
) -> Result<RestoreOutcome> {
    let manifest = loaded
        .backups()
        .iter()
        .find(|m| m.label == plan.backup.label)
        .ok_or_else(|| Error::Internal {
            message: format!(
                "the plan chose backup '{}', which the catalog does not hold",
                plan.backup.label
            ),
        })?
        .clone();
    info!(
        backup = %manifest.label,
        target = %plan.target,
        timeline = %plan.timeline,
        segments = plan.segments.len(),
        "restore planned"
    );
    let mut unpack_options = options.unpack.clone();
    unpack_options
        .tablespace_targets
        .extend(tablespace_targets(&manifest, &options.tablespace_mapping)?);
    let stats = unpack(store, &manifest, pgdata, &unpack_options, cancel).await?;

    let settings = recovery_settings(&plan, options);
    let signal = if options.standby {
        "standby.signal"
    } else {
        "recovery.signal"
    };
    blocking({
        let pgdata = pgdata.to_owned();
        let targets = unpack_options.tablespace_targets.clone();
        let settings = settings.clone();
        let label = manifest.label.clone();
        let tablespaces: Vec<(Oid, String)> = manifest
            .tablespaces
            .iter()
            .map(|ts| (ts.oid, ts.location.clone()))
            .collect();
        move || {
            rewrite_tablespace_map(&pgdata, &tablespaces, &targets)?;
            write_recovery_config(&pgdata, &label, &settings, signal)
        }
    })
    .await?;
    let elapsed = started.elapsed();
    info!(
        backup = %manifest.label,
        files = stats.files,
        bytes = stats.written_bytes,
        elapsed_ms = elapsed.as_millis() as u64,
        "restore written; recovery configured"
    );
    Ok(RestoreOutcome {
        plan,
        stats,
        settings,
        signal,
        elapsed,
    })
}

/// Resolves `--tablespace-mapping` pairs against the backup's tablespaces.
fn tablespace_targets(
    manifest: &BackupManifest,
    mapping: &[(PathBuf, PathBuf)],
) -> Result<HashMap<Oid, PathBuf>> {
    let mut targets = HashMap::new();
    for (old, new) in mapping {
        let Some(ts) = manifest
            .tablespaces
            .iter()
            .find(|ts| Path::new(&ts.location) == old)
        else {
            let known: Vec<&str> = manifest
                .tablespaces
                .iter()
                .map(|ts| ts.location.as_str())
                .collect();
            return Err(Error::InvalidRequest {
                message: format!(
                    "--tablespace-mapping names '{}', which is not a tablespace of backup '{}' (its tablespaces: {})",
                    old.display(),
                    manifest.label,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        };
        if !new.is_absolute() {
            return Err(Error::InvalidRequest {
                message: format!(
                    "--tablespace-mapping target '{}' is not an absolute path",
                    new.display()
                ),
            });
        }
        targets.insert(ts.oid, new.clone());
    }
    Ok(targets)
}

/// The recovery settings for `plan`, in the order they are written.
pub fn recovery_settings(plan: &RestorePlan, options: &RestoreOptions) -> Vec<(String, String)> {
    let mut settings = vec![(
        "restore_command".to_owned(),
        options.restore_command.clone(),
    )];
    let set = |settings: &mut Vec<(String, String)>, name: &str, value: String| {
        settings.push((name.to_owned(), value));
    };
    set(
        &mut settings,
        "recovery_target_timeline",
        plan.timeline.get().to_string(),
    );
    // Exactly one target (or none): every other one is emptied explicitly.
    let mut target = ("", String::new());
    if !options.standby {
        target = match &plan.target {
            RecoveryTarget::Time(time) => ("recovery_target_time", postgres_time(*time)),
            RecoveryTarget::Lsn(lsn) => ("recovery_target_lsn", lsn.to_string()),
            RecoveryTarget::Xid(xid) => ("recovery_target_xid", xid.to_string()),
            RecoveryTarget::Name(name) => ("recovery_target_name", name.clone()),
            RecoveryTarget::Immediate => ("recovery_target", "immediate".to_owned()),
            RecoveryTarget::EndOfArchive => ("", String::new()),
        };
    }
    // Empty ones first: PostgreSQL refuses a change of any target setting, even to empty,
    // after another target is set.
    for name in [
        "recovery_target",
        "recovery_target_lsn",
        "recovery_target_name",
        "recovery_target_time",
        "recovery_target_xid",
    ] {
        if name != target.0 {
            set(&mut settings, name, String::new());
        }
    }
    if !target.0.is_empty() {
        set(&mut settings, target.0, target.1.clone());
    }
    if !target.0.is_empty() {
        let inclusive = matches!(
            plan.target,
            RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_) | RecoveryTarget::Xid(_)
        ) && !plan.inclusive;
        set(
            &mut settings,
            "recovery_target_inclusive",
            if inclusive { "off" } else { "on" }.to_owned(),
        );
        set(
            &mut settings,
            "recovery_target_action",
            options.action.as_str().to_owned(),
        );
    }
    settings
}

/// `time` as PostgreSQL's `recovery_target_time` accepts it: `2026-11-25 05:00:00.5+00`
/// (it refuses the RFC 3339 `T` and `Z`).
fn postgres_time(time: walferry_manifest::Timestamp) -> String {
    let text = time.to_string();
    let text = text.strip_suffix('Z').unwrap_or(&text);
    format!("{}+00", text.replacen('T', " ", 1))
}

/// A value quoted for a PostgreSQL configuration file.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Appends `settings` to `postgresql.auto.conf` and writes `signal`, removing the other
/// signal file; fsyncs both files and the directory.
fn write_recovery_config(
    pgdata: &Path,
    label: &str,
    settings: &[(String, String)],
    signal: &str,
) -> Result<()> {
    let local = |action, path: &Path, source| Error::LocalIo {
        action,
        path: path.to_owned(),
        source,
    };
    let auto_conf = pgdata.join("postgresql.auto.conf");
    let mut text = String::new();
    let _ = writeln!(
        text,
        "\n# Recovery settings written by walferry-restore for backup '{label}'."
    );
    for (name, value) in settings {
        let _ = writeln!(text, "{name} = {}", conf_quote(value));
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto_conf)
        .map_err(|e| local("open", &auto_conf, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| local("write", &auto_conf, e))?;

    for other in ["recovery.signal", "standby.signal"] {
        let path = pgdata.join(other);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(local("remove", &path, e)),
        }
    }
    let signal_path = pgdata.join(signal);
    File::create(&signal_path)
        .and_then(|f| f.sync_all())
        .map_err(|e| local("create", &signal_path, e))?;
    File::open(pgdata)
        .and_then(|d| d.sync_all())
        .map_err(|e| local("fsync", pgdata, e))
}

/// Rewrites `tablespace_map` (`<oid> <path>` lines) so that each tablespace names the
/// directory it was restored to; PostgreSQL recreates the `pg_tblspc` links from it when it
/// starts. Without relocated tablespaces, or without the file, nothing changes.
fn rewrite_tablespace_map(
    pgdata: &Path,
    tablespaces: &[(Oid, String)],
    targets: &HashMap<Oid, PathBuf>,
) -> Result<()> {
    let path = pgdata.join("tablespace_map");
    if targets.is_empty() || tablespaces.is_empty() || !path.exists() {
        return Ok(());
    }
    let mut text = String::new();
    for (oid, location) in tablespaces {
        let dir = targets
            .get(oid)
            .map_or_else(|| location.clone(), |d| d.display().to_string());
        // PostgreSQL reads a backslash as escaping the next character, so that a path may
        // hold a newline.
        let mut escaped = String::with_capacity(dir.len());
        for c in dir.chars() {
            if matches!(c, '\\' | '\n' | '\r') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        let _ = writeln!(text, "{oid} {escaped}");
    }
    let tmp = pgdata.join("tablespace_map.walferry-tmp");
    let local = |action, path: &Path, source| Error::LocalIo {
        action,
        path: path.to_owned(),
        source,
    };
    let mode = fs::metadata(&path)
        .map_err(|e| local("read", &path, e))?
        .permissions();
    {
        let mut file = File::create(&tmp).map_err(|e| local("create", &tmp, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.set_permissions(mode))
            .and_then(|()| file.sync_all())
            .map_err(|e| local("write", &tmp, e))?;
    }
    fs::rename(&tmp, &path).map_err(|e| local("replace", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use walferry_manifest::Timestamp;

    #[test]
    fn quoting_follows_postgresql() {
        assert_eq!(conf_quote("a'b\\c"), "'a''b\\\\c'");
        assert_eq!(
            conf_quote("walferry-restore fetch %f %p"),
            "'walferry-restore fetch %f %p'"
        );
    }

    #[test]
    fn tablespace_map_names_new_directories() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("tablespace_map");
        fs::write(&map, "16385 /old/one\n16386 /old/two\n").unwrap();
        let tablespaces = vec![
            (Oid(16385), "/old/one".to_owned()),
            (Oid(16386), "/old/two".to_owned()),
        ];
        let targets = HashMap::from([(Oid(16386), PathBuf::from("/new/t\nwo"))]);
        rewrite_tablespace_map(dir.path(), &tablespaces, &targets).unwrap();
        assert_eq!(
            fs::read_to_string(&map).unwrap(),
            "16385 /old/one\n16386 /new/t\\\nwo\n"
        );
        // Nothing relocated: the file is left as it is.
        fs::write(&map, "x").unwrap();
        rewrite_tablespace_map(dir.path(), &tablespaces, &HashMap::new()).unwrap();
        assert_eq!(fs::read_to_string(&map).unwrap(), "x");
    }

    #[test]
    fn recovery_config_replaces_signals_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("postgresql.auto.conf"),
            "work_mem = '8MB'\n",
        )
        .unwrap();
        fs::write(dir.path().join("standby.signal"), "").unwrap();
        let settings = vec![
            ("restore_command".to_owned(), "fetch '%f'".to_owned()),
            ("recovery_target_name".to_owned(), "p1".to_owned()),
        ];
        write_recovery_config(dir.path(), "L", &settings, "recovery.signal").unwrap();
        let text = fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(text.starts_with("work_mem = '8MB'\n"), "{text}");
        assert!(
            text.contains("restore_command = 'fetch ''%f'''\n"),
            "{text}"
        );
        assert!(text.contains("recovery_target_name = 'p1'\n"), "{text}");
        assert!(dir.path().join("recovery.signal").exists());
        assert!(!dir.path().join("standby.signal").exists());
    }

    /// A plan over a repository with one backup on timeline 1 and segments 2 to 9.
    fn plan_for(target: RecoveryTarget, inclusive: bool) -> RestorePlan {
        use walferry_manifest::{BackupSummary, ClusterIdentity, RepoDescriptor, TimelineGraph};
        use walferry_manifest::{Catalog, WalIndex};
        use walferry_wal::{Lsn, PgVersion, TimelineId, WalFileName, WalSegSize};
        let identity = ClusterIdentity {
            system_identifier: 7,
            pg_version: PgVersion::from_major(15).unwrap(),
            wal_segment_size: WalSegSize::DEFAULT,
        };
        let descriptor = RepoDescriptor::new(identity);
        let tli = TimelineId::new(1).unwrap();
        let backups = [BackupSummary {
            label: "b".into(),
            identity,
            start_lsn: Lsn(0x0200_0028),
            start_timeline: tli,
            stop_lsn: Lsn(0x0200_0100),
            stop_timeline: tli,
            start_time: Timestamp::parse("2026-11-25 04:00:00+00").unwrap(),
            stop_time: Timestamp::parse("2026-11-25 04:01:00+00").unwrap(),
        }];
        let names =
            (2..10).map(|n| WalFileName::parse(&format!("0000000100000000000000{n:02X}")).unwrap());
        let wal = WalIndex::from_names(WalSegSize::DEFAULT, names);
        let timelines = TimelineGraph::new([]);
        let catalog = Catalog {
            descriptor: &descriptor,
            backups: &backups,
            timelines: &timelines,
            wal: &wal,
        };
        let request = RestoreRequest {
            inclusive,
            ..RestoreRequest::new(target)
        };
        catalog.plan(&request).unwrap()
    }

    #[test]
    fn settings_name_one_target_and_empty_the_others() {
        let time = Timestamp::parse("2026-11-25 05:00:00+00").unwrap();
        let plan = plan_for(RecoveryTarget::Time(time), false);
        let options = RestoreOptions {
            request: RestoreRequest::new(RecoveryTarget::Time(time)),
            action: TargetAction::Pause,
            standby: false,
            restore_command: "walferry-restore fetch %f %p".into(),
            tablespace_mapping: Vec::new(),
            unpack: UnpackOptions::default(),
        };
        let settings = recovery_settings(&plan, &options);
        let get = |name: &str| {
            settings
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("restore_command"), Some("walferry-restore fetch %f %p"));
        assert_eq!(get("recovery_target_time"), Some("2026-11-25 05:00:00+00"));
        assert_eq!(get("recovery_target_name"), Some(""));
        assert_eq!(get("recovery_target"), Some(""));
        assert_eq!(get("recovery_target_inclusive"), Some("off"));
        assert_eq!(get("recovery_target_action"), Some("pause"));
        assert_eq!(
            get("recovery_target_timeline"),
            Some(plan.timeline.get().to_string().as_str())
        );

        // A standby has no target, whatever was asked.
        let standby = RestoreOptions {
            standby: true,
            ..options
        };
        let settings = recovery_settings(&plan, &standby);
        assert!(
            settings
                .iter()
                .filter(|(n, _)| n.starts_with("recovery_target") && n != "recovery_target_timeline")
                .all(|(_, v)| v.is_empty()),
            "{settings:?}"
        );
    }
}
