//! The one error type of every cairn backend and of the store built on them.

use std::fmt;

/// A boxed error from a lower layer (an SDK, the file system, a decoder).
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type used throughout cairn.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when cairn reads or writes a store.
///
/// Every variant that concerns an object names the backend (its URL, such as
/// `s3://bucket/prefix`) and the key, so a message alone is enough to find the
/// object in question. Use [`Error::kind`] to branch on the kind of failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{backend}: object '{key}' not found")]
    NotFound {
        /// The backend URL.
        backend: String,
        /// The key that was asked for.
        key: String,
    },

    /// A [`PutMode::Create`](crate::PutMode::Create) write found the key already present.
    #[error("{backend}: object '{key}' already exists")]
    AlreadyExists {
        /// The backend URL.
        backend: String,
        /// The key that was written.
        key: String,
    },

    /// A [`PutMode::IfMatch`](crate::PutMode::IfMatch) write found a different version.
    #[error(
        "{backend}: object '{key}' is not at version '{expected}' any more (precondition failed)"
    )]
    PreconditionFailed {
        /// The backend URL.
        backend: String,
        /// The key that was written.
        key: String,
        /// The version the writer expected.
        expected: String,
    },

    /// The store refused the request: missing or rejected credentials, or no permission.
    #[error("{backend}: permission denied for '{key}': {source}")]
    PermissionDenied {
        /// The backend URL.
        backend: String,
        /// The key concerned (empty for store-wide operations).
        key: String,
        /// What the store or the credential provider said.
        source: Source,
    },

    /// The bucket (or root directory) the backend points at does not exist.
    #[error("{backend}: bucket '{bucket}' does not exist")]
    BucketNotFound {
        /// The backend URL.
        backend: String,
        /// The missing bucket or directory.
        bucket: String,
    },

    /// A transient failure (timeout, throttling, a 5xx answer); it was retried with
    /// backoff before being returned, and a later attempt may succeed.
    #[error("{backend}: '{key}' is unavailable for now: {source}")]
    Unavailable {
        /// The backend URL.
        backend: String,
        /// The key concerned.
        key: String,
        /// The last transient error.
        source: Source,
    },

    /// A key that no backend accepts (absolute, `..`, empty segments, control characters).
    #[error("invalid key '{}': {reason}", shown(key))]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A stored record failed its integrity check (bad magic, wrong length, digest
    /// mismatch). The record is never returned as data.
    #[error("{backend}: record '{key}' is corrupt: {reason}")]
    Corrupt {
        /// The backend URL.
        backend: String,
        /// The record's key.
        key: String,
        /// What the check found.
        reason: String,
    },

    /// A value could not be serialized, or stored bytes could not be deserialized into
    /// the requested type.
    #[error("{backend}: cannot {action} '{key}' as {format}: {source}")]
    Serialization {
        /// The backend URL.
        backend: String,
        /// The object's key.
        key: String,
        /// `serialize` or `deserialize`.
        action: &'static str,
        /// The serializer in use (`json`, `msgpack`, ...).
        format: String,
        /// The serializer's error.
        source: Source,
    },

    /// The backend cannot do what was asked (for example `IfMatch` where it has no
    /// conditional update).
    #[error("{backend}: {operation} is not supported")]
    Unsupported {
        /// The backend URL.
        backend: String,
        /// The operation that was asked for.
        operation: String,
    },

    /// A configuration that cannot work (an unknown URL scheme, a missing bucket name).
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },

    /// Any other failure, with its cause.
    #[error("{backend}: '{key}': {source}")]
    Other {
        /// The backend URL.
        backend: String,
        /// The key concerned.
        key: String,
        /// The underlying error.
        source: Source,
    },
}

/// The kind of an [`Error`], for matching without destructuring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::AlreadyExists`].
    AlreadyExists,
    /// See [`Error::PreconditionFailed`].
    PreconditionFailed,
    /// See [`Error::PermissionDenied`].
    PermissionDenied,
    /// See [`Error::BucketNotFound`].
    BucketNotFound,
    /// See [`Error::Unavailable`].
    Unavailable,
    /// See [`Error::InvalidKey`].
    InvalidKey,
    /// See [`Error::Corrupt`].
    Corrupt,
    /// See [`Error::Serialization`].
    Serialization,
    /// See [`Error::Unsupported`].
    Unsupported,
    /// See [`Error::Config`].
    Config,
    /// See [`Error::Other`].
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::PreconditionFailed { .. } => ErrorKind::PreconditionFailed,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::BucketNotFound { .. } => ErrorKind::BucketNotFound,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::InvalidKey { .. } => ErrorKind::InvalidKey,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Serialization { .. } => ErrorKind::Serialization,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Config { .. } => ErrorKind::Config,
            Error::Other { .. } => ErrorKind::Other,
        }
    }

    /// Whether a later attempt of the same call may succeed soon enough to retry it:
    /// every [`Error::Unavailable`] but a refused connection ([`ConnectionRefused`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { source, .. } => {
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
                while let Some(e) = cur {
                    if e.is::<ConnectionRefused>() {
                        return false;
                    }
                    cur = e.source();
                }
                true
            }
            _ => false,
        }
    }

    /// Whether this is [`ErrorKind::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Shorthand for [`Error::Other`] from any error.
    pub fn other(
        backend: impl Into<String>,
        key: impl Into<String>,
        source: impl Into<Source>,
    ) -> Self {
        Error::Other {
            backend: backend.into(),
            key: key.into(),
            source: source.into(),
        }
    }
}

/// The source of an [`Error::Unavailable`] when nothing accepts connections at the
/// store's endpoint: reported at once rather than retried (a wrong endpoint or a store
/// that is not running does not come back within a retry budget).
#[derive(Debug)]
pub struct ConnectionRefused(pub String);

impl fmt::Display for ConnectionRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectionRefused {}

/// `value` for an error message: control characters escaped, and a value longer than
/// `max` characters cut in the middle, saying how long it was.
pub fn shorten(value: &str, max: usize) -> String {
    let escaped: String = value
        .chars()
        .flat_map(|c| {
            let mut out = Vec::new();
            if c.is_control() {
                out.extend(c.escape_debug());
            } else {
                out.push(c);
            }
            out
        })
        .collect();
    let count = escaped.chars().count();
    if count <= max {
        return escaped;
    }
    let keep = max.saturating_sub(1) / 2;
    let head: String = escaped.chars().take(keep).collect();
    let tail: String = escaped.chars().skip(count - keep).collect();
    format!("{head}…{tail} ({} characters)", value.chars().count())
}

/// A key as error messages show it.
fn shown(key: &str) -> String {
    shorten(key, 160)
}
