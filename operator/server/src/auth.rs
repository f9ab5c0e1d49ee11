//! Who the caller is, and acting as them. Authentication and authorization are Kubernetes':
//! the caller sends `Authorization: Bearer <token>` (the token kubectl uses), and every call
//! the server makes to the apiserver for that request is made WITH THAT TOKEN, on a client
//! built from the server's own base configuration (apiserver URL, CA) with only the user's
//! token as credentials. So a user sees and changes exactly what RBAC lets them, the
//! apiserver's audit log names them, and the server's own ServiceAccount needs no access to
//! Crane's objects at all.
//!
//! - No token (or one that cannot be a token): 401 before anything else happens. A token the
//!   apiserver does not accept comes back as its own 401.
//! - Archived runs are not in the cluster, so RBAC cannot answer for them directly: a
//!   SelfSubjectAccessReview made with the user's token asks whether they may `list
//!   agentruns` in the namespace (the same question `kubectl get agentruns` asks). Creating
//!   one needs no permission.
//! - The user's name (for `decidedBy` on Approvals) comes from a SelfSubjectReview, again
//!   with the user's token.
//! - Clients, reviews and names are cached per token for a short while (clients 5 min,
//!   access reviews 10 s, names 5 min), bounded in number, so a page load does not cost a
//!   TLS handshake and a review per request. An RBAC change therefore reaches archived-run
//!   reads within 10 s; live objects are always asked for at once.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::error::ApiError;
use crate::state::AppState;

/// Longest bearer token accepted (service-account JWTs are about 1 KiB; OIDC tokens a few).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most entries each cache keeps.
const CACHE_ENTRIES: usize = 1024;
const CLIENT_TTL: Duration = Duration::from_secs(300);
const REVIEW_TTL: Duration = Duration::from_secs(10);
const USER_TTL: Duration = Duration::from_secs(300);

/// A small cache whose entries expire; when full, the oldest entry goes.
struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if entries.len() >= CACHE_ENTRIES
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (value, Instant::now()));
    }
}

/// Builds and caches per-user clients and answers.
pub struct Auth {
    base: kube::Config,
    clients: TtlCache<String, kube::Client>,
    reviews: TtlCache<(String, String, &'static str), bool>,
    users: TtlCache<String, UserInfo>,
}

/// Who a token belongs to.
#[derive(Clone, Debug, serde::Serialize)]
pub struct UserInfo {
    pub username: String,
    pub groups: Vec<String>,
}

/// The caller of one request: their token and a client that acts as them.
#[derive(Clone)]
pub struct User {
    token: String,
    pub client: kube::Client,
    auth: Arc<Auth>,
}

impl Auth {
    /// `base`: where the apiserver is and how to trust it (in-cluster or a kubeconfig); its
    /// credentials are never used for users.
    pub fn new(base: kube::Config) -> Self {
        Self {
            base,
            clients: TtlCache::new(CLIENT_TTL),
            reviews: TtlCache::new(REVIEW_TTL),
            users: TtlCache::new(USER_TTL),
        }
    }

    /// A client that authenticates with `token` only.
    pub fn client_for(&self, token: &str) -> Result<kube::Client, ApiError> {
        if let Some(c) = self.clients.get(&token.to_owned()) {
            return Ok(c);
        }
        let mut config = self.base.clone();
        config.auth_info = kube::config::AuthInfo {
            token: Some(secrecy::SecretString::from(token.to_owned())),
            ..kube::config::AuthInfo::default()
        };
        let client = kube::Client::try_from(config)
            .map_err(|e| ApiError::KubeUnavailable(format!("building a client: {e}")))?;
        self.clients.put(token.to_owned(), client.clone());
        Ok(client)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(parts: &Parts) -> Result<String, ApiError> {
    let header =
        parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthenticated(
                "no credentials: send Authorization: Bearer <token> (the token kubectl uses)",
            ))?;
    let text = header
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("the Authorization header is not ASCII"))?;
    let (scheme, token) = text.split_once(' ').ok_or(ApiError::Unauthenticated(
        "expected Authorization: Bearer <token>",
    ))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > MAX_TOKEN_BYTES
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::Unauthenticated(
            "expected Authorization: Bearer <token> with a token of printable characters",
        ));
    }
    Ok(token.to_owned())
}

impl FromRequestParts<Arc<AppState>> for User {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let client = state.auth.client_for(&token)?;
        Ok(Self {
            token,
            client,
            auth: state.auth.clone(),
        })
    }
}

impl User {
    /// Whether RBAC lets this user `verb` `crane.dev` `resource` in `namespace`, asked with
    /// the user's own token (SelfSubjectAccessReview).
    pub async fn may(
        &self,
        verb: &'static str,
        resource: &'static str,
        namespace: &str,
    ) -> Result<bool, ApiError> {
        let key = (self.token.clone(), format!("{resource}/{namespace}"), verb);
        if let Some(allowed) = self.auth.reviews.get(&key) {
            return Ok(allowed);
        }
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some("crane.dev".into()),
                    resource: Some(resource.into()),
                    verb: Some(verb.into()),
                    namespace: Some(namespace.into()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = Api::<SelfSubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(ApiError::kube)?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        self.auth.reviews.put(key, allowed);
        Ok(allowed)
    }

    /// Fails with 403 unless the user may `verb` agentruns in `namespace`.
    pub async fn require(&self, verb: &'static str, namespace: &str) -> Result<(), ApiError> {
        if self.may(verb, "agentruns", namespace).await? {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "agentruns.crane.dev is forbidden: you cannot {verb} agentruns in namespace {namespace:?} (archived runs need the same permission as live ones)"
            )))
        }
    }

    /// The user's name and groups, as the apiserver authenticated them (SelfSubjectReview).
    pub async fn info(&self) -> Result<UserInfo, ApiError> {
        if let Some(info) = self.auth.users.get(&self.token) {
            return Ok(info);
        }
        let review = Api::<SelfSubjectReview>::all(self.client.clone())
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(ApiError::kube)?;
        let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
        let info = UserInfo {
            username: user.username.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
        };
        if info.username.is_empty() {
            return Err(ApiError::KubeUnavailable(
                "the apiserver's SelfSubjectReview named no user".into(),
            ));
        }
        self.auth.users.put(self.token.clone(), info.clone());
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(header: Option<&str>) -> Parts {
        let mut b = axum::http::Request::builder();
        if let Some(h) = header {
            b = b.header("authorization", h);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn only_a_bearer_token_of_printable_characters_passes() {
        assert_eq!(
            bearer(&parts(Some("Bearer abc.def"))).ok().as_deref(),
            Some("abc.def")
        );
        assert_eq!(
            bearer(&parts(Some("bearer  abc"))).ok().as_deref(),
            Some("abc")
        );
        for bad in [
            None,
            Some("Basic dXNlcjpwdw=="),
            Some("Bearer"),
            Some("Bearer "),
            Some("abc"),
        ] {
            assert!(
                matches!(bearer(&parts(bad)), Err(ApiError::Unauthenticated(_))),
                "{bad:?}"
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(bearer(&parts(Some(&long))).is_err());
    }

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let c = TtlCache::new(Duration::from_secs(60));
        for i in 0..CACHE_ENTRIES + 10 {
            c.put(i, i);
        }
        assert!(c.entries.lock().map(|e| e.len()).unwrap_or(0) <= CACHE_ENTRIES);
        assert_eq!(c.get(&(CACHE_ENTRIES + 9)), Some(CACHE_ENTRIES + 9));
        let short = TtlCache::new(Duration::ZERO);
        short.put(1, 1);
        assert_eq!(short.get(&1), None);
    }
}
