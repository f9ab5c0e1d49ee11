//! The DAG rules of a run as a pure, synchronous state machine (no I/O, no clock): the single
//! source of truth both engines follow. The in-process engine (`local`) drives it directly;
//! the Redis engine mirrors these rules in Lua, so they are kept deliberately small:
//!
//! 1. **Ready.** A `Pending` step whose dependencies have all `Succeeded` becomes `Ready`
//!    (steps without dependencies are `Ready` from the start). Only `Ready` steps are
//!    dispatched; dispatching makes a step `Running` and counts one attempt.
//! 2. **Success.** A `Running` step that succeeds records its output and becomes `Succeeded`;
//!    its dependents whose dependencies are now all `Succeeded` become `Ready`.
//! 3. **Retry.** A `Running` step that fails with a retryable error (timeout, transient) while
//!    it has attempts left, and while the run still dispatches (not cancelled, and not stopped
//!    by FailFast), goes back to `Pending`; the caller waits the backoff it chooses and then
//!    calls [`Dag::requeue`], which makes it `Ready` again.
//! 4. **Failure.** Any other failure makes the step `Failed`. Then:
//!    - `FailFast`: no new step is dispatched; every step not running (`Pending`, `Ready`, or
//!      waiting for a retry) becomes `Skipped`. Running steps may finish.
//!    - `ContinueIndependent`: every step downstream of the failed one (transitively) becomes
//!      `Skipped`; the others go on.
//! 5. **Cancel.** No new step is dispatched; steps not running become `Skipped`; running ones
//!    may finish (their failures are final, no retries).
//! 6. **Late completions.** A completion for a step that is not `Running` is ignored, so a
//!    duplicate delivery never completes a step twice.
//! 7. **Run phase.** `Running` while any step is not terminal. Once all are terminal:
//!    `Succeeded` if every step succeeded (the `result` comes from the sink steps), otherwise
//!    `Cancelled` if the run was cancelled, otherwise `Failed` with the error of the first
//!    step that failed, e.g. `step 2 (calculator) failed: division by zero`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::Value;

use crate::plan::{Plan, StepId};
use crate::run::{
    FailurePolicy, RunPhase, RunReport, StepPhase, StepReport, result_from_sinks, run_error,
};
use crate::tool::ToolError;

/// Why a plan cannot be turned into a DAG (a validated plan never hits these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("step {0} appears more than once in the plan")]
    DuplicateStep(StepId),
    #[error("step {step} depends on step {missing}, which is not in the plan")]
    MissingDependency { step: StepId, missing: StepId },
    #[error("step {0} is not in the plan")]
    UnknownStep(StepId),
    #[error("step {step} cannot start: it is {phase:?}, not Ready")]
    NotReady { step: StepId, phase: StepPhase },
}

/// How one attempt of a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Value),
    Failure {
        /// Human-readable, e.g. `division by zero`.
        error: String,
        /// Timeouts and transient faults; validation errors and tool failures are not.
        retryable: bool,
    },
}

impl From<Result<Value, ToolError>> for Outcome {
    fn from(result: Result<Value, ToolError>) -> Self {
        match result {
            Ok(v) => Outcome::Success(v),
            Err(e) => Outcome::Failure {
                retryable: e.is_retryable(),
                error: e.to_string(),
            },
        }
    }
}

/// What a completion did, so the caller knows what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The step succeeded; these steps became Ready.
    Succeeded { newly_ready: Vec<StepId> },
    /// The step will run again: wait the backoff for `next_attempt`, then call `requeue`.
    Retry { next_attempt: u32 },
    /// The step failed for good; these other steps became Skipped.
    Failed { skipped: Vec<StepId> },
    /// The step was not running (duplicate or late completion): nothing changed.
    Ignored,
}

/// The state of one run's DAG.
#[derive(Debug, Clone)]
pub struct Dag {
    /// Each step as the run report shows it (`error` is the last attempt's), without
    /// timestamps: the engine owns the clock.
    steps: Vec<StepReport>,
    index: HashMap<StepId, usize>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    sinks: Vec<StepId>,
    policy: FailurePolicy,
    max_attempts: u32,
    cancelled: bool,
    /// FailFast tripped: nothing new is dispatched.
    stopped: bool,
    /// The first step that failed for good, for the run's error.
    first_failure: Option<usize>,
}

impl Dag {
    /// A fresh DAG: steps without dependencies are Ready, the others Pending.
    /// `max_attempts` counts the first attempt (0 is treated as 1).
    pub fn new(plan: &Plan, policy: FailurePolicy, max_attempts: u32) -> Result<Dag, DagError> {
        let mut index = HashMap::with_capacity(plan.steps.len());
        for (i, step) in plan.steps.iter().enumerate() {
            if index.insert(step.id, i).is_some() {
                return Err(DagError::DuplicateStep(step.id));
            }
        }
        let mut deps = vec![Vec::new(); plan.steps.len()];
        let mut dependents = vec![Vec::new(); plan.steps.len()];
        for (i, step) in plan.steps.iter().enumerate() {
            for dep in &step.depends_on {
                let &d = index.get(dep).ok_or(DagError::MissingDependency {
                    step: step.id,
                    missing: *dep,
                })?;
                if !deps[i].contains(&d) {
                    deps[i].push(d);
                    dependents[d].push(i);
                }
            }
        }
        let steps = plan
            .steps
            .iter()
            .zip(&deps)
            .map(|(s, d)| StepReport {
                id: s.id,
                tool: s.tool.clone(),
                phase: if d.is_empty() {
                    StepPhase::Ready
                } else {
                    StepPhase::Pending
                },
                ..StepReport::default()
            })
            .collect();
        Ok(Dag {
            steps,
            index,
            deps,
            dependents,
            sinks: plan.sinks(),
            policy,
            max_attempts: max_attempts.max(1),
            cancelled: false,
            stopped: false,
            first_failure: None,
        })
    }

    /// Steps that may be dispatched now, in plan order.
    pub fn ready(&self) -> Vec<StepId> {
        self.steps
            .iter()
            .filter(|s| s.phase == StepPhase::Ready)
            .map(|s| s.id)
            .collect()
    }

    /// Steps running now.
    pub fn running(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.phase == StepPhase::Running)
            .count()
    }

    /// Dispatches a Ready step: it becomes Running. Returns the attempt number (1 = first).
    pub fn start(&mut self, id: StepId) -> Result<u32, DagError> {
        let i = self.idx(id)?;
        let step = &mut self.steps[i];
        if step.phase != StepPhase::Ready {
            return Err(DagError::NotReady {
                step: id,
                phase: step.phase,
            });
        }
        step.phase = StepPhase::Running;
        step.attempts += 1;
        Ok(step.attempts)
    }

    /// Records how the current attempt of a Running step ended (rules 2 to 4 and 6).
    pub fn complete(&mut self, id: StepId, outcome: Outcome) -> Result<Completion, DagError> {
        let i = self.idx(id)?;
        if self.steps[i].phase != StepPhase::Running {
            return Ok(Completion::Ignored);
        }
        match outcome {
            Outcome::Success(output) => {
                let step = &mut self.steps[i];
                step.phase = StepPhase::Succeeded;
                step.output = Some(output);
                step.error = None;
                let mut newly_ready = Vec::new();
                if !self.cancelled && !self.stopped {
                    for &d in &self.dependents[i] {
                        let all_done = self.deps[d]
                            .iter()
                            .all(|&p| self.steps[p].phase == StepPhase::Succeeded);
                        if self.steps[d].phase == StepPhase::Pending && all_done {
                            self.steps[d].phase = StepPhase::Ready;
                            newly_ready.push(self.steps[d].id);
                        }
                    }
                }
                Ok(Completion::Succeeded { newly_ready })
            }
            Outcome::Failure { error, retryable } => {
                let dispatching = !self.cancelled && !self.stopped;
                let step = &mut self.steps[i];
                step.error = Some(error);
                if retryable && dispatching && step.attempts < self.max_attempts {
                    step.phase = StepPhase::Pending;
                    return Ok(Completion::Retry {
                        next_attempt: step.attempts + 1,
                    });
                }
                step.phase = StepPhase::Failed;
                if self.first_failure.is_none() {
                    self.first_failure = Some(i);
                }
                let skipped = match self.policy {
                    FailurePolicy::FailFast => {
                        self.stopped = true;
                        self.skip_not_running()
                    }
                    FailurePolicy::ContinueIndependent => self.skip_downstream(i),
                };
                Ok(Completion::Failed { skipped })
            }
        }
    }

    /// After a retry's backoff: the step becomes Ready again, unless the run stopped
    /// dispatching meanwhile (then it is already Skipped). Returns whether it is Ready.
    pub fn requeue(&mut self, id: StepId) -> Result<bool, DagError> {
        let i = self.idx(id)?;
        let step = &mut self.steps[i];
        if step.phase == StepPhase::Pending && step.attempts > 0 && !self.cancelled && !self.stopped
        {
            step.phase = StepPhase::Ready;
            return Ok(true);
        }
        Ok(step.phase == StepPhase::Ready)
    }

    /// Rule 5: stop dispatching; steps not running become Skipped (returned).
    pub fn cancel(&mut self) -> Vec<StepId> {
        self.cancelled = true;
        self.skip_not_running()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Whether every step is terminal.
    pub fn is_finished(&self) -> bool {
        self.steps.iter().all(|s| s.phase.is_terminal())
    }

    /// Rule 7.
    pub fn phase(&self) -> RunPhase {
        if !self.is_finished() {
            RunPhase::Running
        } else if self.steps.iter().all(|s| s.phase == StepPhase::Succeeded) {
            RunPhase::Succeeded
        } else if self.cancelled {
            RunPhase::Cancelled
        } else {
            RunPhase::Failed
        }
    }

    pub fn steps(&self) -> &[StepReport] {
        &self.steps
    }

    pub fn step(&self, id: StepId) -> Option<&StepReport> {
        self.index.get(&id).map(|&i| &self.steps[i])
    }

    /// The output of a Succeeded step (what `{step_N_output}` resolves to).
    pub fn output(&self, id: StepId) -> Option<&Value> {
        self.step(id).and_then(|s| s.output.as_ref())
    }

    /// The run's result when Succeeded: the sink steps' outputs.
    pub fn result(&self) -> Option<Value> {
        if self.phase() != RunPhase::Succeeded {
            return None;
        }
        let outputs: BTreeMap<StepId, Value> = self
            .steps
            .iter()
            .filter_map(|s| s.output.clone().map(|o| (s.id, o)))
            .collect();
        result_from_sinks(&self.sinks, &outputs)
    }

    /// The run's error when Failed or Cancelled.
    pub fn error(&self) -> Option<String> {
        let first_failure = self.first_failure.map(|i| self.steps[i].id);
        run_error(self.phase(), &self.steps, first_failure)
    }

    /// The report, without timestamps (the engine owns the clock).
    pub fn report(&self) -> RunReport {
        RunReport {
            phase: self.phase(),
            steps: self.steps.clone(),
            result: self.result(),
            error: self.error(),
            spending: Default::default(),
            budget_exceeded: None,
        }
    }

    fn idx(&self, id: StepId) -> Result<usize, DagError> {
        self.index
            .get(&id)
            .copied()
            .ok_or(DagError::UnknownStep(id))
    }

    fn skip_not_running(&mut self) -> Vec<StepId> {
        let mut skipped = Vec::new();
        for step in &mut self.steps {
            if matches!(step.phase, StepPhase::Pending | StepPhase::Ready) {
                step.phase = StepPhase::Skipped;
                skipped.push(step.id);
            }
        }
        skipped
    }

    /// Skips everything downstream of step `i` that has not finished (iterative: deep chains).
    fn skip_downstream(&mut self, i: usize) -> Vec<StepId> {
        let mut skipped = Vec::new();
        let mut queue: VecDeque<usize> = self.dependents[i].iter().copied().collect();
        while let Some(d) = queue.pop_front() {
            if matches!(self.steps[d].phase, StepPhase::Pending | StepPhase::Ready) {
                self.steps[d].phase = StepPhase::Skipped;
                skipped.push(self.steps[d].id);
                queue.extend(self.dependents[d].iter().copied());
            }
        }
        skipped
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::Step;

    fn plan(edges: &[(StepId, &[StepId])]) -> Plan {
        Plan {
            steps: edges
                .iter()
                .map(|(id, deps)| Step {
                    id: *id,
                    tool: "calculator".into(),
                    input: Default::default(),
                    reasoning: String::new(),
                    depends_on: deps.to_vec(),
                })
                .collect(),
        }
    }

    fn failure(error: &str, retryable: bool) -> Outcome {
        Outcome::Failure {
            error: error.into(),
            retryable,
        }
    }

    fn fail(retryable: bool) -> Outcome {
        failure("boom", retryable)
    }

    /// The run's error, once the run has failed (a test failure before).
    fn failed_with(dag: &Dag) -> String {
        assert_eq!(dag.phase(), RunPhase::Failed, "{:?}", dag.steps());
        dag.error().unwrap_or_default()
    }

    fn phase_of(dag: &Dag, id: StepId) -> Option<StepPhase> {
        dag.step(id).map(|s| s.phase)
    }

    #[test]
    fn ready_follows_dependencies() -> Result<(), DagError> {
        let mut dag = Dag::new(
            &plan(&[(1, &[]), (2, &[]), (3, &[1, 2])]),
            FailurePolicy::FailFast,
            3,
        )?;
        assert_eq!(dag.ready(), vec![1, 2]);
        dag.start(1)?;
        assert_eq!(
            dag.complete(1, Outcome::Success(json!(1)))?,
            Completion::Succeeded {
                newly_ready: vec![]
            }
        );
        assert_eq!(phase_of(&dag, 3), Some(StepPhase::Pending));
        dag.start(2)?;
        assert_eq!(
            dag.complete(2, Outcome::Success(json!(2)))?,
            Completion::Succeeded {
                newly_ready: vec![3]
            }
        );
        dag.start(3)?;
        assert_eq!(dag.phase(), RunPhase::Running);
        dag.complete(3, Outcome::Success(json!(3)))?;
        assert_eq!(dag.phase(), RunPhase::Succeeded);
        assert_eq!(dag.result(), Some(json!(3)));
        assert_eq!(dag.error(), None);
        Ok(())
    }

    #[test]
    fn several_sinks_make_an_object_result() -> Result<(), DagError> {
        let mut dag = Dag::new(&plan(&[(1, &[]), (2, &[])]), FailurePolicy::FailFast, 1)?;
        for id in [1, 2] {
            dag.start(id)?;
            dag.complete(id, Outcome::Success(json!(id * 10)))?;
        }
        assert_eq!(dag.result(), Some(json!({"step_1": 10, "step_2": 20})));
        Ok(())
    }

    #[test]
    fn only_ready_steps_start() -> Result<(), DagError> {
        let mut dag = Dag::new(&plan(&[(1, &[]), (2, &[1])]), FailurePolicy::FailFast, 1)?;
        assert!(matches!(
            dag.start(2),
            Err(DagError::NotReady { step: 2, .. })
        ));
        assert_eq!(dag.start(9), Err(DagError::UnknownStep(9)));
        dag.start(1)?;
        assert!(dag.start(1).is_err(), "a running step cannot start twice");
        Ok(())
    }

    #[test]
    fn retryable_failure_retries_until_attempts_run_out() -> Result<(), DagError> {
        let mut dag = Dag::new(&plan(&[(1, &[])]), FailurePolicy::FailFast, 3)?;
        for attempt in 1..=2 {
            assert_eq!(dag.start(1)?, attempt);
            assert_eq!(
                dag.complete(1, fail(true))?,
                Completion::Retry {
                    next_attempt: attempt + 1
                }
            );
            assert_eq!(phase_of(&dag, 1), Some(StepPhase::Pending));
            assert!(dag.ready().is_empty(), "not ready before the backoff ends");
            assert!(dag.requeue(1)?);
        }
        assert_eq!(dag.start(1)?, 3);
        assert_eq!(
            dag.complete(1, fail(true))?,
            Completion::Failed { skipped: vec![] }
        );
        assert_eq!(
            failed_with(&dag),
            "step 1 (calculator) failed after 3 attempts: boom"
        );
        Ok(())
    }

    #[test]
    fn non_retryable_failure_fails_at_once() -> Result<(), DagError> {
        let mut dag = Dag::new(&plan(&[(1, &[])]), FailurePolicy::FailFast, 5)?;
        dag.start(1)?;
        dag.complete(1, failure("division by zero", false))?;
        assert_eq!(dag.step(1).map(|s| s.attempts), Some(1));
        assert_eq!(
            failed_with(&dag),
            "step 1 (calculator) failed: division by zero"
        );
        Ok(())
    }

    #[test]
    fn fail_fast_skips_everything_not_running_and_waits_for_running() -> Result<(), DagError> {
        let mut dag = Dag::new(
            &plan(&[(1, &[]), (2, &[]), (3, &[]), (4, &[1])]),
            FailurePolicy::FailFast,
            3,
        )?;
        dag.start(1)?;
        dag.start(2)?;
        assert_eq!(
            dag.complete(2, fail(false))?,
            Completion::Failed {
                skipped: vec![3, 4]
            }
        );
        assert!(dag.ready().is_empty());
        assert_eq!(dag.phase(), RunPhase::Running, "step 1 still runs");
        // A running step's retryable failure is final once the run stopped dispatching.
        assert_eq!(
            dag.complete(1, fail(true))?,
            Completion::Failed { skipped: vec![] }
        );
        assert_eq!(
            failed_with(&dag),
            "step 2 (calculator) failed: boom",
            "first failure wins"
        );
        Ok(())
    }

    #[test]
    fn fail_fast_skips_a_step_waiting_for_its_retry() -> Result<(), DagError> {
        let mut dag = Dag::new(&plan(&[(1, &[]), (2, &[])]), FailurePolicy::FailFast, 3)?;
        dag.start(1)?;
        dag.start(2)?;
        assert_eq!(
            dag.complete(1, fail(true))?,
            Completion::Retry { next_attempt: 2 }
        );
        dag.complete(2, fail(false))?;
        assert_eq!(phase_of(&dag, 1), Some(StepPhase::Skipped));
        assert!(!dag.requeue(1)?);
        assert_eq!(dag.phase(), RunPhase::Failed);
        Ok(())
    }

    #[test]
    fn continue_independent_skips_only_downstream() -> Result<(), DagError> {
        let p = plan(&[(1, &[]), (2, &[1]), (3, &[2]), (4, &[]), (5, &[4, 3])]);
        let mut dag = Dag::new(&p, FailurePolicy::ContinueIndependent, 1)?;
        dag.start(1)?;
        dag.start(4)?;
        assert_eq!(
            dag.complete(1, fail(false))?,
            Completion::Failed {
                skipped: vec![2, 3, 5]
            }
        );
        assert_eq!(dag.phase(), RunPhase::Running);
        assert_eq!(
            dag.complete(4, Outcome::Success(json!(4)))?,
            Completion::Succeeded {
                newly_ready: vec![]
            }
        );
        assert_eq!(dag.phase(), RunPhase::Failed);
        assert_eq!(dag.result(), None);
        Ok(())
    }

    #[test]
    fn cancel_stops_dispatch_and_lets_running_finish() -> Result<(), DagError> {
        let mut dag = Dag::new(
            &plan(&[(1, &[]), (2, &[]), (3, &[1])]),
            FailurePolicy::FailFast,
            3,
        )?;
        dag.start(1)?;
        assert_eq!(dag.cancel(), vec![2, 3]);
        assert_eq!(dag.phase(), RunPhase::Running);
        assert_eq!(
            dag.complete(1, Outcome::Success(json!(1)))?,
            Completion::Succeeded {
                newly_ready: vec![]
            }
        );
        assert_eq!(dag.phase(), RunPhase::Cancelled);
        assert!(dag.error().is_some_and(|e| e.contains("cancelled")));
        Ok(())
    }

    #[test]
    fn cancel_after_everything_succeeded_keeps_success() -> Result<(), DagError> {
        let mut dag = Dag::new(&plan(&[(1, &[])]), FailurePolicy::FailFast, 3)?;
        dag.start(1)?;
        dag.complete(1, Outcome::Success(json!(1)))?;
        dag.cancel();
        assert_eq!(dag.phase(), RunPhase::Succeeded);
        Ok(())
    }

    #[test]
    fn late_and_duplicate_completions_are_ignored() -> Result<(), DagError> {
        let mut dag = Dag::new(&plan(&[(1, &[])]), FailurePolicy::FailFast, 3)?;
        assert_eq!(
            dag.complete(1, Outcome::Success(json!(0)))?,
            Completion::Ignored,
            "not started"
        );
        dag.start(1)?;
        dag.complete(1, Outcome::Success(json!(1)))?;
        assert_eq!(dag.complete(1, fail(false))?, Completion::Ignored);
        assert_eq!(dag.output(1), Some(&json!(1)));
        assert_eq!(dag.complete(7, fail(false)), Err(DagError::UnknownStep(7)));
        Ok(())
    }

    #[test]
    fn malformed_plans_are_errors_not_panics() {
        assert_eq!(
            Dag::new(&plan(&[(1, &[]), (1, &[])]), FailurePolicy::FailFast, 1).err(),
            Some(DagError::DuplicateStep(1))
        );
        assert_eq!(
            Dag::new(&plan(&[(1, &[4])]), FailurePolicy::FailFast, 1).err(),
            Some(DagError::MissingDependency {
                step: 1,
                missing: 4
            })
        );
    }

    #[test]
    fn deep_chain_failure_skips_all_without_recursion() -> Result<(), DagError> {
        let steps: Vec<(StepId, Vec<StepId>)> = (1..=5000)
            .map(|i| (i, if i == 1 { vec![] } else { vec![i - 1] }))
            .collect();
        let edges: Vec<(StepId, &[StepId])> =
            steps.iter().map(|(i, d)| (*i, d.as_slice())).collect();
        let mut dag = Dag::new(&plan(&edges), FailurePolicy::ContinueIndependent, 1)?;
        dag.start(1)?;
        let Completion::Failed { skipped } = dag.complete(1, fail(false))? else {
            panic!("expected failure");
        };
        assert_eq!(skipped.len(), 4999);
        assert_eq!(dag.phase(), RunPhase::Failed);
        Ok(())
    }

    #[test]
    fn zero_max_attempts_still_runs_once() -> Result<(), DagError> {
        let mut dag = Dag::new(&plan(&[(1, &[])]), FailurePolicy::FailFast, 0)?;
        dag.start(1)?;
        assert_eq!(
            dag.complete(1, fail(true))?,
            Completion::Failed { skipped: vec![] }
        );
        Ok(())
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Dependencies (indices of earlier steps), a script of choices, ContinueIndependent?,
        /// max attempts.
        type Scenario = (Vec<Vec<usize>>, Vec<(u8, u8)>, bool, u32);

        /// A random DAG (each step depends on some earlier ones) and a script of choices.
        fn scenario() -> impl Strategy<Value = Scenario> {
            (1usize..25)
                .prop_flat_map(|n| {
                    let deps = (0..n)
                        .map(|i| proptest::collection::vec(0..i.max(1), 0..=i.min(3)))
                        .collect::<Vec<_>>();
                    (
                        deps,
                        proptest::collection::vec((any::<u8>(), any::<u8>()), 0..400),
                        any::<bool>(),
                        1u32..4,
                    )
                })
                .prop_map(|(mut deps, script, continue_independent, attempts)| {
                    for (i, d) in deps.iter_mut().enumerate() {
                        d.retain(|&x| x < i);
                    }
                    (deps, script, continue_independent, attempts)
                })
        }

        proptest! {
            /// Whatever the outcomes, a run ends, and its phase agrees with its steps.
            #[test]
            fn every_run_ends_consistently((deps, script, ci, attempts) in scenario()) {
                let edges: Vec<(StepId, Vec<StepId>)> = deps
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (i as StepId + 1, d.iter().map(|&x| x as StepId + 1).collect()))
                    .collect();
                let refs: Vec<(StepId, &[StepId])> = edges.iter().map(|(i, d)| (*i, d.as_slice())).collect();
                let policy = if ci { FailurePolicy::ContinueIndependent } else { FailurePolicy::FailFast };
                let mut dag = Dag::new(&plan(&refs), policy, attempts).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut script = script.into_iter().chain(std::iter::repeat((0, 0)));
                let mut backing_off: Vec<StepId> = Vec::new();
                for _ in 0..10_000 {
                    if dag.is_finished() {
                        break;
                    }
                    let (pick, what) = script.next().unwrap_or((0, 0));
                    if what == 255 && !dag.is_cancelled() {
                        dag.cancel();
                        continue;
                    }
                    let ready = dag.ready();
                    let running: Vec<StepId> =
                        dag.steps().iter().filter(|s| s.phase == StepPhase::Running).map(|s| s.id).collect();
                    if !ready.is_empty() && (what % 2 == 0 || running.is_empty()) {
                        dag.start(ready[pick as usize % ready.len()]).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    } else if !running.is_empty() {
                        let id = running[pick as usize % running.len()];
                        let outcome = match what % 5 {
                            0..=2 => Outcome::Success(json!(id)),
                            3 => fail(true),
                            _ => fail(false),
                        };
                        if let Completion::Retry { .. } = dag.complete(id, outcome).map_err(|e| TestCaseError::fail(e.to_string()))? {
                            backing_off.push(id);
                        }
                    } else if let Some(id) = backing_off.pop() {
                        dag.requeue(id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    } else {
                        prop_assert!(false, "stuck: nothing ready, running or backing off: {:?}", dag.steps());
                    }
                }
                prop_assert!(dag.is_finished(), "did not finish: {:?}", dag.steps());
                let all_ok = dag.steps().iter().all(|s| s.phase == StepPhase::Succeeded);
                prop_assert_eq!(dag.phase() == RunPhase::Succeeded, all_ok);
                prop_assert_eq!(dag.result().is_some(), all_ok);
                prop_assert_eq!(dag.error().is_some(), !all_ok);
                for (i, s) in dag.steps().iter().enumerate() {
                    prop_assert!(s.attempts <= attempts);
                    if s.attempts > 0 {
                        // A step only ever started once all its dependencies had succeeded.
                        for &d in &deps[i] {
                            prop_assert_eq!(dag.steps()[d].phase, StepPhase::Succeeded);
                        }
                    }
                    if s.phase == StepPhase::Succeeded {
                        prop_assert_eq!(s.output.clone(), Some(json!(s.id)));
                    }
                }
            }
        }
    }
}
