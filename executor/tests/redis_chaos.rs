//! Chaos against real processes: `crane-executor work` workers killed with SIGKILL mid-step,
//! drained with SIGTERM, and Redis itself killed and restarted from its AOF mid-run. Plus the
//! `submit` and `status` commands end to end.

#[path = "../engine/tests/redis_common/mod.rs"]
mod redis_common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crane_core::plan::{Plan, StepId};
use crane_core::run::{RunPhase, RunReport, StepPhase};
use crane_engine::api::{InitOutcome, init_run};
use crane_engine::events::{RunEvent, run_events};
use crane_engine::{EngineError, RunKeys};
use crane_tools::RedisTodoStore;
use crane_tools::TodoStore;
use redis::aio::ConnectionManager;
use redis_common::{options, plan};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_crane-executor");
/// Guard against a hung test; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(90);

/// A worker process, killed when dropped.
struct WorkerProc {
    child: Child,
}

impl WorkerProc {
    fn spawn(url: &str, extra: &[&str], log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(BIN)
            .args([
                "work",
                "--redis",
                url,
                "--pool",
                redis_common::POOL,
                "--concurrency",
                "4",
                "--idle-timeout",
                "0",
            ])
            .args([
                "--lease-ms",
                "1000",
                "--sweep-interval-ms",
                "200",
                "--sweep-threshold-ms",
                "1000",
            ])
            .args(extra)
            .envs(login_env())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
        Self { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .map(|s| s.success());
        assert_eq!(ok.ok(), Some(true), "kill -TERM failed");
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "worker {} did not exit",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's Redis, and a directory for its files (workers' logs, plans).
struct Chaos {
    e: redis_common::Engine,
    dir: tempfile::TempDir,
}

impl Chaos {
    async fn new(aof: bool) -> Self {
        Self {
            e: redis_common::engine(aof).await,
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// A worker process with the tests' timings and `extra` flags, logging to `<name>.log`.
    fn worker(&self, name: &str, extra: &[&str]) -> WorkerProc {
        let log = self.dir.path().join(format!("{name}.log"));
        WorkerProc::spawn(&self.e.server.url(), extra, &log)
    }

    /// Waits until worker `w` runs a step of `run`, stops the worker with SIGTERM, checks it
    /// exits 0, and returns that step and the run's report after.
    async fn sigterm_mid_step(&mut self, w: &mut WorkerProc, run: &str) -> (String, RunReport) {
        let step = running_on(&mut self.e.conn, run, w.pid()).await;
        w.sigterm();
        assert_eq!(w.wait_exit().code(), Some(0));
        (step, self.e.report(run).await)
    }

    /// Creates run `run` in the pool's namespace with the tests' options and fast engine
    /// timings.
    async fn create(&mut self, run: &str, plan: &Plan) -> Result<InitOutcome, EngineError> {
        let e = &mut self.e;
        let config = redis_common::fast_config();
        let keys = e.keys(run);
        init_run(&mut e.conn, &keys, &e.pool, plan, &options(), &config).await
    }
}

/// Raw per-step fields of a run.
async fn step_fields(conn: &mut ConnectionManager, run: &str) -> HashMap<String, String> {
    let keys = RunKeys::new(redis_common::NAMESPACE, run).unwrap_or_else(|e| panic!("{e}"));
    redis::cmd("HGETALL")
        .arg(keys.steps())
        .query_async(conn)
        .await
        .unwrap_or_default()
}

/// Waits until some step of `run` is Running on the worker with this pid; returns its id.
async fn running_on(conn: &mut ConnectionManager, run: &str, pid: u32) -> String {
    let start = Instant::now();
    let tag = format!("-{pid}-");
    loop {
        let f = step_fields(conn, run).await;
        for (k, v) in &f {
            if let Some(id) = k.strip_suffix(":owner")
                && v.contains(&tag)
                && f.get(&format!("{id}:phase")).map(String::as_str) == Some("Running")
            {
                return id.to_owned();
            }
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no step of {run} ever ran on worker {pid}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The run's own events (panics when they cannot be read).
async fn events(conn: &mut ConnectionManager, run: &str) -> Vec<RunEvent> {
    let keys = RunKeys::new(redis_common::NAMESPACE, run).unwrap_or_else(|e| panic!("{e}"));
    run_events(conn, &keys)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// How many times each step was recorded Succeeded in the run's event stream.
async fn successes(conn: &mut ConnectionManager, run: &str) -> HashMap<StepId, usize> {
    let mut n = HashMap::new();
    for e in events(conn, run).await {
        if let ("step", "Succeeded", Some(step)) = (e.kind.as_str(), e.phase.as_str(), e.step) {
            *n.entry(step).or_insert(0) += 1;
        }
    }
    n
}

async fn events_of(conn: &mut ConnectionManager, run: &str, kind: &str) -> usize {
    let all = events(conn, run).await;
    all.iter().filter(|e| e.kind == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_workers_lose_no_step_and_add_no_todo_twice() {
    let mut c = Chaos::new(false).await;
    let victim = c.worker("a", &[]);
    let _other = c.worker("b", &[]);
    let run = "sigkill";
    let mut steps: Vec<Value> = (1..=6)
        .map(|i| json!({"id": i, "tool": "wait", "input": {"ms": 1500}}))
        .collect();
    steps.extend((7..=12).map(|i| json!({"id": i, "tool": "todo_store.add", "input": {"title": format!("{run}-{i}")}, "dependsOn": [i - 6]})));
    steps.push(json!({"id": 13, "tool": "todo_store.list", "input": {}, "dependsOn": (7..=12).collect::<Vec<_>>()}));
    c.create(run, &plan(json!(steps)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let killed_step = running_on(&mut c.e.conn, run, victim.pid()).await;
    drop(victim); // SIGKILL, mid-step
    let _spare = c.worker("c", &[]);

    let r = c.e.finished(run, PATIENCE).await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert!(r.steps.iter().all(|s| s.phase == StepPhase::Succeeded));
    let killed = r
        .steps
        .iter()
        .find(|s| s.id.to_string() == killed_step)
        .map(|s| s.attempts);
    assert_eq!(killed, Some(2), "the lost attempt counts: {r:#?}");
    let done = successes(&mut c.e.conn, run).await;
    assert_eq!(done.len(), 13, "{done:?}");
    assert!(
        done.values().all(|n| *n == 1),
        "a step completed twice: {done:?}"
    );
    let todos = RedisTodoStore::new(c.e.conn.clone())
        .list(redis_common::NAMESPACE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 7..=12 {
        let title = format!("{run}-{i}");
        assert_eq!(
            todos.iter().filter(|t| t.title == title).count(),
            1,
            "{title}: {todos:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_step_finish_and_exits_zero() {
    let mut c = Chaos::new(false).await;
    let mut w = c.worker("a", &["--grace-seconds", "60"]);
    let p = plan(
        json!([{"id": 1, "tool": "wait", "input": {"ms": 1000}}, {"id": 2, "tool": "wait", "input": {"ms": 1}, "dependsOn": [1]}]),
    );
    c.create("drain", &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (step, r) = c.sigterm_mid_step(&mut w, "drain").await;
    assert_eq!(step, "1");
    // The in-flight step finished; the draining worker started nothing new.
    assert_eq!(
        (r.steps[0].phase, r.steps[0].attempts),
        (StepPhase::Succeeded, 1),
        "{r:#?}"
    );
    assert_eq!(
        (r.steps[1].phase, r.steps[1].attempts),
        (StepPhase::Ready, 0),
        "{r:#?}"
    );
    let _next = c.worker("b", &[]);
    let r = c.e.finished("drain", PATIENCE).await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_releases_the_step_to_another_worker() {
    let mut c = Chaos::new(false).await;
    let mut w = c.worker("a", &["--grace-seconds", "0"]);
    let p = plan(json!([{"id": 1, "tool": "wait", "input": {"ms": 3000}}]));
    c.create("release", &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, r) = c.sigterm_mid_step(&mut w, "release").await;
    assert_eq!(
        (r.steps[0].phase, r.steps[0].attempts),
        (StepPhase::Ready, 0),
        "released, attempt not counted: {r:#?}"
    );
    assert_eq!(events_of(&mut c.e.conn, "release", "release").await, 1);
    let next = c.worker("b", &[]);
    let r = c.e.finished("release", PATIENCE).await;
    assert_eq!(
        (r.phase, r.steps[0].attempts),
        (RunPhase::Succeeded, 1),
        "{r:#?}"
    );
    drop(next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_from_aof_mid_run_the_run_still_finishes() {
    let mut c = Chaos::new(true).await;
    let _a = c.worker("a", &[]);
    let _b = c.worker("b", &[]);
    // 10 layers of 3 parallel 300 ms waits, each layer after the previous one.
    let mut steps = Vec::new();
    for layer in 0..10u32 {
        for k in 1..=3u32 {
            let id = layer * 3 + k;
            let deps: Vec<u32> = if layer == 0 {
                vec![]
            } else {
                ((layer - 1) * 3 + 1..=layer * 3).collect()
            };
            steps.push(json!({"id": id, "tool": "wait", "input": {"ms": 300}, "dependsOn": deps}));
        }
    }
    c.create("aof", &plan(json!(steps)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Let `appendfsync everysec` persist the run's creation, then crash Redis mid-run.
    let start = Instant::now();
    loop {
        let r = c.e.report("aof").await;
        let done = r
            .steps
            .iter()
            .filter(|s| s.phase == StepPhase::Succeeded)
            .count();
        if done >= 9 && start.elapsed() > Duration::from_millis(1500) {
            assert_eq!(r.phase, RunPhase::Running, "the crash must come mid-run");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.e.server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.e.server
        .restart()
        .unwrap_or_else(|err| panic!("restart: {err}"));
    // ACL users are not in the AOF: the operator's resync defines the namespace's user again
    // (workers retry their login meanwhile).
    let start = Instant::now();
    while let Err(err) = crane_engine::tenancy::ensure_user(
        &mut c.e.admin,
        redis_common::NAMESPACE,
        &[redis_common::PASSWORD],
    )
    .await
    {
        // The admin connection reconnects behind its first failed command.
        assert!(start.elapsed() < PATIENCE, "{err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c.e.finished("aof", PATIENCE).await;
    assert_eq!(r.phase, RunPhase::Succeeded, "{r:#?}");
    assert!(
        r.steps
            .iter()
            .all(|s| s.phase == StepPhase::Succeeded && s.output == Some(json!({"waitedMs": 300})))
    );
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap_or_else(|e| panic!("{e}"));
    out
}

/// `crane-executor submit --redis URL --pool POOL --plan PLAN`.
fn submit_args<'a>(url: &'a str, pool: &'a str, plan: &'a str) -> Vec<&'a str> {
    vec!["submit", "--redis", url, "--pool", pool, "--plan", plan]
}

/// The tests' namespace login, as pods get it from their `crane-redis` Secret.
fn login_env() -> [(&'static str, String); 2] {
    [
        (
            "CRANE_REDIS_USERNAME",
            crane_engine::tenancy::username(redis_common::NAMESPACE),
        ),
        ("CRANE_REDIS_PASSWORD", redis_common::PASSWORD.to_owned()),
    ]
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(login_env())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_status_drive_the_engine_without_a_cluster() {
    let c = Chaos::new(false).await;
    let url = c.e.server.url();
    let plan_path = c.dir.path().join("plan.json");
    let plan = json!({"steps": [
        {"id": 1, "tool": "calculator", "input": {"expression": "6*7"}},
        {"id": 2, "tool": "calculator", "input": {"expression": "{step_1_output} + 1"}, "dependsOn": [1]}
    ]});
    std::fs::write(&plan_path, plan.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let plan_arg = plan_path.to_string_lossy().into_owned();
    let submit =
        |extra: &[&str]| cli(&[&submit_args(&url, redis_common::POOL, &plan_arg), extra].concat());

    let (code, out, err) = submit(&["--run-id", "cli-1"]);
    assert_eq!((code, out.trim()), (0, "cli-1"), "{err}");
    // The same id again is refused.
    let (code, _, err) = submit(&["--run-id", "cli-1"]);
    assert_eq!(code, 2);
    assert!(err.contains("already exists"), "{err}");
    // Not finished yet: no worker runs.
    let (code, out, _) = cli(&[
        "status",
        "--redis",
        &url,
        "--namespace",
        redis_common::NAMESPACE,
        "--run-id",
        "cli-1",
    ]);
    assert_eq!(code, 3, "{out}");

    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _w = c.worker("w", &["--metrics-addr", &metrics_addr]);
    let start = Instant::now();
    let report: Value = loop {
        let (code, out, err) = cli(&[
            "status",
            "--redis",
            &url,
            "--namespace",
            redis_common::NAMESPACE,
            "--run-id",
            "cli-1",
        ]);
        if code == 0 {
            break serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("status printed no JSON ({e}): {out}"));
        }
        assert!(
            code == 3 && start.elapsed() < PATIENCE,
            "status exit {code}: {err}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report["phase"], "Succeeded");
    assert_eq!(report["result"].as_f64(), Some(43.0));
    assert_eq!(report["steps"][0]["output"].as_f64(), Some(42.0));
    // The worker's /metrics counted both steps, labelled by tool and outcome.
    let metrics = http_get(&metrics_addr, "/metrics");
    assert!(
        metrics.contains("application/openmetrics-text"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"crane_worker_steps_total{tool="calculator",outcome="succeeded"} 2"#),
        "{metrics}"
    );
    assert!(http_get(&metrics_addr, "/healthz").ends_with("ok"));

    // A generated run id is printed.
    let (code, out, err) = submit(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with("run-"), "{out}");

    // Hostile and broken input: exit 2 with a message that says what was wrong.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [
                submit_args(&url, "scenarios/default", &plan_arg),
                vec!["--run-id", "a{b}"],
            ]
            .concat(),
            "run id",
        ),
        (submit_args(&url, "Bad/Pool", &plan_arg), "invalid pool"),
        (
            submit_args(&url, "a/b", "/nonexistent/plan.json"),
            "cannot read plan file",
        ),
        (
            vec![
                "status",
                "--redis",
                &url,
                "--namespace",
                redis_common::NAMESPACE,
                "--run-id",
                "never-submitted",
            ],
            "not found",
        ),
        (
            vec![
                "status",
                "--redis",
                &url,
                "--namespace",
                redis_common::NAMESPACE,
                "--run-id",
                "x}y",
            ],
            "run id",
        ),
        (
            vec!["status", "--redis", "not a url", "--run-id", "x"],
            "redis",
        ),
    ];
    for (args, needle) in cases {
        let (code, _, err) = cli(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // With this namespace's login, another namespace's pool is out of reach (Redis refuses
    // the keys), and credentials in the URL are refused before connecting.
    let (code, _, err) = cli(&submit_args(&url, "other-team/default", &plan_arg));
    assert_ne!(code, 0, "{err}");
    assert!(err.to_lowercase().contains("perm"), "{err}");
    let with_password = url.replace("redis://", "redis://:secret@");
    let (code, _, err) = cli(&submit_args(&with_password, redis_common::POOL, &plan_arg));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("carries credentials"), "{err}");
    let bad_plan = c.dir.path().join("bad.json");
    std::fs::write(
        &bad_plan,
        r#"{"steps": [{"id": 1, "tool": "nope", "input": {}}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = cli(&submit_args(&url, "a/b", &bad_plan.to_string_lossy()));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope"), "{err}");
}
