//! Directories that outlive the test that made them (a static's, a suite's store):
//! kept under the build's `target/tmp`, which `localstack/test` empties of them before
//! each run and `cargo clean` removes, never in the system's temporary directory,
//! which nothing would ever empty.

use std::path::PathBuf;

/// A fresh path `target/tmp/cairn-{what}-{random}`, not yet made.
pub fn dir(what: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cairn-{what}-{:016x}", rand::random::<u64>()))
}
