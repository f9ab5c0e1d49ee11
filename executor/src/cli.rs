//! Every `crane-executor` subcommand: its flags (clap) and what it does. `main.rs` parses and
//! dispatches; results follow one convention, `Ok(exit code)` or `Err((exit code, message))`:
//! 0 success, 1 the run or tool failed, 2 invalid input (prompt, plan, file, JSON), 3 (status)
//! still running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};
use crane_core::plan::{Plan, PlannerMode};
use crane_core::run::{FailurePolicy, RetryPolicy, RunOptions, RunPhase};
use crane_core::tool::{Catalog, ToolContext, ToolError};
use crane_core::validate::{read_plan_file, validate};
use crane_engine::api::{
    Auth, InitOutcome, PlannerResult, client, connect, init_run, load_planner_input,
    read_password_file, run_report, store_planner_result,
};
use crane_engine::metrics::{Metrics, serve};
use crane_engine::{
    BreakerConfig, EngineConfig, EngineError, LocalExecutor, PoolName, RunKeys, Worker,
    WorkerConfig, validate_run_id,
};
use crane_planner::{LlmConfig, PlannerError, plan_prompt};
use crane_tools::RedisTodoStore;
use tracing::Instrument as _;

const INVALID_INPUT: u8 = 2;

/// What plans are validated and planned against here: the built-in tools.
fn catalog() -> Catalog {
    Catalog::builtins()
}

pub type CmdResult = Result<u8, (u8, String)>;

#[derive(Parser)]
#[command(
    name = "crane-executor",
    version,
    about = "Crane's executor: plan prompts, run plans, run tools"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    Work(WorkArgs),
    /// Validate a plan and queue it on a pool through Redis; print the run id.
    Submit(SubmitArgs),
    /// Print a run from Redis as JSON (as `run` prints it, with full outputs).
    Status(StatusArgs),
}

impl Command {
    /// `service.name` of this process's traces: workers and planners are told apart in a
    /// run's trace.
    pub fn service_name(&self) -> &'static str {
        match self {
            Command::Work(_) => "crane-worker",
            Command::Plan(_) => "crane-planner",
            _ => "crane-executor",
        }
    }

    /// Runs the subcommand.
    pub async fn run(self) -> CmdResult {
        match self {
            Command::Plan(args) => plan_cmd(args).await,
            Command::Run(args) => run_cmd(args).await,
            Command::Tool { name, input } => tool_cmd(&name, &input).await,
            Command::Work(args) => work(args).await,
            Command::Submit(args) => submit(args).await,
            Command::Status(args) => status(args).await,
        }
    }
}

fn parse_planner_mode(s: &str) -> Result<PlannerMode, String> {
    s.parse()
}

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["prompt", "prompt_file", "run_id"])))]
pub struct PlanArgs {
    /// What to do, in plain words.
    #[arg(long)]
    prompt: Option<String>,
    /// Read the prompt from this file (`-` for stdin) instead.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    #[arg(long, default_value = "auto", value_parser = parse_planner_mode)]
    planner: PlannerMode,
    /// Plan run ID of NAMESPACE as a planner Job does: the prompt, the namespace's tools and
    /// the model come from Redis (where the operator put them, byte for byte), and the
    /// outcome (the plan, or the planner's error) goes back there for the operator.
    #[arg(long, value_name = "ID", requires_all = ["redis", "namespace"])]
    run_id: Option<String>,
    /// The run's namespace, for --run-id.
    #[arg(long, value_name = "NS", requires = "run_id")]
    namespace: Option<String>,
    /// Redis URL for --run-id, e.g. redis://crane-redis:6379.
    #[arg(long, value_name = "URL", requires = "run_id")]
    redis: Option<String>,
    #[command(flatten)]
    auth: RedisAuthArgs,
}

/// How long a stored planner outcome lives (the operator reads it within seconds).
const PLANNER_RESULT_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["prompt", "prompt_file", "plan"])))]
pub struct RunArgs {
    /// What to do, in plain words (planned first).
    #[arg(long)]
    prompt: Option<String>,
    /// Read the prompt from this file (`-` for stdin) instead.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// A plan JSON file (`{"steps": [...]}`), instead of a prompt.
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    #[arg(long, default_value = "auto", value_parser = parse_planner_mode)]
    planner: PlannerMode,
    /// Attempts per step, the first included (retryable errors only).
    #[arg(long, default_value_t = RetryPolicy::default().max_attempts, value_parser = clap::value_parser!(u32).range(1..=20))]
    max_attempts: u32,
    /// Time limit of one attempt of a step.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    step_timeout_seconds: u64,
    /// What a failed step does to the rest of the run.
    #[arg(long, default_value = "FailFast", value_parser = parse_policy)]
    failure_policy: FailurePolicy,
}

/// Largest prompt file read; the planner's own limit (in characters) is far lower and gives
/// the precise message, this only keeps a hostile file from filling memory.
const MAX_PROMPT_FILE_BYTES: u64 = 4 * 1024 * 1024;

async fn plan_cmd(args: PlanArgs) -> CmdResult {
    let (Some(run_id), Some(ns), Some(url)) = (&args.run_id, &args.namespace, &args.redis) else {
        let prompt = prompt_text(args.prompt, args.prompt_file.as_deref())?;
        let plan = plan_for(&prompt, args.planner, &catalog()).await?;
        print_json(&plan)?;
        return Ok(0);
    };
    // The planner Job's part of the run's trace: the operator hands over the run's context
    // in TRACEPARENT.
    let span = tracing::info_span!(
        "plan",
        otel.name = "plan",
        run = %run_id,
        namespace = %ns,
        planner = ?args.planner,
        outcome = tracing::field::Empty,
    );
    crane_telemetry::parent_from_env(&span);
    plan_run(&args, run_id, ns, url).instrument(span).await
}

/// `plan --run-id`: the planner Job's work, inside its span.
async fn plan_run(args: &PlanArgs, run_id: &str, ns: &str, url: &str) -> CmdResult {
    let keys = RunKeys::new(ns, run_id).map_err(|e| (INVALID_INPUT, e.to_string()))?;
    let redis = args.auth.client(url)?;
    let mut conn = connect(&redis).await.map_err(|e| (1, e.to_string()))?;
    let input = load_planner_input(&mut conn, &keys)
        .await
        .map_err(|e| (1, e.to_string()))?
        .ok_or_else(|| {
            (
                1,
                format!("run {run_id} of namespace {ns} has no planner input in Redis"),
            )
        })?;
    // Every failure from here on is the planner's, and the operator shows it to the user.
    let outcome = async {
        let llm = match &input.model {
            Some(model) => Some(llm_config(model)?),
            None => LlmConfig::from_env().map_err(|e| (INVALID_INPUT, e.to_string()))?,
        };
        let catalog = Catalog::new(input.tools.clone());
        plan_prompt(&input.prompt, args.planner, llm.as_ref(), &catalog)
            .await
            .map_err(|e| (1, e.to_string()))
    }
    .await;
    tracing::Span::current().record(
        "outcome",
        match &outcome {
            Ok(o) => format!("{:?}", o.source),
            Err(_) => "failed".to_owned(),
        },
    );
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
                    usage: o.usage,
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
    store_planner_result(&mut conn, &keys, &stored, PLANNER_RESULT_TTL)
        .await
        .map_err(|e| (1, e.to_string()))?;
    let outcome = result?;
    print_json(&outcome)?;
    Ok(0)
}

/// The LLM planner's settings from the run's Model; its key comes in `CRANE_LLM_API_KEY`,
/// which the operator fills from the Model's Secret.
fn llm_config(model: &crane_core::model::ModelConfig) -> Result<LlmConfig, (u8, String)> {
    let api_key = std::env::var(crane_core::plan::ENV_API_KEY)
        .ok()
        .map(|k| k.trim_end_matches(['\r', '\n']).to_owned())
        .filter(|k| !k.is_empty());
    Ok(LlmConfig {
        base_url: model.base_url.clone(),
        model: model.model.clone(),
        api_key,
        timeout: Duration::from_secs(u64::from(model.timeout_seconds.max(1))),
    })
}

async fn run_cmd(args: RunArgs) -> CmdResult {
    let toolbox = crane_tools::in_memory();
    let plan = match &args.plan {
        Some(path) => read_plan_file(path).map_err(|m| (INVALID_INPUT, m))?,
        None => {
            let prompt = prompt_text(args.prompt, args.prompt_file.as_deref())?;
            plan_for(&prompt, args.planner, toolbox.catalog()).await?
        }
    };
    validate(&plan, toolbox.catalog())
        .map_err(|e| (INVALID_INPUT, format!("invalid plan:\n{e}")))?;

    let options = RunOptions {
        retry: RetryPolicy {
            max_attempts: args.max_attempts,
            ..RetryPolicy::default()
        },
        step_timeout_ms: args.step_timeout_seconds.saturating_mul(1000),
        failure_policy: args.failure_policy,
        ..RunOptions::default()
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
    let toolbox = crane_tools::in_memory();
    if !toolbox.catalog().contains(name) {
        return Err((INVALID_INPUT, toolbox.catalog().unknown_tool_message(name)));
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
    catalog: &Catalog,
) -> Result<Plan, (u8, String)> {
    let llm = LlmConfig::from_env().map_err(|e| (INVALID_INPUT, e.to_string()))?;
    let outcome = plan_prompt(prompt, mode, llm.as_ref(), catalog)
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

/// How to authenticate to Redis (the URL, which never carries credentials, is each
/// command's own flag). Pods get these from their namespace's `crane-redis` Secret.
#[derive(Args, Clone, Debug)]
pub struct RedisAuthArgs {
    /// Redis user (a namespace's own user in Crane's pods).
    #[arg(long, env = "CRANE_REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// Redis password; prefer --redis-password-file or the environment (the command line
    /// shows in process lists).
    #[arg(long, env = "CRANE_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// File holding the Redis password (a mounted Secret).
    #[arg(long, env = "CRANE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
}

impl RedisAuthArgs {
    fn client(&self, url: &str) -> Result<redis::Client, (u8, String)> {
        let password = match &self.redis_password_file {
            Some(path) => {
                Some(read_password_file(path).map_err(|e| (INVALID_INPUT, e.to_string()))?)
            }
            None => self.redis_password.clone(),
        };
        let auth = Auth {
            username: self.redis_username.clone(),
            password,
        };
        client(url, &auth).map_err(|e| (INVALID_INPUT, e.to_string()))
    }
}

/// Where Redis is, for the commands that cannot work without it.
#[derive(Args, Clone, Debug)]
pub struct RedisArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379.
    #[arg(long, env = "REDIS_URL")]
    pub redis: String,
    #[command(flatten)]
    pub auth: RedisAuthArgs,
}

impl RedisArgs {
    fn client(&self) -> Result<redis::Client, (u8, String)> {
        self.auth.client(&self.redis)
    }
}

/// Flags of `crane-executor work`.
#[derive(Args, Clone, Debug)]
pub struct WorkArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The pool to serve, NAMESPACE/NAME.
    #[arg(long)]
    pub pool: String,
    /// Steps run at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Serve only these tools (comma-separated; the WorkerPool's spec.tools); a step naming
    /// another tool fails. Unset: every tool.
    #[arg(long, value_delimiter = ',')]
    pub tools: Vec<String>,
    /// Exit 0 after this many seconds with nothing to do (0: never).
    #[arg(long, default_value_t = 30)]
    pub idle_timeout: u64,
    /// On SIGTERM, seconds in-flight steps may take before they are released.
    #[arg(long, env = "CRANE_GRACE_SECONDS", default_value_t = 20)]
    pub grace_seconds: u64,
    /// A step not heartbeated for this long is taken over by another worker.
    #[arg(long, env = "CRANE_LEASE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub lease_ms: u64,
    /// How often (ms) one worker of the pool sweeps for lost steps.
    #[arg(long, env = "CRANE_SWEEP_INTERVAL_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(50..))]
    pub sweep_interval_ms: u64,
    /// How long (ms) a ready step may stay unqueued before the sweeper re-enqueues it.
    #[arg(long, env = "CRANE_SWEEP_THRESHOLD_MS", default_value_t = 15_000)]
    pub sweep_threshold_ms: u64,
    /// Consecutive retryable failures that open a tool's breaker.
    #[arg(long, env = "CRANE_BREAKER_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_failures: u32,
    /// Milliseconds an open breaker waits before letting probes through.
    #[arg(long, env = "CRANE_BREAKER_COOLDOWN_MS", default_value_t = 60_000)]
    pub breaker_cooldown_ms: u64,
    /// Successful probes that close a half-open breaker.
    #[arg(long, env = "CRANE_BREAKER_SUCCESSES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_successes: u32,
    /// Serve /metrics, /healthz, /readyz here (e.g. 0.0.0.0:9090); off when unset.
    #[arg(long, env = "CRANE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl WorkArgs {
    fn engine(&self) -> EngineConfig {
        EngineConfig {
            lease: Duration::from_millis(self.lease_ms),
            sweep_interval: Duration::from_millis(self.sweep_interval_ms),
            sweep_threshold: Duration::from_millis(self.sweep_threshold_ms),
            breaker: BreakerConfig {
                failure_threshold: self.breaker_failures,
                cooldown: Duration::from_millis(self.breaker_cooldown_ms),
                success_threshold: self.breaker_successes,
            },
            ..EngineConfig::default()
        }
    }
}

/// `crane-executor work`: serve a pool until idle or SIGTERM.
pub async fn work(args: WorkArgs) -> CmdResult {
    let pool = PoolName::parse(&args.pool).map_err(|e| (INVALID_INPUT, e.to_string()))?;
    let client = args.redis.client()?;
    let store_conn = connect(&client).await.map_err(|e| (1, e.to_string()))?;
    let toolbox = Arc::new(crane_tools::standard(Arc::new(RedisTodoStore::new(
        store_conn,
    ))));
    let mut config = WorkerConfig::new(pool);
    config.concurrency = args.concurrency as usize;
    config.idle_timeout = (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout));
    config.grace = Duration::from_secs(args.grace_seconds);
    config.engine = args.engine();
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = args.metrics_addr {
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(addr, m).await {
                tracing::error!(error = %e, %addr, "metrics server failed");
            }
        });
    }
    // Bound tools' header secrets and Models' keys: the Secrets the operator mounts.
    let connectors = crane_tools::Remote::new(crane_tools::Secrets::default())
        .map_err(|e| (1, e.to_string()))?;
    let worker = Worker::new(&client, toolbox, config, metrics)
        .await
        .map_err(|e| (1, e.to_string()))?
        .with_connectors(Arc::new(connectors));
    worker
        .run(crane_engine::shutdown_signal())
        .await
        .map_err(|e| (1, e.to_string()))?;
    Ok(0)
}

/// Flags of `crane-executor submit`.
#[derive(Args, Clone, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The pool to run on, NAMESPACE/NAME (the namespace also scopes the todo store).
    #[arg(long)]
    pub pool: String,
    /// The plan JSON file.
    #[arg(long)]
    pub plan: PathBuf,
    /// Run id (A-Z a-z 0-9 . _ -); a random one when omitted.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Attempts per step, the first included.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_attempts: u32,
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub step_timeout_seconds: u64,
    /// FailFast or ContinueIndependent.
    #[arg(long, default_value = "FailFast", value_parser = parse_policy)]
    pub failure_policy: FailurePolicy,
    /// Seconds a finished run's state stays in Redis.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl_seconds: u64,
}

fn parse_policy(s: &str) -> Result<FailurePolicy, String> {
    match s {
        "FailFast" => Ok(FailurePolicy::FailFast),
        "ContinueIndependent" => Ok(FailurePolicy::ContinueIndependent),
        other => Err(format!("{other:?} is not FailFast or ContinueIndependent")),
    }
}

/// A fresh run id: `run-` and 16 hex digits.
pub fn new_run_id() -> String {
    use rand::Rng;
    format!("run-{:016x}", rand::rng().random::<u64>())
}

/// `crane-executor submit`: validate the plan, initialise the run, print its id.
pub async fn submit(args: SubmitArgs) -> CmdResult {
    let pool = PoolName::parse(&args.pool).map_err(|e| (INVALID_INPUT, e.to_string()))?;
    let run_id = args.run_id.clone().unwrap_or_else(new_run_id);
    validate_run_id(&run_id).map_err(|e| (INVALID_INPUT, e.to_string()))?;
    let plan = read_plan_file(&args.plan).map_err(|m| (INVALID_INPUT, m))?;
    validate(&plan, &catalog()).map_err(|e| (INVALID_INPUT, format!("invalid plan:\n{e}")))?;
    let options = RunOptions {
        retry: RetryPolicy {
            max_attempts: args.max_attempts,
            ..RetryPolicy::default()
        },
        step_timeout_ms: args.step_timeout_seconds * 1000,
        failure_policy: args.failure_policy,
        // With tracing on, the run's steps share one trace (named after the run id, as the
        // operator names an AgentRun's), though no root span is reported for it.
        traceparent: crane_telemetry::tracing_enabled()
            .then(|| crane_telemetry::run_traceparent(&run_id)),
        ..RunOptions::default()
    };
    let config = EngineConfig {
        ttl: Duration::from_secs(args.ttl_seconds),
        ..EngineConfig::default()
    };
    let client = args.redis.client()?;
    let mut conn = connect(&client).await.map_err(|e| (1, e.to_string()))?;
    let keys =
        RunKeys::new(pool.namespace(), &run_id).map_err(|e| (INVALID_INPUT, e.to_string()))?;
    match init_run(&mut conn, &keys, &pool, &plan, &options, &config).await {
        Ok(InitOutcome::Created) => {
            println!("{run_id}");
            Ok(0)
        }
        Ok(InitOutcome::AlreadyExists) => {
            Err((INVALID_INPUT, EngineError::RunExists(run_id).to_string()))
        }
        Err(
            e @ (EngineError::InvalidPlan(_)
            | EngineError::InvalidRunId { .. }
            | EngineError::InvalidNamespace { .. }),
        ) => Err((INVALID_INPUT, e.to_string())),
        Err(e) => Err((1, e.to_string())),
    }
}

/// Flags of `crane-executor status`.
#[derive(Args, Clone, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[arg(long)]
    pub run_id: String,
    /// The run's namespace (its pool's).
    #[arg(long, default_value = "default")]
    pub namespace: String,
}

/// `crane-executor status`: print the run as `run` does. Exit 0 Succeeded, 1 Failed or
/// Cancelled, 3 still running, 2 invalid input or unknown run.
pub async fn status(args: StatusArgs) -> CmdResult {
    let keys =
        RunKeys::new(&args.namespace, &args.run_id).map_err(|e| (INVALID_INPUT, e.to_string()))?;
    let client = args.redis.client()?;
    let mut conn = connect(&client).await.map_err(|e| (1, e.to_string()))?;
    let report = match run_report(&mut conn, &keys, crane_engine::api::Outputs::Full).await {
        Ok(r) => r,
        Err(e @ EngineError::RunNotFound(_)) => return Err((INVALID_INPUT, e.to_string())),
        Err(e) => return Err((1, e.to_string())),
    };
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| (1, format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(match report.phase {
        RunPhase::Succeeded => 0,
        RunPhase::Failed | RunPhase::Cancelled => 1,
        _ => 3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parsing_rejects_unknown_values() {
        assert_eq!(
            parse_policy("ContinueIndependent"),
            Ok(FailurePolicy::ContinueIndependent)
        );
        assert!(
            parse_policy("failfast")
                .unwrap_err()
                .contains("not FailFast")
        );
    }

    #[test]
    fn generated_run_ids_are_valid() {
        let id = new_run_id();
        assert!(super::validate_run_id(&id).is_ok(), "{id}");
        assert_ne!(id, new_run_id());
    }
}
