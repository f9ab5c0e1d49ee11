//! `kubectl crane`: a kubectl plugin for Crane's AgentRuns. It starts runs (`run`), shows
//! them as a live tree (`watch`), decides their approvals with the person's own Kubernetes
//! identity (`approve`, `reject`, `approvals`), and retries or cancels them — through the
//! apiserver only, with the person's kubeconfig (no Redis, no operator endpoint).
//!
//! The parts that decide what to send or show are pure and unit tested: [`manifest`] (what
//! `run` creates), [`select`] (which Approval a decision is for, who may decide what),
//! [`tree`] and [`render`] (the watch view). [`commands`] and [`watch`] do the I/O.

#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod manifest;
pub mod render;
pub mod select;
pub mod text;
pub mod tree;
pub mod view;
pub mod watch;

use std::process::ExitCode;

/// Exit code for anything that went wrong (as opposed to a run that failed, which `watch`
/// reports with 1).
pub const EXIT_ERROR: u8 = 2;

/// Connects with the person's kubeconfig and runs the subcommand; errors are printed as
/// `error: ...` on stderr.
pub async fn main(cli: cli::Cli) -> ExitCode {
    let result = match client::connect(&cli.connection.target()).await {
        Ok(conn) => commands::execute(conn, cli.command).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Messages may quote values from the cluster (an Approval's approvers, a
            // run's name): printed as worded, without their control characters.
            eprintln!("error: {}", text::clean_lines(&e.to_string()));
            ExitCode::from(EXIT_ERROR)
        }
    }
}
