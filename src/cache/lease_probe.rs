//! The lease probe: checks, on a scratch object, that a store enforces the
//! preconditions that leases rest on.
//!
//! A lease (see [`Reservation`](super::Reservation)) is only as good as the store's
//! conditional writes: `Create` must refuse an object that exists, `IfMatch` must
//! refuse a version that moved on, and every write must give the object a new
//! version. An emulator or a gateway that accepts a stale `IfMatch` would let two
//! holders think they hold one lease. [`probe_leases`] runs the sequence a lease goes
//! through — create, create again, renew, renew from a stale version, mark released,
//! delete — and reports each step, so that a test suite (or a program at start-up)
//! finds a gap before it matters, never as a silent pass.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use cairn::{cache::probe_leases, ResultStore};
//!
//! let report = probe_leases(&ResultStore::memory()).await?;
//! assert!(report.is_sound(), "{:?}", report.gaps());
//! # Ok::<(), cairn::Error>(())
//! # }).unwrap();
//! ```

use crate::backend::{ErrorKind, Key, PutMode, Result};
use crate::store::ResultStore;

/// What [`probe_leases`] found: one field per precondition a lease needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseProbe {
    /// The store probed, as its URL.
    pub store: String,
    /// A second `Create` of an existing object is refused with `AlreadyExists`.
    pub create_is_exclusive: bool,
    /// An `IfMatch` write on the current version is applied.
    pub if_match_applies: bool,
    /// Every write gives the object a new version (a renewal is visible to waiters).
    pub versions_change: bool,
    /// An `IfMatch` write on a version that moved on is refused with
    /// `PreconditionFailed`.
    pub stale_if_match_is_refused: bool,
    /// A deleted lease is gone (a waiter can take it at once).
    pub delete_removes: bool,
}

impl LeaseProbe {
    /// Whether every precondition holds: leases on this store are sound.
    pub fn is_sound(&self) -> bool {
        self.gaps().is_empty()
    }

    /// One line per precondition that does not hold, naming the store.
    pub fn gaps(&self) -> Vec<String> {
        let checks = [
            (
                self.create_is_exclusive,
                "a second Create of an existing object was not refused",
            ),
            (
                self.if_match_applies,
                "an IfMatch write on the current version was refused",
            ),
            (
                self.versions_change,
                "a write did not change the object's version",
            ),
            (
                self.stale_if_match_is_refused,
                "an IfMatch write on a stale version was not refused",
            ),
            (self.delete_removes, "a deleted object was still there"),
        ];
        checks
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, what)| format!("{}: {what}", self.store))
            .collect()
    }
}

/// Runs a lease's life on a scratch object under `leases/v1/.probe/` and reports
/// which preconditions the store enforced. The scratch object is removed.
///
/// # Errors
/// When the store cannot be reached or refuses the first write (missing bucket,
/// permissions): the error names the store and the cause.
pub async fn probe_leases(store: &ResultStore) -> Result<LeaseProbe> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let key = Key::parse(format!("leases/v1/.probe/{}/{id}", &id[..2]))?;
    let backend = store.backend();
    let put = |body: &'static str, mode: PutMode| {
        let key = key.clone();
        async move {
            backend
                .put_opts(&key, body.as_bytes().to_vec().into(), mode.into())
                .await
        }
    };
    let first = put("{\"generation\":1}", PutMode::Create).await?;
    let mut report = LeaseProbe {
        store: store.url().to_owned(),
        create_is_exclusive: false,
        if_match_applies: false,
        versions_change: false,
        stale_if_match_is_refused: false,
        delete_removes: false,
    };
    let outcome = async {
        report.create_is_exclusive = matches!(
            put("{\"generation\":9}", PutMode::Create).await,
            Err(e) if e.kind() == ErrorKind::AlreadyExists
        );
        // The version now (a store that let the second Create through moved it on).
        let Some(v1) = first.version.clone() else {
            return Ok(());
        };
        let v1 = backend.head(&key).await?.version.unwrap_or(v1);
        let renewed = put(
            "{\"generation\":1,\"renewals\":1}",
            PutMode::IfMatch(v1.clone()),
        )
        .await;
        let v2 = match renewed {
            Ok(r) => {
                report.if_match_applies = true;
                report.versions_change = r.version.as_ref().is_some_and(|v2| *v2 != v1);
                r.version
            }
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => None,
            Err(e) => return Err(e),
        };
        if v2.is_some() && report.versions_change {
            report.stale_if_match_is_refused = matches!(
                put("{\"generation\":2}", PutMode::IfMatch(v1)).await,
                Err(e) if e.kind() == ErrorKind::PreconditionFailed
            );
        }
        Ok(())
    }
    .await;
    let deleted = backend.delete(&key).await;
    report.delete_removes =
        deleted.is_ok() && matches!(backend.head(&key).await, Err(e) if e.is_not_found());
    outcome?;
    deleted?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use futures::stream::BoxStream;

    use super::*;
    use crate::backend::{
        Backend, Capabilities, DynBackend, GetRange, GetResult, MemoryBackend, ObjectMeta,
        PutOptions, PutPayload, PutResult,
    };

    /// A store that ignores one precondition, as a careless gateway or emulator might.
    #[derive(Debug)]
    struct Careless {
        inner: DynBackend,
        ignores_create: bool,
    }

    #[async_trait]
    impl Backend for Careless {
        fn describe(&self) -> String {
            "careless://".into()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        async fn head(&self, key: &Key) -> Result<ObjectMeta> {
            self.inner.head(key).await
        }
        async fn get_opts(&self, key: &Key, range: Option<GetRange>) -> Result<GetResult> {
            self.inner.get_opts(key, range).await
        }
        async fn put_opts(&self, key: &Key, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            let ignored = match o.mode {
                PutMode::Create => self.ignores_create,
                PutMode::IfMatch(_) => !self.ignores_create,
                PutMode::Overwrite => false,
            };
            let o = if ignored {
                PutMode::Overwrite.into()
            } else {
                o
            };
            self.inner.put_opts(key, p, o).await
        }
        async fn delete(&self, key: &Key) -> Result<()> {
            self.inner.delete(key).await
        }
        fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
    }

    fn careless(ignores_create: bool) -> ResultStore {
        ResultStore::new(Careless {
            inner: std::sync::Arc::new(MemoryBackend::new()),
            ignores_create,
        })
    }

    #[tokio::test]
    async fn a_sound_store_passes_every_step() {
        let report = probe_leases(&ResultStore::memory()).await.unwrap();
        assert!(report.is_sound(), "{:?}", report.gaps());
        assert!(report.versions_change && report.delete_removes);
    }

    #[tokio::test]
    async fn a_store_that_ignores_create_is_reported() {
        let report = probe_leases(&careless(true)).await.unwrap();
        assert!(!report.create_is_exclusive);
        assert!(report.stale_if_match_is_refused);
        let gaps = report.gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].starts_with("careless://"), "{gaps:?}");
        assert!(gaps[0].contains("second Create"), "{gaps:?}");
    }

    #[tokio::test]
    async fn a_store_that_ignores_if_match_is_reported() {
        let report = probe_leases(&careless(false)).await.unwrap();
        assert!(report.create_is_exclusive);
        assert!(report.if_match_applies);
        assert!(!report.stale_if_match_is_refused);
        assert!(!report.is_sound());
        assert!(
            report.gaps()[0].contains("stale version"),
            "{:?}",
            report.gaps()
        );
    }
}
