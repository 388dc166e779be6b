//! The canonical text of a token stream: what a task's source digest is computed
//! from.
//!
//! The text depends only on the tokens, never on comments or layout, and never on
//! `TokenStream`'s `Display` (whose spacing is not specified and has changed between
//! compiler versions):
//!
//! - identifiers and literals are their text (`r#type`, `1_000`, `"a b"`);
//! - a punctuation character is its char; one with `Joint` spacing (immediately
//!   followed by another punctuation, as in `::` or `=>`) is glued to the next
//!   token, so `a::b` reads `a :: b` and a (hypothetical) `a: :b` reads `a : : b`;
//! - a group is its open delimiter, its contents and its close delimiter; an
//!   invisible (`None`-delimited) group is just its contents;
//! - tokens are separated by one space;
//! - `#[doc = ...]` and `#![doc = ...]` attributes (what `///` and `//!` comments
//!   become) are left out, so editing a doc comment inside a body changes nothing.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// The canonical text of `tokens`.
pub fn canonical(tokens: TokenStream) -> String {
    let mut writer = Writer::default();
    writer.stream(tokens);
    writer.out
}

#[derive(Default)]
struct Writer {
    out: String,
    /// The last token was a `Joint` punctuation: no space before the next one.
    glue: bool,
}

impl Writer {
    fn push(&mut self, text: &str) {
        if !self.out.is_empty() && !self.glue {
            self.out.push(' ');
        }
        self.out.push_str(text);
        self.glue = false;
    }

    fn stream(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            if let Some(len) = doc_attribute_len(&tokens[i..]) {
                i += len;
                continue;
            }
            match &tokens[i] {
                TokenTree::Ident(ident) => self.push(&ident.to_string()),
                TokenTree::Literal(literal) => self.push(&literal.to_string()),
                TokenTree::Punct(punct) => {
                    self.push(punct.as_char().encode_utf8(&mut [0; 4]));
                    self.glue = punct.spacing() == Spacing::Joint;
                }
                TokenTree::Group(group) => {
                    let (open, close) = match group.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::None => {
                            self.stream(group.stream());
                            i += 1;
                            continue;
                        }
                    };
                    self.push(open);
                    self.stream(group.stream());
                    self.push(close);
                }
            }
            i += 1;
        }
    }
}

/// The number of tokens of the `#[doc = ...]` / `#![doc = ...]` attribute that
/// `tokens` starts with, if it does.
fn doc_attribute_len(tokens: &[TokenTree]) -> Option<usize> {
    let TokenTree::Punct(hash) = tokens.first()? else {
        return None;
    };
    if hash.as_char() != '#' {
        return None;
    }
    let (bang, group) = match tokens.get(1)? {
        TokenTree::Punct(p) if p.as_char() == '!' => (1, tokens.get(2)?),
        other => (0, other),
    };
    let TokenTree::Group(group) = group else {
        return None;
    };
    if group.delimiter() != Delimiter::Bracket {
        return None;
    }
    let mut inner = group.stream().into_iter();
    match (inner.next(), inner.next()) {
        (Some(TokenTree::Ident(doc)), Some(TokenTree::Punct(eq)))
            if doc == "doc" && eq.as_char() == '=' =>
        {
            Some(2 + bang)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::{Group, Ident, Punct, Span};
    use quote::quote;

    fn text(source: &str) -> String {
        canonical(source.parse().unwrap())
    }

    #[test]
    fn layout_and_comments_do_not_matter() {
        let a = text("{ let y = x + 1; y * 2 }");
        let b = text(
            "{
                // a comment
                let y =
                    x+1; /* another */
                y*2
            }",
        );
        assert_eq!(a, b);
        assert_eq!(a, "{ let y = x + 1 ; y * 2 }");
    }

    #[test]
    fn code_changes_matter() {
        assert_ne!(text("{ x + 1 }"), text("{ x + 2 }"));
        assert_ne!(text("{ x + 1 }"), text("{ x - 1 }"));
        assert_ne!(text("{ f(x) }"), text("{ f[x] }"));
        assert_ne!(text("{ \"a b\" }"), text("{ \"a  b\" }"));
        assert_ne!(text("{ a::b }"), text("{ a:b }"));
    }

    #[test]
    fn doc_comments_are_ignored() {
        let plain = text("{ let y = 1; struct S; y }");
        let documented = text(
            "{
                /// the value
                let y = 1;
                /** a struct */
                struct S;
                y
            }",
        );
        assert_eq!(plain, documented);
        assert_eq!(text("{ //! inner doc\n 1 }"), text("{ 1 }"));
        assert_eq!(text("{ #![doc = \"x\"] 1 }"), text("{ 1 }"));
        // Other attributes stay.
        assert_ne!(
            text("{ #[allow(unused)] let y = 1; y }"),
            text("{ let y = 1; y }")
        );
        assert_ne!(text("{ #[doc(hidden)] struct S; }"), text("{ struct S; }"));
    }

    #[test]
    fn joint_punctuation_is_glued() {
        assert_eq!(text("a::b::<T>()"), "a :: b ::< T > ( )");
        assert_eq!(text("|x| x => 'a"), "| x | x => 'a");
        assert_eq!(text("Vec<Vec<u8>>"), "Vec < Vec < u8 >>");
        let joint = quote!(a::b);
        let alone: TokenStream = [
            TokenTree::Ident(Ident::new("a", Span::call_site())),
            TokenTree::Punct(Punct::new(':', Spacing::Alone)),
            TokenTree::Punct(Punct::new(':', Spacing::Alone)),
            TokenTree::Ident(Ident::new("b", Span::call_site())),
        ]
        .into_iter()
        .collect();
        assert_eq!(canonical(joint), "a :: b");
        assert_eq!(canonical(alone), "a : : b");
    }

    #[test]
    fn invisible_groups_are_their_contents() {
        let inner: TokenStream = "x + 1".parse().unwrap();
        let grouped: TokenStream = [TokenTree::Group(Group::new(Delimiter::None, inner.clone()))]
            .into_iter()
            .chain(quote!(*2))
            .collect();
        assert_eq!(canonical(grouped), "x + 1 * 2");
    }

    #[test]
    fn literals_and_raw_idents_keep_their_text() {
        assert_eq!(
            text("r#type 1_000u64 b'a' r\"x\" 1.5e3"),
            "r#type 1_000u64 b'a' r\"x\" 1.5e3"
        );
    }
}
