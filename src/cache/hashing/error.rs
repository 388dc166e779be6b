//! [`HashError`], and the encoder's own error that locates a failure inside a value.

use super::*;

pub(super) type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Subject {
    Value,
    Input(String),
    Component(String),
}

/// A value that cannot be hashed.
///
/// The message names the input (or key component), the place inside the value where
/// hashing failed and the cause, and suggests the fix:
///
/// ```text
/// input 'conn' cannot be hashed at `.pool[2]`: a live connection cannot be serialized;
/// exclude it from the cache key (e.g. INPUTS - "conn") or give it a hash method
/// (implement CacheHash, or wrap it in Hashed or FileInput)
/// ```
///
/// Converted into [`crate::Error`] it becomes [`Error::Config`](crate::Error::Config)
/// with this message: the fix is a change to the task's cache policy or its input
/// types, and retrying cannot help.
#[derive(Debug)]
pub struct HashError {
    pub(super) subject: Subject,
    pub(super) path: String,
    pub(super) cause: String,
    pub(super) source: Option<Source>,
}

impl HashError {
    /// An error with this cause, for [`CacheHash`] implementations and hash methods.
    /// [`KeyHasher`] adds the input's name.
    pub fn new(cause: impl Into<String>) -> Self {
        HashError {
            subject: Subject::Value,
            path: String::new(),
            cause: cause.into(),
            source: None,
        }
    }

    /// An error caused by `source` (an I/O error, a library's error).
    pub fn from_source(source: impl Into<Source>) -> Self {
        let source = source.into();
        let mut error = HashError::new(source.to_string());
        error.source = Some(source);
        error
    }

    /// The input that could not be hashed, if the error came from
    /// [`KeyHasher::add_input`] and its siblings.
    pub fn input(&self) -> Option<&str> {
        match &self.subject {
            Subject::Input(name) => Some(name),
            _ => None,
        }
    }

    /// The key component that could not be hashed, if the error came from
    /// [`KeyHasher::component`].
    pub fn component(&self) -> Option<&str> {
        match &self.subject {
            Subject::Component(name) => Some(name),
            _ => None,
        }
    }

    /// Where inside the value hashing failed, such as `.config.pool[2]` or
    /// `["weights"]`; empty when the value itself failed.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What went wrong, without the input's name or the suggested fix.
    pub fn cause(&self) -> &str {
        &self.cause
    }

    /// This error, as the error of hashing the input `name`.
    pub(crate) fn for_input(self, name: &str) -> Self {
        self.with_subject(Subject::Input(name.to_owned()))
    }

    pub(super) fn with_subject(mut self, subject: Subject) -> Self {
        if self.subject == Subject::Value {
            self.subject = subject;
        }
        self
    }

    pub(super) fn from_encode(error: EncodeError) -> Self {
        HashError {
            subject: Subject::Value,
            path: error.path(),
            cause: error.message,
            source: error.source,
        }
    }
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Subject::Value => f.write_str("value")?,
            Subject::Input(name) => write!(f, "input '{name}'")?,
            Subject::Component(name) => write!(f, "cache key component '{name}'")?,
        }
        f.write_str(" cannot be hashed")?;
        if !self.path.is_empty() {
            write!(f, " at `{}`", self.path)?;
        }
        write!(f, ": {}; ", self.cause)?;
        match &self.subject {
            Subject::Input(name) => write!(
                f,
                "exclude it from the cache key (e.g. INPUTS - \"{name}\") or give it a hash \
                 method (implement CacheHash, or wrap it in Hashed or FileInput)"
            ),
            Subject::Component(_) => f.write_str(
                "leave it out of the cache policy or give it a hash method (implement \
                 CacheHash, or wrap it in Hashed)",
            ),
            Subject::Value => f.write_str(
                "exclude it from the cache key or give it a hash method (implement \
                 CacheHash, or wrap it in Hashed or FileInput)",
            ),
        }
    }
}

impl std::error::Error for HashError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<HashError> for crate::Error {
    fn from(error: HashError) -> Self {
        crate::Error::Config {
            message: error.to_string(),
        }
    }
}

/// The encoder's error: a message, its cause and where in the value it happened.
#[derive(Debug)]
pub(super) struct EncodeError {
    pub(super) message: String,
    pub(super) source: Option<Source>,
    /// Innermost first: segments are added while the error travels outwards.
    pub(super) segments: Vec<Segment>,
}

#[derive(Debug)]
pub(super) enum Segment {
    Field(&'static str),
    Index(usize),
    Key(String),
    Variant(&'static str),
}

impl EncodeError {
    pub(super) fn within(mut self, segment: Segment) -> Self {
        self.segments.push(segment);
        self
    }

    pub(super) fn path(&self) -> String {
        let mut path = String::new();
        for segment in self.segments.iter().rev() {
            match segment {
                Segment::Field(name) => path.push_str(&format!(".{name}")),
                Segment::Index(i) => path.push_str(&format!("[{i}]")),
                Segment::Key(key) => path.push_str(&format!("[{key}]")),
                Segment::Variant(name) => path.push_str(&format!("::{name}")),
            }
        }
        path
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError {
            message: msg.to_string(),
            source: None,
            segments: Vec::new(),
        }
    }
}

/// How a map key is shown in an error path: strings quoted, numbers and booleans as
/// they are, anything else by its position.
pub(super) fn describe_key(encoding: &[u8], position: usize) -> String {
    match encoding.split_first() {
        Some((&tag::STR, rest)) if rest.len() >= 8 => match std::str::from_utf8(&rest[8..]) {
            Ok(s) => format!("{s:?}"),
            Err(_) => format!("key #{position}"),
        },
        Some((&tag::INT, rest)) if rest.len() == 17 => {
            let magnitude = u128::from_le_bytes(rest[1..].try_into().expect("16 bytes"));
            let sign = if rest[0] == 1 { "-" } else { "" };
            format!("{sign}{magnitude}")
        }
        Some((&tag::BOOL, [b])) => (*b == 1).to_string(),
        _ => format!("key #{position}"),
    }
}
