//! A fake OpenAI-compatible provider, the one outside service the tests imitate, at its HTTP
//! boundary. `POST /v1/chat/completions` answers with token `usage` and, when asked for
//! structured output, JSON that fits the schema; `GET /v1/models` lists the models. What it
//! answers is steered by directives in the last user message, so a test (or an AgentRun in
//! the end-to-end suites) states its scenario where it is visible:
//!
//! - `[status 429 retry-after 1 times 2]`: the first 2 such requests get 429 with
//!   `Retry-After: 1`, the next ones the normal answer (any status; `times` defaults to all).
//! - `[sleep 1500]`: answer after 1500 ms. `[malformed]`: a body that is not JSON.
//! - `[reply TEXT]`: reply exactly TEXT (up to the closing `]`).
//! - `[plan TOOL JSON]`: for planner requests, a one-step plan calling TOOL with input JSON.
//! - otherwise the reply is `echo: <the message>` (or an instance of the response schema).
//!
//! Usage is counted in words: prompt tokens = words of every message, completion tokens =
//! words of the reply. Every request is recorded; `/__stats` reports counts and the largest
//! number of requests in flight at once, per model (what the rate-governor tests assert);
//! `/__requests` the recorded bodies (without headers, so keys never echo); `/__reset` clears.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// Recorded state, shared by the handlers.
#[derive(Default)]
struct Book {
    requests: Vec<Value>,
    /// Authorization headers seen (for key checks), in request order.
    keys: Vec<Option<String>>,
    in_flight: HashMap<String, u64>,
    max_in_flight: HashMap<String, u64>,
    count: HashMap<String, u64>,
    /// Per directive text: how many times it was answered with its status.
    served: HashMap<String, u64>,
}

/// The provider's state; clone to share.
#[derive(Clone, Default)]
pub struct FakeLlm(Arc<Mutex<Book>>);

impl FakeLlm {
    /// The router, to serve on any listener.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/v1/models", get(models))
            .route("/__stats", get(stats))
            .route("/__requests", get(requests))
            .route("/__reset", post(reset))
            .with_state(self.clone())
    }

    /// Serves on `127.0.0.1:0` in the current runtime; returns the base URL.
    pub async fn start() -> (Self, String) {
        let fake = Self::default();
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("fake LLM: cannot bind: {e}"),
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let app = fake.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (fake, format!("http://{addr}"))
    }

    /// Requests answered or refused, per model.
    pub fn count(&self, model: &str) -> u64 {
        self.book().count.get(model).copied().unwrap_or(0)
    }

    /// The most requests for `model` in flight at once.
    pub fn max_in_flight(&self, model: &str) -> u64 {
        self.book().max_in_flight.get(model).copied().unwrap_or(0)
    }

    /// Every request body received.
    pub fn requests(&self) -> Vec<Value> {
        self.book().requests.clone()
    }

    /// The Authorization header of every request.
    pub fn keys(&self) -> Vec<Option<String>> {
        self.book().keys.clone()
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn models() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [{"id": "fake-small", "object": "model"}, {"id": "fake-large", "object": "model"}]}),
    )
}

async fn stats(State(fake): State<FakeLlm>) -> Response {
    let book = fake.book();
    json_response(
        StatusCode::OK,
        &json!({"count": book.count, "maxInFlight": book.max_in_flight}),
    )
}

async fn requests(State(fake): State<FakeLlm>) -> Response {
    json_response(StatusCode::OK, &Value::Array(fake.book().requests.clone()))
}

async fn reset(State(fake): State<FakeLlm>) -> Response {
    *fake.book() = Book::default();
    StatusCode::NO_CONTENT.into_response()
}

async fn complete(State(fake): State<FakeLlm>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"message": "the body is not JSON"}}),
        );
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    {
        let mut book = fake.book();
        book.requests.push(request.clone());
        book.keys.push(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
        *book.count.entry(model.clone()).or_default() += 1;
        let now = {
            let n = book.in_flight.entry(model.clone()).or_default();
            *n += 1;
            *n
        };
        let max = book.max_in_flight.entry(model.clone()).or_default();
        *max = (*max).max(now);
    }
    let answer = answer(&fake, &request).await;
    if let Some(n) = fake.book().in_flight.get_mut(&model) {
        *n = n.saturating_sub(1);
    }
    answer
}

async fn answer(fake: &FakeLlm, request: &Value) -> Response {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let text_of = |m: &Value| {
        m.get("content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(text_of)
        .unwrap_or_default();
    if let Some(ms) = directive(&user, "sleep").and_then(|d| d.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(d) = directive(&user, "status") {
        let words: Vec<&str> = d.split_whitespace().collect();
        let status = words
            .first()
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(500);
        let times = words
            .windows(2)
            .find(|w| w[0] == "times")
            .and_then(|w| w[1].parse::<u64>().ok());
        let served = {
            let mut book = fake.book();
            let n = book.served.entry(d.clone()).or_default();
            *n += 1;
            *n
        };
        if times.is_none_or(|t| served <= t) {
            let mut response = json_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &json!({"error": {"message": format!("fake provider says {status}")}}),
            );
            if let Some(secs) = words
                .windows(2)
                .find(|w| w[0] == "retry-after")
                .map(|w| w[1].to_owned())
                && let Ok(v) = secs.parse()
            {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return response;
        }
    }
    if user.contains("[malformed]") {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"choices\": [",
        )
            .into_response();
    }
    let schema = request.pointer("/response_format/json_schema/schema");
    let schema_name = request
        .pointer("/response_format/json_schema/name")
        .and_then(Value::as_str);
    let content = if let Some(reply) = directive(&user, "reply") {
        reply
    } else if schema_name == Some("crane_plan") {
        match directive(&user, "plan") {
            Some(d) => {
                let (tool, input) = d.split_once(' ').unwrap_or((d.as_str(), "{}"));
                let input: Value = serde_json::from_str(input).unwrap_or(json!({}));
                json!({"steps": [{"id": 1, "tool": tool, "input": input, "reasoning": "asked for", "dependsOn": []}]}).to_string()
            }
            None => json!({"steps": []}).to_string(),
        }
    } else if let Some(schema) = schema {
        instance(schema, &user).to_string()
    } else {
        format!("echo: {user}")
    };
    let words = |s: &str| s.split_whitespace().count() as u64;
    let prompt_tokens: u64 = messages.iter().map(|m| words(&text_of(m))).sum();
    let completion_tokens = words(&content);
    json_response(
        StatusCode::OK,
        &json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": request.get("model").cloned().unwrap_or(Value::Null),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        }),
    )
}

/// The text of `[name ...]` in `text`, without the name.
fn directive(text: &str, name: &str) -> Option<String> {
    let open = format!("[{name} ");
    let start = text.find(&open)? + open.len();
    let rest = &text[start..];
    // A JSON input may contain brackets: take up to the last ']' of the directive's line.
    let line_end = rest.find('\n').unwrap_or(rest.len());
    let end = rest[..line_end].rfind(']')?;
    Some(rest[..end].trim().to_owned())
}

/// A small value that fits `schema`: required properties filled, strings from the prompt.
fn instance(schema: &Value, user: &str) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let props = schema.get("properties").and_then(Value::as_object);
            let mut out = serde_json::Map::new();
            for (name, sub) in props.into_iter().flatten() {
                out.insert(name.clone(), instance(sub, user));
            }
            Value::Object(out)
        }
        Some("array") => Value::Array(vec![
            schema
                .get("items")
                .map_or(Value::Null, |i| instance(i, user)),
        ]),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("null") => Value::Null,
        _ => json!(user.split_whitespace().next().unwrap_or("x")),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
