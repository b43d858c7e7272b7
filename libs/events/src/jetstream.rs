//! The production bus: NATS JetStream through `async-nats`.

use std::{sync::Arc, time::Duration};

use async_nats::{
    HeaderMap, HeaderName, HeaderValue,
    jetstream::{
        self, AckKind, ErrorCode,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        context::{CreateStreamError, CreateStreamErrorKind, GetStreamErrorKind, PublishErrorKind},
        message::{Acker, PublishMessage},
        stream::{
            ConsumerErrorKind, DiscardPolicy, LastRawMessageErrorKind, RetentionPolicy, StorageType,
        },
    },
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::{
    bus::{
        AckHandle, Consumer, ConsumerSpec, DeliverFrom, Delivery, EventBus, LiveMessage,
        PublishAck, StoredMessage, StreamInfo, Subscription, validate_durable, validate_notice,
        validate_publish, validate_read,
    },
    error::{BoxError, EventsError},
    headers::Headers,
    namespace::Namespace,
    read::{ReadFrom, Reader, StoredRecord},
    settings::{BusSettings, Discard, Retention, Storage, StreamKind},
    subject,
};

/// How long one pull request waits on the server before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// How often an idle server confirms a pull request is alive; two missed ones surface
/// as a (transient) receive error, so a dead connection does not go unnoticed.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// How many times a stream creation the server failed to store is tried again, and the
/// first pause (doubled each time).
const STREAM_CREATE_RETRIES: u32 = 5;
const STREAM_CREATE_PAUSE: Duration = Duration::from_millis(50);

/// The event bus on NATS JetStream. Cheap to clone (one shared connection).
#[derive(Clone)]
pub struct JetStreamBus {
    client: async_nats::Client,
    js: jetstream::Context,
    settings: Arc<BusSettings>,
}

impl std::fmt::Debug for JetStreamBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBus")
            .field("namespace", &self.settings.namespace)
            .finish_non_exhaustive()
    }
}

impl JetStreamBus {
    /// Connects to NATS at `url` (e.g. `nats://127.0.0.1:4222`). Streams are not touched:
    /// call [`EventBus::ensure_streams`].
    pub async fn connect(url: &str, settings: BusSettings) -> Result<Self, EventsError> {
        settings.validate()?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(settings.request_timeout)
            .name("slipway")
            .connect(url)
            .await
            .map_err(|e| EventsError::Connect(Box::new(e)))?;
        Self::new(client, settings)
    }

    /// Uses an existing connection.
    pub fn new(client: async_nats::Client, settings: BusSettings) -> Result<Self, EventsError> {
        settings.validate()?;
        let js = jetstream::ContextBuilder::new()
            .timeout(settings.request_timeout)
            .build(client.clone());
        Ok(Self {
            client,
            js,
            settings: Arc::new(settings),
        })
    }

    /// The underlying connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn namespace(&self) -> &Namespace {
        &self.settings.namespace
    }

    fn stream_name(&self, kind: StreamKind) -> String {
        self.namespace().stream_name(kind.name())
    }

    /// Deletes this namespace's four streams (missing ones are fine). For tests and
    /// sandboxes: it destroys every message and consumer in them.
    pub async fn delete_streams(&self) -> Result<(), EventsError> {
        for kind in StreamKind::ALL {
            let name = self.stream_name(kind);
            if let Err(e) = self.js.delete_stream(&name).await {
                let not_found = matches!(
                    e.kind(),
                    jetstream::context::DeleteStreamErrorKind::JetStream(ref js)
                        if js.error_code() == ErrorCode::STREAM_NOT_FOUND
                );
                if !not_found {
                    return Err(EventsError::Stream {
                        stream: name,
                        operation: "delete",
                        source: Box::new(e),
                    });
                }
            }
        }
        Ok(())
    }

    /// The stream `name` with its current info; `StreamNotFound` when there is none.
    async fn get_stream(&self, name: &str) -> Result<jetstream::stream::Stream, EventsError> {
        self.js.get_stream(name).await.map_err(|e| match e.kind() {
            GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                EventsError::StreamNotFound {
                    stream: name.to_owned(),
                }
            }
            _ => EventsError::Stream {
                stream: name.to_owned(),
                operation: "info",
                source: boxed(e),
            },
        })
    }

    /// The retention of the existing stream `name`; `None` when it does not exist yet.
    async fn existing_retention(&self, name: &str) -> Result<Option<RetentionPolicy>, EventsError> {
        match self.get_stream(name).await {
            Ok(stream) => Ok(Some(stream.cached_info().config.retention)),
            Err(EventsError::StreamNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn stream_config(&self, kind: StreamKind) -> jetstream::stream::Config {
        let s = self.settings.stream(kind);
        let limit = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        jetstream::stream::Config {
            name: self.stream_name(kind),
            subjects: vec![self.namespace().subject(kind.subjects())],
            description: Some(format!("slipway {} stream", kind.name().to_lowercase())),
            retention: match kind.retention() {
                Retention::Limits => RetentionPolicy::Limits,
                Retention::WorkQueue => RetentionPolicy::WorkQueue,
            },
            max_age: s.max_age.unwrap_or(Duration::ZERO),
            max_bytes: limit(s.max_bytes),
            max_messages: limit(s.max_messages),
            duplicate_window: s.duplicate_window,
            storage: match s.storage {
                Storage::File => StorageType::File,
                Storage::Memory => StorageType::Memory,
            },
            discard: match s.discard {
                Discard::Old => DiscardPolicy::Old,
                Discard::New => DiscardPolicy::New,
            },
            num_replicas: s.replicas,
            ..Default::default()
        }
    }

    fn to_nats_headers(headers: &Headers, message_id: &str) -> Result<HeaderMap, EventsError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers.iter() {
            let invalid = |reason| EventsError::InvalidHeader {
                name: name.to_owned(),
                reason,
            };
            let name: HeaderName = name.parse().map_err(|_| invalid("not a valid name"))?;
            let value: HeaderValue = value.parse().map_err(|_| invalid("not a valid value"))?;
            map.append(name, value);
        }
        let id: HeaderValue = message_id
            .parse()
            .map_err(|_| EventsError::InvalidMessageId {
                id: message_id.to_owned(),
                reason: "not a valid header value",
            })?;
        map.insert(async_nats::header::NATS_MESSAGE_ID, id);
        Ok(map)
    }
}

/// Splits wire headers into the message id and the caller's headers (no `Nats-*`).
fn from_nats_headers(map: Option<&HeaderMap>) -> (Option<String>, Headers) {
    let mut headers = Headers::new();
    let mut message_id = None;
    for (name, values) in map.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        if name.eq_ignore_ascii_case(crate::headers::MSG_ID_HEADER) {
            message_id = values.first().map(|v| v.as_str().to_owned());
        } else if !name.to_ascii_lowercase().starts_with("nats-") {
            for value in values {
                headers.push_unchecked(name.to_owned(), value.as_str().to_owned());
            }
        }
    }
    (message_id, headers)
}

/// Whether the server failed to make a stream's storage, which is worth trying again: a
/// server removes an account's store directory when its last stream goes, and a stream
/// created at that moment fails (`STREAM_CREATE`, "could not create storage directory";
/// seen with nats-server 2.9 when streams come and go side by side, as tests make them).
fn store_not_ready(error: &CreateStreamError) -> bool {
    matches!(error.kind(), CreateStreamErrorKind::JetStream(server)
        if server.error_code() == ErrorCode::STREAM_CREATE)
}

fn retention_name(retention: RetentionPolicy) -> &'static str {
    match retention {
        RetentionPolicy::Limits => "limits",
        RetentionPolicy::Interest => "interest",
        RetentionPolicy::WorkQueue => "work-queue",
    }
}

fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> BoxError {
    Box::new(e)
}

#[async_trait]
impl EventBus for JetStreamBus {
    fn settings(&self) -> &BusSettings {
        &self.settings
    }

    async fn ensure_streams(&self) -> Result<(), EventsError> {
        for kind in StreamKind::ALL {
            let config = self.stream_config(kind);
            let name = config.name.clone();
            // JetStream refuses to change a stream's retention in place (and its refusal
            // says little): tell the operator what to do instead.
            if let Some(found) = self.existing_retention(&name).await?
                && found != config.retention
            {
                return Err(EventsError::StreamRetention {
                    stream: name,
                    found: retention_name(found).to_owned(),
                    wanted: kind.retention(),
                });
            }
            let mut attempt = 0;
            loop {
                match self.js.create_or_update_stream(config.clone()).await {
                    Ok(_) => break,
                    Err(error) if attempt < STREAM_CREATE_RETRIES && store_not_ready(&error) => {
                        attempt += 1;
                        tracing::debug!(stream = %name, %error, attempt, "stream store not ready; retrying");
                        tokio::time::sleep(STREAM_CREATE_PAUSE * 2u32.pow(attempt - 1)).await;
                    }
                    Err(error) => {
                        return Err(EventsError::Stream {
                            stream: name.clone(),
                            operation: "create or update",
                            source: boxed(error),
                        });
                    }
                }
            }
            tracing::debug!(stream = %name, "stream ensured");
        }
        Ok(())
    }

    async fn stream_info(&self, kind: StreamKind) -> Result<StreamInfo, EventsError> {
        let name = self.stream_name(kind);
        let stream = self.get_stream(&name).await?;
        let info = stream.cached_info();
        Ok(StreamInfo {
            name: info.config.name.clone(),
            subjects: info.config.subjects.clone(),
            messages: info.state.messages,
            bytes: info.state.bytes,
            last_sequence: info.state.last_sequence,
            consumers: info.state.consumer_count,
            max_age: Some(info.config.max_age).filter(|age| !age.is_zero()),
            max_bytes: u64::try_from(info.config.max_bytes).ok(),
        })
    }

    async fn publish(
        &self,
        subject_name: &str,
        message_id: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<PublishAck, EventsError> {
        validate_publish(subject_name, message_id, &headers)?;
        let max = self.client.server_info().max_payload;
        if max > 0 && payload.len() > max {
            return Err(EventsError::PayloadTooLarge {
                size: payload.len(),
                max,
            });
        }
        let map = Self::to_nats_headers(&headers, message_id)?;
        let physical = self.namespace().subject(subject_name);
        let fail = |kind: PublishErrorKind, source: BoxError| match kind {
            PublishErrorKind::StreamNotFound => EventsError::NoStream {
                subject: subject_name.to_owned(),
            },
            _ => EventsError::Publish {
                subject: subject_name.to_owned(),
                source,
            },
        };
        let pending = self
            .js
            .send_publish(
                physical,
                PublishMessage::build().payload(payload).headers(map),
            )
            .await
            .map_err(|e| fail(e.kind(), boxed(e)))?;
        let ack = pending.await.map_err(|e| fail(e.kind(), boxed(e)))?;
        Ok(PublishAck {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    async fn consumer(&self, spec: ConsumerSpec) -> Result<Consumer, EventsError> {
        spec.validate()?;
        let stream_name = self.stream_name(spec.stream);
        let config = pull::Config {
            durable_name: Some(spec.durable.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            max_deliver: spec.max_deliver.map_or(-1, i64::from),
            filter_subject: spec
                .filter_subject
                .as_deref()
                .map(|f| self.namespace().subject(f))
                .unwrap_or_default(),
            deliver_policy: match spec.deliver_from {
                DeliverFrom::All => DeliverPolicy::All,
                DeliverFrom::New => DeliverPolicy::New,
            },
            ..Default::default()
        };
        let consumer_error = |operation, source: BoxError| EventsError::Consumer {
            stream: stream_name.clone(),
            durable: spec.durable.clone(),
            operation,
            source,
        };
        let consumer: PullConsumer = self
            .js
            .create_consumer_on_stream(config, &stream_name)
            .await
            .map_err(|e| match e.kind() {
                ConsumerErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    EventsError::StreamNotFound {
                        stream: stream_name.clone(),
                    }
                }
                _ => consumer_error("create or update", boxed(e)),
            })?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(spec.prefetch)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|e| consumer_error("bind", boxed(e)))?;
        let namespace = self.namespace().clone();
        let durable = spec.durable.clone();
        let deliveries = messages.map(move |item| match item {
            Ok(message) => {
                to_delivery(&namespace, message).map_err(|source| EventsError::Receive {
                    durable: durable.clone(),
                    source,
                })
            }
            Err(e) => Err(EventsError::Receive {
                durable: durable.clone(),
                source: boxed(e),
            }),
        });
        Ok(Consumer::new(spec.stream, spec.durable, deliveries.boxed()))
    }

    async fn delete_consumer(&self, kind: StreamKind, durable: &str) -> Result<(), EventsError> {
        validate_durable(durable)?;
        let stream = self.stream_name(kind);
        self.js
            .delete_consumer_from_stream(durable, &stream)
            .await
            .map_err(|e| match e.kind() {
                ConsumerErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::CONSUMER_NOT_FOUND =>
                {
                    EventsError::ConsumerNotFound {
                        stream: stream.clone(),
                        durable: durable.to_owned(),
                    }
                }
                ConsumerErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    EventsError::StreamNotFound {
                        stream: stream.clone(),
                    }
                }
                _ => EventsError::Consumer {
                    stream: stream.clone(),
                    durable: durable.to_owned(),
                    operation: "delete",
                    source: boxed(e),
                },
            })?;
        Ok(())
    }

    async fn stream_message(
        &self,
        kind: StreamKind,
        sequence: u64,
    ) -> Result<Option<StoredMessage>, EventsError> {
        let name = self.stream_name(kind);
        let stream = self.get_stream(&name).await?;
        if sequence == 0 {
            return Ok(None);
        }
        match stream.get_raw_message(sequence).await {
            Ok(message) => {
                let (message_id, _) = from_nats_headers(Some(&message.headers));
                let subject = self
                    .namespace()
                    .strip(message.subject.as_str())
                    .unwrap_or(message.subject.as_str())
                    .to_owned();
                Ok(Some(StoredMessage {
                    subject,
                    sequence: message.sequence,
                    message_id,
                }))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(EventsError::Stream {
                stream: name,
                operation: "get message",
                source: boxed(e),
            }),
        }
    }

    async fn read(
        &self,
        kind: StreamKind,
        filter: &str,
        from: ReadFrom,
    ) -> Result<Reader, EventsError> {
        validate_read(kind, filter)?;
        let name = self.stream_name(kind);
        let stream = self.get_stream(&name).await?;
        let fail = |source: BoxError| EventsError::Stream {
            stream: name.clone(),
            operation: "read",
            source,
        };
        let deliver_policy = match from {
            ReadFrom::Sequence(sequence) => DeliverPolicy::ByStartSequence {
                start_sequence: sequence.max(1),
            },
            ReadFrom::Time(time) => {
                let nanos = time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| {
                        i128::try_from(since.as_nanos()).unwrap_or(i128::MAX)
                    });
                DeliverPolicy::ByStartTime {
                    start_time: async_nats::datetime::from_nanos(nanos).map_err(fail)?,
                }
            }
            ReadFrom::New => DeliverPolicy::New,
        };
        // An ordered consumer: ephemeral, flow-controlled, no acks, recreated by the
        // client on a gap, and cleaned up by the server once the reader is dropped.
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.namespace().subject(filter),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| fail(boxed(e)))?;
        let pending = consumer.cached_info().num_pending;
        let messages = consumer.messages().await.map_err(|e| fail(boxed(e)))?;
        let namespace = self.namespace().clone();
        let records = messages.map(move |item| {
            let fail = |source: BoxError| EventsError::Stream {
                stream: name.clone(),
                operation: "read",
                source,
            };
            let message = item.map_err(|e| fail(boxed(e)))?;
            to_record(&namespace, &message).map_err(fail)
        });
        Ok(Reader::new(pending, records.boxed()))
    }

    async fn notify(
        &self,
        subject_name: &str,
        message_id: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), EventsError> {
        validate_notice(subject_name, message_id, &headers)?;
        let max = self.client.server_info().max_payload;
        if max > 0 && payload.len() > max {
            return Err(EventsError::PayloadTooLarge {
                size: payload.len(),
                max,
            });
        }
        let map = Self::to_nats_headers(&headers, message_id)?;
        let physical = self.namespace().subject(subject_name);
        let fail = |source: BoxError| EventsError::Publish {
            subject: subject_name.to_owned(),
            source,
        };
        self.client
            .publish_with_headers(physical, map, payload)
            .await
            .map_err(|e| fail(boxed(e)))?;
        // On the server before we return, as a stored publish would be.
        self.client.flush().await.map_err(|e| fail(boxed(e)))?;
        Ok(())
    }

    async fn subscribe(&self, subject_name: &str) -> Result<Subscription, EventsError> {
        subject::validate(subject_name, true)?;
        let fail = |source: BoxError| EventsError::Subscribe {
            subject: subject_name.to_owned(),
            source,
        };
        let physical = self.namespace().subject(subject_name);
        let subscriber = self
            .client
            .subscribe(physical)
            .await
            .map_err(|e| fail(boxed(e)))?;
        // The server must know the subscription before we return, or a publish that
        // follows on another connection could pass it by.
        self.client.flush().await.map_err(|e| fail(boxed(e)))?;
        let namespace = self.namespace().clone();
        let live = subscriber.filter_map(move |message| {
            let item = namespace.strip(message.subject.as_str()).map(|logical| {
                let (message_id, headers) = from_nats_headers(message.headers.as_ref());
                LiveMessage {
                    subject: logical.to_owned(),
                    payload: message.payload.clone(),
                    message_id,
                    headers,
                }
            });
            futures::future::ready(item)
        });
        Ok(Subscription::new(subject_name.to_owned(), live.boxed()))
    }
}

fn to_delivery(namespace: &Namespace, message: jetstream::Message) -> Result<Delivery, BoxError> {
    let info = message.info()?;
    let attempt = u64::try_from(info.delivered).unwrap_or(1);
    let stream_sequence = info.stream_sequence;
    let (message, acker) = message.split();
    let subject = namespace
        .strip(message.subject.as_str())
        .unwrap_or(message.subject.as_str())
        .to_owned();
    let (message_id, headers) = from_nats_headers(message.headers.as_ref());
    Ok(Delivery {
        subject,
        payload: message.payload,
        message_id,
        headers,
        attempt,
        stream_sequence,
        acker: Box::new(JetStreamAcker(acker)),
    })
}

fn to_record(
    namespace: &Namespace,
    message: &jetstream::Message,
) -> Result<StoredRecord, BoxError> {
    let info = message.info()?;
    let nanos = u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0);
    Ok(StoredRecord {
        subject: namespace
            .strip(message.subject.as_str())
            .unwrap_or(message.subject.as_str())
            .to_owned(),
        sequence: info.stream_sequence,
        time: std::time::UNIX_EPOCH + Duration::from_nanos(nanos),
        payload: message.payload.clone(),
        pending: info.pending,
    })
}

struct JetStreamAcker(Acker);

#[async_trait]
impl AckHandle for JetStreamAcker {
    async fn ack(&self) -> Result<(), EventsError> {
        // A confirmed ack: once it returns, the server will not redeliver (and a work
        // queue has dropped the message), which callers rely on for "applied once".
        self.0.double_ack().await.map_err(EventsError::Ack)
    }

    async fn nack(&self, delay: Option<Duration>) -> Result<(), EventsError> {
        self.0
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(EventsError::Ack)
    }

    async fn in_progress(&self) -> Result<(), EventsError> {
        self.0
            .ack_with(AckKind::Progress)
            .await
            .map_err(EventsError::Ack)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn server_error(code: u64, err_code: u64, description: &str) -> CreateStreamError {
        let error: jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": code,
            "err_code": err_code,
            "description": description,
        }))
        .unwrap();
        CreateStreamError::new(CreateStreamErrorKind::JetStream(error))
    }

    #[test]
    fn only_a_failed_store_creation_is_tried_again() {
        let race = server_error(500, 10049, "error creating store for stream");
        assert!(store_not_ready(&race));
        let subjects_overlap = server_error(400, 10065, "subjects overlap with an existing stream");
        assert!(!store_not_ready(&subjects_overlap));
        assert!(!store_not_ready(&CreateStreamError::new(
            CreateStreamErrorKind::TimedOut
        )));
    }
}
