//! The rules around the matrix: acting on itself, agents, services, expiry, scope
//! validation, mode-less checks, and how a denial is answered and explained.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "fixtures outside #[test] functions panic to report the unexpected, as tests do"
)]

mod common;

use std::time::{Duration, SystemTime};

use common::web_team;
use slipway_auth::rbac::{
    Action, AllowReason, Answer, BuiltinRole, CustomRole, Decision, Denial, DenyReason,
    EnvironmentMode, Membership, ModePermissions, Principal, PrincipalKind, ProjectPermission,
    Resource, ResourceKind, ScopeError, ScopeField, authorize, authorize_at,
};

const ORG: &str = "org-1";

fn denial(decision: Decision) -> Denial {
    match decision {
        Decision::Deny(denial) => denial,
        Decision::Allow(reason) => panic!("allowed: {reason:?}"),
    }
}

fn allowed(decision: Decision) -> AllowReason {
    decision
        .into_result()
        .unwrap_or_else(|d| panic!("denied: {d}"))
}

fn member(role: BuiltinRole) -> Principal {
    Principal::user(
        "user-1",
        [Membership::new(ORG, role).with_member_id("member-1")],
    )
}

#[test]
fn a_member_may_leave_but_not_remove_others() {
    let viewer = member(BuiltinRole::Viewer);
    let own = Resource::in_organization(ORG).target(ResourceKind::Member, "member-1");
    let other = Resource::in_organization(ORG).target(ResourceKind::Member, "member-2");
    assert_eq!(
        allowed(authorize(&viewer, Action::IdentityMembersRemove, &own)),
        AllowReason::OnItself
    );
    assert_eq!(
        denial(authorize(&viewer, Action::IdentityMembersRemove, &other)).answer(),
        Answer::PermissionDenied
    );
    // Acting on itself covers leaving only, not changing its own role.
    assert!(!authorize(&viewer, Action::IdentityMembersUpdateRole, &own).is_allowed());
    // An ADMIN removing itself is allowed by its role.
    let admin = member(BuiltinRole::Admin);
    assert_eq!(
        allowed(authorize(&admin, Action::IdentityMembersRemove, &own)),
        AllowReason::RoleGrants
    );
}

#[test]
fn a_token_may_read_and_revoke_itself_only() {
    let token = Principal::api_token("token-1", ORG, BuiltinRole::Viewer);
    let itself = Resource::in_organization(ORG).target(ResourceKind::ApiToken, "token-1");
    let another = Resource::in_organization(ORG).target(ResourceKind::ApiToken, "token-2");
    let list = Resource::in_organization(ORG).of_kind(ResourceKind::ApiToken);
    for action in [
        Action::IdentityApiTokensRead,
        Action::IdentityApiTokensWrite,
    ] {
        assert_eq!(
            allowed(authorize(&token, action, &itself)),
            AllowReason::OnItself
        );
        assert!(
            !authorize(&token, action, &another).is_allowed(),
            "{action}"
        );
        assert!(!authorize(&token, action, &list).is_allowed(), "{action}");
    }
    // A token id is not a member id: a token is not a member leaving.
    let as_member = Resource::in_organization(ORG).target(ResourceKind::Member, "token-1");
    assert!(!authorize(&token, Action::IdentityMembersRemove, &as_member).is_allowed());
    // A user whose member id happens to equal a token id does not own that token.
    let user = Principal::user(
        "u",
        [Membership::new(ORG, BuiltinRole::Viewer).with_member_id("token-1")],
    );
    assert!(!authorize(&user, Action::IdentityApiTokensWrite, &itself).is_allowed());
}

#[test]
fn agents_connect_for_their_own_cluster_and_do_nothing_else() {
    let agent = Principal::agent("cluster-1", ORG);
    let own = Resource::in_organization(ORG).on_cluster("cluster-1");
    let other = Resource::in_organization(ORG).on_cluster("cluster-2");
    assert_eq!(
        allowed(authorize(&agent, Action::DeployAgentsConnect, &own)),
        AllowReason::OnItself
    );
    assert_eq!(
        denial(authorize(&agent, Action::DeployAgentsConnect, &other)).answer(),
        Answer::PermissionDenied
    );
    for &action in Action::ALL {
        if action == Action::DeployAgentsConnect {
            continue;
        }
        let resource = Resource::in_organization(ORG)
            .in_project("p")
            .in_environment("e", EnvironmentMode::Preview)
            .on_cluster("cluster-1");
        let denial = denial(authorize(&agent, action, &resource));
        assert_eq!(
            denial.reason(),
            DenyReason::PrincipalKindNotAllowed,
            "{action}"
        );
        assert_eq!(denial.error_reason(), Some("PRINCIPAL_KIND_NOT_ALLOWED"));
    }
    // No user, whatever its role, connects as an agent.
    let owner = member(BuiltinRole::Owner);
    assert_eq!(
        denial(authorize(&owner, Action::DeployAgentsConnect, &own)).reason(),
        DenyReason::PrincipalKindNotAllowed
    );
}

#[test]
fn services_hold_everything_but_connecting_in_any_organization() {
    let service = Principal::service("orchestrator");
    for &action in Action::ALL {
        let resource = Resource::in_organization("any-org")
            .in_project("p")
            .in_environment("e", EnvironmentMode::Preview)
            .on_cluster("c");
        let decision = authorize(&service, action, &resource);
        if action == Action::DeployAgentsConnect {
            assert_eq!(
                denial(decision).reason(),
                DenyReason::PrincipalKindNotAllowed
            );
        } else {
            assert_eq!(allowed(decision), AllowReason::ControlPlane, "{action}");
        }
    }
    // Only services resolve secrets.
    let resolve = Resource::in_organization(ORG)
        .in_project("p")
        .in_environment("e", EnvironmentMode::Production);
    let owner = member(BuiltinRole::Owner);
    let denied = denial(authorize(
        &owner,
        Action::CatalogEnvironmentsResolve,
        &resolve,
    ));
    assert_eq!(denied.reason(), DenyReason::PrincipalKindNotAllowed);
    assert_eq!(
        denied.to_string(),
        "catalog.environments.resolve is not open to user principals"
    );
}

#[test]
fn an_expired_credential_is_unauthenticated() {
    let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let principal = member(BuiltinRole::Owner).with_expire_time(expiry);
    let org = Resource::in_organization(ORG);
    let before = expiry - Duration::from_secs(1);
    assert!(authorize_at(&principal, Action::IdentityOrganizationsRead, &org, before).is_allowed());
    let denied = denial(authorize_at(
        &principal,
        Action::IdentityOrganizationsRead,
        &org,
        expiry,
    ));
    assert_eq!(denied.reason(), DenyReason::PrincipalExpired);
    assert_eq!(denied.answer(), Answer::Unauthenticated);
    assert_eq!(denied.error_reason(), Some("TOKEN_EXPIRED"));

    // `authorize` reads the clock itself.
    let past =
        member(BuiltinRole::Owner).with_expire_time(SystemTime::now() - Duration::from_secs(1));
    assert_eq!(
        denial(authorize(&past, Action::IdentityOrganizationsRead, &org)).reason(),
        DenyReason::PrincipalExpired
    );
    let future =
        member(BuiltinRole::Owner).with_expire_time(SystemTime::now() + Duration::from_secs(3600));
    assert!(authorize(&future, Action::IdentityOrganizationsRead, &org).is_allowed());
}

#[test]
fn a_revoked_principal_is_unauthenticated() {
    let denied =
        Denial::principal_revoked(Action::IdentityOrganizationsRead, PrincipalKind::ApiToken);
    assert_eq!(denied.answer(), Answer::Unauthenticated);
    assert_eq!(denied.error_reason(), Some("TOKEN_INVALID"));
    assert_eq!(Decision::Deny(denied).reason_number(), 7);
}

#[test]
fn missing_scope_fields_are_invalid_arguments() {
    let owner = member(BuiltinRole::Owner);
    let org = Resource::in_organization(ORG);
    let cases = [
        (
            Action::IdentityOrganizationsRead,
            Resource::in_organization(""),
            ScopeError::Missing(ScopeField::OrganizationId),
        ),
        (
            Action::CatalogClustersRead,
            org,
            ScopeError::Missing(ScopeField::ClusterId),
        ),
        (
            Action::CatalogClustersRead,
            org.on_cluster(""),
            ScopeError::Missing(ScopeField::ClusterId),
        ),
        (
            Action::CatalogProjectsRead,
            org,
            ScopeError::Missing(ScopeField::ProjectId),
        ),
        (
            Action::CatalogServicesRead,
            org.in_mode(EnvironmentMode::Staging),
            ScopeError::Missing(ScopeField::ProjectId),
        ),
        (
            Action::CatalogServicesRead,
            Resource {
                environment_id: Some("env-1"),
                ..org.in_project("p")
            },
            ScopeError::Missing(ScopeField::EnvironmentMode),
        ),
        (
            Action::CatalogEnvironmentsCreate,
            org.in_project("p").on_cluster("c"),
            ScopeError::Missing(ScopeField::EnvironmentMode),
        ),
        (
            Action::CatalogEnvironmentsCreate,
            org.in_project("p").in_mode(EnvironmentMode::Staging),
            ScopeError::Missing(ScopeField::ClusterId),
        ),
        (
            Action::DeployPreviewsWrite,
            org.in_project("p").in_mode(EnvironmentMode::Production),
            ScopeError::PreviewModeRequired,
        ),
        (
            Action::DeployAgentsConnect,
            org,
            ScopeError::Missing(ScopeField::ClusterId),
        ),
    ];
    for (action, resource, expected) in cases {
        assert_eq!(resource.check_scope(action), Err(expected), "{action}");
        // Even an owner (or a service) is refused: a malformed check is a bug to surface.
        for principal in [&owner, &Principal::service("orchestrator")] {
            let denied = denial(authorize(principal, action, &resource));
            assert_eq!(
                denied.reason(),
                DenyReason::InvalidResource(expected),
                "{action}"
            );
            assert_eq!(denied.answer(), Answer::InvalidArgument);
            assert_eq!(Decision::Deny(denied).reason_number(), 0);
        }
    }
    assert_eq!(
        ScopeError::Missing(ScopeField::ProjectId).to_string(),
        "resource.project_id is required for this action"
    );
    // Project-scoped reads and writes need no mode; previews default to PREVIEW.
    assert_eq!(
        org.in_project("p")
            .check_scope(Action::CatalogVariablesWrite),
        Ok(())
    );
    assert_eq!(
        org.in_project("p").check_scope(Action::DeployPreviewsRead),
        Ok(())
    );
}

#[test]
fn without_a_mode_reads_need_any_mode_and_writes_every_mode() {
    use EnvironmentMode::*;
    use ProjectPermission::*;
    let almost = ModePermissions::uniform(Manager).with(Production, Viewer);
    let role = CustomRole::builder("r")
        .project("all", ModePermissions::uniform(Manager))
        .project("almost", almost)
        .project("dev-only", ModePermissions::NONE.with(Development, Viewer))
        .build()
        .unwrap();
    let user = Principal::user("u", [Membership::new(ORG, role)]);
    let project = |id| Resource::in_organization(ORG).in_project(id);

    // A project-scoped variable reaches every mode.
    assert!(authorize(&user, Action::CatalogVariablesWrite, &project("all")).is_allowed());
    assert!(!authorize(&user, Action::CatalogVariablesWrite, &project("almost")).is_allowed());
    assert!(authorize(&user, Action::CatalogVariablesRead, &project("dev-only")).is_allowed());
    assert!(
        !authorize(
            &user,
            Action::CatalogDeploymentRulesWrite,
            &project("dev-only")
        )
        .is_allowed()
    );
    // The project itself: readable with any mode, changed only with MANAGER in every mode.
    assert!(authorize(&user, Action::CatalogProjectsRead, &project("dev-only")).is_allowed());
    assert!(authorize(&user, Action::CatalogProjectsUpdate, &project("all")).is_allowed());
    let denied = denial(authorize(
        &user,
        Action::CatalogProjectsUpdate,
        &project("almost"),
    ));
    assert_eq!(denied.answer(), Answer::PermissionDenied);
    // Custom roles never create or delete projects, whatever they grant.
    assert!(!authorize(&user, Action::CatalogProjectsDelete, &project("all")).is_allowed());
    // An environment in the one mode it may not see is hidden, not forbidden.
    let prod = project("dev-only").in_environment("e", Production);
    let denied = denial(authorize(&user, Action::DeployEnvironmentsDeploy, &prod));
    assert_eq!(denied.answer(), Answer::NotFound);
    assert_eq!(denied.error_reason(), None);
}

#[test]
fn denials_explain_themselves() {
    let viewer = member(BuiltinRole::Viewer);
    let prod = Resource::in_organization(ORG)
        .in_project("p")
        .in_environment("e", EnvironmentMode::Production);
    let denied = denial(authorize(&viewer, Action::DeployEnvironmentsDeploy, &prod));
    // The example message of `slipway.identity.v1.Decision`.
    assert_eq!(
        denied.to_string(),
        "role viewer does not grant deploy.environments.deploy in production environments"
    );
    assert_eq!(denied.error_reason(), Some("PERMISSION_DENIED"));
    assert_eq!(Decision::Deny(denied).reason_number(), 5);

    let custom = Principal::user("u", [Membership::new(ORG, web_team())]);
    let org = Resource::in_organization(ORG);
    let denied = denial(authorize(&custom, Action::IdentityRolesWrite, &org));
    assert_eq!(
        denied.to_string(),
        "the custom role does not grant identity.roles.write"
    );

    let stranger = Principal::api_token("t", "org-2", BuiltinRole::Admin);
    let denied = denial(authorize(&stranger, Action::IdentityRolesRead, &org));
    assert_eq!(
        denied.to_string(),
        "the api token is not a member of the resource's organization"
    );
    assert_eq!(Decision::Deny(denied).reason_number(), 4);

    assert_eq!(
        authorize(&viewer, Action::IdentityRolesRead, &org).reason_number(),
        1
    );
}
