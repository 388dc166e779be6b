//! Flows: named runs that tasks are called inside.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backend::{Error, Result};
use crate::cache::hashing::Digest;
use crate::cache::LeaseConfig;
use crate::runner::clock::Clock;
use crate::runner::error::{BoxError, TaskError};
use crate::runner::inputs::{visit_inputs, InputVisitor};
use crate::runner::scope::{global_settings, system_clock, RunScope, CURRENT};
use crate::runner::settings::Settings;
use crate::runner::state::State;
use crate::runner::task_run::TaskRunInfo;
use crate::{Context, ResultStore, Value};

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
///         Ok(b)
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
    strict_cache: Option<bool>,
    settings: Option<Arc<Settings>>,
    clock: Option<Arc<dyn Clock>>,
    date: Option<DateTime<Utc>>,
    context: Context,
    namespace: Option<Arc<str>>,
    run_id: Option<String>,
    resume: bool,
    allow_parameter_change: bool,
    lease: LeaseConfig,
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
            strict_cache: None,
            settings: None,
            clock: None,
            date: None,
            context: Context::new(),
            namespace: None,
            run_id: None,
            resume: false,
            allow_parameter_change: false,
            lease: LeaseConfig::default(),
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

    /// Whether a cache store that fails fails the flow's cached tasks (`true`), or is
    /// a logged miss or warning (`false`, the default): see [`Task::strict_cache`](crate::Task::strict_cache).
    pub fn strict_cache(mut self, on: bool) -> Self {
        self.strict_cache = Some(on);
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

    /// Runs under this flow run id instead of a new one: several processes that run
    /// the same flow under one id share its runs — a shared map's items
    /// ([`Task::map_shared`](crate::Task::map_shared)) and `RUN_ID` cache keys. Without
    /// it, `CAIRN_RUN_ID` in the environment gives the id, so any program built on cairn
    /// can be started as several workers of one run without code changes.
    pub fn run_id(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(id.into());
        self
    }

    /// Resumes the flow run `run_id`, which ran (and failed, or was killed) in this
    /// process or another: the body runs again under the same id, task runs whose
    /// results were recorded and verify are `Cached` without running, and the others
    /// run. The flow must persist (checkpointing on, for the flow or in the settings).
    /// `CAIRN_RESUME=<run id>` in the environment does the same for a flow run with no
    /// id of its own, so any program built on cairn can be resumed without code changes.
    ///
    /// A task run is recognized by its task's name and the digest of its inputs, never
    /// by its position. The run is refused, with the reason, when no such flow run was
    /// recorded, when its parameters differ (unless
    /// [`Flow::allow_parameter_change`]), and when it is still running elsewhere: a
    /// run holds a lease while it runs, and a resume waits until that lease has stopped
    /// changing for its stale time before taking it over.
    pub fn resume(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self.resume = true;
        self
    }

    /// Lets [`Flow::resume`] run a flow run again with parameters other than it had.
    pub fn allow_parameter_change(mut self, allow: bool) -> Self {
        self.allow_parameter_change = allow;
        self
    }

    /// The lease a persisting flow run holds while it runs (see [`Flow::resume`]).
    pub fn lease(mut self, config: LeaseConfig) -> Self {
        self.lease = config;
        self
    }

    /// Keeps the cache entries of this flow's tasks apart from other namespaces
    /// (Flyte's project and domain), unless a task names its own.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(Arc::from(namespace.into()));
        self
    }

    /// Runs `body` with `parameters` as a new flow run, and returns it once the body
    /// is done.
    ///
    /// The run is `Completed` when the body returns `Ok`, and `Failed` with the error
    /// otherwise. The body's error type is [`TaskError`], the error of task calls, so
    /// `?` on them needs no annotation and the body ends in a plain `Ok(value)`; a body
    /// that fails with errors of its own runs with [`Flow::run_with_errors`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cairn::{Flow, Task};
    /// let double = Task::infallible("double", |x: u32| async move { x * 2 });
    /// let run = Flow::new("numbers")
    ///     .run(21, |x| async move { Ok(double.call(x).await? + 0) })
    ///     .await;
    /// assert_eq!(run.value(), Some(&42));
    /// # });
    /// ```
    pub async fn run<P, F, Fut, T>(&self, parameters: P, body: F) -> FlowRun<T>
    where
        P: Serialize,
        F: FnOnce(P) -> Fut,
        Fut: Future<Output = std::result::Result<T, TaskError>>,
    {
        self.run_with_errors(parameters, body).await
    }

    /// [`Flow::run`] for a body whose error is any error type `E`.
    pub async fn run_with_errors<P, F, Fut, T, E>(&self, parameters: P, body: F) -> FlowRun<T>
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
        let prepared = if scope.persisting() || scope.resuming {
            crate::runner::resume::prepare(&scope, self.lease, self.allow_parameter_change).await
        } else {
            Ok(None)
        };
        let run_lease = match prepared {
            Ok(lease) => lease,
            Err(e) => {
                let e: BoxError = Box::new(e);
                let state = State::failed(crate::runner::error::error_chain(&*e));
                tracing::info!("Flow run '{}' - Finished in state {state}", scope.run_name);
                return FlowRun {
                    id: scope.run_id.to_string(),
                    name: scope.run_name.to_string(),
                    flow_name: scope.flow_name.to_string(),
                    state,
                    value: None,
                    error: Some(Arc::new(e)),
                    task_runs: Vec::new(),
                };
            }
        };
        let outcome = CURRENT.scope(scope.clone(), body(parameters)).await;
        if let Some(lease) = run_lease {
            lease.release().await;
        }
        let (state, value, error) = match outcome {
            Ok(value) => (State::Completed, Some(value), None),
            Err(e) => {
                let e: BoxError = e.into();
                (
                    State::failed(crate::runner::error::error_chain(&*e)),
                    None,
                    Some(Arc::new(e)),
                )
            }
        };
        tracing::info!("Flow run '{}' - Finished in state {state}", scope.run_name);
        let task_runs = scope.take_task_runs();
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
        self.task_runs.iter().filter(move |r| r.task() == task)
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

struct ParameterDigests<'a>(&'a mut BTreeMap<String, Digest>);

impl InputVisitor for ParameterDigests<'_> {
    fn visit<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
        let digest = crate::cache::hashing::hash_value(value).map_err(|e| Error::Config {
            message: format!("flow parameter '{name}' cannot be hashed: {}", e.cause()),
        })?;
        self.0.insert(name.to_owned(), digest);
        Ok(())
    }
}

impl RunScope {
    fn for_flow<P: Serialize>(flow: &Flow, parameters: &P) -> Self {
        let clock = flow.clock.clone().unwrap_or_else(system_clock);
        let env = |name: &str| std::env::var(name).ok().filter(|id| !id.is_empty());
        let (id, resuming) = match (&flow.run_id, env("CAIRN_RESUME")) {
            (Some(id), _) => (id.clone(), flow.resume),
            (None, Some(id)) => (id, true),
            (None, None) => (
                env("CAIRN_RUN_ID").unwrap_or_else(crate::runner::task_run::new_id),
                false,
            ),
        };
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
            strict_cache: flow.strict_cache,
            settings: flow.settings.clone().unwrap_or_else(global_settings),
            clock,
            namespace: flow.namespace.clone(),
            resuming,
            ephemeral: false,
            parameters,
            parameter_digests,
            user_context: flow.context.clone(),
            base_context: OnceLock::new(),
            run_id_digest: OnceLock::new(),
            default_store: OnceLock::new(),
            runs: Mutex::default(),
        }
    }
}

/// A readable name derived from the run id, such as `outgoing-cicada`.
fn run_name(id: &str) -> String {
    let hex = id.replace('-', "");
    let bits = hex
        .get(..12)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| {
            // Ids given by users need not be UUIDs: name them by a digest of the id.
            let digest = crate::cache::hashing::hash_str(id);
            u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
        });
    format!(
        "{}-{}",
        ADJECTIVES[(bits % ADJECTIVES.len() as u64) as usize],
        ANIMALS[((bits >> 8) % ANIMALS.len() as u64) as usize]
    )
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
