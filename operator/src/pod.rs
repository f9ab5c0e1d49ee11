//! The pod every Job the operator creates runs (planner and worker Jobs): Pod Security
//! `restricted` settings, no service-account token, no service links, never restarted in
//! place. In one place so the two Job builders cannot drift apart.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, SecretKeySelector, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The Secret, in every namespace Crane runs in, holding that namespace's own Redis user
/// (keys `username` and `password`); the operator creates and rotates it.
pub const REDIS_SECRET: &str = "crane-redis";

/// How planner and worker containers get their namespace's Redis identity: environment
/// variables from [`REDIS_SECRET`] (never part of a URL or an argument).
pub fn redis_credentials_env() -> Vec<EnvVar> {
    [
        ("CRANE_REDIS_USERNAME", "username"),
        ("CRANE_REDIS_PASSWORD", "password"),
    ]
    .into_iter()
    .map(|(var, key)| EnvVar {
        name: var.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: REDIS_SECRET.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    })
    .collect()
}

/// The hardened pod running `container` (its securityContext is set here), labelled `labels`.
/// Callers add placement (nodeSelector, tolerations) to the returned spec when they have any.
pub fn hardened_pod(labels: BTreeMap<String, String>, mut container: Container) -> PodTemplateSpec {
    container.security_context = Some(restricted_container_security());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            restart_policy: Some("Never".to_owned()),
            // Planner and worker pods talk to Redis only, never to the Kubernetes API.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(restricted_pod_security()),
            containers: vec![container],
            ..PodSpec::default()
        }),
    }
}

/// The non-root user and group the pods run as (distroless `nonroot`).
pub const RUN_AS_USER: i64 = 65532;

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

/// Pod-level settings: non-root, RuntimeDefault seccomp, and volumes group-owned by the
/// pod's group: the kubelet writes Secret volumes as root with the mode asked for (0440 for
/// tool Secrets), which the non-root user reads only through this `fsGroup`.
fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        fs_group: Some(RUN_AS_USER),
        seccomp_profile: Some(runtime_default()),
        ..PodSecurityContext::default()
    }
}

/// Container-level settings: no privilege escalation, read-only root, every capability dropped.
fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}
