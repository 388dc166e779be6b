//! Flow runs as the store records them (`runs`, `runs show`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::{stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::backend::{DynBackend, Error, Key, Result};
use crate::maintenance::clear::LiveLeases;
use crate::maintenance::{Entry, EntryKind, Filter, Maintenance};

/// One flow run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunSummary {
    /// The flow.
    pub flow: String,
    /// The flow run id.
    pub run_id: String,
    /// Its state: the final one from its summary (`Completed`, `Failed('...')`), else
    /// `Running` while its lease is live, else `Interrupted`.
    pub state: String,
    /// When it started.
    pub started: Option<DateTime<Utc>>,
    /// When its summary was written (it finished).
    pub finished: Option<DateTime<Utc>>,
    /// How long it ran, in seconds.
    pub duration_seconds: Option<f64>,
    /// Its task runs, counted by state name (`Completed`, `Cached`, `Failed`, ...).
    pub tasks: BTreeMap<String, u64>,
    /// Its entries' bytes in the store.
    pub bytes: u64,
}

/// A task run of a flow run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRunRecord {
    /// The task.
    pub task: String,
    /// The task run's name, when the summary gives it.
    pub name: Option<String>,
    /// Its index among the task's runs.
    pub map_index: Option<u64>,
    /// Its state.
    pub state: String,
    /// Where its output is.
    pub location: Option<String>,
}

/// One flow run with its task runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunDetail {
    /// The run.
    pub run: RunSummary,
    /// Its task runs.
    pub task_runs: Vec<TaskRunRecord>,
}

#[derive(Deserialize)]
struct Manifest {
    started: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Summary {
    date: Option<DateTime<Utc>>,
    state: String,
    #[serde(default)]
    task_runs: Vec<BTreeMap<String, String>>,
}

/// `Completed()` → `Completed`; other states as displayed.
fn state_name(state: &str) -> String {
    state.strip_suffix("()").unwrap_or(state).to_owned()
}

/// The state's name without its details: `Failed('x')` → `Failed`.
fn state_kind(state: &str) -> String {
    state.split('(').next().unwrap_or(state).to_owned()
}

impl Maintenance {
    /// Every flow run in the store (those that persist: checkpointing on), newest
    /// first.
    ///
    /// # Errors
    /// The store's errors.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use cairn::maintenance::Maintenance;
    /// use cairn::ResultStore;
    ///
    /// let store = ResultStore::memory();
    /// let summary = serde_json::json!({"state": "Completed()", "date": "2026-01-01T00:00:00Z",
    ///     "task_runs": [{"task": "load", "state": "Completed()"}]});
    /// store.write_at("runs/v1/etl/r1/flow.json", &summary).await?;
    /// let runs = Maintenance::new(&store).runs().await?;
    /// assert_eq!((runs[0].flow.as_str(), runs[0].state.as_str()), ("etl", "Completed"));
    /// assert_eq!(runs[0].tasks["Completed"], 1);
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub async fn runs(&self) -> Result<Vec<RunSummary>> {
        Ok(self
            .run_details(None)
            .await?
            .into_iter()
            .map(|d| d.run)
            .collect())
    }

    /// One flow run, by its id (or a unique prefix of it), with its task runs.
    ///
    /// # Errors
    /// [`Error::NotFound`] naming the store when no run has that id.
    pub async fn run(&self, run_id: &str) -> Result<RunDetail> {
        let mut found = self.run_details(Some(run_id)).await?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::NotFound {
                backend: self.backend.describe(),
                key: format!("flow run {run_id}"),
            }),
            n => Err(Error::Config {
                message: format!(
                    "{}: {n} flow runs have an id starting with '{run_id}': give more of it",
                    self.backend.describe()
                ),
            }),
        }
    }

    async fn run_details(&self, run_id: Option<&str>) -> Result<Vec<RunDetail>> {
        let filter = Filter {
            prefix: Some("runs/".into()),
            kinds: EntryKind::ALL.to_vec(),
            ..Filter::default()
        };
        // What each run needs of its entries, not the entries: memory grows with the
        // runs (and the task runs of those without a summary), not with the listing.
        let mut groups: BTreeMap<(String, String), RunEntries> = BTreeMap::new();
        let mut listing = self.clone().listing_only(true).list(&filter);
        while let Some(e) = listing.try_next().await? {
            let (Some(flow), Some(run)) = (e.flow.clone(), e.run_id.clone()) else {
                continue;
            };
            if run_id.is_some_and(|id| !run.starts_with(id)) {
                continue;
            }
            let group = groups.entry((flow, run)).or_default();
            if e.path.ends_with("/lease") && e.kind == EntryKind::Lease {
                let lease = e.load(&self.backend).await;
                group.live = LiveLeases::is_live(&lease, self.now, self.stale_leases_after);
                group.add(lease);
            } else {
                group.add(e);
            }
        }
        drop(listing);
        let mut details: Vec<RunDetail> = stream::iter(groups)
            .map(|((flow, run), entries)| {
                let backend = self.backend.clone();
                async move { detail(&backend, flow, run, entries).await }
            })
            .buffer_unordered(self.jobs)
            .try_collect()
            .await?;
        details.sort_by(|a, b| {
            b.run
                .started
                .cmp(&a.run.started)
                .then_with(|| a.run.run_id.cmp(&b.run.run_id))
        });
        Ok(details)
    }
}

/// What a flow run's summary is made of, gathered from its entries as they are listed.
#[derive(Debug, Default)]
struct RunEntries {
    prefix: String,
    manifest: bool,
    summary: bool,
    live: bool,
    bytes: u64,
    /// The latest transition of each task run: (task, task run id) → (seq, path).
    states: BTreeMap<(String, String), (String, String)>,
    /// Results, checkpoints and persisted inputs: kind, task, path.
    outputs: Vec<(EntryKind, Option<String>, String)>,
}

impl RunEntries {
    fn add(&mut self, e: Entry) {
        if self.prefix.is_empty() {
            self.prefix = e.run_prefix().unwrap_or_default();
        }
        self.bytes += e.size;
        self.manifest |= e.path.ends_with("/manifest.json");
        if e.path.ends_with("/flow.json") {
            // The summary lists the task runs: the history is not needed.
            self.summary = true;
            self.states.clear();
            self.outputs.clear();
        }
        if self.summary {
            return;
        }
        match e.kind {
            EntryKind::State => {
                // `<task run id>-<nn>-<state>`: the highest `nn` of each task run is its latest.
                let name = e.path.rsplit('/').next().unwrap_or_default();
                let mut parts = name.rsplitn(3, '-');
                let (_, seq, id) = (parts.next(), parts.next(), parts.next());
                let (Some(seq), Some(id)) = (seq, id) else {
                    return;
                };
                let slot = (e.task.clone().unwrap_or_default(), id.to_owned());
                if self.states.get(&slot).is_none_or(|(s, _)| s.as_str() < seq) {
                    self.states.insert(slot, (seq.to_owned(), e.path));
                }
            }
            EntryKind::Result | EntryKind::Checkpoint | EntryKind::Inputs => {
                self.outputs.push((e.kind, e.task, e.path))
            }
            _ => {}
        }
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    backend: &DynBackend,
    path: String,
) -> Result<Option<(T, DateTime<Utc>)>> {
    match backend.get_bytes(&Key::parse(path)?, None).await {
        Ok((meta, bytes)) => Ok(serde_json::from_slice(&bytes)
            .ok()
            .map(|v| (v, meta.last_modified))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

async fn detail(
    backend: &DynBackend,
    flow: String,
    run_id: String,
    entries: RunEntries,
) -> Result<RunDetail> {
    let prefix = entries.prefix.clone();
    let manifest = if entries.manifest {
        read_json::<Manifest>(backend, format!("{prefix}manifest.json")).await?
    } else {
        None
    };
    let summary = if entries.summary {
        read_json::<Summary>(backend, format!("{prefix}flow.json")).await?
    } else {
        None
    };
    let live = entries.live;
    let started = manifest
        .map(|(m, _)| m.started)
        .or_else(|| summary.as_ref().and_then(|(s, _)| s.date));
    let mut task_runs = Vec::new();
    let state;
    let mut finished = None;
    match summary {
        Some((s, written)) => {
            state = state_name(&s.state);
            finished = Some(written);
            for r in s.task_runs {
                task_runs.push(TaskRunRecord {
                    task: r.get("task").cloned().unwrap_or_default(),
                    name: r.get("name").cloned(),
                    map_index: r.get("map_index").and_then(|i| i.parse().ok()),
                    state: state_name(r.get("state").map_or("", String::as_str)),
                    location: r.get("location").cloned(),
                });
            }
        }
        None => {
            state = if live { "Running" } else { "Interrupted" }.to_owned();
            task_runs = from_history(backend, &entries).await?;
        }
    }
    let mut tasks = BTreeMap::new();
    for t in &task_runs {
        *tasks.entry(state_kind(&t.state)).or_insert(0) += 1;
    }
    let duration_seconds = match (started, finished) {
        (Some(s), Some(f)) if f >= s => Some((f - s).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    Ok(RunDetail {
        run: RunSummary {
            flow,
            run_id,
            state,
            started,
            finished,
            duration_seconds,
            tasks,
            bytes: entries.bytes,
        },
        task_runs,
    })
}

#[derive(Deserialize)]
struct Transition {
    task: String,
    task_run_name: String,
    map_index: u64,
    state: String,
}

/// The task runs of a flow run without a summary (still running, or interrupted):
/// each one's latest transition under `states/`; for runs written before transitions
/// were kept, its result, checkpoint or persisted inputs.
async fn from_history(backend: &DynBackend, entries: &RunEntries) -> Result<Vec<TaskRunRecord>> {
    let mut runs: Vec<TaskRunRecord> = stream::iter(entries.states.values())
        .map(|(_, path)| async move {
            let t = read_json::<Transition>(backend, path.clone()).await?;
            Ok::<_, Error>(t.map(|(t, _)| TaskRunRecord {
                task: t.task,
                name: Some(t.task_run_name),
                map_index: Some(t.map_index),
                state: state_name(&t.state),
                location: None,
            }))
        })
        .buffer_unordered(8)
        .try_filter_map(|t| async move { Ok(t) })
        .try_collect()
        .await?;
    if runs.is_empty() {
        for (kind, task, path) in &entries.outputs {
            let state = match kind {
                EntryKind::Result | EntryKind::Checkpoint => "Completed",
                EntryKind::Inputs => "Failed",
                _ => continue,
            };
            if *kind == EntryKind::Result
                && entries
                    .outputs
                    .iter()
                    .any(|(k, t, _)| *k == EntryKind::Checkpoint && t == task)
            {
                continue; // the checkpoint stands for it
            }
            let index = path.rsplit('/').next();
            runs.push(TaskRunRecord {
                task: task.clone().unwrap_or_default(),
                name: None,
                map_index: index.and_then(|i| i.trim_end_matches(".inputs").parse().ok()),
                state: state.to_owned(),
                location: Some(path.clone()),
            });
        }
    }
    runs.sort_by(|a, b| (&a.task, a.map_index).cmp(&(&b.task, b.map_index)));
    Ok(runs)
}
