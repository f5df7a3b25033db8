//! The WAL every recovery replays: a pgbench cluster archived by walferry and pgBackRest, its
//! base backup restored once, and the segments decompressed for the local limit.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use walferry_testutil::pg::{self, Cluster, ClusterOptions};

use crate::{ARCHIVE, Bench, TARGET, check_output, walferry_restore};

/// How long the archive may take to catch up once the load stops.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(900);

/// The settings every cluster of the bench runs with, after the harness's: those of the
/// peers' measurements (`../shared` research).
pub fn server_conf() -> Vec<String> {
    [
        "shared_buffers = '1GB'",
        "max_wal_size = '1GB'",
        "checkpoint_timeout = '5min'",
        "synchronous_commit = off",
        "full_page_writes = on",
        "wal_compression = off",
        "log_line_prefix = '%m [%p] %b '",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `PATH` with the release binaries first.
pub fn server_path() -> String {
    format!(
        "{}:{}",
        Path::new(ARCHIVE).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    )
}

/// Builds the archive, the base directory and the WAL cache; fills in `bench`.
pub fn prepare(bench: &mut Bench) {
    let mut archive_command = "walferry-archive push %p".to_owned();
    if let Some(pgbr) = &bench.pgbackrest {
        archive_command.push_str(&format!(
            " && pgbackrest --config={} --stanza=bench archive-push %p",
            pgbr.push_config.display()
        ));
    }
    let opts = ClusterOptions {
        archive_command: Some(archive_command),
        extra_conf: server_conf(),
        env: vec![
            (
                "WALFERRY_CONFIG".into(),
                bench.walferry_plain.display().to_string(),
            ),
            ("PATH".into(), server_path()),
        ],
        ..ClusterOptions::default()
    };
    let mut primary = Cluster::init(&bench.dir.join("primary"), &opts).expect("initdb");
    primary.start().expect("start the primary");
    if let Some(pgbr) = &bench.pgbackrest {
        pgbr.stanza_create(&primary);
    }

    eprintln!(
        "recovery bench: pgbench -i -s {} (a {} MiB database)",
        bench.settings.scale,
        bench.settings.scale * 15
    );
    let mut init = primary.command("pgbench");
    init.args(["-i", "-q", "-s", &bench.settings.scale.to_string()]);
    check_output(init, "pgbench -i");
    primary.psql("CHECKPOINT").unwrap();

    let conninfo = primary.conninfo();
    let mut backup = Command::new(ARCHIVE);
    backup
        .args(["--config"])
        .arg(&bench.walferry_plain)
        .args(["backup", "--conninfo", &conninfo]);
    let backup = check_output(pg::as_cluster_user(backup), "walferry-archive backup");
    eprintln!("recovery bench: {}", backup.trim());
    let start: String = primary
        .psql("SELECT redo_lsn FROM pg_control_checkpoint()")
        .unwrap();

    let target_bytes = bench.settings.wal_mib << 20;
    let load_started = Instant::now();
    loop {
        let done: u64 = primary
            .psql(&format!(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start}')::bigint"
            ))
            .unwrap()
            .parse()
            .unwrap();
        eprintln!(
            "recovery bench: {:.2} of {:.2} GiB of WAL after {:.0} s of pgbench",
            done as f64 / f64::from(1u32 << 30),
            target_bytes as f64 / f64::from(1u32 << 30),
            load_started.elapsed().as_secs_f64()
        );
        if done >= target_bytes {
            break;
        }
        pgbench(&primary, 10);
    }
    let target_lsn = primary.create_restore_point(TARGET).unwrap();
    pgbench(&primary, 3);
    bench.wal_bytes = primary
        .psql(&format!(
            "SELECT pg_wal_lsn_diff('{target_lsn}', '{start}')::bigint"
        ))
        .unwrap()
        .parse()
        .unwrap();
    let last = primary.switch_wal().unwrap();
    eprintln!("recovery bench: waiting for the archive to catch up to {last}");
    primary.wait_archived(&last, ARCHIVE_TIMEOUT).unwrap();
    primary.stop().unwrap();

    // The base every recovery starts from: restored once, by walferry, without a pipeline.
    let base = bench.dir.join("base");
    let out = check_output(
        walferry_restore(
            &bench.walferry_plain,
            &[
                "restore",
                "--pgdata",
                base.to_str().unwrap(),
                "--target-name",
                TARGET,
                "--prefetch",
                "false",
            ],
        ),
        "walferry-restore restore",
    );
    bench.base = base;

    // The segments recovery replays: from the backup's start segment to the one holding the
    // restore point, by the plan's count.
    let plan = check_output(
        walferry_restore(
            &bench.walferry_plain,
            &[
                "restore",
                "--pgdata",
                "/nonexistent",
                "--target-name",
                TARGET,
                "--dry-run",
            ],
        ),
        "walferry-restore restore --dry-run",
    );
    eprintln!("recovery bench: {}", out.lines().next().unwrap_or_default());
    let segments = planned_segments(&plan);
    let start_segment = segment_name(&start);
    let last_needed = segment_name(&target_lsn);
    let wanted: Vec<String> = segments
        .into_iter()
        .filter(|s| s.as_str() >= start_segment.as_str() && s.as_str() <= last_needed.as_str())
        .collect();
    bench.first_segment = wanted.first().cloned().expect("a segment to replay");
    bench.segments = wanted.len() as u64;

    // Decompressed, for the local limit.
    let cache = bench.dir.join("wal-cache");
    std::fs::create_dir_all(&cache).unwrap();
    pg::chown_to_cluster_user(&cache).unwrap();
    for chunk in wanted.chunks(4) {
        let children: Vec<_> = chunk
            .iter()
            .map(|name| {
                let dest = cache.join(name);
                walferry_restore(
                    &bench.walferry_plain,
                    &["fetch", name, dest.to_str().unwrap(), "--prefetch", "false"],
                )
                .current_dir(&cache)
                .spawn()
                .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success(), "fetch into the WAL cache");
        }
    }
    bench.wal_cache = cache;
}

/// `pgbench -c 4 -j 2 -M prepared` for `seconds`.
fn pgbench(primary: &Cluster, seconds: u32) {
    let mut run = primary.command("pgbench");
    run.args([
        "-n",
        "-c",
        "4",
        "-j",
        "2",
        "-M",
        "prepared",
        "-T",
        &seconds.to_string(),
    ]);
    check_output(run, "pgbench");
}

/// The segment names of a `restore --dry-run` plan on one timeline: its line
/// `WAL: N segments from FIRST to LAST in 1 runs`, expanded.
fn planned_segments(plan: &str) -> Vec<String> {
    let line = plan
        .lines()
        .find(|l| l.starts_with("WAL: "))
        .unwrap_or_else(|| panic!("no WAL line in the plan: {plan}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let (first, last) = (words[4], words[6]);
    assert!(
        is_segment(first) && is_segment(last) && first[..8] == last[..8],
        "the bench expects one timeline: {line}"
    );
    let number = |s: &str| {
        u64::from_str_radix(&s[8..16], 16).unwrap() * 256
            + u64::from_str_radix(&s[16..24], 16).unwrap()
    };
    (number(first)..=number(last))
        .map(|seg| format!("{}{:08X}{:08X}", &first[..8], seg / 256, seg % 256))
        .collect()
}

fn is_segment(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The timeline-1 segment holding `lsn` (`X/Y`), with 16 MiB segments.
fn segment_name(lsn: &str) -> String {
    let (hi, lo) = lsn.split_once('/').unwrap();
    let hi = u64::from_str_radix(hi, 16).unwrap();
    let lo = u64::from_str_radix(lo, 16).unwrap();
    let lsn = (hi << 32) | lo;
    let seg = lsn >> 24;
    format!("00000001{:08X}{:08X}", seg / 256, seg % 256)
}

#[cfg(test)]
mod tests {
    #[test]
    fn plan_names() {
        let plan = "backup 'x': ...\nWAL: 3 segments from 0000000100000000000000FF to 000000010000000100000001 in 1 runs\n";
        assert_eq!(
            super::planned_segments(plan),
            [
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            super::segment_name("0/2A000028"),
            "00000001000000000000002A"
        );
        assert_eq!(super::segment_name("1/0"), "000000010000000100000000");
    }
}
