//! `walferry-s3-server`: walferry's test S3 server as a process, for
//! benchmarks and demos.
//!
//! Prints one line, `listening on http://127.0.0.1:PORT`, to stdout once it
//! accepts connections, then serves until SIGTERM or SIGINT. Logs go to
//! stderr (filter with `WALFERRY_LOG`, default `warn,walferry_testutil=info`).
//!
//! Exit codes: 0 after a signal, 2 when the arguments are invalid or the
//! server cannot start.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, ValueEnum};
use walferry_testutil::s3::{
    DEFAULT_ACCESS_KEY, DEFAULT_REGION, DEFAULT_SECRET_KEY, NetworkProfile, S3Server,
    S3ServerConfig,
};

/// Exit code for bad arguments and failures to start.
const EXIT_FAILURE: u8 = 2;

/// Bytes per second in one Mbit/s (10^6 bits).
const BYTES_PER_SEC_PER_MBIT: u64 = 125_000;

/// A local S3 server (s3s-fs with walferry's fixes) for tests and benchmarks.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Directory holding the buckets; created if missing.
    #[arg(long, env = "WALFERRY_S3_ROOT")]
    root: PathBuf,

    /// Address to listen on.
    #[arg(long, env = "WALFERRY_S3_HOST", default_value = "127.0.0.1")]
    host: IpAddr,

    /// TCP port; 0 picks a free one.
    #[arg(long, env = "WALFERRY_S3_PORT", default_value_t = 0)]
    port: u16,

    /// The access key clients must sign with.
    #[arg(long, env = "WALFERRY_S3_ACCESS_KEY", default_value = DEFAULT_ACCESS_KEY)]
    access_key: String,

    /// The secret key clients must sign with.
    #[arg(
        long,
        env = "WALFERRY_S3_SECRET_KEY",
        default_value = DEFAULT_SECRET_KEY,
        hide_env_values = true
    )]
    secret_key: String,

    /// The region clients should sign for (any is accepted).
    #[arg(long, env = "WALFERRY_S3_REGION", default_value = DEFAULT_REGION)]
    region: String,

    /// A bucket to create at start; repeat for more (comma-separated in the
    /// environment variable).
    #[arg(long = "bucket", env = "WALFERRY_S3_BUCKETS", value_delimiter = ',')]
    buckets: Vec<String>,

    /// Simulated network: `none`, or `cloud` (20 ms before each response's
    /// first byte, 400 Mbit/s per connection).
    #[arg(
        long,
        env = "WALFERRY_S3_NETWORK_PROFILE",
        value_enum,
        default_value_t = ProfileArg::None
    )]
    network_profile: ProfileArg,

    /// Delay before each response's first byte, in milliseconds; overrides
    /// the profile's.
    #[arg(long, env = "WALFERRY_S3_FIRST_BYTE_DELAY_MS")]
    first_byte_delay_ms: Option<u64>,

    /// Per-connection bandwidth cap in Mbit/s (10^6 bits); overrides the
    /// profile's, and 0 removes it.
    #[arg(long, env = "WALFERRY_S3_BANDWIDTH_MBIT")]
    bandwidth_mbit: Option<u64>,

    /// Allow a --host that is not a loopback address. The server has no TLS
    /// and one fixed key pair.
    #[arg(long, env = "WALFERRY_S3_ALLOW_NON_LOOPBACK")]
    allow_non_loopback: bool,
}

/// Values of `--network-profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProfileArg {
    /// Loopback as it is.
    None,
    /// [`NetworkProfile::cloud`].
    Cloud,
}

/// What the server runs with, validated.
#[derive(Debug, PartialEq, Eq)]
struct Config {
    host: IpAddr,
    server: S3ServerConfig,
    buckets: Vec<String>,
}

impl Args {
    fn into_config(self) -> anyhow::Result<Config> {
        if !self.host.is_loopback() && !self.allow_non_loopback {
            bail!(
                "refusing to listen on non-loopback address {} HINT: pass --allow-non-loopback to serve other machines",
                self.host
            );
        }
        ensure!(!self.root.as_os_str().is_empty(), "--root is empty");
        for bucket in &self.buckets {
            ensure!(
                s3s::path::check_bucket_name(bucket),
                "'{bucket}' is not a valid S3 bucket name"
            );
        }

        let mut network = match self.network_profile {
            ProfileArg::None => NetworkProfile::NONE,
            ProfileArg::Cloud => NetworkProfile::cloud(),
        };
        if let Some(ms) = self.first_byte_delay_ms {
            network.first_byte_delay = Duration::from_millis(ms);
        }
        if let Some(mbit) = self.bandwidth_mbit {
            network.bandwidth_bytes_per_sec = match mbit {
                0 => None,
                n => Some(
                    n.checked_mul(BYTES_PER_SEC_PER_MBIT)
                        .with_context(|| format!("--bandwidth-mbit {n} is too large"))?,
                ),
            };
        }

        Ok(Config {
            host: self.host,
            server: S3ServerConfig {
                root: self.root,
                port: self.port,
                access_key: self.access_key,
                secret_key: self.secret_key,
                region: self.region,
                network,
            },
            buckets: self.buckets,
        })
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WALFERRY_LOG")
                .unwrap_or_else(|_| "warn,walferry_testutil=info".into()),
        )
        .init();

    let args = Args::parse();
    match args.into_config().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walferry-s3-server: error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Serves until SIGTERM or SIGINT.
fn run(config: Config) -> anyhow::Result<()> {
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the signal runtime")?;
    signals.block_on(async {
        // Install the handlers before announcing the server, so that a
        // signal sent as soon as the line is read stops it cleanly.
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("install the SIGTERM handler")?;
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("install the SIGINT handler")?;

        let mut server = S3Server::start_on(config.host, config.server)?;
        for bucket in &config.buckets {
            server.create_bucket(bucket)?;
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", server.endpoint()).context("write to stdout")?;
        stdout.flush().context("write to stdout")?;
        drop(stdout);

        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        }
        server.stop();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        let mut argv = vec!["walferry-s3-server", "--root", "/srv/s3"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)?.into_config()
    }

    fn network(args: &[&str]) -> NetworkProfile {
        parse(args).unwrap().server.network
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            config.server,
            S3ServerConfig {
                root: "/srv/s3".into(),
                ..S3ServerConfig::new("/srv/s3")
            }
        );
        assert!(config.buckets.is_empty());
    }

    #[test]
    fn root_is_required() {
        assert!(Args::try_parse_from(["walferry-s3-server"]).is_err());
    }

    #[test]
    fn flag_host() {
        assert_eq!(
            parse(&["--host", "::1"]).unwrap().host,
            "::1".parse::<IpAddr>().unwrap()
        );
        let err = parse(&["--host", "0.0.0.0"]).unwrap_err();
        assert!(
            format!("{err:#}").contains("--allow-non-loopback"),
            "{err:#}"
        );
        assert!(parse(&["--host", "nonsense"]).is_err());
    }

    #[test]
    fn flag_allow_non_loopback() {
        let config = parse(&["--host", "0.0.0.0", "--allow-non-loopback"]).unwrap();
        assert_eq!(config.host, IpAddr::from([0, 0, 0, 0]));
    }

    #[test]
    fn flag_port() {
        assert_eq!(parse(&["--port", "9000"]).unwrap().server.port, 9000);
        assert!(parse(&["--port", "70000"]).is_err());
    }

    #[test]
    fn flag_keys_and_region() {
        let config = parse(&[
            "--access-key",
            "ak",
            "--secret-key",
            "sk",
            "--region",
            "eu-west-1",
        ])
        .unwrap();
        assert_eq!(config.server.access_key, "ak");
        assert_eq!(config.server.secret_key, "sk");
        assert_eq!(config.server.region, "eu-west-1");
    }

    #[test]
    fn flag_bucket() {
        let config = parse(&["--bucket", "wal", "--bucket", "base-backups"]).unwrap();
        assert_eq!(config.buckets, ["wal", "base-backups"]);
        assert!(parse(&["--bucket", "Not_Valid"]).is_err());
    }

    #[test]
    fn flag_network_profile() {
        assert_eq!(
            network(&["--network-profile", "none"]),
            NetworkProfile::NONE
        );
        assert_eq!(
            network(&["--network-profile", "cloud"]),
            NetworkProfile::cloud()
        );
        assert!(parse(&["--network-profile", "mars"]).is_err());
    }

    #[test]
    fn flag_first_byte_delay_ms() {
        let n = network(&["--first-byte-delay-ms", "7"]);
        assert_eq!(n.first_byte_delay, Duration::from_millis(7));
        assert_eq!(n.bandwidth_bytes_per_sec, None);
        let n = network(&["--network-profile", "cloud", "--first-byte-delay-ms", "0"]);
        assert_eq!(n.first_byte_delay, Duration::ZERO);
        assert_eq!(n.bandwidth_bytes_per_sec, Some(50_000_000));
    }

    #[test]
    fn flag_bandwidth_mbit() {
        assert_eq!(
            network(&["--bandwidth-mbit", "400"]).bandwidth_bytes_per_sec,
            Some(50_000_000)
        );
        let n = network(&["--network-profile", "cloud", "--bandwidth-mbit", "0"]);
        assert_eq!(n.bandwidth_bytes_per_sec, None);
        assert_eq!(n.first_byte_delay, Duration::from_millis(20));
        assert!(parse(&["--bandwidth-mbit", &u64::MAX.to_string()]).is_err());
    }
}
