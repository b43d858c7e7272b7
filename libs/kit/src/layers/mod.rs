//! The tower stack in front of every Slipway gRPC service.
//!
//! Order matters; from the outside in:
//!
//! 1. **Request id** ([`request_id`]) — first, so that everything below,
//!    including requests that are shed or time out, carries an `x-request-id` (the
//!    caller's, or a fresh one) and the response echoes it for support tickets.
//! 2. **gRPC-Web** ([`tonic_web::GrpcWebLayer`]) — translates browser calls into plain
//!    gRPC before anything inspects them, and translates every answer back, including the
//!    answers the inner layers make up themselves.
//! 3. **Trace** ([`trace::TraceLayer`]) — continues the caller's W3C trace context and
//!    records latency and status for every call, so shed and timed-out calls show up in
//!    metrics too.
//! 4. **Load shed** ([`shed::LoadShedLayer`]) — a process-wide concurrency limit that
//!    answers `UNAVAILABLE` at once when full, rather than queueing: queued requests only
//!    add latency, while an immediate refusal lets the client retry on another replica.
//! 5. **Timeout** ([`timeout::TimeoutLayer`]) — innermost, so it measures only the
//!    handler, not time spent in the layers above; answers `DEADLINE_EXCEEDED`.

pub mod request_id;
pub mod shed;
pub mod timeout;
pub mod trace;

use slipway_config::ServerSettings;
use slipway_telemetry::metrics::Metrics;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};

/// The header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The layer type [`stack`] builds, named so servers and benches can hold it.
pub type KitStack = Stack<
    timeout::TimeoutLayer,
    Stack<
        shed::LoadShedLayer,
        Stack<
            trace::TraceLayer,
            Stack<tonic_web::GrpcWebLayer, Stack<request_id::RequestIdLayer, Identity>>,
        >,
    >,
>;

/// Builds the stack described in the module docs.
pub fn stack(settings: &ServerSettings, metrics: Metrics) -> KitStack {
    ServiceBuilder::new()
        .layer(request_id::RequestIdLayer::new())
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(trace::TraceLayer::new(metrics))
        .layer(shed::LoadShedLayer::new(settings.concurrency_limit))
        .layer(timeout::TimeoutLayer::new(settings.request_timeout))
        .into_inner()
}
