//! The keys this thread derived lately, by the exact parts they were derived from: a
//! call with the same inputs as a recent one (the memory tier's hit, a repeated local
//! hit) skips the key's encoding and hashing, which is most of what such a call costs.
//!
//! A key is a pure function of its components and inputs (names and digests), so a
//! remembered key is never stale; the parts are written out unambiguously (counts and
//! name lengths before the bytes, as LEB128 varints; an input as its short encoding or
//! its digest, tagged, see [`InputPart`]) as the memo's key. Only keys that were
//! derived are remembered: a list with a name twice fails every time.
//!
//! **Two levels, so that a lookup touches little memory.** The components (the task,
//! its source, the namespace: the same for every call of a task) are written out and
//! numbered in a small map of their own, which the calls of a task keep hot in the
//! CPU's caches; the keys are then looked up by that number and the inputs alone,
//! which for a number or a short string take at most 30 bytes and are kept in the map's
//! own slot (a key and its entry in one 64-byte slot, no second allocation to follow).
//! Numbers are never given twice to different components: a thread that ran out of
//! them empties both maps and starts again.
//!
//! **A task's own list, known by its id.** The components a task's definition alone
//! decides (its name, source, version) are derived once per definition, which takes a
//! [`ListId`] that no other list ever has. A call whose components are exactly that list
//! passes the id, and a thread that looked the same list up last skips writing it out
//! and comparing it.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Digest, InputPart};

/// At most this many keys are kept per thread (a 64-byte slot each when their inputs
/// are short); a full memo is emptied and fills again.
pub(super) const CAPACITY: usize = 4096;

/// At most this many lists of components are numbered per thread; a full map is
/// emptied (the keys under its numbers stay until the key memo is emptied in turn).
pub(super) const PREFIXES: usize = 256;

/// Written-out keys of at most this many bytes are kept in the map's own slot.
const INLINE: usize = 30;

/// Stands for one list of components, and is never given to another: a definition
/// takes one when it derives its list, and a list changed is derived anew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListId(u64);

impl ListId {
    /// An id no list had before.
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ListId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A key's parts as written out: the number of its components, then its inputs.
enum MemoKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<[u8]>),
}

impl MemoKey {
    fn new(parts: &[u8]) -> Self {
        if parts.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..parts.len()].copy_from_slice(parts);
            MemoKey::Inline {
                len: parts.len() as u8,
                bytes,
            }
        } else {
            MemoKey::Boxed(parts.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            MemoKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            MemoKey::Boxed(bytes) => bytes,
        }
    }
}

// Hashed and compared as its bytes, so that the map is searched by a plain slice.
impl Borrow<[u8]> for MemoKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Hash for MemoKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for MemoKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for MemoKey {}

type FxMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

#[derive(Default)]
struct KeyMemo {
    /// Lists of components, written out, and the number each stands for in `keys`.
    prefixes: FxMap<Box<[u8]>, u32>,
    /// The next number to give a list of components.
    next_prefix: u32,
    /// The list of components last looked up, written out, its id when it came with
    /// one, and its number.
    last: Vec<u8>,
    last_id: Option<ListId>,
    last_number: Option<u32>,
    keys: FxMap<MemoKey, Digest>,
    /// The parts being looked up, written out.
    parts: Vec<u8>,
    /// What deriving a key of the components numbered here last kept (see
    /// [`HeadSlot`]).
    head: Option<(u32, blake3::Hasher)>,
}

/// Where a key's derivation keeps, for the list of components numbered `number`, the
/// hasher that has taken in everything the key's encoding writes before its inputs:
/// a key derived for the same list again (another input of the same task) starts from
/// it. A number stands for one list only ([`ListId`] and the numbering above), and the
/// slot is emptied with the maps.
pub(super) struct HeadSlot<'m> {
    pub(super) number: u32,
    pub(super) slot: &'m mut Option<(u32, blake3::Hasher)>,
}

impl HeadSlot<'_> {
    /// The hasher kept for this slot's list, if it is the one kept.
    pub(super) fn kept(&self) -> Option<&blake3::Hasher> {
        match &*self.slot {
            Some((n, hasher)) if *n == self.number => Some(hasher),
            _ => None,
        }
    }

    /// Keeps `hasher` for this slot's list.
    pub(super) fn keep(self, hasher: &blake3::Hasher) {
        *self.slot = Some((self.number, hasher.clone()));
    }
}

impl KeyMemo {
    /// The number standing for the components written out in `self.parts`: the last
    /// one asked for (a task called again and again), else the map's.
    fn prefix(&mut self) -> u32 {
        if let Some(n) = self.last_number {
            if self.last == self.parts {
                return n;
            }
        }
        let n = self.number();
        // Its buffer is reused: tasks called in turn allocate nothing here.
        self.last.clear();
        self.last.extend_from_slice(&self.parts);
        self.last_number = Some(n);
        n
    }

    fn number(&mut self) -> u32 {
        if let Some(&n) = self.prefixes.get(self.parts.as_slice()) {
            return n;
        }
        if self.next_prefix == u32::MAX {
            // Every number was given: none may stand for two lists, so start afresh.
            self.keys.clear();
            self.prefixes.clear();
            self.last_number = None;
            self.last_id = None;
            self.head = None;
            self.next_prefix = 0;
        } else if self.prefixes.len() >= PREFIXES {
            self.prefixes.clear();
        }
        let n = self.next_prefix;
        self.next_prefix += 1;
        self.prefixes.insert(self.parts.as_slice().into(), n);
        n
    }
}

thread_local! {
    static MEMO: RefCell<KeyMemo> = RefCell::new(KeyMemo::default());
}

/// `n` as a LEB128 varint: seven bits a byte, the high bit set on all but the last,
/// so that no written-out length is the start of another.
#[inline]
fn varint(out: &mut Vec<u8>, mut n: usize) {
    if n < 0x80 {
        // A name's length, a count: nearly always one byte.
        out.push(n as u8);
        return;
    }
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The key of these parts: remembered, or made by `derive` and remembered when it
/// succeeds. `list`, when given, stands for exactly these components (see
/// [`ListId`]).
pub(super) fn key_for<C: AsRef<str>, N: AsRef<str>, E>(
    components: &[(C, Digest)],
    list: Option<ListId>,
    inputs: &[(N, InputPart)],
    derive: impl FnOnce(&[(C, Digest)], &[(N, InputPart)], Option<HeadSlot<'_>>) -> Result<Digest, E>,
) -> Result<Digest, E> {
    MEMO.with(|memo| {
        // Re-entered (a key derived while one is being derived): no memo.
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return derive(components, inputs, None);
        };
        let memo = &mut *memo;
        let prefix = match (list, memo.last_number) {
            (Some(id), Some(n)) if memo.last_id == Some(id) => n,
            _ => {
                memo.parts.clear();
                varint(&mut memo.parts, components.len());
                for (name, digest) in components {
                    let name = name.as_ref();
                    varint(&mut memo.parts, name.len());
                    memo.parts.extend_from_slice(name.as_bytes());
                    memo.parts.extend_from_slice(&digest.0);
                }
                let n = memo.prefix();
                // `prefix` has just numbered these components as `last`: `list` is theirs.
                memo.last_id = list;
                n
            }
        };
        let parts = &mut memo.parts;
        parts.clear();
        parts.extend_from_slice(&prefix.to_le_bytes());
        varint(parts, inputs.len());
        for (name, part) in inputs {
            let name = name.as_ref();
            varint(parts, name.len());
            parts.extend_from_slice(name.as_bytes());
            part.write_to(parts);
        }
        if let Some(key) = memo.keys.get(memo.parts.as_slice()) {
            return Ok(*key);
        }
        let head = HeadSlot {
            number: prefix,
            slot: &mut memo.head,
        };
        let key = derive(components, inputs, Some(head))?;
        if memo.keys.len() >= CAPACITY {
            memo.keys.clear();
        }
        memo.keys.insert(MemoKey::new(&memo.parts), key);
        Ok(key)
    })
}

#[cfg(test)]
pub(super) fn remembered() -> usize {
    MEMO.with(|memo| memo.borrow().keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::hashing::input_part;

    /// What the tests' `derive` makes of the parts: a digest of all of them, in the
    /// order given, so that any mix-up of remembered keys shows.
    fn made(components: &[(&str, Digest)], inputs: &[(&str, InputPart)]) -> Digest {
        let mut h = blake3::Hasher::new();
        for (name, digest) in components {
            h.update(format!("{name:?}").as_bytes());
            h.update(&digest.0);
        }
        h.update(b"|");
        for (name, part) in inputs {
            h.update(format!("{name:?}").as_bytes());
            h.update(&part.digest().0);
        }
        h.finalize().into()
    }

    /// Looks the parts up, counting the derivations in `derived`.
    fn look_up(
        components: &[(&str, Digest)],
        inputs: &[(&str, InputPart)],
        derived: &mut u32,
    ) -> Digest {
        look_up_listed(components, None, inputs, derived)
    }

    /// [`look_up`] with the id of the list of components.
    fn look_up_listed(
        components: &[(&str, Digest)],
        list: Option<ListId>,
        inputs: &[(&str, InputPart)],
        derived: &mut u32,
    ) -> Digest {
        key_for(components, list, inputs, |c, i, _| {
            *derived += 1;
            Ok::<_, ()>(made(c, i))
        })
        .unwrap()
    }

    #[test]
    fn a_list_known_by_its_id_gives_the_keys_of_its_components() {
        reset();
        let mut derived = 0;
        let lists: [&[(&str, Digest)]; 3] = [
            &[("task", Digest::from_bytes([1; 32]))],
            &[("task", Digest::from_bytes([2; 32]))],
            &[
                ("task", Digest::from_bytes([1; 32])),
                ("version", Digest::from_bytes([3; 32])),
            ],
        ];
        let ids = [ListId::new(), ListId::new(), ListId::new()];
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        let parts: Vec<InputPart> = (0..20u64).map(|n| input_part(&n).unwrap()).collect();
        // Lists in turn and twice in a row, with and without their ids, in three rounds:
        // every key is its own list's, and each is derived once whichever way it came.
        for round in 0..3 {
            for (i, part) in parts.iter().enumerate() {
                for l in [i % 3, (i + 1) % 3, (i + 1) % 3, i % 3] {
                    let list = (round != 1 || i % 2 == 0).then_some(ids[l]);
                    let key = look_up_listed(lists[l], list, &[("x", *part)], &mut derived);
                    assert_eq!(key, made(lists[l], &[("x", *part)]), "round {round}, {i}");
                }
            }
            assert_eq!(derived, 2 * 20, "round {round}");
        }
        // When the numbers run out (a new list needs one), numbering starts again at 0,
        // the number `lists[0]` had: each list's keys stay its own.
        let key = look_up_listed(lists[0], Some(ids[0]), &[("x", parts[0])], &mut derived);
        assert_eq!(key, made(lists[0], &[("x", parts[0])]));
        MEMO.with(|m| m.borrow_mut().next_prefix = u32::MAX);
        let new: &[(&str, Digest)] = &[("task", Digest::from_bytes([4; 32]))];
        let new_id = ListId::new();
        for (list, id) in [
            (new, new_id),
            (lists[0], ids[0]),
            (new, new_id),
            (lists[1], ids[1]),
        ] {
            for part in &parts[..3] {
                let key = look_up_listed(list, Some(id), &[("x", *part)], &mut derived);
                assert_eq!(key, made(list, &[("x", *part)]));
            }
        }
        MEMO.with(|m| assert!(m.borrow().next_prefix < 4, "numbering started again"));
    }

    fn reset() {
        MEMO.with(|memo| *memo.borrow_mut() = KeyMemo::default());
    }

    #[test]
    fn varints_are_prefix_free_and_read_back() {
        let read = |bytes: &[u8]| -> (usize, usize) {
            let (mut n, mut shift) = (0usize, 0);
            for (i, b) in bytes.iter().enumerate() {
                n |= usize::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return (n, i + 1);
                }
                shift += 7;
            }
            panic!("unterminated varint {bytes:?}");
        };
        let values = [
            0,
            1,
            127,
            128,
            255,
            300,
            16_383,
            16_384,
            1 << 35,
            usize::MAX,
        ];
        let mut all = Vec::new();
        for &n in &values {
            let mut one = Vec::new();
            varint(&mut one, n);
            assert_eq!(read(&one), (n, one.len()), "{n}");
            all.extend_from_slice(&one);
        }
        // One after another, each is read back whole: none is the start of another.
        let mut at = 0;
        for &n in &values {
            let (value, used) = read(&all[at..]);
            assert_eq!(value, n);
            at += used;
        }
        assert_eq!(at, all.len());
    }

    #[test]
    fn keys_short_and_long_are_found_by_their_bytes() {
        let mut map: FxMap<MemoKey, u32> = FxMap::default();
        let lens = [0, 1, INLINE - 1, INLINE, INLINE + 1, 200];
        for (i, &len) in lens.iter().enumerate() {
            let bytes: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            let key = MemoKey::new(&bytes);
            assert_eq!(key.as_bytes(), bytes.as_slice());
            assert_eq!(matches!(key, MemoKey::Inline { .. }), len <= INLINE);
            map.insert(key, i as u32);
        }
        for (i, &len) in lens.iter().enumerate() {
            let bytes: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            assert_eq!(map.get(bytes.as_slice()), Some(&(i as u32)), "{len}");
            let mut other = bytes.clone();
            other.push(0);
            assert_eq!(map.get(other.as_slice()), None, "{len} + 1");
        }
        assert_eq!(std::mem::size_of::<MemoKey>(), 32);
    }

    #[test]
    fn each_key_is_derived_once_and_remembered_exactly() {
        reset();
        let task = Digest::from_bytes([1; 32]);
        let source = Digest::from_bytes([2; 32]);
        let mut derived = 0;
        let lists: [&[(&str, Digest)]; 3] = [
            &[("task", task)],
            &[("task", task), ("task_source", source)],
            &[("task", source)],
        ];
        let inputs: Vec<InputPart> = (0..40u64)
            .map(|n| input_part(&(n, "y".repeat(n as usize))).unwrap())
            .collect();
        for round in 0..3 {
            for list in lists {
                for part in &inputs {
                    let key = look_up(list, &[("x", *part)], &mut derived);
                    assert_eq!(key, made(list, &[("x", *part)]));
                }
            }
            // Every key derived in the first round, none after.
            assert_eq!(derived, 3 * 40, "round {round}");
        }
        // Names that would read the same without their lengths are different parts.
        let d = InputPart::from(task);
        let a = look_up(&[("ab", task)], &[("c", d)], &mut derived);
        let b = look_up(&[("a", task)], &[("bc", d)], &mut derived);
        let c = look_up(&[("ab", task)], &[("c", d), ("", d)], &mut derived);
        assert_eq!(derived, 3 * 40 + 3);
        assert_eq!(a, made(&[("ab", task)], &[("c", d)]));
        assert_eq!(b, made(&[("a", task)], &[("bc", d)]));
        assert_eq!(c, made(&[("ab", task)], &[("c", d), ("", d)]));
    }

    #[test]
    fn numbers_of_components_are_bounded_and_never_given_twice() {
        reset();
        let mut derived = 0;
        let part = input_part(&7u64).unwrap();
        let list = |n: u64| [("task", crate::cache::hashing::hash_value(&n).unwrap())];
        // More lists than are numbered: the first ones get new numbers, the same keys.
        for n in 0..(PREFIXES as u64 + 50) {
            let key = look_up(&list(n), &[("x", part)], &mut derived);
            assert_eq!(key, made(&list(n), &[("x", part)]));
            MEMO.with(|m| assert!(m.borrow().prefixes.len() <= PREFIXES));
        }
        for n in 0..(PREFIXES as u64 + 50) {
            let key = look_up(&list(n), &[("x", part)], &mut derived);
            assert_eq!(key, made(&list(n), &[("x", part)]), "{n}");
        }
        // When the numbers run out, both maps are emptied: a number given again finds
        // no key of the list it stood for before.
        // A hasher kept for a number given before (see `HeadSlot`) must not outlive it.
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            m.next_prefix = u32::MAX - 2;
            m.head = Some((1, blake3::Hasher::new()));
        });
        for n in 0..6 {
            let key = look_up(&list(1000 + n), &[("x", part)], &mut derived);
            assert_eq!(key, made(&list(1000 + n), &[("x", part)]), "{n}");
        }
        MEMO.with(|m| {
            let m = m.borrow();
            assert!(m.next_prefix < 10, "numbering started again");
            assert!(m.keys.len() <= 6, "the keys of old numbers are gone");
            assert!(
                m.head.is_none(),
                "the hasher kept for an old number is gone"
            );
        });
        for n in 0..6 {
            let key = look_up(&list(1000 + n), &[("x", part)], &mut derived);
            assert_eq!(key, made(&list(1000 + n), &[("x", part)]), "{n}");
        }
    }

    #[test]
    fn a_u64_input_of_a_task_is_kept_in_the_slot() {
        reset();
        let mut derived = 0;
        let task = Digest::from_bytes([3; 32]);
        look_up(
            &[("task", task)],
            &[("x", input_part(&7u64).unwrap())],
            &mut derived,
        );
        MEMO.with(|m| {
            let m = m.borrow();
            let key = m.keys.keys().next().unwrap();
            assert!(
                matches!(key, MemoKey::Inline { .. }),
                "{}",
                key.as_bytes().len()
            );
        });
    }
}
