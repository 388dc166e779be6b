//! The caching behaviour every store must have, one function per behaviour.
//!
//! Each store's test file calls [`caching_tests!`] with an async expression that builds
//! a fresh [`ResultStore`] (its own directory or key prefix) for every test, so tests
//! and runs never see each other's entries, also on a shared bucket.
//!
//! The behaviours are translated from the seeds (Prefect 3's cache policies, Prefect
//! 1's `cache_for`/`cache_validator`/`cache_key`, Flyte's `Cache`). Every task counts
//! its body's executions, and every task that must prove the *store* answered runs
//! with `.memory_tier(false)`: the process-wide memory tier would otherwise serve hits
//! already seen in this process (one behaviour checks exactly that).
#![allow(dead_code)]

#[path = "../scratch/mod.rs"]
pub mod scratch;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use cairn::cache::{
    validators, Cache, CachePolicy, DEFAULT, INPUTS, RUN_ID, SIGNATURE, TASK_SOURCE,
};
use cairn::hashing::{hash_value, Digest, FileInput, Hashed};
use cairn::record::RecordInfo;
use cairn::{
    ErrorKind, Flow, FlowRun, ManualClock, PutMode, ResultStore, Settings, State, Task, TaskError,
    TaskErrorKind,
};
use chrono::{TimeZone, Utc};
use futures::TryStreamExt;
use serde::Serialize;

// ---------------------------------------------------------------------------------
// Helpers

/// A name no other test or run uses.
pub fn unique(what: &str) -> String {
    format!("{what}-{:016x}", rand::random::<u64>())
}

/// A body execution counter.
fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn executions(runs: &AtomicUsize) -> usize {
    runs.load(Ordering::SeqCst)
}

/// Settings from an empty `CAIRN_HOME` and the given variables only, so that the
/// machine's environment and `~/.cairn/config.toml` never change a test.
fn settings(env: &[(&str, &str)]) -> Settings {
    static HOME: OnceLock<std::path::PathBuf> = OnceLock::new();
    let home = HOME.get_or_init(|| {
        let home = scratch::dir("home");
        std::fs::create_dir_all(&home).expect("a directory under target/tmp");
        home
    });
    Settings::from_sources(home, env.iter().copied()).expect("valid settings")
}

/// A flow with hermetic settings.
fn flow(name: &str) -> Flow {
    Flow::new(name).settings(settings(&[]))
}

/// The states of a flow run's task runs, in the order they finished.
fn states<T>(run: &FlowRun<T>) -> Vec<State> {
    run.task_runs().iter().map(|r| r.state().clone()).collect()
}

/// Where the record of `key_hex` lives in `namespace`.
pub fn record_location(namespace: &str, key_hex: &str) -> String {
    format!("cache/v1/{namespace}/{}/{key_hex}", &key_hex[..2])
}

/// Every object below `cache/`, sorted.
async fn cache_entries(store: &ResultStore) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list("cache/")
        .map_ok(|m| m.key.to_string())
        .try_collect()
        .await
        .expect("the cache prefix lists");
    keys.sort();
    keys
}

/// `add_one(x) = x + 1`, counting executions, caching in `store`, memory tier off.
fn add_one(name: &str, runs: &Arc<AtomicUsize>, store: &ResultStore) -> Task<i64, i64> {
    let runs = runs.clone();
    Task::infallible(name, move |x: i64| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            x + 1
        }
    })
    .inputs(["x"])
    .task_source("x + 1")
    .result_storage(store.clone())
    .memory_tier(false)
}

/// A task whose output is the number of its execution (1, 2, ...), so that a value
/// tells which execution produced it. Memory tier off.
fn stamped<I: cairn::TaskInput>(
    name: &str,
    runs: &Arc<AtomicUsize>,
    store: &ResultStore,
) -> Task<I, u64> {
    let runs = runs.clone();
    Task::infallible(name, move |_: I| {
        let runs = runs.clone();
        async move { runs.fetch_add(1, Ordering::SeqCst) as u64 + 1 }
    })
    .task_source("random.random()")
    .result_storage(store.clone())
    .memory_tier(false)
}

/// Log lines written on this thread while the guard lives (the test's futures are
/// polled on the thread that blocks on them).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // A call site first hit on another test's thread while this was the only
        // subscriber registered would have cached that thread's (empty) interest.
        tracing::callsite::rebuild_interest_cache();
        (logs, guard)
    }

    /// The lines so far, emptying the buffer.
    fn take(&self) -> String {
        let mut buffer = self.0.lock().unwrap();
        String::from_utf8(std::mem::take(&mut *buffer)).unwrap()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

fn cache_key_of<O>(run: &cairn::TaskRun<O>) -> String {
    run.info()
        .cache_key()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("run {} has no cache key", run.name()))
}

// ---------------------------------------------------------------------------------
// Prefect 3: cache policies

/// Prefect 3's first snippet: `add_one(1)`, `add_one(1)`, `add_one(2)` in one flow
/// with the default policy (INPUTS + TASK_SOURCE + RUN_ID): Completed, Cached,
/// Completed; a second flow run runs again (its run id differs).
pub async fn default_policy_caches_within_a_flow_run(store: &ResultStore) {
    let runs = counter();
    let add_one = add_one("add_one_default", &runs, store).cache_policy(DEFAULT);
    let first = flow("seed-default")
        .run((), |_| async {
            let a = add_one.call(1).await?;
            let b = add_one.call(1).await?;
            let c = add_one.call(2).await?;
            Ok((a, b, c))
        })
        .await;
    assert_eq!(first.value(), Some(&(2, 2, 3)), "{:?}", first.error());
    assert_eq!(
        states(&first),
        [State::Completed, State::Cached, State::Completed]
    );
    assert_eq!(executions(&runs), 2);
    // The two entries are records in the store under test.
    assert_eq!(cache_entries(store).await.len(), 2);
    let key = first.task_runs()[0].cache_key().map(str::to_owned).unwrap();
    assert_eq!(first.task_runs()[1].cache_key(), Some(&*key));
    let record = store
        .read_record::<i64>(&record_location("default", &key))
        .await
        .unwrap();
    assert_eq!(record.value, 2);
    assert_eq!(record.header.task.as_deref(), Some("add_one_default"));

    let second = flow("seed-default")
        .run((), |_| async { add_one.call(1).await })
        .await;
    assert_eq!(second.value(), Some(&2));
    assert_eq!(states(&second), [State::Completed]);
    assert_ne!(second.task_runs()[0].cache_key(), Some(&*key));
    assert_eq!(executions(&runs), 3);
}

#[derive(Debug, Clone, Serialize)]
struct Stateful {
    x: i64,
    debug: Option<bool>,
}

/// Prefect 3: `INPUTS - 'debug'`: `(x=1)`, `(x=1, debug=True)`, `(x=1, debug=False)`
/// run the body once. As a struct (inputs named by its fields) and as a tuple.
pub async fn excluded_input_does_not_change_the_key(store: &ResultStore) {
    let runs = counter();
    let counted = runs.clone();
    let by_struct = Task::infallible("my_stateful_task", move |s: Stateful| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            s.x + 1
        }
    })
    .cache_policy(INPUTS - "debug")
    .result_storage(store.clone())
    .memory_tier(false);
    let mut seen = Vec::new();
    for debug in [None, Some(true), Some(false)] {
        let run = by_struct.run(Stateful { x: 1, debug }).await;
        assert_eq!(run.value(), Some(&2));
        seen.push(run.state().clone());
    }
    assert_eq!(seen, [State::Completed, State::Cached, State::Cached]);
    assert_eq!(executions(&runs), 1);
    // x still counts.
    assert_eq!(
        by_struct
            .run(Stateful {
                x: 2,
                debug: Some(true)
            })
            .await
            .state(),
        &State::Completed
    );
    assert_eq!(executions(&runs), 2);

    let runs = counter();
    let counted = runs.clone();
    let by_tuple = Task::infallible("my_stateful_tuple", move |(x, _debug): (i64, bool)| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            x + 1
        }
    })
    .inputs(["x", "debug"])
    .cache_policy(INPUTS - "debug")
    .result_storage(store.clone())
    .memory_tier(false);
    let a = by_tuple.run((1, true)).await;
    let b = by_tuple.run((1, false)).await;
    assert_eq!((a.state(), b.state()), (&State::Completed, &State::Cached));
    assert_eq!(cache_key_of(&a), cache_key_of(&b));
    assert_eq!(executions(&runs), 1);
}

/// Prefect 3: `cache_expiration=timedelta(seconds=10)` with an injected clock: call,
/// call (hit), 11 s later call (miss, replaces the expired record), call (hit). No
/// sleeps. With the memory tier off (the store's record expires) and on (the tier's
/// entry expires too).
pub async fn entries_expire_by_the_flow_clock(store: &ResultStore) {
    for tier in [false, true] {
        let runs = counter();
        let task = add_one(&format!("my_expiring_task_{tier}"), &runs, store)
            .cache_policy(INPUTS)
            .cache_expiration(Duration::from_secs(10))
            .memory_tier(tier);
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let run = flow("expiry")
            .clock(clock.clone())
            .run((), |_| async {
                let mut seen = Vec::new();
                seen.push(task.run(1).await.state().clone());
                clock.advance(chrono::Duration::seconds(9));
                seen.push(task.run(1).await.state().clone());
                clock.advance(chrono::Duration::seconds(2)); // 11 s after the write
                seen.push(task.run(1).await.state().clone());
                seen.push(task.run(1).await.state().clone());
                Ok(seen)
            })
            .await;
        assert_eq!(
            run.value().unwrap(),
            &[
                State::Completed,
                State::Cached,
                State::Completed,
                State::Cached
            ],
            "memory tier {tier}"
        );
        assert_eq!(executions(&runs), 2, "memory tier {tier}");
        // The replacing record expires 10 s after its write, by the flow's clock.
        let key = run.task_runs()[0].cache_key().map(str::to_owned).unwrap();
        let record = store
            .read_record::<i64>(&record_location("default", &key))
            .await
            .unwrap();
        assert_eq!(
            record.header.expires,
            Some(start + chrono::Duration::seconds(21))
        );
        assert_eq!(cache_entries(store).await.len(), if tier { 2 } else { 1 });
    }
}

/// Prefect 3: `refresh_cache=True` always runs and replaces the record, so the next
/// ordinary call reads the new value; `CAIRN__TASKS__REFRESH_CACHE=true` makes every
/// task refresh; under it a task with `refresh_cache(false)` reads an existing entry,
/// and writes one only when none exists.
pub async fn refresh_cache_runs_and_replaces(store: &ResultStore) {
    let runs = counter();
    let base = stamped::<()>("never_caching_task", &runs, store).cache_policy(TASK_SOURCE);
    let refreshing = base.clone().refresh_cache(true);

    let run = flow("refresh")
        .run((), |_| async {
            let a = refreshing.run(()).await;
            let b = refreshing.run(()).await;
            let c = base.run(()).await;
            Ok([
                (a.state().clone(), *a.value().unwrap()),
                (b.state().clone(), *b.value().unwrap()),
                (c.state().clone(), *c.value().unwrap()),
            ])
        })
        .await;
    assert_eq!(
        run.value().unwrap(),
        &[
            (State::Completed, 1),
            (State::Completed, 2),
            (State::Cached, 2)
        ]
    );
    assert_eq!(executions(&runs), 2);
    assert_eq!(cache_entries(store).await.len(), 1);

    // The global switch: a task that says nothing refreshes.
    let everywhere = settings(&[("CAIRN__TASKS__REFRESH_CACHE", "true")]);
    let run = Flow::new("refresh-all")
        .settings(everywhere.clone())
        .run((), |_| async { base.run(()).await.into_result() })
        .await;
    assert_eq!(run.value(), Some(&3));
    assert_eq!(states(&run), [State::Completed]);
    let run = flow("plain")
        .run((), |_| async { base.run(()).await.into_result() })
        .await;
    assert_eq!((states(&run), run.value()), (vec![State::Cached], Some(&3)));
    assert_eq!(executions(&runs), 3);

    // `refresh_cache(false)` under the switch: reads the existing entry...
    let keeper = base.clone().refresh_cache(false);
    let run = Flow::new("refresh-all")
        .settings(everywhere.clone())
        .run((), |_| async { keeper.run(()).await.into_result() })
        .await;
    assert_eq!((states(&run), run.value()), (vec![State::Cached], Some(&3)));
    assert_eq!(executions(&runs), 3);

    // ... and writes one when there is none.
    let runs = counter();
    let fresh = stamped::<()>("caching_task", &runs, store)
        .cache_policy(TASK_SOURCE)
        .refresh_cache(false);
    let run = Flow::new("refresh-all")
        .settings(everywhere)
        .run((), |_| async {
            let a = fresh.run(()).await;
            let b = fresh.run(()).await;
            Ok((a.into_result()?, b.into_result()?))
        })
        .await;
    assert_eq!(run.value(), Some(&(1, 1)));
    assert_eq!(states(&run), [State::Completed, State::Cached]);
    assert_eq!(executions(&runs), 1);
    assert_eq!(cache_entries(store).await.len(), 2);
}

/// Prefect 3: `INPUTS + TASK_SOURCE`: a hit as long as the inputs and the task's
/// source are the same.
pub async fn inputs_and_task_source_together(store: &ResultStore) {
    let runs = counter();
    let v1 = add_one("my_task", &runs, store).cache_policy(INPUTS + TASK_SOURCE);
    let same = add_one("my_task", &runs, store).cache_policy(INPUTS + TASK_SOURCE);
    let edited = v1.clone().task_source("x + 2");

    let a = v1.run(1).await;
    let b = same.run(1).await;
    let c = v1.run(2).await;
    let d = edited.run(1).await;
    assert_eq!(
        [a.state(), b.state(), c.state(), d.state()],
        [
            &State::Completed,
            &State::Cached,
            &State::Completed,
            &State::Completed
        ]
    );
    assert_eq!(cache_key_of(&a), cache_key_of(&b));
    assert_ne!(cache_key_of(&a), cache_key_of(&d));
    assert_eq!(executions(&runs), 3);
    assert_eq!(edited.run(1).await.state(), &State::Cached);
}

// ---------------------------------------------------------------------------------
// Prefect 1: cache_for, cache_validator, cache_key

/// Prefect 1: two different tasks with the same `cache_key` share one entry across
/// two different flows ("time travel").
pub async fn shared_cache_key_across_tasks_and_flows(store: &ResultStore) {
    let runs = counter();
    let hour = Duration::from_secs(3600);
    let task_1 = stamped::<i64>("task_1", &runs, store)
        .cache_key("shared")
        .cache_for(hour);
    let task_2 = stamped::<i64>("task_2", &runs, store)
        .cache_key("shared")
        .cache_for(hour);
    let unshared = stamped::<i64>("task_3", &runs, store).cache_for(hour);

    let a = flow("flow-a")
        .run((), |_| async { task_1.call(1).await })
        .await;
    let b = flow("flow-b")
        .run((), |_| async { task_2.call(2).await })
        .await;
    let c = flow("flow-b")
        .run((), |_| async { unshared.call(2).await })
        .await;
    assert_eq!((a.value(), states(&a)), (Some(&1), vec![State::Completed]));
    assert_eq!((b.value(), states(&b)), (Some(&1), vec![State::Cached]));
    assert_eq!((c.value(), states(&c)), (Some(&2), vec![State::Completed]));
    assert_eq!(a.task_runs()[0].cache_key(), b.task_runs()[0].cache_key());
    assert_eq!(executions(&runs), 2);
    assert_eq!(cache_entries(store).await.len(), 2);
}

#[derive(Debug, Clone, Serialize)]
struct Params {
    p: i64,
    q: i64,
}

/// Prefect 1's validators: `duration_only` (the default of `cache_for`) hits whatever
/// the inputs until the duration is over; `all_inputs` misses when an input changes;
/// `all_parameters` when a flow parameter changes; `partial_inputs_only(["x"])` and
/// `partial_parameters_only(["p"])` look at the named ones only; `never_use` never
/// caches.
pub async fn prefect_1_validators(store: &ResultStore) {
    let hour = Duration::from_secs(3600);

    // duration_only: inputs do not matter; the hour does.
    let runs = counter();
    let duration_only = add_one("p1_duration_only", &runs, store).cache_for(hour);
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap(),
    ));
    let run = flow("p1")
        .clock(clock.clone())
        .run((), |_| async {
            let a = duration_only.call(1).await?;
            let b = duration_only.call(41).await?;
            clock.advance(chrono::Duration::seconds(3601));
            let c = duration_only.call(41).await?;
            Ok((a, b, c))
        })
        .await;
    assert_eq!(run.value(), Some(&(2, 2, 42)));
    assert_eq!(
        states(&run),
        [State::Completed, State::Cached, State::Completed]
    );
    assert_eq!(executions(&runs), 2);

    // all_inputs
    let runs = counter();
    let all_inputs = add_one("p1_all_inputs", &runs, store)
        .cache_for(hour)
        .cache_validator(validators::all_inputs());
    let states_of =
        |runs: Vec<cairn::TaskRun<i64>>| runs.iter().map(|r| r.state().clone()).collect::<Vec<_>>();
    let seen = states_of(vec![
        all_inputs.run(1).await,
        all_inputs.run(2).await,
        all_inputs.run(1).await,
    ]);
    assert_eq!(seen, [State::Completed, State::Completed, State::Cached]);
    assert_eq!(executions(&runs), 2);

    // all_parameters: flow parameters, not the task's inputs.
    let runs = counter();
    let all_parameters = add_one("p1_all_parameters", &runs, store)
        .cache_validator(validators::all_parameters())
        .cache_for(hour);
    let mut seen = Vec::new();
    for (params, x) in [((1, 1), 5), ((1, 1), 6), ((2, 1), 5), ((1, 2), 5)] {
        let run = flow("p1-params")
            .run(
                Params {
                    p: params.0,
                    q: params.1,
                },
                |_| async { all_parameters.call(x).await },
            )
            .await;
        seen.extend(states(&run));
    }
    assert_eq!(
        seen,
        [
            State::Completed,
            State::Cached,
            State::Completed,
            State::Completed
        ]
    );
    assert_eq!(executions(&runs), 3);

    // partial_parameters_only(["p"])
    let runs = counter();
    let partial_parameters = add_one("p1_partial_parameters", &runs, store)
        .cache_validator(validators::partial_parameters_only(["p"]))
        .cache_for(hour);
    let mut seen = Vec::new();
    for (p, q) in [(1, 1), (1, 2), (2, 1)] {
        let run = flow("p1-params")
            .run(Params { p, q }, |_| async {
                partial_parameters.call(0).await
            })
            .await;
        seen.extend(states(&run));
    }
    assert_eq!(seen, [State::Completed, State::Cached, State::Completed]);
    assert_eq!(executions(&runs), 2);

    // partial_inputs_only(["x"])
    let runs = counter();
    let counted = runs.clone();
    let partial_inputs = Task::infallible("p1_partial_inputs", move |(x, y): (i64, i64)| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            x + y
        }
    })
    .inputs(["x", "y"])
    .cache_for(hour)
    .cache_validator(validators::partial_inputs_only(["x"]))
    .result_storage(store.clone())
    .memory_tier(false);
    let a = partial_inputs.run((1, 1)).await;
    let b = partial_inputs.run((1, 7)).await;
    let c = partial_inputs.run((2, 1)).await;
    assert_eq!(
        [a.state(), b.state(), c.state()],
        [&State::Completed, &State::Cached, &State::Completed]
    );
    assert_eq!(
        (a.value(), b.value(), c.value()),
        (Some(&2), Some(&2), Some(&3))
    );
    assert_eq!(executions(&runs), 2);

    // never_use
    let before = cache_entries(store).await;
    let runs = counter();
    let never = add_one("p1_never_use", &runs, store)
        .cache_for(hour)
        .cache_validator(validators::never_use());
    let a = never.run(1).await;
    let b = never.run(1).await;
    assert_eq!(
        [a.state(), b.state()],
        [&State::Completed, &State::Completed]
    );
    assert_eq!(a.info().cache_key(), None);
    assert_eq!(executions(&runs), 2);
    assert_eq!(cache_entries(store).await, before);
}

// ---------------------------------------------------------------------------------
// Flyte: Cache { version, serialize, ignored_inputs, salt }, signature, HashMethod

/// Flyte: the cache is specific to the signature (input names and types, output
/// type): same name, inputs and version, but a different signature is a miss.
pub async fn signature_change_is_a_miss(store: &ResultStore) {
    let runs = counter();
    let task = |inputs: &[(&str, &str)], output: &str| {
        add_one("t_signature", &runs, store)
            .cache(Cache::new().version("1"))
            .signature(inputs, output)
    };
    let original = task(&[("n", "i64")], "i64").run(3).await;
    let again = task(&[("n", "i64")], "i64").run(3).await;
    let input_type = task(&[("n", "i32")], "i64").run(3).await;
    let output_type = task(&[("n", "i64")], "u64").run(3).await;
    let input_name = task(&[("m", "i64")], "i64").run(3).await;
    assert_eq!(
        [
            original.state(),
            again.state(),
            input_type.state(),
            output_type.state(),
            input_name.state()
        ],
        [
            &State::Completed,
            &State::Cached,
            &State::Completed,
            &State::Completed,
            &State::Completed
        ]
    );
    assert_eq!(executions(&runs), 4);
    // SIGNATURE on its own, without a declared signature: the output type counts.
    let runs = counter();
    let counted = runs.clone();
    let as_text = Task::infallible("t_signature_plain", move |n: i64| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            n.to_string()
        }
    })
    .inputs(["n"])
    .cache_policy(SIGNATURE + INPUTS)
    .result_storage(store.clone())
    .memory_tier(false);
    let as_number = add_one("t_signature_plain", &runs, store).cache_policy(SIGNATURE + INPUTS);
    assert_eq!(as_text.run(3).await.state(), &State::Completed);
    assert_eq!(as_number.run(3).await.state(), &State::Completed);
    assert_eq!(as_text.run(3).await.state(), &State::Cached);
    assert_eq!(executions(&runs), 2);
}

/// Flyte: `version="1.0"` runs; bumped to `"1.1"` it runs again; set back to `"1.0"`
/// it is a hit and the body does not run. An explicit version (Task::version) alone
/// decides: refining the task's code does not invalidate the cache.
pub async fn version_bump_and_back(store: &ResultStore) {
    let runs = counter();
    let versioned = |v: &str| add_one("t_version", &runs, store).cache(Cache::new().version(v));
    let seen = [
        versioned("1.0").run(5).await.state().clone(),
        versioned("1.1").run(5).await.state().clone(),
        versioned("1.0").run(5).await.state().clone(),
        versioned("1.1").run(5).await.state().clone(),
    ];
    assert_eq!(
        seen,
        [
            State::Completed,
            State::Completed,
            State::Cached,
            State::Cached
        ]
    );
    assert_eq!(executions(&runs), 2);

    // Task::version: same version, refined code → hit; bumped version → miss.
    let runs = counter();
    let v1 = add_one("t_version_builder", &runs, store).version("1.0");
    let refined = v1.clone().task_source("x + 1 // now with a comment");
    let bumped = v1.clone().version("2.0");
    let a = v1.run(5).await;
    assert_eq!(a.state(), &State::Completed, "{:?}", a.error());
    let b = refined.run(5).await;
    assert_eq!(b.state(), &State::Cached, "{:?}", b.error());
    let c = bumped.run(5).await;
    assert_eq!(c.state(), &State::Completed, "{:?}", c.error());
    assert_eq!(executions(&runs), 2);
    // A task with no known source can still be versioned.
    let runs = counter();
    let counted = runs.clone();
    let sourceless = Task::infallible("t_version_sourceless", move |x: i64| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            x * 2
        }
    })
    .inputs(["x"])
    .version("1.0")
    .result_storage(store.clone())
    .memory_tier(false);
    let a = sourceless.run(5).await;
    assert_eq!(a.state(), &State::Completed, "{:?}", a.error());
    assert_eq!(sourceless.run(5).await.state(), &State::Cached);
    assert_eq!(executions(&runs), 1);
}

/// Flyte: `Cache(version="1.0", ignored_inputs=["a"])` on `sum(a, b, c)`: changing
/// `a` is a hit (with the cached sum), changing `b` a miss.
pub async fn ignored_inputs(store: &ResultStore) {
    let runs = counter();
    let counted = runs.clone();
    let sum = Task::infallible("sum", move |(a, b, c): (i64, i64, i64)| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            a + b + c
        }
    })
    .inputs(["a", "b", "c"])
    .cache(Cache::new().version("1.0").ignored_inputs(["a"]))
    .result_storage(store.clone())
    .memory_tier(false);
    let first = sum.run((1, 2, 3)).await;
    let a_changed = sum.run((10, 2, 3)).await;
    let b_changed = sum.run((1, 5, 3)).await;
    assert_eq!(
        [first.state(), a_changed.state(), b_changed.state()],
        [&State::Completed, &State::Cached, &State::Completed]
    );
    assert_eq!(
        (first.value(), a_changed.value(), b_changed.value()),
        (Some(&6), Some(&6), Some(&9))
    );
    assert_eq!(executions(&runs), 2);
}

/// Flyte: a salt is mixed into the key: same everything, different salt → miss.
pub async fn salt_changes_the_key(store: &ResultStore) {
    let runs = counter();
    let salted =
        |salt: &str| add_one("t_salted", &runs, store).cache(Cache::new().version("1").salt(salt));
    let seen = [
        salted("pepper").run(1).await.state().clone(),
        salted("pepper").run(1).await.state().clone(),
        salted("paprika").run(1).await.state().clone(),
    ];
    assert_eq!(seen, [State::Completed, State::Cached, State::Completed]);
    assert_eq!(executions(&runs), 2);
    // As a policy part: INPUTS with and without a salt.
    let plain = add_one("t_salted_policy", &runs, store).cache_policy(INPUTS);
    let salted = plain
        .clone()
        .cache_policy(INPUTS + CachePolicy::salt("pepper"));
    assert_eq!(plain.run(1).await.state(), &State::Completed);
    assert_eq!(salted.run(1).await.state(), &State::Completed);
    assert_eq!(salted.run(1).await.state(), &State::Cached);
    assert_eq!(executions(&runs), 4);
}

/// Flyte's HashMethod: a 64 MiB input declared with a cheap custom digest is keyed by
/// that digest, never by its content (two different values with the same declared
/// digest are a hit); files are keyed by their content, not their path.
pub async fn declared_hashes_and_file_inputs(store: &ResultStore) {
    const SIZE: usize = 64 << 20;
    let runs = counter();
    let counted = runs.clone();
    let summarize = Task::infallible("summarize", move |(data,): (Hashed<Vec<u8>>,)| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            data.len() as u64 + u64::from(data[0])
        }
    })
    .inputs(["data"])
    .cache_policy(INPUTS)
    .result_storage(store.clone())
    .memory_tier(false);
    // The cheap hash method: the dataset's name and version, not its bytes.
    let declared = |label: &str| -> Digest { hash_value(&("dataset", label)).unwrap() };

    let zeros = Hashed::new(vec![0u8; SIZE], declared("v1"));
    let first = summarize.run((zeros,)).await;
    assert_eq!(first.value(), Some(&(SIZE as u64)));
    let ones = Hashed::new(vec![1u8; SIZE], declared("v1"));
    let same_digest = summarize.run((ones.clone(),)).await;
    assert_eq!(same_digest.state(), &State::Cached);
    assert_eq!(
        same_digest.value(),
        Some(&(SIZE as u64)),
        "the cached value"
    );
    assert_eq!(cache_key_of(&first), cache_key_of(&same_digest));
    let other_digest = summarize
        .run((Hashed::new(ones.into_inner(), declared("v2")),))
        .await;
    assert_eq!(other_digest.state(), &State::Completed);
    assert_eq!(other_digest.value(), Some(&(SIZE as u64 + 1)));
    assert_eq!(executions(&runs), 2);

    // FileInput: by content.
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("a.csv"), "x\n1\n2\n").unwrap();
    std::fs::write(path("b.csv"), "x\n1\n2\n").unwrap();
    std::fs::write(path("c.csv"), "x\n1\n3\n").unwrap();
    let runs = counter();
    let counted = runs.clone();
    let count_lines = Task::infallible("count_lines", move |file: FileInput| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            std::fs::read_to_string(file.path())
                .unwrap()
                .lines()
                .count() as u64
        }
    })
    .inputs(["file"])
    .cache_policy(INPUTS)
    .result_storage(store.clone())
    .memory_tier(false);
    let a = count_lines.run(FileInput::new(path("a.csv"))).await;
    let b = count_lines.run(FileInput::new(path("b.csv"))).await;
    let c = count_lines.run(FileInput::new(path("c.csv"))).await;
    assert_eq!(
        [a.state(), b.state(), c.state()],
        [&State::Completed, &State::Cached, &State::Completed]
    );
    // Changing a file's content changes its key.
    std::fs::write(path("a.csv"), "x\n1\n2\n4\n").unwrap();
    let changed = count_lines.run(FileInput::new(path("a.csv"))).await;
    assert_eq!(changed.state(), &State::Completed);
    assert_eq!(changed.value(), Some(&4));
    assert_eq!(executions(&runs), 3);
    assert!(!path("missing.csv").exists());
    let missing = count_lines.run(FileInput::new(path("missing.csv"))).await;
    assert_eq!(
        missing.error().map(TaskError::kind),
        Some(TaskErrorKind::Hash)
    );
    assert_eq!(executions(&runs), 3);
}

/// A live connection: it refuses to be serialized.
#[derive(Debug, Clone)]
struct Connection;

impl Serialize for Connection {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "a live database connection cannot be serialized",
        ))
    }
}

/// An input that cannot be hashed fails the run with a Hash error naming the input
/// and suggesting to exclude it; nothing is executed or written. With
/// `INPUTS - "conn"` the same task caches.
pub async fn unhashable_input_is_a_clear_error(store: &ResultStore) {
    let runs = counter();
    let counted = runs.clone();
    let query = Task::infallible("query", move |(x, _conn): (i64, Connection)| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            x * 3
        }
    })
    .inputs(["x", "conn"])
    .result_storage(store.clone())
    .memory_tier(false);

    let failing = query.clone().cache_policy(INPUTS);
    let run = failing.run((1, Connection)).await;
    assert!(run.state().is_failed(), "{:?}", run.state());
    let error = run.error().expect("an error");
    assert_eq!(error.kind(), TaskErrorKind::Hash);
    let message = error.to_string();
    assert!(message.contains("input 'conn'"), "{message}");
    assert!(message.contains("INPUTS - \"conn\""), "{message}");
    assert!(message.contains("cannot be serialized"), "{message}");
    assert_eq!(executions(&runs), 0);
    assert!(cache_entries(store).await.is_empty());

    let excluding = query.cache_policy(INPUTS - "conn");
    let a = excluding.run((1, Connection)).await;
    let b = excluding.run((1, Connection)).await;
    let c = excluding.run((2, Connection)).await;
    assert_eq!(
        [a.state(), b.state(), c.state()],
        [&State::Completed, &State::Cached, &State::Completed]
    );
    assert_eq!(executions(&runs), 2);
    assert_eq!(cache_entries(store).await.len(), 2);
}

// ---------------------------------------------------------------------------------
// Records that are damaged, gone or replaced

fn times_ten(name: &str, runs: &Arc<AtomicUsize>, store: &ResultStore) -> Task<u64, u64> {
    let runs = runs.clone();
    Task::infallible(name, move |x: u64| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            x * 10
        }
    })
    .inputs(["x"])
    .cache_policy(INPUTS)
    .result_storage(store.clone())
    .memory_tier(false)
}

/// A record whose bytes were damaged (a flipped payload byte, garbage, cut short) or
/// whose intact payload is of another type is a miss: the task runs again and the
/// record is replaced by a valid one.
pub async fn corrupt_records_are_misses_and_replaced(store: &ResultStore) {
    let runs = counter();
    let task = times_ten("corruptible", &runs, store);
    let first = task.run(7).await;
    assert_eq!(first.state(), &State::Completed);
    let location = record_location("default", &cache_key_of(&first));
    let good = store.read_bytes(&location).await.unwrap();

    let damaged: Vec<(&str, Bytes)> = vec![
        ("flipped payload byte", {
            let mut v = good.to_vec();
            let last = v.len() - 1;
            v[last] ^= 0x01;
            v.into()
        }),
        ("garbage", Bytes::from_static(b"this is not a cairn record")),
        ("cut short", good.slice(..good.len() - 2)),
        ("empty", Bytes::new()),
    ];
    let mut expected_runs = 1;
    let (logs, _guard) = Logs::capture();
    for (what, bytes) in damaged {
        store
            .write_bytes(&location, bytes, PutMode::Overwrite)
            .await
            .unwrap();
        let err = store.read_record::<u64>(&location).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{what}: {err}");

        let run = task.run(7).await;
        expected_runs += 1;
        assert_eq!(
            (run.state(), run.value()),
            (&State::Completed, Some(&70)),
            "{what}"
        );
        assert_eq!(executions(&runs), expected_runs, "{what}");
        // A logged miss, naming the record.
        let logged = logs.take();
        assert!(
            logged.contains("ignoring unusable cache record") && logged.contains(&location),
            "{what}: {logged}"
        );
        let record = store.read_record::<u64>(&location).await.unwrap();
        assert_eq!(record.value, 70, "{what}");
        assert_eq!(task.run(7).await.state(), &State::Cached, "{what}");
    }

    // An intact record of another type.
    store
        .write_record(
            &location,
            &"seventy".to_string(),
            RecordInfo::default(),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let run = task.run(7).await;
    assert_eq!((run.state(), run.value()), (&State::Completed, Some(&70)));
    assert_eq!(executions(&runs), expected_runs + 1);
    let logged = logs.take();
    assert!(
        logged.contains("ignoring unusable cache record") && logged.contains("deserialize"),
        "{logged}"
    );
    assert_eq!(store.read_record::<u64>(&location).await.unwrap().value, 70);
    assert_eq!(task.run(7).await.state(), &State::Cached);
    assert_eq!(cache_entries(store).await, [location]);
}

/// A record deleted from the store (flytekit's entry pointing at deleted data) is a
/// miss: the task runs again and writes the record again.
pub async fn deleted_record_is_a_miss(store: &ResultStore) {
    let runs = counter();
    let task = times_ten("deletable", &runs, store);
    let first = task.run(4).await;
    let location = record_location("default", &cache_key_of(&first));
    assert!(store.exists(&location).await.unwrap());
    store.delete(&location).await.unwrap();

    let again = task.run(4).await;
    assert_eq!(
        (again.state(), again.value()),
        (&State::Completed, Some(&40))
    );
    assert_eq!(executions(&runs), 2);
    assert!(store.exists(&location).await.unwrap());
    assert_eq!(task.run(4).await.state(), &State::Cached);
}

/// The memory tier serves hits already seen in this process without the store: with
/// it on, a hit survives the record's deletion; with it off, the same call misses.
pub async fn memory_tier_serves_hits_already_seen(store: &ResultStore) {
    let runs = counter();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
    ));
    let with_tier = times_ten("tiered", &runs, store)
        .memory_tier(true)
        .clock(clock.clone());
    let without_tier = with_tier.clone().memory_tier(false);

    let first = with_tier.run(6).await;
    assert_eq!(first.state(), &State::Completed);
    let location = record_location("default", &cache_key_of(&first));
    // The run says where its record is.
    assert_eq!(first.info().cache_record(), Some(location.as_str()));
    assert_eq!(first.info().cache_store(), Some(store.url()));
    store.delete(&location).await.unwrap();

    // Within the trust bound, the tier answers without asking the store.
    let from_tier = with_tier.run(6).await;
    assert_eq!(
        (from_tier.state(), from_tier.value()),
        (&State::Cached, Some(&60))
    );
    assert_eq!(executions(&runs), 1);
    assert!(!store.exists(&location).await.unwrap());

    let from_store = without_tier.run(6).await;
    assert_eq!(from_store.state(), &State::Completed);
    assert_eq!(executions(&runs), 2);
    assert!(store.exists(&location).await.unwrap());
    assert_eq!(without_tier.run(6).await.state(), &State::Cached);

    // One entry can be dropped: the next run asks the store (and finds the record).
    let held = with_tier.run(7).await;
    assert!(cairn::cache::MemoryTier::global().remove_task_run(held.info()));
    store
        .delete(held.info().cache_record().unwrap())
        .await
        .unwrap();
    assert_eq!(with_tier.run(7).await.state(), &State::Completed);
    assert_eq!(executions(&runs), 4);
}

/// Another process replaces a record this process holds in its memory tier
/// (`refresh_cache`): the old value is served for at most the trust bound (1 s by
/// default, on the task's clock), then the store's version is checked and the new
/// value read; with a bound of 0 every hit checks. A deleted record stops being served
/// once the bound has passed.
pub async fn memory_tier_revalidates_replaced_records(store: &ResultStore) {
    let runs = counter();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
    ));
    let reader = stamped::<i64>(&unique("revalidated"), &runs, store)
        .inputs(["x"])
        .cache_policy(INPUTS)
        .memory_tier(true)
        .clock(clock.clone());
    // Another process, as far as this process's tier knows: it never touches the tier.
    let writer = reader.clone().memory_tier(false).refresh_cache(true);
    let value = |run: cairn::TaskRun<u64>| (run.state().clone(), *run.value().unwrap());

    assert_eq!(value(reader.run(1).await), (State::Completed, 1));
    assert_eq!(value(writer.run(1).await), (State::Completed, 2));
    assert_eq!(value(reader.run(1).await), (State::Cached, 1));
    clock.advance(chrono::Duration::milliseconds(999));
    assert_eq!(value(reader.run(1).await), (State::Cached, 1));
    clock.advance(chrono::Duration::milliseconds(1));
    assert_eq!(value(reader.run(1).await), (State::Cached, 2), "after 1 s");
    // The version checked is trusted for another bound.
    assert_eq!(value(writer.run(1).await), (State::Completed, 3));
    assert_eq!(value(reader.run(1).await), (State::Cached, 2));

    // A bound of 0: every hit checks the store's version.
    let strict = reader.clone().memory_tier_revalidate_after(Duration::ZERO);
    assert_eq!(value(strict.run(1).await), (State::Cached, 3));
    assert_eq!(value(writer.run(1).await), (State::Completed, 4));
    assert_eq!(value(strict.run(1).await), (State::Cached, 4));
    assert_eq!(value(strict.run(1).await), (State::Cached, 4));
    assert_eq!(executions(&runs), 4);

    // A record deleted from the store is not served past the bound.
    let location = strict
        .run(1)
        .await
        .info()
        .cache_record()
        .map(str::to_owned)
        .unwrap();
    store.delete(&location).await.unwrap();
    assert_eq!(value(strict.run(1).await), (State::Completed, 5));
}

/// A task output with a declared hash (`Hashed<T>`, Flyte's `HashMethod`) keys its
/// downstream task by that hash whether the upstream ran or was read back from its
/// cache record (as another process reads it): the declared digest travels in the
/// record's header.
pub async fn declared_hash_travels_with_the_cached_value(store: &ResultStore) {
    let declared = hash_value(&("dataset", "v7")).unwrap();
    let loads = counter();
    let counted = loads.clone();
    let load = Task::infallible(&unique("load"), move |day: String| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Hashed::new(vec![day.len() as u32, 2, 3], declared)
        }
    })
    .inputs(["day"])
    .cache_policy(INPUTS)
    .result_storage(store.clone())
    .memory_tier(false);
    let sums = counter();
    let counted = sums.clone();
    let summarize = Task::infallible(&unique("summarize"), move |rows: Hashed<Vec<u32>>| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            rows.iter().sum::<u32>()
        }
    })
    .inputs(["rows"])
    .cache_policy(INPUTS)
    .result_storage(store.clone())
    .memory_tier(false);

    let computed = load.run("mon".into()).await;
    assert_eq!(computed.state(), &State::Completed);
    let rows = computed.value().unwrap().clone();
    assert_eq!(rows.digest(), declared);
    let first = summarize.run(rows).await;
    assert_eq!(first.state(), &State::Completed);

    let cached = load.run("mon".into()).await;
    assert_eq!(cached.state(), &State::Cached);
    let rows = cached.value().unwrap().clone();
    assert_eq!(rows.digest(), declared, "not the canonical digest");
    assert_ne!(declared, hash_value(&vec![3u32, 2, 3]).unwrap());
    let second = summarize.run(rows).await;
    assert_eq!(second.state(), &State::Cached);
    assert_eq!(cache_key_of(&first), cache_key_of(&second));
    assert_eq!((executions(&loads), executions(&sums)), (1, 1));
}

/// A task built with `Task::new` records its input and output types in its signature:
/// the same name, version and input name with another input type is a miss.
pub async fn builder_signature_has_input_types(store: &ResultStore) {
    let name = unique("typed");
    let runs = counter();
    let counted = runs.clone();
    let wide = Task::infallible(&name, move |x: i64| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { format!("i64 {x}") }
    })
    .inputs(["x"])
    .cache(Cache::new().version("1"))
    .result_storage(store.clone())
    .memory_tier(false);
    let counted = runs.clone();
    let narrow = Task::infallible(&name, move |x: u32| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { format!("u32 {x}") }
    })
    .inputs(["x"])
    .cache(Cache::new().version("1"))
    .result_storage(store.clone())
    .memory_tier(false);
    assert_eq!(wide.run(5).await.state(), &State::Completed);
    assert_eq!(wide.run(5).await.state(), &State::Cached);
    let other_type = narrow.run(5).await;
    assert_eq!(
        (other_type.state(), other_type.value().map(String::as_str)),
        (&State::Completed, Some("u32 5"))
    );
    assert_eq!(executions(&runs), 2);
}

/// Flyte's `overwrite_cache` on a flow run: every cached task of that run runs again
/// and replaces its record; the next ordinary run reads the new value.
pub async fn overwrite_cache_reruns_and_replaces(store: &ResultStore) {
    let runs = counter();
    let task = stamped::<i64>("overwritten", &runs, store)
        .inputs(["x"])
        .cache_policy(INPUTS);
    let body = |_| async { task.call(1).await };
    let first = flow("ow").run((), body).await;
    let overwriting = flow("ow").overwrite_cache(true).run((), body).await;
    let after = flow("ow").run((), body).await;
    assert_eq!(
        [first.value(), overwriting.value(), after.value()],
        [Some(&1), Some(&2), Some(&2)]
    );
    assert_eq!(
        [states(&first), states(&overwriting), states(&after)].concat(),
        [State::Completed, State::Completed, State::Cached]
    );
    assert_eq!(executions(&runs), 2);
    assert_eq!(cache_entries(store).await.len(), 1);
}

/// Flyte's project/domain: the same task and inputs in `proj/dev` and `proj/prod`
/// share nothing; a flow's namespace applies to its tasks.
pub async fn namespaces_do_not_share(store: &ResultStore) {
    let runs = counter();
    let base = add_one("namespaced", &runs, store).cache_policy(INPUTS);
    let dev = base.clone().namespace("proj/dev");
    let prod = base.clone().namespace("proj/prod");

    let a = dev.run(1).await;
    let b = prod.run(1).await;
    let c = dev.run(1).await;
    assert_eq!(
        [a.state(), b.state(), c.state()],
        [&State::Completed, &State::Completed, &State::Cached]
    );
    assert_ne!(cache_key_of(&a), cache_key_of(&b));
    assert!(store
        .exists(&record_location("proj/dev", &cache_key_of(&a)))
        .await
        .unwrap());
    assert!(store
        .exists(&record_location("proj/prod", &cache_key_of(&b)))
        .await
        .unwrap());
    assert_eq!(executions(&runs), 2);

    // The flow's namespace, for tasks that name none.
    let in_prod = flow("ns")
        .namespace("proj/prod")
        .run((), |_| async { base.call(1).await })
        .await;
    assert_eq!(states(&in_prod), [State::Cached]);
    // No namespace at all is a namespace of its own.
    assert_eq!(base.run(1).await.state(), &State::Completed);
    assert_eq!(executions(&runs), 3);
    assert_eq!(cache_entries(store).await.len(), 3);

    // A namespace that makes no valid location caches nothing: each call runs its body
    // (the record can be neither read nor written, a logged miss and warning), and a
    // strict cache fails the run naming the key's fault.
    let outside = base.clone().namespace("../outside");
    for _ in 0..2 {
        let run = outside.run(1).await;
        assert_eq!(run.state(), &State::Completed);
        assert_eq!(run.value(), Some(&2));
    }
    assert_eq!(executions(&runs), 5);
    let strict = outside.clone().strict_cache(true).run(1).await;
    assert!(strict.state().is_failed(), "{:?}", strict.state());
    let err = strict.error().unwrap().to_string();
    assert!(
        err.contains("../outside") && err.contains("cannot leave"),
        "{err}"
    );
    assert_eq!(cache_entries(store).await.len(), 3);
}

// ---------------------------------------------------------------------------------
// Concurrency

/// A body slow enough that concurrent calls overlap.
fn slow_stamped(name: &str, runs: &Arc<AtomicUsize>, store: &ResultStore) -> Task<i64, u64> {
    let runs = runs.clone();
    Task::infallible(name, move |_: i64| {
        let runs = runs.clone();
        async move {
            let n = runs.fetch_add(1, Ordering::SeqCst) as u64 + 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            n
        }
    })
    .inputs(["x"])
    .result_storage(store.clone())
    .memory_tier(false)
}

/// Flyte: `Cache(version=..., serialize=True)`: 8 identical concurrent calls in one
/// flow run the body once; every call gets its value.
pub async fn serialize_runs_identical_calls_once(store: &ResultStore) {
    let runs = counter();
    let task =
        slow_stamped("serialized", &runs, store).cache(Cache::new().version("1").serialize(true));
    let run = flow("serialize")
        .run((), |_| async {
            let calls = (0..8).map(|_| task.call(3));
            futures::future::try_join_all(calls).await
        })
        .await;
    assert_eq!(run.value(), Some(&vec![1; 8]), "{:?}", run.error());
    assert_eq!(executions(&runs), 1);
    let seen = states(&run);
    assert_eq!(seen.iter().filter(|s| **s == State::Completed).count(), 1);
    assert_eq!(seen.iter().filter(|s| **s == State::Cached).count(), 7);
    assert_eq!(cache_entries(store).await.len(), 1);
}

/// Without `serialize`, identical concurrent calls may each run, but they leave
/// exactly one valid record, holding one of the values they returned.
pub async fn concurrent_calls_leave_one_record(store: &ResultStore) {
    let runs = counter();
    let task = slow_stamped("unserialized", &runs, store).cache_policy(INPUTS);
    let run = flow("race")
        .run((), |_| async {
            let calls = (0..8).map(|_| task.run(3));
            let runs = futures::future::join_all(calls).await;
            runs.into_iter()
                .map(|r| r.into_result())
                .collect::<Result<Vec<_>, TaskError>>()
        })
        .await;
    let values = run.value().unwrap_or_else(|| panic!("{:?}", run.error()));
    assert!(states(&run).iter().all(State::is_completed));
    assert!(executions(&runs) >= 1);
    let entries = cache_entries(store).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let record = store.read_record::<u64>(&entries[0]).await.unwrap();
    assert!(
        values.contains(&record.value),
        "{} in {values:?}",
        record.value
    );
    assert_eq!(task.run(3).await.value(), Some(&record.value));
}

// ---------------------------------------------------------------------------------
// Key functions and the pinned key

/// A key function: one entry per city, whatever the other inputs; `None` from it
/// turns caching off for that run.
pub async fn key_fn_policy(store: &ResultStore) {
    let runs = counter();
    let counted = runs.clone();
    let forecast = Task::infallible("forecast", move |(city, days): (String, u32)| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            format!("{days} days in {city}")
        }
    })
    .inputs(["city", "days"])
    .cache_policy(CachePolicy::key_fn(|ctx| {
        ctx.get("city")
            .map(|c| c.to_string())
            .filter(|c| c != "anywhere")
    }))
    .result_storage(store.clone())
    .memory_tier(false);

    let a = forecast.run(("Oslo".into(), 3)).await;
    let b = forecast.run(("Oslo".into(), 5)).await;
    let c = forecast.run(("Bergen".into(), 3)).await;
    assert_eq!(
        [a.state(), b.state(), c.state()],
        [&State::Completed, &State::Cached, &State::Completed]
    );
    assert_eq!(b.value().map(String::as_str), Some("3 days in Oslo"));
    assert_eq!(executions(&runs), 2);
    assert_eq!(cache_entries(store).await.len(), 2);

    let d = forecast.run(("anywhere".into(), 3)).await;
    let e = forecast.run(("anywhere".into(), 3)).await;
    assert_eq!(
        [d.state(), e.state()],
        [&State::Completed, &State::Completed]
    );
    assert_eq!(d.info().cache_key(), None);
    assert_eq!(executions(&runs), 4);
    assert_eq!(cache_entries(store).await.len(), 2);
}

/// The full cache key of a task, pinned.
///
/// `add_one` with `task_source("x + 1")`, policy `INPUTS + TASK_SOURCE`, input `x = 1`.
/// This hex must NEVER change unless `cairn::hashing::KEY_FORMAT_VERSION` does: a
/// changed key silently orphans every cache entry users have (Prefect #12229, flytekit
/// #640). If this assertion fails, the key derivation changed — fix that, or bump
/// KEY_FORMAT_VERSION deliberately and update this vector with it.
pub const GOLDEN_ADD_ONE_KEY: &str =
    "aa02a09244c322421777487316fd210e40efacc33ef8970b4f05641eeb60725d";

pub async fn golden_task_cache_key(store: &ResultStore) {
    assert_eq!(cairn::hashing::KEY_FORMAT_VERSION, 1);
    // The same key, spelled with the public KeyHasher: the task's name, the digest of
    // its source text, and the input `x` by its canonical hash.
    let mut by_hand = cairn::hashing::KeyHasher::new();
    by_hand.component_value("task", "add_one").unwrap();
    by_hand
        .component("task_source", |h| {
            h.str("x + 1");
            h.done()
        })
        .unwrap();
    by_hand.add_input("x", &1i64).unwrap();
    assert_eq!(by_hand.finish().to_hex(), GOLDEN_ADD_ONE_KEY);

    let add_one_i64 = Task::infallible("add_one", |x: i64| async move { x + 1 })
        .inputs(["x"])
        .task_source("x + 1")
        .cache_policy(INPUTS + TASK_SOURCE)
        .result_storage(store.clone())
        .memory_tier(false);
    let add_one_u8 = Task::infallible("add_one", |x: u8| async move { i64::from(x) + 1 })
        .inputs(["x"])
        .task_source("x + 1")
        .cache_policy(INPUTS + TASK_SOURCE)
        .result_storage(store.clone())
        .memory_tier(false);

    let first = flow("golden")
        .run((), |_| async { add_one_i64.call(1).await })
        .await;
    let second = flow("golden")
        .run((), |_| async { add_one_i64.call(1).await })
        .await;
    let narrow = flow("golden-u8")
        .run((), |_| async { add_one_u8.call(1).await })
        .await;
    let keys: Vec<_> = [&first, &second, &narrow]
        .iter()
        .map(|r| r.task_runs()[0].cache_key().map(str::to_owned).unwrap())
        .collect();
    assert_eq!(keys[0], GOLDEN_ADD_ONE_KEY);
    assert_eq!(keys[1], GOLDEN_ADD_ONE_KEY, "another flow run");
    assert_eq!(keys[2], GOLDEN_ADD_ONE_KEY, "1u8 is the integer 1");
    assert_eq!(
        [states(&first), states(&second), states(&narrow)].concat(),
        [State::Completed, State::Cached, State::Cached]
    );
    assert!(store
        .exists(&record_location("default", GOLDEN_ADD_ONE_KEY))
        .await
        .unwrap());
    // RUN_ID is what makes keys differ per flow run.
    let per_run = add_one_i64
        .clone()
        .cache_policy(INPUTS + TASK_SOURCE + RUN_ID);
    let run = flow("golden")
        .run((), |_| async { per_run.call(1).await })
        .await;
    assert_ne!(run.task_runs()[0].cache_key(), Some(GOLDEN_ADD_ONE_KEY));
}

/// Generates one `#[tokio::test]` per caching behaviour for the store that `$make` (an
/// async expression returning `Option<ResultStore>`, evaluated afresh for every test;
/// `None` skips) builds.
#[macro_export]
macro_rules! caching_tests {
    ($make:expr) => {
        $crate::caching_tests!(@each $make;
            default_policy_caches_within_a_flow_run,
            excluded_input_does_not_change_the_key,
            entries_expire_by_the_flow_clock,
            refresh_cache_runs_and_replaces,
            inputs_and_task_source_together,
            shared_cache_key_across_tasks_and_flows,
            prefect_1_validators,
            signature_change_is_a_miss,
            version_bump_and_back,
            ignored_inputs,
            salt_changes_the_key,
            declared_hashes_and_file_inputs,
            unhashable_input_is_a_clear_error,
            corrupt_records_are_misses_and_replaced,
            deleted_record_is_a_miss,
            memory_tier_serves_hits_already_seen,
            memory_tier_revalidates_replaced_records,
            declared_hash_travels_with_the_cached_value,
            builder_signature_has_input_types,
            overwrite_cache_reruns_and_replaces,
            namespaces_do_not_share,
            serialize_runs_identical_calls_once,
            concurrent_calls_leave_one_record,
            key_fn_policy,
            golden_task_cache_key,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(store) = $make.await {
                    caching::$name(&store).await;
                }
            }
        )*
    };
}
