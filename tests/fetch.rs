//! `walferry-restore fetch`: missing files, corrupt objects, unreachable storage, standby mode.

use std::time::Duration;

use walferry_testutil::dirs::TestDir;
use walferry_testutil::s3::{NetworkProfile, S3Server, S3ServerConfig};

use crate::util::*;

fn archive_one(dir: &TestDir, repo: &Repo) -> String {
    let primary = start_cluster(dir, "primary", &archiving(repo));
    let segment = primary.write_segments(1).unwrap().remove(0);
    primary.wait_archived(&segment, TIMEOUT).expect("archived");
    segment
}

/// A directory standing in for a data directory, where fetch runs (PostgreSQL runs
/// restore_command in the data directory).
fn pgdata(dir: &TestDir) -> std::path::PathBuf {
    let p = dir.create_dir("pgdata/pg_wal").unwrap();
    walferry_testutil::pg::chown_to_cluster_user(&dir.join("pgdata")).unwrap();
    p.parent().unwrap().to_path_buf()
}

#[test]
fn missing_file_is_not_found() {
    let dir = TestDir::new("fetch-missing").unwrap();
    let repo = Repo::local(&dir);
    archive_one(&dir, &repo);
    let data = pgdata(&dir);
    for name in ["0000000100000000000000F0", "00000002.history"] {
        let run = fetch(name, "pg_wal/RECOVERYXLOG", &repo.env, &data);
        run.expect(1, &[]);
        assert!(run.stderr.is_empty(), "not found is quiet: {}", run.stderr);
        assert!(!data.join("pg_wal/RECOVERYXLOG").exists());
    }
}

#[test]
fn corrupt_or_truncated_object_is_refused() {
    let dir = TestDir::new("fetch-corrupt").unwrap();
    let repo = Repo::local(&dir);
    let segment = archive_one(&dir, &repo);
    let data = pgdata(&dir);
    let object = local_segment_object(&repo, &segment);
    let good = std::fs::read(&object).unwrap();

    let mut flipped = good.clone();
    let at = flipped.len() / 3;
    flipped[at] ^= 0x01;
    let truncated = good[..good.len() - 7].to_vec();
    for (what, bytes) in [("flipped", flipped), ("truncated", truncated)] {
        std::fs::write(&object, &bytes).unwrap();
        fetch(&segment, "pg_wal/RECOVERYXLOG", &repo.env, &data).expect(206, &["is corrupt"]);
        let left: Vec<_> = std::fs::read_dir(data.join("pg_wal")).unwrap().collect();
        assert!(
            left.is_empty(),
            "{what}: nothing placed at %p, no temporary left: {left:?}"
        );
    }
    std::fs::write(&object, &good).unwrap();
    fetch(&segment, "pg_wal/RECOVERYXLOG", &repo.env, &data).expect(0, &[]);
}

#[test]
fn repository_without_descriptor_is_a_hard_failure() {
    let dir = TestDir::new("fetch-nodesc").unwrap();
    let repo = Repo::local(&dir);
    let data = pgdata(&dir);
    fetch(
        "000000010000000000000001",
        "pg_wal/RECOVERYXLOG",
        &repo.env,
        &data,
    )
    .expect(206, &["has no descriptor"]);
}

/// The S3 server goes away while a fetch is downloading: after its retries, fetch fails hard
/// (above 125) so recovery stops; in standby mode it answers "not found" after logging.
#[test]
fn s3_server_stopped_during_fetch() {
    let dir = TestDir::new("fetch-s3-down").unwrap();
    let mut repo = Repo::s3(&dir);
    let segment = archive_one(&dir, &repo);
    let data = pgdata(&dir);

    // Serve the same data slowly, so the server can be stopped in the middle of a download.
    repo.s3.take().unwrap().stop();
    let server = std::sync::Arc::new(std::sync::Mutex::new(
        S3Server::start(S3ServerConfig {
            root: dir.join("s3"),
            port: 0,
            access_key: "walferry-e2e".into(),
            secret_key: "walferry-e2e-secret".into(),
            region: "us-east-1".into(),
            network: NetworkProfile {
                first_byte_delay: Duration::from_millis(5),
                bandwidth_bytes_per_sec: Some(64 * 1024),
            },
        })
        .unwrap(),
    ));
    let config = dir.join("walferry.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let old_endpoint = text
        .lines()
        .find(|l| l.starts_with("endpoint"))
        .unwrap()
        .to_owned();
    let new_endpoint = format!("endpoint = \"{}\"", server.lock().unwrap().endpoint());
    std::fs::write(&config, text.replace(&old_endpoint, &new_endpoint)).unwrap();
    let env = repo.env_with_short_retries();

    for standby in [false, true] {
        if standby {
            std::fs::write(data.join("standby.signal"), b"").unwrap();
        }
        let stopper = {
            let server = std::sync::Arc::clone(&server);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(400));
                server.lock().unwrap().stop();
            })
        };
        let started = std::time::Instant::now();
        let run = fetch(&segment, "pg_wal/RECOVERYXLOG", &env, &data);
        stopper.join().unwrap();
        assert!(
            started.elapsed() > Duration::from_millis(400),
            "the fetch outlived the server"
        );
        assert!(
            !data.join("pg_wal/RECOVERYXLOG").exists(),
            "nothing placed at %p"
        );
        if standby {
            run.expect(1, &["standby.signal is present", "gave up after"]);
        } else {
            run.expect(205, &["gave up after"]);
        }
        server.lock().unwrap().restart().unwrap();
    }
}

/// Any argument error exits above 125: PostgreSQL may be the caller, and 1..125 would read
/// as "not found".
#[test]
fn argument_errors_stop_recovery() {
    let dir = TestDir::new("fetch-args").unwrap();
    let repo = Repo::local(&dir);
    let cases: &[&[&str]] = &[
        &["fetch", "000000010000000000000001"],
        &[
            "--repo",
            "file:///nowhere",
            "fetch",
            "000000010000000000000001",
        ],
        &["000000010000000000000001", "pg_wal/RECOVERYXLOG"],
        &[
            "fetch",
            "000000010000000000000001",
            "pg_wal/RECOVERYXLOG",
            "--no-such-flag",
        ],
    ];
    for args in cases {
        let run = walferry(RESTORE, args, &repo.env, dir.path());
        run.expect(202, &["walferry-restore: ERROR: ", "HINT: "]);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
}

/// In standby mode a hard failure for a segment answers "not found"; for a history file it
/// does not: at promotion PostgreSQL picks its new timeline ID by asking for history files.
#[test]
fn standby_masks_segments_but_not_history_files() {
    let dir = TestDir::new("fetch-standby").unwrap();
    let repo = Repo::local(&dir);
    let data = pgdata(&dir);
    std::fs::write(data.join("standby.signal"), b"").unwrap();
    fetch(
        "000000010000000000000001",
        "pg_wal/RECOVERYXLOG",
        &repo.env,
        &data,
    )
    .expect(1, &["has no descriptor", "standby.signal is present"]);
    fetch(
        "00000002.history",
        "pg_wal/RECOVERYHISTORY",
        &repo.env,
        &data,
    )
    .expect(206, &["has no descriptor"]);
}

/// A data directory of another cluster is refused, even for a file name both clusters have.
#[test]
fn repository_of_another_cluster_is_refused() {
    let dir = TestDir::new("fetch-foreign").unwrap();
    let repo = Repo::local(&dir);
    let segment = archive_one(&dir, &repo);
    let data = pgdata(&dir);
    std::fs::create_dir_all(data.join("global")).unwrap();
    let mut control = 12_345u64.to_le_bytes().to_vec();
    control.resize(8192, 0);
    std::fs::write(data.join("global/pg_control"), &control).unwrap();
    walferry_testutil::pg::chown_to_cluster_user(&data).unwrap();
    let root = repo.local_root.clone().unwrap();
    let (repo_before, data_before) = (snapshot(&root), snapshot(&data));
    fetch(&segment, "pg_wal/RECOVERYXLOG", &repo.env, &data).expect(
        204,
        &["belongs to another cluster than this data directory: system identifier 12345"],
    );
    assert!(!data.join("pg_wal/RECOVERYXLOG").exists());
    assert_eq!(snapshot(&root), repo_before, "repository unchanged");
    assert_eq!(snapshot(&data), data_before, "data directory unchanged");
}
