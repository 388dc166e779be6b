//! One entry, inspected: its record header and its value (`show`).

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;

use crate::backend::{BackendExt, Error, Key, Result};
use crate::maintenance::{Entry, EntryKind, Filter, Maintenance};
use crate::store::record::{self, RecordHeader};
use crate::store::Serializer;

/// A value, rendered for reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    /// How it was decoded: `json`, `msgpack`, `text`, or `bytes` (a hex dump).
    pub format: String,
    /// The rendering (pretty JSON, the text, or a hex dump of the first bytes).
    pub text: String,
    /// Whether the rendering was cut.
    pub truncated: bool,
}

/// What [`Maintenance::show`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Shown {
    /// The entry.
    pub path: String,
    /// Its kind.
    pub kind: EntryKind,
    /// Its size in bytes.
    pub size: u64,
    /// When the store last wrote it.
    pub modified: DateTime<Utc>,
    /// The record header, for records.
    pub header: Option<RecordHeader>,
    /// Why the record failed its checks, if it did.
    pub problem: Option<String>,
    /// The value.
    pub preview: Preview,
}

/// Bytes shown as hex when a value is not text.
const HEX_BYTES: usize = 64;

impl Maintenance {
    /// Reads one entry, named by its path or by (a unique prefix of) its cache key,
    /// checks it when it is a record, and renders its value: JSON, MessagePack and
    /// text pretty-printed and cut at `limit` characters; anything else as its first
    /// bytes.
    ///
    /// # Errors
    /// [`Error::NotFound`] naming the store when nothing matches; [`Error::Config`]
    /// when a key prefix matches several records.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use cairn::maintenance::Maintenance;
    /// use cairn::{record::RecordInfo, PutMode, ResultStore};
    ///
    /// let store = ResultStore::memory();
    /// let info = RecordInfo { task: Some("add".into()), ..Default::default() };
    /// store.write_record("cache/v1/default/ab/abcd12", &vec![1, 2], info, PutMode::Create).await?;
    /// let shown = Maintenance::new(&store).show("abcd", 1000).await?;
    /// assert_eq!(shown.header.unwrap().task.as_deref(), Some("add"));
    /// assert_eq!(shown.preview.format, "json");
    /// assert!(shown.preview.text.contains('2'));
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub async fn show(&self, path_or_key: &str, limit: usize) -> Result<Shown> {
        let path = self.resolve(path_or_key).await?;
        let key = Key::parse(path.as_str())?;
        let (meta, bytes) = self.backend.get_bytes(&key, None).await?;
        let entry = Entry::classify(&meta);
        let is_record = bytes.starts_with(record::MAGIC);
        let (header, problem, preview) = if is_record {
            match record::decode(bytes.clone()) {
                Ok((header, payload)) => {
                    let preview = preview_payload(&header.serializer, payload, limit);
                    (Some(header), None, preview)
                }
                Err(c) => {
                    let header = record::decode_header(&bytes).ok().map(|(h, _)| h);
                    (header, Some(c.0), hex_preview(&bytes))
                }
            }
        } else {
            let serializer = Serializer::for_location(&path, Serializer::TEXT);
            (None, None, preview_payload(serializer.name(), bytes, limit))
        };
        Ok(Shown {
            path,
            kind: entry.kind,
            size: meta.size,
            modified: meta.last_modified,
            header,
            problem,
            preview,
        })
    }

    async fn resolve(&self, path_or_key: &str) -> Result<String> {
        if let Ok(key) = Key::parse(path_or_key) {
            if self.backend.exists(&key).await? {
                return Ok(path_or_key.to_owned());
            }
        }
        let hexish = path_or_key.len() >= 4 && path_or_key.bytes().all(|b| b.is_ascii_hexdigit());
        let not_found = || Error::NotFound {
            backend: self.backend.describe(),
            key: path_or_key.to_owned(),
        };
        if !hexish {
            return Err(not_found());
        }
        let filter = Filter {
            kinds: vec![EntryKind::Cache, EntryKind::Result],
            ..Filter::default()
        };
        let backend = self.backend.clone();
        let mut found = Vec::new();
        for prefix in ["cache/", "runs/"] {
            let mut listing = backend.list(prefix);
            while let Some(meta) = listing.try_next().await? {
                let e = Entry::classify(&meta);
                if filter.wants(e.kind)
                    && e.key.as_deref().is_some_and(|k| k.starts_with(path_or_key))
                {
                    found.push(e.path);
                }
            }
        }
        match found.len() {
            0 => Err(not_found()),
            1 => Ok(found.remove(0)),
            n => Err(Error::Config {
                message: format!(
                    "{}: key prefix '{path_or_key}' matches {n} records ({}, ...): give more of it",
                    self.backend.describe(),
                    found[..2].join(", ")
                ),
            }),
        }
    }
}

fn preview_payload(serializer: &str, payload: bytes::Bytes, limit: usize) -> Preview {
    let format = serializer.strip_suffix("+zstd").unwrap_or(serializer);
    let decoded: Option<serde_json::Value> = Serializer::from_name(serializer)
        .filter(|_| matches!(format, "json" | "msgpack"))
        .and_then(|s| s.deserialize(payload.clone()).ok());
    if let Some(value) = decoded {
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        return cut(format, text, limit);
    }
    // Decompressed when the serializer compressed it, else as stored.
    let raw = if serializer.ends_with("+zstd") {
        "bytes+zstd"
    } else {
        "bytes"
    };
    let text_bytes = Serializer::from_name(raw)
        .and_then(|s| s.deserialize::<bytes::Bytes>(payload.clone()).ok());
    match text_bytes.and_then(|b| String::from_utf8(b.to_vec()).ok()) {
        Some(text) => cut("text", text, limit),
        None => hex_preview(&payload),
    }
}

fn cut(format: &str, text: String, limit: usize) -> Preview {
    let truncated = text.chars().count() > limit;
    let text = if truncated {
        text.chars().take(limit).collect()
    } else {
        text
    };
    Preview {
        format: format.to_owned(),
        text,
        truncated,
    }
}

fn hex_preview(bytes: &[u8]) -> Preview {
    let head = &bytes[..bytes.len().min(HEX_BYTES)];
    let text = head
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n");
    Preview {
        format: "bytes".into(),
        text,
        truncated: bytes.len() > HEX_BYTES,
    }
}
