//! The one error type of the bus.
//!
//! Both implementations map their failures onto the same variants, so callers (and the
//! contract tests) can react to *what* went wrong — a stream that does not exist, a
//! consumer that is gone, a bad subject — without knowing which bus they run on.

/// A boxed source error: the underlying client's error, kept for `source()` chains.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong on the event bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// The namespace is not a single lowercase token (see [`crate::Namespace`]).
    #[error("invalid namespace {namespace:?}: {reason}")]
    InvalidNamespace {
        /// The rejected namespace.
        namespace: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A subject or filter is malformed (empty token, whitespace, misplaced wildcard…).
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        /// The rejected subject.
        subject: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A header name or value cannot travel in a NATS message, or is reserved.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The rejected header name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A durable consumer name is malformed.
    #[error("invalid consumer name {name:?}: {reason}")]
    InvalidConsumerName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The message id used for deduplication is empty or malformed.
    #[error("invalid message id {id:?}: {reason}")]
    InvalidMessageId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Settings that the server (or the in-memory bus) would refuse.
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    /// No stream captures this subject, so the message would be lost.
    #[error("no stream accepts subject {subject:?}")]
    NoStream {
        /// The logical subject that was published to.
        subject: String,
    },
    /// The stream does not exist (yet): call [`crate::EventBus::ensure_streams`] first.
    #[error("stream {stream} not found")]
    StreamNotFound {
        /// The (namespaced) stream name.
        stream: String,
    },
    /// The durable consumer does not exist.
    #[error("consumer {durable} not found on stream {stream}")]
    ConsumerNotFound {
        /// The (namespaced) stream name.
        stream: String,
        /// The durable name.
        durable: String,
    },
    /// The payload is larger than the bus accepts.
    #[error("payload of {size} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Connecting to NATS failed.
    #[error("connecting to nats failed")]
    Connect(#[source] BoxError),
    /// Creating, updating, inspecting or deleting a stream failed.
    #[error("stream {stream}: {operation} failed")]
    Stream {
        /// The (namespaced) stream name.
        stream: String,
        /// What was attempted.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The stream exists with another retention than the platform needs, and JetStream
    /// cannot change a stream's retention in place (an `AGENT` stream from before it became
    /// a work queue, for instance). The operator has to recreate it; see the message.
    #[error(
        "stream {stream} exists with {found} retention, but slipway needs {wanted} retention, \
         and NATS cannot change a stream's retention in place. Recreate it: let running \
         deployments and builds finish, stop every slipway service, delete the stream \
         (`nats stream rm {stream}`, which drops whatever it still holds), then start the \
         services again: they create it anew"
    )]
    StreamRetention {
        /// The (namespaced) stream name.
        stream: String,
        /// The retention the existing stream has (`limits`, `interest`, `work-queue`).
        found: String,
        /// The retention the platform needs.
        wanted: crate::Retention,
    },
    /// Creating, binding or deleting a durable consumer failed.
    #[error("consumer {durable} on stream {stream}: {operation} failed")]
    Consumer {
        /// The (namespaced) stream name.
        stream: String,
        /// The durable name.
        durable: String,
        /// What was attempted.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The stream refused or did not confirm a publish.
    #[error("publish to {subject:?} failed")]
    Publish {
        /// The logical subject.
        subject: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// Receiving the next delivery failed (the consumer may recover by itself).
    #[error("receiving from consumer {durable} failed")]
    Receive {
        /// The durable name.
        durable: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// Acknowledging (ack, nack, in-progress) a delivery failed.
    #[error("acknowledging a delivery failed")]
    Ack(#[source] BoxError),
    /// Subscribing to live messages failed.
    #[error("subscribing to {subject:?} failed")]
    Subscribe {
        /// The logical subject.
        subject: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// A payload is not the protobuf message the caller expected.
    #[error("decoding a protobuf payload failed")]
    Decode(#[from] prost::DecodeError),
    /// The bus was shut down.
    #[error("the event bus is closed")]
    Closed,
}

impl EventsError {
    /// Wraps a plain message as a [`BoxError`], for errors the in-memory bus makes up.
    pub(crate) fn msg(message: impl Into<String>) -> BoxError {
        message.into().into()
    }
}
