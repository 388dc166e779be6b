//! Per-thread copies of shared strings. A run's record keeps its task's name, its
//! namespace and its store's URL; taking them from one shared `Arc` would make every
//! thread count references on the same cache line, so each thread takes them from a
//! copy of its own.

use std::cell::RefCell;
use std::sync::Arc;

/// How many strings a thread keeps copies of; the oldest goes first.
const CAPACITY: usize = 32;

thread_local! {
    /// Pairs of (the shared string, this thread's copy). Holding the shared one keeps
    /// its address from being reused by another string while it is listed.
    static COPIES: RefCell<Vec<(Arc<str>, Arc<str>)>> = const { RefCell::new(Vec::new()) };
}

/// This thread's copy of `shared`: equal to it, with a reference count of its own.
pub(crate) fn thread_copy(shared: &Arc<str>) -> Arc<str> {
    COPIES.with(|copies| {
        let mut copies = copies.borrow_mut();
        if let Some((_, copy)) = copies.iter().find(|(s, _)| Arc::ptr_eq(s, shared)) {
            return Arc::clone(copy);
        }
        if copies.len() == CAPACITY {
            copies.remove(0);
        }
        let copy: Arc<str> = Arc::from(&**shared);
        copies.push((Arc::clone(shared), Arc::clone(&copy)));
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
