//! The command line: what `cairn` accepts (the help comes from these doc comments).

use std::time::Duration;

use cairn::maintenance::EntryKind;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::units::{parse_duration, parse_size};

/// See, verify, clear and prune what cairn stores, on the local disk, S3 and GCS.
///
/// STORE is a directory (or file:///dir), s3://bucket/prefix or gs://bucket/prefix,
/// with cairn's usual credentials and endpoints (AWS_ENDPOINT_URL,
/// STORAGE_EMULATOR_HOST, ...). Without one, the store of `[results] store` in
/// $CAIRN_HOME/config.toml (or CAIRN__RESULTS__STORE), else $CAIRN_HOME/storage.
///
/// Exit status: 0 ok, 1 problems found (verify), 2 usage or configuration error.
#[derive(Debug, Parser)]
#[command(name = "cairn", version)]
pub struct Cli {
    /// Write one JSON object per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Judge ages and expiry at this time (RFC 3339) instead of now.
    #[arg(long, global = true, hide = true, value_parser = parse_time)]
    pub now: Option<DateTime<Utc>>,

    /// A lease not renewed for this long counts as stale: its holder is gone, and
    /// what it guarded may be cleared or pruned (holders renew every few seconds).
    #[arg(long, global = true, default_value = "1h", value_parser = parse_duration)]
    pub lease_stale_after: Duration,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List cache records, checkpoints, run records, leases and persisted inputs.
    Ls {
        /// The store (see `cairn --help`).
        store: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        fast: FastArg,
    },
    /// Show one record's header and value, by path or cache key (a unique prefix will do).
    Show {
        /// The record's path in the store, or its cache key.
        key: String,
        /// The store (see `cairn --help`).
        store: Option<String>,
        /// Cut the value after this many characters.
        #[arg(long, default_value_t = 2000)]
        limit: usize,
    },
    /// Re-check every record's length and digest; exit 1 when any is corrupt.
    Verify {
        /// The store (see `cairn --help`).
        store: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Records checked at once.
        #[arg(long, short = 'j', default_value_t = cairn::maintenance::DEFAULT_JOBS)]
        jobs: usize,
        /// Delete the records that fail.
        #[arg(long)]
        delete_corrupt: bool,
    },
    /// Remove the entries a filter selects (--all for every entry).
    Clear {
        /// The store (see `cairn --help`).
        store: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        removal: RemovalArgs,
        /// Every entry (asks first on a terminal; needs --yes otherwise).
        #[arg(long)]
        all: bool,
        /// Empty only the local tier of a store URL with `?cache_dir=DIR`: every local
        /// copy goes, the remote store is not touched (no filter applies).
        #[arg(long, conflicts_with_all = ["all", "task", "namespace", "kind", "prefix", "expired", "older_than", "larger_than"])]
        tier_only: bool,
    },
    /// The local cache: `cairn local-cache clear` empties it.
    LocalCache {
        #[command(subcommand)]
        command: LocalCacheCommand,
    },
    /// Remove what no run will use again, and evict to a size.
    ///
    /// Removes expired records, records of format versions this cairn no longer
    /// reads, stale leases (released, or not renewed for --lease-stale-after, an hour
    /// by default), persisted inputs of flow runs that completed, and leftovers of
    /// unfinished writes older than --grace (files left by killed writers on a disk,
    /// open multipart uploads on S3).
    /// Nothing under a live lease is removed.
    ///
    /// With --max-size, then evicts cache records least recently used first until the
    /// store fits. "Used" means read as a cache hit by a task run: a hit marks its
    /// record at most once a day (a small `used/v1/...` object), so last use is known
    /// to within a day; a record never hit counts as used when it was written.
    Prune {
        /// The store (see `cairn --help`).
        store: Option<String>,
        /// Evict least recently used cache records until the store holds at most this
        /// (e.g. 5GiB).
        #[arg(long, value_parser = parse_size)]
        max_size: Option<u64>,
        /// Leftovers of unfinished writes are removed once older than this.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        grace: Duration,
        #[command(flatten)]
        removal: RemovalArgs,
    },
    /// Sizes and counts by kind, task and namespace.
    Du {
        /// The store (see `cairn --help`).
        store: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        fast: FastArg,
    },
    /// Flow runs with their state, start, duration and task counts.
    #[command(args_conflicts_with_subcommands = true)]
    Runs {
        /// The store (see `cairn --help`).
        store: Option<String>,
        #[command(subcommand)]
        command: Option<RunsCommand>,
    },
    /// Print shell completions: `cairn completions bash > /etc/bash_completion.d/cairn`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum LocalCacheCommand {
    /// Remove every cache record of the local store ($CAIRN_HOME's), or with --tier,
    /// every copy in a local tier directory.
    Clear {
        #[command(flatten)]
        removal: RemovalArgs,
        /// Empty this local tier directory (a store's `cache_dir`) instead; the remote
        /// stores it fronts are not touched.
        #[arg(long, value_name = "DIR")]
        tier: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// One flow run's task runs, with their state and location.
    Show {
        /// The flow run id (a unique prefix will do).
        run_id: String,
        /// The store (see `cairn --help`).
        store: Option<String>,
    },
}

/// Which entries: every filter given must hold.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Only entries of this task.
    #[arg(long)]
    pub task: Option<String>,
    /// Only entries of this cache namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only entries of this kind: cache, checkpoint, inputs, result, run, state, lease,
    /// used, staged, other (repeatable).
    #[arg(long)]
    pub kind: Vec<EntryKind>,
    /// Only paths starting with this (then files outside cairn's layout show as other).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only expired entries.
    #[arg(long)]
    pub expired: bool,
    /// Only entries created longer ago than this (30m, 12h, 7d, 2w).
    #[arg(long, value_parser = parse_duration)]
    pub older_than: Option<Duration>,
    /// Only entries larger than this (10MiB, 1GB, ...).
    #[arg(long, value_parser = parse_size)]
    pub larger_than: Option<u64>,
}

impl FilterArgs {
    /// Whether no filter was given.
    pub fn is_empty(&self) -> bool {
        self.task.is_none()
            && self.namespace.is_none()
            && self.kind.is_empty()
            && self.prefix.is_none()
            && !self.expired
            && self.older_than.is_none()
            && self.larger_than.is_none()
    }

    pub fn to_filter(&self) -> cairn::maintenance::Filter {
        cairn::maintenance::Filter {
            kinds: self.kind.clone(),
            task: self.task.clone(),
            namespace: self.namespace.clone(),
            prefix: self.prefix.clone(),
            expired: self.expired,
            older_than: self.older_than,
            larger_than: self.larger_than,
        }
    }
}

#[derive(Debug, Args, Default)]
pub struct FastArg {
    /// From the store's listing alone (one request per page of 1,000 on S3 and GCS,
    /// a directory walk on disk), reading no object: much faster on a large remote
    /// store. Kind, namespace, flow run, size and modification time are known; what
    /// only a record's header says is not: a cache record's task (shown as -),
    /// CREATED (the store's modification time instead), EXPIRES (shown as never, so
    /// --expired selects nothing), and whether a lease was released.
    #[arg(long)]
    pub fast: bool,
}

#[derive(Debug, Args, Default)]
pub struct RemovalArgs {
    /// Print what would be removed, remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Do not ask before removing everything.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("'{s}' is not an RFC 3339 time: {e}"))
}
