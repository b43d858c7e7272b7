//! Members: a user's place and role in an organization.

use slipway_db::sea_orm::sea_query::Expr;
use slipway_db::sea_orm::{
    ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};

use super::entity::{membership, organization, user};
use super::types::{
    BuiltinRole, Member, MemberCursor, Page, PageRequest, RoleRef, UserMembership, into_page,
    new_etag, now,
};
use super::{Precondition, Resource, Store, StoreError, StoreResult, commit, role_from_columns};

/// A member from its row and its user's row.
pub(super) fn member_from_models(
    m: membership::Model,
    u: Option<user::Model>,
) -> StoreResult<Member> {
    let u = u.ok_or_else(|| StoreError::corrupt(format!("member {} has no user", m.id)))?;
    Ok(Member {
        role: role_from_columns(m.builtin_role.as_deref(), m.custom_role_id.as_deref())?,
        id: m.id,
        organization_id: m.organization_id,
        user_id: m.user_id,
        email: u.email,
        display_name: u.display_name,
        create_time: m.create_time,
        update_time: m.update_time,
        etag: m.etag,
    })
}

/// The one member matching `condition`, with its user.
pub(super) async fn find_member<C: ConnectionTrait>(
    conn: &C,
    condition: Condition,
) -> StoreResult<Option<Member>> {
    let found = membership::Entity::find()
        .find_also_related(user::Entity)
        .filter(condition)
        .one(conn)
        .await
        .map_err(StoreError::db)?;
    found.map(|(m, u)| member_from_models(m, u)).transpose()
}

/// Like [`find_member`], for a row that must exist.
pub(super) async fn load_member<C: ConnectionTrait>(conn: &C, id: &str) -> StoreResult<Member> {
    find_member(conn, Condition::all().add(membership::Column::Id.eq(id)))
        .await?
        .ok_or(StoreError::NotFound(Resource::Member))
}

/// The condition "holds `role`".
pub(super) fn holds_role(role: &RoleRef) -> Condition {
    match role {
        RoleRef::Builtin(builtin) => {
            Condition::all().add(membership::Column::BuiltinRole.eq(builtin.as_str()))
        }
        RoleRef::Custom(id) => {
            Condition::all().add(membership::Column::CustomRoleId.eq(id.as_str()))
        }
    }
}

/// The condition "is not the owner" (a custom role leaves `builtin_role` NULL, which `<>`
/// alone would not match).
fn not_owner() -> Condition {
    Condition::any()
        .add(membership::Column::BuiltinRole.is_null())
        .add(membership::Column::BuiltinRole.ne(BuiltinRole::Owner.as_str()))
}

impl Store {
    /// An organization's members ordered by email (then id), optionally only those holding
    /// `role`.
    pub async fn list_members(
        &self,
        organization_id: &str,
        role: Option<&RoleRef>,
        page: &PageRequest<MemberCursor>,
    ) -> StoreResult<Page<Member, MemberCursor>> {
        let limit = page.limit();
        let mut query = membership::Entity::find()
            .find_also_related(user::Entity)
            .filter(membership::Column::OrganizationId.eq(organization_id));
        if let Some(role) = role {
            query = query.filter(holds_role(role));
        }
        if let Some(after) = &page.after {
            query = query.filter(
                Condition::any()
                    .add(user::Column::Email.gt(after.email.as_str()))
                    .add(
                        Condition::all()
                            .add(user::Column::Email.eq(after.email.as_str()))
                            .add(membership::Column::Id.gt(after.id.as_str())),
                    ),
            );
        }
        let rows = query
            .order_by_asc(user::Column::Email)
            .order_by_asc(membership::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await
            .map_err(StoreError::db)?;
        let members = rows
            .into_iter()
            .map(|(m, u)| member_from_models(m, u))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(into_page(members, limit, |m| MemberCursor {
            email: m.email.clone(),
            id: m.id.clone(),
        }))
    }

    /// A member by id.
    pub async fn get_member(&self, id: &str) -> StoreResult<Member> {
        load_member(&self.db, id).await
    }

    /// The member a user is in an organization: what authorization looks up.
    pub async fn get_member_by_user(
        &self,
        organization_id: &str,
        user_id: &str,
    ) -> StoreResult<Member> {
        find_member(
            &self.db,
            Condition::all()
                .add(membership::Column::OrganizationId.eq(organization_id))
                .add(membership::Column::UserId.eq(user_id)),
        )
        .await?
        .ok_or(StoreError::NotFound(Resource::Member))
    }

    /// Every membership of a user, ordered by organization name: a user principal's
    /// organizations and roles.
    pub async fn memberships_of_user(&self, user_id: &str) -> StoreResult<Vec<UserMembership>> {
        let rows = membership::Entity::find()
            .find_also_related(organization::Entity)
            .filter(membership::Column::UserId.eq(user_id))
            .order_by_asc(organization::Column::Name)
            .all(&self.db)
            .await
            .map_err(StoreError::db)?;
        rows.into_iter()
            .map(|(m, org)| {
                let org = org.ok_or_else(|| {
                    StoreError::corrupt(format!("member {} has no organization", m.id))
                })?;
                Ok(UserMembership {
                    role: role_from_columns(
                        m.builtin_role.as_deref(),
                        m.custom_role_id.as_deref(),
                    )?,
                    organization_id: m.organization_id,
                    organization_name: org.name,
                    member_id: m.id,
                })
            })
            .collect()
    }

    /// Gives a member another role.
    ///
    /// Refused with [`Precondition::OwnerImmutable`] for the owner, and for `OWNER` as the
    /// new role: ownership moves only with [`Store::transfer_ownership`]. A custom role of
    /// another organization (or none) is [`Resource::Role`] not found, which the composite
    /// foreign key guarantees even against a concurrent role deletion.
    pub async fn update_member_role(
        &self,
        id: &str,
        role: &RoleRef,
        expected_etag: Option<&str>,
    ) -> StoreResult<Member> {
        if role.is_owner() {
            return Err(StoreError::FailedPrecondition(Precondition::OwnerImmutable));
        }
        let (builtin, custom) = role.to_columns();
        let txn = self.begin().await?;
        let mut update = membership::Entity::update_many()
            .col_expr(membership::Column::BuiltinRole, Expr::value(builtin))
            .col_expr(membership::Column::CustomRoleId, Expr::value(custom))
            .col_expr(membership::Column::UpdateTime, Expr::value(now()))
            .col_expr(membership::Column::Etag, Expr::value(new_etag()))
            .filter(membership::Column::Id.eq(id))
            .filter(not_owner());
        if let Some(etag) = expected_etag {
            update = update.filter(membership::Column::Etag.eq(etag));
        }
        let result = update.exec(&txn).await.map_err(|err| {
            if slipway_db::is_foreign_key_violation(&err) {
                StoreError::NotFound(Resource::Role)
            } else {
                StoreError::db(err)
            }
        })?;
        if result.rows_affected == 0 {
            return Err(self.missed_member_change(&txn, id).await);
        }
        let member = load_member(&txn, id).await?;
        commit(txn).await?;
        Ok(member)
    }

    /// Removes a member. The owner cannot be removed ([`Precondition::OwnerImmutable`]).
    /// API tokens the member created stay: they belong to the organization.
    pub async fn remove_member(&self, id: &str, expected_etag: Option<&str>) -> StoreResult<()> {
        let txn = self.begin().await?;
        let mut delete = membership::Entity::delete_many()
            .filter(membership::Column::Id.eq(id))
            .filter(not_owner());
        if let Some(etag) = expected_etag {
            delete = delete.filter(membership::Column::Etag.eq(etag));
        }
        let result = delete.exec(&txn).await.map_err(StoreError::db)?;
        if result.rows_affected == 0 {
            return Err(self.missed_member_change(&txn, id).await);
        }
        commit(txn).await
    }

    /// Why a conditional change of member `id` touched nothing.
    async fn missed_member_change<C: ConnectionTrait>(&self, conn: &C, id: &str) -> StoreError {
        match membership::Entity::find_by_id(id.to_owned())
            .one(conn)
            .await
        {
            Ok(None) => StoreError::NotFound(Resource::Member),
            Ok(Some(m)) if m.builtin_role.as_deref() == Some(BuiltinRole::Owner.as_str()) => {
                StoreError::FailedPrecondition(Precondition::OwnerImmutable)
            }
            Ok(Some(_)) => StoreError::EtagMismatch(Resource::Member),
            Err(err) => StoreError::db(err),
        }
    }
}
