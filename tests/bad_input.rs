//! Hostile input, one table: every row is a clear error that names its cause, and
//! nothing is written to the store.

mod emulators;

#[cfg(all(feature = "s3", feature = "gcs"))]
mod every_backend {
    use std::sync::Arc;

    use bytes::Bytes;
    use cairn::backend::{Backend, PutMode, PutOptions, PutPayload};
    use cairn::cache::INPUTS;
    use cairn::{ResultStore, Task};
    use serde::{Serialize, Serializer};

    /// An input that refuses to be serialized, so it cannot be hashed.
    #[derive(Clone)]
    struct Unhashable;

    impl Serialize for Unhashable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(
                "a socket handle cannot be serialized",
            ))
        }
    }

    /// Every file below `dir`.
    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                } else {
                    out.push(e.path().display().to_string());
                }
            }
        }
        out
    }

    type Row = (&'static str, Vec<&'static str>, Result<(), String>);

    async fn rows(store: &ResultStore) -> Vec<Row> {
        let write = |location: String| {
            let store = store.clone();
            async move {
                store
                    .write_bytes(&location, Bytes::from_static(b"x"), PutMode::Create)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        };
        let task_error =
            |r: cairn::Result<Task<u64, u64>>| r.map(|_| ()).map_err(|e| e.to_string());
        let long = "n".repeat(5000);
        let mut rows: Vec<Row> = vec![
            (
                "malformed template",
                vec!["{x", "target"],
                task_error(Task::infallible("t", |x: u64| async move { x }).try_target("out/{x")),
            ),
            (
                "format spec that does not parse",
                vec!["{x:%Q!}"],
                task_error(
                    Task::infallible("t", |x: u64| async move { x }).try_target("out/{x:%Q!}"),
                ),
            ),
            (
                "'..' in a key",
                vec!["a/../b", ".."],
                write("a/../b".into()).await,
            ),
            (
                "absolute path",
                vec!["/etc/passwd"],
                write("/etc/passwd".into()).await,
            ),
            (
                "NUL character",
                vec!["invalid key"],
                write("a\0b".into()).await,
            ),
            (
                "control character",
                vec!["invalid key"],
                write("a\x07b".into()).await,
            ),
            (
                "5,000-character name",
                vec!["invalid key", "at most 1024 bytes, this one has 5000"],
                write(long).await,
            ),
            ("empty segment", vec!["a//b"], write("a//b".into()).await),
            (
                "unknown URL scheme",
                vec!["ftp://", "unknown store URL scheme"],
                ResultStore::from_url("ftp://host/x")
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ),
            (
                "unknown store URL option",
                vec!["colour"],
                ResultStore::from_url("s3://b/p?colour=red")
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ),
            (
                "bucket name the store refuses",
                vec!["'bad/bucket' is not a bucket name"],
                cairn_s3::S3Backend::builder("bad/bucket")
                    .build()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ),
            (
                "GCS bucket name with a space",
                vec!["'bad bucket' is not a valid GCS bucket name"],
                cairn_gcs::GcsBackend::builder("bad bucket")
                    .emulator(true)
                    .build()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ),
        ];

        // A target naming an input the task does not have: refused when defined.
        rows.push((
            "unknown template key",
            vec!["unknown key 'nope'"],
            task_error(
                Task::infallible("t", |x: u64| async move { x })
                    .inputs(["x"])
                    .try_target("out/{nope}.json"),
            ),
        ));

        // An input that cannot be hashed for the cache key.
        let t = Task::infallible("h", |_: Unhashable| async move { 1u64 })
            .inputs(["sock"])
            .cache_policy(INPUTS)
            .result_storage(store.clone());
        rows.push((
            "unhashable input",
            vec!["sock", "socket handle"],
            t.run(Unhashable)
                .await
                .into_result()
                .map(|_| ())
                .map_err(|e| e.to_string()),
        ));

        // A conditional write larger than one request may carry, where multipart cannot
        // carry the condition: refused before any byte is sent.
        let s3 = cairn_s3::S3Backend::builder("cairn-test")
            .endpoint("http://127.0.0.1:9")
            .conditional_multipart(false)
            .build()
            .await
            .unwrap();
        let gib = Bytes::from(vec![0u8; 64 << 20]);
        let huge = PutPayload::from_chunks(std::iter::repeat_n(gib, 81)); // 5.06 GiB, shared
        rows.push((
            "oversized value for a single-request upload",
            vec!["is not supported", "5368709120"],
            s3.put_opts(
                &cairn::Key::parse("big").unwrap(),
                huge,
                PutOptions::from(PutMode::Create),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        ));
        rows
    }

    #[tokio::test]
    async fn hostile_inputs_are_clear_errors_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::from_backend(Arc::new(
            cairn::backend::LocalBackend::new(dir.path()).unwrap(),
        ));
        let rows = rows(&store).await;
        let mut report = Vec::new();
        for (name, needles, outcome) in &rows {
            let err = match outcome {
                Ok(()) => panic!("{name}: accepted"),
                Err(e) => e,
            };
            for n in needles {
                assert!(err.contains(n), "{name}: {err:?} does not name {n:?}");
            }
            report.push(format!("{name}: {err}"));
        }
        for line in &report {
            println!("{line}");
        }
        assert_eq!(
            files(dir.path()),
            Vec::<String>::new(),
            "something was written"
        );

        // A target of the wrong type: stored as text, read as a number.
        store
            .write_bytes(
                "out/1.json",
                Bytes::from_static(b"\"not a number\""),
                PutMode::Create,
            )
            .await
            .unwrap();
        let t = Task::infallible("t", |x: u64| async move { x })
            .inputs(["x"])
            .result(store.clone())
            .try_target("out/{x}.json")
            .unwrap();
        let err = t.run(1).await.into_result().unwrap_err().to_string();
        assert!(
            err.contains("out/1.json") && err.contains("cannot be read as u64"),
            "{err}"
        );
        assert_eq!(
            files(dir.path()).len(),
            1,
            "the wrong-type target is left as it was"
        );
    }
}

/// Buckets that pass cairn's own check but that the real store refuses: a name S3's
/// rules forbid (upper case, `_`, `..`) and names of buckets that do not exist, on
/// LocalStack and fake-gcs-server. A write, a read and a target task each fail at
/// once with an error naming the store, the bucket and the reason, and no bucket or
/// object comes into being.
#[cfg(all(feature = "s3", feature = "gcs"))]
#[tokio::test]
async fn a_bucket_the_store_refuses_is_a_clear_error_and_nothing_is_written() {
    use bytes::Bytes;
    use cairn::{PutMode, ResultStore, Task};
    let (Some(_), Some(_)) = (emulators::s3_bucket(), emulators::gcs_bucket()) else {
        return;
    };
    let missing = format!("cairn-missing-{:08x}", rand::random::<u32>());
    let mut stores: Vec<(String, &str, ResultStore)> = Vec::new();
    for bucket in ["Bad_Bucket..Name", missing.as_str()] {
        let s3 = cairn::backend::S3Backend::builder(bucket)
            .prefix("p")
            .build()
            .await
            .unwrap_or_else(|e| panic!("cairn's own check refused {bucket}: {e}"));
        stores.push((
            bucket.to_owned(),
            "s3",
            ResultStore::from_backend(std::sync::Arc::new(s3)),
        ));
    }
    for bucket in ["Bad_Bucket..Name", missing.as_str()] {
        let gcs = cairn::backend::GcsBackend::builder(bucket)
            .prefix("p")
            .build()
            .await
            .unwrap_or_else(|e| panic!("cairn's own check refused {bucket}: {e}"));
        stores.push((
            bucket.to_owned(),
            "gs",
            ResultStore::from_backend(std::sync::Arc::new(gcs)),
        ));
    }
    for (bucket, scheme, store) in &stores {
        let started = std::time::Instant::now();
        let write = store
            .write_bytes("x/value.bin", Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap_err();
        let took = started.elapsed();
        let read = store.read_bytes("x/value.bin").await.unwrap_err();
        let target = Task::infallible("t", |x: u64| async move { x })
            .inputs(["x"])
            .result(store.clone())
            .try_target("out/{x}.json")
            .unwrap()
            .run(1)
            .await
            .into_result()
            .unwrap_err();
        for (what, err) in [
            ("write", write.to_string()),
            ("read", read.to_string()),
            ("target task", target.to_string()),
        ] {
            println!("{scheme}://{bucket} {what} ({took:?} for the write): {err}");
            assert!(
                err.contains(&format!("{scheme}://{bucket}")),
                "{scheme} {what}: the store and bucket are not named: {err}"
            );
            let lower = err.to_ascii_lowercase();
            assert!(
                lower.contains("bucket")
                    && (lower.contains("not exist") || lower.contains("not found")),
                "{scheme} {what}: the reason is not given: {err}"
            );
        }
        assert_eq!(write.kind(), cairn::ErrorKind::BucketNotFound, "{write}");
        assert!(
            took < std::time::Duration::from_secs(3),
            "{scheme}://{bucket}: retried for {took:?}"
        );
    }
    // Nothing came into being: each bucket is still missing (a created bucket would
    // answer `false` here), so no object exists either.
    for (bucket, scheme, store) in &stores {
        let still = store.exists("x/value.bin").await;
        assert!(
            still.is_err(),
            "{scheme}://{bucket}: the bucket came into being: {still:?}"
        );
    }
}

#[cfg(not(feature = "gcs"))]
#[tokio::test]
async fn a_store_url_for_a_feature_not_built_in_says_which() {
    let err = cairn::ResultStore::from_url("gs://bucket/p")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("'gcs' feature"), "{err}");
}

/// A cached task whose local store's root was removed: by default the lookup is a
/// miss, the body runs once, and the write names the missing store (a warning: the
/// value is returned, nothing is cached, the root is not made again); under strict
/// caching the run fails at its lookup, before the body, with the missing store.
#[tokio::test]
async fn a_task_whose_store_root_is_gone_says_so_and_makes_nothing() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use cairn::cache::INPUTS;
    use cairn::{ErrorKind, ResultStore, State, Task};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = ResultStore::local(&root).unwrap();
    std::fs::remove_dir(&root).unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let task = {
        let runs = runs.clone();
        Task::infallible("add_one", move |x: u64| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move { x + 1 }
        })
        .cache_policy(INPUTS)
        .result_storage(store)
        .memory_tier(false)
    };
    let run = task.run(1).await;
    assert_eq!((run.state(), run.value()), (&State::Completed, Some(&2)));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!root.exists(), "the missing root was made again");

    let run = task.clone().strict_cache(true).run(2).await;
    assert!(run.state().is_failed(), "{:?}", run.state());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the body ran before the error"
    );
    let err = run.error().unwrap();
    assert_eq!(err.error_kind(), Some(ErrorKind::BucketNotFound), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&root.display().to_string()) && text.contains("cannot read cache record"),
        "{text}"
    );
    assert!(!root.exists(), "the missing root was made again");
}
