//! Re-checking every record's length and digest (`verify`).

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::backend::{BackendExt, Error, Key, Result};
use crate::maintenance::{EntryKind, Filter, Maintenance};
use crate::store::record;

/// A record that failed its checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Its path.
    pub path: String,
    /// Its kind.
    pub kind: EntryKind,
    /// Why it failed (truncated, checksum mismatch, ...).
    pub reason: String,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// What [`Maintenance::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Verification {
    /// Records checked.
    pub checked: u64,
    /// Bytes read and hashed.
    pub bytes: u64,
    /// The records that failed, by path.
    pub problems: Vec<Problem>,
}

impl Verification {
    /// Whether every record checked was intact.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Maintenance {
    /// Reads every record `filter` selects (cache records, checkpoints, results,
    /// persisted inputs) whole and checks its magic, version, header checksum, length
    /// and payload checksum, [`Maintenance::jobs`] records at a time on all cores. With
    /// `delete_corrupt`, a record that fails is deleted (and its problem says so); a
    /// record of a newer format version than this cairn reads is reported, never
    /// deleted: a newer cairn wrote it.
    ///
    /// # Errors
    /// The store's errors other than a record vanishing while it was checked.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().build().unwrap().block_on(async {
    /// use cairn::maintenance::{Filter, Maintenance};
    /// use cairn::{record::RecordInfo, PutMode, ResultStore};
    ///
    /// let store = ResultStore::memory();
    /// store.write_record("cache/v1/default/ab/ab01", &"fine", RecordInfo::default(), PutMode::Create).await?;
    /// store.write_bytes("cache/v1/default/cd/cd01", "not a record".into(), PutMode::Create).await?;
    /// let report = Maintenance::new(&store).verify(&Filter::default(), true).await?;
    /// assert_eq!(report.checked, 2);
    /// assert_eq!(report.problems.len(), 1);
    /// assert_eq!(report.problems[0].path, "cache/v1/default/cd/cd01");
    /// assert!(!store.exists("cache/v1/default/cd/cd01").await?);
    /// # Ok::<(), cairn::Error>(()) }).unwrap();
    /// ```
    pub async fn verify(&self, filter: &Filter, delete_corrupt: bool) -> Result<Verification> {
        let mut filter = filter.clone();
        filter.kinds = if filter.kinds.is_empty() {
            EntryKind::ALL.to_vec()
        } else {
            filter.kinds.clone()
        };
        filter.kinds.retain(|k| k.is_record());
        let backend = self.backend.clone();
        let progress = self.progress.clone();
        let mut checks = self
            .list(&filter)
            .map_ok(move |entry| {
                let backend = backend.clone();
                let progress = progress.clone();
                let check = tokio::spawn(async move {
                    let key = Key::parse(entry.path.as_str())?;
                    let bytes = match backend.get(&key).await {
                        Ok(b) => b,
                        Err(e) if e.is_not_found() => return Ok(None),
                        Err(e) => return Err(e),
                    };
                    let len = bytes.len() as u64;
                    let newer = newer_version(&bytes);
                    let outcome = record::decode(bytes).err();
                    progress.hashed(len);
                    let problem = match (outcome, newer) {
                        (None, _) => None,
                        // A newer cairn's record is not damaged: it is left alone.
                        (Some(_), Some(version)) => Some(Problem {
                            path: entry.path,
                            kind: entry.kind,
                            reason: super::entry::version_problem(version),
                            deleted: false,
                        }),
                        (Some(c), None) => {
                            if delete_corrupt {
                                backend.delete(&key).await?;
                                progress.removed_one();
                            }
                            Some(Problem {
                                path: entry.path,
                                kind: entry.kind,
                                reason: c.0,
                                deleted: delete_corrupt,
                            })
                        }
                    };
                    Ok(Some((len, problem)))
                });
                async move {
                    check
                        .await
                        .map_err(|e| Error::other("verify", "", e.to_string()))?
                }
            })
            .try_buffer_unordered(self.jobs)
            .boxed();
        let mut report = Verification::default();
        while let Some(checked) = checks.try_next().await? {
            if let Some((len, problem)) = checked {
                report.checked += 1;
                report.bytes += len;
                report.problems.extend(problem);
            }
        }
        report.problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(report)
    }
}

/// The format version of a record written by a newer cairn than this one, if `bytes`
/// begin as such a record does.
fn newer_version(bytes: &[u8]) -> Option<u16> {
    record::declared_version(bytes).filter(|&version| version > record::FORMAT_VERSION)
}
