//! The keys this thread derived lately, by the exact parts they were derived from: a
//! call with the same inputs as a recent one (the memory tier's hit, a repeated local
//! hit) skips the key's encoding and hashing, which is most of what such a call costs.
//!
//! A key is a pure function of its components and inputs (names and digests), so a
//! remembered key is never stale; the parts are written out unambiguously (counts and
//! name lengths before the bytes; an input as its short encoding or its digest, tagged,
//! see [`InputPart`]) as the memo's key. Only keys that were derived are remembered: a
//! list with a name twice fails every time.

use std::cell::RefCell;
use std::collections::HashMap;

use super::{Digest, InputPart};

/// At most this many keys are kept per thread (about 200 bytes each with one or two
/// components and inputs); a full memo is emptied and fills again.
pub(super) const CAPACITY: usize = 4096;

#[derive(Default)]
struct KeyMemo {
    keys: HashMap<Box<[u8]>, Digest, rustc_hash::FxBuildHasher>,
    /// The parts of the key being looked up, written out.
    parts: Vec<u8>,
}

thread_local! {
    static MEMO: RefCell<KeyMemo> = RefCell::new(KeyMemo::default());
}

/// The key of these parts: remembered, or made by `derive` (which may reorder the
/// parts) and remembered when it succeeds.
pub(super) fn key_for<N: AsRef<str>, E>(
    components: &mut [(&str, Digest)],
    inputs: &[(N, InputPart)],
    derive: impl FnOnce(&mut [(&str, Digest)], &[(N, InputPart)]) -> Result<Digest, E>,
) -> Result<Digest, E> {
    MEMO.with(|memo| {
        // Re-entered (a key derived while one is being derived): no memo.
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return derive(components, inputs);
        };
        let memo = &mut *memo;
        memo.parts.clear();
        let parts = &mut memo.parts;
        let len = |parts: &mut Vec<u8>, len: usize| {
            parts.extend_from_slice(&(len as u64).to_le_bytes());
        };
        len(parts, components.len());
        for (name, digest) in &*components {
            len(parts, name.len());
            parts.extend_from_slice(name.as_bytes());
            parts.extend_from_slice(&digest.0);
        }
        len(parts, inputs.len());
        for (name, part) in inputs {
            let name = name.as_ref();
            len(parts, name.len());
            parts.extend_from_slice(name.as_bytes());
            part.write_to(parts);
        }
        if let Some(key) = memo.keys.get(memo.parts.as_slice()) {
            return Ok(*key);
        }
        let key = derive(components, inputs)?;
        if memo.keys.len() >= CAPACITY {
            memo.keys.clear();
        }
        memo.keys.insert(memo.parts.as_slice().into(), key);
        Ok(key)
    })
}

#[cfg(test)]
pub(super) fn remembered() -> usize {
    MEMO.with(|memo| memo.borrow().keys.len())
}
