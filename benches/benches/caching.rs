//! Latency of cairn's cache, measured call by call: hits and misses on the memory
//! tier, the local disk and S3 (LocalStack), hit latency as the store grows, a whole
//! flow of cached calls, and the cost of hashing a large input into a cache key.
//!
//! ```text
//! cargo bench -p cairn-benches --bench caching                     # memory and local disk; S3 is skipped
//! ./localstack/bench caching                                        # starts LocalStack, adds S3
//! CAIRN_BENCH_BIG=0 cargo bench -p cairn-benches --bench caching   # hashes 256 MiB instead of 1 GiB
//! ```
//!
//! Other knobs: `CAIRN_BENCH_CALLS` (timed calls per fast row, default 20000),
//! `CAIRN_BENCH_SECTIONS` (a comma list of
//! `latency,steps,scaling,flow,hashing,serialize,shared_map`),
//! `CAIRN_BENCH_REPS` (repetitions of the flow and hashing figures, default 11 and 5),
//! `CAIRN_BENCH_DIR` (where the local stores go, default the system temp dir),
//! `CAIRN_BENCH_MAX_ENTRIES` (the largest store of the scaling section, default
//! 100000; `1000000` adds a 1M row, about 4 GB of small files and a few minutes to fill).
//!
//! `CAIRN_BENCH_PROFILE=memory-hit|memory-hit-spread|local-hit|flow-memory|flow-local|flow-local-tier|local-miss|memory-miss`
//! runs only that case in a loop for `CAIRN_BENCH_PROFILE_SECS` (default 10) seconds,
//! for `perf record` or `valgrind --tool=callgrind`, and prints its CPU time per call in
//! user space and in the kernel; `local-hit` then runs its baseline (a raw read +
//! BLAKE3 of the same record files) for as long, split the same way, on random keys
//! among `CAIRN_BENCH_PROFILE_ENTRIES` records (default 1,000).
//!
//! Every call is timed on its own with `Instant`; the figures are the median and the
//! 95th percentile (p99 and mean alongside). This is a report, not a test: a missed
//! aim is printed, never a panic.

// With the s3 feature, a task call's future holds the S3 client's setup (a store may be
// opened from a URL on first use), and this file nests it a few levels deeper.
#![recursion_limit = "256"]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::backend::{Backend, BackendExt, Key, LocalBackend};
use cairn::cache::{MemoryTier, INPUTS};
use cairn::hashing::{hash_value, KeyHasher};
use cairn::{Flow, ResultStore, Task};
use futures::StreamExt;

mod common;
use common::add_one;

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

// Reference figures measured by others on this machine kind (not measured here).
const PEER_JOBLIB_HIT_US: f64 = 80.0;
const PEER_JOBLIB_MISS_US: f64 = 175.0;
const PEER_FLYTEKIT_HIT_US: f64 = 500.0;
const PEER_PREFECT_HIT_US: f64 = 3000.0;
const PEER_PREFECT_FLOW_1000_MS: f64 = 4200.0;

// The aims.
const AIM_LOCAL_HIT_RATIO: f64 = 1.3;
const AIM_LOCAL_MISS_RATIO: f64 = 1.5;
const AIM_S3_HIT_RATIO: f64 = 1.05;
const AIM_MEMORY_HIT_US: f64 = 0.5;
const AIM_MEMORY_HIT_P95_US: f64 = 1.0;
const AIM_FLOW_1000_MS: f64 = 20.0;
const AIM_FLAT_RATIO: f64 = 1.10;
const AIM_HASH_RATIO: f64 = 0.80;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Config {
    /// Timed calls per fast row (memory tier, local hits, memory misses).
    calls: usize,
    /// Untimed calls before each hit row.
    warmup: usize,
    /// Timed calls of a local miss with fsync (each one syncs the disk).
    fsync_calls: usize,
    /// Timed calls per S3 row.
    s3_calls: usize,
    /// Repetitions of the 1,000-call flow.
    flow_reps: usize,
    /// Repetitions of each hashing figure.
    hash_reps: usize,
    /// The size of the large input.
    big: usize,
    dir: PathBuf,
}

fn main() {
    if let Ok(dir) = std::env::var(SHARED_MAP_WORKER) {
        // A worker process of the shared-map section (this binary, started again).
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        return rt.block_on(shared_map_worker(Path::new(&dir)));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let calls = env_usize("CAIRN_BENCH_CALLS", 20_000).max(100);
    let config = Config {
        calls,
        warmup: (calls / 10).max(100),
        fsync_calls: (calls / 10).max(100),
        s3_calls: (calls / 10).max(100),
        flow_reps: env_usize("CAIRN_BENCH_REPS", 11).max(1),
        hash_reps: env_usize("CAIRN_BENCH_REPS", 5).max(1),
        big: if std::env::var("CAIRN_BENCH_BIG").is_ok_and(|v| v == "0") {
            256 * MIB
        } else {
            GIB
        },
        dir: std::env::var_os("CAIRN_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
    };
    let scratch = tempfile::Builder::new()
        .prefix("cairn-caching-bench-")
        .tempdir_in(&config.dir)
        .expect("a scratch directory for the benchmark");

    if let Ok(case) = std::env::var("CAIRN_BENCH_PROFILE") {
        let secs = env_usize("CAIRN_BENCH_PROFILE_SECS", 10) as u64;
        rt.block_on(profile(&case, Duration::from_secs(secs), scratch.path()));
        return;
    }

    println!("cairn caching benchmark");
    println!(
        "load at start: {}  ({} cores)",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "local stores under {}; every call timed alone (Instant), after warm-up",
        scratch.path().display()
    );
    println!();

    let sections = std::env::var("CAIRN_BENCH_SECTIONS")
        .unwrap_or_else(|_| "latency,steps,scaling,flow,hashing,serialize,shared_map".into());
    let on = |name: &str| sections.split(',').any(|s| s.trim() == name);
    let mut report = Report::default();
    rt.block_on(async {
        if on("latency") {
            latency(&config, scratch.path(), &mut report).await;
        }
        if on("steps") {
            steps(&config, scratch.path(), &report).await;
        }
        if on("scaling") {
            scaling(&config, scratch.path(), &mut report).await;
        }
        if on("flow") {
            flows(&config, scratch.path(), &mut report).await;
        }
        if on("serialize") {
            serialize(&config, scratch.path()).await;
        }
        if on("shared_map") {
            shared_map(scratch.path());
        }
    });
    if on("hashing") {
        hashing(&config, &rt, &mut report);
    }
    report.print();
    println!();
    println!("load at end:   {}", loadavg());
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unavailable".into())
}

/// How many names the kernel's dentry cache holds (the first field of
/// `/proc/sys/fs/dentry-state`): every path component's lookup walks a chain of its
/// hash table, whose length grows with this number over the table's size (the kernel
/// logs it at boot: "Dentry cache hash table entries").
fn dentries() -> String {
    std::fs::read_to_string("/proc/sys/fs/dentry-state")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------
// Statistics and printing

#[derive(Clone, Copy, Debug)]
struct Stats {
    n: usize,
    median: Duration,
    p95: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    assert!(!v.is_empty());
    v.sort();
    let n = v.len();
    let at = |q: f64| v[((n as f64 * q) as usize).min(n - 1)];
    Stats {
        n,
        median: v[n / 2],
        p95: at(0.95),
        p99: at(0.99),
        mean: v.iter().sum::<Duration>() / n as u32,
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_row(label: &str, s: &Stats) {
    println!(
        "  {label:<52} {:>7}  {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
        s.n,
        us(s.median),
        us(s.p95),
        us(s.p99),
        us(s.mean)
    );
}

fn print_header() {
    println!(
        "  {:<52} {:>7}  {:>10} {:>10} {:>10} {:>10}",
        "", "calls", "median µs", "p95 µs", "p99 µs", "mean µs"
    );
}

/// What the summary needs from the sections.
#[derive(Default)]
struct Report {
    memory_hit: Option<Stats>,
    memory_hit_outside: Option<Stats>,
    /// Hashing the input and a `HashMap` lookup, the memory-tier hit's baseline.
    memory_hit_baseline: Option<Stats>,
    local_hit: Option<Stats>,
    /// A raw read ([`raw_read`]) + BLAKE3 of the same record files, the local hit's baseline.
    local_hit_baseline: Option<Stats>,
    s3_hit: Option<Stats>,
    /// A raw GetObject of the same records, the S3 hit's baseline.
    s3_hit_baseline: Option<Stats>,
    memory_miss: Option<Stats>,
    local_miss: Option<Stats>,
    local_miss_nofsync: Option<Stats>,
    /// A raw staged write + rename in the same directories, the miss's baseline.
    local_miss_nofsync_baseline: Option<Stats>,
    s3_miss: Option<Stats>,
    /// Hits as the store grows, largest over smallest size.
    flatness: Vec<FlatRow>,
    /// (label, median wall-clock)
    flows: Vec<(String, Duration)>,
    /// (label, GiB/s, ratio to raw)
    hashing: Vec<(String, f64, f64)>,
    raw_blake3_gibps: f64,
}

/// A row of the scaling section: cairn's ratio of the largest store size to the
/// smallest, next to a raw read's in the same run.
struct FlatRow {
    label: String,
    /// `1M/1k`, say.
    span: String,
    median: f64,
    p95: f64,
    raw_median: f64,
    raw_p95: f64,
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

impl Report {
    fn print(&self) {
        let fmt_us = |s: &Option<Stats>| match s {
            Some(s) => format!("{:.2} µs", us(s.median)),
            None => "skipped".into(),
        };
        println!("Comparison (cairn medians measured here; peers are REFERENCE FIGURES measured");
        println!("on this machine kind by others, printed as constants, NOT measured in this run)");
        println!(
            "  {:<52} {:>12} {:>10} {:>10} {:>10}",
            "", "cairn", "joblib", "flytekit", "Prefect 3"
        );
        println!(
            "  {:<52} {:>12} {:>10} {:>10} {:>10}",
            "hit, local store (memory tier off)",
            fmt_us(&self.local_hit),
            format!("~{PEER_JOBLIB_HIT_US:.0} µs"),
            format!("~{:.1} ms", PEER_FLYTEKIT_HIT_US / 1e3),
            format!("~{:.0} ms", PEER_PREFECT_HIT_US / 1e3),
        );
        println!(
            "  {:<52} {:>12} {:>10} {:>10} {:>10}",
            "hit, memory tier",
            fmt_us(&self.memory_hit),
            "",
            "",
            ""
        );
        println!(
            "  {:<52} {:>12} {:>10} {:>10} {:>10}",
            "hit, S3 (LocalStack)",
            fmt_us(&self.s3_hit),
            "",
            "",
            ""
        );
        println!(
            "  {:<52} {:>12} {:>10} {:>10} {:>10}",
            "miss + persist, local (fsync on)",
            fmt_us(&self.local_miss),
            format!("~{PEER_JOBLIB_MISS_US:.0} µs"),
            "",
            ""
        );
        println!(
            "  {:<52} {:>12} {:>10} {:>10} {:>10}",
            "miss + persist, local (fsync off)",
            fmt_us(&self.local_miss_nofsync),
            "",
            "",
            ""
        );
        println!(
            "  {:<52} {:>12} {:>10} {:>10} {:>10}",
            "miss + persist, memory store",
            fmt_us(&self.memory_miss),
            "",
            "",
            ""
        );
        println!(
            "  {:<52} {:>12} {:>10} {:>10} {:>10}",
            "miss + persist, S3 (LocalStack)",
            fmt_us(&self.s3_miss),
            "",
            "",
            ""
        );
        for (label, d) in &self.flows {
            println!(
                "  {:<52} {:>12} {:>10} {:>10} {:>10}",
                format!("1,000-call cached flow, {label}"),
                format!("{:.2} ms", ms(*d)),
                "",
                "",
                format!("~{:.1} s", PEER_PREFECT_FLOW_1000_MS / 1e3)
            );
        }
        println!();
        println!("Aims (on medians; each baseline measured in this run)");
        if let Some(s) = &self.memory_hit {
            let v = us(s.median);
            let outside = self
                .memory_hit_outside
                .map(|o| format!("; outside a flow {:.2} µs", us(o.median)))
                .unwrap_or_default();
            let baseline = self
                .memory_hit_baseline
                .map(|b| format!("; baseline {:.3} µs", us(b.median)))
                .unwrap_or_default();
            println!(
                "  memory-tier hit < {AIM_MEMORY_HIT_US} µs, p95 < {AIM_MEMORY_HIT_P95_US} µs: \
                 {v:.2} µs in a flow (p95 {:.2}){outside}{baseline}  {}",
                us(s.p95),
                verdict(v < AIM_MEMORY_HIT_US && us(s.p95) < AIM_MEMORY_HIT_P95_US)
            );
        }
        for (label, aim, cairn, baseline) in [
            (
                "local-store hit",
                AIM_LOCAL_HIT_RATIO,
                &self.local_hit,
                &self.local_hit_baseline,
            ),
            (
                "miss + persist, local, fsync off",
                AIM_LOCAL_MISS_RATIO,
                &self.local_miss_nofsync,
                &self.local_miss_nofsync_baseline,
            ),
            (
                "S3 hit (LocalStack)",
                AIM_S3_HIT_RATIO,
                &self.s3_hit,
                &self.s3_hit_baseline,
            ),
        ] {
            if let (Some(c), Some(b)) = (cairn, baseline) {
                let ratio = us(c.median) / us(b.median).max(1e-9);
                println!(
                    "  {label} <= {aim}x its baseline: {:.2} µs against {:.2} µs = {ratio:.2}x  {}",
                    us(c.median),
                    us(b.median),
                    verdict(ratio <= aim)
                );
            }
        }
        for (label, d) in &self.flows {
            println!(
                "  1,000-call cached flow < {AIM_FLOW_1000_MS} ms, {label}: {:.2} ms  {}",
                ms(*d),
                verdict(ms(*d) < AIM_FLOW_1000_MS)
            );
        }
        for row in &self.flatness {
            println!(
                "  hit flat within {:.0}% over {} entries, {}: median x{:.2} (p95 x{:.2}); raw read x{:.2} (p95 x{:.2})  {}",
                (AIM_FLAT_RATIO - 1.0) * 100.0,
                row.span,
                row.label,
                row.median,
                row.p95,
                row.raw_median,
                row.raw_p95,
                verdict(row.median <= AIM_FLAT_RATIO)
            );
        }
        for (label, gibps, ratio) in &self.hashing {
            println!(
                "  hashing >= 80% of raw BLAKE3 ({:.2} GiB/s), {label}: {gibps:.2} GiB/s = {:.0}%  {}",
                self.raw_blake3_gibps,
                ratio * 100.0,
                verdict(*ratio >= AIM_HASH_RATIO)
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Tasks and timed calls

/// Calls `task` once per input and times each call alone.
async fn time_calls(task: &Task<u64, u64>, inputs: &[u64]) -> Vec<Duration> {
    let mut times = Vec::with_capacity(inputs.len());
    for &x in inputs {
        let t = Instant::now();
        let out = task.call(x).await;
        let elapsed = t.elapsed();
        assert_eq!(out.expect("a task call"), x + 1);
        times.push(elapsed);
    }
    times
}

/// `time_calls` inside one flow run.
async fn time_calls_in_flow(task: &Task<u64, u64>, inputs: &[u64]) -> Vec<Duration> {
    time_calls_in_flow_at(task, inputs, None).await
}

/// [`time_calls_in_flow`], in a flow whose runs read `clock` (the system's if `None`).
async fn time_calls_in_flow_at(
    task: &Task<u64, u64>,
    inputs: &[u64],
    clock: Option<Arc<dyn cairn::Clock>>,
) -> Vec<Duration> {
    let flow = Flow::new("bench");
    let flow = match clock {
        Some(clock) => flow.clock(clock),
        None => flow,
    };
    flow.run((), |_| async { Ok(time_calls(task, inputs).await) })
        .await
        .into_result()
        .expect("the flow run")
}

/// Runs the task on every input (not timed), `concurrency` at a time.
async fn populate(task: &Task<u64, u64>, inputs: impl Iterator<Item = u64>, concurrency: usize) {
    let inputs: Vec<u64> = inputs.collect();
    for chunk in inputs.chunks(concurrency.max(1)) {
        for run in task.map(chunk.iter().copied()).await {
            run.into_result().expect("a populating call");
        }
    }
}

/// `n` inputs cycling through `0..keys` in a scattered order.
fn cycling(keys: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| (i * 7919) % keys).collect()
}

/// `n` pseudo-random inputs in `0..keys`.
fn random_inputs(keys: u64, n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % keys
        })
        .collect()
}

/// A hit row: populates `keys` entries, warms up, then times `calls` hits, checking
/// that no body ran while timing.
async fn hit_row(
    task: &Task<u64, u64>,
    runs: &Arc<AtomicU64>,
    keys: u64,
    warmup: usize,
    calls: usize,
    in_flow: bool,
) -> Stats {
    populate(task, 0..keys, 16).await;
    let before = runs.load(Ordering::Relaxed);
    time_calls_in_flow(task, &cycling(keys, warmup)).await;
    let inputs = cycling(keys, calls);
    let times = if in_flow {
        time_calls_in_flow(task, &inputs).await
    } else {
        time_calls(task, &inputs).await
    };
    let ran = runs.load(Ordering::Relaxed) - before;
    if ran != 0 {
        println!("  !! the body ran {ran} times during a hit row: these were not all hits");
    }
    stats(times)
}

/// The baseline of a memory-tier hit: the input hashed as cairn hashes it, then a
/// `HashMap` lookup of a 32-byte key, over `keys` entries.
fn map_lookups(keys: u64, calls: usize) -> Stats {
    let map: std::collections::HashMap<[u8; 32], u64> = (0..keys)
        .map(|x| (*blake3::hash(&x.to_le_bytes()).as_bytes(), x + 1))
        .collect();
    let mut times = Vec::with_capacity(calls);
    for x in cycling(keys, calls) {
        let t = Instant::now();
        let key = hash_value(&x).expect("a u64 hashes");
        let hit = map.get(&<[u8; 32]>::from(key)).copied();
        std::hint::black_box((key, hit));
        times.push(t.elapsed());
    }
    stats(times)
}

/// What `std::fs::read` does (open, fstat, read to the end, close), with the file
/// opened as cairn's local store opens the records it reads: with `O_NOATIME` on Linux
/// (no access time written back), without it where the kernel refuses it.
fn raw_read(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    #[cfg(target_os = "linux")]
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NOATIME)
            .open(path)
        {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => std::fs::File::open(path),
            file => file,
        }
    };
    #[cfg(not(target_os = "linux"))]
    let file = std::fs::File::open(path);
    let mut file = file?;
    let size = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let mut bytes = Vec::with_capacity(size);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The baseline of a local hit: a raw read ([`raw_read`]: open, fstat, read, close) of
/// the same record files in the same order, and BLAKE3 of what was read, on this thread.
fn raw_reads(paths: &[PathBuf], calls: usize) -> Stats {
    let mut times = Vec::with_capacity(calls);
    for x in cycling(paths.len() as u64, calls) {
        let t = Instant::now();
        let bytes = raw_read(&paths[x as usize]).expect("a record file");
        std::hint::black_box(blake3::hash(&bytes));
        times.push(t.elapsed());
    }
    stats(times)
}

/// The baseline of a miss's publish: a staged write of `record` (create a new file,
/// write, close) renamed to its name `i` in one of the 256 directories under `dir`,
/// no fsync.
fn staged_write(dir: &Path, record: &[u8], i: u64) -> Duration {
    use std::io::Write;
    let sub = dir.join(format!("{:02x}", (i * 31) % 256));
    let staged = sub.join(format!(".raw-staged-{i}"));
    let dest = sub.join(format!("raw-{i}"));
    let t = Instant::now();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staged)
        .expect("a staged file");
    f.write_all(record).expect("a write");
    drop(f);
    std::fs::rename(&staged, &dest).expect("a rename");
    t.elapsed()
}

/// Misses of `task` on `inputs` and as many baseline writes ([`staged_write`]),
/// alternating call by call in one flow run, each side first in every other pair: a
/// file's creation costs what the filesystem's recent history makes it cost (after
/// deletions, ext4 scans past inodes freed in the last minutes, a cost that fades
/// over the run), so both sides sample the same moments.
async fn misses_beside_staged_writes(
    task: &Task<u64, u64>,
    inputs: &[u64],
    dir: &Path,
    record: &[u8],
) -> (Vec<Duration>, Vec<Duration>) {
    let flow = Flow::new("bench");
    flow.run((), |_| async {
        let (mut cairn, mut raw) = (Vec::new(), Vec::new());
        for (i, &x) in inputs.iter().enumerate() {
            if i % 2 == 1 {
                raw.push(staged_write(dir, record, i as u64));
            }
            cairn.extend(time_calls(task, &[x]).await);
            if i % 2 == 0 {
                raw.push(staged_write(dir, record, i as u64));
            }
        }
        Ok((cairn, raw))
    })
    .await
    .into_result()
    .expect("the flow run")
}

/// A miss row: `calls` fresh inputs from `first`, each one runs the body and writes a
/// record.
async fn miss_row(task: &Task<u64, u64>, runs: &Arc<AtomicU64>, first: u64, calls: usize) -> Stats {
    let before = runs.load(Ordering::Relaxed);
    let inputs: Vec<u64> = (first..first + calls as u64).collect();
    let times = time_calls_in_flow(task, &inputs).await;
    let ran = runs.load(Ordering::Relaxed) - before;
    if ran != calls as u64 {
        println!("  !! the body ran {ran} times for {calls} misses");
    }
    stats(times)
}

/// A raw GetObject of a location under the benchmark's S3 prefix: the baseline of an
/// S3 hit.
type RawGet = Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

#[cfg(feature = "s3")]
async fn s3_store() -> Result<(ResultStore, RawGet), String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    if endpoint.is_empty() {
        return Err(
            "AWS_ENDPOINT_URL is not set; ./localstack/bench caching starts LocalStack".into(),
        );
    }
    let bucket = std::env::var("CAIRN_TEST_S3_BUCKET").unwrap_or_else(|_| "cairn-test".into());
    let prefix = format!("bench-caching-{:012x}", rand::random::<u64>() >> 16);
    let backend = cairn::backend::S3Backend::from_env(bucket.clone(), prefix.clone())
        .await
        .map_err(|e| format!("cannot open s3://{bucket}/{prefix} at {endpoint}: {e}"))?;
    let client = backend.client().clone();
    let raw: RawGet = Arc::new(move |location: String| {
        let request = client
            .get_object()
            .bucket(bucket.clone())
            .key(format!("{prefix}/{location}"));
        Box::pin(async move {
            let out = request.send().await.expect("a raw GetObject");
            std::hint::black_box(out.body.collect().await.expect("its body").into_bytes());
        })
    });
    Ok((ResultStore::new(backend), raw))
}

#[cfg(not(feature = "s3"))]
async fn s3_store() -> Result<(ResultStore, RawGet), String> {
    Err("built without the s3 feature; ./localstack/bench caching (--all-features) adds S3".into())
}

/// The location of `task`'s record for input `x` (running it if needed).
async fn location_of(task: &Task<u64, u64>, x: u64) -> String {
    let hex = task
        .run(x)
        .await
        .info()
        .cache_key()
        .map(str::to_owned)
        .expect("a cache key");
    format!("cache/v1/default/{}/{hex}", &hex[..2])
}

/// Deletes everything the benchmark wrote under its S3 prefix.
async fn clean_up(store: &ResultStore) {
    let keys: Vec<Key> = store
        .list("")
        .filter_map(|m| async move { m.ok().map(|m| m.key) })
        .collect()
        .await;
    let n = keys.len();
    futures::stream::iter(keys)
        .for_each_concurrent(32, |k| async move {
            let _ = store.delete(k.as_str()).await;
        })
        .await;
    println!("  (deleted the {n} S3 objects this run wrote)");
}

// ---------------------------------------------------------------------------------
// 1. Per-call latency

async fn latency(config: &Config, dir: &Path, report: &mut Report) {
    let runs = Arc::new(AtomicU64::new(0));
    let task = add_one(&runs);
    let keys = 1000;
    println!(
        "1. Per-call latency of add_one(x: u64) -> u64, cache policy INPUTS, inside a flow \
         (hits cycle over {keys} keys)"
    );
    print_header();

    // Memory tier: the default store (this process's memory), memory tier on.
    let s = hit_row(&task, &runs, keys, config.warmup, config.calls, true).await;
    print_row("hit, memory tier", &s);
    report.memory_hit = Some(s);
    let s = map_lookups(keys, config.calls);
    print_row(
        "  baseline: hash the input + HashMap lookup, 32-byte key",
        &s,
    );
    report.memory_hit_baseline = Some(s);
    let s = hit_row(&task, &runs, keys, config.warmup, config.calls, false).await;
    print_row("hit, memory tier, outside a flow", &s);
    report.memory_hit_outside = Some(s);

    // Local store, read every time.
    let local = ResultStore::local(dir.join("latency-local")).expect("a local store");
    let local_task = task
        .clone()
        .result_storage(local.clone())
        .memory_tier(false);
    let s = hit_row(&local_task, &runs, keys, config.warmup, config.calls, true).await;
    print_row("hit, local store (memory tier off)", &s);
    report.local_hit = Some(s);
    let mut paths = Vec::with_capacity(keys as usize);
    for x in 0..keys {
        paths.push(
            dir.join("latency-local")
                .join(location_of(&local_task, x).await),
        );
    }
    let s = raw_reads(&paths, config.calls);
    print_row(
        "  baseline: raw read (O_NOATIME) + BLAKE3 of the same files",
        &s,
    );
    report.local_hit_baseline = Some(s);
    let local_tier = task.clone().result_storage(local.clone());
    let s = hit_row(&local_tier, &runs, keys, config.warmup, config.calls, true).await;
    print_row("hit, local store (memory tier on)", &s);
    let trusted = s;
    // The memory tier's check that the record was not replaced: a stat per hit.
    let checked = local_tier
        .clone()
        .memory_tier_revalidate_after(Duration::ZERO);
    let s = hit_row(&checked, &runs, keys, config.warmup, config.calls, true).await;
    print_row("hit, local store (memory tier on, checked every hit)", &s);
    println!(
        "  the version check (stat) on every hit: {:.1}x the trusted hit's median",
        us(s.median) / us(trusted.median).max(1e-9)
    );

    // S3.
    let s3 = s3_store().await;
    let s3_task = s3.as_ref().ok().map(|(store, _)| {
        task.clone()
            .result_storage(store.clone())
            .memory_tier(false)
    });
    match (&s3_task, &s3) {
        (Some(s3_task), Ok((_, raw))) => {
            let s3_keys = 200;
            // Hits and their baseline, a raw GetObject of the same records in the same
            // order, a quarter of the calls at a time in turn, so that LocalStack's
            // drift over the run weighs on both alike.
            populate(s3_task, 0..s3_keys, 16).await;
            let before = runs.load(Ordering::Relaxed);
            time_calls_in_flow(s3_task, &cycling(s3_keys, config.warmup.min(200))).await;
            let mut locations = Vec::new();
            for x in 0..s3_keys {
                locations.push(location_of(s3_task, x).await);
            }
            let order = cycling(s3_keys, config.s3_calls);
            let (mut hits, mut raws) = (Vec::new(), Vec::new());
            for quarter in order.chunks(config.s3_calls.div_ceil(4).max(1)) {
                hits.extend(time_calls_in_flow(s3_task, quarter).await);
                for &x in quarter {
                    let t = Instant::now();
                    raw(locations[x as usize].clone()).await;
                    raws.push(t.elapsed());
                }
            }
            let ran = runs.load(Ordering::Relaxed) - before;
            if ran != 0 {
                println!("  !! the body ran {ran} times during a hit row: these were not all hits");
            }
            let s = stats(hits);
            print_row("hit, S3 LocalStack (memory tier off)", &s);
            report.s3_hit = Some(s);
            let full_read = s;
            let s = stats(raws);
            print_row(
                "  baseline: raw aws-sdk-s3 GetObject, same records in turn",
                &s,
            );
            report.s3_hit_baseline = Some(s);
            // Populating takes longer than the default 1 s bound on S3: trust for an
            // hour, so that this row times hits the tier answers alone.
            let tiered = s3_task
                .clone()
                .memory_tier(true)
                .memory_tier_revalidate_after(Duration::from_secs(3600));
            let s = hit_row(
                &tiered,
                &runs,
                s3_keys,
                config.warmup.min(200),
                config.s3_calls,
                true,
            )
            .await;
            print_row("hit, S3 LocalStack (memory tier on, entry trusted)", &s);
            let trusted = s;
            let checked = tiered.memory_tier_revalidate_after(Duration::ZERO);
            let s = hit_row(
                &checked,
                &runs,
                s3_keys,
                config.warmup.min(200),
                config.s3_calls,
                true,
            )
            .await;
            print_row("hit, S3 LocalStack (memory tier on, HEAD every hit)", &s);
            println!(
                "  the version check (HEAD) on every hit: {:.1}x the trusted hit's median, \
                 {:.2}x a full read's",
                us(s.median) / us(trusted.median).max(1e-9),
                us(s.median) / us(full_read.median).max(1e-9)
            );
        }
        _ => println!(
            "  hit, S3: skipped ({})",
            s3.as_ref().err().map_or("", |e| e.as_str())
        ),
    }

    // Misses: a new input each call; the body runs and a record is written.
    let s = miss_row(&task, &runs, 1 << 40, config.calls).await;
    print_row("miss + persist, memory store (+ memory tier)", &s);
    report.memory_miss = Some(s);
    let s = miss_row(&local_task, &runs, 1 << 40, config.fsync_calls).await;
    print_row("miss + persist, local store (fsync on, the default)", &s);
    report.local_miss = Some(s);
    let nofsync = ResultStore::new(
        LocalBackend::new(dir.join("latency-nofsync"))
            .expect("a local backend")
            .with_fsync(false),
    );
    let nofsync_task = task.clone().result_storage(nofsync).memory_tier(false);
    // The baseline stages and renames the same record's bytes into the directories the
    // records go to: a file's creation costs what its directory and block group make
    // it cost, so both sides are measured in the same places, call by call.
    let record_dir = dir.join("latency-nofsync").join("cache/v1/default");
    for i in 0..256 {
        std::fs::create_dir_all(record_dir.join(format!("{i:02x}"))).unwrap();
    }
    let record = std::fs::read(
        dir.join("latency-nofsync")
            .join(location_of(&nofsync_task, 1 << 39).await),
    )
    .expect("the record just written");
    let first = 1u64 << 40;
    let inputs: Vec<u64> = (first..first + (config.calls / 4).max(100) as u64).collect();
    let (cairn_times, raw_times) =
        misses_beside_staged_writes(&nofsync_task, &inputs, &record_dir, &record).await;
    let s = stats(cairn_times);
    print_row("miss + persist, local store (fsync off)", &s);
    report.local_miss_nofsync = Some(s);
    let s = stats(raw_times);
    print_row(
        "  baseline: raw staged write + rename, same directories",
        &s,
    );
    report.local_miss_nofsync_baseline = Some(s);
    match (&s3_task, &s3) {
        (Some(s3_task), Ok((store, _))) => {
            let s = miss_row(s3_task, &runs, 1 << 40, config.s3_calls / 2).await;
            print_row("miss + persist, S3 LocalStack", &s);
            report.s3_miss = Some(s);
            clean_up(store).await;
        }
        _ => println!("  miss + persist, S3: skipped"),
    }
    println!();
}

// ---------------------------------------------------------------------------------
// 1b. Where a hit's time goes: its steps, timed alone

/// The median time per call of `f`, timed in batches of `batch` calls.
fn per_op(batches: usize, batch: usize, mut f: impl FnMut(u64)) -> Duration {
    let mut times = Vec::with_capacity(batches);
    let mut i = 0u64;
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..batch {
            f(i);
            i += 1;
        }
        times.push(t.elapsed() / batch as u32);
    }
    stats(times).median
}

async fn per_op_async<F, Fut>(n: usize, mut f: F) -> Stats
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        f(i).await;
        times.push(t.elapsed());
    }
    stats(times)
}

async fn steps(config: &Config, dir: &Path, report: &Report) {
    println!("1b. The steps of a hit, each timed alone (the same work the runner does per call)");
    let n = config.calls;
    let print = |label: &str, d: Duration| println!("  {label:<66} {:>9.3} µs", us(d));
    let print_p95 = |label: &str, s: &Stats| {
        println!(
            "  {label:<66} {:>9.3} µs  (p95 {:.3})",
            us(s.median),
            us(s.p95)
        )
    };

    // Per-call bookkeeping of every run.
    print(
        "task run id: Uuid from rand::random (thread-local rng) + to_string",
        per_op(200, 500, |_| {
            let id = uuid::Builder::from_random_bytes(rand::random::<[u8; 16]>()).into_uuid();
            std::hint::black_box(id.to_string());
        }),
    );
    print(
        "  (for comparison: Uuid::new_v4().to_string(), a getrandom call)",
        per_op(200, 500, |_| {
            std::hint::black_box(uuid::Uuid::new_v4().to_string());
        }),
    );
    print(
        "Instant::now() (timer overhead in every row)",
        per_op(200, 1000, |_| {
            std::hint::black_box(Instant::now());
        }),
    );
    print(
        "Utc::now() (the clock, read per lookup)",
        per_op(200, 1000, |_| {
            std::hint::black_box(chrono::Utc::now());
        }),
    );

    // The cache key: the static part is derived once per task and cloned per call.
    let mut base = KeyHasher::new();
    base.component_value("task", "add_one").unwrap();
    print(
        "hash_value(&x) for x: u64",
        per_op(200, 1000, |i| {
            std::hint::black_box(hash_value(&i).unwrap());
        }),
    );
    let key_time = per_op(200, 500, |i| {
        let mut key = base.clone();
        key.add_input("x", &i).unwrap();
        std::hint::black_box(key.finish().to_hex());
    });
    print(
        "key: clone static KeyHasher + add_input(x) + finish + to_hex",
        key_time,
    );
    println!(
        "  {:<66}",
        "  (the public KeyHasher path; the runner writes the same bytes straight into one \
         buffer, so its key costs less than this)"
    );
    print(
        "  of which: KeyHasher clone (one-entry BTreeMaps)",
        per_op(200, 1000, |_| {
            std::hint::black_box(base.clone());
        }),
    );
    print(
        "  of which: add_input(\"x\", &x) on a fresh KeyHasher",
        per_op(200, 1000, |i| {
            let mut key = KeyHasher::new();
            key.add_input("x", &i).unwrap();
            std::hint::black_box(key);
        }),
    );
    let mut full = base.clone();
    full.add_input("x", &7u64).unwrap();
    print(
        "  of which: finish() (canonical encoding of the two maps)",
        per_op(200, 1000, |_| {
            std::hint::black_box(full.finish());
        }),
    );
    let digest = full.finish();
    print(
        "  of which: Digest::to_hex",
        per_op(200, 1000, |_| {
            std::hint::black_box(digest.to_hex());
        }),
    );
    let local = ResultStore::local(dir.join("latency-local")).expect("a local store");
    // What the runner builds per call once it has the key: the key in hex, the record's
    // location and its copy in the run's record, the store URL's copy, the tier's key
    // (the URL shared, the digest copied).
    let url: Arc<str> = Arc::from(local.url());
    let location_time = per_op(200, 500, |i| {
        let mut hasher = KeyHasher::new();
        hasher.component_value("i", &i).unwrap();
        let digest = hasher.finish();
        let hex = digest.to_hex();
        let mut location = String::with_capacity(13 + 7 + hex.len());
        location.push_str("cache/v1/");
        location.push_str("default");
        location.push('/');
        location.push_str(&hex[..2]);
        location.push('/');
        location.push_str(&hex);
        let record = location.clone();
        let store = url.to_string();
        let tier_key = (url.clone(), digest);
        std::hint::black_box((hex, location, record, store, tier_key));
    })
    .saturating_sub(per_op(200, 500, |i| {
        let mut hasher = KeyHasher::new();
        hasher.component_value("i", &i).unwrap();
        std::hint::black_box(hasher.finish());
    }));
    print(
        "key hex + record location, its copy, store URL copy, tier key",
        location_time,
    );

    {
        let runs = Arc::new(AtomicU64::new(0));
        let task = add_one(&runs);
        let call = task.call(0);
        println!(
            "  {:<66} {:>9} bytes{}",
            "size of a task.call(x) future (moved as it is polled in)",
            std::mem::size_of_val(&call),
            if cfg!(feature = "s3") {
                " (s3 feature on)"
            } else {
                ""
            }
        );
    }

    // A record read on the local store, split into its parts. The record of x = 7,
    // written by section 1.
    let runs = Arc::new(AtomicU64::new(0));
    let probe = add_one(&runs)
        .result_storage(local.clone())
        .memory_tier(false);
    let location = location_of(&probe, 7).await;
    let path = dir.join("latency-local").join(&location);
    let key = Key::parse(&location).unwrap();
    let backend = LocalBackend::new(dir.join("latency-local")).unwrap();
    let s = per_op_async(n, |_| {
        let local = local.clone();
        let location = location.clone();
        async move {
            std::hint::black_box(local.read_record::<u64>(&location).await.unwrap());
        }
    })
    .await;
    let read_record = s.median;
    print_p95("local: ResultStore::read_record::<u64> (whole read)", &s);
    let s = per_op_async(n, |_| {
        let backend = backend.clone();
        let key = key.clone();
        async move {
            std::hint::black_box(backend.get(&key).await.unwrap());
        }
    })
    .await;
    print_p95(
        "  LocalBackend::get (spawn_blocking, open, fstat, read)",
        &s,
    );
    let s = per_op_async(n, |_| async {
        tokio::task::spawn_blocking(|| ()).await.unwrap();
    })
    .await;
    print_p95("    of which: spawn_blocking(|| ()) round trip alone", &s);
    let s = per_op_async(n, |_| {
        let path = path.clone();
        async move {
            std::hint::black_box(raw_read(&path).unwrap());
        }
    })
    .await;
    print_p95(
        "    of which: raw read of the file (O_NOATIME), on this thread",
        &s,
    );
    let bytes = backend.get(&key).await.unwrap();
    print(
        "  record::decode (magic, header JSON and its XXH3, payload BLAKE3, length)",
        per_op(200, 200, |_| {
            std::hint::black_box(cairn::record::decode(bytes.clone()).unwrap());
        }),
    );
    let (_, payload) = cairn::record::decode(bytes.clone()).unwrap();
    print(
        "  payload: serde_json::from_slice::<u64>",
        per_op(200, 1000, |_| {
            std::hint::black_box(serde_json::from_slice::<u64>(&payload).unwrap());
        }),
    );
    println!(
        "  (record on disk: {} bytes, of which payload {} bytes)",
        bytes.len(),
        payload.len()
    );
    // A miss on the local store: the lookup that finds nothing, then the publish.
    let record = bytes.clone();
    let calls = config.fsync_calls;
    let s = per_op_async(calls, |i| {
        let backend = backend.clone();
        async move {
            let key = Key::parse(format!("cache/v1/miss/{:02x}/absent-{i}", i % 256)).unwrap();
            assert!(backend.get(&key).await.is_err());
        }
    })
    .await;
    println!("  a local miss, step by step ({calls} calls each):");
    print_p95("  LocalBackend::get of an absent record (NotFound)", &s);
    for (label, fsync) in [
        ("  put_opts(Create) of the same record, fsync on", true),
        ("  put_opts(Create) of the same record, fsync off", false),
    ] {
        let backend = LocalBackend::new(dir.join(format!("miss-steps-{fsync}")))
            .unwrap()
            .with_fsync(fsync);
        let s = per_op_async(calls, |i| {
            let backend = backend.clone();
            let record = record.clone();
            async move {
                let key = Key::parse(format!("cache/v1/default/{:02x}/new-{i}", i % 256)).unwrap();
                backend
                    .put_opts(
                        &key,
                        record.into(),
                        cairn::backend::PutOptions {
                            mode: cairn::PutMode::Create,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
            }
        })
        .await;
        print_p95(label, &s);
    }
    // In the directories the fsync-off writes above went to: a file's creation costs
    // what its directory and block group make it cost.
    let raw_dir = dir.join("miss-steps-false").join("cache/v1/default");
    for i in 0..256 {
        std::fs::create_dir_all(raw_dir.join(format!("{i:02x}"))).unwrap();
    }
    let s = per_op_async(calls, |i| {
        let path = raw_dir.join(format!("{:02x}/raw-{i}", i % 256));
        let record = record.clone();
        async move { std::fs::write(path, &record).unwrap() }
    })
    .await;
    print_p95(
        "    baseline: std::fs::write of the same bytes there, no staging, no fsync",
        &s,
    );
    if let (Some(memory), Some(local_hit)) = (report.memory_hit, report.local_hit) {
        let rest = memory.median.saturating_sub(key_time + location_time);
        println!(
            "  so, of a memory-tier hit's median {:.2} µs (section 1):",
            us(memory.median)
        );
        println!(
            "    cache key {:.2} µs + location/tier key {:.2} µs + the rest {:.2} µs (run id, \
             TaskRunInfo and its copy into the flow run, states, tier lookup, clock)",
            us(key_time),
            us(location_time),
            us(rest)
        );
        println!(
            "  and of a local-store hit's median {:.2} µs: the same runner work plus \
             read_record {:.2} µs, other {:.2} µs",
            us(local_hit.median),
            us(read_record),
            us(local_hit.median.saturating_sub(memory.median + read_record))
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------
// 2. Hit latency as the store grows

/// The store sizes of the scaling section: 1k, 10k, 100k, ... up to `max` (and `max`
/// itself when it is not one of them).
fn entry_counts(max: u64) -> Vec<u64> {
    let max = max.max(1_000);
    let mut sizes: Vec<u64> = std::iter::successors(Some(1_000u64), |n| n.checked_mul(10))
        .take_while(|&n| n <= max)
        .collect();
    if sizes.last() != Some(&max) {
        sizes.push(max);
    }
    sizes
}

/// `1k`, `10k`, `1M`: an entry count as the rows name it.
fn short_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// Writes the entries `range` through `task` (each a miss that runs the body and writes
/// its record), on `workers` tokio tasks of `concurrency` calls at a time each, and
/// returns each input's record location (relative to the store's root), by input.
async fn fill(
    task: &Task<u64, u64>,
    range: std::ops::Range<u64>,
    workers: u64,
    concurrency: usize,
) -> Vec<(u64, String)> {
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let task = task.clone();
            let inputs: Vec<u64> = range
                .clone()
                .skip(w as usize)
                .step_by(workers as usize)
                .collect();
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(inputs.len());
                for chunk in inputs.chunks(concurrency.max(1)) {
                    for (run, &x) in task.map(chunk.iter().copied()).await.into_iter().zip(chunk) {
                        let record = run
                            .info()
                            .cache_record()
                            .map(str::to_owned)
                            .expect("a cached run names its record");
                        run.into_result().expect("a filling call");
                        out.push((x, record));
                    }
                }
                out
            })
        })
        .collect();
    let mut all = Vec::with_capacity((range.end - range.start) as usize);
    for h in handles {
        all.extend(h.await.expect("a filling worker"));
    }
    all
}

/// Raw reads ([`raw_read`]: open, fstat, read, close) of the given files, each timed
/// alone.
fn time_raw_reads(paths: &[&Path]) -> Vec<Duration> {
    paths
        .iter()
        .map(|p| {
            let t = Instant::now();
            let bytes = raw_read(p).expect("a record file");
            let elapsed = t.elapsed();
            std::hint::black_box(bytes);
            elapsed
        })
        .collect()
}

/// Writes out the filesystem holding `path` (`sync -f`); a failure is printed, not fatal.
fn sync_fs(path: &Path) {
    match std::process::Command::new("sync")
        .arg("-f")
        .arg(path)
        .status()
    {
        Ok(s) if s.success() => {}
        other => println!("  (sync -f {} failed: {other:?})", path.display()),
    }
}

/// The regular files below `dir` (none when it does not exist).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(t) if t.is_file() => files.push(e.path()),
                _ => {}
            }
        }
    }
    files
}

/// How many regular files are below `dir` (0 when it does not exist).
fn count_files(dir: &Path) -> usize {
    files_below(dir).len()
}

/// Removes `root` and everything below it, unlinking the files of its directories on
/// several threads: a million small files take minutes to unlink one by one where the
/// disk discards every freed block.
fn remove_tree(root: &Path) {
    let mut dirs = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
        dirs.push(d);
    }
    let queue = std::sync::Mutex::new(dirs);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| loop {
                let Some(d) = queue.lock().unwrap().pop() else {
                    break;
                };
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| !t.is_dir()) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            });
        }
    });
    // Only empty directories are left.
    if let Err(e) = std::fs::remove_dir_all(root) {
        println!("  (could not remove {}: {e})", root.display());
    }
}

/// One row of the scaling table, its timings gathered over several rounds.
struct ScalingRow {
    label: &'static str,
    times: Vec<Duration>,
}

async fn scaling(config: &Config, dir: &Path, report: &mut Report) {
    // Rounds of each row, taken in turn, so that a change in the machine's load touches
    // the rows alike.
    const ROUNDS: usize = 5;
    let max = env_usize("CAIRN_BENCH_MAX_ENTRIES", 100_000) as u64;
    let sizes = entry_counts(max);
    let names: Vec<String> = sizes.iter().map(|&n| short_count(n)).collect();
    println!(
        "2. Hit latency with {} entries in a local store (random keys among them; {} hits \
         per figure, in a flow, in {ROUNDS} rounds taken in turn; CAIRN_BENCH_MAX_ENTRIES={max})",
        names.join(", "),
        config.calls
    );
    let root = dir.join("scaling");
    // Entries are written by the same task and policy through a store on the same
    // directory without fsync (only to fill faster); the readers open it normally.
    let writer_store = ResultStore::new(
        LocalBackend::new(&root)
            .expect("a local backend")
            .with_fsync(false),
    );
    let reader_store = ResultStore::local(&root).expect("a local store");
    assert_eq!(
        writer_store.backend().describe(),
        reader_store.backend().describe()
    );
    let runs = Arc::new(AtomicU64::new(0));
    // The writer keeps the memory tier on: the tier rows find every entry held, as
    // after a process wrote them.
    let writer = add_one(&runs).result_storage(writer_store);
    let tier_off = add_one(&runs)
        .result_storage(reader_store.clone())
        .memory_tier(false);
    let tier_on = add_one(&runs).result_storage(reader_store.clone());
    // The same tier, trusted for longer than the run: no entry is ever revalidated, so
    // the row shows the tier's own lookup as it grows.
    let tier_trusted = add_one(&runs)
        .result_storage(reader_store)
        .memory_tier_revalidate_after(Duration::from_secs(24 * 3600));
    // Hits two days after the records were written, as on a store whose records are
    // older than a day: each is its record's first of the day and writes a use marker
    // in the background (a hit within a day of the record's creation writes none).
    let two_days_on: Arc<dyn cairn::Clock> = Arc::new(cairn::ManualClock::new(
        chrono::Utc::now() + chrono::TimeDelta::days(2),
    ));
    MemoryTier::global().clear();
    println!(
        "  raw = a raw read (open with O_NOATIME, as cairn's, fstat, read, close) of the record file of a random \
         entry; tier on = the default trust bound of 1 s, after which a hit `stat`s the \
         record; tier trusted = never revalidated; records 2 days old = tier off, the \
         flow's clock two days on, so that each hit writes its record's use marker \
         (timed after the other rows, whose hits write none)"
    );
    print_header();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get() as u64);
    let mut records: Vec<PathBuf> = Vec::new();
    // Medians and p95 by row, one per size.
    let mut table: Vec<(&'static str, Vec<Stats>)> = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let present = records.len() as u64;
        let t = Instant::now();
        let mut written = fill(&writer, present..size, workers, 64).await;
        let fill_time = t.elapsed();
        written.sort_unstable_by_key(|(x, _)| *x);
        for (x, location) in written {
            assert_eq!(x, records.len() as u64, "one record per input, in order");
            records.push(root.join(location));
        }
        // The fill wrote without fsync: write it out now, so that the kernel's writeback
        // of it does not run during the timed rows.
        let t = Instant::now();
        sync_fs(&root);
        let synced = t.elapsed();
        let markers_before = count_files(&root.join("used"));
        let before = runs.load(Ordering::Relaxed);
        // Warm-up of each row (not timed).
        let warm = random_inputs(size, config.warmup, 3);
        time_calls_in_flow(&tier_off, &warm).await;
        time_calls_in_flow(&tier_on, &warm).await;
        time_calls_in_flow(&tier_trusted, &warm).await;
        let warm_paths: Vec<&Path> = warm
            .iter()
            .map(|&x| records[x as usize].as_path())
            .collect();
        time_raw_reads(&warm_paths);

        let mut rows = [
            ScalingRow {
                label: "raw read",
                times: Vec::new(),
            },
            ScalingRow {
                label: "memory tier off",
                times: Vec::new(),
            },
            ScalingRow {
                label: "memory tier on",
                times: Vec::new(),
            },
            ScalingRow {
                label: "memory tier trusted",
                times: Vec::new(),
            },
            ScalingRow {
                label: "tier off, records 2 days old",
                times: Vec::new(),
            },
        ];
        let per_round = (config.calls / ROUNDS).max(1);
        for round in 0..ROUNDS as u64 {
            let seed = 5 + 4 * round;
            let raw_inputs = random_inputs(size, per_round, seed);
            let paths: Vec<&Path> = raw_inputs
                .iter()
                .map(|&x| records[x as usize].as_path())
                .collect();
            rows[0].times.extend(time_raw_reads(&paths));
            rows[1].times.extend(
                time_calls_in_flow(&tier_off, &random_inputs(size, per_round, seed + 1)).await,
            );
            rows[2].times.extend(
                time_calls_in_flow(&tier_on, &random_inputs(size, per_round, seed + 2)).await,
            );
            rows[3].times.extend(
                time_calls_in_flow(&tier_trusted, &random_inputs(size, per_round, seed + 3)).await,
            );
        }
        let markers_of_rows = count_files(&root.join("used")) - markers_before;
        // The marker writes run in the background: these rows come after the others.
        for round in 0..ROUNDS as u64 {
            // Seeds of their own: the other rows' records are warm in the kernel's caches.
            let inputs = random_inputs(size, per_round, 10_007 + 4 * round);
            rows[4]
                .times
                .extend(time_calls_in_flow_at(&tier_off, &inputs, Some(two_days_on.clone())).await);
        }
        let ran = runs.load(Ordering::Relaxed) - before;
        if ran != 0 {
            println!("  !! the body ran {ran} times during hit rows");
        }
        let held = MemoryTier::global().len();
        for (j, row) in rows.into_iter().enumerate() {
            let s = stats(row.times);
            let label = match j {
                0 => format!("{:>5} entries, raw read of a record file", names[i]),
                1 => format!("{:>5} entries, memory tier off (store read)", names[i]),
                2 => format!("{:>5} entries, memory tier on ({held} held)", names[i]),
                3 => format!("{:>5} entries, memory tier on, trusted", names[i]),
                _ => format!("{:>5} entries, tier off, records 2 days old", names[i]),
            };
            print_row(&label, &s);
            if table.len() <= j {
                table.push((row.label, Vec::new()));
            }
            table[j].1.push(s);
        }
        let filled = size - present;
        println!(
            "  {:<52} (filled {filled} entries in {:.1} s, {:.0} entries/s, synced in {:.1} s; load {}; \
             {} names in the kernel's dentry cache)",
            "",
            fill_time.as_secs_f64(),
            filled as f64 / fill_time.as_secs_f64(),
            synced.as_secs_f64(),
            loadavg(),
            dentries()
        );
        // A hit read from the store marks the record used, once a day per record and
        // process (`used/v1/...`, written in the background) unless the record was
        // written less than a day before: the rows of fresh records write none, and
        // with many entries most hits on 2-day-old records are a record's first of the
        // day, and write one. Counted once the background writes have settled.
        let mut markers = count_files(&root.join("used"));
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = count_files(&root.join("used"));
            if now == markers {
                break;
            }
            markers = now;
        }
        println!(
            "  {:<52} (use markers written: {markers_of_rows} by the fresh records' rows, {} by \
             the rows of 2-day-old records)",
            "",
            markers - markers_before - markers_of_rows
        );
    }
    let t = Instant::now();
    remove_tree(&root);
    println!(
        "  (removed the store in {:.1} s; load {})",
        t.elapsed().as_secs_f64(),
        loadavg()
    );
    if sizes.len() > 1 {
        let span = format!("{}/{}", names[names.len() - 1], names[0]);
        let ratio = |v: &[Stats]| {
            let (first, last) = (v[0], v[v.len() - 1]);
            (
                last.median.as_secs_f64() / first.median.as_secs_f64(),
                last.p95.as_secs_f64() / first.p95.as_secs_f64(),
            )
        };
        let (raw_median, raw_p95) = ratio(&table[0].1);
        for (label, v) in &table {
            let (median, p95) = ratio(v);
            println!("  ratio {span}, {label}: median x{median:.2}, p95 x{p95:.2}");
        }
        // What a store hit adds to the raw read of its record file, at the smallest and
        // the largest size: the part that is cairn's own (the filesystem's growth is
        // the raw row's).
        let raw = &table[0].1;
        for (label, v) in &table[1..] {
            if !label.contains("tier off") {
                continue;
            }
            let part = |i: usize| v[i].median.as_secs_f64() - raw[i].median.as_secs_f64();
            let (first, last) = (part(0), part(v.len() - 1));
            println!(
                "  {label}: a hit's median minus the raw read's, {} {:.2} µs, {} {:.2} µs (x{:.2})",
                names[0],
                first * 1e6,
                names[names.len() - 1],
                last * 1e6,
                last / first
            );
        }
        for (label, v) in &table[1..] {
            let (median, p95) = ratio(v);
            report.flatness.push(FlatRow {
                label: (*label).to_owned(),
                span: span.clone(),
                median,
                p95,
                raw_median,
                raw_p95,
            });
        }
    }
    println!();
}

// ---------------------------------------------------------------------------------
// 3. A flow of 1,000 cached calls

async fn flow_of(task: &Task<u64, u64>, calls: u64) -> Duration {
    let t = Instant::now();
    let run = Flow::new("bench-flow")
        .run((), |_| async move {
            for x in 0..calls {
                task.call(x).await?;
            }
            Ok(())
        })
        .await;
    let elapsed = t.elapsed();
    run.into_result().expect("the flow run");
    elapsed
}

async fn flows(config: &Config, dir: &Path, report: &mut Report) {
    const CALLS: u64 = 1000;
    println!(
        "3. Flow::run of 1,000 sequential cached calls, wall-clock, median of {} runs \
         after a first run filled the cache",
        config.flow_reps
    );
    let runs = Arc::new(AtomicU64::new(0));
    let local = ResultStore::local(dir.join("flow-local")).expect("a local store");
    let cases = [
        (
            "memory tier",
            Task::new("flow_add_one", |x: u64| async move {
                Ok::<_, Infallible>(x + 1)
            })
            .inputs(["x"])
            .cache_policy(INPUTS),
        ),
        (
            "local store, memory tier off",
            Task::new("flow_add_one", |x: u64| async move {
                Ok::<_, Infallible>(x + 1)
            })
            .inputs(["x"])
            .cache_policy(INPUTS)
            .result_storage(local.clone())
            .memory_tier(false),
        ),
        (
            "local store, memory tier on",
            add_one(&runs).result_storage(ResultStore::local(dir.join("flow-local-tier")).unwrap()),
        ),
    ];
    println!(
        "  {:<34} {:>14} {:>10} {:>10} {:>10} {:>12}",
        "", "first run ms", "median ms", "min ms", "max ms", "per call µs"
    );
    for (label, task) in &cases {
        let first = flow_of(task, CALLS).await;
        let mut times = Vec::new();
        for _ in 0..config.flow_reps {
            times.push(flow_of(task, CALLS).await);
        }
        let min = *times.iter().min().unwrap();
        let max = *times.iter().max().unwrap();
        let s = stats(times);
        println!(
            "  {label:<34} {:>14.2} {:>10.2} {:>10.2} {:>10.2} {:>12.2}",
            ms(first),
            ms(s.median),
            ms(min),
            ms(max),
            us(s.median) / CALLS as f64
        );
        if *label != "local store, memory tier on" {
            report.flows.push(((*label).to_owned(), s.median));
        }
    }
    println!("  (first run: 1,000 misses, each writing a record; local store with fsync)");
    println!();
}

// ---------------------------------------------------------------------------------
// 4. Hashing a large input

fn data(size: usize) -> Bytes {
    let mut v = vec![0u8; size];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    Bytes::from(v)
}

fn hashing(config: &Config, rt: &tokio::runtime::Runtime, report: &mut Report) {
    let size = config.big;
    let gib = size as f64 / GIB as f64;
    println!(
        "4. Hashing a {} MiB bytes::Bytes input, median of {} runs (CAIRN_BENCH_BIG=0 for 256 MiB)",
        size / MIB,
        config.hash_reps
    );
    let value = data(size);
    // A whole task call whose only input is the large value: a hit costs the hashing.
    let task = Task::new("byte_len", |data: Bytes| async move {
        Ok::<_, Infallible>(data.len() as u64)
    })
    .inputs(["data"])
    .cache_policy(INPUTS);
    let t = Instant::now();
    rt.block_on(task.call(value.clone())).expect("a call");
    let miss = t.elapsed();

    // The four are run in turn, round after round, so that a change in the machine's
    // load touches them alike; one round first as warm-up (rayon's pool, page faults).
    type Way<'a> = (&'static str, Box<dyn FnMut() + 'a>);
    let mut ways: Vec<Way> = vec![
        (
            "raw blake3::Hasher::update_rayon",
            Box::new(|| {
                let mut h = blake3::Hasher::new();
                h.update_rayon(&value);
                std::hint::black_box(h.finalize());
            }),
        ),
        (
            "cairn::hashing::hash_value(&Bytes)",
            Box::new(|| {
                std::hint::black_box(hash_value(&value).unwrap());
            }),
        ),
        (
            "KeyHasher::add_input(\"data\", &Bytes) + finish",
            Box::new(|| {
                let mut key = KeyHasher::new();
                key.add_input("data", &value).unwrap();
                std::hint::black_box(key.finish());
            }),
        ),
        (
            "task call with it as input, memory-tier hit",
            Box::new(|| {
                std::hint::black_box(rt.block_on(task.call(value.clone())).expect("a call"));
            }),
        ),
    ];
    let mut times = vec![Vec::new(); ways.len()];
    for round in 0..=config.hash_reps {
        for (i, (_, f)) in ways.iter_mut().enumerate() {
            let t = Instant::now();
            f();
            if round > 0 {
                times[i].push(t.elapsed());
            }
        }
    }
    let medians: Vec<Duration> = times.into_iter().map(|t| stats(t).median).collect();
    let gibps = |d: Duration| gib / d.as_secs_f64();
    let raw = medians[0];
    report.raw_blake3_gibps = gibps(raw);
    for (i, ((label, _), d)) in ways.iter().zip(&medians).enumerate() {
        let ratio = raw.as_secs_f64() / d.as_secs_f64();
        println!(
            "  {label:<52} {:>9.1} ms {:>7.2} GiB/s   ratio {ratio:.2}",
            ms(*d),
            gibps(*d)
        );
        if i > 0 {
            report.hashing.push(((*label).to_owned(), gibps(*d), ratio));
        }
    }
    println!(
        "  {:<52} {:>9.1} ms",
        "  the same task, first call (miss + persist of the u64)",
        ms(miss)
    );
    println!();
}

// ---------------------------------------------------------------------------------
// Profiling mode

/// Misses of `task` for `secs`, in flows of 1,000 calls, each call a new input.
async fn profile_misses(case: &str, task: &Task<u64, u64>, secs: Duration) {
    let start = Instant::now();
    let cpu = cpu_times();
    let mut next = 1u64 << 40;
    while start.elapsed() < secs {
        let inputs: Vec<u64> = (next..next + 1000).collect();
        next += 1000;
        time_calls_in_flow(task, &inputs).await;
    }
    report_profile(case, next - (1 << 40), start, cpu);
}

async fn profile(case: &str, secs: Duration, dir: &Path) {
    let runs = Arc::new(AtomicU64::new(0));
    let task = match case {
        "memory-hit" | "flow-memory" => add_one(&runs),
        "memory-hit-spread" => {
            // Memory-tier hits on 100,000 entries taken in turn, trusted for the whole
            // run (no store is asked): no key is in the thread's key memo (4,096
            // keys), so each hit derives its key.
            let task = add_one(&runs).memory_tier_revalidate_after(Duration::from_secs(24 * 3600));
            populate(&task, 0..100_000, 64).await;
            let start = Instant::now();
            let cpu = cpu_times();
            let mut calls = 0u64;
            while start.elapsed() < secs {
                time_calls_in_flow(&task, &cycling(100_000, 100_000)).await;
                calls += 100_000;
            }
            return report_profile(case, calls, start, cpu);
        }
        "local-hit" => return profile_local_hits(&runs, secs, dir).await,
        "flow-local" => add_one(&runs)
            .result_storage(ResultStore::local(dir.join("profile")).unwrap())
            .memory_tier(false),
        "flow-local-tier" => {
            add_one(&runs).result_storage(ResultStore::local(dir.join("profile")).unwrap())
        }
        "memory-miss" => {
            // Misses on the memory store (tier on): each call a new input, no disk.
            let task = add_one(&runs).result_storage(ResultStore::memory());
            return profile_misses(case, &task, secs).await;
        }
        "local-miss" => {
            // Misses without fsync: each call a new input, a record written.
            let store = ResultStore::new(
                LocalBackend::new(dir.join("profile-miss"))
                    .unwrap()
                    .with_fsync(false),
            );
            let task = add_one(&runs).result_storage(store).memory_tier(false);
            return profile_misses(case, &task, secs).await;
        }
        other => {
            eprintln!(
                "unknown CAIRN_BENCH_PROFILE={other}: memory-hit, memory-hit-spread, local-hit, flow-memory, flow-local, flow-local-tier, local-miss, memory-miss"
            );
            return;
        }
    };
    populate(&task, 0..1000, 16).await;
    let start = Instant::now();
    let cpu = cpu_times();
    let mut calls = 0u64;
    let flows = case.starts_with("flow");
    while start.elapsed() < secs {
        if flows {
            flow_of(&task, 1000).await;
        } else {
            time_calls_in_flow(&task, &cycling(1000, 10_000)).await;
        }
        calls += if flows { 1000 } else { 10_000 };
    }
    report_profile(case, calls, start, cpu);
}

/// `local-hit`: hits with the memory tier off on `CAIRN_BENCH_PROFILE_ENTRIES` records
/// (default 1,000; written without fsync, then synced), then the baseline of the same
/// records, a raw read + BLAKE3, for as long and in the same split. Run it under
/// `perf record` at 1k and at 1M to see where a hit's growth with the store goes.
async fn profile_local_hits(runs: &Arc<AtomicU64>, secs: Duration, dir: &Path) {
    let entries = env_usize("CAIRN_BENCH_PROFILE_ENTRIES", 1000).max(1) as u64;
    let root = dir.join("profile");
    let writer = ResultStore::new(
        LocalBackend::new(&root)
            .expect("a local backend")
            .with_fsync(false),
    );
    populate(&add_one(runs).result_storage(writer), 0..entries, 64).await;
    sync_fs(&root);
    let task = add_one(runs)
        .result_storage(ResultStore::local(&root).expect("a local store"))
        .memory_tier(false);
    eprintln!("local-hit: {entries} records, random keys among them");
    let before = runs.load(Ordering::Relaxed);
    let mut seed = 1u64;
    // One pass over a sample first, so that both loops start from the same caches.
    time_calls_in_flow(&task, &random_inputs(entries, 10_000, 99)).await;
    let start = Instant::now();
    let cpu = cpu_times();
    let mut calls = 0u64;
    while start.elapsed() < secs {
        seed += 2;
        time_calls_in_flow(&task, &random_inputs(entries, 10_000, seed)).await;
        calls += 10_000;
    }
    report_profile("local-hit", calls, start, cpu);
    assert_eq!(runs.load(Ordering::Relaxed), before, "a hit ran the body");

    // The baseline of the same records: a raw read + BLAKE3, in the same split.
    let mut paths = files_below(&root.join("cache"));
    paths.sort();
    let start = Instant::now();
    let cpu = cpu_times();
    let mut reads = 0u64;
    while start.elapsed() < secs {
        seed += 2;
        for i in random_inputs(paths.len() as u64, 10_000, seed) {
            let bytes = raw_read(&paths[i as usize]).expect("a record file");
            std::hint::black_box(blake3::hash(&bytes));
        }
        reads += 10_000;
    }
    report_profile(
        "baseline: raw read (O_NOATIME) + BLAKE3 of the same files",
        reads,
        start,
        cpu,
    );
}

/// Prints a profiling loop's calls per second and, where the system tells, its CPU
/// time per call in user space and in the kernel (the process's, from `/proc/self/stat`
/// in ticks of 10 ms: over seconds, precise to a fraction of a percent).
fn report_profile(what: &str, calls: u64, start: Instant, cpu: Option<(f64, f64)>) {
    let wall = start.elapsed();
    let split = match (cpu, cpu_times()) {
        (Some((u0, s0)), Some((u1, s1))) => format!(
            "; CPU per call: user {:.2} µs, system {:.2} µs",
            (u1 - u0) * 1e6 / calls as f64,
            (s1 - s0) * 1e6 / calls as f64
        ),
        _ => String::new(),
    };
    eprintln!(
        "{what}: {calls} calls in {:.1} s, {:.2} µs per call{split}",
        wall.as_secs_f64(),
        us(wall) / calls as f64
    );
}

/// The process's user and system CPU time so far, in seconds (Linux: fields 14 and 15
/// of `/proc/self/stat`, in clock ticks of 1/100 s); `None` elsewhere.
fn cpu_times() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) start with field 3.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = |i: usize| -> Option<f64> { Some(fields.get(i - 3)?.parse::<f64>().ok()? / 100.0) };
    Some((ticks(14)?, ticks(15)?))
}

/// `serialize` across processes: what the lease costs on an uncontended miss, next to
/// the same miss without it; and how soon a waiter returns once the holder published.
async fn serialize(config: &Config, dir: &Path) {
    println!("serialize: leases in the store (uncontended misses, then holder → waiter)");
    print_header();
    let calls = (config.calls / 40).max(50);
    let mut stores = vec![(
        "local",
        ResultStore::local(dir.join("serialize-local")).expect("a local store"),
    )];
    match s3_store().await {
        Ok((store, _)) => stores.push(("S3 (LocalStack)", store)),
        Err(e) => println!("  S3 skipped: {e}"),
    }
    for (name, store) in &stores {
        let runs = Arc::new(AtomicU64::new(0));
        let plain = add_one(&runs).result(store.clone()).memory_tier(false);
        let leased = plain.clone().serialize(true);
        // Alternate the two rows in rounds, so that both see the same noise.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..5u64 {
            let first = 1_000_000 * (round + 1);
            a.push(miss_row(&plain, &runs, first, calls / 5).await.median);
            b.push(
                miss_row(&leased, &runs, first + 500_000, calls / 5)
                    .await
                    .median,
            );
        }
        let (a, b) = (stats(a), stats(b));
        print_row(&format!("{name}: miss + persist (median of 5 rounds)"), &a);
        print_row(&format!("{name}: miss + persist + lease (serialize)"), &b);
        println!(
            "  {:<66} {:>9.2}x",
            "  lease overhead on an uncontended miss",
            b.median.as_secs_f64() / a.median.as_secs_f64()
        );
    }
    // A holder and a waiter that share nothing in this process (the waiter opens the
    // store through another path, so neither the in-process lock nor the memory tier
    // joins them): the waiter returns by polling the store, as in another process.
    let holder_dir = dir.join("serialize-pair");
    std::fs::create_dir_all(&holder_dir).expect("a directory");
    let alias = dir.join("serialize-pair-alias");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&holder_dir, &alias).expect("a symlink");
    let runs = Arc::new(AtomicU64::new(0));
    let slow = |store: ResultStore| {
        let runs = runs.clone();
        Task::new("slow", move |x: u64| {
            runs.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, Infallible>(x + 1)
            }
        })
        .inputs(["x"])
        .cache_policy(INPUTS)
        .result(store)
        .memory_tier(false)
        .serialize(true)
    };
    let holder = slow(ResultStore::local(&holder_dir).expect("a store"));
    let waiter = slow(ResultStore::local(&alias).expect("a store"));
    let mut gaps = Vec::new();
    for x in 0..20u64 {
        let h = async {
            holder.call(x).await.expect("the holder");
            Instant::now()
        };
        let w = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waiter.call(x).await.expect("the waiter");
            Instant::now()
        };
        let (h, w) = futures::join!(h, w);
        gaps.push(w.saturating_duration_since(h));
    }
    print_row(
        "local: holder returns → waiter returns (20 keys)",
        &stats(gaps),
    );
    println!(
        "  bodies run: {} for 20 keys (each once: the waiters took the holders' records)",
        runs.load(Ordering::Relaxed)
    );
    println!();
}

/// The environment variable that makes this binary a shared-map worker (its value is
/// the store's directory).
const SHARED_MAP_WORKER: &str = "CAIRN_BENCH_SHARED_MAP_WORKER";
const SHARED_MAP_ITEMS: u64 = 40;
const SHARED_MAP_ITEM_MS: u64 = 250;

/// `Task::map_shared` across worker processes: the wall time of one 40-item map with
/// 1, 2 and 4 workers. Each item sleeps (the work does not need a core), so the
/// figure shows how the leases split the map, not how many cores the machine has.
fn shared_map(dir: &Path) {
    println!(
        "shared_map: {SHARED_MAP_ITEMS} items of {SHARED_MAP_ITEM_MS} ms split between worker processes (local store)"
    );
    let exe = std::env::current_exe().expect("this binary");
    let ideal = Duration::from_millis(SHARED_MAP_ITEMS * SHARED_MAP_ITEM_MS);
    let mut one = None;
    for workers in [1usize, 2, 4] {
        let store = dir.join(format!("shared-map-{workers}"));
        let started = Instant::now();
        let children: Vec<_> = (0..workers)
            .map(|_| {
                std::process::Command::new(&exe)
                    .env(SHARED_MAP_WORKER, &store)
                    .env("CAIRN_RUN_ID", format!("bench-{workers}"))
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("a worker process")
            })
            .collect();
        let mut ran = 0;
        for child in children {
            let out = child.wait_with_output().expect("a worker");
            assert!(out.status.success(), "a shared-map worker failed");
            ran += String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .expect("the worker prints how many items it ran");
        }
        let wall = started.elapsed();
        let base = *one.get_or_insert(wall);
        println!(
            "  {workers} worker(s): {:>7.2} s wall, {ran} bodies run in all, {:.2}x faster than 1 worker, {:.2}x the ideal {:.2} s",
            wall.as_secs_f64(),
            base.as_secs_f64() / wall.as_secs_f64(),
            wall.as_secs_f64() / (ideal.as_secs_f64() / workers as f64),
            ideal.as_secs_f64() / workers as f64,
        );
    }
    println!();
}

/// One worker: runs the shared map and prints how many item bodies ran here.
async fn shared_map_worker(dir: &Path) {
    let ran = Arc::new(AtomicU64::new(0));
    let counter = ran.clone();
    let task = Task::new("sleepy", move |x: u64| {
        counter.fetch_add(1, Ordering::Relaxed);
        async move {
            tokio::time::sleep(Duration::from_millis(SHARED_MAP_ITEM_MS)).await;
            Ok::<_, Infallible>(x * 2)
        }
    })
    .inputs(["x"])
    .cache_policy(INPUTS)
    .result(ResultStore::local(dir).expect("a local store"));
    let run = Flow::new("bench-shared-map")
        .run((), |_| async {
            let runs = task.map_shared(0..SHARED_MAP_ITEMS).await;
            let values: Vec<u64> = runs
                .into_iter()
                .map(|r| r.into_result())
                .collect::<Result<_, _>>()?;
            Ok(values)
        })
        .await;
    let values = run.into_result().expect("the shared map");
    assert_eq!(
        values,
        (0..SHARED_MAP_ITEMS).map(|x| x * 2).collect::<Vec<_>>()
    );
    println!("{}", ran.load(Ordering::Relaxed));
}
