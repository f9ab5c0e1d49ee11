//! Writing an AgentRun's status and telling people about it: one server-side-apply status
//! patch, skipped when nothing changed (also when the cached object has not yet caught up
//! with this operator's own last write), and an Event on every phase change.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use tracing::{Instrument, info, warn};

use super::build;
use super::error::{Error, kube_err};
use crate::context::Context;
use crate::controller::apply_status;
use crate::metrics::{Controller, PhaseLabels};
use crane_api::{AgentRun, AgentRunPhase, AgentRunStatus};

/// Writes statuses and their Events.
pub struct StatusWriter {
    ctx: Arc<Context>,
    /// Runs whose status could not be written even reduced: stopped, and not tried again.
    given_up: Mutex<HashSet<String>>,
    /// Per run uid: the resourceVersion a status write was based on and a hash of what was
    /// written, so a reconcile on a cached object that has not seen that write yet does not
    /// write the same status again.
    written: Mutex<HashMap<String, (String, u64)>>,
}

impl StatusWriter {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self {
            ctx,
            given_up: Mutex::new(HashSet::new()),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets a deleted run.
    pub fn forget(&self, uid: &str) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        self.given_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// Server-side-applies `status` — reduced to fit the object's size limit — when it
    /// differs from `old` (what the object holds); publishes an Event on a phase change.
    pub async fn write(
        &self,
        run: &AgentRun,
        old: &AgentRunStatus,
        status: AgentRunStatus,
    ) -> Result<(), Error> {
        let uid = run.metadata.uid.clone().unwrap_or_default();
        if self
            .given_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&uid)
        {
            return Ok(());
        }
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = build::fit(status, rest_bytes(run), run.metadata.generation, &now);
        if &status == old {
            return Ok(());
        }
        let base = run.metadata.resource_version.clone().unwrap_or_default();
        let hash = status_hash(&status);
        {
            let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            if written
                .get(&uid)
                .is_some_and(|(rv, h)| *rv == base && *h == hash)
            {
                return Ok(());
            }
        }
        let api: Api<AgentRun> = Api::namespaced(
            self.ctx.client.clone(),
            &run.namespace().unwrap_or_default(),
        );
        match apply_status(&api, &run.name_any(), &status).await {
            Ok(()) => {}
            Err(e) if is_too_large(&e) => return self.give_up(run, &api, &uid, &e, &now).await,
            Err(e) => return Err(kube_err("writing the status")(e)),
        }
        self.ctx
            .metrics
            .api_write(Controller::agentrun, "apply_status");
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid, (base, hash));
        if status.phase != old.phase {
            let phase = status.phase.unwrap_or_default();
            // A run whose steps ran before its Running status was written still went through
            // Running: its Event is published all the same.
            if phase.is_terminal()
                && !status.steps.is_empty()
                && old
                    .phase
                    .is_none_or(|p| matches!(p, AgentRunPhase::Pending | AgentRunPhase::Planning))
            {
                self.publish(run, AgentRunPhase::Running, &status).await;
            }
            if phase.is_terminal() {
                self.ctx
                    .metrics
                    .runs_finished
                    .get_or_create(&PhaseLabels {
                        phase: phase_label(phase),
                    })
                    .inc();
                if self.ctx.config.telemetry.traced
                    && let Some(root) = super::trace::root_span(run, &status)
                {
                    crane_telemetry::emit_root_span(root);
                }
            }
            info!(phase = phase_label(phase), "phase changed");
            self.publish(run, phase, &status).await;
        }
        Ok(())
    }

    /// The apiserver refuses the object as too large even with a reduced status: stop the
    /// run in the engine, write the smallest status that says why, and publish it as an
    /// Event too (an Event is its own object, so it gets through when the status cannot).
    async fn give_up(
        &self,
        run: &AgentRun,
        api: &Api<AgentRun>,
        uid: &str,
        error: &kube::Error,
        now: &Time,
    ) -> Result<(), Error> {
        self.given_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_owned());
        let mut redis = self.ctx.redis();
        let keys = crane_engine::RunKeys::new(&run.namespace().unwrap_or_default(), uid);
        if let Err(e) = match keys {
            Ok(keys) => crane_engine::cancel_run(&mut redis, &keys).await.map(drop),
            Err(e) => Err(e),
        } {
            warn!(error = %e, "cannot stop the run whose status is too large");
        }
        let why = crane_core::text::truncate(&error.to_string(), 300);
        let last = build::too_large(run, &why, now);
        warn!(error = %why, "the status does not fit the object; the run is stopped");
        if let Err(e) = apply_status(api, &run.name_any(), &last).await {
            warn!(error = %e, "even the smallest status cannot be written");
        }
        self.publish(run, AgentRunPhase::Failed, &last).await;
        Ok(())
    }

    /// An Event for a phase change; a failure to publish is logged, never fatal.
    async fn publish(&self, run: &AgentRun, phase: AgentRunPhase, status: &AgentRunStatus) {
        let (type_, reason, note) = match phase {
            AgentRunPhase::Failed => (
                EventType::Warning,
                build::failed_reason(status).unwrap_or("Failed").to_owned(),
                status.error.clone(),
            ),
            AgentRunPhase::Succeeded => (
                EventType::Normal,
                "Succeeded".to_owned(),
                Some(format!(
                    "{} steps succeeded",
                    status.progress.as_deref().unwrap_or("?")
                )),
            ),
            AgentRunPhase::Pending | AgentRunPhase::Planning => (
                EventType::Normal,
                phase_label(phase).to_owned(),
                build::condition(status, crane_api::CONDITION_PLANNED).map(|c| c.message.clone()),
            ),
            p => (
                EventType::Normal,
                phase_label(p).to_owned(),
                status.progress.clone().map(|p| format!("progress {p}")),
            ),
        };
        let event = KubeEvent {
            type_,
            reason,
            note: note.map(|n| crane_core::text::truncate(&n, 1000)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        match self
            .ctx
            .publish_unique(&event, &run.object_ref(&()))
            .instrument(tracing::Span::current())
            .await
        {
            Ok(()) => self.ctx.metrics.api_write(Controller::agentrun, "event"),
            Err(e) => warn!(error = %e, "cannot publish the Event"),
        }
    }
}

/// JSON bytes of the object without its status (spec, metadata as cached).
fn rest_bytes(run: &AgentRun) -> usize {
    let mut rest = run.clone();
    rest.status = None;
    serde_json::to_vec(&rest).map_or(0, |v| v.len())
}

/// Whether the apiserver (or etcd behind it) refused a write for its size.
fn is_too_large(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(e) => e.code == 413 || e.message.to_lowercase().contains("too large"),
        _ => false,
    }
}

/// A hash of a status as it is written (serialised), to recognise a repeated write.
fn status_hash(status: &AgentRunStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(status).unwrap_or_default().hash(&mut h);
    h.finish()
}

pub fn phase_label(phase: AgentRunPhase) -> &'static str {
    match phase {
        AgentRunPhase::Pending => "Pending",
        AgentRunPhase::Planning => "Planning",
        AgentRunPhase::AwaitingApproval => "AwaitingApproval",
        AgentRunPhase::Running => "Running",
        AgentRunPhase::Succeeded => "Succeeded",
        AgentRunPhase::Failed => "Failed",
        AgentRunPhase::Cancelled => "Cancelled",
    }
}
