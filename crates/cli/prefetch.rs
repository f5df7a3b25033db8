//! `walferry-restore prefetch`: the WAL prefetch pipeline ([`walferry_engine::pipeline`]) as a
//! process of its own, and how `fetch` and `restore` start it in the background.
//!
//! One pipeline runs per data directory. `restore` starts one before it unpacks the base
//! backup, so that WAL streams into the spool while the backup is still being written; the
//! first `fetch` of a recovery that finds none running starts one after fetching its own
//! file. Started in the background, the pipeline leaves the caller's session (`setsid`), reads
//! nothing from stdin, writes nothing to stdout and logs to the caller's stderr, which for
//! `fetch` is PostgreSQL's log.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use walferry_engine::pipeline::{self, PipelineOptions, PipelineStart, StopReason};
use walferry_engine::spool::SpoolReader;
use walferry_store::{CancellationToken, RetryConfig, Store};
use walferry_wal::{SegmentName, TimelineId, WalFileName};

use crate::{Exit, GlobalArgs, RepoArgs};

/// The idle timeout by default: a recovery asks for its next file within seconds, except
/// while a restartpoint or a paused replay holds it, and a pipeline that stopped too early is
/// started again by the next `fetch`.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: f64 = 60.0;

/// How often `fetch` may start a pipeline for a data directory: a pipeline that could not run
/// (an unreadable repository, say) is not started again at every request.
pub const START_INTERVAL: Duration = Duration::from_secs(10);

/// Arguments of `walferry-restore prefetch`.
#[derive(Debug, clap::Args)]
pub struct PrefetchArgs {
    /// The data directory being recovered; the spool is in its pg_wal
    #[arg(long, short = 'D', value_name = "DIR")]
    pub pgdata: PathBuf,

    /// The first WAL segment to fetch
    #[arg(long, value_name = "SEGMENT", required_unless_present = "after")]
    pub from: Option<String>,

    /// Fetch from the segment after this one (a fetch took this one itself)
    #[arg(long, value_name = "SEGMENT", conflicts_with = "from")]
    pub after: Option<String>,

    /// The timeline recovery follows [default: recovery_target_timeline of the data
    /// directory, else the newest timeline whose history holds the first segment]
    #[arg(long, value_name = "TLI")]
    pub timeline: Option<u32>,

    /// The last segment to fetch [default: the end of the archive]
    #[arg(long, value_name = "SEGMENT")]
    pub last: Option<String>,

    /// Downloads in flight [default: 4 per core, from 4 to 8]
    #[arg(long, env = "WALFERRY_PREFETCH_JOBS", value_name = "N")]
    pub jobs: Option<NonZeroUsize>,

    /// Bytes of WAL held ahead of replay, in MiB [default: a quarter of the free space of
    /// pg_wal's filesystem, at most 1024]
    #[arg(long, env = "WALFERRY_PREFETCH_BUDGET", value_name = "MIB")]
    pub budget: Option<u64>,

    /// Lower the pipeline's CPU priority by this much (nice), so that PostgreSQL's replay wins
    /// a busy core; it works ahead of replay, so it can afford to wait
    #[arg(
        long,
        env = "WALFERRY_PREFETCH_NICE",
        value_name = "N",
        default_value_t = 0
    )]
    pub nice: i32,

    /// Stop after this many seconds without PostgreSQL taking a file
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_IDLE_TIMEOUT_SECONDS)]
    pub idle_timeout: f64,

    /// The restore process writing the data directory: stop if it dies before configuring
    /// recovery
    #[arg(long, value_name = "PID", hide = true)]
    pub restore_pid: Option<u32>,

    /// Leave the caller's session first (as fetch and restore start it)
    #[arg(long, hide = true)]
    pub detach: bool,

    /// Append the log to this file instead of stderr, from the moment the data directory's
    /// pg_wal exists (as restore starts it, before the data directory is written)
    #[arg(long, value_name = "FILE", hide = true)]
    pub log_file: Option<PathBuf>,
}

/// The log file of a pipeline `restore` starts: in the spool directory, kept after the
/// pipeline stops, so that a failed prefetch can be read about afterwards.
pub fn restore_log_file(pgdata: &Path) -> PathBuf {
    pgdata
        .join("pg_wal")
        .join(walferry_engine::spool::SPOOL_DIR)
        .join("prefetch.log")
}

/// Waits until the data directory's `pg_wal` exists (a restore creates it once it has checked
/// that the data directory is empty), then sends stderr to `log_file`. Returns false when the
/// restore `restore_pid` died first.
fn redirect_log(options: &PipelineOptions, log_file: &Path) -> anyhow::Result<bool> {
    let pg_wal = options.pgdata.join("pg_wal");
    while !pg_wal.is_dir() {
        if let Some(pid) = options.restore_pid
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(dir) = log_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create '{}'", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .with_context(|| format!("open the log file '{}'", log_file.display()))?;
    rustix::stdio::dup2_stderr(&file)
        .with_context(|| format!("log to '{}'", log_file.display()))?;
    Ok(true)
}

fn segment(flag: &str, text: &str) -> anyhow::Result<SegmentName> {
    match WalFileName::parse(text) {
        Ok(WalFileName::Segment(segment)) => Ok(segment),
        _ => anyhow::bail!("--{flag} '{text}' is not a WAL segment name"),
    }
}

impl PrefetchArgs {
    /// The pipeline's options, validated.
    fn options(&self) -> anyhow::Result<PipelineOptions> {
        let start = match (&self.from, &self.after) {
            (Some(from), None) => PipelineStart::From(segment("from", from)?),
            (None, Some(after)) => PipelineStart::After(segment("after", after)?),
            _ => anyhow::bail!("give one of --from and --after"),
        };
        let timeline = self
            .timeline
            .map(|t| TimelineId::new(t).with_context(|| format!("--timeline {t}")))
            .transpose()?;
        let last = self
            .last
            .as_deref()
            .map(|last| segment("last", last))
            .transpose()?;
        let idle_timeout = Duration::try_from_secs_f64(self.idle_timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| {
                format!(
                    "--idle-timeout {}: give a positive number of seconds",
                    self.idle_timeout
                )
            })?;
        let pgdata = std::path::absolute(&self.pgdata)
            .with_context(|| format!("resolve '{}'", self.pgdata.display()))?;
        Ok(PipelineOptions {
            pgdata,
            start,
            timeline,
            last,
            jobs: self.jobs.unwrap_or_else(pipeline::default_jobs),
            budget: self.budget.map(|mib| mib.saturating_mul(1 << 20)),
            idle_timeout,
            restore_pid: self.restore_pid,
        })
    }
}

/// Runs `walferry-restore prefetch` in the foreground until the pipeline stops.
pub fn run(repo: &RepoArgs, args: &PrefetchArgs) -> Result<(), (Exit, anyhow::Error)> {
    let usage = |e: anyhow::Error| (Exit::Usage, e);
    if args.detach {
        // Out of PostgreSQL's process group: a signal meant for the startup process and its
        // restore_command is not meant for the pipeline, which stops by itself.
        let _ = rustix::process::setsid();
    }
    if args.nice != 0 {
        // Best effort: without it the pipeline only competes harder with replay.
        let _ = rustix::process::nice(args.nice);
    }
    let options = args.options().map_err(usage)?;
    let config = repo.resolve(RetryConfig::RESTORE).map_err(usage)?;
    if let Some(log_file) = &args.log_file
        && !redirect_log(&options, log_file).map_err(|e| (Exit::LocalIo, e))?
    {
        return Ok(());
    }
    let runtime = crate::runtime().map_err(usage)?;
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            on_signal.cancel();
        });
        let store = Store::open(&config)
            .await
            .context("open repository")
            .map_err(usage)?;
        pipeline::run(&store, &options, &cancel)
            .await
            .map_err(|e| (Exit::for_kind(e.kind()), anyhow::Error::new(e)))
    });
    runtime.shutdown_background();
    let report = result?;
    if report.stop == StopReason::Cancelled {
        return Err((
            Exit::Cancelled,
            anyhow::anyhow!(
                "WAL prefetch for '{}' stopped by a signal",
                args.pgdata.display()
            ),
        ));
    }
    Ok(())
}

/// What a background pipeline is started with.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// The data directory.
    pub pgdata: &'a Path,
    /// Where it starts.
    pub start: PipelineStart,
    /// The timeline recovery follows, when known.
    pub timeline: Option<TimelineId>,
    /// The last segment recovery needs, when known.
    pub last: Option<SegmentName>,
    /// The restore writing the data directory, if any.
    pub restore_pid: Option<u32>,
    /// Where the pipeline logs; `None`: the caller's stderr.
    pub log_file: Option<PathBuf>,
}

/// Starts `walferry-restore prefetch` in the background, reaching the repository the way this
/// process does; returns its process id. The caller does not wait for it.
pub fn spawn(global: &GlobalArgs, launch: &Launch<'_>) -> anyhow::Result<u32> {
    let exe = std::env::current_exe().context("find the walferry-restore program")?;
    let mut command = Command::new(exe);
    command.args(global.repo.to_args()?);
    command.args(["--log", &global.log, "prefetch", "--detach", "--pgdata"]);
    command.arg(launch.pgdata);
    match launch.start {
        PipelineStart::From(segment) => command.args(["--from", &segment.to_string()]),
        PipelineStart::After(segment) => command.args(["--after", &segment.to_string()]),
    };
    if let Some(timeline) = launch.timeline {
        command.args(["--timeline", &timeline.get().to_string()]);
    }
    if let Some(last) = launch.last {
        command.args(["--last", &last.to_string()]);
    }
    if let Some(pid) = launch.restore_pid {
        command.args(["--restore-pid", &pid.to_string()]);
    }
    let stderr = match &launch.log_file {
        Some(file) => {
            command.arg("--log-file").arg(file);
            Stdio::null()
        }
        None => Stdio::inherit(),
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("start the WAL prefetch")?;
    Ok(child.id())
}

/// Whether a pipeline runs on the data directory `pgdata`.
pub fn running(pgdata: &Path) -> anyhow::Result<bool> {
    SpoolReader::new(&pgdata.join("pg_wal"))
        .pipeline_running()
        .map_err(anyhow::Error::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: PrefetchArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<PipelineOptions> {
        let mut all = vec!["prefetch"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)?.args.options()
    }

    #[test]
    fn options_are_validated() {
        let options = parse(&[
            "-D",
            "/data",
            "--from",
            "000000020000000000000003",
            "--timeline",
            "2",
            "--last",
            "00000002000000000000000A",
            "--budget",
            "64",
            "--jobs",
            "3",
        ])
        .unwrap();
        assert_eq!(options.pgdata, PathBuf::from("/data"));
        assert!(
            matches!(options.start, PipelineStart::From(s) if s.to_string() == "000000020000000000000003")
        );
        assert_eq!(options.timeline.map(TimelineId::get), Some(2));
        assert_eq!(options.budget, Some(64 << 20));
        assert_eq!(options.jobs.get(), 3);
        assert_eq!(options.idle_timeout, Duration::from_secs(60));

        let after = parse(&["-D", "/data", "--after", "000000010000000000000009"]).unwrap();
        assert!(matches!(after.start, PipelineStart::After(_)));
        assert_eq!(after.timeline, None);

        for bad in [
            &["-D", "/data"][..],
            &["-D", "/data", "--from", "00000001.history"],
            &["-D", "/data", "--from", "x"],
            &[
                "-D",
                "/data",
                "--from",
                "000000010000000000000009",
                "--after",
                "000000010000000000000009",
            ],
            &[
                "-D",
                "/data",
                "--from",
                "000000010000000000000009",
                "--timeline",
                "0",
            ],
            &[
                "-D",
                "/data",
                "--from",
                "000000010000000000000009",
                "--idle-timeout",
                "0",
            ],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
