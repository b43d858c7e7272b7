//! Identity's own [`PrincipalResolver`]: credentials are resolved from identity's store,
//! never through a call to itself. Other services resolve through `AuthService.Authenticate`.
//!
//! Only API tokens (`slp_…`) resolve today. Agent and service credentials and OIDC JWTs
//! answer `TOKEN_INVALID` until their issuers exist, which is the documented answer for a
//! credential Slipway does not know.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::TimeDelta;
use slipway_auth::credential::{Credential, CredentialError, CredentialKind};
use slipway_auth::rbac::{Principal, Role};
use slipway_auth::{AuthnError, PrincipalResolver};

use crate::convert;
use crate::grants::Grants;
use crate::store::{self, ApiToken, RoleRef, SecretHash, Store, StoreError};

/// How often a token's `last_use_time` is written at most: once a minute, as the API
/// documents, so authentication is a read on almost every call.
const LAST_USE_INTERVAL: TimeDelta = TimeDelta::minutes(1);

/// Resolves bearer credentials from the store.
#[derive(Clone, Debug)]
pub struct StoreResolver {
    store: Store,
}

/// A resolved API token: its record (for `Authenticate`'s richer answer) and the principal.
#[derive(Clone, Debug)]
pub struct ResolvedToken {
    pub token: ApiToken,
    pub principal: Principal,
}

impl StoreResolver {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self { store })
    }

    /// Resolves an `slp_` API token: offline format and checksum check (a typo never reaches
    /// the database), lookup by SHA-256 hash, expiry, last use, and the role as stored now.
    pub async fn resolve_api_token(&self, bearer: &str) -> Result<ResolvedToken, AuthnError> {
        let credential = Credential::parse_as(CredentialKind::ApiToken, bearer).map_err(
            |error| match error {
                CredentialError::Empty => AuthnError::Missing,
                _ => AuthnError::Invalid,
            },
        )?;
        let hash = SecretHash::from_digest(*credential.hash().as_bytes());
        let token = self
            .store
            .find_api_token_by_secret_hash(&hash)
            .await
            .map_err(store_failure)?;
        let now = store::now();
        if token.expire_time.is_some_and(|expire| expire <= now) {
            return Err(AuthnError::Expired);
        }
        if let Err(error) = self
            .store
            .touch_api_token(&token.id, now, LAST_USE_INTERVAL)
            .await
        {
            // Last use is informational: a failed write must not refuse a valid token.
            tracing::warn!(%error, token_id = %token.id, "cannot record api token use");
        }
        let role = self.role(&token.organization_id, &token.role).await?;
        let mut principal =
            Principal::api_token(token.id.as_str(), token.organization_id.as_str(), role)
                .with_display_name(token.name.as_str());
        if let Some(expire) = token.expire_time {
            principal = principal.with_expire_time(convert::system_time(expire));
        }
        Ok(ResolvedToken { token, principal })
    }

    /// The RBAC role for a stored role reference, loading a custom role's grants.
    pub async fn role(&self, organization_id: &str, role: &RoleRef) -> Result<Role, AuthnError> {
        match role {
            RoleRef::Builtin(builtin) => Ok(Role::Builtin(convert::builtin_to_rbac(*builtin))),
            RoleRef::Custom(id) => {
                let stored = self.store.get_role(id).await.map_err(store_failure)?;
                if stored.organization_id != organization_id {
                    // The schema forbids it; a credential resting on it is not honoured.
                    return Err(AuthnError::Invalid);
                }
                let custom = Grants::from_json(&stored.grants)
                    .and_then(|grants| grants.to_custom_role(&stored.id))
                    .map_err(|error| {
                        tracing::error!(%error, role_id = %stored.id, "corrupt custom role");
                        AuthnError::Unavailable("a role could not be read".to_owned())
                    })?;
                Ok(Role::from(custom))
            }
        }
    }
}

/// A store failure while resolving: a missing record means the credential is not (or no
/// longer) valid; anything else is a failure to decide, which clients may retry.
fn store_failure(error: StoreError) -> AuthnError {
    match error {
        StoreError::NotFound(_) => AuthnError::Invalid,
        StoreError::Unavailable(_) => AuthnError::Unavailable("the database is unavailable".into()),
        other => {
            tracing::error!(error = %other, "cannot resolve a credential");
            AuthnError::Unavailable("credentials cannot be checked".into())
        }
    }
}

#[async_trait]
impl PrincipalResolver for StoreResolver {
    async fn resolve(&self, bearer: &str) -> Result<Principal, AuthnError> {
        self.resolve_api_token(bearer)
            .await
            .map(|resolved| resolved.principal)
    }
}
