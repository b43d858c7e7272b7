//! Conversions between the wire principal (`slipway.identity.v1.Principal`, the answer of
//! `AuthService.Authenticate`) and the [`rbac::Principal`](crate::rbac::Principal) that
//! [`authorize`](crate::rbac::authorize) decides from.
//!
//! The wire principal names a custom role only by id (`RoleRef.custom_role_id`), while the
//! local evaluator needs the role's grants. Turning a wire principal into a local one
//! therefore takes a lookup of custom roles by id ([`principal_from_proto`]); callers fetch
//! the roles first ([`custom_role_ids`] says which) and convert them with
//! [`custom_role_from_proto`]. Going the other way ([`principal_to_proto`]) is what identity
//! answers Authenticate with: custom roles become their ids again.
//!
//! Conversions are strict: an unspecified or unknown enum value, a missing role or a wrong
//! number of memberships is an error rather than a guess, because a guessed role could
//! grant more than identity meant to.

use std::sync::Arc;
use std::time::SystemTime;

use slipway_proto::common::v1 as common_pb;
use slipway_proto::identity::v1 as pb;

use crate::rbac::{
    BuiltinRole, ClusterPermission, CustomRole, EnvironmentMode, Membership, ModePermissions,
    Principal, PrincipalKind, ProjectPermission, Role, RoleError,
};

/// Why a wire principal or role cannot be turned into a local one. Any of these means
/// identity answered something this version does not understand; the caller refuses the
/// credential rather than guess.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The response carried no principal at all.
    #[error("the response carries no principal")]
    MissingPrincipal,
    /// An enum field is unspecified or holds a value this build does not know.
    #[error("{field} has an unknown or unspecified value {value}")]
    BadEnum {
        /// The proto field, e.g. `kind` or `memberships.role.builtin`.
        field: &'static str,
        /// The raw value.
        value: i32,
    },
    /// A required id is empty.
    #[error("{0} is empty")]
    EmptyId(&'static str),
    /// A user's or API token's membership holds no role.
    #[error("the membership in organization {0} holds no role")]
    MissingRole(String),
    /// A principal kind with the wrong number of memberships (an API token or agent has
    /// exactly one).
    #[error("a {kind} principal needs exactly one membership, got {count}")]
    MembershipCount {
        /// The principal's kind.
        kind: PrincipalKind,
        /// How many memberships it came with.
        count: usize,
    },
    /// A membership names a custom role the lookup does not know.
    #[error("custom role {0} is not known")]
    UnknownCustomRole(String),
    /// The timestamp is outside what `SystemTime` can hold.
    #[error("expire_time is out of range")]
    BadTimestamp,
    /// A custom role's grants are ambiguous (duplicate project, cluster or mode).
    #[error(transparent)]
    Role(#[from] RoleError),
}

/// The local kind of a wire principal kind.
pub fn principal_kind_from_proto(kind: i32) -> Result<PrincipalKind, ConvertError> {
    match pb::PrincipalKind::try_from(kind) {
        Ok(pb::PrincipalKind::User) => Ok(PrincipalKind::User),
        Ok(pb::PrincipalKind::ApiToken) => Ok(PrincipalKind::ApiToken),
        Ok(pb::PrincipalKind::Agent) => Ok(PrincipalKind::Agent),
        Ok(pb::PrincipalKind::Service) => Ok(PrincipalKind::Service),
        Ok(pb::PrincipalKind::Unspecified) | Err(_) => Err(ConvertError::BadEnum {
            field: "kind",
            value: kind,
        }),
    }
}

/// The wire kind of a local principal kind.
pub fn principal_kind_to_proto(kind: PrincipalKind) -> pb::PrincipalKind {
    match kind {
        PrincipalKind::User => pb::PrincipalKind::User,
        PrincipalKind::ApiToken => pb::PrincipalKind::ApiToken,
        PrincipalKind::Agent => pb::PrincipalKind::Agent,
        PrincipalKind::Service => pb::PrincipalKind::Service,
    }
}

/// The local built-in role of a wire `BuiltinRole` value.
pub fn builtin_role_from_proto(role: i32) -> Result<BuiltinRole, ConvertError> {
    match pb::BuiltinRole::try_from(role) {
        Ok(pb::BuiltinRole::Owner) => Ok(BuiltinRole::Owner),
        Ok(pb::BuiltinRole::Admin) => Ok(BuiltinRole::Admin),
        Ok(pb::BuiltinRole::Devops) => Ok(BuiltinRole::Devops),
        Ok(pb::BuiltinRole::Billing) => Ok(BuiltinRole::Billing),
        Ok(pb::BuiltinRole::Viewer) => Ok(BuiltinRole::Viewer),
        Ok(pb::BuiltinRole::Unspecified) | Err(_) => Err(ConvertError::BadEnum {
            field: "role.builtin",
            value: role,
        }),
    }
}

/// The wire value of a local built-in role.
pub fn builtin_role_to_proto(role: BuiltinRole) -> pb::BuiltinRole {
    match role {
        BuiltinRole::Owner => pb::BuiltinRole::Owner,
        BuiltinRole::Admin => pb::BuiltinRole::Admin,
        BuiltinRole::Devops => pb::BuiltinRole::Devops,
        BuiltinRole::Billing => pb::BuiltinRole::Billing,
        BuiltinRole::Viewer => pb::BuiltinRole::Viewer,
    }
}

/// The wire reference to a local role: built-ins by value, custom roles by id.
pub fn role_ref_to_proto(role: &Role) -> pb::RoleRef {
    let role = match role {
        Role::Builtin(builtin) => {
            pb::role_ref::Role::Builtin(builtin_role_to_proto(*builtin) as i32)
        }
        Role::Custom(custom) => pb::role_ref::Role::CustomRoleId(custom.id().to_owned()),
    };
    pb::RoleRef { role: Some(role) }
}

/// The local role a wire reference names; custom roles come from `custom_roles`.
pub fn role_from_proto(
    role: &pb::RoleRef,
    custom_roles: &impl Fn(&str) -> Option<Arc<CustomRole>>,
) -> Result<Option<Role>, ConvertError> {
    match &role.role {
        None => Ok(None),
        Some(pb::role_ref::Role::Builtin(value)) => {
            Ok(Some(Role::Builtin(builtin_role_from_proto(*value)?)))
        }
        Some(pb::role_ref::Role::CustomRoleId(id)) => {
            if id.is_empty() {
                return Err(ConvertError::EmptyId("role.custom_role_id"));
            }
            custom_roles(id)
                .map(|custom| Some(Role::Custom(custom)))
                .ok_or_else(|| ConvertError::UnknownCustomRole(id.clone()))
        }
    }
}

fn mode_from_proto(mode: i32) -> Result<EnvironmentMode, ConvertError> {
    match common_pb::EnvironmentMode::try_from(mode) {
        Ok(common_pb::EnvironmentMode::Production) => Ok(EnvironmentMode::Production),
        Ok(common_pb::EnvironmentMode::Staging) => Ok(EnvironmentMode::Staging),
        Ok(common_pb::EnvironmentMode::Development) => Ok(EnvironmentMode::Development),
        Ok(common_pb::EnvironmentMode::Preview) => Ok(EnvironmentMode::Preview),
        Ok(common_pb::EnvironmentMode::Unspecified) | Err(_) => Err(ConvertError::BadEnum {
            field: "environment_mode",
            value: mode,
        }),
    }
}

fn project_permission_from_proto(permission: i32) -> Result<ProjectPermission, ConvertError> {
    match pb::ProjectPermission::try_from(permission) {
        Ok(pb::ProjectPermission::NoAccess) => Ok(ProjectPermission::NoAccess),
        Ok(pb::ProjectPermission::Viewer) => Ok(ProjectPermission::Viewer),
        Ok(pb::ProjectPermission::Deployer) => Ok(ProjectPermission::Deployer),
        Ok(pb::ProjectPermission::Manager) => Ok(ProjectPermission::Manager),
        Ok(pb::ProjectPermission::Unspecified) | Err(_) => Err(ConvertError::BadEnum {
            field: "permission",
            value: permission,
        }),
    }
}

fn cluster_permission_from_proto(permission: i32) -> Result<ClusterPermission, ConvertError> {
    match pb::ClusterPermission::try_from(permission) {
        // Unspecified is documented as "no access", not as an error.
        Ok(pb::ClusterPermission::Unspecified) => Ok(ClusterPermission::NoAccess),
        Ok(pb::ClusterPermission::Viewer) => Ok(ClusterPermission::Viewer),
        Ok(pb::ClusterPermission::EnvCreator) => Ok(ClusterPermission::EnvCreator),
        Ok(pb::ClusterPermission::Admin) => Ok(ClusterPermission::Admin),
        Err(_) => Err(ConvertError::BadEnum {
            field: "cluster_permission",
            value: permission,
        }),
    }
}

fn mode_permissions_from_proto(
    entries: &[pb::EnvironmentModePermission],
) -> Result<ModePermissions, ConvertError> {
    let entries = entries
        .iter()
        .map(|entry| {
            Ok((
                mode_from_proto(entry.environment_mode)?,
                project_permission_from_proto(entry.permission)?,
            ))
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    Ok(ModePermissions::from_entries(entries)?)
}

/// The local form of a custom role (`RoleService.GetRole`), with its grants sorted for
/// lookups.
pub fn custom_role_from_proto(role: &pb::Role) -> Result<CustomRole, ConvertError> {
    if role.id.is_empty() {
        return Err(ConvertError::EmptyId("role.id"));
    }
    let mut builder = CustomRole::builder(role.id.as_str())
        .default_project_permissions(mode_permissions_from_proto(
            &role.default_project_permissions,
        )?)
        .default_cluster_permission(cluster_permission_from_proto(
            role.default_cluster_permission,
        )?);
    for grant in &role.project_grants {
        builder = builder.project(
            grant.project_id.as_str(),
            mode_permissions_from_proto(&grant.permissions)?,
        );
    }
    for grant in &role.cluster_grants {
        builder = builder.cluster(
            grant.cluster_id.as_str(),
            cluster_permission_from_proto(grant.permission)?,
        );
    }
    Ok(builder.build()?)
}

/// The custom role ids a wire principal's memberships name, without repeats: what must be
/// fetched before [`principal_from_proto`] can succeed.
pub fn custom_role_ids(principal: &pb::Principal) -> Vec<String> {
    let mut ids: Vec<String> = principal
        .memberships
        .iter()
        .filter_map(|m| match m.role.as_ref().and_then(|r| r.role.as_ref()) {
            Some(pb::role_ref::Role::CustomRoleId(id)) => Some(id.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The local principal of an Authenticate answer. `custom_roles` supplies the grants of
/// each custom role named (see [`custom_role_ids`]).
pub fn principal_from_proto(
    principal: &pb::Principal,
    custom_roles: impl Fn(&str) -> Option<Arc<CustomRole>>,
) -> Result<Principal, ConvertError> {
    let kind = principal_kind_from_proto(principal.kind)?;
    if principal.id.is_empty() {
        return Err(ConvertError::EmptyId("id"));
    }
    let id = principal.id.as_str();
    let one_membership = || match principal.memberships.as_slice() {
        [only] => Ok(only),
        other => Err(ConvertError::MembershipCount {
            kind,
            count: other.len(),
        }),
    };
    let local = match kind {
        PrincipalKind::User => {
            let memberships = principal
                .memberships
                .iter()
                .map(|m| {
                    let role = membership_role(m, &custom_roles)?;
                    let membership = Membership::new(m.organization_id.as_str(), role);
                    Ok(if m.member_id.is_empty() {
                        membership
                    } else {
                        membership.with_member_id(m.member_id.as_str())
                    })
                })
                .collect::<Result<Vec<_>, ConvertError>>()?;
            Principal::user(id, memberships)
        }
        PrincipalKind::ApiToken => {
            let m = one_membership()?;
            let role = membership_role(m, &custom_roles)?;
            Principal::api_token(id, m.organization_id.as_str(), role)
        }
        PrincipalKind::Agent => {
            let m = one_membership()?;
            if m.organization_id.is_empty() {
                return Err(ConvertError::EmptyId("memberships.organization_id"));
            }
            Principal::agent(id, m.organization_id.as_str())
        }
        // Services act in every organization; any membership sent along means nothing.
        PrincipalKind::Service => Principal::service(id),
    };
    let local = local.with_display_name(principal.display_name.as_str());
    match principal.expire_time {
        None => Ok(local),
        Some(timestamp) => {
            let at = SystemTime::try_from(timestamp).map_err(|_| ConvertError::BadTimestamp)?;
            Ok(local.with_expire_time(at))
        }
    }
}

fn membership_role(
    membership: &pb::Membership,
    custom_roles: &impl Fn(&str) -> Option<Arc<CustomRole>>,
) -> Result<Role, ConvertError> {
    if membership.organization_id.is_empty() {
        return Err(ConvertError::EmptyId("memberships.organization_id"));
    }
    membership
        .role
        .as_ref()
        .map(|role| role_from_proto(role, custom_roles))
        .transpose()?
        .flatten()
        .ok_or_else(|| ConvertError::MissingRole(membership.organization_id.clone()))
}

/// The wire principal of a local one, as identity answers Authenticate. Organization names
/// are not part of the local principal and are left empty; identity fills them in from its
/// store when it has them.
pub fn principal_to_proto(principal: &Principal) -> pb::Principal {
    pb::Principal {
        kind: principal_kind_to_proto(principal.kind()) as i32,
        id: principal.id().to_owned(),
        display_name: principal.display_name().to_owned(),
        memberships: principal
            .memberships()
            .iter()
            .map(|m| pb::Membership {
                organization_id: m.organization_id().to_owned(),
                organization_name: String::new(),
                member_id: m.member_id().unwrap_or_default().to_owned(),
                role: m.role().map(role_ref_to_proto),
            })
            .collect(),
        expire_time: principal.expire_time().map(prost_types::Timestamp::from),
    }
}

/// Who did it, as events name it (`slipway.events.v1.Actor`): every service that publishes
/// a change on the EVENTS stream names its caller this way.
pub fn event_actor(principal: &Principal) -> slipway_proto::events::v1::Actor {
    use slipway_proto::events::v1::{Actor, ActorKind};
    let kind = match principal.kind() {
        PrincipalKind::User => ActorKind::User,
        PrincipalKind::ApiToken => ActorKind::ApiToken,
        PrincipalKind::Agent => ActorKind::Agent,
        PrincipalKind::Service => ActorKind::Service,
    };
    Actor {
        kind: kind.into(),
        id: principal.id().to_owned(),
        display_name: principal.display_name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    fn no_custom(_: &str) -> Option<Arc<CustomRole>> {
        None
    }

    fn builtin_ref(role: pb::BuiltinRole) -> Option<pb::RoleRef> {
        Some(pb::RoleRef {
            role: Some(pb::role_ref::Role::Builtin(role as i32)),
        })
    }

    fn custom_ref(id: &str) -> Option<pb::RoleRef> {
        Some(pb::RoleRef {
            role: Some(pb::role_ref::Role::CustomRoleId(id.to_owned())),
        })
    }

    fn wire_role() -> pb::Role {
        pb::Role {
            id: "role-1".into(),
            organization_id: "org-a".into(),
            name: "deployers".into(),
            default_project_permissions: vec![pb::EnvironmentModePermission {
                environment_mode: common_pb::EnvironmentMode::Development as i32,
                permission: pb::ProjectPermission::Manager as i32,
            }],
            project_grants: vec![pb::ProjectGrant {
                project_id: "p1".into(),
                permissions: vec![
                    pb::EnvironmentModePermission {
                        environment_mode: common_pb::EnvironmentMode::Production as i32,
                        permission: pb::ProjectPermission::Deployer as i32,
                    },
                    pb::EnvironmentModePermission {
                        environment_mode: common_pb::EnvironmentMode::Staging as i32,
                        permission: pb::ProjectPermission::Viewer as i32,
                    },
                ],
            }],
            default_cluster_permission: pb::ClusterPermission::Viewer as i32,
            cluster_grants: vec![pb::ClusterGrant {
                cluster_id: "c1".into(),
                permission: pb::ClusterPermission::Admin as i32,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn custom_role_grants_survive_conversion() {
        let role = custom_role_from_proto(&wire_role()).unwrap();
        assert_eq!(role.id(), "role-1");
        let p1 = role.project_permissions("p1");
        assert_eq!(
            p1.get(EnvironmentMode::Production),
            ProjectPermission::Deployer
        );
        assert_eq!(p1.get(EnvironmentMode::Staging), ProjectPermission::Viewer);
        assert_eq!(
            p1.get(EnvironmentMode::Development),
            ProjectPermission::NoAccess
        );
        let other = role.project_permissions("p2");
        assert_eq!(
            other.get(EnvironmentMode::Development),
            ProjectPermission::Manager
        );
        assert_eq!(
            other.get(EnvironmentMode::Production),
            ProjectPermission::NoAccess
        );
        assert_eq!(role.cluster_permission("c1"), ClusterPermission::Admin);
        assert_eq!(role.cluster_permission("c2"), ClusterPermission::Viewer);
    }

    #[test]
    fn ambiguous_or_unknown_role_data_is_refused() {
        let mut twice = wire_role();
        twice.project_grants.push(twice.project_grants[0].clone());
        assert_eq!(
            custom_role_from_proto(&twice),
            Err(ConvertError::Role(RoleError::DuplicateProject("p1".into())))
        );
        let mut unspecified = wire_role();
        unspecified.default_project_permissions[0].environment_mode = 0;
        assert!(matches!(
            custom_role_from_proto(&unspecified),
            Err(ConvertError::BadEnum { .. })
        ));
        let mut unknown = wire_role();
        unknown.cluster_grants[0].permission = 42;
        assert!(matches!(
            custom_role_from_proto(&unknown),
            Err(ConvertError::BadEnum { value: 42, .. })
        ));
    }

    #[test]
    fn a_user_with_builtin_and_custom_roles_round_trips() {
        let custom = Arc::new(custom_role_from_proto(&wire_role()).unwrap());
        let roles: HashMap<String, Arc<CustomRole>> =
            HashMap::from([("role-1".to_owned(), Arc::clone(&custom))]);
        let expire = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let wire = pb::Principal {
            kind: pb::PrincipalKind::User as i32,
            id: "user-1".into(),
            display_name: "ada@example.com".into(),
            memberships: vec![
                pb::Membership {
                    organization_id: "org-a".into(),
                    organization_name: String::new(),
                    member_id: "member-1".into(),
                    role: custom_ref("role-1"),
                },
                pb::Membership {
                    organization_id: "org-b".into(),
                    organization_name: String::new(),
                    member_id: "member-2".into(),
                    role: builtin_ref(pb::BuiltinRole::Viewer),
                },
            ],
            expire_time: Some(prost_types::Timestamp::from(expire)),
        };
        assert_eq!(custom_role_ids(&wire), vec!["role-1".to_owned()]);
        let local = principal_from_proto(&wire, |id| roles.get(id).cloned()).unwrap();
        assert_eq!(local.kind(), PrincipalKind::User);
        assert_eq!(local.display_name(), "ada@example.com");
        assert_eq!(local.expire_time(), Some(expire));
        let a = local.membership("org-a").unwrap();
        assert_eq!(a.member_id(), Some("member-1"));
        assert_eq!(a.role(), Some(&Role::Custom(custom)));
        assert_eq!(
            local.membership("org-b").unwrap().role(),
            Some(&Role::Builtin(BuiltinRole::Viewer))
        );
        assert_eq!(principal_to_proto(&local), wire);
    }

    #[test]
    fn every_kind_round_trips() {
        let locals = [
            Principal::api_token("tok-1", "org-a", BuiltinRole::Devops).with_display_name("ci"),
            Principal::agent("cluster-1", "org-a").with_display_name("prod-eu"),
            Principal::service("orchestrator").with_display_name("orchestrator"),
            Principal::user("user-2", []),
        ];
        for local in locals {
            let wire = principal_to_proto(&local);
            assert_eq!(principal_from_proto(&wire, no_custom).unwrap(), local);
        }
    }

    #[test]
    fn malformed_principals_are_refused() {
        let token = principal_to_proto(&Principal::api_token("t", "org-a", BuiltinRole::Admin));
        let mut unspecified = token.clone();
        unspecified.kind = 0;
        assert!(matches!(
            principal_from_proto(&unspecified, no_custom),
            Err(ConvertError::BadEnum { field: "kind", .. })
        ));
        let mut roleless = token.clone();
        roleless.memberships[0].role = None;
        assert_eq!(
            principal_from_proto(&roleless, no_custom),
            Err(ConvertError::MissingRole("org-a".into()))
        );
        let mut two = token.clone();
        two.memberships.push(two.memberships[0].clone());
        assert!(matches!(
            principal_from_proto(&two, no_custom),
            Err(ConvertError::MembershipCount { count: 2, .. })
        ));
        let mut unknown_custom = token.clone();
        unknown_custom.memberships[0].role = custom_ref("gone");
        assert_eq!(
            principal_from_proto(&unknown_custom, no_custom),
            Err(ConvertError::UnknownCustomRole("gone".into()))
        );
        let mut anonymous = token;
        anonymous.id.clear();
        assert_eq!(
            principal_from_proto(&anonymous, no_custom),
            Err(ConvertError::EmptyId("id"))
        );
    }
}
