//! Conversions between the store's domain values, the RBAC types of `slipway-auth` and the
//! protobuf messages. Kept in one place so that every RPC shows a resource the same way.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use slipway_auth::rbac;
use slipway_proto::identity::v1 as pb;

use crate::store;

/// A store time as a protobuf timestamp.
pub use slipway_api::timestamp;

/// A protobuf timestamp as a store time; `None` when it is out of range.
pub fn from_timestamp(time: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(time.nanos).ok()?;
    DateTime::from_timestamp(time.seconds, nanos)
}

/// A store time as the `SystemTime` RBAC principals carry.
pub fn system_time(time: DateTime<Utc>) -> SystemTime {
    SystemTime::from(time)
}

pub fn builtin_to_rbac(role: store::BuiltinRole) -> rbac::BuiltinRole {
    match role {
        store::BuiltinRole::Owner => rbac::BuiltinRole::Owner,
        store::BuiltinRole::Admin => rbac::BuiltinRole::Admin,
        store::BuiltinRole::Devops => rbac::BuiltinRole::Devops,
        store::BuiltinRole::Billing => rbac::BuiltinRole::Billing,
        store::BuiltinRole::Viewer => rbac::BuiltinRole::Viewer,
    }
}

pub fn builtin_from_rbac(role: rbac::BuiltinRole) -> store::BuiltinRole {
    match role {
        rbac::BuiltinRole::Owner => store::BuiltinRole::Owner,
        rbac::BuiltinRole::Admin => store::BuiltinRole::Admin,
        rbac::BuiltinRole::Devops => store::BuiltinRole::Devops,
        rbac::BuiltinRole::Billing => store::BuiltinRole::Billing,
        rbac::BuiltinRole::Viewer => store::BuiltinRole::Viewer,
    }
}

pub fn builtin_to_proto(role: store::BuiltinRole) -> pb::BuiltinRole {
    match role {
        store::BuiltinRole::Owner => pb::BuiltinRole::Owner,
        store::BuiltinRole::Admin => pb::BuiltinRole::Admin,
        store::BuiltinRole::Devops => pb::BuiltinRole::Devops,
        store::BuiltinRole::Billing => pb::BuiltinRole::Billing,
        store::BuiltinRole::Viewer => pb::BuiltinRole::Viewer,
    }
}

/// The store role for a proto built-in role number; `None` for UNSPECIFIED or unknown.
pub fn builtin_from_proto(number: i32) -> Option<store::BuiltinRole> {
    match pb::BuiltinRole::try_from(number).ok()? {
        pb::BuiltinRole::Unspecified => None,
        pb::BuiltinRole::Owner => Some(store::BuiltinRole::Owner),
        pb::BuiltinRole::Admin => Some(store::BuiltinRole::Admin),
        pb::BuiltinRole::Devops => Some(store::BuiltinRole::Devops),
        pb::BuiltinRole::Billing => Some(store::BuiltinRole::Billing),
        pb::BuiltinRole::Viewer => Some(store::BuiltinRole::Viewer),
    }
}

pub fn role_ref_to_proto(role: &store::RoleRef) -> pb::RoleRef {
    let role = match role {
        store::RoleRef::Builtin(builtin) => {
            pb::role_ref::Role::Builtin(builtin_to_proto(*builtin).into())
        }
        store::RoleRef::Custom(id) => pb::role_ref::Role::CustomRoleId(id.clone()),
    };
    pb::RoleRef { role: Some(role) }
}

/// The same role in the event payloads' mirror of `RoleRef`.
pub fn role_ref_to_event(role: &store::RoleRef) -> slipway_proto::events::v1::RoleRef {
    use slipway_proto::events::v1 as ev;
    let role = match role {
        // The event enum mirrors the identity one number for number.
        store::RoleRef::Builtin(builtin) => {
            ev::role_ref::Role::Builtin(i32::from(builtin_to_proto(*builtin)))
        }
        store::RoleRef::Custom(id) => ev::role_ref::Role::CustomRoleId(id.clone()),
    };
    ev::RoleRef { role: Some(role) }
}

pub fn principal_kind_to_proto(kind: store::PrincipalKind) -> pb::PrincipalKind {
    match kind {
        store::PrincipalKind::User => pb::PrincipalKind::User,
        store::PrincipalKind::ApiToken => pb::PrincipalKind::ApiToken,
        store::PrincipalKind::Agent => pb::PrincipalKind::Agent,
        store::PrincipalKind::Service => pb::PrincipalKind::Service,
    }
}

pub fn principal_kind_from_rbac(kind: rbac::PrincipalKind) -> store::PrincipalKind {
    match kind {
        rbac::PrincipalKind::User => store::PrincipalKind::User,
        rbac::PrincipalKind::ApiToken => store::PrincipalKind::ApiToken,
        rbac::PrincipalKind::Agent => store::PrincipalKind::Agent,
        rbac::PrincipalKind::Service => store::PrincipalKind::Service,
    }
}

/// How an authenticated principal is recorded on what it creates and in the audit log.
pub fn principal_ref(principal: &rbac::Principal) -> store::PrincipalRef {
    store::PrincipalRef {
        kind: principal_kind_from_rbac(principal.kind()),
        id: principal.id().to_owned(),
        display_name: principal.display_name().to_owned(),
    }
}

pub fn principal_ref_to_proto(principal: &store::PrincipalRef) -> pb::PrincipalRef {
    pb::PrincipalRef {
        kind: principal_kind_to_proto(principal.kind).into(),
        id: principal.id.clone(),
        display_name: principal.display_name.clone(),
    }
}

/// An API token's metadata as the API shows it: never the secret, which is not stored.
pub fn api_token_to_proto(token: &store::ApiToken) -> pb::ApiToken {
    pb::ApiToken {
        id: token.id.clone(),
        organization_id: token.organization_id.clone(),
        name: token.name.clone(),
        description: token.description.clone(),
        role: Some(role_ref_to_proto(&token.role)),
        expire_time: token.expire_time.map(timestamp),
        secret_hint: token.secret_hint.clone(),
        creator: Some(principal_ref_to_proto(&token.creator)),
        last_use_time: token.last_use_time.map(timestamp),
        create_time: Some(timestamp(token.create_time)),
    }
}

pub fn environment_mode_from_proto(number: i32) -> Option<rbac::EnvironmentMode> {
    use slipway_proto::common::v1::EnvironmentMode as Mode;
    match Mode::try_from(number).ok()? {
        Mode::Unspecified => None,
        Mode::Production => Some(rbac::EnvironmentMode::Production),
        Mode::Staging => Some(rbac::EnvironmentMode::Staging),
        Mode::Development => Some(rbac::EnvironmentMode::Development),
        Mode::Preview => Some(rbac::EnvironmentMode::Preview),
    }
}

pub fn resource_kind_from_proto(number: i32) -> Option<rbac::ResourceKind> {
    use pb::ResourceKind as K;
    use rbac::ResourceKind as R;
    Some(match K::try_from(number).ok()? {
        K::Unspecified => return None,
        K::Organization => R::Organization,
        K::Member => R::Member,
        K::Invitation => R::Invitation,
        K::Role => R::Role,
        K::ApiToken => R::ApiToken,
        K::AuditEvent => R::AuditEvent,
        K::Cluster => R::Cluster,
        K::Project => R::Project,
        K::DeploymentRule => R::DeploymentRule,
        K::Environment => R::Environment,
        K::Service => R::Service,
        K::Variable => R::Variable,
        K::Deployment => R::Deployment,
        K::Logs => R::Logs,
        K::PreviewEnvironment => R::PreviewEnvironment,
        K::Webhook => R::Webhook,
        K::Build => R::Build,
        K::Registry => R::Registry,
        K::GitCredential => R::GitCredential,
    })
}

/// A proto `Resource` borrowed as the RBAC one. Unknown enum numbers read as unset, which
/// the scope check then refuses where the action needs them.
pub fn resource_from_proto(resource: &pb::Resource) -> rbac::Resource<'_> {
    fn present(text: &str) -> Option<&str> {
        (!text.is_empty()).then_some(text)
    }
    rbac::Resource {
        kind: resource_kind_from_proto(resource.kind),
        id: present(&resource.id),
        organization_id: &resource.organization_id,
        project_id: present(&resource.project_id),
        environment_id: present(&resource.environment_id),
        environment_mode: environment_mode_from_proto(resource.environment_mode),
        cluster_id: present(&resource.cluster_id),
    }
}

pub fn organization_to_proto(org: &store::Organization) -> pb::Organization {
    pb::Organization {
        id: org.id.clone(),
        name: org.name.clone(),
        display_name: org.display_name.clone(),
        owner_user_id: org.owner_user_id.clone(),
        create_time: Some(timestamp(org.create_time)),
        update_time: Some(timestamp(org.update_time)),
        etag: org.etag.clone(),
    }
}

pub fn member_to_proto(member: &store::Member) -> pb::Member {
    pb::Member {
        id: member.id.clone(),
        organization_id: member.organization_id.clone(),
        user_id: member.user_id.clone(),
        email: member.email.clone(),
        display_name: member.display_name.clone(),
        role: Some(role_ref_to_proto(&member.role)),
        create_time: Some(timestamp(member.create_time)),
        update_time: Some(timestamp(member.update_time)),
        etag: member.etag.clone(),
    }
}

pub fn invitation_status_to_proto(status: store::InvitationStatus) -> pb::InvitationStatus {
    match status {
        store::InvitationStatus::Pending => pb::InvitationStatus::Pending,
        store::InvitationStatus::Accepted => pb::InvitationStatus::Accepted,
        store::InvitationStatus::Revoked => pb::InvitationStatus::Revoked,
        store::InvitationStatus::Expired => pb::InvitationStatus::Expired,
    }
}

/// An invitation as the API shows it: never its token, which is not stored.
pub fn invitation_to_proto(invitation: &store::Invitation) -> pb::Invitation {
    pb::Invitation {
        id: invitation.id.clone(),
        organization_id: invitation.organization_id.clone(),
        email: invitation.email.clone(),
        role: Some(role_ref_to_proto(&invitation.role)),
        status: invitation_status_to_proto(invitation.status).into(),
        inviter: Some(principal_ref_to_proto(&invitation.inviter)),
        expire_time: Some(timestamp(invitation.expire_time)),
        member_id: invitation.member_id.clone().unwrap_or_default(),
        // The API shows a close time for accepted and revoked invitations only.
        close_time: match invitation.status {
            store::InvitationStatus::Accepted | store::InvitationStatus::Revoked => {
                invitation.close_time.map(timestamp)
            }
            _ => None,
        },
        create_time: Some(timestamp(invitation.create_time)),
        update_time: Some(timestamp(invitation.update_time)),
    }
}

pub fn user_to_proto(user: &store::User) -> pb::User {
    pb::User {
        id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        oidc_issuer: user.oidc_issuer.clone(),
        oidc_subject: user.oidc_subject.clone(),
        create_time: Some(timestamp(user.create_time)),
        update_time: Some(timestamp(user.update_time)),
    }
}

/// The proto `Principal` of an API token: its one organization, by name, and its role.
pub fn token_principal(
    token: &store::ApiToken,
    organization: &store::Organization,
) -> pb::Principal {
    pb::Principal {
        kind: pb::PrincipalKind::ApiToken.into(),
        id: token.id.clone(),
        display_name: token.name.clone(),
        memberships: vec![pb::Membership {
            organization_id: organization.id.clone(),
            organization_name: organization.name.clone(),
            member_id: String::new(),
            role: Some(role_ref_to_proto(&token.role)),
        }],
        expire_time: token.expire_time.map(timestamp),
    }
}

/// The proto `Principal` of an OIDC user: its memberships, by organization name, with their
/// roles, and when its JWT expires.
pub fn user_principal(
    user: &store::User,
    memberships: &[store::UserMembership],
    expire_time: Option<SystemTime>,
) -> pb::Principal {
    pb::Principal {
        kind: pb::PrincipalKind::User.into(),
        id: user.id.clone(),
        display_name: if user.email.is_empty() {
            user.display_name.clone()
        } else {
            user.email.clone()
        },
        memberships: memberships
            .iter()
            .map(|membership| pb::Membership {
                organization_id: membership.organization_id.clone(),
                organization_name: membership.organization_name.clone(),
                member_id: membership.member_id.clone(),
                role: Some(role_ref_to_proto(&membership.role)),
            })
            .collect(),
        expire_time: expire_time.map(|time| timestamp(DateTime::<Utc>::from(time))),
    }
}
