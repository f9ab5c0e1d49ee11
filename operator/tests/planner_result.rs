//! The planner Job ↔ operator hand-over through a real Redis: what the operator stores as
//! the planner's input (the prompt byte for byte, the catalog) is what `crane-executor plan
//! --run-id` loads, and the planner's result comes back the same way; garbage, oversized or
//! foreign values in the keys are clear errors, never panics; deleting the run removes both.

use std::time::Duration;

use crane_core::plan::{Plan, PlanSource};
use crane_core::tool::Catalog;
use crane_engine::api::{
    Auth, PlannerInput, PlannerResult, client, connect, load_planner_input, load_planner_result,
    store_planner_input, store_planner_result,
};
use crane_engine::{EngineError, RunKeys, delete_run};
use crane_testkit::RedisServer;

fn plan() -> Plan {
    serde_json::from_value(serde_json::json!({"steps": [
        {"id": 1, "tool": "calculator", "input": {"expression": "(41*7)+13"}}
    ]}))
    .expect("fixture plan")
}

fn keys(run: &str) -> RunKeys {
    RunKeys::new("team-a", run).expect("keys")
}

#[tokio::test]
async fn planner_inputs_and_results_round_trip_and_bad_values_are_errors() {
    let server = RedisServer::start().expect("redis-server");
    let c = client(&server.url(), &Auth::default()).expect("client");
    let mut conn = connect(&c).await.expect("connect");

    // The prompt travels byte for byte: NUL, `$$`, `$(VAR)`, braces and newlines survive.
    let input = PlannerInput {
        prompt: "pay $$100 \u{0} $(HOME) {step_1_output}\n\"quoted\"".into(),
        tools: Catalog::builtins().specs().cloned().collect(),
        model: None,
    };
    store_planner_input(&mut conn, &keys("run-1"), &input, Duration::from_secs(60))
        .await
        .expect("store input");
    assert_eq!(
        load_planner_input(&mut conn, &keys("run-1"))
            .await
            .expect("load input"),
        Some(input)
    );
    assert_eq!(
        load_planner_input(&mut conn, &keys("run-x"))
            .await
            .expect("load input"),
        None
    );

    assert_eq!(
        load_planner_result(&mut conn, &keys("run-1"))
            .await
            .expect("load"),
        None
    );
    let planned = PlannerResult::Planned {
        plan: plan(),
        source: PlanSource::Rules,
        fallback_reason: Some("llm timed out".into()),
        usage: Some(crane_core::model::Usage {
            prompt_tokens: 120,
            completion_tokens: 30,
        }),
    };
    store_planner_result(&mut conn, &keys("run-1"), &planned, Duration::from_secs(60))
        .await
        .expect("store");
    assert_eq!(
        load_planner_result(&mut conn, &keys("run-1"))
            .await
            .expect("load"),
        Some(planned)
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(keys("run-1").planner())
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(ttl > 0 && ttl <= 60_000, "ttl {ttl}");

    let failed = PlannerResult::Failed {
        error: "the prompt is empty \u{0} \"quoted\" {step_1_output}".into(),
    };
    store_planner_result(&mut conn, &keys("run-2"), &failed, Duration::from_secs(60))
        .await
        .expect("store");
    assert_eq!(
        load_planner_result(&mut conn, &keys("run-2"))
            .await
            .expect("load"),
        Some(failed)
    );

    // Whatever else sits in the keys is reported as corrupt, naming the key.
    for garbage in [
        "not json".to_owned(),
        r#"{"status":"planned"}"#.to_owned(),
        r#"{"status":"exploded","error":"x"}"#.to_owned(),
        "x".repeat(9 * 1024 * 1024),
    ] {
        for key in [keys("run-3").planner(), keys("run-3").planner_input()] {
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(&garbage)
                .query_async(&mut conn)
                .await
                .expect("set");
        }
        let err = load_planner_result(&mut conn, &keys("run-3"))
            .await
            .expect_err("garbage must not load");
        assert!(matches!(err, EngineError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains("crane:ns:team-a:{run-3}:planner"),
            "{err}"
        );
        let err = load_planner_input(&mut conn, &keys("run-3"))
            .await
            .expect_err("garbage must not load");
        assert!(matches!(err, EngineError::Corrupt { .. }), "{err}");
    }

    // Hostile run ids and namespaces never reach Redis.
    for (ns, bad) in [
        ("team-a", ""),
        ("team-a", "a}b"),
        ("team-a", "x{y"),
        ("team-a", "a b"),
        ("team-a", "a|b"),
        ("team-a", &"r".repeat(300)),
        ("Team-A", "r"),
        ("a:b", "r"),
        ("*", "r"),
    ] {
        assert!(RunKeys::new(ns, bad).is_err(), "{ns}/{bad:?}");
    }

    // Deleting the run removes what the planner was given and what it returned.
    delete_run(&mut conn, &keys("run-1")).await.expect("delete");
    delete_run(&mut conn, &keys("run-1"))
        .await
        .expect("delete again");
    assert_eq!(
        load_planner_result(&mut conn, &keys("run-1"))
            .await
            .expect("load"),
        None
    );
    assert_eq!(
        load_planner_input(&mut conn, &keys("run-1"))
            .await
            .expect("load"),
        None
    );
}
