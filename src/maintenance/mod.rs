//! Maintenance of a store: see, verify, clear and prune what cairn keeps in it.
//!
//! Everything the `cairn` command does is here, so a program can look after its own
//! store without it. [`Maintenance`] wraps a store's backend and returns plain summary
//! structs that the command only prints:
//!
//! | file | what |
//! |---|---|
//! | `entry` | [`Entry`], [`EntryKind`]: one stored object, classified by its place in the layout |
//! | `list` | [`Maintenance::list`] with a [`Filter`]: a stream, never the whole listing in memory |
//! | `usage` | [`Maintenance::usage`]: sizes and counts by kind, task and namespace |
//! | `verify` | [`Maintenance::verify`]: every record's length and digest, in parallel |
//! | `clear` | [`Maintenance::clear`]: removes what a filter selects |
//! | `prune` | [`Maintenance::prune`]: removes what is no longer of use, and evicts to a size |
//! | `last_use` | when a cache record was last used: one marker object, written at most once a day |
//! | `show` | [`Maintenance::show`]: one record's header and value |
//! | `runs` | [`Maintenance::runs`]: flow runs and their task runs |
//!
//! What counts as what (the store's layout):
//!
//! | path | kind |
//! |---|---|
//! | `cache/v1/<namespace>/<ab>/<key>` | `cache` (a record) |
//! | `leases/v1/<namespace>/<ab>/<key>`, `runs/v1/<flow>/<run>/lease` | `lease` |
//! | `runs/v1/<flow>/<run>/<task>/<map index>` | `checkpoint` (a record) |
//! | `runs/v1/<flow>/<run>/<task>/<map index>.inputs` | `inputs` (a record) |
//! | `runs/v1/<flow>/<run>/results/<task>/<ab>/<id>` | `result` (a record) |
//! | `runs/v1/<flow>/<run>/manifest.json`, `.../flow.json` | `run` |
//! | `runs/v1/<flow>/<run>/states/<task>/<ab>/<id>/<task run>-<nn>-<state>` | `state` (a task run's history) |
//! | `used/v1/<record path>` | `used`: when the record was last used |
//! | a file left by a writer that was killed | `staged` |
//!
//! Records of an older layout version (`cache/v0/...`) or record format version are
//! *obsolete*: this cairn no longer reads them, and [`Maintenance::prune`] removes them.
//! Those of a newer version, which a newer cairn wrote, are left alone: prune keeps
//! them, and [`Maintenance::verify`] reports them without deleting them.
//!
//! Nothing under a live lease is ever removed: not the lease, not the cache record it
//! guards, not the entries of a flow run that is still running.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
//! use cairn::maintenance::{Filter, Maintenance, PruneOptions};
//! use cairn::record::RecordInfo;
//! use cairn::{PutMode, ResultStore};
//!
//! let store = ResultStore::memory();
//! let info = RecordInfo { task: Some("add".into()), ..Default::default() };
//! store.write_record("cache/v1/default/ab/abcd", &3, info, PutMode::Create).await?;
//!
//! let maintenance = Maintenance::new(&store);
//! let usage = maintenance.usage(&Filter::default()).await?;
//! assert_eq!(usage.total.entries, 1);
//! assert_eq!(usage.by_task["add"].entries, 1);
//!
//! // Nothing has expired: a prune removes nothing.
//! let pruned = maintenance.prune(&PruneOptions::default()).await?;
//! assert_eq!(pruned.entries(), 0);
//!
//! // Clearing the task removes its record.
//! let filter = Filter { task: Some("add".into()), ..Filter::default() };
//! let cleared = maintenance.clear(&filter, false).await?;
//! assert_eq!(cleared.entries(), 1);
//! assert!(!store.exists("cache/v1/default/ab/abcd").await?);
//! # Ok::<(), cairn::Error>(()) }).unwrap();
//! ```

mod clear;
mod entry;
mod last_use;
mod list;
mod prune;
mod runs;
mod show;
mod usage;
mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backend::DynBackend;
use crate::store::ResultStore;
use crate::Clock;

pub use clear::{Removal, RemovalReason, Removed, DEFAULT_STALE_LEASE_AFTER};
pub use entry::{Entry, EntryKind};
pub(crate) use last_use::{claim_use, write_claimed};
pub use last_use::{note_use, noted_today, used_marker_location};
pub use list::Filter;
pub use prune::PruneOptions;
pub use runs::{RunDetail, RunSummary, TaskRunRecord};
pub use show::{Preview, Shown};
pub use usage::{Totals, Usage};
pub use verify::{Problem, Verification};

/// The default number of objects read or removed at once.
pub const DEFAULT_JOBS: usize = 16;

/// Maintenance operations on one store.
///
/// Cheap to clone. The clock ([`Maintenance::at`]) decides what is expired, old or
/// stale; it defaults to the current time when the value is made.
#[derive(Debug, Clone)]
pub struct Maintenance {
    backend: DynBackend,
    now: DateTime<Utc>,
    jobs: usize,
    stale_leases_after: Duration,
    listing_only: bool,
    progress: Arc<Progress>,
}

impl Maintenance {
    /// Maintenance of `store`'s backend.
    pub fn new(store: &ResultStore) -> Self {
        Self::from_backend(store.backend().clone())
    }

    /// Maintenance of a backend.
    pub fn from_backend(backend: DynBackend) -> Self {
        Maintenance {
            backend,
            now: Utc::now(),
            jobs: DEFAULT_JOBS,
            stale_leases_after: DEFAULT_STALE_LEASE_AFTER,
            listing_only: false,
            progress: Arc::new(Progress::default()),
        }
    }

    /// Judges ages and expiry as of `now` instead of the current time.
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    /// Judges ages and expiry by `clock`'s time (read once, now), such as a
    /// [`ManualClock`](crate::ManualClock) a test moves by hand.
    ///
    /// ```
    /// use cairn::maintenance::Maintenance;
    /// use cairn::{ManualClock, ResultStore};
    /// use chrono::{TimeZone, Utc};
    ///
    /// let clock = ManualClock::new(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
    /// let m = Maintenance::new(&ResultStore::memory()).clock(&clock);
    /// assert_eq!(m.now(), Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
    /// ```
    pub fn clock(self, clock: &dyn Clock) -> Self {
        self.at(clock.now())
    }

    /// Counts a lease as stale (its holder gone) once it has not been renewed for
    /// `after` (default [`DEFAULT_STALE_LEASE_AFTER`], an hour; holders renew every
    /// few seconds). Until then, nothing it covers is removed, and a flow run it
    /// holds shows as running. A released lease is stale at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cairn::maintenance::{Maintenance, DEFAULT_STALE_LEASE_AFTER};
    /// use cairn::ResultStore;
    ///
    /// let m = Maintenance::new(&ResultStore::memory());
    /// assert_eq!(m.leases_stale_after(), DEFAULT_STALE_LEASE_AFTER);
    /// let m = m.stale_leases_after(Duration::from_secs(2 * 3600));
    /// assert_eq!(m.leases_stale_after(), Duration::from_secs(7200));
    /// ```
    pub fn stale_leases_after(mut self, after: Duration) -> Self {
        self.stale_leases_after = after;
        self
    }

    /// How long a lease may go without renewal before it counts as stale.
    pub fn leases_stale_after(&self) -> Duration {
        self.stale_leases_after
    }

    /// Lists from the store's listing alone (path, size, modification time), without
    /// reading any object: one request per listing page instead of one per entry.
    /// Kind, namespace, flow and run come from the path as always; what only an
    /// object's content says is then unknown: a cache record's task, its `created`
    /// (the store's modification time stands in) and `expires` (none), whether a lease
    /// was released, and a record's format version. So `--expired` selects nothing, a
    /// `task` filter matches only entries whose path names the task (checkpoints,
    /// inputs, results, states), and [`Maintenance::prune`], which must know expiry
    /// and leases, ignores it.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use cairn::maintenance::{Filter, Maintenance};
    /// use cairn::{record::RecordInfo, PutMode, ResultStore};
    ///
    /// let store = ResultStore::memory();
    /// let info = RecordInfo { task: Some("add".into()), ..Default::default() };
    /// store.write_record("cache/v1/default/ab/abcd", &3, info, PutMode::Create).await?;
    /// let usage = Maintenance::new(&store).listing_only(true).usage(&Filter::default()).await?;
    /// assert_eq!(usage.by_kind["cache"].entries, 1);
    /// assert_eq!(usage.by_task["-"].entries, 1); // the task is in the header, not read
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub fn listing_only(mut self, listing_only: bool) -> Self {
        self.listing_only = listing_only;
        self
    }

    /// Reads, checks or removes up to `jobs` objects at once (at least 1).
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// The counters the operations advance as they go, for a progress display.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The store's URL.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// The time ages and expiry are judged at.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }
}

/// Counters of work done so far, shared with whoever shows progress.
#[derive(Debug, Default)]
pub struct Progress {
    entries: AtomicU64,
    bytes: AtomicU64,
    removed: AtomicU64,
}

impl Progress {
    /// Entries seen.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }
    /// Bytes read and hashed (verify).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Entries removed.
    pub fn removed(&self) -> u64 {
        self.removed.load(Ordering::Relaxed)
    }
    pub(crate) fn saw(&self, entries: u64) {
        self.entries.fetch_add(entries, Ordering::Relaxed);
    }
    pub(crate) fn hashed(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn removed_one(&self) {
        self.removed.fetch_add(1, Ordering::Relaxed);
    }
}
