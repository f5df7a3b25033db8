//! `walferry-restore restore`: point-in-time restores from a base backup taken by
//! `walferry-archive backup` and WAL archived by `push`, checked row by row.

use std::path::Path;

use walferry_testutil::dirs::TestDir;
use walferry_testutil::pg::{Cluster, ClusterOptions};

use crate::util::*;

/// What the primary committed, and the targets that stop between its batches.
struct History {
    /// The fingerprint after each batch; batch `i` inserts rows `1000 i + 1 ..= 1000 (i + 1)`.
    after: Vec<String>,
    time: String,
    xid: String,
    lsn: String,
}

/// Batches of rows with a target after each: a time after batch 1, the transaction of
/// batch 2, an LSN after batch 3, a restore point after batch 4, and batch 5 archived last.
fn write_history(primary: &Cluster) -> History {
    let batch = |i: i32| insert_rows(primary, 1000 * i + 1, 1000 * (i + 1));
    let mut after = vec![fingerprint(primary)];
    batch(1);
    after.push(fingerprint(primary));
    let time = primary.psql("SELECT clock_timestamp()").unwrap();
    // Commit timestamps have microseconds; make sure batch 2 commits after the target.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let xid = primary
        .psql("INSERT INTO t SELECT i, md5(i::text) FROM generate_series(2001, 3000) i; SELECT pg_current_xact_id()")
        .unwrap();
    after.push(fingerprint(primary));
    batch(3);
    after.push(fingerprint(primary));
    let lsn = primary.psql("SELECT pg_current_wal_insert_lsn()").unwrap();
    batch(4);
    after.push(fingerprint(primary));
    primary.create_restore_point("after-batch-4").unwrap();
    batch(5);
    after.push(fingerprint(primary));
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();
    History {
        after,
        time,
        xid,
        lsn,
    }
}

/// Restores to each kind of target and checks the rows.
fn restores_to_every_target(dir: &TestDir, repo: &Repo) {
    let primary = primary_with_rows(dir, repo, 1000);
    take_backup(repo, &primary, dir.path(), &[]);
    let history = write_history(&primary);

    let cases: [(&str, Vec<&str>, &String); 5] = [
        (
            "time",
            vec!["--target-time", &history.time],
            &history.after[1],
        ),
        ("xid", vec!["--target-xid", &history.xid], &history.after[2]),
        ("lsn", vec!["--target-lsn", &history.lsn], &history.after[3]),
        (
            "name",
            vec!["--target-name", "after-batch-4"],
            &history.after[4],
        ),
        ("end", vec![], &history.after[5]),
    ];
    let opts = ClusterOptions {
        env: server_env(&[]),
        ..ClusterOptions::default()
    };
    for (name, args, expected) in cases {
        let pgdata = dir.join(format!("restored-{name}"));
        let run = restore(repo, &pgdata, &args, dir.path());
        run.expect(0, &[]);
        assert!(
            run.stdout.contains("recovery configured"),
            "{name}: {}",
            run.stdout
        );
        let mut restored = start_restored(&pgdata, &opts);
        assert_eq!(&fingerprint(&restored), expected, "restore to {name}");
        // Promoted: it takes writes.
        insert_rows(&restored, 100_001, 100_010);
        restored.stop().unwrap();
    }
}

#[test]
fn restore_to_every_target_local() {
    let dir = TestDir::new("restore-targets-local").unwrap();
    let repo = Repo::local(&dir);
    restores_to_every_target(&dir, &repo);
}

#[test]
fn restore_to_every_target_s3() {
    let dir = TestDir::new("restore-targets-s3").unwrap();
    let repo = Repo::s3(&dir);
    restores_to_every_target(&dir, &repo);
}

/// Bad targets are refused before anything is written.
#[test]
fn unreachable_and_invalid_targets_write_nothing() {
    let dir = TestDir::new("restore-refused").unwrap();
    let repo = Repo::local(&dir);
    let pgdata = dir.join("restored");

    // No backup at all.
    restore(&repo, &pgdata, &[], dir.path()).expect(6, &["descriptor"]);
    assert!(!pgdata.exists());

    let primary = start_cluster(&dir, "primary", &archiving(&repo));
    create_table(&primary);
    let before = primary.psql("SELECT clock_timestamp()").unwrap();
    insert_rows(&primary, 1, 10);
    let segment = primary.switch_wal().unwrap();
    primary.wait_archived(&segment, TIMEOUT).unwrap();
    restore(&repo, &pgdata, &[], dir.path()).expect(1, &["no usable backup"]);
    assert!(!pgdata.exists());

    take_backup(&repo, &primary, dir.path(), &[]);
    // A time before the backup ended: no backup is consistent by then.
    restore(&repo, &pgdata, &["--target-time", &before], dir.path())
        .expect(1, &["no backup can reach", "nothing was written"]);
    // A timeline the archive does not have.
    restore(&repo, &pgdata, &["--target-timeline", "7"], dir.path()).expect(1, &["timeline 7"]);
    // Two targets at once, and a malformed one: argument errors.
    restore(
        &repo,
        &pgdata,
        &["--target-xid", "5", "--target-name", "x"],
        dir.path(),
    )
    .expect(202, &["cannot be used with"]);
    restore(&repo, &pgdata, &["--target-lsn", "nonsense"], dir.path()).expect(202, &["nonsense"]);
    assert!(!pgdata.exists());

    // A non-empty directory is refused, and left as it was.
    std::fs::create_dir_all(&pgdata).unwrap();
    std::fs::write(pgdata.join("keep"), b"x").unwrap();
    walferry_testutil::pg::chown_to_cluster_user(&pgdata).unwrap();
    restore(&repo, &pgdata, &[], dir.path()).expect(2, &["not empty"]);
    let entries: Vec<_> = std::fs::read_dir(&pgdata).unwrap().collect();
    assert_eq!(entries.len(), 1);

    // A dry run plans and writes nothing.
    let empty = dir.join("dry");
    let run = restore(&repo, &empty, &["--dry-run"], dir.path());
    run.expect(0, &[]);
    assert!(run.stdout.contains("dry run"), "{}", run.stdout);
    assert!(!Path::new(&empty).exists());
}

/// A restore promoted onto timeline 2 that keeps archiving beside the original primary on
/// timeline 1; restores then reach a point on either timeline after the branch.
#[test]
fn restore_across_a_timeline_branch() {
    let dir = TestDir::new("restore-branch").unwrap();
    let repo = Repo::local(&dir);
    let primary = primary_with_rows(&dir, &repo, 1000);
    take_backup(&repo, &primary, dir.path(), &[]);
    insert_rows(&primary, 1001, 2000);
    primary.create_restore_point("branch").unwrap();
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();

    // Timeline 2: restored to the branch point, promoted, archiving to the same repository.
    let tl2_dir = dir.join("timeline2");
    restore(&repo, &tl2_dir, &["--target-name", "branch"], dir.path()).expect(0, &[]);
    let tl2 = start_restored(&tl2_dir, &archiving(&repo));
    assert_eq!(tl2.timeline().unwrap(), 2);
    insert_rows(&tl2, 5001, 6000);
    tl2.create_restore_point("on-tl2").unwrap();
    let on_tl2 = fingerprint(&tl2);
    let last = tl2.switch_wal().unwrap();
    tl2.wait_archived(&last, TIMEOUT).unwrap();

    // Timeline 1 goes on too.
    insert_rows(&primary, 7001, 8000);
    primary.create_restore_point("on-tl1").unwrap();
    let on_tl1 = fingerprint(&primary);
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();

    let opts = ClusterOptions {
        env: server_env(&[]),
        ..ClusterOptions::default()
    };
    // The latest timeline is 2.
    let pgdata = dir.join("restored-tl2");
    let run = restore(&repo, &pgdata, &["--target-name", "on-tl2"], dir.path());
    run.expect(0, &[]);
    assert!(
        run.stdout.contains("recovery_target_timeline = 2"),
        "{}",
        run.stdout
    );
    let mut restored = start_restored(&pgdata, &opts);
    assert_eq!(fingerprint(&restored), on_tl2);
    restored.stop().unwrap();

    // Timeline 1, past the point where timeline 2 branched off.
    let pgdata = dir.join("restored-tl1");
    let run = restore(
        &repo,
        &pgdata,
        &["--target-name", "on-tl1", "--target-timeline", "1"],
        dir.path(),
    );
    run.expect(0, &[]);
    let mut restored = start_restored(&pgdata, &opts);
    assert_eq!(fingerprint(&restored), on_tl1);
    restored.stop().unwrap();

    // Past the end of timeline 2's archive: refused, nothing written.
    let pgdata = dir.join("restored-unreachable");
    restore(
        &repo,
        &pgdata,
        &["--target-lsn", "F/0", "--target-timeline", "2"],
        dir.path(),
    )
    .expect(1, &["no backup can reach", "nothing was written"]);
    assert!(!pgdata.exists());
}

/// `--standby`: a replica built from the archive alone keeps replaying WAL as the primary
/// archives it.
#[test]
fn standby_follows_the_archive() {
    let dir = TestDir::new("restore-standby").unwrap();
    let repo = Repo::local(&dir);
    let primary = primary_with_rows(&dir, &repo, 1000);
    take_backup(&repo, &primary, dir.path(), &[]);

    let pgdata = dir.join("standby");
    let run = restore(&repo, &pgdata, &["--standby"], dir.path());
    run.expect(0, &[]);
    assert!(pgdata.join("standby.signal").exists());
    let opts = ClusterOptions {
        env: server_env(&[]),
        ..ClusterOptions::default()
    };
    let mut standby = Cluster::from_existing(&pgdata, &opts).unwrap();
    standby.start().expect("the standby becomes consistent");

    for batch in 1..=2 {
        insert_rows(&primary, 1000 * batch + 1, 1000 * (batch + 1));
        let expected = fingerprint(&primary);
        let last = primary.switch_wal().unwrap();
        primary.wait_archived(&last, TIMEOUT).unwrap();
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let now = standby.psql("SELECT pg_is_in_recovery()").unwrap();
            assert_eq!(now, "t", "still a standby");
            if fingerprint(&standby) == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the standby did not replay batch {batch}\n{}",
                standby.log_tail(30)
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    standby.stop().unwrap();
}

/// `--start`: the restore starts PostgreSQL itself and reports the promotion, as an operator
/// would run it after losing the primary.
#[test]
fn start_reports_promotion() {
    let dir = TestDir::new("restore-start").unwrap();
    let repo = Repo::local(&dir);
    let mut primary = primary_with_rows(&dir, &repo, 1000);
    take_backup(&repo, &primary, dir.path(), &[]);
    insert_rows(&primary, 1001, 2000);
    primary.create_restore_point("before-the-mistake").unwrap();
    let expected = fingerprint(&primary);
    primary.psql("DELETE FROM t WHERE id % 2 = 0").unwrap();
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();
    // The outage: the restore takes the primary's place (and port).
    primary.stop().unwrap();

    let pgdata = dir.join("restored");
    let run = restore(
        &repo,
        &pgdata,
        &["--target-name", "before-the-mistake", "--start"],
        dir.path(),
    );
    run.expect(0, &[]);
    assert!(
        run.stdout.contains("was promoted to timeline 2"),
        "{}",
        run.stdout
    );
    let stop = walferry_testutil::pg::as_cluster_user({
        let mut cmd = std::process::Command::new(primary.bindir().join("pg_ctl"));
        cmd.arg("stop").arg("-D").arg(&pgdata).arg("-w");
        cmd
    })
    .output()
    .unwrap();
    assert!(stop.status.success(), "{stop:?}");

    let opts = ClusterOptions {
        env: server_env(&[]),
        ..ClusterOptions::default()
    };
    let mut restored = Cluster::from_existing(&pgdata, &opts).unwrap();
    restored.start().unwrap();
    assert_eq!(fingerprint(&restored), expected);
    restored.stop().unwrap();
}
