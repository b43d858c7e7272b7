//! The catalog over the network, served as `slipway dev` runs it: identity and catalog in
//! one kit server on a SQLite file and the in-memory bus, every call authenticated with the
//! bootstrap organization's ADMIN token.
//!
//! - `GetEnvironment` at concurrency 1 and 64, beside the bare tonic echo floor of the same
//!   concurrency (the target is at least half the floor's throughput);
//! - `ListServices` walking every page (500, the cap) of an environment of 1,000 CONTAINER
//!   services: walks, pages and services per second and the latency of a whole walk; pages
//!   per second are shown beside the echo floor's calls per second at concurrency 1 (a
//!   per-call ratio: each page is one call).

use futures::{StreamExt as _, TryStreamExt as _};
use slipway_config::{NatsSettings, ServerSettings};
use slipway_kit::GrpcServer;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::cluster_service_client::ClusterServiceClient;
use slipway_proto::catalog::v1::environment_service_client::EnvironmentServiceClient;
use slipway_proto::catalog::v1::project_service_client::ProjectServiceClient;
use slipway_proto::catalog::v1::service::Settings;
use slipway_proto::catalog::v1::service_service_client::ServiceServiceClient;
use slipway_proto::common::v1::{EnvironmentMode, ServiceKind};
use slipway_telemetry::metrics::Metrics;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::echo::{self, CONCURRENCY, Floors, Measure, Rpc};
use crate::report::Figure;

/// Services in the listed environment.
const SERVICES: usize = 1_000;
/// The largest page the catalog serves.
const PAGE_SIZE: i32 = 500;
/// The share of the floor's throughput `GetEnvironment` should reach (the catalog issue).
const GET_TARGET: f64 = 0.50;
/// Concurrencies of the `ListServices` walk.
const WALK_CONCURRENCY: [usize; 2] = [1, 8];

pub fn authorized<T>(message: T, bearer: &AsciiMetadataValue) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
}

/// One `GetEnvironment` of the seeded environment.
#[derive(Clone)]
struct GetEnvironment {
    client: EnvironmentServiceClient<Channel>,
    id: String,
    bearer: AsciiMetadataValue,
}

impl Rpc for GetEnvironment {
    async fn call(&mut self) -> anyhow::Result<()> {
        let request = authorized(
            pb::GetEnvironmentRequest {
                id: self.id.clone(),
            },
            &self.bearer,
        );
        let environment = self.client.get_environment(request).await?.into_inner();
        anyhow::ensure!(
            environment.environment.is_some_and(|e| e.id == self.id),
            "GetEnvironment answered another environment"
        );
        Ok(())
    }
}

/// One walk of every page of the seeded environment's services.
#[derive(Clone)]
struct ListServices {
    client: ServiceServiceClient<Channel>,
    environment_id: String,
    bearer: AsciiMetadataValue,
}

impl ListServices {
    /// Walks every page; (pages, services).
    async fn walk(&mut self) -> anyhow::Result<(usize, usize)> {
        let (mut pages, mut services) = (0, 0);
        let mut page_token = String::new();
        loop {
            let request = authorized(
                pb::ListServicesRequest {
                    environment_id: self.environment_id.clone(),
                    page_size: PAGE_SIZE,
                    page_token,
                    kind: ServiceKind::Unspecified.into(),
                },
                &self.bearer,
            );
            let page = self.client.list_services(request).await?.into_inner();
            pages += 1;
            services += page.services.len();
            if page.next_page_token.is_empty() {
                return Ok((pages, services));
            }
            page_token = page.next_page_token;
        }
    }
}

impl Rpc for ListServices {
    async fn call(&mut self) -> anyhow::Result<()> {
        let (_, services) = self.walk().await?;
        anyhow::ensure!(
            services == SERVICES,
            "walked {services} services, not {SERVICES}"
        );
        Ok(())
    }
}

/// Identity and catalog on `dir`'s SQLite file, mounted on one kit server as `slipway dev`
/// mounts them, and the bootstrap organization's id and ADMIN token.
async fn serve(dir: std::path::PathBuf) -> anyhow::Result<(GrpcServer, String, String)> {
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}", dir.join("slipway.db").display());
    let db = slipway_db::connect(&url, 4, std::time::Duration::from_secs(5)).await?;
    let bus = slipway_events::in_memory(&NatsSettings::default()).await?;
    let (identity, platform) = slipway_identity::Identity::shared(
        db.clone(),
        bus.clone(),
        slipway_identity::AuthOptions::default(),
    )
    .await?;
    let bootstrapped = slipway_identity::bootstrap(&platform, "bench").await?;
    let catalog = slipway_service::Platform::shared::<slipway_catalog::store::Migrator>(
        db,
        bus,
        identity.auth(),
    )
    .await?;
    let server = GrpcServer::new(ServerSettings::default(), Metrics::new("bench-catalog")?);
    let server = identity.mount(server);
    let server = slipway_catalog::mount(server, &catalog, slipway_catalog::MasterKey::generate()?);
    Ok((server, bootstrapped.organization_id, bootstrapped.secret))
}

pub fn container(name: String) -> pb::Service {
    pb::Service {
        name,
        kind: ServiceKind::Container.into(),
        settings: Some(Settings::Container(pb::ContainerSettings {
            source: Some(pb::ImageSource {
                registry_id: String::new(),
                image: "acme/worker".to_owned(),
                tag: "1.4.2".to_owned(),
            }),
            runtime: Some(pb::RuntimeSettings {
                ports: vec![pb::Port {
                    internal_port: 8080,
                    external_port: 80,
                    protocol: pb::PortProtocol::Http.into(),
                    public: true,
                }],
                ..Default::default()
            }),
        })),
        ..Default::default()
    }
}

/// Through the API: a project, a self-managed cluster, a development environment on it and
/// [`SERVICES`] container services in it; returns the environment's id.
async fn seed(
    channel: Channel,
    organization_id: &str,
    bearer: &AsciiMetadataValue,
) -> anyhow::Result<String> {
    let project = ProjectServiceClient::new(channel.clone())
        .create_project(authorized(
            pb::CreateProjectRequest {
                organization_id: organization_id.to_owned(),
                project: Some(pb::Project {
                    name: "shop".to_owned(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            bearer,
        ))
        .await?
        .into_inner()
        .project
        .ok_or_else(|| anyhow::anyhow!("CreateProject returned no project"))?;
    let cluster = ClusterServiceClient::new(channel.clone())
        .register_cluster(authorized(
            pb::RegisterClusterRequest {
                organization_id: organization_id.to_owned(),
                cluster: Some(pb::Cluster {
                    name: "main".to_owned(),
                    kind: pb::ClusterKind::SelfManaged.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            bearer,
        ))
        .await?
        .into_inner()
        .cluster
        .ok_or_else(|| anyhow::anyhow!("RegisterCluster returned no cluster"))?;
    let environment = EnvironmentServiceClient::new(channel.clone())
        .create_environment(authorized(
            pb::CreateEnvironmentRequest {
                project_id: project.id,
                environment: Some(pb::Environment {
                    name: "dev".to_owned(),
                    mode: EnvironmentMode::Development.into(),
                    cluster_id: cluster.id,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            bearer,
        ))
        .await?
        .into_inner()
        .environment
        .ok_or_else(|| anyhow::anyhow!("CreateEnvironment returned no environment"))?;
    let services = ServiceServiceClient::new(channel);
    futures::stream::iter(0..SERVICES)
        .map(|i| {
            let mut client = services.clone();
            let request = authorized(
                pb::CreateServiceRequest {
                    environment_id: environment.id.clone(),
                    service: Some(container(format!("web-{i:04}"))),
                    request_id: String::new(),
                },
                bearer,
            );
            async move { client.create_service(request).await }
        })
        .buffer_unordered(16)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(environment.id)
}

pub async fn run(measure: &Measure, floors: &Floors) -> anyhow::Result<Vec<Figure>> {
    let dir = std::env::temp_dir().join(format!("slipway-bench-catalog-{}", std::process::id()));
    let runtime = echo::server_runtime("catalog-server")?;
    // Set up on the server's runtime: the pool and the bus belong to it. (A runtime must
    // not be dropped on the bench's own, hence the explicit shutdown on failure.)
    let setup = runtime.spawn(serve(dir.clone())).await;
    let (server, organization_id, token) = match setup.map_err(anyhow::Error::from) {
        Ok(Ok(setup)) => setup,
        Ok(Err(error)) | Err(error) => {
            runtime.shutdown_background();
            return Err(error);
        }
    };
    let server = echo::start(runtime, |listener, shutdown| async {
        let _ = server.serve(listener, shutdown).await;
    })?;
    let outcome = measure_catalog(measure, floors, server.addr, &organization_id, &token).await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn measure_catalog(
    measure: &Measure,
    floors: &Floors,
    addr: std::net::SocketAddr,
    organization_id: &str,
    token: &str,
) -> anyhow::Result<Vec<Figure>> {
    let bearer: AsciiMetadataValue = format!("Bearer {token}").parse()?;
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let seeding = std::time::Instant::now();
    let environment_id = seed(channel.clone(), organization_id, &bearer).await?;
    let mut walker = ListServices {
        client: ServiceServiceClient::new(channel),
        environment_id: environment_id.clone(),
        bearer: bearer.clone(),
    };
    let (pages, listed) = walker.walk().await?;
    anyhow::ensure!(
        listed == SERVICES,
        "listed {listed} services, not {SERVICES}"
    );
    if measure.verbose {
        eprintln!(
            "catalog: seeded {SERVICES} services in {:.1} s; a walk is {pages} pages",
            seeding.elapsed().as_secs_f64()
        );
    }

    let mut figures = Vec::new();
    // Figure A: GetEnvironment beside the bare echo floor of the same concurrency.
    for (concurrency, floor) in CONCURRENCY.into_iter().zip(&floors.bare) {
        let mut samples = Vec::new();
        for _ in 0..measure.rounds.max(1) {
            let client = |channel| GetEnvironment {
                client: EnvironmentServiceClient::new(channel),
                id: environment_id.clone(),
                bearer: bearer.clone(),
            };
            samples.push(echo::drive(addr, client, concurrency, measure.duration).await?);
        }
        let scenario = format!("catalog.get_env.sqlite.c{concurrency}");
        let measured = echo::summarize(&scenario, &samples);
        let ratio = measured[0].value / floor[0].value.max(f64::MIN_POSITIVE);
        echo::compare(&mut figures, measured, floor);
        println!(
            "{:<34} target: throughput >= {GET_TARGET:.2} x floor: {ratio:.3}, {}",
            scenario,
            if ratio >= GET_TARGET {
                "met"
            } else {
                "NOT met"
            }
        );
    }

    // Figure B: full walks of ListServices over the 1,000 services.
    let floor_c1 = floors
        .bare
        .first()
        .ok_or_else(|| anyhow::anyhow!("no echo floor at concurrency 1"))?;
    for concurrency in WALK_CONCURRENCY {
        let mut samples = Vec::new();
        for _ in 0..measure.rounds.max(1) {
            let client = |channel| ListServices {
                client: ServiceServiceClient::new(channel),
                environment_id: environment_id.clone(),
                bearer: bearer.clone(),
            };
            samples.push(echo::drive(addr, client, concurrency, measure.duration).await?);
        }
        let scenario = format!("catalog.list_1k_svc.sqlite.c{concurrency}");
        let [walks, p50, p99] = echo::summarize(&scenario, &samples);
        let mut measured = vec![
            Figure::new(&scenario, "walks", walks.value, "walk/s"),
            // Each page is one call: beside the echo floor's calls per second at c1.
            Figure::new(&scenario, "pages", walks.value * pages as f64, "page/s"),
            Figure::new(
                &scenario,
                "services",
                walks.value * SERVICES as f64,
                "svc/s",
            ),
            Figure::new(&scenario, "walk_p50", p50.value, "us"),
            Figure::new(&scenario, "walk_p99", p99.value, "us"),
        ];
        if concurrency == 1 {
            measured[1] = measured[1].clone().against(&floor_c1[0]);
        }
        for figure in measured {
            figure.print();
            figures.push(figure);
        }
    }
    Ok(figures)
}
