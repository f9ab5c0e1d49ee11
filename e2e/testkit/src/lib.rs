//! Test harness for component tests: real Redis servers on free loopback ports (and a real
//! PostgreSQL for the run archive, [`PostgresServer`]). That is all it starts; the local control plane that controller and end-to-end tests run against is
//! `e2e/cluster/` (`make cluster-up`).
//!
//! `RedisServer` runs Debian's `redis-server` in the foreground (`--daemonize no`), each in
//! its own temporary directory, and promises no orphans:
//! - `Drop` kills the server and waits for it.
//! - If the test process itself dies (SIGKILL, abort), a watchdog kills the server: redis is
//!   started by a tiny `/bin/sh` wrapper whose stdin is a pipe from this process; a background
//!   reader in the wrapper blocks on that pipe and sends SIGKILL to redis when it reaches EOF,
//!   which the kernel delivers as soon as our end closes, for whatever reason. This replaces
//!   `prctl(PR_SET_PDEATHSIG)`, which would need `unsafe` (forbidden in this workspace).
//!
//! The harness is synchronous (std only) so any test, async or not, can use it; start-up
//! blocks for the few milliseconds redis needs.
#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod fake_llm;
mod postgres;
mod servers;
pub use postgres::PostgresServer;
pub use servers::{McpEverything, SERVER_EVERYTHING_VERSION};

/// How long a server may take to answer PING (loading a large AOF included).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful SHUTDOWN may take before the server is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports to try when another process grabs the one we picked before redis binds it.
const PORT_ATTEMPTS: usize = 5;
const LOG_FILE: &str = "redis.log";

/// Runs redis in the background and kills it when stdin (the pipe from the test process)
/// reaches EOF. Background jobs of a non-interactive shell get /dev/null as stdin, hence the
/// copy of stdin to fd 3 first. `wait` makes the wrapper exit with redis's own status.
pub(crate) const WRAPPER: &str = r#"exec 3<&0
"$0" "$@" </dev/null 3<&- &
pid=$!
( while read -r _; do :; done <&3; kill -9 "$pid" 2>/dev/null ) &
reader=$!
exec 3<&-
wait "$pid"
status=$?
kill "$reader" 2>/dev/null
exit "$status"
"#;

#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error(
        "redis-server not found on PATH or in /usr/bin: install redis-server (make test does it)"
    )]
    RedisNotInstalled,
    #[error("could not create the redis temp dir: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("could not find a free loopback port: {0}")]
    Port(#[source] std::io::Error),
    #[error("could not start {bin}: {source}")]
    Spawn {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "redis-server on port {port} did not come up: {reason}\n--- redis log ({log_path}) ---\n{log}"
    )]
    Startup {
        port: u16,
        reason: String,
        log_path: String,
        log: String,
    },
}

/// Options for a server; `RedisServer::builder().aof(true).start()`.
#[derive(Clone, Debug, Default)]
pub struct RedisServerBuilder {
    aof: bool,
}

impl RedisServerBuilder {
    /// Append-only file with `appendfsync everysec` (default off: `--save ""`, no AOF).
    pub fn aof(mut self, on: bool) -> Self {
        self.aof = on;
        self
    }

    pub fn start(self) -> Result<RedisServer, TestkitError> {
        let bin = find_redis_server()?;
        let dir = tempfile::Builder::new()
            .prefix("crane-redis-")
            .tempdir()
            .map_err(TestkitError::TempDir)?;
        let mut server = RedisServer {
            bin,
            dir,
            aof: self.aof,
            port: 0,
            process: None,
        };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                // Another process took the port between our probe and redis's bind: retry.
                Err(e) if port_taken(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(TestkitError::Port(std::io::Error::other("no attempt made"))))
    }
}

/// The wrapper process and the pipe whose closing kills redis.
struct Process {
    child: Child,
    lifeline: Option<ChildStdin>,
}

/// A real `redis-server` on 127.0.0.1, killed on drop.
pub struct RedisServer {
    bin: PathBuf,
    dir: TempDir,
    aof: bool,
    port: u16,
    process: Option<Process>,
}

impl RedisServer {
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// A server with default options (no persistence).
    pub fn start() -> Result<Self, TestkitError> {
        Self::builder().start()
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (RDB/AOF files and `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server process is alive (false after `kill` or a crash).
    pub fn is_running(&mut self) -> bool {
        match self.process.as_mut() {
            Some(p) => matches!(p.child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Graceful stop (SHUTDOWN, which flushes the AOF when enabled) and start again on the
    /// same port and directory. On a killed server it just starts again, so `kill` +
    /// `restart` simulates a crash and recovery from whatever AOF reached the disk.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop();
        self.launch()
    }

    /// Stops the server gracefully (SHUTDOWN), killing it if it does not exit in time.
    pub fn stop(&mut self) {
        if self.is_running() {
            let _ = command(self.port, &["SHUTDOWN"]);
            let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
            while self.is_running() && Instant::now() < deadline {
                sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// SIGKILL: the server dies at once, without flushing anything.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            // Closing the lifeline makes the wrapper's reader SIGKILL redis; the wrapper then
            // exits with it. Killing the wrapper too is a belt for a wedged shell.
            drop(p.lifeline.take());
            let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
            while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                sleep(Duration::from_millis(5));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &self.dir.path().to_string_lossy(),
            "--daemonize",
            "no",
            "--logfile",
            "",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.aof {
            args.extend(["--appendonly", "yes", "--appendfsync", "everysec"].map(String::from));
        } else {
            args.extend(["--appendonly", "no"].map(String::from));
        }
        args
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| self.startup_error("could not open the log file", Some(e)))?;
        let log_err = log
            .try_clone()
            .map_err(|e| self.startup_error("could not open the log file", Some(e)))?;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg(&self.bin)
            .args(self.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                bin: self.bin.display().to_string(),
                source,
            })?;
        let lifeline = child.stdin.take();
        self.process = Some(Process { child, lifeline });

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if !self.is_running() {
                self.kill();
                return Err(self.startup_error("redis-server exited during start-up", None));
            }
            if let Ok(reply) = command(self.port, &["PING"])
                && reply.starts_with("+PONG")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(
                    self.startup_error(&format!("no PONG within {STARTUP_TIMEOUT:?}"), None)
                );
            }
            sleep(Duration::from_millis(10));
        }
    }

    fn startup_error(&self, reason: &str, cause: Option<std::io::Error>) -> TestkitError {
        let mut log = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_string(&mut log);
        }
        TestkitError::Startup {
            port: self.port,
            reason: match cause {
                Some(e) => format!("{reason}: {e}"),
                None => reason.to_owned(),
            },
            log_path: self.log_path().display().to_string(),
            log,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn port_taken(e: &TestkitError) -> bool {
    matches!(e, TestkitError::Startup { log, .. } if log.contains("Address already in use"))
}

fn find_redis_server() -> Result<PathBuf, TestkitError> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("redis-server"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([
            PathBuf::from("/usr/bin/redis-server"),
            PathBuf::from("/usr/sbin/redis-server"),
        ])
        .find(|p| p.is_file())
        .ok_or(TestkitError::RedisNotInstalled)
}

/// A port nobody listens on right now (the kernel's pick for port 0).
pub(crate) fn free_port() -> Result<u16, TestkitError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(TestkitError::Port)?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(TestkitError::Port)
}

/// Sends one command over a raw RESP connection and returns the first reply line.
/// Dependency-light on purpose: the harness must not need a Redis client crate.
pub fn command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        match stream.read(&mut byte)? {
            0 => break,
            _ => reply.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

/// Serves `app` on a free loopback port in the current runtime (a test's own tool service);
/// its address.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("serve: cannot bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("serve: {e}"),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_cleans_up() {
        let server = RedisServer::start().expect("redis starts");
        let port = server.port();
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
        assert_eq!(command(port, &["PING"]).ok().as_deref(), Some("+PONG"));
        let dir = server.dir().to_path_buf();
        assert!(dir.join(LOG_FILE).is_file());
        // No persistence by default.
        assert_eq!(
            command(port, &["SET", "k", "v"]).ok().as_deref(),
            Some("+OK")
        );
        assert!(!dir.join("appendonlydir").exists() && !dir.join("appendonly.aof").exists());
        drop(server);
        assert!(
            command(port, &["PING"]).is_err(),
            "server still answers after drop"
        );
        assert!(!dir.exists(), "temp dir left behind");
    }

    #[test]
    fn two_servers_get_different_ports() {
        let a = RedisServer::start().expect("first");
        let b = RedisServer::start().expect("second");
        assert_ne!(a.port(), b.port());
        assert_eq!(
            command(a.port(), &["SET", "k", "a"]).ok().as_deref(),
            Some("+OK")
        );
        assert_eq!(
            command(b.port(), &["EXISTS", "k"]).ok().as_deref(),
            Some(":0")
        );
    }

    #[test]
    fn kill_stops_at_once_and_restart_comes_back_on_the_same_port() {
        let mut server = RedisServer::start().expect("redis starts");
        let port = server.port();
        server.kill();
        assert!(!server.is_running());
        assert!(command(port, &["PING"]).is_err());
        server.restart().expect("restart after kill");
        assert_eq!(server.port(), port);
        assert_eq!(command(port, &["PING"]).ok().as_deref(), Some("+PONG"));
    }

    #[test]
    fn without_aof_restart_loses_data() {
        let mut server = RedisServer::start().expect("redis starts");
        assert_eq!(
            command(server.port(), &["SET", "k", "v"]).ok().as_deref(),
            Some("+OK")
        );
        server.restart().expect("restart");
        assert_eq!(
            command(server.port(), &["EXISTS", "k"]).ok().as_deref(),
            Some(":0")
        );
    }

    #[test]
    fn aof_keeps_data_across_graceful_restart() {
        let mut server = RedisServer::builder()
            .aof(true)
            .start()
            .expect("redis starts");
        let port = server.port();
        assert_eq!(
            command(port, &["SET", "k", "v"]).ok().as_deref(),
            Some("+OK")
        );
        server.restart().expect("restart");
        assert_eq!(server.port(), port);
        assert_eq!(command(port, &["EXISTS", "k"]).ok().as_deref(), Some(":1"));
        assert!(
            server.dir().join("appendonlydir").is_dir()
                || server.dir().join("appendonly.aof").is_file()
        );
    }

    #[test]
    fn startup_failure_shows_redis_own_log() {
        // Occupy a port so redis cannot bind it: the error must carry redis's message.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut server = RedisServer {
            bin: find_redis_server().expect("installed"),
            dir: tempfile::tempdir().expect("tempdir"),
            aof: false,
            port,
            process: None,
        };
        let err = server
            .launch()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(&format!("port {port}")), "{err}");
        assert!(err.contains("Address already in use"), "{err}");
        assert!(!server.is_running());
    }

    #[test]
    fn watchdog_kills_redis_when_the_owner_vanishes() {
        let mut server = RedisServer::start().expect("redis starts");
        let port = server.port();
        // Simulate the test process dying: only the lifeline pipe closes, nobody kills or
        // signals anything. The wrapper must take redis down by itself.
        let lifeline = server.process.as_mut().and_then(|p| p.lifeline.take());
        assert!(lifeline.is_some());
        drop(lifeline);
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.is_running() && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
        }
        assert!(
            !server.is_running(),
            "wrapper still running after its owner vanished"
        );
        assert!(command(port, &["PING"]).is_err(), "redis orphaned");
    }
}
