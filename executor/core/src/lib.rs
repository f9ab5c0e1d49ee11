//! Crane's domain model, with no I/O: the plan, the DAG rules both engines follow, step
//! variables, plan validation, what a run is asked to do and what it reports, the calculator's
//! arithmetic, and the tool seam (specs, the catalog, the trait tools implement). Every other
//! crate builds on this one; it talks to no network, store or clock.
#![forbid(unsafe_code)]

pub mod builtins;
pub mod calc;
pub mod dag;
pub mod model;
pub mod plan;
pub mod run;
pub mod text;
pub mod tool;
pub mod validate;
pub mod vars;

pub use tool::{Catalog, Tool, ToolContext, ToolError, ToolFuture, ToolSpec, Toolbox};
