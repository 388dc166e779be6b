//! Publishing a staged file under its final name without replacing an existing one.
//!
//! On Linux this is one `renameat2(RENAME_NOREPLACE)`: atomic, and refused with
//! `EEXIST` when the name is taken. A filesystem without that flag (`EINVAL`, as on
//! some network filesystems) falls back to `link(2)`, which refuses an existing
//! destination just the same; the staged name is then removed by its owner.

use std::io;
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

fn unsupported(e: &io::Error) -> bool {
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
