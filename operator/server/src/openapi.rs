//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`. Written here by
//! hand, next to the routes; a test fails when a route of [`crate::routes`] is missing from
//! it or it describes a route that does not exist.

use axum::Json;
use serde_json::{Value, json};

fn param(name: &str, place: &str, description: &str) -> Value {
    json!({"name": name, "in": place, "required": place == "path",
           "description": description, "schema": {"type": "string"}})
}

fn ns() -> Value {
    param("namespace", "path", "The namespace (a DNS-1123 label).")
}

fn name() -> Value {
    param("name", "path", "The object's name (a DNS-1123 subdomain).")
}

fn uid() -> Value {
    param(
        "uid",
        "query",
        "Pick the archived run with this uid (a name may have been used more than once).",
    )
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn errors() -> Value {
    let e = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({
        "400": e("Malformed request: invalid name, filter or JSON."),
        "401": e("No bearer token, or one the apiserver does not accept."),
        "403": e("RBAC does not allow this to the caller (the apiserver's answer, passed on)."),
        "404": e("Not found."),
        "413": e("Body larger than the server's limit."),
        "502": e("The Kubernetes API could not be reached."),
        "503": e("Redis or the archive is unavailable, or too many event streams are open.")
    })
}

fn op(
    summary: &str,
    tag: &str,
    params: Vec<Value>,
    response: (&str, Value),
    body: Option<&str>,
) -> Value {
    let mut responses = errors();
    responses[response.0] = response.1;
    let mut o =
        json!({"summary": summary, "tags": [tag], "parameters": params, "responses": responses});
    if let Some(schema) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    o
}

/// The document.
pub fn document() -> Value {
    let list_params = vec![
        ns(),
        param(
            "phase",
            "query",
            "Comma-separated phases (Pending, Planning, AwaitingApproval, Running, Succeeded, Failed, Cancelled).",
        ),
        param(
            "q",
            "query",
            "Case-insensitive text in the run's name or prompt (at most 200 characters, matched literally).",
        ),
        param("since", "query", "RFC 3339: created at or after."),
        param("until", "query", "RFC 3339: created before."),
        param("limit", "query", "Items per page, 1-500 (default 50)."),
        param("cursor", "query", "nextCursor of the previous page."),
        param("source", "query", "all (default), live or archived."),
    ];
    let compat_ns = vec![
        param(
            "X-Crane-Namespace",
            "header",
            "The caller's namespace (or query parameter namespace).",
        ),
        param(
            "namespace",
            "query",
            "The caller's namespace, when the header is not sent.",
        ),
    ];
    let mut compat_get = compat_ns.clone();
    compat_get.insert(
        0,
        param(
            "id",
            "path",
            "The id POST /api/v1/runs returned (the AgentRun's name).",
        ),
    );
    let sse = json!({"description": "Server-Sent Events: id = engine event id, event = step|run|retry|reclaim|release|cancel, data = RunEvent JSON; `resync` when events may have been lost, `end` after the run's terminal event.",
                     "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/RunEvent"}}}});
    let decision = json!({"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DecisionBody"}}}});
    let mut approve = op(
        "Approve the gate, as the caller (decidedBy = the caller's user name).",
        "approvals",
        vec![ns(), name()],
        ("200", ok("The Approval.", "Object")),
        None,
    );
    approve["requestBody"] = decision.clone();
    let mut reject = op(
        "Reject the gate, as the caller.",
        "approvals",
        vec![ns(), name()],
        ("200", ok("The Approval.", "Object")),
        None,
    );
    reject["requestBody"] = decision;
    let mut events_params = vec![
        ns(),
        name(),
        param(
            "lastEventId",
            "query",
            "Resume after this event id (the Last-Event-ID header wins).",
        ),
    ];
    events_params.push(param(
        "Last-Event-ID",
        "header",
        "Resume after this event id.",
    ));
    let list_of = |what: &str, tag: &str| {
        op(
            &format!("The namespace's {what}, as the caller may list them."),
            tag,
            vec![ns()],
            ("200", ok("Items.", "ObjectList")),
            None,
        )
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "crane-server", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Crane's runs API. Authenticate with `Authorization: Bearer <token>` (a Kubernetes token, the one kubectl uses): every call is made as you, so RBAC decides what you see and change. Archived runs are shown to users who may list agentruns in their namespace."},
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/openapi.json": {"get": {"summary": "This document.", "tags": ["meta"], "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/api/v1/whoami": {"get": op("The caller's user name and groups (SelfSubjectReview).", "meta", vec![], ("200", ok("The user.", "UserInfo")), None)},
            "/api/v1/namespaces": {"get": op("Namespaces the caller may list.", "meta", vec![], ("200", ok("Names.", "NameList")), None)},
            "/api/v1/namespaces/{namespace}/runs": {
                "get": op("Live and archived runs, newest first, one page.", "runs", list_params, ("200", ok("A page.", "RunList")), None),
                "post": op("Create an AgentRun as the caller.", "runs", vec![ns()], ("201", ok("The run.", "Run")), Some("CreateRun"))
            },
            "/api/v1/namespaces/{namespace}/runs/{name}": {
                "get": op("The live run, else the newest archived run of that name.", "runs", vec![ns(), name(), uid()], ("200", ok("The run.", "Run")), None),
                "delete": op("Delete the live AgentRun (it is archived on its way out), else the archived run (needs delete agentruns).", "runs", vec![ns(), name(), uid()], ("200", ok("What was deleted.", "Deleted")), None)
            },
            "/api/v1/namespaces/{namespace}/runs/{name}/outputs": {"get": op("Every step with its full output and error: from Redis while live, from the archive after.", "runs", vec![ns(), name(), uid()], ("200", ok("Outputs.", "Outputs")), None)},
            "/api/v1/namespaces/{namespace}/runs/{name}/events": {"get": {"summary": "The live run's step events (SSE), resumable.", "tags": ["runs"], "parameters": events_params, "responses": {"200": sse, "401": errors()["401"], "403": errors()["403"], "404": errors()["404"], "503": errors()["503"]}}},
            "/api/v1/namespaces/{namespace}/runs/{name}/cancel": {"post": op("Cancel: spec.cancel=true (no new step starts).", "runs", vec![ns(), name()], ("200", ok("The run.", "Run")), None)},
            "/api/v1/namespaces/{namespace}/runs/{name}/retry": {"post": op("Retry a Failed or Cancelled run (a new crane.dev/retry annotation).", "runs", vec![ns(), name()], ("200", ok("The run.", "Run")), None)},
            "/api/v1/namespaces/{namespace}/approvals": {"get": op("Approvals of the namespace.", "approvals", vec![ns(), param("run", "query", "Only this run's approvals.")], ("200", ok("Items.", "ObjectList")), None)},
            "/api/v1/namespaces/{namespace}/approvals/{name}/approve": {"post": approve},
            "/api/v1/namespaces/{namespace}/approvals/{name}/reject": {"post": reject},
            "/api/v1/namespaces/{namespace}/workerpools": {"get": list_of("WorkerPools", "resources")},
            "/api/v1/namespaces/{namespace}/tools": {"get": list_of("Tools", "resources")},
            "/api/v1/namespaces/{namespace}/mcpservers": {"get": list_of("MCPServers", "resources")},
            "/api/v1/namespaces/{namespace}/models": {"get": list_of("Models", "resources")},
            "/api/v1/runs": {"post": op("Compatibility: create a run from {\"prompt\": ...} (any AgentRun spec field) in the caller's namespace.", "compat", compat_ns, ("201", ok("The new run's id.", "CompatCreated")), Some("AgentRunSpec"))},
            "/api/v1/runs/{id}": {"get": op("Compatibility: a run's phase, plan, steps (full outputs), result and error.", "compat", compat_get, ("200", ok("The run.", "CompatRun")), None)},
            "/healthz": {"get": {"summary": "Liveness.", "tags": ["meta"], "security": [], "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness.", "tags": ["meta"], "security": [], "responses": {"200": {"description": "ok"}, "503": {"description": "starting"}}}},
            "/": {"get": {"summary": "The web UI.", "tags": ["ui"], "security": [], "responses": {"200": {"description": "HTML"}}}},
            "/ui/{file}": {"get": {"summary": "The web UI's script and style sheet.", "tags": ["ui"], "security": [], "parameters": [param("file", "path", "app.js or app.css")], "responses": {"200": {"description": "the file"}, "404": {"description": "no such file"}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A Kubernetes bearer token (e.g. `kubectl create token NAME`)."}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "properties": {"code": {"type": "integer"}, "reason": {"type": "string"}, "message": {"type": "string"}}}}},
                "RunSummary": {"type": "object", "properties": {
                    "uid": {"type": "string"}, "namespace": {"type": "string"}, "name": {"type": "string"},
                    "phase": {"type": "string"}, "source": {"enum": ["live", "archived"]},
                    "createdAt": {"type": "string", "format": "date-time"}, "startedAt": {"type": "string", "format": "date-time"},
                    "finishedAt": {"type": "string", "format": "date-time"}, "archivedAt": {"type": "string", "format": "date-time"},
                    "prompt": {"type": "string"}, "planSource": {"type": "string"}, "workerPool": {"type": "string"},
                    "stepsTotal": {"type": "integer"}, "stepsSucceeded": {"type": "integer"}, "error": {"type": "string"},
                    "usage": {"type": "object", "properties": {"totalTokens": {"type": "integer"}, "llmCalls": {"type": "integer"}, "toolCalls": {"type": "integer"}}}}},
                "RunList": {"type": "object", "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/RunSummary"}},
                    "nextCursor": {"type": ["string", "null"]},
                    "archive": {"enum": ["ok", "unavailable", "disabled"]},
                    "archiveError": {"type": ["string", "null"]}}},
                "Run": {"type": "object", "properties": {
                    "source": {"enum": ["live", "archived"]}, "summary": {"$ref": "#/components/schemas/RunSummary"},
                    "metadata": {"type": "object"}, "spec": {"type": "object"}, "status": {"type": "object"},
                    "report": {"type": ["object", "null"], "description": "archived runs: the engine's report with full outputs"},
                    "result": {}}},
                "Outputs": {"type": "object", "properties": {
                    "source": {"enum": ["redis", "status", "archive"]}, "phase": {"type": "string"},
                    "steps": {"type": "array", "items": {"$ref": "#/components/schemas/StepOutput"}},
                    "result": {}, "error": {"type": ["string", "null"]}}},
                "StepOutput": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "tool": {"type": "string"}, "phase": {"type": "string"},
                    "attempts": {"type": "integer"}, "output": {}, "error": {"type": ["string", "null"]},
                    "startedAt": {"type": "string"}, "finishedAt": {"type": "string"}, "message": {"type": "string"}}},
                "RunEvent": {"type": "object", "properties": {"kind": {"type": "string"}, "step": {"type": ["integer", "null"]}, "phase": {"type": "string"}, "attempt": {"type": ["integer", "null"]}}},
                "CreateRun": {"type": "object", "required": ["spec"], "properties": {
                    "apiVersion": {"const": "crane.dev/v1alpha1"}, "kind": {"const": "AgentRun"},
                    "metadata": {"type": "object", "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}, "labels": {"type": "object"}, "annotations": {"type": "object"}}},
                    "spec": {"$ref": "#/components/schemas/AgentRunSpec"}}},
                "AgentRunSpec": {"type": "object", "description": "An AgentRun's spec (see the CRD crds/agentruns.crane.dev.yaml): prompt and/or plan, workerPool, planner, retry, stepTimeoutSeconds, activeDeadlineSeconds, failurePolicy, ttlSecondsAfterFinished, model, budget, approval.",
                    "properties": {"prompt": {"type": "string"}, "plan": {"type": "object"}, "workerPool": {"type": "string"}}},
                "CompatCreated": {"type": "object", "properties": {"id": {"type": "string"}, "namespace": {"type": "string"}, "uid": {"type": "string"}, "phase": {"type": "string"}}},
                "CompatRun": {"type": "object", "properties": {"id": {"type": "string"}, "namespace": {"type": "string"}, "uid": {"type": "string"}, "phase": {"type": "string"}, "plan": {}, "steps": {"type": "array", "items": {"$ref": "#/components/schemas/StepOutput"}}, "result": {}, "error": {"type": ["string", "null"]}}},
                "Deleted": {"type": "object", "properties": {"deleted": {"enum": ["live", "archived"]}, "name": {"type": "string"}, "uid": {"type": "string"}}},
                "DecisionBody": {"type": "object", "properties": {"comment": {"type": "string", "maxLength": 1024}}},
                "UserInfo": {"type": "object", "properties": {"username": {"type": "string"}, "groups": {"type": "array", "items": {"type": "string"}}}},
                "NameList": {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}}},
                "Object": {"type": "object", "description": "A Kubernetes object as the apiserver returned it (managedFields removed)."},
                "ObjectList": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Object"}}}}
            }
        }
    })
}

/// `GET /api/v1/openapi.json` (no token needed: it holds nothing private).
pub async fn serve() -> Json<Value> {
    Json(document())
}
