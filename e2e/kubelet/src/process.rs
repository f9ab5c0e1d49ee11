//! Starts a container as a local process in its own process group and guarantees the group
//! dies with its owner: the [`Group`] guard SIGKILLs the whole group when dropped, so no exit
//! path (deletion, restart, kubelet shutdown, a panic unwinding a task) leaves an orphan.
//! The group id is also written to a pid file so `down.sh` can sweep groups of a kubelet that
//! was itself SIGKILLed.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::program::Program;

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot open log file {path}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("started {0} but the OS reported no pid")]
    NoPid(String),
}

/// A running container process and the group it leads.
#[derive(Debug)]
pub struct Group {
    child: Child,
    pgid: i32,
    pid_file: PathBuf,
}

/// How a process ended, in the terms a container status uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Exit code, or 128 + signal when killed by a signal (what container runtimes report).
    pub exit_code: i32,
    pub signal: Option<i32>,
}

impl Group {
    /// Start `program` with exactly `env` (nothing inherited from the kubelet), stdout and
    /// stderr appended to `log`, in a new process group whose id goes to `pid_file`.
    pub fn spawn(
        program: &Program,
        env: &[(String, String)],
        workdir: &Path,
        log: &Path,
        pid_file: &Path,
    ) -> Result<Self, SpawnError> {
        let open_log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|source| SpawnError::Log {
                    path: log.display().to_string(),
                    source,
                })
        };
        let out = open_log()?;
        let err = open_log()?;
        let mut cmd = Command::new(&program.path);
        cmd.args(&program.args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            // Belt and braces: if this guard is leaked the leader still dies with the handle.
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| SpawnError::Exec {
            program: program.path.display().to_string(),
            source,
        })?;
        let Some(pid) = child.id() else {
            return Err(SpawnError::NoPid(program.path.display().to_string()));
        };
        let pgid = i32::try_from(pid).map_err(|_| SpawnError::NoPid(pid.to_string()))?;
        // Without the pid file only the sweep in down.sh is lost, not correctness.
        if let Err(e) = std::fs::write(pid_file, format!("{pgid}\n")) {
            tracing::warn!(error = %e, file = %pid_file.display(), "cannot record process group");
        }
        Ok(Self {
            child,
            pgid,
            pid_file: pid_file.to_owned(),
        })
    }

    /// The process group id (equal to the leader's pid).
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Wait for the leader to exit, then kill whatever it left behind in its group: a
    /// container ends when its main process does.
    pub async fn wait(&mut self) -> Ended {
        let ended = match self.child.wait().await {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Ended {
                    exit_code: code,
                    signal: None,
                },
                (None, Some(sig)) => Ended {
                    exit_code: 128 + sig,
                    signal: Some(sig),
                },
                (None, None) => Ended {
                    exit_code: 255,
                    signal: None,
                },
            },
            Err(e) => {
                tracing::warn!(error = %e, pgid = self.pgid, "wait failed; treating as exit 255");
                Ended {
                    exit_code: 255,
                    signal: None,
                }
            }
        };
        self.signal(Signal::SIGKILL);
        ended
    }

    /// Send `sig` to the whole group. A group that is already gone is not an error.
    pub fn signal(&self, sig: Signal) {
        match killpg(Pid::from_raw(self.pgid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => tracing::warn!(error = %e, pgid = self.pgid, ?sig, "killpg failed"),
        }
    }

    /// SIGTERM the group, give the leader `grace` to exit, then SIGKILL the group.
    pub async fn terminate(&mut self, grace: Duration) -> Ended {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(ended) => ended,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.wait().await
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
        // The pid file only matters while the group may be alive.
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Program {
        Program {
            path: PathBuf::from("sh"),
            args: vec!["-c".into(), script.into()],
        }
    }

    fn path_env() -> Vec<(String, String)> {
        vec![(
            "PATH".to_owned(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )]
    }

    fn alive(pid: i32) -> bool {
        // Signal 0 probes existence; a zombie still counts, so also read its state.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        !stat.is_empty() && !stat.contains(") Z ")
    }

    #[tokio::test]
    async fn exit_code_env_and_log_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        let pid = dir.path().join("c.pid");
        let mut env = path_env();
        env.push(("GREETING".into(), "hi $(not expanded here)".into()));
        let mut g = Group::spawn(
            &sh("echo \"$GREETING\"; echo err >&2; exit 3"),
            &env,
            dir.path(),
            &log,
            &pid,
        )
        .unwrap();
        assert!(pid.exists());
        let ended = g.wait().await;
        assert_eq!(
            ended,
            Ended {
                exit_code: 3,
                signal: None
            }
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("hi $(not expanded here)"), "{text}");
        assert!(text.contains("err"), "{text}");
        drop(g);
        assert!(!pid.exists());
    }

    #[tokio::test]
    async fn kubelet_environment_does_not_leak() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        // HOME is always set for the kubelet itself; the child must not see it.
        let mut g = Group::spawn(
            &sh("echo \"home=[$HOME]\""),
            &path_env(),
            dir.path(),
            &log,
            &dir.path().join("p"),
        )
        .unwrap();
        g.wait().await;
        assert!(std::fs::read_to_string(&log).unwrap().contains("home=[]"));
    }

    #[tokio::test]
    async fn terminate_kills_the_whole_group_including_stubborn_children() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        // The grandchild ignores SIGTERM and reports its pid; only SIGKILL to the group ends it.
        let mut g = Group::spawn(
            &sh("sh -c 'trap \"\" TERM; echo $$ > child.pid; while :; do sleep 1; done' & wait"),
            &path_env(),
            dir.path(),
            &log,
            &dir.path().join("p"),
        )
        .unwrap();
        let child_file = dir.path().join("child.pid");
        let mut child_pid = None;
        for _ in 0..200 {
            if let Ok(s) = std::fs::read_to_string(&child_file)
                && let Ok(p) = s.trim().parse::<i32>()
            {
                child_pid = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let child_pid = child_pid.expect("grandchild wrote its pid");
        assert!(alive(child_pid));
        let leader = g.pgid();
        let ended = g.terminate(Duration::from_millis(300)).await;
        assert!(ended.signal.is_some() || ended.exit_code != 0, "{ended:?}");
        // The grandchild is reparented to init and reaped there; poll until it is gone.
        let mut gone = false;
        for _ in 0..200 {
            if !alive(child_pid) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "grandchild {child_pid} of group {leader} survived");
    }

    #[tokio::test]
    async fn dropping_the_guard_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let g = Group::spawn(
            &sh("sleep 1000"),
            &path_env(),
            dir.path(),
            &dir.path().join("l"),
            &dir.path().join("p"),
        )
        .unwrap();
        let pgid = g.pgid();
        drop(g);
        let mut gone = false;
        for _ in 0..200 {
            if !alive(pgid) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "leader {pgid} survived its guard");
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(async {
                Group::spawn(
                    &Program {
                        path: PathBuf::from("no-such-program-crane-test"),
                        args: vec![],
                    },
                    &path_env(),
                    dir.path(),
                    &dir.path().join("l"),
                    &dir.path().join("p"),
                )
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("no-such-program-crane-test"),
            "{err}"
        );
    }
}
