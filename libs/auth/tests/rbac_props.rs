//! Invariants of `authorize` over generated roles, principals and resources. Ids come from
//! small pools so that grants, targets and organizations collide often.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "fixtures outside #[test] functions panic to report the unexpected, as tests do"
)]

use proptest::prelude::*;
use slipway_auth::rbac::{
    Action, AllowReason, Answer, BuiltinRole, ClusterPermission, CustomRole, Decision, DenyReason,
    EnvironmentMode, Membership, ModePermissions, Principal, PrincipalKind, ProjectPermission,
    Resource, ResourceKind, Role, authorize,
};

const ORGS: [&str; 3] = ["org-a", "org-b", "org-c"];
const PROJECTS: [&str; 3] = ["p1", "p2", "p3"];
const CLUSTERS: [&str; 3] = ["c1", "c2", "c3"];
const IDS: [&str; 4] = ["member-1", "token-1", "c1", "x"];

/// Actions no user or token may ever perform, whatever its role.
const KIND_RESTRICTED: [Action; 2] = [
    Action::CatalogEnvironmentsResolve,
    Action::DeployAgentsConnect,
];

/// Organization administration: no custom role ever holds it.
const ADMINISTRATION: [Action; 16] = [
    Action::IdentityOrganizationsUpdate,
    Action::IdentityOrganizationsDelete,
    Action::IdentityOrganizationsTransferOwnership,
    Action::IdentityMembersUpdateRole,
    Action::IdentityInvitationsRead,
    Action::IdentityInvitationsWrite,
    Action::IdentityRolesWrite,
    Action::IdentityApiTokensRead,
    Action::IdentityApiTokensWrite,
    Action::IdentityAuditEventsRead,
    Action::CatalogClustersRegister,
    Action::CatalogProjectsCreate,
    Action::CatalogProjectsDelete,
    Action::DeployWebhooksRead,
    Action::DeployWebhooksWrite,
    Action::CatalogRegistriesWrite,
];

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::ALL.to_vec())
}

fn mode() -> impl Strategy<Value = EnvironmentMode> {
    prop::sample::select(EnvironmentMode::ALL.to_vec())
}

fn builtin() -> impl Strategy<Value = BuiltinRole> {
    prop::sample::select(BuiltinRole::ALL.to_vec())
}

fn project_permission() -> impl Strategy<Value = ProjectPermission> {
    prop::sample::select(vec![
        ProjectPermission::NoAccess,
        ProjectPermission::Viewer,
        ProjectPermission::Deployer,
        ProjectPermission::Manager,
    ])
}

fn cluster_permission() -> impl Strategy<Value = ClusterPermission> {
    prop::sample::select(vec![
        ClusterPermission::NoAccess,
        ClusterPermission::Viewer,
        ClusterPermission::EnvCreator,
        ClusterPermission::Admin,
    ])
}

fn mode_permissions() -> impl Strategy<Value = ModePermissions> {
    prop::array::uniform4(project_permission()).prop_map(|[a, b, c, d]| {
        ModePermissions::NONE
            .with(EnvironmentMode::Production, a)
            .with(EnvironmentMode::Staging, b)
            .with(EnvironmentMode::Development, c)
            .with(EnvironmentMode::Preview, d)
    })
}

fn custom_role() -> impl Strategy<Value = CustomRole> {
    (
        mode_permissions(),
        prop::sample::subsequence(PROJECTS.to_vec(), 0..=3),
        prop::collection::vec(mode_permissions(), 3),
        cluster_permission(),
        prop::sample::subsequence(CLUSTERS.to_vec(), 0..=3),
        prop::collection::vec(cluster_permission(), 3),
    )
        .prop_map(
            |(
                default_projects,
                projects,
                project_perms,
                default_cluster,
                clusters,
                cluster_perms,
            )| {
                let mut builder = CustomRole::builder("custom")
                    .default_project_permissions(default_projects)
                    .default_cluster_permission(default_cluster);
                for (project, permissions) in projects.into_iter().zip(project_perms) {
                    builder = builder.project(project, permissions);
                }
                for (cluster, permission) in clusters.into_iter().zip(cluster_perms) {
                    builder = builder.cluster(cluster, permission);
                }
                builder.build().expect("unique grants")
            },
        )
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        builtin().prop_map(Role::from),
        custom_role().prop_map(Role::from)
    ]
}

fn pick<T: Clone + std::fmt::Debug + 'static>(values: &'static [T]) -> impl Strategy<Value = T> {
    prop::sample::select(values.to_vec())
}

fn resource() -> impl Strategy<Value = Resource<'static>> {
    (
        pick(&ORGS),
        prop::option::of(pick(&PROJECTS)),
        prop::option::of(Just("env-1")),
        prop::option::of(mode()),
        prop::option::of(pick(&CLUSTERS)),
        prop::option::of(pick(&[
            ResourceKind::Member,
            ResourceKind::ApiToken,
            ResourceKind::Environment,
        ])),
        prop::option::of(pick(&IDS)),
    )
        .prop_map(
            |(
                organization_id,
                project_id,
                environment_id,
                environment_mode,
                cluster_id,
                kind,
                id,
            )| {
                Resource {
                    kind,
                    id,
                    organization_id,
                    project_id,
                    environment_id,
                    environment_mode,
                    cluster_id,
                }
            },
        )
}

/// A user or an API token with a role in one organization.
fn member_with(role: impl Strategy<Value = Role>) -> impl Strategy<Value = Principal> {
    (pick(&ORGS), role, any::<bool>()).prop_map(|(org, role, as_token)| {
        if as_token && !matches!(role, Role::Builtin(BuiltinRole::Owner)) {
            Principal::api_token("token-1", org, role)
        } else {
            Principal::user(
                "user-1",
                [Membership::new(org, role).with_member_id("member-1")],
            )
        }
    })
}

/// Any principal that is not a control-plane service.
fn non_service() -> impl Strategy<Value = Principal> {
    prop_oneof![
        4 => member_with(role()),
        1 => (pick(&CLUSTERS), pick(&ORGS)).prop_map(|(cluster, org)| Principal::agent(cluster, org)),
        1 => prop::collection::vec((pick(&ORGS), role()), 0..3).prop_map(|memberships| {
            let mut seen = Vec::new();
            let memberships: Vec<Membership> = memberships
                .into_iter()
                .filter(|(org, _)| !seen.contains(org) && { seen.push(*org); true })
                .map(|(org, role)| Membership::new(org, role).with_member_id("member-1"))
                .collect();
            Principal::user("user-1", memberships)
        }),
    ]
}

fn is_invalid(decision: &Decision) -> bool {
    matches!(decision, Decision::Deny(d) if d.answer() == Answer::InvalidArgument)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    /// VIEWER's role never grants a change, as a user or a token, anywhere. The one change
    /// it may make is to itself, as every member may: a user leaving the organization, a
    /// token revoking itself.
    #[test]
    fn viewer_never_gets_a_mutating_action(
        principal in member_with(Just(Role::Builtin(BuiltinRole::Viewer))),
        action in action(),
        resource in resource(),
    ) {
        if !action.is_read_only() {
            match authorize(&principal, action, &resource) {
                Decision::Deny(_) => {}
                Decision::Allow(AllowReason::OnItself) => {
                    let own_id = match principal.kind() {
                        PrincipalKind::User => principal.memberships()[0].member_id(),
                        _ => Some(principal.id()),
                    };
                    prop_assert!(matches!(
                        (principal.kind(), action, resource.kind),
                        (PrincipalKind::User, Action::IdentityMembersRemove, Some(ResourceKind::Member))
                            | (PrincipalKind::ApiToken, Action::IdentityApiTokensWrite, Some(ResourceKind::ApiToken))
                    ));
                    prop_assert_eq!(resource.id, own_id);
                }
                allowed => prop_assert!(false, "viewer allowed {} ({:?})", action, allowed),
            }
        }
    }

    /// OWNER holds every action open to users in its organization, on any well-formed
    /// resource there.
    #[test]
    fn owner_gets_everything_in_its_organization(action in action(), resource in resource()) {
        let owner = Principal::user(
            "user-1",
            [Membership::new(resource.organization_id, BuiltinRole::Owner).with_member_id("m")],
        );
        let decision = authorize(&owner, action, &resource);
        if resource.check_scope(action).is_err() {
            prop_assert!(is_invalid(&decision));
        } else if KIND_RESTRICTED.contains(&action) {
            prop_assert!(matches!(decision, Decision::Deny(d) if d.reason() == DenyReason::PrincipalKindNotAllowed));
        } else {
            prop_assert_eq!(decision, Decision::Allow(AllowReason::RoleGrants));
        }
    }

    /// Nothing is allowed across organizations, and the answer is always NOT_FOUND.
    #[test]
    fn nothing_is_allowed_across_organizations(
        principal in non_service(),
        action in action(),
        resource in resource(),
    ) {
        let decision = authorize(&principal, action, &resource);
        if principal.membership(resource.organization_id).is_none() {
            prop_assert!(!decision.is_allowed());
            if !is_invalid(&decision) {
                prop_assert!(
                    matches!(decision, Decision::Deny(d) if d.reason() == DenyReason::NotAMember && d.answer() == Answer::NotFound),
                    "{:?}", decision
                );
            }
        }
    }

    /// A custom role never exceeds ADMIN, and never holds organization administration.
    #[test]
    fn custom_roles_stay_below_admin(
        role in custom_role(),
        action in action(),
        resource in resource(),
    ) {
        let org = resource.organization_id;
        let custom = Principal::user("u", [Membership::new(org, role).with_member_id("m")]);
        let admin = Principal::user("u", [Membership::new(org, BuiltinRole::Admin).with_member_id("m")]);
        let decision = authorize(&custom, action, &resource);
        if decision.is_allowed() {
            prop_assert!(authorize(&admin, action, &resource).is_allowed());
        }
        if ADMINISTRATION.contains(&action) {
            prop_assert_eq!(decision.is_allowed(), false);
        }
    }

    /// Raising a custom role's grants never takes an allowed action away.
    #[test]
    fn more_permission_never_allows_less(
        role in custom_role(),
        action in action(),
        resource in resource(),
    ) {
        let org = resource.organization_id;
        let everything = CustomRole::builder("all")
            .default_project_permissions(ModePermissions::uniform(ProjectPermission::Manager))
            .default_cluster_permission(ClusterPermission::Admin)
            .build()
            .unwrap();
        let some = Principal::user("u", [Membership::new(org, role).with_member_id("m")]);
        let all = Principal::user("u", [Membership::new(org, everything).with_member_id("m")]);
        if authorize(&some, action, &resource).is_allowed() {
            prop_assert!(authorize(&all, action, &resource).is_allowed());
        }
    }

    /// A denial to a member is NOT_FOUND only when the member cannot read the target;
    /// PERMISSION_DENIED never confirms something the caller could not see.
    #[test]
    fn hidden_targets_are_never_permission_denied(
        principal in member_with(role()),
        action in action(),
        resource in resource(),
    ) {
        if let Decision::Deny(denial) = authorize(&principal, action, &resource)
            && denial.reason() == DenyReason::RoleLacksPermission
        {
            let read = match action.scope() {
                slipway_auth::rbac::Scope::Organization => Action::IdentityOrganizationsRead,
                slipway_auth::rbac::Scope::Cluster => Action::CatalogClustersRead,
                slipway_auth::rbac::Scope::Project => Action::CatalogProjectsRead,
                slipway_auth::rbac::Scope::ProjectModeCluster => Action::CatalogProjectsRead,
                slipway_auth::rbac::Scope::ProjectMode => Action::CatalogEnvironmentsRead,
                slipway_auth::rbac::Scope::Preview => Action::DeployPreviewsRead,
            };
            let sees = authorize(&principal, read, &resource).is_allowed();
            if denial.answer() == Answer::PermissionDenied {
                prop_assert!(sees, "{action} answered PERMISSION_DENIED but {read} is denied");
            }
        }
    }
}
