//! `slipway.identity.v1.ApiTokenService`: create (secret shown once), list, get, revoke.

use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_auth::principal;
use slipway_auth::rbac::{
    Action, BuiltinRole as RbacRole, Principal, Resource, ResourceKind, Role,
};
use slipway_proto::events::v1 as ev;
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::api_token_service_server::ApiTokenService;
use slipway_proto::{ApiError, identity::v1::role_ref};
use tonic::{Request, Response, Status};

use super::{Call, Context, authorize, target};
use crate::convert;
use crate::page;
use crate::store::{self, BuiltinRole, NameCursor, NewApiToken, PageRequest, RoleRef, SecretHash};
use crate::validation::{MAX_DESCRIPTION, Violations};

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct ApiTokens {
    ctx: Context,
}

impl ApiTokens {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// The role of a request, validated offline: set, not OWNER (a token never outranks every
/// person, and OWNER moves only by transfer), a known built-in or a custom role id.
pub fn requested_role(
    role: Option<&pb::RoleRef>,
    field: &str,
    violations: &mut Violations,
) -> Option<RoleRef> {
    match role.and_then(|role| role.role.as_ref()) {
        None => {
            violations.add(field, "is required");
            None
        }
        Some(role_ref::Role::Builtin(number)) => match convert::builtin_from_proto(*number) {
            None => {
                violations.add(format!("{field}.builtin"), "is not a known built-in role");
                None
            }
            Some(BuiltinRole::Owner) => {
                violations.add(
                    format!("{field}.builtin"),
                    "must not be OWNER: ownership moves only by transfer",
                );
                None
            }
            Some(role) => Some(RoleRef::Builtin(role)),
        },
        Some(role_ref::Role::CustomRoleId(id)) => {
            if id.is_empty() {
                violations.add(format!("{field}.custom_role_id"), "is required");
                None
            } else {
                Some(RoleRef::Custom(id.clone()))
            }
        }
    }
}

impl ApiTokens {
    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateApiTokenRequest,
        call: &Call,
    ) -> Result<pb::CreateApiTokenResponse, ApiError> {
        let now = store::now();
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        v.request_id(&request.request_id);
        let fields = request.api_token.unwrap_or_default();
        v.dns_label("api_token.name", &fields.name);
        v.max_chars(
            "api_token.description",
            &fields.description,
            MAX_DESCRIPTION,
        );
        let role = requested_role(fields.role.as_ref(), "api_token.role", &mut v);
        let expire_time = match fields.expire_time.as_ref() {
            None => None,
            Some(time) => match convert::from_timestamp(time) {
                Some(time) => Some(store::truncate_time(time)),
                None => {
                    v.add("api_token.expire_time", "is not a valid time");
                    None
                }
            },
        };
        v.future("api_token.expire_time", expire_time, now);
        v.finish()?;
        let Some(role) = role else {
            return Err(ApiError::invalid_field("api_token.role", "is required"));
        };

        let org = request.organization_id.as_str();
        let resource = Resource::in_organization(org).of_kind(ResourceKind::ApiToken);
        let action = Action::IdentityApiTokensWrite;
        let outcome = async {
            authorize(principal, action, &resource, "organization", org)?;
            self.check_role_for_creator(principal, org, &role).await?;
            let secret =
                NewCredential::generate(CredentialKind::ApiToken).map_err(ApiError::internal)?;
            let key = store::RequestKey::new(org, call.method, &request.request_id);
            let created = self
                .ctx
                .store
                .create_api_token_once(
                    &NewApiToken {
                        organization_id: org.to_owned(),
                        name: fields.name.clone(),
                        description: fields.description.clone(),
                        role: role.clone(),
                        secret_hash: SecretHash::from_digest(*secret.hash().as_bytes()),
                        secret_hint: secret.hint().to_owned(),
                        expire_time,
                        creator: convert::principal_ref(principal),
                    },
                    key.as_ref(),
                )
                .await
                .map_err(|error| match error {
                    store::StoreError::AlreadyExists(_) => {
                        ApiError::already_exists("api token", fields.name.clone())
                    }
                    store::StoreError::NotFound(store::Resource::Role) => {
                        ApiError::not_found("role", role_id(&role))
                    }
                    store::StoreError::NotFound(_) => ApiError::not_found("organization", org),
                    other => other.into(),
                })?;
            // The secret is shown once, by the request that created the token: a repeat of
            // its `request_id` returns the token's metadata with an empty secret (the one
            // generated for the repeat was never stored).
            Ok::<_, ApiError>(match created {
                store::Created::New(token) => (token, Some(secret.into_secret())),
                store::Created::Repeat(token) => (token, None),
            })
        }
        .await;
        let audit_target = match &outcome {
            Ok((token, _)) => target("API_TOKEN", &token.id),
            Err(_) => target("API_TOKEN", ""),
        };
        self.ctx
            .audit(
                principal,
                org,
                action,
                call,
                audit_target,
                outcome.as_ref().map(|_| ()),
            )
            .await;
        let (token, secret) = outcome?;
        let Some(secret) = secret else {
            return Ok(pb::CreateApiTokenResponse {
                api_token: Some(convert::api_token_to_proto(&token)),
                secret: String::new(),
            });
        };
        self.ctx
            .publish(
                principal,
                org,
                "api_token",
                "created",
                ev::event::Payload::ApiTokenCreated(ev::ApiTokenCreated {
                    api_token_id: token.id.clone(),
                    name: token.name.clone(),
                    role: Some(convert::role_ref_to_event(&token.role)),
                    expire_time: token.expire_time.map(convert::timestamp),
                }),
            )
            .await;
        Ok(pb::CreateApiTokenResponse {
            api_token: Some(convert::api_token_to_proto(&token)),
            secret,
        })
    }

    /// A token never has more power than its creator: a DEVOPS caller may only hand out
    /// DEVOPS, VIEWER or a custom role; a custom role must be one of this organization's.
    async fn check_role_for_creator(
        &self,
        principal: &Principal,
        organization_id: &str,
        role: &RoleRef,
    ) -> Result<(), ApiError> {
        let caller_role = principal
            .membership(organization_id)
            .and_then(|membership| membership.role());
        if let (Some(Role::Builtin(RbacRole::Devops)), RoleRef::Builtin(wanted)) =
            (caller_role, role)
            && !matches!(wanted, BuiltinRole::Devops | BuiltinRole::Viewer)
        {
            return Err(ApiError::PermissionDenied {
                permission: Action::IdentityApiTokensWrite.as_str().to_owned(),
            });
        }
        if let RoleRef::Custom(id) = role {
            let found = self.ctx.store.get_role(id).await;
            match found {
                Ok(found) if found.organization_id == organization_id => {}
                Ok(_) | Err(store::StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found("role", id.clone()));
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok(())
    }

    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListApiTokensRequest,
        call: &Call,
    ) -> Result<pb::ListApiTokensResponse, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        let size = v.page_size(request.page_size);
        v.finish()?;
        let org = request.organization_id.as_str();
        let query = format!("api_tokens/{org}");
        let after = page::decode::<NameCursor>(&request.page_token, &query)?;
        let resource = Resource::in_organization(org).of_kind(ResourceKind::ApiToken);
        self.ctx
            .authorize_audited(
                principal,
                Action::IdentityApiTokensRead,
                &resource,
                "organization",
                org,
                call,
                target("API_TOKEN", ""),
            )
            .await?;
        let listed = self
            .ctx
            .store
            .list_api_tokens(org, &PageRequest { size, after })
            .await?;
        Ok(pb::ListApiTokensResponse {
            api_tokens: listed
                .items
                .iter()
                .map(convert::api_token_to_proto)
                .collect(),
            next_page_token: page::encode(listed.next, &query),
        })
    }

    /// Loads a token and checks `action` on it; another organization's token and one the
    /// caller may not see are both NOT_FOUND.
    async fn load(
        &self,
        principal: &Principal,
        id: &str,
        action: Action,
        call: &Call,
    ) -> Result<store::ApiToken, ApiError> {
        let token = self
            .ctx
            .store
            .get_api_token(id)
            .await
            .map_err(|error| match error {
                store::StoreError::NotFound(_) => ApiError::not_found("api token", id),
                other => other.into(),
            })?;
        let resource = Resource::in_organization(&token.organization_id)
            .target(ResourceKind::ApiToken, &token.id);
        self.ctx
            .authorize_audited(
                principal,
                action,
                &resource,
                "api token",
                id,
                call,
                target("API_TOKEN", id),
            )
            .await?;
        Ok(token)
    }

    async fn get(
        &self,
        principal: &Principal,
        request: pb::GetApiTokenRequest,
        call: &Call,
    ) -> Result<pb::GetApiTokenResponse, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.finish()?;
        let token = self
            .load(principal, &request.id, Action::IdentityApiTokensRead, call)
            .await?;
        Ok(pb::GetApiTokenResponse {
            api_token: Some(convert::api_token_to_proto(&token)),
        })
    }

    async fn revoke(
        &self,
        principal: &Principal,
        request: pb::RevokeApiTokenRequest,
        call: &Call,
    ) -> Result<pb::RevokeApiTokenResponse, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.request_id(&request.request_id);
        v.finish()?;
        let action = Action::IdentityApiTokensWrite;
        let token = self.load(principal, &request.id, action, call).await?;
        let revoked =
            self.ctx
                .store
                .revoke_api_token(&token.id)
                .await
                .map_err(|error| match error {
                    store::StoreError::NotFound(_) => ApiError::not_found("api token", &request.id),
                    other => other.into(),
                });
        self.ctx
            .audit(
                principal,
                &token.organization_id,
                action,
                call,
                target("API_TOKEN", &token.id),
                revoked.as_ref().map(|_| ()),
            )
            .await;
        revoked?;
        self.ctx
            .publish(
                principal,
                &token.organization_id,
                "api_token",
                "revoked",
                ev::event::Payload::ApiTokenRevoked(ev::ApiTokenRevoked {
                    api_token_id: token.id.clone(),
                }),
            )
            .await;
        Ok(pb::RevokeApiTokenResponse {})
    }
}

fn role_id(role: &RoleRef) -> String {
    match role {
        RoleRef::Custom(id) => id.clone(),
        RoleRef::Builtin(role) => role.as_str().to_owned(),
    }
}

#[tonic::async_trait]
impl ApiTokenService for ApiTokens {
    async fn create_api_token(
        &self,
        request: Request<pb::CreateApiTokenRequest>,
    ) -> Result<Response<pb::CreateApiTokenResponse>, Status> {
        let call = Call::of(
            &request,
            "/slipway.identity.v1.ApiTokenService/CreateApiToken",
        );
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.create(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn list_api_tokens(
        &self,
        request: Request<pb::ListApiTokensRequest>,
    ) -> Result<Response<pb::ListApiTokensResponse>, Status> {
        let call = Call::of(
            &request,
            "/slipway.identity.v1.ApiTokenService/ListApiTokens",
        );
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.list(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn get_api_token(
        &self,
        request: Request<pb::GetApiTokenRequest>,
    ) -> Result<Response<pb::GetApiTokenResponse>, Status> {
        let call = Call::of(&request, "/slipway.identity.v1.ApiTokenService/GetApiToken");
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.get(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn revoke_api_token(
        &self,
        request: Request<pb::RevokeApiTokenRequest>,
    ) -> Result<Response<pb::RevokeApiTokenResponse>, Status> {
        let call = Call::of(
            &request,
            "/slipway.identity.v1.ApiTokenService/RevokeApiToken",
        );
        let principal = principal(&request)?.clone();
        let request = request.into_inner();
        let request_id = request.request_id.clone();
        let response = self
            .ctx
            .once(&principal, &call, &request_id, || {
                self.revoke(&principal, request, &call)
            })
            .await?;
        Ok(Response::new(response))
    }
}
