//! A key's file below the root, written out for a system call: on the stack, with its
//! terminating NUL, instead of a `PathBuf` joined on the heap and copied again into a C
//! string by the standard library.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Paths of up to this many bytes, NUL included, are written on the stack; longer ones
/// (a deep root and a long key) on the heap.
const ON_STACK: usize = 384;

/// Calls `f` with `root/key` as a C string.
///
/// A key holds no NUL (keys refuse control characters); a root that does makes the
/// call fail with `InvalidInput`, as the standard library's would.
pub(crate) fn with_key_path<R>(
    root: &Path,
    key: &str,
    f: impl FnOnce(&CStr) -> io::Result<R>,
) -> io::Result<R> {
    let root = root.as_os_str().as_bytes();
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
    let path = CStr::from_bytes_with_nul(buf).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "file name contained an unexpected NUL byte",
        )
    })?;
    f(path)
}

/// Opens `path` for reading (close-on-exec), retrying a call interrupted by a signal.
pub(crate) fn open_read(path: &CStr) -> io::Result<File> {
    loop {
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_root_slash_key_on_the_stack_and_on_the_heap() {
        let root = Path::new("/var/data/store");
        let got = with_key_path(root, "cache/v1/ab/abcd", |p| Ok(p.to_owned())).unwrap();
        assert_eq!(got.to_bytes(), b"/var/data/store/cache/v1/ab/abcd");
        // Longer than the stack buffer: the same path, built on the heap.
        let key = "k/".repeat(300) + "end";
        let got = with_key_path(root, &key, |p| Ok(p.to_owned())).unwrap();
        assert_eq!(got.to_bytes(), format!("/var/data/store/{key}").as_bytes());
        // Exactly at the limit, and one byte over it.
        for extra in [0, 1] {
            let key = "x".repeat(ON_STACK - root.as_os_str().len() - 2 + extra);
            let got = with_key_path(root, &key, |p| Ok(p.to_owned())).unwrap();
            assert_eq!(got.to_bytes().len(), ON_STACK - 1 + extra);
        }
    }

    #[test]
    fn a_root_with_a_nul_byte_is_refused_not_cut_short() {
        let root = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/a\0b"));
        let err = with_key_path(root, "k", |_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn open_read_opens_a_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("present"), b"bytes").unwrap();
        let mut file = with_key_path(dir.path(), "present", open_read).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, "bytes");
        let err = with_key_path(dir.path(), "absent", open_read).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
