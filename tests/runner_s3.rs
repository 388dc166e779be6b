//! The runner's store-facing behaviours on S3, against LocalStack (or whatever
//! `AWS_ENDPOINT_URL` names).
#![cfg(feature = "s3")]

mod emulators;
mod runner_suite;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn::backend::S3Backend;
use cairn::ResultStore;

/// A prefix of its own per test, so tests never see each other's objects.
async fn store() -> Option<ResultStore> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let bucket = emulators::s3_bucket()?;
    let prefix = format!(
        "{}/runner-{}",
        emulators::run_prefix(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let backend = S3Backend::builder(bucket)
        .prefix(prefix)
        .build()
        .await
        .unwrap();
    Some(ResultStore::from_backend(Arc::new(backend)))
}

runner_tests!(store());
