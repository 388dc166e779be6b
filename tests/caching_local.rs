//! The caching suite on the local-disk backend: a directory of its own per test.

mod caching;

use std::sync::OnceLock;

use cairn::ResultStore;

fn root() -> &'static tempfile::TempDir {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
}

caching_tests!(async {
    Some(ResultStore::local(root().path().join(caching::unique("store"))).unwrap())
});
