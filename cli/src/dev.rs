//! `slipway dev`: the embedded mode. Every service's gRPC API on one port, backed by one
//! SQLite file and the in-memory event bus, so a newcomer needs nothing but this binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
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

    let mut server = GrpcServer::new(ServerSettings::default(), Metrics::new("slipway-dev")?);
    let identity = Platform::shared::<slipway_identity::store::Migrator>(db.clone(), bus.clone());
    server = slipway_identity::mount(server, &identity.await?);
    let catalog = Platform::shared::<slipway_catalog::store::Migrator>(db.clone(), bus.clone());
    server = slipway_catalog::mount(server, &catalog.await?);
    let orchestrator =
        Platform::shared::<slipway_orchestrator::store::Migrator>(db.clone(), bus.clone());
    server = slipway_orchestrator::mount(server, &orchestrator.await?);
    let build_runner =
        Platform::shared::<slipway_build_runner::store::Migrator>(db.clone(), bus.clone());
    server = slipway_build_runner::mount(server, &build_runner.await?);
    let log_streaming = Platform::shared::<slipway_log_streaming::store::Migrator>(db, bus);
    server = slipway_log_streaming::mount(server, &log_streaming.await?);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::warn!(
        "no local agent runs yet: deployments arrive with the orchestrator and agent issue"
    );
    server
        .serve(listener, slipway_kit::shutdown_signal())
        .await?;
    Ok(())
}
