//! The operator's configuration (flags and environment) and the shared state every
//! controller reconciles with: the Kubernetes client, one Redis connection, metrics and the
//! event reporter. Built once in [`crate::run`] and shared as `Arc<Context>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use redis::aio::ConnectionManager;

use crate::metrics::Metrics;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "crane-operator";

/// A key of a Secret in the object's namespace, written `NAME/KEY` on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// Why a `NAME/KEY` Secret reference was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("secret reference {given:?}: {why} (expected NAME/KEY, e.g. llm-credentials/api-key)")]
pub struct SecretKeyRefError {
    given: String,
    why: &'static str,
}

impl SecretKeyRef {
    /// An env var a pod reads from this Secret key. `optional` lets a pod start without it
    /// (it then reports the missing setting itself) instead of failing to start.
    pub fn env_var(&self, name: &str, optional: bool) -> k8s_openapi::api::core::v1::EnvVar {
        use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
        EnvVar {
            name: name.to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: self.name.clone(),
                    key: self.key.clone(),
                    optional: Some(optional),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }
    }
}

impl FromStr for SecretKeyRef {
    type Err = SecretKeyRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| SecretKeyRefError {
            given: s.chars().take(100).collect(),
            why,
        };
        let (name, key) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let dns_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 253
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                && n.starts_with(|c: char| c.is_ascii_alphanumeric())
                && n.ends_with(|c: char| c.is_ascii_alphanumeric())
        };
        if !dns_ok(name) {
            return Err(bad("the Secret name is not a DNS-1123 subdomain"));
        }
        // Secret data keys: [-._a-zA-Z0-9]+, at most 253.
        if key.is_empty()
            || key.len() > 253
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(bad("the key is not 1-253 characters of A-Z a-z 0-9 - . _"));
        }
        Ok(Self {
            name: name.to_owned(),
            key: key.to_owned(),
        })
    }
}

/// Everything the operator is told at start (flags, each with an environment variable).
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Redis the engine uses, e.g. redis://redis.crane-system:6379. Passed to planner and
    /// worker pods too.
    #[arg(long, env = "CRANE_REDIS_URL")]
    pub redis_url: String,

    /// The operator's own Redis user (its administrative identity, which creates the
    /// namespaces' users); empty: Redis's default user.
    #[arg(long, env = "CRANE_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// File holding the operator's Redis password (a mounted Secret of its own namespace).
    #[arg(long, env = "CRANE_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// Image of planner and worker pods (runs `crane-executor`).
    #[arg(
        long,
        env = "CRANE_EXECUTOR_IMAGE",
        default_value = "crane-executor:dev"
    )]
    pub executor_image: String,

    /// imagePullPolicy of planner and worker pods.
    #[arg(long, env = "CRANE_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub image_pull_policy: String,

    /// Namespace to watch; repeat for several. None: all namespaces.
    #[arg(long = "namespace", env = "CRANE_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Objects of one kind reconciled at once.
    #[arg(long, env = "CRANE_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "CRANE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// OpenAI-compatible base URL for planner Jobs (mode llm or auto).
    #[arg(long, env = "CRANE_LLM_BASE_URL")]
    pub llm_base_url: Option<String>,

    /// LLM model name for planner Jobs.
    #[arg(long, env = "CRANE_LLM_MODEL")]
    pub llm_model: Option<String>,

    /// Secret NAME/KEY (in each run's namespace) with the LLM API key for planner Jobs.
    #[arg(long, env = "CRANE_LLM_API_KEY_SECRET")]
    pub llm_api_key_secret: Option<SecretKeyRef>,

    /// Run the controllers only while holding the Lease, so several replicas can run
    /// (`--leader-elect=false`: run them at once, for a single replica).
    #[arg(long, env = "CRANE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the Lease: the operator's own (the Downward API sets POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "crane-system")]
    pub leader_election_namespace: String,

    /// Name of the Lease; replicas sharing it elect one leader.
    #[arg(long, env = "CRANE_LEADER_ELECTION_ID", default_value = crate::leader::DEFAULT_LEASE_NAME)]
    pub leader_election_id: String,

    /// Seconds a leader's Lease stays valid without renewal: the failover time after a
    /// leader dies. The leader renews every third of it.
    #[arg(long, env = "CRANE_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// Port on which worker pods serve /metrics (a container port named `metrics`, for a
    /// PodMonitor or Prometheus's pod discovery); 0: workers serve no metrics.
    #[arg(long, env = "CRANE_WORKER_METRICS_PORT", default_value_t = 0)]
    pub worker_metrics_port: u16,

    /// Traces for planner and worker pods: set at start from the operator's own `OTEL_*`
    /// environment (crane-telemetry), not a flag.
    #[arg(skip)]
    pub telemetry: crane_telemetry::PodSettings,
    /// PostgreSQL URL of the run archive (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=...).
    /// When set, every AgentRun is written there before its finalizer removes its Redis keys
    /// (crane-server shows archived runs). Unset: no archive.
    #[arg(long, env = "CRANE_ARCHIVE_URL", hide_env_values = true)]
    pub archive_url: Option<String>,

    /// PEM file with the CA of the archive's TLS certificate (default: the system's roots).
    #[arg(long, env = "CRANE_ARCHIVE_CA_FILE")]
    pub archive_ca_file: Option<PathBuf>,

    /// Days an archived run is kept (counted from when it was archived); 0 keeps them forever.
    #[arg(long, env = "CRANE_ARCHIVE_RETENTION_DAYS", default_value_t = 0)]
    pub archive_retention_days: u32,

    /// Seconds between two retention passes (the leader runs them).
    #[arg(
        long,
        env = "CRANE_ARCHIVE_PRUNE_INTERVAL_SECONDS",
        default_value_t = 3600
    )]
    pub archive_prune_interval_seconds: u64,
}

impl Config {
    /// A configuration with defaults, for tests and embedding.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            redis_username: None,
            redis_password_file: None,
            executor_image: "crane-executor:dev".to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            namespaces: Vec::new(),
            concurrency: 8,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            llm_base_url: None,
            llm_model: None,
            llm_api_key_secret: None,
            leader_elect: true,
            leader_election_namespace: "crane-system".to_owned(),
            leader_election_id: crate::leader::DEFAULT_LEASE_NAME.to_owned(),
            lease_duration_seconds: 15,
            worker_metrics_port: 0,
            telemetry: crane_telemetry::PodSettings::default(),
            archive_url: None,
            archive_ca_file: None,
            archive_retention_days: 0,
            archive_prune_interval_seconds: 3600,
        }
    }
}

/// Shared state of the controllers.
pub struct Context {
    pub client: kube::Client,
    /// Reconnecting connection for ordinary (non-blocking) commands.
    pub redis: ConnectionManager,
    /// For dedicated connections (blocking stream reads).
    pub redis_client: redis::Client,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// The run archive, when `--archive-url` is set.
    pub archive: Option<Arc<crate::archive::Archiver>>,
    /// Publishes Kubernetes Events as `crane-operator`, counting repeats into series.
    pub recorder: Recorder,
    /// The run namespaces' Redis logins.
    pub tenancy: Arc<crate::tenancy::Tenancy>,
    reporter: Reporter,
    ready: AtomicBool,
}

impl Context {
    pub fn new(
        client: kube::Client,
        redis_client: redis::Client,
        redis: ConnectionManager,
        config: Config,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            tenancy: Arc::new(crate::tenancy::Tenancy::new(client.clone(), redis.clone())),
            reporter,
            client,
            redis,
            redis_client,
            config,
            metrics,
            archive: None,
            ready: AtomicBool::new(false),
        }
    }

    /// With the run archive: runs are written to it before their Redis keys go.
    pub fn with_archive(mut self, archive: Arc<crate::archive::Archiver>) -> Self {
        self.archive = Some(archive);
        self
    }

    /// Creates an Event that is never repeated, such as a run's phase change, without the
    /// Recorder: it keeps every Event it sent for six minutes to count repeats into a series,
    /// and with one Event per run phase that cache grew with the number of runs (≈ 10 MiB of
    /// the operator's RSS for 1,000 runs in `make bench-operator`). Same fields as the
    /// Recorder's Events.
    pub async fn publish_unique(
        &self,
        ev: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let controller = &self.reporter.controller;
        let event = K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: reference.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    reference.name.as_ref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            related: ev.secondary.clone(),
            ..K8sEvent::default()
        };
        let ns = reference.namespace.as_deref().unwrap_or("default");
        kube::Api::<K8sEvent>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }

    /// `/readyz` answers 200 once the CRDs are established and the process either leads
    /// (controllers running) or stands by for the Lease: a standby replica is ready, so
    /// rolling updates and the PodDisruptionBudget count it (`is_leader` tells them apart).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// A clone of the shared Redis connection (cheap: it multiplexes).
    pub fn redis(&self) -> ConnectionManager {
        self.redis.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_refs_parse_and_reject_hostile_values() {
        assert_eq!(
            "llm/api-key".parse::<SecretKeyRef>(),
            Ok(SecretKeyRef {
                name: "llm".into(),
                key: "api-key".into()
            })
        );
        for bad in [
            "",
            "noslash",
            "/key",
            "name/",
            "Name/key",
            "na me/key",
            "name/k/y",
            "name/ke y",
            "-name/key",
            "name/\u{0}",
        ] {
            let err = bad.parse::<SecretKeyRef>().expect_err(bad);
            assert!(err.to_string().contains("NAME/KEY"), "{err}");
        }
    }
}
