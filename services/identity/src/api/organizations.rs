//! `slipway.identity.v1.OrganizationService`: create, get, list (the caller's only),
//! update (field mask and etag), delete (owner only), transfer ownership.
//!
//! Creating an organization is open to user principals only: the creator becomes its one
//! OWNER, and an OWNER must be a person (an API token may never hold OWNER, and a token
//! belongs to exactly one organization already). An API token caller is refused with
//! PERMISSION_DENIED, as the proto documents (`PRINCIPAL_KIND_NOT_ALLOWED`).

use slipway_auth::principal;
use slipway_auth::rbac::{Action, Principal, PrincipalKind, Resource, ResourceKind};
use slipway_proto::ApiError;
use slipway_proto::events::v1 as ev;
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::organization_service_server::OrganizationService;
use tonic::{Request, Response, Status};

use super::{Call, Context, authorize, target};
use crate::convert;
use crate::page;
use crate::store::{
    self, NameCursor, NewOrganization, OrganizationChanges, PageRequest, StoreError,
};
use crate::validation::{MAX_DISPLAY_NAME, Violations};

const CREATE: &str = "/slipway.identity.v1.OrganizationService/CreateOrganization";
const UPDATE: &str = "/slipway.identity.v1.OrganizationService/UpdateOrganization";
const DELETE: &str = "/slipway.identity.v1.OrganizationService/DeleteOrganization";
const TRANSFER: &str = "/slipway.identity.v1.OrganizationService/TransferOrganizationOwnership";

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Organizations {
    ctx: Context,
}

impl Organizations {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// Store errors about one organization, named in the answer.
fn org_error(id: &str) -> impl Fn(StoreError) -> ApiError + '_ {
    move |error| match error {
        StoreError::NotFound(store::Resource::Organization) => {
            ApiError::not_found("organization", id)
        }
        StoreError::NotFound(store::Resource::Member) => ApiError::not_found("member", ""),
        StoreError::EtagMismatch(_) => ApiError::stale_etag(format!("organizations/{id}")),
        StoreError::AlreadyExists(_) => ApiError::already_exists("organization", ""),
        other => other.into(),
    }
}

impl Organizations {
    /// Loads an organization and checks `action` on it; not a member is NOT_FOUND.
    async fn load(
        &self,
        principal: &Principal,
        id: &str,
        action: Action,
    ) -> Result<store::Organization, ApiError> {
        let resource = Resource::in_organization(id).target(ResourceKind::Organization, id);
        // Authorize first: a non-member learns nothing, not even whether the id exists.
        authorize(principal, action, &resource, "organization", id)?;
        self.ctx
            .store
            .get_organization(id)
            .await
            .map_err(org_error(id))
    }

    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateOrganizationRequest,
        call: &Call,
    ) -> Result<pb::CreateOrganizationResponse, ApiError> {
        let mut v = Violations::new();
        let fields = request.organization.unwrap_or_default();
        v.dns_label("organization.name", &fields.name);
        v.max_chars(
            "organization.display_name",
            &fields.display_name,
            MAX_DISPLAY_NAME,
        );
        v.request_id(&request.request_id);
        v.finish()?;
        if principal.kind() != PrincipalKind::User {
            return Err(ApiError::PermissionDenied {
                permission: "identity.organizations.create (users only)".to_owned(),
            });
        }
        // The key's scope is the caller: there is no organization yet.
        let key = store::RequestKey::new(principal.id(), call.method, &request.request_id);
        let created = self
            .ctx
            .store
            .create_organization_once(
                &NewOrganization {
                    name: fields.name.clone(),
                    display_name: fields.display_name.clone(),
                },
                principal.id(),
                key.as_ref(),
            )
            .await
            .map_err(|error| match error {
                StoreError::AlreadyExists(_) => {
                    ApiError::already_exists("organization", fields.name.clone())
                }
                other => other.into(),
            })?;
        // A repeat of `request_id` returns the organization the first request created, and
        // records or announces nothing more.
        let org = match created {
            store::Created::New(org) => org,
            store::Created::Repeat(org) => {
                return Ok(pb::CreateOrganizationResponse {
                    organization: Some(convert::organization_to_proto(&org)),
                });
            }
        };
        // The caller's principal predates its membership, so the audit record is written
        // directly rather than through Context::audit's membership check.
        if let Err(error) = self
            .ctx
            .store
            .insert_audit_event(&store::NewAuditEvent {
                organization_id: org.id.clone(),
                actor: convert::principal_ref(principal),
                action: "identity.organizations.create".to_owned(),
                method: call.method.to_owned(),
                target: target("ORGANIZATION", &org.id),
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
                &org.id,
                "organization",
                "created",
                ev::event::Payload::OrganizationCreated(ev::OrganizationCreated {
                    name: org.name.clone(),
                }),
            )
            .await;
        Ok(pb::CreateOrganizationResponse {
            organization: Some(convert::organization_to_proto(&org)),
        })
    }

    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListOrganizationsRequest,
    ) -> Result<pb::ListOrganizationsResponse, ApiError> {
        let mut v = Violations::new();
        let size = v.page_size(request.page_size);
        v.finish()?;
        let query = format!("organizations/{}/{}", principal.kind(), principal.id());
        let after = page::decode::<NameCursor>(&request.page_token, &query)?;
        let member = match principal.kind() {
            PrincipalKind::User => Some(principal.id()),
            PrincipalKind::Service => None,
            // A token or an agent acts in exactly the organizations it carries.
            PrincipalKind::ApiToken | PrincipalKind::Agent => {
                let mut organizations = Vec::new();
                if after.is_none() {
                    for membership in principal.memberships() {
                        match self
                            .ctx
                            .store
                            .get_organization(membership.organization_id())
                            .await
                        {
                            Ok(org) => organizations.push(convert::organization_to_proto(&org)),
                            Err(StoreError::NotFound(_)) => {}
                            Err(other) => return Err(other.into()),
                        }
                    }
                }
                return Ok(pb::ListOrganizationsResponse {
                    organizations,
                    next_page_token: String::new(),
                });
            }
        };
        let listed = self
            .ctx
            .store
            .list_organizations(member, &PageRequest { size, after })
            .await?;
        Ok(pb::ListOrganizationsResponse {
            organizations: listed
                .items
                .iter()
                .map(convert::organization_to_proto)
                .collect(),
            next_page_token: page::encode(listed.next, &query),
        })
    }

    async fn update(
        &self,
        principal: &Principal,
        request: pb::UpdateOrganizationRequest,
        call: &Call,
    ) -> Result<pb::UpdateOrganizationResponse, ApiError> {
        let mut v = Violations::new();
        let fields = request.organization.unwrap_or_default();
        v.required("organization.id", &fields.id);
        let paths = request
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        let mut changes = OrganizationChanges::default();
        if paths.is_empty() {
            v.add("update_mask", "is required: name, display_name");
        }
        for (i, path) in paths.iter().enumerate() {
            match path.as_str() {
                "name" => {
                    v.dns_label("organization.name", &fields.name);
                    changes.name = Some(fields.name.clone());
                }
                "display_name" => {
                    v.max_chars(
                        "organization.display_name",
                        &fields.display_name,
                        MAX_DISPLAY_NAME,
                    );
                    changes.display_name = Some(fields.display_name.clone());
                }
                _ => v.add(
                    format!("update_mask.paths[{i}]"),
                    "is not a mutable field: name, display_name",
                ),
            }
        }
        v.finish()?;
        let id = fields.id.as_str();
        let action = Action::IdentityOrganizationsUpdate;
        let outcome = async {
            self.load(principal, id, action).await?;
            let etag = (!fields.etag.is_empty()).then_some(fields.etag.as_str());
            self.ctx
                .store
                .update_organization(id, etag, &changes)
                .await
                .map_err(org_error(id))
        }
        .await;
        self.ctx
            .audit(
                principal,
                id,
                action,
                call,
                target("ORGANIZATION", id),
                outcome.as_ref().map(|_| ()),
            )
            .await;
        let org = outcome?;
        self.ctx
            .publish(
                principal,
                id,
                "organization",
                "updated",
                ev::event::Payload::OrganizationUpdated(ev::OrganizationUpdated {
                    name: org.name.clone(),
                    update_mask: Some(prost_types::FieldMask { paths }),
                }),
            )
            .await;
        Ok(pb::UpdateOrganizationResponse {
            organization: Some(convert::organization_to_proto(&org)),
        })
    }

    async fn delete(
        &self,
        principal: &Principal,
        request: pb::DeleteOrganizationRequest,
        call: &Call,
    ) -> Result<pb::DeleteOrganizationResponse, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.finish()?;
        let id = request.id.as_str();
        let action = Action::IdentityOrganizationsDelete;
        let outcome = async {
            let org = self.load(principal, id, action).await?;
            let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
            self.ctx
                .store
                .delete_organization(id, etag)
                .await
                .map_err(org_error(id))?;
            Ok::<_, ApiError>(org)
        }
        .await;
        // The audit log outlives the organization for its retention period.
        self.ctx
            .audit(
                principal,
                id,
                action,
                call,
                target("ORGANIZATION", id),
                outcome.as_ref().map(|_| ()),
            )
            .await;
        let org = outcome?;
        self.ctx
            .publish(
                principal,
                id,
                "organization",
                "deleted",
                ev::event::Payload::OrganizationDeleted(ev::OrganizationDeleted { name: org.name }),
            )
            .await;
        Ok(pb::DeleteOrganizationResponse {})
    }

    async fn transfer(
        &self,
        principal: &Principal,
        request: pb::TransferOrganizationOwnershipRequest,
        call: &Call,
    ) -> Result<pb::TransferOrganizationOwnershipResponse, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.required("new_owner_member_id", &request.new_owner_member_id);
        v.request_id(&request.request_id);
        v.finish()?;
        let id = request.id.as_str();
        let action = Action::IdentityOrganizationsTransferOwnership;
        let outcome = async {
            self.load(principal, id, action).await?;
            // A member of another organization is NOT_FOUND, like a missing one.
            let previous_role = match self
                .ctx
                .store
                .get_member(&request.new_owner_member_id)
                .await
            {
                Ok(member) if member.organization_id == id => member.role,
                Ok(_) | Err(StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found(
                        "member",
                        request.new_owner_member_id.clone(),
                    ));
                }
                Err(other) => return Err(other.into()),
            };
            let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
            self.ctx
                .store
                .transfer_ownership(id, &request.new_owner_member_id, etag)
                .await
                .map(|transfer| (transfer, previous_role))
                .map_err(|error| match error {
                    StoreError::FailedPrecondition(store::Precondition::AlreadyOwner) => {
                        ApiError::invalid_field("new_owner_member_id", "is already the owner")
                    }
                    other => org_error(id)(other),
                })
        }
        .await;
        self.ctx
            .audit(
                principal,
                id,
                action,
                call,
                target("ORGANIZATION", id),
                outcome.as_ref().map(|_| ()),
            )
            .await;
        let (transfer, new_owner_previous_role) = outcome?;
        // Both members changed role; consumers drop what they cached for either user.
        let previous = [
            store::RoleRef::Builtin(store::BuiltinRole::Owner),
            new_owner_previous_role,
        ];
        for (member, previous_role) in [&transfer.previous_owner, &transfer.new_owner]
            .into_iter()
            .zip(previous)
        {
            self.ctx
                .publish(
                    principal,
                    id,
                    "member",
                    "role_changed",
                    ev::event::Payload::MemberRoleChanged(ev::MemberRoleChanged {
                        user_id: member.user_id.clone(),
                        previous_role: Some(convert::role_ref_to_event(&previous_role)),
                        role: Some(convert::role_ref_to_event(&member.role)),
                    }),
                )
                .await;
        }
        Ok(pb::TransferOrganizationOwnershipResponse {
            organization: Some(convert::organization_to_proto(&transfer.organization)),
            previous_owner: Some(convert::member_to_proto(&transfer.previous_owner)),
            new_owner: Some(convert::member_to_proto(&transfer.new_owner)),
        })
    }
}

#[tonic::async_trait]
impl OrganizationService for Organizations {
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::CreateOrganizationResponse>, Status> {
        let call = Call::of(&request, CREATE);
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.create(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::GetOrganizationResponse>, Status> {
        let principal = principal(&request)?.clone();
        let request = request.into_inner();
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.finish()?;
        let org = self
            .load(&principal, &request.id, Action::IdentityOrganizationsRead)
            .await?;
        Ok(Response::new(pb::GetOrganizationResponse {
            organization: Some(convert::organization_to_proto(&org)),
        }))
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.list(&principal, request.into_inner()).await?,
        ))
    }

    async fn update_organization(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> Result<Response<pb::UpdateOrganizationResponse>, Status> {
        let call = Call::of(&request, UPDATE);
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.update(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn delete_organization(
        &self,
        request: Request<pb::DeleteOrganizationRequest>,
    ) -> Result<Response<pb::DeleteOrganizationResponse>, Status> {
        let call = Call::of(&request, DELETE);
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.delete(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn transfer_organization_ownership(
        &self,
        request: Request<pb::TransferOrganizationOwnershipRequest>,
    ) -> Result<Response<pb::TransferOrganizationOwnershipResponse>, Status> {
        let call = Call::of(&request, TRANSFER);
        let principal = principal(&request)?.clone();
        let request = request.into_inner();
        let request_id = request.request_id.clone();
        let response = self
            .ctx
            .once(&principal, &call, &request_id, || {
                self.transfer(&principal, request, &call)
            })
            .await?;
        Ok(Response::new(response))
    }
}
