#![forbid(unsafe_code)]
//! `slipway-catalog`: projects, environments, services of every kind, clusters,
//! registries, git credentials, variables and secrets, deployment rules.
//!
//! The catalog keeps the description of what should run; the orchestrator makes it so.
//! Every RPC authenticates through `slipway_auth` and authorizes per the RBAC table, and
//! every change is published on the EVENTS stream. The parts of the API not built yet
//! answer `UNIMPLEMENTED` with a sentence saying so (see [`NOT_BUILT_YET`]).

pub mod api;
pub mod keyring;
pub mod manifest;
pub mod mask;
pub mod schedule;
pub mod secrets;
pub mod settings;
pub mod store;
pub mod variables;

use std::future::Future;
use std::sync::Arc;

use slipway_auth::AuthenticateLayer;
use slipway_kit::GrpcServer;
use slipway_proto::catalog::v1::catalog_internal_service_server::CatalogInternalServiceServer;
use slipway_proto::catalog::v1::cluster_service_server::ClusterServiceServer;
use slipway_proto::catalog::v1::deployment_rule_service_server::DeploymentRuleServiceServer;
use slipway_proto::catalog::v1::environment_service_server::EnvironmentServiceServer;
use slipway_proto::catalog::v1::git_credential_service_server::GitCredentialServiceServer;
use slipway_proto::catalog::v1::project_service_server::ProjectServiceServer;
use slipway_proto::catalog::v1::registry_service_server::RegistryServiceServer;
use slipway_proto::catalog::v1::service_service_server::ServiceServiceServer;
use slipway_proto::catalog::v1::variable_service_server::VariableServiceServer;
use slipway_service::{Platform, ServiceError};
use tokio::net::TcpListener;
use tower::Layer as _;

pub use secrets::MasterKey;
pub use settings::Settings;

/// The process and service name, in logs, traces and metrics.
pub const SERVICE_NAME: &str = "slipway-catalog";

/// The API packages this service owns.
pub const PACKAGES: &[&str] = &["slipway.catalog.v1"];

/// The gRPC services of [`PACKAGES`] built so far; the others answer `UNIMPLEMENTED`.
pub const BUILT: &[&str] = &[
    "slipway.catalog.v1.CatalogInternalService",
    "slipway.catalog.v1.ClusterService",
    "slipway.catalog.v1.DeploymentRuleService",
    "slipway.catalog.v1.EnvironmentService",
    "slipway.catalog.v1.GitCredentialService",
    "slipway.catalog.v1.ProjectService",
    "slipway.catalog.v1.RegistryService",
    "slipway.catalog.v1.ServiceService",
    "slipway.catalog.v1.VariableService",
];

/// What the RPCs of [`PACKAGES`] not built yet answer, after the method name.
pub const NOT_BUILT_YET: &str = "this part of the catalog api is not built yet";

/// What the catalog's services are built with, beyond the platform they run on.
///
/// A struct rather than more arguments to [`mount`], whose signature `slipway dev`, the
/// benches and the tests share: a new option is a new field here, with a default.
#[derive(Clone, Debug)]
pub struct CatalogOptions {
    /// Seals and opens every secret the catalog stores.
    pub master_key: MasterKey,
    /// Where install manifests point agents ([`settings::ClustersSettings`]).
    pub orchestrator_url: String,
}

impl CatalogOptions {
    /// The defaults around `master_key`: manifests point at
    /// [`api::clusters::DEFAULT_ORCHESTRATOR_URL`].
    pub fn new(master_key: MasterKey) -> Self {
        Self {
            master_key,
            orchestrator_url: api::clusters::DEFAULT_ORCHESTRATOR_URL.to_owned(),
        }
    }

    /// Manifests point agents at `url`.
    pub fn with_orchestrator_url(mut self, url: impl Into<String>) -> Self {
        self.orchestrator_url = url.into();
        self
    }
}

/// Adds the catalog's gRPC services to `server`, each behind authentication by
/// `platform.auth`; secrets are sealed under `master_key`. Everything else is default
/// ([`CatalogOptions::new`]); [`mount_with`] takes the options.
pub fn mount(server: GrpcServer, platform: &Platform, master_key: MasterKey) -> GrpcServer {
    mount_with(server, platform, CatalogOptions::new(master_key))
}

/// [`mount`] with every option given.
pub fn mount_with(server: GrpcServer, platform: &Platform, options: CatalogOptions) -> GrpcServer {
    let store = store::Store::new(platform.db.clone()).following_changes(Arc::clone(&platform.bus));
    let ctx = api::Context {
        keyring: keyring::Keyring::new(options.master_key, store.clone()),
        store,
        bus: Arc::clone(&platform.bus),
    };
    let clusters =
        api::clusters::Clusters::new(ctx.clone()).with_orchestrator_url(options.orchestrator_url);
    let authenticate = AuthenticateLayer::new(Arc::clone(&platform.auth));
    server
        .add_service(
            authenticate.layer(ProjectServiceServer::new(api::projects::Projects::new(
                ctx.clone(),
            ))),
        )
        .add_service(authenticate.layer(EnvironmentServiceServer::new(
            api::environments::Environments::new(ctx.clone()),
        )))
        .add_service(authenticate.layer(DeploymentRuleServiceServer::new(
            api::deployment_rules::DeploymentRules::new(ctx.clone()),
        )))
        .add_service(authenticate.layer(ClusterServiceServer::new(clusters)))
        .add_service(authenticate.layer(RegistryServiceServer::new(
            api::registries::Registries::new(ctx.clone()),
        )))
        .add_service(authenticate.layer(GitCredentialServiceServer::new(
            api::git_credentials::GitCredentials::new(ctx.clone()),
        )))
        .add_service(authenticate.layer(VariableServiceServer::new(
            api::variables::Variables::new(ctx.clone()),
        )))
        .add_service(authenticate.layer(CatalogInternalServiceServer::new(
            api::internal::Internal::new(ctx.clone()),
        )))
        .add_service(
            authenticate.layer(ServiceServiceServer::new(api::services::Services::new(
                ctx.clone(),
            ))),
        )
        .own_package("slipway.catalog.v1", NOT_BUILT_YET)
}

/// Runs the service on `listener` until `shutdown` completes.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let options = CatalogOptions::new(settings.secrets.master_key().map_err(ServiceError::from)?)
        .with_orchestrator_url(settings.clusters.orchestrator_url());
    slipway_service::serve::<store::Migrator, _>(
        SERVICE_NAME,
        settings.service,
        listener,
        shutdown,
        move |server, platform| mount_with(server, &platform, options),
    )
    .await
}
