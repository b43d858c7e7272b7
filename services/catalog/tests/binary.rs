//! The `slipway-catalog` binary as scripts run it: real PostgreSQL and NATS, health,
//! reflection, the not-built-yet answers, and a clean exit on SIGTERM.

/// A master key for the tests (catalog refuses to start without one).
const MASTER_KEY: (&str, &str) = (
    "SLIPWAY__SECRETS__MASTER_KEY",
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
);

#[tokio::test]
async fn binary_serves_its_api_surface_and_stops_on_sigterm() {
    slipway_testkit::surface::check_service_binary_with(
        env!("CARGO_BIN_EXE_slipway-catalog"),
        slipway_catalog::PACKAGES,
        slipway_catalog::BUILT,
        true,
        &[MASTER_KEY],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_setting_is_named_and_exits_non_zero() {
    let (status, stderr) = slipway_testkit::binary::run_to_exit(
        env!("CARGO_BIN_EXE_slipway-catalog"),
        &["--listen", "127.0.0.1:0"],
        &[("SLIPWAY__DATABASE__MAX_CONNECTIONS", "0")],
    )
    .await
    .unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("database.max_connections"), "{stderr}");

    let (status, stderr) = slipway_testkit::binary::run_to_exit(
        env!("CARGO_BIN_EXE_slipway-catalog"),
        &["--listen", "127.0.0.1:0"],
        &[("SLIPWAY__DATABASE__URL", "mysql://nope")],
    )
    .await
    .unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("database.url"), "{stderr}");
}

#[tokio::test]
async fn unreachable_database_fails_start_without_leaking_the_password() {
    let (status, stderr) = slipway_testkit::binary::run_to_exit(
        env!("CARGO_BIN_EXE_slipway-catalog"),
        &["--listen", "127.0.0.1:0"],
        &[
            (
                "SLIPWAY__DATABASE__URL",
                "postgres://slipway:hunter2@127.0.0.1:1/slipway",
            ),
            ("SLIPWAY__DATABASE__CONNECT_TIMEOUT_MS", "500"),
            ("SLIPWAY__AUTH__IDENTITY_URL", "http://127.0.0.1:9"),
            MASTER_KEY,
        ],
    )
    .await
    .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
