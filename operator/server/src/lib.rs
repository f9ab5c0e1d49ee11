//! crane-server: Crane's runs API (`/api/v1`), its web UI (`/`, assets embedded in the
//! binary) and the reader of the run archive. Every Kubernetes call is made as the caller,
//! with their own bearer token ([`auth`]); nothing is cached across users.
//!
//! - [`routes`] is the one table of routes: the router is built from it and the OpenAPI
//!   document ([`openapi`]) is checked against it by a test.
//! - [`runs`]: the runs list (live and archived), a run, its outputs, create, cancel, retry,
//!   delete, and the compatibility routes. [`events`]: a run's step events (SSE).
//!   [`resources`]: WorkerPools, Tools, MCPServers, Models, Approvals (approve/reject),
//!   namespaces, whoami. [`ui`]: the embedded web UI.
//! - Hostile input is refused before any call: bodies over `--max-body-bytes` (413),
//!   malformed JSON (400), names that cannot exist (400), filters that are not filters (400).
#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod events;
pub mod extract;
pub mod metrics;
pub mod names;
pub mod openapi;
pub mod resources;
pub mod runs;
pub mod state;
pub mod ui;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};

pub use error::ApiError;
pub use state::{AppState, Config};

/// Builds the router while recording each (method, path) it serves.
pub struct Routes {
    router: Router<Arc<AppState>>,
    served: Vec<(Method, &'static str)>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            served: Vec::new(),
        }
    }

    fn at<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        let filter = match method {
            Method::GET => MethodFilter::GET,
            Method::POST => MethodFilter::POST,
            Method::DELETE => MethodFilter::DELETE,
            Method::PUT => MethodFilter::PUT,
            _ => MethodFilter::PATCH,
        };
        self.router = self.router.route(path, on(filter, handler));
        self.served.push((method, path));
        self
    }

    /// Every (method, path) served, in the router's path syntax (`{param}`, as OpenAPI).
    pub fn served(&self) -> &[(Method, &'static str)] {
        &self.served
    }
}

/// The API and UI routes (the metrics port has its own).
pub fn routes() -> Routes {
    use Method as M;
    const NS: &str = "/api/v1/namespaces/{namespace}";
    let _ = NS;
    Routes::new()
        .at(M::GET, "/api/v1/openapi.json", openapi::serve)
        .at(M::GET, "/api/v1/whoami", resources::whoami)
        .at(M::GET, "/api/v1/namespaces", resources::namespaces)
        .at(M::GET, "/api/v1/namespaces/{namespace}/runs", runs::list)
        .at(M::POST, "/api/v1/namespaces/{namespace}/runs", runs::create)
        .at(
            M::GET,
            "/api/v1/namespaces/{namespace}/runs/{name}",
            runs::get,
        )
        .at(
            M::DELETE,
            "/api/v1/namespaces/{namespace}/runs/{name}",
            runs::delete,
        )
        .at(
            M::GET,
            "/api/v1/namespaces/{namespace}/runs/{name}/outputs",
            runs::outputs,
        )
        .at(
            M::GET,
            "/api/v1/namespaces/{namespace}/runs/{name}/events",
            events::stream,
        )
        .at(
            M::POST,
            "/api/v1/namespaces/{namespace}/runs/{name}/cancel",
            runs::cancel,
        )
        .at(
            M::POST,
            "/api/v1/namespaces/{namespace}/runs/{name}/retry",
            runs::retry,
        )
        .at(
            M::GET,
            "/api/v1/namespaces/{namespace}/approvals",
            resources::approvals,
        )
        .at(
            M::POST,
            "/api/v1/namespaces/{namespace}/approvals/{name}/approve",
            resources::approve,
        )
        .at(
            M::POST,
            "/api/v1/namespaces/{namespace}/approvals/{name}/reject",
            resources::reject,
        )
        .at(
            M::GET,
            "/api/v1/namespaces/{namespace}/workerpools",
            resources::workerpools,
        )
        .at(
            M::GET,
            "/api/v1/namespaces/{namespace}/tools",
            resources::tools,
        )
        .at(
            M::GET,
            "/api/v1/namespaces/{namespace}/mcpservers",
            resources::mcpservers,
        )
        .at(
            M::GET,
            "/api/v1/namespaces/{namespace}/models",
            resources::models,
        )
        .at(M::POST, "/api/v1/runs", runs::compat_create)
        .at(M::GET, "/api/v1/runs/{id}", runs::compat_get)
        .at(M::GET, "/healthz", healthz)
        .at(M::GET, "/readyz", readyz)
        .at(M::GET, "/", ui::index)
        .at(M::GET, "/ui/{file}", ui::asset)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn not_found(req: Request) -> Response {
    ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

/// Per request: metrics by route template, one log line, and security headers (the UI
/// loads nothing from elsewhere and may not be framed).
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let mut response = next.run(req).await;
    let status = response.status().as_u16();
    let took = started.elapsed();
    state.metrics.request(&route, method.as_str(), status, took);
    if route != "/healthz" && route != "/readyz" {
        tracing::info!(%method, route, status, ms = took.as_secs_f64() * 1000.0, "request");
    }
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The API and UI app for `state`.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    routes()
        .router
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// `/metrics`, `/healthz`, `/readyz` on the metrics port.
pub fn metrics_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Arc<AppState>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    s.metrics.render(),
                )
            }),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// JSON logs on stderr, filtered by `RUST_LOG` (default info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The shared state from `config`: the apiserver's address and CA from the environment
/// (in-cluster, or KUBECONFIG; its credentials are not used for users), Redis and the
/// archive (both connected on demand).
pub async fn state(config: Config) -> anyhow::Result<Arc<AppState>> {
    let base = kube::Config::infer()
        .await
        .context("finding the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let redis = match &config.redis_url {
        Some(url) => {
            let auth = crane_engine::api::Auth {
                username: config.redis_username.clone(),
                password: config
                    .redis_password_file
                    .as_deref()
                    .map(crane_engine::api::read_password_file)
                    .transpose()?,
            };
            Some(crane_engine::api::client(url, &auth).context("--redis-url")?)
        }
        None => None,
    };
    let archive = match &config.archive_url {
        Some(url) => {
            let mut c = crane_archive::ArchiveConfig::new(url);
            c.ca_file = config.archive_ca_file.clone();
            Some(crane_archive::Archive::new(&c).context("--archive-url")?)
        }
        None => None,
    };
    Ok(Arc::new(AppState::new(
        auth::Auth::new(base),
        redis,
        archive,
        config,
    )))
}

/// The server process: logs, both listeners, until SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    init_logging();
    let (addr, metrics_addr) = (config.addr, config.metrics_addr);
    let state = state(config).await?;
    if let Some(archive) = state.archive.clone() {
        // Migrate early so the first page does not wait; a failure is retried at first use.
        tokio::spawn(async move {
            match archive.migrate().await {
                Ok(n) => tracing::info!(applied = n, "archive schema is current"),
                Err(e) => {
                    tracing::warn!(error = %e, "archive not reachable yet; retrying on first use")
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --addr {addr}"))?;
    let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {metrics_addr}"))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        crane_engine::shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop.send(true);
    });
    tracing::info!(
        addr = %listener.local_addr().unwrap_or(addr),
        metrics_addr = %metrics_listener.local_addr().unwrap_or(metrics_addr),
        "serving the API, the UI and /metrics"
    );
    state.set_ready(true);
    let metrics =
        axum::serve(metrics_listener, metrics_app(state.clone())).with_graceful_shutdown(wait());
    let api = axum::serve(listener, app(state.clone())).with_graceful_shutdown(wait());
    let (a, m) = tokio::join!(api, metrics);
    state.set_ready(false);
    a.context("API server")?;
    m.context("metrics server")?;
    tracing::info!("stopped");
    Ok(())
}
