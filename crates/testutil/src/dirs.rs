//! Unique, short-lived directories for tests, and unique names for S3 buckets and key prefixes.
//!
//! Every test gets its own [`TestDir`] under `/tmp` (or `$WALFERRY_TEST_TMPDIR`), named
//! `wf-<millis>-<random 8 hex>-<name>`, for example `/tmp/wf-1732512345678-1a2b3c4d-pitr-by-name`.
//! Paths stay short on purpose: PostgreSQL clusters live inside, and a Unix socket path may not
//! exceed 107 bytes (the harness puts sockets in a separate, even shorter directory anyway).
//!
//! Ownership: when the tests run as root, PostgreSQL and everything it runs (`archive_command`,
//! `restore_command`) runs as the unprivileged cluster user (see [`crate::pg`]). A `TestDir` is
//! therefore created owned by that user, and so are the subdirectories made with
//! [`TestDir::create_dir`] (when that user does not exist, as on a machine without PostgreSQL,
//! they stay owned by root). Files a test writes there as root afterwards are *not* chowned
//! automatically; call [`crate::pg::chown_to_cluster_user`] on them, or write them through
//! [`crate::pg::as_cluster_user`].
//!
//! Cleanup: the directory is deleted when the `TestDir` is dropped, unless the test is
//! panicking (a failed assertion) or `WALFERRY_KEEP_TEST_DIRS=1` is set; then it is kept and
//! its path is printed so the data directories, server logs and archive can be inspected.
//! Declare the `TestDir` *before* any [`crate::pg::Cluster`] living in it, so the cluster is
//! dropped (and its server stopped) first.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

/// Environment variable that keeps every test directory after the test, even on success.
pub const KEEP_ENV: &str = "WALFERRY_KEEP_TEST_DIRS";

/// Environment variable naming the parent directory of test directories (default `/tmp`).
///
/// It must be short (socket paths) and, when running as root, traversable by the cluster user.
pub const TMPDIR_ENV: &str = "WALFERRY_TEST_TMPDIR";

/// Longest sanitised test name kept in a directory name.
const MAX_NAME_LEN: usize = 24;

/// A unique temporary directory for one test; deleted on drop unless kept (see the module docs).
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
    keep: bool,
}

impl TestDir {
    /// Creates `<tmp>/wf-<millis>-<random8hex>-<name>`, owned by the cluster user when root.
    ///
    /// `name` is only a readable hint (typically the test's name); it is lowercased,
    /// stripped to `[a-z0-9_-]` and shortened.
    pub fn new(name: &str) -> anyhow::Result<TestDir> {
        let parent = std::env::var_os(TMPDIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let mut name = sanitize(name, &['-', '_']);
        name.truncate(MAX_NAME_LEN);
        let base = format!("wf-{}-{:08x}", millis(), random_u32());
        let dir_name = if name.is_empty() {
            base
        } else {
            format!("{base}-{name}")
        };
        let path = parent.join(dir_name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("create test directory {}", path.display()))?;
        let dir = TestDir { path, keep: false };
        crate::pg::chown_to_cluster_user_if_present(&dir.path)?;
        Ok(dir)
    }

    /// The directory's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(rel)`; creates nothing.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Creates `rel` (and missing parents) inside the directory, owned by the cluster user,
    /// and returns its path: use it for archive and spool directories PostgreSQL writes into.
    pub fn create_dir(&self, rel: impl AsRef<Path>) -> anyhow::Result<PathBuf> {
        let path = self.path.join(rel);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("create directory {}", path.display()))?;
        crate::pg::chown_to_cluster_user_if_present(&path)?;
        Ok(path)
    }

    /// Keeps the directory after the test whatever happens, and prints its path on drop.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// A fresh name `<prefix>-<millis hex>-<random8hex>` that is a valid S3 bucket name and a
    /// safe key prefix: lowercase letters, digits and `-`, starting and ending with a letter or
    /// digit, at most 63 characters. `prefix` is sanitised the same way (`wf` when empty).
    ///
    /// ```
    /// let name = walferry_testutil::dirs::TestDir::unique_name("Push_Test");
    /// assert!(name.starts_with("push-test-"));
    /// assert!(name.len() <= 63);
    /// ```
    pub fn unique_name(prefix: &str) -> String {
        let suffix = format!("{:x}-{:08x}", millis(), random_u32());
        let mut prefix = sanitize(&prefix.replace('_', "-"), &['-']);
        let prefix_max = 63 - 1 - suffix.len();
        prefix.truncate(prefix_max);
        let prefix = prefix.trim_matches('-');
        let prefix = if prefix.is_empty() { "wf" } else { prefix };
        format!("{prefix}-{suffix}")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let keep_env = std::env::var(KEEP_ENV).is_ok_and(|v| v == "1");
        if self.keep || keep_env || std::thread::panicking() {
            eprintln!("keeping test directory {}", self.path.display());
            return;
        }
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            eprintln!(
                "warning: could not remove test directory {}: {err}",
                self.path.display()
            );
        }
    }
}

/// Lowercases `s` and keeps only ASCII letters, digits and the `extra` characters.
fn sanitize(s: &str, extra: &[char]) -> String {
    s.chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(c))
        .collect()
}

/// A random `u32` for unique names, from std's per-process random SipHash keys (each
/// `RandomState` gets fresh keys), so no RNG dependency is needed.
pub(crate) fn random_u32() -> u32 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u128(millis());
    let hash = hasher.finish();
    // Fold the 64-bit hash; truncation is the point.
    ((hash >> 32) ^ (hash & 0xffff_ffff)) as u32
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
fn millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_valid_bucket_names() {
        let long = "x".repeat(200);
        for prefix in [
            "",
            "walferry",
            "Push_Test::case",
            "--a--",
            long.as_str(),
            "ÜÖ",
        ] {
            let name = TestDir::unique_name(prefix);
            assert!((3..=63).contains(&name.len()), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert_ne!(TestDir::unique_name("a"), TestDir::unique_name("a"));
    }

    #[test]
    fn test_dir_is_removed_on_drop() {
        let dir = TestDir::new("tests::removed on drop").expect("create test dir");
        let path = dir.path().to_path_buf();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("wf-") && name.ends_with("-testsremovedondrop"));
        std::fs::write(dir.join("f"), b"x").expect("write");
        drop(dir);
        if std::env::var(KEEP_ENV).is_err() {
            assert!(!path.exists());
        }
    }
}
