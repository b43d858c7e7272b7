//! Per-organization data keys (wrapped by the master key) and clusters' connection state.

use chrono::{DateTime, Utc};
use slipway_db::sea_orm::ConnectionTrait as _;
use slipway_db::sea_orm::sea_query::{Alias, Expr, ExprTrait as _, OnConflict, Query};

use super::{Store, StoreError, StoreResult, now};

/// Whether a cluster's agent is connected, as the orchestrator replica holding its stream
/// last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConnection {
    pub cluster_id: String,
    pub organization_id: String,
    pub connected: bool,
    pub agent_version: String,
    /// Which orchestrator replica holds the agent's stream.
    pub replica_id: String,
    pub last_heartbeat_time: Option<DateTime<Utc>>,
    pub connect_time: Option<DateTime<Utc>>,
    pub update_time: DateTime<Utc>,
}

impl Store {
    /// The organization's wrapped data key, creating it with `wrapped_new` on first use.
    /// Two first uses racing both offer a key; the first stored wins and both get it.
    pub async fn organization_key(
        &self,
        organization_id: &str,
        wrapped_new: impl FnOnce() -> Vec<u8>,
    ) -> StoreResult<Vec<u8>> {
        if let Some(key) = self.stored_key(organization_id).await? {
            return Ok(key);
        }
        let insert = Query::insert()
            .into_table(Alias::new("organization_keys"))
            .columns([
                Alias::new("organization_id"),
                Alias::new("wrapped_key"),
                Alias::new("create_time"),
            ])
            .values_panic([organization_id.into(), wrapped_new().into(), now().into()])
            .on_conflict(
                OnConflict::column(Alias::new("organization_id"))
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        self.db.execute(&insert).await.map_err(StoreError::db)?;
        self.stored_key(organization_id)
            .await?
            .ok_or_else(|| StoreError::corrupt("an organization key vanished".to_owned()))
    }

    async fn stored_key(&self, organization_id: &str) -> StoreResult<Option<Vec<u8>>> {
        let select = Query::select()
            .column(Alias::new("wrapped_key"))
            .from(Alias::new("organization_keys"))
            .and_where(Expr::col(Alias::new("organization_id")).eq(organization_id))
            .to_owned();
        match self.db.query_one(&select).await.map_err(StoreError::db)? {
            Some(row) => row
                .try_get("", "wrapped_key")
                .map(Some)
                .map_err(StoreError::db),
            None => Ok(None),
        }
    }

    /// Records a cluster's connection state (insert or replace).
    pub async fn put_cluster_connection(&self, state: &ClusterConnection) -> StoreResult<()> {
        let columns = [
            "cluster_id",
            "organization_id",
            "connected",
            "agent_version",
            "replica_id",
            "last_heartbeat_time",
            "connect_time",
            "update_time",
        ];
        let insert = Query::insert()
            .into_table(Alias::new("cluster_connections"))
            .columns(columns.map(Alias::new))
            .values_panic([
                state.cluster_id.clone().into(),
                state.organization_id.clone().into(),
                state.connected.into(),
                state.agent_version.clone().into(),
                state.replica_id.clone().into(),
                state.last_heartbeat_time.into(),
                state.connect_time.into(),
                state.update_time.into(),
            ])
            .on_conflict(
                OnConflict::column(Alias::new("cluster_id"))
                    .update_columns(columns[2..].iter().copied().map(Alias::new))
                    .to_owned(),
            )
            .to_owned();
        self.db.execute(&insert).await.map_err(StoreError::db)?;
        Ok(())
    }

    /// A cluster's connection state; `None` when no agent ever connected.
    pub async fn cluster_connection(
        &self,
        cluster_id: &str,
    ) -> StoreResult<Option<ClusterConnection>> {
        let select = Query::select()
            .columns(
                [
                    "cluster_id",
                    "organization_id",
                    "connected",
                    "agent_version",
                    "replica_id",
                    "last_heartbeat_time",
                    "connect_time",
                    "update_time",
                ]
                .map(Alias::new),
            )
            .from(Alias::new("cluster_connections"))
            .and_where(Expr::col(Alias::new("cluster_id")).eq(cluster_id))
            .to_owned();
        let Some(row) = self.db.query_one(&select).await.map_err(StoreError::db)? else {
            return Ok(None);
        };
        let read = || -> Result<ClusterConnection, slipway_db::DbErr> {
            Ok(ClusterConnection {
                cluster_id: row.try_get("", "cluster_id")?,
                organization_id: row.try_get("", "organization_id")?,
                connected: row.try_get("", "connected")?,
                agent_version: row.try_get("", "agent_version")?,
                replica_id: row.try_get("", "replica_id")?,
                last_heartbeat_time: row.try_get("", "last_heartbeat_time")?,
                connect_time: row.try_get("", "connect_time")?,
                update_time: row.try_get("", "update_time")?,
            })
        };
        read().map(Some).map_err(StoreError::db)
    }
}
