//! The gRPC adapter: one file per service. Each handler validates the request (nothing is
//! read before it is valid), loads what the decision needs, authorizes with
//! `slipway_auth::authorize`, calls the store, publishes the change on the EVENTS stream
//! and encodes the answer.
//!
//! What the handlers share lives here: [`Context`], the mapping of store errors and RBAC
//! denials to [`ApiError`], the [`CatalogMessage`] trait that moves a resource between its
//! proto message and its stored [`Row`], scopes (a project, an environment and its mode),
//! page tokens, and the event publisher.

pub mod clusters;
pub mod deployment_rules;
pub mod environments;
pub mod git_credentials;
pub mod internal;
pub mod internal_clusters;
pub mod projects;
pub mod registries;
pub mod services;
pub mod variables;

use std::sync::Arc;

use prost::Message;
use slipway_api::{Violations, page};
use slipway_auth::rbac::{
    Action, Answer, Decision, DenyReason, EnvironmentMode as RbacMode, Principal, Resource,
};
use slipway_events::{EventBus, EventBusExt as _};
use slipway_proto::catalog::v1 as pb;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::events::v1 as ev;
use slipway_proto::{ApiError, AuthFailure, PreconditionViolation};

use crate::store::{Kind, NameCursor, PageRequest, RequestKey, Row, Store, StoreError};

/// Longest free-text description.
pub const MAX_DESCRIPTION: usize = 1024;

/// What every handler needs. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub bus: Arc<dyn EventBus>,
    /// Seals and opens secrets (registry passwords, git tokens, secret variables).
    pub keyring: crate::keyring::Keyring,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(kind) => ApiError::not_found(kind.as_str(), ""),
            StoreError::AlreadyExists(kind) => ApiError::already_exists(kind.as_str(), ""),
            StoreError::EtagMismatch(kind) => ApiError::stale_etag(kind.as_str()),
            StoreError::HasChildren { parent, child } => precondition(
                "HAS_CHILDREN",
                parent.as_str(),
                format!(
                    "the {parent} still has {child} resources; delete them first or pass force"
                ),
            ),
            StoreError::MissingReference(kind) => precondition(
                "REFERENCE_MISSING",
                kind.as_str(),
                format!("the {kind} it belongs to no longer exists"),
            ),
            StoreError::Unavailable(_) => {
                ApiError::Unavailable("the database is unavailable; retry shortly".to_owned())
            }
            internal @ StoreError::Internal(_) => ApiError::internal(internal),
        }
    }
}

/// A `FAILED_PRECONDITION` with one violation.
pub fn precondition(reason: &str, subject: &str, description: String) -> ApiError {
    ApiError::FailedPrecondition {
        message: description.clone(),
        violations: vec![PreconditionViolation {
            kind: reason.to_owned(),
            subject: subject.to_owned(),
            description,
        }],
    }
}

/// INVALID_ARGUMENT unless `value` (an id the client must send) is present.
pub fn require(field: &str, value: &str) -> Result<(), ApiError> {
    let mut v = Violations::new();
    v.required(field, value);
    v.finish()
}

/// The caller, as `AuthenticateLayer` resolved it.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Principal, ApiError> {
    slipway_auth::principal(request).cloned()
}

/// Authorizes `action` on `resource`; a denial is answered as RBAC says: NOT_FOUND for an
/// outsider (naming `kind` and `id`, never revealing that it exists), PERMISSION_DENIED
/// naming the permission for a member without it.
pub fn authorize(
    principal: &Principal,
    action: Action,
    resource: &Resource<'_>,
    kind: Kind,
    id: &str,
) -> Result<(), ApiError> {
    match slipway_auth::authorize(principal, action, resource) {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(denial) => Err(match denial.answer() {
            Answer::NotFound => ApiError::not_found(kind.as_str(), id),
            Answer::PermissionDenied => ApiError::PermissionDenied {
                permission: denial.action().as_str().to_owned(),
            },
            Answer::Unauthenticated => match denial.reason() {
                DenyReason::PrincipalExpired => {
                    ApiError::Unauthenticated(AuthFailure::TokenExpired)
                }
                _ => ApiError::Unauthenticated(AuthFailure::TokenInvalid),
            },
            Answer::InvalidArgument => ApiError::internal(BadCheck(denial.to_string())),
        }),
    }
}

/// A check a handler built with a resource missing a scope field: a bug here.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadCheck(String);

/// The RBAC mode of a proto mode; `None` for unspecified.
pub fn rbac_mode(mode: i32) -> Option<RbacMode> {
    match EnvironmentMode::try_from(mode).ok()? {
        EnvironmentMode::Unspecified => None,
        EnvironmentMode::Production => Some(RbacMode::Production),
        EnvironmentMode::Staging => Some(RbacMode::Staging),
        EnvironmentMode::Development => Some(RbacMode::Development),
        EnvironmentMode::Preview => Some(RbacMode::Preview),
    }
}

/// A resource as a proto message that the catalog stores as a [`Row`]: the message minus
/// its output-only fields is the row's `spec`; those fields come from the row's columns.
pub trait CatalogMessage: Message + Default + Clone {
    const KIND: Kind;

    /// Sets the output-only fields every resource has from `row`, and the ones only this
    /// kind has (parent ids) from the row's columns.
    fn fill(&mut self, row: &Row);

    /// Clears what `fill` sets, before the message is stored as a spec.
    fn clear_output(&mut self);

    /// The message stored in `row`, its output-only fields filled in.
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        let mut message = Self::decode(row.spec.as_slice()).map_err(|error| {
            ApiError::internal(CorruptRow(format!(
                "{} {}: {error}",
                Self::KIND.as_str(),
                row.id
            )))
        })?;
        message.fill(row);
        Ok(message)
    }

    /// The spec bytes of this message.
    fn to_spec(&self) -> Vec<u8> {
        let mut stored = self.clone();
        stored.clear_output();
        stored.encode_to_vec()
    }
}

/// A stored spec that does not decode: a bug or a corrupt row.
#[derive(Debug, thiserror::Error)]
#[error("undecodable row: {0}")]
struct CorruptRow(String);

/// The timestamp of a stored time.
pub use slipway_api::timestamp;

macro_rules! common_output {
    ($message:ident, $row:ident) => {
        $message.id = $row.id.clone();
        $message.organization_id = $row.organization_id.clone();
        $message.create_time = Some(timestamp($row.create_time));
        $message.update_time = Some(timestamp($row.update_time));
        $message.etag = $row.etag.clone();
    };
}

macro_rules! clear_common {
    ($message:ident) => {
        $message.id.clear();
        $message.organization_id.clear();
        $message.create_time = None;
        $message.update_time = None;
        $message.etag.clear();
    };
}

impl CatalogMessage for pb::Project {
    const KIND: Kind = Kind::Project;
    fn fill(&mut self, row: &Row) {
        common_output!(self, row);
        self.name = row.name.clone();
    }
    fn clear_output(&mut self) {
        clear_common!(self);
        self.name.clear();
    }
}

impl CatalogMessage for pb::Environment {
    const KIND: Kind = Kind::Environment;
    fn fill(&mut self, row: &Row) {
        common_output!(self, row);
        self.name = row.name.clone();
        self.project_id = row.parent_id.clone();
        self.cluster_id = row.cluster_id.clone().unwrap_or_default();
    }
    fn clear_output(&mut self) {
        clear_common!(self);
        self.name.clear();
        self.project_id.clear();
        self.cluster_id.clear();
    }
}

impl CatalogMessage for pb::Service {
    const KIND: Kind = Kind::Service;
    fn fill(&mut self, row: &Row) {
        common_output!(self, row);
        self.name = row.name.clone();
        self.environment_id = row.parent_id.clone();
        self.project_id = row.project_id.clone().unwrap_or_default();
    }
    fn clear_output(&mut self) {
        clear_common!(self);
        self.name.clear();
        self.environment_id.clear();
        self.project_id.clear();
    }
}

impl CatalogMessage for pb::Cluster {
    const KIND: Kind = Kind::Cluster;
    fn fill(&mut self, row: &Row) {
        common_output!(self, row);
        self.name = row.name.clone();
    }
    fn clear_output(&mut self) {
        clear_common!(self);
        self.name.clear();
        self.connection = None;
    }
}

impl CatalogMessage for pb::Registry {
    const KIND: Kind = Kind::Registry;
    fn fill(&mut self, row: &Row) {
        common_output!(self, row);
        self.name = row.name.clone();
        self.password.clear();
        self.has_password = row.sealed.is_some();
    }
    fn clear_output(&mut self) {
        clear_common!(self);
        self.name.clear();
        // The password lives sealed in its own column, never in the spec.
        self.password.clear();
        self.has_password = false;
    }
}

impl CatalogMessage for pb::GitCredential {
    const KIND: Kind = Kind::GitCredential;
    fn fill(&mut self, row: &Row) {
        common_output!(self, row);
        self.name = row.name.clone();
        self.token.clear();
        self.ssh_private_key.clear();
    }
    fn clear_output(&mut self) {
        clear_common!(self);
        self.name.clear();
        // Secrets live sealed in their own column; `has_*` stay in the spec.
        self.token.clear();
        self.ssh_private_key.clear();
    }
}

impl CatalogMessage for pb::Variable {
    const KIND: Kind = Kind::Variable;
    fn fill(&mut self, row: &Row) {
        common_output!(self, row);
        self.key = row.name.clone();
        if self.is_secret {
            self.value.clear();
        }
    }
    fn clear_output(&mut self) {
        clear_common!(self);
        self.key.clear();
        // A secret's value lives sealed in its own column, never in the spec.
        if self.is_secret {
            self.value.clear();
        }
    }
}

impl CatalogMessage for pb::DeploymentRule {
    const KIND: Kind = Kind::DeploymentRule;
    fn fill(&mut self, row: &Row) {
        common_output!(self, row);
        self.name = row.name.clone();
    }
    fn clear_output(&mut self) {
        clear_common!(self);
        self.name.clear();
        self.next_start_time = None;
        self.next_stop_time = None;
    }
}

/// The page of a List request: its size (0 → default, capped) and where it continues. The
/// token is bound to `query` (the listing and its filters).
///
/// Every paged List of the catalog is ordered by name, as its proto says, so the cursor is
/// a [`NameCursor`]; a token minted for another order does not decode and is refused.
pub fn page_request(
    page_size: i32,
    page_token: &str,
    query: &str,
    v: &mut Violations,
) -> PageRequest<NameCursor> {
    let size = v.page_size(page_size);
    let after = match page::decode::<NameCursor>(page_token, query) {
        Ok(after) => after,
        Err(_) => {
            v.add(
                "page_token",
                "is not a page token of this listing with these fields",
            );
            None
        }
    };
    PageRequest { size, after }
}

/// The token of the page after `next`; empty at the end.
pub fn next_page_token(next: Option<NameCursor>, query: &str) -> String {
    page::encode(next, query)
}

/// The idempotency key of a create or action, when the request carries one.
pub fn request_key(
    organization_id: &str,
    method: &'static str,
    request_id: &str,
) -> Option<RequestKey> {
    (!request_id.is_empty()).then(|| RequestKey {
        organization_id: organization_id.to_owned(),
        method,
        request_id: request_id.to_owned(),
    })
}

/// What an action on something inside a project needs: the project's organization and
/// id, and the environment and its mode when there is one.
#[derive(Clone, Debug)]
pub struct Scope {
    pub organization_id: String,
    pub project_id: String,
    pub environment: Option<(String, RbacMode)>,
}

impl Scope {
    /// The RBAC resource of this scope.
    pub fn resource(&self) -> Resource<'_> {
        let resource =
            Resource::in_organization(&self.organization_id).in_project(&self.project_id);
        match &self.environment {
            Some((id, mode)) => resource.in_environment(id, *mode),
            None => resource,
        }
    }
}

impl Context {
    /// A row of `kind` by id, answering NOT_FOUND with the id it was asked for.
    pub async fn row(&self, kind: Kind, id: &str) -> Result<Row, ApiError> {
        self.store.get(kind, id).await.map_err(|error| match error {
            StoreError::NotFound(kind) => ApiError::not_found(kind.as_str(), id),
            other => other.into(),
        })
    }

    /// The scope of an environment row: its project, and its mode read from its spec.
    pub fn environment_scope(&self, row: &Row) -> Result<Scope, ApiError> {
        let environment = pb::Environment::from_row(row)?;
        let mode = rbac_mode(environment.mode).ok_or_else(|| {
            ApiError::internal(CorruptRow(format!("environment {} has no mode", row.id)))
        })?;
        Ok(Scope {
            organization_id: row.organization_id.clone(),
            project_id: row.parent_id.clone(),
            environment: Some((row.id.clone(), mode)),
        })
    }

    /// The scope of whatever sits in environment `environment_id`.
    pub async fn scope_of_environment(&self, environment_id: &str) -> Result<Scope, ApiError> {
        let row = self.row(Kind::Environment, environment_id).await?;
        self.environment_scope(&row)
    }

    /// Publishes a catalog event on the EVENTS stream, subject
    /// `slipway.events.catalog.<resource>.<verb>`.
    ///
    /// A failed publish is logged, not answered: the change is committed and retrying the
    /// call would repeat it.
    pub async fn publish(
        &self,
        principal: &Principal,
        organization_id: &str,
        resource: &str,
        verb: &str,
        payload: ev::event::Payload,
    ) {
        let id = uuid::Uuid::now_v7().to_string();
        let event = ev::Event {
            id: id.clone(),
            time: Some(timestamp(crate::store::now())),
            organization_id: organization_id.to_owned(),
            actor: Some(slipway_auth::convert::event_actor(principal)),
            r#type: format!("catalog.{resource}.{verb}"),
            payload: Some(payload),
        };
        let subject = match slipway_events::subject::event("catalog", resource) {
            Ok(prefix) => format!("{prefix}.{verb}"),
            Err(error) => {
                tracing::error!(%error, "bad event subject");
                return;
            }
        };
        if let Err(error) = self.bus.publish_proto(&subject, &id, &event).await {
            tracing::error!(%error, %subject, "cannot publish a catalog event");
        }
    }
}
