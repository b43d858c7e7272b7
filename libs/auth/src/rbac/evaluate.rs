//! The AuthService permission table as code, and the evaluation order around it.

use std::time::SystemTime;

use super::action::Action;
use super::decision::{AllowReason, Answer, Decision, Denial, DenyReason, RoleLabel};
use super::principal::{Membership, Principal, PrincipalKind};
use super::resource::{Resource, ResourceKind, present};
use super::role::{BuiltinRole, ClusterPermission, CustomRole, ProjectPermission, Role};

/// Decides whether `principal` may perform `action` on `resource`, exactly as identity's
/// Check does for a principal it finds live.
///
/// The order, each step answering before the next is tried:
///
/// 1. a resource missing a field the action needs → [`Answer::InvalidArgument`];
/// 2. an expired credential → UNAUTHENTICATED;
/// 3. a control-plane service → allowed, every action but `deploy.agents.connect`;
/// 4. no membership in the resource's organization → NOT_FOUND, whatever the action, so
///    another organization's resources are indistinguishable from missing ones;
/// 5. an action closed to the principal's kind (agents do only `deploy.agents.connect`,
///    for their own cluster; only services resolve secrets) → PERMISSION_DENIED;
/// 6. the role's grant, then acting on itself → allowed;
/// 7. otherwise PERMISSION_DENIED, or NOT_FOUND when the role cannot even read the target
///    (a custom role with NO_ACCESS there, BILLING on a project), so a denial never
///    confirms that something hidden exists.
///
/// It reads only the principal and the resource: no I/O, no allocation, and the clock only
/// when the principal has an expiry (use [`authorize_at`] to pass the time in).
pub fn authorize(principal: &Principal, action: Action, resource: &Resource<'_>) -> Decision {
    let expired = principal
        .expire_time()
        .is_some_and(|expire| SystemTime::now() >= expire);
    decide(principal, action, resource, expired)
}

/// [`authorize`] at a given time, e.g. once per BatchCheck, or in tests.
pub fn authorize_at(
    principal: &Principal,
    action: Action,
    resource: &Resource<'_>,
    now: SystemTime,
) -> Decision {
    let expired = principal.expire_time().is_some_and(|expire| now >= expire);
    decide(principal, action, resource, expired)
}

fn decide(
    principal: &Principal,
    action: Action,
    resource: &Resource<'_>,
    expired: bool,
) -> Decision {
    let kind = principal.kind();
    let deny = |reason, answer| Decision::Deny(Denial::new(reason, answer, action, kind));

    if let Err(error) = resource.check_scope(action) {
        return deny(DenyReason::InvalidResource(error), Answer::InvalidArgument);
    }
    if expired {
        return deny(DenyReason::PrincipalExpired, Answer::Unauthenticated);
    }
    let rule = rule(action);
    if kind == PrincipalKind::Service {
        return match rule.who {
            Who::AgentsOnly => deny(
                DenyReason::PrincipalKindNotAllowed,
                Answer::PermissionDenied,
            ),
            Who::Roles | Who::ServicesOnly => Decision::Allow(AllowReason::ControlPlane),
        };
    }
    let Some(membership) = principal.membership(resource.organization_id) else {
        return deny(DenyReason::NotAMember, Answer::NotFound);
    };
    match (kind, rule.who) {
        (PrincipalKind::Agent, Who::AgentsOnly) => {
            return if present(resource.cluster_id) == Some(principal.id()) {
                Decision::Allow(AllowReason::OnItself)
            } else {
                // Its own organization's other cluster: the agent protocol answers
                // PERMISSION_DENIED when Hello names a cluster that is not the token's.
                deny(DenyReason::RoleLacksPermission, Answer::PermissionDenied)
            };
        }
        (PrincipalKind::Agent, _) | (_, Who::AgentsOnly | Who::ServicesOnly) => {
            return deny(
                DenyReason::PrincipalKindNotAllowed,
                Answer::PermissionDenied,
            );
        }
        _ => {}
    }
    let Some(role) = membership.role() else {
        // A user or token without a role cannot exist; refuse rather than guess.
        return deny(DenyReason::RoleLacksPermission, Answer::PermissionDenied);
    };
    if role_grants(role, &rule, action, resource) {
        return Decision::Allow(AllowReason::RoleGrants);
    }
    if acts_on_itself(principal, membership, rule.on_itself, resource) {
        return Decision::Allow(AllowReason::OnItself);
    }
    let sees_target = rule
        .sight
        .iter()
        .all(|&read| role_grants(role, &self::rule(read), read, resource));
    let answer = if sees_target {
        Answer::PermissionDenied
    } else {
        Answer::NotFound
    };
    let label = match role {
        Role::Builtin(builtin) => RoleLabel::Builtin(*builtin),
        Role::Custom(_) => RoleLabel::Custom,
    };
    Decision::Deny(
        Denial::new(DenyReason::RoleLacksPermission, answer, action, kind)
            .with_role(label, resource.effective_mode(action)),
    )
}

/// One row of the AuthService table.
#[derive(Clone, Copy)]
struct Rule {
    /// The built-in roles holding the action, as [`bit`]s.
    builtin: u8,
    /// What a custom role needs.
    custom: Custom,
    /// Which principal kinds the action is open to at all.
    who: Who,
    /// Whether a principal may do it to itself without the role granting it.
    on_itself: OnItself,
    /// The reads that decide whether a denied caller may know the target exists: all
    /// granted → PERMISSION_DENIED, else NOT_FOUND. Empty: the organization itself, which
    /// every member sees.
    sight: &'static [Action],
}

#[derive(Clone, Copy)]
enum Custom {
    /// Custom roles never hold it (organization administration and the like).
    Nothing,
    /// Every member holds it.
    Member,
    /// At least this on the resource's cluster.
    Cluster(ClusterPermission),
    /// At least this in some mode of the project (seeing the project).
    ProjectAny(ProjectPermission),
    /// At least this in every mode of the project (changing the project).
    ProjectEvery(ProjectPermission),
    /// At least this in the resource's mode; without a mode, in some mode to read and in
    /// every mode to write.
    Mode(ProjectPermission),
    /// At least this in the resource's mode and at least that on its cluster.
    ModeAndCluster(ProjectPermission, ClusterPermission),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    /// Users and API tokens through their role; services always.
    Roles,
    /// Control-plane services only.
    ServicesOnly,
    /// The agent of the resource's cluster only.
    AgentsOnly,
}

#[derive(Clone, Copy)]
enum OnItself {
    No,
    /// A user on its own Member (leaving the organization).
    Member,
    /// An API token on its own ApiToken (reading or revoking itself).
    Token,
}

const fn bit(role: BuiltinRole) -> u8 {
    match role {
        BuiltinRole::Owner => 1,
        BuiltinRole::Admin => 1 << 1,
        BuiltinRole::Devops => 1 << 2,
        BuiltinRole::Billing => 1 << 3,
        BuiltinRole::Viewer => 1 << 4,
    }
}

const O: u8 = bit(BuiltinRole::Owner);
const A: u8 = bit(BuiltinRole::Admin);
const D: u8 = bit(BuiltinRole::Devops);
const B: u8 = bit(BuiltinRole::Billing);
const V: u8 = bit(BuiltinRole::Viewer);
const MEMBER: u8 = O | A | D | B | V;

const ORGANIZATION: &[Action] = &[];
const CLUSTER: &[Action] = &[Action::CatalogClustersRead];
const PROJECT: &[Action] = &[Action::CatalogProjectsRead];
const PLACEMENT: &[Action] = &[Action::CatalogProjectsRead, Action::CatalogClustersRead];
const ENVIRONMENT: &[Action] = &[Action::CatalogEnvironmentsRead];
const PREVIEW: &[Action] = &[Action::DeployPreviewsRead];

const fn held(builtin: u8, custom: Custom, sight: &'static [Action]) -> Rule {
    Rule {
        builtin,
        custom,
        who: Who::Roles,
        on_itself: OnItself::No,
        sight,
    }
}

const fn only(who: Who, sight: &'static [Action]) -> Rule {
    Rule {
        builtin: 0,
        custom: Custom::Nothing,
        who,
        on_itself: OnItself::No,
        sight,
    }
}

const fn or_itself(mut rule: Rule, on_itself: OnItself) -> Rule {
    rule.on_itself = on_itself;
    rule
}

/// The AuthService table. Keep it in step with the proto comment, row for row.
const fn rule(action: Action) -> Rule {
    use Action::*;
    use ClusterPermission as C;
    use Custom::{Cluster, Member, Mode, ModeAndCluster, Nothing, ProjectAny, ProjectEvery};
    use ProjectPermission as P;
    match action {
        IdentityOrganizationsRead
        | IdentityMembersRead
        | IdentityRolesRead
        | CatalogRegistriesRead
        | CatalogGitCredentialsRead => held(MEMBER, Member, ORGANIZATION),
        IdentityOrganizationsDelete | IdentityOrganizationsTransferOwnership => {
            held(O, Nothing, ORGANIZATION)
        }
        IdentityOrganizationsUpdate
        | IdentityMembersUpdateRole
        | IdentityInvitationsRead
        | IdentityInvitationsWrite
        | IdentityRolesWrite
        | IdentityAuditEventsRead
        | CatalogProjectsCreate
        | DeployWebhooksWrite => held(O | A, Nothing, ORGANIZATION),
        IdentityMembersRemove => or_itself(held(O | A, Nothing, ORGANIZATION), OnItself::Member),
        IdentityApiTokensRead | IdentityApiTokensWrite => {
            or_itself(held(O | A | D, Nothing, ORGANIZATION), OnItself::Token)
        }
        CatalogClustersRegister
        | CatalogRegistriesWrite
        | CatalogGitCredentialsWrite
        | DeployWebhooksRead => held(O | A | D, Nothing, ORGANIZATION),
        CatalogClustersRead => held(O | A | D | V, Cluster(C::Viewer), CLUSTER),
        CatalogClustersManage => held(O | A | D, Cluster(C::Admin), CLUSTER),
        CatalogProjectsRead => held(O | A | D | V, ProjectAny(P::Viewer), PROJECT),
        CatalogProjectsUpdate => held(O | A | D, ProjectEvery(P::Manager), PROJECT),
        CatalogProjectsDelete => held(O | A, Nothing, PROJECT),
        CatalogEnvironmentsCreate => held(
            O | A | D,
            ModeAndCluster(P::Manager, C::EnvCreator),
            PLACEMENT,
        ),
        CatalogEnvironmentsRead
        | CatalogServicesRead
        | CatalogVariablesRead
        | CatalogDeploymentRulesRead
        | DeployDeploymentsRead
        | BuildBuildsRead
        | LogsEntriesRead => held(O | A | D | V, Mode(P::Viewer), ENVIRONMENT),
        CatalogEnvironmentsUpdate
        | CatalogEnvironmentsDelete
        | CatalogServicesWrite
        | CatalogVariablesWrite
        | CatalogDeploymentRulesWrite
        | DeployEnvironmentsDeleteResources => held(O | A | D, Mode(P::Manager), ENVIRONMENT),
        DeployEnvironmentsDeploy | BuildBuildsCancel => {
            held(O | A | D, Mode(P::Deployer), ENVIRONMENT)
        }
        CatalogEnvironmentsResolve => only(Who::ServicesOnly, ENVIRONMENT),
        DeployPreviewsRead => held(O | A | D | V, Mode(P::Viewer), PREVIEW),
        DeployPreviewsWrite => held(O | A | D, Mode(P::Deployer), PREVIEW),
        DeployAgentsConnect => only(Who::AgentsOnly, CLUSTER),
    }
}

fn role_grants(role: &Role, rule: &Rule, action: Action, resource: &Resource<'_>) -> bool {
    match role {
        Role::Builtin(builtin) => rule.builtin & bit(*builtin) != 0,
        Role::Custom(custom) => custom_grants(custom, rule.custom, action, resource),
    }
}

fn custom_grants(
    role: &CustomRole,
    custom: Custom,
    action: Action,
    resource: &Resource<'_>,
) -> bool {
    let project = || role.project_permissions(present(resource.project_id).unwrap_or_default());
    let cluster = || role.cluster_permission(present(resource.cluster_id).unwrap_or_default());
    match custom {
        Custom::Nothing => false,
        Custom::Member => true,
        Custom::Cluster(minimum) => present(resource.cluster_id).is_some() && cluster() >= minimum,
        Custom::ProjectAny(minimum) => project().any_at_least(minimum),
        Custom::ProjectEvery(minimum) => project().every_at_least(minimum),
        Custom::Mode(minimum) => {
            let permissions = project();
            match resource.effective_mode(action) {
                Some(mode) => permissions.get(mode) >= minimum,
                None if action.is_read_only() => permissions.any_at_least(minimum),
                None => permissions.every_at_least(minimum),
            }
        }
        Custom::ModeAndCluster(project_minimum, cluster_minimum) => {
            resource
                .effective_mode(action)
                .is_some_and(|mode| project().get(mode) >= project_minimum)
                && present(resource.cluster_id).is_some()
                && cluster() >= cluster_minimum
        }
    }
}

fn acts_on_itself(
    principal: &Principal,
    membership: &Membership,
    on_itself: OnItself,
    resource: &Resource<'_>,
) -> bool {
    let target = present(resource.id);
    match on_itself {
        OnItself::No => false,
        OnItself::Member => {
            principal.kind() == PrincipalKind::User
                && resource.kind == Some(ResourceKind::Member)
                && target.is_some()
                && target == membership.member_id()
        }
        OnItself::Token => {
            principal.kind() == PrincipalKind::ApiToken
                && resource.kind == Some(ResourceKind::ApiToken)
                && target == Some(principal.id())
        }
    }
}
