//! Retrying transient failures with exponential backoff and jitter.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::Result;

/// How often and how patiently [`Error::Unavailable`](crate::Error::Unavailable) failures are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles each time.
    pub initial_backoff: Duration,
    /// The longest delay between attempts.
    pub max_backoff: Duration,
    /// No new attempt starts once this much time has passed since the first one: the
    /// budget of the whole call, in time, next to `max_attempts`.
    pub max_elapsed: Duration,
}

/// The default time budget of one call's retries.
pub const DEFAULT_MAX_ELAPSED: Duration = Duration::from_secs(30);

/// A transient failure whose store said when to come back (`Retry-After`): carried as
/// the source of an [`Error::Unavailable`](crate::Error::Unavailable), and honoured by
/// [`RetryPolicy::run`] (within the policy's time budget).
#[derive(Debug)]
pub struct RetryAfter {
    /// How long the store asked to wait.
    pub after: Duration,
    /// What the store answered.
    pub message: String,
}

impl std::fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (retry after {:?})", self.message, self.after)
    }
}

impl std::error::Error for RetryAfter {}

/// Parses an HTTP `Retry-After` value given in seconds (an HTTP date is not used by
/// object stores and is ignored); capped at one minute.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(60.0)))
}

/// The wait a transient error asks for, when its source is a [`RetryAfter`].
pub fn retry_after_of(e: &crate::Error) -> Option<Duration> {
    match e {
        crate::Error::Unavailable { source, .. } => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(err) = cur {
                if let Some(r) = err.downcast_ref::<RetryAfter>() {
                    return Some(r.after);
                }
                cur = err.source();
            }
            None
        }
        _ => None,
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_elapsed: DEFAULT_MAX_ELAPSED,
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The delay before retry number `retry` (1-based), with full jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let cap = exp.min(self.max_backoff);
        let nanos = cap.as_nanos() as u64;
        if nanos == 0 {
            return cap;
        }
        Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
    }

    /// The delay before retry number `retry` after an answer that asked to wait
    /// `retry_after`, or `None` when it would end past the time budget (`elapsed` is
    /// the time since the first attempt started).
    pub fn next_delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        elapsed: Duration,
    ) -> Option<Duration> {
        if retry >= self.max_attempts {
            return None;
        }
        let delay = match retry_after {
            Some(after) => after.max(self.backoff(retry)),
            None => self.backoff(retry),
        };
        (elapsed + delay < self.max_elapsed).then_some(delay)
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or runs out of
    /// attempts or time (`max_elapsed`); the last error is returned. A `Retry-After`
    /// the store sent (a [`RetryAfter`] source) is waited for.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let start = tokio::time::Instant::now();
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_retryable() => {
                    let Some(delay) = self.next_delay(attempt, retry_after_of(&e), start.elapsed())
                    else {
                        return Err(e);
                    };
                    tracing::debug!(error = %e, attempt, ?delay, "retrying after a transient error");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Whether a failed call is worth another attempt; exposed for backends mapping
/// HTTP status codes.
pub fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unavailable() -> Error {
        Error::Unavailable {
            backend: "memory://".into(),
            key: "k".into(),
            source: "flaky".into(),
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            ..Default::default()
        };
        let out = policy
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(unavailable())
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let err = RetryPolicy::default()
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::NotFound {
                    backend: "memory://".into(),
                    key: "k".into(),
                })
            })
            .await
            .unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..Default::default()
        };
        let err = policy
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(unavailable())
            })
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn delays_stay_within_the_time_budget_and_honour_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            max_elapsed: Duration::from_secs(3),
        };
        let d = policy.next_delay(1, None, Duration::ZERO).unwrap();
        assert!(
            d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
            "{d:?}"
        );
        let d = policy
            .next_delay(1, Some(Duration::from_secs(2)), Duration::ZERO)
            .unwrap();
        assert_eq!(d, Duration::from_secs(2));
        // Waiting as asked would end past the budget: give up now.
        assert_eq!(
            policy.next_delay(2, Some(Duration::from_secs(2)), Duration::from_secs(2)),
            None
        );
        assert_eq!(policy.next_delay(10, None, Duration::ZERO), None);
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("600"), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_answer_is_waited_for() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let out = RetryPolicy::default()
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(Error::Unavailable {
                        backend: "memory://".into(),
                        key: "k".into(),
                        source: Box::new(RetryAfter {
                            after: Duration::from_secs(3),
                            message: "HTTP 429".into(),
                        }),
                    })
                } else {
                    Ok(1)
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 1);
        assert!(start.elapsed() >= Duration::from_secs(3));
    }
}
