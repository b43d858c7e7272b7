//! Fixtures shared by the RBAC tests.
#![allow(dead_code)] // each test file uses a different part

use std::sync::Arc;

use slipway_auth::rbac::{
    Action, ClusterPermission, CustomRole, EnvironmentMode, ModePermissions, ProjectPermission,
    Resource, Scope,
};

/// Where a check happens: the scope fields a resource gets, whichever the action needs.
#[derive(Clone, Copy, Debug)]
pub struct Place {
    pub organization: &'static str,
    pub project: &'static str,
    pub mode: EnvironmentMode,
    pub cluster: &'static str,
}

impl Place {
    /// A resource in this place shaped for `action`: exactly the scope fields it needs, so
    /// an environment action names an environment (and its mode) and a preview action a
    /// preview environment.
    pub fn resource(self, action: Action) -> Resource<'static> {
        let org = Resource::in_organization(self.organization);
        match action.scope() {
            Scope::Organization => org,
            Scope::Cluster => org.on_cluster(self.cluster),
            Scope::Project => org.in_project(self.project),
            Scope::ProjectMode => org
                .in_project(self.project)
                .in_environment("env-1", self.mode),
            Scope::ProjectModeCluster => org
                .in_project(self.project)
                .in_mode(self.mode)
                .on_cluster(self.cluster),
            Scope::Preview => org
                .in_project(self.project)
                .in_environment("preview-1", EnvironmentMode::Preview),
        }
    }
}

/// The custom role of the permission matrix, `web-team`:
///
/// - project `web`: PRODUCTION VIEWER, STAGING DEPLOYER, DEVELOPMENT MANAGER, PREVIEW VIEWER;
///   every other project NO_ACCESS (no default);
/// - clusters: `stg-cluster` ENV_CREATOR, `dev-cluster` ADMIN, `secret-cluster` NO_ACCESS,
///   every other cluster VIEWER (the default).
pub fn web_team() -> Arc<CustomRole> {
    use EnvironmentMode::*;
    use ProjectPermission as P;
    let web = ModePermissions::NONE
        .with(Production, P::Viewer)
        .with(Staging, P::Deployer)
        .with(Development, P::Manager)
        .with(Preview, P::Viewer);
    Arc::new(
        CustomRole::builder("role-web-team")
            .project("web", web)
            .default_cluster_permission(ClusterPermission::Viewer)
            .cluster("stg-cluster", ClusterPermission::EnvCreator)
            .cluster("dev-cluster", ClusterPermission::Admin)
            .cluster("secret-cluster", ClusterPermission::NoAccess)
            .build()
            .expect("valid role"),
    )
}
