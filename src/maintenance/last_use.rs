//! When a cache record was last used, without a write per hit.
//!
//! A hit on a cache record in the store writes a small marker object,
//! `used/v1/<record path>`, at most once a day per record and process: the process
//! remembers the day it last marked each record. The marker's modification time (the
//! store's clock) is the record's last use, to within a day; a record without a
//! marker was last used when it was created. `prune --max-size` evicts the records
//! used least recently first. Hits served from the in-process memory tier follow a
//! hit on the store, which marked the record already.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, NaiveDate, Utc};

use crate::backend::Result;
use crate::store::ResultStore;

/// Past this many remembered records the memo starts afresh (a few extra writes).
const MEMO_LIMIT: usize = 100_000;

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
/// this process already did on the same day. Returns whether it wrote.
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
    if noted_today(store, record_path, now) {
        return Ok(false);
    }
    let today = now.date_naive();
    store
        .write_bytes(
            &used_marker_location(record_path),
            today.to_string().into(),
            crate::PutMode::Overwrite,
        )
        .await?;
    let mut memo = memo().lock().unwrap_or_else(|e| e.into_inner());
    if memo.len() >= MEMO_LIMIT {
        memo.clear();
    }
    memo.insert(format!("{}\n{record_path}", store.url()), today);
    Ok(true)
}

type Memo = Mutex<HashMap<String, NaiveDate>>;

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// Whether this process already noted a use of the record on `now`'s day (no write
/// is needed then).
pub fn noted_today(store: &ResultStore, record_path: &str, now: DateTime<Utc>) -> bool {
    let id = format!("{}\n{record_path}", store.url());
    memo().lock().unwrap_or_else(|e| e.into_inner()).get(&id) == Some(&now.date_naive())
}
