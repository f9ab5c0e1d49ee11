//! What the plugin reads of an AgentRun: the fields it shows, with phases kept as text.
//!
//! A kubectl plugin lives on people's laptops for a long time, while the operator in the
//! cluster moves on. Reading phases as strings (not `crane_api`'s enums) means a plugin older
//! than the cluster still shows a run whose steps are in a phase it has never heard of,
//! instead of failing to decode it; unknown fields are ignored for the same reason. The
//! structs reuse `crane_api`'s and `crane_core`'s types wherever their shape is settled
//! (plans, usage), and [`RunView`] inherits AgentRun's resource identity, so `Api<RunView>`
//! talks to the same endpoint as `Api<AgentRun>`.

use crane_api::{AgentRun, AgentRunPhase, RunUsage, StepUsage};
use crane_core::plan::Plan;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use serde::Deserialize;
use serde_json::Value;

/// An AgentRun as the plugin reads it.
#[derive(Resource, Deserialize, Clone, Debug, Default)]
#[resource(inherit = AgentRun)]
pub struct RunView {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RunSpecView,
    #[serde(default)]
    pub status: Option<RunStatusView>,
}

/// The parts of `spec` the plugin shows.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct RunSpecView {
    pub prompt: Option<String>,
    pub plan: Option<Plan>,
    pub worker_pool: Option<String>,
    pub model: Option<String>,
    pub cancel: bool,
}

/// The parts of `status` the plugin shows.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct RunStatusView {
    pub phase: Option<String>,
    pub plan: Option<Plan>,
    pub plan_source: Option<String>,
    pub steps: Vec<StepView>,
    pub progress: Option<String>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub usage: Option<RunUsage>,
}

/// One entry of `status.steps`.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct StepView {
    pub id: u32,
    pub tool: String,
    pub phase: String,
    pub attempts: u32,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub usage: Option<StepUsage>,
    pub message: Option<String>,
}

/// How a finished run ended, for the exit code of `watch` and `run -w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    /// Failed or Cancelled.
    Unsuccessful,
}

impl RunView {
    /// The run's name.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// `status.phase`, `Pending` while the operator has written none.
    pub fn phase(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending")
    }

    /// The plan that runs: spec.plan when the user gave one, else the planner's.
    pub fn plan(&self) -> Option<&Plan> {
        self.spec
            .plan
            .as_ref()
            .or_else(|| self.status.as_ref()?.plan.as_ref())
    }

    /// Some when the run is finished (Succeeded, Failed or Cancelled).
    pub fn ending(&self) -> Option<Ending> {
        ending(self.phase())
    }
}

/// How a run in `phase` ended, if it did; `None` for any phase this plugin does not know.
pub fn ending(phase: &str) -> Option<Ending> {
    let phase: AgentRunPhase = serde_json::from_value(Value::String(phase.to_owned())).ok()?;
    match phase {
        AgentRunPhase::Succeeded => Some(Ending::Succeeded),
        p if p.is_terminal() => Some(Ending::Unsuccessful),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_phases_and_fields_still_decode() {
        let run: RunView = serde_json::from_value(json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"prompt": "p", "someFutureField": {"x": 1}},
            "status": {
                "phase": "SomeFuturePhase",
                "steps": [{"id": 1, "tool": "t", "phase": "Teleporting", "attempts": 2,
                           "futureField": true}],
                "futureStatus": [1, 2],
            },
        }))
        .unwrap();
        assert_eq!(run.phase(), "SomeFuturePhase");
        assert_eq!(run.ending(), None);
        assert_eq!(run.status.unwrap().steps[0].phase, "Teleporting");
    }

    #[test]
    fn endings() {
        assert_eq!(ending("Succeeded"), Some(Ending::Succeeded));
        assert_eq!(ending("Failed"), Some(Ending::Unsuccessful));
        assert_eq!(ending("Cancelled"), Some(Ending::Unsuccessful));
        for phase in [
            "Pending",
            "Planning",
            "AwaitingApproval",
            "Running",
            "",
            "succeeded",
        ] {
            assert_eq!(ending(phase), None, "{phase}");
        }
    }

    #[test]
    fn a_new_run_is_pending_and_has_the_spec_plan() {
        let run: RunView = serde_json::from_value(json!({
            "metadata": {"name": "r"},
            "spec": {"plan": {"steps": [{"id": 1, "tool": "calculator", "input": {}}]}},
        }))
        .unwrap();
        assert_eq!(run.phase(), "Pending");
        assert_eq!(run.plan().map(|p| p.steps.len()), Some(1));
    }
}
