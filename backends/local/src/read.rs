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
    use std::os::fd::AsRawFd;
    let mut filled = 0;
    while filled < dst.len() {
        let rest = &mut dst[filled..];
        let offset = libc::off_t::try_from(at + filled as u64)
            .map_err(|_| io::Error::other("a read offset beyond what the system takes"))?;
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes; pread(2) writes at
        // most that many and reports how many.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                rest.as_mut_ptr().cast(),
                rest.len(),
                offset,
            )
        };
        match n {
            n if n > 0 => filled += n as usize,
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before the bytes its size promised",
                ))
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    // SAFETY: all `dst.len()` bytes were written by the reads above.
    Ok(unsafe { &*(dst as *const [MaybeUninit<u8>] as *const [u8]) })
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
    fn reads_are_split_only_when_large() {
        assert_eq!(read_threads(PARALLEL_READ_MIN - 1), 1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(read_threads(PARALLEL_READ_MIN), cores.min(2));
        assert_eq!(read_threads(1 << 30), cores.min(4));
    }
}
