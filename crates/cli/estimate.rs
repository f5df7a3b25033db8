//! `walferry-restore estimate`: how long a restore would take, and why.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use walferry_engine::estimate::{self as engine, Estimate, EstimateOptions, ReplaySource};
use walferry_store::{CancellationToken, RetryConfig, Store};

use crate::progress::{human_bytes, human_duration};
use crate::target::TargetArgs;
use crate::{Exit, RepoArgs};

/// Arguments of `walferry-restore estimate`.
#[derive(Debug, clap::Args)]
pub struct EstimateArgs {
    /// Where to stop, and from which backup.
    #[command(flatten, next_help_heading = "Recovery target")]
    pub target: TargetArgs,

    /// Downloads in flight while measuring the repository's throughput: the concurrency the
    /// restore will fetch at
    #[arg(long, env = "WALFERRY_JOBS", default_value_t = engine::DEFAULT_JOBS)]
    pub jobs: std::num::NonZeroUsize,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Runs `walferry-restore estimate`: plans the restore, probes the repository and prints the
/// estimate. A target no backup reaches fails as `restore` does.
pub fn run(repo: &RepoArgs, args: &EstimateArgs) -> Result<(), (Exit, anyhow::Error)> {
    let usage = |e: anyhow::Error| (Exit::Usage, e);
    let config = repo.resolve(RetryConfig::RESTORE).map_err(usage)?;
    let options = EstimateOptions {
        jobs: args.jobs,
        ..EstimateOptions::default()
    };
    let request = args.target.request();
    // Several threads, so that the probe's downloads run as a restore's would.
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
        engine::estimate(&store, &request, &options, &cancel)
            .await
            .map_err(|e| (Exit::for_kind(e.kind()), anyhow::Error::new(e)))
    });
    runtime.shutdown_background();
    let estimate = result?;
    if args.json {
        let text = serde_json::to_string_pretty(&estimate)
            .context("format JSON")
            .map_err(|e| (Exit::Bug, e))?;
        println!("{text}");
    } else {
        print!("{}", to_text(&estimate));
    }
    Ok(())
}

/// A rate in bytes per second, as `12.5 MiB/s`.
fn human_rate(bytes_per_second: f64) -> String {
    // Saturating float-to-int conversion; rates are far below u64::MAX.
    format!("{}/s", human_bytes(bytes_per_second.max(0.0) as u64))
}

/// Seconds, as `human_duration` writes them.
fn human_seconds(seconds: f64) -> String {
    human_duration(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX))
}

/// The text form of `estimate`.
pub fn to_text(e: &Estimate) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", e.restore_plan.explain());
    let _ = writeln!(
        out,
        "to fetch: backup '{}' {} stored ({} original); WAL {} segments, {} stored ({} original)",
        e.backup.label,
        human_bytes(e.backup.compressed_bytes),
        human_bytes(e.backup.original_bytes),
        e.wal.segments,
        human_bytes(e.wal.compressed_bytes),
        human_bytes(e.wal.original_bytes),
    );
    match e.probe.bytes_per_second {
        Some(rate) => {
            let _ = write!(
                out,
                "probe: {} objects, {} in {} with {} downloads at once: {}",
                e.probe.objects,
                human_bytes(e.probe.bytes),
                human_seconds(e.probe.seconds),
                e.probe.jobs,
                human_rate(rate)
            );
            if let Some(ms) = e.probe.first_byte_ms {
                let _ = write!(out, "; first byte after {ms:.1} ms");
            }
            out.push('\n');
        }
        None => out.push_str("probe: nothing to download\n"),
    }
    if let Some(rate) = e.decompression_bytes_per_second {
        let _ = writeln!(
            out,
            "decompression: {} per core (original bytes)",
            human_rate(rate)
        );
    }
    let source = match e.replay.source {
        ReplaySource::Recorded => format!(
            "recorded by earlier restores: {} record{}",
            e.replay.records,
            if e.replay.records == 1 { "" } else { "s" }
        ),
        ReplaySource::Default => "default: no restore has recorded one in this repository".into(),
    };
    let _ = writeln!(
        out,
        "replay: {} ({source})",
        human_rate(e.replay.bytes_per_second)
    );
    for stage in &e.stages {
        let why = match stage.bytes_per_second {
            Some(rate) => format!("bound by {} at {}", stage.bound.as_str(), human_rate(rate)),
            None => "PostgreSQL start-up and end-of-recovery checkpoint (fixed allowance)".into(),
        };
        let _ = writeln!(
            out,
            "  {:<8} {:>12}  {why}",
            stage.name,
            human_seconds(stage.seconds)
        );
    }
    let [low, high] = e.range_seconds;
    let _ = writeln!(
        out,
        "total: about {} (from {} to {})",
        human_seconds(e.total_seconds),
        human_seconds(low),
        human_seconds(high)
    );
    let _ = writeln!(
        out,
        "assumed: disk writes at {}, {} cores",
        human_rate(e.assumptions.disk_write_bytes_per_second),
        e.assumptions.cores
    );
    for note in &e.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: EstimateArgs,
    }

    #[test]
    fn jobs_defaults_to_the_pipeline_concurrency() {
        // The default, unless the environment running the tests sets WALFERRY_JOBS.
        let cli = Cli::try_parse_from(["estimate"]).unwrap();
        if std::env::var_os("WALFERRY_JOBS").is_none() {
            assert_eq!(cli.args.jobs, engine::DEFAULT_JOBS);
        }
        assert!(!cli.args.json);
        let cli = Cli::try_parse_from(["estimate", "--jobs", "3", "--json"]).unwrap();
        assert_eq!(cli.args.jobs.get(), 3);
        assert!(cli.args.json);
        assert!(Cli::try_parse_from(["estimate", "--jobs", "0"]).is_err());
    }

    #[test]
    fn takes_the_restore_targets() {
        let cli = Cli::try_parse_from(["estimate", "--target-name", "before"]).unwrap();
        assert_eq!(
            cli.args.target.request().target,
            walferry_manifest::RecoveryTarget::Name("before".into())
        );
        assert!(
            Cli::try_parse_from(["estimate", "--target-name", "a", "--target-immediate"]).is_err()
        );
    }

    #[test]
    fn rates_and_seconds_read_like_restore_output() {
        assert_eq!(human_rate(1024.0 * 1024.0 * 2.5), "2.5 MiB/s");
        assert_eq!(human_rate(f64::NAN), "0 B/s");
        assert_eq!(human_seconds(4.3), "4.3 s");
        assert_eq!(human_seconds(125.0), "2 min 05 s");
        assert_eq!(human_seconds(-1.0), "0.0 s");
    }
}
