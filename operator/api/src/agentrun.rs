//! The `AgentRun` custom resource (`crane.dev/v1alpha1`): what a user asks for (spec, with
//! the admission rules the apiserver enforces) and what the operator reports (status).
//! The plan, retry and failure types are crane-executor's, so the CRD and both engines
//! share one JSON shape.

// `printcolumn(...)` repeats keys such as `type_` by design; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use crane_core::plan::{MAX_PROMPT_CHARS, PlanSource, PlannerMode};
use crane_core::plan::{Plan, StepId};
use crane_core::run::{FailurePolicy, RetryPolicy, RunPhase, StepPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema::{any_json_schema, spec_plan_schema, status_plan_schema};

/// Condition type: the run has a plan (from spec.plan or the planner) that passed validation.
pub const CONDITION_PLANNED: &str = "Planned";
/// Condition type: the run succeeded (`kubectl wait --for=condition=Complete`).
pub const CONDITION_COMPLETE: &str = "Complete";
/// Condition type: the run failed, was cancelled or ran out of time.
pub const CONDITION_FAILED: &str = "Failed";
/// Condition reason on `Failed` when the plan is invalid (cycle, unknown tool, bad input…).
pub const REASON_INVALID_PLAN: &str = "InvalidPlan";
/// Condition type: parts of the status were left out to keep the object within its size
/// limit (the message says which; full outputs stay in the engine).
pub const CONDITION_STATUS_TRUNCATED: &str = "StatusTruncated";
/// Condition type: steps that could run are held back (the message lists them and why);
/// `False` once none is.
pub const CONDITION_WAITING: &str = "Waiting";
/// Condition reason on `Waiting`: a tool's circuit breaker is open in the run's pool.
pub const REASON_BREAKER_OPEN: &str = "BreakerOpen";
/// Condition reason on `Waiting` once no step is held back any more.
pub const REASON_NOT_WAITING: &str = "NotWaiting";
/// Condition reason on `Failed` when the run's budget could not cover a call.
pub const REASON_BUDGET_EXCEEDED: &str = "BudgetExceeded";
/// Condition reason on `Failed` when even a reduced status cannot be written.
pub const REASON_STATUS_TOO_LARGE: &str = "StatusTooLarge";

/// What to run: a natural-language prompt, a ready plan, or both (the plan wins; the prompt
/// is then kept for people reading the object).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "crane.dev",
    version = "v1alpha1",
    kind = "AgentRun",
    namespaced,
    shortname = "ar",
    category = "crane",
    status = "AgentRunStatus",
    derive = "PartialEq",
    doc = "An agent run: a prompt or a plan of tool steps, executed as a DAG on a WorkerPool.",
    printcolumn(
        name = "PHASE",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the run is in its lifecycle"
    ),
    printcolumn(
        name = "STEPS",
        type_ = "string",
        json_path = ".status.progress",
        description = "Steps finished / steps in the plan"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "PLANNER",
        type_ = "string",
        json_path = ".status.planSource",
        description = "Who made the plan: spec, rules or llm",
        priority = 1
    ),
    printcolumn(
        name = "RESULT",
        type_ = "string",
        json_path = ".status.result",
        description = "Output of the final step(s) when Succeeded",
        priority = 1
    )
)]
#[x_kube(validation = Rule::new("has(self.prompt) || has(self.plan)").message("spec: set prompt, plan, or both"))]
#[x_kube(validation = Rule::new("has(self.prompt) == has(oldSelf.prompt) && (!has(self.prompt) || self.prompt == oldSelf.prompt)").message("spec.prompt cannot be changed after creation; create a new AgentRun"))]
#[x_kube(validation = Rule::new("has(self.plan) == has(oldSelf.plan) && (!has(self.plan) || self.plan == oldSelf.plan)").message("spec.plan cannot be changed after creation; create a new AgentRun"))]
#[serde(rename_all = "camelCase")]
pub struct AgentRunSpec {
    /// What the user wants, in natural language; a planner turns it into a plan when
    /// spec.plan is absent. Must not be blank; at most 10 000 characters. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PROMPT_CHARS))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("spec.prompt must not be empty or blank; give a request, or leave prompt out and give spec.plan"))]
    #[x_kube(validation = Rule::new("!self.contains('\\u0000')").message("spec.prompt must not contain a NUL character (\\u0000)"))]
    pub prompt: Option<String>,

    /// A ready plan: a DAG of at most 500 tool steps with unique ids. When present no
    /// planner runs. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "spec_plan_schema")]
    pub plan: Option<Plan>,

    /// Name of the WorkerPool, in the same namespace, whose workers run the steps: a
    /// DNS-1123 label (lowercase letters, digits and '-', at most 63 characters). The run
    /// stays Pending until the pool exists.
    #[serde(default = "default_worker_pool")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("spec.workerPool must be the name of a WorkerPool in this namespace: lowercase letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label)"))]
    pub worker_pool: String,

    /// How to plan the prompt when spec.plan is absent.
    #[serde(default)]
    pub planner: PlannerSpec,

    /// Default retry policy of every step, for retryable errors (timeouts, transient
    /// failures); invalid input fails a step at once.
    #[serde(default)]
    pub retry: RetryPolicy,

    /// Time limit of one attempt of one step, in seconds.
    #[serde(default = "default_step_timeout_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub step_timeout_seconds: u32,

    /// Time limit of the whole run, from its start, in seconds; then the run fails with
    /// reason DeadlineExceeded.
    #[serde(default = "default_active_deadline_seconds")]
    #[schemars(range(min = 1, max = 604800))]
    pub active_deadline_seconds: u32,

    /// What happens when a step fails for good: FailFast starts no new step;
    /// ContinueIndependent still runs the steps that do not depend on the failed one.
    #[serde(default)]
    pub failure_policy: FailurePolicy,

    /// Seconds after the run finishes (Succeeded, Failed or Cancelled) before the AgentRun
    /// and its state are deleted.
    #[serde(default = "default_ttl_seconds_after_finished")]
    #[schemars(range(max = 31536000))]
    pub ttl_seconds_after_finished: u32,

    /// Set to true to stop the run: no new step starts, running steps may finish, and the
    /// phase becomes Cancelled.
    #[serde(default)]
    pub cancel: bool,

    /// The Model (same namespace) that llm steps naming none use, and the LLM planner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("spec.model must be the name of a Model in this namespace (a DNS-1123 label)"))]
    pub model: Option<String>,

    /// What the run may spend. A call the budget cannot cover is never sent; the run then
    /// fails with reason BudgetExceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,

    /// Human approval before anything runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<RunApproval>,
}

/// Limits on what one run spends, enforced across all workers before each call.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Most tokens (prompt and completion) of all llm steps and the planner together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<u64>,
    /// Most llm calls (the planner's included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_llm_calls: Option<u64>,
    /// Most calls of other tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tool_calls: Option<u64>,
}

/// Approval gates of the whole run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunApproval {
    /// true: after planning the run waits in phase AwaitingApproval, with the plan in status
    /// and an Approval for it; nothing runs before it is approved.
    #[serde(default)]
    pub plan: bool,
}

/// Planner settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlannerSpec {
    /// auto: the LLM when the operator has one configured, else the rules planner (and the
    /// rules planner when the LLM fails); rules: the deterministic rules planner only;
    /// llm: the LLM only.
    #[serde(default)]
    pub mode: PlannerMode,
}

fn default_worker_pool() -> String {
    "default".to_owned()
}
fn default_step_timeout_seconds() -> u32 {
    30
}
fn default_active_deadline_seconds() -> u32 {
    600
}
fn default_ttl_seconds_after_finished() -> u32 {
    3600
}

/// Lifecycle of an AgentRun: the engines' phases plus Planning, while the planner Job runs.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum AgentRunPhase {
    /// Accepted; waiting for its WorkerPool or for the operator to start it.
    #[default]
    Pending,
    /// The planner Job is turning the prompt into a plan.
    Planning,
    /// spec.approval.plan: the plan waits for a person's approval (an Approval object).
    AwaitingApproval,
    /// Steps are running.
    Running,
    /// Every step succeeded; status.result holds the result.
    Succeeded,
    /// A step failed for good, the plan was invalid, or the deadline passed; status.error
    /// says why.
    Failed,
    /// spec.cancel was set.
    Cancelled,
}

impl AgentRunPhase {
    /// Succeeded, Failed or Cancelled: nothing will change any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl From<RunPhase> for AgentRunPhase {
    fn from(phase: RunPhase) -> Self {
        match phase {
            RunPhase::Pending => Self::Pending,
            RunPhase::Running => Self::Running,
            RunPhase::Succeeded => Self::Succeeded,
            RunPhase::Failed => Self::Failed,
            RunPhase::Cancelled => Self::Cancelled,
        }
    }
}

/// What the operator observed of the run. Written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentRunStatus {
    /// Pending, Planning, Running, Succeeded, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AgentRunPhase>,

    /// The plan the planner produced (absent when spec.plan was given), as validated by the
    /// operator before any step ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "status_plan_schema")]
    pub plan: Option<Plan>,

    /// Who made the plan that runs: spec (the user), rules or llm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_source: Option<PlanSource>,

    /// One entry per step of the plan, mirrored from the engine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub steps: Vec<StepStatus>,

    /// Steps finished / steps in the plan, e.g. "1/2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub progress: Option<String>,

    /// When Succeeded: the output of the single final step, or an object {"step_N": output}
    /// when the plan has several final steps (truncated like step outputs, but larger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_schema")]
    pub result: Option<Value>,

    /// When Failed or Cancelled: why, for a person, e.g. "step 2 (calculator) failed:
    /// division by zero".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,

    /// Standard conditions: Planned, Complete (kubectl wait --for=condition=Complete) and
    /// Failed (reason InvalidPlan, StepFailed, DeadlineExceeded, Cancelled…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the first step started (or the planner Job, for a prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the run reached Succeeded, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,

    /// The last value of the `crane.dev/retry` annotation the operator acted on (retry from
    /// failure); a run is retried again only when the annotation changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub retry_token: Option<String>,

    /// What the run spent: tokens of every llm step and the planner, llm and tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<RunUsage>,
}

/// A run's spending, summed over its steps and its planner.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunUsage {
    /// Prompt tokens, as the providers counted them.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens, as the providers counted them.
    #[serde(default)]
    pub completion_tokens: u64,
    /// promptTokens + completionTokens.
    #[serde(default)]
    pub total_tokens: u64,
    /// Calls to models (llm steps and the planner).
    #[serde(default)]
    pub llm_calls: u64,
    /// Calls of other tools.
    #[serde(default)]
    pub tool_calls: u64,
}

/// Tokens one llm step used.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StepUsage {
    /// Prompt tokens, as the provider counted them.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens, as the provider counted them.
    #[serde(default)]
    pub completion_tokens: u64,
}

/// One step of the run, as the engine last reported it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// The step's id in the plan.
    pub id: StepId,
    /// The tool the step runs.
    pub tool: String,
    /// Pending, Ready, Running, Succeeded, Failed or Skipped.
    pub phase: StepPhase,
    /// Attempts started so far, the first included.
    #[serde(default)]
    pub attempts: u32,
    /// The step's output when Succeeded. Outputs whose JSON is longer than 256 bytes appear
    /// as {"truncated": true, "sizeBytes": N, "preview": "<first bytes>"}; the full output
    /// stays in Redis until the run's TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_schema")]
    pub output: Option<Value>,
    /// Why the step failed (the last attempt's error), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the step reached Succeeded, Failed or Skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Tokens the step's model calls used (llm steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<StepUsage>,
    /// Why a step that could run is waiting (an open circuit breaker, the model's rate
    /// limit, a person's approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
}
