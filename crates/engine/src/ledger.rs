//! The push ledger: which files of `pg_wal` are already durable in which repository, and which
//! ones a `push` is uploading right now.
//!
//! `push %p` uploads, beside `%p`, the next files PostgreSQL has marked ready
//! (`pg_wal/archive_status/<name>.ready`). PostgreSQL then calls `push` for each of them in
//! turn; the ledger lets those calls answer at once, without a runtime or a request.
//!
//! It lives in `pg_wal/walferry-push/`, which base backups leave out (they copy nothing of
//! `pg_wal` but `archive_status`):
//!
//! - `<name>.done`: written (to `<name>.done.tmp`, then renamed) only after the object is durable.
//!   It holds the repository's identity and the file's identity when it was read: device, inode,
//!   size, modification and change times. A later `push` of the same path counts the file as
//!   archived only when all of these match, so a file rewritten or replaced since, or a record
//!   from another repository, is uploaded (and compared) again.
//! - `<name>.lock`: a claim, held with `flock(2)` while one process uploads the file. Another
//!   `push` skips a claimed file when looking ahead, and waits for the claim when the file is
//!   its own `%p`. The kernel drops the lock when its holder dies, even by `SIGKILL`. The holder
//!   removes the file while still holding the lock; whoever locks a file checks that its path
//!   still names that file, so two processes never both believe they hold the same claim.
//!
//! - `worker`: locked by the background worker `push` starts (see `crate::push_worker`) for as
//!   long as it runs; there is at most one per `pg_wal`. It logs to `worker.log` beside it.
//!
//! Records are removed once PostgreSQL has acknowledged their file (its `.ready` is gone). A
//! lost or damaged record costs one more upload, which finds identical content and succeeds; a
//! record is never the only evidence that a file is durable in a way that could be wrong, since
//! it is written after the object is.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use walferry_wal::WalFileName;

/// The ledger's directory under `pg_wal`.
pub const LEDGER_DIR: &str = "walferry-push";

/// The first line of every record, and its version.
const RECORD_MAGIC: &str = "walferry-push 1";

/// What a file was when it was read: if all of it is unchanged, so is the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    /// The identity of an open file.
    pub fn of(file: &File) -> io::Result<FileId> {
        Ok(FileId::from_metadata(&file.metadata()?))
    }

    /// The identity of the file at `path`, following symbolic links.
    pub fn at(path: &Path) -> io::Result<FileId> {
        Ok(FileId::from_metadata(&fs::metadata(path)?))
    }

    fn from_metadata(m: &fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn to_line(self) -> String {
        format!(
            "{} {} {} {}.{:09} {}.{:09}",
            self.dev, self.ino, self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        )
    }

    fn parse(line: &str) -> Option<FileId> {
        let mut fields = line.split(' ');
        let mut next = || fields.next();
        let time = |s: Option<&str>| -> Option<(i64, i64)> {
            let (secs, nanos) = s?.split_once('.')?;
            Some((secs.parse().ok()?, nanos.parse().ok()?))
        };
        let id = FileId {
            dev: next()?.parse().ok()?,
            ino: next()?.parse().ok()?,
            size: next()?.parse().ok()?,
            mtime: time(next())?,
            ctime: time(next())?,
        };
        next().is_none().then_some(id)
    }
}

/// The ledger of one `pg_wal` for one repository.
#[derive(Debug, Clone)]
pub struct Ledger {
    pg_wal: PathBuf,
    dir: PathBuf,
    repo: String,
}

impl Ledger {
    /// The ledger for the directory holding `wal_path`, when that directory is a `pg_wal` (it
    /// has `archive_status/`). `repo` is the repository's identity
    /// (`walferry_store::StoreConfig::identity`). Touches nothing on disk but one `stat`.
    pub fn beside(wal_path: &Path, repo: &str) -> Option<Ledger> {
        let pg_wal = match wal_path.parent() {
            Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
            Some(p) => p.to_owned(),
            None => return None,
        };
        if !pg_wal.join("archive_status").is_dir() || repo.contains('\n') {
            return None;
        }
        Some(Ledger {
            dir: pg_wal.join(LEDGER_DIR),
            pg_wal,
            repo: repo.to_owned(),
        })
    }

    /// The `pg_wal` directory.
    pub fn pg_wal(&self) -> &Path {
        &self.pg_wal
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.done"))
    }

    /// Whether `name` is recorded as durable in this repository with exactly the identity
    /// `id`. Any read or parse failure is "no".
    pub fn is_durable(&self, name: &str, id: &FileId) -> bool {
        let Ok(text) = fs::read_to_string(self.record_path(name)) else {
            return false;
        };
        let mut lines = text.lines();
        lines.next() == Some(RECORD_MAGIC)
            && lines.next().and_then(FileId::parse).as_ref() == Some(id)
            && lines.next() == Some(self.repo.as_str())
            && lines.next().is_none()
    }

    /// Records that `name`, with identity `id`, is durable in the repository. Call only once
    /// the object is durable, and while holding the file's [`Claim`].
    pub fn record(&self, _claim: &Claim, name: &str, id: &FileId) -> io::Result<()> {
        let path = self.record_path(name);
        let tmp = self.dir.join(format!("{name}.done.tmp"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        write!(file, "{RECORD_MAGIC}\n{}\n{}\n", id.to_line(), self.repo)?;
        drop(file);
        fs::rename(&tmp, &path)
    }

    fn ensure_dir(&self) -> io::Result<()> {
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }

    /// Claims `name` for upload: `Ok(None)` when another process holds it. With `wait`, waits
    /// for the holder instead (blocking the thread).
    pub fn claim(&self, name: &str, wait: bool) -> io::Result<Option<Claim>> {
        self.ensure_dir()?;
        let path = self.dir.join(format!("{name}.lock"));
        loop {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?;
            if wait {
                file.lock()?;
            } else {
                match file.try_lock() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => return Ok(None),
                    Err(TryLockError::Error(e)) => return Err(e),
                }
            }
            // The holder we waited for removes the path before it lets go: a lock on a file
            // the path no longer names is no claim. Open it again.
            let held = file.metadata()?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(Claim { path, _file: file }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether another process holds the claim on `name` right now. Creates nothing.
    pub fn is_claimed(&self, name: &str) -> bool {
        let Ok(file) = OpenOptions::new()
            .write(true)
            .open(self.dir.join(format!("{name}.lock")))
        else {
            return false;
        };
        matches!(file.try_lock(), Err(TryLockError::WouldBlock))
    }

    /// Takes the lock a background push worker holds while it runs (the file `worker` in the
    /// ledger): `Ok(None)` when another process holds it. The lock goes with the file handle.
    pub fn lock_worker(&self) -> io::Result<Option<File>> {
        self.ensure_dir()?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.dir.join("worker"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Whether a background push worker runs for this `pg_wal` (of any repository).
    pub fn worker_running(&self) -> bool {
        matches!(self.lock_worker(), Ok(None))
    }

    /// The files PostgreSQL has marked ready for archiving, in the order its archiver takes
    /// them: timeline history files first, then by name.
    pub fn ready_files(&self) -> io::Result<Vec<WalFileName>> {
        let mut ready: Vec<WalFileName> = fs::read_dir(self.pg_wal.join("archive_status"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                WalFileName::parse(name.strip_suffix(".ready")?).ok()
            })
            .collect();
        ready.sort_by_cached_key(|n| (!matches!(n, WalFileName::History(_)), n.to_string()));
        Ok(ready)
    }

    /// Removes what no longer serves: records and temporary files of files PostgreSQL has
    /// acknowledged (no `.ready` left), and lock files nobody holds. Best effort.
    pub fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let status = self.pg_wal.join("archive_status");
        for entry in entries.filter_map(|e| e.ok()) {
            let Ok(file_name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some(name) = file_name.strip_suffix(".lock") {
                // Dropping a claim removes its file.
                let _ = self.claim(name, false);
                continue;
            }
            let name = file_name
                .strip_suffix(".done.tmp")
                .or_else(|| file_name.strip_suffix(".done"));
            if let Some(name) = name
                && !status.join(format!("{name}.ready")).exists()
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The right to upload one file and record it, held until dropped.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    _file: File,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Remove the path while still holding the lock (the file closes after this).
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg_wal() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let pg_wal = dir.path().join("pg_wal");
        fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
        (dir, pg_wal)
    }

    const SEG: &str = "000000010000000000000003";

    #[test]
    fn only_a_pg_wal_has_a_ledger() {
        let (dir, pg_wal) = pg_wal();
        assert!(Ledger::beside(&pg_wal.join(SEG), "file:///r").is_some());
        assert!(Ledger::beside(&dir.path().join(SEG), "file:///r").is_none());
        assert!(Ledger::beside(&pg_wal.join(SEG), "file:///r\nx").is_none());
    }

    #[test]
    fn a_record_holds_for_the_same_file_and_repository_only() {
        let (_dir, pg_wal) = pg_wal();
        let path = pg_wal.join(SEG);
        fs::write(&path, b"wal").unwrap();
        let ledger = Ledger::beside(&path, "s3://b/p at http://127.0.0.1:1").unwrap();
        let id = FileId::at(&path).unwrap();
        assert!(!ledger.is_durable(SEG, &id));

        let claim = ledger.claim(SEG, false).unwrap().unwrap();
        ledger.record(&claim, SEG, &id).unwrap();
        drop(claim);
        assert!(ledger.is_durable(SEG, &id));
        assert!(!pg_wal.join(LEDGER_DIR).join(format!("{SEG}.lock")).exists());

        let other = Ledger::beside(&path, "s3://b/p at http://127.0.0.1:2").unwrap();
        assert!(!other.is_durable(SEG, &id), "another repository");

        // The file rewritten: its identity changes (size, and the change time).
        fs::write(&path, b"wal, again").unwrap();
        assert!(!ledger.is_durable(SEG, &FileId::at(&path).unwrap()));

        // A damaged record is no record.
        fs::write(pg_wal.join(LEDGER_DIR).join(format!("{SEG}.done")), "x").unwrap();
        assert!(!ledger.is_durable(SEG, &id));
    }

    #[test]
    fn file_ids_round_trip() {
        let (_dir, pg_wal) = pg_wal();
        let path = pg_wal.join(SEG);
        fs::write(&path, b"wal").unwrap();
        let id = FileId::at(&path).unwrap();
        assert_eq!(FileId::parse(&id.to_line()), Some(id));
        assert_eq!(id.size(), 3);
        for bad in ["", "1 2 3", "1 2 3 4.5 6.7 8", "a 2 3 4.5 6.7"] {
            assert_eq!(FileId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_claim_is_held_by_one_at_a_time() {
        let (_dir, pg_wal) = pg_wal();
        let ledger = Ledger::beside(&pg_wal.join(SEG), "file:///r").unwrap();
        assert!(!ledger.is_claimed(SEG));
        let first = ledger.claim(SEG, false).unwrap().expect("free");
        assert!(ledger.claim(SEG, false).unwrap().is_none(), "held");
        assert!(ledger.is_claimed(SEG));

        // A waiter gets it once the holder lets go, on a fresh lock file.
        let waiter = {
            let ledger = ledger.clone();
            std::thread::spawn(move || ledger.claim(SEG, true).unwrap().is_some())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(first);
        assert!(waiter.join().unwrap());
        assert!(ledger.claim(SEG, false).unwrap().is_some());
    }

    #[test]
    fn one_worker_at_a_time() {
        let (_dir, pg_wal) = pg_wal();
        let ledger = Ledger::beside(&pg_wal.join(SEG), "file:///r").unwrap();
        assert!(!ledger.worker_running());
        let held = ledger.lock_worker().unwrap().expect("free");
        assert!(ledger.worker_running());
        assert!(ledger.lock_worker().unwrap().is_none());
        ledger.sweep();
        assert!(
            ledger.worker_running(),
            "sweep leaves the worker's lock alone"
        );
        drop(held);
        assert!(!ledger.worker_running());
    }

    #[test]
    fn ready_files_come_in_the_archivers_order() {
        let (_dir, pg_wal) = pg_wal();
        let status = pg_wal.join("archive_status");
        for name in [
            "000000020000000000000005.ready",
            "000000010000000000000004.ready",
            "00000002.history.ready",
            "000000010000000000000003.done",
            "000000010000000000000004.partial.ready",
            "junk.ready",
        ] {
            fs::write(status.join(name), b"").unwrap();
        }
        let ledger = Ledger::beside(&pg_wal.join(SEG), "file:///r").unwrap();
        let names: Vec<String> = ledger
            .ready_files()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "00000002.history",
                "000000010000000000000004",
                "000000010000000000000004.partial",
                "000000020000000000000005",
            ]
        );
    }

    #[test]
    fn sweep_forgets_acknowledged_files() {
        let (_dir, pg_wal) = pg_wal();
        let status = pg_wal.join("archive_status");
        let ledger = Ledger::beside(&pg_wal.join(SEG), "file:///r").unwrap();
        let other = "000000010000000000000004";
        for name in [SEG, other] {
            let path = pg_wal.join(name);
            fs::write(&path, b"wal").unwrap();
            let claim = ledger.claim(name, false).unwrap().unwrap();
            ledger
                .record(&claim, name, &FileId::at(&path).unwrap())
                .unwrap();
        }
        fs::write(status.join(format!("{other}.ready")), b"").unwrap();
        // A lock file left by a process that died, and one still held.
        let dir = pg_wal.join(LEDGER_DIR);
        fs::write(dir.join("000000010000000000000009.lock"), b"").unwrap();
        let held = ledger.claim("00000001000000000000000A", false).unwrap();

        ledger.sweep();
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!("{other}.done"),
                "00000001000000000000000A.lock".to_owned(),
            ]
        );
        drop(held);
    }
}
