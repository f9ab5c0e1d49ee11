//! `crane-executor`: the binary of planner and worker Jobs, and the local `run`, `plan` and
//! `tool` commands. Parses flags, sets up logging and runs the subcommand ([`cli`]).
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // A worker is a long-lived service whose step logs people read; the one-shot commands
    // print their result on stdout and should keep stderr quiet.
    let default_level = if matches!(cli.command, cli::Command::Work(_)) {
        "info"
    } else {
        "warn"
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let result = cli.command.run().await;
    match result {
        Ok(code) => ExitCode::from(code),
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}
