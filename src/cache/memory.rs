//! The memory tier: cache hits already seen in this process, served without touching
//! the store.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crossbeam_utils::sync::ShardedLock;

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
        hash_digest(&self.key, state);
    }
}

fn hash_digest<H: std::hash::Hasher>(key: &Digest, state: &mut H) {
    let bytes = key.as_bytes();
    state.write_u64(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")));
}

/// A key as a hit looks it up: the store's URL borrowed, so that a hit copies no
/// `Arc` (whose count every core would write on every hit).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TierKeyRef<'a> {
    pub store: &'a str,
    pub key: Digest,
}

impl<'a> From<&'a TierKey> for TierKeyRef<'a> {
    fn from(key: &'a TierKey) -> Self {
        TierKeyRef {
            store: &key.store,
            key: key.key,
        }
    }
}

impl<'a> From<&TierKeyRef<'a>> for TierKeyRef<'a> {
    fn from(key: &TierKeyRef<'a>) -> Self {
        *key
    }
}

impl std::hash::Hash for TierKeyRef<'_> {
    // As `TierKey` hashes: the map finds a borrowed key where it put the owned one.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_digest(&self.key, state);
    }
}

impl hashbrown::Equivalent<TierKey> for TierKeyRef<'_> {
    fn equivalent(&self, key: &TierKey) -> bool {
        let (a, b) = (self.store, &*key.store);
        // A store's URL is one shared string: the same text at the same address is
        // equal without comparing it byte by byte.
        self.key == key.key && (std::ptr::eq(a, b) || a == b)
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

// hashbrown's map, for a lookup by a borrowed key (`Equivalent`) without dynamic calls.
type DigestMap<V> = hashbrown::HashMap<TierKey, V, std::hash::BuildHasherDefault<DigestHasher>>;

/// The default bound on the memory tier: 256 MiB of values.
pub const DEFAULT_MEMORY_TIER_BYTES: usize = 256 << 20;

/// The default time a memory-tier entry is trusted before the store is asked whether
/// the record changed: 1 s.
pub const DEFAULT_REVALIDATE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// One value held. A hit reads the fields here, and only these: the rest is kept apart
/// ([`About`]), so that a hit touches one or two cache lines of the map's slot.
struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    /// When the value expires, in microseconds since the epoch ([`micros`]): an entry is
    /// never served at or after its expiry, and may stop being served up to a
    /// microsecond before it.
    expires: Option<i64>,
    /// When the store last confirmed the version, in microseconds since the epoch
    /// ([`micros`]).
    checked: i64,
    about: Box<About>,
}

/// What eviction, removal and a version check read of an entry.
struct About {
    size: usize,
    generation: u64,
    /// The store's version of the record the value was read from or written as.
    version: Option<String>,
    /// The task that read or wrote it.
    task: Option<Arc<str>>,
}

/// `t` in whole microseconds since the epoch, rounded down: exact for every date chrono
/// holds (about 262,000 years either side; an `i64` of microseconds spans 292,000). The
/// difference of two such times reaches every whole number of microseconds the true
/// age reaches, and the trust bound is rounded down too, so an entry past its bound is
/// never taken for one within it (one within it by less than a microsecond may be
/// checked early).
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp() * 1_000_000 + i64::from(t.timestamp_subsec_micros())
}

/// What the tier holds for a key.
pub(crate) enum TierHit<T> {
    /// Confirmed by the store within the trust bound: serve it.
    Fresh(T),
    /// Held, but last confirmed longer ago than the bound: serve it only if the store
    /// still holds `version`.
    Stale { value: T, version: Option<String> },
}

/// The shards of the map: hits on different threads mostly take different locks.
const SHARDS: usize = 16;

/// The order of insertion and the sizes, kept in one place so that eviction drops the
/// oldest entries of the whole tier, whichever shard holds them.
#[derive(Default)]
struct Book {
    /// Insertion order, for eviction; stale generations are skipped.
    order: VecDeque<(TierKey, u64)>,
    bytes: usize,
    /// The entries held, over all shards.
    entries: usize,
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
    /// The entries, by the key's first digest bytes. A hit takes one shard's read lock
    /// and nothing else. Each shard's lock is one read-write lock per thread index,
    /// each on a cache line of its own (a writer takes them all), so hits on several
    /// threads neither queue nor write to the same memory.
    shards: Box<[ShardedLock<DigestMap<Entry>>]>,
    /// Taken (before any shard) by everything that adds or removes entries.
    book: Mutex<Book>,
    /// The bound on the bytes held; read without the book's lock, so that a value too
    /// large to hold is turned away before it is copied.
    limit: AtomicUsize,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let book = self.book();
        f.debug_struct("MemoryTier")
            .field("entries", &self.len())
            .field("bytes", &book.bytes)
            .field("limit", &self.limit())
            .finish()
    }
}

impl MemoryTier {
    /// An empty tier holding at most `limit` bytes of values.
    pub fn new(limit: usize) -> Self {
        MemoryTier {
            shards: (0..SHARDS).map(|_| ShardedLock::default()).collect(),
            book: Mutex::default(),
            limit: AtomicUsize::new(limit),
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
        let mut book = self.book();
        self.limit.store(limit, Ordering::Relaxed);
        self.evict(&mut book);
    }

    fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The number of entries held.
    pub fn len(&self) -> usize {
        self.book().entries
    }

    /// Whether the tier is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of values held.
    pub fn bytes(&self) -> usize {
        self.book().bytes
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut book = self.book();
        for shard in self.shards.iter() {
            shard.write().unwrap_or_else(|e| e.into_inner()).clear();
        }
        book.order.clear();
        book.bytes = 0;
        book.entries = 0;
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
        let Some(cache) = &run.cache else {
            return false;
        };
        let key = TierKey {
            store: Arc::clone(&cache.store),
            key: cache.key,
        };
        let mut book = self.book();
        self.remove(&mut book, &TierKeyRef::from(&key))
    }

    /// Drops every entry mirroring the store at `url` ([`crate::ResultStore::url`]);
    /// returns how many.
    pub fn remove_store(&self, url: &str) -> usize {
        self.remove_where(|k, _| &*k.store == url)
    }

    /// Drops every entry that task `task` wrote or read; returns how many.
    pub fn remove_task(&self, task: &str) -> usize {
        self.remove_where(|_, e| e.about.task.as_deref() == Some(task))
    }

    fn remove_where(&self, matches: impl Fn(&TierKey, &Entry) -> bool) -> usize {
        let mut book = self.book();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
            map.retain(|k, e| {
                let hit = matches(k, e);
                if hit {
                    book.bytes -= e.about.size;
                    book.entries -= 1;
                    removed += 1;
                }
                !hit
            });
        }
        removed
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shard(&self, key: &Digest) -> &ShardedLock<DigestMap<Entry>> {
        // The first digest bytes place the key in the map; the last ones pick its shard.
        let bytes = key.as_bytes();
        &self.shards[bytes[31] as usize % SHARDS]
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
    #[cfg(test)]
    pub(crate) fn lookup<'k, T: Clone + 'static>(
        &self,
        key: impl Into<TierKeyRef<'k>>,
        now: DateTime<Utc>,
        trust: chrono::Duration,
    ) -> Option<TierHit<T>> {
        self.lookup_at(&key.into(), micros(now), trust)
    }

    /// The value at `key` if present, unexpired at `latest` and of type `T`: fresh when
    /// the store confirmed it less than `trust` before `latest`. `latest` is in
    /// microseconds since the epoch: the latest the time may be by a reading of the
    /// clock ([`crate::Reading::latest`], without building a date). A reading's lag so counts against the entry: one that may have
    /// expired by then is not served, and one that may have been confirmed `trust` or
    /// longer before then is not fresh.
    pub(crate) fn lookup_at<T: Clone + 'static>(
        &self,
        key: &TierKeyRef<'_>,
        latest: i64,
        trust: chrono::Duration,
    ) -> Option<TierHit<T>> {
        let (value, fresh, version) = {
            let map = self
                .shard(&key.key)
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let entry = map.get(key)?;
            if entry.expires.is_some_and(|e| e <= latest) {
                return None;
            }
            let fresh = trust > chrono::Duration::zero()
                && latest.saturating_sub(entry.checked)
                    < trust.num_microseconds().unwrap_or(i64::MAX);
            let version = if fresh {
                None
            } else {
                entry.about.version.clone()
            };
            // The value itself is cloned out of the lock: a clone of a large value
            // must not hold up other hits on this shard.
            let value = entry.value.downcast_ref::<T>()?.clone();
            (value, fresh, version)
        };
        Some(if fresh {
            TierHit::Fresh(value)
        } else {
            TierHit::Stale { value, version }
        })
    }

    /// Records that the store confirmed the entry at `key` at `now` (microseconds since
    /// the epoch).
    pub(crate) fn confirm(&self, key: &TierKeyRef<'_>, now: i64) {
        let mut map = self
            .shard(&key.key)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(key) {
            entry.checked = now;
        }
    }

    /// Drops the entry at `key`, if any.
    pub(crate) fn forget(&self, key: &TierKeyRef<'_>) {
        let mut book = self.book();
        self.remove(&mut book, key);
    }

    /// Holds `value` at `key`.
    #[cfg(test)]
    pub(crate) fn insert<T: Clone + Send + Sync + 'static>(
        &self,
        key: &TierKey,
        value: T,
        expires: Option<DateTime<Utc>>,
        size: usize,
    ) {
        self.insert_versioned(key, &value, expires, size, None, Utc::now(), None);
    }

    /// Holds a copy of `value` at `key`, as the record of `version` that the store
    /// confirmed at `checked`, written or read by `task`. A value of more than the
    /// tier's limit is not copied: it only drops what the tier held at `key`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert_versioned<T: Clone + Send + Sync + 'static>(
        &self,
        key: &TierKey,
        value: &T,
        expires: Option<DateTime<Utc>>,
        size: usize,
        version: Option<String>,
        checked: DateTime<Utc>,
        task: Option<&str>,
    ) {
        if size > self.limit() {
            self.forget(&TierKeyRef::from(key));
            return;
        }
        // Copied outside the lock: a large value does not hold up other entries' changes.
        let value = Arc::new(value.clone());
        let mut book = self.book();
        book.generation += 1;
        let generation = book.generation;
        let old = self
            .shard(&key.key)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key.clone(),
                Entry {
                    value,
                    expires: expires.map(micros),
                    checked: micros(checked),
                    about: Box::new(About {
                        size,
                        generation,
                        version,
                        task: task.map(Arc::from),
                    }),
                },
            );
        match old {
            Some(old) => book.bytes -= old.about.size,
            None => book.entries += 1,
        }
        book.bytes += size;
        book.order.push_back((key.clone(), generation));
        self.evict(&mut book);
    }

    fn remove(&self, book: &mut Book, key: &TierKeyRef<'_>) -> bool {
        let removed = self
            .shard(&key.key)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        match removed {
            Some(old) => {
                book.bytes -= old.about.size;
                book.entries -= 1;
                true
            }
            None => false,
        }
    }

    fn evict(&self, book: &mut Book) {
        let limit = self.limit();
        while book.bytes > limit {
            let Some((key, generation)) = book.order.pop_front() else {
                break;
            };
            let mut map = self
                .shard(&key.key)
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if map
                .get(&key)
                .is_some_and(|e| e.about.generation == generation)
            {
                if let Some(old) = map.remove(&key) {
                    book.bytes -= old.about.size;
                    book.entries -= 1;
                }
            }
        }
        if limit == 0 {
            // Entries of size 0 count no bytes: drop them too when the tier is off.
            for shard in self.shards.iter() {
                shard.write().unwrap_or_else(|e| e.into_inner()).clear();
            }
            book.order.clear();
            book.bytes = 0;
            book.entries = 0;
            return;
        }
        // Keep the order queue from growing without bound when keys are rewritten.
        if book.order.len() > 2 * book.entries + 64 {
            book.order.retain(|(k, g)| {
                self.shard(&k.key)
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(k)
                    .is_some_and(|e| e.about.generation == *g)
            });
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
    fn a_borrowed_key_finds_the_entry_of_its_store_only() {
        let tier = MemoryTier::new(1 << 20);
        let now = Utc::now();
        let owned = k("s/a");
        tier.insert(&owned, 7u64, None, 8);
        let same = TierKeyRef {
            store: "memory://test",
            key: owned.key,
        };
        let other_store = TierKeyRef {
            store: "memory://other",
            key: owned.key,
        };
        let trust = Duration::seconds(60);
        assert!(matches!(
            tier.lookup::<u64>(&same, now, trust),
            Some(TierHit::Fresh(7))
        ));
        assert!(tier.lookup::<u64>(&other_store, now, trust).is_none());
        // The store's own string (the same address) finds it; the start of that string,
        // at the same address but shorter, is another store.
        let shared = TierKeyRef {
            store: &owned.store,
            key: owned.key,
        };
        assert!(std::ptr::eq(shared.store, &*owned.store));
        assert!(tier.lookup::<u64>(&shared, now, trust).is_some());
        let start = TierKeyRef {
            store: &owned.store[..owned.store.len() - 1],
            key: owned.key,
        };
        assert!(tier.lookup::<u64>(&start, now, trust).is_none());
        // Confirming or forgetting through another store's key leaves the entry alone.
        tier.forget(&other_store);
        assert!(tier.lookup::<u64>(&same, now, trust).is_some());
        tier.forget(&same);
        assert!(tier.lookup::<u64>(&owned, now, trust).is_none());
    }

    /// An entry is fresh for less than the trust bound after the store confirmed it,
    /// counted in whole microseconds: at the bound, or a nanosecond past it, it is
    /// stale; a confirmation moves the bound; a zero bound is always stale.
    #[test]
    fn trust_ends_at_the_bound_to_the_microsecond() {
        use chrono::TimeZone;
        let tier = MemoryTier::new(1 << 20);
        let key = k("s/trust");
        let trust = Duration::seconds(1);
        let fresh = |now| {
            matches!(
                tier.lookup::<u64>(&key, now, trust),
                Some(TierHit::Fresh(3))
            )
        };
        for checked in [
            Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap() + Duration::nanoseconds(999),
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap() + Duration::nanoseconds(500),
            Utc.with_ymd_and_hms(-4000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 58).unwrap(),
        ] {
            tier.insert_versioned(&key, &3u64, None, 8, Some("v1".into()), checked, None);
            assert!(fresh(checked), "{checked}");
            assert!(
                fresh(checked + trust - Duration::microseconds(1)),
                "{checked}"
            );
            assert!(!fresh(checked + trust), "{checked}");
            assert!(
                !fresh(checked + trust + Duration::nanoseconds(1)),
                "{checked}"
            );
            match tier.lookup::<u64>(&key, checked + trust, trust) {
                Some(TierHit::Stale { value: 3, version }) => {
                    assert_eq!(version.as_deref(), Some("v1"))
                }
                _ => panic!("a stale entry with its version"),
            }
            tier.confirm(&TierKeyRef::from(&key), micros(checked + trust));
            assert!(fresh(checked + trust + trust - Duration::microseconds(1)));
            assert!(!fresh(checked + trust + trust));
            assert!(!matches!(
                tier.lookup::<u64>(&key, checked, Duration::zero()),
                Some(TierHit::Fresh(_))
            ));
            // An unbounded trust never ends, even at the last date chrono holds.
            assert!(matches!(
                tier.lookup::<u64>(&key, DateTime::<Utc>::MAX_UTC, Duration::MAX),
                Some(TierHit::Fresh(3))
            ));
        }
        assert!(micros(DateTime::<Utc>::MIN_UTC) < micros(DateTime::<Utc>::MAX_UTC));
    }

    /// An entry is never served at or after its expiry: counted in whole microseconds,
    /// it may stop being served within the microsecond before.
    #[test]
    fn an_entry_is_never_served_at_or_after_its_expiry() {
        use chrono::TimeZone;
        let tier = MemoryTier::new(1 << 20);
        let key = k("s/expiry");
        let served = |now| tier.get::<u64>(&key, now).is_some();
        for second in [
            Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap(),
        ] {
            let expires = second + Duration::nanoseconds(500);
            tier.insert(&key, 5u64, Some(expires), 8);
            assert!(served(second - Duration::nanoseconds(1)), "{second}");
            assert!(served(expires - Duration::microseconds(1)), "{second}");
            // Within the expiry's microsecond: early, never late.
            assert!(!served(second + Duration::nanoseconds(499)), "{second}");
            assert!(!served(expires), "{second}");
            assert!(!served(expires + Duration::nanoseconds(1)), "{second}");
            assert!(!served(expires + Duration::days(1)), "{second}");
        }
    }

    #[test]
    fn eviction_is_oldest_first_across_every_shard() {
        let tier = MemoryTier::new(500);
        let now = Utc::now();
        for i in 0..100 {
            tier.insert(&k(&format!("key{i}")), i, None, 10);
        }
        assert_eq!(tier.len(), 50);
        assert_eq!(tier.bytes(), 500);
        for i in 0..100 {
            let held = tier.get::<i32>(&k(&format!("key{i}")), now);
            assert_eq!(held, (i >= 50).then_some(i), "key{i}");
        }
        // The keys spread over the shards, and removal keeps the counts right.
        let used = tier
            .shards
            .iter()
            .filter(|s| !s.read().unwrap().is_empty())
            .count();
        assert!(used > SHARDS / 2, "{used} shards used");
        assert_eq!(tier.remove_store("memory://test"), 50);
        assert_eq!((tier.len(), tier.bytes()), (0, 0));
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

    #[test]
    fn a_value_over_the_limit_is_not_copied_and_drops_the_old_entry() {
        static COPIES: AtomicUsize = AtomicUsize::new(0);
        #[derive(Debug, PartialEq)]
        struct Counted(u32);
        impl Clone for Counted {
            fn clone(&self) -> Self {
                COPIES.fetch_add(1, Ordering::SeqCst);
                Counted(self.0)
            }
        }
        let tier = MemoryTier::new(100);
        let now = Utc::now();
        let key = k("k");
        tier.insert_versioned(&key, &Counted(1), None, 60, None, now, None);
        assert_eq!(COPIES.load(Ordering::SeqCst), 1);
        assert_eq!(tier.get::<Counted>(&key, now), Some(Counted(1)));
        let copies = COPIES.load(Ordering::SeqCst);
        tier.insert_versioned(&key, &Counted(2), None, 101, None, now, None);
        assert_eq!(
            COPIES.load(Ordering::SeqCst),
            copies,
            "no copy of a value too big"
        );
        assert_eq!(
            tier.get::<Counted>(&key, now),
            None,
            "the older value is gone"
        );
        assert_eq!((tier.len(), tier.bytes()), (0, 0));
    }

    /// Hits on several threads while another replaces, forgets and evicts entries: a
    /// hit only ever returns a value written at its own key, the counts stay right, and
    /// the last value written is the one served afterwards.
    #[test]
    fn hits_on_many_threads_see_only_their_own_keys_values() {
        const KEYS: u64 = 64;
        // Room for about 48 of the 64 keys' 10-byte values: eviction runs too.
        let tier = Arc::new(MemoryTier::new(480));
        let now = Utc::now();
        let keys: Arc<Vec<TierKey>> = Arc::new((0..KEYS).map(|i| k(&format!("c{i}"))).collect());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..3)
            .map(|r| {
                let (tier, keys, stop) = (tier.clone(), keys.clone(), stop.clone());
                let served = served.clone();
                std::thread::spawn(move || {
                    let mut hits = 0u64;
                    let mut i = r;
                    while !stop.load(Ordering::Relaxed) {
                        let key = i % KEYS;
                        if let Some(v) = tier.get::<u64>(&keys[key as usize], now) {
                            assert_eq!(v % KEYS, key, "a value of another key");
                            hits += 1;
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        i += 7;
                    }
                    hits
                })
            })
            .collect();
        // At least 2,000 rounds, and on until the readers (which a busy machine may
        // start late) have been served while the writer runs.
        let mut round = 0u64;
        while round < 2_000 || (served.load(Ordering::Relaxed) < 100 && round < 50_000_000) {
            let key = (round * 13) % KEYS;
            let key_ref = TierKeyRef::from(&keys[key as usize]);
            tier.insert_versioned(
                &keys[key as usize],
                &(round * KEYS + key),
                None,
                10,
                None,
                now,
                None,
            );
            if round % 5 == 0 {
                tier.confirm(&key_ref, micros(now));
            }
            if round % 7 == 0 {
                tier.forget(&TierKeyRef::from(&keys[((round * 3) % KEYS) as usize]));
            }
            round += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let hits: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(hits > 0, "the readers were served");
        assert!(tier.bytes() <= 480);
        assert_eq!(tier.bytes(), tier.len() * 10);
        let held = keys
            .iter()
            .filter(|key| tier.get::<u64>(key, now).is_some())
            .count();
        assert_eq!(held, tier.len());
        // The last key written holds the last value written, unless the last round
        // forgot that key.
        let last_round = round - 1;
        let last = (last_round * 13) % KEYS;
        let forgot = last_round % 7 == 0 && (last_round * 3) % KEYS == last;
        assert_eq!(
            tier.get::<u64>(&keys[last as usize], now),
            (!forgot).then_some(last_round * KEYS + last)
        );
    }
}
