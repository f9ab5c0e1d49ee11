//! A run's root span, built from the AgentRun when it reaches a terminal phase: from
//! `metadata.creationTimestamp` to `status.finishedAt`, under the trace and span id derived
//! from the run's uid that its planner and step spans already name as their parent
//! (`crane_telemetry::run_traceparent`). Built here without a client, reported by the status
//! writer once per run.

use std::time::SystemTime;

use crane_api::{AgentRun, AgentRunPhase, AgentRunStatus};
use crane_telemetry::{KeyValue, RootSpan};
use kube::ResourceExt;

use super::status::phase_label;

/// The root span of a run whose `status` is terminal; `None` for a live run, an object
/// without uid or creation time, or a run that already ended once (a retried run keeps its
/// first root span, and its later attempts join the same trace).
pub fn root_span(run: &AgentRun, status: &AgentRunStatus) -> Option<RootSpan> {
    let phase = status.phase.filter(|p| p.is_terminal())?;
    if status.retry_token.is_some() {
        return None;
    }
    let uid = run.metadata.uid.as_deref()?;
    let start = SystemTime::from(run.metadata.creation_timestamp.as_ref()?.0);
    let end = status
        .finished_at
        .as_ref()
        .map_or_else(SystemTime::now, |t| SystemTime::from(t.0))
        .max(start);
    let (trace_id, span_id) = crane_telemetry::context::run_ids(uid);
    let mut attributes = vec![
        KeyValue::new("run", run.name_any()),
        KeyValue::new("namespace", run.namespace().unwrap_or_default()),
        KeyValue::new("uid", uid.to_owned()),
        KeyValue::new("phase", phase_label(phase)),
        KeyValue::new("worker_pool", run.spec.worker_pool.clone()),
    ];
    if let Some(progress) = &status.progress {
        attributes.push(KeyValue::new("progress", progress.clone()));
    }
    if let Some(source) = status.plan_source {
        attributes.push(KeyValue::new(
            "plan_source",
            format!("{source:?}").to_lowercase(),
        ));
    }
    Some(RootSpan {
        name: "agentrun".to_owned(),
        trace_id,
        span_id,
        start,
        end,
        attributes,
        error: (phase == AgentRunPhase::Failed).then(|| {
            status
                .error
                .clone()
                .unwrap_or_else(|| "run failed".to_owned())
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run() -> AgentRun {
        serde_json::from_value(json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": "milk", "namespace": "team-a",
                         "uid": "9b2c1e4a-57d1-4c0b-9a57-3f1d2e8c7b60",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"prompt": "x"}
        }))
        .expect("fixture")
    }

    fn status(v: serde_json::Value) -> AgentRunStatus {
        serde_json::from_value(v).expect("fixture status")
    }

    #[test]
    fn a_finished_run_spans_creation_to_finish_under_the_ids_its_steps_name() {
        let s = status(
            json!({"phase": "Failed", "error": "step 2 (calculator) failed: x",
                              "finishedAt": "2026-01-01T00:00:05Z", "progress": "1/2"}),
        );
        let root = root_span(&run(), &s).expect("terminal");
        let took = root.end.duration_since(root.start).expect("ordered");
        assert_eq!(took.as_secs(), 5);
        let tp = crane_telemetry::run_traceparent("9b2c1e4a-57d1-4c0b-9a57-3f1d2e8c7b60");
        assert_eq!(
            tp,
            format!("00-{}-{}-01", root.trace_id, root.span_id),
            "the root is the parent the run's other spans point at"
        );
        assert_eq!(root.error.as_deref(), Some("step 2 (calculator) failed: x"));
        let attr = |k: &str| {
            root.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attr("run").as_deref(), Some("milk"));
        assert_eq!(attr("phase").as_deref(), Some("Failed"));
        assert_eq!(attr("namespace").as_deref(), Some("team-a"));
    }

    #[test]
    fn live_or_retried_runs_have_no_root_yet() {
        assert!(root_span(&run(), &status(json!({"phase": "Running"}))).is_none());
        let retried = status(json!({"phase": "Succeeded", "retryToken": "1"}));
        assert!(root_span(&run(), &retried).is_none());
        let ok = root_span(&run(), &status(json!({"phase": "Succeeded"}))).expect("root");
        assert!(ok.error.is_none());
    }
}
