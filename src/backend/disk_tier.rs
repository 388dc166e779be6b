//! A bounded directory of verified object copies, shared by processes: the local tier
//! of a [`TieredBackend`](super::TieredBackend).

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind as IoKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{Error, Key, Result};

/// The default bound of a tier: 10 GiB.
pub const DEFAULT_TIER_BYTES: u64 = 10 << 30;

/// The first bytes of a copy. Copies made before the digest was XXH3-128
/// (`CAIRNTR1`, BLAKE3) fail it, and are deleted and fetched again like damaged ones.
const MAGIC: &[u8; 8] = b"CAIRNTR2";
/// The file holding the bytes of every copy, shared by the processes using the tier.
const TOTAL_FILE: &str = "total";
/// Temporary files older than this are left over by a killed process.
const STALE_TEMP: Duration = Duration::from_secs(600);

/// A directory of object copies with a size bound and least-recently-used eviction.
///
/// Each copy is one file, `v1/<store>/<ab>/<digest of the key>`, holding a header (the
/// key, the store's version of the object, its time, the XXH3-128 digest and length
/// of the bytes) and the bytes. A copy is written to `tmp/` and renamed into place, so a
/// reader sees a whole copy or none; every read checks the digest, and a copy that
/// fails is deleted and reported as absent.
///
/// Eviction does not scan the directory: each process keeps an index of the copies
/// (their sizes, and an order of use), built once from the directory when it first
/// inserts, and the processes sharing the directory keep its total in a small file,
/// `total`, updated under a file lock by every insert and eviction. An insert costs
/// O(log n): it adds its copy to the index and the total, and while the total is over
/// the bound deletes the copy this process used least recently. A read touches the
/// file's modification time (its recency for the next process that opens the tier)
/// and moves it to the end of this process's order. When this process's index has
/// nothing left to evict while the total is still over the bound (the other
/// processes' copies), it rebuilds its index from the directory and resets the total
/// to what it found, which also corrects any drift (a process killed between its
/// write and its count).
///
/// Several processes may share one directory. A copy deleted while another process
/// reads it stays readable to that process (an open file), and a copy deleted before
/// it is opened is a miss.
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
    index: Mutex<Index>,
}

/// This process's view of the tier's copies: their sizes and their order of use.
#[derive(Debug, Default)]
struct Index {
    loaded: bool,
    files: HashMap<PathBuf, (u64, u64)>,
    /// (stamp of last use, path), least recently used first.
    lru: BTreeSet<(u64, PathBuf)>,
    last_stamp: u64,
}

impl Index {
    /// A stamp later than every earlier one, from the clock when it moves forward.
    fn stamp(&mut self, at: SystemTime) -> u64 {
        let nanos = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.last_stamp = nanos.max(self.last_stamp + 1);
        self.last_stamp
    }

    fn put(&mut self, path: PathBuf, size: u64, stamp: u64) {
        if let Some((_, old)) = self.files.insert(path.clone(), (size, stamp)) {
            self.lru.remove(&(old, path.clone()));
        }
        self.lru.insert((stamp, path));
    }

    fn forget(&mut self, path: &Path) {
        if let Some((_, stamp)) = self.files.remove(path) {
            self.lru.remove(&(stamp, path.to_path_buf()));
        }
    }
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
                index: Mutex::default(),
            }),
        })
    }

    /// Bounds the tier to `max_bytes` (the copies' file sizes added up).
    pub fn with_max_bytes(self, max_bytes: u64) -> Self {
        DiskTier {
            inner: Arc::new(Inner {
                dir: self.inner.dir.clone(),
                max_bytes,
                index: Mutex::default(),
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
        let size = bytes.len() as u64;
        match decode(key, bytes) {
            Ok(copy) => {
                // Recency for eviction; a copy evicted meanwhile is simply gone.
                let now = SystemTime::now();
                if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(now);
                }
                let mut index = self.index();
                if index.loaded {
                    let stamp = index.stamp(now);
                    index.put(path, size, stamp);
                }
                Some(copy)
            }
            Err(reason) => {
                tracing::warn!(
                    "local tier: dropping the copy of '{key}' at {}: {reason}",
                    path.display()
                );
                self.delete(&path);
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
            self.delete(&path);
            return Ok(());
        }
        let tmp = self
            .inner
            .dir
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let size = (header.len() + body.len()) as u64;
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&header)?;
            f.write_all(&body)?;
            f.sync_data()?;
            std::fs::create_dir_all(path.parent().expect("a copy's path has a parent"))
        })();
        let mut index = self.index();
        // Published and counted under the total's lock, so the total stays exact.
        let published = written.and_then(|()| {
            self.with_total(|total| {
                let replaced = std::fs::metadata(&path).map_or(0, |m| m.len());
                std::fs::rename(&tmp, &path)?;
                *total = (*total + size).saturating_sub(replaced);
                Ok(())
            })
        });
        if let Err(e) = published {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        if !index.loaded {
            // The copy just written is found by the scan.
            self.rebuild(&mut index).map_err(io)?;
        } else {
            let stamp = index.stamp(SystemTime::now());
            index.put(path, size, stamp);
        }
        self.evict_locked(&mut index).map_err(io)?;
        Ok(())
    }

    /// Deletes the copy of `key`, if any.
    pub fn remove(&self, store: &str, key: &Key) {
        self.delete(&self.path_of(store, key));
    }

    /// Deletes one copy, and counts it out of the index and the total.
    fn delete(&self, path: &Path) {
        let _ = self.remove_counted(path);
        self.index().forget(path);
    }

    /// Removes one copy and subtracts its size from the total, under the total's
    /// lock; returns the bytes freed (0 when it was gone already).
    fn remove_counted(&self, path: &Path) -> std::io::Result<u64> {
        self.with_total(|total| {
            let size = match std::fs::metadata(path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == IoKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            match std::fs::remove_file(path) {
                Ok(()) => {
                    *total = total.saturating_sub(size);
                    Ok(size)
                }
                Err(e) if e.kind() == IoKind::NotFound => Ok(0), // another process evicted it
                Err(e) => Err(e),
            }
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.inner.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared total, read under its file lock.
    fn total(&self) -> std::io::Result<u64> {
        self.with_total(|total| Ok(*total))
    }

    /// Runs `f` on the shared total while holding its file lock (so that a change to
    /// the files and to their total happen as one), then writes it back.
    fn with_total<R>(&self, f: impl FnOnce(&mut u64) -> std::io::Result<R>) -> std::io::Result<R> {
        use std::io::{Read, Seek};
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.inner.dir.join(TOTAL_FILE))?;
        lock_exclusive(&file)?;
        let mut buf = [0u8; 8];
        let mut total = match file.read_exact(&mut buf) {
            Ok(()) => u64::from_le_bytes(buf),
            Err(e) if e.kind() == IoKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        let before = total;
        let out = f(&mut total);
        if total != before {
            file.seek(std::io::SeekFrom::Start(0))?;
            file.write_all(&total.to_le_bytes())?;
        }
        out
    }

    /// Rebuilds the index from the directory (recency from the files' modification
    /// times) and resets the shared total to what it found.
    fn rebuild(&self, index: &mut Index) -> std::io::Result<u64> {
        self.remove_stale_temps();
        let mut entries = self.with_total(|total| {
            let entries = self.entries()?;
            *total = entries.iter().map(|e| e.1).sum();
            Ok(entries)
        })?;
        entries.sort_by_key(|e| e.2);
        index.files.clear();
        index.lru.clear();
        let mut total = 0;
        for (path, size, mtime) in entries {
            total += size;
            let stamp = index.stamp(mtime);
            index.put(path, size, stamp);
        }
        // Later uses must rank after every file found.
        index.stamp(SystemTime::now());
        index.loaded = true;
        Ok(total)
    }

    /// Deletes this process's least recently used copies while the shared total is
    /// over the bound; rebuilds the index once when it runs out of copies to delete.
    fn evict_locked(&self, index: &mut Index) -> std::io::Result<u64> {
        let mut total = self.total()?;
        let mut freed = 0;
        let mut rebuilt = false;
        while total > self.inner.max_bytes {
            let Some((_, path)) = index.lru.pop_first() else {
                if rebuilt {
                    break;
                }
                rebuilt = true;
                total = self.rebuild(index)?;
                continue;
            };
            index.files.remove(&path);
            freed += self.remove_counted(&path)?;
            total = self.total()?;
        }
        Ok(freed)
    }

    /// The bytes the tier's copies take (their file sizes added up, from the
    /// directory).
    ///
    /// # Errors
    /// [`Error::Config`] when the tier cannot be read.
    pub fn usage(&self) -> Result<u64> {
        Ok(self.contents()?.1)
    }

    /// How many copies the tier holds and their bytes (from the directory).
    ///
    /// # Errors
    /// [`Error::Config`] when the tier cannot be read.
    pub fn contents(&self) -> Result<(u64, u64)> {
        let entries = self.entries().map_err(|e| self.config_error(e))?;
        Ok((entries.len() as u64, entries.iter().map(|e| e.1).sum()))
    }

    /// Deletes every copy (of every store) from the tier; the remote stores are not
    /// touched. Returns how many copies there were and their bytes.
    ///
    /// # Errors
    /// [`Error::Config`] when the tier cannot be emptied.
    pub fn clear(&self) -> Result<(u64, u64)> {
        let mut index = self.index();
        let found = self
            .with_total(|total| {
                let entries = self.entries()?;
                for sub in ["v1", "tmp"] {
                    let dir = self.inner.dir.join(sub);
                    match std::fs::remove_dir_all(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == IoKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                    std::fs::create_dir_all(&dir)?;
                }
                *total = 0;
                Ok((entries.len() as u64, entries.iter().map(|e| e.1).sum()))
            })
            .map_err(|e| self.config_error(e))?;
        index.files.clear();
        index.lru.clear();
        index.loaded = true;
        Ok(found)
    }

    /// Rebuilds this process's index from the directory, then deletes least recently
    /// used copies until the tier is within its bound, and temporary files a killed
    /// process left. Returns the bytes deleted.
    pub fn evict(&self) -> std::io::Result<u64> {
        let mut index = self.index();
        self.rebuild(&mut index)?;
        self.evict_locked(&mut index)
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

/// Takes an exclusive lock on `file`, held until it is closed (`flock`: processes
/// sharing the tier wait for each other).
#[cfg(unix)]
fn lock_exclusive(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor this open file owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != IoKind::Interrupted {
            return Err(e);
        }
    }
}

/// Without `flock`, the processes sharing a tier do not wait for each other: the
/// total can drift, and is corrected whenever a process rebuilds its index.
#[cfg(not(unix))]
fn lock_exclusive(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// magic, body length (u64), XXH3-128 of the body (16), modified (i64 ms), version
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
    h.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(body).to_le_bytes());
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
    let digest = u128::from_le_bytes(take(16)?.try_into().unwrap());
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
    if xxhash_rust::xxh3::xxh3_128(&body) != digest {
        return Err("digest mismatch".into());
    }
    Ok(TierCopy {
        version: (!version.is_empty()).then_some(version),
        last_modified: DateTime::from_timestamp_millis(millis).unwrap_or_default(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Key {
        Key::parse(format!("cache/v1/k{i}")).unwrap()
    }

    fn put(tier: &DiskTier, i: usize) {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        tier.insert("s3://b", &key(i), None, at, Bytes::from(vec![i as u8; 100]))
            .unwrap();
    }

    fn held(tier: &DiskTier) -> Vec<usize> {
        (0..10)
            .filter(|i| tier.path_of("s3://b", &key(*i)).exists())
            .collect()
    }

    /// Eviction follows the in-memory order of use, and after a reopen the order the
    /// files' modification times give; the bound holds throughout, also when the tier
    /// is reopened with a smaller one.
    #[test]
    fn eviction_keeps_the_most_recently_used_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let probe = DiskTier::new(dir.path()).unwrap();
        put(&probe, 9);
        let copy = probe.usage().unwrap();
        probe.clear().unwrap();
        let tier = DiskTier::new(dir.path()).unwrap().with_max_bytes(4 * copy);
        for i in 0..4 {
            put(&tier, i);
        }
        assert!(tier.get("s3://b", &key(0)).is_some()); // 0 is now the most recent
        put(&tier, 4);
        assert_eq!(
            held(&tier),
            [0, 2, 3, 4],
            "the least recently used goes first"
        );
        assert_eq!(tier.contents().unwrap(), (4, 4 * copy));
        drop(tier);

        // Recency on disk, as another process left it: 3 oldest, then 0, 4, 2.
        let base = SystemTime::now() - Duration::from_secs(1000);
        let reopened = DiskTier::new(dir.path()).unwrap().with_max_bytes(4 * copy);
        for (age, i) in [3, 0, 4, 2].into_iter().enumerate() {
            let f = std::fs::File::options()
                .write(true)
                .open(reopened.path_of("s3://b", &key(i)))
                .unwrap();
            f.set_modified(base + Duration::from_secs(age as u64))
                .unwrap();
        }
        assert!(reopened.get("s3://b", &key(3)).is_some()); // now the most recent
        put(&reopened, 5);
        assert_eq!(
            held(&reopened),
            [2, 3, 4, 5],
            "0 was the least recently used"
        );
        drop(reopened);

        // A smaller bound on reopening: the first insert brings the tier within it.
        let smaller = DiskTier::new(dir.path()).unwrap().with_max_bytes(2 * copy);
        put(&smaller, 6);
        assert_eq!(smaller.contents().unwrap(), (2, 2 * copy));
        assert!(held(&smaller).contains(&6));
        assert_eq!(smaller.total().unwrap(), 2 * copy, "the shared total");
    }

    /// A copy is read back whole; one made with BLAKE3 (`CAIRNTR1`, before the digest
    /// was XXH3-128) or with a flipped byte is deleted and reported absent.
    #[test]
    fn copies_of_the_older_format_or_damaged_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::new(dir.path()).unwrap();
        put(&tier, 1);
        let copy = tier.get("s3://b", &key(1)).expect("the copy just made");
        assert_eq!(copy.body, Bytes::from(vec![1u8; 100]));
        let path = tier.path_of("s3://b", &key(1));
        let good = std::fs::read(&path).unwrap();
        let mut older = good.clone();
        older[..8].copy_from_slice(b"CAIRNTR1");
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        for bad in [older, flipped] {
            std::fs::write(&path, &bad).unwrap();
            assert!(tier.get("s3://b", &key(1)).is_none());
            assert!(!path.exists(), "a bad copy is deleted");
        }
    }
}
