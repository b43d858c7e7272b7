//! `slipway.agent.v1.AgentService`: the agents' `Connect` streams.
//!
//! One agent runs per cluster and keeps one bidirectional stream open to whichever
//! orchestrator replica its connection reached. The replica holding a cluster's stream:
//!
//! - authenticates the agent with catalog (agent tokens live there, not in identity, so the
//!   user-token `AuthenticateLayer` is not in front of this service) — [`auth`];
//! - consumes the cluster's commands, `slipway.agent.<cluster>.commands` on the `AGENT`
//!   stream, with one durable consumer per cluster, so a command published while no agent
//!   is connected waits and one the agent never acknowledged comes back; `AGENT` is a work
//!   queue, so a command (which carries secrets in clear) leaves NATS once the agent has
//!   answered it — [`session`];
//! - relays the agent's reports to `slipway.agent.<cluster>.reports` and its workloads'
//!   output to `slipway.logs.…` — [`relay`];
//! - keeps the cluster's connection state in catalog up to date, and makes sure only the
//!   newest stream of a cluster lives, within this replica and across replicas —
//!   [`registry`].

pub mod auth;
pub mod registry;
pub mod relay;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use slipway_config::ConfigError;
use slipway_events::EventBus;
use slipway_kit::GrpcServer;
use slipway_proto::agent::v1 as pb;
use slipway_proto::agent::v1::agent_service_server::{AgentService, AgentServiceServer};
use slipway_service::Platform;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::Settings;
use crate::catalog::CatalogClient;

/// How agent sessions are timed. The defaults are the production values; tests shorten
/// them so that missed heartbeats and redeliveries show within seconds.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// `Welcome.heartbeat_interval`: how often the agent must send a `Heartbeat`, and at
    /// most how often the connection is reported to catalog (which needs one every 30 s).
    pub heartbeat_interval: Duration,
    /// How long a new stream may take to send its `Hello` (the contract says 10 s).
    pub hello_timeout: Duration,
    /// How long a command sent to the agent may stay without `CommandAck` before NATS
    /// delivers it again (the agent answers a repeat with `DUPLICATE`).
    pub command_ack_wait: Duration,
    /// Longest wait for one catalog call made for a session (connect, heartbeat and
    /// disconnect reports), so a slow catalog cannot hold a stream up.
    pub catalog_timeout: Duration,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            command_ack_wait: Duration::from_secs(30),
            catalog_timeout: Duration::from_secs(5),
        }
    }
}

/// The agent sessions of this replica: their settings, which cluster has a stream here,
/// and the switch that ends them all when the server shuts down. Cheap to clone; create
/// it before the server so the shutdown path can hold a clone (see [`Agents::shutdown`]).
#[derive(Clone, Debug)]
pub struct Agents {
    settings: AgentSettings,
    registry: Arc<registry::Registry>,
    shutdown: CancellationToken,
}

impl Agents {
    pub fn new(settings: AgentSettings) -> Self {
        Self {
            settings,
            registry: Arc::new(registry::Registry::default()),
            shutdown: CancellationToken::new(),
        }
    }

    /// Ends every stream of this replica with `UNAVAILABLE` (the agents reconnect, to
    /// another replica if there is one) and refuses new ones. Call it when the server
    /// starts shutting down: graceful shutdown waits for open streams, which would
    /// otherwise never end.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// The clusters whose agent holds a stream on this replica right now.
    pub fn connected_clusters(&self) -> Vec<String> {
        self.registry.clusters()
    }

    pub fn settings(&self) -> &AgentSettings {
        &self.settings
    }
}

impl Default for Agents {
    fn default() -> Self {
        Self::new(AgentSettings::default())
    }
}

/// Serves `AgentService` on `server`: agents authenticated by `catalog`, commands and
/// reports on `platform.bus`, sessions tracked by `agents`.
pub fn mount_agents(
    server: GrpcServer,
    platform: &Platform,
    catalog: CatalogClient,
    agents: &Agents,
) -> GrpcServer {
    server.add_service(AgentServiceServer::new(AgentServiceImpl {
        agents: agents.clone(),
        catalog,
        bus: Arc::clone(&platform.bus),
    }))
}

/// The client of catalog a standalone orchestrator uses: `[catalog] url`, presenting
/// `[auth] service_credential`. Both are required: without them no agent could ever be
/// authenticated, which must stop start-up rather than refuse every agent later.
pub fn catalog_client(settings: &Settings) -> Result<CatalogClient, ConfigError> {
    let url = settings.catalog.url.clone().ok_or_else(|| {
        ConfigError::invalid(
            "catalog.url",
            "must be set to catalog's address (for example http://catalog:7802): \
             the orchestrator authenticates agents and reads environments there",
        )
    })?;
    let credential = slipway_service::service_credential(&settings.service)
        .map_err(|error| match error {
            slipway_service::ServiceError::Config(config) => config,
            other => ConfigError::invalid("auth.service_credential", other.to_string()),
        })?
        .ok_or_else(|| {
            ConfigError::invalid(
                "auth.service_credential",
                "must be set: the orchestrator calls catalog's internal api as the control plane",
            )
        })?;
    let channel = slipway_service::lazy_channel(url, "catalog.url")?;
    CatalogClient::new(channel, credential)
        .map_err(|error| ConfigError::invalid("auth.service_credential", error.to_string()))
}

/// The tonic service: one [`session::Session`] task per accepted stream.
#[derive(Clone)]
struct AgentServiceImpl {
    agents: Agents,
    catalog: CatalogClient,
    bus: Arc<dyn EventBus>,
}

#[tonic::async_trait]
impl AgentService for AgentServiceImpl {
    type ConnectStream = ReceiverStream<Result<pb::ConnectResponse, Status>>;

    /// Everything that can refuse the stream (token, `Hello`, cluster) is decided here,
    /// before the response starts, so the agent sees the refusal as the call's status.
    async fn connect(
        &self,
        request: Request<Streaming<pb::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        if self.agents.shutdown.is_cancelled() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let token = auth::bearer(request.metadata())?;
        let identity = auth::authenticate(&self.catalog, token).await?;
        let mut inbound = request.into_inner();
        let hello = auth::read_hello(&mut inbound, self.agents.settings.hello_timeout).await?;
        auth::check_hello(&hello, &identity)?;
        let stream = session::Session::start(session::Start {
            agents: self.agents.clone(),
            catalog: self.catalog.clone(),
            bus: Arc::clone(&self.bus),
            identity,
            hello,
            inbound,
        })
        .await?;
        Ok(Response::new(stream))
    }
}
