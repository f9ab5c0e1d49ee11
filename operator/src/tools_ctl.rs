//! The Tool, MCPServer and Model controllers: say whether each object is usable (condition
//! Ready), discover what each MCP server offers (`initialize` + `tools/list`, written to
//! `status.tools`) and check each model endpoint answers (`GET /v1/models`), again every
//! [`REFRESH`] so servers that went away stop being offered. Their caches feed the
//! namespaces' [`Catalogs`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crane_core::builtins;
use crane_tools::Remote;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use crate::catalog::Catalogs;
use crate::context::Context;
use crate::controller::{Backoff, Shutdown, apply_status, set_condition};
use crate::metrics::Controller as Ctl;
use crane_api::{
    CONDITION_TOOL_READY, DiscoveredTool, HeaderSpec, MCPServer, Model, ReadyStatus, Tool,
    is_tool_name, mcp_tool_name,
};

/// How often an MCP server's tools are listed again (and a failing Model checked again).
pub const REFRESH: Duration = Duration::from_secs(60);
/// How often a Ready Model's endpoint is checked again.
pub const MODEL_REFRESH: Duration = Duration::from_secs(300);
/// Most tools one MCPServer offers; a server with more is cut there (and says so).
const MAX_SERVER_TOOLS: usize = 256;
/// Largest status.tools (JSON) kept; beyond it the server is not Ready.
const MAX_TOOLS_BYTES: usize = 512 * 1024;

/// Everything that can fail in one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
}

struct Reconciler {
    ctx: Arc<Context>,
    remote: Remote,
    http: reqwest::Client,
    backoff: Backoff,
}

/// Starts both controllers (one watch per configured namespace, or cluster-wide) and returns
/// the catalogs their caches feed, with the future that runs them until `shutdown`.
pub fn start(
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> anyhow::Result<(Arc<Catalogs>, impl std::future::Future<Output = ()>)> {
    let reconciler = Arc::new(Reconciler {
        ctx: ctx.clone(),
        remote: Remote::new(crane_tools::Secrets::default()).map_err(|e| anyhow::anyhow!("{e}"))?,
        http: crane_llm::client().map_err(|e| anyhow::anyhow!("{e}"))?,
        backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(120)),
    });
    let scopes: Vec<Option<String>> = if ctx.config.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut tool_stores: Vec<Store<Tool>> = Vec::new();
    let mut server_stores: Vec<Store<MCPServer>> = Vec::new();
    let mut model_stores: Vec<Store<Model>> = Vec::new();
    let mut runs = Vec::new();
    for ns in scopes {
        let (tools, servers, models) = match &ns {
            Some(ns) => (
                Api::<Tool>::namespaced(ctx.client.clone(), ns),
                Api::<MCPServer>::namespaced(ctx.client.clone(), ns),
                Api::<Model>::namespaced(ctx.client.clone(), ns),
            ),
            None => (
                Api::all(ctx.client.clone()),
                Api::all(ctx.client.clone()),
                Api::all(ctx.client.clone()),
            ),
        };
        let config = kube::runtime::controller::Config::default().concurrency(4);
        let tool_ctl = Controller::new(tools, watcher::Config::default().any_semantic())
            .with_config(config.clone());
        tool_stores.push(tool_ctl.store());
        runs.push(
            tool_ctl
                .graceful_shutdown_on(shutdown.wait())
                .run(reconcile_tool, error_policy, reconciler.clone())
                .for_each(|_| async {})
                .boxed(),
        );
        let model_ctl = Controller::new(models, watcher::Config::default().any_semantic())
            .with_config(config.clone());
        model_stores.push(model_ctl.store());
        runs.push(
            model_ctl
                .graceful_shutdown_on(shutdown.wait())
                .run(reconcile_model, error_policy, reconciler.clone())
                .for_each(|_| async {})
                .boxed(),
        );
        let server_ctl =
            Controller::new(servers, watcher::Config::default().any_semantic()).with_config(config);
        server_stores.push(server_ctl.store());
        runs.push(
            server_ctl
                .graceful_shutdown_on(shutdown.wait())
                .run(reconcile_server, error_policy, reconciler.clone())
                .for_each(|_| async {})
                .boxed(),
        );
    }
    let catalogs = Arc::new(Catalogs::new(tool_stores, server_stores, model_stores));
    Ok((catalogs, async move {
        futures::future::join_all(runs).await;
    }))
}

fn error_policy<K: ResourceExt>(obj: Arc<K>, err: &Error, reconciler: Arc<Reconciler>) -> Action {
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let delay = reconciler.backoff.failed(&key);
    warn!(object = %key, error = %err, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// A Tool is Ready when its name is free and its input schema compiles.
async fn reconcile_tool(tool: Arc<Tool>, reconciler: Arc<Reconciler>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = tool.name_any();
    let (ready, reason, message) = if builtins::specs().iter().any(|s| s.name == name) {
        (
            false,
            "NameTaken",
            format!("{name} is a built-in tool; give the Tool another name"),
        )
    } else if let Err(e) = jsonschema::validator_for(&tool.spec.input_schema) {
        (
            false,
            "InvalidSchema",
            format!("spec.inputSchema is not a valid JSON schema: {e}"),
        )
    } else {
        (
            true,
            "Valid",
            format!("plans in this namespace can use tool {name}"),
        )
    };
    let result = set_ready(
        &reconciler.ctx,
        &*tool,
        tool.status.as_ref(),
        (ready, reason, &message),
        Ctl::tool,
    )
    .await;
    reconciler.ctx.metrics.reconciled(
        Ctl::tool,
        result.as_ref().map_or("status", |()| "ok"),
        started.elapsed(),
    );
    result.map(|()| Action::await_change())
}

/// A Model is Ready when its endpoint lists models with its key (a cheap call that spends no
/// tokens); the provider's error otherwise.
async fn reconcile_model(model: Arc<Model>, reconciler: Arc<Reconciler>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = model.namespace().unwrap_or_default();
    let check = async {
        let key = match &model.spec.api_key_secret_ref {
            Some(r) => {
                let header = HeaderSpec {
                    name: "Authorization".into(),
                    value: None,
                    value_from: Some(crane_api::HeaderSource {
                        secret_key_ref: r.clone(),
                    }),
                };
                let resolved = resolve_headers(&reconciler.ctx, &ns, &[header])
                    .await
                    .map_err(|m| ("SecretMissing", m))?;
                resolved.into_iter().next().map(|(_, v)| v)
            }
            None => None,
        };
        let url = crane_llm::models_url(&model.spec.base_url);
        let mut request = reconciler
            .http
            .get(&url)
            .timeout(Duration::from_secs(u64::from(
                model.spec.timeout_seconds.clamp(1, 30),
            )));
        if let Some(key) = &key {
            request = request.bearer_auth(key);
        }
        let redact = |text: String| match &key {
            Some(k) if !k.is_empty() => text.replace(k.as_str(), "<redacted>"),
            _ => text,
        };
        let response = request.send().await.map_err(|e| {
            (
                "Unreachable",
                redact(format!(
                    "cannot reach {url}: {}",
                    crane_llm::error_chain(&e.without_url())
                )),
            )
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(format!(
                "{url} answers; llm steps can use model {}",
                model.spec.model
            ))
        } else {
            let body = response.text().await.unwrap_or_default();
            Err((
                "ProviderError",
                redact(format!(
                    "{url} answered HTTP {status}: {}",
                    crane_llm::quote_reply(body.as_bytes())
                )),
            ))
        }
    };
    let (ready, reason, message) = match check.await {
        Ok(m) => (true, "Available", m),
        Err((reason, m)) => (false, reason, m),
    };
    let result = set_ready(
        &reconciler.ctx,
        &*model,
        model.status.as_ref(),
        (ready, reason, &message),
        Ctl::model,
    )
    .await;
    reconciler.ctx.metrics.reconciled(
        Ctl::model,
        result.as_ref().map_or("status", |()| "ok"),
        started.elapsed(),
    );
    result.map(|()| Action::requeue(if ready { MODEL_REFRESH } else { REFRESH }))
}

/// Writes the Ready condition of a Tool or Model when it changed.
async fn set_ready<K>(
    ctx: &Context,
    obj: &K,
    old: Option<&ReadyStatus>,
    (ready, reason, message): (bool, &str, &str),
    ctl: Ctl,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let generation = obj.meta().generation;
    let mut status = old.cloned().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        CONDITION_TOOL_READY,
        ready,
        reason,
        message,
        generation,
        &now(),
    );
    status.observed_generation = generation;
    if old == Some(&status) {
        return Ok(());
    }
    write(ctx, obj, &status, ctl).await
}

/// Lists the server's tools into status; Ready says whether that worked.
async fn reconcile_server(
    server: Arc<MCPServer>,
    reconciler: Arc<Reconciler>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let name = server.name_any();
    let ns = server.namespace().unwrap_or_default();
    let mut status = server.status.clone().unwrap_or_default();
    let outcome = discover(&reconciler, &ns, &name, &server).await;
    let now = now();
    match outcome {
        Ok((tools, skipped)) => {
            let mut message = format!("{} tool(s) discovered", tools.len());
            if !skipped.is_empty() {
                message.push_str(&format!("; left out: {}", skipped.join("; ")));
            }
            status.tool_count = u32::try_from(tools.len()).unwrap_or(u32::MAX);
            status.tools = tools;
            status.last_discovery_time = Some(now.clone());
            set_condition(
                &mut status.conditions,
                CONDITION_TOOL_READY,
                true,
                "Discovered",
                &message,
                server.metadata.generation,
                &now,
            );
        }
        Err((reason, message)) => {
            info!(server = %name, namespace = %ns, reason, error = %message, "MCP discovery failed");
            set_condition(
                &mut status.conditions,
                CONDITION_TOOL_READY,
                false,
                reason,
                &message,
                server.metadata.generation,
                &now,
            );
        }
    }
    status.observed_generation = server.metadata.generation;
    // lastDiscoveryTime moves every refresh; written only when something else changed, or
    // once a refresh period so a person sees discovery is alive.
    let mut compare = status.clone();
    let old = server.status.clone();
    if let (Some(old), Some(t)) = (
        &old,
        &old.as_ref().and_then(|o| o.last_discovery_time.clone()),
    ) {
        let fresh = now.0.duration_since(t.0).as_secs() < REFRESH.as_secs() as i64 * 5;
        if fresh {
            compare.last_discovery_time = old.last_discovery_time.clone();
        }
    }
    let result = if old.as_ref() == Some(&compare) {
        Ok(())
    } else {
        write(&reconciler.ctx, &*server, &status, Ctl::mcpserver).await
    };
    reconciler.ctx.metrics.reconciled(
        Ctl::mcpserver,
        if result.is_ok() { "ok" } else { "status" },
        started.elapsed(),
    );
    result.map(|()| Action::requeue(REFRESH))
}

/// The server's tools (after spec.tools), and what was left out and why; or the condition
/// reason and message of the failure.
async fn discover(
    reconciler: &Reconciler,
    ns: &str,
    name: &str,
    server: &MCPServer,
) -> Result<(Vec<DiscoveredTool>, Vec<String>), (&'static str, String)> {
    let headers = resolve_headers(&reconciler.ctx, ns, &server.spec.headers)
        .await
        .map_err(|m| ("SecretMissing", m))?;
    let client = reconciler.remote.mcp_client(
        &format!("{ns}/{name}"),
        &server.spec.url,
        headers,
        server.spec.timeout_seconds,
    );
    let listed = client
        .list_tools()
        .await
        .map_err(|e| ("DiscoveryFailed", e.to_string()))?;
    let mut skipped = Vec::new();
    let mut tools = Vec::new();
    for t in listed {
        if let Some(allowed) = &server.spec.tools
            && !allowed.contains(&t.name)
        {
            continue;
        }
        if !is_tool_name(&mcp_tool_name(name, &t.name)) {
            skipped.push(format!(
                "{:?} (not a valid tool name)",
                crane_core::text::truncate(&t.name, 64)
            ));
            continue;
        }
        if tools.len() >= MAX_SERVER_TOOLS {
            skipped.push(format!("tools beyond the first {MAX_SERVER_TOOLS}"));
            break;
        }
        tools.push(DiscoveredTool {
            name: t.name,
            description: crane_core::text::truncate(&t.description, 4096),
            input_schema: if t.input_schema.is_object() {
                t.input_schema
            } else {
                serde_json::json!({"type": "object"})
            },
            annotations: t.annotations,
        });
    }
    let bytes = serde_json::to_vec(&tools).map_or(0, |v| v.len());
    if bytes > MAX_TOOLS_BYTES {
        return Err((
            "TooManyTools",
            format!(
                "the server's tool descriptions take {bytes} bytes, more than the {MAX_TOOLS_BYTES} an MCPServer's status holds; list the tools you need in spec.tools"
            ),
        ));
    }
    Ok((tools, skipped))
}

/// Header values, reading Secrets of the server's namespace. The message of a failure names
/// the Secret and key, never a value.
async fn resolve_headers(
    ctx: &Context,
    ns: &str,
    headers: &[HeaderSpec],
) -> Result<Vec<(String, String)>, String> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut cache: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let mut out = Vec::new();
    for h in headers {
        let value = match (&h.value, &h.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                let r = &from.secret_key_ref;
                if !cache.contains_key(&r.name) {
                    let s = secrets
                        .get_opt(&r.name)
                        .await
                        .map_err(|e| format!("cannot read Secret {}: {e}", r.name))?;
                    cache.insert(r.name.clone(), s);
                }
                let data = cache
                    .get(&r.name)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| format!("Secret {} does not exist in namespace {ns}", r.name))?
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .ok_or_else(|| format!("Secret {} has no key {}", r.name, r.key))?;
                String::from_utf8_lossy(&data.0)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned()
            }
            (None, None) => String::new(),
        };
        out.push((h.name.clone(), value));
    }
    Ok(out)
}

/// Server-side-applies `status` to `obj`.
async fn write<K>(
    ctx: &Context,
    obj: &K,
    status: &impl serde::Serialize,
    ctl: Ctl,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    apply_status(&api, &obj.name_any(), status)
        .await
        .map_err(Error::Status)?;
    ctx.metrics.api_write(ctl, "apply_status");
    Ok(())
}
