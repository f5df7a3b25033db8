//! The bench's results: medians, ratios to the local limit of the same round, the estimates'
//! errors, memory; as a table, JSON and a chart.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::run::{Mode, RunResult};
use crate::support::{machine, median};
use crate::{Bench, Settings};

/// One mode's figures.
#[derive(Debug, Serialize)]
pub struct ModeSummary {
    pub mode: String,
    pub description: String,
    pub runs: Vec<f64>,
    pub median_seconds: f64,
    /// Each round's time over the local limit's time in the same round.
    pub ratios: Vec<f64>,
    pub median_ratio: Option<f64>,
    /// The same over the standby floor's time (PostgreSQL's replay without restore_command).
    pub floor_ratios: Vec<f64>,
    pub median_floor_ratio: Option<f64>,
    pub median_redo_seconds: Option<f64>,
    /// Original WAL bytes per second over the whole recovery (median run).
    pub wal_mb_per_second: f64,
    /// `estimate`'s prediction over the measured time, minus one, per run.
    pub estimate_errors: Vec<f64>,
    pub pipeline_peak_mib: Option<f64>,
}

/// Everything the bench measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: String,
    pub wal_bytes: u64,
    pub segments: u64,
    pub rounds: usize,
    pub modes: Vec<ModeSummary>,
    pub fetch_peak_mib: Option<f64>,
    pub fetch_calls: Option<usize>,
    pub bench_seconds: f64,
    pub runs: Vec<RunResult>,
}

impl Report {
    pub fn new(
        bench: &Bench,
        modes: &[Mode],
        runs: Vec<RunResult>,
        memory: Option<RunResult>,
        took: Duration,
    ) -> Report {
        let reference = |round: usize, mode: &str| {
            runs.iter()
                .find(|r| r.round == round && r.mode == mode)
                .map(|r| r.seconds)
        };
        let limit = |round: usize| reference(round, "local-limit");
        let floor = |round: usize| reference(round, "standby-floor");
        let summaries = modes
            .iter()
            .map(|mode| {
                let mine: Vec<&RunResult> = runs.iter().filter(|r| r.mode == mode.name()).collect();
                let times: Vec<f64> = mine.iter().map(|r| r.seconds).collect();
                let ratios: Vec<f64> = mine
                    .iter()
                    .filter_map(|r| limit(r.round).map(|l| r.seconds / l))
                    .collect();
                let floor_ratios: Vec<f64> = mine
                    .iter()
                    .filter_map(|r| floor(r.round).map(|l| r.seconds / l))
                    .collect();
                let redo: Vec<f64> = mine.iter().filter_map(|r| r.redo_seconds).collect();
                let median_seconds = median(&times).unwrap_or(0.0);
                ModeSummary {
                    mode: mode.name().to_owned(),
                    description: mode.describe().to_owned(),
                    runs: times,
                    median_seconds,
                    median_ratio: median(&ratios),
                    ratios,
                    median_floor_ratio: median(&floor_ratios),
                    floor_ratios,
                    median_redo_seconds: median(&redo),
                    wal_mb_per_second: bench.wal_bytes as f64 / 1e6 / median_seconds,
                    estimate_errors: mine
                        .iter()
                        .filter_map(|r| {
                            r.estimate
                                .as_ref()
                                .map(|e| e.recovery_seconds / r.seconds - 1.0)
                        })
                        .collect(),
                    pipeline_peak_mib: mine
                        .iter()
                        .filter_map(|r| r.pipeline_peak_kib)
                        .max()
                        .map(|k| k as f64 / 1024.0),
                }
            })
            .collect();
        let mut all = runs;
        let (fetch_peak_mib, fetch_calls) = match memory {
            Some(m) => {
                let out = (m.fetch_peak_kib.map(|k| k as f64 / 1024.0), m.fetch_calls);
                all.push(m);
                out
            }
            None => (None, None),
        };
        Report {
            date: String::from_utf8_lossy(
                &Command::new("date")
                    .args(["-u", "+%Y-%m-%d %H:%M UTC"])
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default(),
            )
            .trim()
            .to_owned(),
            machine: machine(),
            wal_bytes: bench.wal_bytes,
            segments: bench.segments,
            rounds: bench.settings.rounds,
            modes: summaries,
            fetch_peak_mib,
            fetch_calls,
            bench_seconds: took.as_secs_f64(),
            runs: all,
        }
    }

    /// The table, in Markdown.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}, {}: {:.2} GiB of WAL ({} segments) replayed to the same restore point, {} rounds; recovery = server start to a committed write after promotion, page cache dropped before each\n",
            self.date,
            self.machine,
            self.wal_bytes as f64 / f64::from(1u32 << 30),
            self.segments,
            self.rounds
        );
        let _ = writeln!(
            out,
            "| mode | recovery s: median (runs) | redo s (PostgreSQL) | WAL MB/s | ratio to the local limit, same round: median (runs) | ratio to the standby floor | estimate error (runs) | pipeline peak |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for m in &self.modes {
            let runs: Vec<String> = m.runs.iter().map(|s| format!("{s:.2}")).collect();
            let ratios: Vec<String> = m.ratios.iter().map(|r| format!("{r:.3}")).collect();
            let errors: Vec<String> = m
                .estimate_errors
                .iter()
                .map(|e| format!("{:+.0}%", e * 100.0))
                .collect();
            let _ = writeln!(
                out,
                "| {} ({}) | **{:.2}** ({}) | {} | {:.0} | **{}** ({}) | {} | {} | {} |",
                m.mode,
                m.description,
                m.median_seconds,
                runs.join(", "),
                m.median_redo_seconds
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or_default(),
                m.wal_mb_per_second,
                m.median_ratio
                    .map(|r| format!("{r:.3}"))
                    .unwrap_or_default(),
                ratios.join(", "),
                m.median_floor_ratio
                    .map(|r| format!("{r:.3}"))
                    .unwrap_or_default(),
                if errors.is_empty() {
                    String::new()
                } else {
                    errors.join(", ")
                },
                m.pipeline_peak_mib
                    .map(|p| format!("{p:.0} MiB"))
                    .unwrap_or_default(),
            );
        }
        if let Some(peak) = self.fetch_peak_mib {
            let _ = writeln!(
                out,
                "\nfetch peak memory: {peak:.1} MiB (the largest of {} fetches of one walferry recovery under GNU time)",
                self.fetch_calls.unwrap_or(0)
            );
        }
        let _ = writeln!(out, "\nbench took {:.0} s", self.bench_seconds);
        out
    }

    /// Prints the table and writes `results.md`, `results.json` and `replay.png`.
    pub fn write(&self, settings: &Settings) {
        let table = self.table();
        println!("{table}");
        std::fs::write(settings.out.join("results.md"), &table).expect("write results.md");
        let json = settings.out.join("results.json");
        std::fs::write(&json, serde_json::to_string_pretty(self).unwrap())
            .expect("write results.json");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/recovery-chart.py");
        let png = settings.out.join("replay.png");
        let status = Command::new(settings.venv.join("bin/python"))
            .arg(&script)
            .arg(&json)
            .arg(&png)
            .status();
        match status {
            Ok(s) if s.success() => eprintln!(
                "recovery bench: wrote {}, {} and {}",
                settings.out.join("results.md").display(),
                json.display(),
                png.display()
            ),
            other => eprintln!("recovery bench: the chart failed: {other:?}"),
        }
    }
}
