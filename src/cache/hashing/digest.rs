//! [`Digest`]: the 32-byte BLAKE3 digest every key is made of, as bytes and as hex.

use super::*;

/// A 32-byte BLAKE3 digest: of a value's canonical encoding, of a file's content, or a
/// cache key.
///
/// Displayed, parsed and serialized (outside hashing) as 64 lowercase hex digits. In a
/// hashed value it stands for what it digests: it is encoded as `H` + its 32 bytes.
///
/// Aligned to 8 bytes: a digest inside an enum or a future (a run's key) is then moved
/// as whole words, not in odd-sized pieces whose reloads the processor cannot forward
/// from the stores just made.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C, align(8))]
pub struct Digest(pub(super) [u8; 32]);

impl Digest {
    /// The digest with these bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The digest's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.hex_buf().as_str().to_owned()
    }

    /// The hex digits in a stack buffer: sixteen bytes at a time with SSE2, which every
    /// x86-64 processor has; four at a time in a `u64` elsewhere.
    pub(crate) fn hex_buf(&self) -> HexBuf {
        #[cfg(target_arch = "x86_64")]
        {
            self.hex_buf_sse2()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.hex_buf_swar()
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn hex_buf_sse2(&self) -> HexBuf {
        use std::arch::x86_64::{
            __m128i, _mm_add_epi8, _mm_and_si128, _mm_cmpgt_epi8, _mm_loadu_si128, _mm_set1_epi8,
            _mm_srli_epi16, _mm_storeu_si128, _mm_unpackhi_epi8, _mm_unpacklo_epi8,
        };
        let mut out = [0u8; 64];
        for (digits, bytes) in out.chunks_exact_mut(32).zip(self.0.chunks_exact(16)) {
            // SAFETY: `bytes` is 16 readable bytes and `digits` 32 writable ones, both
            // loaded and stored unaligned; the other intrinsics need SSE2, which the
            // x86-64 target always enables.
            unsafe {
                let nibble = _mm_set1_epi8(0x0f);
                let x = _mm_loadu_si128(bytes.as_ptr().cast());
                let low = _mm_and_si128(x, nibble);
                let high = _mm_and_si128(_mm_srli_epi16(x, 4), nibble);
                // '0' + n, and 'a' - '0' - 10 more where n > 9.
                let digit = |n: __m128i| {
                    let letters =
                        _mm_and_si128(_mm_cmpgt_epi8(n, _mm_set1_epi8(9)), _mm_set1_epi8(39));
                    _mm_add_epi8(_mm_add_epi8(n, _mm_set1_epi8(b'0' as i8)), letters)
                };
                // Each byte's high digit, then its low one.
                let first = digit(_mm_unpacklo_epi8(high, low));
                let second = digit(_mm_unpackhi_epi8(high, low));
                _mm_storeu_si128(digits.as_mut_ptr().cast(), first);
                _mm_storeu_si128(digits[16..].as_mut_ptr().cast(), second);
            }
        }
        HexBuf(out)
    }

    /// [`Digest::hex_buf`] four bytes at a time in a `u64`.
    #[cfg(any(not(target_arch = "x86_64"), test))]
    fn hex_buf_swar(&self) -> HexBuf {
        let mut out = [0u8; 64];
        for (digits, bytes) in out.chunks_exact_mut(8).zip(self.0.chunks_exact(4)) {
            let bytes = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            digits.copy_from_slice(&hex_digits(bytes).to_be_bytes());
        }
        HexBuf(out)
    }
}

/// The 8 lowercase hex digits of `bytes`, most significant first, as the bytes of a
/// `u64` read big-endian: each nibble spread into a byte of its own, then made a digit
/// (`'0' + n`, plus `'a' - '0' - 10` where `n >= 10`) in all eight bytes at once.
pub(crate) fn hex_digits(bytes: u32) -> u64 {
    let mut x = u64::from(bytes);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    x + 0x3030_3030_3030_3030 + letters * 0x27
}

/// A digest's 64 hex digits, without an allocation.
pub(crate) struct HexBuf([u8; 64]);

impl HexBuf {
    pub(crate) fn as_str(&self) -> &str {
        debug_assert!(self.0.iter().all(u8::is_ascii_hexdigit));
        // SAFETY: a `HexBuf` is only made by `Digest::hex_buf`, of hex digits: ASCII,
        // hence UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// A digest's stand-in for serializers other than the hashing encoder: its hex
/// digits, produced only if such a serializer asks for them.
pub(super) struct HexStandIn(Digest);

impl Serialize for HexStandIn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.hex_buf().as_str())
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Self {
        Digest(*hash.as_bytes())
    }
}

impl From<Digest> for [u8; 32] {
    fn from(digest: Digest) -> Self {
        digest.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex_buf().as_str())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A string that is not 64 hex digits, given as a [`Digest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDigestError {
    pub(super) input: String,
}

impl fmt::Display for ParseDigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a digest (64 hex digits)", self.input)
    }
}

impl std::error::Error for ParseDigestError {}

impl FromStr for Digest {
    type Err = ParseDigestError;

    /// Parses 64 hex digits, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParseDigestError {
            input: s.to_owned(),
        };
        let hex = s.as_bytes();
        if hex.len() != 64 {
            return Err(error());
        }
        let digit = |c: u8| (c as char).to_digit(16).ok_or_else(error);
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(Digest(bytes))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_as_digest(serializer, *self, &HexStandIn(*self))
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        hex.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digits written sixteen and four bytes at a time are the ones written one by
    /// one, for every byte value at every position.
    #[test]
    fn hex_digits_are_every_bytes_two_digits() {
        let mut digests: Vec<[u8; 32]> = (0..=255u8)
            .map(|b| std::array::from_fn(|i| b.wrapping_add((i as u8).wrapping_mul(37))))
            .collect();
        digests.extend((0..200u64).map(|n| *blake3::hash(&n.to_le_bytes()).as_bytes()));
        for bytes in digests {
            let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(Digest(bytes).hex_buf().as_str(), expected);
            assert_eq!(Digest(bytes).hex_buf_swar().as_str(), expected);
            #[cfg(target_arch = "x86_64")]
            assert_eq!(Digest(bytes).hex_buf_sse2().as_str(), expected);
        }
    }

    #[test]
    fn a_digest_round_trips_as_hex() {
        let digest = hash_value("x").unwrap();
        let hex = digest.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<Digest>().unwrap(), digest);
        assert_eq!(hex.to_uppercase().parse::<Digest>().unwrap(), digest);
        assert!("xyz".parse::<Digest>().is_err());
        assert!(hex[..63].parse::<Digest>().is_err());
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{hex}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        assert_eq!(format!("{digest:?}"), format!("Digest({hex})"));
    }
}
