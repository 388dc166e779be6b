//! The Amazon S3 backend of cairn, on `aws-sdk-s3`.
//!
//! [`S3Backend`] stores each object at `prefix/key` in one bucket. It loads the standard
//! AWS configuration (credential chain, `AWS_REGION`, `AWS_ENDPOINT_URL` with path-style
//! addressing for emulators), makes `PutMode::Create` an `If-None-Match: *` and
//! `PutMode::IfMatch` an `If-Match: <etag>` write (on single requests and on the
//! completion of multipart uploads alike), and splits large writes into parts that are
//! uploaded concurrently.
//!
//! ```no_run
//! use cairn_backend::{BackendExt, Key, PutMode};
//! use cairn_s3::S3Backend;
//!
//! # async fn demo() -> cairn_backend::Result<()> {
//! let s3 = S3Backend::from_url("s3://my-bucket/pipelines").await?;
//! let key = Key::parse("reports/2024-01-01.json")?;
//! s3.put_mode(&key, "{}".into(), PutMode::Create).await?;
//! assert_eq!(s3.get(&key).await?, "{}");
//!
//! // Or with explicit settings:
//! let s3 = S3Backend::builder("my-bucket")
//!     .prefix("pipelines")
//!     .region("eu-west-1")
//!     .multipart_threshold(64 * 1024 * 1024)
//!     .build()
//!     .await?;
//! # let _ = s3;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod config;
mod error;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};

use cairn_backend::{
    is_staged_name, recognize_applied, resuming_body, validate_prefix, Backend, Capabilities,
    Error, GetRange, GetResult, Key, ObjectMeta, PutMode, PutOptions, PutPayload, PutResult,
    Reopen, Result, StagedObject,
};

pub use config::{
    parse_s3_url, plan_parts, S3BackendBuilder, S3Config, DEFAULT_CONCURRENCY,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, DEFAULT_REGION,
    MAX_PARTS, MAX_PART_SIZE, MAX_SINGLE_PUT, MIN_PART_SIZE,
};

use error::{Class, Failure, Op};

/// The most keys one listing request asks for (S3's own maximum).
pub const LIST_PAGE_SIZE: i32 = 1000;

/// How an open multipart upload is named among staged leftovers:
/// `<key>?uploadId=<upload id>`.
pub const UPLOAD_MARK: &str = "?uploadId=";

/// A cairn [`Backend`] on an S3 bucket (AWS or any S3-compatible store).
///
/// Cheap to clone: clones share the client and settings.
#[derive(Clone)]
pub struct S3Backend {
    inner: Arc<Inner>,
}

struct Inner {
    client: aws_sdk_s3::Client,
    config: S3Config,
    url: String,
    /// Set once the bucket is known to exist, so that a 404 from HEAD (which has no
    /// body to tell a missing key from a missing bucket) needs no further check.
    bucket_seen: AtomicBool,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("url", &self.inner.url)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl S3Backend {
    /// A builder for `bucket`, for settings beyond the defaults.
    pub fn builder(bucket: impl Into<String>) -> S3BackendBuilder {
        S3BackendBuilder::new(bucket)
    }

    /// A backend on `bucket` under `prefix` (`""` for none), with the AWS configuration
    /// of the environment: the standard credential chain, `AWS_REGION` (default
    /// `us-east-1`) and `AWS_ENDPOINT_URL` (then with path-style addressing).
    ///
    /// # Errors
    /// [`Error::Config`] for an empty bucket name or an invalid prefix.
    pub async fn from_env(bucket: impl Into<String>, prefix: impl Into<String>) -> Result<Self> {
        S3Backend::builder(bucket).prefix(prefix).build().await
    }

    /// A backend from an `s3://bucket/prefix[?options]` URL, configured as
    /// [`S3Backend::from_env`] and by the options of [`S3Config::from_url`].
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that is not `s3://bucket[/prefix]`, or a bad option.
    pub async fn from_url(url: &str) -> Result<Self> {
        S3BackendBuilder::from_config(S3Config::from_url(url)?)
            .build()
            .await
    }

    /// A backend using an existing client as it is configured, with default settings
    /// otherwise.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty bucket name or an invalid prefix.
    pub fn from_client(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Result<Self> {
        let mut config = S3Config::new(bucket);
        config.prefix = prefix.into();
        config.validate()?;
        Ok(S3Backend::with_client(client, config))
    }

    /// `config` must be validated.
    pub(crate) fn with_client(client: aws_sdk_s3::Client, config: S3Config) -> Self {
        let url = if config.prefix.is_empty() {
            format!("s3://{}", config.bucket)
        } else {
            format!("s3://{}/{}", config.bucket, config.prefix)
        };
        S3Backend {
            inner: Arc::new(Inner {
                client,
                config,
                url,
                bucket_seen: AtomicBool::new(false),
            }),
        }
    }

    /// The S3 client in use.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.inner.client
    }

    /// The settings in use.
    pub fn config(&self) -> &S3Config {
        &self.inner.config
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.config.bucket
    }

    /// The key prefix (without trailing `/`; empty for none).
    pub fn prefix(&self) -> &str {
        &self.inner.config.prefix
    }

    /// The S3 object key of a cairn key: `prefix/key`.
    pub fn object_key(&self, key: &Key) -> String {
        self.inner.object_key(key.as_str())
    }
}

/// What an SDK call returns.
type SdkResult<T, E> = std::result::Result<T, SdkError<E>>;

impl Inner {
    /// Sends the request `make` builds, retrying transient failures with the
    /// configured policy (jittered backoff, `Retry-After`, attempts and time budget),
    /// all of it within the operation timeout. `ambiguous` is set when an attempt
    /// failed in a way that may hide a request the store applied.
    async fn call<T, E, F, Fut>(
        &self,
        ambiguous: &mut bool,
        mut make: F,
    ) -> std::result::Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = SdkResult<T, E>>,
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let policy = self.config.retry_policy();
        let limit = self.config.timeouts.operation;
        let started = tokio::time::Instant::now();
        let attempts = async {
            let mut retry = 0;
            loop {
                let f = match make().await {
                    Ok(out) => return Ok(out),
                    Err(e) => Failure::from_sdk(e),
                };
                if f.class != Class::Transient {
                    return Err(f);
                }
                *ambiguous = true;
                retry += 1;
                match policy.next_delay(retry, f.retry_after, started.elapsed()) {
                    Some(delay) => {
                        tracing::debug!(backend = %self.url, attempt = retry, ?delay, "retrying a transient S3 failure");
                        tokio::time::sleep(delay).await;
                    }
                    None => {
                        return Err(f.with_context(&format!(
                            " (gave up after {retry} attempt(s) in {:.1?})",
                            started.elapsed()
                        )))
                    }
                }
            }
        };
        match tokio::time::timeout(limit, attempts).await {
            Ok(out) => out,
            Err(_) => {
                *ambiguous = true;
                Err(Failure::timed_out(format!(
                    "no complete answer within the operation timeout ({limit:?})"
                )))
            }
        }
    }

    /// [`Inner::call`] for requests that change nothing.
    async fn read_call<T, E, F, Fut>(&self, make: F) -> std::result::Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = SdkResult<T, E>>,
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        self.call(&mut false, make).await
    }

    fn conditional_multipart(&self) -> bool {
        self.config.conditional_multipart.unwrap_or(true)
    }

    fn object_key(&self, key: &str) -> String {
        if self.config.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{}", self.config.prefix, key)
        }
    }

    fn error(&self, mut failure: Failure, key: &str, op: Op<'_>) -> Error {
        if let (Class::NoCredentials, Some(profile)) = (failure.class, &self.config.profile) {
            failure = failure.with_context(&format!(" (AWS profile '{profile}')"));
        }
        if failure.class != Class::NoSuchBucket && failure.class != Class::Transient {
            // Anything but a missing bucket or a failure to reach it shows it exists.
            self.note_bucket(&failure);
        }
        failure.into_error(&self.url, &self.config.bucket, key, op)
    }

    fn note_bucket(&self, failure: &Failure) {
        if matches!(
            failure.class,
            Class::NotFound | Class::Precondition | Class::InvalidRange
        ) {
            self.bucket_seen.store(true, Ordering::Relaxed);
        }
    }

    /// After a bare 404 from HEAD: whether the bucket itself is missing (checked with
    /// HeadBucket, once per backend while the bucket exists).
    async fn bucket_missing(&self) -> bool {
        if self.bucket_seen.load(Ordering::Relaxed) {
            return false;
        }
        match self
            .read_call(|| self.client.head_bucket().bucket(&self.config.bucket).send())
            .await
        {
            Ok(_) => {
                self.bucket_seen.store(true, Ordering::Relaxed);
                false
            }
            Err(f) => {
                // HeadBucket has no body either: its 404 is the missing bucket.
                matches!(f.class, Class::NotFound | Class::NoSuchBucket)
            }
        }
    }

    fn bucket_not_found(&self) -> Error {
        Error::BucketNotFound {
            backend: self.url.clone(),
            bucket: self.config.bucket.clone(),
        }
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let object_key = self.object_key(key.as_str());
        let out = self
            .read_call(|| {
                self.client
                    .head_object()
                    .bucket(&self.config.bucket)
                    .key(&object_key)
                    .send()
            })
            .await;
        match out {
            Ok(out) => {
                self.bucket_seen.store(true, Ordering::Relaxed);
                Ok(ObjectMeta {
                    key: key.clone(),
                    size: non_negative(out.content_length()),
                    last_modified: to_chrono(out.last_modified()),
                    version: out.e_tag().map(str::to_owned),
                    metadata: to_btree(out.metadata()),
                })
            }
            Err(f) => {
                if f.class == Class::NotFound && self.bucket_missing().await {
                    return Err(self.bucket_not_found());
                }
                Err(self.error(f, key.as_str(), Op::Read))
            }
        }
    }

    async fn get_opts(self: &Arc<Self>, key: &Key, range: Option<GetRange>) -> Result<GetResult> {
        let header = match &range {
            None => None,
            Some(GetRange::Bounded(r)) if r.start >= r.end => {
                // An empty range cannot be asked for (S3 would send the whole object).
                return self.empty_read(key, range.as_ref()).await;
            }
            Some(GetRange::Bounded(r)) => Some(format!("bytes={}-{}", r.start, r.end - 1)),
            Some(GetRange::From(start)) => Some(format!("bytes={start}-")),
        };
        let object_key = self.object_key(key.as_str());
        let out = self
            .read_call(|| {
                self.client
                    .get_object()
                    .bucket(&self.config.bucket)
                    .key(&object_key)
                    .set_range(header.clone())
                    .send()
            })
            .await;
        let out = match out {
            Ok(out) => out,
            Err(f) => {
                if f.class == Class::InvalidRange {
                    self.bucket_seen.store(true, Ordering::Relaxed);
                    return self.empty_read(key, range.as_ref()).await;
                }
                return Err(self.error(f, key.as_str(), Op::Read));
            }
        };
        self.bucket_seen.store(true, Ordering::Relaxed);
        let length = non_negative(out.content_length());
        let (returned, size) = match out.content_range().and_then(parse_content_range) {
            Some((r, size)) => (r, size),
            None => (0..length, length),
        };
        let meta = ObjectMeta {
            key: key.clone(),
            size,
            last_modified: to_chrono(out.last_modified()),
            version: out.e_tag().map(str::to_owned),
            metadata: to_btree(out.metadata()),
        };
        let body = byte_stream(self.url.clone(), key.as_str().to_owned(), out.body);
        // A body that breaks off or stalls is read on from where it stopped, at the
        // same version (If-Match on its ETag).
        let reopen: Reopen = {
            let inner = Arc::clone(self);
            let etag = meta.version.clone();
            let key = key.as_str().to_owned();
            Arc::new(move |rest: Range<u64>| {
                let inner = Arc::clone(&inner);
                let etag = etag.clone();
                let key = key.clone();
                Box::pin(async move { inner.reopen(&key, etag, rest).await })
            })
        };
        let body = resuming_body(
            body,
            returned.clone(),
            self.config.timeouts.read,
            self.config.retry_policy(),
            self.url.clone(),
            key.as_str().to_owned(),
            reopen,
        );
        Ok(GetResult {
            meta,
            range: returned,
            body,
        })
    }

    /// The body of bytes `rest` of an object, at version `etag`.
    async fn reopen(
        &self,
        key: &str,
        etag: Option<String>,
        rest: Range<u64>,
    ) -> Result<cairn_backend::Body> {
        let object_key = self.object_key(key);
        let out = self
            .read_call(|| {
                self.client
                    .get_object()
                    .bucket(&self.config.bucket)
                    .key(&object_key)
                    .set_if_match(etag.clone())
                    .range(format!("bytes={}-{}", rest.start, rest.end - 1))
                    .send()
            })
            .await
            .map_err(|f| {
                let f = if f.class == Class::Precondition {
                    f.with_context(" (the object was replaced while it was being read)")
                } else {
                    f
                };
                self.error(f, key, Op::Other)
            })?;
        Ok(byte_stream(self.url.clone(), key.to_owned(), out.body))
    }

    /// A read whose range selects no bytes: the object's metadata and an empty body, or
    /// an error when the range starts past the end.
    async fn empty_read(&self, key: &Key, range: Option<&GetRange>) -> Result<GetResult> {
        let meta = self.head(key).await?;
        let resolved = match range {
            None => Some(0..meta.size),
            Some(r) => r.resolve(meta.size),
        };
        match resolved {
            Some(r) if r.is_empty() => Ok(GetResult {
                meta,
                range: r,
                body: stream::empty().boxed(),
            }),
            _ => Err(Error::other(
                &self.url,
                key.as_str(),
                format!(
                    "range {:?} starts past the end ({} bytes)",
                    range.cloned().unwrap_or(GetRange::From(0)),
                    meta.size
                ),
            )),
        }
    }

    async fn put_single(
        &self,
        key: &Key,
        object_key: String,
        payload: PutPayload,
        opts: &PutOptions,
    ) -> Result<PutResult> {
        let len = payload.len();
        let body = payload.clone().into_contiguous();
        let mut ambiguous = false;
        let out = self
            .call(&mut ambiguous, || {
                let mut req = self
                    .client
                    .put_object()
                    .bucket(&self.config.bucket)
                    .key(&object_key)
                    .content_length(len as i64)
                    .body(ByteStream::from(body.clone()))
                    .set_content_type(opts.content_type.clone())
                    .set_metadata(metadata(&opts.metadata));
                match &opts.mode {
                    PutMode::Overwrite => {}
                    PutMode::Create => req = req.if_none_match("*"),
                    PutMode::IfMatch(v) => req = req.if_match(v),
                }
                req.send()
            })
            .await;
        match out {
            Ok(out) => {
                self.bucket_seen.store(true, Ordering::Relaxed);
                Ok(PutResult {
                    version: out.e_tag().map(str::to_owned),
                })
            }
            Err(f) => self.write_failed(f, ambiguous, key, &payload, opts).await,
        }
    }

    /// The outcome of a write whose last attempt failed with `f`: when an earlier
    /// attempt failed ambiguously and the retry was refused, the store may hold this
    /// very write (a reset after the store applied it): read back and compared, it is
    /// then a success, not a false "already exists".
    async fn write_failed(
        &self,
        f: Failure,
        ambiguous: bool,
        key: &Key,
        payload: &PutPayload,
        opts: &PutOptions,
    ) -> Result<PutResult> {
        let refused = matches!(
            f.class,
            Class::Precondition | Class::NotFound | Class::Other
        );
        if ambiguous && refused && opts.mode != PutMode::Overwrite {
            if let Some(done) = recognize_applied_inner(self, key, payload).await {
                return Ok(done);
            }
        }
        Err(self.error(f, key.as_str(), Op::Write(&opts.mode)))
    }

    async fn put_multipart(
        self: &Arc<Self>,
        key: &Key,
        object_key: String,
        payload: PutPayload,
        opts: &PutOptions,
    ) -> Result<PutResult> {
        let mut restarted = false;
        loop {
            let gone = AtomicBool::new(false);
            let result = self
                .put_multipart_once(key, &object_key, payload.clone(), opts, &gone)
                .await;
            // The upload was aborted under this writer (a lifecycle rule, or another
            // writer of the key clearing what a lost answer opened): once more, anew.
            if result.is_err() && gone.load(Ordering::Relaxed) && !restarted {
                tracing::debug!(backend = %self.url, key = %key, "multipart upload aborted by another party; starting it again");
                restarted = true;
                continue;
            }
            return result;
        }
    }

    /// One multipart upload; `gone` is set when the store says it is no longer open.
    async fn put_multipart_once(
        self: &Arc<Self>,
        key: &Key,
        object_key: &str,
        payload: PutPayload,
        opts: &PutOptions,
        gone: &AtomicBool,
    ) -> Result<PutResult> {
        // A CreateMultipartUpload retried after an attempt whose answer was lost may
        // have opened an upload nobody knows the id of: found and aborted below.
        let asked = std::time::Instant::now();
        let mut ambiguous = false;
        let created = self
            .call(&mut ambiguous, || {
                self.client
                    .create_multipart_upload()
                    .bucket(&self.config.bucket)
                    .key(object_key)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .set_content_type(opts.content_type.clone())
                    .set_metadata(metadata(&opts.metadata))
                    .send()
            })
            .await
            .map_err(|f| self.error(f, key.as_str(), Op::Other))?;
        self.bucket_seen.store(true, Ordering::Relaxed);
        let upload_id = created.upload_id().map(str::to_owned).ok_or_else(|| {
            Error::other(
                &self.url,
                key.as_str(),
                "CreateMultipartUpload returned no upload id",
            )
        })?;
        let mut guard = AbortGuard {
            inner: Some(Arc::clone(self)),
            object_key: object_key.to_owned(),
            upload_id: upload_id.clone(),
        };
        let lost = if ambiguous {
            self.lost_uploads(object_key, &upload_id, asked.elapsed())
                .await
        } else {
            Vec::new()
        };
        let result = self
            .upload_parts_and_complete(key, object_key, &upload_id, payload, opts, gone)
            .await;
        guard.inner = None;
        if result.is_err() {
            self.abort(object_key, &upload_id).await;
        }
        for id in lost {
            // Still without a single part after this whole upload: no writer uses it.
            if matches!(self.parts_size(object_key, &id).await, Ok(0)) {
                self.abort(object_key, &id).await;
            }
        }
        result
    }

    /// The uploads of `object_key` that a lost answer to CreateMultipartUpload may have
    /// opened: those initiated at most `waited` (plus a second of clock resolution)
    /// before `ours`, the one the retry opened. Best effort: a failed listing finds
    /// none, and `cairn prune` removes what is left.
    async fn lost_uploads(
        &self,
        object_key: &str,
        ours: &str,
        waited: std::time::Duration,
    ) -> Vec<String> {
        let listed = self
            .read_call(|| {
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.config.bucket)
                    .prefix(object_key)
                    .send()
            })
            .await;
        let page = match listed {
            Ok(page) => page,
            Err(f) => {
                tracing::debug!(backend = %self.url, key = object_key, error = ?f.class, "could not list uploads a lost answer may have opened");
                return Vec::new();
            }
        };
        let uploads: Vec<(&str, DateTime<Utc>)> = page
            .uploads()
            .iter()
            .filter(|u| u.key() == Some(object_key))
            .filter_map(|u| Some((u.upload_id()?, to_chrono(u.initiated()))))
            .collect();
        let Some(&(_, at)) = uploads.iter().find(|(id, _)| *id == ours) else {
            return Vec::new();
        };
        let slack = chrono::Duration::seconds(1);
        let earliest = chrono::Duration::from_std(waited)
            .ok()
            .and_then(|w| at.checked_sub_signed(w + slack))
            .unwrap_or(DateTime::UNIX_EPOCH);
        uploads
            .into_iter()
            .filter(|&(id, t)| id != ours && t >= earliest && t <= at + slack)
            .map(|(id, _)| id.to_owned())
            .collect()
    }

    async fn upload_parts_and_complete(
        &self,
        key: &Key,
        object_key: &str,
        upload_id: &str,
        payload: PutPayload,
        opts: &PutOptions,
        gone: &AtomicBool,
    ) -> Result<PutResult> {
        let plan = plan_parts(payload.len(), self.config.part_size);
        tracing::debug!(
            backend = %self.url,
            key = %key,
            size = payload.len(),
            parts = plan.len(),
            "multipart upload"
        );
        let payload = &payload;
        let parts: Vec<CompletedPart> = stream::iter(plan.into_iter().enumerate())
            .map(|(i, range)| {
                self.upload_part(
                    key,
                    object_key,
                    upload_id,
                    (i as i32 + 1, range),
                    payload,
                    gone,
                )
            })
            .buffered(self.config.concurrency)
            .try_collect()
            .await?;
        let mut ambiguous = false;
        let out = self
            .call(&mut ambiguous, || {
                let mut req = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.config.bucket)
                    .key(object_key)
                    .upload_id(upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts.clone()))
                            .build(),
                    );
                match &opts.mode {
                    PutMode::Overwrite => {}
                    PutMode::Create => req = req.if_none_match("*"),
                    PutMode::IfMatch(v) => req = req.if_match(v),
                }
                req.send()
            })
            .await;
        match out {
            Ok(out) => Ok(PutResult {
                version: out.e_tag().map(str::to_owned),
            }),
            // Not open, and no attempt of ours could have completed it: aborted.
            Err(f) if !ambiguous && f.class == Class::NoSuchUpload => {
                gone.store(true, Ordering::Relaxed);
                Err(self.error(f, key.as_str(), Op::Write(&opts.mode)))
            }
            // A completion retried after the store applied it finds no such upload.
            Err(f) if ambiguous && opts.mode == PutMode::Overwrite => {
                match recognize_applied_inner(self, key, payload).await {
                    Some(done) => Ok(done),
                    None => Err(self.error(f, key.as_str(), Op::Write(&opts.mode))),
                }
            }
            Err(f) => self.write_failed(f, ambiguous, key, payload, opts).await,
        }
    }

    async fn upload_part(
        &self,
        key: &Key,
        object_key: &str,
        upload_id: &str,
        (number, range): (i32, Range<u64>),
        payload: &PutPayload,
        gone: &AtomicBool,
    ) -> Result<CompletedPart> {
        // A slice of the payload's chunks: copied only when it spans two of them.
        let body = payload.range(range.clone());
        let out = self
            .read_call(|| {
                self.client
                    .upload_part()
                    .bucket(&self.config.bucket)
                    .key(object_key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length((range.end - range.start) as i64)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(ByteStream::from(body.clone()))
                    .send()
            })
            .await
            .map_err(|f| {
                if f.class == Class::NoSuchUpload {
                    gone.store(true, Ordering::Relaxed);
                }
                self.error(f, key.as_str(), Op::Other)
            })?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_owned))
            .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
            .build())
    }

    /// Aborts a multipart upload, best effort: its parts are discarded.
    /// The open multipart uploads below `prefix` (relative to the backend's prefix),
    /// with the bytes of their parts (one ListParts each).
    async fn open_uploads(&self, prefix: &str) -> Result<Vec<StagedObject>> {
        let strip = if self.config.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.config.prefix)
        };
        let full_prefix = format!("{strip}{prefix}");
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .read_call(|| {
                    self.client
                        .list_multipart_uploads()
                        .bucket(&self.config.bucket)
                        .prefix(&full_prefix)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send()
                })
                .await
                .map_err(|f| self.error(f, prefix, Op::Other))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let Some(rel) = key.strip_prefix(&strip) else {
                    continue;
                };
                out.push(StagedObject {
                    path: format!("{rel}{UPLOAD_MARK}{id}"),
                    size: self.parts_size(key, id).await?,
                    last_modified: to_chrono(upload.initiated()),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// The bytes the uploaded parts of an open multipart upload take (0 when it is
    /// gone meanwhile).
    async fn parts_size(&self, object_key: &str, upload_id: &str) -> Result<u64> {
        let mut total = 0u64;
        let mut marker = None::<String>;
        loop {
            let page = match self
                .read_call(|| {
                    self.client
                        .list_parts()
                        .bucket(&self.config.bucket)
                        .key(object_key)
                        .upload_id(upload_id)
                        .set_part_number_marker(marker.clone())
                        .send()
                })
                .await
            {
                Ok(page) => page,
                Err(f) if f.class == Class::NotFound => return Ok(total),
                Err(f) => return Err(self.error(f, object_key, Op::Other)),
            };
            total += page
                .parts()
                .iter()
                .map(|p| p.size().unwrap_or(0).max(0) as u64)
                .sum::<u64>();
            match (page.is_truncated(), page.next_part_number_marker()) {
                (Some(true), Some(next)) => marker = Some(next.to_owned()),
                _ => return Ok(total),
            }
        }
    }

    async fn abort(&self, object_key: &str, upload_id: &str) {
        if let Err(f) = self
            .read_call(|| {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.config.bucket)
                    .key(object_key)
                    .upload_id(upload_id)
                    .send()
            })
            .await
        {
            tracing::warn!(
                backend = %self.url,
                key = object_key,
                upload_id,
                error = %f.into_error(&self.url, &self.config.bucket, object_key, Op::Other),
                "could not abort a failed multipart upload; a lifecycle rule for \
                 incomplete multipart uploads will remove its parts"
            );
        }
    }
}

/// Aborts a multipart upload whose write was dropped (cancelled) before it finished.
struct AbortGuard {
    inner: Option<Arc<Inner>>,
    object_key: String,
    upload_id: String,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let object_key = std::mem::take(&mut self.object_key);
            let upload_id = std::mem::take(&mut self.upload_id);
            handle.spawn(async move { inner.abort(&object_key, &upload_id).await });
        }
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn describe(&self) -> String {
        self.inner.url.clone()
    }

    fn capabilities(&self) -> Capabilities {
        let conditional_multipart = self.inner.conditional_multipart();
        let mut gaps = Vec::new();
        if !conditional_multipart {
            gaps.push(
                "conditional multipart completion is off (the default with a custom \
                 endpoint): Create and IfMatch writes are single PutObject requests, at most 5 GiB; LocalStack \
                 2026.3 checks If-None-Match/If-Match on CompleteMultipartUpload without a \
                 lock, so concurrent large Creates could all win there"
                    .to_owned(),
            );
        }
        Capabilities {
            create: true,
            if_match: true,
            conditional_large_writes: conditional_multipart,
            user_metadata: true,
            multipart_threshold: Some(self.inner.config.multipart_threshold),
            list_page_size: LIST_PAGE_SIZE as usize,
            gaps,
        }
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn get_opts(&self, key: &Key, range: Option<GetRange>) -> Result<GetResult> {
        self.inner.get_opts(key, range).await
    }

    async fn get_bytes(
        &self,
        key: &Key,
        range: Option<GetRange>,
    ) -> Result<(ObjectMeta, bytes::Bytes)> {
        let result = self.inner.get_opts(key, range).await?;
        let meta = result.meta.clone();
        Ok((meta, result.bytes().await?))
    }

    async fn put_opts(
        &self,
        key: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let object_key = self.inner.object_key(key.as_str());
        let len = payload.len();
        let conditional = opts.mode != PutMode::Overwrite;
        match choose_upload(
            len,
            conditional,
            self.inner.config.multipart_threshold,
            self.inner.conditional_multipart(),
        ) {
            Upload::Multipart => {
                self.inner
                    .put_multipart(key, object_key, payload, &opts)
                    .await
            }
            Upload::Single => self.inner.put_single(key, object_key, payload, &opts).await,
            Upload::TooLarge => Err(Error::Unsupported {
                backend: self.inner.url.clone(),
                operation: format!(
                    "a conditional write of {len} bytes to '{key}' (conditional multipart \
                     completion is off, and one PutObject carries at most {MAX_SINGLE_PUT} bytes)"
                ),
            }),
        }
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let object_key = self.inner.object_key(key.as_str());
        let out = self
            .inner
            .read_call(|| {
                self.inner
                    .client
                    .delete_object()
                    .bucket(&self.inner.config.bucket)
                    .key(&object_key)
                    .send()
            })
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(f) => {
                if f.class == Class::NotFound {
                    return Ok(());
                }
                Err(self.inner.error(f, key.as_str(), Op::Other))
            }
        }
    }

    /// Aborts the multipart uploads under the backend's prefix that were started more
    /// than `older_than` ago and never completed (a writer killed mid-upload leaves
    /// one, and S3 bills for its parts until it is aborted). The same uploads are
    /// listed by [`Backend::list_staged`] and aborted one by one by
    /// [`Backend::delete_staged`].
    async fn clean_up(&self, older_than: std::time::Duration) -> Result<cairn_backend::CleanUp> {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let mut aborted = 0;
        for upload in self.inner.open_uploads("").await? {
            if upload.last_modified <= cutoff {
                self.delete_staged(&upload).await?;
                aborted += 1;
            }
        }
        Ok(cairn_backend::CleanUp {
            staged_files: 0,
            open_uploads: aborted,
        })
    }

    /// The multipart uploads below `prefix` that were started and never completed nor
    /// aborted, each as `<key>?uploadId=<id>` with the bytes of its parts and the time
    /// it was started.
    fn list_staged(&self, prefix: &str) -> BoxStream<'static, Result<StagedObject>> {
        if let Err(e) = validate_prefix(prefix) {
            return stream::once(async { Err(e) }).boxed();
        }
        let inner = Arc::clone(&self.inner);
        let prefix = prefix.to_owned();
        stream::once(async move { inner.open_uploads(&prefix).await })
            .flat_map(|r| match r {
                Ok(items) => stream::iter(items.into_iter().map(Ok)).boxed(),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }

    /// Aborts one open multipart upload that [`Backend::list_staged`] listed; one that
    /// is gone already (completed or aborted meanwhile) is not an error.
    async fn delete_staged(&self, staged: &StagedObject) -> Result<()> {
        let inner = &self.inner;
        let Some((key, id)) = staged.path.rsplit_once(UPLOAD_MARK) else {
            return Err(Error::InvalidKey {
                key: staged.path.clone(),
                reason: "not an open multipart upload of this store".into(),
            });
        };
        let object_key = inner.object_key(key);
        let out = inner
            .read_call(|| {
                inner
                    .client
                    .abort_multipart_upload()
                    .bucket(&inner.config.bucket)
                    .key(&object_key)
                    .upload_id(id)
                    .send()
            })
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(f) if f.class == Class::NotFound => Ok(()),
            Err(f) => Err(inner.error(f, &staged.path, Op::Other)),
        }
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        if let Err(e) = validate_prefix(prefix) {
            return stream::once(async { Err(e) }).boxed();
        }
        let inner = Arc::clone(&self.inner);
        let strip = if inner.config.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", inner.config.prefix)
        };
        let full_prefix = format!("{strip}{prefix}");
        // One request per page, sent only when the stream is polled: lazy paging.
        let pages = {
            let inner = Arc::clone(&inner);
            stream::unfold(Some(None::<String>), move |token| {
                let inner = Arc::clone(&inner);
                let full_prefix = full_prefix.clone();
                async move {
                    let token = token?;
                    let page = inner
                        .read_call(|| {
                            inner
                                .client
                                .list_objects_v2()
                                .bucket(&inner.config.bucket)
                                .prefix(&full_prefix)
                                .max_keys(LIST_PAGE_SIZE)
                                .set_continuation_token(token.clone())
                                .send()
                        })
                        .await;
                    let next = match &page {
                        Ok(p) if p.is_truncated() == Some(true) => {
                            p.next_continuation_token().map(|t| Some(t.to_owned()))
                        }
                        _ => None,
                    };
                    Some((page, next))
                }
            })
        };
        let prefix = prefix.to_owned();
        pages
            .map(move |page| match page {
                Ok(page) => {
                    inner.bucket_seen.store(true, Ordering::Relaxed);
                    let metas: Vec<Result<ObjectMeta>> = page
                        .contents()
                        .iter()
                        .filter_map(|o| listed(&inner.url, &strip, o))
                        .map(Ok)
                        .collect();
                    stream::iter(metas)
                }
                Err(f) => stream::iter(vec![Err(inner.error(f, &prefix, Op::Other))]),
            })
            .flatten()
            .boxed()
    }
}

/// How a write is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    /// One PutObject request.
    Single,
    /// A multipart upload.
    Multipart,
    /// A conditional write too large for one request, where multipart may not carry
    /// the condition.
    TooLarge,
}

fn choose_upload(
    len: u64,
    conditional: bool,
    threshold: u64,
    conditional_multipart: bool,
) -> Upload {
    let single_only = conditional && !conditional_multipart;
    match (len > threshold, single_only) {
        (false, _) => Upload::Single,
        (true, false) => Upload::Multipart,
        (true, true) if len <= MAX_SINGLE_PUT => Upload::Single,
        (true, true) => Upload::TooLarge,
    }
}

/// The metadata of a listed object, or `None` (with a warning) for an S3 key that is
/// not a cairn key under the backend's prefix.
fn listed(url: &str, strip: &str, o: &aws_sdk_s3::types::Object) -> Option<ObjectMeta> {
    let full = o.key()?;
    let Some(rel) = full.strip_prefix(strip) else {
        tracing::warn!(
            backend = url,
            key = full,
            "listing returned a key outside the prefix; skipped"
        );
        return None;
    };
    if rel.rsplit('/').next().is_some_and(is_staged_name) {
        return None;
    }
    match Key::parse(rel) {
        Ok(key) => Some(ObjectMeta {
            key,
            size: non_negative(o.size()),
            last_modified: to_chrono(o.last_modified()),
            version: o.e_tag().map(str::to_owned),
            metadata: BTreeMap::new(),
        }),
        Err(e) => {
            tracing::warn!(backend = url, key = full, error = %e, "skipping an object whose name is not a valid cairn key");
            None
        }
    }
}

/// An SDK body as a stream of cairn results.
fn byte_stream(backend: String, key: String, body: ByteStream) -> cairn_backend::Body {
    stream::try_unfold(body, move |mut body| {
        let backend = backend.clone();
        let key = key.clone();
        async move {
            match body.try_next().await {
                Ok(Some(chunk)) => Ok(Some((chunk, body))),
                Ok(None) => Ok(None),
                Err(e) => Err(Error::Unavailable {
                    backend,
                    key,
                    source: format!("reading the object's body failed: {e}").into(),
                }),
            }
        }
    })
    .boxed()
}

/// [`recognize_applied`] from inside the backend.
async fn recognize_applied_inner(
    inner: &Inner,
    key: &Key,
    payload: &PutPayload,
) -> Option<PutResult> {
    let me = S3Backend {
        inner: Arc::new(Inner {
            client: inner.client.clone(),
            config: inner.config.clone(),
            url: inner.url.clone(),
            bucket_seen: AtomicBool::new(true),
        }),
    };
    recognize_applied(&me, key, payload).await
}

fn non_negative(n: Option<i64>) -> u64 {
    n.map_or(0, |n| n.max(0) as u64)
}

fn to_chrono(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

fn to_btree(m: Option<&std::collections::HashMap<String, String>>) -> BTreeMap<String, String> {
    m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn metadata(m: &BTreeMap<String, String>) -> Option<std::collections::HashMap<String, String>> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Parses `bytes a-b/size` (or `bytes a-b/*`) into `a..b+1` and the object's size.
fn parse_content_range(header: &str) -> Option<(Range<u64>, u64)> {
    let rest = header.trim().strip_prefix("bytes ")?;
    let (span, size) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end: u64 = b.trim().parse::<u64>().ok()?.checked_add(1)?;
    let size = match size.trim() {
        "*" => end,
        s => s.parse().ok()?,
    };
    (start <= end).then_some((start..end, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_writes_stay_single_where_multipart_cannot_carry_the_condition() {
        const T: u64 = 16 << 20;
        assert_eq!(choose_upload(T, true, T, true), Upload::Single);
        assert_eq!(choose_upload(T + 1, false, T, true), Upload::Multipart);
        assert_eq!(choose_upload(T + 1, true, T, true), Upload::Multipart);
        assert_eq!(choose_upload(T + 1, false, T, false), Upload::Multipart);
        assert_eq!(choose_upload(T + 1, true, T, false), Upload::Single);
        assert_eq!(
            choose_upload(MAX_SINGLE_PUT, true, T, false),
            Upload::Single
        );
        assert_eq!(
            choose_upload(MAX_SINGLE_PUT + 1, true, T, false),
            Upload::TooLarge
        );
        assert_eq!(
            choose_upload(MAX_SINGLE_PUT + 1, false, T, false),
            Upload::Multipart
        );
    }

    #[test]
    fn content_ranges_are_parsed() {
        assert_eq!(parse_content_range("bytes 0-99/1234"), Some((0..100, 1234)));
        assert_eq!(parse_content_range("bytes 5-5/6"), Some((5..6, 6)));
        assert_eq!(parse_content_range("bytes 2-3/*"), Some((2..4, 4)));
        assert_eq!(parse_content_range("bytes */1234"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[tokio::test]
    async fn describe_names_bucket_and_prefix() {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::from_static("us-east-1"))
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let b = S3Backend::from_client(client.clone(), "bkt", "/runs/v1/").unwrap();
        assert_eq!(b.describe(), "s3://bkt/runs/v1");
        assert_eq!(b.object_key(&Key::parse("a/b").unwrap()), "runs/v1/a/b");
        let b = S3Backend::from_client(client.clone(), "bkt", "").unwrap();
        assert_eq!(b.describe(), "s3://bkt");
        assert_eq!(b.object_key(&Key::parse("a/b").unwrap()), "a/b");
        assert!(S3Backend::from_client(client.clone(), "", "").is_err());
        let caps = b.capabilities();
        assert!(
            caps.create && caps.if_match && caps.conditional_large_writes && caps.user_metadata
        );
        assert_eq!(caps.multipart_threshold, Some(DEFAULT_MULTIPART_THRESHOLD));
        assert_eq!(caps.list_page_size, 1000);
        assert!(caps.gaps.is_empty());

        let b = S3Backend::builder("bkt")
            .client(client)
            .conditional_multipart(false)
            .build()
            .await
            .unwrap();
        let caps = b.capabilities();
        assert!(!caps.conditional_large_writes);
        assert_eq!(caps.gaps.len(), 1);
    }

    #[test]
    fn listed_keys_lose_the_prefix_and_bad_names_are_skipped() {
        let obj = |k: &str| {
            aws_sdk_s3::types::Object::builder()
                .key(k)
                .size(3)
                .e_tag("\"e\"")
                .build()
        };
        let m = listed("s3://b/p", "p/", &obj("p/a/b.json")).unwrap();
        assert_eq!(m.key.as_str(), "a/b.json");
        assert_eq!(m.size, 3);
        assert_eq!(m.version.as_deref(), Some("\"e\""));
        assert!(listed("s3://b/p", "p/", &obj("p/dir/")).is_none());
        assert!(listed("s3://b/p", "p/", &obj("p/a//b")).is_none());
        assert!(listed("s3://b/p", "p/", &obj("p/d/.cairn-staged.x.1")).is_none());
        assert!(listed("s3://b/p", "p/", &obj("other/x")).is_none());
        assert!(listed("s3://b", "", &obj("x/y")).is_some());
    }
}
