//! JSON log lines with the trace they belong to: tracing-subscriber's JSON format, plus
//! `trace_id` and `span_id` first in the object when the event happens inside a traced span,
//! so a log search can jump to the trace and back. Without tracing the lines are exactly the
//! JSON format's.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub(crate) struct WithTraceIds {
    inner: Format<Json>,
    tracing: bool,
}

impl WithTraceIds {
    pub(crate) fn new(tracing: bool) -> Self {
        Self {
            inner: tracing_subscriber::fmt::format()
                .json()
                .with_current_span(true)
                .with_span_list(true),
            tracing,
        }
    }
}

/// The trace and span id of the innermost span around the event that has OpenTelemetry
/// data (spans of other crates are not exported, their Crane parents are).
fn ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let current = ctx.parent_span()?;
    tracing::dispatcher::get_default(|dispatch| {
        current.scope().find_map(|span| {
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), dispatch)?;
            let otel = cx.span();
            let sc = otel.span_context();
            sc.is_valid()
                .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
        })
    })
}

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = self.tracing.then(|| ids(ctx)).flatten() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => {
                let comma = if rest.starts_with('}') { "" } else { "," };
                write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"{comma}{rest}"
                )
            }
            None => writer.write_str(&line),
        }
    }
}
