//! The shared scenario suite on the Redis engine: real redis-server, plans submitted through
//! `RedisExecutor`, executed by two in-process workers taking steps from the pool's stream.

mod common;
mod redis_common;

use std::sync::Arc;

use common::{scenario_toolbox, scenarios};
use crane_tools::todo::RedisTodoStore;

macro_rules! scenario_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let engine = redis_common::engine(false).await;
            let toolbox = Arc::new(scenario_toolbox(Arc::new(RedisTodoStore::new(engine.conn.clone()))));
            let workers = engine.spawn_workers(2, engine.worker_config(4), toolbox.clone()).await;
            scenarios::$name(&engine.executor(toolbox)).await;
            workers.stop().await;
        }
    )*};
}

scenario_tests!(
    dag_order_and_parallelism,
    variables_across_steps,
    several_sinks_make_an_object_result,
    todo_add_then_list,
    retry_then_success,
    retries_exhausted,
    non_retryable_failure,
    fail_fast,
    continue_independent,
    step_timeout,
    input_rechecked_after_resolution,
    invalid_plan_is_refused,
);

/// The whole suite against one Redis and one set of long-lived workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_pool() {
    let engine = redis_common::engine(false).await;
    let toolbox = Arc::new(scenario_toolbox(Arc::new(RedisTodoStore::new(
        engine.conn.clone(),
    ))));
    let workers = engine
        .spawn_workers(2, engine.worker_config(4), toolbox.clone())
        .await;
    scenarios::run_all(&engine.executor(toolbox)).await;
    workers.stop().await;
}
