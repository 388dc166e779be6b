//! Checkpointing, as in the Prefect seed: every successful output of a task with
//! `checkpoint(true)` is written through its result store.
//!
//! ```python
//! class MyTask(Task):
//!     def run(self):
//!         return 42
//! class_task = MyTask(checkpoint=True, result=LocalResult(dir="~/.prefect"))
//!
//! @task(checkpoint=True, result=LocalResult(dir="~/.prefect"))
//! def func_task():
//!     return 99
//! ```
//!
//! Checkpoints go to `runs/v1/<flow>/<flow run id>/<task>/<map index>` as verified
//! records (length and BLAKE3 checked on every read), or wherever a `location`
//! template says, as plain serialized bytes. Without a checkpoint setting anywhere,
//! nothing is written.
//!
//! ```text
//! cargo run --example checkpointing                # data in ./target/cairn-examples/checkpointing
//! cargo run --example checkpointing -- /tmp/ck     # data elsewhere
//! ```

mod common;

use std::process::ExitCode;

use cairn::{Flow, ResultStore, Settings, Task};

fn main() -> ExitCode {
    common::main(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/cairn-examples/checkpointing".into());
    // `LocalResult(dir=...)`: a store in a directory on the local disk.
    let result = ResultStore::local(&dir)?;
    println!("result store: {}\n", result.backend().describe());

    let class_task = Task::infallible("class_task", |(): ()| async { 42u64 })
        .checkpoint(true)
        .result(result.clone());
    let func_task = Task::infallible("func_task", |(): ()| async { 99u64 })
        .checkpoint(true)
        .result(result.clone())
        // A location template: the checkpoint is a plain JSON file at this path.
        .location("{flow_name}/{flow_run_name}/{task_name}.json");
    // No checkpoint setting at any level (task, flow, environment, config file): the
    // output lives in memory only, as in Prefect Core.
    let in_memory = Task::infallible("in_memory", |(): ()| async { 7u64 }).result(result.clone());

    // Settings from an empty home, so that this machine's CAIRN__FLOWS__CHECKPOINTING
    // or ~/.cairn/config.toml cannot change what the example shows.
    let home = tempfile::tempdir()?;
    let settings = Settings::from_sources(home.path(), Vec::<(String, String)>::new())?;
    let flow = Flow::new("seed").settings(settings);
    let run = flow
        .run((), |_| async {
            let a = class_task.call(()).await?;
            let b = func_task.call(()).await?;
            let c = in_memory.call(()).await?;
            Ok((a, b, c))
        })
        .await;
    println!(
        "\nflow run '{}' ({}): {}",
        run.name(),
        run.id(),
        run.state()
    );

    for task_run in run.task_runs() {
        match &task_run.location() {
            Some(location) => println!(
                "  {:<16} {:<12} checkpoint at {location}",
                task_run.name(),
                task_run.state().to_string()
            ),
            None => println!(
                "  {:<16} {:<12} no checkpoint (checkpointing is off for it)",
                task_run.name(),
                task_run.state().to_string()
            ),
        }
    }

    // Read the checkpoints back.
    let class_run = run
        .runs_of("class_task")
        .next()
        .ok_or("no class_task run")?;
    let location = class_run.location().ok_or("no checkpoint")?;
    let record = result.read_record::<u64>(location).await?;
    println!(
        "\nclass_task's checkpoint is a verified record: value {}, task {:?}, type {:?}, \
         {} payload bytes, checksum {}",
        record.value,
        record.header.task.as_deref().unwrap_or("?"),
        record.header.output_type.as_deref().unwrap_or("?"),
        record.header.payload_len,
        record.header.payload_checksum
    );
    assert_eq!(record.value, 42);

    let func_run = run.runs_of("func_task").next().ok_or("no func_task run")?;
    let location = func_run.location().ok_or("no checkpoint")?;
    let path = std::path::Path::new(&dir).join(location);
    let text = std::fs::read_to_string(&path)?;
    println!(
        "func_task's checkpoint is plain JSON any tool reads: {} contains {text:?}",
        path.display()
    );
    assert_eq!(result.read::<u64>(location).await?, 99);

    let unseen = run.runs_of("in_memory").next().ok_or("no in_memory run")?;
    assert!(unseen.location().is_none());
    Ok(())
}
