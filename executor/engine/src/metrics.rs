//! Worker metrics (prometheus-client, OpenMetrics text) and the small HTTP server that serves
//! them with `/healthz` and `/readyz`. Labels are bounded: tool names come from the toolbox
//! (anything else is `unknown`), outcomes from a fixed list.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::queue::BreakerPhase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub tool: String,
    /// `succeeded`, `retry`, `failed`, `stale`, or a tool error label.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: String,
}

/// The worker's metrics, prefixed `crane_worker_`.
pub struct Metrics {
    registry: Registry,
    pub steps: Family<StepLabels, Counter>,
    pub duration: Family<ToolLabels, Histogram>,
    pub retries: Family<ToolLabels, Counter>,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker: Family<ToolLabels, Gauge>,
    pub in_flight: Gauge,
    /// Queue entries taken over from workers whose lease ran out.
    pub reclaims: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("crane_worker");
        let steps = Family::<StepLabels, Counter>::default();
        let duration = Family::<ToolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 20))
        });
        let retries = Family::<ToolLabels, Counter>::default();
        let breaker = Family::<ToolLabels, Gauge>::default();
        let in_flight = Gauge::default();
        registry.register(
            "steps",
            "Step attempts finished, by tool and outcome",
            steps.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Time a tool ran for one attempt",
            duration.clone(),
        );
        registry.register("retries", "Attempts that will be retried", retries.clone());
        registry.register(
            "breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            breaker.clone(),
        );
        registry.register(
            "steps_in_flight",
            "Steps this worker runs now",
            in_flight.clone(),
        );
        let reclaims = Counter::default();
        registry.register(
            "reclaims",
            "Queue entries taken over from workers whose lease ran out",
            reclaims.clone(),
        );
        Self {
            registry,
            steps,
            duration,
            retries,
            breaker,
            in_flight,
            reclaims,
        }
    }

    pub fn set_breaker(&self, tool: &str, phase: BreakerPhase) {
        let v = match phase {
            BreakerPhase::Closed => 0,
            BreakerPhase::HalfOpen => 1,
            BreakerPhase::Open => 2,
        };
        self.breaker
            .get_or_create(&ToolLabels {
                tool: tool.to_owned(),
            })
            .set(v);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_with_prefix_and_labels() {
        let m = Metrics::new();
        m.steps
            .get_or_create(&StepLabels {
                tool: "calculator".into(),
                outcome: "succeeded".into(),
            })
            .inc();
        m.set_breaker("wait", BreakerPhase::Open);
        let text = m.render();
        assert!(
            text.contains("crane_worker_steps_total{tool=\"calculator\",outcome=\"succeeded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("crane_worker_breaker_state{tool=\"wait\"} 2"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
