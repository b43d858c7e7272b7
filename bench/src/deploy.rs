//! Deployments end to end, served as `slipway dev` runs them: identity, catalog and the
//! orchestrator (its `DeploymentService`, engine and `AgentService`) in one kit server on a
//! SQLite file and the in-memory bus, the orchestrator reaching catalog's internal API at
//! the server's own address with the control plane's credential. A real agent
//! ([`slipway_agent::session::Session`]) holds the cluster's `Connect` stream, with a
//! runtime whose commands complete at once ([`Immediate`]): what is measured is Slipway's
//! own path (API, queue, engine, plan freeze, bus, agent stream and its state file,
//! reports), never a workload starting.
//!
//! - one service: `DeployEnvironment` → `DEPLOYED` latency over sequential deployments of
//!   an environment of one CONTAINER service, p50/p99 beside the bare tonic echo floor's
//!   (concurrency 1); the target is p50 under 20 ms;
//! - 1,000 environments of one service each, deployed at once: wall time from the first
//!   `DeployEnvironment` to the last `DEPLOYED` observed, and deployments per second. Every
//!   one must end `DEPLOYED`, or the scenario fails.
//!
//! Completion is observed by polling `GetDeployment` every [`OBSERVE_POLL`]:
//! `WatchDeployment` checks the store every 250 ms (`WATCH_POLL` in the orchestrator's
//! API), which would make the figure the watch's period rather than the deployment's.
//! The engine runs with `EngineConfig::default()`, as `slipway dev` runs it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use hdrhistogram::Histogram;
use slipway_agent::runtime::{
    BoxFuture, CommandFailure, Runtime, RuntimeEvent, RuntimeEvents, Unsupported,
};
use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_config::{NatsSettings, ServerSettings};
use slipway_kit::GrpcServer;
use slipway_proto::agent::v1 as agent;
use slipway_proto::catalog::v1 as cat;
use slipway_proto::catalog::v1::cluster_service_client::ClusterServiceClient;
use slipway_proto::catalog::v1::environment_service_client::EnvironmentServiceClient;
use slipway_proto::catalog::v1::project_service_client::ProjectServiceClient;
use slipway_proto::catalog::v1::service_service_client::ServiceServiceClient;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::deploy::v1 as pb;
use slipway_proto::deploy::v1::deployment_service_client::DeploymentServiceClient;
use slipway_telemetry::metrics::Metrics;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::catalog::{authorized, container};
use crate::echo::{self, Floors, Measure};
use crate::report::Figure;

/// The target of the one-service latency (the orchestrator issue): p50 under this.
const P50_TARGET: Duration = Duration::from_millis(20);
/// Sequential deployments before the measured ones: connections, caches, the agent's
/// consumer.
const WARM_UP: usize = 20;
/// At most this many measured sequential deployments (fewer if the time budget, the
/// measurement duration times the rounds, runs out first).
const SERIAL_MAX: usize = 2_000;
/// Environments deployed at once.
const FLEET: usize = 1_000;
/// `DeployEnvironment` calls in flight while the fleet is submitted: the highest
/// concurrency the echo floor is measured at, well under the kit's concurrency limit.
const SUBMIT_CONCURRENCY: usize = 64;
/// Catalog calls in flight while seeding.
const SEED_CONCURRENCY: usize = 16;
/// How often a deployment not yet final is read again.
const OBSERVE_POLL: Duration = Duration::from_millis(1);
/// Longest the fleet may take before the scenario fails.
const FLEET_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest the agent may take to hold its stream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A runtime whose commands complete at once: one `Succeeded` step per workload, then
/// success. Counts the commands it executed, so the bench can tell the agent really ran.
#[derive(Debug, Default)]
struct Immediate {
    executed: AtomicUsize,
}

impl Runtime for Immediate {
    fn kind(&self) -> agent::RuntimeKind {
        agent::RuntimeKind::Process
    }

    fn version(&self) -> BoxFuture<'_, String> {
        Box::pin(async { "bench-immediate".to_owned() })
    }

    fn check(&self, _command: &agent::Command) -> Result<(), Unsupported> {
        Ok(())
    }

    fn execute<'a>(
        &'a self,
        command: &'a agent::Command,
        events: RuntimeEvents,
    ) -> BoxFuture<'a, Result<(), CommandFailure>> {
        Box::pin(async move {
            self.executed.fetch_add(1, Ordering::Relaxed);
            for workload in &command.workloads {
                // The session is the receiver; it outlives the command.
                let _ = events.send(RuntimeEvent::Step(agent::StepReport {
                    service_id: workload.service_id.clone(),
                    step: "apply".to_owned(),
                    status: agent::StepStatus::Succeeded.into(),
                    runtime_state: agent::RuntimeState::Running.into(),
                    ..Default::default()
                }));
            }
            Ok(())
        })
    }

    fn workloads(&self) -> BoxFuture<'_, Result<Vec<agent::WorkloadStatus>, CommandFailure>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// What the server's set-up hands back.
struct Served {
    server: GrpcServer,
    engine: slipway_orchestrator::engine::EngineHandle,
    agents: slipway_orchestrator::agents::Agents,
    organization_id: String,
    admin_token: String,
}

/// Identity, catalog and the orchestrator on `dir`'s SQLite file, mounted on one kit server
/// as `slipway dev` mounts them; `addr` is where the server will listen (the orchestrator
/// calls catalog there).
async fn serve(dir: std::path::PathBuf, addr: std::net::SocketAddr) -> anyhow::Result<Served> {
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("slipway.db").display());
    let db = slipway_db::connect(&url, 4, Duration::from_secs(5)).await?;
    let bus = slipway_events::in_memory(&NatsSettings::default()).await?;
    let control_plane = NewCredential::generate(CredentialKind::Service)?;
    let (identity, platform) = slipway_identity::Identity::shared(
        db.clone(),
        bus.clone(),
        slipway_identity::AuthOptions {
            service_credentials: vec![control_plane.hash()],
            ..slipway_identity::AuthOptions::default()
        },
    )
    .await?;
    let bootstrapped = slipway_identity::bootstrap(&platform, "bench").await?;
    let auth = identity.auth();
    let mut server = GrpcServer::new(ServerSettings::default(), Metrics::new("bench-deploy")?);
    server = identity.mount(server);
    let catalog = slipway_service::Platform::shared::<slipway_catalog::store::Migrator>(
        db.clone(),
        bus.clone(),
        auth.clone(),
    )
    .await?;
    server = slipway_catalog::mount(server, &catalog, slipway_catalog::MasterKey::generate()?);
    let orchestrator =
        slipway_service::Platform::shared::<slipway_orchestrator::store::Migrator>(db, bus, auth)
            .await?;
    let own_api = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
    let secret = control_plane.expose_secret();
    let catalog_client =
        slipway_orchestrator::catalog::CatalogClient::new(own_api.clone(), secret)?;
    let agents = slipway_orchestrator::agents::Agents::default();
    let (server, engine) = slipway_orchestrator::mount_with_catalog(
        server,
        &orchestrator,
        catalog_client,
        slipway_orchestrator::api::ServiceLookup::new(own_api, secret),
        &agents,
        slipway_orchestrator::engine::EngineConfig::default(),
    );
    Ok(Served {
        server,
        engine,
        agents,
        organization_id: bootstrapped.organization_id,
        admin_token: bootstrapped.secret,
    })
}

/// The catalog's API with the ADMIN token.
struct Catalog {
    channel: Channel,
    organization_id: String,
    bearer: AsciiMetadataValue,
}

impl Catalog {
    async fn project(&self, name: &str) -> anyhow::Result<String> {
        let project = ProjectServiceClient::new(self.channel.clone())
            .create_project(authorized(
                cat::CreateProjectRequest {
                    organization_id: self.organization_id.clone(),
                    project: Some(cat::Project {
                        name: name.to_owned(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &self.bearer,
            ))
            .await?
            .into_inner()
            .project
            .ok_or_else(|| anyhow::anyhow!("CreateProject returned no project"))?;
        Ok(project.id)
    }

    /// A SELF_MANAGED cluster: its id and agent token.
    async fn cluster(&self) -> anyhow::Result<(String, String)> {
        let registered = ClusterServiceClient::new(self.channel.clone())
            .register_cluster(authorized(
                cat::RegisterClusterRequest {
                    organization_id: self.organization_id.clone(),
                    cluster: Some(cat::Cluster {
                        name: "bench".to_owned(),
                        kind: cat::ClusterKind::SelfManaged.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &self.bearer,
            ))
            .await?
            .into_inner();
        let cluster = registered
            .cluster
            .ok_or_else(|| anyhow::anyhow!("RegisterCluster returned no cluster"))?;
        anyhow::ensure!(
            !registered.agent_token.is_empty(),
            "RegisterCluster issued no agent token"
        );
        Ok((cluster.id, registered.agent_token))
    }

    /// A development environment on `cluster_id` with one CONTAINER service; its id.
    async fn environment(
        &self,
        project_id: &str,
        cluster_id: &str,
        name: String,
    ) -> anyhow::Result<String> {
        let environment = EnvironmentServiceClient::new(self.channel.clone())
            .create_environment(authorized(
                cat::CreateEnvironmentRequest {
                    project_id: project_id.to_owned(),
                    environment: Some(cat::Environment {
                        name,
                        mode: EnvironmentMode::Development.into(),
                        cluster_id: cluster_id.to_owned(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &self.bearer,
            ))
            .await?
            .into_inner()
            .environment
            .ok_or_else(|| anyhow::anyhow!("CreateEnvironment returned no environment"))?;
        ServiceServiceClient::new(self.channel.clone())
            .create_service(authorized(
                cat::CreateServiceRequest {
                    environment_id: environment.id.clone(),
                    service: Some(container("web".to_owned())),
                    request_id: String::new(),
                },
                &self.bearer,
            ))
            .await?;
        Ok(environment.id)
    }
}

/// The deployments API with the ADMIN token.
#[derive(Clone)]
struct Deployments {
    client: DeploymentServiceClient<Channel>,
    bearer: AsciiMetadataValue,
}

fn is_final(status: i32) -> bool {
    matches!(
        pb::DeploymentStatus::try_from(status),
        Ok(pb::DeploymentStatus::Deployed
            | pb::DeploymentStatus::BuildError
            | pb::DeploymentStatus::DeploymentError
            | pb::DeploymentStatus::Canceled)
    )
}

impl Deployments {
    /// Queues a deployment of every service of `environment_id`; the deployment's id.
    async fn deploy(&mut self, environment_id: &str) -> anyhow::Result<String> {
        let deployment = self
            .client
            .deploy_environment(authorized(
                pb::DeployEnvironmentRequest {
                    environment_id: environment_id.to_owned(),
                    request_id: String::new(),
                },
                &self.bearer,
            ))
            .await?
            .into_inner()
            .deployment
            .ok_or_else(|| anyhow::anyhow!("DeployEnvironment returned no deployment"))?;
        Ok(deployment.id)
    }

    /// Reads `id` every [`OBSERVE_POLL`] until its status is final; that deployment.
    async fn until_final(&mut self, id: &str) -> anyhow::Result<pb::Deployment> {
        loop {
            let deployment = self
                .client
                .get_deployment(authorized(
                    pb::GetDeploymentRequest { id: id.to_owned() },
                    &self.bearer,
                ))
                .await?
                .into_inner()
                .deployment
                .ok_or_else(|| anyhow::anyhow!("GetDeployment returned no deployment"))?;
            if is_final(deployment.status) {
                return Ok(deployment);
            }
            tokio::time::sleep(OBSERVE_POLL).await;
        }
    }

    /// One deployment of `environment_id`, to `DEPLOYED`; the time it took.
    async fn deploy_to_end(&mut self, environment_id: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let id = self.deploy(environment_id).await?;
        let deployment = self.until_final(&id).await?;
        let elapsed = started.elapsed();
        ensure_deployed(&deployment)?;
        Ok(elapsed)
    }
}

fn ensure_deployed(deployment: &pb::Deployment) -> anyhow::Result<()> {
    anyhow::ensure!(
        deployment.status == pb::DeploymentStatus::Deployed as i32,
        "deployment {} ended {:?}: {}",
        deployment.id,
        pb::DeploymentStatus::try_from(deployment.status),
        deployment.error_message
    );
    Ok(())
}

pub async fn run(measure: &Measure, floors: &Floors) -> anyhow::Result<Vec<Figure>> {
    let dir = std::env::temp_dir().join(format!("slipway-bench-deploy-{}", std::process::id()));
    let runtime = echo::server_runtime("deploy-server")?;
    let bound = match echo::bind() {
        Ok(bound) => bound,
        Err(error) => {
            runtime.shutdown_background();
            return Err(error.into());
        }
    };
    let addr = bound.0;
    // Set up on the server's runtime: the pool, the bus and the engine's tasks belong to
    // it. (A runtime must not be dropped on the bench's own, hence the explicit shutdown.)
    let setup = runtime.spawn(serve(dir.join("server"), addr)).await;
    let served = match setup.map_err(anyhow::Error::from) {
        Ok(Ok(served)) => served,
        Ok(Err(error)) | Err(error) => {
            runtime.shutdown_background();
            return Err(error);
        }
    };
    let Served {
        server,
        engine,
        agents,
        organization_id,
        admin_token,
    } = served;
    let stopping = agents.clone();
    let server = echo::start_on(runtime, bound, move |listener, shutdown| async move {
        // The engine stops with the server, on its runtime.
        let _engine = engine;
        let _ = server
            .serve(listener, async move {
                shutdown.await;
                // Open agent streams would otherwise hold the graceful drain up.
                stopping.shutdown();
            })
            .await;
    })?;
    let outcome = measure_deployments(
        measure,
        floors,
        addr,
        &dir,
        &agents,
        organization_id,
        &admin_token,
    )
    .await;
    agents.shutdown();
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

/// The agent, on a runtime of its own (it is a process of its own in a real install).
struct RunningAgent {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Runtime,
}

impl RunningAgent {
    fn start(
        settings: slipway_agent::AgentSettings,
        immediate: Arc<Immediate>,
    ) -> anyhow::Result<Self> {
        let session = slipway_agent::session::Session::new(settings, immediate)?;
        let runtime = echo::server_runtime("agent")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(session.run(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            stop,
            task,
            runtime,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.runtime.shutdown_background();
    }
}

async fn measure_deployments(
    measure: &Measure,
    floors: &Floors,
    addr: std::net::SocketAddr,
    dir: &std::path::Path,
    agents: &slipway_orchestrator::agents::Agents,
    organization_id: String,
    token: &str,
) -> anyhow::Result<Vec<Figure>> {
    let bearer: AsciiMetadataValue = format!("Bearer {token}").parse()?;
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let catalog = Catalog {
        channel: channel.clone(),
        organization_id,
        bearer: bearer.clone(),
    };

    // Seed: a cluster, one environment for the serial figure, FLEET for the fleet.
    let seeding = Instant::now();
    let (cluster_id, agent_token) = catalog.cluster().await?;
    let one_project = catalog.project("one").await?;
    let one = catalog
        .environment(&one_project, &cluster_id, "one".to_owned())
        .await?;
    let fleet_project = catalog.project("fleet").await?;
    let fleet: Vec<String> = futures::stream::iter(0..FLEET)
        .map(|i| catalog.environment(&fleet_project, &cluster_id, format!("fleet-{i:04}")))
        .buffered(SEED_CONCURRENCY)
        .try_collect()
        .await?;
    if measure.verbose {
        eprintln!(
            "deploy: seeded {} environments in {:.1} s",
            FLEET + 1,
            seeding.elapsed().as_secs_f64()
        );
    }

    let immediate = Arc::new(Immediate::default());
    let agent = RunningAgent::start(
        slipway_agent::AgentSettings {
            orchestrator_url: format!("http://{addr}"),
            token: agent_token,
            cluster_id: cluster_id.clone(),
            state_dir: dir.join("agent"),
            runtime: slipway_agent::RuntimeChoice::Process,
            reconnect_min_backoff_ms: 100,
            reconnect_max_backoff_ms: 1_000,
            ..slipway_agent::AgentSettings::default()
        },
        Arc::clone(&immediate),
    )?;
    let outcome: anyhow::Result<Vec<Figure>> = async {
        let connecting = Instant::now();
        while !agents.connected_clusters().contains(&cluster_id) {
            anyhow::ensure!(
                connecting.elapsed() < CONNECT_TIMEOUT,
                "the agent did not connect within {CONNECT_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let deployments = Deployments {
            client: DeploymentServiceClient::new(channel),
            bearer,
        };
        let mut figures = serial(measure, floors, deployments.clone(), &one, &immediate).await?;
        figures.extend(fleet_at_once(deployments, &fleet, &immediate).await?);
        Ok(figures)
    }
    .await;
    agent.stop().await;
    outcome
}

/// Figure A: sequential deployments of one environment of one service.
async fn serial(
    measure: &Measure,
    floors: &Floors,
    mut deployments: Deployments,
    environment_id: &str,
    immediate: &Immediate,
) -> anyhow::Result<Vec<Figure>> {
    for _ in 0..WARM_UP {
        deployments.deploy_to_end(environment_id).await?;
    }
    let executed_before = immediate.executed.load(Ordering::Relaxed);
    let budget = measure.duration * u32::try_from(measure.rounds.max(1)).unwrap_or(u32::MAX);
    let mut histogram = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    while histogram.len() < SERIAL_MAX as u64 && started.elapsed() < budget {
        let took = deployments.deploy_to_end(environment_id).await?;
        histogram.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = histogram.len();
    let executed = immediate.executed.load(Ordering::Relaxed) - executed_before;
    anyhow::ensure!(
        executed as u64 >= count,
        "{count} deployments ended DEPLOYED but the agent executed only {executed} commands"
    );

    let scenario = "deploy.one_svc.serial";
    let bare_c1 = floors
        .bare
        .first()
        .ok_or_else(|| anyhow::anyhow!("no echo floor at concurrency 1"))?;
    let p50 = histogram.value_at_quantile(0.50) as f64;
    let p99 = histogram.value_at_quantile(0.99) as f64;
    let figures = vec![
        Figure::new(scenario, "deployments", count as f64, "n"),
        Figure::new(scenario, "throughput", count as f64 / elapsed, "dep/s"),
        Figure::new(scenario, "latency_p50", p50, "us").against(&bare_c1[1]),
        Figure::new(scenario, "latency_p99", p99, "us").against(&bare_c1[2]),
    ];
    for figure in &figures {
        figure.print();
    }
    let target_us = P50_TARGET.as_micros() as f64;
    println!(
        "{:<34} target: p50 < {} ms: {:.2} ms, {}",
        scenario,
        P50_TARGET.as_millis(),
        p50 / 1_000.0,
        if p50 < target_us { "met" } else { "NOT met" }
    );
    Ok(figures)
}

/// Figure B: [`FLEET`] environments deployed at once; every one must end `DEPLOYED`.
async fn fleet_at_once(
    deployments: Deployments,
    environments: &[String],
    immediate: &Immediate,
) -> anyhow::Result<Vec<Figure>> {
    let executed_before = immediate.executed.load(Ordering::Relaxed);
    let started = Instant::now();
    let fleet = async {
        let ids: Vec<String> = futures::stream::iter(environments)
            .map(|environment_id| {
                let mut deployments = deployments.clone();
                async move { deployments.deploy(environment_id).await }
            })
            .buffered(SUBMIT_CONCURRENCY)
            .try_collect()
            .await?;
        let submitted = started.elapsed();
        // In submission order (roughly the order they finish): one that is final costs one
        // read, the first that is not is read every OBSERVE_POLL.
        let mut deployments = deployments.clone();
        let mut ended = Vec::with_capacity(ids.len());
        for id in &ids {
            ended.push(deployments.until_final(id).await?);
        }
        anyhow::Ok((submitted, started.elapsed(), ended))
    };
    let (submitted, wall, ended) =
        tokio::time::timeout(FLEET_TIMEOUT, fleet)
            .await
            .map_err(|_| {
                anyhow::anyhow!("{FLEET} deployments did not end within {FLEET_TIMEOUT:?}")
            })??;
    let failed: Vec<&pb::Deployment> = ended
        .iter()
        .filter(|d| d.status != pb::DeploymentStatus::Deployed as i32)
        .collect();
    if let Some(first) = failed.first() {
        ensure_deployed(first).map_err(|error| {
            error.context(format!(
                "{} of {FLEET} deployments did not end DEPLOYED",
                failed.len()
            ))
        })?;
    }
    let executed = immediate.executed.load(Ordering::Relaxed) - executed_before;
    anyhow::ensure!(
        executed >= FLEET,
        "{FLEET} deployments ended DEPLOYED but the agent executed only {executed} commands"
    );

    let scenario = "deploy.fleet_1k_env.at_once";
    let figures = vec![
        Figure::new(scenario, "deployed", ended.len() as f64, "n"),
        Figure::new(scenario, "submit_time", submitted.as_secs_f64() * 1e3, "ms"),
        Figure::new(scenario, "wall_time", wall.as_secs_f64() * 1e3, "ms"),
        Figure::new(
            scenario,
            "throughput",
            ended.len() as f64 / wall.as_secs_f64(),
            "dep/s",
        ),
    ];
    for figure in &figures {
        figure.print();
    }
    println!(
        "{:<34} all {} deployments ended DEPLOYED",
        scenario,
        ended.len()
    );
    Ok(figures)
}
