//! `crane-server`: parses flags (each with an environment variable) and serves the API and
//! the web UI (`crane_server::run`).
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "crane-server",
    version,
    about = "Crane's runs API, web UI and run archive reader"
)]
struct Cli {
    #[command(flatten)]
    config: crane_server::Config,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match crane_server::run(cli.config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "crane-server failed");
            eprintln!("crane-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
