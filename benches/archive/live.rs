//! (b) Live: the fastest WAL this machine's PostgreSQL writes, archived by walferry into the S3
//! server with the cloud profile, the backlog sampled once a second.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use walferry_testutil::pg::{Cluster, ClusterOptions};

use crate::{ARCHIVE, Servers, Settings, check_output};

/// How long the archive may take to catch up once the load stops.
const CATCH_UP: Duration = Duration::from_secs(600);

/// One second's sample.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub second: f64,
    /// `.ready` files in `pg_wal/archive_status`.
    pub ready: usize,
    pub archived_count: u64,
    pub failed_count: u64,
    /// WAL written since the previous sample, bytes per second.
    pub wal_bytes_per_second: f64,
    pub phase: &'static str,
}

/// Part (b)'s results.
#[derive(Debug, Serialize)]
pub struct LiveReport {
    pub load_seconds: f64,
    pub wal_bytes: u64,
    /// The largest `.ready` backlog of any sample, during the load and after.
    pub max_ready: usize,
    pub max_ready_bulk: usize,
    pub max_ready_pgbench: usize,
    /// WAL rate over the whole load, and the highest one-second rate, 10^6 bytes per second.
    pub mean_wal_mb_per_second: f64,
    pub peak_wal_mb_per_second: f64,
    pub archived_count: u64,
    pub failed_count: u64,
    /// From the end of the load until nothing is left to archive.
    pub catch_up_seconds: f64,
    pub samples: Vec<Sample>,
}

impl LiveReport {
    pub fn table(&self) -> String {
        format!(
            "(b) live: {:.0} s of load (bulk INSERT in two sessions, then pgbench -c 4), archive_command = walferry-archive push %p, 20 ms / 400 Mbit/s\n\n\
             | WAL written | mean WAL MB/s | peak WAL MB/s (1 s) | max .ready backlog (bulk / pgbench) | archived | failed | caught up after the load |\n\
             |---|---|---|---|---|---|---|\n\
             | {:.2} GiB | {:.0} | {:.0} | {} ({} / {}) | {} | {} | {:.1} s |\n\n",
            self.load_seconds,
            self.wal_bytes as f64 / f64::from(1u32 << 30),
            self.mean_wal_mb_per_second,
            self.peak_wal_mb_per_second,
            self.max_ready,
            self.max_ready_bulk,
            self.max_ready_pgbench,
            self.archived_count,
            self.failed_count,
            self.catch_up_seconds
        )
    }
}

fn lsn_bytes(cluster: &Cluster) -> u64 {
    cluster
        .psql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        .unwrap()
        .parse()
        .unwrap()
}

fn ready_count(cluster: &Cluster) -> usize {
    std::fs::read_dir(cluster.data_dir().join("pg_wal/archive_status"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count()
        })
        .unwrap_or(0)
}

fn archiver_counts(cluster: &Cluster) -> (u64, u64) {
    let rows = cluster
        .query_rows("SELECT archived_count, failed_count FROM pg_stat_archiver")
        .unwrap();
    let row = &rows[0];
    (row[0].parse().unwrap(), row[1].parse().unwrap())
}

/// A `psql` session running `sql` in a loop until killed.
fn bulk_session(cluster: &Cluster, table: &str) -> Child {
    let create = format!("CREATE TABLE IF NOT EXISTS {table} (id bigint, a text, b text)");
    // A separate -c: a DO block commits only outside any transaction block.
    let sql = format!(
        "DO $$ BEGIN LOOP \
           INSERT INTO {table} SELECT g, md5(g::text), repeat(md5((g * 7)::text), 4) \
             FROM generate_series(1, 200000) g; \
           COMMIT; \
           TRUNCATE {table}; \
           COMMIT; \
         END LOOP; END $$;"
    );
    let mut psql = cluster.command("psql");
    psql.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        &create,
        "-c",
        &sql,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    psql.spawn().expect("start a bulk-load session")
}

pub fn run(servers: &Servers, settings: &Settings) -> LiveReport {
    let config = servers.walferry_config("live", true);
    let opts = ClusterOptions {
        archive_command: Some(format!("{ARCHIVE} --config {} push %p", config.display())),
        extra_conf: [
            "shared_buffers = '1GB'",
            "max_wal_size = '4GB'",
            "synchronous_commit = off",
            "wal_buffers = '64MB'",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::init(&servers.dir.join("live"), &opts).expect("initdb");
    cluster.start().expect("start the live cluster");
    let mut init = cluster.command("pgbench");
    init.args(["-i", "-q", "-s", "20"]);
    check_output(init, "pgbench -i");
    let last = cluster.switch_wal().unwrap();
    cluster.wait_archived(&last, CATCH_UP).unwrap();

    let bulk_seconds = settings.live_seconds / 2;
    let pgbench_seconds = settings.live_seconds - bulk_seconds;
    let started = Instant::now();
    let first_lsn = lsn_bytes(&cluster);
    let mut samples = Vec::new();
    let mut previous = (Instant::now(), first_lsn);
    let mut sample = |cluster: &Cluster, phase: &'static str, samples: &mut Vec<Sample>| {
        let lsn = lsn_bytes(cluster);
        let now = Instant::now();
        let (archived_count, failed_count) = archiver_counts(cluster);
        let rate = (lsn - previous.1) as f64 / now.duration_since(previous.0).as_secs_f64();
        previous = (now, lsn);
        let s = Sample {
            second: started.elapsed().as_secs_f64(),
            ready: ready_count(cluster),
            archived_count,
            failed_count,
            wal_bytes_per_second: rate,
            phase,
        };
        eprintln!(
            "archive bench: live {:>5.1} s {:<8} {:>4.0} MB/s of WAL, {} ready, {} archived, {} failed",
            s.second,
            phase,
            rate / 1e6,
            s.ready,
            archived_count,
            failed_count
        );
        samples.push(s);
    };

    let mut sessions: Vec<Child> = ["bulk_a", "bulk_b"]
        .iter()
        .map(|t| bulk_session(&cluster, t))
        .collect();
    let tick = Duration::from_secs(1);
    let mut next = Instant::now() + tick;
    while started.elapsed() < Duration::from_secs(bulk_seconds) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += tick;
        sample(&cluster, "bulk", &mut samples);
    }
    // The sessions' backends loop inside one statement and never write to their client:
    // end them from the server, then reap the clients.
    cluster
        .psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'DO $$ BEGIN LOOP%'")
        .unwrap();
    for s in &mut sessions {
        let _ = s.wait();
    }
    let mut pgbench = cluster.command("pgbench");
    pgbench
        .args(["-n", "-c", "4", "-j", "2", "-M", "prepared", "-T"])
        .arg(pgbench_seconds.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut pgbench = pgbench.spawn().expect("start pgbench");
    while pgbench.try_wait().unwrap().is_none() {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += tick;
        sample(&cluster, "pgbench", &mut samples);
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let wal_bytes = lsn_bytes(&cluster) - first_lsn;
    // Let the last segment be complete, then wait for the backlog to drain.
    let last = cluster.switch_wal().unwrap();
    let load_end = Instant::now();
    loop {
        sample(&cluster, "catch-up", &mut samples);
        if ready_count(&cluster) == 0
            && cluster
                .data_dir()
                .join(format!("pg_wal/archive_status/{last}.done"))
                .exists()
        {
            break;
        }
        assert!(
            load_end.elapsed() < CATCH_UP,
            "the archive did not catch up within {CATCH_UP:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let catch_up_seconds = load_end.elapsed().as_secs_f64();
    let (archived_count, failed_count) = archiver_counts(&cluster);
    cluster.stop().unwrap();

    let max_in = |phase: &str| {
        samples
            .iter()
            .filter(|s| s.phase == phase)
            .map(|s| s.ready)
            .max()
            .unwrap_or(0)
    };
    LiveReport {
        load_seconds,
        wal_bytes,
        max_ready: samples.iter().map(|s| s.ready).max().unwrap_or(0),
        max_ready_bulk: max_in("bulk"),
        max_ready_pgbench: max_in("pgbench"),
        mean_wal_mb_per_second: wal_bytes as f64 / 1e6 / load_seconds,
        peak_wal_mb_per_second: samples
            .iter()
            .filter(|s| s.phase != "catch-up")
            .map(|s| s.wal_bytes_per_second / 1e6)
            .fold(0.0, f64::max),
        archived_count,
        failed_count,
        catch_up_seconds,
        samples,
    }
}
