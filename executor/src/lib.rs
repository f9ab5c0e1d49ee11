//! Crane's domain library: plan model and validation, tools, variables, planners, the DAG
//! rules, and the two engines that run a plan (in-process and on Redis). Linked by both
//! `crane-executor` and `crane-operator`, so the rules live in exactly one place.
#![forbid(unsafe_code)]

pub mod calc;
pub mod dag;
pub mod engine;
pub mod local;
pub mod plan;
pub mod planner;
pub mod run;
pub mod tools;
pub mod validate;
pub mod vars;
