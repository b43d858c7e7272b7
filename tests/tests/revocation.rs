#![allow(
    clippy::unwrap_used,
    reason = "a panic is how a test helper reports the unexpected"
)]

//! A token revoked in identity is refused by another service within one second: the other
//! service resolves credentials through identity with a cache (`slipway_auth::remote`),
//! and identity's `identity.api_token.revoked` event drops the cached entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use slipway_auth::AuthenticateLayer;
use slipway_auth::remote::{RemoteResolver, RemoteSettings};
use slipway_proto::catalog::v1::project_service_server::{ProjectService, ProjectServiceServer};
use slipway_proto::catalog::v1::{
    CreateProjectRequest, CreateProjectResponse, DeleteProjectRequest, DeleteProjectResponse,
    GetProjectRequest, GetProjectResponse, ListProjectsRequest, ListProjectsResponse,
    UpdateProjectRequest, UpdateProjectResponse,
};
use slipway_proto::identity::v1::api_token_service_client::ApiTokenServiceClient;
use slipway_proto::identity::v1::{
    ApiToken, BuiltinRole, CreateApiTokenRequest, RevokeApiTokenRequest, RoleRef, role_ref,
};
use slipway_testkit::{Sandbox, TestDatabase, TestNats};
use tonic::{Request, Response, Status};
use tower::Layer as _;

/// Stands in for "another service": every call needs a resolved principal, and `GetProject`
/// answers NOT_FOUND once authenticated (there are no projects).
#[derive(Clone)]
struct AnotherService;

#[tonic::async_trait]
impl ProjectService for AnotherService {
    async fn get_project(
        &self,
        request: Request<GetProjectRequest>,
    ) -> Result<Response<GetProjectResponse>, Status> {
        slipway_auth::principal(&request)?;
        Err(Status::not_found("project not found"))
    }
    async fn create_project(
        &self,
        _: Request<CreateProjectRequest>,
    ) -> Result<Response<CreateProjectResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
    async fn list_projects(
        &self,
        _: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
    async fn update_project(
        &self,
        _: Request<UpdateProjectRequest>,
    ) -> Result<Response<UpdateProjectResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
    async fn delete_project(
        &self,
        _: Request<DeleteProjectRequest>,
    ) -> Result<Response<DeleteProjectResponse>, Status> {
        Err(Status::unimplemented("test service"))
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test]
async fn a_revoked_token_is_refused_by_another_service_within_a_second() {
    let database = TestDatabase::postgres().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let mut settings = slipway_identity::Settings::default();
    settings.database.url = database.url().to_owned();
    settings.nats.url = nats.url().to_owned();
    settings.nats.namespace = nats.namespace().to_owned();

    let (_, platform) = slipway_identity::connect(&settings).await.unwrap();
    let admin = slipway_identity::bootstrap(&platform, "acme")
        .await
        .unwrap();

    let mut sandbox = Sandbox::new();
    let identity_settings = settings.clone();
    sandbox
        .start("identity", |listener, shutdown| {
            slipway_identity::serve(identity_settings, listener, shutdown)
        })
        .await
        .unwrap();
    let identity = sandbox.channel("identity").unwrap();

    // The token the test revokes, made through the API by the bootstrap admin.
    let created = ApiTokenServiceClient::new(identity.clone())
        .create_api_token(with_token(
            CreateApiTokenRequest {
                organization_id: admin.organization_id.clone(),
                api_token: Some(ApiToken {
                    name: "ci".to_owned(),
                    role: Some(RoleRef {
                        role: Some(role_ref::Role::Builtin(BuiltinRole::Viewer as i32)),
                    }),
                    ..ApiToken::default()
                }),
                request_id: String::new(),
            },
            &admin.secret,
        ))
        .await
        .unwrap()
        .into_inner();
    let token_id = created.api_token.unwrap().id;
    let secret = created.secret;

    // Another service, resolving through identity and following identity's events.
    let resolver = RemoteResolver::new(identity.clone(), RemoteSettings::default());
    let bus = slipway_events::connect(&settings.nats).await.unwrap();
    let follower = resolver.follow_identity_events(bus).await.unwrap();
    let server = slipway_kit::GrpcServer::new(
        slipway_config::ServerSettings::default(),
        slipway_telemetry::metrics::Metrics::new("another").unwrap(),
    )
    .add_service(
        AuthenticateLayer::new(Arc::new(resolver)).layer(ProjectServiceServer::new(AnotherService)),
    );
    sandbox
        .start("another", |listener, shutdown| {
            server.serve(listener, shutdown)
        })
        .await
        .unwrap();
    let mut another = slipway_proto::catalog::v1::project_service_client::ProjectServiceClient::new(
        sandbox.channel("another").unwrap(),
    );
    let get = || with_token(GetProjectRequest { id: "p".to_owned() }, &secret);

    // Authenticated (and now cached): the service's own answer.
    let status = another.get_project(get()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    ApiTokenServiceClient::new(identity)
        .revoke_api_token(with_token(
            RevokeApiTokenRequest {
                id: token_id,
                request_id: String::new(),
            },
            &admin.secret,
        ))
        .await
        .unwrap();
    let revoked_at = Instant::now();
    let refused_after = loop {
        let status = another.get_project(get()).await.unwrap_err();
        if status.code() == tonic::Code::Unauthenticated {
            break revoked_at.elapsed();
        }
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "the revoked token is still accepted after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused_after < Duration::from_secs(1),
        "the revoked token was accepted for {refused_after:?}"
    );
    follower.abort();
    sandbox.shutdown().await.unwrap();
}
