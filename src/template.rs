//! Location templates: `{name}` placeholders filled from a [`Context`].

use std::fmt;

use crate::backend::{Error, Key, Result};
use crate::context::Context;

/// A parsed location template such as `{flow_name}/{task_name}.json`.
///
/// `{name}` is replaced by the context value of that name; `{{` and `}}` stand for
/// literal braces. Templates are parsed once; rendering checks that every name is
/// present and that the result is a valid store key (no `..`, no absolute path, no
/// empty segment), so a value can never make a location escape the store.
///
/// ```
/// use cairn::{Context, Template};
/// let t = Template::parse("{flow_name}/{task_name}.json")?;
/// let ctx = Context::new().with("flow_name", "etl").with("task_name", "clean");
/// assert_eq!(t.render(&ctx)?, "etl/clean.json");
/// let escape = Context::new().with("flow_name", "..").with("task_name", "x");
/// assert!(t.render(&escape).is_err());
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(String),
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn template_error(source: &str, message: impl fmt::Display) -> Error {
    Error::Config {
        message: format!("template '{source}': {message}"),
    }
}

impl Template {
    /// Parses a template.
    ///
    /// # Errors
    /// [`Error::Config`] for an unclosed `{`, a stray `}`, an empty or malformed name.
    pub fn parse(source: &str) -> Result<Self> {
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
                    return Err(template_error(
                        source,
                        format!("stray '}}' at byte {i} (write '}}}}' for a literal brace)"),
                    ))
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, c)) => name.push(c),
                            None => {
                                return Err(template_error(
                                    source,
                                    format!("'{{' at byte {i} is never closed"),
                                ))
                            }
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '.')
                    {
                        return Err(template_error(
                            source,
                            format!("'{{{name}}}' is not a valid placeholder name"),
                        ));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(name));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// The placeholder names, in order of appearance.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(n) => Some(n.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders the template and validates the result as a store key.
    ///
    /// # Errors
    /// [`Error::Config`] naming a placeholder the context lacks (and listing those it
    /// has); [`Error::InvalidKey`] when the rendered location is not a valid key.
    pub fn render(&self, context: &Context) -> Result<String> {
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Field(name) => match context.get(name) {
                    Some(v) => out.push_str(&v.to_string()),
                    None => {
                        let available: Vec<&str> = context.names().collect();
                        return Err(template_error(
                            &self.source,
                            format!(
                                "unknown key '{name}'; available: {}",
                                if available.is_empty() {
                                    "none".to_string()
                                } else {
                                    available.join(", ")
                                }
                            ),
                        ));
                    }
                },
            }
        }
        Key::parse(out.as_str())?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names_and_escapes() {
        let t = Template::parse("{{x}}/{a}-{b}.txt").unwrap();
        let ctx = Context::new().with("a", "one").with("b", 2);
        assert_eq!(t.render(&ctx).unwrap(), "{x}/one-2.txt");
        assert_eq!(t.names().collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn syntax_errors_are_reported_at_parse_time() {
        for bad in ["{a", "a}", "{}", "{a b}"] {
            let err = Template::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_available_ones() {
        let t = Template::parse("{task_nme}.txt").unwrap();
        let err = t
            .render(&Context::new().with("task_name", "x"))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("'task_nme'") && msg.contains("task_name"), "{msg}");
    }

    #[test]
    fn values_cannot_escape_the_store() {
        let t = Template::parse("out/{name}").unwrap();
        for v in ["../../etc/passwd", "/abs", "", "a//b"] {
            let err = t.render(&Context::new().with("name", v)).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{v}: {err}");
        }
    }
}
