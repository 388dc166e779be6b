//! cairn's S3 and GCS backends, and cached tasks on them, with a fault-injecting proxy
//! between them and LocalStack / fake-gcs-server.
//!
//! Counts are modest by default; `CAIRN_FAULTS_FULL=1` (or `./localstack/bench
//! faults`) runs the full ones (500 calls over 100 inputs per fault class, and 2,000
//! calls for the truncation and mixed profiles). Each matrix test prints one
//! `FIGURES` line.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::backend::{Backend, BackendExt, ErrorKind, Key, PutMode, S3Backend};
use cairn::cache::INPUTS;
use cairn::{ResultStore, State, Task};
use cairn_fault_tests::{Fault, FaultProxy, Flavor, Profile};
use common::{
    direct, open_upload_ids, open_uploads, payload, s3_bucket, s3_client, through_proxy,
    through_proxy_with, unique, Kind,
};
use futures::{StreamExt, TryStreamExt};

fn full() -> bool {
    std::env::var("CAIRN_FAULTS_FULL").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------
// Stalls and bad configurations: a bound, never a hang.

fn stalled_store_fails_within_the_bound(kind: Kind) {
    rt().block_on(async {
        let Some((proxy, backend, _)) = through_proxy_with(kind, 1, 2).await else {
            return;
        };
        proxy.set_script(|_| Some(Fault::Stall(Duration::from_secs(120))));
        let key = Key::parse("stalled/object").unwrap();
        for op in ["head", "get", "put"] {
            let started = Instant::now();
            let err = match op {
                "head" => backend.head(&key).await.map(|_| ()),
                "get" => backend.get(&key).await.map(|_| ()),
                _ => backend
                    .put_mode(&key, "v".into(), PutMode::Create)
                    .await
                    .map(|_| ()),
            }
            .unwrap_err();
            let took = started.elapsed();
            println!(
                "FIGURES stall {kind:?} {op}: {err:?} kind after {took:.1?}",
                err = err.kind()
            );
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{op}: {err}");
            let msg = err.to_string();
            assert!(
                msg.contains(&backend.describe()) && msg.contains("stalled/object"),
                "{op}: {msg}"
            );
            // 2 attempts of a 2 s read limit, with backoff; the operation bound is 20 s.
            assert!(took < Duration::from_secs(15), "{op} took {took:?}");
        }
    });
}

#[test]
fn a_stalled_s3_endpoint_is_unavailable_within_the_bound() {
    stalled_store_fails_within_the_bound(Kind::S3);
}

#[test]
fn a_stalled_gcs_endpoint_is_unavailable_within_the_bound() {
    stalled_store_fails_within_the_bound(Kind::Gcs);
}

#[test]
fn a_cached_task_on_a_stalled_store_returns_with_max_attempts_1() {
    rt().block_on(async {
        let Some(endpoint) = common::emulator("AWS_ENDPOINT_URL") else {
            return;
        };
        let proxy = FaultProxy::start(&endpoint, Flavor::S3, 2).await;
        proxy.set_script(|_| Some(Fault::Stall(Duration::from_secs(300))));
        // Options in the store URL, as a user would write them.
        let url = format!(
            "s3://cairn-test/{}?endpoint={}&max_attempts=1&read_timeout=1s&operation_timeout=5s",
            unique("stall"),
            proxy.url()
        );
        let store = ResultStore::from_url(&url).await.unwrap();
        let task = Task::infallible("stalled", |x: u64| async move { x + 1 })
            .cache_policy(INPUTS)
            .result_storage(store)
            .memory_tier(false)
            .strict_cache(true);
        let started = Instant::now();
        let run = task.run(1).await;
        let took = started.elapsed();
        println!("FIGURES stall cached-task max_attempts=1: failed after {took:.1?}");
        assert!(run.state().is_failed(), "{:?}", run.state());
        let err = run.error().unwrap();
        assert_eq!(err.error_kind(), Some(ErrorKind::Unavailable), "{err}");
        assert!(took < Duration::from_secs(10), "{took:?}");

        // Not strict (the default): the stalled cache is a logged miss, the value is
        // computed and returned, also within the bound.
        let store = ResultStore::from_url(&url).await.unwrap();
        let task = Task::infallible("stalled", |x: u64| async move { x + 1 })
            .cache_policy(INPUTS)
            .result_storage(store)
            .memory_tier(false);
        let started = Instant::now();
        let run = task.run(1).await;
        assert_eq!(run.value(), Some(&2), "{:?}", run.error());
        assert!(started.elapsed() < Duration::from_secs(20));
    });
}

#[test]
fn bad_configurations_fail_at_once_with_a_clear_error() {
    rt().block_on(async {
        let Some(endpoint) = common::emulator("AWS_ENDPOINT_URL") else {
            return;
        };
        let key = Key::parse("k").unwrap();
        let mut report = Vec::new();

        // A refused connection: a port that nothing listens on.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let s3 = S3Backend::builder("cairn-test")
            .endpoint(format!("http://127.0.0.1:{closed}"))
            .build()
            .await
            .unwrap();
        let t = Instant::now();
        let err = s3.get(&key).await.unwrap_err();
        report.push(("s3 refused connection", t.elapsed(), err.to_string()));
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("connection refused"), "{err}");

        let gcs = cairn::backend::GcsBackend::builder("cairntest")
            .endpoint(format!("http://127.0.0.1:{closed}"))
            .emulator(true)
            .build()
            .await
            .unwrap();
        let t = Instant::now();
        let err = gcs.get(&key).await.unwrap_err();
        report.push(("gcs refused connection", t.elapsed(), err.to_string()));
        assert!(err.to_string().contains("connection refused"), "{err}");

        // A missing bucket.
        let s3 = S3Backend::builder(unique("no-such-bucket"))
            .endpoint(&endpoint)
            .build()
            .await
            .unwrap();
        let t = Instant::now();
        let err = s3.get(&key).await.unwrap_err();
        report.push(("s3 missing bucket", t.elapsed(), err.to_string()));
        assert_eq!(err.kind(), ErrorKind::BucketNotFound, "{err}");
        if let Some(gcs_host) = common::emulator("STORAGE_EMULATOR_HOST") {
            let gcs = cairn::backend::GcsBackend::builder(unique("nobucket"))
                .endpoint(if gcs_host.contains("://") {
                    gcs_host
                } else {
                    format!("http://{gcs_host}")
                })
                .emulator(true)
                .build()
                .await
                .unwrap();
            let t = Instant::now();
            let err = gcs.get(&key).await.unwrap_err();
            report.push(("gcs missing bucket", t.elapsed(), err.to_string()));
            assert_eq!(err.kind(), ErrorKind::BucketNotFound, "{err}");
        }

        // Rejected credentials (the emulators accept any: the proxy answers as S3
        // does for an unknown access key).
        let proxy = FaultProxy::start(&endpoint, Flavor::S3, 3).await;
        proxy.set_script(|_| {
            Some(Fault::Status {
                code: 403,
                retry_after: None,
            })
        });
        let s3 = S3Backend::builder("cairn-test")
            .endpoint(proxy.url())
            .build()
            .await
            .unwrap();
        let t = Instant::now();
        let err = s3.get(&key).await.unwrap_err();
        report.push(("s3 rejected credentials", t.elapsed(), err.to_string()));
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        assert_eq!(proxy.requests(), 1, "no retry of a refusal");

        // A target task on a refused store says so.
        let store = ResultStore::from_url(&format!(
            "s3://cairn-test/x?endpoint=http://127.0.0.1:{closed}"
        ))
        .await
        .unwrap();
        let task = Task::infallible("report", |x: u64| async move { x })
            .result(store)
            .target("reports/{x}.json")
            .inputs(["x"]);
        let t = Instant::now();
        let run = task.run(1).await;
        let msg = run.error().unwrap().to_string();
        report.push(("target on a refused store", t.elapsed(), msg.clone()));
        assert!(msg.contains("connection refused"), "{msg}");
        assert!(!msg.contains("exists but cannot be read"), "{msg}");

        for (what, took, msg) in &report {
            println!("FIGURES time-to-fail {what}: {took:.2?} — {msg}");
            assert!(*took < Duration::from_secs(3), "{what}: {took:?}");
        }
    });
}

// ---------------------------------------------------------------------------------
// A write the store applied, whose answer was lost.

fn applied_writes_are_recognized(kind: Kind) {
    rt().block_on(async {
        let Some((proxy, backend, _)) = through_proxy(kind, 4).await else {
            return;
        };
        let key = Key::parse("applied/once").unwrap();
        let first_put = Arc::new(AtomicU64::new(0));
        let f = Arc::clone(&first_put);
        proxy.set_script(move |r| {
            let write = r.method == "PUT" || r.method == "POST";
            (write && f.fetch_add(1, Ordering::SeqCst) == 0).then_some(Fault::ResetAfter)
        });
        let put = backend
            .put_mode(&key, Bytes::from_static(b"mine").into(), PutMode::Create)
            .await
            .unwrap_or_else(|e| panic!("a Create applied by its first attempt: {e}"));
        assert_eq!(backend.get(&key).await.unwrap(), "mine");
        // A real conflict is still one.
        proxy.clear();
        let err = backend
            .put_mode(&key, Bytes::from_static(b"other").into(), PutMode::Create)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        // IfMatch, applied by an attempt whose answer was lost.
        let f = Arc::new(AtomicU64::new(0));
        let f2 = Arc::clone(&f);
        proxy.set_script(move |r| {
            let write = r.method == "PUT" || r.method == "POST";
            (write && f2.fetch_add(1, Ordering::SeqCst) == 0).then_some(Fault::ResetAfter)
        });
        let version = put.version.expect("a version");
        backend
            .put_mode(
                &key,
                Bytes::from_static(b"next").into(),
                PutMode::IfMatch(version),
            )
            .await
            .unwrap_or_else(|e| panic!("an IfMatch applied by its first attempt: {e}"));
        assert_eq!(backend.get(&key).await.unwrap(), "next");
        assert!(proxy.counts()["reset-after"] >= 2, "{:?}", proxy.counts());
    });
}

#[test]
fn s3_recognizes_a_retried_write_the_store_had_applied() {
    applied_writes_are_recognized(Kind::S3);
}

#[test]
fn gcs_recognizes_a_retried_write_the_store_had_applied() {
    applied_writes_are_recognized(Kind::Gcs);
}

/// A lost answer to CreateMultipartUpload opens an upload whose id the writer never
/// learns: the writer finds it and aborts it, and leaves another writer's upload of the
/// same key (one with parts) alone.
#[test]
fn s3_aborts_the_upload_a_lost_answer_opened() {
    rt().block_on(async {
        let Some((proxy, backend, prefix)) = through_proxy(Kind::S3, 7).await else {
            return;
        };
        let key = Key::parse("big/lost-answer").unwrap();
        let object_key = format!("{prefix}/{}", key.as_str());
        // Another writer's upload of the same key, with a part, just before.
        let client = s3_client().await;
        let other = client
            .create_multipart_upload()
            .bucket(s3_bucket())
            .key(&object_key)
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_owned();
        client
            .upload_part()
            .bucket(s3_bucket())
            .key(&object_key)
            .upload_id(&other)
            .part_number(1)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"a part"))
            .send()
            .await
            .unwrap();

        let creates = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&creates);
        proxy.set_script(move |r| {
            (opens_upload(r) && c.fetch_add(1, Ordering::SeqCst) == 0).then_some(Fault::ResetAfter)
        });
        let value = Bytes::from(payload(42, 6 * 1024 * 1024));
        backend
            .put(&key, value.clone().into())
            .await
            .unwrap_or_else(|e| panic!("a multipart write retried after a lost answer: {e}"));
        proxy.clear();
        assert_eq!(backend.get(&key).await.unwrap(), value);
        assert_eq!(proxy.counts()["reset-after"], 1, "{:?}", proxy.counts());
        assert_eq!(
            creates.load(Ordering::SeqCst),
            2,
            "the create was sent again"
        );
        assert_eq!(
            open_upload_ids(&prefix).await,
            vec![other.clone()],
            "the lost upload is aborted, the other writer's is not"
        );
        client
            .abort_multipart_upload()
            .bucket(s3_bucket())
            .key(&object_key)
            .upload_id(&other)
            .send()
            .await
            .unwrap();
    });
}

/// An upload aborted under its writer (a lifecycle rule, or another writer of the key
/// clearing what a lost answer opened) is started again once, and the write lands.
#[test]
fn s3_starts_again_an_upload_aborted_under_it() {
    rt().block_on(async {
        let Some((proxy, backend, prefix)) = through_proxy(Kind::S3, 8).await else {
            return;
        };
        let key = Key::parse("big/aborted-under-it").unwrap();
        let object_key = format!("{prefix}/{}", key.as_str());
        let aborted = Arc::new(AtomicU64::new(0));
        let creates = Arc::new(AtomicU64::new(0));
        let (a, c, k) = (
            Arc::clone(&aborted),
            Arc::clone(&creates),
            object_key.clone(),
        );
        proxy.set_script(move |r| {
            if opens_upload(r) {
                c.fetch_add(1, Ordering::SeqCst);
            }
            let part = r.method == "PUT" && r.target.contains("partNumber=");
            if part && a.fetch_add(1, Ordering::SeqCst) == 0 {
                // The first part's upload is aborted before the part reaches the store.
                let id = query_value(&r.target, "uploadId");
                let k = k.clone();
                std::thread::spawn(move || {
                    tokio::runtime::Runtime::new().unwrap().block_on(async {
                        s3_client()
                            .await
                            .abort_multipart_upload()
                            .bucket(s3_bucket())
                            .key(k)
                            .upload_id(id)
                            .send()
                            .await
                            .expect("AbortMultipartUpload")
                    })
                })
                .join()
                .unwrap();
            }
            None
        });
        let value = Bytes::from(payload(43, 6 * 1024 * 1024));
        backend
            .put(&key, value.clone().into())
            .await
            .unwrap_or_else(|e| panic!("a write whose upload was aborted under it: {e}"));
        proxy.clear();
        assert_eq!(backend.get(&key).await.unwrap(), value);
        assert_eq!(creates.load(Ordering::SeqCst), 2, "started again once");
        assert!(aborted.load(Ordering::SeqCst) >= 1);
        assert!(
            open_upload_ids(&prefix).await.is_empty(),
            "nothing left open"
        );
    });
}

/// Whether `r` is a CreateMultipartUpload (`POST <key>?uploads`).
fn opens_upload(r: &cairn_fault_tests::RequestInfo) -> bool {
    r.method == "POST" && r.target.contains("uploads") && !r.target.contains("uploadId")
}

/// The percent-decoded value of `name` in a request target's query.
fn query_value(target: &str, name: &str) -> String {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {target}"));
    let mut out = Vec::new();
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

// ---------------------------------------------------------------------------------
// The cache is an optimization; a target is the output.

#[test]
fn a_failing_cache_store_is_a_miss_or_a_warning_unless_strict() {
    rt().block_on(async {
        let Some((proxy, backend, _)) = through_proxy_with(Kind::S3, 5, 2).await else {
            return;
        };
        let store = ResultStore::from_backend(backend);
        let runs = Arc::new(AtomicU64::new(0));
        let task = |strict: bool| {
            let runs = Arc::clone(&runs);
            Task::infallible("cache_rule", move |x: u64| {
                let runs = Arc::clone(&runs);
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    x * 3
                }
            })
            .cache_policy(INPUTS)
            .result_storage(store.clone())
            .memory_tier(false)
            .strict_cache(strict)
        };
        let unavailable = || {
            Some(Fault::Status {
                code: 503,
                retry_after: None,
            })
        };
        // Reads fail: a miss, the body runs.
        proxy.set_script(move |r| {
            (r.method == "GET" || r.method == "HEAD")
                .then(unavailable)
                .flatten()
        });
        let run = task(false).run(5).await;
        assert_eq!((run.state(), run.value()), (&State::Completed, Some(&15)));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // The record was written: a healthy store now answers from it.
        proxy.clear();
        let run = task(false).run(5).await;
        assert_eq!(run.state(), &State::Cached);
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        // Writes fail: a warning, the computed value is returned.
        proxy.set_script(move |r| (r.method == "PUT").then(unavailable).flatten());
        let run = task(false).run(6).await;
        assert_eq!((run.state(), run.value()), (&State::Completed, Some(&18)));
        assert_eq!(runs.load(Ordering::SeqCst), 2);

        // Strict: both fail the run, naming the store and the record.
        let run = task(true).run(7).await;
        let err = run
            .error()
            .expect("a strict cache write failure fails")
            .to_string();
        assert!(
            err.contains("cannot write cache record") && err.contains("s3://"),
            "{err}"
        );
        proxy.set_script(move |r| {
            (r.method == "GET" || r.method == "HEAD")
                .then(unavailable)
                .flatten()
        });
        let run = task(true).run(8).await;
        let err = run
            .error()
            .expect("a strict cache read failure fails")
            .to_string();
        assert!(
            err.contains("cannot read cache record") && err.contains("s3://"),
            "{err}"
        );

        // A target that cannot be published fails the run, strict or not.
        proxy.set_script(move |r| (r.method == "PUT").then(unavailable).flatten());
        let target = Task::infallible("target_rule", |x: u64| async move { x })
            .result(store.clone())
            .target("out/{x}.json")
            .inputs(["x"]);
        let run = target.run(9).await;
        let err = run
            .error()
            .expect("an unpublished target fails")
            .to_string();
        assert!(err.contains("cannot publish target 'out/9.json'"), "{err}");
    });
}

// ---------------------------------------------------------------------------------
// The matrix: many cached calls per fault class.

#[derive(Default, Debug)]
struct Tally {
    calls: u64,
    right: u64,
    wrong: u64,
    failed: u64,
    unclear: Vec<String>,
}

fn profiles() -> Vec<(&'static str, Profile, u64, u64)> {
    let (calls, inputs, big_calls) = if full() {
        (500, 100, 2000)
    } else {
        (100, 25, 100)
    };
    let p = Profile::default();
    vec![
        ("503", Profile { p503: 0.10, ..p }, calls, inputs),
        ("500", Profile { p500: 0.10, ..p }, calls, inputs),
        (
            "429-retry-after",
            Profile { p429: 0.03, ..p },
            calls,
            inputs,
        ),
        (
            "reset-before",
            Profile {
                reset_before: 0.10,
                ..p
            },
            calls,
            inputs,
        ),
        (
            "reset-after",
            Profile {
                reset_after: 0.10,
                ..p
            },
            calls,
            inputs,
        ),
        (
            "truncated-20pct",
            Profile {
                truncate: 0.20,
                ..p
            },
            big_calls,
            inputs,
        ),
        (
            "mixed",
            Profile {
                p503: 0.10,
                reset_before: 0.025,
                reset_after: 0.025,
                truncate: 0.05,
                ..p
            },
            big_calls,
            inputs,
        ),
    ]
}

async fn run_profile(kind: Kind, name: &str, profile: Profile, calls: u64, inputs: u64, seed: u64) {
    let Some((proxy, backend, prefix)) = through_proxy(kind, seed).await else {
        return;
    };
    let store = ResultStore::from_backend(Arc::clone(&backend));
    let describe = backend.describe();
    proxy.set_profile(profile);
    let task = Task::new("faulty", |x: u64| async move {
        Ok::<_, std::io::Error>(payload(x, 2048 + (x as usize % 4) * 1024))
    })
    .inputs(["x"])
    .cache_policy(INPUTS)
    .result_storage(store.clone())
    .memory_tier(false)
    .strict_cache(true);
    let tally = futures::stream::iter(0..calls)
        .map(|i| {
            let task = task.clone();
            async move {
                let x = (i * 7919) % inputs;
                (x, task.run(x).await)
            }
        })
        .buffer_unordered(8)
        .fold(Tally::default(), |mut t, (x, run)| {
            let describe = describe.clone();
            async move {
                t.calls += 1;
                match run.value() {
                    Some(v) if *v == payload(x, 2048 + (x as usize % 4) * 1024) => t.right += 1,
                    Some(_) => t.wrong += 1,
                    None => {
                        t.failed += 1;
                        let msg = run.error().unwrap().to_string();
                        // Clear: names the store, the record and the fault.
                        let clear = msg.contains(&describe) && msg.contains("cache/");
                        if !clear {
                            t.unclear.push(msg);
                        }
                    }
                }
                t
            }
        })
        .await;

    // A few values of multipart / resumable size, through the same faults.
    let big = if kind == Kind::S3 {
        6 * 1024 * 1024
    } else {
        1536 * 1024
    };
    let mut big_failed = 0;
    for i in 0..2u64 {
        let key = Key::parse(format!("big/{i}")).unwrap();
        let value = Bytes::from(payload(1000 + i, big));
        match backend.put(&key, value.clone().into()).await {
            Ok(_) => {}
            Err(e) => {
                big_failed += 1;
                assert!(e.to_string().contains(&describe), "{e}");
                continue;
            }
        }
        match backend.get(&key).await {
            Ok(read) => assert!(read == value, "a large value read back wrong"),
            Err(e) => {
                big_failed += 1;
                assert!(e.to_string().contains(&describe), "{e}");
            }
        }
    }

    let faults = proxy.counts();
    let requests = proxy.requests();
    proxy.clear();
    drop(proxy);

    // After the faults: every record verifies, no upload is left open.
    let check = direct(kind, &prefix).await;
    let records: Vec<String> = check
        .list("cache/")
        .map_ok(|m| m.key.to_string())
        .try_collect()
        .await
        .unwrap();
    let mut corrupt = 0;
    for location in &records {
        match check.read_record::<String>(location).await {
            Ok(r) => {
                let x: u64 = r.value["value-".len()..r.value.find(':').unwrap()]
                    .parse()
                    .unwrap();
                if r.value != payload(x, 2048 + (x as usize % 4) * 1024) {
                    corrupt += 1;
                }
            }
            Err(e) => {
                eprintln!("record {location}: {e}");
                corrupt += 1;
            }
        }
    }
    let open = if kind == Kind::S3 {
        open_uploads(&prefix).await
    } else {
        0
    };
    let injected: BTreeMap<_, _> = faults.iter().filter(|(k, _)| **k != "none").collect();
    println!(
        "FIGURES matrix {kind:?} {name}: calls={} requests={requests} faults={injected:?} wrong={} failed={} ({:.2}%) unclear={} records={} corrupt={corrupt} open_uploads={open} big_values=2 big_failed={big_failed}",
        tally.calls,
        tally.wrong,
        tally.failed,
        100.0 * tally.failed as f64 / tally.calls as f64,
        tally.unclear.len(),
        records.len(),
    );
    assert_eq!(tally.wrong, 0, "{kind:?} {name}: wrong values");
    assert!(
        tally.unclear.is_empty(),
        "{kind:?} {name}: unclear errors {:?}",
        &tally.unclear[..tally.unclear.len().min(3)]
    );
    assert_eq!(corrupt, 0, "{kind:?} {name}: corrupt records");
    assert_eq!(open, 0, "{kind:?} {name}: open multipart uploads");
    assert_eq!(
        records.len() as u64,
        inputs.min(calls),
        "{kind:?} {name}: one record per input"
    );
    // Under 0.5% failed calls is the aim at full counts; at modest counts one
    // unlucky call is 1%: allow 2%.
    let limit = if full() { 0.005 } else { 0.02 };
    assert!(
        (tally.failed as f64) <= limit * tally.calls as f64,
        "{kind:?} {name}: {} of {} calls failed",
        tally.failed,
        tally.calls
    );
    let _ = check;
}

fn matrix(kind: Kind) {
    rt().block_on(async {
        for (i, (name, profile, calls, inputs)) in profiles().into_iter().enumerate() {
            run_profile(kind, name, profile, calls, inputs, 100 + i as u64).await;
        }
    });
}

#[test]
fn s3_under_every_fault_class_returns_no_wrong_value() {
    matrix(Kind::S3);
}

#[test]
fn gcs_under_every_fault_class_returns_no_wrong_value() {
    matrix(Kind::Gcs);
}

#[test]
fn slow_bodies_are_read_whole() {
    rt().block_on(async {
        for kind in [Kind::S3, Kind::Gcs] {
            let Some((proxy, backend, _)) = through_proxy(kind, 6).await else {
                return;
            };
            let key = Key::parse("slow/value").unwrap();
            let value = Bytes::from(payload(9, 64 * 1024));
            backend.put(&key, value.clone().into()).await.unwrap();
            // 64 KiB in 8 KiB pieces, 100 ms apart: slow, but never idle for the read
            // limit.
            proxy.set_script(|r| {
                (r.method == "GET").then_some(Fault::Slow {
                    chunk: 8 * 1024,
                    delay: Duration::from_millis(100),
                })
            });
            assert!(backend.get(&key).await.unwrap() == value);
            assert!(proxy.counts()["slow-body"] >= 1);
        }
    });
}

// ---------------------------------------------------------------------------------
// A resumable upload resumes where its session stands.

/// Against fake-gcs-server a resumable session cannot be resumed (see the two tests
/// below): a dropped chunk starts the upload over in a new session, and the object
/// holds exactly the bytes written. (Against GCS the upload goes on from the offset the
/// session reports; no emulator here can show it.)
#[test]
fn a_gcs_resumable_upload_with_dropped_connections_holds_exactly_its_bytes() {
    rt().block_on(async {
        // Resumable above 1 MiB, in chunks of 256 KiB (see `through_proxy`).
        let Some((proxy, backend, prefix)) = through_proxy(Kind::Gcs, 7).await else {
            return;
        };
        let key = Key::parse("resumable/value").unwrap();
        let value = Bytes::from(payload(11, 1536 * 1024));
        let sent: Arc<std::sync::Mutex<Vec<(String, String, usize)>>> = Arc::default();
        let log = Arc::clone(&sent);
        proxy.set_script(move |r| {
            let range = r.content_range.clone().unwrap_or_default();
            let mut log = log.lock().unwrap();
            let first = !log.iter().any(|(_, c, _)| *c == range);
            log.push((r.method.clone(), range.clone(), r.body_len));
            match () {
                // The third chunk reaches the store, its answer is lost.
                _ if first && range.starts_with("bytes 524288-") => Some(Fault::ResetAfter),
                // The fifth never reaches it.
                _ if first && range.starts_with("bytes 1048576-") => Some(Fault::ResetBefore),
                _ => None,
            }
        });
        backend
            .put(&key, value.clone().into())
            .await
            .unwrap_or_else(|e| panic!("a resumable upload with two dropped connections: {e}"));
        proxy.clear();
        let sent = sent.lock().unwrap().clone();
        let store = direct(Kind::Gcs, &prefix).await;
        let stored = store.read_bytes("resumable/value").await.unwrap();
        assert!(stored == value, "{} bytes stored: {sent:?}", stored.len());
        let sessions = sent.iter().filter(|(m, _, _)| m == "POST").count();
        assert_eq!(sessions, 3, "one session per dropped chunk: {sent:?}");
        let counts = proxy.counts();
        assert_eq!(
            (counts["reset-after"], counts["reset-before"]),
            (1, 1),
            "{counts:?}"
        );
        let bytes_sent: usize = sent
            .iter()
            .filter(|(m, _, _)| m == "PUT")
            .map(|(_, _, n)| n)
            .sum();
        println!(
            "FIGURES gcs resumable on fake-gcs-server, 2 dropped chunks: {} bytes stored exactly, \
             {sessions} sessions, {bytes_sent} bytes sent",
            value.len()
        );
    });
}

/// fake-gcs-server appends bytes sent again to what the session holds, while its
/// answer's `Range` is computed from the request: re-sending a chunk whose answer was
/// lost (what resuming from the last acknowledged offset does) would store it twice.
#[test]
fn fake_gcs_server_appends_a_chunk_sent_again() {
    rt().block_on(async {
        let Some(endpoint) = common::emulator("STORAGE_EMULATOR_HOST") else {
            return;
        };
        let host = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let bucket = std::env::var("CAIRN_TEST_GCS_BUCKET").unwrap_or_else(|_| "cairntest".into());
        let name = format!("cairn-faults/{}/probe", unique("resend"));
        let (path, enc) = session(&host, &bucket, &name, 512 * 1024).await;
        let chunk = vec![7u8; 256 * 1024];
        let total = 512 * 1024;
        let mut answers = vec![];
        for range in ["0-262143", "0-262143", "262144-524287"] {
            let a = http(
                &host,
                "PUT",
                &path,
                &[("Content-Range", format!("bytes {range}/{total}"))],
                &chunk,
            )
            .await;
            answers.push(a.lines().next().unwrap_or_default().to_owned());
        }
        let object = http(
            &host,
            "GET",
            &format!("/storage/v1/b/{bucket}/o/{enc}"),
            &[],
            b"",
        )
        .await;
        println!(
            "FIGURES fake-gcs-server chunk sent twice: answers {answers:?}; object: {}",
            object
                .lines()
                .find(|l| l.contains("\"size\""))
                .unwrap_or_default()
                .chars()
                .take(120)
                .collect::<String>()
        );
        assert!(answers[2].starts_with("HTTP/1.1 200"), "{answers:?}");
        assert!(
            object.contains("\"size\":\"786432\""),
            "512 KiB written, 768 KiB stored: {object}"
        );
    });
}

/// Starts a resumable session for `name` of `total` bytes; its path and the encoded name.
async fn session(host: &str, bucket: &str, name: &str, total: usize) -> (String, String) {
    let enc = name.replace('/', "%2F");
    let init = http(
        host,
        "POST",
        &format!("/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name={enc}"),
        &[
            ("Content-Type", "application/json".into()),
            ("X-Upload-Content-Length", total.to_string()),
        ],
        format!("{{\"name\":\"{name}\"}}").as_bytes(),
    )
    .await;
    let session = init
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .unwrap_or_else(|| panic!("no session: {init}"))
        .trim()
        .to_owned();
    let path = session.split_once(host).map(|(_, p)| p.to_owned()).unwrap();
    (path, enc)
}

/// Why cairn does not ask fake-gcs-server for a session's progress: the documented
/// status query (an empty `PUT` with `Content-Range: bytes */<total>`), which GCS
/// answers with `308` and the bytes it holds, makes the emulator finalize the session
/// and publish the bytes it holds as a short object. Should the emulator learn the
/// query, this test fails, and the emulator can take the GCS path.
#[test]
fn fake_gcs_server_finalizes_a_session_asked_for_its_progress() {
    rt().block_on(async {
        let Some(endpoint) = common::emulator("STORAGE_EMULATOR_HOST") else {
            return;
        };
        let host = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let bucket = std::env::var("CAIRN_TEST_GCS_BUCKET").unwrap_or_else(|_| "cairntest".into());
        let name = format!("cairn-faults/{}/probe", unique("query"));
        let total = 1024 * 1024;
        let (path, enc) = session(&host, &bucket, &name, total).await;
        let chunk = vec![7u8; 256 * 1024];
        let first = http(
            &host,
            "PUT",
            &path,
            &[("Content-Range", format!("bytes 0-262143/{total}"))],
            &chunk,
        )
        .await;
        assert!(first.starts_with("HTTP/1.1 308"), "{first}");
        let query = http(
            &host,
            "PUT",
            &path,
            &[("Content-Range", format!("bytes */{total}"))],
            b"",
        )
        .await;
        let status = query.lines().next().unwrap_or_default().to_owned();
        let object = http(
            &host,
            "GET",
            &format!("/storage/v1/b/{bucket}/o/{enc}"),
            &[],
            b"",
        )
        .await;
        println!(
            "FIGURES fake-gcs-server status query: answered {status:?}; object afterwards: {}",
            object.lines().next().unwrap_or_default()
        );
        assert!(status.starts_with("HTTP/1.1 200"), "{query}");
        assert!(
            object.starts_with("HTTP/1.1 200") && object.contains("\"size\":\"262144\""),
            "a short object of 262,144 of {total} bytes: {object}"
        );
    });
}

/// One HTTP/1.1 request on a fresh connection; the whole answer as text.
async fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
