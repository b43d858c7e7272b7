//! Roles: the five built-in ones and custom roles with per-project, per-mode and
//! per-cluster grants (`slipway.identity.v1.Role`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::resource::EnvironmentMode;

/// The roles every organization has. What each may do is the AuthService table, encoded
/// action by action in [`authorize`](super::authorize); the summaries below say why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuiltinRole {
    /// Everything, including deleting the organization and transferring ownership. Exactly
    /// one member holds it; no API token or invitation can carry it.
    Owner,
    /// Everything except deleting the organization and transferring ownership.
    Admin,
    /// Runs the platform: MANAGER in every project and mode, ADMIN on every cluster,
    /// registers clusters, manages registries, git credentials and API tokens. Does not
    /// create or delete projects, change webhooks, or touch members, invitations, roles or
    /// the audit log.
    Devops,
    /// Only what every member holds (billing has no API in v1): no clusters, projects,
    /// deployments or logs.
    Billing,
    /// Reads everything except invitations, API tokens, webhooks and the audit log; changes
    /// nothing.
    Viewer,
}

impl BuiltinRole {
    /// Every built-in role, in proto order.
    pub const ALL: [Self; 5] = [
        Self::Owner,
        Self::Admin,
        Self::Devops,
        Self::Billing,
        Self::Viewer,
    ];

    /// The reserved lowercase name (custom roles may not use it).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Devops => "devops",
            Self::Billing => "billing",
            Self::Viewer => "viewer",
        }
    }

    /// Whether a member role change, an invitation or an API token may carry this role.
    /// OWNER moves only through TransferOrganizationOwnership, so there is always exactly
    /// one and a token never outranks every person.
    pub const fn is_assignable(self) -> bool {
        !matches!(self, Self::Owner)
    }
}

impl fmt::Display for BuiltinRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a built-in role name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown built-in role")]
pub struct UnknownRole;

impl FromStr for BuiltinRole {
    type Err = UnknownRole;

    /// Accepts the lowercase name (`owner`) and the proto enum name (`BUILTIN_ROLE_OWNER`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "owner" | "BUILTIN_ROLE_OWNER" => Ok(Self::Owner),
            "admin" | "BUILTIN_ROLE_ADMIN" => Ok(Self::Admin),
            "devops" | "BUILTIN_ROLE_DEVOPS" => Ok(Self::Devops),
            "billing" | "BUILTIN_ROLE_BILLING" => Ok(Self::Billing),
            "viewer" | "BUILTIN_ROLE_VIEWER" => Ok(Self::Viewer),
            _ => Err(UnknownRole),
        }
    }
}

/// What a custom role allows in the environments of one mode of a project. Ordered: each
/// level includes the ones before it, so a check is a comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProjectPermission {
    /// Environments of this mode are invisible (a read answers NOT_FOUND).
    #[default]
    NoAccess,
    /// Reads environments, services, variables (never secret values), deployments, logs.
    Viewer,
    /// VIEWER, plus deploy, stop, restart, and cancel deployments and builds.
    Deployer,
    /// DEPLOYER, plus create, update, clone and delete environments, services, variables.
    Manager,
}

/// What a custom role allows on one cluster. Ordered like [`ProjectPermission`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClusterPermission {
    /// No access: the cluster is invisible (`CLUSTER_PERMISSION_UNSPECIFIED`).
    #[default]
    NoAccess,
    /// Sees the cluster and its status.
    Viewer,
    /// VIEWER, plus places environments on it (with MANAGER on the project and mode).
    EnvCreator,
    /// ENV_CREATOR, plus updates and deletes the cluster and manages its agent.
    Admin,
}

/// A custom role's [`ProjectPermission`] in each environment mode of a project. Modes not
/// set are NO_ACCESS. A plain array indexed by mode: lookups cost nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModePermissions([ProjectPermission; 4]);

impl ModePermissions {
    /// NO_ACCESS in every mode.
    pub const NONE: Self = Self([ProjectPermission::NoAccess; 4]);

    /// The same permission in every mode.
    pub const fn uniform(permission: ProjectPermission) -> Self {
        Self([permission; 4])
    }

    /// This, with `permission` in `mode`.
    pub const fn with(mut self, mode: EnvironmentMode, permission: ProjectPermission) -> Self {
        self.0[mode.index()] = permission;
        self
    }

    /// From a role's `(mode, permission)` entries; a mode listed twice is refused, as
    /// RoleService does, since which entry wins would be arbitrary.
    pub fn from_entries(
        entries: impl IntoIterator<Item = (EnvironmentMode, ProjectPermission)>,
    ) -> Result<Self, RoleError> {
        let mut seen = [false; 4];
        let mut permissions = Self::NONE;
        for (mode, permission) in entries {
            if std::mem::replace(&mut seen[mode.index()], true) {
                return Err(RoleError::DuplicateMode(mode));
            }
            permissions = permissions.with(mode, permission);
        }
        Ok(permissions)
    }

    /// The permission in `mode`.
    pub const fn get(self, mode: EnvironmentMode) -> ProjectPermission {
        self.0[mode.index()]
    }

    /// Whether some mode grants at least `minimum`: enough to see the project.
    pub fn any_at_least(self, minimum: ProjectPermission) -> bool {
        self.0.iter().any(|&p| p >= minimum)
    }

    /// Whether every mode grants at least `minimum`: needed to change something that reaches
    /// every mode (the project itself, project-scoped variables and rules).
    pub fn every_at_least(self, minimum: ProjectPermission) -> bool {
        self.0.iter().all(|&p| p >= minimum)
    }
}

/// Most project grants a custom role may hold, as RoleService limits them.
pub const MAX_PROJECT_GRANTS: usize = 500;

/// Most cluster grants a custom role may hold.
pub const MAX_CLUSTER_GRANTS: usize = 500;

/// A custom role, as cached by a service: fine-grained access to projects (per mode) and
/// clusters. Every member also holds the "member" actions; custom roles never grant
/// organization administration, registering clusters, nor creating or deleting projects.
///
/// Grants are kept sorted by id, so a check is a binary search with no hashing and no
/// allocation. Share it behind an [`Arc`] ([`Role::Custom`]): on a role change a service
/// swaps in a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomRole {
    id: Box<str>,
    default_projects: ModePermissions,
    projects: Grants<ModePermissions>,
    default_cluster: ClusterPermission,
    clusters: Grants<ClusterPermission>,
}

/// Grants sorted by id, for binary search.
type Grants<T> = Box<[(Box<str>, T)]>;

impl CustomRole {
    /// Starts a role with no grants.
    pub fn builder(id: impl Into<Box<str>>) -> CustomRoleBuilder {
        CustomRoleBuilder {
            id: id.into(),
            default_projects: ModePermissions::NONE,
            projects: Vec::new(),
            default_cluster: ClusterPermission::NoAccess,
            clusters: Vec::new(),
        }
    }

    /// The role's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The permissions in `project_id`: its own grant if listed (and only that), else the
    /// defaults that cover every other project, including ones created later.
    pub fn project_permissions(&self, project_id: &str) -> ModePermissions {
        self.projects
            .binary_search_by(|(id, _)| (**id).cmp(project_id))
            .ok()
            .and_then(|index| self.projects.get(index))
            .map_or(self.default_projects, |(_, permissions)| *permissions)
    }

    /// The permission on `cluster_id`: its own grant if listed, else the default.
    pub fn cluster_permission(&self, cluster_id: &str) -> ClusterPermission {
        self.clusters
            .binary_search_by(|(id, _)| (**id).cmp(cluster_id))
            .ok()
            .and_then(|index| self.clusters.get(index))
            .map_or(self.default_cluster, |(_, permission)| *permission)
    }
}

/// Builds a [`CustomRole`], refusing what would make a lookup ambiguous.
#[derive(Clone, Debug)]
pub struct CustomRoleBuilder {
    id: Box<str>,
    default_projects: ModePermissions,
    projects: Vec<(Box<str>, ModePermissions)>,
    default_cluster: ClusterPermission,
    clusters: Vec<(Box<str>, ClusterPermission)>,
}

impl CustomRoleBuilder {
    /// Permissions in every project without its own grant.
    pub fn default_project_permissions(mut self, permissions: ModePermissions) -> Self {
        self.default_projects = permissions;
        self
    }

    /// A grant for one project, replacing the defaults there.
    pub fn project(
        mut self,
        project_id: impl Into<Box<str>>,
        permissions: ModePermissions,
    ) -> Self {
        self.projects.push((project_id.into(), permissions));
        self
    }

    /// Permission on every cluster without its own grant.
    pub fn default_cluster_permission(mut self, permission: ClusterPermission) -> Self {
        self.default_cluster = permission;
        self
    }

    /// A grant for one cluster, replacing the default there.
    pub fn cluster(
        mut self,
        cluster_id: impl Into<Box<str>>,
        permission: ClusterPermission,
    ) -> Self {
        self.clusters.push((cluster_id.into(), permission));
        self
    }

    /// The role, or why it is not valid.
    pub fn build(self) -> Result<CustomRole, RoleError> {
        if self.projects.len() > MAX_PROJECT_GRANTS {
            return Err(RoleError::TooManyProjectGrants(self.projects.len()));
        }
        if self.clusters.len() > MAX_CLUSTER_GRANTS {
            return Err(RoleError::TooManyClusterGrants(self.clusters.len()));
        }
        let projects = sorted_unique(self.projects, RoleError::EmptyProjectId, |id| {
            RoleError::DuplicateProject(id.into())
        })?;
        let clusters = sorted_unique(self.clusters, RoleError::EmptyClusterId, |id| {
            RoleError::DuplicateCluster(id.into())
        })?;
        Ok(CustomRole {
            id: self.id,
            default_projects: self.default_projects,
            projects,
            default_cluster: self.default_cluster,
            clusters,
        })
    }
}

fn sorted_unique<T>(
    mut grants: Vec<(Box<str>, T)>,
    empty: RoleError,
    duplicate: impl Fn(&str) -> RoleError,
) -> Result<Grants<T>, RoleError> {
    if grants.iter().any(|(id, _)| id.is_empty()) {
        return Err(empty);
    }
    grants.sort_by(|(a, _), (b, _)| a.cmp(b));
    if let Some(pair) = grants.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(duplicate(&pair[0].0));
    }
    Ok(grants.into_boxed_slice())
}

/// Why a custom role cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// A project listed twice.
    #[error("project {0} is granted more than once")]
    DuplicateProject(String),
    /// A cluster listed twice.
    #[error("cluster {0} is granted more than once")]
    DuplicateCluster(String),
    /// A mode listed twice in one set of mode permissions.
    #[error("environment mode {0} is listed more than once")]
    DuplicateMode(EnvironmentMode),
    /// A project grant without a project id.
    #[error("a project grant has an empty project id")]
    EmptyProjectId,
    /// A cluster grant without a cluster id.
    #[error("a cluster grant has an empty cluster id")]
    EmptyClusterId,
    /// More than [`MAX_PROJECT_GRANTS`] project grants.
    #[error("{0} project grants, at most {MAX_PROJECT_GRANTS} allowed")]
    TooManyProjectGrants(usize),
    /// More than [`MAX_CLUSTER_GRANTS`] cluster grants.
    #[error("{0} cluster grants, at most {MAX_CLUSTER_GRANTS} allowed")]
    TooManyClusterGrants(usize),
}

/// The role a member or an API token holds in one organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A built-in role.
    Builtin(BuiltinRole),
    /// A custom role of the same organization, shared with every principal holding it.
    Custom(Arc<CustomRole>),
}

impl From<BuiltinRole> for Role {
    fn from(role: BuiltinRole) -> Self {
        Self::Builtin(role)
    }
}

impl From<Arc<CustomRole>> for Role {
    fn from(role: Arc<CustomRole>) -> Self {
        Self::Custom(role)
    }
}

impl From<CustomRole> for Role {
    fn from(role: CustomRole) -> Self {
        Self::Custom(Arc::new(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EnvironmentMode::*;
    use ProjectPermission::*;

    #[test]
    fn builtin_names_parse_both_ways() {
        for role in BuiltinRole::ALL {
            assert_eq!(role.as_str().parse(), Ok(role));
            let proto = format!("BUILTIN_ROLE_{}", role.as_str().to_ascii_uppercase());
            assert_eq!(proto.parse(), Ok(role));
        }
        for bad in [
            "",
            "Owner",
            "OWNER",
            "BUILTIN_ROLE_owner",
            "BUILTIN_ROLE_",
            "root",
        ] {
            assert_eq!(bad.parse::<BuiltinRole>(), Err(UnknownRole), "{bad}");
        }
    }

    #[test]
    fn listed_grants_replace_defaults() {
        let role = CustomRole::builder("r")
            .default_project_permissions(ModePermissions::uniform(Viewer))
            .project("p2", ModePermissions::NONE.with(Staging, Manager))
            .project("p1", ModePermissions::uniform(Deployer))
            .default_cluster_permission(ClusterPermission::Viewer)
            .cluster("c1", ClusterPermission::NoAccess)
            .build()
            .unwrap();
        assert_eq!(
            role.project_permissions("p1"),
            ModePermissions::uniform(Deployer)
        );
        assert_eq!(role.project_permissions("p2").get(Staging), Manager);
        assert_eq!(role.project_permissions("p2").get(Production), NoAccess);
        assert_eq!(
            role.project_permissions("other"),
            ModePermissions::uniform(Viewer)
        );
        assert_eq!(role.cluster_permission("c1"), ClusterPermission::NoAccess);
        assert_eq!(role.cluster_permission("c2"), ClusterPermission::Viewer);
    }

    #[test]
    fn ambiguous_roles_are_refused() {
        let twice = CustomRole::builder("r")
            .project("p", ModePermissions::NONE)
            .project("p", ModePermissions::NONE)
            .build();
        assert_eq!(twice, Err(RoleError::DuplicateProject("p".into())));
        let empty = CustomRole::builder("r")
            .cluster("", ClusterPermission::Admin)
            .build();
        assert_eq!(empty, Err(RoleError::EmptyClusterId));
        let modes = ModePermissions::from_entries([(Staging, Viewer), (Staging, Manager)]);
        assert_eq!(modes, Err(RoleError::DuplicateMode(Staging)));
        let many = (0..=MAX_CLUSTER_GRANTS).fold(CustomRole::builder("r"), |b, i| {
            b.cluster(i.to_string(), ClusterPermission::Viewer)
        });
        assert_eq!(many.build(), Err(RoleError::TooManyClusterGrants(501)));
    }
}
