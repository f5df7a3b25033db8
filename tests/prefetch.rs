//! The WAL prefetch pipeline under real recoveries: `restore` starts it, `fetch` serves from its
//! spool, it follows timeline switches, stops at the end of the archive and when recovery
//! ends, and recovery completes whatever happens to it.

use std::path::Path;
use std::time::{Duration, Instant};

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{Cluster, ClusterOptions};

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
