//! One property: the Lua scripts and `crane_core::dag` are the same DAG rules. Random DAGs and
//! random step outcomes (success, retryable and permanent failure, retries running out,
//! cancel, duplicate completions, under both failure policies) are driven through both, one
//! action at a time: the Rust rules directly, the scripts on a real Redis through the engine's
//! own calls (`init_run`, the `start` and `complete` scripts, `cancel_run`, `run_report`), with
//! no workers and no clock to wait for. After every action each step's phase, attempts, output
//! and error, and the run's phase, result and error, must be identical, and so must what the
//! action itself reported (steps made ready, a retry, an ignored completion).

mod redis_common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use crane_core::dag::{Completion, Dag, Outcome};
use crane_core::plan::{Plan, Step, StepId};
use crane_core::run::{FailurePolicy, RetryPolicy, RunOptions, RunPhase, RunReport, StepPhase};
use crane_engine::api::{cancel_run, init_run, run_report};
use crane_engine::replies::{CompleteReply, StartReply};
use crane_engine::scripts::{self, AttemptEnd, AttemptOutcome, StartHint, StartMode};
use crane_engine::{EngineConfig, RunKeys};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// Cases per run: enough for every kind of outcome to come up many times (counted and
/// asserted below), few enough to run in a second or two.
const CASES: u32 = 128;

/// One generated run.
#[derive(Clone, Debug)]
struct Case {
    /// Per step, indices of earlier steps it depends on (repeats allowed, as in plans).
    deps: Vec<Vec<usize>>,
    policy: FailurePolicy,
    max_attempts: u32,
    /// Before which action the run is cancelled, if it is still running then.
    cancel_at: Option<usize>,
    /// Drives every choice: which action, which step, which outcome. Zeros once used up.
    choices: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=10)
        .prop_flat_map(|n| {
            let deps: Vec<_> = (0..n)
                .map(|i| proptest::collection::vec(0..i.max(1), 0..=i.min(3)))
                .collect();
            (
                deps,
                any::<bool>(),
                1u32..=3,
                proptest::option::weighted(0.4, 0usize..8),
                proptest::collection::vec(any::<u8>(), 0..120),
            )
        })
        .prop_map(
            |(mut deps, continue_independent, max_attempts, cancel_at, choices)| {
                for (i, d) in deps.iter_mut().enumerate() {
                    d.retain(|&x| x < i);
                }
                Case {
                    deps,
                    policy: if continue_independent {
                        FailurePolicy::ContinueIndependent
                    } else {
                        FailurePolicy::FailFast
                    },
                    max_attempts,
                    cancel_at,
                    choices,
                }
            },
        )
}

fn plan(case: &Case) -> Plan {
    let id = |i: usize| StepId::try_from(i + 1).unwrap_or(StepId::MAX);
    Plan {
        steps: case
            .deps
            .iter()
            .enumerate()
            .map(|(i, deps)| Step {
                id: id(i),
                tool: "calculator".into(),
                input: Default::default(),
                reasoning: String::new(),
                depends_on: deps.iter().map(|&d| id(d)).collect(),
            })
            .collect(),
    }
}

/// How often each kind of action and outcome came up, across all cases.
#[derive(Debug, Default)]
struct Seen {
    starts: u32,
    successes: u32,
    retries: u32,
    retries_exhausted: u32,
    permanent_failures: u32,
    fail_fast_failures: u32,
    continue_independent_failures: u32,
    cancels: u32,
    duplicates: u32,
    restarts_after_backoff: u32,
    runs: BTreeMap<String, u32>,
}

/// The latest attempt of a step: its number and the owner token its completion carries.
#[derive(Clone, Debug)]
struct Attempt {
    owner: String,
    number: u32,
}

/// One case driven through both engines; an `Err` says where they disagreed.
struct Driver<'a> {
    dag: Dag,
    policy: FailurePolicy,
    conn: redis::aio::ConnectionManager,
    keys: RunKeys,
    attempts: BTreeMap<StepId, Attempt>,
    /// Steps waiting for a retry's backoff, oldest first.
    backing_off: Vec<StepId>,
    /// Stream entry ids for the hints (the scripts only compare them).
    entries: u32,
    seen: &'a RefCell<Seen>,
}

fn fail(why: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(why.to_string())
}

/// Step ids of pool hints `step|tool`, sorted.
fn ids(ready: &[String]) -> Vec<StepId> {
    let mut ids: Vec<StepId> = ready
        .iter()
        .filter_map(|r| r.split('|').next()?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

fn sorted(ids: &[StepId]) -> Vec<StepId> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

/// What a report says, without the timestamps only the scripts keep.
type View = (
    RunPhase,
    Vec<(StepId, StepPhase, u32, Option<Value>, Option<String>)>,
    Option<Value>,
    Option<String>,
);

fn view(r: &RunReport) -> View {
    let steps = r
        .steps
        .iter()
        .map(|s| (s.id, s.phase, s.attempts, s.output.clone(), s.error.clone()))
        .collect();
    (r.phase, steps, r.result.clone(), r.error.clone())
}

impl Driver<'_> {
    /// Starts `id` on the scripts' side; `attempt` is what the rules made of it (`None`: the
    /// rules refused, so the scripts must drop the hint).
    async fn start(&mut self, id: StepId, attempt: Option<u32>) -> Result<(), TestCaseError> {
        self.entries += 1;
        let owner = format!("owner-{id}-{}", self.entries);
        let (step, entry) = (id.to_string(), format!("{}-0", self.entries));
        let hint = StartHint {
            step: &step,
            owner: &owner,
            entry: &entry,
        };
        let reply = scripts::start(&self.keys, StartMode::New, &[hint])
            .run(&mut self.conn, "starting")
            .await
            .map_err(fail)?
            .pop();
        match (attempt, reply) {
            (Some(number), Some(StartReply::Started(s))) if s.attempt == number => {
                self.attempts.insert(id, Attempt { owner, number });
                self.seen.borrow_mut().starts += 1;
                Ok(())
            }
            (None, Some(StartReply::Dropped { .. })) => Ok(()),
            (attempt, reply) => Err(fail(format!(
                "starting step {id}: the rules say attempt {attempt:?}, the scripts {reply:?}"
            ))),
        }
    }

    /// Ends the latest attempt of `id` on both sides (a duplicate when it already ended) and
    /// compares what each did.
    async fn complete(&mut self, id: StepId, choice: u8) -> Result<(), TestCaseError> {
        let Some(attempt) = self.attempts.get(&id).cloned() else {
            return Err(fail(format!("step {id} completed but never started")));
        };
        let output = json!({"step": id, "attempt": attempt.number});
        let text = output.to_string();
        let message = format!("step {id} attempt {} failed", attempt.number);
        let retryable = choice % 10 <= 7;
        let (outcome, lua) = if choice % 10 <= 4 {
            (Outcome::Success(output), AttemptOutcome::Output(&text))
        } else {
            let error = message.clone();
            let lua = AttemptOutcome::Error {
                message: &message,
                retryable,
            };
            (Outcome::Failure { error, retryable }, lua)
        };
        let running = self.dag.step(id).map(|s| s.phase) == Some(StepPhase::Running);
        let rust = self.dag.complete(id, outcome.clone()).map_err(fail)?;
        let step = id.to_string();
        let end = AttemptEnd {
            step: &step,
            owner: &attempt.owner,
            attempt: attempt.number,
            outcome: lua,
            backoff_ms: 0,
        };
        let reply = scripts::complete(&self.keys, &[end])
            .run(&mut self.conn, "completing")
            .await
            .map_err(fail)?
            .pop();
        let agree = match (&rust, &reply) {
            (Completion::Ignored, Some(CompleteReply::Stale { held: false })) => !running,
            (Completion::Succeeded { newly_ready }, Some(CompleteReply::Accepted(e))) => {
                e.retry_due_ms.is_none() && ids(&e.ready) == sorted(newly_ready)
            }
            (Completion::Retry { .. }, Some(CompleteReply::Accepted(e))) => {
                e.retry_due_ms.is_some() && e.ready.is_empty()
            }
            (Completion::Failed { .. }, Some(CompleteReply::Accepted(e))) => {
                e.retry_due_ms.is_none() && e.ready.is_empty()
            }
            _ => false,
        };
        if !agree {
            return Err(fail(format!(
                "completing step {id} with {outcome:?}: the rules did {rust:?}, the scripts {reply:?}"
            )));
        }
        if matches!(rust, Completion::Retry { .. }) {
            self.backing_off.push(id);
        }
        self.count(&outcome, &rust);
        Ok(())
    }

    fn count(&self, outcome: &Outcome, rust: &Completion) {
        let mut seen = self.seen.borrow_mut();
        match (outcome, rust) {
            (_, Completion::Ignored) => seen.duplicates += 1,
            (Outcome::Success(_), _) => seen.successes += 1,
            (_, Completion::Retry { .. }) => seen.retries += 1,
            (Outcome::Failure { retryable, .. }, Completion::Failed { .. }) => {
                if *retryable {
                    seen.retries_exhausted += 1;
                } else {
                    seen.permanent_failures += 1;
                }
                match self.policy {
                    FailurePolicy::FailFast => seen.fail_fast_failures += 1,
                    FailurePolicy::ContinueIndependent => seen.continue_independent_failures += 1,
                }
            }
            (Outcome::Failure { .. }, Completion::Succeeded { .. }) => {}
        }
    }

    /// The next action, chosen by `c` among those possible now: start a Ready step, complete
    /// a Running one, restart one whose backoff is over, or complete a finished one again.
    async fn act(&mut self, c: u8, d: u8) -> Result<(), TestCaseError> {
        let ready = self.dag.ready();
        let running: Vec<StepId> = self
            .dag
            .steps()
            .iter()
            .filter(|s| s.phase == StepPhase::Running)
            .map(|s| s.id)
            .collect();
        let ended: Vec<StepId> = self
            .dag
            .steps()
            .iter()
            .filter(|s| s.phase.is_terminal() && self.attempts.contains_key(&s.id))
            .map(|s| s.id)
            .collect();
        let pick = |ids: &[StepId]| ids[usize::from(d) % ids.len()];
        match c % 10 {
            0..=3 if !ready.is_empty() => self.start_ready(pick(&ready)).await,
            0..=3 if !self.backing_off.is_empty() => self.restart().await,
            9 if !ended.is_empty() => self.complete(pick(&ended), c / 10).await,
            _ if !running.is_empty() => self.complete(pick(&running), c / 10).await,
            _ if !ready.is_empty() => self.start_ready(pick(&ready)).await,
            _ if !self.backing_off.is_empty() => self.restart().await,
            _ => Err(fail(format!(
                "stuck: nothing ready, running or backing off: {:?}",
                self.dag.steps()
            ))),
        }
    }

    async fn start_ready(&mut self, id: StepId) -> Result<(), TestCaseError> {
        let attempt = self.dag.start(id).map_err(fail)?;
        self.start(id, Some(attempt)).await
    }

    /// The oldest backoff is over: the rules requeue the step and dispatch it at once; the
    /// scripts take the hint the delayed set would have released (a due retry starts from
    /// Pending, no requeue needed). A step the run skipped meanwhile must be dropped.
    async fn restart(&mut self) -> Result<(), TestCaseError> {
        let id = self.backing_off.remove(0);
        if self.dag.requeue(id).map_err(fail)? {
            self.seen.borrow_mut().restarts_after_backoff += 1;
            self.start_ready(id).await
        } else {
            self.start(id, None).await
        }
    }

    async fn cancel(&mut self) -> Result<(), TestCaseError> {
        self.dag.cancel();
        self.seen.borrow_mut().cancels += 1;
        let phase = cancel_run(&mut self.conn, &self.keys).await.map_err(fail)?;
        prop_assert_eq!(phase, self.dag.phase(), "the run's phase after the cancel");
        Ok(())
    }

    /// Both sides' reports, compared.
    async fn agree(&mut self, after: &str) -> Result<(), TestCaseError> {
        let lua = run_report(&mut self.conn, &self.keys, crane_engine::api::Outputs::Full)
            .await
            .map_err(fail)?;
        prop_assert_eq!(view(&self.dag.report()), view(&lua), "after {}", after);
        Ok(())
    }
}

/// Runs one case to its end, comparing after every action.
async fn drive(
    case: &Case,
    conn: &redis::aio::ConnectionManager,
    pool: &crane_engine::PoolName,
    seen: &RefCell<Seen>,
) -> Result<(), TestCaseError> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let run = format!("prop-{}", RUNS.fetch_add(1, Ordering::Relaxed));
    let plan = plan(case);
    let options = RunOptions {
        retry: RetryPolicy {
            max_attempts: case.max_attempts,
            ..RetryPolicy::default()
        },
        failure_policy: case.policy,
        ..RunOptions::default()
    };
    let mut conn = conn.clone();
    let config = EngineConfig::default();
    let keys = RunKeys::new(pool.namespace(), &run).map_err(fail)?;
    init_run(&mut conn, &keys, pool, &plan, &options, &config)
        .await
        .map_err(fail)?;
    let mut driver = Driver {
        dag: Dag::new(&plan, case.policy, case.max_attempts).map_err(fail)?,
        policy: case.policy,
        conn,
        keys,
        attempts: BTreeMap::new(),
        backing_off: Vec::new(),
        entries: 0,
        seen,
    };
    driver.agree("creation").await?;
    let mut choices = case
        .choices
        .chunks(2)
        .map(|c| (c[0], *c.get(1).unwrap_or(&0)));
    for action in 0..1000 {
        if driver.dag.is_finished() {
            let phase = driver.dag.phase();
            *seen
                .borrow_mut()
                .runs
                .entry(format!("{phase:?}"))
                .or_default() += 1;
            return Ok(());
        }
        if case.cancel_at == Some(action) {
            driver.cancel().await?;
        } else {
            let (c, d) = choices.next().unwrap_or((0, 0));
            driver.act(c, d).await?;
        }
        driver.agree(&format!("action {action}")).await?;
    }
    Err(fail(format!("did not finish: {:?}", driver.dag.steps())))
}

#[test]
fn lua_scripts_follow_the_dag_rules_step_by_step() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let engine = runtime.block_on(redis_common::engine(false));
    let seen = RefCell::new(Seen::default());
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        runtime.block_on(drive(&case, &engine.conn, &engine.pool, &seen))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Every kind of outcome came up: the property was not checked on easy cases only.
    let seen = seen.into_inner();
    eprintln!("{seen:#?}");
    for (kind, n) in [
        ("starts", seen.starts),
        ("successes", seen.successes),
        ("retries", seen.retries),
        ("retries exhausted", seen.retries_exhausted),
        ("permanent failures", seen.permanent_failures),
        ("FailFast failures", seen.fail_fast_failures),
        (
            "ContinueIndependent failures",
            seen.continue_independent_failures,
        ),
        ("cancels", seen.cancels),
        ("duplicate completions", seen.duplicates),
        ("restarts after a backoff", seen.restarts_after_backoff),
    ] {
        assert!(n > 0, "no {kind} in {CASES} cases: {seen:#?}");
    }
    for phase in ["Succeeded", "Failed", "Cancelled"] {
        assert!(
            seen.runs.get(phase).is_some_and(|n| *n > 0),
            "no run ended {phase}: {seen:#?}"
        );
    }
}
