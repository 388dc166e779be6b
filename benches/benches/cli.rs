//! What the `cairn` command's listing commands cost: `ls`, `du` and `verify` (through
//! `cairn::maintenance`, which the command only prints) over many entries, in entries
//! per second, next to a raw listing of the same store measured in the same run — a
//! plain directory walk on the local disk, the SDK's ListObjectsV2 pages on S3.
//!
//! ```text
//! ./localstack/bench cli                      # 100,000 entries on the local disk, 10,000 on LocalStack
//! CAIRN_BENCH_CLI_LOCAL=10000 CAIRN_BENCH_CLI_S3=1000 ./localstack/bench cli
//! ```
//!
//! `ls` and `du` read each record's header (task, created, expires: one small ranged
//! read per record), `du --fast` reads the listing alone, `verify` reads every record
//! whole and hashes it; the raw listing reads names and sizes only. The ratio is
//! cairn's rate / the raw listing's rate.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::backend::{BackendExt, DynBackend, Key};
use cairn::maintenance::{Filter, Maintenance};
use cairn::record::{self, RecordHeader};
use futures::{StreamExt, TryStreamExt};

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!("cairn command benchmark: entries per second; ratio = cairn / raw listing");
    println!();
    rt.block_on(async {
        local(count("CAIRN_BENCH_CLI_LOCAL", 100_000)).await;
        s3(count("CAIRN_BENCH_CLI_S3", 10_000)).await;
    });
}

/// A small record, as a cache hit of a trivial task leaves (about 300 bytes).
fn record_bytes(i: usize) -> Bytes {
    let payload = Bytes::from(format!("[{i},{},{}]", i * 2, i * 3));
    let header = RecordHeader {
        created: chrono::Utc::now(),
        expires: None,
        serializer: "json".into(),
        payload_len: payload.len() as u64,
        payload_checksum: record::PayloadChecksum::of(&payload),
        key_components: Default::default(),
        task: Some(format!("task{}", i % 16)),
        output_type: Some("Vec<u64>".into()),
        cairn_version: "0.1.0".into(),
        declared_digests: Vec::new(),
    };
    record::encode_header(&header, payload).into_contiguous()
}

fn path(i: usize) -> String {
    let hex = format!(
        "{:064x}",
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    );
    format!("cache/v1/ns{}/{}/{hex}", i % 4, &hex[..2])
}

async fn fill(backend: &DynBackend, n: usize) -> Duration {
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let backend = backend.clone();
            async move {
                backend
                    .put(&Key::parse(path(i)).unwrap(), record_bytes(i).into())
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    started.elapsed()
}

fn row(name: &str, n: usize, took: Duration, raw: Option<Duration>) {
    let rate = n as f64 / took.as_secs_f64();
    match raw {
        Some(raw) => {
            let raw_rate = n as f64 / raw.as_secs_f64();
            println!(
                "  {name:<28} {:>9.2?} {:>10.0} entries/s   ratio {:.3}",
                took,
                rate,
                rate / raw_rate
            );
        }
        None => println!("  {name:<28} {:>9.2?} {:>10.0} entries/s", took, rate),
    }
}

/// Times ls (the whole listing, drained), du and verify.
async fn measure(m: &Maintenance, n: usize, raw: Duration) {
    let started = Instant::now();
    let listed = m
        .list(&Filter::default())
        .try_fold(0usize, |c, _| async move { Ok(c + 1) })
        .await
        .unwrap();
    assert_eq!(listed, n);
    row("ls", n, started.elapsed(), Some(raw));
    let started = Instant::now();
    let usage = m.usage(&Filter::default()).await.unwrap();
    assert_eq!(usage.total.entries, n as u64);
    row("du", n, started.elapsed(), Some(raw));
    // The listing alone (`--fast`): no read per entry.
    let fast = m.clone().listing_only(true);
    let started = Instant::now();
    let usage = fast.usage(&Filter::default()).await.unwrap();
    assert_eq!(usage.total.entries, n as u64);
    row("du --fast (listing only)", n, started.elapsed(), Some(raw));
    let started = Instant::now();
    let report = m.verify(&Filter::default(), false).await.unwrap();
    assert_eq!(report.checked, n as u64);
    assert!(report.is_ok());
    row("verify", n, started.elapsed(), Some(raw));
}

fn walk(dir: &Path) -> usize {
    let mut n = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(e.path());
            } else {
                std::hint::black_box(meta.len());
                n += 1;
            }
        }
    }
    n
}

async fn local(n: usize) {
    let dir = match std::env::var_os("CAIRN_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .unwrap();
    let backend: DynBackend = std::sync::Arc::new(
        cairn::backend::LocalBackend::new(dir.path())
            .unwrap()
            .with_fsync(false),
    );
    let filled = fill(&backend, n).await;
    println!("local disk, {n} records (written in {filled:.1?}, without fsync)");
    let started = Instant::now();
    assert_eq!(walk(dir.path()), n);
    let raw = started.elapsed();
    row("raw directory walk", n, raw, None);
    measure(&Maintenance::from_backend(backend), n, raw).await;
    println!();
}

#[cfg(feature = "s3")]
async fn s3(n: usize) {
    use cairn::backend::S3Backend;

    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        println!("S3: skipped (AWS_ENDPOINT_URL is not set; run ./localstack/bench cli)");
        return;
    }
    let bucket = std::env::var("CAIRN_TEST_S3_BUCKET").unwrap_or_else(|_| "cairn-test".into());
    let prefix = format!("bench-cli-{:x}", rand::random::<u32>());
    let backend = S3Backend::from_env(bucket.clone(), prefix.clone())
        .await
        .unwrap();
    let client = backend.client().clone();
    let backend: DynBackend = std::sync::Arc::new(backend);
    let filled = fill(&backend, n).await;
    println!(
        "S3 ({}), {n} records (written in {filled:.1?})",
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_default()
    );
    let started = Instant::now();
    let mut pages = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(format!("{prefix}/"))
        .into_paginator()
        .send();
    let mut listed = 0;
    while let Some(page) = pages.next().await {
        listed += page.unwrap().contents().len();
    }
    assert_eq!(listed, n);
    let raw = started.elapsed();
    row("raw ListObjectsV2 pages", n, raw, None);
    let m = Maintenance::from_backend(backend.clone());
    measure(&m, n, raw).await;
    m.clear(&Filter::default(), false).await.unwrap();
    println!("  (deleted the {n} S3 objects this run wrote)");
}

#[cfg(not(feature = "s3"))]
async fn s3(_n: usize) {
    println!("S3: skipped (built without the s3 feature)");
}
