//! Two processes, one store: what one process's memory tier and cache reads see of the
//! other's writes. A reader process holds a record in its memory tier; a writer process
//! replaces it (`refresh_cache`); the reader serves its value for at most its trust
//! bound (moved on a manual clock, never slept), then reads the new one — and with a
//! bound of 0 at once. A declared hash (`Hashed<T>`) read back from a cache record in a
//! new process keys the downstream task exactly as when it was computed. Executions are
//! counted in a file every process appends to (O_APPEND). On the local disk, and on S3
//! and GCS when their emulators are configured (required under CI).

mod emulators;
mod processes;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cairn::cache::INPUTS;
use cairn::hashing::{hash_value, Hashed};
use cairn::{ManualClock, ResultStore, Task};
use chrono::TimeZone;

const ROLE: &str = "CAIRN_TIER_CHILD";

fn executions(count: &Path) -> Vec<String> {
    std::fs::read_to_string(count)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The task every process shares: its output is what `CAIRN_TIER_CHILD_VALUE` says.
fn shared(count: PathBuf, value: u64, store: &ResultStore) -> Task<u64, u64> {
    Task::infallible("shared", move |_: u64| {
        processes::counted(&count, &format!("shared {value}"));
        async move { value }
    })
    .inputs(["x"])
    .cache_policy(INPUTS)
    .result_storage(store.clone())
}

/// A child: `reader` answers commands on stdin (`read`, `advance <ms>`) with one line
/// each; `writer` replaces the record once; `declared` runs load → summarize once.
fn child() {
    let var = |k: &str| std::env::var(format!("{ROLE}_{k}")).unwrap();
    let count = PathBuf::from(var("COUNT"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = processes::store(&var("BACKEND"), &var("ROOT")).await;
        let value: u64 = var("VALUE").parse().unwrap();
        match var("MODE").as_str() {
            "reader" => {
                let clock = Arc::new(ManualClock::new(
                    chrono::Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
                ));
                let mut reader = shared(count, value, &store).clock(clock.clone());
                if let Ok(ms) = std::env::var(format!("{ROLE}_BOUND_MS")) {
                    reader = reader
                        .memory_tier_revalidate_after(Duration::from_millis(ms.parse().unwrap()));
                }
                for line in std::io::stdin().lock().lines() {
                    let line = line.unwrap();
                    let mut words = line.split_whitespace();
                    match words.next() {
                        Some("read") => {
                            let run = reader.run(1).await;
                            println!("{} {}", run.value().unwrap(), run.state());
                        }
                        Some("advance") => {
                            let ms: i64 = words.next().unwrap().parse().unwrap();
                            clock.advance(chrono::Duration::milliseconds(ms));
                            println!("advanced");
                        }
                        _ => return,
                    }
                }
            }
            "writer" => {
                let writer = shared(count, value, &store).refresh_cache(true);
                let run = writer.run(1).await;
                println!("{} {}", run.value().unwrap(), run.state());
            }
            "declared" => {
                let c = count.clone();
                let load = Task::infallible("load", move |day: String| {
                    processes::counted(&c, "load");
                    async move {
                        let digest = hash_value(&("dataset", "v7")).unwrap();
                        Hashed::new(vec![day.len() as u32, 2, 3], digest)
                    }
                })
                .inputs(["day"])
                .cache_policy(INPUTS)
                .result_storage(store.clone());
                let summarize = Task::infallible("summarize", move |rows: Hashed<Vec<u32>>| {
                    processes::counted(&count, "summarize");
                    async move { rows.iter().sum::<u32>() }
                })
                .inputs(["rows"])
                .cache_policy(INPUTS)
                .result_storage(store.clone());
                let rows = load.run("mon".into()).await;
                let sum = summarize.run(rows.value().unwrap().clone()).await;
                println!(
                    "{} {} {}",
                    rows.state(),
                    sum.state(),
                    sum.info().cache_key().unwrap()
                );
            }
            other => panic!("unknown mode {other}"),
        }
    });
}

struct Case {
    backend: &'static str,
    root: String,
    dir: tempfile::TempDir,
}

impl Case {
    fn new(backend: &'static str, name: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let root = match backend {
            "local" => dir.path().join("store").display().to_string(),
            _ => format!("{}/{name}", emulators::run_prefix()),
        };
        Case { backend, root, dir }
    }

    fn count(&self) -> PathBuf {
        self.dir.path().join("executions")
    }

    fn command(&self, mode: &str, value: u64) -> Command {
        let var = |k: &str| format!("{ROLE}_{k}");
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .env(ROLE, "1")
            .env(var("BACKEND"), self.backend)
            .env(var("ROOT"), &self.root)
            .env(var("COUNT"), self.count())
            .env(var("MODE"), mode)
            .env(var("VALUE"), value.to_string())
            .stderr(Stdio::inherit());
        command
    }

    /// Runs a one-shot child and returns its output line.
    fn once(&self, mode: &str, value: u64) -> String {
        let out = self.command(mode, value).output().unwrap();
        assert!(out.status.success(), "{mode} child failed");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

/// A reader process kept alive between commands.
struct Reader {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Reader {
    fn start(case: &Case, bound_ms: Option<u64>) -> Reader {
        let mut command = case.command("reader", 1);
        if let Some(ms) = bound_ms {
            command.env(format!("{ROLE}_BOUND_MS"), ms.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Reader {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    fn stop(mut self) {
        writeln!(self.stdin, "quit").unwrap();
        drop(self.stdin);
        assert!(self.child.wait().unwrap().success());
    }
}

fn a_replaced_record_is_served_for_at_most_the_bound(backend: &'static str) {
    let case = Case::new(backend, "tier-bound");
    let mut reader = Reader::start(&case, None);
    assert_eq!(reader.ask("read"), "1 Completed()");
    assert_eq!(case.once("writer", 2), "2 Completed()");
    // The reader's tier still trusts its entry: 1 s on its clock by default.
    assert_eq!(reader.ask("read"), "1 Cached(type=COMPLETED)");
    assert_eq!(reader.ask("advance 999"), "advanced");
    assert_eq!(reader.ask("read"), "1 Cached(type=COMPLETED)");
    assert_eq!(reader.ask("advance 1"), "advanced");
    assert_eq!(
        reader.ask("read"),
        "2 Cached(type=COMPLETED)",
        "{backend}: the new value once the bound has passed"
    );
    reader.stop();

    // A bound of 0: every hit checks the store's version.
    let mut strict = Reader::start(&case, Some(0));
    assert_eq!(strict.ask("read"), "2 Cached(type=COMPLETED)");
    assert_eq!(case.once("writer", 3), "3 Completed()");
    assert_eq!(strict.ask("read"), "3 Cached(type=COMPLETED)");
    assert_eq!(strict.ask("read"), "3 Cached(type=COMPLETED)");
    strict.stop();
    assert_eq!(
        executions(&case.count()),
        ["shared 1", "shared 2", "shared 3"],
        "{backend}"
    );
}

fn a_declared_hash_keys_the_downstream_task_in_a_new_process(backend: &'static str) {
    let case = Case::new(backend, "declared");
    let first = case.once("declared", 0);
    let second = case.once("declared", 0);
    let key = first.split(' ').nth(2).unwrap().to_owned();
    assert_eq!(first, format!("Completed() Completed() {key}"), "{backend}");
    assert_eq!(
        second,
        format!("Cached(type=COMPLETED) Cached(type=COMPLETED) {key}"),
        "{backend}: the same downstream key from the cached upstream"
    );
    assert_eq!(
        executions(&case.count()),
        ["load", "summarize"],
        "{backend}"
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
    for backend in backends {
        a_replaced_record_is_served_for_at_most_the_bound(backend);
        a_declared_hash_keys_the_downstream_task_in_a_new_process(backend);
        eprintln!("memory_tier_processes: {backend}: 2 behaviours passed");
    }
}
