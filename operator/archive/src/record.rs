//! What the archive keeps of one run ([`RunRecord`]) and what a list shows of any run, live
//! or archived ([`RunSummary`]). Both are built here, purely, from the AgentRun and (when
//! Redis still had the run) the engine's report with full outputs; the status alone has
//! outputs truncated to 256 bytes, so the report is what makes the archive worth reading.

use crane_api::{AgentRun, AgentRunPhase};
use crane_core::run::{RunReport, StepPhase};
use crane_core::text::truncate;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_like::label_map;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ArchiveError;

/// Longest prompt a summary carries (the full prompt is in the spec).
pub const SUMMARY_PROMPT_BYTES: usize = 300;
/// Longest error a summary carries.
pub const SUMMARY_ERROR_BYTES: usize = 300;

/// What a run spent, as a list shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub total_tokens: i64,
    pub llm_calls: i64,
    pub tool_calls: i64,
}

/// One line of a runs list: the same shape for a live AgentRun and an archived one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// Pending, Planning, AwaitingApproval, Running, Succeeded, Failed or Cancelled.
    pub phase: String,
    /// `live` (an AgentRun in the cluster) or `archived` (a row of the archive).
    pub source: String,
    pub created_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// When the run entered the archive (archived runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
    /// The prompt, cut to [`SUMMARY_PROMPT_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_source: Option<String>,
    pub worker_pool: String,
    pub steps_total: i32,
    pub steps_succeeded: i32,
    /// Why it failed, cut to [`SUMMARY_ERROR_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub usage: Usage,
}

/// An archived run, whole: what the operator writes and what a reader gets back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    #[serde(flatten)]
    pub summary: RunSummary,
    /// The full prompt (the summary's is cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_prompt: Option<String>,
    pub labels: Value,
    pub spec: Value,
    pub status: Value,
    /// The engine's report (`RunReport` JSON: every step with its full output and error), when
    /// Redis still had the run at deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
    /// The full result: the report's when there is one, else the status's (possibly truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// A phase as the API and the archive spell it.
pub fn phase_name(phase: AgentRunPhase) -> &'static str {
    match phase {
        AgentRunPhase::Pending => "Pending",
        AgentRunPhase::Planning => "Planning",
        AgentRunPhase::AwaitingApproval => "AwaitingApproval",
        AgentRunPhase::Running => "Running",
        AgentRunPhase::Succeeded => "Succeeded",
        AgentRunPhase::Failed => "Failed",
        AgentRunPhase::Cancelled => "Cancelled",
    }
}

/// Every phase name, for validating filters.
pub const PHASES: [&str; 7] = [
    "Pending",
    "Planning",
    "AwaitingApproval",
    "Running",
    "Succeeded",
    "Failed",
    "Cancelled",
];

impl RunSummary {
    /// The summary of a live AgentRun (or of one about to be archived: `report` then counts
    /// the steps). `None` when the object lacks what every run has (uid, namespace, creation
    /// time): such an object did not come from the apiserver.
    pub fn from_run(run: &AgentRun, report: Option<&RunReport>) -> Option<Self> {
        let meta = &run.metadata;
        let status = run.status.clone().unwrap_or_default();
        let plan_len = run
            .spec
            .plan
            .as_ref()
            .or(status.plan.as_ref())
            .map(|p| p.steps.len());
        let steps_total = plan_len.unwrap_or(status.steps.len());
        let succeeded = match report {
            Some(r) => r
                .steps
                .iter()
                .filter(|s| s.phase == StepPhase::Succeeded)
                .count(),
            None => status
                .steps
                .iter()
                .filter(|s| s.phase == StepPhase::Succeeded)
                .count(),
        };
        let usage = status.usage.unwrap_or_default();
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Some(Self {
            uid: meta.uid.clone()?,
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            phase: phase_name(status.phase.unwrap_or_default()).to_owned(),
            source: "live".to_owned(),
            created_at: meta.creation_timestamp.clone()?,
            started_at: status.started_at.clone(),
            finished_at: status.finished_at.clone(),
            archived_at: None,
            prompt: run
                .spec
                .prompt
                .as_deref()
                .map(|p| truncate(p, SUMMARY_PROMPT_BYTES)),
            plan_source: status
                .plan_source
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_owned)),
            worker_pool: run.spec.worker_pool.clone(),
            steps_total: i32::try_from(steps_total).unwrap_or(i32::MAX),
            steps_succeeded: i32::try_from(succeeded).unwrap_or(i32::MAX),
            error: status
                .error
                .as_deref()
                .map(|e| truncate(e, SUMMARY_ERROR_BYTES)),
            usage: Usage {
                total_tokens: count(usage.total_tokens),
                llm_calls: count(usage.llm_calls),
                tool_calls: count(usage.tool_calls),
            },
        })
    }
}

impl RunRecord {
    /// What the archive keeps of `run`, with the engine's `report` (full outputs) when Redis
    /// still had it.
    pub fn from_run(run: &AgentRun, report: Option<&RunReport>) -> Result<Self, ArchiveError> {
        let mut summary = RunSummary::from_run(run, report).ok_or_else(|| {
            ArchiveError::InvalidRun(
                "the AgentRun has no uid, namespace, name or creationTimestamp".into(),
            )
        })?;
        summary.source = "archived".to_owned();
        let json = |what: &str, v: Result<Value, serde_json::Error>| {
            v.map_err(|e| ArchiveError::InvalidRun(format!("cannot serialise the {what}: {e}")))
        };
        let status = run.status.clone().unwrap_or_default();
        let report_json = report
            .map(|r| json("engine report", serde_json::to_value(r)))
            .transpose()?;
        let result = report
            .and_then(|r| r.result.clone())
            .or_else(|| status.result.clone());
        Ok(Self {
            summary,
            full_prompt: run.spec.prompt.clone(),
            labels: label_map(run.metadata.labels.as_ref()),
            spec: json("spec", serde_json::to_value(&run.spec))?,
            status: json("status", serde_json::to_value(&status))?,
            report: report_json,
            result,
        })
    }
}

mod kube_like {
    //! Labels as a JSON object (`{}` when there are none).
    use std::collections::BTreeMap;

    use serde_json::Value;

    pub fn label_map(labels: Option<&BTreeMap<String, String>>) -> Value {
        Value::Object(
            labels
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crane_core::run::{RunPhase, StepReport};
    use serde_json::json;

    fn run() -> AgentRun {
        serde_json::from_value(json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": "sums", "namespace": "team-a", "uid": "u-1",
                         "creationTimestamp": "2026-11-26T18:57:19Z", "labels": {"app": "x"}},
            "spec": {"prompt": "p".repeat(1000), "plan": {"steps": [
                {"id": 1, "tool": "calculator", "input": {"expression": "1+1"}},
                {"id": 2, "tool": "calculator", "input": {"expression": "2+2"}, "dependsOn": [1]}]}},
            "status": {"phase": "Succeeded", "planSource": "spec", "result": {"truncated": true},
                       "steps": [{"id": 1, "tool": "calculator", "phase": "Succeeded", "attempts": 1},
                                 {"id": 2, "tool": "calculator", "phase": "Succeeded", "attempts": 2}],
                       "usage": {"totalTokens": 12, "llmCalls": 1, "toolCalls": 2},
                       "finishedAt": "2026-11-26T18:57:20Z"}
        }))
        .expect("fixture")
    }

    #[test]
    fn a_record_keeps_the_report_full_and_the_summary_short() {
        let report = RunReport {
            phase: RunPhase::Succeeded,
            steps: vec![StepReport {
                id: 1,
                tool: "calculator".into(),
                phase: StepPhase::Succeeded,
                attempts: 1,
                output: Some(json!("x".repeat(5000))),
                ..StepReport::default()
            }],
            result: Some(json!("x".repeat(5000))),
            error: None,
            spending: Default::default(),
            budget_exceeded: None,
        };
        let r = RunRecord::from_run(&run(), Some(&report)).expect("record");
        assert_eq!(r.summary.source, "archived");
        assert_eq!(r.summary.phase, "Succeeded");
        assert_eq!(r.summary.plan_source.as_deref(), Some("spec"));
        assert_eq!((r.summary.steps_total, r.summary.steps_succeeded), (2, 1));
        assert_eq!(r.summary.usage.total_tokens, 12);
        assert!(
            r.summary
                .prompt
                .as_ref()
                .is_some_and(|p| p.len() <= SUMMARY_PROMPT_BYTES)
        );
        assert_eq!(r.full_prompt.as_ref().map(String::len), Some(1000));
        assert_eq!(r.result, Some(json!("x".repeat(5000))));
        assert_eq!(r.labels, json!({"app": "x"}));
        assert_eq!(
            r.report
                .as_ref()
                .and_then(|v| v["steps"][0]["output"].as_str())
                .map(str::len),
            Some(5000)
        );
    }

    #[test]
    fn without_a_report_the_status_is_what_is_kept() {
        let r = RunRecord::from_run(&run(), None).expect("record");
        assert_eq!(r.report, None);
        assert_eq!(r.result, Some(json!({"truncated": true})));
        assert_eq!(r.summary.steps_succeeded, 2);
    }

    #[test]
    fn an_object_without_uid_is_refused_not_archived_half() {
        let mut bad = run();
        bad.metadata.uid = None;
        assert!(matches!(
            RunRecord::from_run(&bad, None),
            Err(ArchiveError::InvalidRun(_))
        ));
        let mut live = run();
        live.status = None;
        let s = RunSummary::from_run(&live, None).expect("summary");
        assert_eq!((s.phase.as_str(), s.source.as_str()), ("Pending", "live"));
    }
}
