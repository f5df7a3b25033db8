//! Where a repository lives and how to reach it, parsed from a URL before any I/O.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::retry::RetryConfig;

/// A repository location, from a URL.
///
/// ```
/// use walferry_store::Location;
/// assert_eq!(
///     Location::parse("s3://my-bucket/prod/db1").unwrap(),
///     Location::S3 { bucket: "my-bucket".into(), prefix: "prod/db1".into() },
/// );
/// assert_eq!(
///     Location::parse("file:///var/lib/walferry").unwrap(),
///     Location::Local("/var/lib/walferry".into()),
/// );
/// assert!(Location::parse("relative/dir").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory: `file:///absolute/path`, or just `/absolute/path`.
    Local(PathBuf),
    /// An S3 bucket and key prefix: `s3://bucket` or `s3://bucket/some/prefix`.
    S3 {
        /// The bucket name.
        bucket: String,
        /// The key prefix, without leading or trailing `/`; empty for the bucket root.
        prefix: String,
    },
}

impl Location {
    /// Parses a repository URL.
    pub fn parse(url: &str) -> Result<Location> {
        let invalid = |why: &str| Error::InvalidConfig {
            message: format!(
                "invalid repository URL '{url}': {why}; HINT: use file:///absolute/path or s3://bucket/prefix"
            ),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "a file:// URL needs an absolute path (three slashes)",
                ));
            }
            return Ok(Location::Local(PathBuf::from(path)));
        }
        if url.starts_with('/') {
            return Ok(Location::Local(PathBuf::from(url)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !valid_bucket(bucket) {
                return Err(invalid(
                    "the bucket name must be 3 to 63 characters of a-z, 0-9, '.' and '-'",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|c| c == "." || c == "..")
                || prefix.contains("//")
                || prefix.chars().any(char::is_control)
            {
                return Err(invalid("the prefix must be plain '/'-separated names"));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        Err(invalid("unknown scheme"))
    }
}

fn valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-'])
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "file://{}", path.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// How to reach S3. Unset fields fall back to the AWS SDK's standard sources (environment,
/// shared config and credentials files, instance metadata).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// A custom endpoint such as `http://127.0.0.1:9000`, for S3-compatible servers.
    pub endpoint: Option<String>,
    /// The region; `us-east-1` when unset, so that no instance-metadata lookup delays start-up.
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket/key` rather than `bucket.endpoint/key`. Defaults to
    /// true with a custom endpoint and false without.
    pub path_style: Option<bool>,
    /// Allow `http://` endpoints that are not on loopback.
    pub allow_http: bool,
    /// Static credentials; when unset, the SDK's default credential chain is used.
    pub access_key_id: Option<String>,
    /// The secret for `access_key_id`.
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Everything needed to open a [`Store`](crate::Store).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where the repository is.
    pub location: Location,
    /// S3 settings, used when `location` is S3.
    pub s3: S3Options,
    /// Timeouts and retries.
    pub retry: RetryConfig,
    /// Requests in flight at once, at most.
    pub concurrency: NonZeroUsize,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
}

impl StoreConfig {
    /// Requests in flight at once by default. AWS documents thousands of requests per second
    /// per prefix; the limit here protects the client machine (2 cores is common for a database
    /// host's spare capacity), not S3.
    pub const DEFAULT_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(16).expect("16 is not zero");

    /// A configuration with default limits for `location`.
    pub fn new(location: Location) -> StoreConfig {
        StoreConfig {
            location,
            s3: S3Options::default(),
            retry: RetryConfig::default(),
            concurrency: Self::DEFAULT_CONCURRENCY,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let ok: &[(&str, Location)] = &[
            ("file:///a/b", Location::Local("/a/b".into())),
            ("/a/b", Location::Local("/a/b".into())),
            (
                "s3://bkt",
                Location::S3 {
                    bucket: "bkt".into(),
                    prefix: "".into(),
                },
            ),
            (
                "s3://bkt/",
                Location::S3 {
                    bucket: "bkt".into(),
                    prefix: "".into(),
                },
            ),
            (
                "s3://my.bkt-1/a/b/",
                Location::S3 {
                    bucket: "my.bkt-1".into(),
                    prefix: "a/b".into(),
                },
            ),
        ];
        for (url, want) in ok {
            assert_eq!(&Location::parse(url).unwrap(), want, "{url}");
        }
        for bad in [
            "",
            "file://relative",
            "rel/dir",
            "s3://",
            "s3://UPPER",
            "s3://ab",
            "s3://bkt/a/../b",
            "s3://bkt/a//b",
            "gs://bkt",
        ] {
            let err = Location::parse(bad).unwrap_err();
            assert!(err.to_string().contains("HINT"), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for url in ["file:///a/b", "s3://bkt", "s3://bkt/p/q"] {
            assert_eq!(Location::parse(url).unwrap().to_string(), url);
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let opts = S3Options {
            secret_access_key: Some("hunter2".into()),
            ..S3Options::default()
        };
        assert!(!format!("{opts:?}").contains("hunter2"));
    }
}
