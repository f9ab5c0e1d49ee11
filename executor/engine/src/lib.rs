//! The distributed execution engine: runs a plan's steps through Redis on pooled workers, the
//! DAG advancing inside Redis scripts without the operator or the Kubernetes API in the loop.
//!
//! # How a step travels
//!
//! 1. [`init_run`] registers the run in its pool's run set, then one script in the run's slot
//!    stores the plan, per-step state and remaining-dependency counters, and returns the steps
//!    with no dependencies; a pool-slot script then adds one *hint* `{r: run, s: step}` per
//!    ready step to the pool's stream.
//! 2. A worker reads hints with `XREADGROUP` (consumer group `workers`, `COUNT` up to its free
//!    slots). Hints are not authoritative: the worker runs the *start* script in the run's slot,
//!    which accepts only a step that is `Ready` (or a retry that is due) and marks it `Running`
//!    with an owner token and the attempt number. Anything else (a duplicate, a step of a
//!    finished or cancelled run) is acknowledged and dropped. One start call takes all the
//!    hints of a run that one read returned.
//! 3. While the tool runs, the worker heartbeats its hints (`XCLAIM … JUSTID` by the owner
//!    resets their idle time). A hint idle longer than the lease belongs to a dead worker:
//!    another worker takes it with `XAUTOCLAIM` and the start script counts the lost attempt
//!    (failing the step for good once the attempts are used up).
//! 4. Completion is one run-slot script per attempt (a worker's completer sends all the
//!    attempts of a run that finished meanwhile in one call): it accepts only the owner's
//!    current attempt (late duplicates are ignored), records the output or error, decides
//!    retry (due time kept in the step state) or final failure, decrements dependents'
//!    counters, lists newly ready steps, applies FailFast / ContinueIndependent / cancel,
//!    decides the run's phase and appends progress events. Then one pool-slot script (again one call for the whole batch)
//!    acknowledges and deletes the hints, adds the newly ready hints, parks retries in the
//!    pool's delayed set and updates the tools' circuit breakers.
//!
//! # Crash safety across the two slots
//!
//! A crash between the run-slot write and the pool-slot write cannot lose a step: every few
//! seconds one worker per pool (guarded by `SET NX PX`) sweeps the pool's active runs; the
//! sweep script lists steps that are `Ready` or due for a retry but have not been (re)queued
//! for a threshold, and `Running` steps far past their timeout (their queue entry was lost,
//! e.g. Redis dropped its last second of AOF writes). Duplicated hints are harmless because
//! start checks state. Retries wait in a sorted set, so they survive a worker crash.
//!
//! # Circuit breakers
//!
//! One per (pool, tool), in the pool's `breakers` hash, shared by every worker. Retryable
//! failures (timeouts, transient errors) count; invalid input and permanent failures are the
//! plan's fault, not the tool's, and do not. `failure_threshold` consecutive failures open it;
//! after `cooldown` it is half-open and lets steps probe; `success_threshold` successes close
//! it, one failure re-opens it. A step whose breaker is open is not started and not failed:
//! its hint is parked in the delayed set until the breaker half-opens.
//!
//! # Queue depth
//!
//! Handled hints are deleted, so `XLEN` of the pool stream is waiting + running; [`queue_depth`]
//! returns it with the pending count and the delayed count in one round trip.
//!
//! # Formats
//!
//! The engine owns what it stores and sends: the key schema ([`keys`], and
//! `executor/engine/ENGINE.md`), the scripts and what each replies ([`scripts`], [`replies`]),
//! and the progress notifications, published and followed only through [`events`].

pub mod api;
mod call;
pub mod events;
pub mod keys;
pub mod local;
pub mod metrics;
pub mod queue;
pub mod replies;
pub mod scripts;
mod streams;
pub mod tenancy;
pub mod time;
pub mod tombstones;
pub mod worker;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crane_core::plan::Plan;
use crane_core::run::{RunOptions, RunReport};

pub use api::{
    RedisExecutor, RestoredStep, RetryOutcome, cancel_run, connect, delete_run, init_run,
    restore_run, retry_run, run_report, wait_for_run,
};
pub use keys::{PoolName, RunKeys, validate_run_id};
pub use local::LocalExecutor;
pub use queue::{BreakerState, QueueDepth, breaker_states, queue_depth};
pub use worker::{Worker, WorkerConfig};

/// An engine that runs a plan to its end: in-process ([`LocalExecutor`]) or through Redis
/// workers ([`RedisExecutor`]). Both follow `crane_core::dag`'s rules, and one scenario suite
/// runs against both.
pub trait Executor: Send + Sync {
    /// Runs the plan to its end and returns the final report. `Err` means the engine itself
    /// failed (invalid plan, backend unreachable), not that a step failed.
    fn execute<'a>(&'a self, run: RunRequest<'a>) -> ExecuteFuture<'a>;
}

/// What [`Executor::execute`] is asked to run.
#[derive(Clone, Copy, Debug)]
pub struct RunRequest<'a> {
    pub run_id: &'a str,
    pub namespace: &'a str,
    pub plan: &'a Plan,
    pub options: &'a RunOptions,
}

/// What [`Executor::execute`] returns.
pub type ExecuteFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<RunReport>> + Send + 'a>>;

/// Everything that can go wrong in the engine. One variant per failing step.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid run id {id:?}: {why}")]
    InvalidRunId { id: String, why: String },
    #[error("invalid pool {pool:?}: {why}")]
    InvalidPool { pool: String, why: String },
    #[error("invalid namespace {namespace:?}: {why}")]
    InvalidNamespace { namespace: String, why: String },
    #[error("invalid model name {model:?}: {why}")]
    InvalidModel { model: String, why: String },
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    #[error("run {0:?} already exists")]
    RunExists(String),
    #[error("run {0:?} not found (never created, deleted, or expired after its TTL)")]
    RunNotFound(String),
    #[error("redis error while {what}: {source}")]
    Redis {
        what: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("unexpected redis reply while {what}: {detail}")]
    Protocol { what: &'static str, detail: String },
    #[error("corrupt run state in redis ({what}): {detail}")]
    Corrupt { what: String, detail: String },
    #[error("timed out waiting for run {0:?} to finish")]
    WaitTimeout(String),
    #[error("{0}")]
    Config(String),
}

impl EngineError {
    /// Adapter for `map_err` that names what was being done.
    pub fn redis(what: &'static str) -> impl Fn(redis::RedisError) -> EngineError {
        move |source| EngineError::Redis { what, source }
    }

    /// Stable, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidRunId { .. } => "invalid_run_id",
            Self::InvalidPool { .. } => "invalid_pool",
            Self::InvalidNamespace { .. } => "invalid_namespace",
            Self::InvalidModel { .. } => "invalid_model",
            Self::InvalidPlan(_) => "invalid_plan",
            Self::RunExists(_) => "run_exists",
            Self::RunNotFound(_) => "run_not_found",
            Self::Redis { .. } => "redis",
            Self::Protocol { .. } => "protocol",
            Self::Corrupt { .. } => "corrupt",
            Self::WaitTimeout(_) => "wait_timeout",
            Self::Config(_) => "config",
        }
    }
}

/// Circuit-breaker settings, shared by every worker of a pool (they should agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive retryable failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting probes through (half-open).
    pub cooldown: Duration,
    /// Successes in half-open that close it.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        // Five consecutive retryable failures: more than a lone blip, few enough that a dead
        // dependency stops costing every run attempts. A minute open: long enough for a
        // restarting service to come back. Three successful probes to close, so one lucky
        // call does not let the whole pool's traffic through again.
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(60),
            success_threshold: 3,
        }
    }
}

/// Engine timings shared by submitters and workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// A hint not heartbeated for this long belongs to a dead worker and is reclaimed.
    pub lease: Duration,
    /// How long a finished run's keys live.
    pub ttl: Duration,
    /// How often one worker of the pool sweeps for lost hints.
    pub sweep_interval: Duration,
    /// How long a ready step may go unqueued before the sweeper re-enqueues it.
    pub sweep_threshold: Duration,
    pub breaker: BreakerConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(10),
            ttl: Duration::from_secs(24 * 3600),
            sweep_interval: Duration::from_secs(5),
            sweep_threshold: Duration::from_secs(15),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Milliseconds, saturating, for script arguments.
/// The delay before attempt `next_attempt` of a step whose last attempt failed with `error`:
/// full jitter (uniform between 0 and the exponential backoff), but never sooner than the
/// failing service asked (`Retry-After`).
pub(crate) fn retry_delay_ms(
    policy: &crane_core::run::RetryPolicy,
    next_attempt: u32,
    error: Option<&crane_core::tool::ToolError>,
) -> u64 {
    use rand::Rng;
    let cap = policy.backoff_ms(next_attempt);
    let jittered = if cap == 0 {
        0
    } else {
        rand::rng().random_range(0..=cap)
    };
    let asked = error.and_then(|e| e.retry_after()).map_or(0, ms);
    jittered.max(asked)
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C: what every long-lived Crane
/// process (worker, operator, server) stops on.
pub async fn shutdown_signal() {
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
