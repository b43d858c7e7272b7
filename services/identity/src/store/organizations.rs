//! Organizations: create (with the owner's membership), read, list, update, delete,
//! transfer ownership.

use slipway_db::sea_orm::ActiveValue::Set;
use slipway_db::sea_orm::sea_query::Expr;
use slipway_db::sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, ConnectionTrait, DbErr, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, RelationTrait as _,
};

use super::entity::{api_token, invitation, membership, organization, role};
use super::members::{find_member, load_member};
use super::requests::claim;
use super::types::{
    BuiltinRole, Member, NameCursor, NewOrganization, Organization, OrganizationChanges,
    OwnershipTransfer, Page, PageRequest, into_page, new_etag, new_id, now,
};
use super::{
    Created, Precondition, RequestKey, Resource, Store, StoreError, StoreResult, commit,
    missed_update,
};

pub(super) fn organization_from_model(m: organization::Model) -> Organization {
    Organization {
        id: m.id,
        name: m.name,
        display_name: m.display_name,
        owner_user_id: m.owner_user_id,
        create_time: m.create_time,
        update_time: m.update_time,
        etag: m.etag,
    }
}

async fn load_organization<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<Organization> {
    organization::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await
        .map_err(StoreError::db)?
        .map(organization_from_model)
        .ok_or(StoreError::NotFound(Resource::Organization))
}

/// An insert error of an organization or its owner membership.
fn create_error(err: DbErr) -> StoreError {
    if slipway_db::is_unique_violation(&err) {
        StoreError::AlreadyExists(Resource::Organization)
    } else if slipway_db::is_foreign_key_violation(&err) {
        // The only reference an organization and its owner make is to the owner's user.
        StoreError::NotFound(Resource::User)
    } else {
        StoreError::db(err)
    }
}

impl Store {
    /// Creates an organization with `owner_user_id` as its one member, holding `OWNER`.
    ///
    /// One transaction: there is never an organization without its owner. A taken name is
    /// [`StoreError::AlreadyExists`], an unknown user [`Resource::User`] not found.
    pub async fn create_organization(
        &self,
        new: &NewOrganization,
        owner_user_id: &str,
    ) -> StoreResult<(Organization, Member)> {
        match self.insert_organization(new, owner_user_id, None).await? {
            Ok(created) => Ok(created),
            // Without a key there is no repeat.
            Err(_) => Err(StoreError::corrupt(
                "an organization created without a key was a repeat".to_owned(),
            )),
        }
    }

    /// [`Store::create_organization`] with an optional idempotency key, recorded in the
    /// same transaction (its scope is the owner's user id): a repeat of the key returns the
    /// organization the first request created (as a get of it would, so not found once
    /// deleted) and writes nothing.
    pub async fn create_organization_once(
        &self,
        new: &NewOrganization,
        owner_user_id: &str,
        request: Option<&RequestKey>,
    ) -> StoreResult<Created<Organization>> {
        match self
            .insert_organization(new, owner_user_id, request)
            .await?
        {
            Ok((org, _owner)) => Ok(Created::New(org)),
            Err(first) => self.get_organization(&first).await.map(Created::Repeat),
        }
    }

    /// The new organization and its owner, or the id of the one a repeated `request`
    /// created first.
    async fn insert_organization(
        &self,
        new: &NewOrganization,
        owner_user_id: &str,
        request: Option<&RequestKey>,
    ) -> StoreResult<Result<(Organization, Member), String>> {
        let time = now();
        let org_id = new_id();
        let member_id = new_id();
        let txn = self.begin().await?;
        if let Some(key) = request
            && !claim(&txn, key, &org_id).await?
        {
            drop(txn);
            return self.recorded_resource(key).await.map(Err);
        }
        let org = organization::ActiveModel {
            id: Set(org_id.clone()),
            name: Set(new.name.clone()),
            display_name: Set(new.display_name.clone()),
            owner_user_id: Set(owner_user_id.to_owned()),
            create_time: Set(time),
            update_time: Set(time),
            etag: Set(new_etag()),
        }
        .insert(&txn)
        .await
        .map_err(create_error)?;
        membership::ActiveModel {
            id: Set(member_id.clone()),
            organization_id: Set(org_id),
            user_id: Set(owner_user_id.to_owned()),
            builtin_role: Set(Some(BuiltinRole::Owner.as_str().to_owned())),
            custom_role_id: Set(None),
            create_time: Set(time),
            update_time: Set(time),
            etag: Set(new_etag()),
        }
        .insert(&txn)
        .await
        .map_err(create_error)?;
        let owner = load_member(&txn, &member_id).await?;
        commit(txn).await?;
        Ok(Ok((organization_from_model(org), owner)))
    }

    /// An organization by id.
    pub async fn get_organization(&self, id: &str) -> StoreResult<Organization> {
        load_organization(&self.db, id).await
    }

    /// Organizations ordered by name: those `member_user_id` is a member of, or every one
    /// when `None` (for control-plane services, which act in all of them).
    pub async fn list_organizations(
        &self,
        member_user_id: Option<&str>,
        page: &PageRequest<NameCursor>,
    ) -> StoreResult<Page<Organization, NameCursor>> {
        let limit = page.limit();
        let mut query = organization::Entity::find();
        if let Some(user_id) = member_user_id {
            query = query
                .join(
                    slipway_db::sea_orm::JoinType::InnerJoin,
                    organization::Relation::Membership.def(),
                )
                .filter(membership::Column::UserId.eq(user_id));
        }
        if let Some(after) = &page.after {
            query = query.filter(organization::Column::Name.gt(after.name.as_str()));
        }
        let rows = query
            .order_by_asc(organization::Column::Name)
            .limit(limit + 1)
            .all(&self.db)
            .await
            .map_err(StoreError::db)?;
        let orgs = rows.into_iter().map(organization_from_model).collect();
        Ok(into_page(orgs, limit, |o: &Organization| NameCursor {
            name: o.name.clone(),
        }))
    }

    /// Changes an organization's name and/or display name, when its etag is still
    /// `expected_etag` (`None`: no check). A taken name is [`StoreError::AlreadyExists`].
    pub async fn update_organization(
        &self,
        id: &str,
        expected_etag: Option<&str>,
        changes: &OrganizationChanges,
    ) -> StoreResult<Organization> {
        let txn = self.begin().await?;
        let mut update = organization::Entity::update_many()
            .col_expr(organization::Column::Etag, Expr::value(new_etag()))
            .col_expr(organization::Column::UpdateTime, Expr::value(now()))
            .filter(organization::Column::Id.eq(id));
        if let Some(name) = &changes.name {
            update = update.col_expr(organization::Column::Name, Expr::value(name.clone()));
        }
        if let Some(display_name) = &changes.display_name {
            update = update.col_expr(
                organization::Column::DisplayName,
                Expr::value(display_name.clone()),
            );
        }
        if let Some(etag) = expected_etag {
            update = update.filter(organization::Column::Etag.eq(etag));
        }
        let result = update
            .exec(&txn)
            .await
            .map_err(StoreError::on_write(Resource::Organization))?;
        if result.rows_affected == 0 {
            return Err(
                missed_update::<organization::Entity, _>(&txn, id, Resource::Organization).await,
            );
        }
        let org = load_organization(&txn, id).await?;
        commit(txn).await?;
        Ok(org)
    }

    /// Deletes an organization with its members, invitations, roles and API tokens (which
    /// stop working at once), in one transaction. The audit log is kept.
    pub async fn delete_organization(
        &self,
        id: &str,
        expected_etag: Option<&str>,
    ) -> StoreResult<()> {
        let txn = self.begin().await?;
        // The etag check doubles as the first write: it locks the row before the children
        // are touched, so no member or token can be added under a deleted organization.
        self.bump_organization(&txn, id, expected_etag).await?;
        // Children first, referrers of roles before roles.
        api_token::Entity::delete_many()
            .filter(api_token::Column::OrganizationId.eq(id))
            .exec(&txn)
            .await
            .map_err(StoreError::db)?;
        invitation::Entity::delete_many()
            .filter(invitation::Column::OrganizationId.eq(id))
            .exec(&txn)
            .await
            .map_err(StoreError::db)?;
        membership::Entity::delete_many()
            .filter(membership::Column::OrganizationId.eq(id))
            .exec(&txn)
            .await
            .map_err(StoreError::db)?;
        role::Entity::delete_many()
            .filter(role::Column::OrganizationId.eq(id))
            .exec(&txn)
            .await
            .map_err(StoreError::db)?;
        organization::Entity::delete_by_id(id.to_owned())
            .exec(&txn)
            .await
            .map_err(StoreError::db)?;
        commit(txn).await
    }

    /// Makes member `new_owner_member_id` the owner; the previous owner becomes `ADMIN`.
    ///
    /// One transaction, so there is exactly one owner before and after, never zero or two
    /// (the partial unique index on owners would refuse two, which is why the old owner is
    /// demoted before the new one is promoted). A member of another organization is
    /// [`Resource::Member`] not found; the current owner is [`Precondition::AlreadyOwner`].
    pub async fn transfer_ownership(
        &self,
        organization_id: &str,
        new_owner_member_id: &str,
        expected_etag: Option<&str>,
    ) -> StoreResult<OwnershipTransfer> {
        let txn = self.begin().await?;
        self.bump_organization(&txn, organization_id, expected_etag)
            .await?;

        let in_org = |cond: Condition| {
            Condition::all()
                .add(membership::Column::OrganizationId.eq(organization_id))
                .add(cond)
        };
        let new_owner = find_member(
            &txn,
            in_org(Condition::all().add(membership::Column::Id.eq(new_owner_member_id))),
        )
        .await?
        .ok_or(StoreError::NotFound(Resource::Member))?;
        if new_owner.role.is_owner() {
            return Err(StoreError::FailedPrecondition(Precondition::AlreadyOwner));
        }
        let previous = find_member(
            &txn,
            in_org(
                Condition::all()
                    .add(membership::Column::BuiltinRole.eq(BuiltinRole::Owner.as_str())),
            ),
        )
        .await?
        .ok_or_else(|| {
            StoreError::corrupt(format!("organization {organization_id} has no owner"))
        })?;

        let time = now();
        for (member_id, role) in [
            (previous.id.as_str(), BuiltinRole::Admin),
            (new_owner.id.as_str(), BuiltinRole::Owner),
        ] {
            membership::Entity::update_many()
                .col_expr(
                    membership::Column::BuiltinRole,
                    Expr::value(role.as_str().to_owned()),
                )
                .col_expr(
                    membership::Column::CustomRoleId,
                    Expr::value(None::<String>),
                )
                .col_expr(membership::Column::UpdateTime, Expr::value(time))
                .col_expr(membership::Column::Etag, Expr::value(new_etag()))
                .filter(membership::Column::Id.eq(member_id))
                .exec(&txn)
                .await
                .map_err(StoreError::db)?;
        }
        organization::Entity::update_many()
            .col_expr(
                organization::Column::OwnerUserId,
                Expr::value(new_owner.user_id.clone()),
            )
            .filter(organization::Column::Id.eq(organization_id))
            .exec(&txn)
            .await
            .map_err(StoreError::db)?;

        let organization = load_organization(&txn, organization_id).await?;
        let previous_owner = load_member(&txn, &previous.id).await?;
        let new_owner = load_member(&txn, &new_owner.id).await?;
        commit(txn).await?;
        Ok(OwnershipTransfer {
            organization,
            previous_owner,
            new_owner,
        })
    }

    /// Gives organization `id` a new etag and update time, if its etag is `expected_etag`
    /// (`None`: no check): the first write of a transaction that changes the organization
    /// or what it owns.
    async fn bump_organization<C: ConnectionTrait>(
        &self,
        conn: &C,
        id: &str,
        expected_etag: Option<&str>,
    ) -> StoreResult<()> {
        let mut update = organization::Entity::update_many()
            .col_expr(organization::Column::Etag, Expr::value(new_etag()))
            .col_expr(organization::Column::UpdateTime, Expr::value(now()))
            .filter(organization::Column::Id.eq(id));
        if let Some(etag) = expected_etag {
            update = update.filter(organization::Column::Etag.eq(etag));
        }
        let result = update.exec(conn).await.map_err(StoreError::db)?;
        if result.rows_affected == 0 {
            return Err(
                missed_update::<organization::Entity, _>(conn, id, Resource::Organization).await,
            );
        }
        Ok(())
    }
}
