//! An input's part of a cache key: its canonical encoding itself when that is short,
//! its digest otherwise.
//!
//! A digest is a function of the encoding, so a short encoding stands for its digest
//! exactly: the keys a thread remembers ([`super::key_memo`]) are looked up by it, and
//! a call whose inputs are short and were seen lately hashes none of them.

use super::*;

/// Encodings of at most this many bytes (a number, a short string, a pair of them)
/// are kept as they are.
pub(crate) const SHORT: usize = 64;

/// An input's canonical encoding when it is at most [`SHORT`] bytes, else its digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InputPart {
    Short { len: u8, bytes: [u8; SHORT] },
    Digest(Digest),
}

impl InputPart {
    /// The input's digest, as [`hash_value`] gives it.
    pub(crate) fn digest(&self) -> Digest {
        match self {
            InputPart::Short { len, bytes } => blake3::hash(&bytes[..usize::from(*len)]).into(),
            InputPart::Digest(digest) => *digest,
        }
    }

    /// Written out unambiguously: a tag, then the length and the bytes, or the digest.
    pub(super) fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            InputPart::Short { len, bytes } => {
                out.push(1);
                out.push(*len);
                out.extend_from_slice(&bytes[..usize::from(*len)]);
            }
            InputPart::Digest(digest) => {
                out.push(0);
                out.extend_from_slice(&digest.0);
            }
        }
    }
}

impl From<Digest> for InputPart {
    fn from(digest: Digest) -> Self {
        InputPart::Digest(digest)
    }
}

/// `value`'s part of a key: its canonical encoding when short, else its digest.
///
/// # Errors
/// [`HashError`] when the value's `Serialize` implementation fails.
pub(crate) fn input_part<T: Serialize + ?Sized>(value: &T) -> Result<InputPart, HashError> {
    let _hashing = HashingGuard::enter();
    let mut prefix = Prefix {
        bytes: [0; SHORT],
        len: 0,
        hasher: None,
    };
    value
        .serialize(&mut Encoder {
            sink: Sink::Prefix(&mut prefix),
        })
        .map_err(HashError::from_encode)?;
    Ok(match prefix.hasher {
        None => InputPart::Short {
            len: prefix.len as u8,
            bytes: prefix.bytes,
        },
        Some(hasher) => InputPart::Digest(hasher.finalize().into()),
    })
}

/// The encoder's sink for [`input_part()`]: the first bytes kept, and once they no longer
/// fit, everything hashed.
pub(super) struct Prefix {
    bytes: [u8; SHORT],
    len: usize,
    hasher: Option<blake3::Hasher>,
}

impl Prefix {
    pub(super) fn write(&mut self, data: &[u8]) {
        if let Some(hasher) = &mut self.hasher {
            return update(hasher, data);
        }
        let end = self.len + data.len();
        if end <= SHORT {
            self.bytes[self.len..end].copy_from_slice(data);
            self.len = end;
            return;
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.bytes[..self.len]);
        update(&mut hasher, data);
        self.hasher = Some(hasher);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    /// A value's part stands for exactly its digest, whether the encoding is kept or
    /// hashed, at every length around the limit and well past it.
    #[test]
    fn a_part_gives_the_values_digest_at_every_length() {
        for len in 0..200 {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let bytes = Blob(vec![7u8; len]);
            for part in [input_part(&text).unwrap(), input_part(&bytes).unwrap()] {
                // A string's and a byte string's encoding: a tag and a length, 9 bytes.
                let expect_short = len + 9 <= SHORT;
                assert_eq!(
                    matches!(part, InputPart::Short { .. }),
                    expect_short,
                    "{len}"
                );
            }
            assert_eq!(
                input_part(&text).unwrap().digest(),
                hash_value(&text).unwrap()
            );
            assert_eq!(
                input_part(&bytes).unwrap().digest(),
                hash_value(&bytes).unwrap()
            );
        }
        let big = Blob(vec![1u8; 3 << 20]);
        assert_eq!(
            input_part(&big).unwrap(),
            InputPart::Digest(hash_value(&big).unwrap())
        );
    }

    #[test]
    fn numbers_tuples_maps_and_declared_digests_give_their_digests() {
        fn same<T: Serialize + ?Sized>(value: &T) {
            assert_eq!(
                input_part(value).unwrap().digest(),
                hash_value(value).unwrap()
            );
        }
        same(&7u64);
        same(&-3i32);
        same(&1.5f64);
        same(&(1u64, "two", 3.0f32));
        same(&Some(vec![1u8, 2, 3]));
        let map: HashMap<&str, u64> = (0..20)
            .map(|i| (["a", "b", "c", "d"][i % 4], i as u64))
            .collect();
        same(&map);
        let sorted: BTreeMap<String, Vec<u64>> = (0..10)
            .map(|i| (format!("k{i}"), vec![i; i as usize]))
            .collect();
        same(&sorted);
        same(&Hashed::new(vec![1u8; 100], Digest::from_bytes([9; 32])));
        assert!(matches!(
            input_part(&7u64).unwrap(),
            InputPart::Short { len: 18, .. }
        ));
    }

    #[test]
    fn a_value_that_cannot_be_hashed_is_the_same_error() {
        struct Connection;
        impl Serialize for Connection {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(S::Error::custom("a live connection"))
            }
        }
        let ours = input_part(&Connection).unwrap_err();
        let theirs = hash_value(&Connection).unwrap_err();
        assert_eq!(ours.to_string(), theirs.to_string());
    }

    /// Distinct parts are written out distinctly: a short encoding never reads as a
    /// digest, nor one length as another.
    #[test]
    fn parts_are_written_out_unambiguously() {
        let mut seen = std::collections::HashSet::new();
        let digest = Digest::from_bytes([1; 32]);
        let mut short = [0u8; SHORT];
        short[..31].fill(1);
        let parts = [
            InputPart::Digest(digest),
            InputPart::Short {
                len: 31,
                bytes: short,
            },
            InputPart::Short {
                len: 30,
                bytes: short,
            },
            InputPart::Short {
                len: 0,
                bytes: [0; SHORT],
            },
        ];
        for part in parts {
            let mut out = Vec::new();
            part.write_to(&mut out);
            assert!(seen.insert(out), "{part:?}");
        }
    }
}
