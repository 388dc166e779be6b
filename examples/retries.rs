//! Retries with input caching, as in the Prefect seed: "whenever Prefect detects that
//! a task will need to be run in the future, it automatically caches any information
//! that the task needs to run".
//!
//! `load` fails twice (a flaky warehouse) and has `retries(3)`: between attempts the
//! run is `Retrying`, waits `retry_delay`, and calls the body again with the same
//! input — the upstream `extract` is not run again. With checkpointing on, the input
//! and state of a run that will be retried are also stored beside the checkpoints, so
//! another process could resume it.
//!
//! ```text
//! cargo run --example retries                 # data in ./target/cairn-examples/retries
//! cargo run --example retries -- /tmp/rt      # data elsewhere
//! ```

mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn::{BoxError, Flow, ResultStore, Settings, Task};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Batch {
    day: String,
    rows: Vec<u32>,
}

fn main() -> ExitCode {
    common::main(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/cairn-examples/retries".into());
    let store = ResultStore::local(&dir)?;

    let extract_runs = Arc::new(AtomicUsize::new(0));
    let extract = {
        let extract_runs = extract_runs.clone();
        Task::infallible("extract", move |day: String| {
            extract_runs.fetch_add(1, Ordering::SeqCst);
            async move {
                Batch {
                    day,
                    rows: vec![12, 7, 30, 1],
                }
            }
        })
        .inputs(["day"])
    };

    let load_attempts = Arc::new(AtomicUsize::new(0));
    let load = {
        let load_attempts = load_attempts.clone();
        Task::new("load", move |batch: Batch| {
            let attempt = load_attempts.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                println!(
                    "  load, attempt {attempt}: {} rows of {}",
                    batch.rows.len(),
                    batch.day
                );
                if attempt <= 2 {
                    return Err::<u32, BoxError>(
                        format!("warehouse busy (attempt {attempt})").into(),
                    );
                }
                Ok(batch.rows.iter().sum())
            }
        })
        .inputs(["batch"])
        .retries(3)
        .retry_delay(Duration::from_millis(200))
    };

    let home = tempfile::tempdir()?;
    let settings = Settings::from_sources(home.path(), Vec::<(String, String)>::new())?;
    let flow = Flow::new("etl")
        .settings(settings)
        .result_store(store.clone())
        .checkpointing(true);
    let run = flow
        .run("2024-03-15".to_string(), |day| async {
            let batch = extract.call(day).await?;
            load.call(batch).await
        })
        .await;

    println!("\nflow run '{}': {}", run.name(), run.state());
    for task_run in run.task_runs() {
        let states: Vec<String> = task_run.states().iter().map(|s| s.to_string()).collect();
        println!(
            "  {:<12} {} attempt(s): {}",
            task_run.name(),
            task_run.attempts(),
            states.join(" → ")
        );
    }
    println!(
        "\nextract ran {} time(s); load ran {} time(s) and returned {:?}",
        extract_runs.load(Ordering::SeqCst),
        load_attempts.load(Ordering::SeqCst),
        run.value()
    );
    let inputs = format!("runs/v1/etl/{}/load/0.inputs", run.id());
    let record = store.read_record::<serde_json::Value>(&inputs).await?;
    println!(
        "while load was retrying, its input was kept for a resume at {dir}/{inputs}:\n  \
         last state written {}, inputs {}",
        record.value["state"], record.value["inputs"]
    );

    assert_eq!(extract_runs.load(Ordering::SeqCst), 1);
    assert_eq!(load_attempts.load(Ordering::SeqCst), 3);
    assert_eq!(run.value(), Some(&50));
    Ok(())
}
