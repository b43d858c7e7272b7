//! `slipway dev`: the embedded mode. Every service's gRPC API on one port, backed by one
//! SQLite file and the in-memory event bus, so a newcomer needs nothing but this binary.
//! A local agent runs in the same process with the process runtime, speaking for the `local`
//! cluster, so deployments run as local processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_config::{NatsSettings, ServerSettings, TelemetrySettings};
use slipway_kit::GrpcServer;
use slipway_service::Platform;
use slipway_telemetry::metrics::Metrics;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Address to serve every Slipway API on.
    #[arg(long, default_value = "127.0.0.1:7800")]
    listen: SocketAddr,
    /// Where Slipway keeps its data between runs (created when missing).
    #[arg(long, default_value = ".slipway-dev")]
    data_dir: PathBuf,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let telemetry = slipway_telemetry::init("slipway-dev", &TelemetrySettings::default())?;
    let outcome = serve(args).await;
    telemetry.shutdown();
    outcome
}

async fn serve(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let database_url = format!("sqlite://{}", args.data_dir.join("slipway.db").display());
    let db = slipway_db::connect(&database_url, 4, std::time::Duration::from_secs(5)).await?;
    let bus = slipway_events::in_memory(&NatsSettings::default()).await?;

    // Bound first: the orchestrator reaches catalog's internal API at this address.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local_addr = listener.local_addr()?;
    // The control plane's credential for this run: the orchestrator presents it to catalog
    // (snapshots, agent authentication), and identity accepts exactly it. Never stored.
    let control_plane =
        NewCredential::generate(CredentialKind::Service).context("cannot generate a credential")?;

    let mut server = GrpcServer::new(ServerSettings::default(), Metrics::new("slipway-dev")?);
    // Identity's own cached resolver authenticates every service: in one process no service
    // calls identity over the network, and identity's changes reach every cache at once.
    let (identity, identity_platform) = slipway_identity::Identity::shared(
        db.clone(),
        bus.clone(),
        slipway_identity::AuthOptions {
            service_credentials: vec![control_plane.hash()],
            ..slipway_identity::AuthOptions::default()
        },
    )
    .await?;
    let auth = identity.auth();
    server = identity.mount(server);
    let catalog =
        Platform::shared::<slipway_catalog::store::Migrator>(db.clone(), bus.clone(), auth.clone());
    let master_key = dev_master_key(&args.data_dir)?;
    server = slipway_catalog::mount(server, &catalog.await?, master_key);
    let orchestrator = Platform::shared::<slipway_orchestrator::store::Migrator>(
        db.clone(),
        bus.clone(),
        auth.clone(),
    );
    let own_api =
        tonic::transport::Endpoint::from_shared(format!("http://{local_addr}"))?.connect_lazy();
    let secret = control_plane.expose_secret();
    let catalog_client = slipway_orchestrator::catalog::CatalogClient::new(own_api.clone(), secret)
        .context("the control-plane credential is not a header value")?;
    let agents = slipway_orchestrator::agents::Agents::default();
    let (mounted, _engine) = slipway_orchestrator::mount_with_catalog(
        server,
        &orchestrator.await?,
        catalog_client,
        slipway_orchestrator::api::ServiceLookup::new(own_api, secret),
        &agents,
        slipway_orchestrator::engine::EngineConfig::default(),
    );
    server = mounted;
    let build_runner = Platform::shared::<slipway_build_runner::store::Migrator>(
        db.clone(),
        bus.clone(),
        auth.clone(),
    );
    // Builds of `slipway dev` keep their checkouts and artifacts in the data directory.
    let (mounted, _build_worker) = slipway_build_runner::mount_with(
        server,
        &build_runner.await?,
        slipway_build_runner::BuildSettings::under(args.data_dir.join("builds")),
    );
    server = mounted;
    let log_streaming = Platform::shared::<slipway_log_streaming::store::Migrator>(db, bus, auth);
    server = slipway_log_streaming::mount(server, &log_streaming.await?);

    // The local agent: what it needs is read from the data directory, or created now (the
    // organization, before serving) and once serving (its cluster, through catalog's API).
    // The owner's sign-in: no OIDC issuer runs here, so the person at the terminal holds
    // bootstrap's owner credential, which signs in as the default organization's owner.
    let local_agent = local_agent_setup(&args.data_dir, &identity_platform).await?;
    drop(identity_platform);
    if let Some(LocalAgent::Register { owner_token, .. }) = &local_agent {
        println!("owner token (shown once): {owner_token}");
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let agent_task = local_agent.map(|setup| {
        tokio::spawn(run_local_agent(
            setup,
            args.data_dir.clone(),
            local_addr,
            stop.clone(),
        ))
    });
    let stop_agent = stop.clone();
    let shutdown = async move {
        slipway_kit::shutdown_signal().await;
        stop_agent.cancel();
        // Open agent streams would otherwise hold the graceful drain up.
        agents.shutdown();
    };
    let served = server.serve(listener, shutdown).await;
    stop.cancel();
    if let Some(task) = agent_task
        && let Err(error) = task.await
    {
        tracing::error!(%error, "the local agent task failed");
    }
    served?;
    Ok(())
}

/// Name of the organization the first start of a data directory creates.
const DEFAULT_ORGANIZATION: &str = "default";
/// Name of the cluster the local agent speaks for.
const LOCAL_CLUSTER: &str = "local";
/// The file, in the data directory, with what the local agent needs (owner-only: it holds
/// the agent token).
const AGENT_FILE: &str = "agent.json";

/// What the local agent needs, kept in `<data-dir>/agent.json`.
#[derive(serde::Serialize, serde::Deserialize)]
struct AgentFile {
    organization_id: String,
    cluster_id: String,
    /// The cluster's agent token (`slpa_…`). Secret.
    agent_token: String,
}

/// How the local agent starts.
enum LocalAgent {
    /// A later start: the cluster exists and `agent.json` says how to reach it.
    Known(AgentFile),
    /// The first start: the organization was just created; the cluster is registered once
    /// the server answers, with the ADMIN token bootstrap handed out.
    Register {
        organization_id: String,
        admin_token: String,
        /// Bootstrap's owner credential, shown once to the person at the terminal.
        owner_token: String,
    },
}

/// Reads `agent.json`, or on the first start of a data directory creates the `default`
/// organization (owned by the bootstrap owner user the owner token signs in as).
/// `None` when the data directory has organizations but no `agent.json` (used before the
/// local agent existed, or its first start stopped half-way): no agent runs then.
async fn local_agent_setup(
    data_dir: &std::path::Path,
    identity: &Platform,
) -> anyhow::Result<Option<LocalAgent>> {
    let path = data_dir.join(AGENT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let file: AgentFile = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a local agent file", path.display()))?;
            return Ok(Some(LocalAgent::Known(file)));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    }
    match slipway_identity::bootstrap(identity, DEFAULT_ORGANIZATION).await {
        // Bootstrap's ADMIN token registers the local cluster and is not shown: people
        // sign in with the owner token instead.
        Ok(bootstrapped) => Ok(Some(LocalAgent::Register {
            organization_id: bootstrapped.organization_id,
            admin_token: bootstrapped.secret,
            owner_token: bootstrapped.owner_secret,
        })),
        Err(slipway_identity::BootstrapError::AlreadyBootstrapped) => {
            tracing::warn!(
                "{} is missing but organizations exist: no local agent runs; register a \
                 SELF_MANAGED cluster and write its id and agent token to that file \
                 (organization_id, cluster_id, agent_token) to run one",
                path.display()
            );
            Ok(None)
        }
        Err(error) => Err(error).context("cannot create the default organization"),
    }
}

/// Runs the local agent until `stop`: registers the `local` cluster first when `setup` says
/// so, then holds the agent session with this process's orchestrator.
async fn run_local_agent(
    setup: LocalAgent,
    data_dir: PathBuf,
    local_addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
) {
    let url = format!("http://{local_addr}");
    let file = match setup {
        LocalAgent::Known(file) => file,
        LocalAgent::Register {
            organization_id,
            admin_token,
            ..
        } => {
            let registered = tokio::select! {
                registered = register_local_cluster(&url, &organization_id, &admin_token) => {
                    registered
                }
                () = stop.cancelled() => return,
            };
            let file = match registered {
                Ok((cluster_id, agent_token)) => AgentFile {
                    organization_id,
                    cluster_id,
                    agent_token,
                },
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "cannot register the local cluster: no local agent runs"
                    );
                    return;
                }
            };
            if let Err(error) = write_agent_file(&data_dir, &file) {
                // The agent still runs now; a later start finds no file and runs none.
                tracing::error!(
                    error = format!("{error:#}"),
                    "cannot keep the local agent's settings"
                );
            }
            file
        }
    };
    let state_dir = data_dir.join("agent");
    let settings = slipway_agent::AgentSettings {
        orchestrator_url: url,
        token: file.agent_token,
        cluster_id: file.cluster_id,
        state_dir: state_dir.clone(),
        runtime: slipway_agent::RuntimeChoice::Process,
        // The orchestrator is this process: it is back as soon as it answers at all.
        reconnect_min_backoff_ms: 200,
        reconnect_max_backoff_ms: 5_000,
        ..slipway_agent::AgentSettings::default()
    };
    let runtime = Arc::new(slipway_agent::runtime::process::ProcessRuntime::new(
        state_dir.join("workloads"),
    ));
    match slipway_agent::session::Session::new(settings, runtime) {
        Ok(session) => session.run(stop.cancelled_owned()).await,
        Err(error) => tracing::error!(%error, "cannot start the local agent"),
    }
}

/// Registers the `local` SELF_MANAGED cluster through catalog's API on this process's own
/// address; returns its id and agent token.
async fn register_local_cluster(
    url: &str,
    organization_id: &str,
    admin_token: &str,
) -> anyhow::Result<(String, String)> {
    use slipway_proto::catalog::v1 as cpb;
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await
        .context("cannot reach this process's own API")?;
    let mut request = tonic::Request::new(cpb::RegisterClusterRequest {
        organization_id: organization_id.to_owned(),
        cluster: Some(cpb::Cluster {
            name: LOCAL_CLUSTER.to_owned(),
            description: "the local agent of `slipway dev`: workloads run as local processes"
                .to_owned(),
            kind: cpb::ClusterKind::SelfManaged.into(),
            ..cpb::Cluster::default()
        }),
        request_id: String::new(),
    });
    let mut authorization: tonic::metadata::AsciiMetadataValue = format!("Bearer {admin_token}")
        .parse()
        .context("the admin token is not a header value")?;
    authorization.set_sensitive(true);
    request
        .metadata_mut()
        .insert("authorization", authorization);
    let registered = cpb::cluster_service_client::ClusterServiceClient::new(channel)
        .register_cluster(request)
        .await
        .context("RegisterCluster failed")?
        .into_inner();
    let cluster = registered
        .cluster
        .context("RegisterCluster returned no cluster")?;
    anyhow::ensure!(
        !registered.agent_token.is_empty(),
        "RegisterCluster returned no agent token"
    );
    Ok((cluster.id, registered.agent_token))
}

/// Writes `agent.json` owner-only, through a temporary file so a crash never leaves half.
fn write_agent_file(data_dir: &std::path::Path, file: &AgentFile) -> anyhow::Result<()> {
    let path = data_dir.join(AGENT_FILE);
    let temporary = data_dir.join(format!("{AGENT_FILE}.tmp"));
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot remove {}", temporary.display()));
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    let text = serde_json::to_string_pretty(file)?;
    std::io::Write::write_all(&mut out, text.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(())
}

/// The catalog's master key of this data directory: read from `master.key`, or generated
/// and written there (owner-only) on the first run, so secrets stored by one run of
/// `slipway dev` can be read by the next. Dev data only: a real install configures
/// `[secrets].master_key`.
fn dev_master_key(data_dir: &std::path::Path) -> anyhow::Result<slipway_catalog::MasterKey> {
    let path = data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => slipway_catalog::MasterKey::parse(text.trim())
            .with_context(|| format!("{} is not a master key", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = slipway_catalog::MasterKey::generate()?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            std::io::Write::write_all(&mut file, key.export_hex().as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(key)
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}
