//! The catalog API test harness: identity and catalog in one server on a real PostgreSQL
//! database and a real NATS JetStream, two organizations, and tokens of every role.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_catalog::MasterKey;
use slipway_identity::store::{
    self as id_store, BuiltinRole, NewApiToken, NewOrganization, RoleRef, SecretHash,
    Store as IdentityStore, UserClaims,
};
use slipway_kit::GrpcServer;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::cluster_service_client::ClusterServiceClient;
use slipway_proto::catalog::v1::environment_service_client::EnvironmentServiceClient;
use slipway_proto::catalog::v1::project_service_client::ProjectServiceClient;
use slipway_service::Platform;
use slipway_telemetry::metrics::Metrics;
use slipway_testkit::{Sandbox, TestDatabase, TestNats};
use tonic::transport::Channel;
use tonic::{Request, Status};
use tonic_types::StatusExt as _;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type BoxError = Box<dyn std::error::Error>;

/// One organization and an ADMIN token of it.
#[derive(Clone, Debug)]
pub struct Org {
    pub id: String,
    pub admin: String,
}

pub struct Harness {
    pub channel: Channel,
    pub identity: IdentityStore,
    pub platform: Platform,
    pub a: Org,
    pub b: Org,
    sandbox: Sandbox,
    _db: TestDatabase,
    _nats: TestNats,
}

impl Harness {
    pub async fn start() -> Result<Self, BoxError> {
        Self::start_with(slipway_identity::AuthOptions::default()).await
    }

    /// A harness whose identity also accepts the control-plane service credential
    /// returned next to it (a `slps_` token), for the internal RPCs.
    pub async fn start_with_service() -> Result<(Self, String), BoxError> {
        let secret = NewCredential::generate(CredentialKind::Service)?;
        let options = slipway_identity::AuthOptions {
            service_credentials: vec![secret.hash()],
            ..Default::default()
        };
        Ok((Self::start_with(options).await?, secret.into_secret()))
    }

    /// The principal `bearer` resolves to, as the catalog's authentication layer sees it.
    pub async fn principal(&self, bearer: &str) -> Result<slipway_auth::rbac::Principal, BoxError> {
        Ok(self.platform.auth.resolve(bearer).await?)
    }

    /// A catalog API context on the harness's database and bus (for handlers that are not
    /// mounted as a gRPC service of their own). Its keyring has a master key of its own:
    /// it cannot open what the server sealed.
    pub fn context(&self) -> Result<slipway_catalog::api::Context, BoxError> {
        let store = slipway_catalog::store::Store::new(self.platform.db.clone());
        Ok(slipway_catalog::api::Context {
            keyring: slipway_catalog::keyring::Keyring::new(MasterKey::generate()?, store.clone()),
            store,
            bus: Arc::clone(&self.platform.bus),
        })
    }

    pub async fn start_with(options: slipway_identity::AuthOptions) -> Result<Self, BoxError> {
        Self::start_inner(options, None).await
    }

    /// A harness whose catalog is mounted with [`slipway_catalog::mount_with`], its
    /// manifests pointing agents at `orchestrator_url`.
    pub async fn start_with_orchestrator_url(orchestrator_url: &str) -> Result<Self, BoxError> {
        Self::start_inner(
            slipway_identity::AuthOptions::default(),
            Some(orchestrator_url.to_owned()),
        )
        .await
    }

    async fn start_inner(
        options: slipway_identity::AuthOptions,
        orchestrator_url: Option<String>,
    ) -> Result<Self, BoxError> {
        let db = TestDatabase::postgres().await?;
        let nats = TestNats::start().await?;
        let nats_settings = slipway_config::NatsSettings {
            url: nats.url().to_owned(),
            namespace: nats.namespace().to_owned(),
            ..Default::default()
        };
        let conn = slipway_db::connect(db.url(), 8, std::time::Duration::from_secs(15)).await?;
        let bus = slipway_events::connect(&nats_settings).await?;
        slipway_db::migrate::<id_store::Migrator>(&conn).await?;
        let identity = slipway_identity::Identity::new(conn.clone(), Arc::clone(&bus), options);
        let platform = Platform::shared::<slipway_catalog::store::Migrator>(
            conn.clone(),
            Arc::clone(&bus),
            identity.auth(),
        )
        .await?;
        let master = MasterKey::generate()?;
        let serving = platform.clone();
        let mut sandbox = Sandbox::new();
        sandbox
            .start("catalog", move |listener, shutdown| async move {
                let server = GrpcServer::new(
                    slipway_config::ServerSettings::default(),
                    Metrics::new("catalog-test")?,
                );
                let server = identity.mount(server);
                let server = match orchestrator_url {
                    Some(url) => slipway_catalog::mount_with(
                        server,
                        &serving,
                        slipway_catalog::CatalogOptions::new(master).with_orchestrator_url(url),
                    ),
                    None => slipway_catalog::mount(server, &serving, master),
                };
                server.serve(listener, shutdown).await?;
                Ok::<(), BoxError>(())
            })
            .await?;
        let channel = sandbox.channel("catalog").ok_or("catalog is not running")?;
        let identity = IdentityStore::new(conn);
        let a = org(&identity, "org-a").await?;
        let b = org(&identity, "org-b").await?;
        Ok(Self {
            channel,
            identity,
            platform,
            a,
            b,
            sandbox,
            _db: db,
            _nats: nats,
        })
    }

    /// A token of `org` with `role`.
    pub async fn token(&self, org: &str, role: RoleRef) -> Result<String, BoxError> {
        token(&self.identity, org, role).await
    }

    pub async fn builtin(&self, org: &str, role: BuiltinRole) -> Result<String, BoxError> {
        self.token(org, RoleRef::Builtin(role)).await
    }

    pub fn projects(&self) -> ProjectServiceClient<Channel> {
        ProjectServiceClient::new(self.channel.clone())
    }

    pub fn environments(&self) -> EnvironmentServiceClient<Channel> {
        EnvironmentServiceClient::new(self.channel.clone())
    }

    pub fn clusters(&self) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel.clone())
    }

    /// A project named `name` in `org`.
    pub async fn project(&self, org: &Org, name: &str) -> Result<pb::Project, BoxError> {
        let created = self
            .projects()
            .create_project(with_token(
                pb::CreateProjectRequest {
                    organization_id: org.id.clone(),
                    project: Some(pb::Project {
                        name: name.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &org.admin,
            ))
            .await?;
        Ok(created.into_inner().project.ok_or("no project")?)
    }

    /// A self-managed cluster row in `org`, written to the store directly (so these tests
    /// do not depend on ClusterService).
    pub async fn cluster(&self, org: &Org, name: &str) -> Result<String, BoxError> {
        use slipway_catalog::api::CatalogMessage as _;
        let store = slipway_catalog::store::Store::new(self.platform.db.clone());
        let cluster = pb::Cluster {
            name: name.into(),
            kind: pb::ClusterKind::SelfManaged.into(),
            ..Default::default()
        };
        let row = slipway_catalog::store::NewRow {
            id: slipway_catalog::store::new_id(),
            organization_id: org.id.clone(),
            parent_id: org.id.clone(),
            name: name.into(),
            spec: cluster.to_spec(),
            ..Default::default()
        };
        let (row, _) = store
            .insert(slipway_catalog::store::Kind::Cluster, row, None)
            .await?;
        Ok(row.id)
    }

    /// An environment `name` of `mode` in `project`, on `cluster_id`.
    pub async fn environment(
        &self,
        org: &Org,
        project: &pb::Project,
        name: &str,
        mode: slipway_proto::common::v1::EnvironmentMode,
        cluster_id: &str,
    ) -> Result<pb::Environment, BoxError> {
        let created = self
            .environments()
            .create_environment(with_token(
                pb::CreateEnvironmentRequest {
                    project_id: project.id.clone(),
                    environment: Some(pb::Environment {
                        name: name.into(),
                        mode: mode.into(),
                        cluster_id: cluster_id.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &org.admin,
            ))
            .await?;
        Ok(created.into_inner().environment.ok_or("no environment")?)
    }

    pub async fn stop(self) -> TestResult {
        self.sandbox.shutdown().await?;
        Ok(())
    }
}

async fn org(identity: &IdentityStore, name: &str) -> Result<Org, BoxError> {
    let user = identity
        .upsert_user(&UserClaims {
            issuer: "https://issuer.test".into(),
            subject: format!("owner-{name}"),
            email: format!("owner@{name}.example.com"),
            display_name: "owner".into(),
        })
        .await?;
    let (org, _) = identity
        .create_organization(
            &NewOrganization {
                name: name.into(),
                display_name: name.into(),
            },
            &user.id,
        )
        .await?;
    let admin = token(identity, &org.id, RoleRef::Builtin(BuiltinRole::Admin)).await?;
    Ok(Org { id: org.id, admin })
}

async fn token(identity: &IdentityStore, org: &str, role: RoleRef) -> Result<String, BoxError> {
    let secret = NewCredential::generate(CredentialKind::ApiToken)?;
    identity
        .create_api_token(&NewApiToken {
            organization_id: org.to_owned(),
            name: format!("t-{}", uuid::Uuid::now_v7().simple()),
            description: String::new(),
            role,
            secret_hash: SecretHash::from_digest(*secret.hash().as_bytes()),
            secret_hint: secret.hint().to_owned(),
            expire_time: None,
            creator: id_store::PrincipalRef {
                kind: id_store::PrincipalKind::User,
                id: "test".into(),
                display_name: "test".into(),
            },
        })
        .await?;
    Ok(secret.into_secret())
}

pub fn with_token<T>(message: T, secret: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {secret}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

pub fn violations(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

pub fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

impl Harness {
    pub fn services(
        &self,
    ) -> slipway_proto::catalog::v1::service_service_client::ServiceServiceClient<Channel> {
        slipway_proto::catalog::v1::service_service_client::ServiceServiceClient::new(
            self.channel.clone(),
        )
    }
}
