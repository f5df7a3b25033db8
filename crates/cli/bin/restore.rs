//! `walferry-restore`: everything that reads from the repository.

// Futures that nest the AWS SDK's are deeper than rustc's default query depth (128) allows
// when it computes their layout in release builds.
#![recursion_limit = "256"]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use walferry::estimate::EstimateArgs;
use walferry::prefetch::{self, Launch, PrefetchArgs};
use walferry::restore::RestoreArgs;
use walferry::{Exit, GlobalArgs, RepoArgs};
use walferry_engine::FetchOutcome;
use walferry_engine::pipeline::PipelineStart;
use walferry_engine::spool::{SpoolReader, Taken};
use walferry_store::{CancellationToken, RetryConfig, Store};
use walferry_wal::{SegmentName, WalFileName};

const PROGRAM: &str = "walferry-restore";

/// Restore PostgreSQL WAL from a walferry repository.
///
/// Use as restore_command = 'walferry-restore fetch %f %p' with the repository in WALFERRY_REPO
/// or the configuration file. fetch exits 0 when the verified file is in place, 1 when the
/// archive does not have it, and 200 + the failure's class on a hard failure, so that
/// PostgreSQL stops recovery instead of promoting early (in standby mode, 1 after logging).
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
    /// Restore one WAL file (restore_command = 'walferry-restore fetch %f %p')
    Fetch(FetchArgs),
    /// Show the repository: its cluster, backups, timelines, WAL ranges and gaps
    Info(InfoArgs),
    /// Estimate how long a restore to a target would take, and which stage bounds it
    Estimate(Box<EstimateArgs>),
    /// Restore a base backup into a data directory and configure recovery to a target
    Restore(Box<RestoreArgs>),
    /// Run the WAL prefetch pipeline for a data directory in the foreground (fetch and restore
    /// start it in the background)
    Prefetch(Box<PrefetchArgs>),
    /// Check every object of the repository and that its WAL is complete; exit 6 when anything
    /// is wrong
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// Objects downloaded and checked at once; memory use is about jobs x the largest object
    #[arg(long, env = "WALFERRY_JOBS", default_value_t = walferry_engine::verify::DEFAULT_JOBS)]
    jobs: std::num::NonZeroUsize,

    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct InfoArgs {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct FetchArgs {
    /// The WAL file name PostgreSQL asks for: its %f
    #[arg(value_name = "WAL_FILE")]
    name: String,

    /// Where to put it: PostgreSQL's %p
    #[arg(value_name = "DEST_PATH")]
    dest: PathBuf,

    /// The data directory being recovered, where standby.signal and global/pg_control are read
    /// [default: the current directory, which is the data directory when PostgreSQL runs
    /// restore_command]
    #[arg(long, value_name = "DIR")]
    pgdata: Option<PathBuf>,

    /// Start the WAL prefetch pipeline in the background when none runs for the data directory
    #[arg(long, env = "WALFERRY_PREFETCH", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    prefetch: bool,

    /// How long to wait for a file the prefetch pipeline is downloading before fetching it
    /// directly, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    prefetch_wait: f64,
}

fn main() -> ExitCode {
    walferry::exit_on_panic(PROGRAM, Exit::Bug.fetch_hard_code());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(e),
    };
    walferry::init_logging(PROGRAM, &cli.global.log);
    match cli.command {
        Command::Fetch(args) => fetch_main(&cli.global, args),
        Command::Prefetch(args) => match prefetch::run(&cli.global.repo, &args) {
            Ok(()) => walferry::exit_code(Exit::Success.code()),
            Err((exit, err)) => {
                walferry::report(PROGRAM, &err);
                walferry::exit_code(exit.code())
            }
        },
        Command::Restore(args) => match walferry::restore::run(&cli.global, &args) {
            Ok(()) => walferry::exit_code(Exit::Success.code()),
            Err((exit, err)) => {
                walferry::report(PROGRAM, &err);
                walferry::exit_code(exit.code())
            }
        },
        Command::Estimate(args) => match walferry::estimate::run(&cli.global.repo, &args) {
            Ok(()) => walferry::exit_code(Exit::Success.code()),
            Err((exit, err)) => {
                walferry::report(PROGRAM, &err);
                walferry::exit_code(exit.code())
            }
        },
        Command::Verify(args) => match verify(&cli.global.repo, &args) {
            Ok(exit) => walferry::exit_code(exit.code()),
            Err((exit, err)) => {
                walferry::report(PROGRAM, &err);
                walferry::exit_code(exit.code())
            }
        },
        Command::Info(args) => match info(&cli.global.repo, &args) {
            Ok(()) => walferry::exit_code(Exit::Success.code()),
            Err((exit, err)) => {
                walferry::report(PROGRAM, &err);
                walferry::exit_code(exit.code())
            }
        },
    }
}

/// A failed command: its exit and the error to report.
type Failure = (Exit, anyhow::Error);

/// Opens the repository and runs one engine operation on it.
fn with_store<T, F, Fut>(repo: &RepoArgs, op: F) -> Result<T, Failure>
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = walferry_engine::Result<T>>,
{
    let usage = |e: anyhow::Error| (Exit::Usage, e);
    let config = repo.resolve(RetryConfig::RESTORE).map_err(usage)?;
    let runtime = walferry::runtime().map_err(usage)?;
    let result = runtime.block_on(async {
        let store = Store::open(&config)
            .await
            .context("open repository")
            .map_err(usage)?;
        op(store)
            .await
            .map_err(|e| (Exit::for_kind(e.kind()), anyhow::Error::new(e)))
    });
    runtime.shutdown_background();
    result
}

/// Prints `report` as pretty JSON, or as the text `to_text` makes of it.
fn print_report<R: serde::Serialize>(
    report: &R,
    json: bool,
    to_text: impl FnOnce(&R) -> String,
) -> Result<(), Failure> {
    if json {
        let text = serde_json::to_string_pretty(report)
            .context("format JSON")
            .map_err(|e| (Exit::Bug, e))?;
        println!("{text}");
    } else {
        print!("{}", to_text(report));
    }
    Ok(())
}

fn info(repo: &RepoArgs, args: &InfoArgs) -> Result<(), Failure> {
    let report = with_store(repo, |store| async move {
        walferry_engine::info::info(&store, &CancellationToken::new()).await
    })?;
    print_report(&report, args.json, |r| r.to_text())
}

/// Runs `verify`, prints the report (problems, notes and the summary line) on stdout, and
/// returns exit 0 when the repository is clean, 6 (corrupt) when anything is wrong.
/// Failures that stop verification keep their own codes (storage 5, no descriptor 6, ...).
fn verify(repo: &RepoArgs, args: &VerifyArgs) -> Result<Exit, Failure> {
    let options = walferry_engine::verify::VerifyOptions { jobs: args.jobs };
    let report = with_store(repo, |store| async move {
        walferry_engine::verify::verify(&store, &options, &CancellationToken::new()).await
    })?;
    print_report(&report, args.json, |r| r.to_text())?;
    if report.is_clean() {
        Ok(Exit::Success)
    } else {
        tracing::error!("{}", report.summary());
        Ok(Exit::Corrupt)
    }
}

/// Reports an argument error on one line. PostgreSQL may be the caller, and an exit code from
/// 1 to 125 would read to it as "file not found" and could end recovery early, so any argument
/// error exits above 125 (202).
fn argument_error(e: clap::Error) -> ExitCode {
    if !e.use_stderr() {
        // --help or --version.
        let _ = e.print();
        return walferry::exit_code(Exit::Success.code());
    }
    let first = walferry::clap_error_line(&e);
    eprintln!(
        "{PROGRAM}: ERROR: {first}; HINT: use restore_command = 'walferry-restore fetch %f %p' (see walferry-restore --help)"
    );
    walferry::exit_code(Exit::Usage.fetch_hard_code())
}

/// Runs `fetch` and applies PostgreSQL's rules to the outcome: a hard failure aborts recovery
/// (exit above 125). In standby mode a hard failure for a WAL segment is logged and answered
/// as "not found", so that the standby can fall back to streaming replication; a history file
/// is never answered that way, because at promotion PostgreSQL picks the new timeline ID by
/// asking for history files, and a wrong "not found" could make two nodes pick the same one.
///
/// The spool of a running prefetch pipeline is tried first, before any configuration is read
/// or any runtime started: a file found there is a rename.
fn fetch_main(global: &GlobalArgs, args: FetchArgs) -> ExitCode {
    let pgdata = args.pgdata.clone().unwrap_or_else(|| PathBuf::from("."));
    tracing::debug!(file = %args.name, "asked for");
    let name = WalFileName::parse(&args.name).ok();
    let mut pipeline_running = true;
    if let Some(name) = &name {
        match from_spool(&pgdata, name, &args) {
            Taken::Served => return walferry::exit_code(Exit::Success.code()),
            // The verified file is in pg_wal under its own name: PostgreSQL reads it there
            // when the archive answers "not found".
            Taken::InPgWal => return walferry::exit_code(Exit::NotFound.code()),
            Taken::NoPipeline => pipeline_running = false,
            Taken::Pending | Taken::Miss => {}
        }
    }
    // The first fetch of a recovery starts the pipeline before fetching its own file, so that
    // the pipeline's start overlaps it. Later ones (a pipeline stopped, or a standby asking
    // past the end of the archive) start one only once their own file was found, so that
    // polling the end of the archive does not start a pipeline at every request.
    let mut started = false;
    if let Some(WalFileName::Segment(segment)) = name
        && !pipeline_running
        && args.prefetch
        && !SpoolReader::new(&pgdata.join("pg_wal")).ever_started()
    {
        started = start_prefetch(global, &pgdata, segment);
    }
    let standby = pgdata.join("standby.signal").exists();
    match fetch(&global.repo, &args, &pgdata) {
        Ok(FetchOutcome::Restored { .. }) => {
            if let Some(WalFileName::Segment(segment)) = name
                && !pipeline_running
                && !started
                && args.prefetch
            {
                start_prefetch(global, &pgdata, segment);
            }
            walferry::exit_code(Exit::Success.code())
        }
        Ok(FetchOutcome::NotFound) => walferry::exit_code(Exit::NotFound.code()),
        Err((exit, err)) => {
            walferry::report(PROGRAM, &err);
            let history = args.name.ends_with(".history");
            if standby && !history {
                tracing::warn!(
                    "answering 'not found' for '{}' because standby.signal is present, so the standby can fall back to streaming",
                    args.name
                );
                walferry::exit_code(Exit::NotFound.code())
            } else {
                walferry::exit_code(exit.fetch_hard_code())
            }
        }
    }
}

/// Takes `name` from the prefetch spool of `pgdata` into the destination, waiting up to
/// `--prefetch-wait` for a file the pipeline is downloading. A spool that cannot be used is a
/// miss: the file is then fetched from the repository.
fn from_spool(pgdata: &Path, name: &WalFileName, args: &FetchArgs) -> Taken {
    let reader = SpoolReader::new(&pgdata.join("pg_wal"));
    let wait = Duration::try_from_secs_f64(args.prefetch_wait).unwrap_or(Duration::ZERO);
    match reader.take_waiting(name, &args.dest, wait) {
        Ok(Taken::Pending) => {
            tracing::warn!(
                "the WAL prefetch did not deliver '{name}' within {} s; fetching it from the repository",
                wait.as_secs_f64()
            );
            Taken::Pending
        }
        Ok(taken) => taken,
        Err(e) => {
            tracing::warn!(
                "could not use the WAL prefetch spool ({e}); fetching '{name}' from the repository"
            );
            Taken::Miss
        }
    }
}

/// Starts the prefetch pipeline after `segment`, which this fetch restores itself, when
/// `pgdata` is a data directory in recovery and no pipeline was started recently; returns
/// whether it did. Failing to start it costs only speed: a warning.
fn start_prefetch(global: &GlobalArgs, pgdata: &Path, segment: SegmentName) -> bool {
    let in_recovery =
        pgdata.join("recovery.signal").exists() || pgdata.join("standby.signal").exists();
    if !in_recovery || !pgdata.join("global/pg_control").exists() {
        return false;
    }
    let reader = SpoolReader::new(&pgdata.join("pg_wal"));
    match reader.claim_start(prefetch::START_INTERVAL) {
        Ok(true) => {}
        Ok(false) => return false,
        Err(e) => {
            tracing::warn!("could not start the WAL prefetch: {e}");
            return false;
        }
    }
    // The pipeline is found by its data directory: name it absolutely.
    let pgdata = std::path::absolute(pgdata).unwrap_or_else(|_| pgdata.to_owned());
    let launch = Launch {
        pgdata: &pgdata,
        start: PipelineStart::After(segment),
        timeline: None,
        last: None,
        restore_pid: None,
        log_file: None,
    };
    match prefetch::spawn(global, &launch) {
        Ok(pid) => {
            tracing::debug!(pid, "started the WAL prefetch");
            true
        }
        Err(e) => {
            tracing::warn!("could not start the WAL prefetch: {e:#}");
            false
        }
    }
}

fn fetch(
    repo: &RepoArgs,
    args: &FetchArgs,
    pgdata: &Path,
) -> Result<FetchOutcome, (Exit, anyhow::Error)> {
    let usage = |e: anyhow::Error| (Exit::Usage, e);
    let name = WalFileName::parse(&args.name)
        .map_err(|e| anyhow::anyhow!("{e}; HINT: restore_command must pass %f"))
        .map_err(usage)?;
    let config = repo.resolve(RetryConfig::RESTORE).map_err(usage)?;
    let cluster = cluster_system_identifier(pgdata).map_err(|e| (Exit::LocalIo, e))?;
    let runtime = walferry::runtime().map_err(usage)?;
    let result = runtime.block_on(async {
        let store = Store::open(&config)
            .await
            .context("open repository")
            .map_err(usage)?;
        walferry_engine::fetch(
            &store,
            &name,
            &args.dest,
            cluster,
            &CancellationToken::new(),
        )
        .await
        .map_err(|e| (Exit::for_kind(e.kind()), anyhow::Error::new(e)))
    });
    // Do not wait for a blocking task stuck on a hung filesystem: the outcome is known.
    runtime.shutdown_background();
    result
}

/// The system identifier of the cluster being recovered, from `global/pg_control` in its data
/// directory (the first 8 bytes, native-endian, in every PostgreSQL version). `None` when there
/// is no `pg_control` there (fetch run by hand outside a data directory).
fn cluster_system_identifier(pgdata: &Path) -> anyhow::Result<Option<u64>> {
    let path = pgdata.join("global/pg_control");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("read '{}'", path.display()));
        }
    };
    let first: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("'{}' is too short to be pg_control", path.display()))?;
    Ok(Some(u64::from_le_bytes(first)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_takes_name_and_destination() {
        let cli = Cli::try_parse_from([
            PROGRAM,
            "fetch",
            "000000010000000000000001",
            "pg_wal/RECOVERYXLOG",
        ])
        .unwrap();
        let Command::Fetch(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.name, "000000010000000000000001");
        assert_eq!(args.dest, PathBuf::from("pg_wal/RECOVERYXLOG"));
        assert!(Cli::try_parse_from([PROGRAM, "fetch", "x"]).is_err());
    }

    #[test]
    fn system_identifier_is_read_from_pg_control() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cluster_system_identifier(dir.path()).unwrap(), None);
        std::fs::create_dir(dir.path().join("global")).unwrap();
        let mut control = 7_441_234_567_890_123_456u64.to_le_bytes().to_vec();
        control.extend_from_slice(&[0u8; 8184]);
        std::fs::write(dir.path().join("global/pg_control"), &control).unwrap();
        assert_eq!(
            cluster_system_identifier(dir.path()).unwrap(),
            Some(7_441_234_567_890_123_456)
        );
        std::fs::write(dir.path().join("global/pg_control"), b"short").unwrap();
        assert!(cluster_system_identifier(dir.path()).is_err());
    }

    #[test]
    fn verify_takes_jobs_and_json() {
        let cli = Cli::try_parse_from([PROGRAM, "verify", "--jobs", "2", "--json"]).unwrap();
        let Command::Verify(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(args.jobs.get(), 2);
        assert!(args.json);
        assert!(Cli::try_parse_from([PROGRAM, "verify", "--jobs", "0"]).is_err());
    }

    #[test]
    fn help_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
