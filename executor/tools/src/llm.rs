//! The `llm` tool's call: turn a step input into a chat request, send it to the model, and
//! turn the reply into the step's output — the text, or with `responseSchema` the JSON the
//! reply holds, checked against that schema (a mismatch fails the step, not retried). Which
//! model, the key, the budget and the cluster-wide rate limits are the worker's business
//! (`crane-engine`); this module only talks to the provider.

use std::time::Duration;

use crane_core::tool::ToolError;
use crane_llm::{ChatRequest, Completion, LlmError, Provider, Usage, strip_fence};
use serde_json::Value;

/// What an `llm` step asks, read from its (validated, resolved) input.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmInput {
    pub request: ChatRequest,
    /// The Model named in the input, if any (else the run's default).
    pub model: Option<String>,
    pub response_schema: Option<Value>,
}

impl LlmInput {
    pub fn parse(input: &Value) -> Result<Self, ToolError> {
        let text = |field: &str| input.get(field).and_then(Value::as_str).map(str::to_owned);
        let prompt = text("prompt")
            .ok_or_else(|| ToolError::InvalidInput("llm: input.prompt is required".into()))?;
        let mut messages = Vec::new();
        if let Some(system) = text("system") {
            messages.push(("system".to_owned(), system));
        }
        messages.push(("user".to_owned(), prompt));
        let response_schema = input
            .get("responseSchema")
            .filter(|s| s.is_object())
            .cloned();
        if let Some(schema) = &response_schema {
            jsonschema::validator_for(schema).map_err(|e| {
                ToolError::InvalidInput(format!(
                    "llm: input.responseSchema is not a JSON schema: {e}"
                ))
            })?;
        }
        Ok(Self {
            request: ChatRequest {
                messages,
                response_schema: response_schema
                    .clone()
                    .map(|s| ("crane_step".to_owned(), s)),
                max_tokens: input
                    .get("maxTokens")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok()),
                temperature: input.get("temperature").and_then(Value::as_f64),
            },
            model: text("model"),
            response_schema,
        })
    }
}

/// Sends the request; returns the output, the usage and the model that answered.
pub async fn call(
    client: &reqwest::Client,
    provider: &Provider,
    input: &LlmInput,
    headers: &[(&str, String)],
) -> Result<(Value, Completion), ToolError> {
    let completion = crane_llm::chat(client, provider, &input.request, headers)
        .await
        .map_err(tool_error)?;
    let output = output(&completion, input.response_schema.as_ref())?;
    Ok((output, completion))
}

/// The step's output of a completion: the text, or the JSON it holds checked against the
/// schema.
pub fn output(completion: &Completion, schema: Option<&Value>) -> Result<Value, ToolError> {
    let Some(schema) = schema else {
        return Ok(Value::String(completion.content.clone()));
    };
    let value: Value = serde_json::from_str(strip_fence(&completion.content)).map_err(|e| {
        ToolError::Failed(format!(
            "the model's reply is not JSON ({e}): {}",
            crane_core::text::truncate(&crane_llm::printable(&completion.content), 200)
        ))
    })?;
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| ToolError::InvalidInput(format!("llm: responseSchema: {e}")))?;
    let problems: Vec<String> = validator
        .iter_errors(&value)
        .take(5)
        .map(|e| crane_core::text::truncate(&e.to_string(), 200))
        .collect();
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(ToolError::Failed(format!(
            "the model's reply does not fit responseSchema: {}",
            problems.join("; ")
        )))
    }
}

/// A provider error as the step sees it: 429/503 with Retry-After wait at least that long,
/// other 429/5xx, timeouts and connection failures are retried, the rest fail.
pub fn tool_error(e: LlmError) -> ToolError {
    match e {
        LlmError::Timeout(d) => ToolError::Timeout(d),
        e if e.is_retryable() => match e.retry_after() {
            Some(retry_after) => ToolError::RetryAfter {
                message: e.to_string(),
                retry_after,
            },
            None => ToolError::Transient(e.to_string()),
        },
        e => ToolError::Failed(e.to_string()),
    }
}

/// The provider of a model config, with its key (read from the worker's mounted Secret).
pub fn provider(
    config: &crane_core::model::ModelConfig,
    secrets: &crate::Secrets,
) -> Result<Provider, ToolError> {
    let api_key = config
        .api_key
        .as_ref()
        .map(|k| secrets.get(k))
        .transpose()?;
    Ok(Provider {
        base_url: config.base_url.clone(),
        model: config.model.clone(),
        api_key,
        timeout: Duration::from_secs(u64::from(config.timeout_seconds.max(1))),
    })
}

/// Usage in the run model's terms.
pub fn usage(u: Usage) -> crane_core::model::Usage {
    crane_core::model::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn completion(content: &str) -> Completion {
        Completion {
            content: content.into(),
            usage: Usage::default(),
            model: None,
            finish_reason: None,
        }
    }

    #[test]
    fn inputs_become_requests() {
        let i = LlmInput::parse(&json!({"prompt": "sum up", "system": "be brief", "model": "small", "maxTokens": 50, "temperature": 0.2}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            i.request.messages,
            vec![
                ("system".into(), "be brief".into()),
                ("user".into(), "sum up".into())
            ]
        );
        assert_eq!(
            (
                i.model.as_deref(),
                i.request.max_tokens,
                i.request.temperature
            ),
            (Some("small"), Some(50), Some(0.2))
        );
        assert!(
            LlmInput::parse(&json!({"prompt": "x", "responseSchema": {"type": "nope"}})).is_err()
        );
    }

    #[test]
    fn structured_replies_are_parsed_and_checked() {
        let schema =
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
        assert_eq!(
            output(&completion("```json\n{\"n\": 3}\n```"), Some(&schema)),
            Ok(json!({"n": 3}))
        );
        let wrong = output(&completion("{\"n\": \"three\"}"), Some(&schema));
        assert!(
            matches!(&wrong, Err(e @ ToolError::Failed(m)) if !e.is_retryable() && m.contains("does not fit")),
            "{wrong:?}"
        );
        assert!(matches!(
            output(&completion("no json"), Some(&schema)),
            Err(ToolError::Failed(_))
        ));
        assert_eq!(output(&completion("plain"), None), Ok(json!("plain")));
    }

    #[test]
    fn provider_errors_map_to_retry_or_failure() {
        let limited = tool_error(LlmError::Status {
            status: 429,
            body: "slow down".into(),
            retry_after: Some(Duration::from_secs(2)),
        });
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));
        assert!(
            tool_error(LlmError::Status {
                status: 500,
                body: String::new(),
                retry_after: None
            })
            .is_retryable()
        );
        assert!(
            !tool_error(LlmError::Status {
                status: 401,
                body: String::new(),
                retry_after: None
            })
            .is_retryable()
        );
        assert!(!tool_error(LlmError::Unparsable("x".into())).is_retryable());
    }
}
