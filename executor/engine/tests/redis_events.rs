//! The progress events API against a real Redis: what a worker publishes is what a follower
//! reads, in order, bounded, blocking and resumable; a trimmed, deleted or re-created stream
//! is reported as missed, never silently skipped.

mod redis_common;

use std::time::Duration;

use crane_core::run::RunPhase;
use crane_engine::events::{self, GLOBAL_EVENTS, Notification, Read, Start, StreamId};
use redis::aio::ConnectionManager;

/// A read that should find entries at once; the bound only stops a broken test.
const SOON: Duration = Duration::from_secs(5);

async fn publish(conn: &mut ConnectionManager, run: &str) -> StreamId {
    let id: String = events::publish(run, "1", RunPhase::Running)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    id.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// An XADD to the global stream as someone else might write it.
async fn raw_add(conn: &mut ConnectionManager, args: &[&str]) {
    let _: String = redis::cmd("XADD")
        .arg(GLOBAL_EVENTS)
        .arg(args)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

fn runs(read: &Read<Notification>) -> Vec<&str> {
    read.items.iter().map(|n| n.run.as_str()).collect()
}

async fn read(
    follower: &mut events::Follower<Notification>,
    block: Duration,
) -> Read<Notification> {
    follower.read(block).await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reads_what_workers_publish_in_order_bounded_and_resumable() {
    let mut e = redis_common::engine(false).await;
    // Nothing published yet: `Now` on a stream that does not exist means everything to come.
    let mut now = events::follow_notifications(e.admin_client.clone(), Start::Now);
    let first = read(&mut now, Duration::from_millis(10)).await;
    assert_eq!((first.items.len(), first.missed), (0, false));
    let a = publish(&mut e.conn, "uid-a").await;
    publish(&mut e.conn, "uid-b").await;
    publish(&mut e.conn, "uid-a").await;
    // An entry without a run is skipped, but read past.
    raw_add(&mut e.conn, &["*", "noise", "1"]).await;
    let got = read(&mut now, SOON).await;
    assert_eq!(runs(&got), ["uid-a", "uid-b", "uid-a"]);
    assert!(!got.missed);
    assert_eq!(got.items[0].step, Some(1));
    assert_eq!(got.items[0].phase, Some(RunPhase::Running));
    let after_noise = now.cursor();
    assert!(
        after_noise > got.items.last().map(|n| n.id),
        "{after_noise:?}"
    );

    // Bounded reads, resumable from the cursor by another follower.
    let mut two =
        events::follow_notifications(e.admin_client.clone(), Start::Beginning).with_count(2);
    assert_eq!(runs(&read(&mut two, SOON).await), ["uid-a", "uid-b"]);
    let resumed_at = two.cursor().unwrap_or_else(|| panic!("no cursor"));
    assert_eq!(runs(&read(&mut two, SOON).await), ["uid-a"]);
    let mut resumed =
        events::follow_notifications(e.admin_client.clone(), Start::After(resumed_at));
    assert_eq!(runs(&read(&mut resumed, SOON).await), ["uid-a"]);
    let mut after_first = events::follow_notifications(e.admin_client.clone(), Start::After(a));
    assert_eq!(
        runs(&read(&mut after_first, SOON).await),
        ["uid-b", "uid-a"]
    );

    // A read blocks until the next entry instead of polling.
    let waiter = tokio::spawn(async move { now.read(Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&mut e.conn, "uid-c").await;
    let got = waiter.await.unwrap_or_else(|e| panic!("{e}"));
    let got = got.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runs(&got), ["uid-c"]);

    // `Now` on a stream with history starts after its last entry.
    let mut late = events::follow_notifications(e.admin_client.clone(), Start::Now);
    assert!(
        read(&mut late, Duration::from_millis(10))
            .await
            .items
            .is_empty()
    );
    publish(&mut e.conn, "uid-d").await;
    assert_eq!(runs(&read(&mut late, SOON).await), ["uid-d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_deleted_or_recreated_stream_is_reported_as_missed() {
    let mut e = redis_common::engine(false).await;
    let mut f = events::follow_notifications(e.admin_client.clone(), Start::Now);
    publish(&mut e.conn, "seen").await;
    // `Now` is resolved at the first read: what was published before it is the past.
    assert!(
        read(&mut f, Duration::from_millis(10))
            .await
            .items
            .is_empty()
    );
    publish(&mut e.conn, "kept").await;
    assert_eq!(runs(&read(&mut f, SOON).await), ["kept"]);

    // Five more, trimmed to the last two exactly: three were lost to this reader.
    for i in 1..=5 {
        raw_add(&mut e.conn, &["MAXLEN", "2", "*", "run", &format!("t{i}")]).await;
    }
    let got = read(&mut f, SOON).await;
    assert!(got.missed, "{got:?}");
    assert_eq!(runs(&got), ["t4", "t5"]);
    let got = read(&mut f, Duration::from_millis(10)).await;
    assert!(!got.missed && got.items.is_empty(), "{got:?}");

    // Re-created with smaller ids (another Redis, another clock): start over, and say so.
    let _: i64 = redis::cmd("DEL")
        .arg(GLOBAL_EVENTS)
        .query_async(&mut e.conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    raw_add(&mut e.conn, &["5-1", "run", "reborn"]).await;
    let got = read(&mut f, Duration::from_millis(10)).await;
    assert!(got.missed, "{got:?}");
    assert_eq!(runs(&read(&mut f, SOON).await), ["reborn"]);

    // Deleted: nothing to read, a gap reported once; what is published next is read.
    let _: i64 = redis::cmd("DEL")
        .arg(GLOBAL_EVENTS)
        .query_async(&mut e.conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = read(&mut f, Duration::from_millis(10)).await;
    assert!(got.missed && got.items.is_empty(), "{got:?}");
    publish(&mut e.conn, "after").await;
    let got = read(&mut f, SOON).await;
    assert_eq!((runs(&got), got.missed), (vec!["after"], false));
}
