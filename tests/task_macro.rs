//! `#[cairn::task]` with the real runner: calls, errors, targets, caching, and what
//! the macro records about the function.

mod scratch;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use cairn::cache::INPUTS;
use cairn::{Flow, ResultStore, State, TaskErrorKind};

/// One store for the tests in this file, under `target/tmp`.
fn store() -> ResultStore {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    ResultStore::local(DIR.get_or_init(|| scratch::dir("task-macro"))).unwrap()
}

#[derive(Debug)]
struct Boom(String);

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "boom: {}", self.0)
    }
}

impl std::error::Error for Boom {}

/// Adds one.
#[cairn::task]
async fn add_one(x: i64) -> i64 {
    x + 1
}

#[cairn::task]
async fn parse_number(text: String) -> Result<i64, std::num::ParseIntError> {
    text.trim().parse()
}

#[cairn::task(name = "exploding")]
async fn explode(reason: String) -> Result<u32, Boom> {
    Err(Boom(reason))
}

static SIDE_EFFECTS: AtomicUsize = AtomicUsize::new(0);

#[cairn::task]
async fn side_effect() {
    SIDE_EFFECTS.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test]
async fn a_task_outside_a_flow_returns_its_value() {
    assert_eq!(add_one(41).await.unwrap(), 42);
    let run = add_one_task().run((1,)).await;
    assert_eq!(run.state(), &State::Completed);
    assert_eq!(run.value(), Some(&2));
    assert_eq!(add_one_task().name(), "add_one");
}

#[tokio::test]
async fn a_fallible_task_returns_ok_and_propagates_its_error() {
    assert_eq!(parse_number(" 17 ".into()).await.unwrap(), 17);

    let error = parse_number("seventeen".into()).await.unwrap_err();
    assert_eq!(error.kind(), TaskErrorKind::Body);
    assert!(
        error.to_string().contains("invalid digit found in string"),
        "{error}"
    );

    let error = explode("the reason".into()).await.unwrap_err();
    assert!(error.to_string().contains("boom: the reason"), "{error}");
    // `name = ...` names the task (and its runs).
    assert_eq!(explode_task().name(), "exploding");
    assert!(
        error.task_run().starts_with("exploding"),
        "{}",
        error.task_run()
    );
    let run = explode_task().run(("again".into(),)).await;
    assert!(
        matches!(run.state(), State::Failed { .. }),
        "{:?}",
        run.state()
    );
}

#[tokio::test]
async fn an_infallible_task_without_a_return_type_runs_its_body() {
    let before = SIDE_EFFECTS.load(Ordering::SeqCst);
    let unit: () = side_effect().await.unwrap();
    assert_eq!(unit, ());
    assert_eq!(SIDE_EFFECTS.load(Ordering::SeqCst), before + 1);
    assert!(side_effect_task().input_names().is_empty());
    assert_eq!(side_effect_task().signature_info().unwrap().output, "( )");
}

static SQUARE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(target = "squares/{task_name}-{x}.json", result = store())]
async fn square(x: u64) -> u64 {
    SQUARE_RUNS.fetch_add(1, Ordering::SeqCst);
    x * x
}

#[tokio::test]
async fn a_task_with_a_target_runs_its_body_once() {
    assert_eq!(square(7).await.unwrap(), 49);
    assert_eq!(SQUARE_RUNS.load(Ordering::SeqCst), 1);

    // The target exists now: the body does not run again.
    assert_eq!(square(7).await.unwrap(), 49);
    assert_eq!(SQUARE_RUNS.load(Ordering::SeqCst), 1);
    let run = square_task().run((7,)).await;
    assert_eq!(run.state(), &State::Cached);
    assert_eq!(run.value(), Some(&49));
    assert_eq!(SQUARE_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(run.info().location(), Some("squares/square-7.json"));
    assert_eq!(
        store().read::<u64>("squares/square-7.json").await.unwrap(),
        49
    );

    // Another input is another target.
    assert_eq!(square(8).await.unwrap(), 64);
    assert_eq!(SQUARE_RUNS.load(Ordering::SeqCst), 2);
}

static LOOKUP_RUNS: AtomicUsize = AtomicUsize::new(0);

// Records in this process only (an explicit choice: caches persist by default), so
// that every run of the test starts empty.
#[cairn::task(cache_policy = INPUTS - "debug", retries = 1, result_storage = cairn::ResultStore::memory())]
async fn lookup(key: String, debug: bool) -> Result<usize, Boom> {
    LOOKUP_RUNS.fetch_add(1, Ordering::SeqCst);
    if debug {
        eprintln!("looking up {key}");
    }
    Ok(key.len())
}

#[tokio::test]
async fn other_options_are_forwarded_to_the_builder() {
    assert_eq!(lookup("abc".into(), true).await.unwrap(), 3);
    assert_eq!(LOOKUP_RUNS.load(Ordering::SeqCst), 1);
    // `debug` is not part of the cache key: a hit.
    let run = lookup_task().run(("abc".into(), false)).await;
    assert_eq!(run.state(), &State::Cached);
    assert_eq!(LOOKUP_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(lookup("abcd".into(), false).await.unwrap(), 4);
    assert_eq!(LOOKUP_RUNS.load(Ordering::SeqCst), 2);
}

#[cairn::task]
#[allow(unused_mut)]
async fn describe(
    city: String,
    mut days: u32,
    r#type: Vec<String>,
) -> Result<Option<String>, Boom> {
    days += 0;
    Ok(r#type.first().map(|t| format!("{city}/{days}/{t}")))
}

#[tokio::test]
async fn input_names_signature_and_output_type_are_recorded() {
    let task = describe_task();
    assert_eq!(task.input_names(), ["city", "days", "type"]);
    let signature = task.signature_info().expect("a signature");
    assert_eq!(
        signature.inputs,
        [
            ("city".to_string(), "String".to_string()),
            ("days".to_string(), "u32".to_string()),
            ("type".to_string(), "Vec < String >".to_string()),
        ]
    );
    assert_eq!(signature.output, "Option < String >");
    assert_eq!(
        describe("Oslo".into(), 3, vec!["rain".into()])
            .await
            .unwrap(),
        Some("Oslo/3/rain".to_string())
    );

    let signature = parse_number_task().signature_info().unwrap();
    assert_eq!(
        signature.inputs,
        [("text".to_string(), "String".to_string())]
    );
    assert_eq!(signature.output, "i64");
}

#[cairn::task]
async fn tidy(x: i64) -> i64 {
    let y = x * 2;
    y + 1
}

#[cairn::task]
async fn messy(x: i64) -> i64 {
    // A comment, and a doc comment on an item:
    /// The factor.
    const _F: () = ();
    let y = x * 2; /* more comment */
    y + 1
}

#[cairn::task]
async fn tidy_again(x: i64) -> i64 {
    const _F: () = ();
    let y = x * 2;
    y + 1
}

#[cairn::task]
async fn changed(x: i64) -> i64 {
    const _F: () = ();
    let y = x * 2;
    y + 2
}

#[tokio::test]
async fn task_source_ignores_layout_and_comments_but_not_code() {
    let messy = messy_task().source().unwrap();
    let tidy_again = tidy_again_task().source().unwrap();
    assert_eq!(messy, tidy_again);
    assert_eq!(messy, "{ const _F : ( ) = ( ) ; let y = x * 2 ; y + 1 }");
    assert_ne!(tidy_again, changed_task().source().unwrap());
    assert_ne!(tidy_task().source().unwrap(), tidy_again);
    // Same code, different function names and signatures: same source.
    assert_eq!(tidy_task().source().unwrap(), "{ let y = x * 2 ; y + 1 }");
    assert_eq!(messy_task().call((1,)).await.unwrap(), 3);
    assert_eq!(changed(1).await.unwrap(), 4);
}

#[tokio::test]
async fn a_task_inside_a_flow_is_a_run_of_the_flow() {
    let flow_run = Flow::new("macro-flow")
        .checkpointing(false)
        .run(20, |n| async move {
            let a = add_one(n).await?;
            add_one(a).await
        })
        .await;
    assert_eq!(flow_run.state(), &State::Completed);
    assert_eq!(flow_run.value(), Some(&22));
    assert_eq!(flow_run.runs_of("add_one").count(), 2);
}

/// A store whose `cache/` is a regular file: every cache record read and write fails.
fn broken_store() -> ResultStore {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = scratch::dir("broken-store");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cache"), b"not a directory").unwrap();
        dir
    });
    ResultStore::local(dir).unwrap()
}

static LENIENT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cairn::task(cache_policy = INPUTS, result_storage = broken_store(), strict_cache)]
async fn strictly_cached(x: u64) -> u64 {
    x * 3
}

#[cairn::task(cache_policy = INPUTS, result_storage = broken_store())]
async fn leniently_cached(x: u64) -> u64 {
    LENIENT_RUNS.fetch_add(1, Ordering::SeqCst);
    x * 3
}

#[tokio::test]
async fn the_strict_cache_flag_fails_a_task_whose_cache_store_fails() {
    // Without the flag, an unreadable cache is a miss and an unwritable one a warning.
    assert_eq!(leniently_cached(2).await.unwrap(), 6);
    assert_eq!(LENIENT_RUNS.load(Ordering::SeqCst), 1);
    // With it, the run fails, naming the cache record it could not read or write.
    let err = strictly_cached(2).await.unwrap_err();
    assert_eq!(err.kind(), TaskErrorKind::Store, "{err}");
    assert!(err.to_string().contains("cache record"), "{err}");
    let run = strictly_cached_task().run((2,)).await;
    assert!(run.state().is_failed(), "{:?}", run.state());
}
