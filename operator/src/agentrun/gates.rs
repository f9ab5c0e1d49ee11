//! A run's approval gates in Kubernetes: one `Approval` per step the engine holds in
//! WaitingForApproval (`<run>-step-<id>`), created with what the approver is shown, and the
//! decisions people write into them (or a timeout's) applied to the engine exactly once.
//! Decisions live in the Approval objects, so one made while the operator is down is applied
//! when it returns; gates live in Redis, so nothing here needs to remember anything.

use std::time::Duration;

use crane_core::run::{Gate, OnTimeout, RunReport, StepPhase};
use crane_engine::RunKeys;
use crane_engine::api::{Decided, Decision};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};
use redis::aio::ConnectionManager;
use serde_json::json;
use tracing::info;

use super::cluster::Cluster;
use super::error::{Error, engine_err};
use crane_api::{AgentRun, Approval, ApprovalSpec, ApprovalStatus, Decision as Choice, Outcome};

/// Label of an Approval: the name of the AgentRun it belongs to.
pub const LABEL_RUN: &str = "crane.dev/run";

/// The Approval of step `step` of run `run`.
pub fn step_approval_name(run: &str, step: u32) -> String {
    format!("{run}-step-{step}")
}

/// The Approval for a waiting step, owned by its run.
pub fn step_approval(run: &AgentRun, step: u32, gate: &Gate) -> Option<Approval> {
    let name = run.name_any();
    let details = match (&gate.tool, &gate.input) {
        (Some(tool), input) => Some(json!({"tool": tool, "input": input})),
        (None, _) => None,
    };
    Some(Approval {
        metadata: ObjectMeta {
            name: Some(step_approval_name(&name, step)),
            namespace: run.metadata.namespace.clone(),
            labels: Some([(LABEL_RUN.to_owned(), name.clone())].into()),
            owner_references: Some(vec![run.controller_owner_ref(&())?]),
            ..ObjectMeta::default()
        },
        spec: ApprovalSpec {
            run: name,
            step_id: Some(step),
            message: crane_core::text::truncate(&gate.message, 4096),
            approvers: gate.approvers.clone(),
            details,
            decision: None,
            decided_by: None,
            comment: None,
        },
        status: None,
    })
}

/// What became of one gate in this pass, for the run's Events.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub approval: String,
    pub outcome: Outcome,
    pub note: String,
}

/// Creates the Approvals of newly waiting steps, applies decisions and timeouts to the
/// engine, and records each outcome in its Approval's status. Returns what was applied and
/// when the next timeout falls due.
pub async fn sync<C: Cluster>(
    run: &AgentRun,
    report: &RunReport,
    cluster: &C,
    redis: &mut ConnectionManager,
    keys: &RunKeys,
    now: &Time,
) -> Result<(Vec<Applied>, Option<Duration>), Error> {
    let ns = run.namespace().unwrap_or_default();
    let waiting: Vec<(u32, &Gate)> = report
        .steps
        .iter()
        .filter(|s| s.phase == StepPhase::WaitingForApproval)
        .filter_map(|s| Some((s.id, s.gate.as_ref()?)))
        .collect();
    let approvals = cluster.approvals(&ns, &run.name_any()).await?;
    let mut applied = Vec::new();
    let mut next: Option<Duration> = None;
    for (step, gate) in &waiting {
        let name = step_approval_name(&run.name_any(), *step);
        let Some(approval) = approvals.iter().find(|a| a.name_any() == name) else {
            if let Some(a) = step_approval(run, *step, gate) {
                cluster.create_approval(&a).await?;
                info!(approval = %name, "step waits for approval");
            }
            let left = Duration::from_secs(gate.timeout_seconds);
            next = Some(next.map_or(left, |n| n.min(left)));
            continue;
        };
        if approval.status.as_ref().and_then(|s| s.outcome).is_some() {
            // Applied before; the engine's step will have moved (or the run was rebuilt
            // from an older status): deciding again would find nothing waiting.
            continue;
        }
        let (decision, outcome, note) = match decision_of(approval) {
            Some(d) => d,
            None => {
                let waited = gate
                    .since
                    .as_deref()
                    .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                    .map(|since| now.0.duration_since(since).as_secs().max(0) as u64)
                    .unwrap_or(0);
                if waited < gate.timeout_seconds {
                    let left = Duration::from_secs(gate.timeout_seconds - waited);
                    next = Some(next.map_or(left, |n| n.min(left)));
                    continue;
                }
                timed_out(gate)
            }
        };
        match crane_engine::api::decide(redis, keys, *step, &decision)
            .await
            .map_err(engine_err("applying an approval decision"))?
        {
            Decided::Applied(_) | Decided::NotWaiting(_) => {}
        }
        cluster
            .approval_status(
                &ns,
                &name,
                &ApprovalStatus {
                    decided_at: Some(now.clone()),
                    outcome: Some(outcome),
                },
            )
            .await?;
        info!(approval = %name, ?outcome, "approval applied");
        applied.push(Applied {
            approval: name,
            outcome,
            note,
        });
    }
    Ok((applied, next))
}

/// The decision a person wrote into `approval`, if any.
fn decision_of(approval: &Approval) -> Option<(Decision, Outcome, String)> {
    let spec = &approval.spec;
    let by = spec.decided_by.clone().unwrap_or_else(|| "unknown".into());
    let comment = spec.comment.clone().filter(|c| !c.trim().is_empty());
    let said = comment
        .as_deref()
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    match spec.decision? {
        Choice::Approved => Some((
            Decision::Approve {
                by: by.clone(),
                comment,
            },
            Outcome::Approved,
            format!("{} approved by {by}{said}", approval.name_any()),
        )),
        Choice::Rejected => Some((
            Decision::Reject {
                by: by.clone(),
                comment,
            },
            Outcome::Rejected,
            format!("{} rejected by {by}{said}", approval.name_any()),
        )),
    }
}

/// What a gate's timeout decides.
fn timed_out(gate: &Gate) -> (Decision, Outcome, String) {
    let comment = Some(format!(
        "no decision within {} s (onTimeout {:?})",
        gate.timeout_seconds, gate.on_timeout
    ));
    let note = comment.clone().unwrap_or_default();
    let decision = match gate.on_timeout {
        OnTimeout::Approve => Decision::Approve {
            by: "timeout".into(),
            comment,
        },
        OnTimeout::Reject => Decision::Reject {
            by: "timeout".into(),
            comment,
        },
    };
    (decision, Outcome::TimedOut, note)
}

/// Deletes the run's Approvals nobody decided (a cancelled or finished run waits for none).
pub async fn close_open<C: Cluster>(run: &AgentRun, cluster: &C) -> Result<(), Error> {
    let ns = run.namespace().unwrap_or_default();
    for a in cluster.approvals(&ns, &run.name_any()).await? {
        if a.spec.decision.is_none() && a.status.as_ref().and_then(|s| s.outcome).is_none() {
            cluster.delete_approval(&ns, &a.name_any()).await?;
        }
    }
    Ok(())
}

/// The Approval of run `run`'s whole plan.
pub fn plan_approval_name(run: &str) -> String {
    format!("{run}-plan")
}

/// The Approval for a run's plan (`spec.approval.plan`): the steps, their tools and order.
pub fn plan_approval(run: &AgentRun, plan: &crane_core::plan::Plan) -> Option<Approval> {
    let name = run.name_any();
    let mut tools: Vec<&str> = plan.steps.iter().map(|s| s.tool.as_str()).collect();
    tools.sort_unstable();
    tools.dedup();
    let steps: Vec<serde_json::Value> = plan
        .steps
        .iter()
        .take(100)
        .map(|s| json!({"id": s.id, "tool": s.tool, "dependsOn": s.depends_on}))
        .collect();
    Some(Approval {
        metadata: ObjectMeta {
            name: Some(plan_approval_name(&name)),
            namespace: run.metadata.namespace.clone(),
            labels: Some([(LABEL_RUN.to_owned(), name.clone())].into()),
            owner_references: Some(vec![run.controller_owner_ref(&())?]),
            ..ObjectMeta::default()
        },
        spec: ApprovalSpec {
            run: name.clone(),
            step_id: None,
            message: crane_core::text::truncate(
                &format!(
                    "Run the plan of AgentRun {name}: {} step(s) using {}",
                    plan.steps.len(),
                    tools.join(", ")
                ),
                4096,
            ),
            approvers: Vec::new(),
            details: Some(json!({"steps": steps, "stepCount": plan.steps.len()})),
            decision: None,
            decided_by: None,
            comment: None,
        },
        status: None,
    })
}

/// Where a run's plan approval stands.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanGate {
    /// Approved: the run may start.
    Approved,
    /// Nobody decided yet (the Approval exists now).
    Open,
    /// Rejected, with the note for status and Event.
    Rejected(String),
}

/// The plan's Approval: created when missing, its decision recorded (and an Event published)
/// the first time it is seen.
pub async fn plan_gate<C: Cluster>(
    run: &AgentRun,
    plan: &crane_core::plan::Plan,
    cluster: &C,
    now: &Time,
) -> Result<PlanGate, Error> {
    let ns = run.namespace().unwrap_or_default();
    let name = plan_approval_name(&run.name_any());
    let approvals = cluster.approvals(&ns, &run.name_any()).await?;
    let Some(approval) = approvals.iter().find(|a| a.name_any() == name) else {
        if let Some(a) = plan_approval(run, plan) {
            cluster.create_approval(&a).await?;
            info!(approval = %name, "plan waits for approval");
        }
        return Ok(PlanGate::Open);
    };
    let Some((_, outcome, note)) = decision_of(approval) else {
        return Ok(PlanGate::Open);
    };
    if approval.status.as_ref().and_then(|s| s.outcome).is_none() {
        cluster
            .approval_status(
                &ns,
                &name,
                &ApprovalStatus {
                    decided_at: Some(now.clone()),
                    outcome: Some(outcome),
                },
            )
            .await?;
        let (warning, reason) = match outcome {
            Outcome::Approved => (false, "Approved"),
            _ => (true, "Rejected"),
        };
        cluster.event(run, warning, reason, &note).await;
    }
    Ok(match outcome {
        Outcome::Approved => PlanGate::Approved,
        _ => PlanGate::Rejected(note),
    })
}
