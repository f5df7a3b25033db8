//! `walferry-archive push`: duplicates, other clusters, bad input.

use std::path::PathBuf;

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{Cluster, chown_to_cluster_user};

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
