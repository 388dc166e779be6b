//! Throughput of cairn's stores next to the raw operations they wrap, measured in the
//! same run on the same disk and the same LocalStack, reported as ratios.
//!
//! ```text
//! cargo bench -p cairn-benches --bench store          # local; S3 when AWS_ENDPOINT_URL is set
//! ./localstack/bench                                            # starts LocalStack, then the above
//! CAIRN_BENCH_BIG=1 ./localstack/bench                          # adds 1 GiB values with peak memory
//! CAIRN_BENCH_SECTIONS=big-gcs ./localstack/bench                # only the 1 GiB GCS figures
//! ```
//!
//! `CAIRN_BENCH_SECTIONS` (comma-separated, default all) picks sections: `hashing`,
//! `local`, `s3`, and the 1 GiB values `big` (= `big-local,big-s3,big-gcs`); a `big*`
//! section named there runs without `CAIRN_BENCH_BIG=1`. `CAIRN_BENCH_BIG_ROUNDS` (default
//! 1) repeats each 1 GiB GCS measurement, alternating raw and cairn, and prints medians.
//!
//! A ratio is raw time / cairn time: 1.00 means as fast as the raw operation, 0.85 is
//! cairn at 85% of the raw throughput.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn::backend::{BackendExt, DynBackend, Key, LocalBackend};
use cairn::record::RecordInfo;
use cairn::{PutMode, ResultStore, Serializer};

const MIB: usize = 1 << 20;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let iterations: usize = std::env::var("CAIRN_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let big = std::env::var("CAIRN_BENCH_BIG").is_ok_and(|v| v == "1");
    let sections = Sections::from_env(big);
    println!(
        "cairn store benchmark: median of {iterations} runs each; ratio = raw time / cairn time"
    );
    println!();
    rt.block_on(async {
        if sections.has("hashing") {
            hashing(iterations);
        }
        if sections.has("local") {
            local(iterations, 256 * MIB).await;
        }
        if sections.has("s3") {
            s3(iterations, 64 * MIB).await;
        }
        if sections.big() {
            big_values(&sections).await;
        }
    });
}

/// The sections `CAIRN_BENCH_SECTIONS` names (all when unset; the 1 GiB ones only with
/// `CAIRN_BENCH_BIG=1` unless named).
struct Sections(Vec<String>);

impl Sections {
    fn from_env(big: bool) -> Self {
        let named = std::env::var("CAIRN_BENCH_SECTIONS").unwrap_or_default();
        let mut list: Vec<String> = named
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() {
            list = ["hashing", "local", "s3"].map(String::from).to_vec();
            if big {
                list.push("big".into());
            }
        }
        if list.iter().any(|s| s == "big") {
            list.extend(["big-local", "big-s3", "big-gcs"].map(String::from));
        }
        Sections(list)
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s == name)
    }

    fn big(&self) -> bool {
        self.0.iter().any(|s| s.starts_with("big"))
    }
}

fn data(size: usize) -> Bytes {
    let mut v = vec![0u8; size];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    Bytes::from(v)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mibps(size: usize, d: Duration) -> f64 {
    size as f64 / MIB as f64 / d.as_secs_f64()
}

fn report(name: &str, size: usize, raw: Duration, cairn: Duration) {
    println!(
        "  {name:<34} raw {:>8.1} MiB/s   cairn {:>8.1} MiB/s   ratio {:.2}",
        mibps(size, raw),
        mibps(size, cairn),
        raw.as_secs_f64() / cairn.as_secs_f64()
    );
}

async fn time_async<F, Fut>(iterations: usize, mut f: F) -> Duration
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        f(i).await;
        times.push(t.elapsed());
    }
    median(times)
}

fn hashing(iterations: usize) {
    let size = 256 * MIB;
    let value = data(size);
    println!("payload checksum, {} MiB in memory", size / MIB);
    let raw = median(
        (0..iterations)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(xxhash_rust::xxh3::xxh3_128(&value));
                t.elapsed()
            })
            .collect(),
    );
    let cairn = median(
        (0..iterations)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(cairn::record::PayloadChecksum::of(&value));
                t.elapsed()
            })
            .collect(),
    );
    report("record checksum vs raw XXH3-128", size, raw, cairn);
    println!();
}

/// The raw baseline of a durable, atomic file write: staged file, write, fsync,
/// rename, fsync of the directory.
fn raw_write(dir: &Path, name: &str, value: &[u8]) {
    let staged = dir.join(format!(".raw-staged.{name}"));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staged)
        .unwrap();
    f.write_all(value).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::rename(&staged, dir.join(name)).unwrap();
    File::open(dir).unwrap().sync_all().unwrap();
}

fn raw_read(path: &Path) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

async fn local(iterations: usize, size: usize) {
    let dir = tempfile::tempdir_in(std::env::var("CAIRN_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("a scratch directory for the benchmark");
    let value = data(size);
    let backend = LocalBackend::new(dir.path()).unwrap();
    let store = ResultStore::new(backend.clone()).with_serializer(Serializer::BYTES);
    println!(
        "local disk ({}), {} MiB value, fsync on",
        dir.path().display(),
        size / MIB
    );

    let raw_w = time_async(iterations, |i| {
        let v = value.clone();
        let d = dir.path().to_path_buf();
        async move { raw_write(&d, &format!("raw-{i}"), &v) }
    })
    .await;
    let cairn_w = time_async(iterations, |i| {
        let v = value.clone();
        let b = backend.clone();
        async move {
            b.put(&Key::parse(format!("cairn-{i}")).unwrap(), v.into())
                .await
                .unwrap();
        }
    })
    .await;
    report("write: backend put", size, raw_w, cairn_w);
    let record_w = time_async(iterations, |i| {
        let v = value.clone();
        let s = store.clone();
        async move {
            s.write_record(
                &format!("rec-{i}"),
                &v,
                RecordInfo::default(),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        }
    })
    .await;
    report("write: record (+BLAKE3 digest)", size, raw_w, record_w);

    let raw_r = time_async(iterations, |i| {
        let p = dir.path().join(format!("raw-{i}"));
        async move {
            std::hint::black_box(raw_read(&p));
        }
    })
    .await;
    let cairn_r = time_async(iterations, |i| {
        let b = backend.clone();
        async move {
            let got = b
                .get(&Key::parse(format!("cairn-{i}")).unwrap())
                .await
                .unwrap();
            assert_eq!(got.len(), size);
        }
    })
    .await;
    report("read: backend get", size, raw_r, cairn_r);
    let record_r = time_async(iterations, |i| {
        let s = store.clone();
        async move {
            let r = s.read_record::<Bytes>(&format!("rec-{i}")).await.unwrap();
            assert_eq!(r.value.len(), size);
        }
    })
    .await;
    report("read: record (verified)", size, raw_r, record_r);
    println!();
}

#[cfg(feature = "s3")]
async fn s3(iterations: usize, size: usize) {
    use aws_sdk_s3::primitives::ByteStream;
    use cairn::backend::{Backend, S3Backend};

    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        println!("S3: skipped (AWS_ENDPOINT_URL is not set; run ./localstack/bench)");
        return;
    }
    let bucket = std::env::var("CAIRN_TEST_S3_BUCKET").unwrap_or_else(|_| "cairn-test".into());
    let prefix = format!("bench-{:x}", rand::random::<u32>());
    let backend = S3Backend::from_env(bucket.clone(), prefix.clone())
        .await
        .unwrap();
    let client = backend.client().clone();
    let value = data(size);
    println!(
        "S3 ({}), {} MiB value, same endpoint for both",
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_default(),
        size / MIB
    );

    let raw_w = time_async(iterations, |i| {
        let v = value.clone();
        let c = client.clone();
        let (bucket, prefix) = (bucket.clone(), prefix.clone());
        async move {
            c.put_object()
                .bucket(bucket)
                .key(format!("{prefix}/raw-{i}"))
                .body(ByteStream::from(v))
                .send()
                .await
                .unwrap();
        }
    })
    .await;
    let cairn_w = time_async(iterations, |i| {
        let v = value.clone();
        let b = backend.clone();
        async move {
            b.put(&Key::parse(format!("cairn-{i}")).unwrap(), v.into())
                .await
                .unwrap();
        }
    })
    .await;
    report("put: backend vs PutObject", size, raw_w, cairn_w);

    let raw_r = time_async(iterations, |i| {
        let c = client.clone();
        let (bucket, prefix) = (bucket.clone(), prefix.clone());
        async move {
            let out = c
                .get_object()
                .bucket(bucket)
                .key(format!("{prefix}/raw-{i}"))
                .send()
                .await
                .unwrap();
            let body = out.body.collect().await.unwrap().into_bytes();
            assert_eq!(body.len(), size);
        }
    })
    .await;
    let cairn_r = time_async(iterations, |i| {
        let b = backend.clone();
        async move {
            let got = b
                .get(&Key::parse(format!("cairn-{i}")).unwrap())
                .await
                .unwrap();
            assert_eq!(got.len(), size);
        }
    })
    .await;
    report("get: backend vs GetObject", size, raw_r, cairn_r);
    for i in 0..iterations {
        let _ = backend
            .delete(&Key::parse(format!("cairn-{i}")).unwrap())
            .await;
        let _ = client
            .delete_object()
            .bucket(&bucket)
            .key(format!("{prefix}/raw-{i}"))
            .send()
            .await;
    }
    println!();
}

#[cfg(not(feature = "s3"))]
async fn s3(_iterations: usize, _size: usize) {
    println!("S3: skipped (built without the s3 feature; use --all-features)");
}

/// Peak resident memory since the last reset, in MiB (Linux).
fn peak_rss_mib() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn current_rss_mib() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).
    let _ = fs::write("/proc/self/clear_refs", "5");
}

async fn measure_big(name: &str, backend: DynBackend, value: &Bytes) {
    let key = Key::parse("big/one-gib.bin").unwrap();
    reset_peak_rss();
    let base = current_rss_mib();
    let t = Instant::now();
    backend.put(&key, value.clone().into()).await.unwrap();
    let w = t.elapsed();
    let w_peak = peak_rss_mib() - base;
    reset_peak_rss();
    let base = current_rss_mib();
    let t = Instant::now();
    let got = backend.get(&key).await.unwrap();
    let r = t.elapsed();
    let r_peak = peak_rss_mib() - base;
    assert_eq!(got.len(), value.len());
    drop(got);
    backend.delete(&key).await.unwrap();
    println!(
        "  {name:<8} write {:>7.1} MiB/s, peak +{:>6.0} MiB   read {:>7.1} MiB/s, peak +{:>6.0} MiB (value {} MiB)",
        mibps(value.len(), w),
        w_peak,
        mibps(value.len(), r),
        r_peak,
        value.len() / MIB
    );
}

async fn big_values(sections: &Sections) {
    let size = 1024 * MIB;
    let value = data(size);
    println!("1 GiB values: throughput and peak memory above the value itself");
    if sections.has("big-local") {
        let dir =
            tempfile::tempdir_in(std::env::var("CAIRN_BENCH_DIR").unwrap_or_else(|_| ".".into()))
                .unwrap();
        let local: DynBackend = std::sync::Arc::new(LocalBackend::new(dir.path()).unwrap());
        measure_big("local", local, &value).await;
    }
    #[cfg(feature = "s3")]
    if sections.has("big-s3") && std::env::var("AWS_ENDPOINT_URL").is_ok() {
        let bucket = std::env::var("CAIRN_TEST_S3_BUCKET").unwrap_or_else(|_| "cairn-test".into());
        let s3: DynBackend = std::sync::Arc::new(
            cairn::backend::S3Backend::from_env(
                bucket,
                format!("bench-big-{:x}", rand::random::<u32>()),
            )
            .await
            .unwrap(),
        );
        measure_big("s3", s3, &value).await;
    }
    println!();
    if sections.has("big-gcs") {
        gcs_big::run(&value).await;
    }
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat` (Linux).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// The resident memory of a process in MiB (`VmRSS`), from `/proc/<pid>/status`.
fn rss_of_mib(pid: &str) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// 1 GiB through GCS (fake-gcs-server): cairn's backend and a record next to raw JSON-API
/// requests made with `reqwest`, alternating, each with the time, the peak memory above
/// the value, and the CPU seconds of this process and of the emulator.
mod gcs_big {
    use super::*;
    use cairn::backend::{Backend, GcsBackend};
    use futures::StreamExt;

    /// One measured operation.
    #[derive(Clone, Copy)]
    struct Run {
        time: Duration,
        peak: f64,
        cpu: f64,
        server_cpu: f64,
    }

    fn median_run(mut runs: Vec<Run>) -> Run {
        runs.sort_by_key(|r| r.time);
        runs[runs.len() / 2]
    }

    /// Measures `f`: its time, the peak resident memory above what it started with, the
    /// CPU seconds of this process and of the process `server` (the emulator).
    async fn measure<F: std::future::Future<Output = ()>>(server: &str, f: F) -> Run {
        reset_peak_rss();
        let base = current_rss_mib();
        let (cpu0, scpu0) = (cpu_seconds("self"), cpu_seconds(server));
        let t = Instant::now();
        f.await;
        let time = t.elapsed();
        Run {
            time,
            peak: peak_rss_mib() - base,
            cpu: cpu_seconds("self") - cpu0,
            server_cpu: cpu_seconds(server) - scpu0,
        }
    }

    /// The GCS backend with the trait's provided `get_bytes_inspected` (read the whole
    /// object, then hash it in a second pass), to compare with the backend's own, which
    /// hashes while the body arrives.
    #[derive(Debug)]
    struct HashAfterRead(GcsBackend);

    #[async_trait::async_trait]
    impl Backend for HashAfterRead {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn capabilities(&self) -> cairn::backend::Capabilities {
            self.0.capabilities()
        }
        async fn head(&self, key: &Key) -> cairn::backend::Result<cairn::backend::ObjectMeta> {
            self.0.head(key).await
        }
        async fn get_opts(
            &self,
            key: &Key,
            range: Option<cairn::backend::GetRange>,
        ) -> cairn::backend::Result<cairn::backend::GetResult> {
            self.0.get_opts(key, range).await
        }
        async fn put_opts(
            &self,
            key: &Key,
            payload: cairn::backend::PutPayload,
            opts: cairn::backend::PutOptions,
        ) -> cairn::backend::Result<cairn::backend::PutResult> {
            self.0.put_opts(key, payload, opts).await
        }
        async fn delete(&self, key: &Key) -> cairn::backend::Result<()> {
            self.0.delete(key).await
        }
        fn list(
            &self,
            prefix: &str,
        ) -> futures::stream::BoxStream<'static, cairn::backend::Result<cairn::backend::ObjectMeta>>
        {
            self.0.list(prefix)
        }
    }

    struct Raw {
        client: reqwest::Client,
        endpoint: String,
        bucket: String,
    }

    impl Raw {
        /// The JSON API's upload endpoint of the bucket.
        fn upload_url(&self) -> String {
            format!("{}/upload/storage/v1/b/{}/o", self.endpoint, self.bucket)
        }

        /// The JSON API's URL of the object `name`.
        fn object_url(&self, name: &str) -> String {
            format!("{}/storage/v1/b/{}/o/{name}", self.endpoint, self.bucket)
        }

        /// A resumable upload in `chunk`-byte requests, as cairn sends a large write.
        async fn upload_resumable(&self, name: &str, value: &Bytes, chunk: usize) {
            let total = value.len();
            let init = self
                .client
                .post(self.upload_url())
                .query(&[("uploadType", "resumable")])
                .header("Content-Type", "application/json; charset=UTF-8")
                .header("X-Upload-Content-Type", "application/octet-stream")
                .header("X-Upload-Content-Length", total)
                .body(serde_json::json!({ "name": name }).to_string())
                .send()
                .await
                .unwrap();
            assert!(init.status().is_success(), "{}", init.status());
            let session = init.headers()["location"].to_str().unwrap().to_string();
            let _ = init.bytes().await;
            let mut offset = 0;
            while offset < total {
                let end = (offset + chunk).min(total);
                let resp = self
                    .client
                    .put(&session)
                    .header(
                        "Content-Range",
                        format!("bytes {offset}-{}/{total}", end - 1),
                    )
                    .header("Content-Type", "application/octet-stream")
                    .body(value.slice(offset..end))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                assert!(
                    matches!(status, 200 | 201 | 308),
                    "chunk at {offset}: {status}"
                );
                let _ = resp.bytes().await;
                offset = end;
            }
        }

        /// One `uploadType=multipart` request (JSON metadata, then the media), its body
        /// streamed from the value's buffer with its length, as cairn sends a single-request
        /// write.
        async fn upload_multipart(&self, name: &str, value: &Bytes) {
            let boundary = "raw-bench-boundary-7f3a9c";
            let head = Bytes::from(format!(
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n",
                serde_json::json!({ "name": name, "contentType": "application/octet-stream" })
            ));
            let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
            let len = head.len() + value.len() + tail.len();
            let parts = [head, value.clone(), tail];
            let resp = self
                .client
                .post(self.upload_url())
                .query(&[("uploadType", "multipart")])
                .header(
                    "Content-Type",
                    format!("multipart/related; boundary={boundary}"),
                )
                .header("Content-Length", len)
                .body(reqwest::Body::wrap_stream(futures::stream::iter(
                    parts.into_iter().map(Ok::<_, std::io::Error>),
                )))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            let _ = resp.bytes().await;
        }

        /// One `uploadType=media` request with the whole value.
        async fn upload_media(&self, name: &str, value: &Bytes) {
            let resp = self
                .client
                .post(self.upload_url())
                .query(&[("uploadType", "media"), ("name", name)])
                .header("Content-Type", "application/octet-stream")
                .body(value.clone())
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            let _ = resp.bytes().await;
        }

        /// An `alt=media` download into one buffer of the final size.
        async fn download(&self, name: &str, size: usize) -> Bytes {
            let resp = self
                .client
                .get(self.object_url(name))
                .query(&[("alt", "media")])
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            let mut buf = bytes::BytesMut::with_capacity(size);
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                buf.extend_from_slice(&chunk.unwrap());
            }
            buf.freeze()
        }

        async fn delete(&self, name: &str) {
            let _ = self.client.delete(self.object_url(name)).send().await;
        }
    }

    fn line(name: &str, size: usize, r: Run) {
        println!(
            "    {name:<40} {:>7.1} MiB/s  {:>6.2} s  peak +{:>5.0} MiB  cpu {:>5.2} s  emulator cpu {:>5.2} s",
            mibps(size, r.time),
            r.time.as_secs_f64(),
            r.peak,
            r.cpu,
            r.server_cpu
        );
    }

    fn ratio(what: &str, raw: Run, cairn: Run) {
        println!(
            "    {what:<40} ratio = raw time / cairn time = {:.2}",
            raw.time.as_secs_f64() / cairn.time.as_secs_f64()
        );
    }

    pub(super) async fn run(value: &Bytes) {
        let Ok(host) = std::env::var("STORAGE_EMULATOR_HOST") else {
            println!(
                "GCS 1 GiB: skipped (STORAGE_EMULATOR_HOST is not set; run ./localstack/bench)"
            );
            return;
        };
        let endpoint = cairn_gcs::normalize_emulator_host(&host);
        let server = std::env::var("CAIRN_GCS_EMULATOR_PID").unwrap_or_else(|_| "0".into());
        let bucket = std::env::var("CAIRN_TEST_GCS_BUCKET").unwrap_or_else(|_| "cairntest".into());
        let rounds: usize = std::env::var("CAIRN_BENCH_BIG_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
            .max(1);
        let size = value.len();
        let run = format!("benchbig{:x}", rand::random::<u32>());
        let backend = GcsBackend::from_env(bucket.clone(), run.clone())
            .await
            .unwrap();
        let chunk = cairn_gcs::DEFAULT_CHUNK_SIZE as usize;
        let raw = Raw {
            client: reqwest::Client::new(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            bucket: bucket.clone(),
        };
        let store = ResultStore::new(backend.clone());
        let hash_after = ResultStore::new(HashAfterRead(backend.clone()));
        let key = Key::parse("one-gib.bin").unwrap();
        println!(
            "GCS ({endpoint}, fake-gcs-server pid {server}), {} MiB value, {rounds} round(s), medians; \
             peak = resident memory above the value; emulator RSS now {:.0} MiB",
            size / MIB,
            rss_of_mib(&server)
        );
        let resumable = std::env::var("CAIRN_BENCH_GCS_RESUMABLE").map_or(true, |v| v != "0");
        if !resumable {
            println!("  (resumable rows skipped: CAIRN_BENCH_GCS_RESUMABLE=0)");
        }
        let mut runs: std::collections::BTreeMap<&str, Vec<Run>> = Default::default();
        let raw_name = format!("{run}-raw");
        let mp_name = format!("{run}-raw-multipart");
        for round in 0..rounds {
            // Single-request writes: what a conditional write (a task's output, Create) is
            // on the emulator, and any write up to the resumable threshold. The order
            // turns round every other round, so that neither side always comes first.
            let mut writes = [
                "raw multipart upload",
                "cairn put, Create (multipart)",
                "raw media upload",
                "record write, Create (multipart)",
            ];
            let mut reads = [
                "raw download",
                "cairn get",
                "record read (verified)",
                "record read, hashed after the read",
            ];
            if round % 2 == 1 {
                writes.reverse();
                reads.reverse();
            }
            for name in writes {
                let r = match name {
                    "raw multipart upload" => {
                        measure(&server, raw.upload_multipart(&mp_name, value)).await
                    }
                    "raw media upload" => {
                        measure(&server, raw.upload_media(&raw_name, value)).await
                    }
                    "cairn put, Create (multipart)" => {
                        measure(&server, async {
                            backend
                                .put_mode(&key, value.clone().into(), PutMode::Create)
                                .await
                                .unwrap();
                        })
                        .await
                    }
                    // A task's output: a verified record written with Create.
                    _ => {
                        measure(&server, async {
                            store
                                .write_record(
                                    "rec-create",
                                    value,
                                    RecordInfo::default(),
                                    PutMode::Create,
                                )
                                .await
                                .unwrap();
                        })
                        .await
                    }
                };
                runs.entry(name).or_default().push(r);
            }
            raw.delete(&mp_name).await;
            let r = measure(&server, async {
                std::hint::black_box(cairn::record::PayloadChecksum::of(value));
            })
            .await;
            runs.entry("XXH3-128 of the value (record checksum)")
                .or_default()
                .push(r);
            for name in reads {
                let r = match name {
                    "raw download" => {
                        measure(&server, async {
                            let got = raw.download(&raw_name, size).await;
                            assert_eq!(got.len(), size);
                        })
                        .await
                    }
                    "cairn get" => {
                        measure(&server, async {
                            let got = backend.get(&key).await.unwrap();
                            assert_eq!(got.len(), size);
                        })
                        .await
                    }
                    "record read (verified)" => {
                        measure(&server, async {
                            let rec = store.read_record::<Bytes>("rec-create").await.unwrap();
                            assert_eq!(rec.value.len(), size);
                        })
                        .await
                    }
                    _ => {
                        measure(&server, async {
                            let rec = hash_after.read_record::<Bytes>("rec-create").await.unwrap();
                            assert_eq!(rec.value.len(), size);
                        })
                        .await
                    }
                };
                runs.entry(name).or_default().push(r);
            }
            raw.delete(&raw_name).await;
            backend.delete(&key).await.unwrap();
            store.delete("rec-create").await.unwrap();
            if !resumable {
                continue;
            }
            let r = measure(&server, raw.upload_resumable(&raw_name, value, chunk)).await;
            runs.entry("raw resumable upload").or_default().push(r);
            raw.delete(&raw_name).await;
            let r = measure(&server, async {
                backend.put(&key, value.clone().into()).await.unwrap();
            })
            .await;
            runs.entry("cairn put, Overwrite (resumable)")
                .or_default()
                .push(r);
            backend.delete(&key).await.unwrap();
            let r = measure(&server, async {
                store
                    .write_record("rec-over", value, RecordInfo::default(), PutMode::Overwrite)
                    .await
                    .unwrap();
            })
            .await;
            runs.entry("record write, Overwrite (resumable)")
                .or_default()
                .push(r);
            store.delete("rec-over").await.unwrap();
        }
        if rounds > 1 {
            println!("  each run, in seconds:");
            for (name, rs) in &runs {
                let times: Vec<String> = rs
                    .iter()
                    .map(|r| format!("{:.2}", r.time.as_secs_f64()))
                    .collect();
                println!("    {name:<40} {}", times.join(" "));
            }
        }
        let m: std::collections::BTreeMap<&str, Run> =
            runs.into_iter().map(|(k, v)| (k, median_run(v))).collect();
        let show = |names: &[&str]| {
            for name in names {
                if let Some(r) = m.get(name) {
                    line(name, size, *r);
                }
            }
        };
        let compare = |what: &str, raw: &str, cairn: &str| {
            if let (Some(r), Some(c)) = (m.get(raw), m.get(cairn)) {
                ratio(what, *r, *c);
            }
        };
        println!("  write, one request (peak = memory above the value)");
        show(&[
            "raw multipart upload",
            "raw media upload",
            "cairn put, Create (multipart)",
            "XXH3-128 of the value (record checksum)",
            "record write, Create (multipart)",
        ]);
        compare(
            "cairn put vs raw multipart",
            "raw multipart upload",
            "cairn put, Create (multipart)",
        );
        compare(
            "record write vs raw multipart",
            "raw multipart upload",
            "record write, Create (multipart)",
        );
        compare(
            "record write vs raw media",
            "raw media upload",
            "record write, Create (multipart)",
        );
        if resumable {
            println!("  write, resumable in {} MiB chunks", chunk / MIB);
            show(&[
                "raw resumable upload",
                "cairn put, Overwrite (resumable)",
                "record write, Overwrite (resumable)",
            ]);
            compare(
                "cairn put vs raw resumable",
                "raw resumable upload",
                "cairn put, Overwrite (resumable)",
            );
            compare(
                "record write vs raw resumable",
                "raw resumable upload",
                "record write, Overwrite (resumable)",
            );
        }
        println!("  read (peak includes the 1 GiB buffer read into)");
        show(&[
            "raw download",
            "cairn get",
            "record read (verified)",
            "record read, hashed after the read",
        ]);
        compare("cairn get vs raw download", "raw download", "cairn get");
        compare(
            "record read vs raw download",
            "raw download",
            "record read (verified)",
        );
        compare(
            "record read, hashed after, vs raw",
            "raw download",
            "record read, hashed after the read",
        );
        println!("  emulator RSS after: {:.0} MiB", rss_of_mib(&server));
        println!();
    }
}
