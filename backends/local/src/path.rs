//! A key's file below the root, written out for a system call: on the stack, with its
//! terminating NUL, instead of a `PathBuf` joined on the heap and copied again into a C
//! string by the standard library.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use cairn_backend::Key;

/// Paths of up to this many bytes, NUL included, are written on the stack; longer ones
/// (a deep root and a long key) on the heap.
const ON_STACK: usize = 384;

/// `root/key` with a terminating NUL, borrowed from [`with_key_path`]'s buffer.
#[derive(Clone, Copy)]
pub(crate) struct KeyPath<'a> {
    with_nul: &'a [u8],
}

impl<'a> KeyPath<'a> {
    /// The path, for the standard library's calls.
    pub(crate) fn path(self) -> &'a Path {
        Path::new(OsStr::from_bytes(&self.with_nul[..self.with_nul.len() - 1]))
    }

    /// The path as a C string, for system calls, without looking for a NUL in it
    /// again: the root has none ([`Root::new`]) and a key none either.
    pub(crate) fn c_str(self) -> &'a CStr {
        debug_assert!(CStr::from_bytes_with_nul(self.with_nul).is_ok());
        // SAFETY: `with_key_path` wrote the buffer as the root, `/`, the key and one
        // NUL at the end; `Root::new` refused a root holding a NUL and `Key` refuses
        // control characters, NUL among them, so the end is the only one.
        unsafe { CStr::from_bytes_with_nul_unchecked(self.with_nul) }
    }
}

/// A store's root directory as every key's path starts with it: without a trailing
/// `/`, and checked once for a NUL byte, which no path can hold.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    bytes: Box<[u8]>,
}

impl Root {
    /// `root`, or `InvalidInput` when it holds a NUL byte (as the standard library's
    /// calls would fail on it).
    pub(crate) fn new(root: &Path) -> io::Result<Root> {
        let bytes = root.as_os_str().as_bytes();
        if bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file name contained an unexpected NUL byte",
            ));
        }
        // The root `/` ends with its separator already.
        let bytes = bytes.strip_suffix(b"/").unwrap_or(bytes);
        Ok(Root {
            bytes: bytes.into(),
        })
    }
}

/// Calls `f` with `root/key`.
pub(crate) fn with_key_path<R>(root: &Root, key: &Key, f: impl FnOnce(KeyPath<'_>) -> R) -> R {
    let root = &*root.bytes;
    let key = key.as_str();
    let len = root.len() + 1 + key.len() + 1;
    let mut stack = [0u8; ON_STACK];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= ON_STACK {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    buf[..root.len()].copy_from_slice(root);
    buf[root.len()] = b'/';
    buf[root.len() + 1..len - 1].copy_from_slice(key.as_bytes());
    buf[len - 1] = 0;
    f(KeyPath { with_nul: buf })
}

/// Opens the file at `path` for reading.
pub(crate) fn open_key_path(path: KeyPath<'_>) -> io::Result<File> {
    open_read(path.c_str())
}

/// Opens `path` for reading (close-on-exec).
fn open_read(path: &CStr) -> io::Result<File> {
    retrying(|| {
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(unsafe { File::from_raw_fd(fd) })
    })
}

/// `call` again while a signal interrupts it.
fn retrying<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

/// What cairn reads of a file's status: enough for an object's metadata and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStat {
    pub(crate) ino: u64,
    pub(crate) mtime: i64,
    pub(crate) mtime_nsec: i64,
    pub(crate) size: u64,
    pub(crate) is_file: bool,
}

impl From<&std::fs::Metadata> for FileStat {
    fn from(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileStat {
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            size: m.size(),
            is_file: m.is_file(),
        }
    }
}

/// The status of the file at `path`, following symbolic links as
/// [`std::fs::metadata`] does, by one `stat` on the path as it is.
pub(crate) fn stat_key_path(path: KeyPath<'_>) -> io::Result<FileStat> {
    let path = path.c_str();
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    retrying(|| {
        // SAFETY: `path` is a valid C string and `st` is memory for one `stat`, which
        // the call fills when it succeeds.
        match unsafe { libc::stat(path.as_ptr(), st.as_mut_ptr()) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    })?;
    // SAFETY: the call succeeded, so the kernel filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types vary by platform; these conversions are lossless where they
    // differ (the casts mirror the standard library's `MetadataExt`).
    #[allow(clippy::unnecessary_cast)]
    Ok(FileStat {
        ino: st.st_ino as u64,
        mtime: st.st_mtime as i64,
        mtime_nsec: st.st_mtime_nsec as i64,
        size: st.st_size as u64,
        is_file: st.st_mode & libc::S_IFMT == libc::S_IFREG,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(path: &Path) -> Root {
        Root::new(path).unwrap()
    }

    fn key(k: &str) -> Key {
        Key::parse(k).unwrap()
    }

    #[test]
    fn the_path_is_root_slash_key_on_the_stack_and_on_the_heap() {
        let path = Path::new("/var/data/store");
        let store = root(path);
        let k = key("cache/v1/ab/abcd");
        let got = with_key_path(&store, &k, |p| p.c_str().to_owned());
        assert_eq!(got.to_bytes(), b"/var/data/store/cache/v1/ab/abcd");
        let got = with_key_path(&store, &k, |p| p.path().to_owned());
        assert_eq!(got, path.join("cache/v1/ab/abcd"));
        // The same with the root written with a trailing separator.
        let got = with_key_path(&root(Path::new("/var/data/store/")), &k, |p| {
            p.path().to_owned()
        });
        assert_eq!(got, path.join("cache/v1/ab/abcd"));
        // Longer than the stack buffer: the same path, built on the heap.
        let long = "k/".repeat(300) + "end";
        let got = with_key_path(&store, &key(&long), |p| p.c_str().to_owned());
        assert_eq!(got.to_bytes(), format!("/var/data/store/{long}").as_bytes());
        assert_eq!(
            with_key_path(&store, &key(&long), |p| p.path().to_owned()),
            path.join(&long)
        );
        // A store at the filesystem's root: one separator, as `Path::join` writes it.
        let got = with_key_path(&root(Path::new("/")), &key("a/b"), |p| p.path().to_owned());
        assert_eq!(got, Path::new("/").join("a/b"));
        assert_eq!(got.as_os_str().as_bytes(), b"/a/b");
        // Exactly at the limit, and one byte over it.
        for extra in [0, 1] {
            let k = key(&"x".repeat(ON_STACK - path.as_os_str().len() - 2 + extra));
            let got = with_key_path(&store, &k, |p| p.c_str().to_owned());
            assert_eq!(got.to_bytes().len(), ON_STACK - 1 + extra);
        }
    }

    #[test]
    fn a_root_with_a_nul_byte_is_refused_not_cut_short() {
        for bytes in [&b"/tmp/a\0b"[..], b"\0", b"/tmp/ab\0"] {
            let path = Path::new(std::ffi::OsStr::from_bytes(bytes));
            let err = Root::new(path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{path:?}");
        }
    }

    #[test]
    fn a_stat_of_the_path_reads_what_the_standard_library_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"twelve bytes").unwrap();
        std::fs::create_dir(dir.path().join("dir")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("file"), dir.path().join("link")).unwrap();
        for name in ["file", "dir", "link"] {
            let ours = with_key_path(&root(dir.path()), &key(name), stat_key_path).unwrap();
            let std = FileStat::from(&std::fs::metadata(dir.path().join(name)).unwrap());
            assert_eq!(ours, std, "{name}");
        }
        let file = with_key_path(&root(dir.path()), &key("file"), stat_key_path).unwrap();
        assert!(file.is_file);
        assert_eq!(file.size, 12);
        assert!(
            !with_key_path(&root(dir.path()), &key("dir"), stat_key_path)
                .unwrap()
                .is_file
        );
        let err = with_key_path(&root(dir.path()), &key("absent"), stat_key_path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn open_read_opens_a_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("present"), b"bytes").unwrap();
        let mut file = with_key_path(&root(dir.path()), &key("present"), open_key_path).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, "bytes");
        let err = with_key_path(&root(dir.path()), &key("absent"), open_key_path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
