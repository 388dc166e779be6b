//! Removing what is no longer of use, and evicting to a size (`prune`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::{stream, StreamExt, TryStreamExt};

use crate::backend::{BackendExt, Key, Result};
use crate::maintenance::clear::{LiveLeases, DEFAULT_STALE_LEASE_AFTER};
use crate::maintenance::{Entry, EntryKind, Filter, Maintenance, Removal, RemovalReason};

/// What [`Maintenance::prune`] removes beyond what it always removes.
///
/// ```
/// use std::time::Duration;
/// use cairn::maintenance::PruneOptions;
///
/// let options = PruneOptions { max_size: Some(5 << 30), ..PruneOptions::default() };
/// assert_eq!(options.staged_grace, Duration::from_secs(3600));
/// assert!(!options.dry_run);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PruneOptions {
    /// Staged files left by killed writers are removed once older than this (default
    /// an hour: a write in progress is far younger).
    pub staged_grace: Duration,
    /// A lease not renewed for this long is stale (default an hour; holders renew
    /// every few seconds).
    pub stale_lease_after: Duration,
    /// Evicts cache records, least recently used first, until the store's entries
    /// total at most this many bytes.
    pub max_size: Option<u64>,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            staged_grace: Duration::from_secs(3600),
            stale_lease_after: DEFAULT_STALE_LEASE_AFTER,
            max_size: None,
            dry_run: false,
        }
    }
}

impl Maintenance {
    /// Removes what no run will use again:
    ///
    /// - expired records;
    /// - records of a layout or record format version this cairn no longer reads;
    /// - stale leases (released, or not renewed for [`PruneOptions::stale_lease_after`]);
    /// - persisted inputs of flow runs that completed (a failed run keeps them, to be
    ///   resumed);
    /// - staged files of killed writers older than [`PruneOptions::staged_grace`];
    /// - `used` markers of records that are gone;
    ///
    /// and, with [`PruneOptions::max_size`], evicts cache records least recently used
    /// first (see [`note_use`](crate::maintenance::note_use)) until the entries fit.
    /// Nothing a live lease covers is removed.
    ///
    /// # Errors
    /// The store's errors; what was removed before one stays removed.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use cairn::maintenance::{Maintenance, PruneOptions, RemovalReason};
    /// use cairn::{record::RecordInfo, PutMode, ResultStore};
    ///
    /// let store = ResultStore::memory();
    /// let expired = RecordInfo { expires: Some(chrono::Utc::now()), ..Default::default() };
    /// store.write_record("cache/v1/default/ab/ab01", &1, expired, PutMode::Create).await?;
    /// store.write_record("cache/v1/default/cd/cd01", &2, RecordInfo::default(), PutMode::Create).await?;
    /// let pruned = Maintenance::new(&store).prune(&PruneOptions::default()).await?;
    /// assert_eq!(pruned.entries(), 1);
    /// assert_eq!(pruned.removed[0].reason, RemovalReason::Expired);
    /// assert!(store.exists("cache/v1/default/cd/cd01").await?);
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub async fn prune(&self, options: &PruneOptions) -> Result<Removal> {
        let all = Filter {
            kinds: EntryKind::ALL.to_vec(),
            ..Filter::default()
        };
        let entries: Vec<Entry> = self.list(&all).try_collect().await?;
        let live = LiveLeases::find(self, &entries, options.stale_lease_after).await?;
        let completed = self.completed_runs(&entries).await?;
        let records: HashSet<&str> = entries
            .iter()
            .filter(|e| e.kind.is_record())
            .map(|e| e.path.as_str())
            .collect();
        let grace =
            chrono::Duration::from_std(options.staged_grace).unwrap_or(chrono::Duration::MAX);
        let mut removal = Removal {
            dry_run: options.dry_run,
            ..Removal::default()
        };
        let mut doomed = Vec::new();
        let mut kept = Vec::new();
        for e in &entries {
            let reason = match e.kind {
                EntryKind::Staged if e.modified <= self.now - grace => Some(RemovalReason::Staged),
                EntryKind::Lease
                    if !LiveLeases::is_live(e, self.now, options.stale_lease_after) =>
                {
                    Some(RemovalReason::StaleLease)
                }
                _ if e.obsolete => Some(RemovalReason::Obsolete),
                k if k.is_record() && e.is_expired(self.now) => Some(RemovalReason::Expired),
                EntryKind::Inputs if e.run_prefix().is_some_and(|p| completed.contains(&p)) => {
                    Some(RemovalReason::FinishedRun)
                }
                EntryKind::Used if e.key.as_deref().is_some_and(|r| !records.contains(r)) => {
                    Some(RemovalReason::Orphaned)
                }
                _ => None,
            };
            match reason {
                Some(_) if live.covers(e) => {
                    removal.kept_live += 1;
                    kept.push(e);
                }
                Some(reason) => doomed.push((e.clone(), reason)),
                None => kept.push(e),
            }
        }
        let mut remaining: u64 = kept.iter().map(|e| e.size).sum();
        if let Some(max) = options.max_size.filter(|max| remaining > *max) {
            let markers: HashMap<&str, &Entry> = kept
                .iter()
                .filter(|e| e.kind == EntryKind::Used)
                .filter_map(|e| Some((e.key.as_deref()?, *e)))
                .collect();
            let mut candidates: Vec<(&Entry, Option<&Entry>)> = kept
                .iter()
                .filter(|e| e.kind == EntryKind::Cache && !live.covers(e))
                .map(|e| (*e, markers.get(e.path.as_str()).copied()))
                .collect();
            let last_use = |(e, m): &(&Entry, Option<&Entry>)| {
                m.map_or(e.created, |m| m.modified.max(e.created))
            };
            candidates.sort_by_key(|c| (last_use(c), c.0.path.clone()));
            for (e, marker) in candidates {
                if remaining <= max {
                    break;
                }
                remaining -= e.size;
                if let Some(m) = marker {
                    // Removed with its record.
                    remaining -= m.size;
                }
                doomed.push((e.clone(), RemovalReason::Evicted));
            }
        }
        removal.remaining_bytes = remaining;
        self.remove(doomed, &mut removal).await?;
        Ok(removal)
    }

    /// The prefixes of flow runs, among those with persisted inputs, whose summary says
    /// they completed.
    async fn completed_runs(&self, entries: &[Entry]) -> Result<HashSet<String>> {
        let with_inputs: HashSet<String> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Inputs)
            .filter_map(Entry::run_prefix)
            .collect();
        let done: Vec<Option<String>> = stream::iter(with_inputs)
            .map(|prefix| {
                let backend = self.backend.clone();
                async move {
                    let key = Key::parse(format!("{prefix}flow.json"))?;
                    let state = match backend.get(&key).await {
                        Ok(bytes) => run_state(&bytes),
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(e),
                    };
                    let completed = state.is_some_and(|s| is_completed(&s));
                    Ok(completed.then_some(prefix))
                }
            })
            .buffer_unordered(self.jobs)
            .try_collect()
            .await?;
        Ok(done.into_iter().flatten().collect())
    }
}

/// The `state` of a flow run summary.
pub(crate) fn run_state(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("state")?.as_str().map(str::to_owned)
}

/// Whether a state, as displayed, is a completed one (`Completed()`, `Cached(...)`).
pub(crate) fn is_completed(state: &str) -> bool {
    state.starts_with("Completed") || state.starts_with("Cached")
}
