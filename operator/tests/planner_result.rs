//! The planner Job → operator hand-over through a real Redis: what `crane-executor plan
//! --run-id` stores is what the operator loads; garbage, oversized or foreign values in the
//! key are clear errors, never panics; deletion is idempotent.

use std::time::Duration;

use crane_core::plan::Plan;
use crane_core::plan::PlanSource;
use crane_engine::api::{
    PlannerResult, connect, delete_planner_result, load_planner_result, planner_key,
    store_planner_result,
};
use crane_engine::{EngineError, api::client};
use crane_testkit::RedisServer;

fn plan() -> Plan {
    serde_json::from_value(serde_json::json!({"steps": [
        {"id": 1, "tool": "calculator", "input": {"expression": "(41*7)+13"}}
    ]}))
    .expect("fixture plan")
}

#[tokio::test]
async fn planner_results_round_trip_and_bad_values_are_errors() {
    let server = RedisServer::start().expect("redis-server");
    let c = client(&server.url(), None).expect("client");
    let mut conn = connect(&c).await.expect("connect");

    assert_eq!(
        load_planner_result(&mut conn, "run-1").await.expect("load"),
        None
    );
    let planned = PlannerResult::Planned {
        plan: plan(),
        source: PlanSource::Rules,
        fallback_reason: Some("llm timed out".into()),
    };
    store_planner_result(&mut conn, "run-1", &planned, Duration::from_secs(60))
        .await
        .expect("store");
    assert_eq!(
        load_planner_result(&mut conn, "run-1").await.expect("load"),
        Some(planned)
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(planner_key("run-1").expect("key"))
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(ttl > 0 && ttl <= 60_000, "ttl {ttl}");

    let failed = PlannerResult::Failed {
        error: "the prompt is empty \u{0} \"quoted\" {step_1_output}".into(),
    };
    store_planner_result(&mut conn, "run-2", &failed, Duration::from_secs(60))
        .await
        .expect("store");
    assert_eq!(
        load_planner_result(&mut conn, "run-2").await.expect("load"),
        Some(failed)
    );

    // Whatever else sits in the key is reported as corrupt, naming the key.
    for garbage in [
        "not json".to_owned(),
        r#"{"status":"planned"}"#.to_owned(),
        r#"{"status":"exploded","error":"x"}"#.to_owned(),
        "x".repeat(3 * 1024 * 1024),
    ] {
        let _: () = redis::cmd("SET")
            .arg(planner_key("run-3").expect("key"))
            .arg(&garbage)
            .query_async(&mut conn)
            .await
            .expect("set");
        let err = load_planner_result(&mut conn, "run-3")
            .await
            .expect_err("garbage must not load");
        assert!(matches!(err, EngineError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("crane:{run-3}:planner"), "{err}");
    }

    // Hostile run ids never reach Redis.
    for bad in ["", "a}b", "x{y", "a b", "a|b", &"r".repeat(300)] {
        assert!(
            load_planner_result(&mut conn, bad).await.is_err(),
            "{bad:?}"
        );
        assert!(
            store_planner_result(
                &mut conn,
                bad,
                &PlannerResult::Failed { error: "e".into() },
                Duration::from_secs(1)
            )
            .await
            .is_err(),
            "{bad:?}"
        );
    }

    delete_planner_result(&mut conn, "run-1")
        .await
        .expect("delete");
    delete_planner_result(&mut conn, "run-1")
        .await
        .expect("delete again");
    assert_eq!(
        load_planner_result(&mut conn, "run-1").await.expect("load"),
        None
    );
}
