//! The engine's scripts and pool operations against a real Redis: duplicate and late
//! completions, lease reclaim, queue depth, circuit breakers, cancel, TTLs, hostile ids.

mod common;
mod redis_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crane_core::run::{RetryPolicy, RunOptions, RunPhase, StepPhase};
use crane_core::tool::{Tool, ToolContext, ToolError, ToolFuture, ToolSpec};
use crane_engine::api::{InitOutcome, init_run, run_report};
use crane_engine::queue::{BreakerPhase, PoolAfter, pool_after};
use crane_engine::replies::{BreakerUpdate, CompleteReply, StartReply, Started, StepEnded};
use crane_engine::scripts::{self, AttemptEnd, AttemptOutcome, StartHint, StartMode};
use crane_engine::{
    BreakerConfig, EngineConfig, EngineError, RunKeys, breaker_states, cancel_run, delete_run,
    queue_depth,
};
use redis::aio::ConnectionManager;
use redis_common::plan;
use serde_json::{Value, json};

async fn start(
    conn: &mut ConnectionManager,
    run: &str,
    step: &str,
    owner: &str,
    entry: &str,
    mode: StartMode,
) -> StartReply {
    let keys = RunKeys::new(redis_common::NAMESPACE, run).unwrap_or_else(|e| panic!("{e}"));
    let hint = StartHint { step, owner, entry };
    let mut rows = scripts::start(&keys, mode, &[hint])
        .run(conn, "test start")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.remove(0)
}

/// The attempt a start reply began, or a panic naming what came back instead.
fn attempt(reply: StartReply) -> u32 {
    match reply {
        StartReply::Started(Started { attempt, .. }) => attempt,
        other => panic!("not started: {other:?}"),
    }
}

fn dropped(reply: &StartReply) -> bool {
    matches!(reply, StartReply::Dropped { .. })
}

fn succeeded<'a>(step: &'a str, owner: &'a str, attempt: u32, output: &'a str) -> AttemptEnd<'a> {
    AttemptEnd {
        step,
        owner,
        attempt,
        outcome: AttemptOutcome::Output(output),
        backoff_ms: 0,
    }
}

async fn complete_all(
    conn: &mut ConnectionManager,
    run: &str,
    ends: &[AttemptEnd<'_>],
) -> Vec<CompleteReply> {
    let keys = RunKeys::new(redis_common::NAMESPACE, run).unwrap_or_else(|e| panic!("{e}"));
    scripts::complete(&keys, ends)
        .run(conn, "test complete")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn complete(
    conn: &mut ConnectionManager,
    run: &str,
    step: &str,
    owner: &str,
    attempt: u32,
    output: &str,
) -> CompleteReply {
    let mut rows = complete_all(conn, run, &[succeeded(step, owner, attempt, output)]).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.remove(0)
}

/// What an accepted completion did, or a panic naming what came back instead.
fn accepted(reply: CompleteReply) -> StepEnded {
    match reply {
        CompleteReply::Accepted(ended) => ended,
        other => panic!("not accepted: {other:?}"),
    }
}

#[tokio::test]
async fn duplicate_and_late_completions_are_ignored() {
    let mut e = redis_common::engine(false).await;
    let p = plan(json!([
        {"id": 1, "tool": "calculator", "input": {"expression": "1"}},
        {"id": 2, "tool": "calculator", "input": {"expression": "2"}, "dependsOn": [1]},
    ]));
    let created = e.init("dup", &p, &RunOptions::default()).await;
    assert_eq!(created.ok(), Some(InitOutcome::Created));
    // Initialising again is idempotent, never a second run.
    let again = e.init("dup", &p, &RunOptions::default()).await;
    assert_eq!(again.ok(), Some(InitOutcome::AlreadyExists));

    // Step 2 is not ready: a hint for it is dropped.
    let new = StartMode::New;
    assert!(dropped(
        &start(&mut e.conn, "dup", "2", "a", "1-1", new).await
    ));
    assert_eq!(
        attempt(start(&mut e.conn, "dup", "1", "a", "1-1", new).await),
        1
    );
    // A duplicated hint of a running step does not start it twice.
    assert!(dropped(
        &start(&mut e.conn, "dup", "1", "b", "1-2", new).await
    ));
    // A completion by someone who does not own the step is ignored.
    assert!(matches!(
        complete(&mut e.conn, "dup", "1", "b", 1, "99").await,
        CompleteReply::Stale { .. }
    ));
    let c = accepted(complete(&mut e.conn, "dup", "1", "a", 1, "1").await);
    assert_eq!(c.ready, ["2|calculator"], "step 2 became ready: {c:?}");
    // The same completion delivered twice is ignored, and does not overwrite the output.
    assert_eq!(
        complete(&mut e.conn, "dup", "1", "a", 1, "7").await,
        CompleteReply::Stale { held: false }
    );
    let r = run_report(
        &mut e.conn,
        &redis_common::run_keys("dup"),
        crane_engine::api::Outputs::Full,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.steps[0].output, Some(json!(1)));
    assert_eq!(r.steps[0].attempts, 1);
    assert_eq!(r.steps[1].phase, StepPhase::Ready);
}

/// Workers start and complete a whole batch of a run's steps in one script call; each item
/// is judged on its own, in order, so a bad one never spoils its neighbours.
#[tokio::test]
async fn batched_starts_and_completions_judge_each_step_on_its_own() {
    let mut e = redis_common::engine(false).await;
    let p = plan(json!([
        {"id": 1, "tool": "calculator", "input": {"expression": "1"}},
        {"id": 2, "tool": "calculator", "input": {"expression": "2"}},
        {"id": 3, "tool": "calculator", "input": {"expression": "3"}, "dependsOn": [1, 2]},
    ]));
    e.init("batch", &p, &RunOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let keys = RunKeys::new(redis_common::NAMESPACE, "batch").unwrap_or_else(|e| panic!("{e}"));
    let hint = |step, owner, entry| StartHint { step, owner, entry };
    let hints = [
        hint("1", "a", "1-1"), // ready: starts
        hint("3", "a", "1-2"), // waits for 1 and 2: dropped
        hint("1", "b", "1-3"), // the same step again in the same batch: dropped
        hint("2", "a", "1-4"), // ready: starts
        hint("9", "a", "1-5"), // not in the plan: dropped
    ];
    let rows = scripts::start(&keys, StartMode::New, &hints)
        .run(&mut e.conn, "test batch start")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let started: Vec<bool> = rows.iter().map(|r| !dropped(r)).collect();
    assert_eq!(started, [true, false, false, true, false], "{rows:?}");
    let why = |r: &StartReply| match r {
        StartReply::Dropped { why } => why.clone(),
        other => format!("{other:?}"),
    };
    assert_eq!(why(&rows[2]), "step is Running");
    assert_eq!(why(&rows[4]), "no such step");

    let rows = complete_all(
        &mut e.conn,
        "batch",
        &[
            succeeded("1", "b", 1, "10"),
            succeeded("1", "a", 1, "1"),
            succeeded("2", "a", 1, "2"),
        ],
    )
    .await;
    // Step 1 belongs to owner a: b's completion is stale (and a holds the entry), a's counts.
    let mut rows = rows.into_iter();
    assert_eq!(rows.next(), Some(CompleteReply::Stale { held: true }));
    let first = rows.next().map(accepted);
    assert_eq!(first.as_ref().map(|c| c.run_phase), Some(RunPhase::Running));
    assert_eq!(
        first.map(|c| c.ready),
        Some(vec![]),
        "step 3 still waits for step 2"
    );
    // The last completion of the batch frees step 3.
    assert_eq!(
        rows.next().map(|c| accepted(c).ready),
        Some(vec!["3|calculator".to_owned()])
    );
    let r = run_report(
        &mut e.conn,
        &redis_common::run_keys("batch"),
        crane_engine::api::Outputs::Full,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.steps[0].output, Some(json!(1)));
    assert_eq!(r.steps[1].output, Some(json!(2)));
    assert_eq!(r.steps[2].phase, StepPhase::Ready);
}

#[tokio::test]
async fn a_reclaimed_step_counts_an_attempt_and_the_old_owner_is_ignored() {
    let mut e = redis_common::engine(false).await;
    let p = plan(json!([{"id": 1, "tool": "calculator", "input": {"expression": "1"}}]));
    let options = RunOptions {
        retry: RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        },
        ..RunOptions::default()
    };
    e.init("reclaim", &p, &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (new, reclaim) = (StartMode::New, StartMode::Reclaim);
    assert_eq!(
        attempt(start(&mut e.conn, "reclaim", "1", "a", "5-0", new).await),
        1
    );
    // Another worker reclaims the entry after the lease: a new attempt, a new owner.
    assert!(
        dropped(&start(&mut e.conn, "reclaim", "1", "b", "9-9", reclaim).await),
        "wrong entry"
    );
    assert_eq!(
        attempt(start(&mut e.conn, "reclaim", "1", "b", "5-0", reclaim).await),
        2
    );
    // The old owner's late completion is ignored and it must not acknowledge the entry.
    assert_eq!(
        complete(&mut e.conn, "reclaim", "1", "a", 1, "1").await,
        CompleteReply::Stale { held: true }
    );
    // With the attempts used up, one more reclaim fails the step for good.
    let f = start(&mut e.conn, "reclaim", "1", "c", "5-0", reclaim).await;
    assert!(
        matches!(&f, StartReply::Finished(ended) if ended.run_phase == RunPhase::Failed),
        "{f:?}"
    );
    let r = run_report(
        &mut e.conn,
        &redis_common::run_keys("reclaim"),
        crane_engine::api::Outputs::Full,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.phase, RunPhase::Failed);
    let err = r.error.unwrap_or_default();
    assert!(
        err.contains("lease expired")
            && err.starts_with("step 1 (calculator) failed after 2 attempts"),
        "{err}"
    );
    // Finished runs expire.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(
            RunKeys::new(redis_common::NAMESPACE, "reclaim")
                .map(|k| k.meta())
                .unwrap_or_default(),
        )
        .query_async(&mut e.conn)
        .await
        .unwrap_or(-3);
    assert!(ttl > 0, "ttl {ttl}");
}

#[tokio::test]
async fn queue_depth_counts_waiting_and_running() {
    let mut e = redis_common::engine(false).await;
    let empty = queue_depth(&mut e.conn, &e.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(empty.total(), 0);
    let p = plan(json!(
        (1..=5)
            .map(|i| json!({"id": i, "tool": "calculator", "input": {"expression": "1"}}))
            .collect::<Vec<_>>()
    ));
    e.init("depth", &p, &RunOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let d = queue_depth(&mut e.conn, &e.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((d.queued, d.running, d.delayed), (5, 0, 0));
    crane_engine::queue::ensure_group(&mut e.conn, &e.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("t")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(e.pool.queue())
        .arg(">")
        .query_async(&mut e.conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let d = queue_depth(&mut e.conn, &e.pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((d.queued, d.running, d.total()), (3, 2, 5));
}

#[tokio::test]
async fn cancel_skips_waiting_steps_and_delete_removes_everything() {
    let mut e = redis_common::engine(false).await;
    let p = plan(json!([
        {"id": 1, "tool": "wait", "input": {"ms": 10}},
        {"id": 2, "tool": "wait", "input": {"ms": 10}, "dependsOn": [1]},
    ]));
    e.init("cancel", &p, &RunOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        attempt(start(&mut e.conn, "cancel", "1", "a", "1-0", StartMode::New).await),
        1
    );
    // Step 1 runs on: the run is not over until it ends.
    assert_eq!(
        cancel_run(&mut e.conn, &redis_common::run_keys("cancel"))
            .await
            .ok(),
        Some(RunPhase::Running)
    );
    let c = accepted(complete(&mut e.conn, "cancel", "1", "a", 1, "{}").await);
    assert_eq!(
        (c.run_phase, c.ready.len()),
        (RunPhase::Cancelled, 0),
        "nothing new starts: {c:?}"
    );
    let r = run_report(
        &mut e.conn,
        &redis_common::run_keys("cancel"),
        crane_engine::api::Outputs::Full,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (r.steps[0].phase, r.steps[1].phase),
        (StepPhase::Succeeded, StepPhase::Skipped)
    );
    assert_eq!(
        r.error.as_deref(),
        Some("run cancelled after 1 of 2 steps succeeded")
    );
    delete_run(&mut e.conn, &redis_common::run_keys("cancel"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        run_report(
            &mut e.conn,
            &redis_common::run_keys("cancel"),
            crane_engine::api::Outputs::Full
        )
        .await,
        Err(EngineError::RunNotFound(_))
    ));
    assert!(matches!(
        cancel_run(&mut e.conn, &redis_common::run_keys("cancel")).await,
        Err(EngineError::RunNotFound(_))
    ));
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(e.pool.runs())
        .query_async(&mut e.conn)
        .await
        .unwrap_or_default();
    assert!(members.is_empty(), "{members:?}");
}

#[tokio::test]
async fn hostile_ids_never_reach_redis() {
    let mut e = redis_common::engine(false).await;
    let p = plan(json!([{"id": 1, "tool": "calculator", "input": {"expression": "1"}}]));
    for bad in ["a}b", "{x}", "a|b", "", "x y", "a\nb"] {
        let r = e.init(bad, &p, &RunOptions::default()).await;
        assert!(
            matches!(r, Err(EngineError::InvalidRunId { .. })),
            "{bad:?}: {r:?}"
        );
        assert!(matches!(
            RunKeys::new(redis_common::NAMESPACE, bad),
            Err(EngineError::InvalidRunId { .. })
        ));
    }
    for ns in ["Bad NS", "a:b", "*", "ns}", ""] {
        assert!(
            matches!(
                RunKeys::new(ns, "ok"),
                Err(EngineError::InvalidNamespace { .. })
            ),
            "{ns:?}"
        );
    }
    // A run goes on a pool of its own namespace: another namespace's pool is refused.
    let foreign = crane_engine::PoolName::parse("other/default").unwrap_or_else(|e| panic!("{e}"));
    let r = init_run(
        &mut e.conn,
        &redis_common::run_keys("ok"),
        &foreign,
        &p,
        &RunOptions::default(),
        &EngineConfig::default(),
    )
    .await;
    assert!(matches!(r, Err(EngineError::InvalidPool { .. })), "{r:?}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut e.conn)
        .await
        .unwrap_or_default();
    assert!(keys.is_empty(), "{keys:?}");
}

fn breaker_cfg() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 2,
        cooldown: Duration::from_millis(300),
        success_threshold: 2,
    }
}

async fn record(e: &mut redis_common::Engine, ok: bool) -> BreakerUpdate {
    let after = PoolAfter {
        run: "r".into(),
        breaker: Some(("wait".into(), Some(ok))),
        ..PoolAfter::default()
    };
    let mut reply = pool_after(&e.pool, &breaker_cfg(), &[after])
        .run(&mut e.conn, "test breaker")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // One section naming one tool: its breaker after the call.
    assert_eq!(reply.len(), 1, "{reply:?}");
    let update = reply.remove(0);
    assert_eq!(update.tool, "wait", "{update:?}");
    update
}

async fn phase_of(e: &mut redis_common::Engine) -> BreakerPhase {
    let states = breaker_states(&mut e.conn, &e.pool, &breaker_cfg())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    states
        .iter()
        .find(|s| s.tool == "wait")
        .map(|s| s.phase)
        .unwrap_or_default()
}

async fn until_half_open(e: &mut redis_common::Engine) {
    while phase_of(e).await != BreakerPhase::HalfOpen {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn breaker_opens_half_opens_and_closes() {
    let mut e = redis_common::engine(false).await;
    assert_eq!(record(&mut e, false).await.phase, BreakerPhase::Closed);
    // A success resets the consecutive count.
    record(&mut e, true).await;
    assert_eq!(record(&mut e, false).await.phase, BreakerPhase::Closed);
    let opened = record(&mut e, false).await;
    assert_eq!(opened.phase, BreakerPhase::Open);
    assert!(opened.remaining_open_ms > 0, "{opened:?}");
    assert_eq!(phase_of(&mut e).await, BreakerPhase::Open);
    until_half_open(&mut e).await;
    // A failed probe re-opens it.
    assert_eq!(record(&mut e, false).await.phase, BreakerPhase::Open);
    until_half_open(&mut e).await;
    assert_eq!(record(&mut e, true).await.phase, BreakerPhase::HalfOpen);
    assert_eq!(record(&mut e, true).await.phase, BreakerPhase::Closed);
    assert_eq!(phase_of(&mut e).await, BreakerPhase::Closed);
}

/// `gate`: fails transiently while the switch is on (a dependency that is down).
struct Gate(Arc<AtomicBool>);

impl Tool for Gate {
    fn execute<'a>(&'a self, _ctx: &'a ToolContext, _input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            if self.0.load(Ordering::SeqCst) {
                Err(ToolError::Transient("gate is shut".into()))
            } else {
                Ok(json!("open"))
            }
        })
    }

    /// A dependency that is down: what breakers are for.
    fn calls_out(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_behind_an_open_breaker_waits_instead_of_failing() {
    let mut e = redis_common::engine(false).await;
    let shut = Arc::new(AtomicBool::new(true));
    let gate = ToolSpec::new(
        "gate",
        "Fails while the test holds the gate shut.",
        json!({"type": "object", "properties": {}, "additionalProperties": false}),
    );
    let toolbox = Arc::new(
        crane_tools::in_memory().with([(gate, Arc::new(Gate(shut.clone())) as Arc<dyn Tool>)]),
    );
    let mut config = e.worker_config(4);
    config.engine.breaker = BreakerConfig {
        failure_threshold: 2,
        cooldown: Duration::from_millis(2000),
        success_threshold: 1,
    };
    let workers = e.spawn_workers(1, config.clone(), toolbox).await;
    let options = RunOptions {
        retry: RetryPolicy {
            max_attempts: 20,
            initial_backoff_ms: 1,
            max_backoff_ms: 1,
        },
        ..RunOptions::default()
    };
    // Two failures open the breaker (each step fails once, then waits for a retry).
    let p = plan(
        json!([{"id": 1, "tool": "gate", "input": {}}, {"id": 2, "tool": "gate", "input": {}}]),
    );
    init_run(
        &mut e.conn,
        &redis_common::run_keys("gated"),
        &e.pool,
        &p,
        &options,
        &config.engine,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    loop {
        let states = breaker_states(&mut e.conn, &e.pool, &config.engine.breaker)
            .await
            .unwrap_or_default();
        if states
            .iter()
            .any(|s| s.tool == "gate" && s.phase == BreakerPhase::Open)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The next hints are parked until the breaker half-opens (due far later than any 1 ms
    // retry backoff), and nothing fails meanwhile.
    loop {
        let (secs, _): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut e.conn)
            .await
            .unwrap_or((0, 0));
        let parked: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(e.pool.delayed())
            .arg(secs * 1000 + 500)
            .arg("+inf")
            .query_async(&mut e.conn)
            .await
            .unwrap_or_default();
        if !parked.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = run_report(
        &mut e.conn,
        &redis_common::run_keys("gated"),
        crane_engine::api::Outputs::Full,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.phase, RunPhase::Running, "{r:#?}");
    assert!(
        r.steps
            .iter()
            .all(|s| s.phase != StepPhase::Failed && s.attempts < 20),
        "{r:#?}"
    );
    // A held step says why it waits, in the report the operator turns into status.
    assert!(
        r.steps.iter().any(|s| s
            .message
            .as_deref()
            .is_some_and(|m| m.contains("circuit breaker of tool gate"))),
        "{r:#?}"
    );
    shut.store(false, Ordering::SeqCst);
    let r = crane_engine::wait_for_run(
        &e.client,
        &mut e.conn,
        &redis_common::run_keys("gated"),
        Some(Duration::from_secs(60)),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert_eq!(r.result, Some(json!({"step_1": "open", "step_2": "open"})));
    workers.stop().await;
}

/// `blob`: outputs a string of `bytes` bytes.
struct Blob;

impl Tool for Blob {
    fn execute<'a>(&'a self, _ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let n = input["bytes"].as_u64().unwrap_or(0) as usize;
            Ok(json!("é".repeat(n / 2)))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_bounded_per_step_per_run_and_when_read() {
    use crane_core::tool::{MAX_OUTPUT_BYTES, MAX_RUN_OUTPUT_BYTES};
    let mut e = redis_common::engine(false).await;
    let blob = ToolSpec::new(
        "blob",
        "Outputs `bytes` bytes.",
        json!({"type": "object", "properties": {"bytes": {"type": "integer"}}}),
    );
    let toolbox =
        Arc::new(crane_tools::in_memory().with([(blob, Arc::new(Blob) as Arc<dyn Tool>)]));
    let workers = e.spawn_workers(1, e.worker_config(4), toolbox).await;
    let options = RunOptions {
        failure_policy: crane_core::run::FailurePolicy::ContinueIndependent,
        ..redis_common::options()
    };

    // A step over the per-step limit fails, for good (the same call would do it again).
    let over = MAX_OUTPUT_BYTES + 2;
    e.init(
        "too-big",
        &plan(json!([
            {"id": 1, "tool": "blob", "input": {"bytes": over}},
            {"id": 2, "tool": "blob", "input": {"bytes": 10}}
        ])),
        &options,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let r = e.finished("too-big", Duration::from_secs(60)).await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    let s1 = &r.steps[0];
    assert_eq!((s1.phase, s1.attempts), (StepPhase::Failed, 1), "{s1:#?}");
    let err = s1.error.as_deref().unwrap_or_default();
    assert!(err.contains("at most 1048576 bytes"), "{err}");
    assert_eq!(r.steps[1].phase, StepPhase::Succeeded);

    // Outputs under the step limit but over the run's total: the step crossing it fails.
    let each = MAX_OUTPUT_BYTES - 10;
    let n = MAX_RUN_OUTPUT_BYTES / each + 1;
    let steps: Vec<Value> = (1..=n)
        .map(|i| json!({"id": i, "tool": "blob", "input": {"bytes": each}}))
        .collect();
    e.init("total", &plan(json!(steps)), &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = e.finished("total", Duration::from_secs(120)).await;
    let failed: Vec<_> = r
        .steps
        .iter()
        .filter(|s| s.phase == StepPhase::Failed)
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "exactly the step crossing the limit: {r:#?}"
    );
    let err = failed[0].error.as_deref().unwrap_or_default();
    assert!(err.contains("at most 16777216 bytes"), "{err}");

    // The operator's read: previews of what is large, whole outputs of what is small.
    let keys = redis_common::run_keys("too-big");
    let preview = crane_engine::api::Outputs::Preview {
        step_bytes: 7,
        result_bytes: 7,
    };
    let r = run_report(&mut e.conn, &redis_common::run_keys("total"), preview)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let out = r
        .steps
        .iter()
        .find_map(|s| s.output.clone())
        .unwrap_or_default();
    assert_eq!(out["truncated"], true, "{out}");
    assert_eq!(out["sizeBytes"], json!(each + 2), "{out}");
    // 7 bytes of `"ééé…`: the quote and three whole characters.
    assert_eq!(out["preview"], "\"ééé", "{out}");
    let small = crane_engine::api::Outputs::Preview {
        step_bytes: 100,
        result_bytes: 100,
    };
    let r = run_report(&mut e.conn, &keys, small)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.steps[1].output, Some(json!("ééééé")));
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_of_local_tools_never_open_a_breaker() {
    let mut e = redis_common::engine(false).await;
    let mut config = e.worker_config(8);
    config.engine.breaker = BreakerConfig {
        failure_threshold: 2,
        cooldown: Duration::from_secs(60),
        success_threshold: 1,
    };
    let workers = e
        .spawn_workers(1, config.clone(), Arc::new(crane_tools::in_memory()))
        .await;
    // Six `wait` steps time out on their own 50 ms timeout (as a careless plan would).
    let slow: Vec<Value> = (1..=6)
        .map(|i| json!({"id": i, "tool": "wait", "input": {"ms": 2000}}))
        .collect();
    let options = RunOptions {
        step_timeout_ms: 50,
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        failure_policy: crane_core::run::FailurePolicy::ContinueIndependent,
        ..RunOptions::default()
    };
    e.init("careless", &plan(json!(slow)), &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = e.finished("careless", Duration::from_secs(60)).await;
    assert!(
        r.steps.iter().all(|s| s.phase == StepPhase::Failed),
        "{r:#?}"
    );
    let states = breaker_states(&mut e.conn, &e.pool, &config.engine.breaker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        states.iter().all(|s| s.tool != "wait"),
        "a local tool's timeouts reached its breaker: {states:?}"
    );
    // Another run's `wait` runs at once, nothing holds it.
    e.init(
        "bystander",
        &plan(json!([{"id": 1, "tool": "wait", "input": {"ms": 10}}])),
        &redis_common::options(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let r = e.finished("bystander", Duration::from_secs(60)).await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert!(
        r.steps
            .iter()
            .all(|s| s.attempts == 1 && s.message.is_none())
    );
    workers.stop().await;
}
