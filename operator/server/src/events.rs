//! `GET /api/v1/namespaces/{namespace}/runs/{name}/events`: a live run's step events as
//! Server-Sent Events, read from the run's own Redis stream through
//! `crane_engine::events::follow_run` (a blocking read on a connection of its own: an event
//! reaches the client as soon as the worker's completion script wrote it, no polling).
//!
//! - Authorization: the AgentRun is read with the caller's token first; no read, no stream.
//! - Each event: `id: <stream id>`, `event: <kind>` (`step`, `run`, `retry`, `reclaim`,
//!   `release`, `cancel`), `data: {"kind","step","phase","attempt"}`.
//! - Resumable: a client that reconnects with `Last-Event-ID` (or `?lastEventId=`) gets what
//!   came after that id; without one it gets the run's events from the start (at most the
//!   last ~2000, the engine trims the stream), so replaying them rebuilds every step's phase.
//! - `event: resync` when events may have been lost (the stream was trimmed past the cursor,
//!   or Redis lost it): the client reloads the run. `event: end` after the run's terminal
//!   event (or, for a run already over when the stream opened, once its events are all
//!   sent): the stream closes and the client does not reconnect. A stream also closes after
//!   `--stream-max-seconds` (the client reconnects with its last id, and its access is checked
//!   again) or on a Redis error (`event: error`, then close).
//! - Bounded: at most `--max-streams` at once (each holds a Redis connection); beyond, 503.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use crane_engine::events::{Follower, RunEvent, Start, StreamId, follow_run};
use futures::{Stream, StreamExt, stream};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::User;
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::metrics::Metrics;
use crate::names;
use crate::runs::get_live;
use crate::state::AppState;

/// How long one read waits for events before checking the stream's deadline.
const READ_BLOCK: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventParams {
    pub last_event_id: Option<String>,
}

/// Holds the stream's slot and keeps the gauge right however the stream ends.
struct Slot {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.streams_open.dec();
    }
}

struct Follow {
    follower: Follower<RunEvent>,
    deadline: Instant,
    done: bool,
    /// The run was already over when the stream opened: everything is in the stream, so
    /// the first read that finds nothing more ends it (a run that never reached the engine,
    /// e.g. an invalid plan, has no events at all).
    over: bool,
    slot: Slot,
}

fn event_of(e: &RunEvent) -> Event {
    Event::default()
        .id(e.id.to_string())
        .event(e.kind.clone())
        .data(
            json!({"kind": e.kind, "step": e.step, "phase": e.phase, "attempt": e.attempt})
                .to_string(),
        )
}

fn is_terminal_run_event(e: &RunEvent) -> bool {
    e.kind == "run" && matches!(e.phase.as_str(), "Succeeded" | "Failed" | "Cancelled")
}

/// One read's worth of SSE events; `None` ends the stream.
async fn next_batch(mut f: Follow) -> Option<(Vec<Event>, Follow)> {
    if f.done || Instant::now() >= f.deadline {
        return None;
    }
    let left = f.deadline.saturating_duration_since(Instant::now());
    match f.follower.read(READ_BLOCK.min(left)).await {
        Ok(read) => {
            let mut out = Vec::with_capacity(read.items.len() + 2);
            if read.missed {
                out.push(Event::default().event("resync").data("{}"));
            }
            for e in &read.items {
                out.push(event_of(e));
                if is_terminal_run_event(e) {
                    out.push(Event::default().event("end").data("{}"));
                    f.done = true;
                    break;
                }
            }
            if f.over && read.items.is_empty() && !f.done {
                out.push(Event::default().event("end").data("{}"));
                f.done = true;
            }
            f.slot.metrics.events_sent.inc_by(read.items.len() as u64);
            Some((out, f))
        }
        Err(e) => {
            tracing::warn!(error = %e, "event stream read failed; closing the stream");
            f.done = true;
            let data = json!({"message": e.to_string()}).to_string();
            Some((vec![Event::default().event("error").data(data)], f))
        }
    }
}

/// The SSE stream of a live run.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    user: User,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<EventParams>,
) -> Result<impl IntoResponse, ApiError> {
    names::label("namespace", &ns)?;
    names::subdomain("name", &name)?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(p.last_event_id)
        .filter(|s| !s.is_empty());
    let start = match last {
        Some(id) => Start::After(id.parse::<StreamId>().map_err(|_| {
            ApiError::BadRequest("Last-Event-ID is not an event id (MS-SEQ)".into())
        })?),
        None => Start::Beginning,
    };
    let run = get_live(&user, &ns, &name).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "agentruns.crane.dev {name:?} is not live (archived runs have no event stream)"
        ))
    })?;
    let uid = run
        .metadata
        .uid
        .clone()
        .ok_or_else(|| ApiError::KubeUnavailable("the AgentRun has no uid".into()))?;
    let client = state.redis_client().cloned().ok_or_else(|| {
        ApiError::Busy("this server has no Redis (--redis-url): no event streams".into())
    })?;
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Busy(format!(
            "{} event streams are open, the most this server serves; try again later",
            state.config.max_streams
        ))
    })?;
    state.metrics.streams_open.inc();
    let slot = Slot {
        metrics: state.metrics.clone(),
        _permit: permit,
    };
    let keys = crane_engine::RunKeys::new(&ns, &uid)?;
    let follow = Follow {
        follower: follow_run(client, &keys, start),
        deadline: Instant::now() + Duration::from_secs(state.config.stream_max_seconds.max(1)),
        done: false,
        over: run
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_terminal()),
        slot,
    };
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> = Box::pin(
        stream::unfold(follow, next_batch)
            .flat_map(stream::iter)
            .map(Ok::<_, Infallible>),
    );
    // Proxies (nginx) must not buffer the stream.
    Ok((
        [("x-accel-buffering", "no"), ("cache-control", "no-cache")],
        Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    ))
}
