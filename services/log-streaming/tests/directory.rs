//! The environment directory outlives `EVENTS`: what it read is kept in the database, so a
//! new process finds environments whose events the stream no longer holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use slipway_auth::rbac::EnvironmentMode;
use slipway_events::{BusSettings, EventBus, EventBusExt as _, JetStreamBus, Namespace};
use slipway_log_streaming::directory::{Directory, Placement};
use slipway_proto::common::v1::EnvironmentMode as WireMode;
use slipway_proto::events::v1 as ev;
use slipway_testkit::{TestDatabase, TestNats};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn bus(nats: &TestNats) -> Result<Arc<dyn EventBus>, BoxError> {
    let settings = BusSettings::default().with_namespace(Namespace::new(nats.namespace())?);
    let bus = JetStreamBus::connect(nats.url(), settings).await?;
    bus.ensure_streams().await?;
    Ok(Arc::new(bus))
}

async fn announce(bus: &dyn EventBus, payload: ev::event::Payload) -> Result<(), BoxError> {
    let kind = match &payload {
        ev::event::Payload::EnvironmentCreated(_) => "created",
        ev::event::Payload::EnvironmentUpdated(_) => "updated",
        _ => "deleted",
    };
    let event = ev::Event {
        id: uuid::Uuid::now_v7().to_string(),
        time: Some(SystemTime::now().into()),
        organization_id: "org-1".into(),
        actor: None,
        r#type: format!("catalog.environment.{kind}"),
        payload: Some(payload),
    };
    let subject = format!("slipway.events.catalog.environment.{kind}");
    bus.publish_proto(&subject, &event.id, &event).await?;
    Ok(())
}

fn created(id: &str, mode: WireMode) -> ev::event::Payload {
    ev::event::Payload::EnvironmentCreated(ev::EnvironmentCreated {
        environment_id: id.into(),
        project_id: "project-1".into(),
        name: id.into(),
        mode: mode.into(),
        cluster_id: "cluster-1".into(),
    })
}

async fn a_restarted_directory_keeps_what_it_read(db: TestDatabase) -> Result<(), BoxError> {
    let conn = slipway_db::connect(db.url(), 4, Duration::from_secs(15)).await?;
    slipway_db::migrate::<slipway_log_streaming::store::Migrator>(&conn).await?;

    let nats = TestNats::start().await?;
    let first_bus = bus(&nats).await?;
    announce(&*first_bus, created("kept", WireMode::Staging)).await?;
    announce(&*first_bus, created("gone", WireMode::Development)).await?;
    let first = Directory::new(Arc::clone(&first_bus), conn.clone());
    let placement = first.lookup("kept").await?.expect("announced");
    assert_eq!(placement.mode, Some(EnvironmentMode::Staging));

    // Later events are applied on the next lookup, in memory and in the database.
    announce(
        &*first_bus,
        ev::event::Payload::EnvironmentUpdated(ev::EnvironmentUpdated {
            environment_id: "kept".into(),
            project_id: "project-1".into(),
            name: "kept".into(),
            mode: WireMode::Production.into(),
            ..Default::default()
        }),
    )
    .await?;
    announce(
        &*first_bus,
        ev::event::Payload::EnvironmentDeleted(ev::EnvironmentDeleted {
            environment_id: "gone".into(),
            ..Default::default()
        }),
    )
    .await?;
    assert_eq!(first.lookup("gone").await?, None);
    drop(first);

    // A new process whose `EVENTS` no longer holds any of that (another namespace: an
    // empty stream) still knows both answers.
    let other_nats = TestNats::start().await?;
    let second = Directory::new(bus(&other_nats).await?, conn.clone());
    assert_eq!(
        second.lookup("kept").await?,
        Some(Placement {
            organization_id: "org-1".into(),
            project_id: "project-1".into(),
            mode: Some(EnvironmentMode::Production),
        })
    );
    assert_eq!(second.lookup("gone").await?, None);
    assert_eq!(second.lookup("never-announced").await?, None);
    Ok(())
}

#[tokio::test]
async fn a_restarted_directory_keeps_what_it_read_on_postgres() -> Result<(), BoxError> {
    a_restarted_directory_keeps_what_it_read(TestDatabase::postgres().await?).await
}

#[tokio::test]
async fn a_restarted_directory_keeps_what_it_read_on_sqlite() -> Result<(), BoxError> {
    a_restarted_directory_keeps_what_it_read(TestDatabase::sqlite()?).await
}
