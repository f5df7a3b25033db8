//! `walferry-restore estimate`: the plan, the bytes to fetch, a probe of the repository and
//! the replay rate earlier restores recorded, against a real archive.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use walferry_manifest::stats::{ReplayRecord, save_replay_record};
use walferry_manifest::{RecoveryTarget, RestoreRequest, TargetTimeline, Timestamp};
use walferry_store::{CancellationToken, Location, Store, StoreConfig};
use walferry_testutil::dirs::TestDir;

use crate::util::*;

/// `walferry-restore estimate <args>`.
fn estimate(repo: &Repo, args: &[&str], cwd: &Path) -> Run {
    let mut all = vec!["estimate"];
    all.extend_from_slice(args);
    walferry(RESTORE, &all, &repo.env, cwd)
}

/// `walferry-restore estimate <args> --json`, parsed.
fn estimate_json(repo: &Repo, args: &[&str], cwd: &Path) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let run = estimate(repo, &all, cwd);
    run.expect(0, &[]);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("estimate --json printed no JSON ({e}): {}", run.stdout))
}

/// The number at `pointer` (e.g. `/wal/segments`).
fn num(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer}: {v:#}"))
}

/// The stage named `name`.
fn stage<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["stages"]
        .as_array()
        .expect("stages is an array")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name}: {v:#}"))
}

/// The repository of `repo`, opened in this process.
fn open_store(runtime: &tokio::runtime::Runtime, repo: &Repo) -> Store {
    let root = repo.local_root.clone().expect("a local repository");
    runtime
        .block_on(Store::open(&StoreConfig::new(Location::Local(root))))
        .unwrap()
}

#[test]
fn estimate_reports_plan_bytes_probe_and_replay_rate() {
    let dir = TestDir::new("estimate-local").unwrap();
    let repo = Repo::local(&dir);
    let primary = primary_with_rows(&dir, &repo, 1000);
    let before_backup = primary.psql("SELECT clock_timestamp()").unwrap();
    let label = take_backup(&repo, &primary, dir.path(), &[]);
    insert_rows(&primary, 1001, 40_000);
    primary.create_restore_point("estimate-target").unwrap();
    insert_rows(&primary, 40_001, 41_000);
    let last = primary.switch_wal().unwrap();
    primary.wait_archived(&last, TIMEOUT).unwrap();

    let target = ["--target-name", "estimate-target"];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = open_store(&runtime, &repo);
    let cancel = CancellationToken::new();
    let request = RestoreRequest {
        target: RecoveryTarget::Name("estimate-target".into()),
        inclusive: true,
        timeline: TargetTimeline::Latest,
        backup: None,
    };
    let (_, plan) = runtime
        .block_on(walferry_engine::restore::plan(&store, &request, &cancel))
        .unwrap();
    assert!(plan.segments.len() >= 2, "{}", plan.explain());

    // Text: the plan, the stages and what bounds them, the total.
    let run = estimate(&repo, &target, dir.path());
    run.expect(0, &[]);
    for text in [
        &format!("backup '{label}'"),
        "to fetch:",
        "probe:",
        "decompression:",
        "replay:",
        "(default: no restore has recorded one",
        "bound by",
        "total: about",
    ] {
        assert!(run.stdout.contains(text), "lacks {text:?}: {}", run.stdout);
    }

    // JSON, with no replay record yet.
    let v = estimate_json(&repo, &target, dir.path());
    let total = num(&v, "/total_seconds");
    let (low, high) = (num(&v, "/range_seconds/0"), num(&v, "/range_seconds/1"));
    assert!(total > 0.0 && low <= total && total <= high, "{v:#}");
    let stage_sum: f64 = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["seconds"].as_f64().unwrap())
        .sum();
    assert!((stage_sum - total).abs() < 0.01, "{v:#}");
    assert!(
        ["network", "decompression", "disk"]
            .contains(&stage(&v, "backup")["bound"].as_str().unwrap())
    );
    assert!(
        ["replay", "network", "decompression"]
            .contains(&stage(&v, "wal")["bound"].as_str().unwrap())
    );
    assert!(num(stage(&v, "wal"), "/seconds") > 0.0, "{v:#}");
    assert!(num(stage(&v, "backup"), "/seconds") > 0.0, "{v:#}");

    assert_eq!(v["plan"]["backup"], label.as_str());
    assert_eq!(v["backup"]["label"], label.as_str());
    assert!(num(&v, "/backup/compressed_bytes") > 0.0);
    assert!(num(&v, "/backup/original_bytes") >= num(&v, "/backup/compressed_bytes") / 2.0);
    assert_eq!(
        num(&v, "/wal/segments"),
        plan.segments.len() as f64,
        "{v:#}"
    );
    assert_eq!(num(&v, "/plan/segments"), plan.segments.len() as f64);
    assert!(num(&v, "/wal/compressed_bytes") > 0.0);
    assert_eq!(
        num(&v, "/wal/original_bytes"),
        (plan.segments.len() << 24) as f64
    );

    assert!(num(&v, "/probe/objects") >= 1.0, "{v:#}");
    assert!(num(&v, "/probe/bytes") > 0.0);
    assert!(num(&v, "/probe/seconds") >= 0.0);
    assert!(num(&v, "/probe/bytes_per_second") > 0.0);
    assert!(num(&v, "/probe/first_byte_ms") >= 0.0);
    assert_eq!(num(&v, "/probe/jobs"), 8.0);
    assert!(num(&v, "/decompression_bytes_per_second") > 0.0);

    assert_eq!(v["replay"]["source"], "default", "{v:#}");
    assert_eq!(num(&v, "/replay/records"), 0.0);
    assert_eq!(
        num(&v, "/replay/bytes_per_second"),
        walferry_engine::estimate::DEFAULT_REPLAY_BYTES_PER_SECOND
    );
    assert!(num(stage(&v, "wal"), "/bytes_per_second") <= num(&v, "/replay/bytes_per_second"));

    // Earlier restores recorded their replay: the newest one that never stalled is used; a
    // newer, stalled one measured the fetch and is not.
    let now = SystemTime::now();
    let record = |at: SystemTime, seconds: f64, stalls: u64| ReplayRecord {
        recorded_at: Timestamp::from_system_time(at).unwrap(),
        wal_bytes: 1 << 30,
        segments: 64,
        seconds,
        stalls,
        cores: 2,
        startup_seconds: None,
        end_seconds: None,
    };
    for r in [
        record(now, 4.0, 0),
        record(now + Duration::from_secs(1), 100.0, 5),
    ] {
        runtime
            .block_on(save_replay_record(&store, &r, &cancel))
            .unwrap();
    }
    let v = estimate_json(
        &repo,
        &["--jobs", "2", "--target-name", "estimate-target"],
        dir.path(),
    );
    assert_eq!(v["replay"]["source"], "recorded", "{v:#}");
    assert_eq!(num(&v, "/replay/records"), 1.0);
    let recorded_rate = f64::from(1u32 << 30) / 4.0;
    assert_eq!(num(&v, "/replay/bytes_per_second"), recorded_rate);
    assert_eq!(num(&v, "/probe/jobs"), 2.0);
    let wal = stage(&v, "wal");
    assert!(num(wal, "/bytes_per_second") <= recorded_rate, "{v:#}");
    if wal["bound"] == "replay" {
        let expected = num(&v, "/wal/original_bytes") / recorded_rate;
        assert!((num(wal, "/seconds") - expected).abs() < 0.002, "{v:#}");
    }
    let (total, low, high) = (
        num(&v, "/total_seconds"),
        num(&v, "/range_seconds/0"),
        num(&v, "/range_seconds/1"),
    );
    assert!(total > 0.0 && low <= total && total <= high, "{v:#}");

    // A target no backup reaches fails as restore does, before any probe.
    estimate(&repo, &["--target-time", &before_backup], dir.path())
        .expect(1, &["no backup can reach"]);
    estimate(&repo, &["--target-timeline", "7"], dir.path()).expect(1, &["timeline 7"]);
}
