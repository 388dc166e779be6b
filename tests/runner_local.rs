//! The runner's store-facing behaviours on the local disk.

mod runner_suite;
mod scratch;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn::ResultStore;

/// A fresh directory per test, under `target/tmp`.
async fn store() -> Option<ResultStore> {
    Some(ResultStore::local(scratch::dir("runner")).unwrap())
}

runner_tests!(store());

/// Counts the allocations of one watched size, to tell whether a value was copied.
struct CountingAllocator;

static WATCHED_SIZE: AtomicUsize = AtomicUsize::new(usize::MAX);
static WATCHED_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() == WATCHED_SIZE.load(Ordering::Relaxed) {
            WATCHED_ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout (above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The local store writes a `Vec<u8>` output from the value's own buffer and gives the
/// buffer back: the caller gets the very vector the body returned, and no copy of it
/// is made, for a target and for a cache record (hashed while written above 8 MiB,
/// before below). The lengths are odd, so that no other test in this binary allocates
/// a buffer of the same size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vec_output_is_written_without_a_copy() {
    use cairn::{State, Task};

    let store = store().await.unwrap();
    for len in [3001, (9usize << 20) + 4093] {
        let made_at = Arc::new(AtomicUsize::new(0));
        let task = |name: &str| {
            let made_at = made_at.clone();
            Task::new(name, move |seed: u8| {
                let value: Vec<u8> = (0..len).map(|i| (i as u8) ^ seed).collect();
                made_at.store(value.as_ptr() as usize, Ordering::SeqCst);
                async move { Ok::<_, std::io::Error>(value) }
            })
            .inputs(["seed"])
        };
        let cached = task(&format!("cached_{len}"))
            .cache_policy(cairn::cache::INPUTS)
            .result_storage(store.clone())
            .memory_tier(false);
        let targeted = task("targeted")
            .result(store.clone())
            .target(&format!("raw/{len}-{{seed}}.dat"));
        for task in [&targeted, &cached] {
            WATCHED_SIZE.store(len, Ordering::SeqCst);
            let before = WATCHED_ALLOCATIONS.load(Ordering::SeqCst);
            let run = task.run(7).await;
            let allocated = WATCHED_ALLOCATIONS.load(Ordering::SeqCst) - before;
            WATCHED_SIZE.store(usize::MAX, Ordering::SeqCst);
            assert_eq!(run.state(), &State::Completed);
            let value = run.value().unwrap();
            let made = made_at.load(Ordering::SeqCst);
            assert_eq!(
                value.as_ptr() as usize,
                made,
                "{len} bytes: not the body's value"
            );
            assert!(value.iter().enumerate().all(|(i, &b)| b == (i as u8) ^ 7));
            assert_eq!(allocated, 1, "{len} bytes: the body's value, and no copy");
        }
        assert_eq!(cached.run(7).await.value().map(Vec::len), Some(len));
    }
}
