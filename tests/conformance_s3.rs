//! The conformance suite on S3, against LocalStack (or whatever `AWS_ENDPOINT_URL` names).
#![cfg(feature = "s3")]

mod conformance;
mod emulators;

use std::sync::Arc;

use cairn::backend::{DynBackend, S3Backend};

/// Thresholds lowered (S3's minimum part is 5 MiB) so the large-value test is quick
/// yet goes through concurrent multipart upload.
async fn backend() -> Option<DynBackend> {
    let bucket = emulators::s3_bucket()?;
    let backend = S3Backend::builder(bucket)
        .prefix(emulators::run_prefix())
        .multipart_threshold(5 << 20)
        .part_size(5 << 20)
        .build()
        .await
        .unwrap();
    Some(Arc::new(backend))
}

conformance_tests!(backend());

#[tokio::test]
async fn missing_bucket_is_a_clear_error() {
    if emulators::s3_bucket().is_none() {
        return;
    }
    let backend: DynBackend = Arc::new(
        S3Backend::from_env("cairn-no-such-bucket", "x")
            .await
            .unwrap(),
    );
    conformance::missing_bucket_is_a_clear_error(&backend, "cairn-no-such-bucket").await;
}
