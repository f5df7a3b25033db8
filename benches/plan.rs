//! Restore planning over a large synthetic archive: 100,000 segments (1.5 TiB of 16 MiB WAL)
//! on two timelines, with a backup every 10,000 segments. Measures building the WAL index from
//! the listed file names, and planning a restore from the oldest backup to the end of the
//! archive (the longest segment sequence).

use criterion::{Criterion, criterion_group, criterion_main};
use walferry_manifest::plan::{Catalog, RecoveryTarget, RestoreRequest};
use walferry_manifest::{
    BackupSummary, ClusterIdentity, RepoDescriptor, TimelineGraph, Timestamp, WalIndex,
};
use walferry_wal::{
    Lsn, PgVersion, SegNo, SegmentName, TimelineHistory, TimelineId, WalFileName, WalSegSize,
};

const SIZE: WalSegSize = WalSegSize::DEFAULT;
const SEGMENTS: u64 = 100_000;
const SWITCH: u64 = 60_000;

fn tli(id: u32) -> TimelineId {
    TimelineId::new(id).expect("valid timeline")
}

fn at(segno: u64, offset: u64) -> Lsn {
    Lsn(segno * SIZE.bytes() + offset)
}

fn names() -> Vec<WalFileName> {
    let mut names: Vec<WalFileName> = (0..SEGMENTS)
        .map(|n| {
            let t = if n < SWITCH { 1 } else { 2 };
            WalFileName::Segment(SegmentName::new(tli(t), SegNo(n), SIZE).expect("name"))
        })
        .collect();
    names.push(WalFileName::History(tli(2)));
    names
}

fn backups(identity: ClusterIdentity) -> Vec<BackupSummary> {
    (10..SEGMENTS)
        .step_by(10_000)
        .map(|n| {
            let t = if n < SWITCH { 1 } else { 2 };
            let time =
                Timestamp::from_unix_seconds(1_795_582_800 + i64::try_from(n).expect("small") * 60)
                    .expect("time");
            BackupSummary {
                label: format!("b{n}"),
                identity,
                start_lsn: at(n, 0x28),
                start_timeline: tli(t),
                stop_lsn: at(n, 0x128),
                stop_timeline: tli(t),
                start_time: time,
                stop_time: time,
            }
        })
        .collect()
}

fn plan(c: &mut Criterion) {
    let identity = ClusterIdentity {
        system_identifier: 7_441_234_567_890_123_456,
        pg_version: PgVersion::V15,
        wal_segment_size: SIZE,
    };
    let descriptor = RepoDescriptor::new(identity);
    let names = names();
    let history = TimelineHistory::parse(tli(2), &format!("1\t{}\tswitch\n", at(SWITCH, 0x1234)))
        .expect("history");
    let graph = TimelineGraph::new([history]);
    let backups = backups(identity);

    let mut group = c.benchmark_group("plan");
    group.sample_size(20);
    group.bench_function("index/segments=100000", |b| {
        b.iter(|| WalIndex::from_names(SIZE, names.iter().copied()))
    });
    let wal = WalIndex::from_names(SIZE, names.iter().copied());
    let catalog = Catalog {
        descriptor: &descriptor,
        backups: &backups,
        timelines: &graph,
        wal: &wal,
    };
    let request = RestoreRequest {
        backup: Some("b10".into()),
        ..RestoreRequest::new(RecoveryTarget::EndOfArchive)
    };
    let planned = catalog.plan(&request).expect("plan");
    assert_eq!(planned.segments.len(), 99_990);
    group.bench_function("plan/end-of-archive/segments=100000", |b| {
        b.iter(|| catalog.plan(&request).expect("plan"))
    });
    group.bench_function("plan/iterate-names/segments=100000", |b| {
        b.iter(|| planned.segments.iter().count())
    });
    group.finish();
}

criterion_group!(benches, plan);
criterion_main!(benches);
