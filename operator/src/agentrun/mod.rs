//! The AgentRun controller: a thin pipeline read → validate → build ([`build`], pure) →
//! apply (planner Job by server-side apply, the run in the Redis engine) → status (one
//! server-side-apply status patch, written only when it changed). Progress is mirrored from
//! the engine's notifications ([`mirror`]), coalesced per run; a periodic resync covers lost
//! notifications. The finalizer `crane.dev/cleanup` removes the run's Redis keys.
//!
//! Choices where DESIGN.md is silent:
//! - The engine's run id is the AgentRun's `metadata.uid`, so a name can be reused at once.
//! - A missing WorkerPool keeps the run Pending with `Planned=False`, reason
//!   `WorkerPoolNotFound` (no extra condition type); pool creation triggers the run through
//!   a watch on WorkerPools, and it is re-checked every minute as well.
//! - The planner Job hands its outcome over in `crane:{<uid>}:planner` (TTL 24 h): the plan
//!   and its source, or the planner's own error message, which becomes status.error with
//!   reason `PlannerFailed`. The prompt reaches the pod in env `CRANE_PROMPT` only.
//! - activeDeadlineSeconds counts from status.startedAt (planner Job creation, or the start
//!   of the run for spec.plan); waiting for a missing pool does not count.
//! - If Redis lost a running run, it is rebuilt from its status: completed steps keep their
//!   mirrored outputs and do not run again, except a step whose mirrored output was
//!   truncated, which runs again ([`recovery`]).
//! - Retry from failure: annotate a Failed run with `crane.dev/retry=<new token>` (e.g. a
//!   timestamp); its failed and skipped steps run again, completed ones keep their outputs,
//!   the token handled last is kept in status.retryToken ([`recovery`]).

pub mod build;
pub mod mirror;
pub mod recovery;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crane_core::plan::PlanSource;
use crane_core::run::RunReport;
use crane_core::tool::Catalog;
use crane_engine::api::{PlannerResult, delete_planner_result, load_planner_result};
use crane_engine::{EngineConfig, EngineError, PoolName};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{Instrument, info, warn};

use crate::Shutdown;
use crate::context::{Context, FIELD_MANAGER};
use crate::metrics::Controller as Ctl;
use build::{BuildError, REASON_PLANNER_FAILED};
use crane_api::{
    AgentRun, AgentRunPhase, AgentRunStatus, ApiError, REASON_INVALID_PLAN, WorkerPool,
};
use mirror::RunIndex;

/// Finalizer that removes a run's Redis keys before the object goes.
pub const FINALIZER: &str = "crane.dev/cleanup";
/// A running run is re-read this often even without notifications.
pub const RESYNC: Duration = Duration::from_secs(30);
/// While the planner Job runs, its result is looked for this often (the Job's completion
/// also triggers a reconcile through `.owns`).
pub const PLANNING_POLL: Duration = Duration::from_secs(5);
/// A run whose pool is missing is re-checked this often (pool creation also triggers).
pub const POOL_RECHECK: Duration = Duration::from_secs(60);

/// Everything a reconcile can fail on, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the AgentRun could not be read: {0}")]
    InvalidObject(String),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("kubernetes API error while {what}: {source}")]
    Kube {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("engine error while {what}: {source}")]
    Engine {
        what: &'static str,
        #[source]
        source: EngineError,
    },
    #[error("building status: {0}")]
    Status(#[from] ApiError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Stable, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidObject(_) => "invalid_object",
            Self::Build(_) => "build",
            Self::Kube { .. } => "kube",
            Self::Engine { .. } => "engine",
            Self::Status(_) => "status",
            Self::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
        }
    }

    /// Errors only a change of the object can fix.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::InvalidObject(_) | Self::Build(_) | Self::Status(_) => true,
            Self::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_permanent(),
                _ => false,
            },
            _ => false,
        }
    }
}

fn kube_err(what: &'static str) -> impl Fn(kube::Error) -> Error {
    move |source| Error::Kube { what, source }
}

fn engine_err(what: &'static str) -> impl Fn(EngineError) -> Error {
    move |source| Error::Engine { what, source }
}

/// Per-object exponential backoff for transient errors, reset on success.
#[derive(Default)]
pub struct Backoff(Mutex<HashMap<String, u32>>);

impl Backoff {
    /// The delay after one more failure of `key`: 1 s doubling up to 5 min.
    pub fn failed(&self, key: &str) -> Duration {
        let n = self
            .0
            .lock()
            .map(|mut m| {
                let n = m.entry(key.to_owned()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        Duration::from_secs(1u64 << (n - 1).min(9)).min(Duration::from_secs(300))
    }

    pub fn succeeded(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }
}

/// The AgentRun controller's state.
pub struct Ctrl {
    pub ctx: Arc<Context>,
    pub index: Arc<RunIndex>,
    backoff: Backoff,
    /// Per run uid: the resourceVersion a status write was based on and a hash of what was
    /// written, so a reconcile on a cached object that has not seen that write yet does not
    /// write the same status again.
    written: Mutex<HashMap<String, (String, u64)>>,
    /// The controllers' caches, for the runs-by-phase gauge.
    stores: Mutex<Vec<Store<DeserializeGuard<AgentRun>>>>,
    catalog: Catalog,
    engine: EngineConfig,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Runs the AgentRun controller(s) — one per watched namespace, or one for all — and the
/// progress follower, until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: Shutdown) -> anyhow::Result<()> {
    let index = Arc::new(RunIndex::default());
    let ctrl = Arc::new(Ctrl {
        ctx: ctx.clone(),
        index: index.clone(),
        backoff: Backoff::default(),
        written: Mutex::new(HashMap::new()),
        stores: Mutex::new(Vec::new()),
        catalog: Catalog::builtins(),
        engine: EngineConfig::default(),
    });
    let namespaces: Vec<Option<String>> = if ctx.config.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut senders = Vec::new();
    let mut controllers = Vec::new();
    for ns in namespaces {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        senders.push(tx);
        controllers.push(controller(ctrl.clone(), ns, rx, shutdown.clone()));
    }
    let follower = tokio::spawn(mirror::follow(ctx.clone(), index, senders, shutdown.wait()));
    let gauges = tokio::spawn(phase_gauges(ctrl.clone()));
    futures::future::join_all(controllers).await;
    follower.abort();
    gauges.abort();
    Ok(())
}

async fn controller(
    ctrl: Arc<Ctrl>,
    namespace: Option<String>,
    triggers: futures::channel::mpsc::UnboundedReceiver<ObjectRef<AgentRun>>,
    shutdown: Shutdown,
) {
    let client = ctrl.ctx.client.clone();
    let (runs, jobs, pools) = match &namespace {
        Some(ns) => (
            Api::<DeserializeGuard<AgentRun>>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<Job>>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<WorkerPool>>::namespaced(client, ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    // The cache holds every AgentRun: without managedFields and the last-applied annotation,
    // which the controller never reads and which are a large part of a finished run.
    let (store, writer) = reflector::store();
    let runs = watcher(runs, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(strip_for_cache)
        .reflect(writer)
        .applied_objects();
    // Planner Jobs only trigger their run: their metadata (owner reference) is enough.
    let controller = Controller::for_stream(runs, store.clone()).owns(
        jobs,
        watcher::Config::default().labels(&format!("{}=planner", build::LABEL_COMPONENT)),
    );
    if let Ok(mut stores) = ctrl.stores.lock() {
        stores.push(store.clone());
    }
    // A pool appearing (read as metadata only) starts the runs waiting for it (those whose Pending status says so: a
    // run without status is being started by its own events, and a second trigger on a
    // cached copy that lags behind would repeat its writes).
    let controller = controller.watches(pools, watcher::Config::default(), move |pool| {
        let ns = pool.namespace();
        let name = pool.name_any();
        store
            .state()
            .into_iter()
            .filter(|r| {
                r.0.as_ref().is_ok_and(|r| {
                    r.namespace() == ns
                        && r.spec.worker_pool == name
                        && r.status.as_ref().and_then(|s| s.phase) == Some(AgentRunPhase::Pending)
                })
            })
            .map(|r| ObjectRef::from_obj(&*r))
            .collect::<Vec<_>>()
    });
    let triggers = triggers.map(|o| {
        ObjectRef::<DeserializeGuard<AgentRun>>::new_with(&o.name, ())
            .within(o.namespace.as_deref().unwrap_or_default())
    });
    controller
        .reconcile_on(triggers)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctrl.ctx.config.concurrency),
        )
        .graceful_shutdown_on(shutdown.wait())
        .run(reconcile, error_policy, ctrl)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile trigger");
            }
        })
        .await;
}

/// Drops what the controller never reads from an AgentRun before it enters the cache.
pub fn strip_for_cache(run: &mut DeserializeGuard<AgentRun>) {
    let meta = run.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// kubectl's client-side-apply annotation: a copy of the whole object as last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// AgentRuns per phase (a run without status counts as Pending).
pub fn count_phases<'a>(
    runs: impl IntoIterator<Item = &'a AgentRun>,
) -> HashMap<&'static str, i64> {
    let mut counts: HashMap<&'static str, i64> = [
        AgentRunPhase::Pending,
        AgentRunPhase::Planning,
        AgentRunPhase::Running,
        AgentRunPhase::Succeeded,
        AgentRunPhase::Failed,
        AgentRunPhase::Cancelled,
    ]
    .into_iter()
    .map(|p| (phase_label(p), 0))
    .collect();
    for run in runs {
        let phase = run
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default();
        *counts.entry(phase_label(phase)).or_default() += 1;
    }
    counts
}

/// Refreshes `crane_operator_agentruns{phase}` from the controllers' caches every 5 s.
async fn phase_gauges(ctrl: Arc<Ctrl>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let runs: Vec<Arc<DeserializeGuard<AgentRun>>> = match ctrl.stores.lock() {
            Ok(stores) => stores.iter().flat_map(|s| s.state()).collect(),
            Err(_) => continue,
        };
        let counts = count_phases(runs.iter().filter_map(|g| g.0.as_ref().ok()));
        for (phase, n) in counts {
            ctrl.ctx
                .metrics
                .runs_by_phase
                .get_or_create(&crate::metrics::PhaseLabels { phase })
                .set(n);
        }
    }
}

fn error_policy(guard: Arc<DeserializeGuard<AgentRun>>, error: &Error, ctrl: Arc<Ctrl>) -> Action {
    let name = guard.name_any();
    let ns = guard.namespace().unwrap_or_default();
    if error.is_permanent() {
        warn!(run = %name, namespace = %ns, error = %error, "invalid AgentRun; waiting for a change");
        return Action::await_change();
    }
    let delay = ctrl.backoff.failed(&format!("{ns}/{name}"));
    warn!(run = %name, namespace = %ns, error = %error, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

#[tracing::instrument(skip_all, fields(run = %guard.name_any(), namespace = guard.namespace().unwrap_or_default()))]
async fn reconcile(
    guard: Arc<DeserializeGuard<AgentRun>>,
    ctrl: Arc<Ctrl>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &guard.0 {
        Ok(run) => {
            let run = Arc::new(run.clone());
            let api: Api<AgentRun> = Api::namespaced(
                ctrl.ctx.client.clone(),
                &run.namespace().unwrap_or_default(),
            );
            let c = ctrl.clone();
            finalizer(&api, FINALIZER, run, |event| async move {
                match event {
                    Finalizer::Apply(run) => apply(&run, &c).await,
                    Finalizer::Cleanup(run) => cleanup(&run, &c).await,
                }
            })
            .await
            .map_err(|e| Error::Finalizer(Box::new(e)))
        }
        Err(invalid) => Err(Error::InvalidObject(invalid.error.clone())),
    };
    let label = match &result {
        Ok(_) => {
            ctrl.backoff.succeeded(&format!(
                "{}/{}",
                guard.namespace().unwrap_or_default(),
                guard.name_any()
            ));
            "ok"
        }
        Err(e) => e.metric_label(),
    };
    ctrl.ctx
        .metrics
        .reconciled(Ctl::agentrun, label, started.elapsed());
    result
}

/// Removes the run's Redis keys (idempotent).
async fn cleanup(run: &AgentRun, ctrl: &Ctrl) -> Result<Action, Error> {
    if let Some(uid) = run.metadata.uid.as_deref() {
        let mut redis = ctrl.ctx.redis();
        crane_engine::delete_run(&mut redis, uid)
            .await
            .map_err(engine_err("deleting the run's redis keys"))?;
        delete_planner_result(&mut redis, uid)
            .await
            .map_err(engine_err("deleting the planner result"))?;
        ctrl.index.remove(uid);
        if let Ok(mut w) = ctrl.written.lock() {
            w.remove(uid);
        }
        info!("removed the run's redis keys");
    }
    Ok(Action::await_change())
}

/// One pass of the pipeline for a live AgentRun.
async fn apply(run: &AgentRun, ctrl: &Ctrl) -> Result<Action, Error> {
    let uid = build::run_id(run)?.to_owned();
    let ns = run.namespace().unwrap_or_default();
    ctrl.index.insert(&uid, ObjectRef::from_obj(run));
    let old = run.status.clone().unwrap_or_default();
    let phase = old.phase.unwrap_or_default();
    let now = now();

    if phase == AgentRunPhase::Failed
        && let Some(token) = recovery::retry_requested(run)
    {
        let (status, action) = recovery::retry(run, ctrl, &uid, &token, &now).await?;
        write_status(run, ctrl, &old, status).await?;
        return Ok(action);
    }
    if phase.is_terminal() {
        return finished(run, ctrl, &old).await;
    }
    if run.spec.cancel && matches!(phase, AgentRunPhase::Pending | AgentRunPhase::Planning) {
        let status = build::cancelled_early(run, &now);
        write_status(run, ctrl, &old, status).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let (status, action) = match phase {
        AgentRunPhase::Pending => pending(run, ctrl, &uid, &ns, &now).await?,
        AgentRunPhase::Planning => planning(run, ctrl, &uid, &ns, &now).await?,
        _ => running(run, ctrl, &uid, &now).await?,
    };
    let terminal = status.phase.is_some_and(AgentRunPhase::is_terminal);
    write_status(run, ctrl, &old, status).await?;
    // A terminal status is followed by the TTL check on the write's own watch event.
    Ok(if terminal {
        Action::await_change()
    } else {
        action
    })
}

/// Pending: wait for the pool; then plan (Job) or start (spec.plan).
async fn pending(
    run: &AgentRun,
    ctrl: &Ctrl,
    uid: &str,
    ns: &str,
    now: &Time,
) -> Result<(AgentRunStatus, Action), Error> {
    let pools: Api<WorkerPool> = Api::namespaced(ctrl.ctx.client.clone(), ns);
    // Read as metadata only: a pool that fails to deserialise still exists.
    let exists = pools
        .get_metadata_opt(&run.spec.worker_pool)
        .await
        .map_err(kube_err("reading the WorkerPool"))?
        .is_some();
    if !exists {
        return Ok((build::pool_missing(run, now), Action::requeue(POOL_RECHECK)));
    }
    match &run.spec.plan {
        Some(plan) => start(run, ctrl, uid, ns, plan.clone(), PlanSource::Spec, now).await,
        None => {
            let job = build::planner_job(run, &ctrl.ctx.config)?;
            let name = job.metadata.name.clone().unwrap_or_default();
            let jobs: Api<Job> = Api::namespaced(ctrl.ctx.client.clone(), ns);
            jobs.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&job),
            )
            .await
            .map_err(kube_err("applying the planner Job"))?;
            ctrl.ctx.metrics.api_write(Ctl::agentrun, "apply");
            info!(job = %name, "planner Job applied");
            Ok((
                build::planning(run, &name, now),
                Action::requeue(PLANNING_POLL),
            ))
        }
    }
}

/// Validates a plan and initialises the run in the engine.
async fn start(
    run: &AgentRun,
    ctrl: &Ctrl,
    uid: &str,
    ns: &str,
    plan: crane_core::plan::Plan,
    source: PlanSource,
    now: &Time,
) -> Result<(AgentRunStatus, Action), Error> {
    if let Err(e) = crane_core::validate::validate(&plan, &ctrl.catalog) {
        let message = build::invalid_plan_message(&e.to_string());
        return Ok((
            build::failed_early(run, REASON_INVALID_PLAN, &message, now),
            Action::await_change(),
        ));
    }
    let pool = match PoolName::parse(&format!("{ns}/{}", run.spec.worker_pool)) {
        Ok(p) => p,
        Err(e) => {
            let message = format!("spec.workerPool {:?}: {e}", run.spec.worker_pool);
            return Ok((
                build::failed_early(run, "InvalidWorkerPool", &message, now),
                Action::await_change(),
            ));
        }
    };
    let mut redis = ctrl.ctx.redis();
    let init = crane_engine::init_run(
        &mut redis,
        uid,
        ns,
        &pool,
        &plan,
        &build::run_options(run),
        &ctrl.engine,
    )
    .await;
    match init {
        Ok(outcome) => info!(
            ?outcome,
            steps = plan.steps.len(),
            "run initialised in the engine"
        ),
        // What the validator let through but the engine refuses is still the plan's fault.
        Err(EngineError::InvalidPlan(m)) => {
            let message = build::invalid_plan_message(&m);
            return Ok((
                build::failed_early(run, REASON_INVALID_PLAN, &message, now),
                Action::await_change(),
            ));
        }
        Err(e) => return Err(engine_err("initialising the run")(e)),
    }
    let status_plan = (source != PlanSource::Spec).then_some(plan);
    let started = build::started(run, status_plan, source, now);
    // A short run may already be over (or this is a repeat on a stale cached object): then
    // the terminal status is the first status write, not Running followed by it.
    let report = match crane_engine::run_report(&mut redis, uid).await {
        Ok(r) => r,
        Err(e) => return Err(engine_err("reading the run report")(e)),
    };
    if report.phase.is_terminal() {
        let mut ran = run.clone();
        ran.status = Some(started);
        let status = build::from_report(&ran, &report, false, now)?;
        return Ok((status, Action::await_change()));
    }
    Ok((started, Action::requeue(RESYNC)))
}

/// Planning: read the planner's result back, or notice the Job failed without one.
async fn planning(
    run: &AgentRun,
    ctrl: &Ctrl,
    uid: &str,
    ns: &str,
    now: &Time,
) -> Result<(AgentRunStatus, Action), Error> {
    let mut redis = ctrl.ctx.redis();
    let result = load_planner_result(&mut redis, uid).await;
    match result {
        Ok(Some(PlannerResult::Planned { plan, source, .. })) => {
            return start(run, ctrl, uid, ns, plan, source, now).await;
        }
        Ok(Some(PlannerResult::Failed { error })) => {
            let message = format!("planner failed: {error}");
            return Ok((
                build::failed_early(run, REASON_PLANNER_FAILED, &message, now),
                Action::await_change(),
            ));
        }
        Err(EngineError::Corrupt { detail, .. }) => {
            let message = format!("the planner's result is unreadable: {detail}");
            return Ok((
                build::failed_early(run, REASON_PLANNER_FAILED, &message, now),
                Action::await_change(),
            ));
        }
        Err(e) => return Err(engine_err("reading the planner result")(e)),
        Ok(None) => {}
    }
    let name = build::planner_job_name(&run.name_any());
    let jobs: Api<Job> = Api::namespaced(ctrl.ctx.client.clone(), ns);
    let job = jobs
        .get_opt(&name)
        .await
        .map_err(kube_err("reading the planner Job"))?;
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
        return Ok((
            build::failed_early(run, REASON_PLANNER_FAILED, &message, now),
            Action::await_change(),
        ));
    }
    if deadline_passed(run, &run.status.clone().unwrap_or_default()) {
        let message = format!(
            "the run exceeded activeDeadlineSeconds ({} s) while planning",
            run.spec.active_deadline_seconds
        );
        return Ok((
            build::failed_early(run, build::REASON_DEADLINE, &message, now),
            Action::await_change(),
        ));
    }
    let status = run.status.clone().unwrap_or_default();
    let wait = until_deadline(run, &status).min(PLANNING_POLL);
    Ok((status, Action::requeue(wait)))
}

/// Time left before activeDeadlineSeconds (from startedAt), so the run is re-read then.
fn until_deadline(run: &AgentRun, status: &AgentRunStatus) -> Duration {
    let Some(started) = &status.started_at else {
        return RESYNC;
    };
    let deadline = started.0
        + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(run.spec.active_deadline_seconds));
    let left = k8s_openapi::jiff::Timestamp::now().duration_until(deadline);
    Duration::try_from(left).unwrap_or(Duration::ZERO) + Duration::from_millis(200)
}

fn deadline_passed(run: &AgentRun, status: &AgentRunStatus) -> bool {
    status.started_at.as_ref().is_some_and(|t| {
        let deadline = t.0
            + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
                run.spec.active_deadline_seconds,
            ));
        k8s_openapi::jiff::Timestamp::now() >= deadline
    })
}

/// Running: cancel or time out if asked, then mirror the engine's report.
async fn running(
    run: &AgentRun,
    ctrl: &Ctrl,
    uid: &str,
    now: &Time,
) -> Result<(AgentRunStatus, Action), Error> {
    let mut redis = ctrl.ctx.redis();
    let old = run.status.clone().unwrap_or_default();
    let deadline = deadline_passed(run, &old);
    if run.spec.cancel || deadline {
        match crane_engine::cancel_run(&mut redis, uid).await {
            Ok(_) | Err(EngineError::RunNotFound(_)) => {}
            Err(e) => return Err(engine_err("cancelling the run")(e)),
        }
    }
    let report: RunReport = match crane_engine::run_report(&mut redis, uid).await {
        Ok(r) => r,
        // Redis lost the run (restart without persistence): rebuild it from the status.
        Err(EngineError::RunNotFound(_)) => return recovery::rebuild(run, ctrl, uid, now).await,
        Err(e) => return Err(engine_err("reading the run report")(e)),
    };
    let status = build::from_report(run, &report, deadline, now)?;
    Ok((
        status,
        Action::requeue(until_deadline(run, &old).min(RESYNC)),
    ))
}

/// Terminal: delete after ttlSecondsAfterFinished.
async fn finished(run: &AgentRun, ctrl: &Ctrl, status: &AgentRunStatus) -> Result<Action, Error> {
    let Some(finished) = &status.finished_at else {
        return Ok(Action::await_change());
    };
    let expires = finished.0
        + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
            run.spec.ttl_seconds_after_finished,
        ));
    let left = k8s_openapi::jiff::Timestamp::now().duration_until(expires);
    if left.is_positive() {
        let left = Duration::try_from(left).unwrap_or(Duration::from_secs(1));
        return Ok(Action::requeue(left + Duration::from_millis(100)));
    }
    if run.metadata.deletion_timestamp.is_none() {
        let api: Api<AgentRun> = Api::namespaced(
            ctrl.ctx.client.clone(),
            &run.namespace().unwrap_or_default(),
        );
        info!("ttlSecondsAfterFinished passed; deleting the AgentRun");
        match api.delete(&run.name_any(), &DeleteParams::default()).await {
            Ok(_) => ctrl.ctx.metrics.api_write(Ctl::agentrun, "delete"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(kube_err("deleting the expired AgentRun")(e)),
        }
    }
    Ok(Action::await_change())
}

/// Server-side-applies the status when it differs from what the object holds; publishes an
/// Event on a phase change.
async fn write_status(
    run: &AgentRun,
    ctrl: &Ctrl,
    old: &AgentRunStatus,
    status: AgentRunStatus,
) -> Result<(), Error> {
    if &status == old {
        return Ok(());
    }
    let uid = run.metadata.uid.clone().unwrap_or_default();
    let base = run.metadata.resource_version.clone().unwrap_or_default();
    let hash = status_hash(&status);
    let already = ctrl
        .written
        .lock()
        .is_ok_and(|w| w.get(&uid).is_some_and(|(rv, h)| *rv == base && *h == hash));
    if already {
        return Ok(());
    }
    let ns = run.namespace().unwrap_or_default();
    let api: Api<AgentRun> = Api::namespaced(ctrl.ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": AgentRun::api_version(&()),
        "kind": AgentRun::kind(&()),
        "status": status,
    });
    api.patch_status(
        &run.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_err("writing the status"))?;
    ctrl.ctx.metrics.api_write(Ctl::agentrun, "apply_status");
    if let Ok(mut w) = ctrl.written.lock() {
        w.insert(uid, (base, hash));
    }
    if status.phase != old.phase {
        let phase = status.phase.unwrap_or_default();
        let label = phase_label(phase);
        // A run whose steps ran before its Running status was written still went through
        // Running: its Event is published all the same.
        if phase.is_terminal()
            && !status.steps.is_empty()
            && old
                .phase
                .is_none_or(|p| matches!(p, AgentRunPhase::Pending | AgentRunPhase::Planning))
        {
            publish(run, ctrl, AgentRunPhase::Running, &status).await;
        }
        if phase.is_terminal() {
            ctrl.ctx
                .metrics
                .runs_finished
                .get_or_create(&crate::metrics::PhaseLabels { phase: label })
                .inc();
        }
        info!(phase = label, "phase changed");
        publish(run, ctrl, phase, &status).await;
    }
    Ok(())
}

/// A hash of a status as it is written (serialised), to recognise a repeated write.
fn status_hash(status: &AgentRunStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(status).unwrap_or_default().hash(&mut h);
    h.finish()
}

pub fn phase_label(phase: AgentRunPhase) -> &'static str {
    match phase {
        AgentRunPhase::Pending => "Pending",
        AgentRunPhase::Planning => "Planning",
        AgentRunPhase::Running => "Running",
        AgentRunPhase::Succeeded => "Succeeded",
        AgentRunPhase::Failed => "Failed",
        AgentRunPhase::Cancelled => "Cancelled",
    }
}

/// An Event for a phase change; a failure to publish is logged, never fatal.
async fn publish(run: &AgentRun, ctrl: &Ctrl, phase: AgentRunPhase, status: &AgentRunStatus) {
    let (type_, reason, note) = match phase {
        AgentRunPhase::Failed => (
            EventType::Warning,
            build::failed_reason(status).unwrap_or("Failed").to_owned(),
            status.error.clone(),
        ),
        AgentRunPhase::Succeeded => (
            EventType::Normal,
            "Succeeded".to_owned(),
            Some(format!(
                "{} steps succeeded",
                status.progress.as_deref().unwrap_or("?")
            )),
        ),
        AgentRunPhase::Pending | AgentRunPhase::Planning => (
            EventType::Normal,
            phase_label(phase).to_owned(),
            build::condition(status, crane_api::CONDITION_PLANNED).map(|c| c.message.clone()),
        ),
        p => (
            EventType::Normal,
            phase_label(p).to_owned(),
            status.progress.clone().map(|p| format!("progress {p}")),
        ),
    };
    let event = KubeEvent {
        type_,
        reason,
        note: note.map(|n| crane_core::text::truncate(&n, 1000)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    match ctrl
        .ctx
        .publish_unique(&event, &run.object_ref(&()))
        .instrument(tracing::Span::current())
        .await
    {
        Ok(()) => ctrl.ctx.metrics.api_write(Ctl::agentrun, "event"),
        Err(e) => warn!(error = %e, "cannot publish the Event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_object_caps_and_resets() {
        let b = Backoff::default();
        let delays: Vec<u64> = (0..12).map(|_| b.failed("ns/a").as_secs()).collect();
        assert_eq!(delays[..4], [1, 2, 4, 8]);
        assert_eq!(*delays.last().unwrap_or(&0), 300);
        // Another object has its own counter.
        assert_eq!(b.failed("ns/b").as_secs(), 1);
        b.succeeded("ns/a");
        assert_eq!(b.failed("ns/a").as_secs(), 1);
    }

    #[test]
    fn invalid_objects_wait_for_a_change_and_transient_errors_do_not() {
        let invalid = Error::InvalidObject("spec.plan: invalid type".into());
        assert!(invalid.is_permanent());
        assert_eq!(invalid.metric_label(), "invalid_object");
        let redis = Error::Engine {
            what: "reading the run report",
            source: EngineError::RunNotFound("x".into()),
        };
        assert!(!redis.is_permanent());
        assert_eq!(redis.metric_label(), "engine");
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(
            Error::Build(BuildError::MissingMetadata("metadata.uid")),
        )));
        assert!(wrapped.is_permanent());
        assert_eq!(wrapped.metric_label(), "build");
    }

    #[test]
    fn the_cache_copy_drops_managed_fields_and_last_applied_only() {
        let mut guard: DeserializeGuard<AgentRun> = serde_json::from_value(serde_json::json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {
                "name": "r",
                "annotations": {LAST_APPLIED: "{}", "crane.dev/retry": "1"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {"prompt": "x"}
        }))
        .expect("fixture");
        strip_for_cache(&mut guard);
        assert!(guard.meta().managed_fields.is_none());
        assert_eq!(
            guard.annotations().keys().collect::<Vec<_>>(),
            ["crane.dev/retry"]
        );
    }

    #[test]
    fn phases_are_counted_with_zeroes_for_absent_phases() {
        let run = |phase: Option<&str>| -> AgentRun {
            let mut v = serde_json::json!({
                "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
                "metadata": {"name": "r"}, "spec": {"prompt": "x"}
            });
            if let Some(p) = phase {
                v["status"] = serde_json::json!({"phase": p});
            }
            serde_json::from_value(v).expect("fixture")
        };
        let runs = [
            run(None),
            run(Some("Running")),
            run(Some("Running")),
            run(Some("Failed")),
        ];
        let c = count_phases(runs.iter());
        assert_eq!(
            (c["Pending"], c["Running"], c["Failed"], c["Succeeded"]),
            (1, 2, 1, 0)
        );
        assert_eq!(c.len(), 6);
    }
}
