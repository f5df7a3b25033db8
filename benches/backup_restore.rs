//! Backup and restore throughput of whole processes against a local-directory repository:
//! one `walferry-archive backup` (BASE_BACKUP over the replication protocol, zstd parts written
//! durably, waiting for the backup's WAL to be archived, manifest last) and one
//! `walferry-restore restore` without `--start` (download, decode, write, fsync and read back
//! every file, then the recovery configuration), from start to exit.
//!
//! Setup, outside the measurement: a PostgreSQL cluster archiving through
//! `walferry-archive push %p` into `file://<dir>/repo`, loaded with `pgbench -i -s <scale>`
//! (`WALFERRY_BENCH_SCALE`, default 60, about 920 MiB: one backup or restore takes 2-3 s on
//! 2 vCPU). Throughput is in bytes of the database as PostgreSQL sent it (the backup's
//! original size). Needs PostgreSQL (`initdb`, `pgbench`);
//! when it is missing the bench prints why and measures nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use walferry_manifest::BackupManifest;
use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{self, Cluster, ClusterOptions};

const ARCHIVE: &str = env!("CARGO_BIN_EXE_walferry-archive");
const RESTORE: &str = env!("CARGO_BIN_EXE_walferry-restore");

/// pgbench scale factor; each unit is about 15 MiB of database.
const SCALE_ENV: &str = "WALFERRY_BENCH_SCALE";
const DEFAULT_SCALE: u32 = 60;

/// Runs one of walferry's binaries as the cluster user against `repo`; returns its stdout.
fn walferry(program: &str, args: &[&str], repo: &str) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("WALFERRY_REPO", repo)
        .env("WALFERRY_CONFIG", "/dev/null");
    let out = pg::as_cluster_user(cmd).output().expect("spawn");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(original, stored)` bytes of a committed backup, from its `manifest.json`.
fn backup_sizes(repo_root: &Path, label: &str) -> (u64, u64) {
    let path = repo_root.join(format!("backups/{label}/manifest.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let manifest = BackupManifest::from_json(&bytes).expect("the manifest parses");
    (
        manifest.totals.original_bytes,
        manifest.totals.compressed_bytes,
    )
}

fn backup_restore(c: &mut Criterion) {
    if pg::bindir_or_skip("backup_restore bench").is_none() {
        return;
    }
    let scale: u32 = std::env::var(SCALE_ENV)
        .ok()
        .map(|s| s.parse().expect("WALFERRY_BENCH_SCALE: a number"))
        .unwrap_or(DEFAULT_SCALE);

    let dir = TestDir::new("bench-backup").expect("test dir");
    let repo_root = dir.join("repo");
    let repo = format!("file://{}", repo_root.display());
    let bin_dir = Path::new(ARCHIVE).parent().expect("binary directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let opts = ClusterOptions {
        archive_command: Some("walferry-archive push %p".into()),
        env: vec![
            ("WALFERRY_REPO".into(), repo.clone()),
            ("WALFERRY_CONFIG".into(), "/dev/null".into()),
            ("PATH".into(), path),
        ],
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::init(&dir.join("primary"), &opts).expect("initdb");
    cluster.start().expect("start the cluster");
    let started = Instant::now();
    let out = cluster
        .command("pgbench")
        .args(["-i", "-q", "-s", &scale.to_string()])
        .output()
        .expect("run pgbench");
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "pgbench -i -s {scale}: {:.1}s; database size {}",
        started.elapsed().as_secs_f64(),
        cluster
            .psql("SELECT pg_size_pretty(pg_database_size('postgres'))")
            .expect("database size")
    );

    // The first backup gives the throughput basis and is the one every restore restores.
    let conninfo = cluster.conninfo();
    let started = Instant::now();
    walferry(
        ARCHIVE,
        &["backup", "--conninfo", &conninfo, "--label", "b0"],
        &repo,
    );
    let (original, stored) = backup_sizes(&repo_root, "b0");
    eprintln!(
        "first backup: {:.1}s; {original} bytes original, {stored} bytes stored ({:.3} of \
         original, {:.1}x)",
        started.elapsed().as_secs_f64(),
        stored as f64 / original as f64,
        original as f64 / stored as f64
    );

    let mut group = c.benchmark_group("backup_restore");
    group.throughput(Throughput::Bytes(original));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(1));

    let mut label = 0u64;
    group.bench_function("backup", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                label += 1;
                let name = format!("b{label}");
                let started = Instant::now();
                walferry(
                    ARCHIVE,
                    &["backup", "--conninfo", &conninfo, "--label", &name],
                    &repo,
                );
                total += started.elapsed();
            }
            total
        })
    });

    let mut n = 0u64;
    group.bench_function("restore", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let pgdata = dir.join(format!("restored-{n}"));
                let pgdata_str = pgdata.to_str().expect("utf-8 path");
                let started = Instant::now();
                walferry(
                    RESTORE,
                    &["restore", "--pgdata", pgdata_str, "--backup", "b0"],
                    &repo,
                );
                total += started.elapsed();
                std::fs::remove_dir_all(&pgdata).expect("remove the restored directory");
            }
            total
        })
    });
    group.finish();

    cluster.stop().expect("stop the cluster");
}

criterion_group!(benches, backup_restore);
criterion_main!(benches);
