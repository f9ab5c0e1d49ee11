//! Progress events: the global notification stream `crane:events` ([`GLOBAL_EVENTS`]) that
//! workers publish to and the operator follows, and each run's own event stream. This module
//! is the only code that writes the global stream or reads either: one [`publish`] command
//! and one [`Follower`].
//!
//! # What is published
//!
//! - Global: after each completion batch, a worker pipelines one [`publish`] per run that
//!   moved (`run`, the batch's last accepted `step`, the run's `phase` after it), trimmed to
//!   about [`NOTIFICATIONS_MAXLEN`] entries. A notification says *that* a run moved, never
//!   its state: the reader reads the run ([`crate::run_report`]) and resyncs now and then, so
//!   a lost notification costs latency, never correctness.
//! - Per run (`crane:{R}:events`, [`crate::RunKeys::events`]): written by the scripts
//!   (`event()` in `lua/common.lua`), read here as [`RunEvent`]s.
//!
//! # Following
//!
//! ```no_run
//! # use std::time::Duration;
//! # use crane_engine::events::{self, Start};
//! # async fn follow(client: redis::Client) -> Result<(), crane_engine::EngineError> {
//! let mut follower = events::follow_notifications(client, Start::Now);
//! loop {
//!     // XREAD COUNT 1000 BLOCK 1000 on the follower's own connection.
//!     let read = follower.read(Duration::from_secs(1)).await?;
//!     if read.missed {
//!         // Look at every run again.
//!     }
//!     for n in read.items {
//!         println!("run {} moved", n.run);
//!     }
//! }
//! # }
//! ```
//!
//! - **Own connection.** A follower reads on a connection of its own (a blocking read would
//!   hold up every command queued behind it on a shared one), made at the first read. Redis
//!   trouble comes back as an error from [`Follower::read`] so the caller can back off; the
//!   next read reconnects and carries on from the same place.
//! - **Bounded.** [`Follower::read`] waits at most `block` (clamped to 1 ms ..
//!   [`MAX_BLOCK`]) and returns at most [`Follower::with_count`] items (1000 unless set),
//!   oldest first, possibly none.
//! - **Resumable.** [`Follower::cursor`] is the id of the last entry consumed; a follower made
//!   with [`Start::After`] that id carries on after it. [`Start::Now`] is resolved to the
//!   stream's last id at the first read (not XREAD's `$`, which would lose whatever is added
//!   between two reads); on a stream that does not exist yet it means "everything".
//! - **Gaps are reported, not hidden.** [`Read::missed`] is true when entries may have been
//!   lost since the previous read: the stream's oldest entry is newer than the cursor (it
//!   was trimmed past the reader, who fell more than the trim length behind; with a stream
//!   trimmed to a handful of entries this can also happen when nothing was lost), or the
//!   stream was deleted or re-created (Redis restarted without its data; when its ids went
//!   back, the cursor starts over with them). Each read is one round trip: a read-only script
//!   that looks at the stream (`lua/stream_info.lua`) and the `XREAD`, pipelined. A reader
//!   that re-reads the truth after every read anyway can save the script with
//!   [`Follower::ignoring_gaps`].
//! - **Tolerant.** RESP2 and RESP3 replies both parse. An entry without the fields its type
//!   needs (a notification without `run`) is skipped, and the cursor still moves past it.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionManager;

use crane_core::plan::StepId;
use crane_core::run::RunPhase;

pub use crate::keys::GLOBAL_EVENTS;
use crate::keys::RunKeys;
use crate::replies::{phase, phase_name};
use crate::streams::{self, field, text};
use crate::{EngineError, api};

/// Where a stream is (see `lua/stream_info.lua`).
const STREAM_INFO: &str = include_str!("lua/stream_info.lua");

/// About how many notifications the global stream keeps (`XADD MAXLEN ~`): minutes of
/// history at the engine's peak rate, a few MiB of Redis memory.
pub const NOTIFICATIONS_MAXLEN: u64 = 100_000;

/// The longest one [`Follower::read`] blocks.
pub const MAX_BLOCK: Duration = Duration::from_secs(10);

/// Most entries one read returns unless [`Follower::with_count`] says otherwise.
pub const DEFAULT_COUNT: usize = 1000;

/// The command a worker pipelines after a completion batch: run `run` moved; `step` is the
/// batch's last accepted step and `phase` the run's phase after the batch.
pub fn publish(run: &str, step: &str, phase: RunPhase) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(GLOBAL_EVENTS)
        .arg("MAXLEN")
        .arg("~")
        .arg(NOTIFICATIONS_MAXLEN)
        .arg("*")
        .arg("run")
        .arg(run)
        .arg("step")
        .arg(step)
        .arg("phase")
        .arg(phase_name(&phase));
    cmd
}

/// A stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// `0-0`: before every entry.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || EngineError::Config(format!("{s:?} is not a stream entry id (MS-SEQ)"));
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Where a follower starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// With what is published from the first read on.
    Now,
    /// With the oldest entry the stream still has.
    Beginning,
    /// With the entry after this one (a previous follower's [`Follower::cursor`]).
    After(StreamId),
}

/// A type a stream's entries are read as.
pub trait StreamEntry: Sized {
    /// `None` when the entry lacks what this type needs (it is skipped).
    fn from_entry(id: StreamId, fields: &[(String, String)]) -> Option<Self>;
}

/// One global notification: run `run` moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub id: StreamId,
    /// The run id (for runs the operator made, the AgentRun's UID).
    pub run: String,
    /// The last step of the batch that moved it.
    pub step: Option<StepId>,
    /// The run's phase after that batch.
    pub phase: Option<RunPhase>,
}

impl StreamEntry for Notification {
    fn from_entry(id: StreamId, fields: &[(String, String)]) -> Option<Self> {
        let run = field(fields, "run").filter(|r| !r.is_empty())?;
        Some(Self {
            id,
            run: run.to_owned(),
            step: field(fields, "step").and_then(|s| s.parse().ok()),
            phase: field(fields, "phase").and_then(phase),
        })
    }
}

/// One event of a run's own stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunEvent {
    pub id: StreamId,
    /// `run` (the run's phase changed), `step` (a step's phase changed), `retry`, `reclaim`,
    /// `release` or `cancel`.
    pub kind: String,
    pub step: Option<StepId>,
    /// The phase after the event: the step's, or for `run` and `cancel` the run's.
    pub phase: String,
    pub attempt: Option<u32>,
}

impl StreamEntry for RunEvent {
    fn from_entry(id: StreamId, fields: &[(String, String)]) -> Option<Self> {
        Some(Self {
            id,
            kind: field(fields, "type")?.to_owned(),
            step: field(fields, "step").and_then(|s| s.parse().ok()),
            phase: field(fields, "phase").unwrap_or_default().to_owned(),
            attempt: field(fields, "attempt").and_then(|a| a.parse().ok()),
        })
    }
}

/// What one [`Follower::read`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read<T> {
    /// Oldest first; empty when the block ran out.
    pub items: Vec<T>,
    /// Entries may have been lost since the previous read (see the module header): look at
    /// everything followed again.
    pub missed: bool,
}

/// Follows one stream with blocking reads (see the module header).
pub struct Follower<T> {
    client: redis::Client,
    conn: Option<ConnectionManager>,
    stream: String,
    /// The last entry consumed; `None` until [`Start::Now`] is resolved.
    cursor: Option<StreamId>,
    count: usize,
    /// Look at the stream before each read, to report gaps.
    gaps: bool,
    item: PhantomData<fn() -> T>,
}

/// A follower of the global notification stream.
pub fn follow_notifications(client: redis::Client, start: Start) -> Follower<Notification> {
    Follower::new(client, GLOBAL_EVENTS, start)
}

/// A follower of one run's event stream.
pub fn follow_run(client: redis::Client, keys: &RunKeys, start: Start) -> Follower<RunEvent> {
    Follower::new(client, keys.events(), start)
}

impl<T: StreamEntry> Follower<T> {
    /// Connects nothing yet: the first [`Follower::read`] does.
    pub fn new(client: redis::Client, stream: impl Into<String>, start: Start) -> Self {
        let cursor = match start {
            Start::Now => None,
            Start::Beginning => Some(StreamId::ZERO),
            Start::After(id) => Some(id),
        };
        Self {
            client,
            conn: None,
            stream: stream.into(),
            cursor,
            count: DEFAULT_COUNT,
            gaps: true,
            item: PhantomData,
        }
    }

    /// At most `count` items per read (at least 1).
    pub fn with_count(mut self, count: usize) -> Self {
        self.count = count.max(1);
        self
    }

    /// Reads without looking for gaps ([`Read::missed`] stays false): one `XREAD` per read,
    /// for a reader that reads the state it follows after every read anyway.
    pub fn ignoring_gaps(mut self) -> Self {
        self.gaps = false;
        self
    }

    /// The id of the last entry consumed (`None` before the first read of [`Start::Now`]).
    pub fn cursor(&self) -> Option<StreamId> {
        self.cursor
    }

    /// Waits up to `block` for entries after the cursor and consumes them. Cancel-safe: when
    /// the future is dropped, nothing is consumed.
    pub async fn read(&mut self, block: Duration) -> Result<Read<T>, EngineError> {
        let block = block.clamp(Duration::from_millis(1), MAX_BLOCK);
        let mut conn = match &self.conn {
            Some(conn) => conn.clone(),
            None => {
                let conn =
                    api::connect_with(&self.client, MAX_BLOCK + Duration::from_secs(5)).await?;
                self.conn.insert(conn).clone()
            }
        };
        let cursor = match self.cursor {
            Some(cursor) => cursor,
            None => {
                // `Now`: what the stream holds at this moment is the past.
                let info: Value = stream_info(&self.stream)
                    .query_async(&mut conn)
                    .await
                    .map_err(EngineError::redis("looking at a stream"))?;
                let (cursor, _) = reconcile(None, parse_info(&info)?);
                *self.cursor.insert(cursor)
            }
        };
        let mut pipe = redis::pipe();
        if self.gaps {
            pipe.add_command(stream_info(&self.stream));
        }
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(self.count)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(cursor.to_string());
        let mut replies: Vec<Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(EngineError::redis("following a stream"))?;
        let reply = replies.pop().unwrap_or(Value::Nil);
        let mut missed = false;
        if let Some(info) = replies.pop() {
            let next;
            (next, missed) = reconcile(Some(cursor), parse_info(&info)?);
            if next != cursor {
                // The stream started over: read it again from its start, entries of this read
                // included.
                self.cursor = Some(next);
                return Ok(Read {
                    items: Vec::new(),
                    missed,
                });
            }
        }
        let entries = streams::read_reply(&reply).map_err(|detail| EngineError::Protocol {
            what: "following a stream",
            detail,
        })?;
        let mut items = Vec::with_capacity(entries.len());
        for (id, fields) in with_ids(entries) {
            self.cursor = Some(self.cursor.map_or(id, |c| c.max(id)));
            items.extend(T::from_entry(id, &fields));
        }
        Ok(Read { items, missed })
    }
}

/// A run's events so far, oldest first (at most the last ~2000: the scripts trim the stream).
pub async fn run_events(
    conn: &mut ConnectionManager,
    keys: &RunKeys,
) -> Result<Vec<RunEvent>, EngineError> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(keys.events())
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .map_err(EngineError::redis("reading run events"))?;
    Ok(with_ids(streams::entries(&reply))
        .filter_map(|(id, fields)| RunEvent::from_entry(id, &fields))
        .collect())
}

/// Entries with their ids parsed (one whose id does not parse cannot be resumed after, and
/// Redis never gives one).
fn with_ids(
    entries: Vec<streams::Entry>,
) -> impl Iterator<Item = (StreamId, Vec<(String, String)>)> {
    entries
        .into_iter()
        .filter_map(|e| Some((e.id.parse().ok()?, e.fields)))
}

/// Where a stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StreamInfo {
    /// The newest id it ever gave an entry.
    last: StreamId,
    /// Its oldest entry, `None` when it is empty.
    first: Option<StreamId>,
}

fn stream_info(stream: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(STREAM_INFO).arg(1).arg(stream);
    cmd
}

/// `lua/stream_info.lua`'s reply: `None` when the stream does not exist.
fn parse_info(v: &Value) -> Result<Option<StreamInfo>, EngineError> {
    let bad = || EngineError::Protocol {
        what: "looking at a stream",
        detail: format!("unexpected stream info {v:?}"),
    };
    let Value::Array(items) = v else {
        return Err(bad());
    };
    let [exists, last, first] = &items[..] else {
        return Err(bad());
    };
    if matches!(exists, Value::Int(0)) {
        return Ok(None);
    }
    let id = |v: &Value| text(v).and_then(|t| t.parse::<StreamId>().ok());
    Ok(Some(StreamInfo {
        last: id(last).ok_or_else(bad)?,
        first: id(first),
    }))
}

/// Where to read on from, and whether entries may have been lost, given the cursor (`None`:
/// resolve [`Start::Now`]) and the stream as it is (`None`: it does not exist).
fn reconcile(cursor: Option<StreamId>, info: Option<StreamInfo>) -> (StreamId, bool) {
    match (cursor, info) {
        // Nothing published yet: everything that comes is new.
        (None, None) => (StreamId::ZERO, false),
        (None, Some(info)) => (info.last, false),
        (Some(c), None) => (StreamId::ZERO, c != StreamId::ZERO),
        // Ids went back: the stream was re-created, and its entries are all new to us.
        (Some(c), Some(info)) if info.last < c => (StreamId::ZERO, true),
        // From the start nothing can be missed; otherwise an entry after the cursor is gone
        // when the oldest one left is newer than the cursor (or none is left of newer ones).
        (Some(c), Some(info)) => {
            let oldest_after = info.first.map_or(info.last > c, |f| f > c);
            (c, c != StreamId::ZERO && oldest_after)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    fn notifications(v: &Value) -> Vec<Notification> {
        with_ids(streams::read_reply(v).unwrap_or_default())
            .filter_map(|(id, f)| Notification::from_entry(id, &f))
            .collect()
    }

    #[test]
    fn notifications_parse_from_resp2_and_resp3_and_skip_malformed_entries() {
        let fields = Value::Array(vec![
            bulk("run"),
            bulk("uid-1"),
            bulk("step"),
            bulk("2"),
            bulk("phase"),
            bulk("Succeeded"),
        ]);
        let entries = Value::Array(vec![
            Value::Array(vec![bulk("1-0"), fields.clone()]),
            Value::Array(vec![bulk("2-0"), Value::Array(vec![bulk("odd")])]),
            Value::Int(7),
            Value::Array(vec![Value::Int(3)]),
            Value::Array(vec![bulk("not-an-id"), fields]),
        ]);
        let want = vec![Notification {
            id: id(1, 0),
            run: "uid-1".into(),
            step: Some(2),
            phase: Some(RunPhase::Succeeded),
        }];
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk(GLOBAL_EVENTS),
            entries.clone(),
        ])]);
        assert_eq!(notifications(&resp2), want);
        // The entry without `run` is skipped, but it is read: the cursor moves past it.
        let read = with_ids(streams::read_reply(&resp2).unwrap_or_default());
        assert_eq!(read.map(|(i, _)| i).max(), Some(id(2, 0)));
        let resp3 = Value::Map(vec![(bulk(GLOBAL_EVENTS), entries)]);
        assert_eq!(notifications(&resp3), want);
        assert!(notifications(&Value::Nil).is_empty());
    }

    #[test]
    fn stream_ids_order_like_redis_and_parse_strictly() {
        assert!(id(1, 9) < id(2, 0) && id(2, 0) < id(2, 1));
        assert_eq!(
            "1700000000000-3".parse::<StreamId>().ok(),
            Some(id(1_700_000_000_000, 3))
        );
        assert_eq!(id(5, 1).to_string(), "5-1");
        for bad in ["", "5", "$", "a-1", "1-", "-1", "1-2-3"] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_cursor_is_resolved_kept_or_started_over_and_gaps_are_reported() {
        let info = |last, first| Some(StreamInfo { last, first });
        // `Now` on a stream that does not exist yet: everything that comes.
        assert_eq!(reconcile(None, None), (StreamId::ZERO, false));
        assert_eq!(
            reconcile(None, info(id(9, 0), Some(id(1, 0)))),
            (id(9, 0), false)
        );
        // The cursor's entry is still there: nothing lost.
        assert_eq!(
            reconcile(Some(id(9, 0)), info(id(12, 0), Some(id(5, 0)))),
            (id(9, 0), false)
        );
        assert_eq!(
            reconcile(Some(id(9, 0)), info(id(12, 0), Some(id(9, 0)))),
            (id(9, 0), false)
        );
        // Trimmed past the cursor (or emptied after it): read on, but say entries were lost.
        assert_eq!(
            reconcile(Some(id(9, 0)), info(id(12, 0), Some(id(10, 0)))),
            (id(9, 0), true)
        );
        assert_eq!(
            reconcile(Some(id(9, 0)), info(id(12, 0), None)),
            (id(9, 0), true)
        );
        // From the beginning nothing is missed, however trimmed.
        assert_eq!(
            reconcile(Some(StreamId::ZERO), info(id(12, 0), Some(id(10, 0)))),
            (StreamId::ZERO, false)
        );
        // Re-created (ids went back) or gone: start over, and say so.
        assert_eq!(
            reconcile(Some(id(9, 0)), info(id(3, 0), Some(id(3, 0)))),
            (StreamId::ZERO, true)
        );
        assert_eq!(reconcile(Some(id(9, 0)), None), (StreamId::ZERO, true));
        assert_eq!(
            reconcile(Some(StreamId::ZERO), None),
            (StreamId::ZERO, false)
        );
    }
}
