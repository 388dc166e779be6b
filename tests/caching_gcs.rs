//! The caching suite on GCS, against fake-gcs-server (or whatever
//! `STORAGE_EMULATOR_HOST` names): a key prefix of its own per test, below this run's
//! prefix.
#![cfg(feature = "gcs")]

mod caching;
mod emulators;

use std::sync::Arc;

use cairn::backend::GcsBackend;
use cairn::ResultStore;

async fn store() -> Option<ResultStore> {
    let bucket = emulators::gcs_bucket()?;
    let backend = GcsBackend::builder(bucket)
        .prefix(format!(
            "{}/{}",
            emulators::run_prefix(),
            caching::unique("caching")
        ))
        .build()
        .await
        .unwrap();
    Some(ResultStore::from_backend(Arc::new(backend)))
}

caching_tests!(store());
