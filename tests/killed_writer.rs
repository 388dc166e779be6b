//! A writer killed with SIGKILL in the middle of a write leaves no object: the key is
//! absent to `head`, `get`, `exists` and listings, and the staged file it left is
//! removed by `clean_staged`.
//!
//! The test re-runs its own binary as the writer (harness = false, so `main` decides
//! the role), waits until the writer's staged file is on disk, and kills it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn::backend::{BackendExt, ErrorKind, Key, LocalBackend};

const CHILD_ENV: &str = "CAIRN_KILLED_WRITER_DIR";
const SIZE: usize = 1 << 30;

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        // The writer: one large durable write that the parent kills part-way.
        rt.block_on(async {
            let backend = LocalBackend::new(dir).unwrap();
            let key = Key::parse("out/target.bin").unwrap();
            let _ = backend.put(&key, vec![7u8; SIZE].into()).await;
        });
        return;
    }
    rt.block_on(a_killed_writer_leaves_no_object());
    println!("test a_killed_writer_leaves_no_object ... ok");
    println!("1 passed, 0 failed");
}

fn staged_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".cairn-staged."))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn a_killed_writer_leaves_no_object() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Wait until the staged file exists and has some bytes, then kill the writer.
    let out_dir = dir.path().join("out");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let staged = staged_files(&out_dir);
        if staged
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the writer finished before it could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "the writer never started writing"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // SIGKILL: no destructor, no cleanup runs in the writer.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());

    let staged = staged_files(&out_dir);
    assert_eq!(staged.len(), 1, "the killed writer left its staged file");
    let partial = std::fs::metadata(&staged[0]).unwrap().len();
    assert!(partial < SIZE as u64, "the write was not cut short");

    let backend = LocalBackend::new(dir.path()).unwrap();
    let key = Key::parse("out/target.bin").unwrap();
    assert!(!backend.exists(&key).await.unwrap());
    let err = backend.get(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(backend.list_all("").await.unwrap().is_empty());

    // A fresh write to the same key is unaffected by the leftover.
    backend.put(&key, "whole".into()).await.unwrap();
    assert_eq!(&backend.get(&key).await.unwrap()[..], b"whole");

    assert_eq!(backend.clean_staged(Duration::ZERO).await.unwrap(), 1);
    assert!(staged_files(&out_dir).is_empty());
    assert_eq!(&backend.get(&key).await.unwrap()[..], b"whole");
}
