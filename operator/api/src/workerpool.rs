//! The `WorkerPool` custom resource (`crane.dev/v1alpha1`): a namespace's autoscaled set of
//! worker Jobs (spec: bounds, scaling target, pod overrides) and what the operator observed
//! of its queue, workers and circuit breakers (status).

// `printcolumn(...)` repeats keys such as `type_` by design; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Condition type: the pool's workers can take steps (at least one runs, or none is needed).
pub const CONDITION_READY: &str = "Ready";

/// How many workers a pool keeps and how they run: the operator keeps
/// clamp(ceil(queued and running steps / targetQueueDepth), minWorkers, maxWorkers) worker
/// Jobs; a worker with nothing to do exits after idleTimeoutSeconds.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "crane.dev",
    version = "v1alpha1",
    kind = "WorkerPool",
    namespaced,
    shortname = "wp",
    category = "crane",
    status = "WorkerPoolStatus",
    derive = "PartialEq",
    doc = "An autoscaled pool of Crane workers that run the steps of this namespace's AgentRuns.",
    printcolumn(
        name = "WORKERS",
        type_ = "integer",
        json_path = ".status.activeWorkers",
        description = "Worker Jobs running now"
    ),
    printcolumn(
        name = "DESIRED",
        type_ = "integer",
        json_path = ".status.desiredWorkers",
        description = "Worker Jobs the autoscaler wants"
    ),
    printcolumn(
        name = "QUEUE",
        type_ = "integer",
        json_path = ".status.queueDepth",
        description = "Steps waiting for a worker"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.minWorkers <= self.maxWorkers").message("spec.minWorkers must not be greater than spec.maxWorkers"))]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolSpec {
    /// Workers kept running even with an empty queue.
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub min_workers: u32,

    /// Most workers at once, however deep the queue.
    #[serde(default = "default_max_workers")]
    #[schemars(range(max = 1000))]
    pub max_workers: u32,

    /// Queued plus running steps per worker before another worker is added.
    #[serde(default = "default_target_queue_depth")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_queue_depth: u32,

    /// Steps one worker runs at once.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: u32,

    /// Seconds a worker with nothing to do waits before it exits (how the pool scales down).
    #[serde(default = "default_idle_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub idle_timeout_seconds: u32,

    /// The tools this pool serves, e.g. [calculator, todo_store.add]; absent means every tool
    /// of the namespace's catalog. A run whose plan uses another tool fails with reason
    /// InvalidPlan, and the pool's workers refuse to run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 256),
        inner(
            length(min = 1, max = 128),
            regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
        )
    )]
    pub tools: Option<Vec<String>>,

    /// Overrides for the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<WorkerTemplate>,
}

/// Pod settings applied to every worker of the pool. The security context, command and
/// service-account settings are the operator's and cannot be overridden.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTemplate {
    /// CPU and memory requests and limits of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels a worker pod must match to be scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the worker pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Extra environment variables of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
}

fn default_max_workers() -> u32 {
    20
}
fn default_target_queue_depth() -> u32 {
    10
}
fn default_concurrency() -> u32 {
    8
}
fn default_idle_timeout_seconds() -> u32 {
    30
}

/// What the operator observed of the pool. Written only by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolStatus {
    /// Steps waiting for a worker.
    #[serde(default)]
    pub queue_depth: u64,
    /// Steps being run by a worker now.
    #[serde(default)]
    pub running: u64,
    /// Worker Jobs that exist and have not finished (starting ones included).
    #[serde(default)]
    pub active_workers: u32,
    /// Worker Jobs the autoscaler wants: clamp(ceil((queueDepth + running) /
    /// targetQueueDepth), minWorkers, maxWorkers).
    #[serde(default)]
    pub desired_workers: u32,
    /// When the operator last created worker Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Per-tool circuit breakers, shared by all workers of the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["tool".into()]))]
    pub breakers: Vec<BreakerStatus>,
    /// Standard conditions (type Ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One tool's circuit breaker.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStatus {
    /// The tool the breaker guards.
    pub tool: String,
    /// Closed (calls go through), Open (calls fail at once) or HalfOpen (one trial call).
    pub state: BreakerState,
    /// Consecutive failures counted by the breaker.
    #[serde(default)]
    pub failures: u32,
}

/// State of a circuit breaker.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the breaker's cool-down ends.
    Open,
    /// One trial call decides whether the breaker closes again.
    HalfOpen,
}
