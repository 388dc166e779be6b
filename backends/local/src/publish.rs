//! Publishing a staged file under its final name without replacing an existing one.
//!
//! On Linux the file is staged without a name (`O_TMPFILE` in the destination's
//! directory) and given its name by one `linkat(2)` of its descriptor once it is
//! complete (through `/proc/self/fd` where the kernel refuses that): atomic, refused
//! with `EEXIST` when the name is taken, and a writer killed before it leaves nothing
//! behind. Where unnamed files are not available (another system, a filesystem
//! without `O_TMPFILE`, neither way of linking one), the file is staged under a
//! hidden name and published by one `renameat2(RENAME_NOREPLACE)`, refused the same
//! way; a filesystem without that flag (`EINVAL`, as on some network filesystems)
//! falls back to `link(2)`, which refuses an existing destination just the same; the
//! staged name is then removed by its owner.

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

/// How this process names an unnamed file, learnt from the first links it makes.
#[cfg(target_os = "linux")]
static LINK_WAY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(WAY_UNKNOWN);
#[cfg(target_os = "linux")]
const WAY_UNKNOWN: u8 = 0;
/// `linkat(fd, "", …, AT_EMPTY_PATH)` names the file.
#[cfg(target_os = "linux")]
const WAY_DESCRIPTOR: u8 = 1;
/// Only the link through `/proc/self/fd` does (a kernel before 6.10 without
/// `CAP_DAC_READ_SEARCH`, or a sandbox that refuses the flag).
#[cfg(target_os = "linux")]
const WAY_PROC: u8 = 2;

/// Gives the unnamed `file` the name `dest`, unless `dest` exists (then
/// `AlreadyExists`).
///
/// The link is made from the descriptor itself (`AT_EMPTY_PATH`), which Linux allows
/// since 6.10 to the process that opened the file and before that only with
/// `CAP_DAC_READ_SEARCH`; it saves resolving `/proc/self/fd/<fd>`, about a tenth of
/// the time of a miss's system calls on the local store. A refusal looks like a
/// missing directory (`ENOENT`), so on `ENOENT` (or `EPERM`, from a sandbox) the link
/// is made again through `/proc/self/fd`, which needs no privilege: if that one
/// succeeds the process makes its links that way from then on; if it fails too, its
/// error is the answer.
#[cfg(target_os = "linux")]
pub(crate) fn link_unnamed(file: &File, dest: &CStr) -> io::Result<()> {
    link_either_way(
        &LINK_WAY,
        || link_by_descriptor(file, dest),
        || link_through_proc(file, dest),
    )
}

/// [`link_unnamed`]'s choice between its two ways, remembered in `way`.
#[cfg(target_os = "linux")]
fn link_either_way(
    way: &std::sync::atomic::AtomicU8,
    by_descriptor: impl FnOnce() -> io::Result<()>,
    through_proc: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    use std::sync::atomic::Ordering;
    if way.load(Ordering::Relaxed) == WAY_PROC {
        return through_proc();
    }
    match by_descriptor() {
        Ok(()) => {
            way.store(WAY_DESCRIPTOR, Ordering::Relaxed);
            Ok(())
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EPERM)) => {
            through_proc()?;
            way.store(WAY_PROC, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `linkat(fd, "", AT_FDCWD, dest, AT_EMPTY_PATH)`.
#[cfg(target_os = "linux")]
fn link_by_descriptor(file: &File, dest: &CStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the empty path and `dest` are valid C strings that outlive the call, and
    // `file` is an open descriptor.
    let rc = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dest.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    os_result(rc)
}

/// A link to `/proc/self/fd/<fd>`, followed: needs no privilege, only `/proc`.
#[cfg(target_os = "linux")]
fn link_through_proc(file: &File, dest: &CStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // `/proc/self/fd/<fd>`, the digits written in place.
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

    /// An unnamed file in `dir` holding `body`.
    #[cfg(target_os = "linux")]
    fn unnamed(dir: &Path, body: &str) -> File {
        let mut file = open_unnamed(dir).unwrap();
        io::Write::write_all(&mut file, body.as_bytes()).unwrap();
        file
    }

    #[cfg(target_os = "linux")]
    fn c_path(path: &Path) -> std::ffi::CString {
        std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn both_ways_of_naming_an_unnamed_file_publish_it_once() {
        let dir = tempfile::tempdir().unwrap();
        for (name, link) in [
            (
                "by-descriptor",
                link_by_descriptor as fn(&File, &CStr) -> io::Result<()>,
            ),
            ("through-proc", link_through_proc),
        ] {
            let dest = dir.path().join(name);
            let file = unnamed(dir.path(), name);
            if let Err(e) = link(&file, &c_path(&dest)) {
                // Before Linux 6.10 only `CAP_DAC_READ_SEARCH` may link a descriptor.
                assert_eq!(
                    (name, e.raw_os_error()),
                    ("by-descriptor", Some(libc::ENOENT))
                );
                eprintln!("this kernel refuses AT_EMPTY_PATH links: only /proc is tested");
                std::fs::write(&dest, name).unwrap();
                continue;
            }
            assert_eq!(std::fs::read_to_string(&dest).unwrap(), name);
            // A taken name is refused and keeps its file.
            let other = unnamed(dir.path(), "other");
            let e = link(&other, &c_path(&dest)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{name}");
            assert_eq!(std::fs::read_to_string(&dest).unwrap(), name);
        }
        // Nothing else was left in the directory: the refused files had no name.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["by-descriptor", "through-proc"]);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_refused_descriptor_link_turns_the_process_to_proc_links() {
        use std::sync::atomic::{AtomicU8, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let way = AtomicU8::new(WAY_UNKNOWN);
        let refused = || Err(io::Error::from_raw_os_error(libc::ENOENT));
        // A kernel that refuses `AT_EMPTY_PATH` answers `ENOENT`: the link is made
        // through `/proc`, and that way is kept.
        let file = unnamed(dir.path(), "first");
        let dest = c_path(&dir.path().join("first"));
        link_either_way(&way, refused, || link_through_proc(&file, &dest)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("first")).unwrap(),
            "first"
        );
        assert_eq!(way.load(Ordering::Relaxed), WAY_PROC);
        let file = unnamed(dir.path(), "second");
        let dest = c_path(&dir.path().join("second"));
        let not_tried = || panic!("the descriptor way is not tried again");
        link_either_way(&way, not_tried, || link_through_proc(&file, &dest)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("second")).unwrap(),
            "second"
        );

        // A taken name is the answer, whichever way: `/proc` is not asked.
        let way = AtomicU8::new(WAY_UNKNOWN);
        let taken = || Err(io::Error::from_raw_os_error(libc::EEXIST));
        let e = link_either_way(&way, taken, || panic!("not a refusal")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(way.load(Ordering::Relaxed), WAY_UNKNOWN);

        // A directory missing for both ways is reported, and decides nothing.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let file = unnamed(&sub, "body");
        std::fs::remove_dir(&sub).unwrap(); // an unnamed file holds no name there
        let dest = c_path(&sub.join("object"));
        let e = link_either_way(
            &way,
            || link_by_descriptor(&file, &dest),
            || link_through_proc(&file, &dest),
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(way.load(Ordering::Relaxed), WAY_UNKNOWN);
        // Made again, the name is given, and the way that gave it is remembered.
        std::fs::create_dir(&sub).unwrap();
        link_either_way(
            &way,
            || link_by_descriptor(&file, &dest),
            || link_through_proc(&file, &dest),
        )
        .unwrap();
        let probe = unnamed(dir.path(), "probe");
        let descriptor_works =
            link_by_descriptor(&probe, &c_path(&dir.path().join("probe"))).is_ok();
        let expected = if descriptor_works {
            WAY_DESCRIPTOR
        } else {
            WAY_PROC
        };
        assert_eq!(way.load(Ordering::Relaxed), expected);
        assert_eq!(std::fs::read_to_string(sub.join("object")).unwrap(), "body");
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
