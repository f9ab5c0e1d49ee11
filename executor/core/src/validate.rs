//! Plan validation: everything that can be wrong with a plan before anything runs, reported
//! all at once (structure, cycles, tools, input schemas, variables). Iterative throughout, so
//! a 500-step plan or a 500-deep chain is checked quickly and without deep recursion.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use serde_json::Value;

use crate::plan::{MAX_DEPENDENCIES, MAX_STEPS, Plan, StepId};
use crate::tool::Catalog;
use crate::vars;

/// Largest plan document `parse_plan` accepts. 500 steps with generous inputs fit easily;
/// anything larger is refused before parsing, so a hostile file cannot eat memory.
pub const MAX_PLAN_BYTES: usize = 2 * 1024 * 1024;

/// One thing wrong with a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("plan JSON: line {line}, column {column}: {message}")]
    Parse {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("plan is {size} bytes; the limit is {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("plan has no steps")]
    Empty,
    #[error("plan has {count} steps; the limit is {max}")]
    TooManySteps { count: usize, max: usize },
    #[error(
        "plan has {count} dependsOn entries in all; the limit is {max} (list only direct \
         dependencies: a step already waits for its dependencies' own dependencies)"
    )]
    TooManyDependencies { count: usize, max: usize },
    #[error("step at index {index}: id must be a positive integer, not 0")]
    ZeroId { index: usize },
    #[error("step {id}: id used by {count} steps; ids must be unique")]
    DuplicateId { id: StepId, count: usize },
    #[error("step {step}: dependsOn names step {missing}, which does not exist")]
    MissingDependency { step: StepId, missing: StepId },
    #[error("step {step}: depends on itself")]
    SelfDependency { step: StepId },
    #[error("cycle: {}", render_cycle(.0))]
    Cycle(Vec<StepId>),
    #[error("step {step}: {message}")]
    UnknownTool { step: StepId, message: String },
    #[error("step {step}: {message}")]
    InvalidInput { step: StepId, message: String },
    #[error(
        "step {step}: tool \"{tool}\" is not served by WorkerPool \"{pool}\" (its spec.tools: {served})"
    )]
    ToolNotServed {
        step: StepId,
        tool: String,
        pool: String,
        served: String,
    },
    #[error("step {step}: {location} refers to step {target}, which does not exist")]
    VariableUnknownStep {
        step: StepId,
        location: String,
        target: StepId,
    },
    #[error(
        "step {step}: {location} uses the output of step {target}, which is not an ancestor of step {step} \
         (add {target} to dependsOn, directly or through another step)"
    )]
    VariableNotAncestor {
        step: StepId,
        location: String,
        target: StepId,
    },
}

fn render_cycle(ids: &[StepId]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// Every problem found in a plan; Display prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanErrors {}

impl From<PlanError> for PlanErrors {
    fn from(e: PlanError) -> Self {
        PlanErrors(vec![e])
    }
}

/// Reads and parses a plan file, with a message naming the file on any problem. The size is
/// checked before reading, so a huge file never fills memory.
pub fn read_plan_file(path: &std::path::Path) -> Result<Plan, String> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read plan file {shown}: {e}"))?
        .len();
    if size > MAX_PLAN_BYTES as u64 {
        return Err(format!(
            "plan file {shown} is {size} bytes; the limit is {MAX_PLAN_BYTES} bytes"
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read plan file {shown}: {e}"))?;
    parse_plan(&text).map_err(|e| format!("invalid plan in {shown}:\n{e}"))
}

/// Parses a plan document (`{"steps": [...]}`), with line and column on malformed JSON or a
/// field of the wrong type. Does not validate; call [`validate`] next.
pub fn parse_plan(json: &str) -> Result<Plan, PlanErrors> {
    if json.len() > MAX_PLAN_BYTES {
        return Err(PlanError::TooLarge {
            size: json.len(),
            max: MAX_PLAN_BYTES,
        }
        .into());
    }
    serde_json::from_str::<Plan>(json).map_err(|e| {
        let full = e.to_string();
        // serde_json appends " at line L column C"; we print the position ourselves.
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full);
        let message = match e.classify() {
            serde_json::error::Category::Data => format!("wrong shape: {message}"),
            serde_json::error::Category::Eof => format!("unexpected end of input: {message}"),
            _ => format!("malformed JSON: {message}"),
        };
        PlanError::Parse {
            line: e.line(),
            column: e.column(),
            message,
        }
        .into()
    })
}

/// Checks a plan against the rules and the catalog; returns every problem found.
pub fn validate(plan: &Plan, catalog: &Catalog) -> Result<(), PlanErrors> {
    let Graph {
        index,
        deps,
        order,
        mut errors,
    } = graph(plan)?;
    let steps = &plan.steps;
    let n = steps.len();

    // Ancestor sets as bitsets, computed in topological order (steps on a cycle have none;
    // the cycle is already reported).
    let words = n.div_ceil(64);
    let mut ancestors: Vec<Vec<u64>> = vec![Vec::new(); n];
    for &i in &order {
        let mut set = vec![0u64; words];
        for &d in &deps[i] {
            set[d / 64] |= 1 << (d % 64);
            for (w, a) in set.iter_mut().zip(&ancestors[d]) {
                *w |= a;
            }
        }
        ancestors[i] = set;
    }
    let in_order: HashSet<usize> = order.iter().copied().collect();

    for (i, step) in steps.iter().enumerate() {
        // Zero and repeated ids are already reported; their steps have no place in the graph.
        if step.id == 0 || index.get(&step.id) != Some(&i) {
            continue;
        }
        let refs = vars::references(&step.input);
        // A string that is exactly one variable takes the referenced output's type at run
        // time, so its declared type cannot be checked now (it is re-checked after resolution).
        let whole: HashSet<&str> = refs
            .iter()
            .filter(|r| is_whole_variable(&step.input, &r.location))
            .map(|r| r.location.as_str())
            .collect();

        if catalog.get(&step.tool).is_none() {
            errors.push(PlanError::UnknownTool {
                step: step.id,
                message: catalog.unknown_tool_message(&step.tool),
            });
        } else if let Err(problems) =
            catalog.input_problems(&step.tool, &Value::Object(step.input.clone()))
        {
            for p in problems {
                if p.is_type_error && whole.contains(p.pointer.as_str()) {
                    continue;
                }
                errors.push(PlanError::InvalidInput {
                    step: step.id,
                    message: p.message,
                });
            }
        }

        for r in &refs {
            let location = crate::tool::display_path(&r.location);
            match index.get(&r.step) {
                None => errors.push(PlanError::VariableUnknownStep {
                    step: step.id,
                    location,
                    target: r.step,
                }),
                Some(&t) => {
                    let is_ancestor = in_order.contains(&i)
                        && ancestors[i]
                            .get(t / 64)
                            .is_some_and(|w| w & (1 << (t % 64)) != 0);
                    // On a cycle ancestry is undefined; the cycle error says what to fix.
                    if !is_ancestor && in_order.contains(&i) {
                        errors.push(PlanError::VariableNotAncestor {
                            step: step.id,
                            location,
                            target: r.step,
                        });
                    }
                }
            }
        }
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(PlanErrors(errors))
    }
}

/// Checks that every step's tool is one a pool serves (`served`, from the WorkerPool's
/// spec.tools; an empty list serves everything). Run after [`validate`].
pub fn check_served(plan: &Plan, pool: &str, served: &[String]) -> Result<(), PlanErrors> {
    if served.is_empty() {
        return Ok(());
    }
    let errors: Vec<PlanError> = plan
        .steps
        .iter()
        .filter(|s| !served.contains(&s.tool))
        .map(|s| PlanError::ToolNotServed {
            step: s.id,
            tool: crate::text::truncate(&s.tool, 80),
            pool: pool.to_owned(),
            served: crate::text::truncate(&served.join(", "), 400),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PlanErrors(errors))
    }
}

/// Checks only the plan's shape (size, ids, dependencies, cycles), without a catalog: what the
/// engine relies on so a run can never hang. Same messages as [`validate`].
pub fn check_structure(plan: &Plan) -> Result<(), PlanErrors> {
    let g = graph(plan)?;
    if g.errors.is_empty() {
        Ok(())
    } else {
        Err(PlanErrors(g.errors))
    }
}

/// The plan as a graph of step indices, with the structural problems found on the way.
struct Graph {
    /// Each id's first occurrence.
    index: HashMap<StepId, usize>,
    /// `deps[i]`: indices step `i` depends on (broken edges dropped after being reported).
    deps: Vec<Vec<usize>>,
    /// A valid execution order of the steps not on a cycle.
    order: Vec<usize>,
    errors: Vec<PlanError>,
}

/// Builds the [`Graph`]; an empty or oversized plan is an error at once.
fn graph(plan: &Plan) -> Result<Graph, PlanErrors> {
    let mut errors = Vec::new();
    let steps = &plan.steps;
    if steps.is_empty() {
        return Err(PlanError::Empty.into());
    }
    if steps.len() > MAX_STEPS {
        // Beyond the limit the per-step checks are skipped: they are quadratic in the worst
        // case and the plan must be cut down anyway.
        return Err(PlanError::TooManySteps {
            count: steps.len(),
            max: MAX_STEPS,
        }
        .into());
    }
    let edges: usize = steps.iter().map(|s| s.depends_on.len()).sum();
    if edges > MAX_DEPENDENCIES {
        return Err(PlanError::TooManyDependencies {
            count: edges,
            max: MAX_DEPENDENCIES,
        }
        .into());
    }

    // Ids: zero, duplicates. The graph uses each id's first occurrence.
    let mut index: HashMap<StepId, usize> = HashMap::with_capacity(steps.len());
    let mut counts: HashMap<StepId, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        if step.id == 0 {
            errors.push(PlanError::ZeroId { index: i });
            continue;
        }
        *counts.entry(step.id).or_default() += 1;
        index.entry(step.id).or_insert(i);
    }
    let mut dups: Vec<(StepId, usize)> = counts.into_iter().filter(|&(_, c)| c > 1).collect();
    dups.sort_unstable();
    errors.extend(
        dups.into_iter()
            .map(|(id, count)| PlanError::DuplicateId { id, count }),
    );

    // Edges (deps[i] = indices step i depends on), dropping the broken ones after reporting.
    let n = steps.len();
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, step) in steps.iter().enumerate() {
        if step.id == 0 || index.get(&step.id) != Some(&i) {
            continue;
        }
        let mut seen = HashSet::new();
        for &dep in &step.depends_on {
            if !seen.insert(dep) {
                continue;
            }
            if dep == step.id {
                errors.push(PlanError::SelfDependency { step: step.id });
            } else if let Some(&d) = index.get(&dep) {
                deps[i].push(d);
            } else {
                errors.push(PlanError::MissingDependency {
                    step: step.id,
                    missing: dep,
                });
            }
        }
    }

    let (order, cycles) = topo_order(&deps);
    for cycle in cycles {
        errors.push(PlanError::Cycle(
            cycle.into_iter().map(|i| steps[i].id).collect(),
        ));
    }
    Ok(Graph {
        index,
        deps,
        order,
        errors,
    })
}

/// Kahn's algorithm over `deps`. Returns the indices in a valid execution order, and one
/// cycle (as a closed path of indices, dependency first) per group of steps that cannot be
/// ordered. Iterative, linear in steps plus edges.
fn topo_order(deps: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let n = deps.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut missing: Vec<usize> = vec![0; n];
    for (i, ds) in deps.iter().enumerate() {
        missing[i] = ds.len();
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut queue: VecDeque<usize> = (0..n).filter(|&i| missing[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = queue.pop_front() {
        order.push(i);
        for &d in &dependents[i] {
            missing[d] -= 1;
            if missing[d] == 0 {
                queue.push_back(d);
            }
        }
    }
    if order.len() == n {
        return (order, Vec::new());
    }

    // Every step left over has an unordered dependency, so walking dependencies from any of
    // them must come back to a step already on the walk: that loop is a cycle.
    let mut visited = vec![false; n];
    let mut cycles = Vec::new();
    for start in 0..n {
        if missing[start] == 0 || visited[start] {
            continue;
        }
        let mut path: Vec<usize> = Vec::new();
        let mut on_path: HashMap<usize, usize> = HashMap::new();
        let mut cur = start;
        loop {
            if let Some(&pos) = on_path.get(&cur) {
                // path[pos..] depends each on the next; print it in execution order.
                let mut cycle: Vec<usize> = path[pos..].iter().rev().copied().collect();
                let min_at = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|&(_, &v)| v)
                    .map_or(0, |(k, _)| k);
                cycle.rotate_left(min_at);
                if let Some(&first) = cycle.first() {
                    cycle.push(first);
                }
                cycles.push(cycle);
                break;
            }
            if visited[cur] {
                break;
            }
            visited[cur] = true;
            on_path.insert(cur, path.len());
            path.push(cur);
            match deps[cur].iter().find(|&&d| missing[d] > 0) {
                Some(&next) => cur = next,
                None => break,
            }
        }
    }
    (order, cycles)
}

/// Whether the string at `pointer` is exactly one `{step_N_output...}` variable.
fn is_whole_variable(input: &serde_json::Map<String, Value>, pointer: &str) -> bool {
    let mut value: Option<&Value> = None;
    for (k, raw) in pointer.split('/').skip(1).enumerate() {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        value = if k == 0 {
            input.get(&seg)
        } else {
            match value {
                Some(Value::Object(m)) => m.get(&seg),
                Some(Value::Array(a)) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            }
        };
    }
    match value {
        Some(Value::String(s)) => {
            s.starts_with("{step_")
                && s.ends_with('}')
                && s.matches('{').count() == 1
                && s.matches('}').count() == 1
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;
    use crate::plan::Step;
    use crate::tool::test_support::catalog;

    fn step(id: StepId, tool: &str, input: Value, deps: &[StepId]) -> Step {
        let input = match input {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Step {
            id,
            tool: tool.into(),
            input,
            reasoning: String::new(),
            depends_on: deps.to_vec(),
        }
    }

    fn errors(steps: Vec<Step>) -> Vec<String> {
        match validate(&Plan { steps }, &catalog()) {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn calc(id: StepId, expression: &str, deps: &[StepId]) -> Step {
        step(id, "calc", json!({"expression": expression}), deps)
    }

    #[test]
    fn a_good_plan_passes() {
        let steps = vec![
            calc(1, "(42 * 8) + 15", &[]),
            calc(2, "{step_1_output} * 2", &[1]),
            step(3, "note", json!({"title": "result: {step_2_output}"}), &[2]),
            step(4, "list", json!({}), &[3]),
        ];
        assert_eq!(errors(steps), Vec::<String>::new());
    }

    #[test]
    fn empty_and_oversized_plans() {
        assert_eq!(errors(vec![]), vec!["plan has no steps"]);
        let steps: Vec<Step> = (1..=(MAX_STEPS as StepId + 1))
            .map(|i| calc(i, "1", &[]))
            .collect();
        assert_eq!(errors(steps), vec!["plan has 501 steps; the limit is 500"]);
        let steps: Vec<Step> = (1..=(MAX_STEPS as StepId))
            .map(|i| calc(i, "1", &[]))
            .collect();
        assert!(errors(steps).is_empty());
    }

    #[test]
    fn structural_problems_are_all_reported_at_once() {
        let steps = vec![
            calc(0, "1", &[]),
            calc(1, "1", &[9]),
            calc(2, "1", &[2]),
            calc(3, "1", &[]),
            calc(3, "2", &[]),
        ];
        assert_eq!(
            errors(steps),
            vec![
                "step at index 0: id must be a positive integer, not 0",
                "step 3: id used by 2 steps; ids must be unique",
                "step 1: dependsOn names step 9, which does not exist",
                "step 2: depends on itself",
            ]
        );
    }

    #[test]
    fn cycles_are_named_in_execution_order() {
        // 3 runs after 1, 2 after 3, 1 after 2.
        let steps = vec![
            calc(1, "1", &[2]),
            calc(2, "1", &[3]),
            calc(3, "1", &[1]),
            calc(4, "1", &[2]),
        ];
        assert_eq!(errors(steps), vec!["cycle: 1 -> 3 -> 2 -> 1"]);
        let two = vec![
            calc(1, "1", &[2]),
            calc(2, "1", &[1]),
            calc(3, "1", &[4]),
            calc(4, "1", &[3]),
            calc(5, "1", &[]),
        ];
        assert_eq!(
            errors(two),
            vec!["cycle: 1 -> 2 -> 1", "cycle: 3 -> 4 -> 3"]
        );
    }

    #[test]
    fn unknown_tools_and_bad_inputs() {
        let steps = vec![
            step(1, "shell", json!({"cmd": "rm -rf /"}), &[]),
            step(2, "calc", json!({"expression": 3, "foo": true}), &[]),
            step(3, "note", json!({}), &[]),
        ];
        assert_eq!(
            errors(steps),
            vec![
                "step 1: unknown tool \"shell\" (known tools: calc, list, note, pause)",
                "step 2: input.expression: 3 is not of type \"string\"",
                "step 2: input: unexpected property \"foo\"",
                "step 3: input: missing required property \"title\"",
            ]
        );
    }

    #[test]
    fn a_whole_variable_may_stand_for_any_type() {
        let ok = vec![
            calc(1, "2+3", &[]),
            step(2, "pause", json!({"ms": "{step_1_output}"}), &[1]),
        ];
        assert!(errors(ok).is_empty());
        // Embedded in text it stays a string, so the type error is real.
        let bad = vec![
            calc(1, "2+3", &[]),
            step(2, "pause", json!({"ms": "1{step_1_output}"}), &[1]),
        ];
        assert_eq!(
            errors(bad),
            vec!["step 2: input.ms: \"1{step_1_output}\" is not of type \"integer\""]
        );
    }

    #[test]
    fn variables_must_name_existing_ancestors() {
        let steps = vec![
            calc(1, "1", &[]),
            calc(2, "{step_1_output} + 1", &[]),
            calc(3, "{step_1_output} + {step_4_output}", &[4]),
            calc(4, "{step_1_output}", &[1]),
            calc(5, "{step_9_output}", &[]),
        ];
        assert_eq!(
            errors(steps),
            vec![
                "step 2: input.expression uses the output of step 1, which is not an ancestor of step 2 \
                 (add 1 to dependsOn, directly or through another step)",
                "step 5: input.expression refers to step 9, which does not exist",
            ]
        );
    }

    #[test]
    fn a_step_cannot_use_its_own_output() {
        let steps = vec![calc(1, "{step_1_output}", &[])];
        assert_eq!(errors(steps).len(), 1);
    }

    #[test]
    fn deep_and_dense_plans_are_checked_without_recursion() {
        let chain: Vec<Step> = (1..=500)
            .map(|i| {
                if i == 1 {
                    calc(1, "1", &[])
                } else {
                    calc(i, "{step_1_output} + 1", &[i - 1])
                }
            })
            .collect();
        assert!(errors(chain).is_empty());
        // As dense as the dependency limit allows: 141 steps, 9 870 edges.
        let all: Vec<StepId> = (1..141).collect();
        let dense: Vec<Step> = (1..=141)
            .map(|i| calc(i, "{step_1_output}", &all[..(i as usize - 1)]))
            .collect();
        let errs = errors(dense);
        assert_eq!(
            errs,
            vec![
                "step 1: input.expression uses the output of step 1, which is not an ancestor of step 1 \
             (add 1 to dependsOn, directly or through another step)"
            ]
        );
        let mut ring: Vec<Step> = (1..=500)
            .map(|i| calc(i, "1", &[i.saturating_sub(1).max(500 * u32::from(i == 1))]))
            .collect();
        ring[0].depends_on = vec![500];
        let errs = errors(ring);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("cycle: 1 -> 2 -> 3") && errs[0].ends_with("499 -> 500 -> 1"));
    }

    #[test]
    fn hostile_tool_names_are_quoted_briefly() {
        let steps = vec![step(1, &"\u{202e}".repeat(100_000), json!({}), &[])];
        let errs = errors(steps);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].len() < 400, "{} bytes", errs[0].len());
    }

    #[test]
    fn display_prints_one_problem_per_line() {
        let e = PlanErrors(vec![
            PlanError::Empty,
            PlanError::SelfDependency { step: 3 },
        ]);
        assert_eq!(
            e.to_string(),
            "plan has no steps\nstep 3: depends on itself"
        );
    }

    #[test]
    fn parse_reports_line_and_column() {
        let malformed = "{\"steps\": [\n  {\"id\": 1, \"tool\": \"calc\",}\n]}";
        let msg = parse_plan(malformed)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.starts_with("plan JSON: line 2, column 28: malformed JSON: trailing comma"),
            "{msg}"
        );

        let wrong = "{\"steps\": [{\"id\": \"one\", \"tool\": \"calc\"}]}";
        let msg = parse_plan(wrong)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.starts_with(
                "plan JSON: line 1, column 23: wrong shape: invalid type: string \"one\""
            ),
            "{msg}"
        );

        for bad in [
            "",
            "[]",
            "{\"steps\": [{\"id\": -1, \"tool\": \"calc\"}]}",
            "{\"steps\": [{\"id\": 4294967296, \"tool\": \"x\"}]}",
            "{\"steps\": [{\"tool\": \"x\"}]}",
            "{\"steps\": [{\"id\": 1, \"tool\": \"x\", \"input\": [1]}]}",
        ] {
            assert!(parse_plan(bad).is_err(), "{bad:?} parsed");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_plan(&deep).is_err());
        let big = " ".repeat(MAX_PLAN_BYTES + 1);
        assert_eq!(
            parse_plan(&big),
            Err(PlanError::TooLarge {
                size: MAX_PLAN_BYTES + 1,
                max: MAX_PLAN_BYTES
            }
            .into())
        );

        let ok = parse_plan("{\"steps\": [{\"id\": 1, \"tool\": \"list\", \"dependsOn\": []}]}");
        assert_eq!(ok.map(|p| p.steps.len()), Ok(1));
    }

    #[test]
    fn a_dense_plan_is_refused_by_its_number_of_dependencies() {
        // 150 steps each depending on every earlier one: 11 175 edges.
        let steps: Vec<Step> = (1..=150)
            .map(|i| calc(i, "1", &(1..i).collect::<Vec<_>>()))
            .collect();
        let errs = errors(steps);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("plan has 11175 dependsOn entries in all; the limit is 10000"),
            "{errs:?}"
        );
    }

    #[test]
    fn tools_a_pool_does_not_serve_are_named() {
        let plan = Plan {
            steps: vec![calc(1, "1", &[]), step(2, "pause", json!({"ms": 1}), &[1])],
        };
        assert_eq!(check_served(&plan, "any", &[]), Ok(()));
        let served = vec!["calc".to_owned()];
        let err = check_served(&plan, "calc-only", &served)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "step 2: tool \"pause\" is not served by WorkerPool \"calc-only\" (its spec.tools: calc)"
            )
        );
    }
}
