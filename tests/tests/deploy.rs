//! End to end: a deployment through the orchestrator and a real agent running the process
//! runtime, on real PostgreSQL and NATS JetStream.
//!
//! One in-process server holds identity, catalog and the orchestrator (`DeploymentService`,
//! its engine, `AgentService.Connect`), as `slipway dev` serves them; the orchestrator
//! reaches catalog through a lazy channel to that same server, with a control-plane service
//! credential identity accepts. A self-managed cluster is registered through
//! `ClusterService`, and a real agent `Session` with a `ProcessRuntime` connects with the
//! cluster's agent token (through a TCP proxy the tests can cut, to disconnect it).
//!
//! The environment's services come from a local git repository holding `examples/hello`:
//! the app itself as an `APPLICATION` (runtime command `python3 app.py`, HTTP readiness
//! probe on its port), built by the build-runner's local builder running in-process on the
//! same NATS, and two lifecycle jobs (run from the agent's `PATH`) that append their name
//! to a file on each run, so every run can be counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_agent::runtime::process::{ProcessRuntime, ProcessSettings};
use slipway_agent::session::Session;
use slipway_agent::state::AgentState;
use slipway_agent::{AgentSettings as AgentConfig, RuntimeChoice};
use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_catalog::MasterKey;
use slipway_identity::store::{
    self as id_store, BuiltinRole, NewApiToken, NewOrganization, RoleRef, SecretHash,
    Store as IdentityStore, UserClaims,
};
use slipway_kit::GrpcServer;
use slipway_orchestrator::agents::{AgentSettings, Agents};
use slipway_orchestrator::api::ServiceLookup;
use slipway_orchestrator::catalog::CatalogClient;
use slipway_orchestrator::engine::EngineConfig;
use slipway_proto::catalog::v1 as cpb;
use slipway_proto::catalog::v1::cluster_service_client::ClusterServiceClient;
use slipway_proto::catalog::v1::environment_service_client::EnvironmentServiceClient;
use slipway_proto::catalog::v1::project_service_client::ProjectServiceClient;
use slipway_proto::catalog::v1::service_service_client::ServiceServiceClient;
use slipway_proto::common::v1::{EnvironmentMode, ServiceKind};
use slipway_proto::deploy::v1 as pb;
use slipway_proto::deploy::v1::deployment_service_client::DeploymentServiceClient;
use slipway_service::Platform;
use slipway_telemetry::metrics::Metrics;
use slipway_testkit::{Sandbox, TestDatabase, TestNats};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Request;
use tonic::transport::Channel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest any one deployment may take here.
const DEPLOY_PATIENCE: Duration = Duration::from_secs(30);

fn engine_config() -> EngineConfig {
    EngineConfig {
        lease_ttl: Duration::from_secs(3),
        poll_interval: Duration::from_millis(100),
        command_timeout: Duration::from_secs(40),
        build_timeout: Duration::from_secs(40),
        ..EngineConfig::default()
    }
}

fn agent_settings() -> AgentSettings {
    AgentSettings {
        heartbeat_interval: Duration::from_millis(500),
        hello_timeout: Duration::from_secs(5),
        command_ack_wait: Duration::from_secs(5),
        catalog_timeout: Duration::from_secs(5),
    }
}

fn process_settings() -> ProcessSettings {
    ProcessSettings {
        ready_grace: Duration::from_millis(200),
        stop_grace: Duration::from_secs(3),
        restart_backoff: Duration::from_millis(200),
        probe_poll: Duration::from_millis(100),
        job_retry_backoff: Duration::from_millis(200),
        ..ProcessSettings::default()
    }
}

fn with_token<T>(message: T, secret: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    request
}

// ---------------------------------------------------------------------------------------
// A TCP proxy between the agent and the server, to cut the agent's connection.

#[derive(Clone, Default)]
struct Proxy {
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Forwards connections on a new port to `upstream`; returns that port's address.
    async fn start(&self, upstream: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::clone(&self.connections);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().unwrap().push(task);
            }
        });
        address
    }

    /// Drops every open connection, as a network failure would; new ones are accepted.
    fn cut(&self) -> usize {
        let open: Vec<JoinHandle<()>> = std::mem::take(&mut *self.connections.lock().unwrap());
        let live = open.iter().filter(|task| !task.is_finished()).count();
        for task in open {
            task.abort();
        }
        live
    }
}

// ---------------------------------------------------------------------------------------
// The agent.

/// A running agent session and the runtime it drives.
struct Agent {
    runtime: Arc<ProcessRuntime>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Agent {
    fn start(config: &AgentConfig) -> Self {
        let runtime = Arc::new(ProcessRuntime::with_settings(
            config.state_dir.clone(),
            process_settings(),
        ));
        let session = Session::new(config.clone(), runtime.clone()).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(session.run(async {
            let _ = stopped.await;
        }));
        Self {
            runtime,
            stop: Some(stop),
            task,
        }
    }

    /// Stops the session in order, then the processes gracefully.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the session stops promptly")
            .unwrap();
        self.runtime.shutdown().await;
    }

    /// Kills the session task at once, as a crashing agent process would; its runtime (and
    /// with it every process it started) goes too.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        drop(self.runtime);
    }
}

// ---------------------------------------------------------------------------------------
// The harness.

struct Harness {
    channel: Channel,
    admin: String,
    org: String,
    cluster: String,
    agent_token: String,
    /// Where the agent connects: a proxy in front of the server.
    agent_address: SocketAddr,
    proxy: Proxy,
    agents: Agents,
    sandbox: Sandbox,
    /// The build-runner's worker (local builder), consuming the BUILDS queue.
    _builds: slipway_build_runner::WorkerHandle,
    /// Holds the agent's state directory, the git repository and the builds.
    dir: tempfile::TempDir,
    _db: TestDatabase,
    _nats: TestNats,
}

impl Harness {
    async fn start() -> Self {
        let db = TestDatabase::postgres().await.unwrap();
        let nats = TestNats::start().await.unwrap();
        let nats_settings = slipway_config::NatsSettings {
            url: nats.url().to_owned(),
            namespace: nats.namespace().to_owned(),
            ..Default::default()
        };
        let conn = slipway_db::connect(db.url(), 16, Duration::from_secs(15))
            .await
            .unwrap();
        let bus = slipway_events::connect(&nats_settings).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let builds = slipway_build_runner::worker::start(
            Arc::clone(&bus),
            slipway_build_runner::BuildSettings::under(dir.path().join("builds")),
        );
        slipway_db::migrate::<id_store::Migrator>(&conn)
            .await
            .unwrap();
        let service = NewCredential::generate(CredentialKind::Service).unwrap();
        let options = slipway_identity::AuthOptions {
            service_credentials: vec![service.hash()],
            ..Default::default()
        };
        let identity = slipway_identity::Identity::new(conn.clone(), Arc::clone(&bus), options);
        let catalog_platform = Platform::shared::<slipway_catalog::store::Migrator>(
            conn.clone(),
            Arc::clone(&bus),
            identity.auth(),
        )
        .await
        .unwrap();
        let platform = Platform::shared::<slipway_orchestrator::store::Migrator>(
            conn.clone(),
            Arc::clone(&bus),
            identity.auth(),
        )
        .await
        .unwrap();
        let master = MasterKey::generate().unwrap();
        let secret = service.into_secret();
        let agents = Agents::new(agent_settings());
        let sessions = agents.clone();
        let mut sandbox = Sandbox::new();
        sandbox
            .start("slipway", move |listener, shutdown| async move {
                // The orchestrator reaches catalog on this very server.
                let own = slipway_testkit::grpc::channel(listener.local_addr()?);
                let catalog = CatalogClient::new(own.clone(), &secret)?;
                let services =
                    ServiceLookup::new(own, &secret).ok_or("the credential is not ascii")?;
                let server = GrpcServer::new(
                    slipway_config::ServerSettings::default(),
                    Metrics::new("e2e-deploy")?,
                );
                let server = identity.mount(server);
                let server = slipway_catalog::mount(server, &catalog_platform, master);
                let (server, engine) = slipway_orchestrator::mount_with_catalog(
                    server,
                    &platform,
                    catalog,
                    Some(services),
                    &sessions,
                    engine_config(),
                );
                let stopping = sessions.clone();
                server
                    .serve(listener, async move {
                        shutdown.await;
                        stopping.shutdown();
                    })
                    .await?;
                drop(engine);
                Ok::<(), BoxError>(())
            })
            .await
            .unwrap();
        let channel = sandbox.channel("slipway").unwrap();
        let proxy = Proxy::default();
        let agent_address = proxy.start(sandbox.addr("slipway").unwrap()).await;

        let (org, admin) = org(&IdentityStore::new(conn), "acme").await;
        let registered = ClusterServiceClient::new(channel.clone())
            .register_cluster(with_token(
                cpb::RegisterClusterRequest {
                    organization_id: org.clone(),
                    cluster: Some(cpb::Cluster {
                        name: "laptop".into(),
                        kind: cpb::ClusterKind::SelfManaged.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        let cluster = registered.cluster.unwrap().id;
        Self {
            channel,
            admin,
            org,
            cluster,
            agent_token: registered.agent_token,
            agent_address,
            proxy,
            agents,
            sandbox,
            _builds: builds,
            dir,
            _db: db,
            _nats: nats,
        }
    }

    fn agent_config(&self) -> AgentConfig {
        AgentConfig {
            orchestrator_url: format!("http://{}", self.agent_address),
            token: self.agent_token.clone(),
            cluster_id: self.cluster.clone(),
            state_dir: self.state_dir(),
            runtime: RuntimeChoice::Process,
            reconnect_min_backoff_ms: 20,
            reconnect_max_backoff_ms: 200,
            log_queue_chunks: 256,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    /// Where the jobs append a line per run: the job's name.
    fn runs_file(&self) -> PathBuf {
        self.dir.path().join("runs.log")
    }

    /// The lines of [`Harness::runs_file`].
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.runs_file())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the orchestrator holds the agent's stream.
    async fn wait_connected(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.agents.connected_clusters() != vec![self.cluster.clone()] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the agent did not connect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `examples/hello`, copied into a fresh git repository with one commit on `main`.
    fn hello_repository(&self) -> String {
        let repo = self.dir.path().join("hello");
        std::fs::create_dir_all(&repo).unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
        for entry in std::fs::read_dir(example).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), repo.join(entry.file_name())).unwrap();
        }
        for args in [
            &["init", "--quiet", "--initial-branch=main"][..],
            &["add", "."],
            &[
                "-c",
                "user.name=slipway",
                "-c",
                "user.email=e2e@slipway.test",
                "commit",
                "--quiet",
                "-m",
                "hello",
            ],
        ] {
            let status = std::process::Command::new("git")
                .args(args)
                .current_dir(&repo)
                .status()
                .unwrap();
            assert!(status.success(), "git {args:?} failed");
        }
        format!("file://{}", repo.display())
    }

    async fn project(&self, name: &str) -> String {
        ProjectServiceClient::new(self.channel.clone())
            .create_project(with_token(
                cpb::CreateProjectRequest {
                    organization_id: self.org.clone(),
                    project: Some(cpb::Project {
                        name: name.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .project
            .unwrap()
            .id
    }

    async fn environment(&self, project: &str, name: &str) -> String {
        EnvironmentServiceClient::new(self.channel.clone())
            .create_environment(with_token(
                cpb::CreateEnvironmentRequest {
                    project_id: project.into(),
                    environment: Some(cpb::Environment {
                        name: name.into(),
                        mode: EnvironmentMode::Development.into(),
                        cluster_id: self.cluster.clone(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .environment
            .unwrap()
            .id
    }

    async fn service(
        &self,
        environment: &str,
        name: &str,
        kind: ServiceKind,
        settings: cpb::service::Settings,
    ) -> String {
        ServiceServiceClient::new(self.channel.clone())
            .create_service(with_token(
                cpb::CreateServiceRequest {
                    environment_id: environment.into(),
                    service: Some(cpb::Service {
                        name: name.into(),
                        kind: kind.into(),
                        settings: Some(settings),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap_or_else(|status| panic!("create service {name}: {status:?}"))
            .into_inner()
            .service
            .unwrap()
            .id
    }

    /// A lifecycle job from `repository` that appends its name to the runs file on each of
    /// `events`, then sleeps `sleep` seconds.
    async fn job(
        &self,
        environment: &str,
        repository: &str,
        name: &str,
        events: &[cpb::LifecycleJobEvent],
        sleep: u32,
    ) -> String {
        let script = format!(
            "echo {name} >> '{}' && sleep {sleep}",
            self.runs_file().display()
        );
        self.service(
            environment,
            name,
            ServiceKind::LifecycleJob,
            cpb::service::Settings::LifecycleJob(cpb::LifecycleJobSettings {
                events: events.iter().map(|e| *e as i32).collect(),
                source: Some(cpb::JobSource {
                    source: Some(cpb::job_source::Source::Git(git(repository))),
                }),
                command: vec!["sh".into(), "-c".into(), script],
                timeout: Some(Duration::from_secs(30).try_into().unwrap()),
                ..Default::default()
            }),
        )
        .await
    }

    /// `examples/hello` from `repository` as an application listening on `port`.
    async fn hello_app(
        &self,
        environment: &str,
        repository: &str,
        name: &str,
        port: u16,
    ) -> String {
        let port = u32::from(port);
        self.service(
            environment,
            name,
            ServiceKind::Application,
            cpb::service::Settings::Application(cpb::ApplicationSettings {
                source: Some(git(repository)),
                runtime: Some(cpb::RuntimeSettings {
                    ports: vec![cpb::Port {
                        internal_port: port,
                        ..Default::default()
                    }],
                    min_instances: 1,
                    max_instances: 1,
                    readiness_probe: Some(cpb::Probe {
                        r#type: cpb::ProbeType::Http.into(),
                        path: "/".into(),
                        port,
                        period: Some(Duration::from_secs(1).try_into().unwrap()),
                        ..Default::default()
                    }),
                    command: vec!["python3".into(), "app.py".into()],
                    ..Default::default()
                }),
            }),
        )
        .await
    }

    fn client(&self) -> DeploymentServiceClient<Channel> {
        DeploymentServiceClient::new(self.channel.clone())
    }

    async fn get(&self, id: &str) -> pb::Deployment {
        self.client()
            .get_deployment(with_token(
                pb::GetDeploymentRequest { id: id.into() },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .deployment
            .unwrap()
    }

    /// Follows `WatchDeployment` until the deployment ends; returns its final state.
    async fn watch(&self, id: &str) -> pb::Deployment {
        let mut stream = self
            .client()
            .watch_deployment(with_token(
                pb::WatchDeploymentRequest { id: id.into() },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        let watched = tokio::time::timeout(DEPLOY_PATIENCE, async {
            while let Some(message) = stream.message().await.unwrap() {
                if let Some(deployment) = message.deployment {
                    last = Some(deployment);
                }
            }
        })
        .await;
        let current = self.get(id).await;
        assert!(
            watched.is_ok(),
            "deployment {id} did not end within {DEPLOY_PATIENCE:?}: {:?} {:?}",
            pb::DeploymentStatus::try_from(current.status),
            current.stages
        );
        let last = last.expect("the watch sent the deployment");
        assert!(
            slipway_orchestrator::engine::status::is_final(last.status),
            "the watch ended before the deployment did: {:?}",
            pb::DeploymentStatus::try_from(last.status)
        );
        current
    }

    /// Waits for `id` to end and asserts it ended `expected`.
    async fn expect(&self, id: &str, expected: pb::DeploymentStatus) -> pb::Deployment {
        let done = self.watch(id).await;
        assert_eq!(
            pb::DeploymentStatus::try_from(done.status),
            Ok(expected),
            "{}: {:?}",
            done.error_message,
            done.stages
        );
        done
    }

    async fn deploy(&self, environment: &str) -> pb::Deployment {
        self.client()
            .deploy_environment(with_token(
                pb::DeployEnvironmentRequest {
                    environment_id: environment.into(),
                    request_id: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .deployment
            .unwrap()
    }

    async fn stop_environment(&self, environment: &str) -> pb::Deployment {
        self.client()
            .stop_environment(with_token(
                pb::StopEnvironmentRequest {
                    environment_id: environment.into(),
                    request_id: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .deployment
            .unwrap()
    }

    async fn rollback(&self, to: &str) -> pb::Deployment {
        self.client()
            .rollback_deployment(with_token(
                pb::RollbackDeploymentRequest {
                    id: to.into(),
                    request_id: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .deployment
            .unwrap()
    }

    async fn delete_resources(&self, environment: &str) -> pb::Deployment {
        self.client()
            .delete_environment_resources(with_token(
                pb::DeleteEnvironmentResourcesRequest {
                    environment_id: environment.into(),
                    request_id: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .deployment
            .unwrap()
    }

    /// The environment directories the process runtime keeps under the state directory.
    fn environment_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.state_dir()) else {
            return Vec::new();
        };
        entries
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_dir())
            .collect()
    }

    async fn stop(self) {
        self.sandbox.shutdown().await.unwrap();
    }
}

fn git(repository: &str) -> cpb::GitSource {
    cpb::GitSource {
        repository_url: repository.into(),
        branch: "main".into(),
        ..Default::default()
    }
}

async fn org(identity: &IdentityStore, name: &str) -> (String, String) {
    let user = identity
        .upsert_user(&UserClaims {
            issuer: "https://issuer.test".into(),
            subject: format!("owner-{name}"),
            email: format!("owner@{name}.example.com"),
            display_name: "owner".into(),
        })
        .await
        .unwrap();
    let (org, _) = identity
        .create_organization(
            &NewOrganization {
                name: name.into(),
                display_name: name.into(),
            },
            &user.id,
        )
        .await
        .unwrap();
    let secret = NewCredential::generate(CredentialKind::ApiToken).unwrap();
    identity
        .create_api_token(&NewApiToken {
            organization_id: org.id.clone(),
            name: "admin".into(),
            description: String::new(),
            role: RoleRef::Builtin(BuiltinRole::Admin),
            secret_hash: SecretHash::from_digest(*secret.hash().as_bytes()),
            secret_hint: secret.hint().to_owned(),
            expire_time: None,
            creator: id_store::PrincipalRef {
                kind: id_store::PrincipalKind::User,
                id: "test".into(),
                display_name: "test".into(),
            },
        })
        .await
        .unwrap();
    (org.id, secret.into_secret())
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /` on `127.0.0.1:port`: the status line and body, or the connection error.
async fn http_get(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

/// How many times each line occurs in `lines`.
fn counts(lines: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in lines {
        *counts.entry(line.clone()).or_default() += 1;
    }
    counts
}

/// How many commands the deployment `d` sent the agent: one per stage that ran, except
/// that the jobs stage may carry two (the lifecycle jobs run for the action, and the
/// action applied to the jobs themselves), told apart by their steps' phases.
fn commands_sent(d: &pb::Deployment) -> usize {
    d.stages
        .iter()
        .filter(|s| s.status == pb::StageStatus::Done as i32)
        .map(|s| {
            let runs = s.steps.iter().any(|step| step.phase == "run_job");
            // A step whose reports were lost (with a broken stream) has no phase.
            let other = s
                .steps
                .iter()
                .any(|step| !step.phase.is_empty() && step.phase != "run_job");
            usize::from(runs) + usize::from(other)
        })
        .sum()
}

/// The agent's records of finished commands, by deployment id; each must have succeeded.
fn applied_by_deployment(state_dir: &Path) -> HashMap<String, usize> {
    let state = AgentState::open(state_dir).unwrap();
    let mut by_deployment = HashMap::new();
    for id in state.applied_ids() {
        let record = state.applied(&id).unwrap();
        assert_eq!(record.status, "STEP_STATUS_SUCCEEDED", "{record:?}");
        *by_deployment.entry(record.deployment_id).or_default() += 1;
    }
    by_deployment
}

/// The environment's three services: `examples/hello` as the application `web`, the job
/// `migrate` run on each start, the job `teardown` run on stop and delete. Returns the
/// port `web` listens on.
async fn three_services(h: &Harness, environment: &str) -> u16 {
    use cpb::LifecycleJobEvent as E;
    let repository = h.hello_repository();
    let port = free_port();
    h.hello_app(environment, &repository, "web", port).await;
    h.job(environment, &repository, "migrate", &[E::Start], 0)
        .await;
    h.job(
        environment,
        &repository,
        "teardown",
        &[E::Stop, E::Delete],
        0,
    )
    .await;
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_stop_redeploy_rollback_delete_through_a_real_agent() {
    let h = Harness::start().await;
    let agent = Agent::start(&h.agent_config());
    h.wait_connected().await;
    let project = h.project("shop").await;
    let env = h.environment(&project, "dev").await;
    let port = three_services(&h, &env).await;

    // Deploy: DEPLOYED, every service deployed, the apps answer.
    let first = h.deploy(&env).await;
    assert_eq!(first.status, pb::DeploymentStatus::Queued as i32);
    let first = h.expect(&first.id, pb::DeploymentStatus::Deployed).await;
    assert_eq!(first.cluster_id, h.cluster);
    assert_eq!(first.service_statuses.len(), 3, "{first:?}");
    // Every service that took part is DEPLOYED. (A lifecycle job that runs only on stop
    // and delete takes no part in a deploy; the orchestrator lists it as it was queued.)
    assert!(
        first
            .service_statuses
            .iter()
            .filter(|s| s.service_name != "teardown")
            .all(|s| s.status == pb::DeploymentStatus::Deployed as i32),
        "{:?}",
        first.service_statuses
    );
    let answer = http_get(port).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("hello from slipway\n"), "{answer}");
    let runs = counts(&h.runs());
    assert_eq!(runs.get("migrate"), Some(&1), "{runs:?}");
    assert_eq!(runs.get("teardown"), None, "{runs:?}");
    let dirs = h.environment_dirs();
    assert_eq!(dirs.len(), 1, "one environment directory: {dirs:?}");

    // Stop: STOPPED, the processes are gone.
    let stop = h.stop_environment(&env).await;
    assert_eq!(stop.status, pb::DeploymentStatus::StopQueued as i32);
    h.expect(&stop.id, pb::DeploymentStatus::Stopped).await;
    assert!(http_get(port).await.is_err(), "the app still answers");
    assert_eq!(counts(&h.runs()).get("teardown"), Some(&1));

    // Deploy again, then roll back to the first deployment.
    let again = h.deploy(&env).await;
    h.expect(&again.id, pb::DeploymentStatus::Deployed).await;
    let rollback = h.rollback(&first.id).await;
    assert_eq!(rollback.trigger, pb::DeploymentTrigger::Rollback as i32);
    assert_eq!(rollback.rolled_back_from_deployment_id, first.id);
    let rollback = h.expect(&rollback.id, pb::DeploymentStatus::Deployed).await;
    assert_eq!(rollback.service_statuses.len(), 3);
    let answer = http_get(port).await.unwrap();
    assert!(answer.ends_with("hello from slipway\n"), "{answer}");

    // Delete: DELETED, the processes and the environment's directory are gone.
    let delete = h.delete_resources(&env).await;
    let delete = h.expect(&delete.id, pb::DeploymentStatus::Deleted).await;
    assert!(http_get(port).await.is_err(), "the app still answers");
    assert_eq!(h.environment_dirs(), Vec::<PathBuf>::new());
    let runs = counts(&h.runs());
    // Deployed three times, stopped once, deleted once: each job ran exactly once each time.
    assert_eq!(runs.get("migrate"), Some(&3), "{runs:?}");
    assert_eq!(runs.get("teardown"), Some(&2), "{runs:?}");

    // Every command of every deployment was applied and recorded once by the agent.
    let applied = applied_by_deployment(&h.state_dir());
    let deployments = [&first, &stop, &again, &rollback, &delete];
    for d in deployments {
        let d = h.get(&d.id).await;
        assert!(commands_sent(&d) > 0, "{:?}", d.stages);
        assert_eq!(
            applied.get(&d.id),
            Some(&commands_sent(&d)),
            "{:?}",
            d.stages
        );
    }
    assert_eq!(
        applied.len(),
        deployments.len(),
        "no other command was applied"
    );

    agent.stop().await;
    h.stop().await;
}

/// Starts a deployment whose `slow` job runs for 3 s and returns once that job has begun.
async fn deployment_in_flight(h: &Harness, env: &str) -> pb::Deployment {
    let deployment = h.deploy(env).await;
    let deadline = tokio::time::Instant::now() + DEPLOY_PATIENCE;
    while !h.runs().contains(&"slow".to_owned()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow job never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deployment
}

/// An environment with one quick job and one that runs 3 s.
async fn slow_environment(h: &Harness) -> String {
    use cpb::LifecycleJobEvent as E;
    let project = h.project("shop").await;
    let env = h.environment(&project, "dev").await;
    let repository = h.hello_repository();
    h.job(&env, &repository, "quick", &[E::Start], 0).await;
    h.job(&env, &repository, "slow", &[E::Start], 3).await;
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_loses_its_connection_mid_deployment_and_the_deployment_completes() {
    let h = Harness::start().await;
    let agent = Agent::start(&h.agent_config());
    h.wait_connected().await;
    let env = slow_environment(&h).await;

    let deployment = deployment_in_flight(&h, &env).await;
    // The network drops while the job runs; the agent reconnects on its own.
    assert!(
        h.proxy.cut() >= 1,
        "the agent's connection went through the proxy"
    );
    let done = h
        .expect(&deployment.id, pb::DeploymentStatus::Deployed)
        .await;
    assert_eq!(done.service_statuses.len(), 2);

    let runs = counts(&h.runs());
    assert_eq!(runs.get("quick"), Some(&1), "{runs:?}");
    assert_eq!(runs.get("slow"), Some(&1), "{runs:?}");
    assert_eq!(
        commands_sent(&done),
        1,
        "one jobs command: {:?}",
        done.stages
    );
    assert_eq!(
        applied_by_deployment(&h.state_dir()),
        HashMap::from([(done.id.clone(), 1)])
    );

    agent.stop().await;
    h.stop().await;
}

/// Fails today: the agent acknowledges a command when it receives it, and the orchestrator
/// then acknowledges it to NATS; a command still running when the agent process dies is
/// neither recorded as applied nor listed as running by the restarted agent, so nothing
/// sends it again and the stage waits for `command_timeout`, then fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_restarts_mid_deployment_and_the_deployment_completes() {
    let h = Harness::start().await;
    let config = h.agent_config();
    let agent = Agent::start(&config);
    h.wait_connected().await;
    let env = slow_environment(&h).await;

    let deployment = deployment_in_flight(&h, &env).await;
    // The agent process dies with its job half done, and starts again on the same state.
    agent.kill().await;
    let agent = Agent::start(&config);
    let done = h
        .expect(&deployment.id, pb::DeploymentStatus::Deployed)
        .await;
    assert_eq!(done.service_statuses.len(), 2);

    // The command finished once: one record, whose final report the orchestrator took.
    assert_eq!(
        commands_sent(&done),
        1,
        "one jobs command: {:?}",
        done.stages
    );
    assert_eq!(
        applied_by_deployment(&h.state_dir()),
        HashMap::from([(done.id.clone(), 1)])
    );
    // The killed attempt may have been cut short; the command then ran again on the new
    // agent, and completed exactly once.
    let runs = counts(&h.runs());
    assert!(matches!(runs.get("slow"), Some(1 | 2)), "{runs:?}");

    agent.stop().await;
    h.stop().await;
}
