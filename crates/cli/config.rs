//! Repository configuration: flags and `WALFERRY_*` variables, a configuration file, and the
//! standard AWS variables, resolved into a [`StoreConfig`] before any I/O.
//!
//! Precedence, highest first: a command-line flag; its `WALFERRY_*` environment variable; the
//! configuration file; the standard AWS variables (`AWS_REGION`, `AWS_DEFAULT_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_PROFILE`, ... through the AWS SDK's usual chain); built-in defaults.
//!
//! The configuration file is TOML, at `WALFERRY_CONFIG` or `--config`, else
//! [`DEFAULT_CONFIG_PATH`] when that file exists:
//!
//! ```toml
//! repo = "s3://my-bucket/prod/db1"
//!
//! [s3]
//! endpoint = "https://s3.eu-west-1.amazonaws.com"   # optional
//! region = "eu-west-1"                               # optional
//! path_style = false                                 # optional
//! allow_http = false                                 # optional
//! access_key_id = "AKIA..."                          # optional; keep the file mode 0600
//! secret_access_key = "..."                          # optional
//!
//! [retry]
//! budget_seconds = 30                                # optional
//! request_timeout_seconds = 60                       # optional
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use walferry_store::{Location, RetryConfig, StoreConfig};

/// Where the configuration file is looked for when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/walferry/walferry.toml";

/// The repository options every command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RepoArgs {
    /// The repository: file:///absolute/path or s3://bucket/prefix
    #[arg(long, env = "WALFERRY_REPO", value_name = "URL", global = true)]
    pub repo: Option<String>,

    /// Configuration file (TOML) [default: /etc/walferry/walferry.toml, if it exists]
    #[arg(long, env = "WALFERRY_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// S3 endpoint URL, for S3-compatible servers [default: AWS_ENDPOINT_URL, else AWS]
    #[arg(long, env = "WALFERRY_S3_ENDPOINT", value_name = "URL", global = true)]
    pub s3_endpoint: Option<String>,

    /// S3 region [default: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1]
    #[arg(long, env = "WALFERRY_S3_REGION", value_name = "REGION", global = true)]
    pub s3_region: Option<String>,

    /// Path-style S3 addressing (endpoint/bucket/key) [default: true with a custom endpoint]
    #[arg(
        long,
        env = "WALFERRY_S3_PATH_STYLE",
        value_name = "BOOL",
        global = true
    )]
    pub s3_path_style: Option<bool>,

    /// Allow a plain-http S3 endpoint that is not on loopback
    #[arg(long, env = "WALFERRY_S3_ALLOW_HTTP", global = true)]
    pub s3_allow_http: bool,

    /// Total time for retrying a failing storage request, in seconds [default: 30 for push, 60 for restore]
    #[arg(
        long,
        env = "WALFERRY_RETRY_BUDGET",
        value_name = "SECONDS",
        global = true
    )]
    pub retry_budget: Option<f64>,

    /// Time allowed for one storage request, in seconds [default: 60]
    #[arg(
        long,
        env = "WALFERRY_REQUEST_TIMEOUT",
        value_name = "SECONDS",
        global = true
    )]
    pub request_timeout: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    repo: Option<String>,
    #[serde(default)]
    s3: FileS3,
    #[serde(default)]
    retry: FileRetry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileS3 {
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    allow_http: Option<bool>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetry {
    budget_seconds: Option<f64>,
    request_timeout_seconds: Option<f64>,
}

/// Reads an environment variable, treating an empty value as unset.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn seconds(what: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("invalid {what} '{value}': give a positive number of seconds"))
}

impl RepoArgs {
    /// Resolves these options, the configuration file and the environment into a store
    /// configuration, with `retry` as the defaults for this command.
    pub fn resolve(&self, retry: RetryConfig) -> anyhow::Result<StoreConfig> {
        let file = self.load_file()?;
        let Some(url) = self.repo.clone().or(file.repo) else {
            bail!(
                "no repository given; HINT: pass --repo URL, set WALFERRY_REPO, or set repo in {DEFAULT_CONFIG_PATH}"
            );
        };
        let location = Location::parse(&url)?;
        let mut config = StoreConfig::new(location);
        config.retry = retry;
        if let Some(budget) = self.retry_budget.or(file.retry.budget_seconds) {
            config.retry.budget = seconds("retry budget", budget)?;
        }
        if let Some(timeout) = self.request_timeout.or(file.retry.request_timeout_seconds) {
            config.retry.request_timeout = seconds("request timeout", timeout)?;
        }
        let s3 = &mut config.s3;
        s3.endpoint = self.s3_endpoint.clone().or(file.s3.endpoint);
        s3.region = self
            .s3_region
            .clone()
            .or(file.s3.region)
            .or_else(|| env_var("AWS_REGION"))
            .or_else(|| env_var("AWS_DEFAULT_REGION"));
        s3.path_style = self.s3_path_style.or(file.s3.path_style);
        s3.allow_http = self.s3_allow_http || file.s3.allow_http.unwrap_or(false);
        s3.access_key_id = file.s3.access_key_id;
        s3.secret_access_key = file.s3.secret_access_key;
        s3.session_token = file.s3.session_token;
        Ok(config)
    }

    /// These options as command-line arguments, for a command that must reach the same
    /// repository from another environment, such as the `restore_command` a restore writes:
    /// PostgreSQL runs it without the restoring shell's variables. A configuration file is
    /// named by its absolute path; credentials are never written out (they stay in the file
    /// or in the server's environment).
    pub fn to_args(&self) -> anyhow::Result<Vec<String>> {
        let mut args = Vec::new();
        let mut push = |flag: &str, value: String| {
            args.push(flag.to_owned());
            args.push(value);
        };
        if let Some(repo) = &self.repo {
            push("--repo", repo.clone());
        }
        if let Some(config) = &self.config {
            let path = std::path::absolute(config)
                .with_context(|| format!("resolve '{}'", config.display()))?;
            push("--config", path.display().to_string());
        }
        if let Some(endpoint) = &self.s3_endpoint {
            push("--s3-endpoint", endpoint.clone());
        }
        if let Some(region) = &self.s3_region {
            push("--s3-region", region.clone());
        }
        if let Some(path_style) = self.s3_path_style {
            push("--s3-path-style", path_style.to_string());
        }
        if let Some(budget) = self.retry_budget {
            push("--retry-budget", budget.to_string());
        }
        if let Some(timeout) = self.request_timeout {
            push("--request-timeout", timeout.to_string());
        }
        if self.s3_allow_http {
            args.push("--s3-allow-http".to_owned());
        }
        Ok(args)
    }

    fn load_file(&self) -> anyhow::Result<FileConfig> {
        let (path, required) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_file(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(FileConfig::default())
            }
            Err(e) => {
                Err(e).with_context(|| format!("read configuration file '{}'", path.display()))
            }
        }
    }
}

fn parse_file(path: &Path, text: &str) -> anyhow::Result<FileConfig> {
    toml::from_str(text).map_err(|e| {
        // toml's messages span several lines; keep ours on one.
        let message = e.message().to_owned();
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        match line {
            Some(line) => anyhow::anyhow!(
                "configuration file '{}' line {line}: {message}",
                path.display()
            ),
            None => anyhow::anyhow!("configuration file '{}': {message}", path.display()),
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        repo: RepoArgs,
    }

    fn resolve(args: &[&str]) -> anyhow::Result<StoreConfig> {
        let cli = Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))?;
        // No file is named in these tests, and DEFAULT_CONFIG_PATH does not exist on test
        // machines; name a missing file explicitly where it matters.
        cli.repo.resolve(RetryConfig::ARCHIVE)
    }

    #[test]
    fn repo_flag_sets_location() {
        let config = resolve(&["--repo", "s3://bkt/pre", "--config", "/dev/null"]).unwrap();
        assert_eq!(config.location.to_string(), "s3://bkt/pre");
    }

    #[test]
    fn args_round_trip() {
        let given = [
            "--repo",
            "s3://bkt/pre",
            "--config",
            "/etc/w.toml",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
            "--s3-region",
            "eu-west-3",
            "--s3-path-style",
            "true",
            "--retry-budget",
            "90",
            "--request-timeout",
            "2.5",
            "--s3-allow-http",
        ];
        let cli = Cli::try_parse_from(std::iter::once("test").chain(given)).unwrap();
        let args = cli.repo.to_args().unwrap();
        assert_eq!(args, given);
        let again = Cli::try_parse_from(std::iter::once("test".to_owned()).chain(args)).unwrap();
        assert_eq!(again.repo.to_args().unwrap(), given);
    }

    #[test]
    fn missing_repo_says_how_to_give_one() {
        let err = resolve(&["--config", "/dev/null"]).unwrap_err();
        assert!(err.to_string().contains("WALFERRY_REPO"), "{err:#}");
    }

    #[test]
    fn retry_flags_override_defaults() {
        let config = resolve(&[
            "--repo",
            "file:///r",
            "--config",
            "/dev/null",
            "--retry-budget",
            "2.5",
            "--request-timeout",
            "7",
        ])
        .unwrap();
        assert_eq!(config.retry.budget, Duration::from_millis(2500));
        assert_eq!(config.retry.request_timeout, Duration::from_secs(7));
        assert!(
            resolve(&[
                "--repo",
                "file:///r",
                "--config",
                "/dev/null",
                "--retry-budget",
                "-1"
            ])
            .is_err()
        );
    }

    #[test]
    fn s3_flags_are_applied() {
        let config = resolve(&[
            "--repo",
            "s3://bkt",
            "--config",
            "/dev/null",
            "--s3-endpoint",
            "http://127.0.0.1:9",
            "--s3-region",
            "eu-west-3",
            "--s3-path-style",
            "false",
            "--s3-allow-http",
        ])
        .unwrap();
        assert_eq!(config.s3.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(config.s3.region.as_deref(), Some("eu-west-3"));
        assert_eq!(config.s3.path_style, Some(false));
        assert!(config.s3.allow_http);
    }

    #[test]
    fn file_supplies_what_flags_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("walferry.toml");
        std::fs::write(
            &path,
            "repo = \"s3://from-file/p\"\n[s3]\nendpoint = \"http://127.0.0.1:1\"\naccess_key_id = \"ak\"\nsecret_access_key = \"sk\"\n[retry]\nbudget_seconds = 3\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let config = resolve(&["--config", p]).unwrap();
        assert_eq!(config.location.to_string(), "s3://from-file/p");
        assert_eq!(config.s3.access_key_id.as_deref(), Some("ak"));
        assert_eq!(config.retry.budget, Duration::from_secs(3));
        let config = resolve(&["--config", p, "--repo", "file:///flag/wins"]).unwrap();
        assert_eq!(config.location.to_string(), "file:///flag/wins");
    }

    #[test]
    fn bad_file_is_one_line_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        let cases = [
            ("repo = \"file:///x\"\n[s3]\nendpoint = \n", "line 3"),
            (
                "repo = \"file:///x\"\nunknown_key = 1\n",
                "unknown field `unknown_key`",
            ),
        ];
        for (content, want) in cases {
            std::fs::write(&path, content).unwrap();
            let err = resolve(&["--config", path.to_str().unwrap()]).unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains("bad.toml") && text.contains(want), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn named_missing_file_is_an_error() {
        let err = resolve(&[
            "--repo",
            "file:///r",
            "--config",
            "/nonexistent/walferry.toml",
        ])
        .unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/walferry.toml"));
    }
}
