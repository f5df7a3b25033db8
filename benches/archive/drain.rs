//! (a) Draining a prepared backlog through a simulated archiver.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use walferry_testutil::pg::{self, Cluster, ClusterOptions};

use crate::pgbackrest::{self, PgBackRest};
use crate::support::median;
use crate::{ARCHIVE, Servers, Settings, check_output};

/// Who archives, and over which network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Walferry { cloud: bool },
    PgBackRest { cloud: bool },
}

impl Mode {
    fn all() -> [Mode; 4] {
        [
            Mode::Walferry { cloud: false },
            Mode::PgBackRest { cloud: false },
            Mode::Walferry { cloud: true },
            Mode::PgBackRest { cloud: true },
        ]
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Walferry { cloud: false } => "walferry-s3",
            Mode::Walferry { cloud: true } => "walferry-s3-cloud",
            Mode::PgBackRest { cloud: false } => "pgbackrest-s3",
            Mode::PgBackRest { cloud: true } => "pgbackrest-s3-cloud",
        }
    }
}

/// The backlog every run drains: the stopped cluster's ready segments, its `PG_VERSION` and
/// `pg_control`.
struct Backlog {
    /// The stopped cluster's data directory.
    pgdata: PathBuf,
    /// The ready files, in the archiver's order.
    names: Vec<String>,
    bytes: u64,
}

/// What the simulated archiver reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiverResult {
    pub seconds: f64,
    pub calls: usize,
    pub failures: usize,
    /// Each call's time from start to exit, in milliseconds, in order.
    pub call_ms: Vec<f64>,
}

/// One drain.
#[derive(Debug, Clone, Serialize)]
pub struct DrainRun {
    pub mode: String,
    pub round: usize,
    pub seconds: f64,
    pub calls: usize,
    pub failures: usize,
    pub median_call_ms: f64,
    /// Calls that took more than 10 ms: those that did the work.
    pub slow_calls: usize,
    /// Segments found in the repository afterwards.
    pub archived: usize,
}

/// One mode over all rounds.
#[derive(Debug, Serialize)]
pub struct ModeSummary {
    pub mode: String,
    pub runs: Vec<f64>,
    pub median_seconds: f64,
    /// Original WAL bytes per second (10^6) at the median.
    pub wal_mb_per_second: f64,
}

/// Part (a)'s results.
#[derive(Debug, Serialize)]
pub struct DrainReport {
    pub segments: usize,
    pub wal_bytes: u64,
    pub rounds: usize,
    pub modes: Vec<ModeSummary>,
    /// pgBackRest's drain time over walferry's in the same round, without the profile.
    pub ratios_plain: Vec<f64>,
    /// The same with the cloud profile.
    pub ratios_cloud: Vec<f64>,
    /// The largest peak RSS of any `push` call of one drain, MiB.
    pub push_peak_mib: Option<f64>,
    /// The peak RSS of the background worker of that drain, MiB.
    pub worker_peak_mib: Option<f64>,
    /// The median time of a walferry call in a drain, ms: what PostgreSQL's archiver waits per
    /// file. Most calls of a drain wait for the background worker to make their file durable;
    /// a call for a file already durable is `cargo bench --bench process -- push/recorded`.
    pub drain_call_ms: Option<f64>,
    pub runs: Vec<DrainRun>,
}

impl DrainReport {
    pub fn table(&self) -> String {
        let mut t = format!(
            "(a) draining a backlog of {} segments ({:.2} GiB) one call at a time, {} rounds\n\n\
             | mode | median s | runs (s) | WAL MB/s |\n|---|---|---|---|\n",
            self.segments,
            self.wal_bytes as f64 / f64::from(1u32 << 30),
            self.rounds
        );
        for m in &self.modes {
            let runs: Vec<String> = m.runs.iter().map(|s| format!("{s:.2}")).collect();
            t.push_str(&format!(
                "| {} | {:.2} | {} | {:.0} |\n",
                m.mode,
                m.median_seconds,
                runs.join(", "),
                m.wal_mb_per_second
            ));
        }
        let ratios = |r: &[f64]| {
            let each: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
            format!(
                "median {} (per round {})",
                median(r).map_or("-".into(), |m| format!("{m:.2}")),
                each.join(", ")
            )
        };
        t.push_str(&format!(
            "\npgBackRest / walferry drain time: no profile {}; 20 ms / 400 Mbit/s {}\n",
            ratios(&self.ratios_plain),
            ratios(&self.ratios_cloud)
        ));
        if let Some(ms) = self.drain_call_ms {
            t.push_str(&format!(
                "walferry call in a drain, through sh -c: median {ms:.2} ms (most wait for the background worker to make their file durable)\n"
            ));
        }
        if let Some(mib) = self.push_peak_mib {
            t.push_str(&format!(
                "push peak memory: {mib:.1} MiB (GNU time, every call of one cloud drain); its background worker {:.1} MiB (VmHWM)\n",
                self.worker_peak_mib.unwrap_or(0.0)
            ));
        }
        t.push('\n');
        t
    }
}

/// Builds the backlog, drains it in every mode and round, and reports.
pub fn run(servers: &Servers, settings: &Settings) -> DrainReport {
    let pgbr = PgBackRest::setup(&servers.dir, &servers.plain, &servers.cloud);
    if pgbr.is_none() {
        eprintln!("archive bench: pgbackrest or stunnel is missing; its modes are skipped");
    }
    let backlog = prepare(servers, settings);
    eprintln!(
        "archive bench: a backlog of {} ready files, {:.2} GiB",
        backlog.names.len(),
        backlog.bytes as f64 / f64::from(1u32 << 30)
    );
    let modes: Vec<Mode> = Mode::all()
        .into_iter()
        .filter(|m| match &settings.modes {
            Some(names) => names.iter().any(|n| n == m.name()),
            None => true,
        })
        .filter(|m| !matches!(m, Mode::PgBackRest { .. }) || pgbr.is_some())
        .collect();

    let mut runs = Vec::new();
    for round in 1..=settings.rounds {
        for &mode in &modes {
            let (run, _) = drain(servers, pgbr.as_ref(), &backlog, mode, round, false);
            eprintln!(
                "archive bench: round {round} {:<20} {:>7.2} s, {} calls, {} failures",
                run.mode, run.seconds, run.calls, run.failures
            );
            runs.push(run);
        }
    }
    let memory = modes
        .contains(&Mode::Walferry { cloud: true })
        .then(|| {
            drain(
                servers,
                None,
                &backlog,
                Mode::Walferry { cloud: true },
                0,
                true,
            )
            .1
        })
        .flatten();

    let by = |mode: Mode, round: usize| {
        runs.iter()
            .find(|r: &&DrainRun| r.mode == mode.name() && r.round == round)
            .map(|r| r.seconds)
    };
    let ratios = |cloud: bool| -> Vec<f64> {
        (1..=settings.rounds)
            .filter_map(|round| {
                Some(by(Mode::PgBackRest { cloud }, round)? / by(Mode::Walferry { cloud }, round)?)
            })
            .collect()
    };
    let summaries = modes
        .iter()
        .map(|&mode| {
            let times: Vec<f64> = runs
                .iter()
                .filter(|r| r.mode == mode.name())
                .map(|r| r.seconds)
                .collect();
            let median_seconds = median(&times).unwrap_or(0.0);
            ModeSummary {
                mode: mode.name().to_owned(),
                wal_mb_per_second: backlog.bytes as f64 / 1e6 / median_seconds,
                runs: times,
                median_seconds,
            }
        })
        .collect();
    let call_ms: Vec<f64> = runs
        .iter()
        .filter(|r| r.mode.starts_with("walferry"))
        .map(|r| r.median_call_ms)
        .collect();
    DrainReport {
        segments: backlog.names.len(),
        wal_bytes: backlog.bytes,
        rounds: settings.rounds,
        modes: summaries,
        ratios_plain: ratios(false),
        ratios_cloud: ratios(true),
        push_peak_mib: memory.map(|m| m.0),
        worker_peak_mib: memory.map(|m| m.1),
        drain_call_ms: median(&call_ms),
        runs,
    }
}

/// A cluster that writes at least `settings.wal_mib` of WAL with nothing archiving it, stopped.
fn prepare(servers: &Servers, settings: &Settings) -> Backlog {
    let opts = ClusterOptions {
        archive_command: Some(String::new()),
        extra_conf: [
            "shared_buffers = '1GB'",
            "max_wal_size = '1GB'",
            "synchronous_commit = off",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..ClusterOptions::default()
    };
    let mut primary = Cluster::init(&servers.dir.join("primary"), &opts).expect("initdb");
    primary.start().expect("start the primary");
    let mut init = primary.command("pgbench");
    init.args(["-i", "-q", "-s", "50"]);
    check_output(init, "pgbench -i");
    let target = settings.wal_mib << 20;
    loop {
        let written: u64 = primary
            .psql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
            .unwrap()
            .parse()
            .unwrap();
        eprintln!(
            "archive bench: {:.2} of {:.2} GiB of WAL written",
            written as f64 / f64::from(1u32 << 30),
            target as f64 / f64::from(1u32 << 30)
        );
        if written >= target {
            break;
        }
        let mut load = primary.command("pgbench");
        load.args(["-n", "-c", "4", "-j", "2", "-M", "prepared", "-T", "10"]);
        check_output(load, "pgbench");
    }
    primary.switch_wal().unwrap();
    primary.stop().unwrap();
    let pgdata = primary.data_dir().to_owned();
    let names = pg::ready_files(&pgdata);
    let bytes = names
        .iter()
        .map(|n| {
            std::fs::metadata(pgdata.join("pg_wal").join(n))
                .unwrap()
                .size()
        })
        .sum();
    Backlog {
        pgdata,
        names,
        bytes,
    }
}

/// One drain of a fresh copy of the backlog into a fresh repository. With `memory`, every
/// call runs under GNU time and the second value is the largest peak RSS of a call and that
/// of the background worker, MiB.
fn drain(
    servers: &Servers,
    pgbr: Option<&PgBackRest>,
    backlog: &Backlog,
    mode: Mode,
    round: usize,
    memory: bool,
) -> (DrainRun, Option<(f64, f64)>) {
    let name = format!(
        "{}-{round}{}",
        mode.name(),
        if memory { "-memory" } else { "" }
    );
    let pgdata = servers.dir.join(format!("fakepg-{name}"));
    std::fs::create_dir_all(pgdata.join("global")).unwrap();
    std::fs::create_dir_all(pgdata.join("pg_wal/archive_status")).unwrap();
    std::fs::copy(backlog.pgdata.join("PG_VERSION"), pgdata.join("PG_VERSION")).unwrap();
    std::fs::copy(
        backlog.pgdata.join("global/pg_control"),
        pgdata.join("global/pg_control"),
    )
    .unwrap();
    for n in &backlog.names {
        std::fs::hard_link(
            backlog.pgdata.join("pg_wal").join(n),
            pgdata.join("pg_wal").join(n),
        )
        .unwrap();
        std::fs::write(
            pgdata
                .join("pg_wal/archive_status")
                .join(format!("{n}.ready")),
            b"",
        )
        .unwrap();
    }
    let mut chown = Command::new("chown");
    chown.arg("-R").arg(pg::cluster_user()).arg(&pgdata);
    check_output(chown, "chown");
    // WAL just written is in the page cache.
    for n in &backlog.names {
        std::fs::read(pgdata.join("pg_wal").join(n)).unwrap();
    }

    let prefix = name.clone();
    let memory_file = pgdata.join("push-rss.txt");
    let command = match mode {
        Mode::Walferry { cloud } => {
            let config = servers.walferry_config(&prefix, cloud);
            let push = format!("{ARCHIVE} --config {} push %p", config.display());
            if memory {
                format!("/usr/bin/time -a -o {} -f %M {push}", memory_file.display())
            } else {
                push
            }
        }
        Mode::PgBackRest { cloud } => {
            let pgbr = pgbr.expect("pgBackRest modes run only with pgBackRest");
            let config = pgbr.push_repository(
                &prefix,
                pgbackrest::Repo::S3 { cloud },
                &format!("/{prefix}"),
                &pgdata,
                4,
            );
            format!(
                "pgbackrest --config={} --stanza=bench archive-push %p",
                config.display()
            )
        }
    };
    let exe = std::env::current_exe().unwrap();
    let mut archiver = Command::new(exe);
    archiver.arg("--archiver").arg(&pgdata).arg(&command);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (out, worker_peak) = std::thread::scope(|s| {
        // The background worker push starts is not under GNU time: sample its peak instead.
        let sampler = s.spawn(|| {
            let mut peak = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if memory {
                    peak = peak.max(worker_vm_hwm_kib());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        let out = check_output(pg::as_cluster_user(archiver), "the simulated archiver");
        // The worker outlives the last call by its idle time; its peak is reached by then.
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (out, sampler.join().unwrap())
    });
    let result: ArchiverResult = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("the archiver's report: {e}: {out}"));

    let archived = match mode {
        Mode::Walferry { .. } => servers.objects(&prefix, "wal").len(),
        Mode::PgBackRest { .. } => {
            // Give the asynchronous process a moment to exit, then stop any straggler.
            std::thread::sleep(Duration::from_millis(200));
            if let Some(pgbr) = pgbr {
                pgbr.reset();
            }
            servers
                .objects(&prefix, "archive")
                .iter()
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.len() > 24 && n.ends_with(".zst"))
                })
                .count()
        }
    };
    let segments = backlog.names.iter().filter(|n| n.len() == 24).count();
    assert_eq!(
        archived, segments,
        "{name}: the repository holds {archived} of {segments} segments"
    );
    let peak = memory.then(|| {
        let calls = std::fs::read_to_string(&memory_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<f64>().ok())
            .fold(0.0, f64::max)
            / 1024.0;
        (calls, worker_peak as f64 / 1024.0)
    });
    servers.remove(&prefix);
    let _ = std::fs::remove_dir_all(&pgdata);
    (
        DrainRun {
            mode: mode.name().to_owned(),
            round,
            seconds: result.seconds,
            calls: result.calls,
            failures: result.failures,
            median_call_ms: median(&result.call_ms).unwrap_or(0.0),
            slow_calls: result.call_ms.iter().filter(|&&ms| ms > 10.0).count(),
            archived,
        },
        peak,
    )
}

/// The largest `VmHWM` of the running `walferry-archive` background workers, KiB.
fn worker_vm_hwm_kib() -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v == b"WALFERRY_PUSH_WORKER=1")
            })
        })
        .filter_map(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .max()
        .unwrap_or(0)
}

/// The simulated archiver: `--archiver PGDATA COMMAND`. Prints its [`ArchiverResult`] as
/// JSON.
pub fn archiver_main(args: &[String]) {
    let [pgdata, command] = args else {
        panic!("usage: --archiver PGDATA COMMAND");
    };
    let pgdata = Path::new(pgdata);
    let status = pgdata.join("pg_wal/archive_status");
    let started = Instant::now();
    let mut call_ms = Vec::new();
    let mut failures = 0;
    loop {
        // PostgreSQL's order: timeline history files first, then the oldest.
        let ready = pg::ready_files(pgdata);
        let Some(name) = ready.first() else {
            break;
        };
        let cmd = command
            .replace("%p", &format!("pg_wal/{name}"))
            .replace("%f", name);
        let call = Instant::now();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(pgdata)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        call_ms.push(call.elapsed().as_secs_f64() * 1000.0);
        if ok {
            std::fs::rename(
                status.join(format!("{name}.ready")),
                status.join(format!("{name}.done")),
            )
            .unwrap();
        } else {
            failures += 1;
            assert!(failures < 100, "the archive command keeps failing: {cmd}");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let result = ArchiverResult {
        seconds: started.elapsed().as_secs_f64(),
        calls: call_ms.len(),
        failures,
        call_ms,
    };
    println!("{}", serde_json::to_string(&result).unwrap());
}
