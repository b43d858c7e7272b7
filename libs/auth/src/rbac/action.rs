//! The action vocabulary of `slipway.identity.v1.AuthService`.

use std::fmt;
use std::str::FromStr;

/// Which [`Resource`](super::Resource) fields an action needs besides `organization_id`
/// (the "scope" column of the AuthService table). A missing one makes the check invalid:
/// Check answers INVALID_ARGUMENT and [`authorize`](super::authorize) denies with
/// [`Answer::InvalidArgument`](super::Answer::InvalidArgument).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Nothing more: the action is about the organization as a whole.
    Organization,
    /// `cluster_id`.
    Cluster,
    /// `project_id`. Project actions span every environment mode, so a mode is ignored.
    Project,
    /// `project_id`, plus `environment_mode` whenever `environment_id` is set. Without a
    /// mode (a project-scoped variable or deployment rule, a list across modes), a custom
    /// role needs the permission in at least one mode to read and in every mode to write.
    ProjectMode,
    /// `project_id`, `environment_mode` and `cluster_id`: placing a new environment.
    ProjectModeCluster,
    /// `project_id`; the mode is `PREVIEW` (unset means `PREVIEW`, any other is invalid).
    Preview,
}

/// Why a string is not an action name. Check answers INVALID_ARGUMENT for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown action")]
pub struct UnknownAction;

macro_rules! actions {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, $scope:ident; )*) => {
        /// A permission name, `<domain>.<collection>.<verb>`, exactly as listed on
        /// `slipway.identity.v1.AuthService`. The wire carries strings (so a service can
        /// name an action before every peer knows it); inside Slipway an enum makes a typo a
        /// compile error and lets a check run without touching a string.
        ///
        /// The doc of each variant is its row of the AuthService table: who holds it.
        /// O, A, D, B, V are OWNER, ADMIN, DEVOPS, BILLING, VIEWER; "member" is every member,
        /// custom roles included; "mode X" is a custom role with at least ProjectPermission X
        /// for the resource's project and mode; "cluster X" likewise for its cluster.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Action {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Action {
            /// Every action, in the order of the AuthService table.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// The wire name, e.g. `catalog.environments.read`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }

            /// The resource fields the action needs besides `organization_id`.
            pub const fn scope(self) -> Scope {
                match self {
                    $(Action::$variant => Scope::$scope,)*
                }
            }
        }

        impl FromStr for Action {
            type Err = UnknownAction;

            fn from_str(name: &str) -> Result<Self, Self::Err> {
                match name {
                    $($name => Ok(Action::$variant),)*
                    _ => Err(UnknownAction),
                }
            }
        }
    };
}

actions! {
    /// member.
    IdentityOrganizationsRead = "identity.organizations.read", Organization;
    /// O A.
    IdentityOrganizationsUpdate = "identity.organizations.update", Organization;
    /// O.
    IdentityOrganizationsDelete = "identity.organizations.delete", Organization;
    /// O.
    IdentityOrganizationsTransferOwnership = "identity.organizations.transfer_ownership", Organization;
    /// member.
    IdentityMembersRead = "identity.members.read", Organization;
    /// O A.
    IdentityMembersUpdateRole = "identity.members.update_role", Organization;
    /// O A; a member on itself (leaving the organization).
    IdentityMembersRemove = "identity.members.remove", Organization;
    /// O A.
    IdentityInvitationsRead = "identity.invitations.read", Organization;
    /// O A.
    IdentityInvitationsWrite = "identity.invitations.write", Organization;
    /// member.
    IdentityRolesRead = "identity.roles.read", Organization;
    /// O A.
    IdentityRolesWrite = "identity.roles.write", Organization;
    /// O A D; a token on itself.
    IdentityApiTokensRead = "identity.api_tokens.read", Organization;
    /// O A D; a token revoking itself.
    IdentityApiTokensWrite = "identity.api_tokens.write", Organization;
    /// O A.
    IdentityAuditEventsRead = "identity.audit_events.read", Organization;
    /// O A D.
    CatalogClustersRegister = "catalog.clusters.register", Organization;
    /// O A D V; cluster VIEWER.
    CatalogClustersRead = "catalog.clusters.read", Cluster;
    /// O A D; cluster ADMIN. Update and delete the cluster, get its agent installation
    /// manifest, rotate its agent credential.
    CatalogClustersManage = "catalog.clusters.manage", Cluster;
    /// member.
    CatalogRegistriesRead = "catalog.registries.read", Organization;
    /// O A D.
    CatalogRegistriesWrite = "catalog.registries.write", Organization;
    /// member.
    CatalogGitCredentialsRead = "catalog.git_credentials.read", Organization;
    /// O A D.
    CatalogGitCredentialsWrite = "catalog.git_credentials.write", Organization;
    /// O A.
    CatalogProjectsCreate = "catalog.projects.create", Organization;
    /// O A D V; mode VIEWER in any mode.
    CatalogProjectsRead = "catalog.projects.read", Project;
    /// O A D; mode MANAGER in every mode.
    CatalogProjectsUpdate = "catalog.projects.update", Project;
    /// O A.
    CatalogProjectsDelete = "catalog.projects.delete", Project;
    /// O A D; mode MANAGER and cluster ENV_CREATOR.
    CatalogEnvironmentsCreate = "catalog.environments.create", ProjectModeCluster;
    /// O A D V; mode VIEWER.
    CatalogEnvironmentsRead = "catalog.environments.read", ProjectMode;
    /// O A D; mode MANAGER.
    CatalogEnvironmentsUpdate = "catalog.environments.update", ProjectMode;
    /// O A D; mode MANAGER.
    CatalogEnvironmentsDelete = "catalog.environments.delete", ProjectMode;
    /// Control-plane services only: the resolved snapshot with secrets decrypted.
    CatalogEnvironmentsResolve = "catalog.environments.resolve", ProjectMode;
    /// O A D V; mode VIEWER.
    CatalogServicesRead = "catalog.services.read", ProjectMode;
    /// O A D; mode MANAGER.
    CatalogServicesWrite = "catalog.services.write", ProjectMode;
    /// O A D V; mode VIEWER.
    CatalogVariablesRead = "catalog.variables.read", ProjectMode;
    /// O A D; mode MANAGER.
    CatalogVariablesWrite = "catalog.variables.write", ProjectMode;
    /// O A D V; mode VIEWER.
    CatalogDeploymentRulesRead = "catalog.deployment_rules.read", ProjectMode;
    /// O A D; mode MANAGER.
    CatalogDeploymentRulesWrite = "catalog.deployment_rules.write", ProjectMode;
    /// O A D; mode DEPLOYER. Deploy, stop, restart or roll back an environment or some of
    /// its services, and cancel its deployments.
    DeployEnvironmentsDeploy = "deploy.environments.deploy", ProjectMode;
    /// O A D; mode MANAGER. Remove what runs on the cluster.
    DeployEnvironmentsDeleteResources = "deploy.environments.delete_resources", ProjectMode;
    /// O A D V; mode VIEWER. Deployments, the queue, live status, watching them.
    DeployDeploymentsRead = "deploy.deployments.read", ProjectMode;
    /// O A D V; mode VIEWER in PREVIEW.
    DeployPreviewsRead = "deploy.previews.read", Preview;
    /// O A D; mode DEPLOYER in PREVIEW. Create and delete preview environments.
    DeployPreviewsWrite = "deploy.previews.write", Preview;
    /// O A D.
    DeployWebhooksRead = "deploy.webhooks.read", Organization;
    /// O A.
    DeployWebhooksWrite = "deploy.webhooks.write", Organization;
    /// The agent of that cluster only.
    DeployAgentsConnect = "deploy.agents.connect", Cluster;
    /// O A D V; mode VIEWER.
    BuildBuildsRead = "build.builds.read", ProjectMode;
    /// O A D; mode DEPLOYER.
    BuildBuildsCancel = "build.builds.cancel", ProjectMode;
    /// O A D V; mode VIEWER. Tail and query build, deployment and service logs.
    LogsEntriesRead = "logs.entries.read", ProjectMode;
}

impl Action {
    /// Whether the action only reads: its verb is `read`, or it is
    /// `catalog.environments.resolve` (a read, though of secrets, for services only).
    /// Everything else changes something, and no VIEWER ever holds it.
    pub const fn is_read_only(self) -> bool {
        matches!(
            self,
            Action::IdentityOrganizationsRead
                | Action::IdentityMembersRead
                | Action::IdentityInvitationsRead
                | Action::IdentityRolesRead
                | Action::IdentityApiTokensRead
                | Action::IdentityAuditEventsRead
                | Action::CatalogClustersRead
                | Action::CatalogRegistriesRead
                | Action::CatalogGitCredentialsRead
                | Action::CatalogProjectsRead
                | Action::CatalogEnvironmentsRead
                | Action::CatalogEnvironmentsResolve
                | Action::CatalogServicesRead
                | Action::CatalogVariablesRead
                | Action::CatalogDeploymentRulesRead
                | Action::DeployDeploymentsRead
                | Action::DeployPreviewsRead
                | Action::DeployWebhooksRead
                | Action::BuildBuildsRead
                | Action::LogsEntriesRead
        )
    }

    /// The API domain: `identity`, `catalog`, `deploy`, `build` or `logs`.
    pub fn domain(self) -> &'static str {
        let name = self.as_str();
        name.split_once('.').map_or(name, |(domain, _)| domain)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_well_formed() {
        assert_eq!(Action::ALL.len(), 47);
        for &action in Action::ALL {
            assert_eq!(action.as_str().parse::<Action>(), Ok(action));
            let parts: Vec<&str> = action.as_str().split('.').collect();
            assert_eq!(parts.len(), 3, "{action}");
            assert!(
                ["identity", "catalog", "deploy", "build", "logs"].contains(&parts[0]),
                "{action}"
            );
            assert!(
                parts.iter().all(
                    |p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                ),
                "{action}"
            );
            assert_eq!(
                action.is_read_only(),
                parts[2] == "read" || parts[2] == "resolve"
            );
        }
        assert_eq!(
            "catalog.environments.get".parse::<Action>(),
            Err(UnknownAction)
        );
        assert_eq!("".parse::<Action>(), Err(UnknownAction));
    }
}
