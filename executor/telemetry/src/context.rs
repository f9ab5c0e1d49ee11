//! W3C trace context as it travels between Crane's processes: `traceparent` strings
//! (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`) that the operator derives from an
//! AgentRun's uid, that Redis keeps with the run and planner pods get in `TRACEPARENT`, and
//! that outgoing HTTP requests carry so the services they call join the run's trace.
//!
//! A run's trace id is its uid (a UUID is 128 bits, like a trace id) and its root span id a
//! hash of it: any operator replica, before or after a restart, names the same trace and the
//! same root span without storing anything, so the root span can be reported once, when the
//! run ends, with the run's real start and end.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The environment variable that hands a process its parent context (the OpenTelemetry
/// convention for environment carriers); the operator sets it on planner pods.
pub const ENV_TRACEPARENT: &str = "TRACEPARENT";

/// A `traceparent` header value for `cx` (sampled or not, as `cx` says).
pub fn format_traceparent(cx: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        cx.trace_id(),
        cx.span_id(),
        cx.trace_flags().to_u8()
    )
}

/// Parses a `traceparent` value strictly (version 00, lowercase hex, ids not all zero);
/// `None` for anything else, so a malformed value starts a new trace instead of failing.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if parts.next().is_some()
        || version != "00"
        || !lower_hex(trace, 32)
        || !lower_hex(span, 16)
        || !lower_hex(flags, 2)
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let cx = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    cx.is_valid().then_some(cx)
}

/// 64-bit FNV-1a of `parts` (each followed by a 0 byte), never zero.
fn fnv64(parts: &[&str]) -> u64 {
    let h = parts.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, part| {
        part.bytes()
            .chain([0])
            .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    });
    h.max(1)
}

/// The trace id and root span id of the run with engine id `run_uid`: the uid's 128 bits
/// when it is a UUID (an AgentRun's uid always is), else a hash of it (`crane-executor
/// submit` run ids).
pub fn run_ids(run_uid: &str) -> (TraceId, SpanId) {
    let hex: String = run_uid.chars().filter(|c| *c != '-').collect();
    let trace_id = TraceId::from_hex(&hex.to_ascii_lowercase())
        .ok()
        .filter(|t| hex.len() == 32 && *t != TraceId::INVALID)
        .unwrap_or_else(|| {
            let hi = fnv64(&["crane-run-trace", run_uid]);
            let lo = fnv64(&["crane-run-trace-lo", run_uid]);
            TraceId::from_bytes(((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes())
        });
    let span_id = SpanId::from_bytes(fnv64(&["crane-run-root", run_uid]).to_be_bytes());
    (trace_id, span_id)
}

/// The `traceparent` of a run's root span (sampled): what the operator stores with the run.
pub fn run_traceparent(run_uid: &str) -> String {
    let (trace_id, span_id) = run_ids(run_uid);
    format_traceparent(&SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    ))
}

/// Makes `span` a child of the remote span `traceparent` names. Call it before the span is
/// first entered. Without tracing, or with a malformed value, the span stays as it is.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if !crate::tracing_enabled() {
        return;
    }
    match parse_traceparent(traceparent) {
        Some(cx) => {
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(cx));
        }
        None => tracing::debug!(
            traceparent = %printable_prefix(traceparent),
            "ignoring a malformed traceparent"
        ),
    }
}

/// At most 64 printable characters of an untrusted value, for a log line.
fn printable_prefix(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Makes `span` a child of the context in [`ENV_TRACEPARENT`], when there is one.
pub fn parent_from_env(span: &tracing::Span) {
    if let Ok(value) = std::env::var(ENV_TRACEPARENT) {
        set_parent(span, &value);
    }
}

/// The current span's context as a `traceparent`, when tracing is on and a span is current.
pub fn current_traceparent() -> Option<String> {
    if !crate::tracing_enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| format_traceparent(sc))
}

/// `request` with the current span's `traceparent` (and `tracestate`, when not empty), so
/// the service it calls continues the trace. Unchanged without tracing.
pub fn inject(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if !crate::tracing_enabled() {
        return request;
    }
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return request;
    }
    let request = request.header("traceparent", format_traceparent(sc));
    match sc.trace_state().header() {
        state if state.is_empty() => request,
        state => request.header("tracestate", state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_survives_formatting_and_parsing() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(value).expect("valid");
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(cx.is_sampled() && cx.is_remote());
        assert_eq!(format_traceparent(&cx), value);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_run_uid_is_its_trace_id_and_names_one_root_span() {
        let uid = "9b2c1e4a-57d1-4c0b-9a57-3f1d2e8c7b60";
        let tp = run_traceparent(uid);
        assert_eq!(&tp[..36], "00-9b2c1e4a57d14c0b9a573f1d2e8c7b60-");
        assert!(tp.ends_with("-01"));
        assert_eq!(tp, run_traceparent(uid), "stable across calls and replicas");
        assert_ne!(
            run_ids(uid).1,
            run_ids("9b2c1e4a-57d1-4c0b-9a57-3f1d2e8c7b61").1
        );
        assert!(parse_traceparent(&tp).is_some());
    }

    #[test]
    fn run_ids_that_are_not_uuids_get_a_valid_hashed_trace_id() {
        let (a, _) = run_ids("run-00000000000000ff");
        let (b, _) = run_ids("run-00000000000000fe");
        assert!(a != TraceId::INVALID && a != b);
        let (zero, _) = run_ids("00000000-0000-0000-0000-000000000000");
        assert_ne!(zero, TraceId::INVALID);
    }
}
