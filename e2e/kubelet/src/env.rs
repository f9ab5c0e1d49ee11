//! Builds a container's environment the way the kubelet does: `env` (literal values and
//! `valueFrom` Secret / ConfigMap / fieldRef), `envFrom`, and `$(VAR)` expansion in values,
//! command and args. Resolution is a pure function over Secrets and ConfigMaps fetched
//! beforehand, so every rule is unit tested without an apiserver.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod};

/// Why a container's environment could not be built. The kubelet reports these as
/// `CreateContainerConfigError` and tries again later, as the real kubelet does.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("env {var}: secret {name:?} not found")]
    SecretMissing { var: String, name: String },
    #[error("env {var}: key {key:?} not found in secret {name:?}")]
    SecretKeyMissing {
        var: String,
        name: String,
        key: String,
    },
    #[error("env {var}: configmap {name:?} not found")]
    ConfigMapMissing { var: String, name: String },
    #[error("env {var}: key {key:?} not found in configmap {name:?}")]
    ConfigMapKeyMissing {
        var: String,
        name: String,
        key: String,
    },
    #[error("env {var}: secret key {key:?} in {name:?} is not valid UTF-8")]
    NotUtf8 {
        var: String,
        name: String,
        key: String,
    },
    #[error("env {var}: fieldRef {path:?} is not supported by the process kubelet")]
    UnsupportedField { var: String, path: String },
    #[error("env {var}: resourceFieldRef is not supported by the process kubelet")]
    UnsupportedResourceField { var: String },
    #[error("env {var}: valueFrom names no source")]
    EmptyValueFrom { var: String },
    #[error("envFrom: secret {0:?} not found")]
    EnvFromSecretMissing(String),
    #[error("envFrom: configmap {0:?} not found")]
    EnvFromConfigMapMissing(String),
    #[error("envFrom: entry names neither a secret nor a configmap")]
    EmptyEnvFrom,
}

/// Secrets and ConfigMaps of the pod's namespace, by name, as decoded key/value maps.
/// Secret values stay bytes because a Secret may hold binary data.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// Names of the Secrets and ConfigMaps a container's environment refers to, so the caller
/// fetches exactly those.
pub fn referenced_sources(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut secrets = BTreeSet::new();
    let mut config_maps = BTreeSet::new();
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(r) = &from.secret_key_ref {
            secrets.insert(r.name.clone());
        }
        if let Some(r) = &from.config_map_key_ref {
            config_maps.insert(r.name.clone());
        }
    }
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.secret_ref {
            secrets.insert(r.name.clone());
        }
        if let Some(r) = &from.config_map_ref {
            config_maps.insert(r.name.clone());
        }
    }
    (secrets, config_maps)
}

/// The container's environment in definition order (later definitions of a name win, as in
/// Kubernetes): first `envFrom`, then `env`, with `$(VAR)` in `env` values expanded against
/// what was defined before.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        if let Some(slot) = env.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            env.push((name, value));
        }
    };

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(r) = &from.secret_ref {
            match sources.secrets.get(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        let name = format!("{prefix}{k}");
                        // Kubernetes skips keys that are not valid variable names; we also
                        // skip values that are not text, since the environment cannot hold them.
                        if let (true, Ok(v)) = (valid_env_name(&name), String::from_utf8(v.clone()))
                        {
                            set(&mut env, name, v);
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::EnvFromSecretMissing(r.name.clone())),
            }
        } else if let Some(r) = &from.config_map_ref {
            match sources.config_maps.get(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            set(&mut env, name, v.clone());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::EnvFromConfigMapMissing(r.name.clone())),
            }
        } else {
            return Err(EnvError::EmptyEnvFrom);
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            match value_from(pod, &var.name, from, sources)? {
                Some(v) => v,
                // An optional reference that is missing leaves the variable unset.
                None => continue,
            }
        } else {
            let raw = var.value.as_deref().unwrap_or("");
            let defined = env.clone();
            expand(raw, |name| lookup(&defined, name))
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

fn lookup(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

/// `$(VAR)` expansion of command and args against the finished environment.
pub fn expand_all(items: &[String], env: &[(String, String)]) -> Vec<String> {
    items
        .iter()
        .map(|s| expand(s, |name| lookup(env, name)))
        .collect()
}

fn value_from(
    pod: &Pod,
    var: &str,
    from: &k8s_openapi::api::core::v1::EnvVarSource,
    sources: &Sources,
) -> Result<Option<String>, EnvError> {
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        let Some(data) = sources.secrets.get(&r.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(EnvError::SecretMissing {
                    var: var.to_owned(),
                    name: r.name.clone(),
                })
            };
        };
        let Some(bytes) = data.get(&r.key) else {
            return if optional {
                Ok(None)
            } else {
                Err(EnvError::SecretKeyMissing {
                    var: var.to_owned(),
                    name: r.name.clone(),
                    key: r.key.clone(),
                })
            };
        };
        return String::from_utf8(bytes.clone())
            .map(Some)
            .map_err(|_| EnvError::NotUtf8 {
                var: var.to_owned(),
                name: r.name.clone(),
                key: r.key.clone(),
            });
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        let Some(data) = sources.config_maps.get(&r.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(EnvError::ConfigMapMissing {
                    var: var.to_owned(),
                    name: r.name.clone(),
                })
            };
        };
        return match data.get(&r.key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(EnvError::ConfigMapKeyMissing {
                var: var.to_owned(),
                name: r.name.clone(),
                key: r.key.clone(),
            }),
        };
    }
    if let Some(r) = &from.field_ref {
        return field_value(pod, &r.field_path).map(Some).ok_or_else(|| {
            EnvError::UnsupportedField {
                var: var.to_owned(),
                path: r.field_path.clone(),
            }
        });
    }
    if from.resource_field_ref.is_some() {
        return Err(EnvError::UnsupportedResourceField {
            var: var.to_owned(),
        });
    }
    Err(EnvError::EmptyValueFrom {
        var: var.to_owned(),
    })
}

/// The downward-API fields a fieldRef may name. Every pod of this kubelet lives on loopback,
/// so the IP fields are 127.0.0.1.
fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let quoted_key = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(rest.to_owned())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" | "status.podIP" | "status.hostIPs" | "status.podIPs" => {
            Some(crate::status::LOOPBACK.to_owned())
        }
        _ => {
            if let Some(key) = quoted_key("metadata.labels['") {
                return Some(
                    meta.labels
                        .as_ref()
                        .and_then(|l| l.get(&key).cloned())
                        .unwrap_or_default(),
                );
            }
            if let Some(key) = quoted_key("metadata.annotations['") {
                return Some(
                    meta.annotations
                        .as_ref()
                        .and_then(|a| a.get(&key).cloned())
                        .unwrap_or_default(),
                );
            }
            None
        }
    }
}

/// Kubernetes' rule for names taken from envFrom: C identifier-ish, dots and dashes allowed,
/// not starting with a digit.
fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '-' || c == '.' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// `$(VAR)` expansion with Kubernetes' exact rules: `$$` is an escaped `$`, an unknown or
/// unterminated reference stays as written, a lone `$` stays.
pub fn expand(input: &str, mapping: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.chars().next() {
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match mapping(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, ResourceFieldSelector, SecretEnvSource, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn map(env: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        move |n| lookup(&env, n)
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let m = map(&[("A", "1"), ("B", "two"), ("", "empty-name")]);
        assert_eq!(expand("$(A)", &m), "1");
        assert_eq!(expand("x$(A)y$(B)z", &m), "x1ytwoz");
        assert_eq!(expand("$$(A)", &m), "$(A)");
        assert_eq!(expand("$$$(A)", &m), "$1");
        assert_eq!(expand("$(MISSING)", &m), "$(MISSING)");
        assert_eq!(expand("$(A", &m), "$(A");
        assert_eq!(expand("$", &m), "$");
        assert_eq!(expand("a$", &m), "a$");
        assert_eq!(expand("$A", &m), "$A");
        assert_eq!(expand("$()", &m), "empty-name");
        assert_eq!(expand("$é$(A)", &m), "$é1");
        assert_eq!(expand("日本$(B)語", &m), "日本two語");
    }

    #[test]
    fn expansion_is_not_recursive() {
        // A value that itself looks like a reference must not be expanded again, or a Secret
        // value could pull other variables into a command line.
        let m = map(&[("A", "$(B)"), ("B", "secret")]);
        assert_eq!(expand("$(A)", &m), "$(B)");
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("proc-node".into()),
                service_account_name: Some("sa".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    fn var_from(name: &str, from: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(from),
            ..Default::default()
        }
    }

    fn secret_ref(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
        EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        }
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.secrets.insert(
            "creds".into(),
            [
                ("token".to_owned(), b"s3cr3t".to_vec()),
                ("bin".to_owned(), vec![0xff, 0xfe]),
                ("bad key".to_owned(), b"x".to_vec()),
            ]
            .into(),
        );
        s.config_maps.insert(
            "cfg".into(),
            [
                ("MODE".to_owned(), "fast".to_owned()),
                ("1digit".to_owned(), "no".to_owned()),
            ]
            .into(),
        );
        s
    }

    #[test]
    fn literal_values_expand_against_earlier_definitions_only() {
        let c = Container {
            env: Some(vec![
                var("A", "a"),
                var("B", "$(A)-$(C)"),
                var("C", "c"),
                var("A", "again"),
            ]),
            ..Default::default()
        };
        let env = container_env(&pod(), &c, &Sources::default()).unwrap();
        assert_eq!(
            env,
            vec![
                ("A".to_owned(), "again".to_owned()),
                ("B".to_owned(), "a-$(C)".to_owned()),
                ("C".to_owned(), "c".to_owned()),
            ]
        );
    }

    #[test]
    fn secret_configmap_and_field_refs_resolve() {
        let c = Container {
            env: Some(vec![
                var_from("TOKEN", secret_ref("creds", "token", None)),
                var_from(
                    "MODE",
                    EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cfg".into(),
                            key: "MODE".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                var_from("NAME", field("metadata.name")),
                var_from("NS", field("metadata.namespace")),
                var_from("APP", field("metadata.labels['app']")),
                var_from("NONE", field("metadata.labels['missing']")),
                var_from("IP", field("status.podIP")),
                var_from("OPT", secret_ref("nope", "k", Some(true))),
            ]),
            ..Default::default()
        };
        let env = container_env(&pod(), &c, &sources()).unwrap();
        let get = |n: &str| lookup(&env, n);
        assert_eq!(get("TOKEN").as_deref(), Some("s3cr3t"));
        assert_eq!(get("MODE").as_deref(), Some("fast"));
        assert_eq!(get("NAME").as_deref(), Some("p"));
        assert_eq!(get("NS").as_deref(), Some("ns"));
        assert_eq!(get("APP").as_deref(), Some("web"));
        assert_eq!(get("NONE").as_deref(), Some(""));
        assert_eq!(get("IP").as_deref(), Some("127.0.0.1"));
        assert_eq!(get("OPT"), None);
    }

    fn field(path: &str) -> EnvVarSource {
        EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn hostile_references_give_precise_errors() {
        let cases: Vec<(EnvVar, EnvError)> = vec![
            (
                var_from("T", secret_ref("absent", "k", None)),
                EnvError::SecretMissing {
                    var: "T".into(),
                    name: "absent".into(),
                },
            ),
            (
                var_from("T", secret_ref("creds", "../token", Some(false))),
                EnvError::SecretKeyMissing {
                    var: "T".into(),
                    name: "creds".into(),
                    key: "../token".into(),
                },
            ),
            (
                var_from("T", secret_ref("creds", "bin", None)),
                EnvError::NotUtf8 {
                    var: "T".into(),
                    name: "creds".into(),
                    key: "bin".into(),
                },
            ),
            (
                var_from("F", field("spec.containers[0].image")),
                EnvError::UnsupportedField {
                    var: "F".into(),
                    path: "spec.containers[0].image".into(),
                },
            ),
            (
                var_from("F", field("metadata.labels['unterminated")),
                EnvError::UnsupportedField {
                    var: "F".into(),
                    path: "metadata.labels['unterminated".into(),
                },
            ),
            (
                var_from(
                    "R",
                    EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.cpu".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
                EnvError::UnsupportedResourceField { var: "R".into() },
            ),
            (
                var_from("E", EnvVarSource::default()),
                EnvError::EmptyValueFrom { var: "E".into() },
            ),
        ];
        for (v, want) in cases {
            let c = Container {
                env: Some(vec![v]),
                ..Default::default()
            };
            assert_eq!(container_env(&pod(), &c, &sources()), Err(want));
        }
    }

    #[test]
    fn env_from_applies_prefix_skips_invalid_names_and_env_wins() {
        let c = Container {
            env_from: Some(vec![
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "creds".into(),
                        optional: None,
                    }),
                    prefix: Some("S_".into()),
                    ..Default::default()
                },
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "cfg".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "absent".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                },
            ]),
            env: Some(vec![var("MODE", "$(MODE)-slow")]),
            ..Default::default()
        };
        let env = container_env(&pod(), &c, &sources()).unwrap();
        assert_eq!(lookup(&env, "S_token").as_deref(), Some("s3cr3t"));
        assert_eq!(lookup(&env, "MODE").as_deref(), Some("fast-slow"));
        // Binary value, space in key and leading digit are all skipped, not errors.
        assert_eq!(lookup(&env, "S_bin"), None);
        assert_eq!(lookup(&env, "S_bad key"), None);
        assert_eq!(lookup(&env, "1digit"), None);

        let missing = Container {
            env_from: Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "absent".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            container_env(&pod(), &missing, &sources()),
            Err(EnvError::EnvFromSecretMissing("absent".into()))
        );
    }

    #[test]
    fn referenced_sources_lists_every_name_once() {
        let c = Container {
            env: Some(vec![
                var_from("A", secret_ref("s1", "k", None)),
                var_from("B", secret_ref("s1", "j", None)),
            ]),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "c1".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let (s, c) = referenced_sources(&c);
        assert_eq!(s.into_iter().collect::<Vec<_>>(), vec!["s1".to_owned()]);
        assert_eq!(c.into_iter().collect::<Vec<_>>(), vec!["c1".to_owned()]);
    }
}
