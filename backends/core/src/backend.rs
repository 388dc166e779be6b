//! The `Backend` trait: raw object I/O, the one thing a store must provide.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::{
    Capabilities, GetRange, GetResult, Key, ObjectMeta, PutMode, PutOptions, PutPayload, PutResult,
    ReadWants, Result,
};

/// Raw object I/O on `/`-separated relative keys.
///
/// Implementations promise:
/// - a successful `put` is visible whole to every later `head`/`get`/`list`; no reader
///   ever sees part of a write;
/// - `PutMode::Create` and `PutMode::IfMatch` are decided by the store atomically
///   (see [`Capabilities`] for what a store cannot do);
/// - errors carry the backend URL ([`Backend::describe`]) and the key;
/// - transient failures are retried with backoff before [`Error::Unavailable`](crate::Error::Unavailable)
///   is returned.
///
/// The conveniences (`get`, `put`, `exists`, ...) live in [`BackendExt`].
#[async_trait]
pub trait Backend: Debug + Send + Sync + 'static {
    /// A URL naming this backend's root, such as `s3://bucket/prefix` or `file:///data`.
    fn describe(&self) -> String;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// The metadata of one object.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) when it does not exist.
    async fn head(&self, key: &Key) -> Result<ObjectMeta>;

    /// Reads an object, whole or a byte range of it, as a stream.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) when it does not exist.
    async fn get_opts(&self, key: &Key, range: Option<GetRange>) -> Result<GetResult>;

    /// Reads an object, whole or a range of it, into one buffer.
    ///
    /// The provided implementation collects [`Backend::get_opts`]; backends that can
    /// read straight into a buffer of the final size override it.
    async fn get_bytes(&self, key: &Key, range: Option<GetRange>) -> Result<(ObjectMeta, Bytes)> {
        let result = self.get_opts(key, range).await?;
        let meta = result.meta.clone();
        Ok((meta, result.bytes().await?))
    }

    /// Reads a whole object into one buffer, as [`Backend::get_bytes`] does, and hands
    /// its bytes to `inspect` in order, in pieces that cover the object exactly once.
    ///
    /// A check over the bytes (a record's checksum) then needs no second read: a
    /// backend hands the pieces over as they arrive, or the whole buffer once it is
    /// read, whichever it measured faster (the local store reads a large object on
    /// every core and hands each piece over, in order, as soon as it and the ones
    /// before it have landed). The provided implementation reads, then inspects the
    /// whole buffer at once. A read that fails may have handed over some of its
    /// pieces.
    async fn get_bytes_inspected(
        &self,
        key: &Key,
        mut inspect: Inspector,
    ) -> Result<(ObjectMeta, Bytes)> {
        let (meta, bytes) = self.get_bytes(key, None).await?;
        inspect(&bytes);
        Ok((meta, bytes))
    }

    /// [`Backend::get_bytes_inspected`] for a caller that can look at the bytes itself,
    /// keeping of the metadata only the object's version, and that only when `wants`
    /// asks for it (`None` otherwise); a missing bucket is told apart from a missing
    /// object unless `wants` spares the check (see [`ReadWants::bucket_check`]).
    ///
    /// The inspector is made (by calling `inspector`, at most once) only where handing
    /// the bytes over as they land spares the caller a pass: a backend that reads the
    /// object into one buffer on the calling thread anyway (the local store, for a
    /// small object) makes none, and the caller, seeing none made, looks at the buffer
    /// itself. A small read then allocates no inspector. Once made, an inspector sees
    /// the object's bytes in order, exactly once. A backend that builds the rest of an
    /// [`ObjectMeta`] for nothing on every read (the local store: the key's copy, the
    /// date, the version's text) leaves it out. The provided implementation makes the
    /// inspector and takes the version from `get_bytes_inspected`.
    async fn get_inspected(
        &self,
        key: &Key,
        inspector: &MakeInspector<'_>,
        wants: ReadWants,
    ) -> Result<(Option<String>, Bytes)> {
        let (meta, bytes) = self.get_bytes_inspected(key, inspector()).await?;
        Ok((meta.version.filter(|_| wants.version), bytes))
    }

    /// [`Backend::get_inspected`] answered on the calling thread, when the backend
    /// can read the object without waiting: the local store for an object it reads
    /// right there (see `LocalBackend::with_inline_reads`), the memory store always.
    /// `None` when it cannot (a large object, a network store): the caller then awaits
    /// another read. Without a future to box and poll, a small read is one call. The
    /// provided implementation answers `None`.
    ///
    /// # Errors
    /// As [`Backend::get_inspected`], inside the `Some`.
    fn get_now(&self, key: &Key, wants: ReadWants) -> Option<Result<(Option<String>, Bytes)>> {
        let _ = (key, wants);
        None
    }

    /// Writes an object atomically.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) for `Create` on an existing key,
    /// [`Error::PreconditionFailed`](crate::Error::PreconditionFailed) for a stale `IfMatch`.
    async fn put_opts(&self, key: &Key, payload: PutPayload, opts: PutOptions)
        -> Result<PutResult>;

    /// Writes an object made of a head of `head_len` bytes followed by `body`, as
    /// [`Backend::put_opts`] does, where the head (a header holding the body's digest)
    /// is made by `make_head`. A backend that can write at an offset runs `make_head`
    /// while it writes the body, so that hashing a large body costs no time beyond the
    /// write itself. The provided implementation makes the head, then writes.
    ///
    /// # Errors
    /// As [`Backend::put_opts`]; [`Error::Other`](crate::Error::Other) when the head
    /// made is not `head_len` bytes long (nothing is published then).
    async fn put_framed(
        &self,
        key: &Key,
        head_len: usize,
        make_head: HeadMaker,
        body: Bytes,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let head = check_head(&self.describe(), key, head_len, make_head())?;
        self.put_opts(key, PutPayload::from_chunks([head, body]), opts)
            .await
    }

    /// Deletes an object. Idempotent: deleting a missing object succeeds.
    async fn delete(&self, key: &Key) -> Result<()>;

    /// Lists the objects whose keys start with `prefix` (a plain string prefix, `""`
    /// for all), paging through the store's listing as the stream is polled. The order
    /// is unspecified.
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>>;

    /// Lists what writers left unpublished below `prefix` (the staged files of a writer
    /// that was killed before it published), for maintenance tools. A store that keeps
    /// nothing of the kind lists nothing, which is what the provided method does.
    fn list_staged(&self, prefix: &str) -> BoxStream<'static, Result<StagedObject>> {
        let _ = prefix;
        futures::stream::empty().boxed()
    }

    /// Removes one leftover that [`Backend::list_staged`] listed. Idempotent.
    ///
    /// # Errors
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) when `staged` does not name a
    /// staged file of this store.
    async fn delete_staged(&self, staged: &StagedObject) -> Result<()> {
        let _ = staged;
        Ok(())
    }

    /// Removes what writers that were killed or failed left behind, unseen by readers
    /// but taking space (staged files on a disk, open multipart uploads on S3), when
    /// it is older than `older_than`; writes still in progress are younger than any
    /// sensible grace period. The provided implementation has nothing to remove.
    async fn clean_up(&self, older_than: std::time::Duration) -> Result<CleanUp> {
        let _ = older_than;
        Ok(CleanUp::default())
    }
}

/// What [`Backend::clean_up`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanUp {
    /// Staged files of unfinished writes.
    pub staged_files: usize,
    /// Multipart (or resumable) uploads that were never completed, aborted.
    pub open_uploads: usize,
}

impl CleanUp {
    /// Everything removed.
    pub fn total(&self) -> usize {
        self.staged_files + self.open_uploads
    }
}

/// A leftover of an unpublished write: never an object, never read as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedObject {
    /// Its path relative to the store's root (not a valid [`crate::Key`]).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written to, by the store's clock.
    pub last_modified: DateTime<Utc>,
}

/// Conveniences over [`Backend`], implemented for every backend.
#[async_trait]
pub trait BackendExt: Backend {
    /// Reads a whole object into memory.
    async fn get(&self, key: &Key) -> Result<Bytes> {
        Ok(self.get_bytes(key, None).await?.1)
    }

    /// Reads a byte range of an object into memory.
    async fn get_range(&self, key: &Key, range: std::ops::Range<u64>) -> Result<Bytes> {
        Ok(self.get_bytes(key, Some(GetRange::Bounded(range))).await?.1)
    }

    /// Writes an object, replacing any existing one.
    async fn put(&self, key: &Key, payload: PutPayload) -> Result<PutResult> {
        self.put_opts(key, payload, PutOptions::default()).await
    }

    /// Writes an object with a mode.
    async fn put_mode(&self, key: &Key, payload: PutPayload, mode: PutMode) -> Result<PutResult> {
        self.put_opts(key, payload, mode.into()).await
    }

    /// Whether an object exists.
    async fn exists(&self, key: &Key) -> Result<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Collects a whole listing.
    async fn list_all(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.list(prefix).try_collect().await
    }
}

impl<B: Backend + ?Sized> BackendExt for B {}

/// A check run over an object's bytes as a read lands them, piece by piece, in order
/// ([`Backend::get_bytes_inspected`]).
pub type Inspector = Box<dyn FnMut(&[u8]) + Send>;

/// Makes an [`Inspector`] when a read needs one ([`Backend::get_inspected`]).
pub type MakeInspector<'a> = dyn Fn() -> Inspector + Send + Sync + 'a;

/// Makes the first bytes of a write once its body is known ([`Backend::put_framed`]).
pub type HeadMaker = Box<dyn FnOnce() -> Bytes + Send>;

/// `head`, when it has the length announced for it.
pub fn check_head(backend: &str, key: &Key, head_len: usize, head: Bytes) -> Result<Bytes> {
    if head.len() == head_len {
        return Ok(head);
    }
    Err(crate::Error::other(
        backend,
        key.as_str(),
        format!(
            "the head of a framed write is {} bytes, {head_len} were announced",
            head.len()
        ),
    ))
}

/// A shared, type-erased backend.
pub type DynBackend = Arc<dyn Backend>;

#[async_trait]
impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        (**self).head(key).await
    }
    async fn get_opts(&self, key: &Key, range: Option<GetRange>) -> Result<GetResult> {
        (**self).get_opts(key, range).await
    }
    async fn get_bytes(&self, key: &Key, range: Option<GetRange>) -> Result<(ObjectMeta, Bytes)> {
        (**self).get_bytes(key, range).await
    }
    async fn get_bytes_inspected(
        &self,
        key: &Key,
        inspect: Inspector,
    ) -> Result<(ObjectMeta, Bytes)> {
        (**self).get_bytes_inspected(key, inspect).await
    }
    async fn get_inspected(
        &self,
        key: &Key,
        inspector: &MakeInspector<'_>,
        wants: ReadWants,
    ) -> Result<(Option<String>, Bytes)> {
        (**self).get_inspected(key, inspector, wants).await
    }
    fn get_now(&self, key: &Key, wants: ReadWants) -> Option<Result<(Option<String>, Bytes)>> {
        (**self).get_now(key, wants)
    }
    async fn put_opts(
        &self,
        key: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        (**self).put_opts(key, payload, opts).await
    }
    async fn put_framed(
        &self,
        key: &Key,
        head_len: usize,
        make_head: HeadMaker,
        body: Bytes,
        opts: PutOptions,
    ) -> Result<PutResult> {
        (**self)
            .put_framed(key, head_len, make_head, body, opts)
            .await
    }
    async fn delete(&self, key: &Key) -> Result<()> {
        (**self).delete(key).await
    }
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        (**self).list(prefix)
    }
    async fn clean_up(&self, older_than: std::time::Duration) -> Result<CleanUp> {
        (**self).clean_up(older_than).await
    }
    fn list_staged(&self, prefix: &str) -> BoxStream<'static, Result<StagedObject>> {
        (**self).list_staged(prefix)
    }
    async fn delete_staged(&self, staged: &StagedObject) -> Result<()> {
        (**self).delete_staged(staged).await
    }
}
