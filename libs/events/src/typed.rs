//! Typed publishing and consuming of protobuf messages, with W3C trace context.
//!
//! DESIGN.md: "Payloads are protobuf messages … Every publish sets `Nats-Msg-Id` (dedup)
//! and carries W3C trace context in headers." These helpers are that rule in code, so no
//! service re-implements it. The trace context is written and read with the *global*
//! OpenTelemetry text-map propagator: the telemetry library installs the W3C one at
//! start-up; until something does, the no-op propagator writes nothing and tracing simply
//! does not cross the bus.

use bytes::Bytes;
use futures::future::BoxFuture;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    bus::{Delivery, EventBus, LiveMessage, PublishAck},
    error::EventsError,
    headers::Headers,
};

/// Writes the current tracing span's OpenTelemetry context into `headers`.
pub fn inject_current_context(headers: &mut Headers) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, headers);
    });
}

/// Reads the OpenTelemetry context a publisher wrote into `headers` (an empty context when
/// there is none).
pub fn extract_context(headers: &Headers) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(headers))
}

/// Protobuf helpers for every [`EventBus`], `dyn EventBus` included.
///
/// The methods return boxed futures instead of being `async fn`s: the payload is encoded
/// and the trace context captured *at the call*, in the caller's span, and the future stays
/// `Send` for any bus.
pub trait EventBusExt: EventBus {
    /// Publishes `message` with `Nats-Msg-Id = message_id` and the current trace context.
    fn publish_proto<'a, M: prost::Message>(
        &'a self,
        subject: &'a str,
        message_id: &'a str,
        message: &M,
    ) -> BoxFuture<'a, Result<PublishAck, EventsError>> {
        self.publish_proto_with_headers(subject, message_id, Headers::new(), message)
    }

    /// As [`publish_proto`](Self::publish_proto), with extra headers of the caller's.
    fn publish_proto_with_headers<'a, M: prost::Message>(
        &'a self,
        subject: &'a str,
        message_id: &'a str,
        mut headers: Headers,
        message: &M,
    ) -> BoxFuture<'a, Result<PublishAck, EventsError>> {
        inject_current_context(&mut headers);
        let payload = Bytes::from(message.encode_to_vec());
        self.publish(subject, message_id, headers, payload)
    }

    /// Sends `message` as an ephemeral notice ([`EventBus::notify`]) with
    /// `Nats-Msg-Id = message_id` and the current trace context.
    fn notify_proto<'a, M: prost::Message>(
        &'a self,
        subject: &'a str,
        message_id: &'a str,
        message: &M,
    ) -> BoxFuture<'a, Result<(), EventsError>> {
        let mut headers = Headers::new();
        inject_current_context(&mut headers);
        let payload = Bytes::from(message.encode_to_vec());
        self.notify(subject, message_id, headers, payload)
    }
}

impl<T: EventBus + ?Sized> EventBusExt for T {}

impl Delivery {
    /// Decodes the payload as `M`.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, EventsError> {
        Ok(M::decode(self.payload.clone())?)
    }

    /// The publisher's trace context: make it the parent of the span handling this
    /// delivery, so one trace runs from the RPC that caused an event to its consumers.
    pub fn trace_context(&self) -> opentelemetry::Context {
        extract_context(&self.headers)
    }

    /// Makes the publisher's span the parent of `span` (typically a fresh handler span,
    /// before it is entered). Without a parent in the headers, `span` is left alone.
    pub fn set_parent_of(&self, span: &tracing::Span) {
        set_parent(span, self.trace_context());
    }
}

impl LiveMessage {
    /// Decodes the payload as `M`.
    pub fn decode<M: prost::Message + Default>(&self) -> Result<M, EventsError> {
        Ok(M::decode(self.payload.clone())?)
    }

    /// The publisher's trace context.
    pub fn trace_context(&self) -> opentelemetry::Context {
        extract_context(&self.headers)
    }
}

fn set_parent(span: &tracing::Span, context: opentelemetry::Context) {
    use opentelemetry::trace::TraceContextExt;
    if !context.span().span_context().is_valid() {
        return;
    }
    if let Err(error) = span.set_parent(context) {
        tracing::debug!(%error, "could not set the parent of a delivery span");
    }
}
