//! Support for the Redis engine tests: a real redis-server per test (crane-testkit), fast
//! engine timings, and in-process workers that stop on request.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;
use std::time::Duration;

use crane_core::plan::Plan;
use crane_core::run::{RunOptions, RunReport};
use crane_core::tool::{Binding, ToolSpec, Toolbox};
use crane_engine::api::InitOutcome;
use crane_engine::metrics::Metrics;
use crane_engine::{
    EngineConfig, EngineError, PoolName, RedisExecutor, RunKeys, Worker, WorkerConfig, api,
};
use crane_testkit::RedisServer;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const NAMESPACE: &str = "scenarios";
pub const POOL: &str = "scenarios/default";

/// The keys of run `run` of the tests' namespace.
pub fn run_keys(run: &str) -> RunKeys {
    RunKeys::new(NAMESPACE, run).unwrap_or_else(|e| panic!("{e}"))
}

/// Short leases and sweeps so recovery happens within a second or two.
pub fn fast_config() -> EngineConfig {
    EngineConfig {
        lease: Duration::from_millis(1000),
        sweep_interval: Duration::from_millis(200),
        sweep_threshold: Duration::from_millis(1000),
        ..EngineConfig::default()
    }
}

/// A plan from `{"steps": [...]}` JSON (panics on a typo in the test itself).
pub fn plan(steps: Value) -> Plan {
    serde_json::from_value(json!({ "steps": steps })).unwrap_or_else(|e| panic!("{e}"))
}

/// Run options for tests with real tools: a step may take 5 s, retries as by default.
pub fn options() -> RunOptions {
    RunOptions {
        step_timeout_ms: 5_000,
        ..RunOptions::default()
    }
}

/// A bound HTTP tool `name` POSTing its input to `url`, as the operator's catalog gives one.
pub fn http_tool(name: &str, url: String, input_schema: Value) -> ToolSpec {
    let mut spec = ToolSpec::new(name, format!("{name} (test HTTP tool)"), input_schema);
    spec.binding = Some(Binding::Http {
        url,
        method: "POST".into(),
        headers: Vec::new(),
        timeout_seconds: 5,
    });
    spec
}

/// A redis-server and the tests' namespace on it. `client` and `conn` log in as the
/// namespace's own Redis user, as pods do, so every scenario also proves the engine needs no
/// more than that user may do; `admin` is the server's default user.
pub struct Engine {
    pub server: RedisServer,
    pub client: redis::Client,
    pub conn: ConnectionManager,
    pub admin: ConnectionManager,
    pub admin_client: redis::Client,
    pub pool: PoolName,
}

/// The password of the tests' namespace user.
pub const PASSWORD: &str = "scenarios-password";

pub async fn engine(aof: bool) -> Engine {
    let server = match RedisServer::builder().aof(aof).start() {
        Ok(s) => s,
        Err(e) => panic!("cannot start redis-server: {e}"),
    };
    let admin_client = api::client(&server.url(), &crane_engine::api::Auth::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut admin = api::connect(&admin_client)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    crane_engine::tenancy::ensure_user(&mut admin, NAMESPACE, &[PASSWORD])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = api::client(&server.url(), &auth()).unwrap_or_else(|e| panic!("{e}"));
    let conn = api::connect(&client)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pool = PoolName::parse(POOL).unwrap_or_else(|e| panic!("{e}"));
    Engine {
        server,
        client,
        conn,
        admin,
        admin_client,
        pool,
    }
}

/// The login of the tests' namespace user.
pub fn auth() -> crane_engine::api::Auth {
    crane_engine::api::Auth {
        username: Some(crane_engine::tenancy::username(NAMESPACE)),
        password: Some(PASSWORD.to_owned()),
    }
}

impl Engine {
    pub fn executor(&self, toolbox: Arc<Toolbox>) -> RedisExecutor {
        RedisExecutor::new(
            self.client.clone(),
            self.conn.clone(),
            self.pool.clone(),
            fast_config(),
            toolbox.catalog().clone(),
        )
        .with_timeout(Duration::from_secs(120))
    }

    /// The keys of run `run` of this engine's pool's namespace.
    pub fn keys(&self, run: &str) -> RunKeys {
        run_keys(run)
    }

    /// Creates run `run` on this engine's pool, with the default engine settings.
    pub async fn init(
        &mut self,
        run: &str,
        plan: &Plan,
        options: &RunOptions,
    ) -> Result<InitOutcome, EngineError> {
        let keys = RunKeys::new(self.pool.namespace(), run)?;
        api::init_run(
            &mut self.conn,
            &keys,
            &self.pool,
            plan,
            options,
            &EngineConfig::default(),
        )
        .await
    }

    /// Run `run`'s report now (a panic when there is none).
    pub async fn report(&mut self, run: &str) -> RunReport {
        let keys = self.keys(run);
        api::run_report(&mut self.conn, &keys, crane_engine::api::Outputs::Full)
            .await
            .unwrap_or_else(|e| panic!("report of {run}: {e}"))
    }

    /// Run `run`'s report once it has ended. `patience` only stops a hung test: no assertion
    /// depends on it.
    pub async fn finished(&mut self, run: &str, patience: Duration) -> RunReport {
        let keys = self.keys(run);
        api::wait_for_run(&self.client, &mut self.conn, &keys, Some(patience))
            .await
            .unwrap_or_else(|e| panic!("waiting for {run}: {e}"))
    }

    pub fn worker_config(&self, concurrency: usize) -> WorkerConfig {
        let mut c = WorkerConfig::new(self.pool.clone());
        c.concurrency = concurrency;
        c.idle_timeout = None;
        c.block = Duration::from_millis(200);
        c.engine = fast_config();
        c
    }

    /// Where workers read mounted Secrets (`<dir>/<secret>/<key>`), as pods do.
    pub fn secrets_dir(&self) -> std::path::PathBuf {
        self.server.dir().join("secrets")
    }

    /// `n` in-process workers sharing one toolbox (so test tools count calls across them),
    /// running bound tools and model calls as pods do.
    pub async fn spawn_workers(
        &self,
        n: usize,
        config: WorkerConfig,
        toolbox: Arc<Toolbox>,
    ) -> Workers {
        let (tx, rx) = watch::channel(false);
        let mut handles = Vec::new();
        for i in 0..n {
            let mut c = config.clone();
            c.consumer = format!("{}-{i}", c.consumer);
            let connectors =
                crane_tools::Remote::new(crane_tools::Secrets::new(self.secrets_dir()))
                    .unwrap_or_else(|e| panic!("connectors: {e}"));
            let w = Worker::new(&self.client, toolbox.clone(), c, Arc::new(Metrics::new()))
                .await
                .unwrap_or_else(|e| panic!("worker: {e}"))
                .with_connectors(Arc::new(connectors));
            let mut rx = rx.clone();
            handles.push(tokio::spawn(async move {
                w.run(async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            }));
        }
        Workers { tx, handles }
    }
}

pub struct Workers {
    tx: watch::Sender<bool>,
    handles: Vec<JoinHandle<Result<(), String>>>,
}

impl Workers {
    /// Kills every worker as a crash would: no drain, no release; their leases run out.
    pub fn kill(self) {
        for h in &self.handles {
            h.abort();
        }
    }

    pub async fn stop(self) {
        self.tx.send_replace(true);
        for h in self.handles {
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("worker failed: {e}"),
                Err(e) => panic!("worker panicked: {e}"),
            }
        }
    }
}
