//! The crash matrix: a child process is SIGKILLed at random points while it writes a
//! large target, a cache record, a large checkpoint, the large persisted inputs of a
//! retrying task, a serialized task's lease, or a persisting flow run's manifest,
//! per-transition history and results, on the local disk, and on S3 and GCS when their
//! emulators are configured (required under `CI=true`). After each kill nothing
//! partial is visible, a new run publishes a complete value (a killed flow run is
//! resumed, and skips what it had recorded), a lease left behind is taken over once
//! stale and pruned once old (judged at a time given to the pruner), and
//! `ResultStore::clean_up` leaves nothing behind (no staged file, no open multipart
//! upload).
//!
//! Also: a write cut short by the file size limit (`RLIMIT_FSIZE` in the child) leaves
//! no file and says why; a read-only store directory is `PermissionDenied` naming it.
//!
//! Kills per case: 3 by default, `CAIRN_CRASH_KILLS=25` (or `./localstack/bench
//! faults`) for the full matrix; `CAIRN_CRASH_CASES=inputs,lease` runs only those cases. The test re-runs its own binary as the child
//! (harness = false, so `main` decides the role).

mod emulators;
mod processes;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::cache::{LeaseConfig, LeaseHolder, INPUTS};
use cairn::maintenance::{Maintenance, PruneOptions};
use cairn::{ErrorKind, Flow, FlowRun, ResultStore, Task};
use futures::TryStreamExt;

const ROLE_ENV: &str = "CAIRN_CRASH_ROLE";
const ROOT_ENV: &str = "CAIRN_CRASH_ROOT";
const COUNT_ENV: &str = "CAIRN_CRASH_COUNT";
const CASES: [&str; 6] = ["target", "cache", "checkpoint", "inputs", "lease", "run"];
/// The flow run id of the `inputs` and `run` cases.
const RUN_ID: &str = "run-1";
/// Tasks of the `run` case's flow, and the parameter it runs with.
const STEPS: u64 = 6;
const PARAM: u64 = 3;

/// Stale after 2 s: a killed holder's lease is taken over quickly.
fn short_lease() -> LeaseConfig {
    LeaseConfig::new(Duration::from_secs(2), Duration::from_secs(1))
        .unwrap()
        .with_skew_factor(1.0)
        .unwrap()
}

fn selected(case: &str) -> bool {
    std::env::var("CAIRN_CRASH_CASES")
        .map(|v| v.split(',').any(|c| c.trim() == case))
        .unwrap_or(true)
}

fn kills() -> usize {
    std::env::var("CAIRN_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn size(case: &str, backend: &str) -> usize {
    match (case, backend) {
        ("cache", _) => 1 << 20,
        ("lease", _) => 256 << 10,
        ("run", _) => 8,
        ("inputs", "local") => 16 << 20,
        (_, "local") => 64 << 20,
        // Above the 16 MiB multipart / resumable threshold.
        _ => 20 << 20,
    }
}

/// Byte `i` is `i % 251`. Built by copying, not byte by byte: the matrix builds
/// values of 64 MiB several times per kill, in debug builds.
fn value(len: usize) -> Bytes {
    let pattern: Vec<u8> = (0..251u8).collect();
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let n = (len - v.len()).min(pattern.len());
        v.extend_from_slice(&pattern[..n]);
    }
    Bytes::from(v)
}

/// The task of a case; its body prints `READY` as it returns, just before the write.
fn task(case: &str, store: ResultStore, len: usize, announce: bool) -> Task<u64, Bytes> {
    let t = Task::new(case, move |_x: u64| async move {
        let v = value(len);
        if announce {
            use std::io::Write;
            println!("READY");
            std::io::stdout().flush().unwrap();
        }
        Ok::<_, std::io::Error>(v)
    })
    .inputs(["x"]);
    match case {
        "target" => t.result(store).target("out/{task_name}.bin"),
        "cache" => t
            .cache_policy(INPUTS)
            .result_storage(store)
            .memory_tier(false),
        _ => t
            .result(store)
            .checkpoint(true)
            .location("ckpt/{task_name}.bin"),
    }
}

fn child(role: &str, root: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    match role {
        "fsize" => return fsize_child(&rt, root),
        "readonly" => return readonly_child(&rt, root),
        _ => {}
    }
    let (case, backend) = role.split_once(':').unwrap();
    rt.block_on(async {
        let store = processes::store(backend, root).await;
        let len = size(case, backend);
        match case {
            "inputs" => {
                let t = retrying_task(store, true);
                let out = retrying_flow(&t, len).await;
                assert_eq!(out.value(), Some(&(len as u64)), "{:?}", out.state());
                return;
            }
            "lease" => {
                ready();
                let run = leased_task(store).run(1).await;
                assert_eq!(run.value().map(Bytes::len), Some(len));
                return;
            }
            "run" => {
                ready();
                let count = std::path::PathBuf::from(std::env::var(COUNT_ENV).unwrap());
                let out = steps_flow(store, &count, false).await;
                assert_eq!(out.value(), Some(&steps_sum()), "{:?}", out.state());
                return;
            }
            _ => {}
        }
        let t = task(case, store, size(case, backend), true);
        let out = Flow::new("crash")
            .run((), |_| async move { t.call(1).await })
            .await;
        assert!(out.state().is_completed(), "{:?}", out.state());
    });
    println!("DONE");
}

fn ready() {
    use std::io::Write;
    println!("READY");
    std::io::stdout().flush().unwrap();
}

/// The `inputs` case's input: `len` bytes of text.
fn text(len: usize) -> String {
    let mut t = "abcdefghijklmnopqrstuvwxyz".repeat(len / 26 + 1);
    t.truncate(len);
    t
}

/// A checkpointed task whose first attempt in this process fails: its (large) input
/// is persisted before the retry, and removed once the retry succeeds.
fn retrying_task(store: ResultStore, announce: bool) -> Task<String, u64> {
    let attempts = Arc::new(AtomicU32::new(0));
    Task::new("retrying", move |s: String| {
        let first = attempts.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                if announce {
                    ready();
                }
                return Err(std::io::Error::other("the first attempt fails on purpose"));
            }
            Ok(s.len() as u64)
        }
    })
    .inputs(["s"])
    .retries(2)
    // The persisted inputs wait here, complete, before the retry.
    .retry_delay(Duration::from_millis(500))
    .checkpoint(true)
    .result(store)
}

async fn retrying_flow(t: &Task<String, u64>, len: usize) -> FlowRun<u64> {
    let t = t.clone();
    Flow::new("crash")
        .run_id(RUN_ID)
        .run((), |_| async move { t.call(text(len)).await })
        .await
}

fn inputs_location() -> String {
    format!("runs/v1/crash/{RUN_ID}/retrying/0.inputs")
}

/// A serialized cached task: it holds a lease on its key while its body runs (long
/// enough for a renewal or two).
fn leased_task(store: ResultStore) -> Task<u64, Bytes> {
    let len = size("lease", "any");
    Task::new("leased", move |_x: u64| async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok::<_, std::io::Error>(value(len))
    })
    .inputs(["x"])
    .cache_policy(INPUTS)
    .result_storage(store)
    .memory_tier(false)
    .serialize(true)
    .lease(short_lease())
}

fn steps_sum() -> u64 {
    (0..STEPS).map(|i| PARAM * 10 + i).sum()
}

/// A persisting flow run of `STEPS` tasks under `RUN_ID` (resumed with `resume`): each
/// task appends its name to `count` (O_APPEND, outside the process) when its body runs.
async fn steps_flow(store: ResultStore, count: &std::path::Path, resume: bool) -> FlowRun<u64> {
    let steps: Vec<Task<u64, u64>> = (0..STEPS)
        .map(|i| {
            let count = count.to_path_buf();
            Task::new(format!("step{i}"), move |x: u64| {
                let count = count.clone();
                async move {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(&count)?;
                    writeln!(f, "step{i}")?;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Ok::<_, std::io::Error>(x * 10 + i)
                }
            })
            .inputs(["x"])
        })
        .collect();
    let flow = Flow::new("crashrun")
        .result_store(store)
        .checkpointing(true)
        .lease(short_lease());
    let flow = match resume {
        true => flow.resume(RUN_ID),
        false => flow.run_id(RUN_ID),
    };
    flow.run(PARAM, |x| async move {
        let mut sum = 0;
        for step in &steps {
            sum += step.call(x).await?;
        }
        Ok(sum)
    })
    .await
}

/// Ignores SIGXFSZ and limits files to 1 MiB, then writes 4 MiB.
fn fsize_child(rt: &tokio::runtime::Runtime, root: &str) {
    // SAFETY: plain libc calls on this process, before any other thread writes files.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    rt.block_on(async {
        let store = ResultStore::local(root).unwrap();
        let err = store
            .write_bytes("big/value.bin", value(4 << 20), cairn::PutMode::Overwrite)
            .await
            .unwrap_err();
        println!("ERR {:?} {err}", err.kind());
    });
}

/// Drops to an unprivileged user, then writes into a directory it cannot write.
fn readonly_child(rt: &tokio::runtime::Runtime, root: &str) {
    // SAFETY: plain libc calls on this process.
    unsafe {
        if libc::getuid() == 0 {
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
    }
    rt.block_on(async {
        let store = ResultStore::local(root).unwrap();
        let err = store
            .write_bytes("x/value.bin", value(10), cairn::PutMode::Overwrite)
            .await
            .unwrap_err();
        println!("ERR {:?} {err}", err.kind());
    });
}

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        child(&role, &std::env::var(ROOT_ENV).unwrap());
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut backends = vec!["local"];
    if cfg!(feature = "s3") && emulators::s3_bucket().is_some() {
        backends.push("s3");
    }
    if cfg!(feature = "gcs") && emulators::gcs_bucket().is_some() {
        backends.push("gcs");
    }
    let mut passed = 0;
    for backend in &backends {
        for case in CASES.into_iter().filter(|c| selected(c)) {
            rt.block_on(kill_matrix(case, backend));
            println!("test crash_matrix[{case}:{backend}] ... ok");
            passed += 1;
        }
    }
    a_write_past_the_file_size_limit_leaves_nothing();
    println!("test a_write_past_the_file_size_limit_leaves_nothing ... ok");
    a_read_only_store_is_permission_denied_naming_the_path();
    println!("test a_read_only_store_is_permission_denied_naming_the_path ... ok");
    println!("{} passed, 0 failed", passed + 2);
}

fn spawn(role: &str, root: &str) -> std::process::Child {
    spawn_counted(role, root, std::path::Path::new("/dev/null"))
}

fn spawn_counted(role: &str, root: &str, count: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, role)
        .env(ROOT_ENV, root)
        .env(COUNT_ENV, count)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `READY`; returns the stdout reader.
fn wait_ready(child: &mut std::process::Child) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended before its write"
        );
        if line.trim() == "READY" {
            return out;
        }
    }
}

/// Staged files below `dir` (local) or open multipart uploads below `root` (S3).
async fn leftovers(backend: &str, root: &str, store: &ResultStore) -> usize {
    match backend {
        "local" => staged_files(std::path::Path::new(root)),
        #[cfg(feature = "s3")]
        "s3" => {
            let s3 = cairn::backend::S3Backend::builder(emulators::s3_bucket().unwrap())
                .build()
                .await
                .unwrap();
            let out = s3
                .client()
                .list_multipart_uploads()
                .bucket(s3.bucket())
                .prefix(format!("{root}/"))
                .send()
                .await
                .unwrap();
            let _ = store;
            out.uploads().len()
        }
        _ => 0,
    }
}

fn staged_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            } else if e
                .file_name()
                .to_string_lossy()
                .starts_with(".cairn-staged.")
            {
                n += 1;
            }
        }
    }
    n
}

/// What is visible after a kill: `Ok(true)` a complete value, `Ok(false)` nothing;
/// an error for anything partial or damaged.
async fn visible(case: &str, store: &ResultStore, len: usize) -> Result<bool, String> {
    let expected = value(len);
    let published = match case {
        "target" => Some(format!("out/{case}.bin")),
        "checkpoint" => Some(format!("ckpt/{case}.bin")),
        _ => None,
    };
    match published {
        Some(location) => match store.exists(&location).await.unwrap() {
            false => Ok(false),
            true => {
                let got: Bytes = store.read(&location).await.map_err(|e| e.to_string())?;
                if got == expected {
                    Ok(true)
                } else {
                    Err(format!("a target of {} bytes, not {len}", got.len()))
                }
            }
        },
        None => {
            let keys: Vec<String> = store
                .list("cache/")
                .map_ok(|m| m.key.to_string())
                .try_collect()
                .await
                .unwrap();
            for k in &keys {
                let r = store
                    .read_record::<Bytes>(k)
                    .await
                    .map_err(|e| format!("{k}: {e}"))?;
                if r.value != expected {
                    return Err(format!("{k}: a wrong value"));
                }
            }
            Ok(!keys.is_empty())
        }
    }
}

async fn kill_matrix(case: &str, backend: &str) {
    let len = size(case, backend);
    // On the local disk, removed when this case ends (values of up to 64 MiB a kill).
    let local = (backend == "local").then(|| tempfile::tempdir().unwrap());
    let base = match &local {
        Some(dir) => dir.path().display().to_string(),
        None => format!("{}/crash-{case}", emulators::run_prefix()),
    };
    let counts = tempfile::tempdir().unwrap();
    // The time a whole write takes, from READY to DONE (printed once the run
    // returned; what follows, the runtime's and the clients' shutdown, is no write).
    let calib = format!("{base}/calibrate");
    let mut c = spawn(&format!("{case}:{backend}"), &calib);
    let mut out = wait_ready(&mut c);
    let t = Instant::now();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && line.trim() != "DONE" {
        line.clear();
    }
    let window = t.elapsed();
    assert!(c.wait().unwrap().success());

    let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut cleaned = 0;
    for i in 0..kills() {
        let root = format!("{base}/kill-{i}");
        let count = counts.path().join(format!("kill-{i}"));
        let mut c = spawn_counted(&format!("{case}:{backend}"), &root, &count);
        let _out = wait_ready(&mut c);
        let delay = window.mul_f64(rand::random::<f64>() * 1.1);
        std::thread::sleep(delay);
        let _ = c.kill();
        let _ = c.wait();

        let store = processes::store(backend, &root).await;
        let seen = match case {
            "inputs" => after_inputs_kill(&store, len).await,
            "lease" => after_lease_kill(&store, len).await,
            "run" => after_run_kill(&store, &count).await,
            _ => after_value_kill(case, &store, len).await,
        };
        for what in seen.unwrap_or_else(|e| {
            panic!("{case}:{backend}: partial or wrong result after a kill at {delay:?}: {e}")
        }) {
            *tally.entry(what).or_default() += 1;
        }
        // The clean-up leaves nothing behind.
        let removed = store.clean_up(Duration::ZERO).await.unwrap();
        cleaned += removed.total();
        assert_eq!(
            leftovers(backend, &root, &store).await,
            0,
            "{case}:{backend}: leftovers after the clean-up"
        );
        if backend != "local" {
            // The emulators keep objects in memory: drop this kill's.
            let keys: Vec<String> = store
                .list("")
                .map_ok(|m| m.key.to_string())
                .try_collect()
                .await
                .unwrap();
            for k in keys {
                store.delete(&k).await.unwrap();
            }
        }
    }
    let tally: Vec<String> = tally.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "FIGURES crash {case}:{backend} value={len}B write={window:.2?} kills={} {} partial=0 leftovers_cleaned={cleaned}",
        kills(),
        tally.join(" ")
    );
}

/// A target, a cache record or a checkpoint: a complete value or nothing is visible;
/// a new run publishes a complete one.
async fn after_value_kill(
    case: &str,
    store: &ResultStore,
    len: usize,
) -> Result<Vec<&'static str>, String> {
    let before = match visible(case, store, len).await? {
        true => "finished_before_kill",
        false => "nothing_visible",
    };
    let t = task(case, store.clone(), len, false);
    let out = Flow::new("crash")
        .run((), |_| async move { t.call(1).await })
        .await;
    if out.value().map(Bytes::len) != Some(len) {
        return Err(format!("the new run: {:?}", out.state()));
    }
    if !visible(case, store, len).await? {
        return Err("the new run published nothing".into());
    }
    Ok(vec![before])
}

/// The persisted inputs of a retrying task: absent, or a record that verifies and holds
/// the whole input. A new run (failing once again) persists them, then removes them.
async fn after_inputs_kill(store: &ResultStore, len: usize) -> Result<Vec<&'static str>, String> {
    let location = inputs_location();
    let mut seen = vec![];
    if store.exists(&location).await.map_err(|e| e.to_string())? {
        let record = store
            .read_record::<serde_json::Value>(&location)
            .await
            .map_err(|e| format!("{location}: {e}"))?;
        let inputs = &record.value["inputs"];
        let got = inputs.as_str().or_else(|| inputs["s"].as_str());
        if got.map(str::len) != Some(len) || got != Some(text(len).as_str()) {
            return Err(format!("{location}: the inputs are not the whole input"));
        }
        seen.push("inputs_left_complete");
    } else {
        seen.push("no_inputs_left");
    }
    let checkpoint = location.trim_end_matches(".inputs");
    if store.exists(checkpoint).await.map_err(|e| e.to_string())? {
        let record = store
            .read_record::<u64>(checkpoint)
            .await
            .map_err(|e| format!("{checkpoint}: {e}"))?;
        if record.value != len as u64 {
            return Err(format!("{checkpoint}: a wrong value"));
        }
        seen.push("checkpoint_complete");
    }
    let t = retrying_task(store.clone(), false);
    let out = retrying_flow(&t, len).await;
    if out.value() != Some(&(len as u64)) {
        return Err(format!("the new run: {:?}", out.state()));
    }
    if store.exists(&location).await.map_err(|e| e.to_string())? {
        return Err("the new run left its persisted inputs behind".into());
    }
    Ok(seen)
}

/// The lease objects under `leases/`, each of which must decode completely.
async fn leases(store: &ResultStore) -> Result<Vec<(String, LeaseHolder)>, String> {
    let keys: Vec<String> = store
        .list("leases/")
        .map_ok(|m| m.key.to_string())
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let mut out = vec![];
    for k in keys {
        let bytes = store.read_bytes(&k).await.map_err(|e| e.to_string())?;
        let holder: LeaseHolder = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{k}: a lease that does not decode ({e})"))?;
        out.push((k, holder));
    }
    Ok(out)
}

/// A serialized task's lease: whatever is left decodes; a new run takes a left lease
/// over once it is stale (not before) and publishes; a lease still left (the killed run
/// had published) is kept by `prune` while young and removed once old, judged at a
/// time given to it.
async fn after_lease_kill(store: &ResultStore, len: usize) -> Result<Vec<&'static str>, String> {
    let recorded = visible("cache", store, len).await?;
    let left = leases(store).await?;
    let mut seen = vec![match (recorded, left.is_empty()) {
        (true, true) => "finished_before_kill",
        (true, false) => "record_and_lease_left",
        (false, true) => "nothing_visible",
        (false, false) => "lease_left",
    }];
    let t = Instant::now();
    let run = leased_task(store.clone()).run(1).await;
    let took = t.elapsed();
    if run.value().map(Bytes::len) != Some(len) {
        return Err(format!("the new run: {:?}", run.error()));
    }
    if !left.is_empty() && !recorded {
        // The killed holder's lease was taken over, and only once stale.
        if run.info().waited().is_none() || took < short_lease().stale_after() {
            return Err(format!(
                "the left lease was not waited out: waited {:?}, run took {took:?}",
                run.info().waited()
            ));
        }
        seen.push("taken_over_when_stale");
    }
    if !visible("cache", store, len).await? {
        return Err("the new run published nothing".into());
    }
    let maintenance = Maintenance::new(store);
    let still = leases(store).await?;
    if !still.is_empty() {
        // A lease marked released (killed before deleting it) goes at once; a young
        // unreleased one stays.
        let unreleased = still.iter().filter(|(_, h)| !h.released).count();
        maintenance
            .prune(&PruneOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let kept = leases(store).await?;
        if kept.len() != unreleased || kept.iter().any(|(_, h)| h.released) {
            return Err(format!(
                "prune kept {} of {} leases, {unreleased} of them unreleased",
                kept.len(),
                still.len()
            ));
        }
        let later = maintenance.now() + chrono::Duration::hours(2);
        Maintenance::new(store)
            .at(later)
            .prune(&PruneOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        seen.push("stale_lease_pruned");
    }
    if !leases(store).await?.is_empty() {
        return Err("a lease is left".into());
    }
    if !visible("cache", store, len).await? {
        return Err("prune removed the record".into());
    }
    Ok(seen)
}

/// A persisting flow run's objects under `runs/`: the manifest, the transitions and the
/// lease decode, the results and checkpoints verify. Returns the steps whose results
/// were recorded, and whether the manifest is there.
async fn run_objects(store: &ResultStore) -> Result<(Vec<String>, bool), String> {
    let keys: Vec<String> = store
        .list("runs/")
        .map_ok(|m| m.key.to_string())
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let prefix = format!("runs/v1/crashrun/{RUN_ID}/");
    let (mut recorded, mut manifest) = (vec![], false);
    for k in &keys {
        let rest = k
            .strip_prefix(&prefix)
            .ok_or_else(|| format!("{k}: outside the run"))?;
        let json = || async {
            let bytes = store.read_bytes(k).await.map_err(|e| e.to_string())?;
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| format!("{k}: does not decode ({e})"))
        };
        if rest == "manifest.json" {
            let m = json().await?;
            if m["run_id"] != RUN_ID || m["flow"] != "crashrun" {
                return Err(format!("{k}: {m}"));
            }
            manifest = true;
        } else if rest == "flow.json" {
            // The summary, written as the run ends.
            if !json().await?.is_object() {
                return Err(format!("{k}: not a summary"));
            }
        } else if rest == "lease" {
            serde_json::from_value::<LeaseHolder>(json().await?)
                .map_err(|e| format!("{k}: {e}"))?;
        } else if rest.starts_with("states/") {
            let t = json().await?;
            if !t["state"].is_string() {
                return Err(format!("{k}: {t}"));
            }
        } else {
            let v = store
                .read_record::<u64>(k)
                .await
                .map_err(|e| format!("{k}: {e}"))?
                .value;
            let step = rest
                .strip_prefix("results/")
                .unwrap_or(rest)
                .split('/')
                .next()
                .unwrap()
                .to_owned();
            let i: u64 = step
                .strip_prefix("step")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("{k}: an unknown object"))?;
            if v != PARAM * 10 + i {
                return Err(format!("{k}: a wrong value {v}"));
            }
            if rest.starts_with("results/") {
                recorded.push(step);
            }
        }
    }
    Ok((recorded, manifest))
}

fn executions(count: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(count)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A killed flow run: its objects are complete; it is resumed (taking its lease over
/// once stale), recorded steps are not run again, and the run completes. A run killed
/// before its manifest cannot be resumed, says so, and runs anew.
async fn after_run_kill(
    store: &ResultStore,
    count: &std::path::Path,
) -> Result<Vec<&'static str>, String> {
    let (recorded, manifest) = run_objects(store).await?;
    let before = executions(count);
    let mut seen = vec![];
    let out = steps_flow(store.clone(), count, true).await;
    let out = if manifest {
        seen.push("resumed");
        out
    } else {
        let refused = out.error().map(|e| e.to_string()).unwrap_or_default();
        if !refused.contains("nothing to resume") {
            return Err(format!("a resume without a manifest: {:?}", out.state()));
        }
        seen.push("nothing_to_resume");
        steps_flow(store.clone(), count, false).await
    };
    if out.value() != Some(&steps_sum()) {
        return Err(format!("the new run: {:?} {:?}", out.state(), out.error()));
    }
    let again = &executions(count)[before.len()..];
    for step in &recorded {
        if again.contains(step) {
            return Err(format!("{step} was recorded, yet ran again"));
        }
    }
    if !recorded.is_empty() {
        seen.push("skipped_recorded_steps");
    }
    let (recorded, _) = run_objects(store).await?;
    if recorded.len() != STEPS as usize {
        return Err(format!("after the new run, {} results", recorded.len()));
    }
    Ok(seen)
}

fn a_write_past_the_file_size_limit_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let out = spawn("fsize", &root).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("ERR "))
        .unwrap_or_else(|| panic!("no error: {text}"));
    assert!(
        line.contains(&root) && line.contains("big/value.bin"),
        "{line}"
    );
    assert!(
        line.contains("too large") || line.contains("File too large"),
        "{line}"
    );
    assert!(!dir.path().join("big/value.bin").exists());
    assert_eq!(staged_files(dir.path()), 0, "a staged file was left");
    println!("FIGURES rlimit-fsize: {line}");
}

fn a_read_only_store_is_permission_denied_naming_the_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o555)).unwrap();
    let root = store.display().to_string();
    let out = spawn("readonly", &root).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("ERR "))
        .unwrap_or_else(|| panic!("no error: {text}"));
    assert!(
        line.starts_with(&format!("ERR {:?}", ErrorKind::PermissionDenied)),
        "{line}"
    );
    assert!(line.contains(&root), "{line}");
    assert_eq!(
        std::fs::read_dir(&store).unwrap().count(),
        0,
        "something was written"
    );
    println!("FIGURES read-only store: {line}");
}
