//! What the AgentRun phases ask of the Kubernetes API besides their own object, behind one
//! small trait: the real implementation talks to the apiserver (and counts its writes), and
//! the phases' unit tests use an in-memory one, so every phase runs without a cluster.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::{Resource, ResourceExt};

use super::error::{Error, kube_err};
use crate::context::FIELD_MANAGER;
use crate::metrics::{Controller, Metrics};
use crate::tenancy::Tenancy;
use crane_api::{AgentRun, Approval, ApprovalStatus, WorkerPool};

/// The cluster as the phases see it.
pub trait Cluster: Send + Sync {
    /// WorkerPool `name` in `ns`, if it exists: the tools it serves (empty: any). A pool
    /// that does not deserialise still exists (its own status says what is wrong).
    fn pool_tools(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Vec<String>>, Error>> + Send;
    /// Creates or updates a Job by server-side apply.
    fn apply_job(&self, job: &Job) -> impl Future<Output = Result<(), Error>> + Send;
    /// Job `name` in `ns`, if it exists.
    fn job(&self, ns: &str, name: &str) -> impl Future<Output = Result<Option<Job>, Error>> + Send;
    /// Makes sure namespace `ns`'s pods can log in to Redis (its user and `crane-redis`
    /// Secret) and that its Redis keys are this namespace's, before anything of it is written.
    fn namespace_login(&self, ns: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Deletes AgentRun `name` in `ns` (absent is fine).
    fn delete_run(&self, ns: &str, name: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// The Approvals of run `run` in `ns`.
    fn approvals(
        &self,
        ns: &str,
        run: &str,
    ) -> impl Future<Output = Result<Vec<Approval>, Error>> + Send;
    /// Creates an Approval (one that exists already is left as it is).
    fn create_approval(
        &self,
        approval: &Approval,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Records what the operator did with Approval `name`'s decision.
    fn approval_status(
        &self,
        ns: &str,
        name: &str,
        status: &ApprovalStatus,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Deletes Approval `name` (absent is fine).
    fn delete_approval(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// An Event on the run (a decision applied); a failure is logged, never fatal.
    fn event(
        &self,
        run: &AgentRun,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> impl Future<Output = ()> + Send;
}

/// The real cluster.
pub struct KubeCluster {
    pub client: kube::Client,
    pub metrics: Arc<Metrics>,
    pub tenancy: Arc<Tenancy>,
    pub ctx: Arc<crate::context::Context>,
}

impl Cluster for KubeCluster {
    async fn pool_tools(&self, ns: &str, name: &str) -> Result<Option<Vec<String>>, Error> {
        let pools: Api<DeserializeGuard<WorkerPool>> = Api::namespaced(self.client.clone(), ns);
        let pool = pools
            .get_opt(name)
            .await
            .map_err(kube_err("reading the WorkerPool"))?;
        Ok(pool.map(|p| p.0.ok().and_then(|p| p.spec.tools).unwrap_or_default()))
    }

    async fn apply_job(&self, job: &Job) -> Result<(), Error> {
        let ns = job.namespace().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        jobs.patch(
            &job.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(job),
        )
        .await
        .map_err(kube_err("applying the planner Job"))?;
        self.metrics.api_write(Controller::agentrun, "apply");
        Ok(())
    }

    async fn job(&self, ns: &str, name: &str) -> Result<Option<Job>, Error> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
        jobs.get_opt(name)
            .await
            .map_err(kube_err("reading the planner Job"))
    }

    async fn namespace_login(&self, ns: &str) -> Result<(), Error> {
        self.tenancy
            .ensure(ns)
            .await
            .map(drop)
            .map_err(Error::Tenancy)
    }

    async fn delete_run(&self, ns: &str, name: &str) -> Result<(), Error> {
        let api: Api<AgentRun> = Api::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                self.metrics.api_write(Controller::agentrun, "delete");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(kube_err("deleting the expired AgentRun")(e)),
        }
    }

    async fn approvals(&self, ns: &str, run: &str) -> Result<Vec<Approval>, Error> {
        let api: Api<Approval> = Api::namespaced(self.client.clone(), ns);
        let lp =
            kube::api::ListParams::default().labels(&format!("{}={run}", super::gates::LABEL_RUN));
        api.list(&lp)
            .await
            .map(|l| l.items)
            .map_err(kube_err("listing the run's Approvals"))
    }

    async fn create_approval(&self, approval: &Approval) -> Result<(), Error> {
        let ns = approval.namespace().unwrap_or_default();
        let api: Api<Approval> = Api::namespaced(self.client.clone(), &ns);
        match api
            .create(&kube::api::PostParams::default(), approval)
            .await
        {
            Ok(_) => {
                self.metrics.api_write(Controller::agentrun, "create");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(kube_err("creating an Approval")(e)),
        }
    }

    async fn approval_status(
        &self,
        ns: &str,
        name: &str,
        status: &ApprovalStatus,
    ) -> Result<(), Error> {
        let api: Api<Approval> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!({"status": status});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err("recording an Approval's outcome"))?;
        self.metrics.api_write(Controller::agentrun, "status");
        Ok(())
    }

    async fn delete_approval(&self, ns: &str, name: &str) -> Result<(), Error> {
        let api: Api<Approval> = Api::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                self.metrics.api_write(Controller::agentrun, "delete");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(kube_err("deleting an open Approval")(e)),
        }
    }

    async fn event(&self, run: &AgentRun, warning: bool, reason: &str, note: &str) {
        use kube::runtime::events::{Event, EventType};
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(crane_core::text::truncate(note, 1000)),
            action: "Decide".to_owned(),
            secondary: None,
        };
        match self.ctx.publish_unique(&event, &run.object_ref(&())).await {
            Ok(()) => self.metrics.api_write(Controller::agentrun, "event"),
            Err(e) => tracing::warn!(error = %e, "cannot publish the Event"),
        }
    }
}
