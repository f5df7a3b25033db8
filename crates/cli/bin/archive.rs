//! `walferry-archive`: everything that writes to the repository.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use walferry::{Exit, GlobalArgs};
use walferry_engine::{PushOptions, PushOutcome};
use walferry_store::{CancellationToken, RetryConfig, Store};

const PROGRAM: &str = "walferry-archive";

/// Archive PostgreSQL WAL into a walferry repository.
///
/// Use as archive_command = 'walferry-archive push %p' with the repository in WALFERRY_REPO or
/// the configuration file. Exit codes: 0 archived, 2 usage, 3 conflicting content already
/// archived, 4 another cluster, 5 storage failure, 6 corrupt archive, 7 local I/O, 8 not a WAL
/// file.
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
    let config = cli
        .global
        .repo
        .resolve(RetryConfig::ARCHIVE)
        .map_err(usage)?;
    let runtime = walferry::runtime().map_err(usage)?;
    let result = match cli.command {
        Command::Push(args) => runtime.block_on(async {
            let store = Store::open(&config)
                .await
                .context("open repository")
                .map_err(usage)?;
            let options = PushOptions {
                compression_level: args.compress_level,
            };
            let cancel = CancellationToken::new();
            match walferry_engine::push(&store, &args.path, &options, &cancel).await {
                Ok(PushOutcome::Stored {
                    name,
                    original_bytes,
                    stored_bytes,
                }) => {
                    tracing::debug!(file = %name, original_bytes, stored_bytes, "archived");
                    Ok(Exit::Success)
                }
                Ok(PushOutcome::AlreadyArchived { .. }) => Ok(Exit::Success),
                Err(e) => Err((Exit::for_kind(e.kind()), anyhow::Error::new(e))),
            }
        }),
    };
    // Do not wait for a blocking task stuck on a hung filesystem: the outcome is known.
    runtime.shutdown_background();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_takes_one_path_and_a_level() {
        let cli =
            Cli::try_parse_from([PROGRAM, "push", "pg_wal/000000010000000000000001"]).unwrap();
        let Command::Push(args) = cli.command;
        assert_eq!(args.path, PathBuf::from("pg_wal/000000010000000000000001"));
        assert_eq!(
            args.compress_level,
            walferry_engine::DEFAULT_COMPRESSION_LEVEL
        );
        assert!(Cli::try_parse_from([PROGRAM, "push", "x", "--compress-level", "0"]).is_err());
        assert!(Cli::try_parse_from([PROGRAM, "push"]).is_err());
    }

    #[test]
    fn help_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
