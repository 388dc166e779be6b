//! Content hashing of bytes and files: [`hash_file`], [`ContentHasher`], [`Blob`].

use super::*;

/// The digest of a file's content: the same as [`hash_value`] of a byte string holding
/// it (`hash_value(&Blob(std::fs::read(path)?))`), so a file and its bytes in memory
/// hash alike. Its path, name and times are not part of it.
///
/// The file is read in large chunks and hashed on all cores.
///
/// # Errors
/// [`HashError`] (with the I/O error as its source) when the file cannot be opened or
/// read, is a directory, or changes length while it is being read.
///
/// ```
/// use cairn::hashing::{hash_file, hash_value, Blob};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("data.csv");
/// std::fs::write(&path, "day,total\nmon,3\n").unwrap();
/// assert_eq!(hash_file(&path)?, hash_value(&Blob(b"day,total\nmon,3\n"))?);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
pub fn hash_file(path: impl AsRef<Path>) -> Result<Digest, HashError> {
    let mut hasher = ContentHasher::new();
    hasher.file(path)?;
    Ok(hasher.finalize())
}

/// A hasher that takes a sequence of values, byte strings, files and digests, each
/// written in its canonical encoding, and gives the digest of the whole.
///
/// Use it to write a hash method ([`CacheHash`], [`Hashed::compute`]) or a key
/// component ([`KeyHasher::component`]). A hasher holding exactly one value gives
/// that value's [`hash_value`].
///
/// After an error the hasher holds part of a value: drop it.
///
/// ```
/// use cairn::hashing::{hash_value, Blob, ContentHasher};
///
/// let mut h = ContentHasher::new();
/// h.bytes(b"abc");
/// assert_eq!(h.finalize(), hash_value(&Blob(b"abc"))?);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
#[derive(Clone, Default)]
pub struct ContentHasher {
    pub(super) hasher: blake3::Hasher,
}

impl fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentHasher")
            .field("bytes", &self.hasher.count())
            .finish()
    }
}

impl ContentHasher {
    /// An empty hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value's canonical encoding.
    ///
    /// # Errors
    /// [`HashError`] when the value's `Serialize` implementation fails.
    pub fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<&mut Self, HashError> {
        let _hashing = HashingGuard::enter();
        value
            .serialize(&mut Encoder::hasher(&mut self.hasher))
            .map_err(HashError::from_encode)?;
        Ok(self)
    }

    /// Adds a byte string (the same as `value(&Blob(bytes))`), on all cores when it is
    /// large.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        Encoder::hasher(&mut self.hasher).write_bytes(bytes);
        self
    }

    /// Adds a string (the same as `value(s)`).
    pub fn str(&mut self, s: &str) -> &mut Self {
        Encoder::hasher(&mut self.hasher).write_str(s);
        self
    }

    /// Adds a digest, standing for what it digests (the same as `value(digest)`).
    pub fn digest(&mut self, digest: &Digest) -> &mut Self {
        Encoder::hasher(&mut self.hasher).write_digest(&digest.0);
        self
    }

    /// Adds a file's content as a byte string (see [`hash_file`]).
    ///
    /// # Errors
    /// [`HashError`] when the file cannot be read, is a directory, or changes length
    /// while it is being read.
    pub fn file(&mut self, path: impl AsRef<Path>) -> Result<&mut Self, HashError> {
        write_file(&mut self.hasher, path.as_ref())?;
        Ok(self)
    }

    /// Ends a closure passed to [`KeyHasher::component`] or [`Hashed::compute`]-style
    /// helpers that return `Result<(), HashError>`: `|h| h.str("...").done()`.
    pub fn done(&mut self) -> Result<(), HashError> {
        Ok(())
    }

    /// The digest of everything added so far. The hasher can go on taking more.
    pub fn finalize(&self) -> Digest {
        self.hasher.finalize().into()
    }
}

pub(super) fn file_error(path: &Path, doing: &str, error: io::Error) -> HashError {
    let mut hash_error = HashError::from_source(error);
    hash_error.cause = format!(
        "cannot {doing} file '{}': {}",
        path.display(),
        hash_error.cause
    );
    hash_error
}

pub(super) fn write_file(hasher: &mut blake3::Hasher, path: &Path) -> Result<(), HashError> {
    let mut file = File::open(path).map_err(|e| file_error(path, "open", e))?;
    let metadata = file
        .metadata()
        .map_err(|e| file_error(path, "inspect", e))?;
    if metadata.is_dir() {
        return Err(HashError::new(format!(
            "'{}' is a directory, not a file; hash the files in it (a FileInput each) or \
             give it a hash method",
            path.display()
        )));
    }
    if !metadata.is_file() {
        // A pipe or a device: its length is only known once it is read.
        let mut content = Vec::new();
        file.read_to_end(&mut content)
            .map_err(|e| file_error(path, "read", e))?;
        Encoder::hasher(hasher).write_bytes(&content);
        return Ok(());
    }
    let len = metadata.len();
    let mut encoder = Encoder::hasher(hasher);
    encoder.write_tag(tag::BYTES);
    encoder.write(&len.to_le_bytes());
    let read = if len <= FILE_CHUNK as u64 {
        let mut content = Vec::with_capacity(len as usize);
        let read = (&mut file).take(len + 1).read_to_end(&mut content);
        encoder.write(&content);
        read.map(|n| n as u64)
    } else {
        // Chunks that end where the hasher's count is a multiple of the chunk size let
        // BLAKE3 hash each one as a single subtree; misaligned ones split into dozens
        // of small subtrees (7 GiB/s instead of 8.7 measured for 1 GiB on 2 cores).
        let count = match &encoder.sink {
            Sink::Hasher(hasher) => hasher.count(),
            Sink::Buffer(_) | Sink::Prefix(_) => unreachable!("a hasher encoder"),
        };
        let first = (FILE_CHUNK - (count % FILE_CHUNK as u64) as usize) % FILE_CHUNK;
        read_overlapped(&mut file, first, |chunk| encoder.write(chunk))
    };
    let read = read.map_err(|e| file_error(path, "read", e))?;
    if read != len {
        // The length is already hashed: the digest would be of neither version.
        let change = if read < len { "shrank" } else { "grew" };
        return Err(HashError::new(format!(
            "file '{}' {change} while it was being hashed ({len} bytes, then {read})",
            path.display()
        )));
    }
    Ok(())
}

/// Reads `file` to its end and hands each chunk, in order, to `consume`: first
/// `first` bytes (if not 0), then `FILE_CHUNK`s. A second thread reads the next chunk
/// while `consume` hashes this one, which makes a file in the page cache hash about as
/// fast as the same bytes in memory. Returns the number of bytes read.
pub(super) fn read_overlapped(
    file: &mut File,
    first: usize,
    mut consume: impl FnMut(&[u8]),
) -> io::Result<u64> {
    std::thread::scope(|scope| {
        // Two buffers go round: one being filled, one being hashed. Everything made
        // here is dropped before the scope joins the reader, so the reader never
        // waits on a channel nobody holds.
        let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<(Vec<u8>, usize)>>(1);
        let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(2);
        for _ in 0..2 {
            empty_tx
                .send(vec![0; FILE_CHUNK])
                .expect("room for two buffers");
        }
        scope.spawn(move || {
            let mut size = if first > 0 { first } else { FILE_CHUNK };
            while let Ok(mut buffer) = empty_rx.recv() {
                let filled = fill(file, &mut buffer[..size]);
                size = FILE_CHUNK;
                let last = !matches!(filled, Ok(n) if n > 0);
                if full_tx.send(filled.map(|n| (buffer, n))).is_err() || last {
                    break;
                }
            }
        });
        let mut total = 0u64;
        loop {
            match full_rx.recv() {
                Ok(Ok((_, 0))) => return Ok(total),
                Ok(Ok((buffer, n))) => {
                    consume(&buffer[..n]);
                    total += n as u64;
                    // The reader may have stopped already; the buffer is then unneeded.
                    let _ = empty_tx.send(buffer);
                }
                Ok(Err(error)) => return Err(error),
                Err(_) => return Err(io::Error::other("the file reader stopped")),
            }
        }
    })
}

/// Reads until `buffer` is full or the file ends; returns how much was read.
pub(super) fn fill(file: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Bytes that serialize as a byte string: `Blob(vec)` or `Blob(&slice)` hashes at
/// memory speed where a bare `Vec<u8>` goes through serde's element-by-element path.
/// Both give the same digest.
///
/// ```
/// use cairn::hashing::{hash_value, Blob};
///
/// let data = vec![7u8; 1 << 20];
/// assert_eq!(hash_value(&Blob(&data))?, hash_value(&data)?);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Blob<B>(pub B);

impl<B: AsRef<[u8]>> Serialize for Blob<B> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::cache::hashing::test_support::*;

    #[test]
    fn files_are_keyed_by_content_not_path() {
        let dir = tempfile::tempdir().unwrap();
        // Larger than a read chunk, and not a multiple of one.
        let content: Vec<u8> = (0..(9u32 << 20) + 17).map(|i| (i % 253) as u8).collect();
        std::fs::write(dir.path().join("a.bin"), &content).unwrap();
        std::fs::write(dir.path().join("b.bin"), &content).unwrap();
        std::fs::write(dir.path().join("empty"), b"").unwrap();

        let a = FileInput::new(dir.path().join("a.bin"));
        let b = FileInput::new(dir.path().join("b.bin"));
        assert_eq!(
            hash_file(a.path()).unwrap(),
            hash_value(&Bytes::from(content.clone())).unwrap()
        );
        assert_eq!(hex(&a), hex(&b));
        assert_eq!(hex(&a), hex(&hash_file(a.path()).unwrap()));
        assert_eq!(a.cache_digest().unwrap(), hash_file(a.path()).unwrap());
        assert_eq!(
            hash_file(dir.path().join("empty")).unwrap(),
            hash_value(&Blob(b"")).unwrap()
        );
        // Stored as its path.
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, serde_json::to_string(a.path()).unwrap());
        assert_eq!(serde_json::from_str::<FileInput>(&json).unwrap(), a);

        std::fs::write(dir.path().join("b.bin"), b"changed").unwrap();
        assert_ne!(hex(&a), hex(&b));

        let missing = FileInput::new(dir.path().join("missing.csv"));
        let err = KeyHasher::new().add_input("data", &missing).unwrap_err();
        assert_eq!(err.input(), Some("data"));
        assert!(err.cause().contains("missing.csv"), "{err}");
        let err = KeyHasher::new()
            .add_input_hash("data", &missing)
            .unwrap_err();
        assert!(std::error::Error::source(&err).is_some());
        let err = hash_file(dir.path()).unwrap_err();
        assert!(err.cause().contains("is a directory"), "{err}");
        std::fs::write(dir.path().join("small"), b"x,y\n").unwrap();
        assert_eq!(
            hash_file(dir.path().join("small")).unwrap(),
            hash_value(&Blob(b"x,y\n")).unwrap()
        );
        #[cfg(unix)]
        assert_eq!(
            hash_file("/dev/null").unwrap(),
            hash_value(&Blob(b"")).unwrap()
        );
    }
}
