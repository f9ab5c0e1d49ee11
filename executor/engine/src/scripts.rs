//! The Lua scripts that change engine state, and the plumbing to call them (singly, or many
//! in one pipeline). Run scripts touch only the five keys of one run; pool scripts only the
//! four keys of one pool. The scripts are the only writers of run state.

use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::{Script, Value};

use super::EngineError;

const COMMON: &str = include_str!("lua/common.lua");

fn run_script(body: &str) -> Script {
    Script::new(&run_code(body))
}

fn run_code(body: &str) -> String {
    format!("{COMMON}\n{body}")
}

/// Source of every script, for `SCRIPT LOAD` after a Redis restart emptied the cache.
static CODES: LazyLock<[String; 11]> = LazyLock::new(|| {
    [
        run_code(include_str!("lua/init.lua")),
        run_code(include_str!("lua/start.lua")),
        run_code(include_str!("lua/complete.lua")),
        run_code(include_str!("lua/release.lua")),
        run_code(include_str!("lua/cancel.lua")),
        run_code(include_str!("lua/sweep.lua")),
        run_code(include_str!("lua/restore.lua")),
        run_code(include_str!("lua/retry.lua")),
        include_str!("lua/pool_after.lua").to_owned(),
        include_str!("lua/promote.lua").to_owned(),
        include_str!("lua/breakers.lua").to_owned(),
    ]
});

/// Every script the engine uses, compiled once.
pub struct Scripts {
    pub init: Script,
    pub start: Script,
    pub complete: Script,
    pub release: Script,
    pub cancel: Script,
    pub sweep: Script,
    pub restore: Script,
    pub retry: Script,
    pub pool_after: Script,
    pub promote: Script,
    pub breakers: Script,
}

/// The process-wide script set.
pub static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    init: run_script(include_str!("lua/init.lua")),
    start: run_script(include_str!("lua/start.lua")),
    complete: run_script(include_str!("lua/complete.lua")),
    release: run_script(include_str!("lua/release.lua")),
    cancel: run_script(include_str!("lua/cancel.lua")),
    sweep: run_script(include_str!("lua/sweep.lua")),
    restore: run_script(include_str!("lua/restore.lua")),
    retry: run_script(include_str!("lua/retry.lua")),
    pool_after: Script::new(include_str!("lua/pool_after.lua")),
    promote: Script::new(include_str!("lua/promote.lua")),
    breakers: Script::new(include_str!("lua/breakers.lua")),
});

impl Scripts {
    /// Loads every script into the server's cache (after a connect or a Redis restart), so
    /// pipelines can use EVALSHA.
    pub async fn load(&self, conn: &mut ConnectionManager) -> Result<(), EngineError> {
        let mut pipe = redis::pipe();
        for code in CODES.iter() {
            pipe.cmd("SCRIPT").arg("LOAD").arg(code).ignore();
        }
        pipe.query_async::<()>(conn)
            .await
            .map_err(EngineError::redis("loading scripts"))
    }
}

/// One script call, ready to go into a pipeline.
pub fn evalsha(script: &Script, keys: &[String], args: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    cmd
}

/// Runs one script call (loading the script if the server lost it).
pub async fn eval(
    conn: &mut ConnectionManager,
    script: &Script,
    keys: &[String],
    args: &[String],
    what: &'static str,
) -> Result<Vec<String>, EngineError> {
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(k);
    }
    for a in args {
        inv.arg(a);
    }
    let v: Value = inv
        .invoke_async(conn)
        .await
        .map_err(EngineError::redis(what))?;
    strings(v, what)
}

/// Runs a pipeline of EVALSHA calls; when Redis lost its script cache (a restart), loads the
/// scripts and tries once more. Every call in it is idempotent against a second delivery.
pub async fn eval_pipeline(
    conn: &mut ConnectionManager,
    cmds: Vec<redis::Cmd>,
    what: &'static str,
) -> Result<Vec<Vec<String>>, EngineError> {
    pipeline_values(conn, cmds, what)
        .await?
        .into_iter()
        .map(|v| strings(v, what))
        .collect()
}

/// Like [`eval_pipeline`], for batch scripts (`start`, `complete`) that reply with one row per
/// item of the batch.
pub async fn eval_pipeline_rows(
    conn: &mut ConnectionManager,
    cmds: Vec<redis::Cmd>,
    what: &'static str,
) -> Result<Vec<Vec<Vec<String>>>, EngineError> {
    pipeline_values(conn, cmds, what)
        .await?
        .into_iter()
        .map(|v| rows(v, what))
        .collect()
}

async fn pipeline_values(
    conn: &mut ConnectionManager,
    cmds: Vec<redis::Cmd>,
    what: &'static str,
) -> Result<Vec<Value>, EngineError> {
    if cmds.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for c in cmds {
        pipe.add_command(c);
    }
    match pipe.query_async(conn).await {
        Ok(v) => Ok(v),
        Err(e) if e.code() == Some("NOSCRIPT") => {
            SCRIPTS.load(conn).await?;
            pipe.query_async(conn)
                .await
                .map_err(EngineError::redis(what))
        }
        Err(e) => Err(EngineError::redis(what)(e)),
    }
}

/// A batch script's reply: an array of rows, each an array of strings and integers.
pub fn rows(v: Value, what: &'static str) -> Result<Vec<Vec<String>>, EngineError> {
    match v {
        Value::Array(items) => items.into_iter().map(|i| strings(i, what)).collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(EngineError::Protocol {
            what,
            detail: format!("expected rows, got {other:?}"),
        }),
    }
}

/// Flattens a script reply (an array of strings and integers) into strings.
pub fn strings(v: Value, what: &'static str) -> Result<Vec<String>, EngineError> {
    match v {
        Value::Array(items) | Value::Set(items) => {
            items.into_iter().map(|i| scalar(i, what)).collect()
        }
        Value::Nil => Ok(Vec::new()),
        other => Ok(vec![scalar(other, what)?]),
    }
}

fn scalar(v: Value, what: &'static str) -> Result<String, EngineError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(|_| EngineError::Protocol {
            what,
            detail: "reply is not UTF-8".into(),
        }),
        Value::SimpleString(s) => Ok(s),
        Value::Int(i) => Ok(i.to_string()),
        Value::Okay => Ok("OK".into()),
        Value::Nil => Ok(String::new()),
        Value::Double(d) => Ok(d.to_string()),
        Value::ServerError(e) => Err(EngineError::Protocol {
            what,
            detail: format!("{e:?}"),
        }),
        other => Err(EngineError::Protocol {
            what,
            detail: format!("unexpected reply {other:?}"),
        }),
    }
}
