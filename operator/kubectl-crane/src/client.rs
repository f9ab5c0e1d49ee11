//! The connection to the cluster, from the person's own kubeconfig exactly as kubectl reads
//! it (`--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`; `--context`, `--cluster`,
//! `--user`; the context's namespace unless `-n`), and who that person is.

use std::path::PathBuf;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::error::Error;

/// Which cluster, credentials and namespace: kubectl's flags of the same names.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub cluster: Option<String>,
    pub user: Option<String>,
    pub namespace: Option<String>,
}

/// A client and the namespace commands act in.
#[derive(Clone)]
pub struct Connection {
    pub client: Client,
    pub namespace: String,
    /// Whether -n chose the namespace (a manifest's own namespace must then agree).
    pub namespace_from_flag: bool,
}

/// Connects as the kubeconfig says; nothing else (no Redis, no in-cluster service) is used.
pub async fn connect(target: &Target) -> Result<Connection, Error> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        cluster: target.cluster.clone(),
        user: target.user.clone(),
    };
    let config = match &target.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(Error::Kubeconfig)?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(Error::Kubeconfig)?
        }
        None if options.context.is_some()
            || options.cluster.is_some()
            || options.user.is_some() =>
        {
            Config::from_kubeconfig(&options)
                .await
                .map_err(Error::Kubeconfig)?
        }
        // Like kubectl: the kubeconfig, or the pod's service account when there is none.
        None => Config::infer().await.map_err(Error::InferConfig)?,
    };
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(Error::Client)?;
    Ok(Connection {
        client,
        namespace,
        namespace_from_flag: target.namespace.is_some(),
    })
}

/// The person the apiserver sees: the name an Approval's `decidedBy` must carry, and the
/// groups that may make them an approver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub username: String,
    pub groups: Vec<String>,
}

/// Asks the apiserver who we are (a SelfSubjectReview, what `kubectl auth whoami` does), so
/// the name is the one admission compares with `decidedBy`, whatever the credentials are
/// (tokens, certificates, OIDC, impersonation).
pub async fn whoami(client: &Client) -> Result<Me, Error> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| Error::WhoAmI {
            reason: crate::error::chain(&e),
        })?;
    let info = review.status.and_then(|s| s.user_info).unwrap_or_default();
    match info.username.filter(|u| !u.is_empty()) {
        Some(username) => Ok(Me {
            username,
            groups: info.groups.unwrap_or_default(),
        }),
        None => Err(Error::WhoAmI {
            reason: "the review came back without a user name".to_owned(),
        }),
    }
}
