//! The storage conformance suite: the contracts of [`ArchiveStore`], checked against a real
//! backend. Run against every backend by `tests/conformance.rs`; other crates may run it against
//! their own store setups. Feature `testing`.
//!
//! Every check writes under `base/` so that runs against a shared bucket do not collide; pass a
//! fresh random `base` per run. Failures panic with a message naming the check.

use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::{ArchiveStore, ObjectKey, PutMode, Store};

fn key(base: &str, rel: &str) -> ObjectKey {
    ObjectKey::new(format!("{base}/{rel}")).expect("conformance keys are valid")
}

/// What a backend under test is known to lack, so that the suite can say which checks it
/// leaves out instead of failing on a known gap or passing over it in silence.
///
/// Walferry's own backends and AWS S3 have everything ([`Capabilities::FULL`]); only test
/// servers standing in for S3 may lack something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Concurrent create-only writes of one key have exactly one winner: the server checks
    /// `If-None-Match: *` atomically with creating the object, on PutObject and on
    /// CompleteMultipartUpload. AWS S3 does. moto 5.2.5 checks it and then stores, without a
    /// lock, so racing creates can all succeed (a sequential refusal still works there). Without
    /// it, the race checks assert only what such a server still keeps: at least one writer
    /// wins, every other one is refused with `AlreadyExists`, and the stored object is one
    /// winner's, whole.
    pub atomic_create: bool,
}

impl Capabilities {
    /// Every contract holds; the suite checks all of it.
    pub const FULL: Capabilities = Capabilities {
        atomic_create: true,
    };
}

/// Runs every check in order.
pub async fn run_all(store: &Store, base: &str) {
    run_with(store, base, Capabilities::FULL).await;
}

/// Runs every check that `capabilities` allows, in order, and prints one `not checked:` line
/// for each one it leaves out.
pub async fn run_with(store: &Store, base: &str, capabilities: Capabilities) {
    put_get_head_round_trip(store, base).await;
    missing_objects_are_not_found(store, base).await;
    create_never_overwrites(store, base).await;
    overwrite_replaces(store, base).await;
    if !capabilities.atomic_create {
        println!(
            "checked weaker: the create races (the server does not check If-None-Match atomically, so more than one writer may win)"
        );
    }
    concurrent_creates_have_one_winner(store, base, capabilities.atomic_create).await;
    ranges(store, base).await;
    list_by_prefix(store, base).await;
    delete_is_idempotent(store, base).await;
    empty_and_large_objects(store, base).await;
    unusual_key_characters(store, base).await;
    multipart_round_trip(store, base).await;
    multipart_create_never_overwrites(store, base).await;
    multipart_concurrent_creates_have_one_winner(store, base, capabilities.atomic_create).await;
}

/// Checks the winners of a create race: exactly one when the server creates atomically, at
/// least one otherwise (see [`Capabilities::atomic_create`]).
fn check_winners<W: Copy + std::fmt::Debug>(what: &str, winners: &[W], atomic: bool) {
    if atomic {
        assert_eq!(winners.len(), 1, "{what}: winners {winners:?}");
    } else {
        assert!(!winners.is_empty(), "{what}: no writer won");
    }
}

/// The size of the body of the multipart checks: 13 MiB, which is three parts (5 + 5 + 3 MiB)
/// for an S3 store configured with [`MultipartOptions::MIN_PART_SIZE`] parts above a 6 MiB
/// threshold, as `tests/conformance.rs` configures its S3 stores. Other backends just store it.
///
/// [`MultipartOptions::MIN_PART_SIZE`]: crate::MultipartOptions::MIN_PART_SIZE
pub const MULTIPART_BODY_SIZE: usize = 13 << 20;

/// A body of `len` bytes that does not repeat at any power-of-two period, so that parts put
/// in the wrong order or twice cannot go unnoticed. `seed` makes bodies differ.
pub fn patterned_body(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// A large object (a multipart upload on S3) round-trips byte for byte, `head` reports its
/// size, ranges across part boundaries read right, and no upload is left in progress.
pub async fn multipart_round_trip(store: &Store, base: &str) {
    let cancel = CancellationToken::new();
    let k = key(base, "multipart/large");
    let body = patterned_body(MULTIPART_BODY_SIZE, 1);
    store
        .put(&k, body.clone(), PutMode::Create, &cancel)
        .await
        .expect("multipart: put");
    let got = store.get(&k, None, &cancel).await.expect("multipart: get");
    assert_eq!(got.body.len(), body.len(), "multipart: size");
    assert!(got.body == body, "multipart: body differs");
    let meta = store.head(&k, &cancel).await.expect("multipart: head");
    assert_eq!(meta.size, body.len() as u64, "multipart: head size");
    let boundary = 5u64 << 20;
    let range = boundary - 10..boundary + 10;
    let got = store
        .get(&k, Some(range.clone()), &cancel)
        .await
        .expect("multipart: ranged get");
    assert_eq!(
        &got.body[..],
        &body[range.start as usize..range.end as usize],
        "multipart: range across a part boundary"
    );
    let pending = store
        .incomplete_uploads(&format!("{base}/multipart/"), &cancel)
        .await
        .expect("multipart: list uploads in progress");
    assert!(
        pending.is_empty(),
        "multipart: uploads left in progress: {pending:?}"
    );
}

/// A create-only large put over an existing key fails with `AlreadyExists`, leaves the
/// original whole, and leaves no upload in progress.
pub async fn multipart_create_never_overwrites(store: &Store, base: &str) {
    let cancel = CancellationToken::new();
    let k = key(base, "multipart/create-once");
    let first = patterned_body(MULTIPART_BODY_SIZE, 2);
    store
        .put(&k, first.clone(), PutMode::Create, &cancel)
        .await
        .expect("multipart create: first put");
    let err = store
        .put(
            &k,
            patterned_body(MULTIPART_BODY_SIZE, 3),
            PutMode::Create,
            &cancel,
        )
        .await
        .expect_err("multipart create: second put must fail");
    assert!(
        err.is_already_exists(),
        "multipart create: second put gave {err:?}"
    );
    let got = store
        .get(&k, None, &cancel)
        .await
        .expect("multipart create: get");
    assert!(
        got.body == first,
        "multipart create: content must be unchanged"
    );
    let pending = store
        .incomplete_uploads(&format!("{base}/multipart/"), &cancel)
        .await
        .expect("multipart create: list uploads in progress");
    assert!(
        pending.is_empty(),
        "multipart create: the refused upload was not aborted: {pending:?}"
    );
}

/// Three writers racing to create one key with large puts: exactly one wins (when `atomic`),
/// the rest see `AlreadyExists`, the stored object is a winner's, whole, and the losers'
/// uploads are aborted.
pub async fn multipart_concurrent_creates_have_one_winner(store: &Store, base: &str, atomic: bool) {
    let cancel = CancellationToken::new();
    let store = Arc::new(store.clone());
    let k = key(base, "multipart/race");
    let mut tasks = Vec::new();
    for writer in 0..3u64 {
        let store = Arc::clone(&store);
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let r = store
                .put(
                    &k,
                    patterned_body(MULTIPART_BODY_SIZE, 10 + writer),
                    PutMode::Create,
                    &CancellationToken::new(),
                )
                .await;
            (writer, r)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (writer, r) = task.await.expect("multipart race: task");
        match r {
            Ok(()) => winners.push(writer),
            Err(e) => assert!(e.is_already_exists(), "multipart race: loser got {e:?}"),
        }
    }
    check_winners("multipart race", &winners, atomic);
    let got = store
        .get(&k, None, &cancel)
        .await
        .expect("multipart race: get");
    assert!(
        winners
            .iter()
            .any(|&w| got.body == patterned_body(MULTIPART_BODY_SIZE, 10 + w)),
        "multipart race: stored object is not a winner's, whole"
    );
    let pending = store
        .incomplete_uploads(&format!("{base}/multipart/"), &cancel)
        .await
        .expect("multipart race: list uploads in progress");
    assert!(
        pending.is_empty(),
        "multipart race: losing uploads were not aborted: {pending:?}"
    );
}

/// A put is readable back byte for byte, and `head` reports its size.
pub async fn put_get_head_round_trip(store: &Store, base: &str) {
    let cancel = CancellationToken::new();
    let k = key(base, "round/trip");
    let body = Bytes::from_static(b"hello, archive");
    store
        .put(&k, body.clone(), PutMode::Create, &cancel)
        .await
        .expect("round trip: put");
    let got = store.get(&k, None, &cancel).await.expect("round trip: get");
    assert_eq!(got.body, body, "round trip: body");
    assert_eq!(
        got.object_size,
        body.len() as u64,
        "round trip: object size"
    );
    let meta = store.head(&k, &cancel).await.expect("round trip: head");
    assert_eq!(meta.size, body.len() as u64, "round trip: head size");
    assert_eq!(meta.key, k, "round trip: head key");
}

/// `get` and `head` of a missing object answer `NotFound`, and only that.
pub async fn missing_objects_are_not_found(store: &Store, base: &str) {
    let cancel = CancellationToken::new();
    let k = key(base, "missing/object");
    let err = store
        .get(&k, None, &cancel)
        .await
        .expect_err("missing: get");
    assert!(err.is_not_found(), "missing: get gave {err:?}");
    let err = store.head(&k, &cancel).await.expect_err("missing: head");
    assert!(err.is_not_found(), "missing: head gave {err:?}");
}

/// A create-only put on an existing key fails with `AlreadyExists` and changes nothing.
pub async fn create_never_overwrites(store: &Store, base: &str) {
    let cancel = CancellationToken::new();
    let k = key(base, "create/once");
    store
        .put(&k, Bytes::from_static(b"first"), PutMode::Create, &cancel)
        .await
        .expect("create: first put");
    let err = store
        .put(&k, Bytes::from_static(b"second!"), PutMode::Create, &cancel)
        .await
        .expect_err("create: second put must fail");
    assert!(err.is_already_exists(), "create: second put gave {err:?}");
    let got = store.get(&k, None, &cancel).await.expect("create: get");
    assert_eq!(&got.body[..], b"first", "create: content must be unchanged");
}

/// An overwriting put replaces the content.
pub async fn overwrite_replaces(store: &Store, base: &str) {
    let cancel = CancellationToken::new();
    let k = key(base, "over/write");
    for body in [&b"one"[..], &b"two two"[..]] {
        store
            .put(
                &k,
                Bytes::copy_from_slice(body),
                PutMode::Overwrite,
                &cancel,
            )
            .await
            .expect("overwrite: put");
        let got = store.get(&k, None, &cancel).await.expect("overwrite: get");
        assert_eq!(&got.body[..], body, "overwrite: content");
    }
}

/// Eight writers racing to create one key: exactly one wins (when `atomic`), the rest see
/// `AlreadyExists`, and the stored object is a winner's, whole.
pub async fn concurrent_creates_have_one_winner(store: &Store, base: &str, atomic: bool) {
    let store = Arc::new(store.clone());
    for round in 0..3 {
        let k = key(base, &format!("race/{round}"));
        let mut tasks = Vec::new();
        for writer in 0..8u8 {
            let store = Arc::clone(&store);
            let k = k.clone();
            tasks.push(tokio::spawn(async move {
                let body = Bytes::from(vec![writer; 64 * 1024]);
                let r = store
                    .put(&k, body, PutMode::Create, &CancellationToken::new())
                    .await;
                (writer, r)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (writer, r) = task.await.expect("race: task");
            match r {
                Ok(()) => winners.push(writer),
                Err(e) => assert!(e.is_already_exists(), "race: loser got {e:?}"),
            }
        }
        check_winners(&format!("race round {round}"), &winners, atomic);
        let got = store
            .get(&k, None, &CancellationToken::new())
            .await
            .expect("race: get");
        assert_eq!(got.body.len(), 64 * 1024, "race: size");
        assert!(
            winners.iter().any(|&w| got.body.iter().all(|&b| b == w)),
            "race: stored object is not a winner's, whole"
        );
    }
}

/// Ranged reads return the slice asked for, clamped at the end of the object; a range that
/// starts past the end is an error.
pub async fn ranges(store: &Store, base: &str) {
    let cancel = CancellationToken::new();
    let k = key(base, "range/obj");
    let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    store
        .put(&k, Bytes::from(body.clone()), PutMode::Create, &cancel)
        .await
        .expect("range: put");
    let cases: &[(u64, u64, usize, usize)] = &[
        (0, 24, 0, 24),
        (100, 200, 100, 200),
        (9_990, 20_000, 9_990, 10_000),
        (5, 5, 5, 5),
    ];
    for &(start, end, lo, hi) in cases {
        let got = store
            .get(&k, Some(start..end), &cancel)
            .await
            .unwrap_or_else(|e| panic!("range {start}..{end}: {e:?}"));
        assert_eq!(&got.body[..], &body[lo..hi], "range {start}..{end}");
        assert_eq!(got.object_size, 10_000, "range {start}..{end}: object size");
    }
    let err = store
        .get(&k, Some(10_000..10_010), &cancel)
        .await
        .expect_err("range past the end must fail");
    assert!(!err.is_not_found(), "range past the end is not 'not found'");
}

/// Listing by a text prefix returns exactly the matching keys, sorted, with sizes.
pub async fn list_by_prefix(store: &Store, base: &str) {
    let cancel = CancellationToken::new();
    let names = [
        "list/wal/0000000100000001/b",
        "list/wal/0000000100000001/a",
        "list/wal/0000000100000002/c",
        "list/wal/00000002.history",
        "list/other/d",
    ];
    for (i, name) in names.iter().enumerate() {
        store
            .put(
                &key(base, name),
                Bytes::from(vec![0u8; i + 1]),
                PutMode::Create,
                &cancel,
            )
            .await
            .expect("list: put");
    }
    let listed = |prefix: String| {
        let cancel = cancel.clone();
        async move {
            store
                .list(&prefix, &cancel)
                .await
                .expect("list")
                .into_iter()
                .map(|m| (m.key.as_str().to_owned(), m.size))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(format!("{base}/list/wal/00000001")).await,
        vec![
            (format!("{base}/list/wal/0000000100000001/a"), 2),
            (format!("{base}/list/wal/0000000100000001/b"), 1),
            (format!("{base}/list/wal/0000000100000002/c"), 3),
        ],
        "list: partial component prefix"
    );
    assert_eq!(
        listed(format!("{base}/list/wal/0000000100000002/")).await,
        vec![(format!("{base}/list/wal/0000000100000002/c"), 3)],
        "list: directory prefix"
    );
    assert_eq!(
        listed(format!("{base}/list/")).await.len(),
        5,
        "list: everything under the base"
    );
    assert!(
        listed(format!("{base}/list/nothing")).await.is_empty(),
        "list: no match"
    );
}

/// Deleting removes the object; deleting again succeeds.
pub async fn delete_is_idempotent(store: &Store, base: &str) {
    let cancel = CancellationToken::new();
    let k = key(base, "delete/me");
    store
        .put(&k, Bytes::from_static(b"x"), PutMode::Create, &cancel)
        .await
        .expect("delete: put");
    store.delete(&k, &cancel).await.expect("delete: first");
    let err = store.get(&k, None, &cancel).await.expect_err("delete: get");
    assert!(err.is_not_found(), "delete: get gave {err:?}");
    store.delete(&k, &cancel).await.expect("delete: second");
    store
        .put(&k, Bytes::from_static(b"y"), PutMode::Create, &cancel)
        .await
        .expect("delete: create again after delete");
}

/// An empty object and a 16 MiB + 1 byte object both round-trip.
pub async fn empty_and_large_objects(store: &Store, base: &str) {
    let cancel = CancellationToken::new();
    let empty = key(base, "size/empty");
    store
        .put(&empty, Bytes::new(), PutMode::Create, &cancel)
        .await
        .expect("empty: put");
    let got = store.get(&empty, None, &cancel).await.expect("empty: get");
    assert!(got.body.is_empty(), "empty: body");
    assert_eq!(
        store.head(&empty, &cancel).await.expect("empty: head").size,
        0
    );

    let large = key(base, "size/large");
    let body: Vec<u8> = (0..(16 << 20) + 1)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    store
        .put(&large, Bytes::from(body.clone()), PutMode::Create, &cancel)
        .await
        .expect("large: put");
    let got = store.get(&large, None, &cancel).await.expect("large: get");
    assert!(got.body[..] == body[..], "large: body differs");
}

/// Keys with spaces, `%`, `~`, `+` and non-ASCII characters round-trip and list.
pub async fn unusual_key_characters(store: &Store, base: &str) {
    let cancel = CancellationToken::new();
    let k = key(base, "chars/a b%20c~d+é");
    store
        .put(&k, Bytes::from_static(b"odd"), PutMode::Create, &cancel)
        .await
        .expect("chars: put");
    let got = store.get(&k, None, &cancel).await.expect("chars: get");
    assert_eq!(&got.body[..], b"odd");
    let listed = store
        .list(&format!("{base}/chars/"), &cancel)
        .await
        .expect("chars: list");
    assert_eq!(listed.len(), 1, "chars: list");
    assert_eq!(listed[0].key, k, "chars: listed key");
}
