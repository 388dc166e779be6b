//! A bounded directory of verified object copies, shared by processes: the local tier
//! of a [`TieredBackend`](super::TieredBackend).

use std::io::{ErrorKind as IoKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{Error, Key, Result};

/// The default bound of a tier: 10 GiB.
pub const DEFAULT_TIER_BYTES: u64 = 10 << 30;

const MAGIC: &[u8; 8] = b"CAIRNTR1";
/// Temporary files older than this are left over by a killed process.
const STALE_TEMP: Duration = Duration::from_secs(600);

/// A directory of object copies with a size bound and least-recently-used eviction.
///
/// Each copy is one file, `v1/<store>/<ab>/<digest of the key>`, holding a header (the
/// key, the store's version of the object, its time, the BLAKE3 digest and length of
/// the bytes) and the bytes. A copy is written to `tmp/` and renamed into place, so a
/// reader sees a whole copy or none; every read checks the digest, and a copy that
/// fails is deleted and reported as absent.
///
/// Several processes may share one directory: a read touches the file's modification
/// time (its recency), and after every insert the inserting process scans the tier and
/// deletes the least recently used copies until the total is within the bound. A copy
/// deleted while another process reads it stays readable to that process (an open
/// file), and a copy deleted before it is opened is a miss.
///
/// ```
/// use cairn::backend::{DiskTier, Key};
/// let dir = tempfile::tempdir().unwrap();
/// let tier = DiskTier::new(dir.path())?.with_max_bytes(1 << 20);
/// let key = Key::parse("cache/v1/k")?;
/// tier.insert("s3://b", &key, Some("v1"), chrono::Utc::now(), b"hello".as_slice().into())?;
/// let copy = tier.get("s3://b", &key).unwrap();
/// assert_eq!((&copy.body[..], copy.version.as_deref()), (&b"hello"[..], Some("v1")));
/// assert!(tier.get("gs://other", &key).is_none()); // one namespace per remote store
/// tier.clear()?;
/// assert!(tier.get("s3://b", &key).is_none());
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DiskTier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    max_bytes: u64,
}

/// A verified copy from the tier.
#[derive(Debug, Clone)]
pub struct TierCopy {
    /// The store's version of the object when it was copied.
    pub version: Option<String>,
    /// The object's modification time in the store.
    pub last_modified: DateTime<Utc>,
    /// The object's bytes.
    pub body: Bytes,
}

impl DiskTier {
    /// A tier in `dir` (created if missing), bounded by [`DEFAULT_TIER_BYTES`].
    ///
    /// # Errors
    /// [`Error::Config`] naming the directory when it cannot be created.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        for sub in ["v1", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| Error::Config {
                message: format!("cannot create the local tier {}: {e}", dir.display()),
            })?;
        }
        Ok(DiskTier {
            inner: Arc::new(Inner {
                dir,
                max_bytes: DEFAULT_TIER_BYTES,
            }),
        })
    }

    /// Bounds the tier to `max_bytes` (the copies' file sizes added up).
    pub fn with_max_bytes(self, max_bytes: u64) -> Self {
        DiskTier {
            inner: Arc::new(Inner {
                dir: self.inner.dir.clone(),
                max_bytes,
            }),
        }
    }

    /// The tier's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The tier's bound in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Where the copy of `key` of the store named `store` lives.
    pub fn path_of(&self, store: &str, key: &Key) -> PathBuf {
        let ns = blake3::hash(store.as_bytes()).to_hex();
        let name = blake3::hash(key.as_str().as_bytes()).to_hex();
        self.inner
            .dir
            .join("v1")
            .join(&ns[..16])
            .join(&name[..2])
            .join(&name[2..])
    }

    /// The verified copy of `key`, if the tier has one. A copy that fails its check
    /// is deleted. A hit makes the copy the most recently used.
    pub fn get(&self, store: &str, key: &Key) -> Option<TierCopy> {
        let path = self.path_of(store, key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => Bytes::from(b),
            Err(e) if e.kind() == IoKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("local tier: cannot read {}: {e}", path.display());
                return None;
            }
        };
        match decode(key, bytes) {
            Ok(copy) => {
                // Recency for eviction; a copy evicted meanwhile is simply gone.
                if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(copy)
            }
            Err(reason) => {
                tracing::warn!(
                    "local tier: dropping the copy of '{key}' at {}: {reason}",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a copy of `key` atomically, then evicts down to the bound. A value larger
    /// than the whole bound is not stored.
    ///
    /// # Errors
    /// [`Error::Other`] naming the tier's path when the file system fails.
    pub fn insert(
        &self,
        store: &str,
        key: &Key,
        version: Option<&str>,
        last_modified: DateTime<Utc>,
        body: Bytes,
    ) -> Result<()> {
        let path = self.path_of(store, key);
        let io =
            |e: std::io::Error| Error::other(self.inner.dir.display().to_string(), key.as_str(), e);
        let header = encode_header(key, version, last_modified, &body);
        if (header.len() + body.len()) as u64 > self.inner.max_bytes {
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        let tmp = self
            .inner
            .dir
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&header)?;
            f.write_all(&body)?;
            f.sync_data()?;
            std::fs::create_dir_all(path.parent().expect("a copy's path has a parent"))?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        self.evict().map_err(io)?;
        Ok(())
    }

    /// Deletes the copy of `key`, if any.
    pub fn remove(&self, store: &str, key: &Key) {
        let _ = std::fs::remove_file(self.path_of(store, key));
    }

    /// The bytes the tier's copies take (their file sizes added up).
    ///
    /// # Errors
    /// [`Error::Config`] when the tier cannot be read.
    pub fn usage(&self) -> Result<u64> {
        Ok(self
            .entries()
            .map_err(|e| self.config_error(e))?
            .iter()
            .map(|e| e.1)
            .sum())
    }

    /// Deletes every copy (of every store) from the tier; the remote stores are not
    /// touched.
    ///
    /// # Errors
    /// [`Error::Config`] when the tier cannot be emptied.
    pub fn clear(&self) -> Result<()> {
        for sub in ["v1", "tmp"] {
            let dir = self.inner.dir.join(sub);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == IoKind::NotFound => {}
                Err(e) => return Err(self.config_error(e)),
            }
            std::fs::create_dir_all(&dir).map_err(|e| self.config_error(e))?;
        }
        Ok(())
    }

    /// Deletes least recently used copies until the tier is within its bound, and
    /// temporary files a killed process left. Returns the bytes deleted.
    pub fn evict(&self) -> std::io::Result<u64> {
        self.remove_stale_temps();
        let mut entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        if total <= self.inner.max_bytes {
            return Ok(0);
        }
        entries.sort_by_key(|e| e.2);
        let mut freed = 0;
        for (path, size, _) in entries {
            if total <= self.inner.max_bytes {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => freed += size,
                Err(e) if e.kind() == IoKind::NotFound => {} // another process evicted it
                Err(e) => return Err(e),
            }
            total -= size;
        }
        Ok(freed)
    }

    fn config_error(&self, e: std::io::Error) -> Error {
        Error::Config {
            message: format!("local tier {}: {e}", self.inner.dir.display()),
        }
    }

    /// Every copy: path, size, modification time.
    fn entries(&self) -> std::io::Result<Vec<(PathBuf, u64, SystemTime)>> {
        let mut out = Vec::new();
        let mut stack = vec![self.inner.dir.join("v1")];
        while let Some(dir) = stack.pop() {
            let read = match std::fs::read_dir(&dir) {
                Ok(r) => r,
                Err(e) if e.kind() == IoKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in read {
                let Ok(entry) = entry else { continue };
                let Ok(meta) = entry.metadata() else { continue }; // evicted meanwhile
                if meta.is_dir() {
                    stack.push(entry.path());
                } else {
                    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push((entry.path(), meta.len(), mtime));
                }
            }
        }
        Ok(out)
    }

    fn remove_stale_temps(&self) {
        let Ok(read) = std::fs::read_dir(self.inner.dir.join("tmp")) else {
            return;
        };
        let now = SystemTime::now();
        for entry in read.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TEMP);
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// magic, body length (u64), BLAKE3 of the body (32), modified (i64 ms), version
/// length (u16) and bytes, key length (u16) and bytes.
fn encode_header(
    key: &Key,
    version: Option<&str>,
    last_modified: DateTime<Utc>,
    body: &[u8],
) -> Vec<u8> {
    let version = version.unwrap_or("");
    let mut h = Vec::with_capacity(64 + version.len() + key.as_str().len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(body.len() as u64).to_le_bytes());
    h.extend_from_slice(blake3::hash(body).as_bytes());
    h.extend_from_slice(&last_modified.timestamp_millis().to_le_bytes());
    h.extend_from_slice(&(version.len() as u16).to_le_bytes());
    h.extend_from_slice(version.as_bytes());
    h.extend_from_slice(&(key.as_str().len() as u16).to_le_bytes());
    h.extend_from_slice(key.as_str().as_bytes());
    h
}

fn decode(key: &Key, bytes: Bytes) -> std::result::Result<TierCopy, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> std::result::Result<&[u8], String> {
        let s = bytes
            .get(at..at + n)
            .ok_or_else(|| "cut short".to_string())?;
        at += n;
        Ok(s)
    };
    if take(8)? != MAGIC {
        return Err("bad magic".into());
    }
    let len = u64::from_le_bytes(take(8)?.try_into().unwrap());
    let digest: [u8; 32] = take(32)?.try_into().unwrap();
    let millis = i64::from_le_bytes(take(8)?.try_into().unwrap());
    let vlen = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
    let version = String::from_utf8(take(vlen)?.to_vec()).map_err(|_| "bad version")?;
    let klen = u16::from_le_bytes(take(2)?.try_into().unwrap()) as usize;
    if take(klen)? != key.as_str().as_bytes() {
        return Err("another key's copy".into());
    }
    let body = bytes.slice(at..);
    if body.len() as u64 != len {
        return Err(format!("{} bytes instead of {len}", body.len()));
    }
    if blake3::hash(&body).as_bytes() != &digest {
        return Err("digest mismatch".into());
    }
    Ok(TierCopy {
        version: (!version.is_empty()).then_some(version),
        last_modified: DateTime::from_timestamp_millis(millis).unwrap_or_default(),
        body,
    })
}
