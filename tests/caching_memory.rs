//! The caching suite on in-process stores: the memory backend and the object_store
//! adapter (over object_store's own in-memory store).

mod caching;

use std::sync::Arc;

use cairn::ResultStore;

mod memory {
    use super::*;
    caching_tests!(async { Some(ResultStore::memory()) });
}

mod object_store_adapter {
    use super::*;
    use cairn::backend::ObjectStoreBackend;
    // A URL of its own per store: the memory tier tells stores apart by it.
    caching_tests!(async {
        Some(ResultStore::from_backend(Arc::new(
            ObjectStoreBackend::new(
                Arc::new(object_store::memory::InMemory::new()),
                format!("memory://object_store/{}", caching::unique("store")),
            ),
        )))
    });
}

/// Two separate memory stores are two caches: a hit the memory tier saw in one is not
/// served for the other, whose store holds no record.
/// (The memory tier qualifies keys by the store's URL; each memory store has its own,
/// `memory://<n>`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_memory_stores_do_not_share_the_memory_tier() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let task = cairn::Task::infallible("two_memory_stores", move |x: i64| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            x + 1
        }
    })
    .inputs(["x"])
    .cache_policy(cairn::cache::INPUTS);
    let (one, two) = (ResultStore::memory(), ResultStore::memory());
    let first = task.clone().result_storage(one).run(1).await;
    assert_eq!(first.state(), &cairn::State::Completed);
    let second = task.result_storage(two.clone()).run(1).await;
    assert_eq!(second.state(), &cairn::State::Completed);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let location = caching::record_location("default", second.info().cache_key.as_ref().unwrap());
    assert!(two.exists(&location).await.unwrap());
}
