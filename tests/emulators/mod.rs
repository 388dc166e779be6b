//! Where the emulator-backed tests find their services.
//!
//! `./localstack/test` starts LocalStack, fake-gcs-server and Azurite and exports
//! `AWS_ENDPOINT_URL`, `STORAGE_EMULATOR_HOST` and `AZURITE_BLOB_STORAGE_URL`. Without
//! them a test is skipped with a message — except under `CI=true`, where a missing
//! emulator fails the test.
#![allow(dead_code)]

fn required(var: &str, service: &str) -> bool {
    if std::env::var(var).is_ok_and(|v| !v.is_empty()) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{service} emulator missing: {var} is not set (run ./localstack/test)");
    }
    eprintln!("skipped: {var} is not set; run ./localstack/test to start the {service} emulator");
    false
}

/// The S3 test bucket, when an S3 endpoint is configured.
pub fn s3_bucket() -> Option<String> {
    required("AWS_ENDPOINT_URL", "S3")
        .then(|| std::env::var("CAIRN_TEST_S3_BUCKET").unwrap_or_else(|_| "cairn-test".into()))
}

/// The GCS test bucket, when a GCS emulator is configured.
pub fn gcs_bucket() -> Option<String> {
    required("STORAGE_EMULATOR_HOST", "GCS")
        .then(|| std::env::var("CAIRN_TEST_GCS_BUCKET").unwrap_or_else(|_| "cairntest".into()))
}

/// A prefix for this test process, so runs on a shared bucket never collide.
pub fn run_prefix() -> String {
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX
        .get_or_init(|| format!("cairn-tests/{:012x}", rand::random::<u64>() >> 16))
        .clone()
}

/// The Azure test container, when an Azure Blob Storage emulator (Azurite) is
/// configured.
pub fn azure_container() -> Option<String> {
    required("AZURITE_BLOB_STORAGE_URL", "Azure (Azurite)").then(|| {
        std::env::var("CAIRN_TEST_AZURE_CONTAINER").unwrap_or_else(|_| "cairn-test".into())
    })
}
