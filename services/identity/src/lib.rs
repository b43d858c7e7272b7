#![forbid(unsafe_code)]
//! `slipway-identity`: Organizations, members, roles, API tokens, authentication (`Authenticate`, `Check`) and the audit log.
//!
//! Every service of `slipway.identity.v1` is served, each in `api/` (one file per gRPC
//! service), over the typed store in `store/`. Callers authenticate with `slp_` API
//! tokens, resolved from the store, or, when an `[oidc]` issuer is configured
//! ([`Settings`]), users with that issuer's JWTs, their user record created on first sight
//! ([`resolver`]). Agent and service credentials are not issued or accepted yet (they
//! answer `TOKEN_INVALID`). A fresh install starts with [`bootstrap`].

pub mod api;
pub mod bootstrap;
pub mod convert;
pub mod grants;
pub mod page;
pub mod resolver;
pub mod settings;
pub mod store;
pub mod validation;

use std::future::Future;
use std::sync::Arc;

use slipway_auth::{AuthenticateLayer, OidcVerifier};
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

pub use settings::{OidcConfig, Settings};

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
///
/// Users' OIDC JWTs are not accepted (no issuer is configured); see [`mount_with_oidc`].
pub fn mount(server: GrpcServer, platform: &Platform) -> GrpcServer {
    mount_with_oidc(server, platform, None)
}

/// [`mount`], accepting users' JWTs verified by `oidc` when given.
pub fn mount_with_oidc(
    server: GrpcServer,
    platform: &Platform,
    oidc: Option<Arc<OidcVerifier>>,
) -> GrpcServer {
    let store = store::Store::new(platform.db.clone());
    let resolver = resolver::StoreResolver::with_oidc(store.clone(), oidc);
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

/// Runs the service on `listener` until `shutdown` completes, accepting users' JWTs from
/// the `[oidc]` issuer when one is configured.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let oidc = settings
        .oidc
        .as_ref()
        .map(|oidc| Arc::new(OidcVerifier::new(oidc.verifier_settings())));
    slipway_service::serve::<store::Migrator, _>(
        SERVICE_NAME,
        settings.service,
        listener,
        shutdown,
        move |server, platform| mount_with_oidc(server, &platform, oidc),
    )
    .await
}
