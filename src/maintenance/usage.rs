//! How much a store holds: sizes and counts by kind, task and namespace (`du`).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use serde::Serialize;

use crate::backend::Result;
use crate::maintenance::{Entry, Filter, Maintenance};

/// A count of entries and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// How many entries.
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Totals {
    pub(crate) fn add(&mut self, bytes: u64) {
        self.entries += 1;
        self.bytes += bytes;
    }
}

/// What [`Maintenance::usage`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Usage {
    /// Everything selected.
    pub total: Totals,
    /// By kind (`cache`, `checkpoint`, ...).
    pub by_kind: BTreeMap<String, Totals>,
    /// By task; entries of no known task are under `-`.
    pub by_task: BTreeMap<String, Totals>,
    /// By cache namespace (cache records and their leases only).
    pub by_namespace: BTreeMap<String, Totals>,
}

impl Usage {
    fn add(&mut self, e: &Entry) {
        self.total.add(e.size);
        self.by_kind
            .entry(e.kind.name().to_owned())
            .or_default()
            .add(e.size);
        self.by_task
            .entry(e.task.clone().unwrap_or_else(|| "-".into()))
            .or_default()
            .add(e.size);
        if let Some(ns) = &e.namespace {
            self.by_namespace.entry(ns.clone()).or_default().add(e.size);
        }
    }
}

impl Maintenance {
    /// Sizes and counts of the entries `filter` selects (one pass over the listing;
    /// memory grows with the number of tasks and namespaces, not of entries).
    ///
    /// # Errors
    /// The store's listing errors.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use cairn::maintenance::{Filter, Maintenance};
    /// use cairn::{record::RecordInfo, PutMode, ResultStore};
    ///
    /// let store = ResultStore::memory();
    /// for (i, ns) in ["a", "a", "b"].iter().enumerate() {
    ///     let path = format!("cache/v1/{ns}/0{i}/0{i}ff");
    ///     store.write_record(&path, &i, RecordInfo::default(), PutMode::Create).await?;
    /// }
    /// let usage = Maintenance::new(&store).usage(&Filter::default()).await?;
    /// assert_eq!(usage.total.entries, 3);
    /// assert_eq!(usage.by_namespace["a"].entries, 2);
    /// assert_eq!(usage.by_kind["cache"].bytes, usage.total.bytes);
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub async fn usage(&self, filter: &Filter) -> Result<Usage> {
        let mut usage = Usage::default();
        let mut entries = self.list(filter);
        while let Some(e) = entries.try_next().await? {
            usage.add(&e);
        }
        Ok(usage)
    }
}
