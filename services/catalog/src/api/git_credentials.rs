//! `slipway.catalog.v1.GitCredentialService`: credentials to fetch private git
//! repositories.
//!
//! The token and the SSH private key are Input only: both travel sealed together (one
//! [`GitSecrets`] per row, sealed with the organization's data key into the row's `sealed`
//! column), never in the spec, and no read returns them. `has_token` and
//! `has_ssh_private_key` stay in the spec and say which one is stored.
//!
//! No event is published for git credentials: `slipway/events/v1/catalog_events.proto`
//! has no git credential payload, and nothing consumes their changes yet.

use serde::{Deserialize, Serialize};
use slipway_api::Violations;
use slipway_auth::rbac::{Action, Principal, Resource};
use slipway_proto::ApiError;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::git_credential_service_server::GitCredentialService;
use tonic::{Request, Response, Status};

use super::registries::{list_in_organization, referenced};
use super::{
    CatalogMessage as _, Context, authorize, caller, next_page_token, page_request, precondition,
    request_key, require,
};
use crate::mask::UpdateMask;
use crate::store::{Children, Kind, NewRow, Row, RowChanges, new_id};

/// Longest user name.
const MAX_USERNAME: usize = 255;
/// Largest token, in bytes.
const MAX_TOKEN: usize = 4 * 1024;
/// Largest SSH private key, in bytes.
const MAX_SSH_KEY: usize = 16 * 1024;
/// Largest known_hosts text, in bytes.
const MAX_KNOWN_HOSTS: usize = 64 * 1024;

/// The fields of a git credential an update may change.
const MUTABLE: &[&str] = &[
    "name",
    "provider",
    "username",
    "token",
    "ssh_private_key",
    "ssh_known_hosts",
];

/// What a git credential's `sealed` column holds, before sealing. Exactly one field is
/// non-empty. No `Debug`: it must never reach a log.
#[derive(Default, Serialize, Deserialize)]
pub struct GitSecrets {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub ssh_private_key: String,
}

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct GitCredentials {
    ctx: Context,
}

impl GitCredentials {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

fn check_provider(field: &str, provider: i32, v: &mut Violations) {
    match pb::GitProviderKind::try_from(provider) {
        Ok(pb::GitProviderKind::Unspecified) => v.add(field, "is required"),
        Ok(_) => {}
        Err(_) => v.add(field, "is not a known git provider"),
    }
}

fn check_token(token: &str, v: &mut Violations) {
    if token.len() > MAX_TOKEN {
        v.add(
            "git_credential.token",
            format!("must be at most {MAX_TOKEN} bytes"),
        );
    } else if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        v.add(
            "git_credential.token",
            "must not contain spaces or control characters",
        );
    }
}

/// An empty key passes (it means "no key"); anything else must look like an OpenSSH or
/// PEM private key, so a public key or a truncated paste is refused now rather than at
/// the first fetch.
fn check_ssh_key(key: &str, v: &mut Violations) {
    let field = "git_credential.ssh_private_key";
    if key.is_empty() {
        return;
    }
    if key.len() > MAX_SSH_KEY {
        v.add(field, format!("must be at most {MAX_SSH_KEY} bytes"));
        return;
    }
    let trimmed = key.trim();
    let pem = trimmed.starts_with("-----BEGIN ")
        && trimmed
            .lines()
            .next()
            .is_some_and(|line| line.ends_with("PRIVATE KEY-----"))
        && trimmed.lines().last().is_some_and(|line| {
            line.starts_with("-----END ") && line.ends_with("PRIVATE KEY-----")
        })
        && trimmed.lines().count() >= 3;
    if !pem {
        v.add(
            field,
            "must be an unencrypted private key in OpenSSH or PEM format (-----BEGIN … PRIVATE KEY-----)",
        );
    }
}

fn check_known_hosts(known_hosts: &str, v: &mut Violations) {
    if known_hosts.len() > MAX_KNOWN_HOSTS {
        v.add(
            "git_credential.ssh_known_hosts",
            format!("must be at most {MAX_KNOWN_HOSTS} bytes"),
        );
    }
}

/// The rules on the credential as it will be stored: exactly one secret, GENERIC needs a
/// user name for a token and known hosts for a key.
fn check_whole(credential: &pb::GitCredential, v: &mut Violations) {
    if credential.has_token == credential.has_ssh_private_key {
        v.add(
            "git_credential.token",
            "exactly one of token and ssh_private_key must be set",
        );
    }
    let generic = credential.provider == i32::from(pb::GitProviderKind::Generic);
    if generic && credential.has_token && credential.username.is_empty() {
        v.add(
            "git_credential.username",
            "is required with a token for a GENERIC provider",
        );
    }
    if generic && credential.has_ssh_private_key && credential.ssh_known_hosts.trim().is_empty() {
        v.add(
            "git_credential.ssh_known_hosts",
            "is required with an ssh key for a GENERIC provider: host keys are never accepted blindly",
        );
    }
}

impl GitCredentials {
    async fn seal(&self, organization_id: &str, secrets: &GitSecrets) -> Result<Vec<u8>, ApiError> {
        let plain = serde_json::to_vec(secrets).map_err(ApiError::internal)?;
        self.ctx
            .keyring
            .seal(organization_id, Kind::GitCredential, &plain)
            .await
    }

    async fn open(&self, row: &Row) -> Result<GitSecrets, ApiError> {
        let Some(sealed) = &row.sealed else {
            return Ok(GitSecrets::default());
        };
        let plain = self
            .ctx
            .keyring
            .open(&row.organization_id, Kind::GitCredential, sealed)
            .await?;
        serde_json::from_slice(&plain).map_err(ApiError::internal)
    }

    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateGitCredentialRequest,
    ) -> Result<pb::GitCredential, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        v.request_id(&request.request_id);
        let mut credential = request.git_credential.unwrap_or_default();
        v.dns_label("git_credential.name", &credential.name);
        check_provider("git_credential.provider", credential.provider, &mut v);
        v.max_chars(
            "git_credential.username",
            &credential.username,
            MAX_USERNAME,
        );
        check_token(&credential.token, &mut v);
        check_ssh_key(&credential.ssh_private_key, &mut v);
        check_known_hosts(&credential.ssh_known_hosts, &mut v);
        credential.has_token = !credential.token.is_empty();
        credential.has_ssh_private_key = !credential.ssh_private_key.is_empty();
        check_whole(&credential, &mut v);
        v.finish()?;
        let org = request.organization_id.as_str();
        authorize(
            principal,
            Action::CatalogGitCredentialsWrite,
            &Resource::in_organization(org),
            Kind::GitCredential,
            "",
        )?;
        let secrets = GitSecrets {
            token: std::mem::take(&mut credential.token),
            ssh_private_key: std::mem::take(&mut credential.ssh_private_key),
        };
        let sealed = self.seal(org, &secrets).await?;
        let row = NewRow {
            id: new_id(),
            organization_id: org.to_owned(),
            parent_id: org.to_owned(),
            name: credential.name.clone(),
            spec: credential.to_spec(),
            sealed: Some(sealed),
            ..NewRow::default()
        };
        let key = request_key(org, "CreateGitCredential", &request.request_id);
        let (row, _) = self.ctx.store.insert(Kind::GitCredential, row, key).await?;
        pb::GitCredential::from_row(&row)
    }

    async fn get(&self, principal: &Principal, id: &str) -> Result<pb::GitCredential, ApiError> {
        require("id", id)?;
        let row = self.ctx.row(Kind::GitCredential, id).await?;
        authorize(
            principal,
            Action::CatalogGitCredentialsRead,
            &Resource::in_organization(&row.organization_id),
            Kind::GitCredential,
            id,
        )?;
        pb::GitCredential::from_row(&row)
    }

    /// Lists a page of credentials. The provider filter applies to the page read (the
    /// provider is mutable and lives in the spec), so a page may hold fewer credentials
    /// than asked while `next_page_token` still continues.
    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListGitCredentialsRequest,
    ) -> Result<pb::ListGitCredentialsResponse, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        if pb::GitProviderKind::try_from(request.provider).is_err() {
            v.add("provider", "is not a known git provider");
        }
        let query = format!(
            "git_credentials/{}/{}",
            request.organization_id, request.provider
        );
        let page = page_request(request.page_size, &request.page_token, &query, &mut v);
        v.finish()?;
        let (git_credentials, next) = list_in_organization(
            &self.ctx,
            principal,
            &request.organization_id,
            Action::CatalogGitCredentialsRead,
            &page,
            |credential: &pb::GitCredential| {
                request.provider == 0 || credential.provider == request.provider
            },
        )
        .await?;
        Ok(pb::ListGitCredentialsResponse {
            git_credentials,
            next_page_token: next_page_token(next, &query),
        })
    }

    async fn update(
        &self,
        principal: &Principal,
        request: pb::UpdateGitCredentialRequest,
    ) -> Result<pb::GitCredential, ApiError> {
        let update = request.git_credential.unwrap_or_default();
        let mut v = Violations::new();
        v.required("git_credential.id", &update.id);
        let mask = UpdateMask::parse(request.update_mask.as_ref(), MUTABLE, &mut v);
        if mask.has("name") {
            v.dns_label("git_credential.name", &update.name);
        }
        if mask.has("provider") {
            check_provider("git_credential.provider", update.provider, &mut v);
        }
        if mask.has("username") {
            v.max_chars("git_credential.username", &update.username, MAX_USERNAME);
        }
        if mask.has("token") {
            check_token(&update.token, &mut v);
        }
        if mask.has("ssh_private_key") {
            check_ssh_key(&update.ssh_private_key, &mut v);
        }
        if mask.has("ssh_known_hosts") {
            check_known_hosts(&update.ssh_known_hosts, &mut v);
        }
        v.finish()?;
        let row = self.ctx.row(Kind::GitCredential, &update.id).await?;
        authorize(
            principal,
            Action::CatalogGitCredentialsWrite,
            &Resource::in_organization(&row.organization_id),
            Kind::GitCredential,
            &update.id,
        )?;
        let mut credential = pb::GitCredential::from_row(&row)?;
        if mask.has("name") {
            credential.name = update.name.clone();
        }
        if mask.has("provider") {
            credential.provider = update.provider;
        }
        if mask.has("username") {
            credential.username = update.username.clone();
        }
        if mask.has("ssh_known_hosts") {
            credential.ssh_known_hosts = update.ssh_known_hosts.clone();
        }
        let secret_changed = mask.has("token") || mask.has("ssh_private_key");
        if mask.has("token") {
            credential.has_token = !update.token.is_empty();
        }
        if mask.has("ssh_private_key") {
            credential.has_ssh_private_key = !update.ssh_private_key.is_empty();
        }
        // What depends on the stored state (which secret is kept) is checked now.
        let mut v = Violations::new();
        check_whole(&credential, &mut v);
        v.finish()?;
        // A secret in the mask replaces the stored one; the other is kept as stored.
        let sealed = if secret_changed {
            let mut secrets = self.open(&row).await?;
            if mask.has("token") {
                secrets.token = update.token.clone();
            }
            if mask.has("ssh_private_key") {
                secrets.ssh_private_key = update.ssh_private_key.clone();
            }
            Some(Some(self.seal(&row.organization_id, &secrets).await?))
        } else {
            None
        };
        let changes = RowChanges {
            name: Some(credential.name.clone()),
            spec: Some(credential.to_spec()),
            sealed,
            ..RowChanges::default()
        };
        let etag = (!update.etag.is_empty()).then_some(update.etag.as_str());
        let row = self
            .ctx
            .store
            .update(Kind::GitCredential, &row.id, etag, changes)
            .await?;
        pb::GitCredential::from_row(&row)
    }

    async fn delete(
        &self,
        principal: &Principal,
        request: pb::DeleteGitCredentialRequest,
    ) -> Result<(), ApiError> {
        require("id", &request.id)?;
        let row = self.ctx.row(Kind::GitCredential, &request.id).await?;
        authorize(
            principal,
            Action::CatalogGitCredentialsWrite,
            &Resource::in_organization(&row.organization_id),
            Kind::GitCredential,
            &request.id,
        )?;
        if let Some(kind) = referenced(
            &self.ctx,
            &row.organization_id,
            Kind::GitCredential,
            &row.id,
        )
        .await?
        {
            return Err(precondition(
                "GIT_CREDENTIAL_IN_USE",
                Kind::GitCredential.as_str(),
                format!("the git credential is still used by a {kind}; change it first"),
            ));
        }
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        self.ctx
            .store
            .delete(Kind::GitCredential, &row.id, etag, Children::Refuse)
            .await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl GitCredentialService for GitCredentials {
    async fn create_git_credential(
        &self,
        request: Request<pb::CreateGitCredentialRequest>,
    ) -> Result<Response<pb::CreateGitCredentialResponse>, Status> {
        let principal = caller(&request)?;
        let git_credential = self.create(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::CreateGitCredentialResponse {
            git_credential: Some(git_credential),
        }))
    }

    async fn get_git_credential(
        &self,
        request: Request<pb::GetGitCredentialRequest>,
    ) -> Result<Response<pb::GetGitCredentialResponse>, Status> {
        let principal = caller(&request)?;
        let git_credential = self.get(&principal, &request.get_ref().id).await?;
        Ok(Response::new(pb::GetGitCredentialResponse {
            git_credential: Some(git_credential),
        }))
    }

    async fn list_git_credentials(
        &self,
        request: Request<pb::ListGitCredentialsRequest>,
    ) -> Result<Response<pb::ListGitCredentialsResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.list(&principal, request.into_inner()).await?,
        ))
    }

    async fn update_git_credential(
        &self,
        request: Request<pb::UpdateGitCredentialRequest>,
    ) -> Result<Response<pb::UpdateGitCredentialResponse>, Status> {
        let principal = caller(&request)?;
        let git_credential = self.update(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateGitCredentialResponse {
            git_credential: Some(git_credential),
        }))
    }

    async fn delete_git_credential(
        &self,
        request: Request<pb::DeleteGitCredentialRequest>,
    ) -> Result<Response<pb::DeleteGitCredentialResponse>, Status> {
        let principal = caller(&request)?;
        self.delete(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::DeleteGitCredentialResponse {}))
    }
}
