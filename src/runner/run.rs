//! One task run, from Pending to a final state (the steps of DESIGN.md's "One task
//! run").

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::Serialize;
use smallvec::SmallVec;

use crate::backend::{Error, ErrorKind, Key, PutMode, PutOptions, ReadWants, Result};
use crate::cache::hashing::{Digest, HashError, InputPart, KeyHasher, ListId};
use crate::cache::memory::{TierHit, TierKey, TierKeyRef, DEFAULT_REVALIDATE_AFTER};
use crate::cache::{
    lease_location, Attempt, CachePolicy, Lease, LeaseHolder, MemoryTier, Reservation,
};
use crate::runner::clock::Reading;
use crate::runner::definition::{type_name_of, TaskDef, TaskInput, TaskOutput};
use crate::runner::error::{error_chain, TaskError, TaskErrorKind};
use crate::runner::inputs::{visit_inputs, InputVisitor};
use crate::runner::scope::RunScope;
use crate::runner::state::State;
use crate::runner::task_run::{CacheRef, RunId, TaskRun, TaskRunInfo};
use crate::runner::thread_copy::thread_copy;
use crate::store::record::RecordInfo;
use crate::{Context, ResultStore};

/// Everything known about a run while it is in progress.
struct Progress<'a, I, O> {
    def: &'a TaskDef<I, O>,
    scope: &'a RunScope,
    input: &'a I,
    info: TaskRunInfo,
    context: Option<Context>,
    /// A shared map's item: when another worker holds the item's lease, give up
    /// instead of waiting ([`Progress::busy`] then says so).
    try_once: bool,
    busy: bool,
    /// The cache key, when [`Progress::fresh_tier_hit`] derived it and found no value
    /// to serve: the lookup takes it instead of deriving it again.
    key: Option<std::result::Result<Option<Digest>, TaskError>>,
    /// [`Progress::fresh_tier_hit`] found the memory tier holding nothing for the key:
    /// the lookup goes straight to the store.
    tier_missed: bool,
}

/// The key components a task's definition alone decides, and the id that stands for
/// them.
type StaticParts<'a> = (&'a [(String, Digest)], ListId);

/// A cache lookup that missed: where the fresh value goes.
struct CacheSlot {
    store: ResultStore,
    location: String,
    tier_key: TierKey,
    replace: bool,
    components: BTreeMap<String, String>,
    /// The lease on the key in the store, when `serialize` holds across processes.
    lease: Option<Lease>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// The run as its caller sees it, its record kept in the flow run too.
fn task_run<O>(
    scope: &RunScope,
    info: TaskRunInfo,
    result: std::result::Result<O, TaskError>,
) -> TaskRun<O> {
    if scope.keeps_records() {
        scope.record(info.clone());
    }
    TaskRun {
        info: Arc::new(info),
        result,
    }
}

pub(crate) async fn execute<I: TaskInput, O: TaskOutput>(
    def: &Arc<TaskDef<I, O>>,
    input: I,
    scope: Option<Arc<RunScope>>,
    map_index: Option<u64>,
) -> TaskRun<O> {
    run_once(def, input, scope, map_index, false, task_run)
        .await
        .expect("a run that may wait always finishes")
}

/// [`execute`] for a caller that wants only the value or error ([`crate::Task::call`]).
/// Inside a flow run, a hit the memory tier serves as it is is served first, on the
/// flow run's scope as lent (see [`scoped_tier_hit`]).
pub(crate) async fn execute_for_value<I: TaskInput, O: TaskOutput>(
    def: &Arc<TaskDef<I, O>>,
    input: I,
) -> std::result::Result<O, TaskError> {
    if let Some(Some(value)) = RunScope::with_current(|scope| scoped_tier_hit(def, &input, scope)) {
        return Ok(value);
    }
    // Only the value or error: the record goes to the flow run, not copied.
    let finish = |scope: &RunScope, info, result| {
        scope.record(info);
        result
    };
    run_once(def, input, RunScope::current(), None, false, finish)
        .await
        .expect("a run that may wait always finishes")
}

/// A call inside a flow run whose value the memory tier serves as it is, on the flow
/// run's scope as lent by the caller (no count of it taken and dropped), its map index
/// given as its record is kept, in one visit to the flow run's list. A policy with key
/// functions is not served here: they may read the map index.
///
/// Taking the index as the run finishes gives the index it would have had at its
/// start: nothing between the two awaits, so no other call of this thread comes
/// between them. A call not served here looks in the tier again under the scope it
/// then holds: its key, just derived, is found in the thread's key memo, and the call
/// ahead is a store read or a miss. (Handing the key on would make every call's future
/// larger by the key's room.)
fn scoped_tier_hit<I: TaskInput, O: TaskOutput>(
    def: &TaskDef<I, O>,
    input: &I,
    scope: &RunScope,
) -> Option<O> {
    if !may_serve_fresh_from_tier(def) || !def.cache_policy.as_ref()?.key_functions().is_empty() {
        return None;
    }
    let mut progress = Progress::new(def, scope, input, RunId::new(), 0, false);
    let value = progress.fresh_tier_hit()?;
    progress.enter(State::Cached);
    progress.log_finished();
    scope.record_next(progress.info, &def.name);
    Some(value)
}

/// Whether the definition alone lets [`Progress::fresh_tier_hit`] serve its runs (no
/// target, no lease, the tier on, nothing wrong with it): asked first by the paths that
/// try the tier before a run's own scope, so that a task the tier never serves costs
/// them nothing.
fn may_serve_fresh_from_tier<I, O>(def: &TaskDef<I, O>) -> bool {
    def.invalid.is_none()
        && def.problem.is_none()
        && def.target.is_none()
        && def.memory_tier
        && !def.serialize
}

/// One item of a shared map: runs it unless another worker holds its lease, in which
/// case `None` (the item is tried again later).
pub(crate) async fn try_execute<I: TaskInput, O: TaskOutput>(
    def: &Arc<TaskDef<I, O>>,
    input: I,
    scope: Arc<RunScope>,
    map_index: u64,
) -> Option<TaskRun<O>> {
    run_once(def, input, Some(scope), Some(map_index), true, task_run).await
}

/// Runs the task once and hands its record and outcome to `finish` (which keeps the
/// record where the caller wants it, without moving it through a return value first);
/// `None` when `try_once` and another worker holds the item.
async fn run_once<I: TaskInput, O: TaskOutput, R>(
    def: &Arc<TaskDef<I, O>>,
    input: I,
    scope: Option<Arc<RunScope>>,
    map_index: Option<u64>,
    try_once: bool,
    finish: impl FnOnce(&RunScope, TaskRunInfo, std::result::Result<O, TaskError>) -> R,
) -> Option<R> {
    let id = RunId::new();
    let mut looked = None;
    let scope = match scope {
        Some(scope) => scope,
        None => match ephemeral_tier_hit(def, &input, id, try_once) {
            Ok((scope, info, value)) => return Some(finish(&scope, info, Ok(value))),
            Err(seen) => {
                looked = seen;
                Arc::new(RunScope::ephemeral(
                    &id.hyphenated(),
                    def.clock.clone(),
                    def.settings.clone(),
                ))
            }
        },
    };
    let map_index = map_index.unwrap_or_else(|| scope.next_index(&def.name));
    let mut progress = Progress::new(def, &scope, &input, id, map_index, try_once);
    let served = match looked {
        // The tier was asked just now, under the same key: not again.
        Some(TierLooked { key, tier_missed }) => {
            progress.key = Some(Ok(Some(key)));
            progress.tier_missed = tier_missed;
            None
        }
        None => progress.fresh_tier_hit(),
    };
    let result = match served {
        Some(value) => Ok((value, State::Cached)),
        None => progress.run().await,
    };
    if progress.busy {
        return None;
    }
    let result = match result {
        Ok((value, state)) => {
            progress.enter(state);
            Ok(value)
        }
        Err(e) => {
            progress.enter(State::failed(e.to_string()));
            Err(e)
        }
    };
    if let Some(write) = progress.note_transition() {
        write.await;
    }
    progress.log_finished();
    Some(finish(&scope, progress.info, result))
}

/// What [`ephemeral_tier_hit`] learnt of a key the tier did not serve as it is.
struct TierLooked {
    key: Digest,
    /// The tier held nothing for the key.
    tier_missed: bool,
}

/// A call outside a flow whose value the memory tier serves as it is, found without
/// the scope of its own that such a call is otherwise given (a new run id, the date,
/// its counters and records, made and dropped on every call: about half of such a
/// hit). The thread's [`RunScope::ephemeral_template`] stands in for it; it differs
/// from a new one only in its run id and date. Key functions see both in their
/// context, so a policy with any is not served here; nor is one that reads the run id
/// (no run ever wrote under the template's), nor a task with a clock or settings of
/// its own. Not served, it gives the key it derived, if it got that far: the same key
/// under the call's own scope.
fn ephemeral_tier_hit<I: TaskInput, O: TaskOutput>(
    def: &TaskDef<I, O>,
    input: &I,
    id: RunId,
    try_once: bool,
) -> std::result::Result<(Arc<RunScope>, TaskRunInfo, O), Option<TierLooked>> {
    let Some(policy) = def.cache_policy.as_ref() else {
        return Err(None);
    };
    if !may_serve_fresh_from_tier(def)
        || def.clock.is_some()
        || def.settings.is_some()
        || policy.uses_run_id()
        || !policy.key_functions().is_empty()
    {
        return Err(None);
    }
    let scope = RunScope::ephemeral_template();
    // A new ephemeral scope's first index.
    let mut progress = Progress::new(def, &scope, input, id, 0, try_once);
    let Some(value) = progress.fresh_tier_hit() else {
        return Err(progress.looked());
    };
    progress.enter(State::Cached);
    progress.log_finished();
    let info = progress.info;
    Ok((scope, info, value))
}

impl<'a, I: TaskInput, O: TaskOutput> Progress<'a, I, O> {
    fn new(
        def: &'a TaskDef<I, O>,
        scope: &'a RunScope,
        input: &'a I,
        id: RunId,
        map_index: u64,
        try_once: bool,
    ) -> Self {
        Progress {
            def,
            scope,
            input,
            info: TaskRunInfo::new(thread_copy(&def.name), id, map_index),
            context: None,
            try_once,
            busy: false,
            key: None,
            tier_missed: false,
        }
    }

    /// What a look in the memory tier that did not serve found: the key, if derived.
    fn looked(&self) -> Option<TierLooked> {
        match self.key {
            Some(Ok(Some(key))) => Some(TierLooked {
                key,
                tier_missed: self.tier_missed,
            }),
            _ => None,
        }
    }

    fn log_finished(&self) {
        tracing::info!(
            "Task run '{}' - Finished in state {}",
            self.info.name(),
            self.info.state()
        );
    }

    fn enter(&mut self, state: State) {
        self.info.enter(state);
    }

    fn error(
        &self,
        kind: TaskErrorKind,
        context: Option<String>,
        source: impl Into<crate::runner::error::BoxError>,
    ) -> TaskError {
        TaskError::new(self.info.name(), kind, context, source)
    }

    async fn run(&mut self) -> std::result::Result<(O, State), TaskError> {
        if let Some(error) = self.def.invalid.as_ref().or(self.def.problem.as_ref()) {
            return Err(self.error(TaskErrorKind::Definition, None, error.to_string()));
        }
        self.enter(State::Running);
        if let Some(write) = self.note_transition() {
            write.await;
        }

        // Step 1–2: the target.
        let target = match &self.def.target {
            Some(template) => {
                let context = self.context(1)?;
                let location = template.render(context).map_err(|e| {
                    self.error(
                        TaskErrorKind::Template,
                        // The template's error names the template.
                        Some("target".into()),
                        e,
                    )
                })?;
                let store = self.store().await?;
                if !(self.scope.overwrite || self.def.refresh) {
                    match store.read::<O>(&location).await {
                        Ok(value) => {
                            self.info.location = Some(location.into());
                            return Ok((value, State::Cached));
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) if e.kind() == ErrorKind::Serialization => {
                            return Err(self.error(
                                TaskErrorKind::Store,
                                Some(format!(
                                    "target '{}' exists but cannot be read as {}",
                                    crate::backend::shorten(&location, 160),
                                    type_name_of::<O>()
                                )),
                                e,
                            ))
                        }
                        Err(e) => {
                            return Err(self.error(
                                TaskErrorKind::Store,
                                Some(format!(
                                    "cannot look for target '{}'",
                                    crate::backend::shorten(&location, 160)
                                )),
                                e,
                            ))
                        }
                    }
                }
                Some((store, location))
            }
            None => None,
        };

        // Resuming: a task run this flow run recorded as completed is Cached.
        let resume_at = self.resume_location();
        if let (true, Some(location)) = (self.scope.resuming, &resume_at) {
            let store = self.store().await?;
            match Box::pin(store.read_record::<O>(location)).await {
                Ok(record) => {
                    self.info.location = Some(location.as_str().into());
                    return Ok((record.value, State::Cached));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::NotFound | ErrorKind::Corrupt | ErrorKind::Serialization
                    ) => {}
                Err(e) => {
                    return Err(self.error(
                        TaskErrorKind::Store,
                        Some(format!("cannot read the recorded result '{location}'")),
                        e,
                    ))
                }
            }
        }

        // Step 3–4: the cache.
        let mut slot = None;
        let def = self.def;
        if self.try_once && def.cache_policy.as_ref().is_none_or(CachePolicy::is_none) {
            return Err(self.error(
                TaskErrorKind::Definition,
                None,
                "a shared map needs a cache policy: its key is how workers know each item",
            ));
        }
        if let Some(policy) = def.cache_policy.as_ref().filter(|p| !p.is_none()) {
            match self.lookup(policy).await? {
                Lookup::Hit(value) => return Ok((value, State::Cached)),
                Lookup::Miss(s) => slot = s,
            }
        }

        // A checkpoint that could never be written fails the run before the body runs,
        // not after (a location over the key length limit).
        if target.is_none() && self.checkpointing() {
            if let Err(e) = self.checkpoint_location() {
                if let Some(lease) = slot.as_mut().and_then(|s| s.lease.take()) {
                    Box::pin(lease.release()).await;
                }
                return Err(e);
            }
        }

        // Steps 5–6, then the lease (if any) is given up, whatever the outcome: waiters
        // either find the record or run at once.
        let lease = slot.as_mut().and_then(|s| s.lease.take());
        // Its writes are boxed, as are the other rarely taken or miss-only steps (the
        // lease, the run's history, a resumed record): a hit's future does not carry
        // their room, which halves what every call moves and touches (3,152 bytes to
        // about 1,500 for a task of a `u64`). Each box is small enough for the
        // allocator's per-thread cache (a miss boxing the whole step, 1,168 bytes, cost
        // 1,900 instructions more in `malloc` than these).
        let mut outcome = self.compute_and_publish(target, slot, lease.as_ref()).await;
        if let Some(lease) = lease {
            Box::pin(lease.release()).await;
        }
        if let (Ok((value, _)), Some(location)) = (&mut outcome, resume_at) {
            self.record_result(&location, value).await;
        }
        outcome
    }

    /// Where this task run's result is recorded for resuming its flow run, when the
    /// flow run persists and the inputs can be hashed.
    fn resume_location(&self) -> Option<String> {
        if !self.writes_history() {
            return None;
        }
        let identity =
            crate::runner::resume::identity(&self.def.name, self.input, &self.def.input_names)?;
        Some(crate::runner::resume::result_location(
            self.scope,
            &self.def.name,
            &identity,
        ))
    }

    /// Writes the state just entered as a write-once object of the flow run's history,
    /// when the flow run persists. It is written before the run goes on, so that a run
    /// killed in its body has left its `running` object behind.
    ///
    /// The write is boxed, and made only when the flow run persists: otherwise every
    /// run's future would carry the room of that write, and every state a call of its
    /// own. Awaited where it is made (`if let Some(write) = ... { write.await }`).
    fn note_transition(&self) -> Option<Pin<Box<impl Future<Output = ()> + '_>>> {
        if !self.writes_history() {
            return None;
        }
        Some(Box::pin(self.write_transition()))
    }

    /// [`Progress::note_transition`]'s write.
    async fn write_transition(&self) {
        let Some(identity) =
            crate::runner::resume::identity(&self.def.name, self.input, &self.def.input_names)
        else {
            return;
        };
        let Ok(store) = self.scope.default_store().await else {
            return; // the run itself reports a store that cannot be opened
        };
        let seq = self.info.states().len() - 1;
        let location = crate::runner::resume::transition_location(
            self.scope,
            &self.def.name,
            &identity,
            self.info.id(),
            seq,
            self.info.state(),
        );
        let transition = crate::runner::resume::Transition {
            task: self.def.name.to_string(),
            task_run_id: self.info.id().to_owned(),
            task_run_name: self.info.name().to_owned(),
            map_index: self.info.map_index,
            state: self.info.state().to_string(),
            attempts: self.info.attempts,
            at: self.scope.clock.now(),
            host: crate::cache::host_name(),
            pid: std::process::id(),
        };
        crate::runner::resume::record_transition(store, location, transition).await;
    }

    /// Records a completed run's result, so that a resumed flow run finds it.
    async fn record_result(&self, location: &str, value: &mut O) {
        let info = RecordInfo {
            created: Some(self.scope.clock.now()),
            task: Some(self.def.name.to_string()),
            output_type: Some(std::any::type_name::<O>().to_owned()),
            ..RecordInfo::default()
        };
        let result = match self.store().await {
            Ok(store) => store
                .write_record_lending(location, value, info, PutMode::Create)
                .await
                .map(|_| ())
                .or_else(|e| {
                    if e.kind() == ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e.to_string())
                    }
                }),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            tracing::warn!(
                "Task run '{}' - could not record its result for resuming: {e}",
                self.info.name()
            );
        }
    }

    async fn compute_and_publish(
        &mut self,
        target: Option<(ResultStore, String)>,
        slot: Option<Box<CacheSlot>>,
        lease: Option<&Lease>,
    ) -> std::result::Result<(O, State), TaskError> {
        // Step 5: the body, with retries.
        let mut value = self.attempts().await?;

        // Step 6: publish.
        if let Some((store, location)) = target {
            let mode = if self.scope.overwrite || self.def.refresh {
                PutMode::Overwrite
            } else {
                PutMode::Create
            };
            match Box::pin(store.write_at_lending(&location, &mut value, mode)).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    // Another run published first: what the store holds is the output,
                    // for this caller as for every other.
                    tracing::debug!(
                        "Task run '{}' - target '{location}' was published by another run first",
                        self.info.name()
                    );
                    value = store.read::<O>(&location).await.map_err(|e| {
                        self.error(
                            TaskErrorKind::Store,
                            Some(format!(
                                "target '{location}' was published by another run, but cannot be read back"
                            )),
                            e,
                        )
                    })?;
                }
                Err(e) => {
                    return Err(self.error(
                        TaskErrorKind::Store,
                        Some(format!("cannot publish target '{location}'")),
                        e,
                    ))
                }
            }
            self.info.location = Some(location.into());
        } else if self.checkpointing() {
            Box::pin(self.checkpoint(&mut value)).await?;
        }
        if let Some(slot) = slot {
            let lost = lease.is_some_and(Lease::is_lost);
            if let Some(published) = Box::pin(self.write_record(slot, &mut value, lost)).await? {
                value = published;
            }
        }
        Ok((value, State::Completed))
    }

    /// The template context of this run, built on first use.
    fn context(&mut self, attempt: u32) -> std::result::Result<&Context, TaskError> {
        if self.context.is_none() {
            let mut context = self
                .scope
                .base_context()
                .map_err(|e| self.error(TaskErrorKind::Template, None, e))?
                .clone();
            for (k, v) in self.def.context.iter() {
                context.insert(k, v.clone());
            }
            context.insert("task_name", self.def.name.to_string());
            context.insert("task_run_id", self.info.id().to_owned());
            context.insert("map_index", self.info.map_index);
            // Only an input a template names must be a template value: any other is
            // left out of the context when it cannot be one (a map with tuple keys).
            let named: Vec<&str> = [&self.def.target, &self.def.location]
                .into_iter()
                .flatten()
                .flat_map(|t| t.names())
                .map(|n| n.split(['.', '[']).next().unwrap_or(n))
                .collect();
            struct AddInputs<'c> {
                context: &'c mut Context,
                named: &'c [&'c str],
            }
            impl InputVisitor for AddInputs<'_> {
                fn visit<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
                    match self.context.insert_input(name, value) {
                        Err(e) if self.named.contains(&name) => Err(e),
                        _ => Ok(()),
                    }
                }
            }
            visit_inputs(
                self.input,
                &self.def.input_names,
                &mut AddInputs {
                    context: &mut context,
                    named: &named,
                },
            )
            .map_err(|e| self.error(TaskErrorKind::Template, None, e))?;
            self.context = Some(context);
        }
        let context = self.context.as_mut().expect("set above");
        context.insert("task_run_count", attempt as u64);
        Ok(context)
    }

    fn checkpointing(&self) -> bool {
        self.def
            .checkpoint
            .or(self.scope.checkpointing)
            .or(self.scope.settings.checkpointing)
            .unwrap_or(false)
    }

    /// `store` with the task's serializer, if it names one.
    fn with_task_serializer(&self, store: ResultStore) -> ResultStore {
        match self.def.serializer {
            Some(s) => store.with_serializer(s),
            None => store,
        }
    }

    /// The store for targets and checkpoints.
    async fn store(&self) -> std::result::Result<ResultStore, TaskError> {
        let store = match &self.def.store {
            Some(store) => store.clone(),
            None => self
                .scope
                .default_store()
                .await
                .map_err(|e| self.error(TaskErrorKind::Store, Some("no store".into()), e))?,
        };
        Ok(self.with_task_serializer(store))
    }

    /// The store for cache records: borrowed from the task or the flow run when it needs
    /// no serializer of the task's own, so that a hit copies no store (its shared parts
    /// would otherwise be counted up and down by every hit on every core).
    async fn cache_store(&self) -> std::result::Result<Cow<'a, ResultStore>, TaskError> {
        let def: &'a TaskDef<I, O> = self.def;
        let scope: &'a RunScope = self.scope;
        let store = match (&def.cache_store, &def.store) {
            (Some(store), _) | (None, Some(store)) => Cow::Borrowed(store),
            (None, None) => match scope.cached_default_store() {
                Some(store) => Cow::Borrowed(store),
                None => Cow::Owned(scope.default_cache_store().await.map_err(|e| {
                    self.error(TaskErrorKind::Store, Some("no cache store".into()), e)
                })?),
            },
        };
        Ok(match def.serializer {
            Some(s) => Cow::Owned(store.into_owned().with_serializer(s)),
            None => store,
        })
    }

    async fn attempts(&mut self) -> std::result::Result<O, TaskError> {
        let mut attempt = 1;
        loop {
            self.info.attempts = attempt;
            match (self.def.body)(self.input.clone()).await {
                Ok(value) => {
                    if attempt > 1 && self.checkpointing() {
                        // The run no longer needs resuming.
                        Box::pin(self.forget_inputs()).await;
                    }
                    return Ok(value);
                }
                Err(e) if attempt <= self.def.retries => {
                    attempt += 1;
                    self.enter(State::Retrying { attempt });
                    if let Some(write) = self.note_transition() {
                        write.await;
                    }
                    tracing::warn!(
                        "Task run '{}' - Attempt {} failed: {}; retry {}/{} in {:?}",
                        self.info.name(),
                        attempt - 1,
                        error_chain(&*e),
                        attempt - 1,
                        self.def.retries,
                        self.def.retry_delay
                    );
                    if self.checkpointing() {
                        Box::pin(self.persist_inputs(&State::Retrying { attempt })).await;
                    }
                    if !self.def.retry_delay.is_zero() {
                        tokio::time::sleep(self.def.retry_delay).await;
                    }
                    self.enter(State::Running);
                    if let Some(write) = self.note_transition() {
                        write.await;
                    }
                }
                Err(e) => {
                    let attempts = attempt;
                    let error = self.error(
                        TaskErrorKind::Body,
                        (attempts > 1).then(|| format!("failed after {attempts} attempts")),
                        e,
                    );
                    if self.checkpointing() {
                        Box::pin(self.persist_inputs(&State::failed(error.to_string()))).await;
                    }
                    return Err(error);
                }
            }
        }
    }

    fn run_prefix(&self) -> String {
        format!(
            "runs/v1/{}/{}/{}/{}",
            self.scope.flow_name, self.scope.run_id, self.def.name, self.info.map_index
        )
    }

    /// Stores the inputs and the state of a run that will be retried or has failed, so
    /// that it can be resumed from another process.
    async fn persist_inputs(&self, state: &State) {
        #[derive(Serialize)]
        struct Pending<'a, I> {
            task: &'a str,
            task_run_id: &'a str,
            task_run_name: &'a str,
            state: String,
            attempts: u32,
            inputs: &'a I,
        }
        let result = async {
            let store = self.store().await.map_err(|e| e.to_string())?;
            let location = format!("{}.inputs", self.run_prefix());
            let record = Pending {
                task: &self.def.name,
                task_run_id: self.info.id(),
                task_run_name: self.info.name(),
                state: state.to_string(),
                attempts: self.info.attempts,
                inputs: self.input,
            };
            store
                .write_record(
                    &location,
                    &serde_json::to_value(&record).map_err(|e| e.to_string())?,
                    RecordInfo {
                        created: Some(self.scope.clock.now()),
                        task: Some(self.def.name.to_string()),
                        output_type: Some(std::any::type_name::<I>().to_owned()),
                        ..RecordInfo::default()
                    },
                    PutMode::Overwrite,
                )
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(
                "Task run '{}' - could not persist its inputs: {e}",
                self.info.name()
            );
        }
    }

    async fn forget_inputs(&self) {
        let location = format!("{}.inputs", self.run_prefix());
        let result = match self.store().await {
            Ok(store) => store.delete(&location).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            tracing::warn!(
                "Task run '{}' - could not remove its persisted inputs: {e}",
                self.info.name()
            );
        }
    }

    /// Where this run's checkpoint goes, rendered and checked as a store key.
    fn checkpoint_location(&mut self) -> std::result::Result<String, TaskError> {
        match self.def.location.clone() {
            Some(template) => {
                let attempts = self.info.attempts.max(1);
                template
                    .render(self.context(attempts)?)
                    .map_err(|e| self.error(TaskErrorKind::Template, Some("location".into()), e))
            }
            None => {
                let location = self.run_prefix();
                crate::backend::Key::parse(location.as_str()).map_err(|e| {
                    self.error(
                        TaskErrorKind::Definition,
                        Some("the checkpoint location of this task and flow".into()),
                        e,
                    )
                })?;
                Ok(location)
            }
        }
    }

    async fn checkpoint(&mut self, value: &mut O) -> std::result::Result<(), TaskError> {
        let store = self.store().await?;
        let result = match self.def.location.is_some() {
            true => {
                let location = self.checkpoint_location()?;
                let written = store
                    .write_at_lending(&location, value, PutMode::Overwrite)
                    .await;
                (location, written.map(|_| ()))
            }
            false => {
                let location = self.run_prefix();
                let info = RecordInfo {
                    created: Some(self.scope.clock.now()),
                    task: Some(self.def.name.to_string()),
                    output_type: Some(std::any::type_name::<O>().to_owned()),
                    ..RecordInfo::default()
                };
                let written = store
                    .write_record_lending(&location, value, info, PutMode::Overwrite)
                    .await;
                (location, written.map(|_| ()))
            }
        };
        match result {
            (location, Ok(())) => {
                self.info.location = Some(location.into());
                Ok(())
            }
            (location, Err(e)) => Err(self.error(
                TaskErrorKind::Store,
                Some(format!("cannot write checkpoint '{location}'")),
                e,
            )),
        }
    }

    /// The key components that depend only on the task's definition, computed once.
    fn static_parts(
        &self,
        policy: &CachePolicy,
    ) -> std::result::Result<StaticParts<'a>, TaskError> {
        let def: &'a TaskDef<I, O> = self.def;
        let derived = def.derived.get_or_init(|| {
            let build = || -> std::result::Result<KeyHasher, Error> {
                let mut key = KeyHasher::new();
                match &def.cache_key {
                    Some(shared) => key.component_value("cache_key", shared)?,
                    None => key.component_value("task", &*def.name)?,
                };
                if policy.uses_task_source() {
                    let source = def.source.as_deref().ok_or_else(|| Error::Config {
                        message: format!(
                            "task '{}': the cache policy {policy} uses TASK_SOURCE, but the \
                             task's source is unknown; define it with #[cairn::task], give \
                             it with Task::task_source, or use a Version instead",
                            def.name
                        ),
                    })?;
                    key.component("task_source", |h| {
                        h.str(source);
                        h.done()
                    })?;
                }
                if policy.uses_signature() {
                    let signature = match &def.signature {
                        Some(s) => s.clone(),
                        None => crate::runner::definition::Signature::of::<I, O>(&def.input_names),
                    };
                    key.component_value("signature", &(&*def.name, &signature))?;
                }
                if let Some(v) = policy.version_str() {
                    key.component_value("version", v)?;
                }
                if let Some(s) = policy.salt_str() {
                    key.component_value("salt", s)?;
                }
                if policy.component_names().contains(&"identity") {
                    key.component_value("identity", &())?;
                }
                Ok(key)
            };
            build()
                .map(|key| {
                    let parts = key
                        .components()
                        .iter()
                        .map(|(n, d)| (n.clone(), *d))
                        .collect();
                    // Derived anew after any change to the definition: a new id.
                    (parts, ListId::new())
                })
                .map_err(Arc::new)
        });
        match derived {
            Ok((parts, id)) => Ok((parts, *id)),
            Err(e) => Err(self.error(TaskErrorKind::Definition, None, e.to_string())),
        }
    }

    fn namespace(&self) -> Option<&str> {
        self.def
            .namespace
            .as_deref()
            .or(self.scope.namespace.as_deref())
    }

    /// This thread's copy of the namespace of cache records and leases (`default`
    /// unless one is set).
    fn namespace_copy(&self) -> Arc<str> {
        thread_local! {
            static DEFAULT: Arc<str> = Arc::from("default");
        }
        match self
            .def
            .namespace
            .as_ref()
            .or(self.scope.namespace.as_ref())
        {
            Some(namespace) => thread_copy(namespace),
            None => DEFAULT.with(Arc::clone),
        }
    }

    /// The cache record the run looks up (once its key is known).
    fn cache_record(&self) -> &str {
        self.info.cache_record().unwrap_or_default()
    }

    fn cache_key(
        &mut self,
        policy: &CachePolicy,
    ) -> std::result::Result<Option<Digest>, TaskError> {
        let hash_error =
            |this: &Self, e: HashError| this.error(TaskErrorKind::Hash, None, Error::from(e));
        let (statics, statics_id) = self.static_parts(policy)?;
        let mut key_fn_parts: Vec<(String, Digest)> = Vec::new();
        // The components a run adds to its definition's; kept on the stack for the
        // usual handful of parts: no allocation per call.
        let mut added: SmallVec<[(&str, Digest); 4]> = SmallVec::new();
        // The namespace may come from the flow, so it is added per run.
        if let Some(ns) = self.namespace() {
            added.push(("namespace", crate::cache::hashing::hash_str(ns)));
        }
        if policy.uses_run_id() {
            added.push(("run_id", self.scope.run_id_digest()));
        }
        if policy.uses_parameters() {
            let digests = self
                .scope
                .parameter_digests()
                .map_err(|e| hash_error(self, e))?;
            let selected: BTreeMap<&String, &Digest> = digests
                .iter()
                .filter(|(name, _)| policy.parameter_included(name))
                .collect();
            let digest =
                crate::cache::hashing::hash_value(&selected).map_err(|e| hash_error(self, e))?;
            added.push(("flow_parameters", digest));
        }
        // Each input as its short encoding or its digest: a short input seen lately is
        // never hashed (see `InputPart`).
        let mut inputs: SmallVec<[(Cow<'a, str>, InputPart); 4]> = SmallVec::new();
        if policy.uses_inputs() {
            struct AddHashes<'k, 'a> {
                inputs: &'k mut SmallVec<[(Cow<'a, str>, InputPart); 4]>,
                /// The task's input names: a visited name found here is borrowed.
                names: &'a [String],
                policy: &'k CachePolicy,
                error: Option<HashError>,
            }
            impl<'a> InputVisitor for AddHashes<'_, 'a> {
                fn visit<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
                    if self.policy.excludes(name) {
                        return Ok(());
                    }
                    match crate::cache::hashing::input_part(value) {
                        Ok(part) => {
                            let name = match self.names.iter().find(|n| *n == name) {
                                Some(n) => Cow::Borrowed(n.as_str()),
                                None if name == "input" => Cow::Borrowed("input"),
                                None => Cow::Owned(name.to_owned()),
                            };
                            self.inputs.push((name, part));
                            Ok(())
                        }
                        Err(e) => {
                            let e = e.for_input(name);
                            let message = e.to_string();
                            self.error = Some(e);
                            Err(Error::Config { message })
                        }
                    }
                }
            }
            let def: &'a TaskDef<I, O> = self.def;
            let mut visitor = AddHashes {
                inputs: &mut inputs,
                names: &def.input_names,
                policy,
                error: None,
            };
            if let Err(e) = visit_inputs(self.input, &self.def.input_names, &mut visitor) {
                return Err(match visitor.error {
                    Some(h) => hash_error(self, h),
                    None => self.error(TaskErrorKind::Hash, None, e),
                });
            }
        }
        for (i, f) in policy.key_functions().iter().enumerate() {
            let attempts = self.info.attempts.max(1);
            let context = self.context(attempts)?;
            match f(context) {
                Some(part) => {
                    key_fn_parts.push((
                        format!("key_fn.{i}"),
                        crate::cache::hashing::hash_str(&part),
                    ));
                }
                None => return Ok(None),
            }
        }
        let key = if added.is_empty() && key_fn_parts.is_empty() {
            // The definition's own list, known by its id: not copied, and not even
            // read when this thread looked it up last.
            crate::cache::hashing::key_from_input_parts(statics, Some(statics_id), &inputs)
        } else {
            let components: SmallVec<[(&str, Digest); 8]> = statics
                .iter()
                .map(|(n, d)| (n.as_str(), *d))
                .chain(added)
                .chain(key_fn_parts.iter().map(|(n, d)| (n.as_str(), *d)))
                .collect();
            crate::cache::hashing::key_from_input_parts(&components, None, &inputs)
        };
        key.map(Some).map_err(|e| hash_error(self, e))
    }

    /// The value the memory tier serves as it is (confirmed by the store within its
    /// trust bound), found before and without the run's asynchronous steps, which then
    /// have nothing left to do but finish the run as `Cached`. Only a run those steps
    /// would take straight to the memory tier is served here: no target, no history
    /// written, no lease, no refresh, its cache store open. `None` leaves the run as it
    /// was, with its cache key kept for the lookup.
    fn fresh_tier_hit(&mut self) -> Option<O> {
        let def = self.def;
        let scope = self.scope;
        if !may_serve_fresh_from_tier(def)
            || self.try_once
            || scope.resuming
            || self.writes_history()
            || self.refresh_cache()
        {
            return None;
        }
        let policy = def.cache_policy.as_ref().filter(|p| !p.is_none())?;
        // The store's URL is all the tier needs: a task's serializer does not change it.
        let store = match (&def.cache_store, &def.store) {
            (Some(store), _) | (None, Some(store)) => store,
            (None, None) => scope.cached_default_store()?,
        };
        let key = match self.cache_key(policy) {
            Ok(Some(key)) => key,
            other => {
                self.key = Some(other);
                return None;
            }
        };
        let now = scope.clock.reading().latest();
        let tier_key = TierKeyRef {
            store: store.url(),
            key,
        };
        match MemoryTier::global().lookup_at::<O>(&tier_key, now, self.revalidate_after()) {
            Some(TierHit::Fresh(value)) => {
                self.enter(State::Running);
                self.info.cache = Some(CacheRef::new(
                    key,
                    self.namespace_copy(),
                    thread_copy(store.url_arc()),
                ));
                Some(value)
            }
            // Held longer than the bound: the lookup asks the store for its version.
            Some(TierHit::Stale { .. }) => {
                self.key = Some(Ok(Some(key)));
                None
            }
            // Not held: the lookup reads the record.
            None => {
                self.key = Some(Ok(Some(key)));
                self.tier_missed = true;
                None
            }
        }
    }

    /// Whether the run's states and result are written to its flow run's history (for
    /// resuming): the flow run persists and is not one of a task called on its own.
    fn writes_history(&self) -> bool {
        !self.scope.ephemeral && self.scope.persisting()
    }

    /// Whether this run replaces its cache record instead of looking it up.
    fn refresh_cache(&self) -> bool {
        self.scope.overwrite_cache
            || self
                .def
                .refresh_cache
                .or(self.scope.settings.refresh_cache)
                .unwrap_or(false)
    }

    async fn lookup(&mut self, policy: &CachePolicy) -> std::result::Result<Lookup<O>, TaskError> {
        let derived = match self.key.take() {
            Some(derived) => derived,
            None => self.cache_key(policy),
        };
        let Some(key) = derived? else {
            return Ok(Lookup::Miss(None));
        };
        let store = self.cache_store().await?;
        // Borrowed for the tier's lookup; owned only where a miss or a lock keeps it.
        let key_ref = TierKeyRef {
            store: store.url(),
            key,
        };
        let tier_key = || TierKey {
            store: store.url_arc().clone(),
            key,
        };
        let refresh = self.refresh_cache();
        let guard = if self.def.serialize {
            Some(key_lock(&tier_key()).lock_owned().await)
        } else {
            None
        };
        let mut replace = refresh;
        self.info.cache = Some(CacheRef::new(
            key,
            self.namespace_copy(),
            thread_copy(store.url_arc()),
        ));
        if !refresh && self.def.memory_tier && !self.tier_missed {
            let now = self.scope.clock.reading();
            if let Some(value) = self.tier_hit(&store, &key_ref, now).await {
                return Ok(Lookup::Hit(value));
            }
        }
        let now = self.scope.clock.now();
        // Borrowed from the run's record until a miss needs its own copy.
        let location = self.cache_record();
        if !refresh {
            // Unless caching is strict, a missing store is found by the write after the
            // miss (a read that cannot answer is a miss too): the lookup spares the
            // check that tells it from a missing record.
            let wants = ReadWants {
                version: self.def.memory_tier,
                bucket_check: self.strict_cache(),
            };
            let read = match self.info.cache.as_ref().map(CacheRef::record_object) {
                Some(Ok(key)) => store.read_hit_at::<O>(key, wants).await,
                Some(Err(e)) => Err(e),
                // Named just above; without a record, its empty location is refused as a key.
                None => store.read_hit::<O>(location, wants).await,
            };
            match read {
                Ok(record) if !record.is_expired(now) => {
                    if self.def.memory_tier {
                        MemoryTier::global().insert_versioned(
                            &tier_key(),
                            &record.value,
                            record.expires,
                            record.payload_len as usize,
                            record.version,
                            now,
                            Some(&self.def.name),
                        );
                    }
                    // At most one small write per record and day, none within a day of the
                    // record's creation: `prune --max-size` evicts the records used least
                    // recently.
                    if !store.url().starts_with("memory://")
                        && crate::maintenance::claim_use(&store, location, record.created, now)
                    {
                        let (store, location) = (store.as_ref().clone(), location.to_owned());
                        tokio::spawn(async move {
                            if let Err(e) =
                                crate::maintenance::write_claimed(&store, &location, now).await
                            {
                                tracing::debug!("could not note the use of '{location}': {e}");
                            }
                        });
                    }
                    return Ok(Lookup::Hit(record.value));
                }
                Ok(record) => {
                    tracing::debug!(
                        "Task run '{}' - cache record '{location}' expired at {:?}",
                        self.info.name(),
                        record.expires
                    );
                    replace = true;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Serialization) => {
                    tracing::warn!(
                        "Task run '{}' - ignoring unusable cache record: {e}",
                        self.info.name()
                    );
                    replace = true;
                }
                Err(e) if self.strict_cache() => {
                    return Err(self.error(
                        TaskErrorKind::Store,
                        Some(format!("cannot read cache record '{location}'")),
                        e,
                    ))
                }
                Err(e) => {
                    // A cache is an optimization: a store that cannot answer is a miss.
                    tracing::warn!(
                        "Task run '{}' - cache record '{location}' cannot be read, running the task: {e}",
                        self.info.name()
                    );
                }
            }
        }
        let location = location.to_owned();
        let mut lease = None;
        if (self.def.serialize || self.try_once)
            && !refresh
            && !store.url().starts_with("memory://")
        {
            // Boxed: the lease's future is large and rarely needed, and a hit's future
            // should not carry its room.
            match Box::pin(self.reserve(&store, &location, &tier_key())).await? {
                Reserved::Hit(value) => return Ok(Lookup::Hit(value)),
                Reserved::Lease(l) => lease = Some(l),
            }
        }
        let components = policy
            .component_names()
            .into_iter()
            .map(|n| (n.to_owned(), String::new()))
            .collect();
        let tier_key = tier_key();
        Ok(Lookup::Miss(Some(Box::new(CacheSlot {
            store: store.into_owned(),
            location,
            tier_key,
            replace,
            components,
            lease,
            _guard: guard,
        }))))
    }

    /// How long a memory-tier entry is served without asking the store: the task's
    /// bound, else the settings', else [`DEFAULT_REVALIDATE_AFTER`].
    fn revalidate_after(&self) -> chrono::Duration {
        let bound = self
            .def
            .memory_tier_revalidate_after
            .or(self.scope.settings.memory_tier_revalidate_after)
            .unwrap_or(DEFAULT_REVALIDATE_AFTER);
        chrono::Duration::from_std(bound).unwrap_or(chrono::Duration::MAX)
    }

    /// The memory tier's value for the key, when it holds one the store still has:
    /// served as is within the trust bound, after a version check (HEAD) beyond it.
    async fn tier_hit(
        &self,
        store: &ResultStore,
        tier_key: &TierKeyRef<'_>,
        now: Reading,
    ) -> Option<O> {
        let tier = MemoryTier::global();
        match tier.lookup_at::<O>(tier_key, now.latest(), self.revalidate_after())? {
            TierHit::Fresh(value) => Some(value),
            TierHit::Stale { value, version } => {
                match Box::pin(store.version_of(self.cache_record())).await {
                    // Confirmed no later than the reading (the earliest the time was).
                    Ok(current) if current.is_some() && current == version => {
                        tier.confirm(tier_key, now.micros);
                        Some(value)
                    }
                    // Replaced, removed, or unknown: the store is asked again in full.
                    _ => {
                        tier.forget(tier_key);
                        None
                    }
                }
            }
        }
    }

    /// Takes the lease on the key in the store, or waits for its holder's record.
    async fn reserve(
        &mut self,
        store: &ResultStore,
        record: &str,
        tier_key: &TierKey,
    ) -> std::result::Result<Reserved<O>, TaskError> {
        let hex = tier_key.key.hex_buf();
        let key_hex = hex.as_str();
        let location = lease_location(self.namespace().unwrap_or("default"), key_hex);
        let store_error = |this: &Self, e: Error| {
            this.error(
                TaskErrorKind::Store,
                Some(format!("cannot take the lease '{location}'")),
                e,
            )
        };
        let me = LeaseHolder::new(&self.def.name, &self.scope.run_id);
        let mut reservation = Reservation::new(store, &location, self.def.lease, me)
            .map_err(|e| store_error(self, e))?;
        let started = tokio::time::Instant::now();
        let mut next_log = started;
        let mut backoff = Duration::from_millis(20);
        let mut waited = false;
        loop {
            match reservation
                .try_acquire()
                .await
                .map_err(|e| store_error(self, e))?
            {
                Attempt::Acquired(lease) => {
                    // The holder before may have published and let go between our last
                    // look at the record and our taking the lease.
                    if let Some(value) = self.read_valid(store, record, tier_key).await? {
                        lease.release().await;
                        self.info.waited = waited.then(|| started.elapsed());
                        return Ok(Reserved::Hit(value));
                    }
                    if waited {
                        self.info.waited = Some(started.elapsed());
                        tracing::info!(
                            "Task run '{}' - took the lease on key {key_hex} after waiting {:?}",
                            self.info.name(),
                            started.elapsed()
                        );
                    }
                    return Ok(Reserved::Lease(lease));
                }
                Attempt::Held(_) if self.try_once => {
                    // A shared map moves on to its next item and comes back later.
                    if let Some(value) = self.read_valid(store, record, tier_key).await? {
                        return Ok(Reserved::Hit(value));
                    }
                    self.busy = true;
                    return Err(self.error(TaskErrorKind::Store, None, "held by another worker"));
                }
                Attempt::Held(holder) => {
                    let now = tokio::time::Instant::now();
                    if now >= next_log {
                        let holder = holder
                            .map_or_else(|| "an unknown holder".to_owned(), |h| h.to_string());
                        if waited {
                            tracing::info!(
                                "Task run '{}' - still waiting for {holder} (key {key_hex}, {:?} so far)",
                                self.info.name(),
                                now - started
                            );
                        } else {
                            tracing::info!(
                                "Task run '{}' - waiting for {holder}, which holds the lease on key {key_hex}",
                                self.info.name()
                            );
                        }
                        next_log = now + Duration::from_secs(10);
                    }
                    waited = true;
                    let jitter = rand::random::<f64>() * 0.5 + 0.75;
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    if let Some(value) = self.read_valid(store, record, tier_key).await? {
                        self.info.waited = Some(started.elapsed());
                        return Ok(Reserved::Hit(value));
                    }
                }
            }
        }
    }

    /// The record at `location` when it is present, intact and unexpired.
    async fn read_valid(
        &self,
        store: &ResultStore,
        location: &str,
        tier_key: &TierKey,
    ) -> std::result::Result<Option<O>, TaskError> {
        let now = self.scope.clock.now();
        match store
            .read_hit::<O>(location, ReadWants::with_version(self.def.memory_tier))
            .await
        {
            Ok(record) if !record.is_expired(now) => {
                if self.def.memory_tier {
                    MemoryTier::global().insert_versioned(
                        tier_key,
                        &record.value,
                        record.expires,
                        record.payload_len as usize,
                        record.version,
                        now,
                        Some(&self.def.name),
                    );
                }
                Ok(Some(record.value))
            }
            Ok(_) => Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NotFound | ErrorKind::Corrupt | ErrorKind::Serialization
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.error(
                TaskErrorKind::Store,
                Some(format!("cannot read cache record '{location}'")),
                e,
            )),
        }
    }

    /// Publishes the record; when another run published the key first, returns the
    /// value it published (read back and verified), which is then this run's output.
    async fn write_record(
        &self,
        mut slot: Box<CacheSlot>,
        value: &mut O,
        lease_lost: bool,
    ) -> std::result::Result<Option<O>, TaskError> {
        let now = self.scope.clock.now();
        let expires = self
            .def
            .cache_expiration
            .and_then(|d| now.checked_add_signed(d));
        let info = RecordInfo {
            created: Some(now),
            expires,
            key_components: std::mem::take(&mut slot.components),
            task: Some(self.def.name.to_string()),
            output_type: Some(std::any::type_name::<O>().to_owned()),
        };
        // A run that lost its lease is no longer the holder: it must not replace what a
        // successor may have published.
        let mode = if slot.replace && !lease_lost {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        // The memory tier keeps the record's version; without it nobody reads it.
        let opts = PutOptions {
            mode,
            skip_version: !self.def.memory_tier,
            ..PutOptions::default()
        };
        // The key the lookup checked, once for the whole run.
        let checked = self.info.cache.as_ref().map(CacheRef::record_object);
        let write = match checked {
            Some(Ok(key)) if key.as_str() == slot.location => {
                slot.store
                    .write_record_lending_at(key, value, info, opts)
                    .await
            }
            _ => match Key::parse(&slot.location) {
                Ok(key) => {
                    slot.store
                        .write_record_lending_at(&key, value, info, opts)
                        .await
                }
                Err(e) => Err(e),
            },
        };
        match write {
            Ok((put, size)) => {
                if self.def.memory_tier {
                    MemoryTier::global().insert_versioned(
                        &slot.tier_key,
                        value,
                        expires,
                        size,
                        put.version,
                        now,
                        Some(&self.def.name),
                    );
                }
                Ok(None)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Another run published the same key first; its record stands, and its
                // value is what every caller returns.
                match self
                    .read_valid(&slot.store, &slot.location, &slot.tier_key)
                    .await
                {
                    Ok(Some(published)) => Ok(Some(published)),
                    Ok(None) | Err(_) => {
                        tracing::warn!(
                            "Task run '{}' - cache record '{}' was published by another run but cannot be read back; returning this run's value",
                            self.info.name(),
                            slot.location
                        );
                        Ok(None)
                    }
                }
            }
            Err(e) if self.strict_cache() => Err(self.error(
                TaskErrorKind::Store,
                Some(format!("cannot write cache record '{}'", slot.location)),
                e,
            )),
            Err(e) => {
                // The value is computed and correct: it is returned, uncached.
                tracing::warn!(
                    "Task run '{}' - cache record '{}' cannot be written, returning the value uncached: {e}",
                    self.info.name(),
                    slot.location
                );
                Ok(None)
            }
        }
    }

    /// Whether a failing cache store fails this run ([`crate::Task::strict_cache`]).
    fn strict_cache(&self) -> bool {
        self.def
            .strict_cache
            .or(self.scope.strict_cache)
            .or(self.scope.settings.strict_cache)
            .unwrap_or(false)
    }
}

enum Lookup<O> {
    Hit(O),
    Miss(Option<Box<CacheSlot>>),
}

/// The outcome of reserving a key across processes.
enum Reserved<O> {
    /// The holder's record appeared while waiting.
    Hit(O),
    /// This run holds the lease and computes.
    Lease(Lease),
}

/// One lock per cache key in this process, for `serialize`.
fn key_lock(key: &TierKey) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<TierKey, Weak<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
        return lock;
    }
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    locks.retain(|_, w| w.strong_count() > 0);
    locks.insert(key.clone(), Arc::downgrade(&lock));
    lock
}
