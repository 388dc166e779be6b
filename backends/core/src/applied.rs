//! Recognizing a write that the store applied although its answer was lost.

use crate::{Backend, Key, PutPayload, PutResult};

/// Whether the object at `key` holds exactly `payload`, read back after a conditional
/// write whose earlier attempt failed in a way that may have hidden its success (a
/// reset or a 5xx after the store applied it) and whose retry was then refused
/// (`AlreadyExists`, a stale version, an unknown upload). `Some` with the stored
/// version when it does: the write was applied, by that earlier attempt.
///
/// Equal bytes are taken as this write: whichever attempt stored them, the key holds
/// exactly what the caller wrote. (Writes that must exclude an identical concurrent
/// write, such as leases, carry their owner in their bytes.)
pub async fn recognize_applied<B: Backend + ?Sized>(
    backend: &B,
    key: &Key,
    payload: &PutPayload,
) -> Option<PutResult> {
    let (meta, stored) = backend.get_bytes(key, None).await.ok()?;
    if stored.len() as u64 != payload.len() {
        return None;
    }
    let mut at = 0usize;
    for chunk in payload.chunks() {
        if stored[at..at + chunk.len()] != chunk[..] {
            return None;
        }
        at += chunk.len();
    }
    tracing::info!(
        backend = %backend.describe(),
        key = %key,
        "a retried write had been applied by an earlier attempt"
    );
    Some(PutResult {
        version: meta.version,
    })
}
