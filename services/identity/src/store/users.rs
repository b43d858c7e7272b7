//! Users: created on first sight of an (issuer, subject), refreshed from later claims.

use slipway_db::sea_orm::ActiveValue::{NotSet, Set};
use slipway_db::sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
};

use super::entity::user;
use super::types::{User, UserClaims, email_key, new_id, now};
use super::{Resource, Store, StoreError, StoreResult};

pub(super) fn user_from_model(m: user::Model) -> User {
    User {
        id: m.id,
        oidc_issuer: m.oidc_issuer,
        oidc_subject: m.oidc_subject,
        email: m.email,
        display_name: m.display_name,
        create_time: m.create_time,
        update_time: m.update_time,
    }
}

impl Store {
    /// The user for `claims`' (issuer, subject): created on first sight, and its email and
    /// name refreshed when the claims carry new ones (`update_time` moves only then).
    ///
    /// Two first requests of one user may race; the unique (issuer, subject) index lets
    /// exactly one insert win, and the loser reads the winner's row.
    pub async fn upsert_user(&self, claims: &UserClaims) -> StoreResult<User> {
        if let Some(found) = self.find_user_by_subject(claims).await? {
            return self.refresh_user(found, claims).await;
        }
        let time = now();
        let row = user::ActiveModel {
            id: Set(new_id()),
            oidc_issuer: Set(claims.issuer.clone()),
            oidc_subject: Set(claims.subject.clone()),
            email: Set(claims.email.clone()),
            email_key: Set(email_key(&claims.email)),
            display_name: Set(claims.display_name.clone()),
            create_time: Set(time),
            update_time: Set(time),
        };
        match row.insert(&self.db).await {
            Ok(created) => Ok(user_from_model(created)),
            Err(err) if slipway_db::is_unique_violation(&err) => {
                let found = self
                    .find_user_by_subject(claims)
                    .await?
                    .ok_or(StoreError::Internal(err))?;
                self.refresh_user(found, claims).await
            }
            Err(err) => Err(StoreError::db(err)),
        }
    }

    /// A user by id.
    pub async fn get_user(&self, id: &str) -> StoreResult<User> {
        user::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(StoreError::db)?
            .map(user_from_model)
            .ok_or(StoreError::NotFound(Resource::User))
    }

    async fn find_user_by_subject(&self, claims: &UserClaims) -> StoreResult<Option<user::Model>> {
        user::Entity::find()
            .filter(user::Column::OidcIssuer.eq(claims.issuer.as_str()))
            .filter(user::Column::OidcSubject.eq(claims.subject.as_str()))
            .one(&self.db)
            .await
            .map_err(StoreError::db)
    }

    async fn refresh_user(&self, found: user::Model, claims: &UserClaims) -> StoreResult<User> {
        if found.email == claims.email && found.display_name == claims.display_name {
            return Ok(user_from_model(found));
        }
        let row = user::ActiveModel {
            id: Set(found.id.clone()),
            oidc_issuer: NotSet,
            oidc_subject: NotSet,
            email: Set(claims.email.clone()),
            email_key: Set(email_key(&claims.email)),
            display_name: Set(claims.display_name.clone()),
            create_time: NotSet,
            update_time: Set(now()),
        };
        row.update(&self.db)
            .await
            .map(user_from_model)
            .map_err(StoreError::db)
    }
}
