//! cairn's side of the side-by-side run against joblib, flytekit and Prefect
//! (`./localstack/bench peers`, driven by `benches/peers/driver.py`).
//!
//! Each invocation runs one workload on a local store in the directory it is given and
//! prints its figures as JSON lines on stdout (times in microseconds), so that the driver
//! can run the same workload on cairn and on each peer, alternating, in one run:
//!
//! ```text
//! peers hit        --dir D --keys 1000 --calls 2000 [--memory-tier]   trivial-task hits, in process
//! peers populate   --dir D --from 0 --to 1000                         fills the cache (untimed)
//! peers fresh-hit  --dir D --x 7                                       the first call of a new process
//! peers miss       --dir D --first 1000000 --calls 300                 miss + persist
//! peers big-persist --dir D --x 1 --mb 100 [--serializer bytes|default] [--no-fsync]
//! peers big-load   --dir D --x 1 --mb 100 [--serializer bytes|default] (run in a fresh process)
//! peers scale      --dir D --from 1000 --to 10000 --calls 2000         fills up to N entries, then hits
//! peers flow       --dir D --calls 1000 --reps 5 [--memory-tier]       a fully cached flow, wall-clock
//! ```
//!
//! The task is `add_one(x: u64) -> u64`, cached by its input (`INPUTS`) on
//! `ResultStore::local(D)` with the memory tier off (every hit reads the record from the
//! disk, as joblib's and the others' do), unless `--memory-tier` is given. The large value
//! is a 100 MB `bytes::Bytes` returned by a task `big(x: u64)`. The local store syncs
//! each record (file, then directory) before it counts as written: its default.
//! `--no-fsync` writes as the peers do (atomically published, not synced).
//!
//! Every timed call checks what it measured: hits run no body, misses one each, and a
//! loaded value has the length it was written with. A failed check is reported in the
//! JSON (`"ok": false` with the reason) and the process exits non-zero.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::cache::INPUTS;
use cairn::{Flow, ResultStore, Serializer, Task};

const MB: usize = 1_000_000;

const WORKLOADS: [&str; 8] = [
    "hit",
    "populate",
    "fresh-hit",
    "miss",
    "big-persist",
    "big-load",
    "scale",
    "flow",
];

fn main() {
    let started = Instant::now();
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_default();
    let mut opts: HashMap<String, String> = HashMap::new();
    let mut flags: Vec<String> = Vec::new();
    let rest: Vec<String> = args.collect();
    let mut i = 0;
    while i < rest.len() {
        let name = rest[i].trim_start_matches("--").to_owned();
        match rest.get(i + 1) {
            Some(v) if !v.starts_with("--") => {
                opts.insert(name, v.clone());
                i += 2;
            }
            _ => {
                flags.push(name);
                i += 1;
            }
        }
    }
    let dir = match opts.get("dir") {
        Some(d) => PathBuf::from(d),
        None if !WORKLOADS.contains(&workload.as_str()) => {
            // `cargo bench` runs every bench target with `--bench`: nothing to do alone.
            println!("peers: run through ./localstack/bench peers (benches/peers/driver.py)");
            return;
        }
        None => fail(&workload, "--dir is required"),
    };
    let num = |name: &str, default: u64| -> u64 {
        opts.get(name)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| fail(&workload, &format!("--{name} {v}: not a number")))
            })
            .unwrap_or(default)
    };
    let memory_tier = flags.iter().any(|f| f == "memory-tier");
    let serializer = match opts.get("serializer").map(String::as_str) {
        None | Some("bytes") => Some(Serializer::BYTES),
        Some("default") => None,
        Some(other) => fail(
            &workload,
            &format!("--serializer {other}: bytes or default"),
        ),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let bench = Bench {
        workload: workload.clone(),
        store: if flags.iter().any(|f| f == "no-fsync") {
            // As the peers write: published atomically, not synced.
            cairn::backend::LocalBackend::new(&dir).map(|b| ResultStore::new(b.with_fsync(false)))
        } else {
            ResultStore::local(&dir)
        }
        .unwrap_or_else(|e| fail(&workload, &format!("{}: {e}", dir.display()))),
        dir,
        memory_tier,
        runs: Arc::new(AtomicU64::new(0)),
    };
    rt.block_on(async {
        match workload.as_str() {
            "hit" => bench.hit(num("keys", 1000), num("calls", 2000)).await,
            "populate" => bench.populate(num("from", 0), num("to", 1000)).await,
            "fresh-hit" => bench.fresh_hit(started, num("x", 7)).await,
            "miss" => bench.miss(num("first", 1 << 40), num("calls", 300)).await,
            "big-persist" => {
                bench
                    .big_persist(num("x", 1), num("mb", 100) as usize * MB, serializer)
                    .await
            }
            "big-load" => {
                bench
                    .big_load(
                        started,
                        num("x", 1),
                        num("mb", 100) as usize * MB,
                        serializer,
                    )
                    .await
            }
            "scale" => {
                bench
                    .scale(num("from", 0), num("to", 1000), num("calls", 2000))
                    .await
            }
            "flow" => bench.flow(num("calls", 1000), num("reps", 5)).await,
            other => fail(other, "unknown workload"),
        }
    });
}

/// Prints a failure as a JSON line and exits.
fn fail(workload: &str, reason: &str) -> ! {
    println!(
        "{}",
        serde_json::json!({"tool": "cairn", "workload": workload, "ok": false, "error": reason})
    );
    std::process::exit(1)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Bench {
    workload: String,
    dir: PathBuf,
    store: ResultStore,
    memory_tier: bool,
    runs: Arc<AtomicU64>,
}

impl Bench {
    /// `add_one(x) = x + 1`, cached by `x` on the local store.
    fn add_one(&self) -> Task<u64, u64> {
        let runs = self.runs.clone();
        Task::new("add_one", move |x: u64| {
            runs.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<_, Infallible>(x + 1) }
        })
        .inputs(["x"])
        .cache_policy(INPUTS)
        .result_storage(self.store.clone())
        .memory_tier(self.memory_tier)
    }

    /// `big(x)`: a `len`-byte `Bytes` value (the same buffer each time), cached by `x`.
    fn big(&self, len: usize, serializer: Option<Serializer>) -> Task<u64, Bytes> {
        let runs = self.runs.clone();
        let value = data(len);
        let task = Task::new("big", move |_x: u64| {
            runs.fetch_add(1, Ordering::Relaxed);
            let value = value.clone();
            async move { Ok::<_, Infallible>(value) }
        })
        .inputs(["x"])
        .cache_policy(INPUTS)
        .result_storage(self.store.clone())
        .memory_tier(false);
        match serializer {
            Some(s) => task.serializer(s),
            None => task,
        }
    }

    fn ran(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    fn emit(&self, mut fields: serde_json::Value) {
        let obj = fields.as_object_mut().expect("an object");
        obj.insert("tool".into(), "cairn".into());
        obj.insert("workload".into(), self.workload.clone().into());
        obj.entry("ok").or_insert(true.into());
        println!("{fields}");
    }

    fn check(&self, ok: bool, reason: impl FnOnce() -> String) {
        if !ok {
            fail(&self.workload, &reason());
        }
    }

    /// Calls `add_one` on each input, timing each call alone; checks every output.
    async fn time_calls(&self, task: &Task<u64, u64>, inputs: &[u64]) -> Vec<f64> {
        let mut times = Vec::with_capacity(inputs.len());
        for &x in inputs {
            let t = Instant::now();
            let out = task.call(x).await;
            let elapsed = t.elapsed();
            match out {
                Ok(v) => self.check(v == x + 1, || format!("add_one({x}) returned {v}")),
                Err(e) => fail(&self.workload, &format!("add_one({x}): {e}")),
            }
            times.push(us(elapsed));
        }
        times
    }

    async fn fill(&self, task: &Task<u64, u64>, from: u64, to: u64) {
        let inputs: Vec<u64> = (from..to).collect();
        for chunk in inputs.chunks(16) {
            for run in task.map(chunk.iter().copied()).await {
                if let Err(e) = run.into_result() {
                    fail(&self.workload, &format!("populating: {e}"));
                }
            }
        }
    }

    /// Times `calls` hits cycling over `0..keys`, after a warm-up; no body may run.
    async fn hits(&self, task: &Task<u64, u64>, keys: u64, calls: u64) -> Vec<f64> {
        self.time_calls(task, &cycling(keys, (calls / 10).max(50)))
            .await;
        let before = self.ran();
        let times = self.time_calls(task, &cycling(keys, calls)).await;
        let ran = self.ran() - before;
        self.check(ran == 0, || {
            format!("the body ran {ran} times during {calls} hits")
        });
        times
    }

    async fn hit(&self, keys: u64, calls: u64) {
        let task = self.add_one();
        self.fill(&task, 0, keys).await;
        let samples = self.hits(&task, keys, calls).await;
        self.emit(serde_json::json!({"keys": keys, "samples_us": samples}));
    }

    async fn populate(&self, from: u64, to: u64) {
        let task = self.add_one();
        let t = Instant::now();
        self.fill(&task, from, to).await;
        self.emit(serde_json::json!({"entries": to, "us": us(t.elapsed())}));
    }

    /// The first call of this process on an input cached by another one. `setup_us` is
    /// the time from `main` to the task being ready; the process start before `main` is
    /// measured by the driver (its wall-clock minus ours).
    async fn fresh_hit(&self, started: Instant, x: u64) {
        let task = self.add_one();
        let setup = started.elapsed();
        let samples = self.time_calls(&task, &[x]).await;
        let ran = self.ran();
        self.check(ran == 0, || format!("add_one({x}) ran its body: not a hit"));
        self.emit(serde_json::json!({
            "setup_us": us(setup),
            "first_call_us": samples[0],
            "in_main_us": us(started.elapsed()),
        }));
    }

    async fn miss(&self, first: u64, calls: u64) {
        let task = self.add_one();
        let inputs: Vec<u64> = (first..first + calls).collect();
        let before = self.ran();
        let samples = self.time_calls(&task, &inputs).await;
        let ran = self.ran() - before;
        self.check(ran == calls, || {
            format!("the body ran {ran} times for {calls} misses")
        });
        self.emit(serde_json::json!({"samples_us": samples}));
    }

    /// One miss of `big(x)`: the value is built before the clock starts; the call runs
    /// the body (which hands back the prepared buffer) and persists it. Then, as the
    /// limit it is judged against, a raw staged write + fsync + rename (+ directory
    /// fsync) of as many bytes in the same directory.
    async fn big_persist(&self, x: u64, len: usize, serializer: Option<Serializer>) {
        let task = self.big(len, serializer);
        let t = Instant::now();
        let out = task.call(x).await;
        let elapsed = t.elapsed();
        match out {
            Ok(v) => self.check(v.len() == len, || format!("big({x}) has {} bytes", v.len())),
            Err(e) => fail(&self.workload, &format!("big({x}): {e}")),
        }
        self.check(self.ran() == 1, || format!("big({x}) was not a miss"));
        let raw = raw_write(&self.dir, &data(len));
        self.emit(serde_json::json!({
            "bytes": len,
            "us": us(elapsed),
            "raw_write_fsync_us": us(raw),
        }));
    }

    /// The first call of a fresh process on a `big(x)` persisted by another one, then
    /// a raw read of a file of the same size (written by `big_persist`'s baseline).
    async fn big_load(&self, started: Instant, x: u64, len: usize, serializer: Option<Serializer>) {
        // The task closes over a buffer of its own; build it before the clock starts.
        let task = self.big(len, serializer);
        let setup = started.elapsed();
        let t = Instant::now();
        let out = task.call(x).await;
        let elapsed = t.elapsed();
        match out {
            Ok(v) => self.check(v.len() == len, || format!("big({x}) has {} bytes", v.len())),
            Err(e) => fail(&self.workload, &format!("big({x}): {e}")),
        }
        self.check(self.ran() == 0, || {
            format!("big({x}) ran its body: not a hit")
        });
        let raw_path = self.dir.join("raw-baseline.bin");
        let raw = if raw_path.exists() {
            let t = Instant::now();
            let read = std::fs::read(&raw_path).expect("the raw baseline file");
            let d = t.elapsed();
            std::hint::black_box(read);
            Some(us(d))
        } else {
            None
        };
        self.emit(serde_json::json!({
            "bytes": len,
            "us": us(elapsed),
            "setup_us": us(setup),
            "raw_read_us": raw,
        }));
    }

    /// Fills the cache from `from` up to `to` entries (untimed), then times hits
    /// spread over all `to` entries.
    async fn scale(&self, from: u64, to: u64, calls: u64) {
        let task = self.add_one();
        self.fill(&task, from, to).await;
        let samples = self.hits(&task, to, calls).await;
        self.emit(serde_json::json!({"entries": to, "samples_us": samples}));
    }

    /// `Flow::run` of `calls` sequential `add_one` calls: a first run fills the cache,
    /// then `reps` runs are timed whole; none may run a body.
    async fn flow(&self, calls: u64, reps: u64) {
        let task = &self.add_one();
        let run_flow = move || async move {
            let t = Instant::now();
            let outcome = Flow::new("bench")
                .run((), move |_| async move {
                    let mut sum = 0u64;
                    for x in 0..calls {
                        sum += task.call(x).await?;
                    }
                    Ok(sum)
                })
                .await
                .into_result();
            let elapsed = t.elapsed();
            match outcome {
                Ok(sum) => self.check(sum == (1..=calls).sum::<u64>(), || {
                    format!("the flow returned {sum}")
                }),
                Err(e) => fail(&self.workload, &format!("the flow failed: {e}")),
            }
            us(elapsed)
        };
        let first = run_flow().await;
        let before = self.ran();
        let mut samples = Vec::new();
        for _ in 0..reps {
            samples.push(run_flow().await);
        }
        let ran = self.ran() - before;
        self.check(ran == 0, || {
            format!("the body ran {ran} times in fully cached flows")
        });
        self.emit(serde_json::json!({
            "calls": calls,
            "first_run_us": first,
            "samples_us": samples,
        }));
    }
}

/// `n` inputs cycling through `0..keys` in a scattered order.
fn cycling(keys: u64, n: u64) -> Vec<u64> {
    (0..n).map(|i| (i * 7919) % keys.max(1)).collect()
}

/// `len` pseudo-random bytes, the same in every process and the same as the Python
/// peers' (`common.data`): a 1 MB xorshift block, repeated.
fn data(len: usize) -> Bytes {
    let block_len = len.min(MB);
    let mut block = Vec::with_capacity(block_len + 8);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while block.len() < block_len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block.extend_from_slice(&x.to_le_bytes());
    }
    block.truncate(block_len);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let n = (len - v.len()).min(block_len);
        v.extend_from_slice(&block[..n]);
    }
    Bytes::from(v)
}

/// A raw staged write + fsync + rename + directory fsync of `value` into `dir`, kept as
/// `raw-baseline.bin` for the load baseline.
fn raw_write(dir: &Path, value: &[u8]) -> Duration {
    use std::io::Write;
    let staged = dir.join(".raw-baseline.staged");
    let dest = dir.join("raw-baseline.bin");
    let t = Instant::now();
    let mut f = std::fs::File::create(&staged).expect("a staged file");
    f.write_all(value).expect("the raw write");
    f.sync_all().expect("fsync");
    drop(f);
    std::fs::rename(&staged, &dest).expect("rename");
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("the directory's fsync");
    t.elapsed()
}
