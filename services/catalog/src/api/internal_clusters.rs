//! The cluster half of `slipway.catalog.v1.CatalogInternalService`: resolving an agent
//! token to its cluster, and recording agents' connection state.
//!
//! This is not a tonic service of its own: `api/internal.rs` implements the
//! `CatalogInternalService` trait and delegates `AuthenticateClusterAgent` and
//! `ReportClusterConnection` to [`InternalClusters`], so one server answers every
//! internal RPC.
//!
//! Only control-plane service principals (`slps_` credentials from the installation's
//! configuration) may call: these RPCs vouch for agents and write connection state, which
//! no user or API token may do, whatever its role.

use chrono::{DateTime, Utc};
use slipway_api::Violations;
use slipway_auth::credential::{Credential, CredentialKind};
use slipway_auth::rbac::{Principal, PrincipalKind};
use slipway_proto::catalog::v1 as pb;
use slipway_proto::{ApiError, AuthFailure};

use super::clusters::token_lookup_hash;
use super::{CatalogMessage as _, Context, precondition};
use crate::store::{ClusterConnection, Kind, StoreError};

/// The permission internal RPCs name when they refuse a caller.
pub const INTERNAL_PERMISSION: &str = "catalog.internal";

/// The internal cluster RPCs. Cheap to clone.
#[derive(Clone)]
pub struct InternalClusters {
    ctx: Context,
}

/// PERMISSION_DENIED unless `principal` is a control-plane service.
pub fn require_service(principal: &Principal) -> Result<(), ApiError> {
    if principal.kind() == PrincipalKind::Service {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied {
            permission: INTERNAL_PERMISSION.to_owned(),
        })
    }
}

/// The time of a proto timestamp; `None` when it is out of range.
fn time_of(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

impl InternalClusters {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }

    /// `AuthenticateClusterAgent`: the cluster and organization of an agent token.
    ///
    /// The token's shape and checksum are checked first, so a mistyped or foreign string
    /// is refused without a database lookup. Every refusal of the token itself is the
    /// same UNAUTHENTICATED (TOKEN_INVALID): unknown, rotated away and deleted look alike.
    pub async fn authenticate_cluster_agent(
        &self,
        principal: &Principal,
        request: pb::AuthenticateClusterAgentRequest,
    ) -> Result<pb::AuthenticateClusterAgentResponse, ApiError> {
        let mut v = Violations::new();
        if request.agent_token.is_empty() {
            v.add("agent_token", "is required");
        }
        v.finish()?;
        require_service(principal)?;
        let invalid = || ApiError::Unauthenticated(AuthFailure::TokenInvalid);
        let credential = Credential::parse_as(CredentialKind::Agent, &request.agent_token)
            .map_err(|_| invalid())?;
        let hash = token_lookup_hash(&credential.hash());
        let row = match self
            .ctx
            .store
            .find_by_lookup_hash(Kind::Cluster, &hash)
            .await
        {
            Ok(row) => row,
            Err(StoreError::NotFound(_)) => return Err(invalid()),
            Err(other) => return Err(other.into()),
        };
        Ok(pb::AuthenticateClusterAgentResponse {
            cluster_id: row.id,
            organization_id: row.organization_id,
        })
    }

    /// `ReportClusterConnection`: records whether the cluster's agent is connected.
    ///
    /// A report older than the recorded heartbeat is ignored (reports from two
    /// orchestrator replicas, or a retried one, may arrive out of order). The read and the
    /// write are not one transaction: two reports racing may both pass the check, and
    /// the later write wins, which the next heartbeat corrects within 30 seconds.
    pub async fn report_cluster_connection(
        &self,
        principal: &Principal,
        request: pb::ReportClusterConnectionRequest,
    ) -> Result<pb::ReportClusterConnectionResponse, ApiError> {
        let mut v = Violations::new();
        v.required("cluster_id", &request.cluster_id);
        let heartbeat = match &request.heartbeat_time {
            None => {
                v.add("heartbeat_time", "is required");
                None
            }
            Some(timestamp) => {
                let time = time_of(timestamp);
                if time.is_none() {
                    v.add("heartbeat_time", "is not a valid time");
                }
                time
            }
        };
        v.max_chars("agent_version", &request.agent_version, 64);
        v.finish()?;
        require_service(principal)?;
        let row = self.ctx.row(Kind::Cluster, &request.cluster_id).await?;
        let cluster = pb::Cluster::from_row(&row)?;
        if cluster.kind == i32::from(pb::ClusterKind::Managed) {
            return Err(precondition(
                "CLUSTER_NOT_PROVISIONED",
                Kind::Cluster.as_str(),
                "the cluster is MANAGED and not provisioned: it has no agent".to_owned(),
            ));
        }
        let previous = self.ctx.store.cluster_connection(&row.id).await?;
        if let (Some(previous), Some(heartbeat)) = (&previous, heartbeat)
            && previous
                .last_heartbeat_time
                .is_some_and(|recorded| heartbeat < recorded)
        {
            return Ok(pb::ReportClusterConnectionResponse {});
        }
        let now = crate::store::now();
        let was_connected = previous.as_ref().is_some_and(|p| p.connected);
        let connect_time = match (&previous, request.connected) {
            (Some(previous), true) if was_connected => previous.connect_time,
            (_, true) => heartbeat,
            (Some(previous), false) => previous.connect_time,
            (None, false) => None,
        };
        let agent_version = if request.agent_version.is_empty() {
            previous
                .as_ref()
                .map(|p| p.agent_version.clone())
                .unwrap_or_default()
        } else {
            request.agent_version
        };
        let state = ClusterConnection {
            cluster_id: row.id.clone(),
            organization_id: row.organization_id.clone(),
            connected: request.connected,
            agent_version,
            // The request does not say which replica reports; keep what was recorded.
            replica_id: previous
                .as_ref()
                .map(|p| p.replica_id.clone())
                .unwrap_or_default(),
            last_heartbeat_time: heartbeat,
            connect_time,
            update_time: now,
        };
        self.ctx.store.put_cluster_connection(&state).await?;
        Ok(pb::ReportClusterConnectionResponse {})
    }
}
