//! The states a task run or a flow run goes through.

use std::fmt;
use std::sync::Arc;

/// Where a task run or a flow run stands.
///
/// A run starts `Pending`, becomes `Running`, and finishes `Completed` (its body ran
/// and succeeded), `Cached` (its value came from a target or a cache record and the
/// body did not run) or `Failed`. Between attempts of a failing task with retries
/// left it is `Retrying`.
///
/// States display the way they are logged:
///
/// ```
/// use cairn::State;
/// assert_eq!(State::Completed.to_string(), "Completed()");
/// assert_eq!(State::Cached.to_string(), "Cached(type=COMPLETED)");
/// assert_eq!(State::Retrying { attempt: 2 }.to_string(), "Retrying(type=RUNNING, attempt=2)");
/// assert_eq!(State::failed("disk full").to_string(), "Failed('disk full')");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Not started yet.
    Pending,
    /// The body (or the lookup before it) is running.
    Running,
    /// A failed attempt will be retried; `attempt` is the attempt that comes next
    /// (2 for the first retry).
    Retrying {
        /// The attempt that comes next, counting from 1.
        attempt: u32,
    },
    /// The body ran and succeeded.
    Completed,
    /// The value came from a target or a cache record; the body did not run.
    Cached,
    /// Out of retries, or failed before the body could run.
    Failed {
        /// The error chain, outermost first, joined by `: `.
        message: Arc<str>,
    },
}

/// The type of a [`State`]: what the run is doing, as opposed to why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateType {
    /// Not started.
    Pending,
    /// In progress ([`State::Running`] and [`State::Retrying`]).
    Running,
    /// Finished with a value ([`State::Completed`] and [`State::Cached`]).
    Completed,
    /// Finished without one.
    Failed,
}

impl State {
    /// A `Failed` state with `message`.
    pub fn failed(message: impl Into<Arc<str>>) -> Self {
        State::Failed {
            message: message.into(),
        }
    }

    /// The state's type.
    pub fn state_type(&self) -> StateType {
        match self {
            State::Pending => StateType::Pending,
            State::Running | State::Retrying { .. } => StateType::Running,
            State::Completed | State::Cached => StateType::Completed,
            State::Failed { .. } => StateType::Failed,
        }
    }

    /// The state's name: `Pending`, `Running`, `Retrying`, `Completed`, `Cached` or
    /// `Failed`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Pending => "Pending",
            State::Running => "Running",
            State::Retrying { .. } => "Retrying",
            State::Completed => "Completed",
            State::Cached => "Cached",
            State::Failed { .. } => "Failed",
        }
    }

    /// Whether the run is over (`Completed`, `Cached` or `Failed`).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            State::Completed | State::Cached | State::Failed { .. }
        )
    }

    /// Whether the run finished with a value (`Completed` or `Cached`).
    pub fn is_completed(&self) -> bool {
        self.state_type() == StateType::Completed
    }

    /// Whether the value came from a target or a cache record.
    pub fn is_cached(&self) -> bool {
        matches!(self, State::Cached)
    }

    /// Whether the run failed.
    pub fn is_failed(&self) -> bool {
        matches!(self, State::Failed { .. })
    }
}

impl fmt::Display for StateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateType::Pending => "PENDING",
            StateType::Running => "RUNNING",
            StateType::Completed => "COMPLETED",
            StateType::Failed => "FAILED",
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Pending | State::Running | State::Completed => write!(f, "{}()", self.name()),
            State::Cached => write!(f, "Cached(type={})", StateType::Completed),
            State::Retrying { attempt } => {
                write!(
                    f,
                    "Retrying(type={}, attempt={attempt})",
                    StateType::Running
                )
            }
            State::Failed { message } => write!(f, "Failed('{message}')"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_states_carry_their_type() {
        assert_eq!(State::Cached.state_type(), StateType::Completed);
        assert_eq!(
            State::Retrying { attempt: 2 }.state_type(),
            StateType::Running
        );
        assert_eq!(State::failed("x").state_type(), StateType::Failed);
        assert!(State::Cached.is_completed() && State::Cached.is_final());
        assert!(!State::Retrying { attempt: 3 }.is_final());
        assert!(!State::Pending.is_final() && !State::Running.is_final());
    }

    #[test]
    fn display_matches_the_logged_form() {
        assert_eq!(State::Pending.to_string(), "Pending()");
        assert_eq!(State::Running.to_string(), "Running()");
        assert_eq!(State::Cached.to_string(), "Cached(type=COMPLETED)");
        assert_eq!(State::failed("boom: io").to_string(), "Failed('boom: io')");
    }
}
