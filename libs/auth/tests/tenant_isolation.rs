//! Tenant isolation: nothing of organization A is visible to anyone who is not in A.
//! Every read and write answers NOT_FOUND, so A's resources are indistinguishable from
//! missing ones, even when B's grants name the very same ids.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "fixtures outside #[test] functions panic to report the unexpected, as tests do"
)]

mod common;

use common::{Place, web_team};
use slipway_auth::rbac::{
    Action, Answer, BuiltinRole, Decision, DenyReason, EnvironmentMode, Membership, Principal,
    Resource, ResourceKind, Role, authorize,
};

const ORG_A: &str = "org-a";
const ORG_B: &str = "org-b";

/// Resources of A with the ids B's custom role grants (`web`, `dev-cluster`), in every
/// mode: identity does not check that grant ids belong to the role's organization, so the
/// organization check alone must keep them apart.
fn places_in_a() -> Vec<Place> {
    EnvironmentMode::ALL
        .into_iter()
        .map(|mode| Place {
            organization: ORG_A,
            project: "web",
            mode,
            cluster: "dev-cluster",
        })
        .collect()
}

/// Everyone of B: a user and a token per role, an agent of B whose cluster id is A's.
fn principals_of_b() -> Vec<Principal> {
    let mut roles: Vec<Role> = BuiltinRole::ALL.into_iter().map(Role::from).collect();
    roles.push(web_team().into());
    let mut principals = Vec::new();
    for (i, role) in roles.into_iter().enumerate() {
        principals.push(Principal::user(
            format!("user-{i}"),
            [Membership::new(ORG_B, role.clone()).with_member_id(format!("member-{i}"))],
        ));
        if !matches!(role, Role::Builtin(BuiltinRole::Owner)) {
            principals.push(Principal::api_token(format!("token-{i}"), ORG_B, role));
        }
    }
    principals.push(Principal::agent("dev-cluster", ORG_B));
    // A user of several organizations, none of them A.
    principals.push(Principal::user(
        "user-many",
        [
            Membership::new(ORG_B, BuiltinRole::Owner).with_member_id("m-b"),
            Membership::new("org-c", BuiltinRole::Admin).with_member_id("m-c"),
        ],
    ));
    // A user who has not joined any organization yet.
    principals.push(Principal::user("user-none", []));
    principals
}

fn assert_not_found(decision: Decision, context: &str) {
    match decision {
        Decision::Deny(denial) => {
            assert_eq!(denial.reason(), DenyReason::NotAMember, "{context}");
            assert_eq!(denial.answer(), Answer::NotFound, "{context}");
            // NOT_FOUND carries no ErrorInfo reason that could tell it from a missing row.
            assert_eq!(denial.error_reason(), None, "{context}");
        }
        Decision::Allow(reason) => panic!("{context}: allowed ({reason:?})"),
    }
}

#[test]
fn members_of_b_get_not_found_for_every_action_on_a() {
    let mut checked = 0;
    for principal in principals_of_b() {
        for &action in Action::ALL {
            for place in places_in_a() {
                let resource = place.resource(action);
                let context = format!(
                    "{} {} {action} in {}",
                    principal.kind(),
                    principal.id(),
                    place.mode
                );
                assert_not_found(authorize(&principal, action, &resource), &context);
                checked += 1;
            }
        }
    }
    assert!(checked > 2_000, "{checked}");
}

#[test]
fn acting_on_itself_does_not_cross_organizations() {
    // The same member id and token id in A: still not theirs.
    let user = Principal::user(
        "user-1",
        [Membership::new(ORG_B, BuiltinRole::Viewer).with_member_id("member-1")],
    );
    let leave_a = Resource::in_organization(ORG_A).target(ResourceKind::Member, "member-1");
    assert_not_found(
        authorize(&user, Action::IdentityMembersRemove, &leave_a),
        "leave",
    );

    let token = Principal::api_token("token-1", ORG_B, BuiltinRole::Viewer);
    let revoke_in_a = Resource::in_organization(ORG_A).target(ResourceKind::ApiToken, "token-1");
    assert_not_found(
        authorize(&token, Action::IdentityApiTokensWrite, &revoke_in_a),
        "revoke",
    );

    let agent = Principal::agent("cluster-1", ORG_B);
    let connect_in_a = Resource::in_organization(ORG_A).on_cluster("cluster-1");
    assert_not_found(
        authorize(&agent, Action::DeployAgentsConnect, &connect_in_a),
        "connect",
    );
}

#[test]
fn each_organization_uses_its_own_role() {
    // VIEWER in A, OWNER in B: A is read-only for this user.
    let user = Principal::user(
        "user-1",
        [
            Membership::new(ORG_A, BuiltinRole::Viewer).with_member_id("m-a"),
            Membership::new(ORG_B, BuiltinRole::Owner).with_member_id("m-b"),
        ],
    );
    let a = Resource::in_organization(ORG_A);
    let b = Resource::in_organization(ORG_B);
    assert!(authorize(&user, Action::IdentityOrganizationsRead, &a).is_allowed());
    assert!(!authorize(&user, Action::IdentityOrganizationsDelete, &a).is_allowed());
    assert!(authorize(&user, Action::IdentityOrganizationsDelete, &b).is_allowed());
}
