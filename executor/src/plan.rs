//! The plan model: a DAG of tool steps, in exactly the JSON shape of DESIGN.md
//! (`{"steps": [{"id", "tool", "input", "reasoning", "dependsOn"}]}`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The most steps one plan may have. Chosen so a fully mirrored status stays far below the
/// 1.5 MiB object limit and so the operator's per-run work is bounded; the CRD enforces the
/// same number at admission.
pub const MAX_STEPS: usize = 500;

/// A step's identifier: a positive integer, unique in its plan.
pub type StepId = u32;

/// A plan: the steps to run, with their dependencies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The steps, in any order; `dependsOn` gives the order that matters.
    pub steps: Vec<Step>,
}

/// One tool call in a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Positive integer, unique in the plan; `{step_N_output}` and `dependsOn` refer to it.
    #[schemars(range(min = 1))]
    pub id: StepId,
    /// Name of the tool to run, e.g. `calculator` or `todo_store.add`.
    pub tool: String,
    /// The tool's input: a JSON object matching the tool's input schema. String values may
    /// contain `{step_N_output}` or `{step_N_output.field}`, where step N is an ancestor.
    #[serde(default)]
    pub input: Map<String, Value>,
    /// Why the planner chose this step (free text, for people reading the plan).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reasoning: String,
    /// Ids of the steps that must succeed before this one starts.
    #[serde(default)]
    pub depends_on: Vec<StepId>,
}

impl Plan {
    /// The step with this id, if any.
    pub fn step(&self, id: StepId) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Ids of the steps no other step depends on: their outputs make the run's result.
    pub fn sinks(&self) -> Vec<StepId> {
        let mut sinks: Vec<StepId> = self
            .steps
            .iter()
            .map(|s| s.id)
            .filter(|id| !self.steps.iter().any(|s| s.depends_on.contains(id)))
            .collect();
        sinks.sort_unstable();
        sinks
    }
}
