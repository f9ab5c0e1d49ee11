//! What a worker runs beyond the built-ins ([`Connectors`]): the tools Kubernetes objects
//! define (a [`Binding`] from the run's catalog) — HTTP tools, and MCP tools through one
//! client, one session, per server and worker, opened on first use and kept for the worker's
//! life — and the model calls of `llm` steps.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crane_core::model::ModelConfig;
use crane_core::tool::{Binding, Connectors, ModelFuture, Tool, ToolError};
use serde_json::Value;

use crate::http::HttpTool;
use crate::mcp::{McpClient, McpTool};
use crate::secrets::Secrets;

/// Builds runners for bindings; shared by every step a worker runs.
pub struct Remote {
    http: reqwest::Client,
    secrets: Arc<Secrets>,
    /// One client per (server, URL, resolved headers, timeout): a rotated Secret or an
    /// edited MCPServer gets a fresh session, an unchanged one keeps its session.
    mcp: Mutex<HashMap<(String, String, u64), Arc<McpClient>>>,
}

impl Remote {
    pub fn new(secrets: Secrets) -> Result<Self, ToolError> {
        let http = reqwest::Client::builder()
            // A redirect would send the call (and its headers) somewhere the Tool object
            // does not name; a 3xx is reported instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ToolError::Failed(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            secrets: Arc::new(secrets),
            mcp: Mutex::new(HashMap::new()),
        })
    }

    /// What runs a step of a tool bound by `binding`.
    fn bound(&self, binding: &Binding) -> Result<Arc<dyn Tool>, ToolError> {
        match binding {
            Binding::Http {
                url,
                method,
                headers,
                timeout_seconds,
            } => Ok(Arc::new(HttpTool::new(
                self.http.clone(),
                self.secrets.clone(),
                url,
                method,
                headers.clone(),
                *timeout_seconds,
            )?)),
            Binding::Mcp {
                server,
                url,
                headers,
                timeout_seconds,
                tool,
            } => {
                let headers = self.secrets.resolve(headers)?;
                let client = self.mcp_client(server, url, headers, *timeout_seconds);
                Ok(Arc::new(McpTool {
                    client,
                    tool: tool.clone(),
                }))
            }
        }
    }

    /// The shared client of MCP server `server` at `url`.
    pub fn mcp_client(
        &self,
        server: &str,
        url: &str,
        headers: Vec<(String, String)>,
        timeout_seconds: u32,
    ) -> Arc<McpClient> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&headers, timeout_seconds).hash(&mut h);
        let key = (server.to_owned(), url.to_owned(), h.finish());
        let mut map = self.mcp.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                Arc::new(McpClient::new(
                    self.http.clone(),
                    url,
                    headers,
                    Duration::from_secs(u64::from(timeout_seconds.max(1))),
                ))
            })
            .clone()
    }
}

impl Connectors for Remote {
    fn runner(&self, binding: &Binding) -> Result<Arc<dyn Tool>, ToolError> {
        self.bound(binding)
    }

    fn chat<'a>(&'a self, model: &'a ModelConfig, input: Value) -> ModelFuture<'a> {
        Box::pin(async move {
            let input = crate::llm::LlmInput::parse(&input)?;
            let provider = crate::llm::provider(model, &self.secrets)?;
            let (output, completion) = crate::llm::call(&self.http, &provider, &input, &[]).await?;
            Ok((output, crate::llm::usage(completion.usage)))
        })
    }
}
