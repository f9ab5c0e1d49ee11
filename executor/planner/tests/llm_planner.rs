//! The LLM planner against a fake OpenAI-compatible provider served from inside the test (a
//! real HTTP server on 127.0.0.1): what Crane sends, and how `llm` and `auto` modes handle good
//! plans, invalid plans, HTTP errors, timeouts, garbage and unreachable servers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crane_core::tool::Catalog;
use crane_planner::{
    LlmConfig, LlmError, PlanSource, PlannerError, PlannerMode, plan_prompt, rules,
};

const MILK: &str = "Add a todo to buy milk, then show me all my tasks";
const KEY: &str = "sk-test-0123456789";

/// What the fake provider answers.
#[derive(Clone)]
enum Reply {
    /// 200 with a chat completion whose message content is this text.
    Content(String),
    /// This status and raw body.
    Status(u16, String),
    /// 200 with this raw body (not a chat completion).
    Raw(String),
    /// Sleeps this long before answering (beyond the client's timeout).
    Slow(Duration),
    /// 401 echoing the request's Authorization header, as a careless proxy might.
    EchoAuth,
}

/// One request the fake provider received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    authorization: Option<String>,
    body: Value,
}

#[derive(Clone)]
struct Fake {
    reply: Reply,
    received: Arc<Mutex<Vec<Received>>>,
}

struct Provider {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Provider {
    async fn start(reply: Reply) -> Provider {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("cannot bind the fake provider: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("no local address: {e}"),
        };
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(answer).with_state(Fake {
            reply,
            received: received.clone(),
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Provider { addr, received }
    }

    fn config(&self, timeout: Duration) -> LlmConfig {
        LlmConfig {
            base_url: format!("http://{}", self.addr),
            model: "test-model".into(),
            api_key: Some(KEY.into()),
            timeout,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

async fn answer(State(fake): State<Fake>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut received) = fake.received.lock() {
        received.push(Received {
            path: uri.path().to_owned(),
            authorization: authorization.clone(),
            body: parsed,
        });
    }
    let json_type = [(header::CONTENT_TYPE, "application/json")];
    match fake.reply {
        Reply::Content(content) => {
            let completion = json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "test-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            });
            (StatusCode::OK, json_type, completion.to_string()).into_response()
        }
        Reply::Status(code, body) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response(),
        Reply::Raw(body) => (StatusCode::OK, json_type, body).into_response(),
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            (StatusCode::OK, json_type, "{}").into_response()
        }
        Reply::EchoAuth => (
            StatusCode::UNAUTHORIZED,
            format!("bad credentials: {}", authorization.unwrap_or_default()),
        )
            .into_response(),
    }
}

fn good_plan() -> Value {
    json!({"steps": [
        {"id": 1, "tool": "calculator", "input": {"expression": "2+3"}, "reasoning": "add", "dependsOn": []},
        {"id": 2, "tool": "todo_store.add", "input": {"title": "Total: {step_1_output}"}, "reasoning": "save", "dependsOn": [1]},
    ]})
}

fn rules_plan(prompt: &str) -> crane_core::plan::Plan {
    match rules::plan(prompt) {
        Ok(plan) => plan,
        Err(e) => panic!("the rules planner should plan {prompt:?}: {e}"),
    }
}

const SHORT: Duration = Duration::from_secs(10);

/// Auto mode with `config`'s LLM: it must fall back to the rules planner's plan of MILK.
/// Returns why it fell back.
async fn fallback_reason(config: &LlmConfig) -> String {
    let outcome = plan_prompt(MILK, PlannerMode::Auto, Some(config), &Catalog::builtins()).await;
    let Ok(outcome) = outcome else {
        panic!("auto mode should fall back: {outcome:?}")
    };
    assert_eq!(outcome.source, PlanSource::Rules);
    assert_eq!(outcome.plan, rules_plan(MILK));
    outcome.fallback_reason.unwrap_or_default()
}

#[tokio::test]
async fn llm_mode_uses_the_plan_and_sends_a_proper_request() {
    let provider = Provider::start(Reply::Content(format!("```json\n{}\n```", good_plan()))).await;
    let catalog = Catalog::builtins();
    let outcome = plan_prompt(
        "add 2 and 3 and save it",
        PlannerMode::Llm,
        Some(&provider.config(SHORT)),
        &catalog,
    )
    .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => panic!("llm mode failed: {e}"),
    };
    assert_eq!(outcome.source, PlanSource::Llm);
    assert_eq!(outcome.fallback_reason, None);
    assert_eq!(serde_json::to_value(&outcome.plan).ok(), Some(good_plan()));

    let received = provider.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(request.body["model"], "test-model");
    assert_eq!(request.body["temperature"], json!(0.0));
    assert_eq!(request.body["response_format"]["type"], "json_schema");
    assert_eq!(
        request.body["response_format"]["json_schema"]["name"],
        "crane_plan"
    );
    assert!(
        request.body["response_format"]["json_schema"]["schema"]["properties"]["steps"].is_object()
    );
    assert_eq!(
        request.body["messages"][1],
        json!({"role": "user", "content": "add 2 and 3 and save it"})
    );
    assert_eq!(request.body["messages"][0]["role"], "system");
    let system = request.body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default();
    let names: Vec<&str> = catalog.names().collect();
    assert!(names.len() >= 7, "{names:?}");
    for name in names {
        assert!(
            system.contains(name),
            "system prompt does not mention {name}"
        );
    }
}

#[tokio::test]
async fn base_url_may_end_in_v1_and_the_key_is_optional() {
    let provider = Provider::start(Reply::Content(good_plan().to_string())).await;
    let mut config = provider.config(SHORT);
    config.base_url = format!("http://{}/v1/", provider.addr);
    config.api_key = None;
    let outcome = plan_prompt(
        "anything",
        PlannerMode::Llm,
        Some(&config),
        &Catalog::builtins(),
    )
    .await;
    assert!(
        matches!(&outcome, Ok(o) if o.source == PlanSource::Llm),
        "{outcome:?}"
    );
    let received = provider.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/v1/chat/completions");
    assert_eq!(received[0].authorization, None);
}

#[tokio::test]
async fn invalid_plan_fails_llm_mode_and_falls_back_in_auto() {
    let bad =
        json!({"steps": [{"id": 1, "tool": "book_flight", "input": {"to": "Paris"}}]}).to_string();
    let provider = Provider::start(Reply::Content(bad)).await;
    let config = provider.config(SHORT);
    let catalog = Catalog::builtins();

    let err = plan_prompt(MILK, PlannerMode::Llm, Some(&config), &catalog).await;
    match &err {
        Err(PlannerError::Llm(LlmError::InvalidPlan(message))) => {
            assert!(message.contains("book_flight"), "{message}")
        }
        other => panic!("expected an invalid-plan error, got {other:?}"),
    }

    let reason = fallback_reason(&config).await;
    assert!(
        reason.contains("invalid") && reason.contains("book_flight"),
        "{reason}"
    );
    assert_eq!(provider.received().len(), 2);
}

#[tokio::test]
async fn http_error_fails_llm_mode_and_falls_back_in_auto() {
    let provider = Provider::start(Reply::Status(500, "upstream exploded".into())).await;
    let config = provider.config(SHORT);
    let catalog = Catalog::builtins();

    let err = plan_prompt(MILK, PlannerMode::Llm, Some(&config), &catalog).await;
    assert!(
        matches!(&err, Err(PlannerError::Llm(LlmError::Status { status: 500, body })) if body.contains("upstream exploded")),
        "{err:?}"
    );

    let reason = fallback_reason(&config).await;
    assert!(
        reason.contains("HTTP 500") && reason.contains("upstream exploded"),
        "{reason}"
    );
}

#[tokio::test]
async fn slow_provider_times_out_and_auto_falls_back() {
    // The server would answer long after the client's timeout; the test never waits for it.
    let provider = Provider::start(Reply::Slow(Duration::from_secs(600))).await;
    let config = provider.config(Duration::from_millis(300));
    let catalog = Catalog::builtins();

    let err = plan_prompt(MILK, PlannerMode::Llm, Some(&config), &catalog).await;
    assert!(
        matches!(&err, Err(PlannerError::Llm(LlmError::Timeout(t))) if *t == Duration::from_millis(300)),
        "{err:?}"
    );

    let reason = fallback_reason(&config).await;
    assert!(reason.contains("did not answer within 0.3 s"), "{reason}");
}

#[tokio::test]
async fn garbage_replies_are_unparsable_and_auto_falls_back() {
    let catalog = Catalog::builtins();
    for reply in [
        Reply::Content("Sure! First you should buy milk.".into()),
        Reply::Content("```json\n{\"steps\": [{\"id\": \"one\"}]}\n```".into()),
        Reply::Raw("<html>502 bad gateway</html>".into()),
        Reply::Raw(json!({"choices": []}).to_string()),
    ] {
        let provider = Provider::start(reply).await;
        let config = provider.config(SHORT);
        let err = plan_prompt(MILK, PlannerMode::Llm, Some(&config), &catalog).await;
        assert!(
            matches!(&err, Err(PlannerError::Llm(LlmError::Unparsable(_)))),
            "{err:?}"
        );

        let reason = fallback_reason(&config).await;
        assert!(reason.contains("not a plan"), "{reason}");
    }
}

#[tokio::test]
async fn unreachable_provider_falls_back() {
    // A port that was just free: nothing listens there.
    let addr = match tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
    {
        Ok(a) => a,
        Err(e) => panic!("cannot find a free port: {e}"),
    };
    let config = LlmConfig {
        base_url: format!("http://{addr}"),
        model: "m".into(),
        api_key: None,
        timeout: SHORT,
    };
    let catalog = Catalog::builtins();
    let err = plan_prompt(MILK, PlannerMode::Llm, Some(&config), &catalog).await;
    assert!(
        matches!(&err, Err(PlannerError::Llm(LlmError::Unreachable { .. }))),
        "{err:?}"
    );
    let reason = fallback_reason(&config).await;
    assert!(reason.contains("could not reach"), "{reason}");
}

#[tokio::test]
async fn without_an_llm_auto_is_rules_and_llm_mode_refuses() {
    let catalog = Catalog::builtins();
    let outcome = plan_prompt(MILK, PlannerMode::Auto, None, &catalog).await;
    let Ok(outcome) = outcome else {
        panic!("auto without LLM should plan with rules: {outcome:?}")
    };
    assert_eq!(outcome.source, PlanSource::Rules);
    assert_eq!(outcome.fallback_reason, None);
    assert_eq!(outcome.plan, rules_plan(MILK));
    assert_eq!(outcome.plan.steps[1].depends_on, vec![1]);

    let err = plan_prompt(MILK, PlannerMode::Llm, None, &catalog).await;
    assert_eq!(err, Err(PlannerError::LlmNotConfigured));

    let err = plan_prompt(
        "Book me a flight to Paris",
        PlannerMode::Rules,
        None,
        &catalog,
    )
    .await;
    assert!(
        matches!(&err, Err(PlannerError::Unplannable { .. })),
        "{err:?}"
    );
    let message = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("Book me a flight to Paris"), "{message}");
}

#[tokio::test]
async fn rules_mode_never_calls_the_llm() {
    let provider = Provider::start(Reply::Content(good_plan().to_string())).await;
    let outcome = plan_prompt(
        MILK,
        PlannerMode::Rules,
        Some(&provider.config(SHORT)),
        &Catalog::builtins(),
    )
    .await;
    assert!(
        matches!(&outcome, Ok(o) if o.source == PlanSource::Rules && o.fallback_reason.is_none()),
        "{outcome:?}"
    );
    assert!(provider.received().is_empty());
}

#[tokio::test]
async fn when_both_planners_fail_the_error_says_both() {
    let provider = Provider::start(Reply::Status(503, "overloaded".into())).await;
    let err = plan_prompt(
        "Book me a flight to Paris",
        PlannerMode::Auto,
        Some(&provider.config(SHORT)),
        &Catalog::builtins(),
    )
    .await;
    assert!(
        matches!(&err, Err(PlannerError::BothFailed { .. })),
        "{err:?}"
    );
    let message = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("HTTP 503") && message.contains("Book me a flight to Paris"),
        "{message}"
    );
}

#[tokio::test]
async fn bad_prompts_never_reach_the_llm() {
    let provider = Provider::start(Reply::Content(good_plan().to_string())).await;
    let config = provider.config(SHORT);
    let catalog = Catalog::builtins();
    for mode in [PlannerMode::Llm, PlannerMode::Auto] {
        assert_eq!(
            plan_prompt(" \n ", mode, Some(&config), &catalog).await,
            Err(PlannerError::EmptyPrompt)
        );
        let huge = "x".repeat(1_000_000);
        assert_eq!(
            plan_prompt(&huge, mode, Some(&config), &catalog).await,
            Err(PlannerError::PromptTooLong {
                chars: 1_000_000,
                max: 10_000
            })
        );
    }
    assert!(provider.received().is_empty());
}

#[tokio::test]
async fn the_api_key_never_appears_in_errors() {
    let provider = Provider::start(Reply::EchoAuth).await;
    let err = plan_prompt(
        MILK,
        PlannerMode::Llm,
        Some(&provider.config(SHORT)),
        &Catalog::builtins(),
    )
    .await;
    let message = err
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        matches!(
            &err,
            Err(PlannerError::Llm(LlmError::Status { status: 401, .. }))
        ),
        "{err:?}"
    );
    assert!(
        message.contains("bad credentials") && message.contains("<redacted>"),
        "{message}"
    );
    assert!(!message.contains(KEY), "{message}");
    // The request did carry it: the redaction is in the message, not a missing header.
    assert_eq!(
        provider.received()[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
}
