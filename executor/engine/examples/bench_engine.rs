//! Benchmark of the Redis engine (`make bench-engine`): starts its own redis-server, runs
//! in-process workers against it and prints human-readable figures, then ONE JSON line:
//! `steps_per_s` (trivial calculator steps, best worker/concurrency setting),
//! `dispatch_p50_ms` / `dispatch_p99_ms` (submit → step start at 1,000 steps/s),
//! `makespan_ratio` (100 parallel `wait 100 ms` steps ÷ 100 ms), `approval_p50_ms` /
//! `approval_p99_ms` (a decision → the dependent step's start), `mcp_overhead_p50_ms` /
//! `http_overhead_p50_ms` (and p99: a one-step run calling a tool, submit to end, minus a
//! direct warm call of it) and `redis_calls_per_step`;
//! with `CRANE_BENCH_OTLP_ENDPOINT` (an OTLP/HTTP collector, as `make bench` starts one) also
//! `tracing_ratio`: throughput with traces exported there ÷ without, measured in child
//! processes (a process has one tracing setup) set up like a worker.
//! Figures, not assertions: nothing here fails on a slow machine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use crane_core::plan::Plan;
use crane_core::run::{RunOptions, RunPhase};
use crane_engine::api::{self, init_run};
use crane_engine::metrics::Metrics;
use crane_engine::{EngineConfig, PoolName, RunKeys, Worker, WorkerConfig, wait_for_run};
use crane_testkit::RedisServer;
use redis::aio::ConnectionManager;
use serde_json::json;
use tokio::sync::watch;

struct Pool {
    tx: watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Pool {
    async fn start(
        client: &redis::Client,
        pool: &PoolName,
        workers: usize,
        concurrency: usize,
    ) -> Result<Pool> {
        let (tx, rx) = watch::channel(false);
        let toolbox = Arc::new(crane_tools::in_memory());
        let mut handles = Vec::new();
        for i in 0..workers {
            let mut c = WorkerConfig::new(pool.clone());
            c.concurrency = concurrency;
            c.idle_timeout = None;
            c.block = Duration::from_millis(500);
            c.consumer = format!("bench-{i}");
            let connectors =
                crane_tools::Remote::new(crane_tools::Secrets::new(std::env::temp_dir()))?;
            let w = Worker::new(client, toolbox.clone(), c, Arc::new(Metrics::new()))
                .await?
                .with_connectors(Arc::new(connectors));
            let mut rx = rx.clone();
            handles.push(tokio::spawn(async move {
                let _ = w
                    .run(async move {
                        let _ = rx.wait_for(|v| *v).await;
                    })
                    .await;
            }));
        }
        Ok(Pool { tx, handles })
    }

    async fn stop(self) {
        self.tx.send_replace(true);
        for h in self.handles {
            let _ = h.await;
        }
    }
}

/// Creates run `id` on `pool` (namespace `bench`), with the default options and timings.
async fn submit(
    conn: &mut ConnectionManager,
    id: &str,
    pool: &PoolName,
    plan: &Plan,
    options: &RunOptions,
) -> Result<()> {
    // Traced like the operator's runs: each run's steps join one trace.
    let options = RunOptions {
        traceparent: crane_telemetry::tracing_enabled()
            .then(|| crane_telemetry::run_traceparent(id)),
        ..options.clone()
    };
    let config = EngineConfig::default();
    let keys = RunKeys::new(pool.namespace(), id)?;
    init_run(conn, &keys, pool, plan, &options, &config).await?;
    Ok(())
}

fn calc_plan(n: u32) -> Result<Plan> {
    let steps: Vec<_> = (1..=n)
        .map(|i| json!({"id": i, "tool": "calculator", "input": {"expression": "1+1"}}))
        .collect();
    Ok(serde_json::from_value(json!({ "steps": steps }))?)
}

fn now_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Per-command call counts from INFO commandstats (commands run inside scripts included).
async fn cmdstats(conn: &mut ConnectionManager) -> Result<HashMap<String, u64>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect())
}

/// Entries ever added to the global notification stream (Redis 7's `entries-added`).
async fn notifications_added(conn: &mut ConnectionManager) -> Result<u64> {
    let info: HashMap<String, redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(crane_engine::keys::GLOBAL_EVENTS)
        .query_async(conn)
        .await
        .unwrap_or_default();
    Ok(match info.get("entries-added") {
        Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    })
}

/// Commands the engine's clients send (pipelined ones count one each): script calls, stream
/// reads, heartbeats, reclaims, the sweeper; plus the global notifications (XADD) and one
/// SADD per submitted run (those names also run inside scripts, so they are counted from the
/// notification stream and the workload instead).
fn client_commands(
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    notifications: u64,
    runs: u64,
) -> u64 {
    let d = |n: &str| {
        after
            .get(n)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.get(n).copied().unwrap_or(0))
    };
    [
        "evalsha",
        "eval",
        "xreadgroup",
        "xclaim",
        "xautoclaim",
        "set",
        "smembers",
    ]
    .iter()
    .map(|n| d(n))
    .sum::<u64>()
        + notifications
        + runs
}

fn all_commands(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> u64 {
    after
        .iter()
        .map(|(k, v)| v.saturating_sub(before.get(k).copied().unwrap_or(0)))
        .sum()
}

async fn wait_all(client: &redis::Client, conn: &ConnectionManager, runs: &[String]) -> Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for run in runs {
        let (client, mut conn, run) = (client.clone(), conn.clone(), run.clone());
        set.spawn(async move {
            let keys = RunKeys::new("bench", &run)?;
            wait_for_run(&client, &mut conn, &keys, Some(Duration::from_secs(600))).await
        });
    }
    while let Some(r) = set.join_next().await {
        let report = r??;
        anyhow::ensure!(
            report.phase == RunPhase::Succeeded,
            "a benchmark run ended {:?}",
            report.phase
        );
    }
    Ok(())
}

struct Throughput {
    steps_per_s: f64,
    calls_per_step: f64,
    round_trips_per_step: f64,
}

/// What a throughput measurement submits: `runs` runs of `plan` with `options`, at once.
struct Workload {
    runs: u32,
    plan: Plan,
    options: RunOptions,
}

impl Workload {
    /// 20 runs of 500 independent calculator steps.
    fn calculator() -> Result<Self> {
        Ok(Self {
            runs: 20,
            plan: calc_plan(500)?,
            options: RunOptions::default(),
        })
    }
}

async fn throughput(
    server: &RedisServer,
    workers: usize,
    concurrency: usize,
    tag: &str,
    workload: &Workload,
) -> Result<Throughput> {
    let client = api::client(&server.url(), &crane_engine::api::Auth::default())?;
    let mut conn = api::connect(&client).await?;
    let pool = PoolName::parse(&format!("bench/{tag}"))?;
    let workers_pool = Pool::start(&client, &pool, workers, concurrency).await?;
    let Workload {
        runs,
        plan,
        options,
    } = workload;
    let (runs, per_run) = (*runs, plan.steps.len() as u32);
    let before = cmdstats(&mut conn).await?;
    let notified_before = notifications_added(&mut conn).await?;
    let started = Instant::now();
    let ids: Vec<String> = (0..runs).map(|i| format!("tp-{tag}-{i}")).collect();
    for id in &ids {
        submit(&mut conn, id, &pool, plan, options).await?;
    }
    wait_all(&client, &conn, &ids).await?;
    let elapsed = started.elapsed();
    let after = cmdstats(&mut conn).await?;
    let notified = notifications_added(&mut conn).await? - notified_before;
    workers_pool.stop().await;
    let steps = f64::from(runs * per_run);
    Ok(Throughput {
        steps_per_s: steps / elapsed.as_secs_f64(),
        calls_per_step: all_commands(&before, &after) as f64 / steps,
        round_trips_per_step: client_commands(&before, &after, notified, u64::from(runs)) as f64
            / steps,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Single-step runs submitted at `rate` per second; latency from just before the submit to the
/// step's start as the start script recorded it (Redis clock, ms).
async fn dispatch(
    server: &RedisServer,
    workers: usize,
    concurrency: usize,
    rate: u32,
    seconds: u32,
) -> Result<Vec<f64>> {
    let client = api::client(&server.url(), &crane_engine::api::Auth::default())?;
    let conn = api::connect(&client).await?;
    let pool = PoolName::parse("bench/dispatch")?;
    let workers_pool = Pool::start(&client, &pool, workers, concurrency).await?;
    let plan = Arc::new(calc_plan(1)?);
    let total = rate * seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..total {
        ticker.tick().await;
        let (mut conn, plan, pool) = (conn.clone(), plan.clone(), pool.clone());
        set.spawn(async move {
            let id = format!("d-{i}");
            let t0 = now_ms_f64();
            submit(&mut conn, &id, &pool, &plan, &RunOptions::default())
                .await
                .map(|()| (id, t0))
        });
    }
    let mut submitted: HashMap<String, f64> = HashMap::new();
    while let Some(r) = set.join_next().await {
        let (id, t0) = r??;
        submitted.insert(id, t0);
    }
    let ids: Vec<String> = submitted.keys().cloned().collect();
    wait_all(&client, &conn, &ids).await?;
    let mut conn = conn.clone();
    let mut latencies = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HGET")
                .arg(RunKeys::new("bench", id)?.steps())
                .arg("1:started");
        }
        let started: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
        for (id, s) in chunk.iter().zip(started) {
            if let (Some(s), Some(t0)) = (s, submitted.get(id)) {
                // The script's clock has ms resolution: take the middle of the millisecond.
                latencies.push((s as f64 + 0.5 - t0).max(0.0));
            }
        }
    }
    workers_pool.stop().await;
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// Runs whose first step waits for approval: latency from just before each decision to the
/// dependent step's start (Redis clock, ms). The engine's share of "a person approves →
/// the work goes on"; the operator adds its watch and reconcile in front of it.
async fn approval_latency(server: &RedisServer, runs: u32) -> Result<Vec<f64>> {
    let client = api::client(&server.url(), &crane_engine::api::Auth::default())?;
    let mut conn = api::connect(&client).await?;
    let pool = PoolName::parse("bench/approvals")?;
    let workers_pool = Pool::start(&client, &pool, 2, 64).await?;
    let plan: Plan = serde_json::from_value(json!({"steps": [
        {"id": 1, "tool": "approval", "input": {"message": "go?"}},
        {"id": 2, "tool": "calculator", "input": {"expression": "1+1"}, "dependsOn": [1]}
    ]}))?;
    let ids: Vec<String> = (0..runs).map(|i| format!("a-{i}")).collect();
    for id in &ids {
        submit(&mut conn, id, &pool, &plan, &RunOptions::default()).await?;
    }
    // Every gate parked before the first decision.
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        let keys = RunKeys::new("bench", id)?;
        loop {
            let phase: Option<String> = redis::cmd("HGET")
                .arg(keys.steps())
                .arg("1:phase")
                .query_async(&mut conn)
                .await?;
            if phase.as_deref() == Some("WaitingForApproval") {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "gates did not park in 60 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut decided = HashMap::new();
    for id in &ids {
        let keys = RunKeys::new("bench", id)?;
        let t0 = now_ms_f64();
        api::decide(
            &mut conn,
            &keys,
            1,
            &api::Decision::Approve {
                by: "bench".into(),
                comment: None,
            },
        )
        .await?;
        decided.insert(id.clone(), t0);
        // One decision every 5 ms: people do not approve in bulk.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_all(&client, &conn, &ids).await?;
    let mut latencies = Vec::with_capacity(ids.len());
    for id in &ids {
        let started: Option<u64> = redis::cmd("HGET")
            .arg(RunKeys::new("bench", id)?.steps())
            .arg("2:started")
            .query_async(&mut conn)
            .await?;
        if let (Some(s), Some(t0)) = (started, decided.get(id)) {
            latencies.push((s as f64 + 0.5 - t0).max(0.0));
        }
    }
    workers_pool.stop().await;
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// Latencies (ms, sorted) of `n` calls of `binding` made directly, as a client with a warm
/// session would (the same runner a worker uses), and of `n` one-step runs calling it through
/// Crane, each from just before its submit to its end as the run's waiter sees it.
async fn tool_overhead(
    server: &RedisServer,
    name: &str,
    binding: crane_core::tool::Binding,
    input: serde_json::Value,
    n: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    use crane_core::tool::{Connectors, ToolContext, ToolSpec};
    let remote = crane_tools::Remote::new(crane_tools::Secrets::new(std::env::temp_dir()))?;
    let runner = remote.runner(&binding)?;
    let mut direct = Vec::with_capacity(n);
    for i in 0..=n {
        let t0 = Instant::now();
        runner
            .execute(&ToolContext::adhoc(), input.clone())
            .await
            .map_err(|e| anyhow::anyhow!("direct call of {name}: {e}"))?;
        // The first call opens the session: not counted.
        if i > 0 {
            direct.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let client = api::client(&server.url(), &crane_engine::api::Auth::default())?;
    let mut conn = api::connect(&client).await?;
    let pool = PoolName::parse(&format!("bench/tools-{}", name.replace('.', "-")))?;
    let workers_pool = Pool::start(&client, &pool, 1, 16).await?;
    let options = RunOptions {
        tools: vec![ToolSpec {
            name: name.into(),
            description: String::new(),
            input_schema: json!({"type": "object"}),
            annotations: Default::default(),
            binding: Some(binding),
            requires_approval: false,
            source: None,
        }],
        ..RunOptions::default()
    };
    let plan: Plan =
        serde_json::from_value(json!({"steps": [{"id": 1, "tool": name, "input": input}]}))?;
    let crane = one_step_runs(&client, &mut conn, &pool, &plan, &options, n).await?;
    workers_pool.stop().await;
    direct.sort_by(f64::total_cmp);
    Ok((direct, crane))
}

/// Like [`tool_overhead`] for an `llm` step against the fake provider (instant answers):
/// direct chat calls vs one-step runs, both with the model's limits set, so the Crane side
/// pays the governor's and the budget's scripts too.
async fn llm_overhead(server: &RedisServer, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    use crane_core::tool::Connectors;
    let (_fake, url) = crane_testkit::fake_llm::FakeLlm::start().await;
    let model = bench_model(url);
    let input = llm_input();
    let remote = crane_tools::Remote::new(crane_tools::Secrets::new(std::env::temp_dir()))?;
    let mut direct = Vec::with_capacity(n);
    for i in 0..=n {
        let t0 = Instant::now();
        remote
            .chat(&model, input.clone())
            .await
            .map_err(|e| anyhow::anyhow!("direct chat: {e}"))?;
        if i > 0 {
            direct.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let client = api::client(&server.url(), &crane_engine::api::Auth::default())?;
    let mut conn = api::connect(&client).await?;
    let pool = PoolName::parse("bench/llm")?;
    let workers_pool = Pool::start(&client, &pool, 1, 16).await?;
    let options = llm_options(model);
    let plan: Plan =
        serde_json::from_value(json!({"steps": [{"id": 1, "tool": "llm", "input": input}]}))?;
    let crane = one_step_runs(&client, &mut conn, &pool, &plan, &options, n).await?;
    workers_pool.stop().await;
    direct.sort_by(f64::total_cmp);
    Ok((direct, crane))
}

/// The model of the `llm` figures: limits set (high enough never to hold a call back), so
/// every call goes through the governor.
fn bench_model(base_url: String) -> crane_core::model::ModelConfig {
    crane_core::model::ModelConfig {
        name: "small".into(),
        base_url,
        model: "fake-small".into(),
        api_key: None,
        timeout_seconds: 10,
        limits: crane_core::model::ModelLimits {
            max_concurrent_requests: Some(256),
            requests_per_minute: Some(10_000_000),
            tokens_per_minute: None,
        },
    }
}

fn llm_input() -> serde_json::Value {
    json!({"prompt": "say [reply ok]", "maxTokens": 16})
}

/// Runs on `model` with a token budget, so every call also reserves and settles.
fn llm_options(model: crane_core::model::ModelConfig) -> RunOptions {
    RunOptions {
        model: Some(model.name.clone()),
        models: vec![model],
        budget: crane_core::model::Budget {
            max_tokens: Some(100_000_000),
            ..Default::default()
        },
        ..RunOptions::default()
    }
}

/// Throughput of `llm` steps against the fake provider (instant answers) with the model's
/// limits and a token budget, next to the same workload of calculator steps: 10 runs of 200
/// independent steps each.
async fn llm_throughput(
    server: &RedisServer,
    workers: usize,
    concurrency: usize,
) -> Result<(Throughput, Throughput)> {
    let (_fake, url) = crane_testkit::fake_llm::FakeLlm::start().await;
    let steps = |tool: &str, input: serde_json::Value| -> Result<Plan> {
        let steps: Vec<serde_json::Value> = (1..=200)
            .map(|i| json!({"id": i, "tool": tool, "input": input}))
            .collect();
        Ok(serde_json::from_value(json!({ "steps": steps }))?)
    };
    let llm = Workload {
        runs: 10,
        plan: steps("llm", llm_input())?,
        options: llm_options(bench_model(url)),
    };
    let calc = Workload {
        runs: 10,
        plan: steps("calculator", json!({"expression": "6*7"}))?,
        options: RunOptions::default(),
    };
    let l = throughput(server, workers, concurrency, "llm-tp", &llm).await?;
    let c = throughput(server, workers, concurrency, "calc-tp", &calc).await?;
    Ok((l, c))
}

/// Latencies (ms, sorted) of `n` one-step runs of `plan` on `pool`, each from just before its
/// submit to its end as the run's waiter sees it; one more run before them warms up (a first
/// MCP session, the first connections) and is not counted.
async fn one_step_runs(
    client: &redis::Client,
    conn: &mut ConnectionManager,
    pool: &PoolName,
    plan: &Plan,
    options: &RunOptions,
    n: usize,
) -> Result<Vec<f64>> {
    let mut took = Vec::with_capacity(n);
    for i in 0..=n {
        let keys = RunKeys::new("bench", &format!("one-{}-{i}", pool.name()))?;
        let t0 = Instant::now();
        init_run(conn, &keys, pool, plan, options, &EngineConfig::default()).await?;
        let report = wait_for_run(client, conn, &keys, Some(Duration::from_secs(60))).await?;
        anyhow::ensure!(
            report.phase == RunPhase::Succeeded,
            "a run of {pool} ended {:?}: {:?}",
            report.phase,
            report.error
        );
        if i > 0 {
            took.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    took.sort_by(f64::total_cmp);
    Ok(took)
}

/// A local HTTP tool answering `{"sum": a + b}`; returns its URL.
async fn http_adder() -> Result<String> {
    let app = axum::Router::new().route(
        "/sum",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let sum = v["a"].as_i64().unwrap_or(0) + v["b"].as_i64().unwrap_or(0);
            (
                [("content-type", "application/json")],
                json!({ "sum": sum }).to_string(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/sum"))
}

/// One run of 100 parallel `wait 100 ms` steps: makespan ÷ 100 ms.
async fn makespan(server: &RedisServer, workers: usize, concurrency: usize) -> Result<(f64, f64)> {
    let client = api::client(&server.url(), &crane_engine::api::Auth::default())?;
    let mut conn = api::connect(&client).await?;
    let pool = PoolName::parse("bench/makespan")?;
    let workers_pool = Pool::start(&client, &pool, workers, concurrency).await?;
    let steps: Vec<_> = (1..=100)
        .map(|i| json!({"id": i, "tool": "wait", "input": {"ms": 100}}))
        .collect();
    let plan: Plan = serde_json::from_value(json!({ "steps": steps }))?;
    let mut best_server = f64::MAX;
    let mut best_client = f64::MAX;
    for round in 0..5 {
        let id = format!("wide-{round}");
        let t0 = Instant::now();
        submit(&mut conn, &id, &pool, &plan, &RunOptions::default()).await?;
        let keys = RunKeys::new("bench", &id)?;
        wait_for_run(&client, &mut conn, &keys, Some(Duration::from_secs(60))).await?;
        let client_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let (created, finished): (u64, u64) = redis::cmd("HMGET")
            .arg(keys.meta())
            .arg("created")
            .arg("finished")
            .query_async(&mut conn)
            .await?;
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys.steps())
            .query_async(&mut conn)
            .await?;
        let at = |suffix: &str| -> Vec<u64> {
            fields
                .iter()
                .filter(|(k, _)| k.ends_with(suffix))
                .filter_map(|(_, v)| v.parse().ok())
                .collect()
        };
        let (starts, ends) = (at(":started"), at(":finished"));
        let first_start = starts.iter().min().copied().unwrap_or(created);
        let last_start = starts.iter().max().copied().unwrap_or(created);
        let first_end = ends.iter().min().copied().unwrap_or(finished);
        println!(
            "  round {round}: first start +{} ms, last start +{} ms, first end +{} ms, run finished +{} ms (after creation)",
            first_start.saturating_sub(created),
            last_start.saturating_sub(created),
            first_end.saturating_sub(created),
            finished.saturating_sub(created)
        );
        best_server = best_server.min(finished.saturating_sub(created) as f64);
        best_client = best_client.min(client_ms);
    }
    workers_pool.stop().await;
    Ok((best_server / 100.0, best_client / 100.0))
}

/// Set in a child that measures throughput with or without tracing.
const CHILD_ARG: &str = "--tracing-child";

/// The child: logs and traces set up as in a worker (traces only when the parent passed an
/// OTLP endpoint), one throughput measurement on a Redis of its own, printed as JSON.
async fn tracing_child(workers: usize, concurrency: usize) -> Result<()> {
    let telemetry = crane_telemetry::init("crane-worker", "info");
    let server = RedisServer::start().context("starting redis-server (install redis-server)")?;
    let t = throughput(
        &server,
        workers,
        concurrency,
        "traced",
        &Workload::calculator()?,
    )
    .await;
    telemetry.shutdown().await;
    println!("{}", json!({"steps_per_s": t?.steps_per_s}));
    Ok(())
}

/// Best throughput of `rounds` child runs with tracing off and on (alternating, so both see
/// the same machine), exporting to `endpoint` when on.
fn tracing_cost(
    endpoint: &str,
    workers: usize,
    concurrency: usize,
    rounds: usize,
) -> Result<(f64, f64)> {
    let exe = std::env::current_exe().context("finding this benchmark's executable")?;
    let measure = |traced: bool| -> Result<f64> {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([CHILD_ARG, &workers.to_string(), &concurrency.to_string()])
            .stderr(std::process::Stdio::null());
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("OTEL_")) {
            cmd.env_remove(name);
        }
        cmd.env_remove("RUST_LOG");
        if traced {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
        }
        let out = cmd.output().context("running the tracing child")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("the tracing child printed {text:?}"))?;
        v["steps_per_s"]
            .as_f64()
            .context("no steps_per_s from the tracing child")
    };
    let (mut off, mut on) = (0f64, 0f64);
    for _ in 0..rounds {
        off = off.max(measure(false)?);
        on = on.max(measure(true)?);
    }
    Ok((off, on))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        let arg = |i: usize| {
            args.get(i)
                .and_then(|a| a.parse().ok())
                .context("usage: --tracing-child WORKERS CONCURRENCY")
        };
        return tracing_child(arg(2)?, arg(3)?).await;
    }
    let server = RedisServer::start().context("starting redis-server (install redis-server)")?;
    println!("redis-server on {} (no persistence)", server.url());

    println!("\n== throughput: 20 runs x 500 independent calculator steps ==");
    let mut best: Option<(usize, usize, Throughput)> = None;
    for (w, c) in [(1, 32), (1, 128), (2, 64), (4, 64)] {
        let t = throughput(
            &server,
            w,
            c,
            &format!("w{w}c{c}"),
            &Workload::calculator()?,
        )
        .await?;
        println!(
            "workers={w} concurrency={c}: {:>8.0} steps/s  {:.2} client commands/step  ({:.1} commands/step counting those inside scripts)",
            t.steps_per_s, t.round_trips_per_step, t.calls_per_step
        );
        if best
            .as_ref()
            .is_none_or(|(_, _, b)| t.steps_per_s > b.steps_per_s)
        {
            best = Some((w, c, t));
        }
    }
    let (bw, bc, best) = best.context("no throughput figure")?;

    println!("\n== dispatch latency: single-step runs submitted at 1,000/s for 3 s ==");
    let lat = dispatch(&server, 2, 64, 1000, 3).await?;
    let (p50, p90, p99, max) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
    println!(
        "{} samples: p50 {p50:.2} ms  p90 {p90:.2} ms  p99 {p99:.2} ms  max {max:.2} ms (submit -> start)",
        lat.len()
    );

    println!("\n== makespan: 100 parallel wait(100 ms) steps, 2 workers x 64 ==");
    let (ratio, client_ratio) = makespan(&server, 2, 64).await?;
    println!(
        "best of 5: {:.1} ms in Redis (created -> finished), {:.1} ms seen by the submitter; ratio {ratio:.3}",
        ratio * 100.0,
        client_ratio * 100.0
    );

    println!("\n== approvals: 200 gated runs, one decision every 5 ms ==");
    let gates = approval_latency(&server, 200).await?;
    let (a50, a99) = (percentile(&gates, 0.5), percentile(&gates, 0.99));
    println!(
        "{} samples: p50 {a50:.2} ms  p99 {a99:.2} ms  max {:.2} ms (decision -> dependent step starts, engine only)",
        gates.len(),
        percentile(&gates, 1.0)
    );
    let tracing = match std::env::var("CRANE_BENCH_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            println!(
                "\n== tracing: 20 runs x 500 calculator steps, {bw} worker(s) x {bc}, best of 3, traces off vs exported to {endpoint} =="
            );
            let (off, on) = tracing_cost(&endpoint, bw, bc, 3)?;
            println!(
                "off {off:>8.0} steps/s   on {on:>8.0} steps/s   ratio {:.3}",
                on / off
            );
            Some((off, on))
        }
        _ => {
            println!(
                "\n(tracing cost not measured: set CRANE_BENCH_OTLP_ENDPOINT to an OTLP/HTTP collector)"
            );
            None
        }
    };

    println!(
        "\n== tool overhead: a one-step run calling the tool vs calling it directly (warm), 200 each =="
    );
    let mcp_server = crane_testkit::McpEverything::start()
        .context("starting @modelcontextprotocol/server-everything (needs node and npm)")?;
    let mcp = crane_core::tool::Binding::Mcp {
        server: "everything".into(),
        url: mcp_server.url(),
        headers: Vec::new(),
        timeout_seconds: 10,
        tool: "get-sum".into(),
    };
    let http = crane_core::tool::Binding::Http {
        url: http_adder().await?,
        method: "POST".into(),
        headers: Vec::new(),
        timeout_seconds: 10,
    };
    let mut overhead = serde_json::Map::new();
    for (name, binding) in [("everything.get-sum", mcp), ("adder", http)] {
        let (direct, crane) =
            tool_overhead(&server, name, binding, json!({"a": 2, "b": 3}), 200).await?;
        let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
        let (c50, c99) = (percentile(&crane, 0.5), percentile(&crane, 0.99));
        println!(
            "{name:<20} direct p50 {d50:.2} ms p99 {d99:.2} ms | as a Crane step (submit -> finished) p50 {c50:.2} ms p99 {c99:.2} ms | overhead p50 {:.2} ms p99 {:.2} ms",
            c50 - d50,
            c99 - d99
        );
        let key = if name == "adder" { "http" } else { "mcp" };
        overhead.insert(
            format!("{key}_overhead_p50_ms"),
            json!(((c50 - d50) * 100.0).round() / 100.0),
        );
        overhead.insert(
            format!("{key}_overhead_p99_ms"),
            json!(((c99 - d99) * 100.0).round() / 100.0),
        );
    }
    drop(mcp_server);
    let (direct, crane) = llm_overhead(&server, 200).await?;
    let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
    let (c50, c99) = (percentile(&crane, 0.5), percentile(&crane, 0.99));
    println!(
        "{:<20} direct p50 {d50:.2} ms p99 {d99:.2} ms | as a Crane step (submit -> finished) p50 {c50:.2} ms p99 {c99:.2} ms | overhead p50 {:.2} ms p99 {:.2} ms",
        "llm (limits, budget)",
        c50 - d50,
        c99 - d99
    );
    overhead.insert(
        "llm_overhead_p50_ms".into(),
        json!(((c50 - d50) * 100.0).round() / 100.0),
    );
    overhead.insert(
        "llm_overhead_p99_ms".into(),
        json!(((c99 - d99) * 100.0).round() / 100.0),
    );

    println!(
        "\n== llm steps: 10 runs x 200 independent steps, {bw} worker(s) x concurrency {bc}, fake provider (instant) =="
    );
    let (l, c) = llm_throughput(&server, bw, bc).await?;
    println!(
        "llm (limits, budget)  {:>8.0} steps/s   Redis round trips/step {:.2} (commands incl. scripts' {:.1})",
        l.steps_per_s, l.round_trips_per_step, l.calls_per_step
    );
    println!(
        "calculator            {:>8.0} steps/s   Redis round trips/step {:.2} (commands incl. scripts' {:.1})",
        c.steps_per_s, c.round_trips_per_step, c.calls_per_step
    );
    overhead.insert(
        "llm_steps_per_s".into(),
        json!((l.steps_per_s * 10.0).round() / 10.0),
    );
    overhead.insert(
        "llm_redis_calls_per_step".into(),
        json!((l.round_trips_per_step * 100.0).round() / 100.0),
    );

    println!("\nbest throughput setting: {bw} worker(s) x concurrency {bc}");
    let mut line = json!({
        "steps_per_s": (best.steps_per_s * 10.0).round() / 10.0,
        "dispatch_p50_ms": (p50 * 100.0).round() / 100.0,
        "dispatch_p99_ms": (p99 * 100.0).round() / 100.0,
        "makespan_ratio": (ratio * 1000.0).round() / 1000.0,
        "approval_p50_ms": (a50 * 100.0).round() / 100.0,
        "approval_p99_ms": (a99 * 100.0).round() / 100.0,
        "redis_calls_per_step": (best.round_trips_per_step * 100.0).round() / 100.0,
        "redis_calls_per_step_incl_scripts": (best.calls_per_step * 10.0).round() / 10.0,
        "best_workers": bw,
        "best_concurrency": bc,
    });
    for (k, v) in overhead {
        line[k] = v;
    }
    if let Some((off, on)) = tracing {
        line["tracing_off_steps_per_s"] = json!(off.round());
        line["tracing_on_steps_per_s"] = json!(on.round());
        line["tracing_ratio"] = json!((on / off * 1000.0).round() / 1000.0);
    }
    println!("{line}");
    Ok(())
}
