//! The shared scenario suite on the in-process engine (`LocalExecutor`).

mod common;

use common::memory_scenario_toolbox;
use common::scenarios;
use crane_engine::LocalExecutor;

fn exec() -> LocalExecutor {
    LocalExecutor::new(memory_scenario_toolbox())
}

macro_rules! scenario_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            scenarios::$name(&exec()).await;
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

/// One executor for the whole suite, as a long-lived worker would be.
#[tokio::test]
async fn run_all_on_one_executor() {
    scenarios::run_all(&exec()).await;
}
