//! The AgentRun controller, wired: watches (AgentRuns, their planner Jobs, WorkerPools) and
//! the engine's progress notifications ([`mirror`]) trigger [`reconcile`], which runs one
//! pass of [`phases::advance`] (what the phase asks for next, using the pure builders of
//! [`build`] and [`recovery`] for lost or retried runs) and hands the resulting status to
//! [`status::StatusWriter`] (one server-side-apply patch when it changed, and an Event on a
//! phase change). The finalizer `crane.dev/cleanup` writes the run to the archive (when one
//! is configured, [`crate::archive`]) and then removes the run's Redis keys.
//!
//! Following one AgentRun: `reconcile` → `phases::advance` → (`build`, `cluster`,
//! `recovery`) → `status::StatusWriter::write`. Following one step's progress:
//! the worker's completion → `crane:events` → `mirror::follow` → `reconcile` → … .
//!
//! Choices where the design contract is silent:
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
pub mod cluster;
pub mod error;
pub mod gates;
pub mod mirror;
pub mod phases;
pub mod recovery;
pub mod status;
pub mod trace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crane_engine::{EngineConfig, RunKeys};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{Instrument as _, info, warn};

use crate::catalog::Catalogs;
use crate::context::Context;
use crate::controller::{Backoff, Shutdown};
use crate::metrics::Controller as Ctl;
use cluster::KubeCluster;
use crane_api::{AgentRun, AgentRunPhase, Approval, WorkerPool};
pub use error::Error;
use error::engine_err;
use mirror::RunIndex;
use phases::Env;
use status::StatusWriter;
pub use status::phase_label;

/// Finalizer that removes a run's Redis keys before the object goes.
pub const FINALIZER: &str = "crane.dev/cleanup";
/// How much of step outputs the operator reads: what status shows and no more, so its memory
/// does not grow with what tools return.
pub const OUTPUT_PREVIEW: crane_engine::api::Outputs = crane_engine::api::Outputs::Preview {
    step_bytes: crane_api::MAX_STEP_OUTPUT_BYTES,
    result_bytes: crane_api::MAX_RESULT_BYTES,
};

/// The AgentRun controller's state, shared by every reconcile.
pub struct Reconciler {
    pub ctx: Arc<Context>,
    pub index: Arc<RunIndex>,
    backoff: Backoff,
    status: StatusWriter,
    cluster: KubeCluster,
    /// The controllers' caches, for the runs-by-phase gauge.
    stores: Mutex<Vec<Store<DeserializeGuard<AgentRun>>>>,
    catalogs: Arc<Catalogs>,
    engine: EngineConfig,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Runs the AgentRun controller(s) — one per watched namespace, or one for all — and the
/// progress follower, until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    catalogs: Arc<Catalogs>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let index = Arc::new(RunIndex::default());
    let reconciler = Arc::new(Reconciler {
        ctx: ctx.clone(),
        index: index.clone(),
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        status: StatusWriter::new(ctx.clone()),
        cluster: KubeCluster {
            client: ctx.client.clone(),
            metrics: ctx.metrics.clone(),
            tenancy: ctx.tenancy.clone(),
            ctx: ctx.clone(),
        },
        stores: Mutex::new(Vec::new()),
        catalogs,
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
        controllers.push(controller(reconciler.clone(), ns, rx, shutdown.clone()));
    }
    let follower = tokio::spawn(mirror::follow(ctx.clone(), index, senders, shutdown.wait()));
    let gauges = tokio::spawn(phase_gauges(reconciler.clone()));
    futures::future::join_all(controllers).await;
    follower.abort();
    gauges.abort();
    Ok(())
}

async fn controller(
    reconciler: Arc<Reconciler>,
    namespace: Option<String>,
    triggers: futures::channel::mpsc::UnboundedReceiver<ObjectRef<AgentRun>>,
    shutdown: Shutdown,
) {
    let client = reconciler.ctx.client.clone();
    let (runs, jobs, approvals, pools) = match &namespace {
        Some(ns) => (
            Api::<DeserializeGuard<AgentRun>>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<Job>>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<Approval>>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<WorkerPool>>::namespaced(client, ns),
        ),
        None => (
            Api::all(client.clone()),
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
    // A decision written into an Approval is applied at once (its metadata changes with it).
    let controller = controller.owns(approvals, watcher::Config::default());
    if let Ok(mut stores) = reconciler.stores.lock() {
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
            kube::runtime::controller::Config::default()
                .concurrency(reconciler.ctx.config.concurrency),
        )
        .graceful_shutdown_on(shutdown.wait())
        .run(reconcile, error_policy, reconciler)
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
        AgentRunPhase::AwaitingApproval,
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
async fn phase_gauges(reconciler: Arc<Reconciler>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let runs: Vec<Arc<DeserializeGuard<AgentRun>>> = match reconciler.stores.lock() {
            Ok(stores) => stores.iter().flat_map(|s| s.state()).collect(),
            Err(_) => continue,
        };
        let counts = count_phases(runs.iter().filter_map(|g| g.0.as_ref().ok()));
        for (phase, n) in counts {
            reconciler
                .ctx
                .metrics
                .runs_by_phase
                .get_or_create(&crate::metrics::PhaseLabels { phase })
                .set(n);
        }
    }
}

fn error_policy(
    guard: Arc<DeserializeGuard<AgentRun>>,
    error: &Error,
    reconciler: Arc<Reconciler>,
) -> Action {
    let name = guard.name_any();
    let ns = guard.namespace().unwrap_or_default();
    if error.is_permanent() {
        warn!(run = %name, namespace = %ns, error = %error, "invalid AgentRun; waiting for a change");
        return Action::await_change();
    }
    let delay = reconciler.backoff.failed(&format!("{ns}/{name}"));
    warn!(run = %name, namespace = %ns, error = %error, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile(
    guard: Arc<DeserializeGuard<AgentRun>>,
    reconciler: Arc<Reconciler>,
) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        run = %guard.name_any(),
        namespace = guard.namespace().unwrap_or_default(),
    );
    // A run's reconciles join its trace, under its root span: the trace shows what the
    // operator did for the run (planner Job, DAG initialised, status written) between steps.
    if reconciler.ctx.config.telemetry.traced
        && let Some(uid) = guard.meta().uid.as_deref()
    {
        crane_telemetry::set_parent(&span, &crane_telemetry::run_traceparent(uid));
    }
    reconcile_in_span(guard, reconciler).instrument(span).await
}

async fn reconcile_in_span(
    guard: Arc<DeserializeGuard<AgentRun>>,
    reconciler: Arc<Reconciler>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &guard.0 {
        Ok(run) => {
            let run = Arc::new(run.clone());
            let api: Api<AgentRun> = Api::namespaced(
                reconciler.ctx.client.clone(),
                &run.namespace().unwrap_or_default(),
            );
            let r = reconciler.clone();
            finalizer(&api, FINALIZER, run, |event| async move {
                match event {
                    Finalizer::Apply(run) => apply(&run, &r).await,
                    Finalizer::Cleanup(run) => cleanup(&run, &r).await,
                }
            })
            .await
            .map_err(|e| Error::Finalizer(Box::new(e)))
        }
        Err(invalid) => Err(Error::InvalidObject(invalid.error.clone())),
    };
    let label = match &result {
        Ok(_) => {
            reconciler.backoff.succeeded(&format!(
                "{}/{}",
                guard.namespace().unwrap_or_default(),
                guard.name_any()
            ));
            "ok"
        }
        Err(e) => e.metric_label(),
    };
    reconciler
        .ctx
        .metrics
        .reconciled(Ctl::agentrun, label, started.elapsed());
    result
}

/// A live AgentRun: one pass of the phases, then its status.
async fn apply(run: &AgentRun, reconciler: &Reconciler) -> Result<Action, Error> {
    let uid = build::run_id(run)?.to_owned();
    reconciler.index.insert(&uid, ObjectRef::from_obj(run));
    let ns = run.namespace().unwrap_or_default();
    let catalog = reconciler.catalogs.for_namespace(&ns);
    let models = reconciler.catalogs.models_for(&ns);
    let env = Env {
        cluster: &reconciler.cluster,
        redis: reconciler.ctx.redis(),
        catalog: &catalog,
        models: &models,
        engine: &reconciler.engine,
        config: &reconciler.ctx.config,
        metrics: &reconciler.ctx.metrics,
    };
    let keys = run_keys(run, &uid)?;
    let (status, action) = phases::advance(run, &env, &keys, &now()).await?;
    let old = run.status.clone().unwrap_or_default();
    reconciler.status.write(run, &old, status).await?;
    Ok(action)
}

/// The engine keys of a run: its namespace and uid.
fn run_keys(run: &AgentRun, uid: &str) -> Result<RunKeys, Error> {
    RunKeys::new(&run.namespace().unwrap_or_default(), uid)
        .map_err(engine_err("naming the run's keys"))
}

/// Archives the run (when an archive is configured), then removes its Redis keys. Both are
/// idempotent; a failed archive write keeps the finalizer, so the run is retried, not lost.
async fn cleanup(run: &AgentRun, reconciler: &Reconciler) -> Result<Action, Error> {
    if let Some(uid) = run.metadata.uid.as_deref() {
        let mut redis = reconciler.ctx.redis();
        let keys = run_keys(run, uid)?;
        if let Some(archiver) = &reconciler.ctx.archive {
            archiver.archive_run(run, &keys, &mut redis).await?;
        }
        crane_engine::delete_run(&mut redis, &keys)
            .await
            .map_err(engine_err("deleting the run's redis keys"))?;
        reconciler.index.remove(uid);
        reconciler.status.forget(uid);
        info!("removed the run's redis keys");
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(c.len(), 7);
    }
}
