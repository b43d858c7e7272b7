//! The remote resolver against a fake identity served in-process and the real NATS: cache
//! hits do not call identity, a revocation event takes effect within a second, identity
//! being down is UNAVAILABLE, and custom role grants are fetched and invalidated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slipway_auth::cache::CacheSettings;
use slipway_auth::rbac::{BuiltinRole, Principal as LocalPrincipal, ProjectPermission, Role};
use slipway_auth::{
    AuthnError, CredentialKind, NewCredential, PrincipalResolver, RemoteResolver, RemoteSettings,
};
use slipway_events::{
    BusSettings, EventBus, EventBusExt as _, JetStreamBus, Namespace, Storage, StreamKind,
};
use slipway_proto::common::v1 as common_pb;
use slipway_proto::events::v1 as events_pb;
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::auth_service_server::{AuthService, AuthServiceServer};
use slipway_proto::identity::v1::role_service_server::{RoleService, RoleServiceServer};
use slipway_proto::{ApiError, AuthFailure};
use slipway_testkit::TestNats;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

const SERVICE_CREDENTIAL: &str = "slps_service-credential-for-tests";

/// Identity as far as the resolver sees it: credentials to principals, and custom roles.
#[derive(Default)]
struct Fake {
    authenticate_calls: AtomicUsize,
    get_role_calls: AtomicUsize,
    principals: Mutex<HashMap<String, Result<pb::Principal, AuthFailure>>>,
    roles: Mutex<HashMap<String, pb::Role>>,
}

#[derive(Clone)]
struct FakeIdentity(Arc<Fake>);

#[tonic::async_trait]
impl AuthService for FakeIdentity {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        self.0.authenticate_calls.fetch_add(1, Ordering::SeqCst);
        let credential = request.into_inner().credential;
        let answer = self.0.principals.lock().unwrap().get(&credential).cloned();
        match answer {
            Some(Ok(principal)) => Ok(Response::new(pb::AuthenticateResponse {
                principal: Some(principal),
            })),
            Some(Err(failure)) => Err(ApiError::Unauthenticated(failure).into()),
            None => Err(ApiError::Unauthenticated(AuthFailure::TokenInvalid).into()),
        }
    }

    async fn check(
        &self,
        _: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn batch_check(
        &self,
        _: Request<pb::BatchCheckRequest>,
    ) -> Result<Response<pb::BatchCheckResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

#[tonic::async_trait]
impl RoleService for FakeIdentity {
    async fn create_role(
        &self,
        _: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::CreateRoleResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_role(
        &self,
        request: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::GetRoleResponse>, Status> {
        self.0.get_role_calls.fetch_add(1, Ordering::SeqCst);
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if authorization.as_deref() != Some(&format!("Bearer {SERVICE_CREDENTIAL}")) {
            return Err(ApiError::Unauthenticated(AuthFailure::TokenInvalid).into());
        }
        let id = request.into_inner().id;
        let role = self.0.roles.lock().unwrap().get(&id).cloned();
        role.map(|role| Response::new(pb::GetRoleResponse { role: Some(role) }))
            .ok_or_else(|| Status::not_found("no such role"))
    }

    async fn list_roles(
        &self,
        _: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn update_role(
        &self,
        _: Request<pb::UpdateRoleRequest>,
    ) -> Result<Response<pb::UpdateRoleResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn delete_role(
        &self,
        _: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

/// Serves the fake on 127.0.0.1:0 and returns a lazy channel to it.
async fn serve(fake: Arc<Fake>) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let identity = FakeIdentity(fake);
    tokio::spawn(
        Server::builder()
            .add_service(AuthServiceServer::new(identity.clone()))
            .add_service(RoleServiceServer::new(identity))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy()
}

async fn bus(nats: &TestNats) -> Arc<dyn EventBus> {
    let mut settings =
        BusSettings::default().with_namespace(Namespace::new(nats.namespace()).unwrap());
    for kind in StreamKind::ALL {
        let stream = settings.stream_mut(kind);
        stream.storage = Storage::Memory;
        stream.max_bytes = Some(16 * 1024 * 1024);
        stream.max_age = Some(Duration::from_secs(600));
    }
    let bus = JetStreamBus::connect(nats.url(), settings).await.unwrap();
    bus.ensure_streams().await.unwrap();
    Arc::new(bus)
}

fn settings() -> RemoteSettings {
    RemoteSettings {
        cache: CacheSettings {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(30),
            max_entries: 100,
        },
        call_timeout: Duration::from_secs(2),
        service_credential: Some(SERVICE_CREDENTIAL.into()),
        resubscribe_delay: Duration::from_millis(100),
    }
}

fn api_token(id: &str, organization: &str) -> pb::Principal {
    pb::Principal {
        kind: pb::PrincipalKind::ApiToken as i32,
        id: id.into(),
        display_name: "ci".into(),
        memberships: vec![pb::Membership {
            organization_id: organization.into(),
            organization_name: "acme".into(),
            member_id: String::new(),
            role: Some(pb::RoleRef {
                role: Some(pb::role_ref::Role::Builtin(pb::BuiltinRole::Admin as i32)),
            }),
        }],
        expire_time: None,
    }
}

fn secret() -> String {
    NewCredential::generate(CredentialKind::ApiToken)
        .unwrap()
        .into_secret()
}

async fn publish(
    bus: &Arc<dyn EventBus>,
    organization: &str,
    payload: events_pb::event::Payload,
    kind: &str,
) {
    let id = format!(
        "{kind}-{}",
        NewCredential::generate(CredentialKind::ApiToken)
            .unwrap()
            .hint()
    );
    let event = events_pb::Event {
        id: id.clone(),
        organization_id: organization.into(),
        r#type: kind.into(),
        payload: Some(payload),
        ..Default::default()
    };
    bus.publish_proto(&format!("slipway.events.{kind}"), &id, &event)
        .await
        .unwrap();
}

/// Resolves `token` until `done` holds or `within` passes; returns how long it took.
async fn until(
    resolver: &RemoteResolver,
    token: &str,
    within: Duration,
    done: impl Fn(&Result<LocalPrincipal, AuthnError>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let outcome = resolver.resolve(token).await;
        if done(&outcome) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still {outcome:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn cached_principals_are_dropped_when_identity_says_so() {
    let nats = TestNats::start().await.unwrap();
    let bus = bus(&nats).await;
    let fake = Arc::new(Fake::default());
    let token = secret();
    fake.principals
        .lock()
        .unwrap()
        .insert(token.clone(), Ok(api_token("tok-1", "org-a")));
    let resolver = RemoteResolver::new(serve(Arc::clone(&fake)).await, settings());
    let follower = resolver
        .follow_identity_events(Arc::clone(&bus))
        .await
        .unwrap();

    // The first call asks identity; later ones are served from the cache.
    let principal = resolver.resolve(&token).await.unwrap();
    assert_eq!(principal.id(), "tok-1");
    assert_eq!(
        principal.membership("org-a").unwrap().role(),
        Some(&Role::Builtin(BuiltinRole::Admin))
    );
    for _ in 0..5 {
        assert_eq!(resolver.resolve(&token).await.unwrap(), principal);
    }
    assert_eq!(fake.authenticate_calls.load(Ordering::SeqCst), 1);

    // An unrelated event drops nothing.
    publish(
        &bus,
        "org-a",
        events_pb::event::Payload::ApiTokenRevoked(events_pb::ApiTokenRevoked {
            api_token_id: "tok-other".into(),
        }),
        "identity.api_token.revoked",
    )
    .await;

    // Identity revokes the token and says so; the next resolution refuses it at once.
    fake.principals
        .lock()
        .unwrap()
        .insert(token.clone(), Err(AuthFailure::TokenInvalid));
    publish(
        &bus,
        "org-a",
        events_pb::event::Payload::ApiTokenRevoked(events_pb::ApiTokenRevoked {
            api_token_id: "tok-1".into(),
        }),
        "identity.api_token.revoked",
    )
    .await;
    let took = until(&resolver, &token, Duration::from_secs(1), |outcome| {
        matches!(outcome, Err(AuthnError::Invalid))
    })
    .await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(fake.authenticate_calls.load(Ordering::SeqCst), 2);

    // The refusal is cached too.
    assert!(matches!(
        resolver.resolve(&token).await,
        Err(AuthnError::Invalid)
    ));
    assert_eq!(fake.authenticate_calls.load(Ordering::SeqCst), 2);
    follower.abort();
}

#[tokio::test]
async fn custom_roles_are_fetched_cached_and_dropped_on_role_events() {
    let nats = TestNats::start().await.unwrap();
    let bus = bus(&nats).await;
    let fake = Arc::new(Fake::default());
    let token = secret();
    let mut principal = api_token("tok-2", "org-b");
    principal.memberships[0].role = Some(pb::RoleRef {
        role: Some(pb::role_ref::Role::CustomRoleId("role-1".into())),
    });
    fake.principals
        .lock()
        .unwrap()
        .insert(token.clone(), Ok(principal));
    let role = |permission: pb::ProjectPermission| pb::Role {
        id: "role-1".into(),
        organization_id: "org-b".into(),
        name: "deployers".into(),
        default_project_permissions: vec![pb::EnvironmentModePermission {
            environment_mode: common_pb::EnvironmentMode::Staging as i32,
            permission: permission as i32,
        }],
        ..Default::default()
    };
    fake.roles
        .lock()
        .unwrap()
        .insert("role-1".into(), role(pb::ProjectPermission::Viewer));
    let resolver = RemoteResolver::new(serve(Arc::clone(&fake)).await, settings());
    let follower = resolver
        .follow_identity_events(Arc::clone(&bus))
        .await
        .unwrap();

    let staging = |p: &LocalPrincipal| match p.membership("org-b").unwrap().role() {
        Some(Role::Custom(custom)) => custom
            .project_permissions("any-project")
            .get(slipway_auth::rbac::EnvironmentMode::Staging),
        other => panic!("expected a custom role, got {other:?}"),
    };
    let first = resolver.resolve(&token).await.unwrap();
    assert_eq!(staging(&first), ProjectPermission::Viewer);
    resolver.resolve(&token).await.unwrap();
    assert_eq!(fake.authenticate_calls.load(Ordering::SeqCst), 1);
    assert_eq!(fake.get_role_calls.load(Ordering::SeqCst), 1);

    // The role gains rights; identity says so; the next resolution sees them.
    fake.roles
        .lock()
        .unwrap()
        .insert("role-1".into(), role(pb::ProjectPermission::Manager));
    publish(
        &bus,
        "org-b",
        events_pb::event::Payload::RoleUpdated(events_pb::RoleUpdated {
            role_id: "role-1".into(),
            name: "deployers".into(),
        }),
        "identity.role.updated",
    )
    .await;
    until(&resolver, &token, Duration::from_secs(1), |outcome| {
        outcome
            .as_ref()
            .is_ok_and(|p| staging(p) == ProjectPermission::Manager)
    })
    .await;
    assert_eq!(fake.get_role_calls.load(Ordering::SeqCst), 2);
    follower.abort();
}

#[tokio::test]
async fn identity_down_is_unavailable_and_never_cached() {
    // A port that nothing listens on any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy();
    let resolver = RemoteResolver::new(channel, settings());
    let token = secret();
    for _ in 0..2 {
        assert!(matches!(
            resolver.resolve(&token).await,
            Err(AuthnError::Unavailable(_))
        ));
    }
    assert!(resolver.cache().is_empty());
}

#[tokio::test]
async fn refusals_keep_their_reason_and_malformed_tokens_never_reach_identity() {
    let fake = Arc::new(Fake::default());
    let expired = secret();
    fake.principals
        .lock()
        .unwrap()
        .insert(expired.clone(), Err(AuthFailure::TokenExpired));
    let resolver = RemoteResolver::new(serve(Arc::clone(&fake)).await, settings());

    assert!(matches!(
        resolver.resolve(&expired).await,
        Err(AuthnError::Expired)
    ));
    assert!(matches!(
        resolver.resolve("").await,
        Err(AuthnError::Missing)
    ));
    // A typo in a Slipway token, and an invitation token, are refused offline.
    let mut typo = secret();
    typo.pop();
    typo.push('!');
    assert!(matches!(
        resolver.resolve(&typo).await,
        Err(AuthnError::Invalid)
    ));
    let invitation = NewCredential::generate(CredentialKind::Invitation)
        .unwrap()
        .into_secret();
    assert!(matches!(
        resolver.resolve(&invitation).await,
        Err(AuthnError::Invalid)
    ));
    // Anything else might be a JWT: identity decides.
    assert!(matches!(
        resolver.resolve("eyJhbGciOi.not.a-jwt").await,
        Err(AuthnError::Invalid)
    ));
    assert_eq!(fake.authenticate_calls.load(Ordering::SeqCst), 2);
}
