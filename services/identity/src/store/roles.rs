//! Custom roles: create, read, list, update, delete.

use slipway_db::sea_orm::ActiveValue::Set;
use slipway_db::sea_orm::sea_query::Expr;
use slipway_db::sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};

use super::entity::{api_token, invitation, membership, role};
use super::requests::claim;
use super::types::{
    InvitationStatus, NameCursor, NewRole, Page, PageRequest, Role, RoleChanges, into_page,
    new_etag, new_id, now,
};
use super::{
    Created, Precondition, RequestKey, Resource, Store, StoreError, StoreResult, commit,
    missed_update,
};

fn role_from_model(m: role::Model) -> Role {
    Role {
        id: m.id,
        organization_id: m.organization_id,
        name: m.name,
        description: m.description,
        grants: m.grants,
        create_time: m.create_time,
        update_time: m.update_time,
        etag: m.etag,
    }
}

async fn load_role<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<Role> {
    role::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await
        .map_err(StoreError::db)?
        .map(role_from_model)
        .ok_or(StoreError::NotFound(Resource::Role))
}

impl Store {
    /// Creates a custom role. A name taken in the organization is
    /// [`StoreError::AlreadyExists`]; an unknown organization is not found.
    pub async fn create_role(&self, new: &NewRole) -> StoreResult<Role> {
        self.create_role_once(new, None)
            .await
            .map(Created::into_inner)
    }

    /// [`Store::create_role`] with an optional idempotency key, recorded in the same
    /// transaction: a repeat of the key returns the role the first request created (as a
    /// get of it would, so not found once deleted) and writes nothing.
    pub async fn create_role_once(
        &self,
        new: &NewRole,
        request: Option<&RequestKey>,
    ) -> StoreResult<Created<Role>> {
        let time = now();
        let id = new_id();
        let txn = self.begin().await?;
        if let Some(key) = request
            && !claim(&txn, key, &id).await?
        {
            drop(txn);
            let first = self.recorded_resource(key).await?;
            return self.get_role(&first).await.map(Created::Repeat);
        }
        let role = role::ActiveModel {
            id: Set(id),
            organization_id: Set(new.organization_id.clone()),
            name: Set(new.name.clone()),
            description: Set(new.description.clone()),
            grants: Set(new.grants.clone()),
            create_time: Set(time),
            update_time: Set(time),
            etag: Set(new_etag()),
        }
        .insert(&txn)
        .await
        .map(role_from_model)
        .map_err(|err| {
            if slipway_db::is_foreign_key_violation(&err) {
                StoreError::NotFound(Resource::Organization)
            } else {
                StoreError::on_write(Resource::Role)(err)
            }
        })?;
        commit(txn).await?;
        Ok(Created::New(role))
    }

    /// A custom role by id.
    pub async fn get_role(&self, id: &str) -> StoreResult<Role> {
        load_role(&self.db, id).await
    }

    /// An organization's custom roles, ordered by name.
    pub async fn list_roles(
        &self,
        organization_id: &str,
        page: &PageRequest<NameCursor>,
    ) -> StoreResult<Page<Role, NameCursor>> {
        let limit = page.limit();
        let mut query =
            role::Entity::find().filter(role::Column::OrganizationId.eq(organization_id));
        if let Some(after) = &page.after {
            query = query.filter(role::Column::Name.gt(after.name.as_str()));
        }
        let rows = query
            .order_by_asc(role::Column::Name)
            .limit(limit + 1)
            .all(&self.db)
            .await
            .map_err(StoreError::db)?;
        let roles = rows.into_iter().map(role_from_model).collect();
        Ok(into_page(roles, limit, |r: &Role| NameCursor {
            name: r.name.clone(),
        }))
    }

    /// Changes a custom role, when its etag is still `expected_etag` (`None`: no check).
    /// Grants are replaced whole.
    pub async fn update_role(
        &self,
        id: &str,
        expected_etag: Option<&str>,
        changes: &RoleChanges,
    ) -> StoreResult<Role> {
        let txn = self.begin().await?;
        let mut update = role::Entity::update_many()
            .col_expr(role::Column::Etag, Expr::value(new_etag()))
            .col_expr(role::Column::UpdateTime, Expr::value(now()))
            .filter(role::Column::Id.eq(id));
        if let Some(name) = &changes.name {
            update = update.col_expr(role::Column::Name, Expr::value(name.clone()));
        }
        if let Some(description) = &changes.description {
            update = update.col_expr(role::Column::Description, Expr::value(description.clone()));
        }
        if let Some(grants) = &changes.grants {
            update = update.col_expr(role::Column::Grants, Expr::value(grants.clone()));
        }
        if let Some(etag) = expected_etag {
            update = update.filter(role::Column::Etag.eq(etag));
        }
        let result = update
            .exec(&txn)
            .await
            .map_err(StoreError::on_write(Resource::Role))?;
        if result.rows_affected == 0 {
            return Err(missed_update::<role::Entity, _>(&txn, id, Resource::Role).await);
        }
        let role = load_role(&txn, id).await?;
        commit(txn).await?;
        Ok(role)
    }

    /// Deletes a custom role, refused with [`Precondition::RoleInUse`] while a member, an
    /// API token or an unexpired pending invitation holds it.
    ///
    /// The check runs after the etag update has locked the role; the foreign keys from
    /// members and tokens back it up against one assigned concurrently.
    pub async fn delete_role(&self, id: &str, expected_etag: Option<&str>) -> StoreResult<()> {
        let time = now();
        let txn = self.begin().await?;
        let mut bump = role::Entity::update_many()
            .col_expr(role::Column::Etag, Expr::value(new_etag()))
            .col_expr(role::Column::UpdateTime, Expr::value(time))
            .filter(role::Column::Id.eq(id));
        if let Some(etag) = expected_etag {
            bump = bump.filter(role::Column::Etag.eq(etag));
        }
        if bump.exec(&txn).await.map_err(StoreError::db)?.rows_affected == 0 {
            return Err(missed_update::<role::Entity, _>(&txn, id, Resource::Role).await);
        }

        let members = membership::Entity::find()
            .filter(membership::Column::CustomRoleId.eq(id))
            .count(&txn)
            .await
            .map_err(StoreError::db)?;
        let tokens = api_token::Entity::find()
            .filter(api_token::Column::CustomRoleId.eq(id))
            .count(&txn)
            .await
            .map_err(StoreError::db)?;
        let invitations = invitation::Entity::find()
            .filter(invitation::Column::CustomRoleId.eq(id))
            .filter(invitation::Column::Status.eq(InvitationStatus::Pending.as_str()))
            .filter(invitation::Column::ExpireTime.gt(time))
            .count(&txn)
            .await
            .map_err(StoreError::db)?;
        if members + tokens + invitations > 0 {
            return Err(StoreError::FailedPrecondition(Precondition::RoleInUse));
        }

        role::Entity::delete_by_id(id.to_owned())
            .exec(&txn)
            .await
            .map_err(|err| {
                if slipway_db::is_foreign_key_violation(&err) {
                    StoreError::FailedPrecondition(Precondition::RoleInUse)
                } else {
                    StoreError::db(err)
                }
            })?;
        commit(txn).await
    }
}
