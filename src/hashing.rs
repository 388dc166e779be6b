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

// ---------------------------------------------------------------------------------
// Digest

/// A 32-byte BLAKE3 digest: of a value's canonical encoding, of a file's content, or a
/// cache key.
///
/// Displayed, parsed and serialized (outside hashing) as 64 lowercase hex digits. In a
/// hashed value it stands for what it digests: it is encoded as `H` + its 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest with these bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The digest's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.hex_buf().as_str().to_owned()
    }

    /// The hex digits in a stack buffer.
    fn hex_buf(&self) -> HexBuf {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[(byte >> 4) as usize];
            pair[1] = DIGITS[(byte & 0xf) as usize];
        }
        HexBuf(out)
    }
}

/// A digest's 64 hex digits, without an allocation.
struct HexBuf([u8; 64]);

impl HexBuf {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

/// A digest's stand-in for serializers other than the hashing encoder: its hex
/// digits, produced only if such a serializer asks for them.
struct HexStandIn(Digest);

impl Serialize for HexStandIn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.hex_buf().as_str())
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Self {
        Digest(*hash.as_bytes())
    }
}

impl From<Digest> for [u8; 32] {
    fn from(digest: Digest) -> Self {
        digest.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex_buf().as_str())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A string that is not 64 hex digits, given as a [`Digest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDigestError {
    input: String,
}

impl fmt::Display for ParseDigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a digest (64 hex digits)", self.input)
    }
}

impl std::error::Error for ParseDigestError {}

impl FromStr for Digest {
    type Err = ParseDigestError;

    /// Parses 64 hex digits, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParseDigestError {
            input: s.to_owned(),
        };
        let hex = s.as_bytes();
        if hex.len() != 64 {
            return Err(error());
        }
        let digit = |c: u8| (c as char).to_digit(16).ok_or_else(error);
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(Digest(bytes))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_as_digest(serializer, *self, &HexStandIn(*self))
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        hex.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------
// Errors

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    Value,
    Input(String),
    Component(String),
}

/// A value that cannot be hashed.
///
/// The message names the input (or key component), the place inside the value where
/// hashing failed and the cause, and suggests the fix:
///
/// ```text
/// input 'conn' cannot be hashed at `.pool[2]`: a live connection cannot be serialized;
/// exclude it from the cache key (e.g. INPUTS - "conn") or give it a hash method
/// (implement CacheHash, or wrap it in Hashed or FileInput)
/// ```
///
/// Converted into [`crate::Error`] it becomes [`Error::Config`](crate::Error::Config)
/// with this message: the fix is a change to the task's cache policy or its input
/// types, and retrying cannot help.
#[derive(Debug)]
pub struct HashError {
    subject: Subject,
    path: String,
    cause: String,
    source: Option<Source>,
}

impl HashError {
    /// An error with this cause, for [`CacheHash`] implementations and hash methods.
    /// [`KeyHasher`] adds the input's name.
    pub fn new(cause: impl Into<String>) -> Self {
        HashError {
            subject: Subject::Value,
            path: String::new(),
            cause: cause.into(),
            source: None,
        }
    }

    /// An error caused by `source` (an I/O error, a library's error).
    pub fn from_source(source: impl Into<Source>) -> Self {
        let source = source.into();
        let mut error = HashError::new(source.to_string());
        error.source = Some(source);
        error
    }

    /// The input that could not be hashed, if the error came from
    /// [`KeyHasher::add_input`] and its siblings.
    pub fn input(&self) -> Option<&str> {
        match &self.subject {
            Subject::Input(name) => Some(name),
            _ => None,
        }
    }

    /// The key component that could not be hashed, if the error came from
    /// [`KeyHasher::component`].
    pub fn component(&self) -> Option<&str> {
        match &self.subject {
            Subject::Component(name) => Some(name),
            _ => None,
        }
    }

    /// Where inside the value hashing failed, such as `.config.pool[2]` or
    /// `["weights"]`; empty when the value itself failed.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What went wrong, without the input's name or the suggested fix.
    pub fn cause(&self) -> &str {
        &self.cause
    }

    /// This error, as the error of hashing the input `name`.
    pub(crate) fn for_input(self, name: &str) -> Self {
        self.with_subject(Subject::Input(name.to_owned()))
    }

    fn with_subject(mut self, subject: Subject) -> Self {
        if self.subject == Subject::Value {
            self.subject = subject;
        }
        self
    }

    fn from_encode(error: EncodeError) -> Self {
        HashError {
            subject: Subject::Value,
            path: error.path(),
            cause: error.message,
            source: error.source,
        }
    }
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Subject::Value => f.write_str("value")?,
            Subject::Input(name) => write!(f, "input '{name}'")?,
            Subject::Component(name) => write!(f, "cache key component '{name}'")?,
        }
        f.write_str(" cannot be hashed")?;
        if !self.path.is_empty() {
            write!(f, " at `{}`", self.path)?;
        }
        write!(f, ": {}; ", self.cause)?;
        match &self.subject {
            Subject::Input(name) => write!(
                f,
                "exclude it from the cache key (e.g. INPUTS - \"{name}\") or give it a hash \
                 method (implement CacheHash, or wrap it in Hashed or FileInput)"
            ),
            Subject::Component(_) => f.write_str(
                "leave it out of the cache policy or give it a hash method (implement \
                 CacheHash, or wrap it in Hashed)",
            ),
            Subject::Value => f.write_str(
                "exclude it from the cache key or give it a hash method (implement \
                 CacheHash, or wrap it in Hashed or FileInput)",
            ),
        }
    }
}

impl std::error::Error for HashError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<HashError> for crate::Error {
    fn from(error: HashError) -> Self {
        crate::Error::Config {
            message: error.to_string(),
        }
    }
}

/// The encoder's error: a message, its cause and where in the value it happened.
#[derive(Debug)]
struct EncodeError {
    message: String,
    source: Option<Source>,
    /// Innermost first: segments are added while the error travels outwards.
    segments: Vec<Segment>,
}

#[derive(Debug)]
enum Segment {
    Field(&'static str),
    Index(usize),
    Key(String),
    Variant(&'static str),
}

impl EncodeError {
    fn within(mut self, segment: Segment) -> Self {
        self.segments.push(segment);
        self
    }

    fn path(&self) -> String {
        let mut path = String::new();
        for segment in self.segments.iter().rev() {
            match segment {
                Segment::Field(name) => path.push_str(&format!(".{name}")),
                Segment::Index(i) => path.push_str(&format!("[{i}]")),
                Segment::Key(key) => path.push_str(&format!("[{key}]")),
                Segment::Variant(name) => path.push_str(&format!("::{name}")),
            }
        }
        path
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError {
            message: msg.to_string(),
            source: None,
            segments: Vec::new(),
        }
    }
}

/// How a map key is shown in an error path: strings quoted, numbers and booleans as
/// they are, anything else by its position.
fn describe_key(encoding: &[u8], position: usize) -> String {
    match encoding.split_first() {
        Some((&tag::STR, rest)) if rest.len() >= 8 => match std::str::from_utf8(&rest[8..]) {
            Ok(s) => format!("{s:?}"),
            Err(_) => format!("key #{position}"),
        },
        Some((&tag::INT, rest)) if rest.len() == 17 => {
            let magnitude = u128::from_le_bytes(rest[1..].try_into().expect("16 bytes"));
            let sign = if rest[0] == 1 { "-" } else { "" };
            format!("{sign}{magnitude}")
        }
        Some((&tag::BOOL, [b])) => (*b == 1).to_string(),
        _ => format!("key #{position}"),
    }
}

// ---------------------------------------------------------------------------------
// The encoder

/// Where encoded bytes go: straight into the hasher, or into a buffer that a map or
/// set sorts before passing it on.
enum Sink<'h> {
    Hasher(&'h mut blake3::Hasher),
    Buffer(Vec<u8>),
}

struct Encoder<'h> {
    sink: Sink<'h>,
}

impl Encoder<'static> {
    fn buffer() -> Self {
        Encoder {
            sink: Sink::Buffer(Vec::new()),
        }
    }

    fn into_buffer(self) -> Vec<u8> {
        match self.sink {
            Sink::Buffer(buffer) => buffer,
            Sink::Hasher(_) => unreachable!("a buffer encoder"),
        }
    }

    fn buffered(&self) -> &[u8] {
        match &self.sink {
            Sink::Buffer(buffer) => buffer,
            Sink::Hasher(_) => unreachable!("a buffer encoder"),
        }
    }
}

impl<'h> Encoder<'h> {
    fn hasher(hasher: &'h mut blake3::Hasher) -> Self {
        Encoder {
            sink: Sink::Hasher(hasher),
        }
    }

    fn position(&self) -> usize {
        match &self.sink {
            Sink::Buffer(buffer) => buffer.len(),
            Sink::Hasher(_) => 0,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        match &mut self.sink {
            Sink::Hasher(hasher) => update(hasher, bytes),
            Sink::Buffer(buffer) => buffer.extend_from_slice(bytes),
        }
    }

    fn write_tag(&mut self, tag: u8) {
        self.write(&[tag]);
    }

    fn write_len(&mut self, len: usize) {
        self.write(&(len as u64).to_le_bytes());
    }

    fn write_int(&mut self, negative: bool, magnitude: u128) {
        let mut encoding = [0u8; 18];
        encoding[0] = tag::INT;
        encoding[1] = u8::from(negative);
        encoding[2..].copy_from_slice(&magnitude.to_le_bytes());
        self.write(&encoding);
    }

    fn write_signed(&mut self, value: i128) {
        self.write_int(value < 0, value.unsigned_abs());
    }

    fn write_float(&mut self, value: f64) {
        let bits = if value.is_nan() {
            CANONICAL_NAN
        } else if value == 0.0 {
            0 // -0.0 and 0.0
        } else {
            value.to_bits()
        };
        let mut encoding = [0u8; 9];
        encoding[0] = tag::FLOAT;
        encoding[1..].copy_from_slice(&bits.to_le_bytes());
        self.write(&encoding);
    }

    fn write_str(&mut self, value: &str) {
        self.write_tag(tag::STR);
        self.write_len(value.len());
        self.write(value.as_bytes());
    }

    fn write_bytes(&mut self, value: &[u8]) {
        self.write_tag(tag::BYTES);
        self.write_len(value.len());
        self.write(value);
    }

    fn write_digest(&mut self, digest: &[u8; 32]) {
        self.write_tag(tag::DIGEST);
        self.write(digest);
    }

    fn write_variant(&mut self, variant: &str) {
        self.write_tag(tag::VARIANT);
        self.write_len(variant.len());
        self.write(variant.as_bytes());
    }

    /// Writes a map or an unordered collection: `tag`, the count, then the items of
    /// `buffer` (each a range of it) sorted by their bytes.
    fn write_sorted(&mut self, tag: u8, buffer: &[u8], mut items: Vec<Range<usize>>) {
        items.sort_unstable_by(|a, b| buffer[a.clone()].cmp(&buffer[b.clone()]));
        self.write_tag(tag);
        self.write_len(items.len());
        for item in items {
            self.write(&buffer[item]);
        }
    }
}

fn update(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    if bytes.len() >= PARALLEL_THRESHOLD {
        hasher.update_rayon(bytes);
        #[cfg(test)]
        PARALLEL_UPDATES.with(|n| n.set(n.get() + 1));
    } else {
        hasher.update(bytes);
    }
}

impl<'a, 'h> Serializer for &'a mut Encoder<'h> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = SeqEncoder<'a, 'h>;
    type SerializeTuple = SeqEncoder<'a, 'h>;
    type SerializeTupleStruct = SeqEncoder<'a, 'h>;
    type SerializeTupleVariant = SeqEncoder<'a, 'h>;
    type SerializeMap = MapEncoder<'a, 'h>;
    type SerializeStruct = MapEncoder<'a, 'h>;
    type SerializeStructVariant = MapEncoder<'a, 'h>;

    fn is_human_readable(&self) -> bool {
        true
    }

    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.write(&[tag::BOOL, u8::from(v)]);
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.write_signed(v.into());
        Ok(())
    }

    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.write_signed(v.into());
        Ok(())
    }

    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.write_signed(v.into());
        Ok(())
    }

    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        self.write_signed(v.into());
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        self.write_signed(v);
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.write_int(false, v.into());
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.write_int(false, v.into());
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.write_int(false, v.into());
        Ok(())
    }

    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        self.write_int(false, v.into());
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        self.write_int(false, v);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        self.write_float(v.into());
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        self.write_float(v);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        self.write_str(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.write_str(v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        self.write_bytes(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), EncodeError> {
        self.write_tag(tag::NONE);
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), EncodeError> {
        self.write_tag(tag::SOME);
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), EncodeError> {
        self.write_tag(tag::UNIT);
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        self.write_variant(variant);
        self.write_tag(tag::UNIT);
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        match name {
            DIGEST_MARKER => match PENDING_DIGEST.with(|p| p.take()) {
                Some(digest) => {
                    self.write_digest(&digest);
                    Ok(())
                }
                None => Err(EncodeError::custom(
                    "a value claims to be a cairn digest but carries none",
                )),
            },
            UNORDERED_MARKER => value.serialize(UnorderedStart { parent: self }),
            _ => value.serialize(self),
        }
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.write_variant(variant);
        value
            .serialize(self)
            .map_err(|e| e.within(Segment::Variant(variant)))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqEncoder<'a, 'h>, EncodeError> {
        Ok(SeqEncoder::new(self, len, None))
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqEncoder<'a, 'h>, EncodeError> {
        Ok(SeqEncoder::new(self, Some(len), None))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqEncoder<'a, 'h>, EncodeError> {
        Ok(SeqEncoder::new(self, Some(len), None))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqEncoder<'a, 'h>, EncodeError> {
        self.write_variant(variant);
        Ok(SeqEncoder::new(self, Some(len), Some(variant)))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<MapEncoder<'a, 'h>, EncodeError> {
        Ok(MapEncoder::new(self, None))
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<MapEncoder<'a, 'h>, EncodeError> {
        Ok(MapEncoder::new(self, None))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<MapEncoder<'a, 'h>, EncodeError> {
        self.write_variant(variant);
        Ok(MapEncoder::new(self, Some(variant)))
    }
}

/// A list: collected as bytes while every element is an integer in `0..=255`, written
/// element by element from the first one that is not.
struct SeqEncoder<'a, 'h> {
    parent: &'a mut Encoder<'h>,
    declared: Option<usize>,
    count: usize,
    variant: Option<&'static str>,
    state: SeqState,
}

enum SeqState {
    /// Every element so far was a byte; nothing is written yet.
    Bytes(Vec<u8>),
    /// The header is written (the length was declared); elements go to the parent.
    Streaming,
    /// The length was not declared: elements are collected until it is known.
    Buffered(Encoder<'static>),
}

impl<'a, 'h> SeqEncoder<'a, 'h> {
    fn new(
        parent: &'a mut Encoder<'h>,
        declared: Option<usize>,
        variant: Option<&'static str>,
    ) -> Self {
        SeqEncoder {
            parent,
            declared,
            count: 0,
            variant,
            state: SeqState::Bytes(Vec::new()),
        }
    }

    fn wrap(&self, error: EncodeError) -> EncodeError {
        match self.variant {
            Some(variant) => error.within(Segment::Variant(variant)),
            None => error,
        }
    }

    /// Writes the bytes collected so far as integers and continues element by element.
    fn leave_bytes(&mut self) {
        let SeqState::Bytes(bytes) = std::mem::replace(&mut self.state, SeqState::Streaming) else {
            return;
        };
        match self.declared {
            Some(len) => {
                self.parent.write_tag(tag::LIST);
                self.parent.write_len(len);
                for byte in bytes {
                    self.parent.write_int(false, byte.into());
                }
            }
            None => {
                let mut buffer = Encoder::buffer();
                for byte in bytes {
                    buffer.write_int(false, byte.into());
                }
                self.state = SeqState::Buffered(buffer);
            }
        }
    }

    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        let index = self.count;
        self.count += 1;
        if let SeqState::Bytes(bytes) = &mut self.state {
            // A probe that fails (even with a custom error) only means "not a byte":
            // the element is then serialized again, for real, below.
            let was_probing = PROBING.with(|p| p.replace(true));
            let probed = value.serialize(ByteProbe);
            PROBING.with(|p| p.set(was_probing));
            match probed {
                Ok(byte) => {
                    if bytes.capacity() == 0 {
                        // The declared length is the value's hint: cap what it can
                        // make us allocate up front.
                        bytes.reserve(self.declared.unwrap_or(0).min(1 << 20));
                    }
                    bytes.push(byte);
                    return Ok(());
                }
                Err(NotAByte) => self.leave_bytes(),
            }
        }
        let result = match &mut self.state {
            SeqState::Streaming => value.serialize(&mut *self.parent),
            SeqState::Buffered(buffer) => value.serialize(buffer),
            SeqState::Bytes(_) => unreachable!("left above"),
        };
        result.map_err(|e| self.wrap(e.within(Segment::Index(index))))
    }

    fn finish(self) -> Result<(), EncodeError> {
        if let Some(declared) = self.declared {
            if declared != self.count {
                return Err(self.wrap(EncodeError::custom(format!(
                    "a sequence declared {declared} elements but produced {}",
                    self.count
                ))));
            }
        }
        match self.state {
            SeqState::Bytes(bytes) => self.parent.write_bytes(&bytes),
            SeqState::Streaming => {}
            SeqState::Buffered(buffer) => {
                self.parent.write_tag(tag::LIST);
                self.parent.write_len(self.count);
                self.parent.write(buffer.buffered());
            }
        }
        Ok(())
    }
}

/// serde's compound traits for an encoder, forwarded to its `element` (or `field`) and
/// `finish`: the traits differ only in name.
macro_rules! forward_compound {
    ($encoder:ident: $($trait:ident::$method:ident),+ $(,)?) => {$(
        impl ser::$trait for $encoder<'_, '_> {
            type Ok = ();
            type Error = EncodeError;

            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
                self.element(value)
            }

            fn end(self) -> Result<(), EncodeError> {
                self.finish()
            }
        }
    )+};
    (fields $encoder:ident: $($trait:ident),+ $(,)?) => {$(
        impl ser::$trait for $encoder<'_, '_> {
            type Ok = ();
            type Error = EncodeError;

            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), EncodeError> {
                self.field(key, value)
            }

            fn end(self) -> Result<(), EncodeError> {
                self.finish()
            }
        }
    )+};
}

forward_compound!(
    SeqEncoder: SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

/// A map or struct: entries are encoded into a buffer, sorted, then written.
struct MapEncoder<'a, 'h> {
    parent: &'a mut Encoder<'h>,
    buffer: Encoder<'static>,
    entries: Vec<Range<usize>>,
    /// The start and end of the key whose value comes next.
    key: Option<(usize, usize)>,
    variant: Option<&'static str>,
}

impl<'a, 'h> MapEncoder<'a, 'h> {
    fn new(parent: &'a mut Encoder<'h>, variant: Option<&'static str>) -> Self {
        MapEncoder {
            parent,
            buffer: Encoder::buffer(),
            entries: Vec::new(),
            key: None,
            variant,
        }
    }

    fn wrap(&self, error: EncodeError) -> EncodeError {
        match self.variant {
            Some(variant) => error.within(Segment::Variant(variant)),
            None => error,
        }
    }

    fn key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), EncodeError> {
        let start = self.buffer.position();
        match key.serialize(&mut self.buffer) {
            Ok(()) => {
                self.key = Some((start, self.buffer.position()));
                Ok(())
            }
            Err(e) => {
                let position = self.entries.len();
                Err(self.wrap(e.within(Segment::Key(format!("key #{position}")))))
            }
        }
    }

    fn value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        let Some((start, key_end)) = self.key.take() else {
            return Err(self.wrap(EncodeError::custom("a map value came without its key")));
        };
        match value.serialize(&mut self.buffer) {
            Ok(()) => {
                self.entries.push(start..self.buffer.position());
                Ok(())
            }
            Err(e) => {
                let key = describe_key(&self.buffer.buffered()[start..key_end], self.entries.len());
                Err(self.wrap(e.within(Segment::Key(key))))
            }
        }
    }

    fn field<T: ?Sized + Serialize>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        let start = self.buffer.position();
        self.buffer.write_str(name);
        match value.serialize(&mut self.buffer) {
            Ok(()) => {
                self.entries.push(start..self.buffer.position());
                Ok(())
            }
            Err(e) => Err(self.wrap(e.within(Segment::Field(name)))),
        }
    }

    fn finish(self) -> Result<(), EncodeError> {
        if self.key.is_some() {
            return Err(self.wrap(EncodeError::custom("a map key came without its value")));
        }
        let buffer = self.buffer.into_buffer();
        self.parent.write_sorted(tag::MAP, &buffer, self.entries);
        Ok(())
    }
}

impl ser::SerializeMap for MapEncoder<'_, '_> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), EncodeError> {
        self.key(key)
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.value(value)
    }

    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

forward_compound!(fields MapEncoder: SerializeStruct, SerializeStructVariant);

/// Answers whether a list element is an integer in `0..=255`, and which.
struct ByteProbe;

#[derive(Debug)]
struct NotAByte;

impl fmt::Display for NotAByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a byte")
    }
}

impl std::error::Error for NotAByte {}

impl ser::Error for NotAByte {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        NotAByte
    }
}

fn byte<T: TryInto<u8>>(v: T) -> Result<u8, NotAByte> {
    v.try_into().map_err(|_| NotAByte)
}

impl Serializer for ByteProbe {
    type Ok = u8;
    type Error = NotAByte;
    type SerializeSeq = Impossible<u8, NotAByte>;
    type SerializeTuple = Impossible<u8, NotAByte>;
    type SerializeTupleStruct = Impossible<u8, NotAByte>;
    type SerializeTupleVariant = Impossible<u8, NotAByte>;
    type SerializeMap = Impossible<u8, NotAByte>;
    type SerializeStruct = Impossible<u8, NotAByte>;
    type SerializeStructVariant = Impossible<u8, NotAByte>;

    fn is_human_readable(&self) -> bool {
        true
    }

    fn serialize_u8(self, v: u8) -> Result<u8, NotAByte> {
        Ok(v)
    }

    fn serialize_i8(self, v: i8) -> Result<u8, NotAByte> {
        byte(v)
    }

    fn serialize_i16(self, v: i16) -> Result<u8, NotAByte> {
        byte(v)
    }

    fn serialize_i32(self, v: i32) -> Result<u8, NotAByte> {
        byte(v)
    }

    fn serialize_i64(self, v: i64) -> Result<u8, NotAByte> {
        byte(v)
    }

    fn serialize_i128(self, v: i128) -> Result<u8, NotAByte> {
        byte(v)
    }

    fn serialize_u16(self, v: u16) -> Result<u8, NotAByte> {
        byte(v)
    }

    fn serialize_u32(self, v: u32) -> Result<u8, NotAByte> {
        byte(v)
    }

    fn serialize_u64(self, v: u64) -> Result<u8, NotAByte> {
        byte(v)
    }

    fn serialize_u128(self, v: u128) -> Result<u8, NotAByte> {
        byte(v)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<u8, NotAByte> {
        match name {
            DIGEST_MARKER | UNORDERED_MARKER => Err(NotAByte),
            _ => value.serialize(self),
        }
    }

    fn serialize_bool(self, _v: bool) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_f32(self, _v: f32) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_f64(self, _v: f64) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_char(self, _v: char) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_str(self, _v: &str) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_none(self) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _value: &T) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_unit(self) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
    ) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<u8, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, NotAByte> {
        Err(NotAByte)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, NotAByte> {
        Err(NotAByte)
    }
}

/// The value inside an [`Unordered`]: must be a sequence (or a newtype around one).
struct UnorderedStart<'a, 'h> {
    parent: &'a mut Encoder<'h>,
}

fn not_a_collection(found: &str) -> EncodeError {
    EncodeError::custom(format!(
        "Unordered must wrap a sequence (a set, a Vec, ...), not {found}"
    ))
}

impl<'a, 'h> Serializer for UnorderedStart<'a, 'h> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = SetEncoder<'a, 'h>;
    type SerializeTuple = SetEncoder<'a, 'h>;
    type SerializeTupleStruct = Impossible<(), EncodeError>;
    type SerializeTupleVariant = Impossible<(), EncodeError>;
    type SerializeMap = Impossible<(), EncodeError>;
    type SerializeStruct = Impossible<(), EncodeError>;
    type SerializeStructVariant = Impossible<(), EncodeError>;

    fn is_human_readable(&self) -> bool {
        true
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<SetEncoder<'a, 'h>, EncodeError> {
        Ok(SetEncoder::new(self.parent))
    }

    fn serialize_tuple(self, _len: usize) -> Result<SetEncoder<'a, 'h>, EncodeError> {
        Ok(SetEncoder::new(self.parent))
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        match name {
            DIGEST_MARKER => Err(not_a_collection("a digest")),
            _ => value.serialize(self),
        }
    }

    fn serialize_bool(self, _v: bool) -> Result<(), EncodeError> {
        Err(not_a_collection("a bool"))
    }

    fn serialize_i8(self, _v: i8) -> Result<(), EncodeError> {
        Err(not_a_collection("an integer"))
    }

    fn serialize_i16(self, _v: i16) -> Result<(), EncodeError> {
        Err(not_a_collection("an integer"))
    }

    fn serialize_i32(self, _v: i32) -> Result<(), EncodeError> {
        Err(not_a_collection("an integer"))
    }

    fn serialize_i64(self, _v: i64) -> Result<(), EncodeError> {
        Err(not_a_collection("an integer"))
    }

    fn serialize_i128(self, _v: i128) -> Result<(), EncodeError> {
        Err(not_a_collection("an integer"))
    }

    fn serialize_u8(self, _v: u8) -> Result<(), EncodeError> {
        Err(not_a_collection("an integer"))
    }

    fn serialize_u16(self, _v: u16) -> Result<(), EncodeError> {
        Err(not_a_collection("an integer"))
    }

    fn serialize_u32(self, _v: u32) -> Result<(), EncodeError> {
        Err(not_a_collection("an integer"))
    }

    fn serialize_u64(self, _v: u64) -> Result<(), EncodeError> {
        Err(not_a_collection("an integer"))
    }

    fn serialize_u128(self, _v: u128) -> Result<(), EncodeError> {
        Err(not_a_collection("an integer"))
    }

    fn serialize_f32(self, _v: f32) -> Result<(), EncodeError> {
        Err(not_a_collection("a float"))
    }

    fn serialize_f64(self, _v: f64) -> Result<(), EncodeError> {
        Err(not_a_collection("a float"))
    }

    fn serialize_char(self, _v: char) -> Result<(), EncodeError> {
        Err(not_a_collection("a char"))
    }

    fn serialize_str(self, _v: &str) -> Result<(), EncodeError> {
        Err(not_a_collection("a string"))
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<(), EncodeError> {
        Err(not_a_collection("a byte string"))
    }

    fn serialize_none(self) -> Result<(), EncodeError> {
        Err(not_a_collection("an Option"))
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _value: &T) -> Result<(), EncodeError> {
        Err(not_a_collection("an Option"))
    }

    fn serialize_unit(self) -> Result<(), EncodeError> {
        Err(not_a_collection("unit"))
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        Err(not_a_collection("a unit struct"))
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
    ) -> Result<(), EncodeError> {
        Err(not_a_collection("an enum"))
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), EncodeError> {
        Err(not_a_collection("an enum"))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, EncodeError> {
        Err(not_a_collection("a tuple struct"))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        Err(not_a_collection("an enum"))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
        Err(not_a_collection(
            "a map (maps are order-independent already)",
        ))
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, EncodeError> {
        Err(not_a_collection("a struct"))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        Err(not_a_collection("an enum"))
    }
}

/// The elements of an [`Unordered`] collection, sorted by their encoding when done.
struct SetEncoder<'a, 'h> {
    parent: &'a mut Encoder<'h>,
    buffer: Encoder<'static>,
    elements: Vec<Range<usize>>,
}

impl<'a, 'h> SetEncoder<'a, 'h> {
    fn new(parent: &'a mut Encoder<'h>) -> Self {
        SetEncoder {
            parent,
            buffer: Encoder::buffer(),
            elements: Vec::new(),
        }
    }

    fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        let start = self.buffer.position();
        value
            .serialize(&mut self.buffer)
            .map_err(|e| e.within(Segment::Index(self.elements.len())))?;
        self.elements.push(start..self.buffer.position());
        Ok(())
    }

    fn finish(self) -> Result<(), EncodeError> {
        let buffer = self.buffer.into_buffer();
        self.parent
            .write_sorted(tag::UNORDERED, &buffer, self.elements);
        Ok(())
    }
}

forward_compound!(
    SetEncoder: SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
);

// ---------------------------------------------------------------------------------
// Public hashing API

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

/// The digest of a file's content: the same as [`hash_value`] of a byte string holding
/// it (`hash_value(&Blob(std::fs::read(path)?))`), so a file and its bytes in memory
/// hash alike. Its path, name and times are not part of it.
///
/// The file is read in large chunks and hashed on all cores.
///
/// # Errors
/// [`HashError`] (with the I/O error as its source) when the file cannot be opened or
/// read, is a directory, or changes length while it is being read.
///
/// ```
/// use cairn::hashing::{hash_file, hash_value, Blob};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("data.csv");
/// std::fs::write(&path, "day,total\nmon,3\n").unwrap();
/// assert_eq!(hash_file(&path)?, hash_value(&Blob(b"day,total\nmon,3\n"))?);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
pub fn hash_file(path: impl AsRef<Path>) -> Result<Digest, HashError> {
    let mut hasher = ContentHasher::new();
    hasher.file(path)?;
    Ok(hasher.finalize())
}

/// A hasher that takes a sequence of values, byte strings, files and digests, each
/// written in its canonical encoding, and gives the digest of the whole.
///
/// Use it to write a hash method ([`CacheHash`], [`Hashed::compute`]) or a key
/// component ([`KeyHasher::component`]). A hasher holding exactly one value gives
/// that value's [`hash_value`].
///
/// After an error the hasher holds part of a value: drop it.
///
/// ```
/// use cairn::hashing::{hash_value, Blob, ContentHasher};
///
/// let mut h = ContentHasher::new();
/// h.bytes(b"abc");
/// assert_eq!(h.finalize(), hash_value(&Blob(b"abc"))?);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
#[derive(Clone, Default)]
pub struct ContentHasher {
    hasher: blake3::Hasher,
}

impl fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentHasher")
            .field("bytes", &self.hasher.count())
            .finish()
    }
}

impl ContentHasher {
    /// An empty hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value's canonical encoding.
    ///
    /// # Errors
    /// [`HashError`] when the value's `Serialize` implementation fails.
    pub fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<&mut Self, HashError> {
        let _hashing = HashingGuard::enter();
        value
            .serialize(&mut Encoder::hasher(&mut self.hasher))
            .map_err(HashError::from_encode)?;
        Ok(self)
    }

    /// Adds a byte string (the same as `value(&Blob(bytes))`), on all cores when it is
    /// large.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        Encoder::hasher(&mut self.hasher).write_bytes(bytes);
        self
    }

    /// Adds a string (the same as `value(s)`).
    pub fn str(&mut self, s: &str) -> &mut Self {
        Encoder::hasher(&mut self.hasher).write_str(s);
        self
    }

    /// Adds a digest, standing for what it digests (the same as `value(digest)`).
    pub fn digest(&mut self, digest: &Digest) -> &mut Self {
        Encoder::hasher(&mut self.hasher).write_digest(&digest.0);
        self
    }

    /// Adds a file's content as a byte string (see [`hash_file`]).
    ///
    /// # Errors
    /// [`HashError`] when the file cannot be read, is a directory, or changes length
    /// while it is being read.
    pub fn file(&mut self, path: impl AsRef<Path>) -> Result<&mut Self, HashError> {
        write_file(&mut self.hasher, path.as_ref())?;
        Ok(self)
    }

    /// Ends a closure passed to [`KeyHasher::component`] or [`Hashed::compute`]-style
    /// helpers that return `Result<(), HashError>`: `|h| h.str("...").done()`.
    pub fn done(&mut self) -> Result<(), HashError> {
        Ok(())
    }

    /// The digest of everything added so far. The hasher can go on taking more.
    pub fn finalize(&self) -> Digest {
        self.hasher.finalize().into()
    }
}

fn file_error(path: &Path, doing: &str, error: io::Error) -> HashError {
    let mut hash_error = HashError::from_source(error);
    hash_error.cause = format!(
        "cannot {doing} file '{}': {}",
        path.display(),
        hash_error.cause
    );
    hash_error
}

fn write_file(hasher: &mut blake3::Hasher, path: &Path) -> Result<(), HashError> {
    let mut file = File::open(path).map_err(|e| file_error(path, "open", e))?;
    let metadata = file
        .metadata()
        .map_err(|e| file_error(path, "inspect", e))?;
    if metadata.is_dir() {
        return Err(HashError::new(format!(
            "'{}' is a directory, not a file; hash the files in it (a FileInput each) or \
             give it a hash method",
            path.display()
        )));
    }
    if !metadata.is_file() {
        // A pipe or a device: its length is only known once it is read.
        let mut content = Vec::new();
        file.read_to_end(&mut content)
            .map_err(|e| file_error(path, "read", e))?;
        Encoder::hasher(hasher).write_bytes(&content);
        return Ok(());
    }
    let len = metadata.len();
    let mut encoder = Encoder::hasher(hasher);
    encoder.write_tag(tag::BYTES);
    encoder.write(&len.to_le_bytes());
    let read = if len <= FILE_CHUNK as u64 {
        let mut content = Vec::with_capacity(len as usize);
        let read = (&mut file).take(len + 1).read_to_end(&mut content);
        encoder.write(&content);
        read.map(|n| n as u64)
    } else {
        // Chunks that end where the hasher's count is a multiple of the chunk size let
        // BLAKE3 hash each one as a single subtree; misaligned ones split into dozens
        // of small subtrees (7 GiB/s instead of 8.7 measured for 1 GiB on 2 cores).
        let count = match &encoder.sink {
            Sink::Hasher(hasher) => hasher.count(),
            Sink::Buffer(_) => unreachable!("a hasher encoder"),
        };
        let first = (FILE_CHUNK - (count % FILE_CHUNK as u64) as usize) % FILE_CHUNK;
        read_overlapped(&mut file, first, |chunk| encoder.write(chunk))
    };
    let read = read.map_err(|e| file_error(path, "read", e))?;
    if read != len {
        // The length is already hashed: the digest would be of neither version.
        let change = if read < len { "shrank" } else { "grew" };
        return Err(HashError::new(format!(
            "file '{}' {change} while it was being hashed ({len} bytes, then {read})",
            path.display()
        )));
    }
    Ok(())
}

/// Reads `file` to its end and hands each chunk, in order, to `consume`: first
/// `first` bytes (if not 0), then `FILE_CHUNK`s. A second thread reads the next chunk
/// while `consume` hashes this one, which makes a file in the page cache hash about as
/// fast as the same bytes in memory. Returns the number of bytes read.
fn read_overlapped(
    file: &mut File,
    first: usize,
    mut consume: impl FnMut(&[u8]),
) -> io::Result<u64> {
    std::thread::scope(|scope| {
        // Two buffers go round: one being filled, one being hashed. Everything made
        // here is dropped before the scope joins the reader, so the reader never
        // waits on a channel nobody holds.
        let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<(Vec<u8>, usize)>>(1);
        let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(2);
        for _ in 0..2 {
            empty_tx
                .send(vec![0; FILE_CHUNK])
                .expect("room for two buffers");
        }
        scope.spawn(move || {
            let mut size = if first > 0 { first } else { FILE_CHUNK };
            while let Ok(mut buffer) = empty_rx.recv() {
                let filled = fill(file, &mut buffer[..size]);
                size = FILE_CHUNK;
                let last = !matches!(filled, Ok(n) if n > 0);
                if full_tx.send(filled.map(|n| (buffer, n))).is_err() || last {
                    break;
                }
            }
        });
        let mut total = 0u64;
        loop {
            match full_rx.recv() {
                Ok(Ok((_, 0))) => return Ok(total),
                Ok(Ok((buffer, n))) => {
                    consume(&buffer[..n]);
                    total += n as u64;
                    // The reader may have stopped already; the buffer is then unneeded.
                    let _ = empty_tx.send(buffer);
                }
                Ok(Err(error)) => return Err(error),
                Err(_) => return Err(io::Error::other("the file reader stopped")),
            }
        }
    })
}

/// Reads until `buffer` is full or the file ends; returns how much was read.
fn fill(file: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

// ---------------------------------------------------------------------------------
// Hash methods

/// A type that supplies its own digest for cache keys (Flyte's `HashMethod`): a data
/// frame by a digest of its columns, a model by its weights' checksum, a file by its
/// content.
///
/// The digest stands for the value in a key, encoded as `H` + its 32 bytes, so it can
/// never be mistaken for an ordinary value's encoding. Two values the method gives the
/// same digest share cache entries: make it as discriminating as the value's effect
/// on the result.
///
/// Pass such a value with [`KeyHasher::add_input_hash`], or inside a `Serialize` type
/// with `#[serde(serialize_with = "cairn::hashing::by_cache_hash")]`.
///
/// ```
/// use cairn::hashing::{CacheHash, ContentHasher, Digest, HashError, KeyHasher};
///
/// struct Model { name: String, weights: Vec<f32> }
///
/// impl CacheHash for Model {
///     fn cache_digest(&self) -> Result<Digest, HashError> {
///         let mut h = ContentHasher::new();
///         h.str(&self.name).value(&self.weights)?;
///         Ok(h.finalize())
///     }
/// }
///
/// let model = Model { name: "tiny".into(), weights: vec![0.5; 4] };
/// let mut key = KeyHasher::new();
/// key.add_input_hash("model", &model)?;
/// # Ok::<(), HashError>(())
/// ```
pub trait CacheHash {
    /// The digest that stands for `self` in cache keys.
    ///
    /// # Errors
    /// [`HashError`] when the value cannot be hashed; [`KeyHasher`] adds the input's
    /// name to it.
    fn cache_digest(&self) -> Result<Digest, HashError>;
}

impl<T: CacheHash + ?Sized> CacheHash for &T {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        (**self).cache_digest()
    }
}

impl<T: CacheHash + ?Sized> CacheHash for Box<T> {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        (**self).cache_digest()
    }
}

impl<T: CacheHash + ?Sized> CacheHash for std::sync::Arc<T> {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        (**self).cache_digest()
    }
}

impl CacheHash for Digest {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        Ok(*self)
    }
}

/// Serializes a [`CacheHash`] field by its digest, for
/// `#[serde(serialize_with = "cairn::hashing::by_cache_hash")]`.
///
/// When hashed, the field stands for its digest (`H` + 32 bytes); any other serializer
/// gets the digest as hex.
///
/// ```
/// use cairn::hashing::{hash_value, by_cache_hash, Hashed, ContentHasher};
/// use serde::Serialize;
///
/// struct Frame(Vec<u64>); // no Serialize
/// impl cairn::hashing::CacheHash for Frame {
///     fn cache_digest(&self) -> Result<cairn::hashing::Digest, cairn::hashing::HashError> {
///         cairn::hashing::hash_value(&self.0)
///     }
/// }
///
/// #[derive(Serialize)]
/// struct Inputs { #[serde(serialize_with = "by_cache_hash")] frame: Frame, limit: u32 }
///
/// let a = Inputs { frame: Frame(vec![1, 2, 3]), limit: 10 };
/// let b = Inputs { frame: Frame(vec![1, 2, 4]), limit: 10 };
/// assert_ne!(hash_value(&a)?, hash_value(&b)?);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
pub fn by_cache_hash<T, S>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: CacheHash + ?Sized,
    S: Serializer,
{
    if need() == Need::NotAByte {
        return serialize_not_a_byte(serializer);
    }
    let digest = value
        .cache_digest()
        .map_err(|e| S::Error::custom(e.cause()))?;
    serialize_as_digest(serializer, digest, &digest.to_hex())
}

/// A value with a declared digest: keys built from it use the digest, never the value.
///
/// This is how a task declares a hash for its output (Flyte's `Annotated[T,
/// HashMethod(f)]`): it returns `Hashed<T>`, computed once by [`Hashed::compute`] (a
/// hash method of your choice), [`Hashed::by_value`] (the canonical encoding, computed
/// once instead of at every downstream key) or [`Hashed::by_cache_hash`]; downstream
/// tasks that take it as an input are keyed by the digest.
///
/// `Hashed<T>` serializes as `T` to every serializer but cairn's hash encoder, so it
/// is stored exactly as `T` would be. It dereferences to `T`.
///
/// ```
/// use cairn::hashing::{hash_value, Hashed};
///
/// let rows = Hashed::by_value(vec![1u32, 2, 3])?;
/// assert_eq!(rows.digest(), hash_value(&vec![1u32, 2, 3])?);
/// assert_eq!(serde_json::to_string(&rows).unwrap(), "[1,2,3]"); // stored as the value
/// assert_eq!(hash_value(&rows)?, hash_value(&rows.digest())?);  // hashed as the digest
/// assert_eq!(rows.len(), 3);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashed<T> {
    value: T,
    digest: Digest,
}

impl<T> Hashed<T> {
    /// `value`, declared to have `digest`. The caller vouches for the digest.
    pub fn new(value: T, digest: Digest) -> Self {
        Hashed { value, digest }
    }

    /// `value` with the digest that `method` computes from it.
    ///
    /// # Errors
    /// Whatever `method` returns.
    pub fn compute(
        value: T,
        method: impl FnOnce(&T) -> Result<Digest, HashError>,
    ) -> Result<Self, HashError> {
        let digest = method(&value)?;
        Ok(Hashed { value, digest })
    }

    /// The declared digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The value, without its digest.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T: Serialize> Hashed<T> {
    /// `value` with its canonical digest ([`hash_value`]), computed once.
    ///
    /// # Errors
    /// [`HashError`] when the value cannot be hashed.
    pub fn by_value(value: T) -> Result<Self, HashError> {
        let digest = hash_value(&value)?;
        Ok(Hashed { value, digest })
    }
}

impl<T: CacheHash> Hashed<T> {
    /// `value` with the digest its [`CacheHash`] gives, computed once.
    ///
    /// # Errors
    /// Whatever [`CacheHash::cache_digest`] returns.
    pub fn by_cache_hash(value: T) -> Result<Self, HashError> {
        let digest = value.cache_digest()?;
        Ok(Hashed { value, digest })
    }
}

impl<T> std::ops::Deref for Hashed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> CacheHash for Hashed<T> {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        Ok(self.digest)
    }
}

impl<T: Serialize> Serialize for Hashed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_as_digest(serializer, self.digest, &self.value)
    }
}

/// Read back (from a target, checkpoint or cache record), a `Hashed<T>` is the value
/// with its canonical digest, as [`Hashed::by_value`] gives: the digest itself is not
/// stored, so that the stored bytes are exactly `T`'s. A task output declared with
/// `by_value` therefore keys downstream tasks the same whether it was computed or
/// read from a cache; a digest from another method is recomputed canonically.
///
/// ```
/// use cairn::hashing::Hashed;
/// let rows = Hashed::by_value(vec![1u32, 2, 3])?;
/// let back: Hashed<Vec<u32>> = serde_json::from_str(&serde_json::to_string(&rows).unwrap()).unwrap();
/// assert_eq!(back, rows);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
impl<'de, T: Serialize + serde::Deserialize<'de>> serde::Deserialize<'de> for Hashed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = T::deserialize(deserializer)?;
        Hashed::by_value(value).map_err(serde::de::Error::custom)
    }
}

/// A file input, keyed by its content rather than its path (see [`hash_file`]).
///
/// Moving or renaming the file keeps the key; changing a byte of it changes the key.
/// When hashed, the file is read (an unreadable file is a [`HashError`]); every other
/// serializer gets the path, so it is stored and shown as a path.
///
/// ```
/// use cairn::hashing::{hash_value, FileInput};
///
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("a.csv"), "x\n1\n").unwrap();
/// std::fs::write(dir.path().join("b.csv"), "x\n1\n").unwrap();
/// let a = FileInput::new(dir.path().join("a.csv"));
/// let b = FileInput::new(dir.path().join("b.csv"));
/// assert_eq!(hash_value(&a)?, hash_value(&b)?); // same content, different paths
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(transparent)]
pub struct FileInput {
    path: PathBuf,
}

impl FileInput {
    /// The file at `path`. Nothing is read until it is hashed.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileInput { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl CacheHash for FileInput {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        hash_file(&self.path)
    }
}

impl Serialize for FileInput {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match need() {
            Need::Value => return self.path.serialize(serializer),
            Need::NotAByte => return serialize_not_a_byte(serializer),
            Need::Digest => {}
        }
        let digest = hash_file(&self.path).map_err(|e| S::Error::custom(e.cause()))?;
        serialize_as_digest(serializer, digest, &self.path)
    }
}

/// Bytes that serialize as a byte string: `Blob(vec)` or `Blob(&slice)` hashes at
/// memory speed where a bare `Vec<u8>` goes through serde's element-by-element path.
/// Both give the same digest.
///
/// ```
/// use cairn::hashing::{hash_value, Blob};
///
/// let data = vec![7u8; 1 << 20];
/// assert_eq!(hash_value(&Blob(&data))?, hash_value(&data)?);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Blob<B>(pub B);

impl<B: AsRef<[u8]>> Serialize for Blob<B> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0.as_ref())
    }
}

/// A collection whose order does not matter, such as a `HashSet`: hashed as its
/// elements sorted by their encoding (tag `A`), so its iteration order never changes
/// a key. Every other serializer sees the collection unchanged.
///
/// A bare `HashSet` serializes as a list in its per-process random order, so its key
/// would change from run to run; wrap it, use a `BTreeSet`, or mark the field
/// `#[serde(serialize_with = "cairn::hashing::unordered")]`.
///
/// ```
/// use std::collections::HashSet;
/// use cairn::hashing::{hash_value, Unordered};
///
/// let a: HashSet<&str> = ["x", "y", "z"].into();
/// let b: HashSet<&str> = ["z", "x", "y"].into();
/// assert_eq!(hash_value(&Unordered(&a))?, hash_value(&Unordered(&b))?);
/// assert_eq!(hash_value(&Unordered(vec![2, 1]))?, hash_value(&Unordered([1, 2]))?);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unordered<C>(pub C);

impl<C: Serialize> Serialize for Unordered<C> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(UNORDERED_MARKER, &self.0)
    }
}

/// Serializes a collection field as [`Unordered`], for
/// `#[serde(serialize_with = "cairn::hashing::unordered")]`.
pub fn unordered<T, S>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: Serialize + ?Sized,
    S: Serializer,
{
    serializer.serialize_newtype_struct(UNORDERED_MARKER, value)
}

// ---------------------------------------------------------------------------------
// Keys

/// Builds a cache key from named inputs and named components.
///
/// Each input and each component is hashed on its own (so an error names it, and the
/// digests can be recorded to explain a miss); the key is the [`hash_value`] of the
/// tuple `("cairn-key", KEY_FORMAT_VERSION, components, inputs)`, where `components`
/// and `inputs` are maps from name to digest. The order in which inputs and components
/// are added does not matter; a name can be added only once.
///
/// ```
/// use cairn::hashing::{KeyHasher, KEY_FORMAT_VERSION};
///
/// let mut a = KeyHasher::new();
/// a.add_input("x", &1u32)?.add_input("y", "text")?;
/// a.component("version", |h| h.str("1.0").done())?;
///
/// let mut b = KeyHasher::new();
/// b.component("version", |h| h.str("1.0").done())?;
/// b.add_input("y", "text")?.add_input("x", &1u64)?;
/// assert_eq!(a.finish(), b.finish());
///
/// // An input that cannot be hashed is an error that names it.
/// struct Connection;
/// impl serde::Serialize for Connection {
///     fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
///         Err(serde::ser::Error::custom("a live connection cannot be serialized"))
///     }
/// }
/// let err = a.add_input("conn", &Connection).unwrap_err();
/// assert_eq!(err.input(), Some("conn"));
/// assert_eq!(
///     err.to_string(),
///     "input 'conn' cannot be hashed: a live connection cannot be serialized; exclude it \
///      from the cache key (e.g. INPUTS - \"conn\") or give it a hash method (implement \
///      CacheHash, or wrap it in Hashed or FileInput)",
/// );
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct KeyHasher {
    components: BTreeMap<String, Digest>,
    inputs: BTreeMap<String, Digest>,
}

impl KeyHasher {
    /// A key with no inputs and no components yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the input `name` with the canonical digest of `value`.
    ///
    /// # Errors
    /// [`HashError`] naming the input when it cannot be hashed, or when an input of
    /// that name was already added.
    pub fn add_input<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<&mut Self, HashError> {
        let subject = Subject::Input(name.to_owned());
        let digest = hash_value(value).map_err(|e| e.with_subject(subject))?;
        self.add_input_digest(name, digest)
    }

    /// Adds the input `name`, keyed by its own digest ([`CacheHash`]: a [`Hashed`]
    /// output of an upstream task, a [`FileInput`], a type's hash method).
    ///
    /// # Errors
    /// [`HashError`] naming the input when its hash method fails, or when an input of
    /// that name was already added.
    pub fn add_input_hash<T: CacheHash + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<&mut Self, HashError> {
        let subject = Subject::Input(name.to_owned());
        let digest = value.cache_digest().map_err(|e| e.with_subject(subject))?;
        self.add_input_digest(name, digest)
    }

    /// Adds the input `name` with a digest computed elsewhere.
    ///
    /// # Errors
    /// [`HashError`] when an input of that name was already added.
    pub fn add_input_digest(&mut self, name: &str, digest: Digest) -> Result<&mut Self, HashError> {
        if self.inputs.insert(name.to_owned(), digest).is_some() {
            return Err(HashError::new("an input of this name was already added")
                .with_subject(Subject::Input(name.to_owned())));
        }
        Ok(self)
    }

    /// Adds the component `name` (task source, run id, a version, a salt, flow
    /// parameters, ...): whatever `write` adds to the [`ContentHasher`] it is given.
    ///
    /// # Errors
    /// [`HashError`] naming the component when `write` fails, or when a component of
    /// that name was already added.
    pub fn component(
        &mut self,
        name: &str,
        write: impl FnOnce(&mut ContentHasher) -> Result<(), HashError>,
    ) -> Result<&mut Self, HashError> {
        let subject = Subject::Component(name.to_owned());
        let mut hasher = ContentHasher::new();
        write(&mut hasher).map_err(|e| e.with_subject(subject.clone()))?;
        if self.components.contains_key(name) {
            return Err(
                HashError::new("a component of this name was already added").with_subject(subject)
            );
        }
        self.components.insert(name.to_owned(), hasher.finalize());
        Ok(self)
    }

    /// Adds the component `name` with the canonical digest of `value` (the same as
    /// `component(name, |h| h.value(value).map(|_| ()))`).
    ///
    /// # Errors
    /// [`HashError`] naming the component when `value` cannot be hashed, or when a
    /// component of that name was already added.
    pub fn component_value<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<&mut Self, HashError> {
        self.component(name, |h| h.value(value).map(|_| ()))
    }

    /// Adds the component `name` with a digest computed elsewhere (the same as
    /// `component(name, |h| h.digest(&digest).done())` would give if `digest` were
    /// the digest of what `write` adds — i.e. the component's digest itself).
    ///
    /// # Errors
    /// [`HashError`] when a component of that name was already added.
    pub fn component_digest(&mut self, name: &str, digest: Digest) -> Result<&mut Self, HashError> {
        if self.components.contains_key(name) {
            return Err(HashError::new("a component of this name was already added")
                .with_subject(Subject::Component(name.to_owned())));
        }
        self.components.insert(name.to_owned(), digest);
        Ok(self)
    }

    /// The digest of each input added, by name.
    pub fn inputs(&self) -> &BTreeMap<String, Digest> {
        &self.inputs
    }

    /// The digest of each component added, by name.
    pub fn components(&self) -> &BTreeMap<String, Digest> {
        &self.components
    }

    /// The key.
    pub fn finish(&self) -> Digest {
        let mut components: Vec<(&str, Digest)> = self
            .components
            .iter()
            .map(|(n, d)| (n.as_str(), *d))
            .collect();
        let mut inputs: Vec<(&str, Digest)> =
            self.inputs.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        key_from_parts(&mut components, &mut inputs).expect("map keys are distinct")
    }
}

/// The key [`KeyHasher::finish`] gives for these components and inputs — exactly
/// `hash_value(&("cairn-key", KEY_FORMAT_VERSION, components, inputs))` with both as
/// maps — written out directly into one buffer and hashed in one call, since it runs
/// on every cached call.
///
/// # Errors
/// [`HashError`] naming the name that appears twice in one list.
pub(crate) fn key_from_parts(
    components: &mut [(&str, Digest)],
    inputs: &mut [(&str, Digest)],
) -> Result<Digest, HashError> {
    let mut encoder = Encoder {
        sink: Sink::Buffer(Vec::with_capacity(
            64 + 64 * (components.len() + inputs.len()),
        )),
    };
    encoder.write_tag(tag::LIST);
    encoder.write_len(4);
    encoder.write_str("cairn-key");
    encoder.write_int(false, u128::from(KEY_FORMAT_VERSION));
    write_digest_map(&mut encoder, components).map_err(|n| {
        HashError::new("a component of this name was already added")
            .with_subject(Subject::Component(n))
    })?;
    write_digest_map(&mut encoder, inputs).map_err(|n| {
        HashError::new("an input of this name was already added").with_subject(Subject::Input(n))
    })?;
    Ok(blake3::hash(encoder.buffered()).into())
}

/// A map from names to digests, encoded as the serde path encodes it: entries sorted
/// by their bytes. Each entry's key encoding (`S`, the length as `u64` LE, the UTF-8
/// bytes) decides its place. Returns a name that appears twice.
fn write_digest_map(
    encoder: &mut Encoder<'_>,
    entries: &mut [(&str, Digest)],
) -> Result<(), String> {
    if !entries
        .windows(2)
        .all(|w| entry_order(w[0].0, w[1].0).is_lt())
    {
        entries.sort_unstable_by(|a, b| entry_order(a.0, b.0));
        if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(w[0].0.to_owned());
        }
    }
    encoder.write_tag(tag::MAP);
    encoder.write_len(entries.len());
    for (name, digest) in entries.iter() {
        encoder.write_str(name);
        encoder.write_digest(&digest.0);
    }
    Ok(())
}

/// The order of two map entries with these (distinct) names in the encoding.
fn entry_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len() as u64)
        .to_le_bytes()
        .cmp(&(b.len() as u64).to_le_bytes())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

#[cfg(test)]
mod key_finish_tests {
    use super::*;

    #[test]
    fn the_direct_key_encoding_is_the_serde_one() {
        // Names of many lengths, including lengths whose little-endian bytes sort
        // differently from their numeric order (255 vs 256, 1 vs 256).
        let lengths = [0usize, 1, 2, 7, 8, 9, 255, 256, 257, 300, 511, 512, 1000];
        for round in 0..20u32 {
            let mut key = KeyHasher::new();
            for (i, len) in lengths.iter().enumerate() {
                if (round as usize + i) % 3 == 0 {
                    continue;
                }
                let name: String =
                    std::iter::repeat_n(char::from(b'a' + (i as u8 % 26)), *len).collect();
                key.add_input(&name, &(round, i)).unwrap();
                key.component_value(&format!("{name}c"), &i).unwrap();
            }
            let serde_path = hash_value(&(
                "cairn-key",
                KEY_FORMAT_VERSION,
                key.components(),
                key.inputs(),
            ))
            .unwrap();
            assert_eq!(key.finish(), serde_path, "round {round}");
        }
        assert_eq!(
            KeyHasher::new().finish(),
            hash_value(&(
                "cairn-key",
                KEY_FORMAT_VERSION,
                BTreeMap::<String, Digest>::new(),
                BTreeMap::<String, Digest>::new()
            ))
            .unwrap()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

    use bytes::Bytes;
    use rand::seq::SliceRandom;
    use serde::Serialize;

    use super::*;

    fn hex(value: &(impl Serialize + ?Sized)) -> String {
        hash_value(value).unwrap().to_hex()
    }

    /// The documented encoding, written out by hand.
    struct Manual(Vec<u8>);

    impl Manual {
        fn new() -> Self {
            Manual(Vec::new())
        }
        fn tag(mut self, tag: u8) -> Self {
            self.0.push(tag);
            self
        }
        fn len(mut self, len: u64) -> Self {
            self.0.extend_from_slice(&len.to_le_bytes());
            self
        }
        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn int(self, value: i128) -> Self {
            self.tag(b'I')
                .raw(&[u8::from(value < 0)])
                .raw(&value.unsigned_abs().to_le_bytes())
        }
        fn str(self, s: &str) -> Self {
            self.tag(b'S').len(s.len() as u64).raw(s.as_bytes())
        }
        fn digest(self) -> String {
            blake3::hash(&self.0).to_hex().to_string()
        }
    }

    #[derive(Serialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Serialize)]
    struct PointReordered {
        y: i64,
        x: i64,
    }

    #[derive(Serialize)]
    struct PointRenamed {
        #[serde(rename = "horizontal")]
        x: i32,
        y: i32,
    }

    #[derive(Serialize)]
    struct Wrapper(u16);

    #[derive(Serialize)]
    struct Marker;

    #[derive(Serialize)]
    enum Shape {
        Empty,
        Circle(f64),
        Segment(i32, i32),
        Rect { w: u32, h: u32 },
    }

    #[derive(Serialize)]
    enum Other {
        Circle(f64),
    }

    #[test]
    fn encoding_matches_the_documented_bytes() {
        assert_eq!(hex(&()), Manual::new().tag(b'U').digest());
        assert_eq!(hex(&false), Manual::new().raw(b"B\x00").digest());
        assert_eq!(hex(&-2i8), Manual::new().int(-2).digest());
        assert_eq!(
            hex(&u128::MAX),
            Manual::new().tag(b'I').raw(&[0]).raw(&[0xFF; 16]).digest()
        );
        assert_eq!(hex(&i128::MIN), Manual::new().int(i128::MIN).digest());
        assert_eq!(
            hex(&1.5f32),
            Manual::new()
                .tag(b'F')
                .raw(&1.5f64.to_bits().to_le_bytes())
                .digest()
        );
        assert_eq!(
            hex(&f64::NAN),
            Manual::new()
                .tag(b'F')
                .raw(&0x7FF8_0000_0000_0000u64.to_le_bytes())
                .digest()
        );
        assert_eq!(hex(&-0.0f64), Manual::new().tag(b'F').raw(&[0; 8]).digest());
        assert_eq!(hex("héllo"), Manual::new().str("héllo").digest());
        assert_eq!(hex(&'✓'), Manual::new().str("✓").digest());
        assert_eq!(hex(&None::<u8>), Manual::new().tag(b'N').digest());
        assert_eq!(
            hex(&Some(Some(3u8))),
            Manual::new().tag(b'P').tag(b'P').int(3).digest()
        );
        assert_eq!(
            hex(&vec![1u8, 2, 255]),
            Manual::new().tag(b'R').len(3).raw(&[1, 2, 255]).digest()
        );
        assert_eq!(
            hex(&vec![1u16, 256]),
            Manual::new().tag(b'L').len(2).int(1).int(256).digest()
        );
        assert_eq!(
            hex(&("ab", true)),
            Manual::new()
                .tag(b'L')
                .len(2)
                .str("ab")
                .raw(b"B\x01")
                .digest()
        );
        // Entries sorted by their encoding: "a" (S, len 1, 'a') before "b".
        let map: HashMap<&str, i32> = [("b", 1), ("a", -1)].into();
        assert_eq!(
            hex(&map),
            Manual::new()
                .tag(b'M')
                .len(2)
                .str("a")
                .int(-1)
                .str("b")
                .int(1)
                .digest()
        );
        assert_eq!(
            hex(&Point { x: 1, y: 2 }),
            Manual::new()
                .tag(b'M')
                .len(2)
                .str("x")
                .int(1)
                .str("y")
                .int(2)
                .digest()
        );
        assert_eq!(
            hex(&Shape::Empty),
            Manual::new()
                .tag(b'E')
                .len(5)
                .raw(b"Empty")
                .tag(b'U')
                .digest()
        );
        assert_eq!(
            hex(&Shape::Segment(-1, 300)),
            Manual::new()
                .tag(b'E')
                .len(7)
                .raw(b"Segment")
                .tag(b'L')
                .len(2)
                .int(-1)
                .int(300)
                .digest()
        );
        assert_eq!(
            hex(&Shape::Rect { w: 3, h: 4 }),
            Manual::new()
                .tag(b'E')
                .len(4)
                .raw(b"Rect")
                .tag(b'M')
                .len(2)
                .str("h")
                .int(4)
                .str("w")
                .int(3)
                .digest()
        );
        let digest = Digest::from_bytes([7; 32]);
        assert_eq!(hex(&digest), Manual::new().tag(b'H').raw(&[7; 32]).digest());
        assert_eq!(
            hex(&Unordered(vec!["b", "a"])),
            Manual::new().tag(b'A').len(2).str("a").str("b").digest()
        );
    }

    /// Values whose digests are pinned: any change to the encoding fails here.
    fn golden_values() -> Vec<(&'static str, String)> {
        let mut nested: BTreeMap<String, BTreeMap<u32, Vec<&str>>> = BTreeMap::new();
        nested
            .entry("b".into())
            .or_default()
            .insert(2, vec!["x", "y"]);
        nested.entry("a".into()).or_default().insert(1, vec![]);
        vec![
            ("unit", hex(&())),
            ("true", hex(&true)),
            ("0", hex(&0u8)),
            ("1", hex(&1u8)),
            ("-1", hex(&-1i32)),
            ("i64::MIN", hex(&i64::MIN)),
            ("u128::MAX", hex(&u128::MAX)),
            ("0.0", hex(&0.0f64)),
            ("1.5", hex(&1.5f64)),
            ("-2.25", hex(&-2.25f32)),
            ("NaN", hex(&f64::NAN)),
            ("inf", hex(&f64::INFINITY)),
            ("empty string", hex("")),
            ("unicode string", hex("héllo wörld ✓ 🦀")),
            ("None", hex(&None::<u8>)),
            ("Some(0)", hex(&Some(0u8))),
            ("Some(None)", hex(&Some(None::<u8>))),
            ("bytes [1,2,3]", hex(&vec![1u8, 2, 3])),
            ("empty list", hex(&Vec::<String>::new())),
            ("list [1,300]", hex(&vec![1u32, 300])),
            ("tuple (\"a\",1)", hex(&("a", 1u8))),
            ("nested map", hex(&nested)),
            ("struct Point", hex(&Point { x: 1, y: -2 })),
            ("struct renamed", hex(&PointRenamed { x: 1, y: -2 })),
            ("newtype", hex(&Wrapper(7))),
            ("unit struct", hex(&Marker)),
            ("unit variant", hex(&Shape::Empty)),
            ("newtype variant", hex(&Shape::Circle(0.5))),
            ("tuple variant", hex(&Shape::Segment(1, 2))),
            ("struct variant", hex(&Shape::Rect { w: 3, h: 4 })),
            ("digest", hex(&Digest::from_bytes([0xAB; 32]))),
            ("unordered", hex(&Unordered(vec![3u8, 1, 2]))),
            ("key", {
                let mut key = KeyHasher::new();
                key.add_input("n", &3u32).unwrap();
                key.component("version", |h| h.str("1.0").done()).unwrap();
                key.finish().to_hex()
            }),
        ]
    }

    const GOLDEN: &[(&str, &str)] = &[
        (
            "unit",
            "e04188fed98bfc7ab50f3310b8558c54f19d24a6fc3506d16c270053404c07b5",
        ),
        (
            "true",
            "fe64154e3703932eed835fa3053c2e8a50a961669916f1613a8be58ef73a9fbb",
        ),
        (
            "0",
            "fb34201a76eef694a67d05a6411de297e27ed1477694f2b91e2beb5db48da749",
        ),
        (
            "1",
            "ccaba0614a2e2fc992a396cfeb1f5fddf9baa81bc12b91df90bf79e3100af315",
        ),
        (
            "-1",
            "17a6e9e719f8441586271fa11753e53b6e8f4da6464bdf09615dd00023ee7d64",
        ),
        (
            "i64::MIN",
            "111a1a23533782572600396d69cee5a111af36d24ec3f4ad03dc204263ef91ef",
        ),
        (
            "u128::MAX",
            "62cbb37dae53e48c350813f308108d6c71bf9a247e6a2efdfa4833c8afcfefc5",
        ),
        (
            "0.0",
            "4ce04b1c3b07c09e71d91bfade9974b404defe7c67ce13afc780509125f3b881",
        ),
        (
            "1.5",
            "5a9ac2af4eb411cf9bb011d2d6c2c06f95abafe43130444bf1a3782601877142",
        ),
        (
            "-2.25",
            "bc9dc95ccb0f01f16b91cc370205f2ef7cf766ee25c8364c5fcff9e7de749dab",
        ),
        (
            "NaN",
            "2612169b36c14a36388a234c28c28202393587d3bf2c6460330ed31e25b39ad2",
        ),
        (
            "inf",
            "8c1febe26fc1a545c616d6b2b7121a9ad379bdb11b1178921c3330074177c966",
        ),
        (
            "empty string",
            "bbd8983ced369aba5472beaa61b7baaa5a80ef0457452fe33ef77ca36747d188",
        ),
        (
            "unicode string",
            "279b978f35a43fd9e30729181e958afcde0b3c75060ca3aa1e07d5d4d7569a06",
        ),
        (
            "None",
            "34ab8b65c2622b75106dba567a23b032357b6f78bb9893221cf5c4a61cfc4689",
        ),
        (
            "Some(0)",
            "4cbbbbb0aa5cd0a31dd6b6a78a872b27d581c176354bb27e8ea720482f78a086",
        ),
        (
            "Some(None)",
            "c3a5876693e1a179a01a979b80cbeea2bb8fb72e6a0954025d2f8a10140ba979",
        ),
        (
            "bytes [1,2,3]",
            "2177406cb5087d73ba27f6367ce5b97dbf395c9951b631707f267e8951e9c7d0",
        ),
        (
            "empty list",
            "603d6683f52531e9bf5fb542d74f6fa0c712863f18d53683b28837641010f5e4",
        ),
        (
            "list [1,300]",
            "575d4ea73b9a84779d471cbe60105f1222fed04482062b1bcc0d1c17bab30c2a",
        ),
        (
            "tuple (\"a\",1)",
            "06629881a42a3ca826f449f9004ca172061dba111fd86cca63c826375e1b84b4",
        ),
        (
            "nested map",
            "7df02384a2944484b658e7a151004413f18fc9bd8ec9c8900bd10e1068dbd344",
        ),
        (
            "struct Point",
            "85762dae31098ff8d3324ce149838ffb050544301deb98a7bb50d8f816caa8bf",
        ),
        (
            "struct renamed",
            "cb47d7a38724a25aaa06712fa0c22c7c913c18d026c3119c60ca5182ffe11b53",
        ),
        (
            "newtype",
            "1a80807fdc71d0cf66edd16cb318954b086b1358f8645684ad814c596eed54c0",
        ),
        (
            "unit struct",
            "e04188fed98bfc7ab50f3310b8558c54f19d24a6fc3506d16c270053404c07b5",
        ),
        (
            "unit variant",
            "34202cdfed7f65bc05431f59b4d82eeccad198b060fcde9c8e3bd46c355da48b",
        ),
        (
            "newtype variant",
            "0251e6cc85ae97ba412443efaf4ae93155b9760a0bfb754fd8226c5dc4df3e86",
        ),
        (
            "tuple variant",
            "3a105ab540e8d1353e264e33d8d03034e0f803b5ad60af8929591ad579f35afa",
        ),
        (
            "struct variant",
            "bd7f548bb34a7b875146fd977c955ba3279e256df1fabf3dc0cdbc807bd3939c",
        ),
        (
            "digest",
            "f1b5a0439257bdbd0e504006afae620a48d938cda6dc3c0f16b2072e229d1dd4",
        ),
        (
            "unordered",
            "64dbb59ce8e21f96d48eed0d160431054f0199ff32783487139a003e86461e4c",
        ),
        (
            "key",
            "163669974d3eea66da453090933209bb3dbdee4896b04ee0085ff8d768c5d4d3",
        ),
    ];

    #[test]
    fn golden_vectors_pin_the_encoding() {
        let actual = golden_values();
        assert_eq!(actual.len(), GOLDEN.len());
        for ((name, digest), (pinned_name, pinned)) in actual.iter().zip(GOLDEN) {
            assert_eq!(name, pinned_name);
            assert_eq!(
                digest, pinned,
                "the digest of {name} changed: the encoding changed"
            );
        }
    }

    #[test]
    fn the_key_is_the_documented_tuple_of_digests() {
        let input = Manual::new().int(3).digest();
        let version = Manual::new().str("1.0").digest();
        let key = Manual::new()
            .tag(b'L')
            .len(4)
            .str("cairn-key")
            .int(i128::from(KEY_FORMAT_VERSION))
            .tag(b'M')
            .len(1)
            .str("version")
            .tag(b'H')
            .raw(version.parse::<Digest>().unwrap().as_bytes())
            .tag(b'M')
            .len(1)
            .str("n")
            .tag(b'H')
            .raw(input.parse::<Digest>().unwrap().as_bytes())
            .digest();
        let golden = GOLDEN.iter().find(|(name, _)| *name == "key").unwrap().1;
        assert_eq!(key, golden);
    }

    #[test]
    fn equal_values_of_different_types_hash_alike() {
        // Integers by value, whatever their width or signedness.
        assert_eq!(hex(&1u8), hex(&1i64));
        assert_eq!(hex(&1u8), hex(&1u128));
        assert_eq!(hex(&-5i8), hex(&-5i128));
        assert_eq!(hex(&7usize), hex(&7u32));
        // Floats canonical: widened to f64, one zero, one NaN.
        assert_eq!(hex(&1.5f32), hex(&1.5f64));
        assert_eq!(hex(&-0.0f64), hex(&0.0f64));
        assert_eq!(hex(&-0.0f32), hex(&0.0f64));
        assert_eq!(hex(&f64::NAN), hex(&-f64::NAN));
        assert_eq!(hex(&f64::NAN), hex(&f32::NAN));
        assert_eq!(hex(&f64::NAN), hex(&f64::from_bits(0x7FF0_0000_0000_0001)));
        // Strings and chars.
        assert_eq!(hex(&'x'), hex("x"));
        assert_eq!(hex("x"), hex(&String::from("x")));
        // Byte strings and lists of small integers.
        let data = [1u8, 2, 3];
        assert_eq!(hex(&data), hex(&data.to_vec()));
        assert_eq!(hex(&data), hex(&Bytes::from_static(&[1, 2, 3])));
        assert_eq!(hex(&data), hex(&Blob(&data)));
        assert_eq!(hex(&data), hex(&(1u8, 2u16, 3i64)));
        assert_eq!(hex(&data), hex(&vec![Wrapper(1), Wrapper(2), Wrapper(3)]));
        assert_eq!(hex(&Vec::<String>::new()), hex(&Bytes::new()));
        // Tuples are lists; structs are maps; newtypes are transparent.
        assert_eq!(hex(&(1u32, 300u32)), hex(&vec![1u64, 300]));
        assert_eq!(
            hex(&Point { x: 1, y: 2 }),
            hex(&PointReordered { y: 2, x: 1 })
        );
        let as_map: BTreeMap<&str, i32> = [("x", 1), ("y", 2)].into();
        assert_eq!(hex(&Point { x: 1, y: 2 }), hex(&as_map));
        assert_eq!(hex(&Wrapper(7)), hex(&7u8));
        assert_eq!(hex(&Marker), hex(&()));
        // Enums by variant name, not by the enum's name.
        assert_eq!(hex(&Shape::Circle(1.0)), hex(&Other::Circle(1.0)));
        // A declared digest stands for what it digests.
        let digest = Digest::from_bytes([1; 32]);
        assert_eq!(hex(&Hashed::new("anything", digest)), hex(&digest));
    }

    #[test]
    fn different_values_hash_differently() {
        let distinct = [
            hex(&()),
            hex(&None::<u8>),
            hex(&Some(())),
            hex(&Some(None::<u8>)),
            hex(&false),
            hex(&0u8),
            hex(&0.0f64),
            hex(""),
            hex(&Vec::<u8>::new()),
            hex(&Some("")),
            hex(&1u8),
            hex(&-1i8),
            hex(&1.0f64),
            hex("1"),
            hex(&vec![1u8]),
            hex(&Some(1u8)),
            hex(&Shape::Empty),
            hex("Empty"),
            hex(&Point { x: 1, y: 2 }),
            hex(&PointRenamed { x: 1, y: 2 }),
            hex(&Point { x: 2, y: 1 }),
            hex(&vec![1u32, 300]),
            hex(&vec![300u32, 1]),
            hex(&Unordered(vec![1u32, 300])),
            hex(&Shape::Segment(1, 2)),
            hex(&Shape::Rect { w: 1, h: 2 }),
            hex(&Digest::from_bytes([0; 32])),
            hex(&Blob([0u8; 32])),
            hex(&vec!["a", "bc"]),
            hex(&vec!["ab", "c"]),
            hex(&("a", ("b", "c"))),
            hex(&(("a", "b"), "c")),
        ];
        let unique: HashSet<&String> = distinct.iter().collect();
        assert_eq!(unique.len(), distinct.len());
    }

    #[test]
    fn hashmap_order_never_matters() {
        let mut entries: Vec<(String, BTreeMap<String, f64>)> = (0..200)
            .map(|i| {
                let inner = (0..5)
                    .map(|j| (format!("k{j}"), f64::from(i * j)))
                    .collect();
                (format!("entry-{i}"), inner)
            })
            .collect();
        let ordered: BTreeMap<_, _> = entries.iter().cloned().collect();
        let expected = hex(&ordered);
        let mut rng = rand::rng();
        let mut digests = HashSet::new();
        for _ in 0..100 {
            entries.shuffle(&mut rng);
            let map: HashMap<String, HashMap<String, f64>> = entries
                .iter()
                .map(|(k, inner)| (k.clone(), inner.clone().into_iter().collect()))
                .collect();
            digests.insert(hex(&map));
        }
        assert_eq!(digests.into_iter().collect::<Vec<_>>(), vec![expected]);
    }

    #[test]
    fn hashset_order_never_matters_when_unordered() {
        let items: Vec<String> = (0..100).map(|i| format!("item-{i}")).collect();
        let a: HashSet<&String> = items.iter().collect();
        let b: HashSet<&String> = items.iter().rev().collect();
        assert_eq!(hex(&Unordered(&a)), hex(&Unordered(&b)));
        let sorted: BTreeSet<&String> = items.iter().collect();
        assert_eq!(hex(&Unordered(&a)), hex(&Unordered(&sorted)));

        #[derive(Serialize)]
        struct Tags {
            #[serde(serialize_with = "unordered")]
            tags: HashSet<String>,
        }
        let one = Tags {
            tags: items.iter().cloned().collect(),
        };
        let two = Tags {
            tags: items.iter().rev().cloned().collect(),
        };
        assert_eq!(hex(&one), hex(&two));

        let err = hash_value(&Unordered(3u8)).unwrap_err();
        assert!(err.cause().contains("must wrap a sequence"), "{err}");
    }

    #[test]
    fn large_bytes_hash_on_all_cores_with_the_documented_framing() {
        let data: Vec<u8> = (0..64u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let data = Bytes::from(data);
        let mut framed = vec![b'R'];
        framed.extend_from_slice(&(data.len() as u64).to_le_bytes());
        let mut expected = blake3::Hasher::new();
        expected.update(&framed).update(&data);

        let before = PARALLEL_UPDATES.with(Cell::get);
        let digest = hash_value(&data).unwrap();
        assert_eq!(digest, Digest::from(expected.finalize()));
        assert!(
            PARALLEL_UPDATES.with(Cell::get) > before,
            "the parallel path was not taken"
        );

        let mut h = ContentHasher::new();
        h.bytes(&data);
        assert_eq!(h.finalize(), digest);
        assert_eq!(hash_value(&Blob(&data)).unwrap(), digest);
    }

    #[test]
    fn a_vec_of_bytes_hashes_like_bytes() {
        let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
        assert_eq!(hex(&data), hex(&Bytes::from(data.clone())));
        let nested = vec![data.clone(), vec![]];
        assert_eq!(hex(&nested), hex(&vec![Blob(&data[..]), Blob(&[][..])]));
    }

    /// A list that does not declare its length.
    struct Unsized<T>(Vec<T>);

    impl<T: Serialize> Serialize for Unsized<T> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = serializer.serialize_seq(None)?;
            for item in &self.0 {
                seq.serialize_element(item)?;
            }
            seq.end()
        }
    }

    #[test]
    fn lists_of_unknown_length_hash_like_known_ones() {
        assert_eq!(hex(&Unsized(vec![1u8, 2])), hex(&vec![1u8, 2]));
        assert_eq!(
            hex(&Unsized(vec![1u32, 2, 3000])),
            hex(&vec![1u32, 2, 3000])
        );
        assert_eq!(hex(&Unsized(vec!["a", "b"])), hex(&vec!["a", "b"]));
        assert_eq!(hex(&Unsized(Vec::<u8>::new())), hex(&Vec::<u8>::new()));
        // A list that starts with bytes and goes on with something else.
        let mixed = serde_json::json!([1, 2, "three", [4]]);
        assert_eq!(
            hex(&mixed),
            Manual::new()
                .tag(b'L')
                .len(4)
                .int(1)
                .int(2)
                .str("three")
                .tag(b'R')
                .len(1)
                .raw(&[4])
                .digest()
        );
    }

    /// A value that refuses to be serialized, like a live connection.
    struct Connection;

    impl Serialize for Connection {
        fn serialize<S: Serializer>(&self, _serializer: S) -> Result<S::Ok, S::Error> {
            Err(S::Error::custom("a live connection cannot be serialized"))
        }
    }

    #[derive(Serialize)]
    struct Pool {
        name: String,
        connections: Vec<Connection>,
    }

    #[derive(Serialize)]
    struct Config {
        pools: BTreeMap<String, Pool>,
    }

    #[test]
    fn an_unhashable_input_is_an_error_naming_it_and_where() {
        let config = Config {
            pools: [(
                "main".to_string(),
                Pool {
                    name: "main".into(),
                    connections: vec![Connection],
                },
            )]
            .into(),
        };
        let mut key = KeyHasher::new();
        let err = key.add_input("config", &config).unwrap_err();
        assert_eq!(err.input(), Some("config"));
        assert_eq!(err.path(), ".pools[\"main\"].connections[0]");
        assert_eq!(err.cause(), "a live connection cannot be serialized");
        assert_eq!(
            err.to_string(),
            "input 'config' cannot be hashed at `.pools[\"main\"].connections[0]`: a live \
             connection cannot be serialized; exclude it from the cache key (e.g. INPUTS - \
             \"config\") or give it a hash method (implement CacheHash, or wrap it in Hashed \
             or FileInput)"
        );
        assert!(
            key.inputs().is_empty(),
            "a failed input must not be part of the key"
        );

        let err = hash_value(&(1u8, Connection)).unwrap_err();
        assert_eq!(err.path(), "[1]");
        assert!(err
            .to_string()
            .starts_with("value cannot be hashed at `[1]`: "));

        let err = KeyHasher::new()
            .component("salt", |h| h.value(&Connection).map(|_| ()))
            .unwrap_err();
        assert_eq!(err.component(), Some("salt"));
        assert!(err
            .to_string()
            .starts_with("cache key component 'salt' cannot be hashed: "));

        let as_cairn: crate::Error = KeyHasher::new()
            .add_input("conn", &Connection)
            .unwrap_err()
            .into();
        assert_eq!(as_cairn.kind(), crate::ErrorKind::Config);
        assert!(as_cairn
            .to_string()
            .contains("input 'conn' cannot be hashed"));
        assert!(!as_cairn.is_retryable());
    }

    #[test]
    fn errors_in_map_keys_enums_and_sequences_are_located() {
        let mut map: HashMap<u32, Vec<Connection>> = HashMap::new();
        map.insert(7, vec![Connection]);
        assert_eq!(hash_value(&map).unwrap_err().path(), "[7][0]");

        #[derive(Serialize)]
        enum Job {
            Run { conn: Connection },
        }
        assert_eq!(
            hash_value(&Job::Run { conn: Connection })
                .unwrap_err()
                .path(),
            "::Run.conn"
        );

        /// Declares three elements and produces one.
        struct LyingSeq;
        impl Serialize for LyingSeq {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = serializer.serialize_seq(Some(3))?;
                seq.serialize_element("one")?;
                seq.end()
            }
        }
        let err = hash_value(&LyingSeq).unwrap_err();
        assert!(
            err.cause().contains("declared 3 elements but produced 1"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_names_are_errors() {
        let mut key = KeyHasher::new();
        key.add_input("x", &1u8).unwrap();
        assert_eq!(key.add_input("x", &2u8).unwrap_err().input(), Some("x"));
        key.component("salt", |h| h.str("a").done()).unwrap();
        let err = key.component("salt", |h| h.str("b").done()).unwrap_err();
        assert_eq!(err.component(), Some("salt"));
    }

    #[test]
    fn keys_do_not_depend_on_the_order_inputs_are_added() {
        let mut a = KeyHasher::new();
        a.add_input("x", &1u8).unwrap().add_input("y", "y").unwrap();
        let mut b = KeyHasher::new();
        b.add_input("y", "y").unwrap().add_input("x", &1u8).unwrap();
        assert_eq!(a.finish(), b.finish());
        let mut c = KeyHasher::new();
        c.add_input("x", &1u8).unwrap().add_input("z", "y").unwrap();
        assert_ne!(a.finish(), c.finish(), "input names are part of the key");
        let mut d = KeyHasher::new();
        d.add_input("x", &1u8).unwrap();
        d.component_value("y", "y").unwrap();
        assert_ne!(a.finish(), d.finish(), "an input is not a component");
        let mut e = KeyHasher::new();
        e.add_input("x", &1u8).unwrap();
        e.component("y", |h| h.str("y").done()).unwrap();
        assert_eq!(d.finish(), e.finish());
    }

    #[test]
    fn hashed_values_are_stored_as_themselves_and_keyed_by_their_digest() {
        let declared = Digest::from_bytes([9; 32]);
        let value = Hashed::new(vec![1.5f64, 2.5], declared);
        assert_eq!(serde_json::to_string(&value).unwrap(), "[1.5,2.5]");
        assert_eq!(
            rmp_serde::to_vec(&value).unwrap(),
            rmp_serde::to_vec(&vec![1.5f64, 2.5]).unwrap()
        );
        assert_eq!(hash_value(&value).unwrap(), hash_value(&declared).unwrap());

        #[derive(Serialize)]
        struct Inputs {
            frame: Hashed<Vec<f64>>,
            limit: u32,
        }
        let inputs = Inputs {
            frame: value.clone(),
            limit: 3,
        };
        let mut manual = Manual::new()
            .tag(b'M')
            .len(2)
            .str("frame")
            .tag(b'H')
            .raw(&[9; 32]);
        manual = manual.str("limit").int(3);
        assert_eq!(hex(&inputs), manual.digest());
        assert_eq!(
            serde_json::to_string(&inputs).unwrap(),
            r#"{"frame":[1.5,2.5],"limit":3}"#
        );

        let mut key = KeyHasher::new();
        key.add_input_hash("frame", &value).unwrap();
        assert_eq!(key.inputs()["frame"], declared);

        let computed = Hashed::by_value(vec![1u8, 2]).unwrap();
        assert_eq!(computed.digest(), hash_value(&vec![1u8, 2]).unwrap());
        let failing = Hashed::compute(0u8, |_| Err(HashError::new("no method")));
        assert_eq!(failing.unwrap_err().cause(), "no method");
    }

    #[test]
    fn a_digest_round_trips_as_hex() {
        let digest = hash_value("x").unwrap();
        let hex = digest.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<Digest>().unwrap(), digest);
        assert_eq!(hex.to_uppercase().parse::<Digest>().unwrap(), digest);
        assert!("xyz".parse::<Digest>().is_err());
        assert!(hex[..63].parse::<Digest>().is_err());
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{hex}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        assert_eq!(format!("{digest:?}"), format!("Digest({hex})"));
    }

    #[test]
    fn files_are_keyed_by_content_not_path() {
        let dir = tempfile::tempdir().unwrap();
        // Larger than a read chunk, and not a multiple of one.
        let content: Vec<u8> = (0..(9u32 << 20) + 17).map(|i| (i % 253) as u8).collect();
        std::fs::write(dir.path().join("a.bin"), &content).unwrap();
        std::fs::write(dir.path().join("b.bin"), &content).unwrap();
        std::fs::write(dir.path().join("empty"), b"").unwrap();

        let a = FileInput::new(dir.path().join("a.bin"));
        let b = FileInput::new(dir.path().join("b.bin"));
        assert_eq!(
            hash_file(a.path()).unwrap(),
            hash_value(&Bytes::from(content.clone())).unwrap()
        );
        assert_eq!(hex(&a), hex(&b));
        assert_eq!(hex(&a), hex(&hash_file(a.path()).unwrap()));
        assert_eq!(a.cache_digest().unwrap(), hash_file(a.path()).unwrap());
        assert_eq!(
            hash_file(dir.path().join("empty")).unwrap(),
            hash_value(&Blob(b"")).unwrap()
        );
        // Stored as its path.
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, serde_json::to_string(a.path()).unwrap());
        assert_eq!(serde_json::from_str::<FileInput>(&json).unwrap(), a);

        std::fs::write(dir.path().join("b.bin"), b"changed").unwrap();
        assert_ne!(hex(&a), hex(&b));

        let missing = FileInput::new(dir.path().join("missing.csv"));
        let err = KeyHasher::new().add_input("data", &missing).unwrap_err();
        assert_eq!(err.input(), Some("data"));
        assert!(err.cause().contains("missing.csv"), "{err}");
        let err = KeyHasher::new()
            .add_input_hash("data", &missing)
            .unwrap_err();
        assert!(std::error::Error::source(&err).is_some());
        let err = hash_file(dir.path()).unwrap_err();
        assert!(err.cause().contains("is a directory"), "{err}");
        std::fs::write(dir.path().join("small"), b"x,y\n").unwrap();
        assert_eq!(
            hash_file(dir.path().join("small")).unwrap(),
            hash_value(&Blob(b"x,y\n")).unwrap()
        );
        #[cfg(unix)]
        assert_eq!(
            hash_file("/dev/null").unwrap(),
            hash_value(&Blob(b"")).unwrap()
        );
    }

    #[test]
    fn cache_hash_fields_are_keyed_by_their_method() {
        struct Frame(Vec<u64>);
        impl CacheHash for Frame {
            fn cache_digest(&self) -> Result<Digest, HashError> {
                if self.0.is_empty() {
                    return Err(HashError::new("an empty frame has no digest"));
                }
                hash_value(&self.0)
            }
        }
        #[derive(Serialize)]
        struct Inputs {
            #[serde(serialize_with = "by_cache_hash")]
            frame: Frame,
        }
        let inputs = Inputs {
            frame: Frame(vec![1, 2]),
        };
        let digest = hash_value(&vec![1u64, 2]).unwrap();
        let expected = Manual::new()
            .tag(b'M')
            .len(1)
            .str("frame")
            .tag(b'H')
            .raw(digest.as_bytes());
        assert_eq!(hex(&inputs), expected.digest());
        assert_eq!(
            serde_json::to_string(&inputs).unwrap(),
            format!(r#"{{"frame":"{digest}"}}"#)
        );
        let err = KeyHasher::new()
            .add_input(
                "inputs",
                &Inputs {
                    frame: Frame(vec![]),
                },
            )
            .unwrap_err();
        assert_eq!(err.path(), ".frame");
        assert_eq!(err.cause(), "an empty frame has no digest");
    }

    #[test]
    fn hash_methods_run_once_per_value() {
        thread_local!(static CALLS: Cell<usize> = const { Cell::new(0) });
        struct Counted(u8);
        impl CacheHash for Counted {
            fn cache_digest(&self) -> Result<Digest, HashError> {
                CALLS.with(|c| c.set(c.get() + 1));
                Ok(Digest::from_bytes([self.0; 32]))
            }
        }
        #[derive(Serialize)]
        struct Element(#[serde(serialize_with = "by_cache_hash")] Counted);

        // The first element of a list is probed for a byte before it is encoded.
        let list = vec![Element(Counted(1)), Element(Counted(2))];
        let expected = Manual::new()
            .tag(b'L')
            .len(2)
            .tag(b'H')
            .raw(&[1; 32])
            .tag(b'H')
            .raw(&[2; 32]);
        assert_eq!(hex(&list), expected.digest());
        assert_eq!(CALLS.with(Cell::get), 2);
    }

    #[test]
    fn a_digest_marker_without_a_digest_is_an_error() {
        struct Forged;
        impl Serialize for Forged {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_newtype_struct(DIGEST_MARKER, &[0u8; 32])
            }
        }
        assert!(hash_value(&Forged).is_err());
    }
}
