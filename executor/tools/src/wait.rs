//! The `wait {ms}` tool: sleeps for a bounded time and reports it, for demos, tests and
//! benchmarks. Promises never to sleep longer than `MAX_WAIT_MS`, whatever the input.

use std::time::Duration;

use serde_json::{Value, json};

use crane_core::tool::{Tool, ToolContext, ToolError, ToolFuture};

pub use crane_core::builtins::MAX_WAIT_MS;

/// `wait {ms}` -> `{"waitedMs": ms}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wait;

impl Tool for Wait {
    fn execute<'a>(&'a self, _ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let ms = parse_ms(&input)?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!({ "waitedMs": ms }))
        })
    }
}

/// Checks the input again even though the toolbox validated it against the schema: the tool
/// is also callable directly, and an unbounded sleep must be impossible either way.
fn parse_ms(input: &Value) -> Result<u64, ToolError> {
    let Some(map) = input.as_object() else {
        return Err(ToolError::InvalidInput(
            "wait: input must be an object like {\"ms\": 100}".into(),
        ));
    };
    if let Some(extra) = map.keys().find(|k| k.as_str() != "ms") {
        return Err(ToolError::InvalidInput(format!(
            "wait: unknown field `{extra}` (only `ms` is allowed)"
        )));
    }
    let Some(raw) = map.get("ms") else {
        return Err(ToolError::InvalidInput("wait: missing field `ms`".into()));
    };
    let ms = match raw {
        // JSON Schema counts 5.0 as an integer, so this does too.
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= MAX_WAIT_MS as f64)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    match ms {
        Some(ms) if ms <= MAX_WAIT_MS => Ok(ms),
        _ => Err(ToolError::InvalidInput(format!(
            "wait: /ms must be an integer from 0 to {MAX_WAIT_MS}, got {raw}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn run(input: Value) -> Result<Value, ToolError> {
        Wait.execute(&ToolContext::adhoc(), input).await
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_requested_time() {
        for ms in [0, 1, 250, MAX_WAIT_MS] {
            let before = tokio::time::Instant::now();
            assert_eq!(
                run(json!({ "ms": ms })).await,
                Ok(json!({ "waitedMs": ms }))
            );
            // Virtual time under start_paused: exact and deterministic, not a timing check.
            assert_eq!(before.elapsed(), Duration::from_millis(ms));
        }
        assert_eq!(
            run(json!({ "ms": 5.0 })).await,
            Ok(json!({ "waitedMs": 5 }))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rejects_hostile_values_without_sleeping() {
        for input in [
            json!({ "ms": -1 }),
            json!({ "ms": MAX_WAIT_MS + 1 }),
            json!({ "ms": u64::MAX }),
            json!({ "ms": 1e300 }),
            json!({ "ms": 1.5 }),
            json!({ "ms": "100" }),
            json!({ "ms": null }),
            json!({ "ms": [1] }),
            json!({ "ms": true }),
            json!({}),
            json!({ "ms": 1, "extra": 2 }),
            json!([1]),
            json!("ms"),
            Value::Null,
        ] {
            let before = tokio::time::Instant::now();
            let result = run(input.clone()).await;
            assert!(
                matches!(result, Err(ToolError::InvalidInput(_))),
                "{input}: {result:?}"
            );
            assert_eq!(before.elapsed(), Duration::ZERO, "{input}");
        }
    }

    #[test]
    fn error_says_what_and_where() {
        let err = parse_ms(&json!({ "ms": 60001 }))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid input: wait: /ms must be an integer from 0 to 60000, got 60001")
        );
    }
}
