//! Azure Blob Storage through `object_store`'s Azure client (feature `azure`).

use std::sync::Arc;

use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

use super::{Capabilities, Error, ObjectStoreBackend, Result};

/// Builds a backend on an Azure Blob Storage container, configured like every
/// `object_store` Azure client: from the environment (`AZURE_STORAGE_ACCOUNT_NAME`,
/// `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_KEY`, `AZURE_STORAGE_CLIENT_ID` /
/// `_SECRET` / `AZURE_STORAGE_TENANT_ID`, `AZURE_STORAGE_ENDPOINT`, ...), and for the
/// Azurite emulator `AZURE_STORAGE_USE_EMULATOR=true` with `AZURITE_BLOB_STORAGE_URL`
/// (default `http://127.0.0.1:10000`).
///
/// URLs: `az://container/prefix`, `azure://container/prefix`, `abfs://container/prefix`,
/// `abfss://container@account.dfs.core.windows.net/prefix`.
///
/// `Create` is a put with `If-None-Match: *` and `IfMatch` a put with `If-Match`, both
/// decided by the service; every put is a single Put Blob request (up to 5,000 MiB), so
/// the preconditions hold for values of any size. A missing container is
/// [`Error::BucketNotFound`]; other errors name the URL and the key.
///
/// ```
/// use cairn::backend::{AzureBuilder, Backend};
/// // The account and key usually come from the environment; given here explicitly.
/// let backend = AzureBuilder::from_url("az://results/team-a")?
///     .option("account_name", "devstoreaccount1")
///     .option("account_key", "a2V5")
///     .build()?;
/// assert_eq!(backend.describe(), "az://results/team-a");
/// assert!(AzureBuilder::from_url("az://")?.build().is_err());
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AzureBuilder {
    url: String,
    container: String,
    prefix: String,
    options: Vec<(String, String)>,
}

impl AzureBuilder {
    /// A builder for `container` with no key prefix.
    pub fn new(container: impl Into<String>) -> Self {
        let container = container.into();
        AzureBuilder {
            url: format!("az://{container}"),
            container,
            prefix: String::new(),
            options: Vec::new(),
        }
    }

    /// A builder for the container and prefix an `az://`, `azure://`, `abfs://` or
    /// `abfss://` URL names.
    ///
    /// # Errors
    /// [`Error::Config`] for a URL that is not one of these.
    pub fn from_url(url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::Config {
            message: format!("'{url}' is not an Azure Blob Storage URL: {reason}"),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        if !matches!(scheme, "az" | "azure" | "abfs" | "abfss" | "adl") {
            return Err(bad(
                "the scheme must be az://, azure://, abfs:// or abfss://",
            ));
        }
        let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // abfs[s]://container@account.dfs.core.windows.net/prefix
        let (container, account) = match host.split_once('@') {
            Some((c, h)) => (c, h.split('.').next()),
            None => (host, None),
        };
        let mut builder = AzureBuilder::new(container);
        builder.url = format!("{scheme}://{}", rest.trim_end_matches('/'));
        builder.prefix = prefix.trim_matches('/').to_string();
        if let Some(account) = account {
            builder = builder.option("account_name", account);
        }
        Ok(builder)
    }

    /// Keys are stored below this prefix (`/`-separated, no leading `/`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_matches('/').to_string();
        self.url = match self.prefix.as_str() {
            "" => format!("az://{}", self.container),
            p => format!("az://{}/{p}", self.container),
        };
        self
    }

    /// Sets one of `object_store`'s Azure options by name (`account_name`,
    /// `account_key`, `use_emulator`, `endpoint`, `sas_key`, ...), over the environment.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// Builds the backend. No request is sent: a missing container or bad credentials
    /// show on the first operation, as [`Error::BucketNotFound`] or
    /// [`Error::PermissionDenied`].
    ///
    /// # Errors
    /// [`Error::Config`] for an empty container name, an unknown option or a
    /// configuration `object_store` refuses (no account, say).
    pub fn build(self) -> Result<ObjectStoreBackend> {
        let config = |reason: String| Error::Config {
            message: format!("Azure store '{}': {reason}", self.url),
        };
        if self.container.is_empty() {
            return Err(config("no container name".into()));
        }
        let mut azure = MicrosoftAzureBuilder::from_env().with_container_name(&self.container);
        for (key, value) in &self.options {
            let key: AzureConfigKey = key
                .parse()
                .map_err(|e| config(format!("option '{key}': {e}")))?;
            azure = azure.with_config(key, value);
        }
        let store = azure.build().map_err(|e| config(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match self.prefix.as_str() {
            "" => Arc::new(store),
            p => Arc::new(PrefixStore::new(store, p)),
        };
        let emulator = std::env::var("AZURE_STORAGE_USE_EMULATOR").is_ok_and(|v| v == "true")
            || self
                .options
                .iter()
                .any(|(k, v)| k.contains("use_emulator") && v == "true");
        Ok(ObjectStoreBackend::new(store, self.url.clone())
            .with_capabilities(capabilities(emulator))
            .with_missing_bucket(self.container, "<Code>ContainerNotFound</Code>"))
    }
}

/// What Azure Blob Storage (and Azurite) can do through the adapter.
fn capabilities(emulator: bool) -> Capabilities {
    let mut gaps = vec!["user metadata is not passed through the object_store adapter".into()];
    if emulator {
        gaps.push(
            "Azurite keeps blobs in memory (--inMemoryPersistence) and accepts any API \
             version (--skipApiVersionCheck); behaviour beyond Put/Get/List Blob with \
             If-Match / If-None-Match is not exercised"
                .into(),
        );
    }
    Capabilities {
        create: true,
        if_match: true,
        // object_store sends every put as one Put Blob request with the precondition.
        conditional_large_writes: true,
        user_metadata: false,
        multipart_threshold: None,
        // List Blobs returns at most 5,000 names per request.
        list_page_size: 5000,
        gaps,
    }
}
