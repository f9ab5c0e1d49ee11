//! `crane-operator`: parses flags (each with an environment variable) and runs the
//! controllers (`crane_operator::run`).
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "crane-operator",
    version,
    about = "Crane's AgentRun and WorkerPool controllers"
)]
struct Cli {
    #[command(flatten)]
    config: crane_operator::Config,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match crane_operator::run(cli.config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "crane-operator failed");
            eprintln!("crane-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
