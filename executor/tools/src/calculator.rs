//! The `calculator` tool: `{expression}` → a JSON number, by way of [`crane_core::calc`] (a real
//! parser, never an eval). Syntax and limit errors are `InvalidInput`; arithmetic with no
//! finite answer (division by zero, overflow) is `Failed`. Neither is retryable: the same
//! expression always gives the same answer.

use serde_json::Value;

use crane_core::calc::{self, CalcError};
use crane_core::text::json_kind;
use crane_core::tool::{Tool, ToolContext, ToolError, ToolFuture};

/// Longest expression echoed back in an error message, in characters.
const MAX_ECHOED_CHARS: usize = 80;

/// Evaluates arithmetic expressions.
pub struct Calculator;

impl Tool for Calculator {
    fn execute<'a>(&'a self, _ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        // Pure CPU work bounded by the 1000-byte limit: no need to leave the async task.
        Box::pin(async move { calculate(&input) })
    }
}

/// The whole tool, synchronously: read `expression`, evaluate it, map the outcome.
fn calculate(input: &Value) -> Result<Value, ToolError> {
    let expression = expression_of(input)?;
    calc::evaluate(expression)
        .map(calc::to_json_number)
        .map_err(|error| tool_error(expression, &error))
}

/// The `expression` field, checked again here so a caller that skipped schema validation
/// gets a clear error rather than a panic.
fn expression_of(input: &Value) -> Result<&str, ToolError> {
    let Some(object) = input.as_object() else {
        return Err(ToolError::InvalidInput(format!(
            "calculator input must be an object like {{\"expression\": \"1+2\"}}, got {}",
            json_kind(input)
        )));
    };
    if let Some(unknown) = object.keys().find(|key| *key != "expression") {
        return Err(ToolError::InvalidInput(format!(
            "calculator input has unknown field `{}` (only `expression` is allowed)",
            unknown.escape_debug()
        )));
    }
    match object.get("expression") {
        Some(Value::String(expression)) => Ok(expression),
        Some(other) => Err(ToolError::InvalidInput(format!(
            "calculator `expression` must be a string, got {}",
            json_kind(other)
        ))),
        None => Err(ToolError::InvalidInput(
            "calculator input is missing `expression`".into(),
        )),
    }
}

/// Maps a calculator error, quoting a short expression so the step's error reads on its own.
fn tool_error(expression: &str, error: &CalcError) -> ToolError {
    let message = if expression.chars().nth(MAX_ECHOED_CHARS).is_none() {
        format!("{error} in `{}`", expression.escape_debug())
    } else {
        error.to_string()
    };
    if error.kind.is_arithmetic() {
        ToolError::Failed(message)
    } else {
        ToolError::InvalidInput(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn run(input: Value) -> Result<Value, ToolError> {
        Calculator.execute(&ToolContext::adhoc(), input).await
    }

    fn invalid_input(result: Result<Value, ToolError>) -> String {
        match result {
            Err(ToolError::InvalidInput(message)) => message,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn integral_results_are_json_integers() {
        let output = run(json!({"expression": "(41*7)+13"})).await;
        assert_eq!(output, Ok(json!(300)));
        assert_eq!(
            serde_json::to_string(&output.unwrap_or_default())
                .ok()
                .as_deref(),
            Some("300")
        );
        assert_eq!(run(json!({"expression": "-2^2"})).await, Ok(json!(-4)));
        assert_eq!(run(json!({"expression": "6/4"})).await, Ok(json!(1.5)));
        assert_eq!(
            run(json!({"expression": "0.1+0.2"})).await,
            Ok(json!(0.30000000000000004))
        );
    }

    #[tokio::test]
    async fn syntax_and_limit_errors_are_invalid_input() {
        let message = invalid_input(run(json!({"expression": "(41*7))+13"})).await);
        assert_eq!(message, "unmatched `)` at position 7 in `(41*7))+13`");
        let message = invalid_input(run(json!({"expression": "__import__('os')"})).await);
        assert!(message.starts_with("unexpected character `_`"), "{message}");
        let message = invalid_input(run(json!({"expression": "1; rm -rf /"})).await);
        assert!(message.contains("`;` at position 2"), "{message}");
        let message = invalid_input(run(json!({"expression": "1\u{0}\n"})).await);
        assert_eq!(
            message,
            "unexpected character `\\0` at position 2 in `1\\0\\n`"
        );
        let message = invalid_input(run(json!({"expression": ""})).await);
        assert!(message.starts_with("empty expression"), "{message}");
        let message = invalid_input(run(json!({"expression": "1e3"})).await);
        assert!(message.contains("scientific notation"), "{message}");
        let message = invalid_input(run(json!({"expression": "9".repeat(400)})).await);
        assert!(
            message.starts_with("number too large at position 1"),
            "{message}"
        );
        // Long expressions are not echoed back.
        assert!(!message.contains("999999999"), "{message}");
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        let message = invalid_input(run(json!({"expression": deep})).await);
        assert!(
            message.starts_with("expression nested too deeply"),
            "{message}"
        );
        let message = invalid_input(run(json!({"expression": "(".repeat(100_000)})).await);
        assert!(
            message.starts_with("expression too long (100000 bytes"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn arithmetic_failures_are_failed_and_not_retryable() {
        for (expression, expected) in [
            ("1/0", "division by zero at position 2 in `1/0`"),
            ("5 % (3-3)", "modulo by zero at position 3 in `5 % (3-3)`"),
            (
                "10^400",
                "result too large (overflow) at position 3 in `10^400`",
            ),
            (
                "(-8)^(1/3)",
                "result is not a real number at position 5 in `(-8)^(1/3)`",
            ),
        ] {
            let result = run(json!({"expression": expression})).await;
            assert_eq!(result, Err(ToolError::Failed(expected.into())));
            assert!(result.is_err_and(|error| !error.is_retryable()));
        }
    }

    #[tokio::test]
    async fn malformed_input_never_panics() {
        let cases = [
            (json!(null), "got null"),
            (json!("1+2"), "got a string"),
            (json!([{"expression": "1"}]), "got an array"),
            (json!(42), "got a number"),
            (json!({}), "missing `expression`"),
            (json!({"expression": 1}), "must be a string, got a number"),
            (json!({"expression": null}), "must be a string, got null"),
            (
                json!({"expression": ["1+1"]}),
                "must be a string, got an array",
            ),
            (
                json!({"expression": {"$gt": ""}}),
                "must be a string, got an object",
            ),
            (
                json!({"expression": "1", "__proto__": {}}),
                "unknown field `__proto__`",
            ),
            (json!({"expr": "1"}), "unknown field `expr`"),
        ];
        for (input, expected) in cases {
            let message = invalid_input(run(input.clone()).await);
            assert!(message.contains(expected), "{input}: {message}");
        }
    }
}
