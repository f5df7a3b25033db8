//! What the benchmarks that drive PostgreSQL and the peers share.

use std::path::PathBuf;
use std::process::Command;

use walferry_testutil::s3::{NetworkProfile, S3Server, S3ServerConfig};

/// Runs `command`, failing the bench with its output when it fails; returns its stdout.
pub fn check_output(mut command: Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The median; `None` of nothing.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// The machine, in one line: cores, CPU model, memory.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{cores} cores ({cpu}), {:.0} GiB",
        mem as f64 / f64::from(1u32 << 20)
    )
}

/// The environment variable `name` parsed, or `default` when it is unset or empty; a value
/// that does not parse stops the bench.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}: cannot parse '{v}'")),
        _ => default,
    }
}

/// The environment variable `name` as a comma-separated list, or `None` when it is unset or
/// empty.
pub fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|m| m.trim().to_owned()).collect())
}

/// The environment variable `name` as a path, or `default` when it is unset.
pub fn env_path(name: &str, default: impl FnOnce() -> PathBuf) -> PathBuf {
    std::env::var_os(name).map_or_else(default, PathBuf::from)
}

/// Installs what the benches that compare with the peers need (`benches/recovery-setup.sh`:
/// pgBackRest, stunnel, GNU time) and a matplotlib virtualenv at `venv`.
pub fn install_peers(venv: &std::path::Path) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/recovery-setup.sh");
    let status = Command::new(&script)
        .arg(venv)
        .status()
        .expect("run benches/recovery-setup.sh");
    assert!(
        status.success(),
        "benches/recovery-setup.sh failed: {status}"
    );
}

/// The in-process S3 server on `root`, holding `bucket`: as loopback is, and the same data
/// behind the cloud network profile.
pub fn s3_servers(root: &std::path::Path, bucket: &str) -> (S3Server, S3Server) {
    let plain = S3Server::start(S3ServerConfig::new(root)).expect("start the S3 server");
    plain.create_bucket(bucket).expect("create the bucket");
    let cloud = S3Server::start(S3ServerConfig {
        network: NetworkProfile::cloud(),
        ..S3ServerConfig::new(root)
    })
    .expect("start the S3 server with the cloud profile");
    (plain, cloud)
}

/// Writes at `path` a walferry configuration for the repository `repo` on `server`, readable
/// by the cluster user.
pub fn write_walferry_config(path: &std::path::Path, repo: &str, server: &S3Server) {
    std::fs::write(
        path,
        format!(
            "repo = \"{repo}\"\n\n[s3]\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            server.endpoint(),
            server.access_key(),
            server.secret_key()
        ),
    )
    .expect("write the walferry configuration");
    walferry_testutil::pg::chown_to_cluster_user(path).expect("chown");
}
