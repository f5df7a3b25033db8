//! Base backups in harder conditions, restored and checked row by row: a backup with a
//! tablespace restored elsewhere through a mapping, a backup taken while a workload writes, and
//! a backup killed half-way, which must stay invisible and must not block its label.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{self, Cluster, ClusterOptions};

use crate::util::*;

/// Options for a restored cluster that does not archive.
fn restored_opts() -> ClusterOptions {
    ClusterOptions {
        env: server_env(&[]),
        ..ClusterOptions::default()
    }
}

/// Every file under `dir`, relative, with its size and modification time, sorted.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, u64, SystemTime)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(root, &path, out);
            }
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            out.push((rel, meta.len(), meta.modified().unwrap()));
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A primary with a table in a tablespace; a backup, more rows, the primary stopped with its
/// tablespace directory left in place. Restoring with `--tablespace-mapping` puts the
/// tablespace in a new directory, links `pg_tblspc/<oid>` there and leaves the old one alone;
/// without the mapping the restore is refused, since the old directory is not empty.
#[test]
fn backup_scenarios_tablespace_restored_through_a_mapping() {
    let dir = TestDir::new("bs-tablespace").unwrap();
    let repo = Repo::local(&dir);
    let ts_old = dir.create_dir("ts-primary").unwrap();
    pg::chown_to_cluster_user(&ts_old).unwrap();
    let mut primary = start_cluster(&dir, "primary", &archiving(&repo));
    primary
        .psql(&format!(
            "CREATE TABLESPACE ts LOCATION {}",
            pg::sql_literal(ts_old.to_str().unwrap())
        ))
        .unwrap();
    primary
        .psql(
            "CREATE TABLE t (id int PRIMARY KEY USING INDEX TABLESPACE ts, v text NOT NULL) \
             TABLESPACE ts",
        )
        .unwrap();
    let oid = primary
        .psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
        .unwrap();
    insert_rows(&primary, 1, 2000);
    take_backup(&repo, &primary, dir.path(), &["--part-size", "1"]);
    insert_rows(&primary, 2001, 4000);
    let expected = fingerprint(&primary);
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();
    primary.stop().unwrap();
    let old_files = listing(&ts_old);
    assert!(
        !old_files.is_empty(),
        "the primary's tablespace holds files"
    );

    // Without a mapping the tablespace would go back to its original, non-empty directory.
    let unmapped = dir.join("restored-unmapped");
    restore(&repo, &unmapped, &[], dir.path()).expect(2, &["not empty"]);
    assert!(
        !unmapped.exists() || std::fs::read_dir(&unmapped).unwrap().next().is_none(),
        "a refused restore writes nothing"
    );

    let pgdata = dir.join("restored");
    let ts_new = dir.join("ts-restored");
    let mapping = format!("{}={}", ts_old.display(), ts_new.display());
    restore(
        &repo,
        &pgdata,
        &["--tablespace-mapping", &mapping],
        dir.path(),
    )
    .expect(0, &[]);
    let mut restored = start_restored(&pgdata, &restored_opts());
    assert_eq!(fingerprint(&restored), expected);
    assert_eq!(
        std::fs::read_link(pgdata.join("pg_tblspc").join(&oid)).unwrap(),
        ts_new
    );
    assert_eq!(
        restored
            .psql(&format!("SELECT pg_tablespace_location({oid})"))
            .unwrap(),
        ts_new.display().to_string()
    );
    // Writes after promotion go to the new directory too.
    insert_rows(&restored, 4001, 4100);
    restored.psql("CHECKPOINT").unwrap();
    restored.stop().unwrap();
    assert_eq!(
        listing(&ts_old),
        old_files,
        "the old tablespace is untouched"
    );
}

/// A backup taken while another connection commits many small transactions: the restore to
/// the end of the archive replays the WAL written during the backup and has every row.
#[test]
fn backup_scenarios_taken_during_a_workload() {
    let dir = TestDir::new("bs-workload").unwrap();
    let repo = Repo::local(&dir);
    let primary = primary_with_rows(&dir, &repo, 1000);
    let count = || -> u64 {
        primary
            .psql("SELECT count(*) FROM t")
            .unwrap()
            .parse()
            .unwrap()
    };

    let stop = AtomicBool::new(false);
    let (during, batches) = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            // Each statement is its own transaction (psql autocommits): 20 commits per call.
            let mut next = 1_000_001;
            let mut batches = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let mut sql = String::new();
                for _ in 0..20 {
                    sql.push_str(&format!(
                        "INSERT INTO t SELECT i, md5(i::text) || repeat('x', 500) \
                         FROM generate_series({next}, {}) i;\n",
                        next + 49
                    ));
                    next += 50;
                }
                primary.psql(&sql).expect("workload");
                batches += 1;
            }
            batches
        });
        let deadline = Instant::now() + TIMEOUT;
        while count() == 1000 {
            assert!(Instant::now() < deadline, "the workload commits nothing");
            std::thread::sleep(Duration::from_millis(20));
        }
        let before = count();
        take_backup(&repo, &primary, dir.path(), &["--part-size", "1"]);
        let after = count();
        stop.store(true, Ordering::Relaxed);
        (after - before, worker.join().unwrap())
    });
    assert!(during > 0, "rows were committed while the backup ran");
    let expected = fingerprint(&primary);
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();

    let pgdata = dir.join("restored");
    restore(&repo, &pgdata, &[], dir.path()).expect(0, &[]);
    let mut restored = start_restored(&pgdata, &restored_opts());
    assert_eq!(
        fingerprint(&restored),
        expected,
        "{during} rows committed during the backup, {batches} batches in all"
    );
    restored.stop().unwrap();
}

/// `walferry-restore info --json`.
fn info_json(repo: &Repo, dir: &TestDir) -> serde_json::Value {
    let run = walferry(RESTORE, &["info", "--json"], &repo.env, dir.path());
    run.expect(0, &[]);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// Starts `walferry-archive backup --label fixed` and kills it (SIGKILL, the whole process
/// group: as root the child is `runuser`) once its first part is stored.
fn kill_backup_after_first_part(repo: &Repo, primary: &Cluster, dir: &TestDir) {
    let conninfo = primary.conninfo();
    let args = [
        "backup",
        "--conninfo",
        &conninfo,
        "--label",
        "fixed",
        "--part-size",
        "1",
        "--jobs",
        "1",
    ];
    let mut cmd = walferry_command(ARCHIVE, &args, &repo.env, dir.path());
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().expect("start walferry-archive backup");
    let group = child.id().to_string();
    let part_stored = || {
        repo.local_objects()
            .iter()
            .any(|o| o.starts_with("backups/fixed/") && o.ends_with(".zst"))
    };
    let deadline = Instant::now() + TIMEOUT;
    while !part_stored() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before a part appeared"
        );
        assert!(Instant::now() < deadline, "no part appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .status()
        .unwrap();
    assert!(killed.success(), "kill the backup's process group");
    child.wait().unwrap();
    // Nothing of the group is left to finish the backup behind our back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Command::new("pgrep")
        .args(["-g", &group])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "process group {group} lives on");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A backup killed half-way leaves parts but no manifest: `info` lists no backup and names it
/// as a problem, `restore` finds no usable backup and writes nothing. A new backup under
/// another label, and the same label again (its leftovers are removed first), both commit
/// and restore.
#[test]
fn backup_scenarios_interrupted_backup_is_invisible() {
    let dir = TestDir::new("bs-interrupted").unwrap();
    let repo = Repo::local(&dir);
    let primary = primary_with_rows(&dir, &repo, 1000);
    // About 60 MiB, so that the backup runs long enough to be killed half-way.
    primary
        .psql(
            "CREATE TABLE big AS SELECT i, repeat(md5(i::text), 8) AS v \
             FROM generate_series(1, 200000) i",
        )
        .unwrap();
    kill_backup_after_first_part(&repo, &primary, &dir);
    let leftovers: Vec<String> = repo
        .local_objects()
        .into_iter()
        .filter(|o| o.starts_with("backups/fixed/"))
        .collect();
    assert!(!leftovers.is_empty());
    assert!(
        !leftovers.iter().any(|o| o.ends_with("manifest.json")),
        "killed before its commit: {leftovers:?}"
    );

    // Not a backup: info lists none and names it.
    let info = info_json(&repo, &dir);
    assert_eq!(info["backups"].as_array().unwrap().len(), 0, "{info}");
    let problems = info["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| {
            let p = p.as_str().unwrap();
            p.contains("'fixed'") && p.contains("no manifest")
        }),
        "{info}"
    );
    let text = walferry(RESTORE, &["info"], &repo.env, dir.path());
    text.expect(0, &[]);
    assert!(text.stdout.contains("backups         0"), "{}", text.stdout);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("problem:") && l.contains("'fixed'")),
        "{}",
        text.stdout
    );
    let refused = dir.join("restored-none");
    restore(&repo, &refused, &[], dir.path()).expect(1, &["no usable backup"]);
    assert!(!refused.exists(), "a refused restore writes nothing");

    // Smaller backups from here on.
    primary.psql("DROP TABLE big").unwrap();
    insert_rows(&primary, 1001, 2000);
    let other = take_backup(&repo, &primary, dir.path(), &["--label", "other"]);
    assert_eq!(other, "other");

    // The same label again: the interrupted run's parts are removed, and it commits.
    let conninfo = primary.conninfo();
    let again = walferry(
        ARCHIVE,
        &[
            "backup",
            "--conninfo",
            &conninfo,
            "--label",
            "fixed",
            "--part-size",
            "1",
        ],
        &repo.env,
        dir.path(),
    );
    again.expect(0, &["an interrupted run of backup 'fixed'"]);
    let root = repo.local_root.as_ref().unwrap();
    let manifest = walferry_manifest::BackupManifest::from_json(
        &std::fs::read(root.join("backups/fixed/manifest.json")).unwrap(),
    )
    .unwrap();
    let mut stored: Vec<String> = repo
        .local_objects()
        .into_iter()
        .filter_map(|o| o.strip_prefix("backups/fixed/").map(str::to_owned))
        // Not objects: a local repository's temporary file of a put the kill cut short.
        .filter(|name| !name.starts_with('.'))
        .collect();
    let mut expected_objects: Vec<String> = manifest.parts.iter().map(|p| p.name.clone()).collect();
    expected_objects.push("manifest.json".into());
    stored.sort();
    expected_objects.sort();
    assert_eq!(
        stored, expected_objects,
        "only the new run's objects remain"
    );

    insert_rows(&primary, 2001, 3000);
    let expected = fingerprint(&primary);
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();
    let info = info_json(&repo, &dir);
    let mut labels: Vec<&str> = info["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    labels.sort();
    assert_eq!(labels, ["fixed", "other"], "{info}");
    assert!(info["problems"].as_array().unwrap().is_empty(), "{info}");

    for label in ["other", "fixed"] {
        let pgdata = dir.join(format!("restored-{label}"));
        restore(&repo, &pgdata, &["--backup", label], dir.path()).expect(0, &[]);
        let mut restored = start_restored(&pgdata, &restored_opts());
        assert_eq!(fingerprint(&restored), expected, "restored from {label}");
        restored.stop().unwrap();
    }
}
