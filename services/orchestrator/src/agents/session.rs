//! One accepted `Connect` stream: commands down, reports up, heartbeats watched.
//!
//! Commands come from the cluster's durable consumer on the `AGENT` stream (durable name
//! [`durable_name`], filter `slipway.agent.<cluster>.commands`). A delivery is held until
//! the command is finished — the agent's final command-level `StepReport` has been relayed,
//! or its `CommandAck` says it was a duplicate or rejected — and only then acknowledged to
//! NATS (kept alive with "in progress" meanwhile). An accepted command whose agent dies
//! before finishing it thus comes back to the next session, and the restarted agent (which
//! did not record it as applied) runs it; acknowledging on `CommandAck` would lose it.
//! `AGENT` is a work queue, so the final acknowledgement removes the command, and its
//! secrets, from the stream. When the session ends, every delivery still
//! held is nacked so the next session (on any replica) gets it at once rather than after
//! the ack wait. The durable must start from the beginning of the stream (a work queue
//! allows nothing else) and be the only consumer whose filter covers the cluster's
//! commands.
//!
//! Commands carry secrets in clear: nothing here logs a command or its payload, only ids.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use slipway_events::{
    Consumer, ConsumerSpec, DeliverFrom, Delivery, EventBus, EventBusExt as _, EventsError,
    StreamKind, Subscription, subject,
};
use slipway_proto::agent::v1 as pb;
use slipway_proto::agent::v1::connect_request::Message as Up;
use slipway_proto::agent::v1::connect_response::Message as Down;
use slipway_proto::catalog::v1 as catalog_pb;
use slipway_proto::{ApiError, PreconditionViolation};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming};
use tracing::Instrument as _;
use uuid::Uuid;

use super::auth::AgentIdentity;
use super::registry::sessions_subject;
use super::{Agents, relay};
use crate::catalog::CatalogClient;

/// Messages buffered towards the agent before the session waits for it to read.
const OUTBOUND_BUFFER: usize = 64;

/// Most buffered deliveries handed back when a session ends (the prefetch is 1).
const DRAIN_LIMIT: usize = 16;

/// Heartbeats an agent may miss before its stream ends with `UNAVAILABLE`.
const MISSED_HEARTBEATS: u32 = 3;

/// The durable consumer of `cluster_id`'s commands, shared by every session of the
/// cluster on every replica, so its position and unacknowledged commands survive them.
pub fn durable_name(cluster_id: &str) -> String {
    format!("agent-commands-{cluster_id}")
}

/// What [`Session::start`] needs: an authenticated agent whose `Hello` was checked.
pub struct Start {
    pub agents: Agents,
    pub catalog: CatalogClient,
    pub bus: Arc<dyn EventBus>,
    pub identity: AgentIdentity,
    pub hello: pb::Hello,
    pub inbound: Streaming<pb::ConnectRequest>,
}

/// A running session; lives in its own task until the stream ends.
pub struct Session {
    agents: Agents,
    catalog: CatalogClient,
    bus: Arc<dyn EventBus>,
    cluster_id: String,
    organization_id: String,
    session_id: String,
    agent_version: String,
    reports_subject: String,
    inbound: Streaming<pb::ConnectRequest>,
    outbound: mpsc::Sender<Result<pb::ConnectResponse, Status>>,
    consumer: Consumer,
    notices: Option<Subscription>,
    replaced: CancellationToken,
    /// Commands the agent said (in `Hello`) it has applied: settled at once, not resent.
    applied: HashSet<String>,
    /// Commands the agent said (in `Hello`) it is still applying: held, not resent; they
    /// settle when their final report arrives on this stream.
    running: HashSet<String>,
    /// Commands whose final report this session relayed: a late redelivery is settled.
    finished: HashSet<String>,
    /// Deliveries of commands not finished yet (sent, or running on the agent).
    pending: HashMap<String, Delivery>,
    last_heartbeat: Instant,
    last_heartbeat_time: SystemTime,
    last_report: Instant,
    outstanding_ping: Option<String>,
}

/// How a session ended.
enum End {
    /// The agent closed its side, or the connection dropped: nothing left to tell it.
    Gone,
    /// Replaced by a newer stream of the cluster (`ABORTED`).
    Replaced,
    /// Ended with this status (missed heartbeats, shutdown, malformed message…).
    Status(Status),
}

impl Session {
    /// Reports the connection to catalog, takes over the cluster (ending older sessions),
    /// binds the command consumer, and returns the stream, `Welcome` first.
    pub async fn start(
        start: Start,
    ) -> Result<ReceiverStream<Result<pb::ConnectResponse, Status>>, Status> {
        let Start {
            agents,
            catalog,
            bus,
            identity,
            hello,
            inbound,
        } = start;
        let settings = agents.settings().clone();
        let cluster_id = identity.cluster_id.clone();
        let now = SystemTime::now();
        report_connected(&catalog, &settings, &cluster_id, &hello.agent_version, now).await?;

        let unavailable = |error: EventsError| {
            tracing::warn!(%error, cluster_id = %cluster_id, "agent session cannot start");
            Status::unavailable("the command queue is not reachable right now: retry later")
        };
        let commands_subject = subject::agent_commands(&cluster_id).map_err(unavailable)?;
        let reports_subject = subject::agent_reports(&cluster_id).map_err(unavailable)?;
        let notices_subject = sessions_subject(&cluster_id).map_err(unavailable)?;

        let session_id = Uuid::now_v7().to_string();
        let welcome = pb::Welcome {
            session_id: session_id.clone(),
            heartbeat_interval: prost_types::Duration::try_from(settings.heartbeat_interval).ok(),
            server_time: Some(now.into()),
        };
        // Follow other replicas' notices before announcing ours (see `registry`).
        let notices = bus.subscribe(&notices_subject).await.map_err(unavailable)?;
        let replaced = agents.registry.register(&cluster_id, &session_id);
        // An ephemeral notice, outside the AGENT work queue (see `registry`).
        if let Err(error) = bus
            .notify_proto(&notices_subject, &session_id, &welcome)
            .await
        {
            agents.registry.deregister(&cluster_id, &session_id);
            return Err(unavailable(error));
        }
        let consumer = bus
            .consumer(
                ConsumerSpec::new(StreamKind::Agent, durable_name(&cluster_id))
                    .filter(commands_subject)
                    .ack_wait(settings.command_ack_wait)
                    .deliver_from(DeliverFrom::All),
            )
            .await;
        let consumer = match consumer {
            Ok(consumer) => consumer,
            Err(error) => {
                agents.registry.deregister(&cluster_id, &session_id);
                return Err(unavailable(error));
            }
        };

        let (outbound, receiver) = mpsc::channel(OUTBOUND_BUFFER);
        // The buffer is empty: this cannot wait.
        let _ = outbound
            .send(Ok(pb::ConnectResponse {
                message: Some(Down::Welcome(welcome)),
            }))
            .await;

        let applied = hello.applied_command_ids.iter().cloned().collect();
        let running = hello.running_command_ids.iter().cloned().collect();
        let span = tracing::info_span!(
            "agent_session",
            cluster_id = %cluster_id,
            session_id = %session_id,
            agent_version = %hello.agent_version,
            agent_instance_id = %hello.agent_instance_id,
        );
        let session = Session {
            agents,
            catalog,
            bus,
            organization_id: identity.organization_id,
            cluster_id,
            session_id,
            agent_version: hello.agent_version,
            reports_subject,
            inbound,
            outbound,
            consumer,
            notices: Some(notices),
            replaced,
            applied,
            running,
            finished: HashSet::new(),
            pending: HashMap::new(),
            last_heartbeat: Instant::now(),
            last_heartbeat_time: now,
            last_report: Instant::now(),
            outstanding_ping: None,
        };
        tokio::spawn(session.run().instrument(span));
        Ok(ReceiverStream::new(receiver))
    }

    async fn run(mut self) {
        tracing::info!("agent connected");
        let interval = self.agents.settings().heartbeat_interval;
        let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.agents.shutdown.clone();
        let replaced = self.replaced.clone();
        let end = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    break End::Status(Status::unavailable("the server is shutting down"));
                }
                () = replaced.cancelled() => break End::Replaced,
                () = self.outbound.closed() => break End::Gone,
                notice = next_notice(&mut self.notices) => {
                    if let Some(end) = self.on_notice(notice) {
                        break end;
                    }
                }
                message = self.inbound.next() => {
                    let outcome = match message {
                        None => Err(End::Gone),
                        Some(Err(status)) => {
                            tracing::debug!(code = ?status.code(), "agent stream failed");
                            Err(End::Gone)
                        }
                        Some(Ok(message)) => self.on_message(message).await,
                    };
                    if let Err(end) = outcome {
                        break end;
                    }
                }
                delivery = self.consumer.next() => {
                    let outcome = match delivery {
                        None => Err(End::Status(Status::unavailable(
                            "the command queue closed: reconnect",
                        ))),
                        Some(Err(error)) => {
                            // Usually transient (a reconnect); the consumer goes on.
                            tracing::debug!(%error, "command consumer hiccup");
                            Ok(())
                        }
                        Some(Ok(delivery)) => self.on_delivery(delivery).await,
                    };
                    if let Err(end) = outcome {
                        break end;
                    }
                }
                _ = tick.tick() => {
                    if let Err(end) = self.on_tick().await {
                        break end;
                    }
                }
            }
        };
        self.finish(end).await;
    }

    /// A notice from another session of this cluster (any replica, this one included).
    fn on_notice(&mut self, notice: Option<slipway_events::LiveMessage>) -> Option<End> {
        let Some(notice) = notice else {
            // The bus is gone; the consumer will tell soon enough.
            self.notices = None;
            return None;
        };
        let newer = notice
            .decode::<pb::Welcome>()
            .is_ok_and(|welcome| welcome.session_id > self.session_id);
        newer.then_some(End::Replaced)
    }

    async fn on_message(&mut self, message: pb::ConnectRequest) -> Result<(), End> {
        let malformed = |field: &str, description: &str| {
            End::Status(ApiError::invalid_field(field, description).into())
        };
        match message.message {
            None => Err(malformed("message", "is required")),
            Some(Up::Hello(_)) => Err(malformed(
                "message",
                "hello is only allowed as the first message",
            )),
            Some(Up::Heartbeat(heartbeat)) => {
                if !heartbeat.ping_id.is_empty()
                    && self.outstanding_ping.as_deref() == Some(heartbeat.ping_id.as_str())
                {
                    self.outstanding_ping = None;
                }
                self.last_heartbeat = Instant::now();
                self.last_heartbeat_time = SystemTime::now();
                if self.last_report.elapsed() >= self.agents.settings().heartbeat_interval {
                    self.report_heartbeat();
                }
                Ok(())
            }
            Some(Up::CommandAck(ack)) => {
                if ack.command_id.is_empty() {
                    return Err(malformed("command_ack.command_id", "is required"));
                }
                let command_id = ack.command_id.clone();
                let settled = ack.result != pb::CommandAckResult::Accepted as i32;
                self.relay(pb::agent_report::Report::CommandAck(ack))
                    .await?;
                // Settled on NATS only once the agent's answer is on the reports subject
                // (were the relay lost, the redelivered command would make the agent
                // answer again, as a duplicate) and only when nothing more will come: an
                // accepted command settles with its final report.
                if settled {
                    self.settle(&command_id).await;
                }
                Ok(())
            }
            Some(Up::StepReport(report)) => {
                if report.command_id.is_empty() {
                    return Err(malformed("step_report.command_id", "is required"));
                }
                let command_id = report.command_id.clone();
                let is_final = report.service_id.is_empty()
                    && (report.status == pb::StepStatus::Succeeded as i32
                        || report.status == pb::StepStatus::Failed as i32);
                self.relay(pb::agent_report::Report::StepReport(report))
                    .await?;
                if is_final {
                    self.finished.insert(command_id.clone());
                    self.running.remove(&command_id);
                    self.settle(&command_id).await;
                }
                Ok(())
            }
            Some(Up::WorkloadStatus(status)) => {
                if status.service_id.is_empty() {
                    return Err(malformed("workload_status.service_id", "is required"));
                }
                self.relay(pb::agent_report::Report::WorkloadStatus(status))
                    .await
            }
            Some(Up::LogChunk(chunk)) => {
                self.relay_logs(chunk).await;
                Ok(())
            }
        }
    }

    /// Publishes one report; a bus that stays down ends the session, so the agent
    /// reconnects (and its unacknowledged commands come back) once it is up again.
    async fn relay(&mut self, report: pb::agent_report::Report) -> Result<(), End> {
        let report = relay::agent_report(&self.cluster_id, &self.session_id, report);
        relay::publish(
            self.bus.as_ref(),
            &self.reports_subject,
            &report.report_id,
            &report,
        )
        .await
        .map_err(|error| {
            tracing::warn!(%error, "cannot relay an agent report");
            End::Status(Status::unavailable(
                "reports cannot be relayed right now: reconnect",
            ))
        })
    }

    /// Publishes a chunk's lines; logs are best effort, so a failure drops the lines
    /// rather than the session.
    async fn relay_logs(&mut self, chunk: pb::LogChunk) {
        let batches = match relay::log_batches(&self.cluster_id, &self.organization_id, chunk) {
            Ok(batches) => batches,
            Err(reason) => {
                tracing::debug!(%reason, "log chunk dropped");
                return;
            }
        };
        for out in batches {
            if let Err(error) =
                relay::publish(self.bus.as_ref(), &out.subject, &out.batch.id, &out.batch).await
            {
                tracing::warn!(%error, lines = out.batch.lines.len(), "log lines dropped");
            }
        }
    }

    async fn on_delivery(&mut self, delivery: Delivery) -> Result<(), End> {
        let command = match delivery.decode::<pb::Command>() {
            Ok(command) if !command.command_id.is_empty() => command,
            _ => {
                // Never deliverable: acknowledged so it does not come back forever.
                tracing::error!(
                    stream_sequence = delivery.stream_sequence(),
                    "undecodable command dropped"
                );
                settle(delivery.ack().await);
                return Ok(());
            }
        };
        if self.applied.contains(&command.command_id) || self.finished.contains(&command.command_id)
        {
            tracing::debug!(command_id = %command.command_id, "command already applied by the agent");
            settle(delivery.ack().await);
            return Ok(());
        }
        let command_id = command.command_id.clone();
        if self.running.contains(&command_id) {
            // The agent is applying it: hold it until its final report, don't resend.
            tracing::debug!(%command_id, "command still running on the agent");
            self.pending.insert(command_id, delivery);
            return Ok(());
        }
        tracing::debug!(%command_id, attempt = delivery.attempt(), "command sent to the agent");
        // A redelivery replaces the earlier handle: NATS settles the latest one.
        self.pending.insert(command_id, delivery);
        self.send(Down::Command(command)).await
    }

    /// Acknowledges a finished command's delivery to NATS (removing it from the stream).
    async fn settle(&mut self, command_id: &str) {
        if let Some(delivery) = self.pending.remove(command_id)
            && let Err(error) = delivery.ack().await
        {
            // The command comes back after the ack wait; the agent answers it as a
            // duplicate and resends its final report.
            tracing::warn!(%error, %command_id, "cannot acknowledge a command");
        }
    }

    async fn on_tick(&mut self) -> Result<(), End> {
        // Commands being applied can take longer than the ack wait (rollouts, jobs): keep
        // their deliveries ours while this session lives.
        for delivery in self.pending.values() {
            if let Err(error) = delivery.in_progress().await {
                tracing::debug!(%error, "cannot extend a command's ack wait");
            }
        }
        let interval = self.agents.settings().heartbeat_interval;
        let silent = self.last_heartbeat.elapsed();
        if silent >= interval * MISSED_HEARTBEATS {
            return Err(End::Status(Status::unavailable(format!(
                "no heartbeat for {} s ({MISSED_HEARTBEATS} missed): reconnect",
                silent.as_secs()
            ))));
        }
        // One heartbeat late: ask for one.
        if silent >= interval + interval / 2 && self.outstanding_ping.is_none() {
            let ping_id = Uuid::now_v7().simple().to_string();
            self.outstanding_ping = Some(ping_id.clone());
            self.send(Down::Ping(pb::Ping {
                ping_id,
                time: Some(SystemTime::now().into()),
            }))
            .await?;
        }
        Ok(())
    }

    async fn send(&mut self, message: Down) -> Result<(), End> {
        self.outbound
            .send(Ok(pb::ConnectResponse {
                message: Some(message),
            }))
            .await
            .map_err(|_| End::Gone)
    }

    /// Sends the latest heartbeat to catalog in the background: catalog ignores a report
    /// older than the one it holds, so reports racing each other do no harm.
    fn report_heartbeat(&mut self) {
        self.last_report = Instant::now();
        let catalog = self.catalog.clone();
        let timeout = self.agents.settings().catalog_timeout;
        let request = catalog_pb::ReportClusterConnectionRequest {
            cluster_id: self.cluster_id.clone(),
            connected: true,
            heartbeat_time: Some(self.last_heartbeat_time.into()),
            agent_version: self.agent_version.clone(),
        };
        tokio::spawn(
            async move {
                match tokio::time::timeout(timeout, catalog.report_connection(request)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "heartbeat not recorded"),
                    Err(_) => tracing::warn!("heartbeat not recorded: catalog too slow"),
                }
            }
            .in_current_span(),
        );
    }

    async fn finish(mut self, end: End) {
        let replaced = matches!(end, End::Replaced);
        match end {
            End::Gone => tracing::info!("agent disconnected"),
            End::Replaced => {
                tracing::info!("agent session replaced by a newer stream");
                let _ = self
                    .outbound
                    .send(Err(Status::aborted(
                        "replaced by a newer stream of this cluster",
                    )))
                    .await;
            }
            End::Status(status) => {
                tracing::info!(code = ?status.code(), reason = status.message(), "agent session ended");
                let _ = self.outbound.send(Err(status)).await;
            }
        }
        // Deliveries already pulled but not yet taken would otherwise wait out the ack
        // wait: take them, then stop pulling *before* handing anything back, or NATS could
        // redeliver a nacked command straight into this session's own pull, where it would
        // sit unseen until the ack wait ran out instead of reaching the next session.
        let mut consumer = self.consumer;
        let mut buffered = Vec::new();
        for _ in 0..DRAIN_LIMIT {
            match tokio::time::timeout(Duration::from_millis(1), consumer.next()).await {
                Ok(Some(Ok(delivery))) => buffered.push(delivery),
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        drop(consumer);
        for (command_id, delivery) in self.pending.drain() {
            if let Err(error) = delivery.nack(None).await {
                tracing::debug!(%error, %command_id, "command comes back after the ack wait");
            }
        }
        for delivery in buffered {
            settle(delivery.nack(None).await);
        }
        self.agents
            .registry
            .deregister(&self.cluster_id, &self.session_id);
        // A replaced session leaves the connection state to its successor.
        if !replaced {
            let request = catalog_pb::ReportClusterConnectionRequest {
                cluster_id: self.cluster_id.clone(),
                connected: false,
                heartbeat_time: Some(self.last_heartbeat_time.into()),
                agent_version: String::new(),
            };
            let timeout = self.agents.settings().catalog_timeout;
            match tokio::time::timeout(timeout, self.catalog.report_connection(request)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "disconnect not recorded"),
                Err(_) => tracing::warn!("disconnect not recorded: catalog too slow"),
            }
        }
    }
}

/// The next notice, or never when notices are no longer followed.
async fn next_notice(notices: &mut Option<Subscription>) -> Option<slipway_events::LiveMessage> {
    match notices {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}

fn settle(result: Result<(), EventsError>) {
    if let Err(error) = result {
        tracing::debug!(%error, "a command could not be settled; it comes back");
    }
}

/// The connect report: a cluster catalog no longer knows (deleted since the token was
/// checked) or that cannot have an agent refuses the stream with `FAILED_PRECONDITION`.
/// Catalog being unreachable does not: the heartbeats will record the connection.
async fn report_connected(
    catalog: &CatalogClient,
    settings: &super::AgentSettings,
    cluster_id: &str,
    agent_version: &str,
    now: SystemTime,
) -> Result<(), Status> {
    let request = catalog_pb::ReportClusterConnectionRequest {
        cluster_id: cluster_id.to_owned(),
        connected: true,
        heartbeat_time: Some(now.into()),
        agent_version: agent_version.to_owned(),
    };
    match tokio::time::timeout(settings.catalog_timeout, catalog.report_connection(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) if error.0.code() == Code::NotFound => Err(ApiError::FailedPrecondition {
            message: "the cluster was deleted: uninstall this agent".to_owned(),
            violations: vec![PreconditionViolation {
                kind: "CLUSTER_DELETED".to_owned(),
                subject: format!("clusters/{cluster_id}"),
                description: "the cluster no longer exists".to_owned(),
            }],
        }
        .into()),
        Ok(Err(error)) if error.0.code() == Code::FailedPrecondition => {
            Err(Status::failed_precondition(error.0.message().to_owned()))
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, cluster_id, "connection not recorded");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(cluster_id, "connection not recorded: catalog too slow");
            Ok(())
        }
    }
}
