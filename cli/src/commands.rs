//! One function per command: call the library, print what it returns.

use std::io::{BufWriter, IsTerminal, Write};

use cairn::maintenance::{
    Entry, EntryKind, Filter, Maintenance, PruneOptions, Removal, Removed, RunDetail, RunSummary,
    Shown, Totals, Usage,
};
use chrono::{DateTime, Utc};
use clap::CommandFactory;
use futures::TryStreamExt;
use serde::Serialize;

use crate::args::{Cli, Command, FilterArgs, LocalCacheCommand, RemovalArgs, RunsCommand};
use crate::progress::Ticker;
use crate::{units, Failure};

type Out = BufWriter<std::io::StdoutLock<'static>>;

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    let json = cli.json;
    let now = cli.now;
    let stale = cli.lease_stale_after;
    let open = |url: Option<String>| open(url, now, stale);
    let result = match cli.command {
        Command::Ls {
            store,
            filter,
            fast,
        } => {
            let m = open(store).await?.listing_only(fast.fast);
            ls(&m, &filter, json, &mut out).await
        }
        Command::Show { key, store, limit } => {
            show(&open(store).await?, &key, limit, json, &mut out).await
        }
        Command::Verify {
            store,
            filter,
            jobs,
            delete_corrupt,
        } => {
            let m = open(store).await?.jobs(jobs);
            verify(&m, &filter, delete_corrupt, json, &mut out).await
        }
        Command::Clear {
            store,
            filter,
            removal,
            all,
            tier_only,
        } => {
            if tier_only {
                let url = store_url(store)?;
                let tier = cairn::backend::tier_of_url(&url)
                    .map_err(|e| Failure::store(&url, e))?
                    .ok_or_else(|| {
                        Failure::Config(format!(
                            "{url}: --tier-only needs a store URL with a local tier (?cache_dir=DIR)"
                        ))
                    })?;
                clear_tier(&tier, &removal, json, &mut out)
            } else if filter.is_empty() && !all {
                Err(Failure::Config(
                    "clear needs a filter (--task, --namespace, --older-than, --expired, ...) or --all".into(),
                ))
            } else {
                let m = open(store).await?;
                clear(
                    &m,
                    filter.to_filter(),
                    all && filter.is_empty(),
                    &removal,
                    json,
                    &mut out,
                )
                .await
            }
        }
        Command::LocalCache {
            command: LocalCacheCommand::Clear { removal, tier },
        } => match tier {
            Some(dir) => {
                if !dir.is_dir() {
                    return Err(Failure::Config(format!(
                        "{}: no such directory",
                        dir.display()
                    )));
                }
                let tier = cairn::backend::DiskTier::new(&dir)
                    .map_err(|e| Failure::store(&dir.display().to_string(), e))?;
                clear_tier(&tier, &removal, json, &mut out)
            }
            None => {
                let m = open(None).await?;
                let filter = Filter {
                    kinds: vec![EntryKind::Cache],
                    ..Filter::default()
                };
                clear(&m, filter, true, &removal, json, &mut out).await
            }
        },
        Command::Prune {
            store,
            max_size,
            grace,
            removal,
        } => {
            let m = open(store).await?;
            let options = PruneOptions {
                staged_grace: grace,
                max_size,
                dry_run: removal.dry_run,
            };
            let ticker = Ticker::start(m.progress(), "prune");
            let mut lines = Lines::new(&mut out, json, removal.dry_run);
            let removed = m
                .prune_each(&options, |r| lines.removed(&r))
                .await
                .map_err(|e| Failure::store(&m.describe(), e));
            drop(ticker);
            lines.finish()?;
            let removed = removed?;
            print_removal(&removed, json, &mut out)?;
            if let Some(max) = max_size.filter(|max| removed.remaining_bytes > *max) {
                eprintln!(
                    "cairn: {} still holds {} after pruning, over --max-size {}: what is left is not evictable (only cache records are)",
                    m.describe(),
                    units::size(removed.remaining_bytes),
                    units::size(max)
                );
            }
            Ok(())
        }
        Command::Du {
            store,
            filter,
            fast,
        } => {
            let m = open(store).await?.listing_only(fast.fast);
            du(&m, &filter, json, &mut out).await
        }
        Command::Runs { store, command } => match command {
            None => runs(&open(store).await?, json, &mut out).await,
            Some(RunsCommand::Show { run_id, store }) => {
                run_show(&open(store).await?, &run_id, json, &mut out).await
            }
        },
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut script);
            out.write_all(&script).map_err(Failure::from)
        }
    };
    out.flush()?;
    result
}

/// The URL given, or the configured store's.
fn store_url(url: Option<String>) -> Result<String, Failure> {
    match url {
        Some(u) => Ok(u),
        None => Ok(cairn::Settings::load()
            .map_err(|e| {
                Failure::Config(format!(
                    "no store given, and the settings do not name one: {e}"
                ))
            })?
            .default_store_url()),
    }
}

/// Opens the store a URL names, or the configured one.
async fn open(
    url: Option<String>,
    now: Option<DateTime<Utc>>,
    stale_after: std::time::Duration,
) -> Result<Maintenance, Failure> {
    let url = store_url(url)?;
    let scheme = url.split_once("://").map(|(s, _)| s);
    if matches!(scheme, None | Some("file")) {
        // Listing a typo must not create it.
        let path = url.strip_prefix("file://").unwrap_or(&url);
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if !std::path::Path::new(path).is_dir() {
            return Err(Failure::Config(format!("{url}: no such directory")));
        }
    }
    let backend = cairn::backend::open(&url)
        .await
        .map_err(|e| Failure::store(&url, e))?;
    let m = Maintenance::from_backend(backend).stale_leases_after(stale_after);
    Ok(match now {
        Some(t) => m.at(t),
        None => m,
    })
}

/// Empties a local tier (or, in a dry run, says what that would remove).
fn clear_tier(
    tier: &cairn::backend::DiskTier,
    removal: &RemovalArgs,
    json: bool,
    out: &mut Out,
) -> Result<(), Failure> {
    let name = tier.dir().display().to_string();
    let (copies, bytes) = if removal.dry_run {
        tier.contents()
    } else {
        tier.clear()
    }
    .map_err(|e| Failure::store(&name, e))?;
    #[derive(Serialize)]
    struct Summary<'a> {
        dry_run: bool,
        tier: &'a str,
        entries: u64,
        bytes: u64,
    }
    if json {
        return json_line(
            out,
            &Summary {
                dry_run: removal.dry_run,
                tier: &name,
                entries: copies,
                bytes,
            },
        );
    }
    let verb = if removal.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let plural = if copies == 1 { "copy" } else { "copies" };
    writeln!(
        out,
        "{verb} {} local {plural}, {} from the tier {name}",
        units::count(copies),
        units::size(bytes)
    )?;
    Ok(())
}

/// Prints each removed entry as it goes, keeping the first write error.
struct Lines<'a> {
    out: &'a mut Out,
    json: bool,
    verb: &'static str,
    error: Option<Failure>,
}

impl<'a> Lines<'a> {
    fn new(out: &'a mut Out, json: bool, dry_run: bool) -> Self {
        let verb = if dry_run { "would remove" } else { "removed" };
        Lines {
            out,
            json,
            verb,
            error: None,
        }
    }

    fn removed(&mut self, e: &Removed) {
        if self.error.is_some() {
            return;
        }
        let written = if self.json {
            json_line(self.out, e)
        } else {
            writeln!(
                self.out,
                "{} {} ({}, {}, {})",
                self.verb,
                e.path,
                e.kind,
                units::size(e.size),
                e.reason.name()
            )
            .map_err(Failure::from)
        };
        self.error = written.err();
    }

    fn finish(self) -> Result<(), Failure> {
        self.error.map_or(Ok(()), Err)
    }
}

fn json_line(out: &mut Out, value: &impl Serialize) -> Result<(), Failure> {
    serde_json::to_writer(&mut *out, value)
        .map_err(|e| Failure::Config(format!("cannot write JSON: {e}")))?;
    writeln!(out)?;
    Ok(())
}

fn opt_age(t: Option<DateTime<Utc>>, now: DateTime<Utc>, none: &str) -> String {
    t.map_or_else(|| none.to_owned(), |t| units::age(t, now))
}

fn short(s: Option<&str>, n: usize) -> String {
    match s {
        Some(s) if s.chars().count() > n => {
            format!("{}…", s.chars().take(n - 1).collect::<String>())
        }
        Some(s) => s.to_owned(),
        None => "-".to_owned(),
    }
}

async fn ls(
    m: &Maintenance,
    filter: &FilterArgs,
    json: bool,
    out: &mut Out,
) -> Result<(), Failure> {
    let ticker = Ticker::start(m.progress(), "ls");
    let mut entries = m.list(&filter.to_filter());
    let describe = m.describe();
    let fail = |e: cairn::Error| Failure::store(&describe, e);
    // The first entry before the header: a store that cannot be listed prints nothing.
    let mut entry = entries.try_next().await.map_err(fail)?;
    if !json {
        writeln!(
            out,
            "{:<10} {:<16} {:<12} {:>10} {:<16} {:<16} PATH",
            "KIND", "TASK", "KEY", "SIZE", "CREATED", "EXPIRES"
        )?;
    }
    let now = m.now();
    while let Some(e) = entry {
        if json {
            json_line(out, &e)?;
        } else {
            write_entry(out, &e, now)?;
        }
        entry = entries.try_next().await.map_err(fail)?;
    }
    drop(ticker);
    Ok(())
}

fn write_entry(out: &mut Out, e: &Entry, now: DateTime<Utc>) -> Result<(), Failure> {
    let expires = match e.expires {
        Some(t) if t <= now => "expired".to_owned(),
        t => opt_age(t, now, "never"),
    };
    writeln!(
        out,
        "{:<10} {:<16} {:<12} {:>10} {:<16} {:<16} {}{}",
        e.kind.name(),
        short(e.task.as_deref(), 16),
        short(e.key.as_deref(), 12),
        units::size(e.size),
        units::age(e.created, now),
        expires,
        e.path,
        e.problem
            .as_ref()
            .map_or(String::new(), |p| format!("  ({p})"))
    )?;
    Ok(())
}

async fn show(
    m: &Maintenance,
    key: &str,
    limit: usize,
    json: bool,
    out: &mut Out,
) -> Result<(), Failure> {
    let shown = m
        .show(key, limit)
        .await
        .map_err(|e| Failure::store(&m.describe(), e))?;
    if json {
        return json_line(out, &shown);
    }
    write_shown(out, &shown, m.now())
}

fn write_shown(out: &mut Out, s: &Shown, now: DateTime<Utc>) -> Result<(), Failure> {
    writeln!(out, "path:        {}", s.path)?;
    writeln!(out, "kind:        {}", s.kind)?;
    writeln!(
        out,
        "size:        {} ({} bytes)",
        units::size(s.size),
        units::count(s.size)
    )?;
    if let Some(h) = &s.header {
        let components: Vec<String> = h
            .key_components
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(out, "task:        {}", h.task.as_deref().unwrap_or("-"))?;
        writeln!(
            out,
            "key:         {}",
            if components.is_empty() {
                "-".to_owned()
            } else {
                components.join(", ")
            }
        )?;
        writeln!(out, "serializer:  {}", h.serializer)?;
        writeln!(out, "length:      {} bytes", units::count(h.payload_len))?;
        writeln!(out, "checksum:    {}", h.payload_checksum)?;
        writeln!(
            out,
            "created:     {} ({})",
            h.created.to_rfc3339(),
            units::age(h.created, now)
        )?;
        match h.expires {
            Some(t) => writeln!(
                out,
                "expires:     {} ({})",
                t.to_rfc3339(),
                units::age(t, now)
            )?,
            None => writeln!(out, "expires:     never")?,
        }
        writeln!(
            out,
            "output type: {}",
            h.output_type.as_deref().unwrap_or("-")
        )?;
        writeln!(out, "cairn:       {}", h.cairn_version)?;
    }
    if let Some(p) = &s.problem {
        writeln!(out, "corrupt:     {p}")?;
    }
    writeln!(out, "value ({}):", s.preview.format)?;
    writeln!(out, "{}", s.preview.text)?;
    if s.preview.truncated {
        writeln!(out, "… (cut; --limit shows more)")?;
    }
    Ok(())
}

async fn verify(
    m: &Maintenance,
    filter: &FilterArgs,
    delete_corrupt: bool,
    json: bool,
    out: &mut Out,
) -> Result<(), Failure> {
    let ticker = Ticker::start(m.progress(), "verify");
    let report = m
        .verify(&filter.to_filter(), delete_corrupt)
        .await
        .map_err(|e| Failure::store(&m.describe(), e))?;
    drop(ticker);
    #[derive(Serialize)]
    struct Summary {
        checked: u64,
        bytes: u64,
        corrupt: usize,
    }
    for p in &report.problems {
        if json {
            json_line(out, p)?;
        } else {
            let deleted = if p.deleted { " (deleted)" } else { "" };
            writeln!(out, "corrupt {}: {}{deleted}", p.path, p.reason)?;
        }
    }
    if json {
        json_line(
            out,
            &Summary {
                checked: report.checked,
                bytes: report.bytes,
                corrupt: report.problems.len(),
            },
        )?;
    } else {
        writeln!(
            out,
            "checked {} records, {}: {}",
            units::count(report.checked),
            units::size(report.bytes),
            match report.problems.len() {
                0 => "all intact".to_owned(),
                n => format!("{} corrupt", units::count(n as u64)),
            }
        )?;
    }
    if report.is_ok() {
        Ok(())
    } else {
        Err(Failure::Problems)
    }
}

async fn clear(
    m: &Maintenance,
    filter: Filter,
    everything: bool,
    removal: &RemovalArgs,
    json: bool,
    out: &mut Out,
) -> Result<(), Failure> {
    if everything && !removal.dry_run && !removal.yes {
        confirm(m)?;
    }
    let ticker = Ticker::start(m.progress(), "clear");
    let mut lines = Lines::new(out, json, removal.dry_run);
    let removed = m
        .clear_each(&filter, removal.dry_run, |r| lines.removed(&r))
        .await
        .map_err(|e| Failure::store(&m.describe(), e));
    drop(ticker);
    lines.finish()?;
    print_removal(&removed?, json, out)
}

/// Asks before removing everything: on a terminal, a question; otherwise a refusal.
fn confirm(m: &Maintenance) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Config(format!(
            "{}: refusing to clear everything without --yes (stdin is not a terminal to ask on)",
            m.describe()
        )));
    }
    eprint!("Remove every entry in {}? [y/N] ", m.describe());
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
        Ok(())
    } else {
        Err(Failure::Config("nothing removed".into()))
    }
}

fn print_removal(r: &Removal, json: bool, out: &mut Out) -> Result<(), Failure> {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    #[derive(Serialize)]
    struct Summary {
        dry_run: bool,
        entries: u64,
        bytes: u64,
        kept_live: u64,
    }
    if json {
        return json_line(
            out,
            &Summary {
                dry_run: r.dry_run,
                entries: r.entries(),
                bytes: r.bytes(),
                kept_live: r.kept_live,
            },
        );
    }
    let plural = if r.entries() == 1 { "entry" } else { "entries" };
    writeln!(
        out,
        "{verb} {} {plural}, {}",
        units::count(r.entries()),
        units::size(r.bytes())
    )?;
    if r.kept_live > 0 {
        writeln!(out, "kept {} under a live lease", units::count(r.kept_live))?;
    }
    if r.cleaned_up > 0 {
        writeln!(
            out,
            "the store's own clean-up removed {} more unfinished writes",
            units::count(r.cleaned_up)
        )?;
    }
    Ok(())
}

async fn du(
    m: &Maintenance,
    filter: &FilterArgs,
    json: bool,
    out: &mut Out,
) -> Result<(), Failure> {
    let ticker = Ticker::start(m.progress(), "du");
    let usage: Usage = m
        .usage(&filter.to_filter())
        .await
        .map_err(|e| Failure::store(&m.describe(), e))?;
    drop(ticker);
    if json {
        return json_line(out, &usage);
    }
    let table = |out: &mut Out, title: &str, rows: &std::collections::BTreeMap<String, Totals>| {
        if rows.is_empty() {
            return Ok::<(), Failure>(());
        }
        writeln!(out, "{:<24} {:>10} {:>12}", title, "ENTRIES", "SIZE")?;
        for (name, t) in rows {
            writeln!(
                out,
                "{:<24} {:>10} {:>12}",
                short(Some(name), 24),
                units::count(t.entries),
                units::size(t.bytes)
            )?;
        }
        writeln!(out)?;
        Ok(())
    };
    table(out, "KIND", &usage.by_kind)?;
    table(out, "TASK", &usage.by_task)?;
    table(out, "NAMESPACE", &usage.by_namespace)?;
    writeln!(
        out,
        "{:<24} {:>10} {:>12}",
        "total",
        units::count(usage.total.entries),
        units::size(usage.total.bytes)
    )?;
    Ok(())
}

fn task_counts(r: &RunSummary) -> String {
    if r.tasks.is_empty() {
        return "-".into();
    }
    r.tasks
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn runs(m: &Maintenance, json: bool, out: &mut Out) -> Result<(), Failure> {
    let runs = m
        .runs()
        .await
        .map_err(|e| Failure::store(&m.describe(), e))?;
    if !json {
        writeln!(
            out,
            "{:<36} {:<16} {:<12} {:<16} {:>9}  TASKS",
            "RUN ID", "FLOW", "STATE", "STARTED", "DURATION"
        )?;
    }
    for r in &runs {
        if json {
            json_line(out, r)?;
        } else {
            write_run(out, r, m.now())?;
        }
    }
    Ok(())
}

fn write_run(out: &mut Out, r: &RunSummary, now: DateTime<Utc>) -> Result<(), Failure> {
    writeln!(
        out,
        "{:<36} {:<16} {:<12} {:<16} {:>9}  {}",
        r.run_id,
        short(Some(&r.flow), 16),
        short(Some(&r.state), 12),
        opt_age(r.started, now, "-"),
        r.duration_seconds.map_or("-".into(), units::elapsed),
        task_counts(r)
    )?;
    Ok(())
}

async fn run_show(m: &Maintenance, run_id: &str, json: bool, out: &mut Out) -> Result<(), Failure> {
    let RunDetail { run, task_runs, .. } = m
        .run(run_id)
        .await
        .map_err(|e| Failure::store(&m.describe(), e))?;
    if json {
        json_line(out, &run)?;
        for t in &task_runs {
            json_line(out, t)?;
        }
        return Ok(());
    }
    let now = m.now();
    writeln!(out, "flow run {} of flow '{}'", run.run_id, run.flow)?;
    writeln!(out, "state:    {}", run.state)?;
    writeln!(
        out,
        "started:  {}",
        run.started.map_or("-".into(), |t| format!(
            "{} ({})",
            t.to_rfc3339(),
            units::age(t, now)
        ))
    )?;
    writeln!(
        out,
        "duration: {}",
        run.duration_seconds.map_or("-".into(), units::elapsed)
    )?;
    writeln!(out, "tasks:    {}", task_counts(&run))?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<24} {:>5}  {:<16} LOCATION",
        "TASK RUN", "INDEX", "STATE"
    )?;
    for t in &task_runs {
        writeln!(
            out,
            "{:<24} {:>5}  {:<16} {}",
            short(Some(t.name.as_deref().unwrap_or(&t.task)), 24),
            t.map_index.map_or("-".into(), |i| i.to_string()),
            short(Some(&t.state), 16),
            t.location.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}
