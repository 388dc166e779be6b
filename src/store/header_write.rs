//! Writing a record's header as JSON without the serializer machinery: it is written
//! on every miss.
//!
//! [`write()`] gives exactly the bytes `serde_json::to_vec` gives for a
//! [`RecordHeader`] — the same field order, the same escapes, dates in chrono's
//! RFC 3339 form (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the fraction as 0, 3, 6 or 9
//! digits) — so what is written never depends on which of the two wrote it (tested
//! against `serde_json` on headers with every kind of string and date).

use chrono::{DateTime, SecondsFormat, Utc};

use std::collections::BTreeMap;

use super::record::{ChecksumRef, RecordHeader};

/// A header's fields, borrowed: a record written on a miss is framed without first
/// copying its strings into a [`RecordHeader`].
pub(crate) struct HeaderFields<'a> {
    pub(crate) created: DateTime<Utc>,
    pub(crate) expires: Option<DateTime<Utc>>,
    pub(crate) serializer: &'a str,
    pub(crate) payload_len: u64,
    pub(crate) payload_checksum: ChecksumRef<'a>,
    pub(crate) key_components: &'a BTreeMap<String, String>,
    pub(crate) task: Option<&'a str>,
    pub(crate) output_type: Option<&'a str>,
    pub(crate) declared_digests: &'a [String],
    pub(crate) cairn_version: &'a str,
}

impl<'a> From<&'a RecordHeader> for HeaderFields<'a> {
    fn from(h: &'a RecordHeader) -> Self {
        HeaderFields {
            created: h.created,
            expires: h.expires,
            serializer: &h.serializer,
            payload_len: h.payload_len,
            payload_checksum: h.payload_checksum.borrowed(),
            key_components: &h.key_components,
            task: h.task.as_deref(),
            output_type: h.output_type.as_deref(),
            declared_digests: &h.declared_digests,
            cairn_version: &h.cairn_version,
        }
    }
}

/// Appends the header's JSON to `out`.
pub(crate) fn write(header: &HeaderFields<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"created\":");
    date(out, &header.created);
    out.extend_from_slice(b",\"expires\":");
    match &header.expires {
        Some(d) => date(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"serializer\":");
    string(out, header.serializer);
    out.extend_from_slice(b",\"payload_len\":");
    out.extend_from_slice(itoa(header.payload_len, &mut [0; 20]));
    let (algorithm, hex) = header.payload_checksum;
    out.extend_from_slice(b",\"");
    out.extend_from_slice(algorithm.field().as_bytes());
    out.extend_from_slice(b"\":");
    string(out, hex);
    out.extend_from_slice(b",\"key_components\":{");
    for (i, (k, v)) in header.key_components.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        string(out, v);
    }
    out.extend_from_slice(b"},\"task\":");
    optional_string(out, header.task);
    out.extend_from_slice(b",\"output_type\":");
    optional_string(out, header.output_type);
    if !header.declared_digests.is_empty() {
        out.extend_from_slice(b",\"declared_digests\":[");
        for (i, d) in header.declared_digests.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, d);
        }
        out.push(b']');
    }
    out.extend_from_slice(b",\"cairn_version\":");
    string(out, header.cairn_version);
    out.push(b'}');
}

fn optional_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string as `serde_json` writes it: `"` and `\` escaped, control characters
/// as `\b \t \n \f \r` or `\u00XX`, everything else (non-ASCII included) as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    // Nearly every string cairn writes (digests, names) needs no escape: checked in
    // one pass without early exit, which the compiler runs on whole vectors.
    let plain = bytes.iter().fold(true, |plain, &b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.push(b'\\');
            out.push(short);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A date as chrono serializes it (RFC 3339, `Z`, the shortest of 0, 3, 6 or 9
/// fraction digits that holds it exactly). Years outside 0..=9999 and leap seconds,
/// which chrono writes in forms of their own, go through chrono.
fn date(out: &mut Vec<u8>, d: &DateTime<Utc>) {
    let secs = d.timestamp();
    let nanos = d.timestamp_subsec_nanos();
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        out.push(b'"');
        out.extend_from_slice(d.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
        out.push(b'"');
        return;
    }
    let of_day = secs.rem_euclid(86_400) as u32;
    let mut buf = *b"\"0000-00-00T00:00:00";
    digits(&mut buf[1..5], year as u32);
    digits(&mut buf[6..8], month);
    digits(&mut buf[9..11], day);
    digits(&mut buf[12..14], of_day / 3600);
    digits(&mut buf[15..17], of_day / 60 % 60);
    digits(&mut buf[18..20], of_day % 60);
    out.extend_from_slice(&buf);
    let (value, width) = if nanos == 0 {
        (0, 0)
    } else if nanos % 1_000_000 == 0 {
        (nanos / 1_000_000, 3)
    } else if nanos % 1_000 == 0 {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if width > 0 {
        let mut fraction = [b'.'; 10];
        digits(&mut fraction[1..=width], value);
        out.extend_from_slice(&fraction[..=width]);
    }
    out.extend_from_slice(b"Z\"");
}

/// The proleptic Gregorian (year, month, day) of the day `days` after 1970-01-01, in a
/// few integer operations (Howard Hinnant's `civil_from_days`): chrono's accessors
/// each convert the date again.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `value` as decimal digits filling `buf`, zero-padded on the left.
fn digits(buf: &mut [u8], mut value: u32) {
    for b in buf.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `value` in decimal, written at the end of `buf`.
fn itoa(mut value: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{NaiveDate, TimeZone};

    use super::*;

    fn header(created: DateTime<Utc>, text: &str) -> RecordHeader {
        RecordHeader {
            created,
            expires: None,
            serializer: "json".into(),
            payload_len: 302,
            payload_checksum: crate::store::record::PayloadChecksum::of(b"302 bytes"),
            key_components: BTreeMap::new(),
            task: None,
            output_type: None,
            declared_digests: Vec::new(),
            cairn_version: text.into(),
        }
    }

    fn same_as_serde_json(h: &RecordHeader) {
        let mut ours = Vec::new();
        write(&h.into(), &mut ours);
        let theirs = serde_json::to_vec(h).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
        assert_eq!(ours, theirs);
    }

    #[test]
    fn every_field_as_serde_json_writes_it() {
        let mut h = header(Utc::now(), "0.1.0");
        same_as_serde_json(&h);
        h.expires = Some(Utc::now() + chrono::Duration::days(3));
        h.key_components = [("inputs", "3f2a"), ("task_source", "9c"), ("", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        h.task = Some("add_one".into());
        h.output_type = Some("alloc::vec::Vec<u8>".into());
        h.declared_digests = vec!["cd".repeat(32), String::new()];
        h.payload_len = u64::MAX;
        same_as_serde_json(&h);
        h.payload_len = 0;
        same_as_serde_json(&h);
        // The checksum field of a record of format 1 or 2.
        h.payload_checksum = crate::store::record::PayloadChecksum::Blake3("ab".repeat(32));
        same_as_serde_json(&h);
    }

    #[test]
    fn strings_with_every_escape_as_serde_json_writes_them() {
        let mut all = String::new();
        for c in 0u32..0x800 {
            all.push(char::from_u32(c).unwrap());
        }
        for text in [
            all.as_str(),
            "",
            "\"",
            "\\",
            "a\"b\\c\nd\te\u{7f}f",
            "\u{0}\u{1f}",
            "naïve — 日本語 🦀",
            "ends with an escape\r",
        ] {
            let mut h = header(Utc::now(), text);
            h.serializer = text.into();
            h.task = Some(text.into());
            h.key_components.insert(text.into(), text.into());
            h.declared_digests = vec![text.into()];
            same_as_serde_json(&h);
        }
    }

    #[test]
    fn dates_as_chrono_writes_them() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let mut dates = Vec::new();
        for nanos in [
            0,
            1,
            999,
            1_000,
            120_000,
            999_000,
            1_000_000,
            5_000_000,
            999_000_000,
            999_999_999,
            123_456_789,
            100,
        ] {
            let t = day.and_hms_nano_opt(23, 59, 59, nanos).unwrap();
            dates.push(Utc.from_utc_datetime(&t));
        }
        // A leap second and years chrono writes in a form of its own.
        let leap = day.and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap();
        dates.push(Utc.from_utc_datetime(&leap));
        for (y, m, d) in [
            (0, 1, 1),
            (9999, 12, 31),
            (-1, 6, 30),
            (10000, 1, 1),
            (1, 2, 3),
        ] {
            let t = NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .and_hms_opt(0, 0, 0);
            dates.push(Utc.from_utc_datetime(&t.unwrap()));
        }
        dates.push(DateTime::<Utc>::MIN_UTC);
        dates.push(DateTime::<Utc>::MAX_UTC);
        // Every day of four centuries around now (leap years, the century rules), at
        // a second of the day that moves, and a day every 97 from year 0 to 9999.
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0);
        let epoch = Utc.from_utc_datetime(&epoch.unwrap());
        let days = (-200 * 366..200 * 366).chain((-719_528..2_932_897).step_by(97));
        for (i, day) in days.enumerate() {
            let d = epoch
                + chrono::Duration::days(day)
                + chrono::Duration::seconds((i as i64 * 7_919) % 86_400);
            let mut ours = Vec::new();
            date(&mut ours, &d);
            let theirs = serde_json::to_vec(&d).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
        for d in dates {
            let mut h = header(d, "v");
            h.expires = Some(d);
            same_as_serde_json(&h);
        }
    }

    #[test]
    fn what_is_written_reads_back() {
        let mut h = header(Utc::now(), "0.1.0");
        h.task = Some("t\"q".into());
        let mut json = Vec::new();
        write(&(&h).into(), &mut json);
        let back: RecordHeader = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, h);
    }
}
