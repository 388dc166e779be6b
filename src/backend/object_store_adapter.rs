//! An adapter that makes any `object_store::ObjectStore` a cairn backend.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, UpdateVersion};

use super::{
    Backend, Capabilities, Error, GetRange, GetResult, Key, ObjectMeta, PutMode, PutOptions,
    PutPayload, PutResult, Result,
};

/// Any [`object_store::ObjectStore`] (in-memory, Azure, HTTP, or an S3/GCS store
/// configured by hand) as a cairn [`Backend`].
///
/// Versions are the store's ETags; `IfMatch` maps to `object_store`'s conditional
/// update, and a store without one answers `Unsupported`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use cairn::backend::{BackendExt, Key, ObjectStoreBackend};
/// let backend = ObjectStoreBackend::new(Arc::new(object_store::memory::InMemory::new()), "memory://os");
/// let key = Key::parse("x/y.json")?;
/// backend.put(&key, "{}".into()).await?;
/// assert!(backend.exists(&key).await?);
/// # Ok::<(), cairn::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    url: String,
    capabilities: Capabilities,
    /// The bucket (container) and the error code that says it is missing.
    missing_bucket: Option<(String, &'static str)>,
}

impl ObjectStoreBackend {
    /// Wraps `store`; `url` names it in errors and `describe()`.
    pub fn new(store: Arc<dyn ObjectStore>, url: impl Into<String>) -> Self {
        ObjectStoreBackend {
            store,
            url: url.into(),
            capabilities: Capabilities {
                user_metadata: false,
                gaps: vec!["user metadata is not passed through the object_store adapter".into()],
                ..Capabilities::default()
            },
            missing_bucket: None,
        }
    }

    /// An error whose message carries `code` (such as Azure's `ContainerNotFound`)
    /// is reported as [`Error::BucketNotFound`] naming `bucket`.
    pub fn with_missing_bucket(mut self, bucket: impl Into<String>, code: &'static str) -> Self {
        self.missing_bucket = Some((bucket.into(), code));
        self
    }

    /// Overrides the declared capabilities (for stores known to lack `IfMatch`, say).
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    fn error(&self, key: &str, e: object_store::Error) -> Error {
        let backend = self.url.clone();
        let key = key.to_string();
        if let Some((bucket, code)) = &self.missing_bucket {
            if e.to_string().contains(code) {
                let bucket = bucket.clone();
                return Error::BucketNotFound { backend, bucket };
            }
        }
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound { backend, key },
            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists { backend, key },
            object_store::Error::Precondition { .. } => Error::PreconditionFailed {
                backend,
                key,
                expected: String::new(),
            },
            object_store::Error::NotImplemented => Error::Unsupported {
                backend,
                operation: "this operation on this object_store".into(),
            },
            e @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }) => Error::PermissionDenied {
                backend,
                key,
                source: e.into(),
            },
            e => Error::other(backend, key, e),
        }
    }

    fn meta(&self, m: object_store::ObjectMeta) -> Result<ObjectMeta> {
        Ok(ObjectMeta {
            key: Key::parse(m.location.as_ref())?,
            size: m.size,
            last_modified: m.last_modified,
            version: m.e_tag,
            metadata: Default::default(),
        })
    }
}

fn path(key: &Key) -> Path {
    Path::from(key.as_str())
}

#[async_trait]
impl Backend for ObjectStoreBackend {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let m = self
            .store
            .head(&path(key))
            .await
            .map_err(|e| self.error(key.as_str(), e))?;
        self.meta(m)
    }

    async fn get_opts(&self, key: &Key, range: Option<GetRange>) -> Result<GetResult> {
        let opts = object_store::GetOptions {
            range: range.map(|r| match r {
                GetRange::Bounded(r) => object_store::GetRange::Bounded(r),
                GetRange::From(s) => object_store::GetRange::Offset(s),
            }),
            ..Default::default()
        };
        let r = self
            .store
            .get_opts(&path(key), opts)
            .await
            .map_err(|e| self.error(key.as_str(), e))?;
        let range = r.range.clone();
        let meta = self.meta(r.meta.clone())?;
        let this = self.clone();
        let k = key.to_string();
        let body = r.into_stream().map_err(move |e| this.error(&k, e)).boxed();
        Ok(GetResult { meta, range, body })
    }

    async fn put_opts(
        &self,
        key: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if !opts.metadata.is_empty() {
            return Err(Error::Unsupported {
                backend: self.url.clone(),
                operation: "user metadata through the object_store adapter".into(),
            });
        }
        let mode = match opts.mode {
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::Create => object_store::PutMode::Create,
            PutMode::IfMatch(v) => object_store::PutMode::Update(UpdateVersion {
                e_tag: Some(v),
                version: None,
            }),
        };
        let expected = match &mode {
            object_store::PutMode::Update(u) => u.e_tag.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let payload: object_store::PutPayload = payload.chunks().iter().cloned().collect();
        let r = self
            .store
            .put_opts(
                &path(key),
                payload,
                object_store::PutOptions {
                    mode,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match self.error(key.as_str(), e) {
                Error::PreconditionFailed { backend, key, .. } => Error::PreconditionFailed {
                    backend,
                    key,
                    expected: expected.clone(),
                },
                e => e,
            })?;
        Ok(PutResult { version: r.e_tag })
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        match self.store.delete(&path(key)).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(key.as_str(), e)),
        }
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        // object_store lists by whole path segments; cairn's prefixes are plain string
        // prefixes, so list the enclosing directory and filter.
        let dir = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let dir = (!dir.is_empty()).then(|| Path::from(dir));
        let this = self.clone();
        let prefix = prefix.to_string();
        self.store
            .list(dir.as_ref())
            .map(move |r| {
                r.map_err(|e| this.error(&prefix, e))
                    .and_then(|m| this.meta(m))
                    .map(|m| m.key.as_str().starts_with(&prefix).then_some(m))
            })
            .try_filter_map(|m| async move { Ok(m) })
            .boxed()
    }
}
