//! HTTP and MCP tools against real servers: an HTTP service served from this test (JSON,
//! text, 503 with Retry-After, 404, slow, oversized, redirects, headers from a Secret) and the
//! MCP reference server `@modelcontextprotocol/server-everything` in Streamable HTTP mode
//! (discovery, calls, structured content, isError, session reuse, the server killed and back,
//! a call past its timeout).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use crane_core::tool::{Binding, Connectors, Header, SecretKey, ToolContext, ToolError};
use crane_testkit::McpEverything;
use crane_tools::{Remote, Secrets};
use serde_json::{Value, json};

/// What the HTTP service saw: headers and query of the last request.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(HeaderMap, String)>>>);

async fn service() -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route(
            "/weather",
            get(
                |State(seen): State<Seen>, headers: HeaderMap, uri: axum::http::Uri| async move {
                    seen.0
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((headers, uri.query().unwrap_or("").to_owned()));
                    json_response(json!({"temperature": 21}))
                },
            ),
        )
        .route(
            "/echo",
            post(
                |body: String| async move { ([(header::CONTENT_TYPE, "application/json")], body) },
            ),
        )
        .route("/text", get(|| async { "sunny" }))
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "2")],
                    "try later",
                )
            }),
        )
        .route("/bad-gateway", get(|| async { StatusCode::BAD_GATEWAY }))
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "no such city") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/huge", get(|| async { "x".repeat(2 << 20) }))
        .route(
            "/redirect",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "http://169.254.169.254/")],
                )
            }),
        )
        .route(
            "/auth",
            get(|headers: HeaderMap, uri: axum::http::Uri| async move {
                let token = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if token == "Bearer s3cr3t" {
                    json_response(json!({"ok": true, "query": uri.query()}))
                } else {
                    Response::builder()
                        .status(401)
                        .body(format!("bad token {token}").into())
                        .unwrap_or_default()
                }
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

fn json_response(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn ctx() -> ToolContext {
    ToolContext {
        namespace: "team-a".into(),
        run_id: "run-1".into(),
        step_id: 7,
        attempt: 1,
    }
}

fn secrets() -> (tempfile::TempDir, Secrets) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(dir.path().join("weather")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("weather/token"), "Bearer s3cr3t\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let s = Secrets::new(dir.path());
    (dir, s)
}

fn http(url: String, method: &str, headers: Vec<Header>, timeout_seconds: u32) -> Binding {
    Binding::Http {
        url,
        method: method.into(),
        headers,
        timeout_seconds,
    }
}

async fn call(remote: &Remote, binding: &Binding, input: Value) -> Result<Value, ToolError> {
    let runner = remote.runner(binding)?;
    runner.execute(&ctx(), input).await
}

#[tokio::test]
async fn http_tools_answer_json_or_text_and_send_inputs_encoded() {
    let (base, seen) = service().await;
    let (_dir, secrets) = secrets();
    let remote = Remote::new(secrets).unwrap_or_else(|e| panic!("{e}"));

    let weather = http(format!("{base}/weather"), "GET", vec![], 5);
    let out = call(
        &remote,
        &weather,
        json!({"city": "São Paulo/../admin?x=1#f", "days": 3}),
    )
    .await;
    assert_eq!(out, Ok(json!({"temperature": 21})));
    let (headers, query) = seen
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        query, "city=S%C3%A3o+Paulo%2F..%2Fadmin%3Fx%3D1%23f&days=3",
        "inputs stay in the query string"
    );
    assert_eq!(
        headers.get("x-crane-run").and_then(|v| v.to_str().ok()),
        Some("run-1")
    );
    assert_eq!(
        headers.get("x-crane-step").and_then(|v| v.to_str().ok()),
        Some("7")
    );

    let echo = http(format!("{base}/echo"), "POST", vec![], 5);
    assert_eq!(
        call(&remote, &echo, json!({"a": [1, 2]})).await,
        Ok(json!({"a": [1, 2]}))
    );
    let text = http(format!("{base}/text"), "GET", vec![], 5);
    assert_eq!(call(&remote, &text, json!({})).await, Ok(json!("sunny")));
}

#[tokio::test]
async fn http_errors_are_retryable_or_not_as_their_status_says() {
    let (base, _) = service().await;
    let (_dir, secrets) = secrets();
    let remote = Remote::new(secrets).unwrap_or_else(|e| panic!("{e}"));
    let at = |path: &str, timeout: u32| http(format!("{base}{path}"), "GET", vec![], timeout);

    let busy = call(&remote, &at("/busy", 5), json!({})).await;
    match busy {
        Err(ToolError::RetryAfter {
            retry_after,
            message,
        }) => {
            assert_eq!(retry_after, Duration::from_secs(2));
            assert_eq!(message, "HTTP 503 Service Unavailable: try later");
        }
        other => panic!("503 with Retry-After: {other:?}"),
    }
    let gateway = call(&remote, &at("/bad-gateway", 5), json!({})).await;
    assert!(
        matches!(&gateway, Err(e @ ToolError::Transient(_)) if e.is_retryable()),
        "{gateway:?}"
    );
    assert_eq!(
        call(&remote, &at("/missing", 5), json!({})).await,
        Err(ToolError::Failed("HTTP 404 Not Found: no such city".into()))
    );
    let slow = call(&remote, &at("/slow", 1), json!({})).await;
    assert_eq!(slow, Err(ToolError::Timeout(Duration::from_secs(1))));
    let huge = call(&remote, &at("/huge", 5), json!({})).await;
    assert!(
        matches!(&huge, Err(ToolError::Failed(m)) if m.contains("larger than 1048576 bytes")),
        "{huge:?}"
    );
    let redirect = call(&remote, &at("/redirect", 5), json!({})).await;
    assert!(
        matches!(&redirect, Err(ToolError::Failed(m)) if m.starts_with("HTTP 302")),
        "redirects are not followed: {redirect:?}"
    );
    let nobody = http("http://127.0.0.1:9/none".into(), "GET", vec![], 2);
    let down = call(&remote, &nobody, json!({})).await;
    assert!(
        matches!(&down, Err(ToolError::Transient(m)) if m.starts_with("cannot reach 127.0.0.1")),
        "{down:?}"
    );
}

#[tokio::test]
async fn header_secrets_are_sent_and_never_reported() {
    let (base, _) = service().await;
    let (_dir, secrets) = secrets();
    let remote = Remote::new(secrets).unwrap_or_else(|e| panic!("{e}"));
    let from_secret = |name: &str, key: &str| Header {
        name: "Authorization".into(),
        value: None,
        secret: Some(SecretKey {
            name: name.into(),
            key: key.into(),
        }),
    };
    let auth = http(
        format!("{base}/auth"),
        "GET",
        vec![from_secret("weather", "token")],
        5,
    );
    assert_eq!(
        call(&remote, &auth, json!({"q": "x"})).await,
        Ok(json!({"ok": true, "query": "q=x"}))
    );
    let missing = http(
        format!("{base}/auth"),
        "GET",
        vec![from_secret("weather", "nope")],
        5,
    );
    let err = call(&remote, &missing, json!({}))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("not available to this worker") && !err.contains("s3cr3t"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_are_discovered_called_and_sessions_reused() {
    let mut server = McpEverything::start().unwrap_or_else(|e| panic!("{e}"));
    let (_dir, secrets) = secrets();
    let remote = Remote::new(secrets).unwrap_or_else(|e| panic!("{e}"));
    let client = remote.mcp_client("everything", &server.url(), vec![], 10);

    let tools = client.list_tools().await.unwrap_or_else(|e| panic!("{e}"));
    let sum = tools
        .iter()
        .find(|t| t.name == "get-sum")
        .unwrap_or_else(|| panic!("no get-sum in {tools:?}"));
    assert_eq!(sum.description, "Returns the sum of two numbers");
    assert_eq!(sum.input_schema["properties"]["a"]["type"], "number");
    assert_eq!(sum.annotations.get("readOnlyHint"), Some(&json!(true)));

    let url = server.url();
    let bind = |tool: &str, timeout_seconds: u32| Binding::Mcp {
        server: "everything".into(),
        url: url.clone(),
        headers: vec![],
        timeout_seconds,
        tool: tool.into(),
    };
    assert_eq!(
        call(&remote, &bind("get-sum", 10), json!({"a": 2, "b": 3})).await,
        Ok(json!("The sum of 2 and 3 is 5."))
    );
    let weather = call(
        &remote,
        &bind("get-structured-content", 10),
        json!({"location": "New York"}),
    )
    .await;
    assert!(
        weather
            .as_ref()
            .is_ok_and(|w| w.get("temperature").is_some()),
        "structuredContent wins: {weather:?}"
    );
    let bad = call(&remote, &bind("get-sum", 10), json!({"a": "x"})).await;
    assert!(
        matches!(&bad, Err(e @ ToolError::Failed(m)) if !e.is_retryable() && m.contains("expected number")),
        "isError fails the step: {bad:?}"
    );
    assert_eq!(
        client.initializations(),
        1,
        "one session for discovery and every call"
    );

    // The server dies mid-run: calls fail as retryable; once it is back, a new session.
    server.kill();
    let down = call(&remote, &bind("get-sum", 10), json!({"a": 1, "b": 1})).await;
    assert!(matches!(&down, Err(e) if e.is_retryable()), "{down:?}");
    server.restart().unwrap_or_else(|e| panic!("{e}"));
    // As the engine would: a retryable failure (a connection the restart reset) is tried
    // again; within a few attempts the call succeeds on a new session.
    let mut back = Err(ToolError::Transient("not tried".into()));
    for _ in 0..5 {
        back = call(&remote, &bind("get-sum", 10), json!({"a": 1, "b": 1})).await;
        if !matches!(&back, Err(e) if e.is_retryable()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(back, Ok(json!("The sum of 1 and 1 is 2.")));
    assert_eq!(
        client.initializations(),
        2,
        "the lost session was replaced once"
    );

    let slow = call(
        &remote,
        &bind("trigger-long-running-operation", 1),
        json!({"duration": 5, "steps": 5}),
    )
    .await;
    assert_eq!(slow, Err(ToolError::Timeout(Duration::from_secs(1))));
}
