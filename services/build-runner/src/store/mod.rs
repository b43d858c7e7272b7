//! This service's tables: `Build` records, written by the worker as jobs start, move
//! through their phases and end, and read by `BuildService`.
//!
//! A build is one row: the columns the API filters and sorts on, and the `Build` message
//! itself, protobuf-encoded (it is only ever served whole). The worker is the only writer
//! of that message; `CancelBuild` writes only the cancel columns, so the two never
//! overwrite each other.
//!
//! Getters take an id alone and return the row with its `organization_id`: the API checks
//! that the caller may see that organization and answers `NOT_FOUND` otherwise.

pub mod migration;

use std::time::SystemTime;

use prost::Message as _;
use slipway_db::DatabaseConnection;
use slipway_db::sea_orm::sea_query::{
    Alias, Cond, DynIden, Expr, ExprTrait as _, IntoIden as _, Order, Query, SelectStatement,
};
use slipway_db::sea_orm::{ConnectionTrait, DbErr, QueryResult};
use slipway_db::sea_orm_migration::{MigrationTrait, MigratorTrait};
use slipway_proto::build::v1 as pb;

use migration::Builds as B;

/// The migrations of `slipway-build-runner`, applied at start-up.
///
/// Each service keeps its own migrations table, so services can share one database (as
/// `slipway dev` does) without seeing each other's history.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(migration::CreateBuilds)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_build_runner").into_iden()
    }
}

/// What a store operation failed with. Messages are lowercase and carry no SQL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached (`UNAVAILABLE`, worth retrying).
    #[error("the database is unavailable")]
    Unavailable(#[source] DbErr),
    /// Anything else: a bug or a corrupt row (`INTERNAL`).
    #[error("internal database error")]
    Internal(#[source] DbErr),
}

impl StoreError {
    fn db(err: DbErr) -> Self {
        if slipway_db::is_unavailable(&err) {
            Self::Unavailable(err)
        } else {
            Self::Internal(err)
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One stored build.
#[derive(Debug, Clone)]
pub struct Stored {
    pub build: pb::Build,
    /// `CancelBuild` asked for this build to stop.
    pub cancel_requested: bool,
    pub cancel_reason: String,
}

/// The listing's position: the last build of the previous page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub micros: i64,
    pub id: String,
}

/// What `ListBuilds` filters on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub environment_id: String,
    pub service_id: Option<String>,
    pub deployment_id: Option<String>,
    pub statuses: Vec<i32>,
}

const COLUMNS: [B; 4] = [
    B::Build,
    B::CancelRequested,
    B::CancelReason,
    B::CreateMicros,
];

/// Microseconds since the epoch of `time` (0 when unset or before 1970).
fn micros(time: Option<&prost_types::Timestamp>) -> i64 {
    time.map(|t| t.seconds.saturating_mul(1_000_000) + i64::from(t.nanos / 1000))
        .unwrap_or(0)
}

/// Stamps `build` as changed now: `update_time` and a new `etag`.
fn touch(build: &mut pb::Build) {
    build.update_time = Some(SystemTime::now().into());
    build.etag = uuid::Uuid::now_v7().simple().to_string();
}

/// The `Build` records.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// A store on a connection whose database has [`Migrator`]'s migrations applied.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    fn select() -> SelectStatement {
        Query::select().columns(COLUMNS).from(B::Table).to_owned()
    }

    fn stored(row: &QueryResult) -> Result<Stored, DbErr> {
        let bytes: Vec<u8> = row.try_get("", "build")?;
        let build = pb::Build::decode(bytes.as_slice())
            .map_err(|e| DbErr::Custom(format!("a stored build does not decode: {e}")))?;
        Ok(Stored {
            build,
            cancel_requested: row.try_get("", "cancel_requested")?,
            cancel_reason: row.try_get("", "cancel_reason")?,
        })
    }

    /// Records `build` as a runner picks its job up. A job delivered again (its runner
    /// died) keeps its row — and a cancel requested meanwhile — and gets `build`'s fields.
    /// Returns the row as stored.
    pub async fn start(&self, build: &pb::Build) -> StoreResult<Stored> {
        let mut build = build.clone();
        touch(&mut build);
        let insert = Query::insert()
            .into_table(B::Table)
            .columns([
                B::Id,
                B::OrganizationId,
                B::ProjectId,
                B::EnvironmentId,
                B::ServiceId,
                B::DeploymentId,
                B::Status,
                B::CreateMicros,
                B::Build,
            ])
            .values_panic([
                build.id.clone().into(),
                build.organization_id.clone().into(),
                build.project_id.clone().into(),
                build.environment_id.clone().into(),
                build.service_id.clone().into(),
                build.deployment_id.clone().into(),
                build.status.into(),
                micros(build.create_time.as_ref()).into(),
                build.encode_to_vec().into(),
            ])
            .to_owned();
        match self.db.execute(&insert).await {
            Ok(_) => {}
            Err(err) if slipway_db::is_unique_violation(&err) => self.save(&build).await?,
            Err(err) => return Err(StoreError::db(err)),
        }
        self.get(&build.id).await?.ok_or_else(|| {
            StoreError::Internal(DbErr::RecordNotFound("a build just written".to_owned()))
        })
    }

    /// Writes the worker's view of `build` (status, results, timings).
    pub async fn save(&self, build: &pb::Build) -> StoreResult<()> {
        let mut build = build.clone();
        touch(&mut build);
        let update = Query::update()
            .table(B::Table)
            .value(B::Status, build.status)
            .value(B::Build, build.encode_to_vec())
            .and_where(Expr::col(B::Id).eq(build.id.clone()))
            .to_owned();
        self.db.execute(&update).await.map_err(StoreError::db)?;
        Ok(())
    }

    /// Moves the build `id` to `status` (a phase of a running build).
    pub async fn set_status(&self, id: &str, status: pb::BuildStatus) -> StoreResult<()> {
        let Some(mut stored) = self.get(id).await? else {
            return Ok(());
        };
        if stored.build.status == status as i32 {
            return Ok(());
        }
        stored.build.status = status as i32;
        self.save(&stored.build).await
    }

    /// The build `id`, whatever its organization.
    pub async fn get(&self, id: &str) -> StoreResult<Option<Stored>> {
        let statement = Self::select().and_where(Expr::col(B::Id).eq(id)).to_owned();
        let row = self
            .db
            .query_one(&statement)
            .await
            .map_err(StoreError::db)?;
        row.as_ref()
            .map(Self::stored)
            .transpose()
            .map_err(StoreError::Internal)
    }

    /// Builds of `filter`, newest first, `limit` at most after `after`; and the cursor of
    /// the next page when there is one.
    pub async fn list(
        &self,
        filter: &Filter,
        limit: u64,
        after: Option<&Cursor>,
    ) -> StoreResult<(Vec<Stored>, Option<Cursor>)> {
        let mut statement = Self::select()
            .and_where(Expr::col(B::EnvironmentId).eq(filter.environment_id.clone()))
            .to_owned();
        if let Some(service) = &filter.service_id {
            statement.and_where(Expr::col(B::ServiceId).eq(service.clone()));
        }
        if let Some(deployment) = &filter.deployment_id {
            statement.and_where(Expr::col(B::DeploymentId).eq(deployment.clone()));
        }
        if !filter.statuses.is_empty() {
            statement.and_where(Expr::col(B::Status).is_in(filter.statuses.clone()));
        }
        if let Some(cursor) = after {
            statement.cond_where(
                Cond::any()
                    .add(Expr::col(B::CreateMicros).lt(cursor.micros))
                    .add(
                        Cond::all()
                            .add(Expr::col(B::CreateMicros).eq(cursor.micros))
                            .add(Expr::col(B::Id).lt(cursor.id.clone())),
                    ),
            );
        }
        statement
            .order_by(B::CreateMicros, Order::Desc)
            .order_by(B::Id, Order::Desc)
            .limit(limit + 1);
        let rows = self
            .db
            .query_all(&statement)
            .await
            .map_err(StoreError::db)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows
            .iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
        {
            let stored = Self::stored(row).map_err(StoreError::Internal)?;
            last = Some(Cursor {
                micros: row
                    .try_get("", "create_micros")
                    .map_err(StoreError::Internal)?,
                id: stored.build.id.clone(),
            });
            out.push(stored);
        }
        let next = if rows.len() as u64 > limit {
            last
        } else {
            None
        };
        Ok((out, next))
    }

    /// Marks the build `id` as to be canceled (with `reason`, for its failure message).
    pub async fn request_cancel(&self, id: &str, reason: &str) -> StoreResult<()> {
        let update = Query::update()
            .table(B::Table)
            .value(B::CancelRequested, true)
            .value(B::CancelReason, reason.to_owned())
            .and_where(Expr::col(B::Id).eq(id))
            .to_owned();
        self.db.execute(&update).await.map_err(StoreError::db)?;
        Ok(())
    }
}
