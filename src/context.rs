//! The values a location template is rendered from.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

/// One value in a [`Context`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Str(String),
    /// A whole number.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A point in time.
    DateTime(DateTime<Utc>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::DateTime(d) => write!(f, "{}", d.to_rfc3339()),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident as $conv:ty),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(<$conv>::from(v))
            }
        })*
    };
}

value_from!(
    String => Str as String,
    &str => Str as String,
    i64 => Int as i64,
    i32 => Int as i64,
    u32 => Int as i64,
    u16 => Int as i64,
    u8 => Int as i64,
    f64 => Float as f64,
    f32 => Float as f64,
    bool => Bool as bool,
    DateTime<Utc> => DateTime as DateTime<Utc>,
);

/// Named values for rendering location templates: the run's names and ids, its
/// parameters and inputs, dates, and any keys the user adds.
///
/// ```
/// use cairn::Context;
/// let ctx = Context::new().with("task_name", "fetch").with("map_index", 3);
/// assert_eq!(ctx.get("task_name").unwrap().to_string(), "fetch");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    values: BTreeMap<String, Value>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a value.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(name, value);
        self
    }

    /// Adds or replaces a value in place.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.values.insert(name.into(), value.into());
    }

    /// A value by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// The names present, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}
