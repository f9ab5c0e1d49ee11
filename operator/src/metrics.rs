//! The operator's Prometheus metrics (prefix `crane_operator`): reconciles by controller and
//! result, reconcile duration, runs by phase, API writes by verb, and the run archive's
//! writes, backlog and retention. Labels are bounded
//! values only, never object names.

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
            archive_writes,
            archive_write_duration,
            archive_backlog,
            archive_pruned,
            archive_prune_failures,
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
}
