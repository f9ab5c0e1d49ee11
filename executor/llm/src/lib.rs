//! One call to an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama,
//! LiteLLM, llama.cpp all speak it): the request (messages, optional JSON-schema structured
//! output, token and temperature limits), the reply's text, the provider's token `usage`, and
//! errors that say which part failed. The LLM planner and the `llm` tool both call through
//! here.
//!
//! - URL: `{base_url}/v1/chat/completions`; `base_url` may end in `/v1` or `/` or neither.
//! - `Authorization: Bearer <key>` when a key is given. The key never appears in a `Debug`
//!   output and is scrubbed from any reply text quoted in an error.
//! - Replies are read up to [`MAX_REPLY_BYTES`].
//! - 429 and 5xx answers, timeouts and connection failures are worth a retry (429/503 after
//!   their `Retry-After`); other statuses and unusable replies are not.
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::{Value, json};
use tracing::Instrument as _;

/// Largest reply read from the provider.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// How much of a reply an error quotes, in bytes.
const REPLY_IN_MESSAGE: usize = 200;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Where a model is served.
#[derive(Clone, PartialEq, Eq)]
pub struct Provider {
    /// Server root, with or without a trailing `/v1`.
    pub base_url: String,
    /// The model id sent in the request.
    pub model: String,
    /// Sent as `Authorization: Bearer ...` when set. `Debug` redacts it.
    pub api_key: Option<String>,
    /// For the whole call: connect, send, and read the reply.
    pub timeout: Duration,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What to ask.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// `(role, content)` pairs, e.g. `("system", ...)`, `("user", ...)`.
    pub messages: Vec<(String, String)>,
    /// Structured output: a name and a JSON schema the reply must follow.
    pub response_schema: Option<(String, Value)>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
}

impl ChatRequest {
    /// The request body for `model`.
    pub fn body(&self, model: &str) -> Value {
        let mut body = json!({
            "model": model,
            "messages": self
                .messages
                .iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect::<Vec<_>>(),
        });
        if let Some((name, schema)) = &self.response_schema {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": false}
            });
        }
        if let Some(n) = self.max_tokens {
            body["max_tokens"] = json!(n);
        }
        if let Some(t) = self.temperature {
            body["temperature"] = json!(t);
        }
        body
    }
}

/// Tokens a call used, as the provider counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The provider's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// `choices[0].message.content`.
    pub content: String,
    /// Zero when the provider did not say.
    pub usage: Usage,
    /// The model that answered (`model` in the reply), when given.
    pub model: Option<String>,
    pub finish_reason: Option<String>,
}

/// Why a call gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM did not answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("could not reach the LLM at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the LLM answered HTTP {status}: {body}")]
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("the LLM's reply is unusable: {0}")]
    Unparsable(String),
    #[error("the model refused: {0}")]
    Refused(String),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

impl LlmError {
    /// Worth another attempt: a busy, down or slow provider.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Unparsable(_) | Self::Refused(_) | Self::Client(_) => false,
        }
    }

    /// The least a retry must wait, when the provider said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Stable, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "llm_timeout",
            Self::Unreachable { .. } => "llm_unreachable",
            Self::Status { .. } => "llm_http_status",
            Self::Unparsable(_) => "llm_unparsable",
            Self::Refused(_) => "llm_refused",
            Self::Client(_) => "llm_client",
        }
    }
}

/// A client for calls: one per process, reused (connection pooling).
pub fn client() -> Result<reqwest::Client, LlmError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| LlmError::Client(error_chain(&e)))
}

/// Sends `request` to `provider` and reads the reply, in a GenAI `chat` span whose context
/// goes along as `traceparent`. `extra_headers` go along too (e.g. the run and step ids).
pub async fn chat(
    client: &reqwest::Client,
    provider: &Provider,
    request: &ChatRequest,
    extra_headers: &[(&str, String)],
) -> Result<Completion, LlmError> {
    let url = chat_completions_url(&provider.base_url);
    let redact = |text: String| match &provider.api_key {
        Some(key) if !key.is_empty() => text.replace(key.as_str(), "<redacted>"),
        _ => text,
    };
    let transport = |e: reqwest::Error| {
        if e.is_timeout() {
            LlmError::Timeout(provider.timeout)
        } else {
            LlmError::Unreachable {
                url: url.clone(),
                message: redact(error_chain(&e)),
            }
        }
    };
    let span = crane_telemetry::genai::chat_span(&crane_telemetry::genai::ChatCall {
        model: &provider.model,
        url: &url,
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        messages: &request.messages,
    });
    // Entered only while the request is built, so the injected traceparent names this span;
    // the awaited work below runs inside it through `instrument`.
    let mut builder = span.in_scope(|| {
        crane_telemetry::inject(
            client
                .post(&url)
                .timeout(provider.timeout)
                .json(&request.body(&provider.model)),
        )
    });
    if let Some(key) = &provider.api_key {
        builder = builder.bearer_auth(key);
    }
    for (name, value) in extra_headers {
        builder = builder.header(*name, value);
    }
    let work = async {
        let mut response = builder.send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(LlmError::Unparsable(format!(
                    "the reply is larger than {MAX_REPLY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(LlmError::Status {
                status: status.as_u16(),
                body: redact(quote_reply(&body)),
                retry_after,
            });
        }
        parse_completion(&body).map_err(|e| match e {
            LlmError::Unparsable(m) => LlmError::Unparsable(redact(m)),
            LlmError::Refused(m) => LlmError::Refused(redact(m)),
            other => other,
        })
    };
    // reqwest's timeout covers each request; this one also covers a reply that trickles.
    let result = tokio::time::timeout(provider.timeout, work)
        .instrument(span.clone())
        .await
        .unwrap_or(Err(LlmError::Timeout(provider.timeout)));
    match &result {
        Ok(c) => crane_telemetry::genai::record_chat_result(
            &span,
            &crane_telemetry::genai::ChatResult {
                response_model: c.model.as_deref(),
                input_tokens: c.usage.prompt_tokens,
                output_tokens: c.usage.completion_tokens,
                finish_reason: c.finish_reason.as_deref(),
                content: Some(&c.content),
            },
        ),
        Err(e) => crane_telemetry::genai::record_error(&span, e.metric_label(), &e.to_string()),
    }
    result
}

/// The text, usage and model of a chat-completions reply.
pub fn parse_completion(body: &[u8]) -> Result<Completion, LlmError> {
    let reply: Value = serde_json::from_slice(body).map_err(|e| {
        LlmError::Unparsable(format!(
            "the reply is not JSON ({e}): {}",
            quote_reply(body)
        ))
    })?;
    let message = reply.pointer("/choices/0/message");
    let Some(content) = message
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
    else {
        if let Some(refusal) = message
            .and_then(|m| m.get("refusal"))
            .and_then(Value::as_str)
        {
            return Err(LlmError::Refused(truncate(refusal, REPLY_IN_MESSAGE)));
        }
        return Err(LlmError::Unparsable(format!(
            "the reply has no choices[0].message.content: {}",
            quote_reply(body)
        )));
    };
    let count = |field: &str| {
        reply
            .pointer(&format!("/usage/{field}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Completion {
        content: content.to_owned(),
        usage: Usage {
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
        },
        model: reply
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_owned),
        finish_reason: reply
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// `{base_url}/v1/chat/completions`, whether or not `base_url` already ends in `/v1`.
pub fn chat_completions_url(base_url: &str) -> String {
    let base = base_url.trim().trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/chat/completions")
    } else {
        format!("{base}/v1/chat/completions")
    }
}

/// `{base_url}/v1/models`: a cheap call that says whether the endpoint and key work.
pub fn models_url(base_url: &str) -> String {
    chat_completions_url(base_url).replace("/chat/completions", "/models")
}

/// The JSON inside a Markdown code fence (```json ... ```), wherever the fence is; the text
/// itself when it has none.
pub fn strip_fence(content: &str) -> &str {
    let trimmed = content.trim();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return trimmed;
    }
    let Some(open) = trimmed.find("```") else {
        return trimmed;
    };
    let after = &trimmed[open + 3..];
    // Skip the info string ("json") up to the end of its line.
    let inner = match after.find('\n') {
        Some(newline) => &after[newline + 1..],
        None => after.trim_start_matches(|c: char| c.is_ascii_alphabetic()),
    };
    match inner.find("```") {
        Some(close) => inner[..close].trim(),
        None => inner.trim(),
    }
}

/// The start of a reply, as text safe to show on one line.
pub fn quote_reply(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = printable(&text);
    if text.trim().is_empty() {
        "(empty body)".into()
    } else {
        truncate(text.trim(), REPLY_IN_MESSAGE)
    }
}

/// Control characters (newlines included) as spaces, so a quoted reply stays one line.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An error and its sources, as one line ("error sending request: connection refused").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// `Retry-After` as seconds or an HTTP date, capped at ten minutes (a step's attempts and
/// the run's deadline bound the rest).
pub fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let raw = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(raw)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// At most `max` bytes of `s` on a character boundary, with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_or_without_v1() {
        for base in [
            "http://llm:8080",
            "http://llm:8080/",
            "http://llm:8080/v1",
            " http://llm:8080/v1// ",
        ] {
            assert_eq!(
                chat_completions_url(base),
                "http://llm:8080/v1/chat/completions",
                "{base}"
            );
            assert_eq!(models_url(base), "http://llm:8080/v1/models", "{base}");
        }
    }

    #[test]
    fn completions_carry_text_usage_and_model() {
        let body = json!({
            "model": "m-2025", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        });
        let c = parse_completion(body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.content, "hi");
        assert_eq!(
            c.usage,
            Usage {
                prompt_tokens: 12,
                completion_tokens: 3
            }
        );
        assert_eq!(
            (c.model.as_deref(), c.finish_reason.as_deref()),
            (Some("m-2025"), Some("stop"))
        );
        let refused = json!({"choices": [{"message": {"refusal": "no"}}]});
        assert_eq!(
            parse_completion(refused.to_string().as_bytes()),
            Err(LlmError::Refused("no".into()))
        );
        assert!(matches!(
            parse_completion(b"<html>"),
            Err(LlmError::Unparsable(_))
        ));
    }

    #[test]
    fn bodies_ask_for_structured_output_only_when_given_a_schema() {
        let mut r = ChatRequest {
            messages: vec![("user".into(), "hi".into())],
            ..ChatRequest::default()
        };
        assert_eq!(
            r.body("m"),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        );
        r.response_schema = Some(("answer".into(), json!({"type": "object"})));
        r.max_tokens = Some(100);
        r.temperature = Some(0.0);
        let b = r.body("m");
        assert_eq!(b["response_format"]["json_schema"]["name"], "answer");
        assert_eq!(
            (b["max_tokens"].clone(), b["temperature"].clone()),
            (json!(100), json!(0.0))
        );
    }

    #[test]
    fn fences_are_stripped() {
        assert_eq!(strip_fence("```json\n{\"a\":1}\n```"), "{\"a\":1}");
        assert_eq!(strip_fence("Here:\n```\n[1]\n```\nbye"), "[1]");
        assert_eq!(strip_fence(" {\"a\":1} "), "{\"a\":1}");
    }

    #[test]
    fn keys_never_show() {
        let p = Provider {
            base_url: "http://x".into(),
            model: "m".into(),
            api_key: Some("sk-secret".into()),
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{p:?}").contains("sk-secret"));
    }
}
