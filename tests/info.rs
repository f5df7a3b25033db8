//! `walferry-restore info`: the repository's cluster, timelines, WAL ranges and gaps.

use walferry_testutil::dirs::TestDir;

use crate::util::*;

fn info_json(repo: &Repo, dir: &TestDir) -> serde_json::Value {
    let out = walferry_testutil::pg::as_cluster_user({
        let mut cmd = std::process::Command::new(RESTORE);
        cmd.args(["info", "--json"]).current_dir(dir.path());
        for (k, v) in &repo.env {
            cmd.env(k, v);
        }
        cmd
    })
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn shows_wal_ranges_and_gaps() {
    let dir = TestDir::new("info").unwrap();
    let repo = Repo::local(&dir);
    let primary = start_cluster(&dir, "primary", &archiving(&repo));
    let segments = primary.write_segments(4).unwrap();
    primary
        .wait_archived(segments.last().unwrap(), TIMEOUT)
        .unwrap();

    let info = info_json(&repo, &dir);
    assert_eq!(
        info["system_identifier"].as_str().unwrap(),
        primary.system_identifier().unwrap().to_string()
    );
    assert_eq!(info["pg_version"], 15);
    assert_eq!(info["backups"].as_array().unwrap().len(), 0);
    let timeline = &info["timelines"][0];
    assert_eq!(timeline["timeline"], 1);
    assert_eq!(timeline["wal"][0]["last"].as_str().unwrap(), segments[3]);
    assert!(timeline["gaps"].as_array().unwrap().is_empty());

    // Remove a segment in the middle: info reports the gap.
    std::fs::remove_file(local_segment_object(&repo, &segments[1])).unwrap();
    let info = info_json(&repo, &dir);
    let gaps = info["timelines"][0]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{info}");
    assert_eq!(gaps[0]["first"].as_str().unwrap(), segments[1]);
    assert_eq!(gaps[0]["segments"], 1);
}
