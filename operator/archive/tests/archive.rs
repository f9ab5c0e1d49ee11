//! The archive against a real PostgreSQL (Debian's, started by the test in a temporary data
//! directory): migrations, the idempotent write, lists with filters and cursors, reads,
//! retention in batches, and an outage in the middle.

use std::time::Duration;

use crane_api::AgentRun;
use crane_archive::{Archive, ArchiveConfig, Cursor, ListQuery, RunRecord, WriteOutcome};
use crane_core::run::{RunPhase, RunReport, StepPhase, StepReport};
use crane_testkit::PostgresServer;
use k8s_openapi::jiff::{Timestamp, ToSpan};
use serde_json::json;

fn run(ns: &str, name: &str, uid: &str, created: i64, phase: &str, prompt: &str) -> AgentRun {
    let created = Timestamp::from_second(1_800_000_000 + created).expect("ts");
    serde_json::from_value(json!({
        "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": name, "namespace": ns, "uid": uid,
                     "creationTimestamp": created.to_string()},
        "spec": {"prompt": prompt},
        "status": {"phase": phase, "steps": [{"id": 1, "tool": "calculator", "phase": "Succeeded",
                   "attempts": 1, "output": {"truncated": true}}]}
    }))
    .expect("fixture")
}

fn report() -> RunReport {
    RunReport {
        phase: RunPhase::Succeeded,
        steps: vec![StepReport {
            id: 1,
            tool: "calculator".into(),
            phase: StepPhase::Succeeded,
            attempts: 1,
            output: Some(json!({"big": "x".repeat(100_000), "nul": "a\u{0}b"})),
            ..StepReport::default()
        }],
        result: Some(json!(42)),
        error: None,
        spending: Default::default(),
        budget_exceeded: None,
    }
}

async fn archive(pg: &PostgresServer) -> Archive {
    let mut config = ArchiveConfig::new(pg.url());
    config.connect_timeout = Duration::from_secs(2);
    Archive::new(&config).expect("archive")
}

#[tokio::test]
async fn write_once_read_list_prune_and_survive_an_outage() {
    let mut pg = PostgresServer::start().expect("postgres");
    let a = archive(&pg).await;
    let b = archive(&pg).await;
    // Two processes starting at once apply the migration exactly once.
    let (ma, mb) = tokio::join!(a.migrate(), b.migrate());
    assert_eq!(ma.expect("migrate a") + mb.expect("migrate b"), 1);
    assert_eq!(archive(&pg).await.migrate().await.expect("again"), 0);

    // Written once; a second write (an operator killed before its finalizer went) is a no-op.
    let first = RunRecord::from_run(
        &run("team-a", "milk", "uid-1", 0, "Succeeded", "buy milk"),
        Some(&report()),
    )
    .expect("record");
    assert_eq!(
        a.write(&first).await.expect("write"),
        WriteOutcome::Archived
    );
    let mut changed = first.clone();
    changed.summary.phase = "Failed".into();
    assert_eq!(
        b.write(&changed).await.expect("rewrite"),
        WriteOutcome::AlreadyArchived
    );
    let got = a.get("team-a", "uid-1").await.expect("get").expect("found");
    assert_eq!(got.summary.phase, "Succeeded");
    assert_eq!(got.result, Some(json!(42)));
    let output = &got.report.as_ref().expect("report")["steps"][0]["output"];
    assert_eq!(output["big"].as_str().map(str::len), Some(100_000));
    assert_eq!(output["nul"], json!("a\u{FFFD}b"));
    assert!(
        a.get("team-b", "uid-1").await.expect("get").is_none(),
        "namespaces are separate"
    );
    assert_eq!(
        a.get_by_name("team-a", "milk")
            .await
            .expect("by name")
            .map(|r| r.summary.uid),
        Some("uid-1".into())
    );

    // 30 more runs, newest first in pages of 7, every run exactly once.
    for i in 1..=30 {
        let phase = if i % 3 == 0 { "Failed" } else { "Succeeded" };
        let r = RunRecord::from_run(
            &run(
                "team-a",
                &format!("run-{i}"),
                &format!("uid-{i:03}"),
                i % 10,
                phase,
                &format!("task {i}"),
            ),
            None,
        )
        .expect("record");
        a.write(&r).await.expect("write");
    }
    let mut q = ListQuery::new("team-a");
    q.limit = 7;
    let mut seen = Vec::new();
    loop {
        let page = a.list(&q).await.expect("list");
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().map(|i| (i.created_at.0, i.uid.clone())));
        match page.next {
            Some(c) => q.after = Some(Cursor::decode(&c.encode()).expect("cursor")),
            None => break,
        }
    }
    assert_eq!(seen.len(), 31);
    let mut sorted = seen.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(seen, sorted, "newest first, ties by uid");

    // Filters, and hostile text taken literally.
    let mut q = ListQuery::new("team-a");
    q.phases = vec!["Failed".into()];
    q.limit = 100;
    assert_eq!(a.list(&q).await.expect("phase").items.len(), 10);
    q.phases.clear();
    q.text = Some("TASK 1".into());
    let names: Vec<_> = a
        .list(&q)
        .await
        .expect("text")
        .items
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names.len(), 11, "task 1, 10-19: {names:?}");
    for hostile in [
        "' OR '1'='1",
        "%",
        "_",
        "\\",
        "'); DROP TABLE archived_runs; --",
    ] {
        q.text = Some(hostile.into());
        assert!(
            a.list(&q).await.expect("hostile").items.is_empty(),
            "{hostile}"
        );
    }
    q.text = None;
    q.since = Some(Timestamp::from_second(1_800_000_005).expect("ts"));
    q.until = Some(Timestamp::from_second(1_800_000_007).expect("ts"));
    assert_eq!(
        a.list(&q).await.expect("range").items.len(),
        6,
        "created at +5s and +6s"
    );
    assert_eq!(a.count(None).await.expect("count"), 31);

    // Retention: the 20 oldest archived long ago go in batches of 8; the rest stay.
    for i in 1..=20 {
        a.set_archived_at(&format!("uid-{i:03}"), Timestamp::now() - 48.hours())
            .await
            .expect("age");
    }
    let cutoff = Timestamp::now() - 24.hours();
    let batches: Vec<u64> = {
        let mut v = Vec::new();
        loop {
            let n = a.prune(cutoff, 8).await.expect("prune");
            v.push(n);
            if n < 8 {
                break v;
            }
        }
    };
    assert_eq!(batches, vec![8, 8, 4]);
    assert_eq!(a.count(Some("team-a")).await.expect("count"), 11);

    // PostgreSQL away: a write fails (transient, so the operator keeps its finalizer), and the
    // same Archive writes again once it is back.
    pg.stop();
    let late = RunRecord::from_run(
        &run("team-a", "late", "uid-late", 50, "Succeeded", "x"),
        None,
    )
    .expect("record");
    let err = a.write(&late).await.expect_err("down");
    assert!(err.is_transient(), "{err}");
    pg.start_again().expect("restart");
    let mut outcome = None;
    for _ in 0..50 {
        match a.write(&late).await {
            Ok(o) => {
                outcome = Some(o);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(outcome, Some(WriteOutcome::Archived));
    assert!(a.delete("team-a", "uid-late").await.expect("delete"));
    assert!(!a.delete("team-a", "uid-late").await.expect("delete again"));
}
