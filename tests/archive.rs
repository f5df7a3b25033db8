//! `walferry-archive push`: duplicates, other clusters, bad input.

use walferry_testutil::dirs::TestDir;

use crate::util::*;

/// Archives a few segments and returns the cluster and the names of the archived segments.
fn archived_segments(dir: &TestDir, repo: &Repo) -> (walferry_testutil::pg::Cluster, Vec<String>) {
    let primary = start_cluster(dir, "primary", &archiving(repo));
    let segments = primary.write_segments(2).expect("write segments");
    primary
        .wait_archived(segments.last().unwrap(), TIMEOUT)
        .expect("archived");
    (primary, segments)
}

/// Fetches `name` from the repository into `dir/<sub>/<name>`.
fn fetch_copy(dir: &TestDir, repo: &Repo, name: &str, sub: &str) -> std::path::PathBuf {
    let target = dir.create_dir(sub).unwrap();
    let dest = target.join(name);
    let run = walferry(
        RESTORE,
        &["fetch", name, dest.to_str().unwrap()],
        &repo.env,
        dir.path(),
    );
    assert_eq!(run.code, 0, "fetch {name}: {}", run.stderr);
    dest
}

fn duplicate_pushes(repo: Repo, dir: TestDir) {
    let (_primary, segments) = archived_segments(&dir, &repo);
    let name = &segments[0];
    let copy = fetch_copy(&dir, &repo, name, "again");

    // Identical content: success, with a warning.
    let run = walferry(
        ARCHIVE,
        &["push", copy.to_str().unwrap()],
        &repo.env,
        dir.path(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "WAL file '{name}' already exists in the archive with the same content"
        )),
        "{}",
        run.stderr
    );

    // Different content under the same name: refused, nothing replaced.
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[8192 * 3 + 100] ^= 0xff;
    let other = dir.create_dir("different").unwrap().join(name);
    std::fs::write(&other, &bytes).unwrap();
    walferry_testutil::pg::chown_to_cluster_user(&other).unwrap();
    let run = walferry(
        ARCHIVE,
        &["push", other.to_str().unwrap()],
        &repo.env,
        dir.path(),
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    let line = run.stderr.trim();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(
        line.contains(&format!(
            "WAL file '{name}' already exists in the archive with different content"
        )),
        "{line}"
    );
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
    let pg_wal = dir.create_dir("fake_pg_wal").unwrap();
    let history = pg_wal.join("00000002.history");
    std::fs::write(&history, "1\t0/3000000\tno recovery target specified\n").unwrap();
    walferry_testutil::pg::chown_to_cluster_user(&history).unwrap();
    let run = walferry(
        ARCHIVE,
        &["push", history.to_str().unwrap()],
        &repo.env,
        dir.path(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = walferry(
        ARCHIVE,
        &["push", history.to_str().unwrap()],
        &repo.env,
        dir.path(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::fs::write(&history, "1\t0/4000000\tno recovery target specified\n").unwrap();
    let run = walferry(
        ARCHIVE,
        &["push", history.to_str().unwrap()],
        &repo.env,
        dir.path(),
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    let dest = dir.join("got.history");
    let run = walferry(
        RESTORE,
        &["fetch", "00000002.history", dest.to_str().unwrap()],
        &repo.env,
        dir.path(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "1\t0/3000000\tno recovery target specified\n"
    );
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
    let run = walferry(
        ARCHIVE,
        &["push", path.to_str().unwrap()],
        &repo.env,
        other.data_dir(),
    );
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("WAL file '{segment}' belongs to another cluster")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("does not match the repository's {sysid}")),
        "{}",
        run.stderr
    );
    assert_eq!(repo.local_objects(), before, "repository unchanged");
}

#[test]
fn a_file_that_is_not_wal_is_refused() {
    let dir = TestDir::new("not-wal").unwrap();
    let repo = Repo::local(&dir);
    let path = dir.join("postgresql.conf");
    std::fs::write(&path, "not wal").unwrap();
    let run = walferry(
        ARCHIVE,
        &["push", path.to_str().unwrap()],
        &repo.env,
        dir.path(),
    );
    assert_eq!(run.code, 8, "{}", run.stderr);
    assert!(
        run.stderr.contains("is not a WAL file PostgreSQL archives"),
        "{}",
        run.stderr
    );
    assert!(repo.local_objects().is_empty());
}
