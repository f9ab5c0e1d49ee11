//! Which Approval `approve`/`reject` decide, which ones `approvals` lists, and the table it
//! prints. Pure functions over Approvals already read from the cluster.
//!
//! Selection: `--step N` means `<run>-step-<N>`; without it, a run in `AwaitingApproval`
//! means `<run>-plan`, and otherwise the run's only open Approval. Anything else is an error
//! that lists what exists, so the person can pick.

use std::fmt;

use crane_api::{Approval, Decision};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::text::{age, clean, fit};

/// Longest MESSAGE shown in the `approvals` table.
const MAX_MESSAGE_CHARS: usize = 60;

/// Why no single Approval could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// The named Approval does not exist.
    #[error("approval {wanted} not found in namespace {namespace}; {}", Existing(.existing))]
    NotFound {
        wanted: String,
        namespace: String,
        existing: Vec<String>,
    },
    /// The named Approval was decided already.
    #[error("approval {name} was already decided: {decision}; a decision never changes")]
    AlreadyDecided { name: String, decision: String },
    /// No --step, and the run has no open Approval.
    #[error("agentrun {run} has no open approval; {}", Existing(.existing))]
    NoneOpen { run: String, existing: Vec<String> },
    /// No --step, and the run has several open Approvals.
    #[error("agentrun {run} has {} open approvals; choose one with --step: {}", .open.len(), .open.join(", "))]
    Ambiguous { run: String, open: Vec<String> },
}

/// "its approvals: a (open), b (Approved by x)" or "it has no approvals".
struct Existing<'a>(&'a [String]);

impl fmt::Display for Existing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("the run has no approvals")
        } else {
            write!(f, "the run's approvals: {}", self.0.join(", "))
        }
    }
}

/// The name of the Approval of `run` for `step`, or for the whole plan.
pub fn approval_name(run: &str, step: Option<u32>) -> String {
    match step {
        Some(s) => format!("{run}-step-{s}"),
        None => format!("{run}-plan"),
    }
}

/// Nobody decided it yet (and no timeout was applied).
pub fn is_open(a: &Approval) -> bool {
    a.spec.decision.is_none() && a.status.as_ref().and_then(|s| s.outcome).is_none()
}

/// `name (open)`, `name (Approved by alice)`, `name (TimedOut)`.
fn describe(a: &Approval) -> String {
    let name = a.name_any();
    let state = match (&a.spec.decision, a.status.as_ref().and_then(|s| s.outcome)) {
        (Some(d), _) => decided(*d, a.spec.decided_by.as_deref()),
        (None, Some(o)) => format!("{o:?}"),
        (None, None) => "open".to_owned(),
    };
    format!("{name} ({})", clean(&state))
}

fn decided(d: Decision, by: Option<&str>) -> String {
    match by {
        Some(by) => format!("{d:?} by {by}"),
        None => format!("{d:?}"),
    }
}

/// The Approval of `run` to decide. `approvals` may hold other runs' too; `awaiting_plan` is
/// whether the run is in phase AwaitingApproval.
pub fn select<'a>(
    run: &str,
    namespace: &str,
    awaiting_plan: bool,
    step: Option<u32>,
    approvals: &'a [Approval],
) -> Result<&'a Approval, SelectError> {
    let mut mine: Vec<&Approval> = approvals.iter().filter(|a| a.spec.run == run).collect();
    mine.sort_by_key(|a| (a.spec.step_id, a.name_any()));
    let existing = || mine.iter().map(|a| describe(a)).collect::<Vec<_>>();
    let by_name = |wanted: String| -> Result<&'a Approval, SelectError> {
        let found = mine.iter().find(|a| a.name_any() == wanted).copied();
        match found {
            None => Err(SelectError::NotFound {
                wanted,
                namespace: namespace.to_owned(),
                existing: existing(),
            }),
            Some(a) if !is_open(a) => Err(SelectError::AlreadyDecided {
                decision: describe(a),
                name: wanted,
            }),
            Some(a) => Ok(a),
        }
    };
    if step.is_some() || awaiting_plan {
        return by_name(approval_name(run, step));
    }
    let open: Vec<&Approval> = mine.iter().copied().filter(|a| is_open(a)).collect();
    match open.as_slice() {
        [only] => Ok(only),
        [] => Err(SelectError::NoneOpen {
            run: run.to_owned(),
            existing: existing(),
        }),
        many => Err(SelectError::Ambiguous {
            run: run.to_owned(),
            open: many
                .iter()
                .map(|a| match a.spec.step_id {
                    Some(s) => format!("{} (--step {s})", a.name_any()),
                    None => format!(
                        "{} (the plan: no --step, once the run awaits it)",
                        a.name_any()
                    ),
                })
                .collect(),
        }),
    }
}

/// Whether `user` (with `groups`) may decide `a`: it is open and names no approvers, or
/// names the user or one of the groups. The admission policy makes the same check.
pub fn decidable(a: &Approval, user: &str, groups: &[String]) -> bool {
    is_open(a)
        && (a.spec.approvers.is_empty()
            || a.spec
                .approvers
                .iter()
                .any(|x| x == user || groups.contains(x)))
}

/// The `approvals` table: NAMESPACE (with `all_namespaces`), RUN, STEP, MESSAGE, AGE; rows
/// in the order given. Columns are separated by three spaces, as kubectl does.
pub fn table(rows: &[&Approval], all_namespaces: bool, now: Timestamp) -> String {
    let mut cells: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    let mut title = vec!["RUN", "STEP", "MESSAGE", "AGE"];
    if all_namespaces {
        title.insert(0, "NAMESPACE");
    }
    cells.push(title.into_iter().map(str::to_owned).collect());
    for a in rows {
        let created = a.metadata.creation_timestamp.as_ref();
        let age = created.map_or_else(
            || "<unknown>".to_owned(),
            |t| age(now.as_second() - t.0.as_second()),
        );
        let mut row = vec![
            clean(&a.spec.run),
            a.spec
                .step_id
                .map_or_else(|| "plan".to_owned(), |s| s.to_string()),
            fit(&clean(&a.spec.message), MAX_MESSAGE_CHARS),
            age,
        ];
        if all_namespaces {
            row.insert(0, a.namespace().unwrap_or_default());
        }
        cells.push(row);
    }
    let columns = cells[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in cells {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < columns {
                let gap = widths[c] - cell.chars().count() + 3;
                line.push_str(&" ".repeat(gap));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn approval(name: &str, run: &str, step: Option<u32>, extra: serde_json::Value) -> Approval {
        let mut spec = json!({"run": run, "message": format!("ok to {name}?")});
        if let Some(s) = step {
            spec["stepId"] = json!(s);
        }
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            spec[k] = v;
        }
        serde_json::from_value(json!({
            "apiVersion": "crane.dev/v1alpha1", "kind": "Approval",
            "metadata": {"name": name, "namespace": "ns",
                         "creationTimestamp": "2026-01-01T10:00:00Z"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn fixture() -> Vec<Approval> {
        vec![
            approval(
                "r-plan",
                "r",
                None,
                json!({"decision": "Approved", "decidedBy": "alice"}),
            ),
            approval("r-step-2", "r", Some(2), json!({})),
            approval(
                "r-step-3",
                "r",
                Some(3),
                json!({"decision": "Rejected", "decidedBy": "bob"}),
            ),
            approval("other-step-1", "other", Some(1), json!({})),
        ]
    }

    fn pick(awaiting: bool, step: Option<u32>, list: &[Approval]) -> Result<String, SelectError> {
        select("r", "ns", awaiting, step, list).map(|a| a.name_any())
    }

    #[test]
    fn step_names_its_approval() {
        assert_eq!(pick(false, Some(2), &fixture()).unwrap(), "r-step-2");
        assert_eq!(
            pick(false, Some(3), &fixture()),
            Err(SelectError::AlreadyDecided {
                name: "r-step-3".into(),
                decision: "r-step-3 (Rejected by bob)".into()
            })
        );
        let err = pick(false, Some(9), &fixture()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "approval r-step-9 not found in namespace ns; the run's approvals: \
             r-plan (Approved by alice), r-step-2 (open), r-step-3 (Rejected by bob)"
        );
    }

    #[test]
    fn awaiting_plan_means_the_plan_approval() {
        let mut list = fixture();
        list[0] = approval("r-plan", "r", None, json!({}));
        assert_eq!(pick(true, None, &list).unwrap(), "r-plan");
        let err = pick(true, None, &list[1..]).unwrap_err();
        assert!(matches!(err, SelectError::NotFound { ref wanted, .. } if wanted == "r-plan"));
    }

    #[test]
    fn without_step_the_only_open_one() {
        assert_eq!(pick(false, None, &fixture()).unwrap(), "r-step-2");
        let mut two = fixture();
        two.push(approval("r-step-5", "r", Some(5), json!({})));
        assert_eq!(
            pick(false, None, &two).unwrap_err().to_string(),
            "agentrun r has 2 open approvals; choose one with --step: \
             r-step-2 (--step 2), r-step-5 (--step 5)"
        );
        let none: Vec<Approval> = fixture().into_iter().filter(|a| !is_open(a)).collect();
        assert_eq!(
            pick(false, None, &none).unwrap_err().to_string(),
            "agentrun r has no open approval; the run's approvals: \
             r-plan (Approved by alice), r-step-3 (Rejected by bob)"
        );
        assert_eq!(
            pick(false, None, &[]).unwrap_err().to_string(),
            "agentrun r has no open approval; the run has no approvals"
        );
    }

    #[test]
    fn a_timed_out_approval_is_not_open() {
        let mut a = approval("r-step-2", "r", Some(2), json!({}));
        a.status = serde_json::from_value(json!({"outcome": "TimedOut"})).unwrap();
        assert!(!is_open(&a));
        assert_eq!(
            pick(false, Some(2), &[a]).unwrap_err().to_string(),
            "approval r-step-2 was already decided: r-step-2 (TimedOut); a decision never changes"
        );
    }

    #[test]
    fn decidable_by_user_or_group_or_anyone() {
        let anyone = approval("a", "r", Some(1), json!({}));
        let named = approval("b", "r", Some(2), json!({"approvers": ["alice", "ops"]}));
        let decided = approval(
            "c",
            "r",
            Some(3),
            json!({"decision": "Approved", "decidedBy": "x"}),
        );
        let none: [String; 0] = [];
        assert!(decidable(&anyone, "bob", &none));
        assert!(decidable(&named, "alice", &none));
        assert!(decidable(&named, "bob", &["ops".to_owned()]));
        assert!(!decidable(&named, "bob", &["dev".to_owned()]));
        assert!(!decidable(&decided, "x", &none));
    }

    #[test]
    fn table_like_kubectl() {
        let mut list = fixture();
        list[1].spec.message = "Delete\nall\u{1b}[31m todos?".into();
        let rows: Vec<&Approval> = list.iter().filter(|a| is_open(a)).collect();
        let now: Timestamp = "2026-01-01T10:05:30Z".parse().unwrap();
        assert_eq!(
            table(&rows, false, now),
            "RUN     STEP   MESSAGE                  AGE\n\
             r       2      Delete all\u{fffd}[31m todos?   5m30s\n\
             other   1      ok to other-step-1?      5m30s\n"
        );
        let wide = table(&rows[..1], true, now);
        assert!(wide.starts_with("NAMESPACE   RUN   STEP"), "{wide}");
        assert!(wide.contains("\nns          r     2 "), "{wide}");
        let long = approval("l", "r", None, json!({"message": "x".repeat(500)}));
        let t = table(&[&long], false, now);
        assert!(t.contains(&format!("{}…", "x".repeat(59))), "{t}");
        assert!(t.contains("   plan   "), "{t}");
    }
}
