//! Deleted tool objects. A run keeps the bindings it was planned with, so a Tool or
//! MCPServer deleted mid-run would otherwise go on being called: the operator records each
//! deleted object's UID in its namespace ([`crate::keys::deleted_tool_objects`]) and workers
//! check it before every call of a bound tool. UIDs, not names: a re-created object is a new
//! object, and runs planned with the old one still fail.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionLike;

use crate::EngineError;
use crate::keys::{TOOL_OBJECTS, deleted_tool_objects};

/// How long a deletion is remembered (a run older than this that still calls the object's
/// tools is not stopped); also the idle expiry of a namespace's set.
pub const REMEMBERED: Duration = Duration::from_secs(30 * 24 * 3600);

/// Every tool object the operator knew of: UID → namespace.
pub async fn known<C: ConnectionLike>(
    conn: &mut C,
) -> Result<HashMap<String, String>, EngineError> {
    redis::cmd("HGETALL")
        .arg(TOOL_OBJECTS)
        .query_async(conn)
        .await
        .map_err(EngineError::redis("reading the known tool objects"))
}

/// Records objects that appeared (`added`, UID and namespace) and objects that are gone
/// (`deleted`, at `now_ms`), in one round trip.
pub async fn record<C: ConnectionLike>(
    conn: &mut C,
    added: &[(&str, &str)],
    deleted: &[(&str, &str)],
    now_ms: u64,
) -> Result<(), EngineError> {
    let mut pipe = redis::pipe();
    for (uid, ns) in added {
        pipe.hset(TOOL_OBJECTS, *uid, *ns).ignore();
    }
    let oldest = now_ms.saturating_sub(REMEMBERED.as_millis() as u64);
    for (uid, ns) in deleted {
        pipe.hdel(TOOL_OBJECTS, *uid).ignore();
        // Not a namespace (the hash was edited by hand): nothing can run there to stop.
        let Ok(key) = deleted_tool_objects(ns) else {
            continue;
        };
        pipe.zadd(&key, *uid, now_ms).ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({oldest}"))
            .ignore();
        pipe.pexpire(&key, REMEMBERED.as_millis() as i64).ignore();
    }
    if added.is_empty() && deleted.is_empty() {
        return Ok(());
    }
    pipe.query_async::<()>(conn)
        .await
        .map_err(EngineError::redis("recording tool objects"))
}

/// Whether the object `uid` of namespace `ns` was deleted.
pub async fn is_deleted<C: ConnectionLike>(
    conn: &mut C,
    ns: &str,
    uid: &str,
) -> Result<bool, EngineError> {
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(deleted_tool_objects(ns)?)
        .arg(uid)
        .query_async(conn)
        .await
        .map_err(EngineError::redis("checking for a deleted tool object"))?;
    Ok(score.is_some())
}
