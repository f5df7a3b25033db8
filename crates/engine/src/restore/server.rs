//! Starting PostgreSQL on a restored data directory and following its recovery.
//!
//! [`start`] runs `pg_ctl start` without waiting, then watches the server until recovery
//! has an outcome: promoted, paused or shut down at the target, or a consistent standby. It
//! reads only files the server writes anyway: `postmaster.pid` (whose last line is the
//! server's state), the signal files (PostgreSQL removes `recovery.signal` when recovery
//! ends) and the server log, which also feeds progress (the WAL files restored so far).
//! Promotion counts as done only once the postmaster logs that it accepts connections: the
//! signal file goes and the new timeline is chosen before the end-of-recovery checkpoint, and
//! a server stopped in between restarts with crash recovery over whatever WAL `pg_wal` holds,
//! past the target.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tracing::debug;

use super::run::TargetAction;
use crate::blocking;
use crate::error::{Error, Result};

/// How often the server is looked at.
const POLL: Duration = Duration::from_millis(200);

/// How long the server may take to write `postmaster.pid` after `pg_ctl start`.
const PID_FILE_WAIT: Duration = Duration::from_secs(60);

/// How to start the server.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The `pg_ctl` program.
    pub pg_ctl: PathBuf,
    /// The server log (`pg_ctl -l`).
    pub log: PathBuf,
    /// The data directory holds `standby.signal`: wait until it is consistent.
    pub standby: bool,
    /// The configured `recovery_target_action`, or `None` without a target.
    pub action: Option<TargetAction>,
}

/// How recovery ended (or settled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// Recovery ended and the server accepts writes; the server keeps running.
    Promoted {
        /// The timeline it moved to, as the log reports it.
        timeline: Option<u32>,
    },
    /// Replay paused at the target; the server keeps running.
    Paused,
    /// The server reached the target and shut down (`recovery_target_action = 'shutdown'`).
    ShutDown,
    /// A standby reached a consistent state and keeps following the archive.
    Standby,
}

/// What [`start`] reports while it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryProgress {
    /// WAL files PostgreSQL logged as restored from the archive so far (a segment the
    /// prefetch pipeline placed in `pg_wal` is read from there and not logged).
    pub restored: u64,
    /// The last one.
    pub last: Option<String>,
    /// The WAL segment PostgreSQL is replaying, from its startup process's title.
    pub replaying: Option<String>,
    /// Time since the start.
    pub elapsed: Duration,
}

/// The effective user id of this process, from `/proc/self/status`; `None` when unknown.
pub fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Finds `pg_ctl`: in `bindir` when given, else on `PATH`, else in Debian's
/// `/usr/lib/postgresql/<major>/bin`.
pub fn find_pg_ctl(bindir: Option<&Path>, major: u32) -> Result<PathBuf> {
    if let Some(dir) = bindir {
        let path = dir.join("pg_ctl");
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::InvalidRequest {
                message: format!(
                    "there is no pg_ctl in '{}'; HINT: --pg-bin names the directory of PostgreSQL {major}'s programs",
                    dir.display()
                ),
            })
        };
    }
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::split_paths(&path_dirs)
        .chain(std::iter::once(PathBuf::from(format!(
            "/usr/lib/postgresql/{major}/bin"
        ))))
        .map(|d| d.join("pg_ctl"));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::InvalidRequest {
        message: format!(
            "cannot find pg_ctl on PATH or in /usr/lib/postgresql/{major}/bin; HINT: install PostgreSQL {major} or pass --pg-bin"
        ),
    })
}

/// Starts the server on `pgdata` and waits until recovery has an outcome, calling
/// `progress` every few seconds. Fails with [`Error::RecoveryFailed`] when the server stops
/// first (recovery aborted, a bad setting), quoting the log.
pub async fn start(
    pgdata: &Path,
    options: &StartOptions,
    mut progress: impl FnMut(&RecoveryProgress),
) -> Result<StartOutcome> {
    let started = Instant::now();
    if let Some(parent) = options.log.parent() {
        fs::create_dir_all(parent).map_err(|source| Error::LocalIo {
            action: "create directory",
            path: parent.to_owned(),
            source,
        })?;
    }
    let output = blocking({
        let pg_ctl = options.pg_ctl.clone();
        let pgdata = pgdata.to_owned();
        let log = options.log.clone();
        move || {
            Command::new(&pg_ctl)
                .arg("start")
                .arg("-W")
                .arg("-D")
                .arg(&pgdata)
                .arg("-l")
                .arg(&log)
                .output()
                .map_err(|source| Error::LocalIo {
                    action: "run",
                    path: pg_ctl,
                    source,
                })
        }
    })
    .await?;
    let failed = |reason: String| Error::RecoveryFailed {
        pgdata: pgdata.to_owned(),
        log: options.log.clone(),
        reason,
    };
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!(
            "pg_ctl start failed ({}): {}",
            output.status,
            one_line(&text)
        )));
    }

    let mut log = LogFollower::new(&options.log);
    let mut last_report = Instant::now();
    let mut seen_pid = false;
    loop {
        tokio::time::sleep(POLL).await;
        log.read_new();
        let state = server_state(pgdata);
        match &state {
            Some(_) => seen_pid = true,
            None if !seen_pid && started.elapsed() < PID_FILE_WAIT => continue,
            None => {}
        }
        let Some(status) = state else {
            // The server has exited.
            if options.action == Some(TargetAction::Shutdown) && log.shut_down_at_target {
                return Ok(StartOutcome::ShutDown);
            }
            let reason = log
                .failure()
                .unwrap_or_else(|| "the server exited".to_owned());
            return Err(failed(reason));
        };
        debug!(status = %status, "server state");
        if options.standby {
            if status == "standby" || log.consistent {
                return Ok(StartOutcome::Standby);
            }
        } else if status == "ready"
            && log.accepting_writes
            && !pgdata.join("recovery.signal").exists()
        {
            return Ok(StartOutcome::Promoted {
                timeline: log.new_timeline,
            });
        } else if options.action == Some(TargetAction::Pause) && log.paused {
            return Ok(StartOutcome::Paused);
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            progress(&RecoveryProgress {
                restored: log.restored,
                last: log.last_restored.clone(),
                replaying: replaying(pgdata),
                elapsed: started.elapsed(),
            });
        }
    }
}

/// The WAL segment the startup process of the server on `pgdata` is replaying: its title is
/// `postgres: startup recovering <segment>` (`update_process_title`, on by default).
fn replaying(pgdata: &Path) -> Option<String> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let postmaster: u32 = text.lines().next()?.trim().parse().ok()?;
    let children =
        fs::read_to_string(format!("/proc/{postmaster}/task/{postmaster}/children")).ok()?;
    children.split_whitespace().find_map(|pid| {
        let title = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let title = String::from_utf8_lossy(&title);
        let rest = title
            .strip_prefix("postgres: ")?
            .split("startup recovering ")
            .nth(1)?;
        let name: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
        (name.len() == 24).then_some(name)
    })
}

/// The state word of a running server (`starting`, `standby`, `ready`, `stopping`), or
/// `None` when no server runs on `pgdata`.
fn server_state(pgdata: &Path) -> Option<String> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return None;
    }
    // Line 8; absent while the server is still starting up.
    Some(
        text.lines()
            .nth(7)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| "starting".to_owned()),
    )
}

/// Reads the server log as it grows and keeps what [`start`] needs from it.
#[derive(Debug)]
struct LogFollower {
    path: PathBuf,
    offset: u64,
    /// An incomplete last line.
    pending: String,
    restored: u64,
    last_restored: Option<String>,
    consistent: bool,
    paused: bool,
    shut_down_at_target: bool,
    new_timeline: Option<u32>,
    /// The postmaster said it accepts (read-write) connections: promotion is complete.
    accepting_writes: bool,
    /// The last lines, for a failure report.
    tail: Vec<String>,
    /// FATAL or PANIC lines.
    fatal: Vec<String>,
}

impl LogFollower {
    fn new(path: &Path) -> LogFollower {
        LogFollower {
            path: path.to_owned(),
            offset: 0,
            pending: String::new(),
            restored: 0,
            last_restored: None,
            consistent: false,
            paused: false,
            shut_down_at_target: false,
            new_timeline: None,
            accepting_writes: false,
            tail: Vec::new(),
            fatal: Vec::new(),
        }
    }

    fn read_new(&mut self) {
        let Ok(mut file) = fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return;
        }
        self.offset += bytes.len() as u64;
        self.pending.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(at) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=at).collect();
            self.line(line.trim_end());
        }
    }

    fn line(&mut self, line: &str) {
        if let Some(rest) = line.split("restored log file \"").nth(1)
            && let Some(name) = rest.split('"').next()
        {
            self.restored += 1;
            self.last_restored = Some(name.to_owned());
        }
        if line.contains("consistent recovery state reached") {
            self.consistent = true;
        }
        if line.contains("recovery has paused") {
            self.paused = true;
        }
        // Not "... ready to accept read-only connections", which a hot standby says.
        if line.contains("database system is ready to accept connections") {
            self.accepting_writes = true;
        }
        if line.contains("shutdown at recovery target") {
            self.shut_down_at_target = true;
        }
        if let Some(rest) = line.split("selected new timeline ID: ").nth(1) {
            self.new_timeline = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok());
        }
        if line.contains("FATAL:") || line.contains("PANIC:") {
            self.fatal.push(line.to_owned());
        }
        self.tail.push(line.to_owned());
        if self.tail.len() > 5 {
            self.tail.remove(0);
        }
    }

    /// What the log says went wrong.
    fn failure(&self) -> Option<String> {
        let lines = if self.fatal.is_empty() {
            &self.tail
        } else {
            &self.fatal
        };
        (!lines.is_empty()).then(|| lines.join(" | "))
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_understood() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = LogFollower::new(&path);
        log.read_new();
        fs::write(
            &path,
            "2026-11-25 LOG:  restored log file \"000000010000000000000003\" from archive\n\
             LOG:  consistent recovery state reached at 0/3000100\n\
             LOG:  restored log file \"000000010000000000000004\" from archive\n\
             LOG:  selected new timeline ID: 2\n\
             LOG:  database system is ready to accept read-only connections\nLOG:  partial",
        )
        .unwrap();
        log.read_new();
        assert_eq!(log.restored, 2);
        assert_eq!(
            log.last_restored.as_deref(),
            Some("000000010000000000000004")
        );
        assert!(log.consistent);
        assert_eq!(log.new_timeline, Some(2));
        assert!(!log.accepting_writes, "a hot standby is not promoted");
        assert_eq!(log.pending, "LOG:  partial");
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(
            &mut file,
            b" line\nLOG:  database system is ready to accept connections\nFATAL:  recovery aborted\n",
        )
        .unwrap();
        log.read_new();
        assert!(log.accepting_writes);
        assert_eq!(log.failure().as_deref(), Some("FATAL:  recovery aborted"));
        assert!(log.tail.iter().any(|l| l == "LOG:  partial line"));
    }

    #[test]
    fn no_server_without_a_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(server_state(dir.path()), None);
        let pid = std::process::id();
        fs::write(
            dir.path().join("postmaster.pid"),
            format!("{pid}\n/d\n1\n5432\n/tmp\n*\n1 2\nstandby\n"),
        )
        .unwrap();
        assert_eq!(server_state(dir.path()).as_deref(), Some("standby"));
    }

    #[test]
    fn pg_ctl_in_a_named_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_pg_ctl(Some(dir.path()), 15).is_err());
        fs::write(dir.path().join("pg_ctl"), "").unwrap();
        assert_eq!(
            find_pg_ctl(Some(dir.path()), 15).unwrap(),
            dir.path().join("pg_ctl")
        );
    }
}
