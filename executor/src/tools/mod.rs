//! Tools behind one trait, and the `Toolbox` that names them, validates their inputs against
//! their JSON schemas and runs them. Adding a tool means implementing `Tool` and listing it
//! in `Toolbox::standard`.

pub mod calculator;
pub mod todo;
pub mod wait;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use crate::plan::StepId;
pub use todo::TodoStore;

/// The future a tool returns (boxed so tools can live behind `dyn Tool`).
pub type ToolFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, ToolError>> + Send + 'a>>;

/// Why a tool call failed, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    /// The input is wrong (schema, syntax, unknown id...): retrying cannot help.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The call ran and failed for a reason that will not change (e.g. division by zero).
    #[error("{0}")]
    Failed(String),
    /// A passing fault (connection lost, backend busy): worth a retry.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The step ran longer than its timeout: worth a retry.
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
}

impl ToolError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Timeout(_))
    }

    /// Stable, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "invalid_input",
            Self::Failed(_) => "failed",
            Self::Transient(_) => "transient",
            Self::Timeout(_) => "timeout",
        }
    }
}

/// Who is calling a tool: the todo store scopes by namespace and makes `add` idempotent per
/// (run, step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolContext {
    /// Kubernetes namespace of the AgentRun (`default` for local runs).
    pub namespace: String,
    pub run_id: String,
    pub step_id: StepId,
    /// 1 for the first attempt.
    pub attempt: u32,
}

impl ToolContext {
    /// A context for a one-off call (`crane-executor tool`).
    pub fn adhoc() -> Self {
        Self {
            namespace: "default".into(),
            run_id: "adhoc".into(),
            step_id: 1,
            attempt: 1,
        }
    }
}

/// A tool a plan step can call.
pub trait Tool: Send + Sync {
    /// The name plans use, e.g. `todo_store.add`.
    fn name(&self) -> &'static str;
    /// One sentence for people and for the LLM planner's system prompt.
    fn description(&self) -> &'static str;
    /// JSON schema of the input object.
    fn input_schema(&self) -> Value;
    /// Runs the tool on an input already validated against `input_schema` with variables
    /// resolved. Timeouts are the caller's job.
    fn execute<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a>;
}

/// Longest rendering of a user value inside an error message; inputs can be megabytes long
/// and a message must stay readable.
const MAX_VALUE_IN_MESSAGE: usize = 80;

/// Most schema problems reported for one input: enough to fix it, bounded for hostile inputs.
const MAX_INPUT_PROBLEMS: usize = 20;

/// One way an input does not match its tool's schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputProblem {
    /// JSON pointer of the offending value inside the input (`""` for the input itself).
    pub pointer: String,
    /// Whether the problem is the value's JSON type (a whole-string variable may change it).
    pub is_type_error: bool,
    /// The full message, e.g. `input.expression: 3 is not of type "string"`.
    pub message: String,
}

struct Entry {
    tool: Arc<dyn Tool>,
    /// The compiled input schema, or why the tool's own schema does not compile (a bug in the
    /// tool, reported on every call instead of panicking at start-up).
    validator: Result<jsonschema::Validator, String>,
}

/// The set of tools a run may use, with their input validators compiled once. Cheap to clone.
#[derive(Clone)]
pub struct Toolbox {
    entries: Arc<BTreeMap<&'static str, Entry>>,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolbox")
            .field("tools", &self.names())
            .finish()
    }
}

impl Toolbox {
    /// The tools every Crane run has: `calculator`, `todo_store.*` over `store`, and `wait`.
    pub fn standard(store: Arc<dyn TodoStore>) -> Toolbox {
        let mut tools: Vec<Arc<dyn Tool>> =
            vec![Arc::new(calculator::Calculator), Arc::new(wait::Wait)];
        tools.extend(todo::todo_tools(store));
        Self::with_tools(tools)
    }

    /// The standard tools with todos kept in this process (`crane-executor run` and `tool`).
    pub fn in_memory() -> Toolbox {
        Self::standard(Arc::new(todo::MemoryTodoStore::default()))
    }

    /// Exactly these tools. When two share a name the first one wins.
    pub fn with_tools(tools: Vec<Arc<dyn Tool>>) -> Toolbox {
        let mut entries = BTreeMap::new();
        for tool in tools {
            let name = tool.name();
            if entries.contains_key(name) {
                continue;
            }
            let validator = jsonschema::validator_for(&tool.input_schema())
                .map_err(|e| format!("tool {name} has an invalid input schema: {e}"));
            entries.insert(name, Entry { tool, validator });
        }
        Toolbox {
            entries: Arc::new(entries),
        }
    }

    /// Tool names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.keys().copied().collect()
    }

    pub fn get(&self, name: &str) -> Option<&dyn Tool> {
        self.entries.get(name).map(|e| e.tool.as_ref())
    }

    /// The tools, sorted by name.
    pub fn tools(&self) -> impl Iterator<Item = &dyn Tool> {
        self.entries.values().map(|e| e.tool.as_ref())
    }

    /// `unknown tool "x" (known tools: a, b, c)`, for messages about a name not in the box.
    pub fn unknown_tool_message(&self, name: &str) -> String {
        format!(
            "unknown tool \"{}\" (known tools: {})",
            truncate(name, MAX_VALUE_IN_MESSAGE),
            self.names().join(", ")
        )
    }

    /// Checks `input` against the tool's schema; every problem as one message naming the field.
    pub fn check_input(&self, tool: &str, input: &Value) -> Result<(), Vec<String>> {
        self.input_problems(tool, input)
            .map_err(|problems| problems.into_iter().map(|p| p.message).collect())
    }

    /// Like [`Toolbox::check_input`], with where each problem is, so plan validation can
    /// tolerate values that variables will replace at run time.
    pub fn input_problems(&self, tool: &str, input: &Value) -> Result<(), Vec<InputProblem>> {
        let Some(entry) = self.entries.get(tool) else {
            return Err(vec![InputProblem {
                pointer: String::new(),
                is_type_error: false,
                message: self.unknown_tool_message(tool),
            }]);
        };
        let validator = match &entry.validator {
            Ok(v) => v,
            Err(e) => {
                return Err(vec![InputProblem {
                    pointer: String::new(),
                    is_type_error: false,
                    message: e.clone(),
                }]);
            }
        };
        let mut problems = Vec::new();
        for error in validator.iter_errors(input) {
            let pointer = error.instance_path().as_str().to_owned();
            let place = display_path(&pointer);
            match error.kind() {
                ValidationErrorKind::Required { property } => {
                    let name = property
                        .as_str()
                        .map_or_else(|| property.to_string(), |s| format!("\"{s}\""));
                    problems.push(InputProblem {
                        pointer,
                        is_type_error: false,
                        message: format!(
                            "{place}: missing required property {}",
                            truncate(&name, MAX_VALUE_IN_MESSAGE)
                        ),
                    });
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for name in unexpected {
                        problems.push(InputProblem {
                            pointer: pointer.clone(),
                            is_type_error: false,
                            message: format!(
                                "{place}: unexpected property \"{}\"",
                                truncate(name, MAX_VALUE_IN_MESSAGE)
                            ),
                        });
                    }
                }
                ValidationErrorKind::Type { kind } => {
                    let expected = match kind {
                        TypeKind::Single(t) => format!("\"{t}\""),
                        TypeKind::Multiple(set) => set
                            .iter()
                            .map(|t| format!("\"{t}\""))
                            .collect::<Vec<_>>()
                            .join(" or "),
                    };
                    problems.push(InputProblem {
                        pointer,
                        is_type_error: true,
                        message: format!(
                            "{place}: {} is not of type {expected}",
                            truncate(&error.instance().to_string(), MAX_VALUE_IN_MESSAGE)
                        ),
                    });
                }
                _ => problems.push(InputProblem {
                    pointer,
                    is_type_error: false,
                    message: format!(
                        "{place}: {}",
                        truncate(&error.to_string(), 4 * MAX_VALUE_IN_MESSAGE)
                    ),
                }),
            }
            if problems.len() >= MAX_INPUT_PROBLEMS {
                problems.truncate(MAX_INPUT_PROBLEMS);
                break;
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Validates `input` against the tool's schema, then runs the tool. Timeouts are the
    /// caller's job (the engines apply the step timeout around this call).
    pub async fn call(
        &self,
        ctx: &ToolContext,
        tool: &str,
        input: Value,
    ) -> Result<Value, ToolError> {
        let Some(entry) = self.entries.get(tool) else {
            return Err(ToolError::InvalidInput(self.unknown_tool_message(tool)));
        };
        self.check_input(tool, &input)
            .map_err(|problems| ToolError::InvalidInput(problems.join("; ")))?;
        entry.tool.execute(ctx, input).await
    }
}

/// `/a/0/b~1c` -> `input.a[0]["b/c"]`-ish: dotted for plain names, brackets for indices, and
/// JSON-quoted for names a dot path cannot show.
pub(crate) fn display_path(pointer: &str) -> String {
    let mut out = String::from("input");
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&seg);
            out.push(']');
        } else if !seg.is_empty()
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            out.push('.');
            out.push_str(&truncate(&seg, MAX_VALUE_IN_MESSAGE));
        } else {
            out.push('[');
            out.push_str(&truncate(
                &Value::String(seg).to_string(),
                MAX_VALUE_IN_MESSAGE,
            ));
            out.push(']');
        }
    }
    out
}

/// At most `max` bytes of `s` (on a char boundary), with `...` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Small tools with fixed schemas, so tests of the toolbox, validation and engines do not
    //! depend on the real tools' details.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::{Value, json};

    use super::{Tool, ToolContext, ToolError, ToolFuture, Toolbox};

    /// Echoes its input; counts calls.
    pub struct SchemaTool {
        pub name: &'static str,
        pub schema: Value,
        pub calls: Arc<AtomicU32>,
    }

    impl Tool for SchemaTool {
        fn name(&self) -> &'static str {
            self.name
        }
        fn description(&self) -> &'static str {
            "echoes its input"
        }
        fn input_schema(&self) -> Value {
            self.schema.clone()
        }
        fn execute<'a>(&'a self, _ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if input.get("fail").is_some() {
                    return Err(ToolError::Failed("asked to fail".into()));
                }
                Ok(input)
            })
        }
    }

    pub fn tool(name: &'static str, schema: Value) -> Arc<dyn Tool> {
        Arc::new(SchemaTool {
            name,
            schema,
            calls: Arc::default(),
        })
    }

    /// `calc {expression: string}`, `pause {ms: integer 0..=60000}`, `note {title: string}`,
    /// `list {}`: the shapes of the real tools.
    pub fn toolbox() -> Toolbox {
        let strict = |props: Value, required: Value| json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
        Toolbox::with_tools(vec![
            tool(
                "calc",
                strict(
                    json!({"expression": {"type": "string"}}),
                    json!(["expression"]),
                ),
            ),
            tool(
                "pause",
                strict(
                    json!({"ms": {"type": "integer", "minimum": 0, "maximum": 60000}}),
                    json!(["ms"]),
                ),
            ),
            tool(
                "note",
                strict(
                    json!({"title": {"type": "string", "minLength": 1}}),
                    json!(["title"]),
                ),
            ),
            tool("list", strict(json!({}), json!([]))),
        ])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::json;

    use super::test_support::{SchemaTool, tool, toolbox};
    use super::*;

    fn problems(tool: &str, input: Value) -> Vec<String> {
        toolbox()
            .check_input(tool, &input)
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn names_are_sorted_and_lookup_works() {
        let tb = toolbox();
        assert_eq!(tb.names(), vec!["calc", "list", "note", "pause"]);
        assert_eq!(tb.get("note").map(|t| t.name()), Some("note"));
        assert!(tb.get("Note").is_none());
        assert!(tb.get("").is_none());
        assert_eq!(tb.tools().count(), 4);
    }

    #[test]
    fn messages_name_the_field_and_the_reason() {
        assert_eq!(
            problems("calc", json!({"expression": 3})),
            vec!["input.expression: 3 is not of type \"string\""]
        );
        assert_eq!(
            problems("note", json!({})),
            vec!["input: missing required property \"title\""]
        );
        assert_eq!(
            problems("list", json!({"foo": 1, "bar": 2})),
            vec![
                "input: unexpected property \"bar\"",
                "input: unexpected property \"foo\""
            ]
        );
        assert_eq!(
            problems("calc", json!([1])),
            vec!["input: [1] is not of type \"object\""]
        );
        let range = problems("pause", json!({"ms": 60001}));
        assert_eq!(range.len(), 1);
        assert!(
            range[0].starts_with("input.ms: 60001 is greater than the maximum of 60000"),
            "{range:?}"
        );
        assert!(
            toolbox()
                .check_input("calc", &json!({"expression": "1+1"}))
                .is_ok()
        );
    }

    #[test]
    fn hostile_inputs_give_short_bounded_messages() {
        let huge = "x".repeat(1 << 20);
        let msgs = problems("pause", json!({"ms": huge}));
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].len() < 300, "message is {} bytes", msgs[0].len());
        assert!(msgs[0].starts_with("input.ms: \"xxx"));

        let many: serde_json::Map<String, Value> =
            (0..1000).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(
            problems("list", Value::Object(many)).len(),
            MAX_INPUT_PROBLEMS
        );

        let odd = problems("list", json!({"a/b~c.d": 1, "ünï": 2}));
        assert!(
            odd.contains(&"input: unexpected property \"a/b~c.d\"".to_owned()),
            "{odd:?}"
        );
        assert_eq!(display_path("/a~1b~0c.d/0/x"), "input[\"a/b~c.d\"][0].x");
        assert_eq!(truncate("ééé", 3), "é...");
    }

    #[test]
    fn unknown_tools_list_the_known_ones() {
        let msgs = problems("rm -rf /", json!({}));
        assert_eq!(
            msgs,
            vec!["unknown tool \"rm -rf /\" (known tools: calc, list, note, pause)"]
        );
        let long = "t".repeat(10_000);
        assert!(problems(&long, json!({}))[0].len() < 200);
    }

    #[test]
    fn a_tool_with_a_broken_schema_is_an_error_not_a_panic() {
        let tb = Toolbox::with_tools(vec![tool("broken", json!({"type": "no-such-type"}))]);
        let msgs = tb
            .check_input("broken", &json!({}))
            .err()
            .unwrap_or_default();
        assert_eq!(msgs.len(), 1);
        assert!(
            msgs[0].contains("tool broken has an invalid input schema"),
            "{msgs:?}"
        );
    }

    #[test]
    fn the_first_tool_of_a_name_wins() {
        let tb = Toolbox::with_tools(vec![
            tool("a", json!({"type": "object"})),
            tool("a", json!({"type": "string"})),
        ]);
        assert_eq!(tb.names(), vec!["a"]);
        assert!(tb.check_input("a", &json!({})).is_ok());
    }

    #[tokio::test]
    async fn call_validates_before_executing() {
        let calls = Arc::new(AtomicU32::new(0));
        let echo = SchemaTool {
            name: "echo",
            schema: json!({"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": false}),
            calls: calls.clone(),
        };
        let tb = Toolbox::with_tools(vec![Arc::new(echo)]);
        let ctx = ToolContext::adhoc();
        assert_eq!(
            tb.call(&ctx, "echo", json!({"n": 2})).await,
            Ok(json!({"n": 2}))
        );
        let bad = tb.call(&ctx, "echo", json!({"n": "2"})).await;
        assert_eq!(
            bad,
            Err(ToolError::InvalidInput(
                "input.n: \"2\" is not of type \"integer\"".into()
            ))
        );
        let unknown = tb.call(&ctx, "nope", json!({})).await;
        assert!(
            matches!(unknown, Err(ToolError::InvalidInput(m)) if m.contains("unknown tool \"nope\""))
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "invalid calls never reach the tool"
        );
    }
}
