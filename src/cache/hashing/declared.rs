//! Declared hashes (Flyte's `HashMethod`): [`CacheHash`], [`Hashed`], [`FileInput`] and
//! [`by_cache_hash`].

use super::*;

/// A type that supplies its own digest for cache keys (Flyte's `HashMethod`): a data
/// frame by a digest of its columns, a model by its weights' checksum, a file by its
/// content.
///
/// The digest stands for the value in a key, encoded as `H` + its 32 bytes, so it can
/// never be mistaken for an ordinary value's encoding. Two values the method gives the
/// same digest share cache entries: make it as discriminating as the value's effect
/// on the result.
///
/// Pass such a value with [`KeyHasher::add_input_hash`], or inside a `Serialize` type
/// with `#[serde(serialize_with = "cairn::hashing::by_cache_hash")]`.
///
/// ```
/// use cairn::hashing::{CacheHash, ContentHasher, Digest, HashError, KeyHasher};
///
/// struct Model { name: String, weights: Vec<f32> }
///
/// impl CacheHash for Model {
///     fn cache_digest(&self) -> Result<Digest, HashError> {
///         let mut h = ContentHasher::new();
///         h.str(&self.name).value(&self.weights)?;
///         Ok(h.finalize())
///     }
/// }
///
/// let model = Model { name: "tiny".into(), weights: vec![0.5; 4] };
/// let mut key = KeyHasher::new();
/// key.add_input_hash("model", &model)?;
/// # Ok::<(), HashError>(())
/// ```
pub trait CacheHash {
    /// The digest that stands for `self` in cache keys.
    ///
    /// # Errors
    /// [`HashError`] when the value cannot be hashed; [`KeyHasher`] adds the input's
    /// name to it.
    fn cache_digest(&self) -> Result<Digest, HashError>;
}

impl<T: CacheHash + ?Sized> CacheHash for &T {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        (**self).cache_digest()
    }
}

impl<T: CacheHash + ?Sized> CacheHash for Box<T> {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        (**self).cache_digest()
    }
}

impl<T: CacheHash + ?Sized> CacheHash for std::sync::Arc<T> {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        (**self).cache_digest()
    }
}

impl CacheHash for Digest {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        Ok(*self)
    }
}

/// Serializes a [`CacheHash`] field by its digest, for
/// `#[serde(serialize_with = "cairn::hashing::by_cache_hash")]`.
///
/// When hashed, the field stands for its digest (`H` + 32 bytes); any other serializer
/// gets the digest as hex.
///
/// ```
/// use cairn::hashing::{hash_value, by_cache_hash, Hashed, ContentHasher};
/// use serde::Serialize;
///
/// struct Frame(Vec<u64>); // no Serialize
/// impl cairn::hashing::CacheHash for Frame {
///     fn cache_digest(&self) -> Result<cairn::hashing::Digest, cairn::hashing::HashError> {
///         cairn::hashing::hash_value(&self.0)
///     }
/// }
///
/// #[derive(Serialize)]
/// struct Inputs { #[serde(serialize_with = "by_cache_hash")] frame: Frame, limit: u32 }
///
/// let a = Inputs { frame: Frame(vec![1, 2, 3]), limit: 10 };
/// let b = Inputs { frame: Frame(vec![1, 2, 4]), limit: 10 };
/// assert_ne!(hash_value(&a)?, hash_value(&b)?);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
pub fn by_cache_hash<T, S>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: CacheHash + ?Sized,
    S: Serializer,
{
    if need() == Need::NotAByte {
        return serialize_not_a_byte(serializer);
    }
    let digest = value
        .cache_digest()
        .map_err(|e| S::Error::custom(e.cause()))?;
    serialize_as_digest(serializer, digest, &digest.to_hex())
}

/// A value with a declared digest: keys built from it use the digest, never the value.
///
/// This is how a task declares a hash for its output (Flyte's `Annotated[T,
/// HashMethod(f)]`): it returns `Hashed<T>`, computed once by [`Hashed::compute`] (a
/// hash method of your choice), [`Hashed::by_value`] (the canonical encoding, computed
/// once instead of at every downstream key) or [`Hashed::by_cache_hash`]; downstream
/// tasks that take it as an input are keyed by the digest.
///
/// `Hashed<T>` serializes as `T` to every serializer but cairn's hash encoder, so it
/// is stored exactly as `T` would be. It dereferences to `T`.
///
/// ```
/// use cairn::hashing::{hash_value, Hashed};
///
/// let rows = Hashed::by_value(vec![1u32, 2, 3])?;
/// assert_eq!(rows.digest(), hash_value(&vec![1u32, 2, 3])?);
/// assert_eq!(serde_json::to_string(&rows).unwrap(), "[1,2,3]"); // stored as the value
/// assert_eq!(hash_value(&rows)?, hash_value(&rows.digest())?);  // hashed as the digest
/// assert_eq!(rows.len(), 3);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashed<T> {
    pub(super) value: T,
    pub(super) digest: Digest,
}

impl<T> Hashed<T> {
    /// `value`, declared to have `digest`. The caller vouches for the digest.
    pub fn new(value: T, digest: Digest) -> Self {
        Hashed { value, digest }
    }

    /// `value` with the digest that `method` computes from it.
    ///
    /// # Errors
    /// Whatever `method` returns.
    pub fn compute(
        value: T,
        method: impl FnOnce(&T) -> Result<Digest, HashError>,
    ) -> Result<Self, HashError> {
        let digest = method(&value)?;
        Ok(Hashed { value, digest })
    }

    /// The declared digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The value, without its digest.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T: Serialize> Hashed<T> {
    /// `value` with its canonical digest ([`hash_value`]), computed once.
    ///
    /// # Errors
    /// [`HashError`] when the value cannot be hashed.
    pub fn by_value(value: T) -> Result<Self, HashError> {
        let digest = hash_value(&value)?;
        Ok(Hashed { value, digest })
    }
}

impl<T: CacheHash> Hashed<T> {
    /// `value` with the digest its [`CacheHash`] gives, computed once.
    ///
    /// # Errors
    /// Whatever [`CacheHash::cache_digest`] returns.
    pub fn by_cache_hash(value: T) -> Result<Self, HashError> {
        let digest = value.cache_digest()?;
        Ok(Hashed { value, digest })
    }
}

impl<T> std::ops::Deref for Hashed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> CacheHash for Hashed<T> {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        Ok(self.digest)
    }
}

impl<T: Serialize> Serialize for Hashed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let result = serialize_as_digest(serializer, self.digest, &self.value);
        // After the value: the order in which deserialization meets them (inner
        // `Hashed` values first).
        DECLARED_OUT.with(|out| {
            if let Some(out) = out.borrow_mut().as_mut() {
                out.push(self.digest);
            }
        });
        result
    }
}

std::thread_local! {
    /// While a record's payload is serialized: the digests of the `Hashed` values in
    /// it, in order.
    static DECLARED_OUT: std::cell::RefCell<Option<Vec<Digest>>> = const { std::cell::RefCell::new(None) };
    /// While a record's payload is deserialized: the digests its header declares, in
    /// order, for the `Hashed` values in it.
    static DECLARED_IN: std::cell::RefCell<Option<std::collections::VecDeque<Digest>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `serialize` (a record payload's serialization, on this thread), collecting the
/// declared digests of the [`Hashed`] values it writes, in order.
pub(crate) fn collect_declared<R>(serialize: impl FnOnce() -> R) -> (R, Vec<Digest>) {
    let previous = DECLARED_OUT.with(|out| out.replace(Some(Vec::new())));
    let result = serialize();
    let digests = DECLARED_OUT
        .with(|out| out.replace(previous))
        .unwrap_or_default();
    (result, digests)
}

/// Runs `deserialize` (a record payload's deserialization, on this thread), giving
/// the [`Hashed`] values it reads the digests `declared`, in order.
pub(crate) fn restore_declared<R>(declared: Vec<Digest>, deserialize: impl FnOnce() -> R) -> R {
    if declared.is_empty() {
        return deserialize();
    }
    let previous = DECLARED_IN.with(|d| d.replace(Some(declared.into())));
    let result = deserialize();
    DECLARED_IN.with(|d| d.replace(previous));
    result
}

/// Read back from a cache record or a checkpoint record, a `Hashed<T>` has the digest
/// it was declared with: the record's header carries the declared digests of the
/// `Hashed` values in its payload, so a downstream task is keyed the same whether its
/// upstream ran or was `Cached`, in this process or another. The payload itself is
/// exactly `T`'s bytes.
///
/// Read from anything else (a target, which is plain bytes, or other JSON), it is the
/// value with its canonical digest, as [`Hashed::by_value`] gives.
///
/// ```
/// use cairn::hashing::Hashed;
/// let rows = Hashed::by_value(vec![1u32, 2, 3])?;
/// let back: Hashed<Vec<u32>> = serde_json::from_str(&serde_json::to_string(&rows).unwrap()).unwrap();
/// assert_eq!(back, rows);
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
impl<'de, T: Serialize + serde::Deserialize<'de>> serde::Deserialize<'de> for Hashed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = T::deserialize(deserializer)?;
        let declared = DECLARED_IN.with(|d| d.borrow_mut().as_mut().and_then(|d| d.pop_front()));
        match declared {
            Some(digest) => Ok(Hashed { value, digest }),
            None => Hashed::by_value(value).map_err(serde::de::Error::custom),
        }
    }
}

/// A file input, keyed by its content rather than its path (see [`hash_file`]).
///
/// Moving or renaming the file keeps the key; changing a byte of it changes the key.
/// When hashed, the file is read (an unreadable file is a [`HashError`]); every other
/// serializer gets the path, so it is stored and shown as a path.
///
/// ```
/// use cairn::hashing::{hash_value, FileInput};
///
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("a.csv"), "x\n1\n").unwrap();
/// std::fs::write(dir.path().join("b.csv"), "x\n1\n").unwrap();
/// let a = FileInput::new(dir.path().join("a.csv"));
/// let b = FileInput::new(dir.path().join("b.csv"));
/// assert_eq!(hash_value(&a)?, hash_value(&b)?); // same content, different paths
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(transparent)]
pub struct FileInput {
    pub(super) path: PathBuf,
}

impl FileInput {
    /// The file at `path`. Nothing is read until it is hashed.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileInput { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl CacheHash for FileInput {
    fn cache_digest(&self) -> Result<Digest, HashError> {
        hash_file(&self.path)
    }
}

impl Serialize for FileInput {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match need() {
            Need::Value => return self.path.serialize(serializer),
            Need::NotAByte => return serialize_not_a_byte(serializer),
            Need::Digest => {}
        }
        let digest = hash_file(&self.path).map_err(|e| S::Error::custom(e.cause()))?;
        serialize_as_digest(serializer, digest, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde::Serialize;

    use super::*;
    use crate::cache::hashing::test_support::*;

    #[test]
    fn hashed_values_are_stored_as_themselves_and_keyed_by_their_digest() {
        let declared = Digest::from_bytes([9; 32]);
        let value = Hashed::new(vec![1.5f64, 2.5], declared);
        assert_eq!(serde_json::to_string(&value).unwrap(), "[1.5,2.5]");
        assert_eq!(
            rmp_serde::to_vec(&value).unwrap(),
            rmp_serde::to_vec(&vec![1.5f64, 2.5]).unwrap()
        );
        assert_eq!(hash_value(&value).unwrap(), hash_value(&declared).unwrap());

        #[derive(Serialize)]
        struct Inputs {
            frame: Hashed<Vec<f64>>,
            limit: u32,
        }
        let inputs = Inputs {
            frame: value.clone(),
            limit: 3,
        };
        let mut manual = Manual::new()
            .tag(b'M')
            .len(2)
            .str("frame")
            .tag(b'H')
            .raw(&[9; 32]);
        manual = manual.str("limit").int(3);
        assert_eq!(hex(&inputs), manual.digest());
        assert_eq!(
            serde_json::to_string(&inputs).unwrap(),
            r#"{"frame":[1.5,2.5],"limit":3}"#
        );

        let mut key = KeyHasher::new();
        key.add_input_hash("frame", &value).unwrap();
        assert_eq!(key.inputs()["frame"], declared);

        let computed = Hashed::by_value(vec![1u8, 2]).unwrap();
        assert_eq!(computed.digest(), hash_value(&vec![1u8, 2]).unwrap());
        let failing = Hashed::compute(0u8, |_| Err(HashError::new("no method")));
        assert_eq!(failing.unwrap_err().cause(), "no method");
    }

    #[test]
    fn cache_hash_fields_are_keyed_by_their_method() {
        struct Frame(Vec<u64>);
        impl CacheHash for Frame {
            fn cache_digest(&self) -> Result<Digest, HashError> {
                if self.0.is_empty() {
                    return Err(HashError::new("an empty frame has no digest"));
                }
                hash_value(&self.0)
            }
        }
        #[derive(Serialize)]
        struct Inputs {
            #[serde(serialize_with = "by_cache_hash")]
            frame: Frame,
        }
        let inputs = Inputs {
            frame: Frame(vec![1, 2]),
        };
        let digest = hash_value(&vec![1u64, 2]).unwrap();
        let expected = Manual::new()
            .tag(b'M')
            .len(1)
            .str("frame")
            .tag(b'H')
            .raw(digest.as_bytes());
        assert_eq!(hex(&inputs), expected.digest());
        assert_eq!(
            serde_json::to_string(&inputs).unwrap(),
            format!(r#"{{"frame":"{digest}"}}"#)
        );
        let err = KeyHasher::new()
            .add_input(
                "inputs",
                &Inputs {
                    frame: Frame(vec![]),
                },
            )
            .unwrap_err();
        assert_eq!(err.path(), ".frame");
        assert_eq!(err.cause(), "an empty frame has no digest");
    }

    #[test]
    fn hash_methods_run_once_per_value() {
        thread_local!(static CALLS: Cell<usize> = const { Cell::new(0) });
        struct Counted(u8);
        impl CacheHash for Counted {
            fn cache_digest(&self) -> Result<Digest, HashError> {
                CALLS.with(|c| c.set(c.get() + 1));
                Ok(Digest::from_bytes([self.0; 32]))
            }
        }
        #[derive(Serialize)]
        struct Element(#[serde(serialize_with = "by_cache_hash")] Counted);

        // The first element of a list is probed for a byte before it is encoded.
        let list = vec![Element(Counted(1)), Element(Counted(2))];
        let expected = Manual::new()
            .tag(b'L')
            .len(2)
            .tag(b'H')
            .raw(&[1; 32])
            .tag(b'H')
            .raw(&[2; 32]);
        assert_eq!(hex(&list), expected.digest());
        assert_eq!(CALLS.with(Cell::get), 2);
    }

    #[test]
    fn a_digest_marker_without_a_digest_is_an_error() {
        struct Forged;
        impl Serialize for Forged {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_newtype_struct(DIGEST_MARKER, &[0u8; 32])
            }
        }
        assert!(hash_value(&Forged).is_err());
    }
}
