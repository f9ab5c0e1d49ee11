//! Steps that wait for a person, on a real Redis: an `approval` step and a tool that requires
//! approval park in WaitingForApproval with what the approver is shown, using no attempt;
//! decisions (in any order, for parallel gates) release or fail them exactly once; a cancel
//! skips them; a gate outlives Redis restarting from its append-only file and the workers
//! that parked it.

mod redis_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crane_core::run::{FailurePolicy, OnTimeout, RunOptions, RunPhase, RunReport, StepPhase};
use crane_engine::api::{Decided, Decision, decide};
use redis_common::{Engine, engine, options, plan, run_keys};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

fn toolbox() -> Arc<crane_core::tool::Toolbox> {
    Arc::new(crane_tools::in_memory())
}

async fn start(e: &mut Engine, id: &str, steps: Value, options: &RunOptions) {
    e.init(id, &plan(steps), options)
        .await
        .unwrap_or_else(|err| panic!("init {id}: {err}"));
}

/// The report once `ids` all wait for approval.
async fn waiting(e: &mut Engine, run: &str, ids: &[u32]) -> RunReport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = e.report(run).await;
        let all = ids.iter().all(|id| {
            r.steps
                .iter()
                .any(|s| s.id == *id && s.phase == StepPhase::WaitingForApproval)
        });
        if all {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn approve(by: &str) -> Decision {
    Decision::Approve {
        by: by.into(),
        comment: Some("looks right".into()),
    }
}

async fn decide_now(e: &mut Engine, run: &str, step: u32, d: &Decision) -> Decided {
    decide(&mut e.conn, &run_keys(run), step, d)
        .await
        .unwrap_or_else(|err| panic!("decide: {err}"))
}

#[tokio::test]
async fn an_approval_step_waits_then_its_decision_runs_the_dependents() {
    let mut e = engine(false).await;
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    start(
        &mut e,
        "approved",
        json!([
            {"id": 1, "tool": "calculator", "input": {"expression": "6*7"}},
            {"id": 2, "tool": "approval", "input": {"message": "Pay {step_1_output} EUR?", "approvers": ["alice", "finance"], "timeoutSeconds": 600}, "dependsOn": [1]},
            {"id": 3, "tool": "calculator", "input": {"expression": "1+1"}, "dependsOn": [2]}
        ]),
        &options(),
    )
    .await;
    let r = waiting(&mut e, "approved", &[2]).await;
    let step = &r.steps[1];
    assert_eq!(step.attempts, 0, "waiting is not an attempt: {step:#?}");
    let gate = step.gate.clone().unwrap_or_else(|| panic!("{step:#?}"));
    assert_eq!(gate.message, "Pay 42 EUR?", "variables resolved");
    assert_eq!(gate.approvers, ["alice", "finance"]);
    assert_eq!(
        (gate.timeout_seconds, gate.on_timeout),
        (600, OnTimeout::Reject)
    );
    assert!(gate.since.is_some());
    assert_eq!(r.steps[2].phase, StepPhase::Pending);

    let d = decide_now(&mut e, "approved", 2, &approve("alice")).await;
    assert!(matches!(d, Decided::Applied(RunPhase::Running)), "{d:?}");
    let r = e.finished("approved", PATIENCE).await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert_eq!(
        r.steps[1].output,
        Some(json!({"approved": true, "by": "alice", "comment": "looks right"}))
    );
    assert_eq!(r.steps[1].attempts, 1);
    // A second decision (a replayed patch, a second approver) changes nothing.
    let again = decide_now(
        &mut e,
        "approved",
        2,
        &Decision::Reject {
            by: "mallory".into(),
            comment: None,
        },
    )
    .await;
    assert_eq!(again, Decided::NotWaiting(Some(StepPhase::Succeeded)));
    assert_eq!(
        decide_now(&mut e, "approved", 9, &approve("alice")).await,
        Decided::NotWaiting(None)
    );
    workers.stop().await;
}

#[tokio::test]
async fn a_rejection_fails_the_step_for_good_and_the_run_follows_its_policy() {
    let mut e = engine(false).await;
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    start(
        &mut e,
        "rejected",
        json!([
            {"id": 1, "tool": "approval", "input": {"message": "Delete the bucket?"}},
            {"id": 2, "tool": "calculator", "input": {"expression": "1"}, "dependsOn": [1]}
        ]),
        &options(),
    )
    .await;
    waiting(&mut e, "rejected", &[1]).await;
    let reject = Decision::Reject {
        by: "bob".into(),
        comment: Some("not today".into()),
    };
    decide_now(&mut e, "rejected", 1, &reject).await;
    let r = e.finished("rejected", PATIENCE).await;
    workers.stop().await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    assert_eq!(
        r.steps[0].error.as_deref(),
        Some("rejected by bob: not today")
    );
    assert_eq!(r.steps[0].attempts, 1, "not retried");
    assert_eq!(r.steps[1].phase, StepPhase::Skipped);
    assert_eq!(
        r.error.as_deref(),
        Some("step 1 (approval) failed: rejected by bob: not today")
    );
}

#[tokio::test]
async fn parallel_gates_decided_in_the_opposite_order_are_independent() {
    let mut e = engine(false).await;
    let workers = e.spawn_workers(2, e.worker_config(4), toolbox()).await;
    let opts = RunOptions {
        failure_policy: FailurePolicy::ContinueIndependent,
        ..options()
    };
    start(
        &mut e,
        "parallel",
        json!([
            {"id": 1, "tool": "approval", "input": {"message": "first?"}},
            {"id": 2, "tool": "approval", "input": {"message": "second?"}},
            {"id": 3, "tool": "calculator", "input": {"expression": "3"}, "dependsOn": [1]},
            {"id": 4, "tool": "calculator", "input": {"expression": "4"}, "dependsOn": [2]}
        ]),
        &opts,
    )
    .await;
    waiting(&mut e, "parallel", &[1, 2]).await;
    decide_now(&mut e, "parallel", 2, &approve("carol")).await;
    // Step 4 runs while step 1 still waits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = e.report("parallel").await;
        if r.steps[3].phase == StepPhase::Succeeded {
            assert_eq!(r.steps[0].phase, StepPhase::WaitingForApproval, "{r:#?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    decide_now(
        &mut e,
        "parallel",
        1,
        &Decision::Reject {
            by: "dave".into(),
            comment: None,
        },
    )
    .await;
    let r = e.finished("parallel", PATIENCE).await;
    workers.stop().await;
    assert_eq!(
        r.steps.iter().map(|s| s.phase).collect::<Vec<_>>(),
        [
            StepPhase::Failed,
            StepPhase::Succeeded,
            StepPhase::Skipped,
            StepPhase::Succeeded
        ],
        "{r:#?}"
    );
    assert_eq!(r.steps[0].error.as_deref(), Some("rejected by dave"));
}

#[tokio::test]
async fn a_tool_that_requires_approval_shows_its_exact_input_and_runs_once_approved() {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/send",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                (
                    [("content-type", "application/json")],
                    json!({"sent": String::from_utf8_lossy(&body)}).to_string(),
                )
            }
        }),
    );
    let addr = crane_testkit::serve(app).await;
    let mut e = engine(false).await;
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    let mut spec = redis_common::http_tool(
        "send-mail",
        format!("http://{addr}/send"),
        json!({"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}),
    );
    spec.requires_approval = true;
    let opts = RunOptions {
        tools: vec![spec],
        ..options()
    };
    start(
        &mut e,
        "gated",
        json!([
            {"id": 1, "tool": "calculator", "input": {"expression": "40+2"}},
            {"id": 2, "tool": "send-mail", "input": {"to": "team-{step_1_output}@example.com"}, "dependsOn": [1]}
        ]),
        &opts,
    )
    .await;
    let r = waiting(&mut e, "gated", &[2]).await;
    let gate = r.steps[1].gate.clone().unwrap_or_else(|| panic!("{r:#?}"));
    assert_eq!(gate.tool.as_deref(), Some("send-mail"));
    assert_eq!(gate.input, Some(json!({"to": "team-42@example.com"})));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "nothing sent before approval"
    );
    decide_now(&mut e, "gated", 2, &approve("alice")).await;
    let r = e.finished("gated", PATIENCE).await;
    workers.stop().await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(r.steps[1].attempts, 1, "{r:#?}");
}

#[tokio::test]
async fn cancelling_skips_waiting_gates_and_bad_gate_inputs_fail_saying_where() {
    let mut e = engine(false).await;
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    start(
        &mut e,
        "cancelled",
        json!([{"id": 1, "tool": "approval", "input": {"message": "ok?"}}]),
        &options(),
    )
    .await;
    waiting(&mut e, "cancelled", &[1]).await;
    crane_engine::cancel_run(&mut e.conn, &run_keys("cancelled"))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let r = e.finished("cancelled", PATIENCE).await;
    assert_eq!(r.phase, RunPhase::Cancelled, "{r:#?}");
    assert_eq!(r.steps[0].phase, StepPhase::Skipped);
    assert_eq!(
        decide_now(&mut e, "cancelled", 1, &approve("alice")).await,
        Decided::NotWaiting(Some(StepPhase::Skipped))
    );

    let many: Vec<String> = (0..65).map(|i| format!("user-{i}")).collect();
    start(
        &mut e,
        "hostile",
        json!([
            {"id": 1, "tool": "approval", "input": {"message": "x", "timeoutSeconds": 0}},
            {"id": 2, "tool": "approval", "input": {"message": "x", "approvers": many}},
            {"id": 3, "tool": "approval", "input": {"message": "x", "onTimeout": "Maybe"}}
        ]),
        &RunOptions {
            failure_policy: FailurePolicy::ContinueIndependent,
            ..options()
        },
    )
    .await;
    let r = e.finished("hostile", PATIENCE).await;
    workers.stop().await;
    for (step, path) in r
        .steps
        .iter()
        .zip(["timeoutSeconds", "approvers", "onTimeout"])
    {
        assert_eq!(step.phase, StepPhase::Failed, "{step:#?}");
        let error = step.error.clone().unwrap_or_default();
        assert!(error.contains(path), "{path}: {error}");
        assert_eq!(step.attempts, 1, "invalid input is not retried");
    }
}

#[tokio::test]
async fn a_gate_outlives_redis_restarting_and_the_workers_that_parked_it() {
    let mut e = engine(true).await;
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    start(
        &mut e,
        "durable",
        json!([
            {"id": 1, "tool": "approval", "input": {"message": "ok?"}},
            {"id": 2, "tool": "calculator", "input": {"expression": "2+2"}, "dependsOn": [1]}
        ]),
        &options(),
    )
    .await;
    waiting(&mut e, "durable", &[1]).await;
    workers.stop().await;
    e.server
        .restart()
        .unwrap_or_else(|err| panic!("restarting redis: {err}"));
    // ACL users are not in the append-only file: the operator re-creates them (here, by hand).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ensured = crane_engine::tenancy::ensure_user(
            &mut e.admin,
            redis_common::NAMESPACE,
            &[redis_common::PASSWORD],
        )
        .await;
        if ensured.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ensured:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The tests' connection reconnects on its first command after the restart.
    loop {
        let read = crane_engine::api::run_report(
            &mut e.conn,
            &run_keys("durable"),
            crane_engine::api::Outputs::Full,
        )
        .await;
        if read.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{read:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = waiting(&mut e, "durable", &[1]).await;
    assert_eq!(
        r.steps[0].gate.as_ref().map(|g| g.message.as_str()),
        Some("ok?")
    );
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox()).await;
    decide_now(&mut e, "durable", 1, &approve("alice")).await;
    let r = e.finished("durable", PATIENCE).await;
    workers.stop().await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert_eq!(r.result, Some(json!(4)));
}
