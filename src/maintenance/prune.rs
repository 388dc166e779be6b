//! Removing what is no longer of use, and evicting to a size (`prune`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use crate::backend::{BackendExt, Key, Result};
use crate::maintenance::clear::{LiveLeases, REMOVAL_BATCH};
use crate::maintenance::{Entry, EntryKind, Filter, Maintenance, Removal, RemovalReason};

/// What [`Maintenance::prune`] removes beyond what it always removes.
///
/// How long a lease may go unrenewed is the [`Maintenance`]'s
/// ([`Maintenance::stale_leases_after`]).
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
    /// Leftovers of unfinished writes (staged files of killed writers on a disk, open
    /// multipart uploads on S3) are removed once older than this (default an hour: a
    /// write in progress is far younger).
    pub staged_grace: Duration,
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
            max_size: None,
            dry_run: false,
        }
    }
}

/// A cache record that `max_size` may evict: its path, size, creation.
type Candidate = (String, u64, DateTime<Utc>);

impl Maintenance {
    /// Removes what no run will use again:
    ///
    /// - expired records;
    /// - records of an older layout or record format version than this cairn reads
    ///   (a newer one's are kept);
    /// - stale leases (released, or not renewed for
    ///   [`Maintenance::stale_leases_after`]);
    /// - persisted inputs of flow runs that completed (a failed run keeps them, to be
    ///   resumed);
    /// - leftovers of unfinished writes older than [`PruneOptions::staged_grace`]:
    ///   staged files of killed writers, open multipart uploads on S3 (what
    ///   [`Backend::list_staged`] lists; then the store's own
    ///   [`Backend::clean_up`] runs with the same grace, and what it removes beyond
    ///   those is counted in [`Removal::cleaned_up`]);
    /// - `used` markers of records that are gone;
    ///
    /// and, with [`PruneOptions::max_size`], evicts cache records least recently used
    /// first (see [`note_use`](crate::maintenance::note_use)) until the entries fit.
    /// Nothing a live lease covers is removed. Entries are read for their headers even
    /// with [`Maintenance::listing_only`] (expiry and leases need them).
    ///
    /// [`Backend::list_staged`]: crate::backend::Backend::list_staged
    /// [`Backend::clean_up`]: crate::backend::Backend::clean_up
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
        let mut all = Vec::new();
        let mut removal = self.prune_each(options, |r| all.push(r)).await?;
        all.sort_by(|a, b| a.path.cmp(&b.path));
        removal.removed = all;
        Ok(removal)
    }

    /// [`Maintenance::prune`] as the listing goes: entries are removed in batches, and
    /// each one removed (or that would be, in a dry run) is handed to `on_removed`
    /// instead of being kept; the returned [`Removal`] has the counts and an empty
    /// [`Removal::removed`]. Memory does not grow with the store's entries, except
    /// with [`PruneOptions::max_size`]: eviction ranks every evictable cache record
    /// (its path, size and time, about a hundred bytes each) and every `used` marker.
    ///
    /// # Errors
    /// The store's errors; what was removed before one stays removed.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use cairn::maintenance::{Maintenance, PruneOptions};
    /// use cairn::{record::RecordInfo, PutMode, ResultStore};
    ///
    /// let store = ResultStore::memory();
    /// let expired = RecordInfo { expires: Some(chrono::Utc::now()), ..Default::default() };
    /// store.write_record("cache/v1/default/ab/ab01", &1, expired, PutMode::Create).await?;
    /// let options = PruneOptions { dry_run: true, ..PruneOptions::default() };
    /// let mut paths = Vec::new();
    /// let would = Maintenance::new(&store).prune_each(&options, |r| paths.push(r.path)).await?;
    /// assert_eq!((would.entries(), paths.len()), (1, 1));
    /// assert!(store.exists("cache/v1/default/ab/ab01").await?); // a dry run
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub async fn prune_each(
        &self,
        options: &PruneOptions,
        mut on_removed: impl FnMut(crate::maintenance::Removed),
    ) -> Result<Removal> {
        let m = self.clone().listing_only(false);
        let live = LiveLeases::find(&m).await?;
        let completed: Mutex<HashMap<String, bool>> = Mutex::new(HashMap::new());
        let grace =
            chrono::Duration::from_std(options.staged_grace).unwrap_or(chrono::Duration::MAX);
        let evicting = options.max_size.is_some();
        let mut removal = Removal {
            dry_run: options.dry_run,
            ..Removal::default()
        };
        let all = Filter {
            kinds: EntryKind::ALL.to_vec(),
            ..Filter::default()
        };
        let (live, completed) = (&live, &completed);
        let mut decided = m
            .list(&all)
            .map_ok(|e| {
                let m = &m;
                async move {
                    let reason = m.reason_to_remove(&e, grace, completed).await?;
                    let may_evict = evicting && e.kind == EntryKind::Cache;
                    let covered = if reason.is_some() || may_evict {
                        live.covers(&e).await?
                    } else {
                        false
                    };
                    Ok::<_, crate::Error>((e, reason, covered))
                }
            })
            .try_buffered(m.jobs);
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut markers: HashMap<String, (DateTime<Utc>, u64)> = HashMap::new();
        let mut batch = Vec::new();
        while let Some((e, reason, covered)) = decided.try_next().await? {
            match reason {
                Some(reason) if !covered => {
                    batch.push((e, reason));
                    if batch.len() >= REMOVAL_BATCH {
                        m.remove(std::mem::take(&mut batch), &mut removal, &mut on_removed)
                            .await?;
                    }
                    continue;
                }
                Some(_) => removal.kept_live += 1,
                None => {}
            }
            removal.remaining_bytes += e.size;
            if evicting && !covered && e.kind == EntryKind::Cache {
                candidates.push((e.path, e.size, e.created));
            } else if evicting && e.kind == EntryKind::Used {
                if let Some(record) = e.key {
                    markers.insert(record, (e.modified, e.size));
                }
            }
        }
        drop(decided);
        m.remove(std::mem::take(&mut batch), &mut removal, &mut on_removed)
            .await?;
        if let Some(max) = options
            .max_size
            .filter(|max| removal.remaining_bytes > *max)
        {
            let last_use = |(path, _, created): &Candidate| {
                markers
                    .get(path)
                    .map_or(*created, |(used, _)| (*used).max(*created))
            };
            candidates.sort_by_cached_key(|c| (last_use(c), c.0.clone()));
            for (path, size, created) in candidates {
                if removal.remaining_bytes <= max {
                    break;
                }
                removal.remaining_bytes -= size;
                if let Some((_, marker)) = markers.get(&path) {
                    // Removed with its record.
                    removal.remaining_bytes -= marker;
                }
                let e = Entry::evictable(path, size, created);
                batch.push((e, RemovalReason::Evicted));
                if batch.len() >= REMOVAL_BATCH {
                    m.remove(std::mem::take(&mut batch), &mut removal, &mut on_removed)
                        .await?;
                }
            }
            m.remove(batch, &mut removal, &mut on_removed).await?;
        }
        if !options.dry_run {
            // Never younger than the listing's cutoff, when judged at another time.
            let behind = (Utc::now() - m.now).to_std().unwrap_or_default();
            let cleaned = m
                .backend
                .clean_up(options.staged_grace.saturating_add(behind))
                .await?;
            removal.cleaned_up = cleaned.total() as u64;
        }
        Ok(removal)
    }

    /// Why prune removes `e`, if it does (a live lease may still keep it).
    async fn reason_to_remove(
        &self,
        e: &Entry,
        grace: chrono::Duration,
        completed: &Mutex<HashMap<String, bool>>,
    ) -> Result<Option<RemovalReason>> {
        Ok(match e.kind {
            EntryKind::Staged if e.modified <= self.now - grace => Some(RemovalReason::Staged),
            EntryKind::Staged => None,
            EntryKind::Lease if !LiveLeases::is_live(e, self.now, self.stale_leases_after) => {
                Some(RemovalReason::StaleLease)
            }
            _ if e.obsolete => Some(RemovalReason::Obsolete),
            k if k.is_record() && e.is_expired(self.now) => Some(RemovalReason::Expired),
            EntryKind::Inputs => match e.run_prefix() {
                Some(p) if self.run_completed(&p, completed).await? => {
                    Some(RemovalReason::FinishedRun)
                }
                _ => None,
            },
            EntryKind::Used => match e.key.as_deref().map(Key::parse) {
                Some(Ok(record)) if !self.backend.exists(&record).await? => {
                    Some(RemovalReason::Orphaned)
                }
                _ => None,
            },
            _ => None,
        })
    }

    /// Whether the flow run at `prefix` completed, by its summary (read once per run).
    async fn run_completed(
        &self,
        prefix: &str,
        memo: &Mutex<HashMap<String, bool>>,
    ) -> Result<bool> {
        if let Some(done) = memo.lock().unwrap_or_else(|e| e.into_inner()).get(prefix) {
            return Ok(*done);
        }
        let key = Key::parse(format!("{prefix}flow.json"))?;
        let state = match self.backend.get(&key).await {
            Ok(bytes) => run_state(&bytes),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let done = state.is_some_and(|s| is_completed(&s));
        memo.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(prefix.to_owned(), done);
        Ok(done)
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
