//! Authorization over the network: `AuthService.Check` served by identity as `slipway dev`
//! runs it (SQLite file, in-memory bus, the kit stack), driven like the echo scenarios and
//! compared with the bare tonic echo floor of the same concurrency from the same run.

use slipway_config::{NatsSettings, ServerSettings};
use slipway_kit::GrpcServer;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::identity::v1::auth_service_client::AuthServiceClient;
use slipway_proto::identity::v1::{CheckRequest, Resource, ResourceKind};
use slipway_telemetry::metrics::Metrics;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::echo::{self, CONCURRENCY, Floors, Measure, Rpc};
use crate::report::Figure;

/// A Check the bootstrap token (ADMIN) is allowed: deploying a production environment.
#[derive(Clone)]
struct Check {
    client: AuthServiceClient<Channel>,
    request: CheckRequest,
    bearer: AsciiMetadataValue,
}

impl Rpc for Check {
    async fn call(&mut self) -> anyhow::Result<()> {
        let mut request = tonic::Request::new(self.request.clone());
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        let decision = self.client.check(request).await?.into_inner().decision;
        anyhow::ensure!(
            decision.as_ref().is_some_and(|d| d.allowed),
            "check denied: {decision:?}"
        );
        Ok(())
    }
}

/// Identity on `dir`'s SQLite file, mounted on the kit stack, and the bootstrap
/// organization's id and token.
async fn identity(dir: std::path::PathBuf) -> anyhow::Result<(GrpcServer, String, String)> {
    let url = format!("sqlite://{}", dir.join("slipway.db").display());
    let db = slipway_db::connect(&url, 4, std::time::Duration::from_secs(5)).await?;
    let bus = slipway_events::in_memory(&NatsSettings::default()).await?;
    // As `slipway dev` builds it: identity's cached resolver in front of its store.
    let (identity, platform) =
        slipway_identity::Identity::shared(db, bus, slipway_identity::AuthOptions::default())
            .await?;
    let bootstrapped = slipway_identity::bootstrap(&platform, "bench").await?;
    let server = GrpcServer::new(ServerSettings::default(), Metrics::new("bench-identity")?);
    Ok((
        identity.mount(server),
        bootstrapped.organization_id,
        bootstrapped.secret,
    ))
}

pub async fn run(measure: &Measure, floors: &Floors) -> anyhow::Result<Vec<Figure>> {
    let dir = std::env::temp_dir().join(format!("slipway-bench-{}", std::process::id()));
    let runtime = echo::server_runtime("identity-server")?;
    // Set up on the server's runtime: the pool and the bus belong to it. (A runtime must
    // not be dropped on the bench's own, hence the explicit shutdown on failure.)
    let setup = runtime.spawn(identity(dir.clone())).await;
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
    let bearer: AsciiMetadataValue = format!("Bearer {token}").parse()?;
    let request = CheckRequest {
        principal: None,
        action: "deploy.environments.deploy".to_owned(),
        resource: Some(Resource {
            kind: ResourceKind::Environment.into(),
            id: "0190f5c2-7a4e-7cc1-9b1e-000000000300".to_owned(),
            organization_id,
            project_id: "0190f5c2-7a4e-7cc1-9b1e-000000000250".to_owned(),
            environment_mode: EnvironmentMode::Production.into(),
            ..Resource::default()
        }),
    };
    let mut figures = Vec::new();
    for (concurrency, floor) in CONCURRENCY.into_iter().zip(&floors.bare) {
        let mut samples = Vec::new();
        for _ in 0..measure.rounds.max(1) {
            let client = |channel| Check {
                client: AuthServiceClient::new(channel),
                request: request.clone(),
                bearer: bearer.clone(),
            };
            samples.push(echo::drive(server.addr, client, concurrency, measure.duration).await?);
        }
        let measured = echo::summarize(&format!("authz.grpc_check.c{concurrency}"), &samples);
        echo::compare(&mut figures, measured, floor);
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}
