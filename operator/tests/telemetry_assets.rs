//! The monitoring assets people install: the chart's copies of the Grafana dashboard and the
//! alert rules are the files in deploy/ byte for byte (Helm reads only files inside the
//! chart), every panel queries something, and every alert has the summary, description and
//! runbook people need when it fires — a runbook that exists in docs/telemetry.md.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn the_chart_ships_the_deploy_files_unchanged() {
    for (original, copy) in [
        (
            "deploy/grafana/crane-dashboard.json",
            "charts/crane/files/crane-dashboard.json",
        ),
        (
            "deploy/prometheus/crane-alerts.yaml",
            "charts/crane/files/crane-alerts.yaml",
        ),
    ] {
        assert!(
            read(original) == read(copy),
            "{copy} differs from {original}: run `cp {original} {copy}`"
        );
    }
}

/// Every `expr` of every panel, rows' nested panels included.
fn panel_queries(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        if let Some(nested) = panel["panels"].as_array() {
            panel_queries(nested, out);
        }
        if panel["type"] == "row" {
            continue;
        }
        let exprs: Vec<_> = panel["targets"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["expr"].as_str()).collect())
            .unwrap_or_default();
        assert!(!exprs.is_empty(), "panel {title:?} has no query");
        for e in exprs {
            out.push((title.clone(), e.to_owned()));
        }
    }
}

#[test]
fn every_dashboard_panel_queries_crane_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/crane-dashboard.json")).expect("JSON");
    let mut queries = Vec::new();
    panel_queries(
        dashboard["panels"].as_array().expect("panels"),
        &mut queries,
    );
    assert!(queries.len() >= 10, "{queries:?}");
    for (title, expr) in &queries {
        assert!(
            expr.contains("crane_operator_") || expr.contains("crane_worker_"),
            "panel {title:?} reads no Crane metric: {expr}"
        );
    }
}

#[test]
fn every_alert_says_what_happened_and_links_its_runbook() {
    let rules: serde_norway::Value =
        serde_norway::from_str(&read("deploy/prometheus/crane-alerts.yaml")).expect("YAML");
    let docs = read("docs/telemetry.md").to_lowercase();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            alerts += 1;
            let note = |key: &str| rule["annotations"][key].as_str().unwrap_or_default();
            assert!(!note("summary").is_empty(), "{name}: no summary");
            assert!(note("description").len() > 40, "{name}: no description");
            let anchor = name.to_lowercase();
            assert!(
                note("runbook_url").ends_with(&format!("docs/telemetry.md#{anchor}")),
                "{name}: runbook_url {}",
                note("runbook_url")
            );
            assert!(
                docs.contains(&format!("### {anchor}")),
                "{name}: docs/telemetry.md has no `### {name}` runbook section"
            );
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{name}: severity"
            );
        }
    }
    assert!(alerts >= 6);
}
