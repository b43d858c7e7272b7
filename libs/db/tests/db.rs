//! slipway-db against real PostgreSQL and SQLite.
//!
//! PostgreSQL comes from `SLIPWAY_TEST_DATABASE_URL`, or a throwaway server that
//! slipway-testkit starts; every test gets a database of its own.

use std::time::Duration;

use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, EntityTrait, PaginatorTrait};
use sea_orm_migration::prelude::*;
use slipway_db::{DatabaseConnection, DbBackend};
use slipway_testkit::TestDatabase;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The schema under test: `widgets` (unique name) and `parts` (belongs to a widget).
struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateWidgets), Box::new(CreateParts)]
    }
}

struct CreateWidgets;

impl MigrationName for CreateWidgets {
    fn name(&self) -> &str {
        "m0001_create_widgets"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateWidgets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("widgets")
                    .col(ColumnDef::new("id").string().not_null().primary_key())
                    .col(ColumnDef::new("name").string().not_null().unique_key())
                    .to_owned(),
            )
            .await
    }
}

struct CreateParts;

impl MigrationName for CreateParts {
    fn name(&self) -> &str {
        "m0002_create_parts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateParts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("parts")
                    .col(ColumnDef::new("id").string().not_null().primary_key())
                    .col(ColumnDef::new("widget_id").string().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_parts_widget")
                            .from("parts", "widget_id")
                            .to("widgets", "id"),
                    )
                    .to_owned(),
            )
            .await
    }
}

mod widget {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "widgets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod part {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "parts")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub widget_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

async fn insert_widget(
    db: &DatabaseConnection,
    id: &str,
    name: &str,
) -> Result<widget::Model, DbErr> {
    widget::ActiveModel {
        id: Set(id.to_owned()),
        name: Set(name.to_owned()),
    }
    .insert(db)
    .await
}

async fn applied_migrations(db: &DatabaseConnection) -> Result<u64, DbErr> {
    Ok(Migrator::get_applied_migrations(db).await?.len() as u64)
}

/// Everything a service relies on, on one backend.
async fn exercise(url: &str, backend: DbBackend) -> TestResult {
    let db = slipway_db::connect(url, 4, TIMEOUT).await?;
    assert_eq!(db.get_database_backend(), backend);

    slipway_db::migrate::<Migrator>(&db).await?;
    // Idempotent: a second start applies nothing and fails on nothing.
    slipway_db::migrate::<Migrator>(&db).await?;
    assert_eq!(applied_migrations(&db).await?, 2);

    let made = insert_widget(&db, "w1", "anvil").await?;
    let found = widget::Entity::find_by_id("w1".to_owned()).one(&db).await?;
    assert_eq!(found.as_ref(), Some(&made));
    assert_eq!(widget::Entity::find().count(&db).await?, 1);

    // Duplicate unique column, and duplicate primary key: both are ALREADY_EXISTS.
    let dup_name = insert_widget(&db, "w2", "anvil")
        .await
        .err()
        .ok_or("duplicate name accepted")?;
    assert!(slipway_db::is_unique_violation(&dup_name), "{dup_name:?}");
    assert!(
        !slipway_db::is_foreign_key_violation(&dup_name),
        "{dup_name:?}"
    );
    let dup_id = insert_widget(&db, "w1", "hammer")
        .await
        .err()
        .ok_or("duplicate id accepted")?;
    assert!(slipway_db::is_unique_violation(&dup_id), "{dup_id:?}");

    // A row pointing at a missing parent is a foreign-key violation, not a duplicate.
    let orphan = part::ActiveModel {
        id: Set("p1".into()),
        widget_id: Set("missing".into()),
    }
    .insert(&db)
    .await
    .err()
    .ok_or("orphan accepted")?;
    assert!(slipway_db::is_foreign_key_violation(&orphan), "{orphan:?}");
    assert!(!slipway_db::is_unique_violation(&orphan), "{orphan:?}");
    assert!(!slipway_db::is_unavailable(&orphan), "{orphan:?}");

    // A later process sees the same schema and data, and migrating again is still a no-op.
    db.close().await?;
    let again = slipway_db::connect_and_migrate::<Migrator>(url, 2, TIMEOUT).await?;
    assert_eq!(applied_migrations(&again).await?, 2);
    assert_eq!(widget::Entity::find().count(&again).await?, 1);
    Ok(())
}

#[tokio::test]
async fn postgres_connect_migrate_query_classify() -> TestResult {
    let test_db = TestDatabase::postgres().await?;
    exercise(test_db.url(), DbBackend::Postgres).await
}

#[tokio::test]
async fn sqlite_connect_migrate_query_classify() -> TestResult {
    let test_db = TestDatabase::sqlite()?;
    exercise(test_db.url(), DbBackend::Sqlite).await
}

/// Replicas starting together: every one succeeds, each migration is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_migrations_are_serialized() -> TestResult {
    let test_db = TestDatabase::postgres().await?;
    let mut replicas = Vec::new();
    for _ in 0..6 {
        let url = test_db.url().to_owned();
        replicas.push(tokio::spawn(async move {
            // One connection per pool: the lock must not starve the migration itself.
            let db = slipway_db::connect(&url, 1, TIMEOUT).await?;
            slipway_db::migrate::<Migrator>(&db).await?;
            db.close()
                .await
                .map_err(|e| slipway_db::Error::Migrate { source: e })?;
            Ok::<_, slipway_db::Error>(())
        }));
    }
    for replica in replicas {
        replica.await??;
    }
    let db = slipway_db::connect(test_db.url(), 1, TIMEOUT).await?;
    assert_eq!(applied_migrations(&db).await?, 2);
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            DbBackend::Postgres,
            "SELECT version FROM seaql_migrations",
        ))
        .await?;
    assert_eq!(rows.len(), 2, "a migration was recorded twice");
    Ok(())
}

#[tokio::test]
async fn sqlite_file_and_folder_are_created() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("nested/deeper/slipway.db");
    let url = format!("sqlite://{}", file.display());
    let db = slipway_db::connect_and_migrate::<Migrator>(&url, 4, TIMEOUT).await?;
    insert_widget(&db, "w1", "anvil").await?;
    assert!(file.is_file());
    db.close().await?;
    Ok(())
}

#[tokio::test]
async fn sqlite_in_memory_survives_across_the_pool() -> TestResult {
    let db = slipway_db::connect_and_migrate::<Migrator>("sqlite::memory:", 8, TIMEOUT).await?;
    insert_widget(&db, "w1", "anvil").await?;
    assert_eq!(widget::Entity::find().count(&db).await?, 1);
    Ok(())
}

#[tokio::test]
async fn connect_errors_never_show_the_password() -> TestResult {
    // Nothing listens on port 1: the connection is refused.
    let refused = slipway_db::connect(
        "postgres://app:hunter2@127.0.0.1:1/slipway",
        1,
        Duration::from_secs(2),
    )
    .await
    .err()
    .ok_or("connected to port 1")?;
    let text = format!("{refused} / {refused:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("postgres://app:***@127.0.0.1:1/slipway"),
        "{text}"
    );

    // A URL the driver cannot parse is echoed back by sea-orm; it must come out scrubbed.
    let garbled = slipway_db::connect(
        "postgres://app:hunter2@[not-a-host/slipway",
        1,
        Duration::from_secs(2),
    )
    .await
    .err()
    .ok_or("parsed a garbled url")?;
    let text = format!("{garbled} / {garbled:?}");
    assert!(!text.contains("hunter2"), "{text}");

    // A real server refusing the password.
    let test_db = TestDatabase::postgres().await?;
    let with_password =
        test_db
            .url()
            .replacen("postgres://postgres@", "postgres://nobody_here:hunter2@", 1);
    if let Err(err) = slipway_db::connect(&with_password, 1, Duration::from_secs(5)).await {
        let text = format!("{err} / {err:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    let unsupported = slipway_db::connect("mysql://root:hunter2@h/db", 1, TIMEOUT)
        .await
        .err()
        .ok_or("mysql accepted")?;
    assert!(!unsupported.to_string().contains("hunter2"));
    Ok(())
}
