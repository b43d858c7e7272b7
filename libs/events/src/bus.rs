//! The [`EventBus`] trait and the types that cross it.
//!
//! Services hold an `Arc<dyn EventBus>` and never learn whether JetStream or the in-memory
//! bus is behind it. The trait therefore speaks in raw bytes and plain types only; typed
//! protobuf helpers live on top of it in [`crate::typed`], as generic methods cannot be part
//! of an object-safe trait.

use std::{fmt, pin::Pin, task::Poll, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};

use crate::{
    error::EventsError,
    headers::Headers,
    read::{ReadFrom, Reader},
    settings::{BusSettings, StreamKind},
    subject,
};

/// The stream's answer to a publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishAck {
    /// The (namespaced) stream that stored the message.
    pub stream: String,
    /// Its sequence in that stream (for a duplicate: the sequence of the original).
    pub sequence: u64,
    /// True when the message id was seen within the duplicate window: the message was
    /// *not* stored again. Not an error: a retried publish is expected to end this way.
    pub duplicate: bool,
}

/// Where a new durable consumer starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliverFrom {
    /// Every message still in the stream (JetStream's default). An existing durable keeps
    /// its position regardless.
    #[default]
    All,
    /// Only messages published after the consumer was created.
    New,
}

/// How to create or bind a durable pull consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The stream to consume.
    pub stream: StreamKind,
    /// The durable name: every handle bound with it shares its position and its work.
    pub durable: String,
    /// Logical filter subject (wildcards allowed); `None` = the whole stream.
    pub filter_subject: Option<String>,
    /// How long a delivery may stay unacknowledged before it is delivered again.
    pub ack_wait: Duration,
    /// How often a message is delivered at most; `None` = until acknowledged.
    pub max_deliver: Option<u32>,
    /// Where a newly created durable starts.
    pub deliver_from: DeliverFrom,
    /// How many deliveries one handle may hold before it asks for more. The ack-wait clock
    /// runs from the moment the server hands a message out, so a large prefetch lets
    /// buffered messages time out unprocessed and keeps work from the other handles of the
    /// durable; 1 (the default) is the safe choice, raise it for high-volume streams with
    /// fast handlers.
    pub prefetch: usize,
}

impl ConsumerSpec {
    /// A consumer of the whole stream with 30 s ack wait and unlimited redelivery.
    pub fn new(stream: StreamKind, durable: impl Into<String>) -> Self {
        Self {
            stream,
            durable: durable.into(),
            filter_subject: None,
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
            deliver_from: DeliverFrom::All,
            prefetch: 1,
        }
    }

    /// Only messages whose subject matches `filter` (logical, wildcards allowed).
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter_subject = Some(filter.into());
        self
    }

    /// Sets the ack wait.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Sets the maximum number of deliveries per message.
    pub fn max_deliver(mut self, max_deliver: u32) -> Self {
        self.max_deliver = Some(max_deliver);
        self
    }

    /// Sets where a new durable starts.
    pub fn deliver_from(mut self, from: DeliverFrom) -> Self {
        self.deliver_from = from;
        self
    }

    /// Sets the prefetch (see the field).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// The filter in effect: the given one, or the stream's whole subject space.
    pub fn effective_filter(&self) -> &str {
        self.filter_subject
            .as_deref()
            .unwrap_or_else(|| self.stream.subjects())
    }

    /// Rejects what JetStream would reject, the same way for both buses.
    pub(crate) fn validate(&self) -> Result<(), EventsError> {
        validate_durable(&self.durable)?;
        let filter = self.effective_filter();
        subject::validate(filter, true)?;
        if !subject::is_subset(filter, self.stream.subjects()) {
            return Err(EventsError::InvalidSubject {
                subject: filter.to_owned(),
                reason: "the filter lies outside the stream's subjects",
            });
        }
        if self.ack_wait.is_zero() {
            return Err(EventsError::InvalidSettings(
                "ack_wait must be positive".into(),
            ));
        }
        if self.max_deliver == Some(0) {
            return Err(EventsError::InvalidSettings(
                "max_deliver must be positive (use None for unlimited)".into(),
            ));
        }
        if self.deliver_from == DeliverFrom::New
            && self.stream.retention() == crate::settings::Retention::WorkQueue
        {
            // JetStream refuses it too: a work queue hands out everything it holds.
            return Err(EventsError::InvalidSettings(format!(
                "a consumer of the work-queue stream {} must deliver from the start",
                self.stream
            )));
        }
        if self.prefetch == 0 {
            return Err(EventsError::InvalidSettings(
                "prefetch must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Durable names become part of JetStream API subjects, so they must be one token.
pub(crate) fn validate_durable(name: &str) -> Result<(), EventsError> {
    let reject = |reason| EventsError::InvalidConsumerName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(reject("empty"));
    }
    if name.len() > 128 {
        return Err(reject("longer than 128 characters"));
    }
    if name
        .chars()
        .any(|c| !c.is_ascii_graphic() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(reject(
            "printable ascii without spaces, '.', '*', '>', '/' or '\\'",
        ));
    }
    Ok(())
}

/// Rejects what neither bus can carry, identically for both.
pub(crate) fn validate_publish(
    subject_name: &str,
    message_id: &str,
    headers: &Headers,
) -> Result<(), EventsError> {
    subject::validate(subject_name, false)?;
    if message_id.is_empty() {
        return Err(EventsError::InvalidMessageId {
            id: message_id.to_owned(),
            reason: "empty",
        });
    }
    if message_id
        .chars()
        .any(|c| c.is_control() || c == '\r' || c == '\n')
    {
        return Err(EventsError::InvalidMessageId {
            id: message_id.to_owned(),
            reason: "contains control characters",
        });
    }
    headers.check_not_reserved()
}

/// Settles one delivery with the server (or the in-memory bus).
#[async_trait]
pub(crate) trait AckHandle: Send + Sync {
    async fn ack(&self) -> Result<(), EventsError>;
    async fn nack(&self, delay: Option<Duration>) -> Result<(), EventsError>;
    async fn in_progress(&self) -> Result<(), EventsError>;
}

/// One delivery of one message to a durable consumer.
///
/// Acknowledgement is explicit: [`ack`](Self::ack) when the work is done (and only then);
/// [`nack`](Self::nack) to have it delivered again; nothing at all, and it is delivered
/// again once the consumer's ack wait has passed. Handlers must therefore be idempotent,
/// keyed on [`message_id`](Self::message_id).
pub struct Delivery {
    pub(crate) subject: String,
    pub(crate) payload: Bytes,
    pub(crate) message_id: Option<String>,
    pub(crate) headers: Headers,
    pub(crate) attempt: u64,
    pub(crate) stream_sequence: u64,
    pub(crate) acker: Box<dyn AckHandle>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("message_id", &self.message_id)
            .field("attempt", &self.attempt)
            .field("stream_sequence", &self.stream_sequence)
            .field("payload_len", &self.payload.len())
            .field("headers", &self.headers)
            .finish()
    }
}

impl Delivery {
    /// The logical subject the message was published to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The raw payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The publisher's deduplication id (`Nats-Msg-Id`); `None` only for messages that
    /// did not come through this crate.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// The publisher's headers (without the bus's own `Nats-*` headers).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Which delivery of this message this is: 1 the first time, 2 on the first
    /// redelivery, and so on.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// The message's sequence number in its stream (orders messages of one stream).
    pub fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    /// Done: the message is not delivered to this durable again (and, on a work-queue
    /// stream, removed). Waits for the server to confirm.
    pub async fn ack(&self) -> Result<(), EventsError> {
        self.acker.ack().await
    }

    /// Not done: deliver again after `delay` (at once with `None`), to any handle of the
    /// durable, unless `max_deliver` is reached.
    pub async fn nack(&self, delay: Option<Duration>) -> Result<(), EventsError> {
        self.acker.nack(delay).await
    }

    /// Still working: restarts the ack-wait clock, for handlers that outlast it
    /// (builds take minutes).
    pub async fn in_progress(&self) -> Result<(), EventsError> {
        self.acker.in_progress().await
    }
}

/// A handle on a durable pull consumer; several handles on one durable share its work.
///
/// Dropping the handle stops pulling; deliveries it held and did not settle come back
/// after the ack wait.
pub struct Consumer {
    stream: StreamKind,
    durable: String,
    inner: BoxStream<'static, Result<Delivery, EventsError>>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.stream)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(
        stream: StreamKind,
        durable: String,
        inner: BoxStream<'static, Result<Delivery, EventsError>>,
    ) -> Self {
        Self {
            stream,
            durable,
            inner,
        }
    }

    /// The next delivery, waiting as long as it takes. `Some(Err(_))` is usually
    /// transient (a missed heartbeat, a reconnect) and the consumer goes on; `None` means
    /// it has ended for good (deleted, or the bus is gone).
    pub async fn next(&mut self) -> Option<Result<Delivery, EventsError>> {
        self.inner.next().await
    }

    /// The stream consumed.
    pub fn stream(&self) -> StreamKind {
        self.stream
    }

    /// The durable name.
    pub fn durable(&self) -> &str {
        &self.durable
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery, EventsError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// A message seen by a live subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveMessage {
    /// The logical subject.
    pub subject: String,
    /// The raw payload.
    pub payload: Bytes,
    /// The publisher's deduplication id.
    pub message_id: Option<String>,
    /// The publisher's headers (without `Nats-*`).
    pub headers: Headers,
}

/// An ephemeral, at-most-once feed of messages as they are published: no history, no
/// acknowledgement, and a subscriber that falls behind loses messages. For followers such
/// as log tailing, which read history from a consumer and then follow live.
pub struct Subscription {
    subject: String,
    inner: BoxStream<'static, LiveMessage>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(subject: String, inner: BoxStream<'static, LiveMessage>) -> Self {
        Self { subject, inner }
    }

    /// The next live message; `None` when the bus is gone.
    pub async fn next(&mut self) -> Option<LiveMessage> {
        self.inner.next().await
    }

    /// The logical subject (or filter) subscribed to.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl Stream for Subscription {
    type Item = LiveMessage;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// The state of one stream, for operators and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The (namespaced) stream name.
    pub name: String,
    /// The (namespaced) subject patterns it captures.
    pub subjects: Vec<String>,
    /// Messages currently held.
    pub messages: u64,
    /// Bytes currently held (each bus counts its own overhead).
    pub bytes: u64,
    /// Sequence of the last message ever stored (0 when none was).
    pub last_sequence: u64,
    /// Durable consumers defined on it.
    pub consumers: usize,
    /// Configured age limit.
    pub max_age: Option<Duration>,
    /// Configured size limit.
    pub max_bytes: Option<u64>,
}

/// What a stream holds at one sequence: where it was published and under which id. The
/// payload is deliberately left out: `AGENT` commands carry secrets in clear, and this is
/// for operators and tests asking "is it still there?", not a second way to read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The logical subject it was published to.
    pub subject: String,
    /// Its sequence in the stream.
    pub sequence: u64,
    /// The publisher's deduplication id.
    pub message_id: Option<String>,
}

/// The platform's message bus: durable streams, deduplicated publishing, shared durable
/// pull consumers with explicit acknowledgement, live subscriptions and ephemeral notices.
///
/// All subjects are *logical* (`slipway.events.…`); the bus applies its
/// [`Namespace`](crate::Namespace). Object safe, to be shared as `Arc<dyn EventBus>`.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// The settings the bus runs with (namespace included).
    fn settings(&self) -> &BusSettings;

    /// Creates the four streams, or updates them to match the settings. Idempotent: every
    /// service may call it at start-up; messages already stored are kept.
    async fn ensure_streams(&self) -> Result<(), EventsError>;

    /// The current state of one stream.
    async fn stream_info(&self, stream: StreamKind) -> Result<StreamInfo, EventsError>;

    /// Stores `payload` on the stream capturing `subject`. A repeat of `message_id` within
    /// the stream's duplicate window is not stored again (`PublishAck::duplicate`), which
    /// makes retrying a publish safe. `headers` may not use `Nats-*` names.
    async fn publish(
        &self,
        subject: &str,
        message_id: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<PublishAck, EventsError>;

    /// Creates the durable consumer, or updates it to `spec`, and binds a new handle to it.
    async fn consumer(&self, spec: ConsumerSpec) -> Result<Consumer, EventsError>;

    /// Deletes a durable consumer; its handles end. `ConsumerNotFound` if there is none.
    async fn delete_consumer(&self, stream: StreamKind, durable: &str) -> Result<(), EventsError>;

    /// The message the stream holds at `sequence`, or `None` when it holds none there
    /// (never stored, acknowledged off a work queue, or pushed out by a limit).
    async fn stream_message(
        &self,
        stream: StreamKind,
        sequence: u64,
    ) -> Result<Option<StoredMessage>, EventsError>;

    /// Reads back the messages of a limits stream (`EVENTS`, `LOGS`) that match `filter`
    /// (wildcards allowed) from `from` on, oldest first, then follows new ones, without a
    /// durable consumer and without acknowledgements. Work queues cannot be read back
    /// (their messages belong to their consumer, and `AGENT`'s carry secrets), nor a filter
    /// outside the stream: `InvalidSubject`.
    async fn read(
        &self,
        stream: StreamKind,
        filter: &str,
        from: ReadFrom,
    ) -> Result<Reader, EventsError>;

    /// Follows messages published from now on to `subject` (wildcards allowed): stored
    /// publishes and [`notify`](Self::notify) notices alike.
    async fn subscribe(&self, subject: &str) -> Result<Subscription, EventsError>;

    /// Sends an ephemeral notice to the live subscribers of `subject` (core NATS): never
    /// stored, at most once, lost when no one listens. For announcements that matter only
    /// to whoever is connected right now (agent session hand-overs). `subject` must lie
    /// outside every stream's subjects (use `slipway.notices.…`, see
    /// [`subject::NOTICES`](crate::subject::NOTICES)): a stream would store the notice
    /// anyway, and a work-queue stream would keep it with no consumer to take it;
    /// `InvalidSubject` otherwise. `message_id` travels as `Nats-Msg-Id` for the receiver.
    async fn notify(
        &self,
        subject: &str,
        message_id: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), EventsError>;
}

/// Rejects a notice that either bus would store or could not carry, identically for both.
pub(crate) fn validate_notice(
    subject_name: &str,
    message_id: &str,
    headers: &Headers,
) -> Result<(), EventsError> {
    validate_publish(subject_name, message_id, headers)?;
    if StreamKind::for_subject(subject_name).is_some() {
        return Err(EventsError::InvalidSubject {
            subject: subject_name.to_owned(),
            reason: "a notice may not go to a stream's subject: the stream would store it",
        });
    }
    Ok(())
}

/// Rejects a read that either bus would refuse, identically for both.
pub(crate) fn validate_read(kind: StreamKind, filter: &str) -> Result<(), EventsError> {
    subject::validate(filter, true)?;
    if kind.retention() != crate::settings::Retention::Limits {
        return Err(EventsError::InvalidSubject {
            subject: filter.to_owned(),
            reason: "a work-queue stream cannot be read back",
        });
    }
    if !subject::is_subset(filter, kind.subjects()) {
        return Err(EventsError::InvalidSubject {
            subject: filter.to_owned(),
            reason: "the filter reaches outside the stream",
        });
    }
    Ok(())
}
