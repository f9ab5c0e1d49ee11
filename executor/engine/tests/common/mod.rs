//! Shared test support for the engines: the `flaky` tool and the scenario suite every
//! `Executor` must pass (the in-process engine here, the Redis engine in `redis_*.rs`).
#![allow(dead_code)] // each test binary uses its own subset

pub mod scenarios;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crane_core::tool::{Tool, ToolContext, ToolError, ToolFuture, ToolSpec, Toolbox};
use crane_tools::{MemoryTodoStore, TodoStore};
use serde_json::{Value, json};

/// Test-only tool: `flaky {failures: N}` fails with a transient error the first N times it is
/// called for a given (namespace, run, step), then returns `{"calls": N + 1}`.
pub struct Flaky {
    calls: Mutex<HashMap<(String, String, u32), u32>>,
}

/// `flaky`'s spec.
pub fn flaky_spec() -> ToolSpec {
    ToolSpec::new(
        "flaky",
        "Fails transiently `failures` times per run step, then succeeds (tests only).",
        json!({
            "type": "object",
            "properties": {"failures": {"type": "integer", "minimum": 0, "maximum": 100}},
            "required": ["failures"],
            "additionalProperties": false
        }),
    )
}

impl Tool for Flaky {
    fn execute<'a>(&'a self, ctx: &'a ToolContext, input: Value) -> ToolFuture<'a> {
        Box::pin(async move {
            let failures = input.get("failures").and_then(Value::as_u64).unwrap_or(0);
            let calls = {
                let mut map = self
                    .calls
                    .lock()
                    .map_err(|_| ToolError::Failed("flaky: lock poisoned".into()))?;
                let n = map
                    .entry((ctx.namespace.clone(), ctx.run_id.clone(), ctx.step_id))
                    .or_insert(0);
                *n += 1;
                *n
            };
            if u64::from(calls) <= failures {
                Err(ToolError::Transient(format!(
                    "flaky: planned failure {calls} of {failures}"
                )))
            } else {
                Ok(json!({ "calls": calls }))
            }
        })
    }
}

/// A fresh `flaky` tool (its counters start empty), with its spec.
pub fn flaky_tool() -> (ToolSpec, Arc<dyn Tool>) {
    let tool = Flaky {
        calls: Mutex::new(HashMap::new()),
    };
    (flaky_spec(), Arc::new(tool))
}

/// The standard tools over `store`, plus `flaky`: what the scenario suite needs.
pub fn scenario_toolbox(store: Arc<dyn TodoStore>) -> Toolbox {
    crane_tools::standard(store).with([flaky_tool()])
}

/// `scenario_toolbox` with todos in memory.
pub fn memory_scenario_toolbox() -> Toolbox {
    scenario_toolbox(Arc::new(MemoryTodoStore::default()))
}
