//! The runs API: one list of live and archived runs, a run (live, else archived), its full
//! step outputs, create, cancel, retry and delete, and the two routes of the service Crane
//! grew from (`POST /api/v1/runs`, `GET /api/v1/runs/{id}`). Every call to the apiserver is
//! made as the caller (`auth::User`); archived runs are shown to callers who may `list
//! agentruns` in their namespace. Engine data is read only through `crane_engine`'s public
//! functions.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use crane_api::{AgentRun, AgentRunPhase, AgentRunSpec};
use crane_archive::query::{DEFAULT_LIMIT, sort_newest_first};
use crane_archive::{Cursor, ListQuery, RunRecord, RunSummary};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::User;
use crate::error::ApiError;
use crate::extract::{JsonBody, QueryParams};
use crate::names;
use crate::state::{AppState, FIELD_MANAGER};

type St = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

/// Annotation that asks the operator to retry a failed run (its value must change).
pub const RETRY_ANNOTATION: &str = "crane.dev/retry";
/// Objects per page when the server lists a namespace's AgentRuns from the apiserver.
const APISERVER_PAGE: u32 = 500;

/// Query of `GET …/runs`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParamsIn {
    /// Comma-separated phases.
    pub phase: Option<String>,
    /// Text in the name or the prompt.
    pub q: Option<String>,
    /// RFC 3339: created at or after.
    pub since: Option<String>,
    /// RFC 3339: created before.
    pub until: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    /// all (default), live or archived.
    pub source: Option<String>,
}

fn time(what: &str, s: &Option<String>) -> ApiResult<Option<Timestamp>> {
    s.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Timestamp>().map_err(|e| {
                ApiError::BadRequest(format!(
                    "{what}: {:?} is not an RFC 3339 time ({e})",
                    s.chars().take(60).collect::<String>()
                ))
            })
        })
        .transpose()
}

/// The validated list query of a request.
pub fn list_query(ns: &str, p: &ListParamsIn) -> ApiResult<ListQuery> {
    let mut q = ListQuery::new(ns);
    q.phases = p
        .phase
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    q.text = p.q.clone().filter(|t| !t.trim().is_empty());
    q.since = time("since", &p.since)?;
    q.until = time("until", &p.until)?;
    q.limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    q.after = p
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(Cursor::decode)
        .transpose()?;
    q.validate()?;
    Ok(q)
}

/// Every AgentRun of `ns` the user may list, a page of the apiserver's at a time.
async fn live_runs(user: &User, ns: &str) -> ApiResult<Vec<AgentRun>> {
    let api: Api<AgentRun> = Api::namespaced(user.client.clone(), ns);
    let mut params = ListParams::default().limit(APISERVER_PAGE);
    let mut all = Vec::new();
    loop {
        let page = api.list(&params).await.map_err(ApiError::kube)?;
        all.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => return Ok(all),
        }
    }
}

/// `GET /api/v1/namespaces/{namespace}/runs`: live and archived runs, newest first.
pub async fn list(
    State(state): St,
    user: User,
    Path(ns): Path<String>,
    QueryParams(p): QueryParams<ListParamsIn>,
) -> ApiResult<Json<Value>> {
    names::label("namespace", &ns)?;
    let q = list_query(&ns, &p)?;
    let source = p.source.as_deref().unwrap_or("all");
    let (want_live, want_archived) = match source {
        "all" => (true, true),
        "live" => (true, false),
        "archived" => (false, true),
        other => {
            return Err(ApiError::BadRequest(format!(
                "source must be all, live or archived, not {:?}",
                other.chars().take(20).collect::<String>()
            )));
        }
    };
    let mut items: Vec<RunSummary> = Vec::new();
    let mut more = false;
    if want_live {
        // Listing as the user is also the permission check for their archived runs.
        let runs = live_runs(&user, &ns).await?;
        let mut live: Vec<RunSummary> = runs
            .iter()
            .filter_map(|r| RunSummary::from_run(r, None))
            .filter(|s| q.matches(s))
            .collect();
        sort_newest_first(&mut live);
        more |= live.len() > q.limit;
        live.truncate(q.limit + 1);
        items = live;
    } else {
        user.require("list", &ns).await?;
    }
    let mut archive_state = "disabled";
    let mut archive_error = None;
    if want_archived && let Some(archive) = &state.archive {
        match archive.list(&q).await {
            Ok(page) => {
                archive_state = "ok";
                more |= page.next.is_some();
                // A run being deleted may be in both: the live object wins.
                let live: HashSet<String> = items.iter().map(|i| i.uid.clone()).collect();
                items.extend(page.items.into_iter().filter(|i| !live.contains(&i.uid)));
            }
            Err(e) if e.is_transient() => {
                // Live runs are still worth showing while the archive is away.
                archive_state = "unavailable";
                archive_error = Some(e.to_string());
                tracing::warn!(error = %e, "archive unavailable; listing live runs only");
            }
            Err(e) => return Err(e.into()),
        }
    }
    sort_newest_first(&mut items);
    if items.len() > q.limit {
        more = true;
        items.truncate(q.limit);
    }
    let next = if more {
        items.last().map(|i| Cursor::of(i).encode())
    } else {
        None
    };
    Ok(Json(json!({
        "items": items,
        "nextCursor": next,
        "archive": archive_state,
        "archiveError": archive_error,
    })))
}

/// Metadata worth showing (no managedFields, no last-applied copy of the object).
fn meta_json(m: &ObjectMeta) -> Value {
    let mut annotations = m.annotations.clone().unwrap_or_default();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    json!({
        "name": m.name, "namespace": m.namespace, "uid": m.uid,
        "creationTimestamp": m.creation_timestamp, "deletionTimestamp": m.deletion_timestamp,
        "generation": m.generation, "labels": m.labels.clone().unwrap_or_default(),
        "annotations": annotations,
    })
}

/// A live run as the API returns it.
pub fn live_json(run: &AgentRun) -> Value {
    json!({
        "source": "live",
        "summary": RunSummary::from_run(run, None),
        "metadata": meta_json(&run.metadata),
        "spec": run.spec,
        "status": run.status.clone().unwrap_or_default(),
    })
}

/// An archived run as the API returns it.
pub fn archived_json(r: &RunRecord) -> Value {
    json!({
        "source": "archived",
        "summary": r.summary,
        "metadata": {
            "name": r.summary.name, "namespace": r.summary.namespace, "uid": r.summary.uid,
            "creationTimestamp": r.summary.created_at, "labels": r.labels,
        },
        "spec": r.spec,
        "status": r.status,
        "report": r.report,
        "result": r.result,
    })
}

/// The live AgentRun, `None` when the apiserver says it does not exist.
pub async fn get_live(user: &User, ns: &str, name: &str) -> ApiResult<Option<AgentRun>> {
    let api: Api<AgentRun> = Api::namespaced(user.client.clone(), ns);
    match api.get(name).await.map_err(ApiError::kube) {
        Ok(run) => Ok(Some(run)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The archived run `name` (or the one with `uid`), for a user who may list runs in `ns`.
async fn get_archived(
    state: &AppState,
    user: &User,
    ns: &str,
    name: &str,
    uid: Option<&str>,
) -> ApiResult<RunRecord> {
    user.require("list", ns).await?;
    let archive = state
        .archive
        .as_ref()
        .ok_or_else(|| ApiError::NotFound(format!("agentruns.crane.dev {name:?} not found")))?;
    let record = match uid {
        Some(uid) => archive
            .get(ns, uid)
            .await?
            .filter(|r| r.summary.name == name),
        None => archive.get_by_name(ns, name).await?,
    };
    record.ok_or_else(|| {
        ApiError::NotFound(format!(
            "agentruns.crane.dev {name:?} not found, live or archived"
        ))
    })
}

/// Query of the run routes: `uid` picks one archived run when a name was used more than once.
#[derive(Debug, Default, Deserialize)]
pub struct RunParams {
    pub uid: Option<String>,
}

fn check_run_path(ns: &str, name: &str, p: &RunParams) -> ApiResult<()> {
    names::label("namespace", ns)?;
    names::subdomain("name", name)?;
    if let Some(uid) = &p.uid {
        names::uid(uid)?;
    }
    Ok(())
}

/// `GET /api/v1/namespaces/{namespace}/runs/{name}`: the live run, else the archived one.
pub async fn get(
    State(state): St,
    user: User,
    Path((ns, name)): Path<(String, String)>,
    QueryParams(p): QueryParams<RunParams>,
) -> ApiResult<Json<Value>> {
    check_run_path(&ns, &name, &p)?;
    Ok(Json(
        match find(&state, &user, &ns, &name, p.uid.as_deref()).await? {
            Found::Live(run) => live_json(&run),
            Found::Archived(record) => archived_json(&record),
        },
    ))
}

/// A run as found: the live AgentRun, or its archived record.
pub enum Found {
    Live(Box<AgentRun>),
    Archived(Box<RunRecord>),
}

/// The live run `name` (unless a `uid` asks for an archived one), else the archived run.
async fn find(
    state: &AppState,
    user: &User,
    ns: &str,
    name: &str,
    uid: Option<&str>,
) -> ApiResult<Found> {
    if uid.is_none()
        && let Some(run) = get_live(user, ns, name).await?
    {
        return Ok(Found::Live(Box::new(run)));
    }
    let record = get_archived(state, user, ns, name, uid).await?;
    Ok(Found::Archived(Box::new(record)))
}

/// Step outputs in one shape whatever their source.
fn outputs_json(source: &str, v: Value) -> Value {
    json!({
        "source": source,
        "phase": v.get("phase"),
        "steps": v.get("steps").cloned().unwrap_or_else(|| json!([])),
        "result": v.get("result"),
        "error": v.get("error"),
    })
}

/// Full outputs of a live run: the engine's report from Redis, or its status when Redis
/// has no state for it (planning, or expired).
async fn live_outputs(state: &AppState, run: &AgentRun) -> ApiResult<Value> {
    if let (Some(uid), Some(mut redis)) = (run.metadata.uid.as_deref(), state.redis().await?) {
        let keys = crane_engine::RunKeys::new(
            &kube::ResourceExt::namespace(run).unwrap_or_default(),
            uid,
        )?;
        // Whole outputs (this endpoint's purpose); one run's are bounded by the engine's
        // per-run output limit.
        match crane_engine::run_report(&mut redis, &keys, crane_engine::api::Outputs::Full).await {
            Ok(report) => {
                let mut v = serde_json::to_value(&report).unwrap_or_default();
                // The operator's phase (Planning, AwaitingApproval…) is the run's phase.
                if let Some(phase) = run.status.as_ref().and_then(|s| s.phase) {
                    v["phase"] = json!(crane_archive::phase_name(phase));
                }
                return Ok(outputs_json("redis", v));
            }
            Err(crane_engine::EngineError::RunNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let status = serde_json::to_value(run.status.clone().unwrap_or_default()).unwrap_or_default();
    Ok(outputs_json("status", status))
}

/// `GET /api/v1/namespaces/{namespace}/runs/{name}/outputs`: every step with its full output.
pub async fn outputs(
    State(state): St,
    user: User,
    Path((ns, name)): Path<(String, String)>,
    QueryParams(p): QueryParams<RunParams>,
) -> ApiResult<Json<Value>> {
    check_run_path(&ns, &name, &p)?;
    let r = match find(&state, &user, &ns, &name, p.uid.as_deref()).await? {
        Found::Live(run) => return Ok(Json(live_outputs(&state, &run).await?)),
        Found::Archived(r) => r,
    };
    Ok(Json(match &r.report {
        Some(report) => {
            let mut v = report.clone();
            v["phase"] = json!(r.summary.phase);
            outputs_json("archive", v)
        }
        None => outputs_json("archive", r.status.clone()),
    }))
}

/// Body of `POST …/runs`: an AgentRun's metadata (name or generateName, labels,
/// annotations) and spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    #[serde(default)]
    pub metadata: CreateMeta,
    pub spec: AgentRunSpec,
    #[serde(default, rename = "apiVersion")]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateMeta {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Ignored when given, so `kubectl get -o json` output can be posted back.
    pub namespace: Option<String>,
}

/// Creates `spec` as the user in `ns`.
async fn create_run(
    user: &User,
    ns: &str,
    meta: CreateMeta,
    spec: AgentRunSpec,
) -> ApiResult<AgentRun> {
    if meta.name.is_none() && meta.generate_name.is_none() {
        return Err(ApiError::BadRequest(
            "metadata: give name or generateName".into(),
        ));
    }
    if let Some(n) = &meta.name {
        names::subdomain("metadata.name", n)?;
    }
    if let Some(g) = &meta.generate_name {
        // The apiserver appends 5 characters.
        if g.len() > 248 {
            return Err(ApiError::BadRequest(
                "metadata.generateName: at most 248 characters".into(),
            ));
        }
        names::subdomain("metadata.generateName", &format!("{g}x"))?;
    }
    if let Some(pool) = Some(&spec.worker_pool) {
        names::label("spec.workerPool", pool)?;
    }
    if spec.prompt.as_deref().is_none_or(|p| p.trim().is_empty()) && spec.plan.is_none() {
        return Err(ApiError::BadRequest(
            "spec: give a prompt, a plan, or both".into(),
        ));
    }
    let run = AgentRun {
        metadata: ObjectMeta {
            name: meta.name,
            generate_name: meta.generate_name,
            namespace: Some(ns.to_owned()),
            labels: (!meta.labels.is_empty()).then_some(meta.labels),
            annotations: (!meta.annotations.is_empty()).then_some(meta.annotations),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    Api::<AgentRun>::namespaced(user.client.clone(), ns)
        .create(&pp, &run)
        .await
        .map_err(ApiError::kube)
}

/// `POST /api/v1/namespaces/{namespace}/runs`.
pub async fn create(
    user: User,
    Path(ns): Path<String>,
    JsonBody(body): JsonBody<CreateRun>,
) -> ApiResult<impl IntoResponse> {
    names::label("namespace", &ns)?;
    if body.kind.as_deref().is_some_and(|k| k != "AgentRun") {
        return Err(ApiError::BadRequest("kind must be AgentRun".into()));
    }
    let run = create_run(&user, &ns, body.metadata, body.spec).await?;
    Ok((StatusCode::CREATED, Json(live_json(&run))))
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// `POST /api/v1/namespaces/{namespace}/runs/{name}/cancel`: `spec.cancel: true`.
pub async fn cancel(
    user: User,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    check_run_path(&ns, &name, &RunParams::default())?;
    let patch = json!({"spec": {"cancel": true}});
    let run = Api::<AgentRun>::namespaced(user.client.clone(), &ns)
        .patch(&name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(ApiError::kube)?;
    Ok(Json(live_json(&run)))
}

/// `POST /api/v1/namespaces/{namespace}/runs/{name}/retry`: a new `crane.dev/retry` token on a
/// Failed or Cancelled run (the operator re-runs its failed and skipped steps).
pub async fn retry(user: User, Path((ns, name)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    check_run_path(&ns, &name, &RunParams::default())?;
    let run = get_live(&user, &ns, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("agentruns.crane.dev {name:?} not found (archived runs cannot be retried: create a new run)")))?;
    let phase = run
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default();
    if !matches!(phase, AgentRunPhase::Failed | AgentRunPhase::Cancelled) {
        return Err(ApiError::Conflict(format!(
            "only a Failed or Cancelled run can be retried; {name} is {}",
            crane_archive::phase_name(phase)
        )));
    }
    let token = Timestamp::now().as_millisecond().to_string();
    let patch = json!({"metadata": {"annotations": {RETRY_ANNOTATION: token}}});
    let run = Api::<AgentRun>::namespaced(user.client.clone(), &ns)
        .patch(&name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(ApiError::kube)?;
    Ok(Json(live_json(&run)))
}

/// `DELETE /api/v1/namespaces/{namespace}/runs/{name}`: deletes the live AgentRun (the
/// operator archives it on its way out), else the archived run (`delete agentruns` needed).
pub async fn delete(
    State(state): St,
    user: User,
    Path((ns, name)): Path<(String, String)>,
    QueryParams(p): QueryParams<RunParams>,
) -> ApiResult<Json<Value>> {
    check_run_path(&ns, &name, &p)?;
    if p.uid.is_none() {
        let api: Api<AgentRun> = Api::namespaced(user.client.clone(), &ns);
        match api
            .delete(&name, &DeleteParams::default())
            .await
            .map_err(ApiError::kube)
        {
            Ok(_) => return Ok(Json(json!({"deleted": "live", "name": name}))),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    user.require("delete", &ns).await?;
    let record = get_archived(&state, &user, &ns, &name, p.uid.as_deref()).await?;
    state.archive()?.delete(&ns, &record.summary.uid).await?;
    Ok(Json(
        json!({"deleted": "archived", "name": name, "uid": record.summary.uid}),
    ))
}

// ---- compatibility with the service Crane grew from -------------------------------------

/// The caller's namespace: header `X-Crane-Namespace`, else query `namespace`.
fn compat_namespace(headers: &HeaderMap, q: &CompatParams) -> ApiResult<String> {
    let ns = headers
        .get("x-crane-namespace")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::BadRequest("X-Crane-Namespace is not ASCII".into()))
        })
        .transpose()?
        .or_else(|| q.namespace.clone())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "say which namespace: header X-Crane-Namespace or query parameter namespace".into(),
            )
        })?;
    names::label("namespace", &ns)?;
    Ok(ns)
}

#[derive(Debug, Default, Deserialize)]
pub struct CompatParams {
    pub namespace: Option<String>,
}

/// `POST /api/v1/runs {"prompt": ...}` (any AgentRun spec field may be given): creates an
/// AgentRun named `run-XXXXX` and returns its id (the name).
pub async fn compat_create(
    user: User,
    headers: HeaderMap,
    QueryParams(q): QueryParams<CompatParams>,
    JsonBody(spec): JsonBody<AgentRunSpec>,
) -> ApiResult<impl IntoResponse> {
    let ns = compat_namespace(&headers, &q)?;
    let meta = CreateMeta {
        generate_name: Some("run-".into()),
        ..CreateMeta::default()
    };
    let run = create_run(&user, &ns, meta, spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": run.metadata.name, "namespace": ns, "uid": run.metadata.uid, "phase": "Pending",
        })),
    ))
}

/// `GET /api/v1/runs/{id}`: phase, plan, steps (full outputs), result and error.
pub async fn compat_get(
    State(state): St,
    user: User,
    headers: HeaderMap,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<CompatParams>,
) -> ApiResult<Json<Value>> {
    let ns = compat_namespace(&headers, &q)?;
    names::subdomain("id", &id)?;
    let (uid, plan, out) = match find(&state, &user, &ns, &id, None).await? {
        Found::Live(run) => {
            let plan = run
                .spec
                .plan
                .clone()
                .or_else(|| run.status.as_ref().and_then(|s| s.plan.clone()));
            (
                run.metadata.uid.clone(),
                json!(plan),
                live_outputs(&state, &run).await?,
            )
        }
        Found::Archived(r) => {
            let plan = r.spec.get("plan").or_else(|| r.status.get("plan")).cloned();
            let mut v = r.report.clone().unwrap_or_else(|| r.status.clone());
            v["phase"] = json!(r.summary.phase);
            if r.result.is_some() {
                v["result"] = json!(r.result);
            }
            (
                Some(r.summary.uid.clone()),
                json!(plan),
                outputs_json("archive", v),
            )
        }
    };
    Ok(Json(json!({
        "id": id, "namespace": ns, "uid": uid,
        "phase": out["phase"], "plan": plan, "steps": out["steps"],
        "result": out["result"], "error": out["error"],
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_are_checked_before_anything_is_asked() {
        let ok = ListParamsIn {
            phase: Some("Running, Failed".into()),
            since: Some("2026-01-01T00:00:00Z".into()),
            limit: Some(10),
            ..ListParamsIn::default()
        };
        let q = list_query("team-a", &ok).expect("valid");
        assert_eq!(q.phases, ["Running", "Failed"]);
        for bad in [
            ListParamsIn {
                phase: Some("Running' OR 1=1 --".into()),
                ..ListParamsIn::default()
            },
            ListParamsIn {
                since: Some("yesterday".into()),
                ..ListParamsIn::default()
            },
            ListParamsIn {
                limit: Some(100_000),
                ..ListParamsIn::default()
            },
            ListParamsIn {
                cursor: Some("'; DROP TABLE archived_runs; --".into()),
                ..ListParamsIn::default()
            },
        ] {
            assert!(list_query("team-a", &bad).is_err(), "{bad:?}");
        }
    }
}
