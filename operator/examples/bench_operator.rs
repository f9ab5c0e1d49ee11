//! The operator's benchmark against a running local cluster (driven by e2e/bench/operator.sh,
//! which starts a private cluster and the operator): AgentRuns/s end to end, apiserver writes
//! per run, status mirror lag, autoscale reaction (to the worker Job, and to its pod Running on
//! the node), operator RSS, status bytes per step. Figures only, never assertions; ends with
//! one JSON line.
//!
//! Env: KUBECONFIG (admin), REDIS_URL, CRANE_REDIS_PASSWORD_FILE, OPERATOR_PID, BENCH_NS,
//! BENCH_CLUSTER_DIR, and optional BENCH_POD_CGROUP (the node's cgroup root, for the pods'
//! CPU), BENCH_RUNS (200), BENCH_SOAK_ROUNDS (10), BENCH_SOAK_BATCH (100), BENCH_PRESENT
//! (1000), BENCH_BIG_STEPS (500).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use crane_operator::{AgentRun, WorkerPool};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::watcher;
use serde_json::{Value, json};

/// Every loop waiting on the cluster gives up after this.
const DEADLINE: Duration = Duration::from_secs(180);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the watch saw of one run, stamped when the event arrived.
#[derive(Default, Clone)]
struct Seen {
    /// step id → first time the status showed it terminal (ms since epoch).
    steps: HashMap<u64, u64>,
    /// First time the run's phase was terminal.
    terminal: Option<(u64, String)>,
    status_bytes: usize,
}

type Book = Arc<Mutex<HashMap<String, Seen>>>;

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a non-negative integer")),
        Err(_) => Ok(default),
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the operator running?)"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// CPU ticks (1/100 s) used so far by each part: the cluster's components (pid files in
/// BENCH_CLUSTER_DIR/pids), the operator, the node's pods (every process in the kubelet's
/// cgroup root BENCH_POD_CGROUP: workers, Redis, CoreDNS) and the containerd shims serving
/// them (their command line names the cluster's directory). Only this cluster's processes:
/// others may share the machine.
fn cpu_ticks(cluster: &str, operator: u32) -> BTreeMap<String, u64> {
    let ticks = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(") ")?.1.to_owned();
                let f: Vec<&str> = after.split_whitespace().collect();
                // Fields 14 and 15 of stat (utime, stime); index 0 here is field 3.
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
    };
    let mut m = BTreeMap::new();
    m.insert("crane-operator".to_owned(), ticks(operator));
    if let Ok(dir) = std::fs::read_dir(format!("{cluster}/pids")) {
        for e in dir.flatten() {
            let name = e
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".pid")
                .to_owned();
            if let Some(pid) = std::fs::read_to_string(e.path())
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                m.insert(name, ticks(pid));
            }
        }
    }
    let pod_cgroup = std::env::var("BENCH_POD_CGROUP")
        .ok()
        .map(|c| format!("/{c}/"));
    let (mut pods, mut shims) = (0, 0);
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for e in procs.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let in_pods = pod_cgroup.as_ref().is_some_and(|c| {
                std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|g| g.contains(c))
            });
            if in_pods {
                pods += ticks(pid);
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            let shim =
                cmdline.starts_with("containerd-shim") || cmdline.contains("/containerd-shim");
            if shim && cmdline.contains(cluster) {
                shims += ticks(pid);
            }
        }
    }
    m.insert("pods (workers, Redis, DNS)".to_owned(), pods);
    m.insert("containerd shims".to_owned(), shims);
    m
}

fn print_cpu(what: &str, a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, secs: f64) {
    println!(
        "CPU during {what} ({secs:.1} s wall; 2 cores = {:.0} cpu-s available):",
        secs * 2.0
    );
    for (k, v) in b {
        let d = v.saturating_sub(a.get(k).copied().unwrap_or(0));
        println!("  {k:<26} {:>6.2} cpu-s", d as f64 / 100.0);
    }
}

/// apiserver_request_total summed by "group/resource/subresource VERB".
fn apiserver_writes() -> anyhow::Result<BTreeMap<String, f64>> {
    let out = std::process::Command::new("kubectl")
        .args(["get", "--raw", "/metrics"])
        .output()
        .context("running kubectl get --raw /metrics")?;
    if !out.status.success() {
        bail!(
            "kubectl get --raw /metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let verb = label("verb");
        if !matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE") {
            continue;
        }
        let key = format!(
            "{}/{}/{} {verb}",
            label("group"),
            label("resource"),
            label("subresource")
        );
        *m.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    Ok(m)
}

fn diff(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn one_step_run(name: &str, pool: &str, input: Value, tool: &str) -> Value {
    json!({
        "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": name},
        "spec": {"workerPool": pool, "ttlSecondsAfterFinished": 86400,
                 "plan": {"steps": [{"id": 1, "tool": tool, "input": input}]}}
    })
}

async fn create_all(api: &Api<DynamicObject>, objs: Vec<Value>) -> anyhow::Result<()> {
    futures::stream::iter(objs)
        .map(|o| async move {
            let obj: DynamicObject = serde_json::from_value(o)?;
            api.create(&PostParams::default(), &obj).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn wait_terminal(book: &Book, uids: &[String]) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let done = {
            let b = book.lock().map_err(|_| anyhow!("book poisoned"))?;
            uids.iter()
                .filter(|u| b.get(*u).is_some_and(|s| s.terminal.is_some()))
                .count()
        };
        if done == uids.len() {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            bail!(
                "only {done}/{} runs finished within {DEADLINE:?}",
                uids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn uids_of(api: &Api<DynamicObject>, prefix: &str) -> anyhow::Result<Vec<String>> {
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|o| {
            o.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .filter_map(|o| o.metadata.uid)
        .collect())
}

async fn delete_prefix(api: &Api<DynamicObject>, prefix: &str) -> anyhow::Result<()> {
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .filter(|n| n.starts_with(prefix))
        .collect();
    futures::stream::iter(names)
        .map(|n| async move {
            match api.delete(&n, &DeleteParams::default()).await {
                Ok(_) => anyhow::Ok(()),
                Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    let start = Instant::now();
    while !uids_of(api, prefix).await?.is_empty() {
        if start.elapsed() > DEADLINE {
            bail!("runs {prefix}* still present after {DEADLINE:?} (finalizer not removed?)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn succeeded(book: &Book, uids: &[String]) -> anyhow::Result<usize> {
    let b = book.lock().map_err(|_| anyhow!("book poisoned"))?;
    Ok(uids
        .iter()
        .filter(|u| {
            b.get(*u)
                .and_then(|s| s.terminal.as_ref())
                .is_some_and(|(_, p)| p == "Succeeded")
        })
        .count())
}

/// Latency (ms p50, p99, samples) from each Approval decision's patch response to its run's
/// dependent step starting (the engine's `started`), over BENCH_APPROVALS runs on the warm
/// pool of the shape `approval` → `calculator`.
async fn approval_latency(
    client: &kube::Client,
    ns: &str,
    runs_api: &Api<DynamicObject>,
    book: &Book,
    rconn: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<(u64, u64, usize)> {
    let n = env_usize("BENCH_APPROVALS", 20)?;
    let approvals: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<crane_api::Approval>(&()),
    );
    let objs: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
                "metadata": {"name": format!("a-{i}")},
                "spec": {"workerPool": "warm", "plan": {"steps": [
                    {"id": 1, "tool": "approval", "input": {"message": "bench"}},
                    {"id": 2, "tool": "calculator", "input": {"expression": "1+1"}, "dependsOn": [1]}
                ]}}
            })
        })
        .collect();
    create_all(runs_api, objs).await?;
    let start = Instant::now();
    loop {
        let waiting = approvals.list(&ListParams::default()).await?.items.len();
        if waiting >= n {
            break;
        }
        if start.elapsed() > DEADLINE {
            bail!("only {waiting}/{n} Approvals were created within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut decided = Vec::with_capacity(n);
    for i in 0..n {
        let patch = json!({"spec": {"decision": "Approved", "decidedBy": "bench"}});
        approvals
            .patch(
                &format!("a-{i}-step-1"),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await?;
        decided.push(now_ms());
        // People decide one at a time; the figure is a decision's latency, not a burst's.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let uids = uids_of(runs_api, "a-").await?;
    wait_terminal(book, &uids).await?;
    let mut latencies = Vec::with_capacity(n);
    for (i, t) in decided.iter().enumerate() {
        let run = runs_api.get(&format!("a-{i}")).await?;
        let uid = run.metadata.uid.context("a run without a uid")?;
        let started: Option<u64> = redis::cmd("HGET")
            .arg(crane_engine::RunKeys::new(ns, &uid)?.steps())
            .arg("2:started")
            .query_async(rconn)
            .await?;
        if let Some(s) = started {
            latencies.push(s.saturating_sub(*t));
        }
    }
    anyhow::ensure!(
        latencies.len() == n,
        "{} of {n} dependent steps recorded a start",
        latencies.len()
    );
    latencies.sort_unstable();
    delete_prefix(runs_api, "a-").await?;
    Ok((pct(&latencies, 0.5), pct(&latencies, 0.99), n))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let ns = std::env::var("BENCH_NS").context("BENCH_NS not set")?;
    let pid: u32 = std::env::var("OPERATOR_PID")
        .context("OPERATOR_PID not set")?
        .parse()
        .context("OPERATOR_PID is not a pid")?;
    let redis_url = std::env::var("REDIS_URL").context("REDIS_URL not set")?;
    let cluster = std::env::var("BENCH_CLUSTER_DIR").context("BENCH_CLUSTER_DIR not set")?;
    let runs = env_usize("BENCH_RUNS", 200)?;
    let soak_rounds = env_usize("BENCH_SOAK_ROUNDS", 10)?;
    let soak_batch = env_usize("BENCH_SOAK_BATCH", 100)?;
    let present = env_usize("BENCH_PRESENT", 1000)?;
    let big_steps = env_usize("BENCH_BIG_STEPS", 500)?;

    let client = kube::Client::try_default().await?;
    let ar = ApiResource::erase::<AgentRun>(&());
    let wp = ApiResource::erase::<WorkerPool>(&());
    let runs_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let pools: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &wp);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let auth = crane_engine::api::Auth {
        username: None,
        password: std::env::var_os("CRANE_REDIS_PASSWORD_FILE")
            .map(|path| crane_engine::api::read_password_file(path.as_ref()))
            .transpose()?,
    };
    let redis = crane_engine::api::client(&redis_url, &auth)?;
    let mut rconn = redis.get_multiplexed_async_connection().await?;

    // One warm pool for throughput (a worker is already running, so the figure is the
    // operator's and not process start-up), one cold pool for the autoscale reaction.
    for (name, spec) in [
        (
            "warm",
            json!({"minWorkers": 1, "maxWorkers": 2, "concurrency": 64, "targetQueueDepth": 200, "idleTimeoutSeconds": 600}),
        ),
        (
            "cold",
            json!({"minWorkers": 0, "maxWorkers": 1, "concurrency": 8, "targetQueueDepth": 10, "idleTimeoutSeconds": 5}),
        ),
    ] {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "WorkerPool",
            "metadata": {"name": name}, "spec": spec}))?;
        pools.create(&PostParams::default(), &obj).await?;
    }

    // The watch that timestamps what the status shows.
    let book: Book = Arc::default();
    let watch_book = book.clone();
    let watch_api = runs_api.clone();
    tokio::spawn(async move {
        let mut s = watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(ev) = s.next().await {
            let (watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = (match ev {
                Ok(e) => e,
                Err(_) => continue,
            }) else {
                continue;
            };
            let t = now_ms();
            let Some(uid) = o.metadata.uid.clone() else {
                continue;
            };
            let Some(status) = o.data.get("status") else {
                continue;
            };
            let Ok(mut b) = watch_book.lock() else { return };
            let seen = b.entry(uid).or_default();
            for st in status
                .get("steps")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let terminal = matches!(
                    st.get("phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                );
                if let (true, Some(id)) = (terminal, st.get("id").and_then(Value::as_u64)) {
                    seen.steps.entry(id).or_insert(t);
                }
            }
            if let Some(p @ ("Succeeded" | "Failed" | "Cancelled")) =
                status.get("phase").and_then(Value::as_str)
                && seen.terminal.is_none()
            {
                seen.terminal = Some((t, p.to_owned()));
                seen.status_bytes = serde_json::to_vec(status).map_or(0, |v| v.len());
            }
        }
    });

    // Wait for the warm worker so throughput does not include its start.
    let start = Instant::now();
    loop {
        let running = jobs
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|j| j.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0);
        if running {
            break;
        }
        if start.elapsed() > DEADLINE {
            bail!("the warm pool's worker Job never became active");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_idle = rss_kib(pid)?;
    println!("operator RSS idle: {:.1} MiB", rss_idle as f64 / 1024.0);

    // ---- 1. throughput, writes per run, mirror lag --------------------------------------
    let before = apiserver_writes()?;
    let objs: Vec<Value> = (0..runs)
        .map(|i| {
            one_step_run(
                &format!("t-{i}"),
                "warm",
                json!({"expression": format!("{i}+1")}),
                "calculator",
            )
        })
        .collect();
    let cpu0 = cpu_ticks(&cluster, pid);
    let t0 = now_ms();
    create_all(&runs_api, objs).await?;
    let created_ms = now_ms() - t0;
    let uids = uids_of(&runs_api, "t-").await?;
    wait_terminal(&book, &uids).await?;
    let last_done = {
        let b = book.lock().map_err(|_| anyhow!("book poisoned"))?;
        uids.iter()
            .filter_map(|u| b.get(u).and_then(|s| s.terminal.as_ref()).map(|t| t.0))
            .max()
            .unwrap_or(t0)
    };
    let ok = succeeded(&book, &uids)?;
    let e2e_s = (last_done.saturating_sub(t0)) as f64 / 1000.0;
    let cpu1 = cpu_ticks(&cluster, pid);
    let rate = runs as f64 / e2e_s.max(0.001);
    // Read before deleting: the finalizer removes the run's Redis keys.
    let mut lags = Vec::new();
    {
        let b = book.lock().map_err(|_| anyhow!("book poisoned"))?.clone();
        for u in &uids {
            let key = crane_engine::RunKeys::new(&ns, u)?.steps();
            let fin: Option<u64> = redis::cmd("HGET")
                .arg(&key)
                .arg("1:finished")
                .query_async(&mut rconn)
                .await
                .ok()
                .flatten();
            if let (Some(fin), Some(seen)) = (fin, b.get(u).and_then(|s| s.steps.get(&1))) {
                lags.push(seen.saturating_sub(fin));
            }
        }
    }
    lags.sort_unstable();
    let (burst50, burst99) = (pct(&lags, 0.5), pct(&lags, 0.99));
    println!(
        "mirror lag during the burst (step finished in Redis -> status shows it, {} samples): p50 {burst50} ms, p99 {burst99} ms, max {} ms",
        lags.len(),
        lags.last().copied().unwrap_or(0)
    );
    let after_run = apiserver_writes()?;
    delete_prefix(&runs_api, "t-").await?;
    let after_delete = apiserver_writes()?;
    println!(
        "throughput: {runs} one-step runs created in {created_ms} ms, all terminal after {e2e_s:.2} s ({ok} Succeeded): {rate:.1} runs/s (target >= 50)"
    );
    print_cpu("the throughput phase", &cpu0, &cpu1, e2e_s);
    let d_run = diff(&before, &after_run);
    let d_all = diff(&before, &after_delete);
    let get = |d: &BTreeMap<String, f64>, k: &str| d.get(k).copied().unwrap_or(0.0);
    // Server-side apply is counted as verb APPLY by the apiserver.
    let op_patch = get(&d_all, "crane.dev/agentruns/ PATCH")
        + get(&d_all, "crane.dev/agentruns/ PUT")
        + get(&d_all, "crane.dev/agentruns/ APPLY");
    let op_status = get(&d_all, "crane.dev/agentruns/status PATCH")
        + get(&d_all, "crane.dev/agentruns/status PUT")
        + get(&d_all, "crane.dev/agentruns/status APPLY");
    let events: f64 = d_all
        .iter()
        .filter(|(k, _)| k.contains("/events/"))
        .map(|(_, v)| v)
        .sum();
    let per_run = (op_patch + op_status) / runs as f64;
    println!("apiserver writes during the runs (created -> terminal), all users:");
    for (k, v) in &d_run {
        println!("  {k:<45} {v:>6}");
    }
    println!("apiserver writes including deletion (finalizer removal), all users:");
    for (k, v) in &d_all {
        println!("  {k:<45} {v:>6}");
    }
    println!(
        "operator writes per run on agentruns: {per_run:.2} (metadata PATCH {:.2} = finalizer add+remove, status APPLY {:.2}); Events {:.2}/run; the bench's own POST+DELETE not counted (target <= 4)",
        op_patch / runs as f64,
        op_status / runs as f64,
        events / runs as f64
    );

    // ---- 1b. mirror lag at a steady rate (the mirror itself, not queueing behind creates):
    // runs of two steps (wait 300 ms, then calculator) created 10/s, so steps finish while
    // their run is Running and the operator is not busy creating.
    let steady = runs.min(50);
    let mut steady_uids = Vec::new();
    for i in 0..steady {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": format!("l-{i}")},
            "spec": {"workerPool": "warm", "plan": {"steps": [
                {"id": 1, "tool": "wait", "input": {"ms": 300}},
                {"id": 2, "tool": "calculator", "input": {"expression": "6*7"}, "dependsOn": [1]}]}}}))?;
        let made = runs_api.create(&PostParams::default(), &obj).await?;
        steady_uids.extend(made.metadata.uid);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_terminal(&book, &steady_uids).await?;
    let mut lags = Vec::new();
    {
        let b = book.lock().map_err(|_| anyhow!("book poisoned"))?.clone();
        for u in &steady_uids {
            let key = crane_engine::RunKeys::new(&ns, u)?.steps();
            for step in [1u64, 2] {
                let fin: Option<u64> = redis::cmd("HGET")
                    .arg(&key)
                    .arg(format!("{step}:finished"))
                    .query_async(&mut rconn)
                    .await
                    .ok()
                    .flatten();
                if let (Some(fin), Some(seen)) = (fin, b.get(u).and_then(|s| s.steps.get(&step))) {
                    lags.push(seen.saturating_sub(fin));
                }
            }
        }
    }
    lags.sort_unstable();
    let (lag50, lag99) = (pct(&lags, 0.5), pct(&lags, 0.99));
    println!(
        "mirror lag at 10 runs/s (2-step runs, {} samples): p50 {lag50} ms, p99 {lag99} ms, max {} ms (target p99 <= 500)",
        lags.len(),
        lags.last().copied().unwrap_or(0)
    );
    delete_prefix(&runs_api, "l-").await?;

    // ---- 2. status bytes per step for a big plan ----------------------------------------
    let steps: Vec<Value> = (1..=big_steps)
        .map(|i| json!({"id": i, "tool": "calculator", "input": {"expression": format!("{i}*2")}}))
        .collect();
    let big: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun", "metadata": {"name": "big"},
        "spec": {"workerPool": "warm", "plan": {"steps": steps}}}))?;
    let tb = now_ms();
    runs_api.create(&PostParams::default(), &big).await?;
    let big_uid = uids_of(&runs_api, "big").await?;
    wait_terminal(&book, &big_uid).await?;
    let big_bytes = {
        let b = book.lock().map_err(|_| anyhow!("book poisoned"))?;
        big_uid
            .first()
            .and_then(|u| b.get(u))
            .map_or(0, |s| s.status_bytes)
    };
    let final_obj = runs_api.get("big").await?;
    let final_bytes = final_obj
        .data
        .get("status")
        .map_or(0, |s| serde_json::to_vec(s).map_or(0, |v| v.len()));
    let bytes_per_step = final_bytes as f64 / big_steps.max(1) as f64;
    println!(
        "{big_steps}-step plan: {} in {:.2} s; .status {final_bytes} bytes = {bytes_per_step:.0} bytes/step (at first terminal event {big_bytes})",
        succeeded(&book, &big_uid)?,
        (now_ms() - tb) as f64 / 1000.0
    );
    delete_prefix(&runs_api, "big").await?;

    // ---- 3. autoscale reaction: queue growth -> worker Job created -> its pod Running ------
    let job_watch_start = Instant::now();
    let mut job_stream = watcher(jobs.clone(), watcher::Config::default()).boxed();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut pod_stream = watcher(
        pods,
        watcher::Config::default().labels("crane.dev/pool=cold"),
    )
    .boxed();
    let existing: Vec<String> = jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect();
    let obj: DynamicObject =
        serde_json::from_value(one_step_run("scale", "cold", json!({"ms": 200}), "wait"))?;
    runs_api.create(&PostParams::default(), &obj).await?;
    let mut job_seen = None;
    while job_watch_start.elapsed() < Duration::from_secs(60) {
        let ev = tokio::time::timeout(Duration::from_secs(5), job_stream.next()).await;
        let Ok(Some(Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)))) = ev else {
            continue;
        };
        let name = j.metadata.name.clone().unwrap_or_default();
        if existing.contains(&name) {
            continue;
        }
        let owned_by_cold = j
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "WorkerPool" && o.name == "cold");
        if owned_by_cold {
            job_seen = Some(now_ms());
            break;
        }
    }
    let mut pod_running = None;
    while job_seen.is_some() && job_watch_start.elapsed() < Duration::from_secs(90) {
        let ev = tokio::time::timeout(Duration::from_secs(5), pod_stream.next()).await;
        let Ok(Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)))) = ev else {
            continue;
        };
        if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
            pod_running = Some(now_ms());
            break;
        }
    }
    let scale_uid = uids_of(&runs_api, "scale").await?;
    let mut enq = None;
    if let Some(u) = scale_uid.first() {
        // Step 1 has no dependencies: it is queued when the run is created.
        let key = crane_engine::RunKeys::new(&ns, u)?.meta();
        enq = redis::cmd("HGET")
            .arg(&key)
            .arg("created")
            .query_async::<Option<u64>>(&mut rconn)
            .await
            .ok()
            .flatten();
    }
    let since_enqueue = |t: Option<u64>| Some(t?.saturating_sub(enq?));
    let (scale_ms, pod_ms) = (since_enqueue(job_seen), since_enqueue(pod_running));
    match (scale_ms, pod_ms) {
        (Some(job), Some(pod)) => println!(
            "autoscale reaction, run created (its step queued in Redis) -> worker Job seen by a watch: {job} ms (target <= 2000); -> the Job's pod Running on the node: {pod} ms"
        ),
        _ => println!(
            "autoscale reaction: not measured (enqueue time {enq:?}, Job seen {job_seen:?}, pod Running {pod_running:?})"
        ),
    }
    wait_terminal(&book, &scale_uid).await?;
    delete_prefix(&runs_api, "scale").await?;

    // ---- 4. RSS: soak, then many runs present -------------------------------------------
    let mut soak = Vec::new();
    for round in 0..soak_rounds {
        let objs: Vec<Value> = (0..soak_batch)
            .map(|i| {
                one_step_run(
                    &format!("s{round}-{i}"),
                    "warm",
                    json!({"expression": "1+1"}),
                    "calculator",
                )
            })
            .collect();
        create_all(&runs_api, objs).await?;
        let u = uids_of(&runs_api, &format!("s{round}-")).await?;
        wait_terminal(&book, &u).await?;
        delete_prefix(&runs_api, &format!("s{round}-")).await?;
        let r = rss_kib(pid)?;
        println!(
            "soak: {} runs done, operator RSS {:.1} MiB",
            (round + 1) * soak_batch,
            r as f64 / 1024.0
        );
        soak.push(r);
    }
    let mut present_rss = Vec::new();
    let batch = soak_batch.max(1);
    let mut made = 0;
    while made < present {
        let n = batch.min(present - made);
        let objs: Vec<Value> = (made..made + n)
            .map(|i| {
                one_step_run(
                    &format!("p-{i}"),
                    "warm",
                    json!({"expression": "2+2"}),
                    "calculator",
                )
            })
            .collect();
        create_all(&runs_api, objs).await?;
        made += n;
        let r = rss_kib(pid)?;
        present_rss.push((made, r));
    }
    let pu = uids_of(&runs_api, "p-").await?;
    wait_terminal(&book, &pu).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_present = rss_kib(pid)?;
    for (n, r) in &present_rss {
        println!(
            "present: {n} AgentRuns created, operator RSS {:.1} MiB",
            *r as f64 / 1024.0
        );
    }
    println!(
        "operator RSS with {} AgentRuns present (all finished): {:.1} MiB (target <= 30)",
        pu.len(),
        rss_present as f64 / 1024.0
    );
    delete_prefix(&runs_api, "p-").await?;
    let rss_end = rss_kib(pid)?;
    println!(
        "operator RSS after deleting them: {:.1} MiB",
        rss_end as f64 / 1024.0
    );

    // ---- approvals: a decision (the patch's response) → the dependent step starts ----------
    // The whole path: the Approval's watch event, a reconcile that applies the decision to the
    // engine, a warm worker starting the step.
    let (appr50, appr99, gated) =
        approval_latency(&client, &ns, &runs_api, &book, &mut rconn).await?;
    println!(
        "approvals: {gated} gated runs, one decision every 200 ms: decision -> dependent step started p50 {appr50} ms, p99 {appr99} ms (target p99 <= 500)"
    );

    let mib = |k: u64| (k as f64 / 102.4).round() / 10.0;
    println!(
        "{}",
        json!({
            "bench": "operator",
            "approval_p50_ms": appr50,
            "approval_p99_ms": appr99,
            "runs": runs,
            "runs_per_s": (rate * 10.0).round() / 10.0,
            "succeeded": ok,
            "writes_per_run": (per_run * 100.0).round() / 100.0,
            "events_per_run": ((events / runs as f64) * 100.0).round() / 100.0,
            "mirror_lag_p50_ms": lag50,
            "mirror_lag_p99_ms": lag99,
            "mirror_lag_burst_p50_ms": burst50,
            "mirror_lag_burst_p99_ms": burst99,
            "autoscale_reaction_ms": scale_ms,
            "autoscale_pod_running_ms": pod_ms,
            "rss_idle_mib": mib(rss_idle),
            "rss_after_delete_mib": mib(rss_end),
            "rss_soak_mib": soak.iter().map(|k| mib(*k)).collect::<Vec<_>>(),
            "rss_present_mib": mib(rss_present),
            "runs_present": pu.len(),
            "status_bytes_per_step": bytes_per_step.round(),
        })
    );
    Ok(())
}
