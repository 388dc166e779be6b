//! Listing a store's entries, filtered, as a stream.

use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::backend::Result;
use crate::maintenance::entry::{Entry, EntryKind};
use crate::maintenance::Maintenance;

/// The prefixes cairn's own entries live under.
const LAYOUT_PREFIXES: [&str; 3] = ["cache/", "leases/", "runs/"];

/// Which entries an operation looks at. The default selects every entry of cairn's
/// layout and every staged leftover, but not `used` markers (ask for them by kind).
///
/// ```
/// use std::time::Duration;
/// use cairn::maintenance::{EntryKind, Filter};
///
/// let old_cache = Filter {
///     kinds: vec![EntryKind::Cache],
///     older_than: Some(Duration::from_secs(7 * 86_400)),
///     ..Filter::default()
/// };
/// assert!(old_cache.wants(EntryKind::Cache));
/// assert!(!old_cache.wants(EntryKind::Lease));
/// assert!(!Filter::default().wants(EntryKind::Used));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only these kinds (empty: all but `used`).
    pub kinds: Vec<EntryKind>,
    /// Only entries of this task.
    pub task: Option<String>,
    /// Only entries in this cache namespace.
    pub namespace: Option<String>,
    /// Only paths starting with this (then objects outside cairn's layout are listed
    /// too, as `other`).
    pub prefix: Option<String>,
    /// Only entries that have expired.
    pub expired: bool,
    /// Only entries created longer ago than this.
    pub older_than: Option<Duration>,
    /// Only entries larger than this many bytes.
    pub larger_than: Option<u64>,
}

impl Filter {
    /// Whether entries of `kind` can pass.
    pub fn wants(&self, kind: EntryKind) -> bool {
        if self.kinds.is_empty() {
            kind != EntryKind::Used
        } else {
            self.kinds.contains(&kind)
        }
    }

    /// Whether `entry` passes, judged at `now`.
    pub fn matches(&self, entry: &Entry, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.wants(entry.kind)
            && self
                .task
                .as_ref()
                .is_none_or(|t| entry.task.as_ref() == Some(t))
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| entry.namespace.as_ref() == Some(n))
            && (!self.expired || entry.is_expired(now))
            && self.older_than.is_none_or(|age| {
                chrono::Duration::from_std(age).is_ok_and(|age| entry.created <= now - age)
            })
            && self.larger_than.is_none_or(|n| entry.size > n)
    }

    /// Whether the path alone may pass (before any read).
    fn may_match(&self, entry: &Entry) -> bool {
        self.wants(entry.kind)
            && self.larger_than.is_none_or(|n| entry.size > n)
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| entry.namespace.as_ref() == Some(n))
    }

    fn prefixes(&self) -> Vec<String> {
        match &self.prefix {
            Some(p) => vec![p.clone()],
            None => {
                let mut all: Vec<String> = LAYOUT_PREFIXES.iter().map(|p| p.to_string()).collect();
                if self.wants(EntryKind::Used) {
                    all.push("used/".into());
                }
                all
            }
        }
    }
}

impl Maintenance {
    /// The entries `filter` selects, as the store lists them (in no particular order).
    ///
    /// The listing is streamed: objects are read as the stream is polled, up to
    /// [`Maintenance::jobs`] at a time (records for their header, leases for their
    /// holder), and never held all at once. An object whose header cannot be read is
    /// listed with its [`Entry::problem`]. With [`Maintenance::listing_only`], nothing
    /// is read: the entries are what the listing says.
    ///
    /// # Errors
    /// The store's listing errors (no bucket, no permission, unreachable endpoint).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use futures::TryStreamExt;
    /// use cairn::maintenance::{EntryKind, Filter, Maintenance};
    /// use cairn::{record::RecordInfo, PutMode, ResultStore};
    ///
    /// let store = ResultStore::memory();
    /// store.write_record("cache/v1/default/ab/abcd", &1, RecordInfo::default(), PutMode::Create).await?;
    /// store.write_at("reports/summary.json", &2).await?;
    /// let entries: Vec<_> = Maintenance::new(&store).list(&Filter::default()).try_collect().await?;
    /// assert_eq!(entries.len(), 1); // targets are not cairn's entries
    /// assert_eq!(entries[0].kind, EntryKind::Cache);
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub fn list(&self, filter: &Filter) -> BoxStream<'static, Result<Entry>> {
        let backend = self.backend.clone();
        let objects = stream::iter(filter.prefixes())
            .flat_map(move |p| backend.list(&p))
            .map_ok(|meta| Entry::classify(&meta));
        let staged = if filter.wants(EntryKind::Staged) {
            let prefix = filter.prefix.clone().unwrap_or_default();
            self.backend
                .list_staged(&prefix)
                .filter_map(|staged| async move {
                    match staged {
                        // Listing unfinished uploads needs its own permission on S3
                        // (s3:ListBucketMultipartUploads): without it the entries are
                        // still listed, the leftovers are not.
                        Err(e) if e.kind() == crate::backend::ErrorKind::PermissionDenied => {
                            tracing::warn!(
                                "unfinished writes are not listed, the store refuses it: {e}"
                            );
                            None
                        }
                        other => Some(other.map(|s| Entry::staged(&s))),
                    }
                })
                .boxed()
        } else {
            stream::empty().boxed()
        };
        let (pre, post) = (filter.clone(), filter.clone());
        let backend = self.backend.clone();
        let progress = self.progress.clone();
        let now = self.now;
        let listing_only = self.listing_only;
        objects
            .chain(staged)
            .try_filter(move |e| futures::future::ready(pre.may_match(e)))
            .map_ok(move |e| {
                let backend = backend.clone();
                async move {
                    if listing_only {
                        Ok(e)
                    } else {
                        Ok(e.load(&backend).await)
                    }
                }
            })
            .try_buffer_unordered(self.jobs)
            .inspect_ok(move |_| progress.saw(1))
            .try_filter(move |e| futures::future::ready(post.matches(e, now)))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use bytes::Bytes;
    use futures::stream::BoxStream;
    use futures::{StreamExt, TryStreamExt};

    use crate::backend::{
        Backend, Capabilities, Error, GetRange, GetResult, Key, MemoryBackend, ObjectMeta,
        PutOptions, PutPayload, PutResult, Result, StagedObject,
    };
    use crate::maintenance::{Filter, Maintenance};
    use crate::{record::RecordInfo, PutMode, ResultStore};

    /// A store that lists its objects but refuses to list unfinished uploads.
    #[derive(Debug)]
    struct NoUploadListing(MemoryBackend);

    #[async_trait]
    impl Backend for NoUploadListing {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn capabilities(&self) -> Capabilities {
            self.0.capabilities()
        }
        async fn head(&self, key: &Key) -> Result<ObjectMeta> {
            self.0.head(key).await
        }
        async fn get_opts(&self, key: &Key, range: Option<GetRange>) -> Result<GetResult> {
            self.0.get_opts(key, range).await
        }
        async fn get_bytes(
            &self,
            key: &Key,
            range: Option<GetRange>,
        ) -> Result<(ObjectMeta, Bytes)> {
            self.0.get_bytes(key, range).await
        }
        async fn put_opts(
            &self,
            key: &Key,
            payload: PutPayload,
            opts: PutOptions,
        ) -> Result<PutResult> {
            self.0.put_opts(key, payload, opts).await
        }
        async fn delete(&self, key: &Key) -> Result<()> {
            self.0.delete(key).await
        }
        fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
            self.0.list(prefix)
        }
        fn list_staged(&self, prefix: &str) -> BoxStream<'static, Result<StagedObject>> {
            let error = Error::PermissionDenied {
                backend: self.describe(),
                key: prefix.into(),
                source: "ListMultipartUploads: AccessDenied".into(),
            };
            futures::stream::once(async move { Err(error) }).boxed()
        }
    }

    #[tokio::test]
    async fn a_store_that_refuses_to_list_uploads_still_lists_its_entries() {
        let store = ResultStore::from_backend(Arc::new(NoUploadListing(MemoryBackend::new())));
        store
            .write_record(
                "cache/v1/default/ab/abcd",
                &1,
                RecordInfo::default(),
                PutMode::Create,
            )
            .await
            .unwrap();
        let entries: Vec<_> = Maintenance::new(&store)
            .list(&Filter::default())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(entries.len(), 1);
    }
}
