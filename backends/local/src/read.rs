//! Reading an object into one buffer of its final size.
//!
//! The buffer is not zeroed first: each read fills the part it lands in, and the
//! buffer's length is set only once every byte has landed. On a large object that
//! saves a pass over the whole buffer (zeroing 256 MiB takes tens of milliseconds).

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

use bytes::Bytes;
use cairn_backend::Inspector;

/// Reads of at least this many bytes are split between threads, each reading its own
/// part of the buffer (at least half of this) with `pread`.
pub(crate) const PARALLEL_READ_MIN: usize = 8 << 20;

/// Reads `len` bytes from `start` into one buffer and hands them to `inspect` at once.
///
/// A large object is read on several threads and then inspected whole (a record's
/// digest is then computed on every core). Measured on a 2-core VM, 100 MB from the
/// page cache: two threads read in 28–35 ms and hash in 10 more, where one thread read
/// in 50–67 ms, or in about 55 with the hashing of each piece beside it on the other
/// core: copying into fresh memory, its page faults included, is the larger cost, and it
/// shares out across cores as well as the hashing does.
pub(crate) fn read_inspected(
    file: &mut File,
    start: u64,
    len: usize,
    inspect: Option<&mut Inspector>,
) -> io::Result<Bytes> {
    let bytes = read_range(file, start, len)?;
    if let Some(inspect) = inspect {
        inspect(&bytes);
    }
    Ok(bytes)
}

/// Reads exactly `len` bytes from `start` into a new buffer, split between threads when
/// large.
pub(crate) fn read_range(file: &mut File, start: u64, len: usize) -> io::Result<Bytes> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let dst = &mut buf.spare_capacity_mut()[..len];
    let threads = read_threads(len);
    if threads <= 1 {
        read_exact_uninit(file, dst, start)?;
    } else {
        let file = &*file;
        let per = len.div_ceil(threads);
        std::thread::scope(|scope| -> io::Result<()> {
            let mut parts = dst.chunks_mut(per).enumerate();
            let (_, first) = parts.next().expect("a read of at least one byte");
            let others: Vec<_> = parts
                .map(|(i, part)| {
                    let at = start + (i * per) as u64;
                    scope.spawn(move || read_exact_uninit(file, part, at).map(|_| ()))
                })
                .collect();
            let mut result = read_exact_uninit(file, first, start).map(|_| ());
            for other in others {
                let outcome = other
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a reading thread panicked")));
                result = result.and(outcome);
            }
            result
        })?;
    }
    // SAFETY: every one of the first `len` bytes was filled by `read_exact_uninit` (any
    // failure returned above).
    unsafe { buf.set_len(len) };
    Ok(Bytes::from(buf))
}

/// How many threads read `len` bytes: one below [`PARALLEL_READ_MIN`], else one per
/// core, at most 4 and at most one per half of that minimum.
fn read_threads(len: usize) -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    if len < PARALLEL_READ_MIN {
        return 1;
    }
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    cores.min(4).min(len / (PARALLEL_READ_MIN / 2))
}

/// Fills `dst` from offset `at` of the file with `pread`, retrying short and
/// interrupted reads; an end of file before `dst` is full is `UnexpectedEof`. Returns
/// `dst`, now filled. The file's own offset is neither used nor moved.
fn read_exact_uninit<'b>(
    file: &File,
    dst: &'b mut [MaybeUninit<u8>],
    at: u64,
) -> io::Result<&'b [u8]> {
    let mut filled = 0;
    while filled < dst.len() {
        match pread(file, &mut dst[filled..], at + filled as u64)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before the bytes its size promised",
                ))
            }
            n => filled += n,
        }
    }
    // SAFETY: all `dst.len()` bytes were written by the reads above.
    Ok(unsafe { assume_init(dst) })
}

/// Files shorter than this are read by [`read_short`]: one `pread`, no `fstat`.
pub(crate) const SHORT_READ: usize = 4096;

/// Reads the whole of a file shorter than [`SHORT_READ`] bytes with one `pread` into a
/// buffer on the stack, without asking the file's size first; `None` when the file
/// holds at least that many bytes (the caller then reads it by its size).
///
/// The read that comes back short marks the file's end. A `pread` of a regular file
/// returns fewer bytes than asked only there: Linux interrupts a read of a local or NFS
/// file only for a signal that kills the process, and an object's file is never
/// written in place (each publish links a new file). Should a filesystem ever answer
/// short elsewhere (a FUSE one may), a record's own length check reports the record
/// corrupt; its bytes are never taken for a shorter value. A directory is `EISDIR`.
pub(crate) fn read_short(file: &File) -> io::Result<Option<Bytes>> {
    let mut buf = [MaybeUninit::<u8>::uninit(); SHORT_READ];
    let n = pread(file, &mut buf, 0)?;
    if n == SHORT_READ {
        return Ok(None);
    }
    // SAFETY: `pread` wrote the first `n` bytes.
    Ok(Some(Bytes::copy_from_slice(unsafe {
        assume_init(&buf[..n])
    })))
}

/// One `pread` into `dst` from offset `at`, retried when a signal interrupts it: the
/// number of bytes read, 0 at the end of the file.
fn pread(file: &File, dst: &mut [MaybeUninit<u8>], at: u64) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let offset = libc::off_t::try_from(at)
        .map_err(|_| io::Error::other("a read offset beyond what the system takes"))?;
    loop {
        // SAFETY: `dst` is valid for writes of `dst.len()` bytes; pread(2) writes at
        // most that many and reports how many.
        let n =
            unsafe { libc::pread(file.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len(), offset) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `bytes` as initialized bytes.
///
/// # Safety
/// Every byte of `bytes` must have been written.
unsafe fn assume_init(bytes: &[MaybeUninit<u8>]) -> &[u8] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the caller vouches that
    // every byte is initialized.
    unsafe { &*(bytes as *const [MaybeUninit<u8>] as *const [u8]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = File::open(f.path()).unwrap();
        (f, file)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn a_range_reads_exactly_its_bytes() {
        let data = pattern(100_000);
        let (_keep, mut file) = file_of(&data);
        assert_eq!(read_range(&mut file, 0, 100_000).unwrap(), data);
        let (_keep, mut file) = file_of(&data);
        assert_eq!(read_range(&mut file, 777, 5_000).unwrap(), data[777..5_777]);
        let (_keep, mut file) = file_of(&data);
        assert!(read_range(&mut file, 0, 0).unwrap().is_empty());
    }

    #[test]
    fn a_file_shorter_than_promised_is_an_error_not_a_short_buffer() {
        let data = pattern(1_000);
        let (_keep, mut file) = file_of(&data);
        let e = read_range(&mut file, 0, 1_001).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Split between threads, the part that runs past the end fails the read.
        let big = pattern(PARALLEL_READ_MIN + 10);
        let (_keep, mut file) = file_of(&big);
        let mut inspect: Inspector = Box::new(|_: &[u8]| panic!("nothing read is inspected"));
        let e = read_inspected(&mut file, 0, big.len() + 1, Some(&mut inspect)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_large_read_lands_every_byte_in_place_and_is_inspected_once() {
        let data = pattern(3 * PARALLEL_READ_MIN + 12_345);
        let (_keep, mut file) = file_of(&data);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut inspect: Inspector = {
            let seen = seen.clone();
            Box::new(move |p: &[u8]| seen.lock().unwrap().push(p.to_vec()))
        };
        let got = read_inspected(&mut file, 0, data.len(), Some(&mut inspect)).unwrap();
        assert!(got == data);
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert!(seen.lock().unwrap()[0] == data);
        // From an offset, split or not, whatever the file's own offset.
        for (from, len) in [
            (5, data.len() - 5),
            (PARALLEL_READ_MIN + 1, PARALLEL_READ_MIN),
        ] {
            let got = read_range(&mut file, from as u64, len).unwrap();
            assert!(got == data[from..from + len], "{from}+{len}");
        }
    }

    #[test]
    fn a_short_read_is_the_whole_file_and_a_long_one_is_left_to_the_sized_read() {
        for len in [0, 1, 350, SHORT_READ - 1] {
            let data = pattern(len);
            let (_keep, file) = file_of(&data);
            let got = read_short(&file)
                .unwrap()
                .expect("a file shorter than the probe");
            assert!(got == data, "{len} bytes");
        }
        for len in [SHORT_READ, SHORT_READ + 1, 3 * SHORT_READ] {
            let (_keep, file) = file_of(&pattern(len));
            assert!(read_short(&file).unwrap().is_none(), "{len} bytes");
        }
        let dir = tempfile::tempdir().unwrap();
        let e = read_short(&File::open(dir.path()).unwrap()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
    }

    #[test]
    fn reads_are_split_only_when_large() {
        assert_eq!(read_threads(PARALLEL_READ_MIN - 1), 1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(read_threads(PARALLEL_READ_MIN), cores.min(2));
        assert_eq!(read_threads(1 << 30), cores.min(4));
    }
}
