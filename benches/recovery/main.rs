//! Recovery speed: how long PostgreSQL takes to recover the same WAL to the same restore point
//! when each WAL segment comes from
//!
//! - (a) `pg_wal` itself, every segment placed there beforehand, in archive recovery with
//!   `restore_command = 'false'`: the local limit (PostgreSQL needs a `restore_command` for
//!   archive recovery and asks it first for every segment). Beside it, for reference, the
//!   same WAL in standby mode without any `restore_command` (PostgreSQL's replay alone), and
//!   `restore_command = 'mv spool/%f %p'` from decompressed segments on the same filesystem
//!   (the least a `restore_command` that hands over files can cost);
//! - (b) `walferry-restore fetch` from the S3 server on loopback, without and with the cloud
//!   network profile (20 ms to the first byte, 400 Mbit/s per connection);
//! - (c) pgBackRest 2.45's asynchronous `archive-get`, from a local (posix) repository and from
//!   the same S3 server behind a TLS terminator (stunnel), without and with the profile.
//!
//! One command: `cargo bench --bench recovery` (as root: it installs what it needs with
//! `benches/recovery-setup.sh` and drops the page cache before each recovery).
//!
//! # What it does
//!
//! 1. A fresh cluster (`shared_buffers = 1GB`, `max_wal_size = 1GB`, `synchronous_commit =
//!    off`, as in the peers' measurements) archives every segment through `walferry-archive
//!    push %p` into the S3 server and through `pgbackrest archive-push` into a posix and an S3
//!    repository. `pgbench -i` loads it, `walferry-archive backup` backs it up, then
//!    `pgbench -c 4 -j 2 -M prepared` runs until at least 2 GiB of WAL follow the backup's
//!    start; a restore point `bench_target`, a few more seconds of load, and the last segment
//!    is archived.
//! 2. The backup is restored once (`walferry-restore restore --prefetch false`) into a base
//!    directory every recovery starts from, so that every mode recovers from identical files.
//! 3. One warm-up recovery through walferry records its replay figures in the repository (what
//!    `estimate` reads), then `WALFERRY_BENCH_ROUNDS` rounds (default 5) recover once in every
//!    mode, interleaved: copy the base, configure recovery (same target, `hot_standby = off`),
//!    `sync`, pause `WALFERRY_BENCH_SETTLE` seconds (default 5), drop the page cache, start the
//!    server, and time until it is promoted and a write commits. The startup process's title (`recovering <segment>`) is sampled every
//!    50 ms for the progress chart. Before each walferry recovery, `walferry-restore estimate`
//!    predicts it.
//! 4. One more walferry recovery with `fetch` under GNU time gives fetch's peak memory; the
//!    pipeline's is its `VmHWM`, sampled during every walferry recovery.
//!
//! Each recovery's ratio is to the local limit of the same round; the report gives medians.
//! Output: a table on stdout and in `<out>/results.md`, `<out>/results.json`, and the chart
//! `<out>/replay.png` (by `benches/recovery-chart.py`), where `<out>` is `WALFERRY_BENCH_OUT`
//! (default `target/bench-recovery`).
//!
//! Settings: `WALFERRY_BENCH_WAL_MIB` (default 2048), `WALFERRY_BENCH_SCALE` (pgbench scale,
//! default 50), `WALFERRY_BENCH_ROUNDS` (5), `WALFERRY_BENCH_MODES` (a comma-separated subset of
//! the mode names), `WALFERRY_BENCH_VENV` (the virtualenv for the chart, default
//! `/opt/walferry/bench-venv`), `WALFERRY_KEEP_TEST_DIRS=1` keeps the work directory. Variables
//! `WALFERRY_PREFETCH_*` are passed on to the recovering servers, whose `fetch` starts the
//! pipeline with them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pgbackrest;
mod report;
mod run;
#[path = "../support.rs"]
mod support;
mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg;
use walferry_testutil::s3::S3Server;

use crate::run::{Mode, Source};
pub use crate::support::check_output;
use crate::support::{env_list, env_or, env_path};

pub const ARCHIVE: &str = env!("CARGO_BIN_EXE_walferry-archive");
pub const RESTORE: &str = env!("CARGO_BIN_EXE_walferry-restore");

/// The restore point every recovery stops at.
pub const TARGET: &str = "bench_target";

/// The bucket holding walferry's repository (under `walferry/`) and pgBackRest's (under
/// `/pgbackrest`).
pub const BUCKET: &str = "bench";

/// What the bench was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub wal_mib: u64,
    pub scale: u32,
    pub rounds: usize,
    /// The pause after the copies are synced, before the page cache is dropped.
    pub settle: std::time::Duration,
    pub modes: Option<Vec<String>>,
    pub out: PathBuf,
    pub venv: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Settings {
            wal_mib: env_or("WALFERRY_BENCH_WAL_MIB", 2048),
            scale: env_or("WALFERRY_BENCH_SCALE", 50),
            rounds: env_or("WALFERRY_BENCH_ROUNDS", 5usize).max(1),
            settle: std::time::Duration::from_secs_f64(env_or("WALFERRY_BENCH_SETTLE", 5.0)),
            modes: env_list("WALFERRY_BENCH_MODES"),
            out: env_path("WALFERRY_BENCH_OUT", || root.join("target/bench-recovery")),
            venv: env_path("WALFERRY_BENCH_VENV", || "/opt/walferry/bench-venv".into()),
        }
    }
}

/// Everything the runs share.
#[derive(Debug)]
pub struct Bench {
    pub dir: TestDir,
    pub settings: Settings,
    /// The S3 server as loopback is, and the same data behind the cloud profile.
    pub plain: S3Server,
    pub cloud: S3Server,
    /// walferry configuration files for each server.
    pub walferry_plain: PathBuf,
    pub walferry_cloud: PathBuf,
    pub pgbackrest: Option<pgbackrest::PgBackRest>,
    /// The restored base every recovery starts from.
    pub base: PathBuf,
    /// Every segment recovery needs, decompressed, for the local limit.
    pub wal_cache: PathBuf,
    /// The first and last segment recovery replays, and their count.
    pub first_segment: String,
    pub segments: u64,
    /// Bytes of WAL from the backup's start to the restore point.
    pub wal_bytes: u64,
}

fn main() {
    // `cargo bench` passes `--bench`; this program takes no arguments of its own.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if pg::bindir_or_skip("recovery bench").is_none() {
        return;
    }
    if !pg::running_as_root() {
        eprintln!(
            "recovery bench: must run as root (it installs pgBackRest and drops the page cache before each recovery); nothing measured"
        );
        std::process::exit(2);
    }
    let settings = Settings::from_env();
    std::fs::create_dir_all(&settings.out).expect("create the output directory");
    support::install_peers(&settings.venv);
    let started = Instant::now();

    let dir = TestDir::new("bench-recovery").expect("work directory");
    let s3_root = dir.join("s3");
    let (plain, cloud) = support::s3_servers(&s3_root, BUCKET);
    let walferry_plain = walferry_config(&dir, "walferry-plain.toml", &plain);
    let walferry_cloud = walferry_config(&dir, "walferry-cloud.toml", &cloud);
    let pgbackrest = pgbackrest::PgBackRest::setup(&dir, &plain, &cloud);
    if pgbackrest.is_none() {
        eprintln!("recovery bench: pgbackrest or stunnel is missing; its modes are skipped");
    }

    let mut bench = Bench {
        dir,
        settings,
        plain,
        cloud,
        walferry_plain,
        walferry_cloud,
        pgbackrest,
        base: PathBuf::new(),
        wal_cache: PathBuf::new(),
        first_segment: String::new(),
        segments: 0,
        wal_bytes: 0,
    };
    workload::prepare(&mut bench);
    eprintln!(
        "recovery bench: prepared in {:.0} s: {} segments, {:.2} GiB of WAL to replay",
        started.elapsed().as_secs_f64(),
        bench.segments,
        bench.wal_bytes as f64 / f64::from(1u32 << 30)
    );

    let modes: Vec<Mode> = Mode::all()
        .into_iter()
        .chain(Mode::diagnostic())
        .filter(|m| match &bench.settings.modes {
            Some(names) => {
                ["local-limit", "standby-floor"].contains(&m.name())
                    || names.iter().any(|n| n == m.name())
            }
            None => !Mode::diagnostic().contains(m),
        })
        .filter(|m| !matches!(m.source, Source::PgBackRest { .. }) || bench.pgbackrest.is_some())
        .collect();

    // The warm-up: one walferry recovery records replay figures in the repository.
    let warm = run::recover(&bench, &Mode::walferry(true), 0, run::Extra::None);
    eprintln!("recovery bench: warm-up recovery {:.2} s", warm.seconds);

    let mut results = Vec::new();
    for round in 1..=bench.settings.rounds {
        for mode in &modes {
            let result = run::recover(&bench, mode, round, run::Extra::None);
            eprintln!(
                "recovery bench: round {round} {:<22} {:>7.2} s{}",
                mode.name(),
                result.seconds,
                result
                    .estimate
                    .as_ref()
                    .map(|e| format!(" (estimate {:.2} s)", e.recovery_seconds))
                    .unwrap_or_default()
            );
            results.push(result);
        }
    }
    let memory = modes
        .iter()
        .any(|m| matches!(m.source, Source::Walferry { .. }))
        .then(|| run::recover(&bench, &Mode::walferry(true), 0, run::Extra::FetchMemory));

    let report = report::Report::new(&bench, &modes, results, memory, started.elapsed());
    report.write(&bench.settings);
}

/// A walferry configuration file for the repository `s3://bench/walferry` on `server`.
fn walferry_config(dir: &TestDir, name: &str, server: &S3Server) -> PathBuf {
    let path = dir.join(name);
    support::write_walferry_config(&path, &format!("s3://{BUCKET}/walferry"), server);
    path
}

/// `walferry-restore` with the repository of `config`, as the cluster user.
pub fn walferry_restore(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(RESTORE);
    cmd.arg("--config").arg(config).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("WALFERRY_") || key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    pg::as_cluster_user(cmd)
}
