//! The Redis key schema, and validation of the user-controlled parts of it (namespaces, run
//! ids, pool names).
//!
//! Every key of a namespace starts with `crane:ns:<namespace>:`, so the namespace's own
//! Redis user can be allowed exactly `~crane:ns:<namespace>:*` and nothing of another
//! namespace ([`acl_key_pattern`]). Within it, every key of a run shares the hash tag
//! `{<run-id>}` and every key of a pool `{pool:<name>}`, so each script touches exactly one
//! slot and Redis Cluster works. The one key outside namespaces is the global notification
//! stream, which namespace users may only append to.

use super::EngineError;

/// The longest run id accepted (a Kubernetes UID is 36 characters; names are at most 253).
pub const MAX_RUN_ID_LEN: usize = 253;

/// The global progress notification stream the operator follows (best effort).
pub const GLOBAL_EVENTS: &str = "crane:events";

/// Where every key of namespace `ns` starts.
pub fn namespace_prefix(ns: &str) -> String {
    format!("crane:ns:{ns}:")
}

/// The Redis ACL key pattern of namespace `ns`'s user: its own keys and no others (a
/// namespace is a DNS label, so the pattern has no glob characters and no other
/// namespace's prefix matches it).
pub fn acl_key_pattern(ns: &str) -> String {
    format!("{}*", namespace_prefix(ns))
}

/// Checks a namespace (a DNS-1123 label).
pub fn validate_namespace(ns: &str) -> Result<(), EngineError> {
    check_label(ns).map_err(|why| EngineError::InvalidNamespace {
        namespace: printable(ns),
        why,
    })
}

/// Checks a run id: 1–253 characters of `[A-Za-z0-9._-]`. Everything else (braces, which
/// would break the hash tag; `|` and `,`, which the scripts use as separators; spaces and
/// control characters) is rejected with the offending character and its position.
pub fn validate_run_id(id: &str) -> Result<(), EngineError> {
    let bad = |why: String| EngineError::InvalidRunId {
        id: printable(id),
        why,
    };
    if id.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if id.len() > MAX_RUN_ID_LEN {
        return Err(bad(format!(
            "it is {} bytes long, the limit is {MAX_RUN_ID_LEN}",
            id.len()
        )));
    }
    if let Some((pos, c)) = id
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(format!(
            "character {c:?} at byte {pos} is not one of A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

/// The keys of Model `model`'s shared limits in namespace `ns`, in the order the `govern`
/// script expects: calls in flight, requests and tokens of the last minute. One slot,
/// `{model:<name>}`, shared by every pool and run of the namespace.
pub fn model_keys(ns: &str, model: &str) -> Result<[String; 3], EngineError> {
    validate_namespace(ns)?;
    check_label(model).map_err(|why| EngineError::InvalidModel {
        model: printable(model),
        why,
    })?;
    let p = format!("{}{{model:{model}}}", namespace_prefix(ns));
    Ok([
        format!("{p}:inflight"),
        format!("{p}:requests"),
        format!("{p}:tokens"),
    ])
}

/// Sorted set of the UIDs of namespace `ns`'s deleted Tool and MCPServer objects, scored by
/// when the operator saw them go: workers refuse to call a tool whose object is in it.
pub fn deleted_tool_objects(ns: &str) -> Result<String, EngineError> {
    validate_namespace(ns)?;
    Ok(format!("{}{{tools}}:deleted", namespace_prefix(ns)))
}

/// Hash (outside every namespace: the operator's alone) of UID → namespace of every Tool
/// and MCPServer the operator has seen, so deletions while it was down are noticed too.
pub const TOOL_OBJECTS: &str = "crane:tool-objects";

/// A worker pool, `<namespace>/<name>`, both Kubernetes DNS labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolName {
    namespace: String,
    name: String,
}

impl PoolName {
    /// Parses `NS/NAME`; each part must be a DNS-1123 label (lowercase alphanumerics and `-`,
    /// 1–63 characters, starting and ending alphanumeric).
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        let bad = |why: String| EngineError::InvalidPool {
            pool: printable(s),
            why,
        };
        let Some((ns, name)) = s.split_once('/') else {
            return Err(bad("expected NAMESPACE/NAME".into()));
        };
        check_label(ns).map_err(|why| bad(format!("namespace: {why}")))?;
        check_label(name).map_err(|why| bad(format!("name: {why}")))?;
        Ok(Self {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn prefix(&self) -> String {
        format!(
            "{}{{pool:{}}}",
            namespace_prefix(&self.namespace),
            self.name
        )
    }

    /// Stream of step hints, consumer group `workers`.
    pub fn queue(&self) -> String {
        format!("{}:queue", self.prefix())
    }

    /// Sorted set of `<run>|<step>` due at the score (ms since the epoch).
    pub fn delayed(&self) -> String {
        format!("{}:delayed", self.prefix())
    }

    /// Set of active run ids, walked by the sweeper.
    pub fn runs(&self) -> String {
        format!("{}:runs", self.prefix())
    }

    /// Hash of circuit-breaker state, fields `<tool>:<field>`.
    pub fn breakers(&self) -> String {
        format!("{}:breakers", self.prefix())
    }

    /// `SET NX PX` guard so one worker at a time sweeps.
    pub fn sweep_lock(&self) -> String {
        format!("{}:sweeper", self.prefix())
    }

    /// The four pool-slot keys in the order the pool scripts expect.
    pub fn script_keys(&self) -> [String; 4] {
        [self.queue(), self.delayed(), self.runs(), self.breakers()]
    }
}

impl std::fmt::Display for PoolName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for PoolName {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The keys of one run of a namespace. Build it only from validated parts ([`RunKeys::new`]
/// checks).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RunKeys {
    namespace: String,
    run_id: String,
}

impl RunKeys {
    pub fn new(namespace: &str, run_id: &str) -> Result<Self, EngineError> {
        validate_namespace(namespace)?;
        validate_run_id(run_id)?;
        Ok(Self {
            namespace: namespace.to_owned(),
            run_id: run_id.to_owned(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    fn key(&self, suffix: &str) -> String {
        format!(
            "{}{{{}}}:{suffix}",
            namespace_prefix(&self.namespace),
            self.run_id
        )
    }

    /// String: what the planner Job hands over (the plan, or its error).
    pub fn planner(&self) -> String {
        self.key("planner")
    }

    /// String: what the planner Job is given (the prompt, byte for byte, and the catalog).
    pub fn planner_input(&self) -> String {
        self.key("planner-input")
    }

    /// Hash: plan, options, namespace, pool, phase, error, counters, timestamps.
    pub fn meta(&self) -> String {
        self.key("meta")
    }

    /// Hash of per-step state, fields `<step>:<field>`.
    pub fn steps(&self) -> String {
        self.key("steps")
    }

    /// Hash: step id → dependencies not yet succeeded.
    pub fn deps(&self) -> String {
        self.key("deps")
    }

    /// Hash: step id → output JSON.
    pub fn out(&self) -> String {
        self.key("out")
    }

    /// Stream of this run's progress events.
    pub fn events(&self) -> String {
        self.key("events")
    }

    /// The five run-slot keys in the order every run script expects.
    pub fn script_keys(&self) -> [String; 5] {
        [
            self.meta(),
            self.steps(),
            self.deps(),
            self.out(),
            self.events(),
        ]
    }
}

fn check_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("must be 1-63 characters, got {}", s.len()));
    }
    if let Some((pos, c)) = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "character {c:?} at byte {pos} is not one of a-z 0-9 -"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Echoes user input in errors without flooding logs or terminals.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_keys_share_one_hash_tag_under_their_namespace() {
        let k = RunKeys::new("team-a", "run-1.a_B").unwrap();
        for key in k.script_keys().iter().chain([&k.planner()]) {
            assert!(key.starts_with("crane:ns:team-a:{run-1.a_B}:"), "{key}");
        }
        assert!(RunKeys::new("Team_A", "r").is_err());
        assert!(RunKeys::new("", "r").is_err());
    }

    #[test]
    fn pool_keys_share_one_hash_tag_under_their_namespace() {
        let p = PoolName::parse("team-a/default").unwrap();
        for key in p.script_keys() {
            assert!(key.starts_with("crane:ns:team-a:{pool:default}:"), "{key}");
        }
        assert_eq!(p.to_string(), "team-a/default");
    }

    #[test]
    fn a_namespace_pattern_covers_its_keys_only() {
        let glob = |pattern: &str, key: &str| {
            // The patterns end in one '*' and have no other glob character.
            pattern
                .strip_suffix('*')
                .is_some_and(|p| key.starts_with(p))
        };
        let a = acl_key_pattern("team-a");
        assert!(glob(&a, &RunKeys::new("team-a", "r").unwrap().meta()));
        assert!(glob(&a, &PoolName::parse("team-a/p").unwrap().queue()));
        for other in [
            RunKeys::new("team-a-b", "r").unwrap().meta(),
            RunKeys::new("team", "r").unwrap().meta(),
            PoolName::parse("team-ab/p").unwrap().queue(),
            GLOBAL_EVENTS.to_owned(),
        ] {
            assert!(!glob(&a, &other), "{other}");
        }
    }

    #[test]
    fn hostile_run_ids_are_rejected_with_the_reason() {
        for bad in [
            "", "a{b", "}", "a}b{", "a|b", "a,b", "a b", "a\nb", "a\0", "ü", "a:b", "*",
        ] {
            let err = validate_run_id(bad).unwrap_err().to_string();
            assert!(err.contains("run id"), "{bad:?}: {err}");
        }
        let long = "a".repeat(MAX_RUN_ID_LEN + 1);
        assert!(
            validate_run_id(&long)
                .unwrap_err()
                .to_string()
                .contains("254 bytes")
        );
        assert!(validate_run_id(&"a".repeat(MAX_RUN_ID_LEN)).is_ok());
        let err = validate_run_id("ab{c").unwrap_err().to_string();
        assert!(err.contains("byte 2"), "{err}");
    }

    #[test]
    fn hostile_pool_names_are_rejected() {
        for bad in [
            "", "default", "/", "a/", "/b", "a/b/c", "A/b", "a/{b}", "a/b}", "-a/b", "a/b-",
            "a b/c", "a/b\n",
        ] {
            assert!(PoolName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(PoolName::parse(&format!("{}/b", "a".repeat(64))).is_err());
        assert!(PoolName::parse("ns-1/pool-2").is_ok());
    }

    #[test]
    fn errors_do_not_echo_unbounded_input() {
        let err = validate_run_id(&"{".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 400, "{}", err.len());
    }
}
