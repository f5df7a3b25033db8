//! Object keys: the only names the store understands.

use std::fmt;

use crate::error::{Error, Result};

/// A validated, relative object key such as `wal/0000000100000000/000000010000000000000003`.
///
/// A key is one or more `/`-separated components. Each component is non-empty, is not `.` or
/// `..`, does not start with `.` (backends use dot-names for their own temporary files), and
/// contains no control characters or backslashes. So a key never escapes the repository root on
/// a filesystem and always maps to one S3 key under the repository prefix.
///
/// ```
/// use walferry_store::ObjectKey;
/// let key = ObjectKey::new("wal/0000000100000000/000000010000000000000003").unwrap();
/// assert_eq!(key.as_str(), "wal/0000000100000000/000000010000000000000003");
/// assert!(ObjectKey::new("../etc/passwd").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    raw: String,
}

impl ObjectKey {
    /// Validates `raw` as a key.
    pub fn new(raw: impl Into<String>) -> Result<Self> {
        let raw = raw.into();
        if let Some(reason) = invalid_reason(&raw) {
            return Err(Error::InvalidKey { key: raw, reason });
        }
        Ok(Self { raw })
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The last component, e.g. the file name of a WAL object.
    pub fn file_name(&self) -> &str {
        self.raw.rsplit('/').next().unwrap_or(&self.raw)
    }

    /// The components, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.raw.split('/')
    }
}

fn invalid_reason(raw: &str) -> Option<&'static str> {
    if raw.is_empty() {
        return Some("a key must not be empty");
    }
    if raw.len() > 1024 {
        return Some("a key must be at most 1024 bytes");
    }
    for component in raw.split('/') {
        if component.is_empty() {
            return Some("a key must not start or end with '/' or contain '//'");
        }
        if component.starts_with('.') {
            return Some("a key component must not start with '.'");
        }
        if component.chars().any(|c| c.is_control() || c == '\\') {
            return Some("a key must not contain control characters or '\\'");
        }
    }
    None
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({:?})", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_keys() {
        let cases: &[(&str, bool)] = &[
            ("walferry.json", true),
            ("wal/0000000100000000/000000010000000000000001", true),
            ("wal/00000002.history", true),
            ("a b/ü~%", true),
            ("", false),
            ("/abs", false),
            ("trailing/", false),
            ("a//b", false),
            ("../up", false),
            ("a/./b", false),
            ("a/.tmp", false),
            ("a\\b", false),
            ("a\nb", false),
        ];
        for (raw, ok) in cases {
            assert_eq!(ObjectKey::new(*raw).is_ok(), *ok, "{raw:?}");
        }
    }

    #[test]
    fn file_name_is_last_component() {
        let key = ObjectKey::new("wal/00000001/x.partial").unwrap();
        assert_eq!(key.file_name(), "x.partial");
        assert_eq!(ObjectKey::new("top").unwrap().file_name(), "top");
    }
}
