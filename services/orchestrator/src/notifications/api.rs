//! `slipway.deploy.v1.NotificationService`: organization webhooks and their delivery log.
//! Each handler validates, loads the webhook (whose row carries its organization),
//! authorizes on that organization with `slipway_auth`, and answers `NOT_FOUND` for
//! another organization's webhook.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use slipway_api::{Violations, page, timestamp};
use slipway_auth::rbac::{
    Action as RbacAction, Answer, Decision, Principal, Resource, ResourceKind,
};
use slipway_proto::ApiError;
use slipway_proto::common::v1::EnvironmentMode;
use slipway_proto::deploy::v1 as pb;
use slipway_proto::deploy::v1::notification_service_server::NotificationService;
use slipway_proto::deploy::v1::{WebhookDeliveryStatus as S, WebhookEventType as T};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::deliver::attempts;
use super::seal::SecretBox;
use super::store::{DeliveryRow, NotificationStore, WebhookRow, WebhookStoreError, new_etag};
use crate::api::{IdCursor, caller};
use crate::catalog::CatalogClient;
use crate::store::{RequestKey, new_id, now};

/// The gRPC service. Its `_tasks` keep the notifier (and the scheduler started beside it)
/// running for as long as a server holds the service.
#[derive(Clone)]
pub struct Notifications {
    pub(crate) store: NotificationStore,
    pub(crate) secrets: SecretBox,
    pub(crate) catalog: Option<CatalogClient>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) _tasks: Arc<super::Tasks>,
}

const MUTABLE: &[&str] = &[
    "name",
    "description",
    "url",
    "secret",
    "event_types",
    "project_ids",
    "environment_modes",
    "enabled",
];

#[derive(Serialize, Deserialize)]
struct NameCursor {
    name: String,
}

fn authorize(
    principal: &Principal,
    action: RbacAction,
    organization_id: &str,
    id: &str,
) -> Result<(), ApiError> {
    let resource = if id.is_empty() {
        Resource::in_organization(organization_id).of_kind(ResourceKind::Webhook)
    } else {
        Resource::in_organization(organization_id).target(ResourceKind::Webhook, id)
    };
    match slipway_auth::authorize(principal, action, &resource) {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(denial) => Err(match denial.answer() {
            Answer::PermissionDenied => ApiError::PermissionDenied {
                permission: denial.action().as_str().to_owned(),
            },
            Answer::Unauthenticated => {
                ApiError::Unauthenticated(slipway_proto::AuthFailure::TokenInvalid)
            }
            _ if id.is_empty() => ApiError::not_found("organization", organization_id),
            _ => ApiError::not_found("webhook", id),
        }),
    }
}

impl From<WebhookStoreError> for ApiError {
    fn from(error: WebhookStoreError) -> Self {
        match error {
            WebhookStoreError::NameTaken => ApiError::already_exists("webhook", ""),
            WebhookStoreError::Stale => ApiError::stale_etag("webhook"),
            WebhookStoreError::Store(store) => store.into(),
        }
    }
}

fn to_proto(row: &WebhookRow) -> pb::Webhook {
    pb::Webhook {
        id: row.id.clone(),
        organization_id: row.organization_id.clone(),
        name: row.name.clone(),
        description: row.description.clone(),
        url: row.url.clone(),
        secret: String::new(),
        has_secret: !row.secret_sealed.is_empty(),
        event_types: row.event_types.clone(),
        project_ids: row.project_ids.clone(),
        environment_modes: row.environment_modes.clone(),
        enabled: row.enabled,
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
        etag: row.etag.clone(),
    }
}

fn delivery_to_proto(row: &DeliveryRow) -> pb::WebhookDelivery {
    let pending = row.status == S::Pending as i32;
    pb::WebhookDelivery {
        id: row.id.clone(),
        webhook_id: row.webhook_id.clone(),
        organization_id: row.organization_id.clone(),
        event_id: row.event_id.clone(),
        event_type: row.event_type,
        deployment_id: row.deployment_id.clone(),
        status: row.status,
        attempt: row.attempt,
        response_status_code: row.response_status_code,
        error_message: row.error_message.clone(),
        attempt_time: row.attempt_time.map(timestamp),
        next_retry_time: if pending {
            row.next_retry_time.map(timestamp)
        } else {
            None
        },
        attempts: attempts(&row.attempts),
        redelivered_from_delivery_id: row.redelivered_from.clone(),
        create_time: Some(timestamp(row.create_time)),
    }
}

/// Checks the user-settable fields named by `paths` (all of them on create).
fn check_fields(v: &mut Violations, w: &pb::Webhook, paths: &[&str], creating: bool) {
    let has = |p: &str| creating || paths.contains(&p);
    if has("name") {
        v.dns_label("webhook.name", &w.name);
    }
    if has("description") {
        v.max_chars(
            "webhook.description",
            &w.description,
            slipway_api::validation::MAX_DESCRIPTION,
        );
    }
    if has("url") {
        check_url(v, &w.url);
    }
    if has("secret") {
        let length = w.secret.chars().count();
        if w.secret.is_empty() {
            v.add("webhook.secret", "is required");
        } else if !(16..=256).contains(&length) {
            v.add("webhook.secret", "must be 16 to 256 characters");
        }
    }
    if has("event_types") {
        for (i, value) in w.event_types.iter().enumerate() {
            if !matches!(T::try_from(*value), Ok(t) if t != T::Unspecified) {
                v.add(
                    format!("webhook.event_types[{i}]"),
                    "is not a webhook event type",
                );
            }
        }
    }
    if has("environment_modes") {
        for (i, value) in w.environment_modes.iter().enumerate() {
            if !matches!(EnvironmentMode::try_from(*value), Ok(m) if m != EnvironmentMode::Unspecified)
            {
                v.add(
                    format!("webhook.environment_modes[{i}]"),
                    "is not an environment mode",
                );
            }
        }
    }
    if has("project_ids") {
        for (i, id) in w.project_ids.iter().enumerate() {
            if id.is_empty() {
                v.add(format!("webhook.project_ids[{i}]"), "must not be empty");
            }
        }
    }
}

fn check_url(v: &mut Violations, url: &str) {
    let field = "webhook.url";
    if url.is_empty() {
        v.add(field, "is required");
        return;
    }
    if url.len() > 2048 {
        v.add(field, "must be at most 2048 characters");
        return;
    }
    let parsed: Result<http::Uri, _> = url.parse();
    let ok = parsed.is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|host| !host.is_empty())
    });
    if !ok {
        v.add(field, "must be an absolute http:// or https:// url");
    }
}

fn dedup<T: PartialEq + Clone>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

impl Notifications {
    /// Project ids that do not name a project of `organization_id` (by index), checked in
    /// catalog; with no catalog configured every id is accepted as given.
    async fn check_projects(
        &self,
        organization_id: &str,
        project_ids: &[String],
    ) -> Result<(), ApiError> {
        let Some(catalog) = &self.catalog else {
            return Ok(());
        };
        let mut v = Violations::new();
        for (i, id) in project_ids.iter().enumerate() {
            match catalog.project(id).await {
                Ok(project) if project.organization_id == organization_id => {}
                Ok(_) => v.add(
                    format!("webhook.project_ids[{i}]"),
                    "is not a project of the organization",
                ),
                Err(error) => match error.0.code() {
                    tonic::Code::NotFound | tonic::Code::InvalidArgument => {
                        v.add(
                            format!("webhook.project_ids[{i}]"),
                            "is not a project of the organization",
                        );
                    }
                    _ => {
                        return Err(ApiError::Unavailable(
                            "catalog is unavailable; retry shortly".to_owned(),
                        ));
                    }
                },
            }
        }
        v.finish()
    }

    /// A webhook the caller may act on with `action` (NOT_FOUND otherwise).
    async fn webhook_for(
        &self,
        principal: &Principal,
        id: &str,
        action: RbacAction,
    ) -> Result<WebhookRow, ApiError> {
        let mut v = Violations::new();
        v.required("id", id);
        v.finish()?;
        let row = self
            .store
            .webhook(id)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook", id))?;
        authorize(principal, action, &row.organization_id, id)?;
        Ok(row)
    }

    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateWebhookRequest,
    ) -> Result<pb::Webhook, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        v.request_id(&request.request_id);
        let webhook = request.webhook.unwrap_or_default();
        check_fields(&mut v, &webhook, &[], true);
        v.finish()?;
        authorize(
            principal,
            RbacAction::DeployWebhooksWrite,
            &request.organization_id,
            "",
        )?;
        let project_ids = dedup(&webhook.project_ids);
        self.check_projects(&request.organization_id, &project_ids)
            .await?;
        let id = new_id();
        let sealed = self
            .secrets
            .seal(&id, &webhook.secret)
            .map_err(ApiError::internal)?;
        let time = now();
        let row = WebhookRow {
            id,
            organization_id: request.organization_id.clone(),
            name: webhook.name,
            description: webhook.description,
            url: webhook.url,
            secret_sealed: sealed,
            event_types: dedup(&webhook.event_types),
            project_ids,
            environment_modes: dedup(&webhook.environment_modes),
            enabled: webhook.enabled,
            etag: new_etag(),
            create_time: time,
            update_time: time,
        };
        let key = (!request.request_id.is_empty()).then(|| RequestKey {
            organization_id: request.organization_id.clone(),
            method: "CreateWebhook",
            request_id: request.request_id.clone(),
        });
        let (id, created) = self
            .store
            .insert_webhook(&row, key.as_ref())
            .await
            .map_err(|error| match error {
                WebhookStoreError::NameTaken => ApiError::already_exists("webhook", &row.name),
                other => other.into(),
            })?;
        if created {
            return Ok(to_proto(&row));
        }
        let first = self
            .store
            .webhook(&id)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook", &id))?;
        Ok(to_proto(&first))
    }

    async fn update(
        &self,
        principal: &Principal,
        request: pb::UpdateWebhookRequest,
    ) -> Result<pb::Webhook, ApiError> {
        let webhook = request.webhook.unwrap_or_default();
        let paths: Vec<String> = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        v.required("webhook.id", &webhook.id);
        if paths.is_empty() {
            v.add("update_mask", "names no field to update");
        }
        for path in &paths {
            if !MUTABLE.contains(&path.as_str()) {
                v.add("update_mask", format!("path {path} cannot be updated"));
            }
        }
        let path_refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        check_fields(&mut v, &webhook, &path_refs, false);
        v.finish()?;
        let mut row = self
            .webhook_for(principal, &webhook.id, RbacAction::DeployWebhooksWrite)
            .await?;
        if !webhook.etag.is_empty() && webhook.etag != row.etag {
            return Err(ApiError::stale_etag("webhook"));
        }
        let read_etag = row.etag.clone();
        for path in &path_refs {
            match *path {
                "name" => row.name.clone_from(&webhook.name),
                "description" => row.description.clone_from(&webhook.description),
                "url" => row.url.clone_from(&webhook.url),
                "secret" => {
                    row.secret_sealed = self
                        .secrets
                        .seal(&row.id, &webhook.secret)
                        .map_err(ApiError::internal)?;
                }
                "event_types" => row.event_types = dedup(&webhook.event_types),
                "project_ids" => row.project_ids = dedup(&webhook.project_ids),
                "environment_modes" => row.environment_modes = dedup(&webhook.environment_modes),
                "enabled" => row.enabled = webhook.enabled,
                _ => {}
            }
        }
        if path_refs.contains(&"project_ids") {
            self.check_projects(&row.organization_id, &row.project_ids)
                .await?;
        }
        row.etag = new_etag();
        row.update_time = now();
        self.store
            .update_webhook(&row, &read_etag)
            .await
            .map_err(|error| match error {
                WebhookStoreError::NameTaken => ApiError::already_exists("webhook", &row.name),
                other => other.into(),
            })?;
        Ok(to_proto(&row))
    }

    async fn redeliver(
        &self,
        principal: &Principal,
        request: pb::RedeliverWebhookDeliveryRequest,
    ) -> Result<pb::WebhookDelivery, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.request_id(&request.request_id);
        v.finish()?;
        let original = self
            .store
            .delivery(&request.id)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook delivery", &request.id))?;
        let webhook = self
            .store
            .webhook(&original.webhook_id)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook delivery", &request.id))?;
        authorize(
            principal,
            RbacAction::DeployWebhooksWrite,
            &webhook.organization_id,
            &webhook.id,
        )
        .map_err(|error| match error {
            ApiError::NotFound { .. } => ApiError::not_found("webhook delivery", &request.id),
            other => other,
        })?;
        if !webhook.enabled {
            return Err(ApiError::FailedPrecondition {
                message: "the webhook is disabled".to_owned(),
                violations: vec![slipway_proto::PreconditionViolation {
                    kind: "WEBHOOK_DISABLED".to_owned(),
                    subject: "webhook".to_owned(),
                    description: "the webhook is disabled".to_owned(),
                }],
            });
        }
        let id = new_id();
        if !request.request_id.is_empty() {
            let key = RequestKey {
                organization_id: webhook.organization_id.clone(),
                method: "RedeliverWebhookDelivery",
                request_id: request.request_id.clone(),
            };
            if !self.store.record_request(&key, &id).await? {
                let first = self.store.replay(&key).await?;
                let row = self
                    .store
                    .delivery(&first)
                    .await?
                    .ok_or_else(|| ApiError::not_found("webhook delivery", &first))?;
                return Ok(delivery_to_proto(&row));
            }
        }
        let time = now();
        let row = DeliveryRow {
            id: id.clone(),
            webhook_id: webhook.id.clone(),
            organization_id: webhook.organization_id.clone(),
            dedup_key: id,
            event_id: original.event_id.clone(),
            event_type: original.event_type,
            deployment_id: original.deployment_id.clone(),
            status: S::Pending as i32,
            attempt: 0,
            response_status_code: 0,
            error_message: String::new(),
            attempt_time: None,
            next_retry_time: Some(time),
            attempts: Vec::new(),
            body: original.body.clone(),
            redelivered_from: original.id.clone(),
            create_time: time,
        };
        self.store.insert_delivery(&row).await?;
        self.wake.notify_one();
        Ok(delivery_to_proto(&row))
    }
}

#[tonic::async_trait]
impl NotificationService for Notifications {
    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let principal = caller(&request)?;
        let webhook = self.create(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::CreateWebhookResponse {
            webhook: Some(webhook),
        }))
    }

    async fn get_webhook(
        &self,
        request: Request<pb::GetWebhookRequest>,
    ) -> Result<Response<pb::GetWebhookResponse>, Status> {
        let principal = caller(&request)?;
        let row = self
            .webhook_for(
                &principal,
                &request.get_ref().id,
                RbacAction::DeployWebhooksRead,
            )
            .await?;
        Ok(Response::new(pb::GetWebhookResponse {
            webhook: Some(to_proto(&row)),
        }))
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        v.required("organization_id", &r.organization_id);
        let size = v.page_size(r.page_size);
        let query = format!("webhooks/{}", r.organization_id);
        let after = page::decode::<NameCursor>(&r.page_token, &query).unwrap_or_else(|_| {
            v.add("page_token", "is not a page token of this listing");
            None
        });
        v.finish()?;
        authorize(
            &principal,
            RbacAction::DeployWebhooksRead,
            &r.organization_id,
            "",
        )?;
        let mut rows = self
            .store
            .list_webhooks(
                &r.organization_id,
                after.as_ref().map(|c| c.name.as_str()),
                size + 1,
            )
            .await
            .map_err(ApiError::from)?;
        let next = if rows.len() as u64 > size {
            rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
            rows.last().map(|row| NameCursor {
                name: row.name.clone(),
            })
        } else {
            None
        };
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: rows.iter().map(to_proto).collect(),
            next_page_token: page::encode(next, &query),
        }))
    }

    async fn update_webhook(
        &self,
        request: Request<pb::UpdateWebhookRequest>,
    ) -> Result<Response<pb::UpdateWebhookResponse>, Status> {
        let principal = caller(&request)?;
        let webhook = self.update(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateWebhookResponse {
            webhook: Some(webhook),
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let row = self
            .webhook_for(&principal, &r.id, RbacAction::DeployWebhooksWrite)
            .await?;
        let etag = (!r.etag.is_empty()).then_some(r.etag.as_str());
        if etag.is_some_and(|etag| etag != row.etag) {
            return Err(ApiError::stale_etag("webhook").into());
        }
        self.store
            .delete_webhook(&row.id, etag)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::DeleteWebhookResponse {}))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        v.required("webhook_id", &r.webhook_id);
        let size = v.page_size(r.page_size);
        for (i, status) in r.statuses.iter().enumerate() {
            if !matches!(S::try_from(*status), Ok(s) if s != S::Unspecified) {
                v.add(format!("statuses[{i}]"), "is not a delivery status");
            }
        }
        let query = format!(
            "deliveries/{}/{:?}/{}",
            r.webhook_id, r.statuses, r.deployment_id
        );
        let before = page::decode::<IdCursor>(&r.page_token, &query).unwrap_or_else(|_| {
            v.add("page_token", "is not a page token of this listing");
            None
        });
        v.finish()?;
        let webhook = self
            .webhook_for(&principal, &r.webhook_id, RbacAction::DeployWebhooksRead)
            .await?;
        let mut rows = self
            .store
            .list_deliveries(
                &webhook.id,
                &r.statuses,
                &r.deployment_id,
                before.as_ref().map(|c| c.id.as_str()),
                size + 1,
            )
            .await
            .map_err(ApiError::from)?;
        let next = if rows.len() as u64 > size {
            rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
            rows.last().map(|row| IdCursor { id: row.id.clone() })
        } else {
            None
        };
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            webhook_deliveries: rows.iter().map(delivery_to_proto).collect(),
            next_page_token: page::encode(next, &query),
        }))
    }

    async fn redeliver_webhook_delivery(
        &self,
        request: Request<pb::RedeliverWebhookDeliveryRequest>,
    ) -> Result<Response<pb::RedeliverWebhookDeliveryResponse>, Status> {
        let principal = caller(&request)?;
        let delivery = self.redeliver(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::RedeliverWebhookDeliveryResponse {
            webhook_delivery: Some(delivery),
        }))
    }
}
