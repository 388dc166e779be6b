//! [`Unordered`] collections: sets whose elements are sorted by their encoding.

use super::*;

/// The value inside an [`Unordered`]: must be a sequence (or a newtype around one).
pub(super) struct UnorderedStart<'a, 'h> {
    pub(super) parent: &'a mut Encoder<'h>,
}

pub(super) fn not_a_collection(found: &str) -> EncodeError {
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
pub(super) struct SetEncoder<'a, 'h> {
    pub(super) parent: &'a mut Encoder<'h>,
    pub(super) buffer: Encoder<'static>,
    pub(super) elements: Vec<Range<usize>>,
}

impl<'a, 'h> SetEncoder<'a, 'h> {
    pub(super) fn new(parent: &'a mut Encoder<'h>) -> Self {
        SetEncoder {
            parent,
            buffer: Encoder::buffer(),
            elements: Vec::new(),
        }
    }

    pub(super) fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
        let start = self.buffer.position();
        value
            .serialize(&mut self.buffer)
            .map_err(|e| e.within(Segment::Index(self.elements.len())))?;
        self.elements.push(start..self.buffer.position());
        Ok(())
    }

    pub(super) fn finish(self) -> Result<(), EncodeError> {
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
