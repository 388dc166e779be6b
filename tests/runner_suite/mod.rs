//! The runner's store-facing behaviours — targets, checkpoints, concurrent flows —
//! run against every backend by `runner_{memory,local,s3,gcs}.rs`.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn::{Flow, ResultStore, State, Task};
use chrono::{TimeZone, Utc};

fn counted(name: &str, counter: &Arc<AtomicUsize>, output: String) -> Task<String, String> {
    let counter = counter.clone();
    Task::new(name, move |day: String| {
        counter.fetch_add(1, Ordering::SeqCst);
        let output = output.clone();
        async move { Ok::<_, std::io::Error>(format!("{output} on {day}")) }
    })
    .inputs(["day"])
}

/// A task of one input, `day`, that returns `value` and counts its runs in `counter`,
/// persisting to `store`.
fn returning<T>(
    name: &str,
    value: &T,
    counter: &Arc<AtomicUsize>,
    store: &ResultStore,
) -> Task<String, T>
where
    T: cairn::TaskOutput,
{
    let (value, counter) = (value.clone(), counter.clone());
    Task::new(name, move |_day: String| {
        counter.fetch_add(1, Ordering::SeqCst);
        let value = value.clone();
        async move { Ok::<_, std::io::Error>(value) }
    })
    .inputs(["day"])
    .result(store.clone())
}

/// An existing target makes the run Cached with the target's value; the body does not
/// run, in a later flow run and with a separately defined task (as in another process).
pub async fn an_existing_target_skips_the_body(store: &ResultStore) {
    let runs = Arc::new(AtomicUsize::new(0));
    let make = || {
        counted("report", &runs, "sales".into())
            .result(store.clone())
            .target("{date:%A}/{task_name}-{day}.txt")
    };
    let date = Utc.with_ymd_and_hms(2024, 3, 1, 9, 0, 0).unwrap(); // a Friday
    let flow = Flow::new("daily").date(date);
    let task = make();
    let first = flow
        .run((), |_| async move {
            task.run("mon".to_string()).await.into_result()
        })
        .await;
    assert_eq!(
        first.state(),
        &State::Completed,
        "{:?}",
        first.error().map(|e| e.to_string())
    );
    assert_eq!(first.task_runs()[0].state(), &State::Completed);
    assert_eq!(
        first.task_runs()[0].location(),
        Some("Friday/report-mon.txt")
    );
    assert_eq!(
        store.read_bytes("Friday/report-mon.txt").await.unwrap(),
        "sales on mon"
    );

    let task = make();
    let second = flow
        .run((), |_| async move {
            task.run("mon".to_string()).await.into_result()
        })
        .await;
    assert_eq!(second.task_runs()[0].state(), &State::Cached);
    assert_eq!(second.value().map(String::as_str), Some("sales on mon"));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body ran again");

    // Another input renders another target: the body runs.
    let task = make();
    let third = flow
        .run((), |_| async move { task.call("tue".to_string()).await })
        .await;
    assert_eq!(third.task_runs()[0].state(), &State::Completed);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A target some other tool wrote counts as present (Make semantics).
pub async fn a_foreign_target_counts_as_present(store: &ResultStore) {
    store
        .write_bytes(
            "made-by-hand/report.txt",
            "written by hand".into(),
            cairn::PutMode::Create,
        )
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let task = counted("report", &runs, "x".into())
        .result(store.clone())
        .target("made-by-hand/{task_name}.txt");
    let run = task.run("mon".into()).await;
    assert_eq!(run.state(), &State::Cached);
    assert_eq!(run.value().map(String::as_str), Some("written by hand"));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// Checkpoints land where the location says: at the templated location as plain
/// bytes, at the default location as a verified record.
pub async fn checkpoints_land_where_the_location_says(store: &ResultStore) {
    let runs = Arc::new(AtomicUsize::new(0));
    let templated = counted("clean", &runs, "rows".into())
        .checkpoint(true)
        .result(store.clone())
        .location("checkpoints/{flow_name}/{task_name}-{map_index:03}.json");
    let default = counted("aggregate", &runs, "totals".into())
        .checkpoint(true)
        .result(store.clone());
    let flow = Flow::new("etl");
    let run = flow
        .run((), |_| async move {
            templated.call("a".into()).await?;
            templated.call("b".into()).await?;
            default.call("c".into()).await?;
            Ok(())
        })
        .await;
    assert_eq!(run.state(), &State::Completed);
    let locations: Vec<_> = run
        .task_runs()
        .iter()
        .map(|r| r.location().map(str::to_owned).unwrap())
        .collect();
    let record = format!("runs/v1/etl/{}/aggregate/0", run.id());
    assert_eq!(
        locations,
        [
            "checkpoints/etl/clean-000.json".to_string(),
            "checkpoints/etl/clean-001.json".to_string(),
            record.clone(),
        ]
    );
    assert_eq!(
        store
            .read::<String>("checkpoints/etl/clean-001.json")
            .await
            .unwrap(),
        "rows on b"
    );
    assert_eq!(
        store
            .read_bytes("checkpoints/etl/clean-000.json")
            .await
            .unwrap(),
        "\"rows on a\""
    );
    let back = store.read_record::<String>(&record).await.unwrap();
    assert_eq!(back.value, "totals on c");
    assert_eq!(back.header.task.as_deref(), Some("aggregate"));
}

/// Without checkpointing, a task writes nothing at all.
pub async fn nothing_is_persisted_unless_asked(store: &ResultStore) {
    let runs = Arc::new(AtomicUsize::new(0));
    let task = counted("quiet", &runs, "v".into()).result(store.clone());
    let settings = cairn::Settings::from_sources(
        tempfile::tempdir().unwrap().path(),
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    let run = Flow::new("quiet")
        .settings(settings)
        .run((), |_| async move { task.call("a".into()).await })
        .await;
    assert_eq!(run.state(), &State::Completed);
    assert_eq!(run.task_runs()[0].location(), None);
    use futures::TryStreamExt;
    let listed: Vec<_> = store.list("").try_collect().await.unwrap();
    assert!(listed.is_empty(), "something was written: {listed:?}");
}

/// Concurrent flows publishing the same target leave exactly one complete object, and
/// every flow run gets a complete value.
pub async fn concurrent_flows_leave_one_complete_target(store: &ResultStore) {
    const FLOWS: usize = 8;
    const LEN: usize = 256 << 10;
    let runs = Arc::new(AtomicUsize::new(0));
    let flows = (0..FLOWS).map(|i| {
        let counter = runs.clone();
        let task = Task::new("render", move |_: ()| {
            counter.fetch_add(1, Ordering::SeqCst);
            // Each run's output is different, and large enough to take a while.
            async move { Ok::<_, std::io::Error>(bytes::Bytes::from(vec![i as u8; LEN])) }
        })
        .result(store.clone())
        .target("shared/{task_name}.bin");
        async move {
            Flow::new(format!("flow-{i}"))
                .run((), |_| async move { task.call(()).await })
                .await
        }
    });
    let results = futures::future::join_all(flows).await;
    for run in &results {
        assert!(
            run.state().is_completed(),
            "{:?}",
            run.error().map(|e| e.to_string())
        );
        let value = run.value().unwrap();
        assert_eq!(value.len(), LEN);
        assert!(value.iter().all(|b| *b == value[0]), "a torn value");
    }
    let stored = store.read_bytes("shared/render.bin").await.unwrap();
    assert_eq!(stored.len(), LEN, "the target is not complete");
    assert!(
        stored.iter().all(|b| *b == stored[0]),
        "the target mixes two writers"
    );
    assert!((stored[0] as usize) < FLOWS);
    use futures::TryStreamExt;
    let listed: Vec<_> = store.list("shared/").try_collect().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(runs.load(Ordering::SeqCst) >= 1);
}

/// An input that cannot be a template value (a map with tuple keys) does not stop a
/// target that never names it; a target that names it fails before the body, saying
/// why.
pub async fn only_inputs_a_template_names_become_template_values(store: &ResultStore) {
    type Grid = std::collections::HashMap<(i32, i32), u8>;
    let runs = Arc::new(AtomicUsize::new(0));
    let make = |target: &str| {
        let runs = runs.clone();
        Task::infallible("grid", move |(_day, grid): (String, Grid)| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move { grid.len() as u64 }
        })
        .inputs(["day", "grid"])
        .result(store.clone())
        .target(target)
    };
    let grid: Grid = [((0, 0), 1), ((0, 1), 2)].into_iter().collect();
    let run = make("grids/{day}.json")
        .run(("mon".into(), grid.clone()))
        .await;
    assert_eq!(
        (run.state(), run.value()),
        (&State::Completed, Some(&2)),
        "{:?}",
        run.error().map(ToString::to_string)
    );
    assert_eq!(run.info().location(), Some("grids/mon.json"));
    assert!(store.exists("grids/mon.json").await.unwrap());

    let naming = make("grids/{grid}.json").run(("mon".into(), grid)).await;
    let error = naming
        .error()
        .expect("a template naming the map fails")
        .to_string();
    assert!(error.contains("input 'grid'"), "{error}");
    assert!(error.contains("key must be a string"), "{error}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A run whose output could never be published fails before its body runs: a
/// checkpoint location over the key length limit (from an over-long flow name), a
/// target over it (from an over-long task name), and — on the local disk — a file
/// name longer than the file system allows, reported as such.
pub async fn a_location_that_can_never_be_written_fails_before_the_body(store: &ResultStore) {
    let runs = Arc::new(AtomicUsize::new(0));
    let long = "n".repeat(1100);

    let checkpointed = counted("checkpointed", &runs, "x".into())
        .result(store.clone())
        .checkpoint(true);
    let flow = Flow::new(long.clone());
    let run = flow
        .run((), |_| async { checkpointed.call("mon".into()).await })
        .await;
    let error = run
        .error()
        .expect("the checkpoint location is too long")
        .to_string();
    assert!(error.contains("at most 1024 bytes"), "{error}");
    assert!(error.len() < 800, "the long name is shortened: {error}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    let targeted = counted(&long, &runs, "x".into())
        .result(store.clone())
        .target("{task_name}.txt");
    let run = targeted.run("mon".into()).await;
    let error = run.error().expect("the target is too long").to_string();
    assert!(error.contains("at most 1024 bytes"), "{error}");
    assert!(error.len() < 800, "the long name is shortened: {error}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    // 300 bytes: a valid key, but longer than a local file name may be.
    let wide = counted("wide", &runs, "x".into())
        .result(store.clone())
        .target("{day}.txt");
    let run = wide.run("d".repeat(300)).await;
    if store.url().starts_with("file://") {
        let error = run.error().expect("a file name over 255 bytes").to_string();
        assert!(error.contains("longer than"), "{error}");
        assert!(!error.contains("exists"), "no file exists: {error}");
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    } else {
        assert_eq!(run.state(), &State::Completed);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}

/// Byte outputs go raw under the default (JSON) serializer: in a cache record, in a
/// checkpoint and at a target whose extension names no serializer; a `.json` target
/// still gets JSON, because its extension asks for it.
pub async fn byte_outputs_are_stored_raw(store: &ResultStore) {
    use bytes::Bytes;
    let value = Bytes::from((0..=255u8).cycle().take(3000).collect::<Vec<u8>>());
    let runs = Arc::new(AtomicUsize::new(0));
    let make = |name: &str| returning(name, &value, &runs, store);
    let cached = make("cached_bytes")
        .cache_policy(cairn::cache::INPUTS)
        .result_storage(store.clone());
    let checkpointed = make("checkpointed_bytes")
        .checkpoint(true)
        .location("raw/{task_name}-{day}");
    let plain_target = make("plain_target").target("raw/target-{day}.dat");
    let json_target = make("json_target").target("raw/target-{day}.json");
    let run = Flow::new("bytes")
        .run((), |_| async move {
            cached.call("mon".into()).await?;
            checkpointed.call("mon".into()).await?;
            plain_target.call("mon".into()).await?;
            json_target.call("mon".into()).await?;
            Ok(())
        })
        .await;
    assert_eq!(run.state(), &State::Completed);
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    let record_at = run.task_runs()[0]
        .cache_record()
        .map(str::to_owned)
        .unwrap();
    let record = store.read_record::<Bytes>(&record_at).await.unwrap();
    assert_eq!(record.header.serializer, "bytes");
    assert_eq!(record.value, value);
    assert_eq!(
        store
            .read_bytes("raw/checkpointed_bytes-mon")
            .await
            .unwrap(),
        value
    );
    assert_eq!(store.read_bytes("raw/target-mon.dat").await.unwrap(), value);
    let json = store.read_bytes("raw/target-mon.json").await.unwrap();
    let numbers: Vec<u8> = serde_json::from_slice(&json).unwrap();
    assert_eq!(numbers, value);
    // Each reads back as what was written.
    assert_eq!(
        store.read::<Bytes>("raw/target-mon.dat").await.unwrap(),
        value
    );
    assert_eq!(
        store.read::<Vec<u8>>("raw/target-mon.json").await.unwrap(),
        value.to_vec()
    );
}

/// A `Vec<u8>` output stored raw is written from the value's own buffer, lent to the
/// store for the write: every caller still gets the whole value back, from a cache
/// record (hashed while written above 8 MiB, before below), a checkpoint, a run's
/// record, a target, and a flow run's resume record; a `.json` target still copies it
/// into JSON. Read back, each holds the value.
pub async fn vec_outputs_lent_to_the_store_come_back_whole(store: &ResultStore) {
    let small: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let big: Vec<u8> = (0..9u32 << 20).map(|i| (i % 251) as u8).collect();
    let runs = Arc::new(AtomicUsize::new(0));
    let make = |name: &str, value: &Vec<u8>| returning(name, value, &runs, store);
    let cached_small = make("cached_small", &small)
        .cache_policy(cairn::cache::INPUTS)
        .result_storage(store.clone());
    let cached_big = make("cached_big", &big)
        .cache_policy(cairn::cache::INPUTS)
        .result_storage(store.clone())
        .memory_tier(false);
    let checkpointed = make("checkpointed_vec", &small).location("raw/{task_name}-{day}");
    let recorded = make("recorded_vec", &small);
    let plain_target = make("plain_vec_target", &small).target("raw/vtarget-{day}.dat");
    let json_target = make("json_vec_target", &small).target("raw/vtarget-{day}.json");
    let flow = Flow::new("vecs")
        .checkpointing(true)
        .result_store(store.clone());
    let body = {
        let (small, big) = (small.clone(), big.clone());
        move |_| async move {
            for day in ["mon", "tue"] {
                assert_eq!(cached_small.call(day.into()).await?, small);
                assert_eq!(cached_big.call(day.into()).await?, big);
                assert_eq!(checkpointed.call(day.into()).await?, small);
                assert_eq!(recorded.call(day.into()).await?, small);
                assert_eq!(plain_target.call(day.into()).await?, small);
                assert_eq!(json_target.call(day.into()).await?, small);
            }
            Ok(())
        }
    };
    let first = flow.run((), body.clone()).await;
    assert_eq!(first.state(), &State::Completed);
    assert_eq!(runs.load(Ordering::SeqCst), 12);

    for run in first.task_runs() {
        let expected = if run.name().starts_with("cached_big") {
            &big
        } else {
            &small
        };
        let at = run.location().or(run.cache_record()).unwrap();
        let back = match store.read_record::<Vec<u8>>(at).await {
            Ok(record) => record.value,
            Err(_) => store.read::<Vec<u8>>(at).await.unwrap(),
        };
        assert_eq!(&back, expected, "{at}");
    }
    assert_eq!(
        store.read_bytes("raw/vtarget-tue.dat").await.unwrap(),
        small
    );
    assert_eq!(
        store.read_bytes("raw/checkpointed_vec-mon").await.unwrap(),
        small
    );
    let json = store.read_bytes("raw/vtarget-mon.json").await.unwrap();
    assert_eq!(serde_json::from_slice::<Vec<u8>>(&json).unwrap(), small);

    // A second flow run: the cached tasks are served by the store (or the memory
    // tier), the targets exist; only the checkpointed and recorded tasks run again.
    let second = flow.run((), body).await;
    assert_eq!(second.state(), &State::Completed);
    assert_eq!(runs.load(Ordering::SeqCst), 16);
}

#[macro_export]
macro_rules! runner_tests {
    ($make:expr) => {
        $crate::runner_tests!(@each $make;
            an_existing_target_skips_the_body,
            a_foreign_target_counts_as_present,
            checkpoints_land_where_the_location_says,
            nothing_is_persisted_unless_asked,
            concurrent_flows_leave_one_complete_target,
            only_inputs_a_template_names_become_template_values,
            a_location_that_can_never_be_written_fails_before_the_body,
            byte_outputs_are_stored_raw,
            vec_outputs_lent_to_the_store_come_back_whole,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(store) = $make.await {
                    runner_suite::$name(&store).await;
                }
            }
        )*
    };
}
