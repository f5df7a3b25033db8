//! Throwaway PostgreSQL clusters for end-to-end tests.
//!
//! A [`Cluster`] is a data directory, a port, a private Unix socket directory and a server log
//! file. [`Cluster::init`] runs `initdb`; [`Cluster::from_existing`] adopts a data directory made
//! some other way (a base backup copy, a restore). The harness drives the real server binaries:
//! `initdb`, `postgres`, `pg_ctl`, `psql` and `pg_basebackup`, found by [`bindir`].
//!
//! # Root and the cluster user
//!
//! `initdb` and `postgres` refuse to run as root, and tests (in CI and here) run as root. So when
//! the effective uid is 0, every PostgreSQL command runs as the unprivileged *cluster user*
//! through `runuser -u <user> --` ([`as_cluster_user`]). The user is `postgres` (created by the
//! Debian `postgresql` package) unless `$WALFERRY_PG_USER` names another. When not root, commands
//! run directly as the current user and nothing is chowned.
//!
//! Everything PostgreSQL runs itself (`archive_command`, `restore_command`) then runs as the
//! cluster user too, so:
//!
//! - test directories ([`crate::dirs::TestDir`]) and the directories the harness creates (data
//!   directories, socket directories, backup targets) are owned by the cluster user;
//! - a test that invokes walferry's binaries directly must wrap them with [`as_cluster_user`],
//!   so that files they create in a repository or data directory have the same owner as files
//!   PostgreSQL's own invocations create. `runuser` keeps the environment (except `HOME`,
//!   `SHELL`, `USER` and `LOGNAME`), so variables set on the command reach the program;
//! - the binaries must be readable and executable by the cluster user (cargo's `target/` is
//!   `755` by default).
//!
//! # Cluster configuration
//!
//! The harness owns one include file, `walferry_harness.conf` in the data directory, included
//! at the end of `postgresql.conf` and rewritten from [`ClusterOptions`] and
//! [`Cluster::set_recovery`] before every start; nothing else in the data directory is edited.
//! `postgresql.auto.conf` (where `ALTER SYSTEM` and restore tools write) is read after it and
//! wins. The settings: a fresh `port` (a free TCP port; `listen_addresses = '127.0.0.1'`),
//! `unix_socket_directories` set to a private `/tmp/wf-s-<8 hex>` directory (socket paths are
//! limited to 107 bytes), `wal_level = replica`, `max_wal_senders = 4`, `archive_mode` on exactly
//! when an `archive_command` is given, `archive_timeout = 0`, `fsync = on`, small
//! `shared_buffers`, and logging to stderr, which goes to `<data dir>.log` beside the data
//! directory (outside it, so base backups do not copy it).
//!
//! The bootstrap superuser is [`SUPERUSER`] (`postgres`) with `trust` authentication for local
//! and replication connections; connect through the socket directory ([`Cluster::conninfo`]).
//!
//! # Starting and recovery
//!
//! The server is started as a child process (`postgres -D <data dir>`, stderr into the log), and
//! readiness is read from `postmaster.pid`'s status line, the same way `pg_ctl start -w` does.
//! Polling the status line rather than connecting keeps the server log free of "the database
//! system is starting up" errors. If the port turns out to be taken, the start is retried with a
//! new port. [`Cluster::start`] waits until connections are accepted (for a cluster in recovery
//! with `hot_standby = on`, once it is consistent) and fails with the log tail if the server
//! exits first. For recovery tests use [`Cluster::start_no_wait`] and then
//! [`Cluster::wait_promoted`], which reports [`RecoveryOutcome::Failed`] when recovery aborts
//! (the postmaster exits) instead of hanging.
//!
//! Drop a `Cluster` before its [`crate::dirs::TestDir`]: dropping it stops the server with an
//! immediate shutdown if it is still running.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

/// Environment variable naming the directory holding `initdb`, `postgres`, `pg_ctl`, `psql`...
pub const BINDIR_ENV: &str = "WALFERRY_PG_BINDIR";

/// Environment variable naming the cluster user used when running as root (default `postgres`).
pub const USER_ENV: &str = "WALFERRY_PG_USER";

/// The cluster user when [`USER_ENV`] is unset.
pub const DEFAULT_CLUSTER_USER: &str = "postgres";

/// The database superuser created by `initdb -U` (trust authentication).
pub const SUPERUSER: &str = "postgres";

/// The include file the harness owns inside each data directory.
pub const HARNESS_CONF: &str = "walferry_harness.conf";

/// The line appended to `postgresql.conf` to include [`HARNESS_CONF`].
const INCLUDE_LINE: &str = "include = 'walferry_harness.conf'";

/// How long [`Cluster::start`] waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long [`Cluster::start_no_wait`] waits for the server to open its sockets.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// `pg_ctl stop -t` for fast shutdowns, in seconds.
const STOP_TIMEOUT_SECS: &str = "120";

/// How often state is polled while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Starts attempted before giving up on finding a free port.
const START_ATTEMPTS: usize = 5;

/// Log lines included in error messages.
const ERROR_LOG_LINES: usize = 40;

/// psql's record separator in [`Cluster::query_rows`] (ASCII record separator).
const RECORD_SEP: &str = "\u{1e}";

/// Finds the PostgreSQL server binaries.
///
/// In order: `$WALFERRY_PG_BINDIR`; `pg_config --bindir` when that directory has `initdb` (on
/// Debian, `pg_config` may come from `libpq-dev` for a version whose server is not installed);
/// the highest `/usr/lib/postgresql/<major>/bin` with `initdb`. The answer is cached.
pub fn bindir() -> anyhow::Result<PathBuf> {
    static BINDIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINDIR
        .get_or_init(|| find_bindir().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Returns [`bindir`], or prints `skipping <test>: PostgreSQL not installed (...)` and returns
/// `None`, for tests that should skip rather than fail where PostgreSQL is missing.
pub fn bindir_or_skip(test: &str) -> Option<PathBuf> {
    match bindir() {
        Ok(dir) => Some(dir),
        Err(err) => {
            eprintln!("skipping {test}: PostgreSQL not installed ({err:#})");
            None
        }
    }
}

fn find_bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        if has_initdb(&dir) {
            return Ok(dir);
        }
        bail!("{BINDIR_ENV}={} does not contain initdb", dir.display());
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&dir) {
            return Ok(dir);
        }
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let Some(major) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if has_initdb(&bin) && best.as_ref().is_none_or(|(m, _)| major > *m) {
                best = Some((major, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "PostgreSQL server binaries not found: no initdb in ${BINDIR_ENV}, `pg_config --bindir` \
             or /usr/lib/postgresql/*/bin; HINT: install them with `apt-get install -y postgresql` \
             (Debian/Ubuntu) or point {BINDIR_ENV} at the directory holding initdb"
        )
    })
}

fn has_initdb(dir: &Path) -> bool {
    dir.join("initdb").is_file()
}

/// Whether this process runs with effective uid 0 (cached).
pub fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| effective_uid() == Some(0))
}

/// The effective uid, from `/proc/self/status` (no `unsafe` libc call), else `id -u`.
fn effective_uid() -> Option<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("Uid:"))
    {
        // "Uid:\treal\teffective\tsaved\tfs"
        return line.split_whitespace().nth(2).and_then(|s| s.parse().ok());
    }
    let out = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The files marked ready for archiving in the data directory `pgdata`, in the order
/// PostgreSQL's archiver takes them: timeline history files first, then by name.
pub fn ready_files(pgdata: &Path) -> Vec<String> {
    let mut ready: Vec<String> = fs::read_dir(pgdata.join("pg_wal/archive_status"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|name| name.strip_suffix(".ready").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ready.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    ready
}

/// The OS user PostgreSQL runs as when the tests run as root: `$WALFERRY_PG_USER` or `postgres`.
pub fn cluster_user() -> String {
    std::env::var(USER_ENV).unwrap_or_else(|_| DEFAULT_CLUSTER_USER.to_owned())
}

/// The cluster user's (uid, gid), looked up once with `id`.
fn cluster_user_ids() -> anyhow::Result<(u32, u32)> {
    static IDS: OnceLock<Result<(u32, u32), String>> = OnceLock::new();
    IDS.get_or_init(|| {
        let user = cluster_user();
        let id = |flag: &str| -> anyhow::Result<u32> {
            let out = Command::new("id")
                .arg(flag)
                .arg(&user)
                .output()
                .context("run id")?;
            if !out.status.success() {
                bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
        };
        let lookup = || -> anyhow::Result<(u32, u32)> { Ok((id("-u")?, id("-g")?)) };
        lookup()
            .with_context(|| {
                format!(
                    "look up cluster user '{user}'; PostgreSQL refuses to run as root, so tests \
                     running as root run it as that user; HINT: installing PostgreSQL \
                     (`apt-get install -y postgresql`) creates 'postgres', or set {USER_ENV}"
                )
            })
            .map_err(|err| format!("{err:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Gives `path` and, recursively, everything under it to the cluster user; a no-op when not
/// running as root. Symbolic links are chowned themselves, not followed.
pub fn chown_to_cluster_user(path: &Path) -> anyhow::Result<()> {
    if !running_as_root() {
        return Ok(());
    }
    let (uid, gid) = cluster_user_ids()?;
    chown_recursive(path, uid, gid)
}

/// [`chown_to_cluster_user`], except that a missing cluster user is not an error (there is
/// then no PostgreSQL to share the files with): for directories tests make whether or not
/// they run PostgreSQL.
pub(crate) fn chown_to_cluster_user_if_present(path: &Path) -> anyhow::Result<()> {
    if running_as_root() && cluster_user_ids().is_err() {
        return Ok(());
    }
    chown_to_cluster_user(path)
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {} to uid {uid}", path.display()))?;
    let meta = fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).with_context(|| format!("list {}", path.display()))? {
            let entry = entry.with_context(|| format!("list {}", path.display()))?;
            chown_recursive(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Wraps `cmd` so that it runs as the cluster user: `runuser -u <user> -- <cmd>` when running
/// as root, `cmd` unchanged otherwise.
///
/// The program, arguments, environment changes (`env`, `env_remove`) and working directory are
/// carried over; `env_clear` and stdio settings are not, so configure stdio on the returned
/// command. Arguments added to the returned command go to the wrapped program.
pub fn as_cluster_user(cmd: Command) -> Command {
    if !running_as_root() {
        return cmd;
    }
    let runuser = Path::new("/usr/sbin/runuser");
    let mut wrapped = if runuser.is_file() {
        Command::new(runuser)
    } else {
        Command::new("runuser")
    };
    wrapped
        .arg("-u")
        .arg(cluster_user())
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// A PostgreSQL program from `bindir`, as the cluster user.
fn pg_command(bindir: &Path, program: &str) -> Command {
    as_cluster_user(Command::new(bindir.join(program)))
}

/// The command line for error messages.
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion with `input` on stdin; fails unless it exits 0, with the command
/// line, exit status, stderr and stdout in the error.
fn run(mut cmd: Command, input: Option<&str>) -> anyhow::Result<Output> {
    let desc = describe(&cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("start `{desc}`"))?;
    // Feed stdin from another thread so a chatty child cannot deadlock us on full pipes.
    let feeder = match (input, child.stdin.take()) {
        (Some(input), Some(mut stdin)) => {
            let input = input.to_owned();
            Some(std::thread::spawn(move || {
                stdin.write_all(input.as_bytes())
            }))
        }
        _ => None,
    };
    let out = child
        .wait_with_output()
        .with_context(|| format!("wait for `{desc}`"))?;
    if let Some(feeder) = feeder {
        // A child that exits without reading all input is reported through its status below.
        let _ = feeder.join();
    }
    if !out.status.success() {
        let mut msg = format!("`{desc}` failed ({})", out.status);
        for (name, bytes) in [("stderr", &out.stderr), ("stdout", &out.stdout)] {
            let text = String::from_utf8_lossy(bytes);
            if !text.trim().is_empty() {
                msg.push_str(&format!("\n{name}:\n{}", text.trim_end()));
            }
        }
        bail!(msg);
    }
    Ok(out)
}

/// Quotes `value` as a `postgresql.conf` string: `'...'`, with `'` doubled and `\` escaped.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes `value` as an SQL string literal (`standard_conforming_strings` is on).
pub fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A free TCP port on 127.0.0.1: bound, read and released. Another process may take it before
/// the server binds it; [`Cluster::start`] retries with a new port when that happens.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0 to pick a port")?;
    Ok(listener.local_addr().context("read bound address")?.port())
}

/// Creates a private `/tmp/wf-s-<8 hex>` socket directory owned by the cluster user.
fn make_socket_dir() -> anyhow::Result<PathBuf> {
    for _ in 0..10 {
        let dir = PathBuf::from(format!("/tmp/wf-s-{:08x}", crate::dirs::random_u32()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("chmod {}", dir.display()))?;
                chown_to_cluster_user(&dir)?;
                return Ok(dir);
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => {
                return Err(err).with_context(|| format!("create socket dir {}", dir.display()));
            }
        }
    }
    bail!("could not create a unique socket directory under /tmp")
}

/// Whether process `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Settings for a [`Cluster`]. Commands are given unquoted; the harness quotes them.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `initdb --wal-segsize` in MiB (a power of two from 1 to 1024); `None` keeps 16 MiB.
    /// Only [`Cluster::init`] uses it: the segment size of an existing cluster is fixed.
    pub wal_segsize_mb: Option<u32>,
    /// `archive_command`; also turns `archive_mode` on. `None` leaves archiving off.
    pub archive_command: Option<String>,
    /// `restore_command`, used only when the cluster starts in recovery (see
    /// [`Cluster::set_recovery`], which can also set it).
    pub restore_command: Option<String>,
    /// Literal `postgresql.conf` lines appended after the harness's settings (they win).
    pub extra_conf: Vec<String>,
    /// Environment variables for the server process, inherited by `archive_command` and
    /// `restore_command` (for example `WALFERRY_REPO`).
    pub env: Vec<(String, String)>,
}

/// How a cluster started in recovery ended up; see [`Cluster::wait_promoted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// Recovery finished and the server accepts writes (`pg_is_in_recovery()` is false).
    Promoted,
    /// The server exited during recovery: recovery aborted (a FATAL error) or shut down by
    /// itself (`recovery_target_action = 'shutdown'`).
    Failed {
        /// The last lines of the server log.
        log_tail: String,
    },
}

/// What a start waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartWait {
    /// The status line reads `ready` or `standby`: connections are accepted.
    Accepting,
    /// The status line exists at all: the sockets are open (the port was free).
    Listening,
}

/// A throwaway PostgreSQL cluster; see the module docs.
#[derive(Debug)]
pub struct Cluster {
    bindir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    opts: ClusterOptions,
    /// Lines written by [`Cluster::set_recovery`].
    recovery_conf: Vec<String>,
    /// The server process we spawned (`runuser` when root, else `postgres`), to reap it.
    server: Mutex<Option<Child>>,
}

impl Cluster {
    /// Runs `initdb` into `data_dir` (which must not exist or be empty) and configures the
    /// cluster; the server is not started.
    ///
    /// `initdb` runs with `-U postgres -A trust -E UTF8 --locale=C --no-sync` (fsync of the
    /// fresh cluster is not what the tests are about; the server itself runs with `fsync = on`).
    pub fn init(data_dir: &Path, opts: &ClusterOptions) -> anyhow::Result<Cluster> {
        let bindir = bindir()?;
        if fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
            bail!("data directory {} is not empty", data_dir.display());
        }
        // Create it ourselves: its parent may not be writable by the cluster user.
        fs::create_dir_all(data_dir)
            .with_context(|| format!("create data directory {}", data_dir.display()))?;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", data_dir.display()))?;
        chown_to_cluster_user(data_dir)?;
        let mut initdb = pg_command(&bindir, "initdb");
        initdb
            .arg("-D")
            .arg(data_dir)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        if let Some(mb) = opts.wal_segsize_mb {
            initdb.arg(format!("--wal-segsize={mb}"));
        }
        run(initdb, None).with_context(|| format!("initdb {}", data_dir.display()))?;
        Self::configure(bindir, data_dir, opts)
    }

    /// Adopts an existing data directory, for example a copy of a base backup: makes it owned
    /// by the cluster user with mode 0700, removes a stale `postmaster.pid` (a copy's refers to
    /// the original server), and applies `opts` with a fresh port and socket directory. The
    /// harness settings a copy carries over from its source are replaced; signal files
    /// (`recovery.signal`, `standby.signal`) and `postgresql.auto.conf` are left alone.
    ///
    /// Fails if a server is running on this very data directory.
    pub fn from_existing(data_dir: &Path, opts: &ClusterOptions) -> anyhow::Result<Cluster> {
        let bindir = bindir()?;
        if !data_dir.join("PG_VERSION").is_file() {
            bail!(
                "{} is not a PostgreSQL data directory (no PG_VERSION)",
                data_dir.display()
            );
        }
        let pid_file = data_dir.join("postmaster.pid");
        if let Ok(text) = fs::read_to_string(&pid_file) {
            let mut lines = text.lines();
            let pid = lines.next().and_then(|l| l.trim().parse::<u32>().ok());
            let owner_dir = lines.next().map(PathBuf::from);
            let same_dir = owner_dir.is_some_and(|d| {
                d == data_dir || fs::canonicalize(&d).ok() == fs::canonicalize(data_dir).ok()
            });
            if same_dir && pid.is_some_and(process_alive) {
                bail!(
                    "data directory {} is in use by a running server (pid {})",
                    data_dir.display(),
                    pid.unwrap_or_default()
                );
            }
            fs::remove_file(&pid_file)
                .with_context(|| format!("remove stale {}", pid_file.display()))?;
        }
        let _ = fs::remove_file(data_dir.join("postmaster.opts"));
        chown_to_cluster_user(data_dir)?;
        let mode = fs::metadata(data_dir)
            .with_context(|| format!("stat {}", data_dir.display()))?
            .permissions()
            .mode();
        if mode & 0o7027 != 0 {
            fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("chmod {}", data_dir.display()))?;
        }
        Self::configure(bindir, data_dir, opts)
    }

    /// Common tail of `init` and `from_existing`.
    fn configure(bindir: PathBuf, data_dir: &Path, opts: &ClusterOptions) -> anyhow::Result<Self> {
        let data_dir = std::path::absolute(data_dir)
            .with_context(|| format!("resolve {}", data_dir.display()))?;
        let name = data_dir
            .file_name()
            .ok_or_else(|| anyhow!("data directory {} has no name", data_dir.display()))?;
        let log_file = data_dir.with_file_name(format!("{}.log", name.to_string_lossy()));
        let cluster = Cluster {
            bindir,
            log_file,
            socket_dir: make_socket_dir()?,
            port: free_port()?,
            opts: opts.clone(),
            recovery_conf: Vec::new(),
            server: Mutex::new(None),
            data_dir,
        };
        let main_conf = cluster.data_dir.join("postgresql.conf");
        let text = fs::read_to_string(&main_conf)
            .with_context(|| format!("read {}", main_conf.display()))?;
        if !text.lines().any(|l| l.trim() == INCLUDE_LINE) {
            let mut file = fs::OpenOptions::new()
                .append(true)
                .open(&main_conf)
                .with_context(|| format!("open {}", main_conf.display()))?;
            writeln!(file, "\n# walferry test harness settings\n{INCLUDE_LINE}")
                .with_context(|| format!("append to {}", main_conf.display()))?;
        }
        cluster.write_conf()?;
        Ok(cluster)
    }

    /// (Re)writes [`HARNESS_CONF`] from the options, port and recovery settings.
    fn write_conf(&self) -> anyhow::Result<()> {
        let mut lines = vec![
            "# Written by walferry-testutil before every start; edits are lost.".to_owned(),
            format!("port = {}", self.port),
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!(
                "unix_socket_directories = {}",
                conf_quote(&self.socket_dir.to_string_lossy())
            ),
            "wal_level = replica".to_owned(),
            "max_wal_senders = 4".to_owned(),
            "max_connections = 30".to_owned(),
            "shared_buffers = '32MB'".to_owned(),
            "fsync = on".to_owned(),
            "synchronous_commit = on".to_owned(),
            "archive_timeout = 0".to_owned(),
            "logging_collector = off".to_owned(),
            "log_min_messages = info".to_owned(),
            "log_line_prefix = '%m [%p] %b '".to_owned(),
            "log_checkpoints = on".to_owned(),
        ];
        match &self.opts.archive_command {
            Some(command) => {
                lines.push("archive_mode = on".to_owned());
                lines.push(format!("archive_command = {}", conf_quote(command)));
            }
            None => lines.push("archive_mode = off".to_owned()),
        }
        if let Some(command) = &self.opts.restore_command {
            lines.push(format!("restore_command = {}", conf_quote(command)));
        }
        lines.extend(self.opts.extra_conf.iter().cloned());
        lines.extend(self.recovery_conf.iter().cloned());
        let path = self.data_dir.join(HARNESS_CONF);
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        chown_to_cluster_user(&path)
    }

    /// Starts the server and waits (up to 120 s) until it accepts connections: normally at
    /// once; in recovery with `hot_standby = on`, once consistent. Fails with the log tail if
    /// the server exits first (for example recovery aborted). Retries with a new port if the
    /// chosen one was taken.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.launch(StartWait::Accepting)
    }

    /// Starts the server and returns once its sockets are open, without waiting for recovery;
    /// follow with [`Cluster::wait_promoted`]. Fails with the log tail if the server exits
    /// before opening its sockets (for example a bad setting).
    pub fn start_no_wait(&mut self) -> anyhow::Result<()> {
        self.launch(StartWait::Listening)
    }

    fn launch(&mut self, until: StartWait) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("server for {} is already running", self.data_dir.display());
        }
        // A stale pid file from a killed server would look like a started one.
        let pid_file = self.data_dir.join("postmaster.pid");
        if pid_file.exists() {
            fs::remove_file(&pid_file)
                .with_context(|| format!("remove stale {}", pid_file.display()))?;
        }
        let mut attempt = 1;
        loop {
            self.write_conf()?;
            let offset = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
            self.spawn_server()?;
            match self.wait_started(until, offset) {
                Ok(()) => return Ok(()),
                Err(StartFailure::PortInUse) if attempt < START_ATTEMPTS => {
                    attempt += 1;
                    self.port = free_port()?;
                }
                Err(StartFailure::PortInUse) => bail!(
                    "start PostgreSQL in {}: no free port after {START_ATTEMPTS} attempts\n{}",
                    self.data_dir.display(),
                    self.log_report()
                ),
                Err(StartFailure::Other(err)) => {
                    return Err(
                        err.context(format!("start PostgreSQL in {}", self.data_dir.display()))
                    );
                }
            }
        }
    }

    fn spawn_server(&self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .with_context(|| format!("open server log {}", self.log_file.display()))?;
        chown_to_cluster_user(&self.log_file)?;
        let stderr = log
            .try_clone()
            .with_context(|| format!("dup server log {}", self.log_file.display()))?;
        let mut cmd = Command::new(self.bindir.join("postgres"));
        cmd.arg("-D").arg(&self.data_dir);
        for (key, value) in &self.opts.env {
            cmd.env(key, value);
        }
        let mut cmd = as_cluster_user(cmd);
        cmd.stdin(Stdio::null()).stdout(log).stderr(stderr);
        let desc = describe(&cmd);
        let child = cmd.spawn().with_context(|| format!("start `{desc}`"))?;
        *self.server_guard() = Some(child);
        Ok(())
    }

    fn wait_started(&self, until: StartWait, log_offset: u64) -> Result<(), StartFailure> {
        let timeout = match until {
            StartWait::Accepting => START_TIMEOUT,
            StartWait::Listening => LISTEN_TIMEOUT,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.reap_if_exited() {
                let log = self.log_since(log_offset);
                if log.contains("could not bind") || log.contains("could not create any TCP/IP") {
                    return Err(StartFailure::PortInUse);
                }
                return Err(StartFailure::Other(anyhow!(
                    "server exited during startup ({status})\n{}",
                    self.log_report()
                )));
            }
            if let Some(status) = self.pm_status() {
                let started = match until {
                    StartWait::Accepting => status == "ready" || status == "standby",
                    StartWait::Listening => true,
                };
                if started {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let report = self.log_report();
                self.kill_server();
                return Err(StartFailure::Other(anyhow!(
                    "server did not start within {timeout:?} (stopped it)\n{report}"
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The postmaster's status from line 8 of `postmaster.pid` (`starting`, `ready`, `standby`,
    /// `stopping`); `None` before the sockets are open or when there is no pid file.
    fn pm_status(&self) -> Option<String> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().nth(7).map(|s| s.trim().to_owned())
    }

    /// The postmaster's pid from `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    fn server_guard(&self) -> MutexGuard<'_, Option<Child>> {
        self.server
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reaps our server child if it has exited and returns its exit status.
    fn reap_if_exited(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.server_guard();
        let status = guard.as_mut()?.try_wait().ok()??;
        *guard = None;
        Some(status)
    }

    /// Waits up to `timeout` for our server child to exit.
    fn reap(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.server_guard().is_some() && Instant::now() < deadline {
            if self.reap_if_exited().is_none() {
                std::thread::sleep(POLL);
            }
        }
    }

    /// Whether the server is running: its `postmaster.pid` names a live process. Works for
    /// servers started by the harness or by anything else (a restore tool).
    pub fn is_running(&self) -> bool {
        self.reap_if_exited();
        self.postmaster_pid().is_some_and(process_alive)
    }

    /// Stops the server with `pg_ctl stop -m fast` and waits for it to exit; does nothing if
    /// it is not running.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if !self.is_running() {
            self.reap(Duration::ZERO);
            return Ok(());
        }
        let mut cmd = pg_command(&self.bindir, "pg_ctl");
        cmd.arg("stop").arg("-D").arg(&self.data_dir).args([
            "-m",
            "fast",
            "-w",
            "-t",
            STOP_TIMEOUT_SECS,
        ]);
        if let Err(err) = run(cmd, None)
            && self.is_running()
        {
            return Err(err.context(format!(
                "stop PostgreSQL in {}\n{}",
                self.data_dir.display(),
                self.log_report()
            )));
        }
        self.reap(Duration::from_secs(10));
        Ok(())
    }

    /// Stops the server with `pg_ctl stop -m immediate` (a crash, as far as the data directory
    /// is concerned), killing it if that fails; does nothing if it is not running.
    pub fn stop_immediate(&mut self) {
        self.kill_server();
    }

    fn kill_server(&self) {
        if self.is_running() {
            let mut cmd = pg_command(&self.bindir, "pg_ctl");
            cmd.arg("stop").arg("-D").arg(&self.data_dir).args([
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
            ]);
            if run(cmd, None).is_err()
                && let Some(pid) = self.postmaster_pid()
                && process_alive(pid)
            {
                let mut kill = Command::new("kill");
                kill.args(["-KILL", &pid.to_string()]);
                let _ = run(as_cluster_user(kill), None);
            }
        }
        self.reap(Duration::from_secs(10));
    }

    /// Runs `sql` (one or more statements) with `psql -X -A -t -q -v ON_ERROR_STOP=1` as the
    /// superuser in database `postgres`, and returns stdout trimmed: one line per row, fields
    /// separated by `|`, no command tags. Fails on the first SQL error, with psql's stderr.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.psql_db("postgres", sql)
    }

    /// [`Cluster::psql`] in database `dbname`.
    pub fn psql_db(&self, dbname: &str, sql: &str) -> anyhow::Result<String> {
        let mut cmd = self.psql_command(dbname);
        cmd.args(["-f", "-"]);
        let out = self.run_sql(cmd, Some(sql), sql)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs one SQL statement and returns its rows as fields; unambiguous for any text data
    /// (newlines, `|`), with NULL as an empty string. Only the last statement's rows are
    /// well-defined, so pass a single statement.
    pub fn query_rows(&self, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
        let mut cmd = self.psql_command("postgres");
        cmd.args(["-z", "-R", RECORD_SEP, "-c", sql]);
        let out = self.run_sql(cmd, None, sql)?;
        let text = String::from_utf8_lossy(&out.stdout);
        // psql ends a result set with '\n' and prints nothing at all for zero rows.
        let Some(body) = text.strip_suffix('\n') else {
            return Ok(Vec::new());
        };
        Ok(body
            .split(RECORD_SEP)
            .map(|row| row.split('\0').map(str::to_owned).collect())
            .collect())
    }

    /// Runs a psql command; on failure, names the SQL and, when the server is not running,
    /// ends the error with the log tail.
    fn run_sql(&self, cmd: Command, input: Option<&str>, sql: &str) -> anyhow::Result<Output> {
        run(cmd, input).map_err(|err| {
            let context = format!(
                "run SQL on the cluster at port {}: {}",
                self.port,
                abbreviate(sql)
            );
            if self.is_running() {
                err.context(context)
            } else {
                anyhow!(
                    "{context}: {err:#}\nthe server is not running; {}",
                    self.log_report()
                )
            }
        })
    }

    fn psql_command(&self, dbname: &str) -> Command {
        let mut cmd = pg_command(&self.bindir, "psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-w"])
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", dbname]);
        cmd
    }

    /// Switches to a new WAL segment (`pg_switch_wal()`) and returns the name of the segment
    /// just completed. If nothing was written since the last switch, no switch happens and the
    /// name returned is that of the previous, already completed segment.
    pub fn switch_wal(&self) -> anyhow::Result<String> {
        self.psql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// Creates restore point `name` and returns its LSN (`X/X`).
    pub fn create_restore_point(&self, name: &str) -> anyhow::Result<String> {
        self.psql(&format!(
            "SELECT pg_create_restore_point({})::text",
            sql_literal(name)
        ))
    }

    /// The name of the WAL segment being written now; fails during recovery.
    pub fn current_wal_file(&self) -> anyhow::Result<String> {
        self.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    }

    /// The current WAL insert LSN (`X/X`); fails during recovery.
    pub fn current_lsn(&self) -> anyhow::Result<String> {
        self.psql("SELECT pg_current_wal_lsn()::text")
    }

    /// The current timeline, from the name of the segment being written; fails during
    /// recovery.
    pub fn timeline(&self) -> anyhow::Result<u32> {
        let file = self.current_wal_file()?;
        let tli = file.get(..8).unwrap_or_default();
        u32::from_str_radix(tli, 16).with_context(|| format!("parse timeline of '{file}'"))
    }

    /// Writes a little data and switches segments `n` times; returns the `n` completed
    /// segment names, in order. Uses table `walferry_filler`.
    pub fn write_segments(&self, n: usize) -> anyhow::Result<Vec<String>> {
        self.psql(
            "CREATE TABLE IF NOT EXISTS walferry_filler (id bigserial PRIMARY KEY, payload text)",
        )?;
        (0..n)
            .map(|_| {
                self.psql(
                    "INSERT INTO walferry_filler (payload) \
                     SELECT repeat('x', 100) FROM generate_series(1, 100)",
                )?;
                self.switch_wal()
            })
            .collect()
    }

    /// Waits until `wal_file` has been archived: `pg_wal/archive_status/<file>.done` exists, or
    /// `pg_stat_archiver.last_archived_wal` is that file or a later segment on the same
    /// timeline (the archiver works through segments in order). On timeout, fails with the
    /// archiver's statistics (failed count, last failed file) and the log tail.
    pub fn wait_archived(&self, wal_file: &str, timeout: Duration) -> anyhow::Result<()> {
        let done = self
            .data_dir
            .join("pg_wal/archive_status")
            .join(format!("{wal_file}.done"));
        let deadline = Instant::now() + timeout;
        loop {
            if done.exists() {
                return Ok(());
            }
            let rows = self
                .query_rows(
                    "SELECT coalesce(last_archived_wal, ''), archived_count, failed_count, \
                     coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, '') \
                     FROM pg_stat_archiver",
                )
                .with_context(|| format!("wait for WAL file '{wal_file}' to be archived"))?;
            let row = rows.into_iter().next().unwrap_or_default();
            let field = |i: usize| row.get(i).map(String::as_str).unwrap_or_default();
            if archived_covers(field(0), wal_file) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "WAL file '{wal_file}' not archived within {timeout:?}: \
                     last_archived_wal '{}', archived_count {}, failed_count {}, \
                     last_failed_wal '{}' at '{}'\n{}",
                    field(0),
                    field(1),
                    field(2),
                    field(3),
                    field(4),
                    self.log_report()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Takes a base backup into `dest` (created; must not exist or be empty) with
    /// `pg_basebackup -Fp -X none -c fast`: no WAL is included, so recovering from it takes
    /// every segment from the archive. PostgreSQL finishes the backup only once the last
    /// segment it needs is archived, so with a failing `archive_command` this blocks (the
    /// server log says "still waiting for all required WAL segments to be archived").
    pub fn base_backup(&self, dest: &Path) -> anyhow::Result<()> {
        // Create it ourselves: its parent may not be writable by the cluster user.
        fs::create_dir_all(dest).with_context(|| format!("create {}", dest.display()))?;
        fs::set_permissions(dest, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", dest.display()))?;
        chown_to_cluster_user(dest)?;
        let mut cmd = pg_command(&self.bindir, "pg_basebackup");
        cmd.arg("-D")
            .arg(dest)
            .args(["-F", "p", "-X", "none", "-c", "fast", "-w"])
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER]);
        run(cmd, None).with_context(|| {
            format!(
                "take a base backup of {} into {}\n{}",
                self.data_dir.display(),
                dest.display(),
                self.log_report()
            )
        })?;
        Ok(())
    }

    /// The database system identifier (`pg_control_system()`).
    pub fn system_identifier(&self) -> anyhow::Result<u64> {
        let text = self.psql("SELECT system_identifier FROM pg_control_system()")?;
        text.parse()
            .with_context(|| format!("parse system identifier '{text}'"))
    }

    /// Configures recovery for the next start: sets `restore_command` (unquoted; the harness
    /// quotes it) and the `targets` settings, and creates `standby.signal` when `standby`,
    /// else `recovery.signal`.
    ///
    /// Target values may be given raw (`("recovery_target_name", "p1")`) and are then quoted;
    /// a value already in single quotes (`"'p1'"`) is written as is. Calling this again
    /// replaces the previous settings (not the signal file).
    ///
    /// ```no_run
    /// # fn f(cluster: &mut walferry_testutil::pg::Cluster) -> anyhow::Result<()> {
    /// cluster.set_recovery(
    ///     "cp /tmp/archive/%f %p",
    ///     &[("recovery_target_name", "p1"), ("recovery_target_action", "promote")],
    ///     false,
    /// )?;
    /// # Ok(()) }
    /// ```
    pub fn set_recovery(
        &mut self,
        restore_command: &str,
        targets: &[(&str, &str)],
        standby: bool,
    ) -> anyhow::Result<()> {
        self.recovery_conf =
            std::iter::once(format!("restore_command = {}", conf_quote(restore_command)))
                .chain(targets.iter().map(|(key, value)| {
                    let quoted =
                        value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'');
                    if quoted {
                        format!("{key} = {value}")
                    } else {
                        format!("{key} = {}", conf_quote(value))
                    }
                }))
                .collect();
        self.write_conf()?;
        let signal = self.data_dir.join(if standby {
            "standby.signal"
        } else {
            "recovery.signal"
        });
        fs::write(&signal, b"").with_context(|| format!("create {}", signal.display()))?;
        chown_to_cluster_user(&signal)
    }

    /// Waits for a server in recovery to finish and promote. Returns
    /// [`RecoveryOutcome::Promoted`] once `pg_is_in_recovery()` is false, and
    /// [`RecoveryOutcome::Failed`] as soon as the server has exited. Fails if neither happens
    /// within `timeout` (for example a standby, or `recovery_target_action = 'pause'`).
    pub fn wait_promoted(&self, timeout: Duration) -> anyhow::Result<RecoveryOutcome> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return Ok(RecoveryOutcome::Failed {
                    log_tail: self.log_tail(ERROR_LOG_LINES),
                });
            }
            // The status line turns `ready` when recovery has ended (it reads `standby` while
            // read-only connections are allowed); only then ask, to keep the log clean.
            if self.pm_status().as_deref() == Some("ready")
                && self.psql("SELECT pg_is_in_recovery()").ok().as_deref() == Some("f")
            {
                return Ok(RecoveryOutcome::Promoted);
            }
            if Instant::now() > deadline {
                bail!(
                    "server in {} still in recovery after {timeout:?} (status '{}')\n{}",
                    self.data_dir.display(),
                    self.pm_status().unwrap_or_default(),
                    self.log_report()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Promotes a standby (`pg_promote()`, waiting up to 60 s).
    pub fn promote(&self) -> anyhow::Result<()> {
        let promoted = self.psql("SELECT pg_promote(true, 60)")?;
        if promoted != "t" {
            bail!("pg_promote() returned '{promoted}'\n{}", self.log_report());
        }
        Ok(())
    }

    /// The whole server log (empty if there is none yet).
    pub fn log_contents(&self) -> String {
        fs::read(&self.log_file)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log_contents();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The log written since byte `offset`.
    fn log_since(&self, offset: u64) -> String {
        let mut text = Vec::new();
        if let Ok(mut file) = fs::File::open(&self.log_file)
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            let _ = file.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The log tail, framed for an error message.
    fn log_report(&self) -> String {
        format!(
            "server log {} (last {ERROR_LOG_LINES} lines):\n{}",
            self.log_file.display(),
            self.log_tail(ERROR_LOG_LINES)
        )
    }

    /// The data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log file, `<data dir>.log`.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The TCP port (on 127.0.0.1, and the socket's port number). It may change at start if
    /// the chosen port was taken.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The directory holding the PostgreSQL binaries this cluster uses.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// A libpq connection string for the superuser over the Unix socket, database `postgres`.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname=postgres",
            self.socket_dir.display(),
            self.port
        )
    }

    /// A PostgreSQL client program (`pg_waldump`, `pgbench`...) from the cluster's bindir, run
    /// as the cluster user, with `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE` and `PGDATA` set.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.env("PGHOST", &self.socket_dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", SUPERUSER)
            .env("PGDATABASE", "postgres")
            .env("PGDATA", &self.data_dir);
        as_cluster_user(cmd)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_server();
        let _ = fs::remove_dir_all(&self.socket_dir);
    }
}

/// Why a start attempt failed.
enum StartFailure {
    /// The port was taken; try another.
    PortInUse,
    Other(anyhow::Error),
}

/// Whether `last_archived` (from `pg_stat_archiver`) shows `target` archived: the same file, or
/// a later segment (or a later segment's `.backup` file) on the same timeline.
fn archived_covers(last_archived: &str, target: &str) -> bool {
    if last_archived == target {
        return true;
    }
    let segment = |name: &str| -> Option<String> {
        let seg = name.get(..24)?;
        seg.chars()
            .all(|c| c.is_ascii_hexdigit())
            .then(|| seg.to_ascii_uppercase())
    };
    match (segment(last_archived), segment(target)) {
        (Some(last), Some(want)) => target.len() == 24 && last[..8] == want[..8] && last > want,
        _ => false,
    }
}

/// The first line of `sql`, shortened, for error messages.
fn abbreviate(sql: &str) -> String {
    let line = sql.trim().lines().next().unwrap_or_default();
    if line.len() > 100 || sql.trim().lines().nth(1).is_some() {
        let cut = line
            .char_indices()
            .nth(100)
            .map(|(i, _)| i)
            .unwrap_or(line.len());
        format!("{}...", &line[..cut])
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_quote_escapes() {
        assert_eq!(conf_quote("cp %p /a/%f"), "'cp %p /a/%f'");
        assert_eq!(conf_quote(r"it's \n"), r"'it''s \\n'");
    }

    #[test]
    fn archived_covers_table() {
        let seg = "000000010000000000000003";
        for (last, want) in [
            ("000000010000000000000003", true),
            ("000000010000000000000004", true),
            ("000000010000000100000000", true),
            ("000000010000000000000002", false),
            ("000000010000000000000003.00000028.backup", false),
            ("000000010000000000000004.00000028.backup", true),
            ("000000020000000000000004", false),
            ("00000002.history", false),
            ("", false),
        ] {
            assert_eq!(archived_covers(last, seg), want, "{last}");
        }
        assert!(archived_covers("00000002.history", "00000002.history"));
    }

    #[test]
    fn start_retries_when_the_port_is_taken() {
        if bindir_or_skip("start_retries_when_the_port_is_taken").is_none() {
            return;
        }
        let dir = crate::dirs::TestDir::new("port-taken").expect("test dir");
        let mut cluster =
            Cluster::init(&dir.join("data"), &ClusterOptions::default()).expect("initdb");
        let taken = cluster.port();
        let _squatter = TcpListener::bind(("127.0.0.1", taken)).expect("occupy the port");
        cluster.start().expect("start on another port");
        assert_ne!(cluster.port(), taken);
        assert_eq!(
            cluster.psql("SHOW port").expect("show"),
            cluster.port().to_string()
        );
        assert!(cluster.log_contents().contains("could not bind"));
        cluster.stop().expect("stop");
    }

    #[test]
    fn abbreviate_shortens() {
        assert_eq!(abbreviate(" SELECT 1 "), "SELECT 1");
        assert_eq!(abbreviate("SELECT 1;\nSELECT 2"), "SELECT 1;...");
        assert_eq!(abbreviate(&"x".repeat(300)).len(), 103);
    }
}
