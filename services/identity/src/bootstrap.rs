//! First start of a fresh install: create the first organization and hand out the one
//! credential that lets someone in.
//!
//! An organization needs a user as its OWNER, and a fresh install has no OIDC sign-in yet,
//! so bootstrap creates a placeholder user (`bootstrap@slipway.invalid`, issuer
//! [`BOOTSTRAP_ISSUER`]) that owns the organization, and hands out two credentials, each
//! shown once:
//!
//! - an **owner credential** (`slp_…`) that signs in as that user, so its holder acts as
//!   the OWNER (transfer, delete) until people sign in and ownership is transferred; only
//!   its SHA-256 is stored (`identity_owner_credentials`);
//! - an ADMIN **API token**, for automation: the API never lets a token hold OWNER (a
//!   token must not outrank every person).

use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_service::Platform;

use crate::store::{
    self, BuiltinRole, NewApiToken, NewAuditEvent, NewOrganization, PageRequest, PrincipalKind,
    PrincipalRef, RoleRef, SecretHash, Store, StoreError, UserClaims,
};
use crate::validation::Violations;

/// The OIDC issuer recorded for the placeholder owner; no JWT can ever carry it.
pub const BOOTSTRAP_ISSUER: &str = "slipway:bootstrap";

/// Name of the API token bootstrap creates.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";

/// Why bootstrap did nothing.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// An organization exists already: this install was bootstrapped (or is in use).
    #[error("already bootstrapped: an organization exists; use its tokens")]
    AlreadyBootstrapped,
    #[error("invalid organization name: {0}")]
    InvalidName(String),
    #[error("cannot generate the token: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The bootstrap owner user: the first organization's OWNER, and who the owner credential
/// signs in as.
pub fn owner_claims() -> UserClaims {
    UserClaims {
        issuer: BOOTSTRAP_ISSUER.to_owned(),
        subject: "owner".to_owned(),
        email: "bootstrap@slipway.invalid".to_owned(),
        display_name: "bootstrap owner".to_owned(),
    }
}

/// What bootstrap created.
#[derive(Debug)]
pub struct Bootstrapped {
    pub organization_id: String,
    pub api_token_id: String,
    /// The ADMIN API token's secret, shown once.
    pub secret: String,
    /// The owner credential, shown once: it signs in as the bootstrap owner user.
    pub owner_secret: String,
}

/// Creates the first organization, named `org_name`, its owner credential and an ADMIN API
/// token for it.
///
/// Refuses with [`BootstrapError::AlreadyBootstrapped`] when any organization exists, so a
/// second run never hands out a second credential. Two runs racing on an empty database
/// both pass that check, but the organization name is unique, so only one succeeds when
/// they use the same name.
pub async fn bootstrap(
    platform: &Platform,
    org_name: &str,
) -> Result<Bootstrapped, BootstrapError> {
    let mut v = Violations::new();
    v.dns_label("organization", org_name);
    if v.finish().is_err() {
        return Err(BootstrapError::InvalidName(
            "must be a dns label: lowercase letters, digits and '-', 1-63".to_owned(),
        ));
    }
    let store = Store::new(platform.db.clone());
    if !store
        .list_organizations(None, &PageRequest::first(1))
        .await?
        .items
        .is_empty()
    {
        return Err(BootstrapError::AlreadyBootstrapped);
    }
    let owner = store.upsert_user(&owner_claims()).await?;
    let (organization, _) = match store
        .create_organization(
            &NewOrganization {
                name: org_name.to_owned(),
                display_name: org_name.to_owned(),
            },
            &owner.id,
        )
        .await
    {
        Err(StoreError::AlreadyExists(_)) => return Err(BootstrapError::AlreadyBootstrapped),
        other => other?,
    };
    let owner_secret = NewCredential::generate(CredentialKind::ApiToken)
        .map_err(|error| BootstrapError::Random(error.to_string()))?;
    store
        .insert_owner_credential(
            &SecretHash::from_digest(*owner_secret.hash().as_bytes()),
            &owner.id,
        )
        .await?;
    let secret = NewCredential::generate(CredentialKind::ApiToken)
        .map_err(|error| BootstrapError::Random(error.to_string()))?;
    let creator = PrincipalRef {
        kind: PrincipalKind::User,
        id: owner.id.clone(),
        display_name: owner.email.clone(),
    };
    let token = store
        .create_api_token(&NewApiToken {
            organization_id: organization.id.clone(),
            name: BOOTSTRAP_TOKEN_NAME.to_owned(),
            description: "created by bootstrap".to_owned(),
            role: RoleRef::Builtin(BuiltinRole::Admin),
            secret_hash: SecretHash::from_digest(*secret.hash().as_bytes()),
            secret_hint: secret.hint().to_owned(),
            expire_time: None,
            creator: creator.clone(),
        })
        .await?;
    store
        .insert_audit_event(&NewAuditEvent {
            organization_id: organization.id.clone(),
            actor: creator,
            action: "identity.organizations.bootstrap".to_owned(),
            method: "slipway-identity bootstrap".to_owned(),
            target: store::AuditTarget {
                kind: Some("ORGANIZATION".to_owned()),
                id: Some(organization.id.clone()),
                ..store::AuditTarget::default()
            },
            event_time: store::now(),
            origin: store::Origin::default(),
            status_code: "OK".to_owned(),
            error_reason: String::new(),
        })
        .await?;
    Ok(Bootstrapped {
        organization_id: organization.id,
        api_token_id: token.id,
        secret: secret.into_secret(),
        owner_secret: owner_secret.into_secret(),
    })
}
