//! A task run as recorded: its state history, attempts, location and key, and its
//! value or error; and the ids runs are named by.

use crate::runner::error::TaskError;
use crate::runner::state::State;

/// What a finished task run looked like: recorded in its flow run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskRunInfo {
    /// The task's name.
    pub task: String,
    /// The run's name: the task's name and the first characters of its id
    /// (`add_one-d85`).
    pub name: String,
    /// The run's id.
    pub id: String,
    /// The run's index among this task's runs in the flow run.
    pub map_index: u64,
    /// The final state.
    pub state: State,
    /// Every state the run went through, in order.
    pub states: Vec<State>,
    /// How many times the body ran.
    pub attempts: u32,
    /// Where the output was found or written (target or checkpoint).
    pub location: Option<String>,
    /// The cache key, when the task caches.
    pub cache_key: Option<String>,
    /// Where the cache record is, in [`TaskRunInfo::cache_store`]
    /// (`cache/v1/<namespace>/<ab>/<key>`), when the task caches.
    pub cache_record: Option<String>,
    /// The URL of the store holding the cache record, when the task caches.
    pub cache_store: Option<String>,
    /// How long the run waited for another run (in this process or another) that held
    /// the lease on its cache key (`serialize`); `None` when it did not wait.
    pub waited: Option<std::time::Duration>,
}

/// A finished task run: its state and its value or error.
#[derive(Debug)]
pub struct TaskRun<O> {
    pub(crate) info: std::sync::Arc<TaskRunInfo>,
    pub(crate) result: std::result::Result<O, TaskError>,
}

impl<O> TaskRun<O> {
    /// The final state.
    pub fn state(&self) -> &State {
        &self.info.state
    }
    /// The value, when the run succeeded.
    pub fn value(&self) -> Option<&O> {
        self.result.as_ref().ok()
    }
    /// The error, when it failed.
    pub fn error(&self) -> Option<&TaskError> {
        self.result.as_ref().err()
    }
    /// The run's name, such as `add_one-d85`.
    pub fn name(&self) -> &str {
        &self.info.name
    }
    /// Everything recorded about the run.
    pub fn info(&self) -> &TaskRunInfo {
        &self.info
    }
    /// The value, or the error.
    ///
    /// # Errors
    /// The run's error.
    pub fn into_result(self) -> std::result::Result<O, TaskError> {
        self.result
    }
}

/// A new random id (a UUID v4), from a fast per-thread generator seeded from the
/// operating system's entropy (as `rand`'s thread generator is), rather than a system
/// call per id.
pub(crate) fn new_id() -> String {
    use rand::{Rng, SeedableRng};
    thread_local! {
        static RNG: std::cell::RefCell<rand::rngs::SmallRng> =
            std::cell::RefCell::new(rand::rngs::SmallRng::from_rng(&mut rand::rng()));
    }
    let bytes: [u8; 16] = RNG.with(|rng| rng.borrow_mut().random());
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    // Encoded into a stack buffer: one allocation, no formatting machinery.
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut buf).to_owned()
}

#[cfg(test)]
mod tests {
    use super::new_id;

    #[test]
    fn run_ids_are_uuid_v4_and_distinct_across_threads() {
        let ids: Vec<String> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| new_id()).collect::<Vec<_>>()))
            .flat_map(|t| t.join().unwrap())
            .collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            let parsed = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.hyphenated().to_string(), *id);
        }
    }
}
