//! Times one 256 MiB put as a single PUT and as a multipart upload (the defaults: 16 MiB
//! parts, 4 in flight) against the in-process S3 server of `walferry-testutil` with
//! [`NetworkProfile::cloud`]: a 20 ms round trip and 50,000,000 bytes/s per connection.
//!
//! ```sh
//! cargo run --release -p walferry-store --example multipart_put [MiB]
//! ```

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bytes::Bytes;
use walferry_store::{
    ArchiveStore, CancellationToken, Location, MultipartOptions, ObjectKey, PutMode, S3Options,
    Store, StoreConfig,
};
use walferry_testutil::s3::{NetworkProfile, S3Server, S3ServerConfig};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map_or(256, |a| a.parse().expect("the size in MiB"));
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(S3ServerConfig {
        network: NetworkProfile::cloud(),
        ..S3ServerConfig::new(dir.path())
    })
    .unwrap();
    server.create_bucket("bench").unwrap();
    let body = Bytes::from(
        (0..mib << 20)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
            .collect::<Vec<u8>>(),
    );
    let cases = [
        (
            "single PUT",
            MultipartOptions {
                threshold: u64::MAX,
                ..MultipartOptions::DEFAULT
            },
        ),
        ("multipart, defaults", MultipartOptions::DEFAULT),
    ];
    for (name, multipart) in cases {
        let mut config = StoreConfig::new(Location::S3 {
            bucket: "bench".into(),
            prefix: "multipart".into(),
        });
        config.s3 = S3Options {
            endpoint: Some(server.endpoint()),
            access_key_id: Some(server.access_key().into()),
            secret_access_key: Some(server.secret_key().into()),
            multipart,
            ..S3Options::default()
        };
        let store = Store::open(&config).await.unwrap();
        let key = ObjectKey::new(format!("obj-{}", multipart.threshold)).unwrap();
        let start = Instant::now();
        store
            .put(
                &key,
                body.clone(),
                PutMode::Create,
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        let took = start.elapsed();
        println!(
            "{name}: {mib} MiB in {took:.2?} ({:.0} MiB/s)",
            mib as f64 / took.as_secs_f64()
        );
    }
}
