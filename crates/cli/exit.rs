//! The exit-code table of both binaries. PostgreSQL reads these: see the README's table.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: `push` — the file is durable in the repository (or was already there with identical content); `fetch` — the complete, verified file is at `%p`; `verify` — every object checked and the WAL is complete |
//! | 1 | `fetch`: the file is not in the archive (also: a hard failure in standby mode, logged, so the standby can fall back to streaming) |
//! | 2 | invalid arguments or configuration |
//! | 3 | `push`: the archive holds different content under this name; nothing was replaced. `backup`: a backup with this label already exists |
//! | 4 | the WAL or the repository belongs to another cluster (system identifier, PostgreSQL version or segment size) |
//! | 5 | storage failure: unreachable after retries, permission denied, bucket missing, disk full; `backup`: PostgreSQL unreachable, refused the connection or failed the backup |
//! | 6 | an archived object is corrupt or truncated, or the repository has no descriptor; `verify`: it found problems (missing, damaged or unreachable objects; each is printed) |
//! | 7 | a local file could not be read or written |
//! | 8 | the input file is not a valid WAL file |
//! | 9 | interrupted |
//! | 10 | internal error (a bug in walferry; please report it) |
//! | 200 + n | `fetch` in archive recovery: the failure of class n above (202, 204–210); any argument error of `walferry-restore` exits 202, since PostgreSQL may be the caller. PostgreSQL treats any exit code above 125 as fatal and stops recovery, instead of taking the failure for "end of archive" and promoting at the wrong point |

use walferry_engine::ErrorKind;

/// What a process exit means. The numeric values are part of walferry's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Success = 0,
    /// `fetch`: the file is not in the archive.
    NotFound = 1,
    /// Invalid arguments or configuration.
    Usage = 2,
    /// `push`: different content already archived under this name.
    Conflict = 3,
    /// Another cluster's WAL or repository.
    WrongCluster = 4,
    /// Storage failure.
    Storage = 5,
    /// Corrupt archived object, or a repository without a descriptor.
    Corrupt = 6,
    /// Local I/O failure.
    LocalIo = 7,
    /// The input is not a valid WAL file.
    BadInput = 8,
    /// Interrupted.
    Cancelled = 9,
    /// An internal error: a bug.
    Bug = 10,
}

/// Added to a failure's code by `fetch` during archive recovery, so that PostgreSQL aborts
/// recovery (it treats exit codes above 125 as fatal).
pub const FETCH_HARD_FAILURE_OFFSET: u8 = 200;

impl Exit {
    /// The exit for an engine failure of class `kind`.
    pub fn for_kind(kind: ErrorKind) -> Exit {
        match kind {
            ErrorKind::BadInput => Exit::BadInput,
            ErrorKind::Config => Exit::Usage,
            ErrorKind::Conflict => Exit::Conflict,
            ErrorKind::WrongCluster => Exit::WrongCluster,
            ErrorKind::Storage | ErrorKind::Postgres => Exit::Storage,
            ErrorKind::Corrupt => Exit::Corrupt,
            ErrorKind::LocalIo => Exit::LocalIo,
            ErrorKind::Cancelled => Exit::Cancelled,
            ErrorKind::Unavailable => Exit::NotFound,
            ErrorKind::Internal => Exit::Bug,
            _ => Exit::Storage,
        }
    }

    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The code `fetch` uses for this failure during archive recovery: above 125.
    pub fn fetch_hard_code(self) -> u8 {
        FETCH_HARD_FAILURE_OFFSET + self.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let table = [
            (Exit::Success, 0),
            (Exit::NotFound, 1),
            (Exit::Usage, 2),
            (Exit::Conflict, 3),
            (Exit::WrongCluster, 4),
            (Exit::Storage, 5),
            (Exit::Corrupt, 6),
            (Exit::LocalIo, 7),
            (Exit::BadInput, 8),
            (Exit::Cancelled, 9),
            (Exit::Bug, 10),
        ];
        for (exit, code) in table {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }

    #[test]
    fn fetch_hard_failures_abort_recovery() {
        for exit in [
            Exit::Usage,
            Exit::WrongCluster,
            Exit::Storage,
            Exit::Corrupt,
            Exit::LocalIo,
            Exit::BadInput,
        ] {
            assert!(exit.fetch_hard_code() > 125, "{exit:?}");
        }
        assert_eq!(Exit::Storage.fetch_hard_code(), 205);
    }
}
