//! Follows the engine's global progress notifications (`crane:events`, XREAD BLOCK on one
//! dedicated connection) and turns them into reconcile requests for the AgentRun they belong
//! to, coalesced by [`Coalescer`] so one run triggers at most one status write per window
//! however many of its steps finish. Notifications are hints: the reconcile reads the run's
//! report, and the periodic resync covers any notification lost here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use redis::Value;

use crate::AgentRun;
use crate::context::Context;

/// At most one status write per run per window.
pub const WINDOW: Duration = Duration::from_millis(250);

/// Per-run trigger state: when the last trigger went out and whether one is owed.
#[derive(Debug)]
struct Slot {
    last: Instant,
    due: Option<Instant>,
}

/// Decides when a run's notifications become a reconcile: at once when the run has not been
/// triggered within the window, otherwise once at the end of the window (however many
/// notifications arrive meanwhile).
#[derive(Debug)]
pub struct Coalescer<K> {
    window: Duration,
    slots: HashMap<K, Slot>,
}

impl<K: std::hash::Hash + Eq + Clone> Coalescer<K> {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            slots: HashMap::new(),
        }
    }

    /// A notification for `key` at `now`: true when it should be triggered now.
    pub fn notify(&mut self, key: &K, now: Instant) -> bool {
        match self.slots.get_mut(key) {
            Some(slot) if now < slot.last + self.window => {
                slot.due.get_or_insert(slot.last + self.window);
                false
            }
            Some(slot) => {
                slot.last = now;
                slot.due = None;
                true
            }
            None => {
                self.slots.insert(
                    key.clone(),
                    Slot {
                        last: now,
                        due: None,
                    },
                );
                true
            }
        }
    }

    /// Keys whose deferred trigger is due at `now` (each returned once), and forgets runs
    /// quiet for a long time so the map stays bounded by the active runs.
    pub fn due(&mut self, now: Instant) -> Vec<K> {
        let mut out = Vec::new();
        for (key, slot) in &mut self.slots {
            if slot.due.is_some_and(|d| d <= now) {
                slot.due = None;
                slot.last = now;
                out.push(key.clone());
            }
        }
        let stale = self.window * 240;
        self.slots
            .retain(|_, s| s.due.is_some() || now.saturating_duration_since(s.last) < stale);
        out
    }

    /// The earliest deferred trigger, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots.values().filter_map(|s| s.due).min()
    }
}

/// Run id (AgentRun UID) → the object, filled by reconcile, so a notification finds its
/// object without scanning.
#[derive(Default)]
pub struct RunIndex(Mutex<HashMap<String, ObjectRef<AgentRun>>>);

impl RunIndex {
    pub fn insert(&self, uid: &str, obj: ObjectRef<AgentRun>) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(uid.to_owned()).or_insert(obj);
        }
    }

    pub fn remove(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(uid);
        }
    }

    pub fn get(&self, uid: &str) -> Option<ObjectRef<AgentRun>> {
        self.0.lock().ok().and_then(|m| m.get(uid).cloned())
    }

    /// Every indexed run.
    pub fn all(&self) -> Vec<ObjectRef<AgentRun>> {
        self.0
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// `(stream entry id, run id)` pairs of an XREAD reply (RESP2 arrays or RESP3 maps).
pub fn parse_notifications(v: &Value) -> Vec<(String, String)> {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    fn entries(v: &Value, out: &mut Vec<(String, String)>) {
        let Value::Array(entries) = v else { return };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let (Some(id), Some(fields)) = (parts.first().and_then(text), parts.get(1)) else {
                continue;
            };
            let pairs: Vec<String> = match fields {
                Value::Array(f) => f.iter().filter_map(text).collect(),
                Value::Map(m) => m
                    .iter()
                    .flat_map(|(k, v)| [text(k), text(v)])
                    .flatten()
                    .collect(),
                _ => continue,
            };
            let run = pairs
                .chunks_exact(2)
                .find(|c| c[0] == "run")
                .map(|c| c[1].clone());
            match run {
                Some(run) => out.push((id, run)),
                // Still advance past it.
                None => out.push((id, String::new())),
            }
        }
    }
    let mut out = Vec::new();
    match v {
        Value::Array(streams) => {
            for s in streams {
                if let Value::Array(parts) = s
                    && let Some(e) = parts.get(1)
                {
                    entries(e, &mut out);
                }
            }
        }
        Value::Map(m) => {
            for (_, e) in m {
                entries(e, &mut out);
            }
        }
        _ => {}
    }
    out
}

/// Follows the notification stream until `shutdown`, sending coalesced reconcile requests.
/// Redis trouble is logged and retried with backoff; it never ends the operator.
pub async fn follow(
    ctx: Arc<Context>,
    index: Arc<RunIndex>,
    triggers: Vec<UnboundedSender<ObjectRef<AgentRun>>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut coalescer: Coalescer<String> = Coalescer::new(WINDOW);
    let mut last = "$".to_owned();
    let mut conn = None;
    let mut backoff = Duration::from_millis(100);
    let mut lost_redis = false;
    let send = |obj: ObjectRef<AgentRun>| {
        for t in &triggers {
            let _ = t.unbounded_send(obj.clone());
        }
    };
    loop {
        let now = Instant::now();
        for uid in coalescer.due(now) {
            if let Some(obj) = index.get(&uid) {
                send(obj);
            }
        }
        let block = coalescer
            .next_due()
            .map_or(Duration::from_secs(1), |d| d.saturating_duration_since(now))
            .clamp(Duration::from_millis(5), Duration::from_secs(1));
        if conn.is_none() {
            match crane_engine::api::connect_with(&ctx.redis_client, Duration::from_secs(6)).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    lost_redis = true;
                    tracing::warn!(error = %e, "cannot connect to redis to follow progress; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut shutdown => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(crane_engine::keys::GLOBAL_EVENTS)
            .arg(&last);
        let read = cmd.query_async::<Value>(c);
        let reply = tokio::select! {
            r = read => r,
            () = &mut shutdown => return,
        };
        match reply {
            Ok(v) => {
                backoff = Duration::from_millis(100);
                if std::mem::take(&mut lost_redis) {
                    // Redis may have restarted empty: every run is looked at now, so a lost
                    // run is rebuilt from its status at once, not at the next resync.
                    let runs = index.all();
                    tracing::info!(runs = runs.len(), "redis is back; re-checking every run");
                    for obj in runs {
                        send(obj);
                    }
                }
                let now = Instant::now();
                for (id, uid) in parse_notifications(&v) {
                    last = id;
                    ctx.metrics.notifications.inc();
                    if uid.is_empty() {
                        continue;
                    }
                    if coalescer.notify(&uid, now) {
                        if let Some(obj) = index.get(&uid) {
                            send(obj);
                        }
                    } else {
                        ctx.metrics.status_writes_coalesced.inc();
                    }
                }
            }
            Err(e) => {
                lost_redis = true;
                tracing::warn!(error = %e, "following engine progress failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_becomes_one_immediate_and_one_deferred_trigger() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(WINDOW);
        assert!(c.notify(&"a", t0));
        // 100 more notifications inside the window: none triggers now.
        for i in 1..=100u64 {
            assert!(!c.notify(&"a", t0 + Duration::from_millis(i)));
        }
        assert_eq!(c.next_due(), Some(t0 + WINDOW));
        assert!(c.due(t0 + Duration::from_millis(249)).is_empty());
        assert_eq!(c.due(t0 + WINDOW), vec!["a"]);
        // Returned once only.
        assert!(c.due(t0 + WINDOW * 2).is_empty());
        assert_eq!(c.next_due(), None);
    }

    #[test]
    fn runs_are_coalesced_independently_and_quiet_runs_trigger_at_once() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(WINDOW);
        assert!(c.notify(&"a", t0));
        assert!(c.notify(&"b", t0));
        assert!(!c.notify(&"a", t0 + Duration::from_millis(10)));
        // After the window a single notification goes straight through.
        assert!(c.notify(&"b", t0 + WINDOW));
        assert_eq!(c.due(t0 + WINDOW), vec!["a"]);
    }

    #[test]
    fn triggers_per_run_are_bounded_by_elapsed_time_not_by_notifications() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(WINDOW);
        let mut triggers = 0;
        // 10 000 notifications over 2 s (one every 200 µs), polling due() like the loop.
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 200);
            triggers += c.due(now).len();
            if c.notify(&"run", now) {
                triggers += 1;
            }
        }
        triggers += c.due(t0 + Duration::from_secs(3)).len();
        assert!((8..=10).contains(&triggers), "{triggers} triggers");
    }

    #[test]
    fn notifications_parse_from_resp2_and_skip_malformed_entries() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            b("crane:events"),
            Value::Array(vec![
                Value::Array(vec![
                    b("1-0"),
                    Value::Array(vec![
                        b("run"),
                        b("uid-1"),
                        b("step"),
                        b("2"),
                        b("phase"),
                        b("Succeeded"),
                    ]),
                ]),
                Value::Array(vec![b("2-0"), Value::Array(vec![b("odd")])]),
                Value::Int(7),
                Value::Array(vec![Value::Int(3)]),
            ]),
        ])]);
        assert_eq!(
            parse_notifications(&reply),
            vec![
                ("1-0".to_owned(), "uid-1".to_owned()),
                ("2-0".to_owned(), String::new())
            ]
        );
        assert!(parse_notifications(&Value::Nil).is_empty());
    }
}
