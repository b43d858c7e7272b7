//! Users authenticating with OIDC JWTs: identity runs in-process on real PostgreSQL and NATS
//! (slipway-testkit), configured with a test issuer whose RSA key is generated here and whose
//! discovery document and JWKS are served over HTTP on 127.0.0.1:0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};
use slipway_db::sea_orm::{EntityTrait as _, PaginatorTrait as _};
use slipway_identity::store::entity::{organization, user};
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::auth_service_client::AuthServiceClient;
use slipway_proto::identity::v1::organization_service_client::OrganizationServiceClient;
use slipway_proto::identity::v1::user_service_client::UserServiceClient;
use slipway_service::Platform;
use slipway_testkit::{Sandbox, TestDatabase, TestNats};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const AUDIENCE: &str = "slipway-test";

/// A signing key of the test issuer, and its public JWK.
struct TestKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn rsa_key(key: &rsa::RsaPrivateKey, kid: &str) -> TestKey {
    let der = key.to_pkcs1_der().unwrap();
    TestKey {
        kid: kid.into(),
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({
            "kty": "RSA",
            "kid": kid,
            "alg": "RS256",
            "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        }),
    }
}

/// Two fixed RSA keys (libs/auth's test fixtures): generating them takes seconds of CPU in
/// a debug build, in every test process.
fn keys() -> &'static (rsa::RsaPrivateKey, rsa::RsaPrivateKey) {
    static KEYS: OnceLock<(rsa::RsaPrivateKey, rsa::RsaPrivateKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = |pem: &str| rsa::RsaPrivateKey::from_pkcs1_pem(pem).unwrap();
        (
            key(include_str!(
                "../../../libs/auth/tests/fixtures/jwt-signing-a.pem"
            )),
            key(include_str!(
                "../../../libs/auth/tests/fixtures/jwt-signing-b.pem"
            )),
        )
    })
}

/// An issuer serving discovery and a JWKS.
struct Issuer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
}

async fn issuer() -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let keys = Arc::new(Mutex::new(Vec::new()));
    let discovery = json!({ "issuer": url, "jwks_uri": format!("{url}/keys") });
    let served_keys = Arc::clone(&keys);
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { json_response(&discovery) }),
        )
        .route(
            "/keys",
            axum::routing::get(move || async move {
                let keys = served_keys.lock().unwrap().clone();
                json_response(&json!({ "keys": keys }))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Issuer { url, keys }
}

fn json_response(value: &Value) -> impl axum::response::IntoResponse + use<> {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

impl Issuer {
    fn publish(&self, key: &TestKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer,
        "sub": "user-42",
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
        "email": "ada@example.com",
        "name": "Ada Lovelace",
    })
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn with_bearer<T>(message: T, bearer: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    request
}

fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// Identity in a sandbox, with `issuer` configured as its OIDC issuer (or none).
struct Harness {
    _sandbox: Sandbox,
    channel: Channel,
    _db: TestDatabase,
    _nats: TestNats,
    platform: Platform,
}

impl Harness {
    async fn start(
        oidc: Option<slipway_identity::OidcConfig>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let db = TestDatabase::postgres().await?;
        let nats = TestNats::start().await?;
        let mut settings = slipway_identity::Settings::default();
        settings.database.url = db.url().to_owned();
        settings.nats.url = nats.url().to_owned();
        settings.nats.namespace = nats.namespace().to_owned();
        settings.oidc = oidc;
        let (_, platform) = slipway_identity::connect(&settings).await?;
        let mut sandbox = Sandbox::new();
        sandbox
            .start("identity", move |listener, shutdown| {
                slipway_identity::serve(settings, listener, shutdown)
            })
            .await?;
        let channel = sandbox
            .channel("identity")
            .ok_or("identity is not running")?;
        Ok(Self {
            _sandbox: sandbox,
            channel,
            _db: db,
            _nats: nats,
            platform,
        })
    }

    fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    async fn user_count(&self) -> Result<u64, Box<dyn std::error::Error>> {
        Ok(user::Entity::find().count(&self.platform.db).await?)
    }

    async fn current(&self, bearer: &str) -> Result<pb::GetCurrentUserResponse, Status> {
        self.users()
            .get_current_user(with_bearer(pb::GetCurrentUserRequest {}, bearer))
            .await
            .map(tonic::Response::into_inner)
    }
}

fn assert_unauthenticated(outcome: Result<impl std::fmt::Debug, Status>, expected: &str) {
    let status = outcome.expect_err("the token must be refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(&status), expected, "{status:?}");
}

#[tokio::test]
async fn a_valid_jwt_authenticates_its_user_created_once() -> TestResult {
    let issuer = issuer().await;
    let key = rsa_key(&keys().0, "rsa-1");
    issuer.publish(&key);
    let harness = Harness::start(Some(slipway_identity::OidcConfig {
        issuer: issuer.url.clone(),
        audience: AUDIENCE.into(),
        jwks_url: None,
        ca_file: None,
    }))
    .await?;
    let jwt = sign(&key, &claims(&issuer.url));

    assert_eq!(harness.user_count().await?, 0);
    let first = harness.current(&jwt).await?;
    let user = first.user.clone().ok_or("no user")?;
    assert_eq!(user.oidc_issuer, issuer.url);
    assert_eq!(user.oidc_subject, "user-42");
    assert_eq!(user.email, "ada@example.com");
    assert_eq!(user.display_name, "Ada Lovelace");
    let principal = first.principal.clone().ok_or("no principal")?;
    assert_eq!(principal.kind, i32::from(pb::PrincipalKind::User));
    assert_eq!(principal.id, user.id);
    assert!(principal.memberships.is_empty());
    assert!(principal.expire_time.is_some());
    assert_eq!(harness.user_count().await?, 1);

    // A second call finds the same user; nothing is duplicated.
    let second = harness.current(&jwt).await?;
    assert_eq!(second.user.ok_or("no user")?.id, user.id);
    assert_eq!(harness.user_count().await?, 1);

    // The user creates an organization and is its OWNER.
    let created = OrganizationServiceClient::new(harness.channel.clone())
        .create_organization(with_bearer(
            pb::CreateOrganizationRequest {
                organization: Some(pb::Organization {
                    name: "ada-labs".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &jwt,
        ))
        .await?
        .into_inner()
        .organization
        .ok_or("no organization")?;
    let after = harness.current(&jwt).await?;
    let memberships = after.principal.ok_or("no principal")?.memberships;
    assert_eq!(memberships.len(), 1);
    assert_eq!(memberships[0].organization_id, created.id);
    assert_eq!(memberships[0].organization_name, "ada-labs");
    assert!(!memberships[0].member_id.is_empty());
    assert_eq!(
        memberships[0].role,
        Some(pb::RoleRef {
            role: Some(pb::role_ref::Role::Builtin(pb::BuiltinRole::Owner.into())),
        })
    );
    // The resolved principal carries the membership: the owner reads its organization.
    let read = OrganizationServiceClient::new(harness.channel.clone())
        .get_organization(with_bearer(
            pb::GetOrganizationRequest {
                id: created.id.clone(),
            },
            &jwt,
        ))
        .await?
        .into_inner();
    assert_eq!(read.organization.ok_or("no organization")?.id, created.id);

    // Authenticate answers the same principal for the JWT.
    let authenticated = AuthServiceClient::new(harness.channel.clone())
        .authenticate(pb::AuthenticateRequest {
            credential: jwt.clone(),
        })
        .await?
        .into_inner()
        .principal
        .ok_or("no principal")?;
    assert_eq!(authenticated.kind, i32::from(pb::PrincipalKind::User));
    assert_eq!(authenticated.id, user.id);
    assert_eq!(authenticated.memberships, memberships);
    assert_eq!(harness.user_count().await?, 1);
    Ok(())
}

#[tokio::test]
async fn bad_jwts_are_unauthenticated() -> TestResult {
    let issuer = issuer().await;
    let key = rsa_key(&keys().0, "rsa-1");
    issuer.publish(&key);
    let harness = Harness::start(Some(slipway_identity::OidcConfig {
        issuer: issuer.url.clone(),
        audience: AUDIENCE.into(),
        jwks_url: Some(format!("{}/keys", issuer.url)),
        ca_file: None,
    }))
    .await?;
    // The good token first, so the JWKS is cached and the impostor's kid is known.
    harness.current(&sign(&key, &claims(&issuer.url))).await?;
    assert_eq!(harness.user_count().await?, 1);

    // Signed by a key the issuer never published, under a published kid.
    let impostor = rsa_key(&keys().1, "rsa-1");
    let mut other_user = claims(&issuer.url);
    other_user["sub"] = json!("mallory");
    assert_unauthenticated(
        harness.current(&sign(&impostor, &other_user)).await,
        "TOKEN_INVALID",
    );

    let mut wrong_audience = claims(&issuer.url);
    wrong_audience["sub"] = json!("mallory");
    wrong_audience["aud"] = json!("someone-else");
    assert_unauthenticated(
        harness.current(&sign(&key, &wrong_audience)).await,
        "TOKEN_INVALID",
    );

    let mut expired = claims(&issuer.url);
    expired["sub"] = json!("mallory");
    expired["exp"] = json!(now() - 3600);
    let expired = sign(&key, &expired);
    assert_unauthenticated(harness.current(&expired).await, "TOKEN_EXPIRED");
    assert_unauthenticated(
        AuthServiceClient::new(harness.channel.clone())
            .authenticate(pb::AuthenticateRequest {
                credential: expired,
            })
            .await,
        "TOKEN_EXPIRED",
    );

    assert_unauthenticated(harness.current("not.a.jwt!").await, "TOKEN_INVALID");
    // Nobody was created for the refused tokens.
    assert_eq!(harness.user_count().await?, 1);
    Ok(())
}

#[tokio::test]
async fn without_an_issuer_jwts_are_invalid() -> TestResult {
    let issuer = issuer().await;
    let key = rsa_key(&keys().0, "rsa-1");
    issuer.publish(&key);
    let harness = Harness::start(None).await?;
    assert_unauthenticated(
        harness.current(&sign(&key, &claims(&issuer.url))).await,
        "TOKEN_INVALID",
    );
    assert_eq!(harness.user_count().await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_repeated_create_organization_returns_the_first() -> TestResult {
    let issuer = issuer().await;
    let key = rsa_key(&keys().0, "rsa-1");
    issuer.publish(&key);
    let harness = Harness::start(Some(slipway_identity::OidcConfig {
        issuer: issuer.url.clone(),
        audience: AUDIENCE.into(),
        jwks_url: None,
        ca_file: None,
    }))
    .await?;
    let jwt = sign(&key, &claims(&issuer.url));
    let request = pb::CreateOrganizationRequest {
        organization: Some(pb::Organization {
            name: "ada-labs".into(),
            ..Default::default()
        }),
        request_id: "org-1".into(),
    };
    let mut orgs = OrganizationServiceClient::new(harness.channel.clone());
    let first = orgs
        .create_organization(with_bearer(request.clone(), &jwt))
        .await?
        .into_inner()
        .organization
        .ok_or("no organization")?;
    let repeat = orgs
        .create_organization(with_bearer(request, &jwt))
        .await?
        .into_inner()
        .organization
        .ok_or("no organization")?;
    assert_eq!(repeat.id, first.id);
    let count = organization::Entity::find()
        .count(&harness.platform.db)
        .await?;
    assert_eq!(count, 1, "nothing was created");
    let memberships = harness
        .current(&jwt)
        .await?
        .principal
        .ok_or("no principal")?
        .memberships;
    assert_eq!(memberships.len(), 1);
    Ok(())
}
