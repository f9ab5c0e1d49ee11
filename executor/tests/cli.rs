//! End-to-end tests of the `crane-executor` binary: `run`, `plan` and `tool` as a person types
//! them, checking exit codes, stdout JSON and stderr messages.

use std::process::{Command, Output};

use serde_json::Value;

fn crane(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_crane-executor"))
        .args(args)
        // The rules planner only: these tests must not depend on an LLM being configured.
        .env_remove("CRANE_LLM_BASE_URL")
        .env_remove("CRANE_LLM_API_KEY")
        .env_remove("CRANE_LLM_MODEL")
        .env_remove("RUST_LOG")
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("cannot start crane-executor: {e}"),
    }
}

fn stdout_json(out: &Output) -> Value {
    match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => panic!(
            "stdout is not JSON ({e}); stdout: {}; stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `text` to a fresh file under cargo's per-target temp dir.
fn plan_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
    path
}

fn run_prompt(prompt: &str) -> (i32, Value) {
    let out = crane(&["run", "--prompt", prompt, "--planner", "rules"]);
    let code = out.status.code().unwrap_or(-1);
    (code, stdout_json(&out))
}

fn outputs(report: &Value) -> Vec<Value> {
    report["steps"]
        .as_array()
        .map(|s| s.iter().map(|s| s["output"].clone()).collect())
        .unwrap_or_default()
}

#[test]
fn add_a_todo_then_list() {
    let (code, report) = run_prompt("Add a todo to buy milk, then show me all my tasks");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["phase"], "Succeeded");
    let steps = report["steps"].as_array().cloned().unwrap_or_default();
    assert_eq!(steps.len(), 2, "{report:#}");
    assert_eq!(steps[0]["tool"], "todo_store.add");
    assert_eq!(steps[1]["tool"], "todo_store.list");
    let list = report["result"].as_array().cloned().unwrap_or_default();
    assert!(
        list.iter().any(|t| t["title"]
            .as_str()
            .is_some_and(|s| s.to_lowercase().contains("milk"))),
        "{report:#}"
    );
    assert!(
        steps
            .iter()
            .all(|s| s["startedAt"].is_string() && s["finishedAt"].is_string())
    );
}

#[test]
fn calculate_multiply_and_add_as_todo() {
    let (code, report) = run_prompt(
        "Calculate (42 * 8) + 15, then multiply the result by 2, and add the result as a todo",
    );
    assert_eq!(code, 0, "{report:#}");
    let outs = outputs(&report);
    assert!(outs.iter().any(|o| o.as_f64() == Some(351.0)), "{report:#}");
    assert!(outs.iter().any(|o| o.as_f64() == Some(702.0)), "{report:#}");
    let todo = outs
        .iter()
        .find(|o| o.get("title").is_some())
        .cloned()
        .unwrap_or_default();
    assert!(
        todo["title"].as_str().is_some_and(|t| t.contains("702")),
        "{report:#}"
    );
}

#[test]
fn a_question_gets_its_answer() {
    let (code, report) = run_prompt("What is (41*7)+13?");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["result"].as_f64(), Some(300.0), "{report:#}");
    assert_eq!(report["error"], Value::Null);
}

#[test]
fn a_failing_run_exits_1_with_the_report() {
    let plan = r#"{"steps": [{"id": 1, "tool": "calculator", "input": {"expression": "1/0"}}]}"#;
    let path = plan_file("failing.json", plan);
    let out = crane(&["run", "--plan", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = stdout_json(&out);
    assert_eq!(report["phase"], "Failed");
    assert_eq!(report["steps"][0]["attempts"], 1);
    assert!(
        report["error"].as_str().is_some_and(
            |e| e.starts_with("step 1 (calculator) failed") && e.contains("division by zero")
        ),
        "{report:#}"
    );
}

#[test]
fn run_options_come_from_flags() {
    // 3 runs only if step 1's failure does not stop the run; 4 times out on every attempt.
    let plan = r#"{"steps": [
        {"id": 1, "tool": "calculator", "input": {"expression": "1/0"}},
        {"id": 2, "tool": "wait", "input": {"ms": 300}},
        {"id": 3, "tool": "calculator", "input": {"expression": "2+2"}, "dependsOn": [2]},
        {"id": 4, "tool": "wait", "input": {"ms": 1500}}
    ]}"#;
    let path = plan_file("options.json", plan);
    let path = path.to_string_lossy();
    let out = crane(&[
        "run",
        "--plan",
        &path,
        "--failure-policy",
        "ContinueIndependent",
        "--max-attempts",
        "2",
        "--step-timeout-seconds",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = stdout_json(&out);
    assert_eq!(
        report["steps"][2]["output"].as_f64(),
        Some(4.0),
        "{report:#}"
    );
    assert_eq!(report["steps"][3]["attempts"], 2, "{report:#}");
    assert!(
        report["steps"][3]["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out after 1000 ms")),
        "{report:#}"
    );

    for bad in [
        ["--max-attempts", "0"],
        ["--failure-policy", "Sometimes"],
        ["--step-timeout-seconds", "0"],
    ] {
        let out = crane(&["run", "--plan", &path, bad[0], bad[1]]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(stderr(&out).contains(bad[0]), "{bad:?}: {}", stderr(&out));
    }
}

#[test]
fn run_plan_file_succeeds() {
    let plan = r#"{"steps": [
        {"id": 1, "tool": "calculator", "input": {"expression": "20+5"}},
        {"id": 2, "tool": "calculator", "input": {"expression": "{step_1_output} + 30"}, "dependsOn": [1]}
    ]}"#;
    let path = plan_file("sum.json", plan);
    let out = crane(&["run", "--plan", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["result"].as_f64(), Some(55.0));
}

#[test]
fn an_invalid_plan_exits_2_with_every_problem() {
    let plan = r#"{"steps": [
        {"id": 1, "tool": "shell", "input": {"cmd": "rm -rf /"}, "dependsOn": [2]},
        {"id": 2, "tool": "calculator", "input": {"expression": 3}, "dependsOn": [1]}
    ]}"#;
    let path = plan_file("invalid.json", plan);
    let out = crane(&["run", "--plan", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.contains("cycle: 1 -> 2 -> 1"), "{err}");
    assert!(
        err.contains("step 1: unknown tool \"shell\" (known tools: calculator,"),
        "{err}"
    );
    assert!(
        err.contains("step 2: input.expression: 3 is not of type \"string\""),
        "{err}"
    );
}

#[test]
fn malformed_and_unreadable_plan_files_exit_2() {
    let path = plan_file("malformed.json", "{\"steps\": [\n  {\"id\": 1,, }]}");
    let out = crane(&["run", "--plan", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 2, column"), "{}", stderr(&out));

    let missing = path.with_file_name("nope.json");
    let out = crane(&["run", "--plan", &missing.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read plan file"),
        "{}",
        stderr(&out)
    );

    let dir = path
        .parent()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = crane(&["run", "--plan", &dir]);
    assert_eq!(out.status.code(), Some(2), "a directory is not a plan");
}

#[test]
fn hostile_prompts_exit_2_with_a_clear_message() {
    // argv caps one argument near 128 KiB, so the megabyte prompt comes from a file.
    let huge = "a".repeat(1 << 20);
    let out = crane(&[
        "run",
        "--prompt-file",
        &plan_file("huge-prompt.txt", &huge).to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("1048576 characters long"),
        "{}",
        stderr(&out)
    );

    let long = "a".repeat(100_000);
    for prompt in ["", "   ", "Book me a flight to Paris", long.as_str()] {
        let out = crane(&["run", "--prompt", prompt, "--planner", "rules"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "prompt of {} bytes: {}",
            prompt.len(),
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.len() < 2000, "{err}");
    }
    let out = crane(&["plan", "--prompt", "", "--planner", "rules"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
}

#[test]
fn prompts_can_come_from_a_file() {
    let path = plan_file("prompt.txt", "What is (41*7)+13?\n");
    let out = crane(&["run", "--prompt-file", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["result"].as_f64(), Some(300.0));
    let out = crane(&["plan", "--prompt-file", "/nonexistent/prompt.txt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read prompt file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plan_prints_a_plan() {
    let out = crane(&[
        "plan",
        "--prompt",
        "What is (41*7)+13?",
        "--planner",
        "rules",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = stdout_json(&out);
    assert_eq!(plan["steps"][0]["tool"], "calculator");
    assert_eq!(plan["steps"][0]["id"], 1);
}

#[test]
fn tool_runs_one_tool() {
    let out = crane(&["tool", "calculator", r#"{"expression":"(41*7)+13"}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout_json(&out).as_f64(), Some(300.0));

    let out = crane(&["tool", "calculator", r#"{"expression":"1/0"}"#]);
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("division by zero"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tool_rejects_bad_input_with_exit_2() {
    for (args, needle) in [
        (["tool", "calculator", "{not json"], "not valid JSON"),
        (
            ["tool", "calculator", r#"{"expression": 3}"#],
            "input.expression: 3 is not of type \"string\"",
        ),
        (
            ["tool", "calculator", r#"{"expression": "1", "x": 1}"#],
            "unexpected property \"x\"",
        ),
        (["tool", "rm", "{}"], "unknown tool \"rm\""),
        (["tool", "wait", r#"{"ms": 99999999}"#], "input.ms"),
    ] {
        let out = crane(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn usage_errors_print_help() {
    let out = crane(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Usage"), "{}", stderr(&out));
    let out = crane(&["run", "--prompt", "x", "--plan", "y"]);
    assert_eq!(out.status.code(), Some(2));
    let out = crane(&["plan", "--prompt", "x", "--planner", "magic"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("rules"), "{}", stderr(&out));
}
