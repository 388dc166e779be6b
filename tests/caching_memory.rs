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
    let location = caching::record_location("default", second.info().cache_key().as_ref().unwrap());
    assert!(two.exists(&location).await.unwrap());
}

/// A task declares its output's hash by returning `Hashed<T>`: the downstream task's
/// key uses that digest, not the value, and it is the same whether the upstream value
/// was computed or read back from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_output_hash_keys_the_downstream_task() {
    use cairn::hashing::{hash_value, Hashed, KeyHasher};
    use cairn::{cache::INPUTS, Flow, State, Task};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let store = ResultStore::memory();
    let loads = Arc::new(AtomicUsize::new(0));
    let counted = loads.clone();
    let load = Task::new("load_rows", move |n: u32| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Hashed::by_value(vec![n; 1 << 20]) }
    })
    .inputs(["n"])
    .cache_policy(INPUTS)
    .result_storage(store.clone())
    .memory_tier(false);
    let sums = Arc::new(AtomicUsize::new(0));
    let counted = sums.clone();
    let sum = Task::infallible("sum_rows", move |rows: Hashed<Vec<u32>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { rows.iter().map(|r| u64::from(*r)).sum::<u64>() }
    })
    .inputs(["rows"])
    .cache_policy(INPUTS)
    .result_storage(store.clone())
    .memory_tier(false);

    let run_once = || {
        let (load, sum) = (load.clone(), sum.clone());
        async move {
            Flow::new("rows")
                .run((), |_| async move {
                    let rows = load.call(3).await?;
                    let total = sum.call(rows).await?;
                    Ok(total)
                })
                .await
        }
    };
    let first = run_once().await;
    assert_eq!(first.value(), Some(&(3u64 << 20)));
    let second = run_once().await;
    assert_eq!(second.value(), Some(&(3u64 << 20)));
    let states: Vec<_> = second
        .task_runs()
        .iter()
        .map(|r| r.state().clone())
        .collect();
    assert_eq!(states, [State::Cached, State::Cached]);
    assert_eq!(
        (loads.load(Ordering::SeqCst), sums.load(Ordering::SeqCst)),
        (1, 1)
    );

    // The downstream key is built from the declared digest of the rows.
    let digest = hash_value(&vec![3u32; 1 << 20]).unwrap();
    let mut expected = KeyHasher::new();
    expected.component_value("task", "sum_rows").unwrap();
    expected.add_input("rows", &digest).unwrap(); // a digest hashes as what it stands for
    assert_eq!(
        second.task_runs()[1].cache_key(),
        Some(expected.finish().to_hex().as_str())
    );
}
