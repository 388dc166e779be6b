//! Bodies of writes and results of reads.

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::{Key, Result};

/// The body of a write: a sequence of byte chunks, written back to back.
///
/// Chunks are reference-counted [`Bytes`], so building a payload from a large value,
/// prepending a small header to it, or slicing it into multipart parts copies nothing.
///
/// ```
/// use bytes::Bytes;
/// use cairn_backend::PutPayload;
/// let p = PutPayload::from_chunks([Bytes::from_static(b"head"), Bytes::from_static(b"body")]);
/// assert_eq!(p.len(), 8);
/// assert_eq!(p.range(2..6), Bytes::from_static(b"adbo"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct PutPayload {
    chunks: Vec<Bytes>,
    len: u64,
}

impl PutPayload {
    /// A payload from chunks, in order. Empty chunks are dropped.
    pub fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let chunks: Vec<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        PutPayload { chunks, len }
    }

    /// The total length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The bytes in `range` as one contiguous buffer: without copying when the range
    /// lies in a single chunk, by copying otherwise.
    ///
    /// # Panics
    /// If `range` is out of bounds.
    pub fn range(&self, range: Range<u64>) -> Bytes {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range out of bounds"
        );
        let mut offset = 0u64;
        let mut out: Option<BytesMut> = None;
        for chunk in &self.chunks {
            let chunk_end = offset + chunk.len() as u64;
            if chunk_end <= range.start {
                offset = chunk_end;
                continue;
            }
            if offset >= range.end {
                break;
            }
            let from = range.start.saturating_sub(offset) as usize;
            let to = (range.end.min(chunk_end) - offset) as usize;
            if out.is_none() && offset <= range.start && chunk_end >= range.end {
                return chunk.slice(from..to);
            }
            out.get_or_insert_with(|| BytesMut::with_capacity((range.end - range.start) as usize))
                .extend_from_slice(&chunk[from..to]);
            offset = chunk_end;
        }
        out.map(BytesMut::freeze).unwrap_or_default()
    }

    /// The whole payload as one buffer (a copy only when there is more than one chunk).
    pub fn into_contiguous(self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().unwrap_or_default(),
            _ => self.range(0..self.len),
        }
    }
}

impl From<Bytes> for PutPayload {
    fn from(value: Bytes) -> Self {
        PutPayload::from_chunks([value])
    }
}

impl From<Vec<u8>> for PutPayload {
    fn from(value: Vec<u8>) -> Self {
        PutPayload::from(Bytes::from(value))
    }
}

impl From<&'static [u8]> for PutPayload {
    fn from(value: &'static [u8]) -> Self {
        PutPayload::from(Bytes::from_static(value))
    }
}

impl From<&'static str> for PutPayload {
    fn from(value: &'static str) -> Self {
        PutPayload::from(Bytes::from_static(value.as_bytes()))
    }
}

impl From<String> for PutPayload {
    fn from(value: String) -> Self {
        PutPayload::from(Bytes::from(value))
    }
}

/// How a write treats an existing object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    #[default]
    Overwrite,
    /// Write only if the key does not exist; otherwise [`Error::AlreadyExists`](crate::Error::AlreadyExists).
    /// Of any number of concurrent `Create` writes to one key, exactly one succeeds.
    Create,
    /// Write only if the object is still at this version (from [`ObjectMeta::version`]);
    /// otherwise [`Error::PreconditionFailed`](crate::Error::PreconditionFailed).
    IfMatch(String),
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// How an existing object is treated.
    pub mode: PutMode,
    /// User metadata stored with the object (where [`Capabilities::user_metadata`](crate::Capabilities::user_metadata)).
    pub metadata: BTreeMap<String, String>,
    /// The MIME type, where the store records one.
    pub content_type: Option<String>,
    /// The object is a hint that may be lost in a power cut (a record's `used` marker):
    /// a local disk that syncs its writes does not sync this one. Object stores, whose
    /// writes are durable when acknowledged, ignore it.
    pub hint: bool,
    /// The caller has no use for the written object's version: a store that would
    /// spend a system call only to learn it (the local store's `fstat`) gives `None`
    /// in [`PutResult::version`] instead. Stores that learn it for free still give it.
    pub skip_version: bool,
}

impl From<PutMode> for PutOptions {
    fn from(mode: PutMode) -> Self {
        PutOptions {
            mode,
            ..Default::default()
        }
    }
}

/// What a reader of [`Backend::get_inspected`](crate::Backend::get_inspected) and
/// [`Backend::get_now`](crate::Backend::get_now) asks for besides the bytes.
///
/// ```
/// use cairn_backend::ReadWants;
///
/// // The default: no version, and a missing bucket told apart from a missing object.
/// let wants = ReadWants::default();
/// assert!(!wants.version && wants.bucket_check);
/// // A cache lookup that keeps the version and treats both as a miss until it writes.
/// let lookup = ReadWants { version: true, bucket_check: false };
/// assert_ne!(wants, lookup);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadWants {
    /// The object's version (`None` comes back without it).
    pub version: bool,
    /// A missing object told apart from a missing bucket (the local store's root
    /// directory), as every other read does. Without it a missing object is
    /// [`Error::NotFound`](crate::Error::NotFound) whether or not its bucket exists:
    /// for a reader that takes both for a miss and writes next, whose write then
    /// reports the missing bucket (a write never creates one). The local store then
    /// spares a miss the `stat` of its root.
    pub bucket_check: bool,
}

impl Default for ReadWants {
    fn default() -> Self {
        ReadWants {
            version: false,
            bucket_check: true,
        }
    }
}

impl ReadWants {
    /// The default, with the object's version when `version` asks for it.
    pub fn with_version(version: bool) -> Self {
        ReadWants {
            version,
            ..ReadWants::default()
        }
    }
}

/// What a successful write returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutResult {
    /// The version of the object just written (ETag, generation, ...), usable with
    /// [`PutMode::IfMatch`].
    pub version: Option<String>,
}

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: Key,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, by the store's clock.
    pub last_modified: DateTime<Utc>,
    /// Its version (ETag, generation, ...), if the store has one.
    pub version: Option<String>,
    /// User metadata (filled by `head`; listings may leave it empty).
    pub metadata: BTreeMap<String, String>,
}

/// A byte range to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetRange {
    /// Bytes `start..end`; `end` is clamped to the object's size.
    Bounded(Range<u64>),
    /// From an offset to the end.
    From(u64),
}

impl GetRange {
    /// The concrete range within an object of `size` bytes, or `None` if it starts
    /// past the end.
    pub fn resolve(&self, size: u64) -> Option<Range<u64>> {
        let r = match self {
            GetRange::Bounded(r) => r.start..r.end.min(size),
            GetRange::From(s) => *s..size,
        };
        (r.start <= r.end && (r.start < size || (r.start == 0 && size == 0))).then_some(r)
    }
}

/// Resolves an optional range (`None`: the whole object) against an object of `size`
/// bytes.
///
/// # Errors
/// [`Error::Other`](crate::Error::Other) naming `backend` and `key` when the range
/// starts past the end.
pub fn resolve_range(
    range: Option<&GetRange>,
    size: u64,
    backend: &str,
    key: &str,
) -> Result<Range<u64>> {
    match range {
        None => Ok(0..size),
        Some(r) => r.resolve(size).ok_or_else(|| {
            crate::Error::other(
                backend,
                key,
                format!("range {r:?} starts past the end ({size} bytes)"),
            )
        }),
    }
}

impl From<Range<u64>> for GetRange {
    fn from(r: Range<u64>) -> Self {
        GetRange::Bounded(r)
    }
}

/// The answer to a read: the object's metadata and a stream of its bytes.
pub struct GetResult {
    /// The object's metadata.
    pub meta: ObjectMeta,
    /// The byte range being returned.
    pub range: Range<u64>,
    /// The bytes, in order.
    pub body: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl GetResult {
    /// Collects the body into one buffer, allocated once at its final size.
    pub async fn bytes(mut self) -> Result<Bytes> {
        let expected = (self.range.end - self.range.start) as usize;
        let first = match self.body.next().await {
            None => return Ok(Bytes::new()),
            Some(chunk) => chunk?,
        };
        if first.len() >= expected {
            // A single chunk (memory backend, small objects): no copy at all.
            if let Some(next) = self.body.next().await {
                let mut buf =
                    BytesMut::with_capacity(first.len() + next.as_ref().map_or(0, |b| b.len()));
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&next?);
                while let Some(chunk) = self.body.next().await {
                    buf.extend_from_slice(&chunk?);
                }
                return Ok(buf.freeze());
            }
            return Ok(first);
        }
        let mut buf = BytesMut::with_capacity(expected);
        buf.extend_from_slice(&first);
        while let Some(chunk) = self.body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_within_one_chunk_shares_memory() {
        let big = Bytes::from(vec![7u8; 1000]);
        let p = PutPayload::from_chunks([Bytes::from_static(b"hdr"), big.clone()]);
        let part = p.range(10..500);
        assert_eq!(part.len(), 490);
        // Same allocation: the slice points into `big`.
        assert_eq!(part.as_ptr(), big[7..].as_ptr());
    }

    #[test]
    fn range_across_chunks_is_stitched_in_order() {
        let p = PutPayload::from_chunks([
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"def"),
            Bytes::from_static(b"gh"),
        ]);
        assert_eq!(p.len(), 8);
        assert_eq!(p.chunks().len(), 3);
        assert_eq!(p.range(1..7), Bytes::from_static(b"bcdefg"));
        assert_eq!(p.range(0..8), Bytes::from_static(b"abcdefgh"));
        assert_eq!(p.range(4..4), Bytes::new());
        assert_eq!(p.clone().into_contiguous(), Bytes::from_static(b"abcdefgh"));
    }

    #[test]
    fn get_range_resolves_against_the_size() {
        assert_eq!(GetRange::Bounded(2..50).resolve(10), Some(2..10));
        assert_eq!(GetRange::From(3).resolve(10), Some(3..10));
        assert_eq!(GetRange::From(10).resolve(10), None);
        assert_eq!(GetRange::Bounded(0..5).resolve(0), Some(0..0));
    }
}
