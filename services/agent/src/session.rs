//! The agent's session with the orchestrator: `AgentService.Connect`, held open for as long
//! as the agent runs.
//!
//! One [`Session`] per process. It dials the orchestrator, opens the stream with `Hello`
//! (who it is and which commands it finished), waits for `Welcome`, sends a full resync of
//! the runtime's workloads, then answers the server: each `Command` is acknowledged at once
//! and applied by the [`Runtime`] in its own task; the runtime's events become
//! `StepReport`s (numbered per command), `WorkloadStatus`es and `LogChunk`s; `Ping`s and the
//! heartbeat interval produce `Heartbeat`s. When the stream ends, for any reason, the
//! session dials again after an exponential backoff with jitter.
//!
//! Commands outlive streams: a command keeps running while the agent reconnects, and what
//! it reports meanwhile waits in the [`Outbox`] for the next stream. Each command id is
//! applied once, also across restarts: its final report is recorded in [`AgentState`]
//! before it is sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures::{FutureExt as _, Stream, StreamExt as _};
use slipway_proto::agent::v1 as pb;
use slipway_proto::agent::v1::agent_service_client::AgentServiceClient;
use slipway_proto::agent::v1::connect_request::Message as Up;
use slipway_proto::agent::v1::connect_response::Message as Down;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::AgentSettings;
use crate::mask::SecretMask;
use crate::runtime::{Runtime, RuntimeEvent};
use crate::state::{AgentState, AppliedCommand, StateError};

/// `StepReport.step` of command-level reports.
pub const COMMAND_STEP: &str = "command";

/// Heartbeat interval when `Welcome` names none (or zero): the protocol's usual value.
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Shortest heartbeat interval obeyed, so a bad `Welcome` cannot make the agent spin.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);

/// How long dialling, and then the server's `Welcome`, may take before the attempt counts
/// as failed. The server must see `Hello` within 10 s; it answers at once.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A session that lasted this long counts as healthy: the next reconnect starts again from
/// the shortest backoff. Shorter sessions (a server that welcomes then drops the agent, or
/// two agents replacing each other) keep backing off.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Longest `CommandAck.message` and `StepReport.message`, in bytes.
const MAX_MESSAGE_LEN: usize = 1024;

/// Why a session could not be set up. Everything after set-up is retried, not returned.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("invalid setting `agent.orchestrator_url`: {0}")]
    OrchestratorUrl(String),
    #[error("invalid setting `agent.token`: it must be printable ASCII")]
    Token,
}

/// Why one stream ended; logged, then the session reconnects.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("cannot reach the orchestrator: {0}")]
    Dial(#[source] tonic::transport::Error),
    #[error("the orchestrator refused the session: {0}")]
    Refused(#[source] tonic::Status),
    #[error("the orchestrator did not welcome the agent within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    #[error("the orchestrator's first message was not a welcome")]
    NoWelcome,
    #[error("the stream failed: {0}")]
    Failed(#[source] tonic::Status),
    #[error("the orchestrator ended the stream")]
    Ended,
    #[error("the agent is shutting down")]
    Shutdown,
}

/// The agent's session with the orchestrator. See the module documentation.
pub struct Session {
    settings: AgentSettings,
    runtime: Arc<dyn Runtime>,
    shared: Arc<Shared>,
    endpoint: Endpoint,
    authorization: AsciiMetadataValue,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("settings", &self.settings)
            .field("instance_id", &self.shared.instance_id)
            .finish_non_exhaustive()
    }
}

/// What the session and its command tasks share.
struct Shared {
    cluster_id: String,
    /// Picked once per process: tells the server a restart from a reconnect.
    instance_id: String,
    state: AgentState,
    /// Commands accepted and not yet recorded as finished.
    running: Mutex<HashSet<String>>,
    outbox: Outbox,
    /// Ids of final reports handed to the current stream. The transport may lose what it
    /// had not yet delivered when a stream breaks, so these are sent again on the next
    /// stream (the server drops a report whose `sequence` it already has).
    sent_finals: Mutex<Vec<String>>,
}

impl Session {
    /// Prepares a session: opens the state in `settings.state_dir` and checks the
    /// orchestrator address and token. Nothing is dialled until [`Session::run`].
    pub fn new(settings: AgentSettings, runtime: Arc<dyn Runtime>) -> Result<Self, SessionError> {
        let state = AgentState::open(&settings.state_dir)?;
        let mut authorization: AsciiMetadataValue =
            MetadataValue::try_from(format!("Bearer {}", settings.token))
                .map_err(|_| SessionError::Token)?;
        authorization.set_sensitive(true);
        let endpoint = endpoint(&settings.orchestrator_url)?;
        let shared = Arc::new(Shared {
            cluster_id: settings.cluster_id.clone(),
            instance_id: uuid::Uuid::now_v7().to_string(),
            state,
            running: Mutex::new(HashSet::new()),
            outbox: Outbox::new(settings.log_queue_chunks),
            sent_finals: Mutex::new(Vec::new()),
        });
        Ok(Self {
            settings,
            runtime,
            shared,
            endpoint,
            authorization,
        })
    }

    /// This process's `Hello.agent_instance_id`.
    pub fn instance_id(&self) -> &str {
        &self.shared.instance_id
    }

    /// Holds the session until `shutdown` completes: connects, serves the stream, and
    /// reconnects with backoff whenever it ends. On shutdown the stream is closed and
    /// commands still running are abandoned unrecorded (the runtime's apply is idempotent;
    /// the orchestrator sees them in neither list of the next `Hello` and sends them again).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let stop = CancellationToken::new();
        // Command tasks are spawned; they stop with the session.
        let _stop_tasks = stop.clone().drop_guard();
        let mut backoff = Backoff::new(
            self.settings.reconnect_min_backoff(),
            self.settings.reconnect_max_backoff(),
        );
        tracing::info!(
            orchestrator = %self.settings.orchestrator_url,
            cluster_id = %self.shared.cluster_id,
            instance_id = %self.shared.instance_id,
            state = %self.shared.state.path().display(),
            "agent session starting"
        );
        let session = async {
            loop {
                let started = Instant::now();
                let (end, welcomed) = self.stream_once(&stop).await;
                if welcomed && started.elapsed() >= HEALTHY_SESSION {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                match &end {
                    StreamEnd::Refused(status) | StreamEnd::Failed(status)
                        if matches!(
                            status.code(),
                            tonic::Code::Unauthenticated
                                | tonic::Code::PermissionDenied
                                | tonic::Code::FailedPrecondition
                                | tonic::Code::InvalidArgument
                        ) =>
                    {
                        tracing::error!(error = %end, retry_in = ?delay, "agent session refused")
                    }
                    _ => tracing::warn!(error = %end, retry_in = ?delay, "agent session ended"),
                }
                tokio::time::sleep(delay).await;
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = session => {}
        }
        tracing::info!("agent session stopped");
    }

    /// One stream, from dialling to its end. Also says whether the server welcomed it.
    async fn stream_once(&self, stop: &CancellationToken) -> (StreamEnd, bool) {
        // Ends this stream's outgoing half whichever way this function returns.
        let stream_done = CancellationToken::new();
        let _end_outgoing = stream_done.clone().drop_guard();
        let (welcomed_tx, welcomed_rx) = oneshot::channel();

        let handshake = async {
            let channel = self.endpoint.connect().await.map_err(StreamEnd::Dial)?;
            let mut client = AgentServiceClient::new(channel);
            let outgoing = outgoing(
                self.hello().await,
                self.shared.clone(),
                welcomed_rx,
                stream_done.clone(),
            );
            let mut request = tonic::Request::new(outgoing);
            request
                .metadata_mut()
                .insert("authorization", self.authorization.clone());
            let mut incoming = client
                .connect(request)
                .await
                .map_err(StreamEnd::Refused)?
                .into_inner();
            match incoming.message().await {
                Ok(Some(pb::ConnectResponse {
                    message: Some(Down::Welcome(welcome)),
                })) => Ok((incoming, welcome)),
                Ok(Some(_)) => Err(StreamEnd::NoWelcome),
                Ok(None) => Err(StreamEnd::Ended),
                Err(status) => Err(StreamEnd::Refused(status)),
            }
        };
        let (mut incoming, welcome) = tokio::select! {
            () = stop.cancelled() => return (StreamEnd::Shutdown, false),
            result = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match result {
                Ok(Ok(welcomed)) => welcomed,
                Ok(Err(end)) => return (end, false),
                Err(_) => return (StreamEnd::HandshakeTimeout, false),
            },
        };
        let interval = welcome
            .heartbeat_interval
            .and_then(|interval| Duration::try_from(interval).ok())
            .filter(|interval| !interval.is_zero())
            .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL)
            .max(MIN_HEARTBEAT_INTERVAL);
        tracing::info!(session_id = %welcome.session_id, heartbeat_interval = ?interval, "agent session welcomed");

        self.after_welcome().await;
        // Lets the outgoing half send what waits in the outbox, now that Hello is answered.
        let _ = welcomed_tx.send(());

        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            tokio::select! {
                () = stop.cancelled() => break StreamEnd::Shutdown,
                _ = heartbeat.tick() => self.shared.outbox.push_urgent(heartbeat_message(String::new())),
                message = incoming.message() => match message {
                    Ok(Some(pb::ConnectResponse { message: Some(message) })) => {
                        self.on_message(message, stop);
                    }
                    Ok(Some(pb::ConnectResponse { message: None })) => {
                        tracing::debug!("ignoring an empty server message");
                    }
                    Ok(None) => break StreamEnd::Ended,
                    Err(status) => break StreamEnd::Failed(status),
                },
            }
        };
        (end, true)
    }

    /// The `Hello` of a new stream: who the agent is and where it left off.
    async fn hello(&self) -> pb::Hello {
        let running = self.shared.running().iter().cloned().collect::<Vec<_>>();
        pb::Hello {
            cluster_id: self.shared.cluster_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            runtime: self.runtime.kind() as i32,
            runtime_version: self.runtime.version().await,
            agent_instance_id: self.shared.instance_id.clone(),
            applied_command_ids: self.shared.state.applied_ids(),
            running_command_ids: running,
        }
    }

    /// What follows `Welcome`: drop what only made sense on the previous stream, resend
    /// final reports that stream may have lost, and queue the full workload resync.
    async fn after_welcome(&self) {
        self.shared.outbox.begin_stream();
        let previous = std::mem::take(&mut *self.shared.sent_finals());
        for command_id in previous {
            if let Some(applied) = self.shared.state.applied(&command_id) {
                self.shared
                    .outbox
                    .push(Up::StepReport(applied.final_report()));
            }
        }
        match self.runtime.workloads().await {
            Ok(workloads) => {
                tracing::debug!(workloads = workloads.len(), "sending the workload resync");
                for status in workloads {
                    self.shared.outbox.push(Up::WorkloadStatus(status));
                }
            }
            Err(failure) => {
                tracing::warn!(error = %failure, "cannot list workloads for the resync");
            }
        }
    }

    fn on_message(&self, message: Down, stop: &CancellationToken) {
        match message {
            Down::Welcome(_) => tracing::debug!("ignoring a second welcome"),
            Down::Ping(ping) => self
                .shared
                .outbox
                .push_urgent(heartbeat_message(ping.ping_id)),
            Down::Command(command) => self.on_command(command, stop),
        }
    }

    /// Acknowledges `command` and, when new and applicable, starts applying it.
    fn on_command(&self, command: pb::Command, stop: &CancellationToken) {
        let shared = &self.shared;
        let command_id = command.command_id.clone();
        let ack = |result: pb::CommandAckResult, message: String| {
            shared.outbox.push(Up::CommandAck(pb::CommandAck {
                command_id: command_id.clone(),
                result: result as i32,
                message: truncate(message),
            }));
        };
        if command.cluster_id != shared.cluster_id {
            tracing::warn!(command_id = %command_id, cluster_id = %command.cluster_id, "rejecting a command for another cluster");
            return ack(
                pb::CommandAckResult::Rejected,
                format!(
                    "command is for cluster {}, this agent serves cluster {}",
                    command.cluster_id, shared.cluster_id
                ),
            );
        }
        if command_id.is_empty() {
            return ack(
                pb::CommandAckResult::Rejected,
                "command has no command_id".to_owned(),
            );
        }
        // Before anything runs, so the workloads' very first lines are masked.
        shared.outbox.mask.learn(&command);
        if let Some(applied) = shared.state.applied(&command_id) {
            tracing::info!(command_id = %command_id, "command already applied: resending its final report");
            ack(pb::CommandAckResult::Duplicate, String::new());
            shared.outbox.push(Up::StepReport(applied.final_report()));
            return;
        }
        // Checked and inserted under one lock, so two deliveries cannot both start it.
        let newly_running = {
            let mut running = shared.running();
            if running.contains(&command_id) {
                false
            } else if let Err(unsupported) = self.runtime.check(&command) {
                drop(running);
                tracing::warn!(command_id = %command_id, reason = %unsupported, "rejecting an unsupported command");
                return ack(pb::CommandAckResult::Rejected, unsupported.0.to_lowercase());
            } else {
                running.insert(command_id.clone())
            }
        };
        if !newly_running {
            tracing::info!(command_id = %command_id, "command already running");
            return ack(pb::CommandAckResult::Duplicate, String::new());
        }
        ack(pb::CommandAckResult::Accepted, String::new());
        tracing::info!(
            command_id = %command_id,
            deployment_id = %command.deployment_id,
            environment_id = %command.environment_id,
            operation = ?command.operation(),
            stage = ?command.stage(),
            workloads = command.workloads.len(),
            "applying command"
        );
        tokio::spawn(apply(
            shared.clone(),
            self.runtime.clone(),
            command,
            stop.child_token(),
        ));
    }
}

impl Shared {
    fn running(&self) -> MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sent_finals(&self) -> MutexGuard<'_, Vec<String>> {
        self.sent_finals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Applies one accepted command: runs the runtime, turns its events into reports, records
/// the outcome, then sends the final command-level report. Afterwards it keeps forwarding
/// workload statuses and logs the runtime still sends on this command's channel (a process
/// runtime reports its supervised processes through it) until the runtime drops it.
async fn apply(
    shared: Arc<Shared>,
    runtime: Arc<dyn Runtime>,
    command: pb::Command,
    stop: CancellationToken,
) {
    let (events, mut received) = mpsc::unbounded_channel();
    let mut reports = StepNumbering {
        command_id: command.command_id.clone(),
        deployment_id: command.deployment_id.clone(),
        last_sequence: 0,
    };
    let mut execute = Box::pin(AssertUnwindSafe(runtime.execute(&command, events)).catch_unwind());
    let outcome = loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            Some(event) = received.recv() => reports.forward(&shared.outbox, event),
            outcome = &mut execute => break outcome,
        }
    };
    drop(execute);
    while let Ok(event) = received.try_recv() {
        reports.forward(&shared.outbox, event);
    }

    let (status, failure_reason, message) = match outcome {
        Ok(Ok(())) => (
            pb::StepStatus::Succeeded,
            pb::FailureReason::Unspecified,
            String::new(),
        ),
        Ok(Err(failure)) => (pb::StepStatus::Failed, failure.reason, failure.message),
        Err(_panic) => (
            pb::StepStatus::Failed,
            pb::FailureReason::Internal,
            "the agent failed while applying the command".to_owned(),
        ),
    };
    reports.last_sequence += 1;
    let report = pb::StepReport {
        command_id: command.command_id.clone(),
        deployment_id: command.deployment_id.clone(),
        service_id: String::new(),
        step: COMMAND_STEP.to_owned(),
        status: status as i32,
        message: truncate(message),
        runtime_state: pb::RuntimeState::Unspecified as i32,
        failure_reason: failure_reason as i32,
        time: Some(now()),
        sequence: reports.last_sequence,
    };
    tracing::info!(command_id = %command.command_id, status = ?status, reason = ?failure_reason, "command finished");
    // Recorded before it is sent: once the orchestrator can see the outcome, a redelivery
    // (also to a restarted agent) is answered from the record, never applied again.
    if let Err(error) = shared
        .state
        .record(AppliedCommand::from_report(&report))
        .await
    {
        tracing::error!(%error, command_id = %command.command_id, "cannot record a finished command; a restarted agent may apply it again");
    }
    shared.running().remove(&command.command_id);
    shared.outbox.push(Up::StepReport(report));

    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            event = received.recv() => match event {
                None => return,
                Some(RuntimeEvent::Step(step)) => tracing::debug!(
                    command_id = %command.command_id,
                    step = %step.step,
                    "dropping a step reported after its command finished"
                ),
                Some(event) => reports.forward(&shared.outbox, event),
            },
        }
    }
}

/// Fills in what the session owns in a command's step reports.
struct StepNumbering {
    command_id: String,
    deployment_id: String,
    last_sequence: u32,
}

impl StepNumbering {
    fn forward(&mut self, outbox: &Outbox, event: RuntimeEvent) {
        match event {
            RuntimeEvent::Step(mut step) => {
                if step.service_id.is_empty() {
                    // Command-level reports are the session's: one from a runtime could be
                    // taken for the final one.
                    tracing::warn!(command_id = %self.command_id, step = %step.step, "dropping a runtime step without service_id");
                    return;
                }
                self.last_sequence += 1;
                step.command_id.clone_from(&self.command_id);
                step.deployment_id.clone_from(&self.deployment_id);
                step.sequence = self.last_sequence;
                step.message = truncate(std::mem::take(&mut step.message));
                if step.time.is_none() {
                    step.time = Some(now());
                }
                outbox.push(Up::StepReport(step));
            }
            RuntimeEvent::Status(status) => outbox.push(Up::WorkloadStatus(status)),
            RuntimeEvent::Log(chunk) => outbox.push_log(chunk),
        }
    }
}

/// The outgoing half of one stream: `Hello`, then — once the server welcomed the agent —
/// whatever the outbox holds, until `done`.
fn outgoing(
    hello: pb::Hello,
    shared: Arc<Shared>,
    welcomed: oneshot::Receiver<()>,
    done: CancellationToken,
) -> impl Stream<Item = pb::ConnectRequest> + Send + 'static {
    let hello = futures::stream::once(std::future::ready(request(Up::Hello(hello))));
    let rest = futures::stream::unfold(
        (shared, done, Some(welcomed)),
        |(shared, done, welcomed)| async move {
            if let Some(welcomed) = welcomed {
                tokio::select! {
                    biased;
                    () = done.cancelled() => return None,
                    result = welcomed => result.ok()?,
                }
            }
            let message = tokio::select! {
                biased;
                () = done.cancelled() => return None,
                message = shared.outbox.next() => message,
            };
            if let Up::StepReport(report) = &message
                && report.service_id.is_empty()
            {
                shared.sent_finals().push(report.command_id.clone());
            }
            Some((request(message), (shared, done, None)))
        },
    );
    hello.chain(rest)
}

fn request(message: Up) -> pb::ConnectRequest {
    pb::ConnectRequest {
        message: Some(message),
    }
}

fn heartbeat_message(ping_id: String) -> Up {
    Up::Heartbeat(pb::Heartbeat {
        time: Some(now()),
        ping_id,
    })
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// Cuts `message` to the protocol's 1024 bytes, on a character boundary.
fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

/// The orchestrator's endpoint, with TLS for `https://` addresses (public roots) and
/// HTTP/2 keep-alives so a dead connection is noticed between heartbeats.
fn endpoint(url: &str) -> Result<Endpoint, SessionError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| SessionError::OrchestratorUrl(error.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_webpki_roots())
            .map_err(|error| SessionError::OrchestratorUrl(error.to_string()))?;
    }
    Ok(endpoint)
}

/// Exponential backoff between reconnects: `min` doubling up to `max`, each delay shortened
/// by a random 0–25 % so agents dropped together do not all return at the same instant.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // Without randomness (no OS source) the delay is simply not shortened.
        let random = getrandom::u32().unwrap_or(0);
        let shortening = f64::from(random) / f64::from(u32::MAX) * 0.25;
        base.mul_f64(1.0 - shortening)
    }
}

/// What waits to go up the stream. It outlives streams: reports of commands that run on
/// while the agent reconnects are sent on the next stream.
///
/// Three queues, drained in order: urgent (heartbeats), reliable (acks, step reports,
/// workload statuses: small and few, never dropped) and logs, which are bounded — when the
/// orchestrator is slow or unreachable new chunks are dropped and counted, and the next
/// chunk kept from the same instance and stream carries the count in `dropped_count`.
struct Outbox {
    queues: Mutex<Queues>,
    ready: Notify,
    log_capacity: usize,
    /// Applied to every chunk queued, whichever runtime sent it.
    mask: SecretMask,
}

#[derive(Default)]
struct Queues {
    urgent: VecDeque<Up>,
    reliable: VecDeque<Up>,
    logs: VecDeque<pb::LogChunk>,
    /// Lines dropped per source since its last kept chunk.
    dropped: HashMap<LogSource, u64>,
}

/// Where log lines come from: one instance's stream.
#[derive(Clone, PartialEq, Eq, Hash)]
struct LogSource {
    environment_id: String,
    service_id: String,
    instance: String,
    stream: i32,
}

impl LogSource {
    fn of(chunk: &pb::LogChunk) -> Self {
        Self {
            environment_id: chunk.environment_id.clone(),
            service_id: chunk.service_id.clone(),
            instance: chunk.instance.clone(),
            stream: chunk.stream,
        }
    }
}

impl Outbox {
    fn new(log_capacity: usize) -> Self {
        Self {
            queues: Mutex::new(Queues::default()),
            ready: Notify::new(),
            log_capacity: log_capacity.max(1),
            mask: SecretMask::default(),
        }
    }

    fn queues(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a heartbeat ahead of everything else.
    fn push_urgent(&self, message: Up) {
        self.queues().urgent.push_back(message);
        self.ready.notify_one();
    }

    /// Queues a message that must not be dropped. A workload status replaces a queued,
    /// unsent one of the same workload: only the latest state matters.
    fn push(&self, message: Up) {
        {
            let mut queues = self.queues();
            if let Up::WorkloadStatus(status) = &message
                && let Some(queued) = queues.reliable.iter_mut().find(|queued| {
                    matches!(queued, Up::WorkloadStatus(old)
                        if old.environment_id == status.environment_id
                            && old.service_id == status.service_id)
                })
            {
                *queued = message;
            } else {
                queues.reliable.push_back(message);
            }
        }
        self.ready.notify_one();
    }

    /// Queues a log chunk, or drops and counts it when the log queue is full.
    fn push_log(&self, mut chunk: pb::LogChunk) {
        self.mask.apply(&mut chunk);
        {
            let mut queues = self.queues();
            let source = LogSource::of(&chunk);
            if queues.logs.len() >= self.log_capacity {
                let lines = chunk.lines.len() as u64 + chunk.dropped_count;
                *queues.dropped.entry(source).or_default() += lines;
                return;
            }
            if let Some(dropped) = queues.dropped.remove(&source) {
                chunk.dropped_count += dropped;
            }
            queues.logs.push_back(chunk);
        }
        self.ready.notify_one();
    }

    /// Forgets what belonged to the previous stream: heartbeats, acks (the server resends
    /// unacknowledged commands) and workload statuses (the resync that follows supersedes
    /// them).
    fn begin_stream(&self) {
        let mut queues = self.queues();
        queues.urgent.clear();
        queues
            .reliable
            .retain(|message| !matches!(message, Up::CommandAck(_) | Up::WorkloadStatus(_)));
    }

    fn pop(&self) -> Option<Up> {
        let mut queues = self.queues();
        queues
            .urgent
            .pop_front()
            .or_else(|| queues.reliable.pop_front())
            .or_else(|| queues.logs.pop_front().map(Up::LogChunk))
    }

    /// The next message to send, waiting for one.
    async fn next(&self) -> Up {
        loop {
            let ready = self.ready.notified();
            if let Some(message) = self.pop() {
                return message;
            }
            ready.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(instance: &str, lines: usize) -> pb::LogChunk {
        pb::LogChunk {
            service_id: "s".into(),
            instance: instance.into(),
            lines: vec![pb::LogChunkLine::default(); lines],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn logs_beyond_capacity_are_dropped_and_counted_on_the_next_kept_chunk() {
        let outbox = Outbox::new(1);
        outbox.push_log(chunk("a", 1));
        outbox.push_log(chunk("a", 3));
        outbox.push_log(chunk("a", 2));
        assert!(matches!(outbox.next().await, Up::LogChunk(c) if c.dropped_count == 0));
        outbox.push_log(chunk("a", 4));
        match outbox.next().await {
            Up::LogChunk(c) => {
                assert_eq!(c.lines.len(), 4);
                assert_eq!(c.dropped_count, 5);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn heartbeats_go_first_and_statuses_coalesce() {
        let outbox = Outbox::new(10);
        let status = |state: pb::RuntimeState| {
            Up::WorkloadStatus(pb::WorkloadStatus {
                environment_id: "e".into(),
                service_id: "s".into(),
                runtime_state: state as i32,
                ..Default::default()
            })
        };
        outbox.push_log(chunk("a", 1));
        outbox.push(status(pb::RuntimeState::Starting));
        outbox.push(status(pb::RuntimeState::Running));
        outbox.push_urgent(heartbeat_message("p".into()));
        assert!(matches!(outbox.next().await, Up::Heartbeat(h) if h.ping_id == "p"));
        assert!(
            matches!(outbox.next().await, Up::WorkloadStatus(s) if s.runtime_state() == pb::RuntimeState::Running)
        );
        assert!(matches!(outbox.next().await, Up::LogChunk(_)));
        assert!(outbox.pop().is_none());
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_at_most_a_quarter_off() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut bases = Vec::new();
        for _ in 0..9 {
            let base = backoff.next;
            let delay = backoff.next_delay();
            assert!(
                delay <= base && delay >= base.mul_f64(0.75),
                "{delay:?} {base:?}"
            );
            bases.push(base.as_secs());
        }
        assert_eq!(bases, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.next, Duration::from_secs(1));
    }

    #[test]
    fn messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(600);
        let cut = truncate(long);
        assert!(cut.len() <= MAX_MESSAGE_LEN);
        assert_eq!(cut.chars().count(), 512);
    }
}
