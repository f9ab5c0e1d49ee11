//! What `kubectl crane run` sends: the AgentRun built from `--prompt`, `-f FILE` (a plan
//! `{steps: [...]}` or a whole AgentRun manifest, in YAML or JSON) and the flags. Pure
//! functions; the file's bytes are read elsewhere.
//!
//! Parsing checks only what the plugin must know to build the object (the document's
//! syntax, size and shape); the step fields are checked by the apiserver (schema and CEL
//! rules, with strict field validation so a misspelt field is an error) and the operator
//! (tools, inputs, cycles), so there is one set of rules and one set of messages.

use crane_core::validate::MAX_PLAN_BYTES;
use serde_json::{Map, Value, json};

/// API version of the AgentRuns this plugin creates.
pub const API_VERSION: &str = "crane.dev/v1alpha1";

/// The largest `-f` document, in bytes: a plan at its own limit plus room for a manifest's
/// metadata.
pub const MAX_FILE_BYTES: usize = MAX_PLAN_BYTES + 64 * 1024;

/// Deepest nesting of YAML flow collections (`[`, `{`) accepted; plans need a few levels.
const MAX_FLOW_DEPTH: usize = 32;

/// Longest generateName prefix taken from a prompt or a file name (the apiserver adds 5
/// characters).
const MAX_PREFIX_CHARS: usize = 24;

/// What a `-f` document held.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// A plan: the object with `steps`, sent as spec.plan.
    Plan(Value),
    /// A whole AgentRun manifest.
    AgentRun(Map<String, Value>),
}

/// Why a `-f` document cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("it is {size} bytes; the limit is {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("it is empty")]
    Empty,
    #[error("malformed JSON at line {line} column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("it nests brackets deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("malformed YAML: {0}")]
    Yaml(String),
    #[error("expected a plan ({{steps: [...]}}) or an AgentRun manifest, found {0}")]
    NotAnObject(&'static str),
    #[error(
        "expected a plan ({{steps: [...]}}) or an AgentRun manifest (apiVersion {API_VERSION}, kind AgentRun), found an object with keys: {0}"
    )]
    UnknownShape(String),
    #[error("steps must be a list of steps, found {0}")]
    StepsNotAList(&'static str),
    #[error("kind is {0:?}; kubectl crane run creates AgentRuns (kind AgentRun)")]
    WrongKind(String),
    #[error("apiVersion is {0:?}; kubectl crane run creates {API_VERSION} AgentRuns")]
    WrongApiVersion(String),
    #[error("{0} must be an object")]
    NotAMap(&'static str),
    #[error(
        "the manifest's namespace {file:?} does not match the namespace {flag:?} given with -n; drop one of them"
    )]
    NamespaceMismatch { file: String, flag: String },
    #[error("give --prompt, -f FILE, or both")]
    Nothing,
}

/// Parses a `-f` document (YAML, or JSON when it starts with `{` or `[`).
pub fn parse(text: &str) -> Result<Document, ManifestError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ManifestError::TooLarge {
            size: text.len(),
            max: MAX_FILE_BYTES,
        });
    }
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return Err(ManifestError::Empty);
    }
    let value: Value = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            ManifestError::Json {
                line: e.line(),
                column: e.column(),
                message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
            }
        })?
    } else {
        if flow_depth_exceeds(trimmed, MAX_FLOW_DEPTH) {
            return Err(ManifestError::TooDeep {
                max: MAX_FLOW_DEPTH,
            });
        }
        serde_norway::from_str(trimmed).map_err(|e| ManifestError::Yaml(e.to_string()))?
    };
    classify(value)
}

/// Whether YAML flow collections (`[...]`, `{...}`) nest deeper than `max`, not counting
/// brackets in quoted scalars and comments. A rough scan, only to keep the work of the YAML
/// scanner bounded: a bracket inside a plain scalar (`a: x[1]`) may count, which a plan
/// never gets near the limit with.
fn flow_depth_exceeds(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some('"') if c == '\\' => {
                chars.next();
            }
            Some('"') if c == '"' => quote = None,
            Some('\'') if c == '\'' => {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                } else {
                    quote = None;
                }
            }
            Some(_) => {}
            None => match c {
                '#' if prev.is_whitespace() => {
                    for n in chars.by_ref() {
                        if n == '\n' {
                            break;
                        }
                    }
                    prev = '\n';
                    continue;
                }
                '"' | '\'' if prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':') => {
                    quote = Some(c);
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    false
}

fn kind_of(v: &Value) -> &'static str {
    crane_core::text::json_kind(v)
}

fn classify(value: Value) -> Result<Document, ManifestError> {
    let Value::Object(map) = value else {
        return Err(match value {
            Value::Null => ManifestError::Empty,
            other => ManifestError::NotAnObject(kind_of(&other)),
        });
    };
    if map.contains_key("kind") || map.contains_key("apiVersion") {
        let text = |key: &str| match map.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        if text("kind") != "AgentRun" {
            return Err(ManifestError::WrongKind(text("kind")));
        }
        if text("apiVersion") != API_VERSION {
            return Err(ManifestError::WrongApiVersion(text("apiVersion")));
        }
        for key in ["metadata", "spec"] {
            if map.get(key).is_some_and(|v| !v.is_object()) {
                return Err(ManifestError::NotAMap(if key == "spec" {
                    "spec"
                } else {
                    "metadata"
                }));
            }
        }
        return Ok(Document::AgentRun(map));
    }
    match map.get("steps") {
        Some(Value::Array(_)) => Ok(Document::Plan(Value::Object(map))),
        Some(other) => Err(ManifestError::StepsNotAList(kind_of(other))),
        None => {
            let mut keys: Vec<&str> = map.keys().map(String::as_str).take(10).collect();
            if keys.is_empty() {
                keys.push("(none)");
            }
            Err(ManifestError::UnknownShape(crate::text::fit(
                &crate::text::clean(&keys.join(", ")),
                200,
            )))
        }
    }
}

/// What the person asked `run` for.
#[derive(Debug, Clone, Default)]
pub struct RunRequest<'a> {
    pub prompt: Option<&'a str>,
    pub document: Option<Document>,
    /// The `-f` file's name, for the generated name's prefix.
    pub file_name: Option<&'a str>,
    pub pool: Option<&'a str>,
    pub model: Option<&'a str>,
    /// The namespace from -n or the kubeconfig context.
    pub namespace: &'a str,
    /// Whether -n was given (then a manifest's namespace must agree with it).
    pub namespace_from_flag: bool,
}

/// The AgentRun to create and its namespace. Flags win over the manifest's fields; a
/// manifest without a name gets a generateName from the prompt, else the file's name.
pub fn build(req: RunRequest<'_>) -> Result<(Value, String), ManifestError> {
    let mut object = match req.document {
        Some(Document::AgentRun(map)) => map,
        Some(Document::Plan(plan)) => new_agentrun(json!({"plan": plan})),
        None if req.prompt.is_some() => new_agentrun(json!({})),
        None => return Err(ManifestError::Nothing),
    };

    let spec = object
        .entry("spec")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or(ManifestError::NotAMap("spec"))?;
    for (key, flag) in [
        ("prompt", req.prompt),
        ("workerPool", req.pool),
        ("model", req.model),
    ] {
        if let Some(value) = flag {
            spec.insert(key.into(), Value::String(value.to_owned()));
        }
    }
    let base = spec
        .get("prompt")
        .and_then(Value::as_str)
        .map(slug)
        .filter(|s| !s.is_empty())
        .or_else(|| req.file_name.map(file_slug).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "run".to_owned());

    let metadata = object
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or(ManifestError::NotAMap("metadata"))?;
    let namespace = match metadata.get("namespace").and_then(Value::as_str) {
        Some(file) if req.namespace_from_flag && file != req.namespace => {
            return Err(ManifestError::NamespaceMismatch {
                file: file.to_owned(),
                flag: req.namespace.to_owned(),
            });
        }
        Some(file) => file.to_owned(),
        None => req.namespace.to_owned(),
    };
    metadata.insert("namespace".into(), Value::String(namespace.clone()));
    let named = ["name", "generateName"].iter().any(|k| {
        metadata
            .get(*k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    });
    if !named {
        metadata.insert("generateName".into(), Value::String(format!("{base}-")));
    }
    Ok((Value::Object(object), namespace))
}

fn new_agentrun(spec: Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("apiVersion".into(), API_VERSION.into());
    map.insert("kind".into(), "AgentRun".into());
    map.insert("spec".into(), spec);
    map
}

/// A name prefix from free text: its first words, lowercase ASCII letters and digits joined
/// by `-`, at most [`MAX_PREFIX_CHARS`] characters, ending on a whole word.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_ascii_lowercase();
        let extra = word.len() + usize::from(!out.is_empty());
        if out.len() + extra > MAX_PREFIX_CHARS {
            if out.is_empty() {
                out.push_str(&word[..MAX_PREFIX_CHARS]);
            }
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&word);
    }
    out
}

/// A name prefix from a file name: its stem, as [`slug`] makes it.
pub fn file_slug(path: &str) -> String {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let stem = name.split('.').next().unwrap_or(name);
    slug(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(prompt: Option<&'a str>, document: Option<Document>) -> RunRequest<'a> {
        RunRequest {
            prompt,
            document,
            namespace: "team-a",
            ..RunRequest::default()
        }
    }

    #[test]
    fn a_plan_in_yaml_or_json() {
        let yaml = "steps:\n  - id: 1\n    tool: calculator\n    input: {expression: \"1+1\"}\n";
        let json =
            r#"{"steps": [{"id": 1, "tool": "calculator", "input": {"expression": "1+1"}}]}"#;
        let a = parse(yaml).unwrap();
        assert_eq!(a, parse(json).unwrap());
        let Document::Plan(plan) = a else {
            panic!("not a plan")
        };
        assert_eq!(plan["steps"][0]["tool"], "calculator");
        // A byte-order mark and surrounding blank lines are fine.
        assert!(parse(&format!("\u{feff}\n\n{json}\n\n")).is_ok());
    }

    #[test]
    fn a_whole_manifest() {
        let doc = parse(
            "apiVersion: crane.dev/v1alpha1\nkind: AgentRun\nmetadata: {name: mine}\nspec:\n  prompt: hi\n",
        )
        .unwrap();
        let (obj, ns) = build(RunRequest {
            pool: Some("fast"),
            ..req(None, Some(doc))
        })
        .unwrap();
        assert_eq!(ns, "team-a");
        assert_eq!(
            obj["metadata"],
            json!({"name": "mine", "namespace": "team-a"})
        );
        assert_eq!(obj["spec"], json!({"prompt": "hi", "workerPool": "fast"}));
    }

    #[test]
    fn hostile_documents_are_refused_with_a_reason() {
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "it is empty"),
            ("   \n\t\n".into(), "it is empty"),
            ("~\n".into(), "it is empty"),
            ("[1, 2]".into(), "found an array"),
            ("\"steps\"".into(), "found a string"),
            ("42".into(), "found a number"),
            (
                "{\"steps\": {\"id\": 1}}".into(),
                "steps must be a list of steps, found an object",
            ),
            ("{\"step\": []}".into(), "found an object with keys: step"),
            ("{}".into(), "found an object with keys: (none)"),
            (
                "{\"steps\": [}".into(),
                "malformed JSON at line 1 column 12",
            ),
            (
                "{\"steps\": [".into(),
                "malformed JSON at line 1 column 11: EOF while parsing a list",
            ),
            ("steps: [\n  - id: 1\n".into(), "malformed YAML"),
            (
                "steps: []\n---\nsteps: []\n".into(),
                "more than one document",
            ),
            ("kind: Pod\napiVersion: v1\n".into(), "kind is \"Pod\""),
            (
                "kind: AgentRun\napiVersion: crane.dev/v2\n".into(),
                "apiVersion is \"crane.dev/v2\"",
            ),
            (
                "kind: AgentRun\napiVersion: crane.dev/v1alpha1\nspec: [1]\n".into(),
                "spec must be an object",
            ),
            (
                "kind: AgentRun\napiVersion: crane.dev/v1alpha1\nmetadata: x\n".into(),
                "metadata must be an object",
            ),
            (
                "{\"steps\": [], \"\u{1b}[2J\": 1}".into(),
                "control character",
            ),
            (
                r#"{"\u001b[2J": 1}"#.into(),
                "found an object with keys: \u{fffd}[2J",
            ),
            ("steps: [\u{0}]\n".into(), "malformed YAML"),
            // Nesting far beyond any plan: the parsers' recursion limits stop it.
            (
                format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
                "recursion limit exceeded",
            ),
            (
                format!("steps: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
                "deeper than 32 levels",
            ),
            ("x".repeat(MAX_FILE_BYTES + 1), "the limit is"),
            (
                (0..1400)
                    .map(|i| format!("{}a:\n", "  ".repeat(i)))
                    .collect(),
                "recursion limit exceeded",
            ),
            // Flow nesting is refused before the YAML scanner, whose work per token grows
            // with it (100 000 brackets took minutes); quoted and commented brackets do not count.
            (
                format!("steps: [{}{}]", "[".repeat(40), "]".repeat(40)),
                "deeper than 32 levels",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).expect_err(&crate::text::fit(&text, 60));
            let msg = err.to_string();
            assert!(
                msg.contains(want),
                "{:?}: {msg}",
                crate::text::fit(&text, 60)
            );
            assert!(!msg.contains('\x1b'), "no escape sequences echoed: {msg:?}");
        }
    }

    #[test]
    fn flow_depth_ignores_quotes_and_comments() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!flow_depth_exceeds(&deep(32), 32));
        assert!(flow_depth_exceeds(&deep(33), 32));
        let quoted = format!(
            "a: \"{}\"\nb: '{}'\n# {}\nc: it's [1]\n",
            "[".repeat(50),
            "[".repeat(50),
            "{".repeat(50)
        );
        assert!(!flow_depth_exceeds(&quoted, 32), "{quoted}");
        assert!(!flow_depth_exceeds(r#"a: "\"[[[[" "#, 2));
        assert!(!flow_depth_exceeds("a: 'it''s [[[['", 2));
        // A plan with the brackets it needs parses.
        let plan = "steps:\n  - {id: 1, tool: t, input: {a: [1, {b: [2]}], s: \"[[[\"}}  # {{{\n";
        assert!(matches!(parse(plan), Ok(Document::Plan(_))));
    }

    #[test]
    fn a_yaml_bomb_is_refused() {
        // "Billion laughs": nine levels of nine aliases would be 9^9 strings.
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for pair in names.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            let refs = vec![format!("*{prev}"); 9].join(",");
            bomb.push_str(&format!("{next}: &{next} [{refs}]\n"));
        }
        bomb.push_str("steps: *i\n");
        let err = parse(&bomb).unwrap_err();
        assert!(
            err.to_string().contains("repetition limit exceeded"),
            "{err}"
        );
    }

    #[test]
    fn prompt_only_gets_a_name_from_its_words() {
        let (obj, _) = build(RunRequest {
            model: Some("small"),
            ..req(Some("What is (41*7)+13? Then add a todo"), None)
        })
        .unwrap();
        assert_eq!(
            obj,
            json!({
                "apiVersion": "crane.dev/v1alpha1", "kind": "AgentRun",
                "metadata": {"generateName": "what-is-41-7-13-then-add-", "namespace": "team-a"},
                "spec": {"prompt": "What is (41*7)+13? Then add a todo", "model": "small"},
            })
        );
    }

    #[test]
    fn names_from_file_or_fallback() {
        let plan = parse("steps: []").unwrap();
        let (obj, _) = build(RunRequest {
            file_name: Some("/tmp/My Plan.v2.yaml"),
            ..req(None, Some(plan.clone()))
        })
        .unwrap();
        assert_eq!(obj["metadata"]["generateName"], "my-plan-");
        assert_eq!(obj["spec"], json!({"plan": {"steps": []}}));
        let (obj, _) = build(RunRequest {
            file_name: Some("-"),
            ..req(Some("日本語だけ"), Some(plan))
        })
        .unwrap();
        assert_eq!(obj["metadata"]["generateName"], "run-");
        assert_eq!(obj["spec"]["prompt"], "日本語だけ");
    }

    #[test]
    fn manifest_namespace_against_the_flag() {
        let doc = || {
            parse("apiVersion: crane.dev/v1alpha1\nkind: AgentRun\nmetadata: {generateName: x-, namespace: other}\nspec: {prompt: p}\n")
                .unwrap()
        };
        let (obj, ns) = build(req(None, Some(doc()))).unwrap();
        assert_eq!(
            ns, "other",
            "the manifest's namespace wins over the context's"
        );
        assert_eq!(obj["metadata"]["generateName"], "x-");
        let err = build(RunRequest {
            namespace_from_flag: true,
            ..req(None, Some(doc()))
        })
        .unwrap_err();
        assert_eq!(
            err,
            ManifestError::NamespaceMismatch {
                file: "other".into(),
                flag: "team-a".into()
            }
        );
    }

    #[test]
    fn nothing_to_run() {
        assert_eq!(build(req(None, None)).unwrap_err(), ManifestError::Nothing);
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("Add a todo to buy milk, then show me all my tasks"),
            "add-a-todo-to-buy-milk"
        );
        assert_eq!(slug("---"), "");
        assert_eq!(slug(&"a".repeat(100)), "a".repeat(MAX_PREFIX_CHARS));
        assert_eq!(file_slug("plans/daily.report.json"), "daily");
        assert_eq!(file_slug("C:\\x\\y.yaml"), "y");
    }
}
