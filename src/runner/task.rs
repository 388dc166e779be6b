//! Tasks: async functions with a name and options, run through cairn.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::backend::{Error, Result};
use crate::cache::{Cache, CachePolicy, LeaseConfig, IDENTITY};
use crate::runner::definition::{Body, Signature, TaskDef, TaskInput, TaskOutput};
use crate::runner::error::{BoxError, TaskError};
use crate::runner::scope::RunScope;
use crate::runner::task_run::{new_id, TaskRun};
use crate::{Context, ResultStore, Serializer, Template, Value};

/// A task: an async function with a name and options.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use cairn::{ResultStore, State, Task};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = ResultStore::local(dir.path())?;
/// let double = Task::new("double", |x: u32| async move { Ok::<_, std::io::Error>(x * 2) })
///     .inputs(["x"])
///     .result(store)
///     .target("numbers/{task_name}-{x}.json")
///     .retries(2)
///     .retry_delay(Duration::from_millis(10));
///
/// let first = double.run(21).await;
/// assert_eq!((first.state(), first.value()), (&State::Completed, Some(&42)));
/// assert!(dir.path().join("numbers/double-21.json").exists());
///
/// let second = double.run(21).await; // the target exists: the body does not run
/// assert_eq!((second.state(), second.value()), (&State::Cached, Some(&42)));
/// # Ok::<(), cairn::Error>(()) }).unwrap();
/// ```
pub struct Task<I, O> {
    pub(crate) def: Arc<TaskDef<I, O>>,
}

impl<I, O> Clone for Task<I, O> {
    fn clone(&self) -> Self {
        Task {
            def: self.def.clone(),
        }
    }
}

impl<I, O> std::fmt::Debug for Task<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.def.name)
            .field("inputs", &self.def.input_names)
            .field("target", &self.def.target)
            .field("cache_policy", &self.def.cache_policy)
            .finish_non_exhaustive()
    }
}

impl<I: TaskInput, O: TaskOutput> Task<I, O> {
    /// A task called `name` whose body is `body`: an async function of the input that
    /// returns `Ok(output)` or any error.
    pub fn new<F, Fut, E>(name: impl Into<String>, body: F) -> Self
    where
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<O, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let body: Body<I, O> = Arc::new(move |input| {
            let fut = body(input);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        Task {
            def: Arc::new(TaskDef {
                name: Arc::from(name.into()),
                body,
                input_names: Vec::new(),
                signature: Some(Signature::of::<I, O>(&[])),
                signature_declared: false,
                source: None,
                store: None,
                serializer: None,
                checkpoint: None,
                target: None,
                location: None,
                retries: 0,
                retry_delay: Duration::ZERO,
                refresh: false,
                context: Context::new(),
                user_keys: Vec::new(),
                cache_policy: None,
                cache_expiration: None,
                refresh_cache: None,
                strict_cache: None,
                cache_store: None,
                cache_key: None,
                namespace: None,
                serialize: false,
                lease: LeaseConfig::default(),
                memory_tier: true,
                memory_tier_revalidate_after: None,
                clock: None,
                settings: None,
                invalid: None,
                problem: None,
                derived: OnceLock::new(),
            }),
        }
    }

    /// A task whose body cannot fail.
    pub fn infallible<F, Fut>(name: impl Into<String>, body: F) -> Self
    where
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
    {
        let body = Arc::new(body);
        Task::new(name, move |input| {
            let fut = body(input);
            async move { Ok::<_, std::convert::Infallible>(fut.await) }
        })
    }

    fn edit(mut self, f: impl FnOnce(&mut TaskDef<I, O>)) -> Self {
        let def = Arc::make_mut(&mut self.def);
        def.derived = OnceLock::new();
        f(def);
        if !def.signature_declared {
            def.signature = Some(Signature::of::<I, O>(&def.input_names));
        }
        def.problem = Self::problem(def).map(Arc::new);
        self
    }

    /// Records the first definition error, reported by [`Task::check`] and by every run.
    fn invalid(self, error: Error) -> Self {
        self.edit(|d| {
            d.invalid.get_or_insert(Arc::new(error));
        })
    }

    /// What is wrong with the cache policy as the options now stand.
    fn problem(d: &TaskDef<I, O>) -> Option<Error> {
        let policy = d.cache_policy.as_ref().filter(|p| !p.is_none())?;
        let no_input = std::any::TypeId::of::<I>() == std::any::TypeId::of::<()>();
        if !d.input_names.is_empty() || no_input {
            if let Some(unknown) = policy
                .named_inputs()
                .find(|n| !d.input_names.iter().any(|i| i == n))
            {
                let inputs = if d.input_names.is_empty() {
                    "none".to_owned()
                } else {
                    d.input_names.join(", ")
                };
                return Some(Error::Config {
                    message: format!(
                        "task '{}': the cache policy {policy} names the input '{unknown}', \
                         which the task does not have (its inputs: {inputs})",
                        d.name
                    ),
                });
            }
        }
        if policy.uses_task_source() && d.source.is_none() {
            return Some(Error::Config {
                message: format!(
                    "task '{}': the cache policy {policy} uses TASK_SOURCE, but the task's \
                     source is unknown; define it with #[cairn::task], give it with \
                     Task::task_source, or use a Version instead",
                    d.name
                ),
            });
        }
        None
    }

    /// Checks the definition as it stands: the templates given to [`Task::target`] and
    /// [`Task::location`], and the cache policy's input names and needs. Every run of a
    /// task that fails this check fails with the same error, before anything runs.
    ///
    /// ```
    /// use cairn::{cache::{INPUTS, TASK_SOURCE}, Task};
    /// let add = Task::infallible("add", |(x, _debug): (i64, bool)| async move { x + 1 })
    ///     .inputs(["x", "debug"]);
    /// assert!(add.clone().cache_policy(INPUTS - "debug").check().is_ok());
    /// let typo = add.clone().cache_policy(INPUTS - "debg").check().unwrap_err();
    /// assert!(typo.to_string().contains("'debg'"), "{typo}");
    /// let no_source = add.clone().cache_policy(TASK_SOURCE).check().unwrap_err();
    /// assert!(no_source.to_string().contains("TASK_SOURCE"), "{no_source}");
    /// let bad = add.target("{nope}.json").check().unwrap_err();
    /// assert!(bad.to_string().contains("nope"), "{bad}");
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the task and what is wrong, once.
    pub fn check(&self) -> Result<()> {
        match self.def.invalid.as_ref().or(self.def.problem.as_ref()) {
            Some(e) => Err(Error::Config {
                message: match &**e {
                    Error::Config { message } => message.clone(),
                    other => other.to_string(),
                },
            }),
            None => Ok(()),
        }
    }

    /// The task, or its definition error ([`Task::check`]): for `?` at the end of a
    /// builder chain.
    ///
    /// # Errors
    /// As [`Task::check`].
    pub fn checked(self) -> Result<Self> {
        self.check().map(|()| self)
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Names the inputs. A tuple input's elements take these names in order (elements
    /// past the list are called by position); a struct input's fields are named by the
    /// struct; any other input is one input, called by the first name (or `input`).
    /// Inputs are reached by name in templates (`{x}`) and cache policies
    /// (`INPUTS - "debug"`).
    pub fn inputs<S: Into<String>>(self, names: impl IntoIterator<Item = S>) -> Self {
        self.edit(|d| d.input_names = names.into_iter().map(Into::into).collect())
    }

    /// The declared input names.
    pub fn input_names(&self) -> &[String] {
        &self.def.input_names
    }

    /// Records the task's signature: `(name, type)` of each input and the output type.
    /// Also names the inputs.
    pub fn signature(self, inputs: &[(&str, &str)], output: &str) -> Self {
        self.edit(|d| {
            d.input_names = inputs.iter().map(|(n, _)| (*n).to_owned()).collect();
            d.signature_declared = true;
            d.signature = Some(Signature {
                inputs: inputs
                    .iter()
                    .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                    .collect(),
                output: output.to_owned(),
            });
        })
    }

    /// The signature: as `#[cairn::task]` or [`Task::signature`] recorded it, else the
    /// builder task's input and output types (part of the key under
    /// [`crate::cache::SIGNATURE`], so changing an input's type is a miss).
    ///
    /// ```
    /// use cairn::Task;
    /// let t = Task::infallible("t", |(x, _s): (u32, String)| async move { x }).inputs(["x", "s"]);
    /// let signature = t.signature_info().unwrap();
    /// assert_eq!(signature.inputs, [("x".into(), "u32".into()), ("s".into(), "String".into())]);
    /// assert_eq!(signature.output, "u32");
    /// ```
    pub fn signature_info(&self) -> Option<&Signature> {
        self.def.signature.as_ref()
    }

    /// The task's code, as a canonical text (what `#[cairn::task]` records): hashed
    /// for [`crate::cache::TASK_SOURCE`].
    pub fn task_source(self, source: impl Into<Arc<str>>) -> Self {
        self.edit(|d| d.source = Some(source.into()))
    }

    /// The recorded task source.
    pub fn source(&self) -> Option<&str> {
        self.def.source.as_deref()
    }

    /// The store for this task's target, checkpoints and (unless `result_storage`
    /// names another) cache records.
    pub fn result(self, store: ResultStore) -> Self {
        self.edit(|d| d.store = Some(store))
    }

    /// The serializer for checkpoints and records, and for targets whose extension
    /// names none.
    pub fn serializer(self, serializer: Serializer) -> Self {
        self.edit(|d| d.serializer = Some(serializer))
    }

    /// Writes every successful output through the result store (overrides the flow
    /// and the settings).
    pub fn checkpoint(self, on: bool) -> Self {
        self.edit(|d| d.checkpoint = Some(on))
    }

    fn known_keys(d: &TaskDef<I, O>) -> Vec<String> {
        Context::STANDARD_KEYS
            .iter()
            .map(|k| (*k).to_owned())
            .chain(d.input_names.iter().cloned())
            .chain(d.user_keys.iter().cloned())
            .chain(d.context.names().map(str::to_owned))
            .collect()
    }

    fn parse_template(d: &TaskDef<I, O>, what: &str, source: &str) -> Result<Template> {
        // The template's own error names the template: say which task and which
        // option it is, once.
        let in_task = |e: Error| Error::Config {
            message: format!(
                "task '{}': {what}: {}",
                crate::backend::shorten(&d.name, 80),
                match e {
                    Error::Config { message } => message,
                    other => other.to_string(),
                }
            ),
        };
        let template = Template::parse(source).map_err(in_task)?;
        // Without declared inputs, input keys are only known at the first run (unless
        // the task takes no input at all).
        let no_input = std::any::TypeId::of::<I>() == std::any::TypeId::of::<()>();
        if !d.input_names.is_empty() || no_input {
            template.check_keys(Self::known_keys(d)).map_err(in_task)?;
        }
        Ok(template)
    }

    /// The task's target: a template rendered per run. When the rendered target
    /// exists in the result store, the run is `Cached` with the value read from it and
    /// the body does not run; otherwise the output is published there atomically.
    ///
    /// A template that does not parse, or names a key that is neither a standard key,
    /// an input, nor a user key (declare inputs and user keys first), makes the task
    /// invalid: [`Task::check`] reports it, and so does every run, before running.
    /// [`Task::try_target`] reports it here instead.
    pub fn target(self, template: &str) -> Self {
        match Self::parse_template(&self.def, "target", template) {
            Ok(parsed) => self.edit(|d| d.target = Some(parsed)),
            Err(e) => self.invalid(e),
        }
    }

    /// [`Task::target`], reporting a bad template at once.
    ///
    /// # Errors
    /// [`Error::Config`] when the template does not parse or names an unknown key.
    pub fn try_target(self, template: &str) -> Result<Self> {
        let parsed = Self::parse_template(&self.def, "target", template)?;
        Ok(self.edit(|d| d.target = Some(parsed)))
    }

    /// A target computed by a function of the run's context.
    pub fn target_fn(self, f: impl Fn(&Context) -> String + Send + Sync + 'static) -> Self {
        self.edit(|d| d.target = Some(Template::from_fn("<callable target>", f)))
    }

    /// Where checkpoints go (default `runs/v1/{flow_name}/{flow_run_id}/{task_name}/{map_index}`).
    /// A checkpoint at a location given here is stored as plain serialized bytes, like
    /// a target; at the default location, as a verified record.
    ///
    /// A bad template is reported as [`Task::target`] reports one.
    pub fn location(self, template: &str) -> Self {
        match Self::parse_template(&self.def, "location", template) {
            Ok(parsed) => self.edit(|d| d.location = Some(parsed)),
            Err(e) => self.invalid(e),
        }
    }

    /// [`Task::location`], reporting a bad template at once.
    ///
    /// # Errors
    /// As [`Task::try_target`].
    pub fn try_location(self, template: &str) -> Result<Self> {
        let parsed = Self::parse_template(&self.def, "location", template)?;
        Ok(self.edit(|d| d.location = Some(parsed)))
    }

    /// Attempts after the first one when the body fails.
    pub fn retries(self, retries: u32) -> Self {
        self.edit(|d| d.retries = retries)
    }

    /// The pause before each retry.
    pub fn retry_delay(self, delay: Duration) -> Self {
        self.edit(|d| d.retry_delay = delay)
    }

    /// Re-runs even when the target exists, and replaces it.
    pub fn refresh(self, on: bool) -> Self {
        self.edit(|d| d.refresh = on)
    }

    /// Adds a user key to this task's template context.
    pub fn context(self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        let value = value.into();
        self.edit(|d| d.context.insert(name, value))
    }

    /// Declares keys the flow will supply ([`crate::Flow::context`]) so that templates
    /// naming them pass the definition-time check.
    pub fn user_keys<S: Into<String>>(self, keys: impl IntoIterator<Item = S>) -> Self {
        self.edit(|d| d.user_keys.extend(keys.into_iter().map(Into::into)))
    }

    /// Caches the output under keys built by `policy`.
    pub fn cache_policy(self, policy: CachePolicy) -> Self {
        self.edit(|d| d.cache_policy = Some(policy))
    }

    /// How long a cache entry stays valid (default: forever).
    pub fn cache_expiration(self, expiration: Duration) -> Self {
        let expiration = chrono::Duration::from_std(expiration).unwrap_or(chrono::Duration::MAX);
        self.edit(|d| d.cache_expiration = Some(expiration))
    }

    /// `true`: never read the cache, always run and replace the entry. `false`: read
    /// the cache even under `CAIRN__TASKS__REFRESH_CACHE=true`.
    pub fn refresh_cache(self, on: bool) -> Self {
        self.edit(|d| d.refresh_cache = Some(on))
    }

    /// What a failing cache store does to this task. A cache is an optimization: by
    /// default (`false`) a cache record that cannot be read (the store fails after its
    /// retries) is a logged miss and the body runs, and one that cannot be written is
    /// a logged warning and the computed value is returned. `true` fails the task run
    /// instead. The task's setting wins over its flow's
    /// ([`Flow::strict_cache`](crate::Flow::strict_cache)), which wins over
    /// `[tasks] strict_cache` / `CAIRN__TASKS__STRICT_CACHE`. Targets and checkpoints
    /// are outputs, not caches: one that cannot be published always fails the run.
    ///
    /// ```
    /// let strict = cairn::Task::infallible("double", |x: i64| async move { 2 * x })
    ///     .cache_policy(cairn::cache::INPUTS)
    ///     .strict_cache(true);
    /// # let _ = strict;
    /// ```
    pub fn strict_cache(self, on: bool) -> Self {
        self.edit(|d| d.strict_cache = Some(on))
    }

    /// The store for this task's cache records (Prefect's `result_storage`): an S3 or
    /// GCS store shares one cache between machines.
    pub fn result_storage(self, store: ResultStore) -> Self {
        self.edit(|d| d.cache_store = Some(store))
    }

    /// A key shared by every task and flow that names it, in place of the task's own
    /// identity (Prefect 1's `cache_key`).
    pub fn cache_key(self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.edit(|d| d.cache_key = Some(key))
    }

    /// Keeps this task's cache entries apart from other namespaces (Flyte's project
    /// and domain), e.g. `"etl/production"`.
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let namespace: Arc<str> = Arc::from(namespace.into());
        self.edit(|d| d.namespace = Some(namespace))
    }

    /// Runs identical concurrent calls once — in this process, and across processes
    /// and machines that share the cache store — and the others wait and take its
    /// result (Flyte's cache serialization).
    ///
    /// Across processes the run that computes holds a lease in the store
    /// (`leases/v1/<namespace>/<ab>/<key>`, see [`crate::cache::Reservation`]); waiters
    /// poll the record, and take the lease over only when its holder stopped renewing
    /// it for longer than the lease allows ([`Task::lease`]).
    pub fn serialize(self, on: bool) -> Self {
        self.edit(|d| d.serialize = on)
    }

    /// The lease time and renewal interval of `serialize` (default 30 s and 10 s).
    pub fn lease(self, config: LeaseConfig) -> Self {
        self.edit(|d| d.lease = config)
    }

    /// Whether hits are also served from this process's memory tier (default on).
    pub fn memory_tier(self, on: bool) -> Self {
        self.edit(|d| d.memory_tier = on)
    }

    /// The clock of this task's runs outside any flow (a flow's runs use the flow's,
    /// [`crate::Flow::clock`]): cache expiry, the memory tier's trust bound and the
    /// `date` of templates read it.
    pub fn clock(self, clock: Arc<dyn crate::Clock>) -> Self {
        self.edit(|d| d.clock = Some(clock))
    }

    /// The settings of this task's runs outside any flow (a flow's runs use the flow's,
    /// [`crate::Flow::settings`]); default [`crate::Settings::global`].
    pub fn settings(self, settings: crate::Settings) -> Self {
        self.edit(|d| d.settings = Some(Arc::new(settings)))
    }

    /// How long a memory-tier hit is served without asking the store whether the
    /// record was replaced (by `overwrite_cache` or `refresh_cache` in another
    /// process); after that, a hit costs a HEAD (a `stat` on the local disk) and a
    /// replaced record is read again. `Duration::ZERO` checks on every hit. Default:
    /// the setting `[cache] memory_tier_revalidate_after_ms`, else 1 s (see
    /// [`crate::cache::MemoryTier`]).
    pub fn memory_tier_revalidate_after(self, after: Duration) -> Self {
        self.edit(|d| d.memory_tier_revalidate_after = Some(after))
    }

    /// Prefect 1: cache the output for `duration`; with no validator, whatever the
    /// inputs ([`crate::cache::validators::duration_only`]).
    pub fn cache_for(self, duration: Duration) -> Self {
        let this = self.cache_expiration(duration);
        if this.def.cache_policy.is_none() {
            this.cache_policy(IDENTITY)
        } else {
            this
        }
    }

    /// Prefect 1: what else must match for a cached output to be used
    /// ([`crate::cache::validators`]).
    pub fn cache_validator(self, validator: CachePolicy) -> Self {
        self.cache_policy(validator)
    }

    /// Prefect 3's `persist_result`: `true` persists the task's results and caches them
    /// under [`crate::cache::DEFAULT`] (unless a cache policy is set), in the task's
    /// store or else the default one (`$CAIRN_HOME/storage`, `[results] store`);
    /// `false` turns caching and checkpointing off for the task.
    ///
    /// ```
    /// use cairn::{cache::{DEFAULT, INPUTS, NONE}, Task};
    /// let t = Task::infallible("t", |x: u8| async move { x }).inputs(["x"]);
    /// assert_eq!(t.clone().persist_result(true).cache_policy_info(), Some(&DEFAULT));
    /// assert_eq!(t.clone().cache_policy(INPUTS).persist_result(true).cache_policy_info(), Some(&INPUTS));
    /// assert_eq!(t.persist_result(false).cache_policy_info(), Some(&NONE));
    /// ```
    pub fn persist_result(self, on: bool) -> Self {
        if on {
            let this = self.checkpoint(true);
            match this.def.cache_policy {
                Some(_) => this,
                None => this.cache_policy(crate::cache::DEFAULT),
            }
        } else {
            self.checkpoint(false).cache_policy(crate::cache::NONE)
        }
    }

    /// The cache policy, when one is set.
    pub fn cache_policy_info(&self) -> Option<&CachePolicy> {
        self.def.cache_policy.as_ref()
    }

    /// Flyte: cache with a [`Cache`] object.
    pub fn cache(self, cache: Cache) -> Self {
        let serialize = cache.serialize;
        self.cache_policy(cache.policy()).serialize(serialize)
    }

    /// Flyte: the cache version (same as `cache_policy(SIGNATURE + INPUTS +
    /// Version(version))` when no policy is set; otherwise added to it).
    pub fn version(self, version: impl Into<String>) -> Self {
        let policy = match &self.def.cache_policy {
            Some(p) => p.clone() + CachePolicy::version(version),
            // An explicit version stands in for the task's source (Flyte): refining
            // the code keeps the cache until the version is bumped.
            None => Cache::new().version(version).policy(),
        };
        self.cache_policy(policy)
    }

    /// Runs the task with `input` and returns its output: inside a flow as part of the
    /// flow run, otherwise as a run of its own.
    ///
    /// # Errors
    /// [`TaskError`] when the run fails: the body's error after the last retry, a
    /// template or hashing error, or a store error.
    pub async fn call(&self, input: I) -> std::result::Result<O, TaskError> {
        crate::runner::run::execute_for_value(&self.def, input).await
    }

    fn ephemeral_scope(&self, id: &str) -> RunScope {
        RunScope::ephemeral(id, self.def.clock.clone(), self.def.settings.clone())
    }

    /// Runs the task with `input` and returns the whole run: state, value or error.
    pub async fn run(&self, input: I) -> TaskRun<O> {
        let scope = RunScope::current();
        crate::runner::run::execute(&self.def, input, scope, None).await
    }

    /// Runs the task once per input, sharing the work with every other process that
    /// maps the same inputs through the same store: each item's body runs once across
    /// all of them. Returns every item's run, in input order, once all are done.
    ///
    /// Each item is keyed by the task's cache policy (required) and guarded by a lease
    /// in the store, as with [`Task::serialize`]: a worker that finds an item leased by
    /// another moves on to its next item and comes back for it later, taking it over if
    /// its worker died (its lease went stale). Items finished elsewhere come back as
    /// `Cached`. Items run one at a time in each worker; start more workers (processes
    /// or machines, under one flow run id: [`crate::Flow::run_id`] or `CAIRN_RUN_ID`)
    /// to go faster.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cairn::{cache::INPUTS, ResultStore, State, Task};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let square = Task::infallible("square", |x: u64| async move { x * x })
    ///     .cache_policy(INPUTS)
    ///     .result(ResultStore::local(dir.path())?);
    /// // Other processes running this line against the same directory share the items.
    /// let runs = square.map_shared(0..4).await;
    /// let values: Vec<u64> = runs.iter().map(|r| *r.value().unwrap()).collect();
    /// assert_eq!(values, [0, 1, 4, 9]);
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub async fn map_shared(&self, inputs: impl IntoIterator<Item = I>) -> Vec<TaskRun<O>> {
        let scope =
            RunScope::current().unwrap_or_else(|| Arc::new(self.ephemeral_scope(&new_id())));
        let inputs: Vec<I> = inputs.into_iter().collect();
        let indices: Vec<u64> = inputs
            .iter()
            .map(|_| scope.next_index(&self.def.name))
            .collect();
        let mut runs: Vec<Option<TaskRun<O>>> = inputs.iter().map(|_| None).collect();
        let mut pause = Duration::from_millis(50);
        loop {
            let mut progressed = false;
            for (i, input) in inputs.iter().enumerate() {
                if runs[i].is_some() {
                    continue;
                }
                let run = crate::runner::run::try_execute(
                    &self.def,
                    input.clone(),
                    scope.clone(),
                    indices[i],
                )
                .await;
                if run.is_some() {
                    runs[i] = run;
                    progressed = true;
                }
            }
            if runs.iter().all(Option::is_some) {
                return runs.into_iter().flatten().collect();
            }
            // Every item left is being run elsewhere: wait, then look again.
            if progressed {
                pause = Duration::from_millis(50);
            } else {
                let jitter = rand::random::<f64>() * 0.5 + 0.75;
                tokio::time::sleep(pause.mul_f64(jitter)).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// Runs the task once per input, concurrently, and returns the runs in input order.
    pub async fn map(&self, inputs: impl IntoIterator<Item = I>) -> Vec<TaskRun<O>> {
        // Outside a flow, the runs of one map share one ephemeral flow run, so their
        // map indices count up.
        let scope =
            RunScope::current().unwrap_or_else(|| Arc::new(self.ephemeral_scope(&new_id())));
        // Each item's run is boxed when it starts and freed when it ends: an item waiting
        // to start, or done, holds its input or its run, not room for a whole run.
        let runs = inputs.into_iter().map(|input| {
            let scope = scope.clone();
            async move {
                Box::pin(crate::runner::run::execute(
                    &self.def,
                    input,
                    Some(scope),
                    None,
                ))
                .await
            }
        });
        futures::future::join_all(runs).await
    }
}

/// Support for `#[cairn::task]`.
#[doc(hidden)]
pub mod private {
    use super::*;

    /// A task whose definition failed: every call fails with `error`.
    pub fn invalid_task<I: TaskInput, O: TaskOutput>(name: &str, error: Error) -> Task<I, O> {
        let error = Arc::new(error);
        let message = error.to_string();
        tracing::error!("{message}");
        Task::new(name, move |_: I| {
            let message = message.clone();
            async move { Err::<O, BoxError>(message.into()) }
        })
        .edit(|d| d.invalid = Some(error))
    }
}
