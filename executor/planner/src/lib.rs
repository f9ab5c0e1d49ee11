//! Planning: turns a natural-language prompt into a validated [`Plan`], with the rules planner,
//! an OpenAI-compatible LLM, or the LLM with a fallback to rules (`auto`), and records which
//! planner produced the plan and why it fell back.
//!
//! Limits: a prompt is at most [`MAX_PROMPT_CHARS`] (10 000) characters, counted as Unicode
//! scalar values, and must not be blank. Both checks happen before any planner runs, so an
//! oversized prompt never reaches the network.
//!
//! Every plan this module returns has passed [`validate`]; a plan that does not is never
//! returned, whichever planner made it.

pub mod llm;
pub mod rules;

use std::time::Duration;

use serde::Serialize;

use crane_core::plan::Plan;
pub use crane_core::plan::{
    ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, ENV_TIMEOUT_SECONDS, MAX_PROMPT_CHARS, PlanSource,
    PlannerMode,
};
use crane_core::text::truncate;
use crane_core::tool::Catalog;
use crane_core::validate::validate;

pub use llm::LlmError;
pub use rules::RulesError;

/// A plan and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanOutcome {
    pub plan: Plan,
    pub source: PlanSource,
    /// In `auto` mode, why the LLM's plan was not used (the rules planner made this one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Tokens the LLM's call used, whether or not its plan was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<crane_core::model::Usage>,
}

/// The model used when `CRANE_LLM_MODEL` is not set.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// The LLM timeout when `CRANE_LLM_TIMEOUT_SECONDS` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest timeout accepted: a planner Job should not hang on one call for longer.
pub const MAX_TIMEOUT_SECONDS: u64 = 600;

/// How to reach an OpenAI-compatible chat-completions endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// Server root, with or without a trailing `/v1` (see [`llm::chat_completions_url`]).
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer ...` when set. Never printed: `Debug` redacts it.
    pub api_key: Option<String>,
    /// For the whole call: connect, send, and read the reply.
    pub timeout: Duration,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl LlmConfig {
    /// Reads `CRANE_LLM_BASE_URL` (unset or empty: no LLM, `Ok(None)`), `CRANE_LLM_MODEL`
    /// (default `gpt-4o-mini`), `CRANE_LLM_API_KEY` (optional) and
    /// `CRANE_LLM_TIMEOUT_SECONDS` (default 30, 1..=600).
    pub fn from_env() -> Result<Option<LlmConfig>, PlannerError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`LlmConfig::from_env`] over any source of variables (tests cannot safely change the
    /// process environment). Empty values count as unset, as Kubernetes renders optional
    /// Secret keys that way.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<LlmConfig>, PlannerError> {
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let Some(base_url) = var(ENV_BASE_URL) else {
            return Ok(None);
        };
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(PlannerError::InvalidConfig {
                var: ENV_BASE_URL,
                message: format!(
                    "\"{}\" is not an http:// or https:// URL",
                    truncate(&base_url, 100)
                ),
            });
        }
        let model = var(ENV_MODEL).unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        let timeout = match var(ENV_TIMEOUT_SECONDS) {
            None => DEFAULT_TIMEOUT,
            Some(raw) => match raw.parse::<u64>() {
                Ok(secs) if (1..=MAX_TIMEOUT_SECONDS).contains(&secs) => Duration::from_secs(secs),
                _ => {
                    return Err(PlannerError::InvalidConfig {
                        var: ENV_TIMEOUT_SECONDS,
                        message: format!(
                            "\"{}\" is not a whole number of seconds from 1 to {MAX_TIMEOUT_SECONDS}",
                            truncate(&raw, 40)
                        ),
                    });
                }
            },
        };
        // The key is used verbatim (no trim beyond surrounding whitespace): it is a secret and
        // its content is none of our business.
        let api_key = var(ENV_API_KEY);
        Ok(Some(LlmConfig {
            base_url,
            model,
            api_key,
            timeout,
        }))
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlannerError {
    #[error(
        "the prompt is empty: say what to do, e.g. \"calculate 2+3\" or \"add a todo to buy milk\""
    )]
    EmptyPrompt,
    #[error("the prompt is {chars} characters long; at most {max} are accepted")]
    PromptTooLong { chars: usize, max: usize },
    #[error("the rules planner cannot plan this prompt: {source}")]
    Unplannable {
        #[source]
        source: RulesError,
    },
    #[error(
        "planner mode llm needs an LLM, but none is configured (set {ENV_BASE_URL}, or use planner mode auto or rules)"
    )]
    LlmNotConfigured,
    #[error("the LLM planner failed: {0}")]
    Llm(#[source] LlmError),
    #[error(
        "the LLM planner failed ({llm}), and the rules planner cannot plan this prompt either: {rules}"
    )]
    BothFailed { llm: LlmError, rules: RulesError },
    /// A plan failed validation (for the LLM's plans this arrives as [`LlmError::InvalidPlan`]
    /// inside [`PlannerError::Llm`]; this one means the rules planner produced it, a bug).
    #[error("the planned steps are not a valid plan: {0}")]
    InvalidPlan(String),
    #[error("{var} is invalid: {message}")]
    InvalidConfig { var: &'static str, message: String },
}

impl PlannerError {
    /// Stable, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::EmptyPrompt => "empty_prompt",
            Self::PromptTooLong { .. } => "prompt_too_long",
            Self::Unplannable { .. } => "unplannable",
            Self::LlmNotConfigured => "llm_not_configured",
            Self::Llm(e) => e.metric_label(),
            Self::BothFailed { .. } => "both_failed",
            Self::InvalidPlan(_) => "invalid_plan",
            Self::InvalidConfig { .. } => "invalid_config",
        }
    }
}

/// Plans `prompt` with the planner `mode` asks for (see [`PlannerMode`]). `llm` is the LLM to
/// use, if any (from [`LlmConfig::from_env`]).
pub async fn plan_prompt(
    prompt: &str,
    mode: PlannerMode,
    llm: Option<&LlmConfig>,
    catalog: &Catalog,
) -> Result<PlanOutcome, PlannerError> {
    check_prompt(prompt)?;
    let outcome = |plan, source, fallback_reason, usage| PlanOutcome {
        plan,
        source,
        fallback_reason,
        usage,
    };
    match (mode, llm) {
        (PlannerMode::Rules, _) | (PlannerMode::Auto, None) => {
            let plan = rules_plan(prompt, catalog)?;
            Ok(outcome(plan, PlanSource::Rules, None, None))
        }
        (PlannerMode::Llm, None) => Err(PlannerError::LlmNotConfigured),
        (PlannerMode::Llm, Some(config)) => {
            let (planned, usage) = llm::plan(prompt, config, catalog).await;
            let plan = planned.map_err(PlannerError::Llm)?;
            Ok(outcome(plan, PlanSource::Llm, None, usage))
        }
        (PlannerMode::Auto, Some(config)) => match llm::plan(prompt, config, catalog).await {
            (Ok(plan), usage) => Ok(outcome(plan, PlanSource::Llm, None, usage)),
            (Err(llm_error), usage) => {
                tracing::warn!(
                    error = %llm_error,
                    reason = llm_error.metric_label(),
                    "LLM planner failed; falling back to the rules planner"
                );
                match rules_plan(prompt, catalog) {
                    Ok(plan) => Ok(outcome(
                        plan,
                        PlanSource::Rules,
                        Some(llm_error.to_string()),
                        usage,
                    )),
                    Err(PlannerError::Unplannable { source }) => Err(PlannerError::BothFailed {
                        llm: llm_error,
                        rules: source,
                    }),
                    Err(other) => Err(other),
                }
            }
        },
    }
}

/// The checks every planner shares: not blank, not too long.
fn check_prompt(prompt: &str) -> Result<(), PlannerError> {
    if prompt.trim().is_empty() {
        return Err(PlannerError::EmptyPrompt);
    }
    let chars = prompt.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(PlannerError::PromptTooLong {
            chars,
            max: MAX_PROMPT_CHARS,
        });
    }
    Ok(())
}

fn rules_plan(prompt: &str, catalog: &Catalog) -> Result<Plan, PlannerError> {
    let plan = rules::plan(prompt).map_err(|source| PlannerError::Unplannable { source })?;
    // The rules planner is meant to emit only valid plans; checking anyway means a bug in it
    // (or a tool whose schema changed under it) shows up here, not half-way through a run.
    validate(&plan, catalog).map_err(|errors| PlannerError::InvalidPlan(errors.to_string()))?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn config_absent_without_base_url() {
        assert_eq!(LlmConfig::from_vars(vars(&[])), Ok(None));
        assert_eq!(
            LlmConfig::from_vars(vars(&[(ENV_BASE_URL, "  "), (ENV_MODEL, "m")])),
            Ok(None)
        );
    }

    #[test]
    fn config_defaults_and_overrides() {
        let Ok(Some(cfg)) = LlmConfig::from_vars(vars(&[(ENV_BASE_URL, "http://llm:8080")])) else {
            panic!("expected a config");
        };
        assert_eq!(cfg.base_url, "http://llm:8080");
        assert_eq!(cfg.model, DEFAULT_MODEL);
        assert_eq!(cfg.api_key, None);
        assert_eq!(cfg.timeout, Duration::from_secs(30));

        let Ok(Some(cfg)) = LlmConfig::from_vars(vars(&[
            (ENV_BASE_URL, "https://api.example.test/v1"),
            (ENV_MODEL, "llama3"),
            (ENV_API_KEY, "sk-secret"),
            (ENV_TIMEOUT_SECONDS, "5"),
        ])) else {
            panic!("expected a config");
        };
        assert_eq!(cfg.model, "llama3");
        assert_eq!(cfg.api_key.as_deref(), Some("sk-secret"));
        assert_eq!(cfg.timeout, Duration::from_secs(5));
    }

    #[test]
    fn config_rejects_bad_values_naming_the_variable() {
        for bad in ["0", "-1", "abc", "1.5", "601", "99999999999999999999999"] {
            let err = LlmConfig::from_vars(vars(&[
                (ENV_BASE_URL, "http://x"),
                (ENV_TIMEOUT_SECONDS, bad),
            ]));
            let Err(PlannerError::InvalidConfig { var, message }) = err else {
                panic!("{bad}: expected InvalidConfig, got {err:?}");
            };
            assert_eq!(var, ENV_TIMEOUT_SECONDS);
            assert!(message.contains(bad), "{message}");
        }
        for bad in ["llm:8080", "ftp://x", "javascript:alert(1)"] {
            let err = LlmConfig::from_vars(vars(&[(ENV_BASE_URL, bad)]));
            assert!(
                matches!(&err, Err(PlannerError::InvalidConfig { var, .. }) if *var == ENV_BASE_URL),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn config_debug_never_shows_the_key() {
        let cfg = LlmConfig {
            base_url: "http://x".into(),
            model: "m".into(),
            api_key: Some("sk-very-secret".into()),
            timeout: DEFAULT_TIMEOUT,
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn prompt_checks() {
        assert_eq!(check_prompt(""), Err(PlannerError::EmptyPrompt));
        assert_eq!(check_prompt(" \n\t "), Err(PlannerError::EmptyPrompt));
        assert_eq!(check_prompt(&"é".repeat(MAX_PROMPT_CHARS)), Ok(()));
        assert_eq!(
            check_prompt(&"é".repeat(MAX_PROMPT_CHARS + 1)),
            Err(PlannerError::PromptTooLong {
                chars: MAX_PROMPT_CHARS + 1,
                max: MAX_PROMPT_CHARS
            })
        );
    }

    #[test]
    fn modes_serialize_lowercase() {
        assert_eq!(
            serde_json::to_value(PlannerMode::Auto).ok(),
            Some(serde_json::json!("auto"))
        );
        assert_eq!(
            serde_json::to_value(PlanSource::Llm).ok(),
            Some(serde_json::json!("llm"))
        );
        let outcome = PlanOutcome {
            plan: Plan::default(),
            source: PlanSource::Rules,
            fallback_reason: Some("timeout".into()),
            usage: None,
        };
        assert_eq!(
            serde_json::to_value(&outcome).ok(),
            Some(
                serde_json::json!({"plan": {"steps": []}, "source": "rules", "fallbackReason": "timeout"})
            )
        );
    }
}
