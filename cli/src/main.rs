//! `cairn`: see, verify, clear and prune what cairn stores. The work is done by
//! `cairn::maintenance`; this binary parses the command line and prints.

mod args;
mod commands;
mod progress;
mod units;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::args::Cli;

/// Why a command stopped: the exit status and a one-line message.
#[derive(Debug)]
pub enum Failure {
    /// Usage or configuration (status 2).
    Config(String),
    /// Problems were found and reported (status 1).
    Problems,
    /// stdout was closed (`cairn ls | head`): not an error.
    ClosedOutput,
}

impl Failure {
    /// A store error, named with its store in one line.
    pub fn store(store: &str, error: impl std::fmt::Display) -> Failure {
        let message = one_line(&error.to_string());
        if message.contains(store) {
            Failure::Config(message)
        } else {
            Failure::Config(format!("{store}: {message}"))
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::ClosedOutput
        } else {
            Failure::Config(format!("cannot write the output: {e}"))
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairn: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(commands::run(cli));
    let _ = std::io::stdout().flush();
    match outcome {
        Ok(()) | Err(Failure::ClosedOutput) => ExitCode::SUCCESS,
        Err(Failure::Problems) => ExitCode::from(1),
        Err(Failure::Config(message)) => {
            eprintln!("cairn: {message}");
            ExitCode::from(2)
        }
    }
}
