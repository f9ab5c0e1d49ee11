//! The `Tool` and `MCPServer` custom resources (`crane.dev/v1alpha1`): a team's own tools.
//! A Tool is one HTTP endpoint whose `metadata.name` is the tool name plans use; an
//! MCPServer is a Model Context Protocol server whose discovered tools are named
//! `<MCPServer name>.<tool name>`. Endpoints and header Secrets come only from these objects.

// `printcolumn(...)` repeats keys such as `type_` by design; clippy reads them as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[cfg(doc)]
use super::schema::TOOL_NAME_PATTERN;
use super::schema::{any_json_schema, any_object_schema};

/// Condition type of Tools and MCPServers: usable by the next AgentRun.
pub const CONDITION_TOOL_READY: &str = "Ready";

/// One HTTP tool: what it does, its input schema, and the endpoint a worker calls.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "crane.dev",
    version = "v1alpha1",
    kind = "Tool",
    namespaced,
    category = "crane",
    status = "ToolStatus",
    derive = "PartialEq",
    doc = "A tool that AgentRuns in this namespace may call: one HTTP endpoint. Its name is the tool name plans use.",
    printcolumn(
        name = "DESCRIPTION",
        type_ = "string",
        json_path = ".spec.description"
    ),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.http.url"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HttpToolSpec {
    /// What the tool does, for people and for the LLM planner (one or two sentences).
    #[schemars(length(min = 1, max = 1024))]
    pub description: String,

    /// JSON schema of the tool's input object; inputs are validated against it before any
    /// step runs. Default: any object.
    #[serde(default = "default_input_schema")]
    #[schemars(schema_with = "any_object_schema")]
    pub input_schema: Value,

    /// The endpoint.
    pub http: HttpEndpoint,

    /// Whether every call waits for a person's approval (an Approval object) first.
    #[serde(default)]
    pub requires_approval: bool,
}

/// An HTTP endpoint a worker calls.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpEndpoint {
    /// http:// or https:// URL. The input never changes the host or the path: it goes into
    /// the query string (GET) or the JSON body.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("spec.http.url must start with http:// or https://"))]
    pub url: String,

    /// GET sends the input as query parameters; POST (default), PUT, PATCH and DELETE as a
    /// JSON body.
    #[serde(default)]
    pub method: HttpMethod,

    /// Request headers: a literal value, or a key of a Secret in this namespace (read only
    /// by the worker pods that call the tool, never stored elsewhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub headers: Vec<HeaderSpec>,

    /// Time limit of one call, in seconds (the step's own timeout still applies).
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: u32,
}

/// An HTTP method.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// One request header.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)").message("a header takes exactly one of value and valueFrom"))]
pub struct HeaderSpec {
    /// Header name, e.g. Authorization.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    )]
    pub name: String,
    /// A literal value (not a secret: it is stored in the run's state like any spec field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    /// The value from a key of a Secret in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<HeaderSource>,
}

/// Where a header value comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderSource {
    pub secret_key_ref: SecretKeySelector,
}

/// A key of a Secret in the same namespace.
#[derive(
    KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct SecretKeySelector {
    /// The Secret's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The key in the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// What the operator observed of a Tool or a Model: whether it is usable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadyStatus {
    /// Ready: usable by the next AgentRun; else why not (a Tool: NameTaken when a built-in
    /// tool has the same name, InvalidSchema; a Model: the provider's error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A Tool's status.
pub type ToolStatus = ReadyStatus;

/// A Model Context Protocol server (Streamable HTTP) whose tools AgentRuns in this
/// namespace may call, as `<MCPServer name>.<tool name>`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "crane.dev",
    version = "v1alpha1",
    kind = "MCPServer",
    plural = "mcpservers",
    namespaced,
    category = "crane",
    status = "MCPServerStatus",
    derive = "PartialEq",
    doc = "An MCP server (Streamable HTTP) whose tools AgentRuns in this namespace may call.",
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "TOOLS", type_ = "integer", json_path = ".status.toolCount"),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerSpec {
    /// The server's Streamable HTTP endpoint, e.g. http://mcp.tools.svc:3001/mcp.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("spec.url must start with http:// or https://"))]
    pub url: String,

    /// Headers sent on every request (e.g. an API key from a Secret).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub headers: Vec<HeaderSpec>,

    /// Time limit of one request, in seconds.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: u32,

    /// Only these of the server's tools are offered (names as the server gives them);
    /// absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 256),
        inner(
            length(min = 1, max = 128),
            regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
        )
    )]
    pub tools: Option<Vec<String>>,

    /// Tools (names as the server gives them) whose every call waits for a person's approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    pub requires_approval: Vec<String>,
}

/// What the operator discovered on the server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MCPServerStatus {
    /// The server's tools (after spec.tools), as `tools/list` gave them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub tools: Vec<DiscoveredTool>,
    /// How many tools are offered (the TOOLS column).
    #[serde(default)]
    pub tool_count: u32,
    /// Ready: the last discovery succeeded (else the server's error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// When the tools were last listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_discovery_time: Option<Time>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One tool of an MCP server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredTool {
    /// The tool's name on the server (plans say `<MCPServer name>.<name>`).
    #[schemars(length(max = 128))]
    pub name: String,
    /// What the server says the tool does.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub description: String,
    /// JSON schema of the tool's input, as the server gave it.
    #[schemars(schema_with = "any_object_schema")]
    pub input_schema: Value,
    /// The server's hints about the tool (readOnlyHint, destructiveHint, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(schema_with = "any_json_schema")]
    pub annotations: Map<String, Value>,
}

fn default_input_schema() -> Value {
    serde_json::json!({"type": "object"})
}

fn default_timeout_seconds() -> u32 {
    30
}

/// Plans name MCP tools `<server>.<tool>`; both parts must fit the tool-name pattern.
pub fn mcp_tool_name(server: &str, tool: &str) -> String {
    format!("{server}.{tool}")
}

/// Whether `name` can stand in a plan ([`TOOL_NAME_PATTERN`]).
pub fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
