//! The self-describing record format of cache entries and checkpoints.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "CAIRNREC"
//! 8       2     format version, little-endian (2)
//! 10      4     header length H, little-endian
//! 14      H     header, JSON (RecordHeader)
//! 14+H    16    checksum of the header bytes: XXH3-128, little-endian (version 2);
//!               the first 16 bytes of their BLAKE3 (version 1)
//! 30+H    ...   payload (exactly header.payload_len bytes)
//! ```
//!
//! The header carries the payload's length and BLAKE3 digest; [`decode`] checks the
//! magic, the version, the header checksum, the payload length and the payload digest,
//! so a flipped byte or a truncated object anywhere is reported as corrupt and never
//! returned as data. The header's checksum guards against damage, not forgery (the
//! payload's BLAKE3 is the record's identity): version 2 takes XXH3-128, which checks a
//! 300-byte header in about a tenth of BLAKE3's time, a cost every hit and every write
//! pays. Records of version 1 are still read.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::header_write::HeaderFields;
use crate::backend::PutPayload;

/// The first bytes of every record.
pub const MAGIC: &[u8; 8] = b"CAIRNREC";

/// The record format version this build writes.
pub const FORMAT_VERSION: u16 = 2;

/// The oldest record format version this build reads (its header checksum is BLAKE3).
pub const OLDEST_READ_VERSION: u16 = 1;

/// Whether this build reads records of format `version`.
pub fn reads_version(version: u16) -> bool {
    (OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version)
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

/// Payloads larger than this are hashed on all cores.
const PARALLEL_HASH_THRESHOLD: usize = 1 << 20;

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
    /// BLAKE3 of the payload, hex.
    pub payload_blake3: String,
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

/// BLAKE3 of `data`, on all cores for large inputs.
pub fn digest(data: &[u8]) -> blake3::Hash {
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
    let payload_blake3 = crate::cache::hashing::Digest::from(digest(&payload)).hex_buf();
    let header = HeaderFields {
        created: info.created.unwrap_or_else(Utc::now),
        expires: info.expires,
        serializer,
        payload_len: payload.len() as u64,
        payload_blake3: payload_blake3.as_str(),
        key_components: &info.key_components,
        task: info.task.as_deref(),
        output_type: info.output_type.as_deref(),
        declared_digests: &declared_digests,
        cairn_version: env!("CARGO_PKG_VERSION"),
    };
    encode_fields(&header, payload)
}

/// A record framed for [`Backend::put_framed`](crate::backend::Backend::put_framed):
/// the head's length, known before the payload is hashed (a digest is always 64 hex
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
        payload_blake3: "0".repeat(64),
        key_components: info.key_components,
        task: info.task,
        output_type: info.output_type,
        declared_digests,
        cairn_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let head_len = encode_header(&header, Bytes::new()).len() as usize;
    let payload = payload.clone();
    let make_head = Box::new(move || {
        header.payload_blake3 = digest(&payload).to_hex().to_string();
        encode_header(&header, Bytes::new()).into_contiguous()
    });
    (head_len, make_head)
}

/// Frames `payload` under an already built header (its digest and length must match).
pub fn encode_header(header: &RecordHeader, payload: Bytes) -> PutPayload {
    encode_fields(&header.into(), payload)
}

/// [`encode_header`] of borrowed fields.
fn encode_fields(header: &HeaderFields<'_>, payload: Bytes) -> PutPayload {
    // The JSON is written in place after the prefix, whose length field is filled in
    // once the JSON's length is known.
    let mut head = Vec::with_capacity(PREFIX_LEN + 512 + HEADER_DIGEST_LEN);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    head.extend_from_slice(&[0; 4]);
    super::header_write::write(header, &mut head);
    let json_len = head.len() - PREFIX_LEN;
    head[10..PREFIX_LEN].copy_from_slice(&(json_len as u32).to_le_bytes());
    let checksum = header_checksum(FORMAT_VERSION, &head[PREFIX_LEN..]);
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
    let (json, payload_start) = split_header(bytes)?;
    let header: RecordHeader =
        serde_json::from_slice(json).map_err(|e| Corruption(format!("unreadable header: {e}")))?;
    Ok((header, payload_start))
}

/// Checks a record's prefix and header checksum; returns the header's JSON and where
/// the payload starts.
fn split_header(bytes: &[u8]) -> Result<(&[u8], usize), Corruption> {
    let bad = |m: String| Err(Corruption(m));
    if bytes.len() < PREFIX_LEN {
        return bad(format!(
            "{} bytes is too short for a record (truncated?)",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return bad("not a cairn record (bad magic bytes)".into());
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
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
    Ok((json, payload_start))
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
    #[serde(borrow)]
    payload_blake3: std::borrow::Cow<'a, str>,
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
        payload_blake3: &'a str,
        declared_digests: Vec<std::borrow::Cow<'a, str>>,
        cairn_version: &'a str,
    ) -> Self {
        HeaderView {
            created,
            expires,
            serializer: serializer.into(),
            payload_len,
            payload_blake3: payload_blake3.into(),
            _key_components: serde::de::IgnoredAny,
            declared_digests,
            _cairn_version: cairn_version.into(),
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
    let (json, payload_start) = split_header(bytes)?;
    let header = match super::header_scan::scan(json) {
        Some(header) => header,
        None => serde_json::from_slice(json)
            .map_err(|e| Corruption(format!("unreadable header: {e}")))?,
    };
    check_payload(
        bytes,
        payload_start,
        header.payload_len,
        &header.payload_blake3,
        hashed,
    )?;
    Ok((header, payload_start))
}

/// Checks the payload's length and digest against the header's.
fn check_payload(
    bytes: &[u8],
    payload_start: usize,
    payload_len: u64,
    payload_blake3: &str,
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
        Some(h) if h.payload_start == payload_start => h.digest,
        _ => digest(payload),
    };
    // The lowercase hex cairn writes is compared as it is; any other spelling is
    // decoded first.
    if crate::cache::hashing::Digest::from(actual)
        .hex_buf()
        .as_str()
        != payload_blake3
        && blake3::Hash::from_hex(payload_blake3).ok() != Some(actual)
    {
        return Err(Corruption("payload checksum (BLAKE3) mismatch".into()));
    }
    Ok(())
}

/// Hashes a record's payload as a read hands over its bytes in pieces
/// ([`Backend::get_bytes_inspected`](crate::backend::Backend::get_bytes_inspected)),
/// so that checking a record needs no second read of it.
pub(crate) struct PayloadHasher {
    seen: u64,
    prefix: [u8; PREFIX_LEN],
    payload_start: Option<u64>,
    hashing: Hashing,
}

/// A payload of at most this many bytes is kept and hashed in one call at the end: a
/// small record's read then needs no BLAKE3 hasher (about 1.9 KB of state) of its own.
const INLINE_PAYLOAD: usize = 512;

// The inline variant is the large one on purpose: it spares a small read the heap.
#[allow(clippy::large_enum_variant)]
enum Hashing {
    /// The payload so far, all of it.
    Inline {
        buf: [u8; INLINE_PAYLOAD],
        len: usize,
    },
    /// A larger payload, hashed as its pieces come.
    Streaming(Box<blake3::Hasher>),
}

impl Default for PayloadHasher {
    fn default() -> Self {
        PayloadHasher {
            seen: 0,
            prefix: [0; PREFIX_LEN],
            payload_start: None,
            hashing: Hashing::Inline {
                buf: [0; INLINE_PAYLOAD],
                len: 0,
            },
        }
    }
}

impl Hashing {
    fn update(&mut self, part: &[u8]) {
        match self {
            Hashing::Inline { buf, len } if *len + part.len() <= INLINE_PAYLOAD => {
                buf[*len..*len + part.len()].copy_from_slice(part);
                *len += part.len();
            }
            Hashing::Inline { buf, len } => {
                let mut hasher = Box::new(blake3::Hasher::new());
                hasher.update(&buf[..*len]);
                feed(&mut hasher, part);
                *self = Hashing::Streaming(hasher);
            }
            Hashing::Streaming(hasher) => feed(hasher, part),
        }
    }

    fn finalize(&self) -> blake3::Hash {
        match self {
            Hashing::Inline { buf, len } => blake3::hash(&buf[..*len]),
            Hashing::Streaming(hasher) => hasher.finalize(),
        }
    }
}

fn feed(hasher: &mut blake3::Hasher, part: &[u8]) {
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
        let payload_start = match self.payload_start {
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
                let header_len = u32::from_le_bytes([
                    self.prefix[10],
                    self.prefix[11],
                    self.prefix[12],
                    self.prefix[13],
                ]) as u64;
                let p = (PREFIX_LEN + HEADER_DIGEST_LEN) as u64 + header_len;
                self.payload_start = Some(p);
                p
            }
        };
        if end <= payload_start {
            return;
        }
        self.hashing
            .update(&piece[payload_start.saturating_sub(start) as usize..]);
    }

    /// The payload's digest, for a record of `len` bytes in all, when every byte of
    /// it was seen.
    pub(crate) fn finish(&self, len: usize) -> Option<PayloadDigest> {
        let payload_start = self.payload_start?;
        (self.seen == len as u64 && payload_start <= self.seen).then(|| PayloadDigest {
            payload_start: payload_start as usize,
            digest: self.hashing.finalize(),
        })
    }
}

/// A payload's BLAKE3, computed while the record was read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PayloadDigest {
    payload_start: usize,
    digest: blake3::Hash,
}

/// A piece handed over at once (the local store hands over a whole record read in one
/// buffer) is hashed on all cores above this size; the smaller pieces of a streamed
/// read are hashed as they come.
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
        &header.payload_blake3,
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
                assert_eq!(hashed.digest.to_hex().as_str(), header.payload_blake3);
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
                assert_eq!(
                    hashed.digest.to_hex().as_str(),
                    header.payload_blake3,
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
        assert!(err.0.contains("BLAKE3"), "{err}");
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
        let digest = digest(b"[1]").to_hex();
        let ok = format!(
            r#"{{"created":"2026-01-01T00:00:00Z","expires":null,"serializer":"json","payload_len":3,"payload_blake3":"{digest}","cairn_version":"0.1.0"}}"#
        );
        assert!(decode(with_header_json(&ok, b"[1]")).is_ok());
        assert!(decode_view(&with_header_json(&ok, b"[1]"), None).is_ok());
        let bad = [
            ok.replace(r#""created":"2026-01-01T00:00:00Z","#, ""),
            ok.replace("2026-01-01T00:00:00Z", "yesterday"),
            ok.replace(r#""expires":null"#, r#""expires":"soon""#),
            ok.replace(r#","cairn_version":"0.1.0""#, ""),
            ok.replace(r#""serializer":"json""#, r#""serializer":7"#),
            ok.replace(&digest.to_string(), &"0".repeat(64)),
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

    /// Records written by a cairn of format 1 (header checked by BLAKE3) are still
    /// read, whole and by a hit; each version's checksum is checked as that version's,
    /// and a version this build does not know is refused by number.
    #[test]
    fn records_of_format_1_are_read_and_each_version_checks_its_own_checksum() {
        let digest = digest(b"[1]").to_hex();
        let json = format!(
            r#"{{"created":"2026-01-01T00:00:00Z","expires":null,"serializer":"json","payload_len":3,"payload_blake3":"{digest}","cairn_version":"0.1.0"}}"#
        );
        for version in [1, 2] {
            let record = framed_as(version, &json, b"[1]");
            let (header, payload) = decode(record.clone()).unwrap();
            assert_eq!((header.payload_len, &payload[..]), (3, &b"[1]"[..]));
            assert!(decode_view(&record, None).is_ok(), "version {version}");
        }
        assert_eq!(sample()[8..10], FORMAT_VERSION.to_le_bytes());
        assert_eq!(FORMAT_VERSION, 2);
        // A record labelled with the other version than its checksum's.
        for (label, checksum_of) in [(1u16, 2u16), (2, 1)] {
            let mut record = framed_as(checksum_of, &json, b"[1]").to_vec();
            record[8..10].copy_from_slice(&label.to_le_bytes());
            let err = decode(Bytes::from(record.clone())).unwrap_err();
            assert!(err.0.contains("header checksum"), "{label}: {err}");
            assert!(decode_view(&record, None).is_err());
        }
        let mut later = framed_as(2, &json, b"[1]").to_vec();
        later[8..10].copy_from_slice(&3u16.to_le_bytes());
        let err = decode(Bytes::from(later)).unwrap_err();
        assert!(err.0.contains("record format version 3"), "{err}");
        assert!(reads_version(1) && reads_version(2));
        assert!(!reads_version(0) && !reads_version(3));
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
