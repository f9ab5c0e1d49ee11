//! The verbs: each reads what it needs, checks it (pure helpers in [`crate::manifest`] and
//! [`crate::select`]), makes one change with a merge patch or a create, and says what it
//! did in kubectl's words (`agentrun.crane.dev/NAME created`).

use std::io::Read;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use crane_api::{Approval, Decision};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::cli::{ApprovalsArgs, Command, DecideArgs, RetryArgs, RunArgs};
use crate::client::{Connection, whoami};
use crate::error::{Action, Error};
use crate::manifest::{self, MAX_FILE_BYTES, ManifestError, RunRequest};
use crate::select::{decidable, select, table};
use crate::view::RunView;
use crate::watch::watch;

/// The field manager of every change the plugin makes (shown in managedFields).
pub const FIELD_MANAGER: &str = "kubectl-crane";
/// The annotation that asks the operator to retry a Failed run (the operator's
/// `RETRY_ANNOTATION`); any new value retries once.
pub const RETRY_ANNOTATION: &str = "crane.dev/retry";

const AGENTRUNS: &str = "agentruns.crane.dev";
const APPROVALS: &str = "approvals.crane.dev";

/// Runs one subcommand.
pub async fn execute(conn: Connection, command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Run(args) => run(&conn, args).await,
        Command::Watch(r) => watch(&conn.client, &conn.namespace, &r.run).await,
        Command::Approve(args) => decide(&conn, args, Decision::Approved).await,
        Command::Reject(args) => decide(&conn, args, Decision::Rejected).await,
        Command::Retry(args) => retry(&conn, args).await,
        Command::Cancel(r) => cancel(&conn, &r.run).await,
        Command::Approvals(args) => approvals(&conn, args).await,
    }
}

fn runs(conn: &Connection) -> Api<RunView> {
    Api::namespaced(conn.client.clone(), &conn.namespace)
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// The run, or "agentrun X not found in namespace Y".
pub async fn get_run(api: &Api<RunView>, namespace: &str, name: &str) -> Result<RunView, Error> {
    api.get_opt(name)
        .await
        .map_err(|e| Error::kube(Action::new("get", AGENTRUNS, Some(namespace)), e))?
        .ok_or_else(|| Error::RunNotFound {
            run: name.to_owned(),
            namespace: namespace.to_owned(),
        })
}

/// Reads a `-f` argument ("-": stdin), refusing more than [`MAX_FILE_BYTES`] before it is
/// all in memory.
fn read_file(path: &str) -> Result<String, Error> {
    let read_error = |source| Error::ReadFile {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    let limit = MAX_FILE_BYTES as u64 + 1;
    if path == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .map_err(read_error)?;
    }
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Error::Manifest {
            path: path.to_owned(),
            source: ManifestError::TooLarge {
                size: bytes.len(),
                max: MAX_FILE_BYTES,
            },
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })
}

async fn run(conn: &Connection, args: RunArgs) -> Result<ExitCode, Error> {
    let document = match &args.filename {
        Some(path) => {
            Some(
                manifest::parse(&read_file(path)?).map_err(|source| Error::Manifest {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let (object, namespace) = manifest::build(RunRequest {
        prompt: args.prompt.as_deref(),
        document,
        file_name: args.filename.as_deref(),
        pool: args.pool.as_deref(),
        model: args.model.as_deref(),
        namespace: &conn.namespace,
        namespace_from_flag: conn.namespace_from_flag,
    })
    .map_err(Error::Request)?;
    let created = create_strict(&conn.client, &namespace, &object)
        .await
        .map_err(|e| Error::kube(Action::new("create", AGENTRUNS, Some(&namespace)), e))?;
    let name = created.name().to_owned();
    println!("agentrun.crane.dev/{name} created");
    if args.watch {
        return watch(&conn.client, &namespace, &name).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates the AgentRun with strict field validation, as `kubectl create` does: a misspelt
/// field (`depends_on`) is an error instead of being dropped without a word.
async fn create_strict(
    client: &Client,
    namespace: &str,
    object: &Value,
) -> Result<RunView, kube::Error> {
    let url = RunView::url_path(&(), Some(namespace));
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let body = serde_json::to_vec(object).map_err(kube::Error::SerdeError)?;
    let mut request = kube::core::Request::new(url)
        .create(&pp, body)
        .map_err(kube::Error::BuildRequest)?;
    let uri = format!("{}&fieldValidation=Strict", request.uri());
    *request.uri_mut() = parse_as(request.uri(), &uri).map_err(|e| {
        kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e.into()))
    })?;
    client.request(request).await
}

/// `text` parsed as the type of `_like` (here: a URI, whose crate this one does not name).
fn parse_as<T: std::str::FromStr>(_like: &T, text: &str) -> Result<T, T::Err> {
    text.parse()
}

async fn decide(
    conn: &Connection,
    args: DecideArgs,
    decision: Decision,
) -> Result<ExitCode, Error> {
    let ns = conn.namespace.as_str();
    let run = get_run(&runs(conn), ns, &args.run).await?;
    let api: Api<Approval> = Api::namespaced(conn.client.clone(), ns);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube(Action::new("list", APPROVALS, Some(ns)), e))?;
    let awaiting_plan = run.phase() == "AwaitingApproval";
    let chosen = select(&args.run, ns, awaiting_plan, args.step, &list.items)?;
    let name = chosen.name_any();
    let me = whoami(&conn.client).await?;
    let mut spec = json!({"decision": decision, "decidedBy": me.username});
    if let Some(comment) = &args.comment {
        spec["comment"] = Value::String(comment.clone());
    }
    api.patch(&name, &params(), &Patch::Merge(json!({"spec": spec})))
        .await
        .map_err(|e| Error::kube(Action::new("patch", APPROVALS, Some(ns)), e))?;
    let verb = match decision {
        Decision::Approved => "approved",
        Decision::Rejected => "rejected",
    };
    println!("approval.crane.dev/{name} {verb} by {}", me.username);
    Ok(ExitCode::SUCCESS)
}

async fn retry(conn: &Connection, args: RetryArgs) -> Result<ExitCode, Error> {
    let ns = conn.namespace.as_str();
    let api = runs(conn);
    let run = get_run(&api, ns, &args.run).await?;
    if run.phase() != "Failed" {
        return Err(Error::NotRetryable {
            run: args.run,
            phase: run.phase().to_owned(),
        });
    }
    let token = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
        .to_string();
    // The resourceVersion makes the patch conditional: if the run changed since we saw it
    // Failed (someone else retried it), the apiserver refuses instead of queueing a second
    // retry for the next failure.
    let patch = json!({"metadata": {
        "resourceVersion": run.metadata.resource_version,
        "annotations": {RETRY_ANNOTATION: token},
    }});
    api.patch(&args.run, &params(), &Patch::Merge(patch))
        .await
        .map_err(|e| Error::kube(Action::new("patch", AGENTRUNS, Some(ns)), e))?;
    println!(
        "agentrun.crane.dev/{} retry requested ({RETRY_ANNOTATION}={token})",
        args.run
    );
    if args.watch {
        return watch(&conn.client, ns, &args.run).await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn cancel(conn: &Connection, name: &str) -> Result<ExitCode, Error> {
    let ns = conn.namespace.as_str();
    let api = runs(conn);
    let run = get_run(&api, ns, name).await?;
    if run.ending().is_some() {
        println!(
            "agentrun.crane.dev/{name} is already {}; nothing to cancel",
            run.phase()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if run.spec.cancel {
        println!("agentrun.crane.dev/{name} is already being cancelled");
        return Ok(ExitCode::SUCCESS);
    }
    api.patch(
        name,
        &params(),
        &Patch::Merge(json!({"spec": {"cancel": true}})),
    )
    .await
    .map_err(|e| Error::kube(Action::new("patch", AGENTRUNS, Some(ns)), e))?;
    println!(
        "agentrun.crane.dev/{name} cancel requested (no new step starts; running steps finish)"
    );
    Ok(ExitCode::SUCCESS)
}

async fn approvals(conn: &Connection, args: ApprovalsArgs) -> Result<ExitCode, Error> {
    let me = whoami(&conn.client).await?;
    let (api, scope): (Api<Approval>, Option<&str>) = if args.all_namespaces {
        (Api::all(conn.client.clone()), None)
    } else {
        (
            Api::namespaced(conn.client.clone(), &conn.namespace),
            Some(conn.namespace.as_str()),
        )
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube(Action::new("list", APPROVALS, scope), e))?;
    let mut rows: Vec<&Approval> = list
        .items
        .iter()
        .filter(|a| decidable(a, &me.username, &me.groups))
        .collect();
    rows.sort_by(|a, b| {
        let key = |x: &Approval| {
            (
                x.namespace(),
                x.metadata.creation_timestamp.clone(),
                x.name_any(),
            )
        };
        key(a).cmp(&key(b))
    });
    if rows.is_empty() {
        match scope {
            Some(ns) => eprintln!("No open approvals for {} in namespace {ns}.", me.username),
            None => eprintln!("No open approvals for {} in any namespace.", me.username),
        }
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", table(&rows, args.all_namespaces, Timestamp::now()));
    Ok(ExitCode::SUCCESS)
}
