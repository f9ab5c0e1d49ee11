//! The built-in tools as the catalog sees them: names, descriptions, input schemas and the
//! limits those schemas state. The implementations live in `crane-tools`; keeping the specs
//! here lets the operator validate plans and the planners plan without linking them.

use serde_json::json;

use crate::calc::MAX_EXPRESSION_LEN;
use crate::tool::ToolSpec;

pub const CALCULATOR: &str = "calculator";
pub const LLM: &str = "llm";
pub const APPROVAL: &str = "approval";
pub const WAIT: &str = "wait";
pub const TODO_ADD: &str = "todo_store.add";
pub const TODO_LIST: &str = "todo_store.list";
pub const TODO_GET: &str = "todo_store.get";
pub const TODO_COMPLETE: &str = "todo_store.complete";
pub const TODO_DELETE: &str = "todo_store.delete";

/// The longest wait one step may ask for (at most 60 000 ms).
pub const MAX_WAIT_MS: u64 = 60_000;
/// The longest todo title, in characters.
pub const MAX_TITLE_CHARS: usize = 500;
/// The longest `llm` prompt or system text, in characters (after variables are resolved).
pub const MAX_LLM_TEXT_CHARS: usize = 100_000;
/// The longest an `approval` step may wait for its decision (7 days).
pub const MAX_APPROVAL_TIMEOUT_SECONDS: u64 = 7 * 24 * 3600;
/// What an `approval` step waits when it sets no `timeoutSeconds` (1 day).
pub const DEFAULT_APPROVAL_TIMEOUT_SECONDS: u64 = 24 * 3600;
/// The longest approval message, in characters.
pub const MAX_APPROVAL_MESSAGE_CHARS: usize = 4_096;
/// The most approvers one gate may name.
pub const MAX_APPROVERS: usize = 64;
/// The most tokens one `llm` step may ask the model for.
pub const MAX_LLM_TOKENS: u64 = 100_000;
/// What a token budget reserves for an `llm` step that sets no `maxTokens`.
pub const DEFAULT_LLM_TOKENS: u64 = 1_024;

/// Every built-in tool's spec, sorted by name.
pub fn specs() -> Vec<ToolSpec> {
    let by_id = || {
        json!({
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": 1, "description": "The todo's id, as add returned it."}
            },
            "required": ["id"],
            "additionalProperties": false
        })
    };
    vec![
        ToolSpec::new(
            CALCULATOR,
            "Evaluates an arithmetic expression with + - * / % and ^ or ** (power), parentheses, \
             unary minus and decimal numbers, e.g. \"(41*7)+13\", and returns the number.",
            json!({
                "type": "object",
                "properties": {
                    "expression": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_EXPRESSION_LEN,
                        "description": "Arithmetic expression: numbers with optional decimals \
                            (no exponent notation), + - * / %, ^ or ** for power, parentheses, \
                            unary minus. Example: (41*7)+13"
                    }
                },
                "required": ["expression"],
                "additionalProperties": false
            }),
        ),
        ToolSpec::new(
            LLM,
            "Asks a language model (a Model object of this namespace) and returns its reply as \
             text, or, with responseSchema, as JSON that fits the schema. Use it to \
             summarize, extract, classify or decide from earlier steps' outputs.",
            json!({
                "type": "object",
                "properties": {
                    "prompt": {"type": "string", "minLength": 1, "maxLength": MAX_LLM_TEXT_CHARS, "description": "What to ask; may contain {step_N_output} variables."},
                    "system": {"type": "string", "maxLength": MAX_LLM_TEXT_CHARS, "description": "System instructions for the model."},
                    "model": {"type": "string", "minLength": 1, "maxLength": 63, "description": "Name of a Model object; default: the run's spec.model."},
                    "responseSchema": {"type": "object", "description": "A JSON schema the reply must follow; the output is then that JSON."},
                    "maxTokens": {"type": "integer", "minimum": 1, "maximum": MAX_LLM_TOKENS, "description": "Most tokens to generate."},
                    "temperature": {"type": "number", "minimum": 0, "maximum": 2}
                },
                "required": ["prompt"],
                "additionalProperties": false
            }),
        ),
        ToolSpec::new(
            APPROVAL,
            "Waits for a person to approve before the steps that depend on it run; returns \
             {approved: true, by, comment}. A rejection (or a timeout with onTimeout Reject) \
             fails the step. Put it before any step that acts on the world (sends, deletes, \
             pays, deploys) and say in the message what will happen.",
            json!({
                "type": "object",
                "properties": {
                    "message": {"type": "string", "minLength": 1, "maxLength": MAX_APPROVAL_MESSAGE_CHARS, "description": "What the approver is asked; may contain {step_N_output} variables."},
                    "approvers": {"type": "array", "maxItems": MAX_APPROVERS, "items": {"type": "string", "minLength": 1, "maxLength": 253}, "description": "User or group names allowed to decide; empty: anyone who may update Approvals in the namespace."},
                    "timeoutSeconds": {"type": "integer", "minimum": 1, "maximum": MAX_APPROVAL_TIMEOUT_SECONDS, "description": "How long to wait for a decision (default one day)."},
                    "onTimeout": {"enum": ["Reject", "Approve"], "description": "What a timeout decides (default Reject)."}
                },
                "required": ["message"],
                "additionalProperties": false
            }),
        ),
        ToolSpec::new(
            TODO_ADD,
            "Adds a todo with the given title; returns {id, title, completed}.",
            json!({
                "type": "object",
                "properties": {
                    "title": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_TITLE_CHARS,
                        "pattern": "\\S",
                        "description": "What to do (1 to 500 characters, not blank)."
                    }
                },
                "required": ["title"],
                "additionalProperties": false
            }),
        ),
        ToolSpec::new(
            TODO_COMPLETE,
            "Marks the todo with the given id completed and returns it.",
            by_id(),
        ),
        ToolSpec::new(
            TODO_DELETE,
            "Deletes the todo with the given id and returns it.",
            by_id(),
        ),
        ToolSpec::new(TODO_GET, "Returns the todo with the given id.", by_id()),
        ToolSpec::new(
            TODO_LIST,
            "Lists all todos in the namespace, ordered by id.",
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
        ),
        ToolSpec::new(
            WAIT,
            "Waits for `ms` milliseconds (0 to 60000) and returns {\"waitedMs\": ms}.",
            json!({
                "type": "object",
                "properties": {
                    "ms": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": MAX_WAIT_MS,
                        "description": "How long to wait, in milliseconds."
                    }
                },
                "required": ["ms"],
                "additionalProperties": false
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::Catalog;

    #[test]
    fn every_builtin_schema_compiles_and_names_are_unique() {
        let specs = specs();
        let catalog = Catalog::new(specs.clone());
        assert_eq!(catalog.len(), specs.len());
        for spec in &specs {
            assert!(
                catalog.check_input(&spec.name, &json!({})).is_ok()
                    || spec.input_schema["required"].is_array(),
                "{}",
                spec.name
            );
            assert!(!spec.description.is_empty());
        }
    }

    #[test]
    fn schemas_are_closed_and_state_the_limits() {
        let catalog = Catalog::builtins();
        for spec in catalog.specs() {
            assert_eq!(
                spec.input_schema["additionalProperties"],
                json!(false),
                "{}",
                spec.name
            );
        }
        let ok = |tool: &str, input: serde_json::Value| catalog.check_input(tool, &input).is_ok();
        assert!(ok(CALCULATOR, json!({"expression": "1+1"})));
        assert!(ok(
            CALCULATOR,
            json!({"expression": "1".repeat(MAX_EXPRESSION_LEN)})
        ));
        for rejected in [
            json!({}),
            json!({"expression": ""}),
            json!({"expression": 1}),
            json!({"expression": "1", "extra": true}),
            json!({"expression": "1".repeat(MAX_EXPRESSION_LEN + 1)}),
            json!("1+1"),
        ] {
            assert!(
                !ok(CALCULATOR, rejected.clone()),
                "calculator accepted {rejected}"
            );
        }
        assert!(ok(WAIT, json!({"ms": MAX_WAIT_MS})));
        assert!(!ok(WAIT, json!({"ms": MAX_WAIT_MS + 1})));
        assert!(!ok(WAIT, json!({})));
        assert!(ok(TODO_ADD, json!({"title": "x".repeat(MAX_TITLE_CHARS)})));
        assert!(!ok(
            TODO_ADD,
            json!({"title": "x".repeat(MAX_TITLE_CHARS + 1)})
        ));
        assert!(!ok(TODO_ADD, json!({"title": "   "})));
        assert!(!ok(TODO_GET, json!({"id": 0})));
    }
}
