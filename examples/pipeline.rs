//! A Make-style pipeline on the local disk: fetch → clean → aggregate → report.
//!
//! Each step is a cairn [`Task`] with a templated target under the data directory,
//! run inside one [`Flow`]. A step whose target exists is `Cached`: its output is read
//! back from the target and its body does not run. Otherwise it runs and publishes its
//! target atomically, so a killed run never leaves a partial file that a later run
//! would take for done. Run it twice: the first run does all the work (every task
//! `Completed`), the second finds every target and does none (every task `Cached`).
//!
//! ```text
//! cargo run --example pipeline                 # data in ./target/cairn-pipeline
//! cargo run --example pipeline -- /tmp/cairn   # data elsewhere
//! ```
//!
//! The targets are ordinary files: `weather/<date>/raw/fetch.json`,
//! `weather/<date>/clean/clean.msgpack`, `weather/<date>/aggregate.json` and
//! `weather/<date>/report.csv`. Delete one and the next run redoes that step only.

mod common;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cairn::{Flow, ResultStore, Task, TaskError};
use serde::{Deserialize, Serialize};

/// One raw weather reading, as a sensor reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    station: String,
    hour: u32,
    celsius: Option<f64>,
}

/// Per-station summary of the clean readings.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Summary {
    station: String,
    readings: usize,
    min: f64,
    max: f64,
    mean: f64,
}

fn fetch(stations: &[String]) -> Vec<Reading> {
    // A deterministic stand-in for a download: 24 hourly readings per station, with
    // the odd sensor dropout and glitch a real feed has.
    let mut out = Vec::new();
    for (s, station) in stations.iter().enumerate() {
        for hour in 0..24u32 {
            let base = 8.0
                + 3.0 * s as f64
                + 6.0 * ((hour as f64 - 14.0) / 24.0 * std::f64::consts::TAU).cos();
            let celsius = match (hour * 7 + s as u32) % 23 {
                0 => None,        // dropout
                1 => Some(999.0), // glitch
                _ => Some((base * 10.0).round() / 10.0),
            };
            out.push(Reading {
                station: station.to_string(),
                hour,
                celsius,
            });
        }
    }
    out
}

fn clean(raw: &[Reading]) -> Vec<Reading> {
    raw.iter()
        .filter(|r| r.celsius.is_some_and(|c| (-60.0..=60.0).contains(&c)))
        .cloned()
        .collect()
}

fn aggregate(clean: &[Reading]) -> Vec<Summary> {
    let mut by_station: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in clean {
        if let Some(c) = r.celsius {
            by_station.entry(&r.station).or_default().push(c);
        }
    }
    by_station
        .into_iter()
        .map(|(station, v)| Summary {
            station: station.to_string(),
            readings: v.len(),
            min: v.iter().cloned().fold(f64::INFINITY, f64::min),
            max: v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            mean: (v.iter().sum::<f64>() / v.len() as f64 * 10.0).round() / 10.0,
        })
        .collect()
}

fn report(date: &str, summaries: &[Summary]) -> String {
    let mut out = format!("station,readings,min,max,mean  # {date}\n");
    for s in summaries {
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            s.station, s.readings, s.min, s.max, s.mean
        ));
    }
    out
}

/// The flow's parameters.
#[derive(Debug, Clone, Serialize)]
struct Params {
    stations: Vec<String>,
    day: String,
}

/// The four steps, each a task with a target; `bodies` counts the bodies that ran.
struct Pipeline {
    fetch: Task<Vec<String>, Vec<Reading>>,
    clean: Task<Vec<Reading>, Vec<Reading>>,
    aggregate: Task<Vec<Reading>, Vec<Summary>>,
    report: Task<(String, Vec<Summary>), String>,
    bodies: Arc<AtomicUsize>,
}

impl Pipeline {
    fn new(store: &ResultStore) -> cairn::Result<Self> {
        let bodies = Arc::new(AtomicUsize::new(0));
        let counted = |bodies: &Arc<AtomicUsize>| {
            let bodies = bodies.clone();
            move || {
                bodies.fetch_add(1, Ordering::SeqCst);
            }
        };
        let ran = counted(&bodies);
        let fetch = Task::infallible("fetch", move |stations: Vec<String>| {
            ran();
            async move { fetch(&stations) }
        })
        .inputs(["stations"])
        .result(store.clone())
        .target("{flow_name}/{today}/raw/{task_name}.json");
        let ran = counted(&bodies);
        let clean = Task::infallible("clean", move |raw: Vec<Reading>| {
            ran();
            async move { clean(&raw) }
        })
        .inputs(["raw"])
        .result(store.clone())
        .target("{flow_name}/{today}/clean/{task_name}.msgpack");
        let ran = counted(&bodies);
        let aggregate = Task::infallible("aggregate", move |clean: Vec<Reading>| {
            ran();
            async move { aggregate(&clean) }
        })
        .inputs(["clean"])
        .result(store.clone())
        .target("{flow_name}/{today}/{task_name}.json");
        let ran = counted(&bodies);
        let report = Task::infallible("report", move |(day, summaries): (String, Vec<Summary>)| {
            ran();
            async move { report(&day, &summaries) }
        })
        .inputs(["day", "summaries"])
        .result(store.clone())
        .target("{flow_name}/{today}/{task_name}.csv");
        Ok(Pipeline {
            fetch,
            clean,
            aggregate,
            report,
            bodies,
        })
    }

    /// The flow's body: each step's output is the next one's input.
    async fn run(&self, params: Params) -> Result<String, TaskError> {
        let raw = self.fetch.call(params.stations).await?;
        let cleaned = self.clean.call(raw).await?;
        let summaries = self.aggregate.call(cleaned).await?;
        self.report.call((params.day, summaries)).await
    }
}

fn main() -> ExitCode {
    common::main(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/cairn-pipeline".into());
    let store = ResultStore::local(&dir)?;
    let pipeline = Pipeline::new(&store)?;

    // The run's date picks the targets (`{today}`), so a new day means new work.
    let now = chrono::Utc::now();
    let params = Params {
        stations: ["oslo", "lyon", "porto"].map(String::from).to_vec(),
        day: now.format("%Y-%m-%d").to_string(),
    };
    let flow = Flow::new("weather").result_store(store.clone()).date(now);

    println!(
        "flow 'weather' on {} ({})",
        store.backend().describe(),
        params.day
    );
    let started = Instant::now();
    let run = flow.run(params, |p| pipeline.run(p)).await;
    let elapsed = started.elapsed();

    println!(
        "\nflow run '{}' finished in state {} in {:.1} ms",
        run.name(),
        run.state(),
        elapsed.as_secs_f64() * 1e3
    );
    for task_run in run.task_runs() {
        println!(
            "  {:<14} {:<24} {}",
            task_run.name(),
            task_run.state().to_string(),
            task_run.location().unwrap_or("-")
        );
    }
    let bodies = pipeline.bodies.load(Ordering::SeqCst);
    let cached = run
        .task_runs()
        .iter()
        .filter(|r| r.state().is_cached())
        .count();
    println!(
        "{bodies} task bodies ran, {cached} of {} tasks were cached{}",
        run.task_runs().len(),
        if cached == run.task_runs().len() {
            ""
        } else {
            "; run it again and every task is Cached"
        }
    );
    let text = run.into_result().map_err(|e| e.to_string())?;
    println!();
    print!("{text}");
    Ok(())
}
