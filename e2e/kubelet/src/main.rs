//! Command line of the process kubelet: parses flags, connects, runs until SIGTERM/SIGINT.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Runs the pods of one Node as local processes (tests only).
#[derive(Debug, Parser)]
#[command(name = "crane-proc-kubelet", version)]
struct Args {
    /// Kubeconfig to act with (defaults to KUBECONFIG / in-cluster inference).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Name of the Node to play.
    #[arg(long, default_value = "proc-node")]
    node_name: String,
    /// State directory; pod logs go to <state-dir>/pods/<ns>_<pod>/<container>.log.
    #[arg(long)]
    state_dir: PathBuf,
    /// Where the binaries for Crane images live (target/debug or target/release).
    #[arg(long)]
    crane_bin_dir: PathBuf,
    /// PEM CA of the apiserver, written into each pod's kubeconfig.
    #[arg(long)]
    ca_file: PathBuf,
    /// kubeletVersion reported on the Node.
    #[arg(long, default_value = "v1.36.3-crane-proc")]
    kubelet_version: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig")?,
    };
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let client = kube::Client::try_from(config).context("building the client")?;
    let settings = crane_proc_kubelet::Settings {
        node_name: args.node_name,
        state_dir: args.state_dir,
        crane_bin_dir: args.crane_bin_dir,
        ca_file: args.ca_file,
        version: args.kubelet_version,
    };
    crane_proc_kubelet::run(client, server, settings, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers Ctrl-C still works through the default action; stop on
        // stdin-less operation only by being killed, and the process groups die with us.
        _ => std::future::pending::<()>().await,
    }
}
