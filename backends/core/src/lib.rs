//! The raw object I/O layer of cairn: the [`Backend`] trait that the local, S3, GCS and
//! in-memory stores implement, its one [`Error`] type, validated [`Key`]s, write
//! payloads and read results, declared [`Capabilities`] and the [`RetryPolicy`] for
//! transient failures.
//!
//! Users normally reach these through the `cairn` crate, which re-exports them.
#![warn(missing_docs)]

mod backend;
mod capabilities;
mod error;
mod key;
mod payload;
mod retry;

pub use backend::{Backend, BackendExt, DynBackend, StagedObject};
pub use capabilities::Capabilities;
pub use error::{Error, ErrorKind, Result, Source};
pub use key::{validate_prefix, Key, MAX_KEY_LEN};
pub use payload::{
    resolve_range, GetRange, GetResult, ObjectMeta, PutMode, PutOptions, PutPayload, PutResult,
};
pub use retry::{is_transient_status, RetryPolicy};

/// Whether `name` is a staged (not yet published) file name of the local backend; such
/// names are never valid object keys of any backend, so every backend skips them.
pub fn is_staged_name(name: &str) -> bool {
    name.starts_with(".cairn-staged.")
}
