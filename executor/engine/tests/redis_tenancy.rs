//! Namespace users on a real Redis: what a namespace's login can and cannot touch, rotation,
//! and wiping a deleted or re-created namespace.

mod redis_common;

use crane_engine::api::{self, Auth};
use crane_engine::tenancy::{self, Claim};
use crane_engine::{EngineConfig, PoolName, RunKeys};
use crane_tools::todo::{RedisTodoStore, TodoStore};
use redis::aio::ConnectionManager;
use redis_common::{NAMESPACE, options, plan};
use serde_json::json;

const OTHER: &str = "other-team";

async fn login(e: &redis_common::Engine, ns: &str, password: &str) -> redis::RedisResult<()> {
    let client = api::client(
        &e.server.url(),
        &Auth {
            username: Some(tenancy::username(ns)),
            password: Some(password.to_owned()),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut c = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut c).await?;
    Ok(())
}

async fn raw(conn: &mut ConnectionManager, args: &[&str]) -> redis::RedisResult<redis::Value> {
    redis::cmd(args[0]).arg(&args[1..]).query_async(conn).await
}

fn is_noperm(r: &redis::RedisResult<redis::Value>) -> bool {
    matches!(r, Err(e) if e.to_string().to_lowercase().contains("noperm")
        || e.to_string().contains("no permissions"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_login_reaches_its_own_keys_and_nothing_else() {
    let mut e = redis_common::engine(false).await;
    tenancy::ensure_user(&mut e.admin, OTHER, &["other-pw"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // The other namespace has a run and a todo.
    let other_pool = PoolName::parse(&format!("{OTHER}/default")).unwrap_or_else(|e| panic!("{e}"));
    let other_run = RunKeys::new(OTHER, "secret-run").unwrap_or_else(|e| panic!("{e}"));
    let p = plan(json!([{"id": 1, "tool": "wait", "input": {"ms": 1}}]));
    api::init_run(
        &mut e.admin,
        &other_run,
        &other_pool,
        &p,
        &options(),
        &EngineConfig::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    RedisTodoStore::new(e.admin.clone())
        .add(OTHER, "k", "planted by B")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // As the tests' namespace: reading, writing or deleting the other's keys is refused.
    for args in [
        vec!["HGETALL", &other_run.steps()],
        vec!["SET", "crane:ns:other-team:{x}:y", "1"],
        vec!["DEL", &other_run.meta()],
        vec!["XLEN", &other_pool.queue()],
        vec!["XREAD", "STREAMS", "crane:events", "0"],
        vec!["KEYS", "*"],
        vec!["FLUSHALL"],
        vec!["CONFIG", "GET", "requirepass"],
        vec!["ACL", "LIST"],
        vec!["SCRIPT", "FLUSH"],
        vec!["PUBLISH", "x", "y"],
        vec!["HGET", "crane:owners", OTHER],
    ] {
        let r = raw(&mut e.conn, &args).await;
        assert!(is_noperm(&r), "{args:?} was allowed: {r:?}");
    }
    // Submitting to the other's pool fails (the engine refuses the mix; Redis refuses the keys).
    let mine = RunKeys::new(NAMESPACE, "stolen").unwrap_or_else(|e| panic!("{e}"));
    let err = api::init_run(
        &mut e.conn,
        &mine,
        &other_pool,
        &p,
        &options(),
        &EngineConfig::default(),
    )
    .await
    .expect_err("a run in another namespace's pool");
    assert!(err.to_string().contains("namespace"), "{err}");
    let err = api::init_run(
        &mut e.conn,
        &other_run,
        &other_pool,
        &p,
        &options(),
        &EngineConfig::default(),
    )
    .await
    .expect_err("writing another namespace's run");
    assert!(err.to_string().to_lowercase().contains("perm"), "{err}");
    // The todo store refuses the other namespace's list and does not add to it.
    let store = RedisTodoStore::new(e.conn.clone());
    assert!(store.list(OTHER).await.is_err());
    assert!(store.add(OTHER, "k2", "planted by A").await.is_err());
    let theirs = RedisTodoStore::new(e.admin.clone())
        .list(OTHER)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    // What the engine needs is allowed: its own keys, appending to the notification stream.
    assert!(store.add(NAMESPACE, "k", "mine").await.is_ok());
    assert!(
        raw(&mut e.conn, &["XADD", "crane:events", "*", "run", "x"])
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_previous_password_only_while_asked() {
    let mut e = redis_common::engine(false).await;
    let ns = "rotating";
    tenancy::ensure_user(&mut e.admin, ns, &["old-password"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(login(&e, ns, "old-password").await.is_ok());
    tenancy::ensure_user(&mut e.admin, ns, &["new-password", "old-password"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(login(&e, ns, "new-password").await.is_ok());
    assert!(login(&e, ns, "old-password").await.is_ok());
    tenancy::ensure_user(&mut e.admin, ns, &["new-password"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(login(&e, ns, "old-password").await.is_err());
    assert!(login(&e, ns, "wrong").await.is_err());
    assert!(login(&e, ns, "new-password").await.is_ok());
    // Redefining a user never widens it: hostile namespace names are refused outright.
    for bad in ["*", "a:*", "crane-ns-x ~*"] {
        assert!(
            tenancy::ensure_user(&mut e.admin, bad, &["pw"])
                .await
                .is_err(),
            "{bad:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_namespace_starts_empty_and_a_deleted_one_leaves_nothing() {
    let mut e = redis_common::engine(false).await;
    let store = RedisTodoStore::new(e.conn.clone());
    assert_eq!(
        tenancy::claim_namespace(&mut e.admin, NAMESPACE, "uid-1")
            .await
            .ok(),
        Some(Claim::Wiped(0))
    );
    store
        .add(NAMESPACE, "k", "first tenant")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    e.init(
        "run-1",
        &plan(json!([{"id": 1, "tool": "wait", "input": {"ms": 1}}])),
        &options(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        tenancy::claim_namespace(&mut e.admin, NAMESPACE, "uid-1")
            .await
            .ok(),
        Some(Claim::Kept)
    );
    assert_eq!(store.list(NAMESPACE).await.map(|t| t.len()).ok(), Some(1));

    // Same name, new incarnation: the first tenant's data is gone before the second sees it.
    match tenancy::claim_namespace(&mut e.admin, NAMESPACE, "uid-2").await {
        Ok(Claim::Wiped(n)) => assert!(n > 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.list(NAMESPACE).await.map(|t| t.len()).ok(), Some(0));

    // Deleting: the user goes (its open connection with it), then every key.
    e.init(
        "run-2",
        &plan(json!([{"id": 1, "tool": "wait", "input": {"ms": 1}}])),
        &options(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // A key of another namespace that merely shares a prefix must survive.
    tenancy::ensure_user(&mut e.admin, "scenarios-two", &["pw"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    RedisTodoStore::new(e.admin.clone())
        .add("scenarios-two", "k", "neighbour")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let n = tenancy::delete_namespace(&mut e.admin, NAMESPACE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(n > 0);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("crane:ns:scenarios:*")
        .query_async(&mut e.admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(left.is_empty(), "{left:?}");
    assert!(login(&e, NAMESPACE, redis_common::PASSWORD).await.is_err());
    let users = tenancy::namespaces_with_users(&mut e.admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(users, ["scenarios-two"]);
    assert_eq!(
        RedisTodoStore::new(e.admin.clone())
            .list("scenarios-two")
            .await
            .map(|t| t.len())
            .ok(),
        Some(1)
    );
}

/// Redis forgets the namespace's user (a restart without ACL persistence) while a worker runs:
/// its connections are refused until the operator re-creates the user, and then it works
/// again by itself. A `ConnectionManager` alone would keep failing every call: it reconnects
/// only after I/O errors, and the refused reconnect is not one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_comes_back_when_its_forgotten_login_is_restored() {
    let mut e = redis_common::engine(false).await;
    let workers = e
        .spawn_workers(
            1,
            e.worker_config(2),
            std::sync::Arc::new(crane_tools::in_memory()),
        )
        .await;
    let user = tenancy::username(NAMESPACE);
    // ACL DELUSER also closes the user's connections: the worker reconnects and is refused
    // for longer than its connections retry on their own.
    let _: redis::Value = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut e.admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    tenancy::ensure_user(&mut e.admin, NAMESPACE, &[redis_common::PASSWORD])
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let keys = e.keys("after-restore");
    api::init_run(
        &mut e.admin,
        &keys,
        &e.pool,
        &plan(json!([{"id": 1, "tool": "calculator", "input": {"expression": "6*7"}}])),
        &options(),
        &EngineConfig::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let report = api::wait_for_run(
        &e.admin_client,
        &mut e.admin,
        &keys,
        Some(std::time::Duration::from_secs(30)),
    )
    .await
    .unwrap_or_else(|e| panic!("the run did not finish: {e}"));
    assert_eq!(
        report.phase,
        crane_core::run::RunPhase::Succeeded,
        "{report:#?}"
    );
    workers.stop().await;
}
