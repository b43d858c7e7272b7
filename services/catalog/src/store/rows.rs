//! The generic resource table: one implementation of create, get, list, update and delete
//! for every [`Kind`], with the API's guarantees built in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slipway_db::sea_orm;
use slipway_db::sea_orm::sea_query::{
    Alias, Cond, DeleteStatement, Expr, ExprTrait as _, Order as SqlOrder, Query, SelectStatement,
    UpdateStatement,
};
use slipway_db::sea_orm::{ConnectionTrait, DbErr, DeriveIden, QueryResult};

use super::cache::RowCache;
use super::{Store, StoreError, StoreResult, commit, new_etag, now};

/// The kinds of resource the catalog keeps, one table each. The order of [`Kind::ALL`] is
/// parents before children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Project,
    Cluster,
    Registry,
    GitCredential,
    Environment,
    Service,
    Variable,
    DeploymentRule,
}

impl Kind {
    /// Every kind, parents before children.
    pub const ALL: [Kind; 8] = [
        Kind::Project,
        Kind::Cluster,
        Kind::Registry,
        Kind::GitCredential,
        Kind::Environment,
        Kind::Service,
        Kind::Variable,
        Kind::DeploymentRule,
    ];

    /// The table holding this kind.
    pub fn table(self) -> &'static str {
        match self {
            Kind::Project => "projects",
            Kind::Cluster => "clusters",
            Kind::Registry => "registries",
            Kind::GitCredential => "git_credentials",
            Kind::Environment => "environments",
            Kind::Service => "services",
            Kind::Variable => "variables",
            Kind::DeploymentRule => "deployment_rules",
        }
    }

    /// The lowercase name used in messages and `ResourceInfo`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Project => "project",
            Kind::Cluster => "cluster",
            Kind::Registry => "registry",
            Kind::GitCredential => "git credential",
            Kind::Environment => "environment",
            Kind::Service => "service",
            Kind::Variable => "variable",
            Kind::DeploymentRule => "deployment rule",
        }
    }

    /// The kind a row's `parent_id` names, when it is one fixed kind (the organization
    /// otherwise, or several kinds for variables and rules).
    pub fn parent(self) -> Option<Kind> {
        match self {
            Kind::Environment => Some(Kind::Project),
            Kind::Service => Some(Kind::Environment),
            _ => None,
        }
    }

    /// The column by which rows of other kinds point at a row of this kind, and those
    /// kinds, deepest first: what deleting it must remove (with `force`) or refuse.
    fn dependents(self) -> (Option<Column>, &'static [Kind]) {
        match self {
            Kind::Project => (
                Some(Column::ProjectId),
                &[
                    Kind::Variable,
                    Kind::DeploymentRule,
                    Kind::Service,
                    Kind::Environment,
                ],
            ),
            Kind::Environment => (
                Some(Column::EnvironmentId),
                &[Kind::Variable, Kind::DeploymentRule, Kind::Service],
            ),
            Kind::Service => (Some(Column::ServiceId), &[Kind::Variable]),
            Kind::Cluster => (Some(Column::ClusterId), &[Kind::Environment]),
            _ => (None, &[]),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The columns every resource table has.
#[derive(Clone, Copy, Debug, DeriveIden)]
pub enum Column {
    Id,
    OrganizationId,
    /// The row's parent: the organization for projects, clusters, registries and git
    /// credentials; the project for environments; the environment for services; the
    /// project, environment or service a variable or rule is scoped to.
    ParentId,
    /// Unique in the parent: a DNS label, or a variable's key.
    Name,
    /// What kind of its kind the row is (a service's kind, a variable's scope), so lists
    /// filter on it without decoding `spec`; empty when the kind has none.
    Subtype,
    /// Ancestry, denormalized so listings, authorization and cascading deletes need no
    /// joins. A row's own id is not repeated here (a project's `project_id` is null).
    ProjectId,
    EnvironmentId,
    ServiceId,
    /// The cluster an environment runs on.
    ClusterId,
    /// The resource's protobuf encoding, output-only fields cleared.
    Spec,
    /// The resource's secret, sealed with the organization's data key; never in `spec`.
    Sealed,
    /// SHA-256 (hex) of a credential that identifies the row (a cluster's agent token).
    LookupHash,
    Etag,
    CreateTime,
    UpdateTime,
}

const COLUMNS: [Column; 15] = [
    Column::Id,
    Column::OrganizationId,
    Column::ParentId,
    Column::Name,
    Column::Subtype,
    Column::ProjectId,
    Column::EnvironmentId,
    Column::ServiceId,
    Column::ClusterId,
    Column::Spec,
    Column::Sealed,
    Column::LookupHash,
    Column::Etag,
    Column::CreateTime,
    Column::UpdateTime,
];

/// One stored resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub kind: Kind,
    pub id: String,
    pub organization_id: String,
    pub parent_id: String,
    pub name: String,
    pub subtype: String,
    pub project_id: Option<String>,
    pub environment_id: Option<String>,
    pub service_id: Option<String>,
    pub cluster_id: Option<String>,
    pub spec: Vec<u8>,
    pub sealed: Option<Vec<u8>>,
    pub lookup_hash: Option<String>,
    pub etag: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl Row {
    fn from_result(kind: Kind, result: &QueryResult) -> Result<Self, DbErr> {
        let text = |column: Column| {
            result.try_get::<String>("", &slipway_db::sea_orm::Iden::to_string(&column))
        };
        let optional = |column: Column| {
            result.try_get::<Option<String>>("", &slipway_db::sea_orm::Iden::to_string(&column))
        };
        Ok(Self {
            kind,
            id: text(Column::Id)?,
            organization_id: text(Column::OrganizationId)?,
            parent_id: text(Column::ParentId)?,
            name: text(Column::Name)?,
            subtype: text(Column::Subtype)?,
            project_id: optional(Column::ProjectId)?,
            environment_id: optional(Column::EnvironmentId)?,
            service_id: optional(Column::ServiceId)?,
            cluster_id: optional(Column::ClusterId)?,
            spec: result.try_get("", "spec")?,
            sealed: result.try_get("", "sealed")?,
            lookup_hash: optional(Column::LookupHash)?,
            etag: text(Column::Etag)?,
            create_time: result.try_get("", "create_time")?,
            update_time: result.try_get("", "update_time")?,
        })
    }
}

/// A resource to insert; the store sets the etag and the times.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewRow {
    pub id: String,
    pub organization_id: String,
    pub parent_id: String,
    pub name: String,
    pub subtype: String,
    pub project_id: Option<String>,
    pub environment_id: Option<String>,
    pub service_id: Option<String>,
    pub cluster_id: Option<String>,
    pub spec: Vec<u8>,
    pub sealed: Option<Vec<u8>>,
    pub lookup_hash: Option<String>,
}

/// What an update changes; `None` keeps the stored value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowChanges {
    pub name: Option<String>,
    pub cluster_id: Option<Option<String>>,
    pub spec: Option<Vec<u8>>,
    pub sealed: Option<Option<Vec<u8>>>,
    pub lookup_hash: Option<Option<String>>,
}

/// The idempotency key of a create: a repeat of `request_id` for the same organization and
/// method returns the row the first call created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestKey {
    pub organization_id: String,
    pub method: &'static str,
    pub request_id: String,
}

/// Which rows a listing returns; every field set narrows it. Always one organization.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub organization_id: String,
    pub parent_id: Option<String>,
    pub project_id: Option<String>,
    pub environment_id: Option<String>,
    pub service_id: Option<String>,
    pub cluster_id: Option<String>,
    pub subtype: Option<String>,
    /// Case-sensitive substring of the name.
    pub name_contains: Option<String>,
}

/// The orders a listing can walk in. Each has its own [`Cursor`], so a page token of one
/// order can never continue a walk in the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// By id: the order of creation (ids are UUIDv7).
    Id,
    /// By name, then id. The API's lists promise name order; the id only breaks ties,
    /// which exist when a listing spans several parents (names are unique per parent).
    Name,
}

/// Where a page of one [`Order`] starts: the sort key of the last row already returned.
/// Pages are keyset pages (`WHERE key > cursor ORDER BY key`), not offsets, so a row
/// inserted or deleted during a walk never shifts, repeats or hides another row.
pub trait Cursor: Clone {
    /// The order this cursor walks.
    const ORDER: Order;

    /// The cursor just after `row`.
    fn at(row: &Row) -> Self;

    /// The rows strictly after this cursor in [`Self::ORDER`].
    fn after(&self) -> Cond;
}

/// Where a page by id starts: after the row with this id. Ids are UUIDv7, so the order is
/// the order of creation and rows created during a walk come after every older row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdCursor {
    pub id: String,
}

impl Cursor for IdCursor {
    const ORDER: Order = Order::Id;

    fn at(row: &Row) -> Self {
        Self { id: row.id.clone() }
    }

    fn after(&self) -> Cond {
        Cond::all().add(Expr::col(Column::Id).gt(self.id.as_str()))
    }
}

/// Where a page by name starts: after the row with this name and id. Both are needed: the
/// name alone would skip the other rows of that name when a listing spans parents.
///
/// Rows created or renamed during a walk land where their name sorts, so one may or may
/// not appear; every row that existed, unrenamed, for the whole walk appears exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameCursor {
    pub name: String,
    pub id: String,
}

impl Cursor for NameCursor {
    const ORDER: Order = Order::Name;

    fn at(row: &Row) -> Self {
        Self {
            name: row.name.clone(),
            id: row.id.clone(),
        }
    }

    /// `(name, id) > (cursor)`, written as `name > ? OR (name = ? AND id > ?)`: the same
    /// SQL on both backends, with no reliance on row-value comparison support.
    fn after(&self) -> Cond {
        Cond::any()
            .add(Expr::col(Column::Name).gt(self.name.as_str()))
            .add(
                Cond::all()
                    .add(Expr::col(Column::Name).eq(self.name.as_str()))
                    .add(Expr::col(Column::Id).gt(self.id.as_str())),
            )
    }
}

/// A page to read; by id unless the cursor type says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest<C = IdCursor> {
    /// Most rows; the API clamps it.
    pub size: u64,
    pub after: Option<C>,
}

/// A page of rows and where the next one starts (`None`: this is the last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<C = IdCursor> {
    pub rows: Vec<Row>,
    pub next: Option<C>,
}

/// How deleting a row with dependents behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Children {
    /// Refuse with [`StoreError::HasChildren`].
    Refuse,
    /// Delete them in the same transaction.
    Delete,
}

fn table(kind: Kind) -> Alias {
    Alias::new(kind.table())
}

fn select(kind: Kind) -> SelectStatement {
    Query::select()
        .columns(COLUMNS)
        .from(table(kind))
        .to_owned()
}

async fn fetch<C: ConnectionTrait>(conn: &C, kind: Kind, id: &str) -> StoreResult<Row> {
    let statement = select(kind)
        .and_where(Expr::col(Column::Id).eq(id))
        .to_owned();
    match conn.query_one(&statement).await.map_err(StoreError::db)? {
        Some(result) => Row::from_result(kind, &result).map_err(StoreError::db),
        None => Err(StoreError::NotFound(kind)),
    }
}

impl Store {
    /// Inserts `new` as a row of `kind`. With a `request` key already recorded, inserts
    /// nothing and returns the row the first request created (`Ok((row, false))`).
    pub async fn insert(
        &self,
        kind: Kind,
        new: NewRow,
        request: Option<RequestKey>,
    ) -> StoreResult<(Row, bool)> {
        self.insert_many(kind, vec![new], request)
            .await
            .and_then(|(mut rows, created)| {
                rows.pop()
                    .map(|row| (row, created))
                    .ok_or_else(|| StoreError::corrupt("an insert returned no row".to_owned()))
            })
    }

    /// Inserts several rows (of possibly different kinds) in one transaction: the first is
    /// the one a `request` key records; the others come with it (an environment's cloned
    /// services and variables, say). A repeated key returns the first row alone.
    pub async fn insert_many(
        &self,
        kind: Kind,
        rows: Vec<NewRow>,
        request: Option<RequestKey>,
    ) -> StoreResult<(Vec<Row>, bool)> {
        self.insert_kinds(rows.into_iter().map(|row| (kind, row)).collect(), request)
            .await
    }

    /// [`Store::insert_many`] with a kind per row.
    pub async fn insert_kinds(
        &self,
        rows: Vec<(Kind, NewRow)>,
        request: Option<RequestKey>,
    ) -> StoreResult<(Vec<Row>, bool)> {
        let Some((first_kind, first)) = rows.first() else {
            return Ok((Vec::new(), true));
        };
        let (first_kind, first_id) = (*first_kind, first.id.clone());
        let txn = self.begin().await?;
        if let Some(key) = &request {
            let record = Query::insert()
                .into_table(Alias::new("request_ids"))
                .columns([
                    Alias::new("organization_id"),
                    Alias::new("method"),
                    Alias::new("request_id"),
                    Alias::new("resource_id"),
                    Alias::new("create_time"),
                ])
                .values_panic([
                    key.organization_id.clone().into(),
                    key.method.into(),
                    key.request_id.clone().into(),
                    first_id.clone().into(),
                    now().into(),
                ])
                .to_owned();
            if let Err(err) = txn.execute(&record).await {
                drop(txn);
                if slipway_db::is_unique_violation(&err) {
                    return self
                        .replay(first_kind, key)
                        .await
                        .map(|row| (vec![row], false));
                }
                return Err(StoreError::db(err));
            }
        }
        let time = now();
        let mut inserted = Vec::with_capacity(rows.len());
        for (kind, new) in rows {
            let row = Row {
                kind,
                id: new.id,
                organization_id: new.organization_id,
                parent_id: new.parent_id,
                name: new.name,
                subtype: new.subtype,
                project_id: new.project_id,
                environment_id: new.environment_id,
                service_id: new.service_id,
                cluster_id: new.cluster_id,
                spec: new.spec,
                sealed: new.sealed,
                lookup_hash: new.lookup_hash,
                etag: new_etag(),
                create_time: time,
                update_time: time,
            };
            let statement = Query::insert()
                .into_table(table(kind))
                .columns(COLUMNS)
                .values_panic([
                    row.id.clone().into(),
                    row.organization_id.clone().into(),
                    row.parent_id.clone().into(),
                    row.name.clone().into(),
                    row.subtype.clone().into(),
                    row.project_id.clone().into(),
                    row.environment_id.clone().into(),
                    row.service_id.clone().into(),
                    row.cluster_id.clone().into(),
                    row.spec.clone().into(),
                    row.sealed.clone().into(),
                    row.lookup_hash.clone().into(),
                    row.etag.clone().into(),
                    row.create_time.into(),
                    row.update_time.into(),
                ])
                .to_owned();
            txn.execute(&statement)
                .await
                .map_err(StoreError::on_write(kind))?;
            inserted.push(row);
        }
        commit(txn).await?;
        Ok((inserted, true))
    }

    /// The row a recorded request created.
    async fn replay(&self, kind: Kind, key: &RequestKey) -> StoreResult<Row> {
        let statement = Query::select()
            .column(Alias::new("resource_id"))
            .from(Alias::new("request_ids"))
            .and_where(Expr::col(Alias::new("organization_id")).eq(key.organization_id.as_str()))
            .and_where(Expr::col(Alias::new("method")).eq(key.method))
            .and_where(Expr::col(Alias::new("request_id")).eq(key.request_id.as_str()))
            .to_owned();
        let result = self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?
            .ok_or_else(|| StoreError::corrupt("a recorded request vanished".to_owned()))?;
        let id: String = result.try_get("", "resource_id").map_err(StoreError::db)?;
        // The first request's resource may since have been deleted: then the repeat
        // answers as a Get of it would.
        fetch(&self.db, kind, &id).await
    }

    /// The row of `kind` with `id`, whatever its organization.
    pub async fn get(&self, kind: Kind, id: &str) -> StoreResult<Row> {
        if !RowCache::caches(kind) {
            return fetch(&self.db, kind, id).await;
        }
        if let Some(row) = self.cache.get(kind, id) {
            return Ok(row);
        }
        let generation = self.cache.generation();
        let row = fetch(&self.db, kind, id).await?;
        self.cache.insert(&row, generation);
        Ok(row)
    }

    /// The row of `kind` holding the credential whose SHA-256 is `hash`.
    pub async fn find_by_lookup_hash(&self, kind: Kind, hash: &str) -> StoreResult<Row> {
        let statement = select(kind)
            .and_where(Expr::col(Column::LookupHash).eq(hash))
            .to_owned();
        match self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?
        {
            Some(result) => Row::from_result(kind, &result).map_err(StoreError::db),
            None => Err(StoreError::NotFound(kind)),
        }
    }

    /// A page of the rows of `kind` that `filter` selects, oldest first.
    pub async fn list(&self, kind: Kind, filter: &Filter, page: &PageRequest) -> StoreResult<Page> {
        self.list_by(kind, filter, page).await
    }

    /// A page of the rows of `kind` that `filter` selects, in the order of the cursor type
    /// `C` ([`IdCursor`]: oldest first; [`NameCursor`]: by name, then id).
    pub async fn list_by<C: Cursor>(
        &self,
        kind: Kind,
        filter: &Filter,
        page: &PageRequest<C>,
    ) -> StoreResult<Page<C>> {
        let mut statement = select(kind);
        statement
            .cond_where(conditions(filter))
            .limit(page.size.saturating_add(1));
        match C::ORDER {
            Order::Id => statement.order_by(Column::Id, SqlOrder::Asc),
            Order::Name => statement
                .order_by(Column::Name, SqlOrder::Asc)
                .order_by(Column::Id, SqlOrder::Asc),
        };
        if let Some(after) = &page.after {
            statement.cond_where(after.after());
        }
        let results = self
            .db
            .query_all(&statement)
            .await
            .map_err(StoreError::db)?;
        let mut rows = results
            .iter()
            .map(|result| Row::from_result(kind, result))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db)?;
        let size = usize::try_from(page.size).unwrap_or(usize::MAX);
        let next = if rows.len() > size {
            rows.truncate(size);
            rows.last().map(C::at)
        } else {
            None
        };
        Ok(Page { rows, next })
    }

    /// Every row of `kind` that `filter` selects (for snapshots and clones, which need the
    /// whole set; bounded by what one environment holds).
    pub async fn list_all(&self, kind: Kind, filter: &Filter) -> StoreResult<Vec<Row>> {
        let statement = select(kind)
            .cond_where(conditions(filter))
            .order_by(Column::Id, SqlOrder::Asc)
            .to_owned();
        let results = self
            .db
            .query_all(&statement)
            .await
            .map_err(StoreError::db)?;
        results
            .iter()
            .map(|result| Row::from_result(kind, result))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db)
    }

    /// Applies `changes` to the row when its etag is still `expected_etag` (`None`: no
    /// check), giving it a new etag and update time.
    pub async fn update(
        &self,
        kind: Kind,
        id: &str,
        expected_etag: Option<&str>,
        changes: RowChanges,
    ) -> StoreResult<Row> {
        let mut statement = Query::update();
        statement
            .table(table(kind))
            .value(Column::Etag, new_etag())
            .value(Column::UpdateTime, now())
            .and_where(Expr::col(Column::Id).eq(id));
        set_changes(&mut statement, changes);
        if let Some(etag) = expected_etag {
            statement.and_where(Expr::col(Column::Etag).eq(etag));
        }
        let txn = self.begin().await?;
        let result = txn
            .execute(&statement)
            .await
            .map_err(StoreError::on_write(kind))?;
        if result.rows_affected() == 0 {
            return Err(missed(&txn, kind, id).await);
        }
        let row = fetch(&txn, kind, id).await?;
        commit(txn).await?;
        self.cache.invalidate(kind, id);
        Ok(row)
    }

    /// Deletes the row when its etag is still `expected_etag` (`None`: no check), with its
    /// dependents as `children` says. Returns what was deleted, the row itself first.
    pub async fn delete(
        &self,
        kind: Kind,
        id: &str,
        expected_etag: Option<&str>,
        children: Children,
    ) -> StoreResult<Vec<Row>> {
        let txn = self.begin().await?;
        // Bumping the etag first takes the row's lock (PostgreSQL) or the write lock
        // (SQLite) before the dependents are read, so a child created concurrently either
        // commits first and is seen, or fails its foreign key.
        let mut lock = Query::update();
        lock.table(table(kind))
            .value(Column::Etag, new_etag())
            .and_where(Expr::col(Column::Id).eq(id));
        if let Some(etag) = expected_etag {
            lock.and_where(Expr::col(Column::Etag).eq(etag));
        }
        let result = txn.execute(&lock).await.map_err(StoreError::db)?;
        if result.rows_affected() == 0 {
            return Err(missed(&txn, kind, id).await);
        }
        let mut deleted = vec![fetch(&txn, kind, id).await?];
        let (column, dependents) = kind.dependents();
        if let Some(column) = column {
            for &child in dependents {
                let rows = select(child).and_where(Expr::col(column).eq(id)).to_owned();
                let found = txn.query_all(&rows).await.map_err(StoreError::db)?;
                if found.is_empty() {
                    continue;
                }
                if children == Children::Refuse || kind == Kind::Cluster {
                    return Err(StoreError::HasChildren {
                        parent: kind,
                        child,
                    });
                }
                for result in &found {
                    deleted.push(Row::from_result(child, result).map_err(StoreError::db)?);
                }
                let remove: DeleteStatement = Query::delete()
                    .from_table(table(child))
                    .and_where(Expr::col(column).eq(id))
                    .to_owned();
                txn.execute(&remove).await.map_err(StoreError::db)?;
            }
        }
        // Variables and rules scoped directly to this row (its `parent_id`).
        for child in [Kind::Variable, Kind::DeploymentRule] {
            if matches!(kind, Kind::Project | Kind::Environment | Kind::Service) {
                let remove = Query::delete()
                    .from_table(table(child))
                    .and_where(Expr::col(Column::ParentId).eq(id))
                    .to_owned();
                txn.execute(&remove).await.map_err(StoreError::db)?;
            }
        }
        if kind == Kind::Cluster {
            // The connection state the orchestrator reported belongs to the cluster: left
            // behind, it would outlive the row and greet a reused id with a stale state.
            let remove = Query::delete()
                .from_table(Alias::new("cluster_connections"))
                .and_where(Expr::col(Alias::new("cluster_id")).eq(id))
                .to_owned();
            txn.execute(&remove).await.map_err(StoreError::db)?;
        }
        let remove = Query::delete()
            .from_table(table(kind))
            .and_where(Expr::col(Column::Id).eq(id))
            .to_owned();
        txn.execute(&remove).await.map_err(StoreError::db)?;
        commit(txn).await?;
        for row in &deleted {
            self.cache.invalidate(row.kind, &row.id);
        }
        Ok(deleted)
    }
}

fn conditions(filter: &Filter) -> Cond {
    let mut cond =
        Cond::all().add(Expr::col(Column::OrganizationId).eq(filter.organization_id.as_str()));
    for (column, value) in [
        (Column::ParentId, &filter.parent_id),
        (Column::ProjectId, &filter.project_id),
        (Column::EnvironmentId, &filter.environment_id),
        (Column::ServiceId, &filter.service_id),
        (Column::ClusterId, &filter.cluster_id),
        (Column::Subtype, &filter.subtype),
    ] {
        if let Some(value) = value {
            cond = cond.add(Expr::col(column).eq(value.as_str()));
        }
    }
    if let Some(fragment) = &filter.name_contains {
        // LIKE with the wildcards of the fragment escaped, so `_` matches only `_`.
        let escaped: String = fragment
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        cond = cond.add(Expr::col(Column::Name).like(
            slipway_db::sea_orm::sea_query::LikeExpr::new(format!("%{escaped}%")).escape('\\'),
        ));
    }
    cond
}

fn set_changes(statement: &mut UpdateStatement, changes: RowChanges) {
    if let Some(name) = changes.name {
        statement.value(Column::Name, name);
    }
    if let Some(cluster_id) = changes.cluster_id {
        statement.value(Column::ClusterId, cluster_id);
    }
    if let Some(spec) = changes.spec {
        statement.value(Column::Spec, spec);
    }
    if let Some(sealed) = changes.sealed {
        statement.value(Column::Sealed, sealed);
    }
    if let Some(hash) = changes.lookup_hash {
        statement.value(Column::LookupHash, hash);
    }
}

/// Why a conditional write touched nothing: the row is gone or its etag moved on.
async fn missed<C: ConnectionTrait>(conn: &C, kind: Kind, id: &str) -> StoreError {
    match fetch(conn, kind, id).await {
        Ok(_) => StoreError::EtagMismatch(kind),
        Err(error) => error,
    }
}
