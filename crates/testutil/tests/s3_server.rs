//! The test S3 server, driven by aws-sdk-s3 as walferry drives real S3.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use walferry_testutil::s3::{NetworkProfile, S3Server, S3ServerConfig};

const BUCKET: &str = "wal";

/// A server with bucket [`BUCKET`] in a fresh directory.
fn server_with(network: NetworkProfile) -> (tempfile::TempDir, S3Server) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let server = S3Server::start(S3ServerConfig {
        network,
        ..S3ServerConfig::new(dir.path())
    })
    .expect("start the S3 server");
    server
        .create_bucket(BUCKET)
        .expect("create the test bucket");
    (dir, server)
}

fn server() -> (tempfile::TempDir, S3Server) {
    server_with(NetworkProfile::NONE)
}

fn client_with(server: &S3Server, secret_key: &str, retry: RetryConfig) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(Credentials::new(
            server.access_key(),
            secret_key,
            None,
            None,
            "walferry-test",
        ))
        .region(Region::new(server.region().to_owned()))
        .endpoint_url(server.endpoint())
        .force_path_style(true)
        .retry_config(retry)
        .build();
    Client::from_conf(config)
}

fn client(server: &S3Server) -> Client {
    client_with(server, server.secret_key(), RetryConfig::standard())
}

/// A client that gives up on the first failure.
fn impatient_client(server: &S3Server) -> Client {
    client_with(server, server.secret_key(), RetryConfig::disabled())
}

fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Deterministic, incompressible-looking test data.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn put(client: &Client, key: &str, body: &[u8]) {
    client
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

async fn get(client: &Client, key: &str) -> Vec<u8> {
    let resp = client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
    let body = resp.body.collect().await;
    body.unwrap_or_else(|e| panic!("read {key}: {e:?}"))
        .into_bytes()
        .to_vec()
}

/// HTTP status of a HEAD of `key` (200 or 404).
async fn head_status(client: &Client, key: &str) -> u16 {
    match client.head_object().bucket(BUCKET).key(key).send().await {
        Ok(_) => 200,
        Err(e) => status(&e).unwrap_or_else(|| panic!("head {key}: {e:?}")),
    }
}

#[tokio::test]
async fn put_get_head_list_copy_delete_round_trip() {
    let (_dir, server) = server();
    let s3 = client(&server);

    let buckets = s3.list_buckets().send().await.unwrap();
    let names: Vec<_> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, [BUCKET]);

    put(&s3, "a/one", b"hello").await;
    put(&s3, "a/two", b"").await;
    put(&s3, "b/three", b"x").await;
    assert_eq!(get(&s3, "a/one").await, b"hello");
    assert_eq!(get(&s3, "a/two").await, b"");

    let head = s3
        .head_object()
        .bucket(BUCKET)
        .key("a/one")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(5));
    // md5("hello")
    assert_eq!(head.e_tag(), Some("\"5d41402abc4b2a76b9719d911017c592\""));

    let listed = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("a/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a/one", "a/two"]);
    let listed = s3
        .list_objects()
        .bucket(BUCKET)
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<_> = listed
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["a/", "b/"]);

    s3.copy_object()
        .bucket(BUCKET)
        .key("c/copy")
        .copy_source(format!("{BUCKET}/a/one"))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&s3, "c/copy").await, b"hello");

    s3.delete_object()
        .bucket(BUCKET)
        .key("a/one")
        .send()
        .await
        .unwrap();
    assert_eq!(head_status(&s3, "a/one").await, 404);
    let err = s3
        .get_object()
        .bucket(BUCKET)
        .key("a/one")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_no_such_key());

    let delete = Delete::builder()
        .objects(ObjectIdentifier::builder().key("a/two").build().unwrap())
        .objects(ObjectIdentifier::builder().key("b/three").build().unwrap())
        .build()
        .unwrap();
    s3.delete_objects()
        .bucket(BUCKET)
        .delete(delete)
        .send()
        .await
        .unwrap();
    let listed = s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["c/copy"]);
}

#[tokio::test]
async fn range_get() {
    let (_dir, server) = server();
    let s3 = client(&server);
    let body = data(1000, 1);
    put(&s3, "obj", &body).await;

    let cases: [(&str, std::ops::Range<usize>, &str); 5] = [
        ("bytes=10-19", 10..20, "bytes 10-19/1000"),
        ("bytes=-5", 995..1000, "bytes 995-999/1000"),
        ("bytes=990-", 990..1000, "bytes 990-999/1000"),
        ("bytes=995-5000", 995..1000, "bytes 995-999/1000"),
        ("bytes=-5000", 0..1000, "bytes 0-999/1000"),
    ];
    for (range, want, content_range) in cases {
        let resp = s3
            .get_object()
            .bucket(BUCKET)
            .key("obj")
            .range(range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.content_range(), Some(content_range), "{range}");
        assert_eq!(resp.content_length(), Some(want.len() as i64), "{range}");
        let got = resp.body.collect().await.unwrap().into_bytes();
        assert!(got[..] == body[want], "{range}");
    }

    let err = s3
        .get_object()
        .bucket(BUCKET)
        .key("obj")
        .range("bytes=1000-")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(416));
}

#[tokio::test]
async fn create_only_put_on_an_existing_key_is_412() {
    let (_dir, server) = server();
    let s3 = client(&server);
    let create = |body: &'static [u8]| {
        s3.put_object()
            .bucket(BUCKET)
            .key("seg")
            .if_none_match("*")
            .body(ByteStream::from_static(body))
            .send()
    };
    create(b"first").await.unwrap();
    let err = create(b"second").await.unwrap_err();
    assert_eq!(status(&err), Some(412));
    assert_eq!(get(&s3, "seg").await, b"first");
}

/// Fix 3: stock s3s-fs let 2–8 of 8 such writers win.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create_only_writers_have_one_winner() {
    let (_dir, server) = server();
    let s3 = client(&server);
    for round in 0..5 {
        let key = format!("race/{round}");
        let writers: Vec<_> = (0..8u64)
            .map(|i| {
                let s3 = s3.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    let body = data(64 * 1024, round * 100 + i);
                    let result = s3
                        .put_object()
                        .bucket(BUCKET)
                        .key(key)
                        .if_none_match("*")
                        .body(ByteStream::from(body.clone()))
                        .send()
                        .await;
                    (result.map_err(|e| status(&e)), body)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for writer in writers {
            let (result, body) = writer.await.unwrap();
            match result {
                Ok(_) => winners.push(body),
                Err(code) => assert_eq!(code, Some(412), "round {round}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        assert!(get(&s3, &key).await == winners[0], "round {round}");
    }
}

/// Fix 4: a corrupt upload must not pass for archived.
#[tokio::test]
async fn put_with_wrong_content_md5_leaves_no_object() {
    let (_dir, server) = server();
    let s3 = client(&server);
    // md5 of the empty string, not of the body
    let wrong_md5 = "1B2M2Y8AsgTpgAmY7PhCfg==";

    let err = s3
        .put_object()
        .bucket(BUCKET)
        .key("seg")
        .content_md5(wrong_md5)
        .body(ByteStream::from_static(b"corrupt"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(400));
    assert_eq!(err.into_service_error().meta().code(), Some("BadDigest"));
    assert_eq!(head_status(&s3, "seg").await, 404);

    // The archiver's retry, create-only, now succeeds.
    s3.put_object()
        .bucket(BUCKET)
        .key("seg")
        .if_none_match("*")
        .body(ByteStream::from_static(b"good"))
        .send()
        .await
        .unwrap();

    // A bad overwrite keeps the old object too.
    let err = s3
        .put_object()
        .bucket(BUCKET)
        .key("seg")
        .content_md5(wrong_md5)
        .body(ByteStream::from_static(b"corrupt"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(400));
    assert_eq!(get(&s3, "seg").await, b"good");

    // So does a wrong checksum header.
    let err = s3
        .put_object()
        .bucket(BUCKET)
        .key("other")
        .checksum_crc32("AAAAAA==")
        .body(ByteStream::from_static(b"corrupt"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(400));
    assert_eq!(head_status(&s3, "other").await, 404);
}

#[tokio::test]
async fn wrong_secret_key_is_403() {
    let (_dir, server) = server();
    let s3 = client_with(&server, "not-the-secret", RetryConfig::disabled());
    let err = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(403));
    let err = s3
        .put_object()
        .bucket(BUCKET)
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(403));
}

#[tokio::test]
async fn stop_fails_requests_and_restart_serves_the_same_data() {
    let (_dir, mut server) = server();
    let port = server.port();
    put(&client(&server), "kept", b"data").await;

    let idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    server.stop();
    assert!(!server.is_running());
    let err = impatient_client(&server)
        .get_object()
        .bucket(BUCKET)
        .key("kept")
        .send()
        .await;
    assert!(err.is_err());
    // Open connections are closed, not left hanging.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!((&idle).read(&mut buf), Ok(0) | Err(_)));

    server.restart().unwrap();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_eq!(get(&client(&server), "kept").await, b"data");
}

#[tokio::test]
async fn large_object_round_trips_byte_for_byte() {
    let (_dir, server) = server();
    let s3 = client(&server);
    let body = data(16 << 20, 7);
    put(&s3, "big", &body).await;
    let got = get(&s3, "big").await;
    assert_eq!(got.len(), body.len());
    assert!(got == body);

    let resp = s3
        .get_object()
        .bucket(BUCKET)
        .key("big")
        .range("bytes=262143-524288")
        .send()
        .await
        .unwrap();
    let got = resp.body.collect().await.unwrap().into_bytes();
    assert!(got[..] == body[262_143..=524_288]);
}

/// A file body goes up aws-chunked with a trailing CRC32, which the server
/// checks before it stores the object.
#[tokio::test]
async fn streaming_upload_with_trailing_checksum() {
    let (dir, server) = server();
    let s3 = client(&server);
    let body = data(3 << 20, 11);
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, &body).unwrap();

    let put = s3
        .put_object()
        .bucket(BUCKET)
        .key("streamed")
        .if_none_match("*")
        .body(ByteStream::from_path(&file).await.unwrap())
        .send()
        .await
        .unwrap();
    assert!(put.checksum_crc32().is_some(), "{put:?}");
    assert!(get(&s3, "streamed").await == body);
}

/// Uploads `parts` as a multipart upload of `key`, completing it
/// create-only if asked.
async fn multipart(
    s3: &Client,
    key: &str,
    parts: &[&[u8]],
    create_only: bool,
) -> Result<(), SdkError<CompleteMultipartUploadError>> {
    let created = s3
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect("create a multipart upload");
    let upload_id = created.upload_id().expect("an upload id").to_owned();
    let mut completed = CompletedMultipartUpload::builder();
    for (number, part) in (1..).zip(parts) {
        let done = s3
            .upload_part()
            .bucket(BUCKET)
            .key(key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(part.to_vec()))
            .send()
            .await
            .expect("upload a part");
        completed = completed.parts(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(done.e_tag().map(str::to_owned))
                .build(),
        );
    }
    let mut complete = s3
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(completed.build());
    if create_only {
        complete = complete.if_none_match("*");
    }
    let done = complete.send().await?;
    let etag = done.e_tag().unwrap_or_default();
    assert!(etag.ends_with(&format!("-{}\"", parts.len())), "{etag}");
    Ok(())
}

#[tokio::test]
async fn multipart_upload_with_create_only_complete() {
    let (_dir, server) = server();
    let s3 = client(&server);
    let body = data((5 << 20) + 1000, 3);
    let (first, second) = body.split_at(5 << 20);

    multipart(&s3, "mp", &[first, second], true).await.unwrap();
    assert!(get(&s3, "mp").await == body);

    let err = multipart(&s3, "mp", &[first, second], true)
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(412));
}

/// s3s-fs keeps an earlier object's checksum for a multipart object; the
/// SDK then fails the GET with `ChecksumMismatch`.
#[tokio::test]
async fn multipart_overwrite_does_not_keep_the_old_checksum() {
    let (_dir, server) = server();
    let s3 = client(&server);
    put(&s3, "k", b"single put, stored with a CRC32").await;
    multipart(&s3, "k", &[b"multipart"], false).await.unwrap();
    assert_eq!(get(&s3, "k").await, b"multipart");

    put(&s3, "gone", b"deleted, but its checksum lingers").await;
    s3.delete_object()
        .bucket(BUCKET)
        .key("gone")
        .send()
        .await
        .unwrap();
    multipart(&s3, "gone", &[b"new"], true).await.unwrap();
    assert_eq!(get(&s3, "gone").await, b"new");
}

#[tokio::test]
async fn cloud_profile_delays_the_first_byte() {
    let (_dir, server) = server_with(NetworkProfile::cloud());
    let s3 = client(&server);
    put(&s3, "small", b"tiny").await;
    for _ in 0..3 {
        let start = Instant::now();
        assert_eq!(get(&s3, "small").await, b"tiny");
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");
    }
}

#[tokio::test]
async fn bandwidth_cap_slows_one_stream() {
    const RATE: u64 = 4_000_000;
    let (_dir, server) = server_with(NetworkProfile {
        first_byte_delay: Duration::ZERO,
        bandwidth_bytes_per_sec: Some(RATE),
    });
    let s3 = client(&server);
    let body = data(1_000_000, 5);
    put(&s3, "obj", &body).await;

    let start = Instant::now();
    assert!(get(&s3, "obj").await == body);
    let elapsed = start.elapsed();
    // 1 MB at 4 MB/s is 250 ms, less a 20 kB burst.
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

/// A plain synchronous test, as process-spawning tests use the server.
#[test]
fn works_without_a_caller_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = S3Server::start_in(dir.path()).unwrap();
    server.create_bucket(BUCKET).unwrap();
    let stream = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    drop(stream);
    server.restart().unwrap();
    assert!(server.is_running());
}

#[test]
fn binary_announces_its_endpoint_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_walferry-s3-server"))
        .args(["--root"])
        .arg(dir.path())
        .args(["--port", "0", "--bucket", BUCKET, "--bucket", "other"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(dir.path().join(BUCKET).is_dir());
    assert!(dir.path().join("other").is_dir());
    let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn binary_refuses_non_loopback_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_walferry-s3-server"))
        .arg("--root")
        .arg(dir.path())
        .args(["--host", "0.0.0.0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("non-loopback"), "{stderr}");
}
