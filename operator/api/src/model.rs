//! The `Model` custom resource (`crane.dev/v1alpha1`): an OpenAI-compatible chat endpoint
//! (OpenAI, vLLM, Ollama, LiteLLM, llama.cpp) that `llm` steps and the LLM planner use, with
//! its key in a Secret and limits that hold across every worker of the cluster.

// `printcolumn(...)` repeats keys such as `type_` by design; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::tools::SecretKeySelector;

/// A model AgentRuns in this namespace may call.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "crane.dev",
    version = "v1alpha1",
    kind = "Model",
    namespaced,
    category = "crane",
    status = "ModelStatus",
    derive = "PartialEq",
    doc = "An OpenAI-compatible model endpoint that llm steps and the LLM planner of this namespace use.",
    printcolumn(name = "MODEL", type_ = "string", json_path = ".spec.model"),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Server root, e.g. https://api.openai.com/v1 or http://vllm.models.svc:8000.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("spec.baseUrl must start with http:// or https://"))]
    pub base_url: String,

    /// The provider's model id, e.g. gpt-4o-mini.
    #[schemars(length(min = 1, max = 256))]
    pub model: String,

    /// The Secret key holding the API key; absent: no Authorization header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeySelector>,

    /// Time limit of one call, in seconds.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: u32,

    /// Limits every worker of the cluster respects together; absent fields: no limit.
    #[serde(default)]
    pub limits: ModelLimitsSpec,
}

/// Cluster-wide limits of one Model.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ModelLimitsSpec {
    /// Most requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrent_requests: Option<u32>,
    /// Most requests started per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute: Option<u32>,
    /// Most tokens (prompt and completion) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000000))]
    pub tokens_per_minute: Option<u64>,
}

/// A Model's status: Ready when a cheap call (GET /v1/models) succeeded; else the
/// provider's error.
pub type ModelStatus = super::tools::ReadyStatus;

fn default_timeout_seconds() -> u32 {
    60
}
