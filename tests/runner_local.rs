//! The runner's store-facing behaviours on the local disk.

mod runner_suite;
mod scratch;

use cairn::ResultStore;

/// A fresh directory per test, under `target/tmp`.
async fn store() -> Option<ResultStore> {
    Some(ResultStore::local(scratch::dir("runner")).unwrap())
}

runner_tests!(store());
