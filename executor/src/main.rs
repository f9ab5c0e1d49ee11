//! `crane-executor`: the binary of planner and worker Jobs, and the local `run`, `plan` and
//! `tool` commands. Parses flags, sets up logs and traces (`crane-telemetry`) and runs the
//! subcommand ([`cli`]).
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

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
    let telemetry = crane_telemetry::init(cli.command.service_name(), default_level);
    let result = cli.command.run().await;
    // Planner Jobs and workers exit right after their last span: send what is queued.
    telemetry.shutdown().await;
    match result {
        Ok(code) => ExitCode::from(code),
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}
