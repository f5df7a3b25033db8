//! The conformance suite against every backend: memory, a local directory, the in-process S3
//! server, and an external S3-compatible server when `WALFERRY_TEST_S3_ENDPOINT` is set (CI
//! points it at moto, a second, independent implementation).

#![allow(clippy::unwrap_used)]

use std::num::NonZeroUsize;

use walferry_store::{
    Location, MemoryStore, RetryConfig, S3Options, Store, StoreConfig, conformance,
};
use walferry_testutil::s3::S3Server;

fn quick_retry() -> RetryConfig {
    RetryConfig {
        budget: std::time::Duration::from_secs(10),
        ..RetryConfig::RESTORE
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand_u64())
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[tokio::test]
async fn memory() {
    let store = Store::memory(MemoryStore::new(), quick_retry());
    conformance::run_all(&store, "base").await;
}

#[tokio::test]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(Location::Local(dir.path().join("repo")));
    config.retry = quick_retry();
    let store = Store::open(&config).await.unwrap();
    conformance::run_all(&store, "base").await;
}

fn s3_config(endpoint: String, bucket: &str, access: &str, secret: &str) -> StoreConfig {
    let mut config = StoreConfig::new(Location::S3 {
        bucket: bucket.to_owned(),
        prefix: "conformance/prefix".to_owned(),
    });
    config.retry = quick_retry();
    config.concurrency = NonZeroUsize::new(16).unwrap();
    config.s3 = S3Options {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key_id: Some(access.into()),
        secret_access_key: Some(secret.into()),
        ..S3Options::default()
    };
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_test_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start_in(dir.path()).unwrap();
    server.create_bucket("conformance").unwrap();
    let config = s3_config(
        server.endpoint(),
        "conformance",
        server.access_key(),
        server.secret_key(),
    );
    let store = Store::open(&config).await.unwrap();
    conformance::run_all(&store, &unique("base")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_external_server() {
    let Ok(endpoint) = std::env::var("WALFERRY_TEST_S3_ENDPOINT") else {
        println!("skipping: WALFERRY_TEST_S3_ENDPOINT is not set (CI sets it to a moto server)");
        return;
    };
    let bucket =
        std::env::var("WALFERRY_TEST_S3_BUCKET").unwrap_or_else(|_| "walferry-conformance".into());
    let access = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "testing".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testing".into());
    ensure_bucket(&endpoint, &bucket, &access, &secret).await;
    let config = s3_config(endpoint, &bucket, &access, &secret);
    let store = Store::open(&config).await.unwrap();
    conformance::run_all(&store, &unique("base")).await;
}

/// Creates `bucket` on an external server unless it exists.
async fn ensure_bucket(endpoint: &str, bucket: &str, access: &str, secret: &str) {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(access, secret, None, None, "test"))
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    if client.head_bucket().bucket(bucket).send().await.is_err() {
        client.create_bucket().bucket(bucket).send().await.unwrap();
    }
}
