//! Step variables: `{step_N_output}` and `{step_N_output.field}` inside string inputs. Owns the
//! syntax (one scanner shared by `references` and `resolve`, so validation and execution can
//! never disagree about what is a variable) and the rendering of outputs into text.
//!
//! Syntax, exactly: `{step_` N `_output` (`.` SEGMENT)* `}` where N is a decimal step id
//! (`0` or digits without a leading zero, fitting a `StepId`) and SEGMENT is
//! `[A-Za-z0-9_-]+`. A segment selects an object field by name; on an array, an all-digit
//! segment selects that index.
//!
//! Choices for text that merely looks similar (documented in the plan docs too):
//! - Anything that does not match the syntax exactly is plain text and passes through
//!   untouched: `{step_x_output}`, `{step_1_outputs}`, `{step_01_output}`, `{ step_1_output}`,
//!   `{step_1_output.}`, `{step_1_output.a b}`. Near misses are never errors, because an
//!   error would make such text impossible to pass to a tool at all.
//! - There is no escape syntax. `{{step_1_output}}` contains the variable `{step_1_output}`
//!   between two literal braces, so it renders as `{` + output + `}`.
//! - Substitution is a single pass: text that comes *from* an output is never scanned again,
//!   so an output containing `{step_2_output}` is inserted verbatim (no injection, no loops).
//! - Nested braces such as `{step_{step_1_output}_output}` hold one variable, the inner one.

use serde_json::{Map, Value};

use crate::plan::StepId;
use crate::text::json_kind;

/// The most bytes one string may grow to once its variables are rendered as text. Bounds the
/// damage of a plan that repeats a large output thousands of times in one string.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// One `{step_N_output[.field...]}` reference found in an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarRef {
    pub step: StepId,
    /// Field names after `step_N_output`, outermost first (empty for the whole output).
    pub path: Vec<String>,
    /// Where in the input it was found, as a JSON pointer (e.g. `/expression`).
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VarError {
    #[error("{location}: {message}")]
    Unresolvable { location: String, message: String },
}

/// Every variable reference in the input (recursing into nested strings, arrays, objects).
pub fn references(input: &Map<String, Value>) -> Vec<VarRef> {
    let mut found = Vec::new();
    for (key, value) in input {
        collect(value, &child_pointer("", key), &mut found);
    }
    found
}

/// Substitutes variables from completed outputs. A string that is exactly one variable takes
/// the output's JSON value and type; a variable inside a longer string is rendered as text
/// (strings without quotes, other values as compact JSON).
pub fn resolve(
    input: &Map<String, Value>,
    output_of: &dyn Fn(StepId) -> Option<Value>,
) -> Result<Map<String, Value>, VarError> {
    let mut out = Map::new();
    for (key, value) in input {
        out.insert(
            key.clone(),
            resolve_value(value, &child_pointer("", key), output_of)?,
        );
    }
    Ok(out)
}

/// A variable as it appears in a string: its byte span and what it names.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    start: usize,
    end: usize,
    step: StepId,
    path: Vec<String>,
}

/// All variables in `text`, left to right, non-overlapping. Linear in the length of the text:
/// a failed match never spans a `{`, so no byte is examined by more than two attempts.
fn scan(text: &str) -> Vec<Found> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{'
            && let Some(var) = parse_at(bytes, i)
        {
            i = var.end;
            found.push(var);
            continue;
        }
        i += 1;
    }
    found
}

/// Parses a variable starting at the `{` at `start`, or `None` if the text there is not one.
fn parse_at(bytes: &[u8], start: usize) -> Option<Found> {
    const PREFIX: &[u8] = b"{step_";
    const SUFFIX: &[u8] = b"_output";
    let rest = bytes.get(start..)?;
    if !rest.starts_with(PREFIX) {
        return None;
    }
    let mut i = start + PREFIX.len();
    let digits_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let digits = bytes.get(digits_start..i)?;
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    // Only ASCII digits, so this is valid UTF-8; overflow makes it plain text.
    let step: StepId = std::str::from_utf8(digits).ok()?.parse().ok()?;
    if !bytes.get(i..)?.starts_with(SUFFIX) {
        return None;
    }
    i += SUFFIX.len();
    let mut path = Vec::new();
    loop {
        match bytes.get(i) {
            Some(b'}') => {
                return Some(Found {
                    start,
                    end: i + 1,
                    step,
                    path,
                });
            }
            Some(b'.') => {
                let seg_start = i + 1;
                let mut j = seg_start;
                while j < bytes.len() && is_segment_byte(bytes[j]) {
                    j += 1;
                }
                if j == seg_start {
                    return None;
                }
                path.push(String::from_utf8_lossy(&bytes[seg_start..j]).into_owned());
                i = j;
            }
            _ => return None,
        }
    }
}

fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Appends a key to a JSON pointer, escaping `~` and `/` per RFC 6901.
fn child_pointer(parent: &str, key: &str) -> String {
    format!("{parent}/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn collect(value: &Value, location: &str, found: &mut Vec<VarRef>) {
    match value {
        Value::String(s) => found.extend(scan(s).into_iter().map(|f| VarRef {
            step: f.step,
            path: f.path,
            location: location.to_owned(),
        })),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, &format!("{location}/{i}"), found);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                collect(item, &child_pointer(location, key), found);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn resolve_value(
    value: &Value,
    location: &str,
    output_of: &dyn Fn(StepId) -> Option<Value>,
) -> Result<Value, VarError> {
    match value {
        Value::String(s) => resolve_string(s, location, output_of),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| resolve_value(item, &format!("{location}/{i}"), output_of))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, item) in map {
                out.insert(
                    key.clone(),
                    resolve_value(item, &child_pointer(location, key), output_of)?,
                );
            }
            Ok(Value::Object(out))
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(value.clone()),
    }
}

fn resolve_string(
    text: &str,
    location: &str,
    output_of: &dyn Fn(StepId) -> Option<Value>,
) -> Result<Value, VarError> {
    let vars = scan(text);
    if vars.is_empty() {
        return Ok(Value::String(text.to_owned()));
    }
    if let [only] = vars.as_slice()
        && only.start == 0
        && only.end == text.len()
    {
        return lookup(only, text, location, output_of);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for var in &vars {
        out.push_str(&text[last..var.start]);
        let value = lookup(var, text, location, output_of)?;
        render(&value, &mut out);
        if out.len() > MAX_RENDERED_BYTES {
            return Err(VarError::Unresolvable {
                location: location.to_owned(),
                message: format!(
                    "the string grows beyond {MAX_RENDERED_BYTES} bytes once its variables are substituted"
                ),
            });
        }
        last = var.end;
    }
    out.push_str(&text[last..]);
    Ok(Value::String(out))
}

/// The value a variable names, or an error saying which variable, which step and which field.
fn lookup(
    var: &Found,
    text: &str,
    location: &str,
    output_of: &dyn Fn(StepId) -> Option<Value>,
) -> Result<Value, VarError> {
    let spelled = &text[var.start..var.end];
    let fail = |message: String| VarError::Unresolvable {
        location: location.to_owned(),
        message: format!("{spelled}: {message}"),
    };
    let Some(output) = output_of(var.step) else {
        return Err(fail(format!(
            "step {} has no output (it has not succeeded)",
            var.step
        )));
    };
    let mut current = &output;
    for (depth, segment) in var.path.iter().enumerate() {
        let walked = var.path[..=depth].join(".");
        current = match current {
            Value::Object(map) => map.get(segment).ok_or_else(|| {
                fail(format!(
                    "step {}'s output has no field `{walked}`",
                    var.step
                ))
            })?,
            Value::Array(items) => {
                let index: usize = segment.parse().map_err(|_| {
                    fail(format!(
                        "step {}'s output at `{walked}` indexes an array with `{segment}`, which is not an index",
                        var.step
                    ))
                })?;
                items.get(index).ok_or_else(|| {
                    fail(format!(
                        "step {}'s output has no element `{walked}` (the array has {} elements)",
                        var.step,
                        items.len()
                    ))
                })?
            }
            other => {
                return Err(fail(format!(
                    "step {}'s output has no field `{walked}` (the value there is {}, not an object)",
                    var.step,
                    json_kind(other)
                )));
            }
        };
    }
    Ok(current.clone())
}

/// Renders a value into text: strings without quotes, numbers in plain decimal (shortest
/// digits that round-trip, never an exponent, no `.0` on integers: the notation the
/// calculator reads, so `1e21` from one step can feed the next step's expression), the rest
/// as compact JSON.
fn render(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => out.push_str(s),
        Value::Number(n) if n.is_i64() || n.is_u64() => out.push_str(&n.to_string()),
        Value::Number(n) => match n.as_f64() {
            Some(f) => out.push_str(&crate::calc::format_number(f)),
            None => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn outputs(step: StepId) -> Option<Value> {
        match step {
            1 => Some(
                json!({"id": 7, "title": "Buy milk", "tags": ["a", "b"], "nested": {"x-y_1": 2.5}}),
            ),
            2 => Some(json!(42)),
            3 => Some(json!("plain text")),
            4 => Some(json!(3.0)),
            5 => Some(json!([10, {"k": true}])),
            6 => Some(json!(null)),
            7 => Some(json!("{step_2_output}")),
            8 => Some(json!(1.5)),
            _ => None,
        }
    }

    fn resolve_one(text: &str) -> Result<Value, VarError> {
        let input = obj(json!({ "v": text }));
        resolve(&input, &outputs).map(|mut m| m.remove("v").unwrap_or(Value::Null))
    }

    #[test]
    fn finds_references_with_json_pointer_locations() {
        let input = obj(json!({
            "expression": "{step_1_output.id} + {step_2_output}",
            "a/b": {"c~d": ["x", "{step_5_output.1.k}"]},
            "n": 3,
        }));
        let refs = references(&input);
        assert_eq!(
            refs,
            vec![
                VarRef {
                    step: 5,
                    path: vec!["1".into(), "k".into()],
                    location: "/a~1b/c~0d/1".into()
                },
                VarRef {
                    step: 1,
                    path: vec!["id".into()],
                    location: "/expression".into()
                },
                VarRef {
                    step: 2,
                    path: vec![],
                    location: "/expression".into()
                },
            ]
        );
    }

    #[test]
    fn exact_variable_keeps_the_json_type() {
        assert_eq!(resolve_one("{step_2_output}"), Ok(json!(42)));
        assert_eq!(
            resolve_one("{step_1_output}"),
            Ok(outputs(1).unwrap_or_default())
        );
        assert_eq!(resolve_one("{step_1_output.tags}"), Ok(json!(["a", "b"])));
        assert_eq!(resolve_one("{step_6_output}"), Ok(Value::Null));
        assert_eq!(resolve_one("{step_1_output.nested.x-y_1}"), Ok(json!(2.5)));
    }

    #[test]
    fn embedded_variables_render_as_text() {
        assert_eq!(resolve_one("id={step_1_output.id}"), Ok(json!("id=7")));
        assert_eq!(
            resolve_one("say {step_3_output}!"),
            Ok(json!("say plain text!"))
        );
        assert_eq!(resolve_one("{step_4_output} apples"), Ok(json!("3 apples")));
        assert_eq!(resolve_one("{step_8_output}x"), Ok(json!("1.5x")));
        assert_eq!(
            resolve_one("t={step_1_output.tags}"),
            Ok(json!(r#"t=["a","b"]"#))
        );
        assert_eq!(resolve_one("{step_6_output}."), Ok(json!("null.")));
        assert_eq!(
            resolve_one("{step_2_output}{step_2_output}"),
            Ok(json!("4242"))
        );
    }

    #[test]
    fn array_indexing_by_integer_segment() {
        assert_eq!(resolve_one("{step_5_output.0}"), Ok(json!(10)));
        assert_eq!(resolve_one("{step_5_output.1.k}"), Ok(json!(true)));
        assert_eq!(resolve_one("{step_1_output.tags.1}"), Ok(json!("b")));
    }

    #[test]
    fn lookalikes_are_plain_text() {
        for text in [
            "{step_x_output}",
            "{step_1_outputs}",
            "{step_01_output}",
            "{ step_1_output}",
            "{step_1_output }",
            "{step_1_output.}",
            "{step_1_output..id}",
            "{step_1_output.a b}",
            "{step_1_output.ü}",
            "{step__output}",
            "{step_-1_output}",
            "{step_99999999999999999999_output}",
            "step_1_output",
            "{STEP_1_OUTPUT}",
            "{step_1_output",
            "{",
            "}",
            "",
        ] {
            assert_eq!(resolve_one(text), Ok(json!(text)), "{text:?}");
            assert!(
                references(&obj(json!({ "v": text }))).is_empty(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn double_braces_surround_a_variable() {
        assert_eq!(resolve_one("{{step_2_output}}"), Ok(json!("{42}")));
    }

    #[test]
    fn nested_braces_hold_the_inner_variable() {
        assert_eq!(
            resolve_one("{step_{step_2_output}_output}"),
            Ok(json!("{step_42_output}"))
        );
    }

    #[test]
    fn substituted_text_is_never_rescanned() {
        assert_eq!(resolve_one("{step_7_output}"), Ok(json!("{step_2_output}")));
        assert_eq!(
            resolve_one("x {step_7_output}"),
            Ok(json!("x {step_2_output}"))
        );
    }

    #[test]
    fn missing_output_names_location_and_step() {
        let input = obj(json!({"a": {"title": "x {step_9_output.id}"}}));
        let err = resolve(&input, &outputs).err();
        let Some(VarError::Unresolvable { location, message }) = err else {
            panic!("expected an error, got {err:?}");
        };
        assert_eq!(location, "/a/title");
        assert!(message.contains("step 9 has no output"), "{message}");
        assert!(message.contains("{step_9_output.id}"), "{message}");
    }

    #[test]
    fn unknown_field_names_location_step_and_field() {
        let err = resolve_one("{step_1_output.nested.nope}")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("/v: {step_1_output.nested.nope}: step 1's output has no field `nested.nope`")
        );
        let err = resolve_one("{step_2_output.x}")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not an object"), "{err}");
        let err = resolve_one("{step_5_output.7}")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("has 2 elements"), "{err}");
        let err = resolve_one("{step_5_output.k}")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not an index"), "{err}");
    }

    #[test]
    fn non_string_values_and_keys_pass_through() {
        let input = obj(json!({"{step_2_output}": [1, null, true, {"k": "{step_2_output}"}]}));
        let out = resolve(&input, &outputs);
        assert_eq!(
            out,
            Ok(obj(json!({"{step_2_output}": [1, null, true, {"k": 42}]})))
        );
    }

    #[test]
    fn unicode_around_variables() {
        assert_eq!(
            resolve_one("ü{step_3_output}😀{step_2_output}é"),
            Ok(json!("üplain text😀42é"))
        );
    }

    #[test]
    fn thousands_of_variables_in_one_string() {
        let text = "{step_2_output},".repeat(10_000);
        assert_eq!(references(&obj(json!({ "v": text }))).len(), 10_000);
        assert_eq!(resolve_one(&text), Ok(json!("42,".repeat(10_000))));
    }

    #[test]
    fn huge_strings_and_brace_floods() {
        let huge = "a".repeat(2_000_000);
        assert_eq!(resolve_one(&huge), Ok(json!(huge)));
        let braces = "{".repeat(200_000) + &"}".repeat(200_000);
        assert_eq!(resolve_one(&braces), Ok(json!(braces)));
        let unterminated = "{step_1_output.aaaaaaaa".repeat(20_000);
        assert_eq!(resolve_one(&unterminated), Ok(json!(unterminated)));
    }

    #[test]
    fn rendering_is_bounded() {
        let big = json!("x".repeat(100_000));
        let input = obj(json!({ "v": "{step_1_output} ".repeat(20) }));
        let err = resolve(&input, &|_| Some(big.clone()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("/v: ") && err.contains("bytes"), "{err}");
    }

    #[test]
    fn numbers_render_in_the_notation_the_calculator_reads() {
        for (value, text) in [
            (json!(1e21), "1000000000000000000000"),
            (json!(1e-7), "0.0000001"),
            (json!(-2.5), "-2.5"),
            (json!(300), "300"),
            (json!(0.30000000000000004), "0.30000000000000004"),
        ] {
            let input = obj(json!({"expression": "{step_1_output} + 1"}));
            let out = resolve(&input, &|_| Some(value.clone())).unwrap_or_default();
            assert_eq!(out["expression"], json!(format!("{text} + 1")));
            assert!(
                crate::calc::evaluate(&format!("{text} + 1")).is_ok(),
                "the calculator refuses {text}"
            );
        }
    }
}
