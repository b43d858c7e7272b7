//! The in-process bus of the embedded single-process mode (`slipway dev`).
//!
//! It exists so that one binary can run the whole platform without a NATS server, and it
//! is held to JetStream's semantics by the same contract tests: deduplication by message
//! id within the window, redelivery after the ack wait (and on nack), order per subject,
//! durable consumers whose handles share the work, work-queue removal on ack (with
//! JetStream's rule that work-queue consumers may not overlap), retention by age, bytes and
//! count, and ephemeral notices that only live subscribers see. It is not a production bus: nothing survives the
//! process, and there is no `max_ack_pending` back-pressure.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::{
    sync::{Notify, broadcast},
    time::Instant,
};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use crate::{
    bus::{
        AckHandle, Consumer, ConsumerSpec, DeliverFrom, Delivery, EventBus, LiveMessage,
        PublishAck, StoredMessage, StreamInfo, Subscription, validate_durable, validate_notice,
        validate_publish, validate_read,
    },
    error::EventsError,
    headers::Headers,
    read::{ReadFrom, Reader, StoredRecord},
    settings::{BusSettings, Discard, Retention, StreamKind, StreamSettings},
    subject,
};

/// How many live messages a slow subscriber may fall behind before it loses some.
const LIVE_BUFFER: usize = 4096;

/// The event bus in process memory. Cheap to clone: clones share one bus.
#[derive(Clone)]
pub struct InMemoryBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for InMemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryBus")
            .field("namespace", &self.inner.settings.namespace)
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: BusSettings,
    state: Mutex<State>,
    /// Woken on every change a waiting consumer might care about.
    changed: Notify,
    live: broadcast::Sender<LiveMessage>,
}

#[derive(Default)]
struct State {
    streams: BTreeMap<StreamKind, MemStream>,
    next_consumer_id: u64,
}

struct MemStream {
    kind: StreamKind,
    settings: StreamSettings,
    messages: BTreeMap<u64, Stored>,
    bytes: u64,
    last_seq: u64,
    /// message id → (sequence, when it was stored)
    dedup: HashMap<String, (u64, Instant)>,
    dedup_order: VecDeque<(Instant, String)>,
    consumers: BTreeMap<String, MemConsumer>,
}

struct Stored {
    subject: String,
    payload: Bytes,
    headers: Headers,
    message_id: String,
    stored_at: Instant,
    /// The wall-clock time of `stored_at`, which readers report.
    stored_time: SystemTime,
    size: u64,
}

struct MemConsumer {
    /// Distinguishes a re-created durable from the one a handle was bound to.
    id: u64,
    filter: String,
    ack_wait: Duration,
    max_deliver: Option<u32>,
    /// Next stream sequence to consider for a first delivery.
    cursor: u64,
    /// Delivered, not yet acknowledged: sequence → state.
    pending: BTreeMap<u64, Pending>,
}

struct Pending {
    deliveries: u64,
    /// When it may be delivered again (ack wait over, or nack delay over).
    due: Instant,
}

enum Step {
    Deliver(Delivery),
    Wait(Option<Instant>),
    Gone,
}

impl MemStream {
    fn new(kind: StreamKind, settings: StreamSettings) -> Self {
        Self {
            kind,
            settings,
            messages: BTreeMap::new(),
            bytes: 0,
            last_seq: 0,
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            consumers: BTreeMap::new(),
        }
    }

    fn remove(&mut self, seq: u64) {
        if let Some(stored) = self.messages.remove(&seq) {
            self.bytes = self.bytes.saturating_sub(stored.size);
        }
    }

    fn remove_oldest(&mut self) {
        if let Some((&seq, _)) = self.messages.first_key_value() {
            self.remove(seq);
        }
    }

    /// Applies the age limit and forgets message ids older than the duplicate window.
    fn expire(&mut self, now: Instant) {
        if let Some(max_age) = self.settings.max_age {
            while let Some((&seq, stored)) = self.messages.first_key_value() {
                if stored.stored_at + max_age > now {
                    break;
                }
                self.remove(seq);
            }
        }
        let window = self.settings.duplicate_window;
        while let Some((at, _)) = self.dedup_order.front() {
            if *at + window > now {
                break;
            }
            if let Some((at, id)) = self.dedup_order.pop_front()
                && self.dedup.get(&id).is_some_and(|(_, seen)| *seen == at)
            {
                self.dedup.remove(&id);
            }
        }
    }

    fn over_limits(&self, extra_messages: u64, extra_bytes: u64) -> bool {
        let count = self.messages.len() as u64 + extra_messages;
        self.settings.max_messages.is_some_and(|max| count > max)
            || self
                .settings
                .max_bytes
                .is_some_and(|max| self.bytes + extra_bytes > max)
    }
}

impl InMemoryBus {
    /// A new, empty bus. Streams appear with [`EventBus::ensure_streams`], as on NATS.
    pub fn new(settings: BusSettings) -> Result<Self, EventsError> {
        settings.validate()?;
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                live,
            }),
        })
    }

    fn stream_name(&self, kind: StreamKind) -> String {
        self.inner.settings.namespace.stream_name(kind.name())
    }
}

impl Inner {
    /// The state lock. A panic while holding it cannot leave the maps half-updated in a
    /// way that matters more than losing the bus, so a poisoned lock is simply reused.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn settle(&self, kind: StreamKind, durable: &str, id: u64, seq: u64, how: Settle) {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(stream) = state.streams.get_mut(&kind) else {
            return;
        };
        let Some(consumer) = stream.consumers.get_mut(durable).filter(|c| c.id == id) else {
            return;
        };
        match how {
            Settle::Ack => {
                if consumer.pending.remove(&seq).is_some()
                    && stream.kind.retention() == Retention::WorkQueue
                {
                    stream.remove(seq);
                }
            }
            Settle::Nack(delay) => {
                if let Some(pending) = consumer.pending.get_mut(&seq) {
                    pending.due = now + delay.unwrap_or(Duration::ZERO);
                }
            }
            Settle::Progress => {
                if let Some(pending) = consumer.pending.get_mut(&seq) {
                    pending.due = now + consumer.ack_wait;
                }
            }
        }
        drop(state);
        self.changed.notify_waiters();
    }

    fn step(self: &Arc<Self>, kind: StreamKind, durable: &str, id: u64) -> Step {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(stream) = state.streams.get_mut(&kind) else {
            return Step::Gone;
        };
        stream.expire(now);
        let MemStream {
            messages,
            consumers,
            last_seq,
            ..
        } = stream;
        let Some(consumer) = consumers.get_mut(durable).filter(|c| c.id == id) else {
            return Step::Gone;
        };

        // Redeliveries first, oldest first, as JetStream does.
        let mut earliest: Option<Instant> = None;
        let mut dropped = Vec::new();
        let mut redeliver = None;
        for (&seq, pending) in consumer.pending.iter_mut() {
            if !messages.contains_key(&seq) {
                dropped.push(seq);
                continue;
            }
            if pending.due <= now {
                if consumer
                    .max_deliver
                    .is_some_and(|max| pending.deliveries >= u64::from(max))
                {
                    dropped.push(seq);
                    continue;
                }
                pending.deliveries += 1;
                pending.due = now + consumer.ack_wait;
                redeliver = Some((seq, pending.deliveries));
                break;
            }
            earliest = Some(earliest.map_or(pending.due, |e| e.min(pending.due)));
        }
        for seq in dropped {
            consumer.pending.remove(&seq);
        }
        let found = redeliver.or_else(|| {
            let next = messages
                .range(consumer.cursor..)
                .find(|(_, m)| subject::matches(&consumer.filter, &m.subject))
                .map(|(&seq, _)| seq);
            match next {
                Some(seq) => {
                    consumer.cursor = seq + 1;
                    consumer.pending.insert(
                        seq,
                        Pending {
                            deliveries: 1,
                            due: now + consumer.ack_wait,
                        },
                    );
                    Some((seq, 1))
                }
                None => {
                    consumer.cursor = consumer.cursor.max(*last_seq + 1);
                    None
                }
            }
        });
        let Some((seq, attempt)) = found else {
            return Step::Wait(earliest);
        };
        let Some(stored) = messages.get(&seq) else {
            return Step::Wait(earliest);
        };
        Step::Deliver(Delivery {
            subject: stored.subject.clone(),
            payload: stored.payload.clone(),
            message_id: Some(stored.message_id.clone()),
            headers: stored.headers.clone(),
            attempt,
            stream_sequence: seq,
            acker: Box::new(MemAcker {
                inner: Arc::downgrade(self),
                kind,
                durable: durable.to_owned(),
                id,
                seq,
            }),
        })
    }

    async fn next_delivery(
        self: &Arc<Self>,
        kind: StreamKind,
        durable: &str,
        id: u64,
    ) -> Option<Delivery> {
        loop {
            // Register interest before looking, so a change between the look and the wait
            // still wakes us.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.step(kind, durable, id) {
                Step::Deliver(delivery) => return Some(delivery),
                Step::Gone => return None,
                Step::Wait(Some(due)) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                Step::Wait(None) => notified.await,
            }
        }
    }
}

enum Settle {
    Ack,
    Nack(Option<Duration>),
    Progress,
}

struct MemAcker {
    inner: std::sync::Weak<Inner>,
    kind: StreamKind,
    durable: String,
    id: u64,
    seq: u64,
}

impl MemAcker {
    fn settle(&self, how: Settle) -> Result<(), EventsError> {
        let inner = self.inner.upgrade().ok_or(EventsError::Closed)?;
        inner.settle(self.kind, &self.durable, self.id, self.seq, how);
        Ok(())
    }
}

#[async_trait]
impl AckHandle for MemAcker {
    async fn ack(&self) -> Result<(), EventsError> {
        self.settle(Settle::Ack)
    }

    async fn nack(&self, delay: Option<Duration>) -> Result<(), EventsError> {
        self.settle(Settle::Nack(delay))
    }

    async fn in_progress(&self) -> Result<(), EventsError> {
        self.settle(Settle::Progress)
    }
}

#[async_trait]
impl EventBus for InMemoryBus {
    fn settings(&self) -> &BusSettings {
        &self.inner.settings
    }

    async fn ensure_streams(&self) -> Result<(), EventsError> {
        let now = Instant::now();
        let mut state = self.inner.lock();
        for kind in StreamKind::ALL {
            let settings = self.inner.settings.stream(kind).clone();
            let stream = state
                .streams
                .entry(kind)
                .or_insert_with(|| MemStream::new(kind, settings.clone()));
            stream.settings = settings;
            stream.expire(now);
            while stream.over_limits(0, 0) {
                stream.remove_oldest();
            }
        }
        Ok(())
    }

    async fn stream_info(&self, kind: StreamKind) -> Result<StreamInfo, EventsError> {
        let name = self.stream_name(kind);
        let mut state = self.inner.lock();
        let stream = state
            .streams
            .get_mut(&kind)
            .ok_or_else(|| EventsError::StreamNotFound {
                stream: name.clone(),
            })?;
        stream.expire(Instant::now());
        Ok(StreamInfo {
            name,
            subjects: vec![self.inner.settings.namespace.subject(kind.subjects())],
            messages: stream.messages.len() as u64,
            bytes: stream.bytes,
            last_sequence: stream.last_seq,
            consumers: stream.consumers.len(),
            max_age: stream.settings.max_age,
            max_bytes: stream.settings.max_bytes,
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
        let max = self.inner.settings.max_payload;
        if payload.len() > max {
            return Err(EventsError::PayloadTooLarge {
                size: payload.len(),
                max,
            });
        }
        let no_stream = || EventsError::NoStream {
            subject: subject_name.to_owned(),
        };
        let kind = StreamKind::for_subject(subject_name).ok_or_else(no_stream)?;
        let live = LiveMessage {
            subject: subject_name.to_owned(),
            payload: payload.clone(),
            message_id: Some(message_id.to_owned()),
            headers: headers.clone(),
        };
        let now = Instant::now();
        let ack = {
            let mut state = self.inner.lock();
            let stream = state.streams.get_mut(&kind).ok_or_else(no_stream)?;
            stream.expire(now);
            if let Some(&(sequence, _)) = stream.dedup.get(message_id) {
                PublishAck {
                    stream: self.stream_name(kind),
                    sequence,
                    duplicate: true,
                }
            } else {
                let size = (subject_name.len()
                    + payload.len()
                    + message_id.len()
                    + headers
                        .iter()
                        .map(|(n, v)| n.len() + v.len())
                        .sum::<usize>()) as u64;
                if stream.settings.discard == Discard::New && stream.over_limits(1, size) {
                    return Err(EventsError::Publish {
                        subject: subject_name.to_owned(),
                        source: EventsError::msg("stream is full (maximum messages or bytes)"),
                    });
                }
                stream.last_seq += 1;
                let sequence = stream.last_seq;
                stream.messages.insert(
                    sequence,
                    Stored {
                        subject: subject_name.to_owned(),
                        payload,
                        headers,
                        message_id: message_id.to_owned(),
                        stored_at: now,
                        stored_time: SystemTime::now(),
                        size,
                    },
                );
                stream.bytes += size;
                stream.dedup.insert(message_id.to_owned(), (sequence, now));
                stream.dedup_order.push_back((now, message_id.to_owned()));
                while stream.over_limits(0, 0) && stream.messages.len() > 1 {
                    stream.remove_oldest();
                }
                PublishAck {
                    stream: self.stream_name(kind),
                    sequence,
                    duplicate: false,
                }
            }
        };
        self.inner.changed.notify_waiters();
        // Live subscribers see every accepted publish, duplicates included, as core NATS
        // subscribers do. No subscriber is not an error.
        let _ = self.inner.live.send(live);
        Ok(ack)
    }

    async fn consumer(&self, spec: ConsumerSpec) -> Result<Consumer, EventsError> {
        spec.validate()?;
        let stream_name = self.stream_name(spec.stream);
        let filter = spec.effective_filter().to_owned();
        let id = {
            let mut guard = self.inner.lock();
            let state = &mut *guard;
            let stream =
                state
                    .streams
                    .get_mut(&spec.stream)
                    .ok_or_else(|| EventsError::StreamNotFound {
                        stream: stream_name.clone(),
                    })?;
            if stream.kind.retention() == Retention::WorkQueue
                && stream
                    .consumers
                    .iter()
                    .any(|(name, c)| *name != spec.durable && subject::overlaps(&c.filter, &filter))
            {
                return Err(EventsError::Consumer {
                    stream: stream_name,
                    durable: spec.durable,
                    operation: "create or update",
                    source: EventsError::msg("filtered consumer not unique on workqueue stream"),
                });
            }
            match stream.consumers.get_mut(&spec.durable) {
                Some(existing) => {
                    existing.filter = filter;
                    existing.ack_wait = spec.ack_wait;
                    existing.max_deliver = spec.max_deliver;
                    existing.id
                }
                None => {
                    state.next_consumer_id += 1;
                    let id = state.next_consumer_id;
                    let cursor = match spec.deliver_from {
                        DeliverFrom::All => 1,
                        DeliverFrom::New => stream.last_seq + 1,
                    };
                    stream.consumers.insert(
                        spec.durable.clone(),
                        MemConsumer {
                            id,
                            filter,
                            ack_wait: spec.ack_wait,
                            max_deliver: spec.max_deliver,
                            cursor,
                            pending: BTreeMap::new(),
                        },
                    );
                    id
                }
            }
        };
        // A changed ack wait or filter may make something deliverable now.
        self.inner.changed.notify_waiters();
        let inner = Arc::clone(&self.inner);
        let kind = spec.stream;
        let durable = spec.durable.clone();
        let deliveries =
            futures::stream::unfold((inner, durable), move |(inner, durable)| async move {
                let delivery = inner.next_delivery(kind, &durable, id).await?;
                Some((Ok(delivery), (inner, durable)))
            });
        Ok(Consumer::new(spec.stream, spec.durable, deliveries.boxed()))
    }

    async fn delete_consumer(&self, kind: StreamKind, durable: &str) -> Result<(), EventsError> {
        validate_durable(durable)?;
        let stream_name = self.stream_name(kind);
        {
            let mut state = self.inner.lock();
            let stream =
                state
                    .streams
                    .get_mut(&kind)
                    .ok_or_else(|| EventsError::StreamNotFound {
                        stream: stream_name.clone(),
                    })?;
            if stream.consumers.remove(durable).is_none() {
                return Err(EventsError::ConsumerNotFound {
                    stream: stream_name,
                    durable: durable.to_owned(),
                });
            }
        }
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn stream_message(
        &self,
        kind: StreamKind,
        sequence: u64,
    ) -> Result<Option<StoredMessage>, EventsError> {
        let name = self.stream_name(kind);
        let mut state = self.inner.lock();
        let stream = state
            .streams
            .get_mut(&kind)
            .ok_or(EventsError::StreamNotFound { stream: name })?;
        stream.expire(Instant::now());
        Ok(stream.messages.get(&sequence).map(|stored| StoredMessage {
            subject: stored.subject.clone(),
            sequence,
            message_id: Some(stored.message_id.clone()),
        }))
    }

    async fn read(
        &self,
        kind: StreamKind,
        filter: &str,
        from: ReadFrom,
    ) -> Result<Reader, EventsError> {
        validate_read(kind, filter)?;
        let name = self.stream_name(kind);
        let (start, pending) = {
            let mut state = self.inner.lock();
            let stream = state
                .streams
                .get_mut(&kind)
                .ok_or(EventsError::StreamNotFound { stream: name })?;
            stream.expire(Instant::now());
            let start = match from {
                ReadFrom::Sequence(sequence) => sequence.max(1),
                ReadFrom::Time(time) => stream
                    .messages
                    .iter()
                    .find(|(_, stored)| stored.stored_time >= time)
                    .map_or(stream.last_seq + 1, |(&sequence, _)| sequence),
                ReadFrom::New => stream.last_seq + 1,
            };
            let any = stream
                .messages
                .range(start..)
                .any(|(_, stored)| subject::matches(filter, &stored.subject));
            (start, u64::from(any))
        };
        let filter = filter.to_owned();
        let records =
            futures::stream::unfold((Arc::clone(&self.inner), start), move |(inner, cursor)| {
                let filter = filter.clone();
                async move {
                    loop {
                        // Registered before looking, so a publish in between still wakes us.
                        let notified = inner.changed.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        let found = {
                            let mut state = inner.lock();
                            let stream = state.streams.get_mut(&kind)?;
                            stream.expire(Instant::now());
                            let mut matching = stream
                                .messages
                                .range(cursor..)
                                .filter(|(_, stored)| subject::matches(&filter, &stored.subject));
                            matching
                                .next()
                                .map(|(&sequence, stored)| StoredRecord {
                                    subject: stored.subject.clone(),
                                    sequence,
                                    time: stored.stored_time,
                                    payload: stored.payload.clone(),
                                    pending: 0,
                                })
                                .map(|mut record| {
                                    record.pending = u64::from(matching.next().is_some());
                                    record
                                })
                        };
                        match found {
                            Some(record) => {
                                let next = record.sequence + 1;
                                return Some((Ok(record), (Arc::clone(&inner), next)));
                            }
                            None => notified.await,
                        }
                    }
                }
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
        let max = self.inner.settings.max_payload;
        if payload.len() > max {
            return Err(EventsError::PayloadTooLarge {
                size: payload.len(),
                max,
            });
        }
        // Like core NATS: whoever listens now gets it, no one else ever will.
        let _ = self.inner.live.send(LiveMessage {
            subject: subject_name.to_owned(),
            payload,
            message_id: Some(message_id.to_owned()),
            headers,
        });
        Ok(())
    }

    async fn subscribe(&self, subject_name: &str) -> Result<Subscription, EventsError> {
        subject::validate(subject_name, true)?;
        let filter = subject_name.to_owned();
        let live = BroadcastStream::new(self.inner.live.subscribe()).filter_map(move |item| {
            let item = match item {
                Ok(message) if subject::matches(&filter, &message.subject) => Some(message),
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    tracing::warn!(missed, filter = %filter, "live subscriber fell behind");
                    None
                }
            };
            futures::future::ready(item)
        });
        Ok(Subscription::new(subject_name.to_owned(), live.boxed()))
    }
}
