//! The WAL prefetch pipeline under real recoveries: `restore` starts it, `fetch` serves from its
//! spool, it follows timeline switches, stops at the end of the archive and when recovery
//! ends, and recovery completes whatever happens to it.

use std::path::Path;
use std::time::{Duration, Instant};

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{Cluster, ClusterOptions};
use walferry_testutil::s3::NetworkProfile;

use crate::util::*;

/// The figures of the pipeline's "WAL prefetch stopped" line in `log`.
#[derive(Debug, Default)]
struct Stopped {
    planned: u64,
    published: u64,
    taken: u64,
    failed: u64,
    stop: String,
}

/// Every "WAL prefetch stopped" line of `log`, in order.
fn stops(log: &str) -> Vec<Stopped> {
    log.lines()
        .filter(|line| line.contains("WAL prefetch stopped"))
        .map(|line| {
            let field = |key: &str| -> String {
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix(&format!("{key}=")))
                    .unwrap_or_else(|| panic!("no {key} in {line}"))
                    .to_owned()
            };
            let num = |key: &str| field(key).parse::<u64>().unwrap();
            Stopped {
                planned: num("planned"),
                published: num("published"),
                taken: num("taken"),
                failed: num("failed"),
                stop: field("stop"),
            }
        })
        .collect()
}

/// The log of the pipeline `restore` started for `pgdata`.
fn restore_prefetch_log(pgdata: &Path) -> String {
    std::fs::read_to_string(pgdata.join("pg_wal/walferry-spool/prefetch.log")).unwrap_or_default()
}

/// Waits until the pipelines of `pgdata` have stopped and removed their spool generations;
/// returns what is left in the spool directory.
fn wait_spool_removed(pgdata: &Path) -> Vec<String> {
    let spool = pgdata.join("pg_wal/walferry-spool");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut left: Vec<String> = std::fs::read_dir(&spool)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        left.sort();
        let generations = left
            .iter()
            .any(|name| name.len() == 16 || name == "current");
        if !generations {
            return left;
        }
        assert!(
            Instant::now() < deadline,
            "the spool of {} was not removed: {left:?}",
            pgdata.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A primary archiving into `repo` with a base backup and then `segments` WAL segments of rows,
/// a restore point `target` and one more batch after it. Returns the primary, the fingerprint
/// at the target and the fingerprint at the end.
fn primary_with_wal(dir: &TestDir, repo: &Repo, segments: i32) -> (Cluster, String, String) {
    let primary = primary_with_rows(dir, repo, 100);
    take_backup(repo, &primary, dir.path(), &[]);
    // About 2.3 MB of WAL per 10,000 rows of `t`.
    for i in 0..segments {
        insert_rows(&primary, 1000 + i * 10_000, 1000 + i * 10_000 + 7_499);
        primary.switch_wal().unwrap();
    }
    let at_target = fingerprint(&primary);
    primary.create_restore_point("target").unwrap();
    insert_rows(&primary, 1_000_000, 1_000_999);
    let end = fingerprint(&primary);
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();
    (primary, at_target, end)
}

fn server_opts() -> ClusterOptions {
    ClusterOptions {
        env: server_env(&[]),
        ..ClusterOptions::default()
    }
}

#[test]
fn restore_streams_the_wal_through_the_spool() {
    let dir = TestDir::new("prefetch-restore").unwrap();
    let repo = Repo::local(&dir);
    let (_primary, at_target, _) = primary_with_wal(&dir, &repo, 12);

    let pgdata = dir.join("restored");
    restore(&repo, &pgdata, &["--target-name", "target"], dir.path()).expect(0, &[]);
    let restored = start_restored(&pgdata, &server_opts());
    assert_eq!(fingerprint(&restored), at_target);

    let left = wait_spool_removed(&pgdata);
    assert_eq!(left, ["prefetch.log"], "{left:?}");
    let log = restore_prefetch_log(&pgdata);
    let stopped = stops(&log);
    assert_eq!(stopped.len(), 1, "{log}");
    let stopped = &stopped[0];
    assert_eq!(stopped.stop, "RecoveryEnded", "{log}");
    assert_eq!(stopped.failed, 0, "{log}");
    assert!(stopped.taken >= 12, "{log}");
    assert!(stopped.published >= stopped.taken, "{log}");
    assert!(stopped.planned >= stopped.published, "{log}");
    let server_log = restored.log_contents();
    assert!(
        !server_log.contains("walferry-restore: WARNING")
            && !server_log.contains("walferry-restore: ERROR"),
        "{server_log}"
    );
}

/// Server options whose `restore_command` logs at debug level for walferry's engine, so that
/// every file `fetch` takes from the spool shows in the server log as "served from the spool".
fn debug_server_opts() -> ClusterOptions {
    ClusterOptions {
        env: server_env(&[(
            "WALFERRY_LOG".into(),
            "info,walferry_engine=debug,walferry_restore=debug".into(),
        )]),
        ..ClusterOptions::default()
    }
}

/// The value of `key=` in a log line, without quotes.
fn log_field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .map(|value| value.trim_matches('"'))
}

/// Every file `fetch` served from the spool according to `log`, with the generation it came
/// from, in order.
fn served(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|line| line.contains("served from the spool"))
        .map(|line| {
            let file = log_field(line, "file").unwrap_or_else(|| panic!("no file in {line}"));
            let generation =
                log_field(line, "generation").unwrap_or_else(|| panic!("no generation: {line}"));
            (file.to_owned(), generation.to_owned())
        })
        .collect()
}

/// Every file PostgreSQL asked `restore_command` for according to fetch's debug lines in
/// `log`, in order.
fn asked_files(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("DEBUG: asked for"))
        .filter_map(|line| log_field(line, "file").map(str::to_owned))
        .collect()
}

/// The files PostgreSQL asked for that the archive has (not answered "not in the archive"),
/// in order.
fn found_files(log: &str) -> Vec<String> {
    let missing: Vec<String> = log
        .lines()
        .filter(|line| line.contains("not in the archive"))
        .filter_map(|line| log_field(line, "file").map(str::to_owned))
        .collect();
    asked_files(log)
        .into_iter()
        .filter(|file| !missing.contains(file))
        .collect()
}

/// Asserts that walferry logged no warning or error into the server log.
fn assert_no_walferry_complaints(server_log: &str) {
    let complaints: Vec<&str> = server_log
        .lines()
        .filter(|line| {
            line.contains("walferry-restore: WARNING") || line.contains("walferry-restore: ERROR")
        })
        .collect();
    assert!(complaints.is_empty(), "{}", complaints.join("\n"));
}

/// The generation `current` names in the spool of `pgdata`, once there is one.
fn current_generation(pgdata: &Path) -> String {
    let current = pgdata.join("pg_wal/walferry-spool/current");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&current) {
            return text.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no spool generation in {}",
            pgdata.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The WAL files a spool generation in directory `dir` holds, sorted.
fn wal_files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| walferry_wal::WalFileName::parse(name).is_ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The names of the WAL files archived in a local repository, sorted.
fn archived_wal_files(repo: &Repo) -> Vec<String> {
    let mut names: Vec<String> = repo
        .local_objects()
        .iter()
        .filter_map(|object| object.strip_prefix("wal/"))
        .filter_map(|rest| rest.rsplit('/').next())
        .filter(|name| walferry_wal::WalFileName::parse(name).is_ok())
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// The live processes running `walferry-restore prefetch` with `pgdata` among their arguments.
fn prefetch_pids(pgdata: &Path) -> Vec<u32> {
    let pgdata = pgdata.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.contains(&&b"prefetch"[..]) && args.contains(&pgdata) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until the server log of `cluster` contains `text`.
fn wait_log(cluster: &Cluster, text: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while !cluster.log_contents().contains(text) {
        assert!(
            Instant::now() < deadline,
            "the server log never showed {text:?}\n{}",
            cluster.log_tail(40)
        );
        assert!(cluster.is_running(), "{}", cluster.log_tail(40));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the recovering `cluster` is promoted.
fn wait_promoted(cluster: &Cluster) {
    match cluster.wait_promoted(TIMEOUT).expect("recovery ends") {
        walferry_testutil::pg::RecoveryOutcome::Promoted => {}
        other => panic!("recovery failed: {other:?}"),
    }
}

/// A restore whose plan crosses from timeline 1 to timeline 2 gets the history file and the
/// segments of both timelines from the pipeline, in the order PostgreSQL asks for them.
#[test]
fn restore_across_a_timeline_switch_is_served_from_the_spool() {
    let dir = TestDir::new("prefetch-timeline").unwrap();
    let repo = Repo::local(&dir);
    let primary = primary_with_rows(&dir, &repo, 100);
    take_backup(&repo, &primary, dir.path(), &[]);
    for i in 0..3 {
        insert_rows(&primary, 1000 + i * 10_000, 1000 + i * 10_000 + 4_999);
        primary.switch_wal().unwrap();
    }
    primary.create_restore_point("branch").unwrap();
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();

    // Timeline 2 branches off at the restore point and archives into the same repository.
    let tl2_dir = dir.join("timeline2");
    restore(&repo, &tl2_dir, &["--target-name", "branch"], dir.path()).expect(0, &[]);
    let tl2 = start_restored(&tl2_dir, &archiving(&repo));
    assert_eq!(tl2.timeline().unwrap(), 2);
    for i in 0..3 {
        insert_rows(&tl2, 500_000 + i * 10_000, 500_000 + i * 10_000 + 4_999);
        tl2.switch_wal().unwrap();
    }
    tl2.create_restore_point("on-tl2").unwrap();
    let on_tl2 = fingerprint(&tl2);
    insert_rows(&tl2, 900_000, 900_999);
    let last = tl2.switch_wal().unwrap();
    tl2.wait_archived(&last, TIMEOUT).unwrap();

    // From the backup on timeline 1 to the restore point on timeline 2.
    let pgdata = dir.join("restored");
    let run = restore(&repo, &pgdata, &["--target-name", "on-tl2"], dir.path());
    run.expect(0, &[]);
    assert!(
        run.stdout.contains("recovery_target_timeline = 2"),
        "{}",
        run.stdout
    );
    let restored = start_restored(&pgdata, &debug_server_opts());
    assert_eq!(fingerprint(&restored), on_tl2);

    let server_log = restored.log_contents();
    let asked = asked_files(&server_log);
    let found = found_files(&server_log);
    let served: Vec<String> = served(&server_log).into_iter().map(|(f, _)| f).collect();
    // Every file recovery asked for and the archive has came from the spool the first time.
    let mut first_asks = found.clone();
    let mut seen = std::collections::HashSet::new();
    first_asks.retain(|file| seen.insert(file.clone()));
    for file in &first_asks {
        assert!(
            served.contains(file),
            "{file} was not served from the spool\n{server_log}"
        );
    }
    assert_eq!(asked.first().map(String::as_str), Some("00000002.history"));
    let segments: Vec<&String> = served.iter().filter(|f| f.len() == 24).collect();
    let on = |tli: &str| segments.iter().filter(|f| f.starts_with(tli)).count();
    assert!(on("00000001") >= 3 && on("00000002") >= 3, "{served:?}");
    // Timeline 2 began inside a segment both timelines archived: recovery reads timeline 2's
    // copy of it, and never timeline 1's.
    let archived = archived_wal_files(&repo);
    let switch_segment = archived
        .iter()
        .find(|f| f.len() == 24 && f.starts_with("00000002"))
        .unwrap();
    let parent_copy = format!("00000001{}", &switch_segment[8..]);
    assert!(archived.contains(&parent_copy), "{archived:?}");
    assert!(served.contains(switch_segment), "{served:?}");
    assert!(!asked.contains(&parent_copy), "{asked:?}");
    // In order: timeline 1's segments, then timeline 2's from the switch on.
    let mut sorted = segments.clone();
    sorted.sort_by_key(|f| (&f[8..], &f[..8]));
    assert_eq!(segments, sorted);
    assert!(
        segments.windows(2).all(|w| w[0][..8] <= w[1][..8]),
        "{segments:?}"
    );
    assert_no_walferry_complaints(&server_log);

    wait_spool_removed(&pgdata);
    let log = restore_prefetch_log(&pgdata);
    let stopped = stops(&log);
    assert_eq!(stopped.len(), 1, "{log}");
    assert_eq!(stopped[0].stop, "RecoveryEnded", "{log}");
    assert_eq!(stopped[0].failed, 0, "{log}");
    assert!(stopped[0].taken >= served.len() as u64, "{log}");
}

/// A restore to the end of the archive: the pipeline's work list ends at the last archived
/// segment, PostgreSQL's ask for the next one is answered "not found" and it promotes with
/// every row, all without a warning.
#[test]
fn restore_to_the_end_of_the_archive_ends_quietly() {
    let dir = TestDir::new("prefetch-end").unwrap();
    let repo = Repo::local(&dir);
    let (_primary, _, end) = primary_with_wal(&dir, &repo, 4);
    let last_archived = archived_wal_files(&repo)
        .into_iter()
        .rfind(|name| name.len() == 24)
        .unwrap();

    let pgdata = dir.join("restored");
    restore(&repo, &pgdata, &[], dir.path()).expect(0, &[]);
    let restored = start_restored(&pgdata, &debug_server_opts());
    assert_eq!(fingerprint(&restored), end);

    let server_log = restored.log_contents();
    assert_no_walferry_complaints(&server_log);
    // PostgreSQL asks for the last segment again at the end of recovery; the pipeline has
    // handed it over by then, and fetch downloads it.
    let mut asked = found_files(&server_log);
    assert_eq!(asked.last(), Some(&last_archived), "{server_log}");
    let mut seen = std::collections::HashSet::new();
    asked.retain(|file| seen.insert(file.clone()));
    let served: Vec<String> = served(&server_log).into_iter().map(|(f, _)| f).collect();
    assert_eq!(served, asked, "{server_log}");
    let next = format!(
        "{}{:08X}",
        &last_archived[..16],
        u32::from_str_radix(&last_archived[16..], 16).unwrap() + 1
    );
    assert!(
        server_log.contains(&format!("not in the archive file={next}")),
        "{server_log}"
    );

    wait_spool_removed(&pgdata);
    let log = restore_prefetch_log(&pgdata);
    let stopped_line = log
        .lines()
        .find(|line| line.contains("WAL prefetch stopped"))
        .unwrap_or_else(|| panic!("no stop in {log}"));
    assert_eq!(
        log_field(stopped_line, "last_segment"),
        Some(last_archived.as_str()),
        "{log}"
    );
    let stopped = stops(&log);
    assert_eq!(stopped.len(), 1, "{log}");
    let stopped = &stopped[0];
    assert_eq!(stopped.stop, "RecoveryEnded", "{log}");
    assert_eq!(stopped.failed, 0, "{log}");
    assert_eq!(stopped.planned, asked.len() as u64, "{log}");
    assert_eq!(stopped.published, stopped.planned, "{log}");
    assert_eq!(stopped.taken, stopped.planned, "{log}");
}

/// The pipeline killed mid-recovery: its generation turns stale and is never served from,
/// the next fetch starts a new pipeline that removes it, and recovery completes.
#[test]
fn recovery_survives_the_pipeline_killed() {
    let dir = TestDir::new("prefetch-kill").unwrap();
    // Each request waits a little: recovery takes long enough to kill the pipeline in it.
    let repo = Repo::s3_with(
        &dir,
        NetworkProfile {
            first_byte_delay: Duration::from_millis(50),
            bandwidth_bytes_per_sec: None,
        },
    );
    let (_primary, _, end) = primary_with_wal(&dir, &repo, 12);

    let pgdata = dir.join("restored");
    restore(&repo, &pgdata, &[], dir.path()).expect(0, &[]);
    let stale = current_generation(&pgdata);
    let stale_dir = pgdata.join("pg_wal/walferry-spool").join(&stale);
    let pids = prefetch_pids(&pgdata);
    assert_eq!(pids.len(), 1, "{pids:?}");

    let mut restored = Cluster::from_existing(&pgdata, &debug_server_opts()).unwrap();
    restored.start_no_wait().unwrap();
    wait_log(&restored, "served from the spool");
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + TIMEOUT;
    while alive(pids[0]) {
        assert!(Instant::now() < deadline, "the pipeline did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    // What the dead pipeline left (before the next pipeline removes it) is stale.
    let left = wal_files_in(&stale_dir);
    assert!(!left.is_empty(), "the pipeline held nothing when killed");

    wait_promoted(&restored);
    assert_eq!(fingerprint(&restored), end);
    let server_log = restored.log_contents();
    assert!(
        server_log.contains("spool generation is stale"),
        "{server_log}"
    );
    let served = served(&server_log);
    // Only a fetch that found the generation live just before the kill may have finished its
    // rename after it: of what was left, at most the file replay needed next.
    let from_stale: Vec<&String> = served
        .iter()
        .filter(|(file, generation)| generation == &stale && left.contains(file))
        .map(|(file, _)| file)
        .collect();
    assert!(
        from_stale.is_empty() || from_stale == [&left[0]],
        "served from the stale generation: {from_stale:?}\n{server_log}"
    );
    // A new pipeline took over, serving from a generation of its own, and removed the stale
    // one.
    assert!(
        served.iter().any(|(_, generation)| generation != &stale),
        "{server_log}"
    );
    assert!(!stale_dir.exists(), "{left:?}");
    let left = wait_spool_removed(&pgdata);
    assert!(!left.iter().any(|name| name == &stale), "{left:?}");
    restored.stop().unwrap();
}

/// A spool an earlier restore left behind, with garbage under the names recovery asks for
/// and a lock nobody holds, is never served from; the pipeline fetch starts replaces it.
#[test]
fn a_stale_spool_is_never_served() {
    let dir = TestDir::new("prefetch-stale").unwrap();
    let repo = Repo::local(&dir);
    let (_primary, _, end) = primary_with_wal(&dir, &repo, 4);

    let pgdata = dir.join("restored");
    restore(&repo, &pgdata, &["--prefetch", "false"], dir.path()).expect(0, &[]);
    let spool = pgdata.join("pg_wal/walferry-spool");
    assert!(!spool.exists(), "a pipeline was started");
    let stale = "0123456789abcdef";
    let stale_dir = spool.join(stale);
    std::fs::create_dir_all(&stale_dir).unwrap();
    let mut planted = archived_wal_files(&repo);
    // PostgreSQL probes the next timeline's history file at promotion.
    planted.push("00000002.history".into());
    for name in &planted {
        std::fs::write(stale_dir.join(name), format!("garbage, not {name}\n")).unwrap();
    }
    // The stale generation allowed placing in pg_wal, and pg_wal itself holds garbage under
    // segment names: fetch must never answer "not found" for those names, which would make
    // PostgreSQL read the garbage; a file it hands over must replace it.
    std::fs::write(stale_dir.join("place"), b"").unwrap();
    let segments: Vec<&String> = planted.iter().filter(|n| n.len() == 24).collect();
    for name in &segments[1..] {
        let in_pg_wal = pgdata.join("pg_wal").join(name.as_str());
        std::fs::write(&in_pg_wal, format!("garbage in pg_wal, not {name}\n")).unwrap();
    }
    walferry_testutil::pg::chown_to_cluster_user(&pgdata.join("pg_wal")).unwrap();
    std::fs::write(stale_dir.join("lock"), b"").unwrap();
    std::fs::write(spool.join("current"), format!("{stale}\n")).unwrap();
    walferry_testutil::pg::chown_to_cluster_user(&spool).unwrap();

    let restored = start_restored(&pgdata, &debug_server_opts());
    assert_eq!(fingerprint(&restored), end);
    let server_log = restored.log_contents();
    assert!(
        server_log.contains("spool generation is stale"),
        "{server_log}"
    );
    let served = served(&server_log);
    assert!(
        served.iter().all(|(_, generation)| generation != stale),
        "{server_log}"
    );
    // The pipeline the first fetch started served the rest, and removed the stale spool.
    assert!(!served.is_empty(), "{server_log}");
    assert_no_walferry_complaints(&server_log);
    let left = wait_spool_removed(&pgdata);
    assert!(!stale_dir.exists(), "{left:?}");
}

/// The S3 server goes away for a while in the middle of recovery and comes back on the same
/// port: the pipeline and fetch retry, and recovery completes with every row.
#[test]
fn recovery_survives_an_s3_restart() {
    let dir = TestDir::new("prefetch-s3-restart").unwrap();
    let mut repo = Repo::s3(&dir);
    // Three segments ahead at most: the pipeline must download during and after the outage.
    repo.env
        .push(("WALFERRY_PREFETCH_BUDGET".into(), "48".into()));
    let (_primary, _, end) = primary_with_wal(&dir, &repo, 10);

    let pgdata = dir.join("restored");
    restore(&repo, &pgdata, &[], dir.path()).expect(0, &[]);
    let mut restored = Cluster::from_existing(&pgdata, &debug_server_opts()).unwrap();
    restored.start_no_wait().unwrap();
    wait_log(&restored, "asked for");

    let s3 = repo.s3.as_mut().unwrap();
    s3.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let during = asked_files(&restored.log_contents()).len();
    s3.restart().unwrap();

    wait_promoted(&restored);
    assert_eq!(fingerprint(&restored), end);
    let server_log = restored.log_contents();
    let asked = asked_files(&server_log);
    assert!(
        asked.len() > during,
        "recovery had ended before the server came back\n{server_log}"
    );
    wait_spool_removed(&pgdata);
    let log = restore_prefetch_log(&pgdata);
    let stopped = stops(&log);
    assert_eq!(stopped.len(), 1, "{log}");
    assert_eq!(stopped[0].stop, "RecoveryEnded", "{log}");
    assert_eq!(stopped[0].failed, 0, "{log}");
    // The outage struck downloads in flight, which were retried.
    assert!(log.contains("retrying in"), "{log}");
    restored.stop().unwrap();
}
