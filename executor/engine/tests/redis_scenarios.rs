//! The shared scenario suite on the Redis engine: real redis-server, plans submitted through
//! `RedisExecutor`, executed by two in-process workers taking steps from the pool's stream.

mod common;
mod redis_common;

use std::sync::Arc;

use common::scenario_toolbox;
use crane_engine::Executor;
use crane_tools::todo::RedisTodoStore;

/// A fresh Redis with two workers of four slots each, stopped when the scenario ends.
async fn with_redis(scenario: impl AsyncFnOnce(&dyn Executor)) {
    let engine = redis_common::engine(false).await;
    let store = Arc::new(RedisTodoStore::new(engine.conn.clone()));
    let toolbox = Arc::new(scenario_toolbox(store));
    let workers = engine
        .spawn_workers(2, engine.worker_config(4), toolbox.clone())
        .await;
    scenario(&engine.executor(toolbox)).await;
    workers.stop().await;
}

common::scenarios::scenario_tests!(with_redis);
