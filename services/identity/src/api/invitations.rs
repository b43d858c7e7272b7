//! `slipway.identity.v1.InvitationService`: invite an email with a role, list, get,
//! accept (users only, matching email), revoke. The invitation token (`slpi_…`) is shown
//! once; only its hash is stored.

use chrono::TimeDelta;
use slipway_auth::credential::{Credential, CredentialError, CredentialKind, NewCredential};
use slipway_auth::principal;
use slipway_auth::rbac::{Action, Principal, PrincipalKind, Resource, ResourceKind};
use slipway_proto::ApiError;
use slipway_proto::events::v1 as ev;
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::invitation_service_server::InvitationService;
use tonic::{Request, Response, Status};

use super::api_tokens::requested_role;
use super::{Call, Context, authorize, target};
use crate::convert;
use crate::page;
use crate::store::{
    self, IdCursor, InvitationStatus, NewInvitation, PageRequest, RoleRef, SecretHash, StoreError,
};
use crate::validation::Violations;

const CREATE: &str = "/slipway.identity.v1.InvitationService/CreateInvitation";
const ACCEPT: &str = "/slipway.identity.v1.InvitationService/AcceptInvitation";
const REVOKE: &str = "/slipway.identity.v1.InvitationService/RevokeInvitation";

/// How long an invitation stays acceptable when the request says nothing.
const DEFAULT_TTL: TimeDelta = TimeDelta::days(7);
/// The longest an invitation may stay acceptable.
const MAX_TTL: TimeDelta = TimeDelta::days(30);

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Invitations {
    ctx: Context,
}

impl Invitations {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

fn invitation_error(id: &str) -> impl Fn(StoreError) -> ApiError + '_ {
    move |error| match error {
        StoreError::NotFound(store::Resource::Role) => ApiError::not_found("role", ""),
        StoreError::NotFound(store::Resource::Organization) => {
            ApiError::not_found("organization", "")
        }
        StoreError::NotFound(_) => ApiError::not_found("invitation", id),
        StoreError::AlreadyExists(store::Resource::Member) => {
            ApiError::already_exists("member", "")
        }
        StoreError::AlreadyExists(_) => ApiError::already_exists("invitation", ""),
        other => other.into(),
    }
}

fn status_filter(number: i32, v: &mut Violations) -> Option<InvitationStatus> {
    match pb::InvitationStatus::try_from(number) {
        Ok(pb::InvitationStatus::Unspecified) => None,
        Ok(pb::InvitationStatus::Pending) => Some(InvitationStatus::Pending),
        Ok(pb::InvitationStatus::Accepted) => Some(InvitationStatus::Accepted),
        Ok(pb::InvitationStatus::Revoked) => Some(InvitationStatus::Revoked),
        Ok(pb::InvitationStatus::Expired) => Some(InvitationStatus::Expired),
        Err(_) => {
            v.add("status", "is not a known invitation status");
            None
        }
    }
}

impl Invitations {
    async fn load(
        &self,
        principal: &Principal,
        id: &str,
        action: Action,
        call: &Call,
    ) -> Result<store::Invitation, ApiError> {
        let invitation = self
            .ctx
            .store
            .get_invitation(id)
            .await
            .map_err(invitation_error(id))?;
        let resource = Resource::in_organization(&invitation.organization_id)
            .target(ResourceKind::Invitation, &invitation.id);
        self.ctx
            .authorize_audited(
                principal,
                action,
                &resource,
                "invitation",
                id,
                call,
                target("INVITATION", id),
            )
            .await?;
        Ok(invitation)
    }

    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateInvitationRequest,
        call: &Call,
    ) -> Result<pb::CreateInvitationResponse, ApiError> {
        let now = store::now();
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        v.request_id(&request.request_id);
        let fields = request.invitation.unwrap_or_default();
        v.email("invitation.email", &fields.email);
        let role = requested_role(fields.role.as_ref(), "invitation.role", &mut v);
        let expire_time = match fields.expire_time.as_ref() {
            None => now + DEFAULT_TTL,
            Some(time) => match convert::from_timestamp(time).map(store::truncate_time) {
                Some(time) if time > now && time <= now + MAX_TTL => time,
                _ => {
                    v.add(
                        "invitation.expire_time",
                        "must be in the future and at most 30 days away",
                    );
                    now
                }
            },
        };
        v.finish()?;
        let Some(role) = role else {
            return Err(ApiError::invalid_field("invitation.role", "is required"));
        };
        let org = request.organization_id.as_str();
        let action = Action::IdentityInvitationsWrite;
        let outcome = async {
            let resource = Resource::in_organization(org).of_kind(ResourceKind::Invitation);
            authorize(principal, action, &resource, "organization", org)?;
            if let RoleRef::Custom(role_id) = &role {
                match self.ctx.store.get_role(role_id).await {
                    Ok(found) if found.organization_id == org => {}
                    Ok(_) | Err(StoreError::NotFound(_)) => {
                        return Err(ApiError::not_found("role", role_id.clone()));
                    }
                    Err(other) => return Err(other.into()),
                }
            }
            let token =
                NewCredential::generate(CredentialKind::Invitation).map_err(ApiError::internal)?;
            let key = store::RequestKey::new(org, call.method, &request.request_id);
            let created = self
                .ctx
                .store
                .create_invitation_once(
                    &NewInvitation {
                        organization_id: org.to_owned(),
                        email: fields.email.clone(),
                        role: role.clone(),
                        token_hash: SecretHash::from_digest(*token.hash().as_bytes()),
                        expire_time,
                        inviter: convert::principal_ref(principal),
                    },
                    key.as_ref(),
                )
                .await
                .map_err(invitation_error(""))?;
            // The token is shown once, by the request that created the invitation: a repeat
            // of its `request_id` returns the invitation without it (the one generated for
            // the repeat was never stored).
            Ok(match created {
                store::Created::New(invitation) => (invitation, token.into_secret()),
                store::Created::Repeat(invitation) => (invitation, String::new()),
            })
        }
        .await;
        let audit_target = outcome.as_ref().map_or_else(
            |_| target("INVITATION", ""),
            |(invitation, _)| target("INVITATION", &invitation.id),
        );
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
        let (invitation, token) = outcome?;
        Ok(pb::CreateInvitationResponse {
            invitation: Some(convert::invitation_to_proto(&invitation)),
            invitation_token: token,
        })
    }

    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListInvitationsRequest,
        call: &Call,
    ) -> Result<pb::ListInvitationsResponse, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        let size = v.page_size(request.page_size);
        let status = status_filter(request.status, &mut v);
        v.finish()?;
        let org = request.organization_id.as_str();
        let query = format!("invitations/{org}/{status:?}");
        let after = page::decode::<IdCursor>(&request.page_token, &query)?;
        let resource = Resource::in_organization(org).of_kind(ResourceKind::Invitation);
        self.ctx
            .authorize_audited(
                principal,
                Action::IdentityInvitationsRead,
                &resource,
                "organization",
                org,
                call,
                target("INVITATION", ""),
            )
            .await?;
        let listed = self
            .ctx
            .store
            .list_invitations(org, status, &PageRequest { size, after })
            .await?;
        Ok(pb::ListInvitationsResponse {
            invitations: listed
                .items
                .iter()
                .map(convert::invitation_to_proto)
                .collect(),
            next_page_token: page::encode(listed.next, &query),
        })
    }

    async fn accept(
        &self,
        principal: &Principal,
        request: pb::AcceptInvitationRequest,
        call: &Call,
    ) -> Result<pb::AcceptInvitationResponse, ApiError> {
        let mut v = Violations::new();
        v.request_id(&request.request_id);
        let parsed = Credential::parse_as(CredentialKind::Invitation, &request.invitation_token);
        match &parsed {
            Ok(_) => {}
            Err(CredentialError::Empty) => v.add("invitation_token", "is required"),
            Err(error) => v.add("invitation_token", error.to_string()),
        }
        v.finish()?;
        let Ok(credential) = parsed else {
            return Err(ApiError::invalid_field(
                "invitation_token",
                "is not an invitation token",
            ));
        };
        if principal.kind() != PrincipalKind::User {
            return Err(ApiError::PermissionDenied {
                permission: "accepting an invitation (users only)".to_owned(),
            });
        }
        let hash = SecretHash::from_digest(*credential.hash().as_bytes());
        let invitation = self
            .ctx
            .store
            .find_invitation_by_token_hash(&hash)
            .await
            .map_err(invitation_error(""))?;
        let user = self.ctx.store.get_user(principal.id()).await?;
        if user.email.to_lowercase() != invitation.email.to_lowercase() {
            return Err(ApiError::PermissionDenied {
                permission: "accepting an invitation for another email".to_owned(),
            });
        }
        let (member, accepted) = self
            .ctx
            .store
            .accept_invitation(&invitation.id, &user.id)
            .await
            .map_err(invitation_error(&invitation.id))?;
        // The new member's own principal predates the membership: record directly.
        if let Err(error) = self
            .ctx
            .store
            .insert_audit_event(&store::NewAuditEvent {
                organization_id: member.organization_id.clone(),
                actor: convert::principal_ref(principal),
                action: "identity.invitations.accept".to_owned(),
                method: call.method.to_owned(),
                target: target("INVITATION", &accepted.id),
                event_time: store::now(),
                origin: call.origin.clone(),
                status_code: "OK".to_owned(),
                error_reason: String::new(),
            })
            .await
        {
            tracing::error!(%error, "cannot record an audit event");
        }
        self.ctx
            .publish(
                principal,
                &member.organization_id,
                "member",
                "added",
                ev::event::Payload::MemberAdded(ev::MemberAdded {
                    user_id: member.user_id.clone(),
                    role: Some(convert::role_ref_to_event(&member.role)),
                }),
            )
            .await;
        Ok(pb::AcceptInvitationResponse {
            member: Some(convert::member_to_proto(&member)),
            invitation: Some(convert::invitation_to_proto(&accepted)),
        })
    }

    async fn revoke(
        &self,
        principal: &Principal,
        request: pb::RevokeInvitationRequest,
        call: &Call,
    ) -> Result<pb::RevokeInvitationResponse, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.request_id(&request.request_id);
        v.finish()?;
        let id = request.id.as_str();
        let action = Action::IdentityInvitationsWrite;
        let invitation = self.load(principal, id, action, call).await?;
        let outcome = self
            .ctx
            .store
            .revoke_invitation(id)
            .await
            .map_err(invitation_error(id));
        self.ctx
            .audit(
                principal,
                &invitation.organization_id,
                action,
                call,
                target("INVITATION", id),
                outcome.as_ref().map(|_| ()),
            )
            .await;
        Ok(pb::RevokeInvitationResponse {
            invitation: Some(convert::invitation_to_proto(&outcome?)),
        })
    }
}

#[tonic::async_trait]
impl InvitationService for Invitations {
    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::CreateInvitationResponse>, Status> {
        let call = Call::of(&request, CREATE);
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.create(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        let call = Call::of(
            &request,
            "/slipway.identity.v1.InvitationService/ListInvitations",
        );
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.list(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn get_invitation(
        &self,
        request: Request<pb::GetInvitationRequest>,
    ) -> Result<Response<pb::GetInvitationResponse>, Status> {
        let call = Call::of(
            &request,
            "/slipway.identity.v1.InvitationService/GetInvitation",
        );
        let principal = principal(&request)?.clone();
        let request = request.into_inner();
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.finish()?;
        let invitation = self
            .load(
                &principal,
                &request.id,
                Action::IdentityInvitationsRead,
                &call,
            )
            .await?;
        Ok(Response::new(pb::GetInvitationResponse {
            invitation: Some(convert::invitation_to_proto(&invitation)),
        }))
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::AcceptInvitationResponse>, Status> {
        let call = Call::of(&request, ACCEPT);
        let principal = principal(&request)?.clone();
        let request = request.into_inner();
        let request_id = request.request_id.clone();
        let response = self
            .ctx
            .once(&principal, &call, &request_id, || {
                self.accept(&principal, request, &call)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<Response<pb::RevokeInvitationResponse>, Status> {
        let call = Call::of(&request, REVOKE);
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
