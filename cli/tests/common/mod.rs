//! Stores for the command's tests: a temporary directory, LocalStack S3 and
//! fake-gcs-server (found through `AWS_ENDPOINT_URL` / `STORAGE_EMULATOR_HOST`, as the
//! rest of cairn's tests find them), and a fixed set of entries with fixed times.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use cairn::backend::{BackendExt, Key, PutPayload};
use cairn::record::{self, RecordHeader};
use cairn::ResultStore;
use chrono::{DateTime, Utc};

#[path = "../../../tests/emulators/mod.rs"]
mod emulators;

#[allow(unused_imports)] // not every test file asks
pub use emulators::{gcs_bucket, s3_bucket};

/// The time every fixture record says it was created.
pub const CREATED: &str = "2026-01-01T00:00:00Z";
/// The time the commands judge ages at.
pub const NOW: &str = "2026-01-03T00:00:00Z";

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A store to run the command on: its URL, and a handle to set it up and look at it.
pub struct TestStore {
    pub url: String,
    pub store: ResultStore,
    /// The directory of a local store (kept alive with the store).
    pub dir: Option<tempfile::TempDir>,
}

impl TestStore {
    pub async fn local() -> Option<TestStore> {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().display().to_string();
        Some(TestStore {
            store: ResultStore::from_url(&url).await.unwrap(),
            url,
            dir: Some(dir),
        })
    }

    pub async fn s3(test: &str) -> Option<TestStore> {
        let bucket = emulators::s3_bucket()?;
        Self::remote(format!("s3://{bucket}/{}/{test}", emulators::run_prefix())).await
    }

    pub async fn gcs(test: &str) -> Option<TestStore> {
        let bucket = emulators::gcs_bucket()?;
        Self::remote(format!("gs://{bucket}/{}/{test}", emulators::run_prefix())).await
    }

    async fn remote(url: String) -> Option<TestStore> {
        Some(TestStore {
            store: ResultStore::from_url(&url).await.unwrap(),
            url,
            dir: None,
        })
    }

    /// Runs `cairn ARGS... URL` (the URL last, where each command takes it).
    pub fn cairn(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.push(&self.url);
        cairn(&all)
    }

    /// Writes a record with a fixed creation time.
    pub async fn record(&self, path: &str, task: &str, payload: &str, expires: Option<&str>) {
        let payload = Bytes::from(payload.to_owned());
        let header = RecordHeader {
            created: t(CREATED),
            expires: expires.map(t),
            serializer: "json".into(),
            payload_len: payload.len() as u64,
            payload_checksum: record::PayloadChecksum::of(&payload),
            key_components: BTreeMap::from([("inputs".to_owned(), "x=1".to_owned())]),
            task: Some(task.into()),
            output_type: Some("i64".into()),
            cairn_version: "0.1.0".into(),
            declared_digests: Vec::new(),
        };
        let framed = record::encode_header(&header, payload);
        self.put(path, framed).await;
    }

    pub async fn put(&self, path: &str, payload: impl Into<PutPayload>) {
        self.store
            .backend()
            .put(&Key::parse(path).unwrap(), payload.into())
            .await
            .unwrap();
    }

    pub async fn get(&self, path: &str) -> Bytes {
        self.store
            .backend()
            .get(&Key::parse(path).unwrap())
            .await
            .unwrap()
    }

    /// Every object's path and size, sorted.
    pub async fn listing(&self) -> Vec<(String, u64)> {
        let mut all: Vec<_> = self
            .store
            .backend()
            .list_all("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.key.to_string(), m.size))
            .collect();
        all.sort();
        all
    }

    /// The standard entries: three cache records of tasks a and b in two namespaces,
    /// an expired one, a checkpoint and persisted inputs of a failed flow run with its
    /// manifest and summary, and a live lease.
    pub async fn fixture(&self) {
        self.record("cache/v1/default/a1/a1000000000000000001", "a", "1", None)
            .await;
        self.record("cache/v1/default/a2/a2000000000000000002", "a", "22", None)
            .await;
        self.record("cache/v1/other/b1/b1000000000000000001", "b", "333", None)
            .await;
        self.record(
            "cache/v1/default/e1/e1000000000000000001",
            "a",
            "4444",
            Some("2026-01-02T00:00:00Z"),
        )
        .await;
        self.record("runs/v1/etl/run-1/load/0", "load", "[1,2,3]", None)
            .await;
        self.record("runs/v1/etl/run-1/load/1.inputs", "load", "{\"x\":1}", None)
            .await;
        self.put(
            "runs/v1/etl/run-1/manifest.json",
            Bytes::from_static(br#"{"flow":"etl","run_id":"run-1","parameters_digest":"","started":"2026-01-01T00:00:00Z","host":"h","pid":1}"#),
        )
        .await;
        self.put(
            "runs/v1/etl/run-1/flow.json",
            Bytes::from_static(br#"{"flow_name":"etl","flow_run_id":"run-1","flow_run_name":"etl-run","date":"2026-01-01T00:00:00Z","state":"Failed('1/2 task runs failed')","task_runs":[{"task":"load","name":"load-0ab","id":"0ab","map_index":"0","state":"Completed()","location":"runs/v1/etl/run-1/load/0"},{"task":"load","name":"load-1cd","id":"1cd","map_index":"1","state":"Failed('boom')"}]}"#),
        )
        .await;
        self.put(
            "leases/v1/default/c1/c1000000000000000001",
            Bytes::from_static(br#"{"holder":"h1","host":"h","pid":1,"flow_run":"run-2","task":"a","generation":1,"released":false,"renewals":0}"#),
        )
        .await;
    }
}

/// Runs `cairn ARGS...` with stdin closed.
pub fn cairn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Lines sorted after the first (listing order is the store's, so unspecified).
pub fn sorted_body(s: &str) -> String {
    let mut lines: Vec<&str> = s.lines().collect();
    if lines.len() > 1 {
        lines[1..].sort();
    }
    lines.join("\n") + "\n"
}

/// Removal lines (printed as the listing goes, in its order) sorted, the summary last.
pub fn sorted_removals(s: &str) -> String {
    let (mut removals, summary): (Vec<&str>, Vec<&str>) = s
        .lines()
        .partition(|l| l.contains(" (") && l.ends_with(')'));
    removals.sort();
    removals.extend(summary);
    removals.join("\n") + "\n"
}

/// JSON lines with the store's own modification times blanked, sorted.
pub fn stable_json(s: &str) -> String {
    let mut lines: Vec<String> = s
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(m) = v.get_mut("modified") {
                *m = "<modified>".into();
            }
            v.to_string()
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}
