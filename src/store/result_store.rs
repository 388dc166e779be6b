//! `ResultStore`: typed values in a backend, as plain targets or verified records.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{
    self, Backend, BackendExt, DynBackend, Error, Inspector, Key, MemoryBackend, ObjectMeta,
    PutMode, PutOptions, PutPayload, PutResult, ReadWants, Result, Source,
};
use crate::store::record::{self, RecordHeader, RecordInfo};
use crate::store::serializer::{LentBuffer, Serializer};
use crate::template::context::Context;
use crate::template::Template;

/// Where task results live: a backend, a default serializer and an optional location
/// template. Cheap to clone; clones share the backend.
///
/// Two ways to store a value:
///
/// - **targets** ([`ResultStore::write_at`], [`ResultStore::read`]): the serialized
///   bytes alone, at exactly the given location, so other tools read them (a `.csv`
///   target is a CSV file). The serializer follows the extension.
/// - **records** ([`ResultStore::write_record`], [`ResultStore::read_record`]): a
///   self-describing frame (see [`crate::store::record`]) whose length and BLAKE3 digest are
///   checked on every read; a damaged record is [`Error::Corrupt`], never data.
///
/// Every write is atomic: readers see the old object or the new one, never a part.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use cairn::{Context, ResultStore};
///
/// let store = ResultStore::memory().with_location("{flow_name}/{task_name}.json")?;
/// let ctx = Context::new().with("flow_name", "etl").with("task_name", "count");
/// let location = store.write(&vec![1, 2, 3], &ctx).await?;
/// assert_eq!(location, "etl/count.json");
/// assert!(store.exists(&location).await?);
/// let back: Vec<i32> = store.read(&location).await?;
/// assert_eq!(back, vec![1, 2, 3]);
/// # Ok::<(), cairn::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ResultStore {
    backend: DynBackend,
    url: Arc<str>,
    serializer: Serializer,
    location: Option<Template>,
}

/// A value read back from a record, with the record's header.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<T> {
    /// What the record says about itself.
    pub header: RecordHeader,
    /// The value.
    pub value: T,
}

/// A record's value with what a cache hit needs from its header.
#[derive(Debug)]
pub(crate) struct RecordHit<T> {
    /// The value.
    pub(crate) value: T,
    /// When the record was written (the writer's clock).
    pub(crate) created: chrono::DateTime<chrono::Utc>,
    /// When the record stops being valid, if ever.
    pub(crate) expires: Option<chrono::DateTime<chrono::Utc>>,
    /// The payload's length in bytes.
    pub(crate) payload_len: u64,
    /// The store's version of the object read.
    pub(crate) version: Option<String>,
}

impl<T> RecordHit<T> {
    /// Whether the record has expired at `now`.
    pub(crate) fn is_expired(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// Payloads from this size up are written with [`Backend::put_framed`]: their digest
/// is computed while they are written.
const FRAMED_WRITE_MIN: usize = 8 << 20;

impl ResultStore {
    /// A store on `backend`, JSON by default, without a location template.
    pub fn new(backend: impl Backend) -> Self {
        Self::from_backend(Arc::new(backend))
    }

    /// A store on a shared backend.
    pub fn from_backend(backend: DynBackend) -> Self {
        ResultStore {
            url: Arc::from(backend.describe()),
            backend,
            serializer: Serializer::default(),
            location: None,
        }
    }

    /// A store in memory: nothing is persisted (the default of tasks and flows).
    pub fn memory() -> Self {
        Self::new(MemoryBackend::new())
    }

    /// A store in a directory on the local disk (created if missing).
    #[cfg(feature = "local")]
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        Ok(Self::new(backend::LocalBackend::new(dir)?))
    }

    /// A store from a URL: `memory://`, `file:///path` (or a plain path),
    /// `s3://bucket/prefix`, `gs://bucket/prefix`.
    ///
    /// # Errors
    /// See [`backend::open`].
    pub async fn from_url(url: &str) -> Result<Self> {
        Ok(Self::from_backend(backend::open(url).await?))
    }

    /// The `remote` store behind a local disk tier in `cache_dir` (bounded by
    /// [`backend::DEFAULT_TIER_BYTES`]; see [`backend::TieredBackend`] for what is
    /// served locally). The same as the URL option `?cache_dir=`.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let (tier, remote) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    /// let remote = cairn::ResultStore::local(remote.path())?;
    /// let store = cairn::ResultStore::tiered(tier.path(), &remote)?;
    /// store.write_at("cache/v1/x.json", &7).await?;
    /// assert_eq!(store.url(), remote.url()); // the tier is invisible
    /// assert_eq!(remote.read::<i32>("cache/v1/x.json").await?, 7); // written through
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] when `cache_dir` cannot be created.
    pub fn tiered(cache_dir: impl AsRef<std::path::Path>, remote: &ResultStore) -> Result<Self> {
        let tier = backend::DiskTier::new(cache_dir)?;
        let mut store = Self::new(backend::TieredBackend::new(tier, remote.backend.clone()));
        store.serializer = remote.serializer;
        store.location = remote.location.clone();
        Ok(store)
    }

    /// Uses `serializer` for locations whose extension does not name one.
    pub fn with_serializer(mut self, serializer: Serializer) -> Self {
        self.serializer = serializer;
        self
    }

    /// Sets the location template used by [`ResultStore::write`] and [`ResultStore::format`].
    ///
    /// # Errors
    /// When the template does not parse.
    pub fn with_location(mut self, template: &str) -> Result<Self> {
        self.location = Some(Template::parse(template)?);
        Ok(self)
    }

    /// The backend's URL ([`Backend::describe`], taken once).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn url_arc(&self) -> &Arc<str> {
        &self.url
    }

    /// The backend.
    pub fn backend(&self) -> &DynBackend {
        &self.backend
    }

    /// The backend itself, called without the `Arc`'s forwarding layer: each layer of
    /// a backend call is a future boxed on the heap of its own.
    fn direct(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The default serializer.
    pub fn serializer(&self) -> Serializer {
        self.serializer
    }

    /// The location template, if any.
    pub fn location(&self) -> Option<&Template> {
        self.location.as_ref()
    }

    /// The serializer used for a target at `location`: its extension's, or the default.
    pub fn serializer_for(&self, location: &str) -> Serializer {
        Serializer::for_location(location, self.serializer)
    }

    /// The serializer of a `T` at `location`: its extension's when it names one, else
    /// the default as [`Serializer::for_value`] applies it (byte values go raw).
    fn serializer_of<T: 'static>(&self, location: &str) -> Serializer {
        Serializer::for_location(location, self.serializer.for_value::<T>())
    }

    /// Renders the location template for `context`.
    ///
    /// # Errors
    /// [`Error::Config`] when the store has no template or the context lacks a key;
    /// [`Error::InvalidKey`] when the rendered location would leave the store.
    pub fn format(&self, context: &Context) -> Result<String> {
        match &self.location {
            Some(t) => t.render(context),
            None => Err(Error::Config {
                message: format!(
                    "the store at {} has no location template to format",
                    self.backend.describe()
                ),
            }),
        }
    }

    /// Whether something is stored at `location` (written by cairn or by any other tool).
    pub async fn exists(&self, location: &str) -> Result<bool> {
        self.direct().exists(&Key::parse(location)?).await
    }

    /// Reads the target at `location` as a `T`, with the serializer its extension names.
    ///
    /// # Errors
    /// [`Error::NotFound`] when absent; [`Error::Serialization`] naming the location
    /// when the bytes do not decode into `T`.
    pub async fn read<T: DeserializeOwned + 'static>(&self, location: &str) -> Result<T> {
        let key = Key::parse(location)?;
        let bytes = self.direct().get(&key).await?;
        let serializer = self.serializer_of::<T>(location);
        self.decode(&key, serializer, bytes)
    }

    /// Reads the raw bytes at `location`.
    pub async fn read_bytes(&self, location: &str) -> Result<Bytes> {
        self.direct().get(&Key::parse(location)?).await
    }

    /// Writes `value` at the location the template renders for `context`, replacing
    /// what is there, and returns the location.
    pub async fn write<T: Serialize + 'static>(
        &self,
        value: &T,
        context: &Context,
    ) -> Result<String> {
        let location = self.format(context)?;
        self.write_at(&location, value).await?;
        Ok(location)
    }

    /// Writes `value` as a target at `location`, replacing what is there.
    pub async fn write_at<T: Serialize + 'static>(
        &self,
        location: &str,
        value: &T,
    ) -> Result<PutResult> {
        self.write_at_mode(location, value, PutMode::Overwrite)
            .await
    }

    /// Writes `value` as a target at `location` with a [`PutMode`] (`Create` to publish
    /// only if absent).
    pub async fn write_at_mode<T: Serialize + 'static>(
        &self,
        location: &str,
        value: &T,
        mode: PutMode,
    ) -> Result<PutResult> {
        let key = Key::parse(location)?;
        let bytes = self.encode(&key, self.serializer_of::<T>(location), value)?;
        self.backend
            .put_opts(&key, PutPayload::from(bytes), mode.into())
            .await
    }

    /// [`ResultStore::write_at_mode`] of a value the caller owns: a `Vec<u8>` stored
    /// raw is written from its own buffer, lent for the write, rather than a copy.
    pub(crate) async fn write_at_lending<T: Serialize + 'static>(
        &self,
        location: &str,
        value: &mut T,
        mode: PutMode,
    ) -> Result<PutResult> {
        let key = Key::parse(location)?;
        let serializer = self.serializer_of::<T>(location);
        let (bytes, _lent) = self.encode_lending(&key, serializer, value)?;
        self.backend
            .put_opts(&key, PutPayload::from(bytes), mode.into())
            .await
    }

    /// Writes raw bytes at `location` (no serializer, no copy).
    pub async fn write_bytes(
        &self,
        location: &str,
        bytes: Bytes,
        mode: PutMode,
    ) -> Result<PutResult> {
        self.backend
            .put_opts(&Key::parse(location)?, bytes.into(), mode.into())
            .await
    }

    /// Writes `value` as a verified record at `location`, with the store's default
    /// serializer (records do not follow extensions: their header names the serializer).
    pub async fn write_record<T: Serialize + 'static>(
        &self,
        location: &str,
        value: &T,
        info: RecordInfo,
        mode: PutMode,
    ) -> Result<PutResult> {
        let key = Key::parse(location)?;
        let serializer = self.serializer.for_value::<T>();
        let (payload, declared) =
            crate::hashing::collect_declared(|| self.encode(&key, serializer, value));
        self.put_record(&key, serializer, payload?, declared, info, mode.into())
            .await
    }

    /// [`ResultStore::write_record`] of a value the caller owns: a `Vec<u8>` stored raw
    /// is written from its own buffer, lent for the write, rather than a copy.
    pub(crate) async fn write_record_lending<T: Serialize + 'static>(
        &self,
        location: &str,
        value: &mut T,
        info: RecordInfo,
        mode: PutMode,
    ) -> Result<PutResult> {
        let key = Key::parse(location)?;
        Ok(self
            .write_record_lending_at(&key, value, info, mode.into())
            .await?
            .0)
    }

    /// [`ResultStore::write_record_lending`] at a location already checked as an object
    /// key, under `opts` (its mode; `skip_version` where the caller keeps no version),
    /// also giving the payload's length.
    pub(crate) async fn write_record_lending_at<T: Serialize + 'static>(
        &self,
        key: &Key,
        value: &mut T,
        info: RecordInfo,
        opts: PutOptions,
    ) -> Result<(PutResult, usize)> {
        let serializer = self.serializer.for_value::<T>();
        let (encoded, declared) =
            crate::hashing::collect_declared(|| self.encode_lending(key, serializer, value));
        let (payload, _lent) = encoded?;
        let len = payload.len();
        let put = self
            .put_record(key, serializer, payload, declared, info, opts)
            .await?;
        Ok((put, len))
    }

    /// Frames `payload` as a record (with the digests its value declared) and writes it.
    async fn put_record(
        &self,
        key: &Key,
        serializer: Serializer,
        payload: Bytes,
        declared: Vec<crate::hashing::Digest>,
        info: RecordInfo,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let declared = declared.iter().map(|d| d.to_hex()).collect();
        if payload.len() >= FRAMED_WRITE_MIN {
            // Hashed while the payload is written, where the backend can.
            let (head_len, make_head) =
                record::framed_declared(info, serializer.name(), &payload, declared);
            self.direct()
                .put_framed(key, head_len, make_head, payload, opts)
                .await
        } else {
            let framed = record::encode_declared(info, serializer.name(), payload, declared);
            self.direct().put_opts(key, framed, opts).await
        }
    }

    /// Reads and verifies the record at `location`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when absent; [`Error::Corrupt`] when it fails any check
    /// (magic, version, header checksum, length, BLAKE3); [`Error::Serialization`]
    /// when the intact payload does not decode into `T`.
    pub async fn read_record<T: DeserializeOwned + 'static>(
        &self,
        location: &str,
    ) -> Result<Record<T>> {
        let key = Key::parse(location)?;
        let (_, bytes, hashed) = self.read_hashed(&key, ReadWants::default()).await?;
        let (header, payload) =
            record::decode_hashed(bytes, hashed).map_err(|c| self.corrupt(&key, c))?;
        let value = self.decode_value(
            &key,
            &header.serializer,
            header.declared_digests.iter().map(String::as_str),
            payload,
        )?;
        Ok(Record { header, value })
    }

    /// A cache hit's read: [`ResultStore::read_record`] with the same checks, keeping
    /// from the header only what a hit needs (its strings are not copied), the
    /// object's version when `wants` asks for it (for the memory tier), and a missing
    /// bucket told apart from a missing record only when `wants` asks for that.
    pub(crate) async fn read_hit<T: DeserializeOwned + 'static>(
        &self,
        location: &str,
        wants: ReadWants,
    ) -> Result<RecordHit<T>> {
        self.read_hit_at(&Key::parse(location)?, wants).await
    }

    /// [`ResultStore::read_hit`] of a location already checked as an object key.
    pub(crate) async fn read_hit_at<T: DeserializeOwned + 'static>(
        &self,
        key: &Key,
        wants: ReadWants,
    ) -> Result<RecordHit<T>> {
        let (version, bytes, hashed) = self.read_hashed(key, wants).await?;
        let (view, payload_start) =
            record::decode_view(&bytes, hashed).map_err(|c| self.corrupt(key, c))?;
        let serializer = self.serializer_named(key, &view.serializer)?;
        let declared = self.declared(key, view.declared_digests.iter().map(|d| d.as_ref()))?;
        let (created, expires, payload_len) = (view.created, view.expires, view.payload_len);
        // The payload is decoded where it lies in the record's buffer.
        let value = crate::hashing::restore_declared(declared, || {
            self.decode_at(key, serializer, bytes, payload_start)
        })?;
        Ok(RecordHit {
            value,
            created,
            expires,
            payload_len,
            version,
        })
    }

    /// Reads the whole object at `key`, hashing a record's payload as the backend hands
    /// its bytes over, where it does ([`Backend::get_inspected`]): the digest, when a
    /// hasher saw the whole object; `None` when the backend made none (a small local
    /// read), and the payload is then hashed where it lies.
    async fn read_hashed(
        &self,
        key: &Key,
        wants: ReadWants,
    ) -> Result<(Option<String>, Bytes, Option<record::PayloadDigest>)> {
        // A small read answered right here: the payload is hashed where it lies.
        if let Some(read) = self.direct().get_now(key, wants) {
            let (version, bytes) = read?;
            return Ok((version, bytes, None));
        }
        type Shared = Arc<std::sync::Mutex<record::PayloadHasher>>;
        let made: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
        let make = || -> Inspector {
            let hasher = made.get_or_init(Shared::default).clone();
            Box::new(move |piece: &[u8]| {
                hasher
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .update(piece)
            })
        };
        let (version, bytes) = self.direct().get_inspected(key, &make, wants).await?;
        let hashed = made.get().and_then(|hasher| {
            hasher
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .finish(bytes.len())
        });
        Ok((version, bytes, hashed))
    }

    /// The store's version of the object at `location` (a HEAD, a `stat`).
    pub(crate) async fn version_of(&self, location: &str) -> Result<Option<String>> {
        Ok(self.direct().head(&Key::parse(location)?).await?.version)
    }

    /// Decodes an intact payload written by the serializer named `serializer`, with
    /// the declared digests of its `Hashed` values.
    fn decode_value<'d, T: DeserializeOwned + 'static>(
        &self,
        key: &Key,
        serializer: &str,
        declared: impl Iterator<Item = &'d str>,
        payload: Bytes,
    ) -> Result<T> {
        let serializer = self.serializer_named(key, serializer)?;
        let declared = self.declared(key, declared)?;
        crate::hashing::restore_declared(declared, || self.decode(key, serializer, payload))
    }

    /// The serializer a record's header names.
    fn serializer_named(&self, key: &Key, name: &str) -> Result<Serializer> {
        Serializer::from_name(name).ok_or_else(|| {
            self.corrupt(
                key,
                record::Corruption(format!("unknown serializer '{name}'")),
            )
        })
    }

    /// The declared digests a record's header lists.
    fn declared<'d>(
        &self,
        key: &Key,
        declared: impl Iterator<Item = &'d str>,
    ) -> Result<Vec<crate::hashing::Digest>> {
        declared
            .map(str::parse)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.corrupt(key, record::Corruption(format!("declared digest: {e}"))))
    }

    /// Deletes what is at `location`. Idempotent.
    pub async fn delete(&self, location: &str) -> Result<()> {
        self.direct().delete(&Key::parse(location)?).await
    }

    /// Removes what killed or failed writers left behind (staged files on the local
    /// disk, open multipart uploads on S3) that is older than `grace`, on whatever
    /// backend the store is on. Run it from time to time, with a grace period longer
    /// than any write takes (an hour is safe); see [`crate::backend::Backend::clean_up`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = cairn::ResultStore::local(dir.path())?;
    /// let removed = store.clean_up(std::time::Duration::from_secs(3600)).await?;
    /// assert_eq!(removed.total(), 0);
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub async fn clean_up(&self, grace: std::time::Duration) -> Result<crate::backend::CleanUp> {
        self.direct().clean_up(grace).await
    }

    /// Lists the objects under `prefix`.
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        self.backend.list(prefix)
    }

    fn corrupt(&self, key: &Key, c: record::Corruption) -> Error {
        Error::Corrupt {
            backend: self.backend.describe(),
            key: key.to_string(),
            reason: c.0,
        }
    }

    fn encode<T: Serialize + 'static>(
        &self,
        key: &Key,
        serializer: Serializer,
        value: &T,
    ) -> Result<Bytes> {
        serializer
            .serialize(value)
            .map_err(|source| self.unserializable(key, serializer, source))
    }

    /// [`ResultStore::encode`], lending a `Vec<u8>`'s buffer where it is stored raw.
    fn encode_lending<'v, T: Serialize + 'static>(
        &self,
        key: &Key,
        serializer: Serializer,
        value: &'v mut T,
    ) -> Result<(Bytes, Option<LentBuffer<'v, T>>)> {
        serializer
            .serialize_lending(value)
            .map_err(|source| self.unserializable(key, serializer, source))
    }

    fn unserializable(&self, key: &Key, serializer: Serializer, source: Source) -> Error {
        Error::Serialization {
            backend: self.backend.describe(),
            key: key.to_string(),
            action: "serialize",
            format: serializer.name().into(),
            source,
        }
    }

    fn decode<T: DeserializeOwned + 'static>(
        &self,
        key: &Key,
        serializer: Serializer,
        bytes: Bytes,
    ) -> Result<T> {
        self.decode_at(key, serializer, bytes, 0)
    }

    /// Decodes the value that starts at `start` in `bytes` and runs to their end.
    fn decode_at<T: DeserializeOwned + 'static>(
        &self,
        key: &Key,
        serializer: Serializer,
        bytes: Bytes,
        start: usize,
    ) -> Result<T> {
        serializer
            .deserialize_at(bytes, start)
            .map_err(|source| Error::Serialization {
                backend: self.backend.describe(),
                key: key.to_string(),
                action: "deserialize",
                format: serializer.name().into(),
                source,
            })
    }
}
