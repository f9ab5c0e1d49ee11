//! What a run is asked to do (options) and what it reports (the run JSON printed by
//! `crane-executor run` and `status`, and mirrored by the operator into AgentRun status).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::StepId;

/// Per-step retry policy for retryable errors (timeouts, transient failures).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 means no retry).
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each attempt, with jitter.
    #[schemars(range(min = 0))]
    pub initial_backoff_ms: u64,
    /// Upper bound of the backoff.
    #[schemars(range(min = 0))]
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Three attempts, the first retry after 200 ms, doubling up to 10 s: a transient fault
        // (a dropped connection, a restarting dependency) is ridden out within about a second,
        // while a tool that stays down fails the step soon instead of holding the run. The
        // AgentRun CRD embeds this type, so these are also `spec.retry`'s defaults.
        Self {
            max_attempts: 3,
            initial_backoff_ms: 200,
            max_backoff_ms: 10_000,
        }
    }
}

impl RetryPolicy {
    /// Backoff before attempt `next_attempt` (2 = first retry), without jitter.
    pub fn backoff_ms(&self, next_attempt: u32) -> u64 {
        let exp = next_attempt.saturating_sub(2).min(32);
        self.initial_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_ms)
    }
}

/// What happens to the rest of the run when a step fails for good.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailurePolicy {
    /// Start no new step once one has failed; the run fails when running steps end.
    #[default]
    FailFast,
    /// Steps that do not depend on the failed one still run; the run fails at the end.
    ContinueIndependent,
}

/// How a run executes its plan. The same options drive both engines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOptions {
    pub retry: RetryPolicy,
    pub step_timeout_ms: u64,
    pub failure_policy: FailurePolicy,
    /// The tools of Kubernetes objects (Tool, MCPServer) the plan uses, as they were when the
    /// run started: endpoints and Secret references, never Secret values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<crate::tool::ToolSpec>,
    /// The Models the run's `llm` steps may use, resolved from Model objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<crate::model::ModelConfig>,
    /// The Model of `llm` steps that name none (`spec.model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What the run may spend (`spec.budget`).
    #[serde(default, skip_serializing_if = "crate::model::Budget::is_empty")]
    pub budget: crate::model::Budget,
    /// What the planner's model call spent (one call), counted in the run's usage and
    /// against its budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planner_usage: Option<crate::model::Usage>,
    /// W3C `traceparent` of the run's root span: travels with the run through Redis so every
    /// worker's step spans join the run's one trace. Absent when tracing is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            step_timeout_ms: 30_000,
            failure_policy: FailurePolicy::FailFast,
            tools: Vec::new(),
            models: Vec::new(),
            model: None,
            budget: crate::model::Budget::default(),
            planner_usage: None,
            traceparent: None,
        }
    }
}

/// Lifecycle of a run as the engines see it (the operator adds Planning before it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunPhase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Lifecycle of one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StepPhase {
    /// Waiting for its dependencies (or for a retry's backoff).
    #[default]
    Pending,
    /// Dependencies met; queued for a worker.
    Ready,
    Running,
    /// Held at an approval gate until a person decides (an `Approval` object).
    WaitingForApproval,
    Succeeded,
    Failed,
    /// Will never run: a dependency failed, or the run stopped (FailFast, cancel, deadline).
    Skipped,
}

impl StepPhase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped)
    }
}

/// One step in a run report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    pub id: StepId,
    pub tool: String,
    pub phase: StepPhase,
    pub attempts: u32,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// RFC 3339, when the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339, when the step reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Tokens its model calls used (llm steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::model::Usage>,
    /// Why a step that could run waits (breaker, rate limit, approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What a step in WaitingForApproval asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
}

/// What a step waiting for approval asks, as the approver is shown it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    pub message: String,
    /// Users or groups who may decide; empty: anyone who may update Approvals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    pub timeout_seconds: u64,
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// A gated tool's step: the tool and the exact input it will be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// RFC 3339, when the step began to wait (its timeout counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// What a gate's timeout decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnTimeout {
    #[default]
    Reject,
    Approve,
}

/// A run as printed by `crane-executor run` / `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub phase: RunPhase,
    pub steps: Vec<StepReport>,
    /// When Succeeded: the output of the single sink step, or an object `{"step_N": output}`
    /// when the plan has several sinks.
    pub result: Option<Value>,
    /// When Failed: a human-readable reason, e.g. `step 2 (calculator) failed: division by zero`.
    pub error: Option<String>,
    /// What the run spent (model tokens and calls, other tool calls).
    #[serde(default, skip_serializing_if = "crate::model::Spending::is_empty")]
    pub spending: crate::model::Spending,
    /// Which limit of the budget a call was refused for (`maxTokens`, `maxLlmCalls`,
    /// `maxToolCalls`); the run then fails with reason BudgetExceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_exceeded: Option<String>,
}

/// The run's `error`, worded the same by both engines: for a Failed run the first step that
/// failed for good (`first_failure`), e.g. `step 2 (calculator) failed: division by zero`
/// (`failed after 3 attempts` when it was retried); for a Cancelled run how far it got;
/// otherwise none.
pub fn run_error(
    phase: RunPhase,
    steps: &[StepReport],
    first_failure: Option<StepId>,
) -> Option<String> {
    match phase {
        RunPhase::Failed => Some(
            match first_failure.and_then(|id| steps.iter().find(|s| s.id == id)) {
                Some(step) => {
                    let error = step.error.as_deref().unwrap_or("unknown error");
                    if step.attempts > 1 {
                        format!(
                            "step {} ({}) failed after {} attempts: {error}",
                            step.id, step.tool, step.attempts
                        )
                    } else {
                        format!("step {} ({}) failed: {error}", step.id, step.tool)
                    }
                }
                None => "run failed".to_owned(),
            },
        ),
        RunPhase::Cancelled => {
            let done = steps
                .iter()
                .filter(|s| s.phase == StepPhase::Succeeded)
                .count();
            Some(format!(
                "run cancelled after {done} of {} steps succeeded",
                steps.len()
            ))
        }
        RunPhase::Pending | RunPhase::Running | RunPhase::Succeeded => None,
    }
}

/// Builds the `result` of a succeeded run from the sink steps' outputs.
pub fn result_from_sinks(sinks: &[StepId], outputs: &BTreeMap<StepId, Value>) -> Option<Value> {
    match sinks {
        [one] => outputs.get(one).cloned(),
        many => Some(Value::Object(
            many.iter()
                .filter_map(|id| outputs.get(id).map(|o| (format!("step_{id}"), o.clone())))
                .collect(),
        )),
    }
}
