//! The WorkerPool controller: keeps clamp(ceil((queued + running) / targetQueueDepth),
//! minWorkers, maxWorkers) worker Jobs per pool, never deleting one (workers exit on idle,
//! which is how a pool scales in), and mirrors queue depth, workers and circuit breakers into
//! the pool's status.
//!
//! Reconcile is read → validate → build → apply → status: read the pool's worker Jobs (a
//! fresh list, so Jobs created a moment ago count and nothing is over-created) and its queue
//! depth (one Redis script call), validate what the schema cannot, build the missing Jobs
//! and the status with the pure functions of [`build`], apply them with server-side apply,
//! then requeue after [`POLL_INTERVAL`].
//!
//! Choices the design leaves open:
//! - Triggers: the pool, its worker Jobs (`.owns`), and the AgentRuns naming it (an AgentRun
//!   change is when its pool's queue changes), plus a poll every [`POLL_INTERVAL`], busy or
//!   idle, so steps queued without an AgentRun (`crane-executor submit`) start a worker
//!   within about a second: queue depth is one cheap Redis call.
//! - Delayed steps (retry backoff, open breaker) are not load, but only workers promote them,
//!   so a pool with any keeps at least one worker (within maxWorkers).
//! - Finished worker Jobs are removed by `ttlSecondsAfterFinished`
//!   ([`build::FINISHED_JOB_TTL_SECONDS`]); a failed worker is not retried in place
//!   (`backoffLimit: 0`): the next reconcile replaces it if the load still asks for it.
//! - A pool named with a dot (a valid object name) cannot be keyed by the engine and is
//!   reported `Ready=False, reason InvalidSpec`; so is a template setting the env vars through
//!   which workers reach Redis ([`build::RESERVED_ENV`]).
//! - API verbs used: workerpools get/list/watch, workerpools/status patch, jobs list/watch/
//!   create/patch (server-side apply), agentruns list/watch, events (events.k8s.io)
//!   create/patch; workerpools/finalizers update for `blockOwnerDeletion` on the Jobs.

pub mod build;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crane_engine::queue::BreakerPhase;
use crane_engine::{BreakerConfig, EngineError, PoolName, QueueDepth};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use serde_json::json;

use self::build::{Observation, SpecError, WorkerSettings};
use crate::catalog::Catalogs;
use crate::context::{Context, FIELD_MANAGER};
use crate::controller::{Backoff, Shutdown, apply_status, set_condition};
use crate::metrics::{Controller as MetricsController, PoolObservation};
use crane_api::{AgentRun, WorkerPool};

/// How often every pool's queue depth is read: the autoscaler's reaction time to steps that
/// arrive without an AgentRun event. One cheap Redis script call per pool.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// First and largest per-object backoff after a transient error.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(60));

/// Everything that can fail in one reconcile; one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stored object could not be read as a WorkerPool (shown in its status).
    #[error("the WorkerPool {namespace}/{name} is malformed: {message}")]
    Malformed {
        namespace: String,
        name: String,
        message: String,
    },
    /// The spec cannot be served (shown in its status).
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    #[error("listing the worker Jobs: {0}")]
    ListJobs(#[source] kube::Error),
    #[error("reading the queue of pool {pool}: {source}")]
    Redis {
        pool: String,
        #[source]
        source: EngineError,
    },
    /// The apiserver refused the Job as invalid: retrying the same spec cannot help.
    #[error("the apiserver rejected worker Job {job}: {source}")]
    JobRejected {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating worker Job {job}: {source}")]
    CreateJob {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
    #[error("setting up the namespace's Redis login: {0}")]
    Tenancy(#[source] crate::tenancy::Error),
}

impl Error {
    /// Stable, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::ListJobs(_) => "list_jobs",
            Self::Redis { .. } => "redis",
            Self::JobRejected { .. } => "job_rejected",
            Self::CreateJob { .. } => "create_job",
            Self::Status(_) => "status",
            Self::Tenancy(_) => "tenancy",
        }
    }

    /// Errors that only a change to the object can cure: wait for it instead of retrying.
    fn awaits_change(&self) -> bool {
        matches!(
            self,
            Self::Malformed { .. } | Self::InvalidSpec(_) | Self::JobRejected { .. }
        )
    }
}

/// The controller's state: the shared context, per-object backoff, and each pool's last
/// scale-up (by uid) so a stale cached pool cannot erase it from status.
struct Reconciler {
    ctx: Arc<Context>,
    /// The namespaces' tool objects: their Secrets are mounted into worker pods.
    catalogs: Arc<Catalogs>,
    settings: WorkerSettings,
    backoff: Backoff,
    scaled_at: Mutex<HashMap<String, Time>>,
}

impl Reconciler {
    fn last_scale(&self, pool: &WorkerPool) -> Option<Time> {
        let uid = pool.meta().uid.as_deref()?;
        let map = self.scaled_at.lock().unwrap_or_else(|e| e.into_inner());
        map.get(uid).cloned()
    }

    fn set_last_scale(&self, pool: &WorkerPool, at: Option<Time>) {
        let Some(uid) = pool.meta().uid.clone() else {
            return;
        };
        let mut map = self.scaled_at.lock().unwrap_or_else(|e| e.into_inner());
        match at {
            Some(t) => map.insert(uid, t),
            None => map.remove(&uid),
        };
    }
}

/// Runs the controller (one watch per configured namespace, or cluster-wide) until
/// `shutdown` resolves and in-flight reconciles have finished.
pub async fn run(
    ctx: Arc<Context>,
    catalogs: Arc<Catalogs>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let reconciler = Arc::new(Reconciler {
        catalogs,
        settings: WorkerSettings::from_config(&ctx.config),
        ctx: ctx.clone(),
        backoff: Backoff::new(BACKOFF.0, BACKOFF.1),
        scaled_at: Mutex::new(HashMap::new()),
    });
    let scopes: Vec<Option<String>> = if ctx.config.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.config.namespaces.iter().cloned().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|ns| {
        let (pools, jobs, runs) = match &ns {
            Some(ns) => (
                Api::<DeserializeGuard<WorkerPool>>::namespaced(ctx.client.clone(), ns),
                Api::<Job>::namespaced(ctx.client.clone(), ns),
                Api::<DeserializeGuard<AgentRun>>::namespaced(ctx.client.clone(), ns),
            ),
            None => (
                Api::<DeserializeGuard<WorkerPool>>::all(ctx.client.clone()),
                Api::<Job>::all(ctx.client.clone()),
                Api::<DeserializeGuard<AgentRun>>::all(ctx.client.clone()),
            ),
        };
        let config =
            kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency.max(1));
        Controller::new(pools, watcher::Config::default().any_semantic())
            .owns(
                jobs,
                watcher::Config::default().labels(&format!(
                    "{}={}",
                    build::LABEL_APP,
                    build::APP_WORKER
                )),
            )
            // An AgentRun changing (created, started, progressing) is the moment its pool's
            // queue changes: reconcile the pool at once instead of at the next idle poll.
            .watches(runs, watcher::Config::default().any_semantic(), pool_of_run)
            .with_config(config)
            .graceful_shutdown_on(shutdown.wait())
            .run(reconcile, error_policy, reconciler.clone())
            .for_each(|res| async move {
                match res {
                    Ok((obj, action)) => tracing::debug!(object = %obj, ?action, "reconciled"),
                    // Already logged by error_policy, with the retry decision.
                    Err(kube::runtime::controller::Error::ReconcilerFailed(err, obj)) => {
                        tracing::debug!(object = %obj, error = %err, "reconcile failed");
                    }
                    Err(err) => tracing::warn!(error = %err, "workerpool controller"),
                }
            })
    });
    tracing::info!("workerpool controller started");
    futures::future::join_all(controllers).await;
    tracing::info!("workerpool controller stopped");
    Ok(())
}

/// The WorkerPool an AgentRun runs on (same namespace, `spec.workerPool`).
fn pool_of_run(run: DeserializeGuard<AgentRun>) -> Option<ObjectRef<DeserializeGuard<WorkerPool>>> {
    let run = run.0.ok()?;
    let ns = run.namespace()?;
    Some(ObjectRef::new(&run.spec.worker_pool).within(&ns))
}

#[tracing::instrument(skip_all, fields(namespace, pool))]
async fn reconcile(
    guard: Arc<DeserializeGuard<WorkerPool>>,
    reconciler: Arc<Reconciler>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let (namespace, name) = (guard.namespace().unwrap_or_default(), guard.name_any());
    tracing::Span::current()
        .record("namespace", namespace.as_str())
        .record("pool", name.as_str());
    let result = reconcile_pool(&guard, &reconciler).await;
    reconciler.ctx.metrics.reconciled(
        MetricsController::workerpool,
        result.as_ref().map_or_else(Error::metric_label, |_| "ok"),
        started.elapsed(),
    );
    if result.is_ok() {
        reconciler.backoff.succeeded(&format!("{namespace}/{name}"));
    }
    result
}

fn error_policy(
    guard: Arc<DeserializeGuard<WorkerPool>>,
    err: &Error,
    reconciler: Arc<Reconciler>,
) -> Action {
    if err.awaits_change() {
        tracing::warn!(error = %err, "waiting for the WorkerPool to change");
        return Action::await_change();
    }
    let key = format!(
        "{}/{}",
        guard.namespace().unwrap_or_default(),
        guard.name_any()
    );
    let delay = reconciler.backoff.failed(&key);
    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_pool(
    guard: &DeserializeGuard<WorkerPool>,
    reconciler: &Reconciler,
) -> Result<Action, Error> {
    let ctx = &reconciler.ctx;
    // read
    let pool = match &guard.0 {
        Ok(pool) => pool,
        Err(invalid) => {
            let namespace = invalid.metadata.namespace.clone().unwrap_or_default();
            let name = invalid.metadata.name.clone().unwrap_or_default();
            let message = format!(
                "the object does not match the WorkerPool schema: {}",
                invalid.error
            );
            patch_malformed(ctx, &namespace, &name, &message).await?;
            return Err(Error::Malformed {
                namespace,
                name,
                message,
            });
        }
    };
    if pool.meta().deletion_timestamp.is_some() {
        reconciler.set_last_scale(pool, None);
        ctx.metrics
            .forget_pool(&pool.namespace().unwrap_or_default(), &pool.name_any());
        // Worker Jobs go with the pool through their owner references.
        return Ok(Action::await_change());
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut last_scale = reconciler.last_scale(pool);

    // validate
    let engine_pool = match build::validate(pool) {
        Ok(p) => p,
        Err(err) => {
            let obs = Observation::Invalid {
                message: err.to_string(),
            };
            write_status(ctx, pool, &obs, &now, last_scale.as_ref()).await?;
            return Err(err.into());
        }
    };
    let ns = engine_pool.namespace().to_owned();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs = jobs_api
        .list(&ListParams::default().labels(&build::worker_selector(&pool.name_any())))
        .await
        .map_err(Error::ListJobs)?;
    let login = ctx.tenancy.ensure(&ns).await.map_err(Error::Tenancy)?;
    // Workers that do not mount the namespace's current tool Secrets, or log in with a
    // rotated-out Redis password, are replaced: deleted (they drain on SIGTERM, their steps
    // come back through the lease) and not counted.
    let mounts = build::Mounts {
        secrets: reconciler.catalogs.secrets_for(&ns),
        login,
    };
    let mounts_hash = mounts.hash();
    let (active_jobs, outdated): (Vec<Job>, Vec<Job>) = jobs
        .items
        .into_iter()
        .filter(|j| build::is_worker_of(j, pool) && build::is_active(j))
        .partition(|j| build::mounts_current_secrets(j, &mounts_hash));
    for job in &outdated {
        retire_worker(ctx, &jobs_api, job).await;
    }
    let active = u32::try_from(active_jobs.len()).unwrap_or(u32::MAX);
    // Only when workers exist and none is ready are their pods looked at: a healthy pool
    // costs no pod list.
    let not_starting = if !active_jobs.is_empty() && !build::any_worker_ready(&active_jobs) {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        match pods
            .list(&ListParams::default().labels(&build::worker_selector(&pool.name_any())))
            .await
        {
            Ok(list) => build::stuck_reason(&list.items),
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the worker pods");
                None
            }
        }
    } else {
        None
    };

    let mut redis = ctx.redis();
    let observed = async {
        let depth = crane_engine::queue_depth(&mut redis, &engine_pool).await?;
        let breakers =
            crane_engine::breaker_states(&mut redis, &engine_pool, &BreakerConfig::default())
                .await?;
        Ok::<_, EngineError>((depth, breakers))
    }
    .await;
    let (depth, breakers) = match observed {
        Ok(v) => v,
        Err(source) => {
            let obs = Observation::RedisUnavailable {
                active,
                message: source.to_string(),
            };
            write_status(ctx, pool, &obs, &now, last_scale.as_ref()).await?;
            return Err(Error::Redis {
                pool: engine_pool.to_string(),
                source,
            });
        }
    };

    // build
    let spec = &pool.spec;
    let desired = build::desired_workers(
        &depth,
        spec.min_workers,
        spec.max_workers,
        spec.target_queue_depth,
    );
    let missing = desired.saturating_sub(active);

    // apply
    let mut created = 0;
    for _ in 0..missing {
        match create_worker(
            ctx,
            &jobs_api,
            pool,
            &engine_pool,
            &reconciler.settings,
            &mounts,
        )
        .await
        {
            Ok(()) => {
                created += 1;
                if created == 1 {
                    reconciler.set_last_scale(pool, Some(now.clone()));
                    last_scale = Some(now.clone());
                }
            }
            Err(err) => {
                let obs = Observation::JobCreateFailed {
                    depth,
                    active: active.saturating_add(created),
                    desired,
                    message: err.to_string(),
                };
                write_status(ctx, pool, &obs, &now, last_scale.as_ref()).await?;
                return Err(err);
            }
        }
    }
    if created > 0 {
        tracing::info!(
            created,
            active,
            desired,
            queued = depth.queued,
            running = depth.running,
            "scaled up"
        );
        publish_scaled(ctx, pool, created, active, desired, &depth).await;
    }

    let count = |phase| breakers.iter().filter(|b| b.phase == phase).count();
    ctx.metrics.observe_pool(
        &ns,
        &pool.name_any(),
        &PoolObservation {
            queued: depth.queued,
            running: depth.running,
            delayed: depth.delayed,
            active: active.saturating_add(created),
            desired,
            closed: count(BreakerPhase::Closed),
            half_open: count(BreakerPhase::HalfOpen),
            open: count(BreakerPhase::Open),
        },
    );

    // status
    let obs = Observation::Scaled {
        depth,
        breakers: build::breakers(&breakers),
        active: active.saturating_add(created),
        desired,
        created,
        not_starting,
    };
    write_status(ctx, pool, &obs, &now, last_scale.as_ref()).await?;

    Ok(Action::requeue(POLL_INTERVAL))
}

async fn create_worker(
    ctx: &Context,
    api: &Api<Job>,
    pool: &WorkerPool,
    engine_pool: &PoolName,
    settings: &WorkerSettings,
    mounts: &build::Mounts,
) -> Result<(), Error> {
    let job = build::worker_job(pool, engine_pool, settings, mounts, &random_suffix());
    let name = job.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let res = api.patch(&name, &params, &Patch::Apply(&job)).await;
    ctx.metrics
        .api_write(MetricsController::workerpool, "apply");
    match res {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if matches!(status.code, 400 | 422) => {
            Err(Error::JobRejected {
                job: name,
                source: kube::Error::Api(status),
            })
        }
        Err(source) => Err(Error::CreateJob { job: name, source }),
    }
}

/// Deletes a worker Job that mounts an outdated set of Secrets; best effort (the next
/// reconcile tries again).
async fn retire_worker(ctx: &Context, api: &Api<Job>, job: &Job) {
    let params = kube::api::DeleteParams::background();
    match api.delete(&job.name_any(), &params).await {
        Ok(_) => {
            ctx.metrics
                .api_write(MetricsController::workerpool, "delete");
            tracing::info!(job = %job.name_any(), "replacing a worker: the namespace's tool Secrets changed");
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            tracing::warn!(job = %job.name_any(), error = %e, "cannot replace an outdated worker")
        }
    }
}

/// Five characters of [a-z0-9]: 36^5 ≈ 60 million names per pool, so two live workers
/// sharing one is negligible (and would only make one apply a no-op).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Writes the status `obs` leads to, with server-side apply, when it differs from what the
/// object holds.
async fn write_status(
    ctx: &Context,
    pool: &WorkerPool,
    obs: &Observation,
    now: &Time,
    last_scale: Option<&Time>,
) -> Result<(), Error> {
    let status = build::status(pool, obs, now, last_scale);
    if pool.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let ns = pool.namespace().unwrap_or_default();
    apply_pool_status(ctx, &ns, &pool.name_any(), &status).await
}

/// Marks a pool that cannot be deserialized as not Ready, naming the problem.
async fn patch_malformed(
    ctx: &Context,
    namespace: &str,
    name: &str,
    message: &str,
) -> Result<(), Error> {
    if namespace.is_empty() || name.is_empty() {
        return Ok(());
    }
    let mut conditions = Vec::new();
    set_condition(
        &mut conditions,
        crane_api::CONDITION_READY,
        false,
        build::reason::INVALID_SPEC,
        message,
        None,
        &Time(k8s_openapi::jiff::Timestamp::now()),
    );
    apply_pool_status(ctx, namespace, name, &json!({ "conditions": conditions })).await
}

async fn apply_pool_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), Error> {
    let api: Api<WorkerPool> = Api::namespaced(ctx.client.clone(), namespace);
    let res = apply_status(&api, name, status).await;
    ctx.metrics
        .api_write(MetricsController::workerpool, "apply_status");
    res.map_err(Error::Status)
}

/// A `ScaledUp` Event on the pool; best effort (an Event lost is not worth a retry).
async fn publish_scaled(
    ctx: &Context,
    pool: &WorkerPool,
    created: u32,
    active: u32,
    desired: u32,
    depth: &QueueDepth,
) {
    let event = Event {
        type_: EventType::Normal,
        reason: "ScaledUp".to_owned(),
        note: Some(format!(
            "created {created} worker Job(s): {active} were active, {desired} desired for {} queued and {} running step(s)",
            depth.queued, depth.running
        )),
        action: "CreateWorkers".to_owned(),
        secondary: None,
    };
    let res = ctx.recorder.publish(&event, &pool.object_ref(&())).await;
    ctx.metrics
        .api_write(MetricsController::workerpool, "event");
    if let Err(err) = res {
        tracing::warn!(error = %err, "could not publish the ScaledUp event");
    }
}
