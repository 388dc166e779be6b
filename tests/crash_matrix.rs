//! The crash matrix: a child process is SIGKILLed at random points while it writes a
//! large target, a cache record or a large checkpoint, on the local disk, and on S3 and
//! GCS when their emulators are configured (required under `CI=true`). After each
//! kill nothing partial is visible, a new run publishes a complete value, and
//! `ResultStore::clean_up` leaves nothing behind (no staged file, no open multipart
//! upload).
//!
//! Also: a write cut short by the file size limit (`RLIMIT_FSIZE` in the child) leaves
//! no file and says why; a read-only store directory is `PermissionDenied` naming it.
//!
//! Kills per case: 3 by default, `CAIRN_CRASH_KILLS=25` (or `./localstack/bench
//! faults`) for the full matrix. The test re-runs its own binary as the child
//! (harness = false, so `main` decides the role).

mod emulators;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::cache::INPUTS;
use cairn::{ErrorKind, Flow, ResultStore, Task};
use futures::TryStreamExt;

const ROLE_ENV: &str = "CAIRN_CRASH_ROLE";
const ROOT_ENV: &str = "CAIRN_CRASH_ROOT";
const CASES: [&str; 3] = ["target", "cache", "checkpoint"];

fn kills() -> usize {
    std::env::var("CAIRN_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn size(case: &str, backend: &str) -> usize {
    match (case, backend) {
        ("cache", _) => 1 << 20,
        (_, "local") => 64 << 20,
        // Above the 16 MiB multipart / resumable threshold.
        _ => 20 << 20,
    }
}

fn value(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

async fn open(backend: &str, root: &str) -> ResultStore {
    match backend {
        "local" => ResultStore::local(root).unwrap(),
        #[cfg(feature = "s3")]
        "s3" => ResultStore::from_backend(Arc::new(
            cairn::backend::S3Backend::builder(emulators::s3_bucket().expect("S3 emulator"))
                .prefix(root)
                .build()
                .await
                .unwrap(),
        )),
        #[cfg(feature = "gcs")]
        "gcs" => ResultStore::from_backend(Arc::new(
            cairn::backend::GcsBackend::builder(emulators::gcs_bucket().expect("GCS emulator"))
                .prefix(root)
                .build()
                .await
                .unwrap(),
        )),
        other => panic!("unknown backend {other}"),
    }
}

/// The task of a case; its body prints `READY` as it returns, just before the write.
fn task(case: &str, store: ResultStore, len: usize, announce: bool) -> Task<u64, Bytes> {
    let t = Task::new(case, move |_x: u64| async move {
        let v = value(len);
        if announce {
            use std::io::Write;
            println!("READY");
            std::io::stdout().flush().unwrap();
        }
        Ok::<_, std::io::Error>(v)
    })
    .inputs(["x"]);
    match case {
        "target" => t.result(store).target("out/{task_name}.bin"),
        "cache" => t
            .cache_policy(INPUTS)
            .result_storage(store)
            .memory_tier(false),
        _ => t
            .result(store)
            .checkpoint(true)
            .location("ckpt/{task_name}.bin"),
    }
}

fn child(role: &str, root: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    match role {
        "fsize" => return fsize_child(&rt, root),
        "readonly" => return readonly_child(&rt, root),
        _ => {}
    }
    let (case, backend) = role.split_once(':').unwrap();
    rt.block_on(async {
        let store = open(backend, root).await;
        let t = task(case, store, size(case, backend), true);
        let out = Flow::new("crash")
            .run((), |_| async move { t.call(1).await })
            .await;
        assert!(out.state().is_completed(), "{:?}", out.state());
    });
    println!("DONE");
}

/// Ignores SIGXFSZ and limits files to 1 MiB, then writes 4 MiB.
fn fsize_child(rt: &tokio::runtime::Runtime, root: &str) {
    // SAFETY: plain libc calls on this process, before any other thread writes files.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    rt.block_on(async {
        let store = ResultStore::local(root).unwrap();
        let err = store
            .write_bytes("big/value.bin", value(4 << 20), cairn::PutMode::Overwrite)
            .await
            .unwrap_err();
        println!("ERR {:?} {err}", err.kind());
    });
}

/// Drops to an unprivileged user, then writes into a directory it cannot write.
fn readonly_child(rt: &tokio::runtime::Runtime, root: &str) {
    // SAFETY: plain libc calls on this process.
    unsafe {
        if libc::getuid() == 0 {
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
    }
    rt.block_on(async {
        let store = ResultStore::local(root).unwrap();
        let err = store
            .write_bytes("x/value.bin", value(10), cairn::PutMode::Overwrite)
            .await
            .unwrap_err();
        println!("ERR {:?} {err}", err.kind());
    });
}

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        child(&role, &std::env::var(ROOT_ENV).unwrap());
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut backends = vec!["local"];
    if cfg!(feature = "s3") && emulators::s3_bucket().is_some() {
        backends.push("s3");
    }
    if cfg!(feature = "gcs") && emulators::gcs_bucket().is_some() {
        backends.push("gcs");
    }
    let mut passed = 0;
    for backend in &backends {
        for case in CASES {
            rt.block_on(kill_matrix(case, backend));
            println!("test crash_matrix[{case}:{backend}] ... ok");
            passed += 1;
        }
    }
    a_write_past_the_file_size_limit_leaves_nothing();
    println!("test a_write_past_the_file_size_limit_leaves_nothing ... ok");
    a_read_only_store_is_permission_denied_naming_the_path();
    println!("test a_read_only_store_is_permission_denied_naming_the_path ... ok");
    println!("{} passed, 0 failed", passed + 2);
}

fn spawn(role: &str, root: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, role)
        .env(ROOT_ENV, root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `READY`; returns the stdout reader.
fn wait_ready(child: &mut std::process::Child) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended before its write"
        );
        if line.trim() == "READY" {
            return out;
        }
    }
}

/// Staged files below `dir` (local) or open multipart uploads below `root` (S3).
async fn leftovers(backend: &str, root: &str, store: &ResultStore) -> usize {
    match backend {
        "local" => staged_files(std::path::Path::new(root)),
        #[cfg(feature = "s3")]
        "s3" => {
            let s3 = cairn::backend::S3Backend::builder(emulators::s3_bucket().unwrap())
                .build()
                .await
                .unwrap();
            let out = s3
                .client()
                .list_multipart_uploads()
                .bucket(s3.bucket())
                .prefix(format!("{root}/"))
                .send()
                .await
                .unwrap();
            let _ = store;
            out.uploads().len()
        }
        _ => 0,
    }
}

fn staged_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            } else if e
                .file_name()
                .to_string_lossy()
                .starts_with(".cairn-staged.")
            {
                n += 1;
            }
        }
    }
    n
}

/// What is visible after a kill: `Ok(true)` a complete value, `Ok(false)` nothing;
/// an error for anything partial or damaged.
async fn visible(case: &str, store: &ResultStore, len: usize) -> Result<bool, String> {
    let expected = value(len);
    let published = match case {
        "target" => Some(format!("out/{case}.bin")),
        "checkpoint" => Some(format!("ckpt/{case}.bin")),
        _ => None,
    };
    match published {
        Some(location) => match store.exists(&location).await.unwrap() {
            false => Ok(false),
            true => {
                let got: Bytes = store.read(&location).await.map_err(|e| e.to_string())?;
                if got == expected {
                    Ok(true)
                } else {
                    Err(format!("a target of {} bytes, not {len}", got.len()))
                }
            }
        },
        None => {
            let keys: Vec<String> = store
                .list("cache/")
                .map_ok(|m| m.key.to_string())
                .try_collect()
                .await
                .unwrap();
            for k in &keys {
                let r = store
                    .read_record::<Bytes>(k)
                    .await
                    .map_err(|e| format!("{k}: {e}"))?;
                if r.value != expected {
                    return Err(format!("{k}: a wrong value"));
                }
            }
            Ok(!keys.is_empty())
        }
    }
}

async fn kill_matrix(case: &str, backend: &str) {
    let len = size(case, backend);
    let base = match backend {
        "local" => tempfile::tempdir().unwrap().keep().display().to_string(),
        _ => format!("{}/crash-{case}", emulators::run_prefix()),
    };
    // The time a whole write takes, from READY to exit.
    let calib = format!("{base}/calibrate");
    let mut c = spawn(&format!("{case}:{backend}"), &calib);
    let _out = wait_ready(&mut c);
    let t = Instant::now();
    assert!(c.wait().unwrap().success());
    let window = t.elapsed();

    let (mut completed, mut empty, mut cleaned) = (0, 0, 0);
    for i in 0..kills() {
        let root = format!("{base}/kill-{i}");
        let mut c = spawn(&format!("{case}:{backend}"), &root);
        let _out = wait_ready(&mut c);
        let delay = window.mul_f64(rand::random::<f64>() * 1.1);
        std::thread::sleep(delay);
        let _ = c.kill();
        let _ = c.wait();

        let store = open(backend, &root).await;
        match visible(case, &store, len).await {
            Ok(true) => completed += 1,
            Ok(false) => empty += 1,
            Err(e) => panic!("{case}:{backend}: partial result after a kill at {delay:?}: {e}"),
        }
        // A new run publishes a complete value.
        let t = task(case, store.clone(), len, false);
        let out = Flow::new("crash")
            .run((), |_| async move { t.call(1).await })
            .await;
        assert_eq!(out.value().map(Bytes::len), Some(len), "{:?}", out.state());
        assert!(
            visible(case, &store, len).await.unwrap(),
            "{case}:{backend}: nothing published"
        );
        // The clean-up leaves nothing behind.
        let removed = store.clean_up(Duration::ZERO).await.unwrap();
        cleaned += removed.total();
        assert_eq!(
            leftovers(backend, &root, &store).await,
            0,
            "{case}:{backend}: leftovers after the clean-up"
        );
    }
    println!(
        "FIGURES crash {case}:{backend} value={len}B write={window:.2?} kills={} finished_before_kill={completed} nothing_visible={empty} partial=0 leftovers_cleaned={cleaned}",
        kills()
    );
}

fn a_write_past_the_file_size_limit_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let out = spawn("fsize", &root).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("ERR "))
        .unwrap_or_else(|| panic!("no error: {text}"));
    assert!(
        line.contains(&root) && line.contains("big/value.bin"),
        "{line}"
    );
    assert!(
        line.contains("too large") || line.contains("File too large"),
        "{line}"
    );
    assert!(!dir.path().join("big/value.bin").exists());
    assert_eq!(staged_files(dir.path()), 0, "a staged file was left");
    println!("FIGURES rlimit-fsize: {line}");
}

fn a_read_only_store_is_permission_denied_naming_the_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o555)).unwrap();
    let root = store.display().to_string();
    let out = spawn("readonly", &root).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("ERR "))
        .unwrap_or_else(|| panic!("no error: {text}"));
    assert!(
        line.starts_with(&format!("ERR {:?}", ErrorKind::PermissionDenied)),
        "{line}"
    );
    assert!(line.contains(&root), "{line}");
    assert_eq!(
        std::fs::read_dir(&store).unwrap().count(),
        0,
        "something was written"
    );
    println!("FIGURES read-only store: {line}");
}
