//! The local disk tier in front of S3 (LocalStack) and GCS (fake-gcs-server), against
//! the remote store alone and the local store alone, in one run:
//!
//! 1. hit latency of a cached task (`add_one`, cache policy INPUTS, memory tier off):
//!    each call reads and verifies its cache record from the store;
//! 2. reads of one 64 MiB object: a cache record (served from the tier without asking
//!    the remote store) and a target (served from the tier after a `head` shows the
//!    remote version unchanged), as throughput.
//!
//! ```sh
//! ./localstack/bench tiered                       # starts the emulators
//! cargo bench -p cairn-benches --bench tiered     # with the emulators' variables set
//! ```
//! `CAIRN_BENCH_CALLS` (default 300) timed hits per row, `CAIRN_BENCH_REPS` (default 5)
//! reads of the large value per row. A report, not a test: ratios are against rows of
//! the same run.
#![recursion_limit = "256"]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::{Flow, PutMode, ResultStore, Task};

mod common;

const MIB: usize = 1 << 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// [`common::add_one`] on `store`, the memory tier off.
fn add_one(runs: &Arc<AtomicU64>, store: &ResultStore) -> Task<u64, u64> {
    common::add_one(runs)
        .result_storage(store.clone())
        .memory_tier(false)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Populates `keys` entries, then times `calls` hits cycling over them in one flow.
async fn hit_median(store: &ResultStore, keys: u64, calls: usize) -> Duration {
    let runs = Arc::new(AtomicU64::new(0));
    let task = add_one(&runs, store);
    for x in 0..keys {
        task.call(x).await.expect("a populating call");
    }
    let before = runs.load(Ordering::Relaxed);
    let times = Flow::new("bench-tiered")
        .run((), |_| async {
            let mut times = Vec::with_capacity(calls);
            for i in 0..calls as u64 {
                let x = (i * 7919) % keys;
                let t = Instant::now();
                let out = task.call(x).await.expect("a hit");
                times.push(t.elapsed());
                assert_eq!(out, x + 1);
            }
            Ok(times)
        })
        .await
        .into_result()
        .expect("the flow run");
    let ran = runs.load(Ordering::Relaxed) - before;
    if ran != 0 {
        println!("  !! the body ran {ran} times during the hit row: not all hits");
    }
    median(times)
}

/// Median MiB/s of `reps` whole reads of `location`.
async fn read_mib_s(store: &ResultStore, location: &str, size: usize, reps: usize) -> f64 {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let b = store.read_bytes(location).await.expect("a large read");
        times.push(t.elapsed());
        assert_eq!(b.len(), size);
    }
    size as f64 / MIB as f64 / median(times).as_secs_f64()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unavailable".into())
}

#[tokio::main]
async fn main() {
    let calls = env_usize("CAIRN_BENCH_CALLS", 300);
    let reps = env_usize("CAIRN_BENCH_REPS", 5);
    let keys = 100;
    let dir = tempfile::tempdir().expect("a scratch directory");
    let run = format!("bench-tiered/{:012x}", rand::random::<u64>() >> 16);
    println!("cairn tiered store benchmark");
    println!("load at start: {}", loadavg());
    println!();

    let local = ResultStore::local(dir.path().join("local")).expect("a local store");
    let mut remotes: Vec<(&str, ResultStore)> = Vec::new();
    if std::env::var("AWS_ENDPOINT_URL").is_ok() {
        let bucket = std::env::var("CAIRN_TEST_S3_BUCKET").unwrap_or_else(|_| "cairn-test".into());
        match ResultStore::from_url(&format!("s3://{bucket}/{run}")).await {
            Ok(s) => remotes.push(("S3 (LocalStack)", s)),
            Err(e) => println!("S3 skipped: {e}"),
        }
    } else {
        println!("S3 skipped: AWS_ENDPOINT_URL is not set (./localstack/bench tiered)");
    }
    if std::env::var("STORAGE_EMULATOR_HOST").is_ok() {
        let bucket = std::env::var("CAIRN_TEST_GCS_BUCKET").unwrap_or_else(|_| "cairntest".into());
        match ResultStore::from_url(&format!("gs://{bucket}/{run}")).await {
            Ok(s) => remotes.push(("GCS (fake-gcs-server)", s)),
            Err(e) => println!("GCS skipped: {e}"),
        }
    } else {
        println!("GCS skipped: STORAGE_EMULATOR_HOST is not set (./localstack/bench tiered)");
    }

    println!("1. Hit latency of add_one (INPUTS, memory tier off), median of {calls} calls over {keys} keys");
    let local_hit = hit_median(&local, keys, calls).await;
    println!("  {:<44} {:>9.1} us", "local store alone", us(local_hit));
    for (i, (name, remote)) in remotes.iter().enumerate() {
        let remote_hit = hit_median(remote, keys, calls).await;
        let tiered =
            ResultStore::tiered(dir.path().join(format!("tier-{i}")), remote).expect("a tier");
        let tiered_hit = hit_median(&tiered, keys, calls).await;
        println!(
            "  {:<44} {:>9.1} us",
            format!("{name} alone"),
            us(remote_hit)
        );
        println!(
            "  {:<44} {:>9.1} us   {:.1}x faster than {name} alone, {:.2}x the local store",
            format!("tier over {name}"),
            us(tiered_hit),
            us(remote_hit) / us(tiered_hit),
            us(tiered_hit) / us(local_hit),
        );
    }
    println!();

    let size = 64 * MIB;
    let value = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    println!("2. Reads of one 64 MiB object, median of {reps}, MiB/s");
    local
        .write_bytes("cache/v1/big/value", value.clone(), PutMode::Overwrite)
        .await
        .expect("a large write");
    let local_tp = read_mib_s(&local, "cache/v1/big/value", size, reps).await;
    println!("  {:<44} {:>9.0} MiB/s", "local store alone", local_tp);
    for (i, (name, remote)) in remotes.iter().enumerate() {
        let tiered =
            ResultStore::tiered(dir.path().join(format!("tier-big-{i}")), remote).expect("a tier");
        for (what, location) in [
            ("cache record", "cache/v1/big/value"),
            ("target", "big/value.bin"),
        ] {
            tiered
                .write_bytes(location, value.clone(), PutMode::Overwrite)
                .await
                .expect("a large write");
            let remote_tp = read_mib_s(remote, location, size, reps).await;
            let tiered_tp = read_mib_s(&tiered, location, size, reps).await;
            println!(
                "  {:<44} {:>9.0} MiB/s",
                format!("{name} alone, {what}"),
                remote_tp
            );
            println!(
                "  {:<44} {:>9.0} MiB/s   {:.1}x {name} alone",
                format!("tier over {name}, {what}"),
                tiered_tp,
                tiered_tp / remote_tp
            );
        }
    }
    println!();
    println!("load at end:   {}", loadavg());

    for (_, remote) in &remotes {
        let locations: Vec<String> = {
            use futures::StreamExt;
            remote
                .list("")
                .filter_map(|m| async move { m.ok().map(|m| m.key.to_string()) })
                .collect()
                .await
        };
        for l in &locations {
            let _ = remote.delete(l).await;
        }
    }
}
