//! The shared scenario suite on the in-process engine (`LocalExecutor`).

mod common;

use common::memory_scenario_toolbox;
use crane_engine::{Executor, LocalExecutor};

/// A fresh in-process engine with the scenario tools.
async fn with_local(scenario: impl AsyncFnOnce(&dyn Executor)) {
    scenario(&LocalExecutor::new(memory_scenario_toolbox())).await;
}

common::scenarios::scenario_tests!(with_local);
