//! The router without a cluster: every route is documented, and what must be refused is
//! refused before any call to the apiserver (the server's base configuration points at a
//! port nobody listens on, so a call that slipped through would answer 502, not 4xx).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use crane_server::{AppState, Config, auth::Auth};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

fn state() -> Arc<AppState> {
    let base = kube::Config::new("https://127.0.0.1:1".parse().expect("uri"));
    let mut config = Config::new();
    config.max_body_bytes = 64 * 1024;
    Arc::new(AppState::new(Auth::new(base), None, None, config))
}

async fn call(
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Body,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = crane_server::app(state())
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        headers,
    )
}

#[test]
fn every_route_is_in_the_openapi_document_and_nothing_else() {
    let doc = crane_server::openapi::document();
    let paths = doc["paths"].as_object().expect("paths");
    let routes = crane_server::routes();
    for (method, path) in routes.served() {
        let m = method.as_str().to_lowercase();
        assert!(
            paths.get(*path).and_then(|p| p.get(&m)).is_some(),
            "{method} {path} is served but not in the OpenAPI document"
        );
    }
    for (path, ops) in paths {
        for m in ops.as_object().expect("ops").keys() {
            assert!(
                routes
                    .served()
                    .iter()
                    .any(|(sm, sp)| sp == path && sm.as_str().eq_ignore_ascii_case(m)),
                "{m} {path} is documented but not served"
            );
        }
    }
}

#[tokio::test]
async fn no_token_is_401_with_a_json_error() {
    let (status, body, headers) = call(
        Method::GET,
        "/api/v1/namespaces/a/runs",
        None,
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], 401);
    assert!(headers.get("www-authenticate").is_some());
    let (status, _, _) = call(Method::GET, "/api/v1/runs/x", Some(""), Body::empty()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn hostile_input_is_refused_before_any_api_call() {
    let t = Some("some-token");
    let cases: Vec<(Method, &str, Body, StatusCode)> = vec![
        (
            Method::POST,
            "/api/v1/namespaces/team-a/runs",
            Body::from(vec![b'{'; 100 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::POST,
            "/api/v1/namespaces/team-a/runs",
            Body::from("{\"spec\": {\"prompt\": "),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/namespaces/team-a/runs",
            Body::from("{\"spec\": {\"prompt\": \"x\"}, \"evil\": 1}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::POST,
            "/api/v1/namespaces/team-a/runs",
            Body::from("{\"metadata\": {\"name\": \"Bad_Name\"}, \"spec\": {\"prompt\": \"x\"}}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/namespaces/team-a/runs",
            Body::from("{\"metadata\": {\"name\": \"ok\"}, \"spec\": {}}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/namespaces/Team_A/runs",
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/namespaces/team-a/runs/..%2F..%2Fsecrets",
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/namespaces/team-a/runs?phase=Running%27%20OR%201%3D1%20--",
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/namespaces/team-a/runs?cursor=%27%3B%20DROP%20TABLE%20archived_runs",
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/namespaces/team-a/runs?since=yesterday",
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/namespaces/team-a/runs?limit=-1",
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/namespaces/team-a/runs/x?uid=a%27b",
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/runs/x",
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/runs/x?namespace=NOPE",
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/api/v1/namespaces/team-a/approvals/a-plan/approve",
            Body::from("not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/namespaces/team-a/runs/x/events",
            Body::empty(),
            StatusCode::BAD_GATEWAY,
        ),
    ];
    for (method, uri, body, want) in cases {
        let (status, json, _) = call(method.clone(), uri, t, body).await;
        assert_eq!(status, want, "{method} {uri}: {json}");
        assert_eq!(
            json["error"]["code"],
            want.as_u16(),
            "{method} {uri}: {json}"
        );
    }
}

#[tokio::test]
async fn the_ui_and_the_document_need_no_token_and_carry_security_headers() {
    for uri in ["/", "/ui/app.js", "/ui/app.css", "/api/v1/openapi.json"] {
        let resp = crane_server::app(state())
            .oneshot(Request::get(uri).body(Body::empty()).expect("req"))
            .await
            .expect("resp");
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        let csp = resp
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(csp.contains("default-src 'self'"), "{uri}: {csp}");
        assert_eq!(
            resp.headers()
                .get("x-frame-options")
                .and_then(|v| v.to_str().ok()),
            Some("DENY")
        );
    }
    let (status, _, _) = call(Method::GET, "/nowhere", None, Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
