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

/// A read that spares the bucket check (a cache lookup, whose write reports a missing
/// store) takes a missing root for a missing record: the root's `stat` is not made.
/// Asked for, the check is made, and a read of a present record is unchanged.
#[tokio::test]
async fn a_read_that_spares_the_bucket_check_calls_a_missing_root_a_missing_object() {
    use cairn::backend::{ErrorKind, ReadWants};
    use cairn::Key;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let backend: DynBackend = Arc::new(LocalBackend::new(&root).unwrap());
    let present = Key::parse("a/present").unwrap();
    backend
        .put_opts(&present, "x".into(), Default::default())
        .await
        .unwrap();
    let unchecked = ReadWants {
        version: false,
        bucket_check: false,
    };
    let (_, bytes) = backend.get_now(&present, unchecked).unwrap().unwrap();
    assert_eq!(&bytes[..], b"x");
    std::fs::remove_dir_all(&root).unwrap();
    let missing = Key::parse("a/missing").unwrap();
    for key in [&present, &missing] {
        let err = backend.get_now(key, unchecked).unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        let err = backend
            .get_now(key, ReadWants::default())
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BucketNotFound, "{err}");
    }
}

/// The local store learns a written file's version by one `fstat`: a write that keeps
/// no version (a cache record written with the memory tier off) is spared it and gives
/// none; any other write gives the version a `head` gives.
#[tokio::test]
async fn a_local_write_that_skips_its_version_gives_none() {
    use cairn::backend::{PutMode, PutOptions};
    use cairn::Key;
    let dir = tempfile::tempdir().unwrap();
    let backend: DynBackend = Arc::new(LocalBackend::new(dir.path()).unwrap());
    for (i, skip_version) in [true, false].into_iter().enumerate() {
        for mode in [PutMode::Create, PutMode::Overwrite] {
            let key = Key::parse(format!("v/{i}-{mode:?}")).unwrap();
            let opts = PutOptions {
                mode,
                skip_version,
                ..PutOptions::default()
            };
            let put = backend.put_opts(&key, "x".into(), opts).await.unwrap();
            if skip_version {
                assert_eq!(put.version, None);
            } else {
                assert_eq!(put.version, backend.head(&key).await.unwrap().version);
            }
        }
    }
}
