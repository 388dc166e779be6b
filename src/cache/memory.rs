//! The memory tier: cache hits already seen in this process, served without touching
//! the store.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};

use crate::cache::hashing::Digest;

/// An entry's identity: the store it mirrors (by URL) and the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TierKey {
    pub store: Arc<str>,
    pub key: Digest,
}

impl std::hash::Hash for TierKey {
    /// The key is a BLAKE3 digest, already uniformly spread: eight of its bytes are a
    /// hash. The store's URL is compared on lookup, not hashed.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let bytes = self.key.as_bytes();
        state.write_u64(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")));
    }
}

/// Passes a [`TierKey`]'s eight digest bytes through as the hash.
#[derive(Default)]
pub(crate) struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `TierKey`; fold the bytes in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type DigestMap<V> = HashMap<TierKey, V, std::hash::BuildHasherDefault<DigestHasher>>;

/// The default bound on the memory tier: 256 MiB of values.
pub const DEFAULT_MEMORY_TIER_BYTES: usize = 256 << 20;

/// The default time a memory-tier entry is trusted before the store is asked whether
/// the record changed: 1 s.
pub const DEFAULT_REVALIDATE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    expires: Option<DateTime<Utc>>,
    size: usize,
    generation: u64,
    /// The store's version of the record the value was read from or written as.
    version: Option<String>,
    /// When the store last confirmed that version.
    checked: DateTime<Utc>,
    /// The task that read or wrote it.
    task: Option<Arc<str>>,
}

/// What the tier holds for a key.
pub(crate) enum TierHit<T> {
    /// Confirmed by the store within the trust bound: serve it.
    Fresh(T),
    /// Held, but last confirmed longer ago than the bound: serve it only if the store
    /// still holds `version`.
    Stale { value: T, version: Option<String> },
}

#[derive(Default)]
struct Inner {
    entries: DigestMap<Entry>,
    /// Insertion order, for eviction; stale generations are skipped.
    order: VecDeque<(TierKey, u64)>,
    bytes: usize,
    limit: usize,
    generation: u64,
}

/// A bounded in-process map from cache keys (qualified by their store) to values. Values are kept as the task's own type, so a hit is a lookup and a clone.
///
/// When the values held exceed the limit (counted as their serialized size), the
/// oldest entries are dropped first. Expiry is checked on every hit.
///
/// **How long an entry is trusted.** Another process may replace a record this tier
/// holds (`overwrite_cache`, `refresh_cache`). An entry is served without asking the
/// store for a bounded time after the store last confirmed it — 1 s by default
/// ([`DEFAULT_REVALIDATE_AFTER`]; [`crate::Task::memory_tier_revalidate_after`],
/// `[cache] memory_tier_revalidate_after_ms`, `CAIRN__CACHE__MEMORY_TIER_REVALIDATE_AFTER_MS`).
/// After that, a hit asks the store for the record's version (a HEAD, a `stat`): the
/// same version is served and trusted for another bound; another version (or none)
/// makes the run read the record again. `0` checks on every hit. So a value replaced
/// in the store is served by other processes for at most the bound.
///
/// Entries can be dropped one by one ([`MemoryTier::remove_task_run`]), by task
/// ([`MemoryTier::remove_task`]) or all at once ([`MemoryTier::clear`]).
pub struct MemoryTier {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("MemoryTier")
            .field("entries", &inner.entries.len())
            .field("bytes", &inner.bytes)
            .field("limit", &inner.limit)
            .finish()
    }
}

impl MemoryTier {
    /// An empty tier holding at most `limit` bytes of values.
    pub fn new(limit: usize) -> Self {
        MemoryTier {
            inner: Mutex::new(Inner {
                limit,
                ..Inner::default()
            }),
        }
    }

    /// The process-wide tier every task uses.
    pub fn global() -> &'static MemoryTier {
        static GLOBAL: OnceLock<MemoryTier> = OnceLock::new();
        GLOBAL.get_or_init(|| MemoryTier::new(DEFAULT_MEMORY_TIER_BYTES))
    }

    /// Changes the bound, dropping the oldest entries if the tier is now over it.
    /// `0` turns the tier off.
    pub fn set_limit(&self, limit: usize) {
        let mut inner = self.lock();
        inner.limit = limit;
        inner.evict();
    }

    /// The number of entries held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the tier is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of values held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.order.clear();
        inner.bytes = 0;
    }

    /// Drops the entry of one task run's cache record, as its [`crate::TaskRunInfo`]
    /// names it (`cache_key` and `cache_store`); returns whether one was held.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cairn::{cache::{MemoryTier, INPUTS}, ResultStore, Task};
    /// let task = Task::infallible("one", |x: u8| async move { x })
    ///     .cache_policy(INPUTS)
    ///     .result(ResultStore::memory());
    /// let run = task.run(1).await;
    /// assert!(MemoryTier::global().remove_task_run(run.info()));
    /// assert!(!MemoryTier::global().remove_task_run(run.info()));
    /// assert_eq!(MemoryTier::global().remove_task("one"), 0);
    /// # });
    /// ```
    pub fn remove_task_run(&self, run: &crate::TaskRunInfo) -> bool {
        let (Some(store), Some(hex)) = (&run.cache_store, &run.cache_key) else {
            return false;
        };
        let Ok(key) = hex.parse::<Digest>() else {
            return false;
        };
        let key = TierKey {
            store: Arc::from(store.as_str()),
            key,
        };
        let mut inner = self.lock();
        inner.remove(&key)
    }

    /// Drops every entry mirroring the store at `url` ([`crate::ResultStore::url`]);
    /// returns how many.
    pub fn remove_store(&self, url: &str) -> usize {
        let mut inner = self.lock();
        let keys: Vec<TierKey> = inner
            .entries
            .keys()
            .filter(|k| &*k.store == url)
            .cloned()
            .collect();
        for key in &keys {
            inner.remove(key);
        }
        keys.len()
    }

    /// Drops every entry that task `task` wrote or read; returns how many.
    pub fn remove_task(&self, task: &str) -> usize {
        let mut inner = self.lock();
        let keys: Vec<TierKey> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.task.as_deref() == Some(task))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            inner.remove(key);
        }
        keys.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value at `key` if present, unexpired at `now` and of type `T`, whatever
    /// its age.
    #[cfg(test)]
    pub(crate) fn get<T: Clone + 'static>(&self, key: &TierKey, now: DateTime<Utc>) -> Option<T> {
        match self.lookup(key, now, chrono::Duration::MAX)? {
            TierHit::Fresh(v) | TierHit::Stale { value: v, .. } => Some(v),
        }
    }

    /// The value at `key` if present, unexpired at `now` and of type `T`: fresh when
    /// the store confirmed it less than `trust` before `now`.
    pub(crate) fn lookup<T: Clone + 'static>(
        &self,
        key: &TierKey,
        now: DateTime<Utc>,
        trust: chrono::Duration,
    ) -> Option<TierHit<T>> {
        let (value, fresh, version) = {
            let inner = self.lock();
            let entry = inner.entries.get(key)?;
            if entry.expires.is_some_and(|e| e <= now) {
                return None;
            }
            let fresh = trust > chrono::Duration::zero()
                && now.signed_duration_since(entry.checked) < trust;
            let version = if fresh { None } else { entry.version.clone() };
            (entry.value.clone(), fresh, version)
        };
        let value = value.downcast_ref::<T>().cloned()?;
        Some(if fresh {
            TierHit::Fresh(value)
        } else {
            TierHit::Stale { value, version }
        })
    }

    /// Records that the store confirmed the entry at `key` at `now`.
    pub(crate) fn confirm(&self, key: &TierKey, now: DateTime<Utc>) {
        if let Some(entry) = self.lock().entries.get_mut(key) {
            entry.checked = now;
        }
    }

    /// Drops the entry at `key`, if any.
    pub(crate) fn forget(&self, key: &TierKey) {
        self.lock().remove(key);
    }

    /// Holds `value` at `key`.
    #[cfg(test)]
    pub(crate) fn insert<T: Send + Sync + 'static>(
        &self,
        key: &TierKey,
        value: T,
        expires: Option<DateTime<Utc>>,
        size: usize,
    ) {
        self.insert_versioned(key, value, expires, size, None, Utc::now(), None);
    }

    /// Holds `value` at `key`, as the record of `version` that the store confirmed at
    /// `checked`, written or read by `task`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert_versioned<T: Send + Sync + 'static>(
        &self,
        key: &TierKey,
        value: T,
        expires: Option<DateTime<Utc>>,
        size: usize,
        version: Option<String>,
        checked: DateTime<Utc>,
        task: Option<&str>,
    ) {
        let mut inner = self.lock();
        if size > inner.limit {
            inner.remove(key);
            return;
        }
        inner.generation += 1;
        let generation = inner.generation;
        let key = key.clone();
        let old = inner.entries.insert(
            key.clone(),
            Entry {
                value: Arc::new(value),
                expires,
                size,
                generation,
                version,
                checked,
                task: task.map(Arc::from),
            },
        );
        if let Some(old) = old {
            inner.bytes -= old.size;
        }
        inner.bytes += size;
        inner.order.push_back((key, generation));
        inner.evict();
    }
}

impl Inner {
    fn remove(&mut self, key: &TierKey) -> bool {
        match self.entries.remove(key) {
            Some(old) => {
                self.bytes -= old.size;
                true
            }
            None => false,
        }
    }

    fn evict(&mut self) {
        while self.bytes > self.limit || (self.limit == 0 && !self.entries.is_empty()) {
            let Some((key, generation)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.generation == generation)
            {
                self.remove(&key);
            }
        }
        // Keep the order queue from growing without bound when keys are rewritten.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(k, g)| entries.get(k).is_some_and(|e| e.generation == *g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn k(name: &str) -> TierKey {
        TierKey {
            store: Arc::from("memory://test"),
            key: crate::cache::hashing::hash_value(name).unwrap(),
        }
    }

    #[test]
    fn hits_clone_the_value_and_check_type_and_expiry() {
        let tier = MemoryTier::new(1 << 20);
        let now = Utc::now();
        tier.insert(&k("s/a"), 5u64, Some(now + Duration::seconds(10)), 8);
        assert_eq!(tier.get::<u64>(&k("s/a"), now), Some(5));
        assert_eq!(tier.get::<String>(&k("s/a"), now), None);
        assert_eq!(
            tier.get::<u64>(&k("s/a"), now + Duration::seconds(10)),
            None
        );
        assert_eq!(tier.get::<u64>(&k("s/b"), now), None);
    }

    #[test]
    fn the_oldest_entries_go_first_when_over_the_limit() {
        let tier = MemoryTier::new(100);
        let now = Utc::now();
        for i in 0..5 {
            tier.insert(&k(&format!("k{i}")), i, None, 30);
        }
        assert_eq!(tier.len(), 3);
        assert!(tier.bytes() <= 100);
        assert_eq!(tier.get::<i32>(&k("k0"), now), None);
        assert_eq!(tier.get::<i32>(&k("k4"), now), Some(4));
        // Rewriting a key replaces its size rather than adding to it.
        tier.insert(&k("k4"), 40, None, 10);
        assert_eq!(tier.bytes(), 70);
        // A value bigger than the whole tier is not held.
        tier.insert(&k("huge"), 1, None, 1000);
        assert_eq!(tier.get::<i32>(&k("huge"), now), None);
        tier.set_limit(0);
        assert!(tier.is_empty());
    }
}
