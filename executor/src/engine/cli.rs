//! The engine's subcommands: `work` (a pool worker), `submit` (queue a plan) and `status`
//! (print a run). `main.rs` only parses into these argument structs and calls them; results
//! use main's convention: `Ok(exit code)` or `Err((exit code, message))`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::api::{InitOutcome, client, connect, init_run, run_report};
use super::metrics::{Metrics, serve};
use super::worker::{Worker, WorkerConfig};
use super::{BreakerConfig, EngineConfig, EngineError, PoolName};
use crate::run::{FailurePolicy, RetryPolicy, RunOptions, RunPhase};
use crate::tools::Toolbox;
use crate::tools::todo::RedisTodoStore;
use crate::validate::{read_plan_file, validate};

const INVALID_INPUT: u8 = 2;

type CmdResult = Result<u8, (u8, String)>;

/// Where Redis is.
#[derive(Args, Clone, Debug)]
pub struct RedisArgs {
    /// Redis URL, e.g. redis://127.0.0.1:6379.
    #[arg(long, env = "REDIS_URL")]
    pub redis: String,
    /// Redis password (overrides one in the URL); prefer --redis-password-file.
    #[arg(long, env = "CRANE_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// File holding the Redis password (a mounted Secret).
    #[arg(long, env = "CRANE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
}

impl RedisArgs {
    fn client(&self) -> Result<redis::Client, (u8, String)> {
        let password = match &self.redis_password_file {
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
            None => self.redis_password.clone(),
        };
        client(&self.redis, password.as_deref()).map_err(|e| (INVALID_INPUT, e.to_string()))
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
    let toolbox = Arc::new(Toolbox::standard(Arc::new(RedisTodoStore::new(store_conn))));
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
    let worker = Worker::new(&client, toolbox, config, metrics)
        .await
        .map_err(|e| (1, e.to_string()))?;
    worker
        .run(shutdown_signal())
        .await
        .map_err(|e| (1, e.to_string()))?;
    Ok(0)
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
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
    super::validate_run_id(&run_id).map_err(|e| (INVALID_INPUT, e.to_string()))?;
    let plan = read_plan_file(&args.plan).map_err(|m| (INVALID_INPUT, m))?;
    validate(&plan, &Toolbox::in_memory())
        .map_err(|e| (INVALID_INPUT, format!("invalid plan:\n{e}")))?;
    let options = RunOptions {
        retry: RetryPolicy {
            max_attempts: args.max_attempts,
            ..RetryPolicy::default()
        },
        step_timeout_ms: args.step_timeout_seconds * 1000,
        failure_policy: args.failure_policy,
    };
    let config = EngineConfig {
        ttl: Duration::from_secs(args.ttl_seconds),
        ..EngineConfig::default()
    };
    let client = args.redis.client()?;
    let mut conn = connect(&client).await.map_err(|e| (1, e.to_string()))?;
    match init_run(
        &mut conn,
        &run_id,
        pool.namespace(),
        &pool,
        &plan,
        &options,
        &config,
    )
    .await
    {
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
}

/// `crane-executor status`: print the run as `run` does. Exit 0 Succeeded, 1 Failed or
/// Cancelled, 3 still running, 2 invalid input or unknown run.
pub async fn status(args: StatusArgs) -> CmdResult {
    super::validate_run_id(&args.run_id).map_err(|e| (INVALID_INPUT, e.to_string()))?;
    let client = args.redis.client()?;
    let mut conn = connect(&client).await.map_err(|e| (1, e.to_string()))?;
    let report = match run_report(&mut conn, &args.run_id).await {
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
        assert!(super::super::validate_run_id(&id).is_ok(), "{id}");
        assert_ne!(id, new_run_id());
    }
}
