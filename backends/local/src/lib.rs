//! The local-disk backend of cairn.
//!
//! Objects are plain files below a root directory, at exactly their key, so other
//! tools read them as they are. Every write is staged and published by one atomic
//! step:
//!
//! - `Create`: on Linux, staged in a file without a name (`O_TMPFILE`) in the
//!   destination's directory and given its name by `linkat(2)`, which fails if the name
//!   exists, so of several concurrent creators exactly one wins; elsewhere (or on a
//!   filesystem without unnamed files) staged in a hidden file beside its destination
//!   (`.cairn-staged.<name>.<id>`) and published by `renameat2(RENAME_NOREPLACE)` or
//!   `link(2)`, which refuse an existing name the same way;
//! - `Overwrite`: staged in a hidden file and `rename(2)`d over the destination;
//! - `IfMatch(version)`: staged in a hidden file, the version checked and the file
//!   renamed while holding an exclusive `flock(2)` on the parent directory, which
//!   every cairn publish in that directory takes.
//!
//! With [`LocalBackend::with_fsync`] (on by default) the staged file is synced before it
//! is published and the directory after, so a published object survives a power cut.
//! A writer that is killed leaves at most a hidden staged file (an unnamed one goes
//! with its process), which reads and listings ignore and
//! [`LocalBackend::clean_staged`] removes.
//!
//! ```
//! # async fn demo() -> cairn_backend::Result<()> {
//! use cairn_backend::{BackendExt, Key, PutMode};
//! use cairn_local::LocalBackend;
//!
//! let dir = std::env::temp_dir().join(format!("cairn-doc-{}", std::process::id()));
//! let store = LocalBackend::new(&dir)?;
//! let key = Key::parse("reports/monday.txt")?;
//! store.put(&key, "hello".into()).await?;
//! assert_eq!(&store.get(&key).await?[..], b"hello");
//! let again = store.put_mode(&key, "other".into(), PutMode::Create).await;
//! assert!(again.is_err()); // already exists
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
#![warn(missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use cairn_backend::{
    check_head, is_staged_name, resolve_range, Backend, Capabilities, Error, GetRange, GetResult,
    HeadMaker, Inspector, Key, MakeInspector, ObjectMeta, PutMode, PutOptions, PutPayload,
    PutResult, ReadWants, Result, StagedObject,
};
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};

mod path;
mod publish;
mod read;

use path::FileStat;
use read::{read_inspected, read_range};

/// Reads larger than this are streamed in chunks of this size; smaller ones are
/// returned as one buffer read in a single call.
const READ_CHUNK: u64 = 64 * 1024 * 1024;

/// Objects as files below a root directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// The same, as every object's path starts with it.
    path_root: path::Root,
    url: String,
    fsync: bool,
    inline_read_limit: u64,
    /// Whether `Create` writes are staged in unnamed files: [`UNNAMED_UNKNOWN`] until
    /// the first one tries.
    unnamed: AtomicU8,
    /// Whether reads open files with `O_NOATIME`: until the first file the kernel
    /// refuses it on ([`LocalBackend::with_access_times`]).
    noatime: AtomicBool,
}

const UNNAMED_UNKNOWN: u8 = 0;
const UNNAMED_YES: u8 = 1;
const UNNAMED_NO: u8 = 2;

/// Reads of at most this many bytes run on the calling task by default.
pub const DEFAULT_INLINE_READ_LIMIT: u64 = 64 << 10;

static STAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalBackend {
    /// A backend rooted at `root`, which is created if it does not exist. A leading
    /// `~` is the home directory ([`cairn_backend::expand_home`]).
    ///
    /// # Errors
    /// [`Error::Config`] naming the directory and the operating system's reason when it
    /// cannot be created; [`Error::BucketNotFound`] when it is not a directory.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = cairn_backend::expand_home(root);
        fs::create_dir_all(&root).map_err(|e| Error::Config {
            message: format!(
                "cannot create the local store's directory '{}': {e}",
                root.display()
            ),
        })?;
        Self::open_existing(root)
    }

    /// A backend rooted at an existing directory.
    ///
    /// # Errors
    /// [`Error::BucketNotFound`] when `root` does not exist or is not a directory.
    pub fn open_existing(root: impl AsRef<Path>) -> Result<Self> {
        let root = cairn_backend::expand_home(root);
        let root = root.as_path();
        let url = file_url(root);
        let root = match fs::canonicalize(root) {
            Ok(r) if r.is_dir() => r,
            _ => {
                return Err(Error::BucketNotFound {
                    backend: url,
                    bucket: root.display().to_string(),
                })
            }
        };
        // A canonical path comes from the system and holds no NUL; checked all the same.
        let path_root = path::Root::new(&root).map_err(|e| Error::Config {
            message: format!("local store root '{}': {e}", root.display()),
        })?;
        Ok(LocalBackend {
            inner: Arc::new(Inner {
                url: file_url(&root),
                root,
                path_root,
                fsync: true,
                inline_read_limit: DEFAULT_INLINE_READ_LIMIT,
                unnamed: AtomicU8::new(UNNAMED_UNKNOWN),
                noatime: AtomicBool::new(true),
            }),
        })
    }

    /// Whether published objects are synced to disk (default: yes). Without fsync a
    /// write is still atomic for readers, but may be lost in a power cut.
    pub fn with_fsync(self, fsync: bool) -> Self {
        self.with_inner(|inner| inner.fsync = fsync)
    }

    /// Whether reading an object may update its file's access time (default: no).
    ///
    /// On Linux, cairn opens the files it reads with `O_NOATIME`, so that a read never
    /// writes: under the usual `relatime` mount option the first read of a file after
    /// it was written, and then one a day, would otherwise dirty its inode, and with
    /// random reads over a large store that write-back costs more than the reads.
    /// cairn keeps its own record of use ("Used" in the README) and needs no access
    /// times. The kernel allows the flag only on files the process owns (or with
    /// `CAP_FOWNER`); the first file it is refused on (`EPERM`) is opened again
    /// without it, and the backend then stops asking. Set `true` where another tool
    /// judges the files by their access times (a `tmpfiles` age, say).
    pub fn with_access_times(self, update: bool) -> Self {
        self.with_inner(|inner| *inner.noatime.get_mut() = !update)
    }

    /// A backend on the same root with `change` made to a copy of its settings.
    fn with_inner(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner {
            root: self.inner.root.clone(),
            path_root: self.inner.path_root.clone(),
            url: self.inner.url.clone(),
            fsync: self.inner.fsync,
            inline_read_limit: self.inner.inline_read_limit,
            unnamed: AtomicU8::new(self.inner.unnamed.load(Ordering::Relaxed)),
            noatime: AtomicBool::new(self.inner.noatime.load(Ordering::Relaxed)),
        };
        change(&mut inner);
        LocalBackend {
            inner: Arc::new(inner),
        }
    }

    /// Reads of at most `limit` bytes (default 64 KiB) open and read the file on the
    /// calling task instead of handing the work to tokio's blocking pool: on a local
    /// disk that takes a few microseconds, several times less than the hand-off, and
    /// it is what makes a small cache hit fast. Larger reads always go to the pool.
    /// While `limit` is not 0, `head` (one `stat`) runs on the calling task too.
    /// The same limit applies to writes on a backend without fsync
    /// ([`LocalBackend::with_fsync`]`(false)`); a write that syncs always goes to the
    /// pool. Set 0 on a network filesystem, where an open or a `stat` may stall.
    pub fn with_inline_reads(self, limit: u64) -> Self {
        self.with_inner(|inner| inner.inline_read_limit = limit)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The file an object is stored in.
    pub fn path_of(&self, key: &Key) -> PathBuf {
        self.inner.root.join(key.as_str())
    }

    /// Removes staged files (left by writers that were killed) that were last modified
    /// more than `older_than` ago, and returns how many were removed. Staged files of
    /// writes still in progress are younger than any sensible `older_than`.
    pub async fn clean_staged(&self, older_than: Duration) -> Result<usize> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut removed = 0;
            let cutoff = SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let mut dirs = vec![inner.root.clone()];
            while let Some(dir) = dirs.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(&inner.url, "", e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| io_error(&inner.url, "", e))?;
                    let ft = entry.file_type().map_err(|e| io_error(&inner.url, "", e))?;
                    let name = entry.file_name();
                    if ft.is_dir() {
                        dirs.push(entry.path());
                    } else if is_staged_name(&name.to_string_lossy()) {
                        let modified = entry.metadata().and_then(|m| m.modified());
                        if matches!(modified, Ok(t) if t <= cutoff)
                            && fs::remove_file(entry.path()).is_ok()
                        {
                            removed += 1;
                        }
                    }
                }
            }
            Ok(removed)
        })
        .await
    }
}

/// Writes every chunk in order with as few `writev` calls as the kernel allows (one,
/// for a record's header and payload), resuming after a short write.
fn write_chunks(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    // The kernel takes at most IOV_MAX (1024 on Linux) slices per call.
    const MAX_SLICES: usize = 1024;
    let mut slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    io::IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        let n = rest.len().min(MAX_SLICES);
        match file.write_vectored(&rest[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => io::IoSlice::advance_slices(&mut rest, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn file_url(root: &Path) -> String {
    format!("file://{}", root.display())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(Error::other("file://", "", e)),
    }
}

fn io_error(url: &str, key: &str, e: io::Error) -> Error {
    // ENAMETOOLONG (Linux 36, macOS and the BSDs 63): no object can have this key here.
    let name_too_long = if cfg!(target_os = "linux") { 36 } else { 63 };
    if e.raw_os_error() == Some(name_too_long) {
        return Error::InvalidKey {
            key: key.into(),
            reason: format!("a path segment is longer than {url} allows ({e})"),
        };
    }
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            backend: url.into(),
            key: key.into(),
        },
        io::ErrorKind::AlreadyExists => Error::AlreadyExists {
            backend: url.into(),
            key: key.into(),
        },
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            backend: url.into(),
            key: key.into(),
            source: e.into(),
        },
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Error::Unavailable {
                backend: url.into(),
                key: key.into(),
                source: e.into(),
            }
        }
        _ => Error::other(url, key, e),
    }
}

/// A version string that changes with every publish: each publish is a new inode, and
/// the modification time and size disambiguate reused inode numbers.
fn version_of(stat: &FileStat) -> String {
    version_string(stat.ino, stat.mtime, stat.mtime_nsec, stat.size)
}

/// `{ino:x}-{mtime:x}.{nsec:x}-{size:x}`, written without the formatting machinery
/// (it is built on every read).
fn version_string(ino: u64, mtime: i64, nsec: i64, size: u64) -> String {
    fn hex(out: &mut Vec<u8>, v: u64) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 16];
        let mut i = buf.len();
        let mut v = v;
        loop {
            i -= 1;
            buf[i] = DIGITS[(v & 0xf) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        out.extend_from_slice(&buf[i..]);
    }
    let mut out = Vec::with_capacity(67);
    hex(&mut out, ino);
    out.push(b'-');
    // `{:x}` of a signed integer prints its two's complement bits.
    hex(&mut out, mtime as u64);
    out.push(b'.');
    hex(&mut out, nsec as u64);
    out.push(b'-');
    hex(&mut out, size);
    String::from_utf8(out).expect("hex digits and separators are ASCII")
}

fn full_meta(key: &Key, stat: &FileStat) -> ObjectMeta {
    object_meta(key.clone(), stat)
}

fn object_meta(key: Key, stat: &FileStat) -> ObjectMeta {
    ObjectMeta {
        key,
        size: stat.size,
        last_modified: DateTime::from_timestamp(stat.mtime, stat.mtime_nsec as u32)
            .unwrap_or_default(),
        version: Some(version_of(stat)),
        metadata: Default::default(),
    }
}

/// An exclusive `flock` on a directory, released on drop.
struct DirLock(File);

impl DirLock {
    fn acquire(dir: &Path) -> io::Result<Self> {
        let file = File::open(dir)?;
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirLock(file))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the descriptor would release it anyway.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&self.0), libc::LOCK_UN) };
    }
}

/// The directory of `dest`, the path of the key `k` below the root: `dest` up to the
/// key's last `/` (cut from the key, which `dest` ends with, rather than parsed out of
/// the path again); `None` for a key at the root.
fn parent_of<'a>(dest: &'a Path, k: &str) -> Option<&'a Path> {
    use std::os::unix::ffi::OsStrExt;
    let slash = k.rfind('/')?;
    let bytes = dest.as_os_str().as_bytes();
    let cut = bytes.len() - (k.len() - slash);
    Some(Path::new(std::ffi::OsStr::from_bytes(&bytes[..cut])))
}

/// A staged file that is removed on drop unless it was published; an unnamed one
/// (`path` is `None`) goes with its descriptor.
struct Staged {
    path: Option<PathBuf>,
    published: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let (Some(path), false) = (&self.path, self.published) {
            let _ = fs::remove_file(path);
        }
    }
}

impl Inner {
    /// `NotFound` for key (or prefix) `k` in this store.
    fn not_found(&self, k: &str) -> Error {
        Error::NotFound {
            backend: self.url.clone(),
            key: k.into(),
        }
    }

    /// An object's metadata, read by one `stat` on the calling thread.
    fn head_now(&self, key: Key) -> Result<ObjectMeta> {
        match path::with_key_path(&self.path_root, &key, path::stat_key_path) {
            Ok(m) if m.is_file => Ok(object_meta(key, &m)),
            Ok(_) => Err(self.not_found(key.as_str())),
            Err(e) => Err(self.check_root(io_error(&self.url, key.as_str(), e))),
        }
    }

    /// A missing object below a missing root is a missing bucket, not a miss.
    fn check_root(&self, e: Error) -> Error {
        if e.is_not_found() && !self.root.is_dir() {
            return Error::BucketNotFound {
                backend: self.url.clone(),
                bucket: self.root.display().to_string(),
            };
        }
        e
    }

    fn put_blocking(&self, key: &Key, payload: PutPayload, how: Publish) -> Result<PutResult> {
        self.put_blocking_with(key, how, |file| write_chunks(file, payload.chunks()))
    }

    /// [`Inner::put_blocking`] of a framed write: the body is written at its offset
    /// while a scoped thread makes the head, which is then written in front of it.
    fn put_framed_blocking(
        &self,
        key: &Key,
        head_len: usize,
        make_head: HeadMaker,
        body: Bytes,
        how: Publish,
    ) -> Result<PutResult> {
        let mut bad_head = None;
        let result = self.put_blocking_with(key, how, |file| {
            use std::os::unix::fs::FileExt;
            let head = std::thread::scope(|scope| {
                let maker = scope.spawn(make_head);
                let written = file.write_all_at(&body, head_len as u64);
                let head = maker
                    .join()
                    .map_err(|_| io::Error::other("making the head of a write panicked"));
                written.and(head)
            })?;
            match check_head(&self.url, key, head_len, head) {
                Ok(head) => file.write_all_at(&head, 0),
                Err(e) => {
                    bad_head = Some(e);
                    Err(io::Error::other("bad head"))
                }
            }
        });
        match bad_head {
            Some(e) => Err(e),
            None => result,
        }
    }

    /// Stages a file written by `write`, then publishes it as `how` says (see
    /// [`Publish`]). A `Create` is staged in an unnamed file where the system has them
    /// (see [`publish`]), anything else under a hidden name beside the destination.
    fn put_blocking_with(
        &self,
        key: &Key,
        how: Publish,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<PutResult> {
        path::with_key_path(&self.path_root, key, |dest| {
            self.put_at(key, dest, how, write)
        })
    }

    /// [`Inner::put_blocking_with`] once the destination's path is written out.
    fn put_at(
        &self,
        key: &Key,
        dest_path: path::KeyPath<'_>,
        how: Publish,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<PutResult> {
        let Publish {
            mode,
            sync,
            version,
        } = how;
        let k = key.as_str();
        let dest = dest_path.path();
        let parent = parent_of(dest, k).unwrap_or(&self.root);
        // A directory on a filesystem without unnamed files (another mount below the
        // root) has its `Create` staged under a name.
        let unnamed =
            std::cell::Cell::new(matches!(mode, PutMode::Create) && self.unnamed_staging());
        let mut staged = Staged {
            path: None,
            published: false,
        };
        let create = |staged: &mut Staged| {
            if unnamed.get() {
                match publish::open_unnamed(parent) {
                    Err(e) if publish::unsupported(&e) => unnamed.set(false),
                    opened => return opened,
                }
            }
            let path = staged.path.get_or_insert_with(|| {
                parent.join(format!(
                    ".cairn-staged.{}.{}.{}",
                    key.file_name(),
                    std::process::id(),
                    STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
                ))
            });
            OpenOptions::new().write(true).create_new(true).open(path)
        };
        // The object's directory usually exists: it is made (and the root checked)
        // only when the staged file cannot be created without it.
        let mut file = match create(&mut staged) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.make_parent(k, parent)?;
                create(&mut staged).map_err(|e| io_error(&self.url, k, e))?
            }
            Err(e) => return Err(io_error(&self.url, k, e)),
        };
        write(&mut file).map_err(|e| io_error(&self.url, k, e))?;
        if sync {
            file.sync_all().map_err(|e| io_error(&self.url, k, e))?;
        }
        // The published object is this inode: its version is known before publishing.
        let meta = if version {
            Some(file.metadata().map_err(|e| io_error(&self.url, k, e))?)
        } else {
            None
        };

        match (&staged.path, mode) {
            (None, _) => {
                // Unnamed: linked while open. Its directory may have been removed
                // since (it held no name to keep it): made again, once.
                let to = dest_path.c_str();
                match publish::link_unnamed(&file, to) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.make_parent(k, parent)?;
                        publish::link_unnamed(&file, to)
                    }
                    linked => linked,
                }
                .map_err(|e| io_error(&self.url, k, e))?;
                drop(file);
            }
            (Some(path), PutMode::Create) => {
                drop(file);
                staged.published =
                    publish::create_new(path, dest).map_err(|e| io_error(&self.url, k, e))?;
            }
            (Some(path), PutMode::Overwrite) => {
                drop(file);
                let _lock = DirLock::acquire(parent).map_err(|e| io_error(&self.url, k, e))?;
                fs::rename(path, dest).map_err(|e| io_error(&self.url, k, e))?;
                staged.published = true;
            }
            (Some(path), PutMode::IfMatch(expected)) => {
                drop(file);
                let _lock = DirLock::acquire(parent).map_err(|e| io_error(&self.url, k, e))?;
                let current = match fs::metadata(dest) {
                    Ok(m) => Some(version_of(&(&m).into())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(io_error(&self.url, k, e)),
                };
                if current.as_deref() != Some(expected.as_str()) {
                    return Err(Error::PreconditionFailed {
                        backend: self.url.clone(),
                        key: k.into(),
                        expected,
                    });
                }
                fs::rename(path, dest).map_err(|e| io_error(&self.url, k, e))?;
                staged.published = true;
            }
        }
        if sync {
            if let Ok(dir) = File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        Ok(PutResult {
            version: meta.map(|meta| version_of(&(&meta).into())),
        })
    }

    /// Makes the directory of a staged file, checking first that the root exists (a
    /// missing root is a missing bucket, not a directory to make).
    fn make_parent(&self, k: &str, parent: &Path) -> Result<()> {
        if !self.root.is_dir() {
            return Err(Error::BucketNotFound {
                backend: self.url.clone(),
                bucket: self.root.display().to_string(),
            });
        }
        fs::create_dir_all(parent).map_err(|e| io_error(&self.url, k, e))
    }

    /// Whether `Create` writes are staged in unnamed files: tried once per backend, in
    /// its root, by making one and linking it under a hidden name that is removed at
    /// once. A root that does not exist yet decides nothing.
    fn unnamed_staging(&self) -> bool {
        match self.unnamed.load(Ordering::Relaxed) {
            UNNAMED_YES => true,
            UNNAMED_NO => false,
            _ => {
                let probe = self.root.join(format!(
                    ".cairn-staged.probe.{}.{}",
                    std::process::id(),
                    STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
                ));
                let works = publish::unnamed_works(&self.root, &probe);
                if works || self.root.is_dir() {
                    let decided = if works { UNNAMED_YES } else { UNNAMED_NO };
                    self.unnamed.store(decided, Ordering::Relaxed);
                }
                works
            }
        }
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        if !self.root.is_dir() {
            return Err(self.check_root(self.not_found(prefix)));
        }
        // Start the walk at the deepest directory the prefix names.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut out = Vec::new();
        let mut dirs = vec![start];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(io_error(&self.url, prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_error(&self.url, prefix, e))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if is_staged_name(&name) {
                    continue;
                }
                let path = entry.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let rel = rel.to_string_lossy();
                let ft = match entry.file_type() {
                    Ok(ft) => ft,
                    Err(_) => continue,
                };
                if ft.is_dir() {
                    let as_prefix = format!("{rel}/");
                    if as_prefix.starts_with(prefix) || prefix.starts_with(&as_prefix) {
                        dirs.push(path);
                    }
                    continue;
                }
                if !rel.starts_with(prefix) {
                    continue;
                }
                let Ok(key) = Key::parse(rel.as_ref()) else {
                    tracing::warn!(path = %path.display(), "skipping a file whose name is not a valid key");
                    continue;
                };
                // A file deleted between readdir and stat is simply not listed.
                if let Ok(meta) = entry.metadata() {
                    out.push(object_meta(key, &(&meta).into()));
                }
            }
        }
        Ok(out)
    }
}

/// Opens an object for reading and resolves the requested range against its size.
fn open_range(
    inner: &Inner,
    key: &Key,
    range: Option<GetRange>,
) -> Result<(File, ObjectMeta, std::ops::Range<u64>)> {
    let (file, m, range) = open_file_range(inner, key, range)?;
    Ok((file, object_meta(key.clone(), &m), range))
}

/// [`open_range`], giving the file's own status.
fn open_file_range(
    inner: &Inner,
    key: &Key,
    range: Option<GetRange>,
) -> Result<(File, FileStat, std::ops::Range<u64>)> {
    let k = key.as_str();
    let file = open_key(inner, key)?;
    let (m, range) = stat_range(inner, k, &file, range)?;
    Ok((file, m, range))
}

/// Opens the file of key `k` for reading.
fn open_key(inner: &Inner, key: &Key) -> Result<File> {
    open_key_checked(inner, key, true)
}

/// [`open_key`], where a missing file is told apart from a missing root (one `stat`
/// of the root) only when `bucket_check` asks for it.
fn open_key_checked(inner: &Inner, key: &Key, bucket_check: bool) -> Result<File> {
    path::with_key_path(&inner.path_root, key, |p| {
        path::open_key_path(p, &inner.noatime)
    })
    .map_err(|e| {
        let e = io_error(&inner.url, key.as_str(), e);
        if bucket_check {
            inner.check_root(e)
        } else {
            e
        }
    })
}

/// The status of the open file of key `k`, and `range` resolved against its size; a
/// directory is no object.
fn stat_range(
    inner: &Inner,
    k: &str,
    file: &File,
    range: Option<GetRange>,
) -> Result<(FileStat, std::ops::Range<u64>)> {
    let m = FileStat::from(&file.metadata().map_err(|e| io_error(&inner.url, k, e))?);
    if !m.is_file {
        return Err(inner.not_found(k));
    }
    let range = resolve_range(range.as_ref(), m.size, &inner.url, k)?;
    Ok((m, range))
}

/// How a staged file is published: under `mode`; with `sync`, the file and then its
/// directory synced; with `version`, the published object's version given back (one
/// `fstat` of the staged file).
#[derive(Debug, Clone)]
struct Publish {
    mode: PutMode,
    sync: bool,
    version: bool,
}

/// What a whole read gives of the object's metadata: the full [`ObjectMeta`], or only
/// its version.
type MetaOf<M> = fn(&Key, &FileStat) -> M;

/// [`LocalBackend::read_here`]'s answer: the read (or its error), a file too large to
/// read on the calling thread, or inline reads switched off.
enum Here {
    Read(Result<(Option<String>, Bytes)>),
    Large(File),
    Off,
}

impl LocalBackend {
    /// An object (or a range of it) read into one buffer of its final size, with the
    /// metadata `meta_of` makes. Small objects are read right here (see
    /// `with_inline_reads`): the open and fstat are cheap, and a large object's read
    /// still goes to the blocking pool. Only a read in the blocking pool makes an
    /// inspector (from `inspector`) and hands it the bytes there; a small one leaves
    /// the buffer to the caller ([`Backend::get_inspected`]).
    async fn read_whole<M: Send + 'static>(
        &self,
        key: &Key,
        range: Option<GetRange>,
        inspector: Option<&MakeInspector<'_>>,
        meta_of: MetaOf<M>,
    ) -> Result<(M, Bytes)> {
        if self.inner.inline_read_limit > 0 {
            let file = open_key(&self.inner, key)?;
            return self.read_opened(key, file, range, inspector, meta_of).await;
        }
        let inner = self.inner.clone();
        let key = key.clone();
        let mut inspect = inspector.map(|make| make());
        blocking(move || {
            let (mut file, m, range) = open_file_range(&inner, &key, range)?;
            let len = (range.end - range.start) as usize;
            let bytes = read_inspected(&mut file, range.start, len, inspect.as_mut())
                .map_err(|e| io_error(&inner.url, key.as_str(), e))?;
            Ok((meta_of(&key, &m), bytes))
        })
        .await
    }

    /// [`LocalBackend::read_whole`] of a file opened on the calling task: a small object
    /// is read right here too, a large one in the blocking pool.
    async fn read_opened<M: Send + 'static>(
        &self,
        key: &Key,
        mut file: File,
        range: Option<GetRange>,
        inspector: Option<&MakeInspector<'_>>,
        meta_of: MetaOf<M>,
    ) -> Result<(M, Bytes)> {
        let inner = &self.inner;
        let (m, range) = stat_range(inner, key.as_str(), &file, range)?;
        let meta = meta_of(key, &m);
        let len = range.end - range.start;
        if len <= inner.inline_read_limit {
            let bytes = read_range(&mut file, range.start, len as usize)
                .map_err(|e| io_error(&inner.url, key.as_str(), e))?;
            return Ok((meta, bytes));
        }
        let url = inner.url.clone();
        let k = key.clone();
        let mut inspect = inspector.map(|make| make());
        blocking(move || {
            let bytes = read_inspected(&mut file, range.start, len as usize, inspect.as_mut())
                .map_err(|e| io_error(&url, k.as_str(), e))?;
            Ok((meta, bytes))
        })
        .await
    }

    /// A whole object read on the calling thread when it is small enough to be read
    /// inline (see `with_inline_reads`): its version only when asked for. Without the
    /// version a small object needs no `fstat` either: the one read that comes back
    /// short finds its end. A missing file is told apart from a missing root only when
    /// `wants` asks for it.
    fn read_here(&self, key: &Key, wants: ReadWants) -> Here {
        let inner = &self.inner;
        let with_version = wants.version;
        if inner.inline_read_limit == 0 {
            return Here::Off;
        }
        let mut file = match open_key_checked(inner, key, wants.bucket_check) {
            Ok(file) => file,
            Err(e) => return Here::Read(Err(e)),
        };
        if !with_version {
            match read::read_short(&file) {
                Ok(Some(bytes)) => return Here::Read(Ok((None, bytes))),
                Ok(None) => {}
                Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                    return Here::Read(Err(inner.not_found(key.as_str())))
                }
                Err(e) => return Here::Read(Err(io_error(&inner.url, key.as_str(), e))),
            }
        }
        let (m, range) = match stat_range(inner, key.as_str(), &file, None) {
            Ok(stat) => stat,
            Err(e) => return Here::Read(Err(e)),
        };
        let len = range.end - range.start;
        if len > inner.inline_read_limit {
            return Here::Large(file);
        }
        let version = with_version.then(|| version_of(&m));
        Here::Read(
            read_range(&mut file, range.start, len as usize)
                .map(|bytes| (version, bytes))
                .map_err(|e| io_error(&inner.url, key.as_str(), e)),
        )
    }

    /// Local files carry no user metadata: a write asking for some is refused, not
    /// stripped.
    fn refuse_metadata(&self, opts: &PutOptions) -> Result<()> {
        if opts.metadata.is_empty() {
            return Ok(());
        }
        Err(Error::Unsupported {
            backend: self.inner.url.clone(),
            operation: "user metadata on local files".into(),
        })
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn describe(&self) -> String {
        self.inner.url.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            user_metadata: false,
            gaps: vec!["local files carry no user metadata: a put with metadata is refused".into()],
            ..Capabilities::default()
        }
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        // A `stat` costs no more than the open of an inline read (see
        // `with_inline_reads`), and several times less than the hand-off to the
        // blocking pool: a memory-tier hit that revalidates its entry pays it.
        if self.inner.inline_read_limit > 0 {
            return self.inner.head_now(key.clone());
        }
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || inner.head_now(key)).await
    }

    async fn get_opts(&self, key: &Key, range: Option<GetRange>) -> Result<GetResult> {
        let inner = self.inner.clone();
        let key = key.clone();
        let (file, meta, range, first) = blocking({
            let key = key.clone();
            move || {
                let (mut file, meta, range) = open_range(&inner, &key, range)?;
                let first_len = (range.end - range.start).min(READ_CHUNK);
                let first = read_range(&mut file, range.start, first_len as usize)
                    .map_err(|e| io_error(&inner.url, key.as_str(), e))?;
                Ok((file, meta, range, first))
            }
        })
        .await?;
        let rest_start = range.start + first.len() as u64;
        let url = self.inner.url.clone();
        let rest = stream::try_unfold(
            (Some(file), rest_start, range.end),
            move |(file, pos, end)| {
                let url = url.clone();
                let key = key.clone();
                async move {
                    let Some(mut file) = file else {
                        return Ok(None);
                    };
                    if pos >= end {
                        return Ok(None);
                    }
                    let len = (end - pos).min(READ_CHUNK) as usize;
                    let (file, chunk) = blocking(move || {
                        let chunk = read_range(&mut file, pos, len)
                            .map_err(|e| io_error(&url, key.as_str(), e))?;
                        Ok((file, chunk))
                    })
                    .await?;
                    Ok(Some((chunk, (Some(file), pos + len as u64, end))))
                }
            },
        );
        let body = stream::once(async move { Ok(first) }).chain(rest).boxed();
        Ok(GetResult { meta, range, body })
    }

    async fn get_bytes(&self, key: &Key, range: Option<GetRange>) -> Result<(ObjectMeta, Bytes)> {
        self.read_whole(key, range, None, full_meta).await
    }

    async fn get_bytes_inspected(
        &self,
        key: &Key,
        inspect: Inspector,
    ) -> Result<(ObjectMeta, Bytes)> {
        // Handed to a read in the blocking pool, or else given the whole buffer here.
        let unused = std::sync::Mutex::new(Some(inspect));
        let take = || -> Inspector {
            let taken = unused.lock().unwrap_or_else(|e| e.into_inner()).take();
            taken.unwrap_or_else(|| Box::new(|_: &[u8]| {}))
        };
        let (meta, bytes) = self.read_whole(key, None, Some(&take), full_meta).await?;
        if let Some(mut inspect) = unused.into_inner().unwrap_or_else(|e| e.into_inner()) {
            inspect(&bytes);
        }
        Ok((meta, bytes))
    }

    async fn get_inspected(
        &self,
        key: &Key,
        inspector: &MakeInspector<'_>,
        wants: ReadWants,
    ) -> Result<(Option<String>, Bytes)> {
        let meta_of: MetaOf<Option<String>> = if wants.version {
            |_, m| Some(version_of(m))
        } else {
            |_, _| None
        };
        match self.read_here(key, wants) {
            Here::Read(read) => read,
            Here::Large(file) => {
                self.read_opened(key, file, None, Some(inspector), meta_of)
                    .await
            }
            Here::Off => self.read_whole(key, None, Some(inspector), meta_of).await,
        }
    }

    fn get_now(&self, key: &Key, wants: ReadWants) -> Option<Result<(Option<String>, Bytes)>> {
        match self.read_here(key, wants) {
            Here::Read(read) => Some(read),
            Here::Large(_) | Here::Off => None,
        }
    }

    async fn put_opts(
        &self,
        key: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.refuse_metadata(&opts)?;
        let how = Publish {
            sync: self.inner.fsync && !opts.hint,
            version: !opts.skip_version,
            mode: opts.mode,
        };
        if !how.sync && payload.len() <= self.inner.inline_read_limit {
            // Without fsync a small write is a few system calls: done right here, like
            // a small read (see `with_inline_reads`).
            return self.inner.put_blocking(key, payload, how);
        }
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || inner.put_blocking(&key, payload, how)).await
    }

    async fn put_framed(
        &self,
        key: &Key,
        head_len: usize,
        make_head: HeadMaker,
        body: Bytes,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.refuse_metadata(&opts)?;
        let how = Publish {
            sync: self.inner.fsync,
            version: !opts.skip_version,
            mode: opts.mode,
        };
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || inner.put_framed_blocking(&key, head_len, make_head, body, how)).await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(
            move || match fs::remove_file(inner.root.join(key.as_str())) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error(&inner.url, key.as_str(), e)),
            },
        )
        .await
    }

    async fn clean_up(&self, older_than: Duration) -> Result<cairn_backend::CleanUp> {
        Ok(cairn_backend::CleanUp {
            staged_files: self.clean_staged(older_than).await?,
            open_uploads: 0,
        })
    }

    fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let prefix = prefix.to_string();
        stream::once(async move { blocking(move || inner.list_blocking(&prefix)).await })
            .flat_map(|r| match r {
                Ok(items) => stream::iter(items.into_iter().map(Ok)).boxed(),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }

    fn list_staged(&self, prefix: &str) -> BoxStream<'static, Result<StagedObject>> {
        let inner = self.inner.clone();
        let prefix = prefix.to_string();
        stream::once(async move { blocking(move || inner.list_staged_blocking(&prefix)).await })
            .flat_map(|r| match r {
                Ok(items) => stream::iter(items.into_iter().map(Ok)).boxed(),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }

    async fn delete_staged(&self, staged: &StagedObject) -> Result<()> {
        let (dir, name) = staged.path.rsplit_once('/').unwrap_or(("", &staged.path));
        let dir_ok = dir.is_empty() || Key::parse(dir).is_ok();
        if !dir_ok || !is_staged_name(name) {
            return Err(Error::InvalidKey {
                key: staged.path.clone(),
                reason: "not a staged file of this store".into(),
            });
        }
        let path = self.inner.root.join(&staged.path);
        let url = self.inner.url.clone();
        let key = staged.path.clone();
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&url, &key, e)),
        })
        .await
    }
}

impl Inner {
    /// The staged files below `prefix` (a plain string prefix of their paths).
    fn list_staged_blocking(&self, prefix: &str) -> Result<Vec<StagedObject>> {
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let mut out = Vec::new();
        let mut dirs = vec![self.root.join(dir_part)];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(io_error(&self.url, prefix, e)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if !is_staged_name(&entry.file_name().to_string_lossy()) {
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let rel = rel.to_string_lossy().into_owned();
                if !rel.starts_with(prefix) {
                    continue;
                }
                if let Ok(meta) = entry.metadata() {
                    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push(StagedObject {
                        path: rel,
                        size: meta.size(),
                        last_modified: DateTime::<Utc>::from(modified),
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_backend::BackendExt;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn reads_leave_access_times_alone_unless_asked() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let atime = |name: &str| {
            let m = fs::metadata(dir.path().join(name)).unwrap();
            (m.atime(), m.atime_nsec())
        };
        let quiet = LocalBackend::new(dir.path()).unwrap();
        let updating = LocalBackend::new(dir.path())
            .unwrap()
            .with_access_times(true);
        for (name, size) in [("small", 100), ("large", 256 << 10)] {
            let k = key(name);
            quiet
                .put(&k, Bytes::from(vec![7u8; size]).into())
                .await
                .unwrap();
            path::tests::three_days_old(&dir.path().join(name));
            let before = atime(name);
            assert_eq!(quiet.get(&k).await.unwrap().len(), size);
            assert_eq!(
                atime(name),
                before,
                "{name}: the default read moved the access time"
            );
            assert_eq!(updating.get(&k).await.unwrap().len(), size);
            if atime(name) == before {
                eprintln!("the filesystem of {:?} keeps no access times", dir.path());
                return;
            }
        }
    }

    #[tokio::test]
    async fn a_hint_on_a_syncing_store_is_written_on_the_calling_task() {
        use futures::FutureExt;
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path()).unwrap(); // fsync on
        let k = key("used/v1/cache/v1/default/ab/abcd");
        let opts = PutOptions {
            mode: PutMode::Overwrite,
            hint: true,
            ..Default::default()
        };
        let put = backend
            .put_opts(&k, Bytes::from_static(b"2026-12-03").into(), opts)
            .now_or_never()
            .expect("an unsynced small write needs no hand-off")
            .unwrap();
        let (meta, bytes) = backend.get_bytes(&k, None).await.unwrap();
        assert_eq!(&bytes[..], b"2026-12-03");
        assert_eq!(put.version, meta.version);
    }

    #[test]
    fn the_parent_of_an_object_is_cut_from_its_path() {
        for (root, k) in [
            ("/data/store", "a/b/c.txt"),
            ("/data/store/", "a/b/c.txt"),
            ("/", "x/y"),
            ("relative", "cache/v1/default/ab/abcdef"),
            ("/data/store", "top.txt"),
        ] {
            let dest = Path::new(root).join(k);
            let expected = if k.contains('/') { dest.parent() } else { None };
            assert_eq!(parent_of(&dest, k), expected, "{root} {k}");
        }
    }

    #[test]
    fn versions_read_as_their_hex_fields() {
        for (ino, mtime, nsec, size) in [
            (0u64, 0i64, 0i64, 0u64),
            (1, 1_700_000_000, 999_999_999, 302),
            (u64::MAX, -1, 5, u64::MAX),
            (0xabc, i64::MIN, i64::MAX, 16),
        ] {
            assert_eq!(
                version_string(ino, mtime, nsec, size),
                format!("{ino:x}-{mtime:x}.{nsec:x}-{size:x}")
            );
        }
    }

    fn key(s: &str) -> Key {
        Key::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_framed_write_puts_the_head_in_front_and_checks_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path()).unwrap();
        let body = Bytes::from(vec![5u8; 3 << 20]);
        store
            .put_framed(
                &key("f/ok"),
                4,
                Box::new(|| Bytes::from_static(b"HEAD")),
                body.clone(),
                PutOptions::default(),
            )
            .await
            .unwrap();
        let back = store.get(&key("f/ok")).await.unwrap();
        assert_eq!(&back[..4], b"HEAD");
        assert!(back[4..] == body[..]);
        // A head of another length than announced publishes nothing, leaves nothing.
        let err = store
            .put_framed(
                &key("f/bad"),
                4,
                Box::new(|| Bytes::from_static(b"LONGER")),
                body,
                PutOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("4 were announced"), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path().join("f"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["ok".to_string()]);
    }

    #[test]
    fn chunks_are_written_whole_and_in_order_whatever_their_number() {
        let dir = tempfile::tempdir().unwrap();
        // Empty chunks among them, and more chunks than one `writev` takes.
        let chunks: Vec<Bytes> = (0..2500u32)
            .map(|i| match i % 3 {
                0 => Bytes::new(),
                _ => Bytes::from(i.to_le_bytes().repeat(1 + (i % 5) as usize)),
            })
            .collect();
        let path = dir.path().join("out");
        let mut file = File::create(&path).unwrap();
        write_chunks(&mut file, &chunks).unwrap();
        drop(file);
        assert_eq!(fs::read(&path).unwrap(), chunks.concat());
        let mut file = File::create(&path).unwrap();
        write_chunks(&mut file, &[]).unwrap();
        assert_eq!(fs::read(&path).unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_failed_write_leaves_no_staged_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path()).unwrap();
        store.put(&key("a/x"), "one".into()).await.unwrap();
        let err = store
            .put_mode(&key("a/x"), "two".into(), PutMode::Create)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["x".to_string()]);
        assert_eq!(&store.get(&key("a/x")).await.unwrap()[..], b"one");
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A store whose `Create` writes stage unnamed (where the system allows, as on
    /// Linux) and one that stages them under a name: both publish the same way.
    fn both_stagings(dir: &Path) -> [(LocalBackend, &'static str); 2] {
        let unnamed = LocalBackend::new(dir).unwrap();
        let named = LocalBackend::new(dir).unwrap();
        named.inner.unnamed.store(UNNAMED_NO, Ordering::Relaxed);
        [(unnamed, "unnamed"), (named, "named")]
    }

    #[tokio::test]
    async fn a_create_publishes_once_and_leaves_no_staged_name_either_way() {
        let dir = tempfile::tempdir().unwrap();
        for (store, how) in both_stagings(dir.path()) {
            let k = key(&format!("{how}/x"));
            let put = store
                .put_mode(&k, "one".into(), PutMode::Create)
                .await
                .unwrap();
            let (meta, bytes) = store.get_bytes(&k, None).await.unwrap();
            assert_eq!(&bytes[..], b"one", "{how}");
            assert_eq!(
                put.version, meta.version,
                "{how}: the version is the file's"
            );
            let err = store
                .put_mode(&k, "two".into(), PutMode::Create)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::AlreadyExists { .. }), "{how}: {err}");
            assert_eq!(&store.get(&k).await.unwrap()[..], b"one", "{how}");
            assert_eq!(names_in(&dir.path().join(how)), vec!["x"], "{how}");
        }
        // The probe of the unnamed one left nothing in the root either.
        assert_eq!(names_in(dir.path()), vec!["named", "unnamed"]);
        let decided = LocalBackend::new(dir.path()).unwrap();
        decided
            .put_mode(&key("p"), "p".into(), PutMode::Create)
            .await
            .unwrap();
        let expected = if cfg!(target_os = "linux") {
            UNNAMED_YES
        } else {
            UNNAMED_NO
        };
        assert_eq!(decided.inner.unnamed.load(Ordering::Relaxed), expected);
    }

    #[tokio::test]
    async fn of_concurrent_creators_exactly_one_wins_either_way() {
        let dir = tempfile::tempdir().unwrap();
        for (store, how) in both_stagings(dir.path()) {
            let k = key(&format!("{how}/race"));
            let writes = (0..16u8).map(|i| {
                let (store, k) = (store.clone(), k.clone());
                tokio::spawn(async move {
                    store
                        .put_mode(&k, vec![i; 4096].into(), PutMode::Create)
                        .await
                })
            });
            let results = futures::future::join_all(writes).await;
            let won: Vec<_> = results
                .iter()
                .filter(|r| r.as_ref().unwrap().is_ok())
                .collect();
            assert_eq!(won.len(), 1, "{how}");
            for r in results {
                if let Err(e) = r.unwrap() {
                    assert!(matches!(e, Error::AlreadyExists { .. }), "{how}: {e}");
                }
            }
            let bytes = store.get(&k).await.unwrap();
            assert!(
                bytes.len() == 4096 && bytes.iter().all(|b| *b == bytes[0]),
                "{how}"
            );
            assert_eq!(names_in(&dir.path().join(how)), vec!["race"], "{how}");
        }
    }

    /// An unnamed staged file keeps no name in its directory, so the directory can be
    /// removed while it is written: it is made again and the write lands.
    #[tokio::test]
    async fn a_create_whose_directory_is_removed_while_it_writes_lands() {
        let dir = tempfile::tempdir().unwrap();
        for (store, how) in both_stagings(dir.path()) {
            let sub = dir.path().join(how).join("d");
            let gone = sub.clone();
            let head = Box::new(move || {
                // Removable only when nothing is staged in it under a name.
                let removed = fs::remove_dir(&gone).is_ok();
                Bytes::from_static(if removed { b"GONE" } else { b"KEPT" })
            });
            let k = key(&format!("{how}/d/x"));
            store
                .put_framed(&k, 4, head, Bytes::from_static(b"body"), put_create())
                .await
                .unwrap();
            let bytes = store.get(&k).await.unwrap();
            let expected: &[u8] = if how == "unnamed" && cfg!(target_os = "linux") {
                b"GONEbody"
            } else {
                b"KEPTbody"
            };
            assert_eq!(&bytes[..], expected, "{how}");
            assert_eq!(names_in(&sub), vec!["x"], "{how}");
        }
    }

    fn put_create() -> PutOptions {
        PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn staged_files_are_ignored_and_cleanable() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path()).unwrap();
        fs::create_dir_all(dir.path().join("t")).unwrap();
        // What a writer killed mid-write leaves behind.
        fs::write(dir.path().join("t/.cairn-staged.out.txt.999.0"), b"partial").unwrap();
        assert!(!store.exists(&key("t/out.txt")).await.unwrap());
        assert!(store.list_all("").await.unwrap().is_empty());
        assert_eq!(
            store.clean_staged(Duration::from_secs(3600)).await.unwrap(),
            0
        );
        assert_eq!(store.clean_staged(Duration::ZERO).await.unwrap(), 1);
        assert!(fs::read_dir(dir.path().join("t")).unwrap().next().is_none());
    }

    #[tokio::test]
    async fn objects_are_plain_files_at_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path()).unwrap().with_fsync(false);
        store
            .put(&key("Monday/report.csv"), "a,b\n1,2\n".into())
            .await
            .unwrap();
        let on_disk = fs::read_to_string(dir.path().join("Monday/report.csv")).unwrap();
        assert_eq!(on_disk, "a,b\n1,2\n");
    }

    #[tokio::test]
    async fn metadata_is_refused_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path()).unwrap();
        let mut opts = PutOptions::default();
        opts.metadata.insert("k".into(), "v".into());
        let err = store
            .put_opts(&key("m"), "x".into(), opts)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        assert!(!store.exists(&key("m")).await.unwrap());
    }

    #[tokio::test]
    async fn a_missing_root_is_a_missing_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let err = LocalBackend::open_existing(dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, Error::BucketNotFound { .. }), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    /// With inline reads on (the default), `head` and a small read finish on their
    /// first poll, without the blocking pool; with them off, both still answer.
    #[tokio::test]
    async fn small_reads_and_heads_run_on_the_calling_task() {
        use futures::FutureExt;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path()).unwrap().with_fsync(false);
        store.put(&key("a/b"), "hello".into()).await.unwrap();
        fs::create_dir_all(dir.path().join("a/dir")).unwrap();

        let meta = store
            .head(&key("a/b"))
            .now_or_never()
            .expect("an inline head is ready at once")
            .unwrap();
        assert_eq!(meta.size, 5);
        assert_eq!(meta.key.as_str(), "a/b");
        let (_, bytes) = store
            .get_bytes(&key("a/b"), None)
            .now_or_never()
            .expect("a small inline read is ready at once")
            .unwrap();
        assert_eq!(&bytes[..], b"hello");
        for missing in ["a/nope", "a/dir"] {
            let err = store
                .head(&key(missing))
                .now_or_never()
                .expect("ready at once")
                .unwrap_err();
            assert!(err.is_not_found(), "{missing}: {err}");
        }

        let pooled = store.clone().with_inline_reads(0);
        assert_eq!(pooled.head(&key("a/b")).await.unwrap(), meta);
        assert!(pooled
            .head(&key("a/nope"))
            .await
            .unwrap_err()
            .is_not_found());
        // A missing root is still a missing bucket, inline or not.
        let gone = LocalBackend::new(dir.path().join("gone")).unwrap();
        fs::remove_dir(dir.path().join("gone")).unwrap();
        for store in [gone.clone(), gone.with_inline_reads(0)] {
            let err = store.head(&key("x")).await.unwrap_err();
            assert!(matches!(err, Error::BucketNotFound { .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn inspected_reads_give_every_size_whole_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path()).unwrap().with_fsync(false);
        fs::create_dir_all(dir.path().join("a/dir")).unwrap();
        let limit = DEFAULT_INLINE_READ_LIMIT as usize;
        let no_inspector = || -> Inspector { Box::new(|_: &[u8]| {}) };
        for (store, inline_limit) in [
            (store.clone(), limit),
            (store.clone().with_inline_reads(0), 0),
        ] {
            let short = read::SHORT_READ;
            for len in [0, 1, short - 1, short, short + 1, limit, limit + 1] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let k = key(&format!("a/{len}"));
                store.put(&k, data.clone().into()).await.unwrap();
                // Read in the blocking pool, the bytes go through an inspector made
                // for it; read here, they are left to the caller.
                let in_pool = inline_limit == 0 || len > limit;
                for with_version in [false, true] {
                    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
                    let made = std::sync::atomic::AtomicUsize::new(0);
                    let make = || -> Inspector {
                        made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let seen = seen.clone();
                        Box::new(move |p: &[u8]| seen.lock().unwrap().push(p.to_vec()))
                    };
                    let (version, bytes) = store
                        .get_inspected(&k, &make, ReadWants::with_version(with_version))
                        .await
                        .unwrap();
                    if with_version {
                        assert_eq!(version, store.head(&k).await.unwrap().version);
                    } else {
                        assert_eq!(version, None);
                    }
                    assert!(bytes == data, "{len} bytes");
                    assert_eq!(made.into_inner(), usize::from(in_pool), "{len} bytes");
                    let seen = seen.lock().unwrap().concat();
                    if in_pool {
                        assert_eq!(seen, data, "{len} bytes inspected");
                    } else {
                        assert!(seen.is_empty(), "{len} bytes");
                    }
                    // Answered on the calling thread exactly when read there.
                    match store.get_now(&k, ReadWants::with_version(with_version)) {
                        Some(read) => {
                            assert!(!in_pool, "{len} bytes read at once");
                            let (version, bytes) = read.unwrap();
                            assert!(bytes == data, "{len} bytes");
                            let want = with_version.then(|| {
                                version_of(&FileStat::from(
                                    &fs::metadata(dir.path().join("a").join(len.to_string()))
                                        .unwrap(),
                                ))
                            });
                            assert_eq!(version, want, "{len} bytes");
                        }
                        None => assert!(in_pool, "{len} bytes not read at once"),
                    }
                    // The read that always inspects: every size, once, in order.
                    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
                    let inspect: Inspector = {
                        let seen = seen.clone();
                        Box::new(move |p: &[u8]| seen.lock().unwrap().push(p.to_vec()))
                    };
                    let (_, bytes) = store.get_bytes_inspected(&k, inspect).await.unwrap();
                    assert!(bytes == data, "{len} bytes");
                    assert_eq!(seen.lock().unwrap().concat(), data, "{len} bytes inspected");
                }
            }
            for missing in ["a/nope", "a/dir", "nodir/x"] {
                let err = store
                    .get_inspected(&key(missing), &no_inspector, ReadWants::default())
                    .await
                    .unwrap_err();
                assert!(err.is_not_found(), "{missing}: {err}");
                for with_version in [false, true] {
                    match store.get_now(&key(missing), ReadWants::with_version(with_version)) {
                        Some(Err(e)) => assert!(e.is_not_found(), "{missing}: {e}"),
                        other => {
                            assert!(inline_limit == 0 && other.is_none(), "{missing}: {other:?}")
                        }
                    }
                }
            }
        }
        let gone = LocalBackend::new(dir.path().join("gone")).unwrap();
        fs::remove_dir(dir.path().join("gone")).unwrap();
        let err = gone
            .get_inspected(&key("x"), &no_inspector, ReadWants::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BucketNotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn large_reads_stream_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path()).unwrap().with_fsync(false);
        let data: Vec<u8> = (0..(READ_CHUNK as usize + 1000)).map(|i| i as u8).collect();
        store.put(&key("big"), data.clone().into()).await.unwrap();
        let got = store.get_opts(&key("big"), None).await.unwrap();
        let chunks: Vec<Bytes> = got.body.map(|c| c.unwrap()).collect().await;
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].len(), 1000);
        assert_eq!(chunks.concat(), data);
    }
}
