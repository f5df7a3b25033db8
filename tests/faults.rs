//! Archiving and recovery while the S3 server misbehaves on purpose (`503`s, `500`s after the
//! write, hung requests, connections cut mid-body, late answers), goes away and comes back, and
//! `push` processes are killed with `SIGKILL`: nothing PostgreSQL was told is archived is ever missing or damaged,
//! the archive catches up by itself once the faults stop, and recovery either reaches its
//! target or stops with an error, never ends early and promotes.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{Cluster, ClusterOptions, RecoveryOutcome};
use walferry_testutil::s3::{Fault, FaultPlan};

use crate::util::*;

/// Faults for these tests: one request in `one_in`, every kind, a hang longer than the
/// requests' timeout.
fn plan(one_in: u32, seed: u64) -> FaultPlan {
    FaultPlan {
        hang: Duration::from_secs(4),
        slow: Duration::from_millis(300),
        ..FaultPlan::every_kind(one_in, seed)
    }
}

/// The environment of a repository whose requests time out after 2 s, with `budget` seconds
/// of retries.
fn impatient(repo: &Repo, budget: u32) -> Vec<(String, String)> {
    let mut env = repo.env.clone();
    env.push(("WALFERRY_REQUEST_TIMEOUT".into(), "2".into()));
    env.push(("WALFERRY_RETRY_BUDGET".into(), budget.to_string()));
    env
}

/// Sends `SIGKILL` to every `walferry-archive push` working in `cluster`'s data directory
/// (PostgreSQL runs `archive_command` there); returns how many.
fn kill_pushes_of(cluster: &Cluster) -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in procs.filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_push = args
            .first()
            .is_some_and(|a| a.ends_with(b"walferry-archive"))
            && args.get(1) == Some(&&b"push"[..]);
        let here = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .is_ok_and(|cwd| cwd == cluster.data_dir());
        if is_push
            && here
            && Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        {
            killed += 1;
        }
    }
    killed
}

/// How many times `archive_command` has failed, as `pg_stat_archiver` counts.
fn archive_failures(cluster: &Cluster) -> u64 {
    cluster
        .psql("SELECT failed_count FROM pg_stat_archiver")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The files PostgreSQL has been told are archived: `archive_status/*.done`.
fn acknowledged(cluster: &Cluster) -> BTreeSet<String> {
    std::fs::read_dir(cluster.data_dir().join("pg_wal/archive_status"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".done").map(str::to_owned)
        })
        .collect()
}

#[test]
fn archiving_under_faults_and_kills_loses_nothing() {
    let dir = TestDir::new("faults-archive").unwrap();
    let mut repo = Repo::s3(&dir);
    let env = impatient(&repo, 3);
    let opts = ClusterOptions {
        archive_command: Some("walferry-archive push %p".into()),
        env: server_env(&env),
        // Keep every segment, to compare what was acknowledged with what is archived.
        extra_conf: vec!["wal_keep_size = '2GB'".into()],
        ..ClusterOptions::default()
    };
    let primary = start_cluster(&dir, "primary", &opts);
    create_table(&primary);
    insert_rows(&primary, 1, 100);
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();
    take_backup(&repo, &primary, dir.path(), &[]);

    repo.s3.as_ref().unwrap().set_faults(Some(plan(4, 11)));
    // A killer: SIGKILL to whatever push is running, now and then. PostgreSQL's archiver exits
    // when its command dies of a signal and is restarted about 10 s later, so a few kills only.
    let stop = AtomicBool::new(false);
    let kills = AtomicU64::new(0);
    let mut rows = std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = fastrand::Rng::with_seed(5);
            while !stop.load(Ordering::Relaxed) && kills.load(Ordering::Relaxed) < 3 {
                std::thread::sleep(Duration::from_millis(rng.u64(2000..5000)));
                kills.fetch_add(kill_pushes_of(&primary), Ordering::Relaxed);
            }
        });
        let mut rows = 100;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(25) {
            insert_rows(&primary, rows + 1, rows + 500);
            rows += 500;
            primary.switch_wal().unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::Relaxed);
        rows
    });
    // The server goes away while WAL keeps coming, until PostgreSQL has seen pushes fail (its
    // archiver may still be waiting to restart after a kill), and comes back.
    let before_outage = archive_failures(&primary);
    repo.s3.as_mut().unwrap().stop();
    let down = Instant::now();
    let mut outage_failures = 0;
    while outage_failures == 0 || down.elapsed() < Duration::from_secs(3) {
        assert!(
            down.elapsed() < TIMEOUT,
            "no archive_command failed while the server was gone"
        );
        insert_rows(&primary, rows + 1, rows + 500);
        rows += 500;
        primary.switch_wal().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        outage_failures = archive_failures(&primary) - before_outage;
    }
    let down_for = down.elapsed();
    repo.s3.as_mut().unwrap().restart().unwrap();
    let server = repo.s3.as_ref().unwrap();
    assert!(server.is_running());
    server.set_faults(None);
    let injected = server.faults_injected();
    let under_faults = acknowledged(&primary);

    // Once the faults stop, the archive catches up by itself.
    let expected = fingerprint(&primary);
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();

    // Every file PostgreSQL was told is archived is in the repository, whole.
    let told = acknowledged(&primary);
    assert!(told.is_superset(&under_faults));
    let mut checked = 0;
    for name in &told {
        let got = dir.join(format!("got-{name}"));
        fetch(name, got.to_str().unwrap(), &repo.env, dir.path()).expect(0, &[]);
        assert_eq!(
            std::fs::read(&got).unwrap(),
            std::fs::read(primary.data_dir().join("pg_wal").join(name)).unwrap(),
            "{name}"
        );
        checked += 1;
    }
    eprintln!(
        "faults injected: {} ({injected:?}); pushes killed: {}; the server gone for {:.1} s, archive failures meanwhile: {outage_failures}; files acknowledged under faults: {}; acknowledged files checked: {checked}",
        injected.total(),
        kills.load(Ordering::Relaxed),
        down_for.as_secs_f64(),
        under_faults.len(),
    );
    for (kind, count) in [
        ("503", injected.unavailable),
        ("500 after the write", injected.error_after),
        ("hang", injected.hang),
        ("reset mid-body", injected.reset),
        ("late answer", injected.slow),
    ] {
        assert!(count > 0, "no {kind} was injected: {injected:?}");
    }
    assert!(kills.load(Ordering::Relaxed) > 0, "no push was killed");
    assert!(checked > 20, "only {checked} files were acknowledged");

    // A restore gets every committed row.
    let pgdata = dir.join("restored");
    restore(&repo, &pgdata, &[], dir.path()).expect(0, &[]);
    let restored = start_restored(
        &pgdata,
        &ClusterOptions {
            env: server_env(&repo.env),
            ..ClusterOptions::default()
        },
    );
    assert_eq!(fingerprint(&restored), expected);
    assert!(expected.starts_with(&format!("{rows} ")), "{expected}");
}

#[test]
fn recovery_under_faults_reaches_its_target_or_stops() {
    let dir = TestDir::new("faults-recovery").unwrap();
    let repo = Repo::s3(&dir);
    let primary = primary_with_rows(&dir, &repo, 100);
    take_backup(&repo, &primary, dir.path(), &[]);
    for i in 0..12 {
        insert_rows(&primary, 101 + i * 500, 600 + i * 500);
        primary.switch_wal().unwrap();
    }
    let expected = fingerprint(&primary);
    primary.create_restore_point("faults").unwrap();
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();
    drop(primary);

    let server = repo.s3.as_ref().unwrap();
    let mut outcomes = Vec::new();
    // Mild faults, retried away; then faults no retry budget outlasts: a hard failure, which
    // must stop recovery.
    for (round, (one_in, budget)) in [(4, 20), (1, 1)].into_iter().enumerate() {
        let pgdata = dir.join(format!("restored-{round}"));
        // No pipeline yet: the first fetch starts one, under the faults.
        restore(
            &repo,
            &pgdata,
            &["--target-name", "faults", "--prefetch", "false"],
            dir.path(),
        )
        .expect(0, &[]);
        let mut faults = plan(one_in, 17 + round as u64);
        if one_in == 1 {
            // Every request fails: no late answers among them.
            faults.kinds.retain(|k| *k != Fault::Slow);
        }
        server.set_faults(Some(faults));
        let mut cluster = Cluster::from_existing(
            &pgdata,
            &ClusterOptions {
                env: server_env(&impatient(&repo, budget)),
                ..ClusterOptions::default()
            },
        )
        .unwrap();
        cluster.start_no_wait().unwrap();
        let outcome = cluster.wait_promoted(TIMEOUT).unwrap();
        server.set_faults(None);
        match &outcome {
            RecoveryOutcome::Promoted => {
                assert_eq!(
                    fingerprint(&cluster),
                    expected,
                    "promoted with rows missing"
                );
            }
            RecoveryOutcome::Failed { log_tail } => {
                assert!(
                    !log_tail.contains("database system is ready to accept connections"),
                    "{log_tail}"
                );
            }
        }
        eprintln!(
            "round {round}: one request in {one_in} faulty: {:?}; faults injected so far: {:?}",
            matches!(outcome, RecoveryOutcome::Promoted),
            server.faults_injected()
        );
        outcomes.push(outcome);
        cluster.stop_immediate();
    }
    assert!(
        matches!(outcomes[1], RecoveryOutcome::Failed { .. }),
        "every request failing cannot end in promotion: {:?}",
        outcomes[1]
    );
}
