//! Raw object I/O: the [`Backend`] trait and every backend cairn ships.
//!
//! | URL | backend | feature |
//! |---|---|---|
//! | `memory://` | [`MemoryBackend`] (in-process, the default) | always |
//! | `file:///path` or a plain path | `LocalBackend` | `local` (default) |
//! | `s3://bucket/prefix` | `S3Backend` | `s3` |
//! | `gs://bucket/prefix` | `GcsBackend` | `gcs` |
//! | `az://container/prefix` (`azure://`, `abfs://`, `abfss://`) | `AzureBuilder` (an [`ObjectStoreBackend`]) | `azure` |
//! | any `object_store::ObjectStore` | [`ObjectStoreBackend`] | always |

#[cfg(feature = "azure")]
mod azure;
mod memory;
mod object_store_adapter;

#[cfg(feature = "azure")]
pub use azure::AzureBuilder;
pub use cairn_backend::*;
#[cfg(feature = "gcs")]
pub use cairn_gcs::GcsBackend;
#[cfg(feature = "local")]
pub use cairn_local::LocalBackend;
#[cfg(feature = "s3")]
pub use cairn_s3::S3Backend;
pub use memory::MemoryBackend;
pub use object_store_adapter::ObjectStoreBackend;

use std::sync::Arc;

/// Opens the backend a URL names (see the table above).
///
/// # Errors
/// [`Error::Config`] for an unknown scheme or a scheme whose feature is not built in;
/// the backend's own errors (a missing bucket, missing credentials) otherwise.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let backend = cairn::backend::open("memory://").await?;
/// assert!(backend.describe().starts_with("memory://")); // memory://<n>: one per store
/// assert!(cairn::backend::open("ftp://host/x").await.is_err());
/// # Ok::<(), cairn::Error>(()) }).unwrap();
/// ```
pub async fn open(url: &str) -> Result<DynBackend> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("memory") => Ok(Arc::new(MemoryBackend::new())),
        Some("file") | None => open_local(url.strip_prefix("file://").unwrap_or(url)),
        Some("s3") => open_s3(url).await,
        Some("gs") | Some("gcs") => open_gcs(url).await,
        Some("az" | "azure" | "abfs" | "abfss" | "adl") => open_azure(url),
        Some(other) => Err(Error::Config {
            message: format!(
                "unknown store URL scheme '{other}://' in '{url}' (known: memory://, file://, s3://, gs://, az://)"
            ),
        }),
    }
}

#[cfg(feature = "local")]
fn open_local(path: &str) -> Result<DynBackend> {
    if path.is_empty() {
        return Err(Error::Config {
            message: "a local store needs a directory path".into(),
        });
    }
    Ok(Arc::new(LocalBackend::new(path)?))
}

#[cfg(not(feature = "local"))]
fn open_local(path: &str) -> Result<DynBackend> {
    Err(missing_feature("local", path))
}

#[cfg(feature = "s3")]
async fn open_s3(url: &str) -> Result<DynBackend> {
    Ok(Arc::new(S3Backend::from_url(url).await?))
}

#[cfg(not(feature = "s3"))]
async fn open_s3(url: &str) -> Result<DynBackend> {
    Err(missing_feature("s3", url))
}

#[cfg(feature = "gcs")]
async fn open_gcs(url: &str) -> Result<DynBackend> {
    Ok(Arc::new(GcsBackend::from_url(url).await?))
}

#[cfg(not(feature = "gcs"))]
async fn open_gcs(url: &str) -> Result<DynBackend> {
    Err(missing_feature("gcs", url))
}

#[cfg(feature = "azure")]
fn open_azure(url: &str) -> Result<DynBackend> {
    Ok(Arc::new(AzureBuilder::from_url(url)?.build()?))
}

#[cfg(not(feature = "azure"))]
fn open_azure(url: &str) -> Result<DynBackend> {
    Err(missing_feature("azure", url))
}

#[allow(dead_code)]
fn missing_feature(feature: &str, url: &str) -> Error {
    Error::Config {
        message: format!("'{url}' needs cairn built with the '{feature}' feature"),
    }
}
