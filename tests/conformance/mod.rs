//! The behaviour every cairn backend must have, one function per behaviour.
//!
//! Each backend's test file calls [`conformance_tests!`] with an expression that builds
//! the backend; every function works below a fresh random prefix, so runs and tests
//! never collide, also on a shared bucket.
#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::Bytes;
use cairn::backend::{
    BackendExt, DynBackend, ErrorKind, GetRange, PutOptions, PutPayload, ReadWants,
};
use cairn::record::RecordInfo;
use cairn::{Key, PutMode, ResultStore, Serializer};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

/// A prefix no other test or run uses.
pub fn unique_prefix(test: &str) -> String {
    format!("conf-{test}-{:016x}", rand::random::<u64>())
}

fn key(s: impl Into<String>) -> Key {
    Key::parse(s.into()).unwrap()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sample {
    name: String,
    values: Vec<f64>,
    tags: BTreeMap<String, u32>,
    flag: Option<bool>,
}

fn sample() -> Sample {
    Sample {
        name: "résumé ✓".into(),
        values: vec![1.5, -0.0, 1e300],
        tags: BTreeMap::from([("a".into(), 1), ("b".into(), 2)]),
        flag: None,
    }
}

/// Write, head, read, delete, read again.
pub async fn put_get_head_delete(b: &DynBackend) {
    let p = unique_prefix("basic");
    let k = key(format!("{p}/dir/object.bin"));
    let put = b.put(&k, "hello world".into()).await.unwrap();
    let head = b.head(&k).await.unwrap();
    assert_eq!(head.size, 11);
    assert_eq!(head.key, k);
    assert!(head.version.is_some(), "{} gives no version", b.describe());
    if put.version.is_some() {
        assert_eq!(put.version, head.version);
    }
    assert_eq!(&b.get(&k).await.unwrap()[..], b"hello world");
    assert!(b.exists(&k).await.unwrap());

    b.delete(&k).await.unwrap();
    let err = b.head(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = b.get(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(k.as_str()), "{err}");
    assert!(err.to_string().contains(&b.describe()), "{err}");
    assert!(!b.exists(&k).await.unwrap());
    // Deleting what is not there is not an error.
    b.delete(&k).await.unwrap();
}

/// A write whose caller keeps no version is the same write, in every mode and by
/// either write path: the object is there, whole; what version it gives (a store that
/// learns it for free still may) is the object's.
pub async fn a_write_that_skips_its_version_is_the_same_write(b: &DynBackend) {
    let p = unique_prefix("skip-version");
    for (i, mode) in [PutMode::Create, PutMode::Overwrite]
        .into_iter()
        .enumerate()
    {
        let k = key(format!("{p}/{i}"));
        let opts = PutOptions {
            mode,
            skip_version: true,
            ..PutOptions::default()
        };
        let put = b
            .put_opts(&k, "skipped".into(), opts.clone())
            .await
            .unwrap();
        let head = b.head(&k).await.unwrap();
        assert_eq!(&b.get(&k).await.unwrap()[..], b"skipped");
        if put.version.is_some() {
            assert_eq!(put.version, head.version);
        }
        let framed = key(format!("{p}/framed-{i}"));
        let body = Bytes::from(vec![9u8; 100_000]);
        let make_head: cairn::backend::HeadMaker = Box::new(|| Bytes::from_static(b"head"));
        let put = b
            .put_framed(&framed, 4, make_head, body.clone(), opts)
            .await
            .unwrap();
        let back = b.get(&framed).await.unwrap();
        assert!(back[..4] == b"head"[..] && back[4..] == body[..]);
        if put.version.is_some() {
            assert_eq!(put.version, b.head(&framed).await.unwrap().version);
        }
    }
}

/// Overwrite replaces the whole object; an empty object is an object.
pub async fn overwrite_replaces_and_empty_objects_exist(b: &DynBackend) {
    let p = unique_prefix("overwrite");
    let k = key(format!("{p}/x"));
    b.put(&k, "a much longer first value".into()).await.unwrap();
    b.put(&k, "short".into()).await.unwrap();
    assert_eq!(&b.get(&k).await.unwrap()[..], b"short");
    let e = key(format!("{p}/empty"));
    b.put(&e, PutPayload::default()).await.unwrap();
    assert!(b.exists(&e).await.unwrap());
    assert_eq!(b.head(&e).await.unwrap().size, 0);
    assert!(b.get(&e).await.unwrap().is_empty());
}

/// A payload of several chunks is stored as their concatenation.
pub async fn chunked_payloads_are_concatenated(b: &DynBackend) {
    let p = unique_prefix("chunks");
    let k = key(format!("{p}/c"));
    let payload = PutPayload::from_chunks([
        Bytes::from_static(b"head|"),
        Bytes::from(vec![b'x'; 1000]),
        Bytes::from_static(b"|tail"),
    ]);
    b.put(&k, payload).await.unwrap();
    let got = b.get(&k).await.unwrap();
    assert_eq!(got.len(), 1010);
    assert!(got.starts_with(b"head|x") && got.ends_with(b"x|tail"));
}

/// Every serializer round-trips through the store, as a target and as a record.
pub async fn every_serializer_round_trips(b: &DynBackend) {
    let p = unique_prefix("serializers");
    let store = ResultStore::from_backend(b.clone());
    for ext in ["json", "msgpack", "json.zst", "msgpack.zst"] {
        let loc = format!("{p}/sample.{ext}");
        store.write_at(&loc, &sample()).await.unwrap();
        assert_eq!(store.read::<Sample>(&loc).await.unwrap(), sample(), "{ext}");
    }
    let text = "line one\nline two ✓\n".to_string();
    for ext in ["txt", "csv", "txt.zst"] {
        let loc = format!("{p}/text.{ext}");
        store.write_at(&loc, &text).await.unwrap();
        assert_eq!(store.read::<String>(&loc).await.unwrap(), text, "{ext}");
    }
    let blob = Bytes::from((0..=255u8).cycle().take(70_000).collect::<Vec<u8>>());
    store
        .write_at(&format!("{p}/blob.bin"), &blob)
        .await
        .unwrap();
    assert_eq!(
        store.read::<Bytes>(&format!("{p}/blob.bin")).await.unwrap(),
        blob
    );
    assert_eq!(
        store
            .read::<Vec<u8>>(&format!("{p}/blob.bin"))
            .await
            .unwrap(),
        blob.to_vec()
    );

    for serializer in [
        Serializer::JSON,
        Serializer::MSGPACK,
        Serializer::JSON.zstd(3),
        Serializer::MSGPACK.zstd(19),
    ] {
        let store = store.clone().with_serializer(serializer);
        let loc = format!("{p}/records/{}", serializer.name());
        store
            .write_record(&loc, &sample(), RecordInfo::default(), PutMode::Create)
            .await
            .unwrap();
        let record = store.read_record::<Sample>(&loc).await.unwrap();
        assert_eq!(record.value, sample());
        assert_eq!(record.header.serializer, serializer.name());
    }
    let store = store.with_serializer(Serializer::BYTES);
    let loc = format!("{p}/records/bytes");
    store
        .write_record(&loc, &blob, RecordInfo::default(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(store.read_record::<Bytes>(&loc).await.unwrap().value, blob);
}

/// A target holds exactly the serialized bytes, nothing else.
pub async fn targets_are_plain_bytes(b: &DynBackend) {
    let p = unique_prefix("plain");
    let store = ResultStore::from_backend(b.clone());
    store
        .write_at(&format!("{p}/t.json"), &vec![1, 2, 3])
        .await
        .unwrap();
    assert_eq!(
        &b.get(&key(format!("{p}/t.json"))).await.unwrap()[..],
        b"[1,2,3]"
    );
    store
        .write_at(&format!("{p}/t.txt"), &"plain".to_string())
        .await
        .unwrap();
    assert_eq!(
        &b.get(&key(format!("{p}/t.txt"))).await.unwrap()[..],
        b"plain"
    );
}

/// A target that another tool wrote is read like one cairn wrote; one that does not
/// decode into the asked type is a clear error naming it.
pub async fn foreign_targets_are_read_and_checked(b: &DynBackend) {
    let p = unique_prefix("foreign");
    let store = ResultStore::from_backend(b.clone());
    let loc = format!("{p}/made-by-hand.json");
    b.put(&key(&loc), r#"{"a": 1}"#.into()).await.unwrap();
    assert!(store.exists(&loc).await.unwrap());
    let v: BTreeMap<String, i32> = store.read(&loc).await.unwrap();
    assert_eq!(v["a"], 1);
    let err = store.read::<Vec<String>>(&loc).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Serialization, "{err}");
    assert!(err.to_string().contains(&loc), "{err}");
}

/// `Create` succeeds once; later creates fail and change nothing.
pub async fn create_conflicts(b: &DynBackend) {
    let p = unique_prefix("create");
    let k = key(format!("{p}/once"));
    b.put_mode(&k, "first".into(), PutMode::Create)
        .await
        .unwrap();
    let err = b
        .put_mode(&k, "second".into(), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(err.to_string().contains(k.as_str()), "{err}");
    assert_eq!(&b.get(&k).await.unwrap()[..], b"first");
}

/// Of many concurrent `Create` writers to one key, exactly one wins, and the object
/// holds the winner's bytes whole.
pub async fn concurrent_creates_have_one_winner(b: &DynBackend) {
    let p = unique_prefix("race");
    let k = key(format!("{p}/contested"));
    let writers = 12;
    let results = futures::future::join_all((0..writers).map(|i| {
        let b = b.clone();
        let k = k.clone();
        async move {
            let body = Bytes::from(vec![i as u8; 64 * 1024 + i]);
            (i, b.put_mode(&k, body.into(), PutMode::Create).await)
        }
    }))
    .await;
    let winners: Vec<usize> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    for (_, r) in &results {
        if let Err(e) = r {
            assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        }
    }
    let w = winners[0];
    let stored = b.get(&k).await.unwrap();
    assert_eq!(stored.len(), 64 * 1024 + w);
    assert!(stored.iter().all(|&x| x == w as u8));
}

/// The same race with values above the multipart/resumable threshold: still exactly
/// one winner, whole.
pub async fn concurrent_large_creates_have_one_winner(b: &DynBackend) {
    let size = b
        .capabilities()
        .multipart_threshold
        .map_or(8 << 20, |t| t as usize + (1 << 20));
    let p = unique_prefix("large-race");
    let k = key(format!("{p}/contested"));
    let results = futures::future::join_all((0..5u8).map(|i| {
        let b = b.clone();
        let k = k.clone();
        async move {
            let body = Bytes::from(vec![i; size]);
            (i, b.put_mode(&k, body.into(), PutMode::Create).await)
        }
    }))
    .await;
    let winners: Vec<u8> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = b.get(&k).await.unwrap();
    assert_eq!(stored.len(), size);
    assert!(stored.iter().all(|&x| x == winners[0]));
}

/// `IfMatch` with the current version writes; with a stale one it fails and changes
/// nothing.
pub async fn if_match_current_and_stale(b: &DynBackend) {
    if !b.capabilities().if_match {
        let p = unique_prefix("ifmatch");
        let err = b
            .put_mode(
                &key(format!("{p}/k")),
                "x".into(),
                PutMode::IfMatch("v".into()),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        return;
    }
    let p = unique_prefix("ifmatch");
    let k = key(format!("{p}/k"));
    b.put(&k, "v1".into()).await.unwrap();
    let v1 = b.head(&k).await.unwrap().version.unwrap();
    b.put_mode(&k, "v2".into(), PutMode::IfMatch(v1.clone()))
        .await
        .unwrap();
    let v2 = b.head(&k).await.unwrap().version.unwrap();
    assert_ne!(v1, v2);
    let err = b
        .put_mode(&k, "v3".into(), PutMode::IfMatch(v1.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    assert_eq!(&b.get(&k).await.unwrap()[..], b"v2");
    // A version of an object that is gone does not match anything.
    let missing = key(format!("{p}/missing"));
    let err = b
        .put_mode(&missing, "x".into(), PutMode::IfMatch(v2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::PreconditionFailed | ErrorKind::NotFound
        ),
        "{err}"
    );
    assert!(!b.exists(&missing).await.unwrap());
}

/// The lease probe runs a lease's life on the store: where the backend declares
/// `Create` and `IfMatch`, every precondition a lease rests on must hold; a store that
/// lacks them declares the gap, and leases there are refused with a clear error.
pub async fn lease_preconditions_hold(b: &DynBackend) {
    let store = ResultStore::new(b.clone());
    let caps = b.capabilities();
    if caps.create && caps.if_match {
        let report = cairn::cache::probe_leases(&store).await.unwrap();
        assert!(report.is_sound(), "{:?}", report.gaps());
        assert!(report.create_is_exclusive && report.stale_if_match_is_refused);
        assert_eq!(report.store, store.url());
        // The scratch object is gone.
        let left = b.list_all("leases/v1/.probe/").await.unwrap();
        assert!(left.is_empty(), "{left:?}");
    } else {
        assert!(
            !caps.gaps.is_empty(),
            "a missing precondition is a declared gap"
        );
        let err = cairn::cache::Reservation::new(
            &store,
            "leases/v1/default/ab/abc",
            cairn::cache::LeaseConfig::default(),
            cairn::cache::LeaseHolder::new("t", "run"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("lease"), "{err}");
    }
}

/// Byte ranges: bounded, open-ended, clamped at the end; a range past the end is an
/// error, never a panic.
pub async fn ranged_reads(b: &DynBackend) {
    let p = unique_prefix("range");
    let k = key(format!("{p}/digits"));
    b.put(&k, "0123456789".into()).await.unwrap();
    assert_eq!(&b.get_range(&k, 2..5).await.unwrap()[..], b"234");
    assert_eq!(&b.get_range(&k, 7..100).await.unwrap()[..], b"789");
    let from = b.get_opts(&k, Some(GetRange::From(6))).await.unwrap();
    assert_eq!(from.range, 6..10);
    assert_eq!(&from.bytes().await.unwrap()[..], b"6789");
    assert!(b.get_range(&k, 20..30).await.is_err());
}

/// Reads stream the object in order.
pub async fn streamed_reads_are_complete(b: &DynBackend) {
    let p = unique_prefix("stream");
    let k = key(format!("{p}/s"));
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    b.put(&k, data.clone().into()).await.unwrap();
    let got = b.get_opts(&k, None).await.unwrap();
    assert_eq!(got.meta.size, data.len() as u64);
    let chunks: Vec<Bytes> = got.body.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), data);
}

/// Listing by prefix: plain string prefixes, nested keys, no foreign keys.
pub async fn listing_with_prefixes(b: &DynBackend) {
    let p = unique_prefix("list");
    for k in ["a/1", "a/2", "a/deep/3", "ab/4", "b/5"] {
        b.put(&key(format!("{p}/{k}")), "x".into()).await.unwrap();
    }
    let names = |prefix: String| {
        let b = b.clone();
        let p = p.clone();
        async move {
            let mut v: Vec<String> = b
                .list_all(&prefix)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.key.as_str()[p.len() + 1..].to_string())
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(
        names(format!("{p}/a/")).await,
        vec!["a/1", "a/2", "a/deep/3"]
    );
    assert_eq!(
        names(format!("{p}/a")).await,
        vec!["a/1", "a/2", "a/deep/3", "ab/4"]
    );
    assert_eq!(names(format!("{p}/")).await.len(), 5);
    assert!(names(format!("{p}/zzz")).await.is_empty());
    let listed = b.list_all(&format!("{p}/b/")).await.unwrap();
    assert_eq!(listed[0].size, 1);
}

/// Listings page through more keys than one request returns.
pub async fn listing_paginates(b: &DynBackend) {
    let p = unique_prefix("pages");
    let n = b.capabilities().list_page_size + 101;
    futures::stream::iter(0..n)
        .map(|i| {
            let b = b.clone();
            let k = key(format!("{p}/k{i:05}"));
            async move { b.put(&k, Bytes::from_static(b".").into()).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let mut keys: Vec<String> = b
        .list(&format!("{p}/"))
        .map_ok(|m| m.key.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(keys.len(), n);
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "a listing returned duplicates");
}

/// Deleted objects leave listings; other objects stay.
pub async fn deletes_remove_from_listings(b: &DynBackend) {
    let p = unique_prefix("delete");
    let (k1, k2) = (key(format!("{p}/one")), key(format!("{p}/two")));
    b.put(&k1, "1".into()).await.unwrap();
    b.put(&k2, "2".into()).await.unwrap();
    b.delete(&k1).await.unwrap();
    let left: Vec<_> = b
        .list_all(&format!("{p}/"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(left, vec![k2]);
}

/// Values above the multipart/resumable threshold round-trip, and `Create` still
/// refuses to replace an existing one.
pub async fn large_values(b: &DynBackend) {
    let caps = b.capabilities();
    let size = caps
        .multipart_threshold
        .map_or(20 << 20, |t| t as usize + (3 << 20));
    let p = unique_prefix("large");
    let k = key(format!("{p}/big.bin"));
    let data = Bytes::from(
        (0..size)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
            .collect::<Vec<u8>>(),
    );
    b.put_mode(&k, data.clone().into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(b.head(&k).await.unwrap().size, size as u64);
    let back = b.get(&k).await.unwrap();
    assert!(back == data, "large value differs after a round trip");
    assert_eq!(
        b.get_range(&k, (size as u64 - 10)..size as u64)
            .await
            .unwrap(),
        data.slice(size - 10..)
    );
    // Whether the store honours the precondition on multipart uploads or the backend
    // falls back to a single request (see Capabilities::conditional_large_writes),
    // the guarantee holds.
    let other = Bytes::from(vec![0u8; size]);
    let err = b
        .put_mode(&k, other.into(), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(b.get(&k).await.unwrap() == data);
}

/// An inspected read hands over every byte once, in order, and returns the object
/// whole; a large record corrupted near its end is still reported corrupt (its digest
/// is computed from the inspected pieces).
pub async fn inspected_reads_cover_every_byte_once(b: &DynBackend) {
    use std::sync::{Arc, Mutex};
    // An inspector that keeps every piece it is handed, and what it kept.
    let recorder = || {
        let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = seen.clone();
        let inspect: cairn::backend::Inspector =
            Box::new(move |piece: &[u8]| sink.lock().unwrap().extend_from_slice(piece));
        (seen, inspect)
    };
    let p = unique_prefix("inspected");
    for size in [0usize, 5, (20 << 20) + 12_345] {
        let k = key(format!("{p}/obj-{size}"));
        let data = Bytes::from(
            (0..size)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
                .collect::<Vec<u8>>(),
        );
        b.put(&k, data.clone().into()).await.unwrap();
        let (seen, inspect) = recorder();
        let (meta, back) = b.get_bytes_inspected(&k, inspect).await.unwrap();
        assert_eq!(meta.size, size as u64);
        assert!(
            back == data,
            "an inspected read returned other bytes ({size})"
        );
        assert!(
            *seen.lock().unwrap() == data[..],
            "the pieces inspected are not the object ({size} bytes)"
        );
        // The read that keeps only the version, when asked for: the same bytes, the
        // version a HEAD gives (or none), and, when it made an inspector (at most
        // one), every byte handed to it once, in order.
        for wants in all_read_wants() {
            let with_version = wants.version;
            let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
            let made = std::sync::atomic::AtomicUsize::new(0);
            let make = || -> cairn::backend::Inspector {
                made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let sink = seen.clone();
                Box::new(move |piece: &[u8]| sink.lock().unwrap().extend_from_slice(piece))
            };
            let (version, back) = b.get_inspected(&k, &make, wants).await.unwrap();
            if with_version {
                assert_eq!(version, meta.version);
                assert_eq!(version, b.head(&k).await.unwrap().version);
            } else {
                assert_eq!(version, None);
            }
            assert!(
                back == data,
                "a read keeping the version returned other bytes"
            );
            let made = made.into_inner();
            assert!(made <= 1, "{made} inspectors made for one read");
            let seen = seen.lock().unwrap();
            if made == 1 {
                assert!(
                    *seen == data[..],
                    "the pieces of a read keeping the version are not the object ({size} bytes)"
                );
            } else {
                assert!(seen.is_empty(), "bytes inspected without an inspector");
            }
        }
        // A read answered on the calling thread, where the backend can: the same bytes
        // and version.
        for wants in all_read_wants() {
            let with_version = wants.version;
            if let Some(read) = b.get_now(&k, wants) {
                let (version, back) = read.unwrap();
                assert!(back == data, "a read answered at once returned other bytes");
                let want = if with_version {
                    meta.version.clone()
                } else {
                    None
                };
                assert_eq!(version, want, "{size} bytes");
            }
        }
    }
    let missing = key(format!("{p}/absent"));
    for wants in all_read_wants() {
        if let Some(read) = b.get_now(&missing, wants) {
            let err = read.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        }
    }
    let make_none = || -> cairn::backend::Inspector { Box::new(|_: &[u8]| {}) };
    for wants in all_read_wants() {
        let err = b
            .get_inspected(&missing, &make_none, wants)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }
    let store = ResultStore::from_backend(b.clone());
    let loc = format!("{p}/big-record");
    let value = Bytes::from(vec![7u8; 24 << 20]);
    store
        .write_record(&loc, &value, RecordInfo::default(), PutMode::Create)
        .await
        .unwrap();
    assert!(store.read_record::<Bytes>(&loc).await.unwrap().value == value);
    let mut bad = b.get(&key(&loc)).await.unwrap().to_vec();
    let near_end = bad.len() - 100;
    bad[near_end] ^= 0x01;
    b.put(&key(&loc), bad.into()).await.unwrap();
    let err = store.read_record::<Bytes>(&loc).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

/// A record with a flipped byte or cut short is reported corrupt, never returned.
pub async fn corruption_is_detected(b: &DynBackend) {
    let p = unique_prefix("corrupt");
    let store = ResultStore::from_backend(b.clone());
    let loc = format!("{p}/rec");
    store
        .write_record(&loc, &sample(), RecordInfo::default(), PutMode::Create)
        .await
        .unwrap();
    let good = b.get(&key(&loc)).await.unwrap();
    for (what, bad) in [
        ("flipped payload byte", {
            let mut v = good.to_vec();
            let last = v.len() - 3;
            v[last] ^= 0x20;
            v
        }),
        ("flipped header byte", {
            let mut v = good.to_vec();
            v[20] ^= 0x01;
            v
        }),
        ("truncated", good[..good.len() - 5].to_vec()),
        ("empty", Vec::new()),
    ] {
        b.put(&key(&loc), bad.into()).await.unwrap();
        let err = store.read_record::<Sample>(&loc).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}: {err}");
        assert!(err.to_string().contains(&loc), "{what}: {err}");
    }
}

/// User metadata is stored where the backend says it can be, and refused (not
/// dropped) where it cannot.
pub async fn user_metadata(b: &DynBackend) {
    let p = unique_prefix("meta");
    let k = key(format!("{p}/m"));
    let mut opts = PutOptions::default();
    opts.metadata.insert("task".into(), "add_one".into());
    opts.metadata.insert("run".into(), "r-1".into());
    let result = b.put_opts(&k, "x".into(), opts.clone()).await;
    if b.capabilities().user_metadata {
        result.unwrap();
        assert_eq!(b.head(&k).await.unwrap().metadata, opts.metadata);
    } else {
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Unsupported);
        assert!(!b.exists(&k).await.unwrap());
    }
}

/// Locations that would leave the store are refused before any I/O.
pub async fn escaping_locations_are_refused(b: &DynBackend) {
    let store = ResultStore::from_backend(b.clone());
    for bad in ["../outside.json", "/etc/passwd", "a//b", "a/./b"] {
        let err = store.write_at(bad, &1).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "{bad}: {err}");
        assert!(store.read::<i32>(bad).await.is_err());
    }
}

/// Every combination of what a read can ask for besides the bytes.
fn all_read_wants() -> [ReadWants; 4] {
    [(true, true), (true, false), (false, true), (false, false)].map(|(version, bucket_check)| {
        ReadWants {
            version,
            bucket_check,
        }
    })
}

/// A backend pointing at a bucket that does not exist says so on every operation; a
/// read that spares the bucket check may call it a missing object instead, nothing
/// else.
pub async fn missing_bucket_is_a_clear_error(b: &DynBackend, bucket: &str) {
    let k = key("some/key");
    let put = b.put(&k, "x".into()).await.unwrap_err();
    assert_eq!(put.kind(), ErrorKind::BucketNotFound, "{put}");
    assert!(put.to_string().contains(bucket), "{put}");
    let get = b.get(&k).await.unwrap_err();
    assert_eq!(get.kind(), ErrorKind::BucketNotFound, "{get}");
    let make_none = || -> cairn::backend::Inspector { Box::new(|_: &[u8]| {}) };
    for wants in all_read_wants() {
        let inspected = b.get_inspected(&k, &make_none, wants).await.unwrap_err();
        let now = b.get_now(&k, wants).map(|read| read.unwrap_err());
        for err in std::iter::once(inspected).chain(now) {
            if wants.bucket_check {
                assert_eq!(err.kind(), ErrorKind::BucketNotFound, "{wants:?}: {err}");
            } else {
                assert!(
                    matches!(err.kind(), ErrorKind::BucketNotFound | ErrorKind::NotFound),
                    "{wants:?}: {err}"
                );
            }
        }
    }
    let list = b.list_all("").await.unwrap_err();
    assert_eq!(list.kind(), ErrorKind::BucketNotFound, "{list}");
}

/// Generates one `#[tokio::test]` per conformance behaviour for the backend that
/// `$make` (an async expression returning `Option<DynBackend>`; `None` skips) builds.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            put_get_head_delete,
            a_write_that_skips_its_version_is_the_same_write,
            overwrite_replaces_and_empty_objects_exist,
            chunked_payloads_are_concatenated,
            every_serializer_round_trips,
            targets_are_plain_bytes,
            foreign_targets_are_read_and_checked,
            create_conflicts,
            concurrent_creates_have_one_winner,
            concurrent_large_creates_have_one_winner,
            if_match_current_and_stale,
            lease_preconditions_hold,
            ranged_reads,
            streamed_reads_are_complete,
            listing_with_prefixes,
            listing_paginates,
            deletes_remove_from_listings,
            large_values,
            corruption_is_detected,
            inspected_reads_cover_every_byte_once,
            user_metadata,
            escaping_locations_are_refused,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Some(backend) = $make.await {
                    conformance::$name(&backend).await;
                }
            }
        )*
    };
}
