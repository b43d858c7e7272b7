//! Queries on `previews` and `preview_deliveries` (migration `m0005_previews`).

use chrono::{DateTime, Utc};
use slipway_db::DatabaseConnection;
use slipway_db::sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict, Order, Query};
use slipway_db::sea_orm::{ConnectionTrait as _, DbErr, QueryResult};

use crate::store::m0005_previews::{PreviewDeliveries as W, Previews as P};
use crate::store::{now, query_rows};

/// What a preview query failed with. Messages are lowercase and carry no SQL.
#[derive(Debug, thiserror::Error)]
pub enum PreviewStoreError {
    /// Another preview holds this (blueprint, repository, pull request) or request id.
    #[error("a preview of this blueprint for this pull request already exists")]
    Taken,
    /// The database could not be reached (worth retrying).
    #[error("the database is unavailable")]
    Unavailable(#[source] DbErr),
    /// Anything else: a bug or a corrupt row.
    #[error("internal database error")]
    Internal(#[source] DbErr),
}

impl PreviewStoreError {
    fn db(err: DbErr) -> Self {
        if slipway_db::is_unique_violation(&err) {
            Self::Taken
        } else if slipway_db::is_unavailable(&err) {
            Self::Unavailable(err)
        } else {
            Self::Internal(err)
        }
    }
}

pub type PreviewStoreResult<T> = Result<T, PreviewStoreError>;

/// One row of `previews`: a claim on a pull request of a blueprint, and, once the catalog
/// cloned it, the preview environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewRow {
    pub id: String,
    pub organization_id: String,
    pub project_id: String,
    pub blueprint_environment_id: String,
    pub environment_id: Option<String>,
    pub cluster_id: String,
    pub name: String,
    pub repository_url: String,
    pub repository_key: String,
    pub pull_request_number: u64,
    pub source_branch: String,
    pub target_branch: String,
    pub web_url: String,
    pub request_id: Option<String>,
    pub deployed_git_commit_sha: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

const COLUMNS: [P; 17] = [
    P::Id,
    P::OrganizationId,
    P::ProjectId,
    P::BlueprintEnvironmentId,
    P::EnvironmentId,
    P::ClusterId,
    P::Name,
    P::RepositoryUrl,
    P::RepositoryKey,
    P::PullRequestNumber,
    P::SourceBranch,
    P::TargetBranch,
    P::WebUrl,
    P::RequestId,
    P::DeployedGitCommitSha,
    P::CreateTime,
    P::UpdateTime,
];

impl PreviewRow {
    fn from_result(r: &QueryResult) -> Result<Self, DbErr> {
        let number: i64 = r.try_get("", "pull_request_number")?;
        Ok(Self {
            id: r.try_get("", "id")?,
            organization_id: r.try_get("", "organization_id")?,
            project_id: r.try_get("", "project_id")?,
            blueprint_environment_id: r.try_get("", "blueprint_environment_id")?,
            environment_id: r.try_get("", "environment_id")?,
            cluster_id: r.try_get("", "cluster_id")?,
            name: r.try_get("", "name")?,
            repository_url: r.try_get("", "repository_url")?,
            repository_key: r.try_get("", "repository_key")?,
            pull_request_number: u64::try_from(number).unwrap_or_default(),
            source_branch: r.try_get("", "source_branch")?,
            target_branch: r.try_get("", "target_branch")?,
            web_url: r.try_get("", "web_url")?,
            request_id: r.try_get("", "request_id")?,
            deployed_git_commit_sha: r.try_get("", "deployed_git_commit_sha")?,
            create_time: r.try_get("", "create_time")?,
            update_time: r.try_get("", "update_time")?,
        })
    }
}

/// The preview tables. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct PreviewStore {
    db: DatabaseConnection,
}

impl PreviewStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    async fn rows(
        &self,
        statement: slipway_db::sea_orm::sea_query::SelectStatement,
    ) -> PreviewStoreResult<Vec<PreviewRow>> {
        query_rows(&self.db, &statement, PreviewRow::from_result)
            .await
            .map_err(PreviewStoreError::db)
    }

    /// Records `row` as a claim (no environment yet). [`PreviewStoreError::Taken`] when a
    /// preview of that blueprint and pull request, or of that request id, exists.
    pub async fn claim(&self, row: &PreviewRow) -> PreviewStoreResult<()> {
        let number = i64::try_from(row.pull_request_number).unwrap_or(i64::MAX);
        let statement = Query::insert()
            .into_table(P::Table)
            .columns(COLUMNS)
            .values_panic([
                row.id.clone().into(),
                row.organization_id.clone().into(),
                row.project_id.clone().into(),
                row.blueprint_environment_id.clone().into(),
                row.environment_id.clone().into(),
                row.cluster_id.clone().into(),
                row.name.clone().into(),
                row.repository_url.clone().into(),
                row.repository_key.clone().into(),
                number.into(),
                row.source_branch.clone().into(),
                row.target_branch.clone().into(),
                row.web_url.clone().into(),
                row.request_id.clone().into(),
                row.deployed_git_commit_sha.clone().into(),
                row.create_time.into(),
                row.update_time.into(),
            ])
            .to_owned();
        self.db
            .execute(&statement)
            .await
            .map_err(PreviewStoreError::db)?;
        Ok(())
    }

    /// The preview (or claim) of a blueprint for a pull request.
    pub async fn by_pull_request(
        &self,
        blueprint_environment_id: &str,
        repository_key: &str,
        number: u64,
    ) -> PreviewStoreResult<Option<PreviewRow>> {
        let statement = Query::select()
            .columns(COLUMNS)
            .from(P::Table)
            .and_where(Expr::col(P::BlueprintEnvironmentId).eq(blueprint_environment_id))
            .and_where(Expr::col(P::RepositoryKey).eq(repository_key))
            .and_where(
                Expr::col(P::PullRequestNumber).eq(i64::try_from(number).unwrap_or(i64::MAX)),
            )
            .to_owned();
        Ok(self.rows(statement).await?.pop())
    }

    /// Every preview of an organization for one pull request, whatever the blueprint.
    pub async fn of_pull_request(
        &self,
        organization_id: &str,
        repository_key: &str,
        number: u64,
    ) -> PreviewStoreResult<Vec<PreviewRow>> {
        let statement = Query::select()
            .columns(COLUMNS)
            .from(P::Table)
            .and_where(Expr::col(P::OrganizationId).eq(organization_id))
            .and_where(Expr::col(P::RepositoryKey).eq(repository_key))
            .and_where(
                Expr::col(P::PullRequestNumber).eq(i64::try_from(number).unwrap_or(i64::MAX)),
            )
            .order_by(P::Id, Order::Asc)
            .to_owned();
        self.rows(statement).await
    }

    /// The preview created by `CreatePreviewEnvironment` with this request id.
    pub async fn by_request(
        &self,
        organization_id: &str,
        request_id: &str,
    ) -> PreviewStoreResult<Option<PreviewRow>> {
        let statement = Query::select()
            .columns(COLUMNS)
            .from(P::Table)
            .and_where(Expr::col(P::OrganizationId).eq(organization_id))
            .and_where(Expr::col(P::RequestId).eq(request_id))
            .to_owned();
        Ok(self.rows(statement).await?.pop())
    }

    /// The preview whose catalog environment is `environment_id`.
    pub async fn by_environment(
        &self,
        environment_id: &str,
    ) -> PreviewStoreResult<Option<PreviewRow>> {
        let statement = Query::select()
            .columns(COLUMNS)
            .from(P::Table)
            .and_where(Expr::col(P::EnvironmentId).eq(environment_id))
            .to_owned();
        Ok(self.rows(statement).await?.pop())
    }

    /// Records the environment the catalog cloned for claim `id`.
    pub async fn set_environment(
        &self,
        id: &str,
        environment_id: &str,
        name: &str,
    ) -> PreviewStoreResult<()> {
        let statement = Query::update()
            .table(P::Table)
            .value(P::EnvironmentId, environment_id)
            .value(P::Name, name)
            .value(P::UpdateTime, now())
            .and_where(Expr::col(P::Id).eq(id))
            .to_owned();
        self.db
            .execute(&statement)
            .await
            .map_err(PreviewStoreError::db)?;
        Ok(())
    }

    /// Records the head commit queued for deployment.
    pub async fn set_deployed_sha(&self, id: &str, sha: &str) -> PreviewStoreResult<()> {
        let statement = Query::update()
            .table(P::Table)
            .value(P::DeployedGitCommitSha, sha)
            .value(P::UpdateTime, now())
            .and_where(Expr::col(P::Id).eq(id))
            .to_owned();
        self.db
            .execute(&statement)
            .await
            .map_err(PreviewStoreError::db)?;
        Ok(())
    }

    /// Forgets a preview (its environment was deleted) or a failed claim.
    pub async fn remove(&self, id: &str) -> PreviewStoreResult<()> {
        let statement = Query::delete()
            .from_table(P::Table)
            .and_where(Expr::col(P::Id).eq(id))
            .to_owned();
        self.db
            .execute(&statement)
            .await
            .map_err(PreviewStoreError::db)?;
        Ok(())
    }

    /// Records a webhook delivery; `false` when it was recorded before (a redelivery).
    pub async fn record_delivery(
        &self,
        provider: &str,
        delivery_id: &str,
        organization_id: &str,
    ) -> PreviewStoreResult<bool> {
        let statement = Query::insert()
            .into_table(W::Table)
            .columns([
                W::Provider,
                W::DeliveryId,
                W::OrganizationId,
                W::Outcome,
                W::ReceiveTime,
            ])
            .values_panic([
                provider.into(),
                delivery_id.into(),
                organization_id.into(),
                "processing".into(),
                now().into(),
            ])
            .on_conflict(
                OnConflict::columns([W::Provider, W::DeliveryId])
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        let result = self
            .db
            .execute(&statement)
            .await
            .map_err(PreviewStoreError::db)?;
        Ok(result.rows_affected() == 1)
    }

    /// Writes what a recorded delivery did.
    pub async fn finish_delivery(
        &self,
        provider: &str,
        delivery_id: &str,
        outcome: &str,
    ) -> PreviewStoreResult<()> {
        let statement = Query::update()
            .table(W::Table)
            .value(W::Outcome, outcome)
            .and_where(Expr::col(W::Provider).eq(provider))
            .and_where(Expr::col(W::DeliveryId).eq(delivery_id))
            .to_owned();
        self.db
            .execute(&statement)
            .await
            .map_err(PreviewStoreError::db)?;
        Ok(())
    }

    /// Forgets a delivery that failed, so the provider's redelivery is handled afresh.
    pub async fn forget_delivery(
        &self,
        provider: &str,
        delivery_id: &str,
    ) -> PreviewStoreResult<()> {
        let statement = Query::delete()
            .from_table(W::Table)
            .and_where(Expr::col(W::Provider).eq(provider))
            .and_where(Expr::col(W::DeliveryId).eq(delivery_id))
            .to_owned();
        self.db
            .execute(&statement)
            .await
            .map_err(PreviewStoreError::db)?;
        Ok(())
    }

    /// What a recorded delivery did (`processing` while it is handled); `None` when it
    /// was never recorded or was forgotten after a failure.
    pub async fn delivery_outcome(
        &self,
        provider: &str,
        delivery_id: &str,
    ) -> PreviewStoreResult<Option<String>> {
        let statement = Query::select()
            .column(W::Outcome)
            .from(W::Table)
            .and_where(Expr::col(W::Provider).eq(provider))
            .and_where(Expr::col(W::DeliveryId).eq(delivery_id))
            .to_owned();
        let row = self
            .db
            .query_one(&statement)
            .await
            .map_err(PreviewStoreError::db)?;
        match row {
            Some(row) => Ok(Some(
                row.try_get("", "outcome")
                    .map_err(PreviewStoreError::Internal)?,
            )),
            None => Ok(None),
        }
    }
}
