//! Throughput of cairn's stores next to the raw operations they wrap, measured in the
//! same run on the same disk and the same LocalStack, reported as ratios.
//!
//! ```text
//! cargo bench -p cairn-benches --bench store          # local; S3 when AWS_ENDPOINT_URL is set
//! ./localstack/bench                                            # starts LocalStack, then the above
//! CAIRN_BENCH_BIG=1 ./localstack/bench                          # adds 1 GiB values with peak memory
//! ```
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
    println!(
        "cairn store benchmark: median of {iterations} runs each; ratio = raw time / cairn time"
    );
    println!();
    rt.block_on(async {
        hashing(iterations);
        local(iterations, 256 * MIB).await;
        s3(iterations, 64 * MIB).await;
        if big {
            big_values().await;
        }
    });
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
    println!("BLAKE3, {} MiB in memory", size / MIB);
    let raw = median(
        (0..iterations)
            .map(|_| {
                let t = Instant::now();
                let mut h = blake3::Hasher::new();
                h.update_rayon(&value);
                std::hint::black_box(h.finalize());
                t.elapsed()
            })
            .collect(),
    );
    let cairn = median(
        (0..iterations)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(cairn::record::digest(&value));
                t.elapsed()
            })
            .collect(),
    );
    report("record digest vs blake3 (rayon)", size, raw, cairn);
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

async fn big_values() {
    let size = 1024 * MIB;
    let value = data(size);
    println!("1 GiB values: throughput and peak memory above the value itself");
    let dir = tempfile::tempdir_in(std::env::var("CAIRN_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let local: DynBackend = std::sync::Arc::new(LocalBackend::new(dir.path()).unwrap());
    measure_big("local", local, &value).await;
    #[cfg(feature = "s3")]
    if std::env::var("AWS_ENDPOINT_URL").is_ok() {
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
}
