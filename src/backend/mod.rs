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
//! | any of these with `?cache_dir=/path[&cache_size=10GiB]` | [`TieredBackend`]: a local disk tier in front | always |

#[cfg(feature = "azure")]
mod azure;
mod disk_tier;
mod memory;
mod object_store_adapter;
mod tiered;

#[cfg(feature = "azure")]
pub use azure::AzureBuilder;
pub use cairn_backend::*;
#[cfg(feature = "gcs")]
pub use cairn_gcs::GcsBackend;
#[cfg(feature = "local")]
pub use cairn_local::LocalBackend;
#[cfg(feature = "s3")]
pub use cairn_s3::S3Backend;
pub use disk_tier::{DiskTier, TierCopy, DEFAULT_TIER_BYTES};
pub use memory::MemoryBackend;
pub use object_store_adapter::ObjectStoreBackend;
pub use tiered::{TierPolicy, TieredBackend};

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
    if let Some((base, query)) = url.split_once('?') {
        // The tier's options are taken out here; the rest belong to the store itself
        // (S3 and GCS read theirs: `read_timeout`, `max_attempts`, `endpoint`, ...).
        let (tier, own): (Vec<&str>, Vec<&str>) = query
            .split('&')
            .filter(|p| !p.is_empty())
            .partition(|p| p.starts_with("cache_dir=") || p.starts_with("cache_size="));
        let inner = if own.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", own.join("&"))
        };
        if !tier.is_empty() {
            return open_tiered(url, &inner, &tier).await;
        }
        let reads_options = ["s3://", "gs://", "gcs://"]
            .iter()
            .any(|scheme| base.starts_with(scheme));
        if !own.is_empty() && !reads_options {
            return Err(Error::Config {
                message: format!(
                    "'{url}': unknown store option '{}' (known here: cache_dir, cache_size)",
                    own[0]
                ),
            });
        }
        return open_plain(&inner).await;
    }
    open_plain(url).await
}

async fn open_plain(url: &str) -> Result<DynBackend> {
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

/// `URL?cache_dir=/path[&cache_size=N]`: the store at URL behind a local tier.
async fn open_tiered(url: &str, base: &str, options: &[&str]) -> Result<DynBackend> {
    let tier = tier_from_options(url, options)?;
    let remote = Box::pin(open_plain(base)).await?;
    Ok(Arc::new(TieredBackend::new(tier, remote)))
}

fn tier_from_options(url: &str, options: &[&str]) -> Result<DiskTier> {
    let bad = |reason: String| Error::Config {
        message: format!("'{url}': {reason}"),
    };
    let (mut dir, mut size) = (None, DEFAULT_TIER_BYTES);
    for pair in options {
        match pair.split_once('=') {
            Some(("cache_dir", d)) if !d.is_empty() => dir = Some(d.to_string()),
            Some(("cache_size", n)) => {
                size = parse_size(n).ok_or_else(|| {
                    bad(format!(
                        "cache_size '{n}' is not a size (such as 10GiB, 512MiB, 1000000)"
                    ))
                })?
            }
            _ => return Err(bad(format!("'{pair}' needs a value"))),
        }
    }
    let dir = dir.ok_or_else(|| bad("cache_size without cache_dir".into()))?;
    Ok(DiskTier::new(dir)?.with_max_bytes(size))
}

/// The local tier a store URL puts in front of its store (`?cache_dir=...`), if it
/// names one; the store itself is not opened. For tools that look after the tier
/// alone, such as `cairn clear --tier-only`.
///
/// # Errors
/// [`Error::Config`] for a bad `cache_size`, or a tier directory that cannot be
/// created.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let url = format!("s3://bucket/prefix?cache_dir={}&cache_size=1MiB", dir.path().display());
/// let tier = cairn::backend::tier_of_url(&url)?.unwrap();
/// assert_eq!((tier.dir(), tier.max_bytes()), (dir.path(), 1 << 20));
/// assert!(cairn::backend::tier_of_url("s3://bucket/prefix")?.is_none());
/// # Ok::<(), cairn::Error>(())
/// ```
pub fn tier_of_url(url: &str) -> Result<Option<DiskTier>> {
    let Some((_, query)) = url.split_once('?') else {
        return Ok(None);
    };
    let tier: Vec<&str> = query
        .split('&')
        .filter(|p| p.starts_with("cache_dir=") || p.starts_with("cache_size="))
        .collect();
    if tier.is_empty() {
        return Ok(None);
    }
    tier_from_options(url, &tier).map(Some)
}

/// `123`, `10KiB`, `512MiB`, `10GiB`.
fn parse_size(s: &str) -> Option<u64> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().ok()?;
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
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
