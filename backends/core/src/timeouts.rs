//! Time bounds on the requests of network backends, and the store URL options that set
//! them.

use std::time::Duration;

use crate::{Error, Result};

/// The default time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default time a request may go without receiving a byte (the answer's first
/// byte, then between the chunks of a body).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The default bound on one operation, every attempt and backoff included (for a read,
/// until its answer starts; the body is then bounded by the read timeout).
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a network backend waits before it gives up with
/// [`Error::Unavailable`]: a stalled store never hangs a call.
///
/// ```
/// use std::time::Duration;
/// use cairn_backend::Timeouts;
///
/// let mut t = Timeouts::default();
/// assert_eq!(t.connect, Duration::from_secs(5));
/// t.set("read_timeout", "1500ms")?;
/// t.set("operation_timeout", "2m")?;
/// assert_eq!((t.read, t.operation), (Duration::from_millis(1500), Duration::from_secs(120)));
/// assert!(t.set("read_timeout", "soon").is_err());
/// # Ok::<(), cairn_backend::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection (TCP and TLS).
    pub connect: Duration,
    /// Waiting for the next byte of an answer: its first byte, then each chunk of its
    /// body. A read whose body stalls or breaks off is resumed where it stopped.
    pub read: Duration,
    /// One whole operation, every attempt and backoff included.
    pub operation: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            read: DEFAULT_READ_TIMEOUT,
            operation: DEFAULT_OPERATION_TIMEOUT,
        }
    }
}

/// The store URL options (`?name=value&...`) that set [`Timeouts`] and retries.
pub const TIMEOUT_OPTIONS: [&str; 4] = [
    "connect_timeout",
    "read_timeout",
    "operation_timeout",
    "max_attempts",
];

impl Timeouts {
    /// Sets one timeout by its option name (`connect_timeout`, `read_timeout`,
    /// `operation_timeout`) from a duration such as `5s`, `250ms` or `2m`.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown name or a value that is not a positive duration.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let d = parse_duration(value).map_err(|reason| Error::Config {
            message: format!("{name} = '{value}': {reason}"),
        })?;
        match name {
            "connect_timeout" => self.connect = d,
            "read_timeout" => self.read = d,
            "operation_timeout" => self.operation = d,
            _ => {
                return Err(Error::Config {
                    message: format!(
                        "unknown timeout '{name}' (known: connect_timeout, read_timeout, operation_timeout)"
                    ),
                })
            }
        }
        Ok(())
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h` or a bare number of seconds into a positive
/// duration.
///
/// # Errors
/// A reason, for anything else.
pub fn parse_duration(value: &str) -> std::result::Result<Duration, String> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| "not a duration (examples: 250ms, 5s, 2m)".to_string())?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit '{u}' (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return Err("a duration must be positive".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Splits `scheme://rest?a=1&b=2` into `scheme://rest` and its options, in order.
///
/// # Errors
/// [`Error::Config`] for a fragment, an option without `=` or an empty name.
pub fn split_url_options(url: &str) -> Result<(&str, Vec<(String, String)>)> {
    if url.contains('#') {
        return Err(Error::Config {
            message: format!("'{url}': a store URL takes no fragment"),
        });
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url, Vec::new()));
    };
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => {
                return Err(Error::Config {
                    message: format!("'{url}': option '{pair}' is not name=value"),
                })
            }
        }
    }
    Ok((base, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        for bad in ["", "0s", "-1s", "5 days", "s", "1e999", "nan"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn url_options_are_split() {
        let (base, opts) = split_url_options("s3://b/p?read_timeout=1s&max_attempts=2").unwrap();
        assert_eq!(base, "s3://b/p");
        assert_eq!(
            opts,
            vec![
                ("read_timeout".to_string(), "1s".to_string()),
                ("max_attempts".to_string(), "2".to_string())
            ]
        );
        assert_eq!(split_url_options("s3://b").unwrap().1, vec![]);
        assert!(split_url_options("s3://b?x").is_err());
        assert!(split_url_options("s3://b?=1").is_err());
        assert!(split_url_options("s3://b#f").is_err());
    }

    #[test]
    fn unknown_timeouts_are_refused() {
        let mut t = Timeouts::default();
        let e = t.set("idle", "1s").unwrap_err();
        assert!(e.to_string().contains("unknown timeout 'idle'"), "{e}");
        assert_eq!(t, Timeouts::default());
    }
}
