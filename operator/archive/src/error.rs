//! The archive's error type: one variant per failing step, with a bounded metric label.

/// Everything that can go wrong talking to the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The URL or TLS settings are unusable (a deployment mistake; retrying does not help).
    #[error("archive configuration: {0}")]
    Config(String),
    /// No connection could be had from the pool (PostgreSQL down, unreachable, refusing us).
    #[error("cannot connect to the archive: {0}")]
    Connect(String),
    /// A query failed.
    #[error("archive query failed while {what}: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A migration could not be applied.
    #[error("archive migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database has migrations this binary does not know (a newer crane wrote it).
    #[error(
        "the archive has schema version {found}, newer than this binary's {known}; upgrade crane"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// What a user gave cannot be a valid query (a bad cursor, an unknown phase).
    #[error("{0}")]
    InvalidQuery(String),
    /// The object cannot be archived as it is (no uid, no creation time).
    #[error("cannot archive this run: {0}")]
    InvalidRun(String),
}

impl ArchiveError {
    /// Stable, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Connect(_) => "connect",
            Self::Query { .. } => "query",
            Self::Migration { .. } => "migration",
            Self::SchemaTooNew { .. } => "schema_too_new",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidRun(_) => "invalid_run",
        }
    }

    /// Whether trying again later may succeed (the database is down or busy), as opposed to
    /// a problem with the request or the deployment.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::Query { .. } | Self::Migration { .. }
        )
    }

    pub(crate) fn query(what: &'static str) -> impl Fn(tokio_postgres::Error) -> ArchiveError {
        move |source| ArchiveError::Query { what, source }
    }
}
