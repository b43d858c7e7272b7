#![forbid(unsafe_code)]
//! `slipway-agent`: one per cluster. It holds the cluster's `AgentService.Connect` stream to
//! the orchestrator ([`session`]) and applies each command on Kubernetes or as local
//! processes ([`runtime`]), remembering finished commands across restarts ([`state`]).
//!
//! It also serves health and reflection, so it can be deployed and probed. Without an
//! `[agent]` section it serves only those and says so at start.

pub mod mask;
pub mod runtime;
pub mod session;
pub mod state;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use slipway_config::{ConfigError, ServerSettings, TelemetrySettings, Validate};
use slipway_kit::GrpcServer;
use slipway_telemetry::metrics::Metrics;
use tokio::net::TcpListener;

/// The process and service name, in logs, traces and metrics.
pub const SERVICE_NAME: &str = "slipway-agent";

/// Everything `slipway-agent` reads from its file and `SLIPWAY__…` variables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
    /// `[agent]`: the orchestrator to connect to and how to run workloads. Unset, the agent
    /// only serves health (as before the agent existed; the binary tests rely on it).
    pub agent: Option<AgentSettings>,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        match &self.agent {
            Some(agent) => agent.validate(),
            None => Ok(()),
        }
    }
}

/// Where workloads run (`agent.runtime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeChoice {
    /// Local processes: `slipway dev` and the end-to-end tests.
    Process,
    /// Kubernetes objects in the agent's cluster. The default, because the install manifest
    /// catalog generates does not set a runtime.
    #[default]
    Kubernetes,
}

/// `[agent]`: the session with the orchestrator. The install manifest sets the first three
/// as `SLIPWAY__AGENT__TOKEN`, `SLIPWAY__AGENT__ORCHESTRATOR_URL` and
/// `SLIPWAY__AGENT__CLUSTER_ID`.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// The orchestrator's gRPC address, `http://…` or `https://…` (public CA roots).
    pub orchestrator_url: String,
    /// The cluster's agent token. Secret: never printed by `Debug`.
    pub token: String,
    /// The cluster this agent speaks for; commands for another cluster are rejected.
    pub cluster_id: String,
    /// Where the agent keeps the commands it finished (and the process runtime its
    /// environments). The default lies under `/tmp` because the Kubernetes manifest mounts a
    /// writable volume only there (the root file system is read-only); it survives container
    /// restarts within the pod.
    pub state_dir: PathBuf,
    /// `process` or `kubernetes`.
    pub runtime: RuntimeChoice,
    /// First delay before reconnecting, doubled after each failed attempt. The protocol says
    /// 1 s; tests shorten it.
    pub reconnect_min_backoff_ms: u64,
    /// Longest delay between reconnect attempts. The protocol says 60 s.
    pub reconnect_max_backoff_ms: u64,
    /// Log chunks queued for the orchestrator; beyond it new ones are dropped and counted
    /// (`LogChunk.dropped_count`), so a slow control plane cannot grow the agent's memory.
    pub log_queue_chunks: usize,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            orchestrator_url: String::new(),
            token: String::new(),
            cluster_id: String::new(),
            state_dir: PathBuf::from("/tmp/slipway-agent"),
            runtime: RuntimeChoice::default(),
            reconnect_min_backoff_ms: 1_000,
            reconnect_max_backoff_ms: 60_000,
            log_queue_chunks: 1024,
        }
    }
}

/// Written by hand so that settings can be logged without leaking the token.
impl std::fmt::Debug for AgentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSettings")
            .field("orchestrator_url", &self.orchestrator_url)
            .field(
                "token",
                &if self.token.is_empty() {
                    "<unset>"
                } else {
                    "<redacted>"
                },
            )
            .field("cluster_id", &self.cluster_id)
            .field("state_dir", &self.state_dir)
            .field("runtime", &self.runtime)
            .field("reconnect_min_backoff_ms", &self.reconnect_min_backoff_ms)
            .field("reconnect_max_backoff_ms", &self.reconnect_max_backoff_ms)
            .field("log_queue_chunks", &self.log_queue_chunks)
            .finish()
    }
}

impl AgentSettings {
    /// The first reconnect delay.
    pub fn reconnect_min_backoff(&self) -> Duration {
        Duration::from_millis(self.reconnect_min_backoff_ms)
    }

    /// The longest reconnect delay.
    pub fn reconnect_max_backoff(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_backoff_ms)
    }
}

impl Validate for AgentSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let rest = ["http://", "https://"]
            .iter()
            .find_map(|scheme| self.orchestrator_url.strip_prefix(scheme));
        if !rest.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/')) {
            return Err(ConfigError::invalid(
                "agent.orchestrator_url",
                "is required: an http:// or https:// URL, for example https://slipway.example.com",
            ));
        }
        if self.token.is_empty() {
            return Err(ConfigError::invalid(
                "agent.token",
                "is required: the cluster's agent token",
            ));
        }
        // The message never quotes the value: it is a secret.
        if !self.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::invalid(
                "agent.token",
                "must be printable ASCII without spaces",
            ));
        }
        if self.cluster_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "agent.cluster_id",
                "is required: the id of the cluster this agent runs in",
            ));
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("agent.state_dir", "must not be empty"));
        }
        if self.reconnect_min_backoff_ms == 0 {
            return Err(ConfigError::invalid(
                "agent.reconnect_min_backoff_ms",
                "must be greater than 0",
            ));
        }
        if self.reconnect_max_backoff_ms < self.reconnect_min_backoff_ms {
            return Err(ConfigError::invalid(
                "agent.reconnect_max_backoff_ms",
                "must be at least agent.reconnect_min_backoff_ms",
            ));
        }
        if self.log_queue_chunks == 0 {
            return Err(ConfigError::invalid(
                "agent.log_queue_chunks",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

impl slipway_kit::binary::HasTelemetry for Settings {
    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Metrics(#[from] slipway_telemetry::metrics::MetricsError),
    #[error(transparent)]
    Server(#[from] slipway_kit::KitError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Session(#[from] session::SessionError),
    #[error(transparent)]
    Kubernetes(#[from] runtime::kubernetes::KubernetesError),
}

/// Runs the agent until `shutdown` completes: the health endpoint on `listener` and, when
/// `[agent]` is set, the session with the orchestrator.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let server = GrpcServer::new(settings.server, Metrics::new(SERVICE_NAME)?);
    let Some(agent) = settings.agent else {
        tracing::warn!(
            "no [agent] settings (SLIPWAY__AGENT__ORCHESTRATOR_URL, SLIPWAY__AGENT__TOKEN, \
             SLIPWAY__AGENT__CLUSTER_ID): this agent serves health only and applies no commands"
        );
        server.serve(listener, shutdown).await?;
        return Ok(());
    };
    let runtime = build_runtime(&agent).await?;
    let session = session::Session::new(agent, runtime)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let session = tokio::spawn(session.run(stop.clone().cancelled_owned()));
    let stop_session = stop.clone();
    let served = server
        .serve(listener, async move {
            shutdown.await;
            stop_session.cancel();
        })
        .await;
    stop.cancel();
    if let Err(error) = session.await {
        tracing::error!(%error, "the agent session task failed");
    }
    served?;
    Ok(())
}

/// The runtime `agent.runtime` names, with its default timings. The process runtime keeps
/// each environment's directory under the agent's state directory (namespaces are DNS
/// labels, so they never clash with the session's state file).
async fn build_runtime(agent: &AgentSettings) -> Result<Arc<dyn runtime::Runtime>, Error> {
    Ok(match agent.runtime {
        RuntimeChoice::Process => Arc::new(runtime::process::ProcessRuntime::new(
            agent.state_dir.clone(),
        )),
        RuntimeChoice::Kubernetes => Arc::new(
            runtime::kubernetes::KubernetesRuntime::from_environment(
                runtime::kubernetes::KubernetesSettings::default(),
            )
            .await?,
        ),
    })
}
