//! `walferry-archive push`: duplicates, other clusters, bad input.

use std::path::PathBuf;

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{Cluster, ClusterOptions, chown_to_cluster_user};

use crate::util::*;

/// Archives a few segments and returns the cluster and the names of the archived segments.
fn archived_segments(dir: &TestDir, repo: &Repo) -> (Cluster, Vec<String>) {
    let primary = start_cluster(dir, "primary", &archiving(repo));
    let segments = primary.write_segments(2).expect("write segments");
    primary
        .wait_archived(segments.last().unwrap(), TIMEOUT)
        .expect("archived");
    (primary, segments)
}

/// Fetches `name` from the repository into `dir/<sub>/<name>`.
fn fetch_copy(dir: &TestDir, repo: &Repo, name: &str, sub: &str) -> PathBuf {
    let dest = dir.create_dir(sub).unwrap().join(name);
    fetch(name, dest.to_str().unwrap(), &repo.env, dir.path()).expect(0, &[]);
    dest
}

/// Writes `content` to `dir/<sub>/<name>`, owned by the cluster user.
fn write_file(dir: &TestDir, sub: &str, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.create_dir(sub).unwrap().join(name);
    std::fs::write(&path, content).unwrap();
    chown_to_cluster_user(&path).unwrap();
    path
}

fn duplicate_pushes(repo: Repo, dir: TestDir) {
    let (_primary, segments) = archived_segments(&dir, &repo);
    let name = &segments[0];
    let copy = fetch_copy(&dir, &repo, name, "again");

    // Identical content: success, with a warning.
    push(&copy, &repo.env, dir.path()).expect(
        0,
        &[&format!(
            "WAL file '{name}' already exists in the archive with the same content"
        )],
    );

    // Different content under the same name: refused in one line, nothing replaced.
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[8192 * 3 + 100] ^= 0xff;
    let other = write_file(&dir, "different", name, &bytes);
    let run = push(&other, &repo.env, dir.path());
    run.expect(
        3,
        &[&format!(
            "WAL file '{name}' already exists in the archive with different content"
        )],
    );
    // One error line (a retried request may add warnings before it).
    let errors = run
        .stderr
        .lines()
        .filter(|l| l.contains(": ERROR: "))
        .count();
    assert_eq!(errors, 1, "one error line: {}", run.stderr);
    let again = fetch_copy(&dir, &repo, name, "after");
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&copy).unwrap(),
        "archived copy unchanged"
    );
}

#[test]
fn duplicate_push_local() {
    let dir = TestDir::new("dup-local").unwrap();
    duplicate_pushes(Repo::local(&dir), dir);
}

#[test]
fn duplicate_push_s3() {
    let dir = TestDir::new("dup-s3").unwrap();
    duplicate_pushes(Repo::s3(&dir), dir);
}

/// History files are never overwritten: PostgreSQL picks new timeline IDs by probing the
/// archive for them.
#[test]
fn history_files_are_never_replaced() {
    let dir = TestDir::new("history").unwrap();
    let repo = Repo::local(&dir);
    let (_primary, _) = archived_segments(&dir, &repo);
    let first = "1\t0/3000000\tno recovery target specified\n";
    let history = write_file(&dir, "fake_pg_wal", "00000002.history", first.as_bytes());
    push(&history, &repo.env, dir.path()).expect(0, &[]);
    push(&history, &repo.env, dir.path()).expect(0, &["already exists"]);
    std::fs::write(&history, "1\t0/4000000\tno recovery target specified\n").unwrap();
    push(&history, &repo.env, dir.path()).expect(3, &["different content"]);
    let dest = dir.join("got.history");
    fetch(
        "00000002.history",
        dest.to_str().unwrap(),
        &repo.env,
        dir.path(),
    )
    .expect(0, &[]);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), first);
}

#[test]
fn wal_from_another_cluster_is_refused() {
    let dir = TestDir::new("other-cluster").unwrap();
    let repo = Repo::local(&dir);
    let (primary, _) = archived_segments(&dir, &repo);
    let descriptor =
        std::fs::read_to_string(repo.local_root.as_ref().unwrap().join("walferry.json")).unwrap();
    let sysid = primary.system_identifier().unwrap();
    assert!(
        descriptor.contains(&format!("\"system_identifier\": \"{sysid}\"")),
        "{descriptor}"
    );

    // A second cluster, not archiving; one of its completed segments is pushed by hand.
    let other = start_cluster(&dir, "other", &Default::default());
    let segment = other.write_segments(1).unwrap().remove(0);
    let path = other.data_dir().join("pg_wal").join(&segment);
    let before = repo.local_objects();
    push(&path, &repo.env, other.data_dir()).expect(
        4,
        &[
            &format!("WAL file '{segment}' belongs to another cluster"),
            &format!("does not match the repository's {sysid}"),
        ],
    );
    assert_eq!(repo.local_objects(), before, "repository unchanged");
}

#[test]
fn a_file_that_is_not_wal_is_refused() {
    let dir = TestDir::new("not-wal").unwrap();
    let repo = Repo::local(&dir);
    let path = write_file(&dir, "conf", "postgresql.conf", b"not wal");
    push(&path, &repo.env, dir.path()).expect(8, &["is not a WAL file PostgreSQL archives"]);
    assert!(repo.local_objects().is_empty());
}

/// A primary whose archiver is configured but has no command yet: completed segments pile up
/// as `.ready`. Returns it with the ready files, in the archiver's order, once there are at
/// least `n` segments among them.
fn primary_with_backlog(dir: &TestDir, repo: &Repo, n: usize) -> (Cluster, Vec<String>) {
    let opts = ClusterOptions {
        archive_command: Some(String::new()),
        ..archiving(repo)
    };
    let primary = start_cluster(dir, "primary", &opts);
    primary.write_segments(n).expect("write segments");
    let ready = ready_files(&primary);
    assert!(ready.len() >= n, "{ready:?}");
    (primary, ready)
}

/// The files marked ready in the cluster's `pg_wal`, history files first, then by name.
fn ready_files(cluster: &Cluster) -> Vec<String> {
    walferry_testutil::pg::ready_files(cluster.data_dir())
}

/// `push` as PostgreSQL runs it: `pg_wal/<name>`, from the data directory, with debug logs.
fn push_as_archiver(cluster: &Cluster, name: &str, env: &[(String, String)]) -> Run {
    let mut env = env.to_vec();
    env.push(("WALFERRY_LOG".into(), "debug".into()));
    push(
        &PathBuf::from("pg_wal").join(name),
        &env,
        cluster.data_dir(),
    )
}

/// Asserts that every file in `names` is in the repository with the content the cluster's
/// `pg_wal` has.
fn assert_archived_intact(dir: &TestDir, repo: &Repo, cluster: &Cluster, names: &[String]) {
    for name in names {
        let got = fetch_copy(dir, repo, name, &format!("check-{name}"));
        assert_eq!(
            std::fs::read(&got).unwrap(),
            std::fs::read(cluster.data_dir().join("pg_wal").join(name)).unwrap(),
            "{name}"
        );
    }
}

/// Waits until every file in `names` is recorded as archived in the cluster's push ledger.
fn wait_recorded(cluster: &Cluster, names: &[String]) {
    let ledger = cluster.data_dir().join("pg_wal/walferry-push");
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !names
        .iter()
        .all(|n| ledger.join(format!("{n}.done")).is_file())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not all of {names:?} were recorded"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A push uploads `%p` and starts a worker that uploads every other ready file; PostgreSQL's
/// calls for those then answer from the ledger, without a request; once the archiver runs, it
/// catches up with all of it, nothing uploaded twice.
#[test]
fn push_uploads_ready_files_ahead() {
    let dir = TestDir::new("push-ahead").unwrap();
    let repo = Repo::s3(&dir);
    let (primary, ready) = primary_with_backlog(&dir, &repo, 8);

    push_as_archiver(&primary, &ready[0], &repo.env).expect(0, &[]);
    wait_recorded(&primary, &ready);
    assert_archived_intact(&dir, &repo, &primary, &ready);

    // PostgreSQL's calls for the files pushed ahead: answered from the ledger.
    for name in &ready[1..] {
        let run = push_as_archiver(&primary, name, &repo.env);
        run.expect(0, &["archived earlier"]);
        assert!(!run.stderr.contains("already exists"), "{}", run.stderr);
    }

    // A file changed since it was recorded counts as not archived: it is compared again (by
    // this push, or by the worker if it is still running and gets there first).
    let third = primary.data_dir().join("pg_wal").join(&ready[3]);
    let bytes = std::fs::read(&third).unwrap();
    std::fs::write(&third, &bytes).unwrap();
    let run = push_as_archiver(&primary, &ready[3], &repo.env);
    run.expect(0, &[]);
    let worker_log =
        std::fs::read_to_string(primary.data_dir().join("pg_wal/walferry-push/worker.log"))
            .unwrap_or_default();
    assert!(
        run.stderr.contains("already exists in the archive")
            || worker_log.contains("already exists in the archive"),
        "{}\n{worker_log}",
        run.stderr
    );

    // The archiver takes over and catches up; nothing is uploaded twice.
    primary
        .psql("ALTER SYSTEM SET archive_command = 'walferry-archive push %p'")
        .unwrap();
    primary.psql("SELECT pg_reload_conf()").unwrap();
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).expect("archived");
    let mut all = ready.clone();
    all.push(last);
    assert_archived_intact(&dir, &repo, &primary, &all);
    // Only the changed file was compared again.
    let log = primary.log_contents()
        + &std::fs::read_to_string(primary.data_dir().join("pg_wal/walferry-push/worker.log"))
            .unwrap_or_default()
        + &run.stderr;
    assert_eq!(log.matches("already exists").count(), 1, "{log}");
}

/// `--jobs 1`: a push uploads its own file and starts no worker.
#[test]
fn push_with_one_job_uploads_its_own_file_only() {
    let dir = TestDir::new("push-ahead-batch").unwrap();
    let repo = Repo::local(&dir);
    let (primary, ready) = primary_with_backlog(&dir, &repo, 4);
    let mut env = repo.env.clone();
    env.push(("WALFERRY_PUSH_JOBS".into(), "1".into()));
    push_as_archiver(&primary, &ready[0], &env).expect(0, &[]);
    let ledger = primary.data_dir().join("pg_wal/walferry-push");
    assert!(ledger.join(format!("{}.done", ready[0])).is_file());
    assert!(
        !ledger.join(format!("{}.done", ready[1])).exists(),
        "--jobs 1 uploads only its own file"
    );
    assert_archived_intact(&dir, &repo, &primary, &ready[..1]);
    assert!(!ledger.join("worker.log").exists(), "no worker was started");
}

/// Pushes running at once share the backlog: each file is uploaded once (a second upload would
/// find the object and say so), every one is acknowledged only once durable.
#[test]
fn concurrent_pushes_upload_each_file_once() {
    let dir = TestDir::new("push-concurrent").unwrap();
    let repo = Repo::local(&dir);
    let (primary, ready) = primary_with_backlog(&dir, &repo, 12);
    let env = server_env(&repo.env);

    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = ready[..4]
            .iter()
            .map(|name| s.spawn(|| push_as_archiver(&primary, name, &env)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in &runs {
        run.expect(0, &[]);
        assert!(!run.stderr.contains("already exists"), "{}", run.stderr);
    }
    // Then PostgreSQL's calls for everything, in order (the worker may still be at work).
    for name in &ready {
        let run = push_as_archiver(&primary, name, &env);
        run.expect(0, &[]);
        assert!(!run.stderr.contains("already exists"), "{}", run.stderr);
    }
    assert_archived_intact(&dir, &repo, &primary, &ready);
}
