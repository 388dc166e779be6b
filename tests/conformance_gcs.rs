//! The conformance suite on GCS, against fake-gcs-server (or whatever
//! `STORAGE_EMULATOR_HOST` names).
#![cfg(feature = "gcs")]

mod conformance;
mod emulators;

use std::sync::Arc;

use cairn::backend::{DynBackend, GcsBackend};

/// Thresholds lowered so the large-value test is quick yet goes through a resumable
/// upload in several chunks.
async fn backend() -> Option<DynBackend> {
    let bucket = emulators::gcs_bucket()?;
    let backend = GcsBackend::builder(bucket)
        .prefix(emulators::run_prefix())
        .resumable_threshold(4 << 20)
        .chunk_size(1 << 20)
        .build()
        .await
        .unwrap();
    Some(Arc::new(backend))
}

conformance_tests!(backend());

#[tokio::test]
async fn missing_bucket_is_a_clear_error() {
    if emulators::gcs_bucket().is_none() {
        return;
    }
    let backend: DynBackend = Arc::new(
        GcsBackend::from_env("cairnnosuchbucket", "x")
            .await
            .unwrap(),
    );
    conformance::missing_bucket_is_a_clear_error(&backend, "cairnnosuchbucket").await;
}

#[tokio::test]
async fn emulator_gaps_are_declared() {
    if emulators::gcs_bucket().is_none() {
        return;
    }
    let caps = backend().await.unwrap().capabilities();
    // fake-gcs-server ignores ifGenerationMatch on resumable uploads; the backend says
    // so and sends conditional writes as single requests instead (see large_values).
    assert!(!caps.conditional_large_writes);
    assert!(
        caps.gaps.iter().any(|g| g.contains("ifGenerationMatch")),
        "{:?}",
        caps.gaps
    );
}
