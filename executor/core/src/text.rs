//! Text for messages and status: every place that shortens a user's value goes through here,
//! so a cut never splits a character and the marker is always the same; and every message
//! that names a JSON value's type words it the same way.

use serde_json::Value;

/// Appended to text that was cut.
pub const ELLIPSIS: &str = "…";

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` when it is at most `max` bytes; otherwise its first bytes and [`ELLIPSIS`], together at
/// most `max` bytes (so a limit on a stored field holds, ellipsis included).
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    format!(
        "{}{ELLIPSIS}",
        prefix(s, max.saturating_sub(ELLIPSIS.len()))
    )
}

/// A JSON value's type as a message names it: `null`, `a boolean`, `a number`, `a string`,
/// `an array`, `an object`.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Levenshtein distance in characters, for "did you mean" suggestions. Quadratic: callers
/// bound the input (names are short; a hostile probe is cut first).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_character_boundaries_within_the_limit() {
        assert_eq!(prefix("héllo", 2), "h");
        assert_eq!(prefix("héllo", 3), "hé");
        assert_eq!(prefix("abc", 10), "abc");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcdef", 5), "ab…");
        assert_eq!(truncate("ééé", 5), "é…");
        for text in [
            "ééééééééééé",
            "🦀🦀🦀🦀🦀🦀",
            "aé🦀\u{0}\u{202e}zzzzzzzzzzzz",
        ] {
            for max in 0..text.len() {
                let cut = truncate(text, max);
                assert!(
                    cut.len() <= max.max(ELLIPSIS.len()),
                    "{text:?} cut to {max}: {cut:?}"
                );
                assert!(cut.ends_with(ELLIPSIS));
                assert!(text.starts_with(cut.trim_end_matches(ELLIPSIS)));
            }
        }
    }

    #[test]
    fn edit_distance_counts_characters() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("calculator", "calculator"), 0);
        assert_eq!(edit_distance("calculater", "calculator"), 1);
        assert_eq!(edit_distance("todo_store.ad", "todo_store.add"), 1);
        assert_eq!(edit_distance("ü", "u"), 1);
        assert_eq!(edit_distance("abc", ""), 3);
    }
}
