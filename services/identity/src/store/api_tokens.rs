//! API tokens: create, find by secret hash, read, list, revoke, record use.

use chrono::{DateTime, TimeDelta, Utc};
use slipway_db::sea_orm::ActiveValue::Set;
use slipway_db::sea_orm::sea_query::Expr;
use slipway_db::sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};

use super::entity::{api_token, organization};
use super::requests::claim;
use super::types::{
    ApiToken, NameCursor, NewApiToken, Page, PageRequest, SecretHash, into_page, new_id, now,
    truncate_time,
};
use super::{
    Created, RequestKey, Resource, Store, StoreError, StoreResult, commit, principal_from_columns,
    role_from_columns,
};

fn api_token_from_model(m: api_token::Model) -> StoreResult<ApiToken> {
    Ok(ApiToken {
        role: role_from_columns(m.builtin_role.as_deref(), m.custom_role_id.as_deref())?,
        creator: principal_from_columns(&m.creator_kind, &m.creator_id, &m.creator_display_name)?,
        id: m.id,
        organization_id: m.organization_id,
        name: m.name,
        description: m.description,
        expire_time: m.expire_time,
        secret_hint: m.secret_hint,
        last_use_time: m.last_use_time,
        create_time: m.create_time,
    })
}

impl Store {
    /// Records a new API token. A name taken in the organization is
    /// [`StoreError::AlreadyExists`]; an unknown organization, or a custom role that is not
    /// the organization's, is not found.
    pub async fn create_api_token(&self, new: &NewApiToken) -> StoreResult<ApiToken> {
        self.create_api_token_once(new, None)
            .await
            .map(Created::into_inner)
    }

    /// [`Store::create_api_token`] with an optional idempotency key, recorded in the same
    /// transaction: a repeat of the key returns the metadata of the token the first request
    /// created (as a get of it would, so not found once revoked) and writes nothing; the
    /// repeat's `secret_hash` is unused.
    pub async fn create_api_token_once(
        &self,
        new: &NewApiToken,
        request: Option<&RequestKey>,
    ) -> StoreResult<Created<ApiToken>> {
        let id = new_id();
        let txn = self.begin().await?;
        if let Some(key) = request
            && !claim(&txn, key, &id).await?
        {
            drop(txn);
            let first = self.recorded_resource(key).await?;
            return self.get_api_token(&first).await.map(Created::Repeat);
        }
        let (builtin, custom) = new.role.to_columns();
        let inserted = api_token::ActiveModel {
            id: Set(id),
            organization_id: Set(new.organization_id.clone()),
            name: Set(new.name.clone()),
            description: Set(new.description.clone()),
            builtin_role: Set(builtin),
            custom_role_id: Set(custom),
            secret_hash: Set(new.secret_hash.as_hex().to_owned()),
            secret_hint: Set(new.secret_hint.clone()),
            expire_time: Set(new.expire_time.map(truncate_time)),
            last_use_time: Set(None),
            creator_kind: Set(new.creator.kind.as_str().to_owned()),
            creator_id: Set(new.creator.id.clone()),
            creator_display_name: Set(new.creator.display_name.clone()),
            create_time: Set(now()),
        }
        .insert(&txn)
        .await;
        match inserted {
            Ok(row) => {
                commit(txn).await?;
                api_token_from_model(row).map(Created::New)
            }
            Err(err) if slipway_db::is_foreign_key_violation(&err) => {
                // Nothing is written: roll back before looking further.
                drop(txn);
                // Two references could be missing: tell which.
                let org = organization::Entity::find_by_id(new.organization_id.clone())
                    .one(&self.db)
                    .await
                    .map_err(StoreError::db)?;
                Err(StoreError::NotFound(if org.is_some() {
                    Resource::Role
                } else {
                    Resource::Organization
                }))
            }
            Err(err) => Err(StoreError::on_write(Resource::ApiToken)(err)),
        }
    }

    /// An API token's metadata by id.
    pub async fn get_api_token(&self, id: &str) -> StoreResult<ApiToken> {
        self.find_api_token(Condition::all().add(api_token::Column::Id.eq(id)))
            .await
    }

    /// The token whose secret hashes to `hash`: what authentication looks up. Expiry is
    /// the caller's to judge (it answers `TOKEN_EXPIRED`, not `TOKEN_INVALID`).
    pub async fn find_api_token_by_secret_hash(&self, hash: &SecretHash) -> StoreResult<ApiToken> {
        self.find_api_token(Condition::all().add(api_token::Column::SecretHash.eq(hash.as_hex())))
            .await
    }

    async fn find_api_token(&self, condition: Condition) -> StoreResult<ApiToken> {
        api_token::Entity::find()
            .filter(condition)
            .one(&self.db)
            .await
            .map_err(StoreError::db)?
            .ok_or(StoreError::NotFound(Resource::ApiToken))
            .and_then(api_token_from_model)
    }

    /// An organization's API tokens, ordered by name (expired ones included).
    pub async fn list_api_tokens(
        &self,
        organization_id: &str,
        page: &PageRequest<NameCursor>,
    ) -> StoreResult<Page<ApiToken, NameCursor>> {
        let limit = page.limit();
        let mut query =
            api_token::Entity::find().filter(api_token::Column::OrganizationId.eq(organization_id));
        if let Some(after) = &page.after {
            query = query.filter(api_token::Column::Name.gt(after.name.as_str()));
        }
        let rows = query
            .order_by_asc(api_token::Column::Name)
            .limit(limit + 1)
            .all(&self.db)
            .await
            .map_err(StoreError::db)?;
        let tokens = rows
            .into_iter()
            .map(api_token_from_model)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(into_page(tokens, limit, |t| NameCursor {
            name: t.name.clone(),
        }))
    }

    /// Revokes an API token: deletes it, so its secret stops matching at once. Returns what
    /// it was, for the change event and the audit log.
    pub async fn revoke_api_token(&self, id: &str) -> StoreResult<ApiToken> {
        let token = self.get_api_token(id).await?;
        // No transaction: if a concurrent revoke deletes it first, this one answers
        // NOT_FOUND, which is the truth by then.
        let deleted = api_token::Entity::delete_by_id(id.to_owned())
            .exec(&self.db)
            .await
            .map_err(StoreError::db)?;
        if deleted.rows_affected == 0 {
            return Err(StoreError::NotFound(Resource::ApiToken));
        }
        Ok(token)
    }

    /// Records that token `id` authenticated a call at `at`, unless its last recorded use
    /// is less than `min_interval` earlier; returns whether it wrote.
    ///
    /// Authentication calls this on every request, so it must not write every time: one
    /// conditional `UPDATE` that matches nothing within the interval is all a busy token
    /// costs, and concurrent requests cannot move the time backwards.
    pub async fn touch_api_token(
        &self,
        id: &str,
        at: DateTime<Utc>,
        min_interval: TimeDelta,
    ) -> StoreResult<bool> {
        let at = truncate_time(at);
        let threshold = at - min_interval;
        let result = api_token::Entity::update_many()
            .col_expr(api_token::Column::LastUseTime, Expr::value(at))
            .filter(api_token::Column::Id.eq(id))
            .filter(
                Condition::any()
                    .add(api_token::Column::LastUseTime.is_null())
                    .add(api_token::Column::LastUseTime.lte(threshold)),
            )
            .exec(&self.db)
            .await
            .map_err(StoreError::db)?;
        Ok(result.rows_affected > 0)
    }
}
