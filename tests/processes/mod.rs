//! What the multi-process suites (`crash_matrix`, `killed_target`,
//! `memory_tier_processes`, `resume`, `serialized`) share: the parent and its child
//! processes open one store by two strings passed in the child's environment, and
//! count executions in a file outside every process.
#![allow(dead_code)]

/// The store of a multi-process test, named by its backend (`local`, `s3` or `gcs`) and
/// rooted at `root`: a directory on the local disk, a prefix in the emulator's bucket.
/// Parent and child processes open the same store by the same two strings.
pub async fn store(backend: &str, root: &str) -> cairn::ResultStore {
    match backend {
        "local" => cairn::ResultStore::local(root).unwrap(),
        #[cfg(feature = "s3")]
        "s3" => cairn::ResultStore::from_backend(std::sync::Arc::new(
            cairn::backend::S3Backend::builder(crate::emulators::s3_bucket().expect("S3 emulator"))
                .prefix(root)
                .build()
                .await
                .unwrap(),
        )),
        #[cfg(feature = "gcs")]
        "gcs" => cairn::ResultStore::from_backend(std::sync::Arc::new(
            cairn::backend::GcsBackend::builder(
                crate::emulators::gcs_bucket().expect("GCS emulator"),
            )
            .prefix(root)
            .build()
            .await
            .unwrap(),
        )),
        other => panic!("unknown backend {other}"),
    }
}

/// Appends `what` as a line to the file at `count`, opened `O_APPEND`: each process
/// counts its executions there, outside itself, and one line is one execution.
pub fn counted(count: &std::path::Path, what: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(count)
        .unwrap();
    writeln!(f, "{what}").unwrap();
}
