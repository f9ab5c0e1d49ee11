//! Text shown to a person: values from the cluster made safe for a terminal, cut to a width,
//! and durations and ages in the forms kubectl prints. Pure functions; everything the plugin
//! prints from an object goes through [`clean`] first.

use crane_core::text::ELLIPSIS;
use serde_json::Value;

/// `s` on one line and safe to write to a terminal: newlines and tabs become spaces; other
/// control characters (C0, DEL and C1, among them ESC and CSI, which start terminal escape
/// sequences) and bidirectional overrides (which reorder what a person reads) become U+FFFD.
/// Step outputs, errors and approval messages come from tools, models and other people.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => char::REPLACEMENT_CHARACTER,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => char::REPLACEMENT_CHARACTER,
            c => c,
        })
        .collect()
}

/// Like [`clean`], but keeps line breaks: for messages of several lines (an apiserver's
/// list of validation errors) printed as they are.
pub fn clean_lines(s: &str) -> String {
    s.split('\n').map(clean).collect::<Vec<_>>().join("\n")
}

/// At most `max` characters of `s`: `s` itself when it fits, else its first `max - 1`
/// characters and crane-core's `ELLIPSIS` (the same marker as every cut in status). Counted
/// in characters, as a terminal shows them; crane-core's `truncate` counts bytes, as
/// stored fields are limited.
pub fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push_str(ELLIPSIS);
    out
}

/// A JSON value on one line (compact JSON, strings without their quotes), [`clean`]ed and
/// cut to `max` characters.
pub fn one_line(value: &Value, max: usize) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    fit(&clean(&text), max)
}

/// A step's or a run's duration: `0.2s` under ten seconds, then `12s`, `3m04s`, `1h02m`,
/// `2d03h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..10 => format!("{}.{}s", s, (ms % 1000) / 100),
        10..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// An object's age the way `kubectl get` prints it (apimachinery's `HumanDuration`): `45s`,
/// `5m30s`, `25m`, `3h15m`, `30h`, `3d4h`, `200d`, `2y10d`.
pub fn age(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    let with = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        with(m, "m", s % 60, "s")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        with(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        with(d, "d", h % 24, "h")
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        with(d / 365, "y", d % 365, "d")
    } else {
        format!("{}y", d / 365)
    }
}

/// `1 attempt`, `3 attempts`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clean_neutralises_escape_sequences_and_bidi_overrides() {
        let hostile = "ok\x1b[2J\x1b]0;pwned\x07\u{9b}31m\u{202e}txt.exe\nnext\tcol\u{0}";
        let out = clean(hostile);
        assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
        assert!(!out.contains('\u{202e}'));
        assert_eq!(
            out,
            "ok\u{fffd}[2J\u{fffd}]0;pwned\u{fffd}\u{fffd}31m\u{fffd}txt.exe next col\u{fffd}"
        );
        assert_eq!(clean("Grüße, 世界"), "Grüße, 世界");
    }

    #[test]
    fn clean_lines_keeps_line_breaks_only() {
        assert_eq!(
            clean_lines("a\x1b[31m\nb\r\n\u{9b}c"),
            "a\u{fffd}[31m\nb \n\u{fffd}c"
        );
    }

    #[test]
    fn fit_counts_characters_not_bytes() {
        assert_eq!(fit("héllo", 5), "héllo");
        assert_eq!(fit("héllo wörld", 6), "héllo…");
        assert_eq!(fit("世界世界", 3), "世界…");
        assert_eq!(fit("abc", 0), "");
        assert_eq!(fit("abc", 1), "…");
    }

    #[test]
    fn one_line_prints_strings_bare_and_json_compact() {
        assert_eq!(one_line(&json!("a\nb"), 10), "a b");
        assert_eq!(one_line(&json!({"id": 1}), 20), r#"{"id":1}"#);
        assert_eq!(one_line(&json!([1, 2, 3, 4, 5]), 6), "[1,2,…");
        // serde_json escapes C0 controls itself; C1 ones must still be neutralised.
        assert_eq!(one_line(&json!("\u{9b}2J"), 10), "\u{fffd}2J");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0.0s");
        assert_eq!(duration(234), "0.2s");
        assert_eq!(duration(9_999), "9.9s");
        assert_eq!(duration(12_000), "12s");
        assert_eq!(duration(184_000), "3m04s");
        assert_eq!(duration(3_720_000), "1h02m");
        assert_eq!(duration(183_600_000), "2d03h");
    }

    #[test]
    fn ages_match_kubectl() {
        assert_eq!(age(-5), "<invalid>");
        assert_eq!(age(-1), "0s");
        assert_eq!(age(45), "45s");
        assert_eq!(age(119), "119s");
        assert_eq!(age(330), "5m30s");
        assert_eq!(age(300), "5m");
        assert_eq!(age(25 * 60), "25m");
        assert_eq!(age(3 * 3600 + 15 * 60), "3h15m");
        assert_eq!(age(30 * 3600), "30h");
        assert_eq!(age(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(age(200 * 86400), "200d");
        assert_eq!(age((2 * 365 + 10) * 86400), "2y10d");
        assert_eq!(age(10 * 365 * 86400), "10y");
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "attempt", "attempts"), "1 attempt");
        assert_eq!(plural(0, "attempt", "attempts"), "0 attempts");
    }
}
