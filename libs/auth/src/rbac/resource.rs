//! What an action is on: `slipway.identity.v1.Resource`, borrowed.

use std::fmt;

use super::action::{Action, Scope};

/// What an environment is for (`slipway.common.v1.EnvironmentMode`). Custom roles grant per
/// mode, so production can be locked down while development stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EnvironmentMode {
    /// Serves real users.
    Production,
    /// Pre-production copy used to validate releases.
    Staging,
    /// Day-to-day development.
    Development,
    /// Ephemeral copy of a blueprint environment for one pull request.
    Preview,
}

impl EnvironmentMode {
    /// Every mode, in proto order.
    pub const ALL: [Self; 4] = [
        Self::Production,
        Self::Staging,
        Self::Development,
        Self::Preview,
    ];

    /// A lowercase name for messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Staging => "staging",
            Self::Development => "development",
            Self::Preview => "preview",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EnvironmentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of resource an action can be about (`slipway.identity.v1.ResourceKind`).
/// RBAC reads it only to recognise a principal acting on itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// An organization.
    Organization,
    /// A member of an organization.
    Member,
    /// An invitation.
    Invitation,
    /// A custom role.
    Role,
    /// An API token.
    ApiToken,
    /// An audit event.
    AuditEvent,
    /// A cluster.
    Cluster,
    /// A project.
    Project,
    /// A project's deployment rule.
    DeploymentRule,
    /// An environment.
    Environment,
    /// A service inside an environment.
    Service,
    /// A variable or secret.
    Variable,
    /// A deployment.
    Deployment,
    /// The logs of an environment or service.
    Logs,
    /// A preview environment.
    PreviewEnvironment,
    /// A notification webhook.
    Webhook,
    /// A build.
    Build,
    /// A container registry.
    Registry,
    /// A git credential.
    GitCredential,
}

/// Where an action applies: the target and the scope RBAC evaluates it in. The asking
/// service fills the scope from its own records (an environment's project, mode and
/// cluster); RBAC never looks anything up.
///
/// Borrowed, so a service builds one from the ids it already holds without allocating.
/// An empty string counts as unset, as in proto3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resource<'a> {
    /// What the action is on; for create and list actions, the kind created or listed.
    pub kind: Option<ResourceKind>,
    /// The target's own id; unset for create and list actions.
    pub id: Option<&'a str>,
    /// The organization the target belongs to. Required.
    pub organization_id: &'a str,
    /// The project, for projects and everything in them.
    pub project_id: Option<&'a str>,
    /// The environment, for environment-scoped targets. Recorded in audit events; RBAC
    /// uses the mode, which must come with it.
    pub environment_id: Option<&'a str>,
    /// The environment's mode.
    pub environment_mode: Option<EnvironmentMode>,
    /// The cluster, for cluster targets and for placing a new environment.
    pub cluster_id: Option<&'a str>,
}

impl<'a> Resource<'a> {
    /// A resource of `organization_id`, every other field unset.
    pub const fn in_organization(organization_id: &'a str) -> Self {
        Self {
            kind: None,
            id: None,
            organization_id,
            project_id: None,
            environment_id: None,
            environment_mode: None,
            cluster_id: None,
        }
    }

    /// Sets the kind (alone, for create and list actions).
    pub const fn of_kind(mut self, kind: ResourceKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Sets the kind and the target's id.
    pub const fn target(mut self, kind: ResourceKind, id: &'a str) -> Self {
        self.kind = Some(kind);
        self.id = Some(id);
        self
    }

    /// Sets the project.
    pub const fn in_project(mut self, project_id: &'a str) -> Self {
        self.project_id = Some(project_id);
        self
    }

    /// Sets the environment and its mode, which always travel together.
    pub const fn in_environment(mut self, environment_id: &'a str, mode: EnvironmentMode) -> Self {
        self.environment_id = Some(environment_id);
        self.environment_mode = Some(mode);
        self
    }

    /// Sets the mode alone (environment create and list actions narrowed to one mode).
    pub const fn in_mode(mut self, mode: EnvironmentMode) -> Self {
        self.environment_mode = Some(mode);
        self
    }

    /// Sets the cluster.
    pub const fn on_cluster(mut self, cluster_id: &'a str) -> Self {
        self.cluster_id = Some(cluster_id);
        self
    }

    /// Checks that the fields `action` needs are set ([`Action::scope`]). Check answers
    /// INVALID_ARGUMENT with the field named when this fails.
    pub fn check_scope(&self, action: Action) -> Result<(), ScopeError> {
        if self.organization_id.is_empty() {
            return Err(ScopeError::Missing(ScopeField::OrganizationId));
        }
        let needs_project = !matches!(action.scope(), Scope::Organization | Scope::Cluster);
        if needs_project && present(self.project_id).is_none() {
            return Err(ScopeError::Missing(ScopeField::ProjectId));
        }
        match action.scope() {
            Scope::Organization | Scope::Project => {}
            Scope::Cluster => {
                if present(self.cluster_id).is_none() {
                    return Err(ScopeError::Missing(ScopeField::ClusterId));
                }
            }
            Scope::ProjectMode => {
                if present(self.environment_id).is_some() && self.environment_mode.is_none() {
                    return Err(ScopeError::Missing(ScopeField::EnvironmentMode));
                }
            }
            Scope::ProjectModeCluster => {
                if self.environment_mode.is_none() {
                    return Err(ScopeError::Missing(ScopeField::EnvironmentMode));
                }
                if present(self.cluster_id).is_none() {
                    return Err(ScopeError::Missing(ScopeField::ClusterId));
                }
            }
            Scope::Preview => {
                if self
                    .environment_mode
                    .is_some_and(|mode| mode != EnvironmentMode::Preview)
                {
                    return Err(ScopeError::PreviewModeRequired);
                }
            }
        }
        Ok(())
    }

    /// The mode RBAC evaluates `action` in: [`EnvironmentMode::Preview`] for preview
    /// actions, none for project actions, else the resource's mode.
    pub(crate) fn effective_mode(&self, action: Action) -> Option<EnvironmentMode> {
        match action.scope() {
            Scope::Preview => Some(EnvironmentMode::Preview),
            Scope::ProjectMode | Scope::ProjectModeCluster => self.environment_mode,
            Scope::Organization | Scope::Cluster | Scope::Project => None,
        }
    }
}

/// `Some` non-empty string, else `None`: proto3 cannot tell unset from empty.
pub(crate) fn present(field: Option<&str>) -> Option<&str> {
    field.filter(|value| !value.is_empty())
}

/// A [`Resource`] field an action needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeField {
    /// `organization_id`.
    OrganizationId,
    /// `project_id`.
    ProjectId,
    /// `environment_mode`.
    EnvironmentMode,
    /// `cluster_id`.
    ClusterId,
}

impl ScopeField {
    /// The proto field name, for a BadRequest field violation (`resource.<name>`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OrganizationId => "organization_id",
            Self::ProjectId => "project_id",
            Self::EnvironmentMode => "environment_mode",
            Self::ClusterId => "cluster_id",
        }
    }
}

/// Why a resource cannot be checked for an action: the asking service left out part of the
/// scope. A bug in the caller, never a denial to guess around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ScopeError {
    /// A field the action needs is unset.
    #[error("resource.{} is required for this action", .0.as_str())]
    Missing(ScopeField),
    /// A preview action on an environment mode other than PREVIEW.
    #[error("resource.environment_mode must be PREVIEW for a preview action")]
    PreviewModeRequired,
}

impl ScopeError {
    /// The offending field.
    pub const fn field(&self) -> ScopeField {
        match self {
            Self::Missing(field) => *field,
            Self::PreviewModeRequired => ScopeField::EnvironmentMode,
        }
    }
}
