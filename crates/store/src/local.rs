//! A repository in a local directory (also usable on an NFS mount).
//!
//! An object with key `a/b/c` is the file `<root>/a/b/c`. A put writes `<root>/a/b/.c.<random>.tmp`,
//! fsyncs it, then links it to its final name — `link(2)` for [`PutMode::Create`], which fails
//! atomically if the name exists, and `rename(2)` for [`PutMode::Overwrite`] — and fsyncs the
//! directory (and any directory it had to create). Readers therefore never see a partial object,
//! and an acknowledged put survives a power loss. Names starting with `.` are never objects, so
//! a temporary file left by a crash is ignored by listings (keys cannot start with `.`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::{ArchiveStore, GetResult, ObjectKey, ObjectMeta, PutMode, clamp_range};

/// A store rooted at a local directory. The directory is created on the first put.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, which must be an absolute path.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(Error::InvalidConfig {
                message: format!(
                    "repository path '{}' is not absolute; HINT: give the full path, e.g. file:///var/lib/walferry",
                    root.display()
                ),
            });
        }
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(key.components());
        path
    }

    /// Runs blocking filesystem work off the async threads.
    async fn blocking<T, F>(
        &self,
        op: &'static str,
        key: &str,
        cancel: &CancellationToken,
        f: F,
    ) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        match tokio::task::spawn_blocking(f).await {
            Ok(r) => r,
            Err(join) => Err(Error::Io {
                op,
                key: key.to_owned(),
                source: io::Error::other(join.to_string()),
            }),
        }
    }
}

impl ArchiveStore for LocalStore {
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        mode: PutMode,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let path = self.path(key);
        let root = self.root.clone();
        let k = key.to_string();
        self.blocking("put", key.as_str(), cancel, move || {
            put_file(&root, &path, &body, mode).map_err(|e| Error::from_io("put", &k, e))
        })
        .await
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
        cancel: &CancellationToken,
    ) -> Result<GetResult> {
        let path = self.path(key);
        let owned = key.clone();
        self.blocking("get", key.as_str(), cancel, move || {
            let key = owned;
            let io_err = |e| Error::from_io("get", key.as_str(), e);
            let mut file = File::open(&path).map_err(io_err)?;
            let object_size = file.metadata().map_err(io_err)?.len();
            let range = match range {
                Some(r) => clamp_range(&key, r, object_size)?,
                None => 0..object_size,
            };
            let len = usize::try_from(range.end - range.start).map_err(|_| Error::Io {
                op: "get",
                key: key.to_string(),
                source: io::Error::other("object too large for this platform"),
            })?;
            let mut body = vec![0u8; len];
            file.seek(SeekFrom::Start(range.start)).map_err(io_err)?;
            file.read_exact(&mut body).map_err(io_err)?;
            Ok(GetResult {
                body: Bytes::from(body),
                object_size,
            })
        })
        .await
    }

    async fn head(&self, key: &ObjectKey, cancel: &CancellationToken) -> Result<ObjectMeta> {
        let path = self.path(key);
        let owned = key.clone();
        self.blocking("head", key.as_str(), cancel, move || {
            let key = owned;
            let meta = fs::metadata(&path).map_err(|e| Error::from_io("head", key.as_str(), e))?;
            if !meta.is_file() {
                return Err(Error::NotFound {
                    key: key.to_string(),
                });
            }
            Ok(ObjectMeta {
                key,
                size: meta.len(),
            })
        })
        .await
    }

    async fn list(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let p = prefix.clone();
        self.blocking("list", &p, cancel, move || {
            // Walk only the directory the prefix's complete components name.
            let dir_part = prefix.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
            let mut start = root.clone();
            if !dir_part.is_empty() {
                start.extend(dir_part.split('/'));
            }
            let mut out = Vec::new();
            walk(&root, &start, &prefix, &mut out)
                .map_err(|e| Error::from_io("list", &prefix, e))?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey, cancel: &CancellationToken) -> Result<()> {
        let path = self.path(key);
        let k = key.to_string();
        self.blocking("delete", key.as_str(), cancel, move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::from_io("delete", &k, e)),
            }
            if let Some(dir) = path.parent() {
                fsync_dir(dir).map_err(|e| Error::from_io("delete", &k, e))?;
            }
            Ok(())
        })
        .await
    }
}

fn put_file(root: &Path, path: &Path, body: &[u8], mode: PutMode) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("object path has no parent directory"))?;
    create_dirs_durably(root, dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("object path has no file name"))?;
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = write_and_link(&tmp, path, body, mode);
    // The temporary name is gone after a successful rename; after a link or a failure it
    // still exists and is removed here.
    if tmp.exists() {
        let _ = fs::remove_file(&tmp);
    }
    if let Err(e) = result {
        if e.kind() == io::ErrorKind::AlreadyExists {
            // The caller may treat an identical existing object as archived. It may have been
            // linked by a writer that died before its fsyncs: make it durable before saying
            // it exists.
            File::open(path)?.sync_all()?;
            fsync_chain(root, dir)?;
        }
        return Err(e);
    }
    fsync_chain(root, dir)
}

/// Fsyncs `dir` and every directory above it up to `root`, so that the whole chain of entries
/// leading to a new object is durable, even when a directory was created by an earlier writer
/// that died before fsyncing its parent. Directories without changes cost next to nothing.
fn fsync_chain(root: &Path, dir: &Path) -> io::Result<()> {
    let mut current = Some(dir);
    while let Some(d) = current {
        fsync_dir(d)?;
        if d == root {
            break;
        }
        current = d.parent().filter(|p| p.starts_with(root));
    }
    Ok(())
}

fn write_and_link(tmp: &Path, path: &Path, body: &[u8], mode: PutMode) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    file.write_all(body)?;
    file.sync_all()?;
    drop(file);
    match mode {
        PutMode::Create => fs::hard_link(tmp, path).map_err(|e| match e.raw_os_error() {
            // link(2) is how a create-only put refuses atomically; without it there is no
            // safe way to create without overwriting.
            Some(libc::EPERM | libc::EOPNOTSUPP) => io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the filesystem holding the repository does not support hard links ({e}), which create-only writes need"
                ),
            ),
            _ => e,
        }),
        PutMode::Overwrite => fs::rename(tmp, path),
    }
}

/// Creates `dir` and any missing parents below `root`, fsyncing each parent whose entries
/// changed, so that a durable file's directory entry chain is durable too.
fn create_dirs_durably(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.is_dir() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(parent) if cur != root => cur = parent,
            _ => break,
        }
    }
    fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel.to_str() else { continue };
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            // Descend only where keys below could still match the prefix.
            let as_dir = format!("{rel}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(root, &path, prefix, out)?;
            }
        } else if file_type.is_file() && rel.starts_with(prefix) {
            // Files with names that are not valid keys are not objects of ours.
            if let Ok(key) = ObjectKey::new(rel) {
                out.push(ObjectMeta {
                    key,
                    size: entry.metadata()?.len(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relative_root_is_refused() {
        let err = LocalStore::new("relative/repo").unwrap_err();
        assert!(err.to_string().contains("not absolute"), "{err}");
    }

    #[tokio::test]
    async fn temporary_files_are_not_listed_and_create_leaves_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let cancel = CancellationToken::new();
        let key = ObjectKey::new("wal/a/b").unwrap();
        store
            .put(&key, Bytes::from_static(b"one"), PutMode::Create, &cancel)
            .await
            .unwrap();
        let err = store
            .put(&key, Bytes::from_static(b"two"), PutMode::Create, &cancel)
            .await
            .unwrap_err();
        assert!(err.is_already_exists());
        fs::write(dir.path().join("wal/a/.b.123.tmp"), b"junk").unwrap();
        let listed = store.list("wal/", &cancel).await.unwrap();
        assert_eq!(listed.len(), 1);
        let names: Vec<_> = fs::read_dir(dir.path().join("wal/a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "only the object and the planted junk: {names:?}"
        );
        let got = store.get(&key, None, &cancel).await.unwrap();
        assert_eq!(&got.body[..], b"one");
    }
}
