//! The other objects the UI shows, read as the caller: WorkerPools, Tools, MCPServers,
//! Models and Approvals of a namespace, the namespaces the caller may list, who the caller
//! is; and approving or rejecting an Approval, written as the caller with `decidedBy` set to
//! the name the apiserver knows them by (the chart's admission policy checks exactly that).

use std::fmt::Debug;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use crane_api::{Approval, Decision, MCPServer, Model, Tool, WorkerPool};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch};
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::User;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::names;
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// `GET /api/v1/whoami`: the caller's user name and groups.
pub async fn whoami(user: User) -> ApiResult<Json<Value>> {
    Ok(Json(json!(user.info().await?)))
}

/// `GET /api/v1/namespaces`: the names of the namespaces the caller may list (403 passed
/// on: the UI then lets them type one).
pub async fn namespaces(user: User) -> ApiResult<Json<Value>> {
    let list = Api::<Namespace>::all(user.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(ApiError::kube)?;
    let names: Vec<String> = list.items.iter().map(|n| n.name_any()).collect();
    Ok(Json(json!({"items": names})))
}

/// A namespace's objects of kind `K` as the caller sees them, without managedFields.
async fn list_of<K>(user: &User, ns: &str) -> ApiResult<Vec<Value>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + serde::Serialize,
{
    names::label("namespace", ns)?;
    let list = Api::<K>::namespaced(user.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(ApiError::kube)?;
    Ok(list
        .items
        .into_iter()
        .map(|mut o| {
            o.meta_mut().managed_fields = None;
            if let Some(a) = o.meta_mut().annotations.as_mut() {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
            serde_json::to_value(&o).unwrap_or_default()
        })
        .collect())
}

macro_rules! list_route {
    ($fn:ident, $kind:ty, $doc:literal) => {
        #[doc = $doc]
        pub async fn $fn(user: User, Path(ns): Path<String>) -> ApiResult<Json<Value>> {
            Ok(Json(json!({"items": list_of::<$kind>(&user, &ns).await?})))
        }
    };
}

list_route!(
    workerpools,
    WorkerPool,
    "`GET /api/v1/namespaces/{namespace}/workerpools`."
);
list_route!(tools, Tool, "`GET /api/v1/namespaces/{namespace}/tools`.");
list_route!(
    mcpservers,
    MCPServer,
    "`GET /api/v1/namespaces/{namespace}/mcpservers`."
);
list_route!(
    models,
    Model,
    "`GET /api/v1/namespaces/{namespace}/models`."
);

#[derive(Debug, Default, Deserialize)]
pub struct ApprovalParams {
    /// Only the approvals of this run.
    pub run: Option<String>,
}

/// `GET /api/v1/namespaces/{namespace}/approvals[?run=NAME]`.
pub async fn approvals(
    user: User,
    Path(ns): Path<String>,
    QueryParams(p): QueryParams<ApprovalParams>,
) -> ApiResult<Json<Value>> {
    if let Some(run) = &p.run {
        names::subdomain("run", run)?;
    }
    let items: Vec<Value> = list_of::<Approval>(&user, &ns)
        .await?
        .into_iter()
        .filter(|a| p.run.as_ref().is_none_or(|r| a["spec"]["run"] == json!(r)))
        .collect();
    Ok(Json(json!({"items": items})))
}

/// Optional body of approve / reject.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub comment: Option<String>,
}

async fn decide(
    state: &AppState,
    user: User,
    ns: String,
    name: String,
    body: Bytes,
    decision: Decision,
) -> ApiResult<Json<Value>> {
    let _ = state;
    names::label("namespace", &ns)?;
    names::subdomain("name", &name)?;
    let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    if body
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > 1024)
    {
        return Err(ApiError::BadRequest(
            "comment: at most 1024 characters".into(),
        ));
    }
    let api: Api<Approval> = Api::namespaced(user.client.clone(), &ns);
    let current = api.get(&name).await.map_err(ApiError::kube)?;
    if let Some(d) = current.spec.decision {
        return Err(ApiError::Conflict(format!(
            "approval {name} was already decided ({d:?} by {}); a decision never changes",
            current.spec.decided_by.as_deref().unwrap_or("someone")
        )));
    }
    let me = user.info().await?;
    let mut spec = json!({"decision": decision, "decidedBy": me.username});
    if let Some(c) = body.comment {
        spec["comment"] = json!(c);
    }
    let approval = api
        .patch(
            &name,
            &kube::api::PatchParams {
                field_manager: Some(crate::state::FIELD_MANAGER.into()),
                ..kube::api::PatchParams::default()
            },
            &Patch::Merge(&json!({"spec": spec})),
        )
        .await
        .map_err(ApiError::kube)?;
    Ok(Json(json!(approval)))
}

/// `POST /api/v1/namespaces/{namespace}/approvals/{name}/approve`.
pub async fn approve(
    State(state): State<Arc<AppState>>,
    user: User,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    decide(&state, user, ns, name, body, Decision::Approved).await
}

/// `POST /api/v1/namespaces/{namespace}/approvals/{name}/reject`.
pub async fn reject(
    State(state): State<Arc<AppState>>,
    user: User,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    decide(&state, user, ns, name, body, Decision::Rejected).await
}
