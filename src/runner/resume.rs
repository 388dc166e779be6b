//! Resumable flow runs: the manifest and lease of a persisting flow run, and the
//! result record by which a resumed run finds a task run that already completed.
//!
//! Under `runs/v1/<flow>/<run id>/`: `manifest.json` (written once, with `Create`:
//! flow, parameters digest, start, host), `lease` (held while the run runs),
//! `results/<task>/<ab>/<identity>` — one write-once record per completed task run,
//! named by the task and the digest of its inputs, never by position — and
//! `states/<task>/<ab>/<identity>/<task run id>-<nn>-<state>`, one small write-once
//! object per transition of a task run (running, retrying, completed, cached, failed).
//! No object is ever read, changed and written back, so any number of processes can
//! write one run's history at once; a task run with a `running` object and no final
//! one was interrupted.

use serde::{Deserialize, Serialize};

use crate::runner::state::State;
use crate::store::ResultStore;

use crate::backend::{Error, ErrorKind, PutMode, Result};
use crate::cache::hashing::{self, Digest, KeyHasher};
use crate::cache::{Attempt, Lease, LeaseConfig, LeaseHolder, Reservation};
use crate::runner::inputs::{visit_inputs, InputVisitor};
use crate::runner::scope::RunScope;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    flow: String,
    run_id: String,
    parameters_digest: String,
    started: chrono::DateTime<chrono::Utc>,
    host: String,
    pid: u32,
}

fn run_prefix(scope: &RunScope) -> String {
    format!("runs/v1/{}/{}", scope.flow_name, scope.run_id)
}

/// Where the result of a task run with this identity is recorded in this flow run.
pub(crate) fn result_location(scope: &RunScope, task: &str, identity: &Digest) -> String {
    let hex = identity.to_hex();
    format!("{}/results/{task}/{}/{hex}", run_prefix(scope), &hex[..2])
}

/// A task run's identity within its flow run: its task's name and its inputs'
/// digests. `None` when an input cannot be hashed (such a run is never resumed).
pub(crate) fn identity<I: Serialize>(task: &str, input: &I, names: &[String]) -> Option<Digest> {
    struct Add<'k>(&'k mut KeyHasher);
    impl InputVisitor for Add<'_> {
        fn visit<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<()> {
            self.0
                .add_input(name, value)
                .map(|_| ())
                .map_err(Error::from)
        }
    }
    let mut key = KeyHasher::new();
    key.component_value("task", task).ok()?;
    visit_inputs(input, names, &mut Add(&mut key)).ok()?;
    Some(key.finish())
}

/// Before a persisting flow run's body runs: takes the run's lease and writes its
/// manifest; when resuming, checks that the run exists, ran with these parameters
/// (unless `allow_parameter_change`) and is not running elsewhere.
pub(crate) async fn prepare(
    scope: &RunScope,
    config: LeaseConfig,
    allow_parameter_change: bool,
) -> Result<Option<Lease>> {
    if scope.resuming && !scope.persisting() {
        return Err(Error::Config {
            message: format!(
                "flow run '{}' cannot be resumed: the flow does not persist (turn checkpointing on)",
                scope.run_id
            ),
        });
    }
    let store = scope.default_store().await?;
    let prefix = run_prefix(scope);
    let digest = scope
        .parameter_digests()
        .ok()
        .and_then(|d| hashing::hash_value(d).ok())
        .map(|d| d.to_hex())
        .unwrap_or_default();
    let manifest_location = format!("{prefix}/manifest.json");
    if scope.resuming {
        let manifest: Manifest = match store.read(&manifest_location).await {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::Config {
                    message: format!(
                        "no flow run '{}' of flow '{}' in {}: nothing to resume",
                        scope.run_id,
                        scope.flow_name,
                        store.url()
                    ),
                })
            }
            Err(e) => return Err(e),
        };
        if manifest.parameters_digest != digest && !allow_parameter_change {
            return Err(Error::Config {
                message: format!(
                    "flow run '{}' ran with other parameters; resume it with the same ones, \
                     or allow the change with Flow::allow_parameter_change(true)",
                    scope.run_id
                ),
            });
        }
    }
    let mut reservation = Reservation::new(
        &store,
        &format!("{prefix}/lease"),
        config,
        LeaseHolder::new("(flow run)", &scope.run_id),
    )?;
    let lease = loop {
        match reservation.try_acquire().await? {
            Attempt::Acquired(lease) => break Some(lease),
            // Workers of one shared run (one id given to many processes) run side by side.
            Attempt::Held(_) if !scope.resuming => break None,
            Attempt::Held(holder) => {
                let seen = reservation.observed_version().map(str::to_owned);
                let holder = holder.map_or_else(|| "an unknown holder".into(), |h| h.to_string());
                tracing::info!(
                    "Flow run '{}' - held by {holder}; waiting up to {:?} to see whether it is still running",
                    scope.run_name,
                    config.stale_after()
                );
                tokio::time::sleep(config.renew_every().min(config.stale_after() / 4)).await;
                if let Attempt::Acquired(lease) = reservation.try_acquire().await? {
                    break Some(lease);
                }
                if reservation.observed_version().map(str::to_owned) != seen {
                    return Err(Error::Config {
                        message: format!(
                            "flow run '{}' is still running ({holder} renews its lease): \
                             resume it once it has stopped",
                            scope.run_id
                        ),
                    });
                }
            }
        }
    };
    let manifest = Manifest {
        flow: scope.flow_name.to_string(),
        run_id: scope.run_id.to_string(),
        parameters_digest: digest,
        started: scope.date,
        host: crate::cache::host_name(),
        pid: std::process::id(),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Config {
        message: format!("the manifest of flow run '{}': {e}", scope.run_id),
    })?;
    match store
        .write_bytes(&manifest_location, bytes.into(), PutMode::Create)
        .await
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {} // resumed, or a shared run
        Err(e) => return Err(e),
    }
    Ok(lease)
}

/// One transition of a task run, as written under `states/`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Transition {
    pub task: String,
    pub task_run_id: String,
    pub task_run_name: String,
    pub map_index: u64,
    /// The state as logged (`Retrying(attempt=2)`, `Failed(message=...)`).
    pub state: String,
    pub attempts: u32,
    pub at: chrono::DateTime<chrono::Utc>,
    pub host: String,
    pub pid: u32,
}

/// Where transition number `seq` of task run `task_run_id` is written.
pub(crate) fn transition_location(
    scope: &RunScope,
    task: &str,
    identity: &Digest,
    task_run_id: &str,
    seq: usize,
    state: &State,
) -> String {
    let hex = identity.to_hex();
    format!(
        "{}/states/{task}/{}/{hex}/{task_run_id}-{seq:02}-{}",
        run_prefix(scope),
        &hex[..2],
        state.name().to_ascii_lowercase()
    )
}

/// Writes one transition once (`Create`). A failure is logged, never fatal: the
/// history serves inspection, while results and records decide what a resume does.
pub(crate) async fn record_transition(
    store: ResultStore,
    location: String,
    transition: Transition,
) {
    let result = match serde_json::to_vec(&transition) {
        Ok(bytes) => store
            .write_bytes(&location, bytes.into(), PutMode::Create)
            .await
            .map(|_| ())
            .or_else(|e| match e.kind() {
                ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e.to_string()),
            }),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::warn!(
            "Task run '{}' - could not record its state {}: {e}",
            transition.task_run_name,
            transition.state
        );
    }
}
