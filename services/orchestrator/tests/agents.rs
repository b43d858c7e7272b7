//! `AgentService.Connect` on real PostgreSQL and NATS JetStream: identity and catalog in
//! one in-process server (as catalog's own tests serve them), one or two orchestrator
//! replicas beside it, and a fake agent speaking the protocol through tonic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ControlPlane, org, with_token};
use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_events::{EventBus, EventBusExt as _, StreamKind, Subscription, subject};
use slipway_kit::GrpcServer;
use slipway_orchestrator::agents::{AgentSettings, Agents, mount_agents};
use slipway_proto::agent::v1 as pb;
use slipway_proto::agent::v1::agent_service_client::AgentServiceClient;
use slipway_proto::agent::v1::connect_request::Message as Up;
use slipway_proto::agent::v1::connect_response::Message as Down;
use slipway_proto::catalog::v1 as cpb;
use slipway_proto::catalog::v1::cluster_service_client::ClusterServiceClient;
use slipway_proto::logs::v1 as logs;
use slipway_service::Platform;
use slipway_telemetry::metrics::Metrics;
use slipway_testkit::{Sandbox, TestDatabase};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

type BoxError = Box<dyn std::error::Error>;
type TestResult = Result<(), BoxError>;

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

fn settings() -> AgentSettings {
    AgentSettings {
        heartbeat_interval: Duration::from_millis(500),
        hello_timeout: Duration::from_millis(700),
        // Well under PATIENCE: a command NATS handed to a session that was just ending
        // (its pull request still open on the server) comes back in time.
        command_ack_wait: Duration::from_secs(4),
        catalog_timeout: Duration::from_secs(5),
    }
}

struct Harness {
    /// The orchestrator's platform: a database of its own, as a real install may run it,
    /// with the control plane's bus and resolver.
    platform: Platform,
    org: String,
    admin: String,
    /// Orchestrator replicas, by name, each with its sessions handle.
    replicas: Vec<(String, Agents)>,
    orchestrators: Sandbox,
    _orchestrator_db: TestDatabase,
    /// Catalog (with identity).
    control_plane: ControlPlane,
}

impl Harness {
    async fn start() -> Result<Self, BoxError> {
        let control_plane = ControlPlane::start("catalog-test").await;
        let orchestrator_db = TestDatabase::postgres().await?;
        let orchestrator_conn =
            slipway_db::connect(orchestrator_db.url(), 8, Duration::from_secs(15)).await?;
        let platform = Platform::shared::<slipway_orchestrator::store::Migrator>(
            orchestrator_conn,
            Arc::clone(&control_plane.bus),
            control_plane.platform.auth.clone(),
        )
        .await?;
        let (org, admin) = org(&control_plane.identity(), "org-a").await;
        let mut harness = Self {
            platform,
            org,
            admin,
            replicas: Vec::new(),
            orchestrators: Sandbox::new(),
            _orchestrator_db: orchestrator_db,
            control_plane,
        };
        harness.replica("orchestrator-1").await?;
        Ok(harness)
    }

    /// Starts one more orchestrator replica named `name` on the same database and NATS.
    async fn replica(&mut self, name: &str) -> TestResult {
        let agents = Agents::new(settings());
        let platform = self.platform.clone();
        let catalog = self.control_plane.catalog.clone();
        let sessions = agents.clone();
        self.orchestrators
            .start(name, move |listener, shutdown| async move {
                let server = GrpcServer::new(
                    slipway_config::ServerSettings::default(),
                    Metrics::new("orchestrator-test")?,
                );
                let server = slipway_orchestrator::mount(server, &platform);
                let server = mount_agents(server, &platform, catalog, &sessions);
                let stopping = sessions.clone();
                server
                    .serve(listener, async move {
                        shutdown.await;
                        stopping.shutdown();
                    })
                    .await?;
                Ok::<(), BoxError>(())
            })
            .await?;
        self.replicas.push((name.to_owned(), agents));
        Ok(())
    }

    fn channel(&self, replica: &str) -> Channel {
        self.orchestrators.channel(replica).expect("replica")
    }

    fn bus(&self) -> &dyn EventBus {
        self.platform.bus.as_ref()
    }

    fn clusters(&self) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.control_plane.control.clone())
    }

    /// A self-managed cluster registered through catalog, and its agent token.
    async fn register(&self, name: &str) -> Result<(String, String), BoxError> {
        let registered = self
            .clusters()
            .register_cluster(with_token(
                cpb::RegisterClusterRequest {
                    organization_id: self.org.clone(),
                    cluster: Some(cpb::Cluster {
                        name: name.into(),
                        kind: cpb::ClusterKind::SelfManaged.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &self.admin,
            ))
            .await?
            .into_inner();
        let cluster = registered.cluster.ok_or("no cluster")?;
        Ok((cluster.id, registered.agent_token))
    }

    async fn cluster(&self, id: &str) -> Result<cpb::Cluster, BoxError> {
        Ok(self
            .clusters()
            .get_cluster(with_token(
                cpb::GetClusterRequest { id: id.into() },
                &self.admin,
            ))
            .await?
            .into_inner()
            .cluster
            .ok_or("no cluster")?)
    }

    /// Publishes a command for `cluster_id`; its sequence in the `AGENT` stream.
    async fn publish_command(&self, cluster_id: &str, command_id: &str) -> Result<u64, BoxError> {
        let command = pb::Command {
            command_id: command_id.into(),
            cluster_id: cluster_id.into(),
            organization_id: self.org.clone(),
            project_id: "p".into(),
            environment_id: "e".into(),
            deployment_id: "d".into(),
            namespace: "ns".into(),
            stage: pb::CommandStage::Applications.into(),
            operation: pb::CommandOperation::Apply.into(),
            create_time: Some(std::time::SystemTime::now().into()),
            ..Default::default()
        };
        let ack = self
            .bus()
            .publish_proto(&subject::agent_commands(cluster_id)?, command_id, &command)
            .await?;
        Ok(ack.sequence)
    }

    /// Waits until the gateway has acknowledged the command at `sequence` (and the work
    /// queue dropped it): closing the agent before then would hand it back.
    async fn wait_acknowledged(&self, sequence: u64) -> TestResult {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.agent_stream_holds(sequence).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("command {sequence} still in the AGENT stream").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Whether the `AGENT` stream still holds the message at `sequence`.
    async fn agent_stream_holds(&self, sequence: u64) -> Result<bool, BoxError> {
        Ok(self
            .bus()
            .stream_message(StreamKind::Agent, sequence)
            .await?
            .is_some())
    }

    async fn stop(self) -> TestResult {
        self.orchestrators.shutdown().await?;
        self.control_plane.sandbox.shutdown().await?;
        Ok(())
    }
}

fn hello(cluster_id: &str, applied: &[&str]) -> pb::Hello {
    pb::Hello {
        cluster_id: cluster_id.into(),
        agent_version: "1.2.3".into(),
        runtime: pb::RuntimeKind::Process.into(),
        runtime_version: "linux".into(),
        agent_instance_id: uuid::Uuid::now_v7().to_string(),
        applied_command_ids: applied.iter().map(|id| (*id).to_owned()).collect(),
        running_command_ids: Vec::new(),
    }
}

/// The agent end of one stream.
struct FakeAgent {
    up: mpsc::Sender<pb::ConnectRequest>,
    down: Streaming<pb::ConnectResponse>,
    welcome: pb::Welcome,
    heartbeats: Option<tokio::task::JoinHandle<()>>,
}

impl FakeAgent {
    /// Opens a stream with `first` as the first message; with `heartbeats`, a task sends
    /// one every 200 ms.
    async fn open(
        channel: Channel,
        token: &str,
        first: Up,
        heartbeats: bool,
    ) -> Result<Self, Status> {
        let (up, rx) = mpsc::channel(64);
        up.send(pb::ConnectRequest {
            message: Some(first),
        })
        .await
        .unwrap();
        let mut request = Request::new(ReceiverStream::new(rx));
        if let Ok(value) = format!("Bearer {token}").parse() {
            request.metadata_mut().insert("authorization", value);
        }
        let mut down = AgentServiceClient::new(channel)
            .connect(request)
            .await?
            .into_inner();
        let welcome = match down.message().await? {
            Some(pb::ConnectResponse {
                message: Some(Down::Welcome(welcome)),
            }) => welcome,
            other => panic!("expected welcome, got {other:?}"),
        };
        let heartbeats = heartbeats.then(|| {
            let up = up.clone();
            tokio::spawn(async move {
                loop {
                    let beat = pb::ConnectRequest {
                        message: Some(Up::Heartbeat(pb::Heartbeat {
                            time: Some(std::time::SystemTime::now().into()),
                            ping_id: String::new(),
                        })),
                    };
                    if up.send(beat).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        });
        Ok(Self {
            up,
            down,
            welcome,
            heartbeats,
        })
    }

    async fn connect(channel: Channel, token: &str, hello: pb::Hello) -> Result<Self, Status> {
        Self::open(channel, token, Up::Hello(hello), true).await
    }

    async fn send(&self, message: Up) {
        self.up
            .send(pb::ConnectRequest {
                message: Some(message),
            })
            .await
            .unwrap();
    }

    /// The next server message that is not a ping.
    async fn next(&mut self) -> Result<Down, Status> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.down.message())
                .await
                .map_err(|_| Status::deadline_exceeded("nothing from the server"))??;
            match message.and_then(|m| m.message) {
                Some(Down::Ping(_)) => continue,
                Some(other) => return Ok(other),
                None => return Err(Status::ok("the stream ended without status")),
            }
        }
    }

    async fn next_command(&mut self) -> pb::Command {
        match self.next().await {
            Ok(Down::Command(command)) => command,
            other => panic!("expected a command, got {other:?}"),
        }
    }

    /// The status the stream ends with (pings skipped, nothing else expected).
    async fn end_status(&mut self) -> Status {
        match self.next().await {
            Err(status) => status,
            Ok(other) => panic!("expected the stream to end, got {other:?}"),
        }
    }

    async fn ack(&self, command_id: &str) {
        self.send(Up::CommandAck(pb::CommandAck {
            command_id: command_id.into(),
            result: pb::CommandAckResult::Accepted.into(),
            message: String::new(),
        }))
        .await;
    }

    /// The command's final report: the agent finished it, so the gateway settles it.
    async fn finish(&self, command_id: &str) {
        self.send(Up::StepReport(pb::StepReport {
            command_id: command_id.into(),
            deployment_id: "d".into(),
            step: "command".into(),
            status: pb::StepStatus::Succeeded.into(),
            time: Some(std::time::SystemTime::now().into()),
            sequence: 1,
            ..Default::default()
        }))
        .await;
    }

    fn close(self) {
        if let Some(task) = self.heartbeats {
            task.abort();
        }
    }
}

async fn next_live(subscription: &mut Subscription) -> slipway_events::LiveMessage {
    tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("a message on the bus")
        .expect("the bus is alive")
}

fn connected(cluster: &cpb::Cluster) -> (cpb::ClusterConnectionState, String) {
    let connection = cluster.connection.clone().unwrap_or_default();
    (
        cpb::ClusterConnectionState::try_from(connection.state).unwrap(),
        connection.agent_version,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_flow_down_reports_and_logs_flow_up() -> TestResult {
    let h = Harness::start().await?;
    let (cluster_id, token) = h.register("prod").await?;
    let mut reports = h
        .bus()
        .subscribe(&subject::agent_reports(&cluster_id)?)
        .await?;
    let mut log_lines = h.bus().subscribe("slipway.logs.>").await?;

    // A command published while no agent is connected waits for it.
    h.publish_command(&cluster_id, "c1").await?;
    let channel = h.channel("orchestrator-1");
    let mut agent = FakeAgent::connect(channel.clone(), &token, hello(&cluster_id, &[])).await?;
    assert!(!agent.welcome.session_id.is_empty());
    assert_eq!(
        agent.welcome.heartbeat_interval,
        Some(prost_types::Duration {
            seconds: 0,
            nanos: 500_000_000
        })
    );
    assert!(agent.welcome.server_time.is_some());
    assert_eq!(
        connected(&h.cluster(&cluster_id).await?),
        (cpb::ClusterConnectionState::Connected, "1.2.3".to_owned())
    );

    let command = agent.next_command().await;
    assert_eq!(command.command_id, "c1");
    assert_eq!(command.cluster_id, cluster_id);
    agent.ack("c1").await;
    let report = next_live(&mut reports).await.decode::<pb::AgentReport>()?;
    assert_eq!(report.cluster_id, cluster_id);
    assert_eq!(report.session_id, agent.welcome.session_id);
    match report.report {
        Some(pb::agent_report::Report::CommandAck(ack)) => assert_eq!(ack.command_id, "c1"),
        other => panic!("expected the ack, got {other:?}"),
    }

    // A new command while connected arrives at once.
    h.publish_command(&cluster_id, "c2").await?;
    assert_eq!(agent.next_command().await.command_id, "c2");

    agent
        .send(Up::StepReport(pb::StepReport {
            command_id: "c1".into(),
            deployment_id: "d".into(),
            step: "command".into(),
            status: pb::StepStatus::Succeeded.into(),
            time: Some(std::time::SystemTime::now().into()),
            sequence: 1,
            ..Default::default()
        }))
        .await;
    let message = next_live(&mut reports).await;
    let report = message.decode::<pb::AgentReport>()?;
    assert_eq!(
        message.message_id.as_deref(),
        Some(report.report_id.as_str())
    );
    match report.report {
        Some(pb::agent_report::Report::StepReport(step)) => {
            assert_eq!(step.command_id, "c1");
            assert_eq!(step.status, i32::from(pb::StepStatus::Succeeded));
        }
        other => panic!("expected the step report, got {other:?}"),
    }

    agent
        .send(Up::LogChunk(pb::LogChunk {
            organization_id: h.org.clone(),
            project_id: "p1".into(),
            environment_id: "e1".into(),
            service_id: "s1".into(),
            deployment_id: "d1".into(),
            from_command: false,
            instance: "web-1".into(),
            stream: logs::LogStream::Stderr.into(),
            lines: vec![pb::LogChunkLine {
                time: Some(std::time::SystemTime::now().into()),
                text: "ERROR it broke".into(),
            }],
            dropped_count: 0,
        }))
        .await;
    let message = next_live(&mut log_lines).await;
    assert_eq!(message.subject, format!("slipway.logs.{}.e1.s1", h.org));
    let batch = message.decode::<logs::LogBatch>()?;
    assert_eq!(message.message_id.as_deref(), Some(batch.id.as_str()));
    assert_eq!(batch.producer, format!("agent/{cluster_id}"));
    assert_eq!(batch.lines.len(), 1);
    assert_eq!(batch.lines[0].message, "ERROR it broke");
    assert_eq!(batch.lines[0].kind, i32::from(logs::LogKind::Runtime));
    assert_eq!(batch.lines[0].severity, i32::from(logs::LogSeverity::Error));
    assert_eq!(batch.lines[0].stream, i32::from(logs::LogStream::Stderr));

    // A chunk of another organization is dropped: the next batch seen is the good one.
    agent
        .send(Up::LogChunk(pb::LogChunk {
            organization_id: "someone-else".into(),
            project_id: "p1".into(),
            environment_id: "e1".into(),
            service_id: "s1".into(),
            instance: "web-1".into(),
            lines: vec![pb::LogChunkLine {
                time: None,
                text: "foreign".into(),
            }],
            ..Default::default()
        }))
        .await;
    agent
        .send(Up::LogChunk(pb::LogChunk {
            organization_id: h.org.clone(),
            project_id: "p1".into(),
            environment_id: "e1".into(),
            service_id: String::new(),
            instance: "job-1".into(),
            from_command: true,
            lines: vec![pb::LogChunkLine {
                time: None,
                text: "mine".into(),
            }],
            ..Default::default()
        }))
        .await;
    let message = next_live(&mut log_lines).await;
    assert_eq!(message.subject, format!("slipway.logs.{}.e1._", h.org));
    let batch = message.decode::<logs::LogBatch>()?;
    assert_eq!(batch.lines[0].message, "mine");
    assert_eq!(batch.lines[0].kind, i32::from(logs::LogKind::Deployment));

    // c2 was never acknowledged: after a reconnect it comes again; c1 does not, and c3,
    // which the agent says it applied already, is skipped.
    agent.close();
    h.publish_command(&cluster_id, "c3").await?;
    let mut agent =
        FakeAgent::connect(channel.clone(), &token, hello(&cluster_id, &["c3"])).await?;
    let again = agent.next_command().await;
    assert_eq!(again.command_id, "c2");
    let c4 = h.publish_command(&cluster_id, "c4").await?;
    assert_eq!(agent.next_command().await.command_id, "c4");
    agent.ack("c2").await;
    agent.ack("c4").await;
    // Both acks are relayed (reports arrive in order on one subject).
    for expected in ["c2", "c4"] {
        let report = next_live(&mut reports).await.decode::<pb::AgentReport>()?;
        match report.report {
            Some(pb::agent_report::Report::CommandAck(ack)) => {
                assert_eq!(ack.command_id, expected);
            }
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    // Accepted commands settle with their final reports.
    agent.finish("c2").await;
    agent.finish("c4").await;
    // Everything acknowledged: a third session gets only what is new.
    h.wait_acknowledged(c4).await?;
    agent.close();
    let mut agent = FakeAgent::connect(channel.clone(), &token, hello(&cluster_id, &[])).await?;
    h.publish_command(&cluster_id, "c5").await?;
    assert_eq!(agent.next_command().await.command_id, "c5");
    agent.close();
    h.stop().await
}

/// Commands hold decrypted secrets: once the agent has answered one and the gateway has
/// acknowledged it, NATS no longer holds it (`AGENT` is a work queue). Session notices
/// never go into the stream at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commands_leave_the_agent_stream() -> TestResult {
    let h = Harness::start().await?;
    let (cluster_id, token) = h.register("prod").await?;
    let mut reports = h
        .bus()
        .subscribe(&subject::agent_reports(&cluster_id)?)
        .await?;
    let channel = h.channel("orchestrator-1");
    let mut agent = FakeAgent::connect(channel.clone(), &token, hello(&cluster_id, &[])).await?;
    // The session-started notice went out on core NATS, not into the stream.
    let info = h.bus().stream_info(StreamKind::Agent).await?;
    assert_eq!((info.messages, info.last_sequence), (0, 0));

    let first = h.publish_command(&cluster_id, "secret-1").await?;
    let second = h.publish_command(&cluster_id, "secret-2").await?;
    assert_eq!(agent.next_command().await.command_id, "secret-1");
    // Sent to the agent but not answered: still held, so it can come back.
    assert!(h.agent_stream_holds(first).await?);
    agent.ack("secret-1").await;
    let report = next_live(&mut reports).await.decode::<pb::AgentReport>()?;
    assert!(matches!(
        report.report,
        Some(pb::agent_report::Report::CommandAck(ref ack)) if ack.command_id == "secret-1"
    ));
    // Accepted, it is held until the agent finishes it; then the gateway settles it.
    assert!(h.agent_stream_holds(first).await?);
    agent.finish("secret-1").await;
    h.wait_acknowledged(first).await?;
    // The unanswered one stays, and survives the session...
    assert_eq!(agent.next_command().await.command_id, "secret-2");
    assert!(h.agent_stream_holds(second).await?);
    agent.close();
    let mut agent = FakeAgent::connect(channel, &token, hello(&cluster_id, &[])).await?;
    assert_eq!(agent.next_command().await.command_id, "secret-2");
    assert!(h.agent_stream_holds(second).await?);
    // ...until it is answered.
    agent.ack("secret-2").await;
    agent.finish("secret-2").await;
    h.wait_acknowledged(second).await?;
    // Left: the two relayed acks and two final reports, for the orchestrators' reports
    // consumer (not running here); no command, no notice.
    let info = h.bus().stream_info(StreamKind::Agent).await?;
    assert_eq!(info.messages, 4);
    agent.close();
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_bad_openings_are_refused() -> TestResult {
    let h = Harness::start().await?;
    let (cluster_id, token) = h.register("prod").await?;
    let (other_cluster, other_token) = h.register("staging").await?;
    let channel = h.channel("orchestrator-1");

    let unknown = NewCredential::generate(CredentialKind::Agent)?;
    for wrong in [
        unknown.expose_secret(),
        h.admin.as_str(),
        "slpa_nonsense",
        "",
    ] {
        let refused = FakeAgent::connect(channel.clone(), wrong, hello(&cluster_id, &[]))
            .await
            .err()
            .expect("refused");
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "{wrong}: {refused:?}"
        );
    }

    let refused = FakeAgent::connect(channel.clone(), &token, hello(&other_cluster, &[]))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let heartbeat_first = Up::Heartbeat(pb::Heartbeat {
        time: None,
        ping_id: String::new(),
    });
    let refused = FakeAgent::open(channel.clone(), &token, heartbeat_first, false)
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    let mut incomplete = hello(&cluster_id, &[]);
    incomplete.runtime = pb::RuntimeKind::Unspecified.into();
    let refused = FakeAgent::connect(channel.clone(), &token, incomplete)
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("hello.runtime"), "{refused:?}");

    // No hello at all: refused once the hello timeout passes.
    let (up, rx) = mpsc::channel::<pb::ConnectRequest>(1);
    let mut request = Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let refused = tokio::time::timeout(
        PATIENCE,
        AgentServiceClient::new(channel.clone()).connect(request),
    )
    .await?
    .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    drop(up);

    // The cluster never saw a connection.
    assert_eq!(
        connected(&h.cluster(&cluster_id).await?).0,
        cpb::ClusterConnectionState::AwaitingAgent
    );

    // A deleted cluster's token is no longer accepted.
    h.clusters()
        .delete_cluster(with_token(
            cpb::DeleteClusterRequest {
                id: other_cluster.clone(),
                etag: String::new(),
            },
            &h.admin,
        ))
        .await?;
    let refused = FakeAgent::connect(channel.clone(), &other_token, hello(&other_cluster, &[]))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            refused.code(),
            Code::Unauthenticated | Code::FailedPrecondition
        ),
        "{refused:?}"
    );
    h.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_stream_wins_and_silent_agents_are_dropped() -> TestResult {
    let mut h = Harness::start().await?;
    h.replica("orchestrator-2").await?;
    let (cluster_id, token) = h.register("prod").await?;
    let one = h.channel("orchestrator-1");
    let two = h.channel("orchestrator-2");

    // Across replicas: the session-started notice ends the older stream.
    let mut first = FakeAgent::connect(one.clone(), &token, hello(&cluster_id, &[])).await?;
    let mut second = FakeAgent::connect(two.clone(), &token, hello(&cluster_id, &[])).await?;
    assert_eq!(first.end_status().await.code(), Code::Aborted);
    // Within a replica: the map ends the older stream.
    let third = FakeAgent::connect(two.clone(), &token, hello(&cluster_id, &[])).await?;
    assert_eq!(second.end_status().await.code(), Code::Aborted);
    first.close();
    second.close();

    // Commands follow the live stream.
    let mut third = third;
    h.publish_command(&cluster_id, "after-replace").await?;
    assert_eq!(third.next_command().await.command_id, "after-replace");
    third.ack("after-replace").await;
    third.finish("after-replace").await;
    let (state, version) = connected(&h.cluster(&cluster_id).await?);
    assert_eq!(state, cpb::ClusterConnectionState::Connected);
    assert_eq!(version, "1.2.3");

    // Heartbeats keep the stream up well past three intervals...
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still_there = h.publish_command(&cluster_id, "still-there").await?;
    assert_eq!(third.next_command().await.command_id, "still-there");
    third.ack("still-there").await;
    third.finish("still-there").await;
    h.wait_acknowledged(still_there).await?;
    third.close();

    // ...and an agent that stops sending them is pinged, then dropped with UNAVAILABLE.
    let mut silent = FakeAgent::open(
        one.clone(),
        &token,
        Up::Hello(hello(&cluster_id, &[])),
        false,
    )
    .await?;
    let pinged = tokio::time::timeout(PATIENCE, silent.down.message()).await??;
    assert!(
        matches!(
            pinged.and_then(|m| m.message),
            Some(Down::Ping(ref ping)) if !ping.ping_id.is_empty()
        ),
        "expected a ping"
    );
    let ended = silent.end_status().await;
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    silent.close();
    let mut state = connected(&h.cluster(&cluster_id).await?).0;
    for _ in 0..50 {
        if state == cpb::ClusterConnectionState::Disconnected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = connected(&h.cluster(&cluster_id).await?).0;
    }
    assert_eq!(state, cpb::ClusterConnectionState::Disconnected);

    // Server shutdown ends the open streams with UNAVAILABLE.
    let mut last = FakeAgent::connect(two.clone(), &token, hello(&cluster_id, &[])).await?;
    let replicas: Vec<Agents> = h
        .replicas
        .iter()
        .map(|(_, agents)| agents.clone())
        .collect();
    assert!(
        replicas
            .iter()
            .any(|agents| agents.connected_clusters() == vec![cluster_id.clone()])
    );
    let Harness {
        orchestrators,
        control_plane,
        ..
    } = h;
    let stopping = tokio::spawn(orchestrators.shutdown());
    let ended = last.end_status().await;
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    last.close();
    stopping.await??;
    control_plane.sandbox.shutdown().await?;
    Ok(())
}
