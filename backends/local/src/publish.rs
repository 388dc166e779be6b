//! Publishing a staged file under its final name without replacing an existing one.
//!
//! On Linux the file is staged without a name (`O_TMPFILE` in the destination's
//! directory) and given its name by one `linkat(2)` once it is complete: atomic,
//! refused with `EEXIST` when the name is taken, and a writer killed before it leaves
//! nothing behind. Where unnamed files are not available (another system, a
//! filesystem without `O_TMPFILE`, no `/proc`), the file is staged under a hidden name
//! and published by one `renameat2(RENAME_NOREPLACE)`, refused the same way; a
//! filesystem without that flag (`EINVAL`, as on some network filesystems) falls back
//! to `link(2)`, which refuses an existing destination just the same; the staged name
//! is then removed by its owner.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Publishes `staged` as `dest` unless `dest` exists (then `AlreadyExists`). Returns
/// whether the staged name is gone (renamed); `false` means it was linked, and the
/// caller still removes it.
pub(crate) fn create_new(staged: &Path, dest: &Path) -> io::Result<bool> {
    match rename_no_replace(staged, dest) {
        Ok(()) => Ok(true),
        Err(e) if unsupported(&e) => link(staged, dest).map(|()| false),
        Err(e) => Err(e),
    }
}

/// The fallback of [`create_new`]: a hard link, which refuses an existing destination.
pub(crate) fn link(staged: &Path, dest: &Path) -> io::Result<()> {
    std::fs::hard_link(staged, dest)
}

pub(crate) fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

#[cfg(target_os = "linux")]
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let from = CString::new(from.as_os_str().as_bytes())?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    os_result(rc)
}

/// A system call's return code as a result: 0 is success, anything else the error in
/// `errno`.
#[cfg(target_os = "linux")]
fn os_result(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_no_replace(_from: &Path, _to: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// A new file without a name in `dir` (`O_TMPFILE`), to be written and then given its
/// name by [`link_unnamed`]. Fails with an error [`unsupported`] accepts where the
/// system or the filesystem has no unnamed files.
#[cfg(target_os = "linux")]
pub(crate) fn open_unnamed(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o666)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            // Kernels older than `O_TMPFILE` take it for `O_DIRECTORY`.
            Some(libc::EISDIR) => io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            _ => e,
        })
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn open_unnamed(_dir: &Path) -> io::Result<File> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Gives the unnamed `file` the name `dest`, unless `dest` exists (then
/// `AlreadyExists`): a link through `/proc/self/fd`, which needs no privilege.
#[cfg(target_os = "linux")]
pub(crate) fn link_unnamed(file: &File, dest: &CStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // `/proc/self/fd/<fd>`, the digits written in place (this runs on every miss).
    let mut from = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0\0";
    let fd = file.as_raw_fd() as u32;
    let digits = fd.checked_ilog10().unwrap_or(0) as usize + 1;
    let mut rest = fd;
    for slot in from[14..14 + digits].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    // SAFETY: `from` is NUL-terminated (a descriptor has at most 10 digits) and `dest`
    // is a valid C string; both outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr().cast(),
            libc::AT_FDCWD,
            dest.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    os_result(rc)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn link_unnamed(_file: &File, _dest: &CStr) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Whether unnamed staging works in `dir`: an unnamed file is made and linked as
/// `probe`, which is removed at once.
pub(crate) fn unnamed_works(dir: &Path, probe: &Path) -> bool {
    let Ok(file) = open_unnamed(dir) else {
        return false;
    };
    let linked = std::ffi::CString::new(probe.as_os_str().as_bytes())
        .is_ok_and(|probe| link_unnamed(&file, &probe).is_ok());
    if linked {
        let _ = std::fs::remove_file(probe);
    }
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn a_free_name_is_taken_by_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let from = staged(dir.path(), ".staged", "new");
        let dest = dir.path().join("object");
        let renamed = create_new(&from, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        // On Linux the staged name is gone at once; elsewhere it was linked.
        assert_eq!(renamed, !from.exists());
        assert_eq!(renamed, cfg!(target_os = "linux"));
    }

    #[test]
    fn a_taken_name_is_refused_and_kept_by_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let dest = staged(dir.path(), "object", "first");
        let from = staged(dir.path(), ".staged", "second");
        let e = create_new(&from, &dest).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let e = link(&from, &dest).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "first");
        assert_eq!(std::fs::read_to_string(&from).unwrap(), "second");
    }

    #[test]
    fn the_fallback_publishes_a_link_to_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let from = staged(dir.path(), ".staged", "linked");
        let dest = dir.path().join("object");
        link(&from, &dest).unwrap();
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (
            std::fs::metadata(&from).unwrap(),
            std::fs::metadata(&dest).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
        assert!(unsupported(&io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(!unsupported(&io::Error::from_raw_os_error(libc::EEXIST)));
    }
}
