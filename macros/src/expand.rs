//! The expansion of `#[cairn::task]` (described in the crate documentation).

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemFn, LitStr, Pat, PathArguments, ReturnType,
    Signature, Type,
};

use crate::args::{Opt, TaskArgs, UserKeys};
use crate::canonical::canonical;
use crate::template_keys::check_template;

/// The whole expansion; on an error, the error and the item unchanged (so that the
/// rest of the crate still sees the function and reports no follow-up errors about
/// it).
pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    match try_expand(attr, item.clone()) {
        Ok(out) => out,
        Err(error) => {
            let mut out = error.to_compile_error();
            out.extend(item);
            out
        }
    }
}

/// Collects several errors into one.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// One parameter of the task function.
pub struct Input {
    /// The binding (`mut` removed).
    pub ident: Ident,
    pub ty: Type,
}

impl Input {
    /// The input's name in the task: the identifier without `r#`.
    pub fn name(&self) -> String {
        self.ident.unraw().to_string()
    }
}

/// What the function returns, and so how its body's value becomes the task's.
pub enum Output {
    /// `-> Result<O, E>` (any type whose last path segment is `Result`): the task's
    /// output is `O` and the body's error is the task's failure.
    Fallible(Type),
    /// Anything else (`()` when nothing is declared): the output itself.
    Infallible(Type),
}

impl Output {
    /// The task's output type `O`.
    pub fn ty(&self) -> &Type {
        match self {
            Output::Fallible(ty) | Output::Infallible(ty) => ty,
        }
    }
}

fn try_expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args_result = syn::parse2::<TaskArgs>(attr);
    let body_tokens = match item.clone().into_iter().last() {
        Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Brace => group,
        _ => {
            return Err(syn::Error::new(
                Span::call_site(),
                "`#[cairn::task]` goes on an `async fn` with a body",
            ))
        }
    };
    let function: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("`#[cairn::task]` goes on an `async fn`: {e}"),
        )
    })?;

    let mut errors = Errors::default();
    if let Err(e) = check_signature(&function.sig) {
        errors.push(e);
    }
    let inputs = inputs(&function.sig).unwrap_or_else(|e| {
        errors.push(e);
        Vec::new()
    });
    let output = classify_output(&function.sig.output).map_err(|e| errors.push(e));
    let args = args_result.map_err(|e| errors.push(e));
    let (Ok(output), Ok(args)) = (output, args) else {
        errors.finish()?;
        unreachable!("an error was recorded");
    };
    if let Err(e) = check_templates(&args, &inputs) {
        errors.push(e);
    }
    errors.finish()?;

    let source = canonical(TokenStream::from(TokenTree::Group(body_tokens)));
    Ok(generate(&function, &inputs, &output, &args, &source))
}

/// Rejects what a task function cannot be.
pub fn check_signature(sig: &Signature) -> syn::Result<()> {
    let mut errors = Errors::default();
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            "`#[cairn::task]` needs an `async fn`",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new(
            unsafety.span,
            "a `#[cairn::task]` function cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "a `#[cairn::task]` function cannot declare an ABI",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics.params,
            "a `#[cairn::task]` function cannot be generic: a task has one input and one output type",
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            "a `#[cairn::task]` function cannot have a `where` clause",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "a `#[cairn::task]` function cannot be variadic",
        ));
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        if let Some(span) = find_impl(ty.to_token_stream()) {
            errors.push(syn::Error::new(
                span,
                "`impl Trait` cannot be a task's output type: name the type",
            ));
        }
    }
    errors.finish()
}

/// The parameters, each a plain identifier (`mut` allowed) with a type without
/// `impl Trait`.
pub fn inputs(sig: &Signature) -> syn::Result<Vec<Input>> {
    let mut errors = Errors::default();
    let mut inputs = Vec::new();
    for arg in &sig.inputs {
        let typed = match arg {
            FnArg::Receiver(receiver) => {
                errors.push(syn::Error::new_spanned(
                    receiver,
                    "a `#[cairn::task]` function cannot take `self`: write a free function",
                ));
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        let mut ok = true;
        match &*typed.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {}
            other => {
                ok = false;
                errors.push(syn::Error::new_spanned(
                    other,
                    "a task input must be a plain identifier (`name: Type` or `mut name: Type`): \
                     the name is the input's name in templates and cache keys",
                ));
            }
        }
        if let Some(span) = find_impl(typed.ty.to_token_stream()) {
            ok = false;
            errors.push(syn::Error::new(
                span,
                "`impl Trait` cannot be a task input's type: name the type",
            ));
        }
        if let (true, Pat::Ident(pat)) = (ok, &*typed.pat) {
            inputs.push(Input {
                ident: pat.ident.clone(),
                ty: (*typed.ty).clone(),
            });
        }
    }
    errors.finish().map(|()| inputs)
}

/// The span of the first `impl` keyword in `tokens`.
fn find_impl(tokens: TokenStream) -> Option<Span> {
    tokens.into_iter().find_map(|tree| match tree {
        TokenTree::Ident(ident) if ident == "impl" => Some(ident.span()),
        TokenTree::Group(group) => find_impl(group.stream()),
        _ => None,
    })
}

/// Classifies the declared return type.
///
/// # Errors
///
/// A `Result` whose first generic argument is not a type (or that has none: a
/// `Result` alias with every parameter fixed cannot be told apart from a plain
/// type).
pub fn classify_output(output: &ReturnType) -> syn::Result<Output> {
    let ty = match output {
        ReturnType::Default => return Ok(Output::Infallible(syn::parse_quote!(()))),
        ReturnType::Type(_, ty) => ty,
    };
    let mut inner: &Type = ty;
    while let Type::Group(group) = inner {
        inner = &group.elem;
    }
    let Type::Path(path) = inner else {
        return Ok(Output::Infallible((**ty).clone()));
    };
    let Some(last) = path.path.segments.last() else {
        return Ok(Output::Infallible((**ty).clone()));
    };
    if last.ident != "Result" {
        return Ok(Output::Infallible((**ty).clone()));
    }
    match &last.arguments {
        PathArguments::AngleBracketed(args) => match args.args.first() {
            Some(GenericArgument::Type(ok)) => Ok(Output::Fallible(ok.clone())),
            _ => Err(syn::Error::new_spanned(
                &last.arguments,
                "the first argument of a task's `Result` must be its output type",
            )),
        },
        _ => Err(syn::Error::new_spanned(
            last,
            "write the task's output type: `Result<T, E>` (a `Result` without arguments \
             hides it)",
        )),
    }
}

/// Checks the literal templates against the standard keys, the inputs and the
/// literal `user_keys`.
fn check_templates(args: &TaskArgs, inputs: &[Input]) -> syn::Result<()> {
    let known: Option<Vec<String>> = match &args.user_keys {
        UserKeys::Opaque => None,
        UserKeys::None => Some(inputs.iter().map(Input::name).collect()),
        UserKeys::Literal(keys) => Some(
            inputs
                .iter()
                .map(Input::name)
                .chain(keys.iter().cloned())
                .collect(),
        ),
    };
    let mut errors = Errors::default();
    for opt in &args.options {
        if let Opt::Template { key, template } = opt {
            if let Err(message) =
                check_template(&template.value(), &key.to_string(), known.as_deref())
            {
                errors.push(syn::Error::new(template.span(), message));
            }
        }
    }
    errors.finish()
}

/// The attribute's first path segment (`doc`, `allow`, `cfg`...).
fn attr_name(attr: &Attribute) -> String {
    attr.path()
        .segments
        .first()
        .map(|s| s.ident.to_string())
        .unwrap_or_default()
}

/// The generated code, once everything is checked.
pub fn generate(
    function: &ItemFn,
    inputs: &[Input],
    output: &Output,
    args: &TaskArgs,
    source: &str,
) -> TokenStream {
    let vis = &function.vis;
    let fn_name = &function.sig.ident;
    let companion = format_ident!("{}_task", fn_name);
    let task_name = match &args.name {
        Some(name) => name.clone(),
        None => LitStr::new(&fn_name.unraw().to_string(), fn_name.span()),
    };
    let out_ty = output.ty();
    let idents: Vec<&Ident> = inputs.iter().map(|i| &i.ident).collect();
    let tys: Vec<&Type> = inputs.iter().map(|i| &i.ty).collect();
    let in_ty = quote!((#(#tys,)*));
    let task_ty = quote!(::cairn::Task<#in_ty, #out_ty>);
    let names: Vec<String> = inputs.iter().map(Input::name).collect();
    let type_texts: Vec<String> = inputs
        .iter()
        .map(|i| canonical(i.ty.to_token_stream()))
        .collect();
    let out_text = canonical(out_ty.to_token_stream());

    let docs: Vec<&Attribute> = function
        .attrs
        .iter()
        .filter(|a| attr_name(a) == "doc")
        .collect();
    let cfgs: Vec<&Attribute> = function
        .attrs
        .iter()
        .filter(|a| matches!(attr_name(a).as_str(), "cfg" | "cfg_attr"))
        .collect();
    let lints: Vec<&Attribute> = function
        .attrs
        .iter()
        .filter(|a| {
            matches!(
                attr_name(a).as_str(),
                "allow" | "warn" | "deny" | "forbid" | "expect"
            )
        })
        .collect();
    // `expect` would be unfulfilled on the wrapper: it goes on the body only.
    let outer_attrs: Vec<&Attribute> = function
        .attrs
        .iter()
        .filter(|a| attr_name(a) != "expect")
        .collect();
    let companion_doc = format!(" The cairn task behind [`{}`].", fn_name.unraw());
    let blank_doc = (!docs.is_empty()).then(|| quote!(#[doc = ""]));

    // The body, untouched, as a nested function (its own signature, so `mut` inputs,
    // `?` and `return` keep their meaning).
    let mut body_fn = function.clone();
    body_fn.attrs = lints.iter().map(|a| (*a).clone()).collect();
    body_fn.vis = syn::Visibility::Inherited;
    body_fn.sig.ident = Ident::new("__cairn_body", fn_name.span());

    let closure = match output {
        Output::Fallible(_) => quote! {
            |(#(#idents,)*): #in_ty| __cairn_body(#(#idents),*)
        },
        Output::Infallible(_) => quote! {
            |(#(#idents,)*): #in_ty| async move {
                ::core::result::Result::<_, ::core::convert::Infallible>::Ok(
                    __cairn_body(#(#idents),*).await
                )
            }
        },
    };

    let calls = args.options.iter().map(|opt| match opt {
        Opt::Flag(key) => quote_spanned!(key.span()=> .#key(true)),
        Opt::Template { key, template } => {
            let method = Ident::new(&format!("try_{key}"), key.span());
            quote_spanned!(key.span()=> .#method(#template)?)
        }
        Opt::Fallible { key, value } => {
            let method = Ident::new(&format!("try_{key}"), key.span());
            quote_spanned!(key.span()=> .#method(#value)?)
        }
        Opt::TargetFn { key, value } => {
            let method = Ident::new("target_fn", key.span());
            quote_spanned!(key.span()=> .#method(#value))
        }
        Opt::Call { key, value } => quote_spanned!(key.span()=> .#key(#value)),
    });

    let input_names = if names.is_empty() {
        quote!([""; 0])
    } else {
        quote!([#(#names),*])
    };
    let params = inputs.iter().map(|Input { ident, ty }| quote!(#ident: #ty));
    let asyncness = &function.sig.asyncness;
    let fn_token = &function.sig.fn_token;

    quote! {
        #(#outer_attrs)*
        #[allow(dead_code)]
        #vis #asyncness #fn_token #fn_name(#(#params),*)
            -> ::core::result::Result<#out_ty, ::cairn::TaskError>
        {
            #companion().call((#(#idents,)*)).await
        }

        #(#cfgs)*
        #(#docs)*
        #blank_doc
        #[doc = #companion_doc]
        #vis fn #companion() -> &'static #task_ty {
            #body_fn

            static __CAIRN_TASK: ::std::sync::OnceLock<#task_ty> = ::std::sync::OnceLock::new();
            __CAIRN_TASK.get_or_init(|| {
                let __cairn_define = || -> ::core::result::Result<#task_ty, ::cairn::Error> {
                    ::cairn::Task::new(#task_name, #closure)
                        .inputs(#input_names)
                        .signature(&[#((#names, #type_texts)),*], #out_text)
                        .task_source(#source)
                        #(#calls)*
                        .checked()
                };
                __cairn_define().unwrap_or_else(|e| ::cairn::__private::invalid_task(#task_name, e))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn output(source: &str) -> Result<(bool, String), String> {
        let ret: ReturnType = syn::parse_str(source).unwrap();
        match classify_output(&ret) {
            Ok(Output::Fallible(ty)) => Ok((true, canonical(ty.to_token_stream()))),
            Ok(Output::Infallible(ty)) => Ok((false, canonical(ty.to_token_stream()))),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn return_type_classification() {
        let fallible = |s: &str| output(s).unwrap();
        assert_eq!(fallible("-> Result<i64, MyError>"), (true, "i64".into()));
        assert_eq!(
            fallible("-> anyhow::Result<Vec<u8>>"),
            (true, "Vec < u8 >".into())
        );
        assert_eq!(fallible("-> std::io::Result<()>"), (true, "( )".into()));
        assert_eq!(
            fallible("-> ::core::result::Result<(i64, String), Box<dyn std::error::Error>>"),
            (true, "( i64 , String )".into())
        );
        assert_eq!(fallible(""), (false, "( )".into()));
        assert_eq!(fallible("-> ()"), (false, "( )".into()));
        assert_eq!(fallible("-> i64"), (false, "i64".into()));
        assert_eq!(
            fallible("-> Option<Result<i64, E>>"),
            (false, "Option < Result < i64 , E > >".into())
        );
        assert_eq!(
            fallible("-> MyResult<i64>"),
            (false, "MyResult < i64 >".into())
        );
        assert!(output("-> Result")
            .unwrap_err()
            .contains("write the task's output type"));
        assert!(output("-> Result<'a, i64>")
            .unwrap_err()
            .contains("must be its output type"));
    }

    fn sig(source: &str) -> Signature {
        syn::parse_str(source).unwrap()
    }

    fn messages(result: syn::Result<impl Sized>) -> Vec<String> {
        match result {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn inputs_are_names_and_types() {
        let inputs = inputs(&sig(
            "async fn f(x: i64, mut debug: bool, r#type: Vec<String>)",
        ))
        .unwrap();
        let described: Vec<(String, String, String)> = inputs
            .iter()
            .map(|i| {
                (
                    i.name(),
                    i.ident.to_string(),
                    canonical(i.ty.to_token_stream()),
                )
            })
            .collect();
        assert_eq!(
            described,
            [
                ("x".into(), "x".into(), "i64".into()),
                ("debug".into(), "debug".into(), "bool".into()),
                ("type".into(), "r#type".into(), "Vec < String >".into()),
            ]
        );
        assert!(super::inputs(&sig("async fn f()")).unwrap().is_empty());
    }

    #[test]
    fn rejected_inputs() {
        let errors = messages(inputs(&sig(
            "async fn f(&self, (a, b): (i64, i64), _: u8, ref r: u8, y: impl Fn(), z: Vec<impl Clone>)",
        )));
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors[0].contains("cannot take `self`"));
        for e in &errors[1..4] {
            assert!(
                e.starts_with("a task input must be a plain identifier"),
                "{e}"
            );
        }
        for e in &errors[4..] {
            assert!(
                e.starts_with("`impl Trait` cannot be a task input's type"),
                "{e}"
            );
        }
    }

    #[test]
    fn rejected_signatures() {
        assert!(check_signature(&sig("async fn f(x: i64) -> i64")).is_ok());
        let errors = messages(check_signature(&sig(
            "unsafe extern \"C\" fn f<T: Clone>(x: T) -> impl Display where T: Send",
        )));
        assert_eq!(
            errors,
            [
                "`#[cairn::task]` needs an `async fn`",
                "a `#[cairn::task]` function cannot be `unsafe`",
                "a `#[cairn::task]` function cannot declare an ABI",
                "a `#[cairn::task]` function cannot be generic: a task has one input and one output type",
                "a `#[cairn::task]` function cannot have a `where` clause",
                "`impl Trait` cannot be a task's output type: name the type",
            ]
        );
    }

    fn expanded(attr: TokenStream, item: TokenStream) -> String {
        expand(attr, item).to_string()
    }

    /// The generated code, whitespace removed, so that assertions do not depend on
    /// `Display`'s spacing.
    fn squashed(attr: TokenStream, item: TokenStream) -> String {
        expanded(attr, item).split_whitespace().collect()
    }

    #[test]
    fn expansion_of_a_fallible_task() {
        let out = squashed(
            quote!(
                checkpoint,
                target = "{date:%A}/{task_name}-{x}.txt",
                result = my_store(),
                retries = 2
            ),
            quote! {
                /// Adds one.
                #[allow(unused_variables)]
                pub async fn add_one(mut x: i64, debug: bool) -> Result<i64, MyError> {
                    x += 1;
                    Ok(x)
                }
            },
        );
        for part in [
            "#[doc=r\"Adds one.\"]#[allow(unused_variables)]#[allow(dead_code)]pubasyncfnadd_one(x:i64,debug:bool)->::core::result::Result<i64,::cairn::TaskError>{add_one_task().call((x,debug,)).await}",
            "#[doc=r\"Adds one.\"]#[doc=\"\"]#[doc=\"The cairn task behind [`add_one`].\"]pubfnadd_one_task()->&'static::cairn::Task<(i64,bool,),i64>{",
            "#[allow(unused_variables)]asyncfn__cairn_body(mutx:i64,debug:bool)->Result<i64,MyError>{x+=1;Ok(x)}",
            "static__CAIRN_TASK:::std::sync::OnceLock<::cairn::Task<(i64,bool,),i64>>=::std::sync::OnceLock::new();",
            "::cairn::Task::new(\"add_one\",|(x,debug,):(i64,bool,)|__cairn_body(x,debug))",
            ".inputs([\"x\",\"debug\"]).signature(&[(\"x\",\"i64\"),(\"debug\",\"bool\")],\"i64\")",
            ".task_source(\"{x+=1;Ok(x)}\")",
            ".checkpoint(true).try_target(\"{date:%A}/{task_name}-{x}.txt\")?.result(my_store()).retries(2).checked()",
            "__cairn_define().unwrap_or_else(|e|::cairn::__private::invalid_task(\"add_one\",e))",
        ] {
            let part: String = part.split_whitespace().collect();
            assert!(out.contains(&part), "missing {part}\nin {out}");
        }
    }

    #[test]
    fn expansion_of_an_infallible_task() {
        let out = squashed(
            quote!(
                name = "renamed",
                target = my_target,
                user_keys = ["region"],
                refresh_cache
            ),
            quote!(
                async fn nothing() {
                    println!("hi")
                }
            ),
        );
        for part in [
            "#[allow(dead_code)]asyncfnnothing()->::core::result::Result<(),::cairn::TaskError>{nothing_task().call(()).await}",
            "fnnothing_task()->&'static::cairn::Task<(),()>",
            "::cairn::Task::new(\"renamed\",|():()|asyncmove{::core::result::Result::<_,::core::convert::Infallible>::Ok(__cairn_body().await)})",
            ".inputs([\"\";0]).signature(&[],\"()\")",
            ".user_keys([\"region\"]).target_fn(my_target).refresh_cache(true).checked()",
        ] {
            let part: String = part.split_whitespace().collect();
            assert!(out.contains(&part), "missing {part}\nin {out}");
        }
        // The companion has only the generated doc.
        assert!(
            out.contains(".await}#[doc=\"Thecairntaskbehind[`nothing`].\"]fnnothing_task"),
            "{out}"
        );
    }

    #[test]
    fn one_input_is_a_one_tuple() {
        let out = squashed(
            quote!(),
            quote!(
                async fn f(s: String) -> usize {
                    s.len()
                }
            ),
        );
        assert!(out.contains("::cairn::Task<(String,),usize>"), "{out}");
        assert!(out.contains("|(s,):(String,)|asyncmove"), "{out}");
        assert!(out.contains("f_task().call((s,)).await"), "{out}");
    }

    #[test]
    fn task_source_ignores_layout_and_doc_comments() {
        let source = |item: &str| {
            let out = squashed(quote!(), item.parse().unwrap());
            let start = out.find(".task_source(").unwrap();
            out[start..].split(')').next().unwrap().to_string()
        };
        let a = source("async fn f(x: i64) -> i64 { let y = x + 1; y }");
        let b = source(
            "/// Docs differ.\nasync fn f(x: i64) -> i64 {\n    // comment\n    /// doc\n    let y = x+1;\n    y\n}",
        );
        let c = source("async fn f(x: i64) -> i64 { let y = x + 2; y }");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn lint_attributes_go_on_the_body_and_expect_only_there() {
        let out = squashed(
            quote!(),
            quote! {
                #[cfg(feature = "x")]
                #[expect(unused_mut)]
                #[inline]
                async fn f(mut x: i64) -> i64 { x }
            },
        );
        assert!(
            out.starts_with("#[cfg(feature=\"x\")]#[inline]#[allow(dead_code)]asyncfnf("),
            "{out}"
        );
        assert!(
            out.contains("#[cfg(feature=\"x\")]#[doc=\"Thecairntaskbehind[`f`].\"]fnf_task()"),
            "{out}"
        );
        assert!(
            out.contains("#[expect(unused_mut)]asyncfn__cairn_body(mutx:i64)"),
            "{out}"
        );
    }

    #[test]
    fn errors_become_compile_errors_and_keep_the_item() {
        let item = quote!(
            fn not_async(x: i64) -> i64 {
                x
            }
        );
        let out = expanded(quote!(), item.clone());
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("needs an `async fn`"), "{out}");
        assert!(out.ends_with(&item.to_string()), "{out}");

        let out = expanded(
            quote!(target = "{dat:%A}/{y}.txt"),
            quote!(
                async fn f(x: i64) {}
            ),
        );
        assert!(out.contains("unknown key 'dat' in target"), "{out}");
        assert!(out.contains("did you mean 'date'?"), "{out}");

        let out = expanded(
            quote!(checkpont, location = "{x"),
            quote!(
                async fn f(x: i64) {}
            ),
        );
        assert!(out.contains("unknown flag `checkpont`"), "{out}");
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");

        let out = expanded(
            quote!(),
            quote!(
                struct S;
            ),
        );
        assert!(out.contains("goes on an `async fn`"), "{out}");
    }

    #[test]
    fn templates_know_inputs_and_user_keys() {
        let f = quote!(
            async fn f(city: String) {}
        );
        let ok = |attr: TokenStream| !expanded(attr, f.clone()).contains("compile_error");
        assert!(ok(quote!(
            target = "{city}/{parameters.x}/{date:%H:%M}.txt"
        )));
        assert!(!ok(quote!(target = "{region}/{city}.txt")));
        assert!(ok(quote!(
            target = "{region}/{city}.txt",
            user_keys = ["region"]
        )));
        assert!(ok(quote!(
            location = "{region}/{city}.txt",
            user_keys = KEYS
        )));
        assert!(!ok(quote!(
            location = "{region}/{city}.txt}",
            user_keys = KEYS
        )));
    }
}
