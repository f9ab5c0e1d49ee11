//! The Lua scripts that change engine state, and how to call them (singly, or many in one
//! pipeline). Run scripts touch only the five keys of one run; pool scripts only the four keys
//! of one pool. The scripts are the only writers of run state.
//!
//! Each script is declared once, in [`SCRIPTS`]: its source, and in its type what its reply
//! parses into (see [`crate::replies`]). The functions below build one [`Call`] of each script
//! from typed arguments; running a call gives the typed reply, and a reply of the wrong shape
//! is an [`EngineError::Protocol`] naming the script and what was wrong.

use std::marker::PhantomData;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Script, Value};

use crate::keys::{PoolName, RunKeys};
use crate::queue::{BreakerState, GROUP, QueueDepth};
use crate::replies::{
    BreakerUpdate, CancelReply, CompleteReply, CreateReply, DecideReply, GateReply, GovernReply,
    ReleaseReply, Reply, RetryReply, SpendReply, StartReply, SweepReply,
};
use crate::{EngineError, ms};

/// The prelude of every run-slot script: key names and the DAG rules' helpers.
const COMMON: &str = include_str!("lua/common.lua");

/// One engine script; `R` is what its reply parses into.
pub struct LuaScript<R> {
    name: &'static str,
    script: Script,
    reply: PhantomData<fn() -> R>,
}

impl<R> LuaScript<R> {
    /// A call of this script (EVALSHA), to run alone or in a pipeline.
    fn call(&self, keys: &[String], args: &[String]) -> Call<R> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        Call {
            script: self.name,
            cmd,
            reply: PhantomData,
        }
    }
}

/// Every script the engine runs, each declared once (in [`SCRIPTS`]).
pub struct Scripts {
    init: LuaScript<CreateReply>,
    restore: LuaScript<CreateReply>,
    start: LuaScript<Vec<StartReply>>,
    complete: LuaScript<Vec<CompleteReply>>,
    release: LuaScript<ReleaseReply>,
    cancel: LuaScript<CancelReply>,
    sweep: LuaScript<SweepReply>,
    retry: LuaScript<RetryReply>,
    spend: LuaScript<SpendReply>,
    gate: LuaScript<GateReply>,
    decide: LuaScript<DecideReply>,
    govern: LuaScript<GovernReply>,
    pool_after: LuaScript<Vec<BreakerUpdate>>,
    promote: LuaScript<u64>,
    breakers: LuaScript<Vec<BreakerState>>,
    depth: LuaScript<QueueDepth>,
    /// Every script's source, for `SCRIPT LOAD`.
    sources: Vec<String>,
}

/// Declares scripts, keeping each one's source for [`Scripts::load`].
#[derive(Default)]
struct Declare(Vec<String>);

impl Declare {
    /// A run-slot script: the shared prelude, then its body.
    fn run<R>(&mut self, name: &'static str, body: &str) -> LuaScript<R> {
        // The limits the scripts enforce come from Rust, so there is one source of each.
        let limits = format!(
            "local MAX_RUN_OUTPUT_BYTES = {}",
            crane_core::tool::MAX_RUN_OUTPUT_BYTES
        );
        self.pool(name, &format!("{limits}\n{COMMON}\n{body}"))
    }

    /// A pool-slot script, as it is.
    fn pool<R>(&mut self, name: &'static str, code: &str) -> LuaScript<R> {
        self.0.push(code.to_owned());
        LuaScript {
            name,
            script: Script::new(code),
            reply: PhantomData,
        }
    }
}

/// The process-wide script set.
pub static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let mut d = Declare::default();
    let mut scripts = Scripts {
        init: d.run("init", include_str!("lua/init.lua")),
        restore: d.run("restore", include_str!("lua/restore.lua")),
        start: d.run("start", include_str!("lua/start.lua")),
        complete: d.run("complete", include_str!("lua/complete.lua")),
        release: d.run("release", include_str!("lua/release.lua")),
        cancel: d.run("cancel", include_str!("lua/cancel.lua")),
        sweep: d.run("sweep", include_str!("lua/sweep.lua")),
        retry: d.run("retry", include_str!("lua/retry.lua")),
        spend: d.run("spend", include_str!("lua/spend.lua")),
        gate: d.run("gate", include_str!("lua/gate.lua")),
        decide: d.run("decide", include_str!("lua/decide.lua")),
        govern: d.pool("govern", include_str!("lua/govern.lua")),
        pool_after: d.pool("pool_after", include_str!("lua/pool_after.lua")),
        promote: d.pool("promote", include_str!("lua/promote.lua")),
        breakers: d.pool("breakers", include_str!("lua/breakers.lua")),
        depth: d.pool("depth", include_str!("lua/depth.lua")),
        sources: Vec::new(),
    };
    scripts.sources = d.0;
    scripts
});

impl Scripts {
    /// Loads every script into the server's cache (after a connect or a Redis restart), so
    /// calls can use EVALSHA.
    pub async fn load(&self, conn: &mut ConnectionManager) -> Result<(), EngineError> {
        let mut pipe = redis::pipe();
        for code in &self.sources {
            pipe.cmd("SCRIPT").arg("LOAD").arg(code).ignore();
        }
        pipe.query_async::<()>(conn)
            .await
            .map_err(EngineError::redis("loading scripts"))
    }
}

/// One call of a script whose reply parses into `R`.
pub struct Call<R> {
    script: &'static str,
    cmd: redis::Cmd,
    reply: PhantomData<fn() -> R>,
}

impl<R> Clone for Call<R> {
    fn clone(&self) -> Self {
        Self {
            script: self.script,
            cmd: self.cmd.clone(),
            reply: PhantomData,
        }
    }
}

impl<R: Reply> Call<R> {
    /// Runs this call alone; `what` says what it was for, in errors.
    pub async fn run(
        self,
        conn: &mut ConnectionManager,
        what: &'static str,
    ) -> Result<R, EngineError> {
        let mut replies = run_all(conn, vec![self], what).await?;
        replies.pop().ok_or(EngineError::Protocol {
            what,
            detail: "no reply".into(),
        })
    }
}

/// Runs calls (of one script) in one pipelined round trip, replies in order.
pub async fn run_all<R: Reply>(
    conn: &mut ConnectionManager,
    calls: Vec<Call<R>>,
    what: &'static str,
) -> Result<Vec<R>, EngineError> {
    run_with(conn, calls, Vec::new(), what).await
}

/// Like [`run_all`], with `extra` commands in the same pipeline whose replies are not needed
/// (progress notifications). When Redis lost its script cache (a restart), loads every script
/// and sends the pipeline once more: every call in it is idempotent against a second delivery.
pub async fn run_with<R: Reply>(
    conn: &mut ConnectionManager,
    calls: Vec<Call<R>>,
    extra: Vec<redis::Cmd>,
    what: &'static str,
) -> Result<Vec<R>, EngineError> {
    if calls.is_empty() && extra.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for c in &calls {
        pipe.add_command(c.cmd.clone());
    }
    for c in extra {
        pipe.add_command(c).ignore();
    }
    let values: Vec<Value> = match pipe.query_async(conn).await {
        Ok(v) => v,
        Err(e) if e.code() == Some("NOSCRIPT") => {
            SCRIPTS.load(conn).await?;
            pipe.query_async(conn)
                .await
                .map_err(EngineError::redis(what))?
        }
        Err(e) => return Err(EngineError::redis(what)(e)),
    };
    if values.len() != calls.len() {
        return Err(EngineError::Protocol {
            what,
            detail: format!("{} replies to {} calls", values.len(), calls.len()),
        });
    }
    calls
        .iter()
        .zip(values)
        .map(|(call, v)| {
            R::parse(v).map_err(|detail| EngineError::Protocol {
                what,
                detail: format!("{} script: {detail}", call.script),
            })
        })
        .collect()
}

/// `init`: creates a run from the arguments `api::init_run` builds (see `lua/init.lua`).
pub fn init(keys: &RunKeys, args: &[String]) -> Call<CreateReply> {
    SCRIPTS.init.call(&keys.script_keys(), args)
}

/// `restore`: re-creates a run Redis lost (arguments in `lua/restore.lua`).
pub fn restore(keys: &RunKeys, args: &[String]) -> Call<CreateReply> {
    SCRIPTS.restore.call(&keys.script_keys(), args)
}

/// How a worker came by the hints it asks `start` to accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// Read from the pool's stream.
    New,
    /// Taken over from a worker whose lease expired: a step Running under that very entry
    /// has lost its attempt, which counts.
    Reclaim,
}

/// One hint `start` is asked to accept.
#[derive(Clone, Copy, Debug)]
pub struct StartHint<'a> {
    pub step: &'a str,
    /// The new attempt's owner token: only its completion will count.
    pub owner: &'a str,
    /// The hint's stream entry.
    pub entry: &'a str,
}

/// `start`: one row per hint, in order, each judged on its own.
pub fn start(keys: &RunKeys, mode: StartMode, hints: &[StartHint<'_>]) -> Call<Vec<StartReply>> {
    let mut args = Vec::with_capacity(1 + 3 * hints.len());
    args.push(match mode {
        StartMode::New => "new".to_owned(),
        StartMode::Reclaim => "reclaim".to_owned(),
    });
    for h in hints {
        args.extend([h.step.to_owned(), h.owner.to_owned(), h.entry.to_owned()]);
    }
    SCRIPTS.start.call(&keys.script_keys(), &args)
}

/// How one attempt ended, for `complete`.
#[derive(Clone, Copy, Debug)]
pub struct AttemptEnd<'a> {
    pub step: &'a str,
    /// The owner token `start` gave the attempt.
    pub owner: &'a str,
    pub attempt: u32,
    pub outcome: AttemptOutcome<'a>,
    /// How long a retry waits, if there is one.
    pub backoff_ms: u64,
}

/// What an attempt produced.
#[derive(Clone, Copy, Debug)]
pub enum AttemptOutcome<'a> {
    /// The output, as JSON text.
    Output(&'a str),
    Error {
        message: &'a str,
        retryable: bool,
    },
}

/// `complete`: one row per attempt, in order, each judged on its own.
pub fn complete(keys: &RunKeys, ends: &[AttemptEnd<'_>]) -> Call<Vec<CompleteReply>> {
    let mut args = Vec::with_capacity(7 * ends.len());
    for e in ends {
        let (outcome, payload, retryable) = match e.outcome {
            AttemptOutcome::Output(json) => ("ok", json, false),
            AttemptOutcome::Error { message, retryable } => ("err", message, retryable),
        };
        args.extend([
            e.step.to_owned(),
            e.owner.to_owned(),
            e.attempt.to_string(),
            outcome.to_owned(),
            payload.to_owned(),
            (if retryable { "1" } else { "0" }).to_owned(),
            e.backoff_ms.to_string(),
        ]);
    }
    SCRIPTS.complete.call(&keys.script_keys(), &args)
}

/// `release`: a draining worker gives its attempt of `step` back without counting it.
pub fn release(
    keys: &RunKeys,
    step: &str,
    owner: &str,
    attempt: u32,
    why: Option<&str>,
) -> Call<ReleaseReply> {
    let args = [
        step.to_owned(),
        owner.to_owned(),
        attempt.to_string(),
        why.unwrap_or_default().to_owned(),
    ];
    SCRIPTS.release.call(&keys.script_keys(), &args)
}

/// `gate`: the attempt `owner` holds parks the step in WaitingForApproval with `gate` (JSON).
pub fn gate(keys: &RunKeys, step: &str, owner: &str, attempt: u32, gate: &str) -> Call<GateReply> {
    let args = [
        step.to_owned(),
        owner.to_owned(),
        attempt.to_string(),
        gate.to_owned(),
    ];
    SCRIPTS.gate.call(&keys.script_keys(), &args)
}

/// `decide`: `verb` is `approve` or `reject`; `payload` the approval step's output or the
/// rejected step's error.
pub fn decide(keys: &RunKeys, step: &str, verb: &str, payload: &str) -> Call<DecideReply> {
    let args = [step.to_owned(), verb.to_owned(), payload.to_owned()];
    SCRIPTS.decide.call(&keys.script_keys(), &args)
}

/// What a call about to go out is, for the run's budget.
#[derive(Clone, Copy, Debug)]
pub struct Charge {
    /// A model call (else another tool's).
    pub llm: bool,
    /// Tokens the call may use (model calls), held until it settles.
    pub estimate: u64,
}

/// `spend` (reserve): whether the run's budget covers this call of step `step`; counts it
/// when it does. The planner's usage, spent before the run existed, counts too.
pub fn reserve(
    keys: &RunKeys,
    step: &str,
    charge: Charge,
    budget: &crane_core::model::Budget,
    planner: Option<&crane_core::model::Usage>,
) -> Call<SpendReply> {
    let limit = |v: Option<u64>| v.map_or_else(|| "-1".to_owned(), |n| n.to_string());
    let calls = if charge.llm {
        budget.max_llm_calls
    } else {
        budget.max_tool_calls
    };
    let args = [
        "reserve".to_owned(),
        step.to_owned(),
        if charge.llm { "llm" } else { "tool" }.to_owned(),
        limit(calls),
        limit(budget.max_tokens),
        charge.estimate.to_string(),
        planner
            .map_or(0, crane_core::model::Usage::total)
            .to_string(),
        u8::from(planner.is_some()).to_string(),
    ];
    SCRIPTS.spend.call(&keys.script_keys(), &args)
}

/// `spend` (settle): what step `step`'s model call used, by the provider's count.
pub fn settle(keys: &RunKeys, step: &str, usage: &crane_core::model::Usage) -> Call<SpendReply> {
    let args = [
        "settle".to_owned(),
        step.to_owned(),
        usage.prompt_tokens.to_string(),
        usage.completion_tokens.to_string(),
    ];
    SCRIPTS.spend.call(&keys.script_keys(), &args)
}

/// `govern` (acquire): whether a call to the model whose keys are `model` may go out now
/// under its shared limits; `member` names this attempt.
pub fn acquire(
    model: &[String; 3],
    member: &str,
    limits: &crane_core::model::ModelLimits,
    estimate: u64,
    lease: Duration,
) -> Call<GovernReply> {
    let args = [
        "acquire".to_owned(),
        member.to_owned(),
        limits.max_concurrent_requests.unwrap_or(0).to_string(),
        limits.requests_per_minute.unwrap_or(0).to_string(),
        limits.tokens_per_minute.unwrap_or(0).to_string(),
        estimate.to_string(),
        ms(lease).to_string(),
    ];
    SCRIPTS.govern.call(model, &args)
}

/// `govern` (release): the call of `member` is over; `used` replaces its estimate in the
/// tokens-per-minute window (`None`: it failed without a count, the estimate stays).
pub fn unacquire(
    model: &[String; 3],
    member: &str,
    estimate: u64,
    used: Option<u64>,
) -> Call<GovernReply> {
    let args = [
        "release".to_owned(),
        member.to_owned(),
        estimate.to_string(),
        used.map_or_else(|| "-1".to_owned(), |n| n.to_string()),
    ];
    SCRIPTS.govern.call(model, &args)
}

/// `cancel`.
pub fn cancel(keys: &RunKeys) -> Call<CancelReply> {
    SCRIPTS.cancel.call(&keys.script_keys(), &[])
}

/// `sweep`: what of the run must be queued again (see `lua/sweep.lua`).
pub fn sweep(keys: &RunKeys, threshold: Duration, lease: Duration) -> Call<SweepReply> {
    let args = [ms(threshold).to_string(), ms(lease).to_string()];
    SCRIPTS.sweep.call(&keys.script_keys(), &args)
}

/// `retry`: retry from failure.
pub fn retry(keys: &RunKeys) -> Call<RetryReply> {
    SCRIPTS.retry.call(&keys.script_keys(), &[])
}

/// `pool_after`, from the arguments `queue::pool_after` builds (see `lua/pool_after.lua`).
pub fn pool_after(pool: &PoolName, args: &[String]) -> Call<Vec<BreakerUpdate>> {
    SCRIPTS.pool_after.call(&pool.script_keys(), args)
}

/// `promote`: moves at most `limit` due delayed hints into the queue; replies how many.
pub fn promote(pool: &PoolName, limit: u32) -> Call<u64> {
    SCRIPTS
        .promote
        .call(&[pool.queue(), pool.delayed()], &[limit.to_string()])
}

/// `breakers`: every breaker of the pool as of now.
pub fn breakers(pool: &PoolName, cooldown: Duration) -> Call<Vec<BreakerState>> {
    SCRIPTS
        .breakers
        .call(&[pool.breakers()], &[ms(cooldown).to_string()])
}

/// `depth`: the pool's queue depth.
pub fn depth(pool: &PoolName) -> Call<QueueDepth> {
    SCRIPTS
        .depth
        .call(&[pool.queue(), pool.delayed()], &[GROUP.to_owned()])
}
