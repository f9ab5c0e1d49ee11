//! The operator's side of the run archive (`crane-archive`): writing each AgentRun as it
//! leaves the cluster, and retention.
//!
//! - **When**: in the `crane.dev/cleanup` finalizer, before the run's Redis keys are deleted
//!   (`agentrun::cleanup`). So the TTL deletion of a finished AgentRun (or a user's delete, or
//!   its namespace going) is what archives it, and the engine's full outputs are still there
//!   to be kept.
//! - **Once, and never lost**: the write is idempotent (keyed by uid). When it fails
//!   (PostgreSQL down, unreachable, full) the cleanup fails, the finalizer stays, the object
//!   stays, and the controller retries with its per-object backoff. A killed operator retries
//!   on restart. Failures are counted in `crane_operator_archive_writes_total{result}` and the
//!   runs waiting for the archive in `crane_operator_archive_backlog`; nothing is dropped.
//! - **Outputs**: from the engine's report when Redis still has the run. When Redis does not
//!   (expired, or lost with no persistence) the status is archived alone — waiting would not
//!   bring the outputs back. When Redis is unreachable the write waits for it, like the key
//!   deletion after it would.
//! - **Retention**: with `--archive-retention-days N > 0`, the leader deletes runs archived
//!   more than N days ago, [`PRUNE_BATCH`] rows per statement, every `--archive-prune-interval`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crane_api::AgentRun;
use crane_archive::{Archive, ArchiveConfig, ArchiveError, RunRecord, WriteOutcome};
use crane_engine::api::Outputs;
use crane_engine::{EngineError, RunKeys};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use redis::aio::ConnectionManager;
use tracing::{info, warn};

use crate::controller::Shutdown;
use crate::metrics::Metrics;

/// Rows one retention statement deletes at most.
pub const PRUNE_BATCH: i64 = 1000;

/// Why a run could not be archived (yet).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveRunError {
    #[error("reading the run's outputs from redis: {0}")]
    Engine(#[source] EngineError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

impl ArchiveRunError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Engine(_) => "engine",
            Self::Archive(e) => e.metric_label(),
        }
    }
}

/// Writes runs to the archive and prunes it.
pub struct Archiver {
    archive: Archive,
    metrics: Arc<Metrics>,
    /// Uids of runs whose last archive attempt failed: the backlog gauge.
    backlog: Mutex<HashSet<String>>,
    retention: Option<Duration>,
    prune_interval: Duration,
}

impl Archiver {
    pub fn new(
        config: &ArchiveConfig,
        retention_days: u32,
        prune_interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ArchiveError> {
        Ok(Self {
            archive: Archive::new(config)?,
            metrics,
            backlog: Mutex::new(HashSet::new()),
            retention: (retention_days > 0)
                .then(|| Duration::from_secs(u64::from(retention_days) * 86_400)),
            prune_interval: prune_interval.max(Duration::from_secs(1)),
        })
    }

    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// Archives `run` with its full outputs from Redis; `Ok` once it is in the archive (now or
    /// earlier). An `Err` keeps the finalizer: the caller retries.
    pub async fn archive_run(
        &self,
        run: &AgentRun,
        keys: &RunKeys,
        redis: &mut ConnectionManager,
    ) -> Result<WriteOutcome, ArchiveRunError> {
        let uid = keys.run_id();
        let started = Instant::now();
        let result = self.write(run, keys, redis).await;
        let label = match &result {
            Ok(WriteOutcome::Archived) => "archived",
            Ok(WriteOutcome::AlreadyArchived) => "already_archived",
            Err(e) => e.metric_label(),
        };
        self.metrics.archive_write(label, started.elapsed());
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => backlog.remove(uid),
            Err(e) => {
                warn!(error = %e, "archiving the run failed; the AgentRun stays until it succeeds");
                backlog.insert(uid.to_owned())
            }
        };
        self.metrics
            .archive_backlog
            .set(i64::try_from(backlog.len()).unwrap_or(i64::MAX));
        result
    }

    async fn write(
        &self,
        run: &AgentRun,
        keys: &RunKeys,
        redis: &mut ConnectionManager,
    ) -> Result<WriteOutcome, ArchiveRunError> {
        // Full outputs: keeping them is the archive's purpose. One run's are bounded by the
        // engine's per-run output limit, and runs are archived one reconcile at a time.
        let report = match crane_engine::run_report(redis, keys, Outputs::Full).await {
            Ok(report) => Some(report),
            Err(EngineError::RunNotFound(_)) => None,
            Err(EngineError::Redis { source, what }) => {
                return Err(ArchiveRunError::Engine(EngineError::Redis { source, what }));
            }
            Err(e) => {
                // Corrupt state will not heal: keep what the status has.
                warn!(error = %e, "the run's state in redis is unreadable; archiving its status alone");
                None
            }
        };
        let record = RunRecord::from_run(run, report.as_ref())?;
        let outcome = self.archive.write(&record).await?;
        info!(
            run = %run.name_any(),
            outcome = ?outcome,
            full_outputs = report.is_some(),
            "archived the run"
        );
        Ok(outcome)
    }

    /// Retention until `shutdown` (the leader runs it): every interval, deletes what is older
    /// than the retention in batches.
    pub async fn prune_loop(self: Arc<Self>, shutdown: Shutdown) {
        let Some(retention) = self.retention else {
            return;
        };
        let mut tick = tokio::time::interval(self.prune_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.wait() => return,
            }
            let age = SignedDuration::try_from(retention).unwrap_or(SignedDuration::MAX);
            let before = Timestamp::now().checked_sub(age).unwrap_or(Timestamp::MIN);
            match self.prune(before).await {
                Ok(0) => {}
                Ok(n) => info!(runs = n, "pruned archived runs past their retention"),
                Err(e) => {
                    self.metrics.archive_prune_failures.inc();
                    warn!(error = %e, "pruning the archive failed; trying again next interval");
                }
            }
        }
    }

    /// Deletes everything archived before `before`, batch by batch; returns how many.
    pub async fn prune(&self, before: Timestamp) -> Result<u64, ArchiveError> {
        let mut total = 0;
        loop {
            let n = self.archive.prune(before, PRUNE_BATCH).await?;
            total += n;
            self.metrics.archive_pruned.inc_by(n);
            if n < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}
