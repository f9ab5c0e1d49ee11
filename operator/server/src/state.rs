//! The server's configuration (flags, each with an environment variable) and the state every
//! request shares: the per-user client factory, Redis (connected on first use, so the server
//! starts while Redis is down), the archive, metrics and the event-stream limit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crane_archive::Archive;
use redis::aio::ConnectionManager;
use tokio::sync::{OnceCell, Semaphore};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Field manager of every write the server makes on a user's behalf.
pub const FIELD_MANAGER: &str = "crane-server";

/// Everything the server is told at start.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Address of the API and the web UI.
    #[arg(long, env = "CRANE_SERVER_ADDR", default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,

    /// Address of /metrics, /healthz and /readyz (kept off the API port, which may be exposed).
    #[arg(long, env = "CRANE_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

    /// Redis the engine uses: live runs' full outputs and step events. Unset: outputs come
    /// from the AgentRun status (truncated) and event streams are unavailable.
    #[arg(long, env = "CRANE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// The server's Redis user: it reads every namespace's runs (after the caller's RBAC
    /// allowed it), so the operator's administrative one; empty: Redis's default user.
    #[arg(long, env = "CRANE_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// File holding that user's Redis password (a mounted Secret).
    #[arg(long, env = "CRANE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// PostgreSQL URL of the run archive (the operator writes it). Unset: live runs only.
    #[arg(long, env = "CRANE_ARCHIVE_URL", hide_env_values = true)]
    pub archive_url: Option<String>,

    /// PEM file with the CA of the archive's TLS certificate (default: the system's roots).
    #[arg(long, env = "CRANE_ARCHIVE_CA_FILE")]
    pub archive_ca_file: Option<PathBuf>,

    /// Largest request body, in bytes (an AgentRun is at most ~1.5 MiB in etcd).
    #[arg(long, env = "CRANE_SERVER_MAX_BODY_BYTES", default_value_t = 1_572_864)]
    pub max_body_bytes: usize,

    /// Most event streams open at once (each holds one Redis connection).
    #[arg(long, env = "CRANE_SERVER_MAX_STREAMS", default_value_t = 256)]
    pub max_streams: usize,

    /// An event stream is closed after this many seconds; the browser reconnects with
    /// Last-Event-ID, and the user's access is checked again.
    #[arg(long, env = "CRANE_SERVER_STREAM_MAX_SECONDS", default_value_t = 900)]
    pub stream_max_seconds: u64,
}

impl Config {
    /// Defaults, for tests and embedding.
    pub fn new() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            redis_url: None,
            redis_username: None,
            redis_password_file: None,
            archive_url: None,
            archive_ca_file: None,
            max_body_bytes: 1_572_864,
            max_streams: 256,
            stream_max_seconds: 900,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// State shared by every request.
pub struct AppState {
    pub auth: Arc<Auth>,
    pub archive: Option<Archive>,
    pub metrics: Arc<Metrics>,
    pub streams: Arc<Semaphore>,
    pub config: Config,
    redis_client: Option<redis::Client>,
    redis: OnceCell<ConnectionManager>,
    ready: AtomicBool,
}

impl AppState {
    pub fn new(
        auth: Auth,
        redis_client: Option<redis::Client>,
        archive: Option<Archive>,
        config: Config,
    ) -> Self {
        Self {
            auth: Arc::new(auth),
            archive,
            metrics: Arc::new(Metrics::new()),
            streams: Arc::new(Semaphore::new(config.max_streams.max(1))),
            config,
            redis_client,
            redis: OnceCell::new(),
            ready: AtomicBool::new(false),
        }
    }

    /// The shared Redis connection, made at first use; `None` without `--redis-url`.
    pub async fn redis(&self) -> Result<Option<ConnectionManager>, ApiError> {
        let Some(client) = &self.redis_client else {
            return Ok(None);
        };
        self.redis
            .get_or_try_init(|| crane_engine::connect(client))
            .await
            .cloned()
            .map(Some)
            .map_err(ApiError::Engine)
    }

    pub fn redis_client(&self) -> Option<&redis::Client> {
        self.redis_client.as_ref()
    }

    pub fn archive(&self) -> Result<&Archive, ApiError> {
        self.archive.as_ref().ok_or(ApiError::NoArchive)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}
