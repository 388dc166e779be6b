//! Canonical hashing: the stable digests that cache keys are built from.
//!
//! A cache key must come out the same for the same inputs in every process, on every
//! platform and in every cairn release, and differently for different inputs.
//! [`hash_value`] gives any [`serde::Serialize`] value such a [`Digest`]: BLAKE3 over the
//! canonical, type-tagged, length-prefixed encoding of the serde data model described
//! below. [`KeyHasher`] combines named inputs and other components (task source, run
//! id, a version, a salt) into one cache key.
//!
//! ```
//! use std::collections::HashMap;
//! use cairn::hashing::{hash_value, KeyHasher};
//!
//! // Insertion order, HashMap's random iteration order and the sign of zero don't matter.
//! let a: HashMap<&str, f64> = [("x", 1.0), ("y", -0.0)].into();
//! let b: HashMap<&str, f64> = [("y", 0.0), ("x", 1.0)].into();
//! assert_eq!(hash_value(&a)?, hash_value(&b)?);
//!
//! let mut key = KeyHasher::new();
//! key.add_input("n", &3u32)?.add_input("weights", &a)?;
//! key.component("task_source", |h| h.str("fn add_one(n: u32) -> u32 { n + 1 }").done())?;
//! assert_eq!(key.finish().to_hex().len(), 64);
//! # Ok::<(), cairn::hashing::HashError>(())
//! ```
//!
//! # Why not `std::hash::Hash`, bincode or JSON
//!
//! - [`std::hash::Hash`] is made for in-memory tables: the algorithm behind
//!   `DefaultHasher` is unspecified and may change with any Rust release, `usize`
//!   hashes at the platform's width, `RandomState` is seeded per process, and
//!   `HashMap` does not implement it at all.
//! - Serialization formats (bincode, MessagePack, JSON) are not canonical: a map is
//!   written in iteration order (a `HashMap`'s differs in every process), `-0.0` and
//!   `0.0` differ, and so do NaN payloads; JSON turns NaN into `null` and cannot tell
//!   `None` from `Some(None)`; bincode's layout depends on its configuration and major
//!   version. Keys built on them drift between runs — the anchors' bug (Prefect
//!   #12229, flytekit #640).
//!
//! cairn's encoding is specified here and pinned by golden vectors in the tests: a key
//! changes only when [`KEY_FORMAT_VERSION`] does.
//!
//! # The encoding
//!
//! Every value is one tag byte followed by its payload. Lengths and counts are `u64`
//! little-endian. Every encoding is self-delimiting, so a sequence of them is
//! unambiguous.
//!
//! | tag | kind | serde sources | payload |
//! |---|---|---|---|
//! | `U` 0x55 | unit | `()`, unit structs | none |
//! | `B` 0x42 | bool | `bool` | `0x00` or `0x01` |
//! | `I` 0x49 | integer | `i8`…`i128`, `u8`…`u128`, `isize`, `usize` | sign (`0x00` for ≥ 0, `0x01` for < 0), then the magnitude as `u128` LE (16 bytes) |
//! | `F` 0x46 | float | `f32`, `f64` | the value as `f64`, canonical (see below), bits LE (8 bytes) |
//! | `S` 0x53 | string | `str`, `String`, `char` | length, UTF-8 bytes |
//! | `R` 0x52 | byte string | `serialize_bytes`; any list of integers in `0..=255` | length, the bytes |
//! | `N` 0x4E | none | `None` | none |
//! | `P` 0x50 | some | `Some(x)` | the encoding of `x` |
//! | `L` 0x4C | list | sequences, tuples, tuple structs, arrays | count, each element's encoding in order |
//! | `M` 0x4D | map | maps, structs | count, each entry (key encoding then value encoding) sorted by its bytes |
//! | `A` 0x41 | unordered collection | [`Unordered`] | count, element encodings sorted by their bytes |
//! | `E` 0x45 | enum variant | every enum variant | the variant's name (length, UTF-8), then the payload: `U` for a unit variant, the value for a newtype variant, a list for a tuple variant, a map for a struct variant |
//! | `H` 0x48 | digest | [`Digest`], [`Hashed`], [`FileInput`], [`by_cache_hash`] | the 32 digest bytes |
//!
//! Values equal under these rules hash the same; all others hash differently:
//!
//! - **Integers are one kind, by value.** `1u8`, `1i64` and `1u128` hash the same, so
//!   widening a field's type (`u32` to `u64`) never changes a key, and `usize` is the
//!   same on every platform. An integer never equals a float: `1` ≠ `1.0`.
//! - **Floats are canonical.** `f32` is widened to `f64` exactly (`1.5f32` ≡
//!   `1.5f64`), `-0.0` becomes `0.0` and every NaN becomes `0x7FF8000000000000`.
//! - **A `char` is a one-character string**, so `'a'` ≡ `"a"`.
//! - **A byte string is a list of small integers.** A list whose elements are all
//!   integers in `0..=255` (including the empty list) is written as a byte string, so
//!   `Vec<u8>` and `[u8; N]` (which serde presents as lists of `u8`), [`bytes::Bytes`],
//!   [`Blob`] and `serde_bytes` all hash the same for the same bytes.
//! - **Tuples are lists**, and so are tuple structs and arrays.
//! - **Structs are maps keyed by field name.** Field names are included, so renaming a
//!   field (or changing its `#[serde(rename)]`) changes the key; their order is not,
//!   so reordering fields or `#[serde(flatten)]` keeps it. The struct's own name is not
//!   included: renaming or moving a type is a refactor, not a new input. When a type's
//!   *meaning* changes, change the cache policy's version.
//! - **Newtype structs are transparent** (`Meters(2.0)` ≡ `2.0`); unit structs are unit.
//! - **Enums by variant name**, not by the enum's name nor the variant's index, so
//!   reordering variants keeps keys and renaming one changes them.
//! - **`None`, `Some(x)` and unit are distinct**, so `Some(None)` ≠ `None` and an
//!   absent value ≠ an empty one (`None` ≠ `Some("")` ≠ `Some(vec![])`).
//! - **Map order never matters.** Entries are sorted by the bytes of their encoding,
//!   which sorts them by key (ties, only possible with duplicate keys, by value).
//! - The encoder says it is human-readable, so types that serialize differently per
//!   format (UUIDs, IP addresses, ...) hash their textual form.
//!
//! A value's digest is BLAKE3 of its encoding, with nothing before it: `hash_value(&true)`
//! is `blake3::hash(b"B\x01")`.
//!
//! # What cannot be hashed, and what to do
//!
//! A value whose `Serialize` implementation fails cannot be hashed: a connection or a
//! lock that refuses to serialize, a `PathBuf` that is not UTF-8, a `RefCell` already
//! borrowed. Hashing it is an error ([`HashError`]) naming the input, the place in the
//! value (``at `.config.pool[2]` ``) and the cause, and suggesting the fix — cairn never
//! falls back to something that could give two different inputs the same key (as
//! Prefect #15861 does). The fix is one of:
//!
//! - exclude the input from the key (`INPUTS - "conn"`): it does not change the result;
//! - give it a hash method: implement [`CacheHash`], wrap it in [`Hashed`] with a
//!   digest you compute, or mark a field `#[serde(serialize_with =
//!   "cairn::hashing::by_cache_hash")]`;
//! - for a file, hash its content rather than its path: [`FileInput`].
//!
//! Types without a `Serialize` implementation cannot be passed at all (a compile
//! error); the same fixes apply. Two kinds of value hash without error but not
//! stably, and need care:
//!
//! - a `HashSet` serializes as a list in its random iteration order: use a `BTreeSet`,
//!   or wrap it in [`Unordered`] (or mark the field `#[serde(serialize_with =
//!   "cairn::hashing::unordered")]`);
//! - a type whose `Serialize` writes addresses, timestamps or random identifiers.
//!
//! # Big inputs
//!
//! Byte strings of 128 KiB or more are hashed on all cores
//! ([`blake3::Hasher::update_rayon`]), so a large [`bytes::Bytes`], [`Blob`],
//! `serde_bytes` value or [`ContentHasher::bytes`] hashes at memory speed: as fast as
//! `update_rayon` on the bare buffer (8.8 GiB/s for 1 GiB on 2 cores). A `Vec<u8>`
//! reaches the same encoding through serde's one-element-at-a-time list path, which
//! collects the bytes first: correct, but a copy and about 13 times slower (0.66
//! GiB/s) — wrap large ones in [`Blob`]. Files are hashed by content with
//! [`hash_file`], [`FileInput`] and [`ContentHasher::file`]: read in 4 MiB chunks by a
//! second thread while the previous chunk is hashed on all cores, so a file in the
//! page cache hashes about as fast as the same bytes in memory.
//!
//! # Supplying a hash (Flyte's `HashMethod`)
//!
//! A value can stand in the key by a digest instead of its encoding, written `H` +
//! 32 bytes: a data frame by its content digest, a file by its content, a large output
//! by a digest its task computed once. [`CacheHash`] lets a type supply its digest;
//! [`Hashed`] carries a value together with a declared digest, so a task whose output
//! is `Hashed<T>` hands downstream keys that digest, while storing `T` unchanged.
//!
//! ```
//! use cairn::hashing::{hash_value, ContentHasher, Hashed, KeyHasher};
//!
//! struct Frame { columns: Vec<Vec<f64>> } // no Serialize, or too slow to hash by it
//!
//! let frame = Frame { columns: vec![vec![1.0, 2.0], vec![3.0]] };
//! let output = Hashed::compute(frame, |f| {
//!     let mut h = ContentHasher::new();
//!     for column in &f.columns {
//!         h.value(column)?;
//!     }
//!     Ok(h.finalize())
//! })?;
//!
//! // Downstream, the input is keyed by the declared digest.
//! let mut key = KeyHasher::new();
//! key.add_input_hash("frame", &output)?;
//! assert_eq!(key.inputs()["frame"], output.digest());
//! # Ok::<(), cairn::hashing::HashError>(())
//! ```

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc;

use serde::ser::{self, Error as _, Impossible, Serialize, Serializer};

mod byte_probe;
mod compound;
mod content;
mod declared;
mod digest;
mod encoder;
mod error;
mod input_part;
mod key;
mod key_memo;
mod unordered;

pub use content::{hash_file, Blob, ContentHasher};
pub use declared::{by_cache_hash, CacheHash, FileInput, Hashed};
pub(crate) use declared::{collect_declared, restore_declared};
pub(crate) use digest::hex_digits;
pub use digest::{Digest, ParseDigestError};
pub use error::HashError;
pub(crate) use input_part::{input_part, InputPart};
pub(crate) use key::key_from_input_parts;
pub use key::KeyHasher;
pub(crate) use key_memo::ListId;
pub use unordered::{unordered, Unordered};

use byte_probe::*;
use compound::*;
use encoder::*;
use error::*;
use input_part::Prefix;
use unordered::*;

/// The version of the key format: the encoding above and the way [`KeyHasher`]
/// combines components. Mixed into every key [`KeyHasher::finish`] returns, so keys of
/// different formats never meet.
pub const KEY_FORMAT_VERSION: u32 = 1;

/// Byte strings at least this long are hashed on all cores (BLAKE3's own guidance:
/// below about 128 KiB, `update_rayon` is slower than `update` on x86_64).
const PARALLEL_THRESHOLD: usize = 128 * 1024;

/// Files are read and hashed in chunks of this size: small enough that a chunk is
/// still in the CPU's cache when it is hashed, large enough to keep every core busy
/// (4 MiB measured best on a 2-core machine, against 1, 2, 8, 16 and 64 MiB).
const FILE_CHUNK: usize = 4 << 20;

/// The name of the newtype struct through which a digest reaches the encoder.
const DIGEST_MARKER: &str = "$cairn::hashing::Digest";

/// The name of the newtype struct that marks an [`Unordered`] collection.
const UNORDERED_MARKER: &str = "$cairn::hashing::Unordered";

/// The tag bytes of the encoding (see the module documentation).
mod tag {
    pub const UNIT: u8 = b'U';
    pub const BOOL: u8 = b'B';
    pub const INT: u8 = b'I';
    pub const FLOAT: u8 = b'F';
    pub const STR: u8 = b'S';
    pub const BYTES: u8 = b'R';
    pub const NONE: u8 = b'N';
    pub const SOME: u8 = b'P';
    pub const LIST: u8 = b'L';
    pub const MAP: u8 = b'M';
    pub const UNORDERED: u8 = b'A';
    pub const VARIANT: u8 = b'E';
    pub const DIGEST: u8 = b'H';
}

/// The canonical bit pattern of NaN.
const CANONICAL_NAN: u64 = 0x7FF8_0000_0000_0000;

thread_local! {
    /// How many canonical encoders are running on this thread; [`FileInput`] reads its
    /// file only when one is.
    static HASHING: Cell<usize> = const { Cell::new(0) };
    /// Whether a list element is being probed for a byte: digests need not be computed
    /// for that, since a digest is never a byte.
    static PROBING: Cell<bool> = const { Cell::new(false) };
    /// The digest that the next `DIGEST_MARKER` newtype on this thread stands for.
    static PENDING_DIGEST: Cell<Option<[u8; 32]>> = const { Cell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// How many byte strings this thread hashed on all cores (tests check the fast path).
    static PARALLEL_UPDATES: Cell<usize> = const { Cell::new(0) };
}

/// Marks a canonical encoder running on this thread (and, if it was started from
/// inside a byte probe, not a probe).
struct HashingGuard {
    was_probing: bool,
}

impl HashingGuard {
    fn enter() -> Self {
        HASHING.with(|h| h.set(h.get() + 1));
        HashingGuard {
            was_probing: PROBING.with(|p| p.replace(false)),
        }
    }
}

impl Drop for HashingGuard {
    fn drop(&mut self) {
        HASHING.with(|h| h.set(h.get() - 1));
        PROBING.with(|p| p.set(self.was_probing));
    }
}

/// What the serializer at hand needs from a value that has a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// A serializer other than cairn's encoder: the value itself.
    Value,
    /// The byte probe: only that this is not a byte.
    NotAByte,
    /// cairn's encoder: the digest.
    Digest,
}

fn need() -> Need {
    if PROBING.with(Cell::get) {
        Need::NotAByte
    } else if HASHING.with(Cell::get) > 0 {
        Need::Digest
    } else {
        Need::Value
    }
}

/// Tells the byte probe that a value is a digest, without computing the digest.
fn serialize_not_a_byte<S: Serializer>(serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_newtype_struct(DIGEST_MARKER, &())
}

/// Serializes `stand_in` through the digest marker: cairn's encoder writes `digest`
/// instead, every other serializer writes `stand_in` (newtype structs are transparent
/// to them).
fn serialize_as_digest<S, T>(serializer: S, digest: Digest, stand_in: &T) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    T: Serialize + ?Sized,
{
    let previous = PENDING_DIGEST.with(|p| p.replace(Some(digest.0)));
    let result = serializer.serialize_newtype_struct(DIGEST_MARKER, stand_in);
    PENDING_DIGEST.with(|p| p.set(previous));
    result
}

/// The digest of a value: BLAKE3 of its canonical encoding (see the module
/// documentation).
///
/// The same value gives the same digest in every process, on every platform and in
/// every release with the same [`KEY_FORMAT_VERSION`]; a `HashMap`'s iteration order,
/// the sign of a zero float and a NaN's payload never change it.
///
/// # Errors
/// [`HashError`] when the value's `Serialize` implementation fails; the error names
/// the place inside the value.
///
/// ```
/// use cairn::hashing::hash_value;
///
/// assert_eq!(hash_value(&1u8)?, hash_value(&1i64)?);   // integers by value
/// assert_ne!(hash_value(&1u8)?, hash_value(&1.0f64)?); // an integer is not a float
/// assert_eq!(hash_value(&-0.0f64)?, hash_value(&0.0f32)?);
/// assert_ne!(hash_value(&None::<u8>)?, hash_value(&Some(0u8))?);
/// assert_eq!(
///     hash_value(&true)?.as_bytes(),
///     blake3::hash(b"B\x01").as_bytes(), // tag `B`, then the byte 1
/// );
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
pub fn hash_value<T: Serialize + ?Sized>(value: &T) -> Result<Digest, HashError> {
    let mut hasher = ContentHasher::new();
    hasher.value(value)?;
    Ok(hasher.finalize())
}

/// The digest of a string, as [`hash_value`] gives it (what
/// [`KeyHasher::component_value`] records for a string component), without the
/// fallible path: a string always hashes.
pub(crate) fn hash_str(s: &str) -> Digest {
    let mut hasher = ContentHasher::new();
    hasher.str(s);
    hasher.finalize()
}

#[cfg(test)]
pub(crate) mod test_support {
    //! What the tests of several files share: a value's digest in hex, and the
    //! documented encoding written out by hand.
    use serde::Serialize;

    use super::hash_value;

    pub(crate) fn hex(value: &(impl Serialize + ?Sized)) -> String {
        hash_value(value).unwrap().to_hex()
    }

    /// The documented encoding, written out by hand.
    pub(crate) struct Manual(Vec<u8>);

    impl Manual {
        pub(crate) fn new() -> Self {
            Manual(Vec::new())
        }
        pub(crate) fn tag(mut self, tag: u8) -> Self {
            self.0.push(tag);
            self
        }
        pub(crate) fn len(mut self, len: u64) -> Self {
            self.0.extend_from_slice(&len.to_le_bytes());
            self
        }
        pub(crate) fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        pub(crate) fn int(self, value: i128) -> Self {
            self.tag(b'I')
                .raw(&[u8::from(value < 0)])
                .raw(&value.unsigned_abs().to_le_bytes())
        }
        pub(crate) fn str(self, s: &str) -> Self {
            self.tag(b'S').len(s.len() as u64).raw(s.as_bytes())
        }
        pub(crate) fn digest(self) -> String {
            blake3::hash(&self.0).to_hex().to_string()
        }
    }
}
