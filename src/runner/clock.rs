//! Where "now" comes from: the system clock, or a clock a test moves by hand.

use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

use crate::cache::memory::micros;

/// A source of the current time, used for cache expiry and for a run's `date`.
///
/// Flows take one ([`crate::Flow::clock`]) so that tests can expire cache entries
/// without sleeping:
///
/// ```
/// use cairn::{Clock, ManualClock};
/// use chrono::{Duration, TimeZone, Utc};
/// let clock = ManualClock::new(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap());
/// clock.advance(Duration::seconds(11));
/// assert_eq!(clock.now(), Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 11).unwrap());
/// ```
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// The current time in whole microseconds since the Unix epoch, rounded down: what
    /// a memory-tier hit compares with its entry's expiry and last confirmation. The
    /// default reads [`Clock::now`]; [`SystemClock`] reads the system's clock without
    /// building a date.
    ///
    /// ```
    /// use cairn::{Clock, ManualClock};
    /// use chrono::{Duration, TimeZone, Utc};
    /// let clock = ManualClock::new(Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 1).unwrap());
    /// clock.advance(Duration::nanoseconds(1_999));
    /// assert_eq!(clock.now_micros(), 1_000_001);
    /// ```
    fn now_micros(&self) -> i64 {
        micros(self.now())
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    #[cfg(unix)]
    // `time_t` and `c_long` are 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    fn now_micros(&self) -> i64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill; CLOCK_REALTIME is
        // always available.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
            return micros(Utc::now());
        }
        // `tv_sec` is rounded down and `tv_nsec` is in 0..1e9, as chrono's parts are.
        i64::from(ts.tv_sec) * 1_000_000 + i64::from(ts.tv_nsec) / 1_000
    }
}

/// A clock that stands still until told to move.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        ManualClock {
            now: Mutex::new(now),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The system clock's microseconds are those of its date, read between two dates.
    #[test]
    fn the_system_clock_reads_the_microseconds_of_its_date() {
        let micros =
            |t: DateTime<Utc>| t.timestamp() * 1_000_000 + i64::from(t.timestamp_subsec_micros());
        for _ in 0..1_000 {
            let before = micros(SystemClock.now());
            let now = SystemClock.now_micros();
            let after = micros(SystemClock.now());
            assert!(before <= now && now <= after, "{before} {now} {after}");
        }
    }

    /// A clock's microseconds are rounded down, before the epoch too.
    #[test]
    fn microseconds_are_rounded_down_on_both_sides_of_the_epoch() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(clock.now_micros(), 0);
        clock.advance(Duration::nanoseconds(999));
        assert_eq!(clock.now_micros(), 0);
        clock.set(
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap() + Duration::nanoseconds(500),
        );
        assert_eq!(clock.now_micros(), -1_000_000);
        clock.set(
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap() + Duration::nanoseconds(1_500),
        );
        assert_eq!(clock.now_micros(), -999_999);
        clock.set(Utc.with_ymd_and_hms(2026, 12, 4, 10, 0, 0).unwrap() + Duration::microseconds(7));
        assert_eq!(clock.now_micros(), 1_796_378_400_000_007);
    }
}
