//! Crane's built-in tools — `calculator`, `todo_store.*` (memory and Redis stores) and
//! `wait` — and the toolboxes that pair them with their specs from `crane_core::builtins`.

pub mod calculator;
pub mod http;
pub mod llm;
pub mod mcp;
pub mod remote;
pub mod secrets;
pub mod todo;
pub mod wait;

use std::sync::Arc;

use crane_core::builtins::{self, CALCULATOR, WAIT};
use crane_core::tool::{Tool, ToolSpec, Toolbox};

pub use remote::Remote;
pub use secrets::Secrets;
pub use todo::{MemoryTodoStore, RedisTodoStore, TodoStore};

/// The built-in tools over `store`, each with its spec.
pub fn builtins(store: Arc<dyn TodoStore>) -> Vec<(ToolSpec, Arc<dyn Tool>)> {
    let mut runners: Vec<(&str, Arc<dyn Tool>)> = vec![
        (CALCULATOR, Arc::new(calculator::Calculator)),
        (WAIT, Arc::new(wait::Wait)),
    ];
    runners.extend(todo::todo_tools(store));
    builtins::specs()
        .into_iter()
        .filter_map(|spec| {
            let (_, tool) = runners.iter().find(|(name, _)| *name == spec.name)?;
            Some((spec, tool.clone()))
        })
        .collect()
}

/// The built-in tools with todos in `store` (Redis for workers).
pub fn standard(store: Arc<dyn TodoStore>) -> Toolbox {
    Toolbox::new(builtins(store))
}

/// The built-in tools with todos kept in this process (`crane-executor run` and `tool`).
pub fn in_memory() -> Toolbox {
    standard(Arc::new(MemoryTodoStore::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_spec_but_llm_and_approval_has_an_implementation() {
        // `llm` needs the run's Model, budget and the cluster's rate limits, `approval` a
        // person: the worker runs the first (crate::llm makes the call) and parks the second.
        let toolbox = in_memory();
        assert_eq!(
            toolbox.catalog().names().collect::<Vec<_>>(),
            builtins::specs()
                .iter()
                .map(|s| s.name.as_str())
                .filter(|n| *n != builtins::LLM && *n != builtins::APPROVAL)
                .collect::<Vec<_>>()
        );
        assert_eq!(builtins(Arc::new(MemoryTodoStore::default())).len(), 7);
    }
}
