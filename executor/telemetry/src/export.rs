//! The trace pipeline behind [`crate::init`]: an OTLP/HTTP exporter sending through the
//! workspace's reqwest (so no second HTTP stack is built), the SDK's batch processor, and the
//! id generator that lets the operator report a run's root span under the ids the run's other
//! spans already point at ([`emit_root_span`]).

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanId, SpanKind, Status, TraceId, Tracer as _};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::WithHttpConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};

/// Largest collector reply read (they are a few bytes: a partial-success message at most).
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// `OTEL_EXPORTER_OTLP_TIMEOUT`'s default in the specification.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends OTLP requests with reqwest on the Tokio runtime that was current at start. The
/// SDK's batch processor exports from a thread of its own, outside any runtime: each request
/// is spawned onto the runtime and the export thread waits for its result.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request: reqwest::Request = request.try_into()?;
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let mut response = client.execute(request).await?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_REPLY_BYTES {
                    return Err::<_, HttpError>(
                        format!("the collector's reply is larger than {MAX_REPLY_BYTES} bytes")
                            .into(),
                    );
                }
                body.extend_from_slice(&chunk);
            }
            let mut reply = Response::builder().status(status).body(Bytes::from(body))?;
            *reply.headers_mut() = headers;
            Ok(reply)
        });
        task.await?
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds).
fn export_timeout() -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.trim().parse::<u64>().ok())
    .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

thread_local! {
    /// Ids the next span built on this thread takes instead of random ones.
    static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except for the one span [`emit_root_span`] builds with the ids it was given.
#[derive(Debug, Default)]
struct RunIds {
    random: RandomIdGenerator,
}

impl IdGenerator for RunIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS
            .with(Cell::get)
            .map_or_else(|| self.random.new_trace_id(), |(t, _)| t)
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS
            .with(Cell::get)
            .map_or_else(|| self.random.new_span_id(), |(_, s)| s)
    }
}

/// The tracer provider exporting to the `OTEL_*`-configured endpoint (the exporter reads
/// the endpoint, headers and compression from the environment itself).
pub(crate) fn provider(service: &'static str) -> Result<SdkTracerProvider, String> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "telemetry was set up outside a Tokio runtime".to_owned())?;
    let client = reqwest::Client::builder()
        .timeout(export_timeout())
        .build()
        .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(RuntimeClient { client, runtime })
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(RunIds::default())
        .with_resource(resource.build())
        .build())
}

/// A span whose ids, start and end are known in advance: a run's root span, reported when
/// the run ends.
#[derive(Clone, Debug)]
pub struct RootSpan {
    pub name: String,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// The failure to report as the span's error status.
    pub error: Option<String>,
}

/// Reports `root` through the global tracer provider; nothing without tracing.
pub fn emit_root_span(root: RootSpan) {
    if !crate::tracing_enabled() {
        return;
    }
    let tracer = opentelemetry::global::tracer("crane");
    let builder = tracer
        .span_builder(root.name)
        .with_kind(SpanKind::Internal)
        .with_start_time(root.start)
        .with_attributes(root.attributes);
    // The SDK asks the id generator for the ids of a span without parent; this thread's
    // override answers for this one build only.
    NEXT_IDS.with(|ids| ids.set(Some((root.trace_id, root.span_id))));
    let mut span = tracer.build_with_context(builder, &opentelemetry::Context::new());
    NEXT_IDS.with(|ids| ids.set(None));
    if let Some(message) = root.error {
        span.set_status(Status::error(message));
    } else {
        span.set_status(Status::Ok);
    }
    span.end_with_timestamp(root.end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_override_applies_to_one_build_only() {
        let ids = RunIds::default();
        let fixed = (TraceId::from_bytes([7; 16]), SpanId::from_bytes([9; 8]));
        NEXT_IDS.with(|c| c.set(Some(fixed)));
        assert_eq!((ids.new_trace_id(), ids.new_span_id()), fixed);
        NEXT_IDS.with(|c| c.set(None));
        assert_ne!(ids.new_span_id(), fixed.1);
        assert_ne!(ids.new_trace_id(), fixed.0);
    }
}
