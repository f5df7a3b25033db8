//! Self-test of the PostgreSQL harness: archive with `cp`, base backup, point-in-time recovery
//! to a named restore point with `cp` as restore_command, and failed recoveries.
//!
//! Skipped (with a printed line) only when PostgreSQL is not installed.

use std::path::Path;
use std::time::Duration;

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{self, Cluster, ClusterOptions, RecoveryOutcome};

const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(120);

fn cp_archive(archive: &Path) -> String {
    format!("cp %p {}/%f", archive.display())
}

fn cp_restore(archive: &Path) -> String {
    format!("cp {}/%f %p", archive.display())
}

fn count(cluster: &Cluster, table: &str) -> u64 {
    cluster
        .psql(&format!("SELECT count(*) FROM {table}"))
        .expect("count rows")
        .parse()
        .expect("a number")
}

#[test]
fn archive_backup_and_recover_to_restore_point() {
    if pg::bindir_or_skip("archive_backup_and_recover_to_restore_point").is_none() {
        return;
    }
    let dir = TestDir::new("pitr-name").expect("test dir");
    let archive = dir.create_dir("archive").expect("archive dir");

    let opts = ClusterOptions {
        archive_command: Some(cp_archive(&archive)),
        ..ClusterOptions::default()
    };
    let mut primary = Cluster::init(&dir.join("primary"), &opts).expect("initdb");
    primary.start().expect("start primary");
    assert_eq!(primary.psql("SELECT 1").expect("select"), "1");
    assert_eq!(primary.timeline().expect("timeline"), 1);
    let sysid = primary.system_identifier().expect("system identifier");
    assert_ne!(sysid, 0);

    primary
        .psql(
            "CREATE TABLE t (id int PRIMARY KEY, note text);
             INSERT INTO t SELECT g, 'before backup' FROM generate_series(1, 100) g;",
        )
        .expect("create and fill table");
    let seg = primary.switch_wal().expect("switch wal");
    primary
        .wait_archived(&seg, ARCHIVE_TIMEOUT)
        .expect("segment archived");
    assert!(archive.join(&seg).is_file(), "{seg} in the archive");

    let backup = dir.join("backup");
    primary.base_backup(&backup).expect("base backup");
    assert!(backup.join("backup_label").is_file());
    assert!(
        std::fs::read_dir(backup.join("pg_wal"))
            .expect("list backup pg_wal")
            .filter_map(Result::ok)
            .all(|e| e.file_name() == "archive_status"),
        "-X none copies no WAL"
    );

    primary
        .psql("INSERT INTO t SELECT g, 'after backup' FROM generate_series(101, 150) g")
        .expect("insert after backup");
    let lsn = primary.create_restore_point("p1").expect("restore point");
    assert!(lsn.contains('/'), "{lsn}");
    primary
        .psql("INSERT INTO t SELECT g, 'after restore point' FROM generate_series(151, 170) g")
        .expect("insert after restore point");
    let seg = primary.switch_wal().expect("switch wal");
    primary
        .wait_archived(&seg, ARCHIVE_TIMEOUT)
        .expect("segment archived");
    assert_eq!(count(&primary, "t"), 170);
    primary.stop().expect("stop primary");
    primary.stop().expect("stop is idempotent");
    assert!(!primary.is_running());

    // Target values may be raw or already quoted.
    let mut restored =
        Cluster::from_existing(&backup, &ClusterOptions::default()).expect("adopt backup copy");
    restored
        .set_recovery(
            &cp_restore(&archive),
            &[
                ("recovery_target_name", "p1"),
                ("recovery_target_action", "'promote'"),
            ],
            false,
        )
        .expect("configure recovery");
    restored.start_no_wait().expect("start recovery");
    let outcome = restored
        .wait_promoted(RECOVERY_TIMEOUT)
        .expect("recovery ends");
    assert_eq!(
        outcome,
        RecoveryOutcome::Promoted,
        "{}",
        restored.log_tail(40)
    );
    assert_eq!(count(&restored, "t"), 150, "rows up to the restore point");
    assert_eq!(
        restored
            .query_rows("SELECT note, count(*) FROM t GROUP BY note ORDER BY note")
            .expect("rows"),
        vec![
            vec!["after backup".to_owned(), "50".to_owned()],
            vec!["before backup".to_owned(), "100".to_owned()],
        ]
    );
    assert_eq!(
        restored.timeline().expect("timeline"),
        2,
        "promoted to TLI 2"
    );
    assert_eq!(restored.system_identifier().expect("sysid"), sysid);
    let log = restored.log_contents();
    assert!(
        log.contains("recovery stopping at restore point \"p1\""),
        "{log}"
    );
    assert!(log.contains("restored log file"), "{log}");
    restored.stop().expect("stop restored");
}

#[test]
fn small_segments_and_failed_recovery() {
    if pg::bindir_or_skip("small_segments_and_failed_recovery").is_none() {
        return;
    }
    let dir = TestDir::new("seg1m").expect("test dir");
    let archive = dir.create_dir("archive").expect("archive dir");
    let opts = ClusterOptions {
        wal_segsize_mb: Some(1),
        archive_command: Some(cp_archive(&archive)),
        env: vec![("WALFERRY_HARNESS_PROBE".to_owned(), "x1".to_owned())],
        ..ClusterOptions::default()
    };
    let mut primary = Cluster::init(&dir.join("primary"), &opts).expect("initdb");
    primary.start().expect("start primary");
    assert_eq!(primary.psql("SHOW wal_segment_size").expect("show"), "1MB");
    // The server's environment reaches the programs it runs (archive_command too).
    primary
        .psql(
            "CREATE TABLE probe (v text);
             COPY probe FROM PROGRAM 'printf %s \"$WALFERRY_HARNESS_PROBE\"';",
        )
        .expect("probe environment");
    assert_eq!(primary.psql("SELECT v FROM probe").expect("probe"), "x1");

    let segs = primary.write_segments(3).expect("write segments");
    assert_eq!(segs.len(), 3);
    assert!(segs.windows(2).all(|w| w[0] < w[1]), "{segs:?}");
    primary
        .wait_archived(segs.last().expect("three"), ARCHIVE_TIMEOUT)
        .expect("archived");
    for seg in &segs {
        let len = std::fs::metadata(archive.join(seg))
            .expect("archived")
            .len();
        assert_eq!(len, 1024 * 1024, "{seg}");
    }
    let backup = dir.join("backup");
    primary.base_backup(&backup).expect("base backup");
    primary.stop().expect("stop primary");

    let copy = |name: &str| {
        let dest = dir.join(name);
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&backup)
            .arg(&dest)
            .status()
            .expect("run cp");
        assert!(status.success());
        dest
    };

    // No WAL at all: recovery cannot find the checkpoint; `start` must fail with the log.
    let mut no_wal =
        Cluster::from_existing(&copy("no-wal"), &ClusterOptions::default()).expect("adopt copy");
    no_wal
        .set_recovery("false", &[("recovery_target_action", "promote")], false)
        .expect("configure recovery");
    let err = no_wal.start().expect_err("recovery without WAL fails");
    let msg = format!("{err:#}");
    assert!(msg.contains("FATAL"), "{msg}");
    assert!(!no_wal.is_running());

    // Same, through start_no_wait + wait_promoted: reported as Failed, not a hang.
    let mut failing =
        Cluster::from_existing(&copy("failing"), &ClusterOptions::default()).expect("adopt copy");
    failing
        .set_recovery("exit 1", &[], false)
        .expect("configure recovery");
    failing.start_no_wait().expect("sockets open");
    match failing.wait_promoted(RECOVERY_TIMEOUT).expect("outcome") {
        RecoveryOutcome::Failed { log_tail } => assert!(log_tail.contains("FATAL"), "{log_tail}"),
        RecoveryOutcome::Promoted => panic!("recovery without WAL cannot promote"),
    }

    // And with the archive it works, and the server ends on a new timeline.
    let mut ok =
        Cluster::from_existing(&copy("ok"), &ClusterOptions::default()).expect("adopt copy");
    ok.set_recovery(&cp_restore(&archive), &[], false)
        .expect("configure recovery");
    ok.start().expect("start recovery");
    assert_eq!(
        ok.wait_promoted(RECOVERY_TIMEOUT).expect("outcome"),
        RecoveryOutcome::Promoted,
        "{}",
        ok.log_tail(40)
    );
    assert_eq!(ok.psql("SHOW wal_segment_size").expect("show"), "1MB");
    assert_eq!(count(&ok, "walferry_filler"), 300);
}

#[test]
fn as_cluster_user_runs_commands() {
    if pg::bindir_or_skip("as_cluster_user_runs_commands").is_none() {
        return;
    }
    let dir = TestDir::new("as-user").expect("test dir");
    let file = dir.join("made-by-user");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("printf %s \"$PROBE\" > \"$1\"")
        .arg("sh")
        .arg(&file)
        .env("PROBE", "hello");
    let status = pg::as_cluster_user(cmd)
        .status()
        .expect("run as cluster user");
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "hello");
    if pg::running_as_root() {
        use std::os::unix::fs::MetadataExt as _;
        let owner = std::fs::metadata(&file).expect("stat").uid();
        assert_ne!(owner, 0, "written by the cluster user, not root");
    }
}
