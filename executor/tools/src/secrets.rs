//! Header values kept in Secrets: a worker reads them from the Secrets mounted into its pod
//! (`<dir>/<secret>/<key>`, the layout of a Kubernetes secret volume), so a value never
//! travels through Redis, a status or a log line. The operator mounts every Secret the
//! namespace's Tools and MCPServers reference into the pool's worker pods.

use std::path::PathBuf;

use crane_core::tool::{Header, SecretKey, ToolError};

/// Where worker pods find the mounted Secrets (overridden by `CRANE_SECRETS_DIR`).
pub const DEFAULT_SECRETS_DIR: &str = "/var/run/crane/secrets";

/// Longest secret value read, in bytes: a header value, never a file.
const MAX_SECRET_BYTES: u64 = 16 * 1024;

/// Reads header secrets from a directory of mounted Secrets.
#[derive(Clone, Debug)]
pub struct Secrets {
    dir: PathBuf,
}

impl Default for Secrets {
    fn default() -> Self {
        Self::new(
            std::env::var_os("CRANE_SECRETS_DIR")
                .map_or_else(|| PathBuf::from(DEFAULT_SECRETS_DIR), PathBuf::from),
        )
    }
}

impl Secrets {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The value of `key` (a trailing newline dropped). A missing Secret is a failure of the
    /// step that names it, said without the value, of course.
    pub fn get(&self, key: &SecretKey) -> Result<String, ToolError> {
        use std::io::Read;
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                && !s.starts_with('.')
        };
        if !valid(&key.name) || !valid(&key.key) {
            return Err(ToolError::Failed(format!(
                "secret reference {:?}/{:?} is not a valid Secret name and key",
                crane_core::text::truncate(&key.name, 64),
                crane_core::text::truncate(&key.key, 64)
            )));
        }
        let path = self.dir.join(&key.name).join(&key.key);
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_SECRET_BYTES).read_to_string(&mut text))
            .map_err(|e| {
                ToolError::Failed(format!(
                    "key {:?} of Secret {:?} is not available to this worker ({}); create the Secret in the run's namespace",
                    key.key,
                    key.name,
                    e.kind()
                ))
            })?;
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// Every header with its value: literal, or read from its Secret.
    pub fn resolve(&self, headers: &[Header]) -> Result<Vec<(String, String)>, ToolError> {
        headers
            .iter()
            .map(|h| {
                let value = match (&h.value, &h.secret) {
                    (Some(v), _) => v.clone(),
                    (None, Some(key)) => self.get(key)?,
                    (None, None) => String::new(),
                };
                Ok((h.name.clone(), value))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_from_the_mounted_files_and_never_appear_in_errors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("weather")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("weather/token"), "s3cr3t-value\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let secrets = Secrets::new(dir.path());
        let key = |n: &str, k: &str| SecretKey {
            name: n.into(),
            key: k.into(),
        };
        assert_eq!(
            secrets.get(&key("weather", "token")),
            Ok("s3cr3t-value".to_owned())
        );
        let missing = secrets
            .get(&key("weather", "other"))
            .err()
            .map(|e| e.to_string());
        assert!(
            missing
                .as_deref()
                .is_some_and(|m| m.contains("not available") && !m.contains("s3cr3t")),
            "{missing:?}"
        );
        for (n, k) in [
            ("..", "token"),
            ("weather", "../weather/token"),
            ("a/b", "c"),
            ("", "x"),
        ] {
            assert!(secrets.get(&key(n, k)).is_err(), "{n}/{k}");
        }
        let headers = [
            Header {
                name: "Authorization".into(),
                value: None,
                secret: Some(key("weather", "token")),
            },
            Header {
                name: "X-Plain".into(),
                value: Some("v".into()),
                secret: None,
            },
        ];
        assert_eq!(
            secrets.resolve(&headers),
            Ok(vec![
                ("Authorization".to_owned(), "s3cr3t-value".to_owned()),
                ("X-Plain".to_owned(), "v".to_owned())
            ])
        );
    }
}
