//! Real servers that tool tests talk to, started from their published packages: the MCP
//! reference server `@modelcontextprotocol/server-everything` (npm, Streamable HTTP mode).
//! Installed on first use by `e2e/servers/npm-install.sh` into the cache, started on a free
//! port with the same no-orphans lifeline as [`crate::RedisServer`].

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{TestkitError, WRAPPER, free_port};

/// The published version the tests run against.
pub const SERVER_EVERYTHING_VERSION: &str = "2026.8.31";
const SERVER_EVERYTHING: &str = "@modelcontextprotocol/server-everything";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// `server-everything streamableHttp` on a free port (all interfaces, so pods reach it too).
pub struct McpEverything {
    port: u16,
    script: PathBuf,
    process: Option<(Child, Option<ChildStdin>)>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl McpEverything {
    pub fn start() -> Result<Self, TestkitError> {
        let package = install(SERVER_EVERYTHING, SERVER_EVERYTHING_VERSION)?;
        let dir = tempfile::tempdir().map_err(TestkitError::TempDir)?;
        let mut server = Self {
            port: free_port()?,
            script: package.join("dist/index.js"),
            process: None,
            log: dir.path().join("server-everything.log"),
            _dir: dir,
        };
        server.launch()?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL: sessions and in-flight calls die with it.
    pub fn kill(&mut self) {
        if let Some((mut child, lifeline)) = self.process.take() {
            drop(lifeline);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, with no memory of earlier sessions.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        self.launch()
    }

    fn launch(&mut self) -> Result<(), TestkitError> {
        let log = std::fs::File::create(&self.log).map_err(TestkitError::TempDir)?;
        let log_err = log.try_clone().map_err(TestkitError::TempDir)?;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("node")
            .arg(&self.script)
            .arg("streamableHttp")
            .env("PORT", self.port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                bin: "node".into(),
                source,
            })?;
        let lifeline = child.stdin.take();
        self.process = Some((child, lifeline));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        while TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_err() {
            let exited = self
                .process
                .as_mut()
                .is_none_or(|(c, _)| !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() >= deadline {
                self.kill();
                return Err(TestkitError::Startup {
                    port: self.port,
                    reason: "server-everything did not listen".into(),
                    log_path: self.log.display().to_string(),
                    log: std::fs::read_to_string(&self.log).unwrap_or_default(),
                });
            }
            sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for McpEverything {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The package's directory, installed into the cache on first use.
fn install(name: &str, version: &str) -> Result<PathBuf, TestkitError> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../servers/npm-install.sh");
    let out = Command::new(&script)
        .args([name, version])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| TestkitError::Spawn {
            bin: script.display().to_string(),
            source,
        })?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || path.is_empty() {
        return Err(TestkitError::Startup {
            port: 0,
            reason: format!("installing {name}@{version} failed"),
            log_path: String::new(),
            log: String::new(),
        });
    }
    Ok(PathBuf::from(path))
}
