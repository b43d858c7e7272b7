//! The identity API over gRPC, as clients see it: identity runs in-process on real
//! PostgreSQL and NATS (slipway-testkit), and every call carries `authorization: Bearer`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::TimeDelta;
use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_auth::rbac::{self, Action, Decision, DenyReason, EnvironmentMode};
use slipway_identity::grants::{ClusterGrant, Grants, ProjectGrant};
use slipway_identity::store::{
    self, BuiltinRole, NewApiToken, NewRole, RoleRef, SecretHash, Store,
};
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::api_token_service_client::ApiTokenServiceClient;
use slipway_proto::identity::v1::auth_service_client::AuthServiceClient;
use slipway_service::Platform;
use slipway_testkit::{Sandbox, TestDatabase, TestNats};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Identity in a sandbox, bootstrapped: organization `acme` with an ADMIN token.
struct Harness {
    sandbox: Sandbox,
    channel: Channel,
    _db: TestDatabase,
    nats: TestNats,
    platform: Platform,
    store: Store,
    acme: String,
    admin: String,
    /// Bootstrap's owner credential: signs in as the organization's owner user.
    owner: String,
    /// The control plane's `slps_` credential identity is configured with.
    service: String,
}

impl Harness {
    async fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let db = TestDatabase::postgres().await?;
        let nats = TestNats::start().await?;
        let mut settings = slipway_identity::Settings::default();
        settings.database.url = db.url().to_owned();
        settings.nats.url = nats.url().to_owned();
        settings.nats.namespace = nats.namespace().to_owned();
        let service = NewCredential::generate(CredentialKind::Service)?.into_secret();
        settings.auth.service_credential = Some(service.clone());
        // Migrate before the service starts, so the two never race on it.
        let (_, platform) = slipway_identity::connect(&settings).await?;
        let store = Store::new(platform.db.clone());
        let boot = slipway_identity::bootstrap(&platform, "acme").await?;
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
            sandbox,
            channel,
            _db: db,
            nats,
            platform,
            store,
            acme: boot.organization_id,
            admin: boot.secret,
            owner: boot.owner_secret,
            service,
        })
    }

    fn channel(&self) -> Channel {
        self.channel.clone()
    }

    fn tokens(&self) -> ApiTokenServiceClient<Channel> {
        ApiTokenServiceClient::new(self.channel())
    }

    fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel())
    }

    /// A token created straight in the store (any role, even ones the API refuses).
    async fn token(
        &self,
        org: &str,
        name: &str,
        role: RoleRef,
        expire: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(store::ApiToken, String), Box<dyn std::error::Error>> {
        let secret = NewCredential::generate(CredentialKind::ApiToken)?;
        let token = self
            .store
            .create_api_token(&NewApiToken {
                organization_id: org.to_owned(),
                name: name.to_owned(),
                description: String::new(),
                role,
                secret_hash: SecretHash::from_digest(*secret.hash().as_bytes()),
                secret_hint: secret.hint().to_owned(),
                expire_time: expire,
                creator: store::PrincipalRef {
                    kind: store::PrincipalKind::User,
                    id: "test".into(),
                    display_name: "test".into(),
                },
            })
            .await?;
        Ok((token, secret.into_secret()))
    }

    /// A second organization, `other`, with an ADMIN token.
    async fn other_org(&self) -> Result<(String, String), Box<dyn std::error::Error>> {
        let user = self
            .store
            .upsert_user(&store::UserClaims {
                issuer: "https://issuer.test".into(),
                subject: "bob".into(),
                email: "bob@example.com".into(),
                display_name: "bob".into(),
            })
            .await?;
        let (org, _) = self
            .store
            .create_organization(
                &store::NewOrganization {
                    name: "other".into(),
                    display_name: "other".into(),
                },
                &user.id,
            )
            .await?;
        let (_, secret) = self
            .token(&org.id, "admin", RoleRef::Builtin(BuiltinRole::Admin), None)
            .await?;
        Ok((org.id, secret))
    }
}

fn with_token<T>(message: T, secret: &str) -> Request<T> {
    let mut request = Request::new(message);
    // Every secret here is ASCII; one that were not would be sent without the header
    // and fail its test with TOKEN_MISSING.
    if let Ok(value) = format!("Bearer {secret}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

fn violations(status: &Status) -> Vec<String> {
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

fn builtin(role: pb::BuiltinRole) -> Option<pb::RoleRef> {
    Some(pb::RoleRef {
        role: Some(pb::role_ref::Role::Builtin(role.into())),
    })
}

fn new_token(org: &str, name: &str, role: Option<pb::RoleRef>) -> pb::CreateApiTokenRequest {
    pb::CreateApiTokenRequest {
        organization_id: org.to_owned(),
        api_token: Some(pb::ApiToken {
            name: name.to_owned(),
            role,
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

async fn token_names(h: &Harness, org: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let page = h
        .store
        .list_api_tokens(org, &store::PageRequest::first(100))
        .await?;
    Ok(page.items.into_iter().map(|t| t.name).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_listed_used_and_revoked() -> TestResult {
    let h = Harness::start().await?;
    let mut tokens = h.tokens();
    let mut events = h
        .platform
        .bus
        .subscribe("slipway.events.identity.api_token.>")
        .await?;

    let created = tokens
        .create_api_token(with_token(
            new_token(&h.acme, "ci", builtin(pb::BuiltinRole::Devops)),
            &h.admin,
        ))
        .await?
        .into_inner();
    let secret = created.secret.clone();
    assert_eq!(secret.len(), 53);
    assert!(secret.starts_with("slp_"));
    let meta = created.api_token.ok_or("no token")?;
    assert_eq!(meta.secret_hint, secret[..8]);
    assert_eq!(meta.organization_id, h.acme);
    assert_eq!(
        meta.creator.as_ref().map(|c| c.kind),
        Some(pb::PrincipalKind::ApiToken.into())
    );

    // The new token works, and its use is recorded.
    let listed = tokens
        .list_api_tokens(with_token(
            pb::ListApiTokensRequest {
                organization_id: h.acme.clone(),
                page_size: 1,
                page_token: String::new(),
            },
            &secret,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.api_tokens.len(), 1);
    assert_eq!(listed.api_tokens[0].name, "bootstrap");
    let second = tokens
        .list_api_tokens(with_token(
            pb::ListApiTokensRequest {
                organization_id: h.acme.clone(),
                page_size: 1,
                page_token: listed.next_page_token.clone(),
            },
            &secret,
        ))
        .await?
        .into_inner();
    assert_eq!(second.api_tokens[0].name, "ci");
    assert!(second.api_tokens[0].last_use_time.is_some());
    assert!(second.next_page_token.is_empty());
    // A page token is bound to its listing.
    let other_query = tokens
        .list_api_tokens(with_token(
            pb::ListApiTokensRequest {
                organization_id: "elsewhere".into(),
                page_size: 1,
                page_token: listed.next_page_token,
            },
            &secret,
        ))
        .await
        .err()
        .ok_or("foreign page token accepted")?;
    assert_eq!(other_query.code(), Code::InvalidArgument);

    // DEVOPS may not mint a more powerful token; it may get itself.
    let escalate = tokens
        .create_api_token(with_token(
            new_token(&h.acme, "escalate", builtin(pb::BuiltinRole::Admin)),
            &secret,
        ))
        .await
        .err()
        .ok_or("devops created an admin token")?;
    assert_eq!(escalate.code(), Code::PermissionDenied);
    let got = tokens
        .get_api_token(with_token(
            pb::GetApiTokenRequest {
                id: meta.id.clone(),
            },
            &secret,
        ))
        .await?
        .into_inner();
    assert_eq!(got.api_token.map(|t| t.name), Some("ci".into()));

    // Revoked: refused at once.
    tokens
        .revoke_api_token(with_token(
            pb::RevokeApiTokenRequest {
                id: meta.id.clone(),
                request_id: String::new(),
            },
            &h.admin,
        ))
        .await?;
    let refused = tokens
        .get_api_token(with_token(
            pb::GetApiTokenRequest {
                id: meta.id.clone(),
            },
            &secret,
        ))
        .await
        .err()
        .ok_or("revoked token accepted")?;
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(reason(&refused), "TOKEN_INVALID");
    let refused = h
        .auth()
        .authenticate(pb::AuthenticateRequest {
            credential: secret.clone(),
        })
        .await
        .err()
        .ok_or("revoked token authenticated")?;
    assert_eq!(refused.code(), Code::Unauthenticated);

    // A token may read and revoke itself whatever its role (after a leak, say).
    let (own, own_secret) = h
        .token(&h.acme, "self", RoleRef::Builtin(BuiltinRole::Viewer), None)
        .await?;
    tokens
        .get_api_token(with_token(
            pb::GetApiTokenRequest { id: own.id.clone() },
            &own_secret,
        ))
        .await?;
    let status = tokens
        .get_api_token(with_token(
            pb::GetApiTokenRequest {
                id: meta.id.clone(),
            },
            &own_secret,
        ))
        .await
        .err()
        .ok_or("viewer read another token")?;
    assert_ne!(status.code(), Code::Ok);
    tokens
        .revoke_api_token(with_token(
            pb::RevokeApiTokenRequest {
                id: own.id.clone(),
                request_id: String::new(),
            },
            &own_secret,
        ))
        .await?;

    // Both changes were published and audited.
    let mut types = Vec::new();
    for _ in 0..3 {
        let message = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await?
            .ok_or("subscription ended")?;
        let event: slipway_proto::events::v1::Event =
            prost::Message::decode(message.payload.clone())?;
        assert_eq!(event.organization_id, h.acme);
        types.push(event.r#type);
    }
    assert_eq!(
        types,
        [
            "identity.api_token.created",
            "identity.api_token.revoked",
            "identity.api_token.revoked"
        ]
    );
    let audit = h
        .store
        .list_audit_events(
            &h.acme,
            &store::AuditFilter {
                action: Some(store::ActionFilter::Exact(
                    "identity.api_tokens.write".into(),
                )),
                ..Default::default()
            },
            &store::PageRequest::first(10),
        )
        .await?;
    let methods: Vec<_> = audit
        .items
        .iter()
        .map(|e| {
            (
                e.method.rsplit('/').next().unwrap_or("").to_owned(),
                e.status_code.clone(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            ("RevokeApiToken".to_owned(), "OK".to_owned()),
            ("RevokeApiToken".to_owned(), "OK".to_owned()),
            ("CreateApiToken".to_owned(), "PERMISSION_DENIED".to_owned()),
            ("CreateApiToken".to_owned(), "OK".to_owned()),
        ]
    );
    h.sandbox.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_garbled_expired_and_revoked_tokens_are_unauthenticated() -> TestResult {
    let h = Harness::start().await?;
    let list = |org: &str| pb::ListApiTokensRequest {
        organization_id: org.to_owned(),
        page_size: 0,
        page_token: String::new(),
    };
    let mut tokens = h.tokens();

    let missing = tokens
        .list_api_tokens(list(&h.acme))
        .await
        .err()
        .ok_or("no token accepted")?;
    assert_eq!(
        (missing.code(), reason(&missing)),
        (Code::Unauthenticated, "TOKEN_MISSING".into())
    );

    // Garbled: wrong prefix, truncated, a typo (checksum), and a well-formed unknown one.
    let mut typo = h.admin.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let unknown = NewCredential::generate(CredentialKind::ApiToken)?.into_secret();
    for bad in [
        "nonsense".to_owned(),
        h.admin[..40].to_owned(),
        String::from_utf8(typo)?,
        unknown,
    ] {
        let status = tokens
            .list_api_tokens(with_token(list(&h.acme), &bad))
            .await
            .err()
            .ok_or("garbled token accepted")?;
        assert_eq!(status.code(), Code::Unauthenticated, "{bad}");
        assert_eq!(reason(&status), "TOKEN_INVALID", "{bad}");
        let status = h
            .auth()
            .authenticate(pb::AuthenticateRequest { credential: bad })
            .await
            .err()
            .ok_or("garbled token authenticated")?;
        assert_eq!(reason(&status), "TOKEN_INVALID");
    }
    let mut basic = Request::new(list(&h.acme));
    basic
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwYXNz".parse()?);
    let status = tokens
        .list_api_tokens(basic)
        .await
        .err()
        .ok_or("basic auth accepted")?;
    assert_eq!(reason(&status), "TOKEN_INVALID");
    let status = h
        .auth()
        .authenticate(pb::AuthenticateRequest {
            credential: String::new(),
        })
        .await
        .err()
        .ok_or("empty credential authenticated")?;
    assert_eq!(reason(&status), "TOKEN_MISSING");

    let (_, expired) = h
        .token(
            &h.acme,
            "old",
            RoleRef::Builtin(BuiltinRole::Admin),
            Some(store::now() - TimeDelta::seconds(1)),
        )
        .await?;
    let status = tokens
        .list_api_tokens(with_token(list(&h.acme), &expired))
        .await
        .err()
        .ok_or("expired token accepted")?;
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::Unauthenticated, "TOKEN_EXPIRED".into())
    );

    // Check authenticates its caller too.
    let status = h
        .auth()
        .check(pb::CheckRequest {
            principal: None,
            action: "identity.organizations.read".into(),
            resource: Some(pb::Resource {
                organization_id: h.acme.clone(),
                ..Default::default()
            }),
        })
        .await
        .err()
        .ok_or("check without token answered")?;
    assert_eq!(reason(&status), "TOKEN_MISSING");

    // Authenticate answers who a valid token is.
    let principal = h
        .auth()
        .authenticate(pb::AuthenticateRequest {
            credential: h.admin.clone(),
        })
        .await?
        .into_inner()
        .principal
        .ok_or("no principal")?;
    assert_eq!(principal.kind, i32::from(pb::PrincipalKind::ApiToken));
    assert_eq!(principal.display_name, "bootstrap");
    assert_eq!(principal.memberships.len(), 1);
    assert_eq!(principal.memberships[0].organization_name, "acme");
    assert_eq!(
        principal.memberships[0].role.clone(),
        builtin(pb::BuiltinRole::Admin)
    );

    // Bootstrap's owner credential signs in as the owner user, not as a token.
    let owner = h
        .auth()
        .authenticate(pb::AuthenticateRequest {
            credential: h.owner.clone(),
        })
        .await?
        .into_inner()
        .principal
        .ok_or("no principal")?;
    assert_eq!(owner.kind, i32::from(pb::PrincipalKind::User));
    assert_eq!(owner.memberships.len(), 1);
    assert_eq!(
        owner.memberships[0].role.clone(),
        builtin(pb::BuiltinRole::Owner)
    );
    h.sandbox.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_and_writes_nothing() -> TestResult {
    let h = Harness::start().await?;
    let mut tokens = h.tokens();
    let before = token_names(&h, &h.acme).await?;
    let past = prost_types::Timestamp {
        seconds: 1_000_000,
        nanos: 0,
    };
    let cases: Vec<(pb::CreateApiTokenRequest, &[&str])> = vec![
        (
            new_token(&h.acme, "", builtin(pb::BuiltinRole::Viewer)),
            &["api_token.name"],
        ),
        (
            new_token(&h.acme, &"x".repeat(64), builtin(pb::BuiltinRole::Viewer)),
            &["api_token.name"],
        ),
        (
            new_token(&h.acme, "Bad_Name", builtin(pb::BuiltinRole::Viewer)),
            &["api_token.name"],
        ),
        (new_token(&h.acme, "ok", None), &["api_token.role"]),
        (
            new_token(
                &h.acme,
                "ok",
                Some(pb::RoleRef {
                    role: Some(pb::role_ref::Role::Builtin(99)),
                }),
            ),
            &["api_token.role.builtin"],
        ),
        (
            new_token(&h.acme, "ok", builtin(pb::BuiltinRole::Owner)),
            &["api_token.role.builtin"],
        ),
        (
            new_token(
                &h.acme,
                "ok",
                Some(pb::RoleRef {
                    role: Some(pb::role_ref::Role::CustomRoleId(String::new())),
                }),
            ),
            &["api_token.role.custom_role_id"],
        ),
        (
            pb::CreateApiTokenRequest {
                api_token: Some(pb::ApiToken {
                    name: "ok".into(),
                    description: "d".repeat(1025),
                    role: builtin(pb::BuiltinRole::Viewer),
                    expire_time: Some(past),
                    ..Default::default()
                }),
                organization_id: h.acme.clone(),
                request_id: "r".repeat(65),
            },
            &[
                "request_id",
                "api_token.description",
                "api_token.expire_time",
            ],
        ),
        (
            new_token("", "", None),
            &["organization_id", "api_token.name", "api_token.role"],
        ),
    ];
    for (request, fields) in cases {
        let status = tokens
            .create_api_token(with_token(request, &h.admin))
            .await
            .err()
            .ok_or("bad input accepted")?;
        assert_eq!(status.code(), Code::InvalidArgument, "{fields:?}");
        let mut got = violations(&status);
        got.sort();
        let mut want: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        want.sort();
        assert_eq!(got, want);
    }
    // Unknown action, missing scope, missing resource and bad batches on Check.
    let mut auth = h.auth();
    let check = |action: &str, resource: Option<pb::Resource>| {
        with_token(
            pb::CheckRequest {
                principal: None,
                action: action.to_owned(),
                resource,
            },
            &h.admin,
        )
    };
    let org_resource = Some(pb::Resource {
        organization_id: h.acme.clone(),
        ..Default::default()
    });
    let status = auth
        .check(check("identity.everything.do", org_resource.clone()))
        .await
        .err()
        .ok_or("unknown action checked")?;
    assert_eq!(violations(&status), ["action"]);
    let status = auth
        .check(check("catalog.projects.read", org_resource.clone()))
        .await
        .err()
        .ok_or("missing scope checked")?;
    assert_eq!(violations(&status), ["resource.project_id"]);
    let status = auth
        .check(check("identity.organizations.read", None))
        .await
        .err()
        .ok_or("missing resource checked")?;
    assert_eq!(violations(&status), ["resource"]);
    let status = auth
        .batch_check(with_token(
            pb::BatchCheckRequest {
                principal: None,
                checks: vec![],
            },
            &h.admin,
        ))
        .await
        .err()
        .ok_or("empty batch checked")?;
    assert_eq!(violations(&status), ["checks"]);
    let item = |action: &str| pb::BatchCheckItem {
        action: action.to_owned(),
        resource: org_resource.clone(),
    };
    let status = auth
        .batch_check(with_token(
            pb::BatchCheckRequest {
                principal: None,
                checks: vec![item("identity.roles.read"), item("nope")],
            },
            &h.admin,
        ))
        .await
        .err()
        .ok_or("bad batch item checked")?;
    assert_eq!(violations(&status), ["checks[1].action"]);
    // Naming another principal is for control-plane services only.
    let status = auth
        .check(with_token(
            pb::CheckRequest {
                principal: Some(pb::PrincipalRef {
                    kind: pb::PrincipalKind::User.into(),
                    id: "someone".into(),
                    display_name: String::new(),
                }),
                action: "identity.organizations.read".into(),
                resource: org_resource,
            },
            &h.admin,
        ))
        .await
        .err()
        .ok_or("checked another principal")?;
    assert_eq!(status.code(), Code::PermissionDenied);

    assert_eq!(
        token_names(&h, &h.acme).await?,
        before,
        "nothing was written"
    );
    let audit = h
        .store
        .list_audit_events(
            &h.acme,
            &store::AuditFilter::default(),
            &store::PageRequest::first(10),
        )
        .await?;
    assert_eq!(
        audit.items.len(),
        1,
        "only the bootstrap is in the audit log"
    );
    h.sandbox.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organization_sees_nothing() -> TestResult {
    let h = Harness::start().await?;
    let (other_org, intruder) = h.other_org().await?;
    let (victim, victim_secret) = h
        .token(&h.acme, "ci", RoleRef::Builtin(BuiltinRole::Viewer), None)
        .await?;
    let mut tokens = h.tokens();

    let not_found = |result: Result<_, Status>| -> Result<(), Box<dyn std::error::Error>> {
        let status = result
            .err()
            .ok_or("another organization's resource was visible")?;
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        Ok(())
    };
    not_found(
        tokens
            .list_api_tokens(with_token(
                pb::ListApiTokensRequest {
                    organization_id: h.acme.clone(),
                    page_size: 0,
                    page_token: String::new(),
                },
                &intruder,
            ))
            .await
            .map(|_| ()),
    )?;
    not_found(
        tokens
            .get_api_token(with_token(
                pb::GetApiTokenRequest {
                    id: victim.id.clone(),
                },
                &intruder,
            ))
            .await
            .map(|_| ()),
    )?;
    not_found(
        tokens
            .revoke_api_token(with_token(
                pb::RevokeApiTokenRequest {
                    id: victim.id.clone(),
                    request_id: String::new(),
                },
                &intruder,
            ))
            .await
            .map(|_| ()),
    )?;
    not_found(
        tokens
            .create_api_token(with_token(
                new_token(&h.acme, "planted", builtin(pb::BuiltinRole::Viewer)),
                &intruder,
            ))
            .await
            .map(|_| ()),
    )?;
    // A missing id answers exactly like another organization's.
    not_found(
        tokens
            .get_api_token(with_token(
                pb::GetApiTokenRequest {
                    id: "missing".into(),
                },
                &intruder,
            ))
            .await
            .map(|_| ()),
    )?;
    let decision = h
        .auth()
        .check(with_token(
            pb::CheckRequest {
                principal: None,
                action: "identity.organizations.read".into(),
                resource: Some(pb::Resource {
                    organization_id: h.acme.clone(),
                    ..Default::default()
                }),
            },
            &intruder,
        ))
        .await?
        .into_inner()
        .decision
        .ok_or("no decision")?;
    assert!(!decision.allowed);
    assert_eq!(decision.reason, i32::from(pb::DecisionReason::NotAMember));

    // Nothing changed in acme, and nothing was written to its audit log by the intruder.
    assert_eq!(token_names(&h, &h.acme).await?, ["bootstrap", "ci"]);
    h.auth()
        .authenticate(pb::AuthenticateRequest {
            credential: victim_secret,
        })
        .await?;
    let audit = h
        .store
        .list_audit_events(
            &h.acme,
            &store::AuditFilter::default(),
            &store::PageRequest::first(10),
        )
        .await?;
    assert_eq!(audit.items.len(), 1);
    // The intruder's own organization works for it.
    tokens
        .list_api_tokens(with_token(
            pb::ListApiTokensRequest {
                organization_id: other_org,
                page_size: 0,
                page_token: String::new(),
            },
            &intruder,
        ))
        .await?;
    h.sandbox.shutdown().await?;
    Ok(())
}

/// Every resource shape the matrix is checked on, valid or not for each action.
fn resources(org: &str, other: &str) -> Vec<pb::Resource> {
    use slipway_proto::common::v1::EnvironmentMode as Mode;
    let base = pb::Resource {
        organization_id: org.to_owned(),
        ..Default::default()
    };
    let mut all = vec![
        base.clone(),
        pb::Resource {
            organization_id: other.to_owned(),
            ..Default::default()
        },
        pb::Resource {
            cluster_id: "c1".into(),
            ..base.clone()
        },
        pb::Resource {
            cluster_id: "c2".into(),
            ..base.clone()
        },
        pb::Resource {
            project_id: "p1".into(),
            ..base.clone()
        },
        pb::Resource {
            project_id: "p2".into(),
            ..base.clone()
        },
    ];
    for mode in [
        Mode::Production,
        Mode::Staging,
        Mode::Development,
        Mode::Preview,
    ] {
        for (project, cluster) in [("p1", "c1"), ("p2", "c2")] {
            all.push(pb::Resource {
                project_id: project.into(),
                environment_id: "e1".into(),
                environment_mode: mode.into(),
                cluster_id: cluster.into(),
                ..base.clone()
            });
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_answers_the_permission_matrix_like_the_local_evaluator() -> TestResult {
    let h = Harness::start().await?;
    let grants = Grants {
        default_project_permissions: [("DEVELOPMENT".into(), "DEPLOYER".into())].into(),
        project_grants: vec![ProjectGrant {
            project_id: "p1".into(),
            permissions: [
                ("PRODUCTION".into(), "VIEWER".into()),
                ("STAGING".into(), "MANAGER".into()),
                ("PREVIEW".into(), "DEPLOYER".into()),
            ]
            .into(),
        }],
        default_cluster_permission: Some("VIEWER".into()),
        cluster_grants: vec![ClusterGrant {
            cluster_id: "c1".into(),
            permission: "ENV_CREATOR".into(),
        }],
    };
    let custom = h
        .store
        .create_role(&NewRole {
            organization_id: h.acme.clone(),
            name: "deployers".into(),
            description: String::new(),
            grants: grants.to_json(),
        })
        .await?;
    let custom_rbac = Arc::new(grants.to_custom_role(&custom.id)?);

    let mut holders: Vec<(String, rbac::Role)> = Vec::new();
    for role in [
        BuiltinRole::Owner,
        BuiltinRole::Admin,
        BuiltinRole::Devops,
        BuiltinRole::Billing,
        BuiltinRole::Viewer,
    ] {
        holders.push((
            role.as_str().to_owned(),
            rbac::Role::Builtin(slipway_identity::convert::builtin_to_rbac(role)),
        ));
    }
    holders.push(("custom".into(), rbac::Role::Custom(custom_rbac)));

    let resources = resources(&h.acme, "another-org");
    let mut auth = h.auth();
    let mut allowed_somewhere = 0;
    for (name, role) in holders {
        let stored_role = match &role {
            rbac::Role::Builtin(b) => {
                RoleRef::Builtin(slipway_identity::convert::builtin_from_rbac(*b))
            }
            rbac::Role::Custom(_) => RoleRef::Custom(custom.id.clone()),
        };
        let (token, secret) = h
            .token(&h.acme, &format!("t-{name}"), stored_role, None)
            .await?;
        let local = rbac::Principal::api_token(token.id.as_str(), h.acme.as_str(), role)
            .with_display_name(token.name.as_str());
        let mut batch = Vec::new();
        let mut expected = Vec::new();
        for &action in Action::ALL {
            for resource in &resources {
                // A resource naming the principal itself exercises the "on itself" rows.
                let mut resource = resource.clone();
                if action == Action::IdentityApiTokensRead
                    || action == Action::IdentityApiTokensWrite
                {
                    resource.kind = pb::ResourceKind::ApiToken.into();
                    resource.id = token.id.clone();
                }
                let local_decision = rbac::authorize_at(
                    &local,
                    action,
                    &slipway_identity::convert::resource_from_proto(&resource),
                    SystemTime::now(),
                );
                let answer = auth
                    .check(with_token(
                        pb::CheckRequest {
                            principal: None,
                            action: action.as_str().into(),
                            resource: Some(resource.clone()),
                        },
                        &secret,
                    ))
                    .await;
                match local_decision {
                    Decision::Deny(denial)
                        if matches!(denial.reason(), DenyReason::InvalidResource(_)) =>
                    {
                        let status = answer.err().ok_or("invalid resource decided")?;
                        assert_eq!(status.code(), Code::InvalidArgument, "{name} {action}");
                    }
                    decision => {
                        let got = answer?.into_inner().decision.ok_or("no decision")?;
                        assert_eq!(
                            (got.allowed, got.reason),
                            (decision.is_allowed(), decision.reason_number()),
                            "{name} {action} {resource:?}"
                        );
                        allowed_somewhere += usize::from(got.allowed);
                        batch.push(pb::BatchCheckItem {
                            action: action.as_str().into(),
                            resource: Some(resource),
                        });
                        expected.push((decision.is_allowed(), decision.reason_number()));
                    }
                }
            }
        }
        // BatchCheck gives the same answers, in order.
        let mut got = Vec::new();
        for chunk in batch.chunks(500) {
            let decisions = auth
                .batch_check(with_token(
                    pb::BatchCheckRequest {
                        principal: None,
                        checks: chunk.to_vec(),
                    },
                    &secret,
                ))
                .await?
                .into_inner()
                .decisions;
            got.extend(decisions.into_iter().map(|d| (d.allowed, d.reason)));
        }
        assert_eq!(got, expected, "{name}");
    }
    assert!(allowed_somewhere > 100, "the matrix allows something");
    // A role that grants nothing of the kind: sanity of the fixture.
    let _ = EnvironmentMode::ALL;
    h.sandbox.shutdown().await?;
    Ok(())
}

/// The configured service credential is the control plane: it reads any organization's
/// custom role (what other services' `RemoteResolver` does) and Authenticate answers it as
/// a SERVICE principal. Any other `slps_` credential, well-formed or not, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_service_credential_reads_any_organizations_roles() -> TestResult {
    let h = Harness::start().await?;
    let (other_org, _) = h.other_org().await?;
    let mut ids = Vec::new();
    for org in [&h.acme, &other_org] {
        let role = h
            .store
            .create_role(&NewRole {
                organization_id: org.clone(),
                name: "ops".into(),
                description: String::new(),
                grants: Grants::default().to_json(),
            })
            .await?;
        ids.push(role.id);
    }
    let mut roles =
        slipway_proto::identity::v1::role_service_client::RoleServiceClient::new(h.channel());
    for id in &ids {
        // Twice: the second answer comes from identity's authentication cache.
        for _ in 0..2 {
            let role = roles
                .get_role(with_token(
                    pb::GetRoleRequest { id: id.clone() },
                    &h.service,
                ))
                .await?
                .into_inner()
                .role
                .ok_or("no role")?;
            assert_eq!(&role.id, id);
        }
    }

    let principal = h
        .auth()
        .authenticate(pb::AuthenticateRequest {
            credential: h.service.clone(),
        })
        .await?
        .into_inner()
        .principal
        .ok_or("no principal")?;
    assert_eq!(principal.kind, i32::from(pb::PrincipalKind::Service));
    assert_eq!(principal.id, slipway_identity::resolver::CONTROL_PLANE);

    let stranger = NewCredential::generate(CredentialKind::Service)?.into_secret();
    let mut damaged = h.service.clone();
    damaged.pop();
    damaged.push(if h.service.ends_with('0') { '1' } else { '0' });
    let agent = NewCredential::generate(CredentialKind::Agent)?.into_secret();
    for bad in [&stranger, &damaged, &agent] {
        let status = roles
            .get_role(with_token(pb::GetRoleRequest { id: ids[1].clone() }, bad))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(reason(&status), "TOKEN_INVALID");
        let status = h
            .auth()
            .authenticate(pb::AuthenticateRequest {
                credential: bad.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_runs_once() -> TestResult {
    let h = Harness::start().await?;
    let again = slipway_identity::bootstrap(&h.platform, "second").await;
    assert!(
        matches!(
            again,
            Err(slipway_identity::BootstrapError::AlreadyBootstrapped)
        ),
        "{again:?}"
    );
    let _ = h.nats.namespace();
    h.sandbox.shutdown().await?;
    Ok(())
}

mod organizations {
    use super::*;
    use slipway_proto::identity::v1::organization_service_client::OrganizationServiceClient;

    fn get(id: &str) -> pb::GetOrganizationRequest {
        pb::GetOrganizationRequest { id: id.to_owned() }
    }

    fn update(
        id: &str,
        etag: &str,
        display_name: &str,
        paths: &[&str],
    ) -> pb::UpdateOrganizationRequest {
        pb::UpdateOrganizationRequest {
            organization: Some(pb::Organization {
                id: id.to_owned(),
                name: "other".into(),
                display_name: display_name.to_owned(),
                etag: etag.to_owned(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
        }
    }

    /// Adds a user to `org` through an invitation, as the API will.
    pub(super) async fn join(
        h: &Harness,
        org: &str,
        name: &str,
    ) -> Result<store::Member, Box<dyn std::error::Error>> {
        let user = h
            .store
            .upsert_user(&store::UserClaims {
                issuer: "https://issuer.test".into(),
                subject: name.into(),
                email: format!("{name}@example.com"),
                display_name: name.into(),
            })
            .await?;
        let invitation = h
            .store
            .create_invitation(&store::NewInvitation {
                organization_id: org.to_owned(),
                email: user.email.clone(),
                role: RoleRef::Builtin(BuiltinRole::Viewer),
                token_hash: SecretHash::from_digest([name.len() as u8; 32]),
                expire_time: store::now() + TimeDelta::days(1),
                inviter: store::PrincipalRef {
                    kind: store::PrincipalKind::User,
                    id: "test".into(),
                    display_name: "test".into(),
                },
            })
            .await?;
        Ok(h.store.accept_invitation(&invitation.id, &user.id).await?.0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn organizations_are_read_updated_transferred_and_deleted() -> TestResult {
        let h = Harness::start().await?;
        let (other_org, intruder) = h.other_org().await?;
        let (_, viewer) = h
            .token(
                &h.acme,
                "viewer",
                RoleRef::Builtin(BuiltinRole::Viewer),
                None,
            )
            .await?;
        let (_, owner) = h
            .token(&h.acme, "owner", RoleRef::Builtin(BuiltinRole::Owner), None)
            .await?;
        let mut orgs = OrganizationServiceClient::new(h.channel());

        // API tokens may not create organizations; bad input is refused first.
        let status = orgs
            .create_organization(with_token(
                pb::CreateOrganizationRequest {
                    organization: Some(pb::Organization {
                        name: "new".into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
                &h.admin,
            ))
            .await
            .err()
            .ok_or("token created an organization")?;
        assert_eq!(status.code(), Code::PermissionDenied);
        for (name, display) in [
            ("", ""),
            ("x".repeat(64).as_str(), ""),
            ("ok", "d".repeat(201).as_str()),
        ] {
            let status = orgs
                .create_organization(with_token(
                    pb::CreateOrganizationRequest {
                        organization: Some(pb::Organization {
                            name: name.to_owned(),
                            display_name: display.to_owned(),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                    &h.admin,
                ))
                .await
                .err()
                .ok_or("bad organization accepted")?;
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(violations(&status).len(), 1);
        }
        let all = h
            .store
            .list_organizations(None, &store::PageRequest::first(10))
            .await?;
        assert_eq!(all.items.len(), 2, "nothing was created");

        // Reads: its own organization only.
        let acme = orgs
            .get_organization(with_token(get(&h.acme), &viewer))
            .await?
            .into_inner()
            .organization
            .ok_or("no organization")?;
        assert_eq!(acme.name, "acme");
        let listed = orgs
            .list_organizations(with_token(pb::ListOrganizationsRequest::default(), &viewer))
            .await?
            .into_inner();
        assert_eq!(
            listed
                .organizations
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>(),
            ["acme"]
        );
        for id in [other_org.as_str(), "missing"] {
            let status = orgs
                .get_organization(with_token(get(id), &viewer))
                .await
                .err()
                .ok_or("another organization was visible")?;
            assert_eq!(status.code(), Code::NotFound);
        }

        // Update: mask, etag, permission, isolation, conflicts.
        let updated = orgs
            .update_organization(with_token(
                update(&h.acme, &acme.etag, "Acme Inc", &["display_name"]),
                &h.admin,
            ))
            .await?
            .into_inner()
            .organization
            .ok_or("no organization")?;
        assert_eq!(
            (updated.name.as_str(), updated.display_name.as_str()),
            ("acme", "Acme Inc")
        );
        assert_ne!(updated.etag, acme.etag);
        let stale = orgs
            .update_organization(with_token(
                update(&h.acme, &acme.etag, "x", &["display_name"]),
                &h.admin,
            ))
            .await
            .err()
            .ok_or("stale etag accepted")?;
        assert_eq!(stale.code(), Code::FailedPrecondition);
        let bad_path = orgs
            .update_organization(with_token(
                update(&h.acme, "", "x", &["owner_user_id"]),
                &h.admin,
            ))
            .await
            .err()
            .ok_or("immutable path accepted")?;
        assert_eq!(violations(&bad_path), ["update_mask.paths[0]"]);
        let taken = orgs
            .update_organization(with_token(update(&h.acme, "", "", &["name"]), &h.admin))
            .await
            .err()
            .ok_or("taken name accepted")?;
        assert_eq!(taken.code(), Code::AlreadyExists);
        let denied = orgs
            .update_organization(with_token(
                update(&h.acme, "", "x", &["display_name"]),
                &viewer,
            ))
            .await
            .err()
            .ok_or("viewer updated")?;
        assert_eq!(denied.code(), Code::PermissionDenied);
        let hidden = orgs
            .update_organization(with_token(
                update(&h.acme, "", "x", &["display_name"]),
                &intruder,
            ))
            .await
            .err()
            .ok_or("intruder updated")?;
        assert_eq!(hidden.code(), Code::NotFound);

        // Transfer: owner only, to a member of this organization.
        let bob = join(&h, &h.acme, "bob").await?;
        let carol = join(&h, &other_org, "carol").await?;
        let transfer = |member: &str, secret: &str| {
            with_token(
                pb::TransferOrganizationOwnershipRequest {
                    id: h.acme.clone(),
                    new_owner_member_id: member.to_owned(),
                    etag: String::new(),
                    request_id: String::new(),
                },
                secret,
            )
        };
        let status = orgs
            .transfer_organization_ownership(transfer(&bob.id, &h.admin))
            .await
            .err()
            .ok_or("admin transferred")?;
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = orgs
            .transfer_organization_ownership(transfer(&carol.id, &owner))
            .await
            .err()
            .ok_or("transferred to another organization's member")?;
        assert_eq!(status.code(), Code::NotFound);
        let done = orgs
            .transfer_organization_ownership(transfer(&bob.id, &owner))
            .await?
            .into_inner();
        assert_eq!(
            done.organization.map(|o| o.owner_user_id),
            Some(bob.user_id.clone())
        );
        assert_eq!(
            done.new_owner.and_then(|m| m.role),
            builtin(pb::BuiltinRole::Owner)
        );
        assert_eq!(
            done.previous_owner.and_then(|m| m.role),
            builtin(pb::BuiltinRole::Admin)
        );

        // Delete: owner only; the organization's tokens stop working.
        let delete = |id: &str, secret: &str| {
            with_token(
                pb::DeleteOrganizationRequest {
                    id: id.to_owned(),
                    etag: String::new(),
                    force: false,
                },
                secret,
            )
        };
        let status = orgs
            .delete_organization(delete(&h.acme, &h.admin))
            .await
            .err()
            .ok_or("admin deleted")?;
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = orgs
            .delete_organization(delete(&h.acme, &intruder))
            .await
            .err()
            .ok_or("intruder deleted")?;
        assert_eq!(status.code(), Code::NotFound);
        orgs.delete_organization(delete(&h.acme, &owner)).await?;
        let status = orgs
            .get_organization(with_token(get(&h.acme), &viewer))
            .await
            .err()
            .ok_or("deleted organization's token still works")?;
        assert_eq!(
            (status.code(), reason(&status)),
            (Code::Unauthenticated, "TOKEN_INVALID".into())
        );
        // The audit log keeps what happened.
        let audit = h
            .store
            .list_audit_events(
                &h.acme,
                &store::AuditFilter::default(),
                &store::PageRequest::first(50),
            )
            .await?;
        let actions: Vec<_> = audit
            .items
            .iter()
            .map(|e| (e.action.as_str(), e.status_code.as_str()))
            .collect();
        assert!(
            actions.contains(&("identity.organizations.delete", "OK")),
            "{actions:?}"
        );
        assert!(
            actions.contains(&("identity.organizations.transfer_ownership", "OK")),
            "{actions:?}"
        );
        assert!(
            actions.contains(&("identity.organizations.update", "FAILED_PRECONDITION")),
            "{actions:?}"
        );
        h.sandbox.shutdown().await?;
        Ok(())
    }
}

mod audit {
    use super::*;
    use slipway_proto::identity::v1::audit_service_client::AuditServiceClient;

    fn list(org: &str, action: &str) -> pb::ListAuditEventsRequest {
        pb::ListAuditEventsRequest {
            organization_id: org.to_owned(),
            action: action.to_owned(),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn owners_and_admins_list_the_audit_log_with_filters() -> TestResult {
        let h = Harness::start().await?;
        let (_, intruder) = h.other_org().await?;
        let (_, viewer) = h
            .token(
                &h.acme,
                "viewer",
                RoleRef::Builtin(BuiltinRole::Viewer),
                None,
            )
            .await?;
        let (devops_token, devops) = h
            .token(
                &h.acme,
                "devops",
                RoleRef::Builtin(BuiltinRole::Devops),
                None,
            )
            .await?;
        let mut tokens = h.tokens();
        // Three audited calls: two by the admin, one by devops (denied).
        for name in ["a", "b"] {
            tokens
                .create_api_token(with_token(
                    new_token(&h.acme, name, builtin(pb::BuiltinRole::Viewer)),
                    &h.admin,
                ))
                .await?;
        }
        let _ = tokens
            .create_api_token(with_token(
                new_token(&h.acme, "c", builtin(pb::BuiltinRole::Admin)),
                &devops,
            ))
            .await;
        let mut audit = AuditServiceClient::new(h.channel());

        let all = audit
            .list_audit_events(with_token(list(&h.acme, ""), &h.admin))
            .await?
            .into_inner()
            .audit_events;
        assert_eq!(all.len(), 4, "three calls and the bootstrap");
        assert_eq!(all[0].status_code, "PERMISSION_DENIED");
        assert_eq!(
            all[0].actor.as_ref().map(|a| a.id.clone()),
            Some(devops_token.id.clone())
        );
        assert_eq!(all[3].action, "identity.organizations.bootstrap");
        assert!(
            all[1]
                .origin
                .as_ref()
                .is_some_and(|o| !o.ip_address.is_empty())
        );
        assert_eq!(
            all[1].target.as_ref().map(|t| t.kind),
            Some(i32::from(pb::ResourceKind::ApiToken))
        );

        let reader = audit.clone();
        let only = |request: pb::ListAuditEventsRequest| {
            let mut audit = reader.clone();
            let admin = h.admin.clone();
            async move {
                Ok::<_, Status>(
                    audit
                        .list_audit_events(with_token(request, &admin))
                        .await?
                        .into_inner()
                        .audit_events
                        .len(),
                )
            }
        };
        assert_eq!(only(list(&h.acme, "identity.api_tokens.write")).await?, 3);
        assert_eq!(only(list(&h.acme, "identity.*")).await?, 4);
        assert_eq!(only(list(&h.acme, "deploy.*")).await?, 0);
        let mut by_actor = list(&h.acme, "");
        by_actor.actor = Some(pb::PrincipalRef {
            kind: pb::PrincipalKind::ApiToken.into(),
            id: devops_token.id.clone(),
            display_name: String::new(),
        });
        assert_eq!(only(by_actor).await?, 1);
        let mut since = list(&h.acme, "");
        since.start_time = all[1].event_time;
        assert_eq!(only(since).await?, 2);
        let mut by_target = list(&h.acme, "");
        by_target.target = Some(pb::Resource {
            kind: pb::ResourceKind::Organization.into(),
            ..Default::default()
        });
        assert_eq!(only(by_target).await?, 1);

        // Pages visit every event once; a token is bound to its filters.
        let mut seen = Vec::new();
        let mut request = list(&h.acme, "");
        request.page_size = 1;
        loop {
            let page = audit
                .list_audit_events(with_token(request.clone(), &h.admin))
                .await?
                .into_inner();
            seen.extend(page.audit_events.into_iter().map(|e| e.id));
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
        assert_eq!(seen, all.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
        let mut rebound = list(&h.acme, "identity.*");
        rebound.page_size = 1;
        let first = audit
            .list_audit_events(with_token(rebound.clone(), &h.admin))
            .await?
            .into_inner();
        rebound.action = "deploy.*".into();
        rebound.page_token = first.next_page_token;
        let status = audit
            .list_audit_events(with_token(rebound, &h.admin))
            .await
            .err()
            .ok_or("page token reused with other filters")?;
        assert_eq!(violations(&status), ["page_token"]);

        // Bad filters.
        let mut bad = list(&h.acme, "deploy");
        bad.start_time = Some(prost_types::Timestamp {
            seconds: 2_000_000_000,
            nanos: 0,
        });
        bad.end_time = Some(prost_types::Timestamp {
            seconds: 1_000_000_000,
            nanos: 0,
        });
        bad.actor = Some(pb::PrincipalRef::default());
        let status = audit
            .list_audit_events(with_token(bad, &h.admin))
            .await
            .err()
            .ok_or("bad filters accepted")?;
        let mut fields = violations(&status);
        fields.sort();
        assert_eq!(fields, ["action", "actor.id", "actor.kind", "start_time"]);

        // Owners and admins only; other organizations see nothing.
        for secret in [&viewer, &devops] {
            let status = audit
                .list_audit_events(with_token(list(&h.acme, ""), secret))
                .await
                .err()
                .ok_or("audit log readable")?;
            assert_eq!(status.code(), Code::PermissionDenied);
        }
        let status = audit
            .list_audit_events(with_token(list(&h.acme, ""), &intruder))
            .await
            .err()
            .ok_or("audit log of another organization readable")?;
        assert_eq!(status.code(), Code::NotFound);
        // Denied reads are recorded too; the outsider's attempt is not written into acme.
        assert_eq!(only(list(&h.acme, "identity.audit_events.read")).await?, 2);
        h.sandbox.shutdown().await?;
        Ok(())
    }
}

mod members {
    use super::*;
    use slipway_proto::identity::v1::member_service_client::MemberServiceClient;

    fn update(id: &str, role: Option<pb::RoleRef>, etag: &str) -> pb::UpdateMemberRoleRequest {
        pb::UpdateMemberRoleRequest {
            id: id.to_owned(),
            role,
            etag: etag.to_owned(),
            request_id: String::new(),
        }
    }

    fn remove(id: &str) -> pb::RemoveMemberRequest {
        pb::RemoveMemberRequest {
            id: id.to_owned(),
            etag: String::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_are_listed_changed_and_removed() -> TestResult {
        let h = Harness::start().await?;
        let (other_org, intruder) = h.other_org().await?;
        let (_, viewer) = h
            .token(
                &h.acme,
                "viewer",
                RoleRef::Builtin(BuiltinRole::Viewer),
                None,
            )
            .await?;
        let bob = super::organizations::join(&h, &h.acme, "bob").await?;
        let foreign_role = h
            .store
            .create_role(&NewRole {
                organization_id: other_org.clone(),
                name: "ops".into(),
                description: String::new(),
                grants: Grants::default().to_json(),
            })
            .await?;
        let mut members = MemberServiceClient::new(h.channel());
        let mut events = h
            .platform
            .bus
            .subscribe("slipway.events.identity.member.>")
            .await?;

        let listed = members
            .list_members(with_token(
                pb::ListMembersRequest {
                    organization_id: h.acme.clone(),
                    ..Default::default()
                },
                &viewer,
            ))
            .await?
            .into_inner()
            .members;
        let emails: Vec<_> = listed.iter().map(|m| m.email.as_str()).collect();
        assert_eq!(emails, ["bob@example.com", "bootstrap@slipway.invalid"]);
        let owner_id = listed[1].id.clone();
        let owners = members
            .list_members(with_token(
                pb::ListMembersRequest {
                    organization_id: h.acme.clone(),
                    role: builtin(pb::BuiltinRole::Owner),
                    ..Default::default()
                },
                &viewer,
            ))
            .await?
            .into_inner()
            .members;
        assert_eq!(owners.len(), 1);
        let got = members
            .get_member(with_token(
                pb::GetMemberRequest { id: bob.id.clone() },
                &viewer,
            ))
            .await?
            .into_inner()
            .member
            .ok_or("no member")?;
        assert_eq!(got.user_id, bob.user_id);

        // Role changes: admins only, never to or from OWNER, custom roles of this organization.
        let changed = members
            .update_member_role(with_token(
                update(&bob.id, builtin(pb::BuiltinRole::Devops), &bob.etag),
                &h.admin,
            ))
            .await?
            .into_inner()
            .member
            .ok_or("no member")?;
        assert_eq!(changed.role, builtin(pb::BuiltinRole::Devops));
        let message = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await?
            .ok_or("no event")?;
        let event: slipway_proto::events::v1::Event =
            prost::Message::decode(message.payload.clone())?;
        assert_eq!(event.r#type, "identity.member.role_changed");
        let expect = |result: Result<tonic::Response<pb::UpdateMemberRoleResponse>, Status>,
                      code: Code| {
            match result {
                Ok(_) => Err::<Status, Box<dyn std::error::Error>>("change accepted".into()),
                Err(status) => {
                    assert_eq!(status.code(), code, "{status:?}");
                    Ok(status)
                }
            }
        };
        let stale = expect(
            members
                .update_member_role(with_token(
                    update(&bob.id, builtin(pb::BuiltinRole::Viewer), &bob.etag),
                    &h.admin,
                ))
                .await,
            Code::FailedPrecondition,
        )?;
        assert!(stale.message().contains("changed"));
        let owner = expect(
            members
                .update_member_role(with_token(
                    update(&owner_id, builtin(pb::BuiltinRole::Viewer), ""),
                    &h.admin,
                ))
                .await,
            Code::FailedPrecondition,
        )?;
        assert_eq!(
            owner
                .get_error_details()
                .precondition_failure()
                .map(|p| p.violations[0].r#type.clone()),
            Some("OWNER_IMMUTABLE".into())
        );
        let to_owner = expect(
            members
                .update_member_role(with_token(
                    update(&bob.id, builtin(pb::BuiltinRole::Owner), ""),
                    &h.admin,
                ))
                .await,
            Code::InvalidArgument,
        )?;
        assert_eq!(violations(&to_owner), ["role.builtin"]);
        let unknown = expect(
            members
                .update_member_role(with_token(
                    update(
                        &bob.id,
                        Some(pb::RoleRef {
                            role: Some(pb::role_ref::Role::Builtin(42)),
                        }),
                        "",
                    ),
                    &h.admin,
                ))
                .await,
            Code::InvalidArgument,
        )?;
        assert_eq!(violations(&unknown), ["role.builtin"]);
        expect(
            members
                .update_member_role(with_token(
                    update(
                        &bob.id,
                        Some(pb::RoleRef {
                            role: Some(pb::role_ref::Role::CustomRoleId(foreign_role.id.clone())),
                        }),
                        "",
                    ),
                    &h.admin,
                ))
                .await,
            Code::NotFound,
        )?;
        expect(
            members
                .update_member_role(with_token(
                    update(&bob.id, builtin(pb::BuiltinRole::Viewer), ""),
                    &viewer,
                ))
                .await,
            Code::PermissionDenied,
        )?;
        expect(
            members
                .update_member_role(with_token(
                    update(&bob.id, builtin(pb::BuiltinRole::Viewer), ""),
                    &intruder,
                ))
                .await,
            Code::NotFound,
        )?;
        let current = h.store.get_member(&bob.id).await?;
        assert_eq!(
            current.role,
            RoleRef::Builtin(BuiltinRole::Devops),
            "refusals changed nothing"
        );

        // Another organization's members are invisible.
        let status = members
            .get_member(with_token(
                pb::GetMemberRequest { id: bob.id.clone() },
                &intruder,
            ))
            .await
            .err()
            .ok_or("another organization's member visible")?;
        assert_eq!(status.code(), Code::NotFound);
        let status = members
            .list_members(with_token(
                pb::ListMembersRequest {
                    organization_id: h.acme.clone(),
                    ..Default::default()
                },
                &intruder,
            ))
            .await
            .err()
            .ok_or("another organization's members listed")?;
        assert_eq!(status.code(), Code::NotFound);
        let status = members
            .remove_member(with_token(remove(&bob.id), &intruder))
            .await
            .err()
            .ok_or("intruder removed a member")?;
        assert_eq!(status.code(), Code::NotFound);

        // Removal: not the owner; then the member is gone.
        let status = members
            .remove_member(with_token(remove(&owner_id), &h.admin))
            .await
            .err()
            .ok_or("owner removed")?;
        assert_eq!(status.code(), Code::FailedPrecondition);
        let status = members
            .remove_member(with_token(remove(&bob.id), &viewer))
            .await
            .err()
            .ok_or("viewer removed a member")?;
        assert_eq!(status.code(), Code::PermissionDenied);
        members
            .remove_member(with_token(remove(&bob.id), &h.admin))
            .await?;
        let status = members
            .get_member(with_token(
                pb::GetMemberRequest { id: bob.id.clone() },
                &viewer,
            ))
            .await
            .err()
            .ok_or("removed member still there")?;
        assert_eq!(status.code(), Code::NotFound);
        h.sandbox.shutdown().await?;
        Ok(())
    }
}

mod roles {
    use super::*;
    use slipway_proto::common::v1::EnvironmentMode as Mode;
    use slipway_proto::identity::v1::role_service_client::RoleServiceClient;

    fn mode(mode: Mode, permission: pb::ProjectPermission) -> pb::EnvironmentModePermission {
        pb::EnvironmentModePermission {
            environment_mode: mode.into(),
            permission: permission.into(),
        }
    }

    fn role(name: &str, grants: Vec<pb::ProjectGrant>) -> pb::Role {
        pb::Role {
            name: name.to_owned(),
            project_grants: grants,
            default_cluster_permission: pb::ClusterPermission::Viewer.into(),
            ..Default::default()
        }
    }

    fn grant(project: &str, modes: Vec<pb::EnvironmentModePermission>) -> pb::ProjectGrant {
        pb::ProjectGrant {
            project_id: project.to_owned(),
            permissions: modes,
        }
    }

    async fn may_deploy_p1_staging(
        h: &Harness,
        secret: &str,
    ) -> Result<bool, Box<dyn std::error::Error>> {
        let decision = h
            .auth()
            .check(with_token(
                pb::CheckRequest {
                    principal: None,
                    action: "deploy.environments.deploy".into(),
                    resource: Some(pb::Resource {
                        organization_id: h.acme.clone(),
                        project_id: "p1".into(),
                        environment_id: "e1".into(),
                        environment_mode: Mode::Staging.into(),
                        ..Default::default()
                    }),
                },
                secret,
            ))
            .await?
            .into_inner()
            .decision
            .ok_or("no decision")?;
        Ok(decision.allowed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn custom_roles_are_validated_applied_and_deleted() -> TestResult {
        let h = Harness::start().await?;
        let (_, intruder) = h.other_org().await?;
        let (_, viewer) = h
            .token(
                &h.acme,
                "viewer",
                RoleRef::Builtin(BuiltinRole::Viewer),
                None,
            )
            .await?;
        let mut roles = RoleServiceClient::new(h.channel());
        let create = |role: pb::Role| pb::CreateRoleRequest {
            organization_id: h.acme.clone(),
            role: Some(role),
            request_id: String::new(),
        };

        // Bad input: nothing written.
        let bad: Vec<(pb::Role, &[&str])> = vec![
            (role("admin", vec![]), &["role.name"]),
            (role("", vec![]), &["role.name"]),
            (
                role("dup", vec![grant("p1", vec![]), grant("p1", vec![])]),
                &["role.project_grants[1].project_id"],
            ),
            (
                role(
                    "modes",
                    vec![grant(
                        "p1",
                        vec![
                            mode(Mode::Staging, pb::ProjectPermission::Viewer),
                            mode(Mode::Staging, pb::ProjectPermission::Manager),
                            mode(Mode::Unspecified, pb::ProjectPermission::Viewer),
                        ],
                    )],
                ),
                &[
                    "role.project_grants[0].permissions[1].environment_mode",
                    "role.project_grants[0].permissions[2].environment_mode",
                ],
            ),
            (
                role(
                    "many",
                    (0..501).map(|i| grant(&format!("p{i}"), vec![])).collect(),
                ),
                &["role.project_grants"],
            ),
        ];
        for (role, fields) in bad {
            let status = roles
                .create_role(with_token(create(role), &h.admin))
                .await
                .err()
                .ok_or("bad role accepted")?;
            assert_eq!(status.code(), Code::InvalidArgument);
            let mut got = violations(&status);
            got.sort();
            assert_eq!(got, *fields);
        }
        assert!(
            h.store
                .list_roles(&h.acme, &store::PageRequest::first(10))
                .await?
                .items
                .is_empty()
        );

        // Create, then a token holding it is authorized by its grants.
        let status = roles
            .create_role(with_token(create(role("deployers", vec![])), &viewer))
            .await
            .err()
            .ok_or("viewer created a role")?;
        assert_eq!(status.code(), Code::PermissionDenied);
        let created = roles
            .create_role(with_token(
                create(role(
                    "deployers",
                    vec![grant(
                        "p1",
                        vec![mode(Mode::Staging, pb::ProjectPermission::Deployer)],
                    )],
                )),
                &h.admin,
            ))
            .await?
            .into_inner()
            .role
            .ok_or("no role")?;
        assert_eq!(created.project_grants.len(), 1);
        assert_eq!(
            created.default_cluster_permission,
            i32::from(pb::ClusterPermission::Viewer)
        );
        let taken = roles
            .create_role(with_token(create(role("deployers", vec![])), &h.admin))
            .await
            .err()
            .ok_or("name taken twice")?;
        assert_eq!(taken.code(), Code::AlreadyExists);
        let (holder, holder_secret) = h
            .token(
                &h.acme,
                "deployer",
                RoleRef::Custom(created.id.clone()),
                None,
            )
            .await?;
        assert!(may_deploy_p1_staging(&h, &holder_secret).await?);

        // Reads: members only.
        let got = roles
            .get_role(with_token(
                pb::GetRoleRequest {
                    id: created.id.clone(),
                },
                &holder_secret,
            ))
            .await?
            .into_inner()
            .role
            .ok_or("no role")?;
        assert_eq!(got, created);
        let listed = roles
            .list_roles(with_token(
                pb::ListRolesRequest {
                    organization_id: h.acme.clone(),
                    ..Default::default()
                },
                &viewer,
            ))
            .await?
            .into_inner()
            .roles;
        assert_eq!(listed, std::slice::from_ref(&created));
        let hidden = roles
            .get_role(with_token(
                pb::GetRoleRequest {
                    id: created.id.clone(),
                },
                &intruder,
            ))
            .await
            .err()
            .ok_or("another organization's role visible")?;
        assert_eq!(hidden.code(), Code::NotFound);

        // Update the grants: the holder's next call sees the change.
        let update = |etag: &str| pb::UpdateRoleRequest {
            role: Some(pb::Role {
                id: created.id.clone(),
                etag: etag.to_owned(),
                project_grants: vec![grant(
                    "p1",
                    vec![mode(Mode::Staging, pb::ProjectPermission::Viewer)],
                )],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["project_grants".into()],
            }),
        };
        let updated = roles
            .update_role(with_token(update(&created.etag), &h.admin))
            .await?
            .into_inner()
            .role
            .ok_or("no role")?;
        assert_eq!(updated.name, "deployers", "unmasked fields are kept");
        assert_eq!(
            updated.default_cluster_permission,
            created.default_cluster_permission
        );
        assert!(!may_deploy_p1_staging(&h, &holder_secret).await?);
        let stale = roles
            .update_role(with_token(update(&created.etag), &h.admin))
            .await
            .err()
            .ok_or("stale etag accepted")?;
        assert_eq!(stale.code(), Code::FailedPrecondition);
        for secret in [&viewer, &intruder] {
            let status = roles
                .update_role(with_token(update(""), secret))
                .await
                .err()
                .ok_or("role updated without permission")?;
            assert_ne!(status.code(), Code::Ok);
        }

        // Delete: refused while held, then gone.
        let delete = pb::DeleteRoleRequest {
            id: created.id.clone(),
            etag: String::new(),
        };
        let in_use = roles
            .delete_role(with_token(delete.clone(), &h.admin))
            .await
            .err()
            .ok_or("role in use deleted")?;
        assert_eq!(in_use.code(), Code::FailedPrecondition);
        let status = roles
            .delete_role(with_token(delete.clone(), &intruder))
            .await
            .err()
            .ok_or("intruder deleted a role")?;
        assert_eq!(status.code(), Code::NotFound);
        h.store.revoke_api_token(&holder.id).await?;
        roles.delete_role(with_token(delete, &h.admin)).await?;
        let gone = roles
            .get_role(with_token(
                pb::GetRoleRequest {
                    id: created.id.clone(),
                },
                &h.admin,
            ))
            .await
            .err()
            .ok_or("deleted role still there")?;
        assert_eq!(gone.code(), Code::NotFound);
        h.sandbox.shutdown().await?;
        Ok(())
    }
}

mod invitations {
    use super::*;
    use slipway_proto::identity::v1::invitation_service_client::InvitationServiceClient;
    use slipway_proto::identity::v1::user_service_client::UserServiceClient;

    fn invite(org: &str, email: &str, role: Option<pb::RoleRef>) -> pb::CreateInvitationRequest {
        pb::CreateInvitationRequest {
            organization_id: org.to_owned(),
            invitation: Some(pb::Invitation {
                email: email.to_owned(),
                role,
                ..Default::default()
            }),
            request_id: String::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invitations_are_created_listed_and_revoked() -> TestResult {
        let h = Harness::start().await?;
        let (_, intruder) = h.other_org().await?;
        let (_, devops) = h
            .token(
                &h.acme,
                "devops",
                RoleRef::Builtin(BuiltinRole::Devops),
                None,
            )
            .await?;
        super::organizations::join(&h, &h.acme, "bob").await?;
        let mut invitations = InvitationServiceClient::new(h.channel());

        let created = invitations
            .create_invitation(with_token(
                invite(&h.acme, "Eve@Example.com", builtin(pb::BuiltinRole::Viewer)),
                &h.admin,
            ))
            .await?
            .into_inner();
        assert!(created.invitation_token.starts_with("slpi_"));
        let invitation = created.invitation.ok_or("no invitation")?;
        assert_eq!(invitation.status, i32::from(pb::InvitationStatus::Pending));
        assert!(invitation.expire_time.is_some());

        // Bad input and conflicts.
        let far = prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + 31 * 86_400,
            nanos: 0,
        };
        let mut too_far = invite(&h.acme, "x@example.com", builtin(pb::BuiltinRole::Viewer));
        if let Some(invitation) = too_far.invitation.as_mut() {
            invitation.expire_time = Some(far);
        }
        let cases: Vec<(pb::CreateInvitationRequest, &[&str])> = vec![
            (
                invite(&h.acme, "not-an-email", builtin(pb::BuiltinRole::Viewer)),
                &["invitation.email"],
            ),
            (
                invite(&h.acme, "", None),
                &["invitation.email", "invitation.role"],
            ),
            (
                invite(&h.acme, "x@example.com", builtin(pb::BuiltinRole::Owner)),
                &["invitation.role.builtin"],
            ),
            (too_far, &["invitation.expire_time"]),
        ];
        for (request, fields) in cases {
            let status = invitations
                .create_invitation(with_token(request, &h.admin))
                .await
                .err()
                .ok_or("bad invitation accepted")?;
            assert_eq!(status.code(), Code::InvalidArgument);
            let mut got = violations(&status);
            got.sort();
            assert_eq!(got, *fields);
        }
        for email in ["eve@example.com", "bob@example.com"] {
            let status = invitations
                .create_invitation(with_token(
                    invite(&h.acme, email, builtin(pb::BuiltinRole::Viewer)),
                    &h.admin,
                ))
                .await
                .err()
                .ok_or("duplicate invitation accepted")?;
            assert_eq!(status.code(), Code::AlreadyExists, "{email}");
        }
        let status = invitations
            .create_invitation(with_token(
                invite(&h.acme, "y@example.com", builtin(pb::BuiltinRole::Viewer)),
                &devops,
            ))
            .await
            .err()
            .ok_or("devops invited")?;
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = invitations
            .create_invitation(with_token(
                invite(&h.acme, "y@example.com", builtin(pb::BuiltinRole::Viewer)),
                &intruder,
            ))
            .await
            .err()
            .ok_or("intruder invited")?;
        assert_eq!(status.code(), Code::NotFound);

        // Reads.
        let listed = invitations
            .list_invitations(with_token(
                pb::ListInvitationsRequest {
                    organization_id: h.acme.clone(),
                    status: pb::InvitationStatus::Pending.into(),
                    ..Default::default()
                },
                &h.admin,
            ))
            .await?
            .into_inner()
            .invitations;
        assert_eq!(listed.len(), 1, "bob's accepted invitation is not pending");
        let status = invitations
            .get_invitation(with_token(
                pb::GetInvitationRequest {
                    id: invitation.id.clone(),
                },
                &intruder,
            ))
            .await
            .err()
            .ok_or("another organization's invitation visible")?;
        assert_eq!(status.code(), Code::NotFound);

        // Accepting: the token must be well formed, and only users accept.
        let status = invitations
            .accept_invitation(with_token(
                pb::AcceptInvitationRequest {
                    invitation_token: "slpi_nonsense".into(),
                    request_id: String::new(),
                },
                &h.admin,
            ))
            .await
            .err()
            .ok_or("malformed invitation token accepted")?;
        assert_eq!(violations(&status), ["invitation_token"]);
        let status = invitations
            .accept_invitation(with_token(
                pb::AcceptInvitationRequest {
                    invitation_token: created.invitation_token.clone(),
                    request_id: String::new(),
                },
                &h.admin,
            ))
            .await
            .err()
            .ok_or("an api token accepted an invitation")?;
        assert_eq!(status.code(), Code::PermissionDenied);
        // The invitation token is no credential.
        let status = h
            .auth()
            .authenticate(pb::AuthenticateRequest {
                credential: created.invitation_token.clone(),
            })
            .await
            .err()
            .ok_or("invitation token authenticated")?;
        assert_eq!(reason(&status), "TOKEN_INVALID");

        // Revoke, once.
        let revoke = pb::RevokeInvitationRequest {
            id: invitation.id.clone(),
            request_id: String::new(),
        };
        let revoked = invitations
            .revoke_invitation(with_token(revoke.clone(), &h.admin))
            .await?
            .into_inner()
            .invitation
            .ok_or("no invitation")?;
        assert_eq!(revoked.status, i32::from(pb::InvitationStatus::Revoked));
        assert!(revoked.close_time.is_some());
        let status = invitations
            .revoke_invitation(with_token(revoke, &h.admin))
            .await
            .err()
            .ok_or("revoked twice")?;
        assert_eq!(status.code(), Code::FailedPrecondition);
        h.sandbox.shutdown().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_current_principal_is_described() -> TestResult {
        let h = Harness::start().await?;
        let mut users = UserServiceClient::new(h.channel());
        let current = users
            .get_current_user(with_token(pb::GetCurrentUserRequest {}, &h.admin))
            .await?
            .into_inner();
        assert!(current.user.is_none(), "an api token is no user");
        let principal = current.principal.ok_or("no principal")?;
        assert_eq!(principal.kind, i32::from(pb::PrincipalKind::ApiToken));
        assert_eq!(principal.memberships[0].organization_name, "acme");
        let status = users
            .get_current_user(Request::new(pb::GetCurrentUserRequest {}))
            .await
            .err()
            .ok_or("anonymous caller described")?;
        assert_eq!(reason(&status), "TOKEN_MISSING");
        h.sandbox.shutdown().await?;
        Ok(())
    }
}

/// `request_id` on the creates: a repeat returns the first resource and writes nothing.
mod request_ids {
    use super::*;
    use slipway_proto::identity::v1::invitation_service_client::InvitationServiceClient;
    use slipway_proto::identity::v1::role_service_client::RoleServiceClient;

    async fn role_count(h: &Harness) -> Result<usize, Box<dyn std::error::Error>> {
        Ok(h.store
            .list_roles(&h.acme, &store::PageRequest::first(100))
            .await?
            .items
            .len())
    }

    async fn invitation_count(h: &Harness) -> Result<usize, Box<dyn std::error::Error>> {
        Ok(h.store
            .list_invitations(&h.acme, None, &store::PageRequest::first(100))
            .await?
            .items
            .len())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeated_create_api_token_returns_the_first_without_its_secret() -> TestResult {
        let h = Harness::start().await?;
        let mut request = new_token(&h.acme, "ci", builtin(pb::BuiltinRole::Viewer));
        request.request_id = "token-1".into();
        let first = h
            .tokens()
            .create_api_token(with_token(request.clone(), &h.admin))
            .await?
            .into_inner();
        assert!(first.secret.starts_with("slp_"));
        let first_token = first.api_token.ok_or("no token")?;
        let names = token_names(&h, &h.acme).await?;

        let repeat = h
            .tokens()
            .create_api_token(with_token(request.clone(), &h.admin))
            .await?
            .into_inner();
        assert_eq!(repeat.secret, "", "a repeat never shows the secret again");
        let repeat_token = repeat.api_token.ok_or("no token")?;
        assert_eq!(repeat_token.id, first_token.id);
        assert_eq!(repeat_token.name, "ci");
        assert_eq!(
            token_names(&h, &h.acme).await?,
            names,
            "nothing was created"
        );

        // The first secret still works: a viewer, authenticated and then denied.
        let mut other = new_token(&h.acme, "ci-2", builtin(pb::BuiltinRole::Viewer));
        other.request_id = "token-2".into();
        let other = h
            .tokens()
            .create_api_token(with_token(other, &first.secret))
            .await
            .err()
            .ok_or("a viewer created a token")?;
        assert_eq!(other.code(), Code::PermissionDenied);

        // A failed create records nothing: its retry runs anew.
        let mut taken = new_token(&h.acme, "ci", builtin(pb::BuiltinRole::Viewer));
        taken.request_id = "token-3".into();
        let status = h
            .tokens()
            .create_api_token(with_token(taken.clone(), &h.admin))
            .await
            .err()
            .ok_or("a taken name was accepted")?;
        assert_eq!(status.code(), Code::AlreadyExists);
        let mut retry = new_token(&h.acme, "ci-3", builtin(pb::BuiltinRole::Viewer));
        retry.request_id = "token-3".into();
        let retried = h
            .tokens()
            .create_api_token(with_token(retry, &h.admin))
            .await?
            .into_inner();
        assert!(retried.secret.starts_with("slp_"));
        assert_eq!(retried.api_token.ok_or("no token")?.name, "ci-3");
        assert_eq!(token_names(&h, &h.acme).await?.len(), names.len() + 1);
        h.sandbox.shutdown().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeated_create_role_returns_the_first() -> TestResult {
        let h = Harness::start().await?;
        let mut roles = RoleServiceClient::new(h.channel());
        let request = pb::CreateRoleRequest {
            organization_id: h.acme.clone(),
            role: Some(pb::Role {
                name: "deployer".into(),
                ..Default::default()
            }),
            request_id: "role-1".into(),
        };
        let first = roles
            .create_role(with_token(request.clone(), &h.admin))
            .await?
            .into_inner()
            .role
            .ok_or("no role")?;
        let count = role_count(&h).await?;
        let repeat = roles
            .create_role(with_token(request.clone(), &h.admin))
            .await?
            .into_inner()
            .role
            .ok_or("no role")?;
        assert_eq!(repeat.id, first.id);
        assert_eq!(role_count(&h).await?, count, "nothing was created");

        // The same key in another organization is another request.
        let (other, other_admin) = h.other_org().await?;
        let mut elsewhere = request.clone();
        elsewhere.organization_id = other.clone();
        let created = roles
            .create_role(with_token(elsewhere, &other_admin))
            .await?
            .into_inner()
            .role
            .ok_or("no role")?;
        assert_ne!(created.id, first.id);
        h.sandbox.shutdown().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeated_create_invitation_returns_the_first_without_its_token() -> TestResult {
        let h = Harness::start().await?;
        let mut invitations = InvitationServiceClient::new(h.channel());
        let request = pb::CreateInvitationRequest {
            organization_id: h.acme.clone(),
            invitation: Some(pb::Invitation {
                email: "eve@example.com".into(),
                role: builtin(pb::BuiltinRole::Viewer),
                ..Default::default()
            }),
            request_id: "invite-1".into(),
        };
        let first = invitations
            .create_invitation(with_token(request.clone(), &h.admin))
            .await?
            .into_inner();
        assert!(first.invitation_token.starts_with("slpi_"));
        let count = invitation_count(&h).await?;
        let repeat = invitations
            .create_invitation(with_token(request.clone(), &h.admin))
            .await?
            .into_inner();
        assert_eq!(
            repeat.invitation_token, "",
            "a repeat never shows the token again"
        );
        assert_eq!(
            repeat.invitation.ok_or("no invitation")?.id,
            first.invitation.ok_or("no invitation")?.id
        );
        assert_eq!(invitation_count(&h).await?, count, "nothing was created");
        h.sandbox.shutdown().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeated_create_organization_returns_the_first() -> TestResult {
        // CreateOrganization takes a user principal (an OIDC login, see tests/oidc.rs):
        // here the store's keyed create, which the RPC calls with the caller's user id.
        let h = Harness::start().await?;
        let user = h
            .store
            .upsert_user(&store::UserClaims {
                issuer: "https://issuer.test".into(),
                subject: "carol".into(),
                email: "carol@example.com".into(),
                display_name: "carol".into(),
            })
            .await?;
        let new = store::NewOrganization {
            name: "carol-labs".into(),
            display_name: String::new(),
        };
        let key = store::RequestKey::new(&user.id, "CreateOrganization", "org-1");
        let first = h
            .store
            .create_organization_once(&new, &user.id, key.as_ref())
            .await?;
        assert!(first.is_new());
        let first = first.into_inner();
        let count = || async {
            h.store
                .list_organizations(None, &store::PageRequest::first(100))
                .await
                .map(|page| page.items.len())
        };
        let before = count().await?;
        let repeat = h
            .store
            .create_organization_once(&new, &user.id, key.as_ref())
            .await?;
        assert!(!repeat.is_new());
        assert_eq!(repeat.into_inner().id, first.id);
        assert_eq!(count().await?, before, "nothing was created");

        // A failed create records nothing: the key's retry runs anew.
        let failed = store::RequestKey::new(&user.id, "CreateOrganization", "org-2");
        let status = h
            .store
            .create_organization_once(&new, &user.id, failed.as_ref())
            .await
            .err()
            .ok_or("a taken name was accepted")?;
        assert!(matches!(status, store::StoreError::AlreadyExists(_)));
        let renamed = store::NewOrganization {
            name: "carol-labs-2".into(),
            display_name: String::new(),
        };
        let retried = h
            .store
            .create_organization_once(&renamed, &user.id, failed.as_ref())
            .await?;
        assert!(retried.is_new());
        assert_eq!(count().await?, before + 1);
        h.sandbox.shutdown().await?;
        Ok(())
    }
}

/// Actions honour `request_id`: a repeat of a revoke that succeeded answers its first
/// result and records nothing more, while the same revoke without the key (or with
/// another) answers what the state now says.
#[tokio::test]
async fn a_repeated_action_with_its_request_id_returns_the_first_result() -> TestResult {
    let h = Harness::start().await?;
    let (token, _) = h
        .token(
            &h.acme,
            "leaked",
            RoleRef::Builtin(BuiltinRole::Viewer),
            None,
        )
        .await?;
    let mut tokens = h.tokens();
    let revoke = |request_id: &str| {
        with_token(
            pb::RevokeApiTokenRequest {
                id: token.id.clone(),
                request_id: request_id.to_owned(),
            },
            &h.admin,
        )
    };
    let audited = |store: Store, org: String| async move {
        let page = store
            .list_audit_events(
                &org,
                &store::AuditFilter::default(),
                &store::PageRequest::first(100),
            )
            .await?;
        Ok::<usize, Box<dyn std::error::Error>>(
            page.items
                .iter()
                .filter(|event| event.method.ends_with("/RevokeApiToken"))
                .count(),
        )
    };
    tokens.revoke_api_token(revoke("revoke-leaked")).await?;
    let after_first = audited(h.store.clone(), h.acme.clone()).await?;
    assert_eq!(after_first, 1);
    // The client retries (its answer was lost): the first result again, nothing new.
    tokens.revoke_api_token(revoke("revoke-leaked")).await?;
    assert_eq!(audited(h.store.clone(), h.acme.clone()).await?, after_first);
    // A new request is a new action, refused by the state the first one left.
    let again = tokens
        .revoke_api_token(revoke("revoke-leaked-again"))
        .await
        .err()
        .ok_or("a revoked token was revoked twice")?;
    assert_ne!(again.code(), Code::Ok);
    let unkeyed = tokens
        .revoke_api_token(revoke(""))
        .await
        .err()
        .ok_or("a revoked token was revoked twice")?;
    assert_eq!(unkeyed.code(), again.code());
    // The key is the caller's own: another caller's repeat of it runs anew.
    let (_, other_admin) = h
        .token(
            &h.acme,
            "admin2",
            RoleRef::Builtin(BuiltinRole::Admin),
            None,
        )
        .await?;
    let status = tokens
        .revoke_api_token(with_token(
            pb::RevokeApiTokenRequest {
                id: token.id.clone(),
                request_id: "revoke-leaked".into(),
            },
            &other_admin,
        ))
        .await
        .err()
        .ok_or("another caller replayed someone else's result")?;
    assert_eq!(status.code(), again.code());
    Ok(())
}
