//! The scheduler's copy of catalog's rules and its record of fired transitions.

use chrono::{DateTime, Utc};
use prost::Message as _;
use slipway_db::DatabaseConnection;
use slipway_db::sea_orm::ConnectionTrait as _;
use slipway_db::sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict, Query};
use slipway_proto::catalog::v1 as cat;

use super::rules::Transition;
use crate::store::m0004_schedule::{ScheduleFirings as F, ScheduleRules as R};
use crate::store::{StoreError, now};

/// The scheduler's tables. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ScheduleStore {
    db: DatabaseConnection,
}

impl ScheduleStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Stores (or replaces) the copy of `rule`.
    pub async fn upsert_rule(&self, rule: &cat::DeploymentRule) -> Result<(), StoreError> {
        let (project_id, environment_id) = match &rule.target {
            Some(cat::deployment_rule::Target::ProjectId(id)) => (id.clone(), String::new()),
            Some(cat::deployment_rule::Target::EnvironmentId(id)) => (String::new(), id.clone()),
            None => (String::new(), String::new()),
        };
        let statement = Query::insert()
            .into_table(R::Table)
            .columns([
                R::RuleId,
                R::OrganizationId,
                R::ProjectId,
                R::EnvironmentId,
                R::Spec,
                R::SyncTime,
            ])
            .values_panic([
                rule.id.clone().into(),
                rule.organization_id.clone().into(),
                project_id.into(),
                environment_id.into(),
                rule.encode_to_vec().into(),
                now().into(),
            ])
            .on_conflict(
                OnConflict::column(R::RuleId)
                    .update_columns([
                        R::OrganizationId,
                        R::ProjectId,
                        R::EnvironmentId,
                        R::Spec,
                        R::SyncTime,
                    ])
                    .to_owned(),
            )
            .to_owned();
        self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(())
    }

    /// Forgets a rule (deleted in catalog).
    pub async fn delete_rule(&self, id: &str) -> Result<(), StoreError> {
        let statement = Query::delete()
            .from_table(R::Table)
            .and_where(Expr::col(R::RuleId).eq(id))
            .to_owned();
        self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(())
    }

    /// Every rule known, as catalog last answered it.
    pub async fn rules(&self) -> Result<Vec<cat::DeploymentRule>, StoreError> {
        let statement = Query::select()
            .column(R::Spec)
            .from(R::Table)
            .order_by(R::RuleId, slipway_db::sea_orm::sea_query::Order::Asc)
            .to_owned();
        let rows = self
            .db
            .query_all(&statement)
            .await
            .map_err(StoreError::db)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let spec: Vec<u8> = row.try_get("", "spec").map_err(StoreError::db)?;
            match cat::DeploymentRule::decode(spec.as_slice()) {
                Ok(rule) => out.push(rule),
                Err(error) => tracing::warn!(%error, "undecodable stored deployment rule skipped"),
            }
        }
        Ok(out)
    }

    /// Whether the transition was fired already.
    pub async fn fired(
        &self,
        rule_id: &str,
        at: DateTime<Utc>,
        kind: Transition,
    ) -> Result<bool, StoreError> {
        let statement = Query::select()
            .column(F::RuleId)
            .from(F::Table)
            .and_where(Expr::col(F::RuleId).eq(rule_id))
            .and_where(Expr::col(F::TransitionTime).eq(at))
            .and_where(Expr::col(F::Kind).eq(kind.as_str()))
            .to_owned();
        Ok(self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?
            .is_some())
    }

    /// Marks the transition fired; false when another replica (or an earlier tick)
    /// already did.
    pub async fn mark_fired(
        &self,
        rule_id: &str,
        at: DateTime<Utc>,
        kind: Transition,
    ) -> Result<bool, StoreError> {
        let statement = Query::insert()
            .into_table(F::Table)
            .columns([F::RuleId, F::TransitionTime, F::Kind, F::FireTime])
            .values_panic([
                rule_id.into(),
                at.into(),
                kind.as_str().into(),
                now().into(),
            ])
            .on_conflict(
                OnConflict::columns([F::RuleId, F::TransitionTime, F::Kind])
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        let result = self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(result.rows_affected() == 1)
    }
}
