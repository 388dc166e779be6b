//! A map's memory: an item holds its input until its run starts and its run's record
//! once it ends, not room for a whole run (a run's future is boxed while it runs).
//! Counted by this binary's allocator, so the figures are exact, not timed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn::Task;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_map_holds_little_more_than_its_inputs_and_runs_per_item() {
    const ITEMS: usize = 20_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let task = Task::infallible("add_one", |x: u64| async move { x + 1 });
    // A first map warms the runtime and the per-thread tables up.
    runtime.block_on(task.map(0..10));
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let runs = runtime.block_on(task.map(0..ITEMS as u64));
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert_eq!(runs.len(), ITEMS);
    assert!(runs
        .iter()
        .enumerate()
        .all(|(i, r)| r.value() == Some(&(i as u64 + 1))));
    let run_size = std::mem::size_of_val(&task.run(0));
    let per_item = peak / ITEMS;
    eprintln!("{per_item} bytes per item at the peak");
    // What an item needs: its place in the map (the output, the future's slot and
    // bookkeeping) and its run's record, a few hundred bytes; a whole run's future
    // held per item would add at least `run_size`.
    assert!(
        per_item < run_size / 2,
        "{per_item} bytes per item at the peak, a run's future is {run_size}"
    );
}
