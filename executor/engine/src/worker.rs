//! The worker: takes step hints from its pool's stream, starts steps through the start
//! script, runs tools with the step timeout, reports outcomes through the completion script,
//! heartbeats its leases, reclaims dead workers' steps, promotes due retries, sweeps for lost
//! hints, honours the shared circuit breakers, and drains on shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use redis::Value;
use redis::aio::ConnectionManager;
use serde_json::Value as Json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use super::api::{connect, connect_with};
use super::events;
use super::keys::{PoolName, RunKeys};
use super::metrics::{Metrics, StepLabels, ToolLabels};
use super::queue::{
    BreakerPhase, GROUP, PoolAfter, breaker_states, ensure_group, pool_after, promote_due,
};
use super::replies::{
    CompleteReply, GateReply, ReleaseReply, StartReply, Started, StepEnded, SweepReply,
};
use super::scripts::{
    self, AttemptEnd, AttemptOutcome, Call, SCRIPTS, StartHint, StartMode, run_all, run_with,
};
use super::streams::{self, field};
use super::{BreakerConfig, EngineConfig, EngineError, ms};
use crate::call::Attempt;
use crane_core::tool::{Connectors, ToolContext, ToolError, Toolbox};

/// How a worker behaves.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub pool: PoolName,
    /// Steps run at once.
    pub concurrency: usize,
    /// Exit after this long with nothing to do (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// On shutdown, how long in-flight steps may take before they are released.
    pub grace: Duration,
    /// Longest `XREADGROUP BLOCK`; bounds how late shutdown and idle checks notice.
    pub block: Duration,
    /// Consumer name in the group; unique per worker process.
    pub consumer: String,
    pub engine: EngineConfig,
}

impl WorkerConfig {
    pub fn new(pool: PoolName) -> Self {
        Self {
            pool,
            concurrency: 8,
            idle_timeout: Some(Duration::from_secs(30)),
            grace: Duration::from_secs(20),
            block: Duration::from_millis(1000),
            consumer: default_consumer(),
            engine: EngineConfig::default(),
        }
    }
}

/// `<hostname>-<pid>-<random>`: unique even when pods reuse names.
pub fn default_consumer() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(60)
        .collect();
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

/// What a worker did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Attempts this worker completed and the engine accepted.
    pub completed: u64,
    /// Steps given back on shutdown.
    pub released: u64,
}

/// One hint read from the stream.
#[derive(Clone, Debug)]
struct Hint {
    entry: String,
    run: String,
    step: String,
    tool: String,
}

/// Locally cached breaker: phase and when (local clock) an open one half-opens.
#[derive(Clone, Copy)]
struct CachedBreaker {
    phase: BreakerPhase,
    open_until: Instant,
}

/// The worker's connection for ordinary commands, renewed when Redis refuses its login.
///
/// A `ConnectionManager` reconnects by itself only after I/O errors: a reconnect that Redis
/// answers with an authentication error (a namespace's Redis user is gone after a Redis
/// restart, until the operator re-creates it) leaves it failing every call for good. The
/// worker then connects anew, once the login works again, and every user of the connection
/// takes the current one for each round of work.
struct SharedConn {
    client: redis::Client,
    current: Mutex<ConnectionManager>,
}

impl SharedConn {
    fn get(&self) -> ConnectionManager {
        lock(&self.current).clone()
    }

    /// After `e`: when Redis refused the login, connects anew (kept only if it works now).
    async fn renew_if_refused(&self, e: &EngineError) -> bool {
        if !login_refused(e) {
            return false;
        }
        match connect(&self.client).await {
            Ok(conn) => {
                info!("redis accepts the login again: renewed the connection");
                *lock(&self.current) = conn;
                true
            }
            Err(_) => false,
        }
    }
}

/// Redis refused the credentials (not a network problem, which the connection survives).
fn login_refused(e: &EngineError) -> bool {
    matches!(e, EngineError::Redis { source, .. }
        if source.kind() == redis::ErrorKind::AuthenticationFailed)
}

struct Inner {
    config: WorkerConfig,
    conn: Arc<SharedConn>,
    toolbox: Arc<Toolbox>,
    /// Runners of the tools runs bind and of model calls; none: only built-ins run.
    connectors: Option<Arc<dyn Connectors>>,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    /// Stream entries this worker holds a lease on (heartbeated).
    in_flight: Mutex<HashMap<String, String>>,
    breakers: Mutex<HashMap<String, CachedBreaker>>,
    /// Flips to true when in-flight steps must be released.
    release_tx: watch::Sender<bool>,
    /// Finished attempts go to the completer task, which records them in batches.
    completions: mpsc::UnboundedSender<Completion>,
    completed: AtomicU64,
    released: AtomicU64,
    last_activity: Mutex<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these small maps cannot leave them inconsistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A worker of one pool.
pub struct Worker {
    inner: Arc<Inner>,
    read_conn: ConnectionManager,
}

impl Worker {
    /// Connects (two connections: one for blocking reads) and prepares the pool's group.
    pub async fn new(
        client: &redis::Client,
        toolbox: Arc<Toolbox>,
        config: WorkerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, EngineError> {
        let mut conn = connect(client).await?;
        let read_conn = connect_with(client, config.block + Duration::from_secs(5)).await?;
        ensure_group(&mut conn, &config.pool).await?;
        SCRIPTS.load(&mut conn).await?;
        let (release_tx, _) = watch::channel(false);
        // The completer ends when the worker is gone (every sender dropped).
        let (completions, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(SharedConn {
            client: client.clone(),
            current: Mutex::new(conn),
        });
        tokio::spawn(completer(
            conn.clone(),
            config.pool.clone(),
            config.engine.breaker,
            rx,
        ));
        let inner = Inner {
            completions,
            slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config,
            conn,
            toolbox,
            connectors: None,
            metrics,
            in_flight: Mutex::new(HashMap::new()),
            breakers: Mutex::new(HashMap::new()),
            release_tx,
            completed: AtomicU64::new(0),
            released: AtomicU64::new(0),
            last_activity: Mutex::new(Instant::now()),
        };
        Ok(Self {
            inner: Arc::new(inner),
            read_conn,
        })
    }

    /// Runs the tools runs bind (HTTP, MCP) and model calls with `connectors`.
    pub fn with_connectors(mut self, connectors: Arc<dyn Connectors>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.connectors = Some(connectors);
        }
        self
    }

    /// Runs until idle for the idle timeout, or until `shutdown` resolves; then stops reading,
    /// lets in-flight steps finish within the grace period and releases the rest.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerSummary, EngineError> {
        let inner = self.inner.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let maintenance = tokio::spawn(maintenance_loop(inner.clone(), stop_rx.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        info!(pool = %inner.config.pool, consumer = %inner.config.consumer, concurrency = inner.config.concurrency, "worker started");
        loop {
            // Wait for a free slot, but wake up for shutdown.
            let free = inner.slots.available_permits();
            if free == 0 {
                tokio::select! {
                    p = inner.slots.clone().acquire_owned() => drop(p),
                    () = &mut shutdown => break,
                    Some(_) = tasks.join_next() => {}
                }
                continue;
            }
            while tasks.try_join_next().is_some() {}
            let read = read_hints(&mut self.read_conn, &inner.config, free);
            let hints = tokio::select! {
                r = read => r,
                () = &mut shutdown => break,
            };
            match hints {
                Ok(hints) if hints.is_empty() => {
                    let idle_for = lock(&inner.last_activity).elapsed();
                    let busy = inner.slots.available_permits() < inner.config.concurrency.max(1);
                    if !busy && inner.config.idle_timeout.is_some_and(|t| idle_for >= t) {
                        info!(idle_s = idle_for.as_secs(), "idle timeout reached, exiting");
                        break;
                    }
                }
                Ok(hints) => {
                    *lock(&inner.last_activity) = Instant::now();
                    // Slots are taken at read time, so the next read (which runs while this
                    // batch is being started) asks only for what is still free.
                    let permits: Vec<_> = hints
                        .iter()
                        .map_while(|_| inner.slots.clone().try_acquire_owned().ok())
                        .collect();
                    let inner = inner.clone();
                    tasks.spawn(async move {
                        let mut steps = tokio::task::JoinSet::new();
                        handle_hints(&inner, hints, permits, StartMode::New, &mut steps).await;
                        while steps.join_next().await.is_some() {}
                    });
                }
                Err(e) => {
                    if let EngineError::Redis { source, .. } = &e
                        && source.code() == Some("NOGROUP")
                    {
                        let mut conn = inner.conn.get();
                        if let Err(e) = ensure_group(&mut conn, &inner.config.pool).await {
                            warn!(error = %e, "cannot recreate the consumer group");
                        }
                    } else {
                        warn!(error = %e, "reading the queue failed; retrying");
                        if inner.conn.renew_if_refused(&e).await
                            && let Ok(c) = connect_with(
                                &inner.conn.client,
                                inner.config.block + Duration::from_secs(5),
                            )
                            .await
                        {
                            self.read_conn = c;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        // Drain: no more reads; in-flight steps get the grace period, then are released.
        info!(in_flight = tasks.len(), "draining");
        let deadline = tokio::time::sleep(inner.config.grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = tasks.join_next() => if r.is_none() { break },
                () = &mut deadline => {
                    inner.release_tx.send_replace(true);
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        stop_tx.send_replace(true);
        let _ = maintenance.await;
        let summary = WorkerSummary {
            completed: inner.completed.load(Ordering::Relaxed),
            released: inner.released.load(Ordering::Relaxed),
        };
        info!(
            completed = summary.completed,
            released = summary.released,
            "worker stopped"
        );
        Ok(summary)
    }
}

async fn read_hints(
    conn: &mut ConnectionManager,
    config: &WorkerConfig,
    count: usize,
) -> Result<Vec<Hint>, EngineError> {
    let v: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg(&config.consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(ms(config.block))
        .arg("STREAMS")
        .arg(config.pool.queue())
        .arg(">")
        .query_async(conn)
        .await
        .map_err(EngineError::redis("reading the queue"))?;
    let entries = streams::read_reply(&v).map_err(|detail| EngineError::Protocol {
        what: "reading the queue",
        detail,
    })?;
    Ok(entries.into_iter().map(hint).collect())
}

/// A hint from its stream entry; a malformed one keeps empty fields, so it is still
/// acknowledged (and then dropped).
fn hint(entry: streams::Entry) -> Hint {
    let part = |name| field(&entry.fields, name).unwrap_or_default().to_owned();
    Hint {
        run: part("r"),
        step: part("s"),
        tool: part("t"),
        entry: entry.id,
    }
}

fn owner_token(consumer: &str) -> String {
    format!("{consumer}/{:016x}", rand::rng().random::<u64>())
}

/// Adds `item` to its run's group, keeping runs in order of first appearance: batch scripts
/// take one call per run (a run's keys share one hash slot).
fn push_to_run<T>(runs: &mut Vec<(RunKeys, Vec<T>)>, keys: RunKeys, item: T) {
    match runs.iter_mut().find(|(k, _)| k.run_id() == keys.run_id()) {
        Some((_, items)) => items.push(item),
        None => runs.push((keys, vec![item])),
    }
}

/// Starts a batch of hints (one start call per run, all in one pipelined round trip) and
/// spawns the accepted steps.
async fn handle_hints(
    inner: &Arc<Inner>,
    hints: Vec<Hint>,
    mut permits: Vec<OwnedSemaphorePermit>,
    mode: StartMode,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let cfg = &inner.config;
    let mut conn = inner.conn.get();
    let mut parked = Vec::new();
    let mut held = Vec::new();
    // Per run, in order of first appearance: the hints and their owner tokens.
    let mut runs: Vec<(RunKeys, Vec<(Hint, String)>)> = Vec::new();
    for hint in hints {
        let Ok(keys) = RunKeys::new(inner.config.pool.namespace(), &hint.run) else {
            warn!(entry = %hint.entry, "dropping a malformed hint");
            parked.push(PoolAfter {
                ack: Some(hint.entry),
                ..PoolAfter::default()
            });
            continue;
        };
        if let Some(until) = breaker_blocks(inner, &hint.tool) {
            // The breaker is open: the step waits (not failed, no attempt used) until it
            // half-opens.
            let due =
                super::time::now_ms() + ms(until.saturating_duration_since(Instant::now())).max(1);
            // Shown in the step's status until it starts (the start script clears it).
            let at = crate::local::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(due));
            held.push((
                keys.steps(),
                format!("{}:wait", hint.step),
                format!(
                    "waiting: the circuit breaker of tool {} in pool {} is open after repeated transient failures; the step is tried again at {at}",
                    hint.tool, cfg.pool
                ),
            ));
            parked.push(PoolAfter {
                delay: Some((format!("{}|{}", hint.step, hint.tool), due)),
                ack: Some(hint.entry),
                run: hint.run,
                ..PoolAfter::default()
            });
            continue;
        }
        let owner = owner_token(&cfg.consumer);
        lock(&inner.in_flight).insert(hint.entry.clone(), hint.run.clone());
        push_to_run(&mut runs, keys, (hint, owner));
    }
    // Noted before parking, so whoever sees the step parked also sees why.
    if !held.is_empty() {
        let mut pipe = redis::pipe();
        for (steps, field, why) in &held {
            pipe.cmd("HSET").arg(steps).arg(field).arg(why).ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            debug!(error = %e, "cannot note why steps wait");
        }
    }
    if !parked.is_empty() {
        let call = pool_after(&cfg.pool, &cfg.engine.breaker, &parked);
        if let Err(e) = call.run(&mut conn, "parking hints").await {
            warn!(error = %e, "parking hints failed; they will be reclaimed");
        }
    }
    if runs.is_empty() {
        return;
    }
    let calls = runs
        .iter()
        .map(|(keys, batch)| {
            let hints: Vec<StartHint<'_>> = batch
                .iter()
                .map(|(hint, owner)| StartHint {
                    step: &hint.step,
                    owner,
                    entry: &hint.entry,
                })
                .collect();
            scripts::start(keys, mode, &hints)
        })
        .collect();
    let replies = match run_all(&mut conn, calls, "starting steps").await {
        Ok(r) => r,
        Err(e) => {
            // Leases run out and the hints are reclaimed; nothing is lost.
            warn!(error = %e, "starting steps failed");
            let mut f = lock(&inner.in_flight);
            for (_, batch) in &runs {
                for (h, _) in batch {
                    f.remove(&h.entry);
                }
            }
            return;
        }
    };
    let mut acks = Vec::new();
    for ((_, batch), rows) in runs.into_iter().zip(replies) {
        let mut rows = rows.into_iter();
        for (hint, owner) in batch {
            // A missing row (a reply shorter than the batch) is treated like a drop.
            let reply = rows.next().unwrap_or(StartReply::Dropped {
                why: "no reply".into(),
            });
            let (ready, run_done) = match reply {
                StartReply::Started(started) => {
                    // Without a slot (a reclaim raced the reader) the started step runs
                    // anyway: holding it unstarted would only waste its lease.
                    let permit = permits
                        .pop()
                        .or_else(|| inner.slots.clone().try_acquire_owned().ok());
                    spawn_step(inner, tasks, hint, owner, *started, permit);
                    continue;
                }
                StartReply::Finished(ended) => {
                    let run_done = ended.run_done();
                    (ended.ready, run_done)
                }
                StartReply::Dropped { why } => {
                    debug!(run = %hint.run, step = %hint.step, why = %why, "dropping hint");
                    (Vec::new(), false)
                }
            };
            lock(&inner.in_flight).remove(&hint.entry);
            acks.push(PoolAfter {
                ack: Some(hint.entry),
                run: hint.run,
                ready,
                run_done,
                ..PoolAfter::default()
            });
        }
    }
    if acks.is_empty() {
        return;
    }
    let call = pool_after(&cfg.pool, &cfg.engine.breaker, &acks);
    if let Err(e) = call.run(&mut conn, "acknowledging hints").await {
        warn!(error = %e, "acknowledging hints failed; they will be reclaimed and dropped");
    }
}

/// When the tool's breaker is open (per the local cache), until when.
fn breaker_blocks(inner: &Inner, tool: &str) -> Option<Instant> {
    let b = lock(&inner.breakers).get(tool).copied()?;
    (b.phase == BreakerPhase::Open && b.open_until > Instant::now()).then_some(b.open_until)
}

fn cache_breaker(inner: &Inner, tool: &str, phase: BreakerPhase, remaining_ms: u64) {
    let open_until = Instant::now() + Duration::from_millis(remaining_ms);
    lock(&inner.breakers).insert(tool.to_owned(), CachedBreaker { phase, open_until });
    inner.metrics.set_breaker(tool, phase);
}

fn spawn_step(
    inner: &Arc<Inner>,
    tasks: &mut tokio::task::JoinSet<()>,
    hint: Hint,
    owner: String,
    started: Started,
    permit: Option<OwnedSemaphorePermit>,
) {
    // One span per attempt, a child of the run's root span (its traceparent came with the
    // run's options), so retries and reclaims show as separate attempts in the run's trace.
    let span = info_span!(
        "step",
        otel.name = %format_args!("step {} attempt {}", hint.step, started.attempt),
        run = %hint.run,
        namespace = %inner.config.pool.namespace(),
        step = %hint.step,
        tool = %hint.tool,
        attempt = started.attempt,
        outcome = tracing::field::Empty,
    );
    if let Some(traceparent) = started
        .work
        .as_ref()
        .ok()
        .and_then(|w| w.options.traceparent.as_deref())
    {
        crane_telemetry::set_parent(&span, traceparent);
    }
    let inner = inner.clone();
    tasks.spawn(
        async move {
            run_step(&inner, &hint, &owner, started).await;
            lock(&inner.in_flight).remove(&hint.entry);
            drop(permit);
        }
        .instrument(span),
    );
}

async fn run_step(inner: &Arc<Inner>, hint: &Hint, owner: &str, started: Started) {
    let work = started.work.as_ref().ok();
    let known = inner.toolbox.catalog().contains(&hint.tool)
        || hint.tool == crane_core::builtins::LLM
        || work.is_some_and(|w| w.options.tools.iter().any(|t| t.name == hint.tool));
    let tool_label = if known {
        hint.tool.clone()
    } else {
        "unknown".to_owned()
    };
    let calls_out = crate::call::calls_out(&inner.toolbox, work, &hint.tool);
    let Ok(keys) = RunKeys::new(inner.config.pool.namespace(), &hint.run) else {
        return;
    };
    inner.metrics.in_flight.inc();
    let began = Instant::now();
    let attempt = started.attempt;
    let (outcome, retry_policy) = match started.work {
        Ok(s) => {
            let ctx = ToolContext {
                namespace: s.namespace.clone(),
                run_id: hint.run.clone(),
                step_id: s.step.id,
                attempt,
            };
            let outcome =
                match crane_core::vars::resolve(&s.step.input, &|id| s.outputs.get(&id).cloned()) {
                    Ok(input) => {
                        let runners = crate::call::Runners {
                            toolbox: &inner.toolbox,
                            connectors: inner.connectors.as_ref(),
                            conn: inner.conn.get(),
                            release: inner.release_tx.subscribe(),
                        };
                        crate::call::attempt(runners, &keys, &ctx, &s, Json::Object(input)).await
                    }
                    Err(e) => Attempt::Finished(Err(ToolError::InvalidInput(e.to_string()))),
                };
            (outcome, s.options.retry)
        }
        Err(e) => (
            Attempt::Finished(Err(ToolError::InvalidInput(format!(
                "corrupt step state: {e}"
            )))),
            Default::default(),
        ),
    };
    inner.metrics.in_flight.dec();
    let result = match outcome {
        Attempt::Finished(result) => result,
        Attempt::Released => {
            tracing::Span::current().record("outcome", "released");
            release(
                inner,
                &mut inner.conn.get(),
                &keys,
                hint,
                owner,
                attempt,
                None,
            )
            .await;
            return;
        }
        Attempt::Gated { gate } => {
            park_for_approval(inner, &keys, hint, owner, attempt, &gate).await;
            return;
        }
        Attempt::Held { due, why } => {
            release(
                inner,
                &mut inner.conn.get(),
                &keys,
                hint,
                owner,
                attempt,
                Some((due, &why)),
            )
            .await;
            return;
        }
    };
    inner
        .metrics
        .duration
        .get_or_create(&ToolLabels {
            tool: tool_label.clone(),
        })
        .observe(began.elapsed().as_secs_f64());
    let result = result.and_then(|v| crane_core::tool::output_json(&v));
    let (ok, payload, retryable) = match &result {
        Ok(text) => (true, text.clone(), false),
        Err(e) => (false, e.to_string(), e.is_retryable()),
    };
    let backoff = crate::retry_delay_ms(&retry_policy, attempt + 1, result.as_ref().err());
    let (done, outcome_rx) = oneshot::channel();
    let sent = inner.completions.send(Completion {
        hint: hint.clone(),
        owner: owner.to_owned(),
        attempt,
        ok,
        payload,
        retryable,
        calls_out,
        backoff,
        done,
    });
    let Ok(Completed { reply, breaker }) = (match sent {
        Ok(()) => outcome_rx.await.map_err(|_| ()),
        Err(_) => Err(()),
    }) else {
        // The completer gave up (Redis unreachable for long): the lease runs out and another
        // worker re-runs the step.
        return;
    };
    if let Some((phase, remaining)) = breaker {
        cache_breaker(inner, &hint.tool, phase, remaining);
    }
    let retried = matches!(
        &reply,
        CompleteReply::Accepted(StepEnded {
            retry_due_ms: Some(_),
            ..
        })
    );
    let stale = matches!(reply, CompleteReply::Stale { .. });
    let label = match &result {
        _ if stale => "stale".to_owned(),
        Ok(_) => "succeeded".to_owned(),
        Err(e) if retried => {
            inner
                .metrics
                .retries
                .get_or_create(&ToolLabels {
                    tool: tool_label.clone(),
                })
                .inc();
            format!("retry_{}", e.metric_label())
        }
        Err(e) => e.metric_label().to_owned(),
    };
    tracing::Span::current().record("outcome", label.as_str());
    inner
        .metrics
        .steps
        .get_or_create(&StepLabels {
            tool: tool_label,
            outcome: label,
        })
        .inc();
    if stale {
        debug!("late completion ignored; the step belongs to another attempt");
        return;
    }
    inner.completed.fetch_add(1, Ordering::Relaxed);
}

/// A finished attempt on its way to the completer.
struct Completion {
    hint: Hint,
    owner: String,
    attempt: u32,
    ok: bool,
    /// The output (JSON) or the error message.
    payload: String,
    retryable: bool,
    /// Whether the tool depends on something shared ([`crane_core::tool::Tool::calls_out`]).
    calls_out: bool,
    /// Delay before a retry, ms.
    backoff: u64,
    done: oneshot::Sender<Completed>,
}

impl Completion {
    /// This attempt as the `complete` script takes it.
    fn end(&self) -> AttemptEnd<'_> {
        AttemptEnd {
            step: &self.hint.step,
            owner: &self.owner,
            attempt: self.attempt,
            outcome: if self.ok {
                AttemptOutcome::Output(&self.payload)
            } else {
                AttemptOutcome::Error {
                    message: &self.payload,
                    retryable: self.retryable,
                }
            },
            backoff_ms: self.backoff,
        }
    }

    /// What the tool's breaker records: a success, a retryable failure, or nothing. Invalid
    /// input and permanent failures are the plan's fault, not the tool's; and a tool that
    /// calls nothing shared (arithmetic, a sleep) tells nothing about anyone else's calls,
    /// so its timeouts never hold back other runs.
    fn breaker_outcome(&self) -> Option<bool> {
        if !self.calls_out {
            None
        } else if self.ok {
            Some(true)
        } else {
            self.retryable.then_some(false)
        }
    }
}

/// What the engine made of a completion.
struct Completed {
    /// The `complete` script's reply for this attempt.
    reply: CompleteReply,
    /// The tool's breaker after the batch, when it was read.
    breaker: Option<(BreakerPhase, u64)>,
}

/// Most completions one batch carries, and most output bytes: they bound how long one script
/// call holds Redis's only thread.
const MAX_COMPLETIONS: usize = 256;
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Records finished attempts in batches: whatever completed while the previous batch was in
/// flight goes in one `complete` call per run and one `pool_after` call for all, pipelined.
/// Under load this is what keeps Redis's single thread from paying a script call's fixed
/// cost per step; when idle, a lone completion goes out at once.
async fn completer(
    conn: Arc<SharedConn>,
    pool: PoolName,
    breaker: BreakerConfig,
    mut rx: mpsc::UnboundedReceiver<Completion>,
) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        while batch.len() < MAX_COMPLETIONS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(c) => {
                    bytes += c.payload.len();
                    batch.push(c);
                }
                Err(_) => break,
            }
        }
        complete_batch(&conn, &pool, &breaker, batch).await;
    }
}

async fn complete_batch(
    conn: &SharedConn,
    pool: &PoolName,
    breaker: &BreakerConfig,
    batch: Vec<Completion>,
) {
    // One `complete` call per run; hints were checked when they were started.
    let mut runs: Vec<(RunKeys, Vec<Completion>)> = Vec::new();
    for c in batch {
        if let Ok(keys) = RunKeys::new(pool.namespace(), &c.hint.run) {
            push_to_run(&mut runs, keys, c);
        }
    }
    let calls: Vec<_> = runs
        .iter()
        .map(|(keys, cs)| {
            let ends: Vec<AttemptEnd<'_>> = cs.iter().map(Completion::end).collect();
            scripts::complete(keys, &ends)
        })
        .collect();
    let Some(replies) = complete_with_retry(conn, calls).await else {
        return;
    };
    let mut done = Vec::new();
    let mut afters = Vec::new();
    let mut notify = Vec::new();
    for ((keys, cs), rows) in runs.into_iter().zip(replies) {
        let mut rows = rows.into_iter();
        let mut run_ended = None;
        // The operator only needs to know which run moved: one notification per run and batch
        // (naming the batch's last accepted step and the run's phase after it).
        let mut last_accepted = None;
        for c in cs {
            // A missing row should not happen; the lease expiring is the safe way out.
            let Some(reply) = rows.next() else { continue };
            let hint = &c.hint;
            match &reply {
                // Another attempt holds the step (our lease expired): leave its entry alone.
                CompleteReply::Stale { held: true } => {}
                CompleteReply::Stale { held: false } => afters.push(PoolAfter {
                    ack: Some(hint.entry.clone()),
                    run: hint.run.clone(),
                    ..PoolAfter::default()
                }),
                CompleteReply::Accepted(ended) => {
                    if ended.run_done() {
                        run_ended = Some(ended.run_phase);
                    }
                    afters.push(PoolAfter {
                        ack: Some(hint.entry.clone()),
                        run: hint.run.clone(),
                        ready: ended.ready.clone(),
                        delay: ended
                            .retry_due_ms
                            .map(|due| (format!("{}|{}", hint.step, hint.tool), due)),
                        breaker: Some((hint.tool.clone(), c.breaker_outcome())),
                        run_done: ended.run_done(),
                    });
                    last_accepted = Some((hint.step.clone(), ended.run_phase));
                }
            }
            done.push((c, reply));
        }
        if let Some((step, phase)) = last_accepted {
            notify.push(events::publish(keys.run_id(), &step, phase));
        }
        if let Some(phase) = run_ended {
            info!(run = %keys.run_id(), phase = ?phase, "run finished");
        }
    }
    let mut states: HashMap<String, (BreakerPhase, u64)> = HashMap::new();
    if !afters.is_empty() {
        let calls = vec![pool_after(pool, breaker, &afters)];
        match run_with(&mut conn.get(), calls, notify, "queueing the next steps").await {
            Ok(updates) => {
                for u in updates.into_iter().flatten() {
                    states.insert(u.tool, (u.phase, u.remaining_open_ms));
                }
            }
            // The sweeper re-enqueues ready steps and due retries this missed.
            Err(e) => {
                warn!(error = %e, "queueing follow-ups failed; the sweeper will recover them");
            }
        }
    }
    for (c, reply) in done {
        let breaker = states.get(&c.hint.tool).copied();
        let _ = c.done.send(Completed { reply, breaker });
    }
}

/// Completions survive short Redis outages (a restart): the calls are retried for a while; a
/// retry after an applied-but-unanswered call comes back `stale` and is harmless.
async fn complete_with_retry(
    conn: &SharedConn,
    calls: Vec<Call<Vec<CompleteReply>>>,
) -> Option<Vec<Vec<CompleteReply>>> {
    let mut delay = Duration::from_millis(50);
    for _ in 0..40 {
        match run_all(&mut conn.get(), calls.clone(), "completing steps").await {
            Ok(r) => return Some(r),
            Err(e) => {
                warn!(error = %e, "completing steps failed; retrying");
                conn.renew_if_refused(&e).await;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
    // Give up: the leases run out and other workers re-run the steps.
    None
}

/// Gives a step back (shutdown past the grace period) so another worker takes it at once.
/// Parks the step in WaitingForApproval (its attempt given back) and tells whoever follows
/// runs, so the operator asks a person at once.
async fn park_for_approval(
    inner: &Inner,
    keys: &RunKeys,
    hint: &Hint,
    owner: &str,
    attempt: u32,
    gate: &str,
) {
    let mut conn = inner.conn.get();
    match scripts::gate(keys, &hint.step, owner, attempt, gate)
        .run(&mut conn, "parking a step for approval")
        .await
    {
        Ok(GateReply::Waiting) | Ok(GateReply::Stale) => {}
        Err(e) => {
            warn!(error = %e, "cannot park a step for approval; the lease will expire instead");
            return;
        }
    }
    let call = pool_after(
        &inner.config.pool,
        &inner.config.engine.breaker,
        &[PoolAfter {
            ack: Some(hint.entry.clone()),
            run: hint.run.clone(),
            ..PoolAfter::default()
        }],
    );
    let notify = events::publish(&hint.run, &hint.step, crane_core::run::RunPhase::Running);
    if let Err(e) = run_with(
        &mut conn,
        vec![call],
        vec![notify],
        "acknowledging a gated step",
    )
    .await
    {
        warn!(error = %e, "acknowledging a gated step failed; the sweeper will recover it");
    }
    info!("step waits for approval");
}

/// Gives the step back without using its attempt: to the queue (a drain), or parked until
/// `held`'s time with its reason shown (a model's limits).
async fn release(
    inner: &Inner,
    conn: &mut ConnectionManager,
    keys: &RunKeys,
    hint: &Hint,
    owner: &str,
    attempt: u32,
    held: Option<(u64, &str)>,
) {
    let cfg = &inner.config;
    let call = scripts::release(keys, &hint.step, owner, attempt, held.map(|(_, why)| why));
    let entry = format!("{}|{}", hint.step, hint.tool);
    let (ready, delay) = match call.run(conn, "releasing a step").await {
        Ok(ReleaseReply::Released) => {
            if held.is_none() {
                inner.released.fetch_add(1, Ordering::Relaxed);
            }
            match held {
                Some((due, _)) => (Vec::new(), Some((entry, due))),
                None => (vec![entry], None),
            }
        }
        Ok(ReleaseReply::Stale) => (Vec::new(), None),
        Err(e) => {
            warn!(error = %e, "releasing failed; the lease will expire instead");
            return;
        }
    };
    let call = pool_after(
        &cfg.pool,
        &cfg.engine.breaker,
        &[PoolAfter {
            ack: Some(hint.entry.clone()),
            run: hint.run.clone(),
            ready,
            delay,
            ..PoolAfter::default()
        }],
    );
    if let Err(e) = call.run(conn, "requeueing a released step").await {
        warn!(error = %e, "requeueing a released step failed; the sweeper will recover it");
    }
    match held {
        Some((_, why)) => debug!(why, "step held back"),
        None => info!("step released"),
    }
}

/// Heartbeats, reclaims, promotion of due retries, breaker refresh and the sweeper.
async fn maintenance_loop(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let cfg = &inner.config;
    let lease = cfg.engine.lease;
    let heartbeat_every = (lease / 3).max(Duration::from_millis(50));
    let reclaim_every = (lease / 2).max(Duration::from_millis(50));
    let mut last_heartbeat = Instant::now();
    let mut last_reclaim = Instant::now();
    let mut last_breakers = Instant::now() - Duration::from_secs(10);
    let mut last_sweep = Instant::now();
    let mut reclaim_tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(Duration::from_millis(25)) => {}
        }
        while reclaim_tasks.try_join_next().is_some() {}
        let mut conn = inner.conn.get();
        if let Err(e) = promote_due(&mut conn, &cfg.pool, 500).await {
            debug!(error = %e, "promoting retries failed");
        }
        if last_heartbeat.elapsed() >= heartbeat_every {
            last_heartbeat = Instant::now();
            heartbeat(&inner, &mut conn).await;
        }
        if last_breakers.elapsed() >= Duration::from_secs(1) {
            last_breakers = Instant::now();
            if let Ok(states) = breaker_states(&mut conn, &cfg.pool, &cfg.engine.breaker).await {
                for s in states {
                    cache_breaker(&inner, &s.tool, s.phase, s.remaining_open_ms);
                }
            }
        }
        if last_reclaim.elapsed() >= reclaim_every && !*inner.release_tx.borrow() {
            last_reclaim = Instant::now();
            let free = inner.slots.available_permits();
            if free > 0 {
                match reclaim(&mut conn, cfg, free).await {
                    Ok(hints) if !hints.is_empty() => {
                        info!(count = hints.len(), "reclaiming steps of a lost worker");
                        inner.metrics.reclaims.inc_by(hints.len() as u64);
                        *lock(&inner.last_activity) = Instant::now();
                        handle_hints(
                            &inner,
                            hints,
                            Vec::new(),
                            StartMode::Reclaim,
                            &mut reclaim_tasks,
                        )
                        .await;
                    }
                    Ok(_) => {}
                    Err(e) => debug!(error = %e, "reclaim failed"),
                }
            }
        }
        if last_sweep.elapsed() >= cfg.engine.sweep_interval {
            last_sweep = Instant::now();
            if let Err(e) = sweep(&inner, &mut conn).await {
                debug!(error = %e, "sweep failed");
            }
        }
    }
    // Steps taken over from dead workers drain like the others: the grace period, then release.
    let deadline = tokio::time::sleep(cfg.grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = reclaim_tasks.join_next() => if r.is_none() { break },
            () = &mut deadline => {
                inner.release_tx.send_replace(true);
                while reclaim_tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
}

async fn heartbeat(inner: &Inner, conn: &mut ConnectionManager) {
    let ids: Vec<String> = lock(&inner.in_flight).keys().cloned().collect();
    if ids.is_empty() {
        return;
    }
    let cfg = &inner.config;
    let res: Result<Value, _> = redis::cmd("XCLAIM")
        .arg(cfg.pool.queue())
        .arg(GROUP)
        .arg(&cfg.consumer)
        .arg(0)
        .arg(&ids)
        .arg("JUSTID")
        .query_async(conn)
        .await;
    if let Err(e) = res {
        warn!(error = %e, "heartbeat failed");
    }
}

async fn reclaim(
    conn: &mut ConnectionManager,
    cfg: &WorkerConfig,
    count: usize,
) -> Result<Vec<Hint>, EngineError> {
    let v: Value = redis::cmd("XAUTOCLAIM")
        .arg(cfg.pool.queue())
        .arg(GROUP)
        .arg(&cfg.consumer)
        .arg(ms(cfg.engine.lease))
        .arg("0-0")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
        .map_err(EngineError::redis("reclaiming expired leases"))?;
    // [next cursor, entries, deleted ids]
    let entries = match &v {
        Value::Array(parts) => parts.get(1).map(streams::entries).unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(entries.into_iter().map(hint).collect())
}

/// One worker per pool at a time (SET NX PX): re-enqueue what a crash between the two slots
/// (or lost Redis writes) left unqueued, and forget finished runs.
async fn sweep(inner: &Inner, conn: &mut ConnectionManager) -> Result<(), EngineError> {
    let cfg = &inner.config;
    let got: Option<String> = redis::cmd("SET")
        .arg(cfg.pool.sweep_lock())
        .arg(&cfg.consumer)
        .arg("NX")
        .arg("PX")
        .arg(ms(cfg.engine.sweep_interval).max(100))
        .query_async(conn)
        .await
        .map_err(EngineError::redis("taking the sweep lock"))?;
    if got.is_none() {
        return Ok(());
    }
    let runs: Vec<String> = redis::cmd("SMEMBERS")
        .arg(cfg.pool.runs())
        .query_async(conn)
        .await
        .map_err(EngineError::redis("listing active runs"))?;
    for chunk in runs.chunks(100) {
        let mut calls = Vec::new();
        let mut valid = Vec::new();
        for run in chunk {
            match RunKeys::new(cfg.pool.namespace(), run) {
                Ok(keys) => {
                    let engine = &cfg.engine;
                    calls.push(scripts::sweep(&keys, engine.sweep_threshold, engine.lease));
                    valid.push(run.clone());
                }
                Err(_) => {
                    let _: Result<(), _> = redis::cmd("SREM")
                        .arg(cfg.pool.runs())
                        .arg(run)
                        .query_async(conn)
                        .await;
                }
            }
        }
        let replies = run_all(conn, calls, "sweeping").await?;
        let mut follow = Vec::new();
        for (run, reply) in valid.into_iter().zip(replies) {
            let run_done = reply.run_done();
            let ready = match reply {
                SweepReply::Active { requeue } => requeue,
                SweepReply::Gone | SweepReply::Done => Vec::new(),
            };
            if run_done || !ready.is_empty() {
                if !ready.is_empty() {
                    info!(run = %run, steps = ?ready, "sweeper re-enqueues steps");
                }
                follow.push(PoolAfter {
                    run,
                    ready,
                    run_done,
                    ..PoolAfter::default()
                });
            }
        }
        if !follow.is_empty() {
            pool_after(&cfg.pool, &cfg.engine.breaker, &follow)
                .run(conn, "re-enqueueing swept steps")
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_stream_entries_and_tolerates_garbage() {
        let v = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![
                    bulk("r"),
                    bulk("run"),
                    bulk("s"),
                    bulk("3"),
                    bulk("t"),
                    bulk("calculator"),
                ]),
            ]),
            Value::Array(vec![bulk("2-0"), Value::Nil]),
            Value::Int(7),
        ]);
        let hints: Vec<Hint> = streams::entries(&v).into_iter().map(hint).collect();
        assert_eq!(hints.len(), 2);
        assert_eq!(
            (
                hints[0].run.as_str(),
                hints[0].step.as_str(),
                hints[0].tool.as_str()
            ),
            ("run", "3", "calculator")
        );
        assert_eq!(hints[1].entry, "2-0");
        assert!(hints[1].run.is_empty());
    }
}
