//! Pure builders of the AgentRun controller: the planner Job, the run options, the status
//! after each event (planning, started, invalid plan, engine report, deadline…) and the
//! standard-form conditions. No client here; everything is unit tested with fixtures.

use std::collections::BTreeMap;

use crane_core::model::{Budget, ModelConfig, Usage};
use crane_core::plan::Plan;
use crane_core::run::{RunOptions, RunReport, StepPhase};
use crane_core::tool::Catalog;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use kube::Resource;

use crate::context::{Config, SecretKeyRef};
pub use crate::controller::set_condition;
use crate::pod::{hardened_pod, redis_credentials_env};
use crane_api::{
    AgentRun, AgentRunPhase, AgentRunStatus, ApiError, CONDITION_COMPLETE, CONDITION_FAILED,
    CONDITION_PLANNED, CONDITION_STATUS_TRUNCATED, CONDITION_WAITING, MAX_ERROR_BYTES,
    MAX_OBJECT_BYTES, MAX_RESULT_BYTES, REASON_BREAKER_OPEN, REASON_INVALID_PLAN,
    REASON_NOT_WAITING, REASON_STATUS_TOO_LARGE, StepStatus, truncate_json,
};
use crane_core::text::truncate;

/// Condition reasons the controller sets (besides [`REASON_INVALID_PLAN`]).
pub const REASON_PLANNER_FAILED: &str = "PlannerFailed";
pub const REASON_PLANNING: &str = "Planning";
pub const REASON_PLANNED: &str = "Planned";
pub const REASON_POOL_NOT_FOUND: &str = "WorkerPoolNotFound";
pub const REASON_MODEL_NOT_READY: &str = "ModelNotReady";
pub const REASON_DEADLINE: &str = "DeadlineExceeded";
pub const REASON_CANCELLED: &str = "Cancelled";
pub const REASON_STEP_FAILED: &str = "StepFailed";
pub const REASON_SUCCEEDED: &str = "Succeeded";
pub const REASON_REJECTED: &str = "Rejected";
pub const REASON_AWAITING_APPROVAL: &str = "AwaitingApproval";

/// Upper bound of the planner Job's own deadline, in seconds.
pub const MAX_PLANNER_SECONDS: u32 = 900;

/// Labels every object the operator creates for a run carries.
pub const LABEL_RUN_UID: &str = "crane.dev/run-uid";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";

/// Why a builder could not produce its object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("AgentRun has no {0} (not read from the apiserver?)")]
    MissingMetadata(&'static str),
}

/// The run id in the engine: the AgentRun's UID, so a name can be reused after deletion.
pub fn run_id(run: &AgentRun) -> Result<&str, BuildError> {
    run.metadata
        .uid
        .as_deref()
        .ok_or(BuildError::MissingMetadata("metadata.uid"))
}

/// The engine options a run's spec sets; when `traced`, the run's trace context (derived
/// from its uid, so it is the same whoever computes it, before or after a restart).
pub fn spec_options(run: &AgentRun, traced: bool) -> RunOptions {
    RunOptions {
        retry: run.spec.retry,
        step_timeout_ms: u64::from(run.spec.step_timeout_seconds).saturating_mul(1000),
        failure_policy: run.spec.failure_policy,
        model: run.spec.model.clone(),
        budget: run
            .spec
            .budget
            .map(|b| Budget {
                max_tokens: b.max_tokens,
                max_llm_calls: b.max_llm_calls,
                max_tool_calls: b.max_tool_calls,
            })
            .unwrap_or_default(),
        traceparent: run_traceparent(run, traced),
        ..RunOptions::default()
    }
}

/// The engine options of a run: its spec's, plus what its steps need from the namespace,
/// fixed for the run's life: the object-defined tools the plan uses (endpoints and Secret
/// references) and the Models its `llm` steps use. Err: why the plan cannot run here (an
/// `llm` step with no Model, or naming one that is not Ready). `planner_usage`: what the
/// planner's model call spent, which the budget counts too; `traced`: see [`spec_options`].
pub fn run_options(
    run: &AgentRun,
    plan: &Plan,
    catalog: &Catalog,
    models: &[ModelConfig],
    planner_usage: Option<Usage>,
    traced: bool,
) -> Result<RunOptions, String> {
    let mut options = RunOptions {
        planner_usage,
        ..spec_options(run, traced)
    };
    for step in &plan.steps {
        if step.tool == crane_core::builtins::LLM {
            let named = step.input.get("model").and_then(|m| m.as_str());
            let Some(name) = named.or(run.spec.model.as_deref()) else {
                return Err(format!(
                    "step {} (llm) names no model and spec.model is not set",
                    step.id
                ));
            };
            let Some(model) = models.iter().find(|m| m.name == name) else {
                return Err(format!(
                    "step {} (llm): Model {:?} does not exist in this namespace or is not Ready",
                    step.id,
                    truncate(name, 63)
                ));
            };
            if !options.models.iter().any(|m| m.name == name) {
                options.models.push(model.clone());
            }
        } else if let Some(spec) = catalog.get(&step.tool)
            && (spec.binding.is_some() || spec.requires_approval)
            && !options.tools.iter().any(|t| t.name == spec.name)
        {
            options.tools.push(spec.clone());
        }
    }
    Ok(options)
}

/// The `traceparent` of the run's root span, when `traced`.
pub fn run_traceparent(run: &AgentRun, traced: bool) -> Option<String> {
    let uid = run.metadata.uid.as_deref()?;
    traced.then(|| crane_telemetry::run_traceparent(uid))
}

/// The operator's `OTEL_*` settings as pod env.
pub fn telemetry_env(config: &Config) -> impl Iterator<Item = EnvVar> + '_ {
    config.telemetry.env.iter().map(|(k, v)| env(k, v.clone()))
}

/// 32-bit FNV-1a, for short stable name suffixes.
fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// `<run>-planner`, shortened with a hash when the run's name is long: Job names become a
/// label value (`job-name`), so they must stay within 63 characters.
pub fn planner_job_name(run_name: &str) -> String {
    const SUFFIX: &str = "-planner";
    if run_name.len() + SUFFIX.len() <= 63 {
        return format!("{run_name}{SUFFIX}");
    }
    let hash = format!("{:08x}", fnv32(run_name));
    // 63 = prefix + "-" + 8 + SUFFIX; names are ASCII (DNS subdomain), so any cut is a
    // character boundary; a cut must not end in '-' or '.'.
    let keep = 63 - SUFFIX.len() - 9;
    let prefix = run_name[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}{SUFFIX}")
}

fn controller_owner(run: &AgentRun) -> Result<OwnerReference, BuildError> {
    run.controller_owner_ref(&())
        .ok_or(BuildError::MissingMetadata("metadata.name or metadata.uid"))
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The planner Job of a run without spec.plan: `crane-executor plan --run-id`, which reads
/// the prompt and the namespace's catalog from Redis (byte for byte: never through the pod
/// spec, where Kubernetes would expand `$(...)` and refuse a NUL) and stores its outcome
/// there. With `model` (the run's spec.model) the LLM planner uses that Model and its key.
pub fn planner_job(
    run: &AgentRun,
    config: &Config,
    model: Option<&ModelConfig>,
) -> Result<Job, BuildError> {
    let name = run
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::MissingMetadata("metadata.name"))?;
    let uid = run_id(run)?;
    let mode = match run.spec.planner.mode {
        crane_core::plan::PlannerMode::Auto => "auto",
        crane_core::plan::PlannerMode::Rules => "rules",
        crane_core::plan::PlannerMode::Llm => "llm",
    };
    let ns = run
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::MissingMetadata("metadata.namespace"))?;
    let mut envs = redis_credentials_env();
    match model {
        // The Model's endpoint travels through Redis with the planner input; only its key
        // is the pod's, from the Model's Secret.
        Some(model) => {
            if let Some(key) = &model.api_key {
                let secret = SecretKeyRef {
                    name: key.name.clone(),
                    key: key.key.clone(),
                };
                envs.push(secret.env_var(crane_core::plan::ENV_API_KEY, true));
            }
        }
        None => {
            if let Some(url) = &config.llm_base_url {
                envs.push(env(crane_core::plan::ENV_BASE_URL, url.clone()));
            }
            if let Some(model) = &config.llm_model {
                envs.push(env(crane_core::plan::ENV_MODEL, model.clone()));
            }
            if let Some(secret) = &config.llm_api_key_secret {
                // Optional: a missing key lets the planner say clearly that the LLM is not
                // configured instead of the pod failing to start.
                envs.push(secret.env_var(crane_core::plan::ENV_API_KEY, true));
            }
        }
    }
    envs.extend(telemetry_env(config));
    if let Some(traceparent) = run_traceparent(run, config.telemetry.traced) {
        envs.push(env(crane_telemetry::ENV_TRACEPARENT, traceparent));
    }
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "crane".to_owned()),
        (LABEL_COMPONENT.to_owned(), "planner".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            crate::FIELD_MANAGER.to_owned(),
        ),
        (LABEL_RUN_UID.to_owned(), uid.to_owned()),
    ]);
    let quantity = |s: &str| Quantity(s.to_owned());
    let container = Container {
        name: "planner".to_owned(),
        image: Some(config.executor_image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        command: Some(
            [
                "crane-executor",
                "plan",
                "--planner",
                mode,
                "--run-id",
                uid,
                "--namespace",
                ns,
                "--redis",
                &config.redis_url,
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        env: Some(envs),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity("50m")),
                ("memory".to_owned(), quantity("64Mi")),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity("500m")),
                ("memory".to_owned(), quantity("256Mi")),
            ])),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(planner_job_name(name)),
            namespace: run.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![controller_owner(run)?]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(i64::from(
                run.spec.active_deadline_seconds.min(MAX_PLANNER_SECONDS),
            )),
            template: hardened_pod(labels, container),
            ..JobSpec::default()
        }),
        status: None,
    })
}

/// Whether a Job has failed for good (backoffLimit reached, or its deadline passed).
pub fn job_failed(job: &Job) -> Option<String> {
    let status = job.status.as_ref()?;
    let failed_condition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Failed" || c.type_ == "FailureTarget") && c.status == "True");
    match failed_condition {
        Some(c) => Some(format!(
            "{}{}",
            c.reason.as_deref().unwrap_or("Failed"),
            c.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )),
        None if status.failed.unwrap_or(0) > 0 && status.active.unwrap_or(0) == 0 => {
            Some("the planner pod failed".to_owned())
        }
        None => None,
    }
}

/// The condition `type_` of a run's status, if set.
pub fn condition<'a>(status: &'a AgentRunStatus, type_: &str) -> Option<&'a Condition> {
    crate::controller::condition(&status.conditions, type_)
}

/// Common start of every status the controller writes: the current one with the generation
/// it now describes.
fn base(run: &AgentRun) -> AgentRunStatus {
    let mut status = run.status.clone().unwrap_or_default();
    status.observed_generation = run.metadata.generation;
    status
}

/// Pending because the run's WorkerPool does not exist (yet).
pub fn pool_missing(run: &AgentRun, now: &Time) -> AgentRunStatus {
    let mut s = base(run);
    s.phase = Some(AgentRunPhase::Pending);
    let ns = run.metadata.namespace.as_deref().unwrap_or("");
    set_condition(
        &mut s.conditions,
        CONDITION_PLANNED,
        false,
        REASON_POOL_NOT_FOUND,
        &format!(
            "WorkerPool {:?} not found in namespace {ns:?}; the run starts when it exists",
            run.spec.worker_pool
        ),
        run.metadata.generation,
        now,
    );
    s
}

/// Pending because spec.model names a Model that does not exist or is not Ready (yet).
pub fn model_missing(run: &AgentRun, model: &str, now: &Time) -> AgentRunStatus {
    let mut s = base(run);
    s.phase = Some(AgentRunPhase::Pending);
    let ns = run.metadata.namespace.as_deref().unwrap_or("");
    set_condition(
        &mut s.conditions,
        CONDITION_PLANNED,
        false,
        REASON_MODEL_NOT_READY,
        &format!(
            "Model {model:?} is not Ready in namespace {ns:?} (kubectl get models); the run starts when it is"
        ),
        run.metadata.generation,
        now,
    );
    s
}

/// Planning: the planner Job was created.
pub fn planning(run: &AgentRun, job_name: &str, now: &Time) -> AgentRunStatus {
    let mut s = base(run);
    s.phase = Some(AgentRunPhase::Planning);
    s.started_at.get_or_insert_with(|| now.clone());
    set_condition(
        &mut s.conditions,
        CONDITION_PLANNED,
        false,
        REASON_PLANNING,
        &format!("planner Job {job_name} is planning the prompt"),
        run.metadata.generation,
        now,
    );
    s
}

/// Running: the plan passed validation and the run was initialised in the engine.
pub fn started(
    run: &AgentRun,
    plan: Option<crane_core::plan::Plan>,
    source: crane_core::plan::PlanSource,
    now: &Time,
) -> AgentRunStatus {
    let mut s = base(run);
    s.phase = Some(AgentRunPhase::Running);
    let steps = plan
        .as_ref()
        .or(run.spec.plan.as_ref())
        .map_or(0, |p| p.steps.len());
    s.plan = plan;
    s.plan_source = Some(source);
    s.progress = Some(format!("0/{steps}"));
    s.started_at.get_or_insert_with(|| now.clone());
    set_condition(
        &mut s.conditions,
        CONDITION_PLANNED,
        true,
        REASON_PLANNED,
        &format!("{steps} step(s), planned by {}", source_name(source)),
        run.metadata.generation,
        now,
    );
    s
}

/// Planned, waiting for the plan's Approval (`spec.approval.plan`): the plan is in status
/// (whatever planned it), and what the planner spent.
pub fn awaiting_approval(
    run: &AgentRun,
    plan: crane_core::plan::Plan,
    source: crane_core::plan::PlanSource,
    planner_usage: Option<Usage>,
    now: &Time,
) -> AgentRunStatus {
    let mut s = base(run);
    let steps = plan.steps.len();
    s.phase = Some(AgentRunPhase::AwaitingApproval);
    s.plan = Some(plan);
    s.plan_source = Some(source);
    s.progress = Some(format!("0/{steps}"));
    s.usage = planner_usage.map(|u| crane_api::RunUsage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total(),
        llm_calls: 1,
        tool_calls: 0,
    });
    set_condition(
        &mut s.conditions,
        CONDITION_PLANNED,
        true,
        REASON_AWAITING_APPROVAL,
        &format!(
            "{steps} step(s), planned by {}; waiting for Approval {}",
            source_name(source),
            super::gates::plan_approval_name(&kube::ResourceExt::name_any(run))
        ),
        run.metadata.generation,
        now,
    );
    s
}

fn source_name(source: crane_core::plan::PlanSource) -> &'static str {
    match source {
        crane_core::plan::PlanSource::Spec => "spec",
        crane_core::plan::PlanSource::Rules => "rules",
        crane_core::plan::PlanSource::Llm => "llm",
    }
}

/// Failed before any step ran (invalid plan, planner failure, bad pool name): `reason` on
/// both the Failed and the Planned condition, `message` in status.error.
pub fn failed_early(run: &AgentRun, reason: &str, message: &str, now: &Time) -> AgentRunStatus {
    let mut s = base(run);
    s.phase = Some(AgentRunPhase::Failed);
    s.error = Some(truncate(message, MAX_ERROR_BYTES * 4));
    s.started_at.get_or_insert_with(|| now.clone());
    s.finished_at.get_or_insert_with(|| now.clone());
    set_condition(
        &mut s.conditions,
        CONDITION_PLANNED,
        false,
        reason,
        message,
        run.metadata.generation,
        now,
    );
    ended_unsuccessfully(&mut s, reason, message, false, run.metadata.generation, now);
    s
}

/// Cancelled before any step ran (while Pending or Planning).
pub fn cancelled_early(run: &AgentRun, now: &Time) -> AgentRunStatus {
    let mut s = base(run);
    s.phase = Some(AgentRunPhase::Cancelled);
    s.error = Some("run cancelled before any step started (spec.cancel)".to_owned());
    s.finished_at.get_or_insert_with(|| now.clone());
    let generation = run.metadata.generation;
    ended_unsuccessfully(
        &mut s,
        REASON_CANCELLED,
        "spec.cancel is true",
        true,
        generation,
        now,
    );
    s
}

/// The run ended without succeeding: Failed=True with `message`, Complete=False, both with
/// `reason`.
fn ended_unsuccessfully(
    s: &mut AgentRunStatus,
    reason: &str,
    message: &str,
    cancelled: bool,
    generation: Option<i64>,
    now: &Time,
) {
    set_condition(
        &mut s.conditions,
        CONDITION_FAILED,
        true,
        reason,
        message,
        generation,
        now,
    );
    let complete = if cancelled {
        "the run was cancelled"
    } else {
        "the run did not succeed"
    };
    set_condition(
        &mut s.conditions,
        CONDITION_COMPLETE,
        false,
        reason,
        complete,
        generation,
        now,
    );
}

/// `"ran/total"`: steps that ran to an end (Succeeded or Failed); Skipped steps never ran.
pub fn progress(report: &RunReport) -> String {
    let ran = report
        .steps
        .iter()
        .filter(|s| matches!(s.phase, StepPhase::Succeeded | StepPhase::Failed))
        .count();
    format!("{ran}/{}", report.steps.len())
}

/// `Waiting`: which steps that could run are held back, and why (the engine notes it on
/// each such step); set to False when none is any more, absent when none ever was.
fn set_waiting(
    conditions: &mut Vec<Condition>,
    report: &RunReport,
    generation: Option<i64>,
    now: &Time,
) {
    let held: Vec<String> = report
        .steps
        .iter()
        .filter_map(|st| {
            Some(format!(
                "step {} ({}): {}",
                st.id,
                st.tool,
                st.message.as_deref()?
            ))
        })
        .collect();
    if held.is_empty() {
        if conditions.iter().any(|c| c.type_ == CONDITION_WAITING) {
            set_condition(
                conditions,
                CONDITION_WAITING,
                false,
                REASON_NOT_WAITING,
                "no step is held back",
                generation,
                now,
            );
        }
        return;
    }
    set_condition(
        conditions,
        CONDITION_WAITING,
        true,
        REASON_BREAKER_OPEN,
        &held.join("; "),
        generation,
        now,
    );
}

/// The status mirroring an engine report. `deadline_exceeded` turns a run the operator
/// cancelled for its deadline into Failed/DeadlineExceeded.
pub fn from_report(
    run: &AgentRun,
    report: &RunReport,
    deadline_exceeded: bool,
    now: &Time,
) -> Result<AgentRunStatus, ApiError> {
    let mut s = base(run);
    s.steps = report
        .steps
        .iter()
        .map(StepStatus::from_report)
        .collect::<Result<_, _>>()?;
    s.progress = Some(progress(report));
    let spent = &report.spending;
    s.usage = (!spent.is_empty()).then(|| crane_api::RunUsage {
        prompt_tokens: spent.usage.prompt_tokens,
        completion_tokens: spent.usage.completion_tokens,
        total_tokens: spent.usage.total(),
        llm_calls: spent.llm_calls,
        tool_calls: spent.tool_calls,
    });
    let generation = run.metadata.generation;
    set_waiting(&mut s.conditions, report, generation, now);
    let mut phase = AgentRunPhase::from(report.phase);
    if deadline_exceeded && !matches!(phase, AgentRunPhase::Succeeded | AgentRunPhase::Failed) {
        phase = AgentRunPhase::Failed;
    }
    let was_terminal = s.phase.is_some_and(AgentRunPhase::is_terminal);
    s.phase = Some(phase);
    s.result = None;
    s.error = None;
    match phase {
        AgentRunPhase::Succeeded => {
            s.result = report
                .result
                .as_ref()
                .map(|r| truncate_json(r, MAX_RESULT_BYTES));
            let done = report
                .steps
                .iter()
                .filter(|st| st.phase == StepPhase::Succeeded)
                .count();
            set_condition(
                &mut s.conditions,
                CONDITION_COMPLETE,
                true,
                REASON_SUCCEEDED,
                &format!("{done} step(s) succeeded"),
                generation,
                now,
            );
            set_condition(
                &mut s.conditions,
                CONDITION_FAILED,
                false,
                REASON_SUCCEEDED,
                "no step failed",
                generation,
                now,
            );
        }
        AgentRunPhase::Failed => {
            let (reason, message) =
                if deadline_exceeded && report.phase != crane_core::run::RunPhase::Failed {
                    (
                        REASON_DEADLINE,
                        format!(
                            "the run exceeded activeDeadlineSeconds ({} s); {} steps finished",
                            run.spec.active_deadline_seconds,
                            progress(report)
                        ),
                    )
                } else if let Some(limit) = &report.budget_exceeded {
                    (
                        crane_api::REASON_BUDGET_EXCEEDED,
                        format!(
                            "spec.budget.{limit} would be exceeded: {}",
                            report.error.as_deref().unwrap_or("a call was refused")
                        ),
                    )
                } else {
                    (
                        REASON_STEP_FAILED,
                        report
                            .error
                            .clone()
                            .unwrap_or_else(|| "run failed".to_owned()),
                    )
                };
            s.error = Some(truncate(&message, MAX_ERROR_BYTES * 4));
            ended_unsuccessfully(&mut s, reason, &message, false, generation, now);
        }
        AgentRunPhase::Cancelled => {
            let message = report
                .error
                .clone()
                .unwrap_or_else(|| "run cancelled".to_owned());
            s.error = Some(truncate(&message, MAX_ERROR_BYTES * 4));
            ended_unsuccessfully(&mut s, REASON_CANCELLED, &message, true, generation, now);
        }
        AgentRunPhase::Pending
        | AgentRunPhase::Planning
        | AgentRunPhase::AwaitingApproval
        | AgentRunPhase::Running => {}
    }
    if phase.is_terminal() {
        // The operator ended the run (its deadline) while the engine still had steps to
        // run or running: they will not count any more, and the status says so.
        let why = format!(
            "not run: the run ended {}",
            ended_how(phase, deadline_exceeded)
        );
        for st in s.steps.iter_mut().filter(|st| !st.phase.is_terminal()) {
            st.phase = StepPhase::Skipped;
            st.error = Some(why.clone());
            st.finished_at.get_or_insert_with(|| now.clone());
        }
    }
    if phase.is_terminal() && !was_terminal {
        // The last step's finish is the run's; fall back to now.
        let last = s
            .steps
            .iter()
            .filter_map(|st| st.finished_at.clone())
            .max_by_key(|t| t.0);
        s.finished_at = Some(last.unwrap_or_else(|| now.clone()));
    }
    Ok(s)
}

fn ended_how(phase: AgentRunPhase, deadline_exceeded: bool) -> &'static str {
    match phase {
        _ if deadline_exceeded => "at its activeDeadlineSeconds",
        AgentRunPhase::Cancelled => "by cancellation",
        AgentRunPhase::Failed => "with a failed step",
        _ => "",
    }
}

/// `status` reduced until the object it belongs to (whose other parts take `rest_bytes` of
/// JSON) fits [`MAX_OBJECT_BYTES`]: step outputs and the result go first, then the plan's
/// reasoning, then step errors, then the copied plan, then the step list; condition
/// StatusTruncated names what was left out. The engine keeps the full run either way.
pub fn fit(
    mut status: AgentRunStatus,
    rest_bytes: usize,
    generation: Option<i64>,
    now: &Time,
) -> AgentRunStatus {
    let size = |s: &AgentRunStatus| serde_json::to_vec(s).map_or(usize::MAX, |v| v.len());
    let budget = MAX_OBJECT_BYTES.saturating_sub(rest_bytes);
    if size(&status) <= budget {
        return status;
    }
    type Cut = (&'static str, fn(&mut AgentRunStatus));
    let cuts: [Cut; 5] = [
        ("step outputs and the result", |s| {
            s.result = None;
            s.steps.iter_mut().for_each(|st| st.output = None);
        }),
        ("the plan's reasoning", |s| {
            if let Some(plan) = s.plan.as_mut() {
                plan.steps.iter_mut().for_each(|st| st.reasoning.clear());
            }
        }),
        ("step errors", |s| {
            s.steps.iter_mut().for_each(|st| st.error = None)
        }),
        ("the plan (status.plan)", |s| s.plan = None),
        ("the step list", |s| s.steps.clear()),
    ];
    let mut left_out = Vec::new();
    for (what, cut) in cuts {
        cut(&mut status);
        left_out.push(what);
        if size(&status) <= budget {
            break;
        }
    }
    let message = format!(
        "left out to keep the AgentRun under {MAX_OBJECT_BYTES} bytes: {}; the engine keeps the full run until its TTL",
        left_out.join(", ")
    );
    set_condition(
        &mut status.conditions,
        CONDITION_STATUS_TRUNCATED,
        true,
        "ObjectSizeLimit",
        &message,
        generation,
        now,
    );
    status
}

/// The last status of a run whose status cannot be written at all: Failed, with why.
pub fn too_large(run: &AgentRun, why: &str, now: &Time) -> AgentRunStatus {
    let mut s = AgentRunStatus {
        observed_generation: run.metadata.generation,
        started_at: run.status.as_ref().and_then(|s| s.started_at.clone()),
        ..AgentRunStatus::default()
    };
    s.phase = Some(AgentRunPhase::Failed);
    s.finished_at = Some(now.clone());
    let message = format!("the run's status cannot be written ({why}); the run was stopped");
    s.error = Some(truncate(&message, MAX_ERROR_BYTES * 4));
    ended_unsuccessfully(
        &mut s,
        REASON_STATUS_TOO_LARGE,
        &message,
        false,
        run.metadata.generation,
        now,
    );
    s
}

/// The message of an invalid plan, as shown in status.error and the Failed condition.
pub fn invalid_plan_message(detail: &str) -> String {
    format!("invalid plan: {}", detail.trim())
}

/// Reason of the Failed condition, for Events.
pub fn failed_reason(status: &AgentRunStatus) -> Option<&str> {
    condition(status, CONDITION_FAILED)
        .filter(|c| c.status == "True")
        .map(|c| c.reason.as_str())
}

/// Whether [`REASON_INVALID_PLAN`] is why the run failed.
pub fn is_invalid_plan(status: &AgentRunStatus) -> bool {
    failed_reason(status) == Some(REASON_INVALID_PLAN)
}

#[cfg(test)]
mod tests;
