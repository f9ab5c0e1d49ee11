//! Pool-side operations: the hint stream and its consumer group, the delayed set, queue depth
//! for the autoscaler, and circuit-breaker state. Everything here touches one pool's slot.

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::replies::BreakerUpdate;
use super::scripts::{self, Call};
use super::{BreakerConfig, EngineError, PoolName, ms};

/// The consumer group every worker of a pool reads through.
pub const GROUP: &str = "workers";

/// Queue depth of one pool, read in one round trip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueDepth {
    /// Hints no worker has taken yet.
    pub queued: u64,
    /// Hints taken by a worker and not yet acknowledged (running, or about to).
    pub running: u64,
    /// Retries waiting for their backoff and steps waiting for an open breaker.
    pub delayed: u64,
}

impl QueueDepth {
    /// What the autoscaler divides by `targetQueueDepth`: waiting + running.
    pub fn total(&self) -> u64 {
        self.queued + self.running
    }
}

/// Waiting + running + delayed steps of a pool: one script call, O(1) on the server, cheap
/// enough for an autoscaler to call every second per pool.
pub async fn queue_depth(
    conn: &mut ConnectionManager,
    pool: &PoolName,
) -> Result<QueueDepth, EngineError> {
    scripts::depth(pool).run(conn, "reading queue depth").await
}

/// A breaker's phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerPhase {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl BreakerPhase {
    /// Stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// The shared breaker of one tool in one pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerState {
    pub tool: String,
    pub phase: BreakerPhase,
    /// Consecutive retryable failures while closed.
    pub failures: u32,
    /// Successful probes while half-open.
    pub successes: u32,
    /// While open: how long until it half-opens.
    pub remaining_open_ms: u64,
}

/// Every breaker of a pool that has ever seen a failure (tools never seen are closed).
pub async fn breaker_states(
    conn: &mut ConnectionManager,
    pool: &PoolName,
    cfg: &BreakerConfig,
) -> Result<Vec<BreakerState>, EngineError> {
    scripts::breakers(pool, cfg.cooldown)
        .run(conn, "reading breakers")
        .await
}

/// Creates the pool's stream and consumer group if missing (idempotent; needed again after
/// Redis lost its data).
pub async fn ensure_group(
    conn: &mut ConnectionManager,
    pool: &PoolName,
) -> Result<(), EngineError> {
    let res: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(pool.queue())
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(EngineError::redis("creating the consumer group")(e)),
    }
}

/// What the pool-slot half of a state change does (see `lua/pool_after.lua`).
#[derive(Clone, Debug, Default)]
pub struct PoolAfter {
    /// Stream entry to acknowledge and delete.
    pub ack: Option<String>,
    pub run: String,
    /// Steps to add to the queue, as `step|tool`.
    pub ready: Vec<String>,
    /// A step (`step|tool`) to park in the delayed set until this time (ms since the epoch).
    pub delay: Option<(String, u64)>,
    /// The tool whose breaker to update, and whether the attempt succeeded; `None` outcome
    /// only reads the breaker.
    pub breaker: Option<(String, Option<bool>)>,
    pub run_done: bool,
}

/// One pool-slot script call for a batch of changes (see `lua/pool_after.lua`), to run alone or
/// in a pipeline. Sections of different runs mix freely: they only share the pool's keys. It
/// replies with the breaker of each section that named a tool, in order.
pub fn pool_after(
    pool: &PoolName,
    cfg: &BreakerConfig,
    afters: &[PoolAfter],
) -> Call<Vec<BreakerUpdate>> {
    let mut args = vec![
        cfg.failure_threshold.to_string(),
        ms(cfg.cooldown).to_string(),
        cfg.success_threshold.to_string(),
    ];
    for after in afters {
        let (tool, outcome) = match &after.breaker {
            Some((t, Some(true))) => (t.as_str(), "ok"),
            Some((t, Some(false))) => (t.as_str(), "fail"),
            Some((t, None)) => (t.as_str(), ""),
            None => ("", ""),
        };
        let (delay_step, delay_due) = match &after.delay {
            Some((s, due)) => (s.as_str(), *due),
            None => ("", 0),
        };
        args.extend([
            after.ack.clone().unwrap_or_default(),
            after.run.clone(),
            delay_due.to_string(),
            delay_step.to_owned(),
            tool.to_owned(),
            outcome.to_owned(),
            if after.run_done { "1" } else { "0" }.to_owned(),
            after.ready.len().to_string(),
        ]);
        args.extend(after.ready.iter().cloned());
    }
    scripts::pool_after(pool, &args)
}

/// Moves due delayed hints into the stream; returns how many moved.
pub async fn promote_due(
    conn: &mut ConnectionManager,
    pool: &PoolName,
    limit: u32,
) -> Result<u64, EngineError> {
    scripts::promote(pool, limit)
        .run(conn, "promoting retries")
        .await
}
