//! Lists and maps for the encoder: lists that turn out to be byte strings, and maps
//! (and structs) whose entries are sorted by their encoding.

use super::*;

/// A list: collected as bytes while every element is an integer in `0..=255`, written
/// element by element from the first one that is not.
pub(super) struct SeqEncoder<'a, 'h> {
    pub(super) parent: &'a mut Encoder<'h>,
    pub(super) declared: Option<usize>,
    pub(super) count: usize,
    pub(super) variant: Option<&'static str>,
    pub(super) state: SeqState,
}

pub(super) enum SeqState {
    /// Every element so far was a byte; nothing is written yet.
    Bytes(Vec<u8>),
    /// The header is written (the length was declared); elements go to the parent.
    Streaming,
    /// The length was not declared: elements are collected until it is known.
    Buffered(Encoder<'static>),
}

impl<'a, 'h> SeqEncoder<'a, 'h> {
    pub(super) fn new(
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

    pub(super) fn wrap(&self, error: EncodeError) -> EncodeError {
        match self.variant {
            Some(variant) => error.within(Segment::Variant(variant)),
            None => error,
        }
    }

    /// Writes the bytes collected so far as integers and continues element by element.
    pub(super) fn leave_bytes(&mut self) {
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

    pub(super) fn element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
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

    pub(super) fn finish(self) -> Result<(), EncodeError> {
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
pub(super) use forward_compound;

forward_compound!(
    SeqEncoder: SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

/// A map or struct: entries are encoded into a buffer, sorted, then written.
pub(super) struct MapEncoder<'a, 'h> {
    pub(super) parent: &'a mut Encoder<'h>,
    pub(super) buffer: Encoder<'static>,
    pub(super) entries: Vec<Range<usize>>,
    /// The start and end of the key whose value comes next.
    pub(super) key: Option<(usize, usize)>,
    pub(super) variant: Option<&'static str>,
}

impl<'a, 'h> MapEncoder<'a, 'h> {
    pub(super) fn new(parent: &'a mut Encoder<'h>, variant: Option<&'static str>) -> Self {
        MapEncoder {
            parent,
            buffer: Encoder::buffer(),
            entries: Vec::new(),
            key: None,
            variant,
        }
    }

    pub(super) fn wrap(&self, error: EncodeError) -> EncodeError {
        match self.variant {
            Some(variant) => error.within(Segment::Variant(variant)),
            None => error,
        }
    }

    pub(super) fn key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), EncodeError> {
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

    pub(super) fn value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), EncodeError> {
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

    pub(super) fn field<T: ?Sized + Serialize>(
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

    pub(super) fn finish(self) -> Result<(), EncodeError> {
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
