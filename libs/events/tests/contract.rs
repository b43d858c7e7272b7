//! The contract every [`EventBus`] honours, written once over `Arc<dyn EventBus>` and run
//! against both implementations: [`InMemoryBus`] and [`JetStreamBus`] on a real NATS
//! server (`SLIPWAY_TEST_NATS_URL`, default `nats://127.0.0.1:4222`).
//!
//! Each test gets a fresh [`Namespace`], so the JetStream runs go in parallel on one server
//! without seeing each other; their streams are deleted afterwards, pass or fail.
//!
//! Timing: consumers use a 500 ms ack wait. "Nothing arrives" is asserted over several ack
//! waits, so a redelivery that should not happen has every chance to show up.

// Tests report the unexpected by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashSet},
    future::Future,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures::FutureExt;
use slipway_events::{
    BusSettings, Consumer, ConsumerSpec, DeliverFrom, Delivery, EventBus, EventBusExt, EventsError,
    Headers, InMemoryBus, JetStreamBus, Namespace, ReadFrom, Storage, StreamKind, subject,
};
use tokio::time::{Instant, timeout};

const ACK_WAIT: Duration = Duration::from_millis(500);
/// Long enough for any redelivery that should not happen to happen.
const QUIET: Duration = Duration::from_millis(1500);
/// Generous bound for something that should arrive.
const SOON: Duration = Duration::from_secs(5);
/// LOGS keeps this many messages in the test settings.
const LOGS_MAX_MESSAGES: u64 = 20;
/// LOGS keeps messages this long in the test settings.
const LOGS_MAX_AGE: Duration = Duration::from_secs(2);

fn test_settings(namespace: Namespace) -> BusSettings {
    let mut settings = BusSettings::default().with_namespace(namespace);
    for kind in StreamKind::ALL {
        let stream = settings.stream_mut(kind);
        stream.storage = Storage::Memory;
        stream.max_bytes = Some(16 * 1024 * 1024);
        stream.max_age = Some(Duration::from_secs(600));
        stream.duplicate_window = Duration::from_secs(60);
    }
    settings.logs.max_messages = Some(LOGS_MAX_MESSAGES);
    settings.logs.max_age = Some(LOGS_MAX_AGE);
    settings.logs.duplicate_window = Duration::from_secs(1);
    settings
}

// ---------------------------------------------------------------------------------------
// Harness: one contract function, two buses.

struct Harness {
    bus: Arc<dyn EventBus>,
    jetstream: Option<JetStreamBus>,
}

fn memory_harness() -> Harness {
    let bus = InMemoryBus::new(test_settings(Namespace::unique("t").unwrap())).unwrap();
    Harness {
        bus: Arc::new(bus),
        jetstream: None,
    }
}

fn nats_url() -> String {
    std::env::var("SLIPWAY_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

async fn jetstream_harness() -> Harness {
    let settings = test_settings(Namespace::unique("t").unwrap());
    let bus = JetStreamBus::connect(&nats_url(), settings)
        .await
        .expect("a NATS server with JetStream at SLIPWAY_TEST_NATS_URL");
    Harness {
        bus: Arc::new(bus.clone()),
        jetstream: Some(bus),
    }
}

/// Runs one contract, then deletes the namespaced streams whatever the outcome.
async fn run<F, Fut>(harness: Harness, contract: F)
where
    F: FnOnce(Arc<dyn EventBus>) -> Fut,
    Fut: Future<Output = ()>,
{
    let outcome = AssertUnwindSafe(contract(harness.bus.clone()))
        .catch_unwind()
        .await;
    if let Some(bus) = harness.jetstream {
        bus.delete_streams().await.expect("deleting test streams");
        assert!(
            matches!(
                bus.stream_info(StreamKind::Events).await,
                Err(EventsError::StreamNotFound { .. })
            ),
            "test streams left behind"
        );
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::run(super::memory_harness(), super::$name).await;
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test]
                async fn $name() {
                    super::run(super::jetstream_harness().await, super::$name).await;
                }
            )*
        }
    };
}

contract!(
    streams_creation_is_idempotent,
    publish_and_consume,
    redelivery_after_no_ack,
    nack_redelivers,
    in_progress_extends_ack_wait,
    max_deliver_stops_redelivery,
    dedup_of_repeated_message_id,
    ordering_per_subject,
    shared_durable_delivers_each_message_once,
    durable_keeps_its_position,
    deliver_from_new,
    work_queue_removes_on_ack,
    agent_commands_leave_the_stream_once_acknowledged,
    notices_are_never_stored,
    deleting_a_consumer_ends_its_handles,
    logs_retention_by_count_and_age,
    live_subscription_follows_publishes,
    rejects_bad_input,
    typed_publish_carries_trace_context,
    readers_read_back_then_follow,
);

// ---------------------------------------------------------------------------------------
// Helpers.

async fn next_within(consumer: &mut Consumer, within: Duration) -> Delivery {
    match timeout(within, consumer.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(error))) => panic!("receive error: {error:?}"),
        Ok(None) => panic!("consumer ended"),
        Err(_) => panic!("no delivery within {within:?}"),
    }
}

async fn nothing_within(consumer: &mut Consumer, within: Duration) {
    match timeout(within, consumer.next()).await {
        Err(_) => {}
        Ok(Some(Ok(delivery))) => panic!("unexpected delivery: {delivery:?}"),
        Ok(Some(Err(error))) => panic!("receive error: {error:?}"),
        Ok(None) => panic!("consumer ended"),
    }
}

async fn publish(bus: &Arc<dyn EventBus>, subject: &str, id: &str, payload: &str) -> u64 {
    let ack = bus
        .publish(subject, id, Headers::new(), Bytes::from(payload.to_owned()))
        .await
        .unwrap();
    assert!(!ack.duplicate, "{id} reported as duplicate");
    ack.sequence
}

fn catalog_event() -> String {
    subject::event("catalog", "created").unwrap()
}

fn spec(stream: StreamKind, durable: &str) -> ConsumerSpec {
    ConsumerSpec::new(stream, durable).ack_wait(ACK_WAIT)
}

// ---------------------------------------------------------------------------------------
// The contract.

async fn streams_creation_is_idempotent(bus: Arc<dyn EventBus>) {
    let ns = bus.settings().namespace.clone();
    // Nothing exists before ensure_streams: a publish has nowhere to go.
    assert!(matches!(
        bus.stream_info(StreamKind::Events).await,
        Err(EventsError::StreamNotFound { .. })
    ));
    assert!(matches!(
        bus.publish(&catalog_event(), "early", Headers::new(), Bytes::new())
            .await,
        Err(EventsError::NoStream { .. })
    ));
    assert!(matches!(
        bus.consumer(spec(StreamKind::Events, "early")).await,
        Err(EventsError::StreamNotFound { .. })
    ));

    bus.ensure_streams().await.unwrap();
    let subjects = [
        catalog_event(),
        subject::BUILD_JOBS.to_owned(),
        subject::agent_commands("c1").unwrap(),
        subject::logs("o", "e", "s").unwrap(),
    ];
    for (i, subject) in subjects.iter().enumerate() {
        publish(&bus, subject, &format!("m{i}"), "x").await;
    }
    // Again, twice: nothing is lost, nothing changes.
    bus.ensure_streams().await.unwrap();
    bus.ensure_streams().await.unwrap();

    for kind in StreamKind::ALL {
        let info = bus.stream_info(kind).await.unwrap();
        assert_eq!(info.name, ns.stream_name(kind.name()));
        assert_eq!(info.subjects, vec![ns.subject(kind.subjects())]);
        assert_eq!(info.messages, 1, "{kind} lost or duplicated messages");
        assert_eq!(info.last_sequence, 1);
        assert_eq!(info.max_age, bus.settings().stream(kind).max_age);
        assert_eq!(info.max_bytes, bus.settings().stream(kind).max_bytes);
    }
    assert!(ns.stream_name("EVENTS").ends_with("_EVENTS"));
}

async fn publish_and_consume(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let mut headers = Headers::new();
    headers.insert("x-request", "r-1").unwrap();
    let ack = bus
        .publish(
            &catalog_event(),
            "evt-1",
            headers,
            Bytes::from_static(b"hello"),
        )
        .await
        .unwrap();
    assert!(!ack.duplicate);
    assert_eq!(ack.sequence, 1);
    assert_eq!(ack.stream, bus.settings().namespace.stream_name("EVENTS"));
    // Another domain, outside the consumer's filter.
    publish(
        &bus,
        &subject::event("identity", "created").unwrap(),
        "evt-2",
        "other",
    )
    .await;

    let mut consumer = bus
        .consumer(spec(StreamKind::Events, "catalog-reader").filter("slipway.events.catalog.>"))
        .await
        .unwrap();
    assert_eq!(consumer.durable(), "catalog-reader");
    let delivery = next_within(&mut consumer, SOON).await;
    assert_eq!(delivery.subject(), catalog_event());
    assert_eq!(delivery.payload().as_ref(), b"hello");
    assert_eq!(delivery.message_id(), Some("evt-1"));
    assert_eq!(delivery.headers().get("x-request"), Some("r-1"));
    assert_eq!(delivery.headers().get("Nats-Msg-Id"), None);
    assert_eq!(delivery.attempt(), 1);
    assert_eq!(delivery.stream_sequence(), 1);
    delivery.ack().await.unwrap();
    // Acknowledged: never again; filtered out: never at all.
    nothing_within(&mut consumer, QUIET).await;
}

async fn redelivery_after_no_ack(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    publish(&bus, &catalog_event(), "evt-1", "payload").await;
    let mut consumer = bus.consumer(spec(StreamKind::Events, "c")).await.unwrap();

    let first = next_within(&mut consumer, SOON).await;
    let delivered_at = Instant::now();
    assert_eq!(first.attempt(), 1);
    drop(first); // no ack

    let second = next_within(&mut consumer, SOON).await;
    let waited = delivered_at.elapsed();
    assert_eq!(second.message_id(), Some("evt-1"));
    assert_eq!(second.payload().as_ref(), b"payload");
    assert_eq!(second.attempt(), 2);
    assert!(
        waited >= ACK_WAIT.mul_f32(0.8),
        "redelivered after {waited:?}, before the ack wait"
    );
    second.ack().await.unwrap();
    nothing_within(&mut consumer, QUIET).await;
}

async fn nack_redelivers(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    publish(&bus, &catalog_event(), "evt-1", "x").await;
    let mut consumer = bus
        .consumer(spec(StreamKind::Events, "c").ack_wait(Duration::from_secs(5)))
        .await
        .unwrap();

    let first = next_within(&mut consumer, SOON).await;
    let nacked_at = Instant::now();
    first.nack(None).await.unwrap();
    let second = next_within(&mut consumer, SOON).await;
    assert_eq!(second.attempt(), 2);
    assert!(
        nacked_at.elapsed() < Duration::from_secs(4),
        "a nack must not wait for the ack wait"
    );

    let delay = Duration::from_millis(700);
    let nacked_at = Instant::now();
    second.nack(Some(delay)).await.unwrap();
    let third = next_within(&mut consumer, SOON).await;
    let waited = nacked_at.elapsed();
    assert_eq!(third.attempt(), 3);
    assert!(
        waited >= delay.mul_f32(0.8),
        "nack delay ignored: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(4),
        "waited for the ack wait instead"
    );
    third.ack().await.unwrap();
}

async fn in_progress_extends_ack_wait(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    publish(&bus, &catalog_event(), "evt-1", "x").await;
    let ack_wait = Duration::from_secs(1);
    let mut consumer = bus
        .consumer(spec(StreamKind::Events, "c").ack_wait(ack_wait))
        .await
        .unwrap();

    let delivery = next_within(&mut consumer, SOON).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    delivery.in_progress().await.unwrap();
    // Without the progress report it would come back 400 ms from now.
    nothing_within(&mut consumer, Duration::from_millis(800)).await;
    // Unsettled, it does come back once the renewed wait is over.
    let again = next_within(&mut consumer, SOON).await;
    assert_eq!(again.attempt(), 2);
    again.ack().await.unwrap();
}

async fn max_deliver_stops_redelivery(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    publish(&bus, &catalog_event(), "evt-1", "poison").await;
    let mut consumer = bus
        .consumer(spec(StreamKind::Events, "c").max_deliver(2))
        .await
        .unwrap();
    assert_eq!(next_within(&mut consumer, SOON).await.attempt(), 1);
    assert_eq!(next_within(&mut consumer, SOON).await.attempt(), 2);
    nothing_within(&mut consumer, QUIET).await;
}

async fn dedup_of_repeated_message_id(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let subject = catalog_event();
    let first = bus
        .publish(
            &subject,
            "same-id",
            Headers::new(),
            Bytes::from_static(b"first"),
        )
        .await
        .unwrap();
    let repeat = bus
        .publish(
            &subject,
            "same-id",
            Headers::new(),
            Bytes::from_static(b"second"),
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(repeat.duplicate, "a repeated message id must be reported");
    assert_eq!(repeat.sequence, first.sequence);
    let other = publish(&bus, &subject, "other-id", "third").await;
    assert_eq!(other, first.sequence + 1);
    assert_eq!(
        bus.stream_info(StreamKind::Events).await.unwrap().messages,
        2
    );

    let mut consumer = bus.consumer(spec(StreamKind::Events, "c")).await.unwrap();
    let a = next_within(&mut consumer, SOON).await;
    assert_eq!(
        (a.message_id(), a.payload().as_ref()),
        (Some("same-id"), &b"first"[..])
    );
    a.ack().await.unwrap();
    let b = next_within(&mut consumer, SOON).await;
    assert_eq!(b.message_id(), Some("other-id"));
    b.ack().await.unwrap();
    nothing_within(&mut consumer, QUIET).await;
}

async fn ordering_per_subject(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let clusters = ["a", "b", "c"];
    let per_subject: u32 = 10;
    for i in 0..per_subject {
        for cluster in clusters {
            let subject = subject::agent_commands(cluster).unwrap();
            publish(&bus, &subject, &format!("{cluster}-{i}"), &i.to_string()).await;
        }
    }
    let mut consumer = bus.consumer(spec(StreamKind::Agent, "c")).await.unwrap();
    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut last_sequence = 0;
    for _ in 0..per_subject as usize * clusters.len() {
        let delivery = next_within(&mut consumer, SOON).await;
        assert!(delivery.stream_sequence() > last_sequence);
        last_sequence = delivery.stream_sequence();
        let n: u32 = std::str::from_utf8(delivery.payload())
            .unwrap()
            .parse()
            .unwrap();
        seen.entry(delivery.subject().to_owned())
            .or_default()
            .push(n);
        delivery.ack().await.unwrap();
    }
    for cluster in clusters {
        let subject = subject::agent_commands(cluster).unwrap();
        assert_eq!(
            seen.get(&subject).unwrap(),
            &(0..per_subject).collect::<Vec<_>>(),
            "order broken on {subject}"
        );
    }
    nothing_within(&mut consumer, QUIET).await;
}

async fn shared_durable_delivers_each_message_once(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let count = 20;
    let durable = spec(StreamKind::Events, "workers");
    let mut one = bus.consumer(durable.clone()).await.unwrap();
    let mut two = bus.consumer(durable.clone()).await.unwrap();
    for i in 0..count {
        publish(&bus, &catalog_event(), &format!("evt-{i}"), "x").await;
    }

    let mut seen = HashSet::new();
    let mut per_handle = [0usize; 2];
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.len() < count {
        let (handle, item) = tokio::select! {
            item = one.next() => (0, item),
            item = two.next() => (1, item),
            _ = tokio::time::sleep_until(deadline) => panic!("only {} of {count} delivered", seen.len()),
        };
        let delivery = item.expect("consumer ended").expect("receive error");
        assert_eq!(
            delivery.attempt(),
            1,
            "a redelivery means the work was not shared cleanly"
        );
        let id = delivery.message_id().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "{id} delivered twice");
        per_handle[handle] += 1;
        delivery.ack().await.unwrap();
    }
    assert_eq!(per_handle.iter().sum::<usize>(), count);

    // Every message was settled once; no handle of the durable gets anything more.
    let mut three = bus.consumer(durable).await.unwrap();
    let quiet = async {
        tokio::select! {
            item = one.next() => panic!("unexpected on one: {item:?}"),
            item = two.next() => panic!("unexpected on two: {item:?}"),
            item = three.next() => panic!("unexpected on three: {item:?}"),
            _ = tokio::time::sleep(QUIET) => {}
        }
    };
    quiet.await;
}

async fn durable_keeps_its_position(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    publish(&bus, &catalog_event(), "evt-1", "1").await;
    {
        let mut consumer = bus.consumer(spec(StreamKind::Events, "d")).await.unwrap();
        next_within(&mut consumer, SOON).await.ack().await.unwrap();
    }
    publish(&bus, &catalog_event(), "evt-2", "2").await;
    // A new handle on the same durable resumes after what was acknowledged.
    let mut consumer = bus.consumer(spec(StreamKind::Events, "d")).await.unwrap();
    let delivery = next_within(&mut consumer, SOON).await;
    assert_eq!(delivery.message_id(), Some("evt-2"));
    delivery.ack().await.unwrap();
    // A different durable starts from the beginning.
    let mut fresh = bus.consumer(spec(StreamKind::Events, "e")).await.unwrap();
    assert_eq!(
        next_within(&mut fresh, SOON).await.message_id(),
        Some("evt-1")
    );
}

async fn deliver_from_new(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    publish(&bus, &catalog_event(), "old", "x").await;
    let mut consumer = bus
        .consumer(spec(StreamKind::Events, "n").deliver_from(DeliverFrom::New))
        .await
        .unwrap();
    publish(&bus, &catalog_event(), "new", "y").await;
    let delivery = next_within(&mut consumer, SOON).await;
    assert_eq!(delivery.message_id(), Some("new"));
    delivery.ack().await.unwrap();
    nothing_within(&mut consumer, QUIET).await;
}

async fn work_queue_removes_on_ack(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let job_1 = publish(&bus, subject::BUILD_JOBS, "job-1", "1").await;
    publish(&bus, subject::BUILD_JOBS, "job-2", "2").await;
    publish(&bus, subject::BUILD_RESULTS, "result-1", "r").await;
    assert_eq!(
        bus.stream_info(StreamKind::Builds).await.unwrap().messages,
        3
    );

    let jobs = spec(StreamKind::Builds, "builder").filter(subject::BUILD_JOBS);
    let mut builder = bus.consumer(jobs).await.unwrap();
    let job = next_within(&mut builder, SOON).await;
    assert_eq!(job.message_id(), Some("job-1"));
    job.ack().await.unwrap();
    let held = next_within(&mut builder, SOON).await;
    assert_eq!(held.message_id(), Some("job-2"));
    // Acknowledged work is gone from the queue; unacknowledged work stays.
    let deadline = Instant::now() + SOON;
    loop {
        let messages = bus.stream_info(StreamKind::Builds).await.unwrap().messages;
        if messages == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acked job not removed: {messages} left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        bus.stream_message(StreamKind::Builds, job_1).await.unwrap(),
        None
    );

    // A work queue hands each subject to one consumer only...
    let rival = bus
        .consumer(spec(StreamKind::Builds, "rival").filter(subject::BUILD_JOBS))
        .await;
    assert!(
        matches!(rival, Err(EventsError::Consumer { .. })),
        "overlapping work-queue consumer accepted: {rival:?}"
    );
    let results = bus
        .consumer(spec(StreamKind::Builds, "results").filter(subject::BUILD_RESULTS))
        .await;
    assert!(
        results.is_ok(),
        "non-overlapping consumer refused: {results:?}"
    );
    // ...and everything it holds: a consumer may not skip to new messages.
    let late = bus
        .consumer(
            spec(StreamKind::Builds, "late")
                .filter("slipway.build.other")
                .deliver_from(DeliverFrom::New),
        )
        .await;
    assert!(
        matches!(late, Err(EventsError::InvalidSettings(_))),
        "deliver-new consumer accepted on a work queue: {late:?}"
    );

    // The unacknowledged job survives its consumer.
    drop(held);
    drop(builder);
    bus.delete_consumer(StreamKind::Builds, "builder")
        .await
        .unwrap();
    assert!(matches!(
        bus.delete_consumer(StreamKind::Builds, "builder").await,
        Err(EventsError::ConsumerNotFound { .. })
    ));
    let mut next_builder = bus
        .consumer(spec(StreamKind::Builds, "builder-2").filter(subject::BUILD_JOBS))
        .await
        .unwrap();
    let job = next_within(&mut next_builder, SOON).await;
    assert_eq!(job.message_id(), Some("job-2"));
    assert_eq!(job.attempt(), 1);
    job.ack().await.unwrap();
    nothing_within(&mut next_builder, QUIET).await;
}

/// Commands carry decrypted secrets: the `AGENT` stream is a work queue, so a command is
/// gone from NATS once its cluster's consumer acknowledges it, while the reports of the
/// same stream go to a consumer of their own.
async fn agent_commands_leave_the_stream_once_acknowledged(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let commands = subject::agent_commands("c1").unwrap();
    let command = publish(&bus, &commands, "cmd-1", "secret").await;
    let report = publish(&bus, &subject::agent_reports("c1").unwrap(), "rep-1", "r").await;
    let stored = bus
        .stream_message(StreamKind::Agent, command)
        .await
        .unwrap()
        .expect("an unacknowledged command stays");
    assert_eq!(stored.subject, commands);
    assert_eq!(stored.sequence, command);
    assert_eq!(stored.message_id.as_deref(), Some("cmd-1"));

    // The orchestrator's two kinds of consumer: per cluster, and all reports.
    let mut gateway = bus
        .consumer(spec(StreamKind::Agent, "agent-commands-c1").filter(commands.clone()))
        .await
        .unwrap();
    let mut reports = bus
        .consumer(
            spec(StreamKind::Agent, "orchestrator-deployments-reports")
                .filter(subject::ALL_AGENT_REPORTS),
        )
        .await
        .unwrap();
    // A second handle of the per-cluster durable (another replica) is fine...
    let _replica = bus
        .consumer(spec(StreamKind::Agent, "agent-commands-c1").filter(commands.clone()))
        .await
        .unwrap();
    // ...another durable on the same commands is not.
    let rival = bus
        .consumer(spec(StreamKind::Agent, "eavesdropper").filter(commands.clone()))
        .await;
    assert!(
        matches!(rival, Err(EventsError::Consumer { .. })),
        "overlapping consumer accepted on AGENT: {rival:?}"
    );

    let delivery = next_within(&mut gateway, SOON).await;
    assert_eq!(delivery.message_id(), Some("cmd-1"));
    // Delivered but not acknowledged: still held, so it can come back.
    assert!(
        bus.stream_message(StreamKind::Agent, command)
            .await
            .unwrap()
            .is_some()
    );
    delivery.ack().await.unwrap();
    assert_eq!(
        bus.stream_message(StreamKind::Agent, command)
            .await
            .unwrap(),
        None,
        "an acknowledged command is still in the stream"
    );
    assert_eq!(
        bus.stream_info(StreamKind::Agent).await.unwrap().messages,
        1
    );

    let delivered = next_within(&mut reports, SOON).await;
    assert_eq!(delivered.stream_sequence(), report);
    delivered.ack().await.unwrap();
    assert_eq!(
        bus.stream_message(StreamKind::Agent, report).await.unwrap(),
        None
    );
    let info = bus.stream_info(StreamKind::Agent).await.unwrap();
    assert_eq!((info.messages, info.last_sequence), (0, 2));
    nothing_within(&mut gateway, QUIET).await;
}

/// Ephemeral notices reach live subscribers and nothing stores them.
async fn notices_are_never_stored(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let sessions = subject::agent_sessions("c1").unwrap();
    let mut live = bus
        .subscribe("slipway.notices.agent.*.sessions")
        .await
        .unwrap();
    let mut headers = Headers::new();
    headers.insert("x-replica", "r1").unwrap();
    bus.notify(
        &sessions,
        "session-1",
        headers,
        Bytes::from_static(b"hello"),
    )
    .await
    .unwrap();
    let notice = timeout(SOON, live.next())
        .await
        .expect("the notice in time")
        .expect("subscription ended");
    assert_eq!(notice.subject, sessions);
    assert_eq!(notice.payload.as_ref(), b"hello");
    assert_eq!(notice.message_id.as_deref(), Some("session-1"));
    assert_eq!(notice.headers.get("x-replica"), Some("r1"));
    for kind in StreamKind::ALL {
        let info = bus.stream_info(kind).await.unwrap();
        assert_eq!(
            (info.messages, info.last_sequence),
            (0, 0),
            "{kind} stored it"
        );
    }
    assert_eq!(
        bus.stream_message(StreamKind::Agent, 1).await.unwrap(),
        None
    );

    // A notice to a stream's subject would be stored: refused.
    let stored = bus
        .notify(
            &subject::agent_commands("c1").unwrap(),
            "n",
            Headers::new(),
            Bytes::new(),
        )
        .await;
    assert!(
        matches!(stored, Err(EventsError::InvalidSubject { .. })),
        "{stored:?}"
    );
    let too_big = Bytes::from(vec![0u8; 2 * 1024 * 1024]);
    assert!(matches!(
        bus.notify(&sessions, "big", Headers::new(), too_big).await,
        Err(EventsError::PayloadTooLarge { .. })
    ));
    assert_eq!(
        bus.stream_info(StreamKind::Agent).await.unwrap().messages,
        0
    );
}

async fn deleting_a_consumer_ends_its_handles(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let mut consumer = bus
        .consumer(spec(StreamKind::Events, "gone"))
        .await
        .unwrap();
    // Start pulling, so the handle is bound before the delete.
    nothing_within(&mut consumer, Duration::from_millis(200)).await;
    bus.delete_consumer(StreamKind::Events, "gone")
        .await
        .unwrap();
    let ended = timeout(SOON, async {
        loop {
            match consumer.next().await {
                None => break,
                Some(Err(_)) => continue,
                Some(Ok(delivery)) => panic!("delivery after delete: {delivery:?}"),
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "handle still running after its consumer was deleted"
    );
}

async fn logs_retention_by_count_and_age(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let subject = subject::logs("org", "env", "svc").unwrap();
    let total = LOGS_MAX_MESSAGES + 5;
    for i in 0..total {
        publish(&bus, &subject, &format!("line-{i}"), "log line").await;
    }
    let info = bus.stream_info(StreamKind::Logs).await.unwrap();
    assert_eq!(info.messages, LOGS_MAX_MESSAGES, "count limit not applied");
    assert_eq!(info.last_sequence, total);
    // The oldest went first.
    let mut reader = bus
        .consumer(spec(StreamKind::Logs, "reader"))
        .await
        .unwrap();
    let first = next_within(&mut reader, SOON).await;
    assert_eq!(first.message_id(), Some("line-5"));
    drop(reader);

    let deadline = Instant::now() + LOGS_MAX_AGE + SOON;
    loop {
        let messages = bus.stream_info(StreamKind::Logs).await.unwrap().messages;
        if messages == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "age limit not applied: {messages} left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn live_subscription_follows_publishes(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let mut live = bus.subscribe("slipway.logs.org1.>").await.unwrap();
    assert_eq!(live.subject(), "slipway.logs.org1.>");
    let mut headers = Headers::new();
    headers.insert("stream", "stdout").unwrap();
    for i in 0..5 {
        let subject = subject::logs("org1", "prod", &format!("svc{}", i % 2)).unwrap();
        bus.publish(
            &subject,
            &format!("l{i}"),
            headers.clone(),
            Bytes::from(format!("line {i}")),
        )
        .await
        .unwrap();
        bus.publish(
            &subject::logs("org2", "prod", "svc").unwrap(),
            &format!("o{i}"),
            Headers::new(),
            Bytes::from_static(b"other org"),
        )
        .await
        .unwrap();
    }
    for i in 0..5 {
        let message = timeout(SOON, live.next())
            .await
            .expect("live message in time")
            .expect("subscription ended");
        assert_eq!(
            message.subject,
            subject::logs("org1", "prod", &format!("svc{}", i % 2)).unwrap()
        );
        assert_eq!(message.payload, Bytes::from(format!("line {i}")));
        assert_eq!(
            message.message_id.as_deref(),
            Some(format!("l{i}").as_str())
        );
        assert_eq!(message.headers.get("stream"), Some("stdout"));
    }
    assert!(
        timeout(Duration::from_millis(300), live.next())
            .await
            .is_err(),
        "another organization's logs leaked into the subscription"
    );
}

async fn rejects_bad_input(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let publish = |subject: &'static str, id: &'static str, headers: Headers| {
        let bus = bus.clone();
        async move { bus.publish(subject, id, headers, Bytes::new()).await }
    };
    assert!(matches!(
        publish("slipway.nowhere.x", "id", Headers::new()).await,
        Err(EventsError::NoStream { .. })
    ));
    assert!(matches!(
        publish("slipway.events.*", "id", Headers::new()).await,
        Err(EventsError::InvalidSubject { .. })
    ));
    assert!(matches!(
        publish("slipway..events", "id", Headers::new()).await,
        Err(EventsError::InvalidSubject { .. })
    ));
    assert!(matches!(
        publish("slipway.events.a.b", "", Headers::new()).await,
        Err(EventsError::InvalidMessageId { .. })
    ));
    let mut reserved = Headers::new();
    reserved.insert("Nats-Expected-Stream", "X").unwrap();
    assert!(matches!(
        publish("slipway.events.a.b", "id", reserved).await,
        Err(EventsError::InvalidHeader { .. })
    ));
    let too_big = Bytes::from(vec![0u8; 2 * 1024 * 1024]);
    assert!(matches!(
        bus.publish("slipway.events.a.b", "big", Headers::new(), too_big)
            .await,
        Err(EventsError::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        bus.consumer(spec(StreamKind::Events, "bad.name")).await,
        Err(EventsError::InvalidConsumerName { .. })
    ));
    assert!(matches!(
        bus.consumer(spec(StreamKind::Events, "c").filter("slipway.logs.>"))
            .await,
        Err(EventsError::InvalidSubject { .. })
    ));
    assert!(matches!(
        bus.consumer(spec(StreamKind::Events, "c").ack_wait(Duration::ZERO))
            .await,
        Err(EventsError::InvalidSettings(_))
    ));
    assert!(matches!(
        bus.subscribe("slipway.>.x").await,
        Err(EventsError::InvalidSubject { .. })
    ));
    // Nothing above was stored.
    assert_eq!(
        bus.stream_info(StreamKind::Events).await.unwrap().messages,
        0
    );
}

/// A protobuf message as services exchange them.
#[derive(Clone, PartialEq, prost::Message)]
struct DeploymentQueued {
    #[prost(string, tag = "1")]
    deployment_id: String,
    #[prost(uint32, tag = "2")]
    services: u32,
}

async fn typed_publish_carries_trace_context(bus: Arc<dyn EventBus>) {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("contract")));
    // The test runs on one thread (current-thread runtime), so a thread default suffices.
    let _guard = tracing::subscriber::set_default(subscriber);

    bus.ensure_streams().await.unwrap();
    let event = DeploymentQueued {
        deployment_id: "dep-1".into(),
        services: 3,
    };
    let publisher = tracing::info_span!("deploy_environment");
    let publisher_trace = publisher.context().span().span_context().trace_id();
    assert_ne!(publisher_trace, opentelemetry::trace::TraceId::INVALID);
    let subject = subject::event("orchestrator", "deployment_queued").unwrap();
    let ack = {
        let _entered = publisher.enter();
        bus.publish_proto(&subject, "dep-1-queued", &event)
    }
    .await
    .unwrap();
    assert!(!ack.duplicate);

    let mut consumer = bus
        .consumer(spec(StreamKind::Events, "typed"))
        .await
        .unwrap();
    let delivery = next_within(&mut consumer, SOON).await;
    assert_eq!(delivery.message_id(), Some("dep-1-queued"));
    assert_eq!(delivery.decode::<DeploymentQueued>().unwrap(), event);
    assert!(delivery.headers().get("traceparent").is_some());
    let parent = delivery.trace_context();
    assert_eq!(parent.span().span_context().trace_id(), publisher_trace);

    let handler = tracing::info_span!("handle_deployment_queued");
    delivery.set_parent_of(&handler);
    assert_eq!(
        handler.context().span().span_context().trace_id(),
        publisher_trace,
        "the handler span must join the publisher's trace"
    );
    // A payload of another type is an error, not a panic.
    let garbage = bus
        .publish(
            &subject,
            "garbage",
            Headers::new(),
            Bytes::from_static(&[0xff, 0xff, 0xff]),
        )
        .await
        .unwrap();
    assert!(!garbage.duplicate);
    delivery.ack().await.unwrap();
    let bad = next_within(&mut consumer, SOON).await;
    assert!(matches!(
        bad.decode::<DeploymentQueued>(),
        Err(EventsError::Decode(_))
    ));
    bad.ack().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// JetStream only: a second process with other settings updates the streams in place.

#[tokio::test]
async fn jetstream_ensure_streams_updates_settings_in_place() {
    let namespace = Namespace::unique("t").unwrap();
    let first = JetStreamBus::connect(&nats_url(), test_settings(namespace.clone()))
        .await
        .unwrap();
    let outcome = AssertUnwindSafe(async {
        first.ensure_streams().await.unwrap();
        publish_one(&first).await;

        let mut changed = test_settings(namespace.clone());
        changed.events.max_age = Some(Duration::from_secs(1200));
        changed.events.max_bytes = Some(32 * 1024 * 1024);
        let second = JetStreamBus::connect(&nats_url(), changed).await.unwrap();
        second.ensure_streams().await.unwrap();
        let info = second.stream_info(StreamKind::Events).await.unwrap();
        assert_eq!(info.max_age, Some(Duration::from_secs(1200)));
        assert_eq!(info.max_bytes, Some(32 * 1024 * 1024));
        assert_eq!(info.messages, 1, "updating a stream must keep its messages");
    })
    .catch_unwind()
    .await;
    first.delete_streams().await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// An `AGENT` stream from before it became a work queue cannot be switched in place: the
/// bus says so, and what to do, instead of passing on JetStream's refusal.
#[tokio::test]
async fn jetstream_refuses_to_change_retention_in_place() {
    let namespace = Namespace::unique("t").unwrap();
    let bus = JetStreamBus::connect(&nats_url(), test_settings(namespace.clone()))
        .await
        .unwrap();
    let outcome = AssertUnwindSafe(async {
        let js = async_nats::jetstream::new(bus.client().clone());
        let name = namespace.stream_name("AGENT");
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![namespace.subject("slipway.agent.>")],
            retention: async_nats::jetstream::stream::RetentionPolicy::Limits,
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
        let error = bus.ensure_streams().await.unwrap_err();
        match &error {
            EventsError::StreamRetention {
                stream,
                found,
                wanted,
            } => {
                assert_eq!(stream, &name);
                assert_eq!(found, "limits");
                assert_eq!(*wanted, slipway_events::Retention::WorkQueue);
            }
            other => panic!("expected a retention error, got {other:?}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&format!("nats stream rm {name}")),
            "{message}"
        );
        // The stream was left alone.
        let info = bus.stream_info(StreamKind::Agent).await.unwrap();
        assert_eq!(info.name, name);
        // Once the operator removed it, the services create it right.
        js.delete_stream(&name).await.unwrap();
        bus.ensure_streams().await.unwrap();
        let agent = js.get_stream(&name).await.unwrap();
        assert_eq!(
            agent.cached_info().config.retention,
            async_nats::jetstream::stream::RetentionPolicy::WorkQueue
        );
    })
    .catch_unwind()
    .await;
    bus.delete_streams().await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn publish_one(bus: &JetStreamBus) {
    bus.publish(&catalog_event(), "one", Headers::new(), Bytes::new())
        .await
        .unwrap();
}

/// Readers walk a limits stream forward from a sequence, a time or the end, only over
/// their filter, say when they reach the end of what is stored, then follow new messages.
async fn readers_read_back_then_follow(bus: Arc<dyn EventBus>) {
    bus.ensure_streams().await.unwrap();
    let a = subject::event("catalog", "a").unwrap();
    let b = subject::event("catalog", "b").unwrap();
    let first = publish(&bus, &a, "r1", "a1").await;
    publish(&bus, &b, "r2", "b1").await;
    let third = publish(&bus, &a, "r3", "a2").await;
    let filter = "slipway.events.catalog.a";

    let mut reader = bus
        .read(StreamKind::Events, filter, ReadFrom::Sequence(1))
        .await
        .unwrap();
    assert!(reader.pending() > 0);
    let one = timeout(SOON, reader.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((one.sequence, one.subject.as_str()), (first, a.as_str()));
    assert_eq!(one.payload, Bytes::from("a1"));
    assert!(one.pending > 0);
    let two = timeout(SOON, reader.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((two.sequence, two.pending), (third, 0));
    assert!(one.time <= two.time);
    // Then it follows.
    let fourth = publish(&bus, &a, "r4", "a3").await;
    let three = timeout(SOON, reader.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(three.sequence, fourth);

    let mut from_third = bus
        .read(StreamKind::Events, filter, ReadFrom::Sequence(third))
        .await
        .unwrap();
    let got = timeout(SOON, from_third.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.sequence, third);

    let mut by_time = bus
        .read(StreamKind::Events, filter, ReadFrom::Time(two.time))
        .await
        .unwrap();
    let got = timeout(SOON, by_time.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.sequence, third);

    let mut new_only = bus
        .read(StreamKind::Events, filter, ReadFrom::New)
        .await
        .unwrap();
    assert_eq!(new_only.pending(), 0);
    assert!(timeout(QUIET, new_only.next()).await.is_err());
    let fifth = publish(&bus, &a, "r5", "a4").await;
    let got = timeout(SOON, new_only.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.sequence, fifth);

    // Work queues cannot be read back, nor a filter outside the stream.
    assert!(matches!(
        bus.read(StreamKind::Agent, "slipway.agent.>", ReadFrom::Sequence(1))
            .await,
        Err(EventsError::InvalidSubject { .. })
    ));
    assert!(matches!(
        bus.read(StreamKind::Events, "slipway.logs.>", ReadFrom::Sequence(1))
            .await,
        Err(EventsError::InvalidSubject { .. })
    ));
}

/// nats-server removes an account's store directory when its last file stream goes; a
/// stream created at that moment fails with `STREAM_CREATE` ("could not create storage
/// directory"). Namespaces that come and go side by side, as tests' do, hit that window
/// within a few dozen rounds on an otherwise idle server (seen with 2.9.10); the bus tries
/// such a creation again, so every round succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn jetstream_file_streams_come_and_go_side_by_side() {
    let rounds = (0..3).map(|_| {
        tokio::spawn(async {
            for _ in 0..30 {
                let namespace = Namespace::unique("churn").unwrap();
                let settings = BusSettings::default().with_namespace(namespace);
                let bus = JetStreamBus::connect(&nats_url(), settings).await.unwrap();
                let made = bus.ensure_streams().await;
                bus.delete_streams().await.unwrap();
                made.map_err(|error| format!("{error:?}"))?;
            }
            Ok::<(), String>(())
        })
    });
    for round in futures::future::join_all(rounds).await {
        round.unwrap().unwrap();
    }
}
