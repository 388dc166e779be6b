//! Removing what a filter selects (`clear`), and the removal summary that `clear` and
//! `prune` return.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{stream, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::backend::{DynBackend, Key, Result, StagedObject};
use crate::cache::LeaseHolder;
use crate::maintenance::{last_use, Entry, EntryKind, Filter, Maintenance};

/// Leases unchanged for longer than this are stale by default: their holder renews
/// far more often (every 10 s by default), so one that has not for an hour is gone.
pub(crate) const DEFAULT_STALE_LEASE_AFTER: Duration = Duration::from_secs(3600);

/// Why an entry is (or would be) removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemovalReason {
    /// A `clear` selected it.
    Selected,
    /// It has expired.
    Expired,
    /// This cairn no longer reads its layout or record format version.
    Obsolete,
    /// A lease released, or not renewed for longer than a holder ever waits.
    StaleLease,
    /// Persisted inputs of a flow run that completed.
    FinishedRun,
    /// A file left by a writer that was killed, older than the grace period.
    Staged,
    /// A `used` marker of a record that is gone.
    Orphaned,
    /// Evicted, least recently used first, to bring the store under its size limit.
    Evicted,
}

impl RemovalReason {
    /// A short name for the reason.
    pub fn name(self) -> &'static str {
        match self {
            RemovalReason::Selected => "selected",
            RemovalReason::Expired => "expired",
            RemovalReason::Obsolete => "obsolete",
            RemovalReason::StaleLease => "stale-lease",
            RemovalReason::FinishedRun => "finished-run",
            RemovalReason::Staged => "staged",
            RemovalReason::Orphaned => "orphaned",
            RemovalReason::Evicted => "evicted",
        }
    }
}

/// One entry removed (or that would be, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Its path.
    pub path: String,
    /// Its kind.
    pub kind: EntryKind,
    /// Its size in bytes.
    pub size: u64,
    /// Why.
    pub reason: RemovalReason,
}

/// What [`Maintenance::clear`] or [`Maintenance::prune`] removed, or would remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Removal {
    /// Whether this was a dry run (nothing was removed).
    pub dry_run: bool,
    /// The entries removed, sorted by path.
    pub removed: Vec<Removed>,
    /// Entries that were selected but kept because a live lease covers them.
    pub kept_live: u64,
    /// The bytes left in the entries looked at, after the removal.
    pub remaining_bytes: u64,
}

impl Removal {
    /// How many entries.
    pub fn entries(&self) -> u64 {
        self.removed.len() as u64
    }
    /// How many bytes.
    pub fn bytes(&self) -> u64 {
        self.removed.iter().map(|r| r.size).sum()
    }
}

/// The leases that are live: not released and renewed within `stale_after` of `now`.
#[derive(Debug, Default)]
pub(crate) struct LiveLeases {
    /// Cache leases (`leases/v1/...`) that are live.
    cache: HashSet<String>,
    /// Flow-run prefixes (`runs/v1/<flow>/<run>/`) whose lease is live.
    runs: HashSet<String>,
}

impl LiveLeases {
    /// Whether a lease entry is live at `now`.
    pub(crate) fn is_live(entry: &Entry, now: DateTime<Utc>, stale_after: Duration) -> bool {
        let stale_after = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
        entry.kind == EntryKind::Lease
            && entry.released != Some(true)
            && entry.modified > now - stale_after
    }

    /// Reads the cache leases and the leases of the flow runs `candidates` belong to.
    pub(crate) async fn find(
        m: &Maintenance,
        candidates: &[Entry],
        stale_after: Duration,
    ) -> Result<Self> {
        let mut live = LiveLeases::default();
        let filter = Filter {
            kinds: vec![EntryKind::Lease],
            prefix: Some("leases/".into()),
            ..Filter::default()
        };
        let mut leases = m.list(&filter);
        while let Some(lease) = leases.try_next().await? {
            if Self::is_live(&lease, m.now, stale_after) {
                live.cache.insert(lease.path);
            }
        }
        let runs: HashSet<String> = candidates.iter().filter_map(Entry::run_prefix).collect();
        let found: Vec<Option<String>> = stream::iter(runs)
            .map(|prefix| {
                let backend = m.backend.clone();
                async move {
                    let live = run_lease_is_live(&backend, &prefix, m.now, stale_after).await?;
                    Ok::<_, crate::Error>(live.then_some(prefix))
                }
            })
            .buffer_unordered(m.jobs)
            .try_collect()
            .await?;
        live.runs.extend(found.into_iter().flatten());
        Ok(live)
    }

    /// Whether a live lease covers `entry` (it is one, guards it, or holds its run).
    pub(crate) fn covers(&self, entry: &Entry) -> bool {
        if self.cache.contains(&entry.path) {
            return true;
        }
        if entry.kind == EntryKind::Cache {
            if let Some(rest) = entry.path.strip_prefix("cache/") {
                if self.cache.contains(&format!("leases/{rest}")) {
                    return true;
                }
            }
        }
        entry.run_prefix().is_some_and(|p| self.runs.contains(&p))
    }
}

async fn run_lease_is_live(
    backend: &DynBackend,
    prefix: &str,
    now: DateTime<Utc>,
    stale_after: Duration,
) -> Result<bool> {
    let key = Key::parse(format!("{prefix}lease"))?;
    let (meta, bytes) = match backend.get_bytes(&key, None).await {
        Ok(found) => found,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e),
    };
    let released = serde_json::from_slice::<LeaseHolder>(&bytes).is_ok_and(|h| h.released);
    let stale_after = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    Ok(!released && meta.last_modified > now - stale_after)
}

impl Maintenance {
    /// Removes every entry `filter` selects, except those a live lease covers (a
    /// running flow run's entries, a cache record being computed, a live lease
    /// itself). With `dry_run`, removes nothing and reports exactly what it would
    /// remove. Removing a cache record also removes its `used` marker.
    ///
    /// # Errors
    /// The store's errors; what was removed before one stays removed.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use cairn::maintenance::{Filter, Maintenance};
    /// use cairn::{record::RecordInfo, PutMode, ResultStore};
    ///
    /// let store = ResultStore::memory();
    /// store.write_record("cache/v1/default/ab/ab01", &1, RecordInfo::default(), PutMode::Create).await?;
    /// let m = Maintenance::new(&store);
    /// let would = m.clear(&Filter::default(), true).await?;
    /// assert_eq!((would.dry_run, would.entries()), (true, 1));
    /// assert!(store.exists("cache/v1/default/ab/ab01").await?);
    /// m.clear(&Filter::default(), false).await?;
    /// assert!(!store.exists("cache/v1/default/ab/ab01").await?);
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub async fn clear(&self, filter: &Filter, dry_run: bool) -> Result<Removal> {
        let selected: Vec<Entry> = self.list(filter).try_collect().await?;
        let live = LiveLeases::find(self, &selected, DEFAULT_STALE_LEASE_AFTER).await?;
        let mut removal = Removal {
            dry_run,
            ..Removal::default()
        };
        let mut doomed = Vec::new();
        for e in selected {
            if live.covers(&e) {
                removal.kept_live += 1;
                removal.remaining_bytes += e.size;
            } else {
                doomed.push((e, RemovalReason::Selected));
            }
        }
        self.remove(doomed, &mut removal).await?;
        Ok(removal)
    }

    /// Removes `doomed` (unless the removal is a dry run) and records them in `removal`.
    pub(crate) async fn remove(
        &self,
        doomed: Vec<(Entry, RemovalReason)>,
        removal: &mut Removal,
    ) -> Result<()> {
        if !removal.dry_run {
            let progress = self.progress.clone();
            stream::iter(doomed.iter())
                .map(|(e, _)| {
                    let backend = self.backend.clone();
                    let progress = progress.clone();
                    async move {
                        delete_entry(&backend, e).await?;
                        progress.removed_one();
                        Ok::<_, crate::Error>(())
                    }
                })
                .buffer_unordered(self.jobs)
                .try_collect::<()>()
                .await?;
        }
        removal
            .removed
            .extend(doomed.into_iter().map(|(e, reason)| Removed {
                path: e.path,
                kind: e.kind,
                size: e.size,
                reason,
            }));
        removal.removed.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(())
    }
}

async fn delete_entry(backend: &DynBackend, e: &Entry) -> Result<()> {
    if e.kind == EntryKind::Staged {
        let staged = StagedObject {
            path: e.path.clone(),
            size: e.size,
            last_modified: e.modified,
        };
        return backend.delete_staged(&staged).await;
    }
    backend.delete(&Key::parse(e.path.as_str())?).await?;
    if e.kind == EntryKind::Cache {
        backend
            .delete(&Key::parse(last_use::used_marker_location(&e.path))?)
            .await?;
    }
    Ok(())
}
