//! The in-process engine behind `crane-executor run`: drives `dag`'s rules with tokio tasks
//! (ready steps in parallel, bounded), resolves variables, applies the step timeout, retries
//! retryable errors with exponential backoff and full jitter, and stamps RFC 3339 times.
//! No Redis, no cluster: everything lives in this process and ends with it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crane_core::dag::{Completion, Dag, DagError, Outcome};
use crane_core::plan::{Plan, Step, StepId};
use crane_core::run::{RunOptions, RunReport, StepPhase};

use crate::{ExecuteFuture, Executor, RunRequest};
use crane_core::tool::{ToolContext, ToolError, Toolbox};
use crane_core::validate::{PlanErrors, validate};
use crane_core::vars;

/// Steps one local run executes at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Why a local run could not be carried out (a step failing is not an error: it is reported
/// in the `RunReport`).
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("invalid plan:\n{0}")]
    InvalidPlan(#[source] PlanErrors),
    #[error("DAG rule violated: {0}")]
    Dag(#[from] DagError),
    #[error("run stalled: no step is running or ready, but {0} steps are unfinished")]
    Stalled(usize),
    #[error("step task lost: {0}")]
    TaskLost(String),
}

/// Runs plans in this process with the given tools.
#[derive(Clone, Debug)]
pub struct LocalExecutor {
    toolbox: Toolbox,
    concurrency: usize,
}

enum Event {
    Done {
        id: StepId,
        result: Result<Value, ToolError>,
    },
    BackoffOver(StepId),
}

impl LocalExecutor {
    pub fn new(toolbox: Toolbox) -> Self {
        Self {
            toolbox,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// At most `concurrency` steps at once (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    pub fn toolbox(&self) -> &Toolbox {
        &self.toolbox
    }

    /// Validates and runs `plan` to its end. When `cancel` turns `true`, no new step starts,
    /// running steps finish, and the run ends `Cancelled`.
    #[tracing::instrument(skip_all, fields(run = run_id, namespace = namespace, steps = plan.steps.len()))]
    pub async fn run(
        &self,
        run_id: &str,
        namespace: &str,
        plan: &Plan,
        options: &RunOptions,
        mut cancel: Option<watch::Receiver<bool>>,
    ) -> Result<RunReport, LocalError> {
        validate(plan, self.toolbox.catalog()).map_err(LocalError::InvalidPlan)?;
        let mut dag = Dag::new(plan, options.failure_policy, options.retry.max_attempts)?;
        let by_id: HashMap<StepId, &Step> = plan.steps.iter().map(|s| (s.id, s)).collect();
        let timeout = Duration::from_millis(options.step_timeout_ms);
        let mut tasks: JoinSet<Event> = JoinSet::new();
        let mut started_at: HashMap<StepId, String> = HashMap::new();
        let mut finished_at: HashMap<StepId, String> = HashMap::new();
        let mut output_bytes: usize = 0;
        info!("run started");

        loop {
            if !dag.is_cancelled() && cancel.as_ref().is_some_and(|rx| *rx.borrow()) {
                let skipped = dag.cancel();
                info!(skipped = skipped.len(), "run cancelled");
            }

            let mut running = dag.running();
            for id in dag.ready() {
                if running >= self.concurrency {
                    break;
                }
                // An earlier dispatch in this loop may have failed the run (FailFast).
                if dag.step(id).map(|s| s.phase) != Some(StepPhase::Ready) {
                    continue;
                }
                let Some(step) = by_id.get(&id) else { continue };
                let attempt = dag.start(id)?;
                started_at.entry(id).or_insert_with(now_rfc3339);
                let resolved = vars::resolve(&step.input, &|n| dag.output(n).cloned());
                let input = match resolved {
                    Ok(input) => input,
                    Err(e) => {
                        warn!(step = id, error = %e, "variable resolution failed");
                        dag.complete(
                            id,
                            Outcome::Failure {
                                error: format!("invalid input: {e}"),
                                retryable: false,
                            },
                        )?;
                        continue;
                    }
                };
                running += 1;
                let ctx = ToolContext {
                    namespace: namespace.to_owned(),
                    run_id: run_id.to_owned(),
                    step_id: id,
                    attempt,
                };
                let toolbox = self.toolbox.clone();
                let tool = step.tool.clone();
                debug!(step = id, tool = %tool, attempt, "step dispatched");
                tasks.spawn(async move {
                    // The inner task turns a panicking tool into a step failure instead of
                    // losing track of the step.
                    let call = tokio::spawn(async move {
                        match tokio::time::timeout(
                            timeout,
                            toolbox.call(&ctx, &tool, Value::Object(input)),
                        )
                        .await
                        {
                            Ok(result) => result,
                            Err(_) => Err(ToolError::Timeout(timeout)),
                        }
                    });
                    let result = call
                        .await
                        .unwrap_or_else(|e| Err(ToolError::Failed(format!("tool crashed: {e}"))));
                    Event::Done { id, result }
                });
            }

            stamp_finished(&dag, &mut finished_at);
            if dag.is_finished() {
                break;
            }

            let event = match cancel.as_mut().filter(|_| !dag.is_cancelled()) {
                Some(rx) => tokio::select! {
                    event = tasks.join_next() => event,
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // The sender is gone: nobody can cancel any more.
                            cancel = None;
                        }
                        continue;
                    }
                },
                None => tasks.join_next().await,
            };
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(e)) => return Err(LocalError::TaskLost(e.to_string())),
                None => {
                    let unfinished = dag
                        .steps()
                        .iter()
                        .filter(|s| !s.phase.is_terminal())
                        .count();
                    return Err(LocalError::Stalled(unfinished));
                }
            };
            match event {
                Event::Done { id, result } => {
                    let result = result.and_then(|v| {
                        let bytes = crane_core::tool::output_json(&v)?.len();
                        if output_bytes + bytes > crane_core::tool::MAX_RUN_OUTPUT_BYTES {
                            return Err(ToolError::Failed(run_output_full(output_bytes, bytes)));
                        }
                        output_bytes += bytes;
                        Ok(v)
                    });
                    let retry_after = result.as_ref().err().cloned();
                    if let Some(e) = &retry_after {
                        debug!(step = id, error = %e, "step attempt failed");
                    }
                    match dag.complete(id, Outcome::from(result))? {
                        Completion::Retry { next_attempt } => {
                            let delay = crate::retry_delay_ms(
                                &options.retry,
                                next_attempt,
                                retry_after.as_ref(),
                            );
                            debug!(
                                step = id,
                                next_attempt,
                                delay_ms = delay,
                                "retrying after backoff"
                            );
                            tasks.spawn(async move {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                                Event::BackoffOver(id)
                            });
                        }
                        Completion::Failed { skipped } => {
                            info!(step = id, skipped = skipped.len(), "step failed");
                        }
                        Completion::Succeeded { .. } | Completion::Ignored => {}
                    }
                }
                Event::BackoffOver(id) => {
                    dag.requeue(id)?;
                }
            }
            // Before the next dispatch, so a dependent never starts before its dependencies'
            // finish times.
            stamp_finished(&dag, &mut finished_at);
        }

        let mut report = dag.report();
        for step in &mut report.steps {
            step.started_at = started_at.remove(&step.id);
            step.finished_at = finished_at.remove(&step.id);
        }
        info!(phase = ?report.phase, "run finished");
        Ok(report)
    }
}

impl Executor for LocalExecutor {
    fn execute<'a>(&'a self, run: RunRequest<'a>) -> ExecuteFuture<'a> {
        Box::pin(async move {
            Ok(self
                .run(run.run_id, run.namespace, run.plan, run.options, None)
                .await?)
        })
    }
}

/// Why a step's output was refused because the run's outputs would exceed
/// [`crane_core::tool::MAX_RUN_OUTPUT_BYTES`]; the same words as the `complete` script's.
pub fn run_output_full(stored: usize, bytes: usize) -> String {
    format!(
        "the run's step outputs would reach {} bytes with this one ({bytes} bytes); a run's outputs may be at most {} bytes (16 MiB) in all",
        stored + bytes,
        crane_core::tool::MAX_RUN_OUTPUT_BYTES
    )
}

fn stamp_finished(dag: &Dag, finished_at: &mut HashMap<StepId, String>) {
    for s in dag.steps() {
        if s.phase.is_terminal() && !finished_at.contains_key(&s.id) {
            finished_at.insert(s.id, now_rfc3339());
        }
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2026-11-26T18:00:49.123Z` (fixed width, so
/// such strings sort in time order). Times before 1970 print as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Map, json};

    use super::*;
    use crane_core::run::{FailurePolicy, RunPhase};
    use crane_core::tool::{Tool, ToolFuture, ToolSpec};

    #[test]
    fn rfc3339_formats_known_instants() {
        let at = |secs: u64, millis: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(951_868_799, 999), "2000-02-29T23:59:59.999Z");
        assert_eq!(at(1_709_210_096, 120), "2024-02-29T12:34:56.120Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    /// Blocks until released, counting how many run at once.
    struct Gate {
        release: watch::Receiver<bool>,
        active: Arc<std::sync::atomic::AtomicUsize>,
        peak: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Tool for Gate {
        fn execute<'a>(&'a self, _ctx: &'a ToolContext, _input: Value) -> ToolFuture<'a> {
            use std::sync::atomic::Ordering::SeqCst;
            Box::pin(async move {
                let now = self.active.fetch_add(1, SeqCst) + 1;
                self.peak.fetch_max(now, SeqCst);
                let mut rx = self.release.clone();
                let _ = rx.wait_for(|open| *open).await;
                self.active.fetch_sub(1, SeqCst);
                Ok(json!("passed"))
            })
        }
    }

    /// Turns a hang (a broken engine never filling its slots) into a failure.
    async fn guard<T>(f: impl Future<Output = T>) -> T {
        match tokio::time::timeout(Duration::from_secs(60), f).await {
            Ok(v) => v,
            Err(_) => panic!("the run did not end"),
        }
    }

    fn gate_plan(n: u32, chain: bool) -> Plan {
        Plan {
            steps: (1..=n)
                .map(|id| crane_core::plan::Step {
                    id,
                    tool: "gate".into(),
                    input: Map::new(),
                    reasoning: String::new(),
                    depends_on: if chain && id > 1 {
                        vec![id - 1]
                    } else {
                        vec![]
                    },
                })
                .collect(),
        }
    }

    fn gate() -> (
        watch::Sender<bool>,
        Arc<std::sync::atomic::AtomicUsize>,
        Toolbox,
    ) {
        let (tx, rx) = watch::channel(false);
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tool = Gate {
            release: rx,
            active: Arc::default(),
            peak: peak.clone(),
        };
        let spec = ToolSpec::new(
            "gate",
            "waits for the test to open the gate",
            json!({"type": "object", "additionalProperties": false}),
        );
        (
            tx,
            peak,
            Toolbox::new([(spec, Arc::new(tool) as Arc<dyn Tool>)]),
        )
    }

    #[tokio::test]
    async fn concurrency_is_bounded() -> anyhow::Result<()> {
        let (tx, peak, toolbox) = gate();
        let exec = LocalExecutor::new(toolbox).with_concurrency(3);
        let plan = gate_plan(10, false);
        let options = RunOptions::default();
        let run = exec.run("r", "default", &plan, &options, None);
        let opener = async {
            // Open only once the engine has filled every slot it is allowed.
            while peak.load(std::sync::atomic::Ordering::SeqCst) < 3 {
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(true);
        };
        let (report, ()) = guard(async { tokio::join!(run, opener) }).await;
        let report = report?;
        assert_eq!(report.phase, RunPhase::Succeeded);
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(
            report
                .steps
                .iter()
                .all(|s| s.started_at.is_some() && s.finished_at.is_some())
        );
        Ok(())
    }

    #[tokio::test]
    async fn cancel_lets_the_running_step_finish_and_skips_the_rest() -> anyhow::Result<()> {
        let (tx, peak, toolbox) = gate();
        let exec = LocalExecutor::new(toolbox);
        let plan = gate_plan(3, true);
        let options = RunOptions {
            failure_policy: FailurePolicy::FailFast,
            ..RunOptions::default()
        };
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let run = exec.run("r", "default", &plan, &options, Some(cancel_rx));
        let driver = async {
            while peak.load(std::sync::atomic::Ordering::SeqCst) < 1 {
                tokio::task::yield_now().await;
            }
            let _ = cancel_tx.send(true);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(true);
        };
        let (report, ()) = guard(async { tokio::join!(run, driver) }).await;
        let report = report?;
        assert_eq!(report.phase, RunPhase::Cancelled);
        let phases: Vec<StepPhase> = report.steps.iter().map(|s| s.phase).collect();
        assert_eq!(
            phases,
            vec![StepPhase::Succeeded, StepPhase::Skipped, StepPhase::Skipped]
        );
        assert!(report.steps[1].started_at.is_none() && report.steps[1].finished_at.is_some());
        Ok(())
    }

    #[tokio::test]
    async fn invalid_plans_are_refused_before_running() {
        let (_tx, peak, toolbox) = gate();
        let exec = LocalExecutor::new(toolbox);
        let mut plan = gate_plan(2, true);
        plan.steps[0].depends_on = vec![2];
        let err = exec
            .run("r", "default", &plan, &RunOptions::default(), None)
            .await;
        assert!(matches!(&err, Err(LocalError::InvalidPlan(_))), "{err:?}");
        assert!(err.is_err_and(|e| e.to_string().contains("cycle: 1 -> 2 -> 1")));
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
