//! The scenario suite every engine runs: the DAG rules as a user sees them in a run report.
//! Each scenario takes `&dyn Executor` whose toolbox has the standard tools plus `flaky`
//! (see `super::scenario_toolbox`), uses its own run id, and asserts outcomes only (phases,
//! attempts, outputs, timestamp order), never wall-clock durations.
//!
//! The list of scenarios is [`scenario_tests`]: adding one there runs it on every engine.

use std::sync::atomic::{AtomicU32, Ordering};

use crane_core::plan::{Plan, StepId};
use crane_core::run::{
    FailurePolicy, RetryPolicy, RunOptions, RunPhase, RunReport, StepPhase, StepReport,
};
use crane_engine::{Executor, RunRequest};
use serde_json::{Value, json};

/// Every scenario, listed once. `scenario_tests!(with_engine)` in an engine's test file
/// expands to one test per scenario and `all_scenarios_on_one_engine`, which runs them all in
/// this order on one engine (as a long-lived worker pool sees them). `with_engine` is the
/// engine's own part: an `async fn(impl AsyncFnOnce(&dyn Executor))` that sets the engine
/// up, hands it to the scenario, and tears it down.
#[allow(unused_macros)] // test binaries that include `common` without running scenarios
macro_rules! scenario_tests {
    ($with_engine:ident) => {
        $crate::common::scenarios::scenario_tests!(
            @each $with_engine:
            dag_order_and_parallelism,
            variables_across_steps,
            several_sinks_make_an_object_result,
            todo_add_then_list,
            retry_then_success,
            retries_exhausted,
            non_retryable_failure,
            fail_fast,
            continue_independent,
            step_timeout,
            input_rechecked_after_resolution,
            invalid_plan_is_refused,
        );
    };
    (@each $with_engine:ident: $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $with_engine(async |exec: &dyn crane_engine::Executor| {
                    $crate::common::scenarios::$name(exec).await
                })
                .await;
            }
        )*

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn all_scenarios_on_one_engine() {
            $with_engine(async |exec: &dyn crane_engine::Executor| {
                $($crate::common::scenarios::$name(exec).await;)*
            })
            .await;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use scenario_tests;

/// Namespace the scenarios run in.
pub const NAMESPACE: &str = "scenarios";

fn run_id(name: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{name}-{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// A plan from `{"steps": [...]}` JSON (panics on a typo in the scenario itself).
pub fn plan(steps: Value) -> Plan {
    match serde_json::from_value(json!({ "steps": steps })) {
        Ok(plan) => plan,
        Err(e) => panic!("scenario plan does not parse: {e}"),
    }
}

fn fast_retries(max_attempts: u32) -> RunOptions {
    RunOptions {
        retry: RetryPolicy {
            max_attempts,
            initial_backoff_ms: 10,
            max_backoff_ms: 50,
        },
        step_timeout_ms: 10_000,
        failure_policy: FailurePolicy::FailFast,
        ..RunOptions::default()
    }
}

fn request<'a>(run_id: &'a str, plan: &'a Plan, options: &'a RunOptions) -> RunRequest<'a> {
    RunRequest {
        run_id,
        namespace: NAMESPACE,
        plan,
        options,
    }
}

async fn execute(exec: &dyn Executor, name: &str, plan: &Plan, options: &RunOptions) -> RunReport {
    match exec.execute(request(&run_id(name), plan, options)).await {
        Ok(report) => report,
        Err(e) => panic!("{name}: the engine failed: {e:#}"),
    }
}

fn step(report: &RunReport, id: StepId) -> &StepReport {
    match report.steps.iter().find(|s| s.id == id) {
        Some(s) => s,
        None => panic!("step {id} missing from report {report:#?}"),
    }
}

fn times(s: &StepReport) -> (&str, &str) {
    match (s.started_at.as_deref(), s.finished_at.as_deref()) {
        (Some(a), Some(b)) => (a, b),
        _ => panic!("step {} lacks startedAt/finishedAt: {s:#?}", s.id),
    }
}

/// Independent steps overlap (each starts before the other finishes); a dependent step starts
/// only after both of its dependencies finished.
pub async fn dag_order_and_parallelism(exec: &dyn Executor) {
    let p = plan(json!([
        {"id": 1, "tool": "wait", "input": {"ms": 400}},
        {"id": 2, "tool": "wait", "input": {"ms": 400}},
        {"id": 3, "tool": "calculator", "input": {"expression": "1+1"}, "dependsOn": [1, 2]},
    ]));
    let r = execute(exec, "order", &p, &RunOptions::default()).await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    let (s1, f1) = times(step(&r, 1));
    let (s2, f2) = times(step(&r, 2));
    let (s3, f3) = times(step(&r, 3));
    assert!(s1 < f2 && s2 < f1, "steps 1 and 2 did not overlap: {r:#?}");
    assert!(
        s3 >= f1 && s3 >= f2,
        "step 3 started before its dependencies finished: {r:#?}"
    );
    assert!(s3 <= f3);
    assert_eq!(step(&r, 1).output, Some(json!({"waitedMs": 400})));
    assert_eq!(
        r.result.as_ref().and_then(Value::as_f64),
        Some(2.0),
        "{r:#?}"
    );
    assert!(r.steps.iter().all(|s| s.attempts == 1 && s.error.is_none()));
}

/// `{step_N_output}` carries outputs forward: 25 + 30 = 55.
pub async fn variables_across_steps(exec: &dyn Executor) {
    let p = plan(json!([
        {"id": 1, "tool": "calculator", "input": {"expression": "(2+3)*5"}},
        {"id": 2, "tool": "calculator", "input": {"expression": "10*3"}},
        {"id": 3, "tool": "calculator", "input": {"expression": "{step_1_output} + {step_2_output}"}, "dependsOn": [1, 2]},
    ]));
    let r = execute(exec, "vars", &p, &RunOptions::default()).await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert_eq!(
        r.result.as_ref().and_then(Value::as_f64),
        Some(55.0),
        "{r:#?}"
    );
    assert_eq!(r.error, None);
}

/// With several sink steps the result is `{"step_N": output}`.
pub async fn several_sinks_make_an_object_result(exec: &dyn Executor) {
    let p = plan(json!([
        {"id": 1, "tool": "calculator", "input": {"expression": "6*7"}},
        {"id": 2, "tool": "wait", "input": {"ms": 1}},
    ]));
    let r = execute(exec, "sinks", &p, &RunOptions::default()).await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    let result = r.result.unwrap_or_default();
    assert_eq!(
        result.get("step_1").and_then(Value::as_f64),
        Some(42.0),
        "{result}"
    );
    assert_eq!(result.get("step_2"), Some(&json!({"waitedMs": 1})));
}

/// The todo tools run in the run's namespace; `list` sees what `add` added.
pub async fn todo_add_then_list(exec: &dyn Executor) {
    let title = format!("Buy milk {}", run_id("todo"));
    let p = plan(json!([
        {"id": 1, "tool": "todo_store.add", "input": {"title": title}},
        {"id": 2, "tool": "todo_store.list", "input": {}, "dependsOn": [1]},
    ]));
    let r = execute(exec, "todo", &p, &RunOptions::default()).await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    let added = step(&r, 1).output.clone().unwrap_or_default();
    assert_eq!(added.get("title"), Some(&json!(title)));
    let list = r.result.unwrap_or_default();
    let titles: Vec<&Value> = list
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.get("title")).collect())
        .unwrap_or_default();
    assert!(titles.contains(&&json!(title)), "{list}");
}

/// A transient failure is retried; the step succeeds on its third attempt.
pub async fn retry_then_success(exec: &dyn Executor) {
    let p = plan(json!([{"id": 1, "tool": "flaky", "input": {"failures": 2}}]));
    let r = execute(exec, "retry", &p, &fast_retries(3)).await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    let s = step(&r, 1);
    assert_eq!(s.attempts, 3);
    assert_eq!(s.output, Some(json!({"calls": 3})));
    assert_eq!(s.error, None);
}

/// Transient failures beyond maxAttempts fail the step with the last error.
pub async fn retries_exhausted(exec: &dyn Executor) {
    let p = plan(json!([
        {"id": 1, "tool": "flaky", "input": {"failures": 5}},
        {"id": 2, "tool": "calculator", "input": {"expression": "1"}, "dependsOn": [1]},
    ]));
    let r = execute(exec, "exhausted", &p, &fast_retries(2)).await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    assert_eq!(step(&r, 1).phase, StepPhase::Failed);
    assert_eq!(step(&r, 1).attempts, 2);
    assert_eq!(step(&r, 2).phase, StepPhase::Skipped);
    assert_eq!(step(&r, 2).attempts, 0);
    let error = r.error.unwrap_or_default();
    assert!(
        error.starts_with("step 1 (flaky) failed") && error.contains("transient"),
        "{error}"
    );
}

/// Division by zero is not retryable: one attempt, and the run's error says why.
pub async fn non_retryable_failure(exec: &dyn Executor) {
    let p = plan(json!([{"id": 2, "tool": "calculator", "input": {"expression": "1/0"}}]));
    let r = execute(exec, "divzero", &p, &fast_retries(3)).await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    assert_eq!(step(&r, 2).attempts, 1);
    assert_eq!(r.result, None);
    let error = r.error.unwrap_or_default();
    assert!(
        error.starts_with("step 2 (calculator) failed: ") && error.contains("division by zero"),
        "{error}"
    );
}

/// 1 fails at once while 2 runs; 3 (after 2) and 4 (after 1).
fn failing_plan() -> Plan {
    plan(json!([
        {"id": 1, "tool": "calculator", "input": {"expression": "1/0"}},
        {"id": 2, "tool": "wait", "input": {"ms": 500}},
        {"id": 3, "tool": "calculator", "input": {"expression": "2+2"}, "dependsOn": [2]},
        {"id": 4, "tool": "calculator", "input": {"expression": "{step_1_output} + 1"}, "dependsOn": [1]},
    ]))
}

/// FailFast: after the failure nothing new starts; everything not started is Skipped.
pub async fn fail_fast(exec: &dyn Executor) {
    let options = RunOptions {
        failure_policy: FailurePolicy::FailFast,
        ..fast_retries(3)
    };
    let r = execute(exec, "failfast", &failing_plan(), &options).await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    assert_eq!(step(&r, 1).phase, StepPhase::Failed);
    // Step 2 may or may not have been picked up before step 1 failed; if it ran, it finished.
    assert!(
        matches!(step(&r, 2).phase, StepPhase::Succeeded | StepPhase::Skipped),
        "{r:#?}"
    );
    assert_eq!(step(&r, 3).phase, StepPhase::Skipped, "{r:#?}");
    assert_eq!(step(&r, 3).attempts, 0);
    assert_eq!(step(&r, 4).phase, StepPhase::Skipped);
    assert!(
        r.error
            .unwrap_or_default()
            .starts_with("step 1 (calculator) failed")
    );
}

/// ContinueIndependent: only what depends on the failed step is Skipped; the run still fails.
pub async fn continue_independent(exec: &dyn Executor) {
    let options = RunOptions {
        failure_policy: FailurePolicy::ContinueIndependent,
        ..fast_retries(3)
    };
    let r = execute(exec, "continue", &failing_plan(), &options).await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    assert_eq!(step(&r, 1).phase, StepPhase::Failed);
    assert_eq!(step(&r, 2).phase, StepPhase::Succeeded);
    assert_eq!(step(&r, 3).phase, StepPhase::Succeeded);
    assert_eq!(
        step(&r, 3).output.as_ref().and_then(Value::as_f64),
        Some(4.0)
    );
    assert_eq!(step(&r, 4).phase, StepPhase::Skipped);
    assert_eq!(r.result, None);
    assert!(
        r.error
            .unwrap_or_default()
            .starts_with("step 1 (calculator) failed")
    );
}

/// A step longer than its timeout is retried (timeouts are retryable) and then fails.
pub async fn step_timeout(exec: &dyn Executor) {
    let p = plan(json!([{"id": 1, "tool": "wait", "input": {"ms": 2000}}]));
    let options = RunOptions {
        step_timeout_ms: 100,
        ..fast_retries(2)
    };
    let r = execute(exec, "timeout", &p, &options).await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    let s = step(&r, 1);
    assert_eq!(s.phase, StepPhase::Failed);
    assert_eq!(s.attempts, 2);
    assert!(
        s.error.as_deref().unwrap_or_default().contains("timed out"),
        "{s:#?}"
    );
}

/// A whole-string variable may change a field's type; the input is checked again once
/// resolved, and a mismatch fails the step without retries.
pub async fn input_rechecked_after_resolution(exec: &dyn Executor) {
    let p = plan(json!([
        {"id": 1, "tool": "calculator", "input": {"expression": "3*5"}},
        {"id": 2, "tool": "wait", "input": {"ms": "{step_1_output}"}, "dependsOn": [1]},
        {"id": 3, "tool": "todo_store.add", "input": {"title": "late"}, "dependsOn": [1]},
        {"id": 4, "tool": "wait", "input": {"ms": "{step_3_output}"}, "dependsOn": [3]},
    ]));
    let r = execute(
        exec,
        "recheck",
        &p,
        &RunOptions {
            failure_policy: FailurePolicy::ContinueIndependent,
            ..fast_retries(3)
        },
    )
    .await;
    assert_eq!(r.phase, RunPhase::Failed, "{r:#?}");
    assert_eq!(
        step(&r, 2).phase,
        StepPhase::Succeeded,
        "a number from step 1 fits `ms`: {r:#?}"
    );
    assert_eq!(step(&r, 2).output, Some(json!({"waitedMs": 15})));
    let s4 = step(&r, 4);
    assert_eq!((s4.phase, s4.attempts), (StepPhase::Failed, 1), "{r:#?}");
    assert!(
        s4.error.as_deref().unwrap_or_default().contains("input.ms"),
        "{s4:#?}"
    );
}

/// A plan with a cycle never starts; the engine says why.
pub async fn invalid_plan_is_refused(exec: &dyn Executor) {
    let p = plan(json!([
        {"id": 1, "tool": "calculator", "input": {"expression": "1"}, "dependsOn": [2]},
        {"id": 2, "tool": "calculator", "input": {"expression": "1"}, "dependsOn": [1]},
    ]));
    match exec
        .execute(request(&run_id("cycle"), &p, &RunOptions::default()))
        .await
    {
        Ok(r) => panic!("a cyclic plan ran: {r:#?}"),
        Err(e) => assert!(format!("{e:#}").contains("cycle: 1 -> 2 -> 1"), "{e:#}"),
    }
}
