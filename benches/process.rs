//! The cost of one `walferry-archive push` and one `walferry-restore fetch` process, from start
//! to exit, against a local-directory repository: what PostgreSQL pays per WAL segment when it
//! runs `archive_command` and `restore_command`. The segment is the committed pgbench fixture
//! (16 MiB); push includes reading, checking, compressing (level 3) and a durable, create-only
//! write (fsync of file and directory); fetch includes reading, decompressing, verifying and an
//! atomic write of `%p`. `fetch/spooled` is a fetch the WAL prefetch pipeline has already
//! served: the segment waits, verified, in the spool of a live pipeline (held by this process),
//! and fetch moves it to `%p` with a rename, without reading its configuration or the
//! repository. `fetch/placed` is the same with placing allowed: fetch moves the segment into
//! `pg_wal` under its own name (a link, a `.done` status file, a sync of `pg_wal`) and answers
//! "not found", and PostgreSQL reads it there. `push/recorded` is PostgreSQL's call for a file
//! an earlier push uploaded ahead and recorded in `pg_wal/walferry-push/`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use walferry_engine::spool::SpoolWriter;
use walferry_wal::WalFileName;

const ARCHIVE: &str = env!("CARGO_BIN_EXE_walferry-archive");
const RESTORE: &str = env!("CARGO_BIN_EXE_walferry-restore");
const SEGMENT: &str = "00000001000000000000000C";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/wal")
        .join(SEGMENT)
}

fn run(program: &str, args: &[&str], repo: &Path) {
    run_expecting(program, args, repo, 0);
}

fn run_expecting(program: &str, args: &[&str], repo: &Path, code: i32) {
    let status = Command::new(program)
        .args(args)
        .env("WALFERRY_REPO", format!("file://{}", repo.display()))
        .env("WALFERRY_CONFIG", "/dev/null")
        .status()
        .expect("spawn");
    assert_eq!(status.code(), Some(code), "{program} {args:?}: {status}");
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

    // A segment an earlier push uploaded and recorded in pg_wal/walferry-push: PostgreSQL's
    // own call for it is answered from the record.
    let recorded_wal = work.path().join("recorded/pg_wal");
    std::fs::create_dir_all(recorded_wal.join("archive_status")).expect("create archive_status");
    let recorded = recorded_wal.join(SEGMENT);
    std::fs::copy(&fixture, &recorded).expect("copy the fixture");
    std::fs::write(
        recorded_wal.join(format!("archive_status/{SEGMENT}.ready")),
        b"",
    )
    .expect("mark it ready");
    let recorded_str = recorded.to_str().expect("utf-8 path");
    run(ARCHIVE, &["push", recorded_str], &archived);
    assert!(
        recorded_wal
            .join(format!("walferry-push/{SEGMENT}.done"))
            .is_file(),
        "push recorded the segment"
    );
    group.bench_function("push/recorded", |b| {
        b.iter(|| run(ARCHIVE, &["push", recorded_str], &archived))
    });

    let dest = work.path().join("RECOVERYXLOG");
    let dest_str = dest.to_str().expect("utf-8 path");
    group.bench_function("fetch/segment", |b| {
        b.iter(|| run(RESTORE, &["fetch", SEGMENT, dest_str], &archived))
    });

    // A data directory whose pg_wal holds a live spool, as the pipeline leaves it.
    let pgdata = work.path().join("pgdata");
    let pg_wal = pgdata.join("pg_wal");
    std::fs::create_dir_all(&pg_wal).expect("create pg_wal");
    let mut writer = SpoolWriter::create(&pg_wal).expect("create the spool");
    let name = WalFileName::parse(SEGMENT).expect("a segment name");
    let content = std::fs::read(&fixture).expect("read the fixture");
    let spooled_dest = pg_wal.join("RECOVERYXLOG");
    let spooled_dest_str = spooled_dest.to_str().expect("utf-8 path");
    let pgdata_str = pgdata.to_str().expect("utf-8 path");
    let published = std::cell::Cell::new(false);
    group.bench_function("fetch/spooled", |b| {
        b.iter_batched(
            || {
                // The previous fetch took its file: a direct fetch would have left it there.
                if published.get() {
                    assert!(
                        writer.taken(&name).expect("check the spool"),
                        "fetch did not take the spooled segment"
                    );
                }
                // PostgreSQL has renamed the previous file away before it asks for the next.
                let _ = std::fs::remove_file(&spooled_dest);
                let tmp = writer.path_for_tmp(&name);
                std::fs::write(&tmp, &content).expect("write into the spool");
                writer.publish(&name, &tmp).expect("publish");
                published.set(true);
            },
            |()| {
                run(
                    RESTORE,
                    &["fetch", SEGMENT, spooled_dest_str, "--pgdata", pgdata_str],
                    &archived,
                );
            },
            BatchSize::PerIteration,
        )
    });
    assert!(
        writer.taken(&name).expect("check the spool"),
        "fetch did not take the spooled segment"
    );

    // A segment the pipeline placed in pg_wal itself: fetch answers "not found" (exit 1) and
    // PostgreSQL reads the segment there.
    std::fs::create_dir_all(pg_wal.join("archive_status")).expect("create archive_status");
    writer.allow_placing().expect("allow placing");
    let in_pg_wal = pg_wal.join(SEGMENT);
    let placed = std::cell::Cell::new(false);
    group.bench_function("fetch/placed", |b| {
        b.iter_batched(
            || {
                if placed.get() {
                    assert!(
                        writer.taken(&name).expect("check the spool"),
                        "fetch did not place the segment"
                    );
                }
                // PostgreSQL has replayed and removed the previous one.
                let _ = std::fs::remove_file(&in_pg_wal);
                let mut file = writer.file_maker().create(&name).expect("create");
                file.file().write_all(&content).expect("write");
                writer.publish_file(&name, file).expect("publish");
                placed.set(true);
            },
            |()| {
                run_expecting(
                    RESTORE,
                    &["fetch", SEGMENT, spooled_dest_str, "--pgdata", pgdata_str],
                    &archived,
                    1,
                );
            },
            BatchSize::PerIteration,
        )
    });
    assert!(
        writer.taken(&name).expect("check the spool"),
        "fetch did not place the segment"
    );
    group.finish();
}

criterion_group!(benches, processes);
criterion_main!(benches);
