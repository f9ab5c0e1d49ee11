//! Crane's operator library: the `crane.dev/v1alpha1` API types, the CRD generator, and the
//! operator process — the AgentRun and WorkerPool controllers plus the HTTP endpoints
//! (`/metrics`, `/healthz`, `/readyz`) — started by [`run`].
#![forbid(unsafe_code)]

pub mod agentrun;
pub mod archive;
pub mod catalog;
pub mod context;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod pod;
pub mod tenancy;
pub mod tools_ctl;
pub mod workerpool;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::runtime::wait::{await_condition, conditions};

pub use context::{Config, Context, FIELD_MANAGER, SecretKeyRef};
pub use controller::Shutdown;
pub use crane_api::{
    AgentRun, AgentRunPhase, AgentRunSpec, AgentRunStatus, BreakerState, BreakerStatus,
    PlannerSpec, StepStatus, WorkerPool, WorkerPoolSpec, WorkerPoolStatus, WorkerTemplate,
};
pub use metrics::Metrics;

/// Waits until both CRDs are established, so the controllers' watches do not fail.
async fn wait_for_crds(client: kube::Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for name in [
        "agentruns.crane.dev",
        "workerpools.crane.dev",
        "tools.crane.dev",
        "mcpservers.crane.dev",
        "models.crane.dev",
        "approvals.crane.dev",
    ] {
        tracing::info!(crd = name, "waiting for CRD to be established");
        tokio::time::timeout(
            Duration::from_secs(300),
            await_condition(crds.clone(), name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not established after 300 s; apply crds/ first"))?
        .with_context(|| format!("watching CRD {name}"))?;
    }
    Ok(())
}

/// Builds the shared context: Kubernetes client from the environment (in-cluster or
/// KUBECONFIG) and a Redis connection.
pub async fn context(config: Config) -> anyhow::Result<Arc<Context>> {
    let client = kube::Client::try_default()
        .await
        .context("creating the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let auth = crane_engine::api::Auth {
        username: config.redis_username.clone(),
        password: config
            .redis_password_file
            .as_deref()
            .map(crane_engine::api::read_password_file)
            .transpose()?,
    };
    let redis_client =
        crane_engine::api::client(&config.redis_url, &auth).context("--redis-url")?;
    let redis = crane_engine::connect(&redis_client)
        .await
        .context("connecting to redis")?;
    let metrics = Arc::new(Metrics::new());
    let archiver = match &config.archive_url {
        Some(url) => {
            let mut archive = crane_archive::ArchiveConfig::new(url);
            archive.ca_file = config.archive_ca_file.clone();
            archive.max_connections = 4;
            Some(Arc::new(
                archive::Archiver::new(
                    &archive,
                    config.archive_retention_days,
                    Duration::from_secs(config.archive_prune_interval_seconds),
                    metrics.clone(),
                )
                .context("--archive-url")?,
            ))
        }
        None => None,
    };
    let ctx = Context::new(client, redis_client, redis, config, metrics);
    Ok(Arc::new(match archiver {
        Some(a) => ctx.with_archive(a),
        None => ctx,
    }))
}

/// The operator process: logs and traces, HTTP endpoints, CRD wait, then both controllers — while
/// holding the leader Lease unless `--leader-elect=false`; returns after SIGTERM once the
/// controllers have drained (and the Lease was released).
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    let telemetry = crane_telemetry::init("crane-operator", "info");
    config.telemetry = crane_telemetry::PodSettings::from_env();
    let result = operate(config).await;
    telemetry.shutdown().await;
    result
}

async fn operate(config: Config) -> anyhow::Result<()> {
    let election = if config.leader_elect {
        Some(leader::LeaderConfig::new(
            &config.leader_election_namespace,
            &config.leader_election_id,
            &leader::default_identity(),
            config.lease_duration_seconds,
        )?)
    } else {
        None
    };
    let addr = config.metrics_addr;
    let ctx = context(config).await?;
    let (stop, shutdown) = Shutdown::new();
    let server = tokio::spawn(serve_http(addr, ctx.clone(), shutdown.clone()));
    tokio::spawn({
        async move {
            crane_engine::shutdown_signal().await;
            tracing::info!("shutdown requested");
            let _ = stop.send(true);
        }
    });
    tokio::select! {
        r = wait_for_crds(ctx.client.clone()) => r?,
        () = shutdown.wait() => return Ok(()),
    }
    ctx.set_ready(true);
    let result = match election {
        Some(cfg) => run_elected(ctx.clone(), cfg, shutdown).await,
        None => {
            ctx.metrics.is_leader.set(1);
            run_controllers(ctx.clone(), shutdown).await
        }
    };
    ctx.metrics.is_leader.set(0);
    ctx.set_ready(false);
    server.abort();
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Every controller until `shutdown`.
async fn run_controllers(ctx: Arc<Context>, shutdown: Shutdown) -> anyhow::Result<()> {
    tracing::info!("starting controllers");
    // Retention runs where the controllers run: on the leader only.
    let pruner = ctx
        .archive
        .clone()
        .map(|a| tokio::spawn(a.prune_loop(shutdown.clone())));
    let (catalogs, tools) = tools_ctl::start(ctx.clone(), shutdown.clone())?;
    let (ar, wp, (), (), ()) = tokio::join!(
        agentrun::run(ctx.clone(), catalogs.clone(), shutdown.clone()),
        workerpool::run(ctx.clone(), catalogs.clone(), shutdown.clone()),
        tools,
        ctx.tenancy.clone().run(shutdown.clone()),
        catalogs.record_deletions(ctx.redis(), ctx.config.namespaces.clone(), shutdown.clone()),
    );
    if let Some(p) = pruner {
        p.abort();
    }
    ar.context("agentrun controller")?;
    wp.context("workerpool controller")?;
    Ok(())
}

/// Stands by for the Lease, runs the controllers while holding it, stops them at once when
/// it is lost and stands by again — so a replica cut off from the API (the leader included)
/// rides the outage out and resumes when the API is back. Only when the controllers do not
/// stop within the margin before another replica may take over does the process exit
/// (Kubernetes restarts it), so two leaders never write at once.
async fn run_elected(
    ctx: Arc<Context>,
    cfg: leader::LeaderConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let margin = cfg.stop_margin();
    let mut elector = leader::Elector::new(ctx.client.clone(), cfg);
    loop {
        ctx.metrics.is_leader.set(0);
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown.wait() => return Ok(()),
        }
        ctx.metrics.is_leader.set(1);
        let (stop_controllers, controllers_shutdown) = Shutdown::new();
        let mut controllers = tokio::spawn(run_controllers(ctx.clone(), controllers_shutdown));
        tokio::select! {
            lost = elector.hold() => {
                tracing::warn!(reason = %lost, "lost leadership; stopping the controllers");
                ctx.metrics.is_leader.set(0);
                let _ = stop_controllers.send(true);
                match tokio::time::timeout(margin, &mut controllers).await {
                    Ok(Ok(Ok(()))) => tracing::info!("controllers stopped; standing by"),
                    Ok(Ok(Err(e))) => tracing::warn!(error = format!("{e:#}"), "controllers stopped with an error; standing by"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "controller task failed; standing by"),
                    Err(_) => {
                        controllers.abort();
                        anyhow::bail!(
                            "lost leadership ({lost}) and the controllers did not stop within {} s; \
                             exiting so that only the new leader writes",
                            margin.as_secs()
                        );
                    }
                }
            }
            () = shutdown.wait() => {
                let _ = stop_controllers.send(true);
                let result = controllers.await;
                ctx.metrics.is_leader.set(0);
                release(&mut elector).await;
                return result.context("controller task")?;
            }
            result = &mut controllers => {
                // The controllers ended on their own (an error): hand the Lease over.
                ctx.metrics.is_leader.set(0);
                release(&mut elector).await;
                return result.context("controller task")?;
            }
        }
    }
}

/// Releases the Lease on the way out so a standby replica takes over at once.
async fn release(elector: &mut leader::Elector) {
    let limit = elector.config().renew_period;
    match tokio::time::timeout(limit, elector.release()).await {
        Ok(Ok(())) => tracing::info!("released the leader lease"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "releasing the leader lease failed; it expires by itself")
        }
        Err(_) => tracing::warn!("releasing the leader lease timed out; it expires by itself"),
    }
}

async fn serve_http(
    addr: std::net::SocketAddr,
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let metrics = ctx.metrics.clone();
    let ready = ctx.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.is_ready() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-addr {addr}"))?;
    tracing::info!(%addr, "serving /metrics /healthz /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.wait())
        .await
        .context("http server")
}
