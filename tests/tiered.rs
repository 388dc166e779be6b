//! The local disk tier's own behaviours, beyond the suites it passes like any store:
//! a remote hit populates the tier and a second process reads from it (remote GETs
//! counted by a proxy in front of LocalStack); a corrupted local copy is re-fetched; a
//! target replaced remotely by another client is not served stale; eviction keeps a
//! tier shared by concurrent writer processes within its bound.
//!
//! The test re-runs its own binary as the reader and writer processes (harness =
//! false, so `main` decides the role).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn::backend::{BackendExt, DiskTier, Key, TieredBackend};
use cairn::record::RecordInfo;
use cairn::{PutMode, ResultStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod emulators;

const ROLE: &str = "CAIRN_TIERED_ROLE";
const URL: &str = "CAIRN_TIERED_URL";
const LOCATION: &str = "CAIRN_TIERED_LOCATION";

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Ok(role) = std::env::var(ROLE) {
        let url = std::env::var(URL).unwrap();
        rt.block_on(async {
            let store = ResultStore::from_url(&url).await.unwrap();
            match role.as_str() {
                // Reads one record and prints its value.
                "read" => {
                    let loc = std::env::var(LOCATION).unwrap();
                    let record = store.read_record::<u64>(&loc).await.unwrap();
                    println!("{}", record.value);
                }
                // Writes 64 cache records of 8 KiB under its own name.
                "write" => {
                    let me = std::env::var(LOCATION).unwrap();
                    for i in 0..64 {
                        let loc = format!("cache/v1/evict/{me}/{i:03}");
                        store
                            .write_record(
                                &loc,
                                &vec![i as u8; 8 << 10],
                                RecordInfo::default(),
                                PutMode::Overwrite,
                            )
                            .await
                            .unwrap();
                    }
                }
                other => panic!("unknown role {other}"),
            }
        });
        return;
    }
    let (mut passed, mut skipped) = (0, 0);
    for (name, ran) in [
        (
            "second_process_reads_from_the_tier",
            rt.block_on(second_process_reads_from_the_tier()),
        ),
        (
            "corrupted_local_copy_is_refetched",
            rt.block_on(corrupted_local_copy_is_refetched()),
        ),
        (
            "target_replaced_remotely_is_not_served_stale",
            rt.block_on(target_replaced_remotely_is_not_served_stale()),
        ),
        (
            "eviction_keeps_a_shared_tier_within_its_bound",
            rt.block_on(eviction_keeps_a_shared_tier_within_its_bound()),
        ),
    ] {
        println!("test {name} ... {}", if ran { "ok" } else { "skipped" });
        if ran {
            passed += 1;
        } else {
            skipped += 1;
        }
    }
    println!("{passed} passed, 0 failed, {skipped} skipped");
}

fn unique(what: &str) -> String {
    format!("{what}-{:016x}", rand::random::<u64>())
}

/// A TCP proxy to `upstream` that counts request lines starting with `GET ` and
/// naming `marker`. Children send no request bodies, so lines are request lines or
/// headers.
async fn counting_proxy(upstream: String, marker: String) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    let upstream = upstream.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (upstream, marker, counter) = (upstream.clone(), marker.clone(), counter.clone());
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let (mut buf, mut line) = (vec![0u8; 16 << 10], Vec::new());
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        for &b in &buf[..n] {
                            line.push(b);
                            if b == b'\n' {
                                let text = String::from_utf8_lossy(&line);
                                if text.starts_with("GET ") && text.contains(&marker) {
                                    counter.fetch_add(1, Ordering::SeqCst);
                                }
                                line.clear();
                            }
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, gets)
}

fn run_child(envs: &[(&str, &str)]) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A record written to S3 by one process is read by a second process through the
/// tier (one remote GET, which copies it into the tier), then by a third process
/// sharing the tier directory with no remote GET at all.
async fn second_process_reads_from_the_tier() -> bool {
    let Some(bucket) = emulators::s3_bucket() else {
        return false;
    };
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let prefix = format!("{}/{}", emulators::run_prefix(), unique("tier-2proc"));
    let remote = ResultStore::from_url(&format!("s3://{bucket}/{prefix}"))
        .await
        .unwrap();
    let location = format!("cache/v1/default/ab/{}", unique("key"));
    remote
        .write_record(&location, &42u64, RecordInfo::default(), PutMode::Create)
        .await
        .unwrap();

    let tier_dir = tempfile::tempdir().unwrap();
    let (proxy, gets) = counting_proxy(endpoint, location.rsplit('/').next().unwrap().into()).await;
    let url = format!(
        "s3://{bucket}/{prefix}?cache_dir={}",
        tier_dir.path().display()
    );
    let envs = [
        (ROLE, "read"),
        (URL, url.as_str()),
        (LOCATION, location.as_str()),
        ("AWS_ENDPOINT_URL", proxy.as_str()),
    ];
    assert_eq!(run_child(&envs), "42");
    assert_eq!(
        gets.load(Ordering::SeqCst),
        1,
        "the first reader fetches once"
    );
    let tier = DiskTier::new(tier_dir.path()).unwrap();
    assert!(
        tier.usage().unwrap() > 0,
        "the remote hit was copied into the tier"
    );

    assert_eq!(run_child(&envs), "42");
    assert_eq!(
        gets.load(Ordering::SeqCst),
        1,
        "the second process read the tier, not the remote store"
    );
    true
}

/// A local copy with a flipped byte is dropped and the object re-fetched: the right
/// value is returned and the tier holds a good copy again.
async fn corrupted_local_copy_is_refetched() -> bool {
    let Some(bucket) = emulators::s3_bucket() else {
        return false;
    };
    let prefix = format!("{}/{}", emulators::run_prefix(), unique("tier-corrupt"));
    let remote = ResultStore::from_url(&format!("s3://{bucket}/{prefix}"))
        .await
        .unwrap();
    let tier_dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::new(tier_dir.path()).unwrap();
    let tiered = ResultStore::new(TieredBackend::new(tier.clone(), remote.backend().clone()));
    let location = format!("cache/v1/default/cd/{}", unique("key"));
    remote
        .write_record(&location, &7u64, RecordInfo::default(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(tiered.read_record::<u64>(&location).await.unwrap().value, 7);

    let path = tier.path_of(remote.url(), &Key::parse(&location).unwrap());
    let mut bytes = std::fs::read(&path).expect("the hit was copied into the tier");
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        tier.get(remote.url(), &Key::parse(&location).unwrap())
            .is_none(),
        "a corrupt copy is never returned"
    );
    std::fs::write(&path, &bytes).unwrap(); // corrupt again, for the store to meet

    assert_eq!(tiered.read_record::<u64>(&location).await.unwrap().value, 7);
    let good = tier.get(remote.url(), &Key::parse(&location).unwrap());
    assert!(good.is_some(), "re-fetched into the tier");
    true
}

/// A target read through the tier, then replaced by another client writing to GCS
/// directly, is read again with the new content: targets are served locally only
/// while the remote version matches.
async fn target_replaced_remotely_is_not_served_stale() -> bool {
    let Some(bucket) = emulators::gcs_bucket() else {
        return false;
    };
    let prefix = format!("{}/{}", emulators::run_prefix(), unique("tier-target"));
    let other_client = ResultStore::from_url(&format!("gs://{bucket}/{prefix}"))
        .await
        .unwrap();
    let tier_dir = tempfile::tempdir().unwrap();
    let tiered = ResultStore::tiered(tier_dir.path(), &other_client).unwrap();
    tiered
        .write_at("reports/monday.txt", &"v1".to_string())
        .await
        .unwrap();
    assert_eq!(
        tiered.read::<String>("reports/monday.txt").await.unwrap(),
        "v1"
    );
    assert!(DiskTier::new(tier_dir.path()).unwrap().usage().unwrap() > 0);

    other_client
        .write_at("reports/monday.txt", &"v2, by another tool".to_string())
        .await
        .unwrap();
    assert_eq!(
        tiered.read::<String>("reports/monday.txt").await.unwrap(),
        "v2, by another tool"
    );
    other_client.delete("reports/monday.txt").await.unwrap();
    assert!(tiered.read::<String>("reports/monday.txt").await.is_err());
    true
}

/// Four processes write 64 records of 8 KiB each (2 MiB in all) through one tier
/// bounded to 256 KiB: every record reaches the remote store, and the tier ends
/// within its bound, holding copies.
async fn eviction_keeps_a_shared_tier_within_its_bound() -> bool {
    let (remote_dir, tier_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = format!(
        "file://{}?cache_dir={}&cache_size=256KiB",
        remote_dir.path().display(),
        tier_dir.path().display()
    );
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .env(ROLE, "write")
                .env(URL, &url)
                .env(LOCATION, format!("w{i}"))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let remote = ResultStore::local(remote_dir.path()).unwrap();
    let written = remote.backend().list_all("cache/v1/evict/").await.unwrap();
    assert_eq!(written.len(), 256);
    let tier = DiskTier::new(tier_dir.path()).unwrap();
    let usage = tier.usage().unwrap();
    assert!(
        usage <= 256 << 10,
        "tier holds {usage} bytes, over its 256 KiB bound"
    );
    assert!(
        usage >= 128 << 10,
        "eviction went far below the bound: {usage} bytes"
    );
    true
}
