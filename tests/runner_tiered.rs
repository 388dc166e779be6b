//! The runner's store-facing behaviours on a local disk tier in front of S3
//! (LocalStack) and GCS (fake-gcs-server).
#![cfg(all(feature = "s3", feature = "gcs"))]

mod emulators;
mod runner_suite;
mod scratch;

use std::sync::atomic::{AtomicUsize, Ordering};

use cairn::ResultStore;

fn tier_dir() -> std::path::PathBuf {
    scratch::dir("tier")
}

fn prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}/tiered-runner-{}",
        emulators::run_prefix(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

mod s3 {
    use super::*;
    async fn store() -> Option<ResultStore> {
        let bucket = emulators::s3_bucket()?;
        let remote = ResultStore::from_url(&format!("s3://{bucket}/{}", prefix()))
            .await
            .unwrap();
        Some(ResultStore::tiered(tier_dir(), &remote).unwrap())
    }
    runner_tests!(store());
}

mod gcs {
    use super::*;
    /// Through the URL option, as `[results] cache_dir` configures it.
    async fn store() -> Option<ResultStore> {
        let bucket = emulators::gcs_bucket()?;
        let url = format!(
            "gs://{bucket}/{}?cache_dir={}",
            prefix(),
            tier_dir().display()
        );
        Some(ResultStore::from_url(&url).await.unwrap())
    }
    runner_tests!(store());
}
