//! Removing what a filter selects (`clear`), and the removal summary that `clear` and
//! `prune` return.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{stream, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::backend::{DynBackend, Key, Result, StagedObject};
use crate::cache::LeaseHolder;
use crate::maintenance::{last_use, Entry, EntryKind, Filter, Maintenance, Totals};

/// Leases unchanged for longer than this are stale by default: their holder renews
/// far more often (every 10 s by default), so one that has not for an hour is gone.
pub const DEFAULT_STALE_LEASE_AFTER: Duration = Duration::from_secs(3600);

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
    /// The entries removed, sorted by path. Empty when they were handed one by one
    /// to the caller instead ([`Maintenance::clear_each`], [`Maintenance::prune_each`]).
    pub removed: Vec<Removed>,
    /// How many entries were removed and their bytes (the removed entries, counted as
    /// they went, also when they were not kept in [`Removal::removed`]).
    pub total: Totals,
    /// Entries that were selected but kept because a live lease covers them.
    pub kept_live: u64,
    /// The bytes left in the entries looked at, after the removal.
    pub remaining_bytes: u64,
    /// Leftovers of unfinished writes the store's own clean-up
    /// ([`Backend::clean_up`](crate::backend::Backend::clean_up)) removed beyond those
    /// listed in `removed` (0 on the stores cairn ships: they list all of theirs).
    pub cleaned_up: u64,
}

impl Removal {
    /// How many entries.
    pub fn entries(&self) -> u64 {
        self.total.entries
    }
    /// How many bytes.
    pub fn bytes(&self) -> u64 {
        self.total.bytes
    }
}

/// Entries are removed in batches of this many as the listing goes on.
pub(crate) const REMOVAL_BATCH: usize = 1000;

/// The leases that are live: not released and renewed within the lease staleness of
/// the [`Maintenance`]. Cache leases are read once (they are few: one per computation
/// in progress or abandoned); a flow run's lease is read when an entry of that run is
/// first met, and remembered per run.
#[derive(Debug)]
pub(crate) struct LiveLeases {
    /// Cache leases (`leases/v1/...`) that are live.
    cache: HashSet<String>,
    /// Flow-run prefixes (`runs/v1/<flow>/<run>/`) and whether their lease is live.
    runs: Mutex<HashMap<String, bool>>,
    backend: DynBackend,
    now: DateTime<Utc>,
    stale_after: Duration,
}

impl LiveLeases {
    /// Whether a lease entry is live at `now`.
    pub(crate) fn is_live(entry: &Entry, now: DateTime<Utc>, stale_after: Duration) -> bool {
        let stale_after = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
        entry.kind == EntryKind::Lease
            && entry.released != Some(true)
            && entry.modified > now - stale_after
    }

    /// Reads the cache leases.
    pub(crate) async fn find(m: &Maintenance) -> Result<Self> {
        let mut cache = HashSet::new();
        let filter = Filter {
            kinds: vec![EntryKind::Lease],
            prefix: Some("leases/".into()),
            ..Filter::default()
        };
        let mut leases = m.list(&filter);
        while let Some(lease) = leases.try_next().await? {
            if Self::is_live(&lease, m.now, m.stale_leases_after) {
                cache.insert(lease.path);
            }
        }
        Ok(LiveLeases {
            cache,
            runs: Mutex::new(HashMap::new()),
            backend: m.backend.clone(),
            now: m.now,
            stale_after: m.stale_leases_after,
        })
    }

    /// Whether a live lease covers `entry` (it is one, guards it, or holds its run).
    pub(crate) async fn covers(&self, entry: &Entry) -> Result<bool> {
        if self.cache.contains(&entry.path) {
            return Ok(true);
        }
        if entry.kind == EntryKind::Cache {
            if let Some(rest) = entry.path.strip_prefix("cache/") {
                if self.cache.contains(&format!("leases/{rest}")) {
                    return Ok(true);
                }
            }
        }
        let Some(prefix) = entry.run_prefix() else {
            return Ok(false);
        };
        let known = self
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&prefix)
            .copied();
        if let Some(live) = known {
            return Ok(live);
        }
        let live = run_lease_is_live(&self.backend, &prefix, self.now, self.stale_after).await?;
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(prefix, live);
        Ok(live)
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
    /// The returned [`Removal::removed`] lists every entry; for a store too large to
    /// hold that list, [`Maintenance::clear_each`] hands them over one by one.
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
        let mut all = Vec::new();
        let mut removal = self.clear_each(filter, dry_run, |r| all.push(r)).await?;
        all.sort_by(|a, b| a.path.cmp(&b.path));
        removal.removed = all;
        Ok(removal)
    }

    /// [`Maintenance::clear`] in bounded memory: entries are removed in batches as the
    /// listing goes on, and each one removed (or that would be, in a dry run) is
    /// handed to `on_removed` (in listing order) instead of being kept; the returned
    /// [`Removal`] has the counts and an empty [`Removal::removed`].
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
    /// for i in 0..3 {
    ///     let path = format!("cache/v1/default/0{i}/0{i}ff");
    ///     store.write_record(&path, &i, RecordInfo::default(), PutMode::Create).await?;
    /// }
    /// let mut seen = 0;
    /// let removal = Maintenance::new(&store)
    ///     .clear_each(&Filter::default(), false, |_| seen += 1)
    ///     .await?;
    /// assert_eq!((seen, removal.entries(), removal.removed.len()), (3, 3, 0));
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub async fn clear_each(
        &self,
        filter: &Filter,
        dry_run: bool,
        mut on_removed: impl FnMut(Removed),
    ) -> Result<Removal> {
        let live = LiveLeases::find(self).await?;
        let mut removal = Removal {
            dry_run,
            ..Removal::default()
        };
        let mut listing = self.list(filter);
        let mut batch = Vec::new();
        while let Some(e) = listing.try_next().await? {
            if live.covers(&e).await? {
                removal.kept_live += 1;
                removal.remaining_bytes += e.size;
                continue;
            }
            batch.push((e, RemovalReason::Selected));
            if batch.len() >= REMOVAL_BATCH {
                self.remove(std::mem::take(&mut batch), &mut removal, &mut on_removed)
                    .await?;
            }
        }
        self.remove(batch, &mut removal, &mut on_removed).await?;
        Ok(removal)
    }

    /// Removes `doomed` (unless the removal is a dry run), counts them in `removal`
    /// and hands each to `on_removed`.
    pub(crate) async fn remove(
        &self,
        doomed: Vec<(Entry, RemovalReason)>,
        removal: &mut Removal,
        on_removed: &mut impl FnMut(Removed),
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
        for (e, reason) in doomed {
            removal.total.add(e.size);
            on_removed(Removed {
                path: e.path,
                kind: e.kind,
                size: e.size,
                reason,
            });
        }
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
