//! Human sizes, ages and durations: printed and parsed.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// `3.2 GiB`, `512 B`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `1,204`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2 days ago`, `in 3 hours`, `just now`.
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let span = span(secs.unsigned_abs());
    match secs {
        s if s.abs() < 5 => "just now".into(),
        s if s > 0 => format!("{span} ago"),
        _ => format!("in {span}"),
    }
}

/// `45 seconds`, `1 minute`, `3 hours`, `2 days`.
pub fn span(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// `1.5s`, `2m 5s`, `1h 2m`.
pub fn elapsed(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs as u64;
    if s < 3600 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    }
}

/// Parses `30s`, `30m`, `12h`, `7d`, `2w`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("'{s}' is not a duration: write a number and a unit, as 30s, 30m, 12h, 7d or 2w")
    };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(n.checked_mul(secs).ok_or_else(bad)?))
}

/// Parses `10MiB`, `5GiB`, `1.5 GB`, `500` (bytes), `10M` (binary).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad =
        || format!("'{s}' is not a size: write a number and a unit, as 500B, 10MiB, 5GiB or 1GB");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| bad())?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return Err(bad()),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    Ok((n * factor).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(3_435_973_837), "3.2 GiB");
        assert_eq!(size(1536), "1.5 KiB");
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(1204), "1,204");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000_000), "1,000,000");
    }

    #[test]
    fn ages_read_as_english() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::days(2), now), "2 days ago");
        assert_eq!(age(now - chrono::Duration::hours(1), now), "1 hour ago");
        assert_eq!(age(now + chrono::Duration::days(3), now), "in 3 days");
        assert_eq!(age(now, now), "just now");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("12h").unwrap(),
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert!(parse_duration("7").unwrap_err().contains("30m"));
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3y").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("5GiB").unwrap(), 5 << 30);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("500").unwrap(), 500);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
