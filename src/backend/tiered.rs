//! A local disk tier in front of a remote store.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};

use super::{
    resolve_range, Backend, Capabilities, DiskTier, DynBackend, GetRange, GetResult, Key,
    ObjectMeta, PutOptions, PutPayload, PutResult, Result,
};

/// How the tier treats a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierPolicy {
    /// Served from the local copy without asking the remote store: cache records
    /// (`cache/...`). Their keys are digests of the inputs, so any copy is a valid
    /// answer, and every read still checks the record's digest and expiry.
    Local,
    /// The local copy is served only when the remote store's version (ETag,
    /// generation) still matches it, checked with one `head`: targets, checkpoints,
    /// run records — objects other tools or processes may replace.
    Checked,
    /// Not copied: leases (`leases/...`), rewritten every few seconds.
    Bypass,
}

impl TierPolicy {
    /// The policy of a key.
    pub fn of(key: &Key) -> TierPolicy {
        let k = key.as_str();
        if k.starts_with("cache/") {
            TierPolicy::Local
        } else if k.starts_with("leases/") {
            TierPolicy::Bypass
        } else {
            TierPolicy::Checked
        }
    }
}

/// A remote store with a [`DiskTier`] in front of it.
///
/// - Writes go to the remote store first — it decides `Create` and `IfMatch` — and,
///   once it accepted them, into the tier with the version it returned. A refused
///   write drops the local copy.
/// - Reads of cache records ([`TierPolicy::Local`]) come from the tier when it has a
///   verified copy, with no request to the remote store; a remote hit is copied into
///   the tier (atomically, with its digest).
/// - Reads of anything else ([`TierPolicy::Checked`]: targets other tools read and
///   write, checkpoints, run records) ask the remote store for the object's version
///   (`head`, no body) and serve the local copy only when it is that version, so a
///   target another tool replaced is never served stale; the body transfer is saved.
/// - Leases, listings, `head` and deletes go to the remote store (deletes drop the
///   local copy too).
/// - A local copy that fails its digest is deleted and the object re-fetched; a tier
///   that cannot be read or written is skipped with a warning, never an error.
///
/// [`Backend::describe`] and errors name the remote store: the tier is invisible to
/// everything above it, `ResultStore::url` included.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use cairn::backend::{Backend, BackendExt, DiskTier, Key, MemoryBackend, TieredBackend};
/// let remote = Arc::new(MemoryBackend::new());
/// let dir = tempfile::tempdir().unwrap();
/// let tiered = TieredBackend::new(DiskTier::new(dir.path())?, remote.clone());
/// let key = Key::parse("cache/v1/default/ab/abc")?;
/// remote.put(&key, "hello".into()).await?;           // written by someone else
/// assert_eq!(&tiered.get(&key).await?[..], b"hello"); // remote hit, copied locally
/// remote.delete(&key).await?;
/// assert_eq!(&tiered.get(&key).await?[..], b"hello"); // a cache record: from the tier
/// assert_eq!(tiered.describe(), remote.describe());
/// # Ok::<(), cairn::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct TieredBackend {
    tier: DiskTier,
    remote: DynBackend,
    name: String,
}

impl TieredBackend {
    /// `tier` in front of `remote`.
    pub fn new(tier: DiskTier, remote: DynBackend) -> Self {
        TieredBackend {
            name: remote.describe(),
            tier,
            remote,
        }
    }

    /// The local tier.
    pub fn tier(&self) -> &DiskTier {
        &self.tier
    }

    /// The remote store, the truth.
    pub fn remote(&self) -> &DynBackend {
        &self.remote
    }

    /// Deletes every local copy; the remote store is not touched.
    ///
    /// # Errors
    /// See [`DiskTier::clear`].
    pub fn clear_tier(&self) -> Result<()> {
        self.tier.clear().map(|_| ())
    }

    async fn local(&self, key: &Key) -> Option<super::TierCopy> {
        let (tier, name, k) = (self.tier.clone(), self.name.clone(), key.clone());
        tokio::task::spawn_blocking(move || tier.get(&name, &k))
            .await
            .ok()
            .flatten()
    }

    async fn store_copy(
        &self,
        key: &Key,
        version: Option<String>,
        modified: chrono::DateTime<chrono::Utc>,
        body: Bytes,
    ) {
        let (tier, name, k) = (self.tier.clone(), self.name.clone(), key.clone());
        let done = tokio::task::spawn_blocking(move || {
            tier.insert(&name, &k, version.as_deref(), modified, body)
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("local tier: {e}"),
            Err(e) => tracing::warn!("local tier: {e}"),
        }
    }

    async fn drop_copy(&self, key: &Key) {
        let (tier, name, k) = (self.tier.clone(), self.name.clone(), key.clone());
        let _ = tokio::task::spawn_blocking(move || tier.remove(&name, &k)).await;
    }

    fn meta(&self, key: &Key, copy: &super::TierCopy) -> ObjectMeta {
        ObjectMeta {
            key: key.clone(),
            size: copy.body.len() as u64,
            last_modified: copy.last_modified,
            version: copy.version.clone(),
            metadata: BTreeMap::new(),
        }
    }

    fn slice(
        &self,
        key: &Key,
        body: Bytes,
        range: Option<&GetRange>,
    ) -> Result<(Bytes, std::ops::Range<u64>)> {
        let r = resolve_range(range, body.len() as u64, &self.name, key.as_str())?;
        Ok((body.slice(r.start as usize..r.end as usize), r))
    }

    /// Reads the whole object from the remote store and copies it into the tier.
    async fn fetch(&self, key: &Key) -> Result<(ObjectMeta, Bytes)> {
        let (meta, body) = self.remote.get_bytes(key, None).await?;
        if TierPolicy::of(key) == TierPolicy::Local || meta.version.is_some() {
            self.store_copy(key, meta.version.clone(), meta.last_modified, body.clone())
                .await;
        }
        Ok((meta, body))
    }

    async fn read(
        &self,
        key: &Key,
        range: Option<GetRange>,
    ) -> Result<(ObjectMeta, Bytes, std::ops::Range<u64>)> {
        match TierPolicy::of(key) {
            TierPolicy::Bypass => {
                let r = self.remote.get_opts(key, range).await?;
                let (meta, range) = (r.meta.clone(), r.range.clone());
                Ok((meta, r.bytes().await?, range))
            }
            TierPolicy::Local => {
                let (meta, body) = match self.local(key).await {
                    Some(copy) => (self.meta(key, &copy), copy.body),
                    None => self.fetch(key).await?,
                };
                let (body, r) = self.slice(key, body, range.as_ref())?;
                Ok((meta, body, r))
            }
            TierPolicy::Checked => {
                if range.is_some() {
                    let r = self.remote.get_opts(key, range).await?;
                    let (meta, range) = (r.meta.clone(), r.range.clone());
                    return Ok((meta, r.bytes().await?, range));
                }
                if let Some(copy) = self.local(key).await {
                    let head = match self.remote.head(key).await {
                        Ok(h) => h,
                        Err(e) => {
                            if e.is_not_found() {
                                self.drop_copy(key).await;
                            }
                            return Err(e);
                        }
                    };
                    if head.version.is_some() && head.version == copy.version {
                        let (body, r) = self.slice(key, copy.body, None)?;
                        return Ok((head, body, r));
                    }
                }
                let (meta, body) = self.fetch(key).await?;
                let (body, r) = self.slice(key, body, None)?;
                Ok((meta, body, r))
            }
        }
    }
}

#[async_trait]
impl Backend for TieredBackend {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn capabilities(&self) -> Capabilities {
        self.remote.capabilities()
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.remote.head(key).await
    }

    async fn get_opts(&self, key: &Key, range: Option<GetRange>) -> Result<GetResult> {
        let (meta, body, range) = self.read(key, range).await?;
        Ok(GetResult {
            meta,
            range,
            body: futures::stream::once(async move { Ok(body) }).boxed(),
        })
    }

    async fn get_bytes(&self, key: &Key, range: Option<GetRange>) -> Result<(ObjectMeta, Bytes)> {
        let (meta, body, _) = self.read(key, range).await?;
        Ok((meta, body))
    }

    async fn put_opts(
        &self,
        key: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let policy = TierPolicy::of(key);
        let body = (policy != TierPolicy::Bypass).then(|| concat(&payload));
        match self.remote.put_opts(key, payload, opts).await {
            Ok(result) => {
                match body {
                    Some(body) if policy == TierPolicy::Local || result.version.is_some() => {
                        self.store_copy(key, result.version.clone(), chrono::Utc::now(), body)
                            .await
                    }
                    Some(_) => self.drop_copy(key).await,
                    None => {}
                }
                Ok(result)
            }
            Err(e) => {
                if policy != TierPolicy::Bypass {
                    self.drop_copy(key).await;
                }
                Err(e)
            }
        }
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.remote.delete(key).await?;
        if TierPolicy::of(key) != TierPolicy::Bypass {
            self.drop_copy(key).await;
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.remote.list(prefix)
    }

    // Maintenance sees through the tier to the remote store.
    fn list_staged(&self, prefix: &str) -> BoxStream<'static, Result<super::StagedObject>> {
        self.remote.list_staged(prefix)
    }

    async fn delete_staged(&self, staged: &super::StagedObject) -> Result<()> {
        self.remote.delete_staged(staged).await
    }

    async fn clean_up(&self, older_than: std::time::Duration) -> Result<super::CleanUp> {
        self.remote.clean_up(older_than).await
    }
}

fn concat(payload: &PutPayload) -> Bytes {
    match payload.chunks() {
        [one] => one.clone(),
        chunks => {
            let mut b = BytesMut::with_capacity(payload.len() as usize);
            for c in chunks {
                b.extend_from_slice(c);
            }
            b.freeze()
        }
    }
}
