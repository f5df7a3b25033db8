//! Shared helpers for the end-to-end tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{self, Cluster, ClusterOptions};
use walferry_testutil::s3::{NetworkProfile, S3Server, S3ServerConfig};

/// The binaries under test, built by cargo for this test target.
pub const ARCHIVE: &str = env!("CARGO_BIN_EXE_walferry-archive");
pub const RESTORE: &str = env!("CARGO_BIN_EXE_walferry-restore");

/// How long a test waits for archiving or recovery before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The directory holding both binaries, put on PostgreSQL's `PATH` so that
/// `archive_command = 'walferry-archive push %p'` works exactly as an operator writes it.
pub fn bin_dir() -> PathBuf {
    Path::new(ARCHIVE)
        .parent()
        .expect("a binary path has a parent")
        .to_path_buf()
}

/// A repository for one test, and the environment that points walferry at it.
pub struct Repo {
    /// Environment variables for walferry (and for PostgreSQL, which passes them on).
    pub env: Vec<(String, String)>,
    /// The root directory of a local repository.
    pub local_root: Option<PathBuf>,
    /// The S3 server of an S3 repository.
    pub s3: Option<S3Server>,
}

impl Repo {
    /// A `file://` repository in `dir/repo`, named by `WALFERRY_REPO`.
    pub fn local(dir: &TestDir) -> Repo {
        let root = dir.join("repo");
        Repo {
            env: vec![("WALFERRY_REPO".into(), format!("file://{}", root.display()))],
            local_root: Some(root),
            s3: None,
        }
    }

    /// An `s3://` repository on a fresh S3 server, configured through a configuration file
    /// named by `WALFERRY_CONFIG` (endpoint, credentials, repository URL).
    pub fn s3(dir: &TestDir) -> Repo {
        Repo::s3_with(dir, NetworkProfile::NONE)
    }

    /// Like [`Repo::s3`], with a network profile on the server.
    pub fn s3_with(dir: &TestDir, network: NetworkProfile) -> Repo {
        let server = S3Server::start(S3ServerConfig {
            root: dir.join("s3"),
            port: 0,
            access_key: "walferry-e2e".into(),
            secret_key: "walferry-e2e-secret".into(),
            region: "us-east-1".into(),
            network,
        })
        .expect("start the S3 server");
        server.create_bucket("walferry").expect("create bucket");
        let config = dir.join("walferry.toml");
        std::fs::write(
            &config,
            format!(
                "repo = \"s3://walferry/{}\"\n\n[s3]\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                TestDir::unique_name("e2e"),
                server.endpoint(),
                server.access_key(),
                server.secret_key(),
            ),
        )
        .expect("write walferry.toml");
        Repo {
            env: vec![("WALFERRY_CONFIG".into(), config.display().to_string())],
            local_root: None,
            s3: Some(server),
        }
    }

    /// The same environment with a short retry budget, for tests of failures.
    pub fn env_with_short_retries(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.push(("WALFERRY_RETRY_BUDGET".into(), "2".into()));
        env.push(("WALFERRY_REQUEST_TIMEOUT".into(), "2".into()));
        env
    }

    /// Every object file of a local repository, relative to its root, sorted.
    pub fn local_objects(&self) -> Vec<String> {
        let root = self.local_root.as_ref().expect("a local repository");
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("read_dir entry").path();
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

/// The result of running a binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code and that stderr contains each of `texts`.
    pub fn expect(&self, code: i32, texts: &[&str]) {
        assert_eq!(self.code, code, "exit code; stderr: {}", self.stderr);
        for text in texts {
            assert!(
                self.stderr.contains(text),
                "stderr lacks {text:?}: {}",
                self.stderr
            );
        }
    }
}

/// `walferry-archive push <path>`.
pub fn push(path: &Path, env: &[(String, String)], cwd: &Path) -> Run {
    walferry(
        ARCHIVE,
        &["push", path.to_str().expect("utf-8 path")],
        env,
        cwd,
    )
}

/// `walferry-restore fetch <name> <dest>`.
pub fn fetch(name: &str, dest: &str, env: &[(String, String)], cwd: &Path) -> Run {
    walferry(RESTORE, &["fetch", name, dest], env, cwd)
}

/// Runs one of walferry's binaries as the cluster user (so that files it creates have the same
/// owner as those PostgreSQL's own invocations create), in `cwd`, with `env`.
pub fn walferry(bin: &str, args: &[&str], env: &[(String, String)], cwd: &Path) -> Run {
    let output: Output = walferry_command(bin, args, env, cwd)
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Options for a primary that archives into `repo` with exactly the `archive_command` an
/// operator writes.
pub fn archiving(repo: &Repo) -> ClusterOptions {
    ClusterOptions {
        archive_command: Some("walferry-archive push %p".into()),
        env: server_env(&repo.env),
        ..ClusterOptions::default()
    }
}

/// `env` plus a `PATH` that finds walferry's binaries first.
pub fn server_env(env: &[(String, String)]) -> Vec<(String, String)> {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let mut out = env.to_vec();
    out.push(("PATH".into(), path));
    out
}

/// Initializes and starts a cluster in `dir/name`.
pub fn start_cluster(dir: &TestDir, name: &str, opts: &ClusterOptions) -> Cluster {
    let mut cluster = Cluster::init(&dir.join(name), opts).expect("initdb");
    cluster.start().expect("start cluster");
    cluster
}

/// A primary archiving into `repo` (in `dir/primary`) with the table `t` holding rows
/// `1..=rows`.
pub fn primary_with_rows(dir: &TestDir, repo: &Repo, rows: i32) -> Cluster {
    let primary = start_cluster(dir, "primary", &archiving(repo));
    create_table(&primary);
    insert_rows(&primary, 1, rows);
    primary
}

/// The table the tests write and check: `t(id int primary key, v text)`.
pub fn create_table(cluster: &Cluster) {
    cluster
        .psql("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)")
        .expect("create table");
}

/// Inserts rows `from..=to` into `t`, one transaction.
pub fn insert_rows(cluster: &Cluster, from: i32, to: i32) {
    cluster
        .psql(&format!(
            "INSERT INTO t SELECT i, md5(i::text) || repeat('w', 200) FROM generate_series({from}, {to}) i"
        ))
        .expect("insert rows");
}

/// A fingerprint of every row of `t`: count, sum, and a digest of all rows in order.
pub fn fingerprint(cluster: &Cluster) -> String {
    cluster
        .psql("SELECT count(*) || ' ' || coalesce(sum(id), 0) || ' ' || md5(coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '')) FROM t")
        .expect("fingerprint")
}

/// Restores the base backup in `backup` as a new cluster that recovers through
/// `restore_command = 'walferry-restore fetch %f %p'` to `targets`, started without waiting.
pub fn recover(
    backup: &Path,
    repo_env: &[(String, String)],
    targets: &[(&str, &str)],
    standby: bool,
) -> Cluster {
    let opts = ClusterOptions {
        env: server_env(repo_env),
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::from_existing(backup, &opts).expect("adopt the base backup");
    cluster
        .set_recovery("walferry-restore fetch %f %p", targets, standby)
        .expect("configure recovery");
    cluster.start_no_wait().expect("start recovery");
    cluster
}

/// The archived segment of `name` in a local repository.
pub fn local_segment_object(repo: &Repo, name: &str) -> PathBuf {
    repo.local_root
        .as_ref()
        .expect("a local repository")
        .join("wal")
        .join(&name[..16])
        .join(name)
}

/// `walferry-archive backup` of `cluster` into `repo`; returns the label it printed.
pub fn take_backup(repo: &Repo, cluster: &Cluster, cwd: &Path, extra: &[&str]) -> String {
    let conninfo = cluster.conninfo();
    let mut args = vec!["backup", "--conninfo", &conninfo];
    args.extend_from_slice(extra);
    let run = walferry(ARCHIVE, &args, &repo.env, cwd);
    run.expect(0, &[]);
    run.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("backup printed no label: {}", run.stdout))
        .to_owned()
}

/// `walferry-restore restore --pgdata <pgdata> <args>`.
pub fn restore(repo: &Repo, pgdata: &Path, args: &[&str], cwd: &Path) -> Run {
    let pgdata = pgdata.to_str().expect("utf-8 path");
    let mut all = vec!["restore", "--pgdata", pgdata];
    all.extend_from_slice(args);
    walferry(RESTORE, &all, &repo.env, cwd)
}

/// Starts a data directory `walferry-restore restore` wrote (it configured recovery itself)
/// and waits until recovery ends with promotion.
pub fn start_restored(pgdata: &Path, opts: &ClusterOptions) -> Cluster {
    let mut cluster = Cluster::from_existing(pgdata, opts).expect("adopt the restored directory");
    cluster.start_no_wait().expect("start recovery");
    match cluster.wait_promoted(TIMEOUT).expect("recovery ends") {
        pg::RecoveryOutcome::Promoted => cluster,
        other => panic!("recovery of {} failed: {other:?}", pgdata.display()),
    }
}

/// The command [`walferry`] runs — as the cluster user, hermetic, in `cwd`, with `env` — for
/// a test that needs the child process itself (to kill it, for example).
pub fn walferry_command(bin: &str, args: &[&str], env: &[(String, String)], cwd: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args).current_dir(cwd);
    for (key, _) in std::env::vars() {
        if key.starts_with("WALFERRY_") || key.starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    pg::as_cluster_user(cmd)
}

/// Every file under `root` with a checksum of its content (missing root: empty).
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, u32> {
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
