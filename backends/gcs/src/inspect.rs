//! Whole-object reads whose bytes are inspected (a record's BLAKE3) on another thread
//! while the rest of the body arrives, so that the check costs no second pass.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use cairn_backend::{Body, Inspector, Result};

/// Bodies at least this long are inspected on another thread as they arrive; shorter
/// ones are inspected once read, where a thread would cost more than it saves.
pub(crate) const PIPELINE_MIN: usize = 8 << 20;
/// Pieces are handed to the inspecting thread in batches of at least this many bytes.
const BATCH: usize = 1 << 20;
/// Batches waiting for the inspecting thread at most. The pieces of a batch are the
/// body's own buffers (shared, not copied), so this bounds what is held beyond the
/// result to about `IN_FLIGHT * BATCH` bytes.
const IN_FLIGHT: usize = 8;

/// Collects `body`, of `expected` bytes, into one buffer allocated once at that size,
/// handing every piece to `inspect` once, in order, on a blocking thread while the
/// next pieces arrive. The body's chunks are copied into the result once and shared
/// (reference-counted) with the inspecting thread, never copied for it.
///
/// A body that fails ends the read with its error once the inspecting thread has
/// stopped; a panic of `inspect` is raised again here.
pub(crate) async fn collect_inspected(
    mut body: Body,
    expected: usize,
    mut inspect: Inspector,
) -> Result<Bytes> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(IN_FLIGHT);
    let worker = tokio::task::spawn_blocking(move || {
        while let Some(batch) = rx.blocking_recv() {
            for piece in &batch {
                inspect(piece);
            }
        }
    });
    let mut buf = BytesMut::with_capacity(expected);
    let mut batch = Vec::new();
    let mut batched = 0usize;
    let read: Result<()> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            buf.extend_from_slice(&chunk);
            batched += chunk.len();
            batch.push(chunk);
            if batched >= BATCH {
                batched = 0;
                if tx.send(std::mem::take(&mut batch)).await.is_err() {
                    // The inspecting thread is gone: it panicked, raised below.
                    break;
                }
            }
        }
        Ok(())
    }
    .await;
    if read.is_ok() && !batch.is_empty() {
        let _ = tx.send(batch).await;
    }
    drop(tx);
    let inspected = worker.await;
    if let Err(e) = inspected {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    read?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_backend::Error;
    use std::sync::{Arc, Mutex};

    fn data(len: usize) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
                .collect::<Vec<u8>>(),
        )
    }

    /// A body of `data` in chunks of `chunk` bytes.
    fn body_of(data: &Bytes, chunk: usize) -> Body {
        let pieces: Vec<Result<Bytes>> = (0..data.len())
            .step_by(chunk)
            .map(|i| Ok(data.slice(i..(i + chunk).min(data.len()))))
            .collect();
        futures::stream::iter(pieces).boxed()
    }

    #[tokio::test]
    async fn every_byte_is_inspected_once_in_order_on_another_thread() {
        let value = data((3 << 20) + 12_345);
        let seen = Arc::new(Mutex::new((Vec::<u8>::new(), Vec::new())));
        let sink = seen.clone();
        let caller = std::thread::current().id();
        let inspect: Inspector = Box::new(move |piece: &[u8]| {
            let mut s = sink.lock().unwrap();
            s.0.extend_from_slice(piece);
            s.1.push(std::thread::current().id());
        });
        let got = collect_inspected(body_of(&value, 64 << 10), value.len(), inspect)
            .await
            .unwrap();
        assert!(got == value, "the collected bytes are not the body");
        let seen = seen.lock().unwrap();
        assert!(seen.0 == value[..], "the inspected pieces are not the body");
        assert!(
            seen.1.iter().all(|t| *t != caller),
            "the pieces were inspected on the reading thread"
        );
    }

    #[tokio::test]
    async fn a_failing_body_is_its_error() {
        let value = data(5 << 20);
        let body = body_of(&value, 1 << 20)
            .take(3)
            .chain(futures::stream::iter([Err(Error::Unavailable {
                backend: "gs://b".into(),
                key: "k".into(),
                source: "connection reset".into(),
            })]))
            .boxed();
        let err = collect_inspected(body, value.len(), Box::new(|_: &[u8]| {}))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("connection reset"), "{err}");
    }

    #[tokio::test]
    #[should_panic(expected = "the inspector broke")]
    async fn a_panicking_inspector_is_raised_in_the_reader() {
        let value = data(3 << 20);
        let _ = collect_inspected(
            body_of(&value, 64 << 10),
            value.len(),
            Box::new(|_: &[u8]| panic!("the inspector broke")),
        )
        .await;
    }

    #[tokio::test]
    async fn an_empty_body_is_empty() {
        let seen = Arc::new(Mutex::new(0usize));
        let sink = seen.clone();
        let got = collect_inspected(
            futures::stream::empty().boxed(),
            0,
            Box::new(move |p: &[u8]| *sink.lock().unwrap() += p.len()),
        )
        .await
        .unwrap();
        assert!(got.is_empty());
        assert_eq!(*seen.lock().unwrap(), 0);
    }
}
