//! One timed recovery: copy the base, configure where WAL comes from, drop the page cache,
//! start PostgreSQL and time it until it is promoted and a write commits.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;
use walferry_testutil::pg::{self, Cluster, ClusterOptions};

use crate::pgbackrest::Repo;
use crate::workload::{server_conf, server_path};
use crate::{Bench, RESTORE, TARGET, check_output, walferry_restore};

/// The longest a recovery may take before the bench gives up.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(900);

/// How often the startup process's title is sampled for the progress chart.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// How often the server log is read for the end of recovery.
const POLL: Duration = Duration::from_millis(5);

/// Where recovery gets its WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Every segment already in `pg_wal`, in archive recovery (`recovery.signal`) with
    /// `restore_command = 'false'`: the local limit. PostgreSQL refuses archive recovery
    /// without a `restore_command` and asks it for every segment before it reads `pg_wal`;
    /// an archive that answers "not found" at once is the least any archive can cost.
    Local,
    /// Every segment already in `pg_wal`, in standby mode without any `restore_command`:
    /// PostgreSQL's replay alone, the floor no `restore_command` reaches.
    Standby,
    /// `restore_command = 'mv <spool>/%f %p'` from decompressed segments placed beside the
    /// data directory: the least any `restore_command` that renames can cost.
    Rename,
    /// Every segment already in `pg_wal`, in archive recovery with a `restore_command` that
    /// starts `walferry-restore --version` and answers "not found": the local limit plus one
    /// start of walferry's binary per segment (not run by default).
    ProcessFalse,
    /// `walferry-restore fetch` from the S3 server.
    Walferry { cloud: bool },
    /// pgBackRest's asynchronous `archive-get`.
    PgBackRest { repo: Repo },
}

/// A way of recovering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub source: Source,
}

impl Mode {
    /// The modes run by default.
    pub fn all() -> Vec<Mode> {
        [
            Source::Local,
            Source::Standby,
            Source::Rename,
            Source::Walferry { cloud: false },
            Source::Walferry { cloud: true },
            Source::PgBackRest { repo: Repo::Posix },
            Source::PgBackRest {
                repo: Repo::S3 { cloud: false },
            },
            Source::PgBackRest {
                repo: Repo::S3 { cloud: true },
            },
        ]
        .map(|source| Mode { source })
        .to_vec()
    }

    /// Modes run only when named in `WALFERRY_BENCH_MODES`.
    pub fn diagnostic() -> Vec<Mode> {
        vec![Mode {
            source: Source::ProcessFalse,
        }]
    }

    pub fn walferry(cloud: bool) -> Mode {
        Mode {
            source: Source::Walferry { cloud },
        }
    }

    pub fn name(&self) -> &'static str {
        match self.source {
            Source::Local => "local-limit",
            Source::Standby => "standby-floor",
            Source::Rename => "rename",
            Source::ProcessFalse => "process-false",
            Source::Walferry { cloud: false } => "walferry-s3",
            Source::Walferry { cloud: true } => "walferry-s3-cloud",
            Source::PgBackRest { repo: Repo::Posix } => "pgbackrest-posix",
            Source::PgBackRest {
                repo: Repo::S3 { cloud: false },
            } => "pgbackrest-s3",
            Source::PgBackRest {
                repo: Repo::S3 { cloud: true },
            } => "pgbackrest-s3-cloud",
        }
    }

    pub fn describe(&self) -> &'static str {
        match self.source {
            Source::Local => {
                "the local limit: every segment pre-placed in pg_wal, restore_command = 'false'"
            }
            Source::Standby => "pre-placed in pg_wal, standby mode, no restore_command",
            Source::Rename => "restore_command = 'mv spool/%f %p', decompressed, same filesystem",
            Source::ProcessFalse => {
                "pre-placed in pg_wal, restore_command starting walferry-restore, then 'false'"
            }
            Source::Walferry { cloud: false } => "walferry fetch, S3 server on loopback",
            Source::Walferry { cloud: true } => {
                "walferry fetch, S3 server with 20 ms / 400 Mbit per connection"
            }
            Source::PgBackRest { repo: Repo::Posix } => {
                "pgBackRest 2.45 async archive-get, posix repository"
            }
            Source::PgBackRest {
                repo: Repo::S3 { cloud: false },
            } => "pgBackRest 2.45 async archive-get, S3 server via TLS",
            Source::PgBackRest {
                repo: Repo::S3 { cloud: true },
            } => "pgBackRest 2.45 async archive-get, S3 via TLS, 20 ms / 400 Mbit",
        }
    }
}

/// What else a recovery measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    None,
    /// Every `fetch` under GNU time, for its peak memory (not timed: the wrapper costs time).
    FetchMemory,
}

/// What `walferry-restore estimate` predicted before a recovery.
#[derive(Debug, Clone, Serialize)]
pub struct EstimateResult {
    /// The recovery part: its `wal` and `startup` stages.
    pub recovery_seconds: f64,
    pub wal_seconds: f64,
    pub startup_seconds: f64,
    pub wal_bound: String,
    pub replay_source: String,
    pub replay_bytes_per_second: f64,
    pub total_seconds: f64,
    pub range_seconds: [f64; 2],
}

/// One recovery.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub mode: String,
    pub round: usize,
    /// From starting the server to a committed write after promotion.
    pub seconds: f64,
    /// Until the log said "database system is ready to accept connections".
    pub ready_seconds: f64,
    /// PostgreSQL's own "redo done ... elapsed" figure.
    pub redo_seconds: Option<f64>,
    /// (seconds since the start, segments replayed): from the startup process's title.
    pub progress: Vec<(f64, u64)>,
    /// The WAL prefetch process's peak resident memory (`VmHWM`), KiB.
    pub pipeline_peak_kib: Option<u64>,
    /// The largest peak resident memory of any `fetch` (FetchMemory runs), KiB, and the number
    /// of fetches.
    pub fetch_peak_kib: Option<u64>,
    pub fetch_calls: Option<usize>,
    pub estimate: Option<EstimateResult>,
    /// The one-minute load average just before the start.
    pub load_before: f64,
}

fn shell_quote_conf(value: &str) -> String {
    value.replace('\'', "''")
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what}: {status}");
}

/// Recovers once in `mode`; see the module docs.
pub fn recover(bench: &Bench, mode: &Mode, round: usize, extra: Extra) -> RunResult {
    let run_dir = bench.dir.join("run");
    let pgdata = run_dir.join("pgdata");
    kill_prefetch(&pgdata);
    if let Some(pgbr) = &bench.pgbackrest {
        pgbr.reset();
    }
    let _ = fs::remove_dir_all(&run_dir);
    fs::create_dir_all(&run_dir).unwrap();
    pg::chown_to_cluster_user(&run_dir).unwrap();

    let estimate = match mode.source {
        Source::Walferry { cloud } => Some(estimate(bench, cloud)),
        _ => None,
    };

    run(
        Command::new("cp").arg("-a").arg(&bench.base).arg(&pgdata),
        "copy the base",
    );
    let memory_log = run_dir.join("fetch-memory.txt");
    let restore_command = match mode.source {
        Source::Local => {
            copy_wal(&bench.wal_cache, &pgdata.join("pg_wal"));
            "false".to_owned()
        }
        Source::Standby => {
            copy_wal(&bench.wal_cache, &pgdata.join("pg_wal"));
            fs::remove_file(pgdata.join("recovery.signal")).unwrap();
            fs::write(pgdata.join("standby.signal"), "").unwrap();
            pg::chown_to_cluster_user(&pgdata.join("standby.signal")).unwrap();
            String::new()
        }
        Source::ProcessFalse => {
            copy_wal(&bench.wal_cache, &pgdata.join("pg_wal"));
            format!("{RESTORE} --version > /dev/null; false")
        }
        Source::Rename => {
            let spool = run_dir.join("spool");
            fs::create_dir(&spool).unwrap();
            copy_wal(&bench.wal_cache, &spool);
            pg::chown_to_cluster_user(&spool).unwrap();
            format!("mv {}/%f %p", spool.display())
        }
        Source::Walferry { cloud } => {
            let config = if cloud {
                &bench.walferry_cloud
            } else {
                &bench.walferry_plain
            };
            let fetch = format!("{RESTORE} --config {} fetch %f %p", config.display());
            match extra {
                Extra::None => fetch,
                Extra::FetchMemory => {
                    format!("/usr/bin/time -a -o {} -f %M {fetch}", memory_log.display())
                }
            }
        }
        Source::PgBackRest { repo } => {
            let pgbr = bench.pgbackrest.as_ref().expect("pgBackRest is set up");
            format!(
                "pgbackrest --config={} --stanza=bench archive-get %f \"%p\"",
                pgbr.get_config(repo, &pgdata).display()
            )
        }
    };
    let auto = pgdata.join("postgresql.auto.conf");
    let mut text = fs::read_to_string(&auto).unwrap();
    text.push_str(&format!(
        "# the recovery bench\nrestore_command = '{}'\nrecovery_target_name = '{TARGET}'\nrecovery_target_action = 'promote'\n",
        shell_quote_conf(&restore_command)
    ));
    fs::write(&auto, text).unwrap();

    let mut conf = server_conf();
    conf.push("hot_standby = off".into());
    // `cargo bench` puts every build script's output directory in LD_LIBRARY_PATH; left to the
    // server, every process a restore_command starts would search them all for its libraries
    // first (measured: hundreds of failed opens per start). Empty, the loader ignores it.
    let mut env = vec![
        ("PATH".into(), server_path()),
        ("LD_LIBRARY_PATH".into(), String::new()),
    ];
    // The pipeline's settings, for experiments: passed on to the server, whose fetch starts it.
    for (key, value) in std::env::vars() {
        if key.starts_with("WALFERRY_PREFETCH") {
            env.push((key, value));
        }
    }
    let opts = ClusterOptions {
        extra_conf: conf,
        env,
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::from_existing(&pgdata, &opts).expect("adopt the copy");

    // Every mode starts from a quiet disk: what the copies wrote is on it and given time to
    // settle (a virtual disk may still be flushing its host's cache), then the page cache is
    // dropped.
    run(&mut Command::new("sync"), "sync");
    std::thread::sleep(bench.settings.settle);
    fs::write("/proc/sys/vm/drop_caches", "3\n").expect("drop the page cache (needs root)");
    let load_before = load_average();

    let started = Instant::now();
    cluster.start_no_wait().expect("start recovery");
    let mut log = LogFollower::new(cluster.log_file());
    let mut sampler = Sampler::new(&pgdata, &bench.first_segment);
    let watch_pipeline = matches!(mode.source, Source::Walferry { .. });
    let mut pipeline = PipelineWatch::default();
    let mut next_sample = Instant::now();
    let ready_seconds = loop {
        match log.poll() {
            Some(LogEvent::Ready) => break started.elapsed().as_secs_f64(),
            Some(LogEvent::Failed(line)) => panic!(
                "recovery in {} failed: {line}\n{}",
                mode.name(),
                cluster.log_tail(40)
            ),
            None => {}
        }
        assert!(
            started.elapsed() < RECOVERY_TIMEOUT,
            "recovery in {} took over {RECOVERY_TIMEOUT:?}\n{}",
            mode.name(),
            cluster.log_tail(40)
        );
        if Instant::now() >= next_sample {
            sampler.sample(started);
            if watch_pipeline {
                pipeline.sample(&pgdata);
            }
            next_sample += SAMPLE_EVERY;
        }
        std::thread::sleep(POLL);
    };
    let seconds = loop {
        match cluster
            .psql("CREATE TABLE bench_written (i int); INSERT INTO bench_written VALUES (1)")
        {
            Ok(_) => break started.elapsed().as_secs_f64(),
            Err(e) => {
                assert!(
                    started.elapsed() < RECOVERY_TIMEOUT,
                    "no write after promotion in {}: {e:#}",
                    mode.name()
                );
                std::thread::sleep(POLL);
            }
        }
    };
    sampler.finish(seconds, bench.segments);
    let redo_seconds = redo_elapsed(&fs::read_to_string(cluster.log_file()).unwrap_or_default());
    drop(cluster);
    // The pipeline records its replay figures in the repository as it stops; the next
    // estimate reads them.
    if watch_pipeline {
        pipeline.wait_gone(&pgdata);
    }
    let (fetch_peak_kib, fetch_calls) = match extra {
        Extra::FetchMemory => {
            let text = fs::read_to_string(&memory_log).unwrap_or_default();
            let peaks: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            (peaks.iter().copied().max(), Some(peaks.len()))
        }
        Extra::None => (None, None),
    };
    RunResult {
        mode: mode.name().to_owned(),
        round,
        seconds,
        ready_seconds,
        redo_seconds,
        progress: sampler.points,
        pipeline_peak_kib: pipeline.peak_kib,
        fetch_peak_kib,
        fetch_calls,
        estimate,
        load_before,
    }
}

/// Copies every segment of the WAL cache into `dir`.
fn copy_wal(cache: &Path, dir: &Path) {
    let mut cp = Command::new("cp");
    cp.arg("-a");
    for entry in fs::read_dir(cache).unwrap() {
        cp.arg(entry.unwrap().path());
    }
    cp.arg(dir);
    run(&mut cp, "copy the WAL");
}

/// `walferry-restore estimate` for the bench's target, against the plain or the cloud server.
fn estimate(bench: &Bench, cloud: bool) -> EstimateResult {
    let config = if cloud {
        &bench.walferry_cloud
    } else {
        &bench.walferry_plain
    };
    let out = check_output(
        walferry_restore(config, &["estimate", "--target-name", TARGET, "--json"]),
        "walferry-restore estimate",
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("estimate --json is JSON");
    let stage = |name: &str| {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no stage {name}: {v}"))
            .clone()
    };
    let (wal, startup) = (stage("wal"), stage("startup"));
    let wal_seconds = wal["seconds"].as_f64().unwrap();
    let startup_seconds = startup["seconds"].as_f64().unwrap();
    EstimateResult {
        recovery_seconds: wal_seconds + startup_seconds,
        wal_seconds,
        startup_seconds,
        wal_bound: wal["bound"].as_str().unwrap_or_default().to_owned(),
        replay_source: v["replay"]["source"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        replay_bytes_per_second: v["replay"]["bytes_per_second"].as_f64().unwrap_or(0.0),
        total_seconds: v["total_seconds"].as_f64().unwrap(),
        range_seconds: [
            v["range_seconds"][0].as_f64().unwrap(),
            v["range_seconds"][1].as_f64().unwrap(),
        ],
    }
}

fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// "redo done at 0/AA75C3A8 system usage: CPU: user: 2.10 s, system: 2.50 s, elapsed: 6.01 s"
fn redo_elapsed(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("redo done at"))?;
    let rest = &line[line.find("elapsed: ")? + "elapsed: ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// What the server log said.
enum LogEvent {
    /// "database system is ready to accept connections": promoted.
    Ready,
    /// A FATAL or PANIC line, or the startup process died.
    Failed(String),
}

/// Reads a server log as it grows.
struct LogFollower {
    path: PathBuf,
    offset: u64,
    pending: String,
}

impl LogFollower {
    fn new(path: &Path) -> LogFollower {
        LogFollower {
            path: path.to_owned(),
            offset: 0,
            pending: String::new(),
        }
    }

    /// Reads what was appended and looks at its complete lines.
    fn poll(&mut self) -> Option<LogEvent> {
        let mut file = fs::File::open(&self.path).ok()?;
        file.seek(SeekFrom::Start(self.offset)).ok()?;
        let mut buf = Vec::new();
        let n = file.read_to_end(&mut buf).ok()?;
        self.offset += n as u64;
        self.pending.push_str(&String::from_utf8_lossy(&buf));
        let complete_to = self.pending.rfind('\n').map_or(0, |i| i + 1);
        let complete: String = self.pending.drain(..complete_to).collect();
        for line in complete.lines() {
            if line.contains("database system is ready to accept connections") {
                return Some(LogEvent::Ready);
            }
            if line.contains(" FATAL: ")
                || line.contains(" PANIC: ")
                || (line.contains("startup process") && line.contains("exited with exit code"))
            {
                return Some(LogEvent::Failed(line.to_owned()));
            }
        }
        None
    }
}

/// Samples the startup process's title, `postgres: startup recovering <segment>`.
struct Sampler {
    pgdata: PathBuf,
    first: u64,
    startup: Option<u32>,
    points: Vec<(f64, u64)>,
}

fn segment_number(name: &str) -> Option<u64> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some(log * 256 + seg)
}

impl Sampler {
    fn new(pgdata: &Path, first: &str) -> Sampler {
        Sampler {
            pgdata: pgdata.to_owned(),
            first: segment_number(first).expect("a segment name"),
            startup: None,
            points: vec![(0.0, 0)],
        }
    }

    fn sample(&mut self, started: Instant) {
        if self.startup.is_none() {
            self.startup = find_startup(&self.pgdata);
        }
        let Some(pid) = self.startup else { return };
        let Ok(title) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return;
        };
        let title = String::from_utf8_lossy(&title);
        let Some(rest) = title.split("recovering ").nth(1) else {
            return;
        };
        let name: String = rest.chars().take(24).collect();
        if let Some(n) = segment_number(&name) {
            let done = n.saturating_sub(self.first);
            if self.points.last().is_none_or(|&(_, last)| last != done) {
                self.points.push((started.elapsed().as_secs_f64(), done));
            }
        }
    }

    fn finish(&mut self, seconds: f64, segments: u64) {
        self.points.push((seconds, segments));
    }
}

/// The startup process of the postmaster of `pgdata`.
fn find_startup(pgdata: &Path) -> Option<u32> {
    let pid_file = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let postmaster: u32 = pid_file.lines().next()?.trim().parse().ok()?;
    for entry in fs::read_dir("/proc").ok()? {
        let entry = entry.ok()?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(postmaster) {
            continue;
        }
        if fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("postgres: startup"))
        {
            return Some(pid);
        }
    }
    None
}

/// The processes whose command line holds `prefetch` and `pgdata`.
fn prefetch_pids(pgdata: &Path) -> Vec<u32> {
    let needle = pgdata.display().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("\0prefetch\0") && c.contains(&needle)
            })
        })
        .collect()
}

fn kill_prefetch(pgdata: &Path) {
    for pid in prefetch_pids(pgdata) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

/// Follows the WAL prefetch process of a recovery.
#[derive(Debug, Default)]
struct PipelineWatch {
    pid: Option<u32>,
    peak_kib: Option<u64>,
    last_look: Option<Instant>,
}

impl PipelineWatch {
    fn sample(&mut self, pgdata: &Path) {
        if self.pid.is_none() {
            if self
                .last_look
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
            {
                return;
            }
            self.last_look = Some(Instant::now());
            self.pid = prefetch_pids(pgdata).first().copied();
        }
        let Some(pid) = self.pid else { return };
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            return;
        };
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(kib) = hwm {
            self.peak_kib = Some(self.peak_kib.map_or(kib, |p| p.max(kib)));
        }
    }

    /// Waits until the pipeline process has exited (at most 60 s), sampling its memory.
    fn wait_gone(&mut self, pgdata: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            self.sample(pgdata);
            if prefetch_pids(pgdata).is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "recovery bench: the WAL prefetch of {} did not stop",
            pgdata.display()
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redo_line() {
        let log = "x\n2026-12-07 10:04:45.296 UTC [25902] startup LOG:  redo done at 0/F000028 system usage: CPU: user: 0.05 s, system: 0.04 s, elapsed: 0.17 s\n";
        assert_eq!(super::redo_elapsed(log), Some(0.17));
    }
}
