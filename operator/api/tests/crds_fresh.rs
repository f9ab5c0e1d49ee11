//! Fails when a committed CRD file (crds/, config/crd/bases/, charts/crane/crds/) differs
//! from what the API types generate, naming the file: the fix is `make crds`.

use crane_api::crdgen::{self, CRD_DIRS};

#[test]
fn committed_crds_match_the_types() {
    let root = crdgen::workspace_root();
    let stale = crdgen::stale_files(&root).unwrap_or_else(|e| panic!("{e}"));
    let list: Vec<String> = stale.iter().map(ToString::to_string).collect();
    assert!(
        stale.is_empty(),
        "CRD YAML is stale, run make crds:\n  {}",
        list.join("\n  ")
    );
}

#[test]
fn a_changed_or_missing_copy_is_reported() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    crdgen::write_all(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        crdgen::stale_files(dir.path()).map(|s| s.len()).ok(),
        Some(0)
    );

    let edited = dir
        .path()
        .join(CRD_DIRS[2])
        .join("agentruns.crane.dev.yaml");
    let text = std::fs::read_to_string(&edited).unwrap_or_default();
    std::fs::write(&edited, text.replace("maxItems: 500", "maxItems: 600"))
        .unwrap_or_else(|e| panic!("{e}"));
    let missing = dir
        .path()
        .join(CRD_DIRS[1])
        .join("workerpools.crane.dev.yaml");
    std::fs::remove_file(&missing).unwrap_or_else(|e| panic!("{e}"));

    let stale = crdgen::stale_files(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let msgs: Vec<String> = stale.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m.contains("charts/crane/crds/agentruns.crane.dev.yaml")
                && m.contains("differs"))
    );
    assert!(msgs.iter().any(
        |m| m.contains("config/crd/bases/workerpools.crane.dev.yaml") && m.contains("missing")
    ));
}

#[test]
fn every_copy_is_identical_yaml_with_a_header() {
    let files = crdgen::render().unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = files.iter().map(|f| f.file_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "agentruns.crane.dev.yaml",
            "workerpools.crane.dev.yaml",
            "tools.crane.dev.yaml",
            "mcpservers.crane.dev.yaml",
            "models.crane.dev.yaml",
            "approvals.crane.dev.yaml"
        ]
    );
    for f in &files {
        assert!(
            f.yaml
                .starts_with("# Generated from operator/api by `make crds`")
        );
        assert!(
            !f.yaml.contains("uint32"),
            "{}: unsigned formats make kubectl warn",
            f.file_name
        );
    }
}
