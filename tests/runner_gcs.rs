//! The runner's store-facing behaviours on GCS, against fake-gcs-server (or whatever
//! `STORAGE_EMULATOR_HOST` names).
#![cfg(feature = "gcs")]

mod emulators;
mod runner_suite;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn::backend::GcsBackend;
use cairn::ResultStore;

/// A prefix of its own per test, so tests never see each other's objects.
async fn store() -> Option<ResultStore> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let bucket = emulators::gcs_bucket()?;
    let prefix = format!(
        "{}/runner-{}",
        emulators::run_prefix(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let backend = GcsBackend::builder(bucket)
        .prefix(prefix)
        .build()
        .await
        .unwrap();
    Some(ResultStore::from_backend(Arc::new(backend)))
}

runner_tests!(store());
