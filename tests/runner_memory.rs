//! The runner's store-facing behaviours on the in-process memory store.

mod runner_suite;

use cairn::ResultStore;

async fn store() -> Option<ResultStore> {
    Some(ResultStore::memory())
}

runner_tests!(store());
