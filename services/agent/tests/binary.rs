//! The `slipway-agent` binary as scripts run it: health, reflection, a clean exit on SIGTERM.

#[tokio::test]
async fn binary_serves_health_and_reflection_and_stops_on_sigterm() {
    slipway_testkit::surface::check_service_binary(
        env!("CARGO_BIN_EXE_slipway-agent"),
        &[],
        &[],
        false,
    )
    .await
    .unwrap();
}
