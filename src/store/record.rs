//! The self-describing record format of cache entries and checkpoints.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "CAIRNREC"
//! 8       2     format version, little-endian (3)
//! 10      4     header length H, little-endian
//! 14      H     header, JSON (RecordHeader)
//! 14+H    16    checksum of the header bytes: XXH3-128, little-endian (versions 2
//!               and 3); the first 16 bytes of their BLAKE3 (version 1)
//! 30+H    ...   payload (exactly header.payload_len bytes)
//! ```
//!
//! The header carries the payload's length and checksum; [`decode`] checks the magic,
//! the version, the header checksum, the payload length and the payload checksum, so a
//! flipped byte or a truncated object anywhere is reported as corrupt and never
//! returned as data.
//!
//! Both checksums guard against damage, not forgery: they travel in the same object as
//! the bytes they cover, so whoever can rewrite the bytes can rewrite them too, and a
//! cryptographic hash there would buy nothing. Version 3 checks the payload by
//! XXH3-128 (`payload_xxh3`, as `xxhsum -H2` prints it), which runs at memory speed —
//! about 15 ms per 100 MB on one 2 GHz core, where BLAKE3 took 65–70 ms, about as long
//! as reading the value from the page cache — so a verified read of a large value costs
//! little more than the read. Records of versions 1 and 2 (payload checked by BLAKE3,
//! `payload_blake3`; version 1's header too) are still read and checked as they were
//! written. A record's version decides its payload checksum: a header naming the other
//! one is corrupt.
//!
//! ```
//! use bytes::Bytes;
//! use cairn::record::{decode, encode, PayloadChecksum, RecordInfo};
//!
//! let record = encode(RecordInfo::default(), "bytes", Bytes::from_static(b"abc"));
//! let (header, payload) = decode(record.into_contiguous()).unwrap();
//! assert_eq!(&payload[..], b"abc");
//! // XXH3-128 of "abc", as `xxhsum -H2` prints it.
//! assert_eq!(
//!     header.payload_checksum,
//!     PayloadChecksum::Xxh3("06b05ab6733a618578af5f94892f3950".into())
//! );
//! assert_eq!(header.payload_checksum, PayloadChecksum::of(b"abc"));
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::header_write::HeaderFields;
use crate::backend::PutPayload;

/// The first bytes of every record.
pub const MAGIC: &[u8; 8] = b"CAIRNREC";

/// The record format version this build writes.
pub const FORMAT_VERSION: u16 = 3;

/// The oldest record format version this build reads (its header checksum is BLAKE3).
pub const OLDEST_READ_VERSION: u16 = 1;

/// The last record format version whose payload checksum is BLAKE3.
const LAST_BLAKE3_VERSION: u16 = 2;

/// Whether this build reads records of format `version`.
pub fn reads_version(version: u16) -> bool {
    (OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version)
}

/// The format version that bytes starting a record declare; `None` when they are too
/// short or do not start with [`MAGIC`].
pub(crate) fn declared_version(bytes: &[u8]) -> Option<u16> {
    let start = bytes.get(..10)?;
    (&start[..8] == MAGIC).then(|| u16::from_le_bytes([start[8], start[9]]))
}

/// The checksum of a header's JSON under record format `version` (2, or 1).
fn header_checksum(version: u16, json: &[u8]) -> [u8; HEADER_DIGEST_LEN] {
    if version == 1 {
        let mut out = [0; HEADER_DIGEST_LEN];
        out.copy_from_slice(&blake3::hash(json).as_bytes()[..HEADER_DIGEST_LEN]);
        return out;
    }
    xxhash_rust::xxh3::xxh3_128(json).to_le_bytes()
}

const PREFIX_LEN: usize = 8 + 2 + 4;
const HEADER_DIGEST_LEN: usize = 16;

/// BLAKE3 checks (records of versions 1 and 2) of payloads larger than this run on
/// all cores.
const PARALLEL_HASH_THRESHOLD: usize = 1 << 20;

/// The checksum of a record's payload, as its header writes it: the field's name
/// (`payload_xxh3`, `payload_blake3`) says the algorithm, its value is lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PayloadChecksum {
    /// XXH3-128, 32 hex digits as `xxhsum -H2` prints it (record format 3).
    #[serde(rename = "payload_xxh3")]
    Xxh3(String),
    /// BLAKE3, 64 hex digits (record formats 1 and 2).
    #[serde(rename = "payload_blake3")]
    Blake3(String),
}

impl PayloadChecksum {
    /// The checksum this build writes for `payload` (XXH3-128).
    pub fn of(payload: &[u8]) -> Self {
        PayloadChecksum::Xxh3(xxh3_hex(xxh3(payload)).as_str().to_owned())
    }

    /// The algorithm's name: `xxh3-128` or `blake3`.
    pub fn algorithm(&self) -> &'static str {
        self.borrowed().0.name()
    }

    /// The checksum in hex, as the header writes it.
    pub fn hex(&self) -> &str {
        self.borrowed().1
    }

    pub(crate) fn borrowed(&self) -> ChecksumRef<'_> {
        match self {
            PayloadChecksum::Xxh3(hex) => (Algorithm::Xxh3, hex),
            PayloadChecksum::Blake3(hex) => (Algorithm::Blake3, hex),
        }
    }
}

impl std::fmt::Display for PayloadChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

/// A payload checksum's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Xxh3,
    Blake3,
}

impl Algorithm {
    /// The algorithm of the payload checksum of records of format `version`.
    fn of_version(version: u16) -> Algorithm {
        if version <= LAST_BLAKE3_VERSION {
            Algorithm::Blake3
        } else {
            Algorithm::Xxh3
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Xxh3 => "xxh3-128",
            Algorithm::Blake3 => "blake3",
        }
    }

    /// The header field that holds a checksum of this algorithm.
    pub(crate) fn field(self) -> &'static str {
        match self {
            Algorithm::Xxh3 => "payload_xxh3",
            Algorithm::Blake3 => "payload_blake3",
        }
    }

    fn compute(self, payload: &[u8]) -> Computed {
        match self {
            Algorithm::Xxh3 => Computed::Xxh3(xxh3(payload)),
            Algorithm::Blake3 => Computed::Blake3(blake3_of(payload)),
        }
    }
}

/// A payload checksum borrowed from a header: its algorithm and its hex.
pub(crate) type ChecksumRef<'a> = (Algorithm, &'a str);

/// A payload checksum as computed over the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Computed {
    Xxh3(u128),
    Blake3(blake3::Hash),
}

impl Computed {
    fn algorithm(&self) -> Algorithm {
        match self {
            Computed::Xxh3(_) => Algorithm::Xxh3,
            Computed::Blake3(_) => Algorithm::Blake3,
        }
    }

    /// Whether a header's `hex` names this checksum. The lowercase hex cairn writes
    /// is compared as it is; any other spelling of the same digits is decoded first.
    fn matches(&self, hex: &str) -> bool {
        match self {
            Computed::Xxh3(sum) => {
                xxh3_hex(*sum).as_str() == hex
                    || (hex.len() == 32
                        && hex.bytes().all(|b| b.is_ascii_hexdigit())
                        && u128::from_str_radix(hex, 16).ok() == Some(*sum))
            }
            Computed::Blake3(hash) => {
                crate::cache::hashing::Digest::from(*hash)
                    .hex_buf()
                    .as_str()
                    == hex
                    || blake3::Hash::from_hex(hex).ok() == Some(*hash)
            }
        }
    }
}

/// XXH3-128 of `data`.
fn xxh3(data: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(data)
}

/// An XXH3-128 in lowercase hex, high half first (`xxhsum`'s canonical form), on the
/// stack.
struct Xxh3Hex([u8; 32]);

impl Xxh3Hex {
    fn as_str(&self) -> &str {
        // SAFETY: an `Xxh3Hex` is only made by `xxh3_hex`, of ASCII hex digits.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

fn xxh3_hex(sum: u128) -> Xxh3Hex {
    let mut out = [0u8; 32];
    for (i, digits) in out.chunks_exact_mut(8).enumerate() {
        let word = (sum >> (96 - 32 * i)) as u32;
        digits.copy_from_slice(&crate::cache::hashing::hex_digits(word).to_be_bytes());
    }
    Xxh3Hex(out)
}

/// What a record says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordHeader {
    /// When the record was written.
    pub created: DateTime<Utc>,
    /// When it stops being valid, if ever.
    pub expires: Option<DateTime<Utc>>,
    /// The serializer of the payload ([`crate::Serializer::name`]).
    pub serializer: String,
    /// The payload length in bytes.
    pub payload_len: u64,
    /// The payload's checksum: XXH3-128 in the records this build writes.
    #[serde(flatten)]
    pub payload_checksum: PayloadChecksum,
    /// The components of the cache key, in short (`inputs`, `task_source`, ...).
    #[serde(default)]
    pub key_components: BTreeMap<String, String>,
    /// The task that produced the value.
    #[serde(default)]
    pub task: Option<String>,
    /// The Rust type of the value.
    #[serde(default)]
    pub output_type: Option<String>,
    /// The digests declared by the [`crate::hashing::Hashed`] values in the payload,
    /// hex, in the order they are read back: they key downstream tasks the same
    /// whether the value was computed or read from this record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declared_digests: Vec<String>,
    /// The cairn version that wrote the record.
    pub cairn_version: String,
}

/// The descriptive part of a header, supplied by the writer; the rest (digest, length,
/// serializer, version) is filled in when the record is encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordInfo {
    /// When the record was made, by the writer's clock (a run's clock, which tests
    /// can set); `None`: now, by the system clock.
    pub created: Option<DateTime<Utc>>,
    /// When the record stops being valid.
    pub expires: Option<DateTime<Utc>>,
    /// The components of the cache key, in short.
    pub key_components: BTreeMap<String, String>,
    /// The task that produced the value.
    pub task: Option<String>,
    /// The Rust type of the value.
    pub output_type: Option<String>,
}

impl RecordHeader {
    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// BLAKE3 of `data`, on all cores for large inputs: the payload checksum of records of
/// versions 1 and 2.
fn blake3_of(data: &[u8]) -> blake3::Hash {
    if data.len() < PARALLEL_HASH_THRESHOLD {
        return blake3::hash(data);
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update_rayon(data);
    hasher.finalize()
}

/// Frames `payload` as a record. The payload itself is not copied: the result is the
/// encoded header followed by the payload's own buffer.
pub fn encode(info: RecordInfo, serializer: &str, payload: Bytes) -> PutPayload {
    encode_declared(info, serializer, payload, Vec::new())
}

/// [`encode`], with the declared digests of the payload's `Hashed` values (hex).
pub(crate) fn encode_declared(
    info: RecordInfo,
    serializer: &str,
    payload: Bytes,
    declared_digests: Vec<String>,
) -> PutPayload {
    let checksum = xxh3_hex(xxh3(&payload));
    let header = HeaderFields {
        created: info.created.unwrap_or_else(Utc::now),
        expires: info.expires,
        serializer,
        payload_len: payload.len() as u64,
        payload_checksum: (Algorithm::Xxh3, checksum.as_str()),
        key_components: &info.key_components,
        task: info.task.as_deref(),
        output_type: info.output_type.as_deref(),
        declared_digests: &declared_digests,
        cairn_version: env!("CARGO_PKG_VERSION"),
    };
    encode_fields(&header, payload)
}

/// A record framed for [`Backend::put_framed`](crate::backend::Backend::put_framed):
/// the head's length, known before the payload is hashed (a checksum is always 32 hex
/// characters), and the maker of the head, which hashes the payload.
pub(crate) fn framed_declared(
    info: RecordInfo,
    serializer: &str,
    payload: &Bytes,
    declared_digests: Vec<String>,
) -> (usize, crate::backend::HeadMaker) {
    let mut header = RecordHeader {
        created: info.created.unwrap_or_else(Utc::now),
        expires: info.expires,
        serializer: serializer.to_string(),
        payload_len: payload.len() as u64,
        payload_checksum: PayloadChecksum::Xxh3("0".repeat(32)),
        key_components: info.key_components,
        task: info.task,
        output_type: info.output_type,
        declared_digests,
        cairn_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let head_len = encode_header(&header, Bytes::new()).len() as usize;
    let payload = payload.clone();
    let make_head = Box::new(move || {
        header.payload_checksum = PayloadChecksum::of(&payload);
        encode_header(&header, Bytes::new()).into_contiguous()
    });
    (head_len, make_head)
}

/// Frames `payload` under an already built header (its checksum and length must
/// match). The record is of the format that `header`'s checksum belongs to: a header
/// with a BLAKE3 checksum is framed as a record of version 2.
pub fn encode_header(header: &RecordHeader, payload: Bytes) -> PutPayload {
    encode_fields(&header.into(), payload)
}

/// [`encode_header`] of borrowed fields.
fn encode_fields(header: &HeaderFields<'_>, payload: Bytes) -> PutPayload {
    // The JSON is written in place after the prefix, whose length field is filled in
    // once the JSON's length is known.
    let mut head = Vec::with_capacity(PREFIX_LEN + 512 + HEADER_DIGEST_LEN);
    let version = match header.payload_checksum.0 {
        Algorithm::Xxh3 => FORMAT_VERSION,
        Algorithm::Blake3 => LAST_BLAKE3_VERSION,
    };
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&version.to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    super::header_write::write(header, &mut head);
    let json_len = head.len() - PREFIX_LEN;
    head[10..PREFIX_LEN].copy_from_slice(&(json_len as u32).to_le_bytes());
    let checksum = header_checksum(version, &head[PREFIX_LEN..]);
    head.extend_from_slice(&checksum);
    PutPayload::from_chunks([Bytes::from(head), payload])
}

/// Why a record failed its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption(pub String);

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses and checks only the header of a record (enough to list or inspect it).
pub fn decode_header(bytes: &[u8]) -> Result<(RecordHeader, usize), Corruption> {
    let (json, payload_start, version) = split_header(bytes)?;
    let header: RecordHeader =
        serde_json::from_slice(json).map_err(|e| Corruption(format!("unreadable header: {e}")))?;
    check_algorithm(version, header.payload_checksum.borrowed().0)?;
    Ok((header, payload_start))
}

/// Checks that a record of format `version` names its version's payload checksum.
fn check_algorithm(version: u16, named: Algorithm) -> Result<(), Corruption> {
    let wanted = Algorithm::of_version(version);
    if named != wanted {
        return Err(Corruption(format!(
            "a record of format version {version} is checked by {}, its header names {}",
            wanted.field(),
            named.field()
        )));
    }
    Ok(())
}

/// Checks a record's prefix and header checksum; returns the header's JSON, where the
/// payload starts, and the record's format version.
fn split_header(bytes: &[u8]) -> Result<(&[u8], usize, u16), Corruption> {
    let bad = |m: String| Err(Corruption(m));
    if bytes.len() < PREFIX_LEN {
        return bad(format!(
            "{} bytes is too short for a record (truncated?)",
            bytes.len()
        ));
    }
    let Some(version) = declared_version(bytes) else {
        return bad("not a cairn record (bad magic bytes)".into());
    };
    if !reads_version(version) {
        return bad(format!(
            "record format version {version}, this cairn reads versions \
             {OLDEST_READ_VERSION} to {FORMAT_VERSION}"
        ));
    }
    let header_len = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    let payload_start = PREFIX_LEN + header_len + HEADER_DIGEST_LEN;
    if bytes.len() < payload_start {
        return bad("truncated inside the header".into());
    }
    let json = &bytes[PREFIX_LEN..PREFIX_LEN + header_len];
    let stored = &bytes[PREFIX_LEN + header_len..payload_start];
    if header_checksum(version, json) != *stored {
        return bad("header checksum mismatch".into());
    }
    Ok((json, payload_start, version))
}

/// What reading a record's value needs from its header, parsed without copying the
/// header's strings or its key components: a cache hit reads this, not a
/// [`RecordHeader`]. Every field [`decode_header`] requires must be present, and the
/// ones a read uses are checked as strictly; the descriptive ones it does not use
/// (`key_components`, `task`, `output_type`) are skipped unread.
#[derive(Debug, PartialEq, Deserialize)]
pub(crate) struct HeaderView<'a> {
    /// When the record was written (the writer's clock).
    pub(crate) created: DateTime<Utc>,
    pub(crate) expires: Option<DateTime<Utc>>,
    #[serde(borrow)]
    pub(crate) serializer: std::borrow::Cow<'a, str>,
    pub(crate) payload_len: u64,
    #[serde(flatten, borrow)]
    payload_checksum: ChecksumView<'a>,
    #[serde(default, rename = "key_components")]
    _key_components: serde::de::IgnoredAny,
    #[serde(default, borrow)]
    pub(crate) declared_digests: Vec<std::borrow::Cow<'a, str>>,
    #[serde(borrow, rename = "cairn_version")]
    _cairn_version: std::borrow::Cow<'a, str>,
}

impl<'a> HeaderView<'a> {
    /// A view of these fields (the descriptive ones are not kept).
    pub(crate) fn new(
        created: DateTime<Utc>,
        expires: Option<DateTime<Utc>>,
        serializer: &'a str,
        payload_len: u64,
        payload_checksum: ChecksumRef<'a>,
        declared_digests: Vec<std::borrow::Cow<'a, str>>,
        cairn_version: &'a str,
    ) -> Self {
        HeaderView {
            created,
            expires,
            serializer: serializer.into(),
            payload_len,
            payload_checksum: match payload_checksum {
                (Algorithm::Xxh3, hex) => ChecksumView::Xxh3(hex.into()),
                (Algorithm::Blake3, hex) => ChecksumView::Blake3(hex.into()),
            },
            _key_components: serde::de::IgnoredAny,
            declared_digests,
            _cairn_version: cairn_version.into(),
        }
    }
}

/// [`PayloadChecksum`], borrowed from the header's bytes.
#[derive(Debug, PartialEq, Deserialize)]
enum ChecksumView<'a> {
    #[serde(rename = "payload_xxh3", borrow)]
    Xxh3(std::borrow::Cow<'a, str>),
    #[serde(rename = "payload_blake3", borrow)]
    Blake3(std::borrow::Cow<'a, str>),
}

impl ChecksumView<'_> {
    fn as_ref(&self) -> ChecksumRef<'_> {
        match self {
            ChecksumView::Xxh3(hex) => (Algorithm::Xxh3, hex),
            ChecksumView::Blake3(hex) => (Algorithm::Blake3, hex),
        }
    }
}

/// [`decode_hashed`], reading the header as a [`HeaderView`]: scanned when it has the
/// shape cairn writes ([`super::header_scan`]), parsed as JSON otherwise. Gives the
/// header and where the payload starts in `bytes`.
pub(crate) fn decode_view(
    bytes: &[u8],
    hashed: Option<PayloadDigest>,
) -> Result<(HeaderView<'_>, usize), Corruption> {
    let (json, payload_start, version) = split_header(bytes)?;
    let header: HeaderView<'_> = match super::header_scan::scan(json) {
        Some(header) => header,
        None => serde_json::from_slice(json)
            .map_err(|e| Corruption(format!("unreadable header: {e}")))?,
    };
    let checksum = header.payload_checksum.as_ref();
    check_algorithm(version, checksum.0)?;
    check_payload(bytes, payload_start, header.payload_len, checksum, hashed)?;
    Ok((header, payload_start))
}

/// Checks the payload's length and checksum against the header's.
fn check_payload(
    bytes: &[u8],
    payload_start: usize,
    payload_len: u64,
    (algorithm, hex): ChecksumRef<'_>,
    hashed: Option<PayloadDigest>,
) -> Result<(), Corruption> {
    let payload = &bytes[payload_start..];
    let actual = payload.len() as u64;
    if actual != payload_len {
        return Err(Corruption(format!(
            "payload is {actual} bytes, the header says {payload_len} (truncated or appended to)"
        )));
    }
    let actual = match hashed {
        Some(h) if h.payload_start == payload_start && h.digest.algorithm() == algorithm => {
            h.digest
        }
        _ => algorithm.compute(payload),
    };
    if !actual.matches(hex) {
        return Err(Corruption(format!(
            "payload checksum ({}) mismatch",
            algorithm.name()
        )));
    }
    Ok(())
}

/// Hashes a record's payload as a read hands over its bytes in pieces
/// ([`Backend::get_bytes_inspected`](crate::backend::Backend::get_bytes_inspected)),
/// so that checking a record needs no second read of it. The record's format version,
/// in its first bytes, says which checksum to compute.
pub(crate) struct PayloadHasher {
    seen: u64,
    prefix: [u8; PREFIX_LEN],
    /// Where the payload starts and the checksum its version takes, once the prefix
    /// was seen.
    payload: Option<(u64, Algorithm)>,
    hashing: Hashing,
}

/// A payload of at most this many bytes is kept and hashed in one call at the end: a
/// small record's read then needs no streaming hasher of its own.
const INLINE_PAYLOAD: usize = 512;

// The inline variant is the large one on purpose: it spares a small read the heap.
#[allow(clippy::large_enum_variant)]
enum Hashing {
    /// The payload so far, all of it.
    Inline {
        buf: [u8; INLINE_PAYLOAD],
        len: usize,
    },
    /// A larger payload of a record of format 3, hashed as its pieces come.
    Xxh3(Box<xxhash_rust::xxh3::Xxh3>),
    /// A larger payload of a record of format 1 or 2, hashed as its pieces come.
    Blake3(Box<blake3::Hasher>),
}

impl Default for PayloadHasher {
    fn default() -> Self {
        PayloadHasher {
            seen: 0,
            prefix: [0; PREFIX_LEN],
            payload: None,
            hashing: Hashing::Inline {
                buf: [0; INLINE_PAYLOAD],
                len: 0,
            },
        }
    }
}

impl Hashing {
    fn update(&mut self, algorithm: Algorithm, part: &[u8]) {
        match self {
            Hashing::Inline { buf, len } if *len + part.len() <= INLINE_PAYLOAD => {
                buf[*len..*len + part.len()].copy_from_slice(part);
                *len += part.len();
            }
            Hashing::Inline { buf, len } => {
                let so_far = &buf[..*len];
                *self = match algorithm {
                    Algorithm::Xxh3 => {
                        let mut hasher = Box::new(xxhash_rust::xxh3::Xxh3::new());
                        hasher.update(so_far);
                        hasher.update(part);
                        Hashing::Xxh3(hasher)
                    }
                    Algorithm::Blake3 => {
                        let mut hasher = Box::new(blake3::Hasher::new());
                        hasher.update(so_far);
                        feed_blake3(&mut hasher, part);
                        Hashing::Blake3(hasher)
                    }
                };
            }
            Hashing::Xxh3(hasher) => hasher.update(part),
            Hashing::Blake3(hasher) => feed_blake3(hasher, part),
        }
    }

    fn finalize(&self, algorithm: Algorithm) -> Computed {
        match self {
            Hashing::Inline { buf, len } => algorithm.compute(&buf[..*len]),
            Hashing::Xxh3(hasher) => Computed::Xxh3(hasher.digest128()),
            Hashing::Blake3(hasher) => Computed::Blake3(hasher.finalize()),
        }
    }
}

fn feed_blake3(hasher: &mut blake3::Hasher, part: &[u8]) {
    if part.len() > INSPECTED_PARALLEL_HASH_THRESHOLD {
        hasher.update_rayon(part);
    } else {
        hasher.update(part);
    }
}

impl PayloadHasher {
    /// The next piece of the record.
    pub(crate) fn update(&mut self, piece: &[u8]) {
        let start = self.seen;
        let end = start + piece.len() as u64;
        self.seen = end;
        let (payload_start, algorithm) = match self.payload {
            Some(p) => p,
            None => {
                if start < PREFIX_LEN as u64 {
                    let from = start as usize;
                    let n = (PREFIX_LEN - from).min(piece.len());
                    self.prefix[from..from + n].copy_from_slice(&piece[..n]);
                }
                if end < PREFIX_LEN as u64 {
                    return;
                }
                let version = u16::from_le_bytes([self.prefix[8], self.prefix[9]]);
                let header_len = u32::from_le_bytes([
                    self.prefix[10],
                    self.prefix[11],
                    self.prefix[12],
                    self.prefix[13],
                ]) as u64;
                let p = (
                    (PREFIX_LEN + HEADER_DIGEST_LEN) as u64 + header_len,
                    Algorithm::of_version(version),
                );
                self.payload = Some(p);
                p
            }
        };
        if end <= payload_start {
            return;
        }
        self.hashing.update(
            algorithm,
            &piece[payload_start.saturating_sub(start) as usize..],
        );
    }

    /// The payload's checksum, for a record of `len` bytes in all, when every byte of
    /// it was seen.
    pub(crate) fn finish(&self, len: usize) -> Option<PayloadDigest> {
        let (payload_start, algorithm) = self.payload?;
        (self.seen == len as u64 && payload_start <= self.seen).then(|| PayloadDigest {
            payload_start: payload_start as usize,
            digest: self.hashing.finalize(algorithm),
        })
    }
}

/// A payload's checksum, computed while the record was read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PayloadDigest {
    payload_start: usize,
    digest: Computed,
}

/// A piece of a record of format 1 or 2 handed over at once above this size is hashed
/// by BLAKE3 on all cores; smaller pieces (a streamed read's, the local store's) are
/// hashed as they come. XXH3 runs on one core, at about the speed of memory.
const INSPECTED_PARALLEL_HASH_THRESHOLD: usize = 8 << 20;

/// Checks a whole record and returns its header and payload (a slice of `bytes`, not
/// a copy).
pub fn decode(bytes: Bytes) -> Result<(RecordHeader, Bytes), Corruption> {
    decode_hashed(bytes, None)
}

/// [`decode`], with the payload's digest already computed while it was read.
pub(crate) fn decode_hashed(
    bytes: Bytes,
    hashed: Option<PayloadDigest>,
) -> Result<(RecordHeader, Bytes), Corruption> {
    let (header, payload_start) = decode_header(&bytes)?;
    check_payload(
        &bytes,
        payload_start,
        header.payload_len,
        header.payload_checksum.borrowed(),
        hashed,
    )?;
    Ok((header, bytes.slice(payload_start..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_hashed_in_pieces_matches_the_header_whatever_the_split() {
        let record = encode(
            RecordInfo::default(),
            "bytes",
            Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<u8>>()),
        )
        .into_contiguous();
        let (header, _) = decode(record.clone()).unwrap();
        for first in (0..200).chain((200..record.len()).step_by(97)) {
            for second in [1usize, 7, 100, 4096] {
                let mut h = PayloadHasher::default();
                h.update(&record[..first]);
                let mut at = first;
                while at < record.len() {
                    let end = (at + second).min(record.len());
                    h.update(&record[at..end]);
                    at = end;
                }
                let hashed = h.finish(record.len()).expect("every byte was seen");
                assert!(hashed.digest.matches(header.payload_checksum.hex()));
                assert!(decode_hashed(record.clone(), Some(hashed)).is_ok());
            }
        }
        // A hasher that missed bytes gives no digest, and decoding hashes again.
        let mut h = PayloadHasher::default();
        h.update(&record[..record.len() - 1]);
        assert!(h.finish(record.len()).is_none());
    }

    #[test]
    fn small_payloads_and_payloads_around_the_inline_limit_hash_alike_in_any_pieces() {
        for payload_len in [
            0,
            1,
            7,
            INLINE_PAYLOAD - 1,
            INLINE_PAYLOAD,
            INLINE_PAYLOAD + 1,
            1500,
        ] {
            let payload: Vec<u8> = (0..payload_len).map(|i| (i * 31) as u8).collect();
            let record =
                encode(RecordInfo::default(), "bytes", Bytes::from(payload)).into_contiguous();
            let (header, _) = decode(record.clone()).unwrap();
            for piece in [1usize, 3, 64, 511, 512, 513, record.len()] {
                let mut h = PayloadHasher::default();
                for chunk in record.chunks(piece) {
                    h.update(chunk);
                }
                let hashed = h.finish(record.len()).expect("every byte was seen");
                assert!(
                    hashed.digest.matches(header.payload_checksum.hex()),
                    "payload of {payload_len} bytes in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn a_digest_from_the_pieces_does_not_hide_corruption() {
        let mut record = encode(RecordInfo::default(), "bytes", Bytes::from(vec![3u8; 9000]))
            .into_contiguous()
            .to_vec();
        let last = record.len() - 1;
        record[last] ^= 0x40;
        let mut h = PayloadHasher::default();
        h.update(&record);
        let hashed = h.finish(record.len());
        assert!(hashed.is_some());
        let err = decode_hashed(Bytes::from(record), hashed).unwrap_err();
        assert_eq!(err.0, "payload checksum (xxh3-128) mismatch");
    }

    fn sample() -> Bytes {
        encode(
            RecordInfo {
                task: Some("add_one".into()),
                ..Default::default()
            },
            "json",
            Bytes::from_static(b"[1,2,3]"),
        )
        .into_contiguous()
    }

    #[test]
    fn round_trips() {
        let (header, payload) = decode(sample()).unwrap();
        assert_eq!(&payload[..], b"[1,2,3]");
        assert_eq!(header.task.as_deref(), Some("add_one"));
        assert_eq!(header.serializer, "json");
        assert_eq!(header.payload_len, 7);
        assert_eq!(header.cairn_version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let good = sample();
        for i in 0..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0x01;
            let bad = Bytes::from(bad);
            assert!(decode(bad.clone()).is_err(), "flip at {i} went unnoticed");
            assert!(
                decode_view(&bad, None).is_err(),
                "flip at {i} went unnoticed by the hit's read"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let good = sample();
        for len in 0..good.len() {
            let err = decode(good.slice(..len)).unwrap_err();
            assert!(!err.0.is_empty());
            let view_err = decode_view(&good.slice(..len), None).unwrap_err();
            assert_eq!(view_err, err, "at {len} bytes");
        }
    }

    #[test]
    fn appended_bytes_are_detected() {
        let mut longer = sample().to_vec();
        longer.push(b'x');
        let longer = Bytes::from(longer);
        let err = decode(longer.clone()).unwrap_err();
        assert!(err.0.contains("header says"), "{err}");
        assert_eq!(decode_view(&longer, None).unwrap_err(), err);
    }

    /// A record whose header JSON is `json`, framed and checksummed as a writer would.
    fn with_header_json(json: &str, payload: &[u8]) -> Bytes {
        framed_as(FORMAT_VERSION, json, payload)
    }

    /// A record of format `version` whose header JSON is `json`, checksummed as a
    /// writer of that version does: spelled out here, not by the code under test.
    fn framed_as(version: u16, json: &str, payload: &[u8]) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json.as_bytes());
        match version {
            1 => out.extend_from_slice(&blake3::hash(json.as_bytes()).as_bytes()[..16]),
            _ => out.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(json.as_bytes()).to_le_bytes()),
        }
        out.extend_from_slice(payload);
        Bytes::from(out)
    }

    #[test]
    fn the_hits_header_view_reads_what_the_full_header_says() {
        let expires = Utc::now() + chrono::Duration::hours(1);
        let created = Utc::now() - chrono::Duration::hours(1);
        let good = encode_declared(
            RecordInfo {
                created: Some(created),
                expires: Some(expires),
                key_components: [("inputs".to_owned(), "x".to_owned())].into(),
                task: Some("a \"quoted\" task".into()),
                output_type: Some("u64".into()),
            },
            "json",
            Bytes::from_static(b"[1,2,3]"),
            vec!["ab".repeat(32)],
        )
        .into_contiguous();
        let (header, payload) = decode(good.clone()).unwrap();
        let (view, payload_start) = decode_view(&good, None).unwrap();
        assert_eq!(good[payload_start..], payload);
        assert_eq!((view.created, header.created), (created, created));
        assert_eq!(view.expires, header.expires);
        assert_eq!(view.serializer, header.serializer);
        assert_eq!(view.payload_len, header.payload_len);
        let declared: Vec<&str> = view.declared_digests.iter().map(|d| d.as_ref()).collect();
        assert_eq!(declared, header.declared_digests);
    }

    #[test]
    fn the_hits_header_view_refuses_what_the_full_header_refuses() {
        let digest = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(b"[1]"));
        let ok = format!(
            r#"{{"created":"2026-01-01T00:00:00Z","expires":null,"serializer":"json","payload_len":3,"payload_xxh3":"{digest}","cairn_version":"0.1.0"}}"#
        );
        assert!(decode(with_header_json(&ok, b"[1]")).is_ok());
        assert!(decode_view(&with_header_json(&ok, b"[1]"), None).is_ok());
        let bad = [
            ok.replace(r#""created":"2026-01-01T00:00:00Z","#, ""),
            ok.replace("2026-01-01T00:00:00Z", "yesterday"),
            ok.replace(r#""expires":null"#, r#""expires":"soon""#),
            ok.replace(r#","cairn_version":"0.1.0""#, ""),
            ok.replace(r#""serializer":"json""#, r#""serializer":7"#),
            ok.replace(&digest, &"0".repeat(32)),
            ok.replace(&digest, &digest[..31]),
            ok.replace("payload_xxh3", "payload_blake3"),
            ok.replace("payload_xxh3", "payload_sha256"),
            ok.replace(r#""payload_len":3"#, r#""payload_len":2"#),
        ];
        for json in bad {
            let record = with_header_json(&json, b"[1]");
            let err = decode(record.clone()).unwrap_err();
            assert!(
                decode_view(&record, None).is_err(),
                "accepted: {json} ({err})"
            );
        }
    }

    /// Records written by a cairn of format 1 (header and payload checked by BLAKE3)
    /// or 2 (header by XXH3-128, payload by BLAKE3) are still read, whole and by a
    /// hit; each version's checksums are checked as that version's, and a version this
    /// build does not know is refused by number.
    #[test]
    fn records_of_formats_1_and_2_are_read_and_each_version_checks_its_own_checksums() {
        let blake3 = blake3::hash(b"[1]").to_hex();
        let json = format!(
            r#"{{"created":"2026-01-01T00:00:00Z","expires":null,"serializer":"json","payload_len":3,"payload_blake3":"{blake3}","cairn_version":"0.1.0"}}"#
        );
        for version in [1, 2] {
            let record = framed_as(version, &json, b"[1]");
            let (header, payload) = decode(record.clone()).unwrap();
            assert_eq!((header.payload_len, &payload[..]), (3, &b"[1]"[..]));
            assert_eq!(header.payload_checksum.algorithm(), "blake3");
            assert!(decode_view(&record, None).is_ok(), "version {version}");
            // Hashed in pieces as a streamed read hands them over.
            let mut h = PayloadHasher::default();
            for piece in record.chunks(5) {
                h.update(piece);
            }
            assert!(decode_hashed(record.clone(), h.finish(record.len())).is_ok());
            let mut bad = record.to_vec();
            *bad.last_mut().unwrap() ^= 1;
            let err = decode(Bytes::from(bad)).unwrap_err();
            assert_eq!(err.0, "payload checksum (blake3) mismatch");
        }
        assert_eq!(sample()[8..10], FORMAT_VERSION.to_le_bytes());
        assert_eq!(FORMAT_VERSION, 3);
        assert_eq!(declared_version(&sample()), Some(3));
        assert_eq!(declared_version(&sample()[..10]), Some(3));
        assert_eq!(declared_version(&sample()[..9]), None);
        assert_eq!(declared_version(b"CAIRNRED\x03\x00"), None);
        // A record labelled with another version than its header checksum's.
        for (label, checksum_of) in [(1u16, 2u16), (2, 1)] {
            let mut record = framed_as(checksum_of, &json, b"[1]").to_vec();
            record[8..10].copy_from_slice(&label.to_le_bytes());
            let err = decode(Bytes::from(record.clone())).unwrap_err();
            assert!(err.0.contains("header checksum"), "{label}: {err}");
            assert!(decode_view(&record, None).is_err());
        }
        // A record whose header names another payload checksum than its version's.
        let xxh3 = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(b"[1]"));
        let json3 = json.replace(
            &format!(r#""payload_blake3":"{blake3}""#),
            &format!(r#""payload_xxh3":"{xxh3}""#),
        );
        assert!(decode(framed_as(3, &json3, b"[1]")).is_ok());
        for (version, json) in [(3u16, &json), (2, &json3), (1, &json3)] {
            let record = framed_as(version, json, b"[1]");
            let err = decode(record.clone()).unwrap_err();
            assert!(
                err.0
                    .contains(&format!("format version {version} is checked by")),
                "{err}"
            );
            assert_eq!(decode_view(&record, None).unwrap_err(), err);
        }
        let mut later = framed_as(3, &json3, b"[1]").to_vec();
        later[8..10].copy_from_slice(&4u16.to_le_bytes());
        let err = decode(Bytes::from(later)).unwrap_err();
        assert!(err.0.contains("record format version 4"), "{err}");
        assert!(reads_version(1) && reads_version(2) && reads_version(3));
        assert!(!reads_version(0) && !reads_version(4));
    }

    /// The payload checksum is XXH3-128 as `xxhsum -H2` prints it: its published
    /// vectors, and a record's header.
    #[test]
    fn the_payload_checksum_is_xxh3_128_in_its_canonical_hex() {
        for (data, hex) in [
            (&b""[..], "99aa06d3014798d86001c324468d497f"),
            (b"abc", "06b05ab6733a618578af5f94892f3950"),
        ] {
            assert_eq!(PayloadChecksum::of(data), PayloadChecksum::Xxh3(hex.into()));
            let (header, _) = decode(
                encode(RecordInfo::default(), "bytes", Bytes::copy_from_slice(data))
                    .into_contiguous(),
            )
            .unwrap();
            assert_eq!(header.payload_checksum.hex(), hex);
            assert_eq!(
                header.payload_checksum.to_string(),
                format!("xxh3-128:{hex}")
            );
        }
        // Another spelling of the same digits is read as them.
        let json = format!(
            r#"{{"created":"2026-01-01T00:00:00Z","expires":null,"serializer":"bytes","payload_len":3,"payload_xxh3":"{}","cairn_version":"0.1.0"}}"#,
            "06B05AB6733A618578AF5F94892F3950"
        );
        assert!(decode(framed_as(3, &json, b"abc")).is_ok());
        assert!(decode_view(&framed_as(3, &json, b"abc"), None).is_ok());
        let signed = json.replace("06B05", "+6B05");
        assert!(decode(framed_as(3, &signed, b"abc")).is_err());
    }

    #[test]
    fn checksums_are_written_in_hex_as_format_writes_them() {
        let mut x: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        for _ in 0..10_000 {
            assert_eq!(xxh3_hex(x).as_str(), format!("{x:032x}"));
            x = x
                .wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15)
                .rotate_left(17)
                ^ 1;
        }
        for x in [0, u128::MAX, 1 << 127, 0xa] {
            assert_eq!(xxh3_hex(x).as_str(), format!("{x:032x}"));
        }
    }

    /// A header with a BLAKE3 checksum is framed as the format it belongs to.
    #[test]
    fn a_header_with_a_blake3_checksum_is_framed_as_format_2() {
        let (mut header, payload) = decode(sample()).unwrap();
        header.payload_checksum =
            PayloadChecksum::Blake3(blake3::hash(&payload).to_hex().to_string());
        let record = encode_header(&header, payload.clone()).into_contiguous();
        assert_eq!(record[8..10], 2u16.to_le_bytes());
        let (back, again) = decode(record).unwrap();
        assert_eq!((back, again), (header, payload));
    }

    #[test]
    fn other_files_are_not_records() {
        let err = decode(Bytes::from_static(b"just some csv,data\n1,2\n")).unwrap_err();
        assert!(err.0.contains("magic"), "{err}");
    }

    #[test]
    fn payload_is_not_copied() {
        let payload = Bytes::from(vec![5u8; 10_000]);
        let framed = encode(RecordInfo::default(), "bytes", payload.clone());
        assert_eq!(framed.chunks()[1].as_ptr(), payload.as_ptr());
    }

    #[test]
    fn expiry_is_checked_against_the_given_time() {
        let (mut header, _) = decode(sample()).unwrap();
        let now = Utc::now();
        assert!(!header.is_expired(now));
        header.expires = Some(now);
        assert!(header.is_expired(now));
        assert!(!header.is_expired(now - chrono::Duration::seconds(1)));
    }
}
