//! The in-process store: nothing is persisted, the default when no store is named.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};

use super::{
    resolve_range, Backend, Capabilities, Error, GetRange, GetResult, Key, ObjectMeta, PutMode,
    PutOptions, PutPayload, PutResult, ReadWants, Result,
};

/// Objects in a map in memory. Clones share the same objects; nothing survives the
/// process. Writes are atomic and `Create`/`IfMatch` are exact, so it is a faithful
/// stand-in for a real store in tests.
///
/// ```
/// # tokio_test_block_on(async {
/// use cairn::backend::{BackendExt, Key, MemoryBackend};
/// let store = MemoryBackend::new();
/// let key = Key::parse("a/b.txt")?;
/// store.put(&key, "hi".into()).await?;
/// assert_eq!(&store.get(&key).await?[..], b"hi");
/// # Ok::<(), cairn::Error>(()) });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f) }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    objects: Arc<RwLock<BTreeMap<Key, Entry>>>,
    // Store-wide, so a deleted and recreated key never reuses an old version.
    last_version: Arc<AtomicU64>,
    // Tells this store from other memory stores of the process (`memory://<id>`);
    // clones share it.
    url: Arc<str>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        MemoryBackend {
            objects: Arc::default(),
            last_version: Arc::default(),
            url: Arc::from(format!("memory://{id}")),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    data: Bytes,
    last_modified: DateTime<Utc>,
    version: u64,
    metadata: BTreeMap<String, String>,
}

impl Entry {
    fn meta(&self, key: &Key) -> ObjectMeta {
        ObjectMeta {
            key: key.clone(),
            size: self.data.len() as u64,
            last_modified: self.last_modified,
            version: Some(self.version.to_string()),
            metadata: self.metadata.clone(),
        }
    }
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn not_found(&self, key: &Key) -> Error {
        Error::NotFound {
            backend: self.url.to_string(),
            key: key.to_string(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Key, Entry>> {
        // A panic while holding the lock cannot leave a half-made entry (entries are
        // replaced whole), so a poisoned lock is still consistent.
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(
        &self,
        key: &Key,
        range: Option<GetRange>,
    ) -> Result<(ObjectMeta, std::ops::Range<u64>, Bytes)> {
        let objects = self.read();
        let entry = objects.get(key).ok_or_else(|| self.not_found(key))?;
        let meta = entry.meta(key);
        let range = resolve_range(range.as_ref(), meta.size, &self.url, key.as_str())?;
        let data = entry.data.slice(range.start as usize..range.end as usize);
        Ok((meta, range, data))
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        self.url.to_string()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.read()
            .get(key)
            .map(|e| e.meta(key))
            .ok_or_else(|| self.not_found(key))
    }

    async fn get_opts(&self, key: &Key, range: Option<GetRange>) -> Result<GetResult> {
        let (meta, range, data) = self.lookup(key, range)?;
        Ok(GetResult {
            meta,
            range,
            body: stream::once(async move { Ok(data) }).boxed(),
        })
    }

    async fn get_bytes(&self, key: &Key, range: Option<GetRange>) -> Result<(ObjectMeta, Bytes)> {
        let (meta, _, data) = self.lookup(key, range)?;
        Ok((meta, data))
    }

    fn get_now(&self, key: &Key, wants: ReadWants) -> Option<Result<(Option<String>, Bytes)>> {
        let objects = self.read();
        Some(match objects.get(key) {
            Some(entry) => Ok((
                wants.version.then(|| entry.version.to_string()),
                entry.data.clone(),
            )),
            None => Err(self.not_found(key)),
        })
    }

    async fn put_opts(
        &self,
        key: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let data = payload.into_contiguous();
        let mut objects = self.objects.write().unwrap_or_else(|p| p.into_inner());
        let previous = objects.get(key);
        match (&opts.mode, previous) {
            (PutMode::Create, Some(_)) => {
                return Err(Error::AlreadyExists {
                    backend: self.url.to_string(),
                    key: key.to_string(),
                })
            }
            (PutMode::IfMatch(v), current)
                if current.map(|e| e.version.to_string()).as_deref() != Some(v.as_str()) =>
            {
                return Err(Error::PreconditionFailed {
                    backend: self.url.to_string(),
                    key: key.to_string(),
                    expected: v.clone(),
                })
            }
            _ => {}
        }
        let version = self.last_version.fetch_add(1, Ordering::Relaxed) + 1;
        objects.insert(
            key.clone(),
            Entry {
                data,
                last_modified: Utc::now(),
                version,
                metadata: opts.metadata,
            },
        );
        Ok(PutResult {
            version: Some(version.to_string()),
        })
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        Ok(())
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        let items: Vec<Result<ObjectMeta>> = self
            .read()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with(prefix))
            .map(|(k, e)| Ok(e.meta(k)))
            .collect();
        stream::iter(items).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendExt;

    #[tokio::test]
    async fn every_read_is_answered_at_once() {
        let store = MemoryBackend::new();
        let key = Key::parse("a/b").unwrap();
        store.put(&key, "hi".into()).await.unwrap();
        let head = store.head(&key).await.unwrap();
        let (version, bytes) = store
            .get_now(&key, ReadWants::with_version(true))
            .unwrap()
            .unwrap();
        assert_eq!((version, &bytes[..]), (head.version, &b"hi"[..]));
        let (version, bytes) = store.get_now(&key, ReadWants::default()).unwrap().unwrap();
        assert_eq!((version, &bytes[..]), (None, &b"hi"[..]));
        let missing = Key::parse("a/c").unwrap();
        let err = store
            .get_now(&missing, ReadWants::default())
            .unwrap()
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
}
