//! The tool seam: what a tool *is* ([`ToolSpec`]: name, description, input schema, serializable,
//! so the operator can build one from a Kubernetes object and a worker can read it back), the
//! [`Catalog`] of specs a run may use (validation and both planners take one from their caller),
//! and what a tool *does* ([`Tool`], executed through a [`Toolbox`] that validates first).
//! Specs and execution are separate so the operator validates and plans with a catalog without
//! linking a single tool implementation.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::Instrument as _;

use crate::plan::StepId;
use crate::text;

/// The future a tool returns (boxed so tools can live behind `dyn Tool`).
pub type ToolFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, ToolError>> + Send + 'a>>;

/// The most bytes one step's output (as JSON) may take; a larger output fails the step, so
/// one tool cannot fill Redis or the operator's memory.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;
/// The most bytes all outputs of one run may take together; the step whose output would
/// cross it fails.
pub const MAX_RUN_OUTPUT_BYTES: usize = 16 << 20;

/// A step's output as stored (JSON text), or [`ToolError::OutputTooLarge`].
pub fn output_json(output: &Value) -> Result<String, ToolError> {
    let text = output.to_string();
    if text.len() > MAX_OUTPUT_BYTES {
        return Err(ToolError::OutputTooLarge { bytes: text.len() });
    }
    Ok(text)
}

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
    /// The service asked to be called again later (HTTP 429/503 with `Retry-After`): a retry
    /// waits at least this long.
    #[error("transient failure: {message} (retry after {} s)", .retry_after.as_secs())]
    RetryAfter {
        message: String,
        retry_after: Duration,
    },
    /// The output is larger than [`MAX_OUTPUT_BYTES`]: the same call would produce it again.
    #[error(
        "the output is {bytes} bytes of JSON; a step's output may be at most {MAX_OUTPUT_BYTES} bytes (1 MiB)"
    )]
    OutputTooLarge { bytes: usize },
}

impl ToolError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Transient(_) | Self::Timeout(_) | Self::RetryAfter { .. }
        )
    }

    /// The least a retry must wait, when the failing service said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RetryAfter { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Stable, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "invalid_input",
            Self::Failed(_) => "failed",
            Self::Transient(_) => "transient",
            Self::Timeout(_) => "timeout",
            Self::RetryAfter { .. } => "retry_after",
            Self::OutputTooLarge { .. } => "output_too_large",
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

/// A tool as plans, validation and planners see it. The same JSON shape is what the LLM
/// planner is shown and what MCP's `tools/list` returns (`inputSchema`, `annotations`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    /// The name plans use, e.g. `todo_store.add`.
    pub name: String,
    /// One or two sentences for people and for the LLM planner.
    #[serde(default)]
    pub description: String,
    /// JSON schema of the input object.
    pub input_schema: Value,
    /// Hints about the tool's behaviour (e.g. MCP's `readOnlyHint`); informational.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
    /// How to run it, for tools defined by Kubernetes objects; built-ins have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
    /// Whether each call waits for a person's approval first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_approval: bool,
    /// The Kubernetes object a bound tool comes from. A run keeps the bindings it was planned
    /// with; workers check this object was not deleted since, before each call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ToolSource>,
}

/// The object behind a bound tool: kind (`Tool` or `MCPServer`), name and UID (a deleted
/// and re-created object is another object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSource {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// How a worker runs a tool that is not built in, as the operator resolved it from the
/// Kubernetes object that defines the tool. Endpoints come only from here (never from a plan
/// or a step input), and header secrets only as references: their values are read by the
/// worker that calls the tool, from the Secret mounted into its pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Binding {
    /// A `Tool` object: one HTTP endpoint.
    #[serde(rename_all = "camelCase")]
    Http {
        url: String,
        /// GET sends the input as query parameters; the others as a JSON body.
        method: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers: Vec<Header>,
        timeout_seconds: u32,
    },
    /// A tool of an `MCPServer` object, called by its name on that server.
    #[serde(rename_all = "camelCase")]
    Mcp {
        /// The MCPServer's name (sessions are kept per server).
        server: String,
        url: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers: Vec<Header>,
        timeout_seconds: u32,
        /// The tool's name on the server (the catalog name is `<server>.<tool>`).
        tool: String,
    },
}

/// A request header: a literal value, or a reference to a key of a Secret in the run's
/// namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretKey>,
}

/// A key of a Secret, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretKey {
    pub name: String,
    pub key: String,
}

impl ToolSpec {
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            input_schema,
            annotations: Map::new(),
            binding: None,
            requires_approval: false,
            source: None,
        }
    }
}

/// Longest rendering of a user value inside an error message; inputs can be megabytes long
/// and a message must stay readable.
const MAX_VALUE_IN_MESSAGE: usize = 80;

/// Most schema problems reported for one input: enough to fix it, bounded for hostile inputs.
const MAX_INPUT_PROBLEMS: usize = 20;

/// Up to this many tools, an unknown-tool message lists them all; beyond, the closest names.
const MAX_NAMES_LISTED: usize = 12;

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
    spec: ToolSpec,
    /// The compiled input schema, or why the spec's schema does not compile (reported on every
    /// use of the tool instead of failing the whole catalog: one bad Tool object must not break
    /// a namespace).
    validator: Result<jsonschema::Validator, String>,
}

/// The tools a run may use, by name, with their input validators compiled once. Cheap to
/// clone. Validation, both planners and workers receive one from their caller: built-ins
/// plus whatever the caller adds.
#[derive(Clone, Default)]
pub struct Catalog {
    entries: Arc<BTreeMap<String, Entry>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("tools", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl Catalog {
    /// Exactly these specs. When two share a name the first one wins.
    pub fn new(specs: impl IntoIterator<Item = ToolSpec>) -> Catalog {
        let mut entries = BTreeMap::new();
        for spec in specs {
            if entries.contains_key(&spec.name) {
                continue;
            }
            let validator = jsonschema::validator_for(&spec.input_schema).map_err(|e| {
                format!(
                    "tool {} has an invalid input schema: {e}",
                    text::truncate(&spec.name, MAX_VALUE_IN_MESSAGE)
                )
            });
            entries.insert(spec.name.clone(), Entry { spec, validator });
        }
        Catalog {
            entries: Arc::new(entries),
        }
    }

    /// The built-in tools every run has (see [`crate::builtins`]).
    pub fn builtins() -> Catalog {
        Catalog::new(crate::builtins::specs())
    }

    /// This catalog plus `more` (names already present keep their spec).
    pub fn with(&self, more: impl IntoIterator<Item = ToolSpec>) -> Catalog {
        Catalog::new(self.specs().cloned().chain(more))
    }

    /// Only the tools `keep` accepts (e.g. what a WorkerPool serves).
    pub fn filtered(&self, keep: impl Fn(&ToolSpec) -> bool) -> Catalog {
        Catalog::new(self.specs().filter(|s| keep(s)).cloned())
    }

    /// Tool names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&ToolSpec> {
        self.entries.get(name).map(|e| &e.spec)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The specs, sorted by name.
    pub fn specs(&self) -> impl Iterator<Item = &ToolSpec> {
        self.entries.values().map(|e| &e.spec)
    }

    /// `unknown tool "x" (known tools: a, b, c)` for a small catalog; for a large one the
    /// closest names: `unknown tool "x" (closest: a, b, c; 40 tools in all)`.
    pub fn unknown_tool_message(&self, name: &str) -> String {
        let shown = text::truncate(name, MAX_VALUE_IN_MESSAGE);
        if self.entries.len() <= MAX_NAMES_LISTED {
            let names: Vec<&str> = self.names().collect();
            return format!(
                "unknown tool \"{shown}\" (known tools: {})",
                names.join(", ")
            );
        }
        let probe = text::prefix(name, 2 * MAX_VALUE_IN_MESSAGE);
        let mut ranked: Vec<(usize, &str)> = self
            .names()
            .map(|known| (text::edit_distance(probe, known), known))
            .collect();
        ranked.sort();
        let closest: Vec<&str> = ranked.iter().take(3).map(|(_, n)| *n).collect();
        format!(
            "unknown tool \"{shown}\" (closest: {}; {} tools in all)",
            closest.join(", "),
            self.entries.len()
        )
    }

    /// Checks `input` against the tool's schema; every problem as one message naming the field.
    pub fn check_input(&self, tool: &str, input: &Value) -> Result<(), Vec<String>> {
        self.input_problems(tool, input)
            .map_err(|problems| problems.into_iter().map(|p| p.message).collect())
    }

    /// Like [`Catalog::check_input`], with where each problem is, so plan validation can
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
                            text::truncate(&name, MAX_VALUE_IN_MESSAGE)
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
                                text::truncate(name, MAX_VALUE_IN_MESSAGE)
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
                            text::truncate(&error.instance().to_string(), MAX_VALUE_IN_MESSAGE)
                        ),
                    });
                }
                _ => problems.push(InputProblem {
                    pointer,
                    is_type_error: false,
                    message: format!("{place}: {}", value_then_reason(&error)),
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
}

/// A schema error as "<value> <reason>" with the value cut, never the reason: jsonschema puts
/// the (possibly huge) offending value first, and a plain cut would lose why it is wrong.
fn value_then_reason(error: &jsonschema::ValidationError<'_>) -> String {
    let full = error.to_string();
    let value = error.instance().to_string();
    match full.strip_prefix(value.as_str()) {
        Some(reason) => format!(
            "{} {}",
            text::truncate(&value, MAX_VALUE_IN_MESSAGE),
            text::truncate(reason.trim_start(), 3 * MAX_VALUE_IN_MESSAGE)
        ),
        None => text::truncate(&full, 4 * MAX_VALUE_IN_MESSAGE),
    }
}

/// What a tool does. Implementations live outside this crate (`crane-tools`); the spec that
/// describes the input comes from the [`Catalog`].
pub trait Tool: Send + Sync {
    /// Runs the tool on an input already validated against its spec's schema, with variables
    /// resolved. Timeouts are the caller's job.
    fn execute<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a>;

    /// Whether the tool depends on something shared outside the worker (a service, a
    /// store): only such tools' transient failures and timeouts count towards the pool's
    /// circuit breaker. A pure local tool (arithmetic, a sleep) says nothing about anyone
    /// else's calls when it times out.
    fn calls_out(&self) -> bool {
        false
    }
}

/// The future of a model call: the step's output and the tokens the provider counted.
pub type ModelFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(Value, crate::model::Usage), ToolError>> + Send + 'a>>;

/// What a worker runs beyond its built-in [`Toolbox`]: the tools a run binds (HTTP, MCP),
/// whose runners depend on the binding the run carries, and the model calls of `llm` steps.
/// Implemented in `crane-tools`; the engine decides when a call may go out (budget, the
/// model's limits), this only makes it.
pub trait Connectors: Send + Sync {
    /// What runs a step of a tool bound by `binding`.
    fn runner(&self, binding: &Binding) -> Result<Arc<dyn Tool>, ToolError>;

    /// One `llm` step on `model`, `input` validated against the `llm` spec and resolved.
    fn chat<'a>(&'a self, model: &'a crate::model::ModelConfig, input: Value) -> ModelFuture<'a>;
}

/// A catalog and the implementations that run its tools: what an engine executes with.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Toolbox {
    catalog: Catalog,
    tools: Arc<BTreeMap<String, Arc<dyn Tool>>>,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolbox")
            .field("catalog", &self.catalog)
            .field("runnable", &self.tools.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Toolbox {
    /// `specs`, each run by the tool given with it.
    pub fn new(tools: impl IntoIterator<Item = (ToolSpec, Arc<dyn Tool>)>) -> Toolbox {
        let mut specs = Vec::new();
        let mut runners = BTreeMap::new();
        for (spec, tool) in tools {
            runners.entry(spec.name.clone()).or_insert(tool);
            specs.push(spec);
        }
        Toolbox {
            catalog: Catalog::new(specs),
            tools: Arc::new(runners),
        }
    }

    /// This toolbox plus `more` (names already present keep theirs).
    pub fn with(&self, more: impl IntoIterator<Item = (ToolSpec, Arc<dyn Tool>)>) -> Toolbox {
        let existing = self
            .catalog
            .specs()
            .filter_map(|s| Some((s.clone(), self.tools.get(&s.name)?.clone())));
        let all: Vec<_> = existing.chain(more).collect();
        Toolbox::new(all)
    }

    /// Only the tools `keep` accepts (e.g. what a WorkerPool serves): the others are unknown
    /// to it, so a step that names one fails instead of running.
    pub fn filtered(&self, keep: impl Fn(&ToolSpec) -> bool) -> Toolbox {
        let kept: Vec<_> = self
            .catalog
            .specs()
            .filter(|s| keep(s))
            .filter_map(|s| Some((s.clone(), self.tools.get(&s.name)?.clone())))
            .collect();
        Toolbox::new(kept)
    }

    /// Whether `tool` depends on something shared outside the worker (see
    /// [`Tool::calls_out`]); unknown tools do not.
    pub fn calls_out(&self, tool: &str) -> bool {
        self.tools.get(tool).is_some_and(|t| t.calls_out())
    }

    /// What this toolbox can run, as validation and planners see it.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Validates `input` against the tool's spec, then runs the tool, in an
    /// `execute_tool {tool}` span (OpenTelemetry GenAI conventions: `gen_ai.tool.name`, and
    /// `error.type` when it fails). Timeouts are the caller's job (the engines apply the
    /// step timeout around this call).
    pub async fn call(
        &self,
        ctx: &ToolContext,
        tool: &str,
        input: Value,
    ) -> Result<Value, ToolError> {
        traced(ctx, tool, self.run(ctx, tool, input)).await
    }

    async fn run(&self, ctx: &ToolContext, tool: &str, input: Value) -> Result<Value, ToolError> {
        let Some(runner) = self.tools.get(tool) else {
            return Err(ToolError::InvalidInput(
                self.catalog.unknown_tool_message(tool),
            ));
        };
        self.catalog
            .check_input(tool, &input)
            .map_err(|problems| ToolError::InvalidInput(problems.join("; ")))?;
        runner.execute(ctx, input).await
    }
}

/// Runs `call` (one call of `tool`) in an `execute_tool {tool}` span (OpenTelemetry GenAI
/// conventions: `gen_ai.tool.name`, and `error.type` with an error status when it fails).
/// [`Toolbox::call`] uses it, and so must every other way a step calls a tool (the
/// namespace's bound HTTP and MCP tools), so each attempt has its tool span and the called
/// service sees that span in `traceparent`.
pub async fn traced(
    ctx: &ToolContext,
    tool: &str,
    call: impl std::future::Future<Output = Result<Value, ToolError>>,
) -> Result<Value, ToolError> {
    let span = tracing::info_span!(
        "execute_tool",
        otel.name = %format_args!("execute_tool {tool}"),
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %tool,
        gen_ai.tool.type = "function",
        gen_ai.tool.call.id = %format_args!("{}/{}/{}", ctx.run_id, ctx.step_id, ctx.attempt),
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    let result = call.instrument(span.clone()).await;
    if let Err(e) = &result {
        span.record("error.type", e.metric_label());
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", tracing::field::display(e));
    }
    result
}

/// `/a/0/b~1c` -> `input.a[0]["b/c"]`-ish: dotted for plain names, brackets for indices, and
/// JSON-quoted for names a dot path cannot show.
pub fn display_path(pointer: &str) -> String {
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
            out.push_str(&text::truncate(&seg, MAX_VALUE_IN_MESSAGE));
        } else {
            out.push('[');
            out.push_str(&text::truncate(
                &Value::String(seg).to_string(),
                MAX_VALUE_IN_MESSAGE,
            ));
            out.push(']');
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Small specs with fixed schemas, so tests of the catalog and validation do not depend on
    //! the real tools' details.

    use serde_json::{Value, json};

    use super::{Catalog, ToolSpec};

    pub fn spec(name: &str, schema: Value) -> ToolSpec {
        ToolSpec::new(name, "echoes its input", schema)
    }

    /// `calc {expression: string}`, `pause {ms: integer 0..=60000}`, `note {title: string}`,
    /// `list {}`: the shapes of the real tools.
    pub fn catalog() -> Catalog {
        let strict = |props: Value, required: Value| json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
        Catalog::new([
            spec(
                "calc",
                strict(
                    json!({"expression": {"type": "string"}}),
                    json!(["expression"]),
                ),
            ),
            spec(
                "pause",
                strict(
                    json!({"ms": {"type": "integer", "minimum": 0, "maximum": 60000}}),
                    json!(["ms"]),
                ),
            ),
            spec(
                "note",
                strict(
                    json!({"title": {"type": "string", "minLength": 1}}),
                    json!(["title"]),
                ),
            ),
            spec("list", strict(json!({}), json!([]))),
        ])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::json;

    use super::test_support::{catalog, spec};
    use super::*;

    fn problems(tool: &str, input: Value) -> Vec<String> {
        catalog()
            .check_input(tool, &input)
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn names_are_sorted_and_lookup_works() {
        let c = catalog();
        assert_eq!(
            c.names().collect::<Vec<_>>(),
            vec!["calc", "list", "note", "pause"]
        );
        assert_eq!(c.get("note").map(|t| t.name.as_str()), Some("note"));
        assert!(c.get("Note").is_none());
        assert!(c.get("").is_none());
        assert_eq!(c.specs().count(), 4);
        let more = c.with([spec("extra", json!({"type": "object"}))]);
        assert_eq!(more.len(), 5);
        assert_eq!(c.len(), 4, "with() leaves the original alone");
        let only = more.filtered(|s| s.name.starts_with('e'));
        assert_eq!(only.names().collect::<Vec<_>>(), vec!["extra"]);
    }

    #[test]
    fn specs_round_trip_through_json() {
        let mut s = spec("a.b", json!({"type": "object"}));
        s.annotations.insert("readOnlyHint".into(), json!(true));
        let text = serde_json::to_string(&s).unwrap_or_default();
        assert!(text.contains("\"inputSchema\""), "{text}");
        let back: ToolSpec = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, s);
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
            catalog()
                .check_input("calc", &json!({"expression": "1+1"}))
                .is_ok()
        );
    }

    #[test]
    fn hostile_inputs_give_short_bounded_messages() {
        let long = "y".repeat(5000);
        let msgs = problems("calc", json!({"expression": long}));
        assert!(
            msgs.is_empty(),
            "calc's test schema has no maxLength: {msgs:?}"
        );
        let capped = Catalog::new([spec(
            "capped",
            json!({"type": "object", "properties": {"t": {"type": "string", "maxLength": 10}}}),
        )]);
        let msgs = capped
            .check_input("capped", &json!({"t": long}))
            .err()
            .unwrap_or_default();
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].len() < 400, "{}", msgs[0]);
        assert!(
            msgs[0].ends_with("is longer than 10 characters"),
            "the reason survives: {}",
            msgs[0]
        );

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
    }

    #[test]
    fn unknown_tools_list_the_known_ones_or_the_closest() {
        let msgs = problems("rm -rf /", json!({}));
        assert_eq!(
            msgs,
            vec!["unknown tool \"rm -rf /\" (known tools: calc, list, note, pause)"]
        );
        let long = "t".repeat(10_000);
        assert!(problems(&long, json!({}))[0].len() < 200);

        let big = Catalog::new(
            (0..40).map(|i| spec(&format!("server.tool-{i:02}"), json!({"type": "object"}))),
        );
        assert_eq!(
            big.unknown_tool_message("server.tool-7"),
            "unknown tool \"server.tool-7\" (closest: server.tool-07, server.tool-17, server.tool-27; 40 tools in all)"
        );
        assert!(big.unknown_tool_message(&long).len() < 300);
    }

    #[test]
    fn a_spec_with_a_broken_schema_is_an_error_not_a_panic() {
        let c = Catalog::new([spec("broken", json!({"type": "no-such-type"}))]);
        let msgs = c
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
    fn the_first_spec_of_a_name_wins() {
        let c = Catalog::new([
            spec("a", json!({"type": "object"})),
            spec("a", json!({"type": "string"})),
        ]);
        assert_eq!(c.names().collect::<Vec<_>>(), vec!["a"]);
        assert!(c.check_input("a", &json!({})).is_ok());
    }

    /// Echoes its input; counts calls.
    struct Echo(Arc<AtomicU32>);

    impl Tool for Echo {
        fn execute<'a>(&'a self, _ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(input) })
        }
    }

    #[tokio::test]
    async fn call_validates_before_executing() {
        let calls = Arc::new(AtomicU32::new(0));
        let echo = spec(
            "echo",
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": false}),
        );
        let tb = Toolbox::new([(echo, Arc::new(Echo(calls.clone())) as Arc<dyn Tool>)]);
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
        assert!(tb.filtered(|s| s.name != "echo").catalog().is_empty());
        let more = tb.with([(
            spec("x", json!({"type": "object"})),
            Arc::new(Echo(calls.clone())) as Arc<dyn Tool>,
        )]);
        assert_eq!(more.catalog().len(), 2);
        assert_eq!(more.call(&ctx, "echo", json!({})).await, Ok(json!({})));
    }
}

#[cfg(test)]
mod span_tests {
    //! What [`traced`] puts on the `execute_tool` span, as a subscriber sees it.

    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::{Context, SubscriberExt};

    use super::*;

    /// Every span opened and every field recorded, as `name=value` lines.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    struct Fields<'a>(&'a mut Vec<String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push(format!("{}={value:?}", field.name()));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push(format!("{}={value}", field.name()));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
            let mut seen = self.0.lock().unwrap();
            seen.push(format!("span {}", attrs.metadata().name()));
            attrs.record(&mut Fields(&mut seen));
        }
        fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
            values.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
    }

    #[tokio::test]
    async fn a_call_outside_the_toolbox_gets_its_tool_span_and_error_status() {
        let seen = Seen::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(seen.clone()));
        let ctx = ToolContext::adhoc();
        let ok = traced(&ctx, "adder", async { Ok(json!({"sum": 42})) }).await;
        assert_eq!(ok.unwrap(), json!({"sum": 42}));
        let lines = std::mem::take(&mut *seen.0.lock().unwrap());
        assert!(lines.contains(&"span execute_tool".to_owned()), "{lines:?}");
        assert!(
            lines.contains(&"otel.name=execute_tool adder".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"gen_ai.tool.name=adder".to_owned()),
            "{lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l.starts_with("error.type")),
            "{lines:?}"
        );

        let err = traced(&ctx, "adder", async {
            Err(ToolError::Transient("503 from the server".into()))
        })
        .await;
        assert!(err.is_err());
        let lines = std::mem::take(&mut *seen.0.lock().unwrap());
        let label = ToolError::Transient(String::new()).metric_label();
        assert!(lines.contains(&format!("error.type={label}")), "{lines:?}");
        assert!(
            lines.contains(&"otel.status_code=ERROR".to_owned()),
            "{lines:?}"
        );
    }
}
