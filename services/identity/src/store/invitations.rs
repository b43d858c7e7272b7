//! Invitations: create, read, list, accept (which creates the membership), revoke, expire.
//!
//! Expiry is exact without a background job: a `PENDING` row whose expire time has passed
//! reads, filters and behaves as `EXPIRED`. [`Store::expire_invitations`] only makes that
//! durable (a periodic sweep, so the rows say what they are).

use chrono::{DateTime, Utc};
use slipway_db::sea_orm::ActiveValue::Set;
use slipway_db::sea_orm::sea_query::Expr;
use slipway_db::sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};

use super::entity::{invitation, membership, role, user};
use super::members::load_member;
use super::requests::claim;
use super::types::{
    IdCursor, Invitation, InvitationStatus, Member, NewInvitation, Page, PageRequest, RoleRef,
    SecretHash, email_key, into_page, new_etag, new_id, now, truncate_time,
};
use super::{
    Created, Precondition, RequestKey, Resource, Store, StoreError, StoreResult, commit,
    principal_from_columns, role_from_columns,
};

/// An invitation from its row, read at `at`: a pending row past its expire time is
/// `EXPIRED`.
fn invitation_from_model(m: invitation::Model, at: DateTime<Utc>) -> StoreResult<Invitation> {
    let stored = InvitationStatus::parse(&m.status)
        .ok_or_else(|| StoreError::corrupt(format!("unknown invitation status {:?}", m.status)))?;
    let status = if stored == InvitationStatus::Pending && m.expire_time <= at {
        InvitationStatus::Expired
    } else {
        stored
    };
    Ok(Invitation {
        role: role_from_columns(m.builtin_role.as_deref(), m.custom_role_id.as_deref())?,
        inviter: principal_from_columns(&m.inviter_kind, &m.inviter_id, &m.inviter_display_name)?,
        id: m.id,
        organization_id: m.organization_id,
        email: m.email,
        status,
        expire_time: m.expire_time,
        member_id: m.member_id,
        close_time: m.close_time,
        create_time: m.create_time,
        update_time: m.update_time,
    })
}

/// The condition "is still acceptable at `at`".
fn open_at(at: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(invitation::Column::Status.eq(InvitationStatus::Pending.as_str()))
        .add(invitation::Column::ExpireTime.gt(at))
}

/// The condition "reads as `status` at `at`".
fn reads_as(status: InvitationStatus, at: DateTime<Utc>) -> Condition {
    match status {
        InvitationStatus::Pending => open_at(at),
        InvitationStatus::Expired => Condition::any()
            .add(invitation::Column::Status.eq(InvitationStatus::Expired.as_str()))
            .add(
                Condition::all()
                    .add(invitation::Column::Status.eq(InvitationStatus::Pending.as_str()))
                    .add(invitation::Column::ExpireTime.lte(at)),
            ),
        other => Condition::all().add(invitation::Column::Status.eq(other.as_str())),
    }
}

async fn load_invitation<C: ConnectionTrait>(
    conn: &C,
    condition: Condition,
    at: DateTime<Utc>,
) -> StoreResult<Invitation> {
    invitation::Entity::find()
        .filter(condition)
        .one(conn)
        .await
        .map_err(StoreError::db)?
        .ok_or(StoreError::NotFound(Resource::Invitation))
        .and_then(|m| invitation_from_model(m, at))
}

/// Why a change that needs a pending invitation touched nothing.
async fn not_open<C: ConnectionTrait>(conn: &C, id: &str, at: DateTime<Utc>) -> StoreError {
    let found = load_invitation(
        conn,
        Condition::all().add(invitation::Column::Id.eq(id)),
        at,
    )
    .await;
    match found {
        Ok(inv) => StoreError::FailedPrecondition(match inv.status {
            InvitationStatus::Accepted => Precondition::InvitationAlreadyAccepted,
            InvitationStatus::Revoked => Precondition::InvitationRevoked,
            // Pending cannot be seen here (the update would have matched); expired is
            // the only remaining case.
            InvitationStatus::Expired | InvitationStatus::Pending => {
                Precondition::InvitationExpired
            }
        }),
        Err(err) => err,
    }
}

impl Store {
    /// Records a pending invitation.
    ///
    /// [`StoreError::AlreadyExists`] with [`Resource::Member`] when a user with that email
    /// (case-insensitively) already is a member, with [`Resource::Invitation`] when the
    /// email has a pending invitation (a partial unique index, so two concurrent requests
    /// cannot both succeed). Pending invitations of the organization whose time has passed
    /// are marked expired first, so they do not block a new one. A custom role must belong
    /// to the organization ([`Resource::Role`] not found otherwise).
    pub async fn create_invitation(&self, new: &NewInvitation) -> StoreResult<Invitation> {
        self.create_invitation_once(new, None)
            .await
            .map(Created::into_inner)
    }

    /// [`Store::create_invitation`] with an optional idempotency key, recorded in the same
    /// transaction: a repeat of the key returns the invitation the first request created
    /// (in its current state) and writes nothing; the repeat's `token_hash` is unused.
    pub async fn create_invitation_once(
        &self,
        new: &NewInvitation,
        request: Option<&RequestKey>,
    ) -> StoreResult<Created<Invitation>> {
        let time = now();
        let key = email_key(&new.email);
        let id = new_id();
        let txn = self.begin().await?;
        if let Some(request) = request
            && !claim(&txn, request, &id).await?
        {
            drop(txn);
            let first = self.recorded_resource(request).await?;
            return self.get_invitation(&first).await.map(Created::Repeat);
        }
        expire_pending(&txn, Some(&new.organization_id), time).await?;

        let already_member = membership::Entity::find()
            .inner_join(user::Entity)
            .filter(membership::Column::OrganizationId.eq(new.organization_id.as_str()))
            .filter(user::Column::EmailKey.eq(key.as_str()))
            .count(&txn)
            .await
            .map_err(StoreError::db)?;
        if already_member > 0 {
            return Err(StoreError::AlreadyExists(Resource::Member));
        }
        if let RoleRef::Custom(role_id) = &new.role {
            let roles = role::Entity::find()
                .filter(role::Column::Id.eq(role_id.as_str()))
                .filter(role::Column::OrganizationId.eq(new.organization_id.as_str()))
                .count(&txn)
                .await
                .map_err(StoreError::db)?;
            if roles == 0 {
                return Err(StoreError::NotFound(Resource::Role));
            }
        }

        let (builtin, custom) = new.role.to_columns();
        let row = invitation::ActiveModel {
            id: Set(id),
            organization_id: Set(new.organization_id.clone()),
            email: Set(new.email.clone()),
            email_key: Set(key),
            builtin_role: Set(builtin),
            custom_role_id: Set(custom),
            token_hash: Set(new.token_hash.as_hex().to_owned()),
            status: Set(InvitationStatus::Pending.as_str().to_owned()),
            inviter_kind: Set(new.inviter.kind.as_str().to_owned()),
            inviter_id: Set(new.inviter.id.clone()),
            inviter_display_name: Set(new.inviter.display_name.clone()),
            expire_time: Set(truncate_time(new.expire_time)),
            member_id: Set(None),
            close_time: Set(None),
            create_time: Set(time),
            update_time: Set(time),
        }
        .insert(&txn)
        .await
        .map_err(|err| {
            if slipway_db::is_foreign_key_violation(&err) {
                StoreError::NotFound(Resource::Organization)
            } else {
                StoreError::on_write(Resource::Invitation)(err)
            }
        })?;
        commit(txn).await?;
        invitation_from_model(row, time).map(Created::New)
    }

    /// An invitation by id.
    pub async fn get_invitation(&self, id: &str) -> StoreResult<Invitation> {
        load_invitation(
            &self.db,
            Condition::all().add(invitation::Column::Id.eq(id)),
            now(),
        )
        .await
    }

    /// The invitation a token stands for, by the token's hash (whatever its status: the
    /// caller answers expired, revoked and accepted differently).
    pub async fn find_invitation_by_token_hash(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Invitation> {
        load_invitation(
            &self.db,
            Condition::all().add(invitation::Column::TokenHash.eq(hash.as_hex())),
            now(),
        )
        .await
    }

    /// An organization's invitations, newest first, optionally only those in `status`.
    pub async fn list_invitations(
        &self,
        organization_id: &str,
        status: Option<InvitationStatus>,
        page: &PageRequest<IdCursor>,
    ) -> StoreResult<Page<Invitation, IdCursor>> {
        let time = now();
        let limit = page.limit();
        let mut query = invitation::Entity::find()
            .filter(invitation::Column::OrganizationId.eq(organization_id));
        if let Some(status) = status {
            query = query.filter(reads_as(status, time));
        }
        if let Some(after) = &page.after {
            query = query.filter(invitation::Column::Id.lt(after.id.as_str()));
        }
        let rows = query
            .order_by_desc(invitation::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await
            .map_err(StoreError::db)?;
        let items = rows
            .into_iter()
            .map(|m| invitation_from_model(m, time))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(into_page(items, limit, |i| IdCursor { id: i.id.clone() }))
    }

    /// Accepts invitation `id` for `user_id`: marks it accepted and creates the membership
    /// with its role, in one transaction, so either both happen or neither does.
    ///
    /// The caller has checked that the user's email matches the invitation's. Refused with
    /// the matching [`Precondition`] unless pending and unexpired, and with
    /// [`StoreError::AlreadyExists`] ([`Resource::Member`]) when the user already is a
    /// member, in which case the invitation stays pending.
    pub async fn accept_invitation(
        &self,
        id: &str,
        user_id: &str,
    ) -> StoreResult<(Member, Invitation)> {
        let time = now();
        let txn = self.begin().await?;
        // Claim the invitation first: of two concurrent acceptances only one matches.
        let claimed = invitation::Entity::update_many()
            .col_expr(
                invitation::Column::Status,
                Expr::value(InvitationStatus::Accepted.as_str()),
            )
            .col_expr(invitation::Column::CloseTime, Expr::value(time))
            .col_expr(invitation::Column::UpdateTime, Expr::value(time))
            .filter(invitation::Column::Id.eq(id))
            .filter(open_at(time))
            .exec(&txn)
            .await
            .map_err(StoreError::db)?;
        if claimed.rows_affected == 0 {
            return Err(not_open(&txn, id, time).await);
        }
        let by_id = || Condition::all().add(invitation::Column::Id.eq(id));
        let accepted = load_invitation(&txn, by_id(), time).await?;

        let member_id = new_id();
        let (builtin, custom) = accepted.role.to_columns();
        membership::ActiveModel {
            id: Set(member_id.clone()),
            organization_id: Set(accepted.organization_id.clone()),
            user_id: Set(user_id.to_owned()),
            builtin_role: Set(builtin),
            custom_role_id: Set(custom),
            create_time: Set(time),
            update_time: Set(time),
            etag: Set(new_etag()),
        }
        .insert(&txn)
        .await
        .map_err(|err| {
            if slipway_db::is_unique_violation(&err) {
                StoreError::AlreadyExists(Resource::Member)
            } else if slipway_db::is_foreign_key_violation(&err) {
                StoreError::NotFound(Resource::User)
            } else {
                StoreError::db(err)
            }
        })?;
        invitation::Entity::update_many()
            .col_expr(invitation::Column::MemberId, Expr::value(member_id.clone()))
            .filter(invitation::Column::Id.eq(id))
            .exec(&txn)
            .await
            .map_err(StoreError::db)?;

        let member = load_member(&txn, &member_id).await?;
        let invitation = load_invitation(&txn, by_id(), time).await?;
        commit(txn).await?;
        Ok((member, invitation))
    }

    /// Revokes a pending invitation; anything else is refused with the matching
    /// [`Precondition`].
    pub async fn revoke_invitation(&self, id: &str) -> StoreResult<Invitation> {
        let time = now();
        let txn = self.begin().await?;
        let revoked = invitation::Entity::update_many()
            .col_expr(
                invitation::Column::Status,
                Expr::value(InvitationStatus::Revoked.as_str()),
            )
            .col_expr(invitation::Column::CloseTime, Expr::value(time))
            .col_expr(invitation::Column::UpdateTime, Expr::value(time))
            .filter(invitation::Column::Id.eq(id))
            .filter(open_at(time))
            .exec(&txn)
            .await
            .map_err(StoreError::db)?;
        if revoked.rows_affected == 0 {
            return Err(not_open(&txn, id, time).await);
        }
        let invitation = load_invitation(
            &txn,
            Condition::all().add(invitation::Column::Id.eq(id)),
            time,
        )
        .await?;
        commit(txn).await?;
        Ok(invitation)
    }

    /// Marks every pending invitation whose expire time is at or before `at` as expired, in
    /// every organization; returns how many. Reads already treat them as expired; this
    /// makes the rows say so.
    pub async fn expire_invitations(&self, at: DateTime<Utc>) -> StoreResult<u64> {
        expire_pending(&self.db, None, at).await
    }
}

/// Marks pending invitations past their time expired, of one organization or all.
async fn expire_pending<C: ConnectionTrait>(
    conn: &C,
    organization_id: Option<&str>,
    at: DateTime<Utc>,
) -> StoreResult<u64> {
    let mut update = invitation::Entity::update_many()
        .col_expr(
            invitation::Column::Status,
            Expr::value(InvitationStatus::Expired.as_str()),
        )
        .col_expr(invitation::Column::UpdateTime, Expr::value(at))
        .filter(invitation::Column::Status.eq(InvitationStatus::Pending.as_str()))
        .filter(invitation::Column::ExpireTime.lte(at));
    if let Some(org) = organization_id {
        update = update.filter(invitation::Column::OrganizationId.eq(org));
    }
    let result = update.exec(conn).await.map_err(StoreError::db)?;
    Ok(result.rows_affected)
}
