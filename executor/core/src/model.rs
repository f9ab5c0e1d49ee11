//! A model as a worker needs it for `llm` steps: where it is served, which Secret holds its
//! key (a reference; the worker reads the value from its mounted Secret), the time limit, and
//! the limits every worker of the cluster shares. The operator builds it from a `Model`
//! object and stores it with the run; a step input only ever names a model, never an endpoint.

use serde::{Deserialize, Serialize};

use crate::tool::SecretKey;

/// One `Model` object, resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfig {
    /// The Model object's name (what `llm` inputs and `spec.model` say).
    pub name: String,
    /// OpenAI-compatible server root.
    pub base_url: String,
    /// The provider's model id.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretKey>,
    pub timeout_seconds: u32,
    #[serde(default)]
    pub limits: ModelLimits,
}

/// Limits that hold across every worker of the cluster (state in Redis); absent: none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

/// Tokens and calls a run spent, and what its budget allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// What a run spent so far: tokens, model calls (the planner's included) and other tool
/// calls, counted by the engine before each call is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spending {
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub llm_calls: u64,
    #[serde(default)]
    pub tool_calls: u64,
}

impl Spending {
    pub fn is_empty(&self) -> bool {
        *self == Spending::default()
    }
}

/// `spec.budget`: limits on what one run may spend, enforced before each call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_llm_calls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_calls: Option<u64>,
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        *self == Budget::default()
    }
}
