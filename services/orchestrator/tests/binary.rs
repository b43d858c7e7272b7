//! The `slipway-orchestrator` binary as scripts run it: real PostgreSQL and NATS, health,
//! reflection, the not-built-yet answers, and a clean exit on SIGTERM.

#[tokio::test]
async fn binary_serves_its_api_surface_and_stops_on_sigterm() {
    // The orchestrator reads snapshots from catalog as the control plane; the surface
    // check calls neither, so an address nothing listens on and a fresh credential do.
    let credential = slipway_auth::credential::NewCredential::generate(
        slipway_auth::credential::CredentialKind::Service,
    )
    .unwrap()
    .into_secret();
    slipway_testkit::surface::check_service_binary_with(
        env!("CARGO_BIN_EXE_slipway-orchestrator"),
        slipway_orchestrator::PACKAGES,
        slipway_orchestrator::BUILT,
        true,
        &[
            ("SLIPWAY__CATALOG__URL", "http://127.0.0.1:9"),
            ("SLIPWAY__AUTH__SERVICE_CREDENTIAL", credential.as_str()),
        ],
    )
    .await
    .unwrap();
}
