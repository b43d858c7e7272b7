//! `slipway.identity.v1.RoleService`: custom roles with per-project, per-mode and
//! per-cluster grants. Grants are stored as one document ([`crate::grants::Grants`]) and
//! replaced whole; an update of one grant field merges it into the stored document.

use std::collections::{BTreeMap, HashSet};

use slipway_auth::principal;
use slipway_auth::rbac::{
    Action, MAX_CLUSTER_GRANTS, MAX_PROJECT_GRANTS, Principal, Resource, ResourceKind,
};
use slipway_proto::ApiError;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::events::v1 as ev;
use slipway_proto::identity::v1 as pb;
use slipway_proto::identity::v1::role_service_server::RoleService;
use tonic::{Request, Response, Status};

use super::{Call, Context, authorize, target};
use crate::convert;
use crate::grants::{ClusterGrant, Grants, ProjectGrant};
use crate::page;
use crate::store::{self, NameCursor, NewRole, PageRequest, RoleChanges, StoreError};
use crate::validation::{MAX_DESCRIPTION, Violations};

const CREATE: &str = "/slipway.identity.v1.RoleService/CreateRole";
const UPDATE: &str = "/slipway.identity.v1.RoleService/UpdateRole";
const DELETE: &str = "/slipway.identity.v1.RoleService/DeleteRole";

/// Names custom roles may not take: the built-in ones, so a role list is never ambiguous.
const RESERVED: [&str; 5] = ["owner", "admin", "devops", "billing", "viewer"];

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Roles {
    ctx: Context,
}

impl Roles {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

fn role_error(id: &str) -> impl Fn(StoreError) -> ApiError + '_ {
    move |error| match error {
        StoreError::NotFound(store::Resource::Organization) => {
            ApiError::not_found("organization", "")
        }
        StoreError::NotFound(_) => ApiError::not_found("role", id),
        StoreError::AlreadyExists(_) => ApiError::already_exists("role", ""),
        StoreError::EtagMismatch(_) => ApiError::stale_etag(format!("roles/{id}")),
        other => other.into(),
    }
}

fn mode_name(number: i32) -> Option<&'static str> {
    match EnvironmentMode::try_from(number).ok()? {
        EnvironmentMode::Unspecified => None,
        EnvironmentMode::Production => Some("PRODUCTION"),
        EnvironmentMode::Staging => Some("STAGING"),
        EnvironmentMode::Development => Some("DEVELOPMENT"),
        EnvironmentMode::Preview => Some("PREVIEW"),
    }
}

fn project_permission_name(number: i32) -> Option<&'static str> {
    match pb::ProjectPermission::try_from(number).ok()? {
        pb::ProjectPermission::Unspecified => None,
        pb::ProjectPermission::NoAccess => Some("NO_ACCESS"),
        pb::ProjectPermission::Viewer => Some("VIEWER"),
        pb::ProjectPermission::Deployer => Some("DEPLOYER"),
        pb::ProjectPermission::Manager => Some("MANAGER"),
    }
}

fn cluster_permission_name(number: i32) -> Option<&'static str> {
    match pb::ClusterPermission::try_from(number).ok()? {
        pb::ClusterPermission::Unspecified => Some("NO_ACCESS"),
        pb::ClusterPermission::Viewer => Some("VIEWER"),
        pb::ClusterPermission::EnvCreator => Some("ENV_CREATOR"),
        pb::ClusterPermission::Admin => Some("ADMIN"),
    }
}

/// Per-mode permissions, validated: known modes and permissions, each mode once.
fn modes(
    entries: &[pb::EnvironmentModePermission],
    field: &str,
    v: &mut Violations,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(mode) = mode_name(entry.environment_mode) else {
            v.add(format!("{at}.environment_mode"), "is required");
            continue;
        };
        let Some(permission) = project_permission_name(entry.permission) else {
            v.add(format!("{at}.permission"), "is required");
            continue;
        };
        if out.insert(mode.to_owned(), permission.to_owned()).is_some() {
            v.add(format!("{at}.environment_mode"), "is listed more than once");
        }
    }
    out
}

fn project_grants(
    grants: &[pb::ProjectGrant],
    field: &str,
    v: &mut Violations,
) -> Vec<ProjectGrant> {
    if grants.len() > MAX_PROJECT_GRANTS {
        v.add(
            field,
            format!("must hold at most {MAX_PROJECT_GRANTS} grants"),
        );
        return Vec::new();
    }
    let mut seen = HashSet::new();
    grants
        .iter()
        .enumerate()
        .map(|(i, grant)| {
            let at = format!("{field}[{i}]");
            v.required(&format!("{at}.project_id"), &grant.project_id);
            if !grant.project_id.is_empty() && !seen.insert(grant.project_id.as_str()) {
                v.add(format!("{at}.project_id"), "is granted more than once");
            }
            ProjectGrant {
                project_id: grant.project_id.clone(),
                permissions: modes(&grant.permissions, &format!("{at}.permissions"), v),
            }
        })
        .collect()
}

fn cluster_grants(
    grants: &[pb::ClusterGrant],
    field: &str,
    v: &mut Violations,
) -> Vec<ClusterGrant> {
    if grants.len() > MAX_CLUSTER_GRANTS {
        v.add(
            field,
            format!("must hold at most {MAX_CLUSTER_GRANTS} grants"),
        );
        return Vec::new();
    }
    let mut seen = HashSet::new();
    grants
        .iter()
        .enumerate()
        .map(|(i, grant)| {
            let at = format!("{field}[{i}]");
            v.required(&format!("{at}.cluster_id"), &grant.cluster_id);
            if !grant.cluster_id.is_empty() && !seen.insert(grant.cluster_id.as_str()) {
                v.add(format!("{at}.cluster_id"), "is granted more than once");
            }
            let permission = cluster_permission_name(grant.permission).unwrap_or_else(|| {
                v.add(
                    format!("{at}.permission"),
                    "is not a known cluster permission",
                );
                "NO_ACCESS"
            });
            ClusterGrant {
                cluster_id: grant.cluster_id.clone(),
                permission: permission.to_owned(),
            }
        })
        .collect()
}

fn default_cluster(number: i32, v: &mut Violations) -> Option<String> {
    match cluster_permission_name(number) {
        Some("NO_ACCESS") => None,
        Some(name) => Some(name.to_owned()),
        None => {
            v.add(
                "role.default_cluster_permission",
                "is not a known cluster permission",
            );
            None
        }
    }
}

fn role_name(name: &str, v: &mut Violations) {
    v.dns_label("role.name", name);
    if RESERVED.contains(&name) {
        v.add("role.name", "is the name of a built-in role");
    }
}

fn role_to_proto(role: &store::Role) -> Result<pb::Role, ApiError> {
    let grants = Grants::from_json(&role.grants).map_err(ApiError::internal)?;
    let modes = |entries: &BTreeMap<String, String>| {
        entries
            .iter()
            .map(|(mode, permission)| pb::EnvironmentModePermission {
                environment_mode: EnvironmentMode::from_str_name(&format!(
                    "ENVIRONMENT_MODE_{mode}"
                ))
                .map_or(0, i32::from),
                permission: pb::ProjectPermission::from_str_name(&format!(
                    "PROJECT_PERMISSION_{permission}"
                ))
                .map_or(0, i32::from),
            })
            .collect()
    };
    let cluster = |name: &str| {
        pb::ClusterPermission::from_str_name(&format!("CLUSTER_PERMISSION_{name}"))
            .map_or(0, i32::from)
    };
    Ok(pb::Role {
        id: role.id.clone(),
        organization_id: role.organization_id.clone(),
        name: role.name.clone(),
        description: role.description.clone(),
        default_project_permissions: modes(&grants.default_project_permissions),
        project_grants: grants
            .project_grants
            .iter()
            .map(|grant| pb::ProjectGrant {
                project_id: grant.project_id.clone(),
                permissions: modes(&grant.permissions),
            })
            .collect(),
        default_cluster_permission: grants
            .default_cluster_permission
            .as_deref()
            .map_or(0, cluster),
        cluster_grants: grants
            .cluster_grants
            .iter()
            .map(|grant| pb::ClusterGrant {
                cluster_id: grant.cluster_id.clone(),
                permission: cluster(&grant.permission),
            })
            .collect(),
        create_time: Some(convert::timestamp(role.create_time)),
        update_time: Some(convert::timestamp(role.update_time)),
        etag: role.etag.clone(),
    })
}

impl Roles {
    async fn load(
        &self,
        principal: &Principal,
        id: &str,
        action: Action,
        call: &Call,
    ) -> Result<store::Role, ApiError> {
        let role = self.ctx.store.get_role(id).await.map_err(role_error(id))?;
        let resource =
            Resource::in_organization(&role.organization_id).target(ResourceKind::Role, &role.id);
        self.ctx
            .authorize_audited(
                principal,
                action,
                &resource,
                "role",
                id,
                call,
                target("ROLE", id),
            )
            .await?;
        Ok(role)
    }

    /// Loads a role for a write; a refusal is recorded by [`Context::authorize_audited`].
    async fn load_for_write(
        &self,
        principal: &Principal,
        id: &str,
        call: &Call,
    ) -> Result<store::Role, ApiError> {
        self.load(principal, id, Action::IdentityRolesWrite, call)
            .await
    }

    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateRoleRequest,
        call: &Call,
    ) -> Result<pb::CreateRoleResponse, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        v.request_id(&request.request_id);
        let role = request.role.unwrap_or_default();
        role_name(&role.name, &mut v);
        v.max_chars("role.description", &role.description, MAX_DESCRIPTION);
        let grants = Grants {
            default_project_permissions: modes(
                &role.default_project_permissions,
                "role.default_project_permissions",
                &mut v,
            ),
            project_grants: project_grants(&role.project_grants, "role.project_grants", &mut v),
            default_cluster_permission: default_cluster(role.default_cluster_permission, &mut v),
            cluster_grants: cluster_grants(&role.cluster_grants, "role.cluster_grants", &mut v),
        };
        v.finish()?;
        let org = request.organization_id.as_str();
        let action = Action::IdentityRolesWrite;
        let outcome = async {
            let resource = Resource::in_organization(org).of_kind(ResourceKind::Role);
            authorize(principal, action, &resource, "organization", org)?;
            // A repeat of `request_id` returns the role the first request created.
            let key = store::RequestKey::new(org, call.method, &request.request_id);
            self.ctx
                .store
                .create_role_once(
                    &NewRole {
                        organization_id: org.to_owned(),
                        name: role.name.clone(),
                        description: role.description.clone(),
                        grants: grants.to_json(),
                    },
                    key.as_ref(),
                )
                .await
                .map(store::Created::into_inner)
                .map_err(|error| match error {
                    StoreError::AlreadyExists(_) => {
                        ApiError::already_exists("role", role.name.clone())
                    }
                    StoreError::NotFound(_) => ApiError::not_found("organization", org),
                    other => other.into(),
                })
        }
        .await;
        let audit_target = outcome
            .as_ref()
            .map_or_else(|_| target("ROLE", ""), |role| target("ROLE", &role.id));
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
        Ok(pb::CreateRoleResponse {
            role: Some(role_to_proto(&outcome?)?),
        })
    }

    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListRolesRequest,
        call: &Call,
    ) -> Result<pb::ListRolesResponse, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        let size = v.page_size(request.page_size);
        v.finish()?;
        let org = request.organization_id.as_str();
        let query = format!("roles/{org}");
        let after = page::decode::<NameCursor>(&request.page_token, &query)?;
        let resource = Resource::in_organization(org).of_kind(ResourceKind::Role);
        self.ctx
            .authorize_audited(
                principal,
                Action::IdentityRolesRead,
                &resource,
                "organization",
                org,
                call,
                target("ROLE", ""),
            )
            .await?;
        let listed = self
            .ctx
            .store
            .list_roles(org, &PageRequest { size, after })
            .await?;
        Ok(pb::ListRolesResponse {
            roles: listed
                .items
                .iter()
                .map(role_to_proto)
                .collect::<Result<_, _>>()?,
            next_page_token: page::encode(listed.next, &query),
        })
    }

    async fn update(
        &self,
        principal: &Principal,
        request: pb::UpdateRoleRequest,
        call: &Call,
    ) -> Result<pb::UpdateRoleResponse, ApiError> {
        let mut v = Violations::new();
        let role = request.role.unwrap_or_default();
        v.required("role.id", &role.id);
        let paths = request
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "is required");
        }
        let mut changes = RoleChanges::default();
        let mut grant_paths = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            match path.as_str() {
                "name" => {
                    role_name(&role.name, &mut v);
                    changes.name = Some(role.name.clone());
                }
                "description" => {
                    v.max_chars("role.description", &role.description, MAX_DESCRIPTION);
                    changes.description = Some(role.description.clone());
                }
                "default_project_permissions"
                | "project_grants"
                | "default_cluster_permission"
                | "cluster_grants" => {
                    grant_paths.push(path.as_str());
                }
                _ => v.add(
                    format!("update_mask.paths[{i}]"),
                    "is not a mutable field of a role",
                ),
            }
        }
        let new_defaults = modes(
            &role.default_project_permissions,
            "role.default_project_permissions",
            &mut v,
        );
        let new_projects = project_grants(&role.project_grants, "role.project_grants", &mut v);
        let new_default_cluster = default_cluster(role.default_cluster_permission, &mut v);
        let new_clusters = cluster_grants(&role.cluster_grants, "role.cluster_grants", &mut v);
        v.finish()?;
        let id = role.id.as_str();
        let current = self.load_for_write(principal, id, call).await?;
        let action = Action::IdentityRolesWrite;
        let outcome = async {
            if !grant_paths.is_empty() {
                let mut grants = Grants::from_json(&current.grants).map_err(ApiError::internal)?;
                for path in &grant_paths {
                    match *path {
                        "default_project_permissions" => {
                            grants.default_project_permissions = new_defaults.clone()
                        }
                        "project_grants" => grants.project_grants = new_projects.clone(),
                        "default_cluster_permission" => {
                            grants.default_cluster_permission = new_default_cluster.clone()
                        }
                        _ => grants.cluster_grants = new_clusters.clone(),
                    }
                }
                changes.grants = Some(grants.to_json());
            }
            let etag = (!role.etag.is_empty()).then_some(role.etag.as_str());
            self.ctx
                .store
                .update_role(id, etag, &changes)
                .await
                .map_err(role_error(id))
        }
        .await;
        self.ctx
            .audit(
                principal,
                &current.organization_id,
                action,
                call,
                target("ROLE", id),
                outcome.as_ref().map(|_| ()),
            )
            .await;
        let updated = outcome?;
        self.ctx
            .publish(
                principal,
                &updated.organization_id,
                "role",
                "updated",
                ev::event::Payload::RoleUpdated(ev::RoleUpdated {
                    role_id: updated.id.clone(),
                    name: updated.name.clone(),
                }),
            )
            .await;
        Ok(pb::UpdateRoleResponse {
            role: Some(role_to_proto(&updated)?),
        })
    }

    async fn delete(
        &self,
        principal: &Principal,
        request: pb::DeleteRoleRequest,
        call: &Call,
    ) -> Result<pb::DeleteRoleResponse, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.finish()?;
        let id = request.id.as_str();
        let current = self.load_for_write(principal, id, call).await?;
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        let outcome = self
            .ctx
            .store
            .delete_role(id, etag)
            .await
            .map_err(role_error(id));
        self.ctx
            .audit(
                principal,
                &current.organization_id,
                Action::IdentityRolesWrite,
                call,
                target("ROLE", id),
                outcome.as_ref().map(|_| ()),
            )
            .await;
        outcome?;
        self.ctx
            .publish(
                principal,
                &current.organization_id,
                "role",
                "deleted",
                ev::event::Payload::RoleDeleted(ev::RoleDeleted {
                    role_id: current.id.clone(),
                }),
            )
            .await;
        Ok(pb::DeleteRoleResponse {})
    }
}

#[tonic::async_trait]
impl RoleService for Roles {
    async fn create_role(
        &self,
        request: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::CreateRoleResponse>, Status> {
        let call = Call::of(&request, CREATE);
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.create(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn get_role(
        &self,
        request: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::GetRoleResponse>, Status> {
        let call = Call::of(&request, "/slipway.identity.v1.RoleService/GetRole");
        let principal = principal(&request)?.clone();
        let request = request.into_inner();
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.finish()?;
        let role = self
            .load(&principal, &request.id, Action::IdentityRolesRead, &call)
            .await?;
        Ok(Response::new(pb::GetRoleResponse {
            role: Some(role_to_proto(&role)?),
        }))
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let call = Call::of(&request, "/slipway.identity.v1.RoleService/ListRoles");
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.list(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn update_role(
        &self,
        request: Request<pb::UpdateRoleRequest>,
    ) -> Result<Response<pb::UpdateRoleResponse>, Status> {
        let call = Call::of(&request, UPDATE);
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.update(&principal, request.into_inner(), &call).await?,
        ))
    }

    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        let call = Call::of(&request, DELETE);
        let principal = principal(&request)?.clone();
        Ok(Response::new(
            self.delete(&principal, request.into_inner(), &call).await?,
        ))
    }
}
