//! Maintenance through the library: prune's clean-up of unfinished writes on S3 (open
//! multipart uploads, on LocalStack), lease staleness judged by an injected clock, and
//! removals in bounded batches.

mod emulators;

use std::time::Duration;

use cairn::backend::{Backend, BackendExt, Key};
use cairn::cache::LeaseHolder;
use cairn::maintenance::{Filter, Maintenance, PruneOptions, RemovalReason};
use cairn::record::RecordInfo;
use cairn::{ManualClock, PutMode, ResultStore};
use futures::TryStreamExt;

fn holder(released: bool) -> LeaseHolder {
    LeaseHolder {
        holder: "h1".into(),
        host: "host".into(),
        pid: 1,
        flow_run: "r1".into(),
        task: "slow".into(),
        generation: 1,
        released,
        renewals: 0,
    }
}

/// A lease renewed 90 minutes ago is stale with the default hour and live when leases
/// may go two hours unrenewed; the clock is a `ManualClock`, never the wall clock.
#[tokio::test(flavor = "multi_thread")]
async fn lease_staleness_is_configurable_and_judged_by_the_clock() {
    let store = ResultStore::memory();
    let expired = RecordInfo {
        expires: Some(chrono::Utc::now() - chrono::Duration::days(1)),
        ..Default::default()
    };
    store
        .write_record("cache/v1/default/ab/abcd", &1, expired, PutMode::Create)
        .await
        .unwrap();
    store
        .write_at("leases/v1/default/ab/abcd", &holder(false))
        .await
        .unwrap();
    let written = store
        .backend()
        .head(&Key::parse("leases/v1/default/ab/abcd").unwrap())
        .await
        .unwrap()
        .last_modified;
    let clock = ManualClock::new(written);
    let dry = PruneOptions {
        dry_run: true,
        ..PruneOptions::default()
    };
    let prune = |m: Maintenance| {
        let dry = dry.clone();
        async move { m.prune(&dry).await.unwrap() }
    };

    clock.advance(chrono::Duration::minutes(30));
    let r = prune(Maintenance::new(&store).clock(&clock)).await;
    assert_eq!(
        (r.entries(), r.kept_live),
        (0, 1),
        "a fresh lease keeps its record"
    );

    clock.advance(chrono::Duration::minutes(60)); // 90 minutes unrenewed
    let r = prune(Maintenance::new(&store).clock(&clock)).await;
    let reasons: Vec<_> = r.removed.iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        [RemovalReason::Expired, RemovalReason::StaleLease],
        "{r:?}"
    );
    let two_hours = Maintenance::new(&store)
        .clock(&clock)
        .stale_leases_after(Duration::from_secs(2 * 3600));
    let r = prune(two_hours.clone()).await;
    assert_eq!((r.entries(), r.kept_live), (0, 1), "{r:?}");
    // clear honours the same setting.
    let all = Filter::default();
    assert_eq!(two_hours.clear(&all, true).await.unwrap().entries(), 0);
    let one_hour = Maintenance::new(&store).clock(&clock);
    assert_eq!(one_hour.clear(&all, true).await.unwrap().entries(), 2);

    // A released lease is stale at once, whatever the setting.
    store
        .write_at("leases/v1/default/ab/abcd", &holder(true))
        .await
        .unwrap();
    let r = prune(two_hours).await;
    assert_eq!(r.entries(), 2, "{r:?}");
}

/// clear and prune remove in batches as they list: over more entries than one batch,
/// the counts stay exact and every removed entry is handed over once.
#[tokio::test(flavor = "multi_thread")]
async fn removals_in_batches_keep_exact_counts() {
    let store = ResultStore::memory();
    let n = 2_500;
    let expired = RecordInfo {
        expires: Some(chrono::Utc::now() - chrono::Duration::days(1)),
        ..Default::default()
    };
    for i in 0..n {
        let path = format!("cache/v1/default/{:02x}/{i:08x}", i % 256);
        let info = if i % 2 == 0 {
            expired.clone()
        } else {
            RecordInfo::default()
        };
        store
            .write_record(&path, &i, info, PutMode::Create)
            .await
            .unwrap();
    }
    let listed: Vec<_> = store.backend().list_all("cache/").await.unwrap();
    let expired_bytes: u64 = {
        let m = Maintenance::new(&store);
        let f = Filter {
            expired: true,
            ..Filter::default()
        };
        let e: Vec<_> = m.list(&f).try_collect().await.unwrap();
        assert_eq!(e.len(), n / 2);
        e.iter().map(|e| e.size).sum()
    };
    let m = Maintenance::new(&store);
    let mut seen = std::collections::HashSet::new();
    let pruned = m
        .prune_each(&PruneOptions::default(), |r| {
            assert!(seen.insert(r.path), "handed over twice");
        })
        .await
        .unwrap();
    assert_eq!(
        (pruned.entries(), pruned.bytes()),
        ((n / 2) as u64, expired_bytes)
    );
    assert_eq!(seen.len(), n / 2);
    assert!(pruned.removed.is_empty());
    let total: u64 = listed.iter().map(|o| o.size).sum();
    assert_eq!(pruned.remaining_bytes, total - expired_bytes);

    let mut count = 0;
    let cleared = m
        .clear_each(&Filter::default(), false, |_| count += 1)
        .await
        .unwrap();
    assert_eq!((cleared.entries(), count), ((n / 2) as u64, n / 2));
    assert_eq!(cleared.bytes(), total - expired_bytes);
    assert!(store.backend().list_all("cache/").await.unwrap().is_empty());
}

/// On S3, an open multipart upload (a writer killed mid-upload) is a staged leftover:
/// prune's dry run reports it without aborting it, and prune aborts it once older than
/// the grace period, keeping a younger one (a write that may be in progress).
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread")]
async fn prune_aborts_old_open_uploads_on_s3_and_keeps_young_ones() {
    let Some(bucket) = emulators::s3_bucket() else {
        return;
    };
    let root = format!("{}/maintenance-uploads", emulators::run_prefix());
    let s3 = cairn::backend::S3Backend::builder(&bucket)
        .prefix(&root)
        .build()
        .await
        .unwrap();
    let start = |key: &str| {
        let (client, key) = (s3.client().clone(), format!("{root}/{key}"));
        let bucket = bucket.clone();
        async move {
            let up = client
                .create_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            let id = up.upload_id().unwrap().to_owned();
            client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&id)
                .part_number(1)
                .body(b"half a record".to_vec().into())
                .send()
                .await
                .unwrap();
            id
        }
    };
    let old = start("cache/v1/default/aa/aa01").await;
    // Upload times have a resolution of a second: the second upload is younger.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let young = start("cache/v1/default/bb/bb01").await;
    let open = || async {
        let out = s3
            .client()
            .list_multipart_uploads()
            .bucket(&bucket)
            .prefix(format!("{root}/"))
            .send()
            .await
            .unwrap();
        let mut ids: Vec<String> = out
            .uploads()
            .iter()
            .filter_map(|u| u.upload_id().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    let mut both = vec![old.clone(), young.clone()];
    both.sort();
    assert_eq!(open().await, both);

    use cairn::maintenance::EntryKind;
    use std::sync::Arc;
    let backend: cairn::backend::DynBackend = Arc::new(s3.clone());
    let staged_filter = Filter {
        kinds: vec![EntryKind::Staged],
        ..Filter::default()
    };
    let staged: Vec<_> = Maintenance::from_backend(backend.clone())
        .list(&staged_filter)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(staged.len(), 2, "{staged:?}");
    let first = staged.iter().find(|e| e.path.ends_with(&old)).unwrap();
    assert_eq!(
        first.path,
        format!("cache/v1/default/aa/aa01?uploadId={old}")
    );
    assert_eq!(first.size, 13, "the bytes of its parts");
    // Judged an hour and a second after the old upload started: only it is past the
    // hour of grace.
    let at = first.modified + chrono::Duration::seconds(3601);
    let m = Maintenance::from_backend(backend).at(at);
    let options = PruneOptions {
        dry_run: true,
        ..PruneOptions::default()
    };
    let would = m.prune(&options).await.unwrap();
    assert_eq!(would.entries(), 1, "{would:?}");
    assert_eq!(would.removed[0].path, first.path);
    assert_eq!(would.removed[0].reason, RemovalReason::Staged);
    assert_eq!(open().await, both, "a dry run aborted an upload");

    let done = m.prune(&PruneOptions::default()).await.unwrap();
    assert_eq!((done.entries(), done.bytes()), (1, 13));
    assert_eq!(done.cleaned_up, 0, "the listing saw every open upload");
    assert_eq!(open().await, vec![young.clone()]);
    // The young one goes when it is old enough too (and the store's clean-up agrees).
    let later =
        Maintenance::from_backend(Arc::new(s3.clone())).at(at + chrono::Duration::seconds(10));
    assert_eq!(
        later
            .prune(&PruneOptions::default())
            .await
            .unwrap()
            .entries(),
        1
    );
    assert!(open().await.is_empty());
}

/// Records of other format versions: an older one this cairn still reads (format 2,
/// its payload checked by BLAKE3) is kept and verifies; one it no longer reads
/// (format 0) is obsolete, and prune removes it; one a newer cairn wrote (format 9, or
/// under a newer layout) is left alone by prune and by `verify --delete-corrupt`,
/// which reports it; a damaged current record is deleted by the latter.
#[tokio::test(flavor = "multi_thread")]
async fn records_of_older_formats_are_pruned_and_newer_ones_left_alone() {
    let store = ResultStore::memory();
    let current = "cache/v1/default/aa/aa01";
    store
        .write_record(current, &1, RecordInfo::default(), PutMode::Create)
        .await
        .unwrap();
    let bytes = store.read_bytes(current).await.unwrap();
    let (mut header, payload) = cairn::record::decode(bytes.clone()).unwrap();
    header.payload_checksum =
        cairn::record::PayloadChecksum::Blake3(blake3::hash(&payload).to_hex().to_string());
    let v2 = cairn::record::encode_header(&header, payload).into_contiguous();
    assert_eq!(v2[8..10], 2u16.to_le_bytes());
    let relabelled = |version: u16| {
        let mut b = bytes.to_vec();
        b[8..10].copy_from_slice(&version.to_le_bytes());
        bytes::Bytes::from(b)
    };
    let mut damaged = bytes.to_vec();
    *damaged.last_mut().unwrap() ^= 1;
    let objects = [
        ("cache/v1/default/bb/bb02", v2),
        ("cache/v1/default/cc/cc00", relabelled(0)),
        ("cache/v1/default/dd/dd09", relabelled(9)),
        ("cache/v2/default/ee/ee01", bytes.clone()),
        ("cache/v1/default/ff/ffdd", bytes::Bytes::from(damaged)),
    ];
    for (path, b) in &objects {
        store
            .write_bytes(path, b.clone(), PutMode::Create)
            .await
            .unwrap();
    }

    let m = Maintenance::new(&store);
    let listed: Vec<_> = m.list(&Filter::default()).try_collect().await.unwrap();
    let problem = |path: &str| {
        let e = listed.iter().find(|e| e.path == path).unwrap();
        (e.obsolete, e.problem.clone())
    };
    assert_eq!(problem(current), (false, None));
    assert_eq!(problem("cache/v1/default/bb/bb02"), (false, None));
    assert_eq!(
        problem("cache/v1/default/cc/cc00"),
        (true, Some("record format version 0, no longer read".into()))
    );
    assert_eq!(
        problem("cache/v1/default/dd/dd09"),
        (
            false,
            Some("record format version 9, newer than this cairn reads (3): left alone".into())
        )
    );
    assert!(!problem("cache/v2/default/ee/ee01").0);

    let pruned = m.prune(&PruneOptions::default()).await.unwrap();
    let removed: Vec<_> = pruned
        .removed
        .iter()
        .map(|r| (r.path.as_str(), r.reason))
        .collect();
    assert_eq!(
        removed,
        [("cache/v1/default/cc/cc00", RemovalReason::Obsolete)]
    );

    let report = m.verify(&Filter::default(), true).await.unwrap();
    let problems: Vec<_> = report
        .problems
        .iter()
        .map(|p| (p.path.as_str(), p.deleted))
        .collect();
    assert_eq!(
        problems,
        [
            ("cache/v1/default/dd/dd09", false),
            ("cache/v1/default/ff/ffdd", true),
        ]
    );
    assert!(report.problems[0].reason.contains("newer than this cairn"));
    assert_eq!(
        report.problems[1].reason,
        "payload checksum (xxh3-128) mismatch"
    );
    for path in [
        current,
        "cache/v1/default/bb/bb02",
        "cache/v1/default/dd/dd09",
        "cache/v2/default/ee/ee01",
    ] {
        assert!(store.exists(path).await.unwrap(), "{path} was removed");
    }
    assert!(!store.exists("cache/v1/default/ff/ffdd").await.unwrap());
    let v2_read: cairn::Record<i32> = store.read_record("cache/v1/default/bb/bb02").await.unwrap();
    assert_eq!(v2_read.value, 1);
}
