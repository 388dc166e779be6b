//! A templated target, as in the Prefect seed:
//!
//! ```python
//! @task(target="{date:%A}/{task_name}.txt", checkpoint=True, result=LocalResult(dir="~/.prefect"))
//! def func_task():
//!     return 99
//! ```
//!
//! The target is rendered from the run's context — here the weekday of the flow run's
//! date — and looked up before the task runs: when it exists, the run is `Cached`, its
//! value is read from the file, and the body does not run. Otherwise the body runs and
//! its output is published at the target atomically.
//!
//! ```text
//! cargo run --example date_target               # data in ./target/cairn-examples/date_target
//! cargo run --example date_target -- /tmp/dt    # data elsewhere
//! ```

mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn::{Flow, ResultStore, Settings, Task};

fn main() -> ExitCode {
    common::main(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/cairn-examples/date_target".into());
    let result = ResultStore::local(&dir)?;

    let body_runs = Arc::new(AtomicUsize::new(0));
    let func_task = {
        let body_runs = body_runs.clone();
        Task::infallible("func_task", move |(): ()| {
            body_runs.fetch_add(1, Ordering::SeqCst);
            async { 99u64 }
        })
        .result(result.clone())
        .target("{date:%A}/{task_name}.txt")
    };

    let now = chrono::Utc::now();
    let target = now.format("%A/func_task.txt").to_string();
    // Start from scratch so that the first run below does the work, even when the
    // example ran before today.
    if result.exists(&target).await? {
        result.delete(&target).await?;
        println!("removed {target}, left by an earlier run of this example");
    }

    let home = tempfile::tempdir()?;
    let settings = Settings::from_sources(home.path(), Vec::<(String, String)>::new())?;
    let flow = Flow::new("seed").settings(settings).date(now);

    for attempt in ["first", "second"] {
        let run = flow.run((), |_| async { func_task.call(()).await }).await;
        let task_run = run.task_runs().first().ok_or("no task run")?;
        println!(
            "{attempt} flow run '{}': task run '{}' finished in state {}, value {:?}, target {}",
            run.name(),
            task_run.name(),
            task_run.state(),
            run.value(),
            task_run.location().unwrap_or("-"),
        );
    }

    let path = std::path::Path::new(&dir).join(&target);
    println!(
        "\n{} contains {:?}; the body ran {} time(s) over two flow runs",
        path.display(),
        std::fs::read_to_string(&path)?,
        body_runs.load(Ordering::SeqCst)
    );
    assert_eq!(body_runs.load(Ordering::SeqCst), 1);
    Ok(())
}
