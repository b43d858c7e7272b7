//! `slipway dev`: the embedded mode. Every service's gRPC API on one port, backed by one
//! SQLite file and the in-memory event bus, so a newcomer needs nothing but this binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use slipway_config::{NatsSettings, ServerSettings, TelemetrySettings};
use slipway_kit::GrpcServer;
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

    let identity = slipway_identity::App::from_parts(db.clone(), bus.clone()).await?;
    let catalog = slipway_catalog::App::from_parts(db.clone(), bus.clone()).await?;
    let orchestrator = slipway_orchestrator::App::from_parts(db.clone(), bus.clone()).await?;
    let build_runner = slipway_build_runner::App::from_parts(db.clone(), bus.clone()).await?;
    let log_streaming = slipway_log_streaming::App::from_parts(db, bus).await?;

    let mut server = GrpcServer::new(ServerSettings::default(), Metrics::new("slipway-dev")?);
    server = slipway_identity::mount(server, &identity);
    server = slipway_catalog::mount(server, &catalog);
    server = slipway_orchestrator::mount(server, &orchestrator);
    server = slipway_build_runner::mount(server, &build_runner);
    server = slipway_log_streaming::mount(server, &log_streaming);

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
