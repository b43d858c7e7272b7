#![forbid(unsafe_code)]
//! `slipway-identity`: Organizations, members, roles, API tokens, authentication (`Authenticate`, `Check`) and the audit log.
//!
//! Every service of `slipway.identity.v1` is served, each in `api/` (one file per gRPC
//! service), over the typed store in `store/`. Callers authenticate with `slp_` API
//! tokens, resolved from the store ([`resolver`]); OIDC JWTs, agent and service
//! credentials are not issued or accepted yet (they answer `TOKEN_INVALID`). A fresh
//! install starts with [`bootstrap`].

pub mod api;
pub mod bootstrap;
pub mod convert;
pub mod grants;
pub mod page;
pub mod resolver;
pub mod store;
pub mod validation;

use std::future::Future;

use slipway_auth::AuthenticateLayer;
use slipway_kit::GrpcServer;
use slipway_proto::identity::v1::api_token_service_server::ApiTokenServiceServer;
use slipway_proto::identity::v1::audit_service_server::AuditServiceServer;
use slipway_proto::identity::v1::auth_service_server::AuthServiceServer;
use slipway_proto::identity::v1::invitation_service_server::InvitationServiceServer;
use slipway_proto::identity::v1::member_service_server::MemberServiceServer;
use slipway_proto::identity::v1::organization_service_server::OrganizationServiceServer;
use slipway_proto::identity::v1::role_service_server::RoleServiceServer;
use slipway_proto::identity::v1::user_service_server::UserServiceServer;
use slipway_service::{Platform, ServiceError};
use tokio::net::TcpListener;
use tower::Layer as _;

pub use bootstrap::{BootstrapError, Bootstrapped, bootstrap};

/// This service reads the settings every control-plane service reads.
pub use slipway_service::ServiceSettings as Settings;

/// The process and service name, in logs, traces and metrics.
pub const SERVICE_NAME: &str = "slipway-identity";

/// The API packages this service owns.
pub const PACKAGES: &[&str] = &["slipway.identity.v1"];

/// The gRPC services of [`PACKAGES`] that are built.
pub const BUILT: &[&str] = &[
    "slipway.identity.v1.ApiTokenService",
    "slipway.identity.v1.AuditService",
    "slipway.identity.v1.AuthService",
    "slipway.identity.v1.InvitationService",
    "slipway.identity.v1.MemberService",
    "slipway.identity.v1.OrganizationService",
    "slipway.identity.v1.RoleService",
    "slipway.identity.v1.UserService",
];

/// What the RPCs of [`PACKAGES`] not built yet answer, after the method name.
/// (Every service is built today; a service added to the package later answers this until
/// it is.)
pub const NOT_BUILT_YET: &str = "this part of the identity api is not built yet";

/// Adds this service's gRPC services to `server`: the ones built, and the packages it owns.
///
/// Every built service sits behind `AuthenticateLayer` with identity's store-backed
/// resolver, except `AuthService`, whose Authenticate must answer callers without a
/// credential of their own; its Check and BatchCheck authenticate the caller themselves.
pub fn mount(server: GrpcServer, platform: &Platform) -> GrpcServer {
    let store = store::Store::new(platform.db.clone());
    let resolver = resolver::StoreResolver::new(store.clone());
    let ctx = api::Context {
        store: store.clone(),
        bus: platform.bus.clone(),
        resolver: resolver.clone(),
    };
    let authenticate = AuthenticateLayer::new(resolver.clone());
    server
        .add_service(authenticate.layer(ApiTokenServiceServer::new(
            api::api_tokens::ApiTokens::new(ctx.clone()),
        )))
        .add_service(
            authenticate.layer(AuditServiceServer::new(api::audit::Audit::new(ctx.clone()))),
        )
        .add_service(
            authenticate.layer(MemberServiceServer::new(api::members::Members::new(
                ctx.clone(),
            ))),
        )
        .add_service(
            authenticate.layer(RoleServiceServer::new(api::roles::Roles::new(ctx.clone()))),
        )
        .add_service(authenticate.layer(InvitationServiceServer::new(
            api::invitations::Invitations::new(ctx.clone()),
        )))
        .add_service(
            authenticate.layer(UserServiceServer::new(api::users::Users::new(ctx.clone()))),
        )
        .add_service(authenticate.layer(OrganizationServiceServer::new(
            api::organizations::Organizations::new(ctx),
        )))
        .add_service(AuthServiceServer::new(api::auth::Auth::new(
            store, resolver,
        )))
        .own_package("slipway.identity.v1", NOT_BUILT_YET)
}

/// Runs the service on `listener` until `shutdown` completes.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    slipway_service::serve::<store::Migrator, _>(
        SERVICE_NAME,
        settings,
        listener,
        shutdown,
        |server, platform| mount(server, &platform),
    )
    .await
}
