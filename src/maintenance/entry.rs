//! One stored object as cairn sees it: its kind, from its place in the layout, and
//! what its header or content says (task, created, expires).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{BackendExt, DynBackend, GetRange, ObjectMeta, StagedObject};
use crate::cache::LeaseHolder;
use crate::store::record::{self, MAGIC};

/// How many bytes are read to parse a record's header (more when it is longer).
const HEADER_READ: u64 = 4096;

/// What an object is, by where it lives (see the table in [`crate::maintenance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A cache record.
    Cache,
    /// A task run's checkpoint.
    Checkpoint,
    /// The persisted inputs of a task run that failed or will be retried.
    Inputs,
    /// The result record of a completed task run in a resumable flow run.
    Result,
    /// A flow run's manifest or summary.
    Run,
    /// One transition of a task run in a resumable flow run (its history).
    State,
    /// A lease (on a cache key or a flow run).
    Lease,
    /// When a record was last used.
    Used,
    /// A file left by a writer that was killed before it published.
    Staged,
    /// Anything else (a target, another tool's file).
    Other,
}

impl EntryKind {
    /// Every kind, in display order.
    pub const ALL: [EntryKind; 10] = [
        EntryKind::Cache,
        EntryKind::Checkpoint,
        EntryKind::Inputs,
        EntryKind::Result,
        EntryKind::Run,
        EntryKind::State,
        EntryKind::Lease,
        EntryKind::Used,
        EntryKind::Staged,
        EntryKind::Other,
    ];

    /// The kind's name, as `ls` shows it and `--kind` takes it.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Cache => "cache",
            EntryKind::Checkpoint => "checkpoint",
            EntryKind::Inputs => "inputs",
            EntryKind::Result => "result",
            EntryKind::Run => "run",
            EntryKind::State => "state",
            EntryKind::Lease => "lease",
            EntryKind::Used => "used",
            EntryKind::Staged => "staged",
            EntryKind::Other => "other",
        }
    }

    /// Whether objects of this kind are framed records (header, digest, payload).
    pub fn is_record(self) -> bool {
        matches!(
            self,
            EntryKind::Cache | EntryKind::Checkpoint | EntryKind::Inputs | EntryKind::Result
        )
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EntryKind {
    type Err = String;

    /// ```
    /// use cairn::maintenance::EntryKind;
    /// assert_eq!("cache".parse::<EntryKind>(), Ok(EntryKind::Cache));
    /// assert!("caches".parse::<EntryKind>().unwrap_err().contains("checkpoint"));
    /// ```
    fn from_str(s: &str) -> Result<Self, String> {
        EntryKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = EntryKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown kind '{s}' (one of: {})", names.join(", "))
            })
    }
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Entry {
    /// What it is.
    pub kind: EntryKind,
    /// Its path in the store.
    pub path: String,
    /// The task it belongs to, when known.
    pub task: Option<String>,
    /// The cache namespace (cache records and their leases).
    pub namespace: Option<String>,
    /// The cache key or task-run identity (hex), when the path names one.
    pub key: Option<String>,
    /// The flow (entries of a flow run).
    pub flow: Option<String>,
    /// The flow run id (entries of a flow run).
    pub run_id: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written: the record's own time, else the store's.
    pub created: DateTime<Utc>,
    /// When it was last written, by the store's clock.
    pub modified: DateTime<Utc>,
    /// When it stops being valid, if ever.
    pub expires: Option<DateTime<Utc>>,
    /// Whether this cairn no longer reads it (an older layout or record format
    /// version). An entry of a newer version, which a newer cairn wrote, is not
    /// obsolete: it is left alone, and its [`Entry::problem`] says why it was not read.
    pub obsolete: bool,
    /// For a lease: whether its holder let it go (released) — it is stale then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released: Option<bool>,
    /// Why its header or content could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Entry {
    /// An entry from its path alone (no read), or `None` for a path that is not cairn's
    /// and `keep_other` is false.
    pub(crate) fn classify(meta: &ObjectMeta) -> Entry {
        let path = meta.key.as_str();
        let mut e = Entry {
            kind: EntryKind::Other,
            path: path.to_owned(),
            task: None,
            namespace: None,
            key: None,
            flow: None,
            run_id: None,
            size: meta.size,
            created: meta.last_modified,
            modified: meta.last_modified,
            expires: None,
            obsolete: false,
            released: None,
            problem: None,
        };
        let parts: Vec<&str> = path.split('/').collect();
        let Some(version) = parts.get(1).filter(|v| is_version(v)) else {
            return e;
        };
        // Layout versions: older ones are obsolete; a newer one is a newer cairn's.
        let layout: u32 = version[1..].parse().unwrap_or(u32::MAX);
        let obsolete = layout < LAYOUT_VERSION;
        if layout > LAYOUT_VERSION {
            e.problem = Some(format!(
                "layout version {version}, newer than this cairn reads (v{LAYOUT_VERSION})"
            ));
        }
        match (parts[0], &parts[2..]) {
            ("cache", [ns, _, key]) | ("leases", [ns, _, key]) => {
                e.kind = if parts[0] == "cache" {
                    EntryKind::Cache
                } else {
                    EntryKind::Lease
                };
                e.namespace = Some((*ns).to_owned());
                e.key = Some((*key).to_owned());
            }
            ("used", [_, ..]) => {
                e.kind = EntryKind::Used;
                e.key = Some(parts[2..].join("/"));
            }
            ("runs", [flow, run, rest @ ..]) if !rest.is_empty() => {
                e.flow = Some((*flow).to_owned());
                e.run_id = Some((*run).to_owned());
                match rest {
                    ["manifest.json"] | ["flow.json"] => e.kind = EntryKind::Run,
                    ["lease"] => e.kind = EntryKind::Lease,
                    ["results", task, _, id] => {
                        e.kind = EntryKind::Result;
                        e.task = Some((*task).to_owned());
                        e.key = Some((*id).to_owned());
                    }
                    ["states", task, _, id, _] => {
                        e.kind = EntryKind::State;
                        e.task = Some((*task).to_owned());
                        e.key = Some((*id).to_owned());
                    }
                    [task, index] => {
                        e.task = Some((*task).to_owned());
                        e.kind = if index.ends_with(".inputs") {
                            EntryKind::Inputs
                        } else {
                            EntryKind::Checkpoint
                        };
                    }
                    _ => return e,
                }
            }
            _ => return e,
        }
        e.obsolete = obsolete;
        e
    }

    /// An entry for a writer's leftover.
    pub(crate) fn staged(s: &StagedObject) -> Entry {
        Entry {
            kind: EntryKind::Staged,
            path: s.path.clone(),
            task: None,
            namespace: None,
            key: None,
            flow: None,
            run_id: None,
            size: s.size,
            created: s.last_modified,
            modified: s.last_modified,
            expires: None,
            obsolete: false,
            released: None,
            problem: None,
        }
    }

    /// A cache record chosen for eviction, from what eviction kept of it.
    pub(crate) fn evictable(path: String, size: u64, created: DateTime<Utc>) -> Entry {
        let mut e = Entry::staged(&StagedObject {
            path,
            size,
            last_modified: created,
        });
        e.kind = EntryKind::Cache;
        e
    }

    /// Fills in what the object's header (records) or content (leases) says.
    pub(crate) async fn load(mut self, backend: &DynBackend) -> Entry {
        if self.kind.is_record() {
            match read_header(backend, &self.path, self.size).await {
                Ok(Ok(header)) => {
                    self.created = header.created;
                    self.expires = header.expires;
                    if header.task.is_some() {
                        self.task = header.task;
                    }
                }
                Ok(Err(HeaderProblem::OtherVersion(v))) => {
                    self.obsolete = v < record::OLDEST_READ_VERSION;
                    self.problem = Some(version_problem(v));
                }
                Ok(Err(HeaderProblem::Corrupt(reason))) => self.problem = Some(reason),
                Err(e) => self.problem = Some(e.to_string()),
            }
        } else if self.kind == EntryKind::Lease {
            let read = match crate::Key::parse(self.path.as_str()) {
                Ok(key) => backend.get(&key).await,
                Err(e) => Err(e),
            };
            match read.map(|b| serde_json::from_slice::<LeaseHolder>(&b)) {
                Ok(Ok(holder)) => {
                    if holder.task != "(flow run)" {
                        self.task = Some(holder.task);
                    }
                    self.released = Some(holder.released);
                }
                Ok(Err(e)) => self.problem = Some(format!("unreadable lease: {e}")),
                Err(e) => self.problem = Some(e.to_string()),
            }
        }
        self
    }

    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// The prefix of its flow run (`runs/v1/<flow>/<run>/`), for entries of one.
    pub(crate) fn run_prefix(&self) -> Option<String> {
        let (flow, run) = (self.flow.as_ref()?, self.run_id.as_ref()?);
        let version = self.path.split('/').nth(1)?;
        Some(format!("runs/{version}/{flow}/{run}/"))
    }
}

/// The layout version (`cache/v1/...`) this cairn reads and writes.
const LAYOUT_VERSION: u32 = 1;

/// Why a record of format `version`, which this cairn does not read, was not read.
pub(crate) fn version_problem(version: u16) -> String {
    if version > record::FORMAT_VERSION {
        format!(
            "record format version {version}, newer than this cairn reads ({}): left alone",
            record::FORMAT_VERSION
        )
    } else {
        format!("record format version {version}, no longer read")
    }
}

fn is_version(s: &str) -> bool {
    s.len() > 1 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

pub(crate) enum HeaderProblem {
    OtherVersion(u16),
    Corrupt(String),
}

/// Reads and checks a record's header only.
pub(crate) async fn read_header(
    backend: &DynBackend,
    path: &str,
    size: u64,
) -> crate::Result<Result<record::RecordHeader, HeaderProblem>> {
    let key = crate::Key::parse(path)?;
    let mut want = HEADER_READ.min(size.max(1));
    loop {
        let (_, bytes) = backend
            .get_bytes(&key, Some(GetRange::Bounded(0..want)))
            .await?;
        if let Some(version) = record::declared_version(&bytes) {
            if !record::reads_version(version) {
                return Ok(Err(HeaderProblem::OtherVersion(version)));
            }
        }
        if bytes.len() >= 14 && &bytes[..8] == MAGIC {
            let header_len = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
            let needed = 14 + header_len as u64 + 16;
            if needed > bytes.len() as u64 && needed <= size && want < needed {
                want = needed;
                continue;
            }
        }
        return Ok(record::decode_header(&bytes)
            .map(|(h, _)| h)
            .map_err(|c| HeaderProblem::Corrupt(c.0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;

    fn meta(path: &str) -> ObjectMeta {
        ObjectMeta {
            key: Key::parse(path).unwrap(),
            size: 10,
            last_modified: Utc::now(),
            version: None,
            metadata: Default::default(),
        }
    }

    #[test]
    fn paths_name_their_kind() {
        let cases = [
            ("cache/v1/default/ab/abcd", EntryKind::Cache),
            ("leases/v1/default/ab/abcd", EntryKind::Lease),
            ("runs/v1/etl/r1/lease", EntryKind::Lease),
            ("runs/v1/etl/r1/manifest.json", EntryKind::Run),
            ("runs/v1/etl/r1/flow.json", EntryKind::Run),
            ("runs/v1/etl/r1/load/0", EntryKind::Checkpoint),
            ("runs/v1/etl/r1/load/0.inputs", EntryKind::Inputs),
            ("runs/v1/etl/r1/results/load/ab/abcd", EntryKind::Result),
            (
                "runs/v1/etl/r1/states/load/ab/abcd/0a1b-02-completed",
                EntryKind::State,
            ),
            ("used/v1/cache/v1/default/ab/abcd", EntryKind::Used),
            ("reports/2024/summary.csv", EntryKind::Other),
            ("cache/latest", EntryKind::Other),
        ];
        for (path, kind) in cases {
            assert_eq!(Entry::classify(&meta(path)).kind, kind, "{path}");
        }
        let e = Entry::classify(&meta("runs/v1/etl/r1/load/3.inputs"));
        assert_eq!(e.task.as_deref(), Some("load"));
        assert_eq!(e.run_prefix().as_deref(), Some("runs/v1/etl/r1/"));
        let e = Entry::classify(&meta("cache/v1/ns/ab/abcd"));
        assert_eq!(
            (e.namespace.as_deref(), e.key.as_deref()),
            (Some("ns"), Some("abcd"))
        );
    }

    #[test]
    fn older_layout_versions_are_obsolete_and_newer_ones_left_alone() {
        assert!(Entry::classify(&meta("cache/v0/default/ab/abcd")).obsolete);
        let current = Entry::classify(&meta("cache/v1/default/ab/abcd"));
        assert!(!current.obsolete && current.problem.is_none());
        let newer = Entry::classify(&meta("cache/v2/default/ab/abcd"));
        assert!(!newer.obsolete);
        assert_eq!(
            newer.problem.as_deref(),
            Some("layout version v2, newer than this cairn reads (v1)")
        );
    }
}
