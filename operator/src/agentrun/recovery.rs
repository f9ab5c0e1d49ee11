//! Recovery of runs whose engine state was lost or ended in failure, from what the AgentRun
//! itself keeps:
//!
//! - **Redis lost the run** (a restart without persistence): a Running run is rebuilt from
//!   its status with [`restore_run`] — steps the status shows Succeeded keep their outputs
//!   and attempts and do not run again; the rest is queued once its dependencies are done.
//!   Status outputs are truncated (see `crane_api::truncate_json`): a step whose mirrored
//!   output is a `{"truncated": true, ...}` stub cannot be restored faithfully, so it runs
//!   again (tools with side effects are idempotent per run and step, `todo_store.add`
//!   included); a stub is never fed into a later step's variables.
//! - **Retry from failure**: setting the annotation [`RETRY_ANNOTATION`] (`crane.dev/retry`)
//!   on a Failed run to a new value (any token, e.g. a timestamp) re-runs its Failed and
//!   Skipped steps with a fresh attempt budget, keeping the completed steps and their outputs
//!   (from Redis, or from the status when Redis lost them); the phase goes back to Running
//!   and activeDeadlineSeconds counts again from the retry. The value handled last is kept
//!   in `status.retryToken`, so re-applying the same manifest does not retry again. A run
//!   that failed before any step ran (invalid plan, planner failure) cannot be retried: the
//!   token is recorded and the operator logs why.

use std::collections::BTreeMap;

use crane_core::plan::{Plan, StepId};
use crane_core::run::{RunPhase, StepPhase};
use crane_engine::EngineConfig;
use crane_engine::api::{InitOutcome, run_report};
use crane_engine::{
    EngineError, PoolName, RestoredStep, RetryOutcome, RunKeys, restore_run, retry_run,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use redis::aio::ConnectionManager;
use serde_json::Value;
use tracing::{info, warn};

use super::build;
use super::error::{Error, engine_err};
use crane_api::{AgentRun, AgentRunPhase, AgentRunStatus, CONDITION_COMPLETE, CONDITION_FAILED};
use crane_core::text::{prefix, truncate};

/// Annotation that asks for a retry of a Failed run; its value is any new token.
pub const RETRY_ANNOTATION: &str = "crane.dev/retry";
/// Condition reason while a retried run runs again.
pub const REASON_RETRYING: &str = "Retrying";
/// Tokens are compared and stored on their first this many bytes (status.retryToken's limit).
pub const MAX_RETRY_TOKEN_BYTES: usize = 253;

/// The retry token to act on: the annotation's value when it is non-blank and differs from
/// the last one handled (compared on its first [`MAX_RETRY_TOKEN_BYTES`] bytes).
pub fn retry_requested(run: &AgentRun) -> Option<String> {
    let value = run.annotations().get(RETRY_ANNOTATION)?.trim();
    if value.is_empty() {
        return None;
    }
    let token = prefix(value, MAX_RETRY_TOKEN_BYTES).to_owned();
    let handled = run.status.as_ref().and_then(|s| s.retry_token.as_deref());
    (handled != Some(token.as_str())).then_some(token)
}

/// Whether a mirrored output is the stub `truncate_json` leaves for a large output.
pub fn is_truncated_stub(output: &Value) -> bool {
    output.get("truncated") == Some(&Value::Bool(true))
        && output.get("sizeBytes").is_some_and(Value::is_u64)
        && output.get("preview").is_some_and(Value::is_string)
}

/// The steps of `plan` that the status shows Succeeded with a complete output: what a rebuilt
/// run may keep. Steps with a truncated or missing output, and entries for steps the plan
/// does not have, are left out (those steps run again).
pub fn completed_from_status(
    status: &AgentRunStatus,
    plan: &Plan,
) -> BTreeMap<StepId, RestoredStep> {
    let ms = |t: &Option<Time>| {
        t.as_ref()
            .and_then(|t| u64::try_from(t.0.as_millisecond()).ok())
    };
    status
        .steps
        .iter()
        .filter(|s| s.phase == StepPhase::Succeeded)
        .filter(|s| plan.steps.iter().any(|p| p.id == s.id && p.tool == s.tool))
        .filter_map(|s| {
            let output = s.output.as_ref().filter(|o| !is_truncated_stub(o))?;
            Some((
                s.id,
                RestoredStep {
                    output: output.clone(),
                    attempts: s.attempts.max(1),
                    started_ms: ms(&s.started_at),
                    finished_ms: ms(&s.finished_at),
                },
            ))
        })
        .collect()
}

/// The status of a run that was retried and runs again: phase Running, error, result and
/// finishedAt cleared, Failed and Complete conditions False with reason Retrying, the
/// deadline counting from now, and the token recorded.
pub fn retrying(
    mut status: AgentRunStatus,
    run: &AgentRun,
    token: &str,
    now: &Time,
) -> AgentRunStatus {
    status.phase = Some(AgentRunPhase::Running);
    status.error = None;
    status.result = None;
    status.finished_at = None;
    status.started_at = Some(now.clone());
    status.retry_token = Some(token.to_owned());
    let message = format!(
        "retry requested ({RETRY_ANNOTATION}={})",
        truncate(token, 64)
    );
    for type_ in [CONDITION_FAILED, CONDITION_COMPLETE] {
        build::set_condition(
            &mut status.conditions,
            type_,
            false,
            REASON_RETRYING,
            &message,
            run.metadata.generation,
            now,
        );
    }
    status
}

/// The plan the run executes: the planner's (in status) or the user's.
fn plan_of(run: &AgentRun) -> Option<Plan> {
    run.status
        .as_ref()
        .and_then(|s| s.plan.clone())
        .or_else(|| run.spec.plan.clone())
}

/// What rebuilding a run in the engine needs from its namespace and the operator.
pub struct Namespace<'a> {
    pub engine: &'a EngineConfig,
    pub catalog: &'a crane_core::tool::Catalog,
    pub models: &'a [crane_core::model::ModelConfig],
}

/// Re-creates the run in Redis from its status (Redis lost it). Returns whether a plan was
/// there to rebuild from.
async fn rebuild_in_engine(
    run: &AgentRun,
    redis: &mut ConnectionManager,
    ns: &Namespace<'_>,
    keys: &RunKeys,
) -> Result<bool, Error> {
    let Some(plan) = plan_of(run) else {
        return Ok(false);
    };
    // The namespace's tools and Models as they are now (the run's originals went with Redis);
    // a step whose tool or Model is gone fails with that error when it runs.
    let options = build::run_options(
        run,
        &plan,
        ns.catalog,
        ns.models,
        None,
        // The same trace context the run started with (the operator's tracing is set once
        // per process).
        crane_telemetry::tracing_enabled(),
    )
    .unwrap_or_else(|_| build::spec_options(run, crane_telemetry::tracing_enabled()));
    let pool = PoolName::parse(&format!(
        "{}/{}",
        run.namespace().unwrap_or_default(),
        run.spec.worker_pool
    ))
    .map_err(engine_err("naming the run's pool"))?;
    let completed = completed_from_status(&run.status.clone().unwrap_or_default(), &plan);
    let outcome = restore_run(redis, keys, &pool, &plan, &options, &completed, ns.engine)
        .await
        .map_err(engine_err("rebuilding the run from its status"))?;
    match outcome {
        InitOutcome::Created => warn!(
            kept = completed.len(),
            steps = plan.steps.len(),
            "the run was missing from redis; rebuilt it from its status"
        ),
        InitOutcome::AlreadyExists => info!("the run reappeared in redis; nothing rebuilt"),
    }
    Ok(true)
}

/// Running, but Redis has no such run: rebuild it from the status and mirror the result.
pub async fn rebuild(
    run: &AgentRun,
    redis: &mut ConnectionManager,
    ns: &Namespace<'_>,
    keys: &RunKeys,
    now: &Time,
) -> Result<AgentRunStatus, Error> {
    if !rebuild_in_engine(run, redis, ns, keys).await? {
        return Ok(build::failed_early(
            run,
            build::REASON_PLANNER_FAILED,
            "the run is missing from redis and no plan is left to rebuild it from",
            now,
        ));
    }
    let report = run_report(redis, keys, crate::agentrun::OUTPUT_PREVIEW)
        .await
        .map_err(engine_err("reading the rebuilt run"))?;
    Ok(build::from_report(run, &report, false, now)?)
}

/// Failed, and a new retry token is set: re-run the failed and skipped steps.
pub async fn retry(
    run: &AgentRun,
    redis: &mut ConnectionManager,
    ns: &Namespace<'_>,
    keys: &RunKeys,
    token: &str,
    now: &Time,
) -> Result<AgentRunStatus, Error> {
    let old = run.status.clone().unwrap_or_default();
    if build::is_invalid_plan(&old) || plan_of(run).is_none() || !ran_steps(&old) {
        warn!(
            token,
            "retry requested, but the run failed before any step ran; recording the token only"
        );
        let mut status = old;
        status.retry_token = Some(token.to_owned());
        return Ok(status);
    }
    match retry_run(redis, keys, ns.engine).await {
        Ok(RetryOutcome::Retried { steps }) => info!(token, steps, "retrying the failed run"),
        // An earlier retry reached Redis but not the status: mirror what it became.
        Ok(RetryOutcome::NotFailed(phase)) => info!(token, ?phase, "the run was already retried"),
        Err(EngineError::RunNotFound(_)) => {
            rebuild_in_engine(run, redis, ns, keys).await?;
            info!(
                token,
                "retrying the failed run from its status (redis lost it)"
            );
        }
        Err(e) => return Err(engine_err("retrying the run")(e)),
    }
    let report = run_report(redis, keys, crate::agentrun::OUTPUT_PREVIEW)
        .await
        .map_err(engine_err("reading the retried run"))?;
    let mut status = build::from_report(run, &report, false, now)?;
    if report.phase == RunPhase::Running {
        status = retrying(status, run, token, now);
    } else {
        status.retry_token = Some(token.to_owned());
    }
    Ok(status)
}

/// Whether the run got as far as the engine (its status lists steps).
fn ran_steps(status: &AgentRunStatus) -> bool {
    !status.steps.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crane_api::StepStatus;
    use serde_json::json;

    fn run(annotation: Option<&str>, handled: Option<&str>) -> AgentRun {
        let mut v = json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": "r", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {"plan": {"steps": [
                {"id": 1, "tool": "calculator", "input": {"expression": "1"}},
                {"id": 2, "tool": "calculator", "input": {"expression": "{step_1_output}"}, "dependsOn": [1]}
            ]}},
            "status": {"phase": "Failed"}
        });
        if let Some(a) = annotation {
            v["metadata"]["annotations"] = json!({ RETRY_ANNOTATION: a });
        }
        if let Some(h) = handled {
            v["status"]["retryToken"] = json!(h);
        }
        serde_json::from_value(v).expect("fixture")
    }

    #[test]
    fn a_retry_is_requested_only_by_a_new_non_blank_token() {
        assert_eq!(retry_requested(&run(None, None)), None);
        assert_eq!(retry_requested(&run(Some(""), None)), None);
        assert_eq!(retry_requested(&run(Some("  \n"), None)), None);
        assert_eq!(
            retry_requested(&run(Some("t1"), None)).as_deref(),
            Some("t1")
        );
        assert_eq!(retry_requested(&run(Some("t1"), Some("t1"))), None);
        assert_eq!(retry_requested(&run(Some(" t1 "), Some("t1"))), None);
        assert_eq!(
            retry_requested(&run(Some("t2"), Some("t1"))).as_deref(),
            Some("t2")
        );
    }

    #[test]
    fn hostile_tokens_are_cut_to_the_status_limit_at_a_character_boundary() {
        let long = "é".repeat(10_000);
        let token = retry_requested(&run(Some(&long), None)).expect("requested");
        assert!(token.len() <= MAX_RETRY_TOKEN_BYTES);
        assert!(token.len() >= MAX_RETRY_TOKEN_BYTES - 1);
        assert!(token.chars().all(|c| c == 'é'));
        // Once handled, the same long value does not trigger again.
        assert_eq!(retry_requested(&run(Some(&long), Some(&token))), None);
        let odd = "\u{0}{}\"'; DROP|x";
        assert_eq!(retry_requested(&run(Some(odd), None)).as_deref(), Some(odd));
    }

    fn step(id: StepId, tool: &str, phase: StepPhase, output: Option<Value>) -> StepStatus {
        serde_json::from_value(json!({
            "id": id, "tool": tool, "phase": phase, "attempts": 2, "output": output,
            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01.500Z"
        }))
        .expect("fixture")
    }

    #[test]
    fn only_complete_outputs_of_succeeded_plan_steps_are_restored() {
        let r = run(None, None);
        let plan = r.spec.plan.clone().expect("plan");
        let big = json!("x".repeat(100_000));
        let stub = crane_api::truncate_json(&big, 100);
        assert!(is_truncated_stub(&stub), "{stub}");
        let status = |steps: Vec<StepStatus>| AgentRunStatus {
            steps,
            ..AgentRunStatus::default()
        };
        let kept = completed_from_status(
            &status(vec![
                step(1, "calculator", StepPhase::Succeeded, Some(json!(1))),
                step(2, "calculator", StepPhase::Failed, None),
            ]),
            &plan,
        );
        assert_eq!(kept.keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(kept[&1].output, json!(1));
        assert_eq!(kept[&1].attempts, 2);
        assert_eq!(kept[&1].finished_ms, Some(1_767_225_601_500));
        // A truncated stub, a missing output, a step not in the plan or with another tool:
        // none may be fed to later steps.
        for steps in [
            vec![step(
                1,
                "calculator",
                StepPhase::Succeeded,
                Some(stub.clone()),
            )],
            vec![step(1, "calculator", StepPhase::Succeeded, None)],
            vec![step(7, "calculator", StepPhase::Succeeded, Some(json!(1)))],
            vec![step(1, "wait", StepPhase::Succeeded, Some(json!(1)))],
            vec![step(1, "calculator", StepPhase::Running, Some(json!(1)))],
        ] {
            assert!(
                completed_from_status(&status(steps.clone()), &plan).is_empty(),
                "{steps:?}"
            );
        }
        // An output that merely mentions "truncated" is a real output.
        let real = json!({"truncated": true, "note": "user data"});
        assert!(!is_truncated_stub(&real));
        let kept = completed_from_status(
            &status(vec![step(
                1,
                "calculator",
                StepPhase::Succeeded,
                Some(real.clone()),
            )]),
            &plan,
        );
        assert_eq!(kept[&1].output, real);
    }

    #[test]
    fn a_retried_status_is_running_again_with_failure_cleared_and_the_token_kept() {
        let r = run(Some("t1"), None);
        let then = Time("2026-01-01T00:00:00Z".parse().expect("time"));
        let now = Time("2026-01-02T00:00:00Z".parse().expect("time"));
        let mut failed = AgentRunStatus {
            phase: Some(AgentRunPhase::Failed),
            error: Some("step 2 failed".into()),
            finished_at: Some(then.clone()),
            started_at: Some(then.clone()),
            ..AgentRunStatus::default()
        };
        build::set_condition(
            &mut failed.conditions,
            CONDITION_FAILED,
            true,
            build::REASON_STEP_FAILED,
            "step 2 failed",
            Some(1),
            &then,
        );
        let s = retrying(failed, &r, "t1", &now);
        assert_eq!(s.phase, Some(AgentRunPhase::Running));
        assert_eq!((s.error, s.finished_at), (None, None));
        assert_eq!(s.started_at, Some(now.clone()));
        assert_eq!(s.retry_token.as_deref(), Some("t1"));
        let failed_cond = build::condition(
            &AgentRunStatus {
                conditions: s.conditions.clone(),
                ..AgentRunStatus::default()
            },
            CONDITION_FAILED,
        )
        .cloned()
        .expect("Failed condition");
        assert_eq!(
            (failed_cond.status.as_str(), failed_cond.reason.as_str()),
            ("False", REASON_RETRYING)
        );
        assert!(
            s.conditions
                .iter()
                .any(|c| c.type_ == CONDITION_COMPLETE && c.status == "False")
        );
    }
}
