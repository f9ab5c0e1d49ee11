//! Follows the engine's global progress notifications (`crane_engine::events`, blocking
//! reads on a dedicated connection) and turns them into reconcile requests for the AgentRun they belong
//! to, coalesced by [`Coalescer`] so one run triggers at most one status write per window
//! however many of its steps finish. Notifications are hints: the reconcile reads the run's
//! report, and the periodic resync covers any notification lost here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crane_engine::events::{Start, follow_notifications};
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;

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
    let mut notifications = follow_notifications(ctx.redis_client.clone(), Start::Now);
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
        let read = tokio::select! {
            r = notifications.read(block) => r,
            () = &mut shutdown => return,
        };
        match read {
            Ok(read) => {
                backoff = Duration::from_millis(100);
                if std::mem::take(&mut lost_redis) || read.missed {
                    // Redis may have restarted empty, or notifications were trimmed away:
                    // every run is looked at now, so a lost run is rebuilt from its status
                    // at once, not at the next resync.
                    let runs = index.all();
                    tracing::info!(
                        runs = runs.len(),
                        "notifications may be missing; re-checking every run"
                    );
                    for obj in runs {
                        send(obj);
                    }
                }
                let now = Instant::now();
                let now_ms = crane_engine::time::now_ms();
                for n in read.items {
                    ctx.metrics.notifications.inc();
                    // Stream ids carry Redis's clock in ms: how long the notification waited.
                    ctx.metrics
                        .notification_lag
                        .observe(now_ms.saturating_sub(n.id.ms) as f64 / 1000.0);
                    if coalescer.notify(&n.run, now) {
                        if let Some(obj) = index.get(&n.run) {
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
}
