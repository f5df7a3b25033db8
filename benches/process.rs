//! The cost of one `walferry-archive push` and one `walferry-restore fetch` process, from start
//! to exit, against a local-directory repository: what PostgreSQL pays per WAL segment when it
//! runs `archive_command` and `restore_command`. The segment is the committed pgbench fixture
//! (16 MiB); push includes reading, checking, compressing (level 3) and a durable, create-only
//! write (fsync of file and directory); fetch includes reading, decompressing, verifying and an
//! atomic write of `%p`.

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const ARCHIVE: &str = env!("CARGO_BIN_EXE_walferry-archive");
const RESTORE: &str = env!("CARGO_BIN_EXE_walferry-restore");
const SEGMENT: &str = "00000001000000000000000C";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/wal")
        .join(SEGMENT)
}

fn run(program: &str, args: &[&str], repo: &Path) {
    let status = Command::new(program)
        .args(args)
        .env("WALFERRY_REPO", format!("file://{}", repo.display()))
        .env("WALFERRY_CONFIG", "/dev/null")
        .status()
        .expect("spawn");
    assert!(status.success(), "{program} {args:?}: {status}");
}

fn processes(c: &mut Criterion) {
    let fixture = fixture();
    let fixture_str = fixture.to_str().expect("utf-8 path");
    let size = std::fs::metadata(&fixture).expect("fixture").len();

    // A repository that already has its descriptor and the segment archived.
    let work = tempfile::tempdir().expect("tempdir");
    let archived = work.path().join("archived");
    run(ARCHIVE, &["push", fixture_str], &archived);

    let mut group = c.benchmark_group("process");
    group.throughput(Throughput::Bytes(size));
    group.sample_size(30);

    group.bench_function("push/new-segment", |b| {
        b.iter_batched(
            || {
                // A repository with the descriptor only, so the segment is new.
                let dir = tempfile::tempdir_in(work.path()).expect("tempdir");
                std::fs::copy(
                    archived.join("walferry.json"),
                    dir.path().join("walferry.json"),
                )
                .expect("copy descriptor");
                dir
            },
            |dir| run(ARCHIVE, &["push", fixture_str], dir.path()),
            BatchSize::PerIteration,
        )
    });

    group.bench_function("push/already-archived", |b| {
        b.iter(|| run(ARCHIVE, &["push", fixture_str, "--log", "error"], &archived))
    });

    let dest = work.path().join("RECOVERYXLOG");
    let dest_str = dest.to_str().expect("utf-8 path");
    group.bench_function("fetch/segment", |b| {
        b.iter(|| run(RESTORE, &["fetch", SEGMENT, dest_str], &archived))
    });
    group.finish();
}

criterion_group!(benches, processes);
criterion_main!(benches);
