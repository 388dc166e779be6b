//! The record locations this thread used lately, as validated keys: a call that hits
//! the same record as a recent one neither writes the location out nor validates it
//! again, and shares the key instead of copying it.
//!
//! A location is a pure function of the namespace and the cache key, so a remembered
//! one is never stale. A namespace that makes no valid key (`..`, an empty segment) is
//! never remembered: its location is written out every time, and its read fails as
//! before.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::backend::Key;
use crate::hashing::Digest;

/// At most this many locations are kept per thread (about 150 bytes each); a full
/// memo is emptied and fills again.
pub(crate) const CAPACITY: usize = 4096;

/// A cache key is a BLAKE3 digest: its first eight bytes are already a good hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // The digest's bytes arrive in one piece; anything else is folded in.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

type Memo = HashMap<Digest, (Arc<str>, Key), BuildHasherDefault<DigestHasher>>;

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// The key of the record for `key` in `namespace` (`cache/v1/<namespace>/<ab>/<key>`),
/// or, when that is no valid key, the location written out.
pub(crate) fn record_key(namespace: &Arc<str>, key: &Digest) -> Result<Key, Box<str>> {
    let remembered = MEMO.with(|memo| {
        let memo = memo.try_borrow().ok()?;
        let (ns, location) = memo.get(key)?;
        (Arc::ptr_eq(ns, namespace) || **ns == **namespace).then(|| location.clone())
    });
    if let Some(location) = remembered {
        return Ok(location);
    }
    let hex = key.hex_buf();
    let text = super::record_location(namespace, hex.as_str());
    let Ok(location) = Key::parse(&text) else {
        return Err(text.into_boxed_str());
    };
    MEMO.with(|memo| {
        if let Ok(mut memo) = memo.try_borrow_mut() {
            if memo.len() >= CAPACITY {
                memo.clear();
            }
            memo.insert(*key, (namespace.clone(), location.clone()));
        }
    });
    Ok(location)
}

#[cfg(test)]
fn remembered() -> usize {
    MEMO.with(|memo| memo.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u32) -> Digest {
        crate::hashing::hash_str(&n.to_string())
    }

    #[test]
    fn a_remembered_location_equals_the_written_one_in_its_own_namespace() {
        let (team, other) = (Arc::<str>::from("team"), Arc::<str>::from("other/nested"));
        for round in 0..2 {
            for n in 0..100 {
                for ns in [&team, &other] {
                    let key = digest(n);
                    let want = super::super::record_location(ns, key.hex_buf().as_str());
                    let got = record_key(ns, &key).unwrap();
                    assert_eq!(got.as_str(), want, "round {round}");
                }
            }
        }
        // The same namespace in another allocation finds the same location.
        let copy = Arc::<str>::from("team");
        let key = digest(7);
        assert_eq!(
            record_key(&copy, &key).unwrap(),
            record_key(&team, &key).unwrap()
        );
    }

    #[test]
    fn a_namespace_that_makes_no_key_is_written_out_and_never_remembered() {
        let before = remembered();
        for ns in ["..", "a//b", "x/"] {
            let ns = Arc::<str>::from(ns);
            let key = digest(1);
            let text = record_key(&ns, &key).unwrap_err();
            assert_eq!(
                &*text,
                super::super::record_location(&ns, key.hex_buf().as_str())
            );
            assert!(Key::parse(&*text).is_err());
        }
        assert_eq!(remembered(), before);
    }

    #[test]
    fn the_memo_never_exceeds_its_bound() {
        let ns = Arc::<str>::from("bound");
        for n in 0..(CAPACITY as u32 + 10) {
            record_key(&ns, &digest(n)).unwrap();
            assert!(remembered() <= CAPACITY);
        }
    }
}
