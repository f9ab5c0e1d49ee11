//! crane-server's benchmark (`make bench-server`, part of `make bench`; run by
//! `e2e/bench/server.sh` on a private local cluster). Figures, not assertions.
//!
//! 1. **Archive write cost**: 10,000 runs (5 steps each, full outputs) written one by one
//!    with the operator's write (`Archive::write`) into a private PostgreSQL: statements per
//!    run (the server's own count, `pg_stat_database.xact_commit`), ms per write, bytes per run.
//! 2. **List latency**: `GET /api/v1/namespaces/NS/runs` over HTTP as a user with a real
//!    token against the real apiserver, one page of 50 from the 10,000 archived runs (plus the
//!    namespace's live AgentRuns): first page, page 100 through the cursor, with a text filter.
//! 3. **SSE latency**: an AgentRun (created through the API) whose steps in-process workers
//!    run on the cluster's Redis; for every step, the time from its completion as the engine
//!    recorded it (Redis clock) to the event's arrival at an HTTP client reading the stream
//!    the way the browser does (same machine, same clock).
//!
//! Env: KUBECONFIG (admin: only to read the cluster address), REDIS_URL, BENCH_TOKEN (a user
//! allowed agentruns in BENCH_NS), BENCH_NS. Ends with one JSON line.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use crane_api::AgentRun;
use crane_archive::{Archive, ArchiveConfig, RunRecord};
use crane_core::run::{RunOptions, RunPhase, RunReport, StepPhase, StepReport};
use crane_engine::metrics::Metrics as EngineMetrics;
use crane_engine::{EngineConfig, PoolName, Worker, WorkerConfig};
use crane_testkit::PostgresServer;
use futures::StreamExt;
use serde_json::{Value, json};

const RUNS: usize = 10_000;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn fixture(ns: &str, i: usize) -> Result<(AgentRun, RunReport)> {
    let created = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + i as i64)?;
    let run: AgentRun = serde_json::from_value(json!({
        "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": format!("run-{i:05}"), "namespace": ns, "uid": format!("00000000-0000-4000-8000-{i:012}"),
                     "creationTimestamp": created.to_string()},
        "spec": {"prompt": format!("Add a todo number {i}, then show me all my tasks"), "plan": {"steps": (1..=5).map(|s| json!(
            {"id": s, "tool": "calculator", "input": {"expression": format!("{s}*{i}")}, "dependsOn": if s > 1 { vec![s - 1] } else { vec![] }})).collect::<Vec<_>>()}},
        "status": {"phase": if i.is_multiple_of(7) { "Failed" } else { "Succeeded" }, "planSource": "spec",
                   "startedAt": created.to_string(), "finishedAt": created.to_string(), "progress": "5/5",
                   "steps": (1..=5).map(|s| json!({"id": s, "tool": "calculator", "phase": "Succeeded", "attempts": 1, "output": s * i})).collect::<Vec<_>>()}
    }))?;
    let report = RunReport {
        phase: RunPhase::Succeeded,
        steps: (1..=5u32)
            .map(|s| StepReport {
                id: s,
                tool: "calculator".into(),
                phase: StepPhase::Succeeded,
                attempts: 1,
                output: Some(json!({"value": s as usize * i, "note": "x".repeat(200)})),
                ..StepReport::default()
            })
            .collect(),
        result: Some(json!(5 * i)),
        error: None,
        spending: Default::default(),
        budget_exceeded: None,
    };
    Ok((run, report))
}

async fn pg_commits(url: &str) -> Result<i64> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    // Statistics are flushed by backends at the end of their transactions; give them a moment.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let row = client
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?;
    task.abort();
    Ok(row.get(0))
}

async fn bench_archive(pg: &PostgresServer, ns: &str) -> Result<(Archive, Value)> {
    let archive = Archive::new(&ArchiveConfig::new(pg.url()))?;
    archive.migrate().await?;
    let mut records = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let (run, report) = fixture(ns, i)?;
        records.push(RunRecord::from_run(&run, Some(&report))?);
    }
    // Warm the pool's connection (prepares the insert once) with one write of its own.
    archive.write(&records[0]).await?;
    let before = pg_commits(&pg.url()).await?;
    let mut lat = Vec::with_capacity(RUNS);
    let started = Instant::now();
    for r in &records[1..] {
        let t = Instant::now();
        archive.write(r).await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let wall = started.elapsed();
    let after = pg_commits(&pg.url()).await?;
    // Each pg_commits call itself commits its one query.
    let statements = (after - before - 1) as f64 / (RUNS - 1) as f64;
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let bytes: i64 = client
        .query_one("SELECT pg_total_relation_size('archived_runs')", &[])
        .await?
        .get(0);
    task.abort();
    let mean = wall.as_secs_f64() * 1000.0 / (RUNS - 1) as f64;
    let p99 = pct(&mut lat, 0.99);
    println!("archive write: {RUNS} runs of 5 steps with full outputs, one at a time");
    println!("  statements per run (pg_stat_database): {statements:.2}");
    println!(
        "  ms per write: mean {mean:.2}, p99 {p99:.2}; bytes per run (table+indexes+TOAST): {}",
        bytes / RUNS as i64
    );
    Ok((
        archive,
        json!({"archive_statements_per_run": (statements * 100.0).round() / 100.0,
               "archive_write_mean_ms": (mean * 100.0).round() / 100.0,
               "archive_write_p99_ms": (p99 * 100.0).round() / 100.0,
               "archive_bytes_per_run": bytes / RUNS as i64}),
    ))
}

async fn timed_gets(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    n: usize,
) -> Result<(f64, f64, usize)> {
    let mut lat = Vec::with_capacity(n);
    let mut items = 0;
    for _ in 0..n {
        let t = Instant::now();
        let resp = http.get(url).bearer_auth(token).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            bail!("GET {url}: {status} {body}");
        }
        items = body["items"].as_array().map_or(0, Vec::len);
    }
    let p50 = pct(&mut lat, 0.5);
    Ok((p50, pct(&mut lat, 0.99), items))
}

async fn bench_list(http: &reqwest::Client, base: &str, token: &str, ns: &str) -> Result<Value> {
    let list = format!("{base}/api/v1/namespaces/{ns}/runs?limit=50");
    // Page 100: follow the cursor 99 times.
    let mut cursor = String::new();
    for _ in 0..99 {
        let body: Value = http
            .get(format!("{list}&source=archived{cursor}"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        let next = body["nextCursor"]
            .as_str()
            .context("no nextCursor before page 100")?;
        cursor = format!("&cursor={next}");
    }
    let n = 300;
    let (p50, p99, items) = timed_gets(http, &list, token, n).await?;
    let (dp50, dp99, ditems) =
        timed_gets(http, &format!("{list}&source=archived{cursor}"), token, n).await?;
    let (tp50, tp99, titems) =
        timed_gets(http, &format!("{list}&q=number%20999"), token, n).await?;
    println!(
        "list over HTTP as a user ({n} requests each, {RUNS} archived runs in the namespace):"
    );
    println!("  first page (live + archived, {items} items):    p50 {p50:.1} ms, p99 {p99:.1} ms");
    println!(
        "  page 100 via cursor (archived, {ditems} items): p50 {dp50:.1} ms, p99 {dp99:.1} ms"
    );
    println!(
        "  text filter 'number 999' ({titems} items):      p50 {tp50:.1} ms, p99 {tp99:.1} ms"
    );
    let r = |v: f64| (v * 10.0).round() / 10.0;
    Ok(
        json!({"list_p50_ms": r(p50), "list_p99_ms": r(p99), "list_page100_p99_ms": r(dp99), "list_text_p99_ms": r(tp99)}),
    )
}

async fn bench_sse(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    ns: &str,
    redis_url: &str,
) -> Result<Value> {
    // 20 chains of 10 `wait 30 ms` steps: 200 completions spread over ~0.5 s.
    let mut steps = Vec::new();
    for c in 0..20u32 {
        for k in 0..10u32 {
            let id = c * 10 + k + 1;
            let deps: Vec<u32> = if k == 0 { vec![] } else { vec![id - 1] };
            steps.push(json!({"id": id, "tool": "wait", "input": {"ms": 30}, "dependsOn": deps}));
        }
    }
    let body = json!({"metadata": {"name": "sse-bench"}, "spec": {"plan": {"steps": steps}}});
    let created: Value = http
        .post(format!("{base}/api/v1/namespaces/{ns}/runs"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let uid = created["metadata"]["uid"]
        .as_str()
        .context("created run has no uid")?
        .to_owned();
    let plan: crane_core::plan::Plan = serde_json::from_value(body["spec"]["plan"].clone())?;

    // The SSE client first, so it sees every event as it happens.
    let resp = http
        .get(format!(
            "{base}/api/v1/namespaces/{ns}/runs/sse-bench/events"
        ))
        .bearer_auth(token)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("events: {}", resp.status());
    }
    let reader = tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        let mut got: Vec<(u32, u64)> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            let at = now_ms();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(i) = buf.find("\n\n") {
                let block: String = buf.drain(..i + 2).collect();
                if block.contains("event: end") {
                    return got;
                }
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                    && let Ok(v) = serde_json::from_str::<Value>(data)
                    && v["kind"] == "step"
                    && v["phase"] == "Succeeded"
                    && let Some(step) = v["step"].as_u64()
                {
                    got.push((step as u32, at));
                }
            }
        }
        got
    });

    let client = crane_engine::api::client(redis_url, &crane_engine::api::Auth::default())?;
    let mut conn = crane_engine::connect(&client).await?;
    let pool = PoolName::parse(&format!("{ns}/sse-bench"))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    for i in 0..2 {
        let mut c = WorkerConfig::new(pool.clone());
        c.concurrency = 32;
        c.idle_timeout = None;
        c.block = Duration::from_millis(500);
        c.consumer = format!("sse-bench-{i}");
        let w = Worker::new(
            &client,
            Arc::new(crane_tools::in_memory()),
            c,
            Arc::new(EngineMetrics::new()),
        )
        .await?;
        let mut rx = rx.clone();
        handles.push(tokio::spawn(async move {
            let _ = w
                .run(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await;
        }));
    }
    let keys = crane_engine::RunKeys::new(ns, &uid)?;
    crane_engine::init_run(
        &mut conn,
        &keys,
        &pool,
        &plan,
        &RunOptions::default(),
        &EngineConfig::default(),
    )
    .await?;
    let got = tokio::time::timeout(Duration::from_secs(120), reader).await??;
    tx.send_replace(true);
    for h in handles {
        let _ = h.await;
    }
    let report =
        crane_engine::run_report(&mut conn, &keys, crane_engine::api::Outputs::Full).await?;
    let mut lat = Vec::new();
    for (step, at) in &got {
        let finished = report
            .steps
            .iter()
            .find(|s| s.id == *step)
            .and_then(|s| s.finished_at.as_deref())
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond() as u64);
        if let Some(f) = finished {
            lat.push(at.saturating_sub(f) as f64);
        }
    }
    let n = lat.len();
    let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
    println!(
        "SSE: step completion (engine, Redis clock) to the HTTP client, {n} steps (ms resolution):"
    );
    println!("  p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms");
    crane_engine::delete_run(&mut conn, &keys).await?;
    Ok(json!({"sse_events": n, "sse_p50_ms": p50, "sse_p99_ms": p99}))
}

#[tokio::main]
async fn main() -> Result<()> {
    let ns = std::env::var("BENCH_NS").context("BENCH_NS")?;
    let token = std::env::var("BENCH_TOKEN").context("BENCH_TOKEN")?;
    let redis_url = std::env::var("REDIS_URL").context("REDIS_URL")?;
    let pg = PostgresServer::start()?;
    let (_archive, write) = bench_archive(&pg, &ns).await?;

    let mut config = crane_server::Config::new();
    config.redis_url = Some(redis_url.clone());
    config.archive_url = Some(pg.url());
    let state = crane_server::state(config).await?;
    state.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, crane_server::app(state)).await;
    });
    let http = reqwest::Client::new();
    let list = bench_list(&http, &base, &token, &ns).await?;
    let sse = bench_sse(&http, &base, &token, &ns, &redis_url).await?;
    let mut all = write;
    for part in [list, sse] {
        if let (Some(a), Some(b)) = (all.as_object_mut(), part.as_object()) {
            a.extend(b.clone());
        }
    }
    println!("{all}");
    Ok(())
}
