//! The values a location template is rendered from: the run's names and ids, its
//! parameters and inputs, its dates, and any keys the user adds. The standard keys
//! are listed on [`Context`].

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

use crate::backend::{Error, Result};

/// The keys a task run's context holds, whatever the task (see the table on
/// [`Context`]). A template may use any of them, the task's input names and the keys
/// the user adds.
pub const STANDARD_KEYS: &[&str] = &[
    "flow_name",
    "flow_run_id",
    "flow_run_name",
    "task_name",
    "task_run_id",
    "task_run_count",
    "map_index",
    "parameters",
    "date",
    "today",
    "yesterday",
    "tomorrow",
    "today_nodash",
    "yesterday_nodash",
    "tomorrow_nodash",
];

/// A value of the kind a standard key always holds, for checking a template's format
/// specs when it is parsed; `None` for keys that are not standard.
pub(crate) fn standard_sample(name: &str) -> Option<Value> {
    Some(match name {
        "date" => Value::DateTime(DateTime::<Utc>::UNIX_EPOCH),
        "task_run_count" | "map_index" => Value::Int(0),
        "parameters" => Value::Map(BTreeMap::new()),
        n if STANDARD_KEYS.contains(&n) => Value::Str(String::new()),
        _ => return None,
    })
}

/// One value in a [`Context`].
///
/// Scalars are placed in a location by [`Template`](crate::Template) with their
/// format spec; maps and lists are reached with dotted names (`{parameters.city}`,
/// `{inputs.0}`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// Text.
    Str(String),
    /// A whole number.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A boolean, rendered `true` or `false`.
    Bool(bool),
    /// A point in time.
    DateTime(DateTime<Utc>),
    /// No value (a JSON `null`, an `Option::None`); rendering it is an error.
    Null,
    /// A sequence, reached by index: `{name.0}`.
    List(Vec<Value>),
    /// Named fields, reached by name: `{parameters.city}`.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// Converts any serde-serializable value (through its JSON form): structs and
    /// maps become [`Value::Map`], sequences [`Value::List`], `None` [`Value::Null`].
    /// A whole number beyond `i64` becomes its exact decimal text.
    ///
    /// # Errors
    /// [`Error::Config`] when the value cannot be represented as JSON (a map whose
    /// keys are not strings, a failing `Serialize` implementation).
    ///
    /// ```
    /// use cairn::Value;
    /// #[derive(serde::Serialize)]
    /// struct Params { city: String, days: u32 }
    /// let v = Value::from_serialize(&Params { city: "Oslo".into(), days: 3 })?;
    /// assert_eq!(v.field("city"), Some(&Value::from("Oslo")));
    /// assert_eq!(v.field("days"), Some(&Value::Int(3)));
    /// # Ok::<(), cairn::Error>(())
    /// ```
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
        serde_json::to_value(value)
            .map(Value::from)
            .map_err(|e| Error::Config {
                message: format!("a value cannot be used in a location template: {e}"),
            })
    }

    /// A field of a map, or an element of a list by its decimal index; `None` for
    /// scalars and missing fields.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.get(name),
            Value::List(l) => name.parse::<usize>().ok().and_then(|i| l.get(i)),
            _ => None,
        }
    }

    /// What kind of value this is, in words ("text", "a whole number", ...), for
    /// error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "text",
            Value::Int(_) => "a whole number",
            Value::Float(_) => "a floating-point number",
            Value::Bool(_) => "a boolean",
            Value::DateTime(_) => "a date-time",
            Value::Null => "null",
            Value::List(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Str(s) => J::String(s.clone()),
            Value::Int(i) => J::from(*i),
            Value::Float(x) => J::from(*x),
            Value::Bool(b) => J::Bool(*b),
            Value::DateTime(_) => J::String(self.to_string()),
            Value::Null => J::Null,
            Value::List(l) => J::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
}

/// The value's default text, as a `{name}` placeholder without a spec renders it
/// (before the template's path rules apply): text as is, numbers as Python prints
/// them (`7`, `0.5`, `1.0`, `1e+20`), booleans `true`/`false`, date-times in RFC 3339
/// with a `Z` (`2024-01-31T09:30:00Z`), lists and maps as compact JSON.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&crate::template::python_format::float_repr(*x)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::DateTime(d) => f.write_str(&d.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Value::Null => f.write_str("null"),
            Value::List(_) | Value::Map(_) => write!(f, "{}", self.to_json()),
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
    &String => Str as String,
    i64 => Int as i64,
    i32 => Int as i64,
    i16 => Int as i64,
    i8 => Int as i64,
    u32 => Int as i64,
    u16 => Int as i64,
    u8 => Int as i64,
    f64 => Float as f64,
    f32 => Float as f64,
    bool => Bool as bool,
    DateTime<Utc> => DateTime as DateTime<Utc>,
    Vec<Value> => List as Vec<Value>,
    BTreeMap<String, Value> => Map as BTreeMap<String, Value>,
);

/// A whole number; one beyond `i64` becomes its exact decimal text.
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        i64::try_from(v).map_or_else(|_| Value::Str(v.to_string()), Value::Int)
    }
}

/// A whole number (a map index, a count); one beyond `i64` becomes its decimal text.
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::from(v as u64)
    }
}

/// A calendar day, as `YYYY-MM-DD` text.
impl From<NaiveDate> for Value {
    fn from(v: NaiveDate) -> Self {
        Value::Str(v.format("%Y-%m-%d").to_string())
    }
}

/// `None` is [`Value::Null`].
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// JSON objects become maps, arrays lists; a whole number beyond `i64` becomes its
/// exact decimal text.
impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        use serde_json::Value as J;
        match v {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Value::Int(i),
                (None, Some(u), _) => Value::from(u),
                (None, None, Some(x)) => Value::Float(x),
                _ => Value::Str(n.to_string()),
            },
            J::String(s) => Value::Str(s),
            J::Array(a) => Value::List(a.into_iter().map(Value::from).collect()),
            J::Object(o) => Value::Map(o.into_iter().map(|(k, v)| (k, Value::from(v))).collect()),
        }
    }
}

/// Named values for rendering location templates: the run's names and ids, its
/// parameters and inputs, dates, and any keys the user adds.
///
/// # Standard keys
///
/// The runner fills these for every task run ([`STANDARD_KEYS`](Context::STANDARD_KEYS)
/// lists them); a template may also use the task's inputs by name and any key the
/// user adds.
///
/// | key | kind | holds |
/// |---|---|---|
/// | `flow_name` | text | the flow's name |
/// | `flow_run_id` | text | the flow run's id |
/// | `flow_run_name` | text | the flow run's name |
/// | `task_name` | text | the task's name |
/// | `task_run_id` | text | the task run's id |
/// | `task_run_count` | whole number | the attempt, from 1 |
/// | `map_index` | whole number | the index of a mapped task's child |
/// | `parameters` | map | the flow's parameters: `{parameters.city}` |
/// | *input name* | any | the task's input of that name |
/// | `date` | date-time (UTC) | the run's scheduled start: `{date:%Y/%m}` |
/// | `today`, `yesterday`, `tomorrow` | text | `date`'s day, the day before, the day after: `2024-01-31` |
/// | `today_nodash`, `yesterday_nodash`, `tomorrow_nodash` | text | the same days as `20240131` |
///
/// [`Context::with_date`] fills `date` and the six keys derived from it (days are
/// UTC days); [`Context::with_parameters`] and [`Context::with_input`] add
/// serializable values.
///
/// ```
/// use cairn::{Context, Template};
/// use chrono::{TimeZone, Utc};
///
/// let ctx = Context::new()
///     .with("flow_name", "weather")
///     .with("task_name", "fetch")
///     .with("map_index", 7)
///     .with_date(Utc.with_ymd_and_hms(2024, 3, 1, 6, 0, 0).unwrap())
///     .with_parameters(&serde_json::json!({ "city": "Oslo" }))?;
/// assert_eq!(ctx.get("yesterday").unwrap().to_string(), "2024-02-29");
///
/// let t = Template::parse("{flow_name}/{parameters.city}/{today_nodash}/{task_name}-{map_index:03}.json")?;
/// assert_eq!(t.render(&ctx)?, "weather/Oslo/20240301/fetch-007.json");
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    values: BTreeMap<String, Value>,
}

impl Context {
    /// The keys every task run's context holds (the table above).
    pub const STANDARD_KEYS: &'static [&'static str] = STANDARD_KEYS;

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

    /// Sets `date` (the run's scheduled start) and the keys derived from it: `today`,
    /// `yesterday`, `tomorrow` as `YYYY-MM-DD` and their `_nodash` forms `YYYYMMDD`,
    /// all taken from `date`'s UTC day.
    ///
    /// ```
    /// use cairn::Context;
    /// use chrono::{TimeZone, Utc};
    /// let ctx = Context::new().with_date(Utc.with_ymd_and_hms(2023, 12, 31, 23, 59, 0).unwrap());
    /// assert_eq!(ctx.get("today").unwrap().to_string(), "2023-12-31");
    /// assert_eq!(ctx.get("tomorrow_nodash").unwrap().to_string(), "20240101");
    /// ```
    pub fn with_date(mut self, date: DateTime<Utc>) -> Self {
        self.insert_date(date);
        self
    }

    /// [`Context::with_date`] in place.
    pub fn insert_date(&mut self, date: DateTime<Utc>) {
        let day = date.date_naive();
        self.insert("date", date);
        for (name, day) in [
            ("today", Some(day)),
            ("yesterday", day.pred_opt()),
            ("tomorrow", day.succ_opt()),
        ] {
            // Only the first and last representable days lack a neighbour.
            if let Some(day) = day {
                self.insert(name, day.format("%Y-%m-%d").to_string());
                self.insert(format!("{name}_nodash"), day.format("%Y%m%d").to_string());
            }
        }
    }

    /// Sets `parameters` to the flow's parameters (a struct or a map), reached in
    /// templates as `{parameters.name}`.
    ///
    /// # Errors
    /// [`Error::Config`] when the parameters do not serialize to JSON.
    pub fn with_parameters<T: Serialize + ?Sized>(self, parameters: &T) -> Result<Self> {
        self.with_input("parameters", parameters)
    }

    /// Adds a task input (or any serializable value) under `name`; structs and maps
    /// are reached with dotted names (`{name.field}`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the input when it does not serialize to JSON.
    ///
    /// ```
    /// use cairn::{Context, Template};
    /// let ctx = Context::new().with_input("region", &("eu", 2))?;
    /// assert_eq!(Template::parse("{region.0}-{region.1}")?.render(&ctx)?, "eu-2");
    /// # Ok::<(), cairn::Error>(())
    /// ```
    pub fn with_input<T: Serialize + ?Sized>(
        mut self,
        name: impl Into<String>,
        value: &T,
    ) -> Result<Self> {
        self.insert_input(&name.into(), value)?;
        Ok(self)
    }

    /// [`Context::with_input`] in place.
    pub(crate) fn insert_input<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<()> {
        let value = Value::from_serialize(value).map_err(|e| Error::Config {
            message: format!("input '{name}': {e}"),
        })?;
        self.values.insert(name.to_owned(), value);
        Ok(())
    }

    /// A value by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// The names present, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The names and values, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn date_derived_keys_cross_a_month_end() {
        let ctx = Context::new().with_date(Utc.with_ymd_and_hms(2024, 2, 29, 22, 0, 0).unwrap());
        let get = |k: &str| ctx.get(k).unwrap().to_string();
        assert_eq!(get("today"), "2024-02-29");
        assert_eq!(get("yesterday"), "2024-02-28");
        assert_eq!(get("tomorrow"), "2024-03-01");
        assert_eq!(get("today_nodash"), "20240229");
        assert_eq!(get("yesterday_nodash"), "20240228");
        assert_eq!(get("tomorrow_nodash"), "20240301");
        assert_eq!(get("date"), "2024-02-29T22:00:00Z");
    }

    #[test]
    fn date_derived_keys_cross_a_year_start() {
        let ctx = Context::new().with_date(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(ctx.get("yesterday").unwrap().to_string(), "2024-12-31");
        assert_eq!(ctx.get("yesterday_nodash").unwrap().to_string(), "20241231");
    }

    #[test]
    fn every_standard_key_has_a_table_row_and_a_sample() {
        let table: Vec<&str> = include_str!("context.rs")
            .lines()
            .filter(|l| l.starts_with("/// | `"))
            .collect();
        for key in STANDARD_KEYS {
            assert!(standard_sample(key).is_some(), "{key}");
            let cell = format!("`{key}`");
            assert!(
                table.iter().any(|row| row.contains(&cell)),
                "{key} is not in the table"
            );
        }
        let dated = Context::new().with_date(Utc::now());
        for key in STANDARD_KEYS
            .iter()
            .filter(|k| k.contains("day") || k.contains("tomorrow") || **k == "date")
        {
            assert!(dated.get(key).is_some(), "with_date does not set {key}");
        }
        assert!(standard_sample("my_key").is_none());
    }

    #[test]
    fn serializable_values_become_nested_values() {
        #[derive(Serialize)]
        struct Input {
            name: String,
            tags: Vec<&'static str>,
            limit: Option<u32>,
            big: u64,
            ratio: f64,
        }
        let ctx = Context::new()
            .with_input(
                "job",
                &Input {
                    name: "a".into(),
                    tags: vec!["x", "y"],
                    limit: None,
                    big: u64::MAX,
                    ratio: 0.5,
                },
            )
            .unwrap();
        let job = ctx.get("job").unwrap();
        assert_eq!(job.field("name"), Some(&Value::from("a")));
        assert_eq!(
            job.field("tags").unwrap().field("1"),
            Some(&Value::from("y"))
        );
        assert_eq!(job.field("limit"), Some(&Value::Null));
        assert_eq!(job.field("big"), Some(&Value::from(u64::MAX.to_string())));
        assert_eq!(job.field("ratio"), Some(&Value::Float(0.5)));
        assert_eq!(job.field("missing"), None);
    }

    #[test]
    fn unserializable_inputs_are_named_in_the_error() {
        let mut bad = std::collections::HashMap::new();
        bad.insert((1, 2), "x");
        let err = Context::new().with_input("pairs", &bad).unwrap_err();
        assert!(err.to_string().contains("input 'pairs'"), "{err}");
    }

    #[test]
    fn values_display_as_python_prints_them() {
        assert_eq!(Value::from(1.0).to_string(), "1.0");
        assert_eq!(Value::from(0.1).to_string(), "0.1");
        assert_eq!(Value::from(1e20).to_string(), "1e+20");
        assert_eq!(Value::from(-7).to_string(), "-7");
        assert_eq!(Value::from(true).to_string(), "true");
        assert_eq!(Value::from(None::<i32>).to_string(), "null");
        let list = Value::from(vec![Value::from(1), Value::from("a")]);
        assert_eq!(list.to_string(), r#"[1,"a"]"#);
    }
}
