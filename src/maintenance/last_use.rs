//! When a cache record was last used, without a write per hit.
//!
//! A hit on a cache record in the store writes a small marker object,
//! `used/v1/<record path>`, at most once a day per record and process: the process
//! remembers the day it last marked each record. The marker's modification time (the
//! store's clock) is the record's last use, to within a day; a record without a
//! marker was last used when it was created. So a hit within a day of the record's
//! creation writes nothing: the creation already says when it was used, to within the
//! same day (a pipeline that rereads what it wrote today adds no write per record).
//! `prune --max-size` evicts the records used least recently first. Hits served from the in-process memory tier follow a
//! hit on the store, which marked the record already.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, NaiveDate, Utc};

use crate::backend::Result;
use crate::store::ResultStore;

/// Past this many remembered records the memo starts afresh (a few extra writes). An
/// entry is 8 bytes of hash and a date, so the bound is a few tens of MB.
const MEMO_LIMIT: usize = 2_000_000;

/// The location of the `used` marker of the record at `record_path`.
///
/// ```
/// use cairn::maintenance::used_marker_location;
/// assert_eq!(used_marker_location("cache/v1/default/ab/abcd"), "used/v1/cache/v1/default/ab/abcd");
/// ```
pub fn used_marker_location(record_path: &str) -> String {
    format!("used/v1/{record_path}")
}

/// Notes that the record at `record_path` was used at `now`: writes its marker unless
/// this process already did on the same day, whatever the record's age (a cache hit
/// itself leaves out records written less than a day before). Returns whether it
/// wrote.
///
/// # Errors
/// The store's error when the marker cannot be written.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use cairn::maintenance::note_use;
/// use cairn::ResultStore;
///
/// let store = ResultStore::memory();
/// let now = chrono::Utc::now();
/// assert!(note_use(&store, "cache/v1/default/ab/abcd", now).await?);
/// assert!(!note_use(&store, "cache/v1/default/ab/abcd", now).await?); // once a day
/// assert!(store.exists("used/v1/cache/v1/default/ab/abcd").await?);
/// # Ok::<(), cairn::Error>(()) }).unwrap();
/// ```
pub async fn note_use(store: &ResultStore, record_path: &str, now: DateTime<Utc>) -> Result<bool> {
    // Claimed before the write, so that hits racing on one record write it once.
    if !claim(store.url(), record_path, now.date_naive()) {
        return Ok(false);
    }
    write_claimed(store, record_path, now).await.map(|()| true)
}

/// Claims the marker write of `now`'s day for a hit on the record written at
/// `created`: `true` when the record is not fresh (see [`is_fresh`]) and this process
/// had not claimed the day yet, and the caller is to write it ([`write_claimed`]). A
/// hit claims before it hands the write to a task of its own, so that a burst of hits
/// on one record starts one write, not one per hit until the first write runs.
pub(crate) fn claim_use(
    store: &ResultStore,
    record_path: &str,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    !is_fresh(created, now) && claim(store.url(), record_path, now.date_naive())
}

/// Whether a record written at `created` needs no use marker for a hit at `now`:
/// written less than a day before, so that its creation stands for its last use to
/// within a day, as a marker would. A creation time after `now` (a writer whose clock
/// runs ahead) is not fresh: the hit writes its marker.
pub(crate) fn is_fresh(created: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let age = now.signed_duration_since(created);
    age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::days(1)
}

/// Writes the marker of a use claimed by [`claim_use`]; a write that fails gives the
/// claim back, so that a later hit tries again.
pub(crate) async fn write_claimed(
    store: &ResultStore,
    record_path: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let today = now.date_naive();
    // A hint for `prune --max-size`: not synced on a local disk (one lost in a power
    // cut costs one more marker).
    let written = async {
        let key = crate::backend::Key::parse(used_marker_location(record_path))?;
        let opts = crate::backend::PutOptions {
            mode: crate::PutMode::Overwrite,
            hint: true,
            ..Default::default()
        };
        store
            .backend()
            .put_opts(&key, today.to_string().into(), opts)
            .await
    }
    .await;
    written.map(|_| ()).inspect_err(|_| {
        unclaim(store.url(), record_path, today);
    })
}

/// The day each record was last noted, by a hash of its store's URL and its path (a
/// collision at worst skips one marker, which is only a hint).
type Memo = Mutex<
    HashMap<u64, NaiveDate, std::hash::BuildHasherDefault<crate::cache::memory::DigestHasher>>,
>;

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// A fast hash of the two strings (the memo's keys are its own hashes: no second
/// hashing in the map). Not keyed: the paths come from this process's own stores.
fn memo_key(url: &str, record_path: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    url.hash(&mut h);
    record_path.hash(&mut h);
    h.finish()
}

/// Whether this process already noted a use of the record on `now`'s day (no write
/// is needed then).
pub fn noted_today(store: &ResultStore, record_path: &str, now: DateTime<Utc>) -> bool {
    let key = memo_key(store.url(), record_path);
    memo().lock().unwrap_or_else(|e| e.into_inner()).get(&key) == Some(&now.date_naive())
}

/// Notes `today` for the record unless it is noted already; returns whether it was not.
fn claim(url: &str, record_path: &str, today: NaiveDate) -> bool {
    let key = memo_key(url, record_path);
    let mut memo = memo().lock().unwrap_or_else(|e| e.into_inner());
    if memo.get(&key) == Some(&today) {
        return false;
    }
    if memo.len() >= MEMO_LIMIT {
        memo.clear();
    }
    memo.insert(key, today);
    true
}

/// Forgets a claim whose write failed, so that the next hit tries again.
fn unclaim(url: &str, record_path: &str, today: NaiveDate) {
    let key = memo_key(url, record_path);
    let mut memo = memo().lock().unwrap_or_else(|e| e.into_inner());
    if memo.get(&key) == Some(&today) {
        memo.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn a_record_is_fresh_for_a_day_from_its_creation_and_never_before_it() {
        let created = Utc::now();
        let at = |d: TimeDelta| is_fresh(created, created + d);
        assert!(at(TimeDelta::zero()));
        assert!(at(TimeDelta::hours(23)));
        assert!(at(TimeDelta::days(1) - TimeDelta::nanoseconds(1)));
        assert!(!at(TimeDelta::days(1)));
        assert!(!at(TimeDelta::days(40)));
        // A writer whose clock ran ahead of the reader's.
        assert!(!at(-TimeDelta::nanoseconds(1)));
        assert!(!at(-TimeDelta::hours(2)));
    }

    #[test]
    fn a_fresh_record_claims_no_marker_and_an_old_one_claims_one_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::local(dir.path()).unwrap();
        let path = "cache/v1/default/ab/claims";
        let created = Utc::now() - TimeDelta::days(3);
        let fresh = created + TimeDelta::hours(5);
        assert!(!claim_use(&store, path, created, fresh));
        assert!(!noted_today(&store, path, fresh));
        let later = created + TimeDelta::days(2);
        assert!(claim_use(&store, path, created, later));
        assert!(!claim_use(&store, path, created, later), "once a day");
        assert!(claim_use(&store, path, created, later + TimeDelta::days(1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_hits_on_one_record_write_its_marker_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::local(dir.path()).unwrap();
        let now = Utc::now();
        let path = "cache/v1/default/ab/racing";
        let calls = (0..16).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { note_use(&store, path, now).await.unwrap() })
        });
        let wrote = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|w| *w.as_ref().unwrap())
            .count();
        assert_eq!(wrote, 1);
        assert!(noted_today(&store, path, now));
        assert!(!noted_today(&store, path, now + chrono::Duration::days(1)));
        assert!(store.exists(&used_marker_location(path)).await.unwrap());
    }

    #[tokio::test]
    async fn a_marker_that_cannot_be_written_is_tried_again_on_the_next_hit() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::local(dir.path()).unwrap();
        let now = Utc::now();
        let path = "cache/v1/default/cd/refused";
        // A file where the marker's directory must go: the write fails.
        std::fs::create_dir_all(dir.path().join("used/v1/cache/v1/default")).unwrap();
        std::fs::write(
            dir.path().join("used/v1/cache/v1/default/cd"),
            b"in the way",
        )
        .unwrap();
        assert!(note_use(&store, path, now).await.is_err());
        assert!(!noted_today(&store, path, now));
        std::fs::remove_file(dir.path().join("used/v1/cache/v1/default/cd")).unwrap();
        assert!(note_use(&store, path, now).await.unwrap());
        assert!(noted_today(&store, path, now));
    }
}
