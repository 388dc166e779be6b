//! # cairn
//!
//! A results layer for task pipelines on object storage. cairn persists task outputs
//! (checkpoints), finds them again by a templated target path or a cache key, and
//! reuses them instead of recomputing — with the same behaviour on the local disk, S3
//! and GCS.
//!
//! This crate is organised in layers, each calling only the ones below it:
//!
//! - [`ResultStore`]: typed values in a store, as plain **targets** other tools can
//!   read, or as self-describing **records** whose length and BLAKE3 digest are
//!   checked on every read ([`record`]).
//! - [`Serializer`]: JSON, MessagePack, raw bytes or text, picked from the location's
//!   extension, optionally zstd-compressed.
//! - [`Template`] and [`Context`]: locations such as `{flow_name}/{task_name}.json`,
//!   validated so that no value can make a location leave the store.
//! - [`backend`]: the [`Backend`](backend::Backend) trait — raw, atomic object I/O
//!   with `Create` and `IfMatch` preconditions — and its implementations: memory,
//!   local disk, S3 (feature `s3`), GCS (feature `gcs`) and any `object_store`.
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
#![warn(missing_docs)]

extern crate self as cairn;

pub mod backend;
pub mod cache;
mod clock;
mod context;
mod flow;
pub mod hashing;
mod inputs;
pub mod record;
mod run;
mod serializer;
mod settings;
mod state;
mod store;
mod task;
mod template;

pub use backend::{Error, ErrorKind, Key, PutMode, Result};
pub use context::{Context, Value};
pub use serializer::{Compression, Format, Serializer};
pub use store::{Record, ResultStore};
pub use template::Template;

pub use cairn_macros::task;
pub use clock::{Clock, ManualClock, SystemClock};
pub use flow::{Flow, FlowRun};
pub use settings::Settings;
pub use state::{State, StateType};
pub use task::{
    BoxError, Signature, Task, TaskError, TaskErrorKind, TaskInput, TaskOutput, TaskRun,
    TaskRunInfo,
};

#[doc(hidden)]
pub use task::private as __private;
