//! Configuration of an [`S3Backend`]: the builder, `s3://` URLs and multipart planning.

use std::ops::Range;

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::Region;
use cairn_backend::{Error, Key, Result};

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
    /// Attempts per request, the first included (the SDK's standard retry strategy,
    /// exponential backoff with jitter).
    pub max_attempts: u32,
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
            conditional_multipart: None,
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
            "'{url}': s3:// URLs take no query or fragment; use the builder for options"
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
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts));
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
    }
}
