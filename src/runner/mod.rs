//! The runner: tasks, flows, states and the steps of one task run.
//!
//! | file | what |
//! |---|---|
//! | [`task`](Task) | the task handle and its builder options |
//! | `definition` | what a task is made of: body, options, signature |
//! | `run` | one task run: target, cache, body with retries, publishing |
//! | [`flow`](Flow) | flows and flow runs |
//! | `scope` | the flow run a task run belongs to (real or ephemeral) |
//! | `task_run` | what a finished task run recorded, and run ids |
//! | `error` | why a task run failed |
//! | `state` | Pending, Running, Retrying, Completed, Cached, Failed |
//! | `settings` | `$CAIRN_HOME/config.toml` and `CAIRN__*` variables |
//! | `inputs` | a task's input split into named inputs |
//! | `clock` | the clock runs read time from, injectable for tests |

pub(crate) mod clock;
pub(crate) mod definition;
pub(crate) mod error;
pub(crate) mod flow;
pub(crate) mod inputs;
pub(crate) mod resume;
pub(crate) mod run;
pub(crate) mod scope;
pub(crate) mod settings;
pub(crate) mod state;
pub(crate) mod task;
pub(crate) mod task_run;
pub(crate) mod thread_copy;

pub use clock::{Clock, ManualClock, Reading, SystemClock};
pub use definition::{Signature, TaskInput, TaskOutput};
pub use error::{BoxError, TaskError, TaskErrorKind};
pub use flow::{Flow, FlowRun};
pub use settings::Settings;
pub use state::{State, StateType};
pub use task::Task;
pub use task_run::{TaskRun, TaskRunInfo};
