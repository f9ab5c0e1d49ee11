//! Namespace identities in Redis: the ACL user each namespace's pods log in as, what it may
//! touch, and how a namespace's data is wiped.
//!
//! A namespace's user may run data commands and scripts on keys under
//! `crane:ns:<namespace>:` only, and append to the global notification stream without
//! reading it. Anything else (another namespace's keys, `KEYS`, `FLUSHALL`, `CONFIG`, `ACL`,
//! pub/sub, `SCRIPT FLUSH`) is refused with `NOPERM`. The operator alone holds an
//! administrative login and calls these functions; the rules live here, next to the key
//! schema they depend on, so the engine's tests run every scenario as a namespace user.

use redis::aio::ConnectionLike;

use crate::EngineError;
use crate::keys::{GLOBAL_EVENTS, acl_key_pattern, validate_namespace};

/// Prefix of every namespace user's name.
pub const USER_PREFIX: &str = "crane-ns-";

/// Hash (outside every namespace, so only the operator reads it) of namespace → the
/// incarnation (Kubernetes UID) that owns its keys, so a re-created namespace starts empty.
pub const OWNERS: &str = "crane:owners";

/// The Redis user of namespace `ns`.
pub fn username(ns: &str) -> String {
    format!("{USER_PREFIX}{ns}")
}

/// The namespace a Redis user belongs to, if it is a namespace user.
pub fn namespace_of(user: &str) -> Option<&str> {
    user.strip_prefix(USER_PREFIX)
        .filter(|ns| validate_namespace(ns).is_ok())
}

/// The `ACL SETUSER` arguments after the user name: a complete definition (reset first, so
/// whatever the user had before is gone), logging in with any of `passwords`.
pub fn acl_rules(ns: &str, passwords: &[&str]) -> Result<Vec<String>, EngineError> {
    validate_namespace(ns)?;
    if passwords.is_empty() || passwords.iter().any(|p| p.is_empty()) {
        return Err(EngineError::Config(format!(
            "the Redis user of namespace {ns} needs a non-empty password"
        )));
    }
    let mut rules: Vec<String> = ["reset", "on"].map(String::from).to_vec();
    rules.extend(passwords.iter().map(|p| format!(">{p}")));
    rules.push(format!("~{}", acl_key_pattern(ns)));
    // The notification stream: append only (it names other namespaces' runs).
    rules.push(format!("%W~{GLOBAL_EVENTS}"));
    rules.extend(
        [
            "resetchannels",
            "-@all",
            "+@read",
            "+@write",
            "+@scripting",
            "+@connection",
            "+@transaction",
            "+time",
            "-@dangerous",
            "-@admin",
            "-@pubsub",
            "-script|flush",
            "-script|kill",
            "-function",
        ]
        .map(String::from),
    );
    Ok(rules)
}

/// Creates or redefines namespace `ns`'s user, logging in with any of `passwords` (the
/// current one first; a previous one during a rotation's grace period). Connections already
/// logged in stay so.
pub async fn ensure_user<C: ConnectionLike>(
    conn: &mut C,
    ns: &str,
    passwords: &[&str],
) -> Result<(), EngineError> {
    let rules = acl_rules(ns, passwords)?;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(username(ns))
        .arg(&rules)
        .query_async::<()>(conn)
        .await
        .map_err(EngineError::redis("ACL SETUSER"))
}

/// What [`claim_namespace`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The keys were already this incarnation's (or there were none).
    Kept,
    /// Keys of an earlier namespace of the same name were found and deleted (their count).
    Wiped(u64),
}

/// Records that namespace `ns` is now incarnation `uid` (its Kubernetes UID). Keys left by an
/// earlier incarnation, deleted before the operator could clean up, are wiped first.
pub async fn claim_namespace<C: ConnectionLike>(
    conn: &mut C,
    ns: &str,
    uid: &str,
) -> Result<Claim, EngineError> {
    validate_namespace(ns)?;
    let owner: Option<String> = redis::cmd("HGET")
        .arg(OWNERS)
        .arg(ns)
        .query_async(conn)
        .await
        .map_err(EngineError::redis("reading the namespace owner"))?;
    let claim = match owner.as_deref() {
        Some(o) if o == uid => return Ok(Claim::Kept),
        // Another incarnation's keys, or keys nobody claimed: a namespace seen for the
        // first time never inherits data.
        _ => Claim::Wiped(wipe_keys(conn, ns).await?),
    };
    redis::cmd("HSET")
        .arg(OWNERS)
        .arg(ns)
        .arg(uid)
        .query_async::<()>(conn)
        .await
        .map_err(EngineError::redis("recording the namespace owner"))?;
    Ok(claim)
}

/// Deletes every key of namespace `ns` (`SCAN` + `UNLINK` in batches, so Redis is never
/// blocked for long) and returns how many there were.
pub async fn wipe_keys<C: ConnectionLike>(conn: &mut C, ns: &str) -> Result<u64, EngineError> {
    validate_namespace(ns)?;
    let pattern = acl_key_pattern(ns);
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(EngineError::redis("scanning a namespace's keys"))?;
        if !keys.is_empty() {
            deleted += redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<u64>(conn)
                .await
                .map_err(EngineError::redis("deleting a namespace's keys"))?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// Removes namespace `ns` from Redis: its user first (Redis closes its open connections, so
/// no worker writes behind the wipe), then its keys and its owner record. Returns how many
/// keys were deleted.
pub async fn delete_namespace<C: ConnectionLike>(
    conn: &mut C,
    ns: &str,
) -> Result<u64, EngineError> {
    validate_namespace(ns)?;
    redis::cmd("ACL")
        .arg("DELUSER")
        .arg(username(ns))
        .query_async::<u64>(conn)
        .await
        .map_err(EngineError::redis("ACL DELUSER"))?;
    let n = wipe_keys(conn, ns).await?;
    redis::cmd("HDEL")
        .arg(OWNERS)
        .arg(ns)
        .query_async::<u64>(conn)
        .await
        .map_err(EngineError::redis("forgetting the namespace owner"))?;
    Ok(n)
}

/// The namespaces whose keys an incarnation claimed ([`claim_namespace`]).
pub async fn claimed_namespaces<C: ConnectionLike>(
    conn: &mut C,
) -> Result<Vec<String>, EngineError> {
    let names: Vec<String> = redis::cmd("HKEYS")
        .arg(OWNERS)
        .query_async(conn)
        .await
        .map_err(EngineError::redis("listing claimed namespaces"))?;
    Ok(names
        .into_iter()
        .filter(|ns| validate_namespace(ns).is_ok())
        .collect())
}

/// The namespaces that have a Redis user.
pub async fn namespaces_with_users<C: ConnectionLike>(
    conn: &mut C,
) -> Result<Vec<String>, EngineError> {
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(conn)
        .await
        .map_err(EngineError::redis("ACL USERS"))?;
    Ok(users
        .iter()
        .filter_map(|u| namespace_of(u).map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_exactly_the_namespace() {
        let rules = acl_rules("team-a", &["pw1", "pw2"]).unwrap();
        assert_eq!(&rules[..4], ["reset", "on", ">pw1", ">pw2"]);
        assert!(rules.contains(&"~crane:ns:team-a:*".to_owned()));
        assert!(rules.contains(&"%W~crane:events".to_owned()));
        assert_eq!(rules.iter().filter(|r| r.starts_with('~')).count(), 1);
    }

    #[test]
    fn hostile_namespaces_and_passwords_are_refused() {
        for ns in ["", "a*", "team-a:*", "A", "a b", "-a", &"a".repeat(64)] {
            assert!(acl_rules(ns, &["pw"]).is_err(), "{ns:?}");
        }
        assert!(acl_rules("a", &[]).is_err());
        assert!(acl_rules("a", &[""]).is_err());
    }

    #[test]
    fn users_map_back_to_namespaces() {
        assert_eq!(namespace_of(&username("team-a")), Some("team-a"));
        assert_eq!(namespace_of("default"), None);
        assert_eq!(namespace_of("crane-ns-Bad*"), None);
    }
}
