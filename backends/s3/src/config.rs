//! Configuration of an [`S3Backend`]: the builder, `s3://` URLs and multipart planning.

use std::ops::Range;

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::Region;
use std::time::Duration;

use aws_smithy_types::timeout::TimeoutConfig;
use cairn_backend::{split_url_options, Error, Key, Result, RetryPolicy, Timeouts};

use crate::S3Backend;

/// The default size above which writes are multipart uploads: 16 MiB.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// The default size of one multipart part: 8 MiB.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// The default number of parts uploaded at once.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// The default number of attempts of one request (the first included), made by the SDK's
/// standard retry strategy before a transient failure is returned.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// The smallest part S3 accepts (all parts but the last): 5 MiB.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The largest part S3 accepts: 5 GiB.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// The most parts one multipart upload may have.
pub const MAX_PARTS: u64 = 10_000;
/// The largest object one PutObject request may carry: 5 GiB.
pub const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;
/// The region used when neither the configuration nor the environment names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Settings of an [`S3Backend`], built with [`S3Backend::builder`].
///
/// Settings that concern the client (region, endpoint, path style, profile, attempts)
/// are used only when the builder creates the client itself, not with
/// [`S3BackendBuilder::client`].
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The key prefix under which objects are stored (`prefix/key`), without leading or
    /// trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// The region; `None`: from the environment (`AWS_REGION`, the profile), else
    /// [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// The endpoint URL, for S3-compatible stores and emulators; `None`: from the
    /// environment (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`), else AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); `None`: on whenever an endpoint
    /// URL is set (emulators need it), off for AWS.
    pub force_path_style: Option<bool>,
    /// The AWS profile whose credentials (and region) are used; `None`: the standard
    /// credential chain (environment, `AWS_PROFILE` or `default`, web identity, ECS,
    /// instance metadata). A named profile is used as the AWS CLI's `--profile` is: its
    /// credentials win over the environment's.
    pub profile: Option<String>,
    /// Writes larger than this many bytes are multipart uploads.
    pub multipart_threshold: u64,
    /// The size of one part (at least [`MIN_PART_SIZE`]); raised for huge objects so that
    /// no upload has more than [`MAX_PARTS`] parts.
    pub part_size: u64,
    /// How many parts of one upload are sent at once.
    pub concurrency: usize,
    /// Attempts per request, the first included: transient failures (throttling, 5xx,
    /// timeouts, a dropped connection) are retried with jittered exponential backoff,
    /// waiting as long as a `Retry-After` answer asks, within [`S3Config::retry_budget`].
    /// A refused connection, a missing bucket and rejected credentials are not retried.
    pub max_attempts: u32,
    /// No new attempt of a request starts after this much time (default 30 s).
    pub retry_budget: Duration,
    /// Connect, read-idle and whole-operation time limits (defaults 5 s, 30 s, 120 s).
    /// A stalled store gives [`Error::Unavailable`] within them. With a client given to
    /// [`S3BackendBuilder::client`], the connect and read limits are the client's own;
    /// the operation limit and body-idle limit of reads still apply.
    pub timeouts: Timeouts,
    /// Whether `Create` and `IfMatch` writes above the threshold may be multipart uploads
    /// whose completion carries the condition (`If-None-Match: *`, `If-Match`). AWS S3
    /// decides such a completion atomically; some S3-compatible stores and emulators
    /// check it without excluding a concurrent completion (LocalStack 2026.3 does:
    /// several concurrent large `Create`s can all win). When off, conditional writes of
    /// any size are single PutObject requests (at most [`MAX_SINGLE_PUT`] bytes), whose
    /// conditions those stores do decide atomically.
    ///
    /// `None`: on for AWS, off when a custom endpoint URL is configured; on with a
    /// client given to [`S3BackendBuilder::client`].
    pub conditional_multipart: Option<bool>,
}

impl S3Config {
    /// The defaults for `bucket`, with no prefix.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            prefix: String::new(),
            region: None,
            endpoint: None,
            force_path_style: None,
            profile: None,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_budget: cairn_backend::DEFAULT_MAX_ELAPSED,
            timeouts: Timeouts::default(),
            conditional_multipart: None,
        }
    }

    /// The retry policy of one request.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            max_elapsed: self.retry_budget.min(self.timeouts.operation),
            ..RetryPolicy::default()
        }
    }

    /// Checks the settings and normalizes the prefix.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad setting.
    pub fn validate(&mut self) -> Result<()> {
        if self.bucket.is_empty() {
            return Err(config_error("the S3 bucket name is empty"));
        }
        if self.bucket.contains('/') {
            return Err(config_error(format!(
                "'{}' is not a bucket name (it contains '/')",
                self.bucket
            )));
        }
        self.prefix = normalize_prefix(&self.prefix)?;
        if self.part_size < MIN_PART_SIZE || self.part_size > MAX_PART_SIZE {
            return Err(config_error(format!(
                "part_size {} is outside S3's limits ({MIN_PART_SIZE}..={MAX_PART_SIZE} bytes)",
                self.part_size
            )));
        }
        if self.concurrency == 0 {
            return Err(config_error("concurrency must be at least 1"));
        }
        if self.max_attempts == 0 {
            return Err(config_error("max_attempts must be at least 1"));
        }
        let t = &self.timeouts;
        if [t.connect, t.read, t.operation].contains(&Duration::ZERO) {
            return Err(config_error("timeouts must be longer than zero"));
        }
        Ok(())
    }
}

fn config_error(message: impl Into<String>) -> Error {
    Error::Config {
        message: message.into(),
    }
}

/// `a/b/` or `/a/b` → `a/b`, validated as a key; `""` and `"/"` → `""`.
pub(crate) fn normalize_prefix(prefix: &str) -> Result<String> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    Key::parse(trimmed)
        .map(|k| k.as_str().to_owned())
        .map_err(|e| config_error(format!("invalid S3 prefix '{prefix}': {e}")))
}

/// Settings from an `s3://bucket/prefix?option=value&...` URL. The options are
/// `connect_timeout`, `read_timeout`, `operation_timeout` (durations such as `5s`,
/// `250ms`, `2m`), `max_attempts`, `region` and `endpoint`.
///
/// ```
/// use std::time::Duration;
/// let c = cairn_s3::S3Config::from_url("s3://b/runs?read_timeout=2s&max_attempts=2")?;
/// assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("b", "runs"));
/// assert_eq!((c.timeouts.read, c.max_attempts), (Duration::from_secs(2), 2));
/// assert!(cairn_s3::S3Config::from_url("s3://b?colour=red").is_err());
/// # Ok::<(), cairn_backend::Error>(())
/// ```
impl S3Config {
    /// # Errors
    /// [`Error::Config`] for a URL that is not `s3://bucket[/prefix]`, or an unknown
    /// or invalid option.
    pub fn from_url(url: &str) -> Result<S3Config> {
        let (base, options) = split_url_options(url)?;
        let (bucket, prefix) = parse_s3_url(base)?;
        let mut c = S3Config::new(bucket);
        c.prefix = prefix;
        for (k, v) in options {
            match k.as_str() {
                "max_attempts" => {
                    c.max_attempts = v.parse().map_err(|_| {
                        config_error(format!("'{url}': max_attempts '{v}' is not a number"))
                    })?
                }
                "region" => c.region = Some(v),
                "endpoint" => c.endpoint = Some(v),
                "connect_timeout" | "read_timeout" | "operation_timeout" => c
                    .timeouts
                    .set(&k, &v)
                    .map_err(|e| config_error(format!("'{url}': {e}")))?,
                _ => {
                    return Err(config_error(format!(
                        "'{url}': unknown option '{k}' (known: connect_timeout, read_timeout, \
                         operation_timeout, max_attempts, region, endpoint)"
                    )))
                }
            }
        }
        Ok(c)
    }
}

/// Splits an `s3://bucket/prefix` URL into bucket and prefix.
///
/// # Errors
/// [`Error::Config`] for another scheme, an empty bucket, a query or fragment, or an
/// invalid prefix.
pub fn parse_s3_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| config_error(format!("'{url}' is not an s3:// URL")))?;
    if rest.contains(['?', '#']) {
        return Err(config_error(format!(
            "'{url}': options are read by S3Config::from_url, and a fragment is never valid"
        )));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(config_error(format!("'{url}' names no bucket")));
    }
    Ok((bucket.to_owned(), normalize_prefix(prefix)?))
}

/// The byte ranges of the parts of a `len`-byte multipart upload: `part_size` each (the
/// last one shorter), with the part size raised when needed so that there are at most
/// [`MAX_PARTS`] parts.
pub fn plan_parts(len: u64, part_size: u64) -> Vec<Range<u64>> {
    let part_size = part_size.max(len.div_ceil(MAX_PARTS)).max(1);
    (0..len.div_ceil(part_size))
        .map(|i| i * part_size..((i + 1) * part_size).min(len))
        .collect()
}

/// Builds an [`S3Backend`]; see [`S3Backend::builder`].
#[derive(Debug, Clone)]
pub struct S3BackendBuilder {
    config: S3Config,
    client: Option<aws_sdk_s3::Client>,
}

impl S3BackendBuilder {
    pub(crate) fn new(bucket: impl Into<String>) -> Self {
        S3BackendBuilder {
            config: S3Config::new(bucket),
            client: None,
        }
    }

    /// Starts from complete settings.
    pub fn from_config(config: S3Config) -> Self {
        S3BackendBuilder {
            config,
            client: None,
        }
    }

    /// The key prefix (objects are stored at `prefix/key`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// The region (default: from the environment, else `us-east-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.config.region = Some(region.into());
        self
    }

    /// The endpoint URL of an S3-compatible store or emulator.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.config.endpoint = Some(endpoint.into());
        self
    }

    /// Path-style addressing on or off (default: on when an endpoint URL is set).
    pub fn force_path_style(mut self, on: bool) -> Self {
        self.config.force_path_style = Some(on);
        self
    }

    /// Uses this AWS profile's credentials and region.
    pub fn profile(mut self, name: impl Into<String>) -> Self {
        self.config.profile = Some(name.into());
        self
    }

    /// Writes larger than this are multipart uploads (default 16 MiB).
    pub fn multipart_threshold(mut self, bytes: u64) -> Self {
        self.config.multipart_threshold = bytes;
        self
    }

    /// The size of one part (default 8 MiB, at least 5 MiB).
    pub fn part_size(mut self, bytes: u64) -> Self {
        self.config.part_size = bytes;
        self
    }

    /// How many parts are uploaded at once (default 4).
    pub fn concurrency(mut self, parts: usize) -> Self {
        self.config.concurrency = parts;
        self
    }

    /// Attempts per request, the first included (default 4).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts;
        self
    }

    /// No new attempt of a request starts after this much time (default 30 s).
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.config.retry_budget = budget;
        self
    }

    /// All three time limits at once (see [`S3Config::timeouts`]).
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.config.timeouts = timeouts;
        self
    }

    /// The time allowed to open a connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeouts.connect = timeout;
        self
    }

    /// The time a request may go without receiving a byte (default 30 s).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeouts.read = timeout;
        self
    }

    /// The bound on one operation, every attempt included (default 120 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeouts.operation = timeout;
        self
    }

    /// Whether large conditional writes may be multipart uploads with a conditional
    /// completion (see [`S3Config::conditional_multipart`]; default: on for AWS, off
    /// with a custom endpoint).
    pub fn conditional_multipart(mut self, on: bool) -> Self {
        self.config.conditional_multipart = Some(on);
        self
    }

    /// Uses an existing client as it is configured (its region, endpoint, credentials
    /// and retries); the client settings of this builder are then ignored.
    pub fn client(mut self, client: aws_sdk_s3::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The settings so far.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Creates the backend, loading the AWS configuration unless a client was given.
    /// No request is sent: a missing bucket or bad credentials show on first use.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid settings.
    pub async fn build(self) -> Result<S3Backend> {
        let mut config = self.config;
        config.validate()?;
        let client = match self.client {
            Some(client) => {
                config.conditional_multipart.get_or_insert(true);
                client
            }
            None => {
                let (client, custom_endpoint) = make_client(&config).await;
                config.conditional_multipart.get_or_insert(!custom_endpoint);
                client
            }
        };
        Ok(S3Backend::with_client(client, config))
    }
}

/// Loads the AWS configuration as `aws-config` does and makes an S3 client from it;
/// also tells whether a custom endpoint URL is in use.
async fn make_client(config: &S3Config) -> (aws_sdk_s3::Client, bool) {
    // Retries are cairn's (see `S3Config::max_attempts`): one attempt per SDK call.
    let t = &config.timeouts;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(t.connect)
                .read_timeout(t.read)
                .operation_timeout(t.operation)
                .build(),
        );
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile).credentials_provider(
            ProfileFileCredentialsProvider::builder()
                .profile_name(profile)
                .build(),
        );
    }
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk = loader.load().await;
    let has_endpoint = sdk.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
    let mut s3 = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(config.force_path_style.unwrap_or(has_endpoint));
    if sdk.region().is_none() {
        s3 = s3.region(Region::from_static(DEFAULT_REGION));
    }
    (aws_sdk_s3::Client::from_conf(s3.build()), has_endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        let p = |u: &str| parse_s3_url(u).unwrap();
        assert_eq!(p("s3://b"), ("b".into(), "".into()));
        assert_eq!(p("s3://b/"), ("b".into(), "".into()));
        assert_eq!(p("s3://b/runs"), ("b".into(), "runs".into()));
        assert_eq!(p("s3://b/runs/v1/"), ("b".into(), "runs/v1".into()));
        for bad in [
            "gs://b/p",
            "s3://",
            "s3:///p",
            "s3://b/a/../c",
            "s3://b/p?x=1",
            "b/p",
        ] {
            let err = parse_s3_url(bad).unwrap_err();
            assert_eq!(err.kind(), cairn_backend::ErrorKind::Config, "{bad}: {err}");
        }
    }

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(normalize_prefix("/a/b/").unwrap(), "a/b");
        assert_eq!(normalize_prefix("/").unwrap(), "");
        assert!(normalize_prefix("a/./b").is_err());
    }

    #[test]
    fn parts_cover_the_payload_exactly() {
        const MIB: u64 = 1024 * 1024;
        let plan = plan_parts(20 * MIB, 8 * MIB);
        assert_eq!(
            plan,
            vec![0..8 * MIB, 8 * MIB..16 * MIB, 16 * MIB..20 * MIB]
        );
        assert_eq!(plan_parts(16 * MIB, 8 * MIB).len(), 2);
        assert_eq!(plan_parts(16 * MIB + 1, 8 * MIB).len(), 3);
        assert!(plan_parts(0, 8 * MIB).is_empty());
    }

    #[test]
    fn huge_objects_get_larger_parts() {
        const GIB: u64 = 1024 * 1024 * 1024;
        let len = 100 * GIB;
        let plan = plan_parts(len, DEFAULT_PART_SIZE);
        assert!(plan.len() as u64 <= MAX_PARTS, "{}", plan.len());
        assert_eq!(plan.last().unwrap().end, len);
        for w in plan.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
    }

    #[test]
    fn settings_are_validated() {
        let mut c = S3Config::new("bucket");
        c.prefix = "/p/".into();
        c.validate().unwrap();
        assert_eq!(c.prefix, "p");
        let bad = |f: &dyn Fn(&mut S3Config)| {
            let mut c = S3Config::new("bucket");
            f(&mut c);
            c.validate().unwrap_err()
        };
        bad(&|c| c.bucket = String::new());
        bad(&|c| c.bucket = "a/b".into());
        bad(&|c| c.part_size = 1024);
        bad(&|c| c.concurrency = 0);
        bad(&|c| c.max_attempts = 0);
        bad(&|c| c.timeouts.read = Duration::ZERO);
    }

    #[test]
    fn url_options_set_timeouts_and_attempts() {
        let c = S3Config::from_url(
            "s3://b/p?connect_timeout=1s&read_timeout=250ms&operation_timeout=1m&max_attempts=2&region=eu-west-1",
        )
        .unwrap();
        assert_eq!(c.timeouts.connect, Duration::from_secs(1));
        assert_eq!(c.timeouts.read, Duration::from_millis(250));
        assert_eq!(c.timeouts.operation, Duration::from_secs(60));
        assert_eq!(c.max_attempts, 2);
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        for bad in [
            "s3://b?read_timeout=fast",
            "s3://b?max_attempts=x",
            "s3://b?colour=red",
            "s3://b?x",
        ] {
            let e = S3Config::from_url(bad).unwrap_err();
            assert_eq!(e.kind(), cairn_backend::ErrorKind::Config, "{bad}: {e}");
        }
    }
}
