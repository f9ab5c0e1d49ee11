//! Fixtures for the pure builders: planner Job, statuses from reports, conditions.

use super::*;
use crane_core::plan::PlanSource;
use crane_core::plan::{Plan, Step};
use crane_core::run::{RunPhase, StepReport};
use serde_json::json;

fn run(spec: serde_json::Value) -> AgentRun {
    serde_json::from_value(json!({
        "apiVersion": "crane.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": "milk", "namespace": "team-a", "uid": "0f0e-uid", "generation": 2},
        "spec": spec,
    }))
    .expect("fixture")
}

fn time(s: &str) -> Time {
    Time(s.parse().expect("fixture time"))
}

fn step(
    id: u32,
    phase: StepPhase,
    output: Option<serde_json::Value>,
    error: Option<&str>,
) -> StepReport {
    StepReport {
        id,
        tool: "calculator".into(),
        phase,
        attempts: 1,
        output,
        error: error.map(str::to_owned),
        started_at: Some("2026-01-01T00:00:01Z".into()),
        finished_at: phase
            .is_terminal()
            .then(|| format!("2026-01-01T00:00:0{}Z", id + 1)),
        usage: None,
        message: None,
        gate: None,
    }
}

#[test]
fn planner_job_is_restricted_and_keeps_the_prompt_off_the_command_line() {
    let hostile = "$(rm -rf /) `id` --redis evil ; \"quoted\" \n newline";
    let r = run(json!({"prompt": hostile, "planner": {"mode": "rules"}}));
    let mut config = Config::new("redis://redis:6379");
    config.llm_base_url = Some("http://llm".into());
    config.llm_api_key_secret = Some("llm/api-key".parse().expect("ref"));
    let job = planner_job(&r, &config, None).expect("job");
    assert_eq!(job.metadata.name.as_deref(), Some("milk-planner"));
    let owner = &job.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("AgentRun", "0f0e-uid", Some(true))
    );
    let spec = job.spec.as_ref().expect("spec");
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(600));
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let psc = pod.security_context.as_ref().expect("pod sc");
    assert_eq!(
        (psc.run_as_non_root, psc.run_as_user),
        (Some(true), Some(65532))
    );
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().expect("sc");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    let cmd = c.command.clone().expect("command");
    assert_eq!(
        cmd,
        [
            "crane-executor",
            "plan",
            "--planner",
            "rules",
            "--run-id",
            "0f0e-uid",
            "--namespace",
            "team-a",
            "--redis",
            "redis://redis:6379"
        ]
    );
    assert!(
        !cmd.iter().any(|a| a.contains("rm -rf")),
        "prompt leaked into the command"
    );
    let env = c.env.clone().expect("env");
    let get = |n: &str| env.iter().find(|e| e.name == n).cloned();
    assert!(
        !env.iter()
            .any(|e| e.value.as_deref().is_some_and(|v| v.contains("rm -rf"))),
        "the prompt travels through Redis, not the pod spec"
    );
    assert_eq!(
        get("CRANE_LLM_BASE_URL").and_then(|e| e.value).as_deref(),
        Some("http://llm")
    );
    let key = get("CRANE_LLM_API_KEY")
        .and_then(|e| e.value_from)
        .and_then(|v| v.secret_key_ref)
        .expect("secret ref");
    assert_eq!((key.name.as_str(), key.key.as_str()), ("llm", "api-key"));
    assert!(
        get("CRANE_LLM_API_KEY").and_then(|e| e.value).is_none(),
        "the key must not be inlined"
    );
    assert!(
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some()
    );
}

#[test]
fn planner_job_without_uid_is_an_error_not_a_panic() {
    let mut r = run(json!({"prompt": "2+2"}));
    r.metadata.uid = None;
    assert_eq!(
        planner_job(&r, &Config::new("redis://x"), None).unwrap_err(),
        BuildError::MissingMetadata("metadata.uid")
    );
}

#[test]
fn planner_job_names_stay_valid_for_long_run_names() {
    assert_eq!(planner_job_name("a"), "a-planner");
    let long = format!("{}.{}", "x".repeat(60), "y".repeat(150));
    let name = planner_job_name(&long);
    assert!(name.len() <= 63, "{name} is {} long", name.len());
    assert!(name.ends_with("-planner"));
    // Different long names that share a prefix get different Jobs.
    assert_ne!(
        planner_job_name(&format!("{long}a")),
        planner_job_name(&format!("{long}b"))
    );
    // A cut landing on '-' or '.' does not leave "--" or ".-".
    let dashes = format!("{}-{}", "a".repeat(45), "b".repeat(30));
    let n = planner_job_name(&dashes);
    assert!(!n.contains("--") && n.len() <= 63, "{n}");
}

#[test]
fn status_from_a_succeeded_report() {
    let r = run(
        json!({"plan": {"steps": [{"id": 1, "tool": "calculator", "input": {"expression": "1+1"}}]}}),
    );
    let now = time("2026-01-01T00:01:00Z");
    let report = RunReport {
        phase: RunPhase::Succeeded,
        steps: vec![
            step(1, StepPhase::Succeeded, Some(json!(55)), None),
            step(
                2,
                StepPhase::Succeeded,
                Some(json!("x".repeat(10_000))),
                None,
            ),
        ],
        result: Some(json!({"big": "y".repeat(100_000)})),
        error: None,
        spending: Default::default(),
        budget_exceeded: None,
    };
    let s = from_report(&r, &report, false, &now).expect("status");
    assert_eq!(s.phase, Some(AgentRunPhase::Succeeded));
    assert_eq!(s.progress.as_deref(), Some("2/2"));
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(s.steps[0].output, Some(json!(55)));
    assert_eq!(
        s.steps[1].output.as_ref().and_then(|o| o.get("truncated")),
        Some(&json!(true))
    );
    assert!(serde_json::to_string(&s.result).expect("json").len() < MAX_RESULT_BYTES + 200);
    let complete = condition(&s, CONDITION_COMPLETE).expect("Complete");
    assert_eq!(complete.status, "True");
    assert_eq!(
        condition(&s, CONDITION_FAILED).map(|c| c.status.as_str()),
        Some("False")
    );
    // finishedAt is the last step's finish, not "now".
    assert_eq!(s.finished_at, Some(time("2026-01-01T00:00:03Z")));
}

#[test]
fn a_refused_budget_fails_the_run_with_reason_budget_exceeded_and_usage_in_status() {
    let r = run(json!({"plan": {"steps": []}}));
    let now = time("2026-01-01T00:01:00Z");
    let report = RunReport {
        phase: RunPhase::Failed,
        steps: vec![step(
            1,
            StepPhase::Failed,
            None,
            Some("budget exceeded: maxTokens is 100"),
        )],
        result: None,
        error: Some("step 1 (llm) failed: budget exceeded: maxTokens is 100".into()),
        spending: crane_core::model::Spending {
            usage: crane_core::model::Usage {
                prompt_tokens: 80,
                completion_tokens: 10,
            },
            llm_calls: 1,
            tool_calls: 2,
        },
        budget_exceeded: Some("maxTokens".into()),
    };
    let s = from_report(&r, &report, false, &now).expect("status");
    assert_eq!(failed_reason(&s), Some(crane_api::REASON_BUDGET_EXCEEDED));
    let usage = s.usage.expect("usage");
    assert_eq!(
        (usage.total_tokens, usage.llm_calls, usage.tool_calls),
        (90, 1, 2)
    );
    assert!(
        condition(&s, CONDITION_FAILED)
            .is_some_and(|c| c.message.contains("spec.budget.maxTokens")),
        "{s:#?}"
    );
}

#[test]
fn status_from_a_failed_and_a_running_report() {
    let r = run(json!({"plan": {"steps": []}}));
    let now = time("2026-01-01T00:01:00Z");
    let failed = RunReport {
        phase: RunPhase::Failed,
        steps: vec![
            step(1, StepPhase::Failed, None, Some("division by zero")),
            step(2, StepPhase::Skipped, None, None),
        ],
        result: None,
        error: Some("step 1 (calculator) failed: division by zero".into()),
        spending: Default::default(),
        budget_exceeded: None,
    };
    let s = from_report(&r, &failed, false, &now).expect("status");
    assert_eq!(s.phase, Some(AgentRunPhase::Failed));
    assert_eq!(
        s.error.as_deref(),
        Some("step 1 (calculator) failed: division by zero")
    );
    assert_eq!(failed_reason(&s), Some(REASON_STEP_FAILED));
    assert_eq!(
        condition(&s, CONDITION_COMPLETE).map(|c| c.status.as_str()),
        Some("False")
    );

    let running = RunReport {
        phase: RunPhase::Running,
        steps: vec![
            step(1, StepPhase::Succeeded, Some(json!(1)), None),
            step(2, StepPhase::Running, None, None),
            step(3, StepPhase::Pending, None, None),
        ],
        result: None,
        error: None,
        spending: Default::default(),
        budget_exceeded: None,
    };
    let s = from_report(&r, &running, false, &now).expect("status");
    assert_eq!(
        (s.phase, s.progress.as_deref(), s.finished_at.clone()),
        (Some(AgentRunPhase::Running), Some("1/3"), None)
    );
    assert!(condition(&s, CONDITION_COMPLETE).is_none());
    // Past the deadline a cancelled engine run reads as Failed/DeadlineExceeded.
    let cancelled = RunReport {
        phase: RunPhase::Cancelled,
        error: Some("run cancelled".into()),
        ..running
    };
    let s = from_report(&r, &cancelled, true, &now).expect("status");
    assert_eq!(s.phase, Some(AgentRunPhase::Failed));
    assert_eq!(failed_reason(&s), Some(REASON_DEADLINE));
    // The steps it never finished say so, and do not count as run.
    let phases: Vec<_> = s.steps.iter().map(|st| st.phase).collect();
    assert_eq!(
        phases,
        [StepPhase::Succeeded, StepPhase::Skipped, StepPhase::Skipped]
    );
    assert_eq!(
        s.steps[2].error.as_deref(),
        Some("not run: the run ended at its activeDeadlineSeconds")
    );
    assert_eq!(s.steps[2].finished_at, Some(now.clone()));
    assert_eq!(s.progress.as_deref(), Some("1/3"));
    assert!(
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("activeDeadlineSeconds (600 s)")),
        "{:?}",
        s.error
    );
    let s = from_report(&r, &cancelled, false, &now).expect("status");
    assert_eq!(
        (s.phase, failed_reason(&s)),
        (Some(AgentRunPhase::Cancelled), Some(REASON_CANCELLED))
    );
}

#[test]
fn a_bad_engine_timestamp_is_an_error_naming_the_step() {
    let r = run(json!({"prompt": "x"}));
    let mut bad = step(7, StepPhase::Succeeded, Some(json!(1)), None);
    bad.started_at = Some("yesterday".into());
    let report = RunReport {
        phase: RunPhase::Running,
        steps: vec![bad],
        result: None,
        error: None,
        spending: Default::default(),
        budget_exceeded: None,
    };
    let err = from_report(&r, &report, false, &time("2026-01-01T00:00:00Z")).unwrap_err();
    assert!(err.to_string().contains("step 7"), "{err}");
}

#[test]
fn early_statuses_set_phase_conditions_and_times() {
    let r = run(json!({"prompt": "x", "workerPool": "gpu"}));
    let now = time("2026-01-01T00:00:00Z");
    let s = pool_missing(&r, &now);
    assert_eq!(s.phase, Some(AgentRunPhase::Pending));
    let c = condition(&s, CONDITION_PLANNED).expect("Planned");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", REASON_POOL_NOT_FOUND)
    );
    assert!(
        c.message.contains("\"gpu\"") && c.message.contains("team-a"),
        "{}",
        c.message
    );

    let s = planning(&r, "milk-planner", &now);
    assert_eq!(
        (s.phase, s.started_at.clone()),
        (Some(AgentRunPhase::Planning), Some(now.clone()))
    );

    let plan = Plan {
        steps: vec![Step {
            id: 1,
            tool: "calculator".into(),
            input: serde_json::from_value(json!({"expression": "1"})).expect("map"),
            reasoning: String::new(),
            depends_on: vec![],
        }],
    };
    let s = started(&r, Some(plan.clone()), PlanSource::Rules, &now);
    assert_eq!(
        (
            s.phase,
            s.plan.as_ref(),
            s.plan_source,
            s.progress.as_deref()
        ),
        (
            Some(AgentRunPhase::Running),
            Some(&plan),
            Some(PlanSource::Rules),
            Some("0/1")
        )
    );
    assert_eq!(
        condition(&s, CONDITION_PLANNED).map(|c| c.status.as_str()),
        Some("True")
    );

    let msg = invalid_plan_message("step 1: unknown tool \"rm\"");
    let s = failed_early(&r, REASON_INVALID_PLAN, &msg, &now);
    assert!(is_invalid_plan(&s));
    assert_eq!(
        s.error.as_deref(),
        Some("invalid plan: step 1: unknown tool \"rm\"")
    );
    assert_eq!(
        condition(&s, CONDITION_COMPLETE).map(|c| c.status.as_str()),
        Some("False")
    );
    assert!(s.finished_at.is_some());

    let s = cancelled_early(&r, &now);
    assert_eq!(
        (s.phase, failed_reason(&s)),
        (Some(AgentRunPhase::Cancelled), Some(REASON_CANCELLED))
    );
}

#[test]
fn run_options_come_from_the_spec() {
    let r = run(
        json!({"prompt": "x", "stepTimeoutSeconds": 7, "failurePolicy": "ContinueIndependent", "retry": {"maxAttempts": 5, "initialBackoffMs": 10, "maxBackoffMs": 20}}),
    );
    let o = spec_options(&r, false);
    assert_eq!(o.step_timeout_ms, 7000);
    assert_eq!(o.retry.max_attempts, 5);
    assert_eq!(
        o.failure_policy,
        crane_core::run::FailurePolicy::ContinueIndependent
    );
}

#[test]
fn run_options_carry_the_bound_tools_and_models_the_plan_uses() {
    use crane_core::model::{ModelConfig, ModelLimits};
    use crane_core::plan::Plan;
    use crane_core::tool::{Binding, Catalog, ToolSpec};
    let mut weather = ToolSpec::new("weather", "w", json!({"type": "object"}));
    weather.binding = Some(Binding::Http {
        url: "http://weather.example/".into(),
        method: "POST".into(),
        headers: Vec::new(),
        timeout_seconds: 5,
    });
    let unused = ToolSpec {
        name: "unused".into(),
        ..weather.clone()
    };
    let catalog = Catalog::builtins().with([weather.clone(), unused]);
    let model = |name: &str| ModelConfig {
        name: name.into(),
        base_url: "http://llm.example/v1".into(),
        model: "m".into(),
        api_key: None,
        timeout_seconds: 30,
        limits: ModelLimits::default(),
    };
    let models = [model("fast"), model("smart"), model("idle")];
    let plan: Plan = serde_json::from_value(json!({"steps": [
        {"id": 1, "tool": "weather", "input": {}},
        {"id": 2, "tool": "llm", "input": {"prompt": "a"}},
        {"id": 3, "tool": "llm", "input": {"prompt": "b", "model": "smart"}},
        {"id": 4, "tool": "weather", "input": {}},
        {"id": 5, "tool": "calculator", "input": {"expression": "1"}}
    ]}))
    .expect("plan");
    let r = run(json!({"prompt": "x", "model": "fast", "budget": {"maxLlmCalls": 3}}));
    let o = run_options(&r, &plan, &catalog, &models, None, false).expect("options");
    assert_eq!(o.tools, [weather]);
    let names: Vec<_> = o.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["fast", "smart"]);
    assert_eq!(
        (o.model.as_deref(), o.budget.max_llm_calls),
        (Some("fast"), Some(3))
    );

    // No model for an llm step, or one that is not Ready: the plan cannot run here.
    let r = run(json!({"prompt": "x"}));
    let err = run_options(&r, &plan, &catalog, &models, None, false).unwrap_err();
    assert!(err.contains("step 2 (llm) names no model"), "{err}");
    let r = run(json!({"prompt": "x", "model": "gone"}));
    let err = run_options(&r, &plan, &catalog, &models, None, false).unwrap_err();
    assert!(err.contains("Model \"gone\" does not exist"), "{err}");
}

#[test]
fn a_traced_run_carries_its_uid_as_trace_id_to_the_engine_and_the_planner() {
    let r = run(json!({"prompt": "x"}));
    assert_eq!(spec_options(&r, false).traceparent, None);
    let traceparent = spec_options(&r, true).traceparent.expect("traced");
    assert_eq!(traceparent, crane_telemetry::run_traceparent("0f0e-uid"));

    let mut config = Config::new("redis://redis:6379");
    config.telemetry = crane_telemetry::PodSettings {
        traced: true,
        env: vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            "http://otel:4318".into(),
        )],
    };
    let job = planner_job(&r, &config, None).expect("job");
    let env = job
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(value("TRACEPARENT"), Some(traceparent));
    assert_eq!(
        value("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
        Some("http://otel:4318")
    );
    config.telemetry.traced = false;
    let job = planner_job(&r, &config, None).expect("job");
    let env = job
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(env.iter().all(|e| e.name != "TRACEPARENT"));
}

#[test]
fn job_failure_is_detected_from_conditions_or_counts() {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    let mut job = Job::default();
    assert_eq!(job_failed(&job), None);
    job.status = Some(JobStatus {
        active: Some(1),
        ..JobStatus::default()
    });
    assert_eq!(job_failed(&job), None);
    job.status = Some(JobStatus {
        conditions: Some(vec![JobCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("DeadlineExceeded".into()),
            message: Some("too slow".into()),
            ..JobCondition::default()
        }]),
        ..JobStatus::default()
    });
    assert_eq!(
        job_failed(&job).as_deref(),
        Some("DeadlineExceeded: too slow")
    );
    job.status = Some(JobStatus {
        failed: Some(1),
        active: Some(0),
        ..JobStatus::default()
    });
    assert!(job_failed(&job).is_some());
}

#[test]
fn a_status_too_large_for_the_object_is_reduced_and_says_so() {
    let r = run(json!({"prompt": "x"}));
    let now = time("2026-01-01T00:01:00Z");
    let report = RunReport {
        phase: RunPhase::Running,
        steps: (1..=500)
            .map(|id| StepReport {
                finished_at: None,
                ..step(
                    id,
                    StepPhase::Succeeded,
                    Some(json!("o".repeat(2000))),
                    None,
                )
            })
            .collect(),
        result: None,
        error: None,
        spending: Default::default(),
        budget_exceeded: None,
    };
    let status = from_report(&r, &report, false, &now).expect("status");
    let size = |s: &AgentRunStatus| serde_json::to_vec(s).map(|v| v.len()).unwrap_or(0);
    assert!(size(&status) > 100_000);

    // Room enough: nothing changes.
    assert_eq!(fit(status.clone(), 1000, Some(2), &now), status);
    // A spec taking most of the budget: outputs go first, and the condition says so.
    let fitted = fit(status.clone(), MAX_OBJECT_BYTES - 120_000, Some(2), &now);
    assert!(size(&fitted) <= 120_000, "{}", size(&fitted));
    assert!(fitted.steps.iter().all(|s| s.output.is_none()));
    assert_eq!(fitted.steps.len(), 500);
    let c = condition(&fitted, CONDITION_STATUS_TRUNCATED).expect("condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ObjectSizeLimit")
    );
    assert!(
        c.message.contains("step outputs and the result"),
        "{}",
        c.message
    );
    // Nearly no room: the step list goes too, the phase and progress stay.
    let tiny = fit(status.clone(), MAX_OBJECT_BYTES - 2_000, Some(2), &now);
    assert!(tiny.steps.is_empty());
    assert_eq!(
        (tiny.phase, tiny.progress.clone()),
        (status.phase, status.progress.clone())
    );

    let last = too_large(&r, "etcdserver: request is too large", &now);
    assert_eq!(last.phase, Some(AgentRunPhase::Failed));
    assert_eq!(
        failed_reason(&last),
        Some(crane_api::REASON_STATUS_TOO_LARGE)
    );
    assert!(size(&last) < 2_000);
}

#[test]
fn steps_held_by_a_breaker_show_in_their_entry_and_a_waiting_condition() {
    let mut r = run(json!({"plan": {"steps": []}}));
    let now = time("2026-01-01T00:01:00Z");
    let mut held = step(2, StepPhase::Pending, None, None);
    held.message = Some("waiting: the circuit breaker of tool http.x is open".into());
    let report = RunReport {
        phase: RunPhase::Running,
        steps: vec![step(1, StepPhase::Succeeded, Some(json!(1)), None), held],
        result: None,
        error: None,
        spending: Default::default(),
        budget_exceeded: None,
    };
    let s = from_report(&r, &report, false, &now).expect("status");
    assert_eq!(
        s.steps[1].message.as_deref(),
        Some("waiting: the circuit breaker of tool http.x is open")
    );
    let c = condition(&s, CONDITION_WAITING).expect("Waiting");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", REASON_BREAKER_OPEN)
    );
    assert!(c.message.starts_with("step 2 ("), "{}", c.message);

    // Once it runs, the condition says nothing waits any more.
    r.status = Some(s);
    let mut moving = report.clone();
    moving.steps[1].message = None;
    moving.steps[1].phase = StepPhase::Running;
    let s = from_report(&r, &moving, false, &now).expect("status");
    let c = condition(&s, CONDITION_WAITING).expect("Waiting");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", REASON_NOT_WAITING)
    );
    // A run nothing ever held has no such condition.
    r.status = None;
    assert!(
        condition(
            &from_report(&r, &moving, false, &now).expect("status"),
            CONDITION_WAITING
        )
        .is_none()
    );
}
