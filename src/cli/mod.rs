//! The `streamflix` command line: arguments ([`args`]), one file per subcommand, and the
//! start-up every processing command shares ([`start`]). `src/main.rs` only calls [`main`].
//!
//! Conventions shared with `streamflix-replay` (signals and exit codes, `-X KEY=VALUE`, the
//! `STREAMFLIX_LOG` filter) come from `streamflix_replay::cli`. Errors print their whole chain
//! on one line (`error: …`) and exit with status 1; a closed stdout pipe is not an error.
//!
//! May import: every layer of the crate, and the replay crate. The only layer that uses
//! `anyhow`.

mod args;
mod demo;
mod dump;
mod eval;
mod insights;
mod process;
mod report;
mod run;
mod start;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use args::{Cli, Command};

/// The `streamflix` binary: parses the arguments, runs the subcommand, reports an error.
pub fn main() -> ExitCode {
    streamflix_replay::cli::init_logging();
    match dispatch(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(args) => demo::demo(&args),
        Command::Run(args) => run::embedded(&args.data, &args.embedded, false),
        Command::Process(args) => process::process(&args),
        Command::Eval(args) => eval::eval(&args),
        Command::Dump { state, what } => dump::dump(&state, what),
        Command::Report { state, format, out } => insights::report(&state, format, out.as_deref()),
    }
}
