//! Why a task run failed: [`TaskError`] and its kinds.

use std::sync::Arc;

use crate::backend::{Error, ErrorKind};

/// The error type task bodies may fail with: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a task run failed.
#[derive(Debug, Clone)]
pub struct TaskError {
    run: Arc<str>,
    kind: TaskErrorKind,
    context: Option<Arc<str>>,
    source: Arc<dyn std::error::Error + Send + Sync + 'static>,
}

/// What part of a task run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// The body failed (after its last retry).
    Body,
    /// The task's definition is not valid (a template that does not parse, ...).
    Definition,
    /// A template could not be rendered for this run.
    Template,
    /// An input could not be hashed for the cache key.
    Hash,
    /// Reading a target or record, or writing the output, failed.
    Store,
}

impl TaskError {
    pub(crate) fn new(
        run: &str,
        kind: TaskErrorKind,
        context: Option<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        let source: BoxError = source.into();
        TaskError {
            run: Arc::from(run),
            kind,
            context: context.map(Arc::from),
            source: Arc::from(source),
        }
    }

    /// The name of the task run that failed.
    pub fn task_run(&self) -> &str {
        &self.run
    }

    /// What part of the run failed.
    pub fn kind(&self) -> TaskErrorKind {
        self.kind
    }

    /// The cairn error behind this one, when there is one.
    pub fn cairn_error(&self) -> Option<&Error> {
        self.source.downcast_ref::<Error>()
    }

    /// The kind of the cairn error behind this one.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.cairn_error().map(Error::kind)
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task run '{}'", crate::backend::shorten(&self.run, 80))?;
        if let Some(context) = &self.context {
            write!(f, ": {context}")?;
        }
        write!(f, ": {}", error_chain(&*self.source))
    }
}

impl std::error::Error for TaskError {}

/// An error and its sources, joined by `: `.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}
