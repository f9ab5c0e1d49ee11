//! Plumbing both controllers share, so they cannot drift apart: per-object backoff with
//! jitter, standard-form conditions, server-side-applied status, and the shutdown signal.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::FIELD_MANAGER;

/// Longest condition message, in bytes.
pub const MAX_CONDITION_MESSAGE_BYTES: usize = 1024;

/// Per-object exponential backoff for transient errors, reset on success: `min` doubling up
/// to `max`, plus up to 25 % jitter so objects failing together (Redis down) do not retry in
/// lockstep.
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The delay after one more failure of `key`.
    pub fn failed(&self, key: &str) -> Duration {
        // A poisoned lock only means another reconcile panicked; the counts stay usable.
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let base = self
            .min
            .saturating_mul(1u32 << (*n - 1).min(16))
            .min(self.max);
        let quarter = u64::try_from(base.as_millis() / 4).unwrap_or(u64::MAX);
        base + Duration::from_millis(rand::rng().random_range(0..=quarter))
    }

    pub fn succeeded(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }
}

/// Sets condition `type_` in standard form: replaced in place (or appended), the message cut
/// to [`MAX_CONDITION_MESSAGE_BYTES`], and `lastTransitionTime` moved only when the status
/// value changes (a new reason or message alone keeps it).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let message = crane_core::text::truncate(message, MAX_CONDITION_MESSAGE_BYTES);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status;
            c.reason = reason.to_owned();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// The condition `type_`, if set.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Server-side-applies `status` (any serialisable status, or a part of one) to object `name`
/// with the operator's field manager.
pub async fn apply_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> kube::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

/// A future that resolves when the operator is asked to stop; cloneable so every task gets
/// one.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// A trigger and its first receiver.
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Self(rx))
    }

    /// Resolves once shutdown was requested (or the trigger was dropped).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_object_with_jitter_caps_and_resets() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let delays: Vec<u64> = (0..12)
            .map(|_| b.failed("ns/a").as_millis() as u64)
            .collect();
        for (i, base) in [1000u64, 2000, 4000, 8000].into_iter().enumerate() {
            assert!(
                (base..=base + base / 4).contains(&delays[i]),
                "failure {}: {} ms",
                i + 1,
                delays[i]
            );
        }
        let last = *delays.last().unwrap_or(&0);
        assert!((300_000..=375_000).contains(&last), "{last}");
        // Another object has its own counter.
        assert!(b.failed("ns/b") < Duration::from_millis(1251));
        b.succeeded("ns/a");
        assert!(b.failed("ns/a") < Duration::from_millis(1251));
    }

    #[test]
    fn conditions_move_their_transition_time_only_on_a_status_change() {
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap_or_default());
        let t2 = Time(k8s_openapi::jiff::Timestamp::from_second(2).unwrap_or_default());
        let mut c = Vec::new();
        set_condition(&mut c, "Ready", true, "A", "first", Some(1), &t1);
        set_condition(&mut c, "Ready", true, "B", "second", Some(2), &t2);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].reason.as_str(), &c[0].last_transition_time),
            ("B", &t1)
        );
        set_condition(&mut c, "Ready", false, "C", &"é".repeat(5000), None, &t2);
        assert_eq!(c[0].last_transition_time, t2);
        assert!(c[0].message.len() <= MAX_CONDITION_MESSAGE_BYTES);
        set_condition(&mut c, "Other", true, "D", "x", None, &t2);
        assert_eq!(c.len(), 2);
        assert_eq!(condition(&c, "Other").map(|c| c.reason.as_str()), Some("D"));
    }
}
