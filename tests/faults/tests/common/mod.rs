//! Stores behind a fault proxy, and the counting of outcomes.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cairn::backend::{GcsBackend, S3Backend};
use cairn::ResultStore;
use cairn_fault_tests::{FaultProxy, Flavor};

/// The emulator a store kind talks to, when configured; under `CI=true` a missing one
/// fails the test.
pub fn emulator(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{var} is not set (run ./localstack/test)")
        }
        _ => {
            eprintln!("skipped: {var} is not set; run ./localstack/test");
            None
        }
    }
}

/// A name no other test or run uses.
pub fn unique(what: &str) -> String {
    format!("{what}-{:012x}", rand::random::<u64>() >> 16)
}

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// LocalStack.
    S3,
    /// fake-gcs-server.
    Gcs,
}

/// Time limits short enough for tests, long enough for a loaded machine.
pub fn test_timeouts() -> cairn_backend::Timeouts {
    cairn_backend::Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_secs(2),
        operation: Duration::from_secs(20),
    }
}

/// A proxy in front of the emulator of `kind`, and a backend through it under a fresh
/// prefix.
pub async fn through_proxy(
    kind: Kind,
    seed: u64,
) -> Option<(FaultProxy, Arc<dyn cairn::backend::Backend>, String)> {
    through_proxy_with(kind, seed, 4).await
}

/// As [`through_proxy`], with `attempts` attempts per request.
pub async fn through_proxy_with(
    kind: Kind,
    seed: u64,
    attempts: u32,
) -> Option<(FaultProxy, Arc<dyn cairn::backend::Backend>, String)> {
    let prefix = format!("cairn-faults/{}", unique("run"));
    match kind {
        Kind::S3 => {
            let endpoint = emulator("AWS_ENDPOINT_URL")?;
            let bucket =
                std::env::var("CAIRN_TEST_S3_BUCKET").unwrap_or_else(|_| "cairn-test".into());
            let proxy = FaultProxy::start(&endpoint, Flavor::S3, seed).await;
            let backend = S3Backend::builder(bucket)
                .endpoint(proxy.url())
                .prefix(&prefix)
                .max_attempts(attempts)
                .timeouts(test_timeouts())
                .multipart_threshold(5 * 1024 * 1024)
                .part_size(5 * 1024 * 1024)
                .build()
                .await
                .unwrap();
            Some((proxy, Arc::new(backend), prefix))
        }
        Kind::Gcs => {
            let endpoint = emulator("STORAGE_EMULATOR_HOST")?;
            let endpoint = if endpoint.contains("://") {
                endpoint
            } else {
                format!("http://{endpoint}")
            };
            let bucket =
                std::env::var("CAIRN_TEST_GCS_BUCKET").unwrap_or_else(|_| "cairntest".into());
            let proxy = FaultProxy::start(&endpoint, Flavor::Gcs, seed).await;
            let backend = GcsBackend::builder(bucket)
                .endpoint(proxy.url())
                .emulator(true)
                .prefix(&prefix)
                .retry_policy(cairn_backend::RetryPolicy {
                    max_attempts: attempts,
                    ..Default::default()
                })
                .timeouts(test_timeouts())
                .resumable_threshold(1024 * 1024)
                .chunk_size(256 * 1024)
                .build()
                .await
                .unwrap();
            Some((proxy, Arc::new(backend), prefix))
        }
    }
}

/// A store on the emulator itself (no proxy) under `prefix`, to check what is left.
pub async fn direct(kind: Kind, prefix: &str) -> ResultStore {
    match kind {
        Kind::S3 => {
            let bucket =
                std::env::var("CAIRN_TEST_S3_BUCKET").unwrap_or_else(|_| "cairn-test".into());
            ResultStore::from_backend(Arc::new(
                S3Backend::builder(bucket)
                    .prefix(prefix)
                    .build()
                    .await
                    .unwrap(),
            ))
        }
        Kind::Gcs => {
            let bucket =
                std::env::var("CAIRN_TEST_GCS_BUCKET").unwrap_or_else(|_| "cairntest".into());
            ResultStore::from_backend(Arc::new(
                GcsBackend::builder(bucket)
                    .prefix(prefix)
                    .build()
                    .await
                    .unwrap(),
            ))
        }
    }
}

/// The S3 test bucket's name.
pub fn s3_bucket() -> String {
    std::env::var("CAIRN_TEST_S3_BUCKET").unwrap_or_else(|_| "cairn-test".into())
}

/// A raw SDK client of the S3 emulator (no proxy).
pub async fn s3_client() -> aws_sdk_s3::Client {
    let conf = aws_config::load_from_env().await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    )
}

/// The ids of the multipart uploads still open under `prefix` in the S3 test bucket.
pub async fn open_upload_ids(prefix: &str) -> Vec<String> {
    let out = s3_client()
        .await
        .list_multipart_uploads()
        .bucket(s3_bucket())
        .prefix(prefix)
        .send()
        .await
        .expect("ListMultipartUploads");
    out.uploads()
        .iter()
        .filter_map(|u| u.upload_id().map(str::to_owned))
        .collect()
}

/// Multipart uploads still open under `prefix` in the S3 test bucket.
pub async fn open_uploads(prefix: &str) -> usize {
    open_upload_ids(prefix).await.len()
}

/// A deterministic payload of about `len` bytes for input `x`.
pub fn payload(x: u64, len: usize) -> String {
    let mut s = format!("value-{x}:");
    let mut h = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while s.len() < len {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        s.push(char::from(b'a' + (h % 26) as u8));
    }
    s
}
