//! One `tracing` span per call, continuing the caller's W3C trace, plus call metrics.
//!
//! The span is at DEBUG level: `libs/telemetry` always passes it to the OpenTelemetry
//! exporter when one is configured, while the log output (INFO by default) leaves it out,
//! so a server that exports no traces pays next to nothing for it.
//!
//! Metric handles are resolved once per method and cached: looking labels up in the
//! Prometheus vectors on every call costs hashing and locking on the hot path. The cache
//! is bounded, because the method comes from the request: past [`MAX_METHODS`] distinct
//! paths, new ones are counted under the method label `other`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use opentelemetry::propagation::Extractor;
use pin_project_lite::pin_project;
use prometheus::{Histogram, IntCounter};
use slipway_telemetry::metrics::Metrics;
use tracing::Instrument as _;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::REQUEST_ID_HEADER;

/// Distinct method paths given their own metric labels.
pub const MAX_METHODS: usize = 512;

#[derive(Clone)]
pub struct TraceLayer {
    methods: Arc<MethodCache>,
}

impl TraceLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            methods: Arc::new(MethodCache {
                metrics,
                entries: RwLock::new(HashMap::new()),
            }),
        }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            methods: Arc::clone(&self.methods),
        }
    }
}

#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
    methods: Arc<MethodCache>,
}

struct MethodCache {
    metrics: Metrics,
    entries: RwLock<HashMap<Box<str>, Arc<MethodMetrics>>>,
}

/// The resolved metric handles of one method.
struct MethodMetrics {
    label: Box<str>,
    ok: IntCounter,
    latency: Histogram,
}

impl MethodCache {
    fn get(&self, path: &str) -> Arc<MethodMetrics> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = entries.get(path) {
            return Arc::clone(found);
        }
        drop(entries);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let key = if entries.len() < MAX_METHODS {
            path
        } else {
            "other"
        };
        let metrics = &self.metrics;
        let entry = entries.entry(key.into()).or_insert_with(|| {
            Arc::new(MethodMetrics {
                label: key.into(),
                ok: metrics.grpc_requests.with_label_values(&[key, "0"]),
                latency: metrics.grpc_latency.with_label_values(&[key]),
            })
        });
        Arc::clone(entry)
    }
}

/// Reads `traceparent`/`tracestate` out of request headers for the global propagator.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Trace<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = self.methods.get(request.uri().path());
        let span = tracing::debug_span!(
            "grpc",
            otel.kind = "server",
            rpc.method = %request.uri().path(),
            request_id = tracing::field::Empty,
            grpc.code = tracing::field::Empty,
        );
        // Nobody listening for the span: skip header reads and trace propagation.
        if !span.is_disabled() {
            if let Some(request_id) = request
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|value| value.to_str().ok())
            {
                span.record("request_id", request_id);
            }
            let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
                propagator.extract(&HeaderExtractor(request.headers()))
            });
            let _ = span.set_parent(parent);
        }
        TraceFuture {
            inner: self.inner.call(request).instrument(span),
            method,
            metrics: self.methods.metrics.clone(),
            started: Instant::now(),
        }
    }
}

pin_project! {
    pub struct TraceFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        method: Arc<MethodMetrics>,
        metrics: Metrics,
        started: Instant,
    }
}

impl<F, ResBody, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = ready!(this.inner.as_mut().poll(cx));
        // A failed call is answered "trailers-only", with grpc-status in the headers; a
        // call that succeeds (or streams) sends its status in trailers we do not wait for,
        // so a missing header is counted as OK.
        let code = match &result {
            Ok(response) => response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("0"),
            Err(_) => "transport",
        };
        if code == "0" {
            this.method.ok.inc();
        } else {
            this.metrics
                .grpc_requests
                .with_label_values(&[&*this.method.label, code])
                .inc();
            this.inner.span().record("grpc.code", code);
        }
        this.method
            .latency
            .observe(this.started.elapsed().as_secs_f64());
        Poll::Ready(result)
    }
}
