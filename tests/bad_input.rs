//! Bad input: each gets one error line that names the object and says what to do, its exit
//! code from the documented table, and leaves the repository and the data directory as they
//! were.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{Cluster, ClusterOptions, chown_to_cluster_user};

use crate::util::*;

/// Every file under `root` with a checksum of its content (missing root: empty).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, u32> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, u32>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.insert(
                    path.strip_prefix(root).unwrap().to_owned(),
                    crc32fast::hash(&bytes),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts one error line, the exit code, and the texts in it.
fn expect_one_error(run: &Run, code: i32, texts: &[&str]) {
    run.expect(code, texts);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(": ERROR: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {}", run.stderr);
    assert!(errors[0].contains("HINT: "), "a hint: {}", errors[0]);
    eprintln!("exit {code}: {}", errors[0]);
}

/// Runs `push` of `path` (from `cwd`) and asserts the error and that neither the repository
/// nor the data directory changed.
fn push_refused(
    repo_root: &Path,
    pgdata: &Path,
    path: &Path,
    env: &[(String, String)],
    cwd: &Path,
    code: i32,
    texts: &[&str],
) {
    let (repo_before, data_before) = (snapshot(repo_root), snapshot(pgdata));
    let run = push(path, env, cwd);
    expect_one_error(&run, code, texts);
    assert_eq!(snapshot(repo_root), repo_before, "repository unchanged");
    assert_eq!(snapshot(pgdata), data_before, "data directory unchanged");
}

/// A stopped cluster (its data directory holds still) whose first two segments were pushed
/// into `repo` by hand, and a third segment, ready for archiving and not pushed.
fn archived(dir: &TestDir, repo: &Repo) -> (Cluster, String) {
    let mut primary = start_cluster(dir, "primary", &paused_archiving());
    let segments = primary.write_segments(3).unwrap();
    primary.stop().unwrap();
    let mut env = repo.env.clone();
    env.push(("WALFERRY_PUSH_JOBS".into(), "1".into()));
    for name in &segments[..2] {
        push(
            &PathBuf::from("pg_wal").join(name),
            &env,
            primary.data_dir(),
        )
        .expect(0, &[]);
    }
    (primary, segments[2].clone())
}

/// Archiving on, no command: completed segments stay, marked ready.
fn paused_archiving() -> ClusterOptions {
    ClusterOptions {
        archive_command: Some(String::new()),
        ..ClusterOptions::default()
    }
}

/// The same cluster after `pg_resetwal --wal-segsize`: its new segments are not the size the
/// repository records.
#[test]
fn wal_of_another_segment_size_is_refused() {
    let dir = TestDir::new("bad-segsize").unwrap();
    let repo = Repo::local(&dir);
    let (mut primary, _) = archived(&dir, &repo);
    let mut reset = primary.command("pg_resetwal");
    reset
        .args(["--wal-segsize=1", "-D"])
        .arg(primary.data_dir());
    let out = reset.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    primary.start().unwrap();
    let segment = primary.write_segments(1).unwrap().remove(0);
    primary.stop().unwrap();
    push_refused(
        repo.local_root.as_ref().unwrap(),
        primary.data_dir(),
        &PathBuf::from("pg_wal").join(&segment),
        &repo.env,
        primary.data_dir(),
        4,
        &[
            &format!("WAL file '{segment}' belongs to another cluster"),
            "segment size",
        ],
    );
}

#[test]
fn a_malformed_history_file_is_refused() {
    let dir = TestDir::new("bad-history").unwrap();
    let repo = Repo::local(&dir);
    let (primary, _) = archived(&dir, &repo);
    let path = primary.data_dir().join("pg_wal/00000002.history");
    std::fs::write(&path, "1\tnot-an-lsn\tno recovery target specified\n").unwrap();
    chown_to_cluster_user(&path).unwrap();
    push_refused(
        repo.local_root.as_ref().unwrap(),
        primary.data_dir(),
        Path::new("pg_wal/00000002.history"),
        &repo.env,
        primary.data_dir(),
        8,
        &["WAL file '00000002.history' is not valid"],
    );
}

#[test]
fn paths_postgresql_does_not_pass_are_refused() {
    let dir = TestDir::new("bad-path").unwrap();
    let repo = Repo::local(&dir);
    let (primary, _) = archived(&dir, &repo);
    let root = repo.local_root.clone().unwrap();
    // A segment name that is not there, and a directory.
    push_refused(
        &root,
        primary.data_dir(),
        Path::new("pg_wal/0000000100000000000000FF"),
        &repo.env,
        primary.data_dir(),
        7,
        &["'pg_wal/0000000100000000000000FF'"],
    );
    push_refused(
        &root,
        primary.data_dir(),
        Path::new("pg_wal/archive_status"),
        &repo.env,
        primary.data_dir(),
        8,
        &["'pg_wal/archive_status' is not a WAL file PostgreSQL archives"],
    );
}

#[test]
fn s3_credentials_and_buckets_that_do_not_work() {
    let dir = TestDir::new("bad-s3").unwrap();
    let repo = Repo::s3(&dir);
    let (primary, segment) = archived(&dir, &repo);
    let s3_root = repo.s3.as_ref().unwrap().root().to_owned();
    let config = dir.join("walferry.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    let path = PathBuf::from("pg_wal").join(&segment);

    let bad_secret = good.replace("walferry-e2e-secret", "wrong-secret");
    let missing_bucket = good.replace("s3://walferry/", "s3://no-such-bucket/");
    for (what, text, expected) in [
        (
            "wrong secret",
            &bad_secret,
            &["SignatureDoesNotMatch", "credentials"][..],
        ),
        (
            "missing bucket",
            &missing_bucket,
            &["no-such-bucket", "does not exist"][..],
        ),
    ] {
        let bad = dir.join(format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(&bad, text).unwrap();
        chown_to_cluster_user(&bad).unwrap();
        let env = vec![
            ("WALFERRY_CONFIG".to_owned(), bad.display().to_string()),
            ("WALFERRY_RETRY_BUDGET".to_owned(), "2".to_owned()),
        ];
        push_refused(
            &s3_root,
            primary.data_dir(),
            &path,
            &env,
            primary.data_dir(),
            5,
            expected,
        );
        let fetch_run = fetch(&segment, "RECOVERYXLOG", &env, dir.path());
        expect_one_error(&fetch_run, 205, expected);
    }
}

#[test]
fn a_read_only_local_repository_is_refused() {
    let dir = TestDir::new("bad-readonly").unwrap();
    let repo = Repo::local(&dir);
    let (primary, segment) = archived(&dir, &repo);
    let root = repo.local_root.clone().unwrap();
    let status = std::process::Command::new("chmod")
        .args(["-R", "a-w"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    push_refused(
        &root,
        primary.data_dir(),
        &PathBuf::from("pg_wal").join(&segment),
        &repo.env,
        primary.data_dir(),
        5,
        &["permission denied", &root.display().to_string()],
    );
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&root)
        .status();
}
