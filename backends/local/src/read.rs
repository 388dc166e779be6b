//! Reading an object into one buffer of its final size.
//!
//! The buffer is not zeroed first: each read fills the part it lands in, and the
//! buffer's length is set only once every byte has landed. On a large object that
//! saves a pass over the whole buffer (zeroing 256 MiB takes tens of milliseconds).

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::mem::MaybeUninit;

use bytes::Bytes;
use cairn_backend::Inspector;

/// Objects larger than this are read in pieces of [`INSPECT_PIECE`] bytes, each
/// inspected on a second thread while the next is read.
pub(crate) const INSPECT_PIPELINE_MIN: u64 = 2 * INSPECT_PIECE as u64;
const INSPECT_PIECE: usize = 4 << 20;

/// Reads `len` bytes from `start` into one buffer, handing them to `inspect` in order:
/// in one piece when small, else piece by piece on a scoped thread that runs behind the
/// reads, so the inspection overlaps the I/O.
pub(crate) fn read_inspected(
    file: &mut File,
    start: u64,
    len: usize,
    inspect: Option<&mut Inspector>,
) -> io::Result<Bytes> {
    let inspect = match inspect {
        Some(inspect) if len as u64 >= INSPECT_PIPELINE_MIN => inspect,
        other => {
            let bytes = read_range(file, start, len)?;
            if let Some(inspect) = other {
                inspect(&bytes);
            }
            return Ok(bytes);
        }
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))?;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    std::thread::scope(|scope| -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<&[u8]>(4);
        let inspector = scope.spawn(move || {
            for piece in rx {
                inspect(piece);
            }
        });
        let mut result = Ok(());
        for piece in buf.spare_capacity_mut()[..len].chunks_mut(INSPECT_PIECE) {
            let landed = match read_exact_uninit(file, piece) {
                Ok(landed) => landed,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if tx.send(landed).is_err() {
                break;
            }
        }
        drop(tx);
        if inspector.join().is_err() {
            return Err(io::Error::other("the read's inspector panicked"));
        }
        result
    })?;
    // SAFETY: every piece of the first `len` bytes was filled by `read_exact_uninit`
    // (the scope returned early on any failure).
    unsafe { buf.set_len(len) };
    Ok(Bytes::from(buf))
}

/// Reads exactly `len` bytes from `start` into a new buffer.
pub(crate) fn read_range(file: &mut File, start: u64, len: usize) -> io::Result<Bytes> {
    // A file just opened is at its start: no seek (one system call less per hit).
    if start > 0 {
        file.seek(SeekFrom::Start(start))?;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    read_exact_uninit(file, &mut buf.spare_capacity_mut()[..len])?;
    // SAFETY: `read_exact_uninit` filled all `len` bytes.
    unsafe { buf.set_len(len) };
    Ok(Bytes::from(buf))
}

/// Fills `dst` from the file's current offset, retrying short and interrupted reads;
/// an end of file before `dst` is full is `UnexpectedEof`. Returns `dst`, now filled.
fn read_exact_uninit<'b>(file: &File, dst: &'b mut [MaybeUninit<u8>]) -> io::Result<&'b [u8]> {
    use std::os::fd::AsRawFd;
    let mut filled = 0;
    while filled < dst.len() {
        let rest = &mut dst[filled..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes; read(2) writes at
        // most that many and reports how many.
        let n = unsafe { libc::read(file.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
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
        let big = pattern(INSPECT_PIPELINE_MIN as usize + 10);
        let (_keep, mut file) = file_of(&big);
        let mut inspect: Inspector = Box::new(|p: &[u8]| assert!(!p.is_empty()));
        let e = read_inspected(&mut file, 0, big.len() + 1, Some(&mut inspect)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_pipelined_read_hands_every_byte_over_once_in_order() {
        let data = pattern(INSPECT_PIPELINE_MIN as usize + INSPECT_PIECE / 2 + 3);
        let (_keep, mut file) = file_of(&data);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut inspect: Inspector = {
            let seen = seen.clone();
            Box::new(move |p: &[u8]| seen.lock().unwrap().extend_from_slice(p))
        };
        let got = read_inspected(&mut file, 0, data.len(), Some(&mut inspect)).unwrap();
        assert_eq!(got, data);
        assert_eq!(*seen.lock().unwrap(), data);
        let (_keep, mut file) = file_of(&data);
        let got = read_inspected(&mut file, 5, data.len() - 5, Some(&mut inspect)).unwrap();
        assert_eq!(got, data[5..]);
    }
}
