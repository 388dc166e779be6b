//! The command on what real flow runs leave behind: cache records, a cache hit's
//! `used` marker, checkpoints and flow run records.

mod common;

use cairn::cache::INPUTS;
use cairn::{Flow, Task};
use common::{stderr, stdout, TestStore};

fn add_one(store: &cairn::ResultStore) -> Task<i64, i64> {
    Task::infallible("add_one", |x: i64| async move { x + 1 })
        .inputs(["x"])
        .task_source("x + 1")
        .cache_policy(INPUTS)
        .result_storage(store.clone())
        .memory_tier(false)
        .checkpoint(true)
}

async fn flows_are_listed_and_their_hits_mark_records_used(s: TestStore) {
    let task = add_one(&s.store);
    // The second run comes two days after the first: a hit within a day of its
    // record's creation writes no marker (the creation already says when it was used).
    let clocks: [Option<std::sync::Arc<dyn cairn::Clock>>; 2] = [
        None,
        Some(std::sync::Arc::new(cairn::ManualClock::new(
            chrono::Utc::now() + chrono::TimeDelta::days(2),
        ))),
    ];
    for clock in clocks {
        let flow = Flow::new("adder");
        let flow = match clock {
            Some(clock) => flow.clock(clock),
            None => flow,
        };
        let run = flow
            .result_store(s.store.clone())
            .checkpointing(true)
            .run((), |_| {
                let task = task.clone();
                async move {
                    let a = task.call(1).await?;
                    let b = task.call(2).await?;
                    Ok::<_, cairn::TaskError>(a + b)
                }
            })
            .await;
        assert_eq!(run.value(), Some(&5), "{:?}", run.error());
    }
    // The second run's two hits each marked their record (written in the background).
    let mut markers = 0;
    for _ in 0..100 {
        markers = stdout(&s.cairn(&["ls", "--kind", "used", "--json"]))
            .lines()
            .count();
        if markers == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(markers, 2);
    let o = s.cairn(&["ls", "--kind", "cache", "--json"]);
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
    let o = s.cairn(&["runs", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), 2, "{}", stdout(&o));
    assert!(runs
        .iter()
        .all(|r| r["flow"] == "adder" && r["state"] == "Completed"));
    assert_eq!(runs[0]["tasks"]["Cached"], 2, "{}", stdout(&o));
    let id = runs[1]["run_id"].as_str().unwrap();
    let mut args = vec!["runs", "show", id];
    args.push(&s.url);
    let o = common::cairn(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Completed"), "{}", stdout(&o));
    // Every record is intact, and a prune removes nothing a run needs.
    assert_eq!(s.cairn(&["verify"]).status.code(), Some(0));
    let before = s.listing().await;
    let o = s.cairn(&["prune"]);
    assert!(
        stdout(&o).ends_with("removed 0 entries, 0 B\n"),
        "{}",
        stdout(&o)
    );
    assert_eq!(s.listing().await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn local() {
    flows_are_listed_and_their_hits_mark_records_used(TestStore::local().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3() {
    if let Some(s) = TestStore::s3("flows").await {
        flows_are_listed_and_their_hits_mark_records_used(s).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gcs() {
    if let Some(s) = TestStore::gcs("flows").await {
        flows_are_listed_and_their_hits_mark_records_used(s).await;
    }
}
