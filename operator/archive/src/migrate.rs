//! Schema migrations: the SQL files of `migrations/`, compiled in, applied in order in one
//! transaction under an advisory lock (so an operator and several servers starting at once
//! apply each exactly once), and recorded in `schema_migrations`. A migration is never edited
//! after release: a change is a new file.

use crate::ArchiveError;

/// One migration file.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Versions are consecutive from 1.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "archived_runs",
    sql: include_str!("../migrations/0001_archived_runs.sql"),
}];

/// Key of the advisory lock migrations hold (`crane` in ASCII, as a number).
const LOCK_KEY: i64 = 0x0063_7261_6e65;

/// Applies the migrations this database lacks; returns how many it applied.
pub(crate) async fn migrate(client: &mut tokio_postgres::Client) -> Result<usize, ArchiveError> {
    let tx = client
        .transaction()
        .await
        .map_err(ArchiveError::query("starting the migration transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(ArchiveError::query("taking the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    bigint PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(ArchiveError::query("creating schema_migrations"))?;
    let row = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(ArchiveError::query("reading schema_migrations"))?;
    let current: i64 = row.get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > known {
        return Err(ArchiveError::SchemaTooNew {
            found: current,
            known,
        });
    }
    let mut applied = 0;
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let failed = |source| ArchiveError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(failed)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied archive migration"
        );
        applied += 1;
    }
    tx.commit()
        .await
        .map_err(ArchiveError::query("committing the migrations"))?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            assert!(!m.sql.trim().is_empty());
        }
    }
}
