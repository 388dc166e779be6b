//! The arguments of `#[cairn::task(...)]`.

use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Token};

use crate::template_keys::suggest;

/// The options that may be given as a bare word (`checkpoint` means
/// `.checkpoint(true)`): the one-`bool` options of `cairn::Task`.
pub const FLAGS: &[&str] = &[
    "checkpoint",
    "refresh",
    "refresh_cache",
    "serialize",
    "memory_tier",
    "persist_result",
    "strict_cache",
];

/// One `key` or `key = value` argument, as written.
pub struct RawArg {
    pub key: Ident,
    pub value: Option<Expr>,
}

impl Parse for RawArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(RawArg { key, value })
    }
}

/// The comma-separated arguments, as written.
pub struct RawArgs(pub Vec<RawArg>);

impl Parse for RawArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let args = Punctuated::<RawArg, Token![,]>::parse_terminated(input)?;
        Ok(RawArgs(args.into_iter().collect()))
    }
}

/// One builder call the arguments ask for.
pub enum Opt {
    /// A bare flag: `.key(true)`.
    Flag(Ident),
    /// `target` / `location` as a string literal: `.try_key("...")?`, checked at
    /// compile time.
    Template { key: Ident, template: LitStr },
    /// `location = expr`: `.try_location(expr)?`.
    Fallible { key: Ident, value: Expr },
    /// `target = expr` (not a literal): `.target_fn(expr)`.
    TargetFn { key: Ident, value: Expr },
    /// Any other `key = expr`: `.key(expr)`.
    Call { key: Ident, value: Expr },
}

/// The user keys a template may name besides the standard keys and the inputs.
#[derive(Debug, PartialEq, Eq)]
pub enum UserKeys {
    /// No `user_keys` argument.
    None,
    /// `user_keys = ["a", "b"]`: known at compile time.
    Literal(Vec<String>),
    /// `user_keys = SOME_EXPR`: templates' keys cannot be checked at compile time.
    Opaque,
}

/// The validated arguments.
pub struct TaskArgs {
    /// `name = "..."`.
    pub name: Option<LitStr>,
    /// What `user_keys` declares.
    pub user_keys: UserKeys,
    /// The builder calls, `user_keys` first (the templates after it are checked
    /// against it), then in the order written.
    pub options: Vec<Opt>,
}

impl TaskArgs {
    /// Validates the arguments; every problem is reported, each at its token.
    pub fn from_raw(raw: RawArgs) -> syn::Result<TaskArgs> {
        let mut errors: Option<syn::Error> = None;
        let mut push_error = |e: syn::Error| match &mut errors {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        };
        let mut seen: Vec<String> = Vec::new();
        let mut name = None;
        let mut user_keys = UserKeys::None;
        let mut first = Vec::new();
        let mut options = Vec::new();
        for RawArg { key, value } in raw.0 {
            let key_text = key.to_string();
            if seen.contains(&key_text) {
                push_error(syn::Error::new(
                    key.span(),
                    format!("duplicate argument `{key_text}`"),
                ));
                continue;
            }
            seen.push(key_text.clone());
            let Some(value) = value else {
                if FLAGS.contains(&key_text.as_str()) {
                    options.push(Opt::Flag(key));
                } else {
                    push_error(flag_error(&key));
                }
                continue;
            };
            match key_text.as_str() {
                "name" => match string_literal(&value) {
                    Some(lit) => name = Some(lit.clone()),
                    None => push_error(syn::Error::new_spanned(
                        &value,
                        "`name` must be a string literal: `name = \"...\"`",
                    )),
                },
                "target" | "location" => match string_literal(&value) {
                    Some(lit) => options.push(Opt::Template {
                        key,
                        template: lit.clone(),
                    }),
                    None if key_text == "target" => options.push(Opt::TargetFn { key, value }),
                    None => options.push(Opt::Fallible { key, value }),
                },
                "user_keys" => {
                    user_keys = match literal_keys(&value) {
                        Some(keys) => UserKeys::Literal(keys),
                        None => UserKeys::Opaque,
                    };
                    first.push(Opt::Call { key, value });
                }
                _ => options.push(Opt::Call { key, value }),
            }
        }
        match errors {
            Some(e) => Err(e),
            None => {
                first.extend(options);
                Ok(TaskArgs {
                    name,
                    user_keys,
                    options: first,
                })
            }
        }
    }
}

impl Parse for TaskArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        TaskArgs::from_raw(input.parse()?)
    }
}

fn flag_error(key: &Ident) -> syn::Error {
    let key_text = key.to_string();
    let message = match key_text.as_str() {
        "name" | "target" | "location" | "user_keys" => {
            format!("`{key_text}` needs a value: `{key_text} = ...`")
        }
        _ => {
            let hint = suggest(&key_text, FLAGS)
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            format!(
                "unknown flag `{key_text}`; {hint}flags are {}; other options take a value: `{key_text} = ...`",
                FLAGS.join(", ")
            )
        }
    };
    syn::Error::new(key.span(), message)
}

/// `expr` as a string literal, looking through invisible groups (a literal passed
/// through a `macro_rules!` fragment).
fn string_literal(expr: &Expr) -> Option<&LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit),
        Expr::Group(group) => string_literal(&group.expr),
        _ => None,
    }
}

/// The keys of `["a", "b"]` (or `&["a", "b"]`), when all are string literals.
fn literal_keys(expr: &Expr) -> Option<Vec<String>> {
    match expr {
        Expr::Array(array) => array
            .elems
            .iter()
            .map(|e| string_literal(e).map(LitStr::value))
            .collect(),
        Expr::Reference(reference) => literal_keys(&reference.expr),
        Expr::Group(group) => literal_keys(&group.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::ToTokens;

    fn parse(source: &str) -> syn::Result<TaskArgs> {
        syn::parse_str::<TaskArgs>(source)
    }

    fn describe(opt: &Opt) -> String {
        match opt {
            Opt::Flag(k) => format!("flag {k}"),
            Opt::Template { key, template } => format!("template {key} {:?}", template.value()),
            Opt::Fallible { key, value } => format!("fallible {key} {}", value.to_token_stream()),
            Opt::TargetFn { key, value } => format!("fn {key} {}", value.to_token_stream()),
            Opt::Call { key, value } => format!("call {key} {}", value.to_token_stream()),
        }
    }

    #[test]
    fn empty() {
        let args = parse("").unwrap();
        assert!(args.name.is_none());
        assert_eq!(args.user_keys, UserKeys::None);
        assert!(args.options.is_empty());
    }

    #[test]
    fn all_kinds_in_order() {
        let args = parse(
            "checkpoint, target = \"{date:%A}/{task_name}.txt\", result = my_store(), retries = 2, \
             name = \"renamed\", location = LOC, cache_policy = INPUTS - \"debug\", \
             user_keys = [\"region\", \"model\"], refresh = false,",
        )
        .unwrap();
        assert_eq!(args.name.unwrap().value(), "renamed");
        assert_eq!(
            args.user_keys,
            UserKeys::Literal(vec!["region".into(), "model".into()])
        );
        let described: Vec<String> = args.options.iter().map(describe).collect();
        assert_eq!(
            described,
            [
                "call user_keys [\"region\" , \"model\"]",
                "flag checkpoint",
                "template target \"{date:%A}/{task_name}.txt\"",
                "call result my_store ()",
                "call retries 2",
                "fallible location LOC",
                "call cache_policy INPUTS - \"debug\"",
                "call refresh false",
            ]
        );
    }

    #[test]
    fn target_not_a_literal_is_a_callable() {
        let args = parse("target = |ctx: &cairn::Context| format!(\"x\")").unwrap();
        assert!(matches!(&args.options[0], Opt::TargetFn { key, .. } if key == "target"));
        let args = parse("target = my_target").unwrap();
        assert_eq!(describe(&args.options[0]), "fn target my_target");
    }

    #[test]
    fn user_keys_opaque() {
        assert_eq!(
            parse("user_keys = KEYS").unwrap().user_keys,
            UserKeys::Opaque
        );
        assert_eq!(
            parse("user_keys = [\"a\", B]").unwrap().user_keys,
            UserKeys::Opaque
        );
        assert_eq!(
            parse("user_keys = &[\"a\"]").unwrap().user_keys,
            UserKeys::Literal(vec!["a".into()])
        );
    }

    fn error(source: &str) -> String {
        match parse(source) {
            Ok(_) => panic!("{source} parsed"),
            Err(e) => e
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" | "),
        }
    }

    #[test]
    fn unknown_flag() {
        let e = error("checkpont");
        assert!(e.starts_with("unknown flag `checkpont`; did you mean `checkpoint`? flags are checkpoint, refresh, refresh_cache, serialize, memory_tier"), "{e}");
        let e = error("retries");
        assert!(e.starts_with("unknown flag `retries`; flags are"), "{e}");
    }

    #[test]
    fn bad_values() {
        assert_eq!(
            error("name = 3"),
            "`name` must be a string literal: `name = \"...\"`"
        );
        assert_eq!(error("target"), "`target` needs a value: `target = ...`");
        assert_eq!(
            error("retries = 1, retries = 2"),
            "duplicate argument `retries`"
        );
        // Every problem is reported.
        assert_eq!(
            error("nope, name = x, checkpoint, checkpoint")
                .matches(" | ")
                .count(),
            2
        );
        // Syntax.
        assert!(parse("retries = ").is_err());
        assert!(parse("\"x\"").is_err());
    }
}
