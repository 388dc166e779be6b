//! Serializers: how a value becomes bytes in a store, and back.

use std::any::{Any, TypeId};
use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::Source;

/// The encoding of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON (`serde_json`): readable by every tool.
    Json,
    /// MessagePack (`rmp-serde`, with field names): compact binary.
    MessagePack,
    /// Raw bytes: `Bytes`, `Vec<u8>` or `String` stored as they are.
    Bytes,
    /// UTF-8 text: a `String` as it is; numbers and booleans as their text.
    Text,
}

/// Compression applied after encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Stored as encoded.
    #[default]
    None,
    /// Zstandard at the given level (1–22; 3 is a good default).
    Zstd(i32),
}

/// A [`Format`] plus optional [`Compression`]: how a value is stored.
///
/// The serializer of a target is picked from its extension ([`Serializer::for_location`]):
///
/// | extension | serializer |
/// |---|---|
/// | `.json` | JSON |
/// | `.msgpack`, `.mpk` | MessagePack |
/// | `.txt`, `.csv`, `.tsv`, `.md`, `.html`, `.log` | text |
/// | `.bin` | raw bytes |
/// | any of these + `.zst` | the same, zstd-compressed |
/// | anything else | the store's or task's default |
///
/// ```
/// use cairn::{Serializer, Format};
/// let s = Serializer::for_location("daily/report.json.zst", Serializer::MSGPACK);
/// assert_eq!(s.format, Format::Json);
/// assert_eq!(s.name(), "json+zstd");
/// let bytes = s.serialize(&vec![1, 2, 3]).unwrap();
/// let back: Vec<i32> = s.deserialize(bytes).unwrap();
/// assert_eq!(back, vec![1, 2, 3]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Serializer {
    /// The encoding.
    pub format: Format,
    /// The compression.
    pub compression: Compression,
}

impl Default for Serializer {
    fn default() -> Self {
        Serializer::JSON
    }
}

impl fmt::Display for Serializer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serializer {
    /// JSON, uncompressed.
    pub const JSON: Serializer = Serializer::of(Format::Json);
    /// MessagePack, uncompressed.
    pub const MSGPACK: Serializer = Serializer::of(Format::MessagePack);
    /// Raw bytes, uncompressed.
    pub const BYTES: Serializer = Serializer::of(Format::Bytes);
    /// UTF-8 text, uncompressed.
    pub const TEXT: Serializer = Serializer::of(Format::Text);

    const fn of(format: Format) -> Self {
        Serializer {
            format,
            compression: Compression::None,
        }
    }

    /// The same encoding, zstd-compressed at `level`.
    pub const fn zstd(self, level: i32) -> Self {
        Serializer {
            format: self.format,
            compression: Compression::Zstd(level),
        }
    }

    /// The serializer a location's extension asks for, or `default`.
    pub fn for_location(location: &str, default: Serializer) -> Serializer {
        let name = location.rsplit('/').next().unwrap_or(location);
        let (name, zstd) = match name.strip_suffix(".zst") {
            Some(inner) => (inner, true),
            None => (name, false),
        };
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        let format = match ext.as_str() {
            "json" => Format::Json,
            "msgpack" | "mpk" => Format::MessagePack,
            "txt" | "csv" | "tsv" | "md" | "html" | "log" => Format::Text,
            "bin" => Format::Bytes,
            _ if zstd => default.format,
            _ => return default,
        };
        Serializer {
            format,
            compression: if zstd {
                Compression::Zstd(3)
            } else {
                Compression::None
            },
        }
    }

    /// The serializer a value of type `T` is stored with when `self` is only a default
    /// (a record, or a target whose extension names no serializer): byte values
    /// (`Bytes`, `Vec<u8>`) go raw, keeping `self`'s compression, and never through a
    /// text or structured encoding by accident (JSON would write a 100 MB `Bytes` as
    /// an array of numbers, four times its size). Other types keep `self`.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use cairn::Serializer;
    /// assert_eq!(Serializer::JSON.for_value::<Bytes>(), Serializer::BYTES);
    /// assert_eq!(Serializer::JSON.zstd(3).for_value::<Vec<u8>>(), Serializer::BYTES.zstd(3));
    /// assert_eq!(Serializer::JSON.for_value::<Vec<u32>>(), Serializer::JSON);
    /// ```
    pub fn for_value<T: 'static>(self) -> Serializer {
        if is_byte_type::<T>() {
            Serializer {
                format: Format::Bytes,
                compression: self.compression,
            }
        } else {
            self
        }
    }

    /// A short name, stored in record headers: `json`, `msgpack+zstd`, ...
    pub fn name(&self) -> &'static str {
        let zstd = matches!(self.compression, Compression::Zstd(_));
        match (self.format, zstd) {
            (Format::Json, false) => "json",
            (Format::Json, true) => "json+zstd",
            (Format::MessagePack, false) => "msgpack",
            (Format::MessagePack, true) => "msgpack+zstd",
            (Format::Bytes, false) => "bytes",
            (Format::Bytes, true) => "bytes+zstd",
            (Format::Text, false) => "text",
            (Format::Text, true) => "text+zstd",
        }
    }

    /// The serializer a [`Serializer::name`] stands for.
    pub fn from_name(name: &str) -> Option<Serializer> {
        let (base, zstd) = match name.strip_suffix("+zstd") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let s = match base {
            "json" => Serializer::JSON,
            "msgpack" => Serializer::MSGPACK,
            "bytes" => Serializer::BYTES,
            "text" => Serializer::TEXT,
            _ => return None,
        };
        Some(if zstd { s.zstd(3) } else { s })
    }

    /// Encodes (and compresses) a value. `Bytes` values are stored without a copy.
    ///
    /// # Errors
    /// When the value has no representation in this format (a map as text, a struct as
    /// raw bytes) or serde fails.
    pub fn serialize<T: Serialize + 'static>(&self, value: &T) -> Result<Bytes, Source> {
        let encoded = match self.format {
            Format::Json => Bytes::from(serde_json::to_vec(value)?),
            Format::MessagePack => Bytes::from(rmp_serde::to_vec_named(value)?),
            Format::Bytes => raw_bytes(value).ok_or_else(|| {
                format!(
                    "the bytes serializer stores Bytes, Vec<u8> or String, not {}",
                    type_name_of::<T>()
                )
            })?,
            Format::Text => text(value)?,
        };
        Ok(match self.compression {
            Compression::None => encoded,
            Compression::Zstd(level) => Bytes::from(zstd::bulk::compress(&encoded, level)?),
        })
    }

    /// [`Serializer::serialize`], except that a `Vec<u8>` stored raw lends its buffer
    /// to the bytes instead of being copied into them. The value is left empty until the
    /// returned [`LentBuffer`] is dropped, which gives the buffer back: without a copy
    /// when nothing else holds the bytes by then (a store that keeps them, as the
    /// memory store does, costs one copy on the way back).
    pub(crate) fn serialize_lending<'v, T: Serialize + 'static>(
        &self,
        value: &'v mut T,
    ) -> Result<(Bytes, Option<LentBuffer<'v, T>>), Source> {
        let raw = matches!(
            (self.format, self.compression),
            (Format::Bytes, Compression::None)
        );
        let taken = match (value as &mut dyn Any).downcast_mut::<Vec<u8>>() {
            Some(owner) if raw => Some(std::mem::take(owner)),
            _ => None,
        };
        if let Some(buffer) = taken {
            let bytes = Bytes::from(buffer);
            let lent = LentBuffer {
                owner: value,
                bytes: bytes.clone(),
            };
            return Ok((bytes, Some(lent)));
        }
        Ok((self.serialize(value)?, None))
    }

    /// Decompresses and decodes a value. `Bytes` and `Vec<u8>` are returned without a copy.
    ///
    /// # Errors
    /// When the bytes are not valid in this format or do not fit `T`.
    pub fn deserialize<T: DeserializeOwned + 'static>(&self, bytes: Bytes) -> Result<T, Source> {
        self.deserialize_at(bytes, 0)
    }

    /// [`Serializer::deserialize`] of the bytes from `start` on: a format that reads a
    /// borrowed slice reads them where they lie, without a `Bytes` of their own.
    pub(crate) fn deserialize_at<T: DeserializeOwned + 'static>(
        &self,
        bytes: Bytes,
        start: usize,
    ) -> Result<T, Source> {
        match (self.compression, self.format) {
            (Compression::None, Format::Json) => {
                return Ok(serde_json::from_slice(&bytes[start..])?)
            }
            (Compression::None, Format::MessagePack) => {
                return Ok(rmp_serde::from_slice(&bytes[start..])?)
            }
            _ => {}
        }
        let bytes = if start == 0 {
            bytes
        } else {
            bytes.slice(start..)
        };
        let bytes = match self.compression {
            Compression::None => bytes,
            Compression::Zstd(_) => Bytes::from(zstd::stream::decode_all(&bytes[..])?),
        };
        match self.format {
            Format::Json => Ok(serde_json::from_slice(&bytes)?),
            Format::MessagePack => Ok(rmp_serde::from_slice(&bytes)?),
            Format::Bytes => from_raw_bytes(bytes).ok_or_else(|| {
                format!(
                    "the bytes serializer reads into Bytes, Vec<u8> or String, not {}",
                    type_name_of::<T>()
                )
                .into()
            }),
            Format::Text => from_text(bytes),
        }
    }
}

/// A `Vec<u8>` value's buffer lent to the bytes it is stored as
/// ([`Serializer::serialize_lending`]); given back to the value when dropped.
pub(crate) struct LentBuffer<'v, T: 'static> {
    owner: &'v mut T,
    bytes: Bytes,
}

impl<T: 'static> Drop for LentBuffer<'_, T> {
    fn drop(&mut self) {
        if let Some(owner) = (self.owner as &mut dyn Any).downcast_mut::<Vec<u8>>() {
            // Takes the buffer back when these are the last bytes holding it, else copies.
            *owner = Vec::from(std::mem::take(&mut self.bytes));
        }
    }
}

/// Whether `T` is a byte buffer, stored raw under any default serializer.
fn is_byte_type<T: 'static>() -> bool {
    let id = TypeId::of::<T>();
    id == TypeId::of::<Bytes>() || id == TypeId::of::<Vec<u8>>()
}

/// `Bytes` (shared), `Vec<u8>`, `String`, `str` slices as stored bytes.
fn raw_bytes<T: 'static>(value: &T) -> Option<Bytes> {
    let any = value as &dyn Any;
    if let Some(b) = any.downcast_ref::<Bytes>() {
        return Some(b.clone());
    }
    if let Some(v) = any.downcast_ref::<Vec<u8>>() {
        return Some(Bytes::copy_from_slice(v));
    }
    if let Some(s) = any.downcast_ref::<String>() {
        return Some(Bytes::copy_from_slice(s.as_bytes()));
    }
    if let Some(s) = any.downcast_ref::<&'static str>() {
        return Some(Bytes::from_static(s.as_bytes()));
    }
    None
}

fn from_raw_bytes<T: 'static>(bytes: Bytes) -> Option<T> {
    let id = TypeId::of::<T>();
    let boxed: Box<dyn Any> = if id == TypeId::of::<Bytes>() {
        Box::new(bytes)
    } else if id == TypeId::of::<Vec<u8>>() {
        // Takes over the buffer when it is not shared.
        Box::new(Vec::<u8>::from(bytes))
    } else if id == TypeId::of::<String>() {
        Box::new(String::from_utf8(Vec::<u8>::from(bytes)).ok()?)
    } else {
        return None;
    };
    boxed.downcast::<T>().ok().map(|b| *b)
}

fn text<T: Serialize + 'static>(value: &T) -> Result<Bytes, Source> {
    if let Some(b) = raw_bytes(value) {
        if (value as &dyn Any).downcast_ref::<Bytes>().is_some()
            || (value as &dyn Any).downcast_ref::<Vec<u8>>().is_some()
        {
            std::str::from_utf8(&b).map_err(|e| format!("bytes are not UTF-8 text: {e}"))?;
        }
        return Ok(b);
    }
    match serde_json::to_value(value)? {
        serde_json::Value::String(s) => Ok(Bytes::from(s)),
        v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
            Ok(Bytes::from(v.to_string()))
        }
        other => Err(format!(
            "the text serializer stores strings, numbers and booleans, not {} ({}); use a .json target",
            kind_of(&other),
            type_name_of::<T>()
        )
        .into()),
    }
}

fn from_text<T: DeserializeOwned + 'static>(bytes: Bytes) -> Result<T, Source> {
    if TypeId::of::<T>() == TypeId::of::<String>() || TypeId::of::<T>() == TypeId::of::<Bytes>() {
        if TypeId::of::<T>() == TypeId::of::<String>() {
            std::str::from_utf8(&bytes).map_err(|e| format!("stored text is not UTF-8: {e}"))?;
        }
        return from_raw_bytes(bytes).ok_or_else(|| "stored text is not UTF-8".into());
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("stored text is not UTF-8: {e}"))?;
    // A string-like type (an enum of names, a newtype) first, then a number or boolean.
    if let Ok(v) = serde_json::from_value::<T>(serde_json::Value::String(text.to_string())) {
        return Ok(v);
    }
    serde_json::from_str::<T>(text.trim()).map_err(|e| {
        format!(
            "text '{}' does not parse as {}: {e}",
            preview(text),
            type_name_of::<T>()
        )
        .into()
    })
}

fn preview(text: &str) -> String {
    let mut p: String = text.chars().take(40).collect();
    if p.len() < text.len() {
        p.push('…');
    }
    p
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a sequence",
        serde_json::Value::Object(_) => "a map",
    }
}

/// `T`'s name as users write it: `String`, `Vec<u32>`, `HashMap<i32, String>` — not
/// `alloc::string::String`.
pub(crate) fn type_name_of<T: ?Sized>() -> String {
    short_type_name(std::any::type_name::<T>())
}

/// `full` with every module path left out.
pub(crate) fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            segment.clear();
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Row {
        name: String,
        score: f64,
        tags: Vec<String>,
    }

    /// Every format, uncompressed.
    const EVERY_FORMAT: [Serializer; 4] = [
        Serializer::JSON,
        Serializer::MSGPACK,
        Serializer::BYTES,
        Serializer::TEXT,
    ];

    fn row() -> Row {
        Row {
            name: "ada".into(),
            score: 9.5,
            tags: vec!["x".into()],
        }
    }

    #[test]
    fn structured_formats_round_trip_with_and_without_zstd() {
        for s in [Serializer::JSON, Serializer::MSGPACK] {
            for s in [s, s.zstd(3)] {
                let bytes = s.serialize(&row()).unwrap();
                assert_eq!(s.deserialize::<Row>(bytes).unwrap(), row(), "{s}");
            }
        }
    }

    #[test]
    fn a_value_is_read_where_it_lies_in_a_larger_buffer() {
        let prefix = b"header bytes before the value";
        for base in EVERY_FORMAT {
            for s in [base, base.zstd(3)] {
                let in_buffer = |encoded: &Bytes| {
                    let mut all = prefix.to_vec();
                    all.extend_from_slice(encoded);
                    Bytes::from(all)
                };
                if matches!(base.format, Format::Json | Format::MessagePack) {
                    let all = in_buffer(&s.serialize(&row()).unwrap());
                    let got: Row = s.deserialize_at(all, prefix.len()).unwrap();
                    assert_eq!(got, row(), "{s}");
                }
                let text = "a value of text".to_owned();
                let all = in_buffer(&s.serialize(&text).unwrap());
                let got: String = s.deserialize_at(all.clone(), prefix.len()).unwrap();
                assert_eq!(got, text, "{s}");
                let got: Bytes = s.deserialize_at(all.clone(), prefix.len()).unwrap();
                let whole: Bytes = s.deserialize(all.slice(prefix.len()..)).unwrap();
                assert_eq!(got, whole, "{s}");
                // A value that does not fit fails as it does from its own buffer.
                let bad = s.deserialize_at::<u64>(all.clone(), prefix.len()).is_err();
                assert_eq!(
                    bad,
                    s.deserialize::<u64>(all.slice(prefix.len()..)).is_err(),
                    "{s}"
                );
            }
        }
    }

    #[test]
    fn json_is_plain_json() {
        let bytes = Serializer::JSON.serialize(&row()).unwrap();
        assert_eq!(
            &bytes[..],
            br#"{"name":"ada","score":9.5,"tags":["x"]}"#.as_slice()
        );
    }

    #[test]
    fn zstd_really_compresses() {
        let big = "a".repeat(100_000);
        let plain = Serializer::TEXT.serialize(&big).unwrap();
        let packed = Serializer::TEXT.zstd(3).serialize(&big).unwrap();
        assert!(packed.len() < plain.len() / 50, "{}", packed.len());
        assert_eq!(
            Serializer::TEXT
                .zstd(3)
                .deserialize::<String>(packed)
                .unwrap(),
            big
        );
    }

    #[test]
    fn raw_bytes_are_not_copied() {
        let value = Bytes::from(vec![1u8; 4096]);
        let stored = Serializer::BYTES.serialize(&value).unwrap();
        assert_eq!(stored.as_ptr(), value.as_ptr());
        let back: Bytes = Serializer::BYTES.deserialize(stored.clone()).unwrap();
        assert_eq!(back.as_ptr(), stored.as_ptr());
    }

    #[test]
    fn raw_bytes_read_into_vec_takes_the_buffer() {
        let stored = Bytes::from(vec![9u8; 1024]);
        let ptr = stored.as_ptr();
        let v: Vec<u8> = Serializer::BYTES.deserialize(stored).unwrap();
        assert_eq!(v.as_ptr(), ptr);
    }

    #[test]
    fn a_vec_stored_raw_lends_its_buffer_and_gets_it_back() {
        // Capacity beyond the length, as a grown vector has.
        let mut v = Vec::with_capacity(4096);
        v.extend((0..3000u32).map(|i| i as u8));
        let (ptr, cap, expected) = (v.as_ptr(), v.capacity(), v.clone());
        let (bytes, lent) = Serializer::BYTES.serialize_lending(&mut v).unwrap();
        assert_eq!(
            bytes.as_ptr(),
            ptr,
            "the payload is the vector's own buffer"
        );
        assert_eq!(bytes, expected);
        assert!(lent.is_some());
        drop(bytes);
        drop(lent);
        assert_eq!(
            (v.as_ptr(), v.capacity()),
            (ptr, cap),
            "the buffer came back"
        );
        assert_eq!(v, expected);

        // Bytes still held elsewhere (a store that keeps them): the value gets a copy.
        let (bytes, lent) = Serializer::BYTES.serialize_lending(&mut v).unwrap();
        drop(lent);
        assert_eq!(v, expected);
        assert_ne!(v.as_ptr(), bytes.as_ptr());
        assert_eq!(bytes, expected);

        // A length equal to the capacity takes the other representation inside `Bytes`.
        let mut exact = vec![7u8; 100];
        exact.shrink_to_fit();
        let ptr = exact.as_ptr();
        let (bytes, lent) = Serializer::BYTES.serialize_lending(&mut exact).unwrap();
        drop((bytes, lent));
        assert_eq!((exact.as_ptr(), exact.len()), (ptr, 100));
    }

    #[test]
    fn only_a_raw_uncompressed_vec_is_lent() {
        let mut v = b"[1,2]".to_vec();
        for serializer in [
            Serializer::JSON,
            Serializer::TEXT,
            Serializer::BYTES.zstd(3),
        ] {
            let (bytes, lent) = serializer.serialize_lending(&mut v).unwrap();
            assert!(lent.is_none(), "{}", serializer.name());
            assert_eq!(bytes, serializer.serialize(&b"[1,2]".to_vec()).unwrap());
        }
        assert_eq!(v, b"[1,2]");
        let mut b = Bytes::from_static(b"shared");
        let (bytes, lent) = Serializer::BYTES.serialize_lending(&mut b).unwrap();
        assert!(lent.is_none());
        drop(lent);
        assert_eq!((bytes.as_ptr(), &b[..]), (b.as_ptr(), &b"shared"[..]));
    }

    #[test]
    fn raw_bytes_refuse_structured_values() {
        let err = Serializer::BYTES.serialize(&row()).unwrap_err();
        assert!(err.to_string().contains("Row"), "{err}");
        let err = Serializer::BYTES
            .deserialize::<Row>(Bytes::from_static(b"x"))
            .unwrap_err();
        assert!(err.to_string().contains("Row"), "{err}");
    }

    #[test]
    fn text_stores_strings_and_numbers_as_text() {
        assert_eq!(
            &Serializer::TEXT.serialize(&"hello".to_string()).unwrap()[..],
            b"hello"
        );
        assert_eq!(&Serializer::TEXT.serialize(&42u32).unwrap()[..], b"42");
        assert_eq!(
            Serializer::TEXT
                .deserialize::<u32>(Bytes::from_static(b"42\n"))
                .unwrap(),
            42
        );
        assert_eq!(
            Serializer::TEXT
                .deserialize::<String>(Bytes::from_static(b"a,b\n"))
                .unwrap(),
            "a,b\n"
        );
        let err = Serializer::TEXT
            .serialize(&BTreeMap::from([(1, 2)]))
            .unwrap_err();
        assert!(err.to_string().contains("a map"), "{err}");
        let err = Serializer::TEXT
            .deserialize::<u32>(Bytes::from_static(b"forty"))
            .unwrap_err();
        assert!(err.to_string().contains("forty"), "{err}");
        let err = Serializer::TEXT
            .deserialize::<String>(Bytes::from_static(b"\xff\xfe"))
            .unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn extension_picks_the_serializer() {
        let d = Serializer::MSGPACK;
        assert_eq!(Serializer::for_location("a/b.json", d), Serializer::JSON);
        assert_eq!(Serializer::for_location("a/b.TXT", d), Serializer::TEXT);
        assert_eq!(Serializer::for_location("a/b.csv", d), Serializer::TEXT);
        assert_eq!(Serializer::for_location("b.msgpack", Serializer::JSON), d);
        assert_eq!(Serializer::for_location("b.bin", d), Serializer::BYTES);
        assert_eq!(Serializer::for_location("b.parquet", d), d);
        assert_eq!(Serializer::for_location("noext", d), d);
        assert_eq!(
            Serializer::for_location("x.json.zst", d),
            Serializer::JSON.zstd(3)
        );
        assert_eq!(Serializer::for_location("x.zst", d), d.zstd(3));
        // A dot in a directory name is not an extension.
        assert_eq!(Serializer::for_location("v1.json/out", d), d);
    }

    #[test]
    fn names_round_trip() {
        let mut names = std::collections::BTreeSet::new();
        for base in EVERY_FORMAT {
            for s in [base, base.zstd(3)] {
                assert_eq!(Serializer::from_name(s.name()), Some(s), "{}", s.name());
                names.insert(s.name());
            }
        }
        // Each of the eight has a name of its own.
        assert_eq!(names.len(), 8);
        assert_eq!(Serializer::JSON.zstd(3).name(), "json+zstd");
        assert_eq!(Serializer::from_name("pickle"), None);
    }
}
