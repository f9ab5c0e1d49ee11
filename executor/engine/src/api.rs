//! The engine's library API for submitters and the operator: connect, initialise a run,
//! read it back as a `RunReport`, wait for it, cancel and delete it; and `RedisExecutor`,
//! the `Executor` that runs a plan through Redis workers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value as Json;

use super::events::{self, Follower, RunEvent, Start};
use super::keys::{PoolName, RunKeys};
use super::queue::{PoolAfter, pool_after};
use super::replies::{CancelReply, CreateReply, DecideReply, RetryReply, phase};
use super::scripts::{self, Call};
use super::time::rfc3339;
use super::{EngineConfig, EngineError, ms};
use crane_core::model::{Spending, Usage};
use crane_core::plan::{Plan, StepId};
use crane_core::run::{
    FailurePolicy, Gate, RunOptions, RunPhase, RunReport, StepPhase, StepReport, result_from_sinks,
    run_error,
};
use crane_core::tool::Catalog;

use crate::{ExecuteFuture, Executor, RunRequest};

/// Who a client connects as: a namespace's own Redis user (worker and planner pods), or the
/// operator's identity. Never part of a URL, an argument or a Job spec: values come from
/// Secrets (environment variables from `secretKeyRef`, or mounted files).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A Redis client for `url` (which must not carry credentials) as `auth`.
pub fn client(url: &str, auth: &Auth) -> Result<redis::Client, EngineError> {
    if url.contains(',') {
        return Err(EngineError::Config(
            "the redis URL lists several nodes (a Redis Cluster); this version of Crane needs one Redis (see the README's known limits)".into(),
        ));
    }
    let info = url
        .into_connection_info()
        .map_err(EngineError::redis("parsing the redis URL"))?;
    let settings = info.redis_settings().clone();
    if settings.password().is_some() || settings.username().is_some() {
        return Err(EngineError::Config(
            "the redis URL carries credentials; give them as a username and password from a Secret instead (they would show in process lists and pod specs)".into(),
        ));
    }
    let mut settings = settings;
    if let Some(user) = auth.username.as_deref().filter(|u| !u.is_empty()) {
        settings = settings.set_username(user);
    }
    if let Some(pw) = auth.password.as_deref().filter(|p| !p.is_empty()) {
        settings = settings.set_password(pw);
    }
    redis::Client::open(info.set_redis_settings(settings))
        .map_err(EngineError::redis("creating the redis client"))
}

/// A password kept in a file (a mounted Secret), without the trailing newline editors add.
pub fn read_password_file(path: &std::path::Path) -> Result<String, EngineError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|e| {
            EngineError::Config(format!(
                "cannot read the password file {}: {e}",
                path.display()
            ))
        })
}

/// A reconnecting connection. `response_timeout` must exceed any `BLOCK` sent on it.
pub async fn connect_with(
    client: &redis::Client,
    response_timeout: Duration,
) -> Result<ConnectionManager, EngineError> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(4)
        .set_max_delay(Duration::from_millis(500));
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(EngineError::redis("connecting to redis"))
}

/// A reconnecting connection for ordinary (non-blocking) commands.
pub async fn connect(client: &redis::Client) -> Result<ConnectionManager, EngineError> {
    connect_with(client, Duration::from_secs(5)).await
}

/// Whether [`init_run`] created the run or found it already there (idempotent for callers
/// that retry, like the operator after a restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyExists,
}

/// Checks what the scripts rely on (the validator checks more): a bounded number of unique
/// steps whose dependencies exist and form no cycle, so the run cannot hang, and tool names
/// that can travel inside `|`-separated hints.
fn check_structure(plan: &Plan) -> Result<(), EngineError> {
    crane_core::validate::check_structure(plan)
        .map_err(|errors| EngineError::InvalidPlan(errors.to_string()))?;
    for s in &plan.steps {
        if s.tool.is_empty()
            || s.tool.len() > 100
            || !s
                .tool
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(EngineError::InvalidPlan(format!(
                "step {}: tool name {:?} is not 1-100 characters of A-Z a-z 0-9 . _ -",
                s.id,
                s.tool.chars().take(100).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// The script arguments every run-creating script starts with (see init.lua).
fn run_args(
    namespace: &str,
    pool: &PoolName,
    plan: &Plan,
    options: &RunOptions,
    config: &EngineConfig,
) -> Result<Vec<String>, EngineError> {
    let policy = match options.failure_policy {
        FailurePolicy::FailFast => "FailFast",
        FailurePolicy::ContinueIndependent => "ContinueIndependent",
    };
    Ok(vec![
        namespace.to_owned(),
        pool.to_string(),
        to_json("the plan", plan)?,
        to_json("the options", options)?,
        ms(config.ttl).max(1).to_string(),
        options.retry.max_attempts.max(1).to_string(),
        policy.to_owned(),
        options.step_timeout_ms.max(1).to_string(),
        plan.steps.len().to_string(),
    ])
}

fn to_json<T: serde::Serialize>(what: &str, v: &T) -> Result<String, EngineError> {
    serde_json::to_string(v)
        .map_err(|e| EngineError::InvalidPlan(format!("cannot serialise {what}: {e}")))
}

/// One step's DAG links as the scripts store them: its children (comma-separated), its
/// unique dependencies and the steps its input variables read (comma-separated).
fn step_links(plan: &Plan, step: &crane_core::plan::Step) -> (String, HashSet<StepId>, String) {
    let mut children: Vec<String> = plan
        .steps
        .iter()
        .filter(|s| s.depends_on.contains(&step.id))
        .map(|s| s.id.to_string())
        .collect();
    children.dedup();
    let deps: HashSet<StepId> = step.depends_on.iter().copied().collect();
    let mut refs: Vec<StepId> = crane_core::vars::references(&step.input)
        .into_iter()
        .map(|r| r.step)
        .collect();
    refs.sort_unstable();
    refs.dedup();
    let refs = refs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    (children.join(","), deps, refs)
}

/// Runs a run-creating script (init or restore) and queues the steps it made ready.
async fn create_run(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
    pool: &PoolName,
    create: Call<CreateReply>,
    config: &EngineConfig,
) -> Result<InitOutcome, EngineError> {
    let run_id = keys.run_id();
    // Registered with the sweeper first, so a crash after the run-slot write still gets its
    // first steps queued.
    pool_runs(conn, "SADD", pool, run_id, "registering the run").await?;
    match create.run(conn, "initialising the run").await? {
        CreateReply::Exists => Ok(InitOutcome::AlreadyExists),
        CreateReply::Created { ready } => {
            queue_ready(
                conn,
                pool,
                config,
                run_id,
                ready,
                "queueing the first steps",
            )
            .await?;
            Ok(InitOutcome::Created)
        }
    }
}

/// Adds a run to (`SADD`) or removes it from (`SREM`) its pool's set of active runs, which
/// the sweeper walks.
async fn pool_runs(
    conn: &mut ConnectionManager,
    op: &str,
    pool: &PoolName,
    run_id: &str,
    what: &'static str,
) -> Result<(), EngineError> {
    redis::cmd(op)
        .arg(pool.runs())
        .arg(run_id)
        .query_async(conn)
        .await
        .map_err(EngineError::redis(what))
}

/// Queues a run's ready steps (pool hints `step|tool`) on its pool.
async fn queue_ready(
    conn: &mut ConnectionManager,
    pool: &PoolName,
    config: &EngineConfig,
    run_id: &str,
    ready: Vec<String>,
    what: &'static str,
) -> Result<(), EngineError> {
    let after = PoolAfter {
        run: run_id.to_owned(),
        ready,
        ..PoolAfter::default()
    };
    pool_after(pool, &config.breaker, &[after])
        .run(conn, what)
        .await
        .map(drop)
}

/// A run lives in its pool's namespace: the namespace's Redis user can reach both.
fn check_same_namespace(keys: &RunKeys, pool: &PoolName) -> Result<(), EngineError> {
    if keys.namespace() == pool.namespace() {
        return Ok(());
    }
    Err(EngineError::InvalidPool {
        pool: pool.to_string(),
        why: format!(
            "a run of namespace {} runs on a pool of its own namespace",
            keys.namespace()
        ),
    })
}

/// Stores a validated plan as the run of `keys` and queues its first steps on `pool` (of
/// the same namespace).
pub async fn init_run(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
    pool: &PoolName,
    plan: &Plan,
    options: &RunOptions,
    config: &EngineConfig,
) -> Result<InitOutcome, EngineError> {
    check_same_namespace(keys, pool)?;
    check_structure(plan)?;
    // The step hash's fields are built here, not in Lua: string building in Redis's Lua costs
    // the single Redis thread far more than it costs us, and init sits on every run's
    // critical path. Fields a script would only find empty or zero are left out.
    let (mut fields, mut counters, mut ready) = (Vec::new(), Vec::new(), Vec::new());
    let mut ids = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let id = step.id.to_string();
        ids.push(id.clone());
        let (children, deps, refs) = step_links(plan, step);
        let phase = if deps.is_empty() { "Ready" } else { "Pending" };
        fields.extend([
            format!("{id}:tool"),
            step.tool.clone(),
            format!("{id}:spec"),
            to_json("a step", step)?,
            format!("{id}:phase"),
            phase.to_owned(),
        ]);
        for (name, value) in [("children", children), ("refs", refs)] {
            if !value.is_empty() {
                fields.extend([format!("{id}:{name}"), value]);
            }
        }
        if deps.is_empty() {
            ready.push(format!("{id}|{}", step.tool));
        } else {
            counters.extend([id, deps.len().to_string()]);
        }
    }
    let mut args = run_args(keys.namespace(), pool, plan, options, config)?;
    args.extend([
        ids.join(","),
        fields.len().to_string(),
        counters.len().to_string(),
        ready.len().to_string(),
    ]);
    args.extend(fields);
    args.extend(counters);
    args.extend(ready);
    create_run(conn, keys, pool, scripts::init(keys, &args), config).await
}

/// A step that already succeeded before Redis lost the run, as the AgentRun status kept it.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoredStep {
    /// The step's complete output (never a truncated stub: later steps read it).
    pub output: Json,
    /// Attempts it took, shown again in the report.
    pub attempts: u32,
    /// When it started and finished, in ms since the Unix epoch, if known.
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
}

/// Re-creates run `run_id` after Redis lost it (restart without persistence): the steps in
/// `completed` start Succeeded with their outputs, every other step waits only for its
/// dependencies that are not in `completed`, and the steps with none left are queued on
/// `pool`. Like [`init_run`], returns [`InitOutcome::AlreadyExists`] (and changes nothing)
/// when the run is in Redis after all. A `completed` id that is not in the plan is an error.
pub async fn restore_run(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
    pool: &PoolName,
    plan: &Plan,
    options: &RunOptions,
    completed: &BTreeMap<StepId, RestoredStep>,
    config: &EngineConfig,
) -> Result<InitOutcome, EngineError> {
    check_same_namespace(keys, pool)?;
    check_structure(plan)?;
    if let Some(id) = completed
        .keys()
        .find(|id| !plan.steps.iter().any(|s| s.id == **id))
    {
        return Err(EngineError::InvalidPlan(format!(
            "step {id} is given as completed but is not in the plan"
        )));
    }
    let mut args = run_args(keys.namespace(), pool, plan, options, config)?;
    let opt = |t: Option<u64>| t.map(|t| t.to_string()).unwrap_or_default();
    for step in &plan.steps {
        let (children, deps, refs) = step_links(plan, step);
        let left = deps.iter().filter(|d| !completed.contains_key(d)).count();
        args.push(step.id.to_string());
        args.push(step.tool.clone());
        args.push(to_json("a step", step)?);
        args.push(children);
        args.push(left.to_string());
        args.push(refs);
        match completed.get(&step.id) {
            Some(done) => {
                args.push("1".to_owned());
                args.push(done.attempts.max(1).to_string());
                args.push(to_json("a restored output", &done.output)?);
                args.push(opt(done.started_ms));
                args.push(opt(done.finished_ms));
            }
            None => args.extend(["0", "0", "", "", ""].map(String::from)),
        }
    }
    create_run(conn, keys, pool, scripts::restore(keys, &args), config).await
}

/// What [`retry_run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryOutcome {
    /// The run was Failed and is Running again; `steps` steps start over.
    Retried { steps: usize },
    /// The run was neither Failed nor Cancelled (e.g. already retried, or it succeeded);
    /// nothing changed.
    NotFailed(RunPhase),
}

/// Retry from failure: a Failed run (or a Cancelled one: the operator cancels a run that
/// exceeded its deadline) goes back to Running; its Failed and Skipped steps start
/// over with a fresh attempt budget, Succeeded steps keep their outputs and attempts. Steps
/// whose dependencies all succeeded are queued on the run's pool at once.
pub async fn retry_run(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
    config: &EngineConfig,
) -> Result<RetryOutcome, EngineError> {
    let run_id = keys.run_id();
    match scripts::retry(keys).run(conn, "retrying the run").await? {
        RetryReply::Missing => Err(EngineError::RunNotFound(run_id.to_owned())),
        RetryReply::NotFailed(phase) => Ok(RetryOutcome::NotFailed(phase)),
        RetryReply::Retried { pool, reset, ready } => {
            let pool = PoolName::parse(&pool).map_err(|e| EngineError::Corrupt {
                what: format!("run {run_id}"),
                detail: format!("pool: {e}"),
            })?;
            queue_ready(
                conn,
                &pool,
                config,
                run_id,
                ready,
                "queueing the retried steps",
            )
            .await?;
            Ok(RetryOutcome::Retried { steps: reset })
        }
    }
}

/// The run as `crane-executor run` prints it, with full outputs.
pub async fn run_report(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
    outputs: Outputs,
) -> Result<RunReport, EngineError> {
    let run_id = keys.run_id();
    type Hash = HashMap<String, String>;
    let (meta, steps): (Hash, Hash) = redis::pipe()
        .cmd("HGETALL")
        .arg(keys.meta())
        .cmd("HGETALL")
        .arg(keys.steps())
        .query_async(conn)
        .await
        .map_err(EngineError::redis("reading the run"))?;
    if meta.is_empty() {
        return Err(EngineError::RunNotFound(run_id.to_owned()));
    }
    let plan: Plan = serde_json::from_str(meta.get("plan").map(String::as_str).unwrap_or(""))
        .map_err(|e| EngineError::Corrupt {
            what: format!("run {run_id}"),
            detail: format!("plan: {e}"),
        })?;
    let (step_bytes, result_bytes) = match outputs {
        Outputs::Full => (usize::MAX, usize::MAX),
        Outputs::Preview {
            step_bytes,
            result_bytes,
        } => (step_bytes, result_bytes),
    };
    let sinks: Vec<String> = plan.sinks().iter().map(ToString::to_string).collect();
    let raw: Vec<(String, usize, Vec<u8>)> = redis::cmd("EVAL")
        .arg(OUTPUTS)
        .arg(1)
        .arg(keys.out())
        .arg(step_bytes)
        .arg(result_bytes.max(step_bytes))
        .arg(sinks.join(","))
        .query_async::<Vec<redis::Value>>(conn)
        .await
        .map_err(EngineError::redis("reading the run's outputs"))
        .and_then(|v| parse_outputs(run_id, &v))?;
    let mut out = HashMap::with_capacity(raw.len());
    for (id, size, bytes) in raw {
        let output = if bytes.len() == size {
            serde_json::from_slice::<Json>(&bytes).map_err(|e| EngineError::Corrupt {
                what: format!("run {run_id}"),
                detail: format!("output of step {id}: {e}"),
            })?
        } else {
            truncated_output(size, &bytes)
        };
        out.insert(id, output);
    }
    build_report(run_id, plan, &meta, &steps, out)
}

/// Reads outputs bounded (see `lua/outputs.lua`).
const OUTPUTS: &str = include_str!("lua/outputs.lua");

/// How much of each step output [`run_report`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outputs {
    /// Every output whole (the CLI's report).
    Full,
    /// Outputs up to `step_bytes` (`result_bytes` for the final steps, whose outputs make the
    /// result) whole, larger ones as [`truncated_output`] previews: what the operator reads, so
    /// its memory does not grow with what tools return.
    Preview {
        step_bytes: usize,
        result_bytes: usize,
    },
}

/// The stand-in for an output too large to read whole:
/// `{"truncated": true, "sizeBytes": N, "preview": "<its first bytes>"}` (the preview ends at
/// a character boundary).
pub fn truncated_output(size: usize, first_bytes: &[u8]) -> Json {
    let preview = match std::str::from_utf8(first_bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&first_bytes[..e.valid_up_to()]).unwrap_or_default(),
    };
    serde_json::json!({"truncated": true, "sizeBytes": size, "preview": preview})
}

/// Reads the outputs script's reply of `{id, size, bytes}` triples.
fn parse_outputs(
    run_id: &str,
    v: &[redis::Value],
) -> Result<Vec<(String, usize, Vec<u8>)>, EngineError> {
    let bad = |detail: String| EngineError::Protocol {
        what: "reading the run's outputs",
        detail: format!("run {run_id}: {detail}"),
    };
    if !v.len().is_multiple_of(3) {
        return Err(bad(format!("{} items, not triples", v.len())));
    }
    v.chunks(3)
        .map(|t| {
            let id: String =
                redis::from_redis_value_ref(&t[0]).map_err(|e| bad(format!("step id: {e}")))?;
            let size: usize = redis::from_redis_value_ref(&t[1])
                .map_err(|e| bad(format!("size of step {id}: {e}")))?;
            let bytes: Vec<u8> = redis::from_redis_value_ref(&t[2])
                .map_err(|e| bad(format!("output of step {id}: {e}")))?;
            Ok((id, size, bytes))
        })
        .collect()
}

fn build_report(
    run_id: &str,
    plan: Plan,
    meta: &HashMap<String, String>,
    steps: &HashMap<String, String>,
    mut out: HashMap<String, Json>,
) -> Result<RunReport, EngineError> {
    let corrupt = |detail: String| EngineError::Corrupt {
        what: format!("run {run_id}"),
        detail,
    };
    let phase = meta
        .get("phase")
        .and_then(|p| phase(p))
        .ok_or_else(|| corrupt(format!("phase {:?}", meta.get("phase"))))?;
    let field = |id: StepId, f: &str| steps.get(&format!("{id}:{f}"));
    let time = |id: StepId, f: &str| {
        field(id, f)
            .and_then(|v| v.parse::<u64>().ok())
            .map(rfc3339)
    };
    let mut outputs = BTreeMap::new();
    let mut reports = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let output = out.remove(&step.id.to_string());
        if let Some(o) = &output {
            outputs.insert(step.id, o.clone());
        }
        let sphase = field(step.id, "phase")
            .and_then(|p| super::replies::phase::<StepPhase>(p))
            .ok_or_else(|| corrupt(format!("phase of step {}", step.id)))?;
        reports.push(StepReport {
            id: step.id,
            tool: step.tool.clone(),
            phase: sphase,
            attempts: field(step.id, "attempt")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
            output,
            error: field(step.id, "error").cloned(),
            started_at: time(step.id, "started"),
            finished_at: if sphase.is_terminal() {
                time(step.id, "finished")
            } else {
                None
            },
            usage: step_usage(field(step.id, "pt"), field(step.id, "ct")),
            message: (!sphase.is_terminal() && sphase != StepPhase::Running)
                .then(|| field(step.id, "wait").cloned())
                .flatten(),
            gate: (sphase == StepPhase::WaitingForApproval)
                .then(|| field(step.id, "gate"))
                .flatten()
                .map(|g| {
                    serde_json::from_str::<Gate>(g)
                        .map_err(|e| corrupt(format!("gate of step {}: {e}", step.id)))
                })
                .transpose()?
                .map(|g| Gate {
                    since: time(step.id, "gated"),
                    ..g
                }),
        });
    }
    let result = (phase == RunPhase::Succeeded)
        .then(|| result_from_sinks(&plan.sinks(), &outputs))
        .flatten();
    let first_failure = meta.get("first_failure").and_then(|id| id.parse().ok());
    let error = run_error(phase, &reports, first_failure);
    let spending = spending(meta, &reports);
    Ok(RunReport {
        phase,
        steps: reports,
        result,
        error,
        spending,
        budget_exceeded: meta.get("budget_exceeded").cloned(),
    })
}

/// A decision on a step waiting for approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve { by: String, comment: Option<String> },
    Reject { by: String, comment: Option<String> },
}

/// What [`decide`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    /// Applied; the run's phase after it.
    Applied(RunPhase),
    /// The step was not waiting (decided before, skipped by a cancel, or no such step): the
    /// decision changed nothing. Its phase, when it has one.
    NotWaiting(Option<StepPhase>),
}

/// Applies a decision to step `step` of a run: an approved `approval` step succeeds with
/// `{approved: true, by, comment}` and its dependents are queued; an approved gated tool
/// step is queued to run its tool; a rejected step fails, not retried, with
/// `rejected by <by>: <comment>`. Idempotent: a second decision finds nothing waiting.
pub async fn decide(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
    step: StepId,
    decision: &Decision,
) -> Result<Decided, EngineError> {
    let (verb, payload) = match decision {
        Decision::Approve { by, comment } => (
            "approve",
            serde_json::json!({"approved": true, "by": by, "comment": comment}).to_string(),
        ),
        Decision::Reject { by, comment } => (
            "reject",
            match comment.as_deref().filter(|c| !c.trim().is_empty()) {
                Some(c) => format!("rejected by {by}: {c}"),
                None => format!("rejected by {by}"),
            },
        ),
    };
    let reply = scripts::decide(keys, &step.to_string(), verb, &payload)
        .run(conn, "deciding an approval")
        .await?;
    let (phase, ready) = match reply {
        DecideReply::Stale { phase } => {
            return Ok(Decided::NotWaiting(
                phase
                    .as_deref()
                    .and_then(super::replies::phase::<StepPhase>),
            ));
        }
        DecideReply::Decided { phase, ready } => (phase, ready),
    };
    let pool = meta_field(conn, keys, "pool", "reading the run's pool").await?;
    if let Some(pool) = pool.filter(|_| !ready.is_empty() || phase.is_terminal()) {
        let pool = PoolName::parse(&pool)?;
        let after = PoolAfter {
            run: keys.run_id().to_owned(),
            ready,
            run_done: phase.is_terminal(),
            ..PoolAfter::default()
        };
        pool_after(&pool, &EngineConfig::default().breaker, &[after])
            .run(conn, "queueing approved steps")
            .await?;
    }
    // Whoever follows the run (the operator's mirror) hears of it at once.
    let notify = super::events::publish(keys.run_id(), &step.to_string(), phase);
    let _: Result<(), _> = notify.query_async(conn).await;
    Ok(Decided::Applied(phase))
}

/// A step's tokens, when it called a model.
fn step_usage(pt: Option<&String>, ct: Option<&String>) -> Option<Usage> {
    let n = |v: Option<&String>| v.and_then(|v| v.parse::<u64>().ok());
    match (n(pt), n(ct)) {
        (None, None) => None,
        (p, c) => Some(Usage {
            prompt_tokens: p.unwrap_or(0),
            completion_tokens: c.unwrap_or(0),
        }),
    }
}

/// What the run spent: its steps' model calls (counted by the `spend` script), the planner's
/// (carried in the options), and every attempt of another tool.
fn spending(meta: &HashMap<String, String>, steps: &[StepReport]) -> Spending {
    let n = |f: &str| meta.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let planner = meta
        .get("options")
        .and_then(|o| serde_json::from_str::<RunOptions>(o).ok())
        .and_then(|o| o.planner_usage);
    let planner_tokens = planner.unwrap_or_default();
    Spending {
        usage: Usage {
            prompt_tokens: n("prompt_tokens") + planner_tokens.prompt_tokens,
            completion_tokens: n("completion_tokens") + planner_tokens.completion_tokens,
        },
        llm_calls: n("llm_calls") + u64::from(planner.is_some()),
        tool_calls: steps
            .iter()
            .filter(|s| s.tool != crane_core::builtins::LLM)
            .map(|s| u64::from(s.attempts))
            .sum(),
    }
}

/// One field of a run's metadata, `None` when the run (or the field) is not there.
async fn meta_field(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
    field: &str,
    what: &'static str,
) -> Result<Option<String>, EngineError> {
    redis::cmd("HGET")
        .arg(keys.meta())
        .arg(field)
        .query_async(conn)
        .await
        .map_err(EngineError::redis(what))
}

/// The run's phase alone (cheap).
pub async fn run_phase(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
) -> Result<RunPhase, EngineError> {
    let run_id = keys.run_id();
    let p = meta_field(conn, keys, "phase", "reading the run phase").await?;
    let p = p.ok_or_else(|| EngineError::RunNotFound(run_id.to_owned()))?;
    phase(&p).ok_or_else(|| EngineError::Corrupt {
        what: format!("run {run_id}"),
        detail: format!("phase {p:?}"),
    })
}

/// Cancels a run: no new step starts, running steps finish. Returns the phase after it.
pub async fn cancel_run(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
) -> Result<RunPhase, EngineError> {
    let run_id = keys.run_id();
    match scripts::cancel(keys)
        .run(conn, "cancelling the run")
        .await?
    {
        CancelReply::Missing => Err(EngineError::RunNotFound(run_id.to_owned())),
        CancelReply::Phase(phase) => Ok(phase),
    }
}

/// Deletes every key of a run, its planner result included (the operator's finalizer).
/// Idempotent.
pub async fn delete_run(conn: &mut ConnectionManager, keys: &RunKeys) -> Result<(), EngineError> {
    let run_id = keys.run_id();
    let pool = meta_field(conn, keys, "pool", "reading the run's pool").await?;
    redis::cmd("DEL")
        .arg(&keys.script_keys()[..])
        .arg(keys.planner())
        .arg(keys.planner_input())
        .query_async::<()>(conn)
        .await
        .map_err(EngineError::redis("deleting the run"))?;
    if let Some(pool) = pool.and_then(|p| PoolName::parse(&p).ok()) {
        pool_runs(conn, "SREM", &pool, run_id, "unregistering the run").await?;
    }
    Ok(())
}

/// Waits until the run is terminal, following its event stream (no polling), and returns its
/// report. `client` gives a dedicated connection for the blocking reads.
pub async fn wait_for_run(
    client: &redis::Client,
    conn: &mut ConnectionManager,
    keys: &RunKeys,
    timeout: Option<Duration>,
) -> Result<RunReport, EngineError> {
    let run_id = keys.run_id();
    // The phase is read before every wait: a gap in the events costs nothing.
    let mut events = events::follow_run(client.clone(), keys, Start::Beginning).ignoring_gaps();
    let started = Instant::now();
    let mut failures = 0u32;
    loop {
        if timeout.is_some_and(|t| started.elapsed() > t) {
            return Err(EngineError::WaitTimeout(run_id.to_owned()));
        }
        match wait_step(conn, &mut events, keys).await {
            Ok(Some(report)) => return Ok(report),
            Ok(None) => failures = 0,
            // Redis restarting or a dropped connection: the connections reconnect.
            Err(EngineError::Redis { source, .. }) if is_transient(&source) && failures < 100 => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a Redis error is worth retrying (connection trouble, a restarting server).
pub fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_connection_refusal()
        || matches!(
            e.code(),
            Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN")
        )
}

async fn wait_step(
    conn: &mut ConnectionManager,
    events: &mut Follower<RunEvent>,
    keys: &RunKeys,
) -> Result<Option<RunReport>, EngineError> {
    if run_phase(conn, keys).await?.is_terminal() {
        return run_report(conn, keys, Outputs::Full).await.map(Some);
    }
    // Events are hints; the phase read above is the truth, so a lost event only costs one
    // block interval.
    events.read(Duration::from_millis(500)).await?;
    Ok(None)
}

/// An `Executor` that runs plans through Redis: submits the run to a pool and waits for the
/// pool's workers (in this process or elsewhere) to finish it.
#[derive(Clone)]
pub struct RedisExecutor {
    client: redis::Client,
    conn: ConnectionManager,
    pool: PoolName,
    config: EngineConfig,
    catalog: Catalog,
    timeout: Option<Duration>,
}

impl RedisExecutor {
    /// Plans are validated against `catalog` (what the pool's workers run) before anything is
    /// stored.
    pub fn new(
        client: redis::Client,
        conn: ConnectionManager,
        pool: PoolName,
        config: EngineConfig,
        catalog: Catalog,
    ) -> Self {
        Self {
            client,
            conn,
            pool,
            config,
            catalog,
            timeout: None,
        }
    }

    /// Gives up waiting (with `EngineError::WaitTimeout`) after this long.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Submits and waits (the plan is not validated here: see [`Executor::execute`]).
    pub async fn run(&self, run: RunRequest<'_>) -> Result<RunReport, EngineError> {
        let RunRequest {
            run_id,
            namespace,
            plan,
            options,
        } = run;
        let mut conn = self.conn.clone();
        let (pool, config) = (&self.pool, &self.config);
        let keys = RunKeys::new(namespace, run_id)?;
        let created = init_run(&mut conn, &keys, pool, plan, options, config).await?;
        if created == InitOutcome::AlreadyExists {
            return Err(EngineError::RunExists(run_id.to_owned()));
        }
        wait_for_run(&self.client, &mut conn, &keys, self.timeout).await
    }
}

impl Executor for RedisExecutor {
    fn execute<'a>(&'a self, run: RunRequest<'a>) -> ExecuteFuture<'a> {
        Box::pin(async move {
            crane_core::validate::validate(run.plan, &self.catalog)
                .map_err(|e| anyhow::anyhow!("invalid plan:\n{e}"))?;
            Ok(self.run(run).await?)
        })
    }
}

/// What a planner Job leaves for the operator: the plan and who made it, or the planner's
/// own error message. Stored under the run's hash tag by [`store_planner_result`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum PlannerResult {
    #[serde(rename_all = "camelCase")]
    Planned {
        plan: Plan,
        source: crane_core::plan::PlanSource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback_reason: Option<String>,
        /// Tokens the LLM planner's call used (none for the rules planner).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<crane_core::model::Usage>,
    },
    Failed {
        error: String,
    },
}

/// What the operator gives a planner Job, through Redis rather than the pod spec: the prompt
/// byte for byte (an environment variable would lose a NUL and expand `$(...)`), the tools
/// the namespace offers (what the LLM planner may use), and the Model to plan with.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannerInput {
    pub prompt: String,
    /// The catalog as the planner sees it: names, descriptions, schemas (no endpoints).
    pub tools: Vec<crane_core::tool::ToolSpec>,
    /// `spec.model`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<crane_core::model::ModelConfig>,
}

/// Largest planner input read back: a prompt and a catalog.
const MAX_PLANNER_INPUT_BYTES: usize = 8 * 1024 * 1024;

/// Stores what the planner Job of the run of `keys` is given, expiring after `ttl`.
pub async fn store_planner_input(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
    input: &PlannerInput,
    ttl: Duration,
) -> Result<(), EngineError> {
    let json = to_json("the planner input", input)?;
    redis::cmd("SET")
        .arg(keys.planner_input())
        .arg(json)
        .arg("PX")
        .arg(ms(ttl).max(1))
        .query_async::<()>(conn)
        .await
        .map_err(EngineError::redis("storing the planner input"))
}

/// What the planner Job of the run of `keys` is given; `None` when the operator stored
/// nothing (the run is gone, or Redis lost it).
pub async fn load_planner_input(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
) -> Result<Option<PlannerInput>, EngineError> {
    let key = keys.planner_input();
    let text: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(conn)
        .await
        .map_err(EngineError::redis("reading the planner input"))?;
    let Some(text) = text else { return Ok(None) };
    if text.len() > MAX_PLANNER_INPUT_BYTES {
        return Err(EngineError::Corrupt {
            what: key,
            detail: format!("{} bytes, more than {MAX_PLANNER_INPUT_BYTES}", text.len()),
        });
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EngineError::Corrupt {
            what: key,
            detail: format!("planner input: {e}"),
        })
}

/// Largest stored planner result read back (a plan is at most `MAX_PLAN_BYTES`).
const MAX_PLANNER_RESULT_BYTES: usize = crane_core::validate::MAX_PLAN_BYTES + 64 * 1024;

/// Stores a planner result for the run of `keys`, expiring after `ttl`.
pub async fn store_planner_result(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
    result: &PlannerResult,
    ttl: Duration,
) -> Result<(), EngineError> {
    let key = keys.planner();
    let json = serde_json::to_string(result).map_err(|e| {
        EngineError::InvalidPlan(format!("cannot serialise the planner result: {e}"))
    })?;
    redis::cmd("SET")
        .arg(&key)
        .arg(json)
        .arg("PX")
        .arg(ms(ttl).max(1))
        .query_async::<()>(conn)
        .await
        .map_err(EngineError::redis("storing the planner result"))
}

/// The planner result of the run of `keys`, `None` when the planner has not stored one (yet).
pub async fn load_planner_result(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
) -> Result<Option<PlannerResult>, EngineError> {
    let key = keys.planner();
    let text: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(conn)
        .await
        .map_err(EngineError::redis("reading the planner result"))?;
    let Some(text) = text else { return Ok(None) };
    if text.len() > MAX_PLANNER_RESULT_BYTES {
        return Err(EngineError::Corrupt {
            what: key,
            detail: format!("{} bytes, more than {MAX_PLANNER_RESULT_BYTES}", text.len()),
        });
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EngineError::Corrupt {
            what: key,
            detail: format!("planner result: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crane_core::plan::Step;

    fn step(id: StepId, deps: &[StepId]) -> Step {
        Step {
            id,
            tool: "calculator".into(),
            input: Default::default(),
            reasoning: String::new(),
            depends_on: deps.to_vec(),
        }
    }

    /// Why the structure check refuses a plan of these steps (a panic when it accepts it).
    fn refusal(steps: Vec<Step>) -> String {
        match check_structure(&Plan { steps }) {
            Ok(()) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn redis_urls_with_credentials_or_several_nodes_are_refused_saying_why() {
        let refused = |url: &str| match client(url, &Auth::default()) {
            Ok(_) => panic!("{url} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(refused("redis://:pw@127.0.0.1:6379").contains("carries credentials"));
        assert!(refused("redis://user:pw@127.0.0.1:6379").contains("carries credentials"));
        assert!(
            refused("redis://10.0.0.5:6379,redis://10.0.0.6:6379").contains("several nodes"),
            "a cluster's node list gets a clear refusal, not a parse error"
        );
        assert!(!refused("redis://127.0.0.1:notaport").is_empty());
        assert!(client("redis://127.0.0.1:6379", &Auth::default()).is_ok());
    }

    #[test]
    fn structure_check_rejects_what_would_hang_or_confuse_the_scripts() {
        assert!(!refusal(vec![]).is_empty());
        let duplicate = refusal(vec![step(1, &[]), step(1, &[])]);
        assert!(duplicate.contains("ids must be unique"), "{duplicate}");
        assert!(refusal(vec![step(1, &[7])]).contains("step 7"));
        assert!(refusal(vec![step(1, &[2]), step(2, &[1])]).contains("cycle"));
        assert!(refusal(vec![step(1, &[1])]).contains("depends on itself"));
        assert!(!refusal(vec![step(0, &[])]).is_empty());
        let mut hostile = step(1, &[]);
        hostile.tool = "calc|ulator".into();
        assert!(refusal(vec![hostile]).contains("tool name"));
        assert!(!refusal((1..=501).map(|i| step(i, &[])).collect()).is_empty());
        let repeated_dependency = vec![step(1, &[]), step(2, &[1, 1]), step(3, &[1, 2])];
        assert!(
            check_structure(&Plan {
                steps: repeated_dependency
            })
            .is_ok()
        );
    }

    #[test]
    fn planner_results_round_trip_and_keys_reject_hostile_run_ids() {
        let planned = PlannerResult::Planned {
            plan: Plan {
                steps: vec![step(1, &[])],
            },
            source: crane_core::plan::PlanSource::Rules,
            fallback_reason: None,
            usage: None,
        };
        let text = serde_json::to_string(&planned).unwrap();
        assert!(text.contains("\"status\":\"planned\""), "{text}");
        assert_eq!(
            serde_json::from_str::<PlannerResult>(&text).unwrap(),
            planned
        );
        let failed = PlannerResult::Failed {
            error: "prompt is empty".into(),
        };
        let text = serde_json::to_string(&failed).unwrap();
        assert_eq!(
            serde_json::from_str::<PlannerResult>(&text).unwrap(),
            failed
        );
    }

    #[test]
    fn hostile_namespaces_are_rejected() {
        for bad in ["", "A", "a/b", "{x}", "a b", &"a".repeat(64)] {
            assert!(RunKeys::new(bad, "r").is_err(), "{bad:?}");
        }
        assert!(RunKeys::new("team-a", "r").is_ok());
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_panic() {
        let plan = Plan {
            steps: vec![step(1, &[])],
        };
        let mut meta = HashMap::new();
        meta.insert("phase".to_owned(), "Exploded".to_owned());
        let err =
            build_report("r", plan.clone(), &meta, &HashMap::new(), HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("phase"), "{err}");
        meta.insert("phase".to_owned(), "Running".to_owned());
        let err = build_report("r", plan, &meta, &HashMap::new(), HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("phase of step 1"), "{err}");

        use redis::Value as V;
        let bulk = |s: &str| V::BulkString(s.as_bytes().to_vec());
        assert!(parse_outputs("r", &[bulk("1"), V::Int(2)]).is_err());
        let err = parse_outputs("r", &[bulk("1"), bulk("many"), bulk("{}")]).unwrap_err();
        assert!(err.to_string().contains("size of step 1"), "{err}");
        assert_eq!(
            parse_outputs("r", &[bulk("1"), V::Int(2), bulk("{}")]).unwrap(),
            [("1".to_owned(), 2, b"{}".to_vec())]
        );
    }

    #[test]
    fn previews_end_at_a_character_boundary() {
        // "é" is two bytes; a cut between them drops the half character.
        let cut = &"aé".as_bytes()[..2];
        let t = truncated_output(1000, cut);
        assert_eq!(
            t,
            serde_json::json!({"truncated": true, "sizeBytes": 1000, "preview": "a"})
        );
    }
}
