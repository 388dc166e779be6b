//! The conformance suite on the local-disk backend.

mod conformance;
mod scratch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cairn::backend::{DynBackend, LocalBackend};

fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| scratch::dir("conformance"))
}

conformance_tests!(async { Some(Arc::new(LocalBackend::new(root()).unwrap()) as DynBackend) });

#[tokio::test]
async fn missing_root_directory_is_a_missing_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("store");
    let backend: DynBackend = Arc::new(LocalBackend::new(&gone).unwrap());
    std::fs::remove_dir(&gone).unwrap();
    conformance::missing_bucket_is_a_clear_error(&backend, "store").await;
}
