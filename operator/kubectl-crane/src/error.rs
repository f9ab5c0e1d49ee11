//! The plugin's one error type: one variant per thing that can go wrong, each worded for the
//! person at the terminal. Errors from the apiserver keep its message verbatim (an admission
//! policy's refusal is the answer the person needs), with what the plugin tried to do in
//! front when that helps (RBAC: which verb on which resource).

use std::fmt;

use crate::manifest::ManifestError;
use crate::select::SelectError;

/// What the plugin asked the apiserver: a verb on a resource, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub verb: &'static str,
    /// `<plural>.<group>`, e.g. `approvals.crane.dev`.
    pub resource: &'static str,
    /// None: cluster-scoped, or all namespaces.
    pub namespace: Option<String>,
}

impl Action {
    pub fn new(verb: &'static str, resource: &'static str, namespace: Option<&str>) -> Self {
        Self {
            verb,
            resource,
            namespace: namespace.map(str::to_owned),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => f.write_str(" (all namespaces or cluster-wide)"),
        }
    }
}

/// Everything `kubectl crane` reports as `error: ...`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load your kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("cannot find a kubeconfig (KUBECONFIG, ~/.kube/config) or in-cluster credentials: {0}")]
    InferConfig(#[source] kube::config::InferConfigError),
    #[error("cannot set up a client for the cluster: {0}")]
    Client(#[source] kube::Error),
    #[error("agentrun {run} not found in namespace {namespace}")]
    RunNotFound { run: String, namespace: String },
    #[error("agentrun {run} was deleted while it was being watched")]
    RunDeleted { run: String },
    #[error("{}", describe(.action, .source))]
    Kube {
        action: Action,
        #[source]
        source: kube::Error,
    },
    #[error("cannot watch the run ({action}): {message}")]
    Watch { action: Action, message: String },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Manifest {
        path: String,
        #[source]
        source: ManifestError,
    },
    #[error(transparent)]
    Request(ManifestError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(
        "cannot find out your user name, which a decision must carry (SelfSubjectReview, authentication.k8s.io/v1, failed: {reason}). \
         `kubectl auth whoami` shows it on Kubernetes 1.28 or newer; with it you can decide directly: \
         kubectl patch approval NAME --type merge -p '{{\"spec\":{{\"decision\":\"Approved\",\"decidedBy\":\"<your user name>\"}}}}'"
    )]
    WhoAmI { reason: String },
    #[error(
        "agentrun {run} is {phase}; only a Failed run can be retried (its failed and skipped steps run again)"
    )]
    NotRetryable { run: String, phase: String },
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

impl Error {
    /// An apiserver error while doing `action`.
    pub fn kube(action: Action, source: kube::Error) -> Self {
        Self::Kube { action, source }
    }
}

/// The message for a failed request: RBAC refusals say what was not allowed; other refusals
/// (admission policies, validation, conflicts) are the apiserver's message verbatim; a
/// missing resource type means Crane's CRDs are not installed; anything else says what was
/// tried and why it failed, with the whole chain of causes.
fn describe(action: &Action, source: &kube::Error) -> String {
    if let kube::Error::Api(status) = source {
        let message = status.message.trim();
        if status.is_forbidden() && is_rbac_refusal(message) {
            return format!(
                "you are not allowed to {action} (Kubernetes RBAC); ask your cluster admin for a Role that allows it. The apiserver said: {message}"
            );
        }
        if status.code == 404 && message.contains("could not find the requested resource") {
            return format!(
                "the cluster does not serve {} (are Crane's CRDs installed?): {message}",
                action.resource
            );
        }
        if !message.is_empty() {
            return message.to_owned();
        }
    }
    format!("cannot {action}: {}", chain(source))
}

/// An RBAC refusal reads `... is forbidden: User "x" cannot patch resource "approvals" ...`;
/// admission refusals are also 403 Forbidden but say which policy denied the request.
fn is_rbac_refusal(message: &str) -> bool {
    message.contains(" cannot ") && message.contains(" resource ")
}

/// An error and its causes, `a: b: c`, leaving out causes whose text the previous one
/// already contains.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, reason).with_code(code).boxed())
    }

    fn patch() -> Action {
        Action::new("patch", "approvals.crane.dev", Some("team-a"))
    }

    #[test]
    fn rbac_refusals_say_verb_and_resource() {
        let e = Error::kube(
            patch(),
            api(
                403,
                "Forbidden",
                r#"approvals.crane.dev "r-plan" is forbidden: User "bob" cannot patch resource "approvals" in API group "crane.dev" in the namespace "team-a""#,
            ),
        );
        let text = e.to_string();
        assert!(
            text.starts_with(
                "you are not allowed to patch approvals.crane.dev in namespace team-a (Kubernetes RBAC)"
            ),
            "{text}"
        );
        assert!(text.contains(r#"User "bob" cannot patch resource "approvals""#));
    }

    #[test]
    fn admission_refusals_are_verbatim() {
        let message = "approvals.crane.dev \"r-plan\" is forbidden: ValidatingAdmissionPolicy 'crane-approval-decisions' with binding 'crane-approval-decisions' denied request: bob is not among the approvers of this Approval: alice";
        let e = Error::kube(patch(), api(403, "Forbidden", message));
        assert_eq!(e.to_string(), message);
        let invalid = "AgentRun.crane.dev \"x\" is invalid: spec: Invalid value: \"object\": spec: set prompt, plan, or both";
        let e = Error::kube(patch(), api(422, "Invalid", invalid));
        assert_eq!(e.to_string(), invalid);
    }

    #[test]
    fn missing_crds_are_named() {
        let e = Error::kube(
            Action::new("list", "approvals.crane.dev", None),
            api(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
        assert_eq!(
            e.to_string(),
            "the cluster does not serve approvals.crane.dev (are Crane's CRDs installed?): the server could not find the requested resource"
        );
    }
}
