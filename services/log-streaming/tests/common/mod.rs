//! The log-streaming test harness: identity and log-streaming in one server on a real
//! PostgreSQL database and a real NATS JetStream namespace, two organizations, tokens of
//! every role, and the two producers' halves a test plays itself: catalog announcing
//! environments on `EVENTS`, and `LogBatch`es published on `LOGS` as the relay does.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_events::{
    BusSettings, EventBus, EventBusExt as _, JetStreamBus, Namespace, StreamKind,
};
use slipway_identity::store::{
    self as id_store, BuiltinRole, NewApiToken, NewOrganization, RoleRef, SecretHash,
    Store as IdentityStore, UserClaims,
};
use slipway_kit::GrpcServer;
use slipway_log_streaming::{LogOptions, Logs};
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::events::v1 as ev;
use slipway_proto::logs::v1 as pb;
use slipway_proto::logs::v1::log_service_client::LogServiceClient;
use slipway_service::Platform;
use slipway_telemetry::metrics::Metrics;
use slipway_testkit::{Sandbox, TestDatabase, TestNats};
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestResult = Result<(), BoxError>;

/// One organization and an ADMIN token of it.
#[derive(Clone, Debug)]
pub struct Org {
    pub id: String,
    pub admin: String,
}

/// How to start the harness.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub logs: LogOptions,
    /// A short `LOGS` age limit, for retention tests.
    pub logs_max_age: Option<Duration>,
}

pub struct Harness {
    pub channel: Channel,
    pub identity: IdentityStore,
    pub bus: Arc<dyn EventBus>,
    pub logs: Logs,
    pub a: Org,
    pub b: Org,
    sandbox: Sandbox,
    _db: TestDatabase,
    _nats: TestNats,
}

impl Harness {
    pub async fn start() -> Result<Self, BoxError> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Result<Self, BoxError> {
        let db = TestDatabase::postgres().await?;
        let nats = TestNats::start().await?;
        let mut settings = BusSettings::default().with_namespace(Namespace::new(nats.namespace())?);
        if let Some(age) = options.logs_max_age {
            let logs = settings.stream_mut(StreamKind::Logs);
            logs.max_age = Some(age);
            logs.duplicate_window = age;
        }
        let bus = JetStreamBus::connect(nats.url(), settings).await?;
        bus.ensure_streams().await?;
        let bus: Arc<dyn EventBus> = Arc::new(bus);
        let conn = slipway_db::connect(db.url(), 8, Duration::from_secs(15)).await?;
        slipway_db::migrate::<id_store::Migrator>(&conn).await?;
        let identity = slipway_identity::Identity::new(
            conn.clone(),
            Arc::clone(&bus),
            slipway_identity::AuthOptions::default(),
        );
        let platform = Platform::shared::<slipway_log_streaming::store::Migrator>(
            conn.clone(),
            Arc::clone(&bus),
            identity.auth(),
        )
        .await?;
        let server = GrpcServer::new(
            slipway_config::ServerSettings::default(),
            Metrics::new("log-streaming-test")?,
        );
        let server = identity.mount(server);
        let (server, logs) = slipway_log_streaming::mount_with(server, &platform, options.logs);
        let mut sandbox = Sandbox::new();
        sandbox
            .start("logs", move |listener, shutdown| async move {
                server.serve(listener, shutdown).await?;
                Ok::<(), BoxError>(())
            })
            .await?;
        let channel = sandbox
            .channel("logs")
            .ok_or("log-streaming is not running")?;
        let identity = IdentityStore::new(conn);
        let a = org(&identity, "org-a").await?;
        let b = org(&identity, "org-b").await?;
        Ok(Self {
            channel,
            identity,
            bus,
            logs,
            a,
            b,
            sandbox,
            _db: db,
            _nats: nats,
        })
    }

    pub fn client(&self) -> LogServiceClient<Channel> {
        LogServiceClient::new(self.channel.clone())
    }

    pub async fn token(&self, org: &str, role: BuiltinRole) -> Result<String, BoxError> {
        token(&self.identity, org, RoleRef::Builtin(role)).await
    }

    /// Announces an environment of `org` as catalog does; returns its id.
    pub async fn environment(&self, org: &Org, mode: EnvironmentMode) -> Result<String, BoxError> {
        let environment_id = uuid::Uuid::now_v7().to_string();
        let project_id = uuid::Uuid::now_v7().to_string();
        let event = ev::Event {
            id: uuid::Uuid::now_v7().to_string(),
            time: Some(SystemTime::now().into()),
            organization_id: org.id.clone(),
            actor: None,
            r#type: "catalog.environment.created".into(),
            payload: Some(ev::event::Payload::EnvironmentCreated(
                ev::EnvironmentCreated {
                    environment_id: environment_id.clone(),
                    project_id,
                    name: "env".into(),
                    mode: mode.into(),
                    cluster_id: uuid::Uuid::now_v7().to_string(),
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

    /// Publishes `lines` as one `LogBatch` of `org`'s `environment_id`, as the relay does.
    pub async fn publish(
        &self,
        org: &Org,
        environment_id: &str,
        service_id: &str,
        lines: Vec<pb::LogLine>,
    ) -> TestResult {
        let batch = pb::LogBatch {
            id: uuid::Uuid::now_v7().to_string(),
            organization_id: org.id.clone(),
            environment_id: environment_id.to_owned(),
            service_id: service_id.to_owned(),
            producer: "test".into(),
            lines,
            dropped: None,
        };
        let token = if service_id.is_empty() {
            "_"
        } else {
            service_id
        };
        let subject = slipway_events::subject::logs(&org.id, environment_id, token)?;
        self.bus.publish_proto(&subject, &batch.id, &batch).await?;
        Ok(())
    }

    /// Publishes one plain runtime line per message.
    pub async fn say(&self, org: &Org, environment_id: &str, messages: &[&str]) -> TestResult {
        let lines = messages.iter().map(|message| line(message)).collect();
        self.publish(org, environment_id, "svc", lines).await
    }
}

/// A runtime stdout line of service `svc` with `message`, stamped now.
pub fn line(message: &str) -> pb::LogLine {
    pb::LogLine {
        time: Some(SystemTime::now().into()),
        service_id: "svc".into(),
        kind: pb::LogKind::Runtime.into(),
        instance: "svc-1".into(),
        stream: pb::LogStream::Stdout.into(),
        message: message.into(),
        ..Default::default()
    }
}

pub fn filter(environment_id: &str) -> pb::LogFilter {
    pb::LogFilter {
        environment_id: environment_id.to_owned(),
        ..Default::default()
    }
}

pub fn messages(lines: &[pb::LogLine]) -> Vec<String> {
    lines.iter().map(|line| line.message.clone()).collect()
}

/// Opens a tail.
pub async fn tail(
    client: &mut LogServiceClient<Channel>,
    token: &str,
    request: pb::TailLogsRequest,
) -> Result<Streaming<pb::TailLogsResponse>, Status> {
    Ok(client
        .tail_logs(with_token(request, token))
        .await?
        .into_inner())
}

/// Reads a tail up to its `caught_up` response: the backfill's lines.
pub async fn backfill(
    stream: &mut Streaming<pb::TailLogsResponse>,
) -> Result<Vec<pb::LogLine>, BoxError> {
    let mut lines = Vec::new();
    loop {
        let response = stream
            .message()
            .await?
            .ok_or("the tail ended during backfill")?;
        lines.extend(response.lines);
        if response.caught_up {
            return Ok(lines);
        }
    }
}

/// Reads live responses until `count` lines arrived (markers are returned beside them).
pub async fn live(
    stream: &mut Streaming<pb::TailLogsResponse>,
    count: usize,
) -> Result<(Vec<pb::LogLine>, Vec<pb::DroppedLines>), BoxError> {
    let mut lines = Vec::new();
    let mut dropped = Vec::new();
    while lines.len() < count {
        let response = stream.message().await?.ok_or("the tail ended")?;
        if response.caught_up {
            return Err("a second caught_up".into());
        }
        dropped.extend(response.dropped);
        lines.extend(response.lines);
    }
    Ok((lines, dropped))
}

async fn org(identity: &IdentityStore, name: &str) -> Result<Org, BoxError> {
    let user = identity
        .upsert_user(&UserClaims {
            issuer: "https://issuer.test".into(),
            subject: format!("owner-{name}"),
            email: format!("owner@{name}.example.com"),
            display_name: "owner".into(),
        })
        .await?;
    let (org, _) = identity
        .create_organization(
            &NewOrganization {
                name: name.into(),
                display_name: name.into(),
            },
            &user.id,
        )
        .await?;
    let admin = token(identity, &org.id, RoleRef::Builtin(BuiltinRole::Admin)).await?;
    Ok(Org { id: org.id, admin })
}

async fn token(identity: &IdentityStore, org: &str, role: RoleRef) -> Result<String, BoxError> {
    let secret = NewCredential::generate(CredentialKind::ApiToken)?;
    identity
        .create_api_token(&NewApiToken {
            organization_id: org.to_owned(),
            name: format!("t-{}", uuid::Uuid::now_v7().simple()),
            description: String::new(),
            role,
            secret_hash: SecretHash::from_digest(*secret.hash().as_bytes()),
            secret_hint: secret.hint().to_owned(),
            expire_time: None,
            creator: id_store::PrincipalRef {
                kind: id_store::PrincipalKind::User,
                id: "test".into(),
                display_name: "test".into(),
            },
        })
        .await?;
    Ok(secret.into_secret())
}

pub fn with_token<T>(message: T, secret: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {secret}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}
