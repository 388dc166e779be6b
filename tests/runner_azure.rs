//! The runner's store-facing behaviours on Azure Blob Storage, against Azurite (or
//! whatever `AZURITE_BLOB_STORAGE_URL` names).
#![cfg(feature = "azure")]

mod emulators;
mod runner_suite;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn::backend::AzureBuilder;
use cairn::ResultStore;

/// A prefix of its own per test, so tests never see each other's objects.
async fn store() -> Option<ResultStore> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let container = emulators::azure_container()?;
    let prefix = format!(
        "{}/runner-{}",
        emulators::run_prefix(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let backend = AzureBuilder::new(container).prefix(prefix).build().unwrap();
    Some(ResultStore::from_backend(Arc::new(backend)))
}

runner_tests!(store());
