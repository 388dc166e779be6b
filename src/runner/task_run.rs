//! A task run as recorded: its state history, attempts, location and key, and its
//! value or error; and the ids runs are named by.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use smallvec::SmallVec;

use crate::cache::hashing::Digest;
use crate::runner::error::TaskError;
use crate::runner::state::State;

/// What a finished task run looked like: recorded in its flow run.
///
/// Read through its accessors. The strings a run is known by (its name, the cache key in
/// hex, the record's location) are written out the first time they are asked for, so a
/// run that nobody inspects costs no formatting.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let task = cairn::Task::infallible("add_one", |x: u64| async move { x + 1 });
/// let run = task.run(1).await;
/// let info = run.info();
/// assert_eq!(info.task(), "add_one");
/// assert!(info.name().starts_with("add_one-"));
/// assert_eq!(info.states().len(), 3); // Pending, Running, Completed
/// assert_eq!(info.attempts(), 1);
/// assert_eq!(info.cache_key(), None); // no cache policy
/// # });
/// ```
#[derive(Clone)]
pub struct TaskRunInfo {
    pub(crate) task: Arc<str>,
    pub(crate) id: RunId,
    pub(crate) name: OnceLock<Box<str>>,
    pub(crate) map_index: u64,
    pub(crate) state: State,
    pub(crate) states: SmallVec<[State; 3]>,
    pub(crate) attempts: u32,
    pub(crate) location: Option<String>,
    pub(crate) cache: Option<CacheRef>,
    pub(crate) waited: Option<Duration>,
}

/// The cache record a run looked up: its key, namespace and store, with the record's
/// location (which ends with the key's hex) written out on first use.
#[derive(Debug, Clone)]
pub(crate) struct CacheRef {
    pub(crate) key: Digest,
    pub(crate) namespace: Arc<str>,
    pub(crate) store: Arc<str>,
    record: OnceLock<Box<str>>,
}

impl CacheRef {
    pub(crate) fn new(key: Digest, namespace: Arc<str>, store: Arc<str>) -> Self {
        CacheRef {
            key,
            namespace,
            store,
            record: OnceLock::new(),
        }
    }

    /// The key as 64 hex digits.
    pub(crate) fn hex(&self) -> &str {
        let record = self.record();
        &record[record.len() - 64..]
    }

    /// `cache/v1/<namespace>/<ab>/<key>`.
    pub(crate) fn record(&self) -> &str {
        self.record.get_or_init(|| {
            let hex = self.key.hex_buf();
            crate::cache::record_location(&self.namespace, hex.as_str()).into_boxed_str()
        })
    }
}

impl PartialEq for CacheRef {
    fn eq(&self, other: &Self) -> bool {
        // The written-out strings follow from these.
        self.key == other.key && self.namespace == other.namespace && self.store == other.store
    }
}

impl TaskRunInfo {
    pub(crate) fn new(task: Arc<str>, id: RunId, map_index: u64) -> Self {
        let mut states = SmallVec::new();
        states.push(State::Pending);
        TaskRunInfo {
            task,
            id,
            name: OnceLock::new(),
            map_index,
            state: State::Pending,
            states,
            attempts: 0,
            location: None,
            cache: None,
            waited: None,
        }
    }

    /// The task's name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The run's name: the task's name and the first characters of its id
    /// (`add_one-d85`).
    pub fn name(&self) -> &str {
        self.name.get_or_init(|| {
            let mut name = String::with_capacity(self.task.len() + 4);
            name.push_str(&self.task);
            name.push('-');
            name.push_str(&self.id.as_str()[..3]);
            name.into_boxed_str()
        })
    }

    /// The run's id (a UUID v4).
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// The run's index among this task's runs in the flow run.
    pub fn map_index(&self) -> u64 {
        self.map_index
    }

    /// The final state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Every state the run went through, in order.
    pub fn states(&self) -> &[State] {
        &self.states
    }

    /// How many times the body ran.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Where the output was found or written (target or checkpoint).
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The cache key in hex, when the task caches.
    pub fn cache_key(&self) -> Option<&str> {
        self.cache.as_ref().map(CacheRef::hex)
    }

    /// Where the cache record is, in [`TaskRunInfo::cache_store`]
    /// (`cache/v1/<namespace>/<ab>/<key>`), when the task caches.
    pub fn cache_record(&self) -> Option<&str> {
        self.cache.as_ref().map(CacheRef::record)
    }

    /// The URL of the store holding the cache record, when the task caches.
    pub fn cache_store(&self) -> Option<&str> {
        self.cache.as_ref().map(|c| &*c.store)
    }

    /// How long the run waited for another run (in this process or another) that held
    /// the lease on its cache key (`serialize`); `None` when it did not wait.
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }
}

impl std::fmt::Debug for TaskRunInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRunInfo")
            .field("task", &self.task())
            .field("name", &self.name())
            .field("id", &self.id())
            .field("map_index", &self.map_index)
            .field("state", &self.state)
            .field("states", &self.states())
            .field("attempts", &self.attempts)
            .field("location", &self.location)
            .field("cache_key", &self.cache_key())
            .field("cache_record", &self.cache_record())
            .field("cache_store", &self.cache_store())
            .field("waited", &self.waited)
            .finish()
    }
}

impl PartialEq for TaskRunInfo {
    fn eq(&self, other: &Self) -> bool {
        // The name follows from the task and the id.
        self.task == other.task
            && self.id == other.id
            && self.map_index == other.map_index
            && self.state == other.state
            && self.states == other.states
            && self.attempts == other.attempts
            && self.location == other.location
            && self.cache == other.cache
            && self.waited == other.waited
    }
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
        self.info.name()
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

/// A run's id: a UUID v4 in its 36-character form, kept inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunId([u8; uuid::fmt::Hyphenated::LENGTH]);

impl RunId {
    /// A new random id, from a fast per-thread generator seeded from the operating
    /// system's entropy (as `rand`'s thread generator is), rather than a system call
    /// per id.
    pub(crate) fn new() -> Self {
        use rand::{Rng, SeedableRng};
        thread_local! {
            static RNG: std::cell::RefCell<rand::rngs::SmallRng> =
                std::cell::RefCell::new(rand::rngs::SmallRng::from_rng(&mut rand::rng()));
        }
        // Two 64-bit draws (an array of bytes would be drawn byte by byte).
        let bytes = RNG
            .with(|rng| rng.borrow_mut().random::<u128>())
            .to_le_bytes();
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        id.hyphenated().encode_lower(&mut buf);
        RunId(buf)
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a UUID is ASCII")
    }
}

impl std::fmt::Debug for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A new random id (a UUID v4) as a string.
pub(crate) fn new_id() -> String {
    RunId::new().as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> TaskRunInfo {
        let mut info = TaskRunInfo::new(Arc::from("add_one"), RunId::new(), 7);
        info.cache = Some(CacheRef::new(
            Digest::from_bytes([0xab; 32]),
            Arc::from("team"),
            Arc::from("file:///data/store"),
        ));
        info
    }

    #[test]
    fn the_strings_a_run_is_known_by_are_written_out_when_asked_for() {
        let info = info();
        let id = info.id().to_owned();
        assert_eq!(info.name(), format!("add_one-{}", &id[..3]));
        let hex = "ab".repeat(32);
        assert_eq!(info.cache_key(), Some(hex.as_str()));
        assert_eq!(
            info.cache_record(),
            Some(crate::cache::record_location("team", &hex).as_str())
        );
        assert_eq!(
            info.cache_record(),
            Some(format!("cache/v1/team/ab/{hex}").as_str())
        );
        assert_eq!(info.cache_store(), Some("file:///data/store"));
        assert_eq!((info.map_index(), info.attempts()), (7, 0));
        assert_eq!(info.states(), [State::Pending]);
    }

    #[test]
    fn equality_does_not_depend_on_what_was_written_out() {
        let a = info();
        let b = a.clone();
        let _ = (a.name(), a.cache_key(), a.cache_record());
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let mut c = b.clone();
        c.cache = None;
        assert_ne!(a, c);
        assert_eq!(c.cache_key(), None);
        assert_ne!(info(), a, "another run, another id");
    }

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
