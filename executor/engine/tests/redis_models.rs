//! Model calls and bound tools run by workers: usage counted per step and run, budgets
//! refused before a call is sent, a Model's shared limits holding across workers (steps held
//! back wait with a reason, using no attempt), and HTTP tools a run binds. The provider is
//! the fake OpenAI-compatible server (the one outside service tests imitate); Redis is real.

mod redis_common;

use std::sync::Arc;
use std::time::Duration;

use crane_core::model::{Budget, ModelConfig, ModelLimits, Usage};
use crane_core::run::{RunOptions, RunPhase, StepPhase};
use crane_core::tool::ToolSource;
use crane_testkit::fake_llm::FakeLlm;
use redis_common::{Engine, engine, options, plan};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

fn model(name: &str, base_url: &str, limits: ModelLimits) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        base_url: base_url.into(),
        model: "fake-small".into(),
        api_key: None,
        timeout_seconds: 10,
        limits,
    }
}

fn with_model(base_url: &str, limits: ModelLimits) -> RunOptions {
    RunOptions {
        models: vec![model("small", base_url, limits)],
        model: Some("small".into()),
        ..options()
    }
}

async fn run(e: &mut Engine, id: &str, steps: Value, options: &RunOptions) {
    e.init(id, &plan(steps), options)
        .await
        .unwrap_or_else(|err| panic!("init {id}: {err}"));
}

fn toolbox() -> Arc<crane_core::tool::Toolbox> {
    Arc::new(crane_tools::in_memory())
}

#[tokio::test]
async fn llm_steps_call_the_model_and_their_usage_is_counted() {
    let (fake, url) = FakeLlm::start().await;
    let mut e = engine(false).await;
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    let options = RunOptions {
        planner_usage: Some(Usage {
            prompt_tokens: 100,
            completion_tokens: 20,
        }),
        ..with_model(&url, ModelLimits::default())
    };
    run(
        &mut e,
        "usage",
        json!([
            {"id": 1, "tool": "llm", "input": {"prompt": "[reply three little words]"}},
            {"id": 2, "tool": "calculator", "input": {"expression": "2+3"}},
            {"id": 3, "tool": "llm", "input": {"prompt": "say {step_2_output} [reply five]"}, "dependsOn": [2]}
        ]),
        &options,
    )
    .await;
    let r = e.finished("usage", PATIENCE).await;
    workers.stop().await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert_eq!(r.steps[0].output, Some(json!("three little words")));
    let u1 = r.steps[0].usage.unwrap_or_else(|| panic!("{r:#?}"));
    assert_eq!(u1.completion_tokens, 3, "{r:#?}");
    assert!(u1.prompt_tokens > 0, "{r:#?}");
    assert!(
        r.steps[1].usage.is_none(),
        "a calculator step uses no tokens"
    );
    // The variable reached the model.
    assert!(
        fake.requests()
            .iter()
            .any(|q| q.to_string().contains("say 5")),
        "{:?}",
        fake.requests()
    );
    let steps_tokens: u64 = r
        .steps
        .iter()
        .filter_map(|s| s.usage)
        .map(|u| u.total())
        .sum();
    assert_eq!(r.spending.usage.total(), steps_tokens + 120, "{r:#?}");
    assert_eq!(r.spending.llm_calls, 3, "two steps and the planner: {r:#?}");
    assert_eq!(r.spending.tool_calls, 1, "{r:#?}");
    assert_eq!(fake.count("fake-small"), 2);
    assert_eq!(r.budget_exceeded, None);
}

#[tokio::test]
async fn a_budget_refuses_the_call_it_cannot_cover_before_it_is_sent() {
    let (fake, url) = FakeLlm::start().await;
    let mut e = engine(false).await;
    let workers = e.spawn_workers(2, e.worker_config(4), toolbox()).await;

    // Tokens: the planner spent 90 of 100; a call that may use up to 64 more is refused.
    let tokens = RunOptions {
        budget: Budget {
            max_tokens: Some(100),
            ..Budget::default()
        },
        planner_usage: Some(Usage {
            prompt_tokens: 80,
            completion_tokens: 10,
        }),
        ..with_model(&url, ModelLimits::default())
    };
    run(
        &mut e,
        "tokens",
        json!([{"id": 1, "tool": "llm", "input": {"prompt": "hello", "maxTokens": 64}}]),
        &tokens,
    )
    .await;
    let r = e.finished("tokens", PATIENCE).await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    assert_eq!(r.budget_exceeded.as_deref(), Some("maxTokens"), "{r:#?}");
    let error = r.error.clone().unwrap_or_default();
    assert!(
        error.contains("budget exceeded: maxTokens is 100"),
        "{error}"
    );
    assert_eq!(r.steps[0].attempts, 1, "a refusal is not retried: {r:#?}");
    assert_eq!(fake.count("fake-small"), 0, "nothing was sent");

    // Calls: one llm call allowed; of two sequential steps the second is refused.
    let calls = RunOptions {
        budget: Budget {
            max_llm_calls: Some(1),
            ..Budget::default()
        },
        ..with_model(&url, ModelLimits::default())
    };
    run(
        &mut e,
        "calls",
        json!([
            {"id": 1, "tool": "llm", "input": {"prompt": "one"}},
            {"id": 2, "tool": "llm", "input": {"prompt": "two"}, "dependsOn": [1]}
        ]),
        &calls,
    )
    .await;
    let r = e.finished("calls", PATIENCE).await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    assert_eq!(r.budget_exceeded.as_deref(), Some("maxLlmCalls"), "{r:#?}");
    assert_eq!(r.steps[0].phase, StepPhase::Succeeded, "{r:#?}");
    assert_eq!(fake.count("fake-small"), 1);

    // Other tools: two of three calculator steps run.
    let tools = RunOptions {
        budget: Budget {
            max_tool_calls: Some(2),
            ..Budget::default()
        },
        ..options()
    };
    run(
        &mut e,
        "tools",
        json!([
            {"id": 1, "tool": "calculator", "input": {"expression": "1+1"}},
            {"id": 2, "tool": "calculator", "input": {"expression": "2+2"}, "dependsOn": [1]},
            {"id": 3, "tool": "calculator", "input": {"expression": "3+3"}, "dependsOn": [2]}
        ]),
        &tools,
    )
    .await;
    let r = e.finished("tools", PATIENCE).await;
    workers.stop().await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    assert_eq!(r.budget_exceeded.as_deref(), Some("maxToolCalls"), "{r:#?}");
    assert_eq!(
        r.steps.iter().map(|s| s.phase).collect::<Vec<_>>(),
        [
            StepPhase::Succeeded,
            StepPhase::Succeeded,
            StepPhase::Failed
        ]
    );
}

#[tokio::test]
async fn a_models_concurrency_limit_holds_across_workers_without_using_attempts() {
    let (fake, url) = FakeLlm::start().await;
    let mut e = engine(false).await;
    let workers = e.spawn_workers(2, e.worker_config(4), toolbox()).await;
    let limits = ModelLimits {
        max_concurrent_requests: Some(1),
        ..ModelLimits::default()
    };
    let steps: Vec<Value> = (1..=6)
        .map(|i| json!({"id": i, "tool": "llm", "input": {"prompt": format!("[sleep 150] {i}")}}))
        .collect();
    run(
        &mut e,
        "narrow",
        Value::Array(steps),
        &with_model(&url, limits),
    )
    .await;
    let r = e.finished("narrow", PATIENCE).await;
    workers.stop().await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert_eq!(fake.count("fake-small"), 6);
    assert_eq!(fake.max_in_flight("fake-small"), 1, "the limit held");
    assert!(
        r.steps.iter().all(|s| s.attempts == 1),
        "held steps used no attempt: {r:#?}"
    );
}

#[tokio::test]
async fn steps_over_a_models_rate_wait_with_a_reason_instead_of_failing() {
    let (fake, url) = FakeLlm::start().await;
    let mut e = engine(false).await;
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    let limits = ModelLimits {
        requests_per_minute: Some(2),
        ..ModelLimits::default()
    };
    let steps: Vec<Value> = (1..=3)
        .map(|i| json!({"id": i, "tool": "llm", "input": {"prompt": format!("call {i}")}}))
        .collect();
    run(
        &mut e,
        "rate",
        Value::Array(steps),
        &with_model(&url, limits),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let held = loop {
        let r = e.report("rate").await;
        assert!(
            r.steps.iter().all(|s| s.phase != StepPhase::Failed),
            "{r:#?}"
        );
        let done = r
            .steps
            .iter()
            .filter(|s| s.phase == StepPhase::Succeeded)
            .count();
        if let Some(h) = r.steps.iter().find(|s| {
            s.message
                .as_deref()
                .is_some_and(|m| m.contains("Model small is at its requestsPerMinute limit"))
        }) && done == 2
        {
            break h.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    workers.stop().await;
    assert_eq!(held.attempts, 0, "{held:#?}");
    assert_eq!(fake.count("fake-small"), 2);
}

#[tokio::test]
async fn http_tools_a_run_binds_are_run_and_their_inputs_checked() {
    let app = axum::Router::new().route(
        "/sum",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            let a = v["a"].as_i64().unwrap_or(0);
            let b = v["b"].as_i64().unwrap_or(0);
            (
                [("content-type", "application/json")],
                json!({"sum": a + b}).to_string(),
            )
        }),
    );
    let addr = crane_testkit::serve(app).await;
    let mut e = engine(false).await;
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    let spec = redis_common::http_tool(
        "adder",
        format!("http://{addr}/sum"),
        json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}),
    );
    let opts = RunOptions {
        tools: vec![spec],
        ..options()
    };
    run(
        &mut e,
        "bound",
        json!([
            {"id": 1, "tool": "adder", "input": {"a": 2, "b": 40}},
            {"id": 2, "tool": "adder", "input": {"a": "two", "b": 1}}
        ]),
        &RunOptions {
            failure_policy: crane_core::run::FailurePolicy::ContinueIndependent,
            ..opts
        },
    )
    .await;
    let r = e.finished("bound", PATIENCE).await;
    workers.stop().await;
    assert_eq!(r.steps[0].output, Some(json!({"sum": 42})), "{r:#?}");
    assert_eq!(r.steps[1].phase, StepPhase::Failed, "{r:#?}");
    let error = r.steps[1].error.clone().unwrap_or_default();
    assert!(error.contains("input.a"), "the error says where: {error}");
}

#[tokio::test]
async fn a_bound_tool_whose_object_was_deleted_fails_later_steps_without_calling_it() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::post(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { ([("content-type", "application/json")], "{\"ok\":true}") }
        }),
    );
    let addr = crane_testkit::serve(app).await;
    let mut e = engine(false).await;
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    let mut spec = redis_common::http_tool(
        "echo",
        format!("http://{addr}/echo"),
        json!({"type": "object"}),
    );
    spec.source = Some(ToolSource {
        kind: "Tool".into(),
        name: "echo".into(),
        uid: "0f1e2d3c-uid-of-echo".into(),
    });
    let opts = RunOptions {
        tools: vec![spec],
        ..options()
    };
    // Another namespace's deletion of an object with the same UID changes nothing here.
    crane_engine::tombstones::record(
        &mut e.admin,
        &[],
        &[("0f1e2d3c-uid-of-echo", "someone-else")],
        1,
    )
    .await
    .unwrap_or_else(|err| panic!("{err}"));
    run(
        &mut e,
        "deleted",
        json!([
            {"id": 1, "tool": "echo", "input": {}},
            {"id": 2, "tool": "wait", "input": {"ms": 1500}, "dependsOn": [1]},
            {"id": 3, "tool": "echo", "input": {}, "dependsOn": [2]}
        ]),
        &opts,
    )
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while e.report("deleted").await.steps[0].phase != StepPhase::Succeeded {
        assert!(tokio::time::Instant::now() < deadline, "step 1 never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crane_engine::tombstones::record(
        &mut e.admin,
        &[],
        &[("0f1e2d3c-uid-of-echo", redis_common::NAMESPACE)],
        crane_engine::time::now_ms(),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}"));
    let r = e.finished("deleted", PATIENCE).await;
    workers.stop().await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    assert_eq!(r.steps[2].phase, StepPhase::Failed, "{r:#?}");
    assert_eq!(r.steps[2].attempts, 1, "not retried: {r:#?}");
    let error = r.steps[2].error.clone().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "tool \"echo\" is gone: Tool {}/echo was deleted after this run was planned",
            redis_common::NAMESPACE
        )),
        "{error}"
    );
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "step 3 never called it"
    );
}

#[tokio::test]
async fn tool_objects_are_remembered_until_deleted_and_hostile_entries_do_not_wedge_it() {
    use crane_engine::tombstones::{is_deleted, known, record};
    let mut e = engine(false).await;
    let ns = redis_common::NAMESPACE;
    record(&mut e.admin, &[("u-1", ns), ("u-2", ns)], &[], 1)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let k = known(&mut e.admin)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(k.len(), 2, "{k:?}");
    // An entry whose namespace is not one (a hand-edited hash) is dropped, not retried forever.
    record(
        &mut e.admin,
        &[],
        &[("u-1", ns), ("u-x", "Not a namespace!\n{x}")],
        2,
    )
    .await
    .unwrap_or_else(|err| panic!("{err}"));
    let k = known(&mut e.admin)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(k.keys().collect::<Vec<_>>(), vec!["u-2"]);
    // The namespace's own user reads its deletions (as workers do), and only those.
    assert!(is_deleted(&mut e.conn, ns, "u-1").await.unwrap_or(false));
    assert!(!is_deleted(&mut e.conn, ns, "u-2").await.unwrap_or(true));
    assert!(
        is_deleted(&mut e.conn, "other", "u-1").await.is_err(),
        "NOPERM"
    );
    assert!(is_deleted(&mut e.conn, "Bad NS", "u-1").await.is_err());
}

#[tokio::test]
async fn ten_ready_llm_steps_on_many_workers_never_exceed_max_llm_calls() {
    let (fake, url) = FakeLlm::start().await;
    let mut e = engine(false).await;
    let workers = e.spawn_workers(3, e.worker_config(8), toolbox()).await;
    let options = RunOptions {
        budget: Budget {
            max_llm_calls: Some(3),
            ..Budget::default()
        },
        failure_policy: crane_core::run::FailurePolicy::ContinueIndependent,
        ..with_model(&url, ModelLimits::default())
    };
    let steps: Vec<Value> = (1..=10)
        .map(|i| json!({"id": i, "tool": "llm", "input": {"prompt": format!("[sleep 100] {i}")}}))
        .collect();
    run(&mut e, "race", Value::Array(steps), &options).await;
    let r = e.finished("race", PATIENCE).await;
    workers.stop().await;
    assert_eq!(
        fake.count("fake-small"),
        3,
        "the provider saw at most three"
    );
    assert_eq!(
        r.steps
            .iter()
            .filter(|s| s.phase == StepPhase::Succeeded)
            .count(),
        3,
        "{r:#?}"
    );
    assert_eq!(r.budget_exceeded.as_deref(), Some("maxLlmCalls"));
    assert_eq!(
        r.spending.llm_calls, 3,
        "refused calls are not counted: {r:#?}"
    );
}

#[tokio::test]
async fn a_reservation_held_by_a_worker_that_died_mid_call_does_not_leak() {
    let (fake, url) = FakeLlm::start().await;
    let mut e = engine(false).await;
    // One call reserves ceil(len/4) + 100 tokens; the budget covers one reservation, not two,
    // so the retry after the crash runs only if the dead attempt's reservation was returned.
    let prompt = "[sleep 3000] slow";
    let estimate = (prompt.len() as u64).div_ceil(4) + 100;
    let options = RunOptions {
        budget: Budget {
            max_tokens: Some(estimate + estimate / 2),
            ..Budget::default()
        },
        ..with_model(&url, ModelLimits::default())
    };
    let doomed = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    run(
        &mut e,
        "crash",
        json!([{"id": 1, "tool": "llm", "input": {"prompt": prompt, "maxTokens": 100}}]),
        &options,
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while fake.count("fake-small") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never went out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill();
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    let r = e.finished("crash", PATIENCE).await;
    workers.stop().await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert_eq!(r.steps[0].attempts, 2, "{r:#?}");
    assert_eq!(r.budget_exceeded, None);
}
