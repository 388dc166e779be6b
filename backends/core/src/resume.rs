//! Reads that survive a broken-off body: the rest is asked for again with a range.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::{retry_after_of, Error, Result, RetryPolicy};

/// A body as backends return it.
pub type Body = BoxStream<'static, Result<Bytes>>;

/// Opens the rest of an object's body, `range` of it, at the version first read (a
/// backend asks with `If-Match` or a generation precondition, so that a replaced
/// object is an error, not a splice of two versions).
pub type Reopen = Arc<dyn Fn(Range<u64>) -> BoxFuture<'static, Result<Body>> + Send + Sync>;

struct State {
    body: Body,
    next: u64,
    end: u64,
    retries: u32,
    started: tokio::time::Instant,
}

/// Wraps the body of a read of bytes `range`: a body that stalls for longer than `idle`
/// between chunks, breaks off with a transient error, or ends before `range.end`, is
/// reopened at the first byte not yet returned, within `policy`'s attempts and time
/// budget. When the budget is spent the stream ends with [`Error::Unavailable`] naming
/// `backend`, `key` and how far the read got. Every byte is returned once, in order.
pub fn resuming_body(
    body: Body,
    range: Range<u64>,
    idle: Duration,
    policy: RetryPolicy,
    backend: String,
    key: String,
    reopen: Reopen,
) -> Body {
    let state = State {
        body,
        next: range.start,
        end: range.end,
        retries: 0,
        started: tokio::time::Instant::now(),
    };
    futures::stream::unfold(Some(state), move |state| {
        let policy = policy.clone();
        let backend = backend.clone();
        let key = key.clone();
        let reopen = Arc::clone(&reopen);
        async move {
            let mut s = state?;
            loop {
                let broke = match tokio::time::timeout(idle, s.body.next()).await {
                    Ok(Some(Ok(chunk))) => {
                        s.next += chunk.len() as u64;
                        if s.next > s.end {
                            let e = Error::other(
                                backend,
                                key,
                                format!(
                                    "the store sent more bytes than asked for ({} of {})",
                                    s.next, s.end
                                ),
                            );
                            return Some((Err(e), None));
                        }
                        if chunk.is_empty() {
                            continue;
                        }
                        return Some((Ok(chunk), Some(s)));
                    }
                    Ok(None) if s.next >= s.end => return None,
                    Ok(None) => Error::Unavailable {
                        backend: backend.clone(),
                        key: key.clone(),
                        source: format!("the body ended at byte {} of {}", s.next, s.end).into(),
                    },
                    Ok(Some(Err(e))) if e.is_retryable() => e,
                    Ok(Some(Err(e))) => return Some((Err(e), None)),
                    Err(_) => Error::Unavailable {
                        backend: backend.clone(),
                        key: key.clone(),
                        source: format!("no byte of the body for {idle:?} at byte {}", s.next)
                            .into(),
                    },
                };
                let mut last = broke;
                loop {
                    s.retries += 1;
                    let Some(delay) =
                        policy.next_delay(s.retries, retry_after_of(&last), s.started.elapsed())
                    else {
                        let e = Error::Unavailable {
                            backend: backend.clone(),
                            key: key.clone(),
                            source: format!(
                                "reading the body broke off at byte {} of {} and {} resumption(s) did not finish it: {last}",
                                s.next, s.end, s.retries - 1
                            )
                            .into(),
                        };
                        return Some((Err(e), None));
                    };
                    tracing::debug!(backend = %backend, key = %key, at = s.next, error = %last, "resuming a broken-off read");
                    tokio::time::sleep(delay).await;
                    match reopen(s.next..s.end).await {
                        Ok(body) => {
                            s.body = body;
                            break;
                        }
                        Err(e) if e.is_retryable() => last = e,
                        Err(e) => return Some((Err(e), None)),
                    }
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn data() -> Bytes {
        Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<u8>>())
    }

    fn broken(data: Bytes, range: Range<u64>, cut: usize) -> Body {
        let part = data.slice(range.start as usize..range.end as usize);
        let cut = cut.min(part.len());
        let mut items: Vec<Result<Bytes>> =
            vec![Ok(part.slice(..cut / 2)), Ok(part.slice(cut / 2..cut))];
        if cut < part.len() {
            items.push(Err(Error::Unavailable {
                backend: "memory://".into(),
                key: "k".into(),
                source: "connection reset".into(),
            }));
        }
        futures::stream::iter(items).boxed()
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn broken_bodies_are_resumed_where_they_stopped() {
        let d = data();
        let opens = Arc::new(AtomicU32::new(0));
        let (d2, o2) = (d.clone(), Arc::clone(&opens));
        let reopen: Reopen = Arc::new(move |r: Range<u64>| {
            o2.fetch_add(1, Ordering::SeqCst);
            let body = broken(d2.clone(), r, 3000);
            Box::pin(async move { Ok(body) })
        });
        let body = resuming_body(
            broken(d.clone(), 100..9000, 1234),
            100..9000,
            Duration::from_secs(5),
            quick(),
            "m".into(),
            "k".into(),
            reopen,
        );
        let out: Vec<Bytes> = body.try_collect().await.unwrap();
        assert_eq!(out.concat(), d[100..9000].to_vec());
        assert_eq!(opens.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_body_that_keeps_breaking_fails_naming_the_byte() {
        let d = data();
        let d2 = d.clone();
        let reopen: Reopen = Arc::new(move |r: Range<u64>| {
            let body = broken(d2.clone(), r, 0);
            Box::pin(async move { Ok(body) })
        });
        let body = resuming_body(
            broken(d.clone(), 0..10_000, 10),
            0..10_000,
            Duration::from_secs(5),
            quick(),
            "s3://b".into(),
            "k".into(),
            reopen,
        );
        let err = body.try_collect::<Vec<Bytes>>().await.unwrap_err();
        assert!(err.is_retryable());
        let msg = err.to_string();
        assert!(
            msg.contains("s3://b") && msg.contains("'k'") && msg.contains("byte 10 of 10000"),
            "{msg}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_reopened() {
        let d = data();
        let d2 = d.clone();
        let reopen: Reopen = Arc::new(move |r: Range<u64>| {
            let body = broken(d2.clone(), r, usize::MAX);
            Box::pin(async move { Ok(body) })
        });
        let stalled = futures::stream::iter(vec![Ok(d.slice(0..5))])
            .chain(futures::stream::pending())
            .boxed();
        let body = resuming_body(
            stalled,
            0..10_000,
            Duration::from_secs(1),
            quick(),
            "m".into(),
            "k".into(),
            reopen,
        );
        let out: Vec<Bytes> = body.try_collect().await.unwrap();
        assert_eq!(out.concat(), d.to_vec());
    }

    #[tokio::test]
    async fn a_short_body_is_an_error_when_it_cannot_be_finished() {
        let reopen: Reopen = Arc::new(|_r: Range<u64>| {
            Box::pin(async {
                Err(Error::PreconditionFailed {
                    backend: "m".into(),
                    key: "k".into(),
                    expected: "v1".into(),
                })
            })
        });
        let short = futures::stream::iter(vec![Ok(Bytes::from_static(b"abc"))]).boxed();
        let body = resuming_body(
            short,
            0..10,
            Duration::from_secs(5),
            quick(),
            "m".into(),
            "k".into(),
            reopen,
        );
        let err = body.try_collect::<Vec<Bytes>>().await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::PreconditionFailed);
    }
}
