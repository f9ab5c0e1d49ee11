//! Rebuilding runs against a real Redis: `restore_run` (Redis lost the run; the AgentRun
//! status kept the completed steps) and `retry_run` (retry from failure), with in-process
//! workers doing the rest.

mod redis_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crane_core::plan::{Plan, StepId};
use crane_core::run::{RunOptions, RunPhase, RunReport, StepPhase};
use crane_engine::api::{InitOutcome, init_run, run_report};
use crane_engine::{
    EngineError, RestoredStep, RetryOutcome, RunKeys, cancel_run, restore_run, retry_run,
};
use crane_tools::TodoStore;
use crane_tools::todo::MemoryTodoStore;
use redis_common::{Engine, options, plan};
use serde_json::{Value, json};

/// Guard against a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(60);

/// Restores run `run` of `p` on the test pool, the `completed` steps done.
async fn restore(
    e: &mut Engine,
    run: &str,
    p: &Plan,
    completed: &BTreeMap<StepId, RestoredStep>,
) -> Result<InitOutcome, EngineError> {
    let config = redis_common::fast_config();
    let keys = RunKeys::new(e.pool.namespace(), run)?;
    restore_run(
        &mut e.conn,
        &keys,
        &e.pool,
        p,
        &options(),
        completed,
        &config,
    )
    .await
}

fn done(output: Value, attempts: u32) -> RestoredStep {
    RestoredStep {
        output,
        attempts,
        started_ms: Some(1_700_000_000_000),
        finished_ms: Some(1_700_000_001_000),
    }
}

fn step(r: &RunReport, id: u32) -> &crane_core::run::StepReport {
    r.steps
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no step {id} in {r:#?}"))
}

fn number(v: &Option<Value>) -> Option<f64> {
    v.as_ref().and_then(Value::as_f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_run_feeds_restored_outputs_to_later_steps_and_runs_only_the_rest() {
    let mut e = redis_common::engine(false).await;
    let p = plan(json!([
        {"id": 1, "tool": "calculator", "input": {"expression": "1 + 1"}},
        {"id": 2, "tool": "calculator", "input": {"expression": "{step_1_output} * 2"}, "dependsOn": [1]},
        {"id": 3, "tool": "calculator", "input": {"expression": "{step_2_output} + 1"}, "dependsOn": [2]},
        {"id": 4, "tool": "calculator", "input": {"expression": "5"}}
    ]));
    // 41 is not what step 1 computes: a re-run of step 1 would show up as 2 and 4 and 5.
    let completed = BTreeMap::from([(1, done(json!(41), 3))]);
    let outcome = restore(&mut e, "restored", &p, &completed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome, InitOutcome::Created);
    let before = e.report("restored").await;
    assert_eq!(before.phase, RunPhase::Running);
    assert_eq!(
        [1, 2, 3, 4].map(|id| step(&before, id).phase),
        [
            StepPhase::Succeeded,
            StepPhase::Ready,
            StepPhase::Pending,
            StepPhase::Ready
        ]
    );
    assert_eq!(
        step(&before, 1).started_at.as_deref(),
        Some("2023-11-14T22:13:20.000Z")
    );

    let workers = e
        .spawn_workers(2, e.worker_config(4), Arc::new(crane_tools::in_memory()))
        .await;
    let r = e.finished("restored", PATIENCE).await;
    workers.stop().await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert_eq!(
        [1, 2, 3, 4].map(|id| number(&step(&r, id).output)),
        [Some(41.0), Some(82.0), Some(83.0), Some(5.0)]
    );
    assert_eq!([1, 2, 3, 4].map(|id| step(&r, id).attempts), [3, 1, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_never_overwrites_a_run_redis_still_has_and_a_fully_done_run_settles_at_once() {
    let mut e = redis_common::engine(false).await;
    let p = plan(json!([
        {"id": 1, "tool": "calculator", "input": {"expression": "2"}},
        {"id": 2, "tool": "calculator", "input": {"expression": "3"}, "dependsOn": [1]}
    ]));
    let config = redis_common::fast_config();
    init_run(
        &mut e.conn,
        &redis_common::run_keys("kept"),
        &e.pool,
        &p,
        &options(),
        &config,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let all = BTreeMap::from([(1, done(json!(7), 1)), (2, done(json!({"x": [1]}), 2))]);
    let again = restore(&mut e, "kept", &p, &all)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, InitOutcome::AlreadyExists);
    let kept = e.report("kept").await;
    assert_eq!(kept.phase, RunPhase::Running);
    assert!(kept.steps.iter().all(|s| s.output.is_none()), "{kept:#?}");

    // Every step done: the run is Succeeded without any worker, with the sink's output.
    let outcome = restore(&mut e, "all-done", &p, &all)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome, InitOutcome::Created);
    let r = e.report("all-done").await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert_eq!(r.result, Some(json!({"x": [1]})));
    assert_eq!(step(&r, 2).attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_rejects_hostile_input_with_the_reason() {
    let mut e = redis_common::engine(false).await;
    let p = plan(json!([{"id": 1, "tool": "calculator", "input": {"expression": "2"}}]));
    let stranger = BTreeMap::from([(99, done(json!(1), 1))]);
    let err = restore(&mut e, "r", &p, &stranger).await.unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidPlan(m) if m.contains("step 99")),
        "{err}"
    );
    let none = BTreeMap::new();
    for bad_id in ["", "a}b", "a{b", "a b", &"x".repeat(300)] {
        let r = restore(&mut e, bad_id, &p, &none).await;
        assert!(r.is_err(), "{bad_id:?}");
    }
    for bad_ns in ["", "A", "a/b", "{x}"] {
        assert!(RunKeys::new(bad_ns, "r").is_err(), "{bad_ns:?}");
    }
    let cycle = plan(json!([
        {"id": 1, "tool": "calculator", "input": {"expression": "2"}, "dependsOn": [2]},
        {"id": 2, "tool": "calculator", "input": {"expression": "2"}, "dependsOn": [1]}
    ]));
    // Even with every step "done", a cycle is refused before anything is written.
    let both = BTreeMap::from([(1, done(json!(1), 1)), (2, done(json!(1), 1))]);
    let err = restore(&mut e, "cyc", &cycle, &both).await.unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    assert!(matches!(
        run_report(
            &mut e.conn,
            &redis_common::run_keys("cyc"),
            crane_engine::api::Outputs::Full
        )
        .await,
        Err(EngineError::RunNotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_from_failure_reruns_only_failed_and_skipped_steps_and_the_run_succeeds() {
    let mut e = redis_common::engine(false).await;
    let config = redis_common::fast_config();
    let store = Arc::new(MemoryTodoStore::new());
    let toolbox = Arc::new(crane_tools::standard(store.clone()));
    // Step 2 completes todo 2, which does not exist until the test adds it by hand.
    let p = plan(json!([
        {"id": 1, "tool": "todo_store.add", "input": {"title": "first"}},
        {"id": 2, "tool": "todo_store.complete", "input": {"id": 2}, "dependsOn": [1]},
        {"id": 3, "tool": "todo_store.list", "input": {}, "dependsOn": [2]}
    ]));
    let opts = RunOptions {
        retry: crane_core::run::RetryPolicy {
            max_attempts: 2,
            initial_backoff_ms: 10,
            max_backoff_ms: 20,
        },
        ..options()
    };
    init_run(
        &mut e.conn,
        &redis_common::run_keys("retry"),
        &e.pool,
        &p,
        &opts,
        &config,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox).await;
    let failed = e.finished("retry", PATIENCE).await;
    assert_eq!(failed.phase, RunPhase::Failed, "{failed:#?}");
    assert_eq!(
        [1, 2, 3].map(|id| step(&failed, id).phase),
        [StepPhase::Succeeded, StepPhase::Failed, StepPhase::Skipped]
    );
    let by_hand = store
        .add(redis_common::NAMESPACE, "by-hand", "second")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(by_hand.id, 2);

    let outcome = retry_run(&mut e.conn, &redis_common::run_keys("retry"), &config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome, RetryOutcome::Retried { steps: 2 });
    let r = e.finished("retry", PATIENCE).await;
    workers.stop().await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert_eq!(r.error, None);
    assert_eq!(
        step(&r, 1).attempts,
        1,
        "the completed step kept its attempts"
    );
    assert_eq!(step(&r, 1).output, step(&failed, 1).output);
    assert_eq!(
        step(&r, 2).attempts,
        1,
        "the failed step got a fresh budget"
    );
    let todos = store
        .list(redis_common::NAMESPACE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(todos.len(), 2, "step 1 did not add again: {todos:?}");
    assert!(todos.iter().any(|t| t.id == 2 && t.completed), "{todos:?}");

    // A second retry of the same run, and a retry of an unknown run, change nothing.
    assert_eq!(
        retry_run(&mut e.conn, &redis_common::run_keys("retry"), &config)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        RetryOutcome::NotFailed(RunPhase::Succeeded)
    );
    assert!(matches!(
        retry_run(&mut e.conn, &redis_common::run_keys("nobody"), &config).await,
        Err(EngineError::RunNotFound(_))
    ));
    // A run id that would break out of its hash slot never reaches Redis.
    assert!(crane_engine::RunKeys::new(redis_common::NAMESPACE, "a}b").is_err());

    // A cancelled run (the operator cancels one past its deadline) can be retried as well.
    init_run(
        &mut e.conn,
        &redis_common::run_keys("cancelled"),
        &e.pool,
        &p,
        &opts,
        &config,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cancel_run(&mut e.conn, &redis_common::run_keys("cancelled"))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        RunPhase::Cancelled
    );
    assert_eq!(
        retry_run(&mut e.conn, &redis_common::run_keys("cancelled"), &config)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        RetryOutcome::Retried { steps: 3 }
    );
    let again = e.report("cancelled").await;
    assert_eq!(again.phase, RunPhase::Running, "{again:#?}");
    assert_eq!(
        [1, 2, 3].map(|id| step(&again, id).phase),
        [StepPhase::Ready, StepPhase::Pending, StepPhase::Pending]
    );
}
