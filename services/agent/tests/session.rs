//! The agent's session against a scripted fake orchestrator (an in-process tonic server
//! speaking `AgentService.Connect`) and a fake runtime: the handshake, acks, numbered step
//! reports, idempotency by command id (also across a restart), rejection, pings and
//! reconnects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_agent::runtime::{
    BoxFuture, CommandFailure, Runtime, RuntimeEvent, RuntimeEvents, Unsupported,
};
use slipway_agent::session::Session;
use slipway_agent::{AgentSettings, RuntimeChoice};
use slipway_proto::agent::v1 as pb;
use slipway_proto::agent::v1::agent_service_server::{AgentService, AgentServiceServer};
use slipway_proto::agent::v1::connect_request::Message as Up;
use slipway_proto::agent::v1::connect_response::Message as Down;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

const TOKEN: &str = "slpa_test-agent-token";
const CLUSTER: &str = "0190c0de-0000-7000-8000-000000000001";
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The fake orchestrator.

/// The server half of the current stream, if one is open.
type CurrentStream = Arc<Mutex<Option<mpsc::UnboundedSender<Result<pb::ConnectResponse, Status>>>>>;

/// What the fake saw, in order.
#[derive(Debug)]
enum Seen {
    /// A stream opened with this `Hello` (after the bearer was checked).
    Hello(pb::Hello),
    /// Any later agent message.
    Up(Up),
    /// The agent's half of a stream ended.
    Closed,
}

#[derive(Clone)]
struct FakeOrchestrator {
    seen: mpsc::UnboundedSender<Seen>,
    /// The server half of the current stream; dropping it ends that stream.
    current: CurrentStream,
    heartbeat_interval: Duration,
}

#[tonic::async_trait]
impl AgentService for FakeOrchestrator {
    type ConnectStream = UnboundedReceiverStream<Result<pb::ConnectResponse, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<pb::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        if bearer != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated("missing or invalid agent token"));
        }
        let mut incoming = request.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), incoming.message())
            .await
            .map_err(|_| Status::invalid_argument("no hello within 10 s"))??;
        let Some(pb::ConnectRequest {
            message: Some(Up::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument("first message must be hello"));
        };
        let _ = self.seen.send(Seen::Hello(hello));
        let (tx, rx) = mpsc::unbounded_channel();
        let welcome = pb::Welcome {
            session_id: uuid::Uuid::now_v7().to_string(),
            heartbeat_interval: Some(self.heartbeat_interval.try_into().unwrap()),
            server_time: Some(std::time::SystemTime::now().into()),
        };
        tx.send(Ok(down(Down::Welcome(welcome)))).unwrap();
        *self.current.lock().unwrap() = Some(tx);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = incoming.message().await {
                if let Some(message) = message.message {
                    let _ = seen.send(Seen::Up(message));
                }
            }
            let _ = seen.send(Seen::Closed);
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

fn down(message: Down) -> pb::ConnectResponse {
    pb::ConnectResponse {
        message: Some(message),
    }
}

/// The test's handle on the fake orchestrator.
struct Orchestrator {
    url: String,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// What waits passed over, oldest first.
    backlog: Vec<Seen>,
    current: CurrentStream,
}

impl Orchestrator {
    async fn start(heartbeat_interval: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let current = Arc::new(Mutex::new(None));
        let fake = FakeOrchestrator {
            seen: seen_tx,
            current: current.clone(),
            heartbeat_interval,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentServiceServer::new(fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self {
            url: format!("http://{address}"),
            seen,
            backlog: Vec::new(),
            current,
        }
    }

    /// Sends a server message on the current stream.
    fn send(&self, message: Down) {
        self.current
            .lock()
            .unwrap()
            .as_ref()
            .expect("a stream is open")
            .send(Ok(down(message)))
            .unwrap();
    }

    /// Ends the current stream from the server side.
    fn end_stream(&self) {
        self.current.lock().unwrap().take();
    }

    /// The first thing seen that `pick` accepts, looking first at what earlier waits
    /// passed over (messages of different kinds interleave), then at what comes next.
    async fn wait_for<T>(&mut self, what: &str, pick: impl Fn(&Seen) -> Option<T>) -> T {
        if let Some(index) = self.backlog.iter().position(|seen| pick(seen).is_some()) {
            let seen = self.backlog.remove(index);
            return pick(&seen).unwrap();
        }
        let backlog = &mut self.backlog;
        let seen_rx = &mut self.seen;
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let seen = seen_rx.recv().await.expect("the fake is running");
                match pick(&seen) {
                    Some(found) => return found,
                    None => backlog.push(seen),
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn hello(&mut self) -> pb::Hello {
        self.wait_for("hello", |seen| match seen {
            Seen::Hello(hello) => Some(hello.clone()),
            _ => None,
        })
        .await
    }

    async fn ack(&mut self, command_id: &str) -> pb::CommandAck {
        self.wait_for("ack", |seen| match seen {
            Seen::Up(Up::CommandAck(ack)) if ack.command_id == command_id => Some(ack.clone()),
            _ => None,
        })
        .await
    }

    /// Step reports of `command_id` up to and including its final command-level report.
    async fn reports_until_final(&mut self, command_id: &str) -> Vec<pb::StepReport> {
        let mut reports = Vec::new();
        loop {
            let report = self
                .wait_for("step report", |seen| match seen {
                    Seen::Up(Up::StepReport(report)) if report.command_id == command_id => {
                        Some(report.clone())
                    }
                    _ => None,
                })
                .await;
            let last = report.service_id.is_empty();
            reports.push(report);
            if last {
                return reports;
            }
        }
    }

    /// Everything seen within `quiet`, to check that something did not happen.
    async fn drain(&mut self, quiet: Duration) -> Vec<Seen> {
        let mut all = Vec::new();
        while let Ok(Some(seen)) = tokio::time::timeout(quiet, self.seen.recv()).await {
            all.push(seen);
        }
        all
    }
}

// ---------------------------------------------------------------------------------------
// The fake runtime.

/// Executes by reporting an `apply` step started and succeeded for each workload; a
/// command whose namespace is `fail` fails with an image pull error, and one whose
/// namespace is `hold` waits until the test releases it. Helm stages are unsupported.
#[derive(Default)]
struct FakeRuntime {
    executed: Mutex<Vec<String>>,
    release: Notify,
}

impl FakeRuntime {
    fn executed(&self) -> Vec<String> {
        self.executed.lock().unwrap().clone()
    }
}

fn workload_status(service_id: &str) -> pb::WorkloadStatus {
    pb::WorkloadStatus {
        environment_id: "env-1".into(),
        service_id: service_id.into(),
        runtime_state: pb::RuntimeState::Running as i32,
        ready_instances: 1,
        desired_instances: 1,
        revision: "r1".into(),
        ..Default::default()
    }
}

impl Runtime for FakeRuntime {
    fn kind(&self) -> pb::RuntimeKind {
        pb::RuntimeKind::Process
    }

    fn version(&self) -> BoxFuture<'_, String> {
        Box::pin(async { "fake 1.0".to_owned() })
    }

    fn check(&self, command: &pb::Command) -> Result<(), Unsupported> {
        if command.stage() == pb::CommandStage::Helm {
            return Err(Unsupported(
                "helm releases need the kubernetes runtime".into(),
            ));
        }
        Ok(())
    }

    fn execute<'a>(
        &'a self,
        command: &'a pb::Command,
        events: RuntimeEvents,
    ) -> BoxFuture<'a, Result<(), CommandFailure>> {
        Box::pin(async move {
            self.executed
                .lock()
                .unwrap()
                .push(command.command_id.clone());
            if command.namespace == "hold" {
                self.release.notified().await;
            }
            for workload in &command.workloads {
                for status in [pb::StepStatus::Started, pb::StepStatus::Succeeded] {
                    events
                        .send(RuntimeEvent::Step(pb::StepReport {
                            service_id: workload.service_id.clone(),
                            step: "apply".into(),
                            status: status as i32,
                            ..Default::default()
                        }))
                        .unwrap();
                }
                events
                    .send(RuntimeEvent::Log(pb::LogChunk {
                        environment_id: command.environment_id.clone(),
                        service_id: workload.service_id.clone(),
                        instance: format!("{}-0", workload.service_id),
                        lines: vec![pb::LogChunkLine {
                            time: None,
                            text: "listening".into(),
                        }],
                        ..Default::default()
                    }))
                    .unwrap();
            }
            if command.namespace == "fail" {
                return Err(CommandFailure::new(
                    pb::FailureReason::ImagePull,
                    "image pull failed: not found",
                ));
            }
            Ok(())
        })
    }

    fn workloads(&self) -> BoxFuture<'_, Result<Vec<pb::WorkloadStatus>, CommandFailure>> {
        Box::pin(async { Ok(vec![workload_status("svc-a"), workload_status("svc-b")]) })
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn settings(url: &str, state_dir: &std::path::Path) -> AgentSettings {
    AgentSettings {
        orchestrator_url: url.to_owned(),
        token: TOKEN.to_owned(),
        cluster_id: CLUSTER.to_owned(),
        state_dir: state_dir.to_owned(),
        runtime: RuntimeChoice::Process,
        reconnect_min_backoff_ms: 20,
        reconnect_max_backoff_ms: 200,
        log_queue_chunks: 64,
    }
}

/// A running session; dropping it does not stop it, [`Agent::stop`] does.
struct Agent {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    fn start(settings: AgentSettings, runtime: Arc<FakeRuntime>) -> Self {
        let session = Session::new(settings, runtime).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(session.run(stop.clone().cancelled_owned()));
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the session stops promptly")
            .unwrap();
    }
}

fn command(id: &str, services: &[&str]) -> pb::Command {
    pb::Command {
        command_id: id.into(),
        cluster_id: CLUSTER.into(),
        organization_id: "org-1".into(),
        project_id: "project-1".into(),
        environment_id: "env-1".into(),
        deployment_id: format!("deployment-of-{id}"),
        namespace: "env-1".into(),
        stage: pb::CommandStage::Applications as i32,
        operation: pb::CommandOperation::Apply as i32,
        workloads: services
            .iter()
            .map(|service| pb::WorkloadSpec {
                service_id: (*service).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn id(n: u32) -> String {
    format!("0190c0de-0000-7000-8000-{n:012}")
}

// ---------------------------------------------------------------------------------------
// Cases.

#[tokio::test]
async fn hello_then_welcome_then_resync_and_heartbeats() {
    let mut orchestrator = Orchestrator::start(Duration::from_millis(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        settings(&orchestrator.url, dir.path()),
        Arc::new(FakeRuntime::default()),
    );

    let hello = orchestrator.hello().await;
    assert_eq!(hello.cluster_id, CLUSTER);
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.runtime(), pb::RuntimeKind::Process);
    assert_eq!(hello.runtime_version, "fake 1.0");
    assert!(uuid::Uuid::parse_str(&hello.agent_instance_id).is_ok());
    assert!(hello.applied_command_ids.is_empty());
    assert!(hello.running_command_ids.is_empty());

    let mut resynced = HashSet::new();
    while resynced.len() < 2 {
        let status = orchestrator
            .wait_for("resync", |seen| match seen {
                Seen::Up(Up::WorkloadStatus(status)) => Some(status.clone()),
                _ => None,
            })
            .await;
        resynced.insert(status.service_id);
    }
    assert_eq!(resynced, HashSet::from(["svc-a".into(), "svc-b".into()]));

    // Two periodic heartbeats at the 100 ms interval Welcome asked for.
    for _ in 0..2 {
        let heartbeat = orchestrator
            .wait_for("heartbeat", |seen| match seen {
                Seen::Up(Up::Heartbeat(heartbeat)) => Some(heartbeat.clone()),
                _ => None,
            })
            .await;
        assert!(heartbeat.ping_id.is_empty());
        assert!(heartbeat.time.is_some());
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_command_is_accepted_reported_step_by_step_and_finished() {
    let mut orchestrator = Orchestrator::start(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(FakeRuntime::default());
    let agent = Agent::start(settings(&orchestrator.url, dir.path()), runtime.clone());
    orchestrator.hello().await;

    let first = id(1);
    orchestrator.send(Down::Command(command(&first, &["svc-a", "svc-b"])));
    let ack = orchestrator.ack(&first).await;
    assert_eq!(ack.result(), pb::CommandAckResult::Accepted);

    let reports = orchestrator.reports_until_final(&first).await;
    let sequences: Vec<u32> = reports.iter().map(|report| report.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    for report in &reports {
        assert_eq!(report.command_id, first);
        assert_eq!(report.deployment_id, format!("deployment-of-{first}"));
        assert!(report.time.is_some());
    }
    assert_eq!(reports[0].step, "apply");
    assert_eq!(reports[0].status(), pb::StepStatus::Started);
    let last = reports.last().unwrap();
    assert_eq!(last.step, "command");
    assert!(last.service_id.is_empty());
    assert_eq!(last.status(), pb::StepStatus::Succeeded);
    assert_eq!(runtime.executed(), std::slice::from_ref(&first));

    // The workloads' output came up as log chunks (queued behind the reports).
    let chunk = orchestrator
        .wait_for("log chunk", |seen| match seen {
            Seen::Up(Up::LogChunk(chunk)) => Some(chunk.clone()),
            _ => None,
        })
        .await;
    assert_eq!(chunk.lines[0].text, "listening");

    // A failing command: its final report says why.
    let second = id(2);
    let mut failing = command(&second, &["svc-a"]);
    failing.namespace = "fail".into();
    orchestrator.send(Down::Command(failing));
    assert_eq!(
        orchestrator.ack(&second).await.result(),
        pb::CommandAckResult::Accepted
    );
    let reports = orchestrator.reports_until_final(&second).await;
    let last = reports.last().unwrap();
    assert_eq!(last.sequence, 3);
    assert_eq!(last.status(), pb::StepStatus::Failed);
    assert_eq!(last.failure_reason(), pb::FailureReason::ImagePull);
    assert_eq!(last.message, "image pull failed: not found");

    agent.stop().await;
}

#[tokio::test]
async fn a_repeated_command_is_a_duplicate_and_its_final_report_is_resent() {
    let mut orchestrator = Orchestrator::start(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(FakeRuntime::default());
    let agent = Agent::start(settings(&orchestrator.url, dir.path()), runtime.clone());
    orchestrator.hello().await;

    let first = id(1);
    orchestrator.send(Down::Command(command(&first, &["svc-a"])));
    assert_eq!(
        orchestrator.ack(&first).await.result(),
        pb::CommandAckResult::Accepted
    );
    let original = orchestrator.reports_until_final(&first).await;

    orchestrator.send(Down::Command(command(&first, &["svc-a"])));
    assert_eq!(
        orchestrator.ack(&first).await.result(),
        pb::CommandAckResult::Duplicate
    );
    let resent = orchestrator.reports_until_final(&first).await;
    assert_eq!(resent, [original.last().unwrap().clone()]);
    assert_eq!(runtime.executed(), std::slice::from_ref(&first));

    // While a command still runs, a repeat is a duplicate too, with no final report yet.
    let held = id(2);
    let mut holding = command(&held, &["svc-a"]);
    holding.namespace = "hold".into();
    orchestrator.send(Down::Command(holding.clone()));
    assert_eq!(
        orchestrator.ack(&held).await.result(),
        pb::CommandAckResult::Accepted
    );
    orchestrator.send(Down::Command(holding));
    assert_eq!(
        orchestrator.ack(&held).await.result(),
        pb::CommandAckResult::Duplicate
    );
    runtime.release.notify_one();
    let reports = orchestrator.reports_until_final(&held).await;
    assert_eq!(reports.last().unwrap().sequence, 3);
    assert_eq!(runtime.executed(), [first, held]);
    agent.stop().await;
}

#[tokio::test]
async fn a_restarted_agent_lists_applied_commands_and_does_not_apply_them_again() {
    let mut orchestrator = Orchestrator::start(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let before = Arc::new(FakeRuntime::default());
    let agent = Agent::start(settings(&orchestrator.url, dir.path()), before.clone());
    let first_hello = orchestrator.hello().await;
    let (one, two) = (id(1), id(2));
    let mut finals = Vec::new();
    for command_id in [&one, &two] {
        orchestrator.send(Down::Command(command(command_id, &["svc-a"])));
        let reports = orchestrator.reports_until_final(command_id).await;
        finals.push(reports.last().unwrap().clone());
    }
    assert_eq!(before.executed(), [one.clone(), two.clone()]);
    agent.stop().await;
    orchestrator
        .wait_for("close", |seen| matches!(seen, Seen::Closed).then_some(()))
        .await;

    // A new process on the same state directory.
    let after = Arc::new(FakeRuntime::default());
    let agent = Agent::start(settings(&orchestrator.url, dir.path()), after.clone());
    let hello = orchestrator.hello().await;
    assert_ne!(hello.agent_instance_id, first_hello.agent_instance_id);
    assert_eq!(hello.applied_command_ids, [two.clone(), one.clone()]);
    orchestrator.backlog.clear();

    orchestrator.send(Down::Command(command(&one, &["svc-a"])));
    assert_eq!(
        orchestrator.ack(&one).await.result(),
        pb::CommandAckResult::Duplicate
    );
    let resent = orchestrator.reports_until_final(&one).await;
    assert_eq!(resent, [finals[0].clone()]);
    assert!(after.executed().is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn commands_for_another_cluster_or_runtime_are_rejected() {
    let mut orchestrator = Orchestrator::start(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(FakeRuntime::default());
    let agent = Agent::start(settings(&orchestrator.url, dir.path()), runtime.clone());
    orchestrator.hello().await;

    let elsewhere = id(1);
    let mut other = command(&elsewhere, &["svc-a"]);
    other.cluster_id = "0190c0de-0000-7000-8000-0000000000ff".into();
    orchestrator.send(Down::Command(other));
    let ack = orchestrator.ack(&elsewhere).await;
    assert_eq!(ack.result(), pb::CommandAckResult::Rejected);
    assert!(ack.message.contains("another cluster") || ack.message.contains("cluster"));

    let helm = id(2);
    let mut release = command(&helm, &["chart"]);
    release.stage = pb::CommandStage::Helm as i32;
    orchestrator.send(Down::Command(release));
    let ack = orchestrator.ack(&helm).await;
    assert_eq!(ack.result(), pb::CommandAckResult::Rejected);
    assert_eq!(ack.message, "helm releases need the kubernetes runtime");

    let later = orchestrator.drain(Duration::from_millis(300)).await;
    assert!(
        !later
            .iter()
            .any(|seen| matches!(seen, Seen::Up(Up::StepReport(_)))),
        "{later:?}"
    );
    assert!(runtime.executed().is_empty());
    assert!(
        !std::fs::read_to_string(dir.path().join(slipway_agent::state::STATE_FILE))
            .unwrap_or_default()
            .contains(&elsewhere)
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_ping_is_answered_with_a_heartbeat_naming_it() {
    let mut orchestrator = Orchestrator::start(Duration::from_secs(60)).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        settings(&orchestrator.url, dir.path()),
        Arc::new(FakeRuntime::default()),
    );
    orchestrator.hello().await;
    orchestrator.send(Down::Ping(pb::Ping {
        ping_id: "ping-42".into(),
        time: Some(std::time::SystemTime::now().into()),
    }));
    let heartbeat = orchestrator
        .wait_for("heartbeat", |seen| match seen {
            Seen::Up(Up::Heartbeat(heartbeat)) => Some(heartbeat.clone()),
            _ => None,
        })
        .await;
    assert_eq!(heartbeat.ping_id, "ping-42");
    agent.stop().await;
}

#[tokio::test]
async fn the_agent_reconnects_when_the_server_ends_the_stream() {
    let mut orchestrator = Orchestrator::start(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(FakeRuntime::default());
    let agent = Agent::start(settings(&orchestrator.url, dir.path()), runtime.clone());
    let first = orchestrator.hello().await;
    let done = id(1);
    orchestrator.send(Down::Command(command(&done, &["svc-a"])));
    orchestrator.reports_until_final(&done).await;

    // A command still running when the stream ends keeps running and reports on the next
    // stream.
    let held = id(2);
    let mut holding = command(&held, &["svc-a"]);
    holding.namespace = "hold".into();
    orchestrator.send(Down::Command(holding));
    orchestrator.ack(&held).await;

    orchestrator.end_stream();
    let second = orchestrator.hello().await;
    assert_eq!(second.agent_instance_id, first.agent_instance_id);
    assert_eq!(second.applied_command_ids, std::slice::from_ref(&done));
    assert_eq!(second.running_command_ids, std::slice::from_ref(&held));
    // What the first stream carried is not what we look for now.
    orchestrator.backlog.clear();
    // The new stream gets the resync again.
    orchestrator
        .wait_for("resync", |seen| match seen {
            Seen::Up(Up::WorkloadStatus(status)) => Some(status.clone()),
            _ => None,
        })
        .await;

    runtime.release.notify_one();
    let reports = orchestrator.reports_until_final(&held).await;
    let last = reports.last().unwrap();
    assert_eq!(last.status(), pb::StepStatus::Succeeded);
    assert_eq!(last.sequence, 3);
    assert_eq!(runtime.executed(), [done, held]);

    // And once more, to see the backoff does not stop it.
    orchestrator.end_stream();
    orchestrator.hello().await;
    agent.stop().await;
}

#[tokio::test]
async fn a_wrong_token_never_gets_a_session() {
    let mut orchestrator = Orchestrator::start(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut wrong = settings(&orchestrator.url, dir.path());
    wrong.token = "slpa_wrong".into();
    let agent = Agent::start(wrong, Arc::new(FakeRuntime::default()));
    let seen = orchestrator.drain(Duration::from_millis(500)).await;
    assert!(
        !seen.iter().any(|seen| matches!(seen, Seen::Hello(_))),
        "{seen:?}"
    );
    agent.stop().await;
}

#[test]
fn agent_settings_come_from_the_manifest_variables_and_hide_the_token() {
    let env = [
        ("SLIPWAY__AGENT__TOKEN", TOKEN),
        (
            "SLIPWAY__AGENT__ORCHESTRATOR_URL",
            "https://slipway.example.com",
        ),
        ("SLIPWAY__AGENT__CLUSTER_ID", CLUSTER),
        ("SLIPWAY__AGENT__RUNTIME", "process"),
    ]
    .map(|(key, value)| (key.to_owned(), value.to_owned()));
    let settings: slipway_agent::Settings = slipway_config::load_from(None, env).unwrap();
    let agent = settings.agent.unwrap();
    assert_eq!(agent.token, TOKEN);
    assert_eq!(agent.orchestrator_url, "https://slipway.example.com");
    assert_eq!(agent.cluster_id, CLUSTER);
    assert_eq!(agent.runtime, RuntimeChoice::Process);
    assert_eq!(agent.reconnect_min_backoff_ms, 1_000);
    assert_eq!(agent.reconnect_max_backoff_ms, 60_000);
    assert!(!format!("{agent:?}").contains(TOKEN));

    let missing_url = [
        ("SLIPWAY__AGENT__TOKEN", TOKEN),
        ("SLIPWAY__AGENT__CLUSTER_ID", CLUSTER),
    ]
    .map(|(key, value)| (key.to_owned(), value.to_owned()));
    let error = slipway_config::load_from::<slipway_agent::Settings, _>(None, missing_url)
        .unwrap_err()
        .to_string();
    assert!(error.contains("agent.orchestrator_url"), "{error}");

    let none: slipway_agent::Settings =
        slipway_config::load_from(None, Vec::<(String, String)>::new()).unwrap();
    assert!(none.agent.is_none());
}
