//! `slipway.catalog.v1.ClusterService`: the Kubernetes clusters of an organization, their
//! agent tokens and install manifests.
//!
//! An agent token is shown once, by the RPC that issues it (register or rotation); the
//! catalog keeps only its SHA-256 (hex, in the row's `lookup_hash`), which is what
//! `CatalogInternalService.AuthenticateClusterAgent` looks it up by. Rotating replaces the
//! hash, so the old token stops working at once.
//!
//! MANAGED clusters are recorded, but no provisioner ships in this release: they stay
//! `NOT_PROVISIONED`, and [`managed_provisioning_unimplemented`] is the answer whatever
//! would provision them gives.

use std::time::Duration;

use chrono::{DateTime, Utc};
use slipway_api::Violations;
use slipway_auth::credential::{CredentialKind, NewCredential};
use slipway_auth::rbac::{Action, Principal, PrincipalKind, Resource, ResourceKind};
use slipway_db::sea_orm::ConnectionTrait as _;
use slipway_db::sea_orm::sea_query::{Alias, Expr, ExprTrait as _, Query};
use slipway_proto::ApiError;
use slipway_proto::catalog::v1 as pb;
use slipway_proto::catalog::v1::cluster_service_server::ClusterService;
use slipway_proto::events::v1 as ev;
use tonic::{Request, Response, Status};

use super::{
    CatalogMessage as _, Context, MAX_DESCRIPTION, authorize, caller, next_page_token,
    page_request, precondition, request_key, require, timestamp,
};
use crate::manifest::{ManifestParams, agent_manifest};
use crate::mask::UpdateMask;
use crate::store::{Children, ClusterConnection, Filter, Kind, NewRow, Row, RowChanges, new_id};

/// Where agents connect when nothing else is configured: the address `slipway dev` serves
/// every service on. A real installation sets its public orchestrator address in
/// `[clusters] orchestrator_url` (which `serve` passes to [`Clusters::with_orchestrator_url`]
/// through [`crate::CatalogOptions`]); the agent reads it from its ConfigMap, so a
/// regenerated manifest (GetClusterInstallManifest) can change it later.
pub const DEFAULT_ORCHESTRATOR_URL: &str = "http://127.0.0.1:50051";

/// A connected cluster with no report for this long is shown DISCONNECTED (the
/// orchestrator reports at least every 30 seconds while the agent stays connected).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(90);

/// Longest provider or region name of a managed cluster.
const MAX_MANAGED_FIELD: usize = 63;

/// The fields of a cluster an update may change (`kind` and `managed` are immutable).
const MUTABLE: &[&str] = &["name", "description", "build_registry_id"];

/// What provisioning a MANAGED cluster answers until a provisioner ships. Shared with the
/// callers that would trigger provisioning (deploying an environment onto such a
/// cluster), so they all say the same sentence.
pub fn managed_provisioning_unimplemented() -> ApiError {
    ApiError::Unimplemented(
        "provisioning managed clusters is not implemented in this release: the cluster is \
         recorded but stays NOT_PROVISIONED; register a SELF_MANAGED cluster and install \
         its agent instead"
            .to_owned(),
    )
}

/// The gRPC service; mount it behind `AuthenticateLayer`.
#[derive(Clone)]
pub struct Clusters {
    ctx: Context,
    orchestrator_url: String,
}

impl Clusters {
    pub fn new(ctx: Context) -> Self {
        Self {
            ctx,
            orchestrator_url: DEFAULT_ORCHESTRATOR_URL.to_owned(),
        }
    }

    /// Manifests point agents at `url` instead of [`DEFAULT_ORCHESTRATOR_URL`].
    pub fn with_orchestrator_url(mut self, url: impl Into<String>) -> Self {
        self.orchestrator_url = url.into();
        self
    }
}

/// The RBAC resource of one cluster.
fn cluster_resource<'a>(organization_id: &'a str, cluster_id: &'a str) -> Resource<'a> {
    Resource::in_organization(organization_id)
        .on_cluster(cluster_id)
        .target(ResourceKind::Cluster, cluster_id)
}

/// The row's `subtype`: the kind, so listings can filter on it in the database.
fn subtype(kind: pb::ClusterKind) -> &'static str {
    match kind {
        pb::ClusterKind::SelfManaged => "self_managed",
        pb::ClusterKind::Managed => "managed",
        pb::ClusterKind::Unspecified => "",
    }
}

/// The lookup hash of an agent token: SHA-256 of the whole token, lowercase hex. Agent
/// tokens carry 256 random bits, so a plain hash is enough (nothing to brute-force).
pub fn token_lookup_hash(hash: &slipway_auth::credential::CredentialHash) -> String {
    use std::fmt::Write as _;
    hash.as_bytes()
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// A fresh agent token and its lookup hash.
fn new_agent_token() -> Result<(String, String), ApiError> {
    let token = NewCredential::generate(CredentialKind::Agent).map_err(ApiError::internal)?;
    let hash = token_lookup_hash(&token.hash());
    Ok((token.into_secret(), hash))
}

fn validate(cluster: &pb::Cluster, v: &mut Violations) {
    v.dns_label("cluster.name", &cluster.name);
    v.max_chars("cluster.description", &cluster.description, MAX_DESCRIPTION);
    if !cluster.build_registry_id.is_empty() {
        v.required("cluster.build_registry_id", &cluster.build_registry_id);
    }
    match pb::ClusterKind::try_from(cluster.kind) {
        Ok(pb::ClusterKind::SelfManaged) => {
            if cluster.managed.is_some() {
                v.add(
                    "cluster.managed",
                    "must be unset for a SELF_MANAGED cluster",
                );
            }
        }
        Ok(pb::ClusterKind::Managed) => match &cluster.managed {
            None => v.add("cluster.managed", "is required for a MANAGED cluster"),
            Some(managed) => {
                for (field, value) in [("provider", &managed.provider), ("region", &managed.region)]
                {
                    let field = format!("cluster.managed.{field}");
                    if value.is_empty() {
                        v.add(field, "is required");
                    } else if value.len() > MAX_MANAGED_FIELD
                        || !value.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                        })
                    {
                        v.add(field, "must be 1-63 lowercase letters, digits, '-' or '_'");
                    }
                }
            }
        },
        Ok(pb::ClusterKind::Unspecified) => v.add("cluster.kind", "is required"),
        Err(_) => v.add("cluster.kind", "is not a known cluster kind"),
    }
}

/// The connection shown for a cluster of `kind`, from what the orchestrator last reported.
/// Shared with the environment snapshot, so the heartbeat rule has one home.
pub(crate) fn connection_of(
    kind: i32,
    reported: Option<&ClusterConnection>,
    now: DateTime<Utc>,
) -> pb::ClusterConnection {
    use pb::ClusterConnectionState as State;
    if kind == i32::from(pb::ClusterKind::Managed) {
        return pb::ClusterConnection {
            state: State::NotProvisioned.into(),
            ..Default::default()
        };
    }
    let Some(reported) = reported else {
        return pb::ClusterConnection {
            state: State::AwaitingAgent.into(),
            ..Default::default()
        };
    };
    let timeout = chrono::Duration::from_std(HEARTBEAT_TIMEOUT).unwrap_or(chrono::Duration::MAX);
    let fresh = reported
        .last_heartbeat_time
        .is_some_and(|heartbeat| now.signed_duration_since(heartbeat) <= timeout);
    let connected = reported.connected && fresh;
    pb::ClusterConnection {
        agent_connected: connected,
        state: if connected {
            State::Connected
        } else {
            State::Disconnected
        }
        .into(),
        last_heartbeat_time: reported.last_heartbeat_time.map(timestamp),
        agent_version: reported.agent_version.clone(),
    }
}

impl Clusters {
    /// The cluster of `row` with its connection status.
    async fn message(&self, row: &Row) -> Result<pb::Cluster, ApiError> {
        let mut cluster = pb::Cluster::from_row(row)?;
        let reported = self.ctx.store.cluster_connection(&row.id).await?;
        cluster.connection = Some(connection_of(
            cluster.kind,
            reported.as_ref(),
            crate::store::now(),
        ));
        Ok(cluster)
    }

    /// The install manifest of a SELF_MANAGED cluster, embedding `token` when given.
    fn manifest(&self, row: &Row, token: Option<&str>) -> Result<String, ApiError> {
        let parse = |what: &str, id: &str| {
            uuid::Uuid::parse_str(id).map_err(|_| {
                ApiError::internal(BadId(format!("{what} id {id:?} of cluster {}", row.id)))
            })
        };
        let mut params = ManifestParams::new(
            parse("cluster", &row.id)?,
            row.name.clone(),
            parse("organization", &row.organization_id)?,
            self.orchestrator_url.clone(),
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(token) = token {
            params = params.with_agent_token(token);
        }
        // Every input is either checked at registration or configured: a failure is ours.
        agent_manifest(&params).map_err(ApiError::internal)
    }

    /// The registry `id` of `organization_id`; NOT_FOUND otherwise (also when it belongs to
    /// another organization).
    async fn check_registry(&self, organization_id: &str, id: &str) -> Result<(), ApiError> {
        let registry = self.ctx.row(Kind::Registry, id).await?;
        if registry.organization_id != organization_id {
            return Err(ApiError::not_found(Kind::Registry.as_str(), id));
        }
        Ok(())
    }

    async fn register(
        &self,
        principal: &Principal,
        request: pb::RegisterClusterRequest,
    ) -> Result<pb::RegisterClusterResponse, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        v.request_id(&request.request_id);
        let mut cluster = request.cluster.unwrap_or_default();
        validate(&cluster, &mut v);
        v.finish()?;
        let org = request.organization_id.as_str();
        authorize(
            principal,
            Action::CatalogClustersRegister,
            &Resource::in_organization(org),
            Kind::Cluster,
            "",
        )?;
        if !cluster.build_registry_id.is_empty() {
            self.check_registry(org, &cluster.build_registry_id).await?;
        }
        let kind = pb::ClusterKind::try_from(cluster.kind).unwrap_or_default();
        let self_managed = kind == pb::ClusterKind::SelfManaged;
        // Output-only fields the client may have sent are ignored.
        cluster.connection = None;
        cluster.agent_token_create_time = None;
        let token = if self_managed {
            cluster.agent_token_create_time = Some(timestamp(crate::store::now()));
            Some(new_agent_token()?)
        } else {
            None
        };
        let row = NewRow {
            id: new_id(),
            organization_id: org.to_owned(),
            parent_id: org.to_owned(),
            name: cluster.name.clone(),
            subtype: subtype(kind).to_owned(),
            spec: cluster.to_spec(),
            lookup_hash: token.as_ref().map(|(_, hash)| hash.clone()),
            ..NewRow::default()
        };
        let key = request_key(org, "RegisterCluster", &request.request_id);
        let (row, created) = self.ctx.store.insert(Kind::Cluster, row, key).await?;
        let cluster = self.message(&row).await?;
        // The token is shown by the call that issued it only: a repeat gets none.
        let agent_token = if created {
            token.map(|(token, _)| token)
        } else {
            None
        };
        let install_manifest_yaml = if cluster.kind == i32::from(pb::ClusterKind::SelfManaged) {
            self.manifest(&row, agent_token.as_deref())?
        } else {
            String::new()
        };
        if created {
            self.ctx
                .publish(
                    principal,
                    org,
                    "cluster",
                    "created",
                    ev::event::Payload::ClusterCreated(ev::ClusterCreated {
                        cluster_id: row.id.clone(),
                        name: row.name.clone(),
                    }),
                )
                .await;
        }
        Ok(pb::RegisterClusterResponse {
            cluster: Some(cluster),
            agent_token: agent_token.unwrap_or_default(),
            install_manifest_yaml,
        })
    }

    async fn get(&self, principal: &Principal, id: &str) -> Result<pb::Cluster, ApiError> {
        require("id", id)?;
        let row = self.ctx.row(Kind::Cluster, id).await?;
        authorize(
            principal,
            Action::CatalogClustersRead,
            &cluster_resource(&row.organization_id, &row.id),
            Kind::Cluster,
            id,
        )?;
        self.message(&row).await
    }

    /// Lists a page of clusters. The connection-state filter applies to the page read (the
    /// state is computed, not stored), so a page may hold fewer clusters than asked while
    /// `next_page_token` still continues.
    async fn list(
        &self,
        principal: &Principal,
        request: pb::ListClustersRequest,
    ) -> Result<pb::ListClustersResponse, ApiError> {
        let mut v = Violations::new();
        v.required("organization_id", &request.organization_id);
        let kind = match pb::ClusterKind::try_from(request.kind) {
            Ok(kind) => kind,
            Err(_) => {
                v.add("kind", "is not a known cluster kind");
                pb::ClusterKind::Unspecified
            }
        };
        if pb::ClusterConnectionState::try_from(request.connection_state).is_err() {
            v.add("connection_state", "is not a known connection state");
        }
        let query = format!(
            "clusters/{}/{}/{}",
            request.organization_id, request.kind, request.connection_state
        );
        let page = page_request(request.page_size, &request.page_token, &query, &mut v);
        v.finish()?;
        let org = request.organization_id.as_str();
        // Listing needs no grant on any one cluster: members see the clusters they may
        // read, outsiders get NOT_FOUND for the organization.
        if principal.membership(org).is_none() && principal.kind() != PrincipalKind::Service {
            return Err(ApiError::not_found("organization", org));
        }
        let filter = Filter {
            organization_id: org.to_owned(),
            subtype: (kind != pb::ClusterKind::Unspecified).then(|| subtype(kind).to_owned()),
            ..Filter::default()
        };
        let found = self
            .ctx
            .store
            .list_by(Kind::Cluster, &filter, &page)
            .await?;
        let mut clusters = Vec::with_capacity(found.rows.len());
        for row in &found.rows {
            let readable = slipway_auth::authorize(
                principal,
                Action::CatalogClustersRead,
                &cluster_resource(&row.organization_id, &row.id),
            )
            .is_allowed();
            if !readable {
                continue;
            }
            let cluster = self.message(row).await?;
            let state = cluster.connection.as_ref().map_or(0, |c| c.state);
            if request.connection_state == 0 || state == request.connection_state {
                clusters.push(cluster);
            }
        }
        Ok(pb::ListClustersResponse {
            clusters,
            next_page_token: next_page_token(found.next, &query),
        })
    }

    async fn update(
        &self,
        principal: &Principal,
        request: pb::UpdateClusterRequest,
    ) -> Result<pb::Cluster, ApiError> {
        let update = request.cluster.unwrap_or_default();
        let mut v = Violations::new();
        v.required("cluster.id", &update.id);
        let mask = UpdateMask::parse(request.update_mask.as_ref(), MUTABLE, &mut v);
        if mask.has("name") {
            v.dns_label("cluster.name", &update.name);
        }
        if mask.has("description") {
            v.max_chars("cluster.description", &update.description, MAX_DESCRIPTION);
        }
        if mask.has("build_registry_id") && !update.build_registry_id.is_empty() {
            v.required("cluster.build_registry_id", &update.build_registry_id);
        }
        v.finish()?;
        let row = self.ctx.row(Kind::Cluster, &update.id).await?;
        authorize(
            principal,
            Action::CatalogClustersManage,
            &cluster_resource(&row.organization_id, &row.id),
            Kind::Cluster,
            &update.id,
        )?;
        if mask.has("build_registry_id") && !update.build_registry_id.is_empty() {
            self.check_registry(&row.organization_id, &update.build_registry_id)
                .await?;
        }
        let mut cluster = pb::Cluster::from_row(&row)?;
        if mask.has("name") {
            cluster.name = update.name.clone();
        }
        if mask.has("description") {
            cluster.description = update.description.clone();
        }
        if mask.has("build_registry_id") {
            cluster.build_registry_id = update.build_registry_id.clone();
        }
        let changes = RowChanges {
            name: Some(cluster.name.clone()),
            spec: Some(cluster.to_spec()),
            ..RowChanges::default()
        };
        let etag = (!update.etag.is_empty()).then_some(update.etag.as_str());
        let row = self
            .ctx
            .store
            .update(Kind::Cluster, &row.id, etag, changes)
            .await?;
        self.publish_updated(principal, &row, mask.to_proto()).await;
        self.message(&row).await
    }

    async fn publish_updated(
        &self,
        principal: &Principal,
        row: &Row,
        update_mask: prost_types::FieldMask,
    ) {
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "cluster",
                "updated",
                ev::event::Payload::ClusterUpdated(ev::ClusterUpdated {
                    cluster_id: row.id.clone(),
                    name: row.name.clone(),
                    update_mask: Some(update_mask),
                }),
            )
            .await;
    }

    /// Deletes the cluster; its token goes with the row (AuthenticateClusterAgent no
    /// longer finds it), and the event tells the orchestrator to close the agent's stream.
    async fn delete(
        &self,
        principal: &Principal,
        request: pb::DeleteClusterRequest,
    ) -> Result<(), ApiError> {
        require("id", &request.id)?;
        let row = self.ctx.row(Kind::Cluster, &request.id).await?;
        authorize(
            principal,
            Action::CatalogClustersManage,
            &cluster_resource(&row.organization_id, &row.id),
            Kind::Cluster,
            &request.id,
        )?;
        let etag = (!request.etag.is_empty()).then_some(request.etag.as_str());
        // Environments on the cluster are never deleted with it: the store refuses.
        self.ctx
            .store
            .delete(Kind::Cluster, &row.id, etag, Children::Refuse)
            .await?;
        self.ctx
            .publish(
                principal,
                &row.organization_id,
                "cluster",
                "deleted",
                ev::event::Payload::ClusterDeleted(ev::ClusterDeleted {
                    cluster_id: row.id.clone(),
                }),
            )
            .await;
        Ok(())
    }

    /// Loads a cluster for an agent-token action (manifest, rotation): ADMIN on it, and
    /// SELF_MANAGED (Slipway would install a MANAGED cluster's agent itself).
    async fn self_managed(&self, principal: &Principal, id: &str) -> Result<Row, ApiError> {
        let row = self.ctx.row(Kind::Cluster, id).await?;
        authorize(
            principal,
            Action::CatalogClustersManage,
            &cluster_resource(&row.organization_id, &row.id),
            Kind::Cluster,
            id,
        )?;
        let cluster = pb::Cluster::from_row(&row)?;
        if cluster.kind != i32::from(pb::ClusterKind::SelfManaged) {
            return Err(precondition(
                "CLUSTER_MANAGED",
                Kind::Cluster.as_str(),
                "the cluster is MANAGED: slipway installs its agent itself, so it has no \
                 agent token or install manifest"
                    .to_owned(),
            ));
        }
        Ok(row)
    }

    /// Issues a new agent token for `row`, replacing the stored hash. With a `request_id`
    /// already used for `method`, rotates nothing and returns no token.
    async fn rotate(
        &self,
        principal: &Principal,
        row: Row,
        method: &'static str,
        request_id: &str,
    ) -> Result<(Row, Option<String>), ApiError> {
        let key = request_key(&row.organization_id, method, request_id);
        if let Some(key) = &key
            && !self.record_request(key, &row.id).await?
        {
            return Ok((row, None));
        }
        let rotated = async {
            let (token, hash) = new_agent_token()?;
            let mut cluster = pb::Cluster::from_row(&row)?;
            cluster.agent_token_create_time = Some(timestamp(crate::store::now()));
            let changes = RowChanges {
                spec: Some(cluster.to_spec()),
                lookup_hash: Some(Some(hash)),
                ..RowChanges::default()
            };
            let row = self
                .ctx
                .store
                .update(Kind::Cluster, &row.id, None, changes)
                .await?;
            Ok::<_, ApiError>((row, token))
        }
        .await;
        let (row, token) = match rotated {
            Ok(done) => done,
            Err(error) => {
                // Nothing rotated: let a retry with the same request id rotate.
                if let Some(key) = &key {
                    self.forget_request(key).await;
                }
                return Err(error);
            }
        };
        // Tells the orchestrator to drop a cached authentication of the old token.
        self.publish_updated(
            principal,
            &row,
            prost_types::FieldMask {
                paths: vec!["agent_token_create_time".to_owned()],
            },
        )
        .await;
        Ok((row, Some(token)))
    }

    /// Records a rotation's idempotency key in the store's `request_ids` table (the one
    /// creates use); `false` when it was already recorded. Rotation is an update, which
    /// the store's insert-only idempotency does not cover.
    async fn record_request(
        &self,
        key: &crate::store::RequestKey,
        cluster_id: &str,
    ) -> Result<bool, ApiError> {
        let insert = Query::insert()
            .into_table(Alias::new("request_ids"))
            .columns(
                [
                    "organization_id",
                    "method",
                    "request_id",
                    "resource_id",
                    "create_time",
                ]
                .map(Alias::new),
            )
            .values_panic([
                key.organization_id.clone().into(),
                key.method.into(),
                key.request_id.clone().into(),
                cluster_id.into(),
                crate::store::now().into(),
            ])
            .to_owned();
        match self.ctx.store.connection().execute(&insert).await {
            Ok(_) => Ok(true),
            Err(error) if slipway_db::is_unique_violation(&error) => Ok(false),
            Err(error) => Err(crate::store::StoreError::db(error).into()),
        }
    }

    /// Removes a key [`Clusters::record_request`] recorded for a rotation that failed.
    async fn forget_request(&self, key: &crate::store::RequestKey) {
        let delete = Query::delete()
            .from_table(Alias::new("request_ids"))
            .and_where(Expr::col(Alias::new("organization_id")).eq(key.organization_id.as_str()))
            .and_where(Expr::col(Alias::new("method")).eq(key.method))
            .and_where(Expr::col(Alias::new("request_id")).eq(key.request_id.as_str()))
            .to_owned();
        if let Err(error) = self.ctx.store.connection().execute(&delete).await {
            tracing::error!(%error, "cannot forget the request id of a failed rotation");
        }
    }

    async fn install_manifest(
        &self,
        principal: &Principal,
        request: pb::GetClusterInstallManifestRequest,
    ) -> Result<pb::GetClusterInstallManifestResponse, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.request_id(&request.request_id);
        v.finish()?;
        let row = self.self_managed(principal, &request.id).await?;
        let (row, token) = if request.rotate_agent_token {
            self.rotate(
                principal,
                row,
                "GetClusterInstallManifest",
                &request.request_id,
            )
            .await?
        } else {
            (row, None)
        };
        Ok(pb::GetClusterInstallManifestResponse {
            install_manifest_yaml: self.manifest(&row, token.as_deref())?,
            agent_token: token.unwrap_or_default(),
        })
    }

    async fn rotate_token(
        &self,
        principal: &Principal,
        request: pb::RotateClusterAgentTokenRequest,
    ) -> Result<pb::RotateClusterAgentTokenResponse, ApiError> {
        let mut v = Violations::new();
        v.required("id", &request.id);
        v.request_id(&request.request_id);
        v.finish()?;
        let row = self.self_managed(principal, &request.id).await?;
        let (row, token) = self
            .rotate(
                principal,
                row,
                "RotateClusterAgentToken",
                &request.request_id,
            )
            .await?;
        Ok(pb::RotateClusterAgentTokenResponse {
            cluster: Some(self.message(&row).await?),
            agent_token: token.unwrap_or_default(),
        })
    }
}

/// A stored id that is not a UUID: a corrupt row.
#[derive(Debug, thiserror::Error)]
#[error("not a uuid: {0}")]
struct BadId(String);

#[tonic::async_trait]
impl ClusterService for Clusters {
    async fn register_cluster(
        &self,
        request: Request<pb::RegisterClusterRequest>,
    ) -> Result<Response<pb::RegisterClusterResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.register(&principal, request.into_inner()).await?,
        ))
    }

    async fn get_cluster(
        &self,
        request: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::GetClusterResponse>, Status> {
        let principal = caller(&request)?;
        let cluster = self.get(&principal, &request.get_ref().id).await?;
        Ok(Response::new(pb::GetClusterResponse {
            cluster: Some(cluster),
        }))
    }

    async fn list_clusters(
        &self,
        request: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.list(&principal, request.into_inner()).await?,
        ))
    }

    async fn update_cluster(
        &self,
        request: Request<pb::UpdateClusterRequest>,
    ) -> Result<Response<pb::UpdateClusterResponse>, Status> {
        let principal = caller(&request)?;
        let cluster = self.update(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::UpdateClusterResponse {
            cluster: Some(cluster),
        }))
    }

    async fn delete_cluster(
        &self,
        request: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteClusterResponse>, Status> {
        let principal = caller(&request)?;
        self.delete(&principal, request.into_inner()).await?;
        Ok(Response::new(pb::DeleteClusterResponse {}))
    }

    async fn get_cluster_install_manifest(
        &self,
        request: Request<pb::GetClusterInstallManifestRequest>,
    ) -> Result<Response<pb::GetClusterInstallManifestResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.install_manifest(&principal, request.into_inner())
                .await?,
        ))
    }

    async fn rotate_cluster_agent_token(
        &self,
        request: Request<pb::RotateClusterAgentTokenRequest>,
    ) -> Result<Response<pb::RotateClusterAgentTokenResponse>, Status> {
        let principal = caller(&request)?;
        Ok(Response::new(
            self.rotate_token(&principal, request.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_states() {
        let now = crate::store::now();
        let managed = connection_of(pb::ClusterKind::Managed.into(), None, now);
        assert_eq!(
            managed.state,
            i32::from(pb::ClusterConnectionState::NotProvisioned)
        );
        let waiting = connection_of(pb::ClusterKind::SelfManaged.into(), None, now);
        assert_eq!(
            waiting.state,
            i32::from(pb::ClusterConnectionState::AwaitingAgent)
        );
        let mut reported = ClusterConnection {
            cluster_id: "c".into(),
            organization_id: "o".into(),
            connected: true,
            agent_version: "1.2.3".into(),
            replica_id: String::new(),
            last_heartbeat_time: Some(now),
            connect_time: Some(now),
            update_time: now,
        };
        let live = connection_of(pb::ClusterKind::SelfManaged.into(), Some(&reported), now);
        assert!(live.agent_connected);
        assert_eq!(live.agent_version, "1.2.3");
        // Silent for longer than the timeout: shown disconnected.
        reported.last_heartbeat_time = Some(now - chrono::Duration::seconds(91));
        let stale = connection_of(pb::ClusterKind::SelfManaged.into(), Some(&reported), now);
        assert!(!stale.agent_connected);
        assert_eq!(
            stale.state,
            i32::from(pb::ClusterConnectionState::Disconnected)
        );
    }

    #[test]
    fn managed_provisioning_says_why() {
        let error = managed_provisioning_unimplemented();
        assert_eq!(error.code(), tonic::Code::Unimplemented);
        assert!(error.to_string().contains("not implemented"));
    }

    #[test]
    fn lookup_hash_is_sha256_hex() {
        let token = NewCredential::generate(CredentialKind::Agent).unwrap();
        let hash = token_lookup_hash(&token.hash());
        assert_eq!(hash.len(), 64);
        assert!(
            hash.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
}
