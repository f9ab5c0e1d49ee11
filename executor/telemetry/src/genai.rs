//! Model-call spans in the OpenTelemetry GenAI semantic conventions: one `chat {model}`
//! client span per request with `gen_ai.operation.name`, `gen_ai.provider.name`,
//! `gen_ai.request.*`, `gen_ai.response.model`, `gen_ai.response.finish_reasons` and
//! `gen_ai.usage.{input,output}_tokens`. Prompt and completion text are recorded
//! (`gen_ai.input.messages`, `gen_ai.output.messages`) only when
//! [`ENV_CAPTURE_CONTENT`] is `true`: they may hold whatever users and tools put in a run.
//!
//! Tool spans (`execute_tool {tool}`) are opened by the toolbox itself (crane-core), which
//! needs nothing from here.

use opentelemetry::{Array, StringValue, Value};
use serde_json::json;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The variable (shared with OpenTelemetry's own GenAI instrumentations) that allows
/// message content on spans.
pub const ENV_CAPTURE_CONTENT: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

/// `gen_ai.provider.name` of every model Crane calls: they all speak OpenAI's
/// chat-completions protocol, which is what the attribute's `openai` value describes.
pub const PROVIDER: &str = "openai";

/// Whether spans may carry prompt and completion text.
pub fn capture_content() -> bool {
    crate::tracing_enabled()
        && std::env::var(ENV_CAPTURE_CONTENT).is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// What a chat request asks, for its span.
#[derive(Clone, Copy, Debug)]
pub struct ChatCall<'a> {
    pub model: &'a str,
    /// The endpoint's URL (only its host and port are recorded).
    pub url: &'a str,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    /// `(role, content)` pairs; recorded only with [`capture_content`].
    pub messages: &'a [(String, String)],
}

/// What came back, for its span.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChatResult<'a> {
    pub response_model: Option<&'a str>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub finish_reason: Option<&'a str>,
    /// The reply's text; recorded only with [`capture_content`].
    pub content: Option<&'a str>,
}

/// Opens the client span of one chat request (enter it around the request, and send the
/// request through [`crate::inject`] so the provider's spans join).
pub fn chat_span(call: &ChatCall<'_>) -> Span {
    let (address, port) = host_port(call.url);
    let span = tracing::info_span!(
        target: "crane_llm",
        "chat",
        otel.name = %format!("chat {}", call.model),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = PROVIDER,
        gen_ai.request.model = %call.model,
        gen_ai.request.max_tokens = call.max_tokens,
        gen_ai.request.temperature = call.temperature,
        server.address = address.as_deref(),
        server.port = port,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    if capture_content() {
        let messages: Vec<_> = call
            .messages
            .iter()
            .map(|(role, content)| {
                json!({"role": role, "parts": [{"type": "text", "content": content}]})
            })
            .collect();
        span.set_attribute("gen_ai.input.messages", json!(messages).to_string());
    }
    span
}

/// Records a successful reply on its chat span.
pub fn record_chat_result(span: &Span, result: &ChatResult<'_>) {
    if let Some(model) = result.response_model {
        span.record("gen_ai.response.model", model);
    }
    span.record("gen_ai.usage.input_tokens", result.input_tokens);
    span.record("gen_ai.usage.output_tokens", result.output_tokens);
    if !crate::tracing_enabled() {
        return;
    }
    let reason = result.finish_reason.unwrap_or("stop").to_owned();
    span.set_attribute(
        "gen_ai.response.finish_reasons",
        Value::Array(Array::String(vec![StringValue::from(reason.clone())])),
    );
    if let Some(content) = result.content.filter(|_| capture_content()) {
        let output = json!([{
            "role": "assistant",
            "parts": [{"type": "text", "content": content}],
            "finish_reason": reason,
        }]);
        span.set_attribute("gen_ai.output.messages", output.to_string());
    }
}

/// Records a failed call on its span: `error.type` (a short stable label) and the error
/// status with the message.
pub fn record_error(span: &Span, error_type: &str, message: &str) {
    span.record("error.type", error_type);
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", message);
}

/// `(host, port)` of a URL, for `server.address` and `server.port`.
fn host_port(url: &str) -> (Option<String>, Option<u16>) {
    match reqwest::Url::parse(url) {
        Ok(u) => (u.host_str().map(str::to_owned), u.port_or_known_default()),
        Err(_) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_named_by_host_and_port_only() {
        assert_eq!(
            host_port("https://user:secret@api.example.com/v1/chat/completions"),
            (Some("api.example.com".into()), Some(443))
        );
        assert_eq!(
            host_port("http://127.0.0.1:8080/v1"),
            (Some("127.0.0.1".into()), Some(8080))
        );
        assert_eq!(host_port("not a url"), (None, None));
    }
}
