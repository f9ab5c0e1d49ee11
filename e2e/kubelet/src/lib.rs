//! A process kubelet for tests: plays one Node against a real kube-apiserver, binds
//! unscheduled pods to it and runs their containers as local processes (see `e2e/README.md`).
//! It owns the Node object, the pods bound to it and every process it starts; when it exits,
//! none of those processes survive.

pub mod env;
pub mod node;
pub mod pods;
pub mod process;
pub mod program;
pub mod status;
pub mod token;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pods::{Ctx, Stop};

/// Field manager for everything this kubelet applies.
pub const FIELD_MANAGER: &str = "crane-proc-kubelet";

const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a shutdown waits for pod tasks to kill their processes.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot register node {node}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read the CA file {path}")]
    Ca {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the pod watch ended unexpectedly")]
    WatchEnded,
}

/// What the kubelet is told on its command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    /// `<state>/pods/<ns>_<pod>/` holds each pod's logs, pid files and credentials.
    pub state_dir: PathBuf,
    pub crane_bin_dir: PathBuf,
    /// PEM CA of the apiserver, handed to pods in their kubeconfig.
    pub ca_file: PathBuf,
    /// Reported as the Node's kubeletVersion.
    pub version: String,
}

enum Tracked {
    Active(watch::Sender<Option<Stop>>, JoinHandle<()>),
    Done,
}

/// Run until `shutdown` resolves, then kill every pod process and return.
pub async fn run(
    client: kube::Client,
    server: String,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let ca_pem = std::fs::read_to_string(&settings.ca_file).map_err(|source| Error::Ca {
        path: settings.ca_file.display().to_string(),
        source,
    })?;
    let service_port = server
        .rsplit(':')
        .next()
        .map(|p| p.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| "443".into());
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        node_name: settings.node_name.clone(),
        pods_dir: settings.state_dir.join("pods"),
        crane_bin_dir: settings.crane_bin_dir.clone(),
        server,
        ca_pem,
        path: std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        service_port,
    });

    node::register(&client, &settings.node_name, &settings.version)
        .await
        .map_err(|source| Error::Register {
            node: settings.node_name.clone(),
            source,
        })?;
    let heartbeat = {
        let client = client.clone();
        let name = settings.node_name.clone();
        let version = settings.version.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = node::heartbeat(&client, &name, &version).await {
                    tracing::warn!(error = %e, "node heartbeat failed");
                }
            }
        })
    };
    tracing::info!(node = %settings.node_name, "process kubelet ready");

    let api: Api<Pod> = Api::all(client.clone());
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            ev = events.next() => match ev {
                None => break Err(Error::WatchEnded),
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch error; retrying"),
                Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    handle(&ctx, &mut tracked, pod).await;
                }
                Some(Ok(watcher::Event::Delete(pod))) => {
                    // Gone without us (force-deleted): kill at once.
                    if let Some(Tracked::Active(stop, _)) = pod.metadata.uid.as_ref().and_then(|u| tracked.get(u)) {
                        stop.send_replace(Some(Stop::Delete { grace: Duration::ZERO }));
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    };

    heartbeat.abort();
    let mut tasks = Vec::new();
    for (_, t) in tracked.drain() {
        if let Tracked::Active(stop, task) = t {
            stop.send_replace(Some(Stop::Shutdown));
            tasks.push(task);
        }
    }
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(SHUTDOWN_WAIT, all).await.is_err() {
        tracing::warn!("pod tasks did not finish in time; their process groups die with them");
    }
    result
}

async fn handle(ctx: &Arc<Ctx>, tracked: &mut HashMap<String, Tracked>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let Some(node) = node else {
        if !deleting && let Err(e) = node::bind(&ctx.client, &pod, &ctx.node_name).await {
            tracing::debug!(error = %e, pod = ?pod.metadata.name, "bind failed");
        }
        return;
    };
    if node != ctx.node_name {
        return;
    }
    let grace = Duration::from_secs(
        pod.metadata
            .deletion_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(30),
    );
    match tracked.get(&uid) {
        Some(Tracked::Active(stop, task)) if !task.is_finished() => {
            if deleting && stop.borrow().is_none() {
                stop.send_replace(Some(Stop::Delete { grace }));
            }
        }
        Some(_) => {
            if deleting {
                pods::force_delete(&ctx.client, &pod).await;
            }
        }
        None => {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            let terminal = matches!(phase, Some("Succeeded" | "Failed"));
            if deleting {
                // Nothing of it runs here: it only waits for us to let it go.
                tracked.insert(uid, Tracked::Done);
                pods::force_delete(&ctx.client, &pod).await;
                return;
            }
            if terminal {
                tracked.insert(uid, Tracked::Done);
                return;
            }
            let never =
                pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never");
            if phase == Some("Running") && never {
                tracked.insert(uid, Tracked::Done);
                pods::mark_lost(&ctx.client, &pod).await;
                return;
            }
            let (tx, rx) = watch::channel(None);
            let task = tokio::spawn(pods::run(ctx.clone(), pod, rx));
            tracked.insert(uid, Tracked::Active(tx, task));
        }
    }
}
