//! Configuration of a [`GcsBackend`](crate::GcsBackend): the builder, `gs://` URLs and
//! the emulator convention.

use std::path::PathBuf;

use std::time::Duration;

use cairn_backend::{split_url_options, Error, Key, Result, RetryPolicy, Timeouts};
use google_cloud_auth::credentials::Credentials;

/// The public Google Cloud Storage endpoint, used unless an endpoint or an emulator is named.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// Writes larger than this many bytes use a resumable upload by default (16 MiB).
pub const DEFAULT_RESUMABLE_THRESHOLD: u64 = 16 * 1024 * 1024;

/// The default size of one chunk of a resumable upload (8 MiB).
pub const DEFAULT_CHUNK_SIZE: u64 = 8 * 1024 * 1024;

/// Chunks of a resumable upload (all but the last) must be a multiple of this (256 KiB).
pub const CHUNK_ALIGNMENT: u64 = 256 * 1024;

/// The environment variable naming a GCS emulator (`host:port` or a URL), the
/// convention Google's client libraries follow: when set, requests go there and carry
/// no credentials.
pub const EMULATOR_HOST_VAR: &str = "STORAGE_EMULATOR_HOST";

/// Where the credentials of a [`GcsBackend`](crate::GcsBackend) come from.
#[derive(Debug, Clone, Default)]
pub enum GcsCredentials {
    /// Anonymous against an emulator (when [`EMULATOR_HOST_VAR`] is set or
    /// [`GcsBuilder::emulator`] is on), Application Default Credentials otherwise.
    #[default]
    Auto,
    /// No credentials at all: requests carry no `Authorization` header.
    Anonymous,
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, the gcloud
    /// well-known file, then the metadata server.
    ApplicationDefault,
    /// A credentials JSON file (service account, authorized user, external account or
    /// impersonated service account). Requests are authenticated even against an emulator.
    File(PathBuf),
    /// Credentials built by the caller with [`google_cloud_auth`].
    Credentials(Credentials),
}

/// Builds a [`GcsBackend`](crate::GcsBackend).
///
/// ```no_run
/// # async fn example() -> cairn_backend::Result<()> {
/// use cairn_gcs::GcsBuilder;
/// let backend = GcsBuilder::new("my-bucket")
///     .prefix("pipelines/daily")
///     .resumable_threshold(32 * 1024 * 1024)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GcsBuilder {
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) emulator: Option<bool>,
    pub(crate) resumable_threshold: u64,
    pub(crate) chunk_size: u64,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeouts: Timeouts,
    pub(crate) credentials: GcsCredentials,
}

impl GcsBuilder {
    /// A builder for `bucket`, with no prefix and the defaults for everything else.
    pub fn new(bucket: impl Into<String>) -> Self {
        GcsBuilder {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            emulator: None,
            resumable_threshold: DEFAULT_RESUMABLE_THRESHOLD,
            chunk_size: DEFAULT_CHUNK_SIZE,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            credentials: GcsCredentials::Auto,
        }
    }

    /// A builder for a `gs://bucket/prefix` URL.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL is not of that form.
    pub fn from_url(url: &str) -> Result<Self> {
        let (base, options) = split_url_options(url)?;
        let (bucket, prefix) = parse_gs_url(base)?;
        let mut b = GcsBuilder::new(bucket).prefix(prefix);
        for (k, v) in options {
            match k.as_str() {
                "max_attempts" => {
                    b.retry.max_attempts =
                        v.parse()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| Error::Config {
                                message: format!(
                                    "'{url}': max_attempts '{v}' is not a positive number"
                                ),
                            })?
                }
                "endpoint" => b.endpoint = Some(v),
                "connect_timeout" | "read_timeout" | "operation_timeout" => {
                    b.timeouts.set(&k, &v).map_err(|e| Error::Config {
                        message: format!("'{url}': {e}"),
                    })?
                }
                _ => {
                    return Err(Error::Config {
                        message: format!(
                            "'{url}': unknown option '{k}' (known: connect_timeout, read_timeout, \
                             operation_timeout, max_attempts, endpoint)"
                        ),
                    })
                }
            }
        }
        Ok(b)
    }

    /// Objects are stored at `prefix/key`; listings strip it again. Leading and trailing
    /// `/` are ignored.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The endpoint, such as `https://storage.googleapis.com` or `http://127.0.0.1:4443`.
    /// Default: [`EMULATOR_HOST_VAR`] when set, [`DEFAULT_ENDPOINT`] otherwise.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Whether the endpoint is an emulator (default: whether [`EMULATOR_HOST_VAR`] is
    /// set). Against an emulator, [`GcsCredentials::Auto`] means anonymous, and the
    /// emulator's known gaps are declared in the capabilities and worked around.
    pub fn emulator(mut self, emulator: bool) -> Self {
        self.emulator = Some(emulator);
        self
    }

    /// Writes larger than this many bytes use a resumable upload
    /// (default [`DEFAULT_RESUMABLE_THRESHOLD`]).
    pub fn resumable_threshold(mut self, bytes: u64) -> Self {
        self.resumable_threshold = bytes;
        self
    }

    /// The size of each chunk of a resumable upload, a positive multiple of
    /// [`CHUNK_ALIGNMENT`] (default [`DEFAULT_CHUNK_SIZE`]).
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// How transient failures (408, 429, 5xx, connection errors) are retried.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Connect, read-idle and whole-operation time limits (defaults 5 s, 30 s, 120 s):
    /// a stalled store gives [`Error::Unavailable`] within them, never a hang.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The time allowed to open a connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }

    /// The time a request may go without receiving a byte (default 30 s).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.read = timeout;
        self
    }

    /// The bound on one request, every attempt included (default 120 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.operation = timeout;
        self
    }

    /// Where credentials come from (default [`GcsCredentials::Auto`]).
    pub fn credentials(mut self, credentials: GcsCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Authenticates with the credentials JSON file at `path`, even against an emulator.
    pub fn credentials_file(self, path: impl Into<PathBuf>) -> Self {
        self.credentials(GcsCredentials::File(path.into()))
    }

    /// Builds the backend. Credentials are loaded now; tokens are fetched per request.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid bucket, prefix, endpoint or chunk size;
    /// [`Error::PermissionDenied`] when the credentials cannot be loaded.
    pub async fn build(self) -> Result<crate::GcsBackend> {
        crate::GcsBackend::from_builder(self).await
    }
}

/// Splits `gs://bucket/prefix` into the bucket and the prefix (without surrounding `/`).
pub(crate) fn parse_gs_url(url: &str) -> Result<(String, String)> {
    if url.contains(['?', '#']) {
        return Err(Error::Config {
            message: format!("'{url}': options are read by GcsBuilder::from_url"),
        });
    }
    let rest = url.strip_prefix("gs://").ok_or_else(|| Error::Config {
        message: format!("'{url}' is not a GCS URL: expected gs://bucket/prefix"),
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::Config {
            message: format!("'{url}' names no bucket: expected gs://bucket/prefix"),
        });
    }
    Ok((bucket.to_string(), normalize_prefix(prefix)?))
}

/// Strips surrounding `/` from a prefix and checks that it is a valid key path.
pub(crate) fn normalize_prefix(prefix: &str) -> Result<String> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    Key::parse(trimmed).map_err(|e| Error::Config {
        message: format!("invalid GCS prefix '{prefix}': {e}"),
    })?;
    Ok(trimmed.to_string())
}

/// Checks a bucket name enough to keep it from breaking URLs.
pub(crate) fn validate_bucket(bucket: &str) -> Result<()> {
    if bucket.is_empty()
        || bucket.contains('/')
        || bucket.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Error::Config {
            message: format!("'{bucket}' is not a valid GCS bucket name"),
        });
    }
    Ok(())
}

/// Turns the value of [`EMULATOR_HOST_VAR`] into an endpoint URL: `host:port` gets
/// `http://`; a trailing `/` is dropped.
pub fn normalize_emulator_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    if host.contains("://") {
        host.to_string()
    } else {
        format!("http://{host}")
    }
}

/// The emulator endpoint named by [`EMULATOR_HOST_VAR`], if set and not empty.
pub(crate) fn emulator_from_env() -> Option<String> {
    std::env::var(EMULATOR_HOST_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| normalize_emulator_host(&v))
}

/// Checks the chunk size of resumable uploads.
pub(crate) fn validate_chunk_size(bytes: u64) -> Result<()> {
    if bytes == 0 || bytes % CHUNK_ALIGNMENT != 0 {
        return Err(Error::Config {
            message: format!(
                "GCS resumable chunk size {bytes} must be a positive multiple of {CHUNK_ALIGNMENT} bytes (256 KiB)"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gs_urls_split_into_bucket_and_prefix() {
        assert_eq!(
            parse_gs_url("gs://bkt/a/b").unwrap(),
            ("bkt".into(), "a/b".into())
        );
        assert_eq!(
            parse_gs_url("gs://bkt/a/b/").unwrap(),
            ("bkt".into(), "a/b".into())
        );
        assert_eq!(parse_gs_url("gs://bkt").unwrap(), ("bkt".into(), "".into()));
        assert_eq!(
            parse_gs_url("gs://bkt/").unwrap(),
            ("bkt".into(), "".into())
        );
        for bad in [
            "s3://bkt/a",
            "gs://",
            "gs:///a",
            "bkt/a",
            "gs://bkt/../x",
            "gs://bkt/a//b",
        ] {
            let err = parse_gs_url(bad).unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn emulator_hosts_get_a_scheme() {
        assert_eq!(
            normalize_emulator_host("127.0.0.1:4443"),
            "http://127.0.0.1:4443"
        );
        assert_eq!(
            normalize_emulator_host("http://127.0.0.1:4443/"),
            "http://127.0.0.1:4443"
        );
        assert_eq!(
            normalize_emulator_host(" https://gcs.local "),
            "https://gcs.local"
        );
        assert_eq!(
            normalize_emulator_host("localhost:9023"),
            "http://localhost:9023"
        );
    }

    #[test]
    fn chunk_sizes_must_be_aligned() {
        assert!(validate_chunk_size(CHUNK_ALIGNMENT).is_ok());
        assert!(validate_chunk_size(DEFAULT_CHUNK_SIZE).is_ok());
        assert!(validate_chunk_size(0).is_err());
        assert!(validate_chunk_size(CHUNK_ALIGNMENT + 1).is_err());
    }

    #[test]
    fn bucket_names_cannot_break_urls() {
        assert!(validate_bucket("cairntest").is_ok());
        assert!(validate_bucket("my-bucket.example").is_ok());
        for bad in ["", "a/b", "a b", "a\nb"] {
            assert!(validate_bucket(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn builder_from_url_keeps_the_defaults() {
        let b = GcsBuilder::from_url("gs://bkt/p/q/").unwrap();
        assert_eq!(b.bucket, "bkt");
        assert_eq!(b.prefix, "p/q");
        assert_eq!(b.resumable_threshold, DEFAULT_RESUMABLE_THRESHOLD);
        assert_eq!(b.chunk_size, DEFAULT_CHUNK_SIZE);
        assert!(matches!(b.credentials, GcsCredentials::Auto));
    }
}
