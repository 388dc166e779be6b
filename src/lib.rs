//! # cairn
//!
//! A results layer for task pipelines on object storage. cairn persists task outputs
//! (checkpoints), finds them again by a templated target path or a cache key, and
//! reuses them instead of recomputing — with the same behaviour on the local disk, S3
//! and GCS.
//!
//! This crate is organised in layers, each calling only the ones below it:
//!
//! - [`Task`], [`Flow`], [`State`]: the runner. A task is an async function with a
//!   name and options (result store, checkpoint, target, serializer, retries, cache
//!   policy); calling it inside a flow makes it part of the flow run. One task run
//!   checks its target, then its cache, runs the body (with retries), and publishes
//!   its target, checkpoint and cache record.
//! - [`cache`]: cache policies ([`cache::INPUTS`], [`cache::TASK_SOURCE`],
//!   [`cache::DEFAULT`], ...), Prefect 1's validators, Flyte's [`cache::Cache`], and
//!   the process-wide [`cache::MemoryTier`].
//! - [`ResultStore`]: typed values in a store, as plain **targets** other tools can
//!   read, or as self-describing **records** whose length and BLAKE3 digest are
//!   checked on every read ([`record`]).
//! - [`Serializer`]: JSON, MessagePack, raw bytes or text, picked from the location's
//!   extension, optionally zstd-compressed.
//! - [`Template`] and [`Context`]: locations such as `{flow_name}/{task_name}.json`,
//!   validated so that no value can make a location leave the store.
//! - [`backend`]: the [`Backend`](backend::Backend) trait — raw, atomic object I/O
//!   with `Create` and `IfMatch` preconditions — and its implementations: memory,
//!   local disk, S3 (feature `s3`), GCS (feature `gcs`), Azure Blob Storage (feature
//!   `azure`) and any `object_store`.
//!
//! ## A first store
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use cairn::{record::RecordInfo, PutMode, ResultStore};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = ResultStore::from_url(&format!("file://{}", dir.path().display())).await?;
//!
//! // A target: plain bytes at exactly this path, readable by any tool.
//! store.write_at("reports/monday.csv", &"day,total\nmon,3\n".to_string()).await?;
//! assert_eq!(
//!     std::fs::read_to_string(dir.path().join("reports/monday.csv")).unwrap(),
//!     "day,total\nmon,3\n"
//! );
//!
//! // A record: verified on every read; `Create` publishes only if absent.
//! store.write_record("cache/v1/sum", &42u64, RecordInfo::default(), PutMode::Create).await?;
//! let record = store.read_record::<u64>("cache/v1/sum").await?;
//! assert_eq!(record.value, 42);
//! # Ok::<(), cairn::Error>(()) }).unwrap();
//! ```
//!
//! ## Tasks, two ways
//!
//! With the attribute, calling the function runs it as a task — inside a flow as part
//! of the flow run, outside one as a run of its own. The macro records the input
//! names and types, the output type and a digest of the body (for
//! [`cache::TASK_SOURCE`]), and checks template keys at compile time:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use cairn::{cache::INPUTS, Flow, ResultStore, State};
//!
//! #[cairn::task(cache_policy = INPUTS)]
//! async fn add_one(x: i64) -> i64 {
//!     x + 1
//! }
//!
//! // Cache records persist to `$CAIRN_HOME/storage` unless a store is named; this
//! // example keeps them in the process.
//! let run = Flow::new("my-flow")
//!     .result_store(ResultStore::memory())
//!     .run((), |_| async {
//!         let a = add_one(1).await?; // Completed
//!         let b = add_one(1).await?; // Cached: the body does not run
//!         let c = add_one(2).await?; // Completed
//!         Ok((a, b, c))
//!     })
//!     .await;
//! assert_eq!(run.value(), Some(&(2, 2, 3)));
//! let states: Vec<_> = run.task_runs().iter().map(|r| r.state().to_string()).collect();
//! assert_eq!(states, ["Completed()", "Cached(type=COMPLETED)", "Completed()"]);
//! assert_eq!(add_one_task().signature_info().unwrap().inputs, [("x".to_string(), "i64".to_string())]);
//! # });
//! ```
//!
//! A cache is an optimization: a cache store that fails is a logged miss or warning,
//! and the task returns its value. The `strict_cache` flag
//! ([`Task::strict_cache`]) makes such a failure fail the task run instead:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use cairn::{cache::INPUTS, ResultStore};
//!
//! // A store whose `cache/` is a file: no cache record can be read or written.
//! static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
//! fn broken() -> ResultStore {
//!     let dir = DIR.get_or_init(|| {
//!         let dir = tempfile::tempdir().unwrap();
//!         std::fs::write(dir.path().join("cache"), "not a directory").unwrap();
//!         dir
//!     });
//!     ResultStore::local(dir.path()).unwrap()
//! }
//!
//! #[cairn::task(cache_policy = INPUTS, result_storage = broken(), strict_cache)]
//! async fn triple(x: u64) -> u64 {
//!     3 * x
//! }
//!
//! let err = triple(2).await.unwrap_err();
//! assert!(err.to_string().contains("cache record"), "{err}");
//! # std::fs::remove_dir_all(DIR.get().unwrap().path()).unwrap(); // statics are never dropped
//! # });
//! ```
//!
//! With the builder, the same task is a value:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use cairn::{ResultStore, State, Task};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let report = Task::new("report", |day: String| async move {
//!         Ok::<_, std::io::Error>(format!("sales for {day}\n"))
//!     })
//!     .inputs(["day"])
//!     .result(ResultStore::local(dir.path())?)
//!     .target("{day}/{task_name}.txt")   // checked now: `day` is an input
//!     .retries(2)
//!     .retry_delay(Duration::from_millis(100));
//!
//! assert_eq!(report.run("monday".into()).await.state(), &State::Completed);
//! assert_eq!(std::fs::read_to_string(dir.path().join("monday/report.txt")).unwrap(), "sales for monday\n");
//! assert_eq!(report.run("monday".into()).await.state(), &State::Cached);
//! assert!(Task::new("bad", |_: ()| async { Ok::<u8, std::io::Error>(1) })
//!     .target("{dat:%A}.txt")
//!     .check()
//!     .is_err()); // an unknown key, named with the available ones (runs fail with it too)
//! # Ok::<(), cairn::Error>(()) }).unwrap();
//! ```
//!
//! ## Checkpointing
//!
//! Nothing is persisted unless asked. A task checkpoints when the most specific of
//! these says so: the task's `checkpoint`, its flow's `checkpointing`,
//! `CAIRN__FLOWS__CHECKPOINTING`, `[flows] checkpointing` in `$CAIRN_HOME/config.toml`
//! (see [`Settings`]). Checkpoints go to `runs/v1/{flow_name}/{flow_run_id}/{task_name}/{map_index}`
//! as verified records, or to the task's `location` template as plain bytes. A target
//! is always published: it is where the task's output lives.
//! ## Where things are
//!
//! | layer | folder | what |
//! |---|---|---|
//! | runner | `src/runner/` | [`Task`], [`Flow`], [`State`], [`Settings`], one task run's steps |
//! | cache | `src/cache/` | cache policies, Prefect 1 and Flyte spellings, the memory tier, and key hashing ([`hashing`]) |
//! | template | `src/template/` | [`Template`] and [`Context`]: `{date:%A}/{task_name}.txt` |
//! | store | `src/store/` | [`ResultStore`], the record format ([`record`]), [`Serializer`] |
//! | backend | `src/backend/` | the [`Backend`](backend::Backend) trait, memory and `object_store` backends; local disk, S3 and GCS in `backends/` |
//!
//! Each layer calls only the ones below it.
#![warn(missing_docs)]

extern crate self as cairn;

pub mod backend;
pub mod cache;
pub mod maintenance;
mod runner;
mod store;
mod template;

pub use backend::{expand_home, Error, ErrorKind, Key, PutMode, Result};
pub use cache::hashing;
pub use store::record;
pub use store::{Compression, Format, Record, ResultStore, Serializer};
pub use template::context::{Context, Value};
pub use template::Template;

pub use cairn_macros::task;
pub use runner::{
    BoxError, Clock, Flow, FlowRun, ManualClock, Reading, Settings, Signature, State, StateType,
    SystemClock, Task, TaskError, TaskErrorKind, TaskInput, TaskOutput, TaskRun, TaskRunInfo,
};

#[doc(hidden)]
pub use runner::task::private as __private;
