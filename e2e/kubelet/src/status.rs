//! The pod status this kubelet reports, built purely from what it observed of its processes:
//! container states with exit codes and timestamps, the pod phase rule (Succeeded when every
//! container exited 0 and will not restart, Failed otherwise), and the standard conditions.
//! The Job controller counts pods by phase and needs `finishedAt`, so both are always set.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Every pod of the process kubelet shares the host's loopback address.
pub const LOOPBACK: &str = "127.0.0.1";

/// What one container is doing, as far as the kubelet knows.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Exit),
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub exit_code: i32,
    /// The signal that killed it, if any (exit code is then 128 + signal, as runtimes report).
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

impl Exit {
    /// Reason strings as container runtimes report them.
    pub fn reason_for(exit_code: i32, signal: Option<i32>) -> &'static str {
        match (exit_code, signal) {
            (0, None) => "Completed",
            _ => "Error",
        }
    }
}

/// One container's record: its spec name and image plus observed state.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last_terminated: Option<Exit>,
    pub restart_count: i32,
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            state: State::Waiting {
                reason: "ContainerCreating".to_owned(),
                message: None,
            },
            last_terminated: None,
            restart_count: 0,
        }
    }
}

/// Pod phases this kubelet reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// The pod's phase from its containers, once the kubelet decided nothing will restart
/// (`final_` true) or while it still may.
pub fn phase(containers: &[ContainerRecord], final_: bool) -> Phase {
    if containers.is_empty() {
        return if final_ {
            Phase::Succeeded
        } else {
            Phase::Pending
        };
    }
    let all_terminated = containers
        .iter()
        .all(|c| matches!(c.state, State::Terminated(_)));
    if final_ && all_terminated {
        let all_zero = containers
            .iter()
            .all(|c| matches!(&c.state, State::Terminated(e) if e.exit_code == 0));
        return if all_zero {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
    }
    let any_started = containers
        .iter()
        .any(|c| !matches!(c.state, State::Waiting { .. }) || c.restart_count > 0);
    if any_started {
        Phase::Running
    } else {
        Phase::Pending
    }
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn container_state(s: &State) -> ContainerState {
    match s {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..Default::default()
        },
        State::Terminated(e) => ContainerState {
            terminated: Some(terminated(e)),
            ..Default::default()
        },
    }
}

fn terminated(e: &Exit) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: e.exit_code,
        signal: e.signal,
        reason: Some(e.reason.clone()),
        message: e.message.clone(),
        started_at: Some(time(e.started_at)),
        finished_at: Some(time(e.finished_at)),
        container_id: None,
    }
}

fn container_status(c: &ContainerRecord) -> ContainerStatus {
    let running = matches!(c.state, State::Running { .. });
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: String::new(),
        ready: running,
        started: Some(running),
        restart_count: c.restart_count,
        state: Some(container_state(&c.state)),
        last_state: c.last_terminated.as_ref().map(|e| ContainerState {
            terminated: Some(terminated(e)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn condition(type_: &str, ok: bool, now: Timestamp, reason: Option<&str>) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        last_transition_time: Some(time(now)),
        reason: reason.map(str::to_owned),
        ..Default::default()
    }
}

/// The complete status object for the pod. `init` are init containers (run before the
/// others), `reason`/`message` explain a pod-level failure.
pub fn pod_status(
    phase: Phase,
    start_time: Timestamp,
    init: &[ContainerRecord],
    containers: &[ContainerRecord],
    message: Option<&str>,
    now: Timestamp,
) -> PodStatus {
    let initialized = init
        .iter()
        .all(|c| matches!(&c.state, State::Terminated(e) if e.exit_code == 0));
    let all_running = !containers.is_empty()
        && containers
            .iter()
            .all(|c| matches!(c.state, State::Running { .. }));
    let terminal_reason = phase.is_terminal().then_some("PodCompleted");
    PodStatus {
        phase: Some(phase.as_str().to_owned()),
        start_time: Some(time(start_time)),
        host_ip: Some(LOOPBACK.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: LOOPBACK.to_owned(),
        }]),
        pod_ip: Some(LOOPBACK.to_owned()),
        pod_ips: Some(vec![PodIP {
            ip: LOOPBACK.to_owned(),
        }]),
        message: message.map(str::to_owned),
        conditions: Some(vec![
            condition("PodScheduled", true, now, None),
            condition("Initialized", initialized, now, None),
            condition("ContainersReady", all_running, now, terminal_reason),
            condition("Ready", all_running, now, terminal_reason),
        ]),
        init_container_statuses: (!init.is_empty())
            .then(|| init.iter().map(container_status).collect()),
        container_statuses: Some(containers.iter().map(container_status).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(name: &str, code: i32) -> ContainerRecord {
        let t = Timestamp::UNIX_EPOCH;
        ContainerRecord {
            state: State::Terminated(Exit {
                exit_code: code,
                signal: None,
                reason: Exit::reason_for(code, None).to_owned(),
                message: None,
                started_at: t,
                finished_at: t,
            }),
            ..ContainerRecord::new(name, "busybox")
        }
    }

    fn running(name: &str) -> ContainerRecord {
        ContainerRecord {
            state: State::Running {
                started_at: Timestamp::UNIX_EPOCH,
            },
            ..ContainerRecord::new(name, "busybox")
        }
    }

    #[test]
    fn phase_rules() {
        assert_eq!(
            phase(&[exited("a", 0), exited("b", 0)], true),
            Phase::Succeeded
        );
        assert_eq!(
            phase(&[exited("a", 0), exited("b", 3)], true),
            Phase::Failed
        );
        assert_eq!(
            phase(&[exited("a", 0), running("b")], false),
            Phase::Running
        );
        // Exited but may restart: still Running, never a terminal phase.
        assert_eq!(phase(&[exited("a", 1)], false), Phase::Running);
        assert_eq!(
            phase(&[ContainerRecord::new("a", "x")], false),
            Phase::Pending
        );
        assert_eq!(phase(&[], false), Phase::Pending);
    }

    #[test]
    fn terminated_status_carries_what_the_job_controller_reads() {
        let now = Timestamp::UNIX_EPOCH;
        let st = pod_status(Phase::Failed, now, &[], &[exited("main", 3)], None, now);
        let v = serde_json::to_value(&st).unwrap();
        assert_eq!(v["phase"], "Failed");
        let t = &v["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(t["exitCode"], 3);
        assert_eq!(t["reason"], "Error");
        assert_eq!(t["finishedAt"], "1970-01-01T00:00:00Z");
        assert_eq!(v["containerStatuses"][0]["ready"], false);
        assert_eq!(v["podIP"], "127.0.0.1");
        assert!(v.get("initContainerStatuses").is_none());
    }

    #[test]
    fn running_status_is_ready() {
        let now = Timestamp::UNIX_EPOCH;
        let st = pod_status(Phase::Running, now, &[], &[running("main")], None, now);
        let v = serde_json::to_value(&st).unwrap();
        let ready = v["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert!(v["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
    }
}
