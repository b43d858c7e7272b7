//! Preview environments: ephemeral `PREVIEW` copies of a blueprint environment, one per
//! pull request.
//!
//! Two doors lead in. The git providers' pull-request webhooks ([`http`]: GitHub
//! `pull_request`, GitLab `Merge Request Hook`, signatures checked in [`signature`],
//! payloads read in [`webhook`]) create, redeploy and delete previews of blueprints with
//! `auto_preview`. `slipway.deploy.v1.PreviewService` ([`api`]) creates them on demand and
//! reads and deletes them. Both end in [`lifecycle`]: the catalog clones the blueprint
//! (called with the orchestrator's service credential, after the caller, if any, was
//! authorized here), the engine's queue deploys it, and a teardown deployment with the
//! plan frozen beforehand removes what ran once the catalog environment is gone.
//!
//! The catalog environment is the preview; the `previews` table adds what the
//! orchestrator needs that catalog does not keep: the claim that makes one preview per
//! (blueprint, repository, pull request), the head commit last deployed, and the webhook
//! deliveries already handled.

pub mod api;
pub mod http;
pub mod lifecycle;
pub mod signature;
pub mod store;
pub mod webhook;

use slipway_db::DatabaseConnection;
use slipway_proto::ApiError;

use crate::catalog::{CatalogClient, CatalogError};
use crate::engine::Engine;
use crate::store::StoreError;
use store::{PreviewStore, PreviewStoreError};

pub use api::mount_previews;
pub use http::{PreviewsSettings, WebhookEndpoint, WebhookSecrets, router, serve_webhooks};

/// Everything previews work with. Cheap to clone.
#[derive(Clone)]
pub struct Previews {
    engine: Engine,
    catalog: CatalogClient,
    store: PreviewStore,
}

impl Previews {
    /// Previews deploying through `engine`, cloning through `catalog`, recording in `db`
    /// (the orchestrator's database, with `m0005_previews` applied).
    pub fn new(engine: Engine, catalog: CatalogClient, db: DatabaseConnection) -> Self {
        Self {
            engine,
            catalog,
            store: PreviewStore::new(db),
        }
    }

    /// The preview tables.
    pub fn store(&self) -> &PreviewStore {
        &self.store
    }
}

/// Why a preview operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Previews(#[from] PreviewStoreError),
    #[error(transparent)]
    Deployments(#[from] StoreError),
}

impl PreviewError {
    /// Whether retrying later may help (a dependency did not answer).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Catalog(error) => matches!(
                error.0.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted
                    | tonic::Code::Unknown
            ),
            Self::Previews(PreviewStoreError::Unavailable(_))
            | Self::Deployments(StoreError::Unavailable(_)) => true,
            _ => false,
        }
    }
}

impl From<PreviewError> for ApiError {
    fn from(error: PreviewError) -> Self {
        match error {
            PreviewError::Catalog(CatalogError(status)) => {
                catalog_status(&status, "environment", "")
            }
            PreviewError::Previews(PreviewStoreError::Taken) => {
                ApiError::already_exists("preview_environment", "")
            }
            PreviewError::Previews(PreviewStoreError::Unavailable(_))
            | PreviewError::Deployments(StoreError::Unavailable(_)) => {
                ApiError::Unavailable("the database is unavailable; retry shortly".to_owned())
            }
            PreviewError::Deployments(StoreError::NotFound(kind)) => ApiError::not_found(kind, ""),
            other => ApiError::internal(other),
        }
    }
}

/// What the catalog answered, as this API answers it: its own verdicts on the request
/// (not found, taken, stale) pass through; anything else is this service's failure.
pub(crate) fn catalog_status(status: &tonic::Status, kind: &str, id: &str) -> ApiError {
    match status.code() {
        tonic::Code::NotFound => ApiError::not_found(kind, id),
        tonic::Code::AlreadyExists => ApiError::already_exists(kind, id),
        tonic::Code::FailedPrecondition => ApiError::FailedPrecondition {
            message: status.message().to_owned(),
            violations: Vec::new(),
        },
        tonic::Code::InvalidArgument => ApiError::invalid_field(
            "preview_environment",
            format!("refused by the catalog: {}", status.message()),
        ),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
            ApiError::Unavailable("catalog is unavailable; retry shortly".to_owned())
        }
        _ => ApiError::internal(CatalogError(status.clone())),
    }
}

/// A repository URL reduced to `host/path`, lowercase, without scheme, user, port or
/// `.git`: GitHub and GitLab send several spellings of one repository (web, HTTPS clone,
/// SSH), and a blueprint's services may use any of them.
pub fn repository_key(url: &str) -> String {
    let mut rest = url.trim().to_ascii_lowercase();
    if let Some((_, after)) = rest.split_once("://") {
        rest = after.to_owned();
    }
    // User info (`git@`, `oauth2:token@`) before the host.
    let host_end = rest.find('/').unwrap_or(rest.len());
    if let Some(at) = rest[..host_end].rfind('@') {
        rest = rest[at + 1..].to_owned();
    }
    // `host:owner/repo` (scp-like SSH) or `host:port/owner/repo`.
    let host_end = rest.find('/').unwrap_or(rest.len());
    if let Some(colon) = rest[..host_end].find(':') {
        let after = &rest[colon + 1..];
        let port_len = after.bytes().take_while(u8::is_ascii_digit).count();
        rest = if port_len > 0 && after[port_len..].starts_with('/') {
            format!("{}{}", &rest[..colon], &after[port_len..])
        } else {
            format!("{}/{}", &rest[..colon], after)
        };
    } else if let Some(colon) = rest.find(':')
        && !rest[..colon].contains('/')
    {
        rest = format!("{}/{}", &rest[..colon], &rest[colon + 1..]);
    }
    let trimmed = rest.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    trimmed.trim_end_matches('/').to_owned()
}

/// The default name of a preview: `<blueprint>-pr-<number>`, cut to a DNS label.
pub fn default_name(blueprint_name: &str, number: u64) -> String {
    let suffix = format!("-pr-{number}");
    let keep = 63usize.saturating_sub(suffix.len());
    let base: String = blueprint_name.chars().take(keep).collect();
    let base = base.trim_end_matches('-');
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_repository_has_one_key() {
        for url in [
            "https://github.com/Acme/Shop",
            "https://github.com/acme/shop.git",
            "http://github.com/acme/shop/",
            "git@github.com:acme/shop.git",
            "ssh://git@github.com/acme/shop.git",
            "ssh://git@github.com:22/acme/shop.git",
            "https://oauth2:token@github.com/acme/shop.git",
        ] {
            assert_eq!(repository_key(url), "github.com/acme/shop", "{url}");
        }
        assert_ne!(
            repository_key("https://github.com/acme/shop"),
            repository_key("https://github.com/acme/shop-api")
        );
        assert_eq!(
            repository_key("https://gitlab.example.com/group/sub/project.git"),
            "gitlab.example.com/group/sub/project"
        );
    }

    #[test]
    fn default_names_are_dns_labels() {
        assert_eq!(default_name("staging", 42), "staging-pr-42");
        let long = "a".repeat(60);
        let name = default_name(&long, 12345);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-pr-12345"));
        // The cut falls right after a '-', which must not meet the suffix's.
        let dashed = format!("{}-bbbb", "a".repeat(57));
        let name = default_name(&dashed, 7);
        assert_eq!(name, format!("{}-pr-7", "a".repeat(57)));
    }
}
