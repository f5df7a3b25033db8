//! The main job, end to end, on a throwaway cluster: archive a PostgreSQL cluster into a
//! local-directory repository with `walferry-archive push %p`, take a base backup with
//! `walferry-archive backup`, run a workload, then `walferry-restore restore` to a point in
//! time (recovery fetching WAL with `walferry-restore fetch %f %p`), check every row, and
//! report what happened and how long each stage took.
//!
//! Run it with `scripts/demo.sh`, which builds the binaries and passes `--bin-dir`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{self, Cluster, ClusterOptions, RecoveryOutcome};

/// Archive a throwaway cluster with walferry, recover it to a point in time, check the rows.
#[derive(Debug, Parser)]
struct Args {
    /// Directory holding walferry-archive and walferry-restore
    #[arg(long)]
    bin_dir: PathBuf,

    /// pgbench scale factor of the workload (about 15 MiB of data per unit)
    #[arg(long, default_value_t = 5)]
    scale: u32,

    /// Seconds of pgbench traffic after the base backup
    #[arg(long, default_value_t = 10)]
    seconds: u32,

    /// Keep the working directory (clusters, repository, logs) afterwards
    #[arg(long)]
    keep: bool,
}

const TIMEOUT: Duration = Duration::from_secs(600);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walferry-demo: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Stages(Vec<(&'static str, Duration)>);

impl Stages {
    fn time<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        println!("... {name}");
        let start = Instant::now();
        let out = f().with_context(|| format!("stage '{name}'"))?;
        self.0.push((name, start.elapsed()));
        Ok(out)
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let bin_dir = std::fs::canonicalize(&args.bin_dir)
        .with_context(|| format!("find --bin-dir {}", args.bin_dir.display()))?;
    for bin in ["walferry-archive", "walferry-restore"] {
        ensure!(
            bin_dir.join(bin).is_file(),
            "{} has no {bin}; build it first (cargo build --bins)",
            bin_dir.display()
        );
    }
    let mut dir = TestDir::new("demo")?;
    if args.keep {
        dir.keep();
    }
    let repo = dir.join("repo");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = vec![
        (
            "WALFERRY_REPO".to_owned(),
            format!("file://{}", repo.display()),
        ),
        ("PATH".to_owned(), path),
    ];
    let mut stages = Stages(Vec::new());
    println!("walferry demo in {}", dir.path().display());
    println!("repository: file://{}", repo.display());

    let opts = ClusterOptions {
        archive_command: Some("walferry-archive push %p".into()),
        env: env.clone(),
        ..ClusterOptions::default()
    };
    let mut primary = stages.time("initdb and start a primary archiving with walferry", || {
        let mut c = Cluster::init(&dir.join("primary"), &opts)?;
        c.start()?;
        Ok(c)
    })?;
    let start_lsn = primary.current_lsn()?;
    stages.time("load data (pgbench -i)", || {
        pgbench(&primary, &["-i", "-q", "-s", &args.scale.to_string()])
    })?;
    let backup_report = stages.time("base backup (walferry-archive backup)", || {
        walferry(
            &bin_dir.join("walferry-archive"),
            &["backup", "--conninfo", &primary.conninfo()],
            &env,
        )
    })?;
    let (expected, target_lsn) = stages.time("workload, then a restore point", || {
        pgbench(
            &primary,
            &["-c", "2", "-j", "2", "-T", &args.seconds.to_string()],
        )?;
        primary.psql(
            "CREATE TABLE demo_check (id int PRIMARY KEY, v text);
             INSERT INTO demo_check SELECT i, md5(i::text) FROM generate_series(1, 10000) i;",
        )?;
        let expected = fingerprint(&primary)?;
        let lsn = primary.create_restore_point("walferry_demo")?;
        Ok((expected, lsn))
    })?;
    let last = stages.time("writes after the target, then archive everything", || {
        primary.psql(
            "INSERT INTO demo_check SELECT i, 'after the target' FROM generate_series(10001, 20000) i;
             UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0;",
        )?;
        let last = primary.switch_wal()?;
        primary.wait_archived(&last, TIMEOUT)?;
        Ok(last)
    })?;
    let end_lsn = primary.current_lsn()?;
    primary.stop()?;

    let restored_dir = dir.join("restored");
    let restore_report = stages.time(
        "restore the backup, recovery to the restore point configured (walferry-restore restore)",
        || {
            walferry(
                &bin_dir.join("walferry-restore"),
                &[
                    "restore",
                    "--pgdata",
                    &restored_dir.display().to_string(),
                    "--target-name",
                    "walferry_demo",
                ],
                &env,
            )
        },
    )?;
    let restored = stages.time(
        "start PostgreSQL: replay through walferry-restore fetch, promote",
        || {
            let opts = ClusterOptions {
                env: env.clone(),
                ..ClusterOptions::default()
            };
            let mut c = Cluster::from_existing(&restored_dir, &opts)?;
            c.start_no_wait()?;
            match c.wait_promoted(TIMEOUT)? {
                RecoveryOutcome::Promoted => Ok(c),
                RecoveryOutcome::Failed { log_tail } => bail!("recovery failed:\n{log_tail}"),
            }
        },
    )?;
    let got = stages.time("check every row", || fingerprint(&restored))?;
    let restored_files = restored.log_contents().matches("restored log file").count();

    let (objects, stored_bytes) = repo_size(&repo)?;
    let wal_bytes = lsn_diff(&start_lsn, &end_lsn)?;
    println!();
    println!("report");
    println!("  last archived segment   {last}");
    println!(
        "  WAL written             {:.1} MiB ({start_lsn} .. {end_lsn})",
        mib(wal_bytes)
    );
    println!(
        "  repository              {objects} objects, {:.1} MiB stored",
        mib(stored_bytes)
    );
    println!("  base backup             {}", backup_report.trim());
    for line in restore_report.lines() {
        println!("  restore                 {line}");
    }
    println!("  restore point           walferry_demo at {target_lsn}");
    println!("  files fetched           {restored_files} by restore_command");
    println!("  rows before the target  {expected}");
    println!("  rows after recovery     {got}");
    println!("  stages");
    for (name, took) in &stages.0 {
        println!("    {:>7.2} s  {name}", took.as_secs_f64());
    }
    ensure!(
        got == expected,
        "the recovered rows differ from those committed before the restore point"
    );
    println!(
        "result: OK, the recovered cluster holds exactly the rows committed before the restore point"
    );
    if args.keep {
        println!("kept {}", dir.path().display());
    }
    Ok(())
}

/// Runs one of walferry's programs as the cluster user with `env`; returns its standard
/// output.
fn walferry(program: &Path, args: &[&str], env: &[(String, String)]) -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = pg::as_cluster_user(cmd)
        .output()
        .with_context(|| format!("run {}", program.display()))?;
    ensure!(
        out.status.success(),
        "{} {args:?} exited with {}: {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pgbench(cluster: &Cluster, args: &[&str]) -> anyhow::Result<()> {
    let out = cluster
        .command("pgbench")
        .args(args)
        .output()
        .context("run pgbench")?;
    ensure!(
        out.status.success(),
        "pgbench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Row count and a digest of every row in the tables the workload touches.
fn fingerprint(cluster: &Cluster) -> anyhow::Result<String> {
    cluster.psql(
        "SELECT (SELECT count(*) FROM demo_check) || ' demo rows, '
             || (SELECT count(*) FROM pgbench_history) || ' history rows, balance sum '
             || (SELECT sum(abalance) FROM pgbench_accounts) || ', digest '
             || (SELECT md5(string_agg(id || v, ',' ORDER BY id)) FROM demo_check)",
    )
}

fn repo_size(root: &Path) -> anyhow::Result<(usize, u64)> {
    let mut count = 0;
    let mut bytes = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("list {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                count += 1;
                bytes += meta.len();
            }
        }
    }
    Ok((count, bytes))
}

fn lsn_diff(from: &str, to: &str) -> anyhow::Result<u64> {
    let parse = |lsn: &str| -> anyhow::Result<u64> {
        let (hi, lo) = lsn.split_once('/').context("LSN without '/'")?;
        Ok((u64::from_str_radix(hi, 16)? << 32) | u64::from_str_radix(lo, 16)?)
    };
    Ok(parse(to)?.saturating_sub(parse(from)?))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
