//! Prometheus metrics: one registry per process and the `/metrics` endpoint.

use std::future::Future;
use std::sync::Arc;

use prometheus::{Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Why a metric could not be registered (a name collision is a programming error caught by
/// the first test that starts the service).
#[derive(Debug, thiserror::Error)]
#[error("cannot register metric: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The metrics every gRPC server records, plus the registry services add their own to.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Completed gRPC calls by service, method and status code.
    pub grpc_requests: IntCounterVec,
    /// Time to the response headers of each gRPC call, in seconds.
    pub grpc_latency: HistogramVec,
}

impl Metrics {
    /// A fresh registry with the server metrics registered, labelled with `service`.
    pub fn new(service: &str) -> Result<Self, MetricsError> {
        let labels = std::collections::HashMap::from([("service".to_owned(), service.to_owned())]);
        let registry = Registry::new_custom(Some("slipway".to_owned()), Some(labels))?;
        let grpc_requests = IntCounterVec::new(
            Opts::new("grpc_requests_total", "gRPC calls handled"),
            &["method", "code"],
        )?;
        let grpc_latency = HistogramVec::new(
            HistogramOpts::new("grpc_request_duration_seconds", "gRPC call latency").buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["method"],
        )?;
        registry.register(Box::new(grpc_requests.clone()))?;
        registry.register(Box::new(grpc_latency.clone()))?;
        Ok(Self {
            registry,
            grpc_requests,
            grpc_latency,
        })
    }

    /// Where services register metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `register`
        // already refused; an empty page is the honest answer if it ever happens.
        if prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            buffer.clear();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve_metrics(
    metrics: Metrics,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = Arc::new(metrics);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_recorded_calls() {
        let metrics = Metrics::new("catalog").unwrap();
        metrics
            .grpc_requests
            .with_label_values(&["/slipway.catalog.v1.ProjectService/GetProject", "0"])
            .inc();
        let text = metrics.render();
        assert!(text.contains("slipway_grpc_requests_total"), "{text}");
        assert!(text.contains("service=\"catalog\""), "{text}");
        assert!(text.contains("GetProject"), "{text}");
    }
}
