//! Reading the header a cache hit needs without a JSON parser, when the header has the
//! exact shape cairn writes.
//!
//! A record's header is JSON that cairn serializes itself: fields in a fixed order, no
//! whitespace, dates as `YYYY-MM-DDTHH:MM:SS[.fraction]Z`. [`scan`] reads exactly that
//! shape in one pass over the bytes, borrowing every string, and gives up (`None`) at
//! the first thing it does not expect: an escape in a string, a field out of place, a
//! date in another form, a number with a sign or a leading zero. The caller then
//! parses the header with `serde_json` as before, so what is accepted, refused and
//! read never depends on which of the two read it: the scan accepts only headers the
//! parser accepts too, and reads the same values from them (tested against the parser
//! on every header shape cairn writes and on mutations of them).

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

use super::record::{Algorithm, HeaderView};

/// The header in `json`, when it has the shape cairn writes; `None` otherwise (the
/// caller falls back to the JSON parser, which accepts or refuses it).
pub(crate) fn scan(json: &[u8]) -> Option<HeaderView<'_>> {
    let mut s = Scanner { text: json, at: 0 };
    s.expect(b"{\"created\":")?;
    let created = date(s.string()?)?;
    s.expect(b",\"expires\":")?;
    let expires = match s.null_or_string()? {
        Some(d) => Some(date(d)?),
        None => None,
    };
    s.expect(b",\"serializer\":")?;
    let serializer = s.string()?;
    s.expect(b",\"payload_len\":")?;
    let payload_len = s.number()?;
    let algorithm = if s.eat(b",\"payload_xxh3\":") {
        Algorithm::Xxh3
    } else {
        s.expect(b",\"payload_blake3\":")?;
        Algorithm::Blake3
    };
    let payload_checksum = (algorithm, s.string()?);
    s.expect(b",\"key_components\":{")?;
    if !s.eat(b"}") {
        loop {
            s.string()?;
            s.expect(b":")?;
            s.string()?;
            if s.eat(b"}") {
                break;
            }
            s.expect(b",")?;
        }
    }
    s.expect(b",\"task\":")?;
    s.null_or_string()?;
    s.expect(b",\"output_type\":")?;
    s.null_or_string()?;
    let mut declared_digests = Vec::new();
    if s.eat(b",\"declared_digests\":[") {
        loop {
            declared_digests.push(Cow::Borrowed(s.string()?));
            if s.eat(b"]") {
                break;
            }
            s.expect(b",")?;
        }
    }
    s.expect(b",\"cairn_version\":")?;
    let cairn_version = s.string()?;
    s.expect(b"}")?;
    if s.at != json.len() {
        return None;
    }
    Some(HeaderView::new(
        created,
        expires,
        serializer,
        payload_len,
        payload_checksum,
        declared_digests,
        cairn_version,
    ))
}

/// A cursor over a header's bytes. Outside strings the scan accepts only ASCII tokens
/// and digits, so UTF-8 is checked string by string, and only where a string is not
/// ASCII (the pass that finds its end sees that for free).
struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.text[self.at..]
    }

    /// Consumes `token` if the text goes on with it. Tokens are fixed arrays, so the
    /// comparison is a few loads of known size, not a call to `memcmp`.
    fn eat<const N: usize>(&mut self, token: &[u8; N]) -> bool {
        match self.rest().first_chunk::<N>() {
            Some(next) if next == token => {
                self.at += N;
                true
            }
            _ => false,
        }
    }

    fn expect<const N: usize>(&mut self, token: &[u8; N]) -> Option<()> {
        self.eat(token).then_some(())
    }

    /// A string without escapes or control characters (JSON forbids the latter raw;
    /// the former are left to the parser), in valid UTF-8.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b"\"")?;
        let plain = plain_string(self.rest())?;
        let start = self.at;
        self.at += plain.len + 1;
        let bytes = &self.text[start..start + plain.len];
        if plain.ascii {
            debug_assert!(bytes.is_ascii());
            // SAFETY: every byte of `bytes` is below 0x80 (`plain_string` saw no high
            // bit before the closing quote), and ASCII is valid UTF-8.
            Some(unsafe { std::str::from_utf8_unchecked(bytes) })
        } else {
            std::str::from_utf8(bytes).ok()
        }
    }

    fn null_or_string(&mut self) -> Option<Option<&'a str>> {
        if self.eat(b"null") {
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    /// A non-negative integer as JSON writes it (no sign, no leading zero, no
    /// fraction or exponent) that fits a `u64`.
    fn number(&mut self) -> Option<u64> {
        let rest = self.rest();
        let len = rest
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(rest.len());
        if len == 0 || (len > 1 && rest[0] == b'0') {
            return None;
        }
        if matches!(rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut n: u64 = 0;
        for &d in &rest[..len] {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.at += len;
        Some(n)
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f]Z` (1 to 9 fraction digits), the form cairn writes, as the
/// instant it names; `None` for anything else, including a leap second.
///
/// The first 19 bytes are checked and read as three overlapping `u64` words (bytes
/// 0..8, 8..16 and 11..19), every digit and separator at once.
fn date(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"));
    // Bytes 0..8 `YYYY-MM-`, 8..16 `DDTHH:MM`, 11..19 `HH:MM:SS` (the last two share
    // `HH:MM`): which bytes are digits, and the separators between them.
    let ymd = digit_values(word(0), *b"0000-00-")?;
    let dhm = digit_values(word(8), *b"00T00:00")?;
    let hms = digit_values(word(11), *b"00:00:00")?;
    // The two digits from byte `at` on, as a number.
    let pair = |w: u64, at: u32| {
        let digit = |i: u32| ((w >> (8 * i)) & 0xff) as u32;
        digit(at) * 10 + digit(at + 1)
    };
    let year = pair(ymd, 0) * 100 + pair(ymd, 2);
    let (month, day) = (pair(ymd, 5), pair(dhm, 0));
    let (hour, minute, second) = (pair(dhm, 3), pair(dhm, 6), pair(hms, 6));
    if second > 59 {
        return None;
    }
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            let value = fraction.iter().try_fold(0u32, |n, &d| {
                d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
            })?;
            value * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some(NaiveDateTime::new(date, time).and_utc())
}

/// The eight bytes of `w` (little-endian) checked against `shape`, where `0` stands for
/// a decimal digit and any other byte for itself: each digit's value (0 to 9) in its
/// byte, separators cleared; `None` when a byte does not fit.
fn digit_values(w: u64, shape: [u8; 8]) -> Option<u64> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let digits = u64::from_le_bytes(shape.map(|c| if c == b'0' { 0xff } else { 0 }));
    let separators = u64::from_le_bytes(shape) & !digits;
    // A byte is a digit exactly when its XOR with '0' is below 10: the high bit of
    // neither it nor it plus 0x76 is set. A separator in place adds no carry (the
    // largest, 'T' ^ '0' = 0x64, plus 0x76 stays below 0x100); a byte that carries is
    // a digit position's non-digit, refused anyway.
    let t = w ^ (ONES * u64::from(b'0'));
    let not_digit = (t | t.wrapping_add(ONES * 0x76)) & HIGH & digits;
    ((w & !digits) == separators && not_digit == 0).then_some(t & digits)
}

/// Where a plain string ends, and whether it is ASCII.
#[derive(Debug, PartialEq, Eq)]
struct Plain {
    /// The position of its closing quote.
    len: usize,
    /// No byte before the quote has its high bit set.
    ascii: bool,
}

/// The plain string that `s` starts with: it ends at the first quote when no backslash
/// or control character comes before it; `None` otherwise (an escape, a control
/// character, or no closing quote). Sixteen bytes at a time with SSE2, which every
/// x86-64 processor has; eight at a time in a `u64` elsewhere.
fn plain_string(s: &[u8]) -> Option<Plain> {
    #[cfg(target_arch = "x86_64")]
    {
        plain_string_sse2(s)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        plain_string_swar(s)
    }
}

#[cfg(target_arch = "x86_64")]
fn plain_string_sse2(s: &[u8]) -> Option<Plain> {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let mut chunks = s.chunks_exact(16);
    let mut high = 0u32;
    for (i, chunk) in (&mut chunks).enumerate() {
        // SAFETY: `chunk` is 16 readable bytes and the load is unaligned; the other
        // intrinsics need SSE2, which the x86-64 target always enables.
        let (special, high_bits) = unsafe {
            let x = _mm_loadu_si128(chunk.as_ptr().cast());
            // A byte at most 0x1f is its own minimum with 0x1f (an unsigned compare).
            let control = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x);
            let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
            let special = _mm_or_si128(control, _mm_or_si128(quote, backslash));
            (
                _mm_movemask_epi8(special) as u32,
                _mm_movemask_epi8(x) as u32,
            )
        };
        if special != 0 {
            let at = special.trailing_zeros();
            let before = (1u32 << at) - 1;
            return (chunk[at as usize] == b'"').then_some(Plain {
                len: i * 16 + at as usize,
                ascii: (high | (high_bits & before)) == 0,
            });
        }
        high |= high_bits;
    }
    let base = s.len() - chunks.remainder().len();
    plain_tail(chunks.remainder(), base, high == 0)
}

/// [`plain_string`] eight bytes at a time in a `u64`.
#[cfg(any(not(target_arch = "x86_64"), test))]
fn plain_string_swar(s: &[u8]) -> Option<Plain> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `w` below `n` (n <= 0x80) sets its high bit here (Hacker's Delight). A
    // borrow can also set it in bytes above a true one, never below: the lowest set
    // bit is exact.
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH;
    let mut words = s.chunks_exact(8);
    let mut high = 0u64;
    for (i, word) in (&mut words).enumerate() {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let special = below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w ^ (ONES * u64::from(b'"')), 1);
        if special != 0 {
            let at = special.trailing_zeros() / 8;
            // The bytes below the special one (none when it is the first).
            let before = (1u64 << (at * 8)).wrapping_sub(1);
            return (word[at as usize] == b'"').then_some(Plain {
                len: i * 8 + at as usize,
                ascii: (high | (w & before & HIGH)) == 0,
            });
        }
        high |= w & HIGH;
    }
    let base = s.len() - words.remainder().len();
    plain_tail(words.remainder(), base, high == 0)
}

/// [`plain_string`] for the last few bytes, one at a time: `base` is where `tail`
/// starts in the string, `ascii` whether every byte before it is ASCII.
fn plain_tail(tail: &[u8], base: usize, ascii: bool) -> Option<Plain> {
    let at = tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    (tail[at] == b'"').then_some(Plain {
        len: base + at,
        ascii: ascii && tail[..at].is_ascii(),
    })
}

#[cfg(test)]
mod tests {
    /// One byte at a time: what both word-wise scans must agree with.
    fn naive(s: &[u8]) -> Option<super::Plain> {
        let at = s
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        (s[at] == b'"').then_some(super::Plain {
            len: at,
            ascii: s[..at].is_ascii(),
        })
    }

    fn assert_plain_as_naive(s: &[u8]) {
        let want = naive(s);
        assert_eq!(super::plain_string_swar(s), want, "swar {s:?}");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(super::plain_string_sse2(s), want, "sse2 {s:?}");
    }

    #[test]
    fn plain_strings_end_where_one_byte_at_a_time_says() {
        for len in 0..40 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    // Neighbours that a borrow could disturb: high bytes and a low one.
                    if at + 1 < len {
                        s[at + 1] = 0xff;
                    }
                    if at > 0 {
                        s[at - 1] = 0x80;
                    }
                    assert_plain_as_naive(&s);
                    // Two special bytes: the first decides.
                    for second in [b'"', b'\\', 0x00, 0x1f] {
                        if at + 2 < len {
                            let mut t = s.clone();
                            t[at + 2] = second;
                            assert_plain_as_naive(&t);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_string_is_ascii_unless_a_high_byte_comes_before_its_quote() {
        // A quote at each position, a high byte at each other position: before the
        // quote it makes the string non-ASCII, after it it does not count.
        for len in 1..40 {
            for quote in 0..len {
                for high in 0..len {
                    if high == quote {
                        continue;
                    }
                    let mut s = vec![b'x'; len];
                    s[quote] = b'"';
                    s[high] = 0xc3;
                    assert_plain_as_naive(&s);
                    let plain = naive(&s).expect("a plain string");
                    assert_eq!(plain.ascii, high > quote, "{s:?}");
                }
            }
        }
    }

    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::store::record::{encode_declared, PayloadChecksum, RecordInfo};

    /// The header JSON of a record encoded with `info` and `declared`.
    fn header_json(info: RecordInfo, declared: Vec<String>) -> Vec<u8> {
        let record =
            encode_declared(info, "json", Bytes::from_static(b"[1]"), declared).into_contiguous();
        let len = u32::from_le_bytes(record[10..14].try_into().unwrap()) as usize;
        record[14..14 + len].to_vec()
    }

    fn parsed(json: &[u8]) -> Result<HeaderView<'_>, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// The scan read what the parser reads.
    fn assert_same(scanned: &HeaderView<'_>, json: &[u8]) {
        let parsed = parsed(json).unwrap_or_else(|e| {
            panic!(
                "the scan accepted a header the parser refuses ({e}): {}",
                String::from_utf8_lossy(json)
            )
        });
        assert_eq!(
            scanned,
            &parsed,
            "scan and parser differ on {}",
            String::from_utf8_lossy(json)
        );
    }

    fn infos() -> Vec<(RecordInfo, Vec<String>)> {
        let expires = "2031-02-03T04:05:06.5Z".parse().unwrap();
        let components: BTreeMap<String, String> = [
            ("inputs".to_owned(), String::new()),
            ("task_source".to_owned(), "ab".repeat(32)),
        ]
        .into();
        vec![
            (RecordInfo::default(), vec![]),
            (
                RecordInfo {
                    created: None,
                    expires: Some(expires),
                    key_components: components.clone(),
                    task: Some("add_one".into()),
                    output_type: Some("alloc::vec::Vec<u8>".into()),
                },
                vec!["cd".repeat(32), "ef".repeat(32)],
            ),
            (
                RecordInfo {
                    created: None,
                    expires: None,
                    key_components: components,
                    task: Some("étape_un".into()),
                    output_type: None,
                },
                vec![],
            ),
        ]
    }

    /// The headers of every shape cairn writes, and one of a record of format 2 (its
    /// payload checked by BLAKE3), which a hit still reads.
    fn header_jsons() -> Vec<Vec<u8>> {
        let mut jsons: Vec<Vec<u8>> = infos()
            .into_iter()
            .map(|(info, declared)| header_json(info, declared))
            .collect();
        let record = encode_declared(
            infos().remove(1).0,
            "json",
            Bytes::from_static(b"[1]"),
            vec![],
        )
        .into_contiguous();
        let (mut header, payload) = crate::store::record::decode(record).unwrap();
        header.payload_checksum =
            PayloadChecksum::Blake3(blake3::hash(&payload).to_hex().to_string());
        jsons.push(serde_json::to_vec(&header).unwrap());
        jsons
    }

    #[test]
    fn every_header_shape_cairn_writes_is_scanned_as_the_parser_reads_it() {
        for json in header_jsons() {
            let scanned = scan(&json)
                .unwrap_or_else(|| panic!("not scanned: {}", String::from_utf8_lossy(&json)));
            assert_same(&scanned, &json);
        }
    }

    #[test]
    fn strings_with_escapes_are_left_to_the_parser() {
        let (mut info, declared) = infos().remove(1);
        info.task = Some("a \"quoted\" task".into());
        let json = header_json(info, declared);
        assert!(scan(&json).is_none());
        assert!(parsed(&json).is_ok());
    }

    #[test]
    fn dates_are_read_as_chrono_reads_them() {
        for s in [
            "2026-12-03T21:04:19Z",
            "2026-12-03T21:04:19.1Z",
            "2026-12-03T21:04:19.123Z",
            "2026-12-03T21:04:19.123456Z",
            "2026-12-03T21:04:19.123456789Z",
            "2024-02-29T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            let chrono: DateTime<Utc> = serde_json::from_str(&format!("\"{s}\"")).unwrap();
            assert_eq!(date(s), Some(chrono), "{s}");
        }
        for s in [
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-03T24:00:00Z",
            "2026-12-03T21:04:60Z",
            "2026-12-03T21:04:19.Z",
            "2026-12-03T21:04:19.1234567890Z",
            "2026-12-03T21:04:19+00:00",
            "2026-12-03 21:04:19Z",
            "+2026-12-03T21:04:19Z",
            "yesterday",
        ] {
            assert_eq!(date(s), None, "{s}");
        }
    }

    /// The date read a byte at a time, field by field: what the word-wise read must
    /// agree with.
    fn date_bytewise(s: &str) -> Option<DateTime<Utc>> {
        let b = s.as_bytes();
        if b.len() < 20 || b[b.len() - 1] != b'Z' {
            return None;
        }
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            b[range].iter().try_fold(0u32, |n, &d| {
                d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
            })
        };
        let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        if punctuation.iter().any(|&(i, c)| b[i] != c) {
            return None;
        }
        let year = i32::try_from(digits(0..4)?).ok()?;
        let (month, day) = (digits(5..7)?, digits(8..10)?);
        let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        if second > 59 {
            return None;
        }
        let nanos = match &b[19..b.len() - 1] {
            [] => 0,
            [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
                digits(20..20 + fraction.len())? * 10u32.pow(9 - fraction.len() as u32)
            }
            _ => return None,
        };
        let date = NaiveDate::from_ymd_opt(year, month, day)?;
        let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
        Some(NaiveDateTime::new(date, time).and_utc())
    }

    /// Every byte of real dates replaced by each byte value, and random dates over
    /// the characters that matter: the word-wise read agrees with the byte-wise one,
    /// and accepts many.
    #[test]
    fn dates_are_read_word_wise_as_byte_by_byte() {
        let mut accepted = 0;
        for base in [
            "2026-12-03T21:04:19.388877008Z",
            "2024-02-29T23:59:59Z",
            "0001-01-01T00:00:00.5Z",
        ] {
            for i in 0..base.len() {
                for r in 0..=255u8 {
                    let mut v = base.as_bytes().to_vec();
                    v[i] = r;
                    let Ok(v) = String::from_utf8(v) else {
                        continue;
                    };
                    let want = date_bytewise(&v);
                    assert_eq!(date(&v), want, "{v:?}");
                    accepted += usize::from(want.is_some());
                }
            }
        }
        use rand::{Rng, SeedableRng};
        let alphabet = b"0123456789-T:.Z/ :;";
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x2545_f491_4f6c_dd1d);
        for _ in 0..200_000 {
            let mut v = b"2026-12-03T21:04:19.123Z".to_vec();
            for _ in 0..rng.random_range(1..=3) {
                let at = rng.random_range(0..v.len());
                v[at] = alphabet[rng.random_range(0..alphabet.len())];
            }
            let v = String::from_utf8(v).unwrap();
            let want = date_bytewise(&v);
            assert_eq!(date(&v), want, "{v:?}");
            accepted += usize::from(want.is_some());
        }
        assert!(accepted > 10_000, "{accepted}");
    }

    /// Every header the scan accepts, the parser accepts with the same values: checked
    /// on each byte of real headers replaced, removed or doubled.
    #[test]
    fn mutated_headers_are_never_accepted_by_the_scan_alone() {
        let replacements = b"0 9\"\\{}[],:.-+eZTnul\x01\x7f\xc3";
        let mut scanned = 0;
        for json in header_jsons() {
            for i in 0..json.len() {
                let mut variants = vec![];
                for &r in replacements {
                    let mut v = json.clone();
                    v[i] = r;
                    variants.push(v);
                }
                let mut removed = json.clone();
                removed.remove(i);
                variants.push(removed);
                let mut doubled = json.clone();
                doubled.insert(i, json[i]);
                variants.push(doubled);
                for v in variants {
                    if let Some(view) = scan(&v) {
                        assert_same(&view, &v);
                        scanned += 1;
                    }
                }
            }
        }
        // Digits changed inside dates, lengths and digests still scan: the test saw
        // the scan accept many variants, not only refuse them.
        assert!(scanned > 100, "{scanned}");
    }
}
