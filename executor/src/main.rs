//! `crane-executor`: the command line of Crane's executor. Parses flags and calls the library;
//! exit codes: 0 success, 1 the run or tool failed, 2 invalid input (prompt, plan, file, JSON).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser, Subcommand};
use crane_executor::local::LocalExecutor;
use crane_executor::plan::Plan;
use crane_executor::planner::{LlmConfig, PlannerError, PlannerMode, plan_prompt};
use crane_executor::run::{FailurePolicy, RetryPolicy, RunOptions, RunPhase};
use crane_executor::tools::{ToolContext, ToolError, Toolbox};
use crane_executor::validate::{read_plan_file, validate};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "crane-executor",
    version,
    about = "Crane's executor: plan prompts, run plans, run tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Plan a prompt and print the plan as JSON.
    Plan(PlanArgs),
    /// Plan (or read) a plan and execute it in this process; print the run as JSON.
    Run(RunArgs),
    /// Run one tool on a JSON input; print its output as JSON.
    Tool {
        /// Tool name, e.g. `calculator` or `todo_store.add`.
        name: String,
        /// The input object, e.g. '{"expression":"1+2"}'.
        input: String,
    },
    /// Serve a worker pool: take steps from Redis and run them (what worker Job pods run).
    Work(crane_executor::engine::cli::WorkArgs),
    /// Validate a plan and queue it on a pool through Redis; print the run id.
    Submit(crane_executor::engine::cli::SubmitArgs),
    /// Print a run from Redis as JSON (as `run` prints it, with full outputs).
    Status(crane_executor::engine::cli::StatusArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["prompt", "prompt_file", "prompt_env"])))]
struct PlanArgs {
    /// What to do, in plain words.
    #[arg(long)]
    prompt: Option<String>,
    /// Read the prompt from this file (`-` for stdin) instead.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Read the prompt from this environment variable instead (planner Jobs use
    /// CRANE_PROMPT, so the prompt never appears on a command line).
    #[arg(long, value_name = "VAR")]
    prompt_env: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    planner: PlannerMode,
    /// Also store the outcome (the plan, or the planner's error) in Redis for run ID, where
    /// the operator reads it; needs --redis.
    #[arg(long, value_name = "ID", requires = "redis")]
    run_id: Option<String>,
    /// Redis URL for --run-id, e.g. redis://127.0.0.1:6379.
    #[arg(long, value_name = "URL", requires = "run_id")]
    redis: Option<String>,
    /// Redis password (overrides one in the URL); prefer --redis-password-file.
    #[arg(long, env = "CRANE_REDIS_PASSWORD", hide_env_values = true)]
    redis_password: Option<String>,
    /// File holding the Redis password (a mounted Secret).
    #[arg(long, env = "CRANE_REDIS_PASSWORD_FILE")]
    redis_password_file: Option<PathBuf>,
}

/// How long a stored planner outcome lives (the operator reads it within seconds).
const PLANNER_RESULT_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Longest prompt read from an environment variable, in bytes (the planner's own limit,
/// in characters, gives the precise message).
const MAX_PROMPT_ENV_BYTES: usize = 1024 * 1024;

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["prompt", "prompt_file", "plan"])))]
struct RunArgs {
    /// What to do, in plain words (planned first).
    #[arg(long)]
    prompt: Option<String>,
    /// Read the prompt from this file (`-` for stdin) instead.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// A plan JSON file (`{"steps": [...]}`), instead of a prompt.
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    planner: PlannerMode,
    /// Attempts per step, the first included (retryable errors only).
    #[arg(long, default_value_t = RetryPolicy::default().max_attempts, value_parser = clap::value_parser!(u32).range(1..=20))]
    max_attempts: u32,
    /// Time limit of one attempt of a step.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    step_timeout_seconds: u64,
    /// What a failed step does to the rest of the run.
    #[arg(long, default_value = "FailFast", value_parser = parse_failure_policy)]
    failure_policy: FailurePolicy,
}

fn parse_failure_policy(s: &str) -> Result<FailurePolicy, String> {
    match s {
        "FailFast" => Ok(FailurePolicy::FailFast),
        "ContinueIndependent" => Ok(FailurePolicy::ContinueIndependent),
        _ => Err("expected FailFast or ContinueIndependent".into()),
    }
}

/// Largest prompt file read; the planner's own limit (in characters) is far lower and gives
/// the precise message, this only keeps a hostile file from filling memory.
const MAX_PROMPT_FILE_BYTES: u64 = 4 * 1024 * 1024;

const INVALID_INPUT: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // A worker is a long-lived service whose step logs people read; the one-shot commands
    // print their result on stdout and should keep stderr quiet.
    let default_level = if matches!(cli.command, Command::Work(_)) {
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
    let result = match cli.command {
        Command::Plan(args) => plan_cmd(args).await,
        Command::Run(args) => run_cmd(args).await,
        Command::Tool { name, input } => tool_cmd(&name, &input).await,
        Command::Work(args) => crane_executor::engine::cli::work(args).await,
        Command::Submit(args) => crane_executor::engine::cli::submit(args).await,
        Command::Status(args) => crane_executor::engine::cli::status(args).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

type CmdResult = Result<u8, (u8, String)>;

async fn plan_cmd(args: PlanArgs) -> CmdResult {
    let (Some(run_id), Some(url)) = (args.run_id.clone(), args.redis.clone()) else {
        let prompt = match &args.prompt_env {
            Some(var) => prompt_from_env(var)?,
            None => prompt_text(args.prompt, args.prompt_file.as_deref())?,
        };
        let plan = plan_for(&prompt, args.planner, &Toolbox::in_memory()).await?;
        print_json(&plan)?;
        return Ok(0);
    };
    use crane_executor::engine::api::{PlannerResult, client, connect, store_planner_result};
    crane_executor::engine::validate_run_id(&run_id).map_err(|e| (INVALID_INPUT, e.to_string()))?;
    let password = match &args.redis_password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    (
                        INVALID_INPUT,
                        format!("cannot read the password file {}: {e}", path.display()),
                    )
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        None => args.redis_password.clone(),
    };
    let redis = client(&url, password.as_deref()).map_err(|e| (INVALID_INPUT, e.to_string()))?;
    let mut conn = connect(&redis).await.map_err(|e| (1, e.to_string()))?;
    // Every failure from here on is the planner's, and the operator shows it to the user.
    let outcome = async {
        let prompt = match &args.prompt_env {
            Some(var) => prompt_from_env(var)?,
            None => prompt_text(args.prompt, args.prompt_file.as_deref())?,
        };
        let llm = LlmConfig::from_env().map_err(|e| (INVALID_INPUT, e.to_string()))?;
        plan_prompt(&prompt, args.planner, llm.as_ref(), &Toolbox::in_memory())
            .await
            .map_err(|e| (1, e.to_string()))
    }
    .await;
    let (stored, result) = match outcome {
        Ok(o) => {
            if let Some(reason) = &o.fallback_reason {
                tracing::warn!(reason = %reason, "planned with the rules planner after the LLM failed");
            }
            (
                PlannerResult::Planned {
                    plan: o.plan.clone(),
                    source: o.source,
                    fallback_reason: o.fallback_reason.clone(),
                },
                Ok(o),
            )
        }
        Err((code, message)) => (
            PlannerResult::Failed {
                error: message.clone(),
            },
            Err((code, message)),
        ),
    };
    store_planner_result(&mut conn, &run_id, &stored, PLANNER_RESULT_TTL)
        .await
        .map_err(|e| (1, e.to_string()))?;
    let outcome = result?;
    print_json(&outcome)?;
    Ok(0)
}

/// The prompt from environment variable `var` (how planner Jobs receive it).
fn prompt_from_env(var: &str) -> Result<String, (u8, String)> {
    prompt_from_var(var, std::env::var(var))
}

fn prompt_from_var(
    var: &str,
    value: Result<String, std::env::VarError>,
) -> Result<String, (u8, String)> {
    match value {
        Ok(p) if p.len() > MAX_PROMPT_ENV_BYTES => Err((
            INVALID_INPUT,
            format!("the prompt in ${var} is larger than {MAX_PROMPT_ENV_BYTES} bytes"),
        )),
        Ok(p) => Ok(p),
        Err(std::env::VarError::NotPresent) => Err((
            INVALID_INPUT,
            format!("--prompt-env {var}: the environment variable is not set"),
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err((
            INVALID_INPUT,
            format!("--prompt-env {var}: the environment variable is not UTF-8"),
        )),
    }
}

async fn run_cmd(args: RunArgs) -> CmdResult {
    let toolbox = Toolbox::in_memory();
    let plan = match &args.plan {
        Some(path) => read_plan_file(path).map_err(|m| (INVALID_INPUT, m))?,
        None => {
            let prompt = prompt_text(args.prompt, args.prompt_file.as_deref())?;
            plan_for(&prompt, args.planner, &toolbox).await?
        }
    };
    validate(&plan, &toolbox).map_err(|e| (INVALID_INPUT, format!("invalid plan:\n{e}")))?;

    let options = RunOptions {
        retry: RetryPolicy {
            max_attempts: args.max_attempts,
            ..RetryPolicy::default()
        },
        step_timeout_ms: args.step_timeout_seconds.saturating_mul(1000),
        failure_policy: args.failure_policy,
    };
    // Ctrl-C cancels: no new step starts, running ones finish, the run reports Cancelled.
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = cancel_tx.send(true);
        }
    });
    let report = LocalExecutor::new(toolbox)
        .run("local", "default", &plan, &options, Some(cancel_rx))
        .await
        .map_err(|e| (1, e.to_string()))?;
    print_json(&report)?;
    Ok(if report.phase == RunPhase::Succeeded {
        0
    } else {
        1
    })
}

async fn tool_cmd(name: &str, input: &str) -> CmdResult {
    let toolbox = Toolbox::in_memory();
    if toolbox.get(name).is_none() {
        return Err((INVALID_INPUT, toolbox.unknown_tool_message(name)));
    }
    let input: serde_json::Value = serde_json::from_str(input)
        .map_err(|e| (INVALID_INPUT, format!("input is not valid JSON: {e}")))?;
    match toolbox.call(&ToolContext::adhoc(), name, input).await {
        Ok(output) => {
            print_json(&output)?;
            Ok(0)
        }
        Err(e @ ToolError::InvalidInput(_)) => Err((INVALID_INPUT, format!("{name}: {e}"))),
        Err(e) => Err((1, format!("{name}: {e}"))),
    }
}

async fn plan_for(
    prompt: &str,
    mode: PlannerMode,
    toolbox: &Toolbox,
) -> Result<Plan, (u8, String)> {
    let llm = LlmConfig::from_env().map_err(|e| (INVALID_INPUT, e.to_string()))?;
    let outcome = plan_prompt(prompt, mode, llm.as_ref(), toolbox)
        .await
        .map_err(|e| {
            // A failing LLM is not the user's fault; everything else is about the input.
            let code = if matches!(e, PlannerError::Llm(_) | PlannerError::InvalidPlan(_)) {
                1
            } else {
                INVALID_INPUT
            };
            (code, e.to_string())
        })?;
    if let Some(reason) = &outcome.fallback_reason {
        tracing::warn!(reason = %reason, "planned with the rules planner after the LLM failed");
    }
    Ok(outcome.plan)
}

/// The prompt from `--prompt`, or from `--prompt-file` (`-` = stdin).
fn prompt_text(
    prompt: Option<String>,
    file: Option<&std::path::Path>,
) -> Result<String, (u8, String)> {
    use std::io::Read;
    let (Some(path), None) = (file, &prompt) else {
        return prompt.ok_or_else(|| (INVALID_INPUT, "give --prompt or --prompt-file".into()));
    };
    let shown = path.display();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| {
            (
                INVALID_INPUT,
                format!("cannot read prompt file {shown}: {e}"),
            )
        })?)
    };
    let mut bytes = Vec::new();
    reader
        .take(MAX_PROMPT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            (
                INVALID_INPUT,
                format!("cannot read prompt file {shown}: {e}"),
            )
        })?;
    if bytes.len() as u64 > MAX_PROMPT_FILE_BYTES {
        return Err((
            INVALID_INPUT,
            format!("prompt file {shown} is larger than {MAX_PROMPT_FILE_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        (
            INVALID_INPUT,
            format!("prompt file {shown} is not UTF-8: {e}"),
        )
    })
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), (u8, String)> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| (1, format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::env::VarError;

    #[test]
    fn prompts_from_env_reject_missing_non_utf8_and_huge_values() {
        assert_eq!(
            prompt_from_var("CRANE_PROMPT", Ok("$(id) `x` {y}".into())),
            Ok("$(id) `x` {y}".to_owned())
        );
        let (code, msg) = prompt_from_var("CRANE_PROMPT", Err(VarError::NotPresent)).unwrap_err();
        assert_eq!(code, INVALID_INPUT);
        assert!(
            msg.contains("CRANE_PROMPT") && msg.contains("not set"),
            "{msg}"
        );
        let (_, msg) = prompt_from_var(
            "P",
            Err(VarError::NotUnicode(std::ffi::OsString::from("x"))),
        )
        .unwrap_err();
        assert!(msg.contains("not UTF-8"), "{msg}");
        let (_, msg) = prompt_from_var("P", Ok("a".repeat(MAX_PROMPT_ENV_BYTES + 1))).unwrap_err();
        assert!(msg.contains("larger than"), "{msg}");
        assert!(prompt_from_var("P", Ok("a".repeat(MAX_PROMPT_ENV_BYTES))).is_ok());
    }
}
