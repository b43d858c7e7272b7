//! The `slipway-build-runner` binary as scripts run it: real PostgreSQL and NATS, health,
//! reflection, the not-built-yet answers, and a clean exit on SIGTERM.

#[tokio::test]
async fn binary_serves_its_api_surface_and_stops_on_sigterm() {
    slipway_testkit::surface::check_service_binary(
        env!("CARGO_BIN_EXE_slipway-build-runner"),
        slipway_build_runner::PACKAGES,
        slipway_build_runner::BUILT,
        true,
    )
    .await
    .unwrap();
}
