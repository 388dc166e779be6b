//! The conformance suite on Azure Blob Storage, against Azurite (or whatever
//! `AZURITE_BLOB_STORAGE_URL` names, with `AZURE_STORAGE_USE_EMULATOR=true`), plus
//! interop with `object_store`'s own Azure client.
#![cfg(feature = "azure")]

mod conformance;
mod emulators;

use std::sync::Arc;

use cairn::backend::{AzureBuilder, Backend, BackendExt, DynBackend, ErrorKind, Key};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path;
use object_store::ObjectStore;

/// A request timeout above object_store's 30 s: Azurite is one Node.js process, and
/// the suite runs thousands of puts beside a 20 MiB one on a busy machine.
async fn backend() -> Option<DynBackend> {
    let container = emulators::azure_container()?;
    let backend = AzureBuilder::new(container)
        .prefix(emulators::run_prefix())
        .option("timeout", "180s")
        .build()
        .unwrap();
    Some(Arc::new(backend))
}

// Every behaviour of the suite; listing_paginates, which writes list_page_size + 101
// objects (5,101 on Azure, minutes on Azurite), runs below under CAIRN_TEST_FULL=1.
conformance_tests!(@each backend();
    put_get_head_delete,
    overwrite_replaces_and_empty_objects_exist,
    chunked_payloads_are_concatenated,
    every_serializer_round_trips,
    targets_are_plain_bytes,
    foreign_targets_are_read_and_checked,
    create_conflicts,
    concurrent_creates_have_one_winner,
    concurrent_large_creates_have_one_winner,
    if_match_current_and_stale,
    lease_preconditions_hold,
    ranged_reads,
    streamed_reads_are_complete,
    listing_with_prefixes,
    deletes_remove_from_listings,
    large_values,
    corruption_is_detected,
    user_metadata,
    escaping_locations_are_refused,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_paginates() {
    if std::env::var("CAIRN_TEST_FULL").is_ok_and(|v| v == "1") {
        if let Some(backend) = backend().await {
            conformance::listing_paginates(&backend).await;
        }
    } else {
        eprintln!("skipped: 5,101 puts on Azurite; set CAIRN_TEST_FULL=1 to run it");
    }
}

/// `object_store`'s Azure client on the test container, with no prefix.
fn direct(container: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        MicrosoftAzureBuilder::from_env()
            .with_container_name(container)
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn missing_bucket_is_a_clear_error() {
    if emulators::azure_container().is_none() {
        return;
    }
    let backend: DynBackend = Arc::new(
        AzureBuilder::new("cairn-no-such-container")
            .build()
            .unwrap(),
    );
    conformance::missing_bucket_is_a_clear_error(&backend, "cairn-no-such-container").await;
}

#[tokio::test]
async fn urls_open_the_same_container_and_prefix() {
    let Some(container) = emulators::azure_container() else {
        return;
    };
    let prefix = format!(
        "{}/{}",
        emulators::run_prefix(),
        conformance::unique_prefix("url")
    );
    let k = Key::parse("a/b.txt").unwrap();
    let first = cairn::backend::open(&format!("az://{container}/{prefix}"))
        .await
        .unwrap();
    assert_eq!(first.describe(), format!("az://{container}/{prefix}"));
    first.put(&k, "hello".into()).await.unwrap();
    for scheme in ["azure", "abfs"] {
        let other = cairn::backend::open(&format!("{scheme}://{container}/{prefix}"))
            .await
            .unwrap();
        assert_eq!(&other.get(&k).await.unwrap()[..], b"hello", "{scheme}");
    }
    let err = cairn::backend::open("az://").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("az://"), "{err}");
}

/// What cairn writes, `object_store`'s Azure client reads byte for byte at the
/// prefixed path, and what that client writes, cairn reads (and `Create` refuses to
/// replace).
#[tokio::test]
async fn interop_with_object_store_azure_client() {
    let Some(container) = emulators::azure_container() else {
        return;
    };
    let prefix = format!(
        "{}/{}",
        emulators::run_prefix(),
        conformance::unique_prefix("interop")
    );
    let cairn_side = AzureBuilder::new(&container)
        .prefix(&prefix)
        .build()
        .unwrap();
    let direct = direct(&container);

    let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let k = Key::parse("from-cairn/data.bin").unwrap();
    cairn_side.put(&k, body.clone().into()).await.unwrap();
    let read = direct
        .get(&Path::from(format!("{prefix}/from-cairn/data.bin")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&read[..], &body[..]);

    direct
        .put(
            &Path::from(format!("{prefix}/from-client/note.json")),
            b"{\"x\":1}".to_vec().into(),
        )
        .await
        .unwrap();
    let k2 = Key::parse("from-client/note.json").unwrap();
    assert_eq!(&cairn_side.get(&k2).await.unwrap()[..], b"{\"x\":1}");
    let meta = cairn_side.head(&k2).await.unwrap();
    assert_eq!(meta.size, 7);
    let err = cairn_side
        .put_mode(&k2, "other".into(), cairn::PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(err.to_string().contains("from-client/note.json"), "{err}");
    let listed = cairn_side.list_all("from-").await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
}

#[tokio::test]
async fn emulator_gaps_are_declared() {
    if emulators::azure_container().is_none() {
        return;
    }
    let caps = backend().await.unwrap().capabilities();
    assert!(caps.create && caps.if_match && caps.conditional_large_writes);
    assert!(!caps.user_metadata);
    assert!(
        caps.gaps.iter().any(|g| g.contains("Azurite")),
        "{:?}",
        caps.gaps
    );
}
