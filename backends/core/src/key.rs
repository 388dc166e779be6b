//! Object keys: `/`-separated paths relative to a backend's root.

use std::fmt;

use crate::{Error, Result};

/// The longest key cairn accepts, in bytes (S3's and GCS's limit is 1024).
pub const MAX_KEY_LEN: usize = 1024;

/// A validated object key: relative, `/`-separated, no empty, `.` or `..` segments,
/// no control characters, at most [`MAX_KEY_LEN`] bytes.
///
/// Every backend accepts exactly these keys, so a key that works on the local disk
/// works on S3 and GCS too, and no key can reach outside the backend's root.
///
/// ```
/// use cairn_backend::Key;
/// assert!(Key::parse("reports/2024-01-01/summary.json").is_ok());
/// assert!(Key::parse("../etc/passwd").is_err());
/// assert!(Key::parse("/absolute").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// Validates `key`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] naming the rule the key breaks.
    pub fn parse(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        if let Some(reason) = invalid_reason(&key) {
            // Error messages shorten a huge key in the middle and give its length.
            return Err(Error::InvalidKey { key, reason });
        }
        Ok(Key(key))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment (the "file name").
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// Joins a further relative path below this key.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when the result is not a valid key.
    pub fn join(&self, rest: &str) -> Result<Key> {
        Key::parse(format!("{}/{}", self.0, rest))
    }
}

fn invalid_reason(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("a key cannot be empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Some(format!(
            "a key is at most {MAX_KEY_LEN} bytes, this one has {}",
            key.len()
        ));
    }
    if key.starts_with('/') {
        return Some("a key is relative to the store and cannot start with '/'".into());
    }
    // Almost every key is printable ASCII without '\\' and has no segment that is empty
    // or starts with '.': one pass over its bytes, eight at a time, tells, and only the
    // others are looked at character by character.
    let (plain, suspicious) = scan_words(key.as_bytes());
    if plain && !suspicious {
        return None;
    }
    if !plain {
        if let Some(c) = key.chars().find(|c| c.is_control()) {
            return Some(format!("control character {c:?} is not allowed"));
        }
        if key.contains('\\') {
            return Some("'\\' is not allowed (use '/' to separate segments)".into());
        }
    }
    segment_reason(key)
}

/// For a key (not empty): whether every byte is printable ASCII other than `\`
/// (`plain`), and whether a segment may be empty or start with `.` (`suspicious`: the
/// key starts with `.`, ends with `/`, or has `//` or `/.`). Every segment rule concerns
/// only such segments (empty, `.`, `..`, staged names), so a key without them passes
/// the rules unread.
///
/// Sixteen bytes at a time with SSE2, which every x86-64 processor has; eight at a
/// time in a `u64` elsewhere. The last block is padded with `a`, which changes neither
/// answer.
fn scan_words(key: &[u8]) -> (bool, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        scan_words_sse2(key)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        scan_words_swar(key)
    }
}

#[cfg(target_arch = "x86_64")]
fn scan_words_sse2(key: &[u8]) -> (bool, bool) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let mut bad = 0u32;
    let mut pairs = 0u32;
    let mut slash_before = 0u32; // the previous block's last byte was '/'
    let mut scan = |block: &[u8; 16]| {
        // SAFETY: `block` is 16 readable bytes and the load is unaligned; the other
        // intrinsics need SSE2, which the x86-64 target always enables.
        let (bad_bytes, slash, dot) = unsafe {
            let x = _mm_loadu_si128(block.as_ptr().cast());
            let byte = |b: u8| _mm_cmpeq_epi8(x, _mm_set1_epi8(b as i8));
            // As signed bytes, printable ASCII is 0x20..=0x7e; 0x80 and above are
            // negative, below 0x20 too.
            let outside = _mm_or_si128(_mm_cmplt_epi8(x, _mm_set1_epi8(0x20)), byte(0x7f));
            (
                _mm_movemask_epi8(_mm_or_si128(outside, byte(b'\\'))) as u32,
                _mm_movemask_epi8(byte(b'/')) as u32,
                _mm_movemask_epi8(byte(b'.')) as u32,
            )
        };
        bad |= bad_bytes;
        // A '/' followed by '/' or '.', within the block or across its start.
        pairs |= ((slash << 1) | slash_before) & (slash | dot);
        slash_before = slash >> 15;
    };
    let mut blocks = key.chunks_exact(16);
    for block in &mut blocks {
        scan(block.try_into().expect("sixteen bytes"));
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        let mut last = [b'a'; 16];
        last[..rest.len()].copy_from_slice(rest);
        scan(&last);
    }
    let suspicious = key[0] == b'.' || key[key.len() - 1] == b'/' || pairs != 0;
    (bad == 0, suspicious)
}

/// [`scan_words`] eight bytes at a time as one `u64`, with exact per-byte masks (no
/// carry crosses a byte).
#[cfg(any(not(target_arch = "x86_64"), test))]
fn scan_words_swar(key: &[u8]) -> (bool, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // The high bit of each byte of `w` that is zero, and of no other.
    let zero = |w: u64| !(((w & LOW7).wrapping_add(LOW7)) | w) & HIGH;
    let mut bad = 0u64;
    let mut pairs = 0u64;
    let mut slash_before = 0u64; // the previous word's last byte was '/'
    let mut scan = |w: u64| {
        // Below 0x20: the high bit of (b | 0x80) - 0x20 is clear; at or above 0x7f:
        // the high bit of b, or of (b & 0x7f) + 1.
        let control = !((w | HIGH).wrapping_sub(ONES * 0x20)) & HIGH;
        let high = (w | (w & LOW7).wrapping_add(ONES)) & HIGH;
        let slash = zero(w ^ (ONES * u64::from(b'/')));
        let dot = zero(w ^ (ONES * u64::from(b'.')));
        bad |= control | high | zero(w ^ (ONES * u64::from(b'\\')));
        // A '/' followed by '/' or '.', within the word or across its start.
        pairs |= ((slash << 8) | slash_before) & (slash | dot);
        slash_before = slash >> 56;
    };
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        scan(u64::from_le_bytes(word.try_into().expect("eight bytes")));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [b'a'; 8];
        last[..rest.len()].copy_from_slice(rest);
        scan(u64::from_le_bytes(last));
    }
    let suspicious = key[0] == b'.' || key[key.len() - 1] == b'/' || pairs != 0;
    (bad == 0, suspicious)
}

/// The segment rule that `key` breaks, segment by segment.
fn segment_reason(key: &str) -> Option<String> {
    for segment in key.split('/') {
        match segment {
            "" => return Some("empty path segment ('//' or a trailing '/')".into()),
            "." | ".." => {
                return Some(format!(
                    "segment '{segment}' is not allowed: keys cannot leave the store"
                ))
            }
            s if crate::is_staged_name(s) => {
                return Some(format!(
                    "segment '{segment}' is reserved for files being written"
                ))
            }
            _ => {}
        }
    }
    None
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Key {
    type Error = Error;
    fn try_from(value: &str) -> Result<Self> {
        Key::parse(value)
    }
}

impl TryFrom<String> for Key {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Key::parse(value)
    }
}

/// Validates a listing prefix: empty (everything), or a key-like string that may end
/// in `/`.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    Key::parse(trimmed).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules in full, without the shortcut for keys whose segments cannot break
    /// them.
    fn reason_in_full(key: &str) -> Option<String> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || key.starts_with('/') {
            return invalid_reason(key);
        }
        if key.chars().any(|c| c.is_control()) || key.contains('\\') {
            return invalid_reason(key);
        }
        segment_reason(key)
    }

    /// Both word-wise scans give what the byte scan gives.
    fn scan_words(key: &[u8]) -> (bool, bool) {
        let want = scan_bytes(key);
        assert_eq!(super::scan_words_swar(key), want, "swar {key:?}");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(super::scan_words_sse2(key), want, "sse2 {key:?}");
        want
    }

    /// `scan_words`, a byte at a time.
    fn scan_bytes(key: &[u8]) -> (bool, bool) {
        let plain = key.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\');
        let suspicious = key[0] == b'.'
            || key[key.len() - 1] == b'/'
            || key
                .windows(2)
                .any(|p| p[0] == b'/' && (p[1] == b'/' || p[1] == b'.'));
        (plain, suspicious)
    }

    #[test]
    fn the_word_scan_judges_every_byte_as_the_byte_scan() {
        // Every byte value alone, and after a '/', at every position of three words.
        for b in 0..=255u8 {
            for at in 0..40 {
                let mut key = vec![b'x'; 40];
                key[at] = b;
                assert_eq!(scan_words(&key), scan_bytes(&key), "{b:#x} at {at}");
                if at > 0 {
                    key[at - 1] = b'/';
                    assert_eq!(scan_words(&key), scan_bytes(&key), "/{b:#x} at {at}");
                }
                key.truncate(at + 1);
                assert_eq!(scan_words(&key), scan_bytes(&key), "{b:#x} ending at {at}");
            }
        }
        // Random keys of 1 to 40 bytes over the bytes that matter.
        let alphabet = [
            b'a', b'/', b'.', b'\\', 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xc3, 0xff,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let len = 1 + (next() % 70) as usize;
            let key: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(scan_words(&key), scan_bytes(&key), "{key:?}");
        }
    }

    #[test]
    fn the_segment_shortcut_judges_every_short_key_as_the_rules_in_full() {
        let alphabet = ['a', '/', '.', 'c', 'é'];
        let mut keys = vec![String::new()];
        let mut checked = 0;
        for _ in 0..7 {
            let mut longer = Vec::new();
            for k in &keys {
                for c in alphabet {
                    let mut k = k.clone();
                    k.push(c);
                    assert_eq!(invalid_reason(&k), reason_in_full(&k), "{k:?}");
                    checked += 1;
                    longer.push(k);
                }
            }
            keys = longer;
        }
        assert!(checked > 90_000);
        for k in [
            "a/.cairn-staged.x",
            ".cairn-staged.x/a",
            "a/.cairn-staged.",
            "a/.hidden/b",
            "a/b.c/d",
            "cache/v1/default/ab/abcdef",
        ] {
            assert_eq!(invalid_reason(k), reason_in_full(k), "{k:?}");
        }
        assert!(invalid_reason("a/.hidden/b").is_none());
        assert!(invalid_reason("a/.cairn-staged.x").is_some());
    }

    #[test]
    fn accepts_ordinary_keys() {
        for k in ["a", "a/b/c.json", "Monday/fetch.txt", "x y/z-1_2.csv"] {
            assert_eq!(Key::parse(k).unwrap().as_str(), k);
        }
    }

    #[test]
    fn rejects_keys_that_leave_the_store() {
        for k in [
            "",
            "/a",
            "a//b",
            "a/",
            "..",
            "a/../b",
            "./a",
            "a\\b",
            "a\nb",
            "a\0b",
            "d/.cairn-staged.x.1",
        ] {
            let err = Key::parse(k).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{k:?}: {err}");
        }
    }

    #[test]
    fn characters_are_judged_alike_in_ascii_and_beyond() {
        // Printable ASCII and non-ASCII letters are keys; every control character is
        // refused by name, whether ASCII (DEL included) or Unicode's C1 range.
        for k in ["a~b/c!d", "café/naïve.json", "データ/結果.txt"] {
            assert!(Key::parse(k).is_ok(), "{k:?}");
        }
        for (k, shown) in [
            ("a\u{7f}b", "'\\u{7f}'"),
            ("café\u{85}", "'\\u{85}'"),
            ("a\tb", "'\\t'"),
        ] {
            let err = Key::parse(k).unwrap_err().to_string();
            assert!(
                err.contains("control character") && err.contains(shown),
                "{k:?}: {err}"
            );
        }
        let err = Key::parse("café\\x").unwrap_err().to_string();
        assert!(err.contains("'\\' is not allowed"), "{err}");
    }

    #[test]
    fn rejects_overlong_keys() {
        let err = Key::parse("a".repeat(MAX_KEY_LEN + 1)).unwrap_err();
        assert!(err.to_string().contains("at most 1024 bytes"), "{err}");
        assert!(Key::parse("a".repeat(MAX_KEY_LEN)).is_ok());
    }

    #[test]
    fn prefixes_may_end_in_a_slash() {
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("runs/").is_ok());
        assert!(validate_prefix("runs/v1/ab").is_ok());
        assert!(validate_prefix("../").is_err());
    }
}
