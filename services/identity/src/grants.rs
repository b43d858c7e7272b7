//! The JSON document a custom role's grants are stored as, and its conversion to the RBAC
//! [`CustomRole`] that authorization evaluates.
//!
//! The store keeps grants as one opaque document (they are always read and replaced whole);
//! this module owns its shape. Names are the proto enum names without their prefix
//! (`PRODUCTION`, `MANAGER`), so the stored form reads well and survives enum reordering.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use slipway_auth::rbac::{
    ClusterPermission, CustomRole, EnvironmentMode, ModePermissions, ProjectPermission,
};

/// A custom role's grants as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grants {
    /// Mode → permission in every project without a grant of its own.
    pub default_project_permissions: BTreeMap<String, String>,
    pub project_grants: Vec<ProjectGrant>,
    /// Permission on every cluster without a grant of its own; absent: no access.
    pub default_cluster_permission: Option<String>,
    pub cluster_grants: Vec<ClusterGrant>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectGrant {
    pub project_id: String,
    pub permissions: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterGrant {
    pub cluster_id: String,
    pub permission: String,
}

/// Why a stored document is not a valid role: a corrupt row, never the caller's fault.
#[derive(Debug, thiserror::Error)]
#[error("stored role grants are invalid: {0}")]
pub struct GrantsError(String);

fn mode(name: &str) -> Result<EnvironmentMode, GrantsError> {
    match name {
        "PRODUCTION" => Ok(EnvironmentMode::Production),
        "STAGING" => Ok(EnvironmentMode::Staging),
        "DEVELOPMENT" => Ok(EnvironmentMode::Development),
        "PREVIEW" => Ok(EnvironmentMode::Preview),
        other => Err(GrantsError(format!("unknown environment mode {other:?}"))),
    }
}

fn project_permission(name: &str) -> Result<ProjectPermission, GrantsError> {
    match name {
        "NO_ACCESS" => Ok(ProjectPermission::NoAccess),
        "VIEWER" => Ok(ProjectPermission::Viewer),
        "DEPLOYER" => Ok(ProjectPermission::Deployer),
        "MANAGER" => Ok(ProjectPermission::Manager),
        other => Err(GrantsError(format!("unknown project permission {other:?}"))),
    }
}

fn cluster_permission(name: &str) -> Result<ClusterPermission, GrantsError> {
    match name {
        "NO_ACCESS" | "" => Ok(ClusterPermission::NoAccess),
        "VIEWER" => Ok(ClusterPermission::Viewer),
        "ENV_CREATOR" => Ok(ClusterPermission::EnvCreator),
        "ADMIN" => Ok(ClusterPermission::Admin),
        other => Err(GrantsError(format!("unknown cluster permission {other:?}"))),
    }
}

fn modes(entries: &BTreeMap<String, String>) -> Result<ModePermissions, GrantsError> {
    entries
        .iter()
        .try_fold(ModePermissions::NONE, |permissions, (name, permission)| {
            Ok(permissions.with(mode(name)?, project_permission(permission)?))
        })
}

impl Grants {
    /// Reads a stored document.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, GrantsError> {
        Self::deserialize(value).map_err(|error| GrantsError(error.to_string()))
    }

    /// The document to store.
    pub fn to_json(&self) -> serde_json::Value {
        // Maps with string keys and strings always serialize.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The role RBAC evaluates, under id `role_id`.
    pub fn to_custom_role(&self, role_id: &str) -> Result<CustomRole, GrantsError> {
        let mut builder = CustomRole::builder(role_id)
            .default_project_permissions(modes(&self.default_project_permissions)?)
            .default_cluster_permission(cluster_permission(
                self.default_cluster_permission.as_deref().unwrap_or(""),
            )?);
        for grant in &self.project_grants {
            builder = builder.project(grant.project_id.as_str(), modes(&grant.permissions)?);
        }
        for grant in &self.cluster_grants {
            builder = builder.cluster(
                grant.cluster_id.as_str(),
                cluster_permission(&grant.permission)?,
            );
        }
        builder
            .build()
            .map_err(|error| GrantsError(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_grants_become_the_rbac_role() {
        let grants = Grants {
            default_project_permissions: [("PRODUCTION".into(), "VIEWER".into())].into(),
            project_grants: vec![ProjectGrant {
                project_id: "p1".into(),
                permissions: [("STAGING".into(), "MANAGER".into())].into(),
            }],
            default_cluster_permission: Some("VIEWER".into()),
            cluster_grants: vec![ClusterGrant {
                cluster_id: "c1".into(),
                permission: "ADMIN".into(),
            }],
        };
        let back = Grants::from_json(&grants.to_json()).unwrap();
        assert_eq!(back, grants);
        let role = back.to_custom_role("r").unwrap();
        assert_eq!(
            role.project_permissions("other")
                .get(EnvironmentMode::Production),
            ProjectPermission::Viewer
        );
        assert_eq!(
            role.project_permissions("p1").get(EnvironmentMode::Staging),
            ProjectPermission::Manager
        );
        assert_eq!(role.cluster_permission("c1"), ClusterPermission::Admin);
        assert_eq!(role.cluster_permission("c2"), ClusterPermission::Viewer);
        let bad = serde_json::json!({"default_cluster_permission": "ROOT"});
        assert!(
            Grants::from_json(&bad)
                .unwrap()
                .to_custom_role("r")
                .is_err()
        );
    }
}
