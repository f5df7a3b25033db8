//! `walferry-restore verify`: a clean repository verifies; a deleted segment, a damaged
//! segment or backup part, and a missing history file are each found and named.
//!
//! One archiving cluster (and one restored, promoted cluster for timeline 2) serves every
//! check: each damage is done to a copy of the local repository, and the clean repository is
//! also mirrored to the S3 server and checked there.

use std::path::{Path, PathBuf};
use std::process::Command;

use walferry_manifest::BackupManifest;
use walferry_store::{
    ArchiveStore, CancellationToken, Location, ObjectKey, RetryConfig, Store, StoreConfig,
};
use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{Cluster, RecoveryOutcome};
use walferry_wal::{SegmentName, WalFileName};

use crate::util::*;

/// What `walferry-restore verify` printed and how it exited.
struct Verified {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Verified {
    /// Asserts the exit code and that stdout holds each of `texts`.
    fn expect(&self, code: i32, texts: &[&str]) {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        for text in texts {
            assert!(
                self.stdout.contains(text),
                "stdout lacks {text:?}:\n{}",
                self.stdout
            );
        }
    }
}

/// `walferry-restore verify --jobs 2` against the repository in `env`.
fn verify(env: &[(String, String)], cwd: &Path) -> Verified {
    let mut cmd = Command::new(RESTORE);
    cmd.args(["verify", "--jobs", "2"]).current_dir(cwd);
    for (key, _) in std::env::vars() {
        if key.starts_with("WALFERRY_") || key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run walferry-restore verify");
    Verified {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A copy of the repository at `root` in `dir/name`, and the environment naming it.
fn copy_repo(root: &Path, dir: &TestDir, name: &str) -> (PathBuf, Vec<(String, String)>) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let copy_root = dir.join(name);
    copy(root, &copy_root);
    let env = vec![(
        "WALFERRY_REPO".to_owned(),
        format!("file://{}", copy_root.display()),
    )];
    (copy_root, env)
}

/// Flips one byte in the middle of a stored object.
fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(path, &bytes).unwrap();
}

/// The key of segment `segno`'s name on the manifest's start timeline.
fn start_segment(manifest: &BackupManifest) -> String {
    let size = manifest.wal_segment_size;
    let name = SegmentName::new(
        manifest.start_timeline,
        manifest.start_lsn.segment_number(size),
        size,
    )
    .unwrap();
    walferry_manifest::layout::wal_key(&WalFileName::Segment(name)).to_string()
}

#[test]
fn verify_finds_missing_damaged_and_unreachable_objects() {
    let dir = TestDir::new("verify").unwrap();
    let repo = Repo::local(&dir);
    let root = repo.local_root.clone().unwrap();
    let mut primary = primary_with_rows(&dir, &repo, 1000);
    // For the promotion later: a plain base backup, older than walferry's.
    primary.base_backup(&dir.join("pgbackup")).unwrap();
    insert_rows(&primary, 1001, 2000);
    let conninfo = primary.conninfo();
    walferry(
        ARCHIVE,
        &[
            "backup",
            "--conninfo",
            &conninfo,
            "--label",
            "b1",
            "--part-size",
            "1",
        ],
        &repo.env,
        dir.path(),
    )
    .expect(0, &[]);
    insert_rows(&primary, 2001, 3000);
    primary.switch_wal().unwrap();
    insert_rows(&primary, 3001, 4000);
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();
    primary.stop().unwrap();

    // Clean.
    let clean = verify(&repo.env, dir.path());
    clean.expect(0, &["verified ", ": 0 problems"]);
    assert!(!clean.stdout.contains("problem:"), "{}", clean.stdout);

    let manifest =
        BackupManifest::from_json(&std::fs::read(root.join("backups/b1/manifest.json")).unwrap())
            .unwrap();

    // (a) The backup's first segment deleted.
    let (copy, env) = copy_repo(&root, &dir, "repo-missing");
    let missing = start_segment(&manifest);
    std::fs::remove_file(copy.join(&missing)).unwrap();
    verify(&env, dir.path()).expect(
        6,
        &[&format!(
            "problem: {missing} is missing: backup b1 cannot reach consistency"
        )],
    );

    // (b) A byte flipped in a backup part and in the last segment.
    let (copy, env) = copy_repo(&root, &dir, "repo-corrupt");
    let part = manifest
        .parts
        .iter()
        .max_by_key(|p| p.compressed_bytes)
        .unwrap();
    let part_key = format!("backups/b1/{}", part.name);
    flip_byte(&copy.join(&part_key));
    let segment = local_segment_object(&repo, &last)
        .strip_prefix(&root)
        .unwrap()
        .display()
        .to_string();
    flip_byte(&copy.join(&segment));
    let run = verify(&env, dir.path());
    run.expect(
        6,
        &[
            &format!("problem: {part_key} is corrupt"),
            "backup b1 cannot be restored",
            &format!("problem: {segment} is corrupt"),
            &format!("problem: {segment} failed verification (see above): backup b1 cannot reach the end of timeline 1"),
        ],
    );
    assert!(run.stderr.contains("problems"), "{}", run.stderr);

    // The clean repository, mirrored to the S3 server: clean there too; then a segment
    // deleted there is found.
    let s3 = Repo::s3(&dir);
    mirror_to_s3(&root, &s3);
    verify(&s3.env, dir.path()).expect(0, &[": 0 problems"]);
    delete_from_s3(&s3, &missing);
    verify(&s3.env, dir.path()).expect(
        6,
        &[&format!(
            "problem: {missing} is missing: backup b1 cannot reach consistency"
        )],
    );

    // (c) Timeline 2: the plain backup recovered and promoted, archiving to the repository.
    let mut restored = Cluster::from_existing(&dir.join("pgbackup"), &archiving(&repo)).unwrap();
    restored
        .set_recovery(
            "walferry-restore fetch %f %p",
            &[
                ("recovery_target", "immediate"),
                ("recovery_target_action", "promote"),
            ],
            false,
        )
        .unwrap();
    restored.start_no_wait().unwrap();
    match restored.wait_promoted(TIMEOUT).unwrap() {
        RecoveryOutcome::Promoted => {}
        RecoveryOutcome::Failed { log_tail } => panic!("recovery failed:\n{log_tail}"),
    }
    assert_eq!(restored.timeline().unwrap(), 2);
    insert_rows(&restored, 5001, 6000);
    let last2 = restored.switch_wal().unwrap();
    restored.wait_archived(&last2, TIMEOUT).unwrap();
    restored.stop().unwrap();
    assert!(root.join("wal/00000002.history").is_file());
    verify(&repo.env, dir.path()).expect(0, &[": 0 problems"]);

    std::fs::remove_file(root.join("wal/00000002.history")).unwrap();
    verify(&repo.env, dir.path()).expect(
        6,
        &[
            "problem: wal/00000002.history is missing (missing history file): timeline 2 has archived WAL",
            "HINT: copy pg_wal/00000002.history",
        ],
    );
}

/// The S3 repository's store, from the configuration file `Repo::s3` wrote.
fn s3_store(s3: &Repo, runtime: &tokio::runtime::Runtime) -> Store {
    let (_, path) = s3.env.iter().find(|(k, _)| k == "WALFERRY_CONFIG").unwrap();
    let file: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let server = s3.s3.as_ref().unwrap();
    let url = file["repo"].as_str().unwrap();
    let mut config = StoreConfig::new(Location::parse(url).unwrap());
    config.retry = RetryConfig::RESTORE;
    config.s3.endpoint = Some(server.endpoint());
    config.s3.region = Some(server.region().to_owned());
    config.s3.access_key_id = Some(server.access_key().to_owned());
    config.s3.secret_access_key = Some(server.secret_key().to_owned());
    runtime.block_on(Store::open(&config)).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Copies every object of the local repository at `root` into the S3 repository.
fn mirror_to_s3(root: &Path, s3: &Repo) {
    let runtime = runtime();
    let store = s3_store(s3, &runtime);
    let local = runtime
        .block_on(Store::open(&StoreConfig::new(
            Location::parse(&format!("file://{}", root.display())).unwrap(),
        )))
        .unwrap();
    let cancel = CancellationToken::new();
    runtime.block_on(async {
        for meta in local.list("", &cancel).await.unwrap() {
            let body = local.get(&meta.key, None, &cancel).await.unwrap().body;
            store
                .put(&meta.key, body, walferry_store::PutMode::Create, &cancel)
                .await
                .unwrap();
        }
    });
}

fn delete_from_s3(s3: &Repo, key: &str) {
    let runtime = runtime();
    let store = s3_store(s3, &runtime);
    let key = ObjectKey::new(key).unwrap();
    runtime
        .block_on(store.delete(&key, &CancellationToken::new()))
        .unwrap();
}
