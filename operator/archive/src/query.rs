//! A runs list request ([`ListQuery`]): namespace, phases, a text to look for, a creation-time
//! range, a page size and a [`Cursor`]. The archive turns it into one parameterised query;
//! [`ListQuery::matches`] applies the very same filter to live runs, so the server can merge
//! both into one list ordered newest first by `(createdAt, uid)` and paged by keyset.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::jiff::Timestamp;

use crate::ArchiveError;
use crate::record::{PHASES, RunSummary};

/// Most items one page returns.
pub const MAX_LIMIT: usize = 500;
/// Items per page unless asked otherwise.
pub const DEFAULT_LIMIT: usize = 50;
/// Longest text filter, in characters.
pub const MAX_TEXT_CHARS: usize = 200;

/// Where a page ends: the last item's `(createdAt, uid)`. Opaque to clients.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub created_at: Timestamp,
    pub uid: String,
}

impl Cursor {
    /// Base64url of `<microseconds>:<uid>`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at.as_microsecond(), self.uid))
    }

    /// The cursor a client sent back; anything else is [`ArchiveError::InvalidQuery`].
    pub fn decode(text: &str) -> Result<Self, ArchiveError> {
        let bad =
            || ArchiveError::InvalidQuery("invalid cursor: pass back nextCursor as given".into());
        if text.len() > 300 {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (micros, uid) = raw.split_once(':').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let created_at = Timestamp::from_microsecond(micros).map_err(|_| bad())?;
        if uid.is_empty()
            || uid.len() > 128
            || !uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(bad());
        }
        Ok(Self {
            created_at,
            uid: uid.to_owned(),
        })
    }

    /// The cursor that ends a page at `item`.
    pub fn of(item: &RunSummary) -> Self {
        Self {
            created_at: item.created_at.0,
            uid: item.uid.clone(),
        }
    }
}

/// A runs list request, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    pub namespace: String,
    /// Only these phases (none: all).
    pub phases: Vec<String>,
    /// Case-insensitive substring of the name or the prompt.
    pub text: Option<String>,
    /// Created at or after.
    pub since: Option<Timestamp>,
    /// Created before.
    pub until: Option<Timestamp>,
    pub limit: usize,
    /// Items strictly after this cursor (in newest-first order).
    pub after: Option<Cursor>,
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub items: Vec<RunSummary>,
    /// Pass back for the next page; `None` on the last page.
    pub next: Option<Cursor>,
}

impl ListQuery {
    /// Everything in `namespace`, newest first, [`DEFAULT_LIMIT`] per page.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            phases: Vec::new(),
            text: None,
            since: None,
            until: None,
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }

    /// Checks what a user can get wrong: unknown phases, an overlong text, a page size out of
    /// range, a time range that ends before it starts.
    pub fn validate(&self) -> Result<(), ArchiveError> {
        let bad = |m: String| Err(ArchiveError::InvalidQuery(m));
        if let Some(p) = self.phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
            return bad(format!(
                "unknown phase {:?}; one of {}",
                p.chars().take(40).collect::<String>(),
                PHASES.join(", ")
            ));
        }
        if self
            .text
            .as_ref()
            .is_some_and(|t| t.chars().count() > MAX_TEXT_CHARS || t.contains('\0'))
        {
            return bad(format!(
                "text filter: at most {MAX_TEXT_CHARS} characters, no NUL"
            ));
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return bad(format!("limit must be 1 to {MAX_LIMIT}"));
        }
        if let (Some(s), Some(u)) = (self.since, self.until)
            && u < s
        {
            return bad("until is before since".into());
        }
        Ok(())
    }

    /// Whether a run belongs in this list (page position aside from the cursor).
    pub fn matches(&self, item: &RunSummary) -> bool {
        let created = item.created_at.0;
        item.namespace == self.namespace
            && (self.phases.is_empty() || self.phases.contains(&item.phase))
            && self.since.is_none_or(|s| created >= s)
            && self.until.is_none_or(|u| created < u)
            && self.after.as_ref().is_none_or(|c| Cursor::of(item) < *c)
            && self.text.as_ref().is_none_or(|t| {
                let t = t.to_lowercase();
                item.name.to_lowercase().contains(&t)
                    || item
                        .prompt
                        .as_ref()
                        .is_some_and(|p| p.to_lowercase().contains(&t))
            })
    }
}

/// `text` as a LIKE pattern that matches it literally anywhere (`%`, `_` and `\` escaped).
pub(crate) fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Sorts newest first by `(createdAt, uid)`, the order every page follows.
pub fn sort_newest_first(items: &mut [RunSummary]) {
    items.sort_by(|a, b| Cursor::of(b).cmp(&Cursor::of(a)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            created_at: Timestamp::from_second(1_800_000_000).expect("ts"),
            uid: "0b4c-11".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).ok(), Some(c));
        for bad in [
            "",
            "!!",
            "bm90LWEtY3Vyc29y",
            &URL_SAFE_NO_PAD.encode("1:a' OR 1=1 --"),
            &URL_SAFE_NO_PAD.encode("x:abc"),
            &"A".repeat(400),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(like_pattern("'; DROP TABLE x; --"), "%'; DROP TABLE x; --%");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut q = ListQuery::new("a");
        assert!(q.validate().is_ok());
        q.phases = vec!["Running' OR '1'='1".into()];
        assert!(
            q.validate()
                .unwrap_err()
                .to_string()
                .contains("unknown phase")
        );
        q.phases = vec!["Running".into()];
        q.limit = 0;
        assert!(q.validate().is_err());
        q.limit = 10;
        q.text = Some("x".repeat(MAX_TEXT_CHARS + 1));
        assert!(q.validate().is_err());
    }
}
