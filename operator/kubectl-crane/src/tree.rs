//! The run as `watch` shows it: a pure model built from the AgentRun, its Approvals and the
//! current time — steps in an order that follows the DAG, each with its depth, phase,
//! attempts, duration, usage and one detail (error, waiting reason or output), and the run's
//! approvals with their state. Every text in it is [`clean`]ed and bounded, so the renderers
//! only lay it out.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crane_api::{Approval, Decision, Outcome, RunUsage, StepUsage};
use crane_core::plan::Plan;
use crane_core::text::ELLIPSIS;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::text::{clean, fit, one_line};
use crate::view::{RunView, StepView};

/// Longest text kept for one detail (output, error, message, result); the renderers cut it
/// further to the terminal's width.
pub const MAX_DETAIL_CHARS: usize = 512;

/// A run, ready to be laid out.
#[derive(Clone, Debug, PartialEq)]
pub struct Tree {
    pub name: String,
    pub namespace: String,
    pub phase: String,
    pub progress: Option<String>,
    /// From the run's start to its end, or to now while it runs.
    pub elapsed_ms: Option<u64>,
    pub pool: Option<String>,
    pub planner: Option<String>,
    pub model: Option<String>,
    /// spec.cancel is set but the run has not stopped yet.
    pub cancelling: bool,
    pub usage: Option<RunUsage>,
    /// The result (Succeeded) on one line.
    pub result: Option<String>,
    /// Why the run failed or was cancelled.
    pub error: Option<String>,
    pub steps: Vec<StepRow>,
    pub approvals: Vec<ApprovalRow>,
}

/// One step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRow {
    pub id: u32,
    pub tool: String,
    pub phase: String,
    pub attempts: u32,
    /// Length of the longest dependency chain above the step (0: it depends on nothing).
    pub depth: usize,
    pub depends_on: Vec<u32>,
    pub duration_ms: Option<u64>,
    pub usage: Option<StepUsage>,
    pub detail: Option<Detail>,
}

/// The one thing worth reading about a step besides its phase.
#[derive(Clone, Debug, PartialEq)]
pub enum Detail {
    /// What a succeeded step returned (truncated in status beyond 256 bytes).
    Output(String),
    /// Why it failed (or was skipped).
    Error(String),
    /// Why a step that could run waits (an approval, a breaker, a rate limit).
    Waiting(String),
}

/// One Approval of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalRow {
    pub name: String,
    /// None: the whole plan.
    pub step: Option<u32>,
    pub message: String,
    pub approvers: Vec<String>,
    pub state: ApprovalState,
}

/// Where an Approval stands.
#[derive(Clone, Debug, PartialEq)]
pub enum ApprovalState {
    /// Nobody decided yet.
    Open,
    /// Someone decided; the operator has not applied it yet.
    Decided {
        decision: Decision,
        by: String,
        comment: Option<String>,
    },
    /// The operator applied a decision or the timeout.
    Done {
        outcome: Outcome,
        by: Option<String>,
        comment: Option<String>,
    },
}

impl ApprovalRow {
    pub fn is_open(&self) -> bool {
        self.state == ApprovalState::Open
    }
}

/// The tree of `run` at time `now`, with those of `approvals` that belong to it.
pub fn build(run: &RunView, approvals: &[Approval], now: Timestamp) -> Tree {
    let status = run.status.clone().unwrap_or_default();
    let elapsed_ms = status
        .started_at
        .as_ref()
        .map(|start| millis_between(start, status.finished_at.as_ref(), now));
    let phase = clean(run.phase());
    let ending = run.ending();
    let text = |s: &str| fit(&clean(s), MAX_DETAIL_CHARS);
    Tree {
        name: run.name().to_owned(),
        namespace: run.metadata.namespace.clone().unwrap_or_default(),
        progress: status.progress.as_deref().map(text),
        elapsed_ms,
        pool: run.spec.worker_pool.as_deref().map(text),
        planner: status.plan_source.as_deref().map(text),
        model: run.spec.model.as_deref().map(text),
        cancelling: run.spec.cancel && ending.is_none(),
        usage: status.usage,
        result: status
            .result
            .as_ref()
            .filter(|_| ending.is_some())
            .map(|r| one_line(r, MAX_DETAIL_CHARS)),
        error: status.error.as_deref().map(text),
        steps: steps(run.plan(), &status.steps, now),
        approvals: approval_rows(run.name(), approvals),
        phase,
    }
}

/// Milliseconds from `start` to `end`, or to `now` when the end is not known yet.
fn millis_between(start: &Time, end: Option<&Time>, now: Timestamp) -> u64 {
    let end = end.map_or(now, |t| t.0);
    u64::try_from(end.as_millisecond() - start.0.as_millisecond()).unwrap_or(0)
}

/// The steps of the plan joined with their status entries (entries the plan does not know,
/// e.g. before the planner's plan reached the status, come after), in a DAG order that keeps
/// chains together: a topological order taking the lowest ready id first.
fn steps(plan: Option<&Plan>, reported: &[StepView], now: Timestamp) -> Vec<StepRow> {
    let by_id: HashMap<u32, &StepView> = reported.iter().map(|s| (s.id, s)).collect();
    let planned = plan.map(|p| p.steps.as_slice()).unwrap_or_default();
    let mut rows: Vec<StepRow> = Vec::with_capacity(planned.len().max(reported.len()));
    let order = dag_order(plan);
    for (index, depth) in order {
        let step = &planned[index];
        rows.push(row(
            step.id,
            &step.tool,
            depth,
            step.depends_on.clone(),
            by_id.get(&step.id).copied(),
            now,
        ));
    }
    let mut extra: Vec<&StepView> = reported
        .iter()
        .filter(|s| !planned.iter().any(|p| p.id == s.id))
        .collect();
    extra.sort_by_key(|s| s.id);
    extra.dedup_by_key(|s| s.id);
    for s in extra {
        rows.push(row(s.id, &s.tool, 0, Vec::new(), Some(s), now));
    }
    rows
}

fn row(
    id: u32,
    tool: &str,
    depth: usize,
    depends_on: Vec<u32>,
    status: Option<&StepView>,
    now: Timestamp,
) -> StepRow {
    let text = |s: &str| fit(&clean(s), MAX_DETAIL_CHARS);
    let Some(s) = status else {
        return StepRow {
            id,
            tool: text(tool),
            phase: "Pending".to_owned(),
            attempts: 0,
            depth,
            depends_on,
            duration_ms: None,
            usage: None,
            detail: None,
        };
    };
    let detail = if let Some(e) = s.error.as_deref().filter(|e| !e.is_empty()) {
        Some(Detail::Error(text(e)))
    } else if let Some(m) = s.message.as_deref().filter(|m| !m.is_empty()) {
        Some(Detail::Waiting(text(m)))
    } else {
        s.output.as_ref().map(|o| Detail::Output(output_text(o)))
    };
    StepRow {
        id,
        tool: text(tool),
        phase: text(&s.phase),
        attempts: s.attempts,
        depth,
        depends_on,
        duration_ms: s
            .started_at
            .as_ref()
            .map(|start| millis_between(start, s.finished_at.as_ref(), now)),
        usage: s.usage,
        detail,
    }
}

/// A step's output on one line. An output too large for the status is there as the
/// operator's stub `{"truncated": true, "sizeBytes": N, "preview": "..."}`; it shows as its
/// preview and its full size.
fn output_text(output: &Value) -> String {
    let stub = (
        output.get("truncated").and_then(Value::as_bool),
        output.get("sizeBytes").and_then(Value::as_u64),
        output.get("preview").and_then(Value::as_str),
    );
    match stub {
        (Some(true), Some(size), Some(preview))
            if output.as_object().is_some_and(|o| o.len() == 3) =>
        {
            let preview = one_line(&Value::String(preview.to_owned()), MAX_DETAIL_CHARS);
            format!("{preview}{ELLIPSIS} ({size} bytes; the status keeps a preview)")
        }
        _ => one_line(output, MAX_DETAIL_CHARS),
    }
}

/// (index into plan.steps, depth) for every step: a topological order taking the lowest
/// ready id first, depth the longest chain of dependencies above. Dependencies on missing
/// steps are ignored; steps on a cycle (an invalid plan the operator rejects) come last, at
/// depth 0, so an invalid plan still shows.
fn dag_order(plan: Option<&Plan>) -> Vec<(usize, usize)> {
    let Some(plan) = plan else {
        return Vec::new();
    };
    let steps = &plan.steps;
    let mut index: HashMap<u32, usize> = HashMap::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        index.entry(s.id).or_insert(i);
    }
    let mut waiting = vec![0usize; steps.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        for d in &s.depends_on {
            if let Some(&j) = index.get(d).filter(|&&j| j != i) {
                waiting[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut depth = vec![0usize; steps.len()];
    let mut ready: BinaryHeap<Reverse<(u32, usize)>> = (0..steps.len())
        .filter(|&i| waiting[i] == 0)
        .map(|i| Reverse((steps[i].id, i)))
        .collect();
    let mut done = vec![false; steps.len()];
    let mut order = Vec::with_capacity(steps.len());
    while let Some(Reverse((_, i))) = ready.pop() {
        done[i] = true;
        order.push((i, depth[i]));
        for &k in &dependents[i] {
            depth[k] = depth[k].max(depth[i] + 1);
            waiting[k] -= 1;
            if waiting[k] == 0 {
                ready.push(Reverse((steps[k].id, k)));
            }
        }
    }
    order.extend((0..steps.len()).filter(|&i| !done[i]).map(|i| (i, 0)));
    order
}

/// The run's Approvals, the whole plan's first, then by step.
fn approval_rows(run: &str, approvals: &[Approval]) -> Vec<ApprovalRow> {
    let text = |s: &str| fit(&clean(s), MAX_DETAIL_CHARS);
    let mut rows: Vec<ApprovalRow> = approvals
        .iter()
        .filter(|a| a.spec.run == run)
        .map(|a| {
            let by = a.spec.decided_by.as_deref().map(text);
            let comment = a.spec.comment.as_deref().map(text);
            let state = match (a.status.as_ref().and_then(|s| s.outcome), a.spec.decision) {
                (Some(outcome), _) => ApprovalState::Done {
                    outcome,
                    by,
                    comment,
                },
                (None, Some(decision)) => ApprovalState::Decided {
                    decision,
                    by: by.unwrap_or_default(),
                    comment,
                },
                (None, None) => ApprovalState::Open,
            };
            ApprovalRow {
                name: text(a.metadata.name.as_deref().unwrap_or_default()),
                step: a.spec.step_id,
                message: text(&a.spec.message),
                approvers: a.spec.approvers.iter().map(|s| text(s)).collect(),
                state,
            }
        })
        .collect();
    rows.sort_by(|a, b| (a.step, &a.name).cmp(&(b.step, &b.name)));
    rows
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A run of four steps in every interesting state, and its Approvals.
    use super::*;
    use serde_json::json;

    pub fn now() -> Timestamp {
        "2026-01-01T10:00:30Z".parse().unwrap()
    }

    pub fn run() -> RunView {
        serde_json::from_value(json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": "milk", "namespace": "team-a"},
            "spec": {
                "prompt": "Add a todo, ask, then clean up",
                "workerPool": "default",
                "model": "small",
            },
            "status": {
                "phase": "Running",
                "planSource": "llm",
                "progress": "2/5",
                "startedAt": "2026-01-01T10:00:00Z",
                "usage": {"promptTokens": 1200, "completionTokens": 34, "totalTokens": 1234,
                          "llmCalls": 2, "toolCalls": 3},
                "plan": {"steps": [
                    {"id": 1, "tool": "todo_store.add", "input": {"title": "Buy milk"}},
                    {"id": 2, "tool": "llm", "input": {"prompt": "summarise"}, "dependsOn": [1]},
                    {"id": 3, "tool": "approval", "input": {"message": "Delete?"}, "dependsOn": [2]},
                    {"id": 4, "tool": "todo_store.delete", "input": {"id": 1}, "dependsOn": [3]},
                    {"id": 5, "tool": "calculator", "input": {"expression": "1/0"}},
                ]},
                "steps": [
                    {"id": 1, "tool": "todo_store.add", "phase": "Succeeded", "attempts": 1,
                     "output": {"id": 1, "title": "Buy milk", "completed": false},
                     "startedAt": "2026-01-01T10:00:01Z", "finishedAt": "2026-01-01T10:00:01.250Z"},
                    {"id": 2, "tool": "llm", "phase": "Succeeded", "attempts": 2,
                     "output": "One todo: buy milk.\u{1b}[2J",
                     "usage": {"promptTokens": 1000, "completionTokens": 30},
                     "startedAt": "2026-01-01T10:00:02Z", "finishedAt": "2026-01-01T10:00:14Z"},
                    {"id": 3, "tool": "approval", "phase": "WaitingForApproval", "attempts": 0,
                     "message": "waiting for approval milk-step-3",
                     "startedAt": "2026-01-01T10:00:15Z"},
                    {"id": 5, "tool": "calculator", "phase": "Failed", "attempts": 1,
                     "error": "division by zero",
                     "startedAt": "2026-01-01T10:00:01Z", "finishedAt": "2026-01-01T10:00:01.100Z"},
                ],
            },
        }))
        .unwrap()
    }

    pub fn approvals() -> Vec<Approval> {
        serde_json::from_value(json!([
            {"apiVersion": "crane.dev/v1alpha1", "kind": "Approval",
             "metadata": {"name": "milk-step-3", "namespace": "team-a",
                          "creationTimestamp": "2026-01-01T10:00:15Z"},
             "spec": {"run": "milk", "stepId": 3, "message": "Delete all todos?\nReally?",
                      "approvers": ["alice", "ops"]}},
            {"apiVersion": "crane.dev/v1alpha1", "kind": "Approval",
             "metadata": {"name": "milk-plan", "namespace": "team-a",
                          "creationTimestamp": "2026-01-01T09:59:00Z"},
             "spec": {"run": "milk", "message": "Run this plan?", "decision": "Approved",
                      "decidedBy": "alice"},
             "status": {"outcome": "Approved", "decidedAt": "2026-01-01T09:59:50Z"}},
            {"apiVersion": "crane.dev/v1alpha1", "kind": "Approval",
             "metadata": {"name": "other-step-1", "namespace": "team-a",
                          "creationTimestamp": "2026-01-01T10:00:00Z"},
             "spec": {"run": "other", "stepId": 1, "message": "not this run's"}},
        ]))
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn joins_plan_and_status_in_dag_order() {
        let tree = build(&run(), &approvals(), now());
        let ids: Vec<(u32, usize, &str)> = tree
            .steps
            .iter()
            .map(|s| (s.id, s.depth, s.phase.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                (1, 0, "Succeeded"),
                (2, 1, "Succeeded"),
                (3, 2, "WaitingForApproval"),
                (4, 3, "Pending"),
                (5, 0, "Failed"),
            ]
        );
        assert_eq!(tree.elapsed_ms, Some(30_000));
        assert_eq!(tree.steps[0].duration_ms, Some(250));
        assert_eq!(
            tree.steps[2].duration_ms,
            Some(15_000),
            "running: until now"
        );
        assert_eq!(tree.steps[3].duration_ms, None);
        assert_eq!(
            tree.steps[0].detail,
            Some(Detail::Output(
                r#"{"completed":false,"id":1,"title":"Buy milk"}"#.into()
            ))
        );
        assert_eq!(
            tree.steps[1].detail,
            Some(Detail::Output("One todo: buy milk.\u{fffd}[2J".into())),
            "escape sequences from a model never reach the terminal"
        );
        assert_eq!(
            tree.steps[2].detail,
            Some(Detail::Waiting("waiting for approval milk-step-3".into()))
        );
        assert_eq!(
            tree.steps[4].detail,
            Some(Detail::Error("division by zero".into()))
        );
        assert_eq!(tree.result, None, "no result while running");
    }

    #[test]
    fn approvals_of_this_run_only_plan_first() {
        let tree = build(&run(), &approvals(), now());
        let names: Vec<&str> = tree.approvals.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["milk-plan", "milk-step-3"]);
        assert_eq!(
            tree.approvals[0].state,
            ApprovalState::Done {
                outcome: Outcome::Approved,
                by: Some("alice".into()),
                comment: None
            }
        );
        assert!(tree.approvals[1].is_open());
        assert_eq!(tree.approvals[1].message, "Delete all todos? Really?");
    }

    #[test]
    fn dag_order_survives_cycles_self_loops_and_missing_steps() {
        let plan: Plan = serde_json::from_value(json!({"steps": [
            {"id": 3, "tool": "a", "dependsOn": [4]},
            {"id": 4, "tool": "b", "dependsOn": [3]},
            {"id": 2, "tool": "c", "dependsOn": [2, 99]},
            {"id": 1, "tool": "d"},
            {"id": 1, "tool": "duplicate id"},
        ]}))
        .unwrap();
        let order = dag_order(Some(&plan));
        assert_eq!(order.len(), 5, "every step shows once");
        let ids: Vec<u32> = order.iter().map(|&(i, _)| plan.steps[i].id).collect();
        assert_eq!(ids, [1, 1, 2, 3, 4]);
    }

    #[test]
    fn a_truncated_output_shows_its_preview_and_size() {
        let stub = json!({"truncated": true, "sizeBytes": 70000, "preview": "{\"rows\":[1,2"});
        assert_eq!(
            output_text(&stub),
            "{\"rows\":[1,2… (70000 bytes; the status keeps a preview)"
        );
        // A tool's own output that merely looks alike is shown as it is.
        let own = json!({"truncated": true, "sizeBytes": 1, "preview": "x", "more": 1});
        assert_eq!(
            output_text(&own),
            r#"{"more":1,"preview":"x","sizeBytes":1,"truncated":true}"#
        );
    }

    #[test]
    fn a_wide_join_gets_the_depth_of_its_longest_chain() {
        let plan: Plan = serde_json::from_value(json!({"steps": [
            {"id": 1, "tool": "a"}, {"id": 2, "tool": "a", "dependsOn": [1]},
            {"id": 3, "tool": "a"}, {"id": 4, "tool": "a", "dependsOn": [2, 3]},
        ]}))
        .unwrap();
        let order = dag_order(Some(&plan));
        let got: Vec<(u32, usize)> = order.iter().map(|&(i, d)| (plan.steps[i].id, d)).collect();
        assert_eq!(got, [(1, 0), (2, 1), (3, 0), (4, 2)]);
    }

    #[test]
    fn a_finished_run_shows_its_result_and_steps_without_a_plan_still_show() {
        let run: RunView = serde_json::from_value(json!({
            "metadata": {"name": "r"},
            "spec": {"prompt": "x", "cancel": true},
            "status": {"phase": "Succeeded", "result": {"answer": 42},
                       "startedAt": "2026-01-01T10:00:00Z", "finishedAt": "2026-01-01T10:00:02Z",
                       "steps": [{"id": 7, "tool": "calculator", "phase": "Succeeded"}]},
        }))
        .unwrap();
        let tree = build(&run, &[], now());
        assert_eq!(tree.result.as_deref(), Some(r#"{"answer":42}"#));
        assert_eq!(tree.elapsed_ms, Some(2000));
        assert!(!tree.cancelling, "finished runs are not cancelling");
        assert_eq!(tree.steps.len(), 1);
        assert_eq!(tree.steps[0].id, 7);
    }
}
