//! [`Archive`]: the connection pool and every query. Connections are made on demand, so a
//! process starts while PostgreSQL is down; the migrations run before the first query of the
//! process (and again after a failure). The write is one `INSERT … ON CONFLICT (uid) DO
//! NOTHING`: writing the same run twice (an operator killed after the insert, before the
//! finalizer went) keeps the first row and reports [`WriteOutcome::AlreadyArchived`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::query::{Cursor, ListQuery, Page, like_pattern};
use crate::record::{RunRecord, RunSummary, Usage};
use crate::{ArchiveError, migrate};

/// How to reach the archive.
#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    /// `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=disable|prefer|require`.
    pub url: String,
    /// PEM file with the CA(s) that signed the server's certificate; default: the system's.
    pub ca_file: Option<PathBuf>,
    /// Most connections the pool holds.
    pub max_connections: usize,
    /// How long to wait for a connection (a new one, or a free one from the pool).
    pub connect_timeout: Duration,
    /// Longest one statement may run before PostgreSQL cancels it.
    pub statement_timeout: Duration,
}

impl ArchiveConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// What [`Archive::write`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The row was written now.
    Archived,
    /// A row for this uid was there already (an earlier attempt succeeded); nothing changed.
    AlreadyArchived,
}

/// The run archive. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Archive {
    pool: Pool,
    migrated: Arc<tokio::sync::OnceCell<()>>,
}

/// The columns a summary is read from, in [`summary_from_row`]'s order.
const SUMMARY_COLUMNS: &str = "uid, namespace, name, phase, created_at, started_at, finished_at, \
     archived_at, left(prompt, 300), plan_source, worker_pool, steps_total, steps_succeeded, \
     left(error, 300), total_tokens, llm_calls, tool_calls";

const INSERT: &str = "INSERT INTO archived_runs (uid, namespace, name, phase, created_at, \
     started_at, finished_at, prompt, plan_source, worker_pool, steps_total, steps_succeeded, \
     error, total_tokens, llm_calls, tool_calls, labels, spec, status, report, result) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
     $19, $20, $21) ON CONFLICT (uid) DO NOTHING";

impl Archive {
    /// A pool for `config.url`; connects nothing yet.
    pub fn new(config: &ArchiveConfig) -> Result<Self, ArchiveError> {
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| ArchiveError::Config(format!("the archive URL does not parse: {e}")))?;
        pg.connect_timeout(config.connect_timeout);
        pg.application_name("crane");
        pg.options(format!(
            "-c statement_timeout={}",
            config.statement_timeout.as_millis()
        ));
        let tls = tls(config.ca_file.as_deref())?;
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| ArchiveError::Config(format!("building the connection pool: {e}")))?;
        Ok(Self {
            pool,
            migrated: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// Applies missing migrations now (otherwise the first query does). Returns how many
    /// this call applied (0 when another process, or an earlier call, did).
    pub async fn migrate(&self) -> Result<usize, ArchiveError> {
        let mut applied = 0;
        self.migrated
            .get_or_try_init(|| async {
                let mut client = self.raw_client().await?;
                applied = migrate::migrate(&mut client).await?;
                Ok::<(), ArchiveError>(())
            })
            .await?;
        Ok(applied)
    }

    async fn raw_client(&self) -> Result<Object, ArchiveError> {
        self.pool
            .get()
            .await
            .map_err(|e| ArchiveError::Connect(e.to_string()))
    }

    /// A pooled connection to a migrated database.
    async fn client(&self) -> Result<Object, ArchiveError> {
        self.migrate().await?;
        self.raw_client().await
    }

    /// One round trip: whether the database answers.
    pub async fn ping(&self) -> Result<(), ArchiveError> {
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(ArchiveError::query("pinging"))
    }

    /// Writes `record` once: a second write of the same uid changes nothing.
    pub async fn write(&self, record: &RunRecord) -> Result<WriteOutcome, ArchiveError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(INSERT)
            .await
            .map_err(ArchiveError::query("preparing the insert"))?;
        let s = &record.summary;
        let ts = |t: &Option<Time>| t.as_ref().map(|t| t.0);
        let (created, started, finished) = (s.created_at.0, ts(&s.started_at), ts(&s.finished_at));
        let text = |t: &Option<String>| t.as_deref().map(scrub_text);
        let (prompt, plan_source, error) = (
            text(&record.full_prompt),
            text(&s.plan_source),
            text(&s.error),
        );
        let (labels, spec, status) = (
            scrub(&record.labels),
            scrub(&record.spec),
            scrub(&record.status),
        );
        let report = record.report.as_ref().map(scrub);
        let result = record.result.as_ref().map(scrub);
        let params: [&(dyn ToSql + Sync); 21] = [
            &s.uid,
            &s.namespace,
            &s.name,
            &s.phase,
            &created,
            &started,
            &finished,
            &prompt,
            &plan_source,
            &s.worker_pool,
            &s.steps_total,
            &s.steps_succeeded,
            &error,
            &s.usage.total_tokens,
            &s.usage.llm_calls,
            &s.usage.tool_calls,
            &labels,
            &spec,
            &status,
            &report,
            &result,
        ];
        let n = client
            .execute(&stmt, &params)
            .await
            .map_err(ArchiveError::query("writing the run"))?;
        Ok(if n == 1 {
            WriteOutcome::Archived
        } else {
            WriteOutcome::AlreadyArchived
        })
    }

    /// One page of a namespace's archived runs, newest first.
    pub async fn list(&self, q: &ListQuery) -> Result<Page, ArchiveError> {
        q.validate()?;
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM archived_runs WHERE namespace = $1");
        let limit = i64::try_from(q.limit + 1).unwrap_or(i64::MAX);
        let pattern = q.text.as_deref().map(like_pattern);
        let after = q.after.as_ref().map(|c| (c.created_at, c.uid.clone()));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&q.namespace];
        if !q.phases.is_empty() {
            params.push(&q.phases);
            sql += &format!(" AND phase = ANY(${})", params.len());
        }
        if let Some(p) = &pattern {
            params.push(p);
            let n = params.len();
            sql += &format!(" AND (name ILIKE ${n} OR prompt ILIKE ${n})");
        }
        if let Some(s) = &q.since {
            params.push(s);
            sql += &format!(" AND created_at >= ${}", params.len());
        }
        if let Some(u) = &q.until {
            params.push(u);
            sql += &format!(" AND created_at < ${}", params.len());
        }
        if let Some((created, uid)) = &after {
            params.push(created);
            params.push(uid);
            let n = params.len();
            sql += &format!(" AND (created_at, uid) < (${}, ${n})", n - 1);
        }
        params.push(&limit);
        sql += &format!(
            " ORDER BY created_at DESC, uid DESC LIMIT ${}",
            params.len()
        );
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(ArchiveError::query("preparing the list"))?;
        let rows = client
            .query(&stmt, &params)
            .await
            .map_err(ArchiveError::query("listing runs"))?;
        let mut items = rows
            .iter()
            .map(summary_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ArchiveError::query("reading a listed run"))?;
        let next = if items.len() > q.limit {
            items.truncate(q.limit);
            items.last().map(Cursor::of)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// The archived run with this uid in `namespace`.
    pub async fn get(&self, namespace: &str, uid: &str) -> Result<Option<RunRecord>, ArchiveError> {
        self.get_where("namespace = $1 AND uid = $2", namespace, uid)
            .await
    }

    /// The newest archived run named `name` in `namespace` (names can be reused).
    pub async fn get_by_name(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<RunRecord>, ArchiveError> {
        self.get_where("namespace = $1 AND name = $2", namespace, name)
            .await
    }

    async fn get_where(
        &self,
        filter: &str,
        namespace: &str,
        key: &str,
    ) -> Result<Option<RunRecord>, ArchiveError> {
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS}, prompt, labels, spec, status, report, result \
             FROM archived_runs WHERE {filter} ORDER BY created_at DESC LIMIT 1"
        );
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&sql)
            .await
            .map_err(ArchiveError::query("preparing the read"))?;
        let row = client
            .query_opt(&stmt, &[&namespace, &key])
            .await
            .map_err(ArchiveError::query("reading a run"))?;
        row.map(|r| record_from_row(&r))
            .transpose()
            .map_err(ArchiveError::query("decoding a run"))
    }

    /// Deletes one archived run; whether there was one.
    pub async fn delete(&self, namespace: &str, uid: &str) -> Result<bool, ArchiveError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM archived_runs WHERE namespace = $1 AND uid = $2",
                &[&namespace, &uid],
            )
            .await
            .map_err(ArchiveError::query("deleting a run"))?;
        Ok(n > 0)
    }

    /// Deletes at most `batch` runs archived before `before`, oldest first; returns how many.
    /// Callers repeat until it returns less than `batch`: short transactions, so retention
    /// never holds locks or bloats one statement however much is due.
    pub async fn prune(&self, before: Timestamp, batch: i64) -> Result<u64, ArchiveError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM archived_runs WHERE uid IN (SELECT uid FROM archived_runs \
                 WHERE archived_at < $1 ORDER BY archived_at LIMIT $2)",
                &[&before, &batch.max(1)],
            )
            .await
            .map_err(ArchiveError::query("pruning old runs"))
    }

    /// How many runs the archive holds (all namespaces, or one).
    pub async fn count(&self, namespace: Option<&str>) -> Result<i64, ArchiveError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM archived_runs WHERE $1::text IS NULL OR namespace = $1",
                &[&namespace],
            )
            .await
            .map_err(ArchiveError::query("counting runs"))?;
        row.try_get(0).map_err(ArchiveError::query("counting runs"))
    }

    /// Sets `archived_at` of one run (tests of retention, which cannot wait days).
    pub async fn set_archived_at(&self, uid: &str, at: Timestamp) -> Result<(), ArchiveError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE archived_runs SET archived_at = $2 WHERE uid = $1",
                &[&uid, &at],
            )
            .await
            .map(drop)
            .map_err(ArchiveError::query("setting archived_at"))
    }
}

fn summary_from_row(row: &Row) -> Result<RunSummary, tokio_postgres::Error> {
    let time = |i: usize| -> Result<Option<Time>, tokio_postgres::Error> {
        Ok(row.try_get::<_, Option<Timestamp>>(i)?.map(Time))
    };
    Ok(RunSummary {
        uid: row.try_get(0)?,
        namespace: row.try_get(1)?,
        name: row.try_get(2)?,
        phase: row.try_get(3)?,
        source: "archived".to_owned(),
        created_at: Time(row.try_get(4)?),
        started_at: time(5)?,
        finished_at: time(6)?,
        archived_at: time(7)?,
        prompt: row.try_get(8)?,
        plan_source: row.try_get(9)?,
        worker_pool: row.try_get(10)?,
        steps_total: row.try_get(11)?,
        steps_succeeded: row.try_get(12)?,
        error: row.try_get(13)?,
        usage: Usage {
            total_tokens: row.try_get(14)?,
            llm_calls: row.try_get(15)?,
            tool_calls: row.try_get(16)?,
        },
    })
}

fn record_from_row(row: &Row) -> Result<RunRecord, tokio_postgres::Error> {
    Ok(RunRecord {
        summary: summary_from_row(row)?,
        full_prompt: row.try_get(17)?,
        labels: row.try_get(18)?,
        spec: row.try_get(19)?,
        status: row.try_get(20)?,
        report: row.try_get(21)?,
        result: row.try_get(22)?,
    })
}

/// PostgreSQL's text and jsonb cannot hold U+0000, which a tool's output may contain: it
/// becomes U+FFFD, so such a run is archived instead of blocking its finalizer forever.
fn scrub_text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn scrub(v: &Value) -> Value {
    match v {
        Value::String(s) if s.contains('\0') => Value::String(scrub_text(s)),
        Value::Array(items) => Value::Array(items.iter().map(scrub).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (scrub_text(k), scrub(v))).collect())
        }
        other => other.clone(),
    }
}

/// TLS for `sslmode=prefer|require`: rustls with the CA file's certificates, or the system's.
fn tls(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ArchiveError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ArchiveError::Config(format!("CA file {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    ArchiveError::Config(format!("CA file {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    ArchiveError::Config(format!("CA file {}: {e}", path.display()))
                })?;
            }
        }
        None => {
            // Unreadable system certificates only matter when the server offers TLS.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ArchiveError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_characters_are_replaced_everywhere() {
        let v = json!({"a\u{0}": ["x\u{0}y", 1, {"b": "\u{0}"}]});
        assert_eq!(
            scrub(&v),
            json!({"a\u{FFFD}": ["x\u{FFFD}y", 1, {"b": "\u{FFFD}"}]})
        );
    }

    #[test]
    fn a_url_that_does_not_parse_is_a_config_error_without_the_password() {
        let err = Archive::new(&ArchiveConfig::new("postgres://u:s3cret@h:notaport/db"))
            .err()
            .expect("refused");
        assert_eq!(err.metric_label(), "config");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
