//! `request_id` idempotency: the creates' `identity_request_ids` table, and the actions'
//! `identity_action_results`.
//!
//! A create that carries a key first records it, in the create's transaction, with the id of the
//! resource it is about to insert. The primary key on (scope, method, request_id) makes a
//! repeat fail that insert (after waiting for the first transaction, when it is still
//! running); the repeat then drops its transaction and answers with the recorded resource.
//! A failed create rolls its key back with it, so a retry of a failed request runs anew.

use slipway_db::sea_orm::sea_query::{Alias, Expr, ExprTrait as _, Query};
use slipway_db::sea_orm::{ConnectionTrait as _, DatabaseTransaction};

use super::{Store, StoreError, StoreResult, now};

const TABLE: &str = "identity_request_ids";

/// The idempotency key of a create: a repeat of `request_id` for the same scope and method
/// returns the resource the first call created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestKey {
    /// The organization the resource is created in, or the caller's user id for
    /// CreateOrganization.
    pub scope: String,
    /// The RPC method, such as `CreateRole`.
    pub method: &'static str,
    /// The client's key.
    pub request_id: String,
}

impl RequestKey {
    /// The key of a request, or `None` when it carries no `request_id`.
    pub fn new(scope: &str, method: &'static str, request_id: &str) -> Option<Self> {
        (!request_id.is_empty()).then(|| Self {
            scope: scope.to_owned(),
            method,
            request_id: request_id.to_owned(),
        })
    }
}

/// What a create with an optional [`RequestKey`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created<T> {
    /// It created `T`.
    New(T),
    /// The key was recorded before: `T` is the resource the first request created, and
    /// nothing was written.
    Repeat(T),
}

impl<T> Created<T> {
    /// The resource, new or not.
    pub fn into_inner(self) -> T {
        match self {
            Self::New(value) | Self::Repeat(value) => value,
        }
    }

    /// Whether this call created it.
    pub fn is_new(&self) -> bool {
        matches!(self, Self::New(_))
    }
}

/// Records `key` in `txn` as creating `resource_id`. `Ok(false)` means the key
/// was recorded before: the transaction is then unusable (PostgreSQL aborts it) and must be
/// dropped; `Store::recorded_resource` tells what the first request created.
pub(super) async fn claim(
    txn: &DatabaseTransaction,
    key: &RequestKey,
    resource_id: &str,
) -> StoreResult<bool> {
    let statement = Query::insert()
        .into_table(Alias::new(TABLE))
        .columns([
            Alias::new("scope"),
            Alias::new("method"),
            Alias::new("request_id"),
            Alias::new("resource_id"),
            Alias::new("create_time"),
        ])
        .values_panic([
            key.scope.clone().into(),
            key.method.into(),
            key.request_id.clone().into(),
            resource_id.to_owned().into(),
            now().into(),
        ])
        .to_owned();
    match txn.execute(&statement).await {
        Ok(_) => Ok(true),
        Err(err) if slipway_db::is_unique_violation(&err) => Ok(false),
        Err(err) => Err(StoreError::db(err)),
    }
}

impl Store {
    /// The id of the resource the request `key` created.
    pub(super) async fn recorded_resource(&self, key: &RequestKey) -> StoreResult<String> {
        let statement = Query::select()
            .column(Alias::new("resource_id"))
            .from(Alias::new(TABLE))
            .and_where(Expr::col(Alias::new("scope")).eq(key.scope.as_str()))
            .and_where(Expr::col(Alias::new("method")).eq(key.method))
            .and_where(Expr::col(Alias::new("request_id")).eq(key.request_id.as_str()))
            .to_owned();
        let row = self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?
            .ok_or_else(|| StoreError::corrupt("a recorded request vanished".to_owned()))?;
        row.try_get("", "resource_id").map_err(StoreError::db)
    }
}

const ACTION_RESULTS: &str = "identity_action_results";

impl Store {
    /// The encoded response of the action `key` names, when it succeeded before.
    pub async fn recorded_action(&self, key: &RequestKey) -> StoreResult<Option<Vec<u8>>> {
        let statement = Query::select()
            .column(Alias::new("response"))
            .from(Alias::new(ACTION_RESULTS))
            .and_where(Expr::col(Alias::new("scope")).eq(key.scope.as_str()))
            .and_where(Expr::col(Alias::new("method")).eq(key.method))
            .and_where(Expr::col(Alias::new("request_id")).eq(key.request_id.as_str()))
            .to_owned();
        let Some(row) = self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?
        else {
            return Ok(None);
        };
        row.try_get("", "response")
            .map(Some)
            .map_err(StoreError::db)
    }

    /// Records the encoded `response` of the action `key` names. A key recorded already
    /// (two repeats that ran at once, the second refused by the action's own state check
    /// or answering the same) keeps its first response.
    pub async fn record_action(&self, key: &RequestKey, response: Vec<u8>) -> StoreResult<()> {
        let statement = Query::insert()
            .into_table(Alias::new(ACTION_RESULTS))
            .columns([
                Alias::new("scope"),
                Alias::new("method"),
                Alias::new("request_id"),
                Alias::new("response"),
                Alias::new("create_time"),
            ])
            .values_panic([
                key.scope.clone().into(),
                key.method.into(),
                key.request_id.clone().into(),
                response.into(),
                now().into(),
            ])
            .to_owned();
        match self.db.execute(&statement).await {
            Ok(_) => Ok(()),
            Err(err) if slipway_db::is_unique_violation(&err) => Ok(()),
            Err(err) => Err(StoreError::db(err)),
        }
    }
}
