//! A task whose target is being published when its process is SIGKILLed leaves no
//! target behind: the next run of the task does not find it present, runs the body,
//! and publishes a complete target (on Linux, the local disk keeps not even a staged
//! file: it was written without a name). On the local disk, and on S3 and GCS when their
//! emulators are configured (required under `CI=true`).
//!
//! The test re-runs its own binary as the flow that gets killed (harness = false, so
//! `main` decides the role). The child's task prints a line when its body is done and
//! the publish begins; the parent kills it while the publish is under way.

mod emulators;
mod processes;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::{Flow, ResultStore, State, Task};

const ROLE_ENV: &str = "CAIRN_KILLED_TARGET_BACKEND";
const ROOT_ENV: &str = "CAIRN_KILLED_TARGET_ROOT";
const TARGET: &str = "out/{task_name}.bin";
const PUBLISHED: &str = "out/export.bin";

fn size(backend: &str) -> usize {
    match backend {
        "local" => 1 << 30,
        _ => 256 << 20,
    }
}

fn export_task(store: ResultStore, len: usize, runs: Arc<AtomicUsize>) -> Task<(), Bytes> {
    Task::new("export", move |_: ()| {
        runs.fetch_add(1, Ordering::SeqCst);
        let value = Bytes::from(vec![7u8; len]);
        async move {
            // The parent waits for this line, then kills us while we publish.
            println!("BODY_DONE");
            Ok::<_, std::io::Error>(value)
        }
    })
    .result(store)
    .target(TARGET)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Ok(backend) = std::env::var(ROLE_ENV) {
        let root = std::env::var(ROOT_ENV).unwrap();
        rt.block_on(async {
            let store = processes::store(&backend, &root).await;
            let task = export_task(store, size(&backend), Arc::default());
            let _ = Flow::new("export")
                .run((), |_| async move { task.call(()).await })
                .await;
        });
        println!("PUBLISHED");
        return;
    }
    let mut backends = vec!["local"];
    if cfg!(feature = "s3") && emulators::s3_bucket().is_some() {
        backends.push("s3");
    }
    if cfg!(feature = "gcs") && emulators::gcs_bucket().is_some() {
        backends.push("gcs");
    }
    for backend in &backends {
        rt.block_on(a_killed_publish_leaves_no_target(backend));
        println!("test a_killed_publish_leaves_no_target[{backend}] ... ok");
    }
    println!("{} passed, 0 failed", backends.len());
}

/// Bytes staged in `dir`: under hidden names, and (on Linux) in the unnamed files the
/// writer `pid` holds open there, whose descriptors read as `<dir>/#<inode> (deleted)`.
fn staged_bytes(dir: &std::path::Path, pid: u32) -> u64 {
    let unnamed_prefix = format!("{}/#", dir.display());
    let unnamed: u64 = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with(&unnamed_prefix))
        })
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| m.len())
        .sum();
    unnamed + named_staged_bytes(dir)
}

fn named_staged_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".cairn-staged.")
                })
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

async fn a_killed_publish_leaves_no_target(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = match backend {
        "local" => dir.path().display().to_string(),
        _ => format!("{}/killed-target", emulators::run_prefix()),
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, backend)
        .env(ROOT_ENV, &root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the child said nothing").unwrap();
    assert_eq!(first, "BODY_DONE", "the child's first line");

    // The body is done and the publish has begun. Kill the process mid-publish: on the
    // local disk once the staged file holds some bytes; on S3/GCS shortly into the
    // upload of a value that takes about a second to send.
    match backend {
        "local" => {
            let out = dir.path().join("out");
            let deadline = Instant::now() + Duration::from_secs(60);
            while staged_bytes(&out, child.id()) == 0 {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "published before the kill"
                );
                assert!(Instant::now() < deadline, "the publish never started");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        _ => std::thread::sleep(Duration::from_millis(150)),
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success());
    assert!(
        lines.next().is_none(),
        "the child finished publishing before it was killed; the test proves nothing"
    );

    let store = processes::store(backend, &root).await;
    assert!(
        !store.exists(PUBLISHED).await.unwrap(),
        "{backend}: a killed publish left a target"
    );

    // The next run does not take the half-written target for a present one.
    let runs = Arc::new(AtomicUsize::new(0));
    let len = size(backend);
    let task = export_task(store.clone(), len, runs.clone());
    let run = Flow::new("export")
        .run((), |_| async move { task.run(()).await.into_result() })
        .await;
    assert_eq!(run.task_runs()[0].state(), &State::Completed, "{backend}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "{backend}: the body did not run"
    );
    let stored = store.read_bytes(PUBLISHED).await.unwrap();
    assert_eq!(stored.len(), len, "{backend}: the target is not complete");
    if backend == "local" {
        let leftovers = cairn::backend::LocalBackend::new(dir.path())
            .unwrap()
            .clean_staged(Duration::ZERO)
            .await
            .unwrap();
        if cfg!(target_os = "linux") {
            // Staged without a name: the killed writer's file went with it.
            assert_eq!(leftovers, 0, "the killed publish left a staged file");
        } else {
            assert!(
                leftovers >= 1,
                "the killed publish's staged file was not found"
            );
        }
        let names: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["export.bin"], "only the target is in its directory");
    }
}
