//! The runner end to end: states, log lines, retries, checkpointing precedence,
//! targets, concurrency, ephemeral runs, flow runs and what is persisted for resuming.
//!
//! Bodies count their executions with an `AtomicUsize`; nothing here sleeps or measures
//! wall-clock time (the retry delay is checked on tokio's paused, virtual clock).

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cairn::{
    BoxError, ErrorKind, Flow, ResultStore, Settings, State, Task, TaskError, TaskErrorKind,
    TaskInput, TaskOutput,
};
use chrono::{DateTime, NaiveDate, Utc};

// ---------------------------------------------------------------------------------
// Helpers

/// A task whose body counts its executions and returns `f(input, n)`, `n` being the
/// execution's number (1 for the first).
fn counted<I: TaskInput, O: TaskOutput>(
    name: &str,
    runs: &Arc<AtomicUsize>,
    f: impl Fn(I, usize) -> Result<O, BoxError> + Send + Sync + 'static,
) -> Task<I, O> {
    let runs = runs.clone();
    Task::new(name, move |input: I| {
        let out = f(input, runs.fetch_add(1, Ordering::SeqCst) + 1);
        async move { out }
    })
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn count(c: &Arc<AtomicUsize>) -> usize {
    c.load(Ordering::SeqCst)
}

/// Settings read from an empty `CAIRN_HOME` and no environment, so that the machine's
/// own config and variables cannot change what a test sees.
fn clean_settings(home: &tempfile::TempDir) -> Settings {
    Settings::from_sources(home.path(), Vec::<(String, String)>::new()).unwrap()
}

/// A flow called `name` with clean settings; the returned directory is its
/// `CAIRN_HOME` and must outlive the flow.
fn flow(name: &str) -> (Flow, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    (Flow::new(name).settings(clean_settings(&home)), home)
}

/// Friday, 15 March 2024, 09:00 UTC.
fn a_friday() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2024, 3, 15)
        .unwrap()
        .and_hms_opt(9, 0, 0)
        .unwrap()
        .and_utc()
}

thread_local! {
    /// The log lines of the `with_log` call running on this thread, if any.
    static THREAD_LOG: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// A log writer that appends to the calling thread's `THREAD_LOG`, so that tests
/// running in parallel each see only their own lines.
struct ThreadLog;

impl std::io::Write for ThreadLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        THREAD_LOG.with(|log| {
            if let Some(log) = log.borrow_mut().as_mut() {
                log.extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadLog {
    type Writer = ThreadLog;
    fn make_writer(&'a self) -> ThreadLog {
        ThreadLog
    }
}

/// Runs `future` on a current-thread runtime with a subscriber that captures the
/// formatted log lines, and returns its output and the log.
///
/// `tracing` caches each call site's interest, computed from the subscribers registered
/// at that moment — and when only one is registered, from the *calling thread's*
/// default, so a call site first hit by a parallel test (whose default is no
/// subscriber) would stay silent here. Two subscribers that live as long as the
/// process (the capturing one and one that wants nothing) make every call site ask
/// each event's own thread, and rebuilding the cache repairs call sites first hit
/// before they existed.
fn with_log<T>(future: impl Future<Output = T>) -> (T, String) {
    static DISPATCH: OnceLock<(tracing::Dispatch, tracing::Dispatch)> = OnceLock::new();
    let (capture, _other) = DISPATCH.get_or_init(|| {
        let capture = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(ThreadLog)
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_max_level(tracing::Level::DEBUG)
                .finish(),
        );
        let other = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        (capture, other)
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    THREAD_LOG.with(|log| *log.borrow_mut() = Some(Vec::new()));
    let out = tracing::dispatcher::with_default(capture, || {
        tracing::callsite::rebuild_interest_cache();
        runtime.block_on(future)
    });
    let log = THREAD_LOG
        .with(|log| log.borrow_mut().take())
        .unwrap_or_default();
    (out, String::from_utf8(log).unwrap())
}

// ---------------------------------------------------------------------------------
// States

#[tokio::test]
async fn a_successful_run_goes_pending_running_completed() {
    let runs = counter();
    let add_one = counted("add_one", &runs, |x: i64, _| Ok(x + 1));
    let (flow, _home) = flow("states");
    let run = flow.run((), |_| async { Ok(add_one.run(1).await) }).await;
    let task_run = run.value().unwrap();
    assert_eq!(task_run.state(), &State::Completed);
    assert_eq!(task_run.value(), Some(&2));
    assert_eq!(
        task_run.info().states(),
        vec![State::Pending, State::Running, State::Completed]
    );
    assert_eq!(task_run.info().attempts(), 1);
    assert_eq!(count(&runs), 1);
}

#[tokio::test]
async fn an_existing_target_gives_cached_and_the_body_does_not_run() {
    let runs = counter();
    let store = ResultStore::memory();
    let task = counted("answer", &runs, |(): (), _| Ok(42u64))
        .result(store.clone())
        .target("answers/{task_name}.json");
    store.write_at("answers/answer.json", &41u64).await.unwrap();

    let run = task.run(()).await;
    assert_eq!(run.state(), &State::Cached);
    assert_eq!(run.value(), Some(&41), "the value is read from the target");
    assert_eq!(
        run.info().states(),
        vec![State::Pending, State::Running, State::Cached]
    );
    assert_eq!(run.info().attempts(), 0);
    assert_eq!(run.info().location(), Some("answers/answer.json"));
    assert_eq!(count(&runs), 0, "the body did not run");
}

#[tokio::test]
async fn a_failing_task_without_retries_fails_with_the_body_error() {
    let runs = counter();
    let task = counted("write_report", &runs, |(): (), _| {
        Err::<u64, BoxError>("disk full".into())
    });
    let run = task.run(()).await;

    assert!(run.state().is_failed(), "{:?}", run.state());
    let State::Failed { message } = run.state() else {
        unreachable!()
    };
    assert!(message.contains("disk full"), "{message}");
    assert_eq!(
        run.info().states()[..2],
        [State::Pending, State::Running],
        "then Failed"
    );
    assert_eq!(run.info().states().len(), 3);
    assert_eq!(run.info().attempts(), 1);
    assert_eq!(count(&runs), 1);

    let error = run.error().unwrap();
    assert_eq!(error.kind(), TaskErrorKind::Body);
    assert_eq!(error.task_run(), run.name());
    let text = error.to_string();
    assert!(text.contains("disk full"), "{text}");
    assert!(text.contains(run.name()), "{text}");

    // `call` gives the same error.
    let error = task.call(()).await.unwrap_err();
    assert_eq!(error.kind(), TaskErrorKind::Body);
    assert!(error.to_string().contains("disk full"), "{error}");
}

#[tokio::test]
async fn retries_pass_through_retrying_states_and_end_completed() {
    let runs = counter();
    let flaky = counted("flaky", &runs, |x: u32, n| {
        if n <= 2 {
            Err(format!("attempt {n} timed out").into())
        } else {
            Ok(x * 10)
        }
    })
    .retries(3);
    let run = flaky.run(4).await;

    assert_eq!(run.state(), &State::Completed);
    assert_eq!(run.value(), Some(&40));
    assert_eq!(
        run.info().states(),
        vec![
            State::Pending,
            State::Running,
            State::Retrying { attempt: 2 },
            State::Running,
            State::Retrying { attempt: 3 },
            State::Running,
            State::Completed,
        ]
    );
    assert_eq!(run.info().attempts(), 3);
    assert_eq!(count(&runs), 3);
}

#[tokio::test]
async fn out_of_retries_the_run_fails_after_retries_plus_one_attempts() {
    let runs = counter();
    let broken = counted("broken", &runs, |(): (), n| {
        Err::<u8, BoxError>(format!("attempt {n} refused").into())
    })
    .retries(2);
    let run = broken.run(()).await;

    assert!(run.state().is_failed(), "{:?}", run.state());
    assert_eq!(run.info().attempts(), 3, "retries + 1");
    assert_eq!(count(&runs), 3);
    let retrying: Vec<_> = run
        .info()
        .states()
        .iter()
        .filter(|s| matches!(s, State::Retrying { .. }))
        .cloned()
        .collect();
    assert_eq!(
        retrying,
        vec![
            State::Retrying { attempt: 2 },
            State::Retrying { attempt: 3 }
        ]
    );
    let error = run.error().unwrap();
    assert_eq!(error.kind(), TaskErrorKind::Body);
    let text = error.to_string();
    assert!(text.contains("failed after 3 attempts"), "{text}");
    assert!(text.contains("attempt 3 refused"), "the last error: {text}");
}

// ---------------------------------------------------------------------------------
// Log lines

#[test]
fn task_and_flow_runs_log_their_states_as_the_seeds_do() {
    let store = ResultStore::memory();
    let add_one = Task::infallible("add_one", |x: i64| async move { x + 1 })
        .inputs(["x"])
        .target("{task_name}/{x}.json");
    let flaky_runs = counter();
    let flaky = counted("flaky", &flaky_runs, |(): (), n| {
        if n == 1 {
            Err("connection reset".into())
        } else {
            Ok(1u8)
        }
    })
    .retries(1);
    let (flow, _home) = flow("my-flow");
    let flow = flow.result_store(store);

    let (run, log) = with_log(flow.run((), |_| async {
        add_one.call(1).await?; // Completed
        add_one.call(1).await?; // the target exists: Cached
        flaky.call(()).await?;
        Ok(())
    }));

    assert_eq!(run.state(), &State::Completed);
    let name = run.name();
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let has = |line: &str| lines.iter().any(|l| l.ends_with(line));
    assert!(
        has(&format!(
            "Flow run '{name}' - Beginning flow run '{name}' for flow 'my-flow'"
        )),
        "{log}"
    );
    let [first, second, third] = run.task_runs() else {
        panic!("three task runs: {:?}", run.task_runs())
    };
    assert!(first.name().starts_with("add_one-"), "{}", first.name());
    assert!(
        has(&format!(
            "Task run '{}' - Finished in state Completed()",
            first.name()
        )),
        "{log}"
    );
    assert!(
        has(&format!(
            "Task run '{}' - Finished in state Cached(type=COMPLETED)",
            second.name()
        )),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "Task run '{}' - Attempt 1 failed: connection reset",
            third.name()
        ))),
        "{log}"
    );
    assert!(
        has(&format!(
            "Task run '{}' - Finished in state Completed()",
            third.name()
        )),
        "{log}"
    );
    assert!(
        has(&format!(
            "Flow run '{name}' - Finished in state Completed()"
        )),
        "{log}"
    );
    // The flow's last line comes after every task run's.
    let finished = |needle: &str| lines.iter().position(|l| l.ends_with(needle)).unwrap();
    assert!(
        finished(&format!(
            "Flow run '{name}' - Finished in state Completed()"
        )) > finished(&format!(
            "Task run '{}' - Finished in state Completed()",
            third.name()
        ))
    );
}

#[test]
fn a_failed_flow_run_logs_failed_with_the_error() {
    let boom = Task::new("boom", |(): ()| async {
        Err::<(), BoxError>("no such table".into())
    });
    let (flow, _home) = flow("my-flow");
    let (run, log) = with_log(flow.run((), |_| async { boom.call(()).await }));
    assert!(run.state().is_failed());
    let task_run = &run.task_runs()[0];
    assert!(
        log.contains(&format!(
            "Task run '{}' - Finished in state Failed('task run '{}': no such table')",
            task_run.name(),
            task_run.name()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Flow run '{}' - Finished in state Failed(",
            run.name()
        )),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------
// Retries

#[tokio::test]
async fn retries_reuse_the_inputs_and_upstream_work_is_not_redone() {
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Batch {
        day: String,
        rows: Vec<u32>,
    }

    let upstream_runs = counter();
    let extract = counted("extract", &upstream_runs, |(): (), n| {
        Ok(Batch {
            day: "2024-03-15".into(),
            rows: vec![3, 1, 4, n as u32],
        })
    });
    let seen: Arc<Mutex<Vec<Batch>>> = Arc::default();
    let load_runs = counter();
    let load = {
        let seen = seen.clone();
        counted("load", &load_runs, move |batch: Batch, n| {
            seen.lock().unwrap().push(batch.clone());
            if n <= 2 {
                Err(format!("warehouse busy ({n})").into())
            } else {
                Ok(batch.rows.iter().sum::<u32>())
            }
        })
        .retries(3)
    };
    let (flow, _home) = flow("etl");
    let run = flow
        .run((), |_| async {
            let batch = extract.call(()).await?;
            load.call(batch).await
        })
        .await;

    assert_eq!(run.state(), &State::Completed);
    assert_eq!(run.value(), Some(&9));
    assert_eq!(count(&upstream_runs), 1, "the upstream task ran once");
    assert_eq!(count(&load_runs), 3);
    let expected = Batch {
        day: "2024-03-15".into(),
        rows: vec![3, 1, 4, 1],
    };
    assert_eq!(
        *seen.lock().unwrap(),
        vec![expected; 3],
        "the same input each attempt"
    );
    let load_run = run.runs_of("load").next().unwrap();
    assert_eq!(
        (load_run.attempts(), load_run.state()),
        (3, &State::Completed)
    );
    assert_eq!(run.runs_of("extract").count(), 1);
}

#[tokio::test]
async fn the_retry_delay_is_waited_before_each_retry() {
    // Virtual time: the paused clock jumps to each timer, so nothing really waits.
    tokio::time::pause();
    let delay = Duration::from_secs(90);
    let runs = counter();
    let flaky = counted("flaky", &runs, |(): (), n| {
        if n <= 2 {
            Err("not yet".into())
        } else {
            Ok(n)
        }
    })
    .retries(2)
    .retry_delay(delay);

    let start = tokio::time::Instant::now();
    let run = flaky.run(()).await;
    let elapsed = start.elapsed();

    assert_eq!(run.state(), &State::Completed);
    assert_eq!(count(&runs), 3);
    assert!(
        elapsed >= 2 * delay,
        "two retries, each after {delay:?}: {elapsed:?}"
    );
    // Not before the first attempt, nor after the last one.
    assert!(elapsed < 3 * delay, "{elapsed:?}");
}

// ---------------------------------------------------------------------------------
// Checkpointing: task > flow > environment > config file > off

/// Where each level stands: `None` leaves the level unset.
#[derive(Debug, Clone, Copy, Default)]
struct Levels {
    task: Option<bool>,
    flow: Option<bool>,
    env: Option<bool>,
    file: Option<bool>,
}

/// Runs one task under `levels` with a local store, and returns whether a checkpoint
/// was written (checking that the run's location and the store agree).
async fn checkpoint_written(levels: Levels) -> bool {
    let home = tempfile::tempdir().unwrap();
    if let Some(on) = levels.file {
        std::fs::write(
            home.path().join("config.toml"),
            format!("[flows]\ncheckpointing = {on}\n"),
        )
        .unwrap();
    }
    let env: Vec<(&str, String)> = levels
        .env
        .map(|on| ("CAIRN__FLOWS__CHECKPOINTING", on.to_string()))
        .into_iter()
        .collect();
    let settings = Settings::from_sources(home.path(), env).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();

    let mut task = Task::infallible("answer", |(): ()| async { 42u64 });
    if let Some(on) = levels.task {
        task = task.checkpoint(on);
    }
    let mut flow = Flow::new("ck-flow")
        .settings(settings)
        .result_store(store.clone());
    if let Some(on) = levels.flow {
        flow = flow.checkpointing(on);
    }
    let run = flow.run((), |_| async { task.call(()).await }).await;
    assert_eq!(run.state(), &State::Completed, "{levels:?}");

    let location = format!("runs/v1/ck-flow/{}/answer/0", run.id());
    let info = &run.task_runs()[0];
    let exists = store.exists(&location).await.unwrap();
    if exists {
        assert_eq!(info.location(), Some(location.as_str()), "{levels:?}");
        let record = store.read_record::<u64>(&location).await.unwrap();
        assert_eq!(record.value, 42);
        assert!(data.path().join(&location).is_file());
    } else {
        assert_eq!(info.location(), None, "{levels:?}");
        assert!(
            !home.path().join("storage").exists(),
            "nothing went to the default store either"
        );
    }
    exists
}

#[tokio::test]
async fn checkpointing_the_most_specific_level_wins() {
    let on = Some(true);
    let off = Some(false);
    let cases = [
        // (levels, written)
        (Levels::default(), false),
        (
            Levels {
                file: on,
                ..Levels::default()
            },
            true,
        ),
        (
            Levels {
                file: off,
                ..Levels::default()
            },
            false,
        ),
        (
            Levels {
                env: on,
                ..Levels::default()
            },
            true,
        ),
        (
            Levels {
                env: off,
                file: on,
                ..Levels::default()
            },
            false,
        ),
        (
            Levels {
                env: on,
                file: off,
                ..Levels::default()
            },
            true,
        ),
        (
            Levels {
                flow: off,
                env: on,
                file: on,
                ..Levels::default()
            },
            false,
        ),
        (
            Levels {
                flow: on,
                env: off,
                file: off,
                ..Levels::default()
            },
            true,
        ),
        (
            Levels {
                flow: on,
                ..Levels::default()
            },
            true,
        ),
        (
            Levels {
                task: off,
                flow: on,
                env: on,
                file: on,
            },
            false,
        ),
        (
            Levels {
                task: on,
                flow: off,
                env: off,
                file: off,
            },
            true,
        ),
        (
            Levels {
                task: on,
                ..Levels::default()
            },
            true,
        ),
    ];
    for (levels, written) in cases {
        assert_eq!(checkpoint_written(levels).await, written, "{levels:?}");
    }
}

#[tokio::test]
async fn without_a_named_store_checkpoints_go_to_cairn_home_storage() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[flows]\ncheckpointing = true\n",
    )
    .unwrap();
    let settings = Settings::from_sources(home.path(), Vec::<(String, String)>::new()).unwrap();
    let task = Task::infallible("answer", |(): ()| async { 42u64 });
    let run = Flow::new("home-flow")
        .settings(settings)
        .run((), |_| async { task.call(()).await })
        .await;
    assert_eq!(run.state(), &State::Completed);
    let location = format!("runs/v1/home-flow/{}/answer/0", run.id());
    assert!(
        home.path().join("storage").join(&location).is_file(),
        "{location} under $CAIRN_HOME/storage"
    );
}

#[tokio::test]
async fn a_checkpoint_at_the_default_location_is_a_verified_record() {
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    let task = Task::infallible("class_task", |(): ()| async { 42u64 }).checkpoint(true);
    let (flow, _home) = flow("seed");
    let run = flow
        .result_store(store.clone())
        .run((), |_| async { task.call(()).await })
        .await;

    let location = format!("runs/v1/seed/{}/class_task/0", run.id());
    assert_eq!(run.task_runs()[0].location(), Some(location.as_str()));
    let record = store.read_record::<u64>(&location).await.unwrap();
    assert_eq!(record.value, 42);
    assert_eq!(record.header.task.as_deref(), Some("class_task"));
    assert_eq!(record.header.output_type.as_deref(), Some("u64"));

    // A damaged checkpoint is never read back as data.
    let path = data.path().join(&location);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = store.read_record::<u64>(&location).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

#[tokio::test]
async fn a_location_template_writes_plain_json_there() {
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    let task = Task::infallible("func_task", |x: u32| async move { vec![x; 3] })
        .checkpoint(true)
        .location("{flow_name}/{task_name}-{map_index}.json");
    let (flow, _home) = flow("seed");
    let run = flow
        .result_store(store.clone())
        .run((), |_| async {
            task.call(7).await?;
            task.call(8).await
        })
        .await;
    assert_eq!(run.state(), &State::Completed);
    let locations: Vec<_> = run
        .task_runs()
        .iter()
        .map(|r| r.location().map(str::to_owned).unwrap())
        .collect();
    assert_eq!(
        locations,
        ["seed/func_task-0.json", "seed/func_task-1.json"]
    );
    let text = std::fs::read_to_string(data.path().join("seed/func_task-1.json")).unwrap();
    assert_eq!(serde_json::from_str::<Vec<u32>>(&text).unwrap(), [8, 8, 8]);

    // The task's own store wins over the flow's.
    let own = tempfile::tempdir().unwrap();
    let own_store = ResultStore::local(own.path()).unwrap();
    let task = task.result(own_store);
    let (flow, _home) = self::flow("seed");
    flow.result_store(store)
        .run((), |_| async { task.call(9).await })
        .await;
    assert!(own.path().join("seed/func_task-0.json").is_file());
    let text = std::fs::read_to_string(data.path().join("seed/func_task-0.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<u32>>(&text).unwrap(),
        [7, 7, 7],
        "untouched"
    );
}

// ---------------------------------------------------------------------------------
// Targets

#[tokio::test]
async fn a_date_target_lands_under_the_weekday_and_is_cached_the_next_run() {
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    let runs = counter();
    let func_task =
        counted("func_task", &runs, |(): (), _| Ok(99u64)).target("{date:%A}/{task_name}.txt");
    let (flow, _home) = flow("seed");
    let flow = flow.result_store(store).date(a_friday());

    let first = flow.run((), |_| async { func_task.call(()).await }).await;
    assert_eq!(first.value(), Some(&99));
    assert_eq!(first.task_runs()[0].state(), &State::Completed);
    assert_eq!(
        first.task_runs()[0].location(),
        Some("Friday/func_task.txt")
    );
    let path = data.path().join("Friday/func_task.txt");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "99");

    let second = flow.run((), |_| async { func_task.call(()).await }).await;
    assert_eq!(second.value(), Some(&99));
    assert_eq!(second.task_runs()[0].state(), &State::Cached);
    assert_eq!(count(&runs), 1, "the body ran once over two flow runs");
}

/// A task whose output says which execution made it, with a `.txt` target.
fn numbered(runs: &Arc<AtomicUsize>) -> Task<(), String> {
    counted("func_task", runs, |(): (), n| Ok(format!("run {n}")))
        .target("{date:%A}/{task_name}.txt")
}

#[tokio::test]
async fn overwrite_reruns_and_replaces_the_target() {
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    let runs = counter();
    let task = numbered(&runs);
    let (flow, _home) = flow("seed");
    let flow = flow.result_store(store).date(a_friday());
    let path = data.path().join("Friday/func_task.txt");

    flow.run((), |_| async { task.call(()).await }).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "run 1");

    let again = flow
        .clone()
        .overwrite(true)
        .run((), |_| async { task.call(()).await })
        .await;
    assert_eq!(again.task_runs()[0].state(), &State::Completed);
    assert_eq!(again.value().map(String::as_str), Some("run 2"));
    assert_eq!(count(&runs), 2);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "run 2");

    // Without overwrite, the replaced target is what the next run finds.
    let cached = flow.run((), |_| async { task.call(()).await }).await;
    assert_eq!(cached.task_runs()[0].state(), &State::Cached);
    assert_eq!(cached.value().map(String::as_str), Some("run 2"));
    assert_eq!(count(&runs), 2);
}

#[tokio::test]
async fn refresh_reruns_and_replaces_the_target() {
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    let runs = counter();
    let task = numbered(&runs);
    let (flow, _home) = flow("seed");
    let flow = flow.result_store(store).date(a_friday());
    let path = data.path().join("Friday/func_task.txt");

    flow.run((), |_| async { task.call(()).await }).await;
    let refreshing = task.clone().refresh(true);
    let again = flow.run((), |_| async { refreshing.call(()).await }).await;
    assert_eq!(again.task_runs()[0].state(), &State::Completed);
    assert_eq!(count(&runs), 2);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "run 2");
}

#[tokio::test]
async fn a_target_written_by_another_tool_counts_as_present() {
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    std::fs::create_dir_all(data.path().join("Friday")).unwrap();
    std::fs::write(data.path().join("Friday/func_task.txt"), "made by hand").unwrap();
    let runs = counter();
    let task = numbered(&runs);
    let (flow, _home) = flow("seed");
    let run = flow
        .result_store(store)
        .date(a_friday())
        .run((), |_| async { task.call(()).await })
        .await;
    assert_eq!(run.task_runs()[0].state(), &State::Cached);
    assert_eq!(run.value().map(String::as_str), Some("made by hand"));
    assert_eq!(count(&runs), 0);
}

#[tokio::test]
async fn a_target_that_does_not_decode_fails_the_run_naming_the_target() {
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    std::fs::create_dir_all(data.path().join("totals")).unwrap();
    std::fs::write(
        data.path().join("totals/sum.json"),
        "{\"not\": \"a number\"}",
    )
    .unwrap();
    let runs = counter();
    let sum = counted("sum", &runs, |(): (), _| Ok(6u64)).target("totals/{task_name}.json");
    let (flow, _home) = flow("seed");
    let run = flow
        .result_store(store)
        .run((), |_| async { sum.call(()).await })
        .await;

    assert!(run.state().is_failed());
    let info = &run.task_runs()[0];
    assert!(info.state().is_failed(), "{:?}", info.state());
    assert_eq!(count(&runs), 0, "neither run nor overwritten");
    let error = run.error().unwrap().to_string();
    assert!(error.contains("totals/sum.json"), "{error}");
    assert!(error.contains("u64"), "{error}");
    let task_error = run
        .error()
        .unwrap()
        .downcast_ref::<TaskError>()
        .expect("the flow failed with the task's error");
    assert_eq!(task_error.kind(), TaskErrorKind::Store);
    assert_eq!(task_error.error_kind(), Some(ErrorKind::Serialization));
    assert_eq!(
        std::fs::read_to_string(data.path().join("totals/sum.json")).unwrap(),
        "{\"not\": \"a number\"}",
        "the foreign file is left alone"
    );
}

#[tokio::test]
async fn an_input_that_would_escape_the_store_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let store = ResultStore::local(&data).unwrap();
    let runs = counter();
    let forecast = counted("forecast", &runs, |city: String, _| {
        Ok(format!("sunny in {city}"))
    })
    .inputs(["city"])
    .target("weather/{city}.json");
    let (flow, _home) = flow("seed");
    let flow = flow.result_store(store);

    let ok = flow
        .run((), |_| async { forecast.call("oslo".to_string()).await })
        .await;
    assert_eq!(ok.state(), &State::Completed);
    assert!(data.join("weather/oslo.json").is_file());

    let run = flow
        .run((), |_| async { forecast.call("../x".to_string()).await })
        .await;
    assert!(run.state().is_failed());
    assert_eq!(count(&runs), 1, "the body did not run for '../x'");
    let error = run
        .error()
        .unwrap()
        .downcast_ref::<TaskError>()
        .unwrap()
        .clone();
    assert_eq!(error.kind(), TaskErrorKind::Template);
    let text = error.to_string();
    assert!(text.contains("'{city}' renders '../x'"), "{text}");
    assert!(text.contains("would leave the store"), "{text}");
    assert!(!data.join("x.json").exists() && !root.path().join("x.json").exists());
}

#[test]
fn an_unknown_template_key_is_an_error_when_the_task_is_defined() {
    let error = Task::infallible("forecast", |city: String| async move { city })
        .inputs(["city"])
        .target("weather/{citty}/{task_name}.json")
        .check()
        .unwrap_err();
    let text = error.to_string();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(text.contains("forecast"), "names the task: {text}");
    assert!(text.contains("unknown key 'citty'"), "{text}");
    assert!(text.contains("did you mean 'city'?"), "{text}");
    assert!(text.contains("available: "), "{text}");
    for key in [
        "city",
        "date",
        "flow_name",
        "map_index",
        "task_name",
        "today",
    ] {
        assert!(text.contains(key), "lists '{key}': {text}");
    }

    // The same check for checkpoint locations.
    let error = Task::infallible("forecast", |city: String| async move { city })
        .inputs(["city"])
        .location("{flow_nam}/{city}.json")
        .check()
        .unwrap_err();
    assert!(
        error.to_string().contains("unknown key 'flow_nam'"),
        "{error}"
    );
}

#[tokio::test]
async fn without_declared_inputs_an_unknown_key_fails_the_first_run_before_the_body() {
    // Input names are only known once a value arrives, so the check waits for the run.
    let runs = counter();
    let task =
        counted("forecast", &runs, |city: String, _| Ok(city)).target("weather/{citty}.json");
    let (flow, _home) = flow("seed");
    let run = flow
        .result_store(ResultStore::memory())
        .run((), |_| async { task.call("oslo".into()).await })
        .await;
    assert!(run.state().is_failed());
    assert_eq!(count(&runs), 0);
    let error = run.error().unwrap().downcast_ref::<TaskError>().unwrap();
    assert_eq!(error.kind(), TaskErrorKind::Template);
    let text = error.to_string();
    assert!(text.contains("unknown key 'citty'"), "{text}");
    assert!(
        text.contains("weather/{citty}.json"),
        "names the target: {text}"
    );
}

#[tokio::test]
async fn a_callable_target_is_computed_from_the_context() {
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    let runs = counter();
    let rows = counted("rows", &runs, |n: i64, _| Ok((0..n).collect::<Vec<i64>>()))
        .inputs(["n"])
        .target_fn(|ctx| {
            let size = match ctx.get("n") {
                Some(cairn::Value::Int(n)) if *n > 100 => "big",
                _ => "small",
            };
            let task = match ctx.get("task_name") {
                Some(cairn::Value::Str(s)) => s.clone(),
                _ => "unknown".into(),
            };
            format!("{size}/{task}.json")
        });
    let (flow, _home) = flow("seed");
    let flow = flow.result_store(store);

    let first = flow.run((), |_| async { rows.call(3).await }).await;
    assert_eq!(first.task_runs()[0].location(), Some("small/rows.json"));
    assert!(data.path().join("small/rows.json").is_file());
    let big = flow.run((), |_| async { rows.call(500).await }).await;
    assert_eq!(big.task_runs()[0].location(), Some("big/rows.json"));
    let again = flow.run((), |_| async { rows.call(3).await }).await;
    assert_eq!(again.task_runs()[0].state(), &State::Cached);
    assert_eq!(again.value(), Some(&vec![0, 1, 2]));
    assert_eq!(count(&runs), 2);
}

// ---------------------------------------------------------------------------------
// Concurrency, ephemeral runs, flow runs

#[tokio::test]
async fn tasks_joined_in_a_flow_run_concurrently() {
    // Each body waits until both have started: a runner that ran them one after the
    // other would never get past the barrier, and the timeout turns that into a failure.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let meeting = |name: &str| {
        let barrier = barrier.clone();
        Task::infallible(name, move |x: u32| {
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                x
            }
        })
        .checkpoint(true)
    };
    let left = meeting("left");
    let right = meeting("right");
    let (flow, _home) = flow("together");
    let flow = flow.result_store(ResultStore::memory());

    let run = tokio::time::timeout(
        Duration::from_secs(20),
        flow.run((), |_| async {
            let (a, b) = futures::join!(left.call(1), right.call(2));
            Ok((a?, b?))
        }),
    )
    .await
    .expect("the two tasks ran one after the other");
    assert_eq!(run.value(), Some(&(1, 2)));
    assert_eq!(run.task_runs().len(), 2);

    // `map` runs its inputs concurrently too.
    let run = tokio::time::timeout(
        Duration::from_secs(20),
        flow.run((), |_| async {
            let runs = left.map([5, 6]).await;
            runs.into_iter()
                .map(|r| r.into_result())
                .collect::<Result<Vec<_>, TaskError>>()
        }),
    )
    .await
    .expect("map ran its inputs one after the other");
    assert_eq!(run.value(), Some(&vec![5, 6]));
}

#[tokio::test]
async fn a_task_called_outside_a_flow_runs_on_its_own() {
    let runs = counter();
    let add_one = counted("add_one", &runs, |x: i64, _| Ok(x + 1));
    assert_eq!(add_one.call(41).await.unwrap(), 42);

    let run = add_one.run(1).await;
    assert_eq!(run.state(), &State::Completed);
    assert_eq!(run.value(), Some(&2));
    assert!(run.name().starts_with("add_one-"), "{}", run.name());
    assert_eq!(run.info().map_index(), 0);
    assert_eq!(count(&runs), 2);

    // With a store and a target of its own, the second call finds the target.
    let store = ResultStore::memory();
    let targeted = add_one
        .clone()
        .inputs(["x"])
        .result(store.clone())
        .target("{flow_name}/{task_name}-{x}.json");
    assert_eq!(targeted.run(9).await.state(), &State::Completed);
    assert!(store.exists("ephemeral/add_one-9.json").await.unwrap());
    let again = targeted.run(9).await;
    assert_eq!((again.state(), again.value()), (&State::Cached, Some(&10)));
    assert_eq!(count(&runs), 3);
}

#[tokio::test]
async fn a_flow_run_has_an_id_a_name_a_state_and_its_task_runs() {
    let double = Task::infallible("double", |x: u32| async move { x * 2 });
    let fail = Task::new("fail", |x: u32| async move {
        Err::<u32, BoxError>(format!("{x} is odd").into())
    });
    let (flow, _home) = flow("numbers");

    let run = flow
        .run(vec![1u32, 2, 3], |xs| async {
            let doubled = double.map(xs).await;
            let total: u32 = doubled.iter().filter_map(|r| r.value()).sum();
            let last = double.call(total).await?;
            Ok(last)
        })
        .await;

    assert_eq!(run.state(), &State::Completed);
    assert_eq!(run.value(), Some(&24));
    assert_eq!(run.flow_name(), "numbers");
    assert_eq!(run.id().len(), 36, "a UUID: {}", run.id());
    let words: Vec<&str> = run.name().split('-').collect();
    assert_eq!(words.len(), 2, "{}", run.name());
    assert!(
        words
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase())),
        "{}",
        run.name()
    );
    assert_eq!(run.task_runs().len(), 4);
    assert!(run
        .task_runs()
        .iter()
        .all(|r| r.state() == &State::Completed));
    let mut indices: Vec<u64> = run.runs_of("double").map(|r| r.map_index()).collect();
    indices.sort();
    assert_eq!(indices, [0, 1, 2, 3], "map indices, then the next call's");
    let ids: std::collections::BTreeSet<&str> = run.task_runs().iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), 4, "each task run has an id of its own");

    // `map` returns the runs in input order, with their indices.
    let mapped = flow
        .run((), |_| async { Ok(double.map([10, 20, 30]).await) })
        .await;
    let mapped = mapped.value().unwrap();
    let seen: Vec<(u64, u32)> = mapped
        .iter()
        .map(|r| (r.info().map_index(), *r.value().unwrap()))
        .collect();
    assert_eq!(seen, [(0, 20), (1, 40), (2, 60)]);

    // A failing body fails the flow run; every task run is listed with its state.
    let failed = flow
        .run((), |_| async {
            double.call(1).await?;
            fail.call(3).await
        })
        .await;
    assert!(failed.state().is_failed(), "{:?}", failed.state());
    let State::Failed { message } = failed.state() else {
        unreachable!()
    };
    assert!(message.contains("3 is odd"), "{message}");
    assert!(failed.error().unwrap().to_string().contains("3 is odd"));
    let states: Vec<(&str, bool)> = failed
        .task_runs()
        .iter()
        .map(|r| (r.task(), r.state().is_failed()))
        .collect();
    assert_eq!(states, [("double", false), ("fail", true)]);
    assert_ne!(failed.id(), run.id());
    assert!(failed.into_result().is_err());
}

// ---------------------------------------------------------------------------------
// What is persisted for resuming

#[tokio::test]
async fn a_failed_run_leaves_its_inputs_and_state_when_checkpointing() {
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    let runs = counter();
    let upload = counted("upload", &runs, |(city, days): (String, u32), n| {
        Err::<u32, BoxError>(format!("upload {n} of {city}/{days} rejected").into())
    })
    .inputs(["city", "days"])
    .retries(1);
    let (flow, _home) = flow("resumable");
    let run = flow
        .result_store(store.clone())
        .checkpointing(true)
        .run((), |_| async { upload.call(("oslo".to_string(), 3)).await })
        .await;
    assert!(run.state().is_failed());

    let location = format!("runs/v1/resumable/{}/upload/0.inputs", run.id());
    let record = store
        .read_record::<serde_json::Value>(&location)
        .await
        .unwrap();
    let json = record.value;
    assert_eq!(json["inputs"], serde_json::json!(["oslo", 3]), "{json}");
    assert_eq!(json["task"], "upload", "{json}");
    assert_eq!(json["task_run_id"], run.task_runs()[0].id(), "{json}");
    assert_eq!(json["attempts"], 2, "{json}");
    let state = json["state"].as_str().unwrap();
    assert!(state.starts_with("Failed("), "{json}");
    assert!(state.contains("upload 2 of oslo/3 rejected"), "{json}");
    // No checkpoint of an output that does not exist.
    let checkpoint = format!("runs/v1/resumable/{}/upload/0", run.id());
    assert!(!store.exists(&checkpoint).await.unwrap());
}

#[tokio::test]
async fn a_run_that_succeeds_on_a_retry_leaves_no_inputs_to_resume() {
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    let runs = counter();
    let flaky = counted("flaky", &runs, |x: u32, n| {
        if n < 2 {
            Err::<u32, BoxError>("not yet".into())
        } else {
            Ok(x)
        }
    })
    .retries(2);
    let (flow, _home) = flow("resumable");
    let run = flow
        .result_store(store.clone())
        .checkpointing(true)
        .run((), |_| async { flaky.call(7).await })
        .await;
    assert_eq!(run.state(), &State::Completed);
    assert_eq!(run.task_runs()[0].attempts(), 2);
    let inputs = format!("runs/v1/resumable/{}/flaky/0.inputs", run.id());
    assert!(
        !store.exists(&inputs).await.unwrap(),
        "a completed run still offers itself for resuming"
    );
    let checkpoint = format!("runs/v1/resumable/{}/flaky/0", run.id());
    assert_eq!(
        store.read_record::<u32>(&checkpoint).await.unwrap().value,
        7
    );
}

#[tokio::test]
async fn a_map_outside_a_flow_numbers_its_runs() {
    let runs = counter();
    let square = counted("square", &runs, |x: u64, _| Ok(x * x));
    let results = square.map([1, 2, 3]).await;
    let indices: Vec<u64> = results.iter().map(|r| r.info().map_index()).collect();
    assert_eq!(indices, [0, 1, 2]);
    let values: Vec<u64> = results.iter().map(|r| *r.value().unwrap()).collect();
    assert_eq!(values, [1, 4, 9]);
}

/// A call's future carries room for its largest step, and a user's `join_all` holds one
/// per call: the rare and miss-only steps (a miss's writes, the lease, the run's
/// history, a resumed record) are boxed, so that a call's future is about the size of
/// its lookup. It was 3,152 bytes for this task before.
#[test]
fn a_task_call_future_carries_no_room_for_its_rare_steps() {
    let task = Task::infallible("add_one", |x: u64| async move { x + 1 })
        .cache_policy(cairn::cache::INPUTS);
    let call = std::mem::size_of_val(&task.call(1));
    let run = std::mem::size_of_val(&task.run(1));
    assert!(call <= 2_048, "a call's future takes {call} bytes");
    assert!(run <= 2_048, "a run's future takes {run} bytes");
}

#[tokio::test]
async fn with_checkpointing_the_flow_run_leaves_a_summary() {
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    let fetch = Task::infallible("fetch", |(): ()| async { vec![1u32, 2, 3] });
    let total = Task::infallible(
        "total",
        |xs: Vec<u32>| async move { xs.iter().sum::<u32>() },
    );
    let (flow, _home) = flow("summarised");
    let run = flow
        .result_store(store.clone())
        .checkpointing(true)
        .run((), |_| async {
            let xs = fetch.call(()).await?;
            total.call(xs).await
        })
        .await;
    assert_eq!(run.value(), Some(&6));

    let location = format!("runs/v1/summarised/{}/flow.json", run.id());
    let summary: serde_json::Value = store.read(&location).await.unwrap();
    assert_eq!(summary["flow_name"], "summarised", "{summary}");
    assert_eq!(summary["flow_run_id"], run.id(), "{summary}");
    assert_eq!(summary["flow_run_name"], run.name(), "{summary}");
    assert_eq!(summary["state"], "Completed()", "{summary}");
    let listed = summary["task_runs"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{summary}");
    for (entry, info) in listed.iter().zip(run.task_runs()) {
        assert_eq!(entry["name"], info.name(), "{summary}");
        assert_eq!(entry["task"], info.task(), "{summary}");
        assert_eq!(entry["state"], "Completed()", "{summary}");
        let checkpoint = format!("runs/v1/summarised/{}/{}/0", run.id(), info.task());
        assert_eq!(entry["location"], checkpoint.as_str(), "{summary}");
        assert!(store.exists(&checkpoint).await.unwrap());
    }

    // Without checkpointing, no summary.
    let (quiet, _home) = self::flow("summarised");
    let run = quiet
        .result_store(store.clone())
        .run((), |_| async { fetch.call(()).await })
        .await;
    let location = format!("runs/v1/summarised/{}/flow.json", run.id());
    assert!(!store.exists(&location).await.unwrap());
}

// ---------------------------------------------------------------------------------
// Defaults and definition errors a first-time user meets

/// Waits (up to 5 s) for `path` to exist; whether it does.
async fn appears(path: &std::path::Path) -> bool {
    for _ in 0..500 {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    path.exists()
}

/// A cached task on a local store at `dir` without the memory tier (every call after
/// the first reads the store), whose runs read `clock`.
fn store_hits(
    name: &'static str,
    runs: &Arc<AtomicUsize>,
    dir: &std::path::Path,
    clock: &Arc<cairn::ManualClock>,
) -> Task<i64, i64> {
    counted(name, runs, |x: i64, _| Ok(x + 1))
        .inputs(["x"])
        .cache_policy(cairn::cache::INPUTS)
        .memory_tier(false)
        .clock(clock.clone())
        .result_storage(ResultStore::local(dir).unwrap())
}

/// A burst of hits on one record in the store starts one write of its use marker, not
/// one per hit until the first write runs: a hit claims the day's marker before it
/// hands the write to a task. On one thread, the hits below never yield, so without
/// the claim each would start a task of its own. (The hits come two days after the
/// record was written: a fresher record needs no marker, see below.)
#[tokio::test(flavor = "current_thread")]
async fn a_burst_of_store_hits_starts_one_use_marker_write() {
    let dir = tempfile::tempdir().unwrap();
    let runs = counter();
    let clock = Arc::new(cairn::ManualClock::new(Utc::now()));
    let task = store_hits("burst", &runs, dir.path(), &clock);
    assert_eq!(task.call(1).await.unwrap(), 2);
    clock.advance(chrono::TimeDelta::days(2));
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    for _ in 0..50 {
        assert_eq!(task.call(1).await.unwrap(), 2);
    }
    assert_eq!(count(&runs), 1, "every call after the first is a hit");
    assert_eq!(
        metrics.num_alive_tasks() - before,
        1,
        "50 hits on one record started more than one marker write"
    );
    // The one write lands.
    assert!(
        appears(&dir.path().join("used/v1/cache")).await,
        "the use marker was never written"
    );
}

/// A hit within a day of its record's creation writes no use marker: the creation
/// already tells `prune --max-size` when the record was used, to within the day a
/// marker gives. The first hit a day or more after the creation writes one.
#[tokio::test(flavor = "current_thread")]
async fn a_hit_within_a_day_of_the_records_creation_writes_no_use_marker() {
    let dir = tempfile::tempdir().unwrap();
    let runs = counter();
    // A record's creation is the writer's wall clock; the task's clock starts a second
    // after it (a clock behind the creation would mark the record: see below).
    let clock = Arc::new(cairn::ManualClock::new(
        Utc::now() + chrono::TimeDelta::seconds(1),
    ));
    let task = store_hits("fresh", &runs, dir.path(), &clock);
    assert_eq!(task.call(1).await.unwrap(), 2);
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    for hours in [0, 1, 22] {
        clock.advance(chrono::TimeDelta::hours(hours));
        assert_eq!(task.call(1).await.unwrap(), 2);
    }
    assert_eq!(count(&runs), 1, "every call after the first is a hit");
    assert_eq!(
        metrics.num_alive_tasks(),
        before,
        "a hit on a record written 23 hours before started a marker write"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let used = dir.path().join("used");
    assert!(!used.exists(), "a fresh record was marked used");
    // 25 hours after the record was written.
    clock.advance(chrono::TimeDelta::hours(2));
    assert_eq!(task.call(1).await.unwrap(), 2);
    assert_eq!(count(&runs), 1);
    assert!(
        appears(&used.join("v1/cache")).await,
        "the first hit a day after the record's creation wrote no marker"
    );
}

/// A hit whose clock reads earlier than the record's creation (a writer whose clock
/// runs ahead) cannot tell the record's age, and writes the marker.
#[tokio::test(flavor = "current_thread")]
async fn a_hit_before_the_records_creation_time_writes_a_use_marker() {
    let dir = tempfile::tempdir().unwrap();
    let runs = counter();
    // The writer's clock runs an hour ahead of the reader's.
    let now = Utc::now();
    let ahead = Arc::new(cairn::ManualClock::new(now + chrono::TimeDelta::hours(1)));
    let writer = store_hits("ahead", &runs, dir.path(), &ahead);
    assert_eq!(writer.call(1).await.unwrap(), 2);
    let clock = Arc::new(cairn::ManualClock::new(now));
    let reader = store_hits("ahead", &runs, dir.path(), &clock);
    assert_eq!(reader.call(1).await.unwrap(), 2);
    assert_eq!(count(&runs), 1);
    assert!(
        appears(&dir.path().join("used/v1/cache")).await,
        "a record from the reader's future was not marked used"
    );
}

/// With a cache policy and no store named, cache records persist to
/// `$CAIRN_HOME/storage` (as checkpoints do): a second program run (a new task value,
/// no memory tier) is a hit. `ResultStore::memory()` keeps them in the process, and
/// Prefect 3's `persist_result(true)` spells the default policy with persistence.
#[tokio::test]
async fn caches_persist_to_cairn_home_unless_told_otherwise() {
    let home = tempfile::tempdir().unwrap();
    let runs = counter();
    let make = || {
        counted("persisted", &runs, |x: i64, _| Ok(x + 1))
            .inputs(["x"])
            .cache_policy(cairn::cache::INPUTS)
            .memory_tier(false)
    };
    let program = |task: Task<i64, i64>| {
        let flow = Flow::new("persisting").settings(clean_settings(&home));
        async move { flow.run((), |_| async move { task.call(1).await }).await }
    };
    let first = program(make()).await;
    let second = program(make()).await;
    assert_eq!(first.task_runs()[0].state(), &State::Completed);
    assert_eq!(second.task_runs()[0].state(), &State::Cached);
    assert_eq!(count(&runs), 1);
    let record = first.task_runs()[0]
        .cache_record()
        .map(str::to_owned)
        .unwrap();
    assert!(home.path().join("storage").join(&record).is_file());
    let store = first.task_runs()[0]
        .cache_store()
        .map(str::to_owned)
        .unwrap();
    assert!(
        store.starts_with("file://") && store.ends_with("/storage"),
        "{store}"
    );

    // In the process only, explicitly: nothing under CAIRN_HOME.
    let home = tempfile::tempdir().unwrap();
    let in_memory = make().result_storage(ResultStore::memory());
    let flow = Flow::new("in-memory").settings(clean_settings(&home));
    let run = flow.run((), |_| async { in_memory.call(5).await }).await;
    assert_eq!(run.value(), Some(&6));
    assert!(!home.path().join("storage").exists());

    // persist_result(true): DEFAULT (inputs, source, run id) with persistence.
    let home = tempfile::tempdir().unwrap();
    let persisted = counted("persist_result", &runs, |x: i64, _| Ok(x * 2))
        .inputs(["x"])
        .task_source("x * 2")
        .persist_result(true);
    let flow = Flow::new("p3").settings(clean_settings(&home));
    let run = flow
        .run((), |_| async {
            Ok(persisted.call(2).await? + persisted.call(2).await?)
        })
        .await;
    assert_eq!(run.value(), Some(&8));
    let states: Vec<State> = run.task_runs().iter().map(|r| r.state().clone()).collect();
    assert_eq!(states, [State::Completed, State::Cached]);
    assert!(home.path().join("storage/cache/v1").is_dir());
}

/// `INPUTS - "debg"` on a task without a `debg` input, and `TASK_SOURCE` on a builder
/// task without a source, are reported when the task is defined (`Task::check`) and
/// fail every run before the body.
#[tokio::test]
async fn policy_typos_are_reported_when_the_task_is_defined() {
    let runs = counter();
    let add = counted("add", &runs, |(x, _): (i64, bool), _| Ok(x + 1)).inputs(["x", "debug"]);
    add.clone()
        .cache_policy(cairn::cache::INPUTS - "debug")
        .check()
        .unwrap();

    let typo = add.clone().cache_policy(cairn::cache::INPUTS - "debg");
    let error = typo.check().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    let text = error.to_string();
    assert!(
        text.contains("'debg'") && text.contains("x, debug"),
        "{text}"
    );
    assert_eq!(text.matches("invalid configuration").count(), 1, "{text}");
    let run = typo.run((1, true)).await;
    assert_eq!(
        run.error().map(TaskError::kind),
        Some(TaskErrorKind::Definition)
    );

    let no_source = add.clone().cache_policy(cairn::cache::TASK_SOURCE);
    assert!(no_source
        .check()
        .unwrap_err()
        .to_string()
        .contains("TASK_SOURCE"));
    let run = no_source.run((1, true)).await;
    assert_eq!(
        run.error().map(TaskError::kind),
        Some(TaskErrorKind::Definition)
    );
    // Giving the source later in the chain fixes it.
    no_source.task_source("x + 1").check().unwrap();

    // A bad template: the builder chain goes on; the task reports it.
    let bad = add.target("{nope}/x.json").retries(2);
    assert!(bad
        .check()
        .unwrap_err()
        .to_string()
        .contains("unknown key 'nope'"));
    assert_eq!(
        bad.run((1, true)).await.error().map(TaskError::kind),
        Some(TaskErrorKind::Definition)
    );
    assert_eq!(count(&runs), 0);
}

/// Errors say their cause once: a template error names the task and the template
/// once, an over-long name is shortened, control characters are escaped.
#[tokio::test]
async fn errors_say_the_cause_once_shortened_and_escaped() {
    let long = "t".repeat(5000);
    let error = Task::infallible(long.as_str(), |x: u8| async move { x })
        .inputs(["x"])
        .target("{x}/{missing}.json")
        .check()
        .unwrap_err()
        .to_string();
    assert_eq!(error.matches("invalid configuration").count(), 1, "{error}");
    assert_eq!(error.matches("{x}/{missing}.json").count(), 1, "{error}");
    assert!(error.len() < 600, "{} characters: {error}", error.len());

    let home = tempfile::tempdir().unwrap();
    let task = Task::infallible("echo", |name: String| async move { name })
        .inputs(["name"])
        .result(ResultStore::local(home.path()).unwrap())
        .target("{name}.txt");
    let run = task.run("a\nb\u{1b}[31m".into()).await;
    let error = run.error().unwrap().to_string();
    assert!(
        !error.contains('\n') && !error.contains('\u{1b}'),
        "{error:?}"
    );
    assert!(error.contains("a\\nb\\u{1b}[31m"), "{error}");

    let run = task.run("n".repeat(5000)).await;
    let error = run.error().unwrap().to_string();
    assert!(error.contains("(5004 characters)"), "{error}");
    assert!(error.len() < 800, "{} characters: {error}", error.len());

    // User-facing type names.
    std::fs::write(home.path().join("not-json.txt"), [0xff, 0xfe]).unwrap();
    let run = task.run("not-json".into()).await;
    let error = run.error().unwrap().to_string();
    assert!(error.contains("cannot be read as String"), "{error}");
    assert!(!error.contains("alloc::"), "{error}");
}

/// A local store whose directory cannot be created says so, with the directory and
/// the operating system's reason.
#[test]
fn an_uncreatable_local_root_is_named_with_the_reason() {
    let error = ResultStore::local("/proc/cairn-store/results").unwrap_err();
    let text = error.to_string();
    assert_eq!(error.kind(), ErrorKind::Config, "{text}");
    assert!(
        text.contains("cannot create the local store's directory '/proc/cairn-store/results'"),
        "{text}"
    );
    assert!(!text.contains("not found"), "{text}");
}

/// A leading `~` in a local store's path — in code and in a plain-path URL — is the
/// home directory, never a directory named `~`.
#[tokio::test]
async fn a_tilde_in_a_local_store_path_is_the_home_directory() {
    let home = std::path::PathBuf::from(std::env::var("HOME").unwrap());
    let name = format!(".cairn-test-{:016x}", rand::random::<u64>());
    let cwd_tilde = std::path::Path::new("~").exists();
    let store = ResultStore::local(format!("~/{name}")).unwrap();
    store.write_at("x.json", &1u8).await.unwrap();
    assert!(home.join(&name).join("x.json").is_file());
    let by_url = ResultStore::from_url(&format!("~/{name}")).await.unwrap();
    assert_eq!(by_url.read::<u8>("x.json").await.unwrap(), 1);
    let by_file_url = ResultStore::from_url(&format!("file://~/{name}"))
        .await
        .unwrap();
    assert_eq!(by_file_url.read::<u8>("x.json").await.unwrap(), 1);
    assert_eq!(
        std::path::Path::new("~").exists(),
        cwd_tilde,
        "no './~' made"
    );
    std::fs::remove_dir_all(home.join(&name)).unwrap();
}

/// A flow run keeps the record of every task run, whether the caller took only the
/// value (`call`) or the whole run (`run`): in order, with their map indexes and states,
/// across many growths of the list that holds them; a `run`'s own record is the one
/// the flow run keeps.
#[tokio::test]
async fn a_flow_run_keeps_every_task_runs_record_in_order() {
    let task = Task::infallible("double", |x: u64| async move { x * 2 })
        .cache_policy(cairn::cache::INPUTS)
        .result_storage(ResultStore::memory());
    let runs = Arc::new(Mutex::new(Vec::new()));
    let kept = runs.clone();
    let run = Flow::new("many")
        .run((), move |_| async move {
            for i in 0..2_500u64 {
                if i % 7 == 0 {
                    let run = task.run(i % 1_000).await;
                    assert_eq!(run.value(), Some(&(2 * (i % 1_000))));
                    kept.lock().unwrap().push((i, run.info().clone()));
                } else {
                    assert_eq!(task.call(i % 1_000).await?, 2 * (i % 1_000));
                }
            }
            Ok::<_, cairn::TaskError>(())
        })
        .await;
    assert_eq!(run.state(), &State::Completed);
    let records = run.task_runs();
    assert_eq!(records.len(), 2_500);
    for (i, record) in records.iter().enumerate() {
        let i = i as u64;
        assert_eq!(record.map_index(), i);
        let expected = if i < 1_000 {
            State::Completed
        } else {
            State::Cached
        };
        assert_eq!(record.state(), &expected, "run {i}");
        assert_eq!(record.states().len(), 3, "run {i}");
    }
    for (i, info) in runs.lock().unwrap().iter() {
        assert_eq!(&records[*i as usize], info, "run {i}");
        assert_eq!(records[*i as usize].name(), info.name());
    }
}

/// Concurrent calls inside a flow run, on several threads, half of them served by the
/// memory tier and half misses: the flow run keeps every run's record, and each task's
/// map indexes are exactly 0..n, none given twice or skipped, whichever way a call went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_in_a_flow_take_every_map_index_once() {
    let make = |name: &str| {
        Task::infallible(name, |x: u64| async move {
            tokio::task::yield_now().await;
            x + 1
        })
        .cache_policy(cairn::cache::INPUTS)
        .result_storage(ResultStore::memory())
    };
    let (task, other) = (make("half_held"), make("other"));
    let run = Flow::new("concurrent")
        .run((), move |_| async move {
            // Held in the tier: the even inputs.
            for x in (0..200u64).step_by(2) {
                task.call(x).await?;
            }
            let calls = (0..400u64).map(|i| {
                let (task, other) = (task.clone(), other.clone());
                tokio::spawn(Flow::scoped(async move {
                    let value = if i % 3 == 0 {
                        other.call(i % 200).await?
                    } else {
                        task.call(i % 200).await?
                    };
                    assert_eq!(value, i % 200 + 1);
                    Ok::<_, cairn::TaskError>(())
                }))
            });
            for call in futures::future::join_all(calls).await {
                call.unwrap()?;
            }
            Ok::<_, cairn::TaskError>(())
        })
        .await;
    assert_eq!(run.state(), &State::Completed);
    for (name, n) in [("half_held", 100 + 266), ("other", 134)] {
        let mut indices: Vec<u64> = run.runs_of(name).map(|r| r.map_index()).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..n as u64).collect::<Vec<_>>(), "{name}");
    }
    let cached = run
        .runs_of("half_held")
        .filter(|r| r.state() == &State::Cached)
        .count();
    assert!(cached >= 133, "{cached} of the calls were hits");
}

/// A cache record's `created` and `expires` are both read off the run's clock: a task
/// on a clock set to 2024 writes a record made in 2024 that expires a day later, with
/// the memory tier on and off.
#[tokio::test]
async fn a_records_creation_date_is_the_runs_clock() {
    use chrono::TimeZone;
    let at = Utc.with_ymd_and_hms(2024, 1, 1, 12, 30, 15).unwrap()
        + chrono::Duration::nanoseconds(123_456_789);
    for tier in [true, false] {
        let store = ResultStore::memory();
        let clock = Arc::new(cairn::ManualClock::new(at));
        let task = Task::infallible("dated", |x: u64| async move { x * 2 })
            .inputs(["x"])
            .cache_policy(cairn::cache::INPUTS)
            .cache_expiration(Duration::from_secs(86_400))
            .result_storage(store.clone())
            .memory_tier(tier)
            .clock(clock);
        let run = task.run(21).await;
        assert_eq!(run.value(), Some(&42));
        let location = run.info().cache_record().unwrap().to_owned();
        let record = store.read_record::<u64>(&location).await.unwrap();
        assert_eq!(record.header.created, at, "tier {tier}");
        assert_eq!(record.header.expires, Some(at + chrono::Duration::days(1)));
    }
}

/// A hit the memory tier serves at once, before the run's asynchronous steps, is the
/// same run as one those steps serve: its record in the flow run (states, map index,
/// key, store and record), its key derived once per run (a key function is called
/// once on a miss, on a hit, and on a held entry past its trust bound, which the store
/// confirms), and in a flow run that persists, its `running` and `cached` history.
#[tokio::test]
async fn a_memory_tier_hit_is_recorded_like_any_hit() {
    use cairn::backend::BackendExt;
    use cairn::cache::{CachePolicy, INPUTS};
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    let clock = Arc::new(cairn::ManualClock::new(a_friday()));
    let keyed = counter();
    let key_calls = keyed.clone();
    let runs = counter();
    let task = counted("tier_hit", &runs, |x: u64, _| Ok(x + 1))
        .inputs(["x"])
        .cache_policy(
            INPUTS
                + CachePolicy::key_fn(move |_| {
                    key_calls.fetch_add(1, Ordering::SeqCst);
                    Some("region-a".into())
                }),
        )
        .result_storage(store.clone())
        .clock(clock.clone());

    let (plain, _home) = flow("tier_hit");
    let run = plain
        .clock(clock.clone())
        .run((), |_| async {
            let missed = task.run(1).await;
            let held = task.run(1).await;
            assert_eq!(count(&keyed), 2, "one key per run, the miss's too");
            clock.advance(chrono::Duration::seconds(2));
            let confirmed = task.run(1).await;
            Ok::<_, TaskError>([missed, held, confirmed].map(|r| r.info().clone()))
        })
        .await;
    let infos = run.value().unwrap();
    assert_eq!(count(&runs), 1);
    assert_eq!(count(&keyed), 3);
    let states: Vec<&State> = infos.iter().map(|i| i.state()).collect();
    assert_eq!(states, [&State::Completed, &State::Cached, &State::Cached]);
    for (i, info) in infos.iter().enumerate() {
        assert_eq!(info.map_index(), i as u64);
        assert_eq!(info.states().len(), 3);
        assert_eq!(info.cache_key(), infos[0].cache_key());
        assert_eq!(info.cache_store(), Some(store.url()));
        assert_eq!(info.cache_record(), infos[0].cache_record());
    }
    assert!(infos[0].cache_key().is_some());
    assert_eq!(run.task_runs(), &infos[..]);

    // The entry is held and fresh; a flow run that persists still writes the hit's
    // history, so it is not served before the run's steps.
    let (persisting, _home) = flow("tier_history");
    let run = persisting
        .result_store(store.clone())
        .checkpointing(true)
        .clock(clock.clone())
        .run((), |_| async { task.call(1).await })
        .await;
    assert_eq!(run.value(), Some(&2));
    assert_eq!(run.task_runs()[0].state(), &State::Cached);
    assert_eq!(count(&runs), 1);
    let prefix = format!("runs/v1/tier_history/{}/states/", run.id());
    let mut history: Vec<String> = store
        .backend()
        .list_all(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.as_str().rsplit('-').next().unwrap().to_owned())
        .collect();
    history.sort();
    assert_eq!(history, ["cached", "running"]);
}

/// A call outside a flow that the memory tier serves (no clock or settings of the
/// task's own) is a run of its own like any other: `Cached`, its own id, map index 0,
/// the key, store and record of the run that wrote the entry. Dropped from the tier, the
/// entry is read from the store again; with a trust bound of 0 a record deleted from
/// the store is never served; under a policy with the run id, no call hits another's.
#[tokio::test]
async fn a_memory_tier_hit_outside_a_flow_is_a_run_of_its_own() {
    use cairn::cache::{MemoryTier, INPUTS, RUN_ID};
    let data = tempfile::tempdir().unwrap();
    let store = ResultStore::local(data.path()).unwrap();
    let runs = counter();
    let task = counted("tier_outside", &runs, |x: u64, _| Ok(x + 1))
        .inputs(["x"])
        .cache_policy(INPUTS)
        .result_storage(store.clone());

    let first = task.run(1).await;
    let held = [task.run(1).await, task.run(1).await];
    assert_eq!(first.state(), &State::Completed);
    assert_eq!(count(&runs), 1);
    for run in &held {
        let info = run.info();
        assert_eq!((run.state(), run.value()), (&State::Cached, Some(&2)));
        assert_eq!(info.map_index(), 0);
        assert_eq!(info.states().len(), 3);
        assert_eq!(info.task(), "tier_outside");
        assert_eq!(info.cache_key(), first.info().cache_key());
        assert_eq!(info.cache_store(), Some(store.url()));
        assert_eq!(info.cache_record(), first.info().cache_record());
        assert_ne!(info.id(), first.info().id());
    }
    assert_ne!(held[0].info().id(), held[1].info().id());
    assert_eq!(task.call(1).await.unwrap(), 2);

    // Dropped from the tier: the store's record answers, and the tier holds it again.
    assert!(MemoryTier::global().remove_task_run(held[0].info()));
    assert_eq!(task.run(1).await.state(), &State::Cached);
    assert_eq!(count(&runs), 1);
    // Dropped from both: the body runs.
    assert!(MemoryTier::global().remove_task_run(held[0].info()));
    store
        .delete(first.info().cache_record().unwrap())
        .await
        .unwrap();
    assert_eq!(task.run(1).await.state(), &State::Completed);
    assert_eq!(count(&runs), 2);

    // Checked on every hit: a record deleted from the store is not served.
    let checked = task.clone().memory_tier_revalidate_after(Duration::ZERO);
    assert_eq!(checked.run(1).await.state(), &State::Cached);
    store
        .delete(first.info().cache_record().unwrap())
        .await
        .unwrap();
    assert_eq!(checked.run(1).await.state(), &State::Completed);
    assert_eq!(count(&runs), 3);

    // Each call outside a flow is a run of its own: under the run id, none hits.
    let per_run = task.clone().cache_policy(INPUTS + RUN_ID);
    assert_eq!(per_run.run(5).await.state(), &State::Completed);
    assert_eq!(per_run.run(5).await.state(), &State::Completed);
    assert_eq!(count(&runs), 5);
}

/// A clock whose cheap reading says it may be `behind` microseconds late (while being
/// exact, the worst case for an entry: the time may be `behind` later than read).
#[derive(Debug)]
struct LaggingClock {
    now: Mutex<DateTime<Utc>>,
    behind: i64,
}

impl LaggingClock {
    fn advance(&self, by: chrono::Duration) {
        *self.now.lock().unwrap() += by;
    }
}

impl cairn::Clock for LaggingClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap()
    }

    fn reading(&self) -> cairn::Reading {
        cairn::Reading {
            micros: self.now_micros(),
            behind: self.behind,
        }
    }
}

/// Runs `task` on `x` (a miss that writes its record), moves `clock` on by `ms`, deletes
/// the record from `store` and runs `task` on `x` again: how many more times the body
/// ran (0: the memory tier served the value; 1: the store was asked).
async fn ran_again_after(
    task: &Task<u64, u64>,
    x: u64,
    ms: i64,
    clock: &LaggingClock,
    store: &ResultStore,
    runs: &Arc<AtomicUsize>,
) -> usize {
    let first = task.run(x).await;
    assert_eq!(first.state(), &State::Completed);
    clock.advance(chrono::Duration::milliseconds(ms));
    store
        .delete(first.info().cache_record().unwrap())
        .await
        .unwrap();
    let before = count(runs);
    assert_eq!(task.run(x).await.value(), Some(&(x + 1)));
    count(runs) - before
}

/// The memory tier counts a clock reading's lag against its entry: with a reading that
/// may be 5 ms late, an entry 3 ms before its expiry, or 3 ms inside its trust bound,
/// is not served from the tier but goes to the store (where its record was deleted,
/// so the body runs again); with an exact reading the same entry is served.
#[tokio::test]
async fn a_lagging_clock_reading_counts_against_the_tier_entry() {
    use cairn::cache::INPUTS;
    for behind in [0, 5_000] {
        let data = tempfile::tempdir().unwrap();
        let store = ResultStore::local(data.path()).unwrap();
        let runs = counter();
        let clock = Arc::new(LaggingClock {
            now: Mutex::new(a_friday()),
            behind,
        });
        let task = counted(&format!("tier_lag_{behind}"), &runs, |x: u64, _| Ok(x + 1))
            .inputs(["x"])
            .cache_policy(INPUTS)
            .result_storage(store.clone())
            .clock(clock.clone());
        let expected = usize::from(behind > 0);

        let expiring = task
            .clone()
            .cache_expiration(Duration::from_secs(10))
            .memory_tier_revalidate_after(Duration::from_secs(3600));
        let ran = ran_again_after(&expiring, 1, 10_000 - 3, &clock, &store, &runs).await;
        assert_eq!(ran, expected, "behind {behind} µs, 3 ms before expiry");

        let trusted = task
            .clone()
            .memory_tier_revalidate_after(Duration::from_secs(1));
        let ran = ran_again_after(&trusted, 7, 1_000 - 3, &clock, &store, &runs).await;
        assert_eq!(
            ran, expected,
            "behind {behind} µs, 3 ms inside the trust bound"
        );
    }
}
