//! Per-thread copies of shared strings. A run's record keeps its task's name, its
//! namespace and its store's URL; taking them from one shared `Arc` would make every
//! thread count references on the same cache line, so each thread takes them from a
//! copy of its own.

use std::cell::RefCell;
use std::sync::Arc;

/// How many strings a thread keeps copies of: each string has one slot, picked by its
/// address, and a string whose slot is taken replaces the one there.
const CAPACITY: usize = 32;

type Slot = Option<(Arc<str>, Arc<str>)>;

thread_local! {
    /// Pairs of (the shared string, this thread's copy). Holding the shared one keeps
    /// its address from being reused by another string while it is listed.
    static COPIES: RefCell<[Slot; CAPACITY]> = const { RefCell::new([const { None }; CAPACITY]) };
}

/// The slot of the string at this address: its bits mixed, the top ones kept.
fn slot_of(shared: &Arc<str>) -> usize {
    let address = Arc::as_ptr(shared).cast::<u8>() as usize as u64;
    (address.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CAPACITY.trailing_zeros())) as usize
}

/// This thread's copy of `shared`: equal to it, with a reference count of its own.
pub(crate) fn thread_copy(shared: &Arc<str>) -> Arc<str> {
    COPIES.with(|copies| {
        let mut copies = copies.borrow_mut();
        let slot = &mut copies[slot_of(shared)];
        if let Some((s, copy)) = slot {
            if Arc::ptr_eq(s, shared) {
                return Arc::clone(copy);
            }
        }
        let copy: Arc<str> = Arc::from(&**shared);
        *slot = Some((Arc::clone(shared), Arc::clone(&copy)));
        copy
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_equal_and_counted_apart() {
        let shared: Arc<str> = Arc::from("add_one");
        let a = thread_copy(&shared);
        let b = thread_copy(&shared);
        assert_eq!(&*a, "add_one");
        assert!(Arc::ptr_eq(&a, &b), "one copy per thread");
        assert!(!Arc::ptr_eq(&a, &shared));
        let other = std::thread::spawn({
            let shared = Arc::clone(&shared);
            move || thread_copy(&shared)
        })
        .join()
        .unwrap();
        assert_eq!(&*other, "add_one");
        assert!(!Arc::ptr_eq(&a, &other), "another thread has its own");
    }

    #[test]
    fn equal_strings_at_other_addresses_are_not_confused() {
        // Many strings come and go: each gets a copy of its own text.
        for i in 0..(3 * CAPACITY) {
            let shared: Arc<str> = Arc::from(format!("task-{i}").as_str());
            assert_eq!(&*thread_copy(&shared), format!("task-{i}"));
        }
        let kept: Arc<str> = Arc::from("kept");
        let first = thread_copy(&kept);
        for i in 0..(2 * CAPACITY) {
            thread_copy(&Arc::from(format!("x{i}").as_str()));
        }
        // Pushed out, copied again: still the right text.
        assert_eq!(&*thread_copy(&kept), &*first);
    }
}
