//! The `#[cairn::task]` attribute: an `async fn` that runs as a cairn task. Use it
//! through the `cairn` crate (`cairn::task`); the generated code names only
//! `::cairn`, `::core` and `::std` paths.
//!
//! # The expansion
//!
//! ```ignore
//! /// Adds one.
//! #[cairn::task(checkpoint, target = "{date:%A}/{task_name}.txt", result = my_store(), retries = 2)]
//! pub async fn add_one(x: i64, debug: bool) -> Result<i64, MyError> { /* body */ }
//! ```
//!
//! becomes two functions:
//!
//! ```ignore
//! /// Adds one.
//! pub async fn add_one(x: i64, debug: bool) -> Result<i64, cairn::TaskError> {
//!     add_one_task().call((x, debug)).await
//! }
//!
//! /// Adds one.
//! ///
//! /// The cairn task behind [`add_one`].
//! pub fn add_one_task() -> &'static cairn::Task<(i64, bool), i64> {
//!     async fn __cairn_body(x: i64, debug: bool) -> Result<i64, MyError> { /* body */ }
//!     static __CAIRN_TASK: OnceLock<cairn::Task<(i64, bool), i64>> = OnceLock::new();
//!     __CAIRN_TASK.get_or_init(|| {
//!         let define = || -> Result<cairn::Task<(i64, bool), i64>, cairn::Error> {
//!             cairn::Task::new("add_one", |(x, debug,): (i64, bool,)| __cairn_body(x, debug))
//!                 .inputs(["x", "debug"])
//!                 .signature(&[("x", "i64"), ("debug", "bool")], "i64")
//!                 .task_source("{ /* the body's canonical text */ }")
//!                 .checkpoint(true)
//!                 .try_target("{date:%A}/{task_name}.txt")?
//!                 .result(my_store())
//!                 .retries(2)
//!                 .checked() // the first definition error, if any
//!         };
//!         define().unwrap_or_else(|e| cairn::__private::invalid_task("add_one", e))
//!     })
//! }
//! ```
//!
//! - **Inputs.** The task's input is the tuple of the parameter types, in order
//!   (`(A,)` for one, `()` for none); `.inputs` records the parameter names (without
//!   `mut` or `r#`). Each parameter must be a plain identifier, `mut` allowed.
//! - **Output.** If the declared return type's last path segment is `Result`
//!   (`Result<T, E>`, `anyhow::Result<T>`, `std::io::Result<T>`), the task's output
//!   is its first argument `T` and an `Err` from the body fails the run. Otherwise
//!   (`()` when nothing is declared) the output is the return type and the body
//!   cannot fail. The outer function always returns
//!   `Result<O, cairn::TaskError>`.
//! - **Signature and source.** `.signature` records the input names and the
//!   canonical text of each input type and of the output type; `.task_source`
//!   records the canonical text of the body (see *The canonical text* below), which
//!   ignores comments, layout and doc comments but changes with any code change.
//! - **Attributes.** The outer function keeps the visibility and the attributes
//!   (docs, lints, `cfg`...) and gets `#[allow(dead_code)]`, since a task may be used
//!   only through its companion; the companion `<fn>_task` has the same visibility,
//!   the docs and the `cfg`s; lint attributes also go on the body (`#[expect]` only
//!   there).
//! - **Errors** are reported at compile time, at the offending token: a function
//!   that is not `async`, is generic, has a `where` clause, `self`, a parameter
//!   pattern other than an identifier, or `impl Trait` in a parameter or the output;
//!   an unknown flag; a malformed or unknown placeholder in a literal template.
//!
//! # Arguments
//!
//! Comma-separated, each at most once:
//!
//! | argument | call |
//! |---|---|
//! | `name = "..."` | the task's name (default: the function's name) |
//! | `checkpoint`, `refresh`, `refresh_cache`, `serialize`, `memory_tier`, `persist_result`, `strict_cache` (bare flags) | `.checkpoint(true)`... |
//! | `target = "template"` / `location = "template"` | `.try_target("...")?` / `.try_location("...")?`, checked at compile time |
//! | `target = expr` (not a literal) | `.target_fn(expr)`: a location computed from the `cairn::Context` |
//! | `location = expr` (not a literal) | `.try_location(expr)?` |
//! | `user_keys = ["region", ...]` | `.user_keys([...])`, called first; the keys become known to template checks |
//! | any other `key = expr` | `.key(expr)`: `retries = 3`, `retry_delay = ...`, `result = ...`, `cache_policy = ...`, `version = "1.0"`... |
//!
//! # Compile-time template check
//!
//! A literal `target` / `location` must balance its braces (`{{` and `}}` are
//! literal braces), and the first field of each placeholder name (`{name}`,
//! `{name:spec}`, `{name.field}`) must be a standard context key (`flow_name`,
//! `date`, `parameters`, `task_name`, ...), a parameter of the function or a key of
//! a literal `user_keys` list:
//!
//! ```text
//! error: unknown key 'dat' in target "{dat:%A}/x.txt"; did you mean 'date'? available: date, flow_name, ...
//! ```
//!
//! Format specs are checked when the task is defined, by `cairn::Template`. With a
//! non-literal `user_keys`, only the syntax is checked at compile time.
//!
//! # The canonical text
//!
//! Not `TokenStream`'s `Display` (its spacing is unspecified and changes between
//! compilers) but a walk over the token trees: identifiers and literals as written,
//! punctuation as its char glued to the next token when its spacing is `Joint`
//! (`a::b` is `a :: b`), groups as their delimiters around their contents (invisible
//! groups as just their contents), one space between tokens, and `#[doc = ...]`
//! attributes left out.
//!
//! Limitations: the attribute applies to free functions only (not methods in an
//! `impl`), and the generated code names the crate `::cairn`.

use proc_macro::TokenStream;

mod args;
mod canonical;
mod expand;
mod template_keys;

/// Turns an `async fn` into a cairn task; see `cairn::task`.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr.into(), item.into()).into()
}
