//! Queries on `webhooks` and `webhook_deliveries`.
//!
//! List filters (event types, project ids, modes) are stored as comma-separated text: they
//! are only ever read whole, with their webhook, never searched.

use chrono::{DateTime, Utc};
use slipway_db::DatabaseConnection;
use slipway_db::sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict, Order, Query};
use slipway_db::sea_orm::{ConnectionTrait, DbErr, QueryResult, TransactionTrait as _};

use crate::store::m0003_notifications::{WebhookDeliveries as D, Webhooks as W};
use crate::store::{RequestKey, StoreError, query_rows, record_request, recorded_request};

/// What a webhook write failed with, beyond the database.
#[derive(Debug, thiserror::Error)]
pub enum WebhookStoreError {
    /// Another webhook of the organization has the name.
    #[error("the webhook name is taken")]
    NameTaken,
    /// The etag sent is not the current one (or the webhook is gone).
    #[error("the webhook changed since it was read")]
    Stale,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A webhook as stored, secret sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub description: String,
    pub url: String,
    pub secret_sealed: Vec<u8>,
    pub event_types: Vec<i32>,
    pub project_ids: Vec<String>,
    pub environment_modes: Vec<i32>,
    pub enabled: bool,
    pub etag: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

/// One delivery of one event to one webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub organization_id: String,
    pub dedup_key: String,
    pub event_id: String,
    pub event_type: i32,
    pub deployment_id: String,
    pub status: i32,
    pub attempt: i32,
    pub response_status_code: i32,
    pub error_message: String,
    pub attempt_time: Option<DateTime<Utc>>,
    pub next_retry_time: Option<DateTime<Utc>>,
    /// Length-delimited `WebhookDeliveryAttempt`s.
    pub attempts: Vec<u8>,
    pub body: Vec<u8>,
    pub redelivered_from: String,
    pub create_time: DateTime<Utc>,
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn split_strings(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn split_numbers(text: &str) -> Result<Vec<i32>, DbErr> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| DbErr::Custom(format!("bad number list {text}")))
        })
        .collect()
}

const WEBHOOK_COLUMNS: [W; 13] = [
    W::Id,
    W::OrganizationId,
    W::Name,
    W::Description,
    W::Url,
    W::SecretSealed,
    W::EventTypes,
    W::ProjectIds,
    W::EnvironmentModes,
    W::Enabled,
    W::Etag,
    W::CreateTime,
    W::UpdateTime,
];

impl WebhookRow {
    fn from_result(r: &QueryResult) -> Result<Self, DbErr> {
        let event_types: String = r.try_get("", "event_types")?;
        let project_ids: String = r.try_get("", "project_ids")?;
        let modes: String = r.try_get("", "environment_modes")?;
        Ok(Self {
            id: r.try_get("", "id")?,
            organization_id: r.try_get("", "organization_id")?,
            name: r.try_get("", "name")?,
            description: r.try_get("", "description")?,
            url: r.try_get("", "url")?,
            secret_sealed: r.try_get("", "secret_sealed")?,
            event_types: split_numbers(&event_types)?,
            project_ids: split_strings(&project_ids),
            environment_modes: split_numbers(&modes)?,
            enabled: r.try_get("", "enabled")?,
            etag: r.try_get("", "etag")?,
            create_time: r.try_get("", "create_time")?,
            update_time: r.try_get("", "update_time")?,
        })
    }

    fn values(&self) -> Vec<slipway_db::sea_orm::sea_query::SimpleExpr> {
        vec![
            self.id.clone().into(),
            self.organization_id.clone().into(),
            self.name.clone().into(),
            self.description.clone().into(),
            self.url.clone().into(),
            self.secret_sealed.clone().into(),
            join(&self.event_types).into(),
            join(&self.project_ids).into(),
            join(&self.environment_modes).into(),
            self.enabled.into(),
            self.etag.clone().into(),
            self.create_time.into(),
            self.update_time.into(),
        ]
    }
}

const DELIVERY_COLUMNS: [D; 17] = [
    D::Id,
    D::WebhookId,
    D::OrganizationId,
    D::DedupKey,
    D::EventId,
    D::EventType,
    D::DeploymentId,
    D::Status,
    D::Attempt,
    D::ResponseStatusCode,
    D::ErrorMessage,
    D::AttemptTime,
    D::NextRetryTime,
    D::Attempts,
    D::Body,
    D::RedeliveredFrom,
    D::CreateTime,
];

impl DeliveryRow {
    fn from_result(r: &QueryResult) -> Result<Self, DbErr> {
        Ok(Self {
            id: r.try_get("", "id")?,
            webhook_id: r.try_get("", "webhook_id")?,
            organization_id: r.try_get("", "organization_id")?,
            dedup_key: r.try_get("", "dedup_key")?,
            event_id: r.try_get("", "event_id")?,
            event_type: r.try_get("", "event_type")?,
            deployment_id: r.try_get("", "deployment_id")?,
            status: r.try_get("", "status")?,
            attempt: r.try_get("", "attempt")?,
            response_status_code: r.try_get("", "response_status_code")?,
            error_message: r.try_get("", "error_message")?,
            attempt_time: r.try_get("", "attempt_time")?,
            next_retry_time: r.try_get("", "next_retry_time")?,
            attempts: r.try_get("", "attempts")?,
            body: r.try_get("", "body")?,
            redelivered_from: r.try_get("", "redelivered_from")?,
            create_time: r.try_get("", "create_time")?,
        })
    }
}

/// The notification tables. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NotificationStore {
    db: DatabaseConnection,
}

/// A new etag: changes on every write.
pub fn new_etag() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

impl NotificationStore {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Inserts `row` and returns its id and `true`. With a `request` key recorded before,
    /// inserts nothing and returns the id the first request created and `false`.
    pub async fn insert_webhook(
        &self,
        row: &WebhookRow,
        request: Option<&RequestKey>,
    ) -> Result<(String, bool), WebhookStoreError> {
        let txn = self.db.begin().await.map_err(StoreError::db)?;
        if let Some(key) = request
            && let Err(err) = txn.execute(&record_request(key, &row.id)).await
        {
            drop(txn);
            if slipway_db::is_unique_violation(&err) {
                return Ok((self.replay(key).await?, false));
            }
            return Err(StoreError::db(err).into());
        }
        let insert = Query::insert()
            .into_table(W::Table)
            .columns(WEBHOOK_COLUMNS)
            .values_panic(row.values())
            .to_owned();
        if let Err(err) = txn.execute(&insert).await {
            if slipway_db::is_unique_violation(&err) {
                return Err(WebhookStoreError::NameTaken);
            }
            return Err(StoreError::db(err).into());
        }
        txn.commit().await.map_err(StoreError::db)?;
        Ok((row.id.clone(), true))
    }

    /// The resource id a recorded request created.
    pub async fn replay(&self, key: &RequestKey) -> Result<String, StoreError> {
        let statement = recorded_request(key);
        let result = self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?
            .ok_or(StoreError::NotFound("request"))?;
        result.try_get("", "resource_id").map_err(StoreError::db)
    }

    /// Records `key` as having created `resource_id`; false when it was recorded before.
    pub async fn record_request(
        &self,
        key: &RequestKey,
        resource_id: &str,
    ) -> Result<bool, StoreError> {
        match self.db.execute(&record_request(key, resource_id)).await {
            Ok(_) => Ok(true),
            Err(err) if slipway_db::is_unique_violation(&err) => Ok(false),
            Err(err) => Err(StoreError::db(err)),
        }
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>, StoreError> {
        let statement = Query::select()
            .columns(WEBHOOK_COLUMNS)
            .from(W::Table)
            .and_where(Expr::col(W::Id).eq(id))
            .to_owned();
        let row = self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?;
        row.as_ref()
            .map(WebhookRow::from_result)
            .transpose()
            .map_err(StoreError::db)
    }

    /// Webhooks of an organization ordered by name, after `after_name`, at most `limit`.
    pub async fn list_webhooks(
        &self,
        organization_id: &str,
        after_name: Option<&str>,
        limit: u64,
    ) -> Result<Vec<WebhookRow>, StoreError> {
        let mut statement = Query::select()
            .columns(WEBHOOK_COLUMNS)
            .from(W::Table)
            .and_where(Expr::col(W::OrganizationId).eq(organization_id))
            .order_by(W::Name, Order::Asc)
            .limit(limit)
            .to_owned();
        if let Some(name) = after_name {
            statement.and_where(Expr::col(W::Name).gt(name));
        }
        self.webhooks(statement).await
    }

    /// The enabled webhooks of an organization: who an event may go to.
    pub async fn enabled_webhooks(
        &self,
        organization_id: &str,
    ) -> Result<Vec<WebhookRow>, StoreError> {
        let statement = Query::select()
            .columns(WEBHOOK_COLUMNS)
            .from(W::Table)
            .and_where(Expr::col(W::OrganizationId).eq(organization_id))
            .and_where(Expr::col(W::Enabled).eq(true))
            .to_owned();
        self.webhooks(statement).await
    }

    async fn webhooks(
        &self,
        statement: slipway_db::sea_orm::sea_query::SelectStatement,
    ) -> Result<Vec<WebhookRow>, StoreError> {
        query_rows(&self.db, &statement, WebhookRow::from_result)
            .await
            .map_err(StoreError::db)
    }

    /// Replaces the webhook with `row` if its etag is still `expected_etag`. Disabling it
    /// drops its pending retries in the same transaction.
    pub async fn update_webhook(
        &self,
        row: &WebhookRow,
        expected_etag: &str,
    ) -> Result<(), WebhookStoreError> {
        let txn = self.db.begin().await.map_err(StoreError::db)?;
        let update = Query::update()
            .table(W::Table)
            .value(W::Name, row.name.clone())
            .value(W::Description, row.description.clone())
            .value(W::Url, row.url.clone())
            .value(W::SecretSealed, row.secret_sealed.clone())
            .value(W::EventTypes, join(&row.event_types))
            .value(W::ProjectIds, join(&row.project_ids))
            .value(W::EnvironmentModes, join(&row.environment_modes))
            .value(W::Enabled, row.enabled)
            .value(W::Etag, row.etag.clone())
            .value(W::UpdateTime, row.update_time)
            .and_where(Expr::col(W::Id).eq(row.id.as_str()))
            .and_where(Expr::col(W::Etag).eq(expected_etag))
            .to_owned();
        let result = match txn.execute(&update).await {
            Ok(result) => result,
            Err(err) if slipway_db::is_unique_violation(&err) => {
                return Err(WebhookStoreError::NameTaken);
            }
            Err(err) => return Err(StoreError::db(err).into()),
        };
        if result.rows_affected() != 1 {
            return Err(WebhookStoreError::Stale);
        }
        if !row.enabled {
            txn.execute(&fail_pending(&row.id, "the webhook was disabled"))
                .await
                .map_err(StoreError::db)?;
        }
        txn.commit().await.map_err(StoreError::db)?;
        Ok(())
    }

    /// Deletes the webhook (when its etag is `etag`, if given) and its delivery log.
    pub async fn delete_webhook(
        &self,
        id: &str,
        etag: Option<&str>,
    ) -> Result<(), WebhookStoreError> {
        let txn = self.db.begin().await.map_err(StoreError::db)?;
        let mut delete = Query::delete()
            .from_table(W::Table)
            .and_where(Expr::col(W::Id).eq(id))
            .to_owned();
        if let Some(etag) = etag {
            delete.and_where(Expr::col(W::Etag).eq(etag));
        }
        let result = txn.execute(&delete).await.map_err(StoreError::db)?;
        if result.rows_affected() != 1 {
            return Err(WebhookStoreError::Stale);
        }
        let deliveries = Query::delete()
            .from_table(D::Table)
            .and_where(Expr::col(D::WebhookId).eq(id))
            .to_owned();
        txn.execute(&deliveries).await.map_err(StoreError::db)?;
        txn.commit().await.map_err(StoreError::db)?;
        Ok(())
    }

    /// Records a delivery; false when the webhook already has one with its dedup key.
    pub async fn insert_delivery(&self, row: &DeliveryRow) -> Result<bool, StoreError> {
        let statement = Query::insert()
            .into_table(D::Table)
            .columns(DELIVERY_COLUMNS)
            .values_panic([
                row.id.clone().into(),
                row.webhook_id.clone().into(),
                row.organization_id.clone().into(),
                row.dedup_key.clone().into(),
                row.event_id.clone().into(),
                row.event_type.into(),
                row.deployment_id.clone().into(),
                row.status.into(),
                row.attempt.into(),
                row.response_status_code.into(),
                row.error_message.clone().into(),
                row.attempt_time.into(),
                row.next_retry_time.into(),
                row.attempts.clone().into(),
                row.body.clone().into(),
                row.redelivered_from.clone().into(),
                row.create_time.into(),
            ])
            .on_conflict(
                OnConflict::columns([D::WebhookId, D::DedupKey])
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        let result = self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        let statement = Query::select()
            .columns(DELIVERY_COLUMNS)
            .from(D::Table)
            .and_where(Expr::col(D::Id).eq(id))
            .to_owned();
        let row = self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?;
        row.as_ref()
            .map(DeliveryRow::from_result)
            .transpose()
            .map_err(StoreError::db)
    }

    /// A webhook's deliveries newest first (ids are UUIDv7), before `before_id`.
    pub async fn list_deliveries(
        &self,
        webhook_id: &str,
        statuses: &[i32],
        deployment_id: &str,
        before_id: Option<&str>,
        limit: u64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut statement = Query::select()
            .columns(DELIVERY_COLUMNS)
            .from(D::Table)
            .and_where(Expr::col(D::WebhookId).eq(webhook_id))
            .order_by(D::Id, Order::Desc)
            .limit(limit)
            .to_owned();
        if !statuses.is_empty() {
            statement.and_where(Expr::col(D::Status).is_in(statuses.iter().copied()));
        }
        if !deployment_id.is_empty() {
            statement.and_where(Expr::col(D::DeploymentId).eq(deployment_id));
        }
        if let Some(id) = before_id {
            statement.and_where(Expr::col(D::Id).lt(id));
        }
        self.deliveries(statement).await
    }

    /// Pending deliveries due at `now`, oldest first.
    pub async fn due_deliveries(
        &self,
        pending: i32,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let statement = Query::select()
            .columns(DELIVERY_COLUMNS)
            .from(D::Table)
            .and_where(Expr::col(D::Status).eq(pending))
            .and_where(Expr::col(D::NextRetryTime).lte(now))
            .order_by(D::NextRetryTime, Order::Asc)
            .limit(limit)
            .to_owned();
        self.deliveries(statement).await
    }

    async fn deliveries(
        &self,
        statement: slipway_db::sea_orm::sea_query::SelectStatement,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        query_rows(&self.db, &statement, DeliveryRow::from_result)
            .await
            .map_err(StoreError::db)
    }

    /// Takes a due delivery for one attempt: moves its due time from `due` to `until`, so
    /// no other sender (another replica) takes it meanwhile. False when someone else did.
    pub async fn claim(
        &self,
        id: &str,
        pending: i32,
        due: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let statement = Query::update()
            .table(D::Table)
            .value(D::NextRetryTime, until)
            .and_where(Expr::col(D::Id).eq(id))
            .and_where(Expr::col(D::Status).eq(pending))
            .and_where(Expr::col(D::NextRetryTime).eq(due))
            .to_owned();
        let result = self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(result.rows_affected() == 1)
    }

    /// Deletes the deliveries recorded before `before` that are no longer pending (the
    /// log keeps 30 days); returns how many went.
    pub async fn prune(&self, pending: i32, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let statement = Query::delete()
            .from_table(D::Table)
            .and_where(Expr::col(D::CreateTime).lt(before))
            .and_where(Expr::col(D::Status).ne(pending))
            .to_owned();
        let result = self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(result.rows_affected())
    }

    /// Stores the outcome of an attempt (the row's status, counters, log and next due time).
    pub async fn record_attempt(&self, row: &DeliveryRow) -> Result<(), StoreError> {
        let statement = Query::update()
            .table(D::Table)
            .value(D::Status, row.status)
            .value(D::Attempt, row.attempt)
            .value(D::ResponseStatusCode, row.response_status_code)
            .value(D::ErrorMessage, row.error_message.clone())
            .value(D::AttemptTime, row.attempt_time)
            .value(D::NextRetryTime, row.next_retry_time)
            .value(D::Attempts, row.attempts.clone())
            .and_where(Expr::col(D::Id).eq(row.id.as_str()))
            .to_owned();
        self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(())
    }
}

/// Ends a webhook's pending deliveries as failed, with `message`.
fn fail_pending(
    webhook_id: &str,
    message: &str,
) -> slipway_db::sea_orm::sea_query::UpdateStatement {
    use slipway_proto::deploy::v1::WebhookDeliveryStatus as S;
    Query::update()
        .table(D::Table)
        .value(D::Status, S::Failed as i32)
        .value(D::ErrorMessage, message)
        .value(D::NextRetryTime, Option::<DateTime<Utc>>::None)
        .and_where(Expr::col(D::WebhookId).eq(webhook_id))
        .and_where(Expr::col(D::Status).eq(S::Pending as i32))
        .to_owned()
}
