//! The caching suite on S3, against LocalStack (or whatever `AWS_ENDPOINT_URL` names):
//! a key prefix of its own per test, below this run's prefix.
#![cfg(feature = "s3")]

mod caching;
mod emulators;

use std::sync::Arc;

use cairn::backend::S3Backend;
use cairn::ResultStore;

async fn store() -> Option<ResultStore> {
    let bucket = emulators::s3_bucket()?;
    let backend = S3Backend::builder(bucket)
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
