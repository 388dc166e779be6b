//! The canonical encoder: a serde `Serializer` that writes the encoding documented in
//! [the module](super) into a BLAKE3 hasher or a buffer.

use super::*;

/// Where encoded bytes go: straight into the hasher, into a buffer that a map or set
/// sorts before passing it on, or kept while they are few ([`input_part()`]).
pub(super) enum Sink<'h> {
    Hasher(&'h mut blake3::Hasher),
    Buffer(Vec<u8>),
    Prefix(&'h mut Prefix),
}

pub(super) struct Encoder<'h> {
    pub(super) sink: Sink<'h>,
}

impl Encoder<'static> {
    pub(super) fn buffer() -> Self {
        Encoder {
            sink: Sink::Buffer(Vec::new()),
        }
    }

    pub(super) fn into_buffer(self) -> Vec<u8> {
        match self.sink {
            Sink::Buffer(buffer) => buffer,
            Sink::Hasher(_) | Sink::Prefix(_) => unreachable!("a buffer encoder"),
        }
    }

    /// Empties the buffer, keeping its memory.
    pub(super) fn clear(&mut self) {
        match &mut self.sink {
            Sink::Buffer(buffer) => buffer.clear(),
            Sink::Hasher(_) | Sink::Prefix(_) => unreachable!("a buffer encoder"),
        }
    }

    pub(super) fn buffered(&self) -> &[u8] {
        match &self.sink {
            Sink::Buffer(buffer) => buffer,
            Sink::Hasher(_) | Sink::Prefix(_) => unreachable!("a buffer encoder"),
        }
    }
}

impl<'h> Encoder<'h> {
    pub(super) fn hasher(hasher: &'h mut blake3::Hasher) -> Self {
        Encoder {
            sink: Sink::Hasher(hasher),
        }
    }

    pub(super) fn position(&self) -> usize {
        match &self.sink {
            Sink::Buffer(buffer) => buffer.len(),
            Sink::Hasher(_) | Sink::Prefix(_) => 0,
        }
    }

    pub(super) fn write(&mut self, bytes: &[u8]) {
        match &mut self.sink {
            Sink::Hasher(hasher) => update(hasher, bytes),
            Sink::Buffer(buffer) => buffer.extend_from_slice(bytes),
            Sink::Prefix(prefix) => prefix.write(bytes),
        }
    }

    pub(super) fn write_tag(&mut self, tag: u8) {
        self.write(&[tag]);
    }

    pub(super) fn write_len(&mut self, len: usize) {
        self.write(&(len as u64).to_le_bytes());
    }

    pub(super) fn write_int(&mut self, negative: bool, magnitude: u128) {
        let mut encoding = [0u8; 18];
        encoding[0] = tag::INT;
        encoding[1] = u8::from(negative);
        encoding[2..].copy_from_slice(&magnitude.to_le_bytes());
        self.write(&encoding);
    }

    pub(super) fn write_signed(&mut self, value: i128) {
        self.write_int(value < 0, value.unsigned_abs());
    }

    pub(super) fn write_float(&mut self, value: f64) {
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

    pub(super) fn write_str(&mut self, value: &str) {
        self.write_tag(tag::STR);
        self.write_len(value.len());
        self.write(value.as_bytes());
    }

    pub(super) fn write_bytes(&mut self, value: &[u8]) {
        self.write_tag(tag::BYTES);
        self.write_len(value.len());
        self.write(value);
    }

    pub(super) fn write_digest(&mut self, digest: &[u8; 32]) {
        self.write_tag(tag::DIGEST);
        self.write(digest);
    }

    pub(super) fn write_variant(&mut self, variant: &str) {
        self.write_tag(tag::VARIANT);
        self.write_len(variant.len());
        self.write(variant.as_bytes());
    }

    /// Writes a map or an unordered collection: `tag`, the count, then the items of
    /// `buffer` (each a range of it) sorted by their bytes.
    pub(super) fn write_sorted(&mut self, tag: u8, buffer: &[u8], mut items: Vec<Range<usize>>) {
        items.sort_unstable_by(|a, b| buffer[a.clone()].cmp(&buffer[b.clone()]));
        self.write_tag(tag);
        self.write_len(items.len());
        for item in items {
            self.write(&buffer[item]);
        }
    }
}

pub(super) fn update(hasher: &mut blake3::Hasher, bytes: &[u8]) {
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

#[cfg(test)]
mod tests;
