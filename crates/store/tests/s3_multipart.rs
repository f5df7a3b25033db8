//! Multipart uploads in the S3 backend when things go wrong, against the in-process S3 server:
//! a cancelled upload is aborted and leaves nothing, and a server restart in the middle of an
//! upload costs retries of the parts in flight, not the put.

#![allow(clippy::unwrap_used)]

use std::num::NonZeroUsize;
use std::time::Duration;

use walferry_store::conformance::patterned_body;
use walferry_store::{
    ArchiveStore, CancellationToken, Location, MultipartOptions, ObjectKey, PutMode, RetryConfig,
    S3Options, Store, StoreConfig,
};
use walferry_testutil::s3::{NetworkProfile, S3Server, S3ServerConfig};

/// 5 MiB parts above 6 MiB, two in flight, against a server capped at 10 MB/s per
/// connection: a 20 MiB put takes about a second, long enough to interrupt.
fn slow_server_and_config(dir: &std::path::Path) -> (S3Server, StoreConfig) {
    let server = S3Server::start(S3ServerConfig {
        network: NetworkProfile {
            first_byte_delay: Duration::ZERO,
            bandwidth_bytes_per_sec: Some(10_000_000),
        },
        ..S3ServerConfig::new(dir)
    })
    .unwrap();
    server.create_bucket("multipart").unwrap();
    let config = store_config(&server);
    (server, config)
}

/// The store at `multipart`/`p` on `server`, with the multipart options above.
fn store_config(server: &S3Server) -> StoreConfig {
    let mut config = StoreConfig::new(Location::S3 {
        bucket: "multipart".into(),
        prefix: "p".into(),
    });
    config.retry = RetryConfig {
        budget: Duration::from_secs(30),
        ..RetryConfig::RESTORE
    };
    config.s3 = S3Options {
        endpoint: Some(server.endpoint()),
        access_key_id: Some(server.access_key().into()),
        secret_access_key: Some(server.secret_key().into()),
        multipart: MultipartOptions {
            threshold: 6 << 20,
            part_size: MultipartOptions::MIN_PART_SIZE,
            concurrency: NonZeroUsize::new(2).unwrap(),
        },
        ..S3Options::default()
    };
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_upload_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, config) = slow_server_and_config(dir.path());
    let store = Store::open(&config).await.unwrap();
    let key = ObjectKey::new("cancel/me").unwrap();
    let cancel = CancellationToken::new();
    let put = {
        let (store, key, cancel) = (store.clone(), key.clone(), cancel.clone());
        tokio::spawn(async move {
            store
                .put(&key, patterned_body(20 << 20, 1), PutMode::Create, &cancel)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    let err = put.await.unwrap().expect_err("a cancelled put fails");
    assert!(err.is_cancelled(), "{err:?}");
    let fresh = CancellationToken::new();
    let pending = store.incomplete_uploads("cancel/", &fresh).await.unwrap();
    assert!(pending.is_empty(), "not aborted: {pending:?}");
    let err = store.head(&key, &fresh).await.expect_err("no object");
    assert!(err.is_not_found(), "{err:?}");
}

/// A put cancelled while its CreateMultipartUpload is in flight, after the server made the
/// upload but before the answer naming it arrived: the put waits for the answer and aborts
/// the upload, rather than leave it behind unnamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_during_create_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let answer_delay = Duration::from_millis(500);
    let server = S3Server::start(S3ServerConfig {
        network: NetworkProfile {
            first_byte_delay: answer_delay,
            bandwidth_bytes_per_sec: None,
        },
        ..S3ServerConfig::new(dir.path())
    })
    .unwrap();
    server.create_bucket("multipart").unwrap();
    let store = Store::open(&store_config(&server)).await.unwrap();
    let key = ObjectKey::new("cancel/create").unwrap();
    let body = patterned_body(20 << 20, 3);
    let cancel = CancellationToken::new();
    let put = {
        let (store, key, cancel) = (store.clone(), key.clone(), cancel.clone());
        tokio::spawn(async move { store.put(&key, body, PutMode::Create, &cancel).await })
    };
    // s3s-fs records an upload as `<root>/.upload-<id>.json`; the answer is held back.
    let uploads_on_disk = || {
        std::fs::read_dir(server.root())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with(".upload-") && name.ends_with(".json")
            })
            .count()
    };
    let deadline = std::time::Instant::now() + answer_delay / 2;
    while uploads_on_disk() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server made no upload"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!put.is_finished(), "the create was answered already");
    cancel.cancel();
    let err = put.await.unwrap().expect_err("a cancelled put fails");
    assert!(err.is_cancelled(), "{err:?}");
    let fresh = CancellationToken::new();
    let pending = store.incomplete_uploads("cancel/", &fresh).await.unwrap();
    assert!(pending.is_empty(), "not aborted: {pending:?}");
    assert_eq!(uploads_on_disk(), 0);
}

#[test]
fn parts_are_retried_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, config) = slow_server_and_config(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(Store::open(&config)).unwrap();
    let key = ObjectKey::new("restart/me").unwrap();
    let body = patterned_body(20 << 20, 2);
    let put = {
        let (store, key, body) = (store.clone(), key.clone(), body.clone());
        runtime.spawn(async move {
            store
                .put(&key, body, PutMode::Create, &CancellationToken::new())
                .await
        })
    };
    std::thread::sleep(Duration::from_millis(400));
    assert!(!put.is_finished(), "the put ended before the restart");
    server.restart().unwrap();
    runtime
        .block_on(put)
        .unwrap()
        .expect("the put survives a restart");
    let cancel = CancellationToken::new();
    let got = runtime.block_on(store.get(&key, None, &cancel)).unwrap();
    assert!(got.body == body, "body differs");
    let pending = runtime
        .block_on(store.incomplete_uploads("restart/", &cancel))
        .unwrap();
    assert!(pending.is_empty(), "{pending:?}");
}

/// `incomplete_uploads`, which the conformance suite relies on to find uploads left behind,
/// does see one, under its prefix only, until it is aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_uploads_are_listed() {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let dir = tempfile::tempdir().unwrap();
    let (server, config) = slow_server_and_config(dir.path());
    let store = Store::open(&config).await.unwrap();
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(server.endpoint())
            .region(Region::new("us-east-1"))
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                server.access_key(),
                server.secret_key(),
                None,
                None,
                "test",
            ))
            .build(),
    );
    let upload = client
        .create_multipart_upload()
        .bucket("multipart")
        .key("p/left/behind")
        .send()
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    assert_eq!(
        store.incomplete_uploads("left/", &cancel).await.unwrap(),
        vec!["left/behind".to_owned()]
    );
    assert!(
        store
            .incomplete_uploads("other/", &cancel)
            .await
            .unwrap()
            .is_empty()
    );
    client
        .abort_multipart_upload()
        .bucket("multipart")
        .key("p/left/behind")
        .upload_id(upload.upload_id().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        store
            .incomplete_uploads("left/", &cancel)
            .await
            .unwrap()
            .is_empty()
    );
}
