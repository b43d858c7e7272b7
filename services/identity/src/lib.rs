#![forbid(unsafe_code)]
//! `slipway-identity`: Organizations, members, roles, API tokens, authentication (`Authenticate`, `Check`) and the audit log.
//!
//! Every service of `slipway.identity.v1` is served, each in `api/` (one file per gRPC
//! service), over the typed store in `store/`. Callers authenticate with `slp_` API
//! tokens, resolved from the store, or, when an `[oidc]` issuer is configured
//! ([`Settings`]), users with that issuer's JWTs, their user record created on first sight
//! ([`resolver`]). The control plane's own services authenticate with the `slps_` service
//! credential configured in `[auth].service_credential` (`slipway-identity
//! service-credential` prints a fresh one); agent credentials are not issued or accepted yet
//! (they answer `TOKEN_INVALID`). A fresh install starts with [`bootstrap`].
//!
//! Every authenticated call and `Check` resolve through [`Identity::resolver`], a
//! [`CachingResolver`] around the store: identity drops the entries its own changes make
//! stale before publishing them, and follows the other replicas' events.

pub mod api;
pub mod bootstrap;
pub mod convert;
pub mod grants;
pub use slipway_api::page;
pub mod resolver;
pub mod settings;
pub mod store;
pub use slipway_api::validation;

use std::future::Future;
use std::sync::Arc;

use slipway_auth::cache::CacheSettings;
use slipway_auth::credential::{Credential, CredentialHash, CredentialKind};
use slipway_auth::{AuthenticateLayer, CachingResolver, OidcVerifier, PrincipalResolver};
use slipway_config::ConfigError;
use slipway_db::DatabaseConnection;
use slipway_events::EventBus;
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

/// How identity authenticates callers, beyond its database.
#[derive(Clone, Debug, Default)]
pub struct AuthOptions {
    /// The verifier of users' OIDC JWTs; none: JWTs are refused.
    pub oidc: Option<Arc<OidcVerifier>>,
    /// Hashes of the `slps_` service credentials accepted as the control plane.
    pub service_credentials: Vec<CredentialHash>,
    /// TTLs and size of the authentication cache.
    pub cache: CacheSettings,
}

impl AuthOptions {
    /// The options `settings` configure: the `[oidc]` issuer, and `[auth].service_credential`
    /// (checked in full; a damaged one stops start-up rather than refusing every service).
    pub fn from_settings(settings: &Settings) -> Result<Self, ServiceError> {
        let service_credentials = slipway_service::service_credential(settings)?
            .and_then(|text| Credential::parse_as(CredentialKind::Service, text).ok())
            .map(|credential| credential.hash())
            .into_iter()
            .collect();
        Ok(Self {
            oidc: match &settings.oidc {
                Some(oidc) => {
                    let verifier = OidcVerifier::new(oidc.verifier_settings()?)
                        .map_err(|e| ConfigError::invalid("oidc", e.to_string()))?;
                    Some(Arc::new(verifier))
                }
                None => None,
            },
            service_credentials,
            cache: CacheSettings::default(),
        })
    }
}

/// Identity in this process: its store and its cached resolver, ready to mount.
///
/// The resolver is what other services in the same process (`slipway dev`, in-process
/// tests) authenticate with ([`Identity::auth`]): they then see identity's changes at once,
/// without a network call or an event in between.
#[derive(Clone)]
pub struct Identity {
    ctx: api::Context,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("resolver", &self.ctx.resolver)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Identity over `db` (already migrated) and `bus`.
    pub fn new(db: DatabaseConnection, bus: Arc<dyn EventBus>, options: AuthOptions) -> Self {
        let store = store::Store::new(db);
        let resolver = resolver::StoreResolver::with_options(
            store.clone(),
            options.oidc,
            options.service_credentials,
        );
        Self {
            ctx: api::Context {
                store,
                bus,
                resolver: Arc::new(CachingResolver::new(resolver, options.cache)),
            },
        }
    }

    /// Identity on a database and bus shared with other services in this process (the
    /// embedded mode, benchmarks, in-process tests), running its migrations first, and
    /// its platform, whose `auth` is [`Identity::auth`]: pass that same resolver to the
    /// other services' `Platform::shared`. No event follower runs: in one process identity
    /// is the only writer, and it invalidates its cache itself.
    pub async fn shared(
        db: DatabaseConnection,
        bus: Arc<dyn EventBus>,
        options: AuthOptions,
    ) -> Result<(Self, Platform), ServiceError> {
        let identity = Self::new(db.clone(), Arc::clone(&bus), options);
        let platform = Platform::shared::<store::Migrator>(db, bus, identity.auth()).await?;
        Ok((identity, platform))
    }

    /// The cached resolver every authenticated call goes through.
    pub fn resolver(&self) -> &Arc<CachingResolver<resolver::StoreResolver>> {
        &self.ctx.resolver
    }

    /// [`Identity::resolver`] as any service's `Platform::auth`.
    pub fn auth(&self) -> Arc<dyn PrincipalResolver> {
        self.ctx.resolver.clone()
    }

    /// Adds identity's gRPC services to `server`: the ones built, and the packages it owns.
    ///
    /// Every built service sits behind `AuthenticateLayer` with the cached resolver, except
    /// `AuthService`, whose Authenticate must answer callers without a credential of their
    /// own; its Check and BatchCheck authenticate the caller themselves.
    pub fn mount(&self, server: GrpcServer) -> GrpcServer {
        let ctx = self.ctx.clone();
        let authenticate = AuthenticateLayer::new(ctx.resolver.clone());
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
                api::organizations::Organizations::new(ctx.clone()),
            )))
            .add_service(AuthServiceServer::new(api::auth::Auth::new(
                ctx.store,
                ctx.resolver,
            )))
            .own_package("slipway.identity.v1", NOT_BUILT_YET)
    }
}

/// Adds this service's gRPC services to `server`, over `platform`'s database and bus, with
/// default [`AuthOptions`] (no OIDC issuer, no service credential).
///
/// `platform.auth` is not used: identity always resolves from its own store. To share
/// identity's resolver with other services in one process, use [`Identity::shared`].
pub fn mount(server: GrpcServer, platform: &Platform) -> GrpcServer {
    Identity::new(
        platform.db.clone(),
        Arc::clone(&platform.bus),
        AuthOptions::default(),
    )
    .mount(server)
}

/// Connects a standalone identity as `settings` say: its database (migrated) and the bus,
/// without `[auth].identity_url` (identity is the one service that needs none), identity
/// built around them, and its platform, whose `auth` is identity's cached resolver and
/// whose event follower drops what other replicas' changes make stale.
pub async fn connect(settings: &Settings) -> Result<(Identity, Platform), ServiceError> {
    let options = AuthOptions::from_settings(settings)?;
    let (db, bus) = Platform::connect_storage::<store::Migrator>(settings).await?;
    let identity = Identity::new(db.clone(), Arc::clone(&bus), options);
    let follower = identity
        .resolver()
        .follow_identity_events(Arc::clone(&bus))
        .await?;
    let platform = Platform::new(db, bus, identity.auth()).with_follower(follower);
    Ok((identity, platform))
}

/// Runs the service on `listener` until `shutdown` completes, accepting users' JWTs from
/// the `[oidc]` issuer when one is configured, and the `[auth].service_credential`.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let (identity, platform) = connect(&settings).await?;
    slipway_service::serve_platform(
        SERVICE_NAME,
        settings.service,
        platform,
        listener,
        shutdown,
        move |server, _platform| identity.mount(server),
    )
    .await
}
