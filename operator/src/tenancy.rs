//! Each run namespace's Redis login: the namespace's ACL user (rules in
//! `crane_engine::tenancy`) and the `crane-redis` Secret its pods read, created on first use,
//! rotated on request, re-applied when Redis forgets it, and removed with the namespace.
//!
//! The Secret is the source of truth for the password (Redis keeps only hashes); the user's
//! name is always derived from the namespace, whatever the Secret says, so editing the Secret
//! can change a namespace's own password but never whose keys it opens.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use rand::Rng;
use redis::aio::ConnectionManager;

use crate::controller::Shutdown;
use crate::pod::REDIS_SECRET;
use crane_engine::EngineError;
use crane_engine::tenancy::{self as engine_tenancy, Claim};

/// Annotate the Secret with this (any value) to have the operator issue a new password.
pub const ANNOTATION_ROTATE: &str = "crane.dev/rotate";
/// When the current password was issued (RFC 3339); worker pods started before it are
/// replaced.
pub const ANNOTATION_ROTATED_AT: &str = "crane.dev/rotated-at";
/// Secret key holding the password replaced by the last rotation, during its grace period.
pub const KEY_PREVIOUS: &str = "previous-password";
/// How long a rotated-out password keeps working: pods started before the rotation have this
/// long to be replaced (workers are replaced at once; planners finish within it).
pub const GRACE: Duration = Duration::from_secs(600);
/// How often logins are checked against Redis (re-created after a Redis restart without
/// persistence) and deleted namespaces are cleaned up: the bound on both delays.
pub const RESYNC: Duration = Duration::from_secs(30);
/// Characters of an issued password (hex of 256 random bits).
const PASSWORD_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API error while {what}: {source}")]
    Kube {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("redis error while setting up namespace {namespace}: {source}")]
    Engine {
        namespace: String,
        #[source]
        source: EngineError,
    },
    #[error("namespace {0} does not exist")]
    NamespaceGone(String),
}

fn kube_err(what: &'static str) -> impl Fn(kube::Error) -> Error {
    move |source| Error::Kube { what, source }
}

/// A namespace's login as last applied.
#[derive(Clone, Debug)]
struct Applied {
    at: Instant,
    /// The Secret's `rotated-at`: pods started with an older password are outdated.
    generation: String,
    /// When the previous password must stop working, if one is still accepted.
    grace_ends: Option<Instant>,
}

/// The namespaces' logins, shared by the controllers (which ensure one before a namespace's
/// pods start) and the resync loop.
pub struct Tenancy {
    client: kube::Client,
    redis: ConnectionManager,
    applied: Mutex<HashMap<String, Applied>>,
}

impl Tenancy {
    pub fn new(client: kube::Client, redis: ConnectionManager) -> Self {
        Self {
            client,
            redis,
            applied: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, ns: &str) -> Option<Applied> {
        let map = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        map.get(ns).cloned()
    }

    /// Makes sure namespace `ns` has its Redis user and `crane-redis` Secret, and that its
    /// keys belong to this incarnation of the namespace. Cheap when done recently. Returns
    /// the login's generation (changes on rotation).
    pub async fn ensure(&self, ns: &str) -> Result<String, Error> {
        if let Some(a) = self.cached(ns).filter(|a| a.at.elapsed() < RESYNC) {
            return Ok(a.generation);
        }
        self.sync(ns).await
    }

    /// Applies namespace `ns`'s login now.
    async fn sync(&self, ns: &str) -> Result<String, Error> {
        let engine_err = |source| Error::Engine {
            namespace: ns.to_owned(),
            source,
        };
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let uid = namespaces
            .get_opt(ns)
            .await
            .map_err(kube_err("reading the namespace"))?
            .and_then(|n| n.metadata.uid)
            .ok_or_else(|| Error::NamespaceGone(ns.to_owned()))?;
        let mut redis = self.redis.clone();
        if let Claim::Wiped(n) = engine_tenancy::claim_namespace(&mut redis, ns, &uid)
            .await
            .map_err(engine_err)?
            && n > 0
        {
            tracing::info!(
                namespace = ns,
                keys = n,
                "deleted keys an earlier namespace of this name left"
            );
        }

        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let existing = secrets
            .get_opt(REDIS_SECRET)
            .await
            .map_err(kube_err("reading the crane-redis Secret"))?;
        let now = Timestamp::now();
        let login = Login::decide(ns, existing.as_ref(), now, new_password);
        if existing.as_ref().is_none_or(|s| !login.matches(s)) {
            let secret = login.secret(ns, existing.clone());
            match existing {
                Some(_) => secrets
                    .replace(REDIS_SECRET, &PostParams::default(), &secret)
                    .await
                    .map_err(kube_err("updating the crane-redis Secret"))?,
                None => secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map_err(kube_err("creating the crane-redis Secret"))?,
            };
            if login.rotated {
                tracing::info!(namespace = ns, "issued a new Redis password");
            }
        }
        let mut passwords = vec![login.password.as_str()];
        passwords.extend(login.previous.as_deref());
        engine_tenancy::ensure_user(&mut redis, ns, &passwords)
            .await
            .map_err(engine_err)?;

        let grace_ends = login.previous.as_ref().map(|_| {
            let ends = login.rotated_at + GRACE;
            let left = Duration::try_from(ends.duration_since(now)).unwrap_or_default();
            Instant::now() + left.min(GRACE)
        });
        let generation = login.rotated_at.to_string();
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                ns.to_owned(),
                Applied {
                    at: Instant::now(),
                    generation: generation.clone(),
                    grace_ends,
                },
            );
        Ok(generation)
    }

    /// Every [`RESYNC`]: removes the Redis data and users of namespaces that no longer
    /// exist, and re-applies logins that Redis lost or whose grace period ended. Runs while
    /// the operator leads.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            if let Err(e) = self.resync().await {
                tracing::warn!(error = %e, "tenancy resync failed; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(RESYNC) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    async fn resync(&self) -> Result<(), Error> {
        let mut redis = self.redis.clone();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let existing: HashSet<String> = namespaces
            .list_metadata(&ListParams::default())
            .await
            .map_err(kube_err("listing namespaces"))?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        let redis_err = |source| Error::Engine {
            namespace: "*".to_owned(),
            source,
        };
        let with_users: HashSet<String> = engine_tenancy::namespaces_with_users(&mut redis)
            .await
            .map_err(redis_err)?
            .into_iter()
            .collect();
        let claimed = engine_tenancy::claimed_namespaces(&mut redis)
            .await
            .map_err(redis_err)?;
        for ns in with_users.iter().chain(&claimed) {
            if existing.contains(ns) {
                continue;
            }
            match engine_tenancy::delete_namespace(&mut redis, ns).await {
                Ok(keys) => {
                    tracing::info!(namespace = %ns, keys, "namespace deleted: removed its Redis user and keys")
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "cannot clean up a deleted namespace")
                }
            }
            self.applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(ns);
        }
        let due: Vec<String> = {
            let map = self.applied.lock().unwrap_or_else(|e| e.into_inner());
            map.iter()
                .filter(|(ns, a)| {
                    !with_users.contains(*ns)
                        || a.grace_ends.is_some_and(|t| t <= Instant::now())
                        || a.at.elapsed() >= RESYNC
                })
                .map(|(ns, _)| ns.clone())
                .collect()
        };
        for ns in due {
            if !existing.contains(&ns) {
                continue;
            }
            if let Err(e) = self.sync(&ns).await {
                tracing::warn!(namespace = %ns, error = %e, "cannot apply the namespace's Redis login");
            }
        }
        Ok(())
    }
}

/// What a namespace's `crane-redis` Secret should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Login {
    username: String,
    password: String,
    previous: Option<String>,
    rotated_at: Timestamp,
    /// A new password was issued by this decision.
    rotated: bool,
}

fn secret_str(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// An issued password has exactly our shape; anything else (empty, short, edited by hand) is
/// replaced.
fn well_formed(password: &str) -> bool {
    password.len() == PASSWORD_LEN && password.bytes().all(|b| b.is_ascii_hexdigit())
}

fn new_password() -> String {
    let bytes: [u8; PASSWORD_LEN / 2] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Login {
    /// The login for namespace `ns` given its current Secret: kept as it is, unless missing,
    /// malformed or asked to rotate; a previous password is kept for [`GRACE`] after a
    /// rotation and dropped after.
    fn decide(
        ns: &str,
        secret: Option<&Secret>,
        now: Timestamp,
        issue: impl FnOnce() -> String,
    ) -> Self {
        let current = secret
            .and_then(|s| secret_str(s, "password"))
            .filter(|p| well_formed(p));
        let rotate_requested = secret.is_some_and(|s| {
            s.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANNOTATION_ROTATE))
        });
        let rotated_at = secret
            .and_then(|s| {
                s.metadata
                    .annotations
                    .as_ref()?
                    .get(ANNOTATION_ROTATED_AT)?
                    .parse()
                    .ok()
            })
            .filter(|t: &Timestamp| *t <= now);
        match (current, rotated_at) {
            (Some(password), Some(rotated_at)) if !rotate_requested => {
                let previous = secret
                    .and_then(|s| secret_str(s, KEY_PREVIOUS))
                    .filter(|p| {
                        well_formed(p) && now.duration_since(rotated_at).unsigned_abs() < GRACE
                    });
                Self {
                    username: engine_tenancy::username(ns),
                    password,
                    previous,
                    rotated_at,
                    rotated: false,
                }
            }
            (current, _) => Self {
                username: engine_tenancy::username(ns),
                password: issue(),
                // A rotation keeps the outgoing password working for the grace period.
                previous: current.filter(|_| rotate_requested),
                rotated_at: now,
                rotated: true,
            },
        }
    }

    /// Whether `secret` already holds exactly this login.
    fn matches(&self, secret: &Secret) -> bool {
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        secret_str(secret, "username").as_deref() == Some(&self.username)
            && secret_str(secret, "password").as_deref() == Some(&self.password)
            && secret_str(secret, KEY_PREVIOUS) == self.previous
            && !annotations.contains_key(ANNOTATION_ROTATE)
            && annotations.get(ANNOTATION_ROTATED_AT) == Some(&self.rotated_at.to_string())
    }

    /// The Secret holding this login (`existing` keeps its metadata, e.g. resourceVersion,
    /// and its other annotations and labels).
    fn secret(&self, ns: &str, existing: Option<Secret>) -> Secret {
        let mut s = existing.unwrap_or_else(|| Secret {
            metadata: ObjectMeta {
                name: Some(REDIS_SECRET.to_owned()),
                namespace: Some(ns.to_owned()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        });
        let annotations = s.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.remove(ANNOTATION_ROTATE);
        annotations.insert(
            ANNOTATION_ROTATED_AT.to_owned(),
            self.rotated_at.to_string(),
        );
        s.metadata.labels.get_or_insert_with(BTreeMap::new).insert(
            "app.kubernetes.io/managed-by".to_owned(),
            "crane-operator".to_owned(),
        );
        let mut data = BTreeMap::from([
            (
                "username".to_owned(),
                ByteString(self.username.clone().into_bytes()),
            ),
            (
                "password".to_owned(),
                ByteString(self.password.clone().into_bytes()),
            ),
        ]);
        if let Some(p) = &self.previous {
            data.insert(KEY_PREVIOUS.to_owned(), ByteString(p.clone().into_bytes()));
        }
        s.data = Some(data);
        s.string_data = None;
        s.type_ = Some("Opaque".to_owned());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(data: &[(&str, &str)], annotations: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn issued_passwords_are_well_formed_and_differ() {
        let (a, b) = (new_password(), new_password());
        assert!(well_formed(&a) && well_formed(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn a_missing_secret_gets_a_new_login() {
        let now = at("2026-11-29T12:00:00Z");
        let l = Login::decide("team-a", None, now, || A.to_owned());
        assert_eq!(
            (l.username.as_str(), l.password.as_str()),
            ("crane-ns-team-a", A)
        );
        assert_eq!((l.previous, l.rotated_at, l.rotated), (None, now, true));
    }

    #[test]
    fn a_good_secret_is_kept_and_its_username_is_never_trusted() {
        let now = at("2026-11-29T12:00:00Z");
        let s = secret(
            &[("username", "crane-ns-other"), ("password", A)],
            &[(ANNOTATION_ROTATED_AT, "2026-11-29T11:00:00Z")],
        );
        let l = Login::decide("team-a", Some(&s), now, || panic!("no new password"));
        assert_eq!(l.username, "crane-ns-team-a");
        assert_eq!(l.password, A);
        assert!(!l.rotated);
        assert!(!l.matches(&s), "the wrong username is rewritten");
        assert!(l.matches(&l.secret("team-a", Some(s))));
    }

    #[test]
    fn hand_edited_or_hostile_passwords_are_replaced() {
        let now = at("2026-11-29T12:00:00Z");
        for bad in ["", "short", "x y", &"z".repeat(64), &format!("{A}a")] {
            let s = secret(
                &[("username", "crane-ns-team-a"), ("password", bad)],
                &[(ANNOTATION_ROTATED_AT, "2026-11-29T11:00:00Z")],
            );
            let l = Login::decide("team-a", Some(&s), now, || B.to_owned());
            assert_eq!(l.password, B, "{bad:?}");
            assert_eq!(l.previous, None, "{bad:?} must not keep working");
        }
        // A rotated-at in the future or unreadable is re-issued rather than trusted.
        for when in ["2027-01-01T00:00:00Z", "yesterday"] {
            let s = secret(&[("password", A)], &[(ANNOTATION_ROTATED_AT, when)]);
            assert_eq!(
                Login::decide("team-a", Some(&s), now, || B.to_owned()).password,
                B
            );
        }
    }

    #[test]
    fn rotation_keeps_the_old_password_for_the_grace_period_only() {
        let t0 = at("2026-11-29T12:00:00Z");
        let s = secret(
            &[("username", "crane-ns-team-a"), ("password", A)],
            &[
                (ANNOTATION_ROTATED_AT, "2026-11-29T11:00:00Z"),
                (ANNOTATION_ROTATE, ""),
            ],
        );
        let l = Login::decide("team-a", Some(&s), t0, || B.to_owned());
        assert_eq!((l.password.as_str(), l.previous.as_deref()), (B, Some(A)));
        assert!(l.rotated);
        let rotated = l.secret("team-a", Some(s));
        assert!(l.matches(&rotated));
        let annotations = rotated.metadata.annotations.clone().unwrap_or_default();
        assert!(!annotations.contains_key(ANNOTATION_ROTATE));

        let soon = t0 + Duration::from_secs(60);
        let kept = Login::decide("team-a", Some(&rotated), soon, || panic!("no new password"));
        assert_eq!(kept.previous.as_deref(), Some(A));
        let later = t0 + GRACE + Duration::from_secs(1);
        let expired = Login::decide("team-a", Some(&rotated), later, || {
            panic!("no new password")
        });
        assert_eq!(
            (expired.password.as_str(), expired.previous.as_deref()),
            (B, None)
        );
        assert!(
            !expired.matches(&rotated),
            "the previous password is removed from the Secret"
        );
    }
}
