//! One pass over a live AgentRun: what its phase asks for next (wait for the pool, start the
//! planner Job, read the plan back, start the run in the engine, mirror its report, cancel,
//! time out, retry, delete after the TTL), returned as the status to write and when to look
//! again. The phases talk to the engine through Redis and to Kubernetes through [`Cluster`];
//! building objects and statuses is [`build`]'s (pure), rebuilding lost runs [`recovery`]'s.
//! Writing the status is the caller's: a phase never writes.

use std::time::Duration;

use crane_core::model::{ModelConfig, Usage};
use crane_core::plan::{Plan, PlanSource};
use crane_core::tool::{Catalog, ToolSpec};
use crane_engine::api::{PlannerInput, PlannerResult, load_planner_result, store_planner_input};
use crane_engine::{EngineConfig, EngineError, PoolName, RunKeys};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use redis::aio::ConnectionManager;
use tracing::info;

use super::build::{self, REASON_PLANNER_FAILED};
use super::cluster::Cluster;
use super::error::{Error, engine_err};
use super::gates;
use super::recovery;
use crate::context::Config;
use crate::metrics::Metrics;
use crane_api::{AgentRun, AgentRunPhase, AgentRunStatus, Outcome, REASON_INVALID_PLAN};

/// A running run is re-read this often even without notifications.
pub const RESYNC: Duration = Duration::from_secs(30);
/// While the planner Job runs, its result is looked for this often (the Job's completion
/// also triggers a reconcile through `.owns`).
pub const PLANNING_POLL: Duration = Duration::from_secs(5);
/// A run whose pool is missing is re-checked this often (pool creation also triggers).
pub const POOL_RECHECK: Duration = Duration::from_secs(60);

/// What the phases work with besides the run itself.
pub struct Env<'a, C> {
    pub cluster: &'a C,
    pub redis: ConnectionManager,
    /// What plans are validated against: the namespace's catalog.
    pub catalog: &'a Catalog,
    /// The namespace's Ready Models.
    pub models: &'a [ModelConfig],
    pub engine: &'a EngineConfig,
    pub config: &'a Config,
    pub metrics: &'a Metrics,
}

impl<C> Env<'_, C> {
    /// What rebuilding a run needs of this environment.
    fn namespace(&self) -> recovery::Namespace<'_> {
        recovery::Namespace {
            engine: self.engine,
            catalog: self.catalog,
            models: self.models,
        }
    }
}

/// The status to write (equal to the old one when nothing changed) and when to look again.
pub type Next = (AgentRunStatus, Action);

/// One pass of the pipeline for a live AgentRun whose engine keys are `keys`.
pub async fn advance<C: Cluster>(
    run: &AgentRun,
    env: &Env<'_, C>,
    keys: &RunKeys,
    now: &Time,
) -> Result<Next, Error> {
    let ns = run.namespace().unwrap_or_default();
    let old = run.status.clone().unwrap_or_default();
    let phase = old.phase.unwrap_or_default();
    let retry = (phase == AgentRunPhase::Failed)
        .then(|| recovery::retry_requested(run))
        .flatten();
    let (status, action) = if let Some(token) = retry {
        let mut redis = env.redis.clone();
        let status = recovery::retry(run, &mut redis, &env.namespace(), keys, &token, now).await?;
        (status, Action::requeue(RESYNC))
    } else if phase.is_terminal() {
        return Ok((old, finished(run, env.cluster).await?));
    } else if run.spec.cancel
        && matches!(
            phase,
            AgentRunPhase::Pending | AgentRunPhase::Planning | AgentRunPhase::AwaitingApproval
        )
    {
        if phase == AgentRunPhase::AwaitingApproval {
            gates::close_open(run, env.cluster).await?;
        }
        let status = build::cancelled_early(run, now);
        return Ok((status, Action::requeue(Duration::from_secs(1))));
    } else {
        match phase {
            AgentRunPhase::Pending => pending(run, env, keys, &ns, now).await?,
            AgentRunPhase::Planning => planning(run, env, keys, &ns, now).await?,
            AgentRunPhase::AwaitingApproval => awaiting(run, env, keys, &ns, now).await?,
            _ => running(run, env, keys, now).await?,
        }
    };
    // A terminal status is followed by the TTL check on the write's own watch event.
    let action = if status.phase.is_some_and(AgentRunPhase::is_terminal) {
        Action::await_change()
    } else {
        action
    };
    Ok((status, action))
}

/// Pending: wait for the pool; then plan (Job) or start (spec.plan).
async fn pending<C: Cluster>(
    run: &AgentRun,
    env: &Env<'_, C>,
    keys: &RunKeys,
    ns: &str,
    now: &Time,
) -> Result<Next, Error> {
    if env
        .cluster
        .pool_tools(ns, &run.spec.worker_pool)
        .await?
        .is_none()
    {
        return Ok((build::pool_missing(run, now), Action::requeue(POOL_RECHECK)));
    }
    env.cluster.namespace_login(ns).await?;
    let model = match &run.spec.model {
        Some(name) => match env.models.iter().find(|m| &m.name == name) {
            Some(m) => Some(m),
            None => {
                return Ok((
                    build::model_missing(run, name, now),
                    Action::requeue(POOL_RECHECK),
                ));
            }
        },
        None => None,
    };
    match &run.spec.plan {
        Some(plan) => {
            start(
                run,
                env,
                keys,
                ns,
                plan.clone(),
                (PlanSource::Spec, None),
                now,
            )
            .await
        }
        None => {
            // The planner gets the prompt and the catalog through Redis, byte for byte; the
            // endpoints (bindings, sources) stay out of it: planning needs names, words and schemas.
            let tools = env
                .catalog
                .specs()
                .map(|s| ToolSpec {
                    binding: None,
                    source: None,
                    ..s.clone()
                })
                .collect();
            let input = PlannerInput {
                prompt: run.spec.prompt.clone().unwrap_or_default(),
                tools,
                model: model.cloned(),
            };
            let mut redis = env.redis.clone();
            store_planner_input(&mut redis, keys, &input, env.engine.ttl)
                .await
                .map_err(engine_err("storing the planner input"))?;
            let job = build::planner_job(run, env.config, model)?;
            env.cluster.apply_job(&job).await?;
            let name = job.name_any();
            info!(job = %name, "planner Job applied");
            Ok((
                build::planning(run, &name, now),
                Action::requeue(PLANNING_POLL),
            ))
        }
    }
}

/// Validates a plan and initialises the run in the engine.
async fn start<C: Cluster>(
    run: &AgentRun,
    env: &Env<'_, C>,
    keys: &RunKeys,
    ns: &str,
    plan: Plan,
    (source, planner_usage): (PlanSource, Option<Usage>),
    now: &Time,
) -> Result<Next, Error> {
    let refuse = |reason: &str, message: &str| {
        Ok((
            build::failed_early(run, reason, message, now),
            Action::await_change(),
        ))
    };
    let served = env
        .cluster
        .pool_tools(ns, &run.spec.worker_pool)
        .await?
        .unwrap_or_default();
    let checked = crane_core::validate::validate(&plan, env.catalog)
        .and_then(|()| crane_core::validate::check_served(&plan, &run.spec.worker_pool, &served));
    if let Err(e) = checked {
        return refuse(
            REASON_INVALID_PLAN,
            &build::invalid_plan_message(&e.to_string()),
        );
    }
    let pool = match PoolName::parse(&format!("{ns}/{}", run.spec.worker_pool)) {
        Ok(p) => p,
        Err(e) => {
            let message = format!("spec.workerPool {:?}: {e}", run.spec.worker_pool);
            return refuse("InvalidWorkerPool", &message);
        }
    };
    let options = match build::run_options(
        run,
        &plan,
        env.catalog,
        env.models,
        planner_usage,
        env.config.telemetry.traced,
    ) {
        Ok(o) => o,
        Err(m) => return refuse(REASON_INVALID_PLAN, &build::invalid_plan_message(&m)),
    };
    if run.spec.approval.is_some_and(|a| a.plan) {
        match gates::plan_gate(run, &plan, env.cluster, now).await? {
            gates::PlanGate::Approved => {}
            gates::PlanGate::Open => {
                let status = build::awaiting_approval(run, plan, source, planner_usage, now);
                return Ok((status, Action::requeue(RESYNC)));
            }
            gates::PlanGate::Rejected(note) => return refuse(build::REASON_REJECTED, &note),
        }
    }
    let mut redis = env.redis.clone();
    let init = crane_engine::init_run(&mut redis, keys, &pool, &plan, &options, env.engine).await;
    match init {
        Ok(outcome) => info!(
            ?outcome,
            steps = plan.steps.len(),
            "run initialised in the engine"
        ),
        // What the validator let through but the engine refuses is still the plan's fault.
        Err(EngineError::InvalidPlan(m)) => {
            return refuse(REASON_INVALID_PLAN, &build::invalid_plan_message(&m));
        }
        Err(e) => return Err(engine_err("initialising the run")(e)),
    }
    let status_plan = (source != PlanSource::Spec).then_some(plan);
    let started = build::started(run, status_plan, source, now);
    // A short run may already be over (or this is a repeat on a stale cached object): then
    // the terminal status is the first status write, not Running followed by it.
    let report = crane_engine::run_report(&mut redis, keys, crate::agentrun::OUTPUT_PREVIEW)
        .await
        .map_err(engine_err("reading the run report"))?;
    if report.phase.is_terminal() {
        let mut ran = run.clone();
        ran.status = Some(started);
        let status = build::from_report(&ran, &report, false, now)?;
        return Ok((status, Action::await_change()));
    }
    Ok((started, Action::requeue(RESYNC)))
}

/// The model id the planner used: the run's Model's, else the operator's default LLM's.
fn planner_model<C>(run: &AgentRun, env: &Env<'_, C>) -> String {
    run.spec
        .model
        .as_ref()
        .and_then(|name| env.models.iter().find(|m| &m.name == name))
        .map(|m| m.model.clone())
        .or_else(|| env.config.llm_model.clone())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Planning: read the planner's result back, or notice the Job failed without one.
async fn planning<C: Cluster>(
    run: &AgentRun,
    env: &Env<'_, C>,
    keys: &RunKeys,
    ns: &str,
    now: &Time,
) -> Result<Next, Error> {
    let fail = |reason: &str, message: &str| {
        Ok((
            build::failed_early(run, reason, message, now),
            Action::await_change(),
        ))
    };
    let failed = |message: &str| fail(REASON_PLANNER_FAILED, message);
    let mut redis = env.redis.clone();
    match load_planner_result(&mut redis, keys).await {
        Ok(Some(PlannerResult::Planned {
            plan,
            source,
            usage,
            ..
        })) => {
            let next = start(run, env, keys, ns, plan, (source, usage), now).await?;
            // Counted once the run moved on (a failed start is tried again, reading the same
            // result).
            if let Some(usage) = usage {
                env.metrics.llm_usage(&planner_model(run, env), &usage);
            }
            return Ok(next);
        }
        Ok(Some(PlannerResult::Failed { error })) => {
            return failed(&format!("planner failed: {error}"));
        }
        Err(EngineError::Corrupt { detail, .. }) => {
            return failed(&format!("the planner's result is unreadable: {detail}"));
        }
        Err(e) => return Err(engine_err("reading the planner result")(e)),
        Ok(None) => {}
    }
    let name = build::planner_job_name(&run.name_any());
    let job = env.cluster.job(ns, &name).await?;
    let failure = match &job {
        None => Some(format!(
            "planner Job {name} disappeared before it stored a plan"
        )),
        Some(job) => build::job_failed(job)
            .map(|why| {
                format!(
                    "planner Job {name} failed without storing a plan ({why}); see its pod's logs"
                )
            })
            // The planner stores before it exits, and the result was read above: a Job that
            // completed without one lost it (Redis flushed or restarted).
            .or_else(|| {
                job.status
                    .as_ref()
                    .and_then(|s| s.succeeded)
                    .is_some_and(|n| n > 0)
                    .then(|| format!("planner Job {name} completed but its plan is not in Redis (was Redis restarted or flushed?)"))
            }),
    };
    if let Some(message) = failure {
        return failed(&message);
    }
    let status = run.status.clone().unwrap_or_default();
    if deadline_passed(run, &status) {
        let message = format!(
            "the run exceeded activeDeadlineSeconds ({} s) while planning",
            run.spec.active_deadline_seconds
        );
        return fail(build::REASON_DEADLINE, &message);
    }
    let wait = until_deadline(run, &status).min(PLANNING_POLL);
    Ok((status, Action::requeue(wait)))
}

/// AwaitingApproval: the plan (kept in status, or the spec's) starts once its Approval says
/// so; the checks of [`start`] run again, against the catalog as it is now.
async fn awaiting<C: Cluster>(
    run: &AgentRun,
    env: &Env<'_, C>,
    keys: &RunKeys,
    ns: &str,
    now: &Time,
) -> Result<Next, Error> {
    let status = run.status.clone().unwrap_or_default();
    let Some(plan) = status.plan.clone().or_else(|| run.spec.plan.clone()) else {
        let message = "the plan awaiting approval is no longer in status.plan";
        return Ok((
            build::failed_early(run, REASON_PLANNER_FAILED, message, now),
            Action::await_change(),
        ));
    };
    if deadline_passed(run, &status) {
        let message = format!(
            "the run exceeded activeDeadlineSeconds ({} s) while its plan awaited approval",
            run.spec.active_deadline_seconds
        );
        gates::close_open(run, env.cluster).await?;
        return Ok((
            build::failed_early(run, build::REASON_DEADLINE, &message, now),
            Action::await_change(),
        ));
    }
    let source = status.plan_source.unwrap_or(PlanSource::Spec);
    let usage = status.usage.map(|u| Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
    });
    let (next, action) = start(run, env, keys, ns, plan, (source, usage), now).await?;
    let wait = until_deadline(run, &status).min(RESYNC);
    let action = if next.phase == Some(AgentRunPhase::AwaitingApproval) {
        Action::requeue(wait)
    } else {
        action
    };
    Ok((next, action))
}

/// Running: cancel or time out if asked, then mirror the engine's report.
async fn running<C: Cluster>(
    run: &AgentRun,
    env: &Env<'_, C>,
    keys: &RunKeys,
    now: &Time,
) -> Result<Next, Error> {
    let mut redis = env.redis.clone();
    let old = run.status.clone().unwrap_or_default();
    let deadline = deadline_passed(run, &old);
    if run.spec.cancel || deadline {
        match crane_engine::cancel_run(&mut redis, keys).await {
            Ok(_) | Err(EngineError::RunNotFound(_)) => {}
            Err(e) => return Err(engine_err("cancelling the run")(e)),
        }
    }
    let report = match crane_engine::run_report(&mut redis, keys, crate::agentrun::OUTPUT_PREVIEW)
        .await
    {
        Ok(r) => r,
        // Redis lost the run (restart without persistence): rebuild it from the status.
        Err(EngineError::RunNotFound(_)) => {
            let status = recovery::rebuild(run, &mut redis, &env.namespace(), keys, now).await?;
            return Ok((status, Action::requeue(RESYNC)));
        }
        Err(e) => return Err(engine_err("reading the run report")(e)),
    };
    let mut status = build::from_report(run, &report, deadline, now)?;
    let mut requeue = until_deadline(run, &old).min(RESYNC);
    let waits = |steps: &[crane_api::StepStatus]| {
        steps
            .iter()
            .any(|s| s.phase == crane_core::run::StepPhase::WaitingForApproval)
    };
    let gated = report
        .steps
        .iter()
        .any(|s| s.phase == crane_core::run::StepPhase::WaitingForApproval);
    if gated && !run.spec.cancel && !deadline {
        let (applied, next) = gates::sync(run, &report, env.cluster, &mut redis, keys, now).await?;
        for a in &applied {
            let (warning, reason) = match a.outcome {
                Outcome::Approved => (false, "Approved"),
                Outcome::Rejected => (true, "Rejected"),
                Outcome::TimedOut => (true, "ApprovalTimedOut"),
            };
            env.cluster.event(run, warning, reason, &a.note).await;
        }
        if !applied.is_empty() {
            // The status shows what the decisions did, not the gates as they were.
            let report =
                crane_engine::run_report(&mut redis, keys, crate::agentrun::OUTPUT_PREVIEW)
                    .await
                    .map_err(engine_err("reading the run report"))?;
            status = build::from_report(run, &report, deadline, now)?;
        }
        if let Some(next) = next {
            requeue = requeue.min(next + Duration::from_millis(100));
        }
    }
    if status.phase.is_some_and(AgentRunPhase::is_terminal) && waits(&old.steps) {
        gates::close_open(run, env.cluster).await?;
    }
    Ok((status, Action::requeue(requeue)))
}

/// Terminal: delete after ttlSecondsAfterFinished.
async fn finished<C: Cluster>(run: &AgentRun, cluster: &C) -> Result<Action, Error> {
    let Some(finished) = run.status.as_ref().and_then(|s| s.finished_at.as_ref()) else {
        return Ok(Action::await_change());
    };
    let left = time_left(finished, run.spec.ttl_seconds_after_finished);
    if !left.is_zero() {
        return Ok(Action::requeue(left + Duration::from_millis(100)));
    }
    if run.metadata.deletion_timestamp.is_none() {
        info!("ttlSecondsAfterFinished passed; deleting the AgentRun");
        cluster
            .delete_run(&run.namespace().unwrap_or_default(), &run.name_any())
            .await?;
    }
    Ok(Action::await_change())
}

/// Time from now until `seconds` after `from` (zero when already past).
fn time_left(from: &Time, seconds: u32) -> Duration {
    let at = from.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(seconds));
    let left = k8s_openapi::jiff::Timestamp::now().duration_until(at);
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

/// Time left before activeDeadlineSeconds (from startedAt), so the run is re-read then.
fn until_deadline(run: &AgentRun, status: &AgentRunStatus) -> Duration {
    match &status.started_at {
        Some(started) => {
            time_left(started, run.spec.active_deadline_seconds) + Duration::from_millis(200)
        }
        None => RESYNC,
    }
}

fn deadline_passed(run: &AgentRun, status: &AgentRunStatus) -> bool {
    status
        .started_at
        .as_ref()
        .is_some_and(|t| time_left(t, run.spec.active_deadline_seconds).is_zero())
}

#[cfg(test)]
mod tests {
    //! Every phase through [`advance`], against a real Redis and an in-memory cluster: what a
    //! reconcile decides, without an apiserver.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use crane_engine::api::{PlannerResult, client, connect, store_planner_result};
    use crane_engine::metrics::Metrics;
    use crane_engine::{Worker, WorkerConfig};
    use crane_testkit::RedisServer;
    use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
    use serde_json::{Value, json};

    use super::*;
    use crane_api::{Approval, ApprovalStatus, CONDITION_FAILED, CONDITION_PLANNED};
    use crane_core::run::StepPhase;

    /// Pools, Jobs and deletions, in memory.
    #[derive(Default)]
    struct FakeCluster {
        pools: Mutex<HashMap<(String, String), Vec<String>>>,
        jobs: Mutex<HashMap<(String, String), Job>>,
        deleted: Mutex<Vec<(String, String)>>,
        approvals: Mutex<Vec<Approval>>,
        events: Mutex<Vec<(String, String)>>,
    }

    impl FakeCluster {
        fn add_pool(&self, ns: &str, name: &str) {
            self.add_pool_serving(ns, name, &[]);
        }
        fn add_pool_serving(&self, ns: &str, name: &str, tools: &[&str]) {
            self.pools.lock().unwrap_or_else(|e| e.into_inner()).insert(
                (ns.into(), name.into()),
                tools.iter().map(|t| (*t).to_owned()).collect(),
            );
        }
        fn jobs(&self) -> Vec<Job> {
            self.jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect()
        }
        fn set_job(&self, job: Job) {
            let key = (job.namespace().unwrap_or_default(), job.name_any());
            self.jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, job);
        }
    }

    impl Cluster for FakeCluster {
        async fn namespace_login(&self, _ns: &str) -> Result<(), Error> {
            Ok(())
        }

        async fn pool_tools(&self, ns: &str, name: &str) -> Result<Option<Vec<String>>, Error> {
            Ok(self
                .pools
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(ns.into(), name.into()))
                .cloned())
        }
        async fn apply_job(&self, job: &Job) -> Result<(), Error> {
            self.set_job(job.clone());
            Ok(())
        }
        async fn job(&self, ns: &str, name: &str) -> Result<Option<Job>, Error> {
            Ok(self
                .jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(ns.into(), name.into()))
                .cloned())
        }
        async fn delete_run(&self, ns: &str, name: &str) -> Result<(), Error> {
            self.deleted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((ns.into(), name.into()));
            Ok(())
        }
        async fn approvals(&self, ns: &str, run: &str) -> Result<Vec<Approval>, Error> {
            Ok(self
                .approvals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|a| a.namespace().as_deref() == Some(ns) && a.spec.run == run)
                .cloned()
                .collect())
        }
        async fn create_approval(&self, approval: &Approval) -> Result<(), Error> {
            let mut all = self.approvals.lock().unwrap_or_else(|e| e.into_inner());
            if !all.iter().any(|a| a.name_any() == approval.name_any()) {
                all.push(approval.clone());
            }
            Ok(())
        }
        async fn approval_status(
            &self,
            _ns: &str,
            name: &str,
            status: &ApprovalStatus,
        ) -> Result<(), Error> {
            for a in self
                .approvals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter_mut()
                .filter(|a| a.name_any() == name)
            {
                a.status = Some(status.clone());
            }
            Ok(())
        }
        async fn delete_approval(&self, _ns: &str, name: &str) -> Result<(), Error> {
            self.approvals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|a| a.name_any() != name);
            Ok(())
        }
        async fn event(&self, _run: &AgentRun, _warning: bool, reason: &str, note: &str) {
            self.events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((reason.into(), note.into()));
        }
    }

    struct World {
        _redis: RedisServer,
        client: redis::Client,
        redis: ConnectionManager,
        cluster: FakeCluster,
        catalog: Catalog,
        models: Vec<ModelConfig>,
        engine: EngineConfig,
        config: Config,
        operator_metrics: crate::metrics::Metrics,
    }

    impl World {
        async fn new() -> World {
            let server = RedisServer::builder()
                .start()
                .unwrap_or_else(|e| panic!("redis-server: {e}"));
            let client = client(&server.url(), &crane_engine::api::Auth::default())
                .unwrap_or_else(|e| panic!("{e}"));
            let redis = connect(&client).await.unwrap_or_else(|e| panic!("{e}"));
            World {
                config: Config::new(server.url()),
                _redis: server,
                client,
                redis,
                cluster: FakeCluster::default(),
                catalog: Catalog::builtins(),
                models: Vec::new(),
                engine: EngineConfig::default(),
                operator_metrics: crate::metrics::Metrics::new(),
            }
        }

        /// One reconcile pass; the status it decides is stored on `run`, as the apiserver
        /// would after the write.
        async fn advance(&self, run: &mut AgentRun) -> Action {
            let env = Env {
                cluster: &self.cluster,
                redis: self.redis.clone(),
                catalog: &self.catalog,
                models: &self.models,
                engine: &self.engine,
                config: &self.config,
                metrics: &self.operator_metrics,
            };
            let keys = run_keys(run);
            let (status, action) = advance(run, &env, &keys, &now())
                .await
                .unwrap_or_else(|e| panic!("advance: {e}"));
            run.status = Some(status);
            action
        }

        /// A worker on `team-a/default` until the returned sender is dropped or fires; the
        /// handle ends when the worker has.
        async fn spawn_worker(
            &self,
        ) -> (
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<Result<crane_engine::worker::WorkerSummary, EngineError>>,
        ) {
            let pool = PoolName::parse("team-a/default").unwrap_or_else(|e| panic!("{e}"));
            let mut config = WorkerConfig::new(pool);
            config.idle_timeout = None;
            config.block = Duration::from_millis(100);
            let worker = Worker::new(
                &self.client,
                Arc::new(crane_tools::in_memory()),
                config,
                Arc::new(Metrics::new()),
            )
            .await
            .unwrap_or_else(|e| panic!("worker: {e}"));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let handle = tokio::spawn(worker.run(async move {
                let _ = stopped.await;
            }));
            (stop, handle)
        }

        /// Advances `run` until `done` holds of it (a panic after 20 s).
        async fn advance_until(
            &self,
            run: &mut AgentRun,
            done: impl Fn(&AgentRun, &FakeCluster) -> bool,
        ) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                self.advance(run).await;
                if done(run, &self.cluster) {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "{:#?}", run.status);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// Runs workers on `ns/default` until the run of `keys` is finished in the engine.
        async fn work_until_finished(&self, keys: &RunKeys) {
            let (stop, handle) = self.spawn_worker().await;
            let mut redis = self.redis.clone();
            let report = crane_engine::wait_for_run(
                &self.client,
                &mut redis,
                keys,
                Some(Duration::from_secs(60)),
            )
            .await
            .unwrap_or_else(|e| panic!("wait: {e}"));
            assert!(report.phase.is_terminal());
            let _ = stop.send(());
            let _ = handle.await;
        }
    }

    fn run_keys(run: &AgentRun) -> RunKeys {
        RunKeys::new("team-a", run.metadata.uid.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::now())
    }

    fn agent_run(spec: Value) -> AgentRun {
        serde_json::from_value(json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": "r", "namespace": "team-a", "uid": format!("uid-{}", rand_suffix()), "generation": 1},
            "spec": spec,
        }))
        .unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(1);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn phase(run: &AgentRun) -> AgentRunPhase {
        run.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }

    fn reason(run: &AgentRun, type_: &str) -> String {
        run.status
            .as_ref()
            .and_then(|s| build::condition(s, type_))
            .map(|c| c.reason.clone())
            .unwrap_or_default()
    }

    fn one_step_plan() -> Value {
        json!({"steps": [{"id": 1, "tool": "calculator", "input": {"expression": "6*7"}}]})
    }

    #[tokio::test]
    async fn pending_waits_for_its_pool_then_starts_the_planner_job() {
        let w = World::new().await;
        let mut run = agent_run(json!({"prompt": "calculate 2+3"}));
        let action = w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Pending);
        assert_eq!(
            reason(&run, CONDITION_PLANNED),
            build::REASON_POOL_NOT_FOUND
        );
        assert_eq!(action, Action::requeue(POOL_RECHECK));
        assert!(w.cluster.jobs().is_empty());

        w.cluster.add_pool("team-a", "default");
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Planning);
        let jobs = w.cluster.jobs();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].name_any(), "r-planner");
    }

    #[tokio::test]
    async fn a_plan_in_the_spec_starts_in_the_engine_and_mirrors_to_the_end() {
        let w = World::new().await;
        w.cluster.add_pool("team-a", "default");
        let mut run = agent_run(json!({"plan": one_step_plan()}));
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Running);
        let status = run.status.clone().unwrap_or_default();
        assert_eq!(status.progress.as_deref(), Some("0/1"));
        assert!(status.plan.is_none(), "a spec plan is not copied to status");

        let keys = run_keys(&run);
        w.work_until_finished(&keys).await;
        let action = w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Succeeded);
        assert_eq!(
            run.status.as_ref().and_then(|s| s.result.clone()),
            Some(json!(42))
        );
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn an_invalid_plan_fails_before_anything_runs() {
        let w = World::new().await;
        w.cluster.add_pool("team-a", "default");
        let mut run =
            agent_run(json!({"plan": {"steps": [{"id": 1, "tool": "shell", "input": {}}]}}));
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Failed);
        assert_eq!(reason(&run, CONDITION_FAILED), REASON_INVALID_PLAN);
        let error = run.status.and_then(|s| s.error).unwrap_or_default();
        assert!(error.contains("unknown tool \"shell\""), "{error}");
    }

    #[tokio::test]
    async fn a_tool_the_pool_does_not_serve_is_an_invalid_plan() {
        let w = World::new().await;
        w.cluster.add_pool_serving("team-a", "default", &["wait"]);
        let mut run = agent_run(json!({"plan": one_step_plan()}));
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Failed);
        assert_eq!(reason(&run, CONDITION_FAILED), REASON_INVALID_PLAN);
        let error = run.status.and_then(|s| s.error).unwrap_or_default();
        assert!(
            error.contains(
                "tool \"calculator\" is not served by WorkerPool \"default\" (its spec.tools: wait)"
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn planning_takes_the_planners_plan_or_its_failure() {
        let w = World::new().await;
        w.cluster.add_pool("team-a", "default");
        let mut redis = w.redis.clone();

        // Still planning: the Job runs and nothing is stored yet.
        let mut run = agent_run(json!({"prompt": "what is 6*7"}));
        w.advance(&mut run).await;
        let action = w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Planning);
        assert!(action != Action::await_change());

        let keys = run_keys(&run);
        let plan: Plan = serde_json::from_value(one_step_plan()).unwrap_or_default();
        let planned = PlannerResult::Planned {
            plan: plan.clone(),
            source: PlanSource::Rules,
            fallback_reason: None,
            usage: None,
        };
        store_planner_result(&mut redis, &keys, &planned, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Running);
        let status = run.status.clone().unwrap_or_default();
        assert_eq!(status.plan, Some(plan));
        assert_eq!(status.plan_source, Some(PlanSource::Rules));

        // The planner's own error becomes the run's.
        let mut run = agent_run(json!({"prompt": "sing a song"}));
        w.advance(&mut run).await;
        let keys = run_keys(&run);
        let failed = PlannerResult::Failed {
            error: "the rules planner cannot plan this prompt".into(),
        };
        store_planner_result(&mut redis, &keys, &failed, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Failed);
        assert_eq!(reason(&run, CONDITION_FAILED), REASON_PLANNER_FAILED);
    }

    #[tokio::test]
    async fn a_planner_job_that_failed_without_a_plan_fails_the_run() {
        let w = World::new().await;
        w.cluster.add_pool("team-a", "default");
        let mut run = agent_run(json!({"prompt": "what is 6*7"}));
        w.advance(&mut run).await;
        let mut job = w.cluster.jobs().remove(0);
        job.status = Some(JobStatus {
            failed: Some(1),
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("BackoffLimitExceeded".into()),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        });
        w.cluster.set_job(job);
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Failed);
        let error = run.status.and_then(|s| s.error).unwrap_or_default();
        assert!(error.contains("BackoffLimitExceeded"), "{error}");
    }

    #[tokio::test]
    async fn a_run_redis_lost_is_rebuilt_from_its_status() {
        let w = World::new().await;
        w.cluster.add_pool("team-a", "default");
        let mut run = agent_run(json!({"plan": one_step_plan()}));
        w.advance(&mut run).await;
        let keys = run_keys(&run);
        let mut redis = w.redis.clone();
        crane_engine::delete_run(&mut redis, &keys)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            crane_engine::run_report(&mut redis, &keys, crate::agentrun::OUTPUT_PREVIEW)
                .await
                .is_err()
        );

        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Running);
        assert!(
            crane_engine::run_report(&mut redis, &keys, crate::agentrun::OUTPUT_PREVIEW)
                .await
                .is_ok(),
            "the run is back in redis"
        );
        w.work_until_finished(&keys).await;
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Succeeded);
    }

    #[tokio::test]
    async fn a_retry_token_reruns_a_failed_run_once() {
        let w = World::new().await;
        w.cluster.add_pool("team-a", "default");
        let mut run = agent_run(json!({
            "plan": {"steps": [{"id": 1, "tool": "calculator", "input": {"expression": "1/0"}}]},
            "retry": {"maxAttempts": 1}
        }));
        w.advance(&mut run).await;
        let keys = run_keys(&run);
        w.work_until_finished(&keys).await;
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Failed);

        run.metadata.annotations =
            Some([(recovery::RETRY_ANNOTATION.to_owned(), "1".to_owned())].into());
        let action = w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Running);
        assert_eq!(action, Action::requeue(RESYNC));
        assert_eq!(
            run.status.as_ref().and_then(|s| s.retry_token.as_deref()),
            Some("1")
        );
        w.work_until_finished(&keys).await;
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Failed, "1/0 fails again");
        // The same token does not retry twice.
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Failed);
    }

    #[tokio::test]
    async fn cancel_before_planning_and_ttl_deletion() {
        let w = World::new().await;
        let mut run = agent_run(
            json!({"prompt": "calculate 1+1", "cancel": true, "ttlSecondsAfterFinished": 0}),
        );
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Cancelled);
        w.advance(&mut run).await;
        assert_eq!(
            *w.cluster.deleted.lock().unwrap_or_else(|e| e.into_inner()),
            vec![("team-a".to_owned(), "r".to_owned())]
        );
    }

    fn approval_named(cluster: &FakeCluster, name: &str) -> Option<Approval> {
        cluster
            .approvals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|a| a.name_any() == name)
            .cloned()
    }

    fn decide_in_cluster(
        cluster: &FakeCluster,
        name: &str,
        decision: crane_api::Decision,
        by: &str,
    ) {
        for a in cluster
            .approvals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .filter(|a| a.name_any() == name)
        {
            a.spec.decision = Some(decision);
            a.spec.decided_by = Some(by.into());
            a.spec.comment = Some("ship it".into());
        }
    }

    #[tokio::test]
    async fn a_waiting_step_gets_an_approval_whose_decision_is_applied_once() {
        let w = World::new().await;
        w.cluster.add_pool("team-a", "default");
        let mut run = agent_run(json!({"plan": {"steps": [
            {"id": 1, "tool": "approval", "input": {"message": "Deploy?", "approvers": ["alice", "ops"]}},
            {"id": 2, "tool": "calculator", "input": {"expression": "6*7"}, "dependsOn": [1]}
        ]}}));
        w.advance(&mut run).await;
        let _worker = w.spawn_worker().await;
        w.advance_until(&mut run, |_, c| approval_named(c, "r-step-1").is_some())
            .await;
        let a = approval_named(&w.cluster, "r-step-1").unwrap_or_else(|| panic!("no approval"));
        assert_eq!(
            (a.spec.run.as_str(), a.spec.step_id, a.spec.message.as_str()),
            ("r", Some(1), "Deploy?")
        );
        assert_eq!(a.spec.approvers, ["alice", "ops"]);
        assert_eq!(
            a.owner_references().first().map(|o| o.uid.clone()),
            run.metadata.uid.clone(),
            "owned by the run, so deleting the run deletes it"
        );
        let step = |run: &AgentRun| run.status.as_ref().map(|s| s.steps[0].phase);
        assert_eq!(step(&run), Some(StepPhase::WaitingForApproval));
        // Nothing happens without a decision.
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Running);

        decide_in_cluster(
            &w.cluster,
            "r-step-1",
            crane_api::Decision::Approved,
            "alice",
        );
        w.advance_until(&mut run, |r, _| phase(r) == AgentRunPhase::Succeeded)
            .await;
        assert_eq!(
            run.status.as_ref().and_then(|s| s.result.clone()),
            Some(json!(42))
        );
        let a = approval_named(&w.cluster, "r-step-1").unwrap_or_else(|| panic!("gone"));
        assert_eq!(
            a.status.and_then(|s| s.outcome),
            Some(crane_api::Outcome::Approved)
        );
        let events = w
            .cluster
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        assert_eq!(
            events,
            [(
                "Approved".to_owned(),
                "r-step-1 approved by alice: ship it".to_owned()
            )],
            "one Event, however many passes"
        );
    }

    #[tokio::test]
    async fn a_gate_nobody_decides_applies_its_on_timeout_and_cancel_closes_open_ones() {
        let w = World::new().await;
        w.cluster.add_pool("team-a", "default");
        let mut run = agent_run(json!({"plan": {"steps": [
            {"id": 1, "tool": "approval", "input": {"message": "a?", "timeoutSeconds": 1, "onTimeout": "Reject"}},
            {"id": 2, "tool": "approval", "input": {"message": "b?"}}
        ]}, "failurePolicy": "ContinueIndependent"}));
        w.advance(&mut run).await;
        let _worker = w.spawn_worker().await;
        w.advance_until(&mut run, |_, c| {
            approval_named(c, "r-step-1")
                .and_then(|a| a.status)
                .and_then(|s| s.outcome)
                .is_some()
        })
        .await;
        let a = approval_named(&w.cluster, "r-step-1").unwrap_or_else(|| panic!("gone"));
        assert_eq!(
            a.status.and_then(|s| s.outcome),
            Some(crane_api::Outcome::TimedOut)
        );
        w.advance(&mut run).await;
        let steps = run.status.clone().unwrap_or_default().steps;
        assert_eq!(steps[0].phase, StepPhase::Failed);
        assert!(
            steps[0]
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("rejected by timeout")),
            "{steps:#?}"
        );
        assert!(approval_named(&w.cluster, "r-step-2").is_some());

        run.spec.cancel = true;
        w.advance_until(&mut run, |r, _| phase(r) == AgentRunPhase::Cancelled)
            .await;
        assert!(
            approval_named(&w.cluster, "r-step-2").is_none(),
            "the open Approval of a cancelled run is deleted"
        );
        assert!(
            approval_named(&w.cluster, "r-step-1").is_some(),
            "decided ones stay as the record"
        );
    }

    #[tokio::test]
    async fn a_plan_that_needs_approval_holds_everything_until_it_is_approved() {
        let w = World::new().await;
        w.cluster.add_pool("team-a", "default");
        let mut run = agent_run(json!({"plan": one_step_plan(), "approval": {"plan": true}}));
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::AwaitingApproval);
        let a = approval_named(&w.cluster, "r-plan").unwrap_or_else(|| panic!("no approval"));
        assert_eq!(a.spec.step_id, None);
        assert!(
            a.spec.message.contains("1 step(s) using calculator"),
            "{}",
            a.spec.message
        );
        // Nothing is in the engine yet.
        let mut redis = w.redis.clone();
        assert!(matches!(
            crane_engine::run_report(
                &mut redis,
                &run_keys(&run),
                crane_engine::api::Outputs::Full
            )
            .await,
            Err(EngineError::RunNotFound(_))
        ));
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::AwaitingApproval);

        decide_in_cluster(&w.cluster, "r-plan", crane_api::Decision::Approved, "alice");
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Running);
        w.work_until_finished(&run_keys(&run)).await;
        w.advance(&mut run).await;
        assert_eq!(phase(&run), AgentRunPhase::Succeeded);

        let mut rejected = agent_run(json!({"plan": one_step_plan(), "approval": {"plan": true}}));
        rejected.metadata.name = Some("q".into());
        w.advance(&mut rejected).await;
        decide_in_cluster(&w.cluster, "q-plan", crane_api::Decision::Rejected, "bob");
        w.advance(&mut rejected).await;
        assert_eq!(phase(&rejected), AgentRunPhase::Failed);
        assert_eq!(reason(&rejected, CONDITION_FAILED), "Rejected");
        assert_eq!(
            rejected.status.and_then(|s| s.error).as_deref(),
            Some("q-plan rejected by bob: ship it")
        );
    }
}
