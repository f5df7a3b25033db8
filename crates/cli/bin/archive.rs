//! `walferry-archive`: everything that writes to the repository.

// Futures that nest the AWS SDK's are deeper than rustc's default query depth (128) allows
// when it computes their layout in release builds.
#![recursion_limit = "256"]

use std::num::{NonZeroU64, NonZeroUsize};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use walferry::{Exit, GlobalArgs};
use walferry_engine::backup::parts::PartOptions;
use walferry_engine::backup::{self, BackupOptions, ConnectOptions};
use walferry_engine::{PushOptions, PushOutcome};
use walferry_store::{CancellationToken, RetryConfig, Store};

const PROGRAM: &str = "walferry-archive";

/// Archive PostgreSQL WAL into a walferry repository.
///
/// Use as archive_command = 'walferry-archive push %p' with the repository in WALFERRY_REPO or
/// the configuration file. Exit codes: 0 archived, 2 usage, 3 conflicting content already
/// archived (or a backup label taken), 4 another cluster, 5 storage or PostgreSQL failure,
/// 6 corrupt archive, 7 local I/O, 8 not a WAL file, 9 interrupted.
#[derive(Debug, Parser)]
#[command(name = PROGRAM, version, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Archive one WAL file (archive_command = 'walferry-archive push %p')
    Push(PushArgs),
    /// Take a base backup over the replication protocol and store it in the repository
    Backup(BackupArgs),
}

#[derive(Debug, clap::Args)]
struct BackupArgs {
    /// libpq connection string (key=value pairs); unset keys come from the PG* environment
    /// variables (PGHOST, PGPORT, PGUSER, PGPASSWORD...) and libpq's defaults
    #[arg(
        long,
        env = "WALFERRY_CONNINFO",
        value_name = "CONNINFO",
        default_value = ""
    )]
    conninfo: String,

    /// Part uploads in flight; memory use is about (jobs + 1) x part size
    #[arg(long, env = "WALFERRY_JOBS", default_value_t = backup::DEFAULT_JOBS)]
    jobs: NonZeroUsize,

    /// Largest uncompressed size of one stored part, in MiB
    #[arg(long, env = "WALFERRY_PART_SIZE", value_name = "MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    part_size: u64,

    /// Label of the backup (ASCII letters, digits, '-', '_', '.'); default: its start time,
    /// YYYYMMDDTHHMMSSZ
    #[arg(long, env = "WALFERRY_LABEL")]
    label: Option<String>,

    /// zstd compression level, 1 (fastest) to 19
    #[arg(long, env = "WALFERRY_COMPRESS_LEVEL", default_value_t = walferry_engine::DEFAULT_COMPRESSION_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    compress_level: i32,

    /// Seconds to wait for PostgreSQL to archive the backup's last WAL segment before giving up
    /// (nothing is committed then)
    #[arg(long, env = "WALFERRY_ARCHIVE_TIMEOUT", value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    archive_timeout: u64,
}

impl BackupArgs {
    /// The validated options; reads the PG* environment, does no I/O.
    fn options(&self) -> anyhow::Result<BackupOptions> {
        let connect = ConnectOptions::from_conninfo(&self.conninfo).context("read --conninfo")?;
        if let Some(label) = &self.label
            && let Some(reason) = walferry_manifest::backup::label_problem(label)
        {
            anyhow::bail!("backup label '{label}' {reason}");
        }
        let part_size = self
            .part_size
            .checked_mul(1 << 20)
            .and_then(NonZeroU64::new)
            .context("--part-size is out of range")?;
        Ok(BackupOptions {
            connect,
            label: self.label.clone(),
            jobs: self.jobs,
            parts: PartOptions {
                part_size,
                level: self.compress_level,
            },
            archive_timeout: std::time::Duration::from_secs(self.archive_timeout),
        })
    }
}

#[derive(Debug, clap::Args)]
struct PushArgs {
    /// Path of the WAL file: PostgreSQL's %p (segment, .partial, .history or .backup)
    #[arg(value_name = "WAL_PATH")]
    path: PathBuf,

    /// zstd compression level, 1 (fastest) to 19
    #[arg(long, env = "WALFERRY_COMPRESS_LEVEL", default_value_t = walferry_engine::DEFAULT_COMPRESSION_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    compress_level: i32,

    /// Files uploaded at once ahead of PostgreSQL's calls, from pg_wal/archive_status, by a
    /// background worker this push starts (it exits after 10 s without a ready file), so that
    /// PostgreSQL's later calls return at once; 1 uploads WAL_PATH alone, with no worker
    #[arg(long, env = "WALFERRY_PUSH_JOBS", default_value_t = walferry_engine::DEFAULT_PUSH_JOBS)]
    jobs: NonZeroUsize,
}

fn main() -> ExitCode {
    walferry::exit_on_panic(PROGRAM, Exit::Bug.code());
    let cli = Cli::parse();
    walferry::init_logging(PROGRAM, &cli.global.log);
    match run(cli) {
        Ok(exit) => walferry::exit_code(exit.code()),
        Err((exit, err)) => {
            walferry::report(PROGRAM, &err);
            walferry::exit_code(exit.code())
        }
    }
}

fn run(cli: Cli) -> Result<Exit, (Exit, anyhow::Error)> {
    let usage = |e: anyhow::Error| (Exit::Usage, e);
    // A backup is not on PostgreSQL's archiving path: give the storage the longer budget.
    let retry = match cli.command {
        Command::Push(_) => RetryConfig::ARCHIVE,
        Command::Backup(_) => RetryConfig::RESTORE,
    };
    let config = cli.global.repo.resolve(retry).map_err(usage)?;
    // An earlier push uploaded this file ahead of PostgreSQL's call: answer before any
    // runtime, client or request.
    if let Command::Push(args) = &cli.command
        && std::env::var_os(WORKER_ENV).is_none()
        && walferry_engine::already_recorded(&args.path, &config.identity())
    {
        tracing::debug!(path = %args.path.display(), "archived earlier");
        return Ok(Exit::Success);
    }
    let runtime = walferry::runtime().map_err(usage)?;
    let result = match cli.command {
        Command::Push(args) if std::env::var_os(WORKER_ENV).is_some() => {
            runtime.block_on(run_worker(&config, &args));
            Ok(Exit::Success)
        }
        Command::Push(args) => runtime.block_on(async {
            let store = Store::open(&config)
                .await
                .context("open repository")
                .map_err(usage)?;
            // A worker uploads the other ready files, started once this push's own file is
            // durable; this push uploads its own file only.
            let (path, repo) = (args.path.clone(), config.identity());
            let options = PushOptions {
                compression_level: args.compress_level,
                jobs: args.jobs,
                start_worker: Some(Arc::new(move || start_worker(&path, &repo))),
            };
            let cancel = CancellationToken::new();
            match walferry_engine::push(&store, &args.path, &options, &cancel).await {
                Ok(outcome) => {
                    if let PushOutcome::Stored {
                        name,
                        original_bytes,
                        stored_bytes,
                    } = &outcome
                    {
                        tracing::debug!(file = %name, original_bytes, stored_bytes, "archived");
                    }
                    Ok(Exit::Success)
                }
                Err(e) => Err((Exit::for_kind(e.kind()), anyhow::Error::new(e))),
            }
        }),
        Command::Backup(args) => runtime.block_on(async {
            let options = args.options().map_err(usage)?;
            let store = Store::open(&config)
                .await
                .context("open repository")
                .map_err(usage)?;
            let cancel = CancellationToken::new();
            let on_signal = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    on_signal.cancel();
                }
            });
            match backup::run(&store, &options, &cancel).await {
                Ok(outcome) => {
                    let m = &outcome.manifest;
                    println!(
                        "backup {} committed: stop LSN {} (timeline {}), {} bytes original, {} bytes stored, {} files, {:.1}s",
                        m.label,
                        m.stop_lsn,
                        m.stop_timeline,
                        m.totals.original_bytes,
                        m.totals.compressed_bytes,
                        m.totals.files,
                        outcome.elapsed.as_secs_f64()
                    );
                    Ok(Exit::Success)
                }
                Err(e) => Err((Exit::for_kind(e.kind()), anyhow::Error::new(e))),
            }
        }),
    };
    // Do not wait for a blocking task stuck on a hung filesystem: the outcome is known.
    runtime.shutdown_background();
    result
}

/// Set in the environment of the background worker a push starts: the same command line,
/// run as the worker for the `pg_wal` of its path.
const WORKER_ENV: &str = "WALFERRY_PUSH_WORKER";

/// How long the worker waits for a new ready file before it exits.
const WORKER_IDLE: Duration = Duration::from_secs(10);

/// Makes sure a background worker runs for the `pg_wal` holding `path`: starts one (this
/// program again, same arguments, [`WORKER_ENV`] set, in its own process group, logging to
/// `pg_wal/walferry-push/worker.log`, not waited for) unless one runs.
fn start_worker(path: &Path, repo: &str) {
    let Some(ledger) = walferry_engine::ledger::Ledger::beside(path, repo) else {
        return;
    };
    if ledger.worker_running() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // Its log goes to a file: a caller reading this push's output to its end must not wait
    // for the worker too.
    let log = ledger
        .pg_wal()
        .join(walferry_engine::ledger::LEDGER_DIR)
        .join("worker.log");
    // Started afresh once it passes 1 MiB.
    let long = std::fs::metadata(&log).is_ok_and(|m| m.len() > 1 << 20);
    let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(!long)
        .write(true)
        .truncate(long)
        .open(&log)
    else {
        return;
    };
    let mut worker = std::process::Command::new(exe);
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // glibc gives each thread that allocates its own arena and keeps what is freed there:
        // a worker compressing on the blocking pool's threads grew to 68 MiB that way, 43 MiB
        // with two arenas, at the same speed (`benches/README.md`, "archive").
        worker.env("MALLOC_ARENA_MAX", "2");
    }
    worker
        .args(std::env::args_os().skip(1))
        .env(WORKER_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0);
    // It outlives this process; init reaps it. Without it, PostgreSQL's calls upload each
    // file themselves.
    if let Err(e) = worker.spawn() {
        tracing::debug!(error = %e, "could not start a push worker");
    }
}

/// The background worker: uploads ready files until idle. Failures are its own to log (at
/// debug level: PostgreSQL's own call for each file reports them).
async fn run_worker(config: &walferry_store::StoreConfig, args: &PushArgs) {
    let Ok(store) = Store::open(config).await else {
        return;
    };
    let options = PushOptions {
        compression_level: args.compress_level,
        jobs: args.jobs,
        start_worker: None,
    };
    let cancel = CancellationToken::new();
    match walferry_engine::push_worker(&store, &args.path, &options, WORKER_IDLE, &cancel).await {
        Ok(Some(report)) => {
            tracing::debug!(
                stored = report.stored,
                failed = report.failed,
                "push worker done"
            );
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "push worker stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_takes_one_path_and_a_level() {
        let cli =
            Cli::try_parse_from([PROGRAM, "push", "pg_wal/000000010000000000000001"]).unwrap();
        let Command::Push(args) = cli.command else {
            panic!("push")
        };
        assert_eq!(args.path, PathBuf::from("pg_wal/000000010000000000000001"));
        assert_eq!(
            args.compress_level,
            walferry_engine::DEFAULT_COMPRESSION_LEVEL
        );
        assert_eq!(args.jobs, walferry_engine::DEFAULT_PUSH_JOBS);
        assert!(Cli::try_parse_from([PROGRAM, "push", "x", "--compress-level", "0"]).is_err());
        assert!(Cli::try_parse_from([PROGRAM, "push", "x", "--jobs", "0"]).is_err());
        assert!(Cli::try_parse_from([PROGRAM, "push"]).is_err());
    }

    #[test]
    fn backup_flags_become_options() {
        let cli = Cli::try_parse_from([
            PROGRAM,
            "backup",
            "--conninfo",
            "host=/tmp port=5433 user=postgres",
            "--jobs",
            "2",
            "--part-size",
            "8",
            "--label",
            "nightly-1",
        ])
        .unwrap();
        let Command::Backup(args) = cli.command else {
            panic!("backup")
        };
        let options = args.options().unwrap();
        assert_eq!(options.connect.port, 5433);
        assert_eq!(options.connect.user, "postgres");
        assert_eq!(options.jobs.get(), 2);
        assert_eq!(options.parts.part_size.get(), 8 << 20);
        assert_eq!(options.label.as_deref(), Some("nightly-1"));

        let defaults = Cli::try_parse_from([PROGRAM, "backup"]).unwrap();
        let Command::Backup(args) = defaults.command else {
            panic!("backup")
        };
        assert_eq!(args.jobs, backup::DEFAULT_JOBS);
        assert_eq!(args.part_size, 64);
        assert_eq!(args.label, None);

        for bad in [
            &["--jobs", "0"][..],
            &["--part-size", "0"],
            &["--compress-level", "20"],
        ] {
            let mut argv = vec![PROGRAM, "backup"];
            argv.extend_from_slice(bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from([PROGRAM, "backup", "--label", "../x"]).unwrap();
        let Command::Backup(args) = cli.command else {
            panic!("backup")
        };
        assert!(args.options().is_err());
    }

    #[test]
    fn help_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
