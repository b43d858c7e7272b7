//! Every service started in one test process by the testkit sandbox, on this test's own
//! PostgreSQL database and NATS namespace, each showing its API surface.

use slipway_testkit::{Sandbox, TestDatabase, TestNats};

/// The settings of a service, pointed at this test's database and NATS namespace.
macro_rules! platform_settings {
    ($settings:ty, $database:expr, $nats:expr) => {{
        let mut settings = <$settings>::default();
        settings.database.url = $database.url().to_owned();
        settings.nats.url = $nats.url().to_owned();
        settings.nats.namespace = $nats.namespace().to_owned();
        settings
    }};
}

#[tokio::test]
async fn sandbox_runs_every_service_on_real_postgres_and_nats() {
    let database = TestDatabase::postgres().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let mut sandbox = Sandbox::new();

    let settings = platform_settings!(slipway_identity::Settings, database, nats);
    sandbox
        .start("identity", |listener, shutdown| {
            slipway_identity::serve(settings, listener, shutdown)
        })
        .await
        .unwrap();
    let settings = platform_settings!(slipway_catalog::Settings, database, nats);
    sandbox
        .start("catalog", |listener, shutdown| {
            slipway_catalog::serve(settings, listener, shutdown)
        })
        .await
        .unwrap();
    let settings = platform_settings!(slipway_orchestrator::Settings, database, nats);
    sandbox
        .start("orchestrator", |listener, shutdown| {
            slipway_orchestrator::serve(settings, listener, shutdown)
        })
        .await
        .unwrap();
    let settings = platform_settings!(slipway_build_runner::Settings, database, nats);
    sandbox
        .start("build-runner", |listener, shutdown| {
            slipway_build_runner::serve(settings, listener, shutdown)
        })
        .await
        .unwrap();
    let settings = platform_settings!(slipway_log_streaming::Settings, database, nats);
    sandbox
        .start("log-streaming", |listener, shutdown| {
            slipway_log_streaming::serve(settings, listener, shutdown)
        })
        .await
        .unwrap();

    for (name, packages, built) in [
        (
            "identity",
            slipway_identity::PACKAGES,
            slipway_identity::BUILT,
        ),
        ("catalog", slipway_catalog::PACKAGES, slipway_catalog::BUILT),
        (
            "orchestrator",
            slipway_orchestrator::PACKAGES,
            slipway_orchestrator::BUILT,
        ),
        (
            "build-runner",
            slipway_build_runner::PACKAGES,
            slipway_build_runner::BUILT,
        ),
        (
            "log-streaming",
            slipway_log_streaming::PACKAGES,
            slipway_log_streaming::BUILT,
        ),
    ] {
        let not_built: Vec<String> = slipway_testkit::surface::slipway_services(packages)
            .into_iter()
            .filter(|service| !built.contains(&service.as_str()))
            .collect();
        let not_built: Vec<&str> = not_built.iter().map(String::as_str).collect();
        slipway_testkit::surface::check_surface(
            sandbox.channel(name).unwrap(),
            packages,
            &not_built,
        )
        .await
        .unwrap_or_else(|mismatch| panic!("{name}: {mismatch}"));
    }
    sandbox.shutdown().await.unwrap();
}
