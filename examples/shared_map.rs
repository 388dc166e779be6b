//! Three worker processes share one map through the local store: each item's body runs
//! once in all, and every worker ends with the whole result.
//!
//! ```text
//! cargo run --example shared_map                 # starts 3 workers and waits for them
//! cargo run --example shared_map -- worker DIR   # one worker (start several, anywhere
//!                                                # that sees DIR, with one CAIRN_RUN_ID)
//! ```
//!
//! Each worker runs the same flow, under the same flow run id, over the same 12 items.
//! A worker that finds an item leased by another moves on and comes back for it later;
//! an item finished elsewhere comes back `Cached`. On many machines, point the store at
//! a bucket (`s3://…`, `gs://…`) instead of a directory.

mod common;

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use cairn::cache::INPUTS;
use cairn::{Flow, ResultStore, State, Task};

const ITEMS: u64 = 12;

fn main() -> ExitCode {
    common::main(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let dir = args.get(2).ok_or("usage: shared_map worker DIR")?;
        return worker(dir).await;
    }
    // The coordinator: a fresh directory and run id, three workers, then the summary.
    let dir = std::env::temp_dir().join(format!("cairn-shared-map-{}", std::process::id()));
    let run_id = format!("shared-map-{}", std::process::id());
    let started = Instant::now();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .args(["worker", &dir.display().to_string()])
                .env("CAIRN_RUN_ID", &run_id)
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for mut w in workers {
        if !w.wait()?.success() {
            return Err("a worker failed".into());
        }
    }
    println!(
        "3 workers, {ITEMS} items of 0.5 s each: {:.1} s (one worker alone: about {:.1} s)",
        started.elapsed().as_secs_f64(),
        ITEMS as f64 * 0.5
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

async fn worker(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let me = std::process::id();
    let square = Task::new("square", move |x: u64| async move {
        tokio::time::sleep(Duration::from_millis(500)).await; // the work
        Ok::<_, std::io::Error>((x * x, me))
    })
    .inputs(["x"])
    .cache_policy(INPUTS)
    .result(ResultStore::local(dir)?);

    // The run id comes from CAIRN_RUN_ID, so all workers are one flow run.
    let run = Flow::new("shared-map")
        .run((), |_| async {
            let runs = square.map_shared(0..ITEMS).await;
            let ran_here = runs
                .iter()
                .filter(|r| r.state() == &State::Completed)
                .count();
            let values: Vec<(u64, u32)> = runs
                .into_iter()
                .map(|r| r.into_result())
                .collect::<Result<_, _>>()?;
            Ok((ran_here, values))
        })
        .await;
    let (ran_here, values) = run.into_result().map_err(|e| e.to_string())?;
    let squares: Vec<u64> = values.iter().map(|(v, _)| *v).collect();
    println!("worker {me}: ran {ran_here} of {ITEMS} items; result {squares:?}");
    Ok(())
}
