//! Archive through `archive_command`, recover through `restore_command` to a named restore
//! point, and check every row.

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::RecoveryOutcome;

use crate::util::*;

/// The round trip: a primary archives through `walferry-archive push %p`; a base backup
/// without WAL; rows before and after a restore point; recovery of the backup through
/// `walferry-restore fetch %f %p` must end exactly at the restore point.
fn point_in_time_round_trip(dir: &TestDir, repo: &Repo, wal_segsize_mb: Option<u32>) {
    let mut opts = archiving(repo);
    opts.wal_segsize_mb = wal_segsize_mb;
    let mut primary = start_cluster(dir, "primary", &opts);
    create_table(&primary);
    insert_rows(&primary, 1, 500);
    primary
        .base_backup(&dir.join("backup"))
        .expect("base backup");
    insert_rows(&primary, 501, 2000);
    primary.switch_wal().expect("switch");
    insert_rows(&primary, 2001, 3000);
    let expected = fingerprint(&primary);
    primary
        .create_restore_point("before_more")
        .expect("restore point");
    insert_rows(&primary, 3001, 4000);
    let last = primary.switch_wal().expect("switch");
    primary.wait_archived(&last, TIMEOUT).expect("archived");
    primary.stop().expect("stop primary");

    let restored = recover(
        &dir.join("backup"),
        &repo.env,
        &[
            ("recovery_target_name", "before_more"),
            ("recovery_target_action", "promote"),
        ],
        false,
    );
    match restored.wait_promoted(TIMEOUT).expect("recovery ends") {
        RecoveryOutcome::Promoted => {}
        RecoveryOutcome::Failed { log_tail } => panic!("recovery failed:\n{log_tail}"),
    }
    assert_eq!(fingerprint(&restored), expected, "rows after recovery");
    assert!(expected.starts_with("3000 "), "{expected}");
    let log = restored.log_contents();
    assert!(log.contains("restored log file"), "{log}");
    assert!(
        log.contains("recovery stopping at restore point \"before_more\""),
        "{log}"
    );
    restored
        .psql("INSERT INTO t VALUES (-1, 'written after promotion')")
        .expect("the restored cluster accepts writes");
}

#[test]
fn local_repository_point_in_time() {
    let dir = TestDir::new("pitr-local").unwrap();
    let repo = Repo::local(&dir);
    point_in_time_round_trip(&dir, &repo, None);
}

#[test]
fn s3_repository_point_in_time() {
    let dir = TestDir::new("pitr-s3").unwrap();
    let repo = Repo::s3(&dir);
    point_in_time_round_trip(&dir, &repo, None);
}

#[test]
fn one_mib_segments() {
    let dir = TestDir::new("pitr-1mib").unwrap();
    let repo = Repo::local(&dir);
    point_in_time_round_trip(&dir, &repo, Some(1));
    let descriptor =
        std::fs::read_to_string(repo.local_root.unwrap().join("walferry.json")).unwrap();
    assert!(
        descriptor.contains("\"wal_segment_size\": 1048576"),
        "{descriptor}"
    );
}

/// A corrupt segment in the archive must stop recovery, not end it early and promote.
#[test]
fn corrupt_segment_stops_recovery() {
    let dir = TestDir::new("pitr-corrupt").unwrap();
    let repo = Repo::local(&dir);
    let mut primary = start_cluster(&dir, "primary", &archiving(&repo));
    create_table(&primary);
    primary
        .base_backup(&dir.join("backup"))
        .expect("base backup");
    insert_rows(&primary, 1, 1000);
    let damaged = primary.switch_wal().expect("switch");
    insert_rows(&primary, 1001, 2000);
    primary
        .create_restore_point("target")
        .expect("restore point");
    let last = primary.switch_wal().expect("switch");
    primary.wait_archived(&last, TIMEOUT).expect("archived");
    primary.stop().expect("stop primary");

    let object = local_segment_object(&repo, &damaged);
    let mut bytes = std::fs::read(&object).expect("read archived object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&object, &bytes).expect("corrupt archived object");

    let restored = recover(
        &dir.join("backup"),
        &repo.env,
        &[
            ("recovery_target_name", "target"),
            ("recovery_target_action", "promote"),
        ],
        false,
    );
    match restored.wait_promoted(TIMEOUT).expect("recovery ends") {
        RecoveryOutcome::Failed { .. } => {}
        RecoveryOutcome::Promoted => panic!("recovery promoted past a corrupt segment"),
    }
    let log = restored.log_contents();
    assert!(
        log.contains(&format!(
            "archived object 'wal/{}/{damaged}' is corrupt",
            &damaged[..16]
        )),
        "{log}"
    );
    assert!(log.contains("exit code 206"), "{log}");
}
