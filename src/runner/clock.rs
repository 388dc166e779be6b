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

    /// The current time in whole microseconds since the Unix epoch, rounded down. The
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

    /// A reading of the time that may be cheaper than [`Clock::now_micros`] and lag
    /// it by a bounded amount: what a memory-tier hit compares with its entry's expiry
    /// and last confirmation. The tier counts the lag against the entry, so a reading
    /// behind the time never serves an entry after its expiry or trusts one past its
    /// bound: an entry within the lag of either goes to the store, which reads
    /// [`Clock::now`].
    ///
    /// The default is [`Clock::now_micros`], exact. [`SystemClock`] reads the kernel's
    /// coarse clock on Linux (the time of its last tick, a few times cheaper than the
    /// exact clock on a VM), counted as up to four ticks behind (4–40 ms).
    ///
    /// ```
    /// use cairn::{Clock, ManualClock, Reading};
    /// use chrono::{TimeZone, Utc};
    /// let clock = ManualClock::new(Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 2).unwrap());
    /// assert_eq!(clock.reading(), Reading { micros: 2_000_000, behind: 0 });
    /// ```
    fn reading(&self) -> Reading {
        Reading {
            micros: self.now_micros(),
            behind: 0,
        }
    }
}

/// A reading of a [`Clock`]: `micros` since the Unix epoch, at most `behind`
/// microseconds earlier than the time it was read at (see [`Clock::reading`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Whole microseconds since the Unix epoch, rounded down.
    pub micros: i64,
    /// How far behind the time `micros` may be, in microseconds (0: exact).
    pub behind: i64,
}

impl Reading {
    /// The latest the time may be: `micros + behind`.
    pub fn latest(&self) -> i64 {
        self.micros.saturating_add(self.behind)
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
        timespec_micros(&ts)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn reading(&self) -> Reading {
        let behind = coarse_lag();
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the call to fill.
        if behind == NO_COARSE
            || unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0
        {
            return Reading {
                micros: self.now_micros(),
                behind: 0,
            };
        }
        Reading {
            micros: timespec_micros(&ts),
            behind,
        }
    }
}

/// A timespec of the system's clock in whole microseconds since the epoch.
#[cfg(unix)]
// `time_t` and `c_long` are 32 bits on some targets.
#[allow(clippy::useless_conversion)]
fn timespec_micros(ts: &libc::timespec) -> i64 {
    // `tv_sec` is rounded down and `tv_nsec` is in 0..1e9, as chrono's parts are.
    i64::from(ts.tv_sec) * 1_000_000 + i64::from(ts.tv_nsec) / 1_000
}

/// The coarse clock is not used: its resolution is unknown or too coarse.
#[cfg(any(target_os = "linux", target_os = "android"))]
const NO_COARSE: i64 = -1;

/// How far behind the exact clock the coarse clock may be, in microseconds: four of its
/// ticks (its resolution), asked of the kernel once. The coarse clock is the time of
/// the last tick, under one tick behind while the CPU keeping time runs; a VM whose
/// timekeeping CPU is held up lets another CPU take over after a few ticks (Linux's
/// `MAX_STALLED_JIFFIES`). [`NO_COARSE`] when the kernel does not say, or its tick is
/// longer than 10 ms.
#[cfg(any(target_os = "linux", target_os = "android"))]
// `c_long` is 32 bits on some targets.
#[allow(clippy::useless_conversion)]
fn coarse_lag() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    const UNKNOWN: i64 = -2;
    static LAG: AtomicI64 = AtomicI64::new(UNKNOWN);
    let lag = LAG.load(Ordering::Relaxed);
    if lag != UNKNOWN {
        return lag;
    }
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `res` is a valid timespec for the call to fill.
    let known = unsafe { libc::clock_getres(libc::CLOCK_REALTIME_COARSE, &mut res) } == 0;
    let tick = i64::from(res.tv_sec) * 1_000_000_000 + i64::from(res.tv_nsec);
    let lag = if known && tick > 0 && tick <= 10_000_000 {
        4 * ((tick + 999) / 1_000)
    } else {
        NO_COARSE
    };
    LAG.store(lag, Ordering::Relaxed);
    lag
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
    /// On Linux the system clock's reading is the kernel's coarse clock: it says it may
    /// lag, is never ahead of the exact clock, and lags it by no more than it says.
    /// Samples in which the exact clock itself moved by more than a millisecond (this
    /// thread was held up) are taken again.
    #[test]
    fn the_system_clock_reading_is_never_ahead_and_lags_by_at_most_what_it_says() {
        let mut taken = 0;
        let mut lag_seen = 0;
        while taken < 1_000 {
            let before = SystemClock.now_micros();
            let reading = SystemClock.reading();
            let after = SystemClock.now_micros();
            if after - before > 1_000 {
                continue;
            }
            taken += 1;
            assert!(reading.micros <= after, "{reading:?} ahead of {after}");
            assert!(
                reading.latest() >= before,
                "{reading:?} lags {before} by more than it says"
            );
            lag_seen = lag_seen.max(before - reading.micros);
            if cfg!(any(target_os = "linux", target_os = "android")) {
                assert!(
                    reading.behind > 0 && reading.behind <= 40_000,
                    "{reading:?}"
                );
            } else {
                assert_eq!(reading.behind, 0);
            }
        }
        // The coarse clock is read, not the exact one: it lagged at some point.
        if cfg!(any(target_os = "linux", target_os = "android")) {
            assert!(lag_seen > 0, "the reading never lagged the exact clock");
        }
    }

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
