//! Archiving speed: how fast a backlog of WAL drains through `archive_command`, and whether the
//! archive keeps up with the fastest WAL this machine's PostgreSQL produces.
//!
//! One command: `cargo bench --bench archive` (as root: it installs pgBackRest, stunnel and GNU
//! time with `benches/recovery-setup.sh`).
//!
//! # (a) Draining a backlog
//!
//! A fresh cluster with archiving configured but no command (`archive_command = ''`) piles up
//! `.ready` files while `pgbench -i` and `pgbench -c 4 -j 2 -M prepared` write at least
//! `WALFERRY_BENCH_WAL_MIB` (default 2048) MiB of WAL; then it stops. Each run gets a fresh
//! copy of that backlog: a directory with the cluster's `PG_VERSION` and `global/pg_control`,
//! and `pg_wal/` holding every segment (hard links) with a `.ready` each. The page cache is
//! warmed with the segments first, as WAL just written is. A simulated archiver then does what
//! PostgreSQL's does: takes the ready files in its order (history files first, then by name),
//! runs the command through `sh -c` one at a time with `%p` = `pg_wal/<name>`, marks a file
//! `.done` on exit 0, and waits a second after a failure. Drain time runs from the first call
//! to the last acknowledgement. Modes, each into a fresh repository on the in-process S3 server:
//!
//! - `walferry-s3`, `walferry-s3-cloud`: `walferry-archive push %p` (defaults: zstd level 3,
//!   4 files at once), without and with the 20 ms / 400 Mbit/s network profile;
//! - `pgbackrest-s3`, `pgbackrest-s3-cloud`: pgBackRest 2.45's `archive-push %p` with
//!   `archive-async=y`, `process-max=4` (as many uploads at once as walferry), zstd level 3,
//!   through stunnel (pgBackRest's S3 driver speaks only TLS).
//!
//! `WALFERRY_BENCH_ROUNDS` rounds (default 5) interleave the modes; each round's ratio is
//! pgBackRest's drain time over walferry's. After every run the repository is checked to hold
//! every segment. One more walferry run with every call under GNU time gives `push`'s peak
//! memory.
//!
//! # (b) Live
//!
//! A cluster archives through `walferry-archive push %p` into the S3 server with the cloud
//! profile while bulk loads (`INSERT ... SELECT` from `generate_series` in two sessions, the
//! fastest WAL this machine's PostgreSQL writes) and then `pgbench` run for
//! `WALFERRY_BENCH_LIVE_SECONDS` (default 60) in all. Once a second it samples the `.ready`
//! backlog, `pg_stat_archiver` and the WAL position. After the load it waits for the archive
//! to catch up.
//!
//! Output: a table on stdout and in `<out>/results.md`, and `<out>/results.json`, where `<out>`
//! is `WALFERRY_BENCH_OUT` (default `target/bench-archive`). `WALFERRY_BENCH_PARTS` (`drain`,
//! `live`, or both, the default) picks the parts; `WALFERRY_BENCH_MODES` a subset of the drain
//! modes; `WALFERRY_KEEP_TEST_DIRS=1` keeps the work directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod drain;
mod live;
#[allow(dead_code)]
#[path = "../recovery/pgbackrest.rs"]
mod pgbackrest;
#[path = "../support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Serialize;
use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg;
use walferry_testutil::s3::S3Server;

pub use crate::support::check_output;
use crate::support::{env_list, env_or, env_path};

pub const ARCHIVE: &str = env!("CARGO_BIN_EXE_walferry-archive");

/// The bucket every repository of the bench lives in.
pub const BUCKET: &str = "bench";

/// What the bench was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub wal_mib: u64,
    pub rounds: usize,
    pub live_seconds: u64,
    pub parts: Vec<String>,
    pub modes: Option<Vec<String>>,
    pub out: PathBuf,
    pub venv: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Settings {
            wal_mib: env_or("WALFERRY_BENCH_WAL_MIB", 2048),
            rounds: env_or("WALFERRY_BENCH_ROUNDS", 5usize).max(1),
            live_seconds: env_or("WALFERRY_BENCH_LIVE_SECONDS", 60),
            parts: env_list("WALFERRY_BENCH_PARTS")
                .unwrap_or_else(|| vec!["drain".into(), "live".into()]),
            modes: env_list("WALFERRY_BENCH_MODES"),
            out: env_path("WALFERRY_BENCH_OUT", || root.join("target/bench-archive")),
            venv: env_path("WALFERRY_BENCH_VENV", || "/opt/walferry/bench-venv".into()),
        }
    }
}

/// The S3 servers (one directory, with and without the cloud profile) and the work directory.
#[derive(Debug)]
pub struct Servers {
    pub dir: TestDir,
    pub s3_root: PathBuf,
    pub plain: S3Server,
    pub cloud: S3Server,
}

impl Servers {
    pub fn server(&self, cloud: bool) -> &S3Server {
        if cloud { &self.cloud } else { &self.plain }
    }

    /// A walferry configuration file for the repository `s3://bench/<prefix>`.
    pub fn walferry_config(&self, prefix: &str, cloud: bool) -> PathBuf {
        let server = self.server(cloud);
        let path = self.dir.join(format!("{prefix}.toml"));
        support::write_walferry_config(&path, &format!("s3://{BUCKET}/{prefix}"), server);
        path
    }

    /// Every file under `s3://bench/<prefix>/<under>`, recursively.
    pub fn objects(&self, prefix: &str, under: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(
            &self.s3_root.join(BUCKET).join(prefix).join(under),
            &mut out,
        );
        out
    }

    /// Removes the repository `s3://bench/<prefix>` (its files; the server keeps no index).
    pub fn remove(&self, prefix: &str) {
        let _ = std::fs::remove_dir_all(self.s3_root.join(BUCKET).join(prefix));
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Everything the bench measured.
#[derive(Debug, Serialize)]
struct Report {
    date: String,
    machine: String,
    drain: Option<drain::DrainReport>,
    live: Option<live::LiveReport>,
    bench_seconds: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // The simulated archiver, started by the bench as the cluster user.
    if let Some(at) = args.iter().position(|a| a == "--archiver") {
        drain::archiver_main(&args[at + 1..]);
        return;
    }
    if pg::bindir_or_skip("archive bench").is_none() {
        return;
    }
    if !pg::running_as_root() {
        eprintln!(
            "archive bench: must run as root (it installs pgBackRest and runs PostgreSQL as its own user); nothing measured"
        );
        std::process::exit(2);
    }
    let settings = Settings::from_env();
    std::fs::create_dir_all(&settings.out).expect("create the output directory");
    support::install_peers(&settings.venv);
    let started = Instant::now();

    let dir = TestDir::new("bench-archive").expect("work directory");
    let s3_root = dir.join("s3");
    let (plain, cloud) = support::s3_servers(&s3_root, BUCKET);
    let servers = Servers {
        dir,
        s3_root,
        plain,
        cloud,
    };

    let drain = settings
        .parts
        .iter()
        .any(|p| p == "drain")
        .then(|| drain::run(&servers, &settings));
    let live = settings
        .parts
        .iter()
        .any(|p| p == "live")
        .then(|| live::run(&servers, &settings));

    let report = Report {
        date: {
            let mut date = Command::new("date");
            date.args(["-u", "+%Y-%m-%d %H:%M UTC"]);
            check_output(date, "date").trim().to_owned()
        },
        machine: support::machine(),
        drain,
        live,
        bench_seconds: started.elapsed().as_secs_f64(),
    };
    let mut text = format!(
        "archive bench, {} on {}, {:.0} s in all\n\n",
        report.date, report.machine, report.bench_seconds
    );
    if let Some(d) = &report.drain {
        text.push_str(&d.table());
    }
    if let Some(l) = &report.live {
        text.push_str(&l.table());
    }
    println!("{text}");
    std::fs::write(settings.out.join("results.md"), &text).unwrap();
    std::fs::write(
        settings.out.join("results.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    eprintln!(
        "archive bench: results in {}",
        settings.out.join("results.md").display()
    );
}
