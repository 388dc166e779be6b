//! What more than one bench calls: the trivial cached task of the latency rows.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cairn::cache::INPUTS;
use cairn::{ResultStore, Task};

/// `add_one`, cached by its input, plus a counter of body runs so that every row can
/// check it measured what it says (hits run no body, misses run one each). Its results
/// go to the process's memory store (cached results persist to `$CAIRN_HOME/storage`
/// by default); a row that wants another store sets it.
pub fn add_one(runs: &Arc<AtomicU64>) -> Task<u64, u64> {
    let runs = runs.clone();
    Task::new("add_one", move |x: u64| {
        runs.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, Infallible>(x + 1) }
    })
    .inputs(["x"])
    .cache_policy(INPUTS)
    .result_storage(ResultStore::memory())
}
