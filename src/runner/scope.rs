//! The flow run a task run belongs to: the real one, or an ephemeral one for a call
//! outside any flow; its settings, stores, clock and the task runs it collected.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backend::{Error, Result};
use crate::cache::hashing::{self, Digest};
use crate::runner::clock::{Clock, SystemClock};
use crate::runner::settings::Settings;
use crate::runner::state::State;
use crate::runner::task_run::TaskRunInfo;
use crate::{Context, ResultStore, Value};

tokio::task_local! {
    pub(super) static CURRENT: Arc<RunScope>;
}

/// The flow run a task run belongs to: the real one, or an ephemeral one for a call
/// outside any flow.
pub(crate) struct RunScope {
    pub flow_name: Arc<str>,
    pub run_id: Arc<str>,
    pub run_name: Arc<str>,
    pub date: DateTime<Utc>,
    pub store: Option<ResultStore>,
    pub checkpointing: Option<bool>,
    pub overwrite: bool,
    pub overwrite_cache: bool,
    /// [`crate::Flow::strict_cache`].
    pub strict_cache: Option<bool>,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub namespace: Option<Arc<str>>,
    /// Resuming an earlier run of this id ([`crate::Flow::resume`]).
    pub resuming: bool,
    pub(super) ephemeral: bool,
    pub(super) parameters: std::result::Result<Option<Value>, String>,
    pub(super) parameter_digests: std::result::Result<BTreeMap<String, Digest>, String>,
    pub(super) user_context: Context,
    pub(super) base_context: OnceLock<Context>,
    pub(super) run_id_digest: OnceLock<Digest>,
    /// The default store, once opened (every task run of the flow run asks for it).
    pub(super) default_store: OnceLock<ResultStore>,
    /// The map indexes given and the task runs finished, under one lock: a run the
    /// memory tier serves takes its index and leaves its record in one visit.
    pub(super) runs: Mutex<Runs>,
}

/// What a flow run counts and keeps of its task runs.
#[derive(Default)]
pub(crate) struct Runs {
    /// Map indexes by task name (FxHash: names are short and the process's own).
    counters: HashMap<String, u64, rustc_hash::FxBuildHasher>,
    /// The finished task runs, in the order they finished.
    list: Vec<TaskRunInfo>,
}

impl Runs {
    /// The next map index of `task`.
    fn next_index(&mut self, task: &str) -> u64 {
        match self.counters.get_mut(task) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                self.counters.insert(task.to_owned(), 0);
                0
            }
        }
    }

    /// Keeps a finished run's record. The records are kept in one list that grows by
    /// doubling, and the memory of the next [`TOUCH_AHEAD`] records is touched a
    /// window at a time: the page faults of first touching fresh memory come together
    /// in one call in 256, instead of one call in every eighteen or so of a long flow
    /// run paying one; and a growth does not map (and have the kernel clear) megabytes
    /// at once, which would evict from the CPU's caches what the next thousand calls
    /// read.
    fn keep(&mut self, info: TaskRunInfo) {
        let runs = &mut self.list;
        let len = runs.len();
        let grew = len == runs.capacity();
        if grew {
            runs.reserve_exact(len.max(16));
        }
        let touch = slots_to_touch(len, runs.capacity(), grew);
        if !touch.is_empty() {
            touch_pages(&mut runs.spare_capacity_mut()[..touch.len()]);
        }
        runs.push(info);
    }
}

// The shared parts of a scope are `Arc`s that every task call outside a flow clones
// and drops. Cloned from one allocation, their counts would be one cache line that
// every core writes on every call; each thread keeps its own instead (the settings are
// fixed once read, and the system clock has no state).

pub(super) fn global_settings() -> Arc<Settings> {
    static SETTINGS: OnceLock<Arc<Settings>> = OnceLock::new();
    thread_local! {
        static LOCAL: Arc<Settings> = Arc::new(
            (**SETTINGS.get_or_init(|| Arc::new(Settings::global().clone()))).clone(),
        );
    }
    LOCAL.with(Arc::clone)
}

pub(super) fn system_clock() -> Arc<dyn Clock> {
    thread_local! {
        static LOCAL: Arc<dyn Clock> = Arc::new(SystemClock);
    }
    LOCAL.with(Arc::clone)
}

impl RunScope {
    /// A scope of its own for a task called outside any flow: the flow run id is the
    /// task run's id.
    pub fn ephemeral(
        task_run_id: &str,
        clock: Option<Arc<dyn Clock>>,
        settings: Option<Arc<Settings>>,
    ) -> Self {
        thread_local! {
            static EPHEMERAL: Arc<str> = Arc::from("ephemeral");
        }
        let name = EPHEMERAL.with(Arc::clone);
        let clock = clock.unwrap_or_else(system_clock);
        RunScope {
            flow_name: name.clone(),
            run_id: Arc::from(task_run_id),
            run_name: name.clone(),
            date: clock.now(),
            store: None,
            checkpointing: None,
            overwrite: false,
            overwrite_cache: false,
            strict_cache: None,
            settings: settings.unwrap_or_else(global_settings),
            clock,
            namespace: None,
            resuming: false,
            ephemeral: true,
            parameters: Ok(None),
            parameter_digests: Ok(BTreeMap::new()),
            user_context: Context::new(),
            base_context: OnceLock::new(),
            run_id_digest: OnceLock::new(),
            default_store: OnceLock::new(),
            runs: Mutex::default(),
        }
    }

    /// This thread's stand-in for the scope of a call outside a flow, where only what
    /// every such scope has alike is read: its settings, clock, store (none), namespace
    /// (none), parameters (none) and flags. Its run id and date are those of no call.
    pub(crate) fn ephemeral_template() -> Arc<RunScope> {
        thread_local! {
            static TEMPLATE: Arc<RunScope> = Arc::new(RunScope::ephemeral("ephemeral", None, None));
        }
        TEMPLATE.with(Arc::clone)
    }

    /// The flow run the caller is inside of, if any.
    pub fn current() -> Option<Arc<RunScope>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// The flow run the caller is inside of, if any, lent to `f` (no count taken).
    pub fn with_current<R>(f: impl FnOnce(&RunScope) -> R) -> Option<R> {
        CURRENT.try_with(|scope| f(scope)).ok()
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, Runs> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next map index of `task` in this run.
    pub fn next_index(&self, task: &str) -> u64 {
        self.runs().next_index(task)
    }

    /// Whether finished task runs are kept (nobody reads those of an ephemeral run).
    pub fn keeps_records(&self) -> bool {
        !self.ephemeral
    }

    /// Records a finished task run, unless the run is ephemeral.
    pub fn record(&self, info: TaskRunInfo) {
        if self.ephemeral {
            return;
        }
        self.runs().keep(info);
    }

    /// Gives a finished run of `task` the next map index of `task` and records it, in
    /// one visit (for a run whose index nothing read before it finished), unless the
    /// run is ephemeral.
    pub fn record_next(&self, mut info: TaskRunInfo, task: &str) {
        if self.ephemeral {
            return;
        }
        let mut runs = self.runs();
        info.map_index = runs.next_index(task);
        runs.keep(info);
    }

    /// Takes the task runs recorded, when the flow run ends.
    pub fn take_task_runs(&self) -> Vec<TaskRunInfo> {
        std::mem::take(&mut self.runs().list)
    }

    /// The context keys every task run of this flow run shares.
    pub fn base_context(&self) -> Result<&Context> {
        let parameters = self.parameters.as_ref().map_err(|e| Error::Config {
            message: format!("the flow's parameters cannot be used in templates: {e}"),
        })?;
        Ok(self.base_context.get_or_init(|| {
            let mut ctx = self.user_context.clone().with_date(self.date);
            ctx.insert("flow_name", self.flow_name.to_string());
            ctx.insert("flow_run_id", self.run_id.to_string());
            ctx.insert("flow_run_name", self.run_name.to_string());
            ctx.insert(
                "parameters",
                parameters.clone().unwrap_or(Value::Map(BTreeMap::new())),
            );
            ctx
        }))
    }

    /// The digest of the run id as a key component (what
    /// `KeyHasher::component_value("run_id", id)` adds), computed once per run.
    pub fn run_id_digest(&self) -> Digest {
        *self
            .run_id_digest
            .get_or_init(|| hashing::hash_str(&self.run_id))
    }

    /// The digest of each flow parameter, by name.
    pub fn parameter_digests(
        &self,
    ) -> std::result::Result<&BTreeMap<String, Digest>, hashing::HashError> {
        self.parameter_digests
            .as_ref()
            .map_err(|e| hashing::HashError::new(e.clone()))
    }

    /// Whether the flow as a whole persists (its summary is written).
    pub(crate) fn persisting(&self) -> bool {
        self.checkpointing
            .or(self.settings.checkpointing)
            .unwrap_or(false)
    }

    /// The store persisted results go to when neither the task nor the flow names one.
    pub async fn default_store(&self) -> Result<ResultStore> {
        if let Some(store) = self.store.as_ref().or(self.default_store.get()) {
            return Ok(store.clone());
        }
        // Boxed: the cold path would otherwise make every task call's future as large
        // as the biggest backend's setup.
        let store = Box::pin(open_cached(&self.settings.default_store_url())).await?;
        Ok(self.default_store.get_or_init(|| store).clone())
    }

    /// The store cache records go to when the task names none: the same as persisted
    /// results ([`RunScope::default_store`]) — the flow's, the configured one, or
    /// `$CAIRN_HOME/storage` — so that a cache outlives the process by default. Keeping
    /// records in the process only is an explicit choice (`ResultStore::memory()`).
    pub async fn default_cache_store(&self) -> Result<ResultStore> {
        self.default_store().await
    }

    /// The default store, when it is open already.
    pub(crate) fn cached_default_store(&self) -> Option<&ResultStore> {
        self.store.as_ref().or(self.default_store.get())
    }

    pub(super) async fn persist_summary(
        &self,
        state: &State,
        task_runs: &[TaskRunInfo],
    ) -> Result<()> {
        #[derive(Serialize)]
        struct Summary {
            flow_name: String,
            flow_run_id: String,
            flow_run_name: String,
            date: DateTime<Utc>,
            state: String,
            task_runs: Vec<BTreeMap<&'static str, String>>,
        }
        let summary = Summary {
            flow_name: self.flow_name.to_string(),
            flow_run_id: self.run_id.to_string(),
            flow_run_name: self.run_name.to_string(),
            date: self.date,
            state: state.to_string(),
            task_runs: task_runs
                .iter()
                .map(|r| {
                    let mut m = BTreeMap::new();
                    m.insert("task", r.task().to_owned());
                    m.insert("name", r.name().to_owned());
                    m.insert("id", r.id().to_owned());
                    m.insert("map_index", r.map_index.to_string());
                    m.insert("state", r.state().to_string());
                    if let Some(l) = &r.location {
                        m.insert("location", l.to_string());
                    }
                    m
                })
                .collect(),
        };
        let store = self.default_store().await?;
        let location = format!("runs/v1/{}/{}/flow.json", self.flow_name, self.run_id);
        store.write_at(&location, &summary).await.map(|_| ())
    }
}

/// Stores opened from settings URLs, shared by every run of the process.
async fn open_cached(url: &str) -> Result<ResultStore> {
    static OPEN: OnceLock<Mutex<HashMap<String, ResultStore>>> = OnceLock::new();
    let open = OPEN.get_or_init(Default::default);
    if let Some(store) = open.lock().unwrap_or_else(|e| e.into_inner()).get(url) {
        return Ok(store.clone());
    }
    let store = ResultStore::from_url(url).await?;
    open.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(url.to_owned(), store.clone());
    Ok(store)
}

/// The records a flow run's list maps memory for at a time: 56 KiB, 14 pages.
const TOUCH_AHEAD: usize = 256;

/// The slots, from `len` on, to touch before the record at `len` is pushed into a list
/// of `capacity` (`grew`: just grown): up to the next multiple of [`TOUCH_AHEAD`] at each
/// multiple and after each growth, none otherwise.
fn slots_to_touch(len: usize, capacity: usize, grew: bool) -> std::ops::Range<usize> {
    if !grew && len % TOUCH_AHEAD != 0 {
        return len..len;
    }
    let window_end = (len / TOUCH_AHEAD + 1) * TOUCH_AHEAD;
    len..window_end.min(capacity)
}

/// Writes to one slot on every page of `slots`, so that the pages are mapped now.
fn touch_pages<T>(slots: &mut [std::mem::MaybeUninit<T>]) {
    const PAGE: usize = 4096;
    let step = (PAGE / std::mem::size_of::<T>().max(1)).max(1);
    for slot in slots.iter_mut().step_by(step) {
        *slot = std::mem::MaybeUninit::zeroed();
        // Not a dead store to the optimizer: the write must reach the page.
        std::hint::black_box(&*slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::task_run::RunId;

    /// As the list grows by doubling, every slot is touched before the record that
    /// goes there is pushed, and no push touches more than a window of slots.
    #[test]
    fn slots_are_touched_ahead_a_window_at_a_time() {
        let mut capacity = 0;
        let mut touched_to = 0;
        for len in 0..100_000 {
            let grew = len == capacity;
            if grew {
                capacity += len.max(16);
            }
            let touch = slots_to_touch(len, capacity, grew);
            assert!(touch.len() <= TOUCH_AHEAD, "{len}: {touch:?}");
            if !touch.is_empty() {
                assert_eq!(touch.start, len);
                assert!(touch.end <= capacity);
                touched_to = touched_to.max(touch.end);
            }
            assert!(len < touched_to, "slot {len} not touched before its push");
        }
    }

    /// A flow run's list keeps every record, in order, across its growths.
    #[test]
    fn records_are_kept_in_order() {
        let mut scope = RunScope::ephemeral("run", None, None);
        scope.ephemeral = false;
        let infos: Vec<TaskRunInfo> = (0..3_000)
            .map(|i| TaskRunInfo::new(Arc::from("task"), RunId::new(), i))
            .collect();
        let ids: Vec<String> = infos.iter().map(|i| i.id().to_owned()).collect();
        for info in infos {
            scope.record(info);
        }
        let kept = scope.take_task_runs();
        let kept_ids: Vec<&str> = kept.iter().map(TaskRunInfo::id).collect();
        assert_eq!(kept_ids, ids);
        assert!(kept
            .iter()
            .enumerate()
            .all(|(i, r)| r.map_index() == i as u64));
    }
}
