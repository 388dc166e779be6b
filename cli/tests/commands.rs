//! Each command of `cairn`, run as a process, on the local store, LocalStack S3 and
//! fake-gcs-server; output pinned by snapshots with ages judged at a fixed time.

mod common;

use common::{cairn, sorted_body, sorted_removals, stable_json, stderr, stdout, TestStore, NOW};

const LS_CACHE: &str = "\
KIND       TASK             KEY                SIZE CREATED          EXPIRES          PATH
cache      a                a1000000000…      255 B 2 days ago       never            cache/v1/default/a1/a1000000000000000001
cache      a                a2000000000…      256 B 2 days ago       never            cache/v1/default/a2/a2000000000000000002
cache      a                e1000000000…      276 B 2 days ago       expired          cache/v1/default/e1/e1000000000000000001
cache      b                b1000000000…      257 B 2 days ago       never            cache/v1/other/b1/b1000000000000000001
";

const LS_CACHE_JSON: &str = r#"{"created":"2026-01-01T00:00:00Z","expires":"2026-01-02T00:00:00Z","flow":null,"key":"e1000000000000000001","kind":"cache","modified":"<modified>","namespace":"default","obsolete":false,"path":"cache/v1/default/e1/e1000000000000000001","run_id":null,"size":276,"task":"a"}
{"created":"2026-01-01T00:00:00Z","expires":null,"flow":null,"key":"a1000000000000000001","kind":"cache","modified":"<modified>","namespace":"default","obsolete":false,"path":"cache/v1/default/a1/a1000000000000000001","run_id":null,"size":255,"task":"a"}
{"created":"2026-01-01T00:00:00Z","expires":null,"flow":null,"key":"a2000000000000000002","kind":"cache","modified":"<modified>","namespace":"default","obsolete":false,"path":"cache/v1/default/a2/a2000000000000000002","run_id":null,"size":256,"task":"a"}
{"created":"2026-01-01T00:00:00Z","expires":null,"flow":null,"key":"b1000000000000000001","kind":"cache","modified":"<modified>","namespace":"other","obsolete":false,"path":"cache/v1/other/b1/b1000000000000000001","run_id":null,"size":257,"task":"b"}
"#;

const DU: &str = "\
KIND                        ENTRIES         SIZE
cache                             4      1.0 KiB
checkpoint                        1        264 B
inputs                            1        264 B
lease                             1        109 B
run                               2        465 B

TASK                        ENTRIES         SIZE
-                                 2        465 B
a                                 4        896 B
b                                 1        257 B
load                              2        528 B

NAMESPACE                   ENTRIES         SIZE
default                           4        896 B
other                             1        257 B

total                             9      2.1 KiB
";

const SHOW: &str = "\
path:        cache/v1/default/a2/a2000000000000000002
kind:        cache
size:        256 B (256 bytes)
task:        a
key:         inputs=x=1
serializer:  json
length:      2 bytes
checksum:    HASH
created:     2026-01-01T00:00:00+00:00 (2 days ago)
expires:     never
output type: i64
cairn:       0.1.0
value (json):
22
";

const RUNS: &str = "\
RUN ID                               FLOW             STATE        STARTED           DURATION  TASKS
run-1                                etl              Failed('1/2… 2 days ago      <duration>  1 Completed, 1 Failed
";

const RUN_SHOW: &str = "\
flow run run-1 of flow 'etl'
state:    Failed('1/2 task runs failed')
started:  2026-01-01T00:00:00+00:00 (2 days ago)
duration: <duration>
tasks:    1 Completed, 1 Failed

TASK RUN                 INDEX  STATE            LOCATION
load-0ab                     0  Completed        runs/v1/etl/run-1/load/0
load-1cd                     1  Failed('boom')   -
";

async fn ls_text_and_json(s: TestStore) {
    s.fixture().await;
    let o = s.cairn(&["--now", NOW, "ls", "--kind", "cache"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sorted_body(&stdout(&o)), LS_CACHE);
    let o = s.cairn(&["--now", NOW, "ls", "--kind", "cache", "--json"]);
    assert_eq!(stable_json(&stdout(&o)), LS_CACHE_JSON);
    // Every kind is listed by default; filters narrow it.
    let all = stdout(&s.cairn(&["ls", "--json"]));
    assert_eq!(all.lines().count(), 9, "{all}");
    let count = |args: &[&str]| {
        let mut a = vec!["--now", NOW, "ls", "--json"];
        a.extend_from_slice(args);
        stdout(&s.cairn(&a)).lines().count()
    };
    assert_eq!(count(&["--task", "b"]), 1);
    assert_eq!(count(&["--namespace", "default"]), 4); // 3 records and the lease
    assert_eq!(count(&["--expired"]), 1);
    assert_eq!(count(&["--kind", "inputs", "--kind", "checkpoint"]), 2);
    assert_eq!(count(&["--prefix", "runs/"]), 4);
    assert_eq!(count(&["--older-than", "1d", "--kind", "cache"]), 4);
    assert_eq!(count(&["--older-than", "3d"]), 0);
    assert_eq!(count(&["--larger-than", "270B", "--kind", "cache"]), 1);
}

async fn du_by_kind_task_and_namespace(s: TestStore) {
    s.fixture().await;
    let o = s.cairn(&["du"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), DU);
    let o = s.cairn(&["du", "--json"]);
    let usage: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(usage["total"]["entries"], 9);
    assert_eq!(usage["by_task"]["b"]["bytes"], 257);
}

async fn show_a_record(s: TestStore) {
    s.fixture().await;
    let o = s.cairn(&["--now", NOW, "show", "a2000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let hash = cairn::record::PayloadChecksum::of(b"22").to_string();
    assert_eq!(stdout(&o), SHOW.replace("HASH", &hash));
    // By path, as JSON.
    let o = s.cairn(&["show", "runs/v1/etl/run-1/load/0", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(shown["header"]["task"], "load");
    assert_eq!(shown["preview"]["text"], "[\n  1,\n  2,\n  3\n]");
    // Nothing there: one line naming the store, status 2.
    let o = s.cairn(&["show", "cache/v1/nothing/here"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not found"), "{err}");
}

async fn verify_finds_exactly_the_damaged_records(s: TestStore) {
    s.fixture().await;
    let o = s.cairn(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "checked 6 records, 1.5 KiB: all intact\n");
    // A flipped byte in one record, another truncated.
    let flipped = "cache/v1/default/a1/a1000000000000000001";
    let truncated = "runs/v1/etl/run-1/load/0";
    let mut bytes = s.get(flipped).await.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    s.put(flipped, bytes::Bytes::from(bytes)).await;
    let bytes = s.get(truncated).await;
    s.put(truncated, bytes.slice(..bytes.len() - 3)).await;
    let o = s.cairn(&["verify", "--jobs", "4"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let corrupt: Vec<&str> = out.lines().filter(|l| l.starts_with("corrupt ")).collect();
    assert_eq!(corrupt.len(), 2, "{out}");
    assert!(
        corrupt[0].starts_with(&format!("corrupt {flipped}: payload checksum")),
        "{out}"
    );
    assert!(
        corrupt[1].starts_with(&format!("corrupt {truncated}: payload is")),
        "{out}"
    );
    assert!(
        out.ends_with("checked 6 records, 1.5 KiB: 2 corrupt\n"),
        "{out}"
    );
    // --delete-corrupt removes those two and nothing else.
    let before = s.listing().await.len();
    let o = s.cairn(&["verify", "--delete-corrupt", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o).lines().count(), 3);
    assert_eq!(s.listing().await.len(), before - 2);
    assert_eq!(s.cairn(&["verify"]).status.code(), Some(0));
}

async fn clear_dry_run_and_by_task(s: TestStore) {
    s.fixture().await;
    let before = s.listing().await;
    let o = s.cairn(&["clear", "--task", "a", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).ends_with("would remove 3 entries, 787 B\nkept 1 under a live lease\n"),
        "{}",
        stdout(&o)
    );
    assert_eq!(s.listing().await, before, "a dry run removed something");
    // clear --task a leaves task b's entries (and the live lease of task a).
    let o = s.cairn(&["clear", "--task", "a"]);
    assert!(
        stdout(&o).ends_with("removed 3 entries, 787 B\nkept 1 under a live lease\n"),
        "{}",
        stdout(&o)
    );
    let after: Vec<String> = s.listing().await.into_iter().map(|(p, _)| p).collect();
    assert!(after.contains(&"cache/v1/other/b1/b1000000000000000001".to_owned()));
    assert!(
        !after.iter().any(|p| p.starts_with("cache/v1/default/")),
        "{after:?}"
    );
    assert!(after.contains(&"leases/v1/default/c1/c1000000000000000001".to_owned()));
}

async fn clear_all_needs_yes_without_a_terminal(s: TestStore) {
    s.fixture().await;
    let before = s.listing().await;
    let o = s.cairn(&["clear"]);
    assert_eq!(o.status.code(), Some(2), "a clear without a filter");
    let o = s.cairn(&["clear", "--all"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("without --yes"), "{}", stderr(&o));
    assert_eq!(s.listing().await, before);
    let o = s.cairn(&["clear", "--all", "--dry-run", "--json"]);
    let last = stdout(&o).lines().last().unwrap().to_owned();
    assert_eq!(
        last,
        r#"{"dry_run":true,"entries":8,"bytes":2037,"kept_live":1}"#
    );
    assert_eq!(s.listing().await, before);
    let o = s.cairn(&["clear", "--all", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let left: Vec<String> = s.listing().await.into_iter().map(|(p, _)| p).collect();
    assert_eq!(left, ["leases/v1/default/c1/c1000000000000000001"]);
}

async fn prune_removes_what_is_of_no_use(s: TestStore) {
    s.fixture().await;
    let before = s.listing().await;
    let o = s.cairn(&["--now", NOW, "prune", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "would remove cache/v1/default/e1/e1000000000000000001 (cache, 276 B, expired)\n\
         would remove 1 entry, 276 B\n"
    );
    assert_eq!(s.listing().await, before, "a dry run removed something");
    let o = s.cairn(&["--now", NOW, "prune"]);
    assert!(
        stdout(&o).ends_with("removed 1 entry, 276 B\n"),
        "{}",
        stdout(&o)
    );
    let mut expected = before.clone();
    expected.retain(|(p, _)| !p.starts_with("cache/v1/default/e1/"));
    assert_eq!(s.listing().await, expected);
}

async fn prune_max_size_keeps_the_recently_used(s: TestStore) {
    for i in 0..4 {
        s.record(
            &format!("cache/v1/default/0{i}/0{i}ff"),
            "a",
            "0123456789",
            None,
        )
        .await;
    }
    // Records 1 and 3 were used since they were written.
    for i in [1, 3] {
        cairn::maintenance::note_use(
            &s.store,
            &format!("cache/v1/default/0{i}/0{i}ff"),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    }
    let sizes = s.listing().await;
    let record = sizes[0].1;
    let markers: u64 = sizes
        .iter()
        .filter(|(p, _)| p.starts_with("used/"))
        .map(|(_, n)| n)
        .sum();
    let max = 2 * record + markers;
    let o = s.cairn(&["prune", "--max-size", &max.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("evicted"), "{}", stdout(&o));
    let left: Vec<String> = s.listing().await.into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        left,
        [
            "cache/v1/default/01/01ff",
            "cache/v1/default/03/03ff",
            "used/v1/cache/v1/default/01/01ff",
            "used/v1/cache/v1/default/03/03ff"
        ]
    );
}

async fn runs_and_run_show(s: TestStore) {
    s.fixture().await;
    // The duration runs up to when the store wrote the summary: now, not a fixed time.
    let stable = |out: String| {
        out.lines()
            .map(|l| match (l.find("2 days ago"), l.find("  1 Completed")) {
                (Some(a), Some(b)) => {
                    format!("{}{:>16}{}", &l[..a], "2 days ago      <duration>", &l[b..])
                }
                _ if l.starts_with("duration: ") => "duration: <duration>".to_owned(),
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    let o = s.cairn(&["--now", NOW, "runs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stable(stdout(&o)), RUNS);
    let mut args = vec!["--now", NOW, "runs", "show", "run-1"];
    args.push(&s.url);
    let o = cairn(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stable(stdout(&o)), RUN_SHOW);
    let o = s.cairn(&["runs", "--json"]);
    let run: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(run["tasks"]["Failed"], 1);
    let o = cairn(&["runs", "show", "no-such-run", &s.url]);
    assert_eq!(o.status.code(), Some(2));
}

/// `--fast` lists from the store's listing alone: the same entries and bytes, without
/// what only a record's header says (a cache record's task, its expiry).
async fn fast_listing_from_the_listing_alone(s: TestStore) {
    s.fixture().await;
    let o = s.cairn(&["ls", "--fast", "--kind", "cache", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    for e in &lines {
        assert_eq!(
            (&e["task"], &e["expires"]),
            (&serde_json::Value::Null, &serde_json::Value::Null)
        );
        assert_eq!(e["created"], e["modified"], "the store's time stands in");
    }
    let usage = |args: &[&str]| -> serde_json::Value {
        let o = s.cairn(args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str(stdout(&o).trim()).unwrap()
    };
    let (slow, fast) = (usage(&["du", "--json"]), usage(&["du", "--fast", "--json"]));
    assert_eq!(fast["total"], slow["total"]);
    assert_eq!(fast["by_kind"], slow["by_kind"]);
    assert_eq!(fast["by_namespace"], slow["by_namespace"]);
    assert_eq!(
        fast["by_task"]["-"]["entries"], 7,
        "only paths of checkpoints and inputs name a task"
    );
    assert_eq!(
        stdout(&s.cairn(&["ls", "--fast", "--expired", "--json"])),
        ""
    );
}

/// A lease counts as live until it goes unrenewed for --lease-stale-after.
async fn lease_stale_after_decides_what_a_lease_keeps(s: TestStore) {
    s.fixture().await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(3)).to_rfc3339();
    let clear = |stale: &str| {
        let o = s.cairn(&[
            "--now",
            &later,
            "--lease-stale-after",
            stale,
            "clear",
            "--task",
            "a",
            "--dry-run",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let live = clear("4h");
    assert!(
        live.ends_with("would remove 3 entries, 787 B\nkept 1 under a live lease\n"),
        "{live}"
    );
    let stale = clear("2h");
    assert!(
        stale.ends_with("would remove 4 entries, 896 B\n"),
        "{stale}"
    );
}

macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod local {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name(TestStore::local().await.unwrap()).await;
            })*
        }
        mod s3 {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                if let Some(s) = TestStore::s3(stringify!($name)).await {
                    super::$name(s).await;
                }
            })*
        }
        mod gcs {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                if let Some(s) = TestStore::gcs(stringify!($name)).await {
                    super::$name(s).await;
                }
            })*
        }
    };
}

on_every_store!(
    ls_text_and_json,
    du_by_kind_task_and_namespace,
    show_a_record,
    verify_finds_exactly_the_damaged_records,
    clear_dry_run_and_by_task,
    clear_all_needs_yes_without_a_terminal,
    prune_removes_what_is_of_no_use,
    prune_max_size_keeps_the_recently_used,
    runs_and_run_show,
    fast_listing_from_the_listing_alone,
    lease_stale_after_decides_what_a_lease_keeps,
);

/// `clear --tier-only URL?cache_dir=DIR` and `local-cache clear --tier DIR` empty the
/// local tier and leave the remote store as it was; a dry run removes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn clearing_the_local_tier_alone() {
    let (remote, tier_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = format!(
        "{}?cache_dir={}",
        remote.path().display(),
        tier_dir.path().display()
    );
    let store = cairn::ResultStore::from_url(&url).await.unwrap();
    for i in 0..3 {
        store
            .write_record(
                &format!("cache/v1/default/0{i}/0{i}ff"),
                &i,
                cairn::record::RecordInfo::default(),
                cairn::PutMode::Create,
            )
            .await
            .unwrap();
    }
    let tier = cairn::backend::DiskTier::new(tier_dir.path()).unwrap();
    let (copies, bytes) = tier.contents().unwrap();
    assert_eq!(copies, 3);
    // The copies' bytes, in human units.
    let summary = |verb: &str| {
        format!(
            "{verb} 3 local copies, {:.1} KiB from the tier {}\n",
            bytes as f64 / 1024.0,
            tier_dir.path().display()
        )
    };
    let o = cairn(&["clear", "--tier-only", "--dry-run", &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), summary("would remove"));
    assert_eq!(
        tier.contents().unwrap(),
        (3, bytes),
        "a dry run removed copies"
    );
    let o = cairn(&["clear", "--tier-only", &url]);
    assert_eq!(stdout(&o), summary("removed"));
    assert_eq!(tier.contents().unwrap(), (0, 0));
    let listed = stdout(&cairn(&["ls", "--json", &url]));
    assert_eq!(
        listed.lines().count(),
        3,
        "the remote store lost entries: {listed}"
    );

    // Read back: the copies return; local-cache clear --tier empties them again.
    for i in 0..3 {
        let key = cairn::backend::Key::parse(format!("cache/v1/default/0{i}/0{i}ff")).unwrap();
        cairn::backend::BackendExt::get(store.backend(), &key)
            .await
            .unwrap();
    }
    assert_eq!(tier.contents().unwrap().0, 3);
    let o = cairn(&[
        "local-cache",
        "clear",
        "--tier",
        &tier_dir.path().display().to_string(),
    ]);
    assert_eq!(stdout(&o), summary("removed"));
    assert_eq!(tier.contents().unwrap(), (0, 0));

    // A URL without a tier: a usage error naming it.
    let plain = remote.path().display().to_string();
    let o = cairn(&["clear", "--tier-only", &plain]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("?cache_dir="), "{}", stderr(&o));
}

/// A writer killed before it published leaves a staged file beside its destination;
/// prune removes it once older than the grace period, with the expired record, and
/// nothing else (not a younger staged file, which may be a write in progress).
#[tokio::test(flavor = "multi_thread")]
async fn prune_removes_a_killed_writers_staged_file_and_an_expired_record() {
    let s = TestStore::local().await.unwrap();
    s.fixture().await;
    let dir = s.dir.as_ref().unwrap().path().join("cache/v1/default/a1");
    let old = dir.join(".cairn-staged.a1000000000000000009.4242.0");
    let young = dir.join(".cairn-staged.a1000000000000000008.4243.0");
    std::fs::write(&old, b"half a rec").unwrap();
    std::fs::write(&young, b"being written").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let o = s.cairn(&["ls", "--kind", "staged", "--json"]);
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
    let before = s.listing().await;
    let o = s.cairn(&["prune", "--dry-run"]);
    assert!(old.exists() && young.exists());
    assert_eq!(
        sorted_removals(&stdout(&o)),
        "would remove cache/v1/default/a1/.cairn-staged.a1000000000000000009.4242.0 (staged, 10 B, staged)\n\
         would remove cache/v1/default/e1/e1000000000000000001 (cache, 276 B, expired)\n\
         would remove 2 entries, 286 B\n"
    );
    let o = s.cairn(&["prune"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !old.exists(),
        "the killed writer's staged file is still there"
    );
    assert!(young.exists(), "a young staged file was removed");
    let mut expected = before;
    expected.retain(|(p, _)| !p.starts_with("cache/v1/default/e1/"));
    assert_eq!(s.listing().await, expected);
}

#[test]
fn completions_for_every_shell() {
    for (shell, marker) in [
        ("bash", "_cairn()"),
        ("zsh", "#compdef cairn"),
        ("fish", "complete -c cairn"),
    ] {
        let o = cairn(&["completions", shell]);
        assert!(o.status.success());
        let script = stdout(&o);
        assert!(script.contains(marker), "{shell}: {script:.200}");
        assert!(script.contains("prune"), "{shell}");
    }
}

#[test]
fn usage_errors_exit_2_in_one_line() {
    let o = cairn(&["ls", "/no/such/cairn/store"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "cairn: /no/such/cairn/store: no such directory\n"
    );
    let o = cairn(&["ls", "ftp://host/x"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1);
    assert!(
        stderr(&o).contains("unknown store URL scheme"),
        "{}",
        stderr(&o)
    );
    let o = cairn(&["ls", "--older-than", "7 days"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("30m, 12h, 7d"), "{}", stderr(&o));
}

/// With no store given, the store of `[results] store` in `$CAIRN_HOME/config.toml`,
/// else `$CAIRN_HOME/storage`; `local-cache clear` empties its cache records.
#[tokio::test(flavor = "multi_thread")]
async fn no_url_means_the_configured_store() {
    let home = tempfile::tempdir().unwrap();
    let storage = home.path().join("storage");
    std::fs::create_dir(&storage).unwrap();
    let s = TestStore {
        url: storage.display().to_string(),
        store: cairn::ResultStore::from_url(&storage.display().to_string())
            .await
            .unwrap(),
        dir: None,
    };
    s.fixture().await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .env("CAIRN_HOME", home.path())
            .env_remove("CAIRN__RESULTS__STORE")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    assert_eq!(
        stdout(&run(&["ls", "--json", "--kind", "cache"]))
            .lines()
            .count(),
        4
    );
    let o = run(&["local-cache", "clear"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "clearing everything needs --yes without a terminal"
    );
    let o = run(&["local-cache", "clear", "--yes"]);
    assert!(
        stdout(&o).ends_with("removed 4 entries, 1.0 KiB\n"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        stdout(&run(&["ls", "--json", "--kind", "cache"]))
            .lines()
            .count(),
        0
    );
    assert_eq!(
        stdout(&run(&["ls", "--json"])).lines().count(),
        5,
        "only cache records go"
    );
    // `[results] store` names another store.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!("[results]\nstore = \"file://{}\"\n", other.path().display()),
    )
    .unwrap();
    assert_eq!(stdout(&run(&["ls", "--json"])).lines().count(), 0);
}

/// A missing bucket is a configuration error: status 2, one line naming the store.
#[test]
fn a_missing_bucket_is_named_in_one_line() {
    let mut urls = Vec::new();
    if common::s3_bucket().is_some() {
        urls.push("s3://cairn-no-such-bucket/x");
    }
    if common::gcs_bucket().is_some() {
        urls.push("gs://cairnnosuchbucket/x");
    }
    for url in urls {
        for command in ["ls", "du", "verify", "prune", "runs"] {
            let o = cairn(&[command, url]);
            assert_eq!(o.status.code(), Some(2), "{command} {url}");
            assert_eq!(stdout(&o), "", "{command} {url}");
            let err = stderr(&o);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.starts_with(&format!("cairn: {url}: bucket ")), "{err}");
            assert!(err.contains("does not exist"), "{err}");
        }
    }
}
