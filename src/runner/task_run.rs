//! A task run as recorded: its state history, attempts, location and key, and its
//! value or error; and the ids runs are named by.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::backend::Key;
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
    /// The id and then the name, written out together on first use.
    text: OnceLock<Box<str>>,
    pub(crate) map_index: u64,
    /// Every state so far, the current one last: one of the histories nearly every run
    /// has, shared, or a list of its own.
    states: Cow<'static, [State]>,
    pub(crate) attempts: u32,
    pub(crate) location: Option<Box<str>>,
    pub(crate) cache: Option<CacheRef>,
    pub(crate) waited: Option<Duration>,
}

/// The histories nearly every run has.
static PENDING: [State; 1] = [State::Pending];
static STARTED: [State; 2] = [State::Pending, State::Running];
static COMPLETED: [State; 3] = [State::Pending, State::Running, State::Completed];
static CACHED: [State; 3] = [State::Pending, State::Running, State::Cached];

/// The cache record a run looked up: its key, namespace and store, with the record's
/// location (which ends with the key's hex) written out and checked as an object key
/// on first use.
#[derive(Debug, Clone)]
pub(crate) struct CacheRef {
    pub(crate) key: Digest,
    pub(crate) namespace: Arc<str>,
    pub(crate) store: Arc<str>,
    record: OnceLock<RecordKey>,
}

/// A record's location, as the object key a store reads, or as written with the
/// reason no store takes it (a namespace can make it invalid: the error surfaces when
/// the record is read, as for any key).
#[derive(Debug, Clone)]
enum RecordKey {
    Valid(Key),
    Invalid(Box<InvalidRecord>),
}

#[derive(Debug, Clone)]
struct InvalidRecord {
    location: Box<str>,
    reason: Box<str>,
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
        match self.record_key() {
            RecordKey::Valid(key) => key.as_str(),
            RecordKey::Invalid(invalid) => &invalid.location,
        }
    }

    /// The record's location as an object key: the same string as
    /// [`CacheRef::record`], checked once for the whole run.
    ///
    /// # Errors
    /// [`crate::backend::Error::InvalidKey`] when the namespace makes it invalid.
    pub(crate) fn record_object(&self) -> crate::backend::Result<&Key> {
        match self.record_key() {
            RecordKey::Valid(key) => Ok(key),
            RecordKey::Invalid(invalid) => Err(crate::backend::Error::InvalidKey {
                key: invalid.location.to_string(),
                reason: invalid.reason.to_string(),
            }),
        }
    }

    fn record_key(&self) -> &RecordKey {
        self.record.get_or_init(|| {
            let location = || {
                let hex = self.key.hex_buf();
                crate::cache::record_location(&self.namespace, hex.as_str())
            };
            let (location, reason) = match Key::parse(location()) {
                Ok(key) => return RecordKey::Valid(key),
                Err(crate::backend::Error::InvalidKey { key, reason }) => (key, reason),
                Err(other) => (location(), other.to_string()),
            };
            RecordKey::Invalid(Box::new(InvalidRecord {
                location: location.into(),
                reason: reason.into(),
            }))
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
        TaskRunInfo {
            task,
            id,
            text: OnceLock::new(),
            map_index,
            states: Cow::Borrowed(&PENDING),
            attempts: 0,
            location: None,
            cache: None,
            waited: None,
        }
    }

    /// Moves the run to `state`.
    pub(crate) fn enter(&mut self, state: State) {
        // The shared histories are told apart by address, not compared state by state.
        let at = |history: &'static [State]| match &self.states {
            Cow::Borrowed(states) => std::ptr::eq(*states, history),
            Cow::Owned(_) => false,
        };
        let shared: Option<&'static [State]> = match &state {
            State::Running if at(&PENDING) => Some(&STARTED),
            State::Completed if at(&STARTED) => Some(&COMPLETED),
            State::Cached if at(&STARTED) => Some(&CACHED),
            _ => None,
        };
        match shared {
            Some(history) => self.states = Cow::Borrowed(history),
            None => self.states.to_mut().push(state),
        }
    }

    /// The id and the name: `<id><task>-<first three characters of the id>`.
    fn text(&self) -> &str {
        self.text.get_or_init(|| {
            let id = self.id.hyphenated();
            let mut text = String::with_capacity(id.len() + self.task.len() + 4);
            text.push_str(&id);
            text.push_str(&self.task);
            text.push('-');
            text.push_str(&id[..3]);
            text.into_boxed_str()
        })
    }

    /// The task's name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The run's name: the task's name and the first characters of its id
    /// (`add_one-d85`).
    pub fn name(&self) -> &str {
        &self.text()[RunId::LEN..]
    }

    /// The run's id (a UUID v4).
    pub fn id(&self) -> &str {
        &self.text()[..RunId::LEN]
    }

    /// The run's index among this task's runs in the flow run.
    pub fn map_index(&self) -> u64 {
        self.map_index
    }

    /// The final state.
    pub fn state(&self) -> &State {
        self.states
            .last()
            .expect("a run has a state from the start")
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
            .field("state", self.state())
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
        // The id and the name follow from the task and the id.
        self.task == other.task
            && self.id == other.id
            && self.map_index == other.map_index
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
        self.info.state()
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

/// A run's id: a UUID v4, kept as its 128 bits and written out when asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunId(u128);

impl RunId {
    /// The length of the written-out id.
    pub(crate) const LEN: usize = uuid::fmt::Hyphenated::LENGTH;

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
        RunId(
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .as_u128(),
        )
    }

    /// The id in its 36-character form, on the stack.
    pub(crate) fn hyphenated(self) -> HyphenatedId {
        let mut buf = [0u8; Self::LEN];
        uuid::Uuid::from_u128(self.0)
            .hyphenated()
            .encode_lower(&mut buf);
        HyphenatedId(buf)
    }
}

impl std::fmt::Debug for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.hyphenated(), f)
    }
}

/// A run id written out, on the stack.
pub(crate) struct HyphenatedId([u8; RunId::LEN]);

impl std::ops::Deref for HyphenatedId {
    type Target = str;
    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a UUID is ASCII")
    }
}

/// A new random id (a UUID v4) as a string.
pub(crate) fn new_id() -> String {
    RunId::new().hyphenated().to_string()
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
    fn a_record_location_is_checked_as_a_key_once_and_its_fault_kept() {
        let cache = |namespace: &str| {
            CacheRef::new(
                Digest::from_bytes([0xab; 32]),
                Arc::from(namespace),
                Arc::from("file:///data/store"),
            )
        };
        let good = cache("team");
        let key = good.record_object().unwrap();
        assert_eq!(key.as_str(), good.record());
        assert_eq!(
            key.as_str(),
            format!("cache/v1/team/ab/{}", "ab".repeat(32))
        );
        // The same key object each time: checked and written out once.
        assert!(std::ptr::eq(key, good.record_object().unwrap()));

        let bad = cache("../outside");
        assert_eq!(
            bad.record(),
            format!("cache/v1/../outside/ab/{}", "ab".repeat(32))
        );
        for _ in 0..2 {
            let err = bad.record_object().unwrap_err();
            let crate::backend::Error::InvalidKey { key, reason } = &err else {
                panic!("{err}");
            };
            assert_eq!(key, bad.record());
            assert_eq!(
                err.to_string(),
                Key::parse(bad.record()).unwrap_err().to_string(),
                "{reason}"
            );
        }
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
    fn states_are_kept_in_order_whether_shared_or_listed() {
        let usual = [
            vec![State::Running, State::Completed],
            vec![State::Running, State::Cached],
            vec![State::Cached],
            vec![
                State::Running,
                State::Retrying { attempt: 2 },
                State::Running,
                State::Completed,
            ],
            vec![State::Running, State::failed("boom")],
            vec![State::Running, State::Completed, State::Running],
        ];
        for later in usual {
            let mut info = info();
            let mut expected = vec![State::Pending];
            for state in later {
                info.enter(state.clone());
                expected.push(state);
                assert_eq!(info.states(), expected);
                assert_eq!(info.state(), expected.last().unwrap());
            }
            // A history listed on its own equals the same history shared.
            let mut listed = info.clone();
            listed.states = Cow::Owned(expected.clone());
            assert_eq!(listed, info);
            assert_eq!(format!("{listed:?}"), format!("{info:?}"));
        }
        let mut cached = info();
        cached.enter(State::Running);
        cached.enter(State::Cached);
        assert!(
            matches!(cached.states, Cow::Borrowed(_)),
            "shared, not allocated"
        );
    }

    #[test]
    fn the_id_and_the_name_are_written_out_together() {
        let info = info();
        let id = info.id();
        assert_eq!(id.len(), RunId::LEN);
        assert_eq!(id, &*info.id.hyphenated());
        assert_eq!(format!("{:?}", info.id), format!("{id:?}"));
        assert_eq!(info.name(), format!("add_one-{}", &id[..3]));
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().as_u128(), info.id.0);
        // A record a flow run keeps per task run: small enough that filling memory
        // with them stays cheap.
        let size = std::mem::size_of::<TaskRunInfo>();
        assert!(size <= 224, "{size}");
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
