//! A task's definition: its body, options and signature, shared by the task handle
//! and the runs it makes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::Error;
use crate::cache::hashing::Digest;
use crate::cache::{CachePolicy, LeaseConfig};
use crate::runner::error::BoxError;
pub(crate) use crate::store::serializer::type_name_of;
use crate::{Context, ResultStore, Serializer, Template};

pub(crate) type Body<I, O> =
    Arc<dyn Fn(I) -> BoxFuture<'static, std::result::Result<O, BoxError>> + Send + Sync>;

/// What a task's input must be: one value, passed by value to the body, cloned for
/// retries. A tuple's elements and a struct's fields are separate inputs (see
/// [`Task::inputs`](crate::Task::inputs)).
pub trait TaskInput: Serialize + Clone + Send + Sync + 'static {}
impl<T: Serialize + Clone + Send + Sync + 'static> TaskInput for T {}

/// What a task's output must be: stored and read back through a serializer, and
/// cloned when served from the memory tier.
pub trait TaskOutput: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> TaskOutput for T {}

/// A task's signature: its input names and types and its output type, as written in
/// the source. Recorded by `#[cairn::task]`; part of the cache key under
/// [`crate::cache::SIGNATURE`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Signature {
    /// `(name, type)` of each input, in order.
    pub inputs: Vec<(String, String)>,
    /// The output type.
    pub output: String,
}

impl Signature {
    /// The signature of a task built with [`crate::Task::new`] taking `I` and giving
    /// `O`, its inputs called `names`: a tuple's element types go to the names in
    /// order; any other input type goes to the one name (or `input`).
    pub(crate) fn of<I: 'static, O: 'static>(names: &[String]) -> Signature {
        let input = type_name_of::<I>();
        let elements = tuple_elements(&input);
        let inputs = match elements {
            Some(types) if types.len() == names.len() && names.len() != 1 => names
                .iter()
                .cloned()
                .zip(types.into_iter().map(str::to_owned))
                .collect(),
            _ if input == "()" => Vec::new(),
            _ => {
                let name = match names {
                    [one] => one.clone(),
                    [] => "input".to_owned(),
                    many => many.join(","),
                };
                vec![(name, input.clone())]
            }
        };
        Signature {
            inputs,
            output: type_name_of::<O>(),
        }
    }
}

/// The element types of a tuple type's name, `None` for any other type.
fn tuple_elements(name: &str) -> Option<Vec<&str>> {
    let inner = name.strip_prefix('(')?.strip_suffix(')')?;
    let mut depth = 0i32;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in inner.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = inner[start..].trim();
    if !last.is_empty() {
        parts.push(last);
    }
    (depth == 0 && !parts.is_empty()).then_some(parts)
}

/// The key components that depend only on a task's definition, by name, with the id
/// that stands for them in each thread's key memo.
pub(crate) type DerivedKey =
    std::result::Result<(Vec<(String, Digest)>, crate::cache::hashing::ListId), Arc<Error>>;

pub(crate) struct TaskDef<I, O> {
    pub name: Arc<str>,
    pub body: Body<I, O>,
    pub input_names: Vec<String>,
    pub signature: Option<Signature>,
    /// Whether `signature` was given (`#[cairn::task]`, `Task::signature`) rather than
    /// taken from the builder's types.
    pub signature_declared: bool,
    pub source: Option<Arc<str>>,
    pub store: Option<ResultStore>,
    pub serializer: Option<Serializer>,
    pub checkpoint: Option<bool>,
    pub target: Option<Template>,
    pub location: Option<Template>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub refresh: bool,
    pub context: Context,
    pub user_keys: Vec<String>,
    pub cache_policy: Option<CachePolicy>,
    pub cache_expiration: Option<chrono::Duration>,
    pub refresh_cache: Option<bool>,
    pub strict_cache: Option<bool>,
    pub cache_store: Option<ResultStore>,
    pub cache_key: Option<String>,
    pub namespace: Option<Arc<str>>,
    pub serialize: bool,
    pub lease: LeaseConfig,
    pub memory_tier: bool,
    pub memory_tier_revalidate_after: Option<Duration>,
    /// The clock and settings of runs outside any flow.
    pub clock: Option<Arc<dyn crate::Clock>>,
    pub settings: Option<Arc<crate::Settings>>,
    pub invalid: Option<Arc<Error>>,
    /// What is wrong with the options as they stand (a policy naming an unknown
    /// input); found again after every change.
    pub problem: Option<Arc<Error>>,
    /// Key components that depend only on the definition, computed on first use.
    pub derived: OnceLock<DerivedKey>,
}

impl<I, O> Clone for TaskDef<I, O> {
    fn clone(&self) -> Self {
        TaskDef {
            name: self.name.clone(),
            body: self.body.clone(),
            input_names: self.input_names.clone(),
            signature: self.signature.clone(),
            signature_declared: self.signature_declared,
            source: self.source.clone(),
            store: self.store.clone(),
            serializer: self.serializer,
            checkpoint: self.checkpoint,
            target: self.target.clone(),
            location: self.location.clone(),
            retries: self.retries,
            retry_delay: self.retry_delay,
            refresh: self.refresh,
            context: self.context.clone(),
            user_keys: self.user_keys.clone(),
            cache_policy: self.cache_policy.clone(),
            cache_expiration: self.cache_expiration,
            refresh_cache: self.refresh_cache,
            strict_cache: self.strict_cache,
            cache_store: self.cache_store.clone(),
            cache_key: self.cache_key.clone(),
            namespace: self.namespace.clone(),
            serialize: self.serialize,
            lease: self.lease,
            memory_tier: self.memory_tier,
            memory_tier_revalidate_after: self.memory_tier_revalidate_after,
            clock: self.clock.clone(),
            settings: self.settings.clone(),
            invalid: self.invalid.clone(),
            problem: self.problem.clone(),
            // Options may change after a clone: derive again.
            derived: OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_read_as_written() {
        assert_eq!(type_name_of::<String>(), "String");
        assert_eq!(
            type_name_of::<std::collections::HashMap<(i32, i32), Vec<String>>>(),
            "HashMap<(i32, i32), Vec<String>>"
        );
        assert_eq!(type_name_of::<Option<&str>>(), "Option<&str>");
    }

    #[test]
    fn a_builder_signature_records_input_and_output_types() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let s = Signature::of::<(i64, Vec<(u8, u8)>), String>(&names(&["x", "pairs"]));
        assert_eq!(
            s.inputs,
            [
                ("x".to_owned(), "i64".to_owned()),
                ("pairs".to_owned(), "Vec<(u8, u8)>".to_owned())
            ]
        );
        assert_eq!(s.output, "String");
        let s = Signature::of::<u32, u32>(&names(&["x"]));
        assert_eq!(s.inputs, [("x".to_owned(), "u32".to_owned())]);
        assert_ne!(s, Signature::of::<i64, u32>(&names(&["x"])));
        assert_eq!(Signature::of::<(), u8>(&[]).inputs, []);
    }
}
