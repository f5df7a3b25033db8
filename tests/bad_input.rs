//! Bad input: each gets one error line that names the object and says what to do, its exit
//! code from the documented table, and leaves the repository and the data directory as they
//! were.
//!
//! Here: WAL of another segment size, a malformed history file, paths PostgreSQL does not
//! pass, rejected credentials and a missing bucket (push and fetch), a read-only and a full
//! local repository, a corrupt or truncated object met by push, a full WAL directory (where
//! the prefetch spool lives) met by fetch; names PostgreSQL never passes, a corrupt or
//! truncated object and a repository without a descriptor met by fetch, and WAL of another
//! cluster met by push. Elsewhere: a file that is not WAL (`archive.rs`), `%f`/`%p` argument
//! errors and a data directory of another cluster (`fetch.rs`).

use std::path::{Path, PathBuf};

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{Cluster, ClusterOptions, chown_to_cluster_user};

use crate::util::*;

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

/// A local repository on a filesystem with no room for the segment: a tmpfs of one page
/// mounted over the repository in a private mount namespace (`unshare`), holding the
/// descriptor.
#[test]
fn a_full_local_repository_is_refused() {
    let dir = TestDir::new("bad-full").unwrap();
    let repo = Repo::local(&dir);
    let (primary, segment) = archived(&dir, &repo);
    let root = repo.local_root.clone().unwrap();
    let descriptor = dir.join("walferry.json");
    std::fs::copy(root.join("walferry.json"), &descriptor).unwrap();
    let (repo_before, data_before) = (snapshot(&root), snapshot(primary.data_dir()));

    let segment_path = PathBuf::from("pg_wal").join(&segment);
    let (run, left) = on_full_tmpfs(
        &root,
        "cp \"$DESCRIPTOR\" \"$TMPFS/walferry.json\" && chmod 0666 \"$TMPFS/walferry.json\"",
        &[("DESCRIPTOR", descriptor.as_os_str())],
        ARCHIVE,
        &["push".as_ref(), segment_path.as_os_str()],
        &repo.env,
        primary.data_dir(),
    );
    expect_one_error(&run, 5, &["no space left", &segment]);
    // Inside, only the descriptor: the partial upload was removed.
    assert_eq!(
        left,
        [root.join("walferry.json").display().to_string()],
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(&root), repo_before, "repository unchanged");
    assert_eq!(
        snapshot(primary.data_dir()),
        data_before,
        "data directory unchanged"
    );
}

/// The key of an archived segment's object in a local repository, and the segment's name.
fn archived_segment(repo: &Repo) -> (String, String) {
    let object = repo
        .local_objects()
        .into_iter()
        .find(|o| o.starts_with("wal/"))
        .expect("an archived segment");
    let name = Path::new(&object)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    (object, name)
}

/// `object` damaged two ways: one bit flipped in the middle, and cut short.
fn damaged(object: &[u8]) -> [Vec<u8>; 2] {
    let mut flipped = object.to_vec();
    flipped[object.len() / 2] ^= 0x10;
    [flipped, object[..object.len() - 5].to_vec()]
}

/// A push of a file whose object in the repository is damaged: the comparison finds it
/// corrupt, says so, and replaces nothing.
#[test]
fn a_corrupt_or_truncated_object_is_reported_not_replaced() {
    let dir = TestDir::new("bad-corrupt").unwrap();
    let repo = Repo::local(&dir);
    let (primary, _) = archived(&dir, &repo);
    let root = repo.local_root.clone().unwrap();
    let (object, name) = archived_segment(&repo);
    // The same file outside pg_wal: no record of it, so the push compares.
    let copy = dir.create_dir("elsewhere").unwrap().join(&name);
    std::fs::copy(primary.data_dir().join("pg_wal").join(&name), &copy).unwrap();
    chown_to_cluster_user(&copy).unwrap();
    let good = std::fs::read(root.join(&object)).unwrap();
    let [flipped, truncated] = damaged(&good);
    for (what, bytes) in [("flipped", flipped), ("truncated", truncated)] {
        std::fs::write(root.join(&object), &bytes).unwrap();
        push_refused(
            &root,
            &dir.join("elsewhere"),
            &copy,
            &repo.env,
            dir.path(),
            6,
            &[&format!("archived object '{object}' is corrupt")],
        );
        assert_eq!(std::fs::read(root.join(&object)).unwrap(), bytes, "{what}");
    }
}

/// Runs `program args` in `cwd` with `env`, with a tmpfs of one page mounted over `at` in a
/// private mount namespace (`unshare`; as root, the program runs as the cluster user; otherwise
/// in a user namespace too, where this user may mount). `prepare` runs first, in `sh`, with
/// `$TMPFS` set and `vars`: it may fill the page. Returns the run and the files left in the
/// tmpfs after it, which vanishes with the namespace.
fn on_full_tmpfs(
    at: &Path,
    prepare: &str,
    vars: &[(&str, &std::ffi::OsStr)],
    program: &str,
    args: &[&std::ffi::OsStr],
    env: &[(String, String)],
    cwd: &Path,
) -> (Run, Vec<String>) {
    let root_user = walferry_testutil::pg::running_as_root();
    let run_as = if root_user {
        format!("runuser -u {} --", walferry_testutil::pg::cluster_user())
    } else {
        String::new()
    };
    let script = format!(
        "mount -t tmpfs -o size=4k,mode=0777 tmpfs \"$TMPFS\" && {prepare} || exit 100\n\
         {run_as} \"$@\"; code=$?\n\
         find \"$TMPFS\" -type f | sed 's|^|left: |' >&2\n\
         exit $code"
    );
    let mut cmd = std::process::Command::new("unshare");
    if !root_user {
        cmd.arg("-r");
    }
    cmd.args(["-m", "sh", "-c", &script, "sh", program])
        .args(args)
        .current_dir(cwd)
        .env("TMPFS", at);
    for (key, value) in vars {
        cmd.env(key, value);
    }
    for (key, _) in std::env::vars() {
        if key.starts_with("WALFERRY_") || key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(code, 100, "could not set up the full filesystem: {stderr}");
    let left = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("left: "))
        .map(str::to_owned)
        .collect();
    let run = Run {
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: stderr
            .lines()
            .filter(|l| !l.starts_with("left: "))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    (run, left)
}

/// Recovery's WAL directory full (where the prefetch spool lives too): fetch stops recovery
/// with one line, and leaves no partial file.
#[test]
fn a_full_wal_directory_stops_recovery() {
    let dir = TestDir::new("bad-full-pg-wal").unwrap();
    let repo = Repo::local(&dir);
    let (_primary, _) = archived(&dir, &repo);
    let pgdata = dir.create_dir("restored").unwrap();
    let pg_wal = pgdata.join("pg_wal");
    std::fs::create_dir(&pg_wal).unwrap();
    chown_to_cluster_user(&pgdata).unwrap();
    chown_to_cluster_user(&pg_wal).unwrap();
    let (_, name) = archived_segment(&repo);
    let (run, left) = on_full_tmpfs(
        &pg_wal,
        "head -c 4096 /dev/zero > \"$TMPFS/filler\"",
        &[],
        RESTORE,
        &[
            "fetch".as_ref(),
            name.as_ref(),
            "pg_wal/RECOVERYXLOG".as_ref(),
            "--prefetch".as_ref(),
            "false".as_ref(),
        ],
        &repo.env,
        &pgdata,
    );
    expect_one_error(&run, 207, &["No space left on device", "RECOVERYXLOG"]);
    assert_eq!(
        left,
        [pg_wal.join("filler").display().to_string()],
        "{}",
        run.stderr
    );
}

/// Runs `fetch name dest` from `pgdata` and asserts the error and that neither the repository
/// nor the data directory changed.
fn fetch_refused(
    repo_root: &Path,
    pgdata: &Path,
    args: [&str; 2],
    env: &[(String, String)],
    code: i32,
    texts: &[&str],
) {
    let (repo_before, data_before) = (snapshot(repo_root), snapshot(pgdata));
    let run = fetch(args[0], args[1], env, pgdata);
    expect_one_error(&run, code, texts);
    assert_eq!(snapshot(repo_root), repo_before, "repository unchanged");
    assert_eq!(snapshot(pgdata), data_before, "data directory unchanged");
}

/// What `restore_command` is given that PostgreSQL would not give, a damaged object, a
/// repository without a descriptor, and WAL of another cluster: each stops with one line and
/// changes nothing.
#[test]
fn fetch_and_push_refuse_what_does_not_belong() {
    let dir = TestDir::new("bad-fetch").unwrap();
    let repo = Repo::local(&dir);
    let (primary, _) = archived(&dir, &repo);
    let root = repo.local_root.clone().unwrap();
    let data = primary.data_dir();
    let (object, name) = archived_segment(&repo);

    // Names and destinations PostgreSQL never passes.
    let cases = [
        (
            ["00000001000000000000000G", "pg_wal/RECOVERYXLOG"],
            "invalid WAL file name '00000001000000000000000G'",
        ),
        (
            ["../global/pg_control", "pg_wal/RECOVERYXLOG"],
            "invalid WAL file name '../global/pg_control'",
        ),
        ([name.as_str(), ""], "a value is required for '<DEST_PATH>'"),
    ];
    for (args, text) in cases {
        fetch_refused(&root, data, args, &repo.env, 202, &[text]);
    }

    // A damaged object: flipped, then cut short.
    let good = std::fs::read(root.join(&object)).unwrap();
    for bytes in damaged(&good) {
        std::fs::write(root.join(&object), &bytes).unwrap();
        fetch_refused(
            &root,
            data,
            [&name, "pg_wal/RECOVERYXLOG"],
            &repo.env,
            206,
            &[&format!("'{object}' is corrupt")],
        );
    }
    std::fs::write(root.join(&object), &good).unwrap();

    // The repository's descriptor gone.
    let descriptor = std::fs::read(root.join("walferry.json")).unwrap();
    std::fs::remove_file(root.join("walferry.json")).unwrap();
    fetch_refused(
        &root,
        data,
        [&name, "pg_wal/RECOVERYXLOG"],
        &repo.env,
        206,
        &["has no descriptor"],
    );
    std::fs::write(root.join("walferry.json"), &descriptor).unwrap();

    // A segment of another cluster, pushed into this repository.
    let mut other = start_cluster(&dir, "other", &paused_archiving());
    let foreign = other.write_segments(1).unwrap().remove(0);
    other.stop().unwrap();
    push_refused(
        &root,
        other.data_dir(),
        &PathBuf::from("pg_wal").join(&foreign),
        &repo.env,
        other.data_dir(),
        4,
        &[&format!("WAL file '{foreign}' belongs to another cluster")],
    );
}
