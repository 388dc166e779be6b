//! A key's file below the root, written out for a system call: on the stack, with its
//! terminating NUL, instead of a `PathBuf` joined on the heap and copied again into a C
//! string by the standard library.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

    /// The path as a C string, for system calls. A key holds no NUL (keys refuse
    /// control characters); a root that does fails with `InvalidInput`, as the
    /// standard library's calls would.
    pub(crate) fn c_str(self) -> io::Result<&'a CStr> {
        CStr::from_bytes_with_nul(self.with_nul).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "file name contained an unexpected NUL byte",
            )
        })
    }
}

/// Calls `f` with `root/key`.
pub(crate) fn with_key_path<R>(root: &Path, key: &str, f: impl FnOnce(KeyPath<'_>) -> R) -> R {
    let root = root.as_os_str().as_bytes();
    // The root `/` ends with its separator already.
    let root = root.strip_suffix(b"/").unwrap_or(root);
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
    open_read(path.c_str()?)
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
    let path = path.c_str()?;
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

    #[test]
    fn the_path_is_root_slash_key_on_the_stack_and_on_the_heap() {
        let root = Path::new("/var/data/store");
        let got = with_key_path(root, "cache/v1/ab/abcd", |p| p.c_str().unwrap().to_owned());
        assert_eq!(got.to_bytes(), b"/var/data/store/cache/v1/ab/abcd");
        let got = with_key_path(root, "cache/v1/ab/abcd", |p| p.path().to_owned());
        assert_eq!(got, root.join("cache/v1/ab/abcd"));
        // Longer than the stack buffer: the same path, built on the heap.
        let key = "k/".repeat(300) + "end";
        let got = with_key_path(root, &key, |p| p.c_str().unwrap().to_owned());
        assert_eq!(got.to_bytes(), format!("/var/data/store/{key}").as_bytes());
        assert_eq!(
            with_key_path(root, &key, |p| p.path().to_owned()),
            root.join(&key)
        );
        // A store at the filesystem's root: one separator, as `Path::join` writes it.
        let got = with_key_path(Path::new("/"), "a/b", |p| p.path().to_owned());
        assert_eq!(got, Path::new("/").join("a/b"));
        assert_eq!(got.as_os_str().as_bytes(), b"/a/b");
        // Exactly at the limit, and one byte over it.
        for extra in [0, 1] {
            let key = "x".repeat(ON_STACK - root.as_os_str().len() - 2 + extra);
            let got = with_key_path(root, &key, |p| p.c_str().unwrap().to_owned());
            assert_eq!(got.to_bytes().len(), ON_STACK - 1 + extra);
        }
    }

    #[test]
    fn a_root_with_a_nul_byte_is_refused_not_cut_short() {
        let root = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/a\0b"));
        let err = with_key_path(root, "k", |p| p.c_str().map(|_| ())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_stat_of_the_path_reads_what_the_standard_library_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"twelve bytes").unwrap();
        std::fs::create_dir(dir.path().join("dir")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("file"), dir.path().join("link")).unwrap();
        for name in ["file", "dir", "link"] {
            let ours = with_key_path(dir.path(), name, stat_key_path).unwrap();
            let std = FileStat::from(&std::fs::metadata(dir.path().join(name)).unwrap());
            assert_eq!(ours, std, "{name}");
        }
        let file = with_key_path(dir.path(), "file", stat_key_path).unwrap();
        assert!(file.is_file);
        assert_eq!(file.size, 12);
        assert!(
            !with_key_path(dir.path(), "dir", stat_key_path)
                .unwrap()
                .is_file
        );
        let err = with_key_path(dir.path(), "absent", stat_key_path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn open_read_opens_a_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("present"), b"bytes").unwrap();
        let mut file = with_key_path(dir.path(), "present", open_key_path).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, "bytes");
        let err = with_key_path(dir.path(), "absent", open_key_path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
