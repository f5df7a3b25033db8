//! Compression and decompression throughput of real WAL: the committed pgbench segment in
//! `fixtures/wal/` (see `fixtures/README.md`). Throughput is in bytes of original WAL.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/wal/00000001000000000000000C"
);

fn codec(c: &mut Criterion) {
    let wal = std::fs::read(FIXTURE).expect("read the WAL fixture");
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(wal.len() as u64));
    group.sample_size(20);
    for level in [1, 3] {
        group.bench_function(
            BenchmarkId::new("compress", format!("level={level}")),
            |b| b.iter(|| walferry_codec::encode(&wal, level).expect("encode")),
        );
        let encoded = walferry_codec::encode(&wal, level).expect("encode");
        println!(
            "codec: level {level}: {} -> {} bytes ({:.1}x)",
            wal.len(),
            encoded.len(),
            wal.len() as f64 / encoded.len() as f64
        );
        group.bench_function(
            BenchmarkId::new("decompress", format!("level={level}")),
            |b| b.iter(|| walferry_codec::decode(&encoded, 1 << 30).expect("decode")),
        );
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
