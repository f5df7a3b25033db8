//! The command-line glue shared by `walferry-archive` and `walferry-restore`: configuration
//! ([`config`]), the exit-code table ([`exit`]), logging, and the runtime.
//!
//! The binaries stay thin: parse arguments into validated configuration, run one engine
//! operation, map its outcome to an exit code.

#![deny(missing_docs)]

pub mod config;
pub mod exit;

use std::process::ExitCode;

pub use config::RepoArgs;
pub use exit::Exit;

/// Sets up logging to stderr (which PostgreSQL captures into its log): one line per event, no
/// colour, no timestamp (PostgreSQL's log has its own). `filter` is a tracing filter such as
/// `info` or `walferry_engine=debug`.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .with_env_filter(filter)
        .try_init();
}

/// A single-threaded runtime: `push` and `fetch` do one thing and start fast; blocking work
/// (compression, file I/O) still runs on tokio's blocking threads.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Prints an error once, as one line, prefixed with the program name.
pub fn report(program: &str, err: &anyhow::Error) {
    eprintln!("{program}: error: {err:#}");
}

/// Turns an exit code number into the process's exit code.
pub fn exit_code(code: u8) -> ExitCode {
    ExitCode::from(code)
}
