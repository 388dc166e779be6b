//! The conformance suite on a local disk tier in front of S3 (LocalStack) and GCS
//! (fake-gcs-server): the tier must not change any behaviour of the remote store.
#![cfg(all(feature = "s3", feature = "gcs"))]

mod conformance;
mod emulators;
mod scratch;

use std::sync::Arc;

use cairn::backend::{DiskTier, DynBackend, TieredBackend};

/// A fresh tier directory, under the target directory (`localstack/test` empties it).
fn tier() -> DiskTier {
    DiskTier::new(scratch::dir("tier")).unwrap()
}

mod s3 {
    use super::*;
    use cairn::backend::S3Backend;

    async fn backend() -> Option<DynBackend> {
        let bucket = emulators::s3_bucket()?;
        let remote = S3Backend::builder(bucket)
            .prefix(format!("{}/tiered", emulators::run_prefix()))
            .multipart_threshold(5 << 20)
            .part_size(5 << 20)
            .build()
            .await
            .unwrap();
        Some(Arc::new(TieredBackend::new(tier(), Arc::new(remote))))
    }

    conformance_tests!(backend());
}

mod gcs {
    use super::*;
    use cairn::backend::GcsBackend;

    async fn backend() -> Option<DynBackend> {
        let bucket = emulators::gcs_bucket()?;
        let remote = GcsBackend::builder(bucket)
            .prefix(format!("{}/tiered", emulators::run_prefix()))
            .resumable_threshold(4 << 20)
            .chunk_size(1 << 20)
            .build()
            .await
            .unwrap();
        Some(Arc::new(TieredBackend::new(tier(), Arc::new(remote))))
    }

    conformance_tests!(backend());
}
