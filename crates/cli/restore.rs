//! `walferry-restore restore`: one command from a repository to a data directory recovered
//! to a point in time.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use walferry_engine::restore::server::{self, StartOptions, StartOutcome};
use walferry_engine::restore::{self as engine, RestoreOptions, TargetAction, UnpackOptions};
use walferry_manifest::RecoveryTarget;
use walferry_store::{CancellationToken, RetryConfig, Store};

use crate::prefetch::{self, Launch};
use crate::progress::{Reporter, human_bytes, human_duration};
use crate::target::TargetArgs;
use crate::{Exit, GlobalArgs, RepoArgs};

/// Arguments of `walferry-restore restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The data directory to restore into; it must be empty or absent
    #[arg(long, short = 'D', env = "PGDATA", value_name = "DIR")]
    pub pgdata: PathBuf,

    /// Where to stop, and from which backup.
    #[command(flatten, next_help_heading = "Recovery target")]
    pub target: TargetArgs,

    /// What PostgreSQL does at the target: pause, promote or shutdown
    #[arg(long, value_name = "ACTION", default_value = "promote", value_parser = parse_action)]
    pub target_action: TargetAction,

    /// Build a replica that keeps following the archive (standby.signal; no target)
    #[arg(long, conflicts_with_all = ["target", "target_action", "target_exclusive"])]
    pub standby: bool,

    /// Start PostgreSQL when the data directory is ready and wait until it reaches the target
    /// (and is promoted), or, with --standby, until it is consistent
    #[arg(long)]
    pub start: bool,

    /// Directory of PostgreSQL's programs, for --start [default: PATH, then
    /// /usr/lib/postgresql/MAJOR/bin]
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,

    /// Restore the tablespace at OLDDIR into NEWDIR (repeatable), like pg_basebackup's option
    #[arg(long, value_name = "OLDDIR=NEWDIR", value_parser = parse_mapping)]
    pub tablespace_mapping: Vec<(PathBuf, PathBuf)>,

    /// Backup parts downloaded and written at once; memory use is about 2 x jobs x part size
    #[arg(long, env = "WALFERRY_JOBS", default_value_t = engine::unpack::DEFAULT_JOBS)]
    pub jobs: std::num::NonZeroUsize,

    /// Restore into directories that already hold files, overwriting the backup's files and
    /// leaving the others
    #[arg(long)]
    pub allow_non_empty: bool,

    /// The restore_command to configure [default: this walferry-restore, with the repository
    /// options given to this command, fetching %f into %p]
    #[arg(long, value_name = "COMMAND")]
    pub restore_command: Option<String>,

    /// Show the plan and write nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Start the WAL prefetch pipeline before unpacking the backup, so that the WAL recovery
    /// needs streams into pg_wal's spool meanwhile (not when running as root: the first
    /// fetch starts it then, as the data directory's owner)
    #[arg(long, env = "WALFERRY_PREFETCH", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub prefetch: bool,
}

/// Starts the WAL prefetch pipeline for the restore planned in `plan`: from its first segment,
/// on its timeline, watching this process until recovery is configured. Refuses a data
/// directory that a pipeline still serves (an earlier restore's recovery still running).
fn start_prefetch(
    global: &GlobalArgs,
    pgdata: &std::path::Path,
    plan: &walferry_manifest::RestorePlan,
    allow_non_empty: bool,
) -> anyhow::Result<()> {
    if prefetch::running(pgdata)? {
        anyhow::bail!(
            "a WAL prefetch is running for '{}': it is still being recovered; HINT: stop that recovery (pg_ctl stop) and wait for the prefetch to stop, or restore into another directory",
            pgdata.display()
        );
    }
    if server::effective_uid() == Some(0) {
        tracing::debug!("running as root: the first fetch will start the WAL prefetch");
        return Ok(());
    }
    // The restore refuses a non-empty data directory; a pipeline must not spool into one.
    let occupied = std::fs::read_dir(pgdata).is_ok_and(|mut entries| entries.next().is_some());
    if occupied && !allow_non_empty {
        return Ok(());
    }
    let Some(first) = plan.segments.first() else {
        return Ok(());
    };
    let last = match plan.end {
        walferry_manifest::PlanEnd::Immediate { .. } => plan.segments.last(),
        _ => None,
    };
    let launch = Launch {
        pgdata,
        start: walferry_engine::pipeline::PipelineStart::From(first),
        timeline: Some(plan.timeline),
        last,
        restore_pid: Some(std::process::id()),
        log_file: Some(prefetch::restore_log_file(pgdata)),
    };
    let pid = prefetch::spawn(global, &launch)?;
    tracing::info!(
        pid,
        "started the WAL prefetch (log: {})",
        prefetch::restore_log_file(pgdata).display()
    );
    Ok(())
}

fn parse_action(text: &str) -> Result<TargetAction, String> {
    match text {
        "pause" => Ok(TargetAction::Pause),
        "promote" => Ok(TargetAction::Promote),
        "shutdown" => Ok(TargetAction::Shutdown),
        other => Err(format!("'{other}' is not pause, promote or shutdown")),
    }
}

fn parse_mapping(text: &str) -> Result<(PathBuf, PathBuf), String> {
    let (old, new) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not OLDDIR=NEWDIR"))?;
    let (old, new) = (PathBuf::from(old), PathBuf::from(new));
    if !old.is_absolute() || !new.is_absolute() {
        return Err(format!("'{text}': both directories must be absolute paths"));
    }
    Ok((old, new))
}

/// The `restore_command` that reaches `repo` the way this process does.
pub fn default_restore_command(repo: &RepoArgs) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("find the walferry-restore program")?;
    let mut words = vec![shell_quote(&exe.display().to_string())];
    words.extend(repo.to_args()?.iter().map(|a| shell_quote(a)));
    words.extend(["fetch", "%f", "%p"].map(str::to_owned));
    Ok(words.join(" "))
}

/// `word` quoted for `sh` when it needs it.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:+,@".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Runs `walferry-restore restore`.
pub fn run(global: &GlobalArgs, args: &RestoreArgs) -> Result<(), (Exit, anyhow::Error)> {
    let repo = &global.repo;
    let usage = |e: anyhow::Error| (Exit::Usage, e);
    let engine_error =
        |e: walferry_engine::Error| (Exit::for_kind(e.kind()), anyhow::Error::new(e));
    if args.start && !args.dry_run && server::effective_uid() == Some(0) {
        return Err(usage(anyhow::anyhow!(
            "--start: PostgreSQL refuses to run as root; HINT: run walferry-restore as the user that owns the data directory (e.g. runuser -u postgres -- walferry-restore ...), or restore without --start"
        )));
    }
    let config = repo.resolve(RetryConfig::RESTORE).map_err(usage)?;
    let restore_command = match &args.restore_command {
        Some(command) => command.clone(),
        None => default_restore_command(repo).map_err(usage)?,
    };
    let pgdata = std::path::absolute(&args.pgdata)
        .with_context(|| format!("resolve '{}'", args.pgdata.display()))
        .map_err(usage)?;
    let options = RestoreOptions {
        request: args.target.request(),
        action: args.target_action,
        standby: args.standby,
        restore_command,
        tablespace_mapping: args.tablespace_mapping.clone(),
        unpack: UnpackOptions {
            jobs: args.jobs,
            allow_non_empty: args.allow_non_empty,
            ..UnpackOptions::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the runtime")
        .map_err(usage)?;
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.cancel();
            }
        });
        let store = Store::open(&config)
            .await
            .context("open repository")
            .map_err(usage)?;
        if args.dry_run {
            let (_, plan) = engine::plan(&store, &options.request, &cancel)
                .await
                .map_err(engine_error)?;
            println!("{}", plan.explain());
            println!("dry run: nothing was written");
            return Ok(());
        }
        let started = Instant::now();
        let (loaded, plan) = engine::plan(&store, &options.request, &cancel)
            .await
            .map_err(engine_error)?;
        if args.prefetch {
            start_prefetch(global, &pgdata, &plan, args.allow_non_empty).map_err(usage)?;
        }
        let reporter = Reporter::start(options.unpack.progress.clone());
        let outcome =
            engine::run_planned(&store, &pgdata, &options, &loaded, plan, started, &cancel).await;
        reporter.finish();
        let outcome = outcome.map_err(engine_error)?;
        println!("{}", outcome.plan.explain());
        println!(
            "restored backup '{}' into {}: {} files, {} ({} downloaded) in {}",
            outcome.plan.backup.label,
            pgdata.display(),
            outcome.stats.files,
            human_bytes(outcome.stats.written_bytes),
            human_bytes(outcome.stats.downloaded_bytes),
            human_duration(outcome.elapsed)
        );
        println!(
            "recovery configured in postgresql.auto.conf with {}",
            outcome.signal
        );
        if !args.start {
            if server::effective_uid() == Some(0) {
                println!(
                    "the files belong to root; before starting: chown -R postgres: {} (and any tablespace directories)",
                    pgdata.display()
                );
            }
            println!("start it with: pg_ctl -D {} start", pgdata.display());
            return Ok(());
        }
        let major = outcome.plan.backup.identity.pg_version.major();
        let pg_ctl = server::find_pg_ctl(args.pg_bin.as_deref(), major).map_err(engine_error)?;
        let has_target = !matches!(outcome.plan.target, RecoveryTarget::EndOfArchive);
        let start = StartOptions {
            pg_ctl,
            log: pgdata.join("log/walferry-restore-start.log"),
            standby: args.standby,
            action: (has_target && !args.standby).then_some(args.target_action),
        };
        println!(
            "starting PostgreSQL (log: {}); recovery needs {} WAL segments",
            start.log.display(),
            outcome.plan.segments.len()
        );
        let started = Instant::now();
        let result = server::start(&pgdata, &start, |p| {
            match &p.replaying {
                Some(segment) => tracing::info!(
                    "recovering: replaying {segment} after {}",
                    human_duration(p.elapsed)
                ),
                None => tracing::info!(
                    "recovering: {} WAL files restored{} after {}",
                    p.restored,
                    p.last
                        .as_ref()
                        .map(|n| format!(", last {n}"))
                        .unwrap_or_default(),
                    human_duration(p.elapsed)
                ),
            }
        })
        .await
        .map_err(engine_error)?;
        let took = human_duration(started.elapsed());
        match result {
            StartOutcome::Promoted { timeline } => println!(
                "PostgreSQL reached {} and was promoted{} in {took}; it is running",
                outcome.plan.target,
                timeline
                    .map(|t| format!(" to timeline {t}"))
                    .unwrap_or_default()
            ),
            StartOutcome::Paused => println!(
                "PostgreSQL reached {} and paused in {took}; resume with SELECT pg_wal_replay_resume()",
                outcome.plan.target
            ),
            StartOutcome::ShutDown => println!(
                "PostgreSQL reached {} and shut down in {took}",
                outcome.plan.target
            ),
            StartOutcome::Standby => println!(
                "PostgreSQL is a consistent standby in {took}, following the archive; promote it with pg_ctl promote"
            ),
        }
        Ok(())
    });
    runtime.shutdown_background();
    result
}
