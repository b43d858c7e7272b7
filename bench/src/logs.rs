//! Logs on a real NATS JetStream (`slipway_testkit::TestNats`): log-streaming served with
//! identity on one kit server (its own runtime, SQLite for identity), fed as producers
//! feed it — `LogBatch`es published through the orchestrator relay's publish, each
//! awaited for its JetStream acknowledgement.
//!
//! - ingest: lines per second from the first publish until one live tail has received
//!   every line, beside the raw floor: the same encoded batches published to JetStream with
//!   `async-nats` (acknowledged one by one, as the relay does). Target: at least half.
//! - latency: one line published every [`EMIT_INTERVAL`], stamped with its emit time,
//!   received by 1 and by 100 live tails; p50/p99 of emit → received, beside the raw floor:
//!   the same publishes received by as many plain NATS subscribers. Target: p99 under 50 ms
//!   with 100 tails. "Emit" is the relay's publish: the agent's gRPC hop to the
//!   orchestrator is not in the figure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use hdrhistogram::Histogram;
use prost::Message as _;
use slipway_config::{NatsSettings, ServerSettings};
use slipway_events::{EventBus, EventBusExt as _};
use slipway_kit::GrpcServer;
use slipway_proto::logs::v1 as pb;
use slipway_proto::logs::v1::log_service_client::LogServiceClient;
use slipway_telemetry::metrics::Metrics;
use slipway_testkit::TestNats;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::catalog::authorized;
use crate::echo::{self, Measure};
use crate::report::Figure;

/// Lines per batch in the ingest measurement.
const BATCH_LINES: usize = 100;
/// Batches per ingest round.
const INGEST_BATCHES: usize = 500;
/// Ingest rounds (the median is reported).
const INGEST_ROUNDS: usize = 3;
/// One line every this long during the latency measurement.
const EMIT_INTERVAL: Duration = Duration::from_millis(10);
/// Tails (and floor subscribers) of the latency measurement.
const TAILERS: [usize; 2] = [1, 100];
/// Channels the tails share.
const CHANNELS: usize = 4;

pub async fn run(measure: &Measure) -> anyhow::Result<Vec<Figure>> {
    let nats = TestNats::start().await?;
    let settings = NatsSettings {
        url: nats.url().to_owned(),
        namespace: nats.namespace().to_owned(),
        ..NatsSettings::default()
    };
    let dir = std::env::temp_dir().join(format!("slipway-bench-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let runtime = echo::server_runtime("log-streaming")?;
    let bound = match echo::bind() {
        Ok(bound) => bound,
        Err(error) => {
            runtime.shutdown_background();
            return Err(error.into());
        }
    };
    let addr = bound.0;
    let setup = runtime
        .spawn(serve(dir.join("slipway.db"), settings.clone()))
        .await;
    let served = match setup.map_err(anyhow::Error::from) {
        Ok(Ok(served)) => served,
        Ok(Err(error)) | Err(error) => {
            runtime.shutdown_background();
            return Err(error);
        }
    };
    let Served {
        server,
        organization_id,
        token,
    } = served;
    let server = echo::start_on(runtime, bound, move |listener, shutdown| async move {
        let _ = server.serve(listener, shutdown).await;
    })?;
    let outcome = async {
        let bus = slipway_events::connect(&settings).await?;
        let client = async_nats::connect(nats.url()).await?;
        let bench = Bench {
            bus,
            js: async_nats::jetstream::new(client.clone()),
            client,
            namespace: nats.namespace().to_owned(),
            organization_id,
            bearer: format!("Bearer {token}").parse()?,
            channels: (0..CHANNELS)
                .map(|_| {
                    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                        .map(|endpoint| endpoint.connect_lazy())
                })
                .collect::<Result<_, _>>()?,
        };
        let mut figures = bench.ingest().await?;
        for tailers in TAILERS {
            figures.extend(bench.latency(measure, tailers).await?);
        }
        anyhow::Ok(figures)
    }
    .await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let figures = outcome?;
    for figure in &figures {
        figure.print();
    }
    Ok(figures)
}

struct Served {
    server: GrpcServer,
    organization_id: String,
    token: String,
}

/// Identity and log-streaming on a SQLite file and the real NATS.
async fn serve(db_path: std::path::PathBuf, settings: NatsSettings) -> anyhow::Result<Served> {
    let url = format!("sqlite://{}", db_path.display());
    let db = slipway_db::connect(&url, 4, Duration::from_secs(5)).await?;
    let bus = slipway_events::connect(&settings).await?;
    let (identity, platform) = slipway_identity::Identity::shared(
        db.clone(),
        bus.clone(),
        slipway_identity::AuthOptions::default(),
    )
    .await?;
    let bootstrapped = slipway_identity::bootstrap(&platform, "bench").await?;
    let logs = slipway_service::Platform::shared::<slipway_log_streaming::store::Migrator>(
        db,
        bus,
        identity.auth(),
    )
    .await?;
    let server = GrpcServer::new(ServerSettings::default(), Metrics::new("bench-logs")?);
    let server = slipway_log_streaming::mount(identity.mount(server), &logs);
    Ok(Served {
        server,
        organization_id: bootstrapped.organization_id,
        token: bootstrapped.secret,
    })
}

struct Bench {
    bus: Arc<dyn EventBus>,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    namespace: String,
    organization_id: String,
    bearer: AsciiMetadataValue,
    channels: Vec<Channel>,
}

impl Bench {
    /// A new environment, announced as catalog announces it.
    async fn environment(&self) -> anyhow::Result<String> {
        use slipway_proto::events::v1 as ev;
        let environment_id = uuid::Uuid::now_v7().to_string();
        let event = ev::Event {
            id: uuid::Uuid::now_v7().to_string(),
            time: Some(SystemTime::now().into()),
            organization_id: self.organization_id.clone(),
            actor: None,
            r#type: "catalog.environment.created".into(),
            payload: Some(ev::event::Payload::EnvironmentCreated(
                ev::EnvironmentCreated {
                    environment_id: environment_id.clone(),
                    project_id: uuid::Uuid::now_v7().to_string(),
                    name: "bench".into(),
                    mode: slipway_proto::common::v1::EnvironmentMode::Development.into(),
                    cluster_id: "bench".into(),
                },
            )),
        };
        self.bus
            .publish_proto(
                "slipway.events.catalog.environment.created",
                &event.id,
                &event,
            )
            .await?;
        Ok(environment_id)
    }

    fn subject(&self, environment_id: &str) -> String {
        format!("slipway.logs.{}.{environment_id}.svc", self.organization_id)
    }

    fn batch(&self, environment_id: &str, messages: Vec<String>) -> pb::LogBatch {
        let time = Some(SystemTime::now().into());
        pb::LogBatch {
            id: uuid::Uuid::now_v7().to_string(),
            organization_id: self.organization_id.clone(),
            environment_id: environment_id.to_owned(),
            service_id: "svc".into(),
            producer: "bench".into(),
            lines: messages
                .into_iter()
                .map(|message| pb::LogLine {
                    time,
                    organization_id: self.organization_id.clone(),
                    environment_id: environment_id.to_owned(),
                    service_id: "svc".into(),
                    kind: pb::LogKind::Runtime.into(),
                    instance: "svc-1".into(),
                    stream: pb::LogStream::Stdout.into(),
                    message,
                    ..Default::default()
                })
                .collect(),
            dropped: None,
        }
    }

    /// `count` live tails of `environment_id`, each past its `caught_up`.
    async fn tails(
        &self,
        environment_id: &str,
        count: usize,
    ) -> anyhow::Result<Vec<tonic::Streaming<pb::TailLogsResponse>>> {
        let mut tails = Vec::with_capacity(count);
        for index in 0..count {
            let mut client = LogServiceClient::new(self.channels[index % CHANNELS].clone());
            let request = pb::TailLogsRequest {
                filter: Some(pb::LogFilter {
                    environment_id: environment_id.to_owned(),
                    ..Default::default()
                }),
                backfill: None,
            };
            let mut stream = client
                .tail_logs(authorized(request, &self.bearer))
                .await?
                .into_inner();
            loop {
                let response = stream
                    .message()
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("a tail ended before catching up"))?;
                if response.caught_up {
                    break;
                }
            }
            tails.push(stream);
        }
        Ok(tails)
    }

    async fn ingest(&self) -> anyhow::Result<Vec<Figure>> {
        let lines = (INGEST_BATCHES * BATCH_LINES) as f64;
        let text = |i: usize| format!("{i:08} GET /api/items 200 3ms user-agent=bench");
        let mut raw_rates = Vec::new();
        let mut ingest_rates = Vec::new();
        for _ in 0..INGEST_ROUNDS {
            // Floor: the same batches, raw, on a subject no tail follows.
            let floor_env = uuid::Uuid::now_v7().to_string();
            let physical = format!("{}.{}", self.namespace, self.subject(&floor_env));
            let payloads: Vec<Vec<u8>> = (0..INGEST_BATCHES)
                .map(|b| {
                    let messages = (0..BATCH_LINES)
                        .map(|i| text(b * BATCH_LINES + i))
                        .collect();
                    self.batch(&floor_env, messages).encode_to_vec()
                })
                .collect();
            let started = Instant::now();
            for payload in payloads {
                self.js
                    .publish(physical.clone(), payload.into())
                    .await?
                    .await?;
            }
            raw_rates.push(lines / started.elapsed().as_secs_f64());

            let env = self.environment().await?;
            let mut tail = self.tails(&env, 1).await?.remove(0);
            let batches: Vec<pb::LogBatch> = (0..INGEST_BATCHES)
                .map(|b| {
                    let messages = (0..BATCH_LINES)
                        .map(|i| text(b * BATCH_LINES + i))
                        .collect();
                    self.batch(&env, messages)
                })
                .collect();
            let started = Instant::now();
            let bus = Arc::clone(&self.bus);
            let subject = self.subject(&env);
            let publisher = tokio::spawn(async move {
                for batch in batches {
                    slipway_orchestrator::agents::relay::publish(
                        &*bus, &subject, &batch.id, &batch,
                    )
                    .await?;
                }
                anyhow::Ok(())
            });
            let mut received = 0;
            while received < INGEST_BATCHES * BATCH_LINES {
                let response = tail
                    .message()
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the tail ended"))?;
                anyhow::ensure!(response.dropped.is_none(), "the ingest tail dropped lines");
                received += response.lines.len();
            }
            ingest_rates.push(lines / started.elapsed().as_secs_f64());
            publisher.await??;
        }
        let floor = Figure::new(
            "logs: raw JetStream publish",
            "ingest",
            median(raw_rates),
            "line/s",
        );
        let ingest = Figure::new(
            "logs: ingest to a live tail",
            "ingest",
            median(ingest_rates),
            "line/s",
        )
        .against(&floor);
        Ok(vec![floor, ingest])
    }

    async fn latency(&self, measure: &Measure, tailers: usize) -> anyhow::Result<Vec<Figure>> {
        let duration = measure.duration;
        // Floor: plain NATS subscribers on a subject the stream stores.
        let floor_env = uuid::Uuid::now_v7().to_string();
        let physical = format!("{}.{}", self.namespace, self.subject(&floor_env));
        let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
        let mut receivers = Vec::new();
        for _ in 0..tailers {
            let mut subscriber = self.client.subscribe(physical.clone()).await?;
            let histogram = Arc::clone(&histogram);
            receivers.push(tokio::spawn(async move {
                while let Some(message) = subscriber.next().await {
                    if let Ok(batch) = pb::LogBatch::decode(message.payload.as_ref()) {
                        record(&histogram, &batch.lines);
                    }
                }
            }));
        }
        self.client.flush().await?;
        let started = Instant::now();
        while started.elapsed() < duration {
            let batch = self.batch(&floor_env, vec![emit_stamp()]);
            self.js
                .publish(physical.clone(), batch.encode_to_vec().into())
                .await?
                .await?;
            tokio::time::sleep(EMIT_INTERVAL).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        receivers.iter().for_each(tokio::task::JoinHandle::abort);
        let floor = quantiles(
            &histogram,
            &format!("logs: raw NATS, {tailers} subscribers"),
        );

        let env = self.environment().await?;
        let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
        let mut receivers = Vec::new();
        for mut tail in self.tails(&env, tailers).await? {
            let histogram = Arc::clone(&histogram);
            receivers.push(tokio::spawn(async move {
                while let Ok(Some(response)) = tail.message().await {
                    record(&histogram, &response.lines);
                }
            }));
        }
        let subject = self.subject(&env);
        let started = Instant::now();
        while started.elapsed() < duration {
            let batch = self.batch(&env, vec![emit_stamp()]);
            slipway_orchestrator::agents::relay::publish(&*self.bus, &subject, &batch.id, &batch)
                .await?;
            tokio::time::sleep(EMIT_INTERVAL).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        receivers.iter().for_each(tokio::task::JoinHandle::abort);
        let measured = quantiles(&histogram, &format!("logs: emit to {tailers} tails"));
        Ok(vec![
            floor[0].clone(),
            floor[1].clone(),
            measured[0].clone().against(&floor[0]),
            measured[1].clone().against(&floor[1]),
        ])
    }
}

/// The emit time, as the line's text.
fn emit_stamp() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    nanos.to_string()
}

/// Records, per line, the microseconds since the time its text carries.
fn record(histogram: &Mutex<Histogram<u64>>, lines: &[pb::LogLine]) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let mut histogram = histogram
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for line in lines {
        if let Ok(emitted) = line.message.parse::<u128>() {
            let micros = u64::try_from(now.saturating_sub(emitted) / 1000).unwrap_or(u64::MAX);
            let _ = histogram.record(micros.max(1));
        }
    }
}

fn quantiles(histogram: &Mutex<Histogram<u64>>, scenario: &str) -> [Figure; 2] {
    let histogram = histogram
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    [
        Figure::new(
            scenario,
            "latency_p50",
            histogram.value_at_quantile(0.50) as f64,
            "us",
        ),
        Figure::new(
            scenario,
            "latency_p99",
            histogram.value_at_quantile(0.99) as f64,
            "us",
        ),
    ]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
