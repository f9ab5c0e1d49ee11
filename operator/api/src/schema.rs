//! OpenAPI schema pieces the derives cannot express: the plan (reused from crane-executor,
//! whose JSON shape is fixed) with the bounds and CEL rules the apiserver enforces at
//! admission, and free-form JSON fields (`x-kubernetes-preserve-unknown-fields`).
//!
//! Every bound here exists for the CEL cost budget as much as for sanity: the apiserver
//! estimates each rule's worst case from `maxItems`/`maxLength`, rejects the CRD when one
//! rule's estimate passes 10 000 000, and stops any one evaluation at 1 000 000. The rules
//! below are linear in the plan's size (a map of ids is built once, then looked up), so a
//! full 500-step plan is admitted well within that budget.

use crane_core::plan::{MAX_STEPS, Plan, Step};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

/// Longest tool name accepted in a plan (tool names are short identifiers such as
/// `todo_store.add`).
pub const MAX_TOOL_NAME_CHARS: u64 = 128;
/// Longest `reasoning` text accepted per step: a sentence or two. With the other bounds, a
/// 500-step plan in spec and its mirror in status stay well inside the object size limit.
pub const MAX_REASONING_CHARS: u64 = 1024;
/// What a tool name is made of: plain built-in and Tool names, and `<server>.<tool>` for
/// MCP tools (MCP allows letters, digits, `_`, `-` and `.`).
pub const TOOL_NAME_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$";

/// CEL: step ids are unique. `distinct()` (Kubernetes ≥ 1.34) costs 2·n² = 500 000 at 500
/// steps, half the per-call limit; an `all`/`exists_one` pair would cost twice that.
const RULE_UNIQUE_IDS: &str = "size(self.steps.map(s, s.id).distinct()) == size(self.steps)";
const MSG_UNIQUE_IDS: &str = "step ids must be unique, but two steps of spec.plan have the same id";

/// CEL: every `dependsOn` entry names a step of the plan. The ids become a map once
/// (`transformMapEntry`, Kubernetes ≥ 1.32) so each lookup is O(1); the single-element
/// list is CEL's way to bind that map to a name. Duplicate ids would make the map fail to
/// build, so this rule stands aside for them and lets the uniqueness rule speak.
const RULE_DEPS_EXIST: &str = "size(self.steps.map(s, s.id).distinct()) != size(self.steps) || self.steps.map(s, size(s.dependsOn)).sum() > 10000 || [self.steps.transformMapEntry(i, s, {s.id: true})].all(ids, self.steps.all(s, s.dependsOn.all(d, d in ids)))";
const MSG_DEPS_EXIST: &str = "a step's dependsOn names a step id that is not in spec.plan";

/// CEL: a bound on the plan's edges. Checked by itself so a dense plan gets this message and
/// not the apiserver's "cost limit exceeded" from the rule above, which stands aside for it.
const RULE_MAX_DEPENDENCIES: &str = "self.steps.map(s, size(s.dependsOn)).sum() <= 10000";
const MSG_MAX_DEPENDENCIES: &str = "spec.plan has more than 10000 dependsOn entries in all; list only each step's direct dependencies";

/// A CEL rule in the shape of `x-kubernetes-validations` entries. Messages are fixed
/// strings: a `messageExpression` that names the offending id needs `string(int)`, whose
/// result the apiserver's estimator cannot bound, and the CRD is then rejected as too costly.
fn cel_rule(rule: &str, message: &str) -> Value {
    let mut r = Map::new();
    r.insert("rule".into(), rule.into());
    r.insert("message".into(), message.into());
    Value::Object(r)
}

/// `spec.plan`: the executor's plan schema, bounded, with `input` left free-form and the
/// admission rules (unique ids, existing dependencies) attached. The step limit is
/// `maxItems`: the apiserver skips CEL on a list already too long, so its own message
/// ("Too many: 501: must have at most 500 items") is the one people see.
pub fn spec_plan_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = bounded_plan_schema(generator);
    let rules = vec![
        cel_rule(RULE_UNIQUE_IDS, MSG_UNIQUE_IDS),
        cel_rule(RULE_DEPS_EXIST, MSG_DEPS_EXIST),
        cel_rule(RULE_MAX_DEPENDENCIES, MSG_MAX_DEPENDENCIES),
    ];
    schema.insert("x-kubernetes-validations".into(), Value::Array(rules));
    schema
}

/// `status.plan`: the same shape and bounds as `spec.plan`, without admission rules (the
/// operator writes it after validating the plan itself).
pub fn status_plan_schema(generator: &mut SchemaGenerator) -> Schema {
    bounded_plan_schema(generator)
}

/// Any JSON object (an input schema): kept as given, not pruned.
pub fn any_object_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// Any JSON value (a step output, a run result): kept as given, not pruned.
pub fn any_json_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// The plan schema as crane-executor derives it, plus the bounds the apiserver needs. Step
/// is generated separately and placed as the items schema, so this works whether or not the
/// generator inlines subschemas.
fn bounded_plan_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut step = Step::json_schema(generator);
    bound_step(&mut step);

    let mut plan = Plan::json_schema(generator);
    if let Some(steps) = property(&mut plan, "steps") {
        steps.insert("maxItems".into(), MAX_STEPS.into());
        steps.insert("items".into(), step.to_value());
    }
    plan
}

fn bound_step(step: &mut Schema) {
    // The engine stores ids as u32; a larger one would be accepted and never run.
    if let Some(id) = property(step, "id") {
        id.insert("maximum".into(), u32::MAX.into());
    }
    if let Some(tool) = property(step, "tool") {
        tool.insert("minLength".into(), 1.into());
        tool.insert("maxLength".into(), MAX_TOOL_NAME_CHARS.into());
        tool.insert("pattern".into(), TOOL_NAME_PATTERN.into());
    }
    if let Some(reasoning) = property(step, "reasoning") {
        reasoning.insert("maxLength".into(), MAX_REASONING_CHARS.into());
    }
    // A step depends on at most every other step.
    if let Some(depends_on) = property(step, "dependsOn") {
        depends_on.insert("maxItems".into(), MAX_STEPS.into());
        if let Some(items) = depends_on.get_mut("items").and_then(Value::as_object_mut) {
            items.insert("minimum".into(), 1.into());
            items.insert("maximum".into(), u32::MAX.into());
        }
    }
    // The input is checked against the tool's own JSON schema by the operator; here it is
    // any object, kept whole (the apiserver would otherwise prune every field of it).
    let Some(input) = property(step, "input") else {
        return;
    };
    let description = input.get("description").cloned();
    input.clear();
    if let Some(description) = description {
        input.insert("description".into(), description);
    }
    input.insert("type".into(), "object".into());
    input.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
}

/// The schema object of `properties.<name>`, when there is one. A change in the executor's
/// types that removed it would skip the bound; the tests check every bound in the result.
fn property<'a>(schema: &'a mut Schema, name: &str) -> Option<&'a mut Map<String, Value>> {
    schema
        .get_mut("properties")?
        .as_object_mut()?
        .get_mut(name)?
        .as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_rules_use_the_validators_limit() {
        let limit = crane_core::plan::MAX_DEPENDENCIES.to_string();
        assert!(RULE_MAX_DEPENDENCIES.ends_with(&format!("<= {limit}")));
        assert!(RULE_DEPS_EXIST.contains(&format!("> {limit} ||")));
        assert!(MSG_MAX_DEPENDENCIES.contains(&limit));
    }
}
