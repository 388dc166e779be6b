//! The raw object I/O layer of cairn: the [`Backend`] trait that the local, S3, GCS and
//! in-memory stores implement, its one [`Error`] type, validated [`Key`]s, write
//! payloads and read results, declared [`Capabilities`] and the [`RetryPolicy`] for
//! transient failures.
//!
//! Users normally reach these through the `cairn` crate, which re-exports them.
#![warn(missing_docs)]

mod applied;
mod backend;
mod capabilities;
mod error;
mod key;
mod payload;
mod resume;
mod retry;
mod timeouts;

pub use applied::recognize_applied;
pub use backend::{
    check_head, Backend, BackendExt, CleanUp, DynBackend, HeadMaker, Inspector, MakeInspector,
    StagedObject,
};
pub use capabilities::Capabilities;
pub use error::{shorten, ConnectionRefused, Error, ErrorKind, Result, Source};
pub use key::{validate_prefix, Key, MAX_KEY_LEN};
pub use payload::{
    resolve_range, GetRange, GetResult, ObjectMeta, PutMode, PutOptions, PutPayload, PutResult,
    ReadWants,
};
pub use resume::{resuming_body, Body, Reopen};
pub use retry::{
    is_transient_status, parse_retry_after, retry_after_of, RetryAfter, RetryPolicy,
    DEFAULT_MAX_ELAPSED,
};
pub use timeouts::{
    parse_duration, split_url_options, Timeouts, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_OPERATION_TIMEOUT, DEFAULT_READ_TIMEOUT, TIMEOUT_OPTIONS,
};

/// Whether `name` is a staged (not yet published) file name of the local backend; such
/// names are never valid object keys of any backend, so every backend skips them.
pub fn is_staged_name(name: &str) -> bool {
    name.starts_with(".cairn-staged.")
}

/// `path` with a leading `~` (alone or followed by `/`) replaced by the home directory
/// (`$HOME`), as a shell would; any other path as it is. Local stores, plain-path store
/// URLs and settings go through it, so `ResultStore::local("~/.cairn")` is under the
/// home directory rather than in a directory named `~`.
///
/// ```
/// let home = std::env::var("HOME").unwrap();
/// assert_eq!(cairn_backend::expand_home("~/.cairn"), std::path::Path::new(&home).join(".cairn"));
/// assert_eq!(cairn_backend::expand_home("data/~x"), std::path::Path::new("data/~x"));
/// assert_eq!(cairn_backend::expand_home("~user/x"), std::path::Path::new("~user/x"));
/// ```
pub fn expand_home(path: impl AsRef<std::path::Path>) -> std::path::PathBuf {
    use std::path::PathBuf;
    let path = path.as_ref();
    let Some(text) = path.to_str() else {
        return path.to_path_buf();
    };
    let rest = match text.strip_prefix('~') {
        Some("") => "",
        Some(rest) if rest.starts_with('/') => rest.trim_start_matches('/'),
        _ => return path.to_path_buf(),
    };
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) if rest.is_empty() => PathBuf::from(home),
        Some(home) => PathBuf::from(home).join(rest),
        None => path.to_path_buf(),
    }
}
