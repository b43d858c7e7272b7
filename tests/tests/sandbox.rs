//! Every service started in one test process by the testkit sandbox, on this test's own
//! PostgreSQL database and NATS namespace, each showing its API surface.
//!
//! The services run as standalone ones do: each other service asks the sandbox's identity
//! who its callers are (`[auth].identity_url`), presenting the one service credential
//! identity is configured with.

use slipway_auth::{CredentialKind, NewCredential};
use slipway_testkit::{Sandbox, TestDatabase, TestNats};

/// The settings of a service, pointed at this test's database and NATS namespace, at
/// identity (`$identity`: its address, if started) and with the control plane's credential.
macro_rules! platform_settings {
    ($settings:ty, $database:expr, $nats:expr, $identity:expr, $credential:expr) => {{
        let mut settings = <$settings>::default();
        settings.database.url = $database.url().to_owned();
        settings.nats.url = $nats.url().to_owned();
        settings.nats.namespace = $nats.namespace().to_owned();
        settings.auth.identity_url = $identity.map(|addr| format!("http://{addr}"));
        settings.auth.service_credential = Some($credential.clone());
        settings
    }};
}

#[tokio::test]
async fn sandbox_runs_every_service_on_real_postgres_and_nats() {
    let database = TestDatabase::postgres().await.unwrap();
    let nats = TestNats::start().await.unwrap();
    let mut sandbox = Sandbox::new();
    let credential = NewCredential::generate(CredentialKind::Service)
        .unwrap()
        .into_secret();

    let none: Option<std::net::SocketAddr> = None;
    let settings = platform_settings!(slipway_identity::Settings, database, nats, none, credential);
    let identity = sandbox
        .start("identity", |listener, shutdown| {
            slipway_identity::serve(settings, listener, shutdown)
        })
        .await
        .unwrap();
    let identity = Some(identity);
    let mut settings = platform_settings!(
        slipway_catalog::Settings,
        database,
        nats,
        identity,
        credential
    );
    // Any 32 bytes, hex: the catalog refuses to start without a master key.
    settings.secrets.master_key = Some("5a".repeat(32));
    sandbox
        .start("catalog", |listener, shutdown| {
            slipway_catalog::serve(settings, listener, shutdown)
        })
        .await
        .unwrap();
    let mut settings = platform_settings!(
        slipway_orchestrator::Settings,
        database,
        nats,
        identity,
        credential
    );
    let catalog = sandbox.addr("catalog").unwrap();
    settings.catalog.url = Some(format!("http://{catalog}"));
    sandbox
        .start("orchestrator", |listener, shutdown| {
            slipway_orchestrator::serve(settings, listener, shutdown)
        })
        .await
        .unwrap();
    let settings = platform_settings!(
        slipway_build_runner::Settings,
        database,
        nats,
        identity,
        credential
    );
    sandbox
        .start("build-runner", |listener, shutdown| {
            slipway_build_runner::serve(settings, listener, shutdown)
        })
        .await
        .unwrap();
    let settings = platform_settings!(
        slipway_log_streaming::Settings,
        database,
        nats,
        identity,
        credential
    );
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
