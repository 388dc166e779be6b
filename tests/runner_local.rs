//! The runner's store-facing behaviours on the local disk.

mod runner_suite;

use cairn::ResultStore;

/// A fresh directory per test; kept alive for the process (tests are short-lived).
async fn store() -> Option<ResultStore> {
    let dir = tempfile::tempdir().unwrap().keep();
    Some(ResultStore::local(dir).unwrap())
}

runner_tests!(store());
