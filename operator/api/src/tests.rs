//! Schema and status-helper tests: the generated CRDs carry every bound and rule the
//! apiserver needs, and truncation never breaks a character or exceeds its limit.

use super::*;
use crane_core::plan::{Plan, Step};
use crane_core::run::{StepPhase, StepReport};
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn schema_of(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    serde_json::to_value(&crd.spec.versions[0].schema).unwrap_or_default()["openAPIV3Schema"]
        .clone()
}

fn rules(v: &Value) -> Vec<String> {
    v["x-kubernetes-validations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["rule"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn agentrun_crd_names_and_columns() {
    let crd = AgentRun::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("agentruns.crane.dev"));
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["ar".to_owned()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["crane".to_owned()]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let cols: Vec<(String, i32)> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.clone(), c.priority.unwrap_or(0)))
        .collect();
    let want = [
        ("PHASE", 0),
        ("STEPS", 0),
        ("AGE", 0),
        ("PLANNER", 1),
        ("RESULT", 1),
    ];
    assert_eq!(cols, want.map(|(n, p)| (n.to_owned(), p)).to_vec());
}

#[test]
fn workerpool_crd_names_and_columns() {
    let crd = WorkerPool::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("workerpools.crane.dev"));
    assert_eq!(crd.spec.names.short_names, Some(vec!["wp".to_owned()]));
    let cols: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(cols, ["WORKERS", "DESIRED", "QUEUE", "AGE"]);
    let spec = &schema_of(crd)["properties"]["spec"];
    assert_eq!(rules(spec), ["self.minWorkers <= self.maxWorkers"]);
    for (field, default) in [
        ("minWorkers", 0),
        ("maxWorkers", 20),
        ("targetQueueDepth", 10),
        ("concurrency", 8),
        ("idleTimeoutSeconds", 30),
    ] {
        assert_eq!(
            spec["properties"][field]["default"],
            json!(default),
            "{field}"
        );
    }
}

#[test]
fn plan_schema_is_bounded_and_input_is_kept() {
    let schema = schema_of(AgentRun::crd());
    for plan in [
        &schema["properties"]["spec"]["properties"]["plan"],
        &schema["properties"]["status"]["properties"]["plan"],
    ] {
        let steps = &plan["properties"]["steps"];
        assert_eq!(steps["maxItems"], json!(500));
        let step = &steps["items"]["properties"];
        assert_eq!(step["input"]["type"], "object");
        assert_eq!(step["input"]["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(step["input"].get("additionalProperties"), None);
        assert_eq!(step["dependsOn"]["maxItems"], json!(500));
        assert_eq!(step["tool"]["maxLength"], json!(128));
        assert_eq!(step["tool"]["pattern"], json!(TOOL_NAME_PATTERN));
        assert_eq!(step["reasoning"]["maxLength"], json!(1024));
        assert_eq!(step["id"]["minimum"], json!(1.0));
        assert_eq!(step["id"]["maximum"], json!(f64::from(u32::MAX)));
        assert_eq!(
            step["dependsOn"]["items"]["maximum"],
            json!(f64::from(u32::MAX))
        );
    }
    let spec_plan = &schema["properties"]["spec"]["properties"]["plan"];
    assert_eq!(
        rules(spec_plan).len(),
        3,
        "unique ids, existing dependencies, at most 10 000 of them"
    );
    assert!(rules(&schema["properties"]["status"]["properties"]["plan"]).is_empty());
}

/// Every field the executor serializes for a step is declared in the CRD schema; a field
/// added to plan.rs without reaching the schema would be pruned by the apiserver.
#[test]
fn schema_declares_every_step_field() {
    let step = Step {
        id: 1,
        tool: "calculator".into(),
        input: json!({"expression": "1+1"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        reasoning: "why".into(),
        depends_on: vec![2],
    };
    let plan = serde_json::to_value(Plan { steps: vec![step] }).unwrap_or_default();
    let schema = schema_of(AgentRun::crd());
    let props = &schema["properties"]["spec"]["properties"]["plan"]["properties"];
    for key in plan.as_object().into_iter().flat_map(|o| o.keys()) {
        assert!(
            props.get(key).is_some(),
            "plan field {key} missing from schema"
        );
    }
    for key in plan["steps"][0]
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
    {
        assert!(
            props["steps"]["items"]["properties"].get(key).is_some(),
            "step field {key} missing from schema"
        );
    }
}

#[test]
fn spec_rules_and_defaults() {
    let schema = schema_of(AgentRun::crd());
    let spec = &schema["properties"]["spec"];
    let r = rules(spec);
    assert_eq!(r.len(), 3);
    assert!(r[0].contains("has(self.prompt) || has(self.plan)"));
    assert!(r.iter().any(|r| r.contains("self.plan == oldSelf.plan")));
    assert!(
        r.iter()
            .any(|r| r.contains("self.prompt == oldSelf.prompt"))
    );
    let p = &spec["properties"];
    assert_eq!(p["prompt"]["maxLength"], json!(10000));
    assert_eq!(
        rules(&p["prompt"]),
        ["self.trim().size() > 0", "!self.contains('\\u0000')"]
    );
    assert_eq!(p["workerPool"]["default"], "default");
    assert_eq!(p["workerPool"]["maxLength"], json!(63));
    assert!(rules(&p["workerPool"])[0].contains("[a-z0-9]([-a-z0-9]*[a-z0-9])?"));
    assert_eq!(p["planner"]["default"], json!({"mode": "auto"}));
    assert_eq!(
        p["retry"]["default"],
        json!({"maxAttempts": 3, "initialBackoffMs": 200, "maxBackoffMs": 10000})
    );
    assert_eq!(p["stepTimeoutSeconds"]["default"], json!(30));
    assert_eq!(p["activeDeadlineSeconds"]["default"], json!(600));
    assert_eq!(p["failurePolicy"]["default"], "FailFast");
    assert_eq!(p["ttlSecondsAfterFinished"]["default"], json!(3600));
    assert_eq!(p["cancel"]["default"], false);
    let status = &schema["properties"]["status"]["properties"];
    assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
    assert_eq!(
        status["conditions"]["x-kubernetes-list-map-keys"],
        json!(["type"])
    );
    assert_eq!(status["steps"]["x-kubernetes-list-map-keys"], json!(["id"]));
    assert_eq!(
        status["result"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
}

/// Every property in both CRDs has a description (it is what `kubectl explain` prints).
#[test]
fn every_field_is_documented() {
    fn walk(path: &str, v: &Value, missing: &mut Vec<String>) {
        if v.is_null() {
            return;
        }
        if let Some(props) = v["properties"].as_object() {
            for (k, child) in props {
                let p = format!("{path}.{k}");
                if child.get("description").is_none()
                    && !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    missing.push(p.clone());
                }
                walk(&p, child, missing);
            }
        }
        walk(&format!("{path}[]"), &v["items"], missing);
    }
    let mut missing = Vec::new();
    for crd in crate::crdgen::crds() {
        walk(&crd.spec.names.kind.clone(), &schema_of(crd), &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without description: {missing:?}"
    );
}

#[test]
fn spec_round_trips_with_defaults() {
    let spec: AgentRunSpec =
        serde_json::from_value(json!({"prompt": "hi"})).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.worker_pool, "default");
    assert_eq!(spec.step_timeout_seconds, 30);
    assert_eq!(spec.retry.max_attempts, 3);
    assert!(!spec.cancel);
    let back = serde_json::to_value(&spec).unwrap_or_default();
    assert_eq!(back["planner"], json!({"mode": "auto"}));
    assert_eq!(back.get("plan"), None);
}

#[test]
fn hostile_spec_values_fail_to_deserialize_naming_the_bad_value() {
    for (bad, field) in [
        (
            json!({"prompt": "x", "stepTimeoutSeconds": -1}),
            "`-1`, expected u32",
        ),
        (
            json!({"prompt": "x", "failurePolicy": "Sometimes"}),
            "Sometimes",
        ),
        (json!({"prompt": "x", "planner": {"mode": "gpt"}}), "gpt"),
        (json!({"plan": {"steps": [{"id": -3, "tool": "t"}]}}), "-3"),
        (
            json!({"plan": {"steps": [{"id": 1, "tool": "t", "input": "not an object"}]}}),
            "not an object",
        ),
    ] {
        let err = serde_json::from_value::<AgentRunSpec>(bad.clone())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains(field)),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn agentrun_phase_from_engine_phase() {
    use crane_core::run::RunPhase;
    assert_eq!(
        AgentRunPhase::from(RunPhase::Succeeded),
        AgentRunPhase::Succeeded
    );
    assert_eq!(
        AgentRunPhase::from(RunPhase::Cancelled),
        AgentRunPhase::Cancelled
    );
    assert!(AgentRunPhase::Failed.is_terminal());
    assert!(!AgentRunPhase::Planning.is_terminal());
}

#[test]
fn truncate_json_replaces_large_values_with_a_bounded_preview() {
    let small = json!({"id": 1, "title": "Buy milk", "completed": false});
    assert_eq!(truncate_json(&small, MAX_STEP_OUTPUT_BYTES), small);
    let big = json!({"text": "🦀".repeat(10_000)});
    let t = truncate_json(&big, MAX_STEP_OUTPUT_BYTES);
    assert_eq!(t["truncated"], true);
    assert_eq!(t["sizeBytes"], json!(big.to_string().len()));
    let preview = t["preview"].as_str().unwrap_or_default();
    assert!(preview.len() <= MAX_STEP_OUTPUT_BYTES);
    assert!(preview.starts_with("{\"text\":\"🦀"));
    assert!(t.to_string().len() < MAX_STEP_OUTPUT_BYTES + 100);
    // What the engine already cut keeps the original size, not the preview's.
    let cut = json!({"truncated": true, "sizeBytes": 5_000_000, "preview": "x".repeat(4096)});
    let t = truncate_json(&cut, MAX_STEP_OUTPUT_BYTES);
    assert_eq!(t["sizeBytes"], 5_000_000);
    assert!(t["preview"].as_str().unwrap_or_default().len() <= MAX_STEP_OUTPUT_BYTES);
}

fn report() -> StepReport {
    StepReport {
        id: 2,
        tool: "calculator".into(),
        phase: StepPhase::Failed,
        attempts: 3,
        output: Some(json!("x".repeat(5000))),
        error: Some("e".repeat(5000)),
        started_at: Some("2026-01-02T03:04:05Z".into()),
        finished_at: Some("2026-01-02T03:04:06.5Z".into()),
        usage: Some(crane_core::model::Usage {
            prompt_tokens: 7,
            completion_tokens: 3,
        }),
        message: Some("w".repeat(5000)),
        gate: None,
    }
}

#[test]
fn step_status_from_report_truncates_and_parses_times() {
    let s = StepStatus::from_report(&report()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
        Some((7, 3))
    );
    assert!(s.message.as_ref().is_some_and(|m| m.len() <= 1024));
    assert_eq!((s.id, s.attempts, s.phase), (2, 3, StepPhase::Failed));
    assert_eq!(
        s.output.as_ref().map(|o| o["truncated"].clone()),
        Some(json!(true))
    );
    assert!(s.error.as_ref().is_some_and(|e| e.len() <= MAX_ERROR_BYTES));
    let v = serde_json::to_value(&s).unwrap_or_default();
    assert_eq!(v["startedAt"], "2026-01-02T03:04:05Z");
    assert!(
        v["finishedAt"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-01-02T03:04:06"))
    );
}

#[test]
fn step_status_from_report_rejects_bad_timestamps_naming_step_and_field() {
    for bad in [
        "",
        "yesterday",
        "2026-13-45T99:00:00Z",
        "2026-01-02 03:04:05",
        "\u{0}",
    ] {
        let mut r = report();
        r.finished_at = Some(bad.into());
        let err = StepStatus::from_report(&r)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("step 2") && err.contains("finishedAt"),
            "{bad:?}: {err}"
        );
    }
}
