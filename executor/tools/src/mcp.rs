//! Tools of `MCPServer` objects, over MCP's Streamable HTTP transport: a small client
//! (JSON-RPC over POST, answers as JSON or as a server-sent-event stream, `Mcp-Session-Id`
//! sessions) that keeps one initialized session per server and initializes again when the
//! server drops it, plus the [`McpTool`] a worker runs. The operator uses the same client
//! to discover a server's tools.
//!
//! A step's output is the result's `structuredContent` when it has one, else the text of a
//! single text block, else the content array. `isError: true` fails the step with the text
//! the server returned (not retried); transport errors, timeouts and a lost session are
//! retried like any transient failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crane_core::text::truncate;
use crane_core::tool::{MAX_OUTPUT_BYTES, Tool, ToolContext, ToolError, ToolFuture};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::http::{HEADER_RUN, HEADER_STEP, ReadError, error_chain};

/// The protocol revision this client speaks (the server may answer with an older one).
pub const PROTOCOL_VERSION: &str = "2025-06-18";
const HEADER_SESSION: &str = "mcp-session-id";
const HEADER_PROTOCOL: &str = "mcp-protocol-version";
/// Most pages of `tools/list` followed; a server with more is cut there.
const MAX_LIST_PAGES: usize = 20;
/// Room for the JSON-RPC envelope and SSE framing around an output at its limit.
const MAX_ANSWER_BYTES: usize = MAX_OUTPUT_BYTES + 64 * 1024;

/// Why a call to an MCP server failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum McpError {
    #[error("cannot reach the MCP server: {0}")]
    Transport(String),
    #[error("the MCP server did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the MCP server dropped the session and a new one failed too")]
    SessionLost,
    #[error("the MCP server answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("the MCP server answered error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("the MCP server's answer is not valid MCP: {0}")]
    Protocol(String),
    #[error("the MCP server's answer is larger than {limit} bytes, the limit of a step's output")]
    TooLarge { limit: usize },
}

impl McpError {
    /// Worth another attempt: the server or the way to it may be back.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) | Self::Timeout(_) | Self::SessionLost => true,
            Self::Http { status, .. } => *status == 429 || *status >= 500,
            Self::Rpc { .. } | Self::Protocol(_) | Self::TooLarge { .. } => false,
        }
    }
}

impl From<McpError> for ToolError {
    fn from(e: McpError) -> Self {
        match e {
            McpError::Timeout(d) => ToolError::Timeout(d),
            e if e.is_retryable() => ToolError::Transient(e.to_string()),
            e => ToolError::Failed(e.to_string()),
        }
    }
}

/// A tool as `tools/list` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct McpToolInfo {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub annotations: Map<String, Value>,
}

#[derive(Clone, Debug)]
struct Session {
    id: Option<String>,
    protocol: String,
}

/// A client of one MCP server, with its session. Cheap to share; calls run concurrently on
/// the one session.
pub struct McpClient {
    http: reqwest::Client,
    url: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
    session: Mutex<Option<Session>>,
    next_id: AtomicU64,
    /// Sessions opened so far (the first included), so reuse is observable.
    initializations: AtomicU64,
}

impl McpClient {
    /// `headers` are sent on every request (resolved values, e.g. an API key).
    pub fn new(
        http: reqwest::Client,
        url: &str,
        headers: Vec<(String, String)>,
        timeout: Duration,
    ) -> Self {
        Self {
            http,
            url: url.to_owned(),
            headers,
            timeout,
            session: Mutex::new(None),
            next_id: AtomicU64::new(1),
            initializations: AtomicU64::new(0),
        }
    }

    /// How many sessions this client opened.
    pub fn initializations(&self) -> u64 {
        self.initializations.load(Ordering::Relaxed)
    }

    /// Every tool the server offers (following `nextCursor`).
    pub async fn list_tools(&self) -> Result<Vec<McpToolInfo>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let page = self.request("tools/list", params, &[]).await?;
            let list = page
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| McpError::Protocol("tools/list has no tools array".into()))?;
            for t in list {
                let Some(name) = t.get("name").and_then(Value::as_str) else {
                    continue;
                };
                tools.push(McpToolInfo {
                    name: name.to_owned(),
                    description: t
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    input_schema: t
                        .get("inputSchema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object"})),
                    annotations: t
                        .get("annotations")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default(),
                });
            }
            cursor = page
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        Ok(tools)
    }

    /// `tools/call`: the raw result object (`content`, `structuredContent`, `isError`).
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
        extra_headers: &[(&str, String)],
    ) -> Result<Value, McpError> {
        let params = json!({ "name": name, "arguments": arguments });
        self.request("tools/call", params, extra_headers).await
    }

    /// One JSON-RPC request on the session, opening it first when needed and once more
    /// when the server says it lost it.
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        extra_headers: &[(&str, String)],
    ) -> Result<Value, McpError> {
        let work = async {
            for retry in [false, true] {
                let session = self.session().await?;
                match self
                    .send(Some(&session), method, &params, extra_headers)
                    .await
                {
                    Err(McpError::SessionLost) => {
                        self.forget(&session).await;
                        if retry {
                            return Err(McpError::SessionLost);
                        }
                    }
                    other => return other,
                }
            }
            Err(McpError::SessionLost)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or(Err(McpError::Timeout(self.timeout)))
    }

    async fn session(&self) -> Result<Session, McpError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let s = self.initialize().await?;
        *slot = Some(s.clone());
        Ok(s)
    }

    /// Drops `stale` unless another call already replaced it.
    async fn forget(&self, stale: &Session) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().map(|s| &s.id) == Some(&stale.id) {
            *slot = None;
        }
    }

    async fn initialize(&self) -> Result<Session, McpError> {
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "crane", "version": env!("CARGO_PKG_VERSION")},
        });
        let (result, id) = self.post(None, Some("initialize"), &params, &[]).await?;
        let protocol = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(PROTOCOL_VERSION)
            .to_owned();
        let session = Session { id, protocol };
        self.notify(&session, "notifications/initialized").await?;
        self.initializations.fetch_add(1, Ordering::Relaxed);
        Ok(session)
    }

    async fn notify(&self, session: &Session, method: &str) -> Result<(), McpError> {
        let body = json!({"jsonrpc": "2.0", "method": method});
        let response = self
            .builder(Some(session), &[])
            .json(&body)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(http_error(response).await)
        }
    }

    async fn send(
        &self,
        session: Option<&Session>,
        method: &str,
        params: &Value,
        extra_headers: &[(&str, String)],
    ) -> Result<Value, McpError> {
        self.post(session, Some(method), params, extra_headers)
            .await
            .map(|(result, _)| result)
    }

    fn builder(
        &self,
        session: Option<&Session>,
        extra_headers: &[(&str, String)],
    ) -> reqwest::RequestBuilder {
        // The trace context of the calling step (its tool span), so the server's spans join
        // the run's trace.
        let mut request = crane_telemetry::inject(
            self.http
                .post(&self.url)
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "application/json, text/event-stream"),
        );
        if let Some(s) = session {
            if let Some(id) = &s.id {
                request = request.header(HEADER_SESSION, id);
            }
            request = request.header(HEADER_PROTOCOL, &s.protocol);
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        for (name, value) in extra_headers {
            request = request.header(*name, value);
        }
        request
    }

    /// POSTs one request and reads its answer; returns the result and the session id the
    /// server gave (on `initialize`).
    async fn post(
        &self,
        session: Option<&Session>,
        method: Option<&str>,
        params: &Value,
        extra_headers: &[(&str, String)],
    ) -> Result<(Value, Option<String>), McpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = self
            .builder(session, extra_headers)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = response.status().as_u16();
        // The spec answers an unknown session with 404; servers built on older SDKs answer
        // 400 "No valid session ID". Either way: a new session, then the call again.
        if session.is_some_and(|s| s.id.is_some()) && (status == 404 || status == 400) {
            let err = http_error(response).await;
            if status == 404 || err.to_string().to_lowercase().contains("session") {
                return Err(McpError::SessionLost);
            }
            return Err(err);
        }
        if !(200..300).contains(&status) {
            return Err(http_error(response).await);
        }
        let session_id = response
            .headers()
            .get(HEADER_SESSION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let is_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        let message = if is_stream {
            read_event_stream(response, id).await?
        } else {
            let bytes = crate::http::read_bounded(response, MAX_ANSWER_BYTES)
                .await
                .map_err(read_error)?;
            serde_json::from_slice(&bytes)
                .map_err(|e| McpError::Protocol(format!("the answer is not JSON: {e}")))?
        };
        Ok((rpc_result(message)?, session_id))
    }
}

fn transport(e: &reqwest::Error) -> McpError {
    McpError::Transport(error_chain(e))
}

fn read_error(e: ReadError) -> McpError {
    match e {
        ReadError::TooLarge { limit } => McpError::TooLarge { limit },
        ReadError::Transport(e) => transport(&e),
    }
}

async fn http_error(response: reqwest::Response) -> McpError {
    let status = response.status().as_u16();
    let body = crate::http::read_bounded(response, 4 * 1024)
        .await
        .unwrap_or_default();
    McpError::Http {
        status,
        body: truncate(String::from_utf8_lossy(&body).trim(), 200),
    }
}

/// The result of a JSON-RPC response, or its error.
fn rpc_result(message: Value) -> Result<Value, McpError> {
    if let Some(error) = message.get("error") {
        return Err(McpError::Rpc {
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: truncate(
                error.get("message").and_then(Value::as_str).unwrap_or(""),
                300,
            ),
        });
    }
    message
        .get("result")
        .cloned()
        .ok_or_else(|| McpError::Protocol("a response without result or error".into()))
}

/// Reads server-sent events until the response to request `id` (skipping the server's
/// notifications and requests, e.g. progress), bounded in size.
async fn read_event_stream(mut response: reqwest::Response, id: u64) -> Result<Value, McpError> {
    let mut buffer: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    loop {
        while let Some(end) = event_end(&buffer) {
            let event: Vec<u8> = buffer.drain(..end.1).collect();
            if let Some(message) = event_data(&event[..end.0])
                && message.get("id").and_then(Value::as_u64) == Some(id)
            {
                return Ok(message);
            }
        }
        let Some(chunk) = response.chunk().await.map_err(|e| transport(&e))? else {
            return Err(McpError::Protocol(
                "the event stream ended without the response".into(),
            ));
        };
        seen += chunk.len();
        if seen > MAX_ANSWER_BYTES {
            return Err(McpError::TooLarge {
                limit: MAX_OUTPUT_BYTES,
            });
        }
        buffer.extend_from_slice(&chunk);
    }
}

/// The end of the first complete event in `buffer`: (end of its text, end with separator).
fn event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The JSON in an event's `data:` lines, if any.
fn event_data(event: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(event);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

/// The output of a `tools/call` result, or the step's failure when the tool reported one.
pub fn output_of(result: &Value) -> Result<Value, ToolError> {
    let content = result
        .get("content")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let texts: Vec<&str> = content
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|c| c.get("text").and_then(Value::as_str))
        .collect();
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        let text = if texts.is_empty() {
            "the tool reported an error without a message".to_owned()
        } else {
            texts.join("\n")
        };
        return Err(ToolError::Failed(truncate(&text, 1000)));
    }
    if let Some(structured) = result.get("structuredContent").filter(|v| !v.is_null()) {
        return Ok(structured.clone());
    }
    match content.as_array().map(Vec::as_slice) {
        Some([single])
            if texts.len() == 1 && single.get("type").and_then(Value::as_str) == Some("text") =>
        {
            Ok(Value::String(texts[0].to_owned()))
        }
        _ => Ok(content),
    }
}

/// One tool of an MCP server, run through the worker's shared client of that server.
pub struct McpTool {
    pub client: Arc<McpClient>,
    /// The tool's name on the server.
    pub tool: String,
}

impl Tool for McpTool {
    fn execute<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let headers = [
                (HEADER_RUN, ctx.run_id.clone()),
                (HEADER_STEP, ctx.step_id.to_string()),
            ];
            let result = self.client.call_tool(&self.tool, input, &headers).await?;
            output_of(&result)
        })
    }

    fn calls_out(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_prefer_structured_content_then_a_single_text() {
        let structured =
            json!({"content": [{"type": "text", "text": "{}"}], "structuredContent": {"t": 1}});
        assert_eq!(output_of(&structured), Ok(json!({"t": 1})));
        let text = json!({"content": [{"type": "text", "text": "The sum of 2 and 3 is 5."}]});
        assert_eq!(output_of(&text), Ok(json!("The sum of 2 and 3 is 5.")));
        let mixed =
            json!({"content": [{"type": "text", "text": "a"}, {"type": "image", "data": "x"}]});
        assert_eq!(output_of(&mixed), Ok(mixed["content"].clone()));
        let error =
            json!({"content": [{"type": "text", "text": "Tool nope not found"}], "isError": true});
        assert_eq!(
            output_of(&error),
            Err(ToolError::Failed("Tool nope not found".into()))
        );
        assert_eq!(output_of(&json!({})), Ok(json!([])));
    }

    #[test]
    fn events_are_split_on_blank_lines_and_data_lines_joined() {
        let stream = b"event: message\nid: 1\ndata: {\"a\":\ndata: 1}\n\nretry: 5\r\n\r\n";
        let (text_end, end) = event_end(stream).unwrap_or_default();
        assert_eq!(event_data(&stream[..text_end]), Some(json!({"a": 1})));
        let rest = &stream[end..];
        let (t, _) = event_end(rest).unwrap_or_default();
        assert_eq!(event_data(&rest[..t]), None);
        assert_eq!(event_end(b"data: {}"), None);
    }

    #[test]
    fn what_is_worth_a_retry() {
        assert!(McpError::SessionLost.is_retryable());
        assert!(
            McpError::Http {
                status: 503,
                body: String::new()
            }
            .is_retryable()
        );
        assert!(
            !McpError::Http {
                status: 401,
                body: String::new()
            }
            .is_retryable()
        );
        assert!(
            !McpError::Rpc {
                code: -32602,
                message: "bad".into()
            }
            .is_retryable()
        );
        assert!(matches!(
            ToolError::from(McpError::Timeout(Duration::from_secs(3))),
            ToolError::Timeout(_)
        ));
    }
}
