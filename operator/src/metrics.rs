//! The operator's Prometheus metrics (prefix `crane_operator`): reconciles by controller and
//! result, reconcile duration, runs by phase, API writes by verb, the planner's tokens by
//! model, how late progress notifications arrive, per WorkerPool its queue, workers and
//! breakers, and the run archive's writes, backlog and retention. Labels are bounded values,
//! never run names: the only object names used are WorkerPools', which are few (like
//! kube-state-metrics' per-Deployment series), and their series go with the pool.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which controller a sample belongs to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Controller {
    #[allow(non_camel_case_types)]
    agentrun,
    #[allow(non_camel_case_types)]
    workerpool,
    #[allow(non_camel_case_types)]
    tool,
    #[allow(non_camel_case_types)]
    mcpserver,
    #[allow(non_camel_case_types)]
    model,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: Controller,
    /// "ok" or the error's `metric_label()`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: Controller,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// archived, already_archived, or the error's `metric_label()`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub controller: Controller,
    /// create, apply, apply_status, delete, event.
    pub verb: &'static str,
}

/// One WorkerPool's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub namespace: String,
    pub workerpool: String,
    /// queue depth: `queued`, `running`, `delayed`; workers: `active`, `desired`; breakers:
    /// `closed`, `half_open`, `open`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The model id the planner asked (a Model's `spec.model`, or the operator's default).
    pub model: String,
    /// `input` or `output` (GenAI conventions' `gen_ai.token.type`).
    pub r#type: &'static str,
}

/// The result labels of reconcile failures that come from Redis or the Kubernetes API, per
/// controller: created at zero, so "no errors" is a series with value 0, not a missing one.
const DEPENDENCY_FAILURES: [(Controller, &str); 5] = [
    (Controller::agentrun, "kube"),
    (Controller::agentrun, "engine"),
    (Controller::workerpool, "redis"),
    (Controller::workerpool, "list_jobs"),
    (Controller::workerpool, "create_job"),
];

/// What the operator last saw of one pool, for [`Metrics::observe_pool`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolObservation {
    pub queued: u64,
    pub running: u64,
    pub delayed: u64,
    pub active: u32,
    pub desired: u32,
    pub closed: usize,
    pub half_open: usize,
    pub open: usize,
}

/// Every metric of the operator, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// AgentRuns by phase, as the operator last saw them (set on each transition).
    pub runs_by_phase: Family<PhaseLabels, Gauge>,
    /// Terminal transitions counted once per run.
    pub runs_finished: Family<PhaseLabels, Counter>,
    pub api_writes: Family<WriteLabels, Counter>,
    /// Status writes skipped because a write for the same run happened within the window.
    pub status_writes_coalesced: Counter,
    /// Progress notifications read from the engine's global stream.
    pub notifications: Counter,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub is_leader: Gauge,
    /// Seconds from a worker's progress notification to the operator reading it.
    pub notification_lag: Histogram,
    /// Tokens the planner's model calls used.
    pub llm_tokens: Family<TokenLabels, Counter>,
    pub pool_queue: Family<PoolLabels, Gauge>,
    pub pool_workers: Family<PoolLabels, Gauge>,
    pub pool_breakers: Family<PoolLabels, Gauge>,
    /// Archive write attempts by result.
    pub archive_writes: Family<ResultLabels, Counter>,
    pub archive_write_duration: Histogram,
    /// Runs whose last archive attempt failed (their AgentRun waits in its finalizer).
    pub archive_backlog: Gauge,
    /// Archived runs deleted by retention.
    pub archive_pruned: Counter,
    pub archive_prune_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("crane_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and result",
            reconciles.clone(),
        );
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            });
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            reconcile_duration.clone(),
        );
        let runs_by_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "agentruns",
            "AgentRuns by phase, as last reconciled by this operator",
            runs_by_phase.clone(),
        );
        let runs_finished = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "agentruns_finished",
            "AgentRuns that reached a terminal phase",
            runs_finished.clone(),
        );
        let api_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API by controller and verb",
            api_writes.clone(),
        );
        let status_writes_coalesced = Counter::default();
        registry.register(
            "status_writes_coalesced",
            "AgentRun status writes deferred into a later write",
            status_writes_coalesced.clone(),
        );
        let notifications = Counter::default();
        registry.register(
            "engine_notifications",
            "Progress notifications read from the engine",
            notifications.clone(),
        );
        let is_leader = Gauge::default();
        registry.register(
            "is_leader",
            "1 while this replica holds the leader Lease and runs the controllers",
            is_leader.clone(),
        );
        let notification_lag = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "engine_notification_lag_seconds",
            "Time from a worker's progress notification to the operator reading it",
            notification_lag.clone(),
        );
        let llm_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "llm_tokens",
            "Tokens the planner's model calls used, by model and type",
            llm_tokens.clone(),
        );
        let pool_queue = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "workerpool_queue_depth",
            "Steps of a WorkerPool by state: queued, running, delayed (retries waiting)",
            pool_queue.clone(),
        );
        let pool_workers = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "workerpool_workers",
            "Workers of a WorkerPool: active, desired",
            pool_workers.clone(),
        );
        let pool_breakers = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "workerpool_breakers",
            "Tools of a WorkerPool by circuit-breaker state: closed, half_open, open",
            pool_breakers.clone(),
        );
        for (controller, result) in DEPENDENCY_FAILURES {
            let _ = reconciles.get_or_create(&ReconcileLabels { controller, result });
        }
        let archive_writes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "archive_writes",
            "Attempts to write a deleted AgentRun to the archive, by result",
            archive_writes.clone(),
        );
        let archive_write_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "archive_write_duration_seconds",
            "Time one archive write took (reading the outputs from Redis included)",
            archive_write_duration.clone(),
        );
        let archive_backlog = Gauge::default();
        registry.register(
            "archive_backlog",
            "AgentRuns waiting in their finalizer because the archive write failed",
            archive_backlog.clone(),
        );
        let archive_pruned = Counter::default();
        registry.register(
            "archive_pruned_runs",
            "Archived runs deleted by retention",
            archive_pruned.clone(),
        );
        let archive_prune_failures = Counter::default();
        registry.register(
            "archive_prune_failures",
            "Retention passes that failed",
            archive_prune_failures.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_duration,
            runs_by_phase,
            runs_finished,
            api_writes,
            status_writes_coalesced,
            notifications,
            is_leader,
            notification_lag,
            llm_tokens,
            pool_queue,
            pool_workers,
            pool_breakers,
            archive_writes,
            archive_write_duration,
            archive_backlog,
            archive_pruned,
            archive_prune_failures,
        }
    }

    /// Sets one pool's queue, worker and breaker gauges.
    pub fn observe_pool(&self, namespace: &str, workerpool: &str, seen: &PoolObservation) {
        let labels = |state| PoolLabels {
            namespace: namespace.to_owned(),
            workerpool: workerpool.to_owned(),
            state,
        };
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for (state, n) in [
            ("queued", seen.queued),
            ("running", seen.running),
            ("delayed", seen.delayed),
        ] {
            self.pool_queue.get_or_create(&labels(state)).set(count(n));
        }
        for (state, n) in [("active", seen.active), ("desired", seen.desired)] {
            self.pool_workers
                .get_or_create(&labels(state))
                .set(i64::from(n));
        }
        for (state, n) in [
            ("closed", seen.closed),
            ("half_open", seen.half_open),
            ("open", seen.open),
        ] {
            self.pool_breakers
                .get_or_create(&labels(state))
                .set(count(n as u64));
        }
    }

    /// Drops a deleted pool's series.
    pub fn forget_pool(&self, namespace: &str, workerpool: &str) {
        let labels = |state| PoolLabels {
            namespace: namespace.to_owned(),
            workerpool: workerpool.to_owned(),
            state,
        };
        for state in ["queued", "running", "delayed"] {
            self.pool_queue.remove(&labels(state));
        }
        for state in ["active", "desired"] {
            self.pool_workers.remove(&labels(state));
        }
        for state in ["closed", "half_open", "open"] {
            self.pool_breakers.remove(&labels(state));
        }
    }

    /// Counts the tokens of one planning.
    pub fn llm_usage(&self, model: &str, usage: &crane_core::model::Usage) {
        for (r#type, n) in [
            ("input", usage.prompt_tokens),
            ("output", usage.completion_tokens),
        ] {
            self.llm_tokens
                .get_or_create(&TokenLabels {
                    model: model.to_owned(),
                    r#type,
                })
                .inc_by(n);
        }
    }

    /// Counts one archive write attempt and its duration.
    pub fn archive_write(&self, result: &'static str, took: Duration) {
        self.archive_writes
            .get_or_create(&ResultLabels { result })
            .inc();
        self.archive_write_duration.observe(took.as_secs_f64());
    }

    /// Counts one reconcile and its duration.
    pub fn reconciled(&self, controller: Controller, result: &'static str, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
    }

    /// Counts one write to the Kubernetes API.
    pub fn api_write(&self, controller: Controller, verb: &'static str) {
        self.api_writes
            .get_or_create(&WriteLabels { controller, verb })
            .inc();
    }

    /// OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_prefixed_families_with_bounded_labels() {
        let m = Metrics::new();
        m.reconciled(Controller::agentrun, "ok", Duration::from_millis(3));
        m.api_write(Controller::workerpool, "create");
        let text = m.render();
        assert!(
            text.contains(
                "crane_operator_reconciles_total{controller=\"agentrun\",result=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "crane_operator_api_writes_total{controller=\"workerpool\",verb=\"create\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "crane_operator_reconcile_duration_seconds_count{controller=\"agentrun\"} 1"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn dependency_failures_exist_at_zero_before_any_happens() {
        let text = Metrics::new().render();
        for line in [
            "crane_operator_reconciles_total{controller=\"agentrun\",result=\"kube\"} 0",
            "crane_operator_reconciles_total{controller=\"workerpool\",result=\"redis\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn pool_series_are_set_and_go_with_the_pool() {
        let m = Metrics::new();
        let seen = PoolObservation {
            queued: 7,
            active: 2,
            desired: 3,
            open: 1,
            ..PoolObservation::default()
        };
        m.observe_pool("team-a", "fast", &seen);
        let text = m.render();
        for line in [
            "crane_operator_workerpool_queue_depth{namespace=\"team-a\",workerpool=\"fast\",state=\"queued\"} 7",
            "crane_operator_workerpool_workers{namespace=\"team-a\",workerpool=\"fast\",state=\"desired\"} 3",
            "crane_operator_workerpool_breakers{namespace=\"team-a\",workerpool=\"fast\",state=\"open\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        m.forget_pool("team-a", "fast");
        assert!(!m.render().contains("workerpool=\"fast\""));
    }

    #[test]
    fn planner_tokens_count_by_model_and_type() {
        let m = Metrics::new();
        let usage = crane_core::model::Usage {
            prompt_tokens: 120,
            completion_tokens: 30,
        };
        m.llm_usage("gpt-x", &usage);
        m.llm_usage("gpt-x", &usage);
        let text = m.render();
        assert!(
            text.contains("crane_operator_llm_tokens_total{model=\"gpt-x\",type=\"input\"} 240"),
            "{text}"
        );
    }
}
