//! The byte probe: tells whether a list element is an integer in `0..=255`, so that a
//! list of small integers is encoded as a byte string.

use super::*;

/// Answers whether a list element is an integer in `0..=255`, and which.
pub(super) struct ByteProbe;

#[derive(Debug)]
pub(super) struct NotAByte;

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

pub(super) fn byte<T: TryInto<u8>>(v: T) -> Result<u8, NotAByte> {
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
