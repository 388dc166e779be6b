//! Google Cloud Storage backend for cairn, on the GCS JSON API.
//!
//! [`GcsBackend`] implements [`cairn_backend::Backend`] over `reqwest`:
//!
//! - `PutMode::Create` is `ifGenerationMatch=0` and `PutMode::IfMatch(generation)` is
//!   `ifGenerationMatch=<generation>`, decided atomically by the store;
//! - writes up to [`GcsBuilder::resumable_threshold`] are one `multipart/related`
//!   request, larger ones a resumable upload in chunks of [`GcsBuilder::chunk_size`];
//! - reads stream the body, ranged reads send a `Range` header;
//! - versions are object generations; listings page lazily through the API.
//!
//! Credentials come from [`google_cloud_auth`] (Application Default Credentials: the
//! `GOOGLE_APPLICATION_CREDENTIALS` file, gcloud's well-known file, the metadata
//! server). When `STORAGE_EMULATOR_HOST` is set (`127.0.0.1:4443` or a URL), requests
//! go to that emulator and carry no credentials, the convention of Google's clients.
//!
//! Against an emulator the backend declares fake-gcs-server's known gap (preconditions
//! ignored on resumable uploads, see [`EMULATOR_RESUMABLE_GAP`]) in its
//! [`Capabilities`], and sends conditional writes of any size as single requests so
//! that `Create` and `IfMatch` still hold.
//!
//! ```no_run
//! use cairn_backend::{Backend, BackendExt, Key, PutMode};
//! use cairn_gcs::GcsBackend;
//!
//! # async fn example() -> cairn_backend::Result<()> {
//! let backend = GcsBackend::from_url("gs://my-bucket/pipelines").await?;
//! let key = Key::parse("reports/2024-01-01/summary.json")?;
//! backend.put_mode(&key, "{\"rows\": 3}".into(), PutMode::Create).await?;
//! let bytes = backend.get(&key).await?;
//! assert_eq!(&bytes[..], b"{\"rows\": 3}");
//! println!("{} has {} bytes", backend.describe(), backend.head(&key).await?.size);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod config;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use reqwest::header::{
    HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LAST_MODIFIED, LOCATION, RANGE,
};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use cairn_backend::{
    is_transient_status, parse_retry_after, recognize_applied, resuming_body, validate_prefix,
    Backend, Capabilities, ConnectionRefused, Error, GetRange, GetResult, Key, ObjectMeta, PutMode,
    PutOptions, PutPayload, PutResult, Reopen, Result, RetryAfter, RetryPolicy, Timeouts,
};

pub use config::{
    normalize_emulator_host, GcsBuilder, GcsCredentials, CHUNK_ALIGNMENT, DEFAULT_CHUNK_SIZE,
    DEFAULT_ENDPOINT, DEFAULT_RESUMABLE_THRESHOLD, EMULATOR_HOST_VAR,
};
/// The credentials crate this backend uses, re-exported so that callers can build
/// [`GcsCredentials::Credentials`] with the same version.
pub use google_cloud_auth;

/// The known gap of the GCS emulator, as listed in [`Capabilities::gaps`] when the
/// backend targets an emulator.
pub const EMULATOR_RESUMABLE_GAP: &str = "fake-gcs-server (github.com/fsouza/fake-gcs-server, \
    v1.54 here) ignores ifGenerationMatch on resumable uploads (issue #1967; fixed upstream by \
    PR #2260): conditional writes of any size are sent as single-request uploads instead";

const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
const LIST_PAGE_SIZE: usize = 1000;
const LIST_FIELDS: &str = "items(name,size,updated,timeCreated,generation,metadata),nextPageToken";
/// Answers to resumable chunks that make no progress before the session is abandoned.
const MAX_STALLS: u32 = 3;

/// A [`Backend`] on a Google Cloud Storage bucket, under an optional prefix.
///
/// Cheap to clone: clones share one HTTP connection pool and one credentials cache.
#[derive(Clone)]
pub struct GcsBackend {
    inner: Arc<Inner>,
}

enum Auth {
    Anonymous,
    Google(Credentials),
}

struct Inner {
    client: reqwest::Client,
    bucket: String,
    /// The object-name prefix, without surrounding `/` (empty for none).
    prefix: String,
    endpoint: String,
    emulator: bool,
    threshold: u64,
    chunk_size: u64,
    retry: RetryPolicy,
    timeouts: Timeouts,
    auth: Auth,
    url: String,
    /// Set once the bucket is known to exist, so that an ambiguous 404 (the emulator's
    /// bare "Not Found") needs no further check.
    bucket_seen: AtomicBool,
}

/// What a request was doing, to map its failures.
#[derive(Clone, Copy)]
enum Op<'a> {
    Read,
    Delete,
    Write(&'a PutMode),
    List,
}

impl fmt::Debug for GcsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("GcsBackend")
            .field("url", &i.url)
            .field("endpoint", &i.endpoint)
            .field("emulator", &i.emulator)
            .field("anonymous", &matches!(i.auth, Auth::Anonymous))
            .field("resumable_threshold", &i.threshold)
            .field("chunk_size", &i.chunk_size)
            .finish_non_exhaustive()
    }
}

impl GcsBackend {
    /// A builder for a backend on `bucket`.
    pub fn builder(bucket: impl Into<String>) -> GcsBuilder {
        GcsBuilder::new(bucket)
    }

    /// A backend on `bucket` under `prefix`, configured from the environment:
    /// `STORAGE_EMULATOR_HOST` (an emulator, anonymous) or Application Default Credentials.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid bucket or prefix, [`Error::PermissionDenied`]
    /// when credentials cannot be loaded.
    pub async fn from_env(bucket: impl Into<String>, prefix: impl Into<String>) -> Result<Self> {
        GcsBuilder::new(bucket).prefix(prefix).build().await
    }

    /// A backend for a `gs://bucket/prefix` URL, configured from the environment as in
    /// [`GcsBackend::from_env`].
    ///
    /// # Errors
    /// As [`GcsBackend::from_env`], and [`Error::Config`] for a URL of another form.
    pub async fn from_url(url: &str) -> Result<Self> {
        GcsBuilder::from_url(url)?.build().await
    }

    pub(crate) async fn from_builder(b: GcsBuilder) -> Result<Self> {
        config::validate_bucket(&b.bucket)?;
        config::validate_chunk_size(b.chunk_size)?;
        let prefix = config::normalize_prefix(&b.prefix)?;
        let env_emulator = config::emulator_from_env();
        let emulator = b.emulator.unwrap_or(env_emulator.is_some());
        let endpoint = b
            .endpoint
            .or(env_emulator)
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Error::Config {
                message: format!("GCS endpoint '{endpoint}' must be an http:// or https:// URL"),
            });
        }
        let url = if prefix.is_empty() {
            format!("gs://{}", b.bucket)
        } else {
            format!("gs://{}/{prefix}", b.bucket)
        };
        let auth = load_credentials(b.credentials, emulator, &url)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("cairn-gcs/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(b.timeouts.connect)
            .read_timeout(b.timeouts.read)
            .build()
            .map_err(|e| Error::Config {
                message: format!("cannot build the HTTP client for {url}: {}", chain(&e)),
            })?;
        Ok(GcsBackend {
            inner: Arc::new(Inner {
                client,
                bucket: b.bucket,
                prefix,
                endpoint,
                emulator,
                threshold: b.resumable_threshold,
                chunk_size: b.chunk_size,
                retry: RetryPolicy {
                    max_elapsed: b.retry.max_elapsed.min(b.timeouts.operation),
                    ..b.retry
                },
                timeouts: b.timeouts,
                auth,
                url,
                bucket_seen: AtomicBool::new(false),
            }),
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The prefix under which keys are stored (empty for none), without surrounding `/`.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Whether the backend targets an emulator (and works around its gaps).
    pub fn is_emulator(&self) -> bool {
        self.inner.emulator
    }

    /// Whether requests are sent without credentials.
    pub fn is_anonymous(&self) -> bool {
        matches!(self.inner.auth, Auth::Anonymous)
    }
}

/// Whether a request failed because nothing accepted the connection.
fn refused(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Loads the credentials `choice` names.
fn load_credentials(choice: GcsCredentials, emulator: bool, url: &str) -> Result<Auth> {
    use google_cloud_auth::credentials as gca;
    let denied = |what: String| Error::PermissionDenied {
        backend: url.to_string(),
        key: String::new(),
        source: format!("GCS credentials could not be loaded: {what}").into(),
    };
    match choice {
        GcsCredentials::Auto if emulator => Ok(Auth::Anonymous),
        GcsCredentials::Anonymous => Ok(Auth::Anonymous),
        GcsCredentials::Auto | GcsCredentials::ApplicationDefault => gca::Builder::default()
            .build()
            .map(Auth::Google)
            .map_err(|e| denied(format!("application default credentials: {}", chain(&e)))),
        GcsCredentials::Credentials(c) => Ok(Auth::Google(c)),
        GcsCredentials::File(path) => {
            let shown = path.display();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| denied(format!("cannot read {shown}: {e}")))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| denied(format!("{shown} is not valid JSON: {e}")))?;
            let kind = json
                .get("type")
                .and_then(|t| t.as_str())
                .ok_or_else(|| denied(format!("{shown} has no \"type\" field")))?
                .to_string();
            let built = match kind.as_str() {
                "service_account" => gca::service_account::Builder::new(json).build(),
                "authorized_user" => gca::user_account::Builder::new(json).build(),
                "external_account" => gca::external_account::Builder::new(json).build(),
                "impersonated_service_account" => gca::impersonated::Builder::new(json).build(),
                other => {
                    return Err(denied(format!(
                        "{shown} holds credentials of unsupported type '{other}'"
                    )))
                }
            };
            built
                .map(Auth::Google)
                .map_err(|e| denied(format!("{shown} ({kind}): {}", chain(&e))))
        }
    }
}

/// An error and its sources, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = s.source();
    }
    out
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Inner {
    /// The object name of a key (or of a listing prefix).
    fn object_name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn object_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            wire::encode_segment(&self.bucket),
            wire::encode_segment(name)
        )
    }

    fn objects_url(&self) -> String {
        format!(
            "{}/storage/v1/b/{}/o",
            self.endpoint,
            wire::encode_segment(&self.bucket)
        )
    }

    fn upload_url(&self) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.endpoint,
            wire::encode_segment(&self.bucket)
        )
    }

    fn unavailable(&self, key: &str, message: String) -> Error {
        Error::Unavailable {
            backend: self.url.clone(),
            key: key.to_string(),
            source: message.into(),
        }
    }

    fn other(&self, key: &str, message: String) -> Error {
        Error::other(&self.url, key, message)
    }

    /// Adds the credentials' headers to a request.
    async fn authorize(&self, req: RequestBuilder, key: &str) -> Result<RequestBuilder> {
        let Auth::Google(creds) = &self.auth else {
            return Ok(req);
        };
        match creds.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(req.headers(data)),
            Ok(CacheableResource::NotModified) => Err(self.other(
                key,
                "GCS credentials returned no headers (NotModified without an entity tag)".into(),
            )),
            Err(e) if e.is_transient() => Err(self.unavailable(
                key,
                format!("GCS credentials could not be loaded: {}", chain(&e)),
            )),
            Err(e) => Err(Error::PermissionDenied {
                backend: self.url.clone(),
                key: key.to_string(),
                source: format!("GCS credentials could not be loaded: {}", chain(&e)).into(),
            }),
        }
    }

    /// Sends one request. Connection failures and transient statuses (408, 429, 5xx)
    /// become [`Error::Unavailable`]; any other answer is returned as it is.
    async fn send_once(&self, key: &str, req: RequestBuilder) -> Result<Response> {
        let req = self.authorize(req, key).await?;
        match req.send().await {
            Err(e) if e.is_builder() => Err(self.other(key, chain(&e))),
            Err(e) if refused(&e) => Err(Error::Unavailable {
                backend: self.url.clone(),
                key: key.to_string(),
                source: Box::new(ConnectionRefused(format!(
                    "connection refused: nothing listens at the GCS endpoint {} (is the \
                     endpoint right and the store running?)",
                    self.endpoint
                ))),
            }),
            Err(e) => Err(self.unavailable(key, format!("request failed: {}", chain(&e)))),
            Ok(resp) if is_transient_status(resp.status().as_u16()) => {
                let status = resp.status();
                let after = header_str(resp.headers(), "retry-after").and_then(parse_retry_after);
                let body = resp.bytes().await.unwrap_or_default();
                let api = wire::ApiError::parse(&body);
                let message = format!("HTTP {status}: {}", api.message);
                Err(match after {
                    Some(after) => Error::Unavailable {
                        backend: self.url.clone(),
                        key: key.to_string(),
                        source: Box::new(RetryAfter { after, message }),
                    },
                    None => self.unavailable(key, message),
                })
            }
            Ok(resp) => Ok(resp),
        }
    }

    /// Runs `op` within the operation timeout.
    async fn bounded<T>(&self, key: &str, op: impl Future<Output = Result<T>>) -> Result<T> {
        let limit = self.timeouts.operation;
        match tokio::time::timeout(limit, op).await {
            Ok(out) => out,
            Err(_) => Err(self.unavailable(
                key,
                format!("no complete answer within the operation timeout ({limit:?})"),
            )),
        }
    }

    /// Sends a request built by `make`, retrying transient failures.
    async fn send(&self, key: &str, make: impl Fn() -> RequestBuilder) -> Result<Response> {
        self.bounded(
            key,
            self.retry
                .run(|| async { self.send_once(key, make()).await }),
        )
        .await
    }

    /// Sends a request and decodes its JSON answer, retrying transient failures
    /// (the body read included).
    async fn send_json<T: DeserializeOwned>(
        &self,
        key: &str,
        op: Op<'_>,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<T> {
        self.bounded(
            key,
            self.retry.run(|| async {
                let resp = self.send_once(key, make()).await?;
                if !resp.status().is_success() {
                    return Err(self.error_for(resp, key, op).await);
                }
                self.read_json(resp, key).await
            }),
        )
        .await
    }

    async fn read_json<T: DeserializeOwned>(&self, resp: Response, key: &str) -> Result<T> {
        let body = resp.bytes().await.map_err(|e| {
            self.unavailable(key, format!("reading the answer failed: {}", chain(&e)))
        })?;
        serde_json::from_slice(&body).map_err(|e| {
            self.other(
                key,
                format!(
                    "unexpected answer from GCS ({e}): {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ),
            )
        })
    }

    /// The error for an unsuccessful, non-transient answer.
    async fn error_for(&self, resp: Response, key: &str, op: Op<'_>) -> Error {
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        let api = wire::ApiError::parse(&body);
        let backend = self.url.clone();
        match (status.as_u16(), op) {
            (401 | 403, _) => Error::PermissionDenied {
                backend,
                key: key.to_string(),
                source: format!("HTTP {status}: {}", api.message).into(),
            },
            (404, Op::List | Op::Write(_)) => self.bucket_not_found(),
            (404, Op::Read | Op::Delete) => {
                if self.bucket_missing(&api).await {
                    self.bucket_not_found()
                } else {
                    Error::NotFound {
                        backend,
                        key: key.to_string(),
                    }
                }
            }
            (412, Op::Write(PutMode::Create)) => Error::AlreadyExists {
                backend,
                key: key.to_string(),
            },
            (412, Op::Write(PutMode::IfMatch(expected))) => Error::PreconditionFailed {
                backend,
                key: key.to_string(),
                expected: expected.clone(),
            },
            _ => {
                let reason = if api.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", api.reason)
                };
                self.other(key, format!("HTTP {status}{reason}: {}", api.message))
            }
        }
    }

    fn bucket_not_found(&self) -> Error {
        Error::BucketNotFound {
            backend: self.url.clone(),
            bucket: self.bucket.clone(),
        }
    }

    /// Whether a 404 on an object means that the bucket is missing: from the message
    /// when it says so (real GCS), by looking at the bucket otherwise (the emulator).
    async fn bucket_missing(&self, api: &wire::ApiError) -> bool {
        match api.missing_bucket() {
            Some(missing) => missing,
            None if self.bucket_seen.load(Ordering::Relaxed) => false,
            None => {
                let url = format!(
                    "{}/storage/v1/b/{}",
                    self.endpoint,
                    wire::encode_segment(&self.bucket)
                );
                match self
                    .send("", || self.client.get(&url).query(&[("fields", "name")]))
                    .await
                {
                    Ok(resp) if resp.status() == StatusCode::NOT_FOUND => true,
                    Ok(resp) => {
                        // 200, or 403 for a caller with object but not bucket rights:
                        // either way the object, not the bucket, is what is missing.
                        if resp.status().is_success() {
                            self.bucket_seen.store(true, Ordering::Relaxed);
                        }
                        false
                    }
                    Err(_) => false,
                }
            }
        }
    }

    fn seen(&self) {
        self.bucket_seen.store(true, Ordering::Relaxed);
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let url = self.object_url(&self.object_name(key.as_str()));
        let res: wire::ObjectResource = self
            .send_json(key.as_str(), Op::Read, || self.client.get(&url))
            .await?;
        self.seen();
        Ok(res.into_meta(key.clone()))
    }

    /// The metadata a media download carries in its headers, if complete.
    fn meta_from_headers(&self, key: &Key, headers: &HeaderMap, size: u64) -> Option<ObjectMeta> {
        let version = header_str(headers, "x-goog-generation")?.to_string();
        let last_modified = header_str(headers, LAST_MODIFIED.as_str())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())?
            .with_timezone(&Utc);
        let metadata: BTreeMap<String, String> = headers
            .iter()
            .filter_map(|(name, value)| {
                let k = name.as_str().strip_prefix("x-goog-meta-")?;
                Some((k.to_string(), value.to_str().ok()?.to_string()))
            })
            .collect();
        Some(ObjectMeta {
            key: key.clone(),
            size,
            last_modified,
            version: Some(version),
            metadata,
        })
    }

    fn past_end(&self, key: &Key, range: &GetRange, size: u64) -> Error {
        self.other(
            key.as_str(),
            format!("range {range:?} starts past the end ({size} bytes)"),
        )
    }

    /// A read that returns no bytes, resolved against the object's size.
    async fn empty_read(&self, key: &Key, range: &GetRange) -> Result<GetResult> {
        let meta = self.head(key).await?;
        let r = range
            .resolve(meta.size)
            .ok_or_else(|| self.past_end(key, range, meta.size))?;
        let r = r.start..r.start;
        Ok(GetResult {
            meta,
            range: r,
            body: stream::empty().boxed(),
        })
    }

    async fn get_opts(self: &Arc<Self>, key: &Key, range: Option<GetRange>) -> Result<GetResult> {
        let header = match &range {
            None => None,
            // No HTTP range is empty: resolve it against the size instead.
            Some(empty @ GetRange::Bounded(r)) if r.end <= r.start => {
                return self.empty_read(key, empty).await
            }
            Some(GetRange::Bounded(r)) => Some(wire::range_header(r.start, Some(r.end))),
            Some(GetRange::From(start)) => Some(wire::range_header(*start, None)),
        };
        let url = self.object_url(&self.object_name(key.as_str()));
        let resp = self
            .send(key.as_str(), || {
                let req = self.client.get(&url).query(&[("alt", "media")]);
                match &header {
                    Some(h) => req.header(RANGE, h),
                    None => req,
                }
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            if let Some(range) = &range {
                return self.empty_read(key, range).await;
            }
        }
        if !status.is_success() {
            return Err(self.error_for(resp, key.as_str(), Op::Read).await);
        }
        self.seen();
        let headers = resp.headers().clone();
        let (served, size) = if status == StatusCode::PARTIAL_CONTENT {
            let (served, total) = header_str(&headers, CONTENT_RANGE.as_str())
                .and_then(wire::parse_content_range)
                .ok_or_else(|| {
                    self.other(
                        key.as_str(),
                        "a 206 answer without a valid Content-Range".into(),
                    )
                })?;
            (Some(served), total)
        } else {
            let size = header_str(&headers, "x-goog-stored-content-length")
                .and_then(|v| v.parse().ok())
                .or(resp.content_length());
            (None, size)
        };
        let meta = match size.and_then(|s| self.meta_from_headers(key, &headers, s)) {
            Some(meta) => meta,
            None => self.head(key).await?,
        };
        let body = self.body_of(resp, key.as_str());
        // A body that breaks off or stalls is read on from where it stopped, at the
        // same generation.
        let resume = |body, range: std::ops::Range<u64>| {
            let inner = Arc::clone(self);
            let generation = meta.version.clone();
            let k = key.as_str().to_owned();
            let reopen: Reopen = Arc::new(move |rest| {
                let inner = Arc::clone(&inner);
                let generation = generation.clone();
                let k = k.clone();
                Box::pin(async move { inner.reopen(&k, generation, rest).await })
            });
            resuming_body(
                body,
                range,
                self.timeouts.read,
                self.retry.clone(),
                self.url.clone(),
                key.as_str().to_owned(),
                reopen,
            )
        };
        match (served, range) {
            (Some(served), _) => Ok(GetResult {
                body: resume(body, served.clone()),
                meta,
                range: served,
            }),
            (None, None) => Ok(GetResult {
                body: resume(body, 0..meta.size),
                range: 0..meta.size,
                meta,
            }),
            // The server ignored the Range header and sent everything: cut it here.
            (None, Some(range)) => {
                let r = range
                    .resolve(meta.size)
                    .ok_or_else(|| self.past_end(key, &range, meta.size))?;
                Ok(GetResult {
                    meta,
                    body: wire::slice_stream(body, r.clone()),
                    range: r,
                })
            }
        }
    }

    fn body_of(&self, resp: Response, key: &str) -> cairn_backend::Body {
        let backend = self.url.clone();
        let k = key.to_string();
        resp.bytes_stream()
            .map_err(move |e| Error::Unavailable {
                backend: backend.clone(),
                key: k.clone(),
                source: format!("reading the object failed: {}", chain(&e)).into(),
            })
            .boxed()
    }

    /// The body of bytes `rest` of an object, at `generation`.
    async fn reopen(
        &self,
        key: &str,
        generation: Option<String>,
        rest: std::ops::Range<u64>,
    ) -> Result<cairn_backend::Body> {
        let url = self.object_url(&self.object_name(key));
        let range = wire::range_header(rest.start, Some(rest.end));
        let resp = self
            .send(key, || {
                let mut q = vec![("alt", "media".to_string())];
                if let Some(g) = &generation {
                    q.push(("ifGenerationMatch", g.clone()));
                }
                self.client.get(&url).query(&q).header(RANGE, &range)
            })
            .await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => Ok(self.body_of(resp, key)),
            StatusCode::PRECONDITION_FAILED => Err(self.other(
                key,
                "the object was replaced while it was being read".into(),
            )),
            StatusCode::OK => {
                // The range was ignored: skip to where the read stopped.
                let body = self.body_of(resp, key);
                Ok(wire::slice_stream(body, rest))
            }
            _ => Err(self.error_for(resp, key, Op::Read).await),
        }
    }

    async fn put_opts(
        self: &Arc<Self>,
        key: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        match self.put_attempts(key, &payload, &opts).await {
            // A conditional write retried after the store applied it is refused by
            // its own first attempt: recognized by reading it back.
            Err(e @ (Error::AlreadyExists { .. } | Error::PreconditionFailed { .. })) => {
                match recognize_applied(
                    &GcsBackend {
                        inner: Arc::clone(self),
                    },
                    key,
                    &payload,
                )
                .await
                {
                    Some(done) => Ok(done),
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    async fn put_attempts(
        &self,
        key: &Key,
        payload: &PutPayload,
        opts: &PutOptions,
    ) -> Result<PutResult> {
        let k = key.as_str();
        let generation_match = match &opts.mode {
            PutMode::Overwrite => None,
            PutMode::Create => Some("0".to_string()),
            PutMode::IfMatch(v) => {
                if v.parse::<u64>().is_err() {
                    // Not a generation of this store: it cannot be the current one.
                    return Err(Error::PreconditionFailed {
                        backend: self.url.clone(),
                        key: k.to_string(),
                        expected: v.clone(),
                    });
                }
                Some(v.clone())
            }
        };
        let name = self.object_name(k);
        let content_type = opts.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE);
        let metadata_json = wire::object_resource_json(&name, content_type, &opts.metadata);
        let len = payload.len();
        // The emulator ignores preconditions on resumable uploads: conditional writes go
        // in one request there, whatever their size.
        let single =
            len == 0 || len <= self.threshold || (self.emulator && generation_match.is_some());
        let upload = Upload {
            key: k,
            mode: &opts.mode,
            content_type,
            metadata_json,
            generation_match: generation_match.as_deref(),
            payload,
        };
        let res = if single {
            self.multipart_upload(&upload).await?
        } else {
            self.retry.run(|| self.resumable_attempt(&upload)).await?
        };
        self.seen();
        Ok(PutResult {
            version: res.generation,
        })
    }

    fn upload_query(
        &self,
        kind: &'static str,
        generation_match: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        let mut q = vec![("uploadType", kind.to_string())];
        if let Some(g) = generation_match {
            q.push(("ifGenerationMatch", g.to_string()));
        }
        q
    }

    /// One `uploadType=multipart` request: the JSON metadata and the media together.
    async fn multipart_upload(&self, u: &Upload<'_>) -> Result<wire::ObjectResource> {
        let body = wire::multipart_body(
            &wire::random_boundary(),
            &u.metadata_json,
            u.content_type,
            u.payload,
        );
        let url = self.upload_url();
        let query = self.upload_query("multipart", u.generation_match);
        self.send_json(u.key, Op::Write(u.mode), || {
            let chunks = body.chunks.clone();
            self.client
                .post(&url)
                .query(&query)
                .header(CONTENT_TYPE, &body.content_type)
                .header(CONTENT_LENGTH, body.len)
                .body(reqwest::Body::wrap_stream(stream::iter(
                    chunks.into_iter().map(Ok::<_, std::io::Error>),
                )))
        })
        .await
    }

    /// One resumable upload, from the start of a new session. A chunk that fails
    /// transiently (a dropped connection, a stall, a 5xx) does not start the upload
    /// over: the session is asked how much it holds and the upload goes on from there
    /// (see `committed`), within the retry policy's attempts and time. A lost session
    /// (404, 410), or any failed chunk against an emulator, is [`Error::Unavailable`],
    /// so that the retry policy starts over with a new session.
    async fn resumable_attempt(&self, u: &Upload<'_>) -> Result<wire::ObjectResource> {
        let total = u.payload.len();
        let url = self.upload_url();
        let query = self.upload_query("resumable", u.generation_match);
        let init = self
            .client
            .post(&url)
            .query(&query)
            .header(CONTENT_TYPE, "application/json; charset=UTF-8")
            .header("X-Upload-Content-Type", u.content_type)
            .header("X-Upload-Content-Length", total)
            .body(u.metadata_json.clone());
        let resp = self.send_once(u.key, init).await?;
        if !resp.status().is_success() {
            return Err(self.error_for(resp, u.key, Op::Write(u.mode)).await);
        }
        let session = header_str(resp.headers(), LOCATION.as_str())
            .ok_or_else(|| {
                self.other(
                    u.key,
                    "no session URI in the answer to a resumable upload".into(),
                )
            })?
            .to_string();
        let mut offset = 0u64;
        let mut stalls = 0u32;
        let started = tokio::time::Instant::now();
        let mut resumes = 0u32;
        loop {
            let end = (offset + self.chunk_size).min(total);
            let (content_range, chunk) = if offset < total {
                (
                    format!("bytes {offset}-{}/{total}", end - 1),
                    u.payload.range(offset..end),
                )
            } else {
                // Everything is stored but the session is still open: finalize it.
                (format!("bytes */{total}"), Bytes::new())
            };
            let put = self
                .client
                .put(&session)
                .header(CONTENT_RANGE, content_range)
                .header(CONTENT_TYPE, u.content_type)
                .body(chunk);
            let resp = match self.send_once(u.key, put).await {
                Ok(resp) => resp,
                // The session outlives the connection: resume it where it stands (on
                // GCS; an emulator's session cannot be resumed, see `committed`).
                Err(e) if e.is_retryable() && !self.emulator => {
                    match self
                        .resume_session(u, &session, total, e, started, &mut resumes)
                        .await?
                    {
                        Progress::Done(object) => return Ok(object),
                        Progress::At(committed) => {
                            offset = committed;
                            continue;
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            match resp.status().as_u16() {
                200 | 201 => return self.read_json(resp, u.key).await,
                308 => {
                    let committed = wire::committed_from_range(header_str(resp.headers(), RANGE.as_str()))
                        .filter(|&c| c <= end.max(offset))
                        .ok_or_else(|| {
                            self.other(
                                u.key,
                                format!(
                                    "resumable upload: unexpected Range {:?} after sending bytes {offset}..{end}",
                                    resp.headers().get(RANGE)
                                ),
                            )
                        })?;
                    if committed <= offset {
                        stalls += 1;
                        if stalls >= MAX_STALLS {
                            return Err(self.unavailable(
                                u.key,
                                format!("resumable upload makes no progress at byte {offset}"),
                            ));
                        }
                    } else {
                        stalls = 0;
                    }
                    offset = committed;
                }
                404 | 410 => {
                    return Err(self.unavailable(
                        u.key,
                        format!("resumable upload session lost (HTTP {})", resp.status()),
                    ))
                }
                _ => return Err(self.error_for(resp, u.key, Op::Write(u.mode)).await),
            }
        }
    }

    /// After a chunk failed with `failure` (transient): waits as the retry policy says
    /// (giving up with `failure` once its attempts or time are spent), then finds how
    /// many bytes the session holds, asking again after each transient failure.
    async fn resume_session(
        &self,
        u: &Upload<'_>,
        session: &str,
        total: u64,
        failure: Error,
        started: tokio::time::Instant,
        resumes: &mut u32,
    ) -> Result<Progress> {
        let mut failure = failure;
        loop {
            *resumes += 1;
            let wait = cairn_backend::retry_after_of(&failure);
            let Some(delay) = self.retry.next_delay(*resumes, wait, started.elapsed()) else {
                return Err(failure);
            };
            tracing::debug!(error = %failure, resumes = *resumes, ?delay, "resuming a resumable upload");
            tokio::time::sleep(delay).await;
            match self.committed(u, session, total).await {
                Err(e) if e.is_retryable() => failure = e,
                other => return other,
            }
        }
    }

    /// How far a resumable session got: an empty `PUT` with `Content-Range: bytes
    /// */<total>` (GCS's status query) answers `308` with the bytes the session holds,
    /// or `200`/`201` once the object is complete.
    ///
    /// Not used against an emulator: fake-gcs-server (v1.54 here) finalizes a session
    /// on that query, publishing the bytes it holds as a short object, and appends
    /// re-sent bytes to what it holds while answering with a `Range` computed from the
    /// request (both pinned by tests in the fault suite). There a failed chunk starts
    /// the upload over in a new session.
    async fn committed(&self, u: &Upload<'_>, session: &str, total: u64) -> Result<Progress> {
        let query = self
            .client
            .put(session)
            .header(CONTENT_RANGE, format!("bytes */{total}"))
            .header(CONTENT_LENGTH, 0)
            .body(Bytes::new());
        let resp = self.send_once(u.key, query).await?;
        match resp.status().as_u16() {
            200 | 201 => {
                let object: wire::ObjectResource = self.read_json(resp, u.key).await?;
                let size = object.size.as_deref().and_then(|s| s.parse::<u64>().ok());
                match size {
                    Some(size) if size != total => Err(self.other(
                        u.key,
                        format!(
                            "resumable upload: the store finalized the object at {size} of {total} bytes \
                             when asked for its progress"
                        ),
                    )),
                    _ => Ok(Progress::Done(object)),
                }
            }
            308 => {
                let range = header_str(resp.headers(), RANGE.as_str());
                wire::committed_from_range(range)
                    .filter(|&c| c <= total)
                    .map(Progress::At)
                    .ok_or_else(|| {
                        self.other(
                            u.key,
                            format!(
                                "resumable upload: unexpected Range {range:?} in a status answer"
                            ),
                        )
                    })
            }
            404 | 410 => Err(self.unavailable(
                u.key,
                format!("resumable upload session lost (HTTP {})", resp.status()),
            )),
            _ => Err(self.error_for(resp, u.key, Op::Write(u.mode)).await),
        }
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let url = self.object_url(&self.object_name(key.as_str()));
        let resp = self.send(key.as_str(), || self.client.delete(&url)).await?;
        if resp.status().is_success() {
            self.seen();
            return Ok(());
        }
        match self.error_for(resp, key.as_str(), Op::Delete).await {
            e if e.is_not_found() => Ok(()),
            e => Err(e),
        }
    }

    /// One page of a listing of object names starting with `name_prefix`.
    async fn list_page(
        &self,
        list_prefix: &str,
        name_prefix: &str,
        token: Option<&str>,
    ) -> Result<wire::ObjectList> {
        let url = self.objects_url();
        let mut query = vec![
            ("prefix", name_prefix.to_string()),
            ("maxResults", LIST_PAGE_SIZE.to_string()),
            ("fields", LIST_FIELDS.to_string()),
        ];
        if let Some(t) = token {
            query.push(("pageToken", t.to_string()));
        }
        let page = self
            .send_json(list_prefix, Op::List, || {
                self.client.get(&url).query(&query)
            })
            .await?;
        self.seen();
        Ok(page)
    }

    /// The metadata of a listed object, or `None` (with a warning) when its name is
    /// not a key of this backend.
    fn listed(&self, o: wire::ObjectResource) -> Option<ObjectMeta> {
        let rel = if self.prefix.is_empty() {
            Some(o.name.as_str())
        } else {
            o.name
                .strip_prefix(self.prefix.as_str())
                .and_then(|r| r.strip_prefix('/'))
        };
        let Some(rel) = rel else {
            tracing::warn!(backend = %self.url, name = %o.name, "skipping a listed object outside the prefix");
            return None;
        };
        match Key::parse(rel) {
            Ok(key) => Some(o.into_meta(key)),
            Err(e) => {
                tracing::warn!(backend = %self.url, name = %o.name, error = %e, "skipping an object whose name is not a valid key");
                None
            }
        }
    }
}

/// Where a resumable upload stands after it was interrupted.
enum Progress {
    /// The session holds the first bytes up to here: go on from this offset.
    At(u64),
    /// The object is complete.
    Done(wire::ObjectResource),
}

/// The parts of a write shared by both upload kinds.
struct Upload<'a> {
    key: &'a str,
    mode: &'a PutMode,
    content_type: &'a str,
    metadata_json: Bytes,
    generation_match: Option<&'a str>,
    payload: &'a PutPayload,
}

#[async_trait]
impl Backend for GcsBackend {
    fn describe(&self) -> String {
        self.inner.url.clone()
    }

    fn capabilities(&self) -> Capabilities {
        let emulator = self.inner.emulator;
        Capabilities {
            create: true,
            if_match: true,
            conditional_large_writes: !emulator,
            user_metadata: true,
            multipart_threshold: Some(self.inner.threshold),
            list_page_size: LIST_PAGE_SIZE,
            gaps: if emulator {
                vec![EMULATOR_RESUMABLE_GAP.to_string()]
            } else {
                Vec::new()
            },
        }
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn get_opts(&self, key: &Key, range: Option<GetRange>) -> Result<GetResult> {
        self.inner.get_opts(key, range).await
    }

    async fn put_opts(
        &self,
        key: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(key, payload, opts).await
    }

    /// Nothing to remove: a resumable upload that is never finalized creates no
    /// object, cannot be listed, and GCS discards its session after a week; a write
    /// cairn cancels is not finalized.
    async fn clean_up(&self, _older_than: std::time::Duration) -> Result<cairn_backend::CleanUp> {
        Ok(cairn_backend::CleanUp::default())
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.inner.delete(key).await
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        if let Err(e) = validate_prefix(prefix) {
            return stream::once(async move { Err(e) }).boxed();
        }
        let inner = self.inner.clone();
        let list_prefix = prefix.to_string();
        let name_prefix = if inner.prefix.is_empty() {
            list_prefix.clone()
        } else {
            format!("{}/{list_prefix}", inner.prefix)
        };
        // State: `Some(token)` for the next page (`None` token: the first), `None` when done.
        stream::try_unfold(Some(None::<String>), move |state| {
            let inner = inner.clone();
            let list_prefix = list_prefix.clone();
            let name_prefix = name_prefix.clone();
            async move {
                let Some(token) = state else {
                    return Ok(None);
                };
                let page = inner
                    .list_page(&list_prefix, &name_prefix, token.as_deref())
                    .await?;
                let metas: Vec<ObjectMeta> = page
                    .items
                    .into_iter()
                    .filter_map(|o| inner.listed(o))
                    .collect();
                let next = page.next_page_token.filter(|t| !t.is_empty()).map(Some);
                Ok(Some((metas, next)))
            }
        })
        .map_ok(|metas| stream::iter(metas.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_backend::BackendExt;
    use std::time::Duration;

    async fn backend(prefix: &str, emulator: bool) -> GcsBackend {
        GcsBuilder::new("bkt")
            .prefix(prefix)
            .endpoint("http://127.0.0.1:9")
            .emulator(emulator)
            .credentials(GcsCredentials::Anonymous)
            .build()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn describe_names_bucket_and_prefix() {
        assert_eq!(backend("", false).await.describe(), "gs://bkt");
        assert_eq!(backend("/a/b/", false).await.describe(), "gs://bkt/a/b");
    }

    #[tokio::test]
    async fn object_names_and_urls_are_encoded() {
        let b = backend("runs/v1", false).await;
        let name = b.inner.object_name("x y/z.json");
        assert_eq!(name, "runs/v1/x y/z.json");
        assert_eq!(
            b.inner.object_url(&name),
            "http://127.0.0.1:9/storage/v1/b/bkt/o/runs%2Fv1%2Fx%20y%2Fz.json"
        );
        assert_eq!(
            b.inner.upload_url(),
            "http://127.0.0.1:9/upload/storage/v1/b/bkt/o"
        );
    }

    #[tokio::test]
    async fn listed_names_lose_the_prefix() {
        let b = backend("p", false).await;
        let o = |name: &str| wire::ObjectResource {
            name: name.into(),
            size: Some("3".into()),
            updated: None,
            time_created: None,
            generation: Some("7".into()),
            metadata: None,
        };
        let m = b.inner.listed(o("p/a/b.txt")).unwrap();
        assert_eq!(m.key.as_str(), "a/b.txt");
        assert_eq!(m.size, 3);
        assert!(b.inner.listed(o("p/dir/")).is_none());
        assert!(b.inner.listed(o("other/a")).is_none());
        assert!(b.inner.listed(o("pa")).is_none());
    }

    #[tokio::test]
    async fn emulator_gap_is_declared() {
        let real = backend("", false).await.capabilities();
        assert!(real.conditional_large_writes);
        assert!(real.gaps.is_empty());
        assert_eq!(real.multipart_threshold, Some(DEFAULT_RESUMABLE_THRESHOLD));
        assert_eq!(real.list_page_size, 1000);
        let emu = backend("", true).await.capabilities();
        assert!(!emu.conditional_large_writes);
        assert!(emu.gaps[0].contains("fake-gcs-server"));
        assert!(emu.gaps[0].contains("resumable"));
    }

    #[tokio::test]
    async fn bad_configurations_are_refused() {
        let err = GcsBuilder::new("bkt")
            .chunk_size(1000)
            .credentials(GcsCredentials::Anonymous)
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        let err = GcsBuilder::new("bkt")
            .endpoint("ftp://x")
            .credentials(GcsCredentials::Anonymous)
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        let err = GcsBuilder::new("bkt")
            .credentials_file("/nonexistent/creds.json")
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
        assert!(err.to_string().contains("could not be loaded"), "{err}");
    }

    /// A one-thread HTTP server answering each connection with the next canned answer
    /// and recording the request heads it saw.
    fn canned_server(
        answers: Vec<(u16, &'static str)>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, body) in answers {
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let (conn, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    head.push_str(&line);
                }
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                seen.push(head);
                let mut conn = conn;
                conn.write_all(answer.as_bytes()).unwrap();
            }
            seen
        });
        (endpoint, handle)
    }

    fn quick_retries(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..RetryPolicy::default()
        }
    }

    const UNAVAILABLE: (u16, &str) = (503, r#"{"error":{"code":503,"message":"backend"}}"#);
    const FORBIDDEN: (u16, &str) = (403, r#"{"error":{"code":403,"message":"nope"}}"#);
    const CREATED: (u16, &str) = (200, r#"{"name":"k","generation":"42"}"#);

    async fn served(endpoint: &str, attempts: u32) -> GcsBackend {
        GcsBuilder::new("bkt")
            .endpoint(endpoint)
            .credentials(GcsCredentials::Anonymous)
            .retry_policy(quick_retries(attempts))
            .build()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn transient_answers_are_retried_then_unavailable() {
        let (endpoint, server) = canned_server(vec![UNAVAILABLE, UNAVAILABLE, UNAVAILABLE]);
        let b = served(&endpoint, 3).await;
        let err = b.head(&Key::parse("k").unwrap()).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert!(
            err.to_string().contains("503") && err.to_string().contains("backend"),
            "{err}"
        );
        assert_eq!(server.join().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_write_succeeds_after_a_transient_answer() {
        let (endpoint, server) = canned_server(vec![UNAVAILABLE, CREATED]);
        let b = served(&endpoint, 3).await;
        let key = Key::parse("k").unwrap();
        let put = b
            .put_opts(
                &key,
                PutPayload::from_chunks([Bytes::from_static(b"ab"), Bytes::from_static(b"cd")]),
                PutMode::Create.into(),
            )
            .await
            .unwrap();
        assert_eq!(put.version.as_deref(), Some("42"));
        let heads = server.join().unwrap();
        assert_eq!(heads.len(), 2);
        let head = heads[1].to_ascii_lowercase();
        assert!(
            head.starts_with(
                "post /upload/storage/v1/b/bkt/o?uploadtype=multipart&ifgenerationmatch=0 "
            ),
            "{head}"
        );
        assert!(
            head.contains("content-type: multipart/related; boundary=cairn-"),
            "{head}"
        );
        // The streamed body is sent with its length, not chunked.
        assert!(
            head.contains("content-length:") && !head.contains("transfer-encoding"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn refusals_are_permission_denied_without_retries() {
        let (endpoint, server) = canned_server(vec![FORBIDDEN]);
        let b = served(&endpoint, 3).await;
        let err = b.head(&Key::parse("k").unwrap()).await.unwrap_err();
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(server.join().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn connection_failures_are_unavailable() {
        // Bind then drop a listener: nothing listens on that port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let b = served(&format!("http://127.0.0.1:{port}"), 2).await;
        let err = b.get(&Key::parse("k").unwrap()).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        let err = b.list_all("").await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    }

    #[tokio::test]
    async fn stale_non_numeric_versions_fail_without_a_request() {
        let b = backend("", false).await;
        let key = Key::parse("k").unwrap();
        let err = b
            .put_opts(&key, "x".into(), PutMode::IfMatch("\"etag\"".into()).into())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PreconditionFailed { .. }), "{err}");
    }
}
