//! The command line: kubectl's connection flags (a plugin receives every argument after its
//! name, so `kubectl crane -n team-a watch r` and `kubectl crane watch r -n team-a` both
//! work) and one subcommand per verb.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::client::Target;

/// kubectl crane: start, follow and decide Crane AgentRuns with your own kubeconfig.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-crane",
    bin_name = "kubectl crane",
    version,
    about = "Start, follow and decide Crane AgentRuns with your own kubeconfig",
    after_help = "Exit codes: 0 done (watch: the run Succeeded), 1 the run Failed or was \
                  Cancelled (watch, run -w, retry -w), 2 anything else went wrong."
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where to connect, as kubectl's flags of the same names.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Connection (as kubectl's)")]
pub struct ConnectionArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// The namespace (default: the context's, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
}

impl ConnectionArgs {
    pub fn target(&self) -> Target {
        Target {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an AgentRun from a prompt, a plan file or a manifest (it gets a generated
    /// name); with -w, follow it like `watch`.
    Run(RunArgs),
    /// Show a run as a live tree (steps, attempts, durations, outputs, usage, approvals)
    /// until it finishes; exit 0 when it Succeeded, 1 when it Failed or was Cancelled.
    Watch(RunName),
    /// Approve what a run waits for: the plan (a run in AwaitingApproval), --step N, or the
    /// run's only open approval.
    Approve(DecideArgs),
    /// Reject what a run waits for (same choice as approve); the step or run fails.
    Reject(DecideArgs),
    /// Retry a Failed run: its failed and skipped steps run again, completed ones are kept.
    Retry(RetryArgs),
    /// Cancel a run: no new step starts, running steps finish, then it is Cancelled.
    Cancel(RunName),
    /// List the open approvals you may decide.
    Approvals(ApprovalsArgs),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("what").required(true).multiple(true).args(["prompt", "filename"])))]
pub struct RunArgs {
    /// What to do, in natural language (a planner makes the plan).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// A plan ({steps: [...]}) or an AgentRun manifest, YAML or JSON; "-" reads stdin.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub filename: Option<String>,
    /// The WorkerPool that runs the steps (spec.workerPool).
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
    /// The Model for llm steps and the planner (spec.model).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Follow the run until it finishes, like `watch`.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub struct RunName {
    /// The AgentRun's name.
    pub run: String,
}

#[derive(Args, Debug)]
pub struct DecideArgs {
    /// The AgentRun's name.
    pub run: String,
    /// The step whose approval to decide (Approval <run>-step-<N>).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub step: Option<u32>,
    /// Why, in your words (spec.comment; a rejection's shows in the step's error).
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

#[derive(Args, Debug)]
pub struct RetryArgs {
    /// The AgentRun's name.
    pub run: String,
    /// Follow the run until it finishes, like `watch`.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub struct ApprovalsArgs {
    /// In every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-crane").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn connection_flags_anywhere() {
        let cli = parse(&["-n", "a", "watch", "r", "--context", "c"]).unwrap();
        assert_eq!(cli.connection.namespace.as_deref(), Some("a"));
        assert_eq!(cli.connection.context.as_deref(), Some("c"));
        let cli = parse(&["approve", "r", "--step", "3", "--namespace=b"]).unwrap();
        assert_eq!(cli.connection.namespace.as_deref(), Some("b"));
        let Command::Approve(d) = cli.command else {
            panic!("not approve")
        };
        assert_eq!((d.run.as_str(), d.step), ("r", Some(3)));
    }

    #[test]
    fn run_needs_a_prompt_or_a_file() {
        assert!(parse(&["run"]).is_err());
        assert!(parse(&["run", "--prompt", "x", "-f", "p.yaml", "-w"]).is_ok());
        assert!(parse(&["run", "-f", "-"]).is_ok());
    }

    #[test]
    fn steps_are_positive() {
        assert!(parse(&["approve", "r", "--step", "0"]).is_err());
        assert!(parse(&["reject", "r", "--step", "-1"]).is_err());
        assert!(parse(&["reject", "r", "--step", "x"]).is_err());
    }
}
