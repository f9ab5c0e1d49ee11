//! One attempt of a started step: which runner (a built-in, a tool the run binds, or a model
//! call), and the checks every worker must agree on before anything goes out — the run's
//! budget and the Model's shared limits, both decided by scripts in Redis, so they hold
//! across every worker and pool of the namespace.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde_json::Value as Json;
use tokio::sync::watch;

use crate::keys::{RunKeys, model_keys};
use crate::replies::{GovernReply, SpendReply, StepWork};
use crate::scripts::{Charge, acquire, reserve, settle, unacquire};
use crate::tombstones;
use crane_core::builtins::{APPROVAL, DEFAULT_APPROVAL_TIMEOUT_SECONDS, LLM};
use crane_core::model::{ModelConfig, Usage};
use crane_core::run::{Gate, OnTimeout};
use crane_core::tool::{Catalog, Connectors, ToolContext, ToolError, Toolbox, traced};

/// How an attempt ended.
pub(crate) enum Attempt {
    /// The tool ran (or was refused: invalid input, the budget).
    Finished(Result<Json, ToolError>),
    /// Nothing was sent: the model's limits hold the call back until `due` (ms since the
    /// epoch). The step goes back without using an attempt, saying `why`.
    Held { due: u64, why: String },
    /// The step waits for a person: `gate` (JSON [`Gate`]) is what they are asked.
    Gated { gate: String },
    /// The worker is draining: the step goes back to the queue.
    Released,
}

/// What an attempt may use.
pub(crate) struct Runners<'a> {
    pub toolbox: &'a Toolbox,
    pub connectors: Option<&'a Arc<dyn Connectors>>,
    pub conn: ConnectionManager,
    pub release: watch::Receiver<bool>,
}

/// The built-in specs, for checking `llm` inputs (the worker's toolbox has no `llm` runner).
static BUILTINS: LazyLock<Catalog> = LazyLock::new(Catalog::builtins);

/// Tokens a model call is assumed to use until the provider says: the prompt's length over
/// four (a common rule of thumb for English text) plus the completion's cap, or 1,024.
pub fn estimate_tokens(input: &Json) -> u64 {
    let chars: usize = ["system", "prompt"]
        .iter()
        .filter_map(|f| input.get(*f).and_then(Json::as_str))
        .map(|s| s.chars().count())
        .sum();
    let completion = input
        .get("maxTokens")
        .and_then(Json::as_u64)
        .unwrap_or(1024);
    (chars as u64).div_ceil(4).saturating_add(completion)
}

/// Whether `tool` calls out of the worker (counts for circuit breakers): bound tools and
/// models always do.
pub(crate) fn calls_out(toolbox: &Toolbox, work: Option<&StepWork>, tool: &str) -> bool {
    tool == LLM || toolbox.calls_out(tool) || work.is_some_and(|w| bound(w, tool).is_some())
}

fn bound<'w>(work: &'w StepWork, tool: &str) -> Option<&'w crane_core::tool::ToolSpec> {
    work.options
        .tools
        .iter()
        .find(|t| t.name == tool && t.binding.is_some())
}

/// Runs one attempt of `work` with `input` (variables resolved).
pub(crate) async fn attempt(
    r: Runners<'_>,
    keys: &RunKeys,
    ctx: &ToolContext,
    work: &StepWork,
    input: Json,
) -> Attempt {
    let tool = work.step.tool.as_str();
    let timeout = Duration::from_millis(work.options.step_timeout_ms.max(1));
    if tool == LLM {
        return model_call(r, keys, ctx, work, input, timeout).await;
    }
    if tool == APPROVAL {
        if let Err(p) = BUILTINS.check_input(APPROVAL, &input) {
            return Attempt::Finished(Err(ToolError::InvalidInput(p.join("; "))));
        }
        let text = |f: &str| input.get(f).and_then(Json::as_str).map(str::to_owned);
        let gate = Gate {
            message: text("message").unwrap_or_default(),
            approvers: input
                .get("approvers")
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Json::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            timeout_seconds: input
                .get("timeoutSeconds")
                .and_then(Json::as_u64)
                .unwrap_or(DEFAULT_APPROVAL_TIMEOUT_SECONDS),
            on_timeout: match text("onTimeout").as_deref() {
                Some("Approve") => OnTimeout::Approve,
                _ => OnTimeout::Reject,
            },
            ..Gate::default()
        };
        return gated(&gate);
    }
    let mut conn = r.conn.clone();
    if let Some(source) = bound(work, tool).and_then(|s| s.source.as_ref()) {
        match tombstones::is_deleted(&mut conn, keys.namespace(), &source.uid).await {
            Ok(false) => {}
            Ok(true) => {
                return Attempt::Finished(Err(ToolError::Failed(format!(
                    "tool {tool:?} is gone: {} {}/{} was deleted after this run was planned",
                    source.kind,
                    keys.namespace(),
                    source.name
                ))));
            }
            Err(e) => return Attempt::Finished(Err(ToolError::Transient(e.to_string()))),
        }
    }
    if let Some(spec) = bound(work, tool).filter(|s| s.requires_approval) {
        // Asked once per step: an approved step's retries run without asking again.
        let approved: Option<String> = match redis::cmd("HGET")
            .arg(keys.steps())
            .arg(format!("{}:approved", work.step.id))
            .query_async(&mut conn)
            .await
        {
            Ok(v) => v,
            Err(e) => return Attempt::Finished(Err(ToolError::Transient(e.to_string()))),
        };
        if approved.as_deref() != Some("1") {
            if let Err(p) = checker(spec).check_input(tool, &input) {
                return Attempt::Finished(Err(ToolError::InvalidInput(p.join("; "))));
            }
            let gate = Gate {
                message: format!(
                    "Step {} calls tool {tool}, which requires approval before each call, with the input shown.",
                    work.step.id
                ),
                timeout_seconds: DEFAULT_APPROVAL_TIMEOUT_SECONDS,
                tool: Some(tool.to_owned()),
                input: Some(input),
                ..Gate::default()
            };
            return gated(&gate);
        }
    }
    if work.options.budget.max_tool_calls.is_some() {
        let charge = Charge {
            llm: false,
            estimate: 0,
        };
        match reserve(
            keys,
            &work.step.id.to_string(),
            charge,
            &work.options.budget,
            None,
        )
        .run(&mut conn, "checking the run's budget")
        .await
        {
            Ok(SpendReply::Ok) => {}
            Ok(SpendReply::Exceeded { message, .. }) => {
                return Attempt::Finished(Err(ToolError::Failed(message)));
            }
            Err(e) => return Attempt::Finished(Err(ToolError::Transient(e.to_string()))),
        }
    }
    let call = async {
        match bound(work, tool) {
            Some(spec) => {
                let Some(connectors) = r.connectors else {
                    return Err(ToolError::Failed(format!(
                        "this worker cannot run tool {tool:?}: it has no connectors for bound tools"
                    )));
                };
                let binding = spec
                    .binding
                    .as_ref()
                    .ok_or_else(|| ToolError::Failed(format!("tool {tool:?} has no binding")))?;
                traced(ctx, tool, async move {
                    checker(spec)
                        .check_input(tool, &input)
                        .map_err(|p| ToolError::InvalidInput(p.join("; ")))?;
                    connectors.runner(binding)?.execute(ctx, input).await
                })
                .await
            }
            None => r.toolbox.call(ctx, tool, input).await,
        }
    };
    bounded(call, timeout, r.release).await
}

/// Most bound tools' validators a worker keeps (a pool serves one namespace's few tools;
/// schemas can be large).
const MAX_CHECKERS: usize = 256;

/// Compiled input validators of bound tools, by name and schema: compiling a schema costs
/// more than checking an input against it, and a worker calls the same few tools again and
/// again (each step brings its run's specs, so there is nothing longer-lived to hang them on).
static CHECKERS: LazyLock<Mutex<HashMap<(String, String), Catalog>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A catalog of `spec` alone, to check inputs with.
fn checker(spec: &crane_core::tool::ToolSpec) -> Catalog {
    let key = (spec.name.clone(), spec.input_schema.to_string());
    let mut cache = CHECKERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cache.get(&key) {
        return c.clone();
    }
    if cache.len() >= MAX_CHECKERS {
        cache.clear();
    }
    let catalog = Catalog::new([spec.clone()]);
    cache.insert(key, catalog.clone());
    catalog
}

fn gated(gate: &Gate) -> Attempt {
    match serde_json::to_string(gate) {
        Ok(gate) => Attempt::Gated { gate },
        Err(e) => Attempt::Finished(Err(ToolError::Failed(format!(
            "cannot record the gate: {e}"
        )))),
    }
}

/// The call, unless the step timeout or a drain comes first.
async fn bounded(
    call: impl std::future::Future<Output = Result<Json, ToolError>>,
    timeout: Duration,
    mut release: watch::Receiver<bool>,
) -> Attempt {
    tokio::select! {
        r = tokio::time::timeout(timeout, call) => {
            Attempt::Finished(r.unwrap_or(Err(ToolError::Timeout(timeout))))
        }
        _ = release.wait_for(|v| *v) => Attempt::Released,
    }
}

/// The model a step calls: the one its input names, else the run's.
fn model<'w>(work: &'w StepWork, input: &Json) -> Result<&'w ModelConfig, ToolError> {
    let name = input
        .get("model")
        .and_then(Json::as_str)
        .or(work.options.model.as_deref())
        .ok_or_else(|| {
            ToolError::InvalidInput(
                "llm: the step names no model and the run has no spec.model".into(),
            )
        })?;
    work.options
        .models
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| {
            ToolError::InvalidInput(format!(
                "llm: no Model {name:?} in namespace {} was resolved for this run",
                work.namespace
            ))
        })
}

async fn model_call(
    r: Runners<'_>,
    keys: &RunKeys,
    ctx: &ToolContext,
    work: &StepWork,
    input: Json,
    timeout: Duration,
) -> Attempt {
    let refuse = |e: ToolError| Attempt::Finished(Err(e));
    if let Err(p) = BUILTINS.check_input(LLM, &input) {
        return refuse(ToolError::InvalidInput(p.join("; ")));
    }
    let Some(connectors) = r.connectors else {
        return refuse(ToolError::Failed(
            "this worker cannot call models: it has no connectors".into(),
        ));
    };
    let model = match model(work, &input) {
        Ok(m) => m,
        Err(e) => return refuse(e),
    };
    let estimate = estimate_tokens(&input);
    let mut conn = r.conn.clone();
    let step = work.step.id.to_string();
    // The model's limits first: a call held back there has spent nothing of the budget.
    let governed = model.limits != Default::default();
    let slot = if governed {
        let keys = match model_keys(&work.namespace, &model.name) {
            Ok(k) => k,
            Err(e) => return refuse(ToolError::InvalidInput(e.to_string())),
        };
        let member = format!("{}:{}:{}", ctx.run_id, step, ctx.attempt);
        let lease = timeout + Duration::from_secs(5);
        match acquire(&keys, &member, &model.limits, estimate, lease)
            .run(&mut conn, "checking the model's limits")
            .await
        {
            Ok(GovernReply::Go) => Some((keys, member)),
            Ok(GovernReply::Wait { wait_ms, limit }) => {
                // Spread the retries of many held steps over 10 % more time.
                let jitter = rand::random_range(0..=wait_ms / 10 + 1);
                let due = crate::time::now_ms() + wait_ms + jitter;
                let at = crate::local::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(due));
                return Attempt::Held {
                    due,
                    why: format!(
                        "waiting: Model {} is at its {limit} limit; the step is tried again at {at}",
                        model.name
                    ),
                };
            }
            Err(e) => return refuse(ToolError::Transient(e.to_string())),
        }
    } else {
        None
    };
    let free = |conn: ConnectionManager, used: Option<u64>| {
        let slot = slot.clone();
        async move {
            if let Some((keys, member)) = slot {
                let mut conn = conn;
                if let Err(e) = unacquire(&keys, &member, estimate, used)
                    .run(&mut conn, "releasing the model's slot")
                    .await
                {
                    // The slot's lease runs out instead.
                    tracing::debug!(error = %e, "cannot release a model slot");
                }
            }
        }
    };
    let charge = Charge {
        llm: true,
        estimate,
    };
    match reserve(
        keys,
        &step,
        charge,
        &work.options.budget,
        work.options.planner_usage.as_ref(),
    )
    .run(&mut conn, "checking the run's budget")
    .await
    {
        Ok(SpendReply::Ok) => {}
        Ok(SpendReply::Exceeded { message, .. }) => {
            free(conn, Some(0)).await;
            return refuse(ToolError::Failed(message));
        }
        Err(e) => {
            free(conn, Some(0)).await;
            return refuse(ToolError::Transient(e.to_string()));
        }
    }
    let mut usage = None;
    let call = async {
        let (output, used) = connectors.chat(model, input).await?;
        usage = Some(used);
        Ok(output)
    };
    let outcome = bounded(call, timeout, r.release).await;
    // What the provider counted (nothing when it failed: no usage came back).
    let used = usage.unwrap_or(Usage::default());
    let mut settle_conn = conn.clone();
    let settled = async {
        if let Err(e) = settle(keys, &step, &used)
            .run(&mut settle_conn, "recording the model's usage")
            .await
        {
            tracing::warn!(error = %e, "cannot record a model call's usage");
        }
    };
    // Different slots, independent scripts: sent together on the multiplexed connection, one
    // round trip.
    tokio::join!(settled, free(conn, usage.map(|u| u.total())));
    outcome
}
