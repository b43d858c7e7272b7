//! `slipway.catalog.v1.RegistryService`: container registry (and Helm repository)
//! credentials of an organization.
//!
//! The password is Input only: it is sealed with the organization's data key into the
//! row's `sealed` column, never into the spec, and no read returns it (`has_password`
//! says whether one is stored). Only the snapshot the orchestrator asks for opens it.
//!
//! No event is published for registries: `slipway/events/v1/catalog_events.proto` has no
//! registry payload, and nothing consumes registry changes yet.

use slipway_api::Violations;
use slipway_auth::rbac::{Action, Principal, PrincipalKind, Resource};
use slipway_proto::ApiError;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::registry_service_server::RegistryService;
use tonic::{Request, Response, Status};

use super::services::references;
use super::{
    CatalogMessage, Context, authorize, caller, next_page_token, page_request, precondition,
    request_key, require,
};
use crate::mask::UpdateMask;
use crate::store::{Children, Filter, Kind, NameCursor, NewRow, PageRequest, RowChanges, new_id};

/// Longest registry URL.
const MAX_URL: usize = 2048;
/// Longest user name.
const MAX_USERNAME: usize = 255;
/// Largest password, in bytes (a Google service account key JSON fits).
const MAX_PASSWORD: usize = 16 * 1024;

/// The fields of a registry an update may change.
const MUTABLE: &[&str] = &["name", "kind", "url", "username", "password"];

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Registries {
    ctx: Context,
}

impl Registries {
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

/// Checks an `https://` URL: a host, no spaces or control characters, no user info (the
/// credentials belong in `username` and `password`, where they are sealed).
pub fn check_https_url(field: &str, url: &str, max: usize, v: &mut Violations) {
    if url.is_empty() {
        v.add(field, "is required");
        return;
    }
    if url.chars().count() > max {
        v.add(field, format!("must be at most {max} characters"));
        return;
    }
    if url.starts_with("http://") {
        v.add(field, "must use https:// (plain http is refused)");
        return;
    }
    let Some(rest) = url.strip_prefix("https://") else {
        v.add(field, "must be an https:// url");
        return;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        v.add(field, "must not contain spaces or control characters");
    } else if host.is_empty() {
        v.add(field, "must name a host after https://");
    } else if host.contains('@') {
        v.add(
            field,
            "must not carry credentials: put them in username and password",
        );
    }
}

fn check_kind(field: &str, kind: i32, v: &mut Violations) {
    match pb::RegistryKind::try_from(kind) {
        Ok(pb::RegistryKind::Unspecified) => v.add(field, "is required"),
        Ok(_) => {}
        Err(_) => v.add(field, "is not a known registry kind"),
    }
}

fn check_password(field: &str, password: &str, v: &mut Violations) {
    if password.len() > MAX_PASSWORD {
        v.add(field, format!("must be at most {MAX_PASSWORD} bytes"));
    }
}

fn validate(registry: &pb::Registry, v: &mut Violations) {
    v.dns_label("registry.name", &registry.name);
    check_kind("registry.kind", registry.kind, v);
    check_https_url("registry.url", &registry.url, MAX_URL, v);
    v.max_chars("registry.username", &registry.username, MAX_USERNAME);
    check_password("registry.password", &registry.password, v);
}

/// A page of an organization's rows of `T`'s kind (registries, git credentials): read
/// permission on the organization first (the control plane reads any; a caller from
/// another organization learns only that it is not found), then the page's rows that
/// `keep` accepts. `keep` applies to the page read (the field it tests is mutable and lives
/// in the spec), so a page may hold fewer items than asked while its token continues.
pub async fn list_in_organization<T: CatalogMessage>(
    ctx: &Context,
    principal: &Principal,
    organization_id: &str,
    read: Action,
    page: &PageRequest<NameCursor>,
    keep: impl Fn(&T) -> bool,
) -> Result<(Vec<T>, Option<NameCursor>), ApiError> {
    if principal.kind() != PrincipalKind::Service {
        authorize(
            principal,
            read,
            &Resource::in_organization(organization_id),
            T::KIND,
            "",
        )
        .map_err(|error| match error {
            ApiError::NotFound { .. } => ApiError::not_found("organization", organization_id),
            other => other,
        })?;
    }
    let filter = Filter {
        organization_id: organization_id.to_owned(),
        ..Filter::default()
    };
    let found = ctx.store.list_by(T::KIND, &filter, page).await?;
    let mut items = Vec::with_capacity(found.rows.len());
    for row in &found.rows {
        let item = T::from_row(row)?;
        if keep(&item) {
            items.push(item);
        }
    }
    Ok((items, found.next))
}

/// Whether any service or cluster of `organization_id` still refers to the registry or git
/// credential (`kind`) `id`, and which kind of row does.
///
/// Services name them deep in kind-specific settings (image, Helm and job sources), so
/// each service is decoded and its [`references`] compared; a cluster names a registry as
/// its build registry. Comparing decoded fields, not searching the encoded spec, means a
/// description or URL that happens to contain the id does not block the delete.
pub async fn referenced(
    ctx: &Context,
    organization_id: &str,
    kind: Kind,
    id: &str,
) -> Result<Option<Kind>, ApiError> {
    let filter = Filter {
        organization_id: organization_id.to_owned(),
        ..Filter::default()
    };
    if kind == Kind::Registry {
        for row in ctx.store.list_all(Kind::Cluster, &filter).await? {
            if pb::Cluster::from_row(&row)?.build_registry_id == id {
                return Ok(Some(Kind::Cluster));
            }
        }
    }
    for row in ctx.store.list_all(Kind::Service, &filter).await? {
        let service = pb::Service::from_row(&row)?;
        if references(&service)
            .iter()
            .any(|(named, named_id)| *named == kind && named_id == id)
        {
            return Ok(Some(Kind::Service));
        }
    }
    Ok(None)
}

impl Registries {
    /// The sealed form of `password`; `None` for an empty one (anonymous access).
    async fn seal(
        &self,
        organization_id: &str,
        password: &str,
    ) -> Result<Option<Vec<u8>>, ApiError> {
        if password.is_empty() {
            return Ok(None);
        }
        self.ctx
            .keyring
            .seal(organization_id, Kind::Registry, password.as_bytes())
            .await
            .map(Some)
    }

    async fn create(
        &self,
        principal: &Principal,
        request: pb::CreateRegistryRequest,
    ) -> Result<pb::Registry, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        v.request_id(&request.request_id);
        let registry = request.registry.unwrap_or_default();
        validate(&registry, &mut v);
        v.finish()?;
        let org = request.organization_id.as_str();
        authorize(
            principal,
            Action::CatalogRegistriesWrite,
            &Resource::in_organization(org),
            Kind::Registry,
            "",
        )?;
        let sealed = self.seal(org, &registry.password).await?;
        let row = NewRow {
            id: new_id(),
            organization_id: org.to_owned(),
            parent_id: org.to_owned(),
            name: registry.name.clone(),
            // `to_spec` clears the password: it is stored sealed only.
            spec: registry.to_spec(),
            sealed,
            ..NewRow::default()
        };
        let key = request_key(org, "CreateRegistry", &request.request_id);
        let (row, _) = self.ctx.store.insert(Kind::Registry, row, key).await?;
        pb::Registry::from_row(&row)
    }

    async fn get(&self, principal: &Principal, id: &str) -> Result<pb::Registry, ApiError> {
        require("id", id)?;
        let row = self.ctx.row(Kind::Registry, id).await?;
        authorize(
            principal,
            Action::CatalogRegistriesRead,
            &Resource::in_organization(&row.organization_id),
            Kind::Registry,
            id,
        )?;
        pb::Registry::from_row(&row)
    }

    /// Lists a page of registries. The kind filter applies to the page read (the kind is
    /// mutable and lives in the spec), so a page may hold fewer registries than asked
    /// while `next_page_token` still continues.
    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListRegistriesRequest,
    ) -> Result<pb::ListRegistriesResponse, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        if pb::RegistryKind::try_from(request.kind).is_err() {
            v.add("kind", "is not a known registry kind");
        }
        let query = format!("registries/{}/{}", request.organization_id, request.kind);
        let page = page_request(request.page_size, &request.page_token, &query, &mut v);
        v.finish()?;
        let (registries, next) = list_in_organization(
            &self.ctx,
            principal,
            &request.organization_id,
            Action::CatalogRegistriesRead,
            &page,
            |registry: &pb::Registry| request.kind == 0 || registry.kind == request.kind,
        )
        .await?;
        Ok(pb::ListRegistriesResponse {
            registries,
            next_page_token: next_page_token(next, &query),
        })
    }

    async fn update(
        &self,
        principal: &Principal,
        request: pb::UpdateRegistryRequest,
    ) -> Result<pb::Registry, ApiError> {
        let update = request.registry.unwrap_or_default();
        let mut v = Violations::new();
        v.required("registry.id", &update.id);
        let mask = UpdateMask::parse(request.update_mask.as_ref(), MUTABLE, &mut v);
        if mask.has("name") {
            v.dns_label("registry.name", &update.name);
        }
        if mask.has("kind") {
            check_kind("registry.kind", update.kind, &mut v);
        }
        if mask.has("url") {
            check_https_url("registry.url", &update.url, MAX_URL, &mut v);
        }
        if mask.has("username") {
            v.max_chars("registry.username", &update.username, MAX_USERNAME);
        }
        if mask.has("password") {
            check_password("registry.password", &update.password, &mut v);
        }
        v.finish()?;
        let row = self.ctx.row(Kind::Registry, &update.id).await?;
        authorize(
            principal,
            Action::CatalogRegistriesWrite,
            &Resource::in_organization(&row.organization_id),
            Kind::Registry,
            &update.id,
        )?;
        let mut registry = pb::Registry::from_row(&row)?;
        if mask.has("name") {
            registry.name = update.name.clone();
        }
        if mask.has("kind") {
            registry.kind = update.kind;
        }
        if mask.has("url") {
            registry.url = update.url.clone();
        }
        if mask.has("username") {
            registry.username = update.username.clone();
        }
        // A password in the mask replaces the stored one (empty removes it); without it
        // the stored one stays.
        let sealed = if mask.has("password") {
            Some(self.seal(&row.organization_id, &update.password).await?)
        } else {
            None
        };
        let changes = RowChanges {
            name: Some(registry.name.clone()),
            spec: Some(registry.to_spec()),
            sealed,
            ..RowChanges::default()
        };
        let etag = (!update.etag.is_empty()).then_some(update.etag.as_str());
        let row = self
            .ctx
            .store
            .update(Kind::Registry, &row.id, etag, changes)
            .await?;
        pb::Registry::from_row(&row)
    }

    async fn delete(
        &self,
        principal: &Principal,
        request: pb::DeleteRegistryRequest,
    ) -> Result<(), ApiError> {
        require("id", &request.id)?;
        let row = self.ctx.row(Kind::Registry, &request.id).await?;
        authorize(
            principal,
            Action::CatalogRegistriesWrite,
            &Resource::in_organization(&row.organization_id),
            Kind::Registry,
            &request.id,
        )?;
        if let Some(kind) =
            referenced(&self.ctx, &row.organization_id, Kind::Registry, &row.id).await?
        {
            return Err(precondition(
                "REGISTRY_IN_USE",
                Kind::Registry.as_str(),
                format!("the registry is still used by a {kind}; change it to another first"),
            ));
        }
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        self.ctx
            .store
            .delete(Kind::Registry, &row.id, etag, Children::Refuse)
            .await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl RegistryService for Registries {
    async fn create_registry(
        &self,
        request: Request<pb::CreateRegistryRequest>,
    ) -> Result<Response<pb::CreateRegistryResponse>, Status> {
        let principal = caller(&request)?;
        let registry = self.create(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::CreateRegistryResponse {
            registry: Some(registry),
        }))
    }

    async fn get_registry(
        &self,
        request: Request<pb::GetRegistryRequest>,
    ) -> Result<Response<pb::GetRegistryResponse>, Status> {
        let principal = caller(&request)?;
        let registry = self.get(&principal, &request.get_ref().id).await?;
        Ok(Response::new(pb::GetRegistryResponse {
            registry: Some(registry),
        }))
    }

    async fn list_registries(
        &self,
        request: Request<pb::ListRegistriesRequest>,
    ) -> Result<Response<pb::ListRegistriesResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.list(&principal, request.into_inner()).await?,
        ))
    }

    async fn update_registry(
        &self,
        request: Request<pb::UpdateRegistryRequest>,
    ) -> Result<Response<pb::UpdateRegistryResponse>, Status> {
        let principal = caller(&request)?;
        let registry = self.update(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateRegistryResponse {
            registry: Some(registry),
        }))
    }

    async fn delete_registry(
        &self,
        request: Request<pb::DeleteRegistryRequest>,
    ) -> Result<Response<pb::DeleteRegistryResponse>, Status> {
        let principal = caller(&request)?;
        self.delete(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::DeleteRegistryResponse {}))
    }
}
