//! The plan model: a DAG of tool steps, in exactly the JSON shape an AgentRun's `spec.plan`
//! and `status.plan` carry (`{"steps": [{"id", "tool", "input", "reasoning", "dependsOn"}]}`):
//! planners write it, the CRD embeds it, validation and both engines read it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The most steps one plan may have. Chosen so a fully mirrored status stays far below the
/// 1.5 MiB object limit and so the operator's per-run work is bounded; the CRD enforces the
/// same number at admission.
pub const MAX_STEPS: usize = 500;

/// The most `dependsOn` entries one plan may have in all. A step lists its direct
/// dependencies only, so real plans stay far below; the bound keeps validation, the engine's
/// counters and the CRD's admission rules cheap (the CRD enforces the same number).
pub const MAX_DEPENDENCIES: usize = 10_000;

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

/// The longest prompt accepted, in characters. Long enough for any request a person types,
/// short enough that an LLM call stays cheap and a status stays small.
pub const MAX_PROMPT_CHARS: usize = 10_000;

/// Which planner to use (`spec.planner.mode`, `--planner`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlannerMode {
    /// The LLM when one is configured, falling back to the rules planner when it fails;
    /// the rules planner alone when no LLM is configured.
    #[default]
    Auto,
    /// The deterministic rules planner only.
    Rules,
    /// The LLM only: an error when it is not configured or fails.
    Llm,
}

/// Who produced a run's plan (`status.planSource`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlanSource {
    /// The user gave the plan in `spec.plan`.
    Spec,
    /// The rules planner.
    Rules,
    /// The LLM planner.
    Llm,
}

impl PlannerMode {
    /// Every mode, as written in `spec.planner.mode` and `--planner`.
    pub const ALL: [(&'static str, PlannerMode); 3] = [
        ("auto", PlannerMode::Auto),
        ("rules", PlannerMode::Rules),
        ("llm", PlannerMode::Llm),
    ];
}

impl std::str::FromStr for PlannerMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, mode)| *mode)
            .ok_or_else(|| format!("unknown planner mode {s:?} (auto, rules or llm)"))
    }
}

/// The environment of a planner Job: the operator sets these variables, the planner
/// (`crane_planner::LlmConfig::from_env`) reads them.
pub const ENV_BASE_URL: &str = "CRANE_LLM_BASE_URL";
pub const ENV_MODEL: &str = "CRANE_LLM_MODEL";
pub const ENV_API_KEY: &str = "CRANE_LLM_API_KEY";
pub const ENV_TIMEOUT_SECONDS: &str = "CRANE_LLM_TIMEOUT_SECONDS";
