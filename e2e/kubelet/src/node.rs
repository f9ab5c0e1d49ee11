//! The one Node this kubelet plays: created with server-side apply, its Ready condition and
//! heartbeat kept fresh, and pods bound to it through `pods/{name}/binding` (no scheduler).

use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::FIELD_MANAGER;
use crate::status::LOOPBACK;

/// The Node object, as applied. No taints, so every pod fits.
pub fn node_manifest(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
                "crane.dev/process-kubelet": "true",
            },
        },
    })
}

/// The Node status with a fresh heartbeat.
pub fn node_status(name: &str, version: &str) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let cond = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let resources =
        json!({"cpu": "8", "memory": "16Gi", "pods": "250", "ephemeral-storage": "100Gi"});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "conditions": [
                cond("Ready", "True", "KubeletReady"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": LOOPBACK},
                {"type": "Hostname", "address": name},
            ],
            "capacity": resources,
            "allocatable": resources,
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "crane process kubelet",
                "containerRuntimeVersion": "process://local",
                "kubeletVersion": version, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
            },
        },
    })
}

/// Create or update the Node and its status.
pub async fn register(client: &kube::Client, name: &str, version: &str) -> kube::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &pp, &Patch::Apply(node_manifest(name)))
        .await?;
    heartbeat(client, name, version).await
}

/// Refresh the Node's conditions and heartbeat time.
pub async fn heartbeat(client: &kube::Client, name: &str, version: &str) -> kube::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &pp, &Patch::Apply(node_status(name, version)))
        .await?;
    Ok(())
}

/// Bind `pod` to the node, as the scheduler would.
pub async fn bind(client: &kube::Client, pod: &Pod, node: &str) -> kube::Result<()> {
    let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return Ok(());
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..Default::default()
        },
    };
    // The apiserver answers a binding with a Status object.
    let _: serde_json::Value = api
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_is_ready_untainted_and_on_loopback() {
        let m = node_manifest("proc-node");
        assert!(m["spec"].get("taints").is_none());
        let s = node_status("proc-node", "v1");
        let conds = s["status"]["conditions"].as_array().unwrap();
        let ready = conds.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(s["status"]["addresses"][0]["address"], "127.0.0.1");
        // Typed round trip: what we apply must be a valid Node.
        let node: Node = serde_json::from_value(s).unwrap();
        assert_eq!(
            node.status.and_then(|s| s.capacity).map(|c| c.len()),
            Some(4)
        );
    }
}
