#![forbid(unsafe_code)]
//! Logs, traces and metrics for every Slipway process.
//!
//! [`init`] installs one `tracing` subscriber: human or JSON lines on stderr, plus an
//! OpenTelemetry layer exporting spans over OTLP/gRPC when an endpoint is configured. It
//! also installs the W3C trace-context propagator, which is what lets `libs/kit` and
//! `libs/events` continue a caller's trace across gRPC and NATS hops. [`metrics`] holds
//! the Prometheus registry served on `/metrics`.

pub mod metrics;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use slipway_config::{LogFormat, TelemetrySettings};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter `{filter}`: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps the trace pipeline alive; [`TelemetryGuard::shutdown`] flushes spans still
/// buffered so the last requests before a SIGTERM are not lost.
#[must_use = "dropping the guard without shutdown loses buffered spans"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes and stops span export. Safe to call when export is disabled.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(error) = provider.shutdown()
        {
            // The subscriber may be the only place left to report to.
            tracing::warn!(%error, "flushing traces at shutdown failed");
        }
    }
}

/// Installs the global subscriber and propagator for the process named `service_name`.
pub fn init(
    service_name: &'static str,
    settings: &TelemetrySettings,
) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let filter =
        EnvFilter::try_new(&settings.log_filter).map_err(|source| TelemetryError::Filter {
            filter: settings.log_filter.clone(),
            source,
        })?;
    let fmt_layer = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };

    let tracer_provider = if settings.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.otlp_endpoint.clone())
            .build()?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name)
            .build();
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        )
    };
    // Each output has its own filter: the log lines follow `log_filter`, while the trace
    // exporter also takes the per-call DEBUG spans of `slipway_kit`, which would be noise
    // (and a real cost) in the logs but are what a trace is made of.
    let otel_layer = tracer_provider.as_ref().map(|provider| {
        let spans = Targets::new()
            .with_default(Level::INFO)
            .with_target("slipway_kit", Level::DEBUG);
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            .with_filter(spans)
    });

    tracing_subscriber::registry()
        .with(fmt_layer.with_filter(filter))
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { tracer_provider })
}
