//! Progress on stderr, only when stderr is a terminal: stdout stays machine-readable.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::maintenance::Progress;

use crate::units;

/// A ticker that redraws one status line on stderr until dropped.
pub struct Ticker {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Ticker {
    /// Starts showing `progress` (after a short delay, so quick commands stay quiet).
    pub fn start(progress: Arc<Progress>, verb: &'static str) -> Ticker {
        if !std::io::stderr().is_terminal() {
            return Ticker { task: None };
        }
        let started = Instant::now();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            loop {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                let (entries, bytes, removed) =
                    (progress.entries(), progress.bytes(), progress.removed());
                let mut line = format!(
                    "{verb}: {} entries seen ({:.0}/s)",
                    units::count(entries),
                    entries as f64 / secs
                );
                if bytes > 0 {
                    line.push_str(&format!(
                        ", {} hashed ({}/s)",
                        units::size(bytes),
                        units::size((bytes as f64 / secs) as u64)
                    ));
                }
                if removed > 0 {
                    line.push_str(&format!(", {} removed", units::count(removed)));
                }
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ticker { task: Some(task) }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}
