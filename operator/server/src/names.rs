//! Checks of names taken from paths and bodies, made before any call to the apiserver, the
//! archive or Redis: a name that cannot exist is a 400 with the rule it breaks.

use crate::error::ApiError;

/// A DNS-1123 label (namespaces, WorkerPools): 1-63 of `a-z 0-9 -`, alphanumeric at both ends.
pub fn label(what: &str, s: &str) -> Result<(), ApiError> {
    if s.len() <= 63 && is_dns(s, false) {
        Ok(())
    } else {
        Err(invalid(
            what,
            s,
            "a DNS-1123 label: 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit",
        ))
    }
}

/// A DNS-1123 subdomain (object names): 1-253 of `a-z 0-9 - .`, alphanumeric at both ends.
pub fn subdomain(what: &str, s: &str) -> Result<(), ApiError> {
    if s.len() <= 253 && is_dns(s, true) {
        Ok(())
    } else {
        Err(invalid(
            what,
            s,
            "a DNS-1123 subdomain: 1-253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        ))
    }
}

/// A Kubernetes uid as the archive keys runs (UUID-like: `0-9 a-f -`, at most 128).
pub fn uid(s: &str) -> Result<(), ApiError> {
    if !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(())
    } else {
        Err(invalid("uid", s, "a uid (letters, digits and '-')"))
    }
}

fn is_dns(s: &str, dots: bool) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn invalid(what: &str, s: &str, rule: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "invalid {what} {:?}: must be {rule}",
        s.chars().take(80).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "A",
            "a_b",
            "-a",
            "a-",
            "a/b",
            "..",
            "a b",
            "a\u{0}",
            "ü",
            "a;DROP",
            &"a".repeat(64),
        ] {
            assert!(label("namespace", bad).is_err(), "{bad:?}");
        }
        for bad in ["", "a..b/c", ".a", "a.", "A.b", &"a".repeat(254)] {
            assert!(subdomain("name", bad).is_err(), "{bad:?}");
        }
        assert!(label("namespace", "team-a").is_ok());
        assert!(subdomain("name", "run.v1-2").is_ok());
        assert!(uid("0b4c2a90-11aa-4f00-9e2b-3c1d2e3f4a5b").is_ok());
        assert!(uid("x' OR 1=1").is_err());
    }
}
