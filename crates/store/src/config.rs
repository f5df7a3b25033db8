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
    /// When and how large bodies go up as multipart uploads.
    pub multipart: MultipartOptions,
}

/// Multipart uploads in the S3 backend.
///
/// A put of more than `threshold` bytes goes up as a multipart upload of `part_size` parts
/// (the last one shorter), `concurrency` of them in flight, each request timed out and
/// retried on its own under the store's [`RetryConfig`]. The object appears only when the
/// upload completes, whole, with the same create-only guarantee as a single PUT. A body that
/// would need more than 10,000 parts (S3's limit) gets larger parts.
///
/// S3 requires parts of at least 5 MiB (all but the last) and at most 5 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartOptions {
    /// Bodies larger than this many bytes use a multipart upload; at least `part_size`.
    pub threshold: u64,
    /// Bytes in each part but the last; 5 MiB to 5 GiB.
    pub part_size: u64,
    /// Parts of one upload in flight at once. Each also takes a slot of the store's
    /// concurrency limit.
    pub concurrency: NonZeroUsize,
}

impl MultipartOptions {
    /// S3's smallest part but the last: 5 MiB.
    pub const MIN_PART_SIZE: u64 = 5 << 20;
    /// S3's largest part: 5 GiB.
    pub const MAX_PART_SIZE: u64 = 5 << 30;
    /// S3's most parts in one upload.
    pub const MAX_PARTS: u64 = 10_000;

    /// The defaults: above 32 MiB, 16 MiB parts, 4 in flight. A 16 MiB WAL segment (after
    /// compression, smaller still) always goes in one PUT; a 64 MiB base-backup part goes as
    /// four parts, so one slow or failed request costs a quarter of it.
    pub const DEFAULT: MultipartOptions = MultipartOptions {
        threshold: 32 << 20,
        part_size: 16 << 20,
        concurrency: NonZeroUsize::new(4).expect("4 is not zero"),
    };

    /// Checks the limits S3 sets.
    pub fn validate(&self) -> Result<()> {
        if !(Self::MIN_PART_SIZE..=Self::MAX_PART_SIZE).contains(&self.part_size) {
            return Err(Error::InvalidConfig {
                message: format!(
                    "multipart part size {} is outside S3's limits; HINT: use 5 MiB (5242880) to 5 GiB",
                    self.part_size
                ),
            });
        }
        if self.threshold < self.part_size {
            return Err(Error::InvalidConfig {
                message: format!(
                    "multipart threshold {} is below the part size {}; HINT: set the threshold to at least the part size",
                    self.threshold, self.part_size
                ),
            });
        }
        Ok(())
    }

    /// Whether a body of `len` bytes goes up as a multipart upload.
    pub fn applies_to(&self, len: u64) -> bool {
        len > self.threshold
    }

    /// The part size for a body of `len` bytes: `part_size`, or larger when that would make
    /// more than [`MAX_PARTS`](Self::MAX_PARTS) parts.
    pub fn part_size_for(&self, len: u64) -> u64 {
        self.part_size.max(len.div_ceil(Self::MAX_PARTS))
    }
}

impl Default for MultipartOptions {
    fn default() -> Self {
        MultipartOptions::DEFAULT
    }
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
            .field("multipart", &self.multipart)
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

    /// What tells this repository from any other, as one line: its URL, and for S3 the
    /// endpoint too (the same bucket name on two servers is two repositories). Records of what
    /// was stored where (`push`'s ledger) are keyed by it.
    pub fn identity(&self) -> String {
        match (&self.location, &self.s3.endpoint) {
            (Location::S3 { .. }, Some(endpoint)) => format!("{} at {endpoint}", self.location),
            _ => self.location.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tells_servers_apart() {
        let s3 = Location::parse("s3://bkt/p").unwrap();
        let mut config = StoreConfig::new(s3);
        assert_eq!(config.identity(), "s3://bkt/p");
        config.s3.endpoint = Some("http://127.0.0.1:9000".into());
        assert_eq!(config.identity(), "s3://bkt/p at http://127.0.0.1:9000");
        let mut local = StoreConfig::new(Location::parse("/r").unwrap());
        local.s3.endpoint = Some("http://127.0.0.1:9000".into());
        assert_eq!(local.identity(), "file:///r");
    }

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
    fn multipart_limits() {
        let mib = 1u64 << 20;
        let with = |threshold, part_size| MultipartOptions {
            threshold,
            part_size,
            ..MultipartOptions::DEFAULT
        };
        let cases = [
            ("defaults", MultipartOptions::DEFAULT, true),
            ("smallest parts", with(6 * mib, 5 * mib), true),
            ("threshold equals part size", with(5 * mib, 5 * mib), true),
            ("parts below 5 MiB", with(8 * mib, 4 * mib), false),
            ("parts above 5 GiB", with(8 << 30, (5 << 30) + 1), false),
            ("threshold below part size", with(5 * mib, 6 * mib), false),
        ];
        for (name, options, ok) in cases {
            assert_eq!(options.validate().is_ok(), ok, "{name}");
        }
        let d = MultipartOptions::DEFAULT;
        assert!(!d.applies_to(32 * mib));
        assert!(d.applies_to(32 * mib + 1));
        assert_eq!(d.part_size_for(64 * mib), 16 * mib);
        // 1 TiB in at most 10,000 parts.
        let tib = 1u64 << 40;
        let part = d.part_size_for(tib);
        assert!(tib.div_ceil(part) <= MultipartOptions::MAX_PARTS, "{part}");
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
