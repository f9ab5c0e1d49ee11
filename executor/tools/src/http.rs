//! Tools defined by `Tool` objects: one HTTP endpoint each. The input goes into the query
//! string (GET) or a JSON body (everything else), never into the host or the path, so a plan
//! cannot make a worker call an address nobody configured. The answer is the response body as
//! JSON when it parses, else as text, at most [`MAX_OUTPUT_BYTES`]. 429, 502, 503, 504,
//! connection errors and timeouts are worth a retry (429/503 after their `Retry-After`); any
//! other error status fails the step with the status and the start of the body.

use std::sync::Arc;
use std::time::Duration;

use crane_core::text::truncate;
use crane_core::tool::{Header, MAX_OUTPUT_BYTES, Tool, ToolContext, ToolError, ToolFuture};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

use crate::secrets::Secrets;

/// Request headers that carry the run and step ids, for the called service's own logs.
pub const HEADER_RUN: &str = "X-Crane-Run";
pub const HEADER_STEP: &str = "X-Crane-Step";
/// Most of an error body quoted in a step's error.
const BODY_IN_ERROR: usize = 200;

/// One HTTP tool.
pub struct HttpTool {
    client: reqwest::Client,
    secrets: Arc<Secrets>,
    url: String,
    method: Method,
    headers: Vec<Header>,
    timeout: Duration,
}

impl HttpTool {
    pub fn new(
        client: reqwest::Client,
        secrets: Arc<Secrets>,
        url: &str,
        method: &str,
        headers: Vec<Header>,
        timeout_seconds: u32,
    ) -> Result<Self, ToolError> {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| {
            ToolError::Failed(format!(
                "HTTP method {:?} is not valid",
                truncate(method, 20)
            ))
        })?;
        Ok(Self {
            client,
            secrets,
            url: url.to_owned(),
            method,
            headers,
            timeout: Duration::from_secs(u64::from(timeout_seconds.max(1))),
        })
    }

    async fn call(&self, ctx: &ToolContext, input: Value) -> Result<Value, ToolError> {
        // `traceparent` of the step's tool span: the called service's spans join the run's
        // trace.
        let mut request =
            crane_telemetry::inject(self.client.request(self.method.clone(), &self.url))
                .timeout(self.timeout)
                .header(
                    reqwest::header::ACCEPT,
                    "application/json, text/plain;q=0.9, */*;q=0.1",
                )
                .header(HEADER_RUN, &ctx.run_id)
                .header(HEADER_STEP, ctx.step_id.to_string());
        for (name, value) in self.secrets.resolve(&self.headers)? {
            request = request.header(name, value);
        }
        request = if self.method == Method::GET {
            request.query(&query_pairs(&input))
        } else {
            request.json(&input)
        };
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if status.is_success() {
            let body = read_bounded(response, MAX_OUTPUT_BYTES)
                .await
                .map_err(|e| self.read_error(e))?;
            return Ok(body_value(body));
        }
        let retry_after = crane_llm::retry_after(&response);
        let body = read_bounded(response, 4 * 1024).await.unwrap_or_default();
        let message = format!(
            "HTTP {status}{}",
            match String::from_utf8_lossy(&body).trim() {
                "" => String::new(),
                text => format!(": {}", truncate(text, BODY_IN_ERROR)),
            }
        );
        Err(match (status, retry_after) {
            (
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE,
                Some(retry_after),
            ) => ToolError::RetryAfter {
                message,
                retry_after,
            },
            (
                StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT,
                _,
            ) => ToolError::Transient(message),
            _ => ToolError::Failed(message),
        })
    }

    /// A failure before any answer. reqwest's message names the URL, which may carry
    /// credentials in its user part: only the host is shown.
    fn transport_error(&self, e: &reqwest::Error) -> ToolError {
        if e.is_timeout() {
            return ToolError::Timeout(self.timeout);
        }
        let host = reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let cause = error_chain(e);
        ToolError::Transient(format!("cannot reach {host}: {cause}"))
    }

    fn read_error(&self, e: ReadError) -> ToolError {
        match e {
            ReadError::TooLarge { limit } => ToolError::Failed(format!(
                "the response is larger than {limit} bytes, the limit of a step's output"
            )),
            ReadError::Transport(e) if e.is_timeout() => ToolError::Timeout(self.timeout),
            ReadError::Transport(e) => {
                ToolError::Transient(format!("the response broke off: {}", error_chain(&e)))
            }
        }
    }
}

impl Tool for HttpTool {
    fn execute<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(self.call(ctx, input))
    }

    fn calls_out(&self) -> bool {
        true
    }
}

/// The input's fields as query parameters: strings as they are, other scalars as JSON
/// text, arrays and objects as compact JSON; `null` leaves the parameter out.
pub fn query_pairs(input: &Value) -> Vec<(String, String)> {
    input
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// A body as JSON when it parses, else as text (lossy UTF-8).
pub fn body_value(body: Vec<u8>) -> Value {
    serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    TooLarge { limit: usize },
    Transport(reqwest::Error),
}

/// The body, refused as soon as it passes `limit` bytes (so a huge answer never sits in
/// memory whole).
pub async fn read_bounded(mut response: Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes, without the URL reqwest puts in its own message.
pub fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        parts.push(if e.is_connect() {
            "connection failed".into()
        } else {
            "request failed".into()
        });
    }
    truncate(&parts.join(": "), 300)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_become_encoded_query_parameters() {
        let pairs = query_pairs(&json!({
            "city": "São Paulo & co/../x?y=1#z",
            "days": 3,
            "metric": true,
            "tags": ["a", "b"],
            "skip": null
        }));
        assert_eq!(
            pairs,
            vec![
                ("city".to_owned(), "São Paulo & co/../x?y=1#z".to_owned()),
                ("days".to_owned(), "3".to_owned()),
                ("metric".to_owned(), "true".to_owned()),
                ("tags".to_owned(), "[\"a\",\"b\"]".to_owned()),
            ]
        );
    }

    #[test]
    fn bodies_are_json_when_they_parse() {
        assert_eq!(body_value(b"{\"t\": 21}".to_vec()), json!({"t": 21}));
        assert_eq!(body_value(b"sunny".to_vec()), json!("sunny"));
        assert_eq!(body_value(vec![0xff, b'a']), json!("\u{fffd}a"));
    }
}
