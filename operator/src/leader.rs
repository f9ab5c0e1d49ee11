//! Leader election over a `coordination.k8s.io/v1` Lease (default `crane-operator` in the
//! operator's namespace), so that of several operator replicas only one runs the controllers
//! and writes. The algorithm is client-go's: a candidate takes the Lease when it is free or
//! when its record has not changed for `leaseDurationSeconds` *as measured on the candidate's
//! own monotonic clock* (so clock skew between nodes does not matter); every write is a
//! `replace` carrying the `resourceVersion` that was read, so two candidates can never both
//! win. The leader renews every third of the lease duration and steps down when no renewal
//! succeeded for two thirds of it, which leaves the last third for its controllers to stop
//! before anyone else may take over.
//!
//! Why hand-written: `kube-leader-election` 0.44 needs kube 4 (this workspace is on kube 5),
//! and `kube-lease-manager` 0.13 keeps reporting leadership while renewals fail (it only
//! reports a loss after a successful read shows another holder), so a leader cut off from
//! the API would keep writing next to its successor.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use crate::context::FIELD_MANAGER;

/// Name of the Lease unless `--leader-election-id` says otherwise.
pub const DEFAULT_LEASE_NAME: &str = "crane-operator";

/// Bounds of `--lease-duration-seconds`: at least 3 so the renew period is a whole second,
/// at most an hour (longer only delays failover).
pub const LEASE_DURATION_RANGE: std::ops::RangeInclusive<u64> = 3..=3600;

/// A Lease written by someone else may carry any duration; this is the longest we honour.
const MAX_FOREIGN_LEASE_SECONDS: i64 = 86_400;

/// Why the leader-election settings were rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaderError {
    #[error(
        "--lease-duration-seconds {0}: must be {min}..={max} (the leader renews every third of it)",
        min = LEASE_DURATION_RANGE.start(),
        max = LEASE_DURATION_RANGE.end()
    )]
    Duration(u64),
    #[error("--leader-election-namespace {given:?}: {why}")]
    Namespace { given: String, why: &'static str },
    #[error("--leader-election-id {given:?}: {why}")]
    Name { given: String, why: &'static str },
    #[error("leader identity {given:?}: {why}")]
    Identity { given: String, why: &'static str },
}

/// Where the Lease is, who we are, and the timing derived from the lease duration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a holder's record stays valid without renewal.
    pub lease_duration: Duration,
    /// The leader renews this often (a third of the duration: 5 s for 15 s).
    pub renew_period: Duration,
    /// The leader steps down when no renewal succeeded for this long (two thirds: 10 s).
    pub renew_deadline: Duration,
    /// Candidates look at the Lease, and a leader retries a failed renewal, this often.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// Checks every value (they come from flags and the environment) and derives the timing.
    pub fn new(
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration_seconds: u64,
    ) -> Result<Self, LeaderError> {
        if !LEASE_DURATION_RANGE.contains(&lease_duration_seconds) {
            return Err(LeaderError::Duration(lease_duration_seconds));
        }
        if let Some(why) = dns_label_problem(namespace) {
            return Err(LeaderError::Namespace {
                given: clip(namespace),
                why,
            });
        }
        if let Some(why) = dns_subdomain_problem(name) {
            return Err(LeaderError::Name {
                given: clip(name),
                why,
            });
        }
        // The API caps holderIdentity only by the object size; keep it printable and short.
        if identity.is_empty()
            || identity.len() > 253
            || identity
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(LeaderError::Identity {
                given: clip(identity),
                why: "must be 1-253 printable characters without spaces",
            });
        }
        let duration = Duration::from_secs(lease_duration_seconds);
        let renew_period = duration / 3;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: duration,
            renew_period,
            renew_deadline: duration * 2 / 3,
            retry_period: renew_period.min(Duration::from_secs(2)),
        })
    }

    /// The time the leader's controllers get to stop after it stepped down, before another
    /// replica may take the Lease.
    pub fn stop_margin(&self) -> Duration {
        self.lease_duration.saturating_sub(self.renew_deadline)
    }
}

/// This process's identity: the pod name when it has one (a restarted container of the same
/// pod then resumes its own Lease at once; the old container is dead by then), otherwise
/// host, pid and a random suffix, unique per process.
pub fn default_identity() -> String {
    let pod = std::env::var("POD_NAME")
        .ok()
        .filter(|p| !p.trim().is_empty());
    match pod {
        Some(pod) => pod,
        None => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "crane-operator".to_owned());
            format!(
                "{host}_{}_{:08x}",
                std::process::id(),
                rand::random::<u32>()
            )
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

fn dns_label_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() || s.len() > 63 {
        return Some("must be 1-63 characters");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || s.starts_with('-')
        || s.ends_with('-')
    {
        return Some("must be a DNS-1123 label (a-z 0-9 -, alphanumeric at both ends)");
    }
    None
}

fn dns_subdomain_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() || s.len() > 253 {
        return Some("must be 1-253 characters");
    }
    if s.split('.').any(|part| dns_label_problem(part).is_some()) {
        return Some("must be a DNS-1123 subdomain (a-z 0-9 - ., alphanumeric at both ends)");
    }
    None
}

/// What a candidate does with the Lease it read.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it (a transition).
    Take,
    /// Someone else holds it and it has not expired.
    Follow(String),
}

/// `holder` as read from the Lease (an empty string is free, like client-go).
fn decide(holder: Option<&str>, me: &str, expired: bool) -> Decision {
    match holder.filter(|h| !h.is_empty()) {
        Some(h) if h == me => Decision::Renew,
        None => Decision::Take,
        Some(_) if expired => Decision::Take,
        Some(h) => Decision::Follow(h.to_owned()),
    }
}

/// The duration a Lease's holder promised, from a field anyone with write access may set:
/// missing or non-positive counts as ours, absurdly long ones are capped.
fn foreign_duration(spec: &LeaseSpec, ours: Duration) -> Duration {
    match spec.lease_duration_seconds {
        Some(s) if s > 0 => Duration::from_secs(
            u64::try_from(i64::from(s).min(MAX_FOREIGN_LEASE_SECONDS)).unwrap_or(u64::MAX),
        ),
        _ => ours,
    }
}

/// Outcome of one look at the Lease.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Leading,
    Following { holder: String },
}

/// Why leadership ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Lost {
    /// Another replica holds the Lease (we were too late renewing, or someone wrote it).
    TakenBy(String),
    /// No renewal succeeded within the renew deadline (the API was unreachable).
    RenewDeadline { last_error: String },
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TakenBy(h) => write!(f, "the lease is now held by {h}"),
            Self::RenewDeadline { last_error } => {
                write!(f, "no renewal succeeded within the deadline: {last_error}")
            }
        }
    }
}

/// One candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderConfig,
    /// resourceVersion of the last record seen and when (monotonic) it was first seen.
    observed: Option<(String, Instant)>,
    /// When another holder's record expires unless it changes (monotonic), so a candidate
    /// looks again right then instead of up to a retry period later.
    expires_at: Option<Instant>,
}

impl Elector {
    pub fn new(client: kube::Client, cfg: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
            expires_at: None,
        }
    }

    pub fn config(&self) -> &LeaderConfig {
        &self.cfg
    }

    fn observe(&mut self, lease: &Lease) {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        match &self.observed {
            Some((seen, _)) if *seen == rv => {}
            _ => self.observed = Some((rv, Instant::now())),
        }
    }

    fn record(&self, previous: Option<&LeaseSpec>, now: MicroTime) -> LeaseSpec {
        let ours = previous
            .and_then(|p| p.holder_identity.as_deref())
            .is_some_and(|h| h == self.cfg.identity);
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: i32::try_from(self.cfg.lease_duration.as_secs()).ok(),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours || previous.is_none() {
                transitions
            } else {
                transitions.saturating_add(1).max(0)
            }),
            ..LeaseSpec::default()
        }
    }

    fn post_params() -> PostParams {
        PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        }
    }

    /// Reads the Lease once and takes or renews it when allowed.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.record(None, now)),
            };
            return match self.api.create(&Self::post_params(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Leading)
                }
                // Another candidate created it first; look again next period.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following {
                    holder: "(just created by another replica)".to_owned(),
                }),
                Err(e) => Err(e),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let promised = foreign_duration(&spec, self.cfg.lease_duration);
        let unchanged_for = self
            .observed
            .as_ref()
            .map_or(Duration::ZERO, |(_, at)| at.elapsed());
        let expired = unchanged_for >= promised;
        self.expires_at = Instant::now().checked_add(promised.saturating_sub(unchanged_for));
        if let Decision::Follow(holder) =
            decide(spec.holder_identity.as_deref(), &self.cfg.identity, expired)
        {
            return Ok(Attempt::Following { holder });
        }
        let previous_holder = spec.holder_identity.clone().unwrap_or_default();
        let updated = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(self.record(Some(&spec), now)),
        };
        match self
            .api
            .replace(&self.cfg.name, &Self::post_params(), &updated)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(Attempt::Leading)
            }
            // The resourceVersion moved: someone else wrote first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following {
                holder: previous_holder,
            }),
            Err(e) => Err(e),
        }
    }

    /// Returns once this process holds the Lease; API errors are logged and retried (the
    /// API may be away for a while).
    pub async fn acquire(&mut self) {
        let mut last_holder = String::new();
        loop {
            let limit = self.cfg.renew_period.max(Duration::from_secs(1));
            match tokio::time::timeout(limit, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leading)) => {
                    tracing::info!(
                        lease = %self.cfg.name,
                        namespace = %self.cfg.namespace,
                        identity = %self.cfg.identity,
                        "acquired leadership"
                    );
                    return;
                }
                Ok(Ok(Attempt::Following { holder })) => {
                    if holder != last_holder {
                        tracing::info!(
                            lease = %self.cfg.name,
                            holder = %holder,
                            identity = %self.cfg.identity,
                            "standing by: another replica leads"
                        );
                        last_holder = holder;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.cfg.name, "reading the lease failed; retrying")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.cfg.name, "reading the lease timed out; retrying")
                }
            }
            let until_expiry = self.expires_at.map_or(self.cfg.retry_period, |at| {
                at.saturating_duration_since(Instant::now()) + Duration::from_millis(50)
            });
            tokio::time::sleep(self.cfg.retry_period.min(until_expiry)).await;
        }
    }

    /// Renews every renew period until leadership ends, and says why.
    pub async fn hold(&mut self) -> Lost {
        let mut last_renew = Instant::now();
        let mut wait = self.cfg.renew_period;
        let mut last_error = String::from("none");
        loop {
            let left = self.cfg.renew_deadline.saturating_sub(last_renew.elapsed());
            if left.is_zero() {
                return Lost::RenewDeadline { last_error };
            }
            tokio::time::sleep(wait.min(left)).await;
            let left = self.cfg.renew_deadline.saturating_sub(last_renew.elapsed());
            if left.is_zero() {
                return Lost::RenewDeadline { last_error };
            }
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leading)) => {
                    last_renew = Instant::now();
                    wait = self.cfg.renew_period;
                }
                // A conflict on our own record (an earlier, timed-out renewal landed late)
                // is retried, not a loss.
                Ok(Ok(Attempt::Following { holder })) if holder != self.cfg.identity => {
                    return Lost::TakenBy(holder);
                }
                Ok(Ok(Attempt::Following { .. })) => wait = self.cfg.retry_period,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.cfg.name, "renewing the lease failed; retrying");
                    last_error = e.to_string();
                    wait = self.cfg.retry_period;
                }
                Err(_) => {
                    last_error = "the renewal request timed out".to_owned();
                    wait = self.cfg.retry_period;
                }
            }
        }
    }

    /// Gives the Lease up (holder cleared) so another replica takes over at once rather than
    /// after the lease duration; a no-op when someone else holds it.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        let released = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(spec),
        };
        self.api
            .replace(&self.cfg.name, &Self::post_params(), &released)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_follows_the_lease_duration() {
        let c = LeaderConfig::new("crane-system", "crane-operator", "pod-0", 15).unwrap();
        assert_eq!(c.renew_period, Duration::from_secs(5));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        assert_eq!(c.stop_margin(), Duration::from_secs(5));
        let short = LeaderConfig::new("a", "b", "c", 3).unwrap();
        assert_eq!(short.retry_period, Duration::from_secs(1));
        assert!(short.renew_deadline < short.lease_duration);
    }

    #[test]
    fn hostile_settings_are_rejected_with_the_flag_named() {
        for d in [0, 1, 2, 3601, u64::MAX] {
            let e = LeaderConfig::new("ns", "l", "me", d).unwrap_err();
            assert_eq!(e, LeaderError::Duration(d));
            assert!(e.to_string().contains("--lease-duration-seconds"), "{e}");
        }
        let long = "a".repeat(64);
        for ns in [
            "",
            "Crane",
            "a b",
            "-a",
            "a-",
            "a.b",
            "../etc",
            "ns\u{0}",
            long.as_str(),
        ] {
            let e = LeaderConfig::new(ns, "l", "me", 15).unwrap_err();
            assert!(
                e.to_string().contains("--leader-election-namespace"),
                "{ns:?}: {e}"
            );
        }
        let huge = "a".repeat(254);
        for name in ["", "UPPER", "a..b", ".a", "a/b", "a b", huge.as_str()] {
            let e = LeaderConfig::new("ns", name, "me", 15).unwrap_err();
            assert!(
                e.to_string().contains("--leader-election-id"),
                "{name:?}: {e}"
            );
        }
        for id in ["", "a b", "a\nb", "\u{7}", huge.as_str()] {
            let e = LeaderConfig::new("ns", "l", id, 15).unwrap_err();
            assert!(e.to_string().contains("identity"), "{id:?}: {e}");
        }
        assert!(LeaderConfig::new("crane-system", "crane.operator-1", "host_1_ab", 15).is_ok());
    }

    #[test]
    fn only_a_free_expired_or_own_lease_is_taken() {
        assert_eq!(decide(Some("me"), "me", false), Decision::Renew);
        assert_eq!(decide(Some("me"), "me", true), Decision::Renew);
        assert_eq!(decide(None, "me", false), Decision::Take);
        assert_eq!(decide(Some(""), "me", false), Decision::Take);
        assert_eq!(decide(Some("other"), "me", true), Decision::Take);
        assert_eq!(
            decide(Some("other"), "me", false),
            Decision::Follow("other".into())
        );
        // A prefix of our identity is someone else.
        assert_eq!(decide(Some("m"), "me", false), Decision::Follow("m".into()));
    }

    #[test]
    fn foreign_durations_are_bounded() {
        let ours = Duration::from_secs(15);
        let with = |s| LeaseSpec {
            lease_duration_seconds: s,
            ..LeaseSpec::default()
        };
        assert_eq!(foreign_duration(&with(None), ours), ours);
        assert_eq!(foreign_duration(&with(Some(0)), ours), ours);
        assert_eq!(foreign_duration(&with(Some(-5)), ours), ours);
        assert_eq!(foreign_duration(&with(Some(i32::MIN)), ours), ours);
        assert_eq!(
            foreign_duration(&with(Some(30)), ours),
            Duration::from_secs(30)
        );
        assert_eq!(
            foreign_duration(&with(Some(i32::MAX)), ours),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn identity_is_valid() {
        let id = default_identity();
        assert!(LeaderConfig::new("ns", "l", &id, 15).is_ok(), "{id}");
    }
}
