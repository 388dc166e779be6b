//! The caching suite on the local-disk backend: a directory of its own per test.

mod caching;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cairn::ResultStore;

fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| caching::scratch::dir("caching"))
}

caching_tests!(async { Some(ResultStore::local(root().join(caching::unique("store"))).unwrap()) });
