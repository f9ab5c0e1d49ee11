//! Crane's run archive: finished AgentRuns kept in PostgreSQL after the TTL deletes them from
//! the cluster and their state expires from Redis.
//!
//! - [`record`]: what one archived run is ([`RunRecord`], built purely from the AgentRun and
//!   the engine's report) and the summary a list shows ([`RunSummary`], also built for live
//!   runs, so the server lists both alike).
//! - [`Archive`]: a connection pool, the migrations in `migrations/` (applied once, under an
//!   advisory lock, before the first query of a process), the one-statement idempotent write
//!   keyed by the run's uid, keyset-paginated lists with filters, reads, deletes and batched
//!   retention.
//!
//! Every query is parameterised: filters from users never become SQL text.
#![forbid(unsafe_code)]

mod error;
mod migrate;
pub mod query;
pub mod record;
mod store;

pub use error::ArchiveError;
pub use migrate::{MIGRATIONS, Migration};
pub use query::{Cursor, ListQuery, Page};
pub use record::{PHASES, RunRecord, RunSummary, Usage, phase_name};
pub use store::{Archive, ArchiveConfig, WriteOutcome};
