//! Many entries: `ls` streams them in flat memory, `du` and `prune --dry-run` finish,
//! and so do `du --fast` and `ls --fast` (the listing alone).
//! 2,000 entries on the local disk and 200 on each emulator by default;
//! `CAIRN_TEST_ENTRIES=10000` for the full count everywhere. The times are printed (run
//! with `--nocapture`), never asserted.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

use common::TestStore;

fn entries(default: usize) -> usize {
    std::env::var("CAIRN_TEST_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `cairn ARGS`, counting stdout lines as they come; returns the line count, the
/// time taken and the child's peak resident memory in KiB.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its peak memory
fn measure(args: &[&str]) -> (usize, Duration, i64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let counter = std::thread::spawn(move || BufReader::new(stdout).lines().count());
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 reaps our own child by its pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{args:?} failed"
    );
    (counter.join().unwrap(), started.elapsed(), usage.ru_maxrss)
}

async fn many_entries(s: TestStore, what: &str, n: usize) {
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let s = &s;
            async move {
                let hex = format!(
                    "{:040x}",
                    (i as u128) * 0x9e37_79b9_7f4a_7c15 % (1u128 << 127)
                );
                let path = format!("cache/v1/ns{}/{}/{hex}", i % 4, &hex[..2]);
                s.record(&path, &format!("task{}", i % 8), "[1,2,3]", None)
                    .await;
            }
        })
        .await;
    println!("{what}: wrote {n} records in {:.2?}", started.elapsed());

    // A tenth of the entries, then all of them: ls's memory does not grow with them.
    let (small_count, _, small_rss) = measure(&[
        "ls",
        "--json",
        "--namespace",
        "ns0",
        "--task",
        "task0",
        &s.url,
    ]);
    assert_eq!(small_count, n.div_ceil(8));
    let (count, took, rss) = measure(&["ls", "--json", &s.url]);
    assert_eq!(count, n);
    println!(
        "{what}: ls of {n} entries: {took:.2?} ({:.0} entries/s), peak memory {} KiB (a tenth: {small_rss} KiB)",
        n as f64 / took.as_secs_f64(),
        rss
    );
    assert!(
        rss < small_rss + 24 * 1024,
        "ls of {n} entries peaked at {rss} KiB, of {small_count}: {small_rss} KiB"
    );
    let (lines, took, _) = measure(&["du", "--json", &s.url]);
    assert_eq!(lines, 1);
    println!("{what}: du of {n} entries: {took:.2?}");
    let (lines, took, _) = measure(&["du", "--fast", "--json", &s.url]);
    assert_eq!(lines, 1);
    println!("{what}: du --fast of {n} entries (the listing alone): {took:.2?}");
    let (count, took, _) = measure(&["ls", "--fast", "--json", &s.url]);
    assert_eq!(count, n);
    println!("{what}: ls --fast of {n} entries (the listing alone): {took:.2?}");
    let (lines, took, _) = measure(&["prune", "--dry-run", "--json", &s.url]);
    assert_eq!(
        lines, 1,
        "a dry run over intact, unexpired records removes nothing"
    );
    println!("{what}: prune --dry-run over {n} entries: {took:.2?}");
    assert_eq!(s.listing().await.len(), n);
}

#[tokio::test(flavor = "multi_thread")]
async fn many_entries_on_every_store() {
    many_entries(TestStore::local().await.unwrap(), "local", entries(2_000)).await;
    if let Some(s) = TestStore::s3("many").await {
        many_entries(s, "s3", entries(200)).await;
    }
    if let Some(s) = TestStore::gcs("many").await {
        many_entries(s, "gcs", entries(200)).await;
    }
}
