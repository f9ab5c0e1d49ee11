//! Crane's Kubernetes API (`crane.dev/v1alpha1`): the `AgentRun` and `WorkerPool` custom
//! resources, their CRD schemas and admission rules, and the size limits of what the
//! operator mirrors into status. The single place both the controllers and the CRD
//! generator take these types from.

#![forbid(unsafe_code)]

mod agentrun;
mod approval;
pub mod crdgen;
mod model;
mod schema;
mod tools;
mod workerpool;

pub use agentrun::{
    AgentRun, AgentRunPhase, AgentRunSpec, AgentRunStatus, BudgetSpec, CONDITION_COMPLETE,
    CONDITION_FAILED, CONDITION_PLANNED, CONDITION_STATUS_TRUNCATED, CONDITION_WAITING,
    PlannerSpec, REASON_BREAKER_OPEN, REASON_BUDGET_EXCEEDED, REASON_INVALID_PLAN,
    REASON_NOT_WAITING, REASON_STATUS_TOO_LARGE, RunApproval, RunUsage, StepStatus, StepUsage,
};
pub use approval::{Approval, ApprovalSpec, ApprovalStatus, Decision, Outcome};
pub use model::{Model, ModelLimitsSpec, ModelSpec, ModelStatus};
pub use schema::{MAX_REASONING_CHARS, MAX_TOOL_NAME_CHARS, TOOL_NAME_PATTERN};
pub use tools::{
    CONDITION_TOOL_READY, DiscoveredTool, HeaderSource, HeaderSpec, HttpEndpoint, HttpMethod,
    HttpToolSpec, MCPServer, MCPServerSpec, MCPServerStatus, ReadyStatus, SecretKeySelector, Tool,
    ToolStatus, is_tool_name, mcp_tool_name,
};
pub use workerpool::{
    BreakerState, BreakerStatus, CONDITION_READY, WorkerPool, WorkerPoolSpec, WorkerPoolStatus,
    WorkerTemplate,
};

use crane_core::run::StepReport;
use crane_core::text::truncate;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

/// Largest step output kept whole in status, in bytes of JSON. 500 steps of outputs and
/// errors at their limits stay near 300 KiB, far below the 1.5 MiB object limit.
pub const MAX_STEP_OUTPUT_BYTES: usize = 256;
/// Largest run result kept whole in status, in bytes of JSON.
pub const MAX_RESULT_BYTES: usize = 4096;
/// What an AgentRun (spec, metadata and status, as JSON) may take before the operator leaves
/// parts of the status out: well inside etcd's 1.5 MiB request limit, leaving room for
/// managedFields and the apiserver's own additions.
pub const MAX_OBJECT_BYTES: usize = 1_000_000;
/// Longest error message kept in status, in bytes (cut at a character boundary).
pub const MAX_ERROR_BYTES: usize = 256;

/// Errors turning engine reports into status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A timestamp from the engine is not RFC 3339.
    #[error("step {step}: {field} {value:?} is not an RFC 3339 timestamp: {source}")]
    BadTimestamp {
        step: u32,
        field: &'static str,
        value: String,
        #[source]
        source: k8s_openapi::jiff::Error,
    },
}

/// `value` when its JSON is at most `max_bytes` long; otherwise
/// `{"truncated": true, "sizeBytes": N, "preview": "<first bytes of the JSON>"}`, whose own
/// JSON stays within `max_bytes` plus the envelope (about 60 bytes).
/// A value the engine already cut (it reads large outputs as such a preview) keeps its
/// original size, with its preview cut to `max_bytes`.
pub fn truncate_json(value: &Value, max_bytes: usize) -> Value {
    if let (Some(true), Some(size), Some(preview)) = (
        value.get("truncated").and_then(Value::as_bool),
        value.get("sizeBytes").and_then(Value::as_u64),
        value.get("preview").and_then(Value::as_str),
    ) && value.as_object().is_some_and(|o| o.len() == 3)
    {
        return json!({
            "truncated": true,
            "sizeBytes": size,
            "preview": truncate(preview, max_bytes),
        });
    }
    let text = value.to_string();
    if text.len() <= max_bytes {
        return value.clone();
    }
    json!({
        "truncated": true,
        "sizeBytes": text.len(),
        "preview": truncate(&text, max_bytes),
    })
}

impl StepStatus {
    /// The status entry for one step of an engine report, with its output and error
    /// truncated to [`MAX_STEP_OUTPUT_BYTES`] and [`MAX_ERROR_BYTES`].
    pub fn from_report(report: &StepReport) -> Result<Self, ApiError> {
        let time =
            |field: &'static str, value: &Option<String>| -> Result<Option<Time>, ApiError> {
                value
                    .as_deref()
                    .map(|v| {
                        v.parse()
                            .map(Time)
                            .map_err(|source| ApiError::BadTimestamp {
                                step: report.id,
                                field,
                                value: v.to_owned(),
                                source,
                            })
                    })
                    .transpose()
            };
        Ok(Self {
            id: report.id,
            tool: report.tool.clone(),
            phase: report.phase,
            attempts: report.attempts,
            output: report
                .output
                .as_ref()
                .map(|o| truncate_json(o, MAX_STEP_OUTPUT_BYTES)),
            error: report
                .error
                .as_deref()
                .map(|e| truncate(e, MAX_ERROR_BYTES)),
            started_at: time("startedAt", &report.started_at)?,
            finished_at: time("finishedAt", &report.finished_at)?,
            usage: report.usage.map(|u| StepUsage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            }),
            message: report.message.as_deref().map(|m| truncate(m, 1024)),
        })
    }
}

#[cfg(test)]
mod tests;
