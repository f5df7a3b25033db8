//! The spool: where the prefetch pipeline leaves verified WAL files for `fetch` to take.
//!
//! The spool lives inside the data directory's WAL directory, so that serving a file is a
//! `rename(2)` on the filesystem of `pg_wal` (which may be a symlink to another filesystem;
//! nothing is resolved, paths are only joined):
//!
//! ```text
//! <pg_wal>/
//!     000000010000000000000005          a segment fetch placed here when PostgreSQL asked
//!     archive_status/000000010000000000000005.done
//!     walferry-spool/
//!         current                       "3f9c0a1b2c3d4e5f\n": the generation to serve from
//!         started                       when a fetch last started a pipeline
//!         3f9c0a1b2c3d4e5f/             the generation of the running pipeline
//!             lock                      locked (exclusive) while the pipeline runs
//!             planned                   the pipeline has planned its work
//!             place                     fetch may hand segments over in pg_wal itself
//!             000000010000000000000006  published: complete, verified, synced, ready
//!             000000010000000000000007.pending -> pending
//!                                       a symbolic link: the pipeline is fetching this file
//!         0a1b2c3d4e5f6071/             stale: its pipeline died; the next one removes it
//! ```
//!
//! A file being written has no name at all (`O_TMPFILE`) until it is published: its name is
//! linked to it only once it is complete and verified. (On a filesystem without `O_TMPFILE`
//! it is written as `<name>.tmp` and renamed.) The pending marks are symbolic links, and
//! nothing else in a generation is created and removed while PostgreSQL may be walking the
//! data directory: PostgreSQL fsyncs every regular file of a data directory restored from a
//! backup when it starts, and logs each file that vanishes between its listing and its open;
//! symbolic links it skips.
//!
//! A generation is named by 16 lowercase hex digits, chosen at random by the pipeline that
//! creates it. `current` holds that name and a newline.
//!
//! # The contract
//!
//! - [`SpoolWriter::create`] starts a fresh, empty generation, locks it, points `current` at it
//!   and removes every other generation. It fails with [`Error::SpoolBusy`] when another
//!   generation's lock is held: one pipeline per data directory.
//! - [`SpoolWriter::publish`] renames a complete file into the generation: a reader sees either
//!   no file or the whole file under a WAL file name.
//! - [`SpoolReader::take`] serves a file only from a *live* generation: the one `current`
//!   names, whose lock its pipeline holds at the moment of the check. A file found there is
//!   safe to hand to PostgreSQL because only the running pipeline writes into its own
//!   generation, the generation was empty when it was created, and the pipeline publishes only
//!   files it has downloaded and verified (frame checksum, size, page header) for this
//!   recovery. A stale generation is never served from, even though its files were verified
//!   once: its pipeline is gone, and with it the knowledge of which recovery (repository,
//!   timeline) they were fetched for. The reader leaves a stale generation alone; the next
//!   pipeline removes it. If the pipeline dies between the check and the rename, the file
//!   served is still one it verified for this recovery.
//! - A segment is handed over either by a rename to `%p` ([`Taken::Served`]), or, when the
//!   pipeline allows it ([`SpoolWriter::allow_placing`]) and `%p` is in `pg_wal`, moved into
//!   `pg_wal` under its own name ([`Taken::InPgWal`]): linked there (never over a file
//!   already there), marked `archive_status/<name>.done`, removed from the generation, and
//!   `pg_wal` synced; fetch then answers "not found" and PostgreSQL, in archive recovery, reads
//!   the segment from `pg_wal`. Only the segment PostgreSQL asked for is placed, at the
//!   moment it asks, exactly as PostgreSQL itself keeps a file it restored in `pg_wal`; it is
//!   spared what PostgreSQL does with every file a `restore_command` hands it (sync it,
//!   rename it, sync the directory).
//!
//! # Locks
//!
//! Locks are `flock(2)`-style ([`File::try_lock`]): held per open file description, so a second
//! open of the lock file sees the lock even in the same process, and released by the kernel when
//! the process dies, so a crashed pipeline's generation turns stale by itself.
//!
//! Only a generation's own pipeline ever takes its lock *exclusively*. Everyone else only
//! checks it, with a *shared* try-lock released at once: it fails only while the pipeline holds
//! its exclusive lock. Checks never disturb each other, so "locked" means exactly "its pipeline
//! runs". (Were checks exclusive, a reader checking a stale generation, or a starting pipeline
//! clearing it away, would for that moment make it look live to another reader, and a stale
//! file could be served.)
//!
//! The pipeline syncs each file before it names it (PostgreSQL syncs a file a
//! `restore_command` hands it anyway, and a placed segment must be durable before PostgreSQL
//! reads it from `pg_wal`), `current` when it writes it, and fetch syncs `pg_wal` after placing
//! a segment there; nothing else is synced: after a crash every generation is stale.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;
use tracing::{debug, warn};
use walferry_wal::WalFileName;

use crate::error::{Error, Result};

/// The spool directory's name inside `pg_wal`.
pub const SPOOL_DIR: &str = "walferry-spool";

/// The file naming the generation to serve from.
const CURRENT: &str = "current";

/// The lock file inside a generation.
const LOCK: &str = "lock";

/// The length of a generation id: 16 hex digits.
const GENERATION_LEN: usize = 16;

/// The marker a pipeline keeps beside a file it is fetching: `<name>.pending`.
const PENDING_SUFFIX: &str = ".pending";

/// The file in a generation that lets fetch place segments in `pg_wal` itself.
const PLACE: &str = "place";

/// Where a pending mark points; the target never exists.
const PENDING_TARGET: &str = "pending";

/// The file whose age tells whether a pipeline was started recently.
const STARTED: &str = "started";

/// The file a pipeline creates in its generation once it has planned and marked its first
/// downloads: until then, a file it does not hold may still be on its way.
const PLANNED: &str = "planned";

/// Creates the files a [`SpoolWriter`] publishes; cheap to clone and to send to the threads
/// that write them.
#[derive(Debug, Clone)]
pub struct FileMaker {
    gen_dir: PathBuf,
    mode: Mode,
}

impl FileMaker {
    /// A new file to write `name` into, nameless until [`SpoolWriter::publish_file`] links it
    /// into the generation.
    pub fn create(&self, name: &WalFileName) -> Result<SpoolFile> {
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        match rustix::fs::open(&self.gen_dir, flags, self.mode) {
            Ok(fd) => {
                return Ok(SpoolFile {
                    file: File::from(fd),
                    tmp: None,
                });
            }
            // Filesystems without O_TMPFILE say so in one of these ways.
            Err(e) if e == Errno::OPNOTSUPP || e == Errno::ISDIR || e == Errno::INVAL => {}
            Err(e) => {
                return Err(Error::LocalIo {
                    action: "create a file in",
                    path: self.gen_dir.clone(),
                    source: e.into(),
                });
            }
        }
        let tmp = tmp_path(&self.gen_dir, name);
        let file = File::create(&tmp).map_err(|source| Error::LocalIo {
            action: "create",
            path: tmp.clone(),
            source,
        })?;
        Ok(SpoolFile {
            file,
            tmp: Some(tmp),
        })
    }
}

/// Where `name` is written before it is published, on a filesystem without `O_TMPFILE`.
fn tmp_path(gen_dir: &Path, name: &WalFileName) -> PathBuf {
    gen_dir.join(format!("{name}.tmp"))
}

/// A file the pipeline is writing for the spool; see [`FileMaker::create`].
#[derive(Debug)]
pub struct SpoolFile {
    file: File,
    /// Its temporary name, on a filesystem without `O_TMPFILE`.
    tmp: Option<PathBuf>,
}

impl SpoolFile {
    /// The open file, to write into.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Removes what was written, when the file will not be published.
    pub fn discard(self) {
        if let Some(tmp) = self.tmp {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// What [`SpoolReader::take`] did. Only `Served` touched the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The file was renamed from the live generation to the destination.
    Served,
    /// The file was moved from the live generation into `pg_wal` under its own name, where
    /// PostgreSQL reads it when `restore_command` answers "not found"; the destination is
    /// untouched.
    InPgWal,
    /// The live generation does not hold the file yet, but its pipeline is fetching it.
    Pending,
    /// The live generation does not hold the file and its pipeline is not fetching it.
    Miss,
    /// No pipeline runs: there is no spool, or its generation is stale.
    NoPipeline,
}

/// The fetch side of the spool: takes published files out of the live generation.
///
/// Needs no async runtime. A take allocates a path and a name and makes a handful of system
/// calls: open and read `current`, open and check the generation's `lock`, and one rename.
#[derive(Debug, Clone)]
pub struct SpoolReader {
    dir: PathBuf,
}

impl SpoolReader {
    /// The reader of the spool of the WAL directory `pg_wal`. Does no I/O.
    pub fn new(pg_wal: &Path) -> Self {
        SpoolReader {
            dir: pg_wal.join(SPOOL_DIR),
        }
    }

    /// Moves WAL file `name` from the live generation to `dest`, replacing `dest`.
    ///
    /// Returns [`Taken::NoPipeline`] when there is no spool, `current` is missing or
    /// malformed, or the generation it names is stale (its lock is not held) or gone;
    /// [`Taken::Pending`] when the live generation does not hold the file yet but its pipeline
    /// has marked it as being fetched, or has not planned its work yet; [`Taken::Miss`]
    /// otherwise. `dest` must be on the
    /// filesystem of `pg_wal` (PostgreSQL's `%p` is); if it is not, the file stays in the spool
    /// and the answer is `Miss`. Errors are failures to read the spool or to rename, with the
    /// path named.
    pub fn take(&self, name: &WalFileName, dest: &Path) -> Result<Taken> {
        let mut path = PathBuf::with_capacity(self.dir.as_os_str().len() + 64);
        path.push(&self.dir);
        path.push(CURRENT);
        let mut buf = [0u8; GENERATION_LEN + 2];
        let Some(generation) = read_current(&path, &mut buf)? else {
            return Ok(Taken::NoPipeline);
        };
        path.set_file_name(generation);
        path.push(LOCK);
        if !is_live(&path)? {
            debug!(file = %name, generation, "spool generation is stale; not serving from it");
            return Ok(Taken::NoPipeline);
        }
        path.set_file_name(name.to_string());
        if let WalFileName::Segment(_) = name
            && let Some(taken) = self.place(name, generation, &mut path, dest)?
        {
            return Ok(taken);
        }
        match fs::rename(&path, dest) {
            Ok(()) => {
                debug!(file = %name, generation, "served from the spool");
                Ok(Taken::Served)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.not_published(name, &mut path),
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                warn!(
                    file = %name,
                    dest = %dest.display(),
                    "the destination is not on the spool's filesystem; not serving from the spool"
                );
                Ok(Taken::Miss)
            }
            Err(source) => Err(Error::LocalIo {
                action: "move from the spool",
                path,
                source,
            }),
        }
    }

    /// The answer for a file the live generation does not hold (`path` is where it would
    /// be): [`Taken::Pending`] while it is marked as on its way or the pipeline has not planned
    /// its work yet, else [`Taken::Miss`].
    fn not_published(&self, name: &WalFileName, path: &mut PathBuf) -> Result<Taken> {
        path.set_file_name(format!("{name}{PENDING_SUFFIX}"));
        if exists(path)? {
            return Ok(Taken::Pending);
        }
        // A pipeline still planning has marked nothing yet: wait for its plan.
        path.set_file_name(PLANNED);
        if exists(path)? {
            Ok(Taken::Miss)
        } else {
            Ok(Taken::Pending)
        }
    }
}

impl SpoolReader {
    /// Hands segment `name` (published at `path` in the live generation `generation`) over in
    /// `pg_wal` itself, when the pipeline allows it and `dest` is in `pg_wal`: links it there
    /// under its own name, marks it `archive_status/<name>.done` as PostgreSQL marks a file it
    /// restored, removes it from the generation and syncs `pg_wal`, then answers
    /// [`Taken::InPgWal`]. `None` when it is not handed over that way: placing is not allowed,
    /// `dest` is elsewhere, `pg_wal` already holds a file of that name (PostgreSQL's own), or
    /// the link fails; the caller then renames it to `dest`.
    fn place(
        &self,
        name: &WalFileName,
        generation: &str,
        path: &mut PathBuf,
        dest: &Path,
    ) -> Result<Option<Taken>> {
        use std::os::unix::fs::MetadataExt;
        path.set_file_name(PLACE);
        let allowed = exists(path)?;
        path.set_file_name(name.to_string());
        if !allowed {
            return Ok(None);
        }
        let pg_wal = self.dir.parent().unwrap_or(Path::new("."));
        let dest_dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let same_dir = match (fs::metadata(dest_dir), fs::metadata(pg_wal)) {
            (Ok(d), Ok(w)) => (d.dev(), d.ino()) == (w.dev(), w.ino()),
            _ => false,
        };
        if !same_dir {
            return Ok(None);
        }
        let in_pg_wal = pg_wal.join(name.to_string());
        match fs::hard_link(&*path, &in_pg_wal) {
            Ok(()) => {}
            // Not published: the caller's rename finds that out too.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                debug!(file = %name, "not placed in pg_wal ({e}); handing it over by rename");
                return Ok(None);
            }
        }
        let done = pg_wal.join("archive_status").join(format!("{name}.done"));
        if let Err(e) = File::create(&done) {
            // Only costs PostgreSQL archiving the segment again.
            warn!(path = %done.display(), "could not mark the segment as archived: {e}");
        }
        // The pipeline notices it taken; gone already if it discarded it meanwhile.
        remove_if_present(path)?;
        // As PostgreSQL syncs pg_wal after naming a restored file: crash recovery after the
        // end of archive recovery may need it.
        File::open(pg_wal)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| Error::LocalIo {
                action: "sync",
                path: pg_wal.to_owned(),
                source,
            })?;
        debug!(file = %name, generation, placed = true, "served from the spool");
        Ok(Some(Taken::InPgWal))
    }

    /// Like [`take`](SpoolReader::take), and while the answer is [`Taken::Pending`], waits for
    /// the pipeline to publish the file, for at most `max_wait`: returns `Served` once it is
    /// taken, `Miss` when the pipeline gave up on it, `NoPipeline` when the pipeline stopped,
    /// and `Pending` when the time ran out.
    pub fn take_waiting(
        &self,
        name: &WalFileName,
        dest: &Path,
        max_wait: Duration,
    ) -> Result<Taken> {
        let started = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            let taken = self.take(name, dest)?;
            if taken != Taken::Pending || started.elapsed() >= max_wait {
                return Ok(taken);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// Whether a pipeline runs on this spool: `current` names a generation whose lock is held.
    pub fn pipeline_running(&self) -> Result<bool> {
        let mut buf = [0u8; GENERATION_LEN + 2];
        let Some(generation) = read_current(&self.dir.join(CURRENT), &mut buf)? else {
            return Ok(false);
        };
        is_live(&self.dir.join(generation).join(LOCK))
    }

    /// Whether a pipeline was ever started for this data directory (by a fetch, since its
    /// spool was created).
    pub fn ever_started(&self) -> bool {
        self.dir.join(STARTED).exists()
    }

    /// Whether a pipeline should be started now: true, and the time recorded, unless one was
    /// started less than `interval` ago (it may still be starting up, or it stopped because it
    /// could not run, and starting another at every request would not help). The spool
    /// directory is created when missing; `pg_wal` must exist.
    pub fn claim_start(&self, interval: Duration) -> Result<bool> {
        let path = self.dir.join(STARTED);
        let recent = fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())
            .is_some_and(|age| age < interval);
        if recent {
            return Ok(false);
        }
        let io_err = |path: PathBuf, source| Error::LocalIo {
            action: "write",
            path,
            source,
        };
        match fs::create_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(self.dir.clone(), e)),
        }
        fs::write(&path, format!("{}\n", std::process::id())).map_err(|e| io_err(path, e))?;
        Ok(true)
    }
}

/// Reads `current` into `buf` and returns the generation it names; `None` when it is missing
/// or malformed. A malformed id is never joined to a path.
fn read_current<'b>(path: &Path, buf: &'b mut [u8; GENERATION_LEN + 2]) -> Result<Option<&'b str>> {
    let io_err = |source| Error::LocalIo {
        action: "read",
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    let text = match &buf[..len] {
        [id @ .., b'\n'] | id => id,
    };
    match std::str::from_utf8(text) {
        Ok(id) if is_generation_id(id) => Ok(Some(id)),
        _ => {
            warn!(path = %path.display(), "spool pointer is malformed; not serving from the spool");
            Ok(None)
        }
    }
}

/// Whether the generation whose lock file is at `path` is live: its pipeline holds the lock.
/// Checked with a shared lock, released at once; a missing file is not locked.
fn is_live(path: &Path) -> Result<bool> {
    let io_err = |action, source| Error::LocalIo {
        action,
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("open", e)),
    };
    match file.try_lock_shared() {
        // Closing the file releases the lock.
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(io_err("lock", e)),
    }
}

/// Whether `s` is a generation id: exactly 16 lowercase hex digits.
fn is_generation_id(s: &str) -> bool {
    s.len() == GENERATION_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh generation id: the process id and the time, hashed with the per-process random
/// keys of [`RandomState`].
fn new_generation_id() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    format!("{:016x}", hasher.finish())
}

/// The pipeline side of the spool: owns one generation for as long as it lives.
///
/// Dropping the writer without [`remove`](SpoolWriter::remove) releases the lock and leaves a
/// stale generation behind, exactly as a crash does: readers never serve from it and the next
/// pipeline removes it. All methods block; call them from a blocking thread.
#[derive(Debug)]
pub struct SpoolWriter {
    dir: PathBuf,
    generation: String,
    gen_dir: PathBuf,
    /// Holds the generation's lock until the writer is dropped.
    lock: File,
    /// The files published and not taken yet, with their sizes; a file is forgotten once taken
    /// or discarded, so the writer's memory does not grow with the recovery.
    files: HashMap<WalFileName, u64>,
    bytes_held: u64,
}

/// Something a starting pipeline removes once `current` points at its own generation.
#[derive(Debug)]
enum Leftover {
    /// A stale generation directory, with a shared lock on it held while it is removed, so that
    /// no pipeline can take it for its own meanwhile (`None` when it has no lock file).
    Generation(PathBuf, Option<File>),
    /// A temporary `current` of a pipeline that died while starting.
    Pointer(PathBuf),
}

impl SpoolWriter {
    /// Starts a generation in the spool of the WAL directory `pg_wal`: creates it, locks it,
    /// points `current` at it and removes every other generation.
    ///
    /// Fails with [`Error::SpoolBusy`] when another generation's lock is held (another pipeline
    /// runs on this data directory); then nothing of the running pipeline's spool is touched
    /// and the new generation is removed again.
    pub fn create(pg_wal: &Path) -> Result<SpoolWriter> {
        let dir = pg_wal.join(SPOOL_DIR);
        fs::create_dir_all(&dir).map_err(|source| Error::LocalIo {
            action: "create directory",
            path: dir.clone(),
            source,
        })?;
        let (generation, gen_dir) = create_generation_dir(&dir)?;
        match Self::start(dir, generation, gen_dir.clone()) {
            Ok(writer) => Ok(writer),
            Err(e) => {
                let _ = fs::remove_dir_all(&gen_dir);
                Err(e)
            }
        }
    }

    fn start(dir: PathBuf, generation: String, gen_dir: PathBuf) -> Result<SpoolWriter> {
        let lock_path = gen_dir.join(LOCK);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&lock_path)
            .map_err(|source| Error::LocalIo {
                action: "create",
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            // A pipeline starting at the same moment is checking our fresh generation: of two
            // pipelines starting together, at least one fails.
            Err(TryLockError::WouldBlock) => {
                return Err(Error::SpoolBusy {
                    path: gen_dir.clone(),
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(Error::LocalIo {
                    action: "lock",
                    path: lock_path,
                    source,
                });
            }
        }

        // Checked before `current` moves, so that a second pipeline never takes the running
        // one's `current` away.
        let leftovers = find_leftovers(&dir, &generation)?;
        write_current(&dir, &generation)?;
        for leftover in leftovers {
            let (path, result) = match leftover {
                Leftover::Generation(path, lock) => {
                    let result = fs::remove_dir_all(&path);
                    drop(lock);
                    (path, result)
                }
                Leftover::Pointer(path) => {
                    let result = fs::remove_file(&path);
                    (path, result)
                }
            };
            match result {
                Ok(()) => debug!(path = %path.display(), "removed a stale spool generation"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::LocalIo {
                        action: "remove",
                        path,
                        source,
                    });
                }
            }
        }
        Ok(SpoolWriter {
            dir,
            generation,
            gen_dir,
            lock,
            files: HashMap::new(),
            bytes_held: 0,
        })
    }

    /// The generation's id.
    pub fn generation(&self) -> &str {
        &self.generation
    }

    /// Where to write `name` before publishing it: inside the generation, under a name that is
    /// never served.
    pub fn path_for_tmp(&self, name: &WalFileName) -> PathBuf {
        tmp_path(&self.gen_dir, name)
    }

    /// Makes the complete, verified file at `tmp` available as `name`, replacing an earlier
    /// copy of `name`. Atomic: a reader sees no file or the whole file. `tmp` must be on the
    /// spool's filesystem (see [`path_for_tmp`](SpoolWriter::path_for_tmp)). Syncing the file is
    /// the caller's choice; nothing else is synced.
    pub fn publish(&mut self, name: &WalFileName, tmp: &Path) -> Result<()> {
        let io_err = |action, source| Error::LocalIo {
            action,
            path: tmp.to_owned(),
            source,
        };
        let bytes = fs::metadata(tmp).map_err(|e| io_err("stat", e))?.len();
        fs::rename(tmp, self.gen_dir.join(name.to_string()))
            .map_err(|e| io_err("publish to the spool", e))?;
        // After the rename: a fetch that saw the mark finds the file once the mark is gone.
        self.unmark_pending(name)?;
        self.hold(name, bytes);
        Ok(())
    }

    /// Marks `name` as being fetched, so that a fetch asking for it waits for it
    /// ([`Taken::Pending`]) rather than downloading it a second time. The mark is a symbolic
    /// link (see the [module docs](self)); marking twice is fine.
    pub fn mark_pending(&self, name: &WalFileName) -> Result<()> {
        let path = self.pending_path(name);
        match std::os::unix::fs::symlink(PENDING_TARGET, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(Error::LocalIo {
                action: "create",
                path,
                source,
            }),
        }
    }

    /// Says that the pipeline has planned its work and marked its first downloads pending:
    /// from now on a file neither published nor marked is a [`Taken::Miss`]. Before, a
    /// fetch waits ([`Taken::Pending`]) rather than download what the pipeline is about to.
    pub fn mark_planned(&self) -> Result<()> {
        self.create_marker(PLANNED)
    }

    /// Creates the empty file `name` in the generation.
    fn create_marker(&self, name: &str) -> Result<()> {
        let path = self.gen_dir.join(name);
        File::create(&path)
            .map(drop)
            .map_err(|source| Error::LocalIo {
                action: "create",
                path,
                source,
            })
    }

    /// What creates files to publish into this generation, for the threads that write them.
    pub fn file_maker(&self) -> FileMaker {
        use std::os::unix::fs::PermissionsExt;
        // As PostgreSQL creates WAL files: readable by the group when the data directory is
        // (initdb --allow-group-access), by the owner only otherwise.
        let group = self
            .dir
            .parent()
            .and_then(|pg_wal| fs::metadata(pg_wal).ok())
            .is_some_and(|m| m.permissions().mode() & 0o040 != 0);
        FileMaker {
            gen_dir: self.gen_dir.clone(),
            mode: if group {
                Mode::RUSR | Mode::WUSR | Mode::RGRP
            } else {
                Mode::RUSR | Mode::WUSR
            },
        }
    }

    /// Makes the complete, verified `file` (from [`file_maker`](SpoolWriter::file_maker))
    /// available as `name`, like [`publish`](SpoolWriter::publish): a reader sees no file or
    /// the whole file.
    pub fn publish_file(&mut self, name: &WalFileName, file: SpoolFile) -> Result<()> {
        let SpoolFile { file, tmp } = file;
        if let Some(tmp) = tmp {
            drop(file);
            return self.publish(name, &tmp);
        }
        let dest = self.gen_dir.join(name.to_string());
        let io_err = |action, source| Error::LocalIo {
            action,
            path: dest.clone(),
            source,
        };
        let bytes = file.metadata().map_err(|e| io_err("stat", e))?.len();
        // An open file without a name is linked through its /proc entry.
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let link = || rustix::fs::linkat(CWD, &proc_path, CWD, &dest, AtFlags::SYMLINK_FOLLOW);
        match link() {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                remove_if_present(&dest)?;
                link().map_err(|e| io_err("publish to the spool", e.into()))?;
            }
            Err(e) => return Err(io_err("publish to the spool", e.into())),
        }
        drop(file);
        self.unmark_pending(name)?;
        self.hold(name, bytes);
        Ok(())
    }

    /// Removes the mark of [`mark_pending`](SpoolWriter::mark_pending): the pipeline gave up
    /// on `name`, and a fetch waiting for it fetches it itself.
    pub fn unmark_pending(&self, name: &WalFileName) -> Result<()> {
        remove_if_present(&self.pending_path(name))
    }

    fn pending_path(&self, name: &WalFileName) -> PathBuf {
        self.gen_dir.join(format!("{name}{PENDING_SUFFIX}"))
    }

    /// Counts `name` as held: `bytes` ahead of replay until it is taken.
    fn hold(&mut self, name: &WalFileName, bytes: u64) {
        if let Some(old) = self.files.insert(*name, bytes) {
            self.bytes_held -= old;
        }
        self.bytes_held += bytes;
    }

    /// Lets fetch hand segments over in `pg_wal` itself ([`Taken::InPgWal`]) rather than by
    /// rename to `%p`. The pipeline allows it unless the server archives restored files
    /// (`archive_mode = always`), which it does only for files it restored.
    pub fn allow_placing(&self) -> Result<()> {
        self.create_marker(PLACE)
    }

    /// Deletes a published file that was not taken (replay went past it), freeing its bytes.
    pub fn discard(&mut self, name: &WalFileName) -> Result<()> {
        if let Some(bytes) = self.files.get(name).copied() {
            remove_if_present(&self.gen_dir.join(name.to_string()))?;
            self.files.remove(name);
            self.bytes_held -= bytes;
        }
        Ok(())
    }

    /// Whether fetch has taken `name`, a file this writer published and still held: it is no
    /// longer in the generation. Then the writer forgets it: asked again, or for a file it
    /// never published, the answer is `false`. One `stat`.
    pub fn taken(&mut self, name: &WalFileName) -> Result<bool> {
        let Some(bytes) = self.files.get(name).copied() else {
            return Ok(false);
        };
        if exists(&self.gen_dir.join(name.to_string()))? {
            return Ok(false);
        }
        self.files.remove(name);
        self.bytes_held -= bytes;
        Ok(true)
    }

    /// The bytes of the files published and still in the generation. One `stat` per file
    /// held; what was taken is not forgotten here ([`taken`](SpoolWriter::taken) does that).
    pub fn bytes_held(&self) -> Result<u64> {
        let mut bytes = 0;
        for (name, held) in &self.files {
            if exists(&self.gen_dir.join(name.to_string()))? {
                bytes += held;
            }
        }
        Ok(bytes)
    }

    /// Removes the generation and, if it still names this generation, `current`: the pipeline's
    /// clean exit. Files not taken are deleted.
    pub fn remove(self) -> Result<()> {
        // The lock is held until the end: no other pipeline can start and move `current`
        // meanwhile, so the check and the removal of `current` cannot race with one.
        let current = self.dir.join(CURRENT);
        let mut buf = [0u8; GENERATION_LEN + 2];
        if read_current(&current, &mut buf)? == Some(self.generation.as_str()) {
            match fs::remove_file(&current) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::LocalIo {
                        action: "remove",
                        path: current,
                        source,
                    });
                }
            }
        }
        match fs::remove_dir_all(&self.gen_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::LocalIo {
                    action: "remove",
                    path: self.gen_dir.clone(),
                    source,
                });
            }
        }
        drop(self.lock);
        Ok(())
    }
}

/// Whether something (a file, a directory, a symbolic link even dangling) is at `path`.
fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::LocalIo {
            action: "check",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes the file at `path`; a missing file is fine.
fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::LocalIo {
            action: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Creates a fresh, empty generation directory in `dir`.
fn create_generation_dir(dir: &Path) -> Result<(String, PathBuf)> {
    let mut attempts = 0;
    loop {
        let generation = new_generation_id();
        let gen_dir = dir.join(&generation);
        match fs::create_dir(&gen_dir) {
            Ok(()) => return Ok((generation, gen_dir)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
            Err(source) => {
                return Err(Error::LocalIo {
                    action: "create directory",
                    path: gen_dir,
                    source,
                });
            }
        }
    }
}

/// The other generations and temporary pointers in `dir`, each generation's lock taken
/// (shared). Fails with [`Error::SpoolBusy`] if a generation is live. Unknown entries are left
/// alone.
fn find_leftovers(dir: &Path, own: &str) -> Result<Vec<Leftover>> {
    let io_err = |action, path: &Path, source| Error::LocalIo {
        action,
        path: path.to_owned(),
        source,
    };
    let mut leftovers = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
        let entry = entry.map_err(|e| io_err("list", dir, e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if name == own {
            continue;
        }
        if is_generation_id(name) {
            let path = entry.path();
            let lock = lock_stale(&path)?;
            leftovers.push(Leftover::Generation(path, lock));
        } else if let Some(id) = name
            .strip_prefix("current.")
            .and_then(|rest| rest.strip_suffix(".tmp"))
            && id != own
        {
            leftovers.push(Leftover::Pointer(entry.path()));
        }
    }
    Ok(leftovers)
}

/// Takes a shared lock on the generation at `gen_dir`, found while starting; `None` if it has
/// no lock file (its pipeline died before creating it). Fails with [`Error::SpoolBusy`] if the
/// generation is live.
fn lock_stale(gen_dir: &Path) -> Result<Option<File>> {
    let path = gen_dir.join(LOCK);
    let io_err = |action, source| Error::LocalIo {
        action,
        path: path.clone(),
        source,
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(Error::SpoolBusy {
            path: gen_dir.to_owned(),
        }),
        Err(TryLockError::Error(e)) => Err(io_err("lock", e)),
    }
}

/// Points `current` in `dir` at `generation`: a synced temporary file renamed over it.
fn write_current(dir: &Path, generation: &str) -> Result<()> {
    let tmp = dir.join(format!("{CURRENT}.{generation}.tmp"));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(format!("{generation}\n").as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dir.join(CURRENT))
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        Error::LocalIo {
            action: "write",
            path: dir.join(CURRENT),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn wal(name: &str) -> WalFileName {
        WalFileName::parse(name).unwrap()
    }

    const SEG3: &str = "000000010000000000000003";
    const SEG4: &str = "000000010000000000000004";

    /// A writer whose pipeline has planned its work, as fetch finds it most of the time.
    fn planned_writer(pg_wal: &Path) -> SpoolWriter {
        let writer = SpoolWriter::create(pg_wal).unwrap();
        writer.mark_planned().unwrap();
        writer
    }

    #[test]
    fn a_pipeline_still_planning_is_waited_for() {
        let pg_wal = tempfile::tempdir().unwrap();
        let writer = SpoolWriter::create(pg_wal.path()).unwrap();
        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Pending);
        writer.mark_planned().unwrap();
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Miss);
        // A pipeline that dies: no pipeline.
        drop(writer);
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::NoPipeline);
    }

    /// Writes `data` for `name` the way the pipeline does, and publishes it.
    fn put(writer: &mut SpoolWriter, name: &str, data: &[u8]) {
        let name = wal(name);
        let tmp = writer.path_for_tmp(&name);
        fs::write(&tmp, data).unwrap();
        writer.publish(&name, &tmp).unwrap();
    }

    fn spool_entries(pg_wal: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(pg_wal.join(SPOOL_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn sorted<const N: usize>(names: [&str; N]) -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        names.sort();
        names
    }

    fn current(pg_wal: &Path) -> String {
        fs::read_to_string(pg_wal.join(SPOOL_DIR).join(CURRENT)).unwrap()
    }

    fn would_block(result: std::result::Result<(), TryLockError>) -> bool {
        matches!(result, Err(TryLockError::WouldBlock))
    }

    #[test]
    fn locks_are_per_open_file_even_in_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let owner = File::create(&path).unwrap();
        let other = File::open(&path).unwrap();

        // Exclusive excludes every other open, shared or not.
        owner.try_lock().unwrap();
        assert!(would_block(other.try_lock()));
        assert!(would_block(other.try_lock_shared()));
        assert!(is_live(&path).unwrap());

        // Released on close.
        drop(owner);
        assert!(!is_live(&path).unwrap());

        // Shared checks do not exclude each other, only the exclusive lock.
        other.try_lock_shared().unwrap();
        assert!(!is_live(&path).unwrap());
        let owner = File::open(&path).unwrap();
        assert!(would_block(owner.try_lock()));
        drop(other);
        owner.try_lock().unwrap();
        assert!(is_live(&path).unwrap());
    }

    #[test]
    fn published_file_is_served_once() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut writer = planned_writer(pg_wal.path());
        assert_eq!(current(pg_wal.path()), format!("{}\n", writer.generation()));

        // Being written: not served.
        let tmp = writer.path_for_tmp(&wal(SEG3));
        fs::write(&tmp, b"segment three").unwrap();
        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Miss);
        assert!(!dest.exists());

        writer.publish(&wal(SEG3), &tmp).unwrap();
        fs::write(&dest, b"an older file").unwrap();
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Served);
        assert_eq!(fs::read(&dest).unwrap(), b"segment three");
        assert!(!writer.gen_dir.join(SEG3).exists());
        assert!(writer.taken(&wal(SEG3)).unwrap());

        fs::remove_file(&dest).unwrap();
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Miss);
        assert_eq!(reader.take(&wal(SEG4), &dest).unwrap(), Taken::Miss);
        assert!(!dest.exists());
    }

    #[test]
    fn every_kind_of_wal_file_name_is_served() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut writer = planned_writer(pg_wal.path());
        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");
        for name in [
            SEG3,
            "000000010000000000000003.partial",
            "00000002.history",
            "000000010000000000000003.00000028.backup",
        ] {
            put(&mut writer, name, name.as_bytes());
            assert_eq!(reader.take(&wal(name), &dest).unwrap(), Taken::Served);
            assert_eq!(fs::read(&dest).unwrap(), name.as_bytes());
        }
    }

    #[test]
    fn no_spool_is_no_pipeline() {
        let pg_wal = tempfile::tempdir().unwrap();
        let dest = pg_wal.path().join("RECOVERYXLOG");
        let reader = SpoolReader::new(pg_wal.path());
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::NoPipeline);

        // An empty spool directory, and a WAL directory that does not exist.
        fs::create_dir(pg_wal.path().join(SPOOL_DIR)).unwrap();
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::NoPipeline);
        let missing = SpoolReader::new(&pg_wal.path().join("no-such-dir"));
        assert_eq!(missing.take(&wal(SEG3), &dest).unwrap(), Taken::NoPipeline);
        assert!(!dest.exists());
    }

    #[test]
    fn stale_generation_is_never_served() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut writer = planned_writer(pg_wal.path());
        put(&mut writer, SEG3, b"segment three");
        let gen_dir = writer.gen_dir.clone();
        // A crash: the lock is released, the generation stays.
        drop(writer);

        let dest = pg_wal.path().join("RECOVERYXLOG");
        let reader = SpoolReader::new(pg_wal.path());
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::NoPipeline);
        assert!(!dest.exists());
        // The reader neither removes the file nor keeps the lock.
        assert!(gen_dir.join(SEG3).exists());
        assert!(!is_live(&gen_dir.join(LOCK)).unwrap());
    }

    #[test]
    fn new_writer_replaces_a_stale_generation() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut stale = SpoolWriter::create(pg_wal.path()).unwrap();
        put(&mut stale, SEG3, b"stale three");
        put(&mut stale, SEG4, b"stale four");
        let stale_dir = stale.gen_dir.clone();
        drop(stale);

        let mut writer = planned_writer(pg_wal.path());
        assert!(!stale_dir.exists());
        assert_eq!(current(pg_wal.path()), format!("{}\n", writer.generation()));
        assert_eq!(
            spool_entries(pg_wal.path()),
            sorted([CURRENT, writer.generation()])
        );

        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");
        assert_eq!(reader.take(&wal(SEG4), &dest).unwrap(), Taken::Miss);
        put(&mut writer, SEG3, b"fresh three");
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Served);
        assert_eq!(fs::read(&dest).unwrap(), b"fresh three");
    }

    #[test]
    fn leftovers_of_a_crashed_start_are_removed_and_unknown_entries_kept() {
        let pg_wal = tempfile::tempdir().unwrap();
        let spool = pg_wal.path().join(SPOOL_DIR);
        fs::create_dir(&spool).unwrap();
        // Died before creating its lock file, and before renaming its pointer.
        fs::create_dir(spool.join("00000000deadbeef")).unwrap();
        fs::write(spool.join("00000000deadbeef").join(SEG3), b"x").unwrap();
        fs::write(
            spool.join("current.00000000deadbeef.tmp"),
            b"00000000deadbeef\n",
        )
        .unwrap();
        fs::write(spool.join("notes.txt"), b"someone else's").unwrap();

        let writer = planned_writer(pg_wal.path());
        assert_eq!(
            spool_entries(pg_wal.path()),
            sorted([CURRENT, writer.generation(), "notes.txt"])
        );
    }

    #[test]
    fn second_writer_while_the_first_runs_is_refused() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut first = SpoolWriter::create(pg_wal.path()).unwrap();
        put(&mut first, SEG3, b"segment three");

        let err = SpoolWriter::create(pg_wal.path()).unwrap_err();
        assert!(matches!(err, Error::SpoolBusy { ref path } if *path == first.gen_dir));
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains(first.generation()), "{err}");

        // The running pipeline's spool is untouched, the refused one left nothing behind.
        assert_eq!(current(pg_wal.path()), format!("{}\n", first.generation()));
        assert_eq!(
            spool_entries(pg_wal.path()),
            sorted([CURRENT, first.generation()])
        );
        let dest = pg_wal.path().join("RECOVERYXLOG");
        let reader = SpoolReader::new(pg_wal.path());
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Served);
    }

    #[test]
    fn a_check_in_progress_never_makes_a_stale_generation_live() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut stale = SpoolWriter::create(pg_wal.path()).unwrap();
        put(&mut stale, SEG3, b"stale three");
        let lock_path = stale.gen_dir.join(LOCK);
        drop(stale);

        // Another reader's check, or a starting pipeline clearing the generation away, frozen
        // at the moment it holds the lock.
        let check = File::open(&lock_path).unwrap();
        assert!(!is_live(&lock_path).unwrap());
        check.try_lock_shared().unwrap();

        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::NoPipeline);
        assert!(!dest.exists());

        // Nor does it refuse a pipeline that starts meanwhile.
        let writer = planned_writer(pg_wal.path());
        assert!(!lock_path.exists());
        assert_eq!(
            spool_entries(pg_wal.path()),
            sorted([CURRENT, writer.generation()])
        );
    }

    #[test]
    fn malformed_pointer_is_no_pipeline_and_never_joined() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut writer = planned_writer(pg_wal.path());
        put(&mut writer, SEG3, b"segment three");
        let id = writer.generation().to_owned();
        let pointer = pg_wal.path().join(SPOOL_DIR).join(CURRENT);
        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");

        for bad in [
            String::new(),
            "\n".to_owned(),
            "0123".to_owned(),
            id.to_uppercase(),
            format!("{id}0"),
            format!("{id}\n\n"),
            format!(" {id}"),
            format!("../{SPOOL_DIR}/{id}"),
            "../../../../etc\n".to_owned(),
            "0123456789abcdeg".to_owned(),
            // Well formed, but no such generation.
            "0000000000000000\n".to_owned(),
        ] {
            fs::write(&pointer, &bad).unwrap();
            assert_eq!(
                reader.take(&wal(SEG3), &dest).unwrap(),
                Taken::NoPipeline,
                "{bad:?}"
            );
        }
        assert!(!dest.exists());
        // Without the trailing newline is accepted.
        fs::write(&pointer, &id).unwrap();
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Served);
    }

    #[test]
    fn names_are_wal_file_names_only() {
        // The spool's API takes parsed names: a path or anything else cannot reach a join.
        for bad in [
            "",
            "lock",
            "current",
            "../000000010000000000000003",
            "x/y",
            ".",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad:?}");
        }
        let pg_wal = tempfile::tempdir().unwrap();
        let writer = planned_writer(pg_wal.path());
        let tmp = writer.path_for_tmp(&wal(SEG3));
        assert_eq!(tmp.parent(), Some(writer.gen_dir.as_path()));
        assert!(WalFileName::parse(tmp.file_name().unwrap().to_str().unwrap()).is_err());
    }

    #[test]
    fn bytes_held_counts_published_files_not_taken() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut writer = planned_writer(pg_wal.path());
        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");
        assert_eq!(writer.bytes_held().unwrap(), 0);

        put(&mut writer, SEG3, b"abc");
        put(&mut writer, SEG4, b"defgh");
        assert_eq!(writer.bytes_held().unwrap(), 8);
        assert!(!writer.taken(&wal(SEG3)).unwrap());

        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Served);
        assert!(writer.taken(&wal(SEG3)).unwrap());
        // Then forgotten.
        assert!(!writer.taken(&wal(SEG3)).unwrap());
        assert_eq!(writer.bytes_held().unwrap(), 5);
        assert!(!writer.taken(&wal(SEG4)).unwrap());
        assert!(!writer.taken(&wal("000000010000000000000005")).unwrap());

        // Published again (PostgreSQL asks twice after a restart): replaced, not added.
        put(&mut writer, SEG4, b"defghij");
        assert_eq!(writer.bytes_held().unwrap(), 7);
        put(&mut writer, SEG3, b"abc");
        assert!(!writer.taken(&wal(SEG3)).unwrap());
        assert_eq!(writer.bytes_held().unwrap(), 10);

        assert_eq!(reader.take(&wal(SEG4), &dest).unwrap(), Taken::Served);
        assert!(writer.taken(&wal(SEG4)).unwrap());
        assert_eq!(writer.bytes_held().unwrap(), 3);
    }

    #[test]
    fn remove_deletes_the_generation_and_its_pointer() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut writer = planned_writer(pg_wal.path());
        put(&mut writer, SEG3, b"segment three");
        writer.remove().unwrap();
        assert!(spool_entries(pg_wal.path()).is_empty());

        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::NoPipeline);

        // The next pipeline starts as on a fresh data directory.
        let next = SpoolWriter::create(pg_wal.path()).unwrap();
        assert_eq!(current(pg_wal.path()), format!("{}\n", next.generation()));
    }

    #[test]
    fn generation_ids_are_well_formed_and_distinct() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| new_generation_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| is_generation_id(id)));
    }

    #[test]
    fn a_pending_file_is_waited_for() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut writer = planned_writer(pg_wal.path());
        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");
        writer.mark_pending(&wal(SEG3)).unwrap();
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Pending);
        assert_eq!(reader.take(&wal(SEG4), &dest).unwrap(), Taken::Miss);
        // Times out while pending.
        let waited = reader
            .take_waiting(&wal(SEG3), &dest, Duration::from_millis(20))
            .unwrap();
        assert_eq!(waited, Taken::Pending);

        // Published while a fetch waits: served.
        let tmp = writer.path_for_tmp(&wal(SEG3));
        let publisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            fs::write(&tmp, b"segment three").unwrap();
            writer.publish(&wal(SEG3), &tmp).unwrap();
            writer
        });
        let waited = reader
            .take_waiting(&wal(SEG3), &dest, Duration::from_secs(10))
            .unwrap();
        assert_eq!(waited, Taken::Served);
        assert_eq!(fs::read(&dest).unwrap(), b"segment three");
        let writer = publisher.join().unwrap();
        assert!(fs::symlink_metadata(writer.pending_path(&wal(SEG3))).is_err());

        // Given up on: a miss. The pipeline stopping: no pipeline.
        writer.mark_pending(&wal(SEG4)).unwrap();
        writer.unmark_pending(&wal(SEG4)).unwrap();
        assert_eq!(
            reader
                .take_waiting(&wal(SEG4), &dest, Duration::from_secs(10))
                .unwrap(),
            Taken::Miss
        );
        writer.mark_pending(&wal(SEG4)).unwrap();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(writer);
        });
        assert_eq!(
            reader
                .take_waiting(&wal(SEG4), &dest, Duration::from_secs(10))
                .unwrap(),
            Taken::NoPipeline
        );
        stopper.join().unwrap();
    }

    #[test]
    fn files_are_nameless_until_published_and_marks_are_links() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut writer = planned_writer(pg_wal.path());
        let gen_dir = writer.gen_dir.clone();
        writer.mark_pending(&wal(SEG3)).unwrap();
        writer.mark_pending(&wal(SEG3)).unwrap();
        let mark = fs::symlink_metadata(writer.pending_path(&wal(SEG3))).unwrap();
        assert!(mark.file_type().is_symlink());

        let mut file = writer.file_maker().create(&wal(SEG3)).unwrap();
        file.file().write_all(b"segment three").unwrap();
        // Being written, it has no name: only the lock and the mark are in the generation.
        let names = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            names(&gen_dir),
            [
                format!("{SEG3}.pending"),
                LOCK.to_owned(),
                PLANNED.to_owned()
            ]
        );
        writer.publish_file(&wal(SEG3), file).unwrap();
        assert_eq!(
            names(&gen_dir),
            [SEG3.to_owned(), LOCK.to_owned(), PLANNED.to_owned()]
        );
        assert_eq!(writer.bytes_held().unwrap(), 13);

        // Published again (a retry): replaced.
        let mut again = writer.file_maker().create(&wal(SEG3)).unwrap();
        again.file().write_all(b"three").unwrap();
        writer.publish_file(&wal(SEG3), again).unwrap();
        assert_eq!(writer.bytes_held().unwrap(), 5);

        let dest = pg_wal.path().join("RECOVERYXLOG");
        let reader = SpoolReader::new(pg_wal.path());
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Served);
        assert_eq!(fs::read(&dest).unwrap(), b"three");

        // A file not published leaves nothing behind.
        let unused = writer.file_maker().create(&wal(SEG4)).unwrap();
        unused.discard();
        assert_eq!(names(&gen_dir), [LOCK.to_owned(), PLANNED.to_owned()]);
    }

    #[test]
    fn segments_are_handed_over_in_pg_wal_when_placing_is_allowed() {
        let pg_wal = tempfile::tempdir().unwrap();
        fs::create_dir(pg_wal.path().join("archive_status")).unwrap();
        let mut writer = planned_writer(pg_wal.path());
        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");

        // Not allowed (yet): by rename.
        put(&mut writer, SEG3, b"segment three");
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Served);
        assert!(!pg_wal.path().join(SEG3).exists());

        writer.allow_placing().unwrap();
        put(&mut writer, SEG4, b"segment four");
        assert_eq!(reader.take(&wal(SEG4), &dest).unwrap(), Taken::InPgWal);
        assert_eq!(fs::read(pg_wal.path().join(SEG4)).unwrap(), b"segment four");
        assert!(
            pg_wal
                .path()
                .join(format!("archive_status/{SEG4}.done"))
                .exists()
        );
        assert_eq!(
            fs::read(&dest).unwrap(),
            b"segment three",
            "the destination is untouched"
        );
        assert!(writer.taken(&wal(SEG4)).unwrap());
        assert_eq!(writer.bytes_held().unwrap(), 0);
        // Asked again: the spool no longer holds it.
        assert_eq!(reader.take(&wal(SEG4), &dest).unwrap(), Taken::Miss);

        // History files are handed over by rename.
        let history = "00000002.history";
        put(&mut writer, history, b"1\t0/3000000\tx\n");
        assert_eq!(reader.take(&wal(history), &dest).unwrap(), Taken::Served);
        assert!(!pg_wal.path().join(history).exists());
    }

    #[test]
    fn a_name_taken_in_pg_wal_or_a_destination_elsewhere_is_handed_over_by_rename() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut writer = planned_writer(pg_wal.path());
        writer.allow_placing().unwrap();
        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");

        // PostgreSQL's own file (a recycled segment, say) under that name is left alone.
        fs::write(pg_wal.path().join(SEG3), b"postgres's").unwrap();
        put(&mut writer, SEG3, b"segment three");
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Served);
        assert_eq!(fs::read(pg_wal.path().join(SEG3)).unwrap(), b"postgres's");
        assert_eq!(fs::read(&dest).unwrap(), b"segment three");

        // A destination outside pg_wal: PostgreSQL would not look in pg_wal for it.
        let elsewhere = tempfile::tempdir().unwrap();
        let outside = elsewhere.path().join("RECOVERYXLOG");
        put(&mut writer, SEG4, b"segment four");
        assert_eq!(reader.take(&wal(SEG4), &outside).unwrap(), Taken::Served);
        assert_eq!(fs::read(&outside).unwrap(), b"segment four");
        assert!(!pg_wal.path().join(SEG4).exists());

        // A file on its way is waited for, not placed.
        let seg5 = wal("000000010000000000000005");
        writer.mark_pending(&seg5).unwrap();
        assert_eq!(reader.take(&seg5, &dest).unwrap(), Taken::Pending);

        // A stale generation places nothing.
        let seg6 = "000000010000000000000006";
        put(&mut writer, seg6, b"segment six");
        drop(writer);
        assert_eq!(reader.take(&wal(seg6), &dest).unwrap(), Taken::NoPipeline);
        assert!(!pg_wal.path().join(seg6).exists());
    }

    #[test]
    fn discarded_files_free_their_bytes() {
        let pg_wal = tempfile::tempdir().unwrap();
        let mut writer = planned_writer(pg_wal.path());
        put(&mut writer, SEG3, b"three");
        put(&mut writer, SEG4, b"four");
        writer.discard(&wal(SEG3)).unwrap();
        assert_eq!(writer.bytes_held().unwrap(), 4);
        assert!(!writer.gen_dir.join(SEG3).exists());
        let reader = SpoolReader::new(pg_wal.path());
        let dest = pg_wal.path().join("RECOVERYXLOG");
        assert_eq!(reader.take(&wal(SEG3), &dest).unwrap(), Taken::Miss);
    }

    #[test]
    fn a_start_is_claimed_once_per_interval() {
        let pg_wal = tempfile::tempdir().unwrap();
        let reader = SpoolReader::new(pg_wal.path());
        assert!(!reader.pipeline_running().unwrap());
        assert!(reader.claim_start(Duration::from_secs(60)).unwrap());
        assert!(!reader.claim_start(Duration::from_secs(60)).unwrap());
        assert!(reader.claim_start(Duration::ZERO).unwrap());
        // The file does not disturb a pipeline starting afterwards.
        let writer = planned_writer(pg_wal.path());
        assert_eq!(
            spool_entries(pg_wal.path()),
            sorted([CURRENT, STARTED, writer.generation()])
        );
        assert!(reader.pipeline_running().unwrap());
        drop(writer);
        assert!(!reader.pipeline_running().unwrap());
    }
}
