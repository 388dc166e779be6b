//! Leases in the store itself: how `serialize` holds across processes and machines.
//!
//! One lease object per cache key, at `leases/v1/<namespace>/<ab>/<key>`, names the run
//! that computes the value. It is taken with `Create`, renewed by its holder with
//! `IfMatch` on the version it last wrote, and released when the holder finishes or
//! fails. Its content carries a **generation** that only grows (a fencing token).
//!
//! A waiter never compares clocks of two machines: it takes a lease over only after it
//! has seen the *same* version of it, unchanged, for longer than
//! `lease_time × skew_factor` on its own monotonic clock (the rule of object_store's
//! DynamoDB lease). The takeover is an `IfMatch` write of generation + 1, so of many
//! waiters exactly one wins.
//!
//! Correctness never rests on the lease: records are published with `Create`, so a
//! holder that overran its lease still cannot replace what its successor published.
//! The lease only keeps identical work from running twice.
//!
//! ```
//! use std::time::Duration;
//! use cairn::cache::LeaseConfig;
//!
//! let config = LeaseConfig::new(Duration::from_secs(30), Duration::from_secs(10))?;
//! assert_eq!(config.lease_time(), Duration::from_secs(30));
//! // A renewal interval not well below the lease time could let a live lease expire.
//! assert!(LeaseConfig::new(Duration::from_secs(30), Duration::from_secs(20)).is_err());
//! assert!(LeaseConfig::new(Duration::ZERO, Duration::from_secs(1)).is_err());
//! # Ok::<(), cairn::Error>(())
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::backend::{Error, ErrorKind, Key, PutMode, Result};
use crate::store::ResultStore;

/// The location of the lease for `key` (hex) in `namespace`.
pub(crate) fn lease_location(namespace: &str, key_hex: &str) -> String {
    format!("leases/v1/{namespace}/{}/{key_hex}", &key_hex[..2])
}

/// How long a lease lasts and how often its holder renews it.
///
/// The defaults are a 30 s lease renewed every 10 s; a waiter takes a lease over
/// after seeing it unchanged for twice the lease time. Renewal is never faster than
/// once a second (GCS's limit on writes to one object).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseConfig {
    lease_time: Duration,
    renew_every: Duration,
    skew_factor: f64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            lease_time: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
            skew_factor: 2.0,
        }
    }
}

impl LeaseConfig {
    /// A lease of `lease_time`, renewed every `renew_every`.
    ///
    /// # Errors
    /// [`Error::Config`] when the lease time is zero, the renewal interval is under a
    /// second, or it is more than half the lease time (a renewal delayed once would
    /// let the lease lapse).
    pub fn new(lease_time: Duration, renew_every: Duration) -> Result<Self> {
        let config = LeaseConfig {
            lease_time,
            renew_every,
            ..LeaseConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Waiters take a lease over after seeing it unchanged for `lease_time × factor`
    /// (default 2): the margin for clocks that run at different rates and for renewals
    /// delayed by a slow store.
    ///
    /// # Errors
    /// [`Error::Config`] when `factor` is below 1.
    pub fn with_skew_factor(mut self, factor: f64) -> Result<Self> {
        self.skew_factor = factor;
        self.validate()?;
        Ok(self)
    }

    /// The lease time.
    pub fn lease_time(&self) -> Duration {
        self.lease_time
    }

    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        self.renew_every
    }

    /// How long a waiter must see one version unchanged before it takes over.
    pub fn stale_after(&self) -> Duration {
        self.lease_time.mul_f64(self.skew_factor)
    }

    fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(Error::Config { message });
        if self.lease_time.is_zero() {
            return fail("a lease time of zero would expire every lease as it is taken".into());
        }
        if self.renew_every < Duration::from_secs(1) {
            return fail(format!(
                "a lease renewal every {:?} is too frequent: at most once a second per object",
                self.renew_every
            ));
        }
        if self.renew_every * 2 > self.lease_time {
            return fail(format!(
                "a lease renewed every {:?} must last at least twice that, not {:?}",
                self.renew_every, self.lease_time
            ));
        }
        if self.skew_factor.is_nan() || self.skew_factor < 1.0 {
            return fail(format!(
                "a lease skew factor of {} is below 1: waiters would take live leases over",
                self.skew_factor
            ));
        }
        Ok(())
    }
}

/// What a lease object says: who holds it, and its generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// A random id per attempt to take the lease: how a holder recognizes its own.
    pub holder: String,
    /// The holder's host name.
    pub host: String,
    /// The holder's process id.
    pub pid: u32,
    /// The flow run the holder's task run belongs to.
    pub flow_run: String,
    /// The task.
    pub task: String,
    /// Grows with every takeover: a fencing token.
    pub generation: u64,
    /// Set in the last write before the holder deletes the lease.
    #[serde(default)]
    pub released: bool,
    /// Counts the holder's renewals, so that every renewal writes new content: stores
    /// whose versions are content digests (S3's ETag) see a new version each time.
    #[serde(default)]
    pub renewals: u64,
}

impl LeaseHolder {
    /// A new holder identity for a run of `task` in `flow_run`, on this host and process.
    pub fn new(task: &str, flow_run: &str) -> Self {
        LeaseHolder {
            holder: uuid::Builder::from_random_bytes(rand::random::<[u8; 16]>())
                .into_uuid()
                .to_string(),
            host: host_name(),
            pid: std::process::id(),
            flow_run: flow_run.to_owned(),
            task: task.to_owned(),
            generation: 0,
            released: false,
            renewals: 0,
        }
    }

    fn encode(&self) -> bytes::Bytes {
        serde_json::to_vec(self)
            .expect("a lease holder always serializes")
            .into()
    }
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "task '{}' of flow run {} on {} (pid {}, generation {})",
            self.task, self.flow_run, self.host, self.pid, self.generation
        )
    }
}

/// This machine's host name (read once).
pub(crate) fn host_name() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(read_host_name).clone()
}

fn read_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The outcome of one attempt to take a lease.
#[derive(Debug)]
pub enum Attempt {
    /// This run holds the lease now.
    Acquired(Lease),
    /// Another run holds it (as last read; `None` when its content could not be read).
    Held(Option<LeaseHolder>),
}

/// Tries to take one lease, and remembers what it saw between tries so that a stale
/// lease can be taken over.
#[derive(Debug)]
pub struct Reservation {
    store: ResultStore,
    location: String,
    key: Key,
    config: LeaseConfig,
    me: LeaseHolder,
    /// The version last seen and when (on this process's monotonic clock) it was first seen.
    observed: Option<(String, Instant)>,
}

impl Reservation {
    /// A reservation of the lease at `location` in `store`, for `me`.
    ///
    /// # Errors
    /// When `location` is not a valid key, or the store lacks the conditional writes
    /// (`Create`, `IfMatch`) that leases need.
    ///
    /// What an earlier reservation of the same lease in this process saw carries
    /// over, so that a worker that comes back to a lease later (a shared map) still
    /// recognizes one that has not changed since.
    pub fn new(
        store: &ResultStore,
        location: &str,
        config: LeaseConfig,
        me: LeaseHolder,
    ) -> Result<Self> {
        let caps = store.backend().capabilities();
        if !(caps.create && caps.if_match) {
            return Err(Error::Config {
                message: format!(
                    "{} cannot hold leases (serialize, shared maps, resumable runs): \
                     they need conditional writes (Create and IfMatch), which it lacks",
                    store.url()
                ),
            });
        }
        let observed = observations()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(store.url().to_owned(), location.to_owned()))
            .cloned();
        Ok(Reservation {
            store: store.clone(),
            key: Key::parse(location)?,
            location: location.to_owned(),
            config,
            me,
            observed,
        })
    }

    /// Remembers (or forgets) what this reservation saw, for later ones in this process.
    fn remember(&self) {
        let mut all = observations().lock().unwrap_or_else(|e| e.into_inner());
        let id = (self.store.url().to_owned(), self.location.clone());
        match &self.observed {
            Some(seen) => {
                all.insert(id, seen.clone());
            }
            None => {
                all.remove(&id);
            }
        }
    }

    /// The lease's location in the store.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The version of the lease another holder has, as last seen (`None` before any
    /// attempt, or once this reservation took it).
    pub fn observed_version(&self) -> Option<&str> {
        self.observed.as_ref().map(|(v, _)| v.as_str())
    }

    /// One attempt: take the lease if it is free or stale; otherwise report its holder.
    ///
    /// A write whose outcome is unknown (the store applied it but the answer was lost)
    /// is resolved by reading the lease back and comparing the holder id.
    ///
    /// # Errors
    /// When the store fails other than by a lost race or a transient error.
    pub async fn try_acquire(&mut self) -> Result<Attempt> {
        let attempt = self.attempt().await;
        if let Ok(Attempt::Acquired(_)) = &attempt {
            self.observed = None;
        }
        self.remember();
        attempt
    }

    async fn attempt(&mut self) -> Result<Attempt> {
        // A lease deleted between our Create and our read is free again: try at once.
        for _ in 0..3 {
            let mut mine = self.me.clone();
            mine.generation = 1;
            match self.put(&mine, PutMode::Create).await {
                Ok(version) => return Ok(Attempt::Acquired(self.acquired(mine, version))),
                Err(e) if is_contended(&e) => {}
                Err(e) => return Err(e),
            }
            let Some((current, version)) = self.read().await? else {
                continue;
            };
            if let Some(current) = &current {
                if current.holder == self.me.holder {
                    // Our own Create, applied although its answer was lost.
                    return Ok(Attempt::Acquired(self.acquired(current.clone(), version)));
                }
            }
            let now = Instant::now();
            match &self.observed {
                Some((seen, since)) if *seen == version => {
                    if now.duration_since(*since) <= self.config.stale_after() {
                        return Ok(Attempt::Held(current));
                    }
                }
                _ => {
                    self.observed = Some((version, now));
                    return Ok(Attempt::Held(current));
                }
            }
            // Unchanged for longer than the lease allows: take it over.
            let mut mine = self.me.clone();
            mine.generation = current.as_ref().map_or(0, |c| c.generation) + 1;
            tracing::warn!(
                "lease '{}' unchanged for {:?}: taking it over from {}",
                self.location,
                self.config.stale_after(),
                current
                    .as_ref()
                    .map_or_else(|| "an unreadable holder".to_owned(), ToString::to_string)
            );
            match self.put(&mine, PutMode::IfMatch(version)).await {
                Ok(version) => return Ok(Attempt::Acquired(self.acquired(mine, version))),
                Err(e) if is_contended(&e) => {
                    self.observed = None;
                    if let Some((Some(now_there), version)) = self.read().await? {
                        if now_there.holder == self.me.holder {
                            return Ok(Attempt::Acquired(self.acquired(now_there, version)));
                        }
                        return Ok(Attempt::Held(Some(now_there)));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Attempt::Held(None))
    }

    fn acquired(&self, holder: LeaseHolder, version: String) -> Lease {
        Lease::start(
            self.store.clone(),
            self.key.clone(),
            self.location.clone(),
            self.config,
            holder,
            version,
        )
    }

    /// Writes `holder`; a transient error is retried a few times, then resolved by
    /// reading the lease back.
    async fn put(&self, holder: &LeaseHolder, mode: PutMode) -> Result<String> {
        put_lease(&self.store, &self.key, holder, mode).await
    }

    /// The lease as it is now, with its version; `None` when there is none.
    async fn read(&self) -> Result<Option<(Option<LeaseHolder>, String)>> {
        read_lease(&self.store, &self.key).await
    }
}

/// Lease versions seen by this process, with when they were first seen, by (store,
/// lease location).
type Observations = Mutex<HashMap<(String, String), (String, Instant)>>;

fn observations() -> &'static Observations {
    static SEEN: OnceLock<Observations> = OnceLock::new();
    SEEN.get_or_init(Default::default)
}

/// Whether a failed conditional write lost a race (or may have: a transient error),
/// so that the lease must be read back before anything is concluded.
fn is_contended(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::AlreadyExists | ErrorKind::PreconditionFailed | ErrorKind::Unavailable
    )
}

async fn put_lease(
    store: &ResultStore,
    key: &Key,
    holder: &LeaseHolder,
    mode: PutMode,
) -> Result<String> {
    let result = store
        .backend()
        .put_opts(key, holder.encode().into(), mode.into())
        .await?;
    result.version.ok_or_else(|| Error::Config {
        message: format!(
            "{} returned no object version, which leases need (serialize across processes)",
            store.url()
        ),
    })
}

async fn read_lease(
    store: &ResultStore,
    key: &Key,
) -> Result<Option<(Option<LeaseHolder>, String)>> {
    let mut last = None;
    for _ in 0..3 {
        match store.backend().get_bytes(key, None).await {
            Ok((meta, bytes)) => {
                let version = meta.version.ok_or_else(|| Error::Config {
                    message: format!(
                        "{} returned no object version, which leases need",
                        store.url()
                    ),
                })?;
                // An unreadable lease still has a version: it can go stale and be taken over.
                return Ok(Some((serde_json::from_slice(&bytes).ok(), version)));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Unavailable => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("three failed reads"))
}

/// A lease this run holds. A background task renews it; [`Lease::release`] (or, as a
/// fallback, dropping it) gives it up.
#[derive(Debug)]
pub struct Lease {
    shared: Arc<Shared>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    released: bool,
}

#[derive(Debug)]
struct Shared {
    store: ResultStore,
    key: Key,
    location: String,
    holder: LeaseHolder,
    version: Mutex<String>,
    lost: AtomicBool,
}

impl Lease {
    fn start(
        store: ResultStore,
        key: Key,
        location: String,
        config: LeaseConfig,
        holder: LeaseHolder,
        version: String,
    ) -> Self {
        let shared = Arc::new(Shared {
            store,
            key,
            location,
            holder,
            version: Mutex::new(version),
            lost: AtomicBool::new(false),
        });
        let renewer = tokio::spawn(renew(shared.clone(), config));
        Lease {
            shared,
            renewer: Some(renewer),
            released: false,
        }
    }

    /// Who holds it: this run.
    pub fn holder(&self) -> &LeaseHolder {
        &self.shared.holder
    }

    /// The lease's location in the store.
    pub fn location(&self) -> &str {
        &self.shared.location
    }

    /// Whether the lease was lost: taken over, or not renewable within its time. A
    /// run that lost its lease is no longer the holder; what it publishes with
    /// `Create` cannot replace a successor's record.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.load(Ordering::SeqCst)
    }

    /// Gives the lease up: waiters go at once. A lease that was taken over is left to
    /// its new holder.
    pub async fn release(mut self) {
        self.released = true;
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        release(&self.shared).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if !self.released {
            // A run cancelled while holding the lease: release it in the background.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let shared = self.shared.clone();
                handle.spawn(async move { release(&shared).await });
            }
        }
    }
}

async fn release(shared: &Shared) {
    if shared.lost.load(Ordering::SeqCst) {
        return;
    }
    let mut version = shared
        .version
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut last = shared.holder.clone();
    last.released = true;
    // Marking it released with IfMatch proves it is still ours; only then delete. A
    // renewal cut short may have moved the version on: read it back and try again.
    let mut marked = None;
    for _ in 0..3 {
        let mode = PutMode::IfMatch(version.clone());
        match put_lease(&shared.store, &shared.key, &last, mode).await {
            Ok(_) => {
                marked = Some(Ok(()));
                break;
            }
            Err(e) if is_contended(&e) => match read_lease(&shared.store, &shared.key).await {
                Ok(Some((Some(now), now_version))) if now.holder == shared.holder.holder => {
                    if now.released {
                        marked = Some(Ok(()));
                        break;
                    }
                    version = now_version;
                }
                Ok(_) => return, // taken over, or already gone: not ours to delete
                Err(e) => {
                    marked = Some(Err(e));
                    break;
                }
            },
            Err(e) => {
                marked = Some(Err(e));
                break;
            }
        }
    }
    let result = match marked {
        Some(Ok(())) => shared.store.backend().delete(&shared.key).await,
        Some(Err(e)) => Err(e),
        None => {
            tracing::warn!(
                "lease '{}' kept changing while it was released; waiters take it over once it is stale",
                shared.location
            );
            return;
        }
    };
    if let Err(e) = result {
        tracing::warn!(
            "lease '{}' could not be released ({e}); waiters take it over once it is stale",
            shared.location
        );
    }
}

async fn renew(shared: Arc<Shared>, config: LeaseConfig) {
    let mut renewed_at = Instant::now();
    let mut current = shared.holder.clone();
    loop {
        current.renewals += 1;
        tokio::time::sleep(config.renew_every()).await;
        let version = shared
            .version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match put_lease(
            &shared.store,
            &shared.key,
            &current,
            PutMode::IfMatch(version),
        )
        .await
        {
            Ok(version) => {
                *shared.version.lock().unwrap_or_else(|e| e.into_inner()) = version;
                renewed_at = Instant::now();
                continue;
            }
            Err(e) if is_contended(&e) => {
                // Resolve before concluding: the renewal may have been applied.
                if let Ok(Some((Some(now), version))) = read_lease(&shared.store, &shared.key).await
                {
                    if now.holder == shared.holder.holder {
                        *shared.version.lock().unwrap_or_else(|e| e.into_inner()) = version;
                        renewed_at = Instant::now();
                        continue;
                    }
                    shared.lost.store(true, Ordering::SeqCst);
                    tracing::warn!(
                        "lease '{}' was taken over by {now}; this run is no longer its holder",
                        shared.location
                    );
                    return;
                }
                if e.kind() != ErrorKind::Unavailable {
                    shared.lost.store(true, Ordering::SeqCst);
                    tracing::warn!(
                        "lease '{}' is gone; this run is no longer its holder",
                        shared.location
                    );
                    return;
                }
            }
            Err(_) => {}
        }
        if renewed_at.elapsed() >= config.lease_time() {
            shared.lost.store(true, Ordering::SeqCst);
            tracing::warn!(
                "lease '{}' could not be renewed for {:?}; this run is no longer its holder",
                shared.location,
                config.lease_time()
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(task: &str) -> LeaseHolder {
        LeaseHolder::new(task, "run-1")
    }

    /// The holder's process dies: nothing renews or releases its lease any more.
    fn die(mut lease: Lease) {
        if let Some(renewer) = lease.renewer.take() {
            renewer.abort();
        }
        lease.released = true;
    }

    fn config() -> LeaseConfig {
        LeaseConfig::new(Duration::from_secs(30), Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let zero = LeaseConfig::new(Duration::ZERO, Duration::from_secs(1)).unwrap_err();
        assert!(zero.to_string().contains("zero"), "{zero}");
        let close = LeaseConfig::new(Duration::from_secs(10), Duration::from_secs(6)).unwrap_err();
        assert!(close.to_string().contains("at least twice"), "{close}");
        let fast =
            LeaseConfig::new(Duration::from_secs(10), Duration::from_millis(100)).unwrap_err();
        assert!(fast.to_string().contains("once a second"), "{fast}");
        assert!(config().with_skew_factor(0.5).is_err());
        assert_eq!(config().stale_after(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_lease_is_taken_and_a_held_one_reported() {
        let store = ResultStore::memory();
        let mut a =
            Reservation::new(&store, "leases/v1/default/ab/abc", config(), holder("a")).unwrap();
        let mut b =
            Reservation::new(&store, "leases/v1/default/ab/abc", config(), holder("b")).unwrap();
        let Attempt::Acquired(lease) = a.try_acquire().await.unwrap() else {
            panic!("a free lease is taken");
        };
        assert_eq!(lease.holder().generation, 1);
        match b.try_acquire().await.unwrap() {
            Attempt::Held(Some(h)) => assert_eq!(h.task, "a"),
            other => panic!("held by a, got {other:?}"),
        }
        lease.release().await;
        assert!(!store.exists("leases/v1/default/ab/abc").await.unwrap());
        assert!(matches!(
            b.try_acquire().await.unwrap(),
            Attempt::Acquired(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_lease_is_never_taken_over() {
        let store = ResultStore::memory();
        let loc = "leases/v1/default/cd/cde";
        let mut a = Reservation::new(&store, loc, config(), holder("a")).unwrap();
        let Attempt::Acquired(lease) = a.try_acquire().await.unwrap() else {
            panic!("free");
        };
        let mut b = Reservation::new(&store, loc, config(), holder("b")).unwrap();
        // Ten lease times pass; the holder renews every 10 s, so the version keeps changing.
        for _ in 0..60 {
            assert!(matches!(b.try_acquire().await.unwrap(), Attempt::Held(_)));
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        assert!(!lease.is_lost());
        lease.release().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_lease_is_taken_over_by_exactly_one_waiter_with_the_next_generation() {
        let store = ResultStore::memory();
        let loc = "leases/v1/default/ef/efg";
        let mut a = Reservation::new(&store, loc, config(), holder("a")).unwrap();
        let Attempt::Acquired(lease) = a.try_acquire().await.unwrap() else {
            panic!("free");
        };
        die(lease);
        let mut waiters: Vec<_> = (0..5)
            .map(|i| Reservation::new(&store, loc, config(), holder(&format!("w{i}"))).unwrap())
            .collect();
        for w in &mut waiters {
            assert!(matches!(w.try_acquire().await.unwrap(), Attempt::Held(_)));
        }
        // Just under the stale time: still held.
        tokio::time::sleep(Duration::from_secs(59)).await;
        for w in &mut waiters {
            assert!(matches!(w.try_acquire().await.unwrap(), Attempt::Held(_)));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut winners = Vec::new();
        for w in &mut waiters {
            if let Attempt::Acquired(l) = w.try_acquire().await.unwrap() {
                winners.push(l);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one waiter takes over");
        assert_eq!(winners[0].holder().generation, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_was_taken_over_knows_it_and_leaves_the_new_lease_alone() {
        let store = ResultStore::memory();
        let loc = "leases/v1/default/12/123";
        let mut a = Reservation::new(&store, loc, config(), holder("a")).unwrap();
        let Attempt::Acquired(old) = a.try_acquire().await.unwrap() else {
            panic!("free");
        };
        // Someone takes the lease over behind the holder's back (as after a long pause).
        let (_, version) = read_lease(&store, &Key::parse(loc).unwrap())
            .await
            .unwrap()
            .unwrap();
        let mut thief = holder("b");
        thief.generation = 2;
        put_lease(
            &store,
            &Key::parse(loc).unwrap(),
            &thief,
            PutMode::IfMatch(version),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(11)).await; // the next renewal fails
        assert!(old.is_lost());
        old.release().await;
        let (now, _) = read_lease(&store, &Key::parse(loc).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            now.unwrap().holder,
            thief.holder,
            "the new holder's lease stays"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_create_applied_but_unanswered_is_recognized_as_ours() {
        let store = ResultStore::memory();
        let loc = "leases/v1/default/34/345";
        let me = holder("a");
        // The store applied our Create; the answer was lost, so we try again.
        let mut first = me.clone();
        first.generation = 1;
        put_lease(&store, &Key::parse(loc).unwrap(), &first, PutMode::Create)
            .await
            .unwrap();
        let mut again = Reservation::new(&store, loc, config(), me.clone()).unwrap();
        match again.try_acquire().await.unwrap() {
            Attempt::Acquired(lease) => assert_eq!(lease.holder().holder, me.holder),
            other => panic!("our own lease, got {other:?}"),
        }
    }
}
