//! The catalog of a namespace: the built-in tools, its Ready `Tool`s and the tools of its
//! Ready `MCPServer`s (named `<server>.<tool>`), each with the [`Binding`] a worker runs it by.
//! Plan validation, the LLM planner and the workers all get their catalog from here, from
//! caches the controllers keep warm (no API call per run). Catalogs are built once per change
//! of the namespace's tool objects and shared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crane_engine::tombstones;
use futures::FutureExt;
use redis::aio::ConnectionManager;
use tracing::{info, warn};

use crane_core::model::{ModelConfig, ModelLimits};
use crane_core::tool::{Binding, Catalog, Header, SecretKey, ToolSource, ToolSpec};
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::controller::{Shutdown, condition};
use crane_api::{
    CONDITION_TOOL_READY, HeaderSpec, MCPServer, Model, SecretKeySelector, Tool, mcp_tool_name,
};

/// The namespaces' catalogs, from the Tool and MCPServer caches.
pub struct Catalogs {
    tools: Vec<Store<Tool>>,
    servers: Vec<Store<MCPServer>>,
    models: Vec<Store<Model>>,
    /// Per namespace: the objects' versions the catalog was built from, and the catalog.
    cache: Mutex<HashMap<String, (Vec<String>, Catalog)>>,
}

impl Catalogs {
    pub fn new(
        tools: Vec<Store<Tool>>,
        servers: Vec<Store<MCPServer>>,
        models: Vec<Store<Model>>,
    ) -> Self {
        Self {
            tools,
            servers,
            models,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The namespace's Tools and MCPServers, sorted by name.
    fn objects(&self, namespace: &str) -> (Vec<Arc<Tool>>, Vec<Arc<MCPServer>>) {
        let in_ns = |ns: Option<String>| ns.as_deref() == Some(namespace);
        let mut tools: Vec<Arc<Tool>> = self
            .tools
            .iter()
            .flat_map(Store::state)
            .filter(|t| in_ns(t.namespace()))
            .collect();
        let mut servers: Vec<Arc<MCPServer>> = self
            .servers
            .iter()
            .flat_map(Store::state)
            .filter(|s| in_ns(s.namespace()))
            .collect();
        tools.sort_by_key(|t| t.name_any());
        servers.sort_by_key(|s| s.name_any());
        (tools, servers)
    }

    /// The namespace's Models, sorted by name.
    fn model_objects(&self, namespace: &str) -> Vec<Arc<Model>> {
        let mut models: Vec<Arc<Model>> = self
            .models
            .iter()
            .flat_map(Store::state)
            .filter(|m| m.namespace().as_deref() == Some(namespace))
            .collect();
        models.sort_by_key(|m| m.name_any());
        models
    }

    /// The Secrets the namespace's tool and model objects reference (what its worker pods
    /// mount).
    pub fn secrets_for(&self, namespace: &str) -> Vec<String> {
        let (tools, servers) = self.objects(namespace);
        let mut names = referenced_secrets(&tools, &servers);
        names.extend(
            self.model_objects(namespace)
                .iter()
                .filter_map(|m| m.spec.api_key_secret_ref.as_ref().map(|r| r.name.clone())),
        );
        names.sort();
        names.dedup();
        names
    }

    /// The namespace's Ready Models, as workers and planners need them.
    pub fn models_for(&self, namespace: &str) -> Vec<ModelConfig> {
        self.model_objects(namespace)
            .iter()
            .filter(|m| is_ready(m.status.as_ref().map_or(&[][..], |s| &s.conditions)))
            .map(|m| model_config(m))
            .collect()
    }

    /// The catalog runs in `namespace` use.
    pub fn for_namespace(&self, namespace: &str) -> Catalog {
        let (tools, servers) = self.objects(namespace);
        let versions: Vec<String> = tools
            .iter()
            .map(|t| {
                format!(
                    "t/{}/{}",
                    t.name_any(),
                    t.resource_version().unwrap_or_default()
                )
            })
            .chain(servers.iter().map(|s| {
                format!(
                    "m/{}/{}",
                    s.name_any(),
                    s.resource_version().unwrap_or_default()
                )
            }))
            .collect();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, catalog)) = cache.get(namespace)
            && *v == versions
        {
            return catalog.clone();
        }
        let catalog = build(&tools, &servers);
        cache.insert(namespace.to_owned(), (versions, catalog.clone()));
        catalog
    }
}

/// How often the caches are compared with the tool objects known before: the bound on how
/// long a deleted object's tools can still be called by runs planned before.
pub const DELETIONS_EVERY: Duration = Duration::from_secs(1);

impl Catalogs {
    /// UID → namespace of every Tool and MCPServer in the caches.
    fn live_objects(&self) -> HashMap<String, String> {
        let entry =
            |meta: &kube::api::ObjectMeta| Some((meta.uid.clone()?, meta.namespace.clone()?));
        self.tools
            .iter()
            .flat_map(Store::state)
            .filter_map(|t| entry(&t.metadata))
            .chain(
                self.servers
                    .iter()
                    .flat_map(Store::state)
                    .filter_map(|s| entry(&s.metadata)),
            )
            .collect()
    }

    /// Records in Redis every Tool and MCPServer that goes away (`crane_engine::tombstones`),
    /// so workers stop calling its tools for runs planned before, until `shutdown`. Deletions
    /// while no operator ran are found by comparing with the objects Redis knew of. `scope`:
    /// the watched namespaces (empty: all).
    pub async fn record_deletions(
        self: Arc<Self>,
        mut redis: ConnectionManager,
        scope: Vec<String>,
        shutdown: Shutdown,
    ) {
        // An unfilled cache would look like every object was deleted.
        let ready = futures::future::join_all(
            self.tools
                .iter()
                .map(|s| s.wait_until_ready().boxed())
                .chain(self.servers.iter().map(|s| s.wait_until_ready().boxed())),
        );
        tokio::select! {
            _ = ready => {}
            () = shutdown.wait() => return,
        }
        let in_scope = |ns: &str| scope.is_empty() || scope.iter().any(|s| s == ns);
        let mut known: Option<HashMap<String, String>> = None;
        loop {
            let result = async {
                let before = match known.take() {
                    Some(k) => k,
                    None => tombstones::known(&mut redis).await?,
                };
                let now = self.live_objects();
                let added: Vec<(&str, &str)> = now
                    .iter()
                    .filter(|(uid, _)| !before.contains_key(*uid))
                    .map(|(u, n)| (u.as_str(), n.as_str()))
                    .collect();
                let deleted: Vec<(&str, &str)> = before
                    .iter()
                    .filter(|(uid, ns)| !now.contains_key(*uid) && in_scope(ns))
                    .map(|(u, n)| (u.as_str(), n.as_str()))
                    .collect();
                for (uid, ns) in &deleted {
                    info!(namespace = %ns, uid = %uid, "a tool object was deleted: its tools fail from now on");
                }
                tombstones::record(&mut redis, &added, &deleted, crane_engine::time::now_ms()).await?;
                Ok::<_, crane_engine::EngineError>(now)
            }
            .await;
            match result {
                Ok(now) => known = Some(now),
                Err(e) => warn!(error = %e, "cannot record deleted tool objects; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(DELETIONS_EVERY) => {}
                () = shutdown.wait() => return,
            }
        }
    }
}

/// Built-ins first (a Tool cannot take a built-in's name), then Tools, then MCP tools; only
/// objects whose Ready condition is True count.
pub fn build(tools: &[Arc<Tool>], servers: &[Arc<MCPServer>]) -> Catalog {
    let ready = is_ready;
    let from_tools = tools
        .iter()
        .filter(|t| ready(t.status.as_ref().map_or(&[][..], |s| &s.conditions)))
        .map(|t| tool_spec(t));
    let from_servers = servers
        .iter()
        .filter(|s| ready(s.status.as_ref().map_or(&[][..], |s| &s.conditions)))
        .flat_map(|s| server_specs(s));
    Catalog::builtins().with(from_tools.chain(from_servers))
}

fn is_ready(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    condition(conditions, CONDITION_TOOL_READY).is_some_and(|c| c.status == "True")
}

/// A Model object as a worker needs it (the key by reference).
pub fn model_config(model: &Model) -> ModelConfig {
    let limits = model.spec.limits;
    ModelConfig {
        name: model.name_any(),
        base_url: model.spec.base_url.clone(),
        model: model.spec.model.clone(),
        api_key: model.spec.api_key_secret_ref.as_ref().map(secret_key),
        timeout_seconds: model.spec.timeout_seconds,
        limits: ModelLimits {
            max_concurrent_requests: limits.max_concurrent_requests,
            requests_per_minute: limits.requests_per_minute,
            tokens_per_minute: limits.tokens_per_minute,
        },
    }
}

/// A Tool object as the catalog holds it.
pub fn tool_spec(tool: &Tool) -> ToolSpec {
    let mut spec = ToolSpec::new(
        tool.name_any(),
        tool.spec.description.clone(),
        tool.spec.input_schema.clone(),
    );
    spec.requires_approval = tool.spec.requires_approval;
    spec.binding = Some(Binding::Http {
        url: tool.spec.http.url.clone(),
        method: tool.spec.http.method.as_str().to_owned(),
        headers: headers(&tool.spec.http.headers),
        timeout_seconds: tool.spec.http.timeout_seconds,
    });
    spec.source = source("Tool", tool);
    spec
}

fn source<K: kube::Resource>(kind: &str, object: &K) -> Option<ToolSource> {
    Some(ToolSource {
        kind: kind.to_owned(),
        name: object.meta().name.clone()?,
        uid: object.meta().uid.clone()?,
    })
}

/// The discovered tools of an MCPServer as the catalog holds them.
pub fn server_specs(server: &MCPServer) -> Vec<ToolSpec> {
    let name = server.name_any();
    server
        .status
        .iter()
        .flat_map(|s| &s.tools)
        .map(|t| {
            let mut spec = ToolSpec::new(
                mcp_tool_name(&name, &t.name),
                t.description.clone(),
                t.input_schema.clone(),
            );
            spec.annotations = t.annotations.clone();
            spec.requires_approval = server.spec.requires_approval.contains(&t.name);
            spec.binding = Some(Binding::Mcp {
                server: name.clone(),
                url: server.spec.url.clone(),
                headers: headers(&server.spec.headers),
                timeout_seconds: server.spec.timeout_seconds,
                tool: t.name.clone(),
            });
            spec.source = source("MCPServer", server);
            spec
        })
        .collect()
}

/// Headers as bindings carry them: literal values, Secrets by reference only.
pub fn headers(specs: &[HeaderSpec]) -> Vec<Header> {
    specs
        .iter()
        .map(|h| Header {
            name: h.name.clone(),
            value: h.value.clone(),
            secret: h.value_from.as_ref().map(|v| secret_key(&v.secret_key_ref)),
        })
        .collect()
}

fn secret_key(s: &SecretKeySelector) -> SecretKey {
    SecretKey {
        name: s.name.clone(),
        key: s.key.clone(),
    }
}

/// Every Secret the namespace's tool objects reference: what worker pods mount.
pub fn referenced_secrets(tools: &[Arc<Tool>], servers: &[Arc<MCPServer>]) -> Vec<String> {
    let mut names: Vec<String> = tools
        .iter()
        .flat_map(|t| &t.spec.http.headers)
        .chain(servers.iter().flat_map(|s| &s.spec.headers))
        .filter_map(|h| h.value_from.as_ref().map(|v| v.secret_key_ref.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_tools_name_the_object_they_come_from() {
        let tool: Tool = serde_json::from_value(serde_json::json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "Tool",
            "metadata": {"name": "adder", "namespace": "a", "uid": "u-1"},
            "spec": {"description": "adds", "inputSchema": {"type": "object"},
                     "http": {"url": "http://adder.a.svc/add"}}
        }))
        .expect("fixture");
        let source = tool_spec(&tool).source.expect("a source");
        assert_eq!(
            (
                source.kind.as_str(),
                source.name.as_str(),
                source.uid.as_str()
            ),
            ("Tool", "adder", "u-1")
        );
        let server: MCPServer = serde_json::from_value(serde_json::json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "MCPServer",
            "metadata": {"name": "everything", "namespace": "a", "uid": "u-2"},
            "spec": {"url": "http://mcp.a.svc/mcp"},
            "status": {"tools": [{"name": "get-sum", "inputSchema": {"type": "object"}}]}
        }))
        .expect("fixture");
        let specs = server_specs(&server);
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "everything.get-sum");
        let source = specs[0].source.clone().expect("a source");
        assert_eq!(
            (
                source.kind.as_str(),
                source.name.as_str(),
                source.uid.as_str()
            ),
            ("MCPServer", "everything", "u-2")
        );
    }
}
