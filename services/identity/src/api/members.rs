//! `slipway.identity.v1.MemberService`: list, get, change role, remove. Members join
//! through invitations; the owner changes only through a transfer of ownership (the store
//! refuses anything else with OWNER_IMMUTABLE).

use slipway_auth::principal;
use slipway_auth::rbac::{Action, Principal, Resource, ResourceKind};
use slipway_proto::ApiError;
use slipway_proto::events::v1 as ev;
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::member_service_server::MemberService;
use slipway_proto::identity::v1::role_ref;
use tonic::{Request, Response, Status};

use super::api_tokens::requested_role;
use super::{Call, Context, target};
use crate::convert;
use crate::page;
use crate::store::{self, MemberCursor, PageRequest, RoleRef, StoreError};
use crate::validation::Violations;

const UPDATE_ROLE: &str = "/slipway.identity.v1.MemberService/UpdateMemberRole";
const REMOVE: &str = "/slipway.identity.v1.MemberService/RemoveMember";

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Members {
    ctx: Context,
}

impl Members {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// Store errors about member `id`.
fn member_error(id: &str) -> impl Fn(StoreError) -> ApiError + '_ {
    move |error| match error {
        StoreError::NotFound(store::Resource::Role) => ApiError::not_found("role", ""),
        StoreError::NotFound(_) => ApiError::not_found("member", id),
        StoreError::EtagMismatch(_) => ApiError::stale_etag(format!("members/{id}")),
        other => other.into(),
    }
}

/// The role filter of a listing: any role, OWNER included.
fn role_filter(role: Option<&pb::RoleRef>, v: &mut Violations) -> Option<RoleRef> {
    match role?.role.as_ref()? {
        role_ref::Role::Builtin(number) => {
            let parsed = convert::builtin_from_proto(*number).map(RoleRef::Builtin);
            if parsed.is_none() {
                v.add("role.builtin", "is not a known built-in role");
            }
            parsed
        }
        role_ref::Role::CustomRoleId(id) if id.is_empty() => {
            v.add("role.custom_role_id", "must not be empty");
            None
        }
        role_ref::Role::CustomRoleId(id) => Some(RoleRef::Custom(id.clone())),
    }
}

impl Members {
    /// Loads a member and checks `action` on it; another organization's is NOT_FOUND.
    async fn load(
        &self,
        principal: &Principal,
        id: &str,
        action: Action,
        call: &Call,
    ) -> Result<store::Member, ApiError> {
        let member = self
            .ctx
            .store
            .get_member(id)
            .await
            .map_err(member_error(id))?;
        let resource = Resource::in_organization(&member.organization_id)
            .target(ResourceKind::Member, &member.id);
        self.ctx
            .authorize_audited(
                principal,
                action,
                &resource,
                "member",
                id,
                call,
                target("MEMBER", id),
            )
            .await?;
        Ok(member)
    }

    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListMembersRequest,
        call: &Call,
    ) -> Result<pb::ListMembersResponse, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        let size = v.page_size(request.page_size);
        let role = role_filter(request.role.as_ref(), &mut v);
        v.finish()?;
        let org = request.organization_id.as_str();
        let query = format!("members/{org}/{role:?}");
        let after = page::decode::<MemberCursor>(&request.page_token, &query)?;
        let resource = Resource::in_organization(org).of_kind(ResourceKind::Member);
        self.ctx
            .authorize_audited(
                principal,
                Action::IdentityMembersRead,
                &resource,
                "organization",
                org,
                call,
                target("MEMBER", ""),
            )
            .await?;
        let listed = self
            .ctx
            .store
            .list_members(org, role.as_ref(), &PageRequest { size, after })
            .await?;
        Ok(pb::ListMembersResponse {
            members: listed.items.iter().map(convert::member_to_proto).collect(),
            next_page_token: page::encode(listed.next, &query),
        })
    }

    async fn update_role(
        &self,
        principal: &Principal,
        request: pb::UpdateMemberRoleRequest,
        call: &Call,
    ) -> Result<pb::UpdateMemberRoleResponse, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.request_id(&request.request_id);
        let role = requested_role(request.role.as_ref(), "role", &mut v);
        v.finish()?;
        let Some(role) = role else {
            return Err(ApiError::invalid_field("role", "is required"));
        };
        let id = request.id.as_str();
        let action = Action::IdentityMembersUpdateRole;
        let member = self.load(principal, id, action, call).await?;
        let org = member.organization_id.clone();
        let outcome = async {
            if let RoleRef::Custom(role_id) = &role {
                match self.ctx.store.get_role(role_id).await {
                    Ok(found) if found.organization_id == org => {}
                    Ok(_) | Err(StoreError::NotFound(_)) => {
                        return Err(ApiError::not_found("role", role_id.clone()));
                    }
                    Err(other) => return Err(other.into()),
                }
            }
            let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
            self.ctx
                .store
                .update_member_role(id, &role, etag)
                .await
                .map_err(member_error(id))
        }
        .await;
        self.ctx
            .audit(
                principal,
                &org,
                action,
                call,
                target("MEMBER", id),
                outcome.as_ref().map(|_| ()),
            )
            .await;
        let updated = outcome?;
        self.ctx
            .publish(
                principal,
                &org,
                "member",
                "role_changed",
                ev::event::Payload::MemberRoleChanged(ev::MemberRoleChanged {
                    user_id: updated.user_id.clone(),
                    previous_role: Some(convert::role_ref_to_event(&member.role)),
                    role: Some(convert::role_ref_to_event(&updated.role)),
                }),
            )
            .await;
        Ok(pb::UpdateMemberRoleResponse {
            member: Some(convert::member_to_proto(&updated)),
        })
    }

    async fn remove(
        &self,
        principal: &Principal,
        request: pb::RemoveMemberRequest,
        call: &Call,
    ) -> Result<pb::RemoveMemberResponse, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.finish()?;
        let id = request.id.as_str();
        let action = Action::IdentityMembersRemove;
        let member = self.load(principal, id, action, call).await?;
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        let outcome = self
            .ctx
            .store
            .remove_member(id, etag)
            .await
            .map_err(member_error(id));
        self.ctx
            .audit(
                principal,
                &member.organization_id,
                action,
                call,
                target("MEMBER", id),
                outcome.as_ref().map(|_| ()),
            )
            .await;
        outcome?;
        self.ctx
            .publish(
                principal,
                &member.organization_id,
                "member",
                "removed",
                ev::event::Payload::MemberRemoved(ev::MemberRemoved {
                    user_id: member.user_id.clone(),
                }),
            )
            .await;
        Ok(pb::RemoveMemberResponse {})
    }
}

#[tonic::async_trait]
impl MemberService for Members {
    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let call = Call::of(&request, "/slipway.identity.v1.MemberService/ListMembers");
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.list(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn get_member(
        &self,
        request: Request<pb::GetMemberRequest>,
    ) -> Result<Response<pb::GetMemberResponse>, Status> {
        let call = Call::of(&request, "/slipway.identity.v1.MemberService/GetMember");
        let principal = principal(&request)?.clone();
        let request = request.into_inner();
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.finish()?;
        let member = self
            .load(&principal, &request.id, Action::IdentityMembersRead, &call)
            .await?;
        Ok(Response::new(pb::GetMemberResponse {
            member: Some(convert::member_to_proto(&member)),
        }))
    }

    async fn update_member_role(
        &self,
        request: Request<pb::UpdateMemberRoleRequest>,
    ) -> Result<Response<pb::UpdateMemberRoleResponse>, Status> {
        let call = Call::of(&request, UPDATE_ROLE);
        let principal = principal(&request)?.clone();
        let request = request.into_inner();
        let request_id = request.request_id.clone();
        let response = self
            .ctx
            .once(&principal, &call, &request_id, || {
                self.update_role(&principal, request, &call)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let call = Call::of(&request, REMOVE);
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.remove(&principal, request.into_inner(), &call).await?,
        ))
    }
}
