//! The caching suite on Azure Blob Storage, against Azurite (or whatever
//! `AZURITE_BLOB_STORAGE_URL` names): a key prefix of its own per test, below this
//! run's prefix.
#![cfg(feature = "azure")]

mod caching;
mod emulators;

use std::sync::Arc;

use cairn::backend::AzureBuilder;
use cairn::ResultStore;

async fn store() -> Option<ResultStore> {
    let container = emulators::azure_container()?;
    let backend = AzureBuilder::new(container)
        .prefix(format!(
            "{}/{}",
            emulators::run_prefix(),
            caching::unique("caching")
        ))
        .build()
        .unwrap();
    Some(ResultStore::from_backend(Arc::new(backend)))
}

caching_tests!(store());
