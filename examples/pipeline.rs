//! A Make-style pipeline on the local disk: fetch → clean → aggregate → report.
//!
//! Every step has a templated target under the data directory. A step whose target
//! exists is skipped and its output read back from the target; otherwise it runs and
//! publishes its target atomically. Run it twice: the first run does all the work, the
//! second finds every target and does none.
//!
//! ```text
//! cargo run --example pipeline                 # data in ./data
//! cargo run --example pipeline -- /tmp/cairn   # data elsewhere
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use cairn::{Context, ResultStore, Template};
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

/// A step of the pipeline: its name, its target template and how often its body ran.
struct Step {
    name: &'static str,
    target: Template,
}

impl Step {
    fn new(name: &'static str, target: &str) -> Self {
        Step {
            name,
            target: Template::parse(target).expect("a valid target template"),
        }
    }

    /// Returns the step's output: read from its target when the target exists,
    /// otherwise computed by `body` and published at the target.
    async fn run<T, F>(&self, store: &ResultStore, ctx: &Context, body: F) -> cairn::Result<T>
    where
        T: Serialize + serde::de::DeserializeOwned + 'static,
        F: FnOnce() -> T,
    {
        let ctx = ctx.clone().with("task_name", self.name);
        let target = self.target.render(&ctx)?;
        if store.exists(&target).await? {
            println!(
                "  {:<10} Cached     {target} exists, body skipped",
                self.name
            );
            return store.read(&target).await;
        }
        let t = Instant::now();
        let value = body();
        store.write_at(&target, &value).await?;
        println!(
            "  {:<10} Completed  {target} written ({:.1} ms)",
            self.name,
            t.elapsed().as_secs_f64() * 1e3
        );
        Ok(value)
    }
}

fn fetch(stations: &[&str]) -> Vec<Reading> {
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

#[tokio::main]
async fn main() -> cairn::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "data".into());
    let store = ResultStore::local(&dir)?;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let ctx = Context::new()
        .with("flow_name", "weather")
        .with("today", today.as_str());

    println!("flow 'weather' on {} ({today})", store.backend().describe());
    let started = Instant::now();

    let stations = ["oslo", "lyon", "porto"];
    let fetch_step = Step::new("fetch", "{flow_name}/{today}/raw/{task_name}.json");
    let clean_step = Step::new("clean", "{flow_name}/{today}/clean/{task_name}.msgpack");
    let agg_step = Step::new("aggregate", "{flow_name}/{today}/{task_name}.json");
    let report_step = Step::new("report", "{flow_name}/{today}/{task_name}.csv");

    let raw: Vec<Reading> = fetch_step.run(&store, &ctx, || fetch(&stations)).await?;
    let cleaned: Vec<Reading> = clean_step.run(&store, &ctx, || clean(&raw)).await?;
    let summaries: Vec<Summary> = agg_step.run(&store, &ctx, || aggregate(&cleaned)).await?;
    let text: String = report_step
        .run(&store, &ctx, || report(&today, &summaries))
        .await?;

    println!(
        "flow 'weather' finished in {:.1} ms: {} raw readings, {} clean\n",
        started.elapsed().as_secs_f64() * 1e3,
        raw.len(),
        cleaned.len()
    );
    print!("{text}");
    Ok(())
}
