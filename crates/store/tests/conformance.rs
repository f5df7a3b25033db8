//! The conformance suite against every backend: memory, a local directory, the in-process S3
//! server, and an external S3-compatible server when `WALFERRY_TEST_S3_ENDPOINT` is set (CI
//! points it at moto, a second, independent implementation).

#![allow(clippy::unwrap_used)]

use std::num::NonZeroUsize;

use walferry_store::conformance::Capabilities;
use walferry_store::{
    Location, MemoryStore, MultipartOptions, RetryConfig, S3Options, Store, StoreConfig,
    conformance,
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
        // Small, so that the multipart checks (13 MiB bodies) make three parts quickly.
        multipart: MultipartOptions {
            threshold: 6 << 20,
            part_size: MultipartOptions::MIN_PART_SIZE,
            ..MultipartOptions::DEFAULT
        },
        ..S3Options::default()
    };
    config
}

/// Checks that the multipart checks really went up in parts: S3 gives an object completed
/// from N parts an ETag ending in `-N`.
async fn assert_multipart_etag(
    endpoint: &str,
    bucket: &str,
    access: &str,
    secret: &str,
    base: &str,
) {
    let client = raw_client(endpoint, access, secret);
    let head = client
        .head_object()
        .bucket(bucket)
        .key(format!("conformance/prefix/{base}/multipart/large"))
        .send()
        .await
        .unwrap();
    let etag = head.e_tag().unwrap_or_default();
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "the 13 MiB conformance object was not a 3-part upload: ETag {etag}"
    );
}

fn raw_client(endpoint: &str, access: &str, secret: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(access, secret, None, None, "test"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
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
    let base = unique("base");
    conformance::run_all(&store, &base).await;
    assert_multipart_etag(
        &server.endpoint(),
        "conformance",
        server.access_key(),
        server.secret_key(),
        &base,
    )
    .await;
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
    let config = s3_config(endpoint.clone(), &bucket, &access, &secret);
    let store = Store::open(&config).await.unwrap();
    let base = unique("base");
    conformance::run_with(&store, &base, external_capabilities()).await;
    assert_multipart_etag(&endpoint, &bucket, &access, &secret, &base).await;
}

/// What the external server lacks. CI's is moto 5.2.5, whose PutObject and
/// CompleteMultipartUpload check `If-None-Match: *` and only then store the object, with no
/// lock (`moto/s3/responses.py`, `put_object`): a create-only write over an existing object is
/// refused, but racing creates can all succeed. Set `WALFERRY_TEST_S3_ATOMIC_CREATE=1` for a
/// server that does it atomically (AWS S3).
fn external_capabilities() -> Capabilities {
    let atomic = std::env::var("WALFERRY_TEST_S3_ATOMIC_CREATE").is_ok_and(|v| v == "1");
    Capabilities {
        atomic_create: atomic,
    }
}

/// Creates `bucket` on an external server unless it exists.
async fn ensure_bucket(endpoint: &str, bucket: &str, access: &str, secret: &str) {
    let client = raw_client(endpoint, access, secret);
    if client.head_bucket().bucket(bucket).send().await.is_err() {
        client.create_bucket().bucket(bucket).send().await.unwrap();
    }
}
