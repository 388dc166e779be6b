//! The caching suite on a local disk tier in front of S3 (LocalStack) and GCS
//! (fake-gcs-server): a key prefix and a tier of its own per test.
#![cfg(all(feature = "s3", feature = "gcs"))]

mod caching;
mod emulators;

use cairn::ResultStore;

fn tier_dir() -> std::path::PathBuf {
    caching::scratch::dir("tier")
}

mod s3 {
    use super::*;
    async fn store() -> Option<ResultStore> {
        let bucket = emulators::s3_bucket()?;
        let url = format!(
            "s3://{bucket}/{}/{}",
            emulators::run_prefix(),
            caching::unique("tiered-caching")
        );
        let remote = ResultStore::from_url(&url).await.unwrap();
        Some(ResultStore::tiered(tier_dir(), &remote).unwrap())
    }
    caching_tests!(store());
}

mod gcs {
    use super::*;
    async fn store() -> Option<ResultStore> {
        let bucket = emulators::gcs_bucket()?;
        let url = format!(
            "gs://{bucket}/{}/{}?cache_dir={}",
            emulators::run_prefix(),
            caching::unique("tiered-caching"),
            tier_dir().display()
        );
        Some(ResultStore::from_url(&url).await.unwrap())
    }
    caching_tests!(store());
}
