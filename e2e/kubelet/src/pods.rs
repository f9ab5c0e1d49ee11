//! One task per pod: prepare each container (environment, program, ServiceAccount token),
//! run init containers in order then the others together, restart per `restartPolicy`,
//! report status after every change, and on deletion SIGTERM → grace → SIGKILL, report the
//! final status and remove the pod with grace 0. The task owns the pod's process groups, so
//! when it ends (or is dropped) nothing of the pod keeps running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{mpsc, watch};

use crate::env::{self, EnvError, Sources};
use crate::process::{Ended, Group};
use crate::program::{self, Program, ProgramError};
use crate::status::{self, ContainerRecord, Exit, Phase, State};
use crate::token::{self, PodRef, TokenError};

/// Grace given to processes when the kubelet itself shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// First and largest restart delay (the real kubelet uses 10 s .. 5 min; tests want speed).
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A container that ran this long before exiting restarts without accumulated backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// How long to wait before retrying a pod whose configuration could not be resolved.
const PREPARE_RETRY: Duration = Duration::from_secs(2);

/// Why a pod must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The pod was deleted: kill with this grace, report, then remove the object.
    Delete { grace: Duration },
    /// The kubelet is exiting: kill quickly and leave the object alone.
    Shutdown,
}

/// What every pod task shares.
pub struct Ctx {
    pub client: kube::Client,
    pub node_name: String,
    pub pods_dir: PathBuf,
    pub crane_bin_dir: PathBuf,
    /// Apiserver URL and CA handed to pods in their kubeconfig.
    pub server: String,
    pub ca_pem: String,
    /// Host PATH for processes whose pod does not set one.
    pub path: String,
    pub service_port: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot read {kind} {name:?}: {source}")]
    Fetch {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot create pod directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A container ready to start.
#[derive(Debug, Clone)]
struct Prepared {
    index: usize,
    init: bool,
    program: Program,
    env: Vec<(String, String)>,
    log: PathBuf,
    pid_file: PathBuf,
}

/// What a container supervisor tells its pod task.
#[derive(Debug)]
enum Update {
    Started {
        init: bool,
        index: usize,
        at: Timestamp,
    },
    Exited {
        init: bool,
        index: usize,
        exit: Exit,
        restarting: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    Always,
    OnFailure,
    Never,
}

impl Restart {
    fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => Restart::Never,
            Some("OnFailure") => Restart::OnFailure,
            _ => Restart::Always,
        }
    }

    fn restarts(self, exit_code: i32) -> bool {
        match self {
            Restart::Always => true,
            Restart::OnFailure => exit_code != 0,
            Restart::Never => false,
        }
    }
}

/// The pod's directory under `pods_dir`: `<namespace>_<name>`. Both parts are DNS names the
/// apiserver validated, so neither can hold `/` or `_`; anything else is refused anyway.
pub fn pod_dir(pods_dir: &Path, namespace: &str, name: &str) -> Option<PathBuf> {
    let ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    (ok(namespace) && ok(name)).then(|| pods_dir.join(format!("{namespace}_{name}")))
}

/// Resolve `$(VAR)`s, environment, program and credentials for every container of the pod.
async fn prepare(ctx: &Ctx, pod: &Pod, dir: &Path) -> Result<Vec<Prepared>, PrepareError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    std::fs::create_dir_all(dir).map_err(|source| PrepareError::Dir {
        path: dir.display().to_string(),
        source,
    })?;

    let all: Vec<(bool, usize, &Container)> = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (true, i, c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (false, i, c)),
        )
        .collect();

    let mut sources = Sources::default();
    for (_, _, c) in &all {
        let (secrets, config_maps) = env::referenced_sources(c);
        for s in secrets {
            if sources.secrets.contains_key(&s) {
                continue;
            }
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
            let got = api
                .get_opt(&s)
                .await
                .map_err(|source| PrepareError::Fetch {
                    kind: "secret",
                    name: s.clone(),
                    source,
                })?;
            if let Some(secret) = got {
                let data: BTreeMap<String, Vec<u8>> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                sources.secrets.insert(s, data);
            }
        }
        for m in config_maps {
            if sources.config_maps.contains_key(&m) {
                continue;
            }
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
            let got = api
                .get_opt(&m)
                .await
                .map_err(|source| PrepareError::Fetch {
                    kind: "configmap",
                    name: m.clone(),
                    source,
                })?;
            if let Some(cm) = got {
                sources.config_maps.insert(m, cm.data.unwrap_or_default());
            }
        }
    }

    let credentials = if wants_token(ctx, pod, ns).await? {
        let sa = spec.service_account_name.as_deref().unwrap_or("default");
        let pref = PodRef {
            namespace: ns,
            name,
            uid,
            service_account: sa,
        };
        Some(
            token::refresh(
                &ctx.client,
                &pref,
                &dir.join("serviceaccount"),
                &ctx.server,
                &ctx.ca_pem,
            )
            .await?,
        )
    } else {
        None
    };

    let mut base: Vec<(String, String)> = vec![
        ("PATH".into(), ctx.path.clone()),
        ("HOME".into(), dir.display().to_string()),
        ("HOSTNAME".into(), name.to_owned()),
        ("KUBERNETES_SERVICE_HOST".into(), status::LOOPBACK.into()),
        ("KUBERNETES_SERVICE_PORT".into(), ctx.service_port.clone()),
    ];
    if let Some(c) = &credentials {
        base.push(("KUBECONFIG".into(), c.kubeconfig.display().to_string()));
    }

    let mut out = Vec::with_capacity(all.len());
    for (init, index, c) in all {
        let own = env::container_env(pod, c, &sources)?;
        let mut full = base.clone();
        for (k, v) in own {
            if let Some(slot) = full.iter_mut().find(|(n, _)| *n == k) {
                slot.1 = v;
            } else {
                full.push((k, v));
            }
        }
        let command = env::expand_all(c.command.as_deref().unwrap_or_default(), &full);
        let args = env::expand_all(c.args.as_deref().unwrap_or_default(), &full);
        let image = c.image.as_deref().unwrap_or_default();
        let program = program::resolve(&c.name, image, &command, &args, &ctx.crane_bin_dir)?;
        out.push(Prepared {
            index,
            init,
            program,
            env: full,
            log: dir.join(format!("{}.log", c.name)),
            pid_file: dir.join(format!("{}.pid", c.name)),
        });
    }
    Ok(out)
}

/// The pod field wins; unset, the ServiceAccount's; unset too, true (Kubernetes' rule).
async fn wants_token(ctx: &Ctx, pod: &Pod, ns: &str) -> Result<bool, PrepareError> {
    let spec = pod.spec.as_ref();
    if let Some(v) = spec.and_then(|s| s.automount_service_account_token) {
        return Ok(v);
    }
    let sa = spec
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("default");
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
    let got = api
        .get_opt(sa)
        .await
        .map_err(|source| PrepareError::Fetch {
            kind: "serviceaccount",
            name: sa.to_owned(),
            source,
        })?;
    Ok(got.and_then(|s| s.automount_service_account_token) != Some(false))
}

/// Resolves when a stop is requested; a dropped sender means the kubelet is going away.
async fn stopped(rx: &mut watch::Receiver<Option<Stop>>) -> Stop {
    loop {
        let current = *rx.borrow_and_update();
        if let Some(s) = current {
            return s;
        }
        if rx.changed().await.is_err() {
            return Stop::Shutdown;
        }
    }
}

fn requested(rx: &watch::Receiver<Option<Stop>>) -> Option<Stop> {
    *rx.borrow()
}

fn exit_of(ended: Ended, started_at: Timestamp, message: Option<String>) -> Exit {
    Exit {
        exit_code: ended.exit_code,
        signal: ended.signal,
        reason: Exit::reason_for(ended.exit_code, ended.signal).to_owned(),
        message,
        started_at,
        finished_at: Timestamp::now(),
    }
}

/// Run one container until it ends for good, restarting it per `policy`.
async fn supervise(
    c: Prepared,
    policy: Restart,
    mut stop: watch::Receiver<Option<Stop>>,
    tx: mpsc::UnboundedSender<Update>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        if requested(&stop).is_some() {
            return;
        }
        let started_at = Timestamp::now();
        let (exit, ran) = match Group::spawn(
            &c.program,
            &c.env,
            log_dir(&c.log),
            &c.log,
            &c.pid_file,
        ) {
            Err(e) => {
                let msg = error_chain(&e);
                tracing::warn!(program = %c.program.path.display(), error = %msg, "container failed to start");
                // 127 is what a shell reports for a command it cannot run.
                let exit = Exit {
                    exit_code: 127,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(msg),
                    started_at,
                    finished_at: Timestamp::now(),
                };
                (exit, Duration::ZERO)
            }
            Ok(mut group) => {
                let _ = tx.send(Update::Started {
                    init: c.init,
                    index: c.index,
                    at: started_at,
                });
                let clock = tokio::time::Instant::now();
                let ended = tokio::select! {
                    ended = group.wait() => ended,
                    why = stopped(&mut stop) => match why {
                        Stop::Delete { grace } => group.terminate(grace).await,
                        Stop::Shutdown => group.terminate(SHUTDOWN_GRACE).await,
                    },
                };
                drop(group);
                (exit_of(ended, started_at, None), clock.elapsed())
            }
        };
        let restarting = requested(&stop).is_none() && policy.restarts(exit.exit_code);
        let _ = tx.send(Update::Exited {
            init: c.init,
            index: c.index,
            exit,
            restarting,
        });
        if !restarting {
            return;
        }
        if ran >= BACKOFF_RESET {
            backoff = BACKOFF_START;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn log_dir(log: &Path) -> &Path {
    log.parent().unwrap_or(Path::new("/"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Everything the pod task reports.
struct Report {
    api: Api<Pod>,
    name: String,
    start: Timestamp,
    init: Vec<ContainerRecord>,
    main: Vec<ContainerRecord>,
    message: Option<String>,
}

impl Report {
    fn apply(&mut self, u: Update) {
        let (init, index) = match &u {
            Update::Started { init, index, .. } | Update::Exited { init, index, .. } => {
                (*init, *index)
            }
        };
        let list = if init { &mut self.init } else { &mut self.main };
        let Some(rec) = list.get_mut(index) else {
            return;
        };
        match u {
            Update::Started { at, .. } => {
                rec.state = State::Running { started_at: at };
            }
            Update::Exited {
                exit, restarting, ..
            } => {
                if restarting {
                    rec.last_terminated = Some(exit);
                    rec.restart_count += 1;
                    rec.state = State::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: None,
                    };
                } else {
                    rec.state = State::Terminated(exit);
                }
            }
        }
    }

    fn waiting_all(&mut self, reason: &str, message: &str) {
        for rec in self.init.iter_mut().chain(self.main.iter_mut()) {
            if !matches!(rec.state, State::Terminated(_)) {
                rec.state = State::Waiting {
                    reason: reason.to_owned(),
                    message: Some(message.to_owned()),
                };
            }
        }
    }

    async fn send(&self, phase: Phase) {
        let status = status::pod_status(
            phase,
            self.start,
            &self.init,
            &self.main,
            self.message.as_deref(),
            Timestamp::now(),
        );
        let patch = serde_json::json!({ "status": status });
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "status update failed"),
        }
    }

    fn live_phase(&self) -> Phase {
        let init_done = self
            .init
            .iter()
            .all(|c| matches!(&c.state, State::Terminated(e) if e.exit_code == 0));
        if !init_done {
            let started = self
                .init
                .iter()
                .any(|c| !matches!(c.state, State::Waiting { .. }) || c.restart_count > 0);
            return if started {
                Phase::Running
            } else {
                Phase::Pending
            };
        }
        status::phase(&self.main, false)
    }

    /// Terminal phase: every container's exit decides, and a container that never ran (or an
    /// init container that failed) makes the pod Failed.
    fn final_phase(&self) -> Phase {
        let init_failed = self
            .init
            .iter()
            .any(|c| !matches!(&c.state, State::Terminated(e) if e.exit_code == 0));
        let all_terminated = self
            .main
            .iter()
            .all(|c| matches!(c.state, State::Terminated(_)));
        if init_failed || !all_terminated {
            return Phase::Failed;
        }
        status::phase(&self.main, true)
    }
}

/// Remove a pod object for good, only if it is still the one we ran (uid precondition).
pub async fn force_delete(client: &kube::Client, pod: &Pod) {
    let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %name, error = %e, "force delete failed"),
    }
}

/// Mark a pod Failed without running it (its process was lost with a previous kubelet).
pub async fn mark_lost(client: &kube::Client, pod: &Pod) {
    let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return;
    };
    let report = Report {
        api: Api::namespaced(client.clone(), ns),
        name: name.clone(),
        start: Timestamp::now(),
        init: Vec::new(),
        main: records(
            pod.spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default(),
        ),
        message: Some("process lost: the process kubelet restarted".into()),
    };
    report.send(Phase::Failed).await;
}

fn records(cs: &[Container]) -> Vec<ContainerRecord> {
    cs.iter()
        .map(|c| ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or_default()))
        .collect()
}

/// The pod task. Returns when the pod reached a terminal phase, was deleted, or the kubelet
/// shuts down; every process it started is dead by then.
pub async fn run(ctx: Arc<Ctx>, pod: Pod, mut stop: watch::Receiver<Option<Stop>>) {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = Restart::of(&pod);
    let mut report = Report {
        api: Api::namespaced(ctx.client.clone(), &ns),
        name: name.clone(),
        start: Timestamp::now(),
        init: records(spec.init_containers.as_deref().unwrap_or_default()),
        main: records(&spec.containers),
        message: None,
    };
    let Some(dir) = pod_dir(&ctx.pods_dir, &ns, &name) else {
        report.message = Some(format!("pod name {ns}/{name} cannot name a directory"));
        report.send(Phase::Failed).await;
        return;
    };
    report.send(Phase::Pending).await;

    let prepared = loop {
        let attempt = tokio::select! {
            r = prepare(&ctx, &pod, &dir) => r,
            why = stopped(&mut stop) => return finish(&ctx, &pod, &report, why).await,
        };
        match attempt {
            Ok(p) => break p,
            Err(e) => {
                let msg = error_chain(&e);
                tracing::info!(pod = %format!("{ns}/{name}"), error = %msg, "cannot start pod yet");
                report.waiting_all("CreateContainerConfigError", &msg);
                report.send(Phase::Pending).await;
                tokio::select! {
                    () = tokio::time::sleep(PREPARE_RETRY) => {}
                    why = stopped(&mut stop) => return finish(&ctx, &pod, &report, why).await,
                }
            }
        }
    };
    let needs_token = prepared
        .iter()
        .any(|p| p.env.iter().any(|(k, _)| k == "KUBECONFIG"));

    let (tx, mut rx) = mpsc::unbounded_channel();
    // Init containers one at a time; a failure ends the pod unless the policy retries it.
    let init_policy = if policy == Restart::Never {
        Restart::Never
    } else {
        Restart::OnFailure
    };
    for c in prepared.iter().filter(|c| c.init) {
        let mut task = tokio::spawn(supervise(c.clone(), init_policy, stop.clone(), tx.clone()));
        loop {
            tokio::select! {
                Some(u) = rx.recv() => {
                    report.apply(u);
                    report.send(report.live_phase()).await;
                }
                _ = &mut task => break,
            }
        }
        while let Ok(u) = rx.try_recv() {
            report.apply(u);
        }
        let ok = matches!(&report.init[c.index].state, State::Terminated(e) if e.exit_code == 0);
        if !ok || requested(&stop).is_some() {
            let why = requested(&stop);
            return match why {
                Some(why) => finish(&ctx, &pod, &report, why).await,
                None => report.send(Phase::Failed).await,
            };
        }
    }

    let mut tasks = Vec::new();
    for c in prepared.iter().filter(|c| !c.init) {
        tasks.push(tokio::spawn(supervise(
            c.clone(),
            policy,
            stop.clone(),
            tx.clone(),
        )));
    }
    drop(tx);
    let mut refresh = tokio::time::interval_at(
        tokio::time::Instant::now() + token::REFRESH_AFTER,
        token::REFRESH_AFTER,
    );
    loop {
        tokio::select! {
            u = rx.recv() => match u {
                Some(u) => {
                    report.apply(u);
                    // Coalesce a burst of updates into one patch.
                    while let Ok(u) = rx.try_recv() {
                        report.apply(u);
                    }
                    if requested(&stop).is_none() {
                        report.send(report.live_phase()).await;
                    }
                }
                None => break,
            },
            _ = refresh.tick(), if needs_token => {
                let pref = PodRef {
                    namespace: &ns,
                    name: &name,
                    uid: pod.metadata.uid.as_deref().unwrap_or_default(),
                    service_account: spec.service_account_name.as_deref().unwrap_or("default"),
                };
                if let Err(e) = token::refresh(&ctx.client, &pref, &dir.join("serviceaccount"), &ctx.server, &ctx.ca_pem).await {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %error_chain(&e), "token refresh failed");
                }
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    match requested(&stop) {
        Some(why) => finish(&ctx, &pod, &report, why).await,
        None => report.send(report.final_phase()).await,
    }
}

/// After a stop: on deletion report the final status and remove the object; on kubelet
/// shutdown leave the object as it is.
async fn finish(ctx: &Ctx, pod: &Pod, report: &Report, why: Stop) {
    if let Stop::Delete { .. } = why {
        report.send(report.final_phase()).await;
        force_delete(&ctx.client, pod).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_dir_refuses_names_that_escape() {
        let base = Path::new("/state/pods");
        assert_eq!(
            pod_dir(base, "ns", "job-abc.1"),
            Some(PathBuf::from("/state/pods/ns_job-abc.1"))
        );
        for (ns, name) in [
            ("..", "x"),
            ("ns", ".."),
            ("ns", "a/b"),
            ("", "x"),
            ("ns", ""),
            ("n_s", "x"),
            ("ns", "a\0b"),
            ("ns", "é"),
        ] {
            assert_eq!(pod_dir(base, ns, name), None, "{ns:?}/{name:?}");
        }
    }

    #[test]
    fn restart_policy_rules() {
        assert!(Restart::Always.restarts(0));
        assert!(Restart::Always.restarts(1));
        assert!(!Restart::OnFailure.restarts(0));
        assert!(Restart::OnFailure.restarts(3));
        assert!(!Restart::Never.restarts(3));
        let mut pod = Pod::default();
        assert_eq!(Restart::of(&pod), Restart::Always);
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            restart_policy: Some("bogus".into()),
            ..Default::default()
        });
        assert_eq!(Restart::of(&pod), Restart::Always);
    }

    #[test]
    fn a_failed_container_that_restarts_keeps_the_pod_running() {
        let client_free = |restarting| {
            let mut rec = ContainerRecord::new("c", "busybox");
            let exit = Exit {
                exit_code: 1,
                signal: None,
                reason: "Error".into(),
                message: None,
                started_at: Timestamp::UNIX_EPOCH,
                finished_at: Timestamp::UNIX_EPOCH,
            };
            if restarting {
                rec.last_terminated = Some(exit);
                rec.restart_count = 1;
                rec.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: None,
                };
            } else {
                rec.state = State::Terminated(exit);
            }
            rec
        };
        assert_eq!(status::phase(&[client_free(true)], false), Phase::Running);
        assert_eq!(status::phase(&[client_free(false)], true), Phase::Failed);
    }
}
