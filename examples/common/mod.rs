//! What every example shares: the runner's log lines on stderr, and an exit code.

use std::future::Future;
use std::process::ExitCode;

/// Runs an example's body on a current-thread runtime with cairn's log lines shown
/// (`Task run 'fetch-1a2' - Finished in state Completed()`), and turns its error into
/// a message and a failing exit code.
pub fn main<F>(body: F) -> ExitCode
where
    F: Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
