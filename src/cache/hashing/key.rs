//! [`KeyHasher`]: a cache key from named inputs and named components.

use smallvec::SmallVec;

use super::key_memo::HeadSlot;

use super::*;

/// Builds a cache key from named inputs and named components.
///
/// Each input and each component is hashed on its own (so an error names it, and the
/// digests can be recorded to explain a miss); the key is the [`hash_value`] of the
/// tuple `("cairn-key", KEY_FORMAT_VERSION, components, inputs)`, where `components`
/// and `inputs` are maps from name to digest. The order in which inputs and components
/// are added does not matter; a name can be added only once.
///
/// ```
/// use cairn::hashing::{KeyHasher, KEY_FORMAT_VERSION};
///
/// let mut a = KeyHasher::new();
/// a.add_input("x", &1u32)?.add_input("y", "text")?;
/// a.component("version", |h| h.str("1.0").done())?;
///
/// let mut b = KeyHasher::new();
/// b.component("version", |h| h.str("1.0").done())?;
/// b.add_input("y", "text")?.add_input("x", &1u64)?;
/// assert_eq!(a.finish(), b.finish());
///
/// // An input that cannot be hashed is an error that names it.
/// struct Connection;
/// impl serde::Serialize for Connection {
///     fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
///         Err(serde::ser::Error::custom("a live connection cannot be serialized"))
///     }
/// }
/// let err = a.add_input("conn", &Connection).unwrap_err();
/// assert_eq!(err.input(), Some("conn"));
/// assert_eq!(
///     err.to_string(),
///     "input 'conn' cannot be hashed: a live connection cannot be serialized; exclude it \
///      from the cache key (e.g. INPUTS - \"conn\") or give it a hash method (implement \
///      CacheHash, or wrap it in Hashed or FileInput)",
/// );
/// # Ok::<(), cairn::hashing::HashError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct KeyHasher {
    pub(super) components: BTreeMap<String, Digest>,
    pub(super) inputs: BTreeMap<String, Digest>,
}

impl KeyHasher {
    /// A key with no inputs and no components yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the input `name` with the canonical digest of `value`.
    ///
    /// # Errors
    /// [`HashError`] naming the input when it cannot be hashed, or when an input of
    /// that name was already added.
    pub fn add_input<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<&mut Self, HashError> {
        let subject = Subject::Input(name.to_owned());
        let digest = hash_value(value).map_err(|e| e.with_subject(subject))?;
        self.add_input_digest(name, digest)
    }

    /// Adds the input `name`, keyed by its own digest ([`CacheHash`]: a [`Hashed`]
    /// output of an upstream task, a [`FileInput`], a type's hash method).
    ///
    /// # Errors
    /// [`HashError`] naming the input when its hash method fails, or when an input of
    /// that name was already added.
    pub fn add_input_hash<T: CacheHash + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<&mut Self, HashError> {
        let subject = Subject::Input(name.to_owned());
        let digest = value.cache_digest().map_err(|e| e.with_subject(subject))?;
        self.add_input_digest(name, digest)
    }

    /// Adds the input `name` with a digest computed elsewhere.
    ///
    /// # Errors
    /// [`HashError`] when an input of that name was already added.
    pub fn add_input_digest(&mut self, name: &str, digest: Digest) -> Result<&mut Self, HashError> {
        if self.inputs.insert(name.to_owned(), digest).is_some() {
            return Err(HashError::new("an input of this name was already added")
                .with_subject(Subject::Input(name.to_owned())));
        }
        Ok(self)
    }

    /// Adds the component `name` (task source, run id, a version, a salt, flow
    /// parameters, ...): whatever `write` adds to the [`ContentHasher`] it is given.
    ///
    /// # Errors
    /// [`HashError`] naming the component when `write` fails, or when a component of
    /// that name was already added.
    pub fn component(
        &mut self,
        name: &str,
        write: impl FnOnce(&mut ContentHasher) -> Result<(), HashError>,
    ) -> Result<&mut Self, HashError> {
        let subject = Subject::Component(name.to_owned());
        let mut hasher = ContentHasher::new();
        write(&mut hasher).map_err(|e| e.with_subject(subject.clone()))?;
        if self.components.contains_key(name) {
            return Err(
                HashError::new("a component of this name was already added").with_subject(subject)
            );
        }
        self.components.insert(name.to_owned(), hasher.finalize());
        Ok(self)
    }

    /// Adds the component `name` with the canonical digest of `value` (the same as
    /// `component(name, |h| h.value(value).map(|_| ()))`).
    ///
    /// # Errors
    /// [`HashError`] naming the component when `value` cannot be hashed, or when a
    /// component of that name was already added.
    pub fn component_value<T: Serialize + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<&mut Self, HashError> {
        self.component(name, |h| h.value(value).map(|_| ()))
    }

    /// Adds the component `name` with a digest computed elsewhere (the same as
    /// `component(name, |h| h.digest(&digest).done())` would give if `digest` were
    /// the digest of what `write` adds — i.e. the component's digest itself).
    ///
    /// # Errors
    /// [`HashError`] when a component of that name was already added.
    pub fn component_digest(&mut self, name: &str, digest: Digest) -> Result<&mut Self, HashError> {
        if self.components.contains_key(name) {
            return Err(HashError::new("a component of this name was already added")
                .with_subject(Subject::Component(name.to_owned())));
        }
        self.components.insert(name.to_owned(), digest);
        Ok(self)
    }

    /// The digest of each input added, by name.
    pub fn inputs(&self) -> &BTreeMap<String, Digest> {
        &self.inputs
    }

    /// The digest of each component added, by name.
    pub fn components(&self) -> &BTreeMap<String, Digest> {
        &self.components
    }

    /// The key.
    pub fn finish(&self) -> Digest {
        let inputs: Vec<(&str, InputPart)> = self
            .inputs
            .iter()
            .map(|(n, d)| (n.as_str(), InputPart::from(*d)))
            .collect();
        let components: Vec<(&str, Digest)> = self
            .components
            .iter()
            .map(|(n, d)| (n.as_str(), *d))
            .collect();
        key_from_input_parts(&components, None, &inputs).expect("map keys are distinct")
    }
}

/// The key [`KeyHasher::finish`] gives for these components and inputs — exactly
/// `hash_value(&("cairn-key", KEY_FORMAT_VERSION, components, inputs))` with both as
/// maps — written out directly into one buffer and hashed in one call, since it runs
/// on every cached call. Each input is given as its [`InputPart`]: a short input is
/// hashed only when its key is not remembered.
///
/// `list`, when given, stands for exactly these components (a task definition's own:
/// see [`super::key_memo::ListId`]).
///
/// # Errors
/// [`HashError`] naming the name that appears twice in one list.
pub(crate) fn key_from_input_parts<C: AsRef<str>, N: AsRef<str>>(
    components: &[(C, Digest)],
    list: Option<super::key_memo::ListId>,
    inputs: &[(N, InputPart)],
) -> Result<Digest, HashError> {
    super::key_memo::key_for(components, list, inputs, |components, inputs, head| {
        let mut components: SmallVec<[(&str, Digest); 8]> =
            components.iter().map(|(n, d)| (n.as_ref(), *d)).collect();
        let mut digests: SmallVec<[(&str, Digest); 4]> = inputs
            .iter()
            .map(|(n, p)| (n.as_ref(), p.digest()))
            .collect();
        derive_key(&mut components, &mut digests, head)
    })
}

/// [`key_from_input_parts`] with every input given by its digest.
#[cfg(test)]
fn key_from_parts(
    components: &[(&str, Digest)],
    inputs: &[(&str, Digest)],
) -> Result<Digest, HashError> {
    let parts: SmallVec<[(&str, InputPart); 4]> = inputs
        .iter()
        .map(|(n, d)| (*n, InputPart::from(*d)))
        .collect();
    key_from_input_parts(components, None, &parts)
}

/// [`key_from_input_parts`] without the memo: the encoding, hashed, from the hasher
/// `head` kept when it holds one for these components.
fn derive_key(
    components: &mut [(&str, Digest)],
    inputs: &mut [(&str, Digest)],
    head: Option<HeadSlot<'_>>,
) -> Result<Digest, HashError> {
    thread_local! {
        /// The buffer of the last key built on this thread, reused.
        static BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buffer = BUFFER.take();
    buffer.clear();
    buffer.reserve(64 + 64 * (components.len() + inputs.len()));
    let mut encoder = Encoder {
        sink: Sink::Buffer(buffer),
    };
    let digest = encode_key(&mut encoder, components, inputs, head);
    let mut buffer = encoder.into_buffer();
    if buffer.capacity() <= 64 << 10 {
        buffer.clear();
        BUFFER.set(buffer);
    }
    digest
}

/// The key's encoding hashed: its head (the tuple's start and the components), then
/// the inputs. The head is the same for every key of one list of components, so the
/// hasher that took it in is kept in `head` and a later key of the same list starts
/// from a copy of it: the head's BLAKE3 blocks (all but the last, partial one) and the
/// components' encoding are not done again. BLAKE3 taken in piece by piece gives the
/// digest of the whole.
fn encode_key(
    encoder: &mut Encoder<'static>,
    components: &mut [(&str, Digest)],
    inputs: &mut [(&str, Digest)],
    head: Option<HeadSlot<'_>>,
) -> Result<Digest, HashError> {
    let mut hasher = match head.as_ref().and_then(HeadSlot::kept) {
        Some(kept) => kept.clone(),
        None => {
            encoder.write_tag(tag::LIST);
            encoder.write_len(4);
            encoder.write_str("cairn-key");
            encoder.write_int(false, u128::from(KEY_FORMAT_VERSION));
            write_digest_map(encoder, components).map_err(|n| {
                HashError::new("a component of this name was already added")
                    .with_subject(Subject::Component(n))
            })?;
            let mut hasher = blake3::Hasher::new();
            hasher.update(encoder.buffered());
            encoder.clear();
            if let Some(head) = head {
                head.keep(&hasher);
            }
            hasher
        }
    };
    write_digest_map(encoder, inputs).map_err(|n| {
        HashError::new("an input of this name was already added").with_subject(Subject::Input(n))
    })?;
    hasher.update(encoder.buffered());
    Ok(hasher.finalize().into())
}

/// A map from names to digests, encoded as the serde path encodes it: entries sorted
/// by their bytes. Each entry's key encoding (`S`, the length as `u64` LE, the UTF-8
/// bytes) decides its place. Returns a name that appears twice.
pub(super) fn write_digest_map(
    encoder: &mut Encoder<'_>,
    entries: &mut [(&str, Digest)],
) -> Result<(), String> {
    if !entries
        .windows(2)
        .all(|w| entry_order(w[0].0, w[1].0).is_lt())
    {
        entries.sort_unstable_by(|a, b| entry_order(a.0, b.0));
        if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(w[0].0.to_owned());
        }
    }
    encoder.write_tag(tag::MAP);
    encoder.write_len(entries.len());
    for (name, digest) in entries.iter() {
        encoder.write_str(name);
        encoder.write_digest(&digest.0);
    }
    Ok(())
}

/// The order of two map entries with these (distinct) names in the encoding.
pub(super) fn entry_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a.len() as u64)
        .to_le_bytes()
        .cmp(&(b.len() as u64).to_le_bytes())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_key_encoding_is_the_serde_one() {
        // Names of many lengths, including lengths whose little-endian bytes sort
        // differently from their numeric order (255 vs 256, 1 vs 256).
        let lengths = [0usize, 1, 2, 7, 8, 9, 255, 256, 257, 300, 511, 512, 1000];
        for round in 0..20u32 {
            let mut key = KeyHasher::new();
            for (i, len) in lengths.iter().enumerate() {
                if (round as usize + i) % 3 == 0 {
                    continue;
                }
                let name: String =
                    std::iter::repeat_n(char::from(b'a' + (i as u8 % 26)), *len).collect();
                key.add_input(&name, &(round, i)).unwrap();
                key.component_value(&format!("{name}c"), &i).unwrap();
            }
            let serde_path = hash_value(&(
                "cairn-key",
                KEY_FORMAT_VERSION,
                key.components(),
                key.inputs(),
            ))
            .unwrap();
            assert_eq!(key.finish(), serde_path, "round {round}");
        }
        assert_eq!(
            KeyHasher::new().finish(),
            hash_value(&(
                "cairn-key",
                KEY_FORMAT_VERSION,
                BTreeMap::<String, Digest>::new(),
                BTreeMap::<String, Digest>::new()
            ))
            .unwrap()
        );
    }

    fn digest(n: u64) -> Digest {
        hash_value(&n).unwrap()
    }

    /// A remembered key is the one the parts derive, in any order; parts that only
    /// differ in where one name ends and the next begins are different parts.
    #[test]
    fn remembered_keys_are_the_derived_ones() {
        let names = [
            "",
            "a",
            "ab",
            "abc",
            "b",
            "bc",
            "c",
            "inputs",
            "task_source",
        ];
        for round in 0..200u64 {
            let pick = |i: u64| names[((round * 7 + i * 3) % names.len() as u64) as usize];
            let mut components = vec![(pick(0), digest(round)), (pick(5), digest(round + 1))];
            let inputs = vec![(pick(1), digest(round % 5))];
            components.dedup_by_key(|(n, _)| *n);
            let derived = derive_key(&mut components.clone(), &mut inputs.clone(), None);
            let first = key_from_parts(&components, &inputs.clone());
            components.reverse();
            let again = key_from_parts(&components, &inputs.clone());
            let remembered = key_from_parts(&components, &inputs);
            match derived {
                Ok(key) => {
                    assert_eq!(first.unwrap(), key, "round {round}");
                    assert_eq!(again.unwrap(), key, "round {round}");
                    assert_eq!(remembered.unwrap(), key, "round {round}");
                }
                Err(_) => assert!(first.is_err() && again.is_err() && remembered.is_err()),
            }
        }
        let d = digest(1);
        let split_a = key_from_parts(&[("ab", d), ("c", d)], &[]).unwrap();
        let split_b = key_from_parts(&[("a", d), ("bc", d)], &[]).unwrap();
        assert_ne!(split_a, split_b);
        // Written out without their lengths, these two lists would read the same.
        let x = Digest::from_bytes([b'x'; 32]);
        let long = format!("a{}", "x".repeat(32));
        let tail = format!("{}b", "x".repeat(32));
        let one = key_from_parts(&[("a", x), (&tail, x)], &[]).unwrap();
        let other = key_from_parts(&[(&long, x), ("b", x)], &[]).unwrap();
        assert_ne!(one, other);
        assert_eq!(
            other,
            derive_key(&mut [(&long, x), ("b", x)], &mut [], None).unwrap()
        );
        let as_input = key_from_parts(&[("ab", d)], &[("c", d)]).unwrap();
        assert_ne!(split_a, as_input, "a component is not an input");
        assert_eq!(
            split_a,
            derive_key(&mut [("ab", d), ("c", d)], &mut [], None).unwrap()
        );
    }

    /// The key's whole encoding hashed in one piece, written out here on its own: what
    /// a key must be however its hasher was started.
    fn whole_encoding_hashed(components: &[(&str, Digest)], inputs: &[(&str, Digest)]) -> Digest {
        fn sorted<'a>(entries: &[(&'a str, Digest)]) -> Vec<(&'a str, Digest)> {
            let mut entries = entries.to_vec();
            entries.sort_by(|a, b| entry_order(a.0, b.0));
            entries
        }
        let mut encoder = Encoder::buffer();
        encoder.write_tag(tag::LIST);
        encoder.write_len(4);
        encoder.write_str("cairn-key");
        encoder.write_int(false, u128::from(KEY_FORMAT_VERSION));
        for map in [sorted(components), sorted(inputs)] {
            encoder.write_tag(tag::MAP);
            encoder.write_len(map.len());
            for (name, digest) in map {
                encoder.write_str(name);
                encoder.write_digest(&digest.0);
            }
        }
        blake3::hash(encoder.buffered()).into()
    }

    /// Keys of one list of components derived one after another start from the hasher
    /// kept for that list; lists taken in turn replace it. Every key is the hash of its
    /// whole encoding, whichever list was kept and whether the encoding's head fills
    /// whole BLAKE3 blocks or not.
    #[test]
    fn keys_derived_from_a_kept_head_are_the_whole_encodings_hash() {
        let short = [("task", digest(1))];
        let long_name = "n".repeat(150);
        let long = [
            ("task_source", digest(2)),
            ("namespace", digest(3)),
            (long_name.as_str(), digest(4)),
        ];
        let lists: Vec<(&[(&str, Digest)], ListId)> =
            vec![(&short, ListId::new()), (&long, ListId::new())];
        for round in 0..3u64 {
            for (components, id) in &lists {
                // More inputs than a thread remembers keys, so most are derived.
                for n in 0..(2 * super::super::key_memo::CAPACITY as u64 + 50) {
                    let value = (round, n);
                    let parts = [("x", input_part(&value).unwrap())];
                    let key = key_from_input_parts(components, Some(*id), &parts).unwrap();
                    let expect =
                        whole_encoding_hashed(components, &[("x", hash_value(&value).unwrap())]);
                    assert_eq!(key, expect, "round {round}, input {n}");
                }
            }
        }
    }

    /// An input given by its short encoding and the same input given by its digest
    /// make the same key, derived or remembered, in either order.
    #[test]
    fn a_short_input_and_its_digest_make_the_same_key() {
        let source = digest(7);
        for n in 0..300u64 {
            let value = (n, "x".repeat((n % 70) as usize));
            let part = input_part(&value).unwrap();
            let value_digest = hash_value(&value).unwrap();
            let derived = derive_key(
                &mut [("task_source", source)],
                &mut [("input", value_digest)],
                None,
            )
            .unwrap();
            let by_part =
                || key_from_input_parts(&[("task_source", source)], None, &[("input", part)]);
            let by_digest =
                || key_from_parts(&[("task_source", source)], &[("input", value_digest)]);
            let keys = if n % 2 == 0 {
                [by_part(), by_digest(), by_part()]
            } else {
                [by_digest(), by_part(), by_digest()]
            };
            for key in keys {
                assert_eq!(key.unwrap(), derived, "{n}");
            }
        }
    }

    #[test]
    fn failures_are_not_remembered_and_the_memo_stays_bounded() {
        let d = digest(2);
        for _ in 0..3 {
            let err = key_from_parts(&[("x", d)], &[("i", d), ("i", d)]).unwrap_err();
            assert_eq!(err.input(), Some("i"));
        }
        for n in 0..(2 * super::super::key_memo::CAPACITY as u64 + 10) {
            key_from_parts(&[("task_source", d)], &[("input", digest(n))]).unwrap();
            assert!(super::super::key_memo::remembered() <= super::super::key_memo::CAPACITY);
        }
    }

    #[test]
    fn duplicate_names_are_errors() {
        let mut key = KeyHasher::new();
        key.add_input("x", &1u8).unwrap();
        assert_eq!(key.add_input("x", &2u8).unwrap_err().input(), Some("x"));
        key.component("salt", |h| h.str("a").done()).unwrap();
        let err = key.component("salt", |h| h.str("b").done()).unwrap_err();
        assert_eq!(err.component(), Some("salt"));
    }

    #[test]
    fn keys_do_not_depend_on_the_order_inputs_are_added() {
        let mut a = KeyHasher::new();
        a.add_input("x", &1u8).unwrap().add_input("y", "y").unwrap();
        let mut b = KeyHasher::new();
        b.add_input("y", "y").unwrap().add_input("x", &1u8).unwrap();
        assert_eq!(a.finish(), b.finish());
        let mut c = KeyHasher::new();
        c.add_input("x", &1u8).unwrap().add_input("z", "y").unwrap();
        assert_ne!(a.finish(), c.finish(), "input names are part of the key");
        let mut d = KeyHasher::new();
        d.add_input("x", &1u8).unwrap();
        d.component_value("y", "y").unwrap();
        assert_ne!(a.finish(), d.finish(), "an input is not a component");
        let mut e = KeyHasher::new();
        e.add_input("x", &1u8).unwrap();
        e.component("y", |h| h.str("y").done()).unwrap();
        assert_eq!(d.finish(), e.finish());
    }
}
