//! The GCS JSON API on the wire: URL encoding, the multipart/related upload body,
//! object resources, error bodies and range headers. Nothing here does I/O.

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use cairn_backend::{Key, ObjectMeta, PutPayload, Result};

/// Everything but the unreserved characters of RFC 3986 is escaped, `/` included: an
/// object name is one path segment of the JSON API.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes an object or bucket name as one URL path segment.
pub(crate) fn encode_segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// The JSON metadata part of an upload (multipart and resumable alike).
pub(crate) fn object_resource_json(
    name: &str,
    content_type: &str,
    metadata: &BTreeMap<String, String>,
) -> Bytes {
    let mut body = serde_json::json!({
        "name": name,
        "contentType": content_type,
    });
    if !metadata.is_empty() {
        body["metadata"] = serde_json::json!(metadata);
    }
    Bytes::from(body.to_string())
}

/// A `multipart/related` upload body: the JSON metadata part, then the media part. The
/// payload's chunks are used as they are (no copy).
#[derive(Debug)]
pub(crate) struct MultipartBody {
    /// The value of the request's `Content-Type` header.
    pub content_type: String,
    /// The body, in order.
    pub chunks: Vec<Bytes>,
    /// The total length of the body.
    pub len: u64,
}

/// Frames a multipart/related upload with `boundary`, which must not occur in the
/// payload (a random 128-bit boundary is used in practice).
pub(crate) fn multipart_body(
    boundary: &str,
    metadata_json: &[u8],
    content_type: &str,
    payload: &PutPayload,
) -> MultipartBody {
    let mut head = Vec::with_capacity(metadata_json.len() + 256);
    head.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n").as_bytes(),
    );
    head.extend_from_slice(metadata_json);
    head.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").as_bytes(),
    );
    let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let mut chunks = Vec::with_capacity(payload.chunks().len() + 2);
    chunks.push(Bytes::from(head));
    chunks.extend(payload.chunks().iter().cloned());
    chunks.push(tail);
    let len = chunks.iter().map(|c| c.len() as u64).sum();
    MultipartBody {
        content_type: format!("multipart/related; boundary={boundary}"),
        chunks,
        len,
    }
}

/// The fields of a GCS object resource that cairn reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectResource {
    pub name: String,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub updated: Option<String>,
    #[serde(default)]
    pub time_created: Option<String>,
    #[serde(default)]
    pub generation: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, serde_json::Value>>,
}

impl ObjectResource {
    /// The object's metadata under `key`.
    pub fn into_meta(self, key: Key) -> ObjectMeta {
        let last_modified = self
            .updated
            .as_deref()
            .or(self.time_created.as_deref())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or(DateTime::<Utc>::UNIX_EPOCH, |t| t.with_timezone(&Utc));
        let metadata = self
            .metadata
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                serde_json::Value::Null => None,
                other => Some((k, other.to_string())),
            })
            .collect();
        ObjectMeta {
            key,
            size: self.size.and_then(|s| s.parse().ok()).unwrap_or(0),
            last_modified,
            version: self.generation,
            metadata,
        }
    }
}

/// One page of an object listing.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectList {
    #[serde(default)]
    pub items: Vec<ObjectResource>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// The JSON error body of the API: `{"error": {"code", "message", "errors": [...]}}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// What an error answer said: the message and the machine-readable reason, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub message: String,
    pub reason: String,
}

impl ApiError {
    /// Parses an error body; a body that is not the JSON error format is kept as text.
    pub fn parse(body: &[u8]) -> ApiError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => {
                let first = b.error.errors.into_iter().next().unwrap_or_default();
                let message = if b.error.message.is_empty() {
                    first.message
                } else {
                    b.error.message
                };
                ApiError {
                    message,
                    reason: first.reason,
                }
            }
            Err(_) => ApiError {
                message: String::from_utf8_lossy(body)
                    .trim()
                    .chars()
                    .take(500)
                    .collect(),
                reason: String::new(),
            },
        }
    }

    /// Whether a 404 says the bucket is missing, the object is missing, or neither
    /// (`None`: the emulator answers a bare "Not Found" to both).
    pub fn missing_bucket(&self) -> Option<bool> {
        let m = self.message.to_ascii_lowercase();
        if m.contains("bucket") && (m.contains("not exist") || m.contains("not found")) {
            Some(true)
        } else if m.contains("no such object") {
            Some(false)
        } else {
            None
        }
    }
}

/// The `Range` header for a read of `start..end` (`end` exclusive, `None` for "to the end").
pub(crate) fn range_header(start: u64, end: Option<u64>) -> String {
    match end {
        Some(end) => format!("bytes={start}-{}", end - 1),
        None => format!("bytes={start}-"),
    }
}

/// Parses a `Content-Range: bytes a-b/total` answer into `a..b+1` and the total size.
pub(crate) fn parse_content_range(value: &str) -> Option<(Range<u64>, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok();
    let (a, b) = span.trim().split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a..b + 1, total))
}

/// The number of bytes a resumable session holds, from the `Range: bytes=0-N` header
/// of a 308 answer (no header: none).
pub(crate) fn committed_from_range(value: Option<&str>) -> Option<u64> {
    let Some(value) = value else { return Some(0) };
    let rest = value.trim().strip_prefix("bytes=")?;
    let (a, b) = rest.split_once('-')?;
    if a.trim() != "0" {
        return None;
    }
    b.trim().parse::<u64>().ok().map(|b| b + 1)
}

/// Keeps only the bytes `range` of a stream that starts at offset 0 (for a server that
/// answered a ranged read with the whole object).
pub(crate) fn slice_stream(
    body: BoxStream<'static, Result<Bytes>>,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes>> {
    let (start, end) = (range.start, range.end);
    futures::stream::unfold((body, 0u64), move |(mut body, mut pos)| async move {
        loop {
            if pos >= end {
                return None;
            }
            match body.next().await? {
                // An error ends the stream after it is passed on.
                Err(e) => return Some((Err(e), (body, u64::MAX))),
                Ok(chunk) => {
                    let chunk_start = pos;
                    pos += chunk.len() as u64;
                    let (a, b) = (start.max(chunk_start), end.min(pos));
                    if a < b {
                        let out =
                            chunk.slice((a - chunk_start) as usize..(b - chunk_start) as usize);
                        return Some((Ok(out), (body, pos)));
                    }
                }
            }
        }
    })
    .boxed()
}

/// A random multipart boundary.
pub(crate) fn random_boundary() -> String {
    format!("cairn-{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{stream, TryStreamExt};

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(encode_segment("a/b c.json"), "a%2Fb%20c.json");
        assert_eq!(encode_segment("x-1_2~3.txt"), "x-1_2~3.txt");
        assert_eq!(encode_segment("q?x=1&y#z+%"), "q%3Fx%3D1%26y%23z%2B%25");
        assert_eq!(encode_segment("été/日"), "%C3%A9t%C3%A9%2F%E6%97%A5");
    }

    #[test]
    fn multipart_body_is_framed_around_the_payload() {
        let payload =
            PutPayload::from_chunks([Bytes::from_static(b"he"), Bytes::from_static(b"llo")]);
        let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let json = object_resource_json("p/a b", "text/plain", &meta);
        let body = multipart_body("BND", &json, "text/plain", &payload);
        assert_eq!(body.content_type, "multipart/related; boundary=BND");
        // The payload's chunks are passed through, not copied.
        assert_eq!(body.chunks.len(), 4);
        assert_eq!(body.chunks[1].as_ptr(), payload.chunks()[0].as_ptr());
        let all: Vec<u8> = body.chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(body.len, all.len() as u64);
        let text = String::from_utf8(all).unwrap();
        let json_text = std::str::from_utf8(&json).unwrap();
        assert_eq!(
            text,
            format!(
                "--BND\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json_text}\r\n\
                 --BND\r\nContent-Type: text/plain\r\n\r\nhello\r\n--BND--\r\n"
            )
        );
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "p/a b", "contentType": "text/plain", "metadata": {"k": "v"}})
        );
    }

    #[test]
    fn metadata_is_left_out_when_empty() {
        let json = object_resource_json("n", "application/octet-stream", &BTreeMap::new());
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["name"], "n");
        assert!(v.get("metadata").is_none());
    }

    #[test]
    fn boundaries_are_random() {
        let (a, b) = (random_boundary(), random_boundary());
        assert_ne!(a, b);
        assert_eq!(a.len(), "cairn-".len() + 32);
    }

    #[test]
    fn object_resources_become_meta() {
        let r: ObjectResource = serde_json::from_str(
            r#"{"name":"p/k","size":"12","updated":"2024-05-01T10:00:00.123Z",
                "generation":"1714557600123456","metadata":{"a":"b","n":null}}"#,
        )
        .unwrap();
        let m = r.into_meta(Key::parse("k").unwrap());
        assert_eq!(m.size, 12);
        assert_eq!(m.version.as_deref(), Some("1714557600123456"));
        assert_eq!(
            m.last_modified.to_rfc3339(),
            "2024-05-01T10:00:00.123+00:00"
        );
        assert_eq!(m.metadata, BTreeMap::from([("a".into(), "b".into())]));
    }

    #[test]
    fn error_bodies_say_what_is_missing() {
        let gcs_bucket = ApiError::parse(
            br#"{"error":{"code":404,"message":"The specified bucket does not exist.","errors":[{"reason":"notFound","message":"The specified bucket does not exist."}]}}"#,
        );
        assert_eq!(gcs_bucket.missing_bucket(), Some(true));
        assert_eq!(gcs_bucket.reason, "notFound");
        let gcs_object = ApiError::parse(
            br#"{"error":{"code":404,"message":"No such object: b/o","errors":[{"reason":"notFound"}]}}"#,
        );
        assert_eq!(gcs_object.missing_bucket(), Some(false));
        let emulator = ApiError::parse(
            br#"{"error":{"code":404,"message":"Not Found","errors":[{"domain":"global","reason":"Not Found","message":"Not Found"}]}}"#,
        );
        assert_eq!(emulator.missing_bucket(), None);
        assert_eq!(ApiError::parse(b"plain text\n").message, "plain text");
    }

    #[test]
    fn ranges_are_parsed() {
        assert_eq!(range_header(0, Some(10)), "bytes=0-9");
        assert_eq!(range_header(5, None), "bytes=5-");
        assert_eq!(parse_content_range("bytes 1-3/5"), Some((1..4, Some(5))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0..1, None)));
        assert_eq!(parse_content_range("bytes */5"), None);
        assert_eq!(committed_from_range(Some("bytes=0-262143")), Some(262144));
        assert_eq!(committed_from_range(None), Some(0));
        assert_eq!(committed_from_range(Some("bytes=5-9")), None);
    }

    #[tokio::test]
    async fn whole_bodies_are_sliced_to_the_range() {
        let body = stream::iter([
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"defg")),
            Ok(Bytes::from_static(b"hij")),
        ])
        .boxed();
        let out: Vec<Bytes> = slice_stream(body, 2..8).try_collect().await.unwrap();
        assert_eq!(out.concat(), b"cdefgh");
        let body = stream::iter([Ok(Bytes::from_static(b"abc"))]).boxed();
        let out: Vec<Bytes> = slice_stream(body, 0..3).try_collect().await.unwrap();
        assert_eq!(out.concat(), b"abc");
    }
}
