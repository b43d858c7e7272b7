//! The orchestrator's shared test harness: the control plane its integration tests run
//! against (identity and catalog in one in-process server on a fresh PostgreSQL database
//! and a fresh NATS JetStream namespace, with the orchestrator's tables migrated beside
//! catalog's), and the identity and catalog rows the tests set up through it. Each test
//! file mounts its own part of the orchestrator next to it and keeps its own fakes.
#![allow(dead_code, reason = "each test file uses its own part")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_catalog::MasterKey;
use slipway_db::DatabaseConnection;
use slipway_events::EventBus;
use slipway_identity::store::{
    self as id_store, BuiltinRole, NewApiToken, NewOrganization, RoleRef, SecretHash,
    Store as IdentityStore, UserClaims,
};
use slipway_kit::GrpcServer;
use slipway_orchestrator::api::ServiceLookup;
use slipway_orchestrator::catalog::CatalogClient;
use slipway_proto::catalog::v1 as cpb;
use slipway_service::Platform;
use slipway_telemetry::metrics::Metrics;
use slipway_testkit::{Sandbox, TestDatabase, TestNats};
use tonic::Request;
use tonic::transport::Channel;

/// What a sandboxed server's `serve` closure fails with: any error, sent across tasks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Identity and catalog served as the orchestrator finds them in production, so the
/// orchestrator under test calls a real catalog with a real service credential instead
/// of a stub. Fields are declared in drop order: the clients and the servers go before
/// the database and the NATS namespace they use are deleted.
pub struct ControlPlane {
    /// The orchestrator's client of catalog, presenting [`Self::service_secret`].
    pub catalog: CatalogClient,
    /// The orchestrator's service lookup in catalog, presenting [`Self::service_secret`].
    pub services: ServiceLookup,
    /// A channel to the `control` server (identity and catalog), for calls a test makes
    /// as a user with a bearer token.
    pub control: Channel,
    /// A service credential identity accepts: what a deployed orchestrator is given.
    pub service_secret: String,
    /// Database, bus and identity's in-process resolver, shared by every service here;
    /// both catalog's and the orchestrator's migrations have run on the database.
    pub platform: Platform,
    /// The connection identity's store is opened on (see [`Self::identity`]).
    pub conn: DatabaseConnection,
    /// The bus on this test's NATS namespace, for fakes playing agents and builders.
    pub bus: Arc<dyn EventBus>,
    /// Serves `control`; a test starts its orchestrator here too (or in a sandbox of
    /// its own).
    pub sandbox: Sandbox,
    /// This test's own database, dropped with it.
    pub db: TestDatabase,
    /// This test's own NATS namespace, its streams deleted with it.
    pub nats: TestNats,
}

impl ControlPlane {
    /// Starts the control plane; `metrics_name` names its server's metrics registry.
    pub async fn start(metrics_name: &str) -> Self {
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
        slipway_db::migrate::<id_store::Migrator>(&conn)
            .await
            .unwrap();
        let service = NewCredential::generate(CredentialKind::Service).unwrap();
        let options = slipway_identity::AuthOptions {
            service_credentials: vec![service.hash()],
            ..Default::default()
        };
        let identity = slipway_identity::Identity::new(conn.clone(), Arc::clone(&bus), options);
        let platform = Platform::shared::<slipway_catalog::store::Migrator>(
            conn.clone(),
            Arc::clone(&bus),
            identity.auth(),
        )
        .await
        .unwrap();
        slipway_db::migrate::<slipway_orchestrator::store::Migrator>(&conn)
            .await
            .unwrap();
        let master = MasterKey::generate().unwrap();
        let serving = platform.clone();
        let metrics = Metrics::new(metrics_name).unwrap();
        let mut sandbox = Sandbox::new();
        sandbox
            .start("control", move |listener, shutdown| async move {
                let server = GrpcServer::new(slipway_config::ServerSettings::default(), metrics);
                let server = identity.mount(server);
                let server = slipway_catalog::mount(server, &serving, master);
                server.serve(listener, shutdown).await?;
                Ok::<(), BoxError>(())
            })
            .await
            .unwrap();
        let control = sandbox.channel("control").unwrap();
        let service_secret = service.into_secret();
        let catalog = CatalogClient::new(control.clone(), &service_secret).unwrap();
        let services = ServiceLookup::new(control.clone(), &service_secret).unwrap();
        Self {
            catalog,
            services,
            control,
            service_secret,
            platform,
            conn,
            bus,
            sandbox,
            db,
            nats,
        }
    }

    /// Identity's store on the shared database, for setting up users, organizations
    /// and tokens directly rather than through identity's API.
    pub fn identity(&self) -> IdentityStore {
        IdentityStore::new(self.conn.clone())
    }
}

/// `message` as a caller holding `secret` sends it: the APIs under test authenticate
/// every call.
pub fn with_token<T>(message: T, secret: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    request
}

/// An organization named `name`, owned by a user of its own, and an ADMIN API token of
/// it: (organization id, token). Tenancy tests make two and check neither sees the other.
pub async fn org(identity: &IdentityStore, name: &str) -> (String, String) {
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
    let admin = api_token(identity, &org.id, BuiltinRole::Admin).await;
    (org.id, admin)
}

/// A new API token of `org` with `role`, for tests of what each role may do.
pub async fn api_token(identity: &IdentityStore, org: &str, role: BuiltinRole) -> String {
    let secret = NewCredential::generate(CredentialKind::ApiToken).unwrap();
    identity
        .create_api_token(&NewApiToken {
            organization_id: org.into(),
            name: format!("t-{}", uuid::Uuid::now_v7().simple()),
            description: String::new(),
            role: RoleRef::Builtin(role),
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
    secret.into_secret()
}

/// A self-managed cluster of `org` named `name`, written to catalog's store directly so
/// these tests depend on neither `ClusterService` nor its agent tokens (they play the
/// agent on the bus). Returns its id.
pub async fn cluster_row(platform: &Platform, org: &str, name: &str) -> String {
    use slipway_catalog::api::CatalogMessage as _;
    let store = slipway_catalog::store::Store::new(platform.db.clone());
    let cluster = cpb::Cluster {
        name: name.into(),
        kind: cpb::ClusterKind::SelfManaged.into(),
        ..Default::default()
    };
    let row = slipway_catalog::store::NewRow {
        id: slipway_catalog::store::new_id(),
        organization_id: org.into(),
        parent_id: org.into(),
        name: name.into(),
        spec: cluster.to_spec(),
        ..Default::default()
    };
    store
        .insert(slipway_catalog::store::Kind::Cluster, row, None)
        .await
        .unwrap()
        .0
        .id
}

/// A project named `name` in `org`, created through catalog's API with `token` (on the
/// `control` channel), as a user would: environments and deployments hang off it.
pub async fn create_project(control: &Channel, org: &str, token: &str, name: &str) -> cpb::Project {
    cpb::project_service_client::ProjectServiceClient::new(control.clone())
        .create_project(with_token(
            cpb::CreateProjectRequest {
                organization_id: org.into(),
                project: Some(cpb::Project {
                    name: name.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap()
}
