//! A key's file below the root, written out for a system call: on the stack, with its
//! terminating NUL, instead of a `PathBuf` joined on the heap and copied again into a C
//! string by the standard library.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Opens the file at `path` for reading, without updating its access time while
/// `noatime` holds (see [`open_read`]).
pub(crate) fn open_key_path(path: KeyPath<'_>, noatime: &AtomicBool) -> io::Result<File> {
    open_read(path.c_str(), noatime, open_flags)
}

/// The flag that keeps a read from updating the file's access time, where there is one.
#[cfg(any(target_os = "linux", target_os = "android"))]
const NOATIME: libc::c_int = libc::O_NOATIME;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const NOATIME: libc::c_int = 0;

/// Opens `path` for reading (close-on-exec) by `open`, with [`NOATIME`] while
/// `noatime` holds. The kernel refuses that flag (`EPERM`) on a file the process does
/// not own, unless it may change any file's owner-only attributes (`CAP_FOWNER`): such
/// a file is opened again without it, and `noatime` is cleared, so that the reads of
/// a store of another user's files pay the refused call once, not on every read.
fn open_read(
    path: &CStr,
    noatime: &AtomicBool,
    open: impl Fn(&CStr, libc::c_int) -> io::Result<File>,
) -> io::Result<File> {
    let flags = libc::O_RDONLY | libc::O_CLOEXEC;
    if NOATIME != 0 && noatime.load(Ordering::Relaxed) {
        match open(path, flags | NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                noatime.store(false, Ordering::Relaxed);
            }
            done => return done,
        }
    }
    open(path, flags)
}

/// `open(2)` of `path` with `flags`.
fn open_flags(path: &CStr, flags: libc::c_int) -> io::Result<File> {
    retrying(|| {
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        let fd = unsafe { libc::open(path.as_ptr(), flags) };
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
pub(crate) mod tests {
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
        let noatime = AtomicBool::new(true);
        let open = |p: KeyPath<'_>| open_key_path(p, &noatime);
        let mut file = with_key_path(&root(dir.path()), &key("present"), open).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, "bytes");
        let err = with_key_path(&root(dir.path()), &key("absent"), open).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            noatime.load(Ordering::Relaxed),
            "a missing file is no refusal"
        );
    }

    /// The file's access time, in nanoseconds.
    fn atime(path: &Path) -> i128 {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).unwrap();
        i128::from(m.atime()) * 1_000_000_000 + i128::from(m.atime_nsec())
    }

    /// Sets the access and modification times of the file at `path` three days back,
    /// so that a read updates the access time under `relatime` as under `strictatime`.
    pub(crate) fn three_days_old(path: &Path) {
        let then = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
        let times = std::fs::FileTimes::new()
            .set_accessed(then)
            .set_modified(then);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_times(times)
            .unwrap();
    }

    /// Writes `name` below `dir`, [`three_days_old`].
    fn old_file(dir: &Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"record bytes").unwrap();
        three_days_old(&path);
        path
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_read_leaves_the_access_time_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        // Whether this filesystem keeps access times at all (not under `noatime`).
        let control = old_file(dir.path(), "control");
        let before = atime(&control);
        std::fs::read(&control).unwrap();
        if atime(&control) == before {
            eprintln!("the filesystem of {:?} keeps no access times", dir.path());
            return;
        }
        let read_all = |name: &str, noatime: bool| {
            let flag = AtomicBool::new(noatime);
            let mut file =
                with_key_path(&root(dir.path()), &key(name), |p| open_key_path(p, &flag)).unwrap();
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut file, &mut bytes).unwrap();
            assert_eq!(bytes, b"record bytes");
        };
        let quiet = old_file(dir.path(), "quiet");
        let before = atime(&quiet);
        read_all("quiet", true);
        assert_eq!(
            atime(&quiet),
            before,
            "a read with O_NOATIME moved the access time"
        );
        // The same read without the flag moves it: the flag is what kept it.
        read_all("quiet", false);
        assert!(
            atime(&quiet) > before,
            "a plain read did not update the access time"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_refused_noatime_opens_again_without_it_and_stops_asking() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_file(dir.path(), "theirs");
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let asked = std::sync::Mutex::new(Vec::new());
        // As the kernel answers for a file of another user: EPERM to the flag.
        let refusing = |p: &CStr, flags: libc::c_int| {
            asked.lock().unwrap().push(flags & libc::O_NOATIME != 0);
            if flags & libc::O_NOATIME != 0 {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            open_flags(p, flags)
        };
        let noatime = AtomicBool::new(true);
        open_read(&c_path, &noatime, refusing).unwrap();
        assert_eq!(*asked.lock().unwrap(), [true, false]);
        assert!(!noatime.load(Ordering::Relaxed));
        open_read(&c_path, &noatime, refusing).unwrap();
        assert_eq!(*asked.lock().unwrap(), [true, false, false], "asked again");
        // Any other error is the answer, not a reason to open again.
        let missing =
            std::ffi::CString::new(dir.path().join("absent").as_os_str().as_bytes()).unwrap();
        let noatime = AtomicBool::new(true);
        let err = open_read(&missing, &noatime, open_flags).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(noatime.load(Ordering::Relaxed));
    }

    /// The kernel's own refusal: a file the reading thread does not own. Run as root,
    /// the thread takes another filesystem user id (which drops `CAP_FOWNER`); run as
    /// another user, it reads a file of root's.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_of_another_user_is_read_and_the_flag_given_up() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let record = old_file(dir.path(), "record");
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o644)).unwrap();
        // SAFETY: geteuid has no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        let (target, name) = if root_user {
            (dir.path().to_path_buf(), "record".to_owned())
        } else {
            // A file of root's that any user may read, when there is one.
            let theirs = ["/etc/passwd", "/etc/hostname", "/bin/sh"]
                .into_iter()
                .map(Path::new)
                .find(|f| {
                    std::fs::metadata(f).is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
                        && std::fs::File::open(f).is_ok()
                });
            let Some(theirs) = theirs else {
                eprintln!("no readable file of root's to read");
                return;
            };
            let name = theirs.file_name().unwrap().to_str().unwrap().to_owned();
            (theirs.parent().unwrap().to_path_buf(), name)
        };
        std::thread::spawn(move || {
            if root_user {
                // SAFETY: setfsuid changes this thread's filesystem user id only.
                unsafe { libc::setfsuid(65_534) };
            }
            let noatime = AtomicBool::new(true);
            let file = with_key_path(&root(&target), &key(&name), |p| open_key_path(p, &noatime));
            assert!(file.is_ok(), "{:?}", file.err());
            assert!(
                !noatime.load(Ordering::Relaxed),
                "the kernel did not refuse the flag"
            );
        })
        .join()
        .unwrap();
    }
}
