//! One way for every Crane binary (operator, worker, planner, local commands) to set up its
//! logs and traces: JSON log lines on stderr filtered by `RUST_LOG`, and — only when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` says where —
//! OpenTelemetry traces exported over OTLP/HTTP (protobuf), with `trace_id`/`span_id` in
//! every log line written inside a traced span. Without an endpoint nothing OpenTelemetry is
//! installed: no exporter, no background thread, spans stay plain `tracing` spans.
//!
//! Trace context moves as W3C `traceparent` strings ([`context`]): through Redis with a run
//! (`RunOptions::traceparent`), into planner pods (`TRACEPARENT`), and onto outgoing HTTP tool,
//! MCP and model requests ([`inject`]). Spans follow the OpenTelemetry GenAI semantic
//! conventions where they describe model and tool calls ([`genai`]).
#![forbid(unsafe_code)]

pub mod context;
mod export;
pub mod genai;
mod logfmt;

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use context::{
    ENV_TRACEPARENT, current_traceparent, inject, parent_from_env, run_traceparent, set_parent,
};
pub use export::{RootSpan, emit_root_span};
pub use opentelemetry::KeyValue;

/// Whether this process exports traces; set once by [`init`].
static ENABLED: OnceLock<bool> = OnceLock::new();

/// Whether [`init`] turned tracing on (an OTLP endpoint was configured and accepted).
pub fn tracing_enabled() -> bool {
    ENABLED.get().copied().unwrap_or(false)
}

/// What the `OTEL_*` environment asks for, read once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Export traces (an endpoint is set, the SDK is not disabled, the exporter not `none`).
    pub export: bool,
    /// Why traces stay off although an endpoint is set (an unsupported protocol…), for a
    /// warning once logging is up.
    pub refused: Option<String>,
}

impl Settings {
    /// From a variable lookup (the process environment in [`Settings::from_env`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let off = |reason: String| Self {
            export: false,
            refused: Some(reason),
        };
        if endpoint.is_none() {
            return Self {
                export: false,
                refused: None,
            };
        }
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return off("OTEL_SDK_DISABLED is true".into());
        }
        if let Some(exporter) = set("OTEL_TRACES_EXPORTER") {
            let exporter = exporter.trim().to_ascii_lowercase();
            if exporter == "none" {
                return off("OTEL_TRACES_EXPORTER is none".into());
            }
            if exporter != "otlp" {
                return off(format!(
                    "OTEL_TRACES_EXPORTER {exporter:?} is not supported (only otlp)"
                ));
            }
        }
        let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(p) = protocol
            && p.trim() != "http/protobuf"
        {
            return off(format!(
                "OTLP protocol {:?} is not supported: Crane exports http/protobuf \
                 (point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port, usually 4318)",
                p.trim()
            ));
        }
        Self {
            export: true,
            refused: None,
        }
    }

    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// What the operator hands its planner and worker pods for traces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSettings {
    /// Runs carry a trace context (the operator itself exports traces).
    pub traced: bool,
    /// `OTEL_*` variables to set in the pods: the operator's own, so one setting in the
    /// chart reaches every component.
    pub env: Vec<(String, String)>,
}

impl PodSettings {
    /// From this process's environment, after [`init`].
    pub fn from_env() -> Self {
        Self {
            traced: tracing_enabled(),
            env: pod_env(std::env::vars()),
        }
    }
}

/// The `OTEL_*` variables of `vars` that pods should share, sorted: all but the service
/// name (each component has its own) and headers (they usually hold a backend's credentials,
/// which belong in a collector's config, not in every pod spec of every run namespace).
pub fn pod_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut env: Vec<_> = vars
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with("OTEL_") && name != "OTEL_SERVICE_NAME" && !name.ends_with("_HEADERS")
        })
        .collect();
    env.sort();
    env
}

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] flushes what is still queued.
#[must_use = "dropping the guard does not flush spans; call shutdown() before exiting"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued and stops the exporter (bounded by the exporter's
    /// timeout). Short-lived processes (planner Jobs, `run`) call it before exiting.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks until its export thread is done; that thread's requests
        // run on this runtime, so the wait happens off the runtime's worker threads.
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = provider.shutdown() {
                eprintln!("crane: flushing traces failed: {e}");
            }
        })
        .await;
    }
}

/// Sets up logging (and tracing, when the environment asks for it) for `service`
/// (`service.name` unless `OTEL_SERVICE_NAME` says otherwise). `default_level` applies when
/// `RUST_LOG` is unset. Must be called inside a Tokio runtime. A second call only returns an
/// inert guard (tests).
pub fn init(service: &'static str, default_level: &str) -> Telemetry {
    let settings = Settings::from_env();
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let provider = settings
        .export
        .then(|| export::provider(service))
        .and_then(|r| match r {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("crane: traces stay off: {e}");
                None
            }
        });
    let enabled = provider.is_some();
    let fmt = tracing_subscriber::fmt::layer()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .with_writer(std::io::stderr)
        .event_format(logfmt::WithTraceIds::new(enabled))
        .with_filter(filter());
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            // Thread ids, source locations and levels on every span cost export bytes and
            // say nothing a run's trace needs.
            .with_threads(false)
            .with_location(false)
            .with_level(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(otel_filter())
    });
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if !installed {
        return Telemetry { provider: None };
    }
    let _ = ENABLED.set(enabled);
    if let Some(p) = &provider {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        opentelemetry::global::set_tracer_provider(p.clone());
        tracing::info!(service, "exporting traces over OTLP/HTTP");
    } else if let Some(why) = &settings.refused {
        tracing::warn!(reason = %why, "traces stay off");
    }
    Telemetry { provider }
}

/// Which spans become OpenTelemetry spans: Crane's own (info and above), not those of the
/// libraries underneath (a kube-runtime "reconciling object" span per reconcile would be a
/// trace of its own each time).
fn otel_filter() -> tracing_subscriber::filter::FilterFn {
    tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("crane") && *meta.level() <= tracing::Level::INFO
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn pods_share_otel_settings_but_not_names_or_credentials() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SERVICE_NAME", "crane-operator"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=secret"),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let names: Vec<_> = pod_env(vars).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER"]
        );
    }

    #[test]
    fn traces_are_off_without_an_endpoint_and_say_nothing() {
        assert_eq!(
            settings(&[
                ("OTEL_SERVICE_NAME", "x"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", " ")
            ]),
            Settings {
                export: false,
                refused: None
            }
        );
    }

    #[test]
    fn either_endpoint_turns_traces_on() {
        assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).export);
        assert!(
            settings(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )])
            .export
        );
        assert!(
            settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_TRACES_EXPORTER", "otlp"),
            ])
            .export
        );
    }

    #[test]
    fn refusals_name_the_variable_that_turned_traces_off() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        let why = |extra| settings(&[endpoint, extra]).refused.unwrap_or_default();
        assert!(why(("OTEL_SDK_DISABLED", "TRUE")).contains("OTEL_SDK_DISABLED"));
        assert!(why(("OTEL_TRACES_EXPORTER", "none")).contains("none"));
        assert!(why(("OTEL_TRACES_EXPORTER", "zipkin")).contains("only otlp"));
        let grpc = why(("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"));
        assert!(grpc.contains("\"grpc\"") && grpc.contains("4318"), "{grpc}");
        assert!(!settings(&[endpoint, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")]).export);
    }
}
