//! Flows: named runs that tasks are called inside.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backend::{Error, Result};
use crate::clock::{Clock, SystemClock};
use crate::hashing::Digest;
use crate::inputs::{visit_inputs, InputVisitor};
use crate::settings::Settings;
use crate::state::State;
use crate::task::{BoxError, TaskRunInfo};
use crate::{Context, ResultStore, Value};

tokio::task_local! {
    static CURRENT: Arc<RunScope>;
}

/// A named pipeline run: the tasks called inside [`Flow::run`]'s body run as parts of
/// one flow run, with its id, parameters, result store and settings, and their states
/// are collected in the returned [`FlowRun`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use cairn::{Flow, State, Task};
///
/// let add_one = Task::infallible("add_one", |x: i64| async move { x + 1 });
/// let run = Flow::new("my-flow")
///     .run((), |_| async {
///         let a = add_one.call(1).await?;
///         let b = add_one.call(a).await?;
///         Ok::<_, cairn::TaskError>(b)
///     })
///     .await;
/// assert_eq!(run.state(), &State::Completed);
/// assert_eq!(run.value(), Some(&3));
/// assert_eq!(run.task_runs().len(), 2);
/// # });
/// ```
///
/// Tasks called concurrently (`futures::join!`, `join_all`) run concurrently. A task
/// spawned onto another tokio task leaves the flow; wrap its future in
/// [`Flow::scoped`] first.
#[derive(Clone, Debug)]
pub struct Flow {
    name: String,
    store: Option<ResultStore>,
    checkpointing: Option<bool>,
    overwrite: bool,
    overwrite_cache: bool,
    settings: Option<Arc<Settings>>,
    clock: Option<Arc<dyn Clock>>,
    date: Option<DateTime<Utc>>,
    context: Context,
    namespace: Option<String>,
}

/// A finished flow run.
#[derive(Debug)]
pub struct FlowRun<T> {
    id: String,
    name: String,
    flow_name: String,
    state: State,
    value: Option<T>,
    error: Option<Arc<BoxError>>,
    task_runs: Vec<TaskRunInfo>,
}

impl Flow {
    /// A flow called `name`, with nothing persisted unless a setting asks for it.
    pub fn new(name: impl Into<String>) -> Self {
        Flow {
            name: name.into(),
            store: None,
            checkpointing: None,
            overwrite: false,
            overwrite_cache: false,
            settings: None,
            clock: None,
            date: None,
            context: Context::new(),
            namespace: None,
        }
    }

    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store for checkpoints, targets and cache records of tasks that name none.
    pub fn result_store(mut self, store: ResultStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Checkpoints every task of the flow (unless a task says otherwise).
    pub fn checkpointing(mut self, on: bool) -> Self {
        self.checkpointing = Some(on);
        self
    }

    /// Re-runs tasks whose targets exist and replaces the targets.
    pub fn overwrite(mut self, on: bool) -> Self {
        self.overwrite = on;
        self
    }

    /// Re-runs cached tasks and replaces their cache records (Flyte's
    /// `overwrite_cache`).
    pub fn overwrite_cache(mut self, on: bool) -> Self {
        self.overwrite_cache = on;
        self
    }

    /// Uses `settings` instead of the process's [`Settings::global`].
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(Arc::new(settings));
        self
    }

    /// Uses `clock` for `date` and cache expiry instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Sets the run's scheduled start (`{date}` and the keys derived from it);
    /// default: the clock's now.
    pub fn date(mut self, date: DateTime<Utc>) -> Self {
        self.date = Some(date);
        self
    }

    /// Adds a user key to every task's template context.
    pub fn context(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.context.insert(name, value);
        self
    }

    /// Keeps the cache entries of this flow's tasks apart from other namespaces
    /// (Flyte's project and domain), unless a task names its own.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Runs `body` with `parameters` as a new flow run, and returns it once the body
    /// is done.
    ///
    /// The run is `Completed` when the body returns `Ok`, and `Failed` with the error
    /// otherwise.
    pub async fn run<P, F, Fut, T, E>(&self, parameters: P, body: F) -> FlowRun<T>
    where
        P: Serialize,
        F: FnOnce(P) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<BoxError>,
    {
        let scope = Arc::new(RunScope::for_flow(self, &parameters));
        tracing::info!(
            "Flow run '{}' - Beginning flow run '{}' for flow '{}'",
            scope.run_name,
            scope.run_name,
            scope.flow_name
        );
        let outcome = CURRENT.scope(scope.clone(), body(parameters)).await;
        let (state, value, error) = match outcome {
            Ok(value) => (State::Completed, Some(value), None),
            Err(e) => {
                let e: BoxError = e.into();
                (
                    State::failed(crate::task::error_chain(&*e)),
                    None,
                    Some(Arc::new(e)),
                )
            }
        };
        tracing::info!("Flow run '{}' - Finished in state {state}", scope.run_name);
        let task_runs = scope.task_runs();
        if scope.persisting() {
            if let Err(e) = scope.persist_summary(&state, &task_runs).await {
                tracing::warn!(
                    "Flow run '{}' - could not persist its summary: {e}",
                    scope.run_name
                );
            }
        }
        FlowRun {
            id: scope.run_id.to_string(),
            name: scope.run_name.to_string(),
            flow_name: scope.flow_name.to_string(),
            state,
            value,
            error,
            task_runs,
        }
    }

    /// Makes `future` part of the current flow run (if any) wherever it is polled —
    /// for futures handed to `tokio::spawn`.
    pub fn scoped<F: Future>(future: F) -> impl Future<Output = F::Output> {
        let scope = CURRENT.try_with(Arc::clone).ok();
        async move {
            match scope {
                Some(scope) => CURRENT.scope(scope, future).await,
                None => future.await,
            }
        }
    }
}

impl<T> FlowRun<T> {
    /// The run's id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The run's name (`flow_run_name`), such as `outgoing-cicada`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The flow's name.
    pub fn flow_name(&self) -> &str {
        &self.flow_name
    }
    /// `Completed` or `Failed`.
    pub fn state(&self) -> &State {
        &self.state
    }
    /// The body's value, when it succeeded.
    pub fn value(&self) -> Option<&T> {
        self.value.as_ref()
    }
    /// The body's error, when it failed.
    pub fn error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.error.as_deref().map(|e| &**e)
    }
    /// Every task run of the flow run, in the order they finished.
    pub fn task_runs(&self) -> &[TaskRunInfo] {
        &self.task_runs
    }
    /// The task runs of the task called `task`.
    pub fn runs_of<'a>(&'a self, task: &'a str) -> impl Iterator<Item = &'a TaskRunInfo> + 'a {
        self.task_runs.iter().filter(move |r| r.task == task)
    }
    /// The value, or the error the body failed with.
    ///
    /// # Errors
    /// The body's error.
    pub fn into_result(self) -> std::result::Result<T, Arc<BoxError>> {
        match (self.value, self.error) {
            (Some(v), _) => Ok(v),
            (None, Some(e)) => Err(e),
            (None, None) => Err(Arc::new("the flow run produced no value".into())),
        }
    }
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
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub namespace: Option<String>,
    ephemeral: bool,
    parameters: std::result::Result<Option<Value>, String>,
    parameter_digests: std::result::Result<BTreeMap<String, Digest>, String>,
    user_context: Context,
    base_context: OnceLock<Context>,
    run_id_digest: OnceLock<Digest>,
    counters: Mutex<HashMap<String, u64>>,
    task_runs: Mutex<Vec<TaskRunInfo>>,
}

fn global_settings() -> Arc<Settings> {
    static SETTINGS: OnceLock<Arc<Settings>> = OnceLock::new();
    SETTINGS
        .get_or_init(|| Arc::new(Settings::global().clone()))
        .clone()
}

fn system_clock() -> Arc<dyn Clock> {
    static CLOCK: OnceLock<Arc<dyn Clock>> = OnceLock::new();
    CLOCK.get_or_init(|| Arc::new(SystemClock)).clone()
}

struct ParameterDigests<'a>(&'a mut BTreeMap<String, Digest>);

impl InputVisitor for ParameterDigests<'_> {
    fn visit<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        let digest = crate::hashing::hash_value(value).map_err(|e| Error::Config {
            message: format!("flow parameter '{name}' cannot be hashed: {}", e.cause()),
        })?;
        self.0.insert(name.to_owned(), digest);
        Ok(())
    }
}

impl RunScope {
    fn for_flow<P: Serialize>(flow: &Flow, parameters: &P) -> Self {
        let clock = flow.clock.clone().unwrap_or_else(system_clock);
        let id = crate::task::new_id();
        let mut digests = BTreeMap::new();
        let parameter_digests = match visit_inputs(
            parameters,
            &["parameters".to_owned()],
            &mut ParameterDigests(&mut digests),
        ) {
            Ok(()) => Ok(digests),
            Err(e) => Err(e.to_string()),
        };
        let parameters = match Value::from_serialize(parameters) {
            Ok(Value::Null) => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(e) => Err(e.to_string()),
        };
        RunScope {
            flow_name: Arc::from(flow.name.as_str()),
            run_name: Arc::from(run_name(&id).as_str()),
            run_id: Arc::from(id.as_str()),
            date: flow.date.unwrap_or_else(|| clock.now()),
            store: flow.store.clone(),
            checkpointing: flow.checkpointing,
            overwrite: flow.overwrite,
            overwrite_cache: flow.overwrite_cache,
            settings: flow.settings.clone().unwrap_or_else(global_settings),
            clock,
            namespace: flow.namespace.clone(),
            ephemeral: false,
            parameters,
            parameter_digests,
            user_context: flow.context.clone(),
            base_context: OnceLock::new(),
            run_id_digest: OnceLock::new(),
            counters: Mutex::new(HashMap::new()),
            task_runs: Mutex::new(Vec::new()),
        }
    }

    /// A scope of its own for a task called outside any flow: the flow run id is the
    /// task run's id.
    pub fn ephemeral(task_run_id: &str) -> Self {
        let clock = system_clock();
        RunScope {
            flow_name: Arc::from("ephemeral"),
            run_id: Arc::from(task_run_id),
            run_name: Arc::from("ephemeral"),
            date: clock.now(),
            store: None,
            checkpointing: None,
            overwrite: false,
            overwrite_cache: false,
            settings: global_settings(),
            clock,
            namespace: None,
            ephemeral: true,
            parameters: Ok(None),
            parameter_digests: Ok(BTreeMap::new()),
            user_context: Context::new(),
            base_context: OnceLock::new(),
            run_id_digest: OnceLock::new(),
            counters: Mutex::new(HashMap::new()),
            task_runs: Mutex::new(Vec::new()),
        }
    }

    /// The flow run the caller is inside of, if any.
    pub fn current() -> Option<Arc<RunScope>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// The next map index of `task` in this run.
    pub fn next_index(&self, task: &str) -> u64 {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        match counters.get_mut(task) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                counters.insert(task.to_owned(), 0);
                0
            }
        }
    }

    /// Records a finished task run (nobody reads the records of an ephemeral run).
    pub fn record(&self, info: &TaskRunInfo) {
        if self.ephemeral {
            return;
        }
        let info = info.clone();
        self.task_runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(info);
    }

    pub fn task_runs(&self) -> Vec<TaskRunInfo> {
        self.task_runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
            .get_or_init(|| crate::hashing::hash_str(&self.run_id))
    }

    /// The digest of each flow parameter, by name.
    pub fn parameter_digests(
        &self,
    ) -> std::result::Result<&BTreeMap<String, Digest>, crate::hashing::HashError> {
        self.parameter_digests
            .as_ref()
            .map_err(|e| crate::hashing::HashError::new(e.clone()))
    }

    /// Whether the flow as a whole persists (its summary is written).
    fn persisting(&self) -> bool {
        self.checkpointing
            .or(self.settings.checkpointing)
            .unwrap_or(false)
    }

    /// The store persisted results go to when neither the task nor the flow names one.
    pub async fn default_store(&self) -> Result<ResultStore> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        // Boxed: the cold path would otherwise make every task call's future as large
        // as the biggest backend's setup.
        Box::pin(open_cached(&self.settings.default_store_url())).await
    }

    /// The store cache records go to when the task names none: the flow's, the
    /// configured one, or this process's memory.
    pub async fn default_cache_store(&self) -> Result<ResultStore> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        match &self.settings.store {
            Some(url) => Box::pin(open_cached(url)).await,
            None => Ok(process_memory_store()),
        }
    }

    async fn persist_summary(&self, state: &State, task_runs: &[TaskRunInfo]) -> Result<()> {
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
                    m.insert("task", r.task.clone());
                    m.insert("name", r.name.clone());
                    m.insert("id", r.id.clone());
                    m.insert("map_index", r.map_index.to_string());
                    m.insert("state", r.state.to_string());
                    if let Some(l) = &r.location {
                        m.insert("location", l.clone());
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

/// The in-process store that holds cache records when no store is named.
pub(crate) fn process_memory_store() -> ResultStore {
    static STORE: OnceLock<ResultStore> = OnceLock::new();
    STORE.get_or_init(ResultStore::memory).clone()
}

const ADJECTIVES: &[&str] = &[
    "amber", "brisk", "calm", "daring", "eager", "fuzzy", "gentle", "hidden", "icy", "jolly",
    "keen", "lucky", "mellow", "nimble", "outgoing", "proud", "quiet", "rapid", "silver", "tidy",
    "upbeat", "vivid", "witty", "young", "zesty", "bold", "clever", "dusty", "fancy", "golden",
    "humble", "lively",
];
const ANIMALS: &[&str] = &[
    "badger", "cicada", "dingo", "egret", "ferret", "gecko", "heron", "ibis", "jackal", "koala",
    "lemur", "marmot", "newt", "otter", "puffin", "quail", "raven", "salmon", "tapir", "urchin",
    "vole", "walrus", "yak", "zebra", "bison", "crane", "dolphin", "falcon", "gopher", "hare",
    "iguana", "lynx",
];

/// A readable name derived from the run id, such as `outgoing-cicada`.
fn run_name(id: &str) -> String {
    let bits = u64::from_str_radix(&id.replace('-', "")[..12], 16).unwrap_or(0);
    format!(
        "{}-{}",
        ADJECTIVES[(bits % ADJECTIVES.len() as u64) as usize],
        ANIMALS[((bits >> 8) % ANIMALS.len() as u64) as usize]
    )
}
