//! `serialize` across processes: real child processes (this binary, re-run in a child
//! role) call one serialized task against one store, and the parent counts the body's
//! executions in a file every child appends to (O_APPEND), outside all of them.
//!
//! On the local disk, and on S3 and GCS when their emulators are configured (required
//! under `CI=true`):
//! - 16 processes, one input: the body runs once, all return the same value, one
//!   record, no lease left;
//! - the holder is SIGKILLed mid-body: one waiter takes over once the lease is stale;
//! - a holder that runs longer than its lease, renewing it, is never taken over;
//! - the holder's body fails: a waiter runs at once, without waiting out the lease;
//! - different keys never wait on each other;
//! - the holder is SIGSTOPped past its lease and resumed after another took over: it
//!   cannot replace the new record, and both return the same value;
//! - in one process, 64 concurrent calls run the body once.

mod emulators;
mod processes;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::cache::{LeaseConfig, INPUTS};
use cairn::{ResultStore, Task};
use futures::StreamExt;

const ROLE: &str = "CAIRN_SERIALIZED_CHILD";
const RACE_TARGET: &str = "race/{x}.json";

/// What a child is told, through its environment.
struct Job<'a> {
    backend: &'a str,
    root: &'a str,
    count_file: PathBuf,
    input: u64,
    body_ms: u64,
    fail: bool,
    short_lease: bool,
    /// `serialized` (default), a race without `serialize` to publish a `target` or a
    /// cache `record`, or a shared `map` over `0..input`.
    mode: &'static str,
}

/// The serialized task: appends one line per execution to the count file, then
/// returns a value unique to this execution, so two executions could never agree.
fn task(
    store: ResultStore,
    count_file: PathBuf,
    body_ms: u64,
    fail: bool,
    lease: LeaseConfig,
) -> Task<u64, String> {
    Task::new("slow_square", move |x: u64| {
        let count_file = count_file.clone();
        async move {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&count_file)?;
            writeln!(f, "{}", std::process::id())?;
            println!("BODY_STARTED");
            tokio::time::sleep(Duration::from_millis(body_ms)).await;
            if fail {
                return Err(std::io::Error::other("the body failed on purpose"));
            }
            Ok(format!(
                "{}:{}:{}",
                x * x,
                std::process::id(),
                rand::random::<u32>()
            ))
        }
    })
    .inputs(["x"])
    .cache_policy(INPUTS)
    .result(store)
    .serialize(true)
    .lease(lease)
}

fn short_lease() -> LeaseConfig {
    // Stale after 6 s: long enough for a loaded machine to renew every second.
    LeaseConfig::new(Duration::from_secs(3), Duration::from_secs(1)).unwrap()
}

fn child() {
    let var = |k: &str| std::env::var(format!("{ROLE}_{k}")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = processes::store(&var("BACKEND"), &var("ROOT")).await;
        let lease = if var("SHORT") == "1" {
            short_lease()
        } else {
            LeaseConfig::default()
        };
        let mut task = task(
            store,
            PathBuf::from(var("COUNT")),
            var("BODY_MS").parse().unwrap(),
            var("FAIL") == "1",
            lease,
        );
        // Races without `serialize`: every run computes, one publishes.
        match var("MODE").as_str() {
            "target" => {
                task = task
                    .cache_policy(cairn::cache::NONE)
                    .serialize(false)
                    .target(RACE_TARGET)
            }
            "record" => task = task.serialize(false),
            _ => {}
        }
        if var("MODE") == "map" {
            // A shared map over 0..INPUT: print every item's value, in order.
            let n: u64 = var("INPUT").parse().unwrap();
            let runs = task.serialize(false).map_shared(0..n).await;
            let values: Vec<&str> = runs.iter().map(|r| r.value().unwrap().as_str()).collect();
            println!("MAP {}", values.join(","));
            return;
        }
        let run = task.run(var("INPUT").parse().unwrap()).await;
        match run.value() {
            Some(v) => println!("VALUE {v}"),
            None => println!("FAILED {}", run.error().unwrap()),
        }
        println!("WAITED {}", run.info().waited().is_some());
    });
}

fn spawn(job: &Job) -> Child {
    let var = |k: &str| format!("{ROLE}_{k}");
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "1")
        .env(var("BACKEND"), job.backend)
        .env(var("ROOT"), job.root)
        .env(var("COUNT"), &job.count_file)
        .env(var("INPUT"), job.input.to_string())
        .env(var("BODY_MS"), job.body_ms.to_string())
        .env(var("FAIL"), if job.fail { "1" } else { "0" })
        .env(var("SHORT"), if job.short_lease { "1" } else { "0" })
        .env(var("MODE"), job.mode)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads a child's stdout until `line` (or the end), returning what was read.
fn read_until(child: &mut Child, line: &str) -> Vec<String> {
    let out = child.stdout.as_mut().unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(out);
    let mut buf = String::new();
    while reader.read_line(&mut buf).unwrap() > 0 {
        let l = buf.trim_end().to_owned();
        buf.clear();
        let done = l.starts_with(line);
        lines.push(l);
        if done {
            break;
        }
    }
    lines
}

/// The child's outcome: its value (or failure) and whether it waited.
fn finish(mut child: Child) -> (String, bool) {
    let lines = read_until(&mut child, "WAITED");
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {lines:?}");
    let value = lines
        .iter()
        .find_map(|l| l.strip_prefix("VALUE ").map(str::to_owned))
        .unwrap_or_else(|| panic!("no value: {lines:?}"));
    let waited = lines.iter().any(|l| l == "WAITED true");
    (value, waited)
}

fn executions(count_file: &Path) -> usize {
    std::fs::read_to_string(count_file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn keys_under(store: &ResultStore, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .map(|m| m.unwrap().key.as_str().to_owned())
        .collect()
        .await
}

struct Case {
    backend: &'static str,
    root: String,
    dir: tempfile::TempDir,
}

impl Case {
    fn new(backend: &'static str, name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = match backend {
            "local" => dir.path().join("store").display().to_string(),
            _ => format!("{}/serialized-{name}", emulators::run_prefix()),
        };
        Case { backend, root, dir }
    }
    fn count_file(&self) -> PathBuf {
        self.dir.path().join("executions")
    }
    fn job(&self, input: u64, body_ms: u64) -> Job<'_> {
        Job {
            backend: self.backend,
            root: &self.root,
            count_file: self.count_file(),
            input,
            body_ms,
            fail: false,
            short_lease: false,
            mode: "serialized",
        }
    }
    async fn store(&self) -> ResultStore {
        processes::store(self.backend, &self.root).await
    }
}

/// First, the lease probe: the store (or emulator) must enforce the preconditions that
/// every behaviour below rests on, or this suite says which one it lacks.
async fn the_store_enforces_what_leases_need(backend: &'static str) {
    let case = Case::new(backend, "probe");
    let report = cairn::cache::probe_leases(&case.store().await)
        .await
        .unwrap_or_else(|e| panic!("{backend}: the lease probe could not run: {e}"));
    assert!(report.is_sound(), "{backend}: {:?}", report.gaps());
}

async fn sixteen_processes_run_the_body_once(backend: &'static str) {
    let case = Case::new(backend, "sixteen");
    let children: Vec<_> = (0..16).map(|_| spawn(&case.job(7, 1500))).collect();
    let outcomes: Vec<_> = children.into_iter().map(finish).collect();
    assert_eq!(
        executions(&case.count_file()),
        1,
        "{backend}: the body ran once"
    );
    let first = &outcomes[0].0;
    assert!(first.starts_with("49:"), "{first}");
    assert!(
        outcomes.iter().all(|(v, _)| v == first),
        "{backend}: every caller returns the one value: {outcomes:?}"
    );
    assert!(outcomes.iter().filter(|(_, waited)| *waited).count() >= 1);
    let store = case.store().await;
    assert_eq!(
        keys_under(&store, "cache/").await.len(),
        1,
        "{backend}: one record"
    );
    assert_eq!(
        keys_under(&store, "leases/").await,
        Vec::<String>::new(),
        "{backend}: no lease left"
    );
}

async fn a_killed_holder_is_taken_over_once_its_lease_is_stale(backend: &'static str) {
    let case = Case::new(backend, "killed");
    let mut holder = spawn(&Job {
        short_lease: true,
        ..case.job(3, 60_000)
    });
    read_until(&mut holder, "BODY_STARTED");
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            spawn(&Job {
                short_lease: true,
                ..case.job(3, 200)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let outcomes: Vec<_> = waiters.into_iter().map(finish).collect();
    assert_eq!(
        executions(&case.count_file()),
        2,
        "{backend}: the killed holder's run, then exactly one waiter's"
    );
    assert!(
        outcomes.iter().all(|(v, w)| v == &outcomes[0].0 && *w),
        "{outcomes:?}"
    );
    let store = case.store().await;
    let records = keys_under(&store, "cache/").await;
    assert_eq!(records.len(), 1);
    let record = store.read_record::<String>(&records[0]).await.unwrap();
    assert_eq!(
        record.value, outcomes[0].0,
        "the record is complete and is what was returned"
    );
    assert_eq!(keys_under(&store, "leases/").await, Vec::<String>::new());
}

/// A holder whose body outlasts the lease several times over keeps it by renewing:
/// its waiter never takes over (on S3 every renewal must change the ETag).
async fn a_live_holder_is_never_taken_over(backend: &'static str) {
    let case = Case::new(backend, "live");
    let mut holder = spawn(&Job {
        short_lease: true,
        ..case.job(8, 9000)
    });
    read_until(&mut holder, "BODY_STARTED");
    let waiter = spawn(&Job {
        short_lease: true,
        ..case.job(8, 100)
    });
    let (value, waited) = finish(waiter);
    let (held, _) = finish(holder);
    assert!(waited);
    assert_eq!(value, held, "{backend}: the waiter took the holder's value");
    assert_eq!(
        executions(&case.count_file()),
        1,
        "{backend}: no takeover of a live lease"
    );
}

async fn a_failed_holder_lets_a_waiter_run_at_once(backend: &'static str) {
    let case = Case::new(backend, "failed");
    // The default 30 s lease: a waiter that ran only after it went stale would need 60 s.
    let mut holder = spawn(&Job {
        fail: true,
        ..case.job(5, 1000)
    });
    read_until(&mut holder, "BODY_STARTED");
    let started = Instant::now();
    let waiter = spawn(&case.job(5, 100));
    let lines = read_until(&mut holder, "WAITED");
    assert!(lines.iter().any(|l| l.starts_with("FAILED")), "{lines:?}");
    holder.wait().unwrap();
    let (value, waited) = finish(waiter);
    assert!(value.starts_with("25:"));
    assert!(waited, "the waiter waited for the holder");
    assert!(
        started.elapsed() < LeaseConfig::default().lease_time(),
        "{backend}: the waiter ran when the holder failed, not when its lease lapsed"
    );
    assert_eq!(executions(&case.count_file()), 2);
}

async fn different_keys_never_wait(backend: &'static str) {
    let case = Case::new(backend, "keys");
    let children: Vec<_> = (10..14).map(|x| spawn(&case.job(x, 1500))).collect();
    let outcomes: Vec<_> = children.into_iter().map(finish).collect();
    assert!(outcomes.iter().all(|(_, waited)| !waited), "{outcomes:?}");
    assert_eq!(executions(&case.count_file()), 4);
}

async fn a_paused_holder_cannot_replace_its_successors_record(backend: &'static str) {
    let case = Case::new(backend, "paused");
    let mut holder = spawn(&Job {
        short_lease: true,
        ..case.job(9, 2000)
    });
    read_until(&mut holder, "BODY_STARTED");
    let pid = holder.id().to_string();
    let signal = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    };
    signal("-STOP");
    let (successor, waited) = finish(spawn(&Job {
        short_lease: true,
        ..case.job(9, 100)
    }));
    assert!(waited);
    signal("-CONT");
    let (resumed, _) = finish(holder);
    assert_eq!(
        resumed, successor,
        "{backend}: the resumed holder returns what was published"
    );
    assert_eq!(executions(&case.count_file()), 2);
    let store = case.store().await;
    let records = keys_under(&store, "cache/").await;
    let record = store.read_record::<String>(&records[0]).await.unwrap();
    assert_eq!(record.value, successor, "the successor's record stands");
}

async fn concurrent_calls_in_one_process_run_once(backend: &'static str) {
    let case = Case::new(backend, "tasks");
    let task = task(
        case.store().await,
        case.count_file(),
        300,
        false,
        LeaseConfig::default(),
    );
    let runs = futures::future::join_all((0..64).map(|_| task.call(4))).await;
    let values: Vec<String> = runs.into_iter().map(Result::unwrap).collect();
    assert!(values.iter().all(|v| v == &values[0]));
    assert_eq!(executions(&case.count_file()), 1);
    assert_eq!(
        keys_under(&case.store().await, "leases/").await,
        Vec::<String>::new()
    );
}

/// Without `serialize`, 8 processes race to publish one target (and one cache record),
/// 5 rounds: every body runs, one value is published, and every caller returns it.
async fn losers_of_a_publish_race_return_the_published_value(backend: &'static str) {
    for mode in ["target", "record"] {
        let case = Case::new(backend, &format!("race-{mode}"));
        let store = case.store().await;
        for round in 0..5u64 {
            let children: Vec<_> = (0..8)
                .map(|_| {
                    spawn(&Job {
                        mode,
                        ..case.job(round, 500)
                    })
                })
                .collect();
            let values: Vec<String> = children.into_iter().map(|c| finish(c).0).collect();
            let stored: String = match mode {
                "target" => store.read(&format!("race/{round}.json")).await.unwrap(),
                _ => {
                    let records = keys_under(&store, "cache/").await;
                    let mut found = None;
                    for r in records {
                        let rec = store.read_record::<String>(&r).await.unwrap();
                        if rec.value.starts_with(&format!("{}:", round * round)) {
                            found = Some(rec.value);
                        }
                    }
                    found.expect("the round's record")
                }
            };
            assert!(
                values.iter().all(|v| *v == stored),
                "{backend}, {mode}, round {round}: every caller returns the stored {stored}: {values:?}"
            );
        }
        // A late starter may find the value published and not run at all; the race is
        // real as long as some round ran more than one body.
        let ran = executions(&case.count_file());
        assert!(
            ran > 5,
            "{backend}, {mode}: {ran} bodies ran in 5 rounds: no race happened"
        );
    }
}

/// Reads a map worker's result line.
fn map_result(mut child: Child) -> String {
    let lines = read_until(&mut child, "MAP ");
    assert!(child.wait().unwrap().success(), "worker failed: {lines:?}");
    lines
        .last()
        .unwrap()
        .strip_prefix("MAP ")
        .unwrap()
        .to_owned()
}

/// 4 processes share a 40-item map: every item's body runs once in all, and every
/// worker returns the same complete result. Then a worker is killed mid-item: its
/// item is taken over once its lease is stale, and the others still finish.
async fn workers_share_a_map(backend: &'static str) {
    let case = Case::new(backend, "map");
    let workers: Vec<_> = (0..4)
        .map(|_| {
            spawn(&Job {
                mode: "map",
                ..case.job(40, 200)
            })
        })
        .collect();
    let results: Vec<String> = workers.into_iter().map(map_result).collect();
    assert_eq!(
        executions(&case.count_file()),
        40,
        "{backend}: each item ran once in all"
    );
    assert!(
        results.iter().all(|r| r == &results[0]),
        "{backend}: {results:?}"
    );
    let items: Vec<&str> = results[0].split(',').collect();
    assert_eq!(items.len(), 40);
    for (i, item) in items.iter().enumerate() {
        assert!(item.starts_with(&format!("{}:", i * i)), "item {i}: {item}");
    }

    let case = Case::new(backend, "map-killed");
    let job = || Job {
        mode: "map",
        short_lease: true,
        ..case.job(12, 1000)
    };
    let mut victim = spawn(&job());
    read_until(&mut victim, "BODY_STARTED");
    let survivors: Vec<_> = (0..2).map(|_| spawn(&job())).collect();
    std::thread::sleep(Duration::from_millis(300));
    victim.kill().unwrap();
    victim.wait().unwrap();
    let results: Vec<String> = survivors.into_iter().map(map_result).collect();
    assert!(
        results.iter().all(|r| r == &results[0]),
        "{backend}: {results:?}"
    );
    assert_eq!(results[0].split(',').count(), 12);
    assert_eq!(
        executions(&case.count_file()),
        13,
        "{backend}: 12 items, and the killed worker's item once more"
    );
    assert_eq!(
        keys_under(&case.store().await, "leases/").await,
        Vec::<String>::new()
    );
}

fn main() {
    if std::env::var(ROLE).is_ok() {
        return child();
    }
    let mut backends = vec!["local"];
    if cfg!(feature = "s3") && emulators::s3_bucket().is_some() {
        backends.push("s3");
    }
    if cfg!(feature = "gcs") && emulators::gcs_bucket().is_some() {
        backends.push("gcs");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    for backend in backends {
        let t = Instant::now();
        rt.block_on(async {
            the_store_enforces_what_leases_need(backend).await;
            sixteen_processes_run_the_body_once(backend).await;
            concurrent_calls_in_one_process_run_once(backend).await;
            different_keys_never_wait(backend).await;
            a_failed_holder_lets_a_waiter_run_at_once(backend).await;
            a_killed_holder_is_taken_over_once_its_lease_is_stale(backend).await;
            a_paused_holder_cannot_replace_its_successors_record(backend).await;
            losers_of_a_publish_race_return_the_published_value(backend).await;
            workers_share_a_map(backend).await;
            a_live_holder_is_never_taken_over(backend).await;
        });
        eprintln!(
            "serialized: {backend}: the lease probe and 9 behaviours passed in {:?}",
            t.elapsed()
        );
    }
}
