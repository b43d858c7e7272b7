//! The owner credentials bootstrap hands out (`identity_owner_credentials`): the SHA-256 of
//! each, and the user it signs in as.

use slipway_db::sea_orm::ConnectionTrait as _;
use slipway_db::sea_orm::sea_query::{Alias, Expr, ExprTrait as _, Query};

use super::{SecretHash, Store, StoreError, StoreResult, now};

const TABLE: &str = "identity_owner_credentials";

impl Store {
    /// Records that the credential hashing to `hash` signs in as `user_id`.
    pub async fn insert_owner_credential(
        &self,
        hash: &SecretHash,
        user_id: &str,
    ) -> StoreResult<()> {
        let statement = Query::insert()
            .into_table(Alias::new(TABLE))
            .columns([
                Alias::new("secret_hash"),
                Alias::new("user_id"),
                Alias::new("create_time"),
            ])
            .values_panic([
                hash.as_hex().to_owned().into(),
                user_id.to_owned().into(),
                now().into(),
            ])
            .to_owned();
        self.db.execute(&statement).await.map_err(StoreError::db)?;
        Ok(())
    }

    /// The user an owner credential hashing to `hash` signs in as, if it is one.
    pub async fn owner_credential_user(&self, hash: &SecretHash) -> StoreResult<Option<String>> {
        let statement = Query::select()
            .column(Alias::new("user_id"))
            .from(Alias::new(TABLE))
            .and_where(Expr::col(Alias::new("secret_hash")).eq(hash.as_hex()))
            .to_owned();
        let row = self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?;
        row.map(|row| row.try_get::<String>("", "user_id"))
            .transpose()
            .map_err(StoreError::db)
    }
}
