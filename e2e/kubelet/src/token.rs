//! ServiceAccount credentials for a pod: a real token from the TokenRequest API, bound to the
//! pod (so it dies with it), handed to the process through a per-pod kubeconfig whose
//! `tokenFile` the kubelet refreshes. kube-rs `Config::infer` and client-go both read
//! `KUBECONFIG` first, so the process acts with exactly its ServiceAccount's RBAC. The same
//! files are also written in the in-cluster layout (`token`, `ca.crt`, `namespace`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

/// Lifetime asked for; the apiserver's minimum is 10 minutes.
pub const TOKEN_SECONDS: i64 = 3600;

/// Refresh well before expiry, as the kubelet does at 80 % of the lifetime.
pub const REFRESH_AFTER: Duration = Duration::from_secs((TOKEN_SECONDS as u64) * 8 / 10);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("TokenRequest for serviceaccount {namespace}/{name} failed")]
    Request {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("TokenRequest for serviceaccount {namespace}/{name} returned no token")]
    Empty { namespace: String, name: String },
    #[error("cannot write credentials to {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a pod's credentials live and what its process must be told.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

/// Which pod the token is for.
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub service_account: &'a str,
}

/// Request a fresh token and (re)write the pod's credential files.
pub async fn refresh(
    client: &kube::Client,
    pod: &PodRef<'_>,
    dir: &Path,
    server: &str,
    ca_pem: &str,
) -> Result<Credentials, TokenError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), pod.namespace);
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.to_owned()),
                uid: Some(pod.uid.to_owned()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let resp = api
        .create_token_request(pod.service_account, &PostParams::default(), &req)
        .await
        .map_err(|source| TokenError::Request {
            namespace: pod.namespace.to_owned(),
            name: pod.service_account.to_owned(),
            source,
        })?;
    let token = resp.status.and_then(|s| s.token).unwrap_or_default();
    if token.is_empty() {
        return Err(TokenError::Empty {
            namespace: pod.namespace.to_owned(),
            name: pod.service_account.to_owned(),
        });
    }
    write_files(dir, &token, ca_pem, pod.namespace, server)
}

/// Write the in-cluster style files and a kubeconfig that points at them. The token is
/// replaced atomically (write + rename) because clients reload `tokenFile` at any moment.
pub fn write_files(
    dir: &Path,
    token: &str,
    ca_pem: &str,
    namespace: &str,
    server: &str,
) -> Result<Credentials, TokenError> {
    let write = |name: &str, data: &str| -> Result<PathBuf, TokenError> {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let err = |source| TokenError::Write {
            path: path.display().to_string(),
            source,
        };
        std::fs::write(&tmp, data).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(path)
    };
    std::fs::create_dir_all(dir).map_err(|source| TokenError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let token_path = write("token", token)?;
    let ca_path = write("ca.crt", ca_pem)?;
    write("namespace", namespace)?;
    let kubeconfig = write(
        "kubeconfig",
        &kubeconfig_yaml(server, &ca_path, &token_path, namespace),
    )?;
    Ok(Credentials {
        dir: dir.to_owned(),
        kubeconfig,
    })
}

/// A kubeconfig as JSON (valid YAML), so no string a user controls can break its structure.
pub fn kubeconfig_yaml(server: &str, ca: &Path, token: &Path, namespace: &str) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "crane", "cluster": {
            "server": server,
            "certificate-authority": ca.display().to_string(),
        }}],
        "users": [{"name": "pod", "user": {"tokenFile": token.display().to_string()}}],
        "contexts": [{"name": "pod", "context": {
            "cluster": "crane", "user": "pod", "namespace": namespace,
        }}],
        "current-context": "pod",
    });
    format!("{doc}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_namespace_cannot_break_the_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let ns = "a\"\n  user: {token: admin}\n#";
        let creds = write_files(dir.path(), "tok", "CA", ns, "https://127.0.0.1:1").unwrap();
        let text = std::fs::read_to_string(&creds.kubeconfig).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["contexts"][0]["context"]["namespace"], ns);
        assert_eq!(v["users"].as_array().map(Vec::len), Some(1));
        assert!(v["users"][0]["user"].get("token").is_none());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("token")).unwrap(),
            "tok"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("namespace")).unwrap(),
            ns
        );
    }

    #[test]
    fn rewriting_replaces_the_token() {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), "one", "CA", "ns", "https://x").unwrap();
        write_files(dir.path(), "two", "CA", "ns", "https://x").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("token")).unwrap(),
            "two"
        );
    }

    #[test]
    fn unwritable_directory_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let err = write_files(&file.join("sub"), "t", "CA", "ns", "https://x").unwrap_err();
        assert!(err.to_string().contains("plain-file"), "{err}");
    }
}
