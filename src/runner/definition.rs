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

/// The key components that depend only on a task's definition, by name.
pub(crate) type DerivedKey = std::result::Result<Vec<(String, Digest)>, Arc<Error>>;

pub(crate) struct TaskDef<I, O> {
    pub name: String,
    pub body: Body<I, O>,
    pub input_names: Vec<String>,
    pub signature: Option<Signature>,
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
    pub namespace: Option<String>,
    pub serialize: bool,
    pub lease: LeaseConfig,
    pub memory_tier: bool,
    pub invalid: Option<Arc<Error>>,
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
            invalid: self.invalid.clone(),
            // Options may change after a clone: derive again.
            derived: OnceLock::new(),
        }
    }
}
