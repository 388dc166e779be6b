//! The compile-time check of a literal `target` / `location` template: its braces
//! balance and every placeholder names a key the task's context will hold.
//!
//! The syntax mirrors `cairn::Template`: `{{` and `}}` are literal braces, a
//! placeholder is `{name}` or `{name:spec}`, a name is letters, digits and `_` with
//! `.` between fields, and only its first field has to be a known key
//! (`{parameters.city}` needs `parameters`). Specs are left to the runtime parser.

/// The keys every task run's context holds (`cairn::context::STANDARD_KEYS`).
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

/// The full (possibly dotted) names of the placeholders of `source`, in order.
///
/// # Errors
///
/// A message for an unbalanced brace (a `{` never closed, a `{` inside a
/// placeholder, a stray `}`) or a malformed name.
pub fn placeholder_names(source: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut chars = source.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                chars.next();
            }
            '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                chars.next();
            }
            '}' => {
                return Err(format!(
                    "unbalanced braces: stray '}}' at byte {i} (write '}}}}' for a literal brace)"
                ))
            }
            '{' => {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some((_, '}')) => break,
                        Some((j, '{')) => {
                            return Err(format!(
                                "unbalanced braces: '{{' at byte {j} inside the placeholder opened \
                                 at byte {i} (placeholders do not nest; write '{{{{' for a literal brace)"
                            ))
                        }
                        Some((_, c)) => inner.push(c),
                        None => {
                            return Err(format!(
                                "unbalanced braces: '{{' at byte {i} is never closed \
                                 (write '{{{{' for a literal brace)"
                            ))
                        }
                    }
                }
                let name = inner
                    .split_once(':')
                    .map_or(inner.as_str(), |(n, _)| n)
                    .trim();
                let valid = !name.is_empty()
                    && name.split('.').all(|segment| {
                        !segment.is_empty()
                            && segment.chars().all(|c| c.is_alphanumeric() || c == '_')
                    });
                if !valid {
                    return Err(format!(
                        "'{{{inner}}}' is not a valid placeholder: a name is letters, digits \
                         and '_', with '.' between fields"
                    ));
                }
                names.push(name.to_string());
            }
            _ => {}
        }
    }
    Ok(names)
}

/// Checks the template `source` of the option `what` (`target`, `location`).
///
/// `known` holds the keys besides the standard ones (the task's inputs and its
/// `user_keys`); `None` when they cannot be known at compile time, in which case only
/// the syntax is checked.
///
/// # Errors
///
/// The message to report on the literal.
pub fn check_template(source: &str, what: &str, known: Option<&[String]>) -> Result<(), String> {
    let names = placeholder_names(source).map_err(|m| format!("invalid {what} {source:?}: {m}"))?;
    let Some(known) = known else {
        return Ok(());
    };
    let mut available: Vec<&str> = STANDARD_KEYS
        .iter()
        .copied()
        .chain(known.iter().map(String::as_str))
        .collect();
    available.sort_unstable();
    available.dedup();
    for name in &names {
        let first = name.split('.').next().unwrap_or_default();
        if available.binary_search(&first).is_ok() {
            continue;
        }
        let hint = suggest(first, &available)
            .map(|s| format!("; did you mean '{s}'?"))
            .unwrap_or_else(|| ";".to_string());
        return Err(format!(
            "unknown key '{first}' in {what} {source:?}{hint} available: {}",
            available.join(", ")
        ));
    }
    Ok(())
}

/// The candidate nearest to `name` by edit distance, if at most 2 edits away (the
/// first in `candidates`' order among equals).
pub fn suggest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance between `a` and `b`, in chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        placeholder_names(s).unwrap()
    }

    #[test]
    fn extracts_names_and_skips_escapes() {
        assert_eq!(names("{date:%A}/{task_name}.txt"), ["date", "task_name"]);
        assert_eq!(names("{{literal}}/{x}"), ["x"]);
        assert_eq!(names("a{{{b}}}c"), ["b"]);
        assert_eq!(names("{{}}{{{{"), Vec::<String>::new());
        assert_eq!(names("plain/path.json"), Vec::<String>::new());
    }

    #[test]
    fn dotted_names_and_specs_with_colons() {
        assert_eq!(
            names("{parameters.city}/{x.field:>4}/{date:%H:%M}"),
            ["parameters.city", "x.field", "date"]
        );
        assert_eq!(names("{ map_index :03}"), ["map_index"]);
    }

    #[test]
    fn unbalanced_braces_are_errors() {
        for bad in ["{date", "date}", "{a{b}}", "x/{task_name}}y", "}{"] {
            let err = placeholder_names(bad).unwrap_err();
            assert!(err.contains("unbalanced braces"), "{bad}: {err}");
        }
        assert!(check_template("{date", "target", None)
            .unwrap_err()
            .starts_with("invalid target \"{date\": unbalanced braces"));
    }

    #[test]
    fn malformed_names_are_errors() {
        for bad in ["{}", "{:%A}", "{a..b}", "{a b}", "{x!r}"] {
            let err = placeholder_names(bad).unwrap_err();
            assert!(err.contains("not a valid placeholder"), "{bad}: {err}");
        }
    }

    #[test]
    fn known_keys_pass() {
        let known = ["x".to_string(), "region".to_string()];
        for ok in [
            "{date:%A}/{task_name}.txt",
            "{parameters.city}/{x}/{region}",
            "{x.field}/{today_nodash}/{map_index:03}",
            "{{dat}}/{flow_run_id}",
        ] {
            check_template(ok, "target", Some(&known)).unwrap();
        }
    }

    #[test]
    fn unknown_key_with_suggestion() {
        let err = check_template("{dat:%A}/x.txt", "target", Some(&["x".to_string()])).unwrap_err();
        let mut all: Vec<&str> = STANDARD_KEYS.to_vec();
        all.push("x");
        all.sort_unstable();
        assert_eq!(
            err,
            format!(
                "unknown key 'dat' in target \"{{dat:%A}}/x.txt\"; did you mean 'date'? available: {}",
                all.join(", ")
            )
        );
    }

    #[test]
    fn unknown_key_checks_the_first_segment_only() {
        let err = check_template("{param.city}", "location", Some(&[])).unwrap_err();
        assert!(err.starts_with("unknown key 'param' in location"), "{err}");
        let err = check_template("{zzzzzz}", "target", Some(&[])).unwrap_err();
        assert!(
            err.starts_with("unknown key 'zzzzzz' in target \"{zzzzzz}\"; available: date, "),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_not_checked_when_keys_are_opaque() {
        check_template("{anything}/{date}", "target", None).unwrap();
    }

    #[test]
    fn distance_and_suggestion() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("dat", "date"), 1);
        assert_eq!(edit_distance("täsk", "task"), 1);
        assert_eq!(suggest("dat", &["data", "date"]), Some("data"));
        assert_eq!(
            suggest("task_nme", &["flow_name", "task_name"]),
            Some("task_name")
        );
        assert_eq!(suggest("xyz", &["date", "today"]), None);
    }
}
