//! The command-line glue shared by `walferry-archive` and `walferry-restore`: configuration
//! ([`config`]), the exit-code table ([`exit`]), logging, and the runtime.
//!
//! The binaries stay thin: parse arguments into validated configuration, run one engine
//! operation, map its outcome to an exit code.

#![deny(missing_docs)]
// Futures that nest the AWS SDK's are deeper than rustc's default query depth (128) allows
// when it computes their layout in release builds.
#![recursion_limit = "256"]

pub mod config;
pub mod estimate;
pub mod exit;
pub mod prefetch;
pub mod progress;
pub mod restore;
pub mod target;

use std::process::ExitCode;

pub use config::RepoArgs;
pub use exit::Exit;

/// Options every command of both binaries takes.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Where the repository is and how to reach it.
    #[command(flatten)]
    pub repo: RepoArgs,

    /// Log filter: error, warn, info, debug or trace
    #[arg(long, env = "WALFERRY_LOG", default_value = "info", global = true)]
    pub log: String,
}

/// Sets up logging to stderr (which PostgreSQL captures into its log): one line per event, no
/// colour, no timestamp (PostgreSQL's log has its own), prefixed with the program name so the
/// line says where it came from: `walferry-archive: WARNING: ...`. `filter` is a tracing filter
/// such as `info` or `walferry_engine=debug`.
pub fn init_logging(program: &'static str, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(LineFormat { program })
        .with_env_filter(filter)
        .try_init();
}

/// `<program>: <LEVEL>: <message> key=value ...`, with PostgreSQL's level words.
struct LineFormat {
    program: &'static str,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LineFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "LOG",
            tracing::Level::DEBUG => "DEBUG",
            tracing::Level::TRACE => "TRACE",
        };
        write!(writer, "{}: {level}: ", self.program)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Makes a panic exit with `code` after one error line, instead of Rust's default 101: for
/// `fetch`, 101 would read to PostgreSQL as "file not found" and could end recovery early.
pub fn exit_on_panic(program: &'static str, code: u8) {
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or("panic");
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "{program}: ERROR: internal error{location}: {}; HINT: this is a bug in walferry, please report it",
            message.replace('\n', " ")
        );
        std::process::exit(i32::from(code));
    }));
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
    eprintln!("{program}: ERROR: {}", one_line(err));
}

/// An error and its causes on one line. walferry's own errors already name their cause in
/// their message, so a cause whose text is already there is not repeated.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

/// A clap error as one line: its message without the `error: ` prefix, the usage, the tip and
/// the pointer to `--help`, with the lines of a multi-line message (such as the conflicting
/// options) joined.
pub fn clap_error_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let message: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| {
            !line.starts_with("Usage:")
                && !line.starts_with("tip:")
                && !line.starts_with("For more information")
        })
        .filter(|line| !line.is_empty())
        .collect();
    let line = message.join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    if line.is_empty() {
        "invalid arguments".to_owned()
    } else {
        line.to_owned()
    }
}

/// Turns an exit code number into the process's exit code.
pub fn exit_code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line() {
        let command =
            clap::Command::new("t").arg(clap::Arg::new("dest").required(true).value_name("DEST"));
        let error = command.try_get_matches_from(["t"]).unwrap_err();
        let line = clap_error_line(&error);
        assert_eq!(
            line,
            "the following required arguments were not provided: <DEST>"
        );
    }

    #[test]
    fn one_line_does_not_repeat_causes() {
        let inner = anyhow::anyhow!("connection refused");
        let err = inner
            .context("get 'k' failed: connection refused")
            .context("open repository");
        assert_eq!(
            one_line(&err),
            "open repository: get 'k' failed: connection refused"
        );
        let multi = anyhow::anyhow!("line one\nline two");
        assert_eq!(one_line(&multi), "line one line two");
    }
}
