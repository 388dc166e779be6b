//! A task's inputs by name.
//!
//! A task takes one input value. When that value is a tuple (what `#[cairn::task]`
//! passes: one element per parameter) or a struct, each element or field is an input
//! of its own, named by the task's input names (for tuples) or the field names (for
//! structs). Any other value is a single input. Inputs are visited by reference with
//! their names, without copying or converting them, so the cache key and the template
//! context see each one separately (`INPUTS - "debug"`, `{city}`).

use serde::ser::{self, Impossible, Serialize};

use crate::backend::Error;

/// What is done with each input.
pub(crate) trait InputVisitor {
    fn visit<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<(), Error>;
}

/// How a value splits into inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    None,
    Tuple,
    Struct,
    Single,
}

/// Calls `visitor` once per input of `value`, in order. `names` names tuple elements
/// (and a single value); unnamed elements are called by their position.
pub(crate) fn visit_inputs<I: Serialize + ?Sized, V: InputVisitor>(
    value: &I,
    names: &[String],
    visitor: &mut V,
) -> Result<(), Error> {
    match value.serialize(ShapeProbe).unwrap_or(Shape::Single) {
        Shape::None => Ok(()),
        Shape::Single => {
            let name = names.first().map(String::as_str).unwrap_or("input");
            visitor.visit(name, value)
        }
        Shape::Tuple | Shape::Struct => {
            let mut splitter = Splitter {
                names,
                visitor,
                index: 0,
                error: None,
            };
            match value.serialize(&mut splitter) {
                Ok(()) => Ok(()),
                Err(_) => Err(splitter.error.take().unwrap_or_else(|| Error::Config {
                    message: "the task's input could not be split into named inputs".into(),
                })),
            }
        }
    }
}

/// The names of `value`'s inputs (see [`visit_inputs`]).
#[cfg(test)]
pub(crate) fn input_names<I: Serialize + ?Sized>(value: &I, names: &[String]) -> Vec<String> {
    struct Names(Vec<String>);
    impl InputVisitor for Names {
        fn visit<T: Serialize + ?Sized>(&mut self, name: &str, _: &T) -> Result<(), Error> {
            self.0.push(name.to_owned());
            Ok(())
        }
    }
    let mut collected = Names(Vec::new());
    let _ = visit_inputs(value, names, &mut collected);
    collected.0
}

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stop")
    }
}
impl std::error::Error for Stop {}
impl ser::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// Finds a value's top-level shape without serializing its contents.
struct ShapeProbe;

/// The compound half of [`ShapeProbe`]: ignores the elements, reports the shape.
struct Ignore(Shape);

macro_rules! ignore_compound {
    ($($trait:ident :: $method:ident ($($key:ty)?);)*) => {
        $(impl ser::$trait for Ignore {
            type Ok = Shape;
            type Error = Stop;
            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $key,)? _: &T) -> Result<(), Stop> {
                Ok(())
            }
            fn end(self) -> Result<Shape, Stop> {
                Ok(self.0)
            }
        })*
    };
}

ignore_compound! {
    SerializeSeq::serialize_element();
    SerializeTuple::serialize_element();
    SerializeTupleStruct::serialize_field();
    SerializeTupleVariant::serialize_field();
    SerializeStruct::serialize_field(&'static str);
    SerializeStructVariant::serialize_field(&'static str);
}

impl ser::SerializeMap for Ignore {
    type Ok = Shape;
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), Stop> {
        Ok(())
    }
    fn end(self) -> Result<Shape, Stop> {
        Ok(self.0)
    }
}

macro_rules! single {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<Shape, Stop> { Ok(Shape::Single) })*
    };
}

impl ser::Serializer for ShapeProbe {
    type Ok = Shape;
    type Error = Stop;
    type SerializeSeq = Ignore;
    type SerializeTuple = Ignore;
    type SerializeTupleStruct = Ignore;
    type SerializeTupleVariant = Ignore;
    type SerializeMap = Ignore;
    type SerializeStruct = Ignore;
    type SerializeStructVariant = Ignore;

    single! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_i128(i128); serialize_u8(u8); serialize_u16(u16);
        serialize_u32(u32); serialize_u64(u64); serialize_u128(u128); serialize_f32(f32);
        serialize_f64(f64); serialize_char(char); serialize_str(&str); serialize_bytes(&[u8]);
        serialize_none(); serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_unit(self) -> Result<Shape, Stop> {
        Ok(Shape::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Shape, Stop> {
        Ok(Shape::Single)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<Shape, Stop> {
        Ok(Shape::Single)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Shape, Stop> {
        Ok(Shape::Single)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Ignore, Stop> {
        Ok(Ignore(Shape::Single))
    }
    fn serialize_tuple(self, len: usize) -> Result<Ignore, Stop> {
        Ok(Ignore(if len == 0 { Shape::None } else { Shape::Tuple }))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Ignore, Stop> {
        Ok(Ignore(Shape::Single))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Ignore, Stop> {
        Ok(Ignore(Shape::Single))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Ignore, Stop> {
        Ok(Ignore(Shape::Single))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Ignore, Stop> {
        Ok(Ignore(Shape::Struct))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Ignore, Stop> {
        Ok(Ignore(Shape::Single))
    }
}

/// Hands each element of a top-level tuple or field of a top-level struct to the
/// visitor.
struct Splitter<'a, V> {
    names: &'a [String],
    visitor: &'a mut V,
    index: usize,
    error: Option<Error>,
}

impl<V: InputVisitor> Splitter<'_, V> {
    fn element<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) -> Result<(), Stop> {
        self.index += 1;
        self.visitor.visit(name, value).map_err(|e| {
            self.error = Some(e);
            Stop
        })
    }
}

impl<V: InputVisitor> ser::SerializeTuple for &mut Splitter<'_, V> {
    type Ok = ();
    type Error = Stop;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        let name = match self.names.get(self.index) {
            Some(name) => std::borrow::Cow::Borrowed(name.as_str()),
            None => std::borrow::Cow::Owned(self.index.to_string()),
        };
        self.element(&name, value)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl<V: InputVisitor> ser::SerializeStruct for &mut Splitter<'_, V> {
    type Ok = ();
    type Error = Stop;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        self.element(name, value)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

macro_rules! not_split {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<(), Stop> { Err(Stop) })*
    };
}

impl<V: InputVisitor> ser::Serializer for &mut Splitter<'_, V> {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Impossible<(), Stop>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Impossible<(), Stop>;
    type SerializeTupleVariant = Impossible<(), Stop>;
    type SerializeMap = Impossible<(), Stop>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Stop>;

    not_split! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_i128(i128); serialize_u8(u8); serialize_u16(u16);
        serialize_u32(u32); serialize_u64(u64); serialize_u128(u128); serialize_f32(f32);
        serialize_f64(f64); serialize_char(char); serialize_str(&str); serialize_bytes(&[u8]);
        serialize_none(); serialize_unit(); serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Stop> {
        Err(Stop)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Stop> {
        Err(Stop)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Stop> {
        Err(Stop)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stop> {
        Err(Stop)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Stop> {
        Err(Stop)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Stop> {
        Err(Stop)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stop> {
        Err(Stop)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Stop> {
        Err(Stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Params {
        city: String,
        days: u32,
    }

    fn names_of<I: Serialize>(value: &I, names: &[&str]) -> Vec<String> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        input_names(value, &names)
    }

    #[test]
    fn tuples_split_by_the_given_names_then_by_position() {
        assert_eq!(names_of(&(1, true), &["x", "debug"]), ["x", "debug"]);
        assert_eq!(names_of(&(1, true, "s"), &["x"]), ["x", "1", "2"]);
        assert_eq!(names_of(&(7,), &["n"]), ["n"]);
    }

    #[test]
    fn structs_split_by_field_and_other_values_are_one_input() {
        let p = Params {
            city: "Oslo".into(),
            days: 3,
        };
        assert_eq!(names_of(&p, &[]), ["city", "days"]);
        assert_eq!(names_of(&5u8, &["x"]), ["x"]);
        assert_eq!(names_of(&vec![1, 2], &[]), ["input"]);
        assert!(names_of(&(), &["x"]).is_empty());
    }

    #[test]
    fn a_visitor_error_stops_the_visit_and_is_returned() {
        struct FailOn(&'static str);
        impl InputVisitor for FailOn {
            fn visit<T: Serialize + ?Sized>(&mut self, name: &str, _: &T) -> Result<(), Error> {
                if name == self.0 {
                    return Err(Error::Config {
                        message: format!("input '{name}' refused"),
                    });
                }
                Ok(())
            }
        }
        let err = visit_inputs(&(1, 2), &["a".into(), "b".into()], &mut FailOn("b")).unwrap_err();
        assert!(err.to_string().contains("input 'b' refused"), "{err}");
    }
}
