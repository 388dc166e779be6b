//! Location templates: `{name}` and `{name:spec}` placeholders filled from a
//! [`Context`], or a function of the context; the language is described on
//! [`Template`].
//!
//! `mod.rs` holds the template language (parsing, rendering, path rules);
//! `context.rs` the values placeholders are filled from; `python_format.rs` Python's
//! format mini-language for `{name:spec}`.

pub(crate) mod context;
mod python_format;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};

use crate::backend::{Error, Key, Result};
use context::{standard_sample, Context, Value};
use python_format as pyfmt;

/// Characters a placeholder's text may not carry into a location: each is replaced
/// by `-` (see "Path rules" on [`Template`]).
const UNSAFE_IN_VALUES: &[char] = &['\\', ':', '*', '?', '"', '<', '>', '|'];

/// A location template such as `{flow_name}/{date:%Y-%m-%d}/{task_name}.json`, or a
/// function of the [`Context`].
///
/// # Language
///
/// | syntax | meaning |
/// |---|---|
/// | `{name}` | the context value `name`, in its default text |
/// | `{name:spec}` | the value formatted by `spec` |
/// | `{name.field}` | a field of a map value (`{parameters.city}`), or a list element by index (`{items.0}`) |
/// | `{{`, `}}` | a literal `{`, `}` |
///
/// For text and numbers, `spec` is Python's format mini-language,
/// `[[fill]align][sign][z][#][0][width][grouping][.precision][type]`:
///
/// | spec | value | renders |
/// |---|---|---|
/// | `03` | `7` | `007` |
/// | `>8.2f` | `12.3456` | `   12.35` |
/// | `,` / `_` | `1234567` | `1,234,567` / `1_234_567` |
/// | `+d` | `5` | `+5` |
/// | `#x`, `b`, `o`, `X` | `255` | `0xff`, `11111111`, `377`, `FF` |
/// | `.2e`, `g`, `.1%` | `1234.5`, `0.00001`, `0.125` | `1.23e+03`, `1e-05`, `12.5%` |
/// | `.3` | `"abcdef"` | `abc` (truncates text) |
/// | `_^9` | `"mid"` | `___mid___` |
///
/// Types: `s` (text); `d`, `b`, `o`, `x`, `X` (whole numbers); `e`, `E`, `f`, `F`,
/// `g`, `G`, `%` (any number); none (the value's default). Booleans format as the text
/// `true` / `false`. Numbers without a spec print as Python prints them (`0.5`,
/// `1.0`).
///
/// For a date-time (`date`), `spec` is a chrono strftime pattern: `{date:%A}` is
/// `Monday`, `{date:%Y/%m/%d}` is `2024/01/29`. Without a spec a date-time renders in
/// RFC 3339 (`2024-01-29T06:00:00Z`, whose `:` the path rules turn into `-`).
///
/// # When errors are found
///
/// [`Template::parse`] rejects syntax errors (an unclosed `{`, a stray `}`, an empty
/// or malformed name, a spec that is neither a format spec nor a strftime pattern), and
/// specs that cannot apply to a standard key's kind (`{map_index:%Y}`,
/// `{date:>10}`). [`Template::parse_with_keys`] and [`Template::check_keys`] also
/// reject names outside a known key set, naming the key and listing the available
/// ones — the runner calls them when a task is defined, so a typo fails before any
/// run. [`Template::render`] reports what only the values can tell: a key the
/// context lacks, a spec that does not fit the value, a value that breaks the path
/// rules.
///
/// # Path rules
///
/// A rendered location is a store key: relative, `/`-separated, no empty, `.` or `..`
/// segment, no control character, no `\`, at most 1024 bytes (see [`Key::parse`]).
/// On top of that, each placeholder's text (after its spec is applied) obeys:
///
/// - **Unsafe characters become `-`.** `\ : * ? " < > |` are replaced by `-`. They are
///   reserved in Windows file names (so a local store could not hold the target),
///   awkward or refused in object names by some tools, and `:` is what a date-time's
///   default text carries: Prefect's `{date}` targets broke on exactly that (Prefect
///   issue 3263). Replacing rather than refusing keeps `{date}` and `{date:%H:%M}`
///   usable and the result readable and deterministic. The rule touches only what
///   placeholders produce, never the template's literal text, which the author wrote
///   on purpose. Two values that differ only in these characters render the same
///   location.
/// - **A value may add directories but never leave the store.** A value may contain
///   `/` (`{parameters.prefix}` = `2024/q1`) only if every segment it makes is
///   non-empty and neither `.` nor `..`, and it does not start with `/`; a value of
///   `.` or `..` is refused too. The error names the placeholder and the value:
///   `'{name}' renders '../x', which would leave the store`.
/// - **No control characters** in a value (a newline in an input is refused, not
///   hidden).
///
/// A callable template ([`Template::from_fn`]) is the author's own code, like literal
/// text: its result is validated as a key but not rewritten.
///
/// ```
/// use cairn::{Context, Template};
/// use chrono::{TimeZone, Utc};
///
/// let t = Template::parse("{flow_name}/{date:%Y/%m}/{task_name}-{map_index:03}.json")?;
/// let ctx = Context::new()
///     .with("flow_name", "etl")
///     .with("task_name", "clean")
///     .with("map_index", 7)
///     .with_date(Utc.with_ymd_and_hms(2024, 1, 29, 6, 0, 0).unwrap());
/// assert_eq!(t.render(&ctx)?, "etl/2024/01/clean-007.json");
///
/// // The default text of a date-time keeps no ':' in a location.
/// assert_eq!(Template::parse("{date}")?.render(&ctx)?, "2024-01-29T06-00-00Z");
///
/// // A value can never take a location out of the store.
/// let escape = ctx.clone().with("flow_name", "../..");
/// assert!(t.render(&escape).is_err());
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Clone)]
pub struct Template {
    source: String,
    body: Body,
}

#[derive(Clone)]
enum Body {
    Parts(Vec<Part>),
    Callable(Callable),
}

type LocationFn = dyn Fn(&Context) -> String + Send + Sync;

#[derive(Clone)]
struct Callable(Arc<LocationFn>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

/// One placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    /// As written, braces included, for error messages: `{date:%A}`.
    text: String,
    /// The full dotted name: `parameters.city`.
    name: String,
    spec: Option<Spec>,
}

/// A spec, read both ways: which one applies depends on the value's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    raw: String,
    format: std::result::Result<pyfmt::FormatSpec, String>,
    strftime: std::result::Result<Vec<Item<'static>>, String>,
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
            && match (&self.body, &other.body) {
                (Body::Parts(a), Body::Parts(b)) => a == b,
                (Body::Callable(a), Body::Callable(b)) => Arc::ptr_eq(&a.0, &b.0),
                _ => false,
            }
    }
}

impl Eq for Template {}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.body {
            Body::Parts(_) => write!(f, "Template({:?})", self.source),
            Body::Callable(_) => write!(f, "Template(fn {:?})", self.source),
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

pub(crate) use crate::backend::shorten;

fn template_error(source: &str, message: impl fmt::Display) -> Error {
    Error::Config {
        message: format!("template '{}': {message}", shorten(source, 160)),
    }
}

impl Template {
    /// Parses a template and checks every spec that applies to a standard key of
    /// known kind (`date` is a date-time, `map_index` and `task_run_count` whole
    /// numbers, the names, ids and day keys text, `parameters` a map).
    ///
    /// # Errors
    /// [`Error::Config`] naming the template and the placeholder, for an unclosed
    /// `{`, a stray `}`, an empty or malformed name, a spec that is neither a format
    /// spec nor a strftime pattern, a spec that does not fit a standard key's kind, or
    /// a map (`{parameters}`) used without a field.
    ///
    /// ```
    /// use cairn::Template;
    /// assert!(Template::parse("{task_name}/{{literal}}.txt").is_ok());
    /// let err = Template::parse("{date:%Q}").unwrap_err().to_string();
    /// assert!(err.contains("{date:%Q}") && err.contains("%Q"), "{err}");
    /// assert!(Template::parse("{map_index:q}").is_err());
    /// assert!(Template::parse("{task_name").is_err());
    /// ```
    pub fn parse(source: &str) -> Result<Self> {
        let parts = parse_parts(source).map_err(|m| template_error(source, m))?;
        for part in &parts {
            if let Part::Field(field) = part {
                check_standard_kind(field).map_err(|m| template_error(source, m))?;
            }
        }
        Ok(Template {
            source: source.to_string(),
            body: Body::Parts(parts),
        })
    }

    /// Parses a template whose names must all come from `known` (for a task: the
    /// [standard keys](Context::STANDARD_KEYS), its input names and the user's keys).
    /// A dotted name needs only its first part known: `parameters.city` is known when
    /// `parameters` is.
    ///
    /// # Errors
    /// What [`Template::parse`] reports, and [`Error::Config`] naming the first unknown
    /// key and listing the known ones, sorted.
    ///
    /// ```
    /// use cairn::{Context, Template};
    /// let known: Vec<&str> = Context::STANDARD_KEYS.iter().copied().chain(["city"]).collect();
    /// assert!(Template::parse_with_keys("{city}/{task_name}.csv", &known).is_ok());
    /// let err = Template::parse_with_keys("{city}/{task_nme}.csv", &known).unwrap_err();
    /// assert!(err.to_string().contains("unknown key 'task_nme' (did you mean 'task_name'?)"));
    /// ```
    pub fn parse_with_keys<S: AsRef<str>>(
        source: &str,
        known: impl IntoIterator<Item = S>,
    ) -> Result<Self> {
        let template = Self::parse(source)?;
        template.check_keys(known)?;
        Ok(template)
    }

    /// Checks that every placeholder's name is in `known` (a dotted name needs its
    /// first part, or the whole name, known). A callable template passes.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first unknown key, the closest known one when it
    /// looks like a typo, and every known key, sorted.
    pub fn check_keys<S: AsRef<str>>(&self, known: impl IntoIterator<Item = S>) -> Result<()> {
        let known: BTreeSet<String> = known.into_iter().map(|k| k.as_ref().to_string()).collect();
        for field in self.fields() {
            let root = field.name.split('.').next().unwrap_or(&field.name);
            if !known.contains(root) && !known.contains(&field.name) {
                return Err(template_error(
                    &self.source,
                    unknown_key_message(root, known.iter().map(String::as_str)),
                ));
            }
        }
        Ok(())
    }

    /// A template computed by a function of the context — a callable target. What it
    /// returns is validated like any rendered location (see "Path rules" above), but,
    /// being the author's own text, is not rewritten. `description` stands for the
    /// template in messages and is what [`Template::as_str`] returns.
    ///
    /// ```
    /// use cairn::{Context, Template};
    /// let t = Template::from_fn("by_size", |ctx: &Context| {
    ///     let rows = match ctx.get("rows") { Some(cairn::Value::Int(n)) => *n, _ => 0 };
    ///     format!("{}/{}.json", if rows > 1000 { "big" } else { "small" }, rows)
    /// });
    /// assert_eq!(t.render(&Context::new().with("rows", 5000))?, "big/5000.json");
    /// assert!(t.is_callable() && t.names().next().is_none());
    /// let escaping = Template::from_fn("up", |_: &Context| "../x".to_string());
    /// assert!(escaping.render(&Context::new()).is_err());
    /// # Ok::<(), cairn::Error>(())
    /// ```
    pub fn from_fn<F>(description: impl Into<String>, f: F) -> Self
    where
        F: Fn(&Context) -> String + Send + Sync + 'static,
    {
        Template {
            source: description.into(),
            body: Body::Callable(Callable(Arc::new(f))),
        }
    }

    /// Whether this template is a function of the context ([`Template::from_fn`]).
    pub fn is_callable(&self) -> bool {
        matches!(self.body, Body::Callable(_))
    }

    /// The placeholder names (dotted names in full), in order of appearance; none for
    /// a callable template.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields().map(|f| f.name.as_str())
    }

    /// The template text (a callable template's description).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn fields(&self) -> impl Iterator<Item = &Field> {
        let parts: &[Part] = match &self.body {
            Body::Parts(p) => p,
            Body::Callable(_) => &[],
        };
        parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f),
            Part::Literal(_) => None,
        })
    }

    /// Renders the template for `context` and validates the result as a store key
    /// (see "Path rules" above).
    ///
    /// # Errors
    /// [`Error::Config`] naming a placeholder the context lacks (listing the keys it
    /// has), a missing field of a map, a spec that does not fit its value, or a null,
    /// map or list value; [`Error::InvalidKey`] naming the placeholder and its value
    /// when a value would leave the store or carries a control character, and when the
    /// whole location is not a valid key (an empty segment, more than 1024 bytes).
    pub fn render(&self, context: &Context) -> Result<String> {
        let parts = match &self.body {
            Body::Parts(parts) => parts,
            Body::Callable(f) => {
                let out = (f.0)(context);
                return validate_location(&self.source, out);
            }
        };
        let mut out = String::with_capacity(self.source.len() + 16);
        let mut refused: Option<String> = None;
        for part in parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Field(field) => {
                    let value =
                        lookup(context, field).map_err(|m| template_error(&self.source, m))?;
                    let text = format_value(value, field.spec.as_ref()).map_err(|m| {
                        template_error(&self.source, format!("'{}': {m}", field.text))
                    })?;
                    match safe_value(&field.text, &text) {
                        Ok(safe) => out.push_str(&safe),
                        Err(reason) => {
                            refused.get_or_insert(reason);
                            out.push_str(&text);
                        }
                    }
                }
            }
        }
        if let Some(reason) = refused {
            return Err(Error::InvalidKey {
                key: out,
                reason: format!("template '{}': {reason}", shorten(&self.source, 160)),
            });
        }
        validate_location(&self.source, out)
    }
}

fn validate_location(source: &str, location: String) -> Result<String> {
    match Key::parse(location.as_str()) {
        Ok(_) => Ok(location),
        Err(Error::InvalidKey { key, reason }) => Err(Error::InvalidKey {
            key,
            reason: format!(
                "{reason} (rendered from template '{}')",
                shorten(source, 160)
            ),
        }),
        Err(e) => Err(e),
    }
}

/// Applies the path rules to one placeholder's text: unsafe characters become `-`;
/// control characters, `.`/`..` segments, empty segments and a leading `/` are
/// refused with a reason naming the placeholder and the value.
fn safe_value(field: &str, raw: &str) -> std::result::Result<String, String> {
    let text = &shorten(raw, 160);
    if let Some(c) = raw.chars().find(|c| c.is_control()) {
        return Err(format!(
            "'{field}' renders '{text}', which contains the control character {c:?}"
        ));
    }
    let safe: String = raw
        .chars()
        .map(|c| {
            if UNSAFE_IN_VALUES.contains(&c) {
                '-'
            } else {
                c
            }
        })
        .collect();
    if safe.starts_with('/') {
        return Err(format!(
            "'{field}' renders '{text}', an absolute path, which would leave the store"
        ));
    }
    for segment in safe.split('/') {
        match segment {
            ".." => {
                return Err(format!(
                    "'{field}' renders '{text}', which would leave the store"
                ))
            }
            "." => {
                return Err(format!(
                    "'{field}' renders '{text}', whose '.' segment is not allowed in a location"
                ))
            }
            "" if safe.contains('/') => {
                return Err(format!(
                    "'{field}' renders '{text}', which makes an empty path segment"
                ))
            }
            _ => {}
        }
    }
    Ok(safe)
}

/// Finds a placeholder's value: the whole dotted name if the context has it as a key,
/// else the first part, then each field in turn.
fn lookup<'c>(context: &'c Context, field: &Field) -> std::result::Result<&'c Value, String> {
    if let Some(v) = context.get(&field.name) {
        return Ok(v);
    }
    let mut path = field.name.split('.');
    let root = path.next().unwrap_or_default();
    let mut value = context
        .get(root)
        .ok_or_else(|| unknown_key_message(root, context.names()))?;
    let mut reached = root.to_string();
    for step in path {
        value = match value {
            Value::Map(m) => m.get(step).ok_or_else(|| {
                let fields: Vec<&str> = m.keys().map(String::as_str).collect();
                format!(
                    "'{}': '{reached}' has no field '{step}'; its fields: {}",
                    field.text,
                    list_or_none(&fields)
                )
            })?,
            Value::List(l) => step
                .parse::<usize>()
                .ok()
                .and_then(|i| l.get(i))
                .ok_or_else(|| {
                    format!(
                        "'{}': '{reached}' is a list of {} and has no element '{step}'",
                        field.text,
                        l.len()
                    )
                })?,
            other => {
                return Err(format!(
                    "'{}': '{reached}' is {} and has no field '{step}'",
                    field.text,
                    other.kind()
                ))
            }
        };
        reached.push('.');
        reached.push_str(step);
    }
    Ok(value)
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn unknown_key_message<'a>(key: &str, available: impl Iterator<Item = &'a str>) -> String {
    let available: Vec<&str> = available.collect::<BTreeSet<_>>().into_iter().collect();
    let hint = available
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!(" (did you mean '{k}'?)"))
        .unwrap_or_default();
    format!(
        "unknown key '{key}'{hint}; available: {}",
        list_or_none(&available)
    )
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Formats one value with its spec; the error says why, without the placeholder.
fn format_value(value: &Value, spec: Option<&Spec>) -> std::result::Result<String, String> {
    match value {
        Value::Null => return Err("the value is null, which has no place in a location".into()),
        Value::Map(m) => {
            let example = m.keys().next().map_or("field", String::as_str);
            return Err(format!(
                "the value is a map; name one of its fields, such as '.{example}'"
            ));
        }
        Value::List(_) => {
            return Err(
                "the value is a list; name one of its elements by index, such as '.0'".into(),
            )
        }
        _ => {}
    }
    let Some(spec) = spec else {
        return Ok(value.to_string());
    };
    if let Value::DateTime(d) = value {
        let items = spec.strftime.as_ref().map_err(|e| {
            format!(
                "a date-time takes a strftime pattern such as %Y-%m-%d, and '{}' {e}",
                spec.raw
            )
        })?;
        let mut out = String::new();
        fmt::write(
            &mut out,
            format_args!("{}", d.format_with_items(items.iter())),
        )
        .map_err(|_| format!("strftime pattern '{}' cannot format {d}", spec.raw))?;
        return Ok(out);
    }
    let format = spec.format.as_ref().map_err(|e| {
        let hint = if spec.strftime.is_ok() {
            format!(
                " (a strftime pattern applies to date-times only; this value is {})",
                value.kind()
            )
        } else {
            String::new()
        };
        format!("invalid format spec '{}': {e}{hint}", spec.raw)
    })?;
    let result = match value {
        Value::Str(s) => format.format_str(s, "text"),
        Value::Bool(b) => format.format_str(if *b { "true" } else { "false" }, "a boolean"),
        Value::Int(i) => format.format_int(*i),
        Value::Float(x) => format.format_float(*x),
        _ => unreachable!("handled above"),
    };
    result.map_err(|e| format!("format spec '{}' {e}", spec.raw))
}

/// At parse time: a placeholder naming a standard key must have a spec that fits the
/// key's kind (and must not name fields of a scalar).
fn check_standard_kind(field: &Field) -> std::result::Result<(), String> {
    let mut path = field.name.split('.');
    let root = path.next().unwrap_or_default();
    let Some(sample) = standard_sample(root) else {
        return Ok(());
    };
    match (path.next(), &sample) {
        (Some(_), Value::Map(_)) => Ok(()),
        (Some(step), _) => Err(format!(
            "'{}': '{root}' is {} and has no field '{step}'",
            field.text,
            sample.kind()
        )),
        (None, _) => format_value(&sample, field.spec.as_ref())
            .map(drop)
            .map_err(|m| format!("'{}': {m}", field.text)),
    }
}

fn parse_parts(source: &str) -> std::result::Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = source.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                chars.next();
                literal.push('}');
            }
            '}' => {
                return Err(format!(
                    "stray '}}' at byte {i} (write '}}}}' for a literal brace)"
                ))
            }
            '{' => {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some((_, '}')) => break,
                        Some((j, '{')) => {
                            return Err(format!(
                                "'{{' at byte {j} inside the placeholder opened at byte {i} \
                                 (placeholders do not nest; write '{{{{' for a literal brace)"
                            ))
                        }
                        Some((_, c)) => inner.push(c),
                        None => {
                            return Err(format!(
                            "'{{' at byte {i} is never closed (write '{{{{' for a literal brace)"
                        ))
                        }
                    }
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Field(parse_field(&inner)?));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

fn parse_field(inner: &str) -> std::result::Result<Field, String> {
    let text = format!("{{{inner}}}");
    let (name, spec) = match inner.split_once(':') {
        Some((name, spec)) => (name.trim(), Some(spec)),
        None => (inner.trim(), None),
    };
    let valid_name = !name.is_empty()
        && name.split('.').all(|segment| {
            !segment.is_empty() && segment.chars().all(|c| c.is_alphanumeric() || c == '_')
        });
    if !valid_name {
        let hint = if name.contains('!') {
            " (conversions such as '!r' are not supported)"
        } else if name.contains('[') {
            " (write '{a.0}' or '{a.key}' instead of indexing with [])"
        } else {
            ""
        };
        return Err(format!(
            "'{text}' is not a valid placeholder: a name is letters, digits and '_', \
             with '.' between fields{hint}"
        ));
    }
    let spec = match spec {
        None | Some("") => None,
        Some(raw) => Some(parse_spec(raw).map_err(|m| format!("'{text}': {m}"))?),
    };
    Ok(Field {
        text,
        name: name.to_string(),
        spec,
    })
}

/// Reads a spec as a format spec and as a strftime pattern; at least one must hold.
fn parse_spec(raw: &str) -> std::result::Result<Spec, String> {
    let format = pyfmt::FormatSpec::parse(raw);
    let strftime = parse_strftime(raw);
    if let (Err(f), Err(s)) = (&format, &strftime) {
        return Err(if raw.contains('%') {
            format!("'{raw}' is neither a format spec ({f}) nor a strftime pattern ({s})")
        } else {
            format!(
                "invalid format spec '{raw}': {f} (for a date-time, write a strftime pattern such as %Y-%m-%d)"
            )
        });
    }
    Ok(Spec {
        raw: raw.to_string(),
        format,
        strftime,
    })
}

/// A strftime pattern: at least one `%` directive, all of them valid for chrono.
fn parse_strftime(raw: &str) -> std::result::Result<Vec<Item<'static>>, String> {
    if !raw.contains('%') {
        return Err("has no % directive".into());
    }
    StrftimeItems::new(raw)
        .parse_to_owned()
        .map_err(|_| match bad_directive(raw) {
            Some(d) => format!("'{d}' is not a strftime directive"),
            None => "is not a valid strftime pattern".into(),
        })
}

/// The first `%` directive chrono rejects, for the error message.
fn bad_directive(raw: &str) -> Option<String> {
    let mut rest = raw;
    while let Some(at) = rest.find('%') {
        let tail = &rest[at..];
        // A directive is `%`, optional modifiers, one letter: at most 5 characters.
        let candidates: Vec<&str> = (2..=5)
            .filter_map(|n| {
                tail.char_indices()
                    .nth(n)
                    .map(|(i, _)| &tail[..i])
                    .or(Some(tail))
            })
            .collect();
        let valid = candidates
            .iter()
            .find(|c| StrftimeItems::new(c).parse().is_ok());
        match valid {
            Some(ok) => rest = &tail[ok.len()..],
            None => {
                let end = tail.char_indices().nth(2).map_or(tail.len(), |(i, _)| i);
                return Some(tail[..end].to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};

    fn render(template: &str, ctx: &Context) -> String {
        Template::parse(template)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
            .render(ctx)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
    }

    /// Formats one value with a spec, as `format(value, spec)` in Python.
    fn fmt(value: impl Into<Value>, spec: &str) -> String {
        let ctx = Context::new().with("v", value);
        render(&format!("x{{v:{spec}}}"), &ctx)[1..].to_string()
    }

    fn fmt_err(value: impl Into<Value>, spec: &str) -> String {
        let ctx = Context::new().with("v", value);
        match Template::parse(&format!("{{v:{spec}}}")) {
            Err(e) => e.to_string(),
            Ok(t) => t.render(&ctx).expect_err(spec).to_string(),
        }
    }

    fn monday() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 29, 6, 5, 9).unwrap()
    }

    #[test]
    fn renders_names_and_escapes() {
        let t = Template::parse("{{x}}/{a}-{b}.txt").unwrap();
        let ctx = Context::new().with("a", "one").with("b", 2);
        assert_eq!(t.render(&ctx).unwrap(), "{x}/one-2.txt");
        assert_eq!(t.names().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(render("a{{{b}}}c", &ctx), "a{2}c");
        assert_eq!(render("{{}}{{{{", &ctx), "{}{{");
    }

    #[test]
    fn syntax_errors_are_reported_at_parse_time() {
        for bad in [
            "{a", "a}", "{}", "{a b}", "{:03}", "{a..b}", "{.a}", "{a.}", "{a!r}", "{a[0]}",
            "{a{b}}",
        ] {
            let err = Template::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn syntax_errors_say_what_is_wrong() {
        let msg = |s: &str| Template::parse(s).unwrap_err().to_string();
        assert!(msg("out/{a").contains("never closed"));
        assert!(msg("out/a}").contains("stray '}'"));
        assert!(msg("{}").contains("not a valid placeholder"));
        assert!(msg("{a{b}}").contains("do not nest"));
        assert!(msg("{a!r}").contains("conversions"));
    }

    #[test]
    fn integers_take_width_zero_padding_and_alignment() {
        assert_eq!(fmt(7, "03"), "007");
        assert_eq!(fmt(-7, "04"), "-007");
        assert_eq!(fmt(7, "5"), "    7");
        assert_eq!(fmt(7, "<5"), "7    ");
        assert_eq!(fmt(7, "^5"), "  7  ");
        assert_eq!(fmt(7, "~^6"), "~~7~~~");
        // The path rules apply to fill characters too.
        assert_eq!(fmt(7, "*^6"), "--7---");
        assert_eq!(fmt(-7, "=5"), "-   7");
        assert_eq!(fmt(-7, "x=5"), "-xxx7");
        assert_eq!(fmt(7, "<05"), "70000");
        assert_eq!(fmt(12345, "03"), "12345");
    }

    #[test]
    fn integers_take_signs_grouping_and_bases() {
        assert_eq!(fmt(5, "+"), "+5");
        assert_eq!(fmt(5, " "), " 5");
        assert_eq!(fmt(-5, "-"), "-5");
        assert_eq!(fmt(1234567, ","), "1,234,567");
        assert_eq!(fmt(1234567, "_"), "1_234_567");
        assert_eq!(fmt(-1234, ","), "-1,234");
        assert_eq!(fmt(1234, "010,"), "00,001,234");
        assert_eq!(fmt(1234, "08,"), "0,001,234");
        assert_eq!(fmt(255, "x"), "ff");
        assert_eq!(fmt(255, "X"), "FF");
        assert_eq!(fmt(255, "#x"), "0xff");
        assert_eq!(fmt(255, "#X"), "0XFF");
        assert_eq!(fmt(255, "#010x"), "0x000000ff");
        assert_eq!(fmt(5, "b"), "101");
        assert_eq!(fmt(5, "#b"), "0b101");
        assert_eq!(fmt(8, "o"), "10");
        assert_eq!(fmt(8, "#o"), "0o10");
        assert_eq!(fmt(-255, "#x"), "-0xff");
        assert_eq!(fmt(65535, "_x"), "ffff");
        assert_eq!(fmt(1048575, "_b"), "1111_1111_1111_1111_1111");
        assert_eq!(fmt(i64::MIN, "d"), "-9223372036854775808");
        assert_eq!(fmt(42, "d"), "42");
    }

    #[test]
    fn integers_with_float_types_format_as_floats() {
        assert_eq!(fmt(3, "f"), "3.000000");
        assert_eq!(fmt(3, ".1f"), "3.0");
        assert_eq!(fmt(1, "%"), "100.000000%");
        assert_eq!(fmt(1500, ".2e"), "1.50e+03");
    }

    #[test]
    fn floats_take_precision_and_types() {
        assert_eq!(fmt(12.3456, ">8.2f"), "   12.35");
        assert_eq!(fmt(12.3456, ".2f"), "12.35");
        assert_eq!(fmt(2.5, ".0f"), "2");
        assert_eq!(fmt(0.125, ".2f"), "0.12");
        assert_eq!(fmt(2.0, "#.0f"), "2.");
        assert_eq!(fmt(1.5, "F"), "1.500000");
        assert_eq!(fmt(-1.5, "08.2f"), "-0001.50");
        assert_eq!(fmt(1234567.891, ",.2f"), "1,234,567.89");
        assert_eq!(fmt(1234.5, "012,.1f"), "00,001,234.5");
        assert_eq!(fmt(1234.5, ".2e"), "1.23e+03");
        assert_eq!(fmt(1234.5, "E"), "1.234500E+03");
        assert_eq!(fmt(0.000123, "e"), "1.230000e-04");
        assert_eq!(fmt(1e100, ".1e"), "1.0e+100");
        assert_eq!(fmt(0.125, ".1%"), "12.5%");
        assert_eq!(fmt(0.5, "%"), "50.000000%");
        assert_eq!(fmt(-0.0001, "z.2f"), "0.00");
        assert_eq!(fmt(-0.0001, ".2f"), "-0.00");
        assert_eq!(fmt(2.5, "+.1f"), "+2.5");
    }

    #[test]
    fn general_format_picks_fixed_or_scientific_like_python() {
        assert_eq!(fmt(1234.5, "g"), "1234.5");
        assert_eq!(fmt(0.00001, "g"), "1e-05");
        assert_eq!(fmt(0.0001, "g"), "0.0001");
        assert_eq!(fmt(1234567.0, "g"), "1.23457e+06");
        assert_eq!(fmt(1234567.0, "G"), "1.23457E+06");
        assert_eq!(fmt(100.0, ".2g"), "1e+02");
        assert_eq!(fmt(1.0, "#g"), "1.00000");
        assert_eq!(fmt(0.0, "g"), "0");
        assert_eq!(fmt(9.9999, ".3g"), "10");
        assert_eq!(fmt(f64::INFINITY, "g"), "inf");
        assert_eq!(fmt(f64::NEG_INFINITY, "F"), "-INF");
        assert_eq!(fmt(f64::NAN, ">5"), "  nan");
    }

    #[test]
    fn floats_without_a_type_print_as_python_does() {
        assert_eq!(fmt(0.1, ""), "0.1");
        assert_eq!(fmt(1.0, ">5"), "  1.0");
        assert_eq!(fmt(1e16, ">1"), "1e+16");
        assert_eq!(fmt(1e15, ">1"), "1000000000000000.0");
        assert_eq!(fmt(0.00001, ">1"), "1e-05");
        assert_eq!(fmt(1.5, ".2"), "1.5");
        assert_eq!(fmt(1.0, ".2"), "1.0");
        assert_eq!(fmt(12.0, ".2"), "1.2e+01");
        assert_eq!(fmt(1234.5, ".2"), "1.2e+03");
        assert_eq!(fmt(1234567.0, ","), "1,234,567.0");
        let ctx = Context::new().with("x", 2.5).with("y", -0.0);
        assert_eq!(render("{x}_{y}", &ctx), "2.5_-0.0");
    }

    #[test]
    fn strings_take_fill_align_width_and_truncation() {
        assert_eq!(fmt("abcdef", ".3"), "abc");
        assert_eq!(fmt("ab", "5"), "ab   ");
        assert_eq!(fmt("ab", ">5"), "   ab");
        assert_eq!(fmt("ab", "^6"), "  ab  ");
        assert_eq!(fmt("ab", "^5"), " ab  ");
        assert_eq!(fmt("ab", "_<5"), "ab___");
        assert_eq!(fmt("ab", "05"), "ab000");
        assert_eq!(fmt("abcdef", "8.3s"), "abc     ");
        assert_eq!(fmt("été", ">5"), "  été");
        assert_eq!(fmt(true, ">6"), "  true");
    }

    #[test]
    fn specs_that_do_not_fit_the_value_name_the_placeholder() {
        for (value, spec, says) in [
            (Value::from("ab"), "d", "type 'd'"),
            (Value::from("ab"), "+", "a sign"),
            (Value::from("ab"), ",", "','"),
            (Value::from("ab"), "=5", "'=' alignment"),
            (Value::from(1.5), "d", "type 'd'"),
            (Value::from(1.5), "x", "type 'x'"),
            (Value::from(5), "s", "type 's'"),
            (Value::from(5), ".2", "precision"),
            (Value::from(5), ",x", "','"),
            (
                Value::from(5),
                "%Y",
                "strftime pattern applies to date-times only",
            ),
        ] {
            let err = fmt_err(value.clone(), spec);
            assert!(
                err.contains(&format!("{{v:{spec}}}")) && err.contains(says),
                "{value:?} {spec}: {err}"
            );
        }
    }

    #[test]
    fn invalid_specs_fail_at_parse_time() {
        for spec in ["q", "03q", "5.", ",_", ".2fx", "99999", "%Q"] {
            let err = Template::parse(&format!("{{v:{spec}}}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("{{v:{spec}}}")), "{spec}: {err}");
        }
        let err = Template::parse("{v:q}").unwrap_err().to_string();
        assert!(err.contains("unknown format type 'q'"), "{err}");
        let err = Template::parse("{v:%Y-%Q}").unwrap_err().to_string();
        assert!(err.contains("'%Q' is not a strftime directive"), "{err}");
    }

    #[test]
    fn specs_on_standard_keys_are_checked_against_their_kind_at_parse_time() {
        for bad in [
            "{date:%Q}",
            "{date:>10}",
            "{map_index:%Y}",
            "{map_index:.2}",
            "{task_name:d}",
            "{today:%A}",
            "{parameters}",
            "{date.year}",
            "{task_name.x}",
        ] {
            let err = Template::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
        for good in [
            "{date:%A}",
            "{map_index:03}",
            "{task_run_count:+}",
            "{task_name:.8}",
            "{parameters.city:>4}",
            "{my_key:%Y}",
            "{my_key:03}",
        ] {
            assert!(Template::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn dates_take_strftime_patterns() {
        let ctx = Context::new().with_date(monday());
        assert_eq!(render("{date:%A}", &ctx), "Monday");
        assert_eq!(render("{date:%Y-%m-%d}", &ctx), "2024-01-29");
        assert_eq!(
            render("{date:%Y}/{date:%m}/{date:%d}/x", &ctx),
            "2024/01/29/x"
        );
        assert_eq!(render("{date:%b %-d %y}", &ctx), "Jan 29 24");
        assert_eq!(render("{date:%j_%%}", &ctx), "029_%");
        assert_eq!(render("{date:%s}", &ctx), "1706508309");
    }

    #[test]
    fn a_strftime_pattern_is_invalid_for_a_user_date_only_when_rendered() {
        let t = Template::parse("{when:>10}").unwrap();
        let err = t
            .render(&Context::new().with("when", monday()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("{when:>10}") && err.contains("strftime"),
            "{err}"
        );
    }

    #[test]
    fn date_derived_keys_render_across_a_month_end() {
        let ctx = Context::new().with_date(Utc.with_ymd_and_hms(2024, 1, 31, 23, 30, 0).unwrap());
        assert_eq!(
            render("{yesterday}/{today}/{tomorrow}", &ctx),
            "2024-01-30/2024-01-31/2024-02-01"
        );
        assert_eq!(
            render("{yesterday_nodash}-{today_nodash}-{tomorrow_nodash}", &ctx),
            "20240130-20240131-20240201"
        );
    }

    #[test]
    fn dotted_names_reach_parameters_and_inputs() {
        let ctx = Context::new()
            .with_parameters(&serde_json::json!({"city": "Oslo", "window": {"days": 7}}))
            .unwrap()
            .with_input("stations", &["a", "b"])
            .unwrap()
            .with("flat.name", "kept");
        assert_eq!(
            render(
                "{parameters.city}/{parameters.window.days:02}/{stations.1}/{flat.name}",
                &ctx
            ),
            "Oslo/07/b/kept"
        );
        let t = Template::parse("{parameters}").err();
        assert!(t.is_some(), "a map without a field is refused");
    }

    #[test]
    fn missing_fields_are_named_with_the_ones_there() {
        let ctx = Context::new()
            .with_parameters(&serde_json::json!({"city": "Oslo", "country": "NO"}))
            .unwrap()
            .with_input("xs", &[1, 2])
            .unwrap()
            .with("name", "a");
        let err = |s: &str| {
            Template::parse(s)
                .unwrap()
                .render(&ctx)
                .unwrap_err()
                .to_string()
        };
        let msg = err("{parameters.cty}");
        assert!(
            msg.contains("'parameters' has no field 'cty'") && msg.contains("city, country"),
            "{msg}"
        );
        let msg = err("{xs.5}");
        assert!(msg.contains("list of 2"), "{msg}");
        let msg = err("{name.first}");
        assert!(msg.contains("'name' is text"), "{msg}");
        let msg = err("{xs}");
        assert!(msg.contains("{xs}") && msg.contains("list"), "{msg}");
    }

    #[test]
    fn null_values_are_refused() {
        let ctx = Context::new().with_input("limit", &None::<u32>).unwrap();
        let err = Template::parse("{limit}")
            .unwrap()
            .render(&ctx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("{limit}") && err.contains("null"), "{err}");
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_available_ones() {
        let t = Template::parse("{task_nme}.txt").unwrap();
        let err = t
            .render(&Context::new().with("task_name", "x").with("flow_name", "f"))
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("unknown key 'task_nme' (did you mean 'task_name'?); available: flow_name, task_name"),
            "{msg}"
        );
        let msg = t.render(&Context::new()).unwrap_err().to_string();
        assert!(msg.contains("available: none"), "{msg}");
    }

    #[test]
    fn unknown_keys_are_found_when_the_task_is_defined() {
        let known = ["task_name", "parameters", "city", "flow_name"];
        let err = Template::parse_with_keys("{flow_name}/{citty}/{task_name}", known).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config { .. }));
        assert!(
            msg.contains("unknown key 'citty' (did you mean 'city'?); available: city, flow_name, parameters, task_name"),
            "{msg}"
        );
        let msg = Template::parse_with_keys("{zzz}", known)
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("did you mean"), "{msg}");
        assert!(Template::parse_with_keys("{parameters.any.depth}/{city}", known).is_ok());
        let t = Template::parse("{flow_name}/{task_name}").unwrap();
        assert!(t.check_keys(Context::STANDARD_KEYS.iter().copied()).is_ok());
        assert!(t.check_keys(vec!["flow_name".to_string()]).is_err());
    }

    #[test]
    fn values_cannot_escape_the_store() {
        let t = Template::parse("out/{name}").unwrap();
        for v in [
            "../../etc/passwd",
            "/abs",
            "",
            "a//b",
            "..",
            ".",
            "a/./b",
            "a/",
            "x/../../y",
        ] {
            let err = t.render(&Context::new().with("name", v)).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{v}: {err}");
        }
    }

    #[test]
    fn escape_attempts_name_the_placeholder_and_the_value() {
        let t = Template::parse("out/{name}.json").unwrap();
        let msg = |v: &str| {
            t.render(&Context::new().with("name", v))
                .unwrap_err()
                .to_string()
        };
        assert!(msg("../x").contains("'{name}' renders '../x', which would leave the store"));
        assert!(msg("/etc/x").contains("'{name}' renders '/etc/x', an absolute path"));
        assert!(msg("a//b").contains("'{name}' renders 'a//b', which makes an empty path segment"));
        assert!(msg(".").contains("'.' segment"));
    }

    #[test]
    fn values_may_add_directories_inside_the_store() {
        let ctx = Context::new().with("prefix", "2024/q1");
        assert_eq!(render("{prefix}/x.csv", &ctx), "2024/q1/x.csv");
        let ctx = Context::new().with("name", "a..b");
        assert_eq!(render("{name}", &ctx), "a..b");
    }

    #[test]
    fn control_characters_in_values_are_refused() {
        let t = Template::parse("out/{name}").unwrap();
        let err = t.render(&Context::new().with("name", "a\nb")).unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }));
        assert!(err.to_string().contains("control character '\\n'"), "{err}");
    }

    #[test]
    fn unsafe_characters_in_values_become_dashes() {
        let ctx = Context::new()
            .with("v", r#"a:b*c?d"e<f>g|h\i"#)
            .with_date(monday());
        assert_eq!(render("{v}", &ctx), "a-b-c-d-e-f-g-h-i");
        assert_eq!(render("{date}", &ctx), "2024-01-29T06-05-09Z");
        assert_eq!(render("{date:%H:%M}", &ctx), "06-05");
        // `\` cannot smuggle a Windows path separator either.
        assert_eq!(
            render("x/{v}", &Context::new().with("v", r"..\..\y")),
            "x/..-..-y"
        );
    }

    #[test]
    fn literal_text_keeps_its_characters() {
        let ctx = Context::new().with("t", "a:b");
        assert_eq!(render("run:{t}", &ctx), "run:a-b");
    }

    #[test]
    fn overlong_locations_are_refused() {
        let t = Template::parse("out/{name}").unwrap();
        let err = t
            .render(&Context::new().with("name", "a".repeat(1100)))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
        assert!(
            err.to_string().contains("at most 1024 bytes")
                && err.to_string().contains("out/{name}")
        );
        let err = Template::parse("{n:2000}").unwrap_err();
        assert!(
            err.to_string().contains("larger than a location can be"),
            "{err}"
        );
    }

    #[test]
    fn empty_results_and_bad_literals_are_refused() {
        assert!(Template::parse("{a}")
            .unwrap()
            .render(&Context::new().with("a", ""))
            .is_err());
        assert!(Template::parse("../{a}")
            .unwrap()
            .render(&Context::new().with("a", "x"))
            .is_err());
        assert!(Template::parse("/{a}")
            .unwrap()
            .render(&Context::new().with("a", "x"))
            .is_err());
    }

    #[test]
    fn callable_targets_are_rendered_and_validated() {
        let t = Template::from_fn("by_task", |ctx: &Context| {
            format!(
                "fn/{}.json",
                ctx.get("task_name")
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )
        });
        assert_eq!(
            t.render(&Context::new().with("task_name", "a")).unwrap(),
            "fn/a.json"
        );
        assert!(t.is_callable());
        assert_eq!(t.as_str(), "by_task");
        assert_eq!(t.names().count(), 0);
        assert!(t.check_keys(["nothing"]).is_ok());
        let err = t
            .render(&Context::new().with("task_name", "../.."))
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidKey { .. }) && err.to_string().contains("by_task"),
            "{err}"
        );
        // The author's own text keeps its characters.
        let colon = Template::from_fn("colon", |_: &Context| "a:b".to_string());
        assert_eq!(colon.render(&Context::new()).unwrap(), "a:b");
        assert_eq!(t.clone(), t);
        assert_ne!(t, Template::from_fn("by_task", |_: &Context| String::new()));
    }

    #[test]
    fn templates_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Template>();
    }

    #[test]
    fn a_prefect_style_target_renders() {
        let ctx = Context::new()
            .with("flow_name", "etl")
            .with("task_name", "load")
            .with("task_run_count", 2)
            .with("map_index", 11usize)
            .with_date(monday());
        assert_eq!(
            render(
                "{flow_name}/{date:%A}/{task_name}-{map_index:03}-try{task_run_count}.txt",
                &ctx
            ),
            "etl/Monday/load-011-try2.txt"
        );
    }
}
