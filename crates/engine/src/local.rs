//! Local file writes that never leave a partial file under the final name.

use std::fs::{self, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};

/// Writes a file at `dest` through a temporary file beside it, renamed to `dest` once `write`
/// has written the content (`write` is given the file, and `dest` to name in errors). A
/// reader sees either no file or the whole file; on any failure the temporary file is removed.
///
/// The file is not fsynced: this serves `restore_command`, and PostgreSQL makes a restored file
/// durable itself when it keeps it (`durable_rename` in `KeepFileRestoredFromArchive`); after a
/// crash, recovery asks for the file again.
pub(crate) fn write_atomically_with<T>(
    dest: &Path,
    write: impl FnOnce(&mut fs::File, &Path) -> Result<T>,
) -> Result<T> {
    let io_err = |action, source| Error::LocalIo {
        action,
        path: dest.to_owned(),
        source,
    };
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("walferry");
    let tmp = dir.join(format!(".{file_name}.walferry-{}.tmp", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io_err("write", e))?;
    let written = match write(&mut file, dest) {
        Ok(written) => written,
        Err(e) => {
            drop(file);
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    drop(file);
    if let Err(source) = fs::rename(&tmp, dest) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", source));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
        write_atomically_with(dest, |file, path| {
            file.write_all(data).map_err(|source| Error::LocalIo {
                action: "write",
                path: path.to_owned(),
                source,
            })
        })
    }

    #[test]
    fn writes_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        write_atomically(&dest, b"abc").unwrap();
        write_atomically(&dest, b"defg").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"defg");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("no/such/dir/RECOVERYXLOG");
        let err = write_atomically(&dest, b"abc").unwrap_err();
        assert!(err.to_string().contains("RECOVERYXLOG"), "{err}");
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let err = write_atomically_with(&dest, |file, _| {
            file.write_all(b"partial").unwrap();
            Err::<(), _>(Error::Internal {
                message: "refused".into(),
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
