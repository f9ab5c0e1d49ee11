//! The `Approval` custom resource (`crane.dev/v1alpha1`): one human decision a run waits for,
//! owned by its AgentRun and named `<run>-plan` (the whole plan, `spec.approval.plan`) or
//! `<run>-step-<id>` (an `approval` step, or a call to a tool that requires approval). People
//! decide by setting `spec.decision` and `spec.decidedBy`; a ValidatingAdmissionPolicy
//! (shipped with the chart) checks `decidedBy` is the requesting user, that the user (or a
//! group of theirs) is among `approvers` when set, and that a decision never changes.

// `printcolumn(...)` repeats keys such as `type_` by design; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema::any_json_schema;

/// A decision a run waits for.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "crane.dev",
    version = "v1alpha1",
    kind = "Approval",
    namespaced,
    category = "crane",
    status = "ApprovalStatus",
    derive = "PartialEq",
    doc = "A human decision an AgentRun waits for: approve or reject a step, or the whole plan.",
    printcolumn(name = "RUN", type_ = "string", json_path = ".spec.run"),
    printcolumn(name = "STEP", type_ = "integer", json_path = ".spec.stepId"),
    printcolumn(name = "DECISION", type_ = "string", json_path = ".spec.decision"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// The AgentRun that waits.
    #[schemars(length(max = 253))]
    pub run: String,
    /// The step that waits; absent for the whole plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295_i64))]
    pub step_id: Option<u32>,
    /// What the person is asked.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub message: String,
    /// Users or groups who may decide; empty: anyone allowed to update Approvals here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub approvers: Vec<String>,
    /// What would happen: the tool and the exact input, or a summary of the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json_schema")]
    pub details: Option<Value>,
    /// Approved or Rejected; empty until decided, and never changed after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The user who decided (must be the requesting user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub decided_by: Option<String>,
    /// Why, in the decider's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub comment: Option<String>,
}

/// A person's decision.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approved,
    Rejected,
}

/// What came of the gate.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Rejected,
    /// Nobody decided within the step's timeoutSeconds; its onTimeout applied.
    TimedOut,
}

/// What the operator did with the decision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalStatus {
    /// When the decision (or the timeout) was applied to the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
    /// Approved, Rejected or TimedOut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}
