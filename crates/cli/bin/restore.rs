//! `walferry-restore`: everything that reads from the repository.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use walferry::{Exit, GlobalArgs, RepoArgs};
use walferry_engine::FetchOutcome;
use walferry_store::{CancellationToken, RetryConfig, Store};
use walferry_wal::WalFileName;

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
}

#[derive(Debug, clap::Args)]
struct FetchArgs {
    /// The WAL file name PostgreSQL asks for: its %f
    #[arg(value_name = "WAL_FILE")]
    name: String,

    /// Where to put it: PostgreSQL's %p
    #[arg(value_name = "DEST_PATH")]
    dest: PathBuf,

    /// The data directory, where standby.signal is looked for [default: the current directory,
    /// which is the data directory when PostgreSQL runs restore_command]
    #[arg(long, env = "WALFERRY_PGDATA", value_name = "DIR")]
    pgdata: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(e),
    };
    walferry::init_logging(PROGRAM, &cli.global.log);
    match cli.command {
        Command::Fetch(args) => fetch_main(&cli.global.repo, args),
    }
}

/// Reports an argument error. For `fetch`, a malformed restore_command must not look like
/// "not found" (exit 1..125), which would let PostgreSQL end recovery early: it exits above 125.
fn argument_error(e: clap::Error) -> ExitCode {
    let _ = e.print();
    if !e.use_stderr() {
        // --help or --version.
        return walferry::exit_code(Exit::Success.code());
    }
    let is_fetch = std::env::args().nth(1).is_some_and(|a| a == "fetch");
    if is_fetch && !is_standby(None) {
        walferry::exit_code(Exit::Usage.fetch_hard_code())
    } else if is_fetch {
        walferry::exit_code(Exit::NotFound.code())
    } else {
        walferry::exit_code(Exit::Usage.code())
    }
}

/// Runs `fetch` and applies PostgreSQL's rules to the outcome: a hard failure aborts recovery
/// (exit above 125), except in standby mode, where it is logged and answered as "not found"
/// so that the standby can fall back to streaming replication.
fn fetch_main(repo: &RepoArgs, args: FetchArgs) -> ExitCode {
    let standby = is_standby(args.pgdata.as_deref());
    match fetch(repo, &args) {
        Ok(FetchOutcome::Restored { .. }) => walferry::exit_code(Exit::Success.code()),
        Ok(FetchOutcome::NotFound) => walferry::exit_code(Exit::NotFound.code()),
        Err((exit, err)) => {
            walferry::report(PROGRAM, &err);
            if standby {
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

fn fetch(repo: &RepoArgs, args: &FetchArgs) -> Result<FetchOutcome, (Exit, anyhow::Error)> {
    let usage = |e: anyhow::Error| (Exit::Usage, e);
    let name = WalFileName::parse(&args.name)
        .map_err(|e| anyhow::anyhow!("{e}; HINT: restore_command must pass %f"))
        .map_err(usage)?;
    let config = repo.resolve(RetryConfig::RESTORE).map_err(usage)?;
    let runtime = walferry::runtime().map_err(usage)?;
    runtime.block_on(async {
        let store = Store::open(&config)
            .await
            .context("open repository")
            .map_err(usage)?;
        walferry_engine::fetch(&store, &name, &args.dest, &CancellationToken::new())
            .await
            .map_err(|e| (Exit::for_kind(e.kind()), anyhow::Error::new(e)))
    })
}

fn is_standby(pgdata: Option<&Path>) -> bool {
    pgdata
        .unwrap_or_else(|| Path::new("."))
        .join("standby.signal")
        .exists()
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
        let Command::Fetch(args) = cli.command;
        assert_eq!(args.name, "000000010000000000000001");
        assert_eq!(args.dest, PathBuf::from("pg_wal/RECOVERYXLOG"));
        assert!(Cli::try_parse_from([PROGRAM, "fetch", "x"]).is_err());
    }

    #[test]
    fn standby_is_detected_from_the_signal_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_standby(Some(dir.path())));
        std::fs::write(dir.path().join("standby.signal"), b"").unwrap();
        assert!(is_standby(Some(dir.path())));
    }

    #[test]
    fn help_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
