//! `kubectl-crane`, run by kubectl as `kubectl crane ...`: parses the flags and runs
//! [`kubectl_crane::main`].
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    kubectl_crane::main(kubectl_crane::cli::Cli::parse()).await
}
