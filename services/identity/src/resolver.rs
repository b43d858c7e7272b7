//! Identity's own [`PrincipalResolver`]: credentials are resolved from identity's store,
//! never through a call to itself. Other services resolve through `AuthService.Authenticate`.
//!
//! API tokens (`slp_…`) resolve from the store. A bearer that is not an `slp…` credential
//! and looks like a JWT is a user's OIDC token: verified by the configured issuer's
//! [`OidcVerifier`], its user created on first sight, its memberships read now. Without an
//! `[oidc]` issuer configured, JWTs answer `TOKEN_INVALID`. A service credential (`slps_…`)
//! is accepted only if it is one configured in `[auth].service_credential` (hashes compared
//! in constant time) and stands for the control plane ([`CONTROL_PLANE`]); any other, and
//! every agent credential until agents are issued theirs, answers `TOKEN_INVALID`: the
//! documented answer for a credential Slipway does not know.
//!
//! This resolver reads the database on every call; identity serves requests through it
//! wrapped in a [`slipway_auth::CachingResolver`] (see `crate::Identity`), and uses it
//! directly only where the richer uncached answer is needed (`Authenticate`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::TimeDelta;
use slipway_auth::credential::{Credential, CredentialError, CredentialHash, CredentialKind};
use slipway_auth::rbac::{Membership, Principal, Role};
use slipway_auth::{AuthnError, OidcVerifier, PrincipalResolver};

use crate::convert;
use crate::grants::Grants;
use crate::store::{
    self, ApiToken, RoleRef, SecretHash, Store, StoreError, User, UserClaims, UserMembership,
};

/// How often a token's `last_use_time` is written at most: once a minute, as the API
/// documents, so authentication is a read on almost every call. Behind identity's cache a
/// token reaches this resolver only once per cache TTL, so the recorded last use may lag
/// by that much more.
const LAST_USE_INTERVAL: TimeDelta = TimeDelta::minutes(1);

/// The id of the principal a configured service credential stands for: the control plane
/// as a whole (one credential is shared by every service of an installation).
pub const CONTROL_PLANE: &str = "control-plane";

/// Resolves bearer credentials from the store.
#[derive(Clone)]
pub struct StoreResolver {
    store: Store,
    oidc: Option<Arc<OidcVerifier>>,
    /// SHA-256 of each accepted `slps_` credential; the credentials themselves are not kept.
    service_credentials: Vec<CredentialHash>,
}

impl std::fmt::Debug for StoreResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreResolver")
            .field("oidc", &self.oidc.is_some())
            .field("service_credentials", &self.service_credentials.len())
            .finish_non_exhaustive()
    }
}

/// A resolved API token: its record (for `Authenticate`'s richer answer) and the principal.
#[derive(Clone, Debug)]
pub struct ResolvedToken {
    pub token: ApiToken,
    pub principal: Principal,
}

/// A resolved OIDC user: its record and memberships (for `Authenticate`'s richer answer)
/// and the principal.
#[derive(Clone, Debug)]
pub struct ResolvedUser {
    pub user: User,
    pub memberships: Vec<UserMembership>,
    pub principal: Principal,
}

/// A resolved bearer credential of any kind identity issues or accepts.
#[derive(Clone, Debug)]
pub enum Resolved {
    Token(ResolvedToken),
    User(ResolvedUser),
    /// A configured service credential: the control plane ([`CONTROL_PLANE`]).
    Service(Principal),
}

impl Resolved {
    pub fn principal(&self) -> &Principal {
        match self {
            Resolved::Token(resolved) => &resolved.principal,
            Resolved::User(resolved) => &resolved.principal,
            Resolved::Service(principal) => principal,
        }
    }

    pub fn into_principal(self) -> Principal {
        match self {
            Resolved::Token(resolved) => resolved.principal,
            Resolved::User(resolved) => resolved.principal,
            Resolved::Service(principal) => principal,
        }
    }
}

/// Whether `bearer` has the shape of a JWT (three base64url segments, the signature
/// possibly empty for an unsecured one, which the verifier refuses) and is not a Slipway
/// credential.
pub fn looks_like_jwt(bearer: &str) -> bool {
    if bearer.starts_with("slp") {
        return false;
    }
    let segments: Vec<&str> = bearer.split('.').collect();
    segments.len() == 3
        && !segments[0].is_empty()
        && !segments[1].is_empty()
        && segments.iter().all(|segment| {
            segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl StoreResolver {
    /// A resolver of API tokens only: JWTs answer `TOKEN_INVALID`.
    pub fn new(store: Store) -> Arc<Self> {
        Self::with_oidc(store, None)
    }

    /// A resolver that also accepts users' JWTs verified by `oidc`, when given.
    pub fn with_oidc(store: Store, oidc: Option<Arc<OidcVerifier>>) -> Arc<Self> {
        Arc::new(Self {
            store,
            oidc,
            service_credentials: Vec::new(),
        })
    }

    /// A resolver accepting users' JWTs verified by `oidc` (when given) and exactly the
    /// service credentials whose hashes are `service_credentials`.
    pub fn with_options(
        store: Store,
        oidc: Option<Arc<OidcVerifier>>,
        service_credentials: Vec<CredentialHash>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            oidc,
            service_credentials,
        })
    }

    /// Whether users' JWTs are accepted.
    pub fn oidc_enabled(&self) -> bool {
        self.oidc.is_some()
    }

    /// Resolves a bearer credential: a JWT when OIDC is configured and it looks like one,
    /// otherwise an API token.
    pub async fn resolve_any(&self, bearer: &str) -> Result<Resolved, AuthnError> {
        if let Some(oidc) = &self.oidc
            && looks_like_jwt(bearer)
        {
            return self.resolve_user(oidc, bearer).await.map(Resolved::User);
        }
        if bearer.starts_with(CredentialKind::Service.prefix()) {
            return self.resolve_service(bearer).map(Resolved::Service);
        }
        match self.resolve_api_token(bearer).await {
            Err(AuthnError::Invalid) => self.resolve_owner_credential(bearer).await,
            resolved => resolved.map(Resolved::Token),
        }
    }

    /// Resolves an `slp_` credential that is no API token: bootstrap's owner credential
    /// signs in as the user it was issued for; anything else is invalid.
    async fn resolve_owner_credential(&self, bearer: &str) -> Result<Resolved, AuthnError> {
        let credential = Credential::parse_as(CredentialKind::ApiToken, bearer)
            .map_err(|_| AuthnError::Invalid)?;
        let hash = SecretHash::from_digest(*credential.hash().as_bytes());
        let Some(user_id) = self
            .store
            .owner_credential_user(&hash)
            .await
            .map_err(store_failure)?
        else {
            return Err(AuthnError::Invalid);
        };
        let user = self.store.get_user(&user_id).await.map_err(store_failure)?;
        let claims = UserClaims {
            issuer: user.oidc_issuer,
            subject: user.oidc_subject,
            email: user.email,
            display_name: user.display_name,
        };
        self.principal_of_user(claims, None)
            .await
            .map(Resolved::User)
    }

    /// Resolves an `slps_` service credential: well-formed, and its hash equal to one
    /// configured. Every configured hash is compared (in constant time, without stopping at
    /// a match), so the answer's timing says nothing about which one matched or how closely.
    fn resolve_service(&self, bearer: &str) -> Result<Principal, AuthnError> {
        let credential = Credential::parse_as(CredentialKind::Service, bearer)
            .map_err(|_| AuthnError::Invalid)?;
        let hash = credential.hash();
        let matched = self
            .service_credentials
            .iter()
            .fold(false, |matched, accepted| accepted.ct_eq(&hash) | matched);
        if matched {
            Ok(Principal::service(CONTROL_PLANE))
        } else {
            Err(AuthnError::Invalid)
        }
    }

    /// Resolves a user's OIDC JWT: signature, issuer, audience and validity checked by the
    /// verifier, then [`Self::principal_of_user`].
    async fn resolve_user(
        &self,
        oidc: &OidcVerifier,
        bearer: &str,
    ) -> Result<ResolvedUser, AuthnError> {
        let claims = oidc.verify(bearer).await.map_err(|error| {
            tracing::debug!(%error, "oidc token refused");
            AuthnError::from(error)
        })?;
        let user = UserClaims {
            issuer: claims.issuer,
            subject: claims.subject,
            email: claims.email.unwrap_or_default(),
            display_name: claims.name.unwrap_or_default(),
        };
        self.principal_of_user(user, Some(claims.expire_time)).await
    }

    /// The user `claims` name, created on first sight (or its email and name refreshed),
    /// with its memberships and their roles as stored now; `expire_time` is the
    /// credential's, when it has one.
    async fn principal_of_user(
        &self,
        claims: UserClaims,
        expire_time: Option<std::time::SystemTime>,
    ) -> Result<ResolvedUser, AuthnError> {
        let user = self
            .store
            .upsert_user(&claims)
            .await
            .map_err(store_failure)?;
        let memberships = self
            .store
            .memberships_of_user(&user.id)
            .await
            .map_err(store_failure)?;
        let mut roles = Vec::with_capacity(memberships.len());
        for membership in &memberships {
            let role = self
                .role(&membership.organization_id, &membership.role)
                .await?;
            roles.push(
                Membership::new(membership.organization_id.as_str(), role)
                    .with_member_id(membership.member_id.as_str()),
            );
        }
        let display_name = if user.email.is_empty() {
            user.display_name.as_str()
        } else {
            user.email.as_str()
        };
        let mut principal =
            Principal::user(user.id.as_str(), roles).with_display_name(display_name);
        if let Some(expire_time) = expire_time {
            principal = principal.with_expire_time(expire_time);
        }
        Ok(ResolvedUser {
            user,
            memberships,
            principal,
        })
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
        self.resolve_any(bearer).await.map(Resolved::into_principal)
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_jwt;

    #[test]
    fn jwts_are_told_from_slipway_credentials() {
        assert!(looks_like_jwt(
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_"
        ));
        assert!(!looks_like_jwt("slp_abc.def.ghi"));
        assert!(!looks_like_jwt("slpa_abcdef"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt(".b.c"));
        assert!(!looks_like_jwt("a.b!.c"));
        assert!(!looks_like_jwt(""));
    }
}
