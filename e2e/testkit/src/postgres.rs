//! A real PostgreSQL for the run archive's tests: Debian's server in a temporary data
//! directory on a free loopback port, set up and run by `e2e/servers/postgres.sh` (the same
//! script `make up` uses), as the `postgres` user when the tests run as root. Started through
//! the same lifeline wrapper as [`crate::RedisServer`], so it dies with the test process even
//! when that is SIGKILLed. [`PostgresServer::stop`] and [`PostgresServer::start_again`] take it
//! away and bring it back on the same port with the same data, for outage tests.

use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{TestkitError, WRAPPER, free_port};

/// How long initdb plus the first start may take on a loaded 2-core machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A private PostgreSQL, stopped on drop.
pub struct PostgresServer {
    script: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    process: Option<(Child, Option<ChildStdin>)>,
}

impl PostgresServer {
    /// initdb (superuser `crane`, database `crane`, a random password) and start.
    pub fn start() -> Result<Self, TestkitError> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../servers/postgres.sh");
        let dir = tempfile::Builder::new()
            .prefix("crane-postgres-")
            .tempdir()
            .map_err(TestkitError::TempDir)?;
        let mut server = Self {
            script,
            dir,
            port: free_port()?,
            process: None,
        };
        let out = server.run_script("init")?;
        if !out.status.success() {
            return Err(server.startup_error(format!(
                "postgres.sh init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        server.launch()?;
        Ok(server)
    }

    /// `postgres://crane:PASSWORD@127.0.0.1:PORT/crane`.
    pub fn url(&self) -> String {
        let password =
            std::fs::read_to_string(self.dir.path().join("password")).unwrap_or_default();
        format!(
            "postgres://crane:{}@127.0.0.1:{}/crane",
            password.trim(),
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Fast shutdown (sessions are cut, committed data stays), then waits for the process.
    pub fn stop(&mut self) {
        if let Some((mut child, lifeline)) = self.process.take() {
            let _ = self.run_script("stop");
            drop(lifeline);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same data.
    pub fn start_again(&mut self) -> Result<(), TestkitError> {
        self.stop();
        self.launch()
    }

    fn run_script(&self, cmd: &str) -> Result<std::process::Output, TestkitError> {
        Command::new(&self.script)
            .arg(cmd)
            .arg(self.dir.path())
            .output()
            .map_err(|source| TestkitError::Spawn {
                bin: self.script.display().to_string(),
                source,
            })
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let log_path = self.dir.path().join("postgres.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(TestkitError::TempDir)?;
        let log_err = log.try_clone().map_err(TestkitError::TempDir)?;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg(&self.script)
            .arg("run")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                bin: self.script.display().to_string(),
                source,
            })?;
        let lifeline = child.stdin.take();
        self.process = Some((child, lifeline));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if self.run_script("ready").is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            let exited = self
                .process
                .as_mut()
                .is_none_or(|(c, _)| !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() >= deadline {
                self.stop();
                return Err(self.startup_error("postgres did not accept connections".into()));
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn startup_error(&self, reason: String) -> TestkitError {
        let log_path = self.dir.path().join("postgres.log");
        TestkitError::Startup {
            port: self.port,
            reason,
            log: std::fs::read_to_string(&log_path).unwrap_or_default(),
            log_path: log_path.display().to_string(),
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
