//! Resuming a flow run by id in a new process, after the first process was SIGKILLed in
//! the middle of a task: the tasks that completed are `Cached` without running, the
//! interrupted one and those after it run, and the outputs equal an uninterrupted
//! run's. Resuming with other parameters, or a run that is still running, is refused.
//! Executions are counted in a file every process appends to (O_APPEND). On the local
//! disk, and on S3 and GCS when their emulators are configured (required under CI).

mod emulators;
mod processes;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn::cache::LeaseConfig;
use cairn::{Flow, Task};

const ROLE: &str = "CAIRN_RESUME_CHILD";

/// extract → transform → load; transform blocks for a long time when `slow`.
fn child() {
    let var = |k: &str| std::env::var(format!("{ROLE}_{k}")).unwrap();
    let count = PathBuf::from(var("COUNT"));
    let slow = var("SLOW") == "1";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = processes::store(&var("BACKEND"), &var("ROOT")).await;
        let c = count.clone();
        let extract = Task::new("extract", move |day: String| {
            processes::counted(&c, "extract");
            async move { Ok::<_, std::io::Error>(format!("rows of {day}")) }
        });
        let c = count.clone();
        let transform = Task::new("transform", move |rows: String| {
            processes::counted(&c, "transform");
            async move {
                println!("TRANSFORM_STARTED");
                if slow {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                }
                Ok::<_, std::io::Error>(rows.to_uppercase())
            }
        });
        let c = count.clone();
        let load = Task::new("load", move |rows: String| {
            processes::counted(&c, "load");
            async move { Ok::<_, std::io::Error>(format!("loaded {}", rows.len())) }
        });
        let lease = LeaseConfig::new(Duration::from_secs(3), Duration::from_secs(1)).unwrap();
        let mut flow = Flow::new("etl")
            .result_store(store)
            .checkpointing(true)
            .lease(lease);
        flow = match var("MODE").as_str() {
            "resume" => flow.resume(var("RUN_ID")),
            _ => flow.run_id(var("RUN_ID")),
        };
        let day = var("DAY");
        let run = flow
            .run(day.clone(), |day| async {
                let rows = extract.call(day).await?;
                let upper = transform.call(rows).await?;
                let done = load.call(upper.clone()).await?;
                Ok(format!("{upper} / {done}"))
            })
            .await;
        let states: Vec<String> = run
            .task_runs()
            .iter()
            .map(|r| format!("{}={}", r.task(), r.state()))
            .collect();
        match run.into_result() {
            Ok(v) => println!("VALUE {v}"),
            Err(e) => println!("REFUSED {e}"),
        }
        println!("STATES {}", states.join(","));
    });
}

struct Case {
    backend: &'static str,
    root: String,
    dir: tempfile::TempDir,
}

impl Case {
    fn spawn(&self, mode: &str, run_id: &str, day: &str, slow: bool) -> Child {
        let var = |k: &str| format!("{ROLE}_{k}");
        Command::new(std::env::current_exe().unwrap())
            .env(ROLE, "1")
            .env(var("BACKEND"), self.backend)
            .env(var("ROOT"), &self.root)
            .env(var("COUNT"), self.dir.path().join("executions"))
            .env(var("MODE"), mode)
            .env(var("RUN_ID"), run_id)
            .env(var("DAY"), day)
            .env(var("SLOW"), if slow { "1" } else { "0" })
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }
    /// The flow run's history: `task:state` for each transition object, sorted.
    fn history(&self, run_id: &str) -> Vec<String> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            use cairn::backend::BackendExt;
            let store = processes::store(self.backend, &self.root).await;
            let prefix = format!("runs/v1/etl/{run_id}/states/");
            let mut seen: Vec<String> = store
                .backend()
                .list_all(&prefix)
                .await
                .unwrap()
                .into_iter()
                .map(|m| {
                    let rest = &m.key.as_str()[prefix.len()..];
                    let task = rest.split('/').next().unwrap().to_owned();
                    let state = rest.rsplit('-').next().unwrap().to_owned();
                    format!("{task}:{state}")
                })
                .collect();
            seen.sort();
            seen
        })
    }
    fn executions(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("executions"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn lines_until(child: &mut Child, prefix: &str) -> Vec<String> {
    let mut reader = BufReader::new(child.stdout.as_mut().unwrap());
    let mut lines = Vec::new();
    let mut buf = String::new();
    while reader.read_line(&mut buf).unwrap() > 0 {
        let line = buf.trim_end().to_owned();
        buf.clear();
        let done = line.starts_with(prefix);
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

fn outcome(mut child: Child) -> Vec<String> {
    let lines = lines_until(&mut child, "STATES");
    assert!(child.wait().unwrap().success(), "{lines:?}");
    lines
}

fn a_killed_run_resumes_where_it_stopped(backend: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let root = match backend {
        "local" => dir.path().join("store").display().to_string(),
        _ => format!("{}/resume", emulators::run_prefix()),
    };
    let case = Case { backend, root, dir };

    // An uninterrupted run, for the expected output.
    let expected = outcome(case.spawn("run", "reference-run", "monday", false));
    let expected_value = expected
        .iter()
        .find(|l| l.starts_with("VALUE"))
        .unwrap()
        .clone();
    std::fs::remove_file(case.dir.path().join("executions")).unwrap();

    // The run is killed while transform runs.
    let mut first = case.spawn("run", "run-42", "monday", true);
    lines_until(&mut first, "TRANSFORM_STARTED");
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(case.executions(), ["extract", "transform"]);
    // The history shows where it stopped: transform started and never finished.
    assert_eq!(
        case.history("run-42"),
        ["extract:completed", "extract:running", "transform:running"],
        "{backend}"
    );

    // Other parameters: refused, nothing runs.
    let other = outcome(case.spawn("resume", "run-42", "tuesday", false));
    assert!(
        other
            .iter()
            .any(|l| l.starts_with("REFUSED") && l.contains("other parameters")),
        "{backend}: {other:?}"
    );
    // A run id that never ran: refused.
    let unknown = outcome(case.spawn("resume", "run-43", "monday", false));
    assert!(
        unknown.iter().any(|l| l.contains("nothing to resume")),
        "{unknown:?}"
    );
    assert_eq!(case.executions(), ["extract", "transform"]);

    // Resumed: extract is Cached, transform and load run, the output is the same.
    let resumed = outcome(case.spawn("resume", "run-42", "monday", false));
    assert!(
        resumed.contains(&expected_value),
        "{backend}: {resumed:?} vs {expected_value}"
    );
    let states = resumed.iter().find(|l| l.starts_with("STATES")).unwrap();
    assert!(states.contains("extract=Cached"), "{states}");
    assert!(states.contains("transform=Completed"), "{states}");
    assert_eq!(
        case.executions(),
        ["extract", "transform", "transform", "load"]
    );
    // One write-once object per transition, from both processes.
    assert_eq!(
        case.history("run-42"),
        [
            "extract:cached",
            "extract:completed",
            "extract:running",
            "extract:running",
            "load:completed",
            "load:running",
            "transform:completed",
            "transform:running",
            "transform:running",
        ],
        "{backend}"
    );
}

fn a_running_flow_run_cannot_be_resumed(backend: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let root = match backend {
        "local" => dir.path().join("store").display().to_string(),
        _ => format!("{}/resume-running", emulators::run_prefix()),
    };
    let case = Case { backend, root, dir };
    let mut running = case.spawn("run", "run-7", "monday", true);
    lines_until(&mut running, "TRANSFORM_STARTED");
    let refused = outcome(case.spawn("resume", "run-7", "monday", false));
    running.kill().unwrap();
    running.wait().unwrap();
    assert!(
        refused.iter().any(|l| l.contains("still running")),
        "{backend}: {refused:?}"
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
        a_killed_run_resumes_where_it_stopped(backend);
        a_running_flow_run_cannot_be_resumed(backend);
        eprintln!("resume: {backend}: 2 behaviours passed");
    }
}
